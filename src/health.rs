//! Health at a glance: what `mailtriage status` reports and the verdict a
//! monitoring check reads from its exit status.
//!
//! Pure: the daemon records facts as they happen (each mailbox's
//! connection, in a [`MailboxLive`] its task keeps up to date), the control
//! socket gathers the rest from the store into [`Facts`], and [`report`]
//! turns them into the [`Report`] printed as text or JSON (its fields are a
//! contract, documented in the README). Healthy, degraded or cannot tell,
//! and why, are decided here and nowhere else.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::batch::{Cursor, LastMessage};
use crate::calendar::Schedule;

/// A mailbox's connection, as its task last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Started, not connected yet.
    Connecting,
    /// Connected and working: fetching, triaging, committing, marking.
    Connected,
    /// Connected, waiting in IMAP IDLE for new mail.
    Idle,
    /// Connected, waiting for the next poll (a server without IDLE).
    Polling,
    /// The last attempt failed; reconnecting with backoff.
    Down,
    /// No daemon runs: a connection's state cannot be known.
    Unknown,
}

impl Link {
    pub fn name(self) -> &'static str {
        match self {
            Link::Connecting => "connecting",
            Link::Connected => "connected",
            Link::Idle => "idle",
            Link::Polling => "polling",
            Link::Down => "down",
            Link::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An error and when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Noted {
    #[serde(with = "crate::clock::seconds")]
    pub at: Timestamp,
    pub message: String,
}

/// A mailbox's connection as the running daemon knows it, kept by its
/// task through the methods below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxLive {
    pub state: Link,
    /// When `state` began. While down: the first failure of the outage,
    /// not the latest attempt.
    #[serde(with = "crate::clock::seconds")]
    pub since: Timestamp,
    /// When the present connection was made (None when there is none).
    #[serde(with = "crate::clock::seconds::option")]
    pub connected_at: Option<Timestamp>,
    pub last_error: Option<Noted>,
    /// UIDVALIDITY as the server gave it at the last SELECT.
    pub uid_validity: Option<u32>,
}

impl MailboxLive {
    /// A task that has just started.
    pub fn starting(now: Timestamp) -> MailboxLive {
        MailboxLive {
            state: Link::Connecting,
            since: now,
            connected_at: None,
            last_error: None,
            uid_validity: None,
        }
    }

    /// Connected and the folder selected.
    pub fn connected(&mut self, uid_validity: u32, now: Timestamp) {
        self.set(Link::Connected, now);
        self.connected_at = Some(now);
        self.uid_validity = Some(uid_validity);
    }

    /// Working, idling or polling on the present connection. `since`
    /// moves only when the state changes.
    pub fn set(&mut self, state: Link, now: Timestamp) {
        if self.state != state {
            self.state = state;
            self.since = now;
        }
    }

    /// The connection failed, or could not be made: down since the first
    /// failure of this outage.
    pub fn failed(&mut self, error: String, now: Timestamp) {
        self.set(Link::Down, now);
        self.connected_at = None;
        self.last_error = Some(Noted {
            at: now,
            message: error,
        });
    }

    pub fn is_down(&self) -> bool {
        self.state == Link::Down
    }
}

/// A grant's health, for `mailtriage status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantHealth {
    pub used_by: Vec<String>,
    pub flow: String,
    pub token_url: String,
    /// The present access token's expiry (none: none held).
    #[serde(with = "crate::clock::seconds::option")]
    pub token_expires: Option<Timestamp>,
    /// The last failure, while it lasts.
    pub error: Option<Noted>,
    /// The failure needs a human (a refused grant), not a retry.
    pub refused: bool,
    /// Token requests made since the daemon started.
    pub requests: u64,
}

/// The running daemon, as it describes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub version: String,
    pub started_at: Timestamp,
}

/// One configured mailbox's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxFacts {
    pub name: String,
    /// None when no daemon runs.
    pub live: Option<MailboxLive>,
    /// The stored cursor: UIDVALIDITY and the highest UID processed.
    pub cursor: Option<Cursor>,
    pub last_message: Option<LastMessage>,
}

/// The outbox's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxFacts {
    pub pending: usize,
    pub retrying: usize,
    pub undeliverable: usize,
    /// The retrying item failing longest: its id, since when, its error.
    pub oldest_retrying: Option<(u64, Timestamp, Option<String>)>,
}

/// A digest of the routing table and its last period sent.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestFacts {
    pub name: String,
    /// None: sent only on request.
    pub schedule: Option<Schedule>,
    /// The period of the last digest sent (the time it was due).
    pub last: Option<Timestamp>,
}

/// Everything a status is made of, gathered at `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub now: Timestamp,
    /// `[daemon] alert_after`.
    pub alert_after: Duration,
    /// None: no daemon answered; the facts come from the database.
    pub running: Option<Running>,
    pub mailboxes: Vec<MailboxFacts>,
    pub outbox: OutboxFacts,
    pub digests: Vec<DigestFacts>,
    pub database: DatabaseReport,
    /// The OAuth 2.0 grants, while the daemon runs.
    pub grants: Vec<GrantHealth>,
}

/// The verdict: the exit status of `mailtriage status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// 0: the daemon runs, every mailbox is connected (or connecting),
    /// nothing waits long and nothing was given up on.
    Healthy,
    /// 1: something needs a human; the reasons say what.
    Degraded,
    /// 2: no daemon answers and the database cannot be read, or the answer
    /// cannot be read.
    Unknown,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Degraded => 1,
            Verdict::Unknown => 2,
        }
    }
}

/// Where the facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The running daemon answered through its control socket.
    Daemon,
    /// No daemon answered: read from the database.
    Database,
}

/// `mailtriage status`, as printed with `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    /// Why it is not healthy, one short sentence each, worst first.
    pub reasons: Vec<String>,
    pub source: Source,
    #[serde(with = "crate::clock::seconds")]
    pub now: Timestamp,
    pub alert_after_seconds: u64,
    pub daemon: DaemonReport,
    pub mailboxes: Vec<MailboxReport>,
    pub outbox: OutboxReport,
    pub digests: Vec<DigestReport>,
    pub database: DatabaseReport,
    /// The OAuth 2.0 grants (empty without a daemon, or without grants).
    #[serde(default)]
    pub oauth2: Vec<GrantHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonReport {
    pub running: bool,
    pub version: Option<String>,
    #[serde(with = "crate::clock::seconds::option")]
    pub started_at: Option<Timestamp>,
    pub uptime_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxReport {
    pub name: String,
    pub state: Link,
    #[serde(with = "crate::clock::seconds::option")]
    pub since: Option<Timestamp>,
    #[serde(with = "crate::clock::seconds::option")]
    pub connected_at: Option<Timestamp>,
    pub last_error: Option<Noted>,
    /// The server's at the last SELECT; without a daemon, the stored one.
    pub uid_validity: Option<u32>,
    /// The cursor: the highest UID processed.
    pub last_uid: Option<u32>,
    pub last_message: Option<LastMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxReport {
    pub pending: usize,
    pub retrying: usize,
    pub undeliverable: usize,
    pub oldest_retrying: Option<RetryingReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryingReport {
    pub id: u64,
    /// Its first failure.
    #[serde(with = "crate::clock::seconds")]
    pub since: Timestamp,
    pub seconds: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestReport {
    pub name: String,
    /// The schedule in words (`daily 08:00 (Asia/Kolkata)`); null: on
    /// request only.
    pub schedule: Option<String>,
    #[serde(with = "crate::clock::seconds::option")]
    pub last: Option<Timestamp>,
    #[serde(with = "crate::clock::seconds::option")]
    pub next: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseReport {
    pub path: String,
    pub bytes: u64,
}

/// The report of `facts`: healthy unless the daemon is not running, a
/// mailbox is down, an OAuth 2.0 grant is refused, mail has been retrying for longer than `alert_after`,
/// or anything is undeliverable.
pub fn report(facts: Facts) -> Report {
    let now = facts.now;
    let mut reasons = Vec::new();
    if facts.running.is_none() {
        reasons.push("the daemon is not running".to_string());
    }
    for m in &facts.mailboxes {
        if let Some(live) = m.live.as_ref().filter(|l| l.is_down()) {
            reasons.push(format!(
                "mailbox {} down for {}",
                m.name,
                span(seconds_since(live.since, now))
            ));
        }
    }
    for g in facts.grants.iter().filter(|g| g.refused) {
        reasons.push(format!(
            "OAuth 2.0 grant of {} refused",
            g.used_by.join(", ")
        ));
    }
    let o = &facts.outbox;
    let oldest_retrying = o
        .oldest_retrying
        .clone()
        .map(|(id, since, last_error)| RetryingReport {
            id,
            since,
            seconds: seconds_since(since, now),
            last_error,
        });
    if let Some(r) = &oldest_retrying
        && u64::try_from(r.seconds).unwrap_or(0) > facts.alert_after.as_secs()
    {
        reasons.push(format!(
            "{} retrying, the oldest for {}",
            count(o.retrying, "message"),
            span(r.seconds)
        ));
    }
    if o.undeliverable > 0 {
        reasons.push(format!(
            "{} undeliverable",
            count(o.undeliverable, "message")
        ));
    }
    let verdict = if reasons.is_empty() {
        Verdict::Healthy
    } else {
        Verdict::Degraded
    };
    let daemon = match &facts.running {
        Some(r) => DaemonReport {
            running: true,
            version: Some(r.version.clone()),
            started_at: Some(r.started_at),
            uptime_seconds: Some(seconds_since(r.started_at, now)),
        },
        None => DaemonReport {
            running: false,
            version: None,
            started_at: None,
            uptime_seconds: None,
        },
    };
    let mailboxes = facts
        .mailboxes
        .into_iter()
        .map(|m| {
            let live = m.live;
            MailboxReport {
                state: live.as_ref().map_or(Link::Unknown, |l| l.state),
                since: live.as_ref().map(|l| l.since),
                connected_at: live.as_ref().and_then(|l| l.connected_at),
                last_error: live.as_ref().and_then(|l| l.last_error.clone()),
                uid_validity: live
                    .as_ref()
                    .and_then(|l| l.uid_validity)
                    .or(m.cursor.map(|c| c.uid_validity)),
                last_uid: m.cursor.map(|c| c.last_uid),
                last_message: m.last_message,
                name: m.name,
            }
        })
        .collect();
    let digests = facts
        .digests
        .into_iter()
        .map(|d| DigestReport {
            schedule: d.schedule.as_ref().map(ToString::to_string),
            next: d.schedule.as_ref().and_then(|s| s.next_after(now)),
            last: d.last,
            name: d.name,
        })
        .collect();
    Report {
        verdict,
        reasons,
        source: if facts.running.is_some() {
            Source::Daemon
        } else {
            Source::Database
        },
        now,
        alert_after_seconds: facts.alert_after.as_secs(),
        daemon,
        mailboxes,
        outbox: OutboxReport {
            pending: o.pending,
            retrying: o.retrying,
            undeliverable: o.undeliverable,
            oldest_retrying,
        },
        digests,
        database: facts.database,
        oauth2: facts.grants,
    }
}

impl Report {
    /// The first line of the text: `healthy`, or `degraded: ` and the
    /// reasons.
    pub fn headline(&self) -> String {
        match self.verdict {
            Verdict::Healthy => "healthy".into(),
            Verdict::Degraded => format!("degraded: {}", self.reasons.join("; ")),
            Verdict::Unknown => format!("cannot tell: {}", self.reasons.join("; ")),
        }
    }
}

/// What `status` says when it cannot tell, as text (`cannot tell: ...`)
/// and as JSON (`{"verdict": "unknown", "reasons": [...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CannotTell {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

impl CannotTell {
    pub fn new(why: impl Into<String>) -> CannotTell {
        CannotTell {
            verdict: Verdict::Unknown,
            reasons: vec![why.into()],
        }
    }
}

fn seconds_since(t: Timestamp, now: Timestamp) -> i64 {
    crate::clock::seconds_between(t, now).max(0)
}

/// `1 message`, `3 messages`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A span of time at a glance: `42 s`, `5 min`, `3 h 20 min`, `2 d 4 h`.
pub fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 if (s % 3600) / 60 == 0 => format!("{} h", s / 3600),
        3600..86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ if (s % 86_400) / 3600 == 0 => format!("{} d", s / 86_400),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests;
