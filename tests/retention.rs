//! Bounded data against the real servers, on a clock the test sets: a
//! resolved case archived a year on, its index gone, while new mail still
//! flows; `cases show` of it read from the archive; and a mailbox whose
//! UIDVALIDITY changed after `seen` was pruned, whose old mail is not
//! processed again while new mail is.

use std::path::Path;
use std::time::{Duration, SystemTime};

use jiff::{SignedDuration, Timestamp};
use mail_parser::MessageParser;
use mailtriage::batch::{Cursor, MessageKey};
use mailtriage::daemon::Clock;
use mailtriage::store::{Retention, Store, find_archived};
use mailtriage_testkit::{
    Dovecot, Extra, InProcess, SmtpCapture, by_rcpt, config_dir, database, fixture, wait_until,
};

const WAIT: Duration = Duration::from_secs(30);
const DAY: i64 = 86_400;

/// Now, to the second (the daemon's clock keeps seconds).
fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).expect("now")
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n * DAY)
}

/// Waits until `n` messages went to `rcpt`; returns the last one's subject.
fn wait_for_rcpt(s: &SmtpCapture, rcpt: &str, n: usize) -> String {
    wait_until(
        WAIT,
        || by_rcpt(&s.messages(), rcpt).len() >= n,
        || format!("{n} messages to {rcpt}; captured {:?}", s.messages()),
    );
    let got = s.messages();
    let last = by_rcpt(&got, rcpt)[n - 1];
    let m = MessageParser::default().parse(&last.raw).expect("parses");
    m.subject().unwrap_or("").to_string()
}

fn case_id_of(subject: &str) -> String {
    mailtriage::lifecycle::case_id_in_subject(subject)
        .unwrap_or_else(|| panic!("no case id in {subject:?}"))
}

/// `mailtriage ARGS --config DIR`, through the running daemon's socket if
/// one runs: its standard output.
fn cli(dir: &Path, args: &[&str]) -> String {
    mailtriage_testkit::cli_ok(env!("CARGO_BIN_EXE_mailtriage"), dir, args)
}

#[test]
fn a_resolved_case_is_archived_a_year_on_while_new_mail_flows() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    let t0 = now();
    let clock = Clock::fixed(t0);
    let daemon = InProcess::start_with_clock(dir.path(), clock.clone());

    // A case, its acknowledgement and CX forward, then its resolution.
    let a = fixture("06-pickup-rude-vendor.eml");
    d.append("ops", "INBOX", &a);
    let old = case_id_of(&wait_for_rcpt(&s, "ravi.k@example.com", 1));
    wait_for_rcpt(&s, "cx@example.com", 1);
    let resolve = format!(
        "From: CX Support <cx.support@example.com>\r\nTo: ops@example.com\r\nSubject: Sorted [{old}]\r\nMessage-ID: <resolved@mail.example.com>\r\n\r\nStatus: Resolved\r\nResolution: vendor warned.\r\n"
    );
    d.append("ops", "INBOX", resolve.as_bytes());
    wait_until(
        WAIT,
        || d.seen("ops", "INBOX").len() == 2,
        || format!("{:?} processed", d.seen("ops", "INBOX")),
    );
    assert!(cli(dir.path(), &["cases", "show", &old]).contains("resolved"));

    // 401 days on, the daily pass archives it; mail that arrives meanwhile
    // is triaged as ever.
    clock.set(t0 + days(401));
    d.append("ops", "INBOX", &fixture("12-pickup-no-show.eml"));
    let archive = dir.path().join("archive.jsonl");
    wait_until(
        WAIT,
        || find_archived(&archive, &old).is_ok_and(|f| f.is_some()),
        || format!("{old} not in {}", archive.display()),
    );
    let new = case_id_of(&wait_for_rcpt(&s, "meera.nair@example.com", 1));
    assert_ne!(new, old);

    // The command line says where it went, through the running daemon.
    let shown = cli(dir.path(), &["cases", "show", &old]);
    assert!(
        shown.starts_with(&format!("{old} was archived ")),
        "{shown}"
    );
    assert!(shown.contains(&archive.display().to_string()), "{shown}");
    assert!(shown.contains("vendor warned"), "{shown}");
    let json: serde_json::Value =
        serde_json::from_str(&cli(dir.path(), &["cases", "show", "--json", &old])).unwrap();
    assert_eq!(json["case"]["id"], old.as_str());
    assert_eq!(json["archived"]["line"], 1);
    assert_eq!(
        json["archived"]["archived_at"],
        (t0 + days(401)).as_second()
    );
    let listed = cli(dir.path(), &["cases", "list"]);
    assert!(!listed.contains(&old) && listed.contains(&new), "{listed}");
    daemon.shutdown();

    // Nothing in the database names it; the archive holds what it was.
    let found = find_archived(&archive, &old).unwrap().unwrap();
    let store = Store::open(&database(dir.path()), 1 << 20).unwrap();
    assert_eq!(store.case(&old).unwrap(), None);
    let thread: Vec<String> = found.case.case.thread.clone();
    assert_eq!(thread.len(), 2, "the agent's message and the resolution");
    assert_eq!(store.thread_case(&thread).unwrap(), None);
    let sent: Vec<String> = found
        .case
        .outbox
        .iter()
        .map(|i| i.message_id.clone())
        .collect();
    assert_eq!(sent.len(), 2, "the acknowledgement and the forward");
    assert_eq!(store.thread_case(&sent).unwrap(), None);
    assert_eq!(store.order_case("CK640218").unwrap(), None);
    for item in &found.case.outbox {
        assert_eq!(store.outbox_item(item.id).unwrap(), None);
    }
    assert_eq!(
        store.originals_stored().unwrap(),
        1,
        "the new case's forward's"
    );
    assert_eq!(store.open_case_ids().unwrap(), std::slice::from_ref(&new));
    let new_case = store.case(&new).unwrap().unwrap();
    assert_eq!(store.thread_case(&new_case.thread).unwrap(), Some(new));
}

#[test]
fn after_uidvalidity_changes_mail_older_than_the_seen_horizon_is_not_processed_again() {
    let mut d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    let t0 = now();

    // Day 0: an escalation processed and marked.
    let a = fixture("06-pickup-rude-vendor.eml");
    d.deliver("ops", "INBOX", &a);
    let daemon = InProcess::start_with_clock(dir.path(), Clock::fixed(t0));
    wait_for_rcpt(&s, "ravi.k@example.com", 1);
    daemon.shutdown();

    // Day 91: its seen entry is pruned (keep_seen is 90 days), the horizon
    // moved to day 1.
    {
        let store = Store::open(&database(dir.path()), 1 << 20).unwrap();
        let key = MessageKey::new(Some("pickup-rude-vendor.06@mail.example.com"), &a);
        assert!(store.seen(&key).unwrap().is_some());
        let r = Retention::defaults(dir.path().join("archive.jsonl"));
        let report = store.retention_pass(&r, t0 + days(91)).unwrap();
        assert_eq!(report.seen_pruned, 1, "{report:?}");
        assert_eq!(store.seen(&key).unwrap(), None);
        assert_eq!(store.seen_horizon().unwrap(), Some(t0 + days(1)));
    }

    // The mailbox is migrated: new UIDVALIDITY, every message a new UID.
    // One more escalation came in on day 91 before the daemon saw it.
    let old_validity = d.uid_validity("ops", "INBOX");
    let validity = d.reset_uid_validity("ops", "INBOX");
    assert_ne!(validity, old_validity);
    let day91 = SystemTime::now() + Duration::from_secs(91 * DAY as u64);
    d.deliver_received("ops", "INBOX", &fixture("12-pickup-no-show.eml"), day91);

    let daemon = InProcess::start_with_clock(dir.path(), Clock::fixed(t0 + days(91)));
    wait_for_rcpt(&s, "meera.nair@example.com", 1);
    // Mail that arrives during the rescan is new, whatever its date.
    d.deliver("ops", "INBOX", &fixture("07-pickup-vendor-hours-late.eml"));
    wait_for_rcpt(&s, "ankit.jain@example.com", 1);
    daemon.shutdown();

    // The old escalation was not triaged again: three cases, one
    // acknowledgement to its agent.
    assert_eq!(by_rcpt(&s.messages(), "ravi.k@example.com").len(), 1);
    let store = Store::open(&database(dir.path()), 1 << 20).unwrap();
    assert_eq!(store.cases().count(), 3);
    let acks = store
        .outbox_items()
        .unwrap()
        .into_iter()
        .filter(|i| i.recipients == ["ravi.k@example.com"])
        .count();
    assert_eq!(acks, 1);
    let cursor = store.cursor("ops").unwrap().unwrap();
    assert_eq!(
        cursor,
        Cursor {
            uid_validity: validity,
            last_uid: 3
        }
    );
    assert_eq!(store.rescan("ops").unwrap(), None, "the rescan is done");
}
