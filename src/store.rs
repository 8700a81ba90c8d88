//! The durable store: the only module that touches sled.
//!
//! What it keeps, one sled tree each:
//!
//! - `cases`: case id (`ESC-2026-000123`) to [`CaseRecord`];
//! - `seen`: every message ever processed, by [`MessageKey`] (Message-ID plus
//!   a SHA-256 of the raw bytes), to what became of it, so that a message
//!   fetched again (after a crash, or when UIDVALIDITY changes) is recognised
//!   and not processed twice;
//! - `cursors`: per mailbox, the UIDVALIDITY and the highest UID processed;
//! - `outbox` and `outbox_raw`: every message to send, with its delivery
//!   state, and its bytes (fixed when queued, so a resend after a crash is
//!   the same message with the same Message-ID);
//! - `replies`: how many automatic replies each sender got in each second
//!   (the rate limit), keyed by sender and time so that counting the last
//!   hour is a range scan and a busy sender costs no more than a quiet one;
//! - `index`: lookups kept in step with the cases, by prefix: `t` a
//!   Message-ID of the thread (the agent's, ours, each update's) to its case,
//!   `o` an order id to its latest case, `s` the open cases, `v` a vendor's
//!   complaints by time (by [`VendorKey`]), `a` a vendor name to the id it
//!   was first given with;
//! - `meta`: counters, when each vendor was last reported, when each digest
//!   was last sent.
//!
//! The daemon's rule "nothing lost, nothing twice" rests on [`Store::commit`]:
//! the cases of a batch of messages, their `seen` entries, the mailbox cursor
//! and every outgoing message are written in one sled transaction and flushed
//! to disk before it returns. Only then may the messages be marked or moved on
//! the server. A crash before the flush loses nothing (the messages are still
//! unmarked and are fetched again); a crash after it creates nothing twice
//! (the messages are in `seen`).
//!
//! Everything is stored as JSON, so that a record can be read by a person
//! with sled's tools and survives added fields. Time is passed in (unix
//! seconds), never read here, so that tests control it.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::batch::{Batch, BatchOutcome, Cursor, MessageKey, Pending, Seen};
use crate::outbox::{Delivery, NewOutgoing, OutboxItem};
use crate::record::{CaseRecord, thread_key};
use crate::vendor::{CaseVendor, VendorKey};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("corrupt record in {tree}: {error}")]
    Corrupt { tree: &'static str, error: String },
    #[error("no outbox item {0}")]
    NoSuchItem(u64),
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Db(e),
        }
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// What [`Store::commit`] did with each item, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    Stored,
    /// The message was already in `seen` (from an earlier run, or twice in
    /// this batch): nothing was written for it.
    AlreadySeen(Seen),
}

/// The store. Cheap to clone; all clones share the database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    cases: sled::Tree,
    seen: sled::Tree,
    cursors: sled::Tree,
    outbox: sled::Tree,
    outbox_raw: sled::Tree,
    /// Pending outbox items only: id to next attempt (i64, big-endian), so
    /// that finding what is due never walks the delivered history.
    outbox_pending: sled::Tree,
    replies: sled::Tree,
    pending: sled::Tree,
    meta: sled::Tree,
    index: sled::Tree,
}

/// The trees inside one transaction of [`Store::transact`].
struct Tx<'a> {
    cases: &'a TransactionalTree,
    seen: &'a TransactionalTree,
    cursors: &'a TransactionalTree,
    outbox: &'a TransactionalTree,
    outbox_raw: &'a TransactionalTree,
    outbox_pending: &'a TransactionalTree,
    replies: &'a TransactionalTree,
    pending: &'a TransactionalTree,
    meta: &'a TransactionalTree,
    index: &'a TransactionalTree,
}

const CASE_SEQ: &[u8] = b"case_seq";
const OUTBOX_SEQ: &[u8] = b"outbox_seq";

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs to JSON cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        error: e.to_string(),
    })
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn next_seq(meta: &TransactionalTree, key: &[u8]) -> TxResult<u64> {
    let current = match meta.get(key)? {
        Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            abort(StoreError::Corrupt {
                tree: "meta",
                error: "counter is not 8 bytes".into(),
            })
        })?),
        None => 0,
    };
    let next = current + 1;
    meta.insert(key, &next.to_be_bytes())?;
    Ok(next)
}

impl Store {
    /// Opens (or creates) the database at `path`, with a page cache of
    /// `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        Ok(Store {
            cases: db.open_tree("cases")?,
            seen: db.open_tree("seen")?,
            cursors: db.open_tree("cursors")?,
            outbox: db.open_tree("outbox")?,
            outbox_raw: db.open_tree("outbox_raw")?,
            outbox_pending: db.open_tree("outbox_pending")?,
            replies: db.open_tree("replies")?,
            pending: db.open_tree("pending")?,
            meta: db.open_tree("meta")?,
            index: db.open_tree("index")?,
            db,
        })
    }

    /// Runs `f` in one transaction over every tree, then flushes to disk.
    /// The closure may run more than once on a conflict, so it computes
    /// everything from its inputs.
    fn transact<T>(&self, f: impl Fn(&Tx) -> TxResult<T>) -> Result<T, StoreError> {
        let trees = (
            &self.cases,
            &self.seen,
            &self.cursors,
            &self.outbox,
            &self.outbox_raw,
            &self.outbox_pending,
            &self.replies,
            &self.pending,
            &self.meta,
            &self.index,
        );
        let out = trees.transaction(
            |(
                cases,
                seen,
                cursors,
                outbox,
                outbox_raw,
                outbox_pending,
                replies,
                pending,
                meta,
                index,
            )| {
                f(&Tx {
                    cases,
                    seen,
                    cursors,
                    outbox,
                    outbox_raw,
                    outbox_pending,
                    replies,
                    pending,
                    meta,
                    index,
                })
            },
        )?;
        self.db.flush()?;
        Ok(out)
    }

    /// A new case id, `ESC-<year>-<sequence>`: the sequence is monotonic over
    /// the database's life and durable before this returns. An id reserved
    /// and then not committed (a crash in between) is a gap, never a reuse.
    pub fn reserve_case_id(&self, year: i16) -> Result<String, StoreError> {
        let mut ids = self.reserve_case_ids(year, 1)?;
        ids.pop().ok_or(StoreError::Corrupt {
            tree: "meta",
            error: "no case id reserved".into(),
        })
    }

    /// `n` new case ids in one transaction and one flush (a batch's worth).
    pub fn reserve_case_ids(&self, year: i16, n: usize) -> Result<Vec<String>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let first = self.meta.transaction(|meta| {
            let first = next_seq(meta, CASE_SEQ)?;
            meta.insert(CASE_SEQ, &(first + n as u64 - 1).to_be_bytes())?;
            Ok(first)
        })?;
        self.meta.flush()?;
        Ok((first..first + n as u64)
            .map(|seq| format!("ESC-{year}-{seq:06}"))
            .collect())
    }

    pub fn cursor(&self, mailbox: &str) -> Result<Option<Cursor>, StoreError> {
        self.cursors
            .get(mailbox)?
            .map(|v| decode("cursors", &v))
            .transpose()
    }

    /// Sets a mailbox's cursor outside a batch (after UIDVALIDITY changed).
    pub fn set_cursor(&self, mailbox: &str, cursor: Cursor) -> Result<(), StoreError> {
        self.cursors.insert(mailbox, encode(&cursor))?;
        self.cursors.flush()?;
        Ok(())
    }

    /// What became of a message processed before, if it was.
    pub fn seen(&self, key: &MessageKey) -> Result<Option<Seen>, StoreError> {
        self.seen
            .get(key.bytes())?
            .map(|v| decode("seen", &v))
            .transpose()
    }

    pub fn case(&self, id: &str) -> Result<Option<CaseRecord>, StoreError> {
        self.cases.get(id)?.map(|v| decode("cases", &v)).transpose()
    }

    /// All cases, oldest first.
    pub fn cases(&self) -> impl Iterator<Item = Result<CaseRecord, StoreError>> + '_ {
        self.cases.iter().map(|r| {
            let (_, v) = r?;
            decode("cases", &v)
        })
    }

    /// Automatic replies sent to `sender` since `since` (unix seconds).
    pub fn replies_since(&self, sender: &str, since: i64) -> Result<usize, StoreError> {
        let from = reply_key(sender, since);
        let to = reply_key(sender, i64::MAX);
        let mut n = 0usize;
        for r in self.replies.range(from..=to) {
            let (_, v) = r?;
            n += read_count(&v) as usize;
        }
        Ok(n)
    }

    /// Forgets reply counts older than `before`: the rate limit looks back
    /// an hour, so a day is plenty.
    pub fn prune_replies(&self, before: i64) -> Result<usize, StoreError> {
        let mut stale = Vec::new();
        for r in self.replies.iter() {
            let (k, _) = r?;
            let Some(at) = k.len().checked_sub(8).map(|i| &k[i..]) else {
                continue;
            };
            let at = u64::from_be_bytes(at.try_into().unwrap_or([0xff; 8]));
            if (at as i64) < before {
                stale.push(k);
            }
        }
        for k in &stale {
            self.replies.remove(k)?;
        }
        Ok(stale.len())
    }

    /// Writes a batch in one transaction and flushes it to disk.
    ///
    /// For each item not already in `seen`: its `seen` entry, its case and
    /// its outgoing messages. Then the cursor. The closure may run more than
    /// once on a conflict, so it computes everything from its inputs.
    ///
    /// A new case whose vendor field gives an id and a name for the first
    /// time stores the name as an alias of the id, and the complaints
    /// counted under that name so far (stored, or earlier in the batch) move
    /// to the id, with the time the name was last reported. Those are found
    /// before the transaction (which cannot scan): callers do not commit
    /// concurrently (the daemon holds its case lock).
    pub fn commit(&self, batch: &Batch) -> Result<Vec<Committed>, StoreError> {
        let mut named: HashMap<VendorKey, Vec<(i64, String)>> = HashMap::new();
        for item in &batch.items {
            if let BatchOutcome::Case { record, .. } = &item.outcome
                && let Some(CaseVendor {
                    key,
                    name: Some(name),
                }) = &record.vendor
                && key.is_id()
                && !named.contains_key(name)
                && self.vendor_alias(name)?.is_none()
            {
                named.insert(name.clone(), self.vendor_entries(name)?);
            }
        }
        self.transact(|tx| {
            let mut committed = Vec::with_capacity(batch.items.len());
            let mut by_name: Vec<(VendorKey, i64, String)> = Vec::new();
            for item in &batch.items {
                if let Some(prev) = tx.seen.get(item.key.bytes())? {
                    let prev: Seen = decode("seen", &prev).map_err(abort)?;
                    committed.push(Committed::AlreadySeen(prev));
                    continue;
                }
                let entry = match &item.outcome {
                    BatchOutcome::Case {
                        record,
                        outgoing,
                        replied_to,
                    }
                    | BatchOutcome::Update {
                        record,
                        outgoing,
                        replied_to,
                    } => {
                        let new = matches!(item.outcome, BatchOutcome::Case { .. });
                        write_case(tx, record, outgoing, new, batch.now)?;
                        if new {
                            learn_vendor(tx, record, &named, &mut by_name)?;
                        }
                        if let Some(sender) = replied_to {
                            let key = reply_key(sender, batch.now);
                            let n = tx.replies.get(&key)?.map_or(0, |v| read_count(&v));
                            tx.replies.insert(key, &(n + 1).to_be_bytes())?;
                        }
                        let case_id = record.id.clone();
                        if new {
                            Seen::Case { case_id }
                        } else {
                            Seen::Update { case_id }
                        }
                    }
                    BatchOutcome::Ignored { reason } => Seen::Ignored {
                        reason: reason.clone(),
                    },
                    BatchOutcome::Quarantined { error } => Seen::Quarantined {
                        error: error.clone(),
                    },
                };
                tx.seen.insert(item.key.bytes(), encode(&entry))?;
                committed.push(Committed::Stored);
            }
            for vendor in &batch.vendors_reported {
                // Under the id, if the batch taught that the name is one.
                let alias = if vendor.is_id() {
                    None
                } else {
                    tx.index.get(index_key(b'a', vendor.as_str()))?
                };
                let vendor = alias.map_or_else(|| vendor.clone(), |id| stored_key(&id));
                tx.meta
                    .insert(vendor_report_key(&vendor), &batch.now.to_be_bytes())?;
            }
            tx.cursors
                .insert(batch.mailbox.as_bytes(), encode(&batch.cursor))?;
            // Added to what an earlier, unfinished batch left pending.
            let mut todo = match tx.pending.get(batch.mailbox.as_bytes())? {
                Some(v) => {
                    let p: Pending = decode("pending", &v).map_err(abort)?;
                    if p.uid_validity == batch.cursor.uid_validity {
                        p.actions
                    } else {
                        Vec::new()
                    }
                }
                None => Vec::new(),
            };
            todo.extend(batch.server.iter().copied());
            if !todo.is_empty() {
                let p = Pending {
                    uid_validity: batch.cursor.uid_validity,
                    actions: todo,
                };
                tx.pending.insert(batch.mailbox.as_bytes(), encode(&p))?;
            }
            Ok(committed)
        })
    }

    /// Writes a changed case and queues what the change sends, in one
    /// transaction, flushed: resolving from the command line, an overdue
    /// re-escalation. `extra` marks (from [`Store::mark`]) go with it.
    pub fn update_case(
        &self,
        record: &CaseRecord,
        outgoing: &[NewOutgoing],
        now: i64,
    ) -> Result<CaseRecord, StoreError> {
        self.write_outside_batch(Some(record), outgoing, &[], now)?;
        self.case(&record.id)?.ok_or_else(|| StoreError::Corrupt {
            tree: "cases",
            error: format!("{} vanished", record.id),
        })
    }

    /// Queues a digest and records its period as sent, in one transaction.
    pub fn queue_digest(
        &self,
        name: &str,
        period: i64,
        outgoing: &[NewOutgoing],
        now: i64,
    ) -> Result<(), StoreError> {
        self.write_outside_batch(None, outgoing, &[(digest_key(name), period)], now)
    }

    fn write_outside_batch(
        &self,
        record: Option<&CaseRecord>,
        outgoing: &[NewOutgoing],
        marks: &[(Vec<u8>, i64)],
        now: i64,
    ) -> Result<(), StoreError> {
        self.transact(|tx| {
            match record {
                Some(r) => write_case(tx, r, outgoing, false, now)?,
                None => {
                    for out in outgoing {
                        queue(tx, out, now)?;
                    }
                }
            }
            for (k, v) in marks {
                tx.meta.insert(k.as_slice(), &v.to_be_bytes())?;
            }
            Ok(())
        })
    }

    /// The case a message belongs to, by the Message-IDs it refers to
    /// (In-Reply-To first, then References from the newest).
    pub fn thread_case(&self, ids: &[String]) -> Result<Option<String>, StoreError> {
        for id in ids {
            if let Some(v) = self.index.get(index_key(b't', &thread_key(id)))? {
                return Ok(Some(String::from_utf8_lossy(&v).into_owned()));
            }
        }
        Ok(None)
    }

    /// The latest case opened for an order id.
    pub fn order_case(&self, order_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .index
            .get(index_key(b'o', &order_id.trim().to_ascii_lowercase()))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Ids of the open cases.
    pub fn open_case_ids(&self) -> Result<Vec<String>, StoreError> {
        let prefix = index_key(b's', "");
        self.index
            .scan_prefix(&prefix)
            .map(|r| {
                let (k, _) = r?;
                Ok(String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            })
            .collect()
    }

    /// Cases with a complaint about `vendor` opened at or after `since`,
    /// oldest first.
    pub fn vendor_cases(&self, vendor: &VendorKey, since: i64) -> Result<Vec<String>, StoreError> {
        let mut prefix = index_key(b'v', vendor.as_str());
        prefix.push(0);
        let mut from = prefix.clone();
        from.extend_from_slice(&(since.max(0) as u64).to_be_bytes());
        let mut out = Vec::new();
        for r in self.index.range(from..) {
            let (k, _) = r?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(id) = k.get(prefix.len() + 8..) {
                out.push(String::from_utf8_lossy(id).into_owned());
            }
        }
        Ok(out)
    }

    /// When `vendor` was last reported to the vendor manager.
    pub fn vendor_reported_at(&self, vendor: &VendorKey) -> Result<Option<i64>, StoreError> {
        Ok(self
            .meta
            .get(vendor_report_key(vendor))?
            .map(|v| read_i64(&v)))
    }

    /// The id a vendor name was first given with, if it was.
    pub fn vendor_alias(&self, name: &VendorKey) -> Result<Option<VendorKey>, StoreError> {
        Ok(self
            .index
            .get(index_key(b'a', name.as_str()))?
            .map(|v| stored_key(&v)))
    }

    /// Every complaint counted under `vendor`: (opened at, case id).
    fn vendor_entries(&self, vendor: &VendorKey) -> Result<Vec<(i64, String)>, StoreError> {
        let mut prefix = index_key(b'v', vendor.as_str());
        prefix.push(0);
        let mut out = Vec::new();
        for r in self.index.scan_prefix(&prefix) {
            let (k, _) = r?;
            if let (Some(at), Some(id)) = (
                k.get(prefix.len()..prefix.len() + 8),
                k.get(prefix.len() + 8..),
            ) {
                out.push((read_i64(at), String::from_utf8_lossy(id).into_owned()));
            }
        }
        Ok(out)
    }

    /// The period of the last digest `name` sent.
    pub fn digest_sent(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.meta.get(digest_key(name))?.map(|v| read_i64(&v)))
    }

    /// One outbox item, without its bytes.
    pub fn outbox_item(&self, id: u64) -> Result<Option<OutboxItem>, StoreError> {
        self.outbox
            .get(id.to_be_bytes())?
            .map(|v| decode("outbox", &v))
            .transpose()
    }

    /// Server actions of committed batches not yet confirmed done.
    pub fn pending(&self, mailbox: &str) -> Result<Option<Pending>, StoreError> {
        self.pending
            .get(mailbox)?
            .map(|v| decode("pending", &v))
            .transpose()
    }

    /// The server has done everything pending for `mailbox`.
    pub fn clear_pending(&self, mailbox: &str) -> Result<(), StoreError> {
        self.pending.remove(mailbox)?;
        self.pending.flush()?;
        Ok(())
    }

    /// Pending outbox items due at `now`, oldest first, at most `limit`.
    pub fn outbox_due(&self, now: i64, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        let mut due = Vec::new();
        for r in self.outbox_pending.iter() {
            let (k, v) = r?;
            let at = i64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
            if at > now {
                continue;
            }
            if let Some(item) = self.outbox.get(&k)? {
                let item: OutboxItem = decode("outbox", &item)?;
                if item.state == Delivery::Pending {
                    due.push(item);
                    if due.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(due)
    }

    /// When the earliest pending item is due, if any is pending.
    pub fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let mut next: Option<i64> = None;
        for r in self.outbox_pending.iter() {
            let (_, v) = r?;
            let at = i64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        Ok(next)
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// All outbox items (without bytes), oldest first.
    pub fn outbox_items(&self) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox
            .iter()
            .map(|r| {
                let (_, v) = r?;
                decode("outbox", &v)
            })
            .collect()
    }

    /// The bytes of an outbox item.
    pub fn outbox_raw(&self, id: u64) -> Result<Vec<u8>, StoreError> {
        self.outbox_raw
            .get(id.to_be_bytes())?
            .map(|v| v.to_vec())
            .ok_or(StoreError::NoSuchItem(id))
    }

    fn update_item(&self, id: u64, f: impl Fn(&mut OutboxItem)) -> Result<OutboxItem, StoreError> {
        let key = id.to_be_bytes();
        self.transact(|tx| {
            let Some(v) = tx.outbox.get(key)? else {
                return Err(abort(StoreError::NoSuchItem(id)));
            };
            let mut item: OutboxItem = decode("outbox", &v).map_err(abort)?;
            f(&mut item);
            tx.outbox.insert(&key, encode(&item))?;
            if item.state == Delivery::Pending {
                tx.outbox_pending
                    .insert(&key, &item.next_attempt_at.to_be_bytes())?;
            } else {
                tx.outbox_pending.remove(&key)?;
            }
            Ok(item)
        })
    }

    /// The server accepted the item.
    pub fn mark_sent(&self, id: u64, now: i64) -> Result<OutboxItem, StoreError> {
        self.update_item(id, |i| {
            i.state = Delivery::Sent;
            i.attempts += 1;
            i.sent_at = Some(now);
            i.last_error = None;
        })
    }

    /// A transient failure: try again at `retry_at`.
    pub fn mark_retry(
        &self,
        id: u64,
        error: &str,
        retry_at: i64,
    ) -> Result<OutboxItem, StoreError> {
        self.update_item(id, |i| {
            i.attempts += 1;
            i.next_attempt_at = retry_at;
            i.last_error = Some(error.to_string());
        })
    }

    /// A permanent failure: kept, with its error, for a human.
    pub fn mark_undeliverable(&self, id: u64, error: &str) -> Result<OutboxItem, StoreError> {
        self.update_item(id, |i| {
            i.attempts += 1;
            i.state = Delivery::Undeliverable;
            i.last_error = Some(error.to_string());
        })
    }

    /// Queues messages that belong to no batch (health alerts), in one
    /// transaction, flushed.
    pub fn enqueue(&self, messages: &[NewOutgoing], now: i64) -> Result<Vec<u64>, StoreError> {
        self.transact(|tx| {
            messages
                .iter()
                .map(|out| queue(tx, out, now))
                .collect::<TxResult<Vec<u64>>>()
        })
    }
}

/// `replies` key: the lowercased sender, a NUL, and the time (a negative
/// time sorts first).
fn reply_key(sender: &str, at: i64) -> Vec<u8> {
    let mut k = sender.to_ascii_lowercase().into_bytes();
    k.push(0);
    k.extend_from_slice(&(at.max(0) as u64).to_be_bytes());
    k
}

fn read_count(v: &[u8]) -> u32 {
    v.try_into().map_or(0, u32::from_be_bytes)
}

/// Writes a case inside a transaction with its outgoing mail and index
/// entries. The outbox ids already stored for it are kept: an earlier item
/// of the same transaction may have written the case too.
fn write_case(
    tx: &Tx,
    record: &CaseRecord,
    outgoing: &[NewOutgoing],
    new: bool,
    now: i64,
) -> TxResult<()> {
    let mut record = record.clone();
    if let Some(prev) = tx.cases.get(record.id.as_bytes())? {
        let prev: CaseRecord = decode("cases", &prev).map_err(abort)?;
        // Set when the case opened, and moved only by `learn_vendor`.
        record.vendor = prev.vendor;
        for id in prev.outbox {
            if !record.outbox.contains(&id) {
                record.outbox.push(id);
            }
        }
        record.outbox.sort_unstable();
    }
    for out in outgoing {
        let id = queue(tx, out, now)?;
        record.outbox.push(id);
        tx.index.insert(
            index_key(b't', &thread_key(&out.message_id)),
            record.id.as_bytes(),
        )?;
    }
    for m in &record.thread {
        tx.index.insert(index_key(b't', m), record.id.as_bytes())?;
    }
    if new {
        if let Some(order) = &record.case.fields.order_id {
            tx.index.insert(
                index_key(b'o', &order.trim().to_ascii_lowercase()),
                record.id.as_bytes(),
            )?;
        }
        if let Some(vendor) = record.vendor_key() {
            tx.index.insert(
                vendor_index_key(vendor, record.received_at, &record.id),
                &[] as &[u8],
            )?;
        }
    }
    let open = index_key(b's', &record.id);
    if record.is_open() {
        tx.index.insert(open, &[] as &[u8])?;
    } else {
        tx.index.remove(open)?;
    }
    tx.cases.insert(record.id.as_bytes(), encode(&record))?;
    Ok(())
}

/// Adds one message to the outbox inside a transaction: its record, its
/// bytes, and its entry in the pending index.
fn queue(tx: &Tx, out: &NewOutgoing, now: i64) -> TxResult<u64> {
    let id = next_seq(tx.meta, OUTBOX_SEQ)?;
    let due = out.not_before.map_or(now, |t| t.max(now));
    let item = OutboxItem {
        id,
        kind: out.kind,
        case_id: out.case_id.clone(),
        message_id: out.message_id.clone(),
        envelope_from: out.envelope_from.clone(),
        recipients: out.recipients.clone(),
        state: Delivery::Pending,
        attempts: 0,
        next_attempt_at: due,
        queued_at: now,
        sent_at: None,
        last_error: None,
    };
    let key = id.to_be_bytes();
    tx.outbox.insert(&key, encode(&item))?;
    tx.outbox_raw.insert(&key, out.raw.as_slice())?;
    tx.outbox_pending.insert(&key, &due.to_be_bytes())?;
    Ok(id)
}

fn index_key(kind: u8, rest: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 2);
    k.push(kind);
    k.push(0);
    k.extend_from_slice(rest.as_bytes());
    k
}

/// Learns from a new case's vendor (see [`Store::commit`]): `stored` are
/// the complaints found under names before the transaction, `by_name` the
/// name-keyed cases this transaction has written so far.
fn learn_vendor(
    tx: &Tx,
    record: &CaseRecord,
    stored: &HashMap<VendorKey, Vec<(i64, String)>>,
    by_name: &mut Vec<(VendorKey, i64, String)>,
) -> TxResult<()> {
    let Some(v) = &record.vendor else {
        return Ok(());
    };
    if !v.key.is_id() {
        by_name.push((v.key.clone(), record.received_at, record.id.clone()));
        return Ok(());
    }
    let Some(name) = &v.name else {
        return Ok(());
    };
    let alias = index_key(b'a', name.as_str());
    // The first id a name was given with keeps it.
    if tx.index.get(&alias)?.is_some() {
        return Ok(());
    }
    tx.index.insert(alias, v.key.as_str().as_bytes())?;
    let earlier: Vec<(i64, String)> = stored
        .get(name)
        .into_iter()
        .flatten()
        .cloned()
        .chain(
            by_name
                .iter()
                .filter(|(k, _, _)| k == name)
                .map(|(_, at, id)| (*at, id.clone())),
        )
        .collect();
    by_name.retain(|(k, _, _)| k != name);
    for (at, id) in earlier {
        tx.index.remove(vendor_index_key(name, at, &id))?;
        tx.index
            .insert(vendor_index_key(&v.key, at, &id), &[] as &[u8])?;
        if let Some(bytes) = tx.cases.get(id.as_bytes())? {
            let mut r: CaseRecord = decode("cases", &bytes).map_err(abort)?;
            if let Some(rv) = &mut r.vendor
                && rv.key == *name
            {
                rv.key = v.key.clone();
                tx.cases.insert(id.as_bytes(), encode(&r))?;
            }
        }
    }
    // A name reported within the window is the id reported then.
    if let Some(at) = tx.meta.remove(vendor_report_key(name))? {
        let to = vendor_report_key(&v.key);
        let at = read_i64(&at).max(tx.meta.get(&to)?.map_or(i64::MIN, |t| read_i64(&t)));
        tx.meta.insert(to, &at.to_be_bytes())?;
    }
    Ok(())
}

/// `v` key: the vendor, a NUL, when the case opened, the case id.
fn vendor_index_key(vendor: &VendorKey, at: i64, case_id: &str) -> Vec<u8> {
    let mut k = index_key(b'v', vendor.as_str());
    k.push(0);
    k.extend_from_slice(&(at.max(0) as u64).to_be_bytes());
    k.extend_from_slice(case_id.as_bytes());
    k
}

/// A vendor key as the index stores it.
fn stored_key(bytes: &[u8]) -> VendorKey {
    VendorKey::from_stored(String::from_utf8_lossy(bytes).into_owned())
}

fn vendor_report_key(vendor: &VendorKey) -> Vec<u8> {
    let mut k = b"vendor_reported\0".to_vec();
    k.extend_from_slice(vendor.as_str().as_bytes());
    k
}

fn digest_key(name: &str) -> Vec<u8> {
    let mut k = b"digest_sent\0".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn read_i64(v: &[u8]) -> i64 {
    v.try_into().map_or(0, i64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchItem, ServerAction};
    use crate::config::Config;

    fn case_record(store: &Store, uid: u32) -> CaseRecord {
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
            1_700_000_000,
            case,
            None,
            vec![],
        )
    }

    fn outgoing(case_id: &str, n: usize) -> Vec<NewOutgoing> {
        (0..n)
            .map(|i| NewOutgoing {
                kind: crate::outbox::OutgoingKind::Reply,
                case_id: Some(case_id.into()),
                message_id: format!("{case_id}.{i}@mailtriage.example.com"),
                envelope_from: "ops@example.com".into(),
                recipients: vec!["a@example.com".into()],
                raw: format!("Subject: {case_id} {i}\r\n\r\nbody").into_bytes(),
                not_before: None,
            })
            .collect()
    }

    fn item(store: &Store, uid: u32, outs: usize) -> BatchItem {
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

    #[test]
    fn a_batch_is_durable_and_recognised_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let keys;
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let items = vec![item(&store, 1, 2), item(&store, 2, 1)];
            keys = items.iter().map(|i| i.key.clone()).collect::<Vec<_>>();
            let batch = Batch {
                mailbox: "ops".into(),
                cursor: Cursor {
                    uid_validity: 7,
                    last_uid: 2,
                },
                items,
                server: vec![(1, ServerAction::Processed), (2, ServerAction::Quarantine)],
                now: 100,
                vendors_reported: vec![],
            };
            assert_eq!(
                store.commit(&batch).unwrap(),
                [Committed::Stored, Committed::Stored]
            );
            // The same batch again (a crash before the server was told):
            // nothing is written twice.
            let again = store.commit(&batch).unwrap();
            assert!(matches!(
                again[0],
                Committed::AlreadySeen(Seen::Case { .. })
            ));
            assert_eq!(store.outbox_items().unwrap().len(), 3);
        }
        // sled's background threads may hold the lock a moment after the
        // last handle is dropped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while crate::control::database_in_use(dir.path()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the database stays locked"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            store.cursor("ops").unwrap(),
            Some(Cursor {
                uid_validity: 7,
                last_uid: 2
            })
        );
        // Committed twice without the server being told: both rounds are
        // pending, in order.
        let p = store.pending("ops").unwrap().unwrap();
        assert_eq!(p.uid_validity, 7);
        assert_eq!(
            p.actions,
            [
                (1, ServerAction::Processed),
                (2, ServerAction::Quarantine),
                (1, ServerAction::Processed),
                (2, ServerAction::Quarantine)
            ]
        );
        store.clear_pending("ops").unwrap();
        assert_eq!(store.pending("ops").unwrap(), None);
        // Three items queued by the batch, all due at its time.
        assert_eq!(store.next_due().unwrap(), Some(100));
        assert_eq!(store.outbox_due(100, 10).unwrap().len(), 3);
        let seen = store.seen(&keys[0]).unwrap().unwrap();
        let Seen::Case { case_id } = seen else {
            panic!("{seen:?}")
        };
        assert_eq!(case_id, "ESC-2026-000001");
        let record = store.case(&case_id).unwrap().unwrap();
        assert_eq!(record.outbox, [1, 2]);
        assert_eq!(record.case.fields.order_id.as_deref(), Some("CK1"));
        assert_eq!(
            store.outbox_raw(2).unwrap(),
            b"Subject: ESC-2026-000001 1\r\n\r\nbody"
        );
        assert_eq!(store.replies_since("a@EXAMPLE.com", 0).unwrap(), 2);
        assert_eq!(store.replies_since("a@example.com", 101).unwrap(), 0);
        // Ids go on after reopening, one at a time or a batch's worth.
        assert_eq!(store.reserve_case_id(2027).unwrap(), "ESC-2027-000003");
        assert_eq!(
            store.reserve_case_ids(2027, 3).unwrap(),
            ["ESC-2027-000004", "ESC-2027-000005", "ESC-2027-000006"]
        );
        assert!(store.reserve_case_ids(2027, 0).unwrap().is_empty());
        assert_eq!(store.reserve_case_id(2027).unwrap(), "ESC-2027-000007");
        assert_eq!(store.cases().count(), 2);
    }

    #[test]
    fn the_same_message_twice_in_one_batch_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let a = item(&store, 1, 1);
        let mut b = item(&store, 2, 1);
        b.key = a.key.clone();
        let batch = Batch {
            mailbox: "ops".into(),
            cursor: Cursor {
                uid_validity: 7,
                last_uid: 2,
            },
            items: vec![a, b],
            server: vec![],
            now: 100,
            vendors_reported: vec![],
        };
        let r = store.commit(&batch).unwrap();
        assert_eq!(r[0], Committed::Stored);
        assert!(matches!(r[1], Committed::AlreadySeen(_)));
        assert_eq!(store.cases().count(), 1);
        assert_eq!(store.outbox_items().unwrap().len(), 1);
    }

    /// A new case about `vendor`, opened at `at`, resolved as the daemon
    /// does (through the stored aliases; the batch's own are the daemon's
    /// business).
    fn vendor_item(store: &Store, uid: u32, at: i64, vendor: &str) -> BatchItem {
        let rules = crate::vendor::VendorRules::shipped().unwrap();
        let mut it = item(store, uid, 0);
        if let BatchOutcome::Case { record, .. } = &mut it.outcome {
            let v = rules.parse(vendor).unwrap();
            let alias = match (&v.id, &v.name) {
                (None, Some(n)) => store.vendor_alias(n).unwrap(),
                _ => None,
            };
            record.received_at = at;
            record.case.fields.vendor = Some(vendor.to_string());
            record.vendor = v.resolve(alias);
        }
        it
    }

    fn batch(items: Vec<BatchItem>, now: i64, reported: Vec<VendorKey>) -> Batch {
        Batch {
            mailbox: "ops".into(),
            cursor: Cursor {
                uid_validity: 7,
                last_uid: 1,
            },
            items,
            server: vec![],
            now,
            vendors_reported: reported,
        }
    }

    #[test]
    fn a_name_given_with_an_id_brings_its_complaints_to_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let rules = crate::vendor::VendorRules::shipped().unwrap();
        let key = |f: &str| rules.key(f).unwrap();
        let (id, name) = (key("VND-1044"), key("QuickPick Logistics"));
        let case_key = |id: &str| store.case(id).unwrap().unwrap().vendor.unwrap().key;

        // Before anyone gave the id: complaints under the name, reported.
        let a = vendor_item(&store, 1, 1_000, "QuickPick Logistics");
        let other = vendor_item(&store, 2, 1_000, "QuickPick Couriers");
        store
            .commit(&batch(vec![a, other], 1_000, vec![name.clone()]))
            .unwrap();
        assert_eq!(store.vendor_cases(&name, 0).unwrap(), ["ESC-2026-000001"]);

        // A batch with one more name-only complaint, then the id with the
        // name, then an update of the name-only one.
        let d = vendor_item(&store, 3, 2_000, "quickpick logistics pvt ltd");
        let d_record = match &d.outcome {
            BatchOutcome::Case { record, .. } => record.clone(),
            _ => unreachable!(),
        };
        let c = vendor_item(&store, 4, 2_000, "QuickPick Logistics (VND-1044)");
        let mut update = item(&store, 5, 0);
        let mut updated = d_record.clone();
        updated.status = crate::record::Status::Resolved;
        update.outcome = BatchOutcome::Update {
            record: updated,
            outgoing: vec![],
            replied_to: None,
        };
        store
            .commit(&batch(vec![d, c, update], 2_000, vec![]))
            .unwrap();

        assert_eq!(store.vendor_alias(&name).unwrap(), Some(id.clone()));
        assert_eq!(
            store.vendor_cases(&id, 0).unwrap(),
            ["ESC-2026-000001", "ESC-2026-000003", "ESC-2026-000004"]
        );
        assert!(store.vendor_cases(&name, 0).unwrap().is_empty());
        for case in ["ESC-2026-000001", "ESC-2026-000003", "ESC-2026-000004"] {
            assert_eq!(case_key(case), id, "{case}");
        }
        let d_now = store.case(&d_record.id).unwrap().unwrap();
        assert_eq!(
            d_now.status,
            crate::record::Status::Resolved,
            "the update was written..."
        );
        assert_eq!(d_now.vendor_key(), Some(&id), "...with the vendor moved");
        assert_eq!(case_key("ESC-2026-000002"), key("QuickPick Couriers"));
        // The name's report is the id's: not reported again in its window.
        assert_eq!(store.vendor_reported_at(&id).unwrap(), Some(1_000));
        assert_eq!(store.vendor_reported_at(&name).unwrap(), None);

        // The first id a name was given with keeps it.
        let e = vendor_item(&store, 6, 3_000, "QuickPick Logistics (VND-2000)");
        let later = vendor_item(&store, 7, 3_000, "QuickPick Logistics");
        store
            .commit(&batch(vec![e, later], 3_000, vec![name.clone()]))
            .unwrap();
        assert_eq!(store.vendor_alias(&name).unwrap(), Some(id.clone()));
        assert_eq!(
            store.vendor_cases(&key("VND-2000"), 0).unwrap(),
            ["ESC-2026-000006"]
        );
        assert_eq!(case_key("ESC-2026-000007"), id);
        // A name reported is marked under the id it is an alias of.
        assert_eq!(store.vendor_reported_at(&id).unwrap(), Some(3_000));
    }

    #[test]
    fn message_keys_tell_messages_apart() {
        let a = MessageKey::new(Some("X@example.com"), b"one");
        assert_eq!(a, MessageKey::new(Some("x@example.com"), b"one"));
        assert_ne!(a, MessageKey::new(Some("x@example.com"), b"two"));
        assert_ne!(a, MessageKey::new(None, b"one"));
    }

    #[test]
    fn reply_counts_are_per_sender_and_window_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut uid = 0;
        let mut commit = |sender: &str, now: i64| {
            uid += 1;
            let mut item = item(&store, uid, 1);
            if let BatchOutcome::Case { replied_to, .. } = &mut item.outcome {
                *replied_to = Some(sender.to_string());
            }
            store
                .commit(&Batch {
                    mailbox: "ops".into(),
                    cursor: Cursor {
                        uid_validity: 1,
                        last_uid: uid,
                    },
                    items: vec![item],
                    server: vec![],
                    now,
                    vendors_reported: vec![],
                })
                .unwrap();
        };
        commit("a@example.com", 1_000);
        commit("A@Example.com", 1_000);
        commit("a@example.com", 4_000);
        commit("a@example.co", 4_000);
        assert_eq!(store.replies_since("a@example.com", 0).unwrap(), 3);
        assert_eq!(store.replies_since("a@example.com", 1_000).unwrap(), 3);
        assert_eq!(store.replies_since("a@example.com", 1_001).unwrap(), 1);
        assert_eq!(store.replies_since("a@example.co", 0).unwrap(), 1);
        assert_eq!(store.replies_since("b@example.com", 0).unwrap(), 0);
        assert_eq!(store.prune_replies(2_000).unwrap(), 1);
        assert_eq!(store.replies_since("a@example.com", 0).unwrap(), 1);
    }

    #[test]
    fn outbox_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let ids = store.enqueue(&outgoing("ESC-2026-000009", 3), 50).unwrap();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(store.outbox_due(49, 10).unwrap().len(), 0);
        assert_eq!(store.outbox_due(50, 2).unwrap().len(), 2);
        store.mark_sent(1, 51).unwrap();
        let retried = store.mark_retry(2, "451 try later", 80).unwrap();
        assert_eq!((retried.attempts, retried.next_attempt_at), (1, 80));
        store.mark_undeliverable(3, "550 no such user").unwrap();
        assert!(store.outbox_due(79, 10).unwrap().is_empty());
        let due: Vec<u64> = store
            .outbox_due(80, 10)
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(due, [2]);
        assert_eq!(store.next_due().unwrap(), Some(80));
        store.mark_sent(2, 81).unwrap();
        assert_eq!(store.next_due().unwrap(), None);
        let items = store.outbox_items().unwrap();
        assert_eq!(items[0].state, Delivery::Sent);
        assert_eq!(items[2].state, Delivery::Undeliverable);
        assert_eq!(items[2].last_error.as_deref(), Some("550 no such user"));
        assert!(matches!(
            store.mark_sent(99, 1),
            Err(StoreError::NoSuchItem(99))
        ));
    }

    #[test]
    fn seen_in_words() {
        for (seen, words) in [
            (
                Seen::Case {
                    case_id: "ESC-2026-000001".into(),
                },
                "opened ESC-2026-000001",
            ),
            (
                Seen::Update {
                    case_id: "ESC-2026-000002".into(),
                },
                "updated ESC-2026-000002",
            ),
            (
                Seen::Ignored {
                    reason: "not_escalation".into(),
                },
                "ignored: not_escalation",
            ),
            (
                Seen::Quarantined {
                    error: "not an email".into(),
                },
                "quarantined: not an email",
            ),
        ] {
            assert_eq!(seen.to_string(), words);
        }
    }
}
