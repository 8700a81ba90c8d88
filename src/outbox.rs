//! The outbox's messages: what is queued to send (composed to its final
//! bytes when it is queued), and where each stands in its delivery. Plain
//! data; the store keeps them and the daemon's outbox task delivers them.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// What an outgoing message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutgoingKind {
    /// To the agent: an acknowledgement, "details needed", a joined reply.
    Reply,
    /// A case to the people the routing table names.
    Forward,
    Digest,
    /// A mailbox that is down, or works again, to the admins.
    Health,
    /// A repeat vendor, to the vendor manager.
    Vendor,
    /// A case open longer than its risk allows, re-escalated.
    Overdue,
}

impl OutgoingKind {
    /// As stored, logged and shown: `reply`, `forward`, ...
    pub fn name(self) -> &'static str {
        match self {
            OutgoingKind::Reply => "reply",
            OutgoingKind::Forward => "forward",
            OutgoingKind::Digest => "digest",
            OutgoingKind::Health => "health",
            OutgoingKind::Vendor => "vendor",
            OutgoingKind::Overdue => "overdue",
        }
    }
}

impl std::fmt::Display for OutgoingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One message to send, as queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutgoing {
    /// What it is, for logs and `cases show`.
    pub kind: OutgoingKind,
    pub case_id: Option<String>,
    /// The Message-ID it carries, without angle brackets.
    pub message_id: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    /// The whole RFC 5322 message.
    pub raw: Vec<u8>,
    /// Where in `raw` a forward carries the agent's original (its part's
    /// body): the store keeps those bytes once, however many forwards
    /// attach them.
    pub original: Option<std::ops::Range<usize>>,
    /// Not to be sent before this: a forward held for business hours.
    pub not_before: Option<Timestamp>,
}

/// Delivery state of an outbox item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Pending,
    Sent,
    /// Given up on (permanent failure): kept for a human.
    Undeliverable,
}

/// An outbox item without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub id: u64,
    pub kind: OutgoingKind,
    pub case_id: Option<String>,
    pub message_id: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub state: Delivery,
    pub attempts: u32,
    /// When to try next (pending items).
    #[serde(with = "crate::clock::seconds")]
    pub next_attempt_at: Timestamp,
    #[serde(with = "crate::clock::seconds")]
    pub queued_at: Timestamp,
    #[serde(with = "crate::clock::seconds::option")]
    pub sent_at: Option<Timestamp>,
    pub last_error: Option<String>,
}
