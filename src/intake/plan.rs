//! Which case a message belongs to. A message from an agent updates the
//! case of its thread (by `In-Reply-To`/`References`, every Message-ID of
//! a case's thread counting, ours included), or the case whose id its
//! subject carries; an escalation of an order that has a case joins it
//! (reopening it when it was resolved within `reopen_within`, else it
//! opens a new case that follows the old one); any other escalation opens
//! a case. Messages of one batch see each other: a reply to a message
//! earlier in the same batch goes to that message's case.

use std::collections::HashMap;

use jiff::Timestamp;

use super::{Intake, LookupError, Triaged};
use crate::record::thread_key;

/// What becomes of a triaged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// It opens a case (following an earlier, long resolved one of the
    /// same order).
    New { follows: Option<String> },
    /// It updates a case: a reply in the thread, or (`joined`) a second
    /// escalation of the same order.
    Update { target: Target, joined: bool },
}

/// A case an update goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Stored(String),
    /// The `k`th case this batch opens.
    New(usize),
}

/// Decides, for each triaged message of a batch in order (`None` for the
/// messages already settled), whether it opens a case or updates one, at
/// `t`. Called with the case lock held.
pub(crate) fn plan(
    ix: &Intake<'_>,
    messages: &[Option<&Triaged>],
    t: Timestamp,
) -> Result<Vec<Option<Decision>>, LookupError> {
    let mut threads: HashMap<String, Target> = HashMap::new();
    let mut orders: HashMap<String, Target> = HashMap::new();
    let mut opened = 0;
    let mut out = Vec::with_capacity(messages.len());
    for tri in messages {
        let Some(tri) = tri else {
            out.push(None);
            continue;
        };
        let decision = decide(ix, tri, t, &threads, &orders)?;
        let target = match &decision {
            Some(Decision::New { .. }) => {
                opened += 1;
                Some(Target::New(opened - 1))
            }
            Some(Decision::Update { target, .. }) => Some(target.clone()),
            None => None,
        };
        if let Some(target) = target {
            if let Some(mid) = &tri.case.message_id {
                threads.insert(thread_key(mid), target.clone());
            }
            if let (Some(order), Some(Decision::New { .. })) =
                (&tri.case.fields.order_id, &decision)
            {
                orders.insert(order_key(order), target);
            }
        }
        out.push(decision);
    }
    Ok(out)
}

/// An order id as orders are compared: trimmed, lowercase.
pub(crate) fn order_key(order: &str) -> String {
    order.trim().to_ascii_lowercase()
}

fn decide(
    ix: &Intake<'_>,
    tri: &Triaged,
    t: Timestamp,
    threads: &HashMap<String, Target>,
    orders: &HashMap<String, Target>,
) -> Result<Option<Decision>, LookupError> {
    let update = |target| {
        Some(Decision::Update {
            target,
            joined: false,
        })
    };
    // Automatic mail (an out-of-office answer to an acknowledgement) is no
    // update.
    if tri.email.automatic().is_some() {
        return Ok(None);
    }
    let mut refs: Vec<String> = Vec::new();
    refs.extend(tri.email.in_reply_to.iter().cloned());
    refs.extend(tri.email.references.iter().rev().cloned());
    for r in &refs {
        if let Some(target) = threads.get(&thread_key(r)) {
            return Ok(update(target.clone()));
        }
    }
    if let Some(id) = ix.lookup.thread_case(&refs)? {
        return Ok(update(Target::Stored(id)));
    }
    if let Some(id) = tri
        .case
        .subject
        .as_deref()
        .and_then(crate::lifecycle::case_id_in_subject)
        && ix.lookup.case(&id)?.is_some()
    {
        return Ok(update(Target::Stored(id)));
    }
    if !tri.case.is_escalation {
        return Ok(None);
    }
    let Some(order) = tri.case.fields.order_id.as_deref().map(order_key) else {
        return Ok(Some(Decision::New { follows: None }));
    };
    if let Some(target) = orders.get(&order) {
        return Ok(Some(Decision::Update {
            target: target.clone(),
            joined: true,
        }));
    }
    if let Some(id) = ix.lookup.order_case(&order)?
        && let Some(rec) = ix.lookup.case(&id)?
    {
        let reopen_within = ix.config.lifecycle.reopen_within;
        let long_resolved = rec
            .resolved_at
            .is_some_and(|at| crate::clock::after(at, reopen_within) < t);
        if !long_resolved {
            return Ok(Some(Decision::Update {
                target: Target::Stored(id),
                joined: true,
            }));
        }
        return Ok(Some(Decision::New { follows: Some(id) }));
    }
    Ok(Some(Decision::New { follows: None }))
}
