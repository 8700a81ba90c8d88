//! The store as intake reads it, kept in maps; `commit` files a batch the
//! way `Store::commit` does (only what intake reads back).

use super::*;

/// What the store keeps that intake reads, as `Store::commit` files it.
#[derive(Default)]
pub(super) struct Memory {
    pub(super) cases: BTreeMap<String, CaseRecord>,
    /// Every Message-ID of a case's thread ([`thread_key`]) to the case.
    pub(super) threads: HashMap<String, String>,
    /// Order (trimmed, lowercase) to its latest case.
    pub(super) orders: HashMap<String, String>,
    pub(super) seen: HashMap<MessageKey, Seen>,
    /// Automatic replies: the sender (lowercase) and when.
    pub(super) replies: Vec<(String, Timestamp)>,
    /// A vendor name to the id it was first given with.
    pub(super) aliases: HashMap<VendorKey, VendorKey>,
    /// Complaints: the key counted under, when the case opened, the case.
    pub(super) complaints: Vec<(VendorKey, Timestamp, String)>,
    pub(super) reported: HashMap<VendorKey, Timestamp>,
    /// Everything committed batches send, in order.
    pub(super) sent: Vec<NewOutgoing>,
    /// Case ids handed out so far.
    pub(super) reserved: Cell<u32>,
    /// The lookup (by method name, or `reserve`) that fails.
    pub(super) fail: Option<&'static str>,
}

pub(super) fn order_key(order: &str) -> String {
    order.trim().to_ascii_lowercase()
}

impl Memory {
    fn check(&self, method: &'static str) -> Result<(), LookupError> {
        if self.fail == Some(method) {
            return Err(LookupError(format!("{method}: the disk went away").into()));
        }
        Ok(())
    }

    /// `n` new case ids, as `Store::reserve_case_ids` hands them out.
    pub(super) fn reserve(&self, n: usize) -> Result<Vec<String>, LookupError> {
        self.check("reserve")?;
        let first = self.reserved.get();
        let last = first + u32::try_from(n).expect("a few ids");
        self.reserved.set(last);
        Ok((first + 1..=last).map(case_id).collect())
    }

    /// Files a batch: for each message not seen before its `seen` entry,
    /// its case with the thread, order and vendor indexes, the mail it
    /// sends (whose Message-IDs join the thread) and the reply it counts;
    /// then the vendors reported.
    pub(super) fn commit(&mut self, batch: &Batch) {
        for item in &batch.items {
            if self.seen.contains_key(&item.key) {
                continue;
            }
            let seen = match &item.outcome {
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
                    self.write_case(record, outgoing, new);
                    if let Some(sender) = replied_to {
                        self.replies.push((sender.to_ascii_lowercase(), batch.now));
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
            self.seen.insert(item.key.clone(), seen);
        }
        for vendor in &batch.vendors_reported {
            let vendor = match self.aliases.get(vendor) {
                Some(id) if !vendor.is_id() => id.clone(),
                _ => vendor.clone(),
            };
            self.reported.insert(vendor, batch.now);
        }
    }

    pub(super) fn write_case(&mut self, record: &CaseRecord, outgoing: &[NewOutgoing], new: bool) {
        let mut record = record.clone();
        if let Some(prev) = self.cases.get(&record.id) {
            // Set when the case opened; moved only by `learn_vendor`.
            record.vendor = prev.vendor.clone();
        }
        for out in outgoing {
            self.threads
                .insert(thread_key(&out.message_id), record.id.clone());
            self.sent.push(out.clone());
        }
        for m in &record.thread {
            self.threads.insert(m.clone(), record.id.clone());
        }
        if new {
            if let Some(order) = &record.case.fields.order_id {
                self.orders.insert(order_key(order), record.id.clone());
            }
            if let Some(key) = record.vendor_key() {
                self.complaints
                    .push((key.clone(), record.received_at, record.id.clone()));
            }
        }
        let vendor = record.vendor.clone();
        self.cases.insert(record.id.clone(), record);
        if new && let Some(v) = vendor {
            self.learn_vendor(&v);
        }
    }

    /// A name given with an id for the first time becomes the id's alias:
    /// its complaints, their cases and its report move to the id.
    pub(super) fn learn_vendor(&mut self, v: &CaseVendor) {
        let Some(name) = &v.name else { return };
        if !v.key.is_id() || self.aliases.contains_key(name) {
            return;
        }
        self.aliases.insert(name.clone(), v.key.clone());
        for (key, _, id) in &mut self.complaints {
            if key == name {
                *key = v.key.clone();
                if let Some(cv) = self.cases.get_mut(id).and_then(|r| r.vendor.as_mut())
                    && cv.key == *name
                {
                    cv.key = v.key.clone();
                }
            }
        }
        if let Some(at) = self.reported.remove(name) {
            let to = self.reported.entry(v.key.clone()).or_insert(at);
            *to = (*to).max(at);
        }
    }
}

impl CaseLookup for Memory {
    fn seen(&self, key: &MessageKey) -> Result<Option<Seen>, LookupError> {
        self.check("seen")?;
        Ok(self.seen.get(key).cloned())
    }

    fn case(&self, id: &str) -> Result<Option<CaseRecord>, LookupError> {
        self.check("case")?;
        Ok(self.cases.get(id).cloned())
    }

    fn thread_case(&self, message_ids: &[String]) -> Result<Option<String>, LookupError> {
        self.check("thread_case")?;
        Ok(message_ids
            .iter()
            .find_map(|m| self.threads.get(&thread_key(m)).cloned()))
    }

    fn order_case(&self, order_id: &str) -> Result<Option<String>, LookupError> {
        self.check("order_case")?;
        Ok(self.orders.get(&order_key(order_id)).cloned())
    }

    fn replies_since(&self, sender: &str, since: Timestamp) -> Result<usize, LookupError> {
        self.check("replies_since")?;
        let sender = sender.to_ascii_lowercase();
        Ok(self
            .replies
            .iter()
            .filter(|(s, at)| *s == sender && *at >= since)
            .count())
    }

    fn vendor_alias(&self, name: &VendorKey) -> Result<Option<VendorKey>, LookupError> {
        self.check("vendor_alias")?;
        Ok(self.aliases.get(name).cloned())
    }

    fn vendor_cases(
        &self,
        vendor: &VendorKey,
        since: Timestamp,
    ) -> Result<Vec<String>, LookupError> {
        self.check("vendor_cases")?;
        let mut found: Vec<(Timestamp, String)> = self
            .complaints
            .iter()
            .filter(|(k, at, _)| k == vendor && *at >= since)
            .map(|(_, at, id)| (*at, id.clone()))
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    fn vendor_reported_at(&self, vendor: &VendorKey) -> Result<Option<Timestamp>, LookupError> {
        self.check("vendor_reported_at")?;
        Ok(self.reported.get(vendor).copied())
    }
}
