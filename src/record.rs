//! A stored case: the record the daemon keeps of a case over its life (its
//! first message's triage, its status and history, who it went to), and
//! the keys it is found by. Plain data, no I/O: the store keeps these,
//! the case rules change them.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::case::Case;
use crate::vendor::{CaseVendor, VendorKey};

/// A stored case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub id: String,
    /// The mailbox (by configured name) the message arrived in.
    pub mailbox: String,
    pub uid: u32,
    pub uid_validity: u32,
    #[serde(with = "crate::clock::seconds")]
    pub received_at: Timestamp,
    pub case: Case,
    /// The agent's display name, for replies.
    #[serde(default)]
    pub from_name: Option<String>,
    /// References of the agent's message, for threading replies.
    #[serde(default)]
    pub references: Vec<String>,
    /// Outbox items queued for this case.
    #[serde(default)]
    pub outbox: Vec<u64>,
    /// Digests the routing table added the case to.
    #[serde(default)]
    pub digests: Vec<String>,
    /// Tags the routing table added.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub status: Status,
    /// The resolution note (`Resolution:` / `Remarks:` of an update).
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default, with = "crate::clock::seconds::option")]
    pub resolved_at: Option<Timestamp>,
    /// The last change.
    #[serde(default = "epoch", with = "crate::clock::seconds")]
    pub updated_at: Timestamp,
    /// Every update after the opening message, oldest first.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Every address a forward of this case went to, so that routing run
    /// again after an update forwards only to whoever has not had it.
    #[serde(default)]
    pub forwarded_to: Vec<String>,
    /// When the case was re-escalated for being open too long.
    #[serde(default, with = "crate::clock::seconds::option")]
    pub overdue_at: Option<Timestamp>,
    /// The earlier case of the same order this one follows.
    #[serde(default)]
    pub follows: Option<String>,
    /// Message-IDs of the thread (the agent's original first).
    #[serde(default)]
    pub thread: Vec<String>,
    /// The vendor complained about, as resolved when the case opened, and
    /// moved from its name to its id when a later case gives the two
    /// together (see `Store::commit`). Kept as stored by updates.
    #[serde(default)]
    pub vendor: Option<CaseVendor>,
}

fn epoch() -> Timestamp {
    Timestamp::UNIX_EPOCH
}

/// Where a case stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Open,
    /// `Status: Escalated` in an update.
    Escalated,
    /// `Status: High Priority` in an update.
    HighPriority,
    Resolved,
}

impl Status {
    /// As stored and shown in tables: `open`, `high_priority`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Escalated => "escalated",
            Status::HighPriority => "high_priority",
            Status::Resolved => "resolved",
        }
    }

    /// In words: "high priority".
    pub fn label(self) -> &'static str {
        match self {
            Status::HighPriority => "high priority",
            s => s.name(),
        }
    }

    pub fn is_open(self) -> bool {
        self != Status::Resolved
    }

    /// The status an update's `Status:` field asks for, as triage
    /// canonicalises it (`resolved`, `escalated`, `high_priority`,
    /// `reopened` or `open`); `None` for anything else.
    pub fn requested(field: &str) -> Option<Requested> {
        match field {
            "resolved" => Some(Requested::Set(Status::Resolved)),
            "escalated" => Some(Requested::Set(Status::Escalated)),
            "high_priority" => Some(Requested::Set(Status::HighPriority)),
            "reopened" | "open" => Some(Requested::Reopen),
            _ => None,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an update's `Status:` line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Set(Status),
    Reopen,
}

/// One change to a case: who, when, through what, and what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(with = "crate::clock::seconds")]
    pub at: Timestamp,
    /// The sender's address, or `cli`/`daemon`.
    pub by: String,
    #[serde(default)]
    pub message_id: Option<String>,
    /// In words: "status open -> resolved", "tag #payout_fixed", ...
    pub changes: Vec<String>,
}

impl CaseRecord {
    /// A new open case.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        mailbox: &str,
        uid: u32,
        uid_validity: u32,
        received_at: Timestamp,
        case: Case,
        from_name: Option<String>,
        references: Vec<String>,
    ) -> CaseRecord {
        CaseRecord {
            thread: case.message_id.iter().map(|m| thread_key(m)).collect(),
            id,
            mailbox: mailbox.to_string(),
            uid,
            uid_validity,
            received_at,
            case,
            from_name,
            references,
            outbox: Vec::new(),
            digests: Vec::new(),
            tags: Vec::new(),
            status: Status::Open,
            resolution: None,
            resolved_at: None,
            updated_at: received_at,
            history: Vec::new(),
            forwarded_to: Vec::new(),
            overdue_at: None,
            follows: None,
            vendor: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.status.is_open()
    }

    /// The key the case's vendor complaint is counted under.
    pub fn vendor_key(&self) -> Option<&VendorKey> {
        self.vendor.as_ref().map(|v| &v.key)
    }
}

/// A Message-ID as the thread index keys it: no angle brackets, lowercase.
pub fn thread_key(message_id: &str) -> String {
    message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase()
}
