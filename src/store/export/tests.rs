//! Export and import over a store holding every kind of record in every
//! tree: the copy is the same database, entry for entry; a second export
//! is the same file; every tree of the database is exported; a cut,
//! altered or newer export, and a non-empty target, are refused, leaving
//! nothing behind.

use std::path::Path;

use crate::batch::{BatchOutcome, Cursor, ServerAction};
use crate::record::Status;
use crate::rescan::Rescan;

use super::super::fixtures::{batch, item, outgoing, reopen, ts, vendor_item};
use super::super::outbox::UNDELIVERABLE_INDEXED;
use super::super::{Retention, Store};
use super::{FormatError, ImportError, Line, import, trees, verify};

/// Every kind of record.
const KINDS: [&str; 26] = [
    "alias",
    "case",
    "complaint",
    "counter",
    "cursor",
    "digest_sent",
    "expiry_resolved",
    "expiry_seen",
    "expiry_sent",
    "flag",
    "last_message",
    "open",
    "order",
    "original",
    "outbox",
    "pending",
    "raw",
    "reply",
    "rescan",
    "seen",
    "seen_horizon",
    "thread",
    "undeliverable",
    "vendor_reported",
    // Not records: what the reader takes apart from them.
    "header",
    "end",
];

/// A store with a record of every kind, in every tree: cases (one
/// resolved), seen messages, a cursor, pending server actions, outbox
/// items sent, retried, undeliverable and pending with their bytes, two
/// forwards of one original, reply counts, threads, orders, open cases,
/// complaints, an alias, the undeliverable index, counters, a vendor
/// reported, a digest sent, a mailbox's last message and rescan, the seen
/// horizon, the retention pass's marks, and one corrupt entry.
fn filled(dir: &Path) -> Store {
    let store = Store::open(dir, 1 << 20).unwrap();
    let a = vendor_item(&store, 1, 1_000, "QuickPick Logistics");
    let b = vendor_item(&store, 2, 1_000, "QuickPick Logistics (VND-1044)");
    let mut c = item(&store, 3, 2);
    if let BatchOutcome::Case { record, .. } = &mut c.outcome {
        record.status = Status::Resolved;
        record.resolved_at = Some(ts(1_500));
    }
    let rules = crate::vendor::VendorRules::shipped().unwrap();
    let name = rules.key("QuickPick Logistics").unwrap();
    let mut b1 = batch(vec![a, b, c], 1_000, vec![name]);
    b1.server = vec![(1, ServerAction::Processed), (3, ServerAction::Quarantine)];
    b1.cursor = Cursor {
        uid_validity: 7,
        last_uid: 3,
    };
    store.commit(&b1).unwrap();
    store.mark_sent(1, ts(1_001)).unwrap();
    store
        .mark_retry(2, "451 later", ts(1_000), ts(1_060))
        .unwrap();
    store
        .queue_digest("managers_daily", ts(900), &[], ts(1_000))
        .unwrap();
    store
        .enqueue(&outgoing("ESC-2026-000009", 1), ts(1_100))
        .unwrap();
    // Two forwards of one original, kept once; one given up.
    let forwards: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|to| {
            let head = format!("To: {to}@example.com\r\n\r\n--b\r\n");
            let raw = format!("{head}THE ORIGINAL\r\n--b--\r\n");
            let mut out = outgoing("ESC-2026-000001", 1).remove(0);
            out.kind = crate::outbox::OutgoingKind::Forward;
            out.original = Some(head.len()..head.len() + "THE ORIGINAL".len());
            out.raw = raw.into_bytes();
            out
        })
        .collect();
    let ids = store.enqueue(&forwards, ts(1_200)).unwrap();
    store
        .mark_undeliverable(ids[1], "550 no such user")
        .unwrap();
    store.advance_seen_horizon(ts(500)).unwrap();
    store
        .set_rescan(
            "ops",
            &Rescan {
                uid_validity: 7,
                below_uid: 2,
            },
        )
        .unwrap();
    // Nothing is due yet: it only marks the records indexed.
    let retention = Retention::defaults(dir.with_file_name("archive.jsonl"));
    assert!(
        store
            .retention_pass(&retention, ts(2_000))
            .unwrap()
            .is_empty()
    );
    store.cases.insert("ESC-BROKEN", "{not json").unwrap();
    store.flush().unwrap();
    store
}

/// Every entry of every tree, as bytes.
/// Every entry of every tree the database has (not only those the store
/// lists), as bytes.
fn entries(store: &Store) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for name in store.db.tree_names() {
        let tree = store.db.open_tree(&name).unwrap();
        for r in tree.iter() {
            let (k, v) = r.unwrap();
            out.push((
                String::from_utf8_lossy(&name).into_owned(),
                k.to_vec(),
                v.to_vec(),
            ));
        }
    }
    out.sort();
    out
}

/// The entries, but for the mark an import sets (see `trees`).
fn data(store: &Store) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = entries(store);
    out.retain(|(tree, k, _)| !(tree == "meta" && k == UNDELIVERABLE_INDEXED.as_bytes()));
    out
}

fn export(store: &Store, at: i64) -> Vec<u8> {
    let mut out = Vec::new();
    store.snapshot(ts(at)).unwrap().write_to(&mut out).unwrap();
    out
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn an_import_is_the_same_database_and_exports_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(&dir.path().join("a"));
    let first = export(&store, 5_000);

    let kinds: Vec<String> = {
        let header: serde_json::Value =
            serde_json::from_str(&lines(&first)[0]).expect("a JSON header");
        assert_eq!(header["record"], "header");
        assert_eq!(header["format"], "mailtriage-export");
        assert_eq!(header["version"], 1);
        assert_eq!(header["exported_at"], "1970-01-01T01:23:20Z");
        assert_eq!(header["counts"]["case"], 3);
        assert_eq!(header["counts"]["raw"], 1);
        let counts = header["counts"].as_object().unwrap();
        counts.keys().cloned().collect()
    };
    // Every kind of record, in every tree, so that the round trip below
    // covers them all.
    for kind in &KINDS[..KINDS.len() - 2] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} record: {kinds:?}"
        );
    }
    let text = lines(&first);
    let end: serde_json::Value = serde_json::from_str(text.last().unwrap()).unwrap();
    assert_eq!(end["record"], "end");
    assert_eq!(end["records"], text.len() - 2);
    let outbox: Vec<&String> = text
        .iter()
        .filter(|l| l.starts_with(r#"{"record":"outbox""#))
        .collect();
    assert_eq!(outbox.len(), 5);
    // Bytes as base64; the pending item's due time, none once sent.
    assert!(
        outbox[0].contains(r#""due":null,"raw":"U3ViamVjdDog"#),
        "{}",
        outbox[0]
    );
    assert!(outbox[1].contains(r#""due":1060,"#), "{}", outbox[1]);
    // A forward's bytes as stored, without its original, and where it
    // goes back in; the original once, with the two that refer to it.
    for forward in &outbox[3..] {
        assert!(
            forward.contains(r#""original":{"sha256":"#) && forward.contains(r#","at":26}"#),
            "{forward}"
        );
        assert!(!forward.contains("VEhFIE9SSUdJTkFM"), "{forward}");
    }
    let original: Vec<&String> = text
        .iter()
        .filter(|l| l.starts_with(r#"{"record":"original""#))
        .collect();
    assert_eq!(original.len(), 1);
    assert!(
        original[0].ends_with(r#""refs":2,"body":"VEhFIE9SSUdJTkFM"}"#),
        "{}",
        original[0]
    );
    assert!(text.contains(&r#"{"record":"undeliverable","id":5}"#.to_string()));

    // Every tree has entries, so that the copy is compared in each.
    let trees: Vec<String> = entries(&store).into_iter().map(|(t, _, _)| t).collect();
    for (name, _) in store.trees() {
        assert!(trees.iter().any(|t| t == name), "{name} is empty");
    }

    let b = dir.path().join("b");
    let imported = import(&b, 1 << 20, first.as_slice(), None).unwrap();
    assert_eq!(imported.records as usize, text.len() - 2);
    assert_eq!(imported.entries as usize, data(&store).len());
    let copy = reopen(&b);
    assert_eq!(data(&copy), data(&store), "entry for entry the same");
    // The undeliverable index came whole: marked built, as the original's
    // was by its first queued item.
    assert!(store.meta.get(UNDELIVERABLE_INDEXED).unwrap().is_some());
    assert!(copy.meta.get(UNDELIVERABLE_INDEXED).unwrap().is_some());
    assert_eq!(copy.undeliverable_ids().unwrap(), [5]);
    assert_eq!(export(&copy, 5_000), first, "the same file again");
    // Only the header's time differs at another time.
    let later = lines(&export(&copy, 6_000));
    assert_ne!(later[0], text[0]);
    assert_eq!(later[1..later.len() - 1], text[1..text.len() - 1]);
    // The copy works as a store.
    assert_eq!(copy.cursor("ops").unwrap().unwrap().last_uid, 3);
    assert_eq!(copy.reserve_case_id(2026).unwrap(), "ESC-2026-000004");
    assert_eq!(copy.outbox_raw(1).unwrap(), store.outbox_raw(1).unwrap());
    for id in [4, 5] {
        let raw = copy.outbox_raw(id).unwrap();
        assert_eq!(raw, store.outbox_raw(id).unwrap());
        assert!(raw.ends_with(b"THE ORIGINAL\r\n--b--\r\n"));
    }
    assert_eq!(copy.originals_stored().unwrap(), 1);
    assert_eq!(copy.next_due().unwrap(), store.next_due().unwrap());
    assert_eq!(copy.seen_horizon().unwrap(), Some(ts(500)));
    assert_eq!(copy.rescan("ops").unwrap(), store.rescan("ops").unwrap());
    assert_eq!(
        copy.last_message("ops").unwrap(),
        store.last_message("ops").unwrap()
    );
    // No temporary directory is left beside it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// Every tree of the database is read by an export, and the store lists
/// every tree (for an import and a raw record): a tree added to the store
/// and to neither fails here.
#[test]
fn every_tree_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let mut in_db: Vec<String> = store
        .db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        // sled's own, which the store does not use.
        .filter(|n| n != "__sled__default")
        .collect();
    in_db.sort();
    let mut listed: Vec<String> = store.trees().iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(listed, in_db, "Store::trees lists every tree");
    let mut exported: Vec<String> = trees::EXPORTS
        .iter()
        .flat_map(|(names, _)| names.iter().map(|n| n.to_string()))
        .collect();
    exported.sort();
    exported.dedup();
    assert_eq!(exported, in_db, "every tree is in an export");
    assert!(store.db.is_empty(), "sled's default tree is not used");
    // Each is a tree of a transaction too (an import writes through one).
    store
        .transact(|tx| {
            for name in &in_db {
                assert!(tx.by_name(name).is_some(), "{name}");
            }
            Ok(())
        })
        .unwrap();
}

/// An entry that would not come back the same (a field this version does
/// not know, a key not as the store makes it) is exported raw, and comes
/// back byte for byte.
#[test]
fn an_entry_that_would_not_come_back_the_same_is_exported_raw() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("a"), 1 << 20).unwrap();
    store
        .enqueue(&outgoing("ESC-2026-000001", 1), ts(1))
        .unwrap();
    let item = store.outbox.get(1u64.to_be_bytes()).unwrap().unwrap();
    let mut with_more = serde_json::from_slice::<serde_json::Value>(&item).unwrap();
    with_more["from_a_newer_version"] = serde_json::json!(1);
    store
        .outbox
        .insert(1u64.to_be_bytes(), serde_json::to_vec(&with_more).unwrap())
        .unwrap();
    // A reply count of a sender not lowercased, and a case under a key
    // that is not its id.
    store
        .replies
        .insert(b"A@x\0\0\0\0\0\0\0\0\x01", &1u32.to_be_bytes())
        .unwrap();
    let record = super::super::fixtures::case_record(&store, 1);
    store
        .cases
        .insert("ESC-OTHER", crate::store::encode(&record))
        .unwrap();
    let text = lines(&export(&store, 5));
    let raw: Vec<&String> = text
        .iter()
        .filter(|l| l.starts_with(r#"{"record":"raw""#))
        .collect();
    // The case, the item's three entries (the record, its bytes, its due
    // time), the reply count; nothing else.
    let trees: Vec<String> = raw
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["tree"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        trees,
        ["cases", "outbox", "outbox_raw", "outbox_pending", "replies"],
        "{text:?}"
    );
    let b = dir.path().join("b");
    import(&b, 1 << 20, export(&store, 5).as_slice(), None).unwrap();
    assert_eq!(data(&reopen(&b)), data(&store));
}

#[test]
fn a_cut_altered_or_newer_export_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(&dir.path().join("a"));
    let whole = export(&store, 5_000);
    let text = lines(&whole);
    let join = |ls: &[String]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let without_end = join(&text[..text.len() - 1]);
    let mut cut_in_a_line = without_end.clone().into_bytes();
    cut_in_a_line.truncate(cut_in_a_line.len() - 10);
    let mut one_gone = text.clone();
    one_gone.remove(3);
    let altered = join(&text).replacen("ESC-2026-000001", "ESC-2026-000099", 1);
    let newer = join(&text).replacen(r#""version":1"#, r#""version":2"#, 1);
    let after_end = format!("{}{}\n", join(&text), text[1]);
    for (what, input, want) in [
        ("no end line", without_end.into_bytes(), "truncated"),
        ("cut in a line", cut_in_a_line, "truncated"),
        ("a record gone", join(&one_gone).into_bytes(), "checksum"),
        ("a record altered", altered.into_bytes(), "checksum"),
        (
            "a record after the end",
            after_end.into_bytes(),
            "after the end",
        ),
        ("empty", Vec::new(), "empty"),
        ("not an export", b"{\"a\":1}\n".to_vec(), "not the header"),
        ("a newer version", newer.into_bytes(), "format version 2"),
    ] {
        let target = dir.path().join("b");
        let e = import(&target, 1 << 20, input.as_slice(), None).unwrap_err();
        assert!(e.to_string().contains(want), "{what}: {e}");
        assert!(matches!(e, ImportError::Format(_)), "{what}: {e:?}");
        assert!(!target.exists(), "{what}: the target was made");
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 1, "{what}: something was left beside it");
        // `verify` says the same without a database.
        let v = verify(input.as_slice()).unwrap_err();
        assert_eq!(v.to_string(), e.to_string(), "{what}");
    }
    let newer = verify(
        join(&text)
            .replacen(r#""version":1"#, r#""version":2"#, 1)
            .as_bytes(),
    );
    let Err(FormatError::Newer { version: 2, .. }) = newer else {
        panic!("{newer:?}")
    };
    assert!(
        newer
            .unwrap_err()
            .to_string()
            .ends_with("import it with mailtriage 0.1.0 or newer"),
    );
}

#[test]
fn only_an_empty_database_is_filled() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(&dir.path().join("a"));
    let whole = export(&store, 5_000);

    // A database that holds something: refused, untouched.
    let full = dir.path().join("full");
    let other = Store::open(&full, 1 << 20).unwrap();
    other.reserve_case_id(2026).unwrap();
    let e = import(&full, 1 << 20, whole.as_slice(), None).unwrap_err();
    assert!(matches!(e, ImportError::InUse(_)), "held open: {e:?}");
    drop(other);
    let e = import(&full, 1 << 20, whole.as_slice(), None).unwrap_err();
    assert!(
        e.to_string().contains("is not empty (it holds 1 meta)"),
        "{e}"
    );
    assert_eq!(reopen(&full).holdings().unwrap(), [("meta", 1)]);

    // A directory with other things in it is not a database to replace.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let e = import(&foreign, 1 << 20, whole.as_slice(), None).unwrap_err();
    assert!(matches!(e, ImportError::NotADatabase { .. }), "{e:?}");
    assert!(foreign.join("notes.txt").exists());

    // An empty database, or an empty directory: filled.
    for empty in ["empty-db", "empty-dir"] {
        let path = dir.path().join(empty);
        if empty == "empty-db" {
            drop(Store::open(&path, 1 << 20).unwrap());
        } else {
            std::fs::create_dir(&path).unwrap();
        }
        import(&path, 1 << 20, whole.as_slice(), None).unwrap();
        assert_eq!(data(&reopen(&path)), data(&store), "{empty}");
    }
}

#[test]
fn records_that_the_store_could_not_hold_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("a"), 1 << 20).unwrap();
    let header = lines(&export(&store, 5_000))[0].clone();
    for (record, want) in [
        (
            r#"{"record":"counter","name":"bogus_seq","value":1}"#,
            "line 2: unknown counter \"bogus_seq\"",
        ),
        (
            r#"{"record":"raw","tree":"nowhere","key":"AA==","value":"AA=="}"#,
            "line 2: a raw record of an unknown tree \"nowhere\"",
        ),
        (
            r#"{"record":"reply","sender":"A@example.com","at":1,"count":1}"#,
            "line 2: a reply count that the store could not have kept",
        ),
    ] {
        // A file with a matching header, checksum and counts.
        let kind = serde_json::from_str::<Line>(record).unwrap().kind();
        let head = header.replace(r#""counts":{}"#, &format!(r#""counts":{{"{kind}":1}}"#));
        let body = format!("{head}\n{record}\n");
        let sum = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
        let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let file = format!("{body}{{\"record\":\"end\",\"records\":1,\"sha256\":\"{hex}\"}}\n");
        verify(file.as_bytes()).unwrap();
        let e = import(&dir.path().join("b"), 1 << 20, file.as_bytes(), None).unwrap_err();
        assert_eq!(e.to_string(), want);
        assert!(!dir.path().join("b").exists());
    }
}

/// Writes go on while exports are taken; each export is one point in
/// time: it has exactly as many outbox items as its `outbox_seq` counter
/// says (each item and the counter are written in one transaction, and the
/// counter is exported first, the items last).
#[test]
fn an_export_taken_while_writes_go_on_is_one_point_in_time() {
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Stops the writer when dropped, also when an assertion fails, so
    /// that a failure ends the test instead of leaving the writer running.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                store
                    .enqueue(&outgoing("ESC-2026-000001", 1), ts(n))
                    .unwrap();
                n += 1;
            }
            n
        });
        let stop = Stop(&done);
        // At least 20 exports, and until writes were seen between them
        // and the outbox is long enough for an export to take a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut seen: Vec<usize> = Vec::new();
        while seen.len() < 20 || distinct(&seen) < 3 || seen.last() < Some(&200) {
            assert!(
                std::time::Instant::now() < deadline,
                "no writes seen between exports: {seen:?}"
            );
            let text = lines(&export(&store, 1));
            let items = text
                .iter()
                .filter(|l| l.contains(r#""record":"outbox""#))
                .count();
            let counter = text
                .iter()
                .find_map(|l| l.strip_prefix(r#"{"record":"counter","name":"outbox_seq","value":"#))
                .map_or(0, |v| v.trim_end_matches('}').parse::<usize>().unwrap());
            assert_eq!(items, counter, "a torn export");
            seen.push(items);
        }
        drop(stop);
        let written = writer.join().unwrap();
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert!(
            seen.last().is_some_and(|&n| n <= written as usize),
            "{seen:?}"
        );
    });
}

/// How many different values `v` holds (it is in order).
fn distinct(v: &[usize]) -> usize {
    let mut v = v.to_vec();
    v.dedup();
    v.len()
}
