//! A batch written in one transaction ([`Store::commit`]), and the cases,
//! seen messages, cursors and pending server actions it writes; the case
//! writes outside a batch (a command, an overdue case, a digest's mark).

use jiff::Timestamp;

use crate::batch::{Batch, BatchOutcome, Cursor, LastMessage, MessageKey, Pending, Seen};
use crate::outbox::NewOutgoing;
use crate::record::{CaseRecord, thread_key};

use super::expiry::{self, SeenEntry};
use super::indexes::{
    count_reply, digest_key, index_case, index_thread, learn_vendor, mark_vendor_reported,
};
use super::outbox::queue;
use super::{Store, StoreError, Tx, TxResult, abort, decode, encode};

/// What [`Store::commit`] did with each item, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    Stored,
    /// The message was already in `seen` (from an earlier run, or twice in
    /// this batch): nothing was written for it.
    AlreadySeen(Seen),
}

impl Store {
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
        let named = self.complaints_under_new_aliases(batch)?;
        self.transact(|tx| {
            let mut committed = Vec::with_capacity(batch.items.len());
            let mut by_name = Vec::new();
            let mut last: Option<LastMessage> = None;
            for item in &batch.items {
                if let Some(prev) = tx.seen.get(item.key.bytes())? {
                    let prev: Seen = decode("seen", &prev).map_err(abort)?;
                    last = Some(LastMessage {
                        uid: item.uid,
                        at: batch.now,
                        seen: prev.clone(),
                    });
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
                            count_reply(tx, sender, batch.now.as_second())?;
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
                let entry = SeenEntry {
                    seen: entry,
                    at: Some(batch.now),
                };
                tx.seen.insert(item.key.bytes(), encode(&entry))?;
                expiry::track_seen(tx, item.key.bytes(), batch.now)?;
                last = Some(LastMessage {
                    uid: item.uid,
                    at: batch.now,
                    seen: entry.seen,
                });
                committed.push(Committed::Stored);
            }
            if let Some(last) = &last {
                tx.meta
                    .insert(last_message_key(&batch.mailbox), encode(last))?;
            }
            for vendor in &batch.vendors_reported {
                mark_vendor_reported(tx, vendor, batch.now.as_second())?;
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
    /// re-escalation.
    pub fn update_case(
        &self,
        record: &CaseRecord,
        outgoing: &[NewOutgoing],
        now: Timestamp,
    ) -> Result<CaseRecord, StoreError> {
        self.write_outside_batch(Some(record), outgoing, &[], now)?;
        self.case(&record.id)?
            .ok_or_else(|| StoreError::CaseVanished(record.id.clone()))
    }

    /// Queues a digest and records its period as sent, in one transaction.
    pub fn queue_digest(
        &self,
        name: &str,
        period: Timestamp,
        outgoing: &[NewOutgoing],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.write_outside_batch(
            None,
            outgoing,
            &[(digest_key(name), period.as_second())],
            now,
        )
    }

    /// Writes a case (if any) with its outgoing mail, or the mail alone,
    /// and `marks` (`meta` keys to unix seconds), in one transaction.
    fn write_outside_batch(
        &self,
        record: Option<&CaseRecord>,
        outgoing: &[NewOutgoing],
        marks: &[(Vec<u8>, i64)],
        now: Timestamp,
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

    pub fn cursor(&self, mailbox: &str) -> Result<Option<Cursor>, StoreError> {
        self.cursors
            .get(mailbox)?
            .map(|v| decode("cursors", &v))
            .transpose()
    }

    /// Sets a mailbox's cursor outside a batch (after UIDVALIDITY changed).
    pub fn set_cursor(&self, mailbox: &str, cursor: Cursor) -> Result<(), StoreError> {
        let _gate = self.write_gate();
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

    /// Server actions of committed batches not yet confirmed done.
    pub fn pending(&self, mailbox: &str) -> Result<Option<Pending>, StoreError> {
        self.pending
            .get(mailbox)?
            .map(|v| decode("pending", &v))
            .transpose()
    }

    /// The server has done everything pending for `mailbox`.
    pub fn clear_pending(&self, mailbox: &str) -> Result<(), StoreError> {
        let _gate = self.write_gate();
        self.pending.remove(mailbox)?;
        self.pending.flush()?;
        Ok(())
    }

    /// The last message a batch of `mailbox` processed, if any has.
    pub fn last_message(&self, mailbox: &str) -> Result<Option<LastMessage>, StoreError> {
        self.meta
            .get(last_message_key(mailbox))?
            .map(|v| decode("meta", &v))
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
}

/// `meta` key of a mailbox's [`LastMessage`].
pub(super) fn last_message_key(mailbox: &str) -> Vec<u8> {
    let mut k = b"last_message\0".to_vec();
    k.extend_from_slice(mailbox.as_bytes());
    k
}

/// Writes a case inside a transaction with its outgoing mail and index
/// entries. The outbox ids already stored for it are kept: an earlier item
/// of the same transaction may have written the case too.
fn write_case(
    tx: &Tx,
    record: &CaseRecord,
    outgoing: &[NewOutgoing],
    new: bool,
    now: Timestamp,
) -> TxResult<()> {
    let mut record = record.clone();
    let prev = match tx.cases.get(record.id.as_bytes())? {
        Some(prev) => Some(decode::<CaseRecord>("cases", &prev).map_err(abort)?),
        None => None,
    };
    if let Some(prev) = &prev {
        // Set when the case opened, and moved only by `learn_vendor`.
        record.vendor = prev.vendor.clone();
        for &id in &prev.outbox {
            if !record.outbox.contains(&id) {
                record.outbox.push(id);
            }
        }
        record.outbox.sort_unstable();
    }
    expiry::track_case(tx, prev.as_ref(), &record)?;
    for out in outgoing {
        let id = queue(tx, out, now)?;
        record.outbox.push(id);
        index_thread(tx, &thread_key(&out.message_id), &record.id)?;
    }
    index_case(tx, &record, new)?;
    tx.cases.insert(record.id.as_bytes(), encode(&record))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::batch::{Batch, Cursor, Seen, ServerAction};

    use super::super::Store;
    use super::super::fixtures::{batch, item, reopen, ts};
    use super::Committed;

    #[test]
    fn a_batch_is_durable_and_recognised_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let keys;
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let items = vec![item(&store, 1, 2), item(&store, 2, 1)];
            keys = items.iter().map(|i| i.key.clone()).collect::<Vec<_>>();
            let batch = Batch {
                cursor: Cursor {
                    uid_validity: 7,
                    last_uid: 2,
                },
                server: vec![(1, ServerAction::Processed), (2, ServerAction::Quarantine)],
                ..batch(items, 100, vec![])
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
        let store = reopen(dir.path());
        // What `status` says the mailbox last did: the batch's last message.
        let last = store.last_message("ops").unwrap().unwrap();
        assert_eq!((last.uid, last.at), (2, ts(100)));
        assert!(matches!(last.seen, Seen::Case { .. }), "{last:?}");
        assert_eq!(store.last_message("support").unwrap(), None);
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
        assert_eq!(store.next_due().unwrap(), Some(ts(100)));
        assert_eq!(store.outbox_due(ts(100), 10).unwrap().len(), 3);
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
        assert_eq!(store.replies_since("a@EXAMPLE.com", ts(0)).unwrap(), 2);
        assert_eq!(store.replies_since("a@example.com", ts(101)).unwrap(), 0);
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
        let r = store.commit(&batch(vec![a, b], 100, vec![])).unwrap();
        assert_eq!(r[0], Committed::Stored);
        assert!(matches!(r[1], Committed::AlreadySeen(_)));
        assert_eq!(store.cases().count(), 1);
        assert_eq!(store.outbox_items().unwrap().len(), 1);
    }
}
