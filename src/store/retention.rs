//! The retention pass ([`Store::retention_pass`]), what keeps the database
//! bounded: the bytes of delivered mail dropped after `keep_sent` (the
//! item stays), `seen` entries pruned after `keep_seen` (the horizon moved
//! first, see [`crate::rescan`]), and resolved cases appended to the
//! archive after `keep_resolved` and removed with everything that names
//! them. It works in batches of a few hundred records, a transaction
//! each, reading only what is due (the `expiry` tree); the first pass over
//! a database of an earlier version indexes its records once.

use std::ops::Bound;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;

use crate::outbox::{Delivery, OutboxItem};
use crate::record::CaseRecord;

use super::archive::{self, ARCHIVE_FORMAT, ArchivedCase};
use super::expiry::{self, RESOLVED, SEEN, SENT, SeenEntry};
use super::indexes::unindex_case;
use super::originals::{self, Dropped};
use super::outbox::forget_item;
use super::{Store, StoreError, Tx, TxResult, abort, decode, encode};

const DAY: u64 = 86_400;

/// `meta`: set once the records of an earlier version are indexed.
pub(super) const INDEXED: &str = "expiry_indexed";

/// What to keep, and for how long (`[retention]` in mailtriage.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The bytes of delivered mail are dropped this long after delivery.
    pub keep_sent: Duration,
    /// Resolved cases are archived and removed this long after resolution.
    pub keep_resolved: Duration,
    /// `seen` entries are pruned this long after their message was
    /// processed.
    pub keep_seen: Duration,
    /// The archive file (JSON Lines).
    pub archive: PathBuf,
    /// Records per transaction.
    pub batch: usize,
}

impl Retention {
    pub const KEEP_SENT: Duration = Duration::from_secs(30 * DAY);
    pub const KEEP_RESOLVED: Duration = Duration::from_secs(400 * DAY);
    pub const KEEP_SEEN: Duration = Duration::from_secs(90 * DAY);
    pub const BATCH: usize = 200;

    /// The defaults, archiving to `archive`.
    pub fn defaults(archive: PathBuf) -> Retention {
        Retention {
            keep_sent: Self::KEEP_SENT,
            keep_resolved: Self::KEEP_RESOLVED,
            keep_seen: Self::KEEP_SEEN,
            archive,
            batch: Self::BATCH,
        }
    }
}

/// What a retention pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Delivered items whose bytes were dropped.
    pub sent_dropped: usize,
    /// `seen` entries pruned.
    pub seen_pruned: usize,
    /// Resolved cases appended to the archive and removed.
    pub cases_archived: usize,
    /// Resolved long enough, but with mail still pending (or changed while
    /// archived): left for a later pass.
    pub cases_waiting: usize,
    /// Outbox items removed with their cases.
    pub items_removed: usize,
    /// Originals removed with the last item that referred to them.
    pub originals_removed: usize,
    /// Records of an earlier version indexed for retention (once).
    pub indexed: usize,
    /// Transactions written.
    pub batches: usize,
}

impl RetentionReport {
    /// Whether the pass changed anything.
    pub fn is_empty(&self) -> bool {
        *self
            == RetentionReport {
                batches: self.batches,
                ..RetentionReport::default()
            }
    }
}

impl Store {
    /// Runs the retention pass at `now`, without a lock (see
    /// [`Store::retention_pass_with`]).
    pub fn retention_pass(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<RetentionReport, StoreError> {
        self.retention_pass_with(retention, now, || ())
    }

    /// Runs the retention pass at `now`. `lock` is taken for each batch
    /// that reads and removes cases (the daemon's case lock, so that a case
    /// is not archived while a message updates it), never for the whole
    /// pass. Each step is durable as it goes: a failure (the archive cannot
    /// be written) leaves what was done done, and nothing half done.
    pub fn retention_pass_with<G>(
        &self,
        retention: &Retention,
        now: Timestamp,
        lock: impl Fn() -> G,
    ) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        let n = retention.batch.max(1);
        self.index_earlier_version(now, n, &lock, &mut report)?;
        self.drop_sent(
            crate::clock::before(now, retention.keep_sent),
            n,
            &mut report,
        )?;
        self.prune_seen(
            crate::clock::before(now, retention.keep_seen),
            n,
            &mut report,
        )?;
        self.archive_resolved(
            crate::clock::before(now, retention.keep_resolved),
            now,
            retention,
            &lock,
            &mut report,
        )?;
        Ok(report)
    }

    /// Up to `n` `expiry` keys of `kind` due before `cutoff`, after `after`.
    fn due(
        &self,
        kind: u8,
        cutoff: Timestamp,
        after: Option<&[u8]>,
        n: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let end = expiry::key(kind, cutoff, &[]);
        let start = match after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(vec![kind]),
        };
        if matches!(&start, Bound::Excluded(a) | Bound::Included(a) if *a >= end) {
            return Ok(Vec::new());
        }
        self.expiry
            .range::<Vec<u8>, _>((start, Bound::Excluded(end)))
            .take(n)
            .map(|r| Ok(r?.0.to_vec()))
            .collect()
    }

    /// Drops the bytes of items delivered before `cutoff`.
    fn drop_sent(
        &self,
        cutoff: Timestamp,
        n: usize,
        report: &mut RetentionReport,
    ) -> Result<(), StoreError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let keys = self.due(SENT, cutoff, after.as_deref(), n)?;
            let Some(last) = keys.last().cloned() else {
                return Ok(());
            };
            let (bytes, originals) = self.transact(|tx| {
                let (mut bytes, mut originals) = (0, 0);
                for k in &keys {
                    tx.expiry.remove(k.as_slice())?;
                    let id = expiry::split(k)
                        .and_then(|(_, rest)| rest.try_into().ok())
                        .map(u64::from_be_bytes);
                    if let Some(id) = id {
                        let d = originals::drop_raw(tx, id)?;
                        bytes += usize::from(d.bytes);
                        originals += usize::from(d.original);
                    }
                }
                Ok((bytes, originals))
            })?;
            report.sent_dropped += bytes;
            report.originals_removed += originals;
            report.batches += 1;
            after = Some(last);
        }
    }

    /// Prunes the `seen` entries of messages processed before `cutoff`,
    /// after moving the horizon there.
    fn prune_seen(
        &self,
        cutoff: Timestamp,
        n: usize,
        report: &mut RetentionReport,
    ) -> Result<(), StoreError> {
        self.advance_seen_horizon(cutoff)?;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let keys = self.due(SEEN, cutoff, after.as_deref(), n)?;
            let Some(last) = keys.last().cloned() else {
                return Ok(());
            };
            let pruned = self.transact(|tx| {
                let mut pruned = 0;
                for k in &keys {
                    tx.expiry.remove(k.as_slice())?;
                    if let Some((_, message)) = expiry::split(k)
                        && tx.seen.remove(message)?.is_some()
                    {
                        pruned += 1;
                    }
                }
                Ok(pruned)
            })?;
            report.seen_pruned += pruned;
            report.batches += 1;
            after = Some(last);
        }
    }

    /// Archives and removes the cases resolved before `cutoff` whose mail
    /// is all delivered or given up.
    fn archive_resolved<G>(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
        retention: &Retention,
        lock: &impl Fn() -> G,
        report: &mut RetentionReport,
    ) -> Result<(), StoreError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let keys = self.due(RESOLVED, cutoff, after.as_deref(), retention.batch.max(1))?;
            let Some(last) = keys.last().cloned() else {
                return Ok(());
            };
            after = Some(last);
            let _guard = lock();
            let mut stale = Vec::new();
            let mut archived = Vec::new();
            for k in keys {
                let Some((at, id)) = expiry::split(&k) else {
                    stale.push(k);
                    continue;
                };
                let id = String::from_utf8_lossy(id).into_owned();
                let Some(case) = self.case(&id)? else {
                    stale.push(k);
                    continue;
                };
                if expiry::resolved_at(&case) != Some(at) {
                    // Reopened (or resolved again) since: its own key says when.
                    stale.push(k);
                    continue;
                }
                let mut outbox = Vec::with_capacity(case.outbox.len());
                for &item in &case.outbox {
                    outbox.extend(self.outbox_item(item)?);
                }
                if outbox.iter().any(|i| i.state == Delivery::Pending) {
                    report.cases_waiting += 1;
                    continue;
                }
                archived.push(ArchivedCase {
                    archive: ARCHIVE_FORMAT,
                    case_id: id,
                    archived_at: now,
                    case,
                    outbox,
                });
            }
            // On disk before anything is removed.
            archive::append(&retention.archive, &archived)?;
            let (removed, dropped) = self.transact(|tx| {
                for k in &stale {
                    tx.expiry.remove(k.as_slice())?;
                }
                let mut removed = Vec::new();
                let mut dropped = Vec::new();
                for a in &archived {
                    if let Some(d) = remove_case(tx, &a.case, &a.outbox)? {
                        removed.push(a.case_id.clone());
                        dropped.extend(d);
                    }
                }
                Ok((removed, dropped))
            })?;
            report.cases_archived += removed.len();
            report.cases_waiting += archived.len() - removed.len();
            report.items_removed += dropped.len();
            report.originals_removed += dropped.iter().filter(|d| d.original).count();
            report.batches += 1;
        }
    }

    /// Indexes, once, the records written without their `expiry` keys (by
    /// an earlier version, or imported): `seen` entries (one without a time
    /// stamped as processed `now`, which keeps it `keep_seen` from now:
    /// never less than it needs), delivered items with bytes, resolved
    /// cases.
    fn index_earlier_version<G>(
        &self,
        now: Timestamp,
        n: usize,
        lock: &impl Fn() -> G,
        report: &mut RetentionReport,
    ) -> Result<(), StoreError> {
        if self.meta.contains_key(INDEXED)? {
            return Ok(());
        }
        self.each_batch(&self.seen, n, &|| (), report, |tx, k, v| {
            let entry: SeenEntry = decode("seen", v).map_err(abort)?;
            if let Some(at) = entry.at {
                // Written with its time (by this version, or imported):
                // its key, if it lacks one.
                return expiry::track_seen(tx, k, at);
            }
            let stamped = SeenEntry {
                at: Some(now),
                ..entry
            };
            tx.seen.insert(k, encode(&stamped))?;
            expiry::track_seen(tx, k, now)?;
            Ok(true)
        })?;
        self.each_batch(&self.outbox, n, &|| (), report, |tx, k, v| {
            let item: OutboxItem = decode("outbox", v).map_err(abort)?;
            if item.state != Delivery::Sent || tx.outbox_raw.get(k)?.is_none() {
                return Ok(false);
            }
            expiry::track_sent(tx, &item)
        })?;
        self.each_batch(&self.cases, n, lock, report, |tx, _, v| {
            let case: CaseRecord = decode("cases", v).map_err(abort)?;
            expiry::track_case(tx, None, &case)
        })?;
        let _gate = self.write_gate();
        self.meta.insert(INDEXED, &[1u8])?;
        self.meta.flush()?;
        Ok(())
    }

    /// Runs `f` over every record of `tree`, `n` records a transaction,
    /// each read and written under `lock`; counts those it says it
    /// indexed.
    fn each_batch<G>(
        &self,
        tree: &sled::Tree,
        n: usize,
        lock: &impl Fn() -> G,
        report: &mut RetentionReport,
        f: impl Fn(&Tx, &[u8], &[u8]) -> TxResult<bool>,
    ) -> Result<(), StoreError> {
        let mut after: Option<sled::IVec> = None;
        loop {
            let _guard = lock();
            let start = after
                .as_ref()
                .map_or(Bound::Unbounded, |a| Bound::Excluded(a.clone()));
            let records = tree
                .range::<sled::IVec, _>((start, Bound::Unbounded))
                .take(n)
                .collect::<Result<Vec<_>, _>>()?;
            let Some((last, _)) = records.last().cloned() else {
                return Ok(());
            };
            let indexed = self.transact(|tx| {
                let mut indexed = 0;
                for (k, v) in &records {
                    indexed += usize::from(f(tx, k, v)?);
                }
                Ok(indexed)
            })?;
            report.indexed += indexed;
            report.batches += 1;
            after = Some(last);
        }
    }
}

/// Removes an archived case inside a transaction, if it is still as it
/// was archived: its record, every index entry that names it, its `r` key,
/// and its outbox items with their bytes. `None` when it changed.
fn remove_case(
    tx: &Tx,
    case: &CaseRecord,
    outbox: &[OutboxItem],
) -> TxResult<Option<Vec<Dropped>>> {
    let now: Option<CaseRecord> = match tx.cases.get(case.id.as_bytes())? {
        Some(v) => Some(decode("cases", &v).map_err(abort)?),
        None => None,
    };
    if now.as_ref() != Some(case) {
        return Ok(None);
    }
    for item in outbox {
        let stored: Option<OutboxItem> = match tx.outbox.get(item.id.to_be_bytes())? {
            Some(v) => Some(decode("outbox", &v).map_err(abort)?),
            None => None,
        };
        if stored.as_ref() != Some(item) {
            return Ok(None);
        }
    }
    tx.cases.remove(case.id.as_bytes())?;
    let sent: Vec<String> = outbox.iter().map(|i| i.message_id.clone()).collect();
    unindex_case(tx, case, &sent)?;
    if let Some(at) = expiry::resolved_at(case) {
        tx.expiry
            .remove(expiry::key(RESOLVED, at, case.id.as_bytes()))?;
    }
    let mut dropped = Vec::with_capacity(outbox.len());
    for item in outbox {
        dropped.push(forget_item(tx, item)?);
    }
    Ok(Some(dropped))
}

#[cfg(test)]
mod tests;
