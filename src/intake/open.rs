//! Opening a case: the message's routing actions run, its mail is
//! composed (the agent's reply first), its vendor is resolved (a name alone
//! through the aliases learned so far), and the vendor's complaints are
//! counted for the repeat-vendor report.

use jiff::Timestamp;

use super::compose::{About, ComposeFailed, Occasion, compose};
use super::policy::{repeat_vendor, vendor_of};
use super::{Intake, LookupError, Settled, Triaged, Working, quarantined};
use crate::batch::{BatchItem, BatchOutcome, ServerAction};
use crate::config::MailboxSection;
use crate::record::CaseRecord;

/// What a new case needs besides its message.
pub(crate) struct Opening {
    pub case_id: String,
    /// The earlier, long resolved case of the same order it follows.
    pub follows: Option<String>,
    pub uid_validity: u32,
}

/// Opens a case for `tri`, arrived in `m` at `t`.
pub(crate) fn open_case(
    ix: &Intake<'_>,
    m: &MailboxSection,
    tri: Triaged,
    opening: Opening,
    raw: &[u8],
    t: Timestamp,
    work: &mut Working,
) -> Result<Settled, LookupError> {
    let Triaged {
        key,
        uid,
        email,
        case,
    } = tri;
    let Opening {
        case_id,
        follows,
        uid_validity,
    } = opening;
    let _span = tracing::info_span!("message", mailbox = %m.name, uid, message_id = email.message_id.as_deref().unwrap_or("-"), case = %case_id).entered();
    let actions = ix.config.router.route(&case, Some(&m.name));
    let about = About {
        case_id: &case_id,
        mailbox: &m.name,
        reply_to: m.reply_address(),
        origin: None,
        received_at: t,
        occasion: Occasion::Opening,
        skip: &[],
    };
    let c = match compose(ix, &about, &actions, &case, &email, raw, t, work) {
        Ok(c) => c,
        Err(ComposeFailed::Lookup(e)) => return Err(e),
        Err(e) => return Ok(quarantined(key, uid, e.to_string())),
    };
    let mut record = CaseRecord::new(
        case_id,
        &m.name,
        uid,
        uid_validity,
        t,
        case,
        email.from_name.clone(),
        email.references.clone(),
    );
    record.digests = c.digests;
    record.tags = c.tags;
    record.forwarded_to = c.forwarded;
    record.follows = follows;
    record.vendor = vendor_of(ix, &record, &work.cases)?;
    let mut outgoing = c.outgoing;
    if let Some(out) = repeat_vendor(ix, &record, t, work)? {
        outgoing.push(out);
    }
    tracing::info!(
        kind = record.case.kind.name(),
        risk = record.case.risk,
        tier = record.case.tier,
        flags = record.case.flags.len(),
        outgoing = outgoing.len(),
        follows = record.follows.as_deref().unwrap_or("-"),
        "case opened"
    );
    work.cases.insert(record.id.clone(), record.clone());
    Ok((
        Some(BatchItem {
            key,
            uid,
            outcome: BatchOutcome::Case {
                record: Box::new(record),
                outgoing,
                replied_to: c.replied_to,
            },
        }),
        Some(ServerAction::Processed),
    ))
}
