//! The mail the daemon sends, composed to its final bytes: replies to
//! agents, forwards to managers, digests and notices. Pure: no I/O; the
//! date is a value passed in.
//!
//! Every message is composed when it is queued (with a Message-ID fixed
//! then), stored in the outbox, and only then delivered: a resend after a
//! crash is byte for byte the same message. Every message carries
//! `Auto-Submitted` (RFC 3834: `auto-replied` for replies to agents,
//! `auto-generated` for forwards, alerts and digests) and
//! `X-Auto-Response-Suppress: All`, so that well-behaved software never
//! answers it; [`reply_allowed`](crate::intake::reply_allowed) is the other
//! half, refusing to answer automatic mail.

use std::time::SystemTime;

use lettre::message::header::{ContentType, ContentTypeErr, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MessageBuilder, MultiPart, SinglePart};
use lettre::{Address, Message};

use crate::message::Email;
use crate::outbox::{NewOutgoing, OutgoingKind};
use crate::route::Rendered;

mod original;
#[cfg(test)]
mod tests;

pub(crate) use original::seven_bit;
pub use original::{Original, OriginalPart, Unfit};

/// Who the daemon is when it sends.
#[derive(Debug, Clone)]
pub struct Identity {
    /// From: and envelope sender.
    pub from: Mailbox,
    /// The right-hand side of Message-IDs.
    pub domain: String,
}

impl Identity {
    /// Who the daemon is, from `[smtp] from` and `[daemon] domain`.
    pub fn from_config(daemon: &crate::config::Settings) -> Result<Identity, FromError> {
        let from = daemon.smtp.from.parse().map_err(|source| FromError {
            from: daemon.smtp.from.clone(),
            source,
        })?;
        Ok(Identity {
            from,
            domain: daemon.daemon.domain.clone(),
        })
    }
}

/// `[smtp] from` is not an address.
#[derive(Debug, thiserror::Error)]
#[error(
    "[smtp] from: expected an address such as \"Escalations <mailtriage@example.com>\", found {from:?} ({source})"
)]
pub struct FromError {
    from: String,
    #[source]
    source: lettre::address::AddressError,
}

/// Why a message could not be composed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("invalid address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("building the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("message has no recipient")]
    NoRecipient,
    #[error("content type: {0}")]
    ContentType(#[from] ContentTypeErr),
    /// lettre would not base64-encode the original.
    #[error("content type: base64 refused")]
    Base64Refused,
}

fn mailbox(addr: &str) -> Result<Mailbox, ComposeError> {
    addr.trim()
        .parse::<Address>()
        .map(|a| Mailbox::new(None, a))
        .map_err(|source| ComposeError::Address {
            address: addr.to_string(),
            source,
        })
}

fn header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
}

/// The Message-ID of a case's message of `kind`, `seq` saying which (see
/// the intake's occasions: `0`, `u3.1`, `1.now`).
fn message_id(identity: &Identity, case_id: &str, kind: &str, seq: &str) -> String {
    format!("{case_id}.{kind}.{seq}@{}", identity.domain)
}

fn finish(
    body: Result<Message, lettre::error::Error>,
    kind: OutgoingKind,
    case_id: Option<&str>,
    message_id: String,
    identity: &Identity,
) -> Result<NewOutgoing, ComposeError> {
    let message = body?;
    let recipients: Vec<String> = message
        .envelope()
        .to()
        .iter()
        .map(|a| a.to_string())
        .collect();
    if recipients.is_empty() {
        return Err(ComposeError::NoRecipient);
    }
    Ok(NewOutgoing {
        kind,
        case_id: case_id.map(str::to_string),
        message_id,
        envelope_from: identity.from.email.to_string(),
        recipients,
        raw: message.formatted(),
        original: None,
        not_before: None,
    })
}

fn base(
    identity: &Identity,
    message_id: &str,
    subject: &str,
    date: SystemTime,
    auto: &str,
    high_importance: bool,
) -> lettre::message::MessageBuilder {
    let b = Message::builder()
        .from(identity.from.clone())
        .subject(subject)
        .date(date)
        .message_id(Some(format!("<{message_id}>")))
        .raw_header(header("Auto-Submitted", auto))
        .raw_header(header("X-Auto-Response-Suppress", "All"));
    if high_importance {
        // RFC 2156's Importance, and the X-Priority that Outlook and
        // Apple Mail show as a flag.
        b.raw_header(header("Importance", "high"))
            .raw_header(header("X-Priority", "1 (Highest)"))
    } else {
        b
    }
}

/// `b` addressed: To, Cc and Reply-To, each address checked.
fn addressed(
    mut b: MessageBuilder,
    to: &[String],
    cc: &[String],
    reply_to: Option<&str>,
) -> Result<MessageBuilder, ComposeError> {
    for a in to {
        b = b.to(mailbox(a)?);
    }
    for a in cc {
        b = b.cc(mailbox(a)?);
    }
    if let Some(r) = reply_to {
        b = b.reply_to(mailbox(r)?);
    }
    Ok(b)
}

/// A reply to the agent, threaded to the agent's message.
#[allow(clippy::too_many_arguments)]
pub fn compose_reply(
    identity: &Identity,
    case_id: &str,
    seq: &str,
    to: &str,
    reply_to: Option<&str>,
    rendered: &Rendered,
    original: &Email,
    date: SystemTime,
) -> Result<NewOutgoing, ComposeError> {
    let id = message_id(identity, case_id, "reply", seq);
    let b = base(
        identity,
        &id,
        &rendered.subject,
        date,
        "auto-replied",
        rendered.high_importance,
    );
    let mut b = addressed(b, &[to.to_string()], &[], reply_to)?;
    if let Some(parent) = &original.message_id {
        let mut refs: Vec<String> = original
            .references
            .iter()
            .map(|r| format!("<{r}>"))
            .collect();
        refs.push(format!("<{parent}>"));
        b = b
            .in_reply_to(format!("<{parent}>"))
            .references(refs.join(" "));
    }
    let body = b.singlepart(text_part(&rendered.body)?);
    finish(body, OutgoingKind::Reply, Some(case_id), id, identity)
}

/// A forward to managers: the rendered summary first, then the agent's
/// original (see [`OriginalPart`]).
#[allow(clippy::too_many_arguments)]
pub fn compose_forward(
    identity: &Identity,
    case_id: &str,
    seq: &str,
    to: &[String],
    cc: &[String],
    reply_to: Option<&str>,
    rendered: &Rendered,
    original: &Original,
    date: SystemTime,
) -> Result<NewOutgoing, ComposeError> {
    let id = message_id(identity, case_id, "forward", seq);
    let mut b = base(
        identity,
        &id,
        &rendered.subject,
        date,
        "auto-generated",
        rendered.high_importance,
    );
    b = addressed(b, to, cc, reply_to)?;
    let (part, encoded) = original.mime_part()?;
    let body = b.multipart(
        MultiPart::mixed()
            .singlepart(text_part(&rendered.body)?)
            .singlepart(part),
    );
    let mut out = finish(body, OutgoingKind::Forward, Some(case_id), id, identity)?;
    out.original = original::locate(&out.raw, &encoded);
    Ok(out)
}

/// A digest: text and HTML alternatives, for reading on a phone.
#[allow(clippy::too_many_arguments)]
pub fn compose_digest(
    identity: &Identity,
    name: &str,
    period: i64,
    to: &[String],
    subject: &str,
    text: &str,
    html: &str,
    date: SystemTime,
) -> Result<NewOutgoing, ComposeError> {
    let id = format!("digest.{name}.{period}@{}", identity.domain);
    let b = base(identity, &id, subject, date, "auto-generated", false);
    let b = addressed(b, to, &[], None)?;
    let body = b.multipart(MultiPart::alternative_plain_html(
        text.to_string(),
        html.to_string(),
    ));
    finish(body, OutgoingKind::Digest, None, id, identity)
}

/// A notice: a health alert (no case), a repeat-vendor report or an
/// overdue re-escalation (the case that caused it). `reply_to` for a
/// notice that invites a reply about its case.
#[allow(clippy::too_many_arguments)]
pub fn compose_notice(
    identity: &Identity,
    kind: OutgoingKind,
    key: &str,
    case_id: Option<&str>,
    to: &[String],
    reply_to: Option<&str>,
    rendered: &Rendered,
    date: SystemTime,
) -> Result<NewOutgoing, ComposeError> {
    let id = format!("{kind}.{key}@{}", identity.domain);
    let mut b = base(
        identity,
        &id,
        &rendered.subject,
        date,
        "auto-generated",
        rendered.high_importance,
    );
    b = addressed(b, to, &[], reply_to)?;
    let body = b.singlepart(text_part(&rendered.body)?);
    finish(body, kind, case_id, id, identity)
}

/// A text part as every letter carries it: `format=flowed` (RFC 3676),
/// wrapped to 78 columns for mail programs that do not reflow, joined
/// again and fitted to the screen by those that do. Its last line break
/// goes: lettre ends a part with one of its own.
fn text_part(text: &str) -> Result<SinglePart, ComposeError> {
    let flowed = crate::text::flowed(text, crate::text::WIDTH);
    let ct = ContentType::parse("text/plain; charset=utf-8; format=flowed")?;
    Ok(SinglePart::builder()
        .header(ct)
        .body(flowed.strip_suffix('\n').unwrap_or(&flowed).to_string()))
}
