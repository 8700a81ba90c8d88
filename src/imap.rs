//! Fetching: one IMAP connection to one mailbox.
//!
//! async-imap speaks the protocol; this module chooses how: TLS with rustls
//! (implicit, or STARTTLS; plain only when the config says so, for loopback),
//! LOGIN or XOAUTH2, new mail found by UID above the stored cursor, sizes
//! read before bodies so that a huge message is never downloaded, bodies
//! fetched with `BODY.PEEK[]` (fetching must not mark anything), and IDLE
//! with a bounded wait. What to do with the mail is the daemon's business.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::UnsolicitedResponse;
use async_imap::{Authenticator, Client, Session};
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::tls::Tls;

/// Any stream the session can run over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Io for T {}
type Stream = Box<dyn Io>;

/// How to authenticate.
#[derive(Clone)]
pub enum Auth {
    Password(String),
    /// An OAuth 2 access token (Gmail, Microsoft 365).
    XOAuth2(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach a log line.
        match self {
            Auth::Password(_) => f.write_str("Password(..)"),
            Auth::XOAuth2(_) => f.write_str("XOAuth2(..)"),
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub user: String,
    pub auth: Auth,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
    /// A CA certificate (PEM) to trust besides the system's, e.g. a
    /// company CA or a test CA.
    pub ca_file: Option<PathBuf>,
}

/// What went wrong, as the caller must treat it.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// The server refused the credentials: worth an alert, not a tight retry.
    #[error("authentication failed for {user}: {message}")]
    Auth { user: String, message: String },
    #[error("folder {0:?} does not exist")]
    MissingFolder(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// The server's certificate was refused: like a refused login, a
    /// configuration problem worth an alert at once.
    #[error("TLS: {0}")]
    Certificate(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("IMAP: {0}")]
    Protocol(#[from] async_imap::error::Error),
}

/// A selected folder's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    pub uid_validity: u32,
    pub uid_next: Option<u32>,
    pub exists: u32,
}

/// A message as listed before it is downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub uid: u32,
    /// RFC822.SIZE.
    pub size: u32,
    /// INTERNALDATE: when the server received it.
    pub received: Option<jiff::Timestamp>,
}

/// How an IDLE ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idled {
    /// The server reported a change.
    NewData,
    /// The wait bound passed without news.
    Timeout,
    /// The caller asked to stop.
    Stopped,
}

struct XOAuth2<'a> {
    user: &'a str,
    token: &'a str,
}

impl Authenticator for XOAuth2<'_> {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        // The first call answers the empty challenge; a second call means
        // the server sent an error challenge, answered empty so that the
        // command fails with the server's reason.
        let r = format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token);
        self.token = "";
        if r.ends_with("Bearer \x01\x01") {
            String::new()
        } else {
            r
        }
    }
}

async fn tls_wrap(tcp: TcpStream, s: &ImapSettings) -> Result<Stream, ImapError> {
    let stream = crate::tls::handshake(tcp, &s.host, s.ca_file.as_deref())
        .await
        .map_err(|e| match e {
            crate::tls::HandshakeError::Certificate(m) => ImapError::Certificate(m),
            crate::tls::HandshakeError::Other(m) => ImapError::Tls(m),
        })?;
    Ok(Box::new(stream))
}

async fn bounded<T, E: Into<ImapError>>(
    d: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ImapError::Timeout(d)),
    }
}

/// A logged-in IMAP session.
pub struct Connection {
    session: Option<Session<Stream>>,
    timeout: Duration,
    can_idle: bool,
    can_move: bool,
}

impl Connection {
    /// Connects, secures, logs in and reads the capabilities.
    pub async fn connect(s: &ImapSettings) -> Result<Connection, ImapError> {
        let t = s.timeout;
        let tcp = bounded(t, TcpStream::connect((s.host.as_str(), s.port))).await?;
        let _ = tcp.set_nodelay(true);
        let client = match s.tls {
            Tls::Plain => {
                let mut c = Client::new(Box::new(tcp) as Stream);
                greeting(&mut c, t).await?;
                c
            }
            Tls::Implicit => {
                let mut c = Client::new(tls_wrap(tcp, s).await?);
                greeting(&mut c, t).await?;
                c
            }
            Tls::Starttls => {
                let mut plain = Client::new(tcp);
                let g = bounded(t, plain.read_response()).await?;
                if g.is_none() {
                    return Err(ImapError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                bounded(t, plain.run_command_and_check_ok("STARTTLS", None)).await?;
                Client::new(tls_wrap(plain.into_inner(), s).await?)
            }
        };
        let login = async {
            match &s.auth {
                Auth::Password(p) => client.login(&s.user, p).await,
                Auth::XOAuth2(token) => {
                    let auth = XOAuth2 {
                        user: &s.user,
                        token,
                    };
                    client.authenticate("XOAUTH2", auth).await
                }
            }
        };
        let mut session = match tokio::time::timeout(t, login).await {
            Err(_) => return Err(ImapError::Timeout(t)),
            Ok(Err((e, _))) => {
                return Err(match e {
                    async_imap::error::Error::No(m) | async_imap::error::Error::Bad(m) => {
                        ImapError::Auth {
                            user: s.user.clone(),
                            message: m,
                        }
                    }
                    other => other.into(),
                });
            }
            Ok(Ok(session)) => session,
        };
        let caps = bounded(t, session.capabilities()).await?;
        Ok(Connection {
            can_idle: caps.has_str("IDLE"),
            can_move: caps.has_str("MOVE"),
            session: Some(session),
            timeout: t,
        })
    }

    pub fn can_idle(&self) -> bool {
        self.can_idle
    }

    fn session(&mut self) -> Result<&mut Session<Stream>, ImapError> {
        self.session.as_mut().ok_or(ImapError::Protocol(
            async_imap::error::Error::ConnectionLost,
        ))
    }

    /// Selects a folder.
    pub async fn select(&mut self, folder: &str) -> Result<Selected, ImapError> {
        let t = self.timeout;
        let s = self.session()?;
        match tokio::time::timeout(t, s.select(folder)).await {
            Err(_) => Err(ImapError::Timeout(t)),
            Ok(Err(async_imap::error::Error::No(_))) => {
                Err(ImapError::MissingFolder(folder.to_string()))
            }
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(m)) => Ok(Selected {
                uid_validity: m.uid_validity.unwrap_or(0),
                uid_next: m.uid_next,
                exists: m.exists,
            }),
        }
    }

    /// Creates a folder unless it exists.
    pub async fn ensure_folder(&mut self, folder: &str) -> Result<(), ImapError> {
        let t = self.timeout;
        let s = self.session()?;
        let exists = match tokio::time::timeout(t, s.status(folder, "(UIDVALIDITY)")).await {
            Err(_) => return Err(ImapError::Timeout(t)),
            Ok(Ok(_)) => true,
            Ok(Err(async_imap::error::Error::No(_))) => false,
            Ok(Err(e)) => return Err(e.into()),
        };
        if !exists {
            bounded(t, s.create(folder)).await?;
        }
        Ok(())
    }

    /// UIDs above `after` in the selected folder, ascending.
    pub async fn uids_after(&mut self, after: u32) -> Result<Vec<u32>, ImapError> {
        let t = self.timeout;
        let s = self.session()?;
        let set = bounded(
            t,
            s.uid_search(format!("UID {}:*", after.saturating_add(1))),
        )
        .await?;
        // `n:*` always includes the highest UID, even below n.
        let mut uids: Vec<u32> = set.into_iter().filter(|&u| u > after).collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// The RFC822.SIZE of each UID.
    pub async fn sizes(&mut self, uids: &[u32]) -> Result<Vec<(u32, u32)>, ImapError> {
        Ok(self
            .list(uids)
            .await?
            .iter()
            .map(|l| (l.uid, l.size))
            .collect())
    }

    /// Each UID's size and INTERNALDATE, by UID: what is known of a
    /// message before it is downloaded.
    pub async fn list(&mut self, uids: &[u32]) -> Result<Vec<Listed>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let t = self.timeout;
        let s = self.session()?;
        let fetches = bounded(t, async {
            s.uid_fetch(uid_set(uids), "(UID RFC822.SIZE INTERNALDATE)")
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        let mut out: Vec<Listed> = fetches
            .iter()
            .filter_map(|f| {
                Some(Listed {
                    uid: f.uid?,
                    size: f.size.unwrap_or(0),
                    received: f
                        .internal_date()
                        .and_then(|d| jiff::Timestamp::from_second(d.timestamp()).ok()),
                })
            })
            .collect();
        out.sort_unstable_by_key(|l| l.uid);
        Ok(out)
    }

    /// The whole message of each UID, without setting `\Seen`.
    pub async fn fetch(&mut self, uids: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        // Bodies take longer than a command: allow for the size of the batch.
        let t = self.timeout * 4;
        let s = self.session()?;
        let fetches = bounded(t, async {
            s.uid_fetch(uid_set(uids), "(UID BODY.PEEK[])")
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        let mut out: Vec<(u32, Vec<u8>)> = fetches
            .iter()
            .filter_map(|f| Some((f.uid?, f.body()?.to_vec())))
            .collect();
        out.sort_unstable_by_key(|(u, _)| *u);
        Ok(out)
    }

    /// Sets `\Seen` on the UIDs.
    pub async fn mark_seen(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let t = self.timeout;
        let s = self.session()?;
        bounded(t, async {
            s.uid_store(uid_set(uids), "+FLAGS.SILENT (\\Seen)")
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        Ok(())
    }

    /// Moves the UIDs to `folder` (MOVE, or COPY then `\Deleted` and UID
    /// EXPUNGE of exactly these UIDs where MOVE is missing).
    pub async fn move_to(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let t = self.timeout;
        let can_move = self.can_move;
        let s = self.session()?;
        let set = uid_set(uids);
        if can_move {
            match tokio::time::timeout(t, s.uid_mv(&set, folder)).await {
                Err(_) => return Err(ImapError::Timeout(t)),
                Ok(Err(async_imap::error::Error::No(_))) => {
                    return Err(ImapError::MissingFolder(folder.into()));
                }
                Ok(r) => r?,
            }
        } else {
            bounded(t, s.uid_copy(&set, folder)).await?;
            bounded(t, async {
                s.uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                    .await?
                    .try_collect::<Vec<_>>()
                    .await
            })
            .await?;
            bounded(t, async {
                s.uid_expunge(&set).await?.try_collect::<Vec<_>>().await
            })
            .await?;
        }
        Ok(())
    }

    /// Waits in IDLE until the server reports a change, `max` passes, or
    /// `stop` completes. Servers send keepalives that reset async-imap's own
    /// timeout, so `max` bounds the whole wait (re-issue IDLE before the
    /// server's 30-minute limit).
    pub async fn idle(
        &mut self,
        max: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<Idled, ImapError> {
        let session = self.session.take().ok_or(ImapError::Protocol(
            async_imap::error::Error::ConnectionLost,
        ))?;
        let mut handle = session.idle();
        bounded(self.timeout, handle.init()).await?;
        let outcome = {
            let (wait, interrupt) = handle.wait_with_timeout(max + Duration::from_secs(60));
            let outcome = tokio::select! {
                r = tokio::time::timeout(max, wait) => match r {
                    Err(_) => Idled::Timeout,
                    Ok(Ok(IdleResponse::NewData(_))) => Idled::NewData,
                    Ok(Ok(IdleResponse::Timeout)) => Idled::Timeout,
                    Ok(Ok(IdleResponse::ManualInterrupt)) => Idled::Stopped,
                    Ok(Err(e)) => return Err(e.into()),
                },
                () = stop => Idled::Stopped,
            };
            drop(interrupt);
            outcome
        };
        let session = bounded(self.timeout, handle.done()).await?;
        self.session = Some(session);
        self.drain_unsolicited();
        Ok(outcome)
    }

    /// Empties the unsolicited-response channel (it holds 100 and drops
    /// silently when full; the daemon reads state by UID anyway).
    pub fn drain_unsolicited(&mut self) {
        if let Some(s) = self.session.as_mut() {
            while s.unsolicited_responses.try_recv().is_ok() {}
        }
    }

    /// Whether the server said, since the channel was last emptied, that
    /// new mail arrived (an `EXISTS` that came with another command's
    /// answer: IDLE would not announce that mail again). Empties the
    /// channel.
    pub fn saw_new_mail(&mut self) -> bool {
        let mut seen = false;
        if let Some(s) = self.session.as_mut() {
            while let Ok(r) = s.unsolicited_responses.try_recv() {
                seen |= matches!(
                    r,
                    UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
                );
            }
        }
        seen
    }

    /// A cheap round trip, to find out whether the connection still works.
    pub async fn noop(&mut self) -> Result<(), ImapError> {
        let t = self.timeout;
        let s = self.session()?;
        bounded(t, s.noop()).await
    }

    pub async fn logout(mut self) {
        if let Some(mut s) = self.session.take() {
            let _ = tokio::time::timeout(self.timeout, s.logout()).await;
        }
    }
}

async fn greeting(c: &mut Client<Stream>, t: Duration) -> Result<(), ImapError> {
    match bounded(t, c.read_response()).await? {
        Some(_) => Ok(()),
        None => Err(ImapError::Io(std::io::ErrorKind::UnexpectedEof.into())),
    }
}

/// A compact UID set: `1:3,7,9:10`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[3, 1, 2, 2]), "1:3");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let a = format!("{:?}", Auth::Password("hunter2".into()));
        assert!(!a.contains("hunter2"));
        let a = format!("{:?}", Auth::XOAuth2("ya29.token".into()));
        assert!(!a.contains("ya29"));
    }

    #[test]
    fn xoauth2_answers_once_then_empty() {
        let mut a = XOAuth2 {
            user: "ops@example.com",
            token: "tok",
        };
        assert_eq!(
            a.process(b""),
            "user=ops@example.com\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(a.process(b"{\"status\":\"401\"}"), "");
    }
}
