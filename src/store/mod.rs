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
//! - `originals`: the agent's original that forwards attach, kept once by
//!   its SHA-256 with a count of the items that refer to it: a forward's
//!   bytes in `outbox_raw` lack it, and its reference here says where it
//!   goes back in (`originals`);
//! - `replies`: how many automatic replies each sender got in each second
//!   (the rate limit), keyed by sender and time so that counting the last
//!   hour is a range scan and a busy sender costs no more than a quiet one;
//! - `index`: lookups kept in step with the cases, by prefix: `t` a
//!   Message-ID of the thread (the agent's, ours, each update's) to its case,
//!   `o` an order id to its latest case, `s` the open cases, `v` a vendor's
//!   complaints by time (by [`VendorKey`]), `a` a vendor name to the id it
//!   was first given with, `u` the undeliverable outbox items;
//! - `meta`: counters, when each vendor was last reported, when each digest
//!   was last sent, each mailbox's last message processed, how far `seen`
//!   has been pruned, a mailbox's rescan after UIDVALIDITY changed;
//! - `expiry`: what the retention pass will act on, by time, so that a pass
//!   reads only what is due: delivered items whose bytes are kept, `seen`
//!   entries, resolved cases ([`Store::retention_pass`]).
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
//! The data is bounded by the daily [`Store::retention_pass`]: the bytes of
//! delivered mail go after `keep_sent`, resolved cases are appended to the
//! archive file (JSON Lines, [`ArchivedCase`]) after `keep_resolved` and
//! removed with every index entry that names them, and `seen` entries go
//! after `keep_seen`, with the rule that makes that safe (see
//! [`crate::rescan`]).
//!
//! Split by what it stores: `commit` (a batch, and the cases, seen messages,
//! cursors and pending server actions it writes), `outbox` (the mail to
//! send and its delivery), `originals` (the original kept once),
//! `indexes` (the lookups, the reply counts, what was last reported and
//! sent), `expiry` (the `expiry` tree, and what a rescan reads of it),
//! `retention` (the pass) and `archive` (its file); `export` writes all of
//! it out as one snapshot and reads it back into a new database.
//!
//! Every write takes the store's write gate (shared); an export takes it
//! exclusively while it reads, which is what makes the export one point in
//! time (see `export`).
//!
//! [`CaseRecord`]: crate::record::CaseRecord
//! [`ArchivedCase`]: archive::ArchivedCase
//! [`MessageKey`]: crate::batch::MessageKey
//! [`VendorKey`]: crate::vendor::VendorKey

mod archive;
mod commit;
mod expiry;
mod export;
mod indexes;
mod lookup;
mod originals;
mod outbox;
mod retention;

#[cfg(test)]
mod fixtures;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

pub use archive::{ARCHIVE_FORMAT, ArchiveError, ArchivedCase, Found, find_archived};
pub use commit::Committed;
pub use export::{
    Checked, Counts, ExportError, FORMAT, FORMAT_VERSION, FormatError, Header, ImportError,
    Imported, Snapshot, copy_checked, import, verify,
};
pub use outbox::{HandChange, ItemChanged, OutboxSummary};
pub use retention::{Retention, RetentionReport};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    /// A record that does not read as what its tree holds.
    #[error("corrupt record in {tree}: {source}")]
    Corrupt {
        tree: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A counter in `meta` that is not a big-endian u64.
    #[error("corrupt record in meta: counter {counter} is not 8 bytes")]
    CorruptCounter { counter: &'static str },
    /// A case written a moment ago that does not read back.
    #[error("corrupt record in cases: {0} vanished")]
    CaseVanished(String),
    #[error("no outbox item {0}")]
    NoSuchItem(u64),
    #[error("no tree {0} in the database")]
    NoSuchTree(&'static str),
    /// The item was delivered longer ago than `keep_sent`.
    #[error("outbox item {0}: its bytes were dropped (delivered longer ago than keep_sent)")]
    BytesDropped(u64),
    /// A forward's reference to an original that is not stored.
    #[error("corrupt record in originals: outbox item {0} refers to an original that is missing")]
    MissingOriginal(u64),
    /// Appending to the archive file failed: nothing was removed.
    #[error("archive {}: {source}", .path.display())]
    Archive {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    originals: sled::Tree,
    expiry: sled::Tree,
    /// The database's directory.
    path: PathBuf,
    /// Taken shared by every write and exclusively by an export, so that
    /// an export reads every tree at one point in time. Only the outermost
    /// write of a call takes it (a thread that waits for it while holding
    /// it shared would deadlock behind a waiting export).
    gate: Arc<RwLock<()>>,
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
    originals: &'a TransactionalTree,
    expiry: &'a TransactionalTree,
}

impl Tx<'_> {
    /// A tree by its name in [`Store::trees`].
    fn by_name(&self, name: &str) -> Option<&TransactionalTree> {
        Some(match name {
            "cases" => self.cases,
            "seen" => self.seen,
            "cursors" => self.cursors,
            "outbox" => self.outbox,
            "outbox_raw" => self.outbox_raw,
            "outbox_pending" => self.outbox_pending,
            "replies" => self.replies,
            "pending" => self.pending,
            "meta" => self.meta,
            "index" => self.index,
            "originals" => self.originals,
            "expiry" => self.expiry,
            _ => return None,
        })
    }
}

const CASE_SEQ: &str = "case_seq";

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs to JSON cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { tree, source })
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// Advances the counter `key` in `meta` and returns its new value (the
/// first is 1).
fn next_seq(meta: &TransactionalTree, key: &'static str) -> TxResult<u64> {
    let current = match meta.get(key)? {
        Some(v) => u64::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| abort(StoreError::CorruptCounter { counter: key }))?,
        ),
        None => 0,
    };
    let next = current + 1;
    meta.insert(key, &next.to_be_bytes())?;
    Ok(next)
}

/// A case id, `ESC-<year>-<sequence>`.
fn case_id(year: i16, seq: u64) -> String {
    format!("ESC-{year}-{seq:06}")
}

/// A time read back from a key or a counter (unix seconds).
fn seconds(n: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(n).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn read_i64(v: &[u8]) -> i64 {
    v.try_into().map_or(0, i64::from_be_bytes)
}

impl Store {
    /// Whether another process holds the database at `db` (sled's
    /// exclusive lock on its `db` file): tells "in use" from other failures
    /// to open it.
    pub fn in_use(db: &Path) -> bool {
        match std::fs::File::open(db.join("db")) {
            Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    /// Opens (or creates) the database at `path`, with a page cache of
    /// `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        let store = Store {
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
            originals: db.open_tree("originals")?,
            expiry: db.open_tree("expiry")?,
            db,
            path: path.to_path_buf(),
            gate: Arc::default(),
        };
        store.index_undeliverable_once()?;
        Ok(store)
    }

    /// The database's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tree, by name: what an export walks and an import checks.
    fn trees(&self) -> [(&'static str, &sled::Tree); 12] {
        [
            ("cases", &self.cases),
            ("seen", &self.seen),
            ("cursors", &self.cursors),
            ("outbox", &self.outbox),
            ("outbox_raw", &self.outbox_raw),
            ("outbox_pending", &self.outbox_pending),
            ("replies", &self.replies),
            ("pending", &self.pending),
            ("meta", &self.meta),
            ("index", &self.index),
            ("originals", &self.originals),
            ("expiry", &self.expiry),
        ]
    }

    /// The write gate, shared: held by every write (see `gate`).
    fn write_gate(&self) -> RwLockReadGuard<'_, ()> {
        // The gate guards no data: a panic while it was held leaves
        // nothing half done that the lock could protect.
        self.gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` in one transaction over every tree, then flushes to disk.
    /// The closure may run more than once on a conflict, so it computes
    /// everything from its inputs.
    fn transact<T>(&self, f: impl Fn(&Tx) -> TxResult<T>) -> Result<T, StoreError> {
        let _gate = self.write_gate();
        let out = self.transact_unflushed(f)?;
        self.db.flush()?;
        Ok(out)
    }

    /// [`Store::transact`] without the gate and the flush: for an import
    /// into a database nothing else uses, flushed once at its end.
    fn transact_unflushed<T>(&self, f: impl Fn(&Tx) -> TxResult<T>) -> Result<T, StoreError> {
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
            &self.originals,
            &self.expiry,
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
                originals: &t.10,
                expiry: &t.11,
            })
        })?;
        Ok(out)
    }

    /// A new case id, `ESC-<year>-<sequence>`: the sequence is monotonic over
    /// the database's life and durable before this returns. An id reserved
    /// and then not committed (a crash in between) is a gap, never a reuse.
    pub fn reserve_case_id(&self, year: i16) -> Result<String, StoreError> {
        Ok(case_id(year, self.reserve_case_seqs(1)?))
    }

    /// `n` new case ids in one transaction and one flush (a batch's worth).
    pub fn reserve_case_ids(&self, year: i16, n: usize) -> Result<Vec<String>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let first = self.reserve_case_seqs(n as u64)?;
        Ok((first..first + n as u64)
            .map(|seq| case_id(year, seq))
            .collect())
    }

    /// Advances the case sequence by `n` (at least 1) in one transaction,
    /// flushed; returns the first of the `n` numbers.
    fn reserve_case_seqs(&self, n: u64) -> Result<u64, StoreError> {
        self.transact(|tx| {
            let first = next_seq(tx.meta, CASE_SEQ)?;
            tx.meta.insert(CASE_SEQ, &(first + n - 1).to_be_bytes())?;
            Ok(first)
        })
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::{Store, StoreError};

    #[test]
    fn a_corrupt_record_or_counter_is_named_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store.cases.insert("ESC-2026-000001", "{not json").unwrap();
        let e = store.case("ESC-2026-000001").unwrap_err();
        assert!(
            matches!(e, StoreError::Corrupt { tree: "cases", .. }),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with("corrupt record in cases: "),
            "{e}"
        );
        assert!(e.source().is_some(), "the JSON error is kept");

        store.meta.insert("case_seq", &[1u8, 2, 3]).unwrap();
        let e = store.reserve_case_id(2026).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt record in meta: counter case_seq is not 8 bytes"
        );
        store.meta.insert("case_seq", &7u64.to_be_bytes()).unwrap();
        assert_eq!(store.reserve_case_id(2026).unwrap(), "ESC-2026-000008");
    }
}
