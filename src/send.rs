//! Outgoing mail: composing it, guarding against loops, and delivering the
//! outbox over SMTP.
//!
//! Every message is composed to its final bytes when it is queued (with a
//! Message-ID fixed then), stored in the outbox, and only then delivered: a
//! resend after a crash is byte for byte the same message. Every message
//! carries `Auto-Submitted` (RFC 3834: `auto-replied` for replies to agents,
//! `auto-generated` for forwards, alerts and digests) and
//! `X-Auto-Response-Suppress: All`, so that well-behaved software never
//! answers it; [`reply_allowed`] is the other half, refusing to answer
//! automatic mail.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use lettre::message::header::{
    ContentDisposition, ContentTransferEncoding, ContentType, HeaderName, HeaderValue,
};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::{Address, Message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::backoff::Backoff;
use crate::message::Email;
use crate::outbox::{NewOutgoing, OutboxItem, OutgoingKind};
use crate::route::Rendered;
use crate::store::{Store, StoreError};
use crate::tls::Tls;

/// Who the daemon is when it sends.
#[derive(Debug, Clone)]
pub struct Identity {
    /// From: and envelope sender.
    pub from: Mailbox,
    /// The right-hand side of Message-IDs.
    pub domain: String,
}

impl Identity {
    /// Who the daemon is, from `[smtp] from` and `[daemon] domain`.
    pub fn from_config(daemon: &crate::config::Settings) -> Result<Identity, FromError> {
        let from = daemon.smtp.from.parse().map_err(|source| FromError {
            from: daemon.smtp.from.clone(),
            source,
        })?;
        Ok(Identity {
            from,
            domain: daemon.daemon.domain.clone(),
        })
    }
}

/// `[smtp] from` is not an address.
#[derive(Debug, thiserror::Error)]
#[error(
    "[smtp] from: expected an address such as \"Escalations <mailtriage@example.com>\", found {from:?} ({source})"
)]
pub struct FromError {
    from: String,
    #[source]
    source: lettre::address::AddressError,
}

/// Why a message could not be composed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("invalid address {0:?}: {1}")]
    Address(String, lettre::address::AddressError),
    #[error("building the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("message has no recipient")]
    NoRecipient,
    #[error("content type: {0}")]
    ContentType(String),
}

fn mailbox(addr: &str) -> Result<Mailbox, ComposeError> {
    addr.trim()
        .parse::<Address>()
        .map(|a| Mailbox::new(None, a))
        .map_err(|e| ComposeError::Address(addr.to_string(), e))
}

fn header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
}

/// The Message-ID of a case's message of `kind`, `seq` saying which (see
/// the intake's occasions: `0`, `u3.1`, `1.now`).
pub fn message_id(identity: &Identity, case_id: &str, kind: &str, seq: &str) -> String {
    format!("{case_id}.{kind}.{seq}@{}", identity.domain)
}

fn finish(
    body: Result<Message, lettre::error::Error>,
    kind: OutgoingKind,
    case_id: Option<&str>,
    message_id: String,
    identity: &Identity,
) -> Result<NewOutgoing, ComposeError> {
    let message = body?;
    let recipients: Vec<String> = message
        .envelope()
        .to()
        .iter()
        .map(|a| a.to_string())
        .collect();
    if recipients.is_empty() {
        return Err(ComposeError::NoRecipient);
    }
    Ok(NewOutgoing {
        kind,
        case_id: case_id.map(str::to_string),
        message_id,
        envelope_from: identity.from.email.to_string(),
        recipients,
        raw: message.formatted(),
        not_before: None,
    })
}

fn base(
    identity: &Identity,
    message_id: &str,
    subject: &str,
    date: SystemTime,
    auto: &str,
    high_importance: bool,
) -> lettre::message::MessageBuilder {
    let b = Message::builder()
        .from(identity.from.clone())
        .subject(subject)
        .date(date)
        .message_id(Some(format!("<{message_id}>")))
        .raw_header(header("Auto-Submitted", auto))
        .raw_header(header("X-Auto-Response-Suppress", "All"));
    if high_importance {
        // RFC 2156's Importance, and the X-Priority that Outlook and
        // Apple Mail show as a flag.
        b.raw_header(header("Importance", "high"))
            .raw_header(header("X-Priority", "1 (Highest)"))
    } else {
        b
    }
}

/// A reply to the agent, threaded to the agent's message.
#[allow(clippy::too_many_arguments)]
pub fn compose_reply(
    identity: &Identity,
    case_id: &str,
    seq: &str,
    to: &str,
    reply_to: Option<&str>,
    rendered: &Rendered,
    original: &Email,
    date: SystemTime,
) -> Result<NewOutgoing, ComposeError> {
    let id = message_id(identity, case_id, "reply", seq);
    let mut b = base(
        identity,
        &id,
        &rendered.subject,
        date,
        "auto-replied",
        rendered.high_importance,
    )
    .to(mailbox(to)?);
    if let Some(r) = reply_to {
        b = b.reply_to(mailbox(r)?);
    }
    if let Some(parent) = &original.message_id {
        let mut refs: Vec<String> = original
            .references
            .iter()
            .map(|r| format!("<{r}>"))
            .collect();
        refs.push(format!("<{parent}>"));
        b = b
            .in_reply_to(format!("<{parent}>"))
            .references(refs.join(" "));
    }
    let body = b.singlepart(text_part(&rendered.body)?);
    finish(body, OutgoingKind::Reply, Some(case_id), id, identity)
}

/// Why an original cannot travel as a message/rfc822 part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// A line longer than 998 octets (RFC 5322 section 2.1.1).
    LongLine,
    /// A NUL octet.
    Nul,
    /// A CR not followed by LF.
    BareCr,
}

impl Unfit {
    /// In words, for the forward's summary and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Unfit::LongLine => "it has a line longer than 998 characters",
            Unfit::Nul => "it contains NUL bytes",
            Unfit::BareCr => "it contains a carriage return outside a line break",
        }
    }
}

/// How the agent's original is attached to a forward.
///
/// RFC 2046 section 5.2.1 allows a message/rfc822 part only the identity
/// encodings (7bit, 8bit, binary), so the original goes as it is or not at
/// all as a message: one that no identity encoding can carry over SMTP
/// goes as a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginalPart {
    /// message/rfc822, 7bit: ASCII with lines of at most 998 octets.
    SevenBit,
    /// message/rfc822, 8bit: the same with octets over 127, which needs
    /// the SMTP server's 8BITMIME (see [`Smtp::send`] for a server
    /// without it).
    EightBit,
    /// application/octet-stream named `original.eml`, base64.
    File(Unfit),
}

impl OriginalPart {
    /// Whether a reader's mail program shows it as a message.
    pub fn is_message(self) -> bool {
        !matches!(self, OriginalPart::File(_))
    }
}

/// The agent's original, ready to attach: line ends made CRLF (a file or
/// Maildir may store bare LF; on the wire every line ends in CRLF) and
/// the part it fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub part: OriginalPart,
    bytes: Vec<u8>,
}

/// The longest line RFC 5322 allows, without its CRLF.
const MAX_LINE: usize = 998;

impl Original {
    pub fn new(raw: &[u8]) -> Original {
        let mut bytes = Vec::with_capacity(raw.len() + raw.len() / 32);
        for (i, &b) in raw.iter().enumerate() {
            if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
                bytes.push(b'\r');
            }
            bytes.push(b);
        }
        let part = match fit(&bytes) {
            Ok(false) => OriginalPart::SevenBit,
            Ok(true) => OriginalPart::EightBit,
            Err(why) => OriginalPart::File(why),
        };
        Original { part, bytes }
    }

    /// The bytes as attached (CRLF line ends).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn mime_part(&self) -> Result<SinglePart, ComposeError> {
        let content_type =
            |s: &str| ContentType::parse(s).map_err(|e| ComposeError::ContentType(e.to_string()));
        let disposition = ContentDisposition::attachment("original.eml");
        // `Body::new_with_encoding` would check again, but it takes 8bit to
        // mean UTF-8 only, and an ISO-8859-1 original is 8bit too (RFC 2045
        // section 2.8): `fit` is the RFC's rule, applied above.
        let (ct, body) = match self.part {
            OriginalPart::SevenBit => (
                content_type("message/rfc822")?,
                Body::dangerous_pre_encoded(self.bytes.clone(), ContentTransferEncoding::SevenBit),
            ),
            OriginalPart::EightBit => (
                content_type("message/rfc822")?,
                Body::dangerous_pre_encoded(self.bytes.clone(), ContentTransferEncoding::EightBit),
            ),
            OriginalPart::File(_) => (
                content_type("application/octet-stream")?,
                Body::new_with_encoding(self.bytes.clone(), ContentTransferEncoding::Base64)
                    .map_err(|_| ComposeError::ContentType("base64 refused".into()))?,
            ),
        };
        Ok(SinglePart::builder()
            .header(ct)
            .header(disposition)
            .body(body))
    }
}

/// Whether CRLF-terminated `bytes` fit an identity encoding: `Ok(true)`
/// when they need 8bit, `Ok(false)` when 7bit will do.
fn fit(bytes: &[u8]) -> Result<bool, Unfit> {
    let mut eight = false;
    let mut line = 0usize;
    let mut long = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            0 => return Err(Unfit::Nul),
            b'\r' if bytes.get(i + 1) != Some(&b'\n') => return Err(Unfit::BareCr),
            b'\r' => {}
            b'\n' => line = 0,
            _ => {
                eight |= b > 127;
                line += 1;
                long |= line > MAX_LINE;
            }
        }
    }
    if long {
        Err(Unfit::LongLine)
    } else {
        Ok(eight)
    }
}

/// A forward to managers: the rendered summary first, then the agent's
/// original (see [`OriginalPart`]).
#[allow(clippy::too_many_arguments)]
pub fn compose_forward(
    identity: &Identity,
    case_id: &str,
    seq: &str,
    to: &[String],
    cc: &[String],
    reply_to: Option<&str>,
    rendered: &Rendered,
    original: &Original,
    date: SystemTime,
) -> Result<NewOutgoing, ComposeError> {
    let id = message_id(identity, case_id, "forward", seq);
    let mut b = base(
        identity,
        &id,
        &rendered.subject,
        date,
        "auto-generated",
        rendered.high_importance,
    );
    if let Some(r) = reply_to {
        b = b.reply_to(mailbox(r)?);
    }
    for a in to {
        b = b.to(mailbox(a)?);
    }
    for a in cc {
        b = b.cc(mailbox(a)?);
    }
    let body = b.multipart(
        MultiPart::mixed()
            .singlepart(text_part(&rendered.body)?)
            .singlepart(original.mime_part()?),
    );
    finish(body, OutgoingKind::Forward, Some(case_id), id, identity)
}

/// `raw` with every 8bit message/rfc822 part turned into the file form
/// (application/octet-stream, base64), for a server without 8BITMIME.
/// Deterministic, so a resend is the same message. `None` when some other
/// part of `raw` is 8bit (nothing the daemon composes is).
pub fn seven_bit(raw: &[u8]) -> Option<Vec<u8>> {
    use mail_parser::{MessageParser, MimeHeaders};
    let msg = MessageParser::default().parse(raw)?;
    let mut out = Vec::with_capacity(raw.len() * 4 / 3);
    let mut at = 0usize;
    for part in &msg.parts {
        let is_rfc822 = part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("rfc822"))
        });
        let eight = part
            .content_transfer_encoding()
            .is_some_and(|e| e.eq_ignore_ascii_case("8bit"));
        if !is_rfc822 || !eight {
            continue;
        }
        let (h, b, e) = (
            part.raw_header_offset() as usize,
            part.raw_body_offset() as usize,
            part.raw_end_offset() as usize,
        );
        if h < at || b < h || e < b || e > raw.len() {
            return None;
        }
        let encoded =
            Body::new_with_encoding(raw[b..e].to_vec(), ContentTransferEncoding::Base64).ok()?;
        out.extend_from_slice(&raw[at..h]);
        out.extend_from_slice(
            b"Content-Type: application/octet-stream\r\n\
              Content-Disposition: attachment; filename=\"original.eml\"\r\n\
              Content-Transfer-Encoding: base64\r\n\r\n",
        );
        out.extend_from_slice(encoded.as_ref());
        at = e;
    }
    out.extend_from_slice(&raw[at..]);
    out.is_ascii().then_some(out)
}

/// A digest: text and HTML alternatives, for reading on a phone.
#[allow(clippy::too_many_arguments)]
pub fn compose_digest(
    identity: &Identity,
    name: &str,
    period: i64,
    to: &[String],
    subject: &str,
    text: &str,
    html: &str,
    date: SystemTime,
) -> Result<NewOutgoing, ComposeError> {
    let id = format!("digest.{name}.{period}@{}", identity.domain);
    let mut b = base(identity, &id, subject, date, "auto-generated", false);
    for a in to {
        b = b.to(mailbox(a)?);
    }
    let body = b.multipart(MultiPart::alternative_plain_html(
        text.to_string(),
        html.to_string(),
    ));
    finish(body, OutgoingKind::Digest, None, id, identity)
}

/// A notice: a health alert (no case), a repeat-vendor report or an
/// overdue re-escalation (the case that caused it). `reply_to` for a
/// notice that invites a reply about its case.
#[allow(clippy::too_many_arguments)]
pub fn compose_notice(
    identity: &Identity,
    kind: OutgoingKind,
    key: &str,
    case_id: Option<&str>,
    to: &[String],
    reply_to: Option<&str>,
    rendered: &Rendered,
    date: SystemTime,
) -> Result<NewOutgoing, ComposeError> {
    let id = format!("{kind}.{key}@{}", identity.domain);
    let mut b = base(
        identity,
        &id,
        &rendered.subject,
        date,
        "auto-generated",
        rendered.high_importance,
    );
    if let Some(r) = reply_to {
        b = b.reply_to(mailbox(r)?);
    }
    for a in to {
        b = b.to(mailbox(a)?);
    }
    let body = b.singlepart(text_part(&rendered.body)?);
    finish(body, kind, case_id, id, identity)
}

/// A text part as every letter carries it: `format=flowed` (RFC 3676),
/// wrapped to 78 columns for mail programs that do not reflow, joined
/// again and fitted to the screen by those that do. Its last line break
/// goes: lettre ends a part with one of its own.
fn text_part(text: &str) -> Result<SinglePart, ComposeError> {
    let flowed = crate::text::flowed(text, crate::text::WIDTH);
    let ct = ContentType::parse("text/plain; charset=utf-8; format=flowed")
        .map_err(|e| ComposeError::ContentType(e.to_string()))?;
    Ok(SinglePart::builder()
        .header(ct)
        .body(flowed.strip_suffix('\n').unwrap_or(&flowed).to_string()))
}

/// Local parts of senders that are machines.
const MACHINE_SENDERS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "no-reply",
    "noreply",
    "do-not-reply",
    "donotreply",
    "bounce",
    "bounces",
    "auto-reply",
    "autoreply",
];

/// Whether the daemon may send an automatic reply to this message (RFC
/// 3834 section 2): `Err` says why not.
pub fn reply_allowed(email: &Email, own_addresses: &[String]) -> Result<(), &'static str> {
    if email.automatic().is_some() {
        return Err("the message is automatic (Auto-Submitted, Precedence or List-Id)");
    }
    if email.return_path.as_deref() == Some("") {
        return Err("the message has a null return path (a bounce)");
    }
    let Some(from) = email.from.as_deref() else {
        return Err("the message has no sender");
    };
    let local = from.split('@').next().unwrap_or("").to_ascii_lowercase();
    if MACHINE_SENDERS.iter().any(|m| {
        local == *m || local.starts_with(&format!("{m}+")) || local.starts_with(&format!("{m}-"))
    }) {
        return Err("the sender is a machine (mailer-daemon, no-reply, ...)");
    }
    if own_addresses.iter().any(|a| a.eq_ignore_ascii_case(from)) {
        return Err("the sender is one of the daemon's own addresses");
    }
    Ok(())
}

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub credentials: Option<(String, String)>,
    /// Connecting, and each message's exchange, must finish within this
    /// (plus a second per 64 KiB of message).
    pub timeout: Duration,
    /// A private CA to trust besides the system's.
    pub ca_file: Option<PathBuf>,
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
    pub fn new(s: &SmtpSettings) -> Result<Smtp, SendError> {
        let setup = |e: String| SendError::Permanent(format!("SMTP settings: {e}"));
        let tls = match s.tls {
            Tls::Plain => None,
            Tls::Implicit => Some(TlsSetup::Implicit(Arc::new(
                crate::tls::client_config(s.ca_file.as_deref()).map_err(setup)?,
            ))),
            Tls::Starttls => {
                let mut b = TlsParameters::builder(s.host.clone());
                if let Some(path) = &s.ca_file {
                    let pem = std::fs::read(path)
                        .map_err(|e| setup(format!("{}: {e}", path.display())))?;
                    let cert = Certificate::from_pem(&pem)
                        .map_err(|e| setup(format!("{}: {e}", path.display())))?;
                    b = b.add_root_certificate(cert);
                }
                Some(TlsSetup::Starttls(
                    b.build_rustls().map_err(|e| setup(e.to_string()))?,
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

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
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
            let mut conn = match &self.tls {
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
            if let Some((user, pass)) = &s.credentials {
                conn.auth(
                    DEFAULT_MECHANISMS,
                    &Credentials::new(user.clone(), pass.clone()),
                )
                .await
                .map_err(|e| transient("login to", &e))?;
            }
            Ok(conn)
        };
        match tokio::time::timeout(s.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(transient("timed out connecting to", &"no answer")),
        }
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

/// What one pass over the due items did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub sent: usize,
    pub retrying: usize,
    pub undeliverable: usize,
}

/// Sends every item due at `now`, recording each outcome in the store
/// before going on.
pub async fn deliver_due(
    store: &Store,
    smtp: &Smtp,
    backoff: &Backoff,
    now: jiff::Timestamp,
) -> Result<Delivered, StoreError> {
    let mut done = Delivered::default();
    for item in store.outbox_due(now, 100)? {
        let raw = store.outbox_raw(item.id)?;
        match smtp.send(&item, &raw).await {
            Ok(()) => {
                store.mark_sent(item.id, now)?;
                tracing::info!(outbox = item.id, message_id = %item.message_id, case = item.case_id.as_deref().unwrap_or("-"), kind = %item.kind, "sent");
                done.sent += 1;
            }
            Err(SendError::Permanent(e)) => {
                store.mark_undeliverable(item.id, &e)?;
                tracing::error!(outbox = item.id, message_id = %item.message_id, case = item.case_id.as_deref().unwrap_or("-"), error = %e, "undeliverable, kept for a human");
                done.undeliverable += 1;
            }
            Err(SendError::Transient(e)) => {
                if crate::clock::after(item.queued_at, backoff.give_up_after) < now {
                    store.mark_undeliverable(
                        item.id,
                        &format!("gave up after {} attempts: {e}", item.attempts + 1),
                    )?;
                    tracing::error!(outbox = item.id, message_id = %item.message_id, error = %e, "gave up retrying");
                    done.undeliverable += 1;
                } else {
                    let delay = std::time::Duration::from_secs(
                        backoff.delay(item.attempts, item.id).max(0) as u64,
                    );
                    let retry_at = crate::clock::after(now, delay);
                    store.mark_retry(item.id, &e, retry_at)?;
                    tracing::warn!(outbox = item.id, message_id = %item.message_id, error = %e, retry_at = %retry_at, "will retry");
                    done.retrying += 1;
                }
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn identity() -> Identity {
        Identity {
            from: "Escalations <mailtriage@example.com>".parse().unwrap(),
            domain: "mailtriage.example.com".into(),
        }
    }

    fn rendered() -> Rendered {
        Rendered {
            subject: "Re: Escalation (Order #CK1) [ESC-2026-000001]".into(),
            body: "Logged as ESC-2026-000001.\n".into(),
            high_importance: false,
        }
    }

    fn agent_mail() -> Email {
        crate::message::parse(b"From: Priya <priya@example.com>\r\nSubject: Escalation (Order #CK1)\r\nMessage-ID: <agent-1@example.com>\r\nReferences: <older@example.com>\r\n\r\nCustomer Name: Asha\r\n").unwrap()
    }

    #[test]
    fn replies_are_threaded_and_marked_automatic() {
        let out = compose_reply(
            &identity(),
            "ESC-2026-000001",
            "0",
            "priya@example.com",
            Some("ops@example.com"),
            &rendered(),
            &agent_mail(),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(out.recipients, ["priya@example.com"]);
        assert_eq!(
            out.message_id,
            "ESC-2026-000001.reply.0@mailtriage.example.com"
        );
        let m = MessageParser::default().parse(&out.raw).unwrap();
        assert_eq!(
            m.message_id(),
            Some("ESC-2026-000001.reply.0@mailtriage.example.com")
        );
        assert_eq!(m.in_reply_to().as_text(), Some("agent-1@example.com"));
        let refs: Vec<&str> = m
            .references()
            .as_text_list()
            .map(|l| l.iter().map(|s| s.as_ref()).collect())
            .unwrap_or_default();
        assert_eq!(refs, ["older@example.com", "agent-1@example.com"]);
        assert_eq!(
            m.header_raw("Reply-To").map(str::trim),
            Some("ops@example.com"),
            "replies come back to the watched mailbox"
        );
        assert_eq!(
            m.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        assert_eq!(
            m.header_raw("X-Auto-Response-Suppress").map(str::trim),
            Some("All")
        );
        assert_eq!(
            m.subject(),
            Some("Re: Escalation (Order #CK1) [ESC-2026-000001]")
        );
        assert_eq!(
            m.body_text(0).as_deref().map(str::trim_end),
            Some("Logged as ESC-2026-000001.")
        );
        // The daemon's own reply, read back, is never answered.
        let echo = crate::message::parse(&out.raw).unwrap();
        assert!(reply_allowed(&echo, &[]).is_err());
    }

    fn forward_of(original: &[u8]) -> (Original, NewOutgoing) {
        let original = Original::new(original);
        let out = compose_forward(
            &identity(),
            "ESC-2026-000001",
            "1",
            &["tier2@example.com".into()],
            &["sup@example.com".into()],
            Some("ops@example.com"),
            &rendered(),
            &original,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        (original, out)
    }

    /// The raw header block of the forward's second part (the original).
    fn attachment_headers(raw: &[u8]) -> String {
        let m = MessageParser::default().parse(raw).unwrap();
        let part = &m.parts[2];
        String::from_utf8_lossy(
            &raw[part.raw_header_offset() as usize..part.raw_body_offset() as usize],
        )
        .to_ascii_lowercase()
    }

    #[test]
    fn forwards_attach_the_original() {
        let original = b"From: priya@example.com\r\nSubject: Escalation\r\nMessage-ID: <agent-1@example.com>\r\n\r\nCustomer Name: Asha\r\n";
        let (_, out) = forward_of(original);
        assert_eq!(out.recipients, ["tier2@example.com", "sup@example.com"]);
        let m = MessageParser::default().parse(&out.raw).unwrap();
        assert_eq!(
            m.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-generated")
        );
        assert_eq!(
            m.header_raw("Reply-To").map(str::trim),
            Some("ops@example.com")
        );
        assert_eq!(
            m.body_text(0).as_deref().map(str::trim_end),
            Some("Logged as ESC-2026-000001.")
        );
        let att = m.attachment(0).expect("the original is attached");
        let nested = att.message().expect("as message/rfc822");
        assert_eq!(nested.message_id(), Some("agent-1@example.com"));
        assert_eq!(att.contents(), original, "byte for byte");
    }

    #[test]
    fn the_original_goes_in_the_part_it_fits() {
        let long = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(999));
        let just = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(998));
        let cases: &[(&str, &[u8], OriginalPart, &str)] = &[
            (
                "ascii",
                b"Subject: x\r\n\r\nbody\r\n",
                OriginalPart::SevenBit,
                "7bit",
            ),
            (
                "utf-8",
                "Subject: x\r\n\r\n\u{20b9}10,000\r\n".as_bytes(),
                OriginalPart::EightBit,
                "8bit",
            ),
            (
                "latin-1",
                b"Subject: x\r\n\r\ncaf\xe9\r\n",
                OriginalPart::EightBit,
                "8bit",
            ),
            (
                "998 octets",
                just.as_bytes(),
                OriginalPart::SevenBit,
                "7bit",
            ),
            (
                "999 octets",
                long.as_bytes(),
                OriginalPart::File(Unfit::LongLine),
                "base64",
            ),
            (
                "NUL",
                b"Subject: x\r\n\r\na\0b\r\n",
                OriginalPart::File(Unfit::Nul),
                "base64",
            ),
            (
                "bare CR",
                b"Subject: x\r\n\r\na\rb\r\n",
                OriginalPart::File(Unfit::BareCr),
                "base64",
            ),
            (
                "bare LF, made CRLF",
                b"Subject: x\n\nbody\n",
                OriginalPart::SevenBit,
                "7bit",
            ),
        ];
        for (what, raw, part, cte) in cases {
            let (original, out) = forward_of(raw);
            assert_eq!(original.part, *part, "{what}");
            let headers = attachment_headers(&out.raw);
            assert!(
                headers.contains(&format!("content-transfer-encoding: {cte}")),
                "{what}: {headers}"
            );
            let m = MessageParser::default().parse(&out.raw).unwrap();
            let att = m.attachment(0).expect(what);
            if part.is_message() {
                assert!(
                    headers.contains("content-type: message/rfc822"),
                    "{what}: {headers}"
                );
                assert!(att.message().is_some(), "{what}: read as a message");
            } else {
                assert!(
                    headers.contains("content-type: application/octet-stream"),
                    "{what}"
                );
                assert!(headers.contains("original.eml"), "{what}: {headers}");
            }
            assert_eq!(
                att.contents(),
                original.bytes(),
                "{what}: the bytes come back"
            );
        }
        // LF line ends become CRLF, nothing else changes.
        assert_eq!(Original::new(b"a\nb\r\nc\n").bytes(), b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn an_8bit_original_goes_as_a_file_to_a_server_without_8bitmime() {
        let raw = "From: priya@example.com\r\nSubject: x\r\n\r\nPromised \u{20b9}10,000\r\n";
        let (_, out) = forward_of(raw.as_bytes());
        assert!(!out.raw.is_ascii());
        let seven = seven_bit(&out.raw).expect("downgraded");
        assert!(seven.is_ascii());
        assert_eq!(
            seven_bit(&seven),
            Some(seven.clone()),
            "nothing left to change"
        );
        let headers = attachment_headers(&seven);
        assert!(
            headers.contains("content-type: application/octet-stream"),
            "{headers}"
        );
        assert!(
            headers.contains("content-transfer-encoding: base64"),
            "{headers}"
        );
        let m = MessageParser::default().parse(&seven).unwrap();
        assert_eq!(m.attachment(0).unwrap().contents(), raw.as_bytes());
        assert_eq!(
            m.body_text(0).as_deref().map(str::trim_end),
            Some("Logged as ESC-2026-000001."),
            "the summary is untouched"
        );
    }

    #[test]
    fn loops_are_refused() {
        let own = vec!["ops@example.com".to_string()];
        let cases: &[(&str, bool)] = &[
            ("From: priya@example.com\r\nSubject: x\r\n\r\nb", true),
            (
                "From: priya@example.com\r\nAuto-Submitted: auto-replied\r\nSubject: x\r\n\r\nb",
                false,
            ),
            (
                "From: priya@example.com\r\nAuto-Submitted: no\r\nSubject: x\r\n\r\nb",
                true,
            ),
            (
                "From: priya@example.com\r\nPrecedence: bulk\r\nSubject: x\r\n\r\nb",
                false,
            ),
            (
                "From: priya@example.com\r\nList-Id: <l.example.com>\r\nSubject: x\r\n\r\nb",
                false,
            ),
            (
                "Return-Path: <>\r\nFrom: priya@example.com\r\nSubject: x\r\n\r\nb",
                false,
            ),
            (
                "From: MAILER-DAEMON@example.com\r\nSubject: x\r\n\r\nb",
                false,
            ),
            ("From: no-reply@example.com\r\nSubject: x\r\n\r\nb", false),
            (
                "From: bounces+123@example.com\r\nSubject: x\r\n\r\nb",
                false,
            ),
            ("From: OPS@example.com\r\nSubject: x\r\n\r\nb", false),
            ("Subject: x\r\n\r\nb", false),
        ];
        for (raw, allowed) in cases {
            let e = crate::message::parse(raw.as_bytes()).unwrap();
            assert_eq!(reply_allowed(&e, &own).is_ok(), *allowed, "{raw:?}");
        }
    }
}
