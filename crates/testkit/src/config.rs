//! A config directory for the daemon under test: the shipped triage
//! config (as shipped, or clock-free), an IMAP password file and a
//! mailtriage.toml pointing at the kit's servers, written by
//! [`MailtriageToml`] (the tests' own variations of it too).

use std::fmt;
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

    /// Sets `port`, `tls` and, if any, `ca_file` of `table`.
    fn apply(&self, table: &mut Table) {
        table
            .set("port", u32::from(self.port))
            .set("tls", self.tls.as_str());
        if let Some(ca) = self.ca_file {
            table.set("ca_file", ca.display().to_string());
        }
    }
}

/// Where the daemon reads a password: the secret sources of mailtriage.toml.
#[derive(Clone, Copy, Debug)]
pub enum Secret<'a> {
    /// `{ file = "PATH" }`
    File(&'a Path),
    /// `{ env = "NAME" }`
    Env(&'a str),
    /// `{ command = ["PROGRAM", "ARG", ...] }`
    Command(&'a [&'a str]),
}

impl From<Secret<'_>> for toml::Value {
    fn from(secret: Secret<'_>) -> toml::Value {
        let mut table = toml::Table::new();
        match secret {
            Secret::File(path) => table.insert("file".into(), path.display().to_string().into()),
            Secret::Env(name) => table.insert("env".into(), name.into()),
            Secret::Command(argv) => table.insert("command".into(), argv.to_vec().into()),
        };
        toml::Value::Table(table)
    }
}

/// One table of a mailtriage.toml: `key = value` lines in the order they
/// were first set, then lines of a test's own, as given.
#[derive(Clone, Debug)]
pub struct Table {
    header: &'static str,
    entries: Vec<(String, toml::Value)>,
    lines: String,
}

impl Table {
    fn new(header: &'static str) -> Table {
        Table {
            header,
            entries: Vec::new(),
            lines: String::new(),
        }
    }

    /// Sets `key` to `value` (where it stands, if it is set already).
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) -> &mut Table {
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
        self
    }

    /// Removes `key`, if set.
    pub fn unset(&mut self, key: &str) -> &mut Table {
        self.entries.retain(|(k, _)| k != key);
        self
    }

    /// Appends `text`, TOML lines as they are, after the keys set.
    pub fn lines(&mut self, text: &str) -> &mut Table {
        if !text.is_empty() {
            self.lines.push_str(text);
            if !text.ends_with('\n') {
                self.lines.push('\n');
            }
        }
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.header)?;
        for (key, value) in &self.entries {
            writeln!(f, "{key} = {value}")?;
        }
        f.write_str(&self.lines)
    }
}

/// A `[[mailbox]]` table: `name` on 127.0.0.1:`port`, plain IMAP, the
/// Dovecot user of the same name with its password from `password`,
/// `mark_seen`, quarantine to `Quarantine`.
pub fn mailbox(name: &str, port: u16, password: Secret) -> Table {
    let mut table = Table::new("[[mailbox]]");
    table
        .set("name", name)
        .set("host", "127.0.0.1")
        .set("port", u32::from(port))
        .set("tls", "plain")
        .set("user", name)
        .set("password", password)
        .set("mark_seen", true)
        .set("quarantine", "Quarantine");
    table
}

/// A mailtriage.toml for the kit's servers, table by table.
#[derive(Clone, Debug)]
pub struct MailtriageToml {
    pub daemon: Table,
    pub smtp: Table,
    pub mailboxes: Vec<Table>,
}

impl MailtriageToml {
    /// `[daemon]` with the database at `database`, the domain
    /// `mailtriage.test` and mail from `example.com` allowed; `[smtp]`
    /// plain on 127.0.0.1:`smtp_port`, from `Escalations
    /// <mailtriage@example.com>`; no mailbox yet.
    pub fn new(database: &Path, smtp_port: u16) -> MailtriageToml {
        let mut daemon = Table::new("[daemon]");
        daemon
            .set("database", database.display().to_string())
            .set("domain", "mailtriage.test")
            .set("allow_senders", vec!["example.com"]);
        let mut smtp = Table::new("[smtp]");
        smtp.set("host", "127.0.0.1")
            .set("port", u32::from(smtp_port))
            .set("tls", "plain")
            .set("from", "Escalations <mailtriage@example.com>");
        MailtriageToml {
            daemon,
            smtp,
            mailboxes: Vec::new(),
        }
    }

    /// Adds a [`mailbox`] and returns it, for more keys.
    pub fn mailbox(&mut self, name: &str, port: u16, password: Secret) -> &mut Table {
        self.mailboxes.push(mailbox(name, port, password));
        let last = self.mailboxes.len() - 1;
        &mut self.mailboxes[last]
    }

    /// Writes `dir/mailtriage.toml`.
    pub fn write(&self, dir: &Path) {
        let path = dir.join("mailtriage.toml");
        fs::write(&path, self.to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl fmt::Display for MailtriageToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}", self.daemon, self.smtp)?;
        for mailbox in &self.mailboxes {
            write!(f, "\n{mailbox}")?;
        }
        Ok(())
    }
}

/// A config directory: the shipped triage config (clock-free: see
/// [`copy_clock_free_config`]), the IMAP password (the
/// Dovecot user `ops`, password `secret`) in `imap-password`, and a
/// mailtriage.toml for the test servers, with the database in `db/`,
/// `it.oncall@example.com` as the admin, 10 s timeouts, and the daemon's
/// log in `daemon.log`.
pub fn config_dir(d: &Dovecot, s: &SmtpCapture, extra: Extra) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_clock_free_config(dir.path());
    let password = password_file(dir.path());
    fs::write(&password, "secret\n").expect("write the IMAP password");
    let mut toml = MailtriageToml::new(&database(dir.path()), s.port());
    toml.daemon
        .set("admin", vec!["it.oncall@example.com"])
        .lines(extra.daemon);
    extra
        .smtp_via
        .unwrap_or(Via::plain(s.port()))
        .apply(&mut toml.smtp);
    toml.smtp.set("timeout", "10s").lines(extra.smtp);
    let ops = toml.mailbox("ops", d.port(), Secret::File(&password));
    extra.imap_via.unwrap_or(Via::plain(d.port())).apply(ops);
    ops.set("timeout", "10s").lines(extra.mailbox);
    toml.write(dir.path());
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
    let shipped = crate::fixtures::repo_root().join("config");
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
