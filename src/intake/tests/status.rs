//! Status updates, resolving and reopening; a raised case forwarded to
//! whoever has not had it.

use super::*;

#[test]
fn status_updates_resolve_and_reopen() {
    let opened = || {
        (
            t(0),
            vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
        )
    };
    let resolved = || {
        (
            t(HOUR),
            vec![answer(
                "r1@mail.example.com",
                CX,
                "a1@mail.example.com",
                "Status: Resolved",
            )],
        )
    };
    let update = |body: &str| vec![answer("u1@mail.example.com", CX, &ack(1), body)];
    let rows = vec![
        Row {
            name: "Status: Resolved resolves, with its note and tags",
            given: vec![opened()],
            at: t(2 * HOUR),
            batch: update(
                "Status: Resolved\r\nResolution: Called back, all calm.\r\n\r\n#vendor_warned",
            ),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Resolved, "{name}");
                assert_eq!(rec.resolved_at, Some(t(2 * HOUR)), "{name}");
                assert_eq!(
                    rec.resolution.as_deref(),
                    Some("Called back, all calm."),
                    "{name}"
                );
                assert_eq!(rec.tags, ["vendor_warned"], "{name}");
                assert_eq!(rec.updated_at, t(2 * HOUR), "{name}");
                let h = rec.history.last().unwrap();
                assert_eq!(h.by, "cx.support@example.com", "{name}");
                assert_eq!(
                    h.message_id.as_deref(),
                    Some("u1@mail.example.com"),
                    "{name}"
                );
                assert_eq!(
                    h.changes,
                    [
                        "status open -> resolved",
                        "tag #vendor_warned",
                        "resolution note: Called back, all calm."
                    ],
                    "{name}"
                );
            },
        },
        Row {
            name: "Status: Escalated sets that status",
            given: vec![opened()],
            at: t(2 * HOUR),
            batch: update("Status: Escalated"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Escalated, "{name}");
                assert_eq!(last_changes(w, 1), ["status open -> escalated"], "{name}");
            },
        },
        Row {
            name: "Status: High Priority sets that status",
            given: vec![opened()],
            at: t(2 * HOUR),
            batch: update("Status: High Priority"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::HighPriority, "{name}");
                assert_eq!(
                    last_changes(w, 1),
                    ["status open -> high_priority"],
                    "{name}"
                );
            },
        },
        Row {
            name: "a reply with nothing new is kept in the history",
            given: vec![opened()],
            at: t(2 * HOUR),
            batch: update("Called the customer, no answer."),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Open, "{name}");
                assert_eq!(
                    last_changes(w, 1),
                    ["message added to the thread"],
                    "{name}"
                );
            },
        },
        Row {
            name: "the details the agent was asked for fill the case",
            given: vec![(
                t(0),
                vec![mail(
                    &format!(
                        "From: {RAVI}\r\nSubject: Escalation (Order #CK1)\r\nMessage-ID: <a1@mail.example.com>"
                    ),
                    "Order ID: CK1\r\nIssue: The customer wants a callback.",
                )],
            )],
            at: t(HOUR),
            batch: vec![answer(
                "u1@mail.example.com",
                RAVI,
                &ack(1),
                "Customer Name: Asha Rao\r\nPhone: 98450 12345",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(
                    rec.case.fields.customer_name.as_deref(),
                    Some("Asha Rao"),
                    "{name}"
                );
                assert!(rec.case.fields.phone.is_some(), "{name}");
                assert!(
                    rec.case.missing.is_empty(),
                    "{name}: {:?}",
                    rec.case.missing
                );
            },
        },
        Row {
            name: "Status: Resolved of a resolved case changes nothing",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update("Status: Resolved"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Resolved, "{name}");
                assert_eq!(w.case(1).resolved_at, Some(t(HOUR)), "{name}");
                assert_eq!(
                    last_changes(w, 1),
                    ["message added to the thread"],
                    "{name}"
                );
            },
        },
        Row {
            name: "#reopen reopens a resolved case",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update("The customer called again.\r\n\r\n#reopen"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Open, "{name}");
                assert_eq!(rec.resolved_at, None, "{name}");
                assert_eq!(
                    last_changes(w, 1),
                    ["status resolved -> open", "tag #reopen"],
                    "{name}"
                );
            },
        },
        Row {
            name: "Status: Reopened reopens a resolved case",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update("Status: Reopened"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Open, "{name}");
                assert_eq!(last_changes(w, 1), ["status resolved -> open"], "{name}");
            },
        },
        Row {
            name: "Status: Escalated reopens a resolved case as escalated",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update("Status: Escalated"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Escalated, "{name}");
                assert_eq!(w.case(1).resolved_at, None, "{name}");
            },
        },
        Row {
            name: "a new flag category reopens a resolved case and routes it again",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update(SCAM),
            want: vec![(updated(1), vec![forward(&[SUPERVISOR])])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Open, "{name}");
                assert_eq!(rec.case.risk, 5, "{name}");
                let changes = last_changes(w, 1);
                assert_eq!(changes[0], "status resolved -> open", "{name}");
                assert!(
                    changes.contains(&"risk 1 -> 5".to_string()),
                    "{name}: {changes:?}"
                );
                assert_eq!(rec.forwarded_to, [SUPERVISOR], "{name}");
            },
        },
        Row {
            name: "a reply with no new flag leaves a resolved case resolved",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update("Thanks, the customer is happy."),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| assert_eq!(w.case(1).status, Status::Resolved, "{name}"),
        },
    ];
    check_rows(World::new, rows);
}

#[test]
fn a_raised_case_goes_to_whoever_has_not_had_it() {
    let calm = || {
        (
            t(0),
            vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
        )
    };
    let threat = |mid: &str, at: i64, text: &str| {
        (t(at), vec![answer(mid, RAVI, "a1@mail.example.com", text)])
    };
    let rows = vec![
        Row {
            name: "a legal threat in a reply sends the case to Tier 2",
            given: vec![calm()],
            at: t(HOUR),
            batch: threat("u1@mail.example.com", HOUR, LAWYER).1,
            want: vec![(updated(1), vec![forward(&[TIER2, SUPERVISOR])])],
            then: |name, w, batch| {
                let rec = w.case(1);
                assert_eq!((rec.case.risk, rec.case.tier), (5, 2), "{name}");
                assert_eq!(rec.forwarded_to, [TIER2, SUPERVISOR], "{name}");
                let changes = last_changes(w, 1);
                assert!(
                    changes.contains(&"tier 1 -> 2".to_string()),
                    "{name}: {changes:?}"
                );
                // Named by when in the case's life it went: the first update.
                let out = &outgoing(item(batch, 2))[0];
                assert_eq!(
                    out.message_id, "ESC-2026-000001.forward.u1.0@mailtriage.example.com",
                    "{name}"
                );
            },
        },
        Row {
            name: "a second raise does not forward to Tier 2 again",
            given: vec![calm(), threat("u1@mail.example.com", HOUR, LAWYER)],
            at: t(2 * HOUR),
            batch: threat("u2@mail.example.com", 2 * HOUR, JOURNALIST).1,
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let changes = last_changes(w, 1);
                assert!(
                    changes.iter().any(|c| c.starts_with("flag media: ")),
                    "{name}: {changes:?}"
                );
                assert_eq!(w.sent(1, OutgoingKind::Forward).len(), 1, "{name}");
            },
        },
        Row {
            name: "the same threat again is no raise",
            given: vec![calm(), threat("u1@mail.example.com", HOUR, LAWYER)],
            at: t(2 * HOUR),
            batch: threat("u2@mail.example.com", 2 * HOUR, LAWYER).1,
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(
                    last_changes(w, 1),
                    ["message added to the thread"],
                    "{name}"
                );
            },
        },
        Row {
            name: "a case the supervisor had goes to Tier 2 alone when raised",
            given: vec![(
                t(0),
                vec![escalation("a1@mail.example.com", RAVI, "CK1", SCAM)],
            )],
            at: t(HOUR),
            batch: threat("u1@mail.example.com", HOUR, TRUSTPILOT).1,
            want: vec![(updated(1), vec![forward(&[TIER2])])],
            then: |name, w, _| {
                assert_eq!(w.case(1).forwarded_to, [SUPERVISOR, TIER2], "{name}");
            },
        },
    ];
    check_rows(World::new, rows);
}
