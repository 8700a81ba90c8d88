//! A config directory for the daemon under test: the shipped triage
//! config (as shipped, or clock-free), an IMAP password file and a
//! mailtriage.toml pointing at the kit's servers.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::{Dovecot, SmtpCapture};

/// What a test adds to the generated mailtriage.toml: lines appended to
/// `[daemon]`, `[smtp]` and the `ops` `[[mailbox]]`, and how the daemon
/// reaches each server (default: plain, on the server's port).
#[derive(Default, Clone, Copy)]
pub struct Extra<'a> {
    pub daemon: &'a str,
    pub smtp: &'a str,
    pub mailbox: &'a str,
    /// The `ops` mailbox's `port`, `tls` and `ca_file`; None: plain IMAP
    /// on [`Dovecot::port`].
    pub imap_via: Option<Via<'a>>,
    /// `[smtp]` `port`, `tls` and `ca_file`; None: plain SMTP on
    /// [`SmtpCapture::port`].
    pub smtp_via: Option<Via<'a>>,
}

/// The config's `tls` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    Plain,
    Starttls,
    Implicit,
}

impl TlsMode {
    /// The value in mailtriage.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Plain => "plain",
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
        }
    }
}

/// How the daemon connects to one server: port on 127.0.0.1, TLS mode,
/// and a CA file to trust besides the system's (`ca_file`).
#[derive(Clone, Copy, Debug)]
pub struct Via<'a> {
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<&'a Path>,
}

impl<'a> Via<'a> {
    pub fn plain(port: u16) -> Via<'a> {
        Via {
            port,
            tls: TlsMode::Plain,
            ca_file: None,
        }
    }

    pub fn starttls(port: u16, ca_file: &'a Path) -> Via<'a> {
        Via {
            port,
            tls: TlsMode::Starttls,
            ca_file: Some(ca_file),
        }
    }

    pub fn implicit(port: u16, ca_file: &'a Path) -> Via<'a> {
        Via {
            port,
            tls: TlsMode::Implicit,
            ca_file: Some(ca_file),
        }
    }

    /// `port = N`, `tls = "MODE"` and, if set, `ca_file = "PATH"` lines.
    fn toml(&self) -> String {
        let mut out = format!("port = {}\ntls = \"{}\"\n", self.port, self.tls.as_str());
        if let Some(ca) = self.ca_file {
            let _ = writeln!(out, "ca_file = {}", toml_string(&ca.display().to_string()));
        }
        out
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A config directory: the shipped triage config (clock-free: see
/// [`copy_clock_free_config`]), the IMAP password (the
/// Dovecot user `ops`, password `secret`) in `imap-password`, and a
/// mailtriage.toml for the test servers, with the database in `db/` and
/// the daemon's log in `daemon.log`.
pub fn config_dir(d: &Dovecot, s: &SmtpCapture, extra: Extra) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_clock_free_config(dir.path());
    fs::write(password_file(dir.path()), "secret\n").unwrap();
    let toml = format!(
        r#"
[daemon]
database = "{db}"
domain = "mailtriage.test"
admin = ["it.oncall@example.com"]
allow_senders = ["example.com"]
{extra_daemon}

[smtp]
host = "127.0.0.1"
{smtp_via}from = "Escalations <mailtriage@example.com>"
timeout = "10s"
{extra_smtp}

[[mailbox]]
name = "ops"
host = "127.0.0.1"
{imap_via}user = "ops"
password = {{ file = "{pw}" }}
mark_seen = true
quarantine = "Quarantine"
timeout = "10s"
{extra_mailbox}
"#,
        db = database(dir.path()).display(),
        smtp_via = extra.smtp_via.unwrap_or(Via::plain(s.port())).toml(),
        imap_via = extra.imap_via.unwrap_or(Via::plain(d.port())).toml(),
        pw = password_file(dir.path()).display(),
        extra_daemon = extra.daemon,
        extra_smtp = extra.smtp,
        extra_mailbox = extra.mailbox,
    );
    fs::write(dir.path().join("mailtriage.toml"), toml).unwrap();
    dir
}

/// [`copy_shipped_config`], with Tier 2 open around the clock and the
/// digest sent only on request, so that what a test sees does not depend on
/// the hour it runs at. Tests of business hours and digests use the shipped
/// config and set the daemon's clock.
pub fn copy_clock_free_config(dir: &Path) {
    copy_shipped_config(dir);
    let path = dir.join("routing.toml");
    let text = fs::read_to_string(&path).expect("routing.toml");
    let changed = text
        .replace(
            "mon-fri = \"08:00-21:00\"\nsat = \"08:00-16:30\"",
            "mon-sun = \"00:00-24:00\"",
        )
        .replace("schedule = \"daily 08:00\"\n", "");
    assert!(
        changed.contains("mon-sun = \"00:00-24:00\"") && !changed.contains("schedule = "),
        "the shipped routing.toml changed: update copy_clock_free_config"
    );
    fs::write(&path, changed).expect("write routing.toml");
}

/// Copies the shipped triage config (keywords, required fields, routing,
/// templates) into `dir`, for a test to add its own mailtriage.toml.
pub fn copy_shipped_config(dir: &Path) {
    let shipped = crate::repo_root().join("config");
    fs::create_dir(dir.join("templates")).expect("mkdir templates");
    for name in ["keywords.toml", "triage.toml", "routing.toml"] {
        fs::copy(shipped.join(name), dir.join(name)).expect("copy config");
    }
    for e in fs::read_dir(shipped.join("templates")).expect("templates/") {
        let p = e.expect("entry").path();
        fs::copy(&p, dir.join("templates").join(p.file_name().expect("name")))
            .expect("copy template");
    }
}

/// The database of a [`config_dir`].
pub fn database(dir: &Path) -> PathBuf {
    dir.join("db")
}

/// The file the IMAP password is read from (at each connect).
pub fn password_file(dir: &Path) -> PathBuf {
    dir.join("imap-password")
}
