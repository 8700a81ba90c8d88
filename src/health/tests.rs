//! The report and its verdict from facts, table-driven: healthy, each
//! cause of degradation alone and together, the boundaries of
//! `alert_after`, a daemon that is not running; a mailbox's live record
//! through a connection's life; spans of time in words.

use super::*;
use crate::batch::Seen;

/// 2026-11-23 12:00:00 UTC.
const NOW: i64 = 1_795_435_200;

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).expect("a test time")
}

fn live(state: Link, since: i64) -> MailboxLive {
    MailboxLive {
        state,
        since: ts(since),
        connected_at: (state != Link::Down).then(|| ts(NOW - 3600)),
        last_error: None,
        uid_validity: Some(7),
    }
}

/// A running daemon, its one mailbox idle, nothing waiting, one digest.
fn healthy() -> Facts {
    Facts {
        now: ts(NOW),
        alert_after: Duration::from_secs(600),
        running: Some(Running {
            version: "0.1.0".into(),
            started_at: ts(NOW - 7200),
        }),
        mailboxes: vec![MailboxFacts {
            name: "ops".into(),
            live: Some(live(Link::Idle, NOW - 60)),
            cursor: Some(Cursor {
                uid_validity: 7,
                last_uid: 42,
            }),
            last_message: Some(LastMessage {
                uid: 42,
                at: ts(NOW - 61),
                seen: Seen::Case {
                    case_id: "ESC-2026-000001".into(),
                },
            }),
        }],
        outbox: OutboxFacts::default(),
        digests: vec![DigestFacts {
            name: "managers_daily".into(),
            schedule: Some(Schedule::parse("daily 08:00", "UTC").expect("schedule")),
            last: Some(ts(NOW - 4 * 3600)),
        }],
        database: DatabaseReport {
            path: "/var/lib/mailtriage/db".into(),
            bytes: 1 << 20,
        },
        grants: Vec::new(),
    }
}

fn with(change: impl Fn(&mut Facts)) -> Facts {
    let mut f = healthy();
    change(&mut f);
    f
}

fn retrying(n: usize, for_seconds: i64) -> impl Fn(&mut Facts) {
    move |f: &mut Facts| {
        f.outbox.retrying = n;
        f.outbox.oldest_retrying =
            Some((3, ts(NOW - for_seconds), Some("451 4.3.0 try later".into())));
    }
}

#[test]
fn the_verdict_and_its_reasons() {
    let cases: Vec<(&str, Facts, Verdict, Vec<&str>)> = vec![
        ("healthy", healthy(), Verdict::Healthy, vec![]),
        (
            "mail waiting to go out is no trouble",
            with(|f| f.outbox.pending = 40),
            Verdict::Healthy,
            vec![],
        ),
        (
            "a mailbox still connecting",
            with(|f| f.mailboxes[0].live = Some(MailboxLive::starting(ts(NOW - 5)))),
            Verdict::Healthy,
            vec![],
        ),
        (
            "a mailbox working on a batch",
            with(|f| f.mailboxes[0].live = Some(live(Link::Connected, NOW))),
            Verdict::Healthy,
            vec![],
        ),
        (
            "a mailbox polling",
            with(|f| f.mailboxes[0].live = Some(live(Link::Polling, NOW - 30))),
            Verdict::Healthy,
            vec![],
        ),
        (
            "a mailbox down",
            with(|f| f.mailboxes[0].live = Some(live(Link::Down, NOW - 300))),
            Verdict::Degraded,
            vec!["mailbox ops down for 5 min"],
        ),
        (
            "retrying for less than alert_after",
            with(retrying(2, 599)),
            Verdict::Healthy,
            vec![],
        ),
        (
            "retrying for exactly alert_after",
            with(retrying(2, 600)),
            Verdict::Healthy,
            vec![],
        ),
        (
            "retrying for longer than alert_after",
            with(retrying(2, 601)),
            Verdict::Degraded,
            vec!["2 messages retrying, the oldest for 10 min"],
        ),
        (
            "one message undeliverable",
            with(|f| f.outbox.undeliverable = 1),
            Verdict::Degraded,
            vec!["1 message undeliverable"],
        ),
        (
            "the daemon is not running",
            with(|f| {
                f.running = None;
                f.mailboxes[0].live = None;
            }),
            Verdict::Degraded,
            vec!["the daemon is not running"],
        ),
        (
            "everything at once, worst first",
            with(|f| {
                f.mailboxes.push(MailboxFacts {
                    name: "support".into(),
                    live: Some(live(Link::Down, NOW - 7200)),
                    cursor: None,
                    last_message: None,
                });
                f.mailboxes[0].live = Some(live(Link::Down, NOW - 90));
                retrying(1, 86_400)(f);
                f.outbox.undeliverable = 3;
            }),
            Verdict::Degraded,
            vec![
                "mailbox ops down for 1 min",
                "mailbox support down for 2 h",
                "1 message retrying, the oldest for 1 d",
                "3 messages undeliverable",
            ],
        ),
    ];
    for (what, facts, verdict, reasons) in cases {
        let r = report(facts);
        assert_eq!(r.verdict, verdict, "{what}");
        assert_eq!(r.reasons, reasons, "{what}");
        let headline = r.headline();
        match verdict {
            Verdict::Healthy => assert_eq!(headline, "healthy", "{what}"),
            _ => assert_eq!(
                headline,
                format!("degraded: {}", reasons.join("; ")),
                "{what}"
            ),
        }
    }
}

#[test]
fn exit_codes_are_those_a_monitoring_check_reads() {
    for (verdict, code) in [
        (Verdict::Healthy, 0),
        (Verdict::Degraded, 1),
        (Verdict::Unknown, 2),
    ] {
        assert_eq!(verdict.exit_code(), code, "{verdict:?}");
    }
    let cannot = CannotTell::new("no daemon answers and the database is in use");
    assert_eq!(
        serde_json::to_string(&cannot).unwrap(),
        r#"{"verdict":"unknown","reasons":["no daemon answers and the database is in use"]}"#
    );
}

#[test]
fn the_report_says_what_the_daemon_and_the_store_know() {
    let r = report(healthy());
    assert_eq!(r.source, Source::Daemon);
    assert_eq!(r.daemon.uptime_seconds, Some(7200));
    assert_eq!(r.daemon.version.as_deref(), Some("0.1.0"));
    let m = &r.mailboxes[0];
    assert_eq!((m.state, m.since), (Link::Idle, Some(ts(NOW - 60))));
    assert_eq!((m.uid_validity, m.last_uid), (Some(7), Some(42)));
    assert_eq!(m.last_message.as_ref().map(|l| l.uid), Some(42));
    let d = &r.digests[0];
    assert_eq!(d.schedule.as_deref(), Some("daily 08:00 (UTC)"));
    assert_eq!(d.last, Some(ts(NOW - 4 * 3600)));
    assert_eq!(d.next, Some(ts(NOW + 20 * 3600)), "tomorrow 08:00");
    assert_eq!(r.alert_after_seconds, 600);

    // From the database: what only the daemon knows is unknown; the
    // stored UIDVALIDITY stands in for the server's.
    let r = report(with(|f| {
        f.running = None;
        f.mailboxes[0].live = None;
        f.mailboxes[0].cursor = Some(Cursor {
            uid_validity: 9,
            last_uid: 40,
        });
        f.digests[0].schedule = None;
    }));
    assert_eq!(r.source, Source::Database);
    assert!(!r.daemon.running);
    assert_eq!((r.daemon.started_at, r.daemon.uptime_seconds), (None, None));
    let m = &r.mailboxes[0];
    assert_eq!(
        (m.state, m.since, m.connected_at),
        (Link::Unknown, None, None)
    );
    assert_eq!((m.uid_validity, m.last_uid), (Some(9), Some(40)));
    assert_eq!(
        (r.digests[0].schedule.as_deref(), r.digests[0].next),
        (None, None)
    );

    let r = report(with(retrying(1, 90)));
    let o = r.outbox.oldest_retrying.expect("the oldest retrying item");
    assert_eq!((o.id, o.seconds), (3, 90));
    assert_eq!(o.last_error.as_deref(), Some("451 4.3.0 try later"));
}

#[test]
fn a_mailboxs_live_record_through_a_connections_life() {
    let mut m = MailboxLive::starting(ts(100));
    // (what happens, at, state, since, connected_at)
    type Step = (&'static str, i64, Link, i64, Option<i64>);
    let steps: &[Step] = &[
        ("connected", 101, Link::Connected, 101, Some(101)),
        ("idle", 102, Link::Idle, 102, Some(101)),
        ("idle again", 150, Link::Idle, 102, Some(101)),
        ("new mail", 160, Link::Connected, 160, Some(101)),
        ("failed", 170, Link::Down, 170, None),
        ("failed again", 200, Link::Down, 170, None),
        ("connected again", 230, Link::Connected, 230, Some(230)),
        ("polling", 231, Link::Polling, 231, Some(230)),
    ];
    for &(what, at, state, since, connected_at) in steps {
        match what {
            "connected" | "connected again" => m.connected(8, ts(at)),
            "idle" | "idle again" => m.set(Link::Idle, ts(at)),
            "new mail" => m.set(Link::Connected, ts(at)),
            "polling" => m.set(Link::Polling, ts(at)),
            _ => m.failed(format!("{what} at {at}"), ts(at)),
        }
        assert_eq!(m.state, state, "{what}");
        assert_eq!(m.since, ts(since), "{what}");
        assert_eq!(m.connected_at, connected_at.map(ts), "{what}");
    }
    let e = m
        .last_error
        .expect("the last error is kept after reconnecting");
    assert_eq!((e.at, e.message.as_str()), (ts(200), "failed again at 200"));
    assert_eq!(m.uid_validity, Some(8));
}

#[test]
fn spans_in_words() {
    for (seconds, words) in [
        (-5, "0 s"),
        (0, "0 s"),
        (59, "59 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (3660, "1 h 1 min"),
        (86_399, "23 h 59 min"),
        (86_400, "1 d"),
        (90_000, "1 d 1 h"),
        (30 * 86_400, "30 d"),
    ] {
        assert_eq!(span(seconds), words, "{seconds}");
    }
}

#[test]
fn a_refused_grant_degrades_and_a_failing_one_does_not() {
    let grant = |refused: bool| GrantHealth {
        used_by: vec!["mailbox ops".into(), "[smtp]".into()],
        flow: "client_credentials".into(),
        token_url: "https://login.example.com/token".into(),
        token_expires: None,
        error: Some(Noted {
            at: ts(NOW - 60),
            message: "invalid_grant: revoked (HTTP 400)".into(),
        }),
        refused,
        requests: 3,
    };
    let cases = [
        (
            true,
            Verdict::Degraded,
            vec!["OAuth 2.0 grant of mailbox ops, [smtp] refused"],
        ),
        (false, Verdict::Healthy, vec![]),
    ];
    for (refused, verdict, reasons) in cases {
        let r = report(with(|f| f.grants = vec![grant(refused)]));
        assert_eq!(r.verdict, verdict, "{refused}");
        assert_eq!(r.reasons, reasons, "{refused}");
        assert_eq!(r.oauth2.len(), 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["oauth2"][0]["refused"], refused);
        assert_eq!(json["oauth2"][0]["used_by"][1], "[smtp]");
    }
}
