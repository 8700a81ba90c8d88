//! The application layer: what becomes of each message of a mailbox's
//! batch. Triage says what a message is; intake decides what the
//! organisation does about it: whether it opens a case, updates one
//! (`plan`), or is left alone; what the case's record becomes (`open`,
//! `update`); what mail goes out and when (`compose`), never an automatic
//! reply to automatic mail (`loop_guard`); and the policies beyond a
//! single message (`policy`: repeat vendors, overdue cases).
//!
//! Pure: the cases stored so far are read through [`CaseLookup`], which
//! the store implements (and a map, in the tests); time is a value passed
//! in. The result is a [`Batch`] for the store to commit in one
//! transaction, so the daemon only fetches, commits and tells the server.

use std::collections::HashMap;

use jiff::Timestamp;

use crate::batch::{Batch, BatchItem, BatchOutcome, Cursor, MessageKey, Seen, ServerAction};
use crate::config::{Config, MailboxSection, Settings};
use crate::mail::Identity;
use crate::record::CaseRecord;
use crate::vendor::VendorKey;

mod compose;
mod loop_guard;
mod open;
mod plan;
mod policy;
#[cfg(test)]
mod tests;
mod update;

pub use loop_guard::{NoReply, reply_allowed};
pub use policy::overdue;

/// What intake reads of the cases and messages stored so far.
pub trait CaseLookup {
    /// What became of a message processed before.
    fn seen(&self, key: &MessageKey) -> Result<Option<Seen>, LookupError>;
    fn case(&self, id: &str) -> Result<Option<CaseRecord>, LookupError>;
    /// The case whose thread has one of these Message-IDs.
    fn thread_case(&self, message_ids: &[String]) -> Result<Option<String>, LookupError>;
    /// The latest case of an order (the id lowercased).
    fn order_case(&self, order_id: &str) -> Result<Option<String>, LookupError>;
    /// Automatic replies `sender` got since `since`.
    fn replies_since(&self, sender: &str, since: Timestamp) -> Result<usize, LookupError>;
    /// The vendor id a vendor name was first given with.
    fn vendor_alias(&self, name: &VendorKey) -> Result<Option<VendorKey>, LookupError>;
    /// The cases that complained about `vendor` since `since`.
    fn vendor_cases(
        &self,
        vendor: &VendorKey,
        since: Timestamp,
    ) -> Result<Vec<String>, LookupError>;
    /// When `vendor` was last reported to the vendor manager.
    fn vendor_reported_at(&self, vendor: &VendorKey) -> Result<Option<Timestamp>, LookupError>;
}

/// The cases could not be read: the batch stops before anything is stored,
/// and its messages are fetched again.
#[derive(Debug, thiserror::Error)]
#[error("reading the stored cases: {0}")]
pub struct LookupError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// What intake works with besides the messages.
pub struct Intake<'a> {
    pub config: &'a Config,
    pub settings: &'a Settings,
    pub identity: &'a Identity,
    /// Addresses the daemon sends from or reads: never answered.
    pub own: &'a [String],
    pub lookup: &'a dyn CaseLookup,
}

impl Intake<'_> {
    /// Where replies about a case of mailbox `name` go (see
    /// [`MailboxSection::reply_address`]).
    pub fn reply_address(&self, name: &str) -> Option<&str> {
        self.settings
            .mailboxes
            .iter()
            .find(|m| m.name == name)
            .and_then(MailboxSection::reply_address)
    }
}

/// What a batch has done so far that the store does not know yet: the
/// replies sent to each sender (the rate limit), the cases opened or
/// changed, the vendors reported.
#[derive(Debug, Default)]
pub(crate) struct Working {
    pub replies: HashMap<String, usize>,
    pub cases: HashMap<String, CaseRecord>,
    pub vendors_reported: Vec<VendorKey>,
}

/// A message settled: what to store (if anything) and what to do on the
/// server.
pub(crate) type Settled = (Option<BatchItem>, Option<ServerAction>);

/// A triaged message from an agent, for [`plan`] to place.
pub(crate) struct Triaged {
    pub key: MessageKey,
    pub uid: u32,
    pub email: crate::message::Email,
    pub case: crate::case::Case,
}

/// What [`first_look`] makes of a message.
enum Step {
    Done(Settled),
    Triaged(Box<Triaged>),
    /// The same message as the batch's arrival at this index (a server can
    /// hold two copies): it is settled as that one is, and counts nothing.
    Copy(usize),
}

/// A message fetched from a mailbox: its UID and bytes.
pub struct Arrival<'a> {
    pub uid: u32,
    pub raw: &'a [u8],
}

/// What becomes of `arrivals`, fetched from mailbox `m` at `t`, above
/// `cursor`. New cases take their ids from `reserve` (the
/// store reserves them durably, all of a batch at once).
pub fn process(
    ix: &Intake<'_>,
    m: &MailboxSection,
    cursor: Cursor,
    arrivals: &[Arrival<'_>],
    last_uid: u32,
    t: Timestamp,
    reserve: &mut dyn FnMut(usize) -> Result<Vec<String>, LookupError>,
) -> Result<Batch, LookupError> {
    let mut first_of: HashMap<MessageKey, usize> = HashMap::new();
    let steps: Vec<Step> = arrivals
        .iter()
        .enumerate()
        .map(|(i, a)| first_look(ix, m, a.uid, a.raw, i, &mut first_of))
        .collect::<Result<_, _>>()?;
    let triaged: Vec<Option<&Triaged>> = steps
        .iter()
        .map(|s| match s {
            Step::Triaged(t) => Some(&**t),
            Step::Done(_) | Step::Copy(_) => None,
        })
        .collect();
    let decisions = plan::plan(ix, &triaged, t)?;
    let new_cases = decisions
        .iter()
        .filter(|d| matches!(d, Some(plan::Decision::New { .. })))
        .count();
    let mut ids = reserve(new_cases)?.into_iter();
    let mut opened: Vec<String> = Vec::with_capacity(new_cases);
    let mut work = Working::default();
    let mut items = Vec::with_capacity(arrivals.len());
    let mut server = Vec::new();
    // What was done on the server with each arrival, for its copies.
    let mut actions: Vec<Option<ServerAction>> = Vec::with_capacity(arrivals.len());
    for ((step, decision), a) in steps.into_iter().zip(decisions).zip(arrivals) {
        let (item, action) = match (step, decision) {
            (Step::Done(settled), _) => settled,
            (Step::Copy(first), _) => (None, actions.get(first).copied().flatten()),
            (Step::Triaged(tri), Some(plan::Decision::New { follows })) => {
                // One per new case was reserved; should they run out,
                // another is reserved rather than lose the message.
                let case_id = match ids.next() {
                    Some(id) => id,
                    None => reserve(1)?
                        .pop()
                        .ok_or_else(|| LookupError("no case id was reserved".into()))?,
                };
                opened.push(case_id.clone());
                let opening = open::Opening {
                    case_id,
                    follows,
                    uid_validity: cursor.uid_validity,
                };
                open::open_case(ix, m, *tri, opening, a.raw, t, &mut work)?
            }
            (Step::Triaged(tri), Some(plan::Decision::Update { target, joined })) => {
                let case_id = match target {
                    plan::Target::Stored(id) => id,
                    plan::Target::New(k) => match opened.get(k) {
                        Some(id) => id.clone(),
                        None => {
                            tracing::error!(
                                uid = a.uid,
                                "update of a case not opened: left for a human"
                            );
                            actions.push(None);
                            continue;
                        }
                    },
                };
                update::update_case(ix, m, *tri, &case_id, joined, a.raw, t, &mut work)?
            }
            (Step::Triaged(tri), None) => {
                let _span = tracing::info_span!("message", mailbox = %m.name, uid = a.uid, message_id = tri.email.message_id.as_deref().unwrap_or("-")).entered();
                tracing::info!(
                    kind = tri.case.kind.name(),
                    automatic = tri.email.automatic().unwrap_or("no"),
                    "not an escalation nor part of a case: left untouched"
                );
                let outcome = BatchOutcome::Ignored {
                    reason: tri.case.kind.name().to_string(),
                };
                (
                    Some(BatchItem {
                        key: tri.key,
                        uid: a.uid,
                        outcome,
                    }),
                    None,
                )
            }
        };
        items.extend(item);
        actions.push(action);
        if let Some(action) = action {
            server.push((a.uid, action));
        }
    }
    Ok(Batch {
        mailbox: m.name.clone(),
        cursor: Cursor {
            uid_validity: cursor.uid_validity,
            last_uid: last_uid.max(cursor.last_uid),
        },
        items,
        server,
        now: t,
        vendors_reported: work.vendors_reported,
    })
}

/// Looks at one message, the batch's `index`th: whether it was seen before
/// (in an earlier batch or earlier in this one), is unreadable, comes from a
/// stranger; else triages it, for `plan` to place with the other messages
/// of the batch.
fn first_look(
    ix: &Intake<'_>,
    m: &MailboxSection,
    uid: u32,
    raw: &[u8],
    index: usize,
    first_of: &mut HashMap<MessageKey, usize>,
) -> Result<Step, LookupError> {
    let parsed = crate::message::parse(raw);
    let message_id = parsed.as_ref().ok().and_then(|e| e.message_id.clone());
    let key = MessageKey::new(message_id.as_deref(), raw);
    let span = tracing::info_span!("message", mailbox = %m.name, uid, message_id = message_id.as_deref().unwrap_or("-"));
    let _enter = span.enter();

    // Without this, the copy would be a message of its own until the store
    // dropped it at commit, and what it counted (a reply against the rate
    // limit, a vendor's complaint) would stay counted.
    if let Some(&first) = first_of.get(&key) {
        tracing::info!("a copy of a message earlier in this batch: settled as that one");
        return Ok(Step::Copy(first));
    }
    first_of.insert(key.clone(), index);

    if let Some(seen) = ix.lookup.seen(&key)? {
        tracing::info!(seen = %seen, "seen before: not processed again");
        let action = match seen {
            Seen::Case { .. } | Seen::Update { .. } => Some(ServerAction::Processed),
            Seen::Quarantined { .. } => Some(ServerAction::Quarantine),
            Seen::Ignored { .. } => None,
        };
        return Ok(Step::Done((None, action)));
    }
    let item = |outcome| BatchItem {
        key: key.clone(),
        uid,
        outcome,
    };
    let email = match parsed {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable message: quarantined");
            return Ok(Step::Done((
                Some(item(BatchOutcome::Quarantined {
                    error: e.to_string(),
                })),
                Some(ServerAction::Quarantine),
            )));
        }
    };
    let from = email.from.clone().unwrap_or_default();
    let allowed = ix
        .settings
        .daemon
        .allow_senders
        .iter()
        .any(|p| crate::route::sender_matches(p, &from));
    if !allowed {
        tracing::info!(from = %from, "sender not on the allow-list: left untouched");
        return Ok(Step::Done((
            Some(item(BatchOutcome::Ignored {
                reason: format!("sender {from:?} not allowed"),
            })),
            None,
        )));
    }
    let case = ix.config.triage.case(&email);
    Ok(Step::Triaged(Box::new(Triaged {
        key,
        uid,
        email,
        case,
    })))
}

/// A message that cannot be processed: stored as quarantined, and moved to
/// the quarantine folder for a human.
fn quarantined(key: MessageKey, uid: u32, error: String) -> Settled {
    tracing::error!(error = %error, "quarantined");
    (
        Some(BatchItem {
            key,
            uid,
            outcome: BatchOutcome::Quarantined { error },
        }),
        Some(ServerAction::Quarantine),
    )
}
