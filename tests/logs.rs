//! The daemon's text log reads as text: the real binary, its standard
//! error a file (not a terminal) and `NO_COLOR` unset, writes no ANSI
//! colour codes, no `Some(...)` around field values, and times in fields as
//! dates, not unix seconds. The run provokes the lines whose fields were
//! once Debug-formatted: a digest scheduled at the first start (`next`), a
//! message seen before (`seen`), a delivery to retry (`retry_at`) and a
//! control request.

use std::process::{Command, Stdio};
use std::time::Duration;

use mailtriage_testkit::{
    Dovecot, MailtriageToml, Secret, SmtpCapture, copy_shipped_config, database, log_tail,
    wait_until,
};

const ESCALATION: &[u8] = b"From: Priya <priya@example.com>\r\nTo: ops@example.com\r\n\
Subject: Escalation (Order #CK7)\r\nMessage-ID: <logs-test@example.com>\r\n\r\n\
Customer Name: Asha\r\nOrder ID: CK7\r\nPhone: 9876543210\r\n\
Issue: customer says he will go to his lawyer\r\n";

/// The shipped triage config (its digest schedule and Tier-2 hours
/// included) and a mailtriage.toml for the test servers.
fn config_dir(d: &Dovecot, s: &SmtpCapture) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_shipped_config(dir.path());
    let pw = dir.path().join("imap.pw");
    std::fs::write(&pw, "secret").unwrap();
    let mut toml = MailtriageToml::new(&database(dir.path()), s.port());
    toml.mailbox("ops", d.port(), Secret::File(&pw));
    toml.write(dir.path());
    dir
}

/// The values of `name=` in `text`, each up to the next space.
fn field_values<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let key = format!(" {name}=");
    text.match_indices(&key)
        .map(|(i, _)| {
            let rest = &text[i + key.len()..];
            rest.split([' ', '\n']).next().unwrap_or("")
        })
        .collect()
}

/// A date and time as RFC 3339 prints it: `2026-01-05T13:00:00Z`.
fn is_rfc3339(v: &str) -> bool {
    v.parse::<jiff::Timestamp>().is_ok()
}

#[test]
fn text_log_has_no_colour_codes_no_some_and_dates_for_times() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    // Every delivery fails for now with a transient error: "will retry".
    s.set_reject(Some(451));
    let dir = config_dir(&d, &s);
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(["run", "--log-format", "text", "--config"])
        .arg(dir.path())
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start mailtriage run");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let first = d.append("ops", "INBOX", ESCALATION);
    wait_until(
        Duration::from_secs(30),
        || d.seen("ops", "INBOX").contains(&first),
        || format!("the escalation was not processed\n{}", log_tail(&log_path)),
    );
    // The same message again (same Message-ID, same bytes), as after a
    // UIDVALIDITY change: recognised, not processed again.
    d.append("ops", "INBOX", ESCALATION);
    wait_until(
        Duration::from_secs(30),
        || read_log().contains("seen before") && read_log().contains("will retry"),
        || {
            format!(
                "no \"seen before\" and \"will retry\"\n{}",
                log_tail(&log_path)
            )
        },
    );
    let cases = Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(["cases", "list", "--config"])
        .arg(dir.path())
        .output()
        .expect("run mailtriage cases list");
    assert!(
        cases.status.success(),
        "cases list: {}",
        String::from_utf8_lossy(&cases.stderr)
    );
    wait_until(
        Duration::from_secs(10),
        || read_log().contains("control request"),
        || format!("no \"control request\"\n{}", log_tail(&log_path)),
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_until(
        Duration::from_secs(10),
        || matches!(child.try_wait(), Ok(Some(_))),
        || format!("the daemon did not stop\n{}", log_tail(&log_path)),
    );
    let _ = child.wait();

    let text = read_log();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes (ESC) in a log that is not a terminal:\n{text}"
    );
    assert!(!text.contains("Some("), "Some(...) in the log:\n{text}");
    // Each time field is a date; the digest's next period, the retry.
    for (field, line) in [("next", "digest scheduled"), ("retry_at", "will retry")] {
        let values: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(line))
            .flat_map(|l| field_values(l, field))
            .collect();
        assert!(
            !values.is_empty(),
            "no {field}= on a {line:?} line:\n{text}"
        );
        for v in values {
            assert!(is_rfc3339(v), "{field}={v} is not a date:\n{text}");
        }
    }
    let seen = field_values(&text, "seen");
    assert!(
        seen.contains(&"opened"),
        "seen= in words (\"opened ESC-...\"):\n{text}"
    );
    // The log's own timestamps are dates too.
    let first_word = text.lines().next().and_then(|l| l.split(' ').next());
    assert!(
        first_word.is_some_and(is_rfc3339),
        "the log line does not start with a date: {first_word:?}"
    );
}
