//! Each tree's records: an `export_*` function writes a tree's entries as
//! records, and [`puts`] turns a record back into the very entries (keys
//! and values) it came from. A new tree is a new export in [`EXPORTS`],
//! with the trees it reads, and new records in [`puts`]; the module's
//! tests fail while a tree of the database is in no export.
//!
//! Every record is checked as it is written: the entries [`puts`] makes of
//! it must be, byte for byte, those it was read from. An entry that does
//! not read as what its tree holds (a corrupt one), or would not come back
//! the same (a field this version does not know), is written as a `raw`
//! record instead, byte for byte: an export never fails on one bad entry,
//! never drops one and never changes one.
//!
//! One entry is left out on purpose: `meta`'s mark that the undeliverable
//! index was built from the items (`outbox_undeliverable_indexed`). It
//! says something of the database it is in, not of the data: the import
//! writes the index whole and sets it itself (see `super::fill`).

use jiff::Timestamp;
use sled::IVec;

use super::format::{Bytes, Line, OriginalAt};
use super::{ExportError, Put, Spool};
use crate::outbox::OutboxItem;
use crate::record::CaseRecord;
use crate::store::commit::last_message_key;
use crate::store::expiry::{self, RESOLVED, SEEN, SEEN_HORIZON, SENT, SeenEntry, rescan_key};
use crate::store::indexes::{
    digest_key, index_key, reply_key, stored_key, vendor_index_key, vendor_report_key,
};
use crate::store::originals::{self, BODY, COUNT, OriginalRef, REF};
use crate::store::outbox::{OUTBOX_SEQ, UNDELIVERABLE_INDEXED, undeliverable_key};
use crate::store::retention::INDEXED;
use crate::store::{CASE_SEQ, Store, encode};

type ExportFn = fn(&Store, &mut Spool) -> Result<(), ExportError>;

/// Every export, in the order of the file, with the trees it reads: the
/// counters and marks first, then what the mailboxes stand at, the cases
/// and their indexes, what was seen, what retention will act on, the
/// originals, the outbox, the reply counts.
pub(super) const EXPORTS: &[(&[&str], ExportFn)] = &[
    (&["meta"], export_meta),
    (&["cursors"], export_cursors),
    (&["pending"], export_pending),
    (&["cases"], export_cases),
    (&["index"], export_index),
    (&["seen"], export_seen),
    (&["expiry"], export_expiry),
    // The bodies and their counts; the items' references go with the
    // items.
    (&["originals"], export_originals),
    (
        &["outbox", "outbox_raw", "outbox_pending", "originals"],
        export_outbox,
    ),
    (&["replies"], export_replies),
];

/// The entries `line` came from. `Err` says why it cannot be stored. A
/// `raw` record's tree is checked by the caller.
pub(super) fn puts(line: &Line) -> Result<Vec<Put>, String> {
    Ok(match line {
        Line::Counter { name, value } => {
            let name = [CASE_SEQ, OUTBOX_SEQ]
                .into_iter()
                .find(|c| c == name)
                .ok_or_else(|| format!("unknown counter {name:?}"))?;
            vec![put("meta", name, value.to_be_bytes())]
        }
        Line::VendorReported { vendor, at } => vec![put(
            "meta",
            vendor_report_key(vendor),
            at.as_second().to_be_bytes(),
        )],
        Line::DigestSent { digest, period } => vec![put(
            "meta",
            digest_key(digest),
            period.as_second().to_be_bytes(),
        )],
        Line::LastMessage { mailbox, last } => {
            vec![put("meta", last_message_key(mailbox), encode(last))]
        }
        Line::SeenHorizon { at } => vec![put("meta", SEEN_HORIZON, at.as_second().to_be_bytes())],
        Line::Rescan { mailbox, rescan } => vec![put("meta", rescan_key(mailbox), encode(rescan))],
        Line::Flag { name } => {
            if name != INDEXED {
                return Err(format!("unknown flag {name:?}"));
            }
            vec![put("meta", INDEXED, [1u8])]
        }
        Line::Cursor { mailbox, cursor } => vec![put("cursors", mailbox.as_str(), encode(cursor))],
        Line::Pending { mailbox, pending } => {
            vec![put("pending", mailbox.as_str(), encode(pending))]
        }
        Line::Case { case } => vec![put("cases", case.id.as_bytes(), encode(case))],
        Line::Thread {
            message_id,
            case_id,
        } => vec![put("index", index_key(b't', message_id), case_id.as_str())],
        // As keyed (already trimmed and lowercased), not keyed again.
        Line::Order { order, case_id } => {
            vec![put("index", index_key(b'o', order), case_id.as_str())]
        }
        Line::Open { case_id } => vec![put("index", index_key(b's', case_id), b"")],
        Line::Alias { name, vendor } => vec![put(
            "index",
            index_key(b'a', name.as_str()),
            vendor.as_str(),
        )],
        Line::Complaint {
            vendor,
            at,
            case_id,
        } => {
            if at.as_second() < 0 {
                return Err("a complaint before 1970".into());
            }
            vec![put(
                "index",
                vendor_index_key(vendor, at.as_second(), case_id),
                b"",
            )]
        }
        Line::Undeliverable { id } => vec![put("index", undeliverable_key(*id), b"")],
        Line::Seen {
            message_id,
            sha256,
            seen,
            at,
        } => {
            let entry = SeenEntry {
                seen: seen.clone(),
                at: *at,
            };
            vec![put("seen", message_key(message_id, sha256), encode(&entry))]
        }
        Line::ExpirySent { id, at } => vec![expiry_put(SENT, *at, &id.to_be_bytes())?],
        Line::ExpirySeen {
            message_id,
            sha256,
            at,
        } => vec![expiry_put(
            SEEN,
            *at,
            message_key(message_id, sha256).as_bytes(),
        )?],
        Line::ExpiryResolved { case_id, at } => {
            vec![expiry_put(RESOLVED, *at, case_id.as_bytes())?]
        }
        Line::Original { sha256, refs, body } => {
            let d = digest(sha256)?;
            vec![
                put("originals", originals::body_key(&d), body.0.as_slice()),
                put("originals", originals::count_key(&d), refs.to_be_bytes()),
            ]
        }
        Line::Outbox {
            item,
            due,
            raw,
            original,
        } => {
            let key = item.id.to_be_bytes();
            let mut puts = vec![put("outbox", key, encode(item))];
            if let Some(raw) = raw {
                puts.push(put("outbox_raw", key, raw.0.as_slice()));
            }
            if let Some(due) = due {
                puts.push(put("outbox_pending", key, due.as_second().to_be_bytes()));
            }
            if let Some(o) = original {
                digest(&o.sha256)?;
                let r = OriginalRef {
                    sha256: o.sha256.clone(),
                    at: o.at,
                };
                puts.push(put("originals", originals::ref_key(item.id), encode(&r)));
            }
            puts
        }
        Line::Reply { sender, at, count } => {
            if *sender != sender.to_ascii_lowercase() || at.as_second() < 0 {
                return Err("a reply count that the store could not have kept".into());
            }
            vec![put(
                "replies",
                reply_key(sender, at.as_second()),
                count.to_be_bytes(),
            )]
        }
        Line::Raw { tree, key, value } => {
            return Err(format!(
                "a raw record of {tree:?} ({} bytes of key, {} of value) is stored as it is",
                key.0.len(),
                value.0.len()
            ));
        }
        Line::Header(_) | Line::End(_) => {
            return Err(format!("a {} line is not a record", line.kind()));
        }
    })
}

fn put(tree: &'static str, key: impl Into<Vec<u8>>, value: impl AsRef<[u8]>) -> Put {
    Put {
        tree,
        key: key.into(),
        value: value.as_ref().to_vec(),
    }
}

/// A `seen` key (see `MessageKey`): the Message-ID as keyed, a NUL, the
/// SHA-256 of the message.
fn message_key(message_id: &str, sha256: &str) -> String {
    format!("{message_id}\0{sha256}")
}

fn expiry_put(kind: u8, at: Timestamp, rest: &[u8]) -> Result<Put, String> {
    if at.as_second() < 0 {
        return Err("an expiry before 1970".into());
    }
    Ok(put("expiry", expiry::key(kind, at, rest), b""))
}

fn digest(sha256: &str) -> Result<originals::Digest, String> {
    originals::unhex(sha256).ok_or_else(|| format!("{sha256:?} is not a SHA-256 in hex"))
}

/// A time kept as big-endian unix seconds.
fn time(v: &[u8]) -> Option<Timestamp> {
    let secs = i64::from_be_bytes(v.try_into().ok()?);
    Timestamp::from_second(secs).ok()
}

fn text(v: &[u8]) -> Option<String> {
    String::from_utf8(v.to_vec()).ok()
}

/// One entry as read: its tree, key and value.
type Entry<'a> = (&'static str, &'a [u8], &'a [u8]);

/// Writes `line` if it makes exactly the entries `from`, else each of
/// them as a raw record.
fn exact(out: &mut Spool, line: Option<Line>, from: &[Entry]) -> Result<(), ExportError> {
    if let Some(line) = line
        && puts(&line).is_ok_and(|p| same(&p, from))
    {
        return out.emit(&line);
    }
    for (tree, k, v) in from {
        out.raw(tree, k, v)?;
    }
    Ok(())
}

/// Whether `puts` are the entries `from` (whose keys differ), in any
/// order.
fn same(puts: &[Put], from: &[Entry]) -> bool {
    puts.len() == from.len()
        && from.iter().all(|(tree, k, v)| {
            puts.iter()
                .any(|p| p.tree == *tree && p.key == *k && p.value == *v)
        })
}

/// Each entry of `entries` (of `tree`) as `read` makes it a record.
fn each(
    out: &mut Spool,
    tree: &'static str,
    entries: impl Iterator<Item = sled::Result<(IVec, IVec)>>,
    read: impl Fn(&[u8], &[u8]) -> Option<Line>,
) -> Result<(), ExportError> {
    for r in entries {
        let (k, v) = r?;
        exact(out, read(&k, &v), &[(tree, &k, &v)])?;
    }
    Ok(())
}

// meta: counters, vendors last reported, digests last sent, each
// mailbox's last message and rescan, the seen horizon, steps done once.

fn export_meta(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    let vendor_reported = vendor_report_key(&stored_key(b""));
    let digest_sent = digest_key("");
    let last_message = last_message_key("");
    let rescan = rescan_key("");
    let entries = store
        .meta
        .iter()
        .filter(|r| !matches!(r, Ok((k, _)) if k == UNDELIVERABLE_INDEXED.as_bytes()));
    each(out, "meta", entries, |k, v| {
        if k == CASE_SEQ.as_bytes() || k == OUTBOX_SEQ.as_bytes() {
            return Some(Line::Counter {
                name: text(k)?,
                value: u64::from_be_bytes(v.try_into().ok()?),
            });
        }
        if k == SEEN_HORIZON.as_bytes() {
            return Some(Line::SeenHorizon { at: time(v)? });
        }
        if k == INDEXED.as_bytes() {
            return Some(Line::Flag { name: text(k)? });
        }
        if let Some(vendor) = k.strip_prefix(vendor_reported.as_slice()) {
            return Some(Line::VendorReported {
                vendor: stored_key(&text(vendor)?.into_bytes()),
                at: time(v)?,
            });
        }
        if let Some(digest) = k.strip_prefix(digest_sent.as_slice()) {
            return Some(Line::DigestSent {
                digest: text(digest)?,
                period: time(v)?,
            });
        }
        if let Some(mailbox) = k.strip_prefix(last_message.as_slice()) {
            return Some(Line::LastMessage {
                mailbox: text(mailbox)?,
                last: serde_json::from_slice(v).ok()?,
            });
        }
        let mailbox = k.strip_prefix(rescan.as_slice())?;
        Some(Line::Rescan {
            mailbox: text(mailbox)?,
            rescan: serde_json::from_slice(v).ok()?,
        })
    })
}

// cursors and pending: by mailbox name.

fn export_cursors(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "cursors", store.cursors.iter(), |k, v| {
        Some(Line::Cursor {
            mailbox: text(k)?,
            cursor: serde_json::from_slice(v).ok()?,
        })
    })
}

fn export_pending(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "pending", store.pending.iter(), |k, v| {
        Some(Line::Pending {
            mailbox: text(k)?,
            pending: serde_json::from_slice(v).ok()?,
        })
    })
}

// cases: by id.

fn export_cases(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "cases", store.cases.iter(), |_, v| {
        let case: CaseRecord = serde_json::from_slice(v).ok()?;
        Some(Line::Case {
            case: Box::new(case),
        })
    })
}

// index: by kind, a NUL, the rest (see `indexes`).

fn export_index(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "index", store.index.iter(), |k, v| {
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
            b's' => Some(Line::Open {
                case_id: text(rest)?,
            }),
            b'a' => Some(Line::Alias {
                name: stored_key(&text(rest)?.into_bytes()),
                vendor: stored_key(&text(v)?.into_bytes()),
            }),
            b'v' => {
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
            b'u' => Some(Line::Undeliverable {
                id: u64::from_be_bytes(rest.try_into().ok()?),
            }),
            _ => None,
        }
    })
}

// seen: by Message-ID, a NUL, and the SHA-256 of the message (see
// `MessageKey`).

fn export_seen(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "seen", store.seen.iter(), |k, v| {
        let nul = k.iter().rposition(|b| *b == 0)?;
        let entry: SeenEntry = serde_json::from_slice(v).ok()?;
        Some(Line::Seen {
            message_id: text(&k[..nul])?,
            sha256: text(&k[nul + 1..])?,
            seen: entry.seen,
            at: entry.at,
        })
    })
}

// expiry: a kind, the time (8 bytes), what it names (see `expiry`).

fn export_expiry(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "expiry", store.expiry.iter(), |k, v| {
        if !v.is_empty() {
            return None;
        }
        let (at, rest) = expiry::split(k)?;
        match *k.first()? {
            SENT => Some(Line::ExpirySent {
                id: u64::from_be_bytes(rest.try_into().ok()?),
                at,
            }),
            SEEN => {
                let nul = rest.iter().rposition(|b| *b == 0)?;
                Some(Line::ExpirySeen {
                    message_id: text(&rest[..nul])?,
                    sha256: text(&rest[nul + 1..])?,
                    at,
                })
            }
            RESOLVED => Some(Line::ExpiryResolved {
                case_id: text(rest)?,
                at,
            }),
            _ => None,
        }
    })
}

// originals: bodies and counts by digest; the items' references are read
// with the outbox.

fn export_originals(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    let tree = &store.originals;
    let mut bodies = Side::new(tree.scan_prefix([BODY]), 1)?;
    let mut counts = Side::new(tree.scan_prefix([COUNT]), 1)?;
    while let Some(d) = [bodies.key(), counts.key()]
        .into_iter()
        .flatten()
        .min()
        .map(<[u8]>::to_vec)
    {
        let body = bodies.take(&d)?;
        let count = counts.take(&d)?;
        let line = (|| {
            let (_, b) = body.as_ref()?;
            let (_, c) = count.as_ref()?;
            let d: originals::Digest = d.as_slice().try_into().ok()?;
            Some(Line::Original {
                sha256: originals::hex(&d),
                refs: u64::from_be_bytes(c.as_ref().try_into().ok()?),
                body: Bytes(b.to_vec()),
            })
        })();
        let from: Vec<Entry> = [&body, &count]
            .into_iter()
            .flatten()
            .map(|(k, v)| ("originals", k.as_ref(), v.as_ref()))
            .collect();
        exact(out, line, &from)?;
    }
    // Keys of no kind (corrupt), raw: those before `b`, between `c` and
    // `i`, after `i`.
    let others = tree
        .range(..[BODY].as_slice())
        .chain(tree.range([COUNT + 1].as_slice()..[REF].as_slice()))
        .chain(tree.range([REF + 1].as_slice()..));
    for r in others {
        let (k, v) = r?;
        out.raw("originals", &k, &v)?;
    }
    Ok(())
}

// outbox, outbox_raw, outbox_pending, and the items' references in
// originals: by id (8 bytes), one record per item.

fn export_outbox(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    // The trees share their keys: read side by side, in key order, so
    // that each is read once.
    let mut items = Side::new(store.outbox.iter(), 0)?;
    let mut raws = Side::new(store.outbox_raw.iter(), 0)?;
    let mut dues = Side::new(store.outbox_pending.iter(), 0)?;
    let mut refs = Side::new(store.originals.scan_prefix([REF]), 1)?;
    loop {
        let heads = [items.key(), raws.key(), dues.key(), refs.key()];
        let Some(key) = heads.into_iter().flatten().min().map(<[u8]>::to_vec) else {
            return Ok(());
        };
        let item = items.take(&key)?;
        let raw = raws.take(&key)?;
        let due = dues.take(&key)?;
        let original = refs.take(&key)?;
        let line = item.as_ref().and_then(|(_, item)| {
            let item: OutboxItem = serde_json::from_slice(item).ok()?;
            let due = match &due {
                Some((_, d)) => Some(time(d)?),
                None => None,
            };
            let original = match &original {
                Some((_, r)) => {
                    let r: OriginalRef = serde_json::from_slice(r).ok()?;
                    Some(OriginalAt {
                        sha256: r.sha256,
                        at: r.at,
                    })
                }
                None => None,
            };
            Some(Line::Outbox {
                item: Box::new(item),
                due,
                raw: raw.as_ref().map(|(_, r)| Bytes(r.to_vec())),
                original,
            })
        });
        let from: Vec<Entry> = [
            ("outbox", &item),
            ("outbox_raw", &raw),
            ("outbox_pending", &due),
            ("originals", &original),
        ]
        .into_iter()
        .filter_map(|(tree, e)| e.as_ref().map(|(k, v)| (tree, k.as_ref(), v.as_ref())))
        .collect();
        exact(out, line, &from)?;
    }
}

/// Entries of one tree (or one kind of key), read in key order, with
/// their first `skip` bytes (the kind) left out of the key they are
/// matched by.
struct Side {
    iter: sled::Iter,
    head: Option<(IVec, IVec)>,
    skip: usize,
}

impl Side {
    fn new(mut iter: sled::Iter, skip: usize) -> Result<Side, ExportError> {
        let head = iter.next().transpose()?;
        Ok(Side { iter, head, skip })
    }

    fn key(&self) -> Option<&[u8]> {
        self.head
            .as_ref()
            .map(|(k, _)| k.get(self.skip..).unwrap_or(&[]))
    }

    /// The entry at `key`, if the head is there; moves past it.
    fn take(&mut self, key: &[u8]) -> Result<Option<(IVec, IVec)>, ExportError> {
        if self.key() != Some(key) {
            return Ok(None);
        }
        let next = self.iter.next().transpose()?;
        Ok(std::mem::replace(&mut self.head, next))
    }
}

// replies: the sender (lowercase), a NUL, the second (8 bytes); the count.

fn export_replies(store: &Store, out: &mut Spool) -> Result<(), ExportError> {
    each(out, "replies", store.replies.iter(), |k, v| {
        let split = k.len().checked_sub(9)?;
        if k[split] != 0 {
            return None;
        }
        let at = u64::from_be_bytes(k[split + 1..].try_into().ok()?);
        Some(Line::Reply {
            sender: text(&k[..split])?,
            at: Timestamp::from_second(i64::try_from(at).ok()?).ok()?,
            count: u32::from_be_bytes(v.try_into().ok()?),
        })
    })
}
