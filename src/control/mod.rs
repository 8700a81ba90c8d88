//! The daemon's control socket, and the one dispatcher behind `mailtriage
//! cases`, `digest`, `status` and `outbox`.
//!
//! sled locks its database for one process: while the daemon runs, the
//! command line cannot open the database. So the daemon listens on a Unix
//! stream socket (in its runtime directory, owner-only) and the commands ask
//! it; when no daemon answers, they open the database themselves. Both ways
//! end in [`handle`], so a command behaves the same whether the daemon runs
//! or not.
//!
//! The protocol is JSON lines: the client sends one [`Request`] on one line,
//! the server answers one [`Response`] on one line and closes the connection.
//! A request that cannot be read gets an `Err` answer, never a panic. One
//! request streams: the `Ok` answer to `Export` is followed by the export's
//! lines ([`request_stream`] reads them).
//!
//! This module owns the protocol (here), the one dispatcher ([`handle`], in
//! `dispatch`; the status gathered in `status`, the outbox's requests in
//! `outbox`), the server ([`bind`], [`ControlSocket::serve`], [`serve`],
//! in `server`), the client ([`request`], in `client`) and where the socket
//! and the database live ([`socket_path`], [`database_path`]). It reads and
//! changes cases only through [`Store`](crate::store::Store) and
//! [`lifecycle`](crate::lifecycle); digests are answered by a function the
//! caller gives, and what only a running daemon knows by its [`Host`], so
//! that this module does not depend on how digests are made or how the
//! daemon runs.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::calendar::Schedule;
use crate::config::Settings;
use crate::health::{MailboxLive, Running};
use crate::outbox::{OutboxItem, QueueState};
use crate::record::CaseRecord;

mod client;
mod dispatch;
mod outbox;
mod server;
mod status;

pub use client::{ControlError, request, request_stream};
pub use dispatch::handle;
pub use server::{Control, ControlSocket, bind, serve};

/// One request: a line of JSON, `{"request": "list", "open": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Cases, oldest first, filtered: open only, this tier, at least this
    /// risk, received at or after `since` (unix seconds on the wire).
    List {
        #[serde(default)]
        open: bool,
        #[serde(default)]
        tier: Option<u8>,
        #[serde(default)]
        risk_min: Option<u8>,
        #[serde(default, with = "crate::clock::seconds::option")]
        since: Option<Timestamp>,
    },
    /// One case and every message queued for it ([`CaseDetail`]).
    Show { id: String },
    /// Resolves a case by hand, with an optional resolution note
    /// ([`Changed`]).
    Resolve {
        id: String,
        #[serde(default)]
        note: Option<String>,
    },
    /// Reopens a resolved case ([`Changed`]).
    Reopen { id: String },
    /// What digest `name` would say now, or (with `send_now`) queues it:
    /// answered by the digest function given to the server.
    Digest {
        name: String,
        #[serde(default)]
        send_now: bool,
    },
    /// Everything the store holds, at one point in time: the answer line
    /// is followed by the export itself (see [`crate::store::Snapshot`]),
    /// until the connection closes.
    Export,
    /// The daemon's health ([`Report`](crate::health::Report)).
    Status,
    /// Outbox items in these states, oldest first (an array of
    /// [`OutboxEntry`]); none given: pending, retrying and undeliverable.
    OutboxList {
        #[serde(default)]
        states: Vec<QueueState>,
    },
    /// One outbox item, with its headers ([`OutboxEntry`]).
    OutboxShow { id: u64 },
    /// Sends an item not sent yet at once, attempts counted afresh
    /// ([`OutboxChanged`]).
    OutboxRetry { id: u64 },
    /// Retries every undeliverable item (an array of [`OutboxChanged`]).
    OutboxRetryUndeliverable,
    /// Gives up an item not sent yet: kept as dropped ([`OutboxChanged`]).
    OutboxDrop { id: u64 },
}

/// One answer: a line of JSON, `{"result": "ok", "value": ...}` or
/// `{"result": "err", "error": "no case ESC-2026-000009"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// `List`: an array of [`CaseRecord`]; `Show`: a [`CaseDetail`];
    /// `Resolve`/`Reopen`: a [`Changed`]; `Digest`: a string; `Export`:
    /// the export's header (the export follows).
    Ok {
        value: serde_json::Value,
    },
    Err {
        error: String,
    },
}

impl Response {
    fn ok<T: Serialize>(value: &T) -> Response {
        match serde_json::to_value(value) {
            Ok(value) => Response::Ok { value },
            Err(e) => Response::err(format!("internal error: {e}")),
        }
    }

    fn err(error: impl Into<String>) -> Response {
        Response::Err {
            error: error.into(),
        }
    }
}

/// The answer to `Show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseDetail {
    pub case: CaseRecord,
    /// The items of `case.outbox` that exist, in its order.
    pub outbox: Vec<OutboxItem>,
}

/// The answer to `Resolve` and `Reopen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// False when there was nothing to do (already resolved, already open).
    pub changed: bool,
    /// In words, for the command line: "ESC-2026-000001 resolved".
    pub message: String,
    /// The case as it is now.
    pub case: CaseRecord,
}

/// An outbox item as `outbox list` and `outbox show` give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    #[serde(flatten)]
    pub item: OutboxItem,
    /// Where it stands: its state, with pending split by whether a try
    /// has failed.
    pub queue: QueueState,
    /// Its subject, decoded; null when its bytes are no longer kept.
    pub subject: Option<String>,
    /// Its size in bytes, when they are kept.
    pub size: Option<u64>,
    /// `show` only: its header section as it is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
}

/// The answer to `OutboxRetry`, `OutboxDrop` and (each)
/// `OutboxRetryUndeliverable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxChanged {
    /// False when there was nothing to do (already sent, already dropped).
    pub changed: bool,
    /// In words, for the command line: "outbox #12 forward to ...: retried".
    pub message: String,
    /// The item as it is now.
    pub item: OutboxItem,
}

/// What a status covers besides the store: the daemon's mailboxes and
/// digests, its `alert_after`, its database, and, when it runs, what it
/// knows live. The daemon gives its own; without a daemon, the config on
/// disk gives it ([`Scope::from_config`]).
#[derive(Debug, Clone)]
pub struct Scope {
    /// None: no daemon runs.
    pub running: Option<Running>,
    pub alert_after: std::time::Duration,
    /// Each configured mailbox, with its live record while the daemon
    /// runs.
    pub mailboxes: Vec<(String, Option<MailboxLive>)>,
    /// Each digest of the routing table, with its schedule.
    pub digests: Vec<(String, Option<Schedule>)>,
    pub database: PathBuf,
    /// Each OAuth 2.0 grant's health while the daemon runs.
    pub grants: Vec<crate::health::GrantHealth>,
}

/// The process that answers besides the store: the running daemon, or
/// the command line on its own.
pub trait Host: Send + Sync {
    /// What a status covers, as it is now.
    fn scope(&self) -> Scope;
    /// An outbox item was put back to be sent: the daemon's outbox task
    /// wakes at once. Without a daemon, nothing: the item goes when one
    /// runs.
    fn wake_outbox(&self);
}

/// Why a digest request failed, as the digest job says it.
pub type DigestFailure = Box<dyn std::error::Error + Send + Sync>;

/// Answers a digest request: `(name, send_now)` to what to print.
pub type DigestFn = dyn Fn(&str, bool) -> Result<String, DigestFailure> + Send + Sync;

/// The time now (the daemon's clock, which tests may set).
pub type NowFn = dyn Fn() -> jiff::Timestamp + Send + Sync;

/// Who changes cases from the command line, in their history.
pub const BY: &str = "cli";

/// The directories of the shipped unit (`StateDirectory=mailtriage`,
/// `RuntimeDirectory=mailtriage`), for commands run from a shell, which
/// has neither variable.
pub const UNIT_STATE_DIRECTORY: &str = "/var/lib/mailtriage";
pub const UNIT_RUNTIME_DIRECTORY: &str = "/run/mailtriage";

/// Where the daemon's database is: `[daemon] database`, else
/// `$STATE_DIRECTORY/db` (the first directory when systemd gives several);
/// `None` when neither is set. The daemon uses this rule too.
pub fn database_path(cfg: &Settings) -> Option<PathBuf> {
    if let Some(p) = &cfg.daemon.database {
        return Some(p.clone());
    }
    first_dir("STATE_DIRECTORY").map(|d| d.join("db"))
}

/// The state directory: the database's, where the OAuth 2.0 refresh
/// tokens are kept too (`oauth2/`).
pub fn state_directory(database: &Path) -> PathBuf {
    match database.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where the control socket is: `$RUNTIME_DIRECTORY/mailtriage.sock` when
/// systemd gives a runtime directory (`RuntimeDirectory=`), else
/// `control.sock` next to the database; `None` when neither is known.
pub fn socket_path(cfg: &Settings) -> Option<PathBuf> {
    if let Some(dir) = first_dir("RUNTIME_DIRECTORY") {
        return Some(dir.join("mailtriage.sock"));
    }
    let db = database_path(cfg)?;
    let dir = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Some(dir.join("control.sock"))
}

/// The first of the colon-separated directories systemd puts in `var`.
fn first_dir(var: &str) -> Option<PathBuf> {
    let v = std::env::var_os(var)?;
    let first = v.to_string_lossy().split(':').next()?.to_string();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_tagged_json() {
        let req = Request::Resolve {
            id: "ESC-2026-000001".into(),
            note: Some("refunded".into()),
        };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(
            line,
            r#"{"request":"resolve","id":"ESC-2026-000001","note":"refunded"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        // Omitted filters are off.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"request":"list"}"#).unwrap(),
            Request::List {
                open: false,
                tier: None,
                risk_min: None,
                since: None
            }
        );
        // The one request answered by a stream.
        assert_eq!(
            serde_json::to_string(&Request::Export).unwrap(),
            r#"{"request":"export"}"#
        );
        // The status and outbox requests, as a client writes them.
        let lines = [
            (r#"{"request":"status"}"#, Request::Status),
            (
                r#"{"request":"outbox_list"}"#,
                Request::OutboxList { states: vec![] },
            ),
            (
                r#"{"request":"outbox_list","states":["retrying","dropped"]}"#,
                Request::OutboxList {
                    states: vec![QueueState::Retrying, QueueState::Dropped],
                },
            ),
            (
                r#"{"request":"outbox_show","id":7}"#,
                Request::OutboxShow { id: 7 },
            ),
            (
                r#"{"request":"outbox_retry","id":7}"#,
                Request::OutboxRetry { id: 7 },
            ),
            (
                r#"{"request":"outbox_retry_undeliverable"}"#,
                Request::OutboxRetryUndeliverable,
            ),
            (
                r#"{"request":"outbox_drop","id":7}"#,
                Request::OutboxDrop { id: 7 },
            ),
        ];
        for (line, req) in lines {
            assert_eq!(
                serde_json::from_str::<Request>(line).unwrap(),
                req,
                "{line}"
            );
        }
        assert!(serde_json::from_str::<Request>(r#"{"request":"outbox_retry"}"#).is_err());
        let err = Response::err("no case ESC-1");
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"result":"err","error":"no case ESC-1"}"#
        );
    }
}
