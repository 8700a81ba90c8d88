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

// ---------------------------------------------------------------------------
// The store, in maps.

/// What the store keeps that intake reads, as `Store::commit` files it.
#[derive(Default)]
struct Memory {
    cases: BTreeMap<String, CaseRecord>,
    /// Every Message-ID of a case's thread ([`thread_key`]) to the case.
    threads: HashMap<String, String>,
    /// Order (trimmed, lowercase) to its latest case.
    orders: HashMap<String, String>,
    seen: HashMap<MessageKey, Seen>,
    /// Automatic replies: the sender (lowercase) and when.
    replies: Vec<(String, Timestamp)>,
    /// A vendor name to the id it was first given with.
    aliases: HashMap<VendorKey, VendorKey>,
    /// Complaints: the key counted under, when the case opened, the case.
    complaints: Vec<(VendorKey, Timestamp, String)>,
    reported: HashMap<VendorKey, Timestamp>,
    /// Everything committed batches send, in order.
    sent: Vec<NewOutgoing>,
    /// Case ids handed out so far.
    reserved: Cell<u32>,
    /// The lookup (by method name, or `reserve`) that fails.
    fail: Option<&'static str>,
}

fn order_key(order: &str) -> String {
    order.trim().to_ascii_lowercase()
}

impl Memory {
    fn check(&self, method: &'static str) -> Result<(), LookupError> {
        if self.fail == Some(method) {
            return Err(LookupError(format!("{method}: the disk went away").into()));
        }
        Ok(())
    }

    /// `n` new case ids, as `Store::reserve_case_ids` hands them out.
    fn reserve(&self, n: usize) -> Result<Vec<String>, LookupError> {
        self.check("reserve")?;
        let first = self.reserved.get();
        let last = first + u32::try_from(n).expect("a few ids");
        self.reserved.set(last);
        Ok((first + 1..=last).map(case_id).collect())
    }

    /// Files a batch: for each message not seen before its `seen` entry,
    /// its case with the thread, order and vendor indexes, the mail it
    /// sends (whose Message-IDs join the thread) and the reply it counts;
    /// then the vendors reported.
    fn commit(&mut self, batch: &Batch) {
        for item in &batch.items {
            if self.seen.contains_key(&item.key) {
                continue;
            }
            let seen = match &item.outcome {
                BatchOutcome::Case {
                    record,
                    outgoing,
                    replied_to,
                }
                | BatchOutcome::Update {
                    record,
                    outgoing,
                    replied_to,
                } => {
                    let new = matches!(item.outcome, BatchOutcome::Case { .. });
                    self.write_case(record, outgoing, new);
                    if let Some(sender) = replied_to {
                        self.replies.push((sender.to_ascii_lowercase(), batch.now));
                    }
                    let case_id = record.id.clone();
                    if new {
                        Seen::Case { case_id }
                    } else {
                        Seen::Update { case_id }
                    }
                }
                BatchOutcome::Ignored { reason } => Seen::Ignored {
                    reason: reason.clone(),
                },
                BatchOutcome::Quarantined { error } => Seen::Quarantined {
                    error: error.clone(),
                },
            };
            self.seen.insert(item.key.clone(), seen);
        }
        for vendor in &batch.vendors_reported {
            let vendor = match self.aliases.get(vendor) {
                Some(id) if !vendor.is_id() => id.clone(),
                _ => vendor.clone(),
            };
            self.reported.insert(vendor, batch.now);
        }
    }

    fn write_case(&mut self, record: &CaseRecord, outgoing: &[NewOutgoing], new: bool) {
        let mut record = record.clone();
        if let Some(prev) = self.cases.get(&record.id) {
            // Set when the case opened; moved only by `learn_vendor`.
            record.vendor = prev.vendor.clone();
        }
        for out in outgoing {
            self.threads
                .insert(thread_key(&out.message_id), record.id.clone());
            self.sent.push(out.clone());
        }
        for m in &record.thread {
            self.threads.insert(m.clone(), record.id.clone());
        }
        if new {
            if let Some(order) = &record.case.fields.order_id {
                self.orders.insert(order_key(order), record.id.clone());
            }
            if let Some(key) = record.vendor_key() {
                self.complaints
                    .push((key.clone(), record.received_at, record.id.clone()));
            }
        }
        let vendor = record.vendor.clone();
        self.cases.insert(record.id.clone(), record);
        if new && let Some(v) = vendor {
            self.learn_vendor(&v);
        }
    }

    /// A name given with an id for the first time becomes the id's alias:
    /// its complaints, their cases and its report move to the id.
    fn learn_vendor(&mut self, v: &CaseVendor) {
        let Some(name) = &v.name else { return };
        if !v.key.is_id() || self.aliases.contains_key(name) {
            return;
        }
        self.aliases.insert(name.clone(), v.key.clone());
        for (key, _, id) in &mut self.complaints {
            if key == name {
                *key = v.key.clone();
                if let Some(cv) = self.cases.get_mut(id).and_then(|r| r.vendor.as_mut())
                    && cv.key == *name
                {
                    cv.key = v.key.clone();
                }
            }
        }
        if let Some(at) = self.reported.remove(name) {
            let to = self.reported.entry(v.key.clone()).or_insert(at);
            *to = (*to).max(at);
        }
    }
}

impl CaseLookup for Memory {
    fn seen(&self, key: &MessageKey) -> Result<Option<Seen>, LookupError> {
        self.check("seen")?;
        Ok(self.seen.get(key).cloned())
    }

    fn case(&self, id: &str) -> Result<Option<CaseRecord>, LookupError> {
        self.check("case")?;
        Ok(self.cases.get(id).cloned())
    }

    fn thread_case(&self, message_ids: &[String]) -> Result<Option<String>, LookupError> {
        self.check("thread_case")?;
        Ok(message_ids
            .iter()
            .find_map(|m| self.threads.get(&thread_key(m)).cloned()))
    }

    fn order_case(&self, order_id: &str) -> Result<Option<String>, LookupError> {
        self.check("order_case")?;
        Ok(self.orders.get(&order_key(order_id)).cloned())
    }

    fn replies_since(&self, sender: &str, since: Timestamp) -> Result<usize, LookupError> {
        self.check("replies_since")?;
        let sender = sender.to_ascii_lowercase();
        Ok(self
            .replies
            .iter()
            .filter(|(s, at)| *s == sender && *at >= since)
            .count())
    }

    fn vendor_alias(&self, name: &VendorKey) -> Result<Option<VendorKey>, LookupError> {
        self.check("vendor_alias")?;
        Ok(self.aliases.get(name).cloned())
    }

    fn vendor_cases(
        &self,
        vendor: &VendorKey,
        since: Timestamp,
    ) -> Result<Vec<String>, LookupError> {
        self.check("vendor_cases")?;
        let mut found: Vec<(Timestamp, String)> = self
            .complaints
            .iter()
            .filter(|(k, at, _)| k == vendor && *at >= since)
            .map(|(_, at, id)| (*at, id.clone()))
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    fn vendor_reported_at(&self, vendor: &VendorKey) -> Result<Option<Timestamp>, LookupError> {
        self.check("vendor_reported_at")?;
        Ok(self.reported.get(vendor).copied())
    }
}

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
// The tables.

#[test]
fn which_case_a_message_belongs_to() {
    let calm_case = || {
        (
            t(0),
            vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
        )
    };
    let resolve = |mid: &str| answer(mid, CX, "a1@mail.example.com", "Status: Resolved");
    let rows = vec![
        Row {
            name: "a reply to the acknowledgement updates its case",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![answer(
                "r1@mail.example.com",
                RAVI,
                &ack(1),
                "The customer called again.",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.sent(1, OutgoingKind::Reply), [ack(1)], "{name}");
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Open, "{name}");
                assert_eq!(rec.history.len(), 1, "{name}");
                assert_eq!(rec.history[0].by, "ravi.k@example.com", "{name}");
                assert_eq!(rec.history[0].at, t(HOUR), "{name}");
                assert!(
                    rec.thread.contains(&"r1@mail.example.com".to_string()),
                    "{name}: the reply joins the thread: {:?}",
                    rec.thread
                );
            },
        },
        Row {
            name: "a reply naming the agent's message in References alone updates its case",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![mail(
                &format!(
                    "From: {CX}\r\nSubject: Re: Customer callback\r\nMessage-ID: <r2@mail.example.com>\r\nIn-Reply-To: <unknown@mail.example.com>\r\nReferences: <A1@Mail.Example.com> <unknown@mail.example.com>"
                ),
                "We called the customer back.",
            )],
            want: vec![(updated(1), vec![])],
            then: no_more,
        },
        Row {
            name: "a reply to a reply in the thread updates the case",
            given: vec![
                calm_case(),
                (
                    t(HOUR),
                    vec![answer("r1@mail.example.com", RAVI, &ack(1), "Any news?")],
                ),
            ],
            at: t(2 * HOUR),
            batch: vec![answer(
                "r2@mail.example.com",
                CX,
                "r1@mail.example.com",
                "Status: Escalated",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| assert_eq!(w.case(1).status, Status::Escalated, "{name}"),
        },
        Row {
            name: "a reply to a forward updates the case",
            given: vec![(
                t(0),
                vec![escalation("a1@mail.example.com", RAVI, "CK1", SCAM)],
            )],
            at: t(HOUR),
            batch: vec![answer(
                "r1@mail.example.com",
                "supervisor.oncall@example.com",
                "ESC-2026-000001.forward.0@mailtriage.example.com",
                "Status: Resolved",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(
                    w.sent(1, OutgoingKind::Forward),
                    ["ESC-2026-000001.forward.0@mailtriage.example.com"],
                    "{name}"
                );
                assert_eq!(w.case(1).status, Status::Resolved, "{name}");
            },
        },
        Row {
            name: "a reply to a message opened earlier in the same batch updates its case",
            given: vec![],
            at: t(0),
            batch: vec![
                escalation("a1@mail.example.com", RAVI, "CK1", CALM),
                answer(
                    "r1@mail.example.com",
                    CX,
                    "a1@mail.example.com",
                    "Status: Resolved\r\nResolution: Called back.",
                ),
            ],
            want: vec![
                (opened(1), vec![reply("ravi.k@example.com")]),
                (updated(1), vec![]),
            ],
            then: |name, w, batch| {
                assert_eq!(w.case(1).status, Status::Resolved, "{name}");
                assert_eq!(w.case(1).resolved_at, Some(t(0)), "{name}");
                assert_eq!(w.memory.cases.len(), 1, "{name}");
                assert_eq!(
                    batch.server,
                    [(1, ServerAction::Processed), (2, ServerAction::Processed)],
                    "{name}"
                );
            },
        },
        Row {
            name: "the case id in the subject alone updates that case",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![mail(
                &format!(
                    "From: {CX}\r\nSubject: Payout sorted [ESC-2026-000001]\r\nMessage-ID: <r1@mail.example.com>"
                ),
                "Status: Resolved\r\nResolution: Vendor warned.",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Resolved, "{name}");
                assert_eq!(rec.resolution.as_deref(), Some("Vendor warned."), "{name}");
            },
        },
        Row {
            name: "an unknown case id in the subject updates nothing",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![mail(
                &format!(
                    "From: {CX}\r\nSubject: Re: Payout sorted [ESC-2026-000099]\r\nMessage-ID: <r1@mail.example.com>"
                ),
                "Status: Resolved",
            )],
            want: vec![(ignored("status_update"), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Open, "{name}");
                assert!(w.case(1).history.is_empty(), "{name}");
            },
        },
        Row {
            name: "an escalation with an unknown case id in its subject opens a case",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![mail(
                &format!(
                    "From: {DEEPA}\r\nSubject: Escalation [ESC-2026-000099] (Order #CK2)\r\nMessage-ID: <b1@mail.example.com>"
                ),
                "Customer Name: Asha Rao\r\nOrder ID: CK2\r\nPhone: 98450 12345\r\nIssue: A callback.",
            )],
            want: vec![(opened(2), vec![reply("deepa.r@example.com")])],
            then: no_more,
        },
        Row {
            name: "a second escalation of an order with an open case joins it",
            given: vec![calm_case()],
            at: t(DAY),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "ck1 ", CALM)],
            want: vec![(updated(1), vec![reply("deepa.r@example.com")])],
            then: |name, w, batch| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Open, "{name}");
                assert_eq!(rec.history.len(), 1, "{name}");
                assert_eq!(rec.history[0].by, "deepa.r@example.com", "{name}");
                // The joined reply threads to Deepa's message and names the case.
                let out = &outgoing(item(batch, 2))[0];
                assert_eq!(out.case_id.as_deref(), Some("ESC-2026-000001"), "{name}");
                let text = String::from_utf8_lossy(&out.raw);
                assert!(
                    text.contains("In-Reply-To: <b1@mail.example.com>"),
                    "{name}: {text}"
                );
                assert!(text.contains("[ESC-2026-000001]"), "{name}: {text}");
                assert!(text.contains("already has a case"), "{name}: {text}");
                assert_eq!(w.memory.cases.len(), 1, "{name}");
            },
        },
        Row {
            name: "a second escalation of an order long open still joins it",
            given: vec![calm_case()],
            at: t(60 * DAY),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "CK1", CALM)],
            want: vec![(updated(1), vec![reply("deepa.r@example.com")])],
            then: no_more,
        },
        Row {
            name: "two escalations of one order in one batch make one case",
            given: vec![],
            at: t(0),
            batch: vec![
                escalation("a1@mail.example.com", RAVI, "CK1", CALM),
                escalation("b1@mail.example.com", DEEPA, "CK1", CALM),
            ],
            want: vec![
                (opened(1), vec![reply("ravi.k@example.com")]),
                (updated(1), vec![reply("deepa.r@example.com")]),
            ],
            then: |name, w, _| {
                assert_eq!(w.memory.cases.len(), 1, "{name}");
                assert_eq!(w.case(1).history.len(), 1, "{name}");
            },
        },
        Row {
            name: "a second escalation with a new threat joins and goes to Tier 2",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "CK1", TRUSTPILOT)],
            want: vec![(
                updated(1),
                vec![reply("deepa.r@example.com"), forward(&[TIER2, SUPERVISOR])],
            )],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.case.tier, 2, "{name}");
                assert_eq!(rec.forwarded_to, [TIER2, SUPERVISOR], "{name}");
            },
        },
        Row {
            name: "an escalation of an order resolved 10 days ago reopens its case",
            given: vec![calm_case(), (t(HOUR), vec![resolve("r1@mail.example.com")])],
            at: t(HOUR + 10 * DAY),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "CK1", CALM)],
            want: vec![(updated(1), vec![reply("deepa.r@example.com")])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Open, "{name}");
                assert_eq!(rec.resolved_at, None, "{name}");
                assert_eq!(last_changes(w, 1), ["status resolved -> open"], "{name}");
                assert_eq!(w.memory.cases.len(), 1, "{name}");
            },
        },
        Row {
            name: "an escalation of an order resolved 14 days ago to the second reopens it",
            given: vec![calm_case(), (t(HOUR), vec![resolve("r1@mail.example.com")])],
            at: t(HOUR + 14 * DAY),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "CK1", CALM)],
            want: vec![(updated(1), vec![reply("deepa.r@example.com")])],
            then: |name, w, _| assert_eq!(w.case(1).status, Status::Open, "{name}"),
        },
        Row {
            name: "an escalation of an order resolved 20 days ago opens a case that follows the old",
            given: vec![calm_case(), (t(HOUR), vec![resolve("r1@mail.example.com")])],
            at: t(HOUR + 20 * DAY),
            batch: vec![escalation("b1@mail.example.com", DEEPA, "CK1", CALM)],
            want: vec![(opened(2), vec![reply("deepa.r@example.com")])],
            then: |name, w, _| {
                let (old, new) = (w.case(1), w.case(2));
                assert_eq!(old.status, Status::Resolved, "{name}");
                assert_eq!(old.history.len(), 1, "{name}: the old case is left alone");
                assert_eq!(new.follows.as_deref(), Some("ESC-2026-000001"), "{name}");
                assert_eq!(new.status, Status::Open, "{name}");
                // The order's latest case is the new one.
                assert_eq!(
                    w.memory.order_case("CK1").unwrap().as_deref(),
                    Some("ESC-2026-000002"),
                    "{name}"
                );
            },
        },
        Row {
            name: "an escalation of another order opens its own case",
            given: vec![calm_case()],
            at: t(HOUR),
            batch: vec![escalation("b1@mail.example.com", RAVI, "CK2", CALM)],
            want: vec![(opened(2), vec![reply("ravi.k@example.com")])],
            then: |name, w, _| assert_eq!(w.case(2).follows, None, "{name}"),
        },
        Row {
            name: "an out-of-office answer to the acknowledgement updates nothing",
            given: vec![(t(0), vec![fixture("01-incorrect-promise-price.eml")])],
            at: t(HOUR),
            batch: vec![fixture("44-auto-reply-out-of-office.eml")],
            want: vec![(ignored("not_escalation"), vec![])],
            then: |name, w, _| assert!(w.case(1).history.is_empty(), "{name}"),
        },
    ];
    check_rows(World::new, rows);
}

#[test]
fn messages_left_alone_seen_before_or_quarantined() {
    let rows = vec![
        Row {
            name: "a sender not on the allow-list is left alone",
            given: vec![],
            at: t(0),
            batch: vec![escalation(
                "a1@gmail.com",
                "Stranger <someone@gmail.com>",
                "CK1",
                CALM,
            )],
            want: vec![(ignored("sender \"someone@gmail.com\" not allowed"), vec![])],
            then: |name, w, batch| {
                assert!(w.memory.cases.is_empty(), "{name}");
                assert!(
                    batch.server.is_empty(),
                    "{name}: left untouched on the server"
                );
            },
        },
        Row {
            name: "a message seen before is not processed again",
            given: vec![(
                t(0),
                vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
            )],
            at: t(HOUR),
            batch: vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
            want: vec![(Got::Nothing, vec![])],
            then: |name, w, batch| {
                assert_eq!(w.memory.cases.len(), 1, "{name}");
                assert_eq!(batch.server, [(2, ServerAction::Processed)], "{name}");
            },
        },
        Row {
            name: "an empty message is quarantined",
            given: vec![],
            at: t(0),
            batch: vec![b"\r\n".to_vec()],
            want: vec![(Got::Quarantined("input is empty".into()), vec![])],
            then: |name, _, batch| {
                assert_eq!(batch.server, [(1, ServerAction::Quarantine)], "{name}");
            },
        },
        Row {
            name: "a message that is no escalation and in no thread is left alone",
            given: vec![],
            at: t(0),
            batch: vec![fixture("48-internal-lunch-friday.eml")],
            want: vec![(ignored("not_escalation"), vec![])],
            then: |name, w, _| assert!(w.memory.cases.is_empty(), "{name}"),
        },
    ];
    check_rows(World::new, rows);
}

#[test]
fn status_updates_resolve_and_reopen() {
    let opened = || {
        (
            t(0),
            vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
        )
    };
    let resolved = || {
        (
            t(HOUR),
            vec![answer(
                "r1@mail.example.com",
                CX,
                "a1@mail.example.com",
                "Status: Resolved",
            )],
        )
    };
    let update = |body: &str| vec![answer("u1@mail.example.com", CX, &ack(1), body)];
    let rows = vec![
        Row {
            name: "Status: Resolved resolves, with its note and tags",
            given: vec![opened()],
            at: t(2 * HOUR),
            batch: update(
                "Status: Resolved\r\nResolution: Called back, all calm.\r\n\r\n#vendor_warned",
            ),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Resolved, "{name}");
                assert_eq!(rec.resolved_at, Some(t(2 * HOUR)), "{name}");
                assert_eq!(
                    rec.resolution.as_deref(),
                    Some("Called back, all calm."),
                    "{name}"
                );
                assert_eq!(rec.tags, ["vendor_warned"], "{name}");
                assert_eq!(rec.updated_at, t(2 * HOUR), "{name}");
                let h = rec.history.last().unwrap();
                assert_eq!(h.by, "cx.support@example.com", "{name}");
                assert_eq!(
                    h.message_id.as_deref(),
                    Some("u1@mail.example.com"),
                    "{name}"
                );
                assert_eq!(
                    h.changes,
                    [
                        "status open -> resolved",
                        "tag #vendor_warned",
                        "resolution note: Called back, all calm."
                    ],
                    "{name}"
                );
            },
        },
        Row {
            name: "Status: Escalated sets that status",
            given: vec![opened()],
            at: t(2 * HOUR),
            batch: update("Status: Escalated"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Escalated, "{name}");
                assert_eq!(last_changes(w, 1), ["status open -> escalated"], "{name}");
            },
        },
        Row {
            name: "Status: High Priority sets that status",
            given: vec![opened()],
            at: t(2 * HOUR),
            batch: update("Status: High Priority"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::HighPriority, "{name}");
                assert_eq!(
                    last_changes(w, 1),
                    ["status open -> high_priority"],
                    "{name}"
                );
            },
        },
        Row {
            name: "a reply with nothing new is kept in the history",
            given: vec![opened()],
            at: t(2 * HOUR),
            batch: update("Called the customer, no answer."),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Open, "{name}");
                assert_eq!(
                    last_changes(w, 1),
                    ["message added to the thread"],
                    "{name}"
                );
            },
        },
        Row {
            name: "the details the agent was asked for fill the case",
            given: vec![(
                t(0),
                vec![mail(
                    &format!(
                        "From: {RAVI}\r\nSubject: Escalation (Order #CK1)\r\nMessage-ID: <a1@mail.example.com>"
                    ),
                    "Order ID: CK1\r\nIssue: The customer wants a callback.",
                )],
            )],
            at: t(HOUR),
            batch: vec![answer(
                "u1@mail.example.com",
                RAVI,
                &ack(1),
                "Customer Name: Asha Rao\r\nPhone: 98450 12345",
            )],
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(
                    rec.case.fields.customer_name.as_deref(),
                    Some("Asha Rao"),
                    "{name}"
                );
                assert!(rec.case.fields.phone.is_some(), "{name}");
                assert!(
                    rec.case.missing.is_empty(),
                    "{name}: {:?}",
                    rec.case.missing
                );
            },
        },
        Row {
            name: "Status: Resolved of a resolved case changes nothing",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update("Status: Resolved"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Resolved, "{name}");
                assert_eq!(w.case(1).resolved_at, Some(t(HOUR)), "{name}");
                assert_eq!(
                    last_changes(w, 1),
                    ["message added to the thread"],
                    "{name}"
                );
            },
        },
        Row {
            name: "#reopen reopens a resolved case",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update("The customer called again.\r\n\r\n#reopen"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Open, "{name}");
                assert_eq!(rec.resolved_at, None, "{name}");
                assert_eq!(
                    last_changes(w, 1),
                    ["status resolved -> open", "tag #reopen"],
                    "{name}"
                );
            },
        },
        Row {
            name: "Status: Reopened reopens a resolved case",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update("Status: Reopened"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Open, "{name}");
                assert_eq!(last_changes(w, 1), ["status resolved -> open"], "{name}");
            },
        },
        Row {
            name: "Status: Escalated reopens a resolved case as escalated",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update("Status: Escalated"),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(w.case(1).status, Status::Escalated, "{name}");
                assert_eq!(w.case(1).resolved_at, None, "{name}");
            },
        },
        Row {
            name: "a new flag category reopens a resolved case and routes it again",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update(SCAM),
            want: vec![(updated(1), vec![forward(&[SUPERVISOR])])],
            then: |name, w, _| {
                let rec = w.case(1);
                assert_eq!(rec.status, Status::Open, "{name}");
                assert_eq!(rec.case.risk, 5, "{name}");
                let changes = last_changes(w, 1);
                assert_eq!(changes[0], "status resolved -> open", "{name}");
                assert!(
                    changes.contains(&"risk 1 -> 5".to_string()),
                    "{name}: {changes:?}"
                );
                assert_eq!(rec.forwarded_to, [SUPERVISOR], "{name}");
            },
        },
        Row {
            name: "a reply with no new flag leaves a resolved case resolved",
            given: vec![opened(), resolved()],
            at: t(2 * HOUR),
            batch: update("Thanks, the customer is happy."),
            want: vec![(updated(1), vec![])],
            then: |name, w, _| assert_eq!(w.case(1).status, Status::Resolved, "{name}"),
        },
    ];
    check_rows(World::new, rows);
}

#[test]
fn a_raised_case_goes_to_whoever_has_not_had_it() {
    let calm = || {
        (
            t(0),
            vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
        )
    };
    let threat = |mid: &str, at: i64, text: &str| {
        (t(at), vec![answer(mid, RAVI, "a1@mail.example.com", text)])
    };
    let rows = vec![
        Row {
            name: "a legal threat in a reply sends the case to Tier 2",
            given: vec![calm()],
            at: t(HOUR),
            batch: threat("u1@mail.example.com", HOUR, LAWYER).1,
            want: vec![(updated(1), vec![forward(&[TIER2, SUPERVISOR])])],
            then: |name, w, batch| {
                let rec = w.case(1);
                assert_eq!((rec.case.risk, rec.case.tier), (5, 2), "{name}");
                assert_eq!(rec.forwarded_to, [TIER2, SUPERVISOR], "{name}");
                let changes = last_changes(w, 1);
                assert!(
                    changes.contains(&"tier 1 -> 2".to_string()),
                    "{name}: {changes:?}"
                );
                // Named by when in the case's life it went: the first update.
                let out = &outgoing(item(batch, 2))[0];
                assert_eq!(
                    out.message_id, "ESC-2026-000001.forward.u1.0@mailtriage.example.com",
                    "{name}"
                );
            },
        },
        Row {
            name: "a second raise does not forward to Tier 2 again",
            given: vec![calm(), threat("u1@mail.example.com", HOUR, LAWYER)],
            at: t(2 * HOUR),
            batch: threat("u2@mail.example.com", 2 * HOUR, JOURNALIST).1,
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                let changes = last_changes(w, 1);
                assert!(
                    changes.iter().any(|c| c.starts_with("flag media: ")),
                    "{name}: {changes:?}"
                );
                assert_eq!(w.sent(1, OutgoingKind::Forward).len(), 1, "{name}");
            },
        },
        Row {
            name: "the same threat again is no raise",
            given: vec![calm(), threat("u1@mail.example.com", HOUR, LAWYER)],
            at: t(2 * HOUR),
            batch: threat("u2@mail.example.com", 2 * HOUR, LAWYER).1,
            want: vec![(updated(1), vec![])],
            then: |name, w, _| {
                assert_eq!(
                    last_changes(w, 1),
                    ["message added to the thread"],
                    "{name}"
                );
            },
        },
        Row {
            name: "a case the supervisor had goes to Tier 2 alone when raised",
            given: vec![(
                t(0),
                vec![escalation("a1@mail.example.com", RAVI, "CK1", SCAM)],
            )],
            at: t(HOUR),
            batch: threat("u1@mail.example.com", HOUR, TRUSTPILOT).1,
            want: vec![(updated(1), vec![forward(&[TIER2])])],
            then: |name, w, _| {
                assert_eq!(w.case(1).forwarded_to, [SUPERVISOR, TIER2], "{name}");
            },
        },
    ];
    check_rows(World::new, rows);
}

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

/// The repeat-vendor reports of `batch`: subject and the case ids listed.
fn reports(batch: &Batch) -> Vec<(String, Vec<String>)> {
    batch
        .items
        .iter()
        .flat_map(|i| outgoing(Some(i)))
        .filter(|o| o.kind == OutgoingKind::Vendor)
        .map(|o| {
            let m = mail_parser::MessageParser::default()
                .parse(&o.raw)
                .expect("the report parses");
            let body = m.body_text(0).unwrap_or_default().into_owned();
            let mut ids: Vec<String> = body
                .lines()
                .filter_map(|l| l.split(' ').next())
                .filter(|w| w.starts_with("ESC-"))
                .map(str::to_string)
                .collect();
            ids.dedup();
            (m.subject().unwrap_or_default().to_string(), ids)
        })
        .collect()
}

#[test]
fn a_repeat_vendor_is_reported_once_per_window() {
    let mut w = World::new();
    // A vendor's complaint is a pickup complaint: CX has it too.
    let ack_to_ravi = || vec![reply("ravi.k@example.com"), forward(&[CX_TEAM])];
    let steps = vec![
        Step {
            name: "a first complaint",
            at: t(0),
            batch: vec![complaint(1, "SwiftCollect Services (VND-1187)")],
            want: vec![(opened(1), ack_to_ravi())],
        },
        Step {
            name: "a second, written another way",
            at: t(DAY),
            batch: vec![complaint(2, "vnd 1187")],
            want: vec![(opened(2), ack_to_ravi())],
        },
        Step {
            name: "the third within 30 days is reported",
            at: t(2 * DAY),
            batch: vec![complaint(3, "VND-1187 / SwiftCollect")],
            want: vec![(
                opened(3),
                vec![
                    reply("ravi.k@example.com"),
                    forward(&[CX_TEAM]),
                    vendor_report(),
                ],
            )],
        },
        Step {
            name: "a fourth in the window is not reported again",
            at: t(3 * DAY + HOUR),
            batch: vec![complaint(4, "SwiftCollect Services (VND-1187)")],
            want: vec![(opened(4), ack_to_ravi())],
        },
        Step {
            name: "another vendor's complaint counts for that vendor alone",
            at: t(3 * DAY + HOUR),
            batch: vec![complaint(5, "Sai Traders (VND-2290)")],
            want: vec![(opened(5), ack_to_ravi())],
        },
        Step {
            name: "a second escalation of an order is no new complaint",
            at: t(3 * DAY + 2 * HOUR),
            batch: vec![with_vendor(
                "again1@mail.example.com",
                DEEPA,
                "CK9001",
                "The vendor came late again.",
                Some("SwiftCollect Services (VND-1187)"),
            )],
            want: vec![(updated(1), vec![reply("deepa.r@example.com")])],
        },
        Step {
            name: "four in the window, but reported within it",
            at: t(31 * DAY),
            batch: vec![complaint(6, "SwiftCollect Services (VND-1187)")],
            want: vec![(opened(6), ack_to_ravi())],
        },
        Step {
            name: "once the report is older than the window, three complaints in it count again",
            at: t(33 * DAY),
            batch: vec![complaint(7, "SwiftCollect Services (VND-1187)")],
            want: vec![(
                opened(7),
                vec![
                    reply("ravi.k@example.com"),
                    forward(&[CX_TEAM]),
                    vendor_report(),
                ],
            )],
        },
    ];
    let batches = check_steps(&mut w, steps);
    let vnd = config().vendors.key("VND-1187").unwrap();
    let first = reports(&batches[2]);
    assert_eq!(
        first,
        [(
            "Repeat vendor: SwiftCollect Services (VND-1187), 3 complaints in 30 days".to_string(),
            vec![case_id(1), case_id(2), case_id(3)]
        )]
    );
    assert_eq!(batches[2].vendors_reported, std::slice::from_ref(&vnd));
    let again = reports(&batches[7]);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, [case_id(4), case_id(6), case_id(7)]);
    assert_eq!(w.memory.reported.get(&vnd), Some(&t(33 * DAY)));
    for n in [1, 2, 3, 4, 6, 7] {
        assert_eq!(w.case(n).vendor_key(), Some(&vnd), "case {n}");
    }
}

#[test]
fn repeat_vendors_within_a_batch_and_by_name() {
    let answered = || vec![reply("ravi.k@example.com"), forward(&[CX_TEAM])];
    let with_report = || {
        vec![
            reply("ravi.k@example.com"),
            forward(&[CX_TEAM]),
            vendor_report(),
        ]
    };
    let rows = vec![
        Row {
            name: "three complaints in one batch: the third is reported",
            given: vec![],
            at: t(0),
            batch: (1..=3).map(|n| complaint(n, "VND-1187")).collect(),
            want: vec![
                (opened(1), answered()),
                (opened(2), answered()),
                (opened(3), with_report()),
            ],
            then: |name, _, batch| {
                assert_eq!(
                    reports(batch)[0].1,
                    [case_id(1), case_id(2), case_id(3)],
                    "{name}"
                );
            },
        },
        Row {
            name: "four complaints in one batch: reported once",
            given: vec![],
            at: t(0),
            batch: (1..=4).map(|n| complaint(n, "VND-1187")).collect(),
            want: vec![
                (opened(1), answered()),
                (opened(2), answered()),
                (opened(3), with_report()),
                (opened(4), answered()),
            ],
            then: |name, _, batch| assert_eq!(reports(batch).len(), 1, "{name}"),
        },
        Row {
            name: "complaints older than the window do not count",
            given: vec![
                (t(0), vec![complaint(1, "VND-1187")]),
                (t(DAY), vec![complaint(2, "VND-1187")]),
            ],
            at: t(31 * DAY),
            batch: vec![complaint(3, "VND-1187")],
            want: vec![(opened(3), answered())],
            then: no_more,
        },
        Row {
            name: "a name alone counts under the id it was given with",
            given: vec![(t(0), vec![complaint(1, "QuickPick Logistics (VND-1044)")])],
            at: t(DAY),
            batch: vec![
                complaint(2, "QuickPick Logistics"),
                complaint(3, "quickpick logistics pvt ltd"),
            ],
            want: vec![(opened(2), answered()), (opened(3), with_report())],
            then: |name, w, batch| {
                let id = config().vendors.key("VND-1044").unwrap();
                assert_eq!(w.case(2).vendor_key(), Some(&id), "{name}");
                assert_eq!(batch.vendors_reported, [id], "{name}");
                let (subject, ids) = &reports(batch)[0];
                assert_eq!(ids, &[case_id(1), case_id(2), case_id(3)], "{name}");
                assert!(
                    subject.contains("QuickPick Logistics (VND-1044)"),
                    "{name}: {subject}"
                );
            },
        },
        Row {
            name: "a name alone counts under the id given with it earlier in the same batch",
            given: vec![],
            at: t(0),
            batch: vec![
                complaint(1, "QuickPick Logistics (VND-1044)"),
                complaint(2, "QuickPick Logistics"),
                complaint(3, "quickpick logistics pvt ltd"),
            ],
            want: vec![
                (opened(1), answered()),
                (opened(2), answered()),
                (opened(3), with_report()),
            ],
            then: |name, w, _| {
                let id = config().vendors.key("VND-1044").unwrap();
                for n in 1..=3 {
                    assert_eq!(w.case(n).vendor_key(), Some(&id), "{name}: case {n}");
                }
            },
        },
        Row {
            name: "complaints naming the vendor alone before its id was given count under the id",
            given: vec![
                (t(0), vec![complaint(1, "QuickPick Logistics")]),
                (t(DAY), vec![complaint(2, "QuickPick Logistics Pvt. Ltd.")]),
            ],
            at: t(2 * DAY),
            batch: vec![complaint(3, "QuickPick Logistics (VND-1044)")],
            want: vec![(opened(3), with_report())],
            then: |name, w, batch| {
                let id = config().vendors.key("VND-1044").unwrap();
                assert_eq!(
                    reports(batch)[0].1,
                    [case_id(1), case_id(2), case_id(3)],
                    "{name}"
                );
                // The commit moved the name's complaints to the id.
                for n in 1..=3 {
                    assert_eq!(w.case(n).vendor_key(), Some(&id), "{name}: case {n}");
                }
            },
        },
        Row {
            name: "a name reported before its id was given is not reported again as the id",
            given: vec![
                (
                    t(0),
                    (1..=3)
                        .map(|n| complaint(n, "QuickPick Logistics"))
                        .collect(),
                ),
                (t(DAY), vec![complaint(4, "QuickPick Logistics (VND-1044)")]),
            ],
            at: t(2 * DAY),
            batch: vec![complaint(5, "VND-1044")],
            want: vec![(opened(5), answered())],
            then: |name, w, _| {
                let id = config().vendors.key("VND-1044").unwrap();
                assert_eq!(w.memory.reported.get(&id), Some(&t(0)), "{name}");
            },
        },
    ];
    check_rows(World::new, rows);
}

#[test]
fn replies_are_limited_per_sender_and_hour() {
    let mut w = World::with_reply_limit(Some(2));
    let esc = |n: u32, from: &str| {
        escalation(
            &format!("e{n}@mail.example.com"),
            from,
            &format!("CK{n}"),
            CALM,
        )
    };
    let steps = vec![
        Step {
            name: "the third escalation of a sender in one batch opens its case without a reply",
            at: t(0),
            batch: vec![esc(1, RAVI), esc(2, RAVI), esc(3, RAVI)],
            want: vec![
                (opened(1), vec![reply("ravi.k@example.com")]),
                (opened(2), vec![reply("ravi.k@example.com")]),
                (opened(3), vec![]),
            ],
        },
        Step {
            name: "half an hour later, still none; another sender is answered",
            at: t(30 * MIN),
            batch: vec![esc(4, RAVI), esc(5, DEEPA)],
            want: vec![
                (opened(4), vec![]),
                (opened(5), vec![reply("deepa.r@example.com")]),
            ],
        },
        Step {
            name: "the sender however spelt; forwards are not limited",
            at: t(30 * MIN),
            batch: vec![escalation(
                "e6@mail.example.com",
                "Ravi.K@Example.com",
                "CK6",
                SCAM,
            )],
            want: vec![(opened(6), vec![forward(&[SUPERVISOR])])],
        },
        Step {
            name: "over an hour later the sender is answered again",
            at: t(HOUR + MIN),
            batch: vec![esc(7, RAVI)],
            want: vec![(opened(7), vec![reply("ravi.k@example.com")])],
        },
        Step {
            name: "a second within the hour too",
            at: t(HOUR + 2 * MIN),
            batch: vec![esc(8, RAVI)],
            want: vec![(opened(8), vec![reply("ravi.k@example.com")])],
        },
        Step {
            name: "a joined reply counts with the rest: the third in the hour is not sent",
            at: t(HOUR + 3 * MIN),
            batch: vec![escalation("again1@mail.example.com", RAVI, "CK1", CALM)],
            want: vec![(updated(1), vec![])],
        },
    ];
    check_steps(&mut w, steps);
    let counted = |since| w.memory.replies_since("ravi.k@example.com", since).unwrap();
    assert_eq!(counted(t(0)), 4, "the replies sent are counted, no more");
}

#[test]
fn tier_2_forwards_wait_for_business_hours() {
    // Tier 2 opens Mon-Fri 08:00-21:00 and Sat 08:00-16:30, New York time.
    let trustpilot = || vec![escalation("a1@mail.example.com", DEEPA, "CK1", TRUSTPILOT)];
    let agent = "deepa.r@example.com";
    let rows = vec![
        Row {
            name: "Tuesday 10:00: Tier 2 and the supervisor at once",
            given: vec![],
            at: utc("2026-11-24T15:00:00Z"),
            batch: trustpilot(),
            want: vec![(opened(1), vec![reply(agent), forward(&[TIER2, SUPERVISOR])])],
            then: |name, w, _| {
                assert_eq!(w.case(1).forwarded_to, [TIER2, SUPERVISOR], "{name}");
            },
        },
        Row {
            name: "Sunday 10:00: the supervisor now, Tier 2 on Monday 08:00",
            given: vec![],
            at: utc("2026-11-29T15:00:00Z"),
            batch: trustpilot(),
            want: vec![(
                opened(1),
                vec![
                    reply(agent),
                    forward(&[SUPERVISOR]),
                    held(&[TIER2], utc("2026-11-30T13:00:00Z")),
                ],
            )],
            then: |name, w, batch| {
                assert_eq!(w.case(1).forwarded_to, [SUPERVISOR, TIER2], "{name}");
                let ids: Vec<&str> = outgoing(item(batch, 1))
                    .iter()
                    .map(|o| o.message_id.as_str())
                    .collect();
                assert_eq!(
                    ids,
                    [
                        "ESC-2026-000001.reply.2@mailtriage.example.com",
                        "ESC-2026-000001.forward.0.now@mailtriage.example.com",
                        "ESC-2026-000001.forward.0@mailtriage.example.com",
                    ],
                    "{name}"
                );
            },
        },
        Row {
            name: "Saturday 17:00: closed since 16:30, held until Monday",
            given: vec![],
            at: utc("2026-11-28T22:00:00Z"),
            batch: trustpilot(),
            want: vec![(
                opened(1),
                vec![
                    reply(agent),
                    forward(&[SUPERVISOR]),
                    held(&[TIER2], utc("2026-11-30T13:00:00Z")),
                ],
            )],
            then: no_more,
        },
        Row {
            name: "Saturday 16:00: open",
            given: vec![],
            at: utc("2026-11-28T21:00:00Z"),
            batch: trustpilot(),
            want: vec![(opened(1), vec![reply(agent), forward(&[TIER2, SUPERVISOR])])],
            then: no_more,
        },
        Row {
            name: "Friday 21:30: held until Saturday 08:00",
            given: vec![],
            at: utc("2026-11-28T02:30:00Z"),
            batch: trustpilot(),
            want: vec![(
                opened(1),
                vec![
                    reply(agent),
                    forward(&[SUPERVISOR]),
                    held(&[TIER2], utc("2026-11-28T13:00:00Z")),
                ],
            )],
            then: no_more,
        },
        Row {
            name: "Monday 07:59: held a minute",
            given: vec![],
            at: utc("2026-11-30T12:59:00Z"),
            batch: trustpilot(),
            want: vec![(
                opened(1),
                vec![
                    reply(agent),
                    forward(&[SUPERVISOR]),
                    held(&[TIER2], utc("2026-11-30T13:00:00Z")),
                ],
            )],
            then: no_more,
        },
        Row {
            name: "Monday 08:00: open",
            given: vec![],
            at: utc("2026-11-30T13:00:00Z"),
            batch: trustpilot(),
            want: vec![(opened(1), vec![reply(agent), forward(&[TIER2, SUPERVISOR])])],
            then: no_more,
        },
        Row {
            name: "a case raised to Tier 2 on a Sunday: the supervisor now, Tier 2 on Monday",
            given: vec![(
                utc("2026-11-29T14:00:00Z"),
                vec![escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
            )],
            at: utc("2026-11-29T15:00:00Z"),
            batch: vec![answer("u1@mail.example.com", RAVI, &ack(1), LAWYER)],
            want: vec![(
                updated(1),
                vec![
                    forward(&[SUPERVISOR]),
                    held(&[TIER2], utc("2026-11-30T13:00:00Z")),
                ],
            )],
            then: no_more,
        },
        Row {
            name: "a Tier-1 forward names no hours: at once on a Sunday",
            given: vec![],
            at: utc("2026-11-29T15:00:00Z"),
            batch: vec![escalation("a1@mail.example.com", RAVI, "CK1", SCAM)],
            want: vec![(
                opened(1),
                vec![reply("ravi.k@example.com"), forward(&[SUPERVISOR])],
            )],
            then: no_more,
        },
    ];
    check_rows(World::new, rows);
}

#[test]
fn an_overdue_case_is_re_escalated_once() {
    struct Overdue {
        name: &'static str,
        issue: &'static str,
        /// Replies in the case's thread after it opened: when, and the body.
        updates: Vec<(i64, &'static str)>,
        at: i64,
        /// Whether the notice is due, and then whether it is of high
        /// importance.
        due: Option<bool>,
    }
    let rows = vec![
        Overdue {
            name: "risk 5 at 2 h is not yet overdue",
            issue: SCAM,
            updates: vec![],
            at: 2 * HOUR,
            due: None,
        },
        Overdue {
            name: "risk 5 after 2 h is re-escalated",
            issue: SCAM,
            updates: vec![],
            at: 2 * HOUR + 1,
            due: Some(true),
        },
        Overdue {
            name: "risk 4 after 3 h is not yet overdue",
            issue: LYING,
            updates: vec![],
            at: 3 * HOUR,
            due: None,
        },
        Overdue {
            name: "risk 4 after 8 h is re-escalated",
            issue: LYING,
            updates: vec![],
            at: 8 * HOUR + MIN,
            due: Some(true),
        },
        Overdue {
            name: "risk 1 is never overdue",
            issue: CALM,
            updates: vec![],
            at: 100 * DAY,
            due: None,
        },
        Overdue {
            name: "a resolved case never is",
            issue: SCAM,
            updates: vec![(HOUR, "Status: Resolved")],
            at: 3 * HOUR,
            due: None,
        },
        Overdue {
            name: "an escalated case is still open",
            issue: SCAM,
            updates: vec![(HOUR, "Status: Escalated")],
            at: 3 * HOUR,
            due: Some(true),
        },
        Overdue {
            name: "a case raised to risk 5 is due 2 h after it came in",
            issue: CALM,
            updates: vec![(HOUR, SCAM)],
            at: 2 * HOUR + MIN,
            due: Some(true),
        },
    ];
    for row in rows {
        let name = row.name;
        let mut w = World::new();
        w.run(
            t(0),
            &[escalation("a1@mail.example.com", RAVI, "CK1", row.issue)],
        );
        for (i, (at, body)) in row.updates.iter().enumerate() {
            let mid = format!("u{i}@mail.example.com");
            w.run(t(*at), &[answer(&mid, CX, "a1@mail.example.com", body)]);
        }
        let before = w.case(1).clone();
        let got = super::overdue(&w.intake(), &before, t(row.at));
        let Some(high) = row.due else {
            assert!(got.is_none(), "{name}: {got:?}");
            continue;
        };
        let (rec, notice) = got.unwrap_or_else(|| panic!("{name}: not re-escalated"));
        assert_eq!(notice.kind, OutgoingKind::Overdue, "{name}");
        assert_eq!(notice.recipients, ["ops.director@example.com"], "{name}");
        assert_eq!(notice.case_id.as_deref(), Some("ESC-2026-000001"), "{name}");
        assert_eq!(notice.not_before, None, "{name}");
        let text = String::from_utf8_lossy(&notice.raw);
        assert!(
            text.contains("Subject: Overdue: [ESC-2026-000001]"),
            "{name}: {text}"
        );
        assert_eq!(text.contains("Importance: high"), high, "{name}: {text}");
        assert_eq!(rec.overdue_at, Some(t(row.at)), "{name}");
        assert_eq!(rec.status, before.status, "{name}");
        assert_eq!(rec.history.len(), before.history.len() + 1, "{name}");
        let h = rec.history.last().unwrap();
        assert_eq!((h.by.as_str(), h.at), ("daemon", t(row.at)), "{name}");
        assert!(
            h.changes.len() == 1
                && h.changes[0].starts_with("overdue after ")
                && h.changes[0].ends_with(": re-escalated to ops.director@example.com"),
            "{name}: {:?}",
            h.changes
        );
        // Once: the case as marked is not re-escalated, however late.
        w.memory.cases.insert(rec.id.clone(), rec.clone());
        assert!(
            super::overdue(&w.intake(), w.case(1), t(row.at + 30 * DAY)).is_none(),
            "{name}: twice"
        );
    }
}

#[test]
fn a_lookup_error_stops_the_batch() {
    // Every lookup intake makes for this batch: a reply to a stored case,
    // and a new case naming a vendor by name alone.
    let batch = || {
        vec![
            answer("u1@mail.example.com", RAVI, &ack(1), "Any news?"),
            with_vendor(
                "b1@mail.example.com",
                DEEPA,
                "CK2",
                "The vendor was late.",
                Some("QuickPick Logistics"),
            ),
        ]
    };
    let failing = [
        "seen",
        "case",
        "thread_case",
        "order_case",
        "replies_since",
        "vendor_alias",
        "vendor_cases",
        "vendor_reported_at",
        "reserve",
    ];
    for fail in [None].into_iter().chain(failing.map(Some)) {
        let mut w = World::new();
        w.run(
            t(0),
            &[escalation("a1@mail.example.com", RAVI, "CK1", CALM)],
        );
        w.memory.fail = fail;
        let got = w.process(t(HOUR), &batch());
        match (fail, got) {
            (None, Ok(b)) => {
                assert_eq!(result(&b, 2).0, updated(1));
                assert_eq!(result(&b, 3).0, opened(2));
            }
            (Some(method), Err(e)) => {
                assert!(e.to_string().contains(method), "{method}: {e}");
            }
            (fail, Ok(b)) => panic!(
                "{fail:?}: the batch went on: {:?}",
                b.items.iter().map(|i| &i.outcome).collect::<Vec<_>>()
            ),
            (None, Err(e)) => panic!("no failure, yet: {e}"),
        }
    }
}

/// A pickup complaint about vendor VND-1187 that gives no order id (it
/// asks for one), Message-ID `<d<n>@…>`.
fn without_order(n: u32) -> Vec<u8> {
    mail(
        &format!(
            "From: {RAVI}\r\nSubject: Pickup complaint\r\nMessage-ID: <d{n}@mail.example.com>"
        ),
        "Category: Customer Pickup Complaint\r\nCustomer Name: Asha Rao\r\nPhone: 98450 12345\r\nVendor: VND-1187\r\nIssue: The vendor came late.",
    )
}

#[test]
#[ignore = "intake does not recognise a message twice in one batch: the copy is processed as a \
            message of its own, which the commit then drops as seen, but what it counted stays \
            (a repeat-vendor report it carried is lost while the vendor is marked reported; its \
            reply uses up the sender's rate limit)"]
fn the_same_message_twice_in_one_batch_counts_once() {
    let rows = vec![
        Row {
            name: "a copy brings no vendor to its third complaint",
            given: vec![(t(0), vec![without_order(1)])],
            at: t(HOUR),
            batch: vec![without_order(2), without_order(2)],
            want: vec![
                (
                    opened(2),
                    vec![reply("ravi.k@example.com"), forward(&[CX_TEAM])],
                ),
                (Got::Nothing, vec![]),
            ],
            then: |name, w, batch| {
                assert_eq!(w.memory.cases.len(), 2, "{name}");
                assert!(batch.vendors_reported.is_empty(), "{name}");
                assert!(
                    w.memory.reported.is_empty(),
                    "{name}: {:?}",
                    w.memory.reported
                );
                assert_eq!(
                    batch.server,
                    [(2, ServerAction::Processed), (3, ServerAction::Processed)],
                    "{name}"
                );
            },
        },
        Row {
            name: "a copy uses up no reply",
            given: vec![],
            at: t(0),
            batch: vec![
                escalation("a1@mail.example.com", RAVI, "CK1", CALM),
                escalation("a1@mail.example.com", RAVI, "CK1", CALM),
                escalation("a2@mail.example.com", RAVI, "CK2", CALM),
            ],
            want: vec![
                (opened(1), vec![reply("ravi.k@example.com")]),
                (Got::Nothing, vec![]),
                (opened(2), vec![reply("ravi.k@example.com")]),
            ],
            then: |name, w, _| {
                assert_eq!(w.memory.replies.len(), 2, "{name}");
            },
        },
    ];
    check_rows(|| World::with_reply_limit(Some(2)), rows);
}
