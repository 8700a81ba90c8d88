//! The outbox in the store: queueing messages (inside a batch's
//! transaction or alone), what is due, and each item's delivery (sent,
//! retried, undeliverable), with `outbox_pending` and the undeliverable
//! index (`u` keys of `index`) kept in step; what an operator does by hand
//! (retry, drop), recorded in the item's and its case's history; and the
//! queue counted for `status`.

use jiff::Timestamp;

use crate::outbox::{Delivery, NewOutgoing, OutboxItem, QueueState};
use crate::record::{CaseRecord, HistoryEntry};

use super::originals::{self, Dropped};
use super::{
    Store, StoreError, Tx, TxResult, abort, decode, encode, expiry, next_seq, read_i64, seconds,
};

pub(super) const OUTBOX_SEQ: &str = "outbox_seq";
/// Set in `meta` once the undeliverable index has been built from the
/// items of a database older than it.
pub(super) const UNDELIVERABLE_INDEXED: &str = "outbox_undeliverable_indexed";

/// `index` key of an undeliverable item.
pub(super) fn undeliverable_key(id: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = b'u';
    k[2..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The queue at a glance, for `status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxSummary {
    /// Not tried yet (due, or held for business hours).
    pub pending: usize,
    pub retrying: usize,
    pub undeliverable: usize,
    /// The retrying item failing longest (by `failing_since`).
    pub oldest_retrying: Option<OutboxItem>,
}

/// What an operator asks of an item (`mailtriage outbox retry|drop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandChange {
    /// Send it now, with a fresh count of attempts.
    Retry,
    /// Never send it; keep it as dropped.
    Drop,
}

/// What [`Store::change_item`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemChanged {
    /// False when the item already was where the change would put it, or
    /// was sent: nothing was written.
    pub changed: bool,
    /// Where it stood before.
    pub before: QueueState,
    /// The item as it is now.
    pub item: OutboxItem,
}

impl Store {
    /// One outbox item, without its bytes.
    pub fn outbox_item(&self, id: u64) -> Result<Option<OutboxItem>, StoreError> {
        self.outbox
            .get(id.to_be_bytes())?
            .map(|v| decode("outbox", &v))
            .transpose()
    }

    /// Pending outbox items due at `now`, oldest first, at most `limit`.
    pub fn outbox_due(&self, now: Timestamp, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        let mut due = Vec::new();
        for r in self.outbox_pending.iter() {
            let (k, v) = r?;
            if read_i64(&v) > now.as_second() {
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
    pub fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let mut next: Option<i64> = None;
        for r in self.outbox_pending.iter() {
            let (_, v) = r?;
            let at = read_i64(&v);
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        Ok(next.map(seconds))
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

    /// Changes an item, keeping the indexes in step, in one transaction,
    /// flushed.
    fn update_item(&self, id: u64, f: impl Fn(&mut OutboxItem)) -> Result<OutboxItem, StoreError> {
        self.transact(|tx| {
            let mut item = read_item(tx, id)?;
            f(&mut item);
            write_item(tx, &item)?;
            if item.state == Delivery::Sent {
                expiry::track_sent(tx, &item)?;
            }
            Ok(item)
        })
    }

    /// The server accepted the item.
    pub fn mark_sent(&self, id: u64, now: Timestamp) -> Result<OutboxItem, StoreError> {
        self.update_item(id, |i| {
            i.state = Delivery::Sent;
            i.attempts += 1;
            i.sent_at = Some(now);
            i.last_error = None;
            i.failing_since = None;
        })
    }

    /// A transient failure at `now`: try again at `retry_at`. An item
    /// dropped by hand while it was being sent stays dropped.
    pub fn mark_retry(
        &self,
        id: u64,
        error: &str,
        now: Timestamp,
        retry_at: Timestamp,
    ) -> Result<OutboxItem, StoreError> {
        self.update_item(id, |i| {
            // Items stored before `failing_since` existed count from when
            // they were queued, as they did then.
            let first = if i.attempts == 0 { now } else { i.queued_at };
            i.failing_since.get_or_insert(first);
            i.attempts += 1;
            i.next_attempt_at = retry_at;
            i.last_error = Some(error.to_string());
        })
    }

    /// A permanent failure: kept, with its error, for a human. An item
    /// dropped by hand while it was being sent stays dropped.
    pub fn mark_undeliverable(&self, id: u64, error: &str) -> Result<OutboxItem, StoreError> {
        self.update_item(id, |i| {
            i.attempts += 1;
            if i.state == Delivery::Pending {
                i.state = Delivery::Undeliverable;
            }
            i.last_error = Some(error.to_string());
        })
    }

    /// Retries or drops an item by hand, at `now`, by `by`: the item, its
    /// history and its case's history (when it has a case) written in one
    /// transaction, flushed. A retry makes it pending and due now, with
    /// its attempts and failing time counted afresh (its last error is
    /// kept until it is sent); it applies to any item not sent, a held or
    /// retrying one included (it goes now). A drop applies to any item
    /// neither sent nor dropped. Anything else changes nothing.
    ///
    /// The case is read and written inside the transaction: callers that
    /// run beside the daemon hold its case lock.
    pub fn change_item(
        &self,
        id: u64,
        change: HandChange,
        by: &str,
        now: Timestamp,
    ) -> Result<ItemChanged, StoreError> {
        self.transact(|tx| {
            let mut item = read_item(tx, id)?;
            let before = item.queue_state();
            let applies = match change {
                HandChange::Retry => before != QueueState::Sent,
                HandChange::Drop => !matches!(before, QueueState::Sent | QueueState::Dropped),
            };
            if !applies {
                return Ok(ItemChanged {
                    changed: false,
                    before,
                    item,
                });
            }
            match change {
                HandChange::Retry => {
                    item.state = Delivery::Pending;
                    item.attempts = 0;
                    item.next_attempt_at = now;
                    item.failing_since = None;
                }
                HandChange::Drop => item.state = Delivery::Dropped,
            }
            let done = match change {
                HandChange::Retry => "retried",
                HandChange::Drop => "dropped",
            };
            let words = format!("outbox {}: {done} (was {before})", item.label());
            item.history.push(HistoryEntry {
                at: now,
                by: by.to_string(),
                message_id: None,
                changes: vec![words.clone()],
            });
            write_item(tx, &item)?;
            if let Some(case_id) = &item.case_id
                && let Some(v) = tx.cases.get(case_id.as_bytes())?
            {
                let mut case: CaseRecord = decode("cases", &v).map_err(abort)?;
                case.history.push(HistoryEntry {
                    at: now,
                    by: by.to_string(),
                    message_id: None,
                    changes: vec![words.clone()],
                });
                case.updated_at = now;
                tx.cases.insert(case_id.as_bytes(), encode(&case))?;
            }
            Ok(ItemChanged {
                changed: true,
                before,
                item,
            })
        })
    }

    /// The ids of the undeliverable items, oldest first.
    pub fn undeliverable_ids(&self) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for r in self.index.scan_prefix([b'u', 0]) {
            let (k, _) = r?;
            if let Some(id) = k.get(2..10).and_then(|b| b.try_into().ok()) {
                ids.push(u64::from_be_bytes(id));
            }
        }
        Ok(ids)
    }

    /// The items in `states`, oldest first. Pending, retrying and
    /// undeliverable items are found through their indexes; sent and
    /// dropped ones by reading the whole outbox.
    pub fn outbox_in(&self, states: &[QueueState]) -> Result<Vec<OutboxItem>, StoreError> {
        let wants = |s: QueueState| states.contains(&s);
        if wants(QueueState::Sent) || wants(QueueState::Dropped) {
            return Ok(self
                .outbox_items()?
                .into_iter()
                .filter(|i| wants(i.queue_state()))
                .collect());
        }
        let mut ids = Vec::new();
        if wants(QueueState::Pending) || wants(QueueState::Retrying) {
            for r in self.outbox_pending.iter() {
                let (k, _) = r?;
                if let Ok(b) = k.as_ref().try_into() {
                    ids.push(u64::from_be_bytes(b));
                }
            }
        }
        if wants(QueueState::Undeliverable) {
            ids.extend(self.undeliverable_ids()?);
        }
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(item) = self.outbox_item(id)?
                && wants(item.queue_state())
            {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// The queue counted: pending and retrying items (the pending index),
    /// undeliverable ones (their index), and the retrying item failing
    /// longest. Reads no delivered history.
    pub fn outbox_summary(&self) -> Result<OutboxSummary, StoreError> {
        let mut sum = OutboxSummary {
            undeliverable: self.undeliverable_ids()?.len(),
            ..OutboxSummary::default()
        };
        for item in self.outbox_in(&[QueueState::Pending, QueueState::Retrying])? {
            if item.queue_state() == QueueState::Pending {
                sum.pending += 1;
                continue;
            }
            sum.retrying += 1;
            let since = |i: &OutboxItem| i.failing_since.unwrap_or(i.queued_at);
            if sum
                .oldest_retrying
                .as_ref()
                .is_none_or(|o| since(&item) < since(o))
            {
                sum.oldest_retrying = Some(item);
            }
        }
        Ok(sum)
    }

    /// Builds the undeliverable index once, from the items of a database
    /// written before it existed. An empty outbox is not marked done, so
    /// that items written into a new database by other means than this
    /// module are indexed at the next open (an import calls it itself
    /// once its items are written); the first item [`queue`]d into a
    /// database marks it, since every item queued keeps the index (else a
    /// database filled since it was new would be read whole at its first
    /// restart: on a year's outbox, seconds and over 100 MB).
    pub(super) fn index_undeliverable_once(&self) -> Result<(), StoreError> {
        if self.meta.get(UNDELIVERABLE_INDEXED)?.is_some() || self.outbox.is_empty() {
            return Ok(());
        }
        let _gate = self.write_gate();
        for item in self.outbox_items()? {
            if item.state == Delivery::Undeliverable {
                self.index
                    .insert(undeliverable_key(item.id), &[] as &[u8])?;
            }
        }
        self.meta.insert(UNDELIVERABLE_INDEXED, &[1u8] as &[u8])?;
        self.db.flush()?;
        Ok(())
    }

    /// Queues messages that belong to no batch (health alerts), in one
    /// transaction, flushed.
    pub fn enqueue(
        &self,
        messages: &[NewOutgoing],
        now: Timestamp,
    ) -> Result<Vec<u64>, StoreError> {
        self.transact(|tx| {
            messages
                .iter()
                .map(|out| queue(tx, out, now))
                .collect::<TxResult<Vec<u64>>>()
        })
    }
}

/// Adds one message to the outbox inside a transaction: its record, its
/// bytes, and its entry in the pending index.
pub(super) fn queue(tx: &Tx, out: &NewOutgoing, now: Timestamp) -> TxResult<u64> {
    let id = next_seq(tx.meta, OUTBOX_SEQ)?;
    if id == 1 {
        // A new outbox: its index is kept from the first item on.
        tx.meta.insert(UNDELIVERABLE_INDEXED, &[1u8] as &[u8])?;
    }
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
        failing_since: None,
        history: Vec::new(),
    };
    let key = id.to_be_bytes();
    tx.outbox.insert(&key, encode(&item))?;
    originals::put_raw(tx, id, out)?;
    tx.outbox_pending
        .insert(&key, &due.as_second().to_be_bytes())?;
    Ok(id)
}

/// Removes an item inside a transaction: its record, its bytes (and its
/// hold on its original), and its entries in `outbox_pending` and
/// `expiry`.
pub(super) fn forget_item(tx: &Tx, item: &OutboxItem) -> TxResult<Dropped> {
    let key = item.id.to_be_bytes();
    tx.outbox.remove(&key)?;
    tx.outbox_pending.remove(&key)?;
    tx.index.remove(&undeliverable_key(item.id))?;
    expiry::untrack_sent(tx, item)?;
    originals::drop_raw(tx, item.id)
}

fn read_item(tx: &Tx, id: u64) -> TxResult<OutboxItem> {
    let Some(v) = tx.outbox.get(id.to_be_bytes())? else {
        return Err(abort(StoreError::NoSuchItem(id)));
    };
    decode("outbox", &v).map_err(abort)
}

/// Writes an item with its entries in the pending and undeliverable
/// indexes as its state says.
fn write_item(tx: &Tx, item: &OutboxItem) -> TxResult<()> {
    let key = item.id.to_be_bytes();
    tx.outbox.insert(&key, encode(item))?;
    if item.state == Delivery::Pending {
        tx.outbox_pending
            .insert(&key, &item.next_attempt_at.as_second().to_be_bytes())?;
    } else {
        tx.outbox_pending.remove(&key)?;
    }
    let held = undeliverable_key(item.id);
    if item.state == Delivery::Undeliverable {
        tx.index.insert(&held, &[] as &[u8])?;
    } else {
        tx.index.remove(&held)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::outbox::{Delivery, QueueState};

    use super::super::fixtures::{batch, item, outgoing, reopen, ts};
    use super::super::{Store, StoreError};
    use super::{HandChange, undeliverable_key};

    /// An item in each state of the queue: 1 pending, 2 retrying, 3 sent,
    /// 4 undeliverable, 5 dropped, 6 held for later; all of case
    /// `ESC-2026-000001`, which exists.
    fn one_of_each(store: &Store) -> String {
        let mut it = item(store, 1, 6);
        if let crate::batch::BatchOutcome::Case { outgoing, .. } = &mut it.outcome {
            outgoing[5].not_before = Some(ts(500));
        }
        let case = match &it.outcome {
            crate::batch::BatchOutcome::Case { record, .. } => record.id.clone(),
            _ => unreachable!(),
        };
        store.commit(&batch(vec![it], 100, vec![])).unwrap();
        store.mark_retry(2, "451 later", ts(110), ts(200)).unwrap();
        store.mark_retry(2, "451 still", ts(150), ts(300)).unwrap();
        store.mark_sent(3, ts(101)).unwrap();
        store.mark_undeliverable(4, "550 no such user").unwrap();
        store
            .change_item(5, HandChange::Drop, "cli", ts(102))
            .unwrap();
        case
    }

    #[test]
    fn the_queue_is_counted_and_listed_by_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        one_of_each(&store);
        let sum = store.outbox_summary().unwrap();
        assert_eq!((sum.pending, sum.retrying, sum.undeliverable), (2, 1, 1));
        let oldest = sum.oldest_retrying.unwrap();
        assert_eq!(oldest.id, 2);
        assert_eq!(oldest.failing_since, Some(ts(110)), "the first failure");
        assert_eq!(oldest.last_error.as_deref(), Some("451 still"));
        let ids = |states: &[QueueState]| -> Vec<u64> {
            store
                .outbox_in(states)
                .unwrap()
                .iter()
                .map(|i| i.id)
                .collect()
        };
        let cases: &[(&[QueueState], &[u64])] = &[
            (&[QueueState::Pending], &[1, 6]),
            (&[QueueState::Retrying], &[2]),
            (&[QueueState::Sent], &[3]),
            (&[QueueState::Undeliverable], &[4]),
            (&[QueueState::Dropped], &[5]),
            (&[QueueState::Undeliverable, QueueState::Retrying], &[2, 4]),
            (&QueueState::ALL, &[1, 2, 3, 4, 5, 6]),
            (&[], &[]),
        ];
        for (states, want) in cases {
            assert_eq!(ids(states), *want, "{states:?}");
        }
        assert_eq!(store.undeliverable_ids().unwrap(), [4]);
    }

    #[test]
    fn retry_and_drop_by_hand_are_recorded_where_they_apply() {
        use QueueState::*;
        // (item, change, changed, state after)
        let table: &[(u64, HandChange, bool, QueueState)] = &[
            (1, HandChange::Retry, true, Pending),
            (2, HandChange::Retry, true, Pending),
            (3, HandChange::Retry, false, Sent),
            (4, HandChange::Retry, true, Pending),
            (5, HandChange::Retry, true, Pending),
            (6, HandChange::Retry, true, Pending),
            (1, HandChange::Drop, true, Dropped),
            (2, HandChange::Drop, true, Dropped),
            (3, HandChange::Drop, false, Sent),
            (4, HandChange::Drop, true, Dropped),
            (5, HandChange::Drop, false, Dropped),
            (6, HandChange::Drop, true, Dropped),
        ];
        for &(id, change, changed, after) in table {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let case_id = one_of_each(&store);
            let before = store.outbox_item(id).unwrap().unwrap();
            let history_before = store.case(&case_id).unwrap().unwrap().history.len();
            let r = store.change_item(id, change, "cli", ts(1000)).unwrap();
            let what = format!("#{id} {change:?}");
            assert_eq!(r.changed, changed, "{what}");
            assert_eq!(r.before, before.queue_state(), "{what}");
            assert_eq!(r.item.queue_state(), after, "{what}");
            let stored = store.outbox_item(id).unwrap().unwrap();
            assert_eq!(stored, r.item, "{what}: as stored");
            let case = store.case(&case_id).unwrap().unwrap();
            if !changed {
                assert_eq!(stored, before, "{what}: untouched");
                assert_eq!(case.history.len(), history_before, "{what}");
                continue;
            }
            let done = match change {
                HandChange::Retry => "retried",
                HandChange::Drop => "dropped",
            };
            let words = format!(
                "outbox #{id} reply to a@example.com: {done} (was {})",
                before.queue_state()
            );
            let last = stored.history.last().unwrap();
            assert_eq!((last.by.as_str(), last.at), ("cli", ts(1000)), "{what}");
            assert_eq!(last.changes, std::slice::from_ref(&words), "{what}");
            let entry = case.history.last().unwrap();
            assert_eq!(entry.changes, [words], "{what}: in the case's history");
            assert_eq!(case.updated_at, ts(1000), "{what}");
            let due: Vec<u64> = store
                .outbox_due(ts(1000), 10)
                .unwrap()
                .iter()
                .map(|i| i.id)
                .collect();
            assert_eq!(due.contains(&id), after == Pending, "{what}: due {due:?}");
            if change == HandChange::Retry {
                assert_eq!(
                    (
                        stored.attempts,
                        stored.next_attempt_at,
                        stored.failing_since
                    ),
                    (0, ts(1000), None),
                    "{what}: counted afresh"
                );
            }
            assert_eq!(
                store.undeliverable_ids().unwrap().contains(&4),
                id != 4,
                "{what}: the undeliverable index follows"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(
            store.change_item(9, HandChange::Retry, "cli", ts(1)),
            Err(StoreError::NoSuchItem(9))
        ));
    }

    #[test]
    fn a_send_outcome_does_not_undo_a_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store
            .enqueue(&outgoing("ESC-2026-000009", 2), ts(50))
            .unwrap();
        for id in [1, 2] {
            store
                .change_item(id, HandChange::Drop, "cli", ts(51))
                .unwrap();
        }
        let failed = store.mark_undeliverable(1, "550 no").unwrap();
        assert_eq!(failed.state, Delivery::Dropped);
        let retried = store.mark_retry(2, "451 later", ts(52), ts(60)).unwrap();
        assert_eq!(retried.state, Delivery::Dropped);
        assert!(store.outbox_due(ts(100), 10).unwrap().is_empty());
        assert!(store.undeliverable_ids().unwrap().is_empty());
    }

    #[test]
    fn a_new_database_needs_no_undeliverable_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store
            .enqueue(&outgoing("ESC-2026-000009", 2), ts(50))
            .unwrap();
        assert!(
            store
                .meta
                .get(super::UNDELIVERABLE_INDEXED)
                .unwrap()
                .is_some()
        );
        store.mark_undeliverable(2, "550 no").unwrap();
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(store.undeliverable_ids().unwrap(), [2]);
    }

    #[test]
    fn a_database_from_before_the_undeliverable_index_gets_it_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store
                .enqueue(&outgoing("ESC-2026-000009", 3), ts(50))
                .unwrap();
            store.mark_undeliverable(2, "550 no").unwrap();
            // As an older version left it: no index entry, no mark.
            store.index.remove(undeliverable_key(2)).unwrap();
            store.meta.remove(super::UNDELIVERABLE_INDEXED).unwrap();
            assert!(store.undeliverable_ids().unwrap().is_empty());
            store.flush().unwrap();
        }
        let store = reopen(dir.path());
        assert_eq!(store.undeliverable_ids().unwrap(), [2]);
        assert_eq!(store.outbox_summary().unwrap().undeliverable, 1);
    }

    #[test]
    fn outbox_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let ids = store
            .enqueue(&outgoing("ESC-2026-000009", 3), ts(50))
            .unwrap();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(store.outbox_due(ts(49), 10).unwrap().len(), 0);
        assert_eq!(store.outbox_due(ts(50), 2).unwrap().len(), 2);
        store.mark_sent(1, ts(51)).unwrap();
        let retried = store
            .mark_retry(2, "451 try later", ts(50), ts(80))
            .unwrap();
        assert_eq!((retried.attempts, retried.next_attempt_at), (1, ts(80)));
        assert_eq!(retried.failing_since, Some(ts(50)));
        store.mark_undeliverable(3, "550 no such user").unwrap();
        assert!(store.outbox_due(ts(79), 10).unwrap().is_empty());
        let due: Vec<u64> = store
            .outbox_due(ts(80), 10)
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(due, [2]);
        assert_eq!(store.next_due().unwrap(), Some(ts(80)));
        store.mark_sent(2, ts(81)).unwrap();
        assert_eq!(store.next_due().unwrap(), None);
        let items = store.outbox_items().unwrap();
        assert_eq!(items[0].state, Delivery::Sent);
        assert_eq!(items[2].state, Delivery::Undeliverable);
        assert_eq!(items[2].last_error.as_deref(), Some("550 no such user"));
        assert!(matches!(
            store.mark_sent(99, ts(1)),
            Err(StoreError::NoSuchItem(99))
        ));
    }
}
