//! Repeat vendors: reported once per window, across batches, within one,
//! and by name as well as by id.

use super::*;

/// The repeat-vendor reports of `batch`: subject and the case ids listed.
fn reports(batch: &Batch) -> Vec<(String, Vec<String>)> {
    batch
        .items
        .iter()
        .flat_map(|i| outgoing(Some(i)))
        .filter(|o| o.kind == OutgoingKind::Vendor)
        .map(|o| {
            let m = mail_parser::MessageParser::default()
                .parse(&o.raw)
                .expect("the report parses");
            let body = m.body_text(0).unwrap_or_default().into_owned();
            let mut ids: Vec<String> = body
                .lines()
                .filter_map(|l| l.split(' ').next())
                .filter(|w| w.starts_with("ESC-"))
                .map(str::to_string)
                .collect();
            ids.dedup();
            (m.subject().unwrap_or_default().to_string(), ids)
        })
        .collect()
}

#[test]
fn a_repeat_vendor_is_reported_once_per_window() {
    let mut w = World::new();
    // A vendor's complaint is a pickup complaint: CX has it too.
    let ack_to_ravi = || vec![reply("ravi.k@example.com"), forward(&[CX_TEAM])];
    let steps = vec![
        Step {
            name: "a first complaint",
            at: t(0),
            batch: vec![complaint(1, "SwiftCollect Services (VND-1187)")],
            want: vec![(opened(1), ack_to_ravi())],
        },
        Step {
            name: "a second, written another way",
            at: t(DAY),
            batch: vec![complaint(2, "vnd 1187")],
            want: vec![(opened(2), ack_to_ravi())],
        },
        Step {
            name: "the third within 30 days is reported",
            at: t(2 * DAY),
            batch: vec![complaint(3, "VND-1187 / SwiftCollect")],
            want: vec![(
                opened(3),
                vec![
                    reply("ravi.k@example.com"),
                    forward(&[CX_TEAM]),
                    vendor_report(),
                ],
            )],
        },
        Step {
            name: "a fourth in the window is not reported again",
            at: t(3 * DAY + HOUR),
            batch: vec![complaint(4, "SwiftCollect Services (VND-1187)")],
            want: vec![(opened(4), ack_to_ravi())],
        },
        Step {
            name: "another vendor's complaint counts for that vendor alone",
            at: t(3 * DAY + HOUR),
            batch: vec![complaint(5, "Sai Traders (VND-2290)")],
            want: vec![(opened(5), ack_to_ravi())],
        },
        Step {
            name: "a second escalation of an order is no new complaint",
            at: t(3 * DAY + 2 * HOUR),
            batch: vec![with_vendor(
                "again1@mail.example.com",
                DEEPA,
                "CK9001",
                "The vendor came late again.",
                Some("SwiftCollect Services (VND-1187)"),
            )],
            want: vec![(updated(1), vec![reply("deepa.r@example.com")])],
        },
        Step {
            name: "four in the window, but reported within it",
            at: t(31 * DAY),
            batch: vec![complaint(6, "SwiftCollect Services (VND-1187)")],
            want: vec![(opened(6), ack_to_ravi())],
        },
        Step {
            name: "once the report is older than the window, three complaints in it count again",
            at: t(33 * DAY),
            batch: vec![complaint(7, "SwiftCollect Services (VND-1187)")],
            want: vec![(
                opened(7),
                vec![
                    reply("ravi.k@example.com"),
                    forward(&[CX_TEAM]),
                    vendor_report(),
                ],
            )],
        },
    ];
    let batches = check_steps(&mut w, steps);
    let vnd = config().vendors.key("VND-1187").unwrap();
    let first = reports(&batches[2]);
    assert_eq!(
        first,
        [(
            "Repeat vendor: SwiftCollect Services (VND-1187), 3 complaints in 30 days".to_string(),
            vec![case_id(1), case_id(2), case_id(3)]
        )]
    );
    assert_eq!(batches[2].vendors_reported, std::slice::from_ref(&vnd));
    let again = reports(&batches[7]);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, [case_id(4), case_id(6), case_id(7)]);
    assert_eq!(w.memory.reported.get(&vnd), Some(&t(33 * DAY)));
    for n in [1, 2, 3, 4, 6, 7] {
        assert_eq!(w.case(n).vendor_key(), Some(&vnd), "case {n}");
    }
}

#[test]
fn repeat_vendors_within_a_batch_and_by_name() {
    let answered = || vec![reply("ravi.k@example.com"), forward(&[CX_TEAM])];
    let with_report = || {
        vec![
            reply("ravi.k@example.com"),
            forward(&[CX_TEAM]),
            vendor_report(),
        ]
    };
    let rows = vec![
        Row {
            name: "three complaints in one batch: the third is reported",
            given: vec![],
            at: t(0),
            batch: (1..=3).map(|n| complaint(n, "VND-1187")).collect(),
            want: vec![
                (opened(1), answered()),
                (opened(2), answered()),
                (opened(3), with_report()),
            ],
            then: |name, _, batch| {
                assert_eq!(
                    reports(batch)[0].1,
                    [case_id(1), case_id(2), case_id(3)],
                    "{name}"
                );
            },
        },
        Row {
            name: "four complaints in one batch: reported once",
            given: vec![],
            at: t(0),
            batch: (1..=4).map(|n| complaint(n, "VND-1187")).collect(),
            want: vec![
                (opened(1), answered()),
                (opened(2), answered()),
                (opened(3), with_report()),
                (opened(4), answered()),
            ],
            then: |name, _, batch| assert_eq!(reports(batch).len(), 1, "{name}"),
        },
        Row {
            name: "complaints older than the window do not count",
            given: vec![
                (t(0), vec![complaint(1, "VND-1187")]),
                (t(DAY), vec![complaint(2, "VND-1187")]),
            ],
            at: t(31 * DAY),
            batch: vec![complaint(3, "VND-1187")],
            want: vec![(opened(3), answered())],
            then: no_more,
        },
        Row {
            name: "a name alone counts under the id it was given with",
            given: vec![(t(0), vec![complaint(1, "QuickPick Logistics (VND-1044)")])],
            at: t(DAY),
            batch: vec![
                complaint(2, "QuickPick Logistics"),
                complaint(3, "quickpick logistics pvt ltd"),
            ],
            want: vec![(opened(2), answered()), (opened(3), with_report())],
            then: |name, w, batch| {
                let id = config().vendors.key("VND-1044").unwrap();
                assert_eq!(w.case(2).vendor_key(), Some(&id), "{name}");
                assert_eq!(batch.vendors_reported, [id], "{name}");
                let (subject, ids) = &reports(batch)[0];
                assert_eq!(ids, &[case_id(1), case_id(2), case_id(3)], "{name}");
                assert!(
                    subject.contains("QuickPick Logistics (VND-1044)"),
                    "{name}: {subject}"
                );
            },
        },
        Row {
            name: "a name alone counts under the id given with it earlier in the same batch",
            given: vec![],
            at: t(0),
            batch: vec![
                complaint(1, "QuickPick Logistics (VND-1044)"),
                complaint(2, "QuickPick Logistics"),
                complaint(3, "quickpick logistics pvt ltd"),
            ],
            want: vec![
                (opened(1), answered()),
                (opened(2), answered()),
                (opened(3), with_report()),
            ],
            then: |name, w, _| {
                let id = config().vendors.key("VND-1044").unwrap();
                for n in 1..=3 {
                    assert_eq!(w.case(n).vendor_key(), Some(&id), "{name}: case {n}");
                }
            },
        },
        Row {
            name: "complaints naming the vendor alone before its id was given count under the id",
            given: vec![
                (t(0), vec![complaint(1, "QuickPick Logistics")]),
                (t(DAY), vec![complaint(2, "QuickPick Logistics Pvt. Ltd.")]),
            ],
            at: t(2 * DAY),
            batch: vec![complaint(3, "QuickPick Logistics (VND-1044)")],
            want: vec![(opened(3), with_report())],
            then: |name, w, batch| {
                let id = config().vendors.key("VND-1044").unwrap();
                assert_eq!(
                    reports(batch)[0].1,
                    [case_id(1), case_id(2), case_id(3)],
                    "{name}"
                );
                // The commit moved the name's complaints to the id.
                for n in 1..=3 {
                    assert_eq!(w.case(n).vendor_key(), Some(&id), "{name}: case {n}");
                }
            },
        },
        Row {
            name: "a name reported before its id was given is not reported again as the id",
            given: vec![
                (
                    t(0),
                    (1..=3)
                        .map(|n| complaint(n, "QuickPick Logistics"))
                        .collect(),
                ),
                (t(DAY), vec![complaint(4, "QuickPick Logistics (VND-1044)")]),
            ],
            at: t(2 * DAY),
            batch: vec![complaint(5, "VND-1044")],
            want: vec![(opened(5), answered())],
            then: |name, w, _| {
                let id = config().vendors.key("VND-1044").unwrap();
                assert_eq!(w.memory.reported.get(&id), Some(&t(0)), "{name}");
            },
        },
    ];
    check_rows(World::new, rows);
}
