//! `mailtriage outbox` as an operator who fixed SMTP uses it, against the
//! real binary and real servers: an acknowledgement refused with 550 is
//! undeliverable (listed, shown, status degraded); SMTP fixed, `outbox
//! retry` through the running daemon sends it at once and the case's
//! history says so; `drop` gives one up for good (kept as dropped, status
//! healthy again); `retry --all-undeliverable` on the database while no
//! daemon runs, and the daemon sends it when it starts.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use mailtriage_testkit::{
    Daemon, Dovecot, Extra, SmtpCapture, by_rcpt, cli_ok, config_dir, run_cli, subject, wait_until,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// Well under the outbox task's longest sleep (a minute with nothing due):
/// a retry delivered within it was woken, not found on the next round.
const WOKEN: Duration = Duration::from_secs(20);

fn run(dir: &Path, args: &[&str]) -> Output {
    run_cli(env!("CARGO_BIN_EXE_mailtriage"), dir, args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Standard output of a command that must exit 0.
fn ok(dir: &Path, args: &[&str]) -> String {
    cli_ok(env!("CARGO_BIN_EXE_mailtriage"), dir, args)
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let s = ok(dir, args);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {s}"))
}

/// A complete escalation from `from`: its acknowledgement is the only mail
/// it causes.
fn escalation(n: u32, from: &str) -> Vec<u8> {
    format!(
        "From: Agent <{from}>\r\nTo: ops@example.com\r\nSubject: Escalation (Order #CK9{n:04})\r\nMessage-ID: <outbox-{n}@agents.example.com>\r\n\r\nCustomer Name: Asha Verma\r\nOrder ID: CK9{n:04}\r\nPhone: 98765 4{n:04}\r\nIssue: The refund has not arrived after ten days.\r\n"
    )
    .into_bytes()
}

/// The outbox item of `outbox list --json --state all` sent to `rcpt`.
fn find_item(dir: &Path, rcpt: &str) -> Option<Value> {
    let all = json(dir, &["outbox", "list", "--json", "--state", "all"]);
    all.as_array()
        .and_then(|a| a.iter().find(|i| i["recipients"][0] == rcpt))
        .cloned()
}

fn item_to(dir: &Path, rcpt: &str) -> Value {
    find_item(dir, rcpt).unwrap_or_else(|| panic!("no item to {rcpt}"))
}

#[test]
fn what_smtp_refused_is_retried_or_dropped_by_hand() {
    let s = SmtpCapture::start();
    let d = Dovecot::start(&[("ops", "secret")]);
    let dir = config_dir(&d, &s, Extra::default());
    let dir = dir.path();
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir);
    let why = |what: &str, daemon: &Daemon| {
        format!(
            "{what}\nrejections: {:?}\n{}\n{}",
            s.rejections(),
            daemon.log_tail(),
            s.log_tail()
        )
    };
    let refused = |rcpt: &str| {
        s.rejections()
            .iter()
            .filter(|l| l.contains("550") && l.contains(rcpt))
            .count()
    };

    // Refused for good: undeliverable.
    s.set_reject(Some(550));
    d.append("ops", "INBOX", &escalation(1, "fixme@example.com"));
    d.append("ops", "INBOX", &escalation(2, "dropme@example.com"));
    wait_until(
        WAIT,
        || refused("fixme@example.com") == 1 && refused("dropme@example.com") == 1,
        || why("the acknowledgements were not tried", &daemon),
    );
    wait_until(
        WAIT,
        || {
            json(dir, &["outbox", "list", "--json"])
                .as_array()
                .map(Vec::len)
                == Some(2)
        },
        || why("not listed as undeliverable", &daemon),
    );
    let table = ok(dir, &["outbox", "list"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID  STATE") && header.contains("LAST ERROR"),
        "{table}"
    );
    let fix = item_to(dir, "fixme@example.com");
    let fix_id = fix["id"].as_u64().expect("an id");
    let fix_line = table
        .lines()
        .find(|l| l.starts_with(&format!("{fix_id} ")))
        .unwrap_or_else(|| panic!("no line for #{fix_id}: {table}"));
    for part in ["undeliverable", "reply", "fixme@example.com", "ESC-", "550"] {
        assert!(fix_line.contains(part), "{part:?} in {fix_line:?}");
    }
    assert_eq!(fix["queue"], "undeliverable", "{fix:#}");
    assert_eq!(fix["attempts"], 1, "{fix:#}");
    let case_id = fix["case_id"].as_str().expect("a case").to_string();
    assert!(
        fix["subject"]
            .as_str()
            .is_some_and(|t| t.contains(&case_id)),
        "{fix:#}"
    );
    let shown = ok(dir, &["outbox", "show", &fix_id.to_string()]);
    assert!(
        shown.starts_with(&format!("outbox #{fix_id}  undeliverable  reply")),
        "{shown}"
    );
    assert!(shown.contains("last error   "), "{shown}");
    assert!(shown.contains("\nHeaders\n"), "{shown}");
    assert!(shown.contains("Message-ID: <"), "{shown}");
    let status = run(dir, &["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status.stdout));
    assert_eq!(
        text(&status.stdout).lines().next(),
        Some("degraded: 2 messages undeliverable")
    );

    // SMTP fixed: retried through the daemon, sent at once.
    s.set_reject(None);
    let said = ok(dir, &["outbox", "retry", &fix_id.to_string()]);
    assert_eq!(
        said.trim(),
        format!("outbox #{fix_id} reply to fixme@example.com: retried (was undeliverable)")
    );
    wait_until(
        WOKEN,
        || by_rcpt(&s.messages(), "fixme@example.com").len() == 1,
        || why("the retried acknowledgement was not sent at once", &daemon),
    );
    let sent = &by_rcpt(&s.messages(), "fixme@example.com")[0].clone();
    assert!(subject(sent).contains(&case_id), "{}", subject(sent));
    wait_until(
        WAIT,
        || item_to(dir, "fixme@example.com")["state"] == "sent",
        || why("not recorded as sent", &daemon),
    );
    let case = json(dir, &["cases", "show", &case_id, "--json"]);
    let history = case["case"]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let entry = history
        .iter()
        .find(|h| h["by"] == "cli")
        .unwrap_or_else(|| panic!("no change by cli in {case:#}"));
    assert_eq!(
        entry["changes"][0],
        format!("outbox #{fix_id} reply to fixme@example.com: retried (was undeliverable)"),
        "{case:#}"
    );
    let retried = item_to(dir, "fixme@example.com");
    assert_eq!(retried["history"][0]["by"], "cli", "{retried:#}");

    // The other one given up: dropped, never sent, kept.
    let drop = item_to(dir, "dropme@example.com");
    let drop_id = drop["id"].as_u64().expect("an id").to_string();
    let said = ok(dir, &["outbox", "drop", &drop_id]);
    assert_eq!(
        said.trim(),
        format!("outbox #{drop_id} reply to dropme@example.com: dropped (was undeliverable)")
    );
    let again = ok(dir, &["outbox", "drop", &drop_id]);
    assert!(
        again.contains("is already dropped; nothing changed"),
        "{again}"
    );
    let resent = ok(dir, &["outbox", "retry", &fix_id.to_string()]);
    assert!(resent.contains("was sent at "), "{resent}");
    assert_eq!(
        ok(dir, &["outbox", "list"]).trim(),
        "nothing pending, retrying or undeliverable"
    );
    let dropped = json(dir, &["outbox", "list", "--json", "--state", "dropped"]);
    assert_eq!(dropped.as_array().map(Vec::len), Some(1), "{dropped:#}");
    assert_eq!(dropped[0]["state"], "dropped", "{dropped:#}");
    let status = run(dir, &["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
    let unknown = run(dir, &["outbox", "retry", "999"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("no outbox item 999"),
        "{}",
        text(&unknown.stderr)
    );

    // Refused while the daemon runs, retried on the database while it does
    // not, sent when it starts again.
    s.set_reject(Some(550));
    d.append("ops", "INBOX", &escalation(3, "later@example.com"));
    wait_until(
        WAIT,
        || find_item(dir, "later@example.com").is_some_and(|i| i["state"] == "undeliverable"),
        || why("the third was not refused", &daemon),
    );
    daemon.stop();
    s.set_reject(None);
    let said = ok(dir, &["outbox", "retry", "--all-undeliverable"]);
    assert!(
        said.contains("reply to later@example.com: retried (was undeliverable)")
            && said.trim_end().ends_with("1 item retried"),
        "{said}"
    );
    assert_eq!(
        ok(dir, &["outbox", "retry", "--all-undeliverable"]).trim(),
        "nothing undeliverable; nothing changed"
    );
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir);
    wait_until(
        WAIT,
        || by_rcpt(&s.messages(), "later@example.com").len() == 1,
        || why("the retried item was not sent at start", &daemon),
    );
    daemon.stop();
    assert!(
        by_rcpt(&s.messages(), "dropme@example.com").is_empty(),
        "a dropped item is never sent"
    );
    assert_eq!(s.messages().len(), 2, "each retried item once");
}
