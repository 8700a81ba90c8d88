//! The `expiry` tree: what the retention pass will act on, by time, kept
//! in step with the records in their transactions so that a pass reads
//! only what is due. Keys: a kind, the time (unix seconds, big-endian, so
//! that a range scan goes oldest first), what it names:
//!
//! - `s`, when an item was delivered, its id: an item whose bytes are kept;
//! - `m`, when a message was processed, its [`MessageKey`]: a `seen` entry;
//! - `r`, when a case was resolved, its id: a resolved case.
//!
//! Also what a mailbox reads of the pruning of `seen`: how far it has gone
//! (the horizon) and a mailbox's rescan after UIDVALIDITY changed (see
//! [`crate::rescan`]).
//!
//! [`MessageKey`]: crate::batch::MessageKey

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::batch::Seen;
use crate::outbox::OutboxItem;
use crate::record::{CaseRecord, Status};
use crate::rescan::Rescan;

use super::{Store, StoreError, Tx, TxResult, decode, encode, read_i64, seconds};

pub(super) const SENT: u8 = b's';
pub(super) const SEEN: u8 = b'm';
pub(super) const RESOLVED: u8 = b'r';

/// `meta`: the time before which `seen` entries may have been pruned.
pub(super) const SEEN_HORIZON: &str = "seen_horizon";

/// A `seen` entry as stored: what became of the message, and when it was
/// processed (absent in entries of earlier versions, which the first
/// retention pass stamps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SeenEntry {
    #[serde(flatten)]
    pub seen: Seen,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::clock::seconds::option"
    )]
    pub at: Option<Timestamp>,
}

/// An `expiry` key: `kind`, the time, `rest`.
pub(super) fn key(kind: u8, at: Timestamp, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + rest.len());
    k.push(kind);
    k.extend_from_slice(&(at.as_second().max(0) as u64).to_be_bytes());
    k.extend_from_slice(rest);
    k
}

/// The time and the rest of an `expiry` key.
pub(super) fn split(k: &[u8]) -> Option<(Timestamp, &[u8])> {
    let at = k.get(1..9)?;
    Some((seconds(read_i64(at)), k.get(9..)?))
}

/// When an item counts as delivered: its `sent_at`.
fn sent_at(item: &OutboxItem) -> Timestamp {
    item.sent_at.unwrap_or(item.queued_at)
}

/// A delivered item whose bytes are kept until `keep_sent` has passed;
/// true when its key is new.
pub(super) fn track_sent(tx: &Tx, item: &OutboxItem) -> TxResult<bool> {
    let k = key(SENT, sent_at(item), &item.id.to_be_bytes());
    Ok(tx.expiry.insert(k, &[] as &[u8])?.is_none())
}

pub(super) fn untrack_sent(tx: &Tx, item: &OutboxItem) -> TxResult<()> {
    tx.expiry
        .remove(key(SENT, sent_at(item), &item.id.to_be_bytes()))?;
    Ok(())
}

/// A `seen` entry written at `at`; true when its key is new.
pub(super) fn track_seen(tx: &Tx, message: &[u8], at: Timestamp) -> TxResult<bool> {
    Ok(tx
        .expiry
        .insert(key(SEEN, at, message), &[] as &[u8])?
        .is_none())
}

/// When a case was resolved, if it is: its `resolved_at` (the last change
/// for a record of an earlier version without one).
pub(super) fn resolved_at(record: &CaseRecord) -> Option<Timestamp> {
    (record.status == Status::Resolved).then(|| record.resolved_at.unwrap_or(record.updated_at))
}

/// Keeps a case's `r` key in step as it is written over `prev`; true when
/// a key was added that was not there.
pub(super) fn track_case(
    tx: &Tx,
    prev: Option<&CaseRecord>,
    record: &CaseRecord,
) -> TxResult<bool> {
    let before = prev.and_then(resolved_at);
    let now = resolved_at(record);
    if prev.is_some() && before == now {
        return Ok(false);
    }
    if let Some(at) = before {
        tx.expiry.remove(key(RESOLVED, at, record.id.as_bytes()))?;
    }
    match now {
        Some(at) => {
            let k = key(RESOLVED, at, record.id.as_bytes());
            Ok(tx.expiry.insert(k, &[] as &[u8])?.is_none())
        }
        None => Ok(false),
    }
}

impl Store {
    /// The time before which `seen` entries may have been pruned: a message
    /// processed earlier may no longer be recognised.
    pub fn seen_horizon(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.meta.get(SEEN_HORIZON)?.map(|v| seconds(read_i64(&v))))
    }

    /// Moves the horizon to `at` (never back), flushed: before any entry
    /// older than it is removed.
    pub(super) fn advance_seen_horizon(&self, at: Timestamp) -> Result<Timestamp, StoreError> {
        let _gate = self.write_gate();
        let at = self.seen_horizon()?.map_or(at, |h| h.max(at));
        self.meta
            .insert(SEEN_HORIZON, &at.as_second().to_be_bytes())?;
        self.meta.flush()?;
        Ok(at)
    }

    /// Records that `mailbox` is rescanned after UIDVALIDITY changed,
    /// flushed.
    pub fn set_rescan(&self, mailbox: &str, rescan: &Rescan) -> Result<(), StoreError> {
        let _gate = self.write_gate();
        self.meta.insert(rescan_key(mailbox), encode(rescan))?;
        self.meta.flush()?;
        Ok(())
    }

    /// `mailbox`'s rescan after UIDVALIDITY changed, if one is under way.
    pub fn rescan(&self, mailbox: &str) -> Result<Option<Rescan>, StoreError> {
        self.meta
            .get(rescan_key(mailbox))?
            .map(|v| decode("meta", &v))
            .transpose()
    }

    /// The rescan of `mailbox` went past every message it concerned.
    pub fn clear_rescan(&self, mailbox: &str) -> Result<(), StoreError> {
        let _gate = self.write_gate();
        self.meta.remove(rescan_key(mailbox))?;
        self.meta.flush()?;
        Ok(())
    }
}

pub(super) fn rescan_key(mailbox: &str) -> Vec<u8> {
    let mut k = b"rescan\0".to_vec();
    k.extend_from_slice(mailbox.as_bytes());
    k
}
