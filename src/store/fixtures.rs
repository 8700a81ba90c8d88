//! Cases, outgoing mail and batches for the store's tests.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::batch::{Batch, BatchItem, BatchOutcome, Cursor, MessageKey};
use crate::config::Config;
use crate::outbox::NewOutgoing;
use crate::record::CaseRecord;
use crate::vendor::VendorKey;

use super::Store;

/// A new case, with a reserved id, from an escalation about order `CK<uid>`.
pub(super) fn case_record(store: &Store, uid: u32) -> CaseRecord {
    let config = Config::builtin().unwrap();
    let raw = format!(
        "From: a@example.com\r\nSubject: Escalation (Order #CK{uid})\r\nMessage-ID: <m{uid}@example.com>\r\n\r\nCustomer Name: Asha\r\n"
    );
    let (_, case) = config.triage.parse(raw.as_bytes()).unwrap();
    CaseRecord::new(
        store.reserve_case_id(2026).unwrap(),
        "ops",
        uid,
        7,
        jiff::Timestamp::from_second(1_700_000_000).expect("a time"),
        case,
        None,
        vec![],
    )
}

/// `n` replies about a case.
pub(super) fn outgoing(case_id: &str, n: usize) -> Vec<NewOutgoing> {
    (0..n)
        .map(|i| NewOutgoing {
            kind: crate::outbox::OutgoingKind::Reply,
            case_id: Some(case_id.into()),
            message_id: format!("{case_id}.{i}@mailtriage.example.com"),
            envelope_from: "ops@example.com".into(),
            recipients: vec!["a@example.com".into()],
            raw: format!("Subject: {case_id} {i}\r\n\r\nbody").into_bytes(),
            original: None,
            not_before: None,
        })
        .collect()
}

/// Message `uid` opening a case that sends `outs` replies, one of them
/// counted as an automatic reply to its sender.
pub(super) fn item(store: &Store, uid: u32, outs: usize) -> BatchItem {
    let record = case_record(store, uid);
    let out = outgoing(&record.id, outs);
    BatchItem {
        key: MessageKey::new(
            Some(&format!("m{uid}@example.com")),
            format!("raw {uid}").as_bytes(),
        ),
        uid,
        outcome: BatchOutcome::Case {
            record: Box::new(record),
            outgoing: out,
            replied_to: Some("A@example.com".into()),
        },
    }
}

/// A new case about `vendor`, opened at `at`, resolved as the daemon
/// does (through the stored aliases; the batch's own are the daemon's
/// business).
pub(super) fn vendor_item(store: &Store, uid: u32, at: i64, vendor: &str) -> BatchItem {
    let rules = crate::vendor::VendorRules::shipped().unwrap();
    let mut it = item(store, uid, 0);
    if let BatchOutcome::Case { record, .. } = &mut it.outcome {
        let v = rules.parse(vendor).unwrap();
        let alias = match (&v.id, &v.name) {
            (None, Some(n)) => store.vendor_alias(n).unwrap(),
            _ => None,
        };
        record.received_at = jiff::Timestamp::from_second(at).expect("a time");
        record.case.fields.vendor = Some(vendor.to_string());
        record.vendor = v.resolve(alias);
    }
    it
}

/// A batch of mailbox `ops` at `now`.
pub(super) fn batch(items: Vec<BatchItem>, now: i64, reported: Vec<VendorKey>) -> Batch {
    Batch {
        mailbox: "ops".into(),
        cursor: Cursor {
            uid_validity: 7,
            last_uid: 1,
        },
        items,
        server: vec![],
        now: ts(now),
        vendors_reported: reported,
    }
}

/// Opens the database at `dir` again once the last handle's lock is gone:
/// sled's background threads may hold it a moment after the drop.
pub(super) fn reopen(dir: &Path) -> Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    while super::Store::in_use(dir) {
        assert!(Instant::now() < deadline, "the database stays locked");
        std::thread::sleep(Duration::from_millis(20));
    }
    Store::open(dir, 1 << 20).unwrap()
}

/// A time in the tests' shorthand, unix seconds.
pub(super) fn ts(n: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(n).expect("a test time")
}
