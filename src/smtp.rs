//! The SMTP transport: one connection of our own, kept open between
//! messages, over implicit TLS, STARTTLS or (for loopback tests) plain
//! TCP, logged in with a password or with XOAUTH2 (a token from the
//! grant's [`TokenSource`], replaced once when the server refuses it), and
//! each message delivered as it was stored, or in its 7-bit form to a
//! server without 8BITMIME. What is sent is composed in [`crate::mail`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::{ClientId, Extension};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::clock::Clock;
use crate::mail::seven_bit;
use crate::oauth::TokenSource;
use crate::outbox::OutboxItem;
use crate::tls::{ClientConfigError, Tls, client_config};

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub credentials: Option<(String, String)>,
    /// XOAUTH2 as this user with the grant's tokens, instead of
    /// `credentials`.
    pub oauth2: Option<SmtpOAuth>,
    /// Connecting, and each message's exchange, must finish within this
    /// (plus a second per 64 KiB of message).
    pub timeout: Duration,
    /// A private CA to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// XOAUTH2 for the SMTP server: the account, the grant's token source,
/// and the daemon's clock (a token's age is measured on it).
#[derive(Clone)]
pub struct SmtpOAuth {
    pub user: String,
    pub source: Arc<TokenSource>,
    pub clock: Arc<Clock>,
}

impl std::fmt::Debug for SmtpOAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpOAuth")
            .field("user", &self.user)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A delivery failure, as the outbox must treat it.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Try again later: 4xx, the server could not be reached, or it refused
    /// our login (a configuration error must not throw the mail away).
    #[error("transient: {0}")]
    Transient(String),
    /// Do not retry: the server answered 5xx to this message.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Why the SMTP settings cannot be used, found at startup: mostly the CA
/// file to trust besides the system's. (The text starts "permanent:", as
/// it did when this was a [`SendError`]: the daemon's config error quotes
/// it.)
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("permanent: SMTP settings: {0}")]
    Tls(#[from] ClientConfigError),
    #[error("permanent: SMTP settings: {}: {source}", .path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The CA file is not PEM, as lettre reads it.
    #[error("permanent: SMTP settings: {}: {source}", .path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// lettre cannot build the STARTTLS parameters.
    #[error("permanent: SMTP settings: {0}")]
    Starttls(#[source] lettre::transport::smtp::Error),
}

/// `f`, or the error `timed_out` makes if it takes longer than `limit`.
async fn within<T>(
    limit: Duration,
    timed_out: impl FnOnce() -> SendError,
    f: impl Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(timed_out()),
    }
}

/// A connection that sat unused this long is closed instead of reused:
/// servers drop idle clients after a few minutes (Postfix after 300 s).
const IDLE_REUSE: Duration = Duration::from_secs(60);

/// The SMTP side of the outbox: one connection, kept open between messages
/// and opened again when it breaks or has been idle.
///
/// The socket is our own, with `TCP_NODELAY`: lettre writes the final
/// `.` of a message in a write of its own, and with Nagle's algorithm that
/// write waits for the server's delayed ACK, 40 ms on Linux for every
/// message. It also widens the window in which a crash after the server's
/// 250 makes the message go out twice.
pub struct Smtp {
    settings: SmtpSettings,
    /// Built once, so that a bad CA file is a startup error.
    tls: Option<TlsSetup>,
    hello: ClientId,
    conn: tokio::sync::Mutex<Option<Pooled>>,
}

enum TlsSetup {
    Implicit(Arc<tokio_rustls::rustls::ClientConfig>),
    Starttls(TlsParameters),
}

struct Pooled {
    conn: AsyncSmtpConnection,
    last_used: Instant,
}

/// lettre takes a boxed stream; an implicit-TLS stream needs this newtype
/// to carry its trait.
#[derive(Debug)]
struct TlsSocket(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsSocket {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl Smtp {
    pub fn new(s: &SmtpSettings) -> Result<Smtp, SettingsError> {
        let tls = match s.tls {
            Tls::Plain => None,
            Tls::Implicit => Some(TlsSetup::Implicit(Arc::new(client_config(
                s.ca_file.as_deref(),
            )?))),
            Tls::Starttls => {
                // lettre reads the CA file its own way and takes a file
                // without a certificate; ours refuses it, as for implicit
                // TLS and IMAP, before lettre reads it again.
                client_config(s.ca_file.as_deref())?;
                let mut b = TlsParameters::builder(s.host.clone());
                if let Some(path) = &s.ca_file {
                    let pem = std::fs::read(path).map_err(|source| SettingsError::CaFile {
                        path: path.clone(),
                        source,
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|source| {
                        SettingsError::Certificate {
                            path: path.clone(),
                            source,
                        }
                    })?;
                    b = b.add_root_certificate(cert);
                }
                Some(TlsSetup::Starttls(
                    b.build_rustls().map_err(SettingsError::Starttls)?,
                ))
            }
        };
        Ok(Smtp {
            settings: s.clone(),
            tls,
            hello: ClientId::default(),
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// A connection, greeted and secured, not yet authenticated.
    async fn open(&self) -> Result<AsyncSmtpConnection, SendError> {
        let s = &self.settings;
        let transient = |what: &str, e: &dyn std::fmt::Display| {
            SendError::Transient(format!("{what} {}:{}: {e}", s.host, s.port))
        };
        let work = async {
            let tcp = TcpStream::connect((s.host.as_str(), s.port))
                .await
                .map_err(|e| transient("connecting to", &e))?;
            tcp.set_nodelay(true)
                .map_err(|e| transient("TCP_NODELAY on", &e))?;
            let conn = match &self.tls {
                Some(TlsSetup::Implicit(config)) => {
                    let name = ServerName::try_from(s.host.clone())
                        .map_err(|e| transient("server name of", &e))?;
                    let stream = TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| transient("TLS with", &e))?;
                    AsyncSmtpConnection::connect_with_transport(
                        Box::new(TlsSocket(stream)),
                        &self.hello,
                    )
                    .await
                    .map_err(|e| transient("greeting from", &e))?
                }
                Some(TlsSetup::Starttls(params)) => {
                    let mut conn =
                        AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                            .await
                            .map_err(|e| transient("greeting from", &e))?;
                    conn.starttls(params.clone(), &self.hello)
                        .await
                        .map_err(|e| transient("STARTTLS with", &e))?;
                    conn
                }
                None => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                    .await
                    .map_err(|e| transient("greeting from", &e))?,
            };
            Ok(conn)
        };
        match tokio::time::timeout(s.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(transient("timed out connecting to", &"no answer")),
        }
    }

    /// A connection, authenticated as the settings say. With a grant, a
    /// token the server refuses is replaced and tried once more on a new
    /// connection (after a refusal some servers send an error challenge
    /// that ends the session).
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let s = &self.settings;
        let transient = |what: &str, e: &dyn std::fmt::Display| {
            SendError::Transient(format!("{what} {}:{}: {e}", s.host, s.port))
        };
        let timed_out = || transient("timed out logging in to", &"no answer");
        if let Some(o) = &s.oauth2 {
            let mut retried = false;
            loop {
                let mut conn = self.open().await?;
                let token = o.source.token(o.clock.now()).await.map_err(|e| {
                    SendError::Transient(format!("OAuth 2.0 token for {}: {e}", o.user))
                })?;
                let credentials = Credentials::new(o.user.clone(), token.secret().to_string());
                let r = within(s.timeout, timed_out, async {
                    conn.auth(&[Mechanism::Xoauth2], &credentials)
                        .await
                        .map_err(|e| {
                            // Refused: 535, or the error challenge some
                            // servers send, which lettre cannot answer.
                            if e.is_permanent() || e.is_client() {
                                SendError::Permanent(format!(
                                    "XOAUTH2 login to {}:{}: {e}",
                                    s.host, s.port
                                ))
                            } else {
                                transient("XOAUTH2 login to", &e)
                            }
                        })
                })
                .await;
                match r {
                    Ok(_) => return Ok(conn),
                    // A refused token: a new one, once.
                    Err(SendError::Permanent(e)) if !retried => {
                        tracing::info!(server = %s.host, error = %e, "the SMTP server refused the access token: one more try with a new one");
                        retried = true;
                        o.source.invalidate(&token).await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), conn.quit()).await;
                    }
                    // Refused twice: the mail waits in the outbox all the
                    // same (a configuration error must not throw it away).
                    Err(SendError::Permanent(e)) => return Err(SendError::Transient(e)),
                    Err(e) => return Err(e),
                }
            }
        }
        let mut conn = self.open().await?;
        if let Some((user, pass)) = &s.credentials {
            within(s.timeout, timed_out, async {
                conn.auth(
                    DEFAULT_MECHANISMS,
                    &Credentials::new(user.clone(), pass.clone()),
                )
                .await
                .map_err(|e| transient("login to", &e))
            })
            .await?;
        }
        Ok(conn)
    }

    /// Delivers one stored message.
    pub async fn send(&self, item: &OutboxItem, raw: &[u8]) -> Result<(), SendError> {
        let from = item.envelope_from.parse::<Address>().map_err(|e| {
            SendError::Permanent(format!("envelope sender {:?}: {e}", item.envelope_from))
        })?;
        let mut to = Vec::new();
        for r in &item.recipients {
            to.push(
                r.parse::<Address>()
                    .map_err(|e| SendError::Permanent(format!("recipient {r:?}: {e}")))?,
            );
        }
        let envelope = lettre::address::Envelope::new(Some(from), to)
            .map_err(|e| SendError::Permanent(format!("envelope: {e}")))?;
        let limit = self.settings.timeout + Duration::from_secs((raw.len() / 65536) as u64);
        let mut slot = self.conn.lock().await;
        loop {
            let reused = match slot.take() {
                Some(p) if p.last_used.elapsed() < IDLE_REUSE && !p.conn.has_broken() => {
                    *slot = Some(p);
                    true
                }
                Some(mut stale) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), stale.conn.quit()).await;
                    false
                }
                None => false,
            };
            let mut pooled = match slot.take() {
                Some(p) => p,
                None => Pooled {
                    conn: self.connect().await?,
                    last_used: Instant::now(),
                },
            };
            // Forwards carry an 8-bit original as an 8bit message/rfc822
            // part; a server without 8BITMIME gets it as a file instead
            // (the only re-encoding RFC 2046 leaves for message/rfc822).
            let downgraded;
            let mut raw = raw;
            if !raw.is_ascii()
                && !pooled
                    .conn
                    .server_info()
                    .supports_feature(Extension::EightBitMime)
            {
                let Some(seven) = seven_bit(raw) else {
                    *slot = Some(pooled);
                    return Err(SendError::Permanent(
                        "the message has 8-bit content and the server does not offer 8BITMIME"
                            .into(),
                    ));
                };
                tracing::info!(
                    message_id = %item.message_id,
                    "the server does not offer 8BITMIME: the original goes as a file (original.eml)"
                );
                downgraded = seven;
                raw = &downgraded;
            }
            match tokio::time::timeout(limit, pooled.conn.send(&envelope, raw)).await {
                Ok(Ok(_)) => {
                    pooled.last_used = Instant::now();
                    *slot = Some(pooled);
                    return Ok(());
                }
                Ok(Err(e)) if e.is_permanent() => {
                    if !pooled.conn.has_broken() {
                        *slot = Some(pooled);
                    }
                    return Err(SendError::Permanent(e.to_string()));
                }
                // A reused connection the server closed while it sat idle
                // fails on the first write: that is not the message's
                // fault, so it gets one fresh connection at once.
                Ok(Err(e)) if reused && !e.is_transient() => {
                    tracing::debug!(error = %e, "SMTP connection went stale, reconnecting");
                    continue;
                }
                Ok(Err(e)) => return Err(SendError::Transient(e.to_string())),
                Err(_) => {
                    return Err(SendError::Transient(format!(
                        "no answer within {} s",
                        limit.as_secs()
                    )));
                }
            }
        }
    }

    /// Says QUIT on the open connection, if any.
    pub async fn close(&self) {
        if let Some(mut p) = self.conn.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), p.conn.quit()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::path::Path;

    use super::*;

    #[test]
    fn unusable_settings_name_the_ca_file_and_keep_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let settings = |tls, ca_file: &Path| SmtpSettings {
            host: "127.0.0.1".into(),
            port: 25,
            tls,
            credentials: None,
            oauth2: None,
            timeout: Duration::from_secs(5),
            ca_file: Some(ca_file.to_owned()),
        };
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let cases: &[(Tls, &Path, &str)] = &[
            (Tls::Implicit, &missing, "Tls"),
            (Tls::Implicit, &garbage, "Tls"),
            (Tls::Implicit, &empty, "Tls"),
            (Tls::Starttls, &missing, "Tls"),
            (Tls::Starttls, &garbage, "Tls"),
            (Tls::Starttls, &empty, "Tls"),
        ];
        for (tls, path, expected) in cases {
            let Err(e) = Smtp::new(&settings(*tls, path)) else {
                panic!("{tls:?} {}: accepted", path.display());
            };
            let variant = match &e {
                SettingsError::Tls(_) => "Tls",
                SettingsError::CaFile { .. } => "CaFile",
                SettingsError::Certificate { .. } => "Certificate",
                SettingsError::Starttls(_) => "Starttls",
            };
            assert_eq!(variant, *expected, "{tls:?}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("permanent: SMTP settings: {}: ", path.display())),
                "{tls:?}: {e}"
            );
            assert!(e.source().is_some(), "{tls:?}: {e}: the cause is kept");
        }
        assert!(
            Smtp::new(&settings(Tls::Plain, &missing)).is_ok(),
            "plain SMTP reads no CA file"
        );
    }
}
