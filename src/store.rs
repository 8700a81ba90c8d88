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
//! - `meta`: counters.
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

use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::case::Case;

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

/// Identifies a message whatever its UID: Message-ID and a digest of its
/// bytes (a Message-ID alone is not unique in practice, and may be absent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey(String);

impl MessageKey {
    pub fn new(message_id: Option<&str>, raw: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, raw);
        let mut hex = String::with_capacity(64);
        for b in digest.as_ref() {
            hex.push_str(&format!("{b:02x}"));
        }
        let id = message_id.unwrap_or("").trim().to_ascii_lowercase();
        MessageKey(format!("{id}\u{0}{hex}"))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Where a mailbox's processing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub uid_validity: u32,
    /// Highest UID processed (0: none).
    pub last_uid: u32,
}

/// What became of a processed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Seen {
    /// It opened this case.
    Case { case_id: String },
    /// It was read and deliberately left alone (not an escalation, unknown
    /// sender, automatic mail).
    Ignored { reason: String },
    /// It could not be processed; a human must look at it.
    Quarantined { error: String },
}

/// A stored case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub id: String,
    /// The mailbox (by configured name) the message arrived in.
    pub mailbox: String,
    pub uid: u32,
    pub uid_validity: u32,
    /// Unix seconds.
    pub received_at: i64,
    pub case: Case,
    /// The agent's display name, for replies.
    #[serde(default)]
    pub from_name: Option<String>,
    /// References of the agent's message, for threading replies.
    #[serde(default)]
    pub references: Vec<String>,
    /// Outbox items queued for this case.
    #[serde(default)]
    pub outbox: Vec<u64>,
    /// Digests the routing table added the case to.
    #[serde(default)]
    pub digests: Vec<String>,
    /// Tags the routing table added.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// One message to send, as queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutgoing {
    /// What it is, for logs and `cases show`: `reply`, `forward`, `alert`, ...
    pub kind: String,
    pub case_id: Option<String>,
    /// The Message-ID it carries, without angle brackets.
    pub message_id: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    /// The whole RFC 5322 message.
    pub raw: Vec<u8>,
}

/// Delivery state of an outbox item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Pending,
    Sent,
    /// Given up on (permanent failure): kept for a human.
    Undeliverable,
}

/// An outbox item without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub id: u64,
    pub kind: String,
    pub case_id: Option<String>,
    pub message_id: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub state: Delivery,
    pub attempts: u32,
    /// Unix seconds: when to try next (pending items).
    pub next_attempt_at: i64,
    pub queued_at: i64,
    pub sent_at: Option<i64>,
    pub last_error: Option<String>,
}

/// What the server must be told about a committed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerAction {
    /// Processed: set `\Seen` and/or move, as the mailbox is configured.
    Processed,
    /// Move to the quarantine folder.
    Quarantine,
}

/// Server actions committed with a batch and not yet confirmed done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub uid_validity: u32,
    pub actions: Vec<(u32, ServerAction)>,
}

/// One processed message of a batch.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub key: MessageKey,
    pub uid: u32,
    pub outcome: BatchOutcome,
}

#[derive(Debug, Clone)]
pub enum BatchOutcome {
    /// A new case (its id reserved with [`Store::reserve_case_id`]) and the
    /// messages its actions send.
    Case {
        record: Box<CaseRecord>,
        outgoing: Vec<NewOutgoing>,
        /// The sender got an automatic reply (counted for the rate limit).
        replied_to: Option<String>,
    },
    Ignored {
        reason: String,
    },
    Quarantined {
        error: String,
    },
}

/// A batch of processed messages of one mailbox, committed together.
#[derive(Debug, Clone)]
pub struct Batch {
    pub mailbox: String,
    pub cursor: Cursor,
    pub items: Vec<BatchItem>,
    /// What to do on the server once the batch is stored (including for
    /// messages seen before); kept until [`Store::clear_pending`].
    pub server: Vec<(u32, ServerAction)>,
    /// Unix seconds.
    pub now: i64,
}

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
            db,
        })
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
    pub fn commit(&self, batch: &Batch) -> Result<Vec<Committed>, StoreError> {
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
        );
        let result = trees.transaction(
            |(cases, seen, cursors, outbox, outbox_raw, outbox_pending, replies, pending, meta)| {
                let mut committed = Vec::with_capacity(batch.items.len());
                for item in &batch.items {
                    if let Some(prev) = seen.get(item.key.bytes())? {
                        let prev: Seen = decode("seen", &prev).map_err(abort)?;
                        committed.push(Committed::AlreadySeen(prev));
                        continue;
                    }
                    let entry = match &item.outcome {
                        BatchOutcome::Case {
                            record,
                            outgoing,
                            replied_to,
                        } => {
                            let mut record = record.as_ref().clone();
                            for out in outgoing {
                                let id = queue(
                                    outbox,
                                    outbox_raw,
                                    outbox_pending,
                                    meta,
                                    out,
                                    batch.now,
                                )?;
                                record.outbox.push(id);
                            }
                            if let Some(sender) = replied_to {
                                let key = reply_key(sender, batch.now);
                                let n = replies.get(&key)?.map_or(0, |v| read_count(&v));
                                replies.insert(key, &(n + 1).to_be_bytes())?;
                            }
                            cases.insert(record.id.as_bytes(), encode(&record))?;
                            Seen::Case {
                                case_id: record.id.clone(),
                            }
                        }
                        BatchOutcome::Ignored { reason } => Seen::Ignored {
                            reason: reason.clone(),
                        },
                        BatchOutcome::Quarantined { error } => Seen::Quarantined {
                            error: error.clone(),
                        },
                    };
                    seen.insert(item.key.bytes(), encode(&entry))?;
                    committed.push(Committed::Stored);
                }
                cursors.insert(batch.mailbox.as_bytes(), encode(&batch.cursor))?;
                // Added to what an earlier, unfinished batch left pending.
                let mut todo = match pending.get(batch.mailbox.as_bytes())? {
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
                    pending.insert(batch.mailbox.as_bytes(), encode(&p))?;
                }
                Ok(committed)
            },
        )?;
        self.db.flush()?;
        Ok(result)
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
        let item = (&self.outbox, &self.outbox_pending).transaction(|(outbox, pending)| {
            let Some(v) = outbox.get(key)? else {
                return Err(abort(StoreError::NoSuchItem(id)));
            };
            let mut item: OutboxItem = decode("outbox", &v).map_err(abort)?;
            f(&mut item);
            outbox.insert(&key, encode(&item))?;
            if item.state == Delivery::Pending {
                pending.insert(&key, &item.next_attempt_at.to_be_bytes())?;
            } else {
                pending.remove(&key)?;
            }
            Ok(item)
        })?;
        self.db.flush()?;
        Ok(item)
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
        let trees = (
            &self.outbox,
            &self.outbox_raw,
            &self.outbox_pending,
            &self.meta,
        );
        let ids = trees.transaction(|(outbox, raw, pending, meta)| {
            messages
                .iter()
                .map(|out| queue(outbox, raw, pending, meta, out, now))
                .collect::<TxResult<Vec<u64>>>()
        })?;
        self.db.flush()?;
        Ok(ids)
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

/// Adds one message to the outbox inside a transaction: its record, its
/// bytes, and its entry in the pending index.
fn queue(
    outbox: &TransactionalTree,
    raw: &TransactionalTree,
    pending: &TransactionalTree,
    meta: &TransactionalTree,
    out: &NewOutgoing,
    now: i64,
) -> TxResult<u64> {
    let id = next_seq(meta, OUTBOX_SEQ)?;
    let item = OutboxItem {
        id,
        kind: out.kind.clone(),
        case_id: out.case_id.clone(),
        message_id: out.message_id.clone(),
        envelope_from: out.envelope_from.clone(),
        recipients: out.recipients.clone(),
        state: Delivery::Pending,
        attempts: 0,
        next_attempt_at: now,
        queued_at: now,
        sent_at: None,
        last_error: None,
    };
    let key = id.to_be_bytes();
    outbox.insert(&key, encode(&item))?;
    raw.insert(&key, out.raw.as_slice())?;
    pending.insert(&key, &now.to_be_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn case_record(store: &Store, uid: u32) -> CaseRecord {
        let config = Config::builtin().unwrap();
        let raw = format!(
            "From: a@example.com\r\nSubject: Escalation (Order #CK{uid})\r\nMessage-ID: <m{uid}@example.com>\r\n\r\nCustomer Name: Asha\r\n"
        );
        let (_, case) = config.triage.parse(raw.as_bytes()).unwrap();
        CaseRecord {
            id: store.reserve_case_id(2026).unwrap(),
            mailbox: "ops".into(),
            uid,
            uid_validity: 7,
            received_at: 1_700_000_000,
            case,
            from_name: None,
            references: vec![],
            outbox: vec![],
            digests: vec![],
            tags: vec![],
        }
    }

    fn outgoing(case_id: &str, n: usize) -> Vec<NewOutgoing> {
        (0..n)
            .map(|i| NewOutgoing {
                kind: "reply".into(),
                case_id: Some(case_id.into()),
                message_id: format!("{case_id}.{i}@mailtriage.example.com"),
                envelope_from: "ops@example.com".into(),
                recipients: vec!["a@example.com".into()],
                raw: format!("Subject: {case_id} {i}\r\n\r\nbody").into_bytes(),
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
        };
        let r = store.commit(&batch).unwrap();
        assert_eq!(r[0], Committed::Stored);
        assert!(matches!(r[1], Committed::AlreadySeen(_)));
        assert_eq!(store.cases().count(), 1);
        assert_eq!(store.outbox_items().unwrap().len(), 1);
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
}
