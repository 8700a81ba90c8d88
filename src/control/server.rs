//! The server side: the socket bound owner-only, one task per connection,
//! one request line and one answer line each, until shutdown.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::{DigestFn, Host, NowFn, Request, Response, handle};
use crate::shutdown::stopped;
use crate::store::Store;

/// What the server needs: the store, the daemon's case lock, its clock,
/// what answers digest requests, and the daemon itself for what only it
/// knows (`Status`) or does (waking the outbox).
pub struct Control {
    pub store: Store,
    /// Held by the daemon while it reads, changes and commits cases.
    pub case_lock: Arc<Mutex<()>>,
    pub now: Arc<NowFn>,
    pub digest: Arc<DigestFn>,
    /// None: `Status` is refused (a server without a daemon behind it).
    pub host: Option<Arc<dyn Host>>,
}

/// The largest request the server reads.
const MAX_REQUEST: usize = 64 * 1024;
/// How long a client may take to send its request, and to read the answer.
const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client of an export may take to read what was written.
const EXPORT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
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
            Ok(Request::Export) => {
                match reader.into_inner().into_inner().reunite(write) {
                    Ok(stream) => export(stream, shared).await,
                    Err(e) => tracing::error!(error = %e, "control socket: export"),
                }
                return;
            }
            Ok(req) => {
                tracing::debug!(request = %serde_json::to_string(&req).unwrap_or_default(), "control request");
                let sh = shared.clone();
                // The store and the case lock block: off the async threads.
                let answered = tokio::task::spawn_blocking(move || {
                    let now = (sh.now)();
                    handle(
                        &sh.store,
                        req,
                        now,
                        &sh.case_lock,
                        &*sh.digest,
                        sh.host.as_deref(),
                    )
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

/// `Export`: the answer line, then the export, from a blocking thread (the
/// snapshot reads the store; the writes go to the socket made blocking,
/// each bounded by a timeout). The store's writers wait only while the
/// snapshot is spooled, never for this client (see
/// [`Store::snapshot`](crate::store::Store::snapshot)).
async fn export(stream: UnixStream, shared: Arc<Control>) {
    let socket = match stream.into_std().and_then(|s| {
        s.set_nonblocking(false)?;
        s.set_write_timeout(Some(EXPORT_WRITE_TIMEOUT))?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "control socket: export");
            return;
        }
    };
    let sent = tokio::task::spawn_blocking(move || -> io::Result<Option<u64>> {
        let now = (shared.now)();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, &socket);
        let snapshot = match shared.store.snapshot(now) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "export failed");
                answer(&mut out, &Response::err(format!("export: {e}")))?;
                std::io::Write::flush(&mut out)?;
                return Ok(None);
            }
        };
        answer(&mut out, &Response::ok(snapshot.header()))?;
        let end = snapshot.write_to(&mut out)?;
        drop(out);
        socket.shutdown(std::net::Shutdown::Write)?;
        Ok(Some(end.records))
    })
    .await;
    match sent {
        Ok(Ok(Some(records))) => tracing::info!(records, "export sent"),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "export: the client did not read it all"),
        Err(e) => tracing::error!(error = %e, "export failed"),
    }
}

/// One answer line.
fn answer(out: &mut dyn std::io::Write, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}
