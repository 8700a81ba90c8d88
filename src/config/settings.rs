//! mailtriage.toml, read and checked: the daemon's settings, what it
//! connects to (the mailboxes, the SMTP server, and how each logs in: a
//! password or an OAuth 2.0 grant) and how it runs (database, senders
//! allowed, health alerts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::oauth2::{Grant, OAuth2Section};
use super::retention::RetentionSection;
use super::values::{HumanDuration, Secret, Size};
use super::{ConfigError, Source, builtin, looks_like_address};
use crate::tls::Tls;

fn default_cache() -> Size {
    Size(16 << 20)
}
fn default_replies_per_hour() -> u32 {
    10
}
fn default_alert_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_folder() -> String {
    "INBOX".into()
}
fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_idle() -> HumanDuration {
    HumanDuration(Duration::from_secs(25 * 60))
}
fn default_max_size() -> Size {
    Size(25 << 20)
}
fn default_batch() -> usize {
    50
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_retry_first() -> HumanDuration {
    HumanDuration(crate::backoff::Backoff::default().first)
}
fn default_retry_max() -> HumanDuration {
    HumanDuration(crate::backoff::Backoff::default().max)
}

/// `[daemon]` in mailtriage.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// The sled database directory; default `$STATE_DIRECTORY/db`.
    pub database: Option<PathBuf>,
    #[serde(default = "default_cache")]
    pub cache: Size,
    /// Right-hand side of the daemon's Message-IDs.
    pub domain: String,
    /// Who gets health alerts (a mailbox that cannot log in or stays down).
    #[serde(default)]
    pub admin: Vec<String>,
    /// Addresses or domains of the agents: only they create cases.
    pub allow_senders: Vec<String>,
    /// Automatic replies to one sender per hour, at most.
    #[serde(default = "default_replies_per_hour")]
    pub replies_per_sender_per_hour: u32,
    /// A mailbox down this long raises a health alert.
    #[serde(default = "default_alert_after")]
    pub alert_after: HumanDuration,
    /// Where to serve Prometheus metrics (`127.0.0.1:9464`); none: off.
    #[serde(default)]
    pub metrics: Option<std::net::SocketAddr>,
}

/// `[smtp]` in mailtriage.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// XOAUTH2 with tokens from this grant, instead of `password`.
    pub oauth2: Option<Spanned<OAuth2Section>>,
    /// `oauth2`, resolved when the file is read.
    #[serde(skip)]
    pub grant: Option<Grant>,
    /// From: of everything the daemon sends, e.g. `Escalations <mailtriage@example.com>`.
    pub from: String,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// First wait before retrying a transient delivery failure; it doubles
    /// (with jitter) up to `retry_max`.
    #[serde(default = "default_retry_first")]
    pub retry_first: HumanDuration,
    #[serde(default = "default_retry_max")]
    pub retry_max: HumanDuration,
    /// A private CA (PEM) to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// One `[[mailbox]]` in mailtriage.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxSection {
    /// The name rules match on (`ops`, `support`).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub user: String,
    /// LOGIN with a password...
    pub password: Option<Secret>,
    /// ...or XOAUTH2 with tokens from this grant...
    pub oauth2: Option<Spanned<OAuth2Section>>,
    /// ...or XOAUTH2 with an access token read from a source as it is
    /// (a command of the operator's that prints a fresh one).
    pub oauth2_token: Option<Secret>,
    /// `oauth2`, resolved when the file is read.
    #[serde(skip)]
    pub grant: Option<Grant>,
    #[serde(default = "default_folder")]
    pub folder: String,
    /// Set `\Seen` on processed messages.
    #[serde(default)]
    pub mark_seen: bool,
    /// Move processed messages here.
    pub move_to: Option<String>,
    /// Where messages that cannot be processed go.
    pub quarantine: String,
    /// The address of this mailbox, set as `Reply-To` on the mail the
    /// daemon sends about its cases, so that replies come back here.
    /// Default: `user`, when it is an address.
    pub reply_to: Option<Spanned<String>>,
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    #[serde(default = "default_idle")]
    pub idle_timeout: HumanDuration,
    #[serde(default = "default_max_size")]
    pub max_message_size: Size,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// A PEM CA certificate to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl MailboxSection {
    /// Where replies to the daemon's mail about this mailbox's cases go:
    /// `reply_to`, else `user` when it is an address.
    pub fn reply_address(&self) -> Option<&str> {
        self.reply_to
            .as_ref()
            .map(|r| r.get_ref().as_str())
            .or_else(|| looks_like_address(&self.user).then_some(self.user.as_str()))
    }
}

/// mailtriage.toml: how the daemon runs (`[daemon]`) and what it connects
/// to (`[smtp]`, `[[mailbox]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub daemon: DaemonSection,
    pub smtp: SmtpSection,
    #[serde(rename = "mailbox")]
    pub mailboxes: Vec<MailboxSection>,
    /// How long stored data is kept (`[retention]`, every key defaulted).
    #[serde(default)]
    pub retention: RetentionSection,
}

impl Settings {
    /// The shipped `config/mailtriage.toml`, as compiled into the binary:
    /// the mailboxes the built-in config knows.
    pub fn builtin() -> Result<Settings, ConfigError> {
        Self::parse(
            Path::new("(built-in)/config/mailtriage.toml"),
            builtin::DAEMON,
        )
    }

    /// Reads and checks `DIR/mailtriage.toml`.
    pub fn load(dir: &Path) -> Result<Settings, ConfigError> {
        let path = dir.join("mailtriage.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            file: path.clone(),
            at: None,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "missing: {} has no mailtriage.toml, which names the mailboxes, the SMTP server and the database (config/mailtriage.toml of the source is a commented example)",
                    dir.display()
                )
            } else {
                format!("cannot read: {e}")
            },
        })?;
        Self::parse(&path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigError> {
        let src = Source {
            path: path.to_path_buf(),
            text,
        };
        let mut c: Settings = src.parse()?;
        let whole = |message: String| ConfigError {
            file: path.to_path_buf(),
            at: None,
            message,
        };
        if c.mailboxes.is_empty() {
            return Err(whole("expected at least one [[mailbox]]".into()));
        }
        let mut names: Vec<&str> = Vec::new();
        for m in &c.mailboxes {
            if names.contains(&m.name.as_str()) {
                return Err(whole(format!("mailbox name {:?} is used twice", m.name)));
            }
            names.push(&m.name);
            let ways = [
                m.password.is_some(),
                m.oauth2.is_some(),
                m.oauth2_token.is_some(),
            ];
            match ways.iter().filter(|w| **w).count() {
                1 => {}
                0 => {
                    return Err(whole(format!(
                        "mailbox {:?}: expected `password`, `oauth2` or `oauth2_token`",
                        m.name
                    )));
                }
                _ => {
                    return Err(src.error_at(
                        m.oauth2.as_ref().map(Spanned::span),
                        format!(
                            "mailbox {:?}: expected one of `password`, `oauth2` and `oauth2_token`, not several",
                            m.name
                        ),
                    ));
                }
            }
            if !m.mark_seen && m.move_to.is_none() {
                return Err(whole(format!(
                    "mailbox {:?}: expected `mark_seen = true` or `move_to`, so that processed mail is marked",
                    m.name
                )));
            }
            if let Some(r) = &m.reply_to
                && !looks_like_address(r.get_ref())
            {
                return Err(src.error_at(
                    Some(r.span()),
                    format!(
                        "mailbox {:?}: reply_to: expected the mailbox's email address, found {:?}",
                        m.name,
                        r.get_ref()
                    ),
                ));
            }
            if m.batch_size == 0 {
                return Err(whole(format!(
                    "mailbox {:?}: batch_size must be at least 1",
                    m.name
                )));
            }
        }
        if c.daemon.allow_senders.is_empty() {
            return Err(whole(
                "[daemon] allow_senders is empty: no one could open a case".into(),
            ));
        }
        for a in &c.daemon.admin {
            if !looks_like_address(a) {
                return Err(whole(format!(
                    "[daemon] admin: expected an email address, found {a:?}"
                )));
            }
        }
        if let Some((span, message)) = c.retention.check() {
            return Err(src.error_at(Some(span), message));
        }
        if c.smtp.password.is_some() && c.smtp.oauth2.is_some() {
            return Err(whole(
                "[smtp]: expected `password` or `oauth2`, not both".into(),
            ));
        }
        let has_secret = c.smtp.password.is_some() || c.smtp.oauth2.is_some();
        if c.smtp.user.is_some() != has_secret {
            return Err(whole(
                "[smtp]: expected `user` with `password` or `oauth2`, or none of them".into(),
            ));
        }
        for m in &mut c.mailboxes {
            if let Some(o) = &m.oauth2 {
                let grant = o.get_ref().grant(&m.user).map_err(|e| {
                    src.error_at(Some(o.span()), format!("mailbox {:?}: {e}", m.name))
                })?;
                m.grant = Some(grant);
            }
        }
        if let (Some(o), Some(user)) = (&c.smtp.oauth2, &c.smtp.user) {
            let grant = o
                .get_ref()
                .grant(user)
                .map_err(|e| src.error_at(Some(o.span()), format!("[smtp]: {e}")))?;
            c.smtp.grant = Some(grant);
        }
        Ok(c)
    }
}
