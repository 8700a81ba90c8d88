//! The lookups kept beside the cases: the `index` tree (threads, orders,
//! open cases, vendors' complaints and aliases), what `meta` records of
//! vendor reports and digests sent, and the `replies` counts the rate limit
//! reads.

use std::collections::HashMap;

use jiff::Timestamp;

use crate::batch::{Batch, BatchOutcome};
use crate::record::{CaseRecord, thread_key};
use crate::vendor::{CaseVendor, VendorKey};

use super::{Store, StoreError, Tx, TxResult, abort, decode, encode, read_i64, seconds};

/// Complaints about one vendor: (case opened at, case id).
pub(super) type Complaints = Vec<(i64, String)>;

impl Store {
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
            .get(order_key(order_id))?
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
    pub fn vendor_cases(
        &self,
        vendor: &VendorKey,
        since: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .complaints(vendor, since.as_second())?
            .into_iter()
            .map(|(_, id)| id)
            .collect())
    }

    /// The complaints counted under `vendor` opened at or after `since`,
    /// oldest first.
    fn complaints(&self, vendor: &VendorKey, since: i64) -> Result<Complaints, StoreError> {
        let prefix = vendor_prefix(vendor);
        let mut out = Vec::new();
        for r in self.index.range(vendor_index_key(vendor, since, "")..) {
            let (k, _) = r?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let (Some(at), Some(id)) = (
                k.get(prefix.len()..prefix.len() + 8),
                k.get(prefix.len() + 8..),
            ) {
                out.push((read_i64(at), String::from_utf8_lossy(id).into_owned()));
            }
        }
        Ok(out)
    }

    /// When `vendor` was last reported to the vendor manager.
    pub fn vendor_reported_at(&self, vendor: &VendorKey) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .meta
            .get(vendor_report_key(vendor))?
            .map(|v| seconds(read_i64(&v))))
    }

    /// The id a vendor name was first given with, if it was.
    pub fn vendor_alias(&self, name: &VendorKey) -> Result<Option<VendorKey>, StoreError> {
        Ok(self
            .index
            .get(index_key(b'a', name.as_str()))?
            .map(|v| stored_key(&v)))
    }

    /// The period of the last digest `name` sent.
    pub fn digest_sent(&self, name: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .meta
            .get(digest_key(name))?
            .map(|v| seconds(read_i64(&v))))
    }

    /// Automatic replies sent to `sender` since `since`.
    pub fn replies_since(&self, sender: &str, since: Timestamp) -> Result<usize, StoreError> {
        let from = reply_key(sender, since.as_second());
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
    pub fn prune_replies(&self, before: Timestamp) -> Result<usize, StoreError> {
        let mut stale = Vec::new();
        for r in self.replies.iter() {
            let (k, _) = r?;
            let Some(at) = k.len().checked_sub(8).map(|i| &k[i..]) else {
                continue;
            };
            let at = u64::from_be_bytes(at.try_into().unwrap_or([0xff; 8]));
            if (at as i64) < before.as_second() {
                stale.push(k);
            }
        }
        let _gate = self.write_gate();
        for k in &stale {
            self.replies.remove(k)?;
        }
        Ok(stale.len())
    }

    /// The complaints stored under each name that `batch` gives with an id
    /// for the first time (see [`Store::commit`]): found before its
    /// transaction, which cannot scan.
    pub(super) fn complaints_under_new_aliases(
        &self,
        batch: &Batch,
    ) -> Result<HashMap<VendorKey, Complaints>, StoreError> {
        let mut named = HashMap::new();
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
                named.insert(name.clone(), self.complaints(name, 0)?);
            }
        }
        Ok(named)
    }
}

pub(super) fn index_key(kind: u8, rest: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 2);
    k.push(kind);
    k.push(0);
    k.extend_from_slice(rest.as_bytes());
    k
}

/// `o` key: the order id trimmed and lowercased (`CK1` and ` ck1` are one order).
fn order_key(order_id: &str) -> Vec<u8> {
    index_key(b'o', &order_id.trim().to_ascii_lowercase())
}

/// Files a Message-ID (as [`thread_key`] makes it) under its case.
pub(super) fn index_thread(tx: &Tx, message_id: &str, case_id: &str) -> TxResult<()> {
    tx.index
        .insert(index_key(b't', message_id), case_id.as_bytes())?;
    Ok(())
}

/// Files a case as it is now written: its thread, whether it is open, and
/// when `new` its order and its vendor's complaint.
pub(super) fn index_case(tx: &Tx, record: &CaseRecord, new: bool) -> TxResult<()> {
    for m in &record.thread {
        index_thread(tx, m, &record.id)?;
    }
    if new {
        if let Some(order) = &record.case.fields.order_id {
            tx.index.insert(order_key(order), record.id.as_bytes())?;
        }
        if let Some(vendor) = record.vendor_key() {
            tx.index.insert(
                vendor_index_key(vendor, record.received_at.as_second(), &record.id),
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
    Ok(())
}

/// Removes every `index` entry that names a case (its thread, with
/// `message_ids`, the Message-IDs of the mail it sent; its order; the
/// open set; its vendor complaint): entries that name a later case (an
/// order's latest) stay.
pub(super) fn unindex_case(tx: &Tx, record: &CaseRecord, message_ids: &[String]) -> TxResult<()> {
    let id = record.id.as_bytes();
    let thread = record.thread.iter().cloned();
    let sent = message_ids.iter().map(|m| thread_key(m));
    let named = thread
        .chain(sent)
        .map(|m| index_key(b't', &m))
        .chain(record.case.fields.order_id.as_deref().map(order_key));
    for key in named {
        if tx.index.get(&key)?.is_some_and(|v| v == id) {
            tx.index.remove(key)?;
        }
    }
    tx.index.remove(index_key(b's', &record.id))?;
    if let Some(vendor) = record.vendor_key() {
        tx.index.remove(vendor_index_key(
            vendor,
            record.received_at.as_second(),
            &record.id,
        ))?;
    }
    Ok(())
}

/// Learns from a new case's vendor (see [`Store::commit`]): `stored` are
/// the complaints found under names before the transaction, `by_name` the
/// name-keyed cases this transaction has written so far.
pub(super) fn learn_vendor(
    tx: &Tx,
    record: &CaseRecord,
    stored: &HashMap<VendorKey, Complaints>,
    by_name: &mut Vec<(VendorKey, i64, String)>,
) -> TxResult<()> {
    let Some(v) = &record.vendor else {
        return Ok(());
    };
    if !v.key.is_id() {
        by_name.push((
            v.key.clone(),
            record.received_at.as_second(),
            record.id.clone(),
        ));
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

/// Marks `vendor` reported to the vendor manager at `now`: under the id,
/// if the batch taught that the name is one.
pub(super) fn mark_vendor_reported(tx: &Tx, vendor: &VendorKey, now: i64) -> TxResult<()> {
    let alias = if vendor.is_id() {
        None
    } else {
        tx.index.get(index_key(b'a', vendor.as_str()))?
    };
    let vendor = alias.map_or_else(|| vendor.clone(), |id| stored_key(&id));
    tx.meta
        .insert(vendor_report_key(&vendor), &now.to_be_bytes())?;
    Ok(())
}

/// The start of every `v` key of `vendor`.
fn vendor_prefix(vendor: &VendorKey) -> Vec<u8> {
    let mut k = index_key(b'v', vendor.as_str());
    k.push(0);
    k
}

/// `v` key: the vendor, a NUL, when the case opened, the case id.
pub(super) fn vendor_index_key(vendor: &VendorKey, at: i64, case_id: &str) -> Vec<u8> {
    let mut k = vendor_prefix(vendor);
    k.extend_from_slice(&(at.max(0) as u64).to_be_bytes());
    k.extend_from_slice(case_id.as_bytes());
    k
}

/// A vendor key as the index stores it.
pub(super) fn stored_key(bytes: &[u8]) -> VendorKey {
    VendorKey::from_stored(String::from_utf8_lossy(bytes).into_owned())
}

pub(super) fn vendor_report_key(vendor: &VendorKey) -> Vec<u8> {
    let mut k = b"vendor_reported\0".to_vec();
    k.extend_from_slice(vendor.as_str().as_bytes());
    k
}

pub(super) fn digest_key(name: &str) -> Vec<u8> {
    let mut k = b"digest_sent\0".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Counts an automatic reply to `sender` at `now`.
pub(super) fn count_reply(tx: &Tx, sender: &str, now: i64) -> TxResult<()> {
    let key = reply_key(sender, now);
    let n = tx.replies.get(&key)?.map_or(0, |v| read_count(&v));
    tx.replies.insert(key, &(n + 1).to_be_bytes())?;
    Ok(())
}

/// `replies` key: the lowercased sender, a NUL, and the time (a negative
/// time sorts first).
pub(super) fn reply_key(sender: &str, at: i64) -> Vec<u8> {
    let mut k = sender.to_ascii_lowercase().into_bytes();
    k.push(0);
    k.extend_from_slice(&(at.max(0) as u64).to_be_bytes());
    k
}

fn read_count(v: &[u8]) -> u32 {
    v.try_into().map_or(0, u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use crate::batch::BatchOutcome;

    use super::super::Store;
    use super::super::fixtures::{batch, item, ts, vendor_item};

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
        assert_eq!(
            store.vendor_cases(&name, ts(0)).unwrap(),
            ["ESC-2026-000001"]
        );

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
            store.vendor_cases(&id, ts(0)).unwrap(),
            ["ESC-2026-000001", "ESC-2026-000003", "ESC-2026-000004"]
        );
        assert!(store.vendor_cases(&name, ts(0)).unwrap().is_empty());
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
        assert_eq!(store.vendor_reported_at(&id).unwrap(), Some(ts(1_000)));
        assert_eq!(store.vendor_reported_at(&name).unwrap(), None);

        // The first id a name was given with keeps it.
        let e = vendor_item(&store, 6, 3_000, "QuickPick Logistics (VND-2000)");
        let later = vendor_item(&store, 7, 3_000, "QuickPick Logistics");
        store
            .commit(&batch(vec![e, later], 3_000, vec![name.clone()]))
            .unwrap();
        assert_eq!(store.vendor_alias(&name).unwrap(), Some(id.clone()));
        assert_eq!(
            store.vendor_cases(&key("VND-2000"), ts(0)).unwrap(),
            ["ESC-2026-000006"]
        );
        assert_eq!(case_key("ESC-2026-000007"), id);
        // A name reported is marked under the id it is an alias of.
        assert_eq!(store.vendor_reported_at(&id).unwrap(), Some(ts(3_000)));
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
            store.commit(&batch(vec![item], now, vec![])).unwrap();
        };
        commit("a@example.com", 1_000);
        commit("A@Example.com", 1_000);
        commit("a@example.com", 4_000);
        commit("a@example.co", 4_000);
        let since = |sender: &str, secs: i64| store.replies_since(sender, ts(secs)).unwrap();
        // Who, since when: how many replies.
        for (sender, secs, want) in [
            ("a@example.com", 0, 3),
            ("a@example.com", 1_000, 3),
            ("a@example.com", 1_001, 1),
            ("a@example.co", 0, 1),
            ("b@example.com", 0, 0),
        ] {
            assert_eq!(since(sender, secs), want, "{sender} since {secs}");
        }
        assert_eq!(store.prune_replies(ts(2_000)).unwrap(), 1);
        assert_eq!(since("a@example.com", 0), 1);
    }
}
