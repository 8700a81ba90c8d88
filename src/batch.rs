//! What one batch of a mailbox's messages came to, as the store commits it
//! in one transaction: for each message its key and outcome (a case opened
//! or updated with the mail it sends, left alone, quarantined), the
//! mailbox's new cursor, and what the server must then be told. Plain
//! data: intake makes batches, the store keeps them.

use serde::{Deserialize, Serialize};

use crate::outbox::NewOutgoing;
use crate::record::CaseRecord;
use crate::vendor::VendorKey;

/// Identifies a message whatever its UID: Message-ID and a digest of its
/// bytes (a Message-ID alone is not unique in practice, and may be absent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey(String);

impl MessageKey {
    pub fn new(message_id: Option<&str>, raw: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, raw);
        let mut hex = String::with_capacity(64);
        for b in digest.as_ref() {
            hex.push_str(&format!("{b:02x}"));
        }
        let id = message_id.unwrap_or("").trim().to_ascii_lowercase();
        MessageKey(format!("{id}\u{0}{hex}"))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Where a mailbox's processing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub uid_validity: u32,
    /// Highest UID processed (0: none).
    pub last_uid: u32,
}

/// What became of a processed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Seen {
    /// It opened this case.
    Case { case_id: String },
    /// It updated this case (a reply in its thread, or a second escalation
    /// for the same order).
    Update { case_id: String },
    /// It was read and deliberately left alone (not an escalation, unknown
    /// sender, automatic mail).
    Ignored { reason: String },
    /// It could not be processed; a human must look at it.
    Quarantined { error: String },
}

/// In words, for logs: "opened ESC-2026-000123", "ignored: not_escalation".
impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Case { case_id } => write!(f, "opened {case_id}"),
            Seen::Update { case_id } => write!(f, "updated {case_id}"),
            Seen::Ignored { reason } => write!(f, "ignored: {reason}"),
            Seen::Quarantined { error } => write!(f, "quarantined: {error}"),
        }
    }
}

/// The last message of a mailbox a batch processed: what `mailtriage
/// status` says a mailbox last did, with or without a daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastMessage {
    pub uid: u32,
    /// When its batch was committed.
    #[serde(with = "crate::clock::seconds")]
    pub at: jiff::Timestamp,
    /// What became of it.
    pub seen: Seen,
}

/// What the server must be told about a committed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerAction {
    /// Processed: set `\Seen` and/or move, as the mailbox is configured.
    Processed,
    /// Move to the quarantine folder.
    Quarantine,
}

/// Server actions committed with a batch and not yet confirmed done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub uid_validity: u32,
    pub actions: Vec<(u32, ServerAction)>,
}

/// One processed message of a batch.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub key: MessageKey,
    pub uid: u32,
    pub outcome: BatchOutcome,
}

#[derive(Debug, Clone)]
pub enum BatchOutcome {
    /// A new case (its id reserved with `Store::reserve_case_id`) and the
    /// messages its actions send.
    Case {
        record: Box<CaseRecord>,
        outgoing: Vec<NewOutgoing>,
        /// The sender got an automatic reply (counted for the rate limit).
        replied_to: Option<String>,
    },
    /// An update of an existing case: the case as it is now, and what the
    /// update sends.
    Update {
        record: Box<CaseRecord>,
        outgoing: Vec<NewOutgoing>,
        replied_to: Option<String>,
    },
    Ignored {
        reason: String,
    },
    Quarantined {
        error: String,
    },
}

/// A batch of processed messages of one mailbox, committed together.
#[derive(Debug, Clone)]
pub struct Batch {
    pub mailbox: String,
    pub cursor: Cursor,
    pub items: Vec<BatchItem>,
    /// What to do on the server once the batch is stored (including for
    /// messages seen before); kept until `Store::clear_pending`.
    pub server: Vec<(u32, ServerAction)>,
    pub now: jiff::Timestamp,
    /// Vendors reported to the vendor manager by this batch.
    pub vendors_reported: Vec<VendorKey>,
}

#[cfg(test)]
mod tests {
    use super::{MessageKey, Seen};

    #[test]
    fn message_keys_tell_messages_apart() {
        let a = MessageKey::new(Some("X@example.com"), b"one");
        assert_eq!(a, MessageKey::new(Some("x@example.com"), b"one"));
        assert_ne!(a, MessageKey::new(Some("x@example.com"), b"two"));
        assert_ne!(a, MessageKey::new(None, b"one"));
    }

    #[test]
    fn seen_in_words() {
        for (seen, words) in [
            (
                Seen::Case {
                    case_id: "ESC-2026-000001".into(),
                },
                "opened ESC-2026-000001",
            ),
            (
                Seen::Update {
                    case_id: "ESC-2026-000002".into(),
                },
                "updated ESC-2026-000002",
            ),
            (
                Seen::Ignored {
                    reason: "not_escalation".into(),
                },
                "ignored: not_escalation",
            ),
            (
                Seen::Quarantined {
                    error: "not an email".into(),
                },
                "quarantined: not an email",
            ),
        ] {
            assert_eq!(seen.to_string(), words);
        }
    }
}
