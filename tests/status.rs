//! `mailtriage status` against the real binary and real servers: healthy
//! (exit 0) through the running daemon's control socket; a mailbox whose
//! Dovecot is stopped shown down (exit 1) while the other stays idle, and
//! healthy again once it is back; the daemon stopped: read from the
//! database, saying so (exit 1); cannot tell (exit 2) when nothing answers
//! and there is no database, or when the answer is not a status.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use mailtriage_testkit::{
    Daemon, Dovecot, MailtriageToml, Secret, SmtpCapture, by_rcpt, copy_clock_free_config,
    database, password_file, run_cli, wait_until,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A config directory with two mailboxes, `ops` on `ops_server` and
/// `support` on `support_server`, each its own Dovecot.
fn two_mailboxes(ops: &Dovecot, support: &Dovecot, s: &SmtpCapture) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_clock_free_config(dir.path());
    let password = password_file(dir.path());
    std::fs::write(&password, "secret\n").expect("write the IMAP password");
    let mut toml = MailtriageToml::new(&database(dir.path()), s.port());
    toml.smtp.set("timeout", "10s");
    toml.mailbox("ops", ops.port(), Secret::File(&password))
        .set("timeout", "10s");
    toml.mailbox("support", support.port(), Secret::File(&password))
        .set("timeout", "10s");
    toml.write(dir.path());
    dir
}

/// `mailtriage ARGS --config DIR`, without the systemd directories of the
/// test's environment.
fn run(dir: &Path, args: &[&str]) -> Output {
    run_cli(env!("CARGO_BIN_EXE_mailtriage"), dir, args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `status --json`: its exit code and report.
fn status_json(dir: &Path) -> (Option<i32>, Value) {
    let out = run(dir, &["status", "--json"]);
    let stdout = text(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "status --json is not JSON ({e}): {stdout}\nstderr: {}",
            text(&out.stderr)
        )
    });
    (out.status.code(), value)
}

fn state(report: &Value, mailbox: &str) -> String {
    report["mailboxes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == mailbox)
        .and_then(|m| m["state"].as_str())
        .unwrap_or("(none)")
        .to_string()
}

fn mailbox<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["mailboxes"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no mailbox {name} in {report:#}"))
}

/// A complete escalation from `from`.
fn escalation(n: u32, from: &str) -> Vec<u8> {
    format!(
        "From: Agent <{from}>\r\nTo: ops@example.com\r\nSubject: Escalation (Order #CK8{n:04})\r\nMessage-ID: <status-{n}@agents.example.com>\r\n\r\nCustomer Name: Asha Verma\r\nOrder ID: CK8{n:04}\r\nPhone: 98765 4{n:04}\r\nIssue: The refund has not arrived after ten days.\r\n"
    )
    .into_bytes()
}

#[test]
fn status_through_the_daemon_and_from_the_database() {
    let mut ops = Dovecot::start(&[("ops", "secret")]);
    let support = Dovecot::start(&[("support", "secret")]);
    let s = SmtpCapture::start();
    let dir = two_mailboxes(&ops, &support, &s);
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());
    let why = |what: &str, daemon: &Daemon| {
        format!(
            "{what}\nstatus: {}\n{}",
            text(&run(dir.path(), &["status"]).stdout),
            daemon.log_tail()
        )
    };

    ops.append("ops", "INBOX", &escalation(1, "asha@example.com"));
    wait_until(
        WAIT,
        || by_rcpt(&s.messages(), "asha@example.com").len() == 1,
        || why("no acknowledgement", &daemon),
    );

    // Healthy: both mailboxes idle, through the daemon.
    wait_until(
        WAIT,
        || {
            let (_, r) = status_json(dir.path());
            state(&r, "ops") == "idle" && state(&r, "support") == "idle"
        },
        || why("the mailboxes did not go idle", &daemon),
    );
    let out = run(dir.path(), &["status"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    assert_eq!(shown.lines().next(), Some("healthy"), "{shown}");
    assert!(shown.contains("daemon    running, version "), "{shown}");
    assert!(shown.contains("mailbox   ops: idle since "), "{shown}");
    assert!(shown.contains("opened ESC-"), "the last message: {shown}");
    assert!(
        shown.contains("outbox    0 pending, 0 retrying, 0 undeliverable"),
        "{shown}"
    );
    assert!(
        shown.contains("digest    managers_daily: last never, sent on request only"),
        "{shown}"
    );

    let (code, r) = status_json(dir.path());
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["verdict"], "healthy", "{r:#}");
    assert_eq!(r["source"], "daemon", "{r:#}");
    assert_eq!(r["daemon"]["running"], true, "{r:#}");
    assert_eq!(r["daemon"]["version"], env!("CARGO_PKG_VERSION"), "{r:#}");
    assert!(r["daemon"]["uptime_seconds"].as_i64() >= Some(0), "{r:#}");
    let m = mailbox(&r, "ops");
    assert_eq!(
        m["uid_validity"].as_u64(),
        Some(u64::from(ops.uid_validity("ops", "INBOX"))),
        "{r:#}"
    );
    assert_eq!(m["last_uid"], 1, "{r:#}");
    assert_eq!(m["last_message"]["uid"], 1, "{r:#}");
    assert_eq!(m["last_message"]["seen"]["outcome"], "case", "{r:#}");
    assert!(m["last_error"].is_null(), "{r:#}");
    let support_m = mailbox(&r, "support");
    assert!(support_m["last_message"].is_null(), "{r:#}");
    assert!(support_m["last_uid"].is_null(), "nothing processed: {r:#}");
    assert_eq!(r["outbox"]["pending"], 0, "{r:#}");
    assert!(r["database"]["bytes"].as_u64() > Some(0), "{r:#}");
    assert_eq!(
        r["database"]["path"].as_str(),
        database(dir.path()).to_str(),
        "{r:#}"
    );

    // ops's server goes away: ops is down, support idle, exit 1.
    ops.stop();
    wait_until(
        WAIT,
        || state(&status_json(dir.path()).1, "ops") == "down",
        || why("ops was not shown down", &daemon),
    );
    let out = run(dir.path(), &["status"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}{}", text(&out.stderr));
    let first = shown.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("degraded: mailbox ops down for "),
        "{shown}"
    );
    assert!(!first.contains("support"), "{shown}");
    assert!(shown.contains("mailbox   ops: down since "), "{shown}");
    assert!(shown.contains("last error "), "{shown}");
    let (code, r) = status_json(dir.path());
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(r["verdict"], "degraded", "{r:#}");
    assert_eq!(state(&r, "support"), "idle", "{r:#}");
    let down = mailbox(&r, "ops");
    assert!(
        down["last_error"]["message"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{r:#}"
    );
    assert!(down["connected_at"].is_null(), "{r:#}");
    assert_eq!(down["last_uid"], 1, "the cursor is still known: {r:#}");

    // Back: healthy again.
    ops.restart();
    wait_until(
        WAIT,
        || status_json(dir.path()).0 == Some(0),
        || why("not healthy again after ops came back", &daemon),
    );

    // The daemon stopped: from the database, saying so.
    daemon.stop();
    let out = run(dir.path(), &["status"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}{}", text(&out.stderr));
    assert_eq!(
        shown.lines().next(),
        Some("degraded: the daemon is not running"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "daemon    not running: read from the database; whether the mailboxes are connected cannot be known"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("mailbox   ops: unknown (no daemon)"),
        "{shown}"
    );
    let (code, r) = status_json(dir.path());
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(r["source"], "database", "{r:#}");
    assert_eq!(r["daemon"]["running"], false, "{r:#}");
    assert_eq!(state(&r, "ops"), "unknown", "{r:#}");
    let m = mailbox(&r, "ops");
    assert_eq!(m["last_message"]["uid"], 1, "{r:#}");
    assert_eq!(
        m["uid_validity"].as_u64(),
        Some(u64::from(ops.uid_validity("ops", "INBOX"))),
        "the stored one: {r:#}"
    );
}

#[test]
fn status_cannot_tell_without_a_daemon_or_a_database_or_with_an_unreadable_answer() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = mailtriage_testkit::config_dir(&d, &s, mailtriage_testkit::Extra::default());

    // No daemon has run: no database, nothing answers.
    let out = run(dir.path(), &["status"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{shown}{}", text(&out.stderr));
    assert!(
        shown.starts_with("cannot tell: no daemon answers, and no database at "),
        "{shown}"
    );
    let (code, r) = status_json(dir.path());
    assert_eq!(code, Some(2));
    assert_eq!(r["verdict"], "unknown", "{r:#}");
    assert!(
        r["reasons"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("no daemon answers, and no database at ")),
        "{r:#}"
    );

    // Something answers on the control socket, but not with a status.
    let socket = dir.path().join("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let answering = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut line = String::new();
            std::io::BufReader::new(&conn)
                .read_line(&mut line)
                .expect("read the request");
            conn.write_all(b"{\"result\":\"ok\",\"value\":[1,2,3]}\n")
                .expect("answer");
        }
    });
    let out = run(dir.path(), &["status"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{shown}{}", text(&out.stderr));
    assert!(
        shown.starts_with("cannot tell: the daemon's answer cannot be read: "),
        "{shown}"
    );
    let (code, r) = status_json(dir.path());
    assert_eq!(code, Some(2), "{r:#}");
    assert_eq!(r["verdict"], "unknown", "{r:#}");
    answering.join().expect("the fake daemon");
}
