//! The daemon's TLS, against the real `mailtriage run` binary and real
//! servers (crates/testkit): Dovecot with STARTTLS and an implicit-TLS
//! (imaps) listener, aiosmtpd with STARTTLS or implicit TLS, both
//! presenting a certificate for 127.0.0.1 signed by a private test CA that
//! the daemon is given as `ca_file`.
//!
//! - Implicit TLS for both, and STARTTLS for both: an escalation is
//!   acknowledged over TLS and marked `\Seen`, and the servers' own records
//!   say the sessions were encrypted (Dovecot's login line, the capture's
//!   TLS version).
//! - A server certificate from an unrelated CA: the daemon refuses it and
//!   says why (unknown issuer), keeps running and retrying, and never falls
//!   back to plaintext. IMAP: no login, nothing marked. SMTP: nothing
//!   delivered, the mail waits in the outbox and goes out once the config
//!   names the right CA.

use std::time::Duration;

use mailtriage::outbox::Delivery;
use mailtriage_testkit::{
    Daemon, Dovecot, Extra, SmtpCapture, SmtpTls, TestCa, TlsMode, Via, by_rcpt, config_dir,
    fixture, outbox, subject, wait_until,
};

const WAIT: Duration = Duration::from_secs(30);
/// The outbox retries after 1 s, then every 2 s.
const FAST_RETRY: &str = "retry_first = \"1s\"\nretry_max = \"2s\"";
/// The escalation of the tests: an acknowledgement to its sender (Ravi)
/// and a forward to CX.
const ESCALATION: &str = "06-pickup-rude-vendor.eml";
const AGENT: &str = "ravi.k@example.com";
const SUBJECT: &str = "Re: Pickup complaint – vendor rude to customer";

/// What failed, with both servers' and the daemon's log tails.
fn context(what: &str, d: &Dovecot, s: &SmtpCapture, daemon: &Daemon) -> String {
    let got: Vec<String> = s
        .messages()
        .iter()
        .map(|c| format!("to {:?} (tls {:?}): {}", c.rcpt_to, c.tls, subject(c)))
        .collect();
    format!(
        "{what}\ncaptured: {got:#?}\n{}\n{}\n{}",
        daemon.log_tail(),
        s.log_tail(),
        d.log_tail()
    )
}

/// Dovecot's log lines of successful logins of `ops` (e.g. `imap-login:
/// Login: user=<ops>, method=PLAIN, rip=127.0.0.1, ..., TLS, session=<..>`).
fn ops_logins(d: &Dovecot) -> Vec<String> {
    d.log()
        .lines()
        .filter(|l| l.contains("Login: user=<ops>"))
        .map(str::to_string)
        .collect()
}

/// An escalation appended to the ops mailbox is acknowledged through the
/// SMTP capture over TLS, and marked `\Seen`, with the daemon connecting
/// to Dovecot with `imap` and to the capture in `smtp` mode, trusting the
/// test CA; both servers' records say the sessions were encrypted.
fn escalation_is_acknowledged_over_tls(imap: TlsMode, smtp: SmtpTls) {
    let ca = TestCa::new("mailtriage test CA");
    let d = Dovecot::start_tls(&[("ops", "secret")], &ca);
    let s = SmtpCapture::start_tls(smtp, &ca);
    let ca_file = ca.ca_pem();
    let imap_via = match imap {
        TlsMode::Implicit => Via::implicit(d.imaps_port(), &ca_file),
        TlsMode::Starttls => Via::starttls(d.port(), &ca_file),
        TlsMode::Plain => unreachable!("a TLS test"),
    };
    let smtp_via = match smtp {
        SmtpTls::Implicit => Via::implicit(s.port(), &ca_file),
        SmtpTls::Starttls | SmtpTls::StarttlsRequired => Via::starttls(s.port(), &ca_file),
    };
    let dir = config_dir(
        &d,
        &s,
        Extra {
            imap_via: Some(imap_via),
            smtp_via: Some(smtp_via),
            ..Extra::default()
        },
    );
    let uid = d.append("ops", "INBOX", &fixture(ESCALATION));
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());

    wait_until(
        WAIT,
        || !by_rcpt(&s.messages(), AGENT).is_empty(),
        || context("no acknowledgement arrived", &d, &s, &daemon),
    );
    wait_until(
        WAIT,
        || d.seen("ops", "INBOX") == [uid],
        || context("the escalation was not marked \\Seen", &d, &s, &daemon),
    );
    let alive = daemon.running();
    let what = || context("after the acknowledgement", &d, &s, &daemon);
    let got = s.messages();
    let acks = by_rcpt(&got, AGENT);
    assert_eq!(acks.len(), 1, "{}", what());
    assert!(subject(acks[0]).starts_with(SUBJECT), "{}", what());
    assert!(subject(acks[0]).contains("[ESC-"), "{}", what());
    // The capture saw a TLS session (a plaintext one records no version).
    let version = acks[0].tls.as_deref().unwrap_or("(plain)");
    assert!(version.starts_with("TLSv1."), "{version}\n{}", what());

    // Dovecot logged the daemon's login over TLS (the harness's own
    // logins, for append and flags, are plaintext: "secured" on loopback).
    let logins = ops_logins(&d);
    assert!(
        logins.iter().any(|l| l.contains(", TLS,")),
        "no login of ops over TLS: {logins:#?}\n{}",
        what()
    );
    assert!(alive, "the daemon exited\n{}", what());
    daemon.stop();
    assert_eq!(
        daemon.count_lines("mailbox session failed"),
        0,
        "{}",
        daemon.log_tail()
    );
}

#[test]
fn implicit_tls_imap_and_smtp_acknowledge_an_escalation() {
    escalation_is_acknowledged_over_tls(TlsMode::Implicit, SmtpTls::Implicit);
}

#[test]
fn starttls_imap_and_smtp_acknowledge_an_escalation() {
    // The capture refuses mail before STARTTLS, so the acknowledgement
    // arriving at all shows that the daemon upgraded.
    escalation_is_acknowledged_over_tls(TlsMode::Starttls, SmtpTls::StarttlsRequired);
}

/// The daemon is pointed at Dovecot (`imap` mode) trusting a CA that did
/// not sign Dovecot's certificate: it must refuse it, say why, keep
/// running and retrying, and never log in or touch the mailbox.
fn imap_certificate_from_an_unrelated_ca_is_refused(imap: TlsMode) {
    let ca = TestCa::new("server CA");
    let unrelated = TestCa::new("unrelated CA");
    let d = Dovecot::start_tls(&[("ops", "secret")], &ca);
    let s = SmtpCapture::start();
    let wrong = unrelated.ca_pem();
    let imap_via = match imap {
        TlsMode::Implicit => Via::implicit(d.imaps_port(), &wrong),
        TlsMode::Starttls => Via::starttls(d.port(), &wrong),
        TlsMode::Plain => unreachable!("a TLS test"),
    };
    let dir = config_dir(
        &d,
        &s,
        Extra {
            imap_via: Some(imap_via),
            ..Extra::default()
        },
    );
    // Straight into the Maildir: the harness does not log in, so any login
    // in Dovecot's log would be the daemon's.
    d.deliver("ops", "INBOX", &fixture(ESCALATION));
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());

    // Two failed sessions (the reconnect delay starts at a second): it says
    // why, and it goes on trying rather than exiting.
    let refusals = |daemon: &Daemon| {
        daemon
            .run_log()
            .lines()
            .filter(|l| l.contains("mailbox session failed") && l.contains("UnknownIssuer"))
            .count()
    };
    wait_until(
        WAIT,
        || refusals(&daemon) >= 2,
        || context("no second refusal of the certificate", &d, &s, &daemon),
    );
    let alive = daemon.running();
    let what = || context("after the refusals", &d, &s, &daemon);
    let line = daemon
        .run_log()
        .lines()
        .find(|l| l.contains("UnknownIssuer"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("certificate"), "{line}\n{}", what());
    assert!(alive, "the daemon exited\n{}", what());

    // Never logged in (no plaintext fallback either: Dovecot would take a
    // plaintext LOGIN), nothing marked. A refused certificate is a
    // configuration error like a refused password: the admin hears at
    // once (not after `alert_after`), once, and nothing else is sent.
    assert_eq!(ops_logins(&d), Vec::<String>::new(), "{}", what());
    let flags = d.flags("ops", "INBOX");
    assert_eq!(flags.len(), 1, "{}", what());
    assert!(flags[0].1.is_empty(), "{flags:?}\n{}", what());
    let sent = s.wait_for(1, WAIT);
    assert_eq!(sent.len(), 1, "{}", what());
    assert_eq!(sent[0].rcpt_to, ["it.oncall@example.com"], "{}", what());
    // Dovecot saw the client give up on the handshake ("SSL_accept()
    // failed: ... tlsv1 alert unknown ca").
    wait_until(
        WAIT,
        || d.log().contains("alert unknown ca"),
        || format!("Dovecot did not log the refused certificate\n{}", what()),
    );
    daemon.stop();
}

#[test]
fn implicit_tls_imap_refuses_a_certificate_from_an_unrelated_ca() {
    imap_certificate_from_an_unrelated_ca_is_refused(TlsMode::Implicit);
}

#[test]
fn starttls_imap_refuses_a_certificate_from_an_unrelated_ca_without_falling_back() {
    imap_certificate_from_an_unrelated_ca_is_refused(TlsMode::Starttls);
}

/// The daemon reads the mailbox fine but is given the wrong CA for the
/// SMTP server (`smtp` mode): the acknowledgement is never delivered (in
/// plaintext neither: the capture would accept that), the failure is
/// logged as a certificate error and retried, and the message waits in
/// the outbox; with the right CA it goes out over TLS.
fn smtp_certificate_from_an_unrelated_ca_is_refused(smtp: SmtpTls) {
    let ca = TestCa::new("server CA");
    let unrelated = TestCa::new("unrelated CA");
    let d = Dovecot::start_tls(&[("ops", "secret")], &ca);
    // STARTTLS offered but not required: a fallback to plaintext would be
    // accepted, and caught below.
    let s = SmtpCapture::start_tls(smtp, &ca);
    let right = ca.ca_pem();
    let wrong = unrelated.ca_pem();
    let via = |ca_file| match smtp {
        SmtpTls::Implicit => Via::implicit(s.port(), ca_file),
        SmtpTls::Starttls | SmtpTls::StarttlsRequired => Via::starttls(s.port(), ca_file),
    };
    let dir = config_dir(
        &d,
        &s,
        Extra {
            smtp: FAST_RETRY,
            imap_via: Some(Via::implicit(d.imaps_port(), &right)),
            smtp_via: Some(via(&wrong)),
            ..Extra::default()
        },
    );
    let uid = d.append("ops", "INBOX", &fixture(ESCALATION));
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());

    let refusals = |daemon: &Daemon| {
        daemon
            .run_log()
            .lines()
            .filter(|l| l.contains("will retry") && l.contains("UnknownIssuer"))
            .count()
    };
    // The first pass sends the acknowledgement and the forward; two passes
    // at least, a retry among them.
    wait_until(
        WAIT,
        || refusals(&daemon) >= 3,
        || context("the delivery was not retried", &d, &s, &daemon),
    );
    let alive = daemon.running();
    let what = || context("after the refusals", &d, &s, &daemon);
    assert!(alive, "the daemon exited\n{}", what());
    assert!(s.messages().is_empty(), "{}", what());
    // The mailbox side worked: the case exists and the message is done.
    assert_eq!(d.seen("ops", "INBOX"), [uid], "{}", what());
    daemon.stop();
    let items = outbox(dir.path());
    let ack = items
        .iter()
        .find(|i| i.recipients.iter().any(|r| r == AGENT))
        .unwrap_or_else(|| panic!("no acknowledgement in the outbox: {items:#?}"));
    assert_eq!(ack.state, Delivery::Pending, "{ack:#?}");
    assert!(ack.attempts >= 2, "{ack:#?}");
    assert!(
        ack.last_error
            .as_deref()
            .unwrap_or("")
            .contains("UnknownIssuer"),
        "{ack:#?}"
    );

    // The operator fixes the CA: the waiting mail goes out, over TLS.
    let toml = dir.path().join("mailtriage.toml");
    let text = std::fs::read_to_string(&toml).expect("read mailtriage.toml");
    let fixed = text.replace(&*wrong.to_string_lossy(), &right.to_string_lossy());
    assert_ne!(fixed, text, "the wrong CA path is in the config");
    std::fs::write(&toml, fixed).expect("write mailtriage.toml");
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());
    wait_until(
        WAIT,
        || !by_rcpt(&s.messages(), AGENT).is_empty(),
        || context("no acknowledgement with the right CA", &d, &s, &daemon),
    );
    let got = s.messages();
    let acks = by_rcpt(&got, AGENT);
    assert_eq!(acks.len(), 1, "{}", context("", &d, &s, &daemon));
    assert!(subject(acks[0]).starts_with(SUBJECT));
    assert!(
        acks[0].tls.as_deref().unwrap_or("").starts_with("TLSv1."),
        "{:?}",
        acks[0].tls
    );
    daemon.stop();
}

#[test]
fn implicit_tls_smtp_refuses_a_certificate_from_an_unrelated_ca() {
    smtp_certificate_from_an_unrelated_ca_is_refused(SmtpTls::Implicit);
}

#[test]
fn starttls_smtp_refuses_a_certificate_from_an_unrelated_ca_without_falling_back() {
    smtp_certificate_from_an_unrelated_ca_is_refused(SmtpTls::Starttls);
}
