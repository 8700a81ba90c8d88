//! The outbox in the store: queueing messages (inside a batch's
//! transaction or alone), what is due, and each item's delivery (sent,
//! retried, undeliverable), with `outbox_pending` kept in step.

use jiff::Timestamp;

use crate::outbox::{Delivery, NewOutgoing, OutboxItem};

use super::{Store, StoreError, Tx, TxResult, abort, decode, encode, next_seq, read_i64, seconds};

pub(super) const OUTBOX_SEQ: &str = "outbox_seq";

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

    /// The bytes of an outbox item.
    pub fn outbox_raw(&self, id: u64) -> Result<Vec<u8>, StoreError> {
        self.outbox_raw
            .get(id.to_be_bytes())?
            .map(|v| v.to_vec())
            .ok_or(StoreError::NoSuchItem(id))
    }

    /// Changes an item, keeping `outbox_pending` in step, in one
    /// transaction, flushed.
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
                    .insert(&key, &item.next_attempt_at.as_second().to_be_bytes())?;
            } else {
                tx.outbox_pending.remove(&key)?;
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
        })
    }

    /// A transient failure: try again at `retry_at`.
    pub fn mark_retry(
        &self,
        id: u64,
        error: &str,
        retry_at: Timestamp,
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
    tx.outbox_pending
        .insert(&key, &due.as_second().to_be_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use crate::outbox::Delivery;

    use super::super::fixtures::{outgoing, ts};
    use super::super::{Store, StoreError};

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
        let retried = store.mark_retry(2, "451 try later", ts(80)).unwrap();
        assert_eq!((retried.attempts, retried.next_attempt_at), (1, ts(80)));
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
