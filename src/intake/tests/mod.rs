//! Intake rules, table-driven, over a map of cases instead of the store.
//!
//! [`Memory`] is the store as intake reads it, kept in maps, and
//! [`Memory::commit`] files a batch the way `Store::commit` does (only what
//! intake reads back). Each table's rows run against the shipped config,
//! at fixed times; no sled, no servers, no wall clock.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use jiff::Timestamp;

use super::{Arrival, CaseLookup, Intake, LookupError, process};
use crate::batch::{Batch, BatchItem, BatchOutcome, Cursor, MessageKey, Seen, ServerAction};
use crate::config::{Config, Settings};
use crate::mail::Identity;
use crate::outbox::{NewOutgoing, OutgoingKind};
use crate::record::{CaseRecord, Status, thread_key};
use crate::vendor::{CaseVendor, VendorKey};

mod memory;
mod status;
mod threads;
mod timing;
mod vendors;

use memory::Memory;

// ---------------------------------------------------------------------------
// The world a table runs in: the shipped config, a mailbox, the maps.

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config::builtin().expect("the shipped config loads"))
}

struct World {
    settings: Settings,
    identity: Identity,
    own: Vec<String>,
    memory: Memory,
    /// The last UID the mailbox handed out.
    uid: u32,
}

impl World {
    /// The shipped mailtriage.toml (senders of example.com allowed, ten
    /// replies per sender per hour, mailbox `ops`).
    fn new() -> World {
        World::with_reply_limit(None)
    }

    fn with_reply_limit(limit: Option<u32>) -> World {
        let mut settings = Settings::builtin().expect("the shipped settings load");
        if let Some(n) = limit {
            settings.daemon.replies_per_sender_per_hour = n;
        }
        let identity = Identity::from_config(&settings).expect("the shipped identity");
        let own = vec![
            "mailtriage@example.com".to_string(),
            "ops@example.com".to_string(),
            "support@example.com".to_string(),
        ];
        World {
            settings,
            identity,
            own,
            memory: Memory::default(),
            uid: 0,
        }
    }

    fn intake(&self) -> Intake<'_> {
        Intake {
            config: config(),
            settings: &self.settings,
            identity: &self.identity,
            own: &self.own,
            lookup: &self.memory,
        }
    }

    /// What intake makes of `raws`, the next messages of mailbox `ops`,
    /// fetched at `t`; nothing is committed.
    fn process(&self, t: Timestamp, raws: &[Vec<u8>]) -> Result<Batch, LookupError> {
        let m = &self.settings.mailboxes[0];
        assert_eq!(m.name, "ops");
        let arrivals: Vec<Arrival<'_>> = raws
            .iter()
            .zip(self.uid + 1..)
            .map(|(raw, uid)| Arrival { uid, raw })
            .collect();
        let cursor = Cursor {
            uid_validity: 1,
            last_uid: self.uid,
        };
        let last = self.uid + raws.len() as u32;
        process(&self.intake(), m, cursor, &arrivals, last, t, &mut |n| {
            self.memory.reserve(n)
        })
    }

    /// Processes `raws` at `t` and commits the batch.
    fn run(&mut self, t: Timestamp, raws: &[Vec<u8>]) -> Batch {
        let batch = self
            .process(t, raws)
            .unwrap_or_else(|e| panic!("intake failed: {e}"));
        assert_eq!(batch.cursor.last_uid, self.uid + raws.len() as u32);
        self.memory.commit(&batch);
        self.uid += raws.len() as u32;
        batch
    }

    /// Stored case number `n` of this year.
    fn case(&self, n: u32) -> &CaseRecord {
        let id = case_id(n);
        self.memory
            .cases
            .get(&id)
            .unwrap_or_else(|| panic!("no case {id}"))
    }

    /// The Message-IDs of what case `n` sent of `kind`, oldest first.
    fn sent(&self, n: u32, kind: OutgoingKind) -> Vec<String> {
        let id = case_id(n);
        self.memory
            .sent
            .iter()
            .filter(|o| o.kind == kind && o.case_id.as_deref() == Some(id.as_str()))
            .map(|o| o.message_id.clone())
            .collect()
    }
}

fn case_id(n: u32) -> String {
    format!("ESC-2026-{n:06}")
}

/// The Message-ID of case `n`'s acknowledgement, when the acknowledgement
/// is its first routing action (a calm escalation, forwarded to no one):
/// a message of a case is named by the action that sent it.
fn ack(n: u32) -> String {
    format!("{}.reply.0@mailtriage.example.com", case_id(n))
}

// ---------------------------------------------------------------------------
// Times. T0 is Tuesday 24 November 2026, 10:00 in New York (Tier 2 open).

const MIN: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// `secs` after T0.
fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(utc("2026-11-24T15:00:00Z").as_second() + secs).expect("a time")
}

// ---------------------------------------------------------------------------
// Messages, as agents write them.

const RAVI: &str = "Ravi Kumar <ravi.k@example.com>";
const DEEPA: &str = "Deepa R <deepa.r@example.com>";
const CX: &str = "CX Support <cx.support@example.com>";

/// Issues, by what triage makes of them (risk, tier).
const CALM: &str = "The customer wants a callback about the quote.";
/// Fraud: risk 5, Tier 1 (the supervisor).
const SCAM: &str = "The customer says our pickup was a scam.";
/// Honesty questioned: risk 4, Tier 1.
const LYING: &str = "The customer says the agent was lying to him.";
/// A review threat: Tier 2.
const TRUSTPILOT: &str = "She will post a one-star review on Trustpilot today.";
/// A legal threat: risk 5, Tier 2.
const LAWYER: &str = "He says he will get a lawyer and sue us.";
/// A media threat: risk 5, Tier 2.
const JOURNALIST: &str = "His cousin is a journalist and will write about it.";

/// A message with these header lines (no trailing CRLF) and body.
fn mail(headers: &str, body: &str) -> Vec<u8> {
    format!("{headers}\r\nTo: ops@example.com\r\nDate: Tue, 24 Nov 2026 20:00:00 +0530\r\n\r\n{body}\r\n")
        .into_bytes()
}

/// An escalation of `order` by `from`, Message-ID `mid`.
fn escalation(mid: &str, from: &str, order: &str, issue: &str) -> Vec<u8> {
    with_vendor(mid, from, order, issue, None)
}

fn with_vendor(mid: &str, from: &str, order: &str, issue: &str, vendor: Option<&str>) -> Vec<u8> {
    let vendor = vendor.map_or(String::new(), |v| format!("Vendor: {v}\r\n"));
    mail(
        &format!("From: {from}\r\nSubject: Escalation (Order #{order})\r\nMessage-ID: <{mid}>"),
        &format!(
            "Customer Name: Asha Rao\r\nOrder ID: {order}\r\nPhone: 98450 12345\r\n{vendor}Issue: {issue}"
        ),
    )
}

/// A pickup complaint about `vendor` (written as the agent wrote it), the
/// `n`th of the test, about order CK9<n>.
fn complaint(n: u32, vendor: &str) -> Vec<u8> {
    with_vendor(
        &format!("complaint{n}@mail.example.com"),
        RAVI,
        &format!("CK9{n:03}"),
        "The vendor came three hours late for the pickup.",
        Some(vendor),
    )
}

/// A reply by `from` to the message `to_mid`, in its thread.
fn answer(mid: &str, from: &str, to_mid: &str, body: &str) -> Vec<u8> {
    mail(
        &format!(
            "From: {from}\r\nSubject: Re: Customer callback\r\nMessage-ID: <{mid}>\r\nIn-Reply-To: <{to_mid}>\r\nReferences: <{to_mid}>"
        ),
        body,
    )
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------
// What a message came to, and what it sends.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Opened(String),
    Updated(String),
    Ignored(String),
    Quarantined(String),
    /// No item: seen before.
    Nothing,
}

fn opened(n: u32) -> Got {
    Got::Opened(case_id(n))
}

fn updated(n: u32) -> Got {
    Got::Updated(case_id(n))
}

fn ignored(reason: &str) -> Got {
    Got::Ignored(reason.to_string())
}

/// An outgoing message as the tables compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mail {
    kind: OutgoingKind,
    to: Vec<String>,
    not_before: Option<Timestamp>,
}

fn mail_to(kind: OutgoingKind, to: &[&str], not_before: Option<Timestamp>) -> Mail {
    Mail {
        kind,
        to: to.iter().map(|s| s.to_string()).collect(),
        not_before,
    }
}

/// A reply to the agent (an acknowledgement, a joined reply, ...).
fn reply(to: &str) -> Mail {
    mail_to(OutgoingKind::Reply, &[to], None)
}

fn forward(to: &[&str]) -> Mail {
    mail_to(OutgoingKind::Forward, to, None)
}

/// A forward held until `until`.
fn held(to: &[&str], until: Timestamp) -> Mail {
    mail_to(OutgoingKind::Forward, to, Some(until))
}

fn vendor_report() -> Mail {
    mail_to(OutgoingKind::Vendor, &["vendor.manager@example.com"], None)
}

const TIER2: &str = "tier2@example.com";
const SUPERVISOR: &str = "supervisor.oncall@example.com";
const CX_TEAM: &str = "cx@example.com";

fn item(batch: &Batch, uid: u32) -> Option<&BatchItem> {
    batch.items.iter().find(|i| i.uid == uid)
}

fn outgoing(item: Option<&BatchItem>) -> &[NewOutgoing] {
    match item.map(|i| &i.outcome) {
        Some(BatchOutcome::Case { outgoing, .. } | BatchOutcome::Update { outgoing, .. }) => {
            outgoing
        }
        _ => &[],
    }
}

/// What message `uid` of `batch` came to and sent. Checks on the way that
/// a message counted as replied to is the one that has a reply.
fn result(batch: &Batch, uid: u32) -> (Got, Vec<Mail>) {
    let item = item(batch, uid);
    let got = match item.map(|i| &i.outcome) {
        None => Got::Nothing,
        Some(BatchOutcome::Case { record, .. }) => Got::Opened(record.id.clone()),
        Some(BatchOutcome::Update { record, .. }) => Got::Updated(record.id.clone()),
        Some(BatchOutcome::Ignored { reason }) => Got::Ignored(reason.clone()),
        Some(BatchOutcome::Quarantined { error }) => Got::Quarantined(error.clone()),
    };
    let mail: Vec<Mail> = outgoing(item)
        .iter()
        .map(|o| Mail {
            kind: o.kind,
            to: o.recipients.clone(),
            not_before: o.not_before,
        })
        .collect();
    if let Some(BatchOutcome::Case { replied_to, .. } | BatchOutcome::Update { replied_to, .. }) =
        item.map(|i| &i.outcome)
    {
        let replies: Vec<&Mail> = mail
            .iter()
            .filter(|m| m.kind == OutgoingKind::Reply)
            .collect();
        match replied_to {
            Some(sender) => {
                assert_eq!(replies.len(), 1, "uid {uid}: replied to {sender}");
                assert_eq!(replies[0].to, std::slice::from_ref(sender), "uid {uid}");
            }
            None => assert!(replies.is_empty(), "uid {uid}: a reply not counted"),
        }
    }
    (got, mail)
}

/// One row of a table of batches.
struct Row {
    name: &'static str,
    /// Batches committed first, each at its time.
    given: Vec<(Timestamp, Vec<Vec<u8>>)>,
    /// The batch under test, processed and committed at `at`.
    at: Timestamp,
    batch: Vec<Vec<u8>>,
    /// What each message of the batch comes to, and the mail it sends.
    want: Vec<(Got, Vec<Mail>)>,
    /// What the stored cases (or the batch) must be after it.
    then: fn(&str, &World, &Batch),
}

fn no_more(_: &str, _: &World, _: &Batch) {}

/// Runs each row in a world of its own made by `world`.
fn check_rows(world: fn() -> World, rows: Vec<Row>) {
    for row in rows {
        let mut w = world();
        for (at, raws) in &row.given {
            w.run(*at, raws);
        }
        let first = w.uid + 1;
        let batch = w.run(row.at, &row.batch);
        assert_eq!(
            row.want.len(),
            row.batch.len(),
            "{}: one want per message",
            row.name
        );
        for ((want_got, want_mail), uid) in row.want.iter().zip(first..) {
            let (got, mail) = result(&batch, uid);
            assert_eq!(&got, want_got, "{}: message {}", row.name, uid + 1 - first);
            assert_eq!(
                &mail,
                want_mail,
                "{}: mail of message {}",
                row.name,
                uid + 1 - first
            );
        }
        (row.then)(row.name, &w, &batch);
    }
}

/// The changes of case `n`'s last history entry.
fn last_changes(w: &World, n: u32) -> Vec<String> {
    w.case(n)
        .history
        .last()
        .map(|h| h.changes.clone())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------

/// Steps on one world, in order: each batch at its time, what each message
/// comes to and sends.
struct Step {
    name: &'static str,
    at: Timestamp,
    batch: Vec<Vec<u8>>,
    want: Vec<(Got, Vec<Mail>)>,
}

fn check_steps(w: &mut World, steps: Vec<Step>) -> Vec<Batch> {
    let mut batches = Vec::new();
    for step in steps {
        let first = w.uid + 1;
        let batch = w.run(step.at, &step.batch);
        assert_eq!(
            step.want.len(),
            step.batch.len(),
            "{}: one want per message",
            step.name
        );
        for ((want_got, want_mail), uid) in step.want.iter().zip(first..) {
            let (got, mail) = result(&batch, uid);
            assert_eq!(&got, want_got, "{}: message {}", step.name, uid + 1 - first);
            assert_eq!(
                &mail,
                want_mail,
                "{}: mail of message {}",
                step.name,
                uid + 1 - first
            );
        }
        batches.push(batch);
    }
    batches
}
