//! One pair of functions per tree: `export_*` writes the tree's entries as
//! records, `import_*` turns a record back into the very entries (keys and
//! values) it came from. A new tree is a new pair, listed in [`EXPORTS`]
//! and in [`import`].
//!
//! An entry that does not read as what its tree holds (a corrupt one) is
//! written as a `raw` record, byte for byte: an export never fails on one
//! bad entry, and never drops one.

use jiff::Timestamp;
use sled::IVec;

use super::format::{Bytes, Line};
use super::{ExportError, Put, Spool};
use crate::batch::{Cursor, Pending, Seen};
use crate::outbox::OutboxItem;
use crate::record::CaseRecord;
use crate::store::indexes::{
    index_key, reply_key, stored_key, vendor_index_key, vendor_report_key,
};
use crate::store::outbox::OUTBOX_SEQ;
use crate::store::{CASE_SEQ, Store, StoreError, encode};

type ExportFn = fn(&Store, &mut Spool) -> Result<(), ExportError>;

/// Every tree's export, in the order of the file: the counters and
/// marks first, then what the mailboxes stand at, the cases and their
/// indexes, what was seen, the outbox, the reply counts.
pub(super) const EXPORTS: &[ExportFn] = &[
    export_meta,
    export_cursors,
    export_pending,
    export_cases,
    export_index,
    export_seen,
    export_outbox,
    export_replies,
];

/// The entries `line` came from. `Err` says why it cannot be stored.
pub(super) fn import(store: &Store, line: Line) -> Result<Vec<Put>, String> {
    match line {
        Line::Counter { .. } | Line::VendorReported { .. } | Line::DigestSent { .. } => {
            import_meta(line)
        }
        Line::Cursor { mailbox, cursor } => Ok(import_cursor(&mailbox, &cursor)),
        Line::Pending { mailbox, pending } => Ok(import_pending(&mailbox, &pending)),
        Line::Case { case } => Ok(import_case(&case)),
        Line::Thread { .. }
        | Line::Order { .. }
        | Line::Open { .. }
        | Line::Complaint { .. }
        | Line::Alias { .. } => import_index(line),
        Line::Seen {
            message_id,
            sha256,
            seen,
        } => Ok(import_seen(&message_id, &sha256, &seen)),
        Line::Outbox { item, due, raw } => Ok(import_outbox(&item, due, raw)),
        Line::Reply { sender, at, count } => import_reply(&sender, at, count),
        Line::Raw { tree, key, value } => import_raw(store, &tree, key, value),
        Line::Header(_) | Line::End(_) => Err(format!("a {} line is not a record", line.kind())),
    }
}

/// A time kept as big-endian unix seconds.
fn time(v: &[u8]) -> Option<Timestamp> {
    let secs = i64::from_be_bytes(v.try_into().ok()?);
    Timestamp::from_second(secs).ok()
}

fn text(v: &[u8]) -> Option<String> {
    String::from_utf8(v.to_vec()).ok()
}

fn put(tree: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Put {
    Put {
        tree,
        key: key.into(),
        value: value.into(),
    }
}

/// Each entry of `tree` as `read` makes it a record, else raw.
fn each(
    out: &mut Spool,
    name: &'static str,
    tree: &sled::Tree,
    read: impl Fn(&[u8], &[u8]) -> Option<Line>,
) -> Result<(), ExportError> {
    for r in tree.iter() {
        let (k, v) = r?;
        match read(&k, &v) {
            Some(line) => out.emit(&line)?,
            None => out.raw(name, &k, &v)?,
        }
    }
    Ok(())
}

// meta: counters, vendors last reported, digests last sent.

const VENDOR_REPORTED: &[u8] = b"vendor_reported\0";
const DIGEST_SENT: &[u8] = b"digest_sent\0";

fn export_meta(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "meta", &store.meta, |k, v| {
        if k == CASE_SEQ.as_bytes() || k == OUTBOX_SEQ.as_bytes() {
            return Some(Line::Counter {
                name: text(k)?,
                value: u64::from_be_bytes(v.try_into().ok()?),
            });
        }
        if let Some(vendor) = k.strip_prefix(VENDOR_REPORTED) {
            return Some(Line::VendorReported {
                vendor: stored_key(&text(vendor)?.into_bytes()),
                at: time(v)?,
            });
        }
        let digest = k.strip_prefix(DIGEST_SENT)?;
        Some(Line::DigestSent {
            digest: text(digest)?,
            period: time(v)?,
        })
    })
}

fn import_meta(line: Line) -> Result<Vec<Put>, String> {
    Ok(vec![match line {
        Line::Counter { name, value } => {
            let name = [CASE_SEQ, OUTBOX_SEQ]
                .into_iter()
                .find(|c| *c == name)
                .ok_or_else(|| format!("unknown counter {name:?}"))?;
            put("meta", name, value.to_be_bytes())
        }
        Line::VendorReported { vendor, at } => put(
            "meta",
            vendor_report_key(&vendor),
            at.as_second().to_be_bytes(),
        ),
        Line::DigestSent { digest, period } => put(
            "meta",
            crate::store::indexes::digest_key(&digest),
            period.as_second().to_be_bytes(),
        ),
        other => return Err(format!("a {} record is not kept in meta", other.kind())),
    }])
}

// cursors and pending: by mailbox name.

fn export_cursors(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "cursors", &store.cursors, |k, v| {
        Some(Line::Cursor {
            mailbox: text(k)?,
            cursor: serde_json::from_slice(v).ok()?,
        })
    })
}

fn import_cursor(mailbox: &str, cursor: &Cursor) -> Vec<Put> {
    vec![put("cursors", mailbox, encode(cursor))]
}

fn export_pending(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "pending", &store.pending, |k, v| {
        Some(Line::Pending {
            mailbox: text(k)?,
            pending: serde_json::from_slice(v).ok()?,
        })
    })
}

fn import_pending(mailbox: &str, pending: &Pending) -> Vec<Put> {
    vec![put("pending", mailbox, encode(pending))]
}

// cases: by id.

fn export_cases(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "cases", &store.cases, |k, v| {
        let case: CaseRecord = serde_json::from_slice(v).ok()?;
        (case.id.as_bytes() == k).then(|| Line::Case {
            case: Box::new(case),
        })
    })
}

fn import_case(case: &CaseRecord) -> Vec<Put> {
    vec![put("cases", case.id.as_bytes(), encode(case))]
}

// index: by kind, a NUL, the rest (see `indexes`).

fn export_index(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "index", &store.index, |k, v| {
        let (&kind, rest) = k.split_first()?;
        let rest = rest.strip_prefix(b"\0")?;
        match kind {
            b't' => Some(Line::Thread {
                message_id: text(rest)?,
                case_id: text(v)?,
            }),
            b'o' => Some(Line::Order {
                order: text(rest)?,
                case_id: text(v)?,
            }),
            b's' if v.is_empty() => Some(Line::Open {
                case_id: text(rest)?,
            }),
            b'a' => Some(Line::Alias {
                name: stored_key(&text(rest)?.into_bytes()),
                vendor: stored_key(&text(v)?.into_bytes()),
            }),
            b'v' if v.is_empty() => {
                // The vendor, a NUL, when (8 bytes), the case id.
                let nul = rest.iter().position(|b| *b == 0)?;
                let (vendor, tail) = (&rest[..nul], &rest[nul + 1..]);
                let at = u64::from_be_bytes(tail.get(..8)?.try_into().ok()?);
                Some(Line::Complaint {
                    vendor: stored_key(&text(vendor)?.into_bytes()),
                    at: Timestamp::from_second(i64::try_from(at).ok()?).ok()?,
                    case_id: text(tail.get(8..)?)?,
                })
            }
            _ => None,
        }
    })
}

fn import_index(line: Line) -> Result<Vec<Put>, String> {
    let (key, value) = match line {
        Line::Thread {
            message_id,
            case_id,
        } => (index_key(b't', &message_id), case_id.into_bytes()),
        // As keyed (already trimmed and lowercased), not keyed again.
        Line::Order { order, case_id } => (index_key(b'o', &order), case_id.into_bytes()),
        Line::Open { case_id } => (index_key(b's', &case_id), Vec::new()),
        Line::Alias { name, vendor } => (
            index_key(b'a', name.as_str()),
            vendor.as_str().as_bytes().to_vec(),
        ),
        Line::Complaint {
            vendor,
            at,
            case_id,
        } => {
            if at.as_second() < 0 {
                return Err("a complaint before 1970".into());
            }
            (
                vendor_index_key(&vendor, at.as_second(), &case_id),
                Vec::new(),
            )
        }
        other => return Err(format!("a {} record is not kept in index", other.kind())),
    };
    Ok(vec![put("index", key, value)])
}

// seen: by Message-ID, a NUL, and the SHA-256 of the message (see
// `MessageKey`).

fn export_seen(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "seen", &store.seen, |k, v| {
        let nul = k.iter().rposition(|b| *b == 0)?;
        Some(Line::Seen {
            message_id: text(&k[..nul])?,
            sha256: text(&k[nul + 1..])?,
            seen: serde_json::from_slice::<Seen>(v).ok()?,
        })
    })
}

fn import_seen(message_id: &str, sha256: &str, seen: &Seen) -> Vec<Put> {
    let key = format!("{message_id}\0{sha256}");
    vec![put("seen", key, encode(seen))]
}

// outbox, outbox_raw, outbox_pending: by id (8 bytes), one record per
// item.

fn export_outbox(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    // The three trees share their keys: read side by side, in key order,
    // so that each is read once.
    let mut items = Side::new(&store.outbox)?;
    let mut raws = Side::new(&store.outbox_raw)?;
    let mut dues = Side::new(&store.outbox_pending)?;
    loop {
        let heads = [items.key(), raws.key(), dues.key()];
        let Some(key) = heads.into_iter().flatten().min().cloned() else {
            return Ok(());
        };
        let item = items.take(&key)?;
        let raw = raws.take(&key)?;
        let due = dues.take(&key)?;
        let record = item.as_ref().and_then(|item| {
            let item: OutboxItem = serde_json::from_slice(item).ok()?;
            if item.id.to_be_bytes() != *key {
                return None;
            }
            let due = match &due {
                Some(d) => Some(time(d)?),
                None => None,
            };
            Some(Line::Outbox {
                item: Box::new(item),
                due,
                raw: raw.as_ref().map(|r| Bytes(r.to_vec())),
            })
        });
        match record {
            Some(line) => out.emit(&line)?,
            None => {
                for (tree, v) in [
                    ("outbox", item),
                    ("outbox_raw", raw),
                    ("outbox_pending", due),
                ] {
                    if let Some(v) = v {
                        out.raw(tree, &key, &v)?;
                    }
                }
            }
        }
    }
}

/// One of the outbox's trees, read in key order.
struct Side {
    iter: sled::Iter,
    head: Option<(IVec, IVec)>,
}

impl Side {
    fn new(tree: &sled::Tree) -> Result<Side, StoreError> {
        let mut iter = tree.iter();
        let head = iter.next().transpose()?;
        Ok(Side { iter, head })
    }

    fn key(&self) -> Option<&IVec> {
        self.head.as_ref().map(|(k, _)| k)
    }

    /// The value at `key`, if the head is there; moves past it.
    fn take(&mut self, key: &IVec) -> Result<Option<IVec>, StoreError> {
        if self.key() != Some(key) {
            return Ok(None);
        }
        let next = self.iter.next().transpose()?;
        Ok(std::mem::replace(&mut self.head, next).map(|(_, v)| v))
    }
}

fn import_outbox(item: &OutboxItem, due: Option<Timestamp>, raw: Option<Bytes>) -> Vec<Put> {
    let key = item.id.to_be_bytes();
    let mut puts = vec![put("outbox", key, encode(item))];
    if let Some(raw) = raw {
        puts.push(put("outbox_raw", key, raw.0));
    }
    if let Some(due) = due {
        puts.push(put("outbox_pending", key, due.as_second().to_be_bytes()));
    }
    puts
}

// replies: the sender (lowercase), a NUL, the second (8 bytes); the count.

fn export_replies(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "replies", &store.replies, |k, v| {
        let split = k.len().checked_sub(9)?;
        if k[split] != 0 {
            return None;
        }
        let sender = text(&k[..split])?;
        // Keyed lowercase: anything else would not be keyed the same again.
        if sender != sender.to_ascii_lowercase() {
            return None;
        }
        let at = u64::from_be_bytes(k[split + 1..].try_into().ok()?);
        Some(Line::Reply {
            sender,
            at: Timestamp::from_second(i64::try_from(at).ok()?).ok()?,
            count: u32::from_be_bytes(v.try_into().ok()?),
        })
    })
}

fn import_reply(sender: &str, at: Timestamp, count: u32) -> Result<Vec<Put>, String> {
    if sender != sender.to_ascii_lowercase() || at.as_second() < 0 {
        return Err("a reply count that the store could not have kept".into());
    }
    Ok(vec![put(
        "replies",
        reply_key(sender, at.as_second()),
        count.to_be_bytes(),
    )])
}

// raw: any tree.

fn import_raw(store: &Store, tree: &str, key: Bytes, value: Bytes) -> Result<Vec<Put>, String> {
    let (tree, _) = store
        .trees()
        .into_iter()
        .find(|(name, _)| *name == tree)
        .ok_or_else(|| format!("a raw record of an unknown tree {tree:?}"))?;
    Ok(vec![put(tree, key.0, value.0)])
}
