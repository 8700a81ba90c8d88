//! The policies a case is held to beyond its own messages, with their
//! thresholds read from the config in one place: a vendor named by
//! `[lifecycle.repeat_vendor] complaints` cases within `within` is
//! reported to the vendor manager, once per window; a case open longer
//! than `[lifecycle.overdue]` allows its risk is re-escalated, once.

use std::collections::HashMap;

use jiff::Timestamp;

use super::compose::ComposeFailed;
use super::{Intake, LookupError, Working};
use crate::mail;
use crate::outbox::{NewOutgoing, OutgoingKind};
use crate::record::CaseRecord;
use crate::vendor::{CaseVendor, VendorKey};

/// The vendor of a new case: what its field says, a name alone resolved
/// through the aliases stored or taught earlier in this batch.
pub(crate) fn vendor_of(
    ix: &Intake<'_>,
    record: &CaseRecord,
    cases: &HashMap<String, CaseRecord>,
) -> Result<Option<CaseVendor>, LookupError> {
    let Some(v) = record
        .case
        .fields
        .vendor
        .as_deref()
        .and_then(|f| ix.config.vendors.parse(f))
    else {
        return Ok(None);
    };
    let alias = match (&v.id, &v.name) {
        (None, Some(name)) => match ix.lookup.vendor_alias(name)? {
            Some(id) => Some(id),
            None => batch_alias(name, cases.values()).cloned(),
        },
        _ => None,
    };
    Ok(v.resolve(alias))
}

/// The id the batch's cases first give `name` with: the lowest case id,
/// which is the order they open in and the commit learns aliases in.
fn batch_alias<'a>(
    name: &VendorKey,
    batch: impl IntoIterator<Item = &'a CaseRecord>,
) -> Option<&'a VendorKey> {
    batch
        .into_iter()
        .filter_map(|r| r.vendor.as_ref().map(|v| (&r.id, v)))
        .filter(|(_, v)| v.key.is_id() && v.name.as_ref() == Some(name))
        .min_by(|a, b| a.0.cmp(b.0))
        .map(|(_, v)| &v.key)
}

/// The keys whose complaints are `key`'s in this batch: `key`, and for an
/// id the names this batch gives with it first (no alias stored, no earlier
/// case of the batch giving them with another id). The commit moves those
/// names' complaints to the id.
fn vendor_group(
    ix: &Intake<'_>,
    key: &VendorKey,
    record: &CaseRecord,
    cases: &HashMap<String, CaseRecord>,
) -> Result<Vec<VendorKey>, LookupError> {
    let mut group = vec![key.clone()];
    if !key.is_id() {
        return Ok(group);
    }
    let batch: Vec<&CaseRecord> = cases.values().chain([record]).collect();
    for r in &batch {
        if let Some(name) = r.vendor.as_ref().and_then(|v| v.name.as_ref())
            && !group.contains(name)
            && batch_alias(name, batch.iter().copied()) == Some(key)
            && ix.lookup.vendor_alias(name)?.is_none()
        {
            group.push(name.clone());
        }
    }
    Ok(group)
}

/// The vendor as the report names it: as the digest does (see
/// [`crate::vendor::VendorRules::better_spelling`]), over `cases`, oldest
/// first.
fn vendor_name(
    ix: &Intake<'_>,
    record: &CaseRecord,
    cases: &[String],
    batch: &HashMap<String, CaseRecord>,
) -> Result<String, LookupError> {
    let mut name = String::new();
    for id in cases {
        let field = if *id == record.id {
            record.case.fields.vendor.clone()
        } else if let Some(r) = batch.get(id) {
            r.case.fields.vendor.clone()
        } else {
            ix.lookup.case(id)?.and_then(|r| r.case.fields.vendor)
        };
        if let Some(f) = field
            && ix.config.vendors.better_spelling(&name, &f)
        {
            name = f;
        }
    }
    Ok(name)
}

/// The vendor manager's forward when this case brings its vendor to the
/// configured number of complaints, once per window. The vendor's
/// complaints are those of every key in its [`vendor_group`].
pub(crate) fn repeat_vendor(
    ix: &Intake<'_>,
    record: &CaseRecord,
    t: Timestamp,
    work: &mut Working,
) -> Result<Option<NewOutgoing>, LookupError> {
    let (Some(rv), Some(vendor)) = (&ix.config.lifecycle.repeat_vendor, record.vendor_key()) else {
        return Ok(None);
    };
    let since = crate::clock::before(t, rv.within);
    let group = vendor_group(ix, vendor, record, &work.cases)?;
    for k in &group {
        if work.vendors_reported.contains(k)
            || ix
                .lookup
                .vendor_reported_at(k)?
                .is_some_and(|at| at >= since)
        {
            return Ok(None);
        }
    }
    let mut cases: Vec<String> = Vec::new();
    for k in &group {
        for id in ix.lookup.vendor_cases(k, since)? {
            if !cases.contains(&id) {
                cases.push(id);
            }
        }
    }
    for (id, r) in &work.cases {
        if r.received_at >= since
            && r.vendor_key().is_some_and(|k| group.contains(k))
            && !cases.contains(id)
        {
            cases.push(id.clone());
        }
    }
    if !cases.contains(&record.id) {
        cases.push(record.id.clone());
    }
    cases.sort();
    if cases.len() < rv.complaints {
        return Ok(None);
    }
    let name = vendor_name(ix, record, &cases, &work.cases)?;
    let mut listed: Vec<CaseRecord> = Vec::with_capacity(cases.len());
    for id in &cases {
        let r = if *id == record.id {
            Some(record.clone())
        } else if let Some(r) = work.cases.get(id) {
            Some(r.clone())
        } else {
            ix.lookup.case(id)?
        };
        listed.extend(r);
    }
    let ctx = crate::lifecycle::vendor_report_context(
        &name,
        &listed.iter().collect::<Vec<_>>(),
        rv.within.as_secs() / 86_400,
        &record.id,
        &ix.config.router.readers.zone,
        t,
    );
    let rendered = match ix.config.router.templates.render(&rv.template, &ctx) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "repeat-vendor template failed: no report");
            return Ok(None);
        }
    };
    match mail::compose_notice(
        ix.identity,
        OutgoingKind::Vendor,
        &record.id,
        Some(&record.id),
        &rv.to,
        None,
        &rendered,
        crate::clock::system_time(t),
    ) {
        Ok(out) => {
            tracing::warn!(vendor = %vendor, complaints = cases.len(), "repeat vendor reported");
            work.vendors_reported.push(vendor.clone());
            Ok(Some(out))
        }
        Err(e) => {
            tracing::error!(error = %e, "could not compose the repeat-vendor report");
            Ok(None)
        }
    }
}

/// An overdue case's re-escalation, decided at `t`: the notice, and the
/// case marked (its `overdue_at` and a history entry), for the caller to
/// store together. `None` when the case is not overdue, was re-escalated
/// before, or its risk has no allowance.
pub fn overdue(
    ix: &Intake<'_>,
    rec: &CaseRecord,
    t: Timestamp,
) -> Option<(CaseRecord, NewOutgoing)> {
    const RULE: &str = "lifecycle.overdue";
    let od = ix.config.lifecycle.overdue.as_ref()?;
    if rec.overdue_at.is_some() {
        return None;
    }
    let (open_for, allowed) = ix.config.lifecycle.past_due(rec, t)?;
    let _span = tracing::info_span!("case", case = %rec.id).entered();
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let ctx = crate::lifecycle::overdue_context(
        rec,
        &crate::text::age(secs(open_for)),
        &crate::text::age(secs(allowed)),
        &ix.config.router.readers,
    );
    let out = match ix.config.router.templates.render(&od.template, &ctx) {
        Ok(mut r) => {
            r.high_importance = rec.case.risk >= 4;
            mail::compose_notice(
                ix.identity,
                OutgoingKind::Overdue,
                &rec.id,
                Some(&rec.id),
                &od.to,
                ix.reply_address(&rec.mailbox),
                &r,
                crate::clock::system_time(t),
            )
            .map_err(|source| ComposeFailed::Mime {
                rule: RULE.into(),
                source,
            })
        }
        Err(source) => Err(ComposeFailed::Template {
            rule: RULE.into(),
            source,
        }),
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "could not compose the overdue re-escalation");
            return None;
        }
    };
    let mut rec = rec.clone();
    rec.overdue_at = Some(t);
    crate::lifecycle::record(
        &mut rec,
        "daemon",
        t,
        None,
        vec![format!(
            "overdue after {}: re-escalated to {}",
            crate::text::age(secs(open_for)),
            od.to.join(", ")
        )],
    );
    tracing::warn!(age = %crate::text::age(secs(open_for)), "case overdue: re-escalated");
    Some((rec, out))
}
