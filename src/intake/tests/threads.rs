//! Which case a message belongs to, messages left alone, and copies of a
//! message in one batch.

use super::*;

// The tables.

#[test]
fn which_case_a_message_belongs_to() {
    let calm_case = || {
        (
            t(0),
            vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
        )
    };
    let resolve = |mid: &str| answer(mid, CX, "a1@mail.example.com", "Status: Resolved");
    let rows = vec![
        Row {
            name: "a reply to the acknowledgement updates its case",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![answer(
                "r1@mail.example.com",
                RAVI,
                &ack(1),
                "The customer called again.",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.sent(1, OutgoingKind::Reply), [ack(1)], "{name}");
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Open, "{name}");
                assert_eq!(rec.history.len(), 1, "{name}");
                assert_eq!(rec.history[0].by, "ravi.k@example.com", "{name}");
                assert_eq!(rec.history[0].at, t(HOUR), "{name}");
                assert!(
                    rec.thread.contains(&"r1@mail.example.com".to_string()),
                    "{name}: the reply joins the thread: {:?}",
                    rec.thread
                );
            },
        },
        Row {
            name: "a reply with one of either-or details meets that requirement whole",
            given: vec![(
                t(0),
                vec![mail(
                    &format!(
                        "From: {RAVI}\r\nSubject: Escalation (Order #CK1)\r\nMessage-ID: <a1@mail.example.com>"
                    ),
                    &format!("Order ID: CK1\r\nIssue: {CALM}"),
                )],
            )],
            at: t(HOUR),
            batch: vec![answer(
                "r1@mail.example.com",
                RAVI,
                "a1@mail.example.com",
                "Customer Phone Number: 98450 12345",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let case = &w.case(1).case;
                assert_eq!(case.fields.phone.as_deref(), Some("9845012345"), "{name}");
                assert!(
                    case.missing.is_empty(),
                    "{name}: the phone meets \"customer name or phone\": {:?}",
                    case.missing
                );
            },
        },
        Row {
            name: "a reply naming the agent's message in References alone updates its case",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![mail(
                &format!(
                    "From: {CX}\r\nSubject: Re: Customer callback\r\nMessage-ID: <r2@mail.example.com>\r\nIn-Reply-To: <unknown@mail.example.com>\r\nReferences: <A1@Mail.Example.com> <unknown@mail.example.com>"
                ),
                "We called the customer back.",
            )],
            want: vec![(updated(1), vec![])],
            then: no_more,
        },
        Row {
            name: "a reply to a reply in the thread updates the case",
            given: vec![
                calm_case(),
                (
                    t(HOUR),
                    vec![answer("r1@mail.example.com", RAVI, &ack(1), "Any news?")],
                ),
            ],
            at: t(2 * HOUR),
            batch: vec![answer(
                "r2@mail.example.com",
                CX,
                "r1@mail.example.com",
                "Status: Escalated",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| assert_eq!(w.case(1).status, Status::Escalated, "{name}"),
        },
        Row {
            name: "a reply to a forward updates the case",
            given: vec![(
                t(0),
                vec![escalation("a1@mail.example.com", RAVI, "CK1", SCAM)],
            )],
            at: t(HOUR),
            batch: vec![answer(
                "r1@mail.example.com",
                "supervisor.oncall@example.com",
                "ESC-2026-000001.forward.0@mailtriage.example.com",
                "Status: Resolved",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(
                    w.sent(1, OutgoingKind::Forward),
                    ["ESC-2026-000001.forward.0@mailtriage.example.com"],
                    "{name}"
                );
                assert_eq!(w.case(1).status, Status::Resolved, "{name}");
            },
        },
        Row {
            name: "a reply to a message opened earlier in the same batch updates its case",
            given: vec![],
            at: t(0),
            batch: vec![
                escalation("a1@mail.example.com", RAVI, "CK1", CALM),
                answer(
                    "r1@mail.example.com",
                    CX,
                    "a1@mail.example.com",
                    "Status: Resolved\r\nResolution: Called back.",
                ),
            ],
            want: vec![
                (opened(1), vec![reply("ravi.k@example.com")]),
                (updated(1), vec![]),
            ],
            then: |name, w, batch| {
                assert_eq!(w.case(1).status, Status::Resolved, "{name}");
                assert_eq!(w.case(1).resolved_at, Some(t(0)), "{name}");
                assert_eq!(w.memory.cases.len(), 1, "{name}");
                assert_eq!(
                    batch.server,
                    [(1, ServerAction::Processed), (2, ServerAction::Processed)],
                    "{name}"
                );
            },
        },
        Row {
            name: "the case id in the subject alone updates that case",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![mail(
                &format!(
                    "From: {CX}\r\nSubject: Payout sorted [ESC-2026-000001]\r\nMessage-ID: <r1@mail.example.com>"
                ),
                "Status: Resolved\r\nResolution: Vendor warned.",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Resolved, "{name}");
                assert_eq!(rec.resolution.as_deref(), Some("Vendor warned."), "{name}");
            },
        },
        Row {
            name: "an unknown case id in the subject updates nothing",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![mail(
                &format!(
                    "From: {CX}\r\nSubject: Re: Payout sorted [ESC-2026-000099]\r\nMessage-ID: <r1@mail.example.com>"
                ),
                "Status: Resolved",
            )],
            want: vec![(ignored("status_update"), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Open, "{name}");
                assert!(w.case(1).history.is_empty(), "{name}");
            },
        },
        Row {
            name: "an escalation with an unknown case id in its subject opens a case",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![mail(
                &format!(
                    "From: {DEEPA}\r\nSubject: Escalation [ESC-2026-000099] (Order #CK2)\r\nMessage-ID: <b1@mail.example.com>"
                ),
                "Customer Name: Asha Rao\r\nOrder ID: CK2\r\nPhone: 98450 12345\r\nIssue: A callback.",
            )],
            want: vec![(opened(2), vec![reply("deepa.r@example.com")])],
            then: no_more,
        },
        Row {
            name: "a second escalation of an order with an open case joins it",
            given: vec![calm_case()],
            at: t(DAY),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "ck1 ", CALM)],
            want: vec![(updated(1), vec![reply("deepa.r@example.com")])],
            then: |name, w, batch| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Open, "{name}");
                assert_eq!(rec.history.len(), 1, "{name}");
                assert_eq!(rec.history[0].by, "deepa.r@example.com", "{name}");
                // The joined reply threads to Deepa's message and names the case.
                let out = &outgoing(item(batch, 2))[0];
                assert_eq!(out.case_id.as_deref(), Some("ESC-2026-000001"), "{name}");
                let text = String::from_utf8_lossy(&out.raw);
                assert!(
                    text.contains("In-Reply-To: <b1@mail.example.com>"),
                    "{name}: {text}"
                );
                assert!(text.contains("[ESC-2026-000001]"), "{name}: {text}");
                assert!(text.contains("already has a case"), "{name}: {text}");
                assert_eq!(w.memory.cases.len(), 1, "{name}");
            },
        },
        Row {
            name: "a second escalation of an order long open still joins it",
            given: vec![calm_case()],
            at: t(60 * DAY),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "CK1", CALM)],
            want: vec![(updated(1), vec![reply("deepa.r@example.com")])],
            then: no_more,
        },
        Row {
            name: "two escalations of one order in one batch make one case",
            given: vec![],
            at: t(0),
            batch: vec![
                escalation("a1@mail.example.com", RAVI, "CK1", CALM),
                escalation("b1@mail.example.com", DEEPA, "CK1", CALM),
            ],
            want: vec![
                (opened(1), vec![reply("ravi.k@example.com")]),
                (updated(1), vec![reply("deepa.r@example.com")]),
            ],
            then: |name, w, _| {
                assert_eq!(w.memory.cases.len(), 1, "{name}");
                assert_eq!(w.case(1).history.len(), 1, "{name}");
            },
        },
        Row {
            name: "a second escalation with a new threat joins and goes to Tier 2",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "CK1", TRUSTPILOT)],
            want: vec![(
                updated(1),
                vec![reply("deepa.r@example.com"), forward(&[TIER2, SUPERVISOR])],
            )],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.case.tier, 2, "{name}");
                assert_eq!(rec.forwarded_to, [TIER2, SUPERVISOR], "{name}");
            },
        },
        Row {
            name: "an escalation of an order resolved 10 days ago reopens its case",
            given: vec![calm_case(), (t(HOUR), vec![resolve("r1@mail.example.com")])],
            at: t(HOUR + 10 * DAY),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "CK1", CALM)],
            want: vec![(updated(1), vec![reply("deepa.r@example.com")])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Open, "{name}");
                assert_eq!(rec.resolved_at, None, "{name}");
                assert_eq!(last_changes(w, 1), ["status resolved -> open"], "{name}");
                assert_eq!(w.memory.cases.len(), 1, "{name}");
            },
        },
        Row {
            name: "an escalation of an order resolved 14 days ago to the second reopens it",
            given: vec![calm_case(), (t(HOUR), vec![resolve("r1@mail.example.com")])],
            at: t(HOUR + 14 * DAY),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "CK1", CALM)],
            want: vec![(updated(1), vec![reply("deepa.r@example.com")])],
            then: |name, w, _| assert_eq!(w.case(1).status, Status::Open, "{name}"),
        },
        Row {
            name: "an escalation of an order resolved 20 days ago opens a case that follows the old",
            given: vec![calm_case(), (t(HOUR), vec![resolve("r1@mail.example.com")])],
            at: t(HOUR + 20 * DAY),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "CK1", CALM)],
            want: vec![(opened(2), vec![reply("deepa.r@example.com")])],
            then: |name, w, _| {
                let (old, new) = (w.case(1), w.case(2));
                assert_eq!(old.status, Status::Resolved, "{name}");
                assert_eq!(old.history.len(), 1, "{name}: the old case is left alone");
                assert_eq!(new.follows.as_deref(), Some("ESC-2026-000001"), "{name}");
                assert_eq!(new.status, Status::Open, "{name}");
                // The order's latest case is the new one.
                assert_eq!(
                    w.memory.order_case("CK1").unwrap().as_deref(),
                    Some("ESC-2026-000002"),
                    "{name}"
                );
            },
        },
        Row {
            name: "an escalation of another order opens its own case",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![escalation("b1@mail.example.com", RAVI, "CK2", CALM)],
            want: vec![(opened(2), vec![reply("ravi.k@example.com")])],
            then: |name, w, _| assert_eq!(w.case(2).follows, None, "{name}"),
        },
        Row {
            name: "an out-of-office answer to the acknowledgement updates nothing",
            given: vec![(t(0), vec![fixture("01-incorrect-promise-price.eml")])],
            at: t(HOUR),
            batch: vec![fixture("44-auto-reply-out-of-office.eml")],
            want: vec![(ignored("not_escalation"), vec![])],
            then: |name, w, _| assert!(w.case(1).history.is_empty(), "{name}"),
        },
    ];
    check_rows(World::new, rows);
}

#[test]
fn messages_left_alone_seen_before_or_quarantined() {
    let rows = vec![
        Row {
            name: "a sender not on the allow-list is left alone",
            given: vec![],
            at: t(0),
            batch: vec![escalation(
                "a1@gmail.com",
                "Stranger <someone@gmail.com>",
                "CK1",
                CALM,
            )],
            want: vec![(ignored("sender \"someone@gmail.com\" not allowed"), vec![])],
            then: |name, w, batch| {
                assert!(w.memory.cases.is_empty(), "{name}");
                assert!(
                    batch.server.is_empty(),
                    "{name}: left untouched on the server"
                );
            },
        },
        Row {
            name: "a message seen before is not processed again",
            given: vec![(
                t(0),
                vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
            )],
            at: t(HOUR),
            batch: vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
            want: vec![(Got::Nothing, vec![])],
            then: |name, w, batch| {
                assert_eq!(w.memory.cases.len(), 1, "{name}");
                assert_eq!(batch.server, [(2, ServerAction::Processed)], "{name}");
            },
        },
        Row {
            name: "an empty message is quarantined",
            given: vec![],
            at: t(0),
            batch: vec![b"\r\n".to_vec()],
            want: vec![(Got::Quarantined("input is empty".into()), vec![])],
            then: |name, _, batch| {
                assert_eq!(batch.server, [(1, ServerAction::Quarantine)], "{name}");
            },
        },
        Row {
            name: "a message that is no escalation and in no thread is left alone",
            given: vec![],
            at: t(0),
            batch: vec![fixture("48-internal-lunch-friday.eml")],
            want: vec![(ignored("not_escalation"), vec![])],
            then: |name, w, _| assert!(w.memory.cases.is_empty(), "{name}"),
        },
    ];
    check_rows(World::new, rows);
}

/// A pickup complaint about vendor VND-1187 that gives no order id (it
/// asks for one), Message-ID `<d<n>@…>`.
fn without_order(n: u32) -> Vec<u8> {
    mail(
        &format!(
            "From: {RAVI}\r\nSubject: Pickup complaint\r\nMessage-ID: <d{n}@mail.example.com>"
        ),
        "Category: Customer Pickup Complaint\r\nCustomer Name: Asha Rao\r\nPhone: 98450 12345\r\nVendor: VND-1187\r\nIssue: The vendor came late.",
    )
}

#[test]
fn the_same_message_twice_in_one_batch_counts_once() {
    let rows = vec![
        Row {
            name: "a copy brings no vendor to its third complaint",
            given: vec![(t(0), vec![without_order(1)])],
            at: t(HOUR),
            batch: vec![without_order(2), without_order(2)],
            want: vec![
                (
                    opened(2),
                    vec![reply("ravi.k@example.com"), forward(&[CX_TEAM])],
                ),
                (Got::Nothing, vec![]),
            ],
            then: |name, w, batch| {
                assert_eq!(w.memory.cases.len(), 2, "{name}");
                assert!(batch.vendors_reported.is_empty(), "{name}");
                assert!(
                    w.memory.reported.is_empty(),
                    "{name}: {:?}",
                    w.memory.reported
                );
                assert_eq!(
                    batch.server,
                    [(2, ServerAction::Processed), (3, ServerAction::Processed)],
                    "{name}"
                );
            },
        },
        Row {
            name: "a copy uses up no reply",
            given: vec![],
            at: t(0),
            batch: vec![
                escalation("a1@mail.example.com", RAVI, "CK1", CALM),
                escalation("a1@mail.example.com", RAVI, "CK1", CALM),
                escalation("a2@mail.example.com", RAVI, "CK2", CALM),
            ],
            want: vec![
                (opened(1), vec![reply("ravi.k@example.com")]),
                (Got::Nothing, vec![]),
                (opened(2), vec![reply("ravi.k@example.com")]),
            ],
            then: |name, w, _| {
                assert_eq!(w.memory.replies.len(), 2, "{name}");
            },
        },
        Row {
            name: "a copy of an unreadable message is quarantined with it, stored once",
            given: vec![],
            at: t(0),
            batch: vec![b"\r\n".to_vec(), b"\r\n".to_vec()],
            want: vec![
                (Got::Quarantined("input is empty".into()), vec![]),
                (Got::Nothing, vec![]),
            ],
            then: |name, _, batch| {
                assert_eq!(
                    batch.server,
                    [(1, ServerAction::Quarantine), (2, ServerAction::Quarantine)],
                    "{name}"
                );
            },
        },
        Row {
            name: "a copy of a message left alone is left alone",
            given: vec![],
            at: t(0),
            batch: vec![
                fixture("48-internal-lunch-friday.eml"),
                fixture("48-internal-lunch-friday.eml"),
            ],
            want: vec![(ignored("not_escalation"), vec![]), (Got::Nothing, vec![])],
            then: |name, _, batch| assert!(batch.server.is_empty(), "{name}"),
        },
    ];
    check_rows(|| World::with_reply_limit(Some(2)), rows);
}
