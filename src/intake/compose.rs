//! The mail a message's routing actions send: rendered, composed to its
//! final bytes, and held back where a rule says so. Here live the rules
//! about sending itself: no automatic reply to automatic mail (RFC 3834),
//! at most `replies_per_sender_per_hour` replies to one sender, an address
//! gets a case once, a forward outside its business hours waits for them
//! (its after-hours readers get it at once), and every message of a case
//! has a Message-ID of its own, named by when in the case's life it went.

use std::time::Duration;

use jiff::Timestamp;

use super::loop_guard::reply_allowed;
use super::{Intake, LookupError, Working};
use crate::letter::{Attached, Letter, Origin};
use crate::mail::{self, Original, OriginalPart};
use crate::outbox::{NewOutgoing, OutgoingKind};
use crate::route::{Action, ActionType, RenderError};

/// When in a case's life mail is composed; it names the Message-IDs, so
/// that every message of a case has its own, and composing the same
/// message again (after a crash) gives the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Occasion {
    /// The message that opened the case: `ESC-….reply.0`.
    Opening,
    /// The case's `n`th history entry: `ESC-….u3.forward.1`.
    Update(usize),
}

impl Occasion {
    /// The sequence part of the Message-ID of the `i`th message of this
    /// occasion; `now` marks the copy sent at once to after-hours readers
    /// of a forward that otherwise waits for business hours.
    pub(crate) fn sequence(self, i: usize, now: bool) -> String {
        let base = match self {
            Occasion::Opening => i.to_string(),
            Occasion::Update(n) => format!("u{n}.{i}"),
        };
        if now { format!("{base}.now") } else { base }
    }
}

/// Who a case's mail is about and where replies to it go.
pub(crate) struct About<'a> {
    pub case_id: &'a str,
    /// The mailbox the message came in on (templates see its name).
    pub mailbox: &'a str,
    /// `Reply-To` of the mail that invites a reply: the case's mailbox.
    pub reply_to: Option<&'a str>,
    /// The case's first message, when the message answered is another.
    pub origin: Option<Origin<'a>>,
    /// When the case came in (unix seconds): its answer is due by its
    /// risk's allowance later.
    pub received_at: Timestamp,
    pub occasion: Occasion,
    /// Addresses that already had a forward of this case.
    pub skip: &'a [String],
}

/// Outgoing mail composed from routing actions.
#[derive(Debug, Default)]
pub(crate) struct Composed {
    pub outgoing: Vec<NewOutgoing>,
    pub replied_to: Option<String>,
    pub digests: Vec<String>,
    pub tags: Vec<String>,
    /// Every address a forward went to.
    pub forwarded: Vec<String>,
}

/// Why a message's mail could not be composed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ComposeFailed {
    /// A template or the message cannot make this mail: the message goes
    /// to quarantine, for a human.
    #[error("template of rule {rule}: {source}")]
    Template {
        rule: String,
        #[source]
        source: RenderError,
    },
    #[error("composing for rule {rule}: {source}")]
    Mime {
        rule: String,
        #[source]
        source: mail::ComposeError,
    },
    /// The store could not be read: the batch stops, nothing is lost.
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

fn not_served(list: &[String], skip: &[String]) -> Vec<String> {
    list.iter()
        .filter(|a| !skip.iter().any(|s| s.eq_ignore_ascii_case(a)))
        .cloned()
        .collect()
}

/// Renders and composes the mail of `actions` for a case, at `t`. The
/// agent's reply comes first, so that the acknowledgement leaves before
/// the forwards.
#[allow(clippy::too_many_arguments)]
pub(crate) fn compose(
    ix: &Intake<'_>,
    about: &About<'_>,
    actions: &[Action],
    case: &crate::case::Case,
    email: &crate::message::Email,
    raw: &[u8],
    t: Timestamp,
    work: &mut Working,
) -> Result<Composed, ComposeFailed> {
    let case_id = about.case_id;
    let from = email.from.clone().unwrap_or_default();
    let date = crate::clock::system_time(t);
    let mut c = Composed::default();
    let mut original: Option<Original> = None;
    // Who has the case once this message's forwards go (a reply names
    // them): the owners of the forwards not already sent.
    let fresh_forwards: Vec<Action> = actions
        .iter()
        .filter(|a| {
            a.kind == ActionType::Forward
                && !not_served(&[a.to.clone(), a.cc.clone()].concat(), about.skip).is_empty()
        })
        .cloned()
        .collect();
    let owners = crate::letter::owners(&fresh_forwards);
    for (i, action) in actions.iter().enumerate() {
        let mut action = action.clone();
        let mut attached = Attached::Nothing;
        if action.kind == ActionType::Forward {
            action.to = not_served(&action.to, about.skip);
            action.cc = not_served(&action.cc, about.skip);
            if action.to.is_empty() && action.cc.is_empty() {
                continue;
            }
            let o = original.get_or_insert_with(|| Original::new(raw));
            attached = match o.part {
                OriginalPart::File(why) => Attached::File(why.reason()),
                _ => Attached::Message,
            };
        }
        let mut letter = Letter::new(case_id, Some(about.mailbox), case, email);
        letter.origin = about.origin;
        letter.attached = attached;
        letter.received_at = Some(about.received_at);
        letter.now = Some(t);
        letter.respond_within = ix.config.lifecycle.respond_within(case.risk);
        letter.owners = owners.clone();
        let rendered =
            crate::letter::render(&ix.config.router, &action, &letter).map_err(|source| {
                ComposeFailed::Template {
                    rule: action.rule.clone(),
                    source,
                }
            })?;
        let mime = |r: Result<NewOutgoing, mail::ComposeError>| {
            r.map_err(|source| ComposeFailed::Mime {
                rule: action.rule.clone(),
                source,
            })
        };
        let sequence = |now: bool| about.occasion.sequence(i, now);
        match (action.kind, rendered, original.as_ref()) {
            (ActionType::Reply, Some(r), _) => {
                if let Err(why) = reply_allowed(email, ix.own) {
                    tracing::info!(%why, "no automatic reply");
                    continue;
                }
                let sender = from.to_ascii_lowercase();
                if !reply_within_limit(ix, &sender, t, work)? {
                    continue;
                }
                c.replied_to = Some(sender);
                c.outgoing.push(mime(mail::compose_reply(
                    ix.identity,
                    case_id,
                    &sequence(false),
                    &from,
                    about.reply_to,
                    &r,
                    email,
                    date,
                ))?);
            }
            (ActionType::Forward, Some(r), Some(original)) => {
                if let OriginalPart::File(why) = original.part {
                    tracing::info!(
                        why = why.reason(),
                        "the original cannot be a message/rfc822 part: attached as a file"
                    );
                }
                let forward = |seq: &str, to: &[String], cc: &[String]| {
                    mail::compose_forward(
                        ix.identity,
                        case_id,
                        seq,
                        to,
                        cc,
                        about.reply_to,
                        &r,
                        original,
                        date,
                    )
                };
                match closed_hours(ix, &action, t) {
                    Some((name, opens)) => {
                        // Outside the hours: the after-hours readers (the
                        // supervisor on call) get it now, everyone else when
                        // the hours open, from the outbox, once.
                        let now_to = not_served(&action.after_hours, about.skip);
                        let (to, cc) = (
                            not_served(&action.to, &now_to),
                            not_served(&action.cc, &now_to),
                        );
                        if !now_to.is_empty() {
                            c.outgoing
                                .push(mime(forward(&sequence(true), &now_to, &[]))?);
                            c.forwarded.extend(now_to.iter().cloned());
                        }
                        if to.is_empty() && cc.is_empty() {
                            continue;
                        }
                        tracing::info!(hours = %name, opens_at = opens.map(tracing::field::display), "outside business hours: forward held until they open");
                        let mut out = mime(forward(&sequence(false), &to, &cc))?;
                        out.not_before = opens;
                        c.outgoing.push(out);
                        c.forwarded.extend(to);
                        c.forwarded.extend(cc);
                    }
                    None => {
                        c.outgoing
                            .push(mime(forward(&sequence(false), &action.to, &action.cc))?);
                        c.forwarded.extend(action.to.iter().cloned());
                        c.forwarded.extend(action.cc.iter().cloned());
                    }
                }
            }
            (ActionType::Digest, _, _) => c.digests.extend(action.digest.clone()),
            (ActionType::Tag, _, _) => c.tags.extend(action.tags.iter().cloned()),
            _ => {}
        }
    }
    // The agent's reply first; the stable sort keeps the forwards in rule order.
    c.outgoing.sort_by_key(|o| o.kind != OutgoingKind::Reply);
    Ok(c)
}

/// Whether `sender` may have one more automatic reply at `t`: fewer than
/// `replies_per_sender_per_hour` in the last hour, stored or in this batch.
/// Counts it when so.
fn reply_within_limit(
    ix: &Intake<'_>,
    sender: &str,
    t: Timestamp,
    work: &mut Working,
) -> Result<bool, LookupError> {
    let limit = ix.settings.daemon.replies_per_sender_per_hour as usize;
    let hour_ago = crate::clock::before(t, Duration::from_secs(3600));
    let earlier =
        ix.lookup.replies_since(sender, hour_ago)? + work.replies.get(sender).copied().unwrap_or(0);
    if earlier >= limit {
        tracing::warn!(sender = %sender, limit, "reply rate limit reached: no automatic reply");
        return Ok(false);
    }
    *work.replies.entry(sender.to_string()).or_default() += 1;
    Ok(true)
}

/// The business hours a forward waits for, when they are closed at `t`:
/// their name, and when they next open.
fn closed_hours(
    ix: &Intake<'_>,
    action: &Action,
    t: Timestamp,
) -> Option<(String, Option<Timestamp>)> {
    let name = action.hours.as_ref()?;
    let hours = ix.config.router.hours.get(name)?;
    if hours.is_open(t) {
        return None;
    }
    Some((name.clone(), hours.next_open(t)))
}
