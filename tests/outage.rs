//! Outages, against the real `mailtriage run` binary and real servers: the
//! IMAP server going away and coming back, the SMTP server going away and
//! coming back, transient and permanent SMTP rejections, and the health
//! alert for a mailbox that cannot log in (one per outage).

use std::path::Path;
use std::time::Duration;

use mailtriage::outbox::Delivery;
use mailtriage_testkit::{
    Daemon, Dovecot, Extra, SmtpCapture, by_rcpt, config_dir, outbox, password_file, subject,
    wait_until,
};

const WAIT: Duration = Duration::from_secs(30);
/// The outbox retries after 1 s, then every 2 s (the default is 30 s
/// doubling to 30 min).
const FAST_RETRY: &str = "retry_first = \"1s\"\nretry_max = \"2s\"";

/// A complete escalation from `from` (an acknowledgement and nothing else).
fn escalation(n: u32, from: &str) -> Vec<u8> {
    format!(
        "From: Agent <{from}>\r\nTo: ops@example.com\r\nSubject: Escalation (Order #CK7{n:04})\r\nMessage-ID: <outage-{n}@agents.example.com>\r\n\r\nCustomer Name: Asha Verma\r\nOrder ID: CK7{n:04}\r\nPhone: 98765 4{n:04}\r\nIssue: The refund has not arrived after ten days.\r\n"
    )
    .into_bytes()
}

/// What failed, with both servers' and the daemon's log tails.
fn context(what: &str, d: &Dovecot, s: &SmtpCapture, daemon: &Daemon) -> String {
    let got: Vec<String> = s
        .messages()
        .iter()
        .map(|c| format!("to {:?}: {}", c.rcpt_to, subject(c)))
        .collect();
    format!(
        "{what}\ncaptured: {got:#?}\nrejections: {:?}\n{}\n{}\n{}",
        s.rejections(),
        daemon.log_tail(),
        s.log_tail(),
        d.log_tail()
    )
}

#[test]
fn after_an_imap_outage_the_daemon_reconnects_by_itself() {
    let mut d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());

    // Working, then idling.
    d.append("ops", "INBOX", &escalation(1, "before@example.com"));
    wait_until(
        WAIT,
        || by_rcpt(&s.messages(), "before@example.com").len() == 1,
        || context("no acknowledgement before the outage", &d, &s, &daemon),
    );

    d.stop();
    wait_until(
        WAIT,
        || daemon.count_lines("mailbox session failed") >= 1,
        || context("the daemon did not notice the outage", &d, &s, &daemon),
    );
    d.restart();
    d.append("ops", "INBOX", &escalation(2, "after@example.com"));
    wait_until(
        WAIT,
        || by_rcpt(&s.messages(), "after@example.com").len() == 1,
        || context("no acknowledgement after the outage", &d, &s, &daemon),
    );

    assert!(daemon.running(), "the daemon is the same process");
    assert!(
        daemon.count_lines("connected mailbox=ops") >= 2,
        "{}",
        context("it did not reconnect", &d, &s, &daemon)
    );
    daemon.stop();
    let got = s.messages();
    assert_eq!(
        got.len(),
        2,
        "{}",
        context(
            "exactly the two acknowledgements (a short outage raises no alert)",
            &d,
            &s,
            &daemon
        )
    );
    assert_eq!(d.seen("ops", "INBOX"), [1, 2]);
}

#[test]
fn mail_queued_during_an_smtp_outage_is_delivered_when_it_is_back() {
    let mut s = SmtpCapture::start();
    let d = Dovecot::start(&[("ops", "secret")]);
    let dir = config_dir(
        &d,
        &s,
        Extra {
            smtp: FAST_RETRY,
            daemon: "alert_after = \"2s\"",
            ..Extra::default()
        },
    );
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());
    wait_until(
        WAIT,
        || daemon.count_lines("connected mailbox=ops") == 1,
        || context("the daemon did not connect", &d, &s, &daemon),
    );

    s.stop();
    // A Tier-2 escalation (acknowledgement and a forward) and a plain one.
    let trustpilot = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/23-review-threat-trustpilot.eml"),
    )
    .unwrap();
    d.append("ops", "INBOX", &trustpilot);
    d.append("ops", "INBOX", &escalation(3, "plain@example.com"));

    // Triaged and marked while the SMTP server is away, and tried.
    wait_until(
        WAIT,
        || d.seen("ops", "INBOX").len() == 2,
        || context("not processed during the SMTP outage", &d, &s, &daemon),
    );
    wait_until(
        WAIT,
        || daemon.count_lines("will retry") >= 3,
        || context("the three messages were not tried", &d, &s, &daemon),
    );
    assert!(s.messages().is_empty());

    // Failing longer than alert_after: said once in the log, at ERROR.
    wait_until(
        WAIT,
        || daemon.count_lines("SMTP has been failing") == 1,
        || context("the SMTP outage was not reported", &d, &s, &daemon),
    );

    s.restart();
    wait_until(
        WAIT,
        || s.messages().len() >= 3,
        || context("the queue was not delivered", &d, &s, &daemon),
    );
    wait_until(
        WAIT,
        || daemon.count_lines("SMTP delivers again") == 1,
        || context("the recovery was not reported", &d, &s, &daemon),
    );
    daemon.stop();
    assert_eq!(
        daemon.count_lines("SMTP has been failing"),
        1,
        "reported once"
    );

    let got = s.messages();
    let what = || context("each queued message, once", &d, &s, &daemon);
    assert_eq!(got.len(), 3, "{}", what());
    assert_eq!(by_rcpt(&got, "deepa.r@example.com").len(), 1, "{}", what());
    assert_eq!(by_rcpt(&got, "tier2@example.com").len(), 1, "{}", what());
    assert_eq!(by_rcpt(&got, "plain@example.com").len(), 1, "{}", what());
    let items = outbox(dir.path());
    assert_eq!(items.len(), 3, "{items:#?}");
    for i in &items {
        assert_eq!(i.state, Delivery::Sent, "{i:#?}");
        assert!(i.attempts >= 2, "failed at least once, then sent: {i:#?}");
    }
}

#[test]
fn transient_rejections_are_retried_permanent_ones_never() {
    let s = SmtpCapture::start();
    let d = Dovecot::start(&[("ops", "secret")]);
    let dir = config_dir(
        &d,
        &s,
        Extra {
            smtp: FAST_RETRY,
            ..Extra::default()
        },
    );
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());
    let rejected = |code: &str, rcpt: &str| {
        s.rejections()
            .iter()
            .filter(|l| l.contains(code) && l.contains(rcpt))
            .count()
    };

    // Permanent: refused once, kept as undeliverable.
    s.set_reject(Some(550));
    d.append("ops", "INBOX", &escalation(4, "perm@example.com"));
    wait_until(
        WAIT,
        || rejected("550", "perm@example.com") == 1,
        || context("the acknowledgement was not tried", &d, &s, &daemon),
    );

    // Transient: refused, retried, refused again. The retry comes at least
    // a second after the first try, so it is also the window in which an
    // item wrongly kept for retrying (the refused one above, queued
    // earlier, due earlier, and tried in queue order) would be tried again.
    s.set_reject(Some(451));
    d.append("ops", "INBOX", &escalation(5, "temp@example.com"));
    wait_until(
        WAIT,
        || rejected("451", "temp@example.com") >= 2,
        || context("the 451 was not retried", &d, &s, &daemon),
    );
    s.set_reject(None);
    wait_until(
        WAIT,
        || by_rcpt(&s.messages(), "temp@example.com").len() == 1,
        || context("not delivered after the 451s", &d, &s, &daemon),
    );
    daemon.stop();

    let what = || context("after the rejections", &d, &s, &daemon);
    let perm_tries: Vec<String> = s
        .rejections()
        .into_iter()
        .filter(|l| l.contains("perm@example.com"))
        .collect();
    assert_eq!(perm_tries.len(), 1, "{perm_tries:?}\n{}", what());
    let got = s.messages();
    assert!(by_rcpt(&got, "perm@example.com").is_empty(), "{}", what());
    assert_eq!(got.len(), 1, "{}", what());

    let items = outbox(dir.path());
    let perm = items
        .iter()
        .find(|i| i.recipients == ["perm@example.com"])
        .expect("the refused acknowledgement is kept");
    assert_eq!(perm.state, Delivery::Undeliverable, "{perm:#?}");
    assert_eq!(perm.attempts, 1, "{perm:#?}");
    assert!(
        perm.last_error.as_deref().unwrap_or("").contains("550"),
        "{perm:#?}"
    );
    let temp = items
        .iter()
        .find(|i| i.recipients == ["temp@example.com"])
        .expect("the retried acknowledgement");
    assert_eq!(temp.state, Delivery::Sent, "{temp:#?}");
    assert!(temp.attempts >= 3, "two refusals and a success: {temp:#?}");
}

#[test]
fn a_mailbox_that_cannot_log_in_raises_one_alert_and_one_all_clear() {
    let s = SmtpCapture::start();
    let d = Dovecot::start(&[("ops", "secret")]);
    let dir = config_dir(&d, &s, Extra::default());
    std::fs::write(password_file(dir.path()), "wrong\n").unwrap();
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());
    let alerts = |what: &str| {
        by_rcpt(&s.messages(), "it.oncall@example.com")
            .iter()
            .filter(|c| subject(c).contains(what))
            .count()
    };

    wait_until(
        WAIT,
        || alerts("unreachable") >= 1,
        || context("no alert for a wrong password", &d, &s, &daemon),
    );
    // It keeps trying (after 1 s, then 2 s), without alerting again.
    wait_until(
        WAIT,
        || daemon.count_lines("mailbox session failed") >= 3,
        || context("the daemon stopped retrying", &d, &s, &daemon),
    );
    std::fs::write(password_file(dir.path()), "secret\n").unwrap();
    wait_until(
        WAIT,
        || alerts("works again") >= 1,
        || context("no all-clear after the password was fixed", &d, &s, &daemon),
    );
    // A sync point: this acknowledgement is queued after every alert.
    d.append("ops", "INBOX", &escalation(6, "agent@example.com"));
    wait_until(
        WAIT,
        || by_rcpt(&s.messages(), "agent@example.com").len() == 1,
        || context("the mailbox does not work again", &d, &s, &daemon),
    );
    daemon.stop();

    let got = s.messages();
    let what = || context("one alert and one all-clear", &d, &s, &daemon);
    let oncall = by_rcpt(&got, "it.oncall@example.com");
    assert_eq!(oncall.len(), 2, "{}", what());
    let down = subject(oncall[0]);
    assert_eq!(
        down,
        "mailtriage: the ops mailbox is unreachable",
        "{}",
        what()
    );
    assert_eq!(
        subject(oncall[1]),
        "mailtriage: the ops mailbox works again",
        "{}",
        what()
    );
    for c in &oncall {
        assert_eq!(c.rcpt_to, ["it.oncall@example.com"], "{}", what());
    }
    assert!(
        daemon.count_lines("mailbox session failed") >= 3,
        "{}",
        what()
    );
}
