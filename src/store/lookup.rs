//! The store as intake reads it: the cases and messages stored so far.

use jiff::Timestamp;

use super::{Store, StoreError};
use crate::batch::{MessageKey, Seen};
use crate::intake::{CaseLookup, LookupError};
use crate::record::CaseRecord;
use crate::vendor::VendorKey;

impl From<StoreError> for LookupError {
    fn from(e: StoreError) -> Self {
        LookupError(Box::new(e))
    }
}

impl CaseLookup for Store {
    fn seen(&self, key: &MessageKey) -> Result<Option<Seen>, LookupError> {
        Ok(Store::seen(self, key)?)
    }

    fn case(&self, id: &str) -> Result<Option<CaseRecord>, LookupError> {
        Ok(Store::case(self, id)?)
    }

    fn thread_case(&self, message_ids: &[String]) -> Result<Option<String>, LookupError> {
        Ok(Store::thread_case(self, message_ids)?)
    }

    fn order_case(&self, order_id: &str) -> Result<Option<String>, LookupError> {
        Ok(Store::order_case(self, order_id)?)
    }

    fn replies_since(&self, sender: &str, since: Timestamp) -> Result<usize, LookupError> {
        Ok(Store::replies_since(self, sender, since)?)
    }

    fn vendor_alias(&self, name: &VendorKey) -> Result<Option<VendorKey>, LookupError> {
        Ok(Store::vendor_alias(self, name)?)
    }

    fn vendor_cases(
        &self,
        vendor: &VendorKey,
        since: Timestamp,
    ) -> Result<Vec<String>, LookupError> {
        Ok(Store::vendor_cases(self, vendor, since)?)
    }

    fn vendor_reported_at(&self, vendor: &VendorKey) -> Result<Option<Timestamp>, LookupError> {
        Ok(Store::vendor_reported_at(self, vendor)?)
    }
}
