//! Each retention rule at fixed times, against a real store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;

use crate::batch::{BatchOutcome, MessageKey, Seen};
use crate::outbox::{Delivery, NewOutgoing, OutgoingKind};
use crate::record::CaseRecord;

use super::super::fixtures::{batch, item, outgoing, ts, vendor_item};
use super::super::{Store, StoreError, find_archived};
use super::{Retention, RetentionReport};

const DAY: i64 = 86_400;
/// The day the tests start on.
const T0: i64 = 1_780_000_000;

fn day(n: i64) -> Timestamp {
    ts(T0 + n * DAY)
}

fn retention(archive: &Path) -> Retention {
    Retention {
        batch: 2,
        ..Retention::defaults(archive.to_path_buf())
    }
}

fn open() -> (tempfile::TempDir, Store, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
    let archive = dir.path().join("archive.jsonl");
    (dir, store, archive)
}

/// A forward of `case_id` whose original is `body`.
fn forward(case_id: &str, n: usize, body: &[u8]) -> NewOutgoing {
    let head = format!("Subject: [{case_id}] forward {n}\r\n\r\n--b\r\n\r\n");
    let raw = [head.as_bytes(), body, b"\r\n--b--\r\n"].concat();
    NewOutgoing {
        kind: OutgoingKind::Forward,
        case_id: Some(case_id.into()),
        message_id: format!("{case_id}.forward.{n}@mailtriage.example.com"),
        envelope_from: "ops@example.com".into(),
        recipients: vec!["tier2@example.com".into()],
        original: Some(head.len()..head.len() + body.len()),
        raw,
        not_before: None,
    }
}

fn resolve(store: &Store, id: &str, at: Timestamp) -> CaseRecord {
    let mut rec = store.case(id).unwrap().unwrap();
    assert!(crate::lifecycle::resolve(&mut rec, Some("done"), "cli", at));
    store.update_case(&rec, &[], at).unwrap()
}

#[test]
fn delivered_mail_loses_its_bytes_after_keep_sent_and_keeps_its_record() {
    let (_dir, store, archive) = open();
    let r = retention(&archive);
    let original = b"From: agent@example.com\r\n\r\nthe original\r\n";
    let mut mail = outgoing("ESC-2026-000001", 2);
    mail.push(forward("ESC-2026-000001", 0, original));
    mail.push(forward("ESC-2026-000001", 1, original));
    let ids = store.enqueue(&mail, day(0)).unwrap();
    // Sent on day 0 and day 5; one given up; one still pending.
    store.mark_sent(ids[0], day(0)).unwrap();
    store.mark_undeliverable(ids[1], "550 no").unwrap();
    store.mark_sent(ids[2], day(0)).unwrap();
    store.mark_sent(ids[3], day(5)).unwrap();
    let pending = store
        .enqueue(&outgoing("ESC-2026-000002", 1), day(0))
        .unwrap()[0];
    let raw = |id: u64| store.outbox_raw(id);

    // keep_sent (30 days) has not passed: everything is kept.
    let report = store.retention_pass(&r, day(30)).unwrap();
    assert_eq!(report.sent_dropped, 0, "{report:?}");
    assert!(report.is_empty(), "{report:?}");
    for &id in &ids {
        assert!(raw(id).is_ok(), "{id}");
    }

    // Day 31: what was sent on day 0 goes; the original stays, the day-5
    // forward still refers to it.
    let report = store
        .retention_pass(&r, day(30) + jiff::SignedDuration::from_secs(DAY + 1))
        .unwrap();
    assert_eq!(
        (report.sent_dropped, report.originals_removed),
        (2, 0),
        "{report:?}"
    );
    assert!(matches!(raw(ids[0]), Err(StoreError::BytesDropped(_))));
    assert!(matches!(raw(ids[2]), Err(StoreError::BytesDropped(_))));
    assert_eq!(raw(ids[3]).unwrap(), mail[3].raw);
    assert_eq!(
        raw(ids[1]).unwrap(),
        mail[1].raw,
        "undeliverable: kept for a retry"
    );
    assert!(raw(pending).is_ok(), "pending: kept");
    assert_eq!(store.originals_stored().unwrap(), 1);
    // The records stay as they were.
    let sent = store.outbox_item(ids[0]).unwrap().unwrap();
    assert_eq!((sent.state, sent.sent_at), (Delivery::Sent, Some(day(0))));
    assert_eq!(store.outbox_items().unwrap().len(), 5);

    // Day 36: the last forward of that original, and the original, go.
    let report = store.retention_pass(&r, day(36)).unwrap();
    assert_eq!(
        (report.sent_dropped, report.originals_removed),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(store.originals_stored().unwrap(), 0);
    assert!(store.retention_pass(&r, day(400)).unwrap().is_empty());
}

/// Every `index` and `expiry` entry, key and value, as text.
fn entries(tree: &sled::Tree) -> Vec<String> {
    tree.iter()
        .map(|e| {
            let (k, v) = e.unwrap();
            format!(
                "{} = {}",
                String::from_utf8_lossy(&k),
                String::from_utf8_lossy(&v)
            )
        })
        .collect()
}

#[test]
fn a_resolved_case_is_archived_after_keep_resolved_and_leaves_no_trace() {
    let (_dir, store, archive) = open();
    let r = retention(&archive);
    // Three cases of one vendor; the first with a forward (its original
    // kept once), a reply and a thread of two messages.
    let mut items = Vec::new();
    for uid in 1..=3 {
        let mut it = vendor_item(&store, uid, T0, "QuickPick Logistics (VND-1044)");
        if let BatchOutcome::Case {
            record, outgoing, ..
        } = &mut it.outcome
        {
            record.thread.push(format!("reply{uid}@example.com"));
            outgoing.push(forward(&record.id, 0, format!("original {uid}").as_bytes()));
        }
        items.push(it);
    }
    store.commit(&batch(items, T0, vec![])).unwrap();
    let ids: Vec<String> = store.cases().map(|c| c.unwrap().id).collect();
    let (old, recent, open_one) = (&ids[0], &ids[1], &ids[2]);
    // The others' forwards are delivered (their bytes go after
    // keep_sent); the first one's is given up, and keeps its bytes until
    // the case goes.
    for id in &ids {
        for item in store.case(id).unwrap().unwrap().outbox {
            if id == old {
                store.mark_undeliverable(item, "550 no").unwrap();
            } else {
                store.mark_sent(item, day(0)).unwrap();
            }
        }
    }
    let archived_record = resolve(&store, old, day(1));
    resolve(&store, recent, day(200));

    // 400 days after day 1 the first is not yet due; a day later it is.
    assert_eq!(
        store.retention_pass(&r, day(401)).unwrap().cases_archived,
        0
    );
    assert!(store.case(old).unwrap().is_some());
    let outbox: Vec<_> = archived_record
        .outbox
        .iter()
        .map(|&i| store.outbox_item(i).unwrap().unwrap())
        .collect();
    let report = store.retention_pass(&r, day(402)).unwrap();
    assert_eq!(
        (
            report.cases_archived,
            report.items_removed,
            report.originals_removed,
            report.cases_waiting
        ),
        (1, 1, 1, 0),
        "{report:?}"
    );

    // The archive's line reads back as the case and its mail.
    let found = find_archived(&archive, old).unwrap().expect("archived");
    assert_eq!(found.line, 1);
    assert_eq!(found.case.case_id, *old);
    assert_eq!(found.case.case, archived_record);
    assert_eq!(found.case.outbox, outbox);
    assert_eq!(found.case.archived_at, day(402));
    assert!(find_archived(&archive, recent).unwrap().is_none());

    // Nothing in the database names it any more.
    assert_eq!(store.case(old).unwrap(), None);
    let traces: Vec<String> = [&store.index, &store.expiry, &store.cases]
        .into_iter()
        .flat_map(entries)
        .filter(|e| e.contains(old.as_str()))
        .collect();
    assert!(traces.is_empty(), "{traces:?}");
    for item in &archived_record.outbox {
        assert_eq!(store.outbox_item(*item).unwrap(), None);
        assert!(matches!(
            store.outbox_raw(*item),
            Err(StoreError::NoSuchItem(_))
        ));
        assert!(
            !store
                .outbox_pending
                .contains_key(item.to_be_bytes())
                .unwrap()
        );
    }
    let thread: Vec<String> = archived_record.thread.clone();
    assert_eq!(store.thread_case(&thread).unwrap(), None);
    assert_eq!(store.order_case("CK1").unwrap(), None);
    let vendor = archived_record.vendor_key().unwrap().clone();
    assert_eq!(
        store.vendor_cases(&vendor, ts(0)).unwrap(),
        [recent.clone(), open_one.clone()]
    );
    // Its original went with its forward; the others' went after
    // keep_sent.
    assert_eq!(store.originals_stored().unwrap(), 0);

    // The others are untouched: the recent one and the open one, with
    // their indexes.
    for id in [recent, open_one] {
        let rec = store.case(id).unwrap().unwrap();
        assert_eq!(
            store.thread_case(&rec.thread).unwrap().as_deref(),
            Some(id.as_str())
        );
    }
    assert_eq!(
        store.open_case_ids().unwrap(),
        std::slice::from_ref(open_one)
    );

    // Years later the recent one goes too; the open one never does.
    let report = store.retention_pass(&r, day(2000)).unwrap();
    assert_eq!(report.cases_archived, 1, "{report:?}");
    assert_eq!(store.cases().count(), 1);
    assert!(store.case(open_one).unwrap().is_some());
    assert_eq!(find_archived(&archive, recent).unwrap().unwrap().line, 2);
}

#[test]
fn a_case_with_mail_still_pending_or_reopened_is_not_archived() {
    let (_dir, store, archive) = open();
    let r = retention(&archive);
    store
        .commit(&batch(
            vec![item(&store, 1, 1), item(&store, 2, 0)],
            T0,
            vec![],
        ))
        .unwrap();
    let (waiting, reopened) = ("ESC-2026-000001", "ESC-2026-000002");
    resolve(&store, waiting, day(1));
    let mut rec = resolve(&store, reopened, day(1));
    assert!(crate::lifecycle::reopen(&mut rec, "cli", day(2)));
    store.update_case(&rec, &[], day(2)).unwrap();

    let report = store.retention_pass(&r, day(500)).unwrap();
    assert_eq!(
        (report.cases_archived, report.cases_waiting),
        (0, 1),
        "{report:?}"
    );
    assert!(store.case(waiting).unwrap().is_some());
    assert!(!archive.exists(), "nothing archived, no file");
    // Its reply goes out: the next pass archives it.
    store.mark_sent(1, day(500)).unwrap();
    assert_eq!(
        store.retention_pass(&r, day(501)).unwrap().cases_archived,
        1
    );
    assert!(store.case(reopened).unwrap().is_some());
    // Resolved again: counted from then.
    let rec = resolve(&store, reopened, day(600));
    assert_eq!(rec.resolved_at, Some(day(600)));
    assert_eq!(
        store.retention_pass(&r, day(999)).unwrap().cases_archived,
        0
    );
    assert_eq!(
        store.retention_pass(&r, day(1001)).unwrap().cases_archived,
        1
    );
}

#[test]
fn seen_entries_are_pruned_after_keep_seen_behind_the_horizon() {
    let (_dir, store, archive) = open();
    let r = retention(&archive);
    let first = item(&store, 1, 0);
    let second = item(&store, 2, 0);
    let (k1, k2) = (first.key.clone(), second.key.clone());
    store.commit(&batch(vec![first], T0, vec![])).unwrap();
    store
        .commit(&batch(vec![second], T0 + 10 * DAY, vec![]))
        .unwrap();
    // An entry of an earlier version: no time.
    let legacy = MessageKey::new(Some("legacy@example.com"), b"legacy");
    store
        .seen
        .insert(
            legacy.bytes(),
            &br#"{"outcome":"ignored","reason":"not_escalation"}"#[..],
        )
        .unwrap();
    assert_eq!(store.seen_horizon().unwrap(), None);

    let report = store.retention_pass(&r, day(95)).unwrap();
    assert_eq!((report.seen_pruned, report.indexed), (1, 1), "{report:?}");
    assert_eq!(store.seen(&k1).unwrap(), None);
    assert!(matches!(store.seen(&k2).unwrap(), Some(Seen::Case { .. })));
    assert!(store.seen(&legacy).unwrap().is_some(), "stamped, kept");
    assert_eq!(store.seen_horizon().unwrap(), Some(day(5)));

    let report = store.retention_pass(&r, day(101)).unwrap();
    assert_eq!(report.seen_pruned, 1, "{report:?}");
    assert_eq!(store.seen(&k2).unwrap(), None);
    assert!(store.seen(&legacy).unwrap().is_some());
    // The legacy entry counts from the pass that stamped it.
    assert_eq!(store.retention_pass(&r, day(186)).unwrap().seen_pruned, 1);
    assert_eq!(store.seen(&legacy).unwrap(), None);
    // The horizon never goes back.
    store.retention_pass(&r, day(100)).unwrap();
    assert_eq!(store.seen_horizon().unwrap(), Some(day(96)));
}

#[test]
fn records_of_an_earlier_version_are_indexed_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let archive = dir.path().join("archive.jsonl");
    let r = Retention {
        keep_seen: Duration::from_secs(7 * DAY as u64),
        ..retention(&archive)
    };
    let store = Store::open(&db, 1 << 20).unwrap();
    store
        .commit(&batch(
            vec![item(&store, 1, 1), item(&store, 2, 0)],
            T0,
            vec![],
        ))
        .unwrap();
    resolve(&store, "ESC-2026-000001", day(1));
    store.mark_sent(1, day(1)).unwrap();
    // What an earlier version wrote: no `expiry` at all, `seen` without
    // times (but for one, as an import may write it: its key is added).
    store.expiry.clear().unwrap();
    for e in store.seen.iter().skip(1) {
        let (k, v) = e.unwrap();
        let seen: Seen = serde_json::from_slice(&v).unwrap();
        store
            .seen
            .insert(k, serde_json::to_vec(&seen).unwrap())
            .unwrap();
    }
    let report = store.retention_pass(&r, day(2)).unwrap();
    assert_eq!(report.indexed, 2 + 1 + 1, "{report:?}");
    assert_eq!(store.retention_pass(&r, day(2)).unwrap().indexed, 0, "once");

    let report = store.retention_pass(&r, day(500)).unwrap();
    assert_eq!(
        (
            report.sent_dropped,
            report.seen_pruned,
            report.cases_archived
        ),
        (1, 2, 1),
        "{report:?}"
    );
    assert_eq!(
        report,
        RetentionReport {
            sent_dropped: 1,
            seen_pruned: 2,
            cases_archived: 1,
            items_removed: 1,
            batches: report.batches,
            ..RetentionReport::default()
        }
    );
}

#[test]
fn an_archive_that_cannot_be_written_removes_nothing() {
    let (dir, store, _) = open();
    let r = retention(&dir.path().join("missing").join("archive.jsonl"));
    store
        .commit(&batch(vec![item(&store, 1, 0)], T0, vec![]))
        .unwrap();
    resolve(&store, "ESC-2026-000001", day(1));
    let e = store.retention_pass(&r, day(500)).unwrap_err();
    assert!(matches!(e, StoreError::Archive { .. }), "{e:?}");
    assert!(e.to_string().contains("missing/archive.jsonl"), "{e}");
    assert!(store.case("ESC-2026-000001").unwrap().is_some());
}
