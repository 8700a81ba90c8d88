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
//! - `pending`: per mailbox, what the server must still be told about the
//!   messages of committed batches (marked, moved, quarantined);
//! - `outbox` and `outbox_raw`: every message to send, with its delivery
//!   state, and its bytes (fixed when queued, so a resend after a crash is
//!   the same message with the same Message-ID); `outbox_pending`: the items
//!   not yet delivered, with when each is due;
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
//!
//! Split by what it stores: `commit` (a batch, and the cases, seen messages,
//! cursors and pending server actions it writes), `outbox` (the mail to
//! send and its delivery), `indexes` (the lookups, the reply counts, what
//! was last reported and sent).
//!
//! [`CaseRecord`]: crate::record::CaseRecord
//! [`MessageKey`]: crate::batch::MessageKey
//! [`VendorKey`]: crate::vendor::VendorKey

mod commit;
mod indexes;
mod outbox;

#[cfg(test)]
mod fixtures;

use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

pub use commit::Committed;

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
    /// Server actions not yet done, by mailbox.
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

/// Advances the counter `key` in `meta` and returns its new value (the
/// first is 1).
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

fn read_i64(v: &[u8]) -> i64 {
    v.try_into().map_or(0, i64::from_be_bytes)
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
        let out = trees.transaction(|t| {
            f(&Tx {
                cases: &t.0,
                seen: &t.1,
                cursors: &t.2,
                outbox: &t.3,
                outbox_raw: &t.4,
                outbox_pending: &t.5,
                replies: &t.6,
                pending: &t.7,
                meta: &t.8,
                index: &t.9,
            })
        })?;
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

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
