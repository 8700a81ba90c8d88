//! The daemon's control socket, and the one dispatcher behind `mailtriage
//! cases` and `mailtriage digest`.
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
//! A request that cannot be read gets an `Err` answer, never a panic.
//!
//! This module owns the protocol, the server ([`bind`], [`ControlSocket::serve`],
//! [`serve`]), the client ([`request`]) and where the socket lives
//! ([`socket_path`]). It reads and changes cases only through
//! [`Store`] and [`lifecycle`]; digests are answered by a
//! function the caller gives, so that this module does not depend on how
//! digests are made.

use crate::shutdown::stopped;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::config::Settings;
use crate::lifecycle;
use crate::outbox::OutboxItem;
use crate::record::CaseRecord;
use crate::store::{Store, StoreError};

/// One request: a line of JSON, `{"request": "list", "open": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Cases, oldest first, filtered: open only, this tier, at least this
    /// risk, received at or after `since` (unix seconds).
    List {
        #[serde(default)]
        open: bool,
        #[serde(default)]
        tier: Option<u8>,
        #[serde(default)]
        risk_min: Option<u8>,
        #[serde(default)]
        since: Option<i64>,
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
}

/// One answer: a line of JSON, `{"result": "ok", "value": ...}` or
/// `{"result": "err", "error": "no case ESC-2026-000009"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// `List`: an array of [`CaseRecord`]; `Show`: a [`CaseDetail`];
    /// `Resolve`/`Reopen`: a [`Changed`]; `Digest`: a string.
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

/// Why a digest request failed, as the digest job says it.
pub type DigestFailure = Box<dyn std::error::Error + Send + Sync>;

/// Answers a digest request: `(name, send_now)` to what to print.
pub type DigestFn = dyn Fn(&str, bool) -> Result<String, DigestFailure> + Send + Sync;

/// The time now (the daemon's clock, which tests may set).
pub type NowFn = dyn Fn() -> jiff::Timestamp + Send + Sync;

/// Who changes cases from the command line, in their history.
pub const BY: &str = "cli";

/// Answers one request against `store`: the one dispatcher of the socket
/// server and of the command line without a daemon.
///
/// `Resolve` and `Reopen` hold `lock` (the daemon's case lock, held by the
/// daemon while it changes cases) from reading the case to writing it, so
/// that a change from the command line and one from mail do not overwrite
/// each other.
pub fn handle(
    store: &Store,
    req: Request,
    now: jiff::Timestamp,
    lock: &Mutex<()>,
    digest: &dyn Fn(&str, bool) -> Result<String, DigestFailure>,
) -> Response {
    match req {
        Request::List {
            open,
            tier,
            risk_min,
            since,
        } => match list(store, open, tier, risk_min, since) {
            Ok(cases) => Response::ok(&cases),
            Err(e) => Response::err(e.to_string()),
        },
        Request::Show { id } => match show(store, &id) {
            Ok(Some(detail)) => Response::ok(&detail),
            Ok(None) => Response::err(format!("no case {id}")),
            Err(e) => Response::err(e.to_string()),
        },
        Request::Resolve { id, note } => change(store, &id, now, lock, |rec| {
            if lifecycle::resolve(rec, note.as_deref(), BY, now) {
                (true, format!("{id} resolved"))
            } else {
                (false, format!("{id} is already resolved; nothing changed"))
            }
        }),
        Request::Reopen { id } => change(store, &id, now, lock, |rec| {
            if lifecycle::reopen(rec, BY, now) {
                (true, format!("{id} reopened"))
            } else {
                (false, format!("{id} is already open; nothing changed"))
            }
        }),
        Request::Digest { name, send_now } => match digest(&name, send_now) {
            Ok(text) => Response::Ok {
                value: serde_json::Value::String(text),
            },
            Err(error) => Response::Err {
                error: error.to_string(),
            },
        },
    }
}

fn list(
    store: &Store,
    open: bool,
    tier: Option<u8>,
    risk_min: Option<u8>,
    since: Option<i64>,
) -> Result<Vec<CaseRecord>, StoreError> {
    let keep = |r: &CaseRecord| {
        (!open || r.is_open())
            && tier.is_none_or(|t| r.case.tier == t)
            && risk_min.is_none_or(|m| r.case.risk >= m)
            && since.is_none_or(|s| r.received_at.as_second() >= s)
    };
    let mut out = Vec::new();
    if open {
        // The open-case index spares reading every resolved case.
        for id in store.open_case_ids()? {
            if let Some(r) = store.case(&id)?
                && keep(&r)
            {
                out.push(r);
            }
        }
    } else {
        for r in store.cases() {
            let r = r?;
            if keep(&r) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

fn show(store: &Store, id: &str) -> Result<Option<CaseDetail>, StoreError> {
    let Some(case) = store.case(id)? else {
        return Ok(None);
    };
    let mut outbox = Vec::with_capacity(case.outbox.len());
    for &item in &case.outbox {
        match store.outbox_item(item)? {
            Some(i) => outbox.push(i),
            None => tracing::warn!(case = id, item, "outbox item of the case is missing"),
        }
    }
    Ok(Some(CaseDetail { case, outbox }))
}

fn change(
    store: &Store,
    id: &str,
    now: jiff::Timestamp,
    lock: &Mutex<()>,
    apply: impl FnOnce(&mut CaseRecord) -> (bool, String),
) -> Response {
    // A panic while the lock was held cannot have left a case half written
    // (the store is transactional): a poisoned lock is still usable.
    let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
    let mut rec = match store.case(id) {
        Ok(Some(r)) => r,
        Ok(None) => return Response::err(format!("no case {id}")),
        Err(e) => return Response::err(e.to_string()),
    };
    let (changed, message) = apply(&mut rec);
    let case = if changed {
        match store.update_case(&rec, &[], now) {
            Ok(r) => r,
            Err(e) => return Response::err(format!("storing {id}: {e}")),
        }
    } else {
        rec
    };
    Response::ok(&Changed {
        changed,
        message,
        case,
    })
}

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

/// Why [`request`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No socket, or nothing listening on it: the daemon is not running.
    #[error("no daemon answers at {}", .path.display())]
    NotRunning { path: PathBuf },
    #[error("the daemon's control socket at {} did not answer within {} s", .path.display(), .after.as_secs())]
    Timeout { path: PathBuf, after: Duration },
    #[error("the daemon's control socket at {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the daemon's control socket at {} answered something unreadable: {message}", .path.display())]
    Protocol { path: PathBuf, message: String },
}

/// The largest answer the client reads.
const MAX_RESPONSE: u64 = 1 << 30;

/// Sends `req` to the daemon at `path` and waits for its answer. Blocking;
/// `timeout` bounds each read and write.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let io_err = |source: io::Error| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ControlError::Timeout {
                path: path.to_path_buf(),
                after: timeout,
            }
        } else {
            ControlError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        message: format!("cannot encode the request: {e}"),
    })?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io_err)?;
    let mut answer = Vec::new();
    BufReader::new(io::Read::take(&stream, MAX_RESPONSE))
        .read_until(b'\n', &mut answer)
        .map_err(io_err)?;
    if answer.is_empty() {
        return Err(ControlError::Protocol {
            path: path.to_path_buf(),
            message: "the connection closed without an answer".into(),
        });
    }
    serde_json::from_slice(answer.trim_ascii()).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// What the server needs: the store, the daemon's case lock, its clock, and
/// what answers digest requests.
pub struct Control {
    pub store: Store,
    /// Held by the daemon while it reads, changes and commits cases.
    pub case_lock: Arc<Mutex<()>>,
    pub now: Arc<NowFn>,
    pub digest: Arc<DigestFn>,
}

/// The largest request the server reads.
const MAX_REQUEST: usize = 64 * 1024;
/// How long a client may take to send its request, and to read the answer.
const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in hand may take to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A bound control socket, ready to [`serve`](ControlSocket::serve).
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file, so that only our own socket is
    /// removed at the end.
    id: (u64, u64),
}

/// Binds the control socket at `path`: creates its parent directory (0700)
/// if missing, removes a stale socket file (one nothing answers on), binds,
/// and makes the socket owner-only (0600). Fails if another process answers
/// on `path`, or if `path` exists and is not a socket. Must be called
/// inside a tokio runtime.
pub fn bind(path: &Path) -> io::Result<ControlSocket> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another process answers on it", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    let owner_only = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::symlink_metadata(path));
    let meta = match owner_only {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    Ok(ControlSocket {
        listener,
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    })
}

/// [`bind`], then [`ControlSocket::serve`]: answers requests until
/// `shutdown` turns true, then removes the socket file.
pub async fn serve(
    path: &Path,
    shared: Arc<Control>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    bind(path)?.serve(shared, shutdown).await;
    Ok(())
}

impl ControlSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests, one task per connection, until `shutdown` turns
    /// true (or its sender is dropped); then stops accepting, removes the
    /// socket file and gives the requests in hand a moment to finish.
    pub async fn serve(self, shared: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(socket = %self.path.display(), "control socket listening");
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(connection(stream, shared.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors, most likely: do not spin.
                        tracing::warn!(error = %e, "control socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                () = stopped(&mut shutdown) => break,
            }
        }
        let ControlSocket { listener, path, id } = self;
        drop(listener);
        // Only our own socket: a daemon started since may have replaced it.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == id)
            && let Err(e) = std::fs::remove_file(&path)
        {
            tracing::warn!(socket = %path.display(), error = %e, "cannot remove the control socket");
        }
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            conns.shutdown().await;
        }
        tracing::info!("control socket closed");
    }
}

/// One connection: one request line, one answer line.
async fn connection(stream: UnixStream, shared: Arc<Control>) {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = Vec::new();
    let read = tokio::time::timeout(CLIENT_IO_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let response = match read {
        Err(_) => Response::err(format!(
            "no request within {} s",
            CLIENT_IO_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Response::err(format!("reading the request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => {
            Response::err(format!("request longer than {MAX_REQUEST} bytes"))
        }
        Ok(Ok(0)) => return,
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(line.trim_ascii()) {
            Err(e) => Response::err(format!("bad request: {e}")),
            Ok(req) => {
                tracing::debug!(request = %serde_json::to_string(&req).unwrap_or_default(), "control request");
                let sh = shared.clone();
                // The store and the case lock block: off the async threads.
                let answered = tokio::task::spawn_blocking(move || {
                    let now = (sh.now)();
                    handle(&sh.store, req, now, &sh.case_lock, &*sh.digest)
                })
                .await;
                answered.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "control request failed");
                    Response::err("internal error: the request failed")
                })
            }
        },
    };
    let mut bytes = serde_json::to_vec(&response).unwrap_or_else(|_| {
        br#"{"result":"err","error":"internal error: unprintable answer"}"#.to_vec()
    });
    bytes.push(b'\n');
    let written = tokio::time::timeout(CLIENT_IO_TIMEOUT, async {
        write.write_all(&bytes).await?;
        write.shutdown().await
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "control client went away"),
        Err(_) => tracing::debug!("control client did not read its answer"),
    }
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
        let err = Response::err("no case ESC-1");
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"result":"err","error":"no case ESC-1"}"#
        );
    }
}
