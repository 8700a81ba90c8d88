//! A message that belongs to a case: the case rules apply it (status,
//! tags, notes, fields that were missing, new flags that raise risk and
//! tier; see `lifecycle`), routing runs again when risk, tier or flags went
//! up or the case reopened, and its forwards go only to whoever has not had
//! the case. A second escalation of the same order is told which case it
//! joined.

use jiff::Timestamp;

use super::compose::{About, ComposeFailed, Occasion, compose};
use super::{Intake, LookupError, Settled, Triaged, Working, quarantined};
use crate::batch::{BatchItem, BatchOutcome, ServerAction};
use crate::config::MailboxSection;
use crate::letter::Origin;
use crate::route::{Action, ActionType};

/// Applies `tri` to case `case_id` at `t`; `joined`: it is another
/// escalation of the case's order, not a reply in its thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn update_case(
    ix: &Intake<'_>,
    m: &MailboxSection,
    tri: Triaged,
    case_id: &str,
    joined: bool,
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
    let _span = tracing::info_span!("message", mailbox = %m.name, uid, message_id = email.message_id.as_deref().unwrap_or("-"), case = %case_id).entered();
    let mut record = match work.cases.remove(case_id) {
        Some(r) => r,
        None => match ix.lookup.case(case_id)? {
            Some(r) => r,
            None => {
                return Ok(quarantined(
                    key,
                    uid,
                    format!("update of unknown case {case_id}"),
                ));
            }
        },
    };
    let by = email.from.clone().unwrap_or_default();
    let applied = crate::lifecycle::apply_update(&mut record, &case, &by, t);
    ix.config.triage.refresh_missing(&mut record.case);
    let mut actions = Vec::new();
    if joined && let Some(template) = &ix.config.lifecycle.joined_reply {
        actions.push(Action::reply("lifecycle.joined_reply", &by, template));
    }
    if applied.raised || applied.reopened {
        actions.extend(
            ix.config
                .router
                .route(&record.case, Some(&record.mailbox))
                .into_iter()
                .filter(|a| a.kind == ActionType::Forward),
        );
    }
    let skip = record.forwarded_to.clone();
    let about = About {
        case_id,
        mailbox: &m.name,
        reply_to: ix.reply_address(&record.mailbox),
        origin: Some(Origin {
            from: record.case.from.as_deref(),
            from_name: record.from_name.as_deref(),
            subject: record.case.subject.as_deref(),
            date: record.case.date.as_deref(),
            message_id: record.case.message_id.as_deref(),
        }),
        received_at: record.received_at,
        occasion: Occasion::Update(record.history.len()),
        skip: &skip,
    };
    let composed = compose(ix, &about, &actions, &record.case, &email, raw, t, work);
    let c = match composed {
        Ok(c) => c,
        Err(ComposeFailed::Lookup(e)) => return Err(e),
        Err(e) => {
            let error = e.to_string();
            work.cases.insert(case_id.to_string(), record);
            return Ok(quarantined(key, uid, error));
        }
    };
    record.forwarded_to.extend(c.forwarded);
    tracing::info!(
        status = %record.status,
        risk = record.case.risk,
        tier = record.case.tier,
        changes = record.history.last().map_or(0, |h| h.changes.len()),
        outgoing = c.outgoing.len(),
        joined,
        "case updated"
    );
    work.cases.insert(case_id.to_string(), record.clone());
    Ok((
        Some(BatchItem {
            key,
            uid,
            outcome: BatchOutcome::Update {
                record: Box::new(record),
                outgoing: c.outgoing,
                replied_to: c.replied_to,
            },
        }),
        Some(ServerAction::Processed),
    ))
}
