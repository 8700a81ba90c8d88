//! What depends on time: the reply rate limit, Tier 2 held for business
//! hours, overdue cases; and a failing lookup stopping the batch.

use super::*;

#[test]
fn replies_are_limited_per_sender_and_hour() {
    let mut w = World::with_reply_limit(Some(2));
    let esc = |n: u32, from: &str| {
        escalation(
            &format!("e{n}@mail.example.com"),
            from,
            &format!("CK{n}"),
            CALM,
        )
    };
    let steps = vec![
        Step {
            name: "the third escalation of a sender in one batch opens its case without a reply",
            at: t(0),
            batch: vec![esc(1, RAVI), esc(2, RAVI), esc(3, RAVI)],
            want: vec![
                (opened(1), vec![reply("ravi.k@example.com")]),
                (opened(2), vec![reply("ravi.k@example.com")]),
                (opened(3), vec![]),
            ],
        },
        Step {
            name: "half an hour later, still none; another sender is answered",
            at: t(30 * MIN),
            batch: vec![esc(4, RAVI), esc(5, DEEPA)],
            want: vec![
                (opened(4), vec![]),
                (opened(5), vec![reply("deepa.r@example.com")]),
            ],
        },
        Step {
            name: "the sender however spelt; forwards are not limited",
            at: t(30 * MIN),
            batch: vec![escalation(
                "e6@mail.example.com",
                "Ravi.K@Example.com",
                "CK6",
                SCAM,
            )],
            want: vec![(opened(6), vec![forward(&[SUPERVISOR])])],
        },
        Step {
            name: "over an hour later the sender is answered again",
            at: t(HOUR + MIN),
            batch: vec![esc(7, RAVI)],
            want: vec![(opened(7), vec![reply("ravi.k@example.com")])],
        },
        Step {
            name: "a second within the hour too",
            at: t(HOUR + 2 * MIN),
            batch: vec![esc(8, RAVI)],
            want: vec![(opened(8), vec![reply("ravi.k@example.com")])],
        },
        Step {
            name: "a joined reply counts with the rest: the third in the hour is not sent",
            at: t(HOUR + 3 * MIN),
            batch: vec![escalation("again1@mail.example.com", RAVI, "CK1", CALM)],
            want: vec![(updated(1), vec![])],
        },
    ];
    check_steps(&mut w, steps);
    let counted = |since| w.memory.replies_since("ravi.k@example.com", since).unwrap();
    assert_eq!(counted(t(0)), 4, "the replies sent are counted, no more");
}

#[test]
fn tier_2_forwards_wait_for_business_hours() {
    // Tier 2 opens Mon-Fri 08:00-21:00 and Sat 08:00-16:30, New York time.
    let trustpilot = || vec![escalation("a1@mail.example.com", DEEPA, "CK1", TRUSTPILOT)];
    let agent = "deepa.r@example.com";
    let rows = vec![
        Row {
            name: "Tuesday 10:00: Tier 2 and the supervisor at once",
            given: vec![],
            at: utc("2026-11-24T15:00:00Z"),
            batch: trustpilot(),
            want: vec![(opened(1), vec![reply(agent), forward(&[TIER2, SUPERVISOR])])],
            then: |name, w, _| {
                assert_eq!(w.case(1).forwarded_to, [TIER2, SUPERVISOR], "{name}");
            },
        },
        Row {
            name: "Sunday 10:00: the supervisor now, Tier 2 on Monday 08:00",
            given: vec![],
            at: utc("2026-11-29T15:00:00Z"),
            batch: trustpilot(),
            want: vec![(
                opened(1),
                vec![
                    reply(agent),
                    forward(&[SUPERVISOR]),
                    held(&[TIER2], utc("2026-11-30T13:00:00Z")),
                ],
            )],
            then: |name, w, batch| {
                assert_eq!(w.case(1).forwarded_to, [SUPERVISOR, TIER2], "{name}");
                let ids: Vec<&str> = outgoing(item(batch, 1))
                    .iter()
                    .map(|o| o.message_id.as_str())
                    .collect();
                assert_eq!(
                    ids,
                    [
                        "ESC-2026-000001.reply.2@mailtriage.example.com",
                        "ESC-2026-000001.forward.0.now@mailtriage.example.com",
                        "ESC-2026-000001.forward.0@mailtriage.example.com",
                    ],
                    "{name}"
                );
            },
        },
        Row {
            name: "Saturday 17:00: closed since 16:30, held until Monday",
            given: vec![],
            at: utc("2026-11-28T22:00:00Z"),
            batch: trustpilot(),
            want: vec![(
                opened(1),
                vec![
                    reply(agent),
                    forward(&[SUPERVISOR]),
                    held(&[TIER2], utc("2026-11-30T13:00:00Z")),
                ],
            )],
            then: no_more,
        },
        Row {
            name: "Saturday 16:00: open",
            given: vec![],
            at: utc("2026-11-28T21:00:00Z"),
            batch: trustpilot(),
            want: vec![(opened(1), vec![reply(agent), forward(&[TIER2, SUPERVISOR])])],
            then: no_more,
        },
        Row {
            name: "Friday 21:30: held until Saturday 08:00",
            given: vec![],
            at: utc("2026-11-28T02:30:00Z"),
            batch: trustpilot(),
            want: vec![(
                opened(1),
                vec![
                    reply(agent),
                    forward(&[SUPERVISOR]),
                    held(&[TIER2], utc("2026-11-28T13:00:00Z")),
                ],
            )],
            then: no_more,
        },
        Row {
            name: "Monday 07:59: held a minute",
            given: vec![],
            at: utc("2026-11-30T12:59:00Z"),
            batch: trustpilot(),
            want: vec![(
                opened(1),
                vec![
                    reply(agent),
                    forward(&[SUPERVISOR]),
                    held(&[TIER2], utc("2026-11-30T13:00:00Z")),
                ],
            )],
            then: no_more,
        },
        Row {
            name: "Monday 08:00: open",
            given: vec![],
            at: utc("2026-11-30T13:00:00Z"),
            batch: trustpilot(),
            want: vec![(opened(1), vec![reply(agent), forward(&[TIER2, SUPERVISOR])])],
            then: no_more,
        },
        Row {
            name: "a case raised to Tier 2 on a Sunday: the supervisor now, Tier 2 on Monday",
            given: vec![(
                utc("2026-11-29T14:00:00Z"),
                vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
            )],
            at: utc("2026-11-29T15:00:00Z"),
            batch: vec![answer("u1@mail.example.com", RAVI, &ack(1), LAWYER)],
            want: vec![(
                updated(1),
                vec![
                    forward(&[SUPERVISOR]),
                    held(&[TIER2], utc("2026-11-30T13:00:00Z")),
                ],
            )],
            then: no_more,
        },
        Row {
            name: "a Tier-1 forward names no hours: at once on a Sunday",
            given: vec![],
            at: utc("2026-11-29T15:00:00Z"),
            batch: vec![escalation("a1@mail.example.com", RAVI, "CK1", SCAM)],
            want: vec![(
                opened(1),
                vec![reply("ravi.k@example.com"), forward(&[SUPERVISOR])],
            )],
            then: no_more,
        },
    ];
    check_rows(World::new, rows);
}

#[test]
fn an_overdue_case_is_re_escalated_once() {
    struct Overdue {
        name: &'static str,
        issue: &'static str,
        /// Replies in the case's thread after it opened: when, and the body.
        updates: Vec<(i64, &'static str)>,
        at: i64,
        /// Whether the notice is due, and then whether it is of high
        /// importance.
        due: Option<bool>,
    }
    let rows = vec![
        Overdue {
            name: "risk 5 at 2 h is not yet overdue",
            issue: SCAM,
            updates: vec![],
            at: 2 * HOUR,
            due: None,
        },
        Overdue {
            name: "risk 5 after 2 h is re-escalated",
            issue: SCAM,
            updates: vec![],
            at: 2 * HOUR + 1,
            due: Some(true),
        },
        Overdue {
            name: "risk 4 after 3 h is not yet overdue",
            issue: LYING,
            updates: vec![],
            at: 3 * HOUR,
            due: None,
        },
        Overdue {
            name: "risk 4 after 8 h is re-escalated",
            issue: LYING,
            updates: vec![],
            at: 8 * HOUR + MIN,
            due: Some(true),
        },
        Overdue {
            name: "risk 1 is never overdue",
            issue: CALM,
            updates: vec![],
            at: 100 * DAY,
            due: None,
        },
        Overdue {
            name: "a resolved case never is",
            issue: SCAM,
            updates: vec![(HOUR, "Status: Resolved")],
            at: 3 * HOUR,
            due: None,
        },
        Overdue {
            name: "an escalated case is still open",
            issue: SCAM,
            updates: vec![(HOUR, "Status: Escalated")],
            at: 3 * HOUR,
            due: Some(true),
        },
        Overdue {
            name: "a case raised to risk 5 is due 2 h after it came in",
            issue: CALM,
            updates: vec![(HOUR, SCAM)],
            at: 2 * HOUR + MIN,
            due: Some(true),
        },
    ];
    for row in rows {
        let name = row.name;
        let mut w = World::new();
        w.run(
            t(0),
            &[escalation("a1@mail.example.com", RAVI, "CK1", row.issue)],
        );
        for (i, (at, body)) in row.updates.iter().enumerate() {
            let mid = format!("u{i}@mail.example.com");
            w.run(t(*at), &[answer(&mid, CX, "a1@mail.example.com", body)]);
        }
        let before = w.case(1).clone();
        let got = crate::intake::overdue(&w.intake(), &before, t(row.at));
        let Some(high) = row.due else {
            assert!(got.is_none(), "{name}: {got:?}");
            continue;
        };
        let (rec, notice) = got.unwrap_or_else(|| panic!("{name}: not re-escalated"));
        assert_eq!(notice.kind, OutgoingKind::Overdue, "{name}");
        assert_eq!(notice.recipients, ["ops.director@example.com"], "{name}");
        assert_eq!(notice.case_id.as_deref(), Some("ESC-2026-000001"), "{name}");
        assert_eq!(notice.not_before, None, "{name}");
        let text = String::from_utf8_lossy(&notice.raw);
        assert!(
            text.contains("Subject: Overdue: [ESC-2026-000001]"),
            "{name}: {text}"
        );
        assert_eq!(text.contains("Importance: high"), high, "{name}: {text}");
        assert_eq!(rec.overdue_at, Some(t(row.at)), "{name}");
        assert_eq!(rec.status, before.status, "{name}");
        assert_eq!(rec.history.len(), before.history.len() + 1, "{name}");
        let h = rec.history.last().unwrap();
        assert_eq!((h.by.as_str(), h.at), ("daemon", t(row.at)), "{name}");
        assert!(
            h.changes.len() == 1
                && h.changes[0].starts_with("overdue after ")
                && h.changes[0].ends_with(": re-escalated to ops.director@example.com"),
            "{name}: {:?}",
            h.changes
        );
        // Once: the case as marked is not re-escalated, however late.
        w.memory.cases.insert(rec.id.clone(), rec.clone());
        assert!(
            crate::intake::overdue(&w.intake(), w.case(1), t(row.at + 30 * DAY)).is_none(),
            "{name}: twice"
        );
    }
}

#[test]
fn a_lookup_error_stops_the_batch() {
    // Every lookup intake makes for this batch: a reply to a stored case,
    // and a new case naming a vendor by name alone.
    let batch = || {
        vec![
            answer("u1@mail.example.com", RAVI, &ack(1), "Any news?"),
            with_vendor(
                "b1@mail.example.com",
                DEEPA,
                "CK2",
                "The vendor was late.",
                Some("QuickPick Logistics"),
            ),
        ]
    };
    let failing = [
        "seen",
        "case",
        "thread_case",
        "order_case",
        "replies_since",
        "vendor_alias",
        "vendor_cases",
        "vendor_reported_at",
        "reserve",
    ];
    for fail in [None].into_iter().chain(failing.map(Some)) {
        let mut w = World::new();
        w.run(
            t(0),
            &[escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
        );
        w.memory.fail = fail;
        let got = w.process(t(HOUR), &batch());
        match (fail, got) {
            (None, Ok(b)) => {
                assert_eq!(result(&b, 2).0, updated(1));
                assert_eq!(result(&b, 3).0, opened(2));
            }
            (Some(method), Err(e)) => {
                assert!(e.to_string().contains(method), "{method}: {e}");
            }
            (fail, Ok(b)) => panic!(
                "{fail:?}: the batch went on: {:?}",
                b.items.iter().map(|i| &i.outcome).collect::<Vec<_>>()
            ),
            (None, Err(e)) => panic!("no failure, yet: {e}"),
        }
    }
}
