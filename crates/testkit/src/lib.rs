//! Real-server test harness: private Dovecot IMAP and aiosmtpd SMTP instances
//! on loopback, for tests of the mailtriage daemon against real servers.
//!
//! The harness owns, for each test that asks for one:
//!
//! - [`Dovecot`]: a private Dovecot 2.3 (`dovecot -F -c CONF` as a child
//!   process) with its own config, passwd-file users, Maildir storage, log file
//!   and run dir inside a fresh temp dir, on a free 127.0.0.1 port; helpers to
//!   put mail in ([`Dovecot::deliver`] straight into the Maildir,
//!   [`Dovecot::append`] over IMAP) and to read back what the daemon did
//!   ([`Dovecot::flags`], [`Dovecot::count`], [`Dovecot::fetch`],
//!   [`Dovecot::folders`]); [`Dovecot::stop`] / [`Dovecot::restart`] for outages.
//!   [`Dovecot::start_tls`] adds TLS: STARTTLS on the same port and an
//!   implicit-TLS listener on [`Dovecot::imaps_port`].
//! - [`SmtpCapture`]: `smtp_capture.py` (beside this file) under Debian's
//!   python3-aiosmtpd, which stores every accepted message with its envelope in
//!   a directory (layout in that script's docstring), can require AUTH and can
//!   be told to reject with a given code; also stop/restart.
//!   [`SmtpCapture::start_tls`] makes it speak STARTTLS (optionally
//!   required) or implicit TLS ([`SmtpTls`]).
//! - [`browser`]: mail as a phone shows it, in Debian's headless Chromium
//!   at a phone's width: measured (nothing wider than the screen, where a
//!   text ends) and photographed.
//! - [`TestCa`] ([`ca`]): a private CA and a server certificate for
//!   127.0.0.1 made with the openssl CLI, for the TLS modes above and the
//!   daemon's `ca_file`; [`ca::tls_greeting`] reads a TLS server's greeting.
//! - [`ImapClient`] and [`SmtpClient`]: tiny synchronous clients over
//!   `std::net::TcpStream`, used by the harness itself and by tests that need to
//!   act as a user or a sender.
//!
//! Why: the daemon's IMAP IDLE, flag, move and SMTP retry behaviour can only be
//! trusted when tested against real servers, and each test needs its own so that
//! tests run in parallel and can take a server down. Everything listens on
//! 127.0.0.1 only. The servers come from Debian's `dovecot-imapd` and
//! `python3-aiosmtpd` packages, which `scripts/test` installs.
//!
//! Failures panic (this is test code) with what failed and the server's log tail.
//! Waits are deadline loops on a condition (port answers, file appears), never
//! fixed sleeps.

#![allow(dead_code)]

pub mod browser;
pub mod ca;
pub mod daemon;

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

pub use ca::TestCa;

/// How long a server may take to answer its greeting after being started.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopped server's processes may take to go away.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read timeout of the harness's own IMAP and SMTP clients.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval of every deadline loop.
const POLL: Duration = Duration::from_millis(10);
/// How many fresh ports to try when a server cannot bind the one it was given.
const PORT_ATTEMPTS: usize = 5;
/// Lines of a server log shown in a failure message.
const LOG_TAIL_LINES: usize = 60;
/// Lines of a server log added to a client's error.
const CLIENT_LOG_TAIL_LINES: usize = 30;

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique() -> u64 {
    UNIQUE.fetch_add(1, Ordering::Relaxed)
}

/// The mailtriage repository (this crate is its `crates/testkit`): the
/// shipped config, the fixtures, the docs.
pub fn repo_root() -> &'static Path {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    kit.parent()
        .and_then(Path::parent)
        .expect("the test kit lives in crates/testkit of the repository")
}

/// A port on 127.0.0.1 that was free a moment ago (bind :0, read, drop).
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local_addr of the port-finding listener")
        .port()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `message` followed by the tail of the log at `log`, if the client has one.
fn with_log(message: String, log: Option<&Path>) -> String {
    match log {
        Some(path) => format!(
            "{message}\n--- server log tail ({}) ---\n{}",
            path.display(),
            tail(&read_lossy(path), CLIENT_LOG_TAIL_LINES)
        ),
        None => message,
    }
}

fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn write_file(path: &Path, contents: &[u8]) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Write via a temporary name and rename, so a reader never sees half a file.
fn write_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", unique()));
    write_file(&tmp, contents);
    fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A temp dir others can traverse (Dovecot's unprivileged processes, as root).
fn server_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("create a temp dir for {prefix}: {e}"));
    set_mode(dir.path(), 0o755);
    dir
}

/// (uid, gid) of the running process: the owner of a dir it just created.
fn own_ids(dir: &Path) -> (u32, u32) {
    let meta = fs::metadata(dir).unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()));
    (meta.uid(), meta.gid())
}

/// (name, uid, gid) of the /etc/passwd entry matching `pred`.
fn passwd_entry(pred: impl Fn(&str, u32) -> bool) -> Option<(String, u32, u32)> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
        pred(name, uid).then(|| (name.to_string(), uid, gid))
    })
}

/// Name of the /etc/group entry with this gid.
fn group_name(gid: u32) -> Option<String> {
    let text = fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == gid).then(|| f[0].to_string())
    })
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after "(comm)": state ppid pgrp ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2
                && fields[0] != "Z"
                && fields[0] != "X"
                && fields[2].parse::<u32>() == Ok(pgid)
        })
        .collect()
}

/// SIGKILL a whole process group (a server and every process it forked).
fn kill_group(pgid: u32) -> Result<(), String> {
    // Its exit status is not checked: kill fails when the group is already gone.
    Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|_| ())
        .map_err(|e| format!("run kill -KILL -{pgid}: {e}"))
}

/// Kill `child` and everything in its process group, reap it, and wait until
/// no process of the group is left (so its ports and sockets are released).
fn kill_server(child: &mut Child) -> Result<(), String> {
    let pgid = child.id();
    let mut errors = String::new();
    if let Err(e) = kill_group(pgid) {
        let _ = writeln!(errors, "{e}");
    }
    let _ = child.kill();
    if let Err(e) = child.wait() {
        let _ = writeln!(errors, "wait for pid {pgid}: {e}");
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let left = group_members(pgid);
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = writeln!(errors, "processes {left:?} of group {pgid} still alive");
            break;
        }
        let _ = kill_group(pgid);
        std::thread::sleep(POLL);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Does the log text written since byte `since` say the port was taken?
fn bind_failed(log: &str, since: usize) -> bool {
    log.get(since..)
        .unwrap_or(log)
        .to_ascii_lowercase()
        .contains("address already in use")
}

/// How a readiness wait ended.
enum Ready {
    Yes,
    /// The server process exited; its log says why.
    Exited(String),
    TimedOut(String),
}

/// Wait until 127.0.0.1:`port` answers with a first line starting with
/// `greeting`, or `child` exits, or the deadline passes.
fn wait_ready(child: &mut Child, port: u16, greeting: &str) -> Ready {
    wait_ready_with(child, port, greeting, read_greeting)
}

/// [`wait_ready`], reading the first line with `probe` (e.g. over TLS).
fn wait_ready_with(
    child: &mut Child,
    port: u16,
    greeting: &str,
    probe: impl Fn(u16) -> Result<String, String>,
) -> Ready {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ready::Exited(format!("server exited with {status}")),
            Ok(None) => {}
            Err(e) => return Ready::Exited(format!("cannot poll the server process: {e}")),
        }
        let last = match probe(port) {
            Ok(line) if line.starts_with(greeting) => return Ready::Yes,
            Ok(line) => format!("unexpected greeting {line:?}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Ready::TimedOut(format!(
                "port {port} did not answer {greeting:?} within {START_TIMEOUT:?} (last: {last})"
            ));
        }
        std::thread::sleep(POLL);
    }
}

fn read_greeting(port: u16) -> Result<String, String> {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("read greeting: {e}"))?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok(line.trim_end().to_string())
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Dovecot
// ---------------------------------------------------------------------------

/// Who the Dovecot processes run as: depends on whether the tests run as root.
#[derive(Clone, Debug)]
struct Identity {
    /// The test process runs as root: Dovecot uses its packaged `dovecot` and
    /// `dovenull` users and the mail processes run as `nobody`.
    root: bool,
    /// Owner of the mail files (the userdb uid/gid).
    mail_uid: u32,
    mail_gid: u32,
    /// Not root: this user is Dovecot's internal and login user too,
    user_name: String,
    /// and this group its internal group.
    group_name: String,
}

impl Identity {
    fn detect(dir: &Path) -> Identity {
        let (uid, gid) = own_ids(dir);
        if uid == 0 {
            for user in ["dovecot", "dovenull"] {
                if passwd_entry(|name, _| name == user).is_none() {
                    panic!(
                        "the system user {user:?} is missing: it comes with Debian's \
                         dovecot-core package (scripts/test installs dovecot-imapd)"
                    );
                }
            }
            // The unprivileged Dovecot processes must reach the temp dir.
            for ancestor in dir.ancestors().skip(1) {
                let mode = fs::metadata(ancestor).map_or(0, |m| m.mode() & 0o7777);
                assert!(
                    mode & 0o001 != 0,
                    "{} (mode {mode:o}) cannot be traversed by Dovecot's unprivileged users: \
                     point TMPDIR at a directory under a world-traversable path such as /tmp",
                    ancestor.display()
                );
            }
            // Dovecot refuses uid 0 for mail access: mail files belong to nobody.
            let (_, mail_uid, mail_gid) = passwd_entry(|name, _| name == "nobody")
                .unwrap_or_else(|| ("nobody".into(), 65534, 65534));
            Identity {
                root: true,
                mail_uid,
                mail_gid,
                user_name: "root".into(),
                group_name: "root".into(),
            }
        } else {
            let user_name = passwd_entry(|_, u| u == uid)
                .map(|(name, _, _)| name)
                .unwrap_or_else(|| {
                    panic!(
                        "uid {uid} has no /etc/passwd entry: Dovecot needs a user name \
                         for default_internal_user"
                    )
                });
            let group_name = group_name(gid).unwrap_or_else(|| {
                panic!(
                    "gid {gid} has no /etc/group entry: Dovecot needs a group name \
                     for default_internal_group"
                )
            });
            Identity {
                root: false,
                mail_uid: uid,
                mail_gid: gid,
                user_name,
                group_name,
            }
        }
    }

    /// Give a file or dir the harness created to the mail user (as root).
    fn own(&self, path: &Path) {
        if self.root {
            std::os::unix::fs::chown(path, Some(self.mail_uid), Some(self.mail_gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}

fn dovecot_binary() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("MAILTRIAGE_TEST_DOVECOT") {
            return bin;
        }
        if Path::new("/usr/sbin/dovecot").exists() {
            return "/usr/sbin/dovecot".into();
        }
        panic!(
            "/usr/sbin/dovecot not found: install Debian's dovecot-imapd \
             (scripts/test does), or set MAILTRIAGE_TEST_DOVECOT"
        )
    })
}

/// One message read back over IMAP by [`Dovecot::fetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImapMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    pub raw: Vec<u8>,
}

/// A private Dovecot IMAP server (plain IMAP on 127.0.0.1, TLS too with
/// [`Dovecot::start_tls`]; passwd-file users with plain passwords, Maildir
/// under its temp dir). See the module docs.
pub struct Dovecot {
    dir: TempDir,
    port: u16,
    /// The implicit-TLS (imaps) port; 0 unless started by `start_tls`.
    imaps_port: u16,
    /// Started by `start_tls`: `ssl = yes` with the files in `tls/`.
    tls: bool,
    child: Option<Child>,
    identity: Identity,
    users: Vec<(String, String)>,
    instance: String,
}

impl Dovecot {
    /// Start a server with these (user, password) accounts. Panics with the log
    /// tail if it does not answer `* OK` in time.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_inner(users, None)
    }

    /// [`Dovecot::start`] with TLS (`ssl = yes`, the server certificate and
    /// key of `ca`, TLS 1.2 or later): the normal listener ([`Dovecot::port`])
    /// offers STARTTLS, still allowing plaintext LOGIN (loopback), and a
    /// second listener ([`Dovecot::imaps_port`]) speaks TLS from the first
    /// byte. The certificate files are copied into the server's dir, so the
    /// server does not depend on `ca` living on.
    pub fn start_tls(users: &[(&str, &str)], ca: &TestCa) -> Dovecot {
        Dovecot::start_inner(users, Some(ca))
    }

    fn start_inner(users: &[(&str, &str)], ca: Option<&TestCa>) -> Dovecot {
        let dir = server_dir("mailtriage-dovecot-");
        let identity = Identity::detect(dir.path());
        let mut server = Dovecot {
            port: 0,
            imaps_port: 0,
            tls: ca.is_some(),
            child: None,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            instance: format!("mt{}-{}", std::process::id(), unique()),
            identity,
            dir,
        };
        for sub in ["run", "state", "mail"] {
            let path = server.dir.path().join(sub);
            fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        }
        set_mode(&server.dir.path().join("run"), 0o755);
        let mail = server.dir.path().join("mail");
        set_mode(&mail, 0o755);
        server.identity.own(&mail);
        server.write_passwd();
        if let Some(ca) = ca {
            // Read by Dovecot's config process (root, or this user).
            let tls = ca.install(&server.dir.path().join("tls"));
            set_mode(&tls, 0o755);
        }

        let mut why = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            if server.tls {
                server.imaps_port = loop {
                    let p = free_port();
                    if p != server.port {
                        break p;
                    }
                };
            }
            let since = server.log().len();
            match server.launch() {
                Ok(()) => return server,
                Err(e) => {
                    let _ = writeln!(
                        why,
                        "attempt {attempt} on ports {} and {}: {e}",
                        server.port, server.imaps_port
                    );
                    // Someone took the port between free_port() and the bind.
                    if !bind_failed(&server.log(), since) {
                        break;
                    }
                }
            }
        }
        panic!("Dovecot did not start:\n{why}\n{}", server.log_tail());
    }

    /// The IMAP port on 127.0.0.1 (plain IMAP, LOGIN/AUTHENTICATE PLAIN
    /// allowed; STARTTLS offered too when started by [`Dovecot::start_tls`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The implicit-TLS IMAP port (imaps) on 127.0.0.1; panics unless the
    /// server was started by [`Dovecot::start_tls`].
    pub fn imaps_port(&self) -> u16 {
        assert!(
            self.tls,
            "imaps_port: this Dovecot has no TLS (use Dovecot::start_tls)"
        );
        self.imaps_port
    }

    /// The CA certificate (PEM) that signed this server's certificate (a
    /// copy in its dir); panics unless started by [`Dovecot::start_tls`].
    pub fn ca_file(&self) -> PathBuf {
        assert!(
            self.tls,
            "ca_file: this Dovecot has no TLS (use Dovecot::start_tls)"
        );
        self.dir.path().join("tls").join("ca.pem")
    }

    /// The server's temp dir (config, log, run dir, `mail/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The user's Maildir root (its INBOX); folders are `.Name` beneath it.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// The whole server log (Dovecot's log file, then anything on its stderr).
    pub fn log(&self) -> String {
        let mut log = read_lossy(&self.dir.path().join("dovecot.log"));
        let stderr = read_lossy(&self.dir.path().join("dovecot.stderr"));
        if !stderr.trim().is_empty() {
            log.push_str("--- dovecot stderr ---\n");
            log.push_str(&stderr);
        }
        log
    }

    /// The end of the log, labelled, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- Dovecot log tail ({}) ---\n{}",
            self.dir.path().join("dovecot.log").display(),
            tail(&self.log(), LOG_TAIL_LINES)
        )
    }

    /// Is the server process running (started and not stopped)?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kill the server and all its processes (open connections drop at once,
    /// like a crash or an outage), wait for them to go, remove `run/master.pid`.
    /// The data stays. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = kill_server(&mut child)
        {
            panic!("stopping Dovecot: {e}\n{}", self.log_tail());
        }
        let _ = fs::remove_file(self.dir.path().join("run").join("master.pid"));
    }

    /// Stop (if running) and start again on the same port and data. Retries
    /// the bind while the port is still held, up to a deadline.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let since = self.log().len();
            match self.launch() {
                Ok(()) => return,
                Err(e) => {
                    if !bind_failed(&self.log(), since) || Instant::now() >= deadline {
                        panic!(
                            "Dovecot did not restart on port {}: {e}\n{}",
                            self.port,
                            self.log_tail()
                        );
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    /// Replace a user's password, or add the user, and wait until the server
    /// accepts it. Dovecot re-reads a changed passwd-file, but checks it at
    /// most once a second, so the change can take up to a second to show.
    pub fn set_password(&mut self, user: &str, password: &str) {
        match self.users.iter_mut().find(|(u, _)| u == user) {
            Some(entry) => entry.1 = password.to_string(),
            None => self.users.push((user.to_string(), password.to_string())),
        }
        self.write_passwd();
        if !self.running() {
            return;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let result = self.connect().and_then(|mut c| {
                let r = c.login(user, password);
                let _ = c.logout();
                r
            });
            match result {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!(
                    "the new password of {user} was not accepted within {START_TIMEOUT:?}: {e}"
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn password(&self, user: &str) -> &str {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no user {user:?} in this Dovecot (users are set by start)"))
    }

    fn write_passwd(&self) {
        let mut text = String::new();
        for (user, password) in &self.users {
            assert!(
                !user.contains([':', '\n']) && !password.contains('\n'),
                "user {user:?} or its password cannot go into a passwd-file"
            );
            let _ = writeln!(text, "{user}:{{PLAIN}}{password}");
        }
        let path = self.dir.path().join("passwd");
        write_atomically(&path, text.as_bytes());
        set_mode(&path, 0o644);
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        let id = &self.identity;
        // With TLS: STARTTLS on the imap listener (plaintext still allowed),
        // and an implicit-TLS listener on a second port. The certificate
        // chain and key are read (`<file`) by the config process. Handshake
        // failures are logged (verbose_ssl), e.g. a client refusing the CA.
        let (ssl, imaps) = if self.tls {
            (
                format!(
                    "ssl = yes\nssl_cert = <{d}/tls/server-chain.pem\n\
                     ssl_key = <{d}/tls/server.key\nssl_min_protocol = TLSv1.2\n\
                     verbose_ssl = yes"
                ),
                format!(
                    "  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {}\n    \
                     ssl = yes\n  }}\n",
                    self.imaps_port
                ),
            )
        } else {
            (
                "ssl = no".to_string(),
                // No implicit-TLS listener without TLS (Dovecot::start_tls).
                "  inet_listener imaps {\n    port = 0\n  }\n".to_string(),
            )
        };
        let mut conf = format!(
            r#"# Private Dovecot instance of mailtriage's test harness (crates/testkit).
instance_name = {instance}
base_dir = {d}/run
state_dir = {d}/state
protocols = imap
listen = 127.0.0.1
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
auth_verbose = yes
# Answer a wrong password at once (the packaged default waits 2 s).
auth_failure_delay = 0
{ssl}
# Plaintext LOGIN is allowed without TLS too (loopback tests).
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{d}/mail/%u
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
namespace inbox {{
  inbox = yes
  mailbox Archive {{
    special_use = \Archive
  }}
  mailbox Drafts {{
    special_use = \Drafts
  }}
  mailbox Junk {{
    special_use = \Junk
  }}
  mailbox Sent {{
    special_use = \Sent
  }}
  mailbox Trash {{
    special_use = \Trash
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
{imaps}"#,
            instance = self.instance,
            uid = id.mail_uid,
            gid = id.mail_gid,
            port = self.port,
            ssl = ssl,
            imaps = imaps,
        );
        // Not root: no chroot, and every service runs as this user.
        let chroot = if id.root { "" } else { "  chroot =\n" };
        let _ = write!(
            conf,
            r#"{chroot}}}
service anvil {{
{chroot}  # No auth penalty: the packaged default delays each login from an IP
  # after a failed one (2 s, doubling up to 15 s), which would make every
  # test after a wrong-password test wait.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"#
        );
        if !id.root {
            let _ = writeln!(
                conf,
                "default_internal_user = {u}\ndefault_login_user = {u}\n\
                 default_internal_group = {g}",
                u = id.user_name,
                g = id.group_name
            );
        }
        conf
    }

    /// Write the config for the current port and start the master; Err if it
    /// exits or does not answer in time (it is killed then).
    fn launch(&mut self) -> Result<(), String> {
        let conf = self.dir.path().join("dovecot.conf");
        write_file(&conf, self.config().as_bytes());
        let _ = fs::remove_file(self.dir.path().join("run").join("master.pid"));
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("dovecot.stderr"))
            .map_err(|e| format!("open dovecot.stderr: {e}"))?;
        let mut child = Command::new(dovecot_binary())
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(
                stderr
                    .try_clone()
                    .map_err(|e| format!("dup stderr file: {e}"))?,
            )
            .stderr(stderr)
            // Its own process group, so stop() can kill every process it forks.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn {} -F -c {}: {e}", dovecot_binary(), conf.display()))?;
        match wait_ready(&mut child, self.port, "* OK") {
            Ready::Yes => {
                self.child = Some(child);
                Ok(())
            }
            Ready::Exited(why) | Ready::TimedOut(why) => {
                let _ = kill_server(&mut child);
                Err(why)
            }
        }
    }

    /// A connection (greeting read, not logged in) whose errors carry this
    /// server's log tail.
    pub fn connect(&self) -> Result<ImapClient, String> {
        ImapClient::connect_logged(self.port, Some(self.dir.path().join("dovecot.log")))
    }

    /// A connection logged in as `user` with its current password; panics
    /// with the log tail if that fails.
    pub fn client(&self, user: &str) -> ImapClient {
        let mut client = self
            .connect()
            .unwrap_or_else(|e| panic!("connect to Dovecot: {e}"));
        if let Err(e) = client.login(user, self.password(user)) {
            panic!("LOGIN {user}: {e}");
        }
        client
    }

    fn run_as<T>(
        &self,
        user: &str,
        what: &str,
        f: impl FnOnce(&mut ImapClient) -> Result<T, String>,
    ) -> T {
        let mut client = self.client(user);
        let result = f(&mut client);
        let _ = client.logout();
        // The client's errors carry the log tail already.
        result.unwrap_or_else(|e| panic!("{what} as {user}: {e}"))
    }

    /// On-disk Maildir++ dir of `folder` ("INBOX", or an IMAP name such as
    /// "Archive" or "Archive.2024" with Dovecot's default separator '.').
    pub fn folder_dir(&self, user: &str, folder: &str) -> PathBuf {
        assert!(
            !folder.is_empty() && !folder.contains('/') && folder.is_ascii(),
            "folder {folder:?}: use an ASCII IMAP name with '.' as separator"
        );
        let root = self.maildir(user);
        if folder.eq_ignore_ascii_case("INBOX") {
            root
        } else {
            root.join(format!(".{folder}"))
        }
    }

    fn mkdir_owned(&self, path: &Path) {
        if path.is_dir() {
            return;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        self.identity.own(path);
    }

    /// Create the user's Maildir and `folder` on disk if missing.
    fn ensure_folder(&self, user: &str, folder: &str) -> PathBuf {
        let root = self.maildir(user);
        for dir in [
            root.clone(),
            root.join("cur"),
            root.join("new"),
            root.join("tmp"),
        ] {
            self.mkdir_owned(&dir);
        }
        let dir = self.folder_dir(user, folder);
        if dir != root {
            for sub in [
                dir.clone(),
                dir.join("cur"),
                dir.join("new"),
                dir.join("tmp"),
            ] {
                self.mkdir_owned(&sub);
            }
            let marker = dir.join("maildirfolder");
            if !marker.exists() {
                write_file(&marker, b"");
                self.identity.own(&marker);
            }
        }
        dir
    }

    /// Deliver `raw` straight into the user's Maildir folder the way a local
    /// delivery agent does (tmp/ then rename into new/): the message is new,
    /// unseen and \Recent. Creates the folder on disk if needed. Dovecot sees
    /// it at its next sync, and an IDLE client is told (inotify). Returns the
    /// file's path.
    pub fn deliver(&self, user: &str, folder: &str, raw: &[u8]) -> PathBuf {
        self.deliver_to(user, folder, raw, None)
    }

    /// Like [`Dovecot::deliver`], but into `cur/NAME:2,FLAGS` with Maildir flag
    /// letters (`""` none, `"S"` \Seen, `"FS"` \Flagged \Seen; sorted ASCII):
    /// the fast way to load many messages, which also sets flags.
    pub fn deliver_with_flags(&self, user: &str, folder: &str, raw: &[u8], flags: &str) -> PathBuf {
        self.deliver_to(user, folder, raw, Some(flags))
    }

    fn deliver_to(&self, user: &str, folder: &str, raw: &[u8], flags: Option<&str>) -> PathBuf {
        let dir = self.ensure_folder(user, folder);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("system clock before 1970");
        let name = format!(
            "{}.M{}P{}Q{}.mailtriage-harness",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            unique()
        );
        let tmp = dir.join("tmp").join(&name);
        write_file(&tmp, raw);
        set_mode(&tmp, 0o600);
        self.identity.own(&tmp);
        let dest = match flags {
            None => dir.join("new").join(&name),
            Some(flags) => dir.join("cur").join(format!("{name}:2,{flags}")),
        };
        fs::rename(&tmp, &dest)
            .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), dest.display()));
        dest
    }

    /// APPEND `raw` to `folder` over IMAP as `user` (creating the folder first
    /// if it does not exist), the way a message arrives from outside. Returns
    /// the new message's UID (from the APPENDUID response).
    pub fn append(&self, user: &str, folder: &str, raw: &[u8]) -> u32 {
        self.append_with_flags(user, folder, raw, &[])
    }

    /// [`Dovecot::append`] with flags such as `\Seen`.
    pub fn append_with_flags(&self, user: &str, folder: &str, raw: &[u8], flags: &[&str]) -> u32 {
        self.run_as(user, &format!("APPEND to {folder}"), |c| {
            if !c.folder_exists(folder)? {
                c.command(&format!("CREATE {}", quote(folder)))?;
            }
            c.append(folder, flags, raw)
        })
    }

    /// Create a folder over IMAP (no error if it exists).
    pub fn create_folder(&self, user: &str, folder: &str) {
        self.run_as(user, &format!("CREATE {folder}"), |c| {
            if !c.folder_exists(folder)? {
                c.command(&format!("CREATE {}", quote(folder)))?;
            }
            Ok(())
        })
    }

    /// (UID, flags) of every message in `folder`, read over IMAP with
    /// `UID FETCH 1:* (FLAGS)` after EXAMINE (read-only: changes nothing),
    /// sorted by UID. Flags as the server sends them, e.g. `\Seen`, except
    /// `\Recent` (per session), which is left out.
    pub fn flags(&self, user: &str, folder: &str) -> Vec<(u32, Vec<String>)> {
        self.run_as(user, &format!("read flags of {folder}"), |c| {
            c.examine(folder)?;
            Ok(c.uid_fetch("1:*", "(UID FLAGS)")?
                .into_iter()
                .map(|m| (m.uid, m.flags))
                .collect())
        })
    }

    /// UIDs of the messages in `folder` that have `\Seen`.
    pub fn seen(&self, user: &str, folder: &str) -> Vec<u32> {
        self.flags(user, folder)
            .into_iter()
            .filter(|(_, flags)| flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
            .map(|(uid, _)| uid)
            .collect()
    }

    /// Number of messages in `folder` (STATUS MESSAGES, i.e. EXISTS).
    pub fn count(&self, user: &str, folder: &str) -> u32 {
        self.run_as(user, &format!("STATUS {folder}"), |c| {
            c.status(folder, "MESSAGES")
        })
    }

    /// Every message in `folder` with UID, flags and body
    /// (`UID FETCH 1:* (UID FLAGS BODY.PEEK[])`, read-only), sorted by UID.
    pub fn fetch(&self, user: &str, folder: &str) -> Vec<ImapMessage> {
        self.run_as(user, &format!("fetch {folder}"), |c| {
            c.examine(folder)?;
            c.uid_fetch("1:*", "(UID FLAGS BODY.PEEK[])")
        })
    }

    /// UIDVALIDITY of `folder`.
    pub fn uid_validity(&self, user: &str, folder: &str) -> u32 {
        self.run_as(user, &format!("STATUS {folder}"), |c| {
            c.status(folder, "UIDVALIDITY")
        })
    }

    /// Names of the user's folders (LIST "" "*"), sorted.
    pub fn folders(&self, user: &str) -> Vec<String> {
        self.run_as(user, "LIST", |c| c.list())
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill_server(&mut child);
        }
    }
}

// ---------------------------------------------------------------------------
// ImapClient
// ---------------------------------------------------------------------------

/// One logical IMAP response line: text with each literal's bytes taken out
/// (the `{N}` marker stays in `text`) and put in `literals`, in order.
#[derive(Clone, Debug, Default)]
pub struct ImapLine {
    pub text: String,
    pub literals: Vec<Vec<u8>>,
}

/// A tiny synchronous IMAP client for tests (tagged commands, literals in
/// both directions, IDLE). Errors are `Err(String)` with the server's words.
pub struct ImapClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
    /// Bytes of a line that a read timeout interrupted.
    pending: Vec<u8>,
    /// The server's log, whose tail is added to I/O and NO/BAD errors.
    log: Option<PathBuf>,
    /// The server's greeting line.
    pub greeting: String,
}

impl ImapClient {
    /// Connect to 127.0.0.1:`port` and read the greeting (must be `* OK`).
    pub fn connect(port: u16) -> Result<ImapClient, String> {
        ImapClient::connect_logged(port, None)
    }

    /// [`ImapClient::connect`]; errors also show the tail of the log at `log`.
    pub fn connect_logged(port: u16, log: Option<PathBuf>) -> Result<ImapClient, String> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .map_err(|e| with_log(format!("connect to 127.0.0.1:{port}: {e}"), log.as_deref()))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| format!("set read timeout: {e}"))?;
        let writer = stream
            .try_clone()
            .map_err(|e| format!("clone stream: {e}"))?;
        let mut client = ImapClient {
            reader: BufReader::new(stream),
            writer,
            tag: 0,
            pending: Vec::new(),
            log,
            greeting: String::new(),
        };
        let greeting = client.read_line()?.text;
        if !greeting.starts_with("* OK") {
            return Err(client.error(format!("unexpected IMAP greeting {greeting:?}")));
        }
        client.greeting = greeting;
        Ok(client)
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("t{}", self.tag)
    }

    fn error(&self, message: String) -> String {
        with_log(message, self.log.as_deref())
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
            .map_err(|e| self.error(format!("write to IMAP server: {e}")))
    }

    /// Read one CRLF-terminated physical line (without CRLF). Ok(None) on a
    /// read timeout (the partial line is kept for the next call).
    fn read_raw_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self.reader.read_until(b'\n', &mut self.pending) {
            Ok(0) => Err(self.error(format!(
                "IMAP server closed the connection (partial line {:?})",
                String::from_utf8_lossy(&self.pending)
            ))),
            Ok(_) if self.pending.ends_with(b"\n") => {
                let mut line = std::mem::take(&mut self.pending);
                line.pop();
                if line.ends_with(b"\r") {
                    line.pop();
                }
                Ok(Some(line))
            }
            Ok(_) => Err(self.error("IMAP server closed the connection mid-line".into())),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error(format!("read from IMAP server: {e}"))),
        }
    }

    /// Trailing `{N}` or `{N+}` literal marker of a physical line.
    fn literal_len(line: &[u8]) -> Option<usize> {
        let rest = line.strip_suffix(b"}")?;
        let rest = rest.strip_suffix(b"+").unwrap_or(rest);
        let open = rest.iter().rposition(|&b| b == b'{')?;
        std::str::from_utf8(&rest[open + 1..]).ok()?.parse().ok()
    }

    /// Read one logical response line (following literals), waiting up to
    /// the client's read timeout.
    pub fn read_line(&mut self) -> Result<ImapLine, String> {
        self.read_line_within(IO_TIMEOUT)?.ok_or_else(|| {
            self.error(format!(
                "no response from the IMAP server within {IO_TIMEOUT:?}"
            ))
        })
    }

    /// Read one logical line, or Ok(None) if none starts within `timeout`.
    pub fn read_line_within(&mut self, timeout: Duration) -> Result<Option<ImapLine>, String> {
        self.set_timeout(timeout)?;
        let first = self.read_raw_line();
        self.set_timeout(IO_TIMEOUT)?;
        let Some(mut physical) = first? else {
            return Ok(None);
        };
        let mut line = ImapLine::default();
        loop {
            line.text.push_str(&String::from_utf8_lossy(&physical));
            let Some(n) = Self::literal_len(&physical) else {
                return Ok(Some(line));
            };
            let mut literal = vec![0; n];
            if let Err(e) = self.reader.read_exact(&mut literal) {
                return Err(self.error(format!("read a {n}-byte literal: {e}")));
            }
            line.literals.push(literal);
            physical = match self.read_raw_line()? {
                Some(physical) => physical,
                None => return Err(self.error("timed out in the middle of a response".into())),
            };
        }
    }

    fn set_timeout(&mut self, timeout: Duration) -> Result<(), String> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|e| format!("set read timeout: {e}"))
    }

    /// Read lines until the tagged response for `tag`: Ok(every line, the
    /// tagged OK last) on OK, Err(the tagged line and the log tail) on NO/BAD.
    fn finish(&mut self, tag: &str, command: &str) -> Result<Vec<ImapLine>, String> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            if let Some(rest) = line
                .text
                .strip_prefix(tag)
                .and_then(|r| r.strip_prefix(' '))
            {
                if rest.starts_with("OK") {
                    lines.push(line);
                    return Ok(lines);
                }
                return Err(self.error(format!("{command:?} failed: {}", line.text)));
            }
            lines.push(line);
        }
    }

    /// Run one command (no literals); Ok(every line including the tagged OK).
    pub fn command(&mut self, command: &str) -> Result<Vec<ImapLine>, String> {
        let tag = self.next_tag();
        self.send(format!("{tag} {command}\r\n").as_bytes())?;
        self.finish(&tag, command)
    }

    /// LOGIN; Err carries the server's NO line.
    pub fn login(&mut self, user: &str, password: &str) -> Result<(), String> {
        let tag = self.next_tag();
        self.send(format!("{tag} LOGIN {} {}\r\n", quote(user), quote(password)).as_bytes())?;
        self.finish(&tag, &format!("LOGIN {user}")).map(|_| ())
    }

    /// LOGOUT (the server's BYE and OK are read).
    pub fn logout(&mut self) -> Result<(), String> {
        self.command("LOGOUT").map(|_| ())
    }

    fn exists(lines: &[ImapLine]) -> Result<u32, String> {
        lines
            .iter()
            .find_map(|l| {
                let rest = l.text.strip_prefix("* ")?.strip_suffix(" EXISTS")?;
                rest.parse().ok()
            })
            .ok_or_else(|| "no EXISTS in the response".to_string())
    }

    /// SELECT (read-write); returns EXISTS.
    pub fn select(&mut self, folder: &str) -> Result<u32, String> {
        let lines = self.command(&format!("SELECT {}", quote(folder)))?;
        Self::exists(&lines)
    }

    /// EXAMINE (read-only); returns EXISTS.
    pub fn examine(&mut self, folder: &str) -> Result<u32, String> {
        let lines = self.command(&format!("EXAMINE {}", quote(folder)))?;
        Self::exists(&lines)
    }

    /// STATUS with one numeric item (MESSAGES, UIDNEXT, UIDVALIDITY, UNSEEN...).
    pub fn status(&mut self, folder: &str, item: &str) -> Result<u32, String> {
        let lines = self.command(&format!("STATUS {} ({item})", quote(folder)))?;
        lines
            .iter()
            .filter(|l| l.text.starts_with("* STATUS "))
            .find_map(|l| number_after(&l.text, item))
            .ok_or_else(|| format!("no {item} in the STATUS response"))
    }

    /// Folder names (LIST "" "*"), sorted.
    pub fn list(&mut self) -> Result<Vec<String>, String> {
        let lines = self.command("LIST \"\" \"*\"")?;
        let mut names: Vec<String> = lines
            .iter()
            .filter(|l| l.text.starts_with("* LIST "))
            .map(|l| {
                if let Some(literal) = l.literals.last() {
                    return String::from_utf8_lossy(literal).into_owned();
                }
                // * LIST (\HasNoChildren) "." "Name"   or   ... "." Name
                let after_attrs = l.text.split_once(") ").map_or("", |(_, rest)| rest);
                let name = after_attrs.split_once(' ').map_or("", |(_, n)| n);
                name.trim_matches('"')
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn folder_exists(&mut self, folder: &str) -> Result<bool, String> {
        Ok(self.list()?.iter().any(|n| {
            n == folder || (n.eq_ignore_ascii_case("INBOX") && folder.eq_ignore_ascii_case("INBOX"))
        }))
    }

    /// APPEND with a synchronizing literal; returns the APPENDUID UID.
    pub fn append(&mut self, folder: &str, flags: &[&str], raw: &[u8]) -> Result<u32, String> {
        let tag = self.next_tag();
        let command = format!(
            "{tag} APPEND {} ({}) {{{}}}\r\n",
            quote(folder),
            flags.join(" "),
            raw.len()
        );
        self.send(command.as_bytes())?;
        loop {
            let line = self.read_line()?;
            if line.text.starts_with('+') {
                break;
            }
            if line.text.starts_with(&format!("{tag} ")) {
                return Err(format!("APPEND to {folder} refused: {}", line.text));
            }
        }
        let mut data = raw.to_vec();
        data.extend_from_slice(b"\r\n");
        self.send(&data)?;
        let lines = self.finish(&tag, &format!("APPEND to {folder}"))?;
        let done = lines.last().map(|l| l.text.as_str()).unwrap_or("");
        // t1 OK [APPENDUID <uidvalidity> <uid>] Append completed.
        done.split_once("[APPENDUID ")
            .and_then(|(_, rest)| rest.split([' ', ']']).nth(1)?.parse().ok())
            .ok_or_else(|| format!("no APPENDUID in {done:?}"))
    }

    /// UID FETCH `set` `items` in the selected folder; results sorted by UID.
    /// `items` should include UID; the body is the last literal if fetched.
    pub fn uid_fetch(&mut self, set: &str, items: &str) -> Result<Vec<ImapMessage>, String> {
        let lines = self.command(&format!("UID FETCH {set} {items}"))?;
        // A FETCH without a UID is an unsolicited flag update (another
        // session, the daemon, changed flags meanwhile): the answer to this
        // command carries the UID of every message it names.
        let mut messages: Vec<ImapMessage> = lines
            .iter()
            .filter(|l| l.text.starts_with("* ") && l.text.contains(" FETCH ("))
            .filter_map(|l| {
                Some(ImapMessage {
                    uid: number_after(&l.text, "UID")?,
                    flags: flags_in(&l.text),
                    raw: l.literals.last().cloned().unwrap_or_default(),
                })
            })
            .collect();
        // A message can appear twice (its answer and an update): keep the
        // answer, which comes last.
        messages.reverse();
        let mut seen = std::collections::HashSet::new();
        messages.retain(|m| seen.insert(m.uid));
        messages.sort_by_key(|m| m.uid);
        Ok(messages)
    }

    /// Start IDLE in the selected folder (waits for the `+` continuation).
    /// Returns the tag to pass to [`ImapClient::idle_done`].
    pub fn idle(&mut self) -> Result<String, String> {
        let tag = self.next_tag();
        self.send(format!("{tag} IDLE\r\n").as_bytes())?;
        loop {
            let line = self.read_line()?;
            if line.text.starts_with('+') {
                return Ok(tag);
            }
            if line.text.starts_with(&format!("{tag} ")) {
                return Err(format!("IDLE refused: {}", line.text));
            }
        }
    }

    /// Wait up to `timeout` for an untagged line containing `needle` (e.g.
    /// "EXISTS"); Ok(None) if none came. Other lines read meanwhile are dropped.
    pub fn wait_for_untagged(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<Option<String>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.read_line_within(left)? {
                Some(line) if line.text.starts_with("* ") && line.text.contains(needle) => {
                    return Ok(Some(line.text));
                }
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// End IDLE (DONE) and read its tagged OK.
    pub fn idle_done(&mut self, tag: &str) -> Result<Vec<ImapLine>, String> {
        self.send(b"DONE\r\n")?;
        self.finish(tag, "IDLE")
    }
}

/// The number after `key ` in `text` (e.g. "UID 7", "MESSAGES 3").
fn number_after(text: &str, key: &str) -> Option<u32> {
    let mut words = text.split([' ', '(', ')']);
    while let Some(word) = words.next() {
        if word.eq_ignore_ascii_case(key) {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// The flags in `FLAGS (...)` of a FETCH line, without `\Recent`: that one
/// is per session (whoever selects first after arrival gets it), so leaving
/// it out keeps assertions independent of who looked first.
fn flags_in(text: &str) -> Vec<String> {
    text.split_once("FLAGS (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(flags, _)| {
            flags
                .split_whitespace()
                .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `SECONDS.NANOSECONDS` since the Unix epoch (the capture's `received_at`).
fn parse_unix_time(text: &str) -> Option<SystemTime> {
    let (secs, frac) = text.trim().split_once('.').unwrap_or((text.trim(), "0"));
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::new(secs.parse().ok()?, nanos))
}

// ---------------------------------------------------------------------------
// SmtpCapture
// ---------------------------------------------------------------------------

/// The capture script, written into each capture server's temp dir.
const CAPTURE_SCRIPT: &str = include_str!("smtp_capture.py");

/// A Python 3 that can `import aiosmtpd`: Debian's /usr/bin/python3 first
/// (python3-aiosmtpd installs there; the python3 on PATH may be a pyenv one),
/// then `python3` on PATH; `MAILTRIAGE_TEST_PYTHON` overrides.
fn python_with_aiosmtpd() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let candidates: Vec<String> = match std::env::var("MAILTRIAGE_TEST_PYTHON") {
            Ok(python) => vec![python],
            Err(_) => vec!["/usr/bin/python3".into(), "python3".into()],
        };
        for python in &candidates {
            let ok = Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return python.clone();
            }
        }
        panic!(
            "no Python with aiosmtpd among {candidates:?}: install Debian's \
             python3-aiosmtpd (scripts/test does), or set MAILTRIAGE_TEST_PYTHON"
        )
    })
}

/// Where [`SmtpCapture`] rejects when told to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectAt {
    /// Every RCPT TO gets the code (so the message is not accepted).
    Rcpt,
    /// Envelope accepted; the end of DATA gets the code.
    Data,
}

/// One message received by [`SmtpCapture`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// MAIL FROM address without angle brackets ("" for the null sender).
    pub mail_from: String,
    /// Accepted RCPT TO addresses, in order.
    pub rcpt_to: Vec<String>,
    /// MAIL FROM parameters (e.g. `BODY=8BITMIME`, `SMTPUTF8`).
    pub mail_options: Vec<String>,
    /// User of a successful AUTH in that session.
    pub auth_user: Option<String>,
    /// Message bytes as received in DATA (dot-unstuffed, CRLF as sent).
    pub raw: Vec<u8>,
    /// The `.eml` file.
    pub path: PathBuf,
    /// When the server had the whole DATA, just before its 250 reply (the
    /// envelope's `received_at`, nanosecond resolution).
    pub received_at: Option<SystemTime>,
    /// The TLS version of the session (e.g. `TLSv1.3`, the envelope's `tls`)
    /// if the message came over TLS (STARTTLS or implicit); None if plain.
    pub tls: Option<String>,
}

/// How a [`SmtpCapture`] started by [`SmtpCapture::start_tls`] speaks TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP that offers STARTTLS; mail is accepted without it too.
    Starttls,
    /// Plain SMTP that offers STARTTLS and requires it: MAIL, RCPT and
    /// DATA before it are answered 530 (aiosmtpd `require_starttls`).
    StarttlsRequired,
    /// TLS from the first byte (SMTPS, port 465 style); nothing plain.
    Implicit,
}

/// An SMTP server that captures every message it accepts (aiosmtpd on
/// 127.0.0.1; plain SMTP, or TLS with [`SmtpCapture::start_tls`]). Layout
/// of its directory: see `smtp_capture.py`.
pub struct SmtpCapture {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    auth: Option<(String, String)>,
    /// TLS mode; the certificate files are in `tls/` of its dir.
    tls: Option<SmtpTls>,
    /// Whether EHLO offers 8BITMIME (aiosmtpd's default).
    eight_bit_mime: bool,
}

impl SmtpCapture {
    /// A capture server that accepts mail without AUTH (and offers none).
    pub fn start() -> SmtpCapture {
        SmtpCapture::start_inner(None, None, true)
    }

    /// A capture server that offers AUTH PLAIN and LOGIN on plain SMTP and
    /// requires it (530 before AUTH, 535 for wrong credentials).
    pub fn start_with_auth(user: &str, password: &str) -> SmtpCapture {
        SmtpCapture::start_inner(Some((user.to_string(), password.to_string())), None, true)
    }

    /// A capture server with TLS in `mode`, presenting the server
    /// certificate of `ca` (copied into its dir); no AUTH. Each captured
    /// message records its session's TLS version ([`Captured::tls`]). The
    /// harness's [`SmtpClient`] speaks plain SMTP only: with
    /// [`SmtpTls::Implicit`], use [`ca::tls_greeting`] to reach it.
    pub fn start_tls(mode: SmtpTls, ca: &TestCa) -> SmtpCapture {
        SmtpCapture::start_inner(None, Some((mode, ca)), true)
    }

    /// A capture server like [`SmtpCapture::start`] whose EHLO does not
    /// offer 8BITMIME.
    pub fn start_without_8bitmime() -> SmtpCapture {
        SmtpCapture::start_inner(None, None, false)
    }

    fn start_inner(
        auth: Option<(String, String)>,
        tls: Option<(SmtpTls, &TestCa)>,
        eight_bit_mime: bool,
    ) -> SmtpCapture {
        let dir = server_dir("mailtriage-smtp-");
        write_file(
            &dir.path().join("smtp_capture.py"),
            CAPTURE_SCRIPT.as_bytes(),
        );
        for sub in ["messages", "control"] {
            let path = dir.path().join(sub);
            fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        }
        if let Some((_, ca)) = tls {
            ca.install(&dir.path().join("tls"));
        }
        let mut server = SmtpCapture {
            dir,
            port: 0,
            child: None,
            auth,
            tls: tls.map(|(mode, _)| mode),
            eight_bit_mime,
        };
        let mut why = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            let since = server.log().len();
            match server.launch() {
                Ok(()) => return server,
                Err(e) => {
                    let _ = writeln!(why, "attempt {attempt} on port {}: {e}", server.port);
                    // Someone took the port between free_port() and the bind.
                    if !bind_failed(&server.log(), since) {
                        break;
                    }
                }
            }
        }
        panic!(
            "SMTP capture server did not start:\n{why}\n{}",
            server.log_tail()
        );
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("smtp.log"))
            .map_err(|e| format!("open smtp.log: {e}"))?;
        let python = python_with_aiosmtpd();
        let mut command = Command::new(python);
        command
            .arg(self.dir.path().join("smtp_capture.py"))
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("dup log file: {e}"))?)
            .stderr(log)
            .process_group(0);
        if let Some((user, password)) = &self.auth {
            command
                .arg("--auth-user")
                .arg(user)
                .arg("--auth-pass")
                .arg(password);
        }
        if !self.eight_bit_mime {
            command.arg("--no-8bitmime");
        }
        let tls_dir = self.dir.path().join("tls");
        if let Some(mode) = self.tls {
            let (mode, require) = match mode {
                SmtpTls::Starttls => ("starttls", false),
                SmtpTls::StarttlsRequired => ("starttls", true),
                SmtpTls::Implicit => ("implicit", false),
            };
            command
                .arg("--tls")
                .arg(mode)
                .arg("--tls-cert")
                .arg(tls_dir.join("server-chain.pem"))
                .arg("--tls-key")
                .arg(tls_dir.join("server.key"));
            if require {
                command.arg("--require-starttls");
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("spawn {python} smtp_capture.py: {e}"))?;
        let ready = if self.tls == Some(SmtpTls::Implicit) {
            // The greeting comes after a TLS handshake that trusts the CA.
            let ca = tls_dir.join("ca.pem");
            wait_ready_with(&mut child, self.port, "220", |port| {
                ca::tls_greeting(port, &ca).map(|(line, _)| line)
            })
        } else {
            wait_ready(&mut child, self.port, "220")
        };
        match ready {
            Ready::Yes => {
                self.child = Some(child);
                Ok(())
            }
            Ready::Exited(why) | Ready::TimedOut(why) => {
                let _ = kill_server(&mut child);
                Err(why)
            }
        }
    }

    /// The SMTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS mode, if started by [`SmtpCapture::start_tls`].
    pub fn tls(&self) -> Option<SmtpTls> {
        self.tls
    }

    /// The CA certificate (PEM) that signed this server's certificate (a
    /// copy in its dir); panics unless started by [`SmtpCapture::start_tls`].
    pub fn ca_file(&self) -> PathBuf {
        assert!(
            self.tls.is_some(),
            "ca_file: this SMTP capture has no TLS (use SmtpCapture::start_tls)"
        );
        self.dir.path().join("tls").join("ca.pem")
    }

    /// A connection (greeting read) whose errors carry this server's log tail.
    pub fn connect(&self) -> Result<SmtpClient, String> {
        SmtpClient::connect_logged(self.port, Some(self.dir.path().join("smtp.log")))
    }

    /// The server's temp dir (`messages/`, `control/`, `smtp.log`, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The script's whole log.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("smtp.log"))
    }

    /// The end of the log, labelled, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- SMTP capture log tail ({}) ---\n{}",
            self.dir.path().join("smtp.log").display(),
            tail(&self.log(), LOG_TAIL_LINES)
        )
    }

    /// Reject at RCPT TO with `code` (e.g. 451 transient, 550 permanent) from
    /// the next command on, until `set_reject(None)`.
    pub fn set_reject(&self, code: Option<u16>) {
        match code {
            Some(code) => self.set_reject_at(RejectAt::Rcpt, code),
            None => {
                let path = self.dir.path().join("control").join("reject");
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => panic!("remove {}: {e}", path.display()),
                }
            }
        }
    }

    /// Reject at `at` with `code` until `set_reject(None)`.
    pub fn set_reject_at(&self, at: RejectAt, code: u16) {
        assert!(
            (400..600).contains(&code),
            "reject code {code} is not a 4xx or 5xx SMTP code"
        );
        let stage = match at {
            RejectAt::Rcpt => "rcpt",
            RejectAt::Data => "data",
        };
        write_atomically(
            &self.dir.path().join("control").join("reject"),
            format!("{code} {stage}\n").as_bytes(),
        );
    }

    /// Every rejection made so far, one "STAGE CODE ADDRESSES" line each (to
    /// count a sender's retries).
    pub fn rejections(&self) -> Vec<String> {
        read_lossy(&self.dir.path().join("rejections.log"))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Every message captured so far, in arrival order.
    pub fn messages(&self) -> Vec<Captured> {
        let dir = self.dir.path().join("messages");
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        let mut emls: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        emls.sort();
        emls.into_iter()
            .map(|eml| self.read_captured(eml))
            .collect()
    }

    fn read_captured(&self, eml: PathBuf) -> Captured {
        let env_path = eml.with_extension("env");
        let envelope = fs::read_to_string(&env_path).unwrap_or_else(|e| {
            panic!(
                "read envelope {}: {e}\n{}",
                env_path.display(),
                self.log_tail()
            )
        });
        let raw = fs::read(&eml).unwrap_or_else(|e| panic!("read {}: {e}", eml.display()));
        let mut captured = Captured {
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            mail_options: Vec::new(),
            auth_user: None,
            raw,
            path: eml,
            received_at: None,
            tls: None,
        };
        for line in envelope.lines() {
            let (key, value) = line
                .split_once(": ")
                .unwrap_or((line.trim_end_matches(':'), ""));
            match key {
                "mail_from" => captured.mail_from = value.to_string(),
                "rcpt_to" => captured.rcpt_to.push(value.to_string()),
                "mail_option" => captured.mail_options.push(value.to_string()),
                "auth_user" => captured.auth_user = Some(value.to_string()),
                "received_at" => captured.received_at = parse_unix_time(value),
                "tls" => captured.tls = Some(value.to_string()),
                other => panic!("unknown envelope line {other:?} in {}", env_path.display()),
            }
        }
        captured
    }

    /// The `n`-th message captured (1-based), if it has arrived: reads that
    /// one message only, for callers that poll while thousands arrive.
    pub fn message(&self, n: usize) -> Option<Captured> {
        let eml = self.dir.path().join("messages").join(format!("{n:06}.eml"));
        eml.exists().then(|| self.read_captured(eml))
    }

    /// Wait until at least `n` messages were captured and return them all;
    /// panics after `timeout` with what did arrive and the log tail.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Captured> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if Instant::now() >= deadline {
                let got: Vec<String> = messages
                    .iter()
                    .map(|m| format!("from {:?} to {:?}", m.mail_from, m.rcpt_to))
                    .collect();
                panic!(
                    "SMTP capture on port {}: waited {timeout:?} for {n} message(s), got {}: \
                     {got:?}; rejections: {:?}\n{}",
                    self.port,
                    messages.len(),
                    self.rejections(),
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Is the server process running?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kill the server (connections drop); captured messages stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = kill_server(&mut child)
        {
            panic!("stopping the SMTP capture server: {e}\n{}", self.log_tail());
        }
    }

    /// Stop (if running) and start again on the same port and directory;
    /// numbering goes on after the messages already captured.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let since = self.log().len();
            match self.launch() {
                Ok(()) => return,
                Err(e) => {
                    if !bind_failed(&self.log(), since) || Instant::now() >= deadline {
                        panic!(
                            "SMTP capture server did not restart on port {}: {e}\n{}",
                            self.port,
                            self.log_tail()
                        );
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
    }
}

impl Drop for SmtpCapture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill_server(&mut child);
        }
    }
}

// ---------------------------------------------------------------------------
// SmtpClient
// ---------------------------------------------------------------------------

/// An SMTP reply: code and the text of each line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    pub fn text(&self) -> String {
        self.lines.join(" / ")
    }
}

/// A tiny synchronous SMTP client for tests: each call returns the reply,
/// whatever its code; Err only for I/O and protocol errors.
pub struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The server's log, whose tail is added to I/O and protocol errors.
    log: Option<PathBuf>,
    pub greeting: SmtpReply,
}

impl SmtpClient {
    /// Connect to 127.0.0.1:`port` and read the greeting.
    pub fn connect(port: u16) -> Result<SmtpClient, String> {
        SmtpClient::connect_logged(port, None)
    }

    /// [`SmtpClient::connect`]; errors also show the tail of the log at `log`.
    pub fn connect_logged(port: u16, log: Option<PathBuf>) -> Result<SmtpClient, String> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .map_err(|e| with_log(format!("connect to 127.0.0.1:{port}: {e}"), log.as_deref()))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| format!("set read timeout: {e}"))?;
        let writer = stream
            .try_clone()
            .map_err(|e| format!("clone stream: {e}"))?;
        let mut client = SmtpClient {
            reader: BufReader::new(stream),
            writer,
            log,
            greeting: SmtpReply {
                code: 0,
                lines: Vec::new(),
            },
        };
        client.greeting = client.reply()?;
        Ok(client)
    }

    fn error(&self, message: String) -> String {
        with_log(message, self.log.as_deref())
    }

    fn reply(&mut self) -> Result<SmtpReply, String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = match self.reader.read_line(&mut line) {
                Ok(n) => n,
                Err(e) => return Err(self.error(format!("read SMTP reply: {e}"))),
            };
            if n == 0 {
                return Err(
                    self.error(format!("SMTP server closed the connection after {lines:?}"))
                );
            }
            let line = line.trim_end();
            let Some(code) = line.get(..3).and_then(|c| c.parse::<u16>().ok()) else {
                return Err(self.error(format!("malformed SMTP reply line {line:?}")));
            };
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if last {
                return Ok(SmtpReply { code, lines });
            }
        }
    }

    /// Send one command line and read its reply.
    pub fn command(&mut self, line: &str) -> Result<SmtpReply, String> {
        if let Err(e) = self.writer.write_all(format!("{line}\r\n").as_bytes()) {
            return Err(self.error(format!("send {line:?}: {e}")));
        }
        self.reply()
    }

    /// AUTH PLAIN with an initial response.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Result<SmtpReply, String> {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.command(&format!("AUTH PLAIN {token}"))
    }

    /// AUTH LOGIN (username and password challenges).
    pub fn auth_login(&mut self, user: &str, password: &str) -> Result<SmtpReply, String> {
        let reply = self.command("AUTH LOGIN")?;
        if reply.code != 334 {
            return Ok(reply);
        }
        let reply = self.command(&base64(user.as_bytes()))?;
        if reply.code != 334 {
            return Ok(reply);
        }
        self.command(&base64(password.as_bytes()))
    }

    /// DATA: if the server answers 354, send `raw` dot-stuffed and
    /// terminated, and return the final reply; else the DATA reply.
    pub fn data(&mut self, raw: &[u8]) -> Result<SmtpReply, String> {
        let reply = self.command("DATA")?;
        if reply.code != 354 {
            return Ok(reply);
        }
        let mut body = Vec::with_capacity(raw.len() + 8);
        for line in raw.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                body.push(b'.');
            }
            body.extend_from_slice(line);
        }
        if !body.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".\r\n");
        if let Err(e) = self.writer.write_all(&body) {
            return Err(self.error(format!("send message data: {e}")));
        }
        self.reply()
    }

    /// EHLO, MAIL FROM, each RCPT TO, DATA: the first reply that is not a
    /// success is returned as Err(reply); Ok(final 250 reply) otherwise.
    pub fn send_mail(
        &mut self,
        from: &str,
        to: &[&str],
        raw: &[u8],
    ) -> Result<Result<SmtpReply, SmtpReply>, String> {
        let steps: Vec<String> = std::iter::once("EHLO client.test".to_string())
            .chain(std::iter::once(format!("MAIL FROM:<{from}>")))
            .chain(to.iter().map(|r| format!("RCPT TO:<{r}>")))
            .collect();
        for step in steps {
            let reply = self.command(&step)?;
            if reply.code != 250 {
                return Ok(Err(reply));
            }
        }
        let reply = self.data(raw)?;
        Ok(if reply.code == 250 {
            Ok(reply)
        } else {
            Err(reply)
        })
    }

    /// QUIT (the reply is read; a dropped connection is fine).
    pub fn quit(mut self) {
        let _ = self.command("QUIT");
    }
}

/// A fixture's bytes (`fixtures/NAME`).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = repo_root().join("fixtures").join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The captured messages with `rcpt` among their recipients, in order.
pub fn by_rcpt<'a>(captured: &'a [Captured], rcpt: &str) -> Vec<&'a Captured> {
    captured
        .iter()
        .filter(|c| c.rcpt_to.iter().any(|r| r == rcpt))
        .collect()
}

/// A captured message's subject, decoded ("" if it has none).
pub fn subject(c: &Captured) -> String {
    mail_parser::MessageParser::default()
        .parse(&c.raw)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

/// What Python's `email` package (policy=default, Debian's /usr/bin/python3)
/// makes of a message: an independent, strict reader for what the daemon
/// sends. One entry per MIME part in walk order: `type`, `cte`,
/// `filename`, `defects` (names); for a message/rfc822 attachment the
/// attached message's `message_id`, `subject` and `body` (its text, as
/// Python decodes it), for another attachment `payload_hex`, the bytes a
/// mail program would save.
pub fn python_read(raw: &[u8]) -> serde_json::Value {
    const SCRIPT: &str = r#"
import email, email.policy, json, sys
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
out = []
for p in m.walk():
    e = {"type": p.get_content_type(), "cte": p.get("Content-Transfer-Encoding"),
         "filename": p.get_filename(), "defects": [type(d).__name__ for d in p.defects]}
    if p.is_attachment():
        if p.get_content_type() == "message/rfc822":
            inner = p.get_payload()[0]
            e["message_id"] = inner["Message-ID"]
            e["subject"] = str(inner["Subject"])
            body = inner.get_body(("plain", "html"))
            e["body"] = body.get_content() if body is not None else None
        else:
            e["payload_hex"] = p.get_payload(decode=True).hex()
    out.append(e)
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(raw)
        .expect("write to python");
    let out = child.wait_with_output().expect("python ran");
    assert!(
        out.status.success(),
        "python's email package failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// Compares `got` with the golden file `fixtures/NAME` exactly, or, with
/// `UPDATE_GOLDEN=1`, writes it (review `git diff fixtures/` before
/// committing). Returns a description of the difference, if any.
pub fn golden(name: &str, got: &str) -> Option<String> {
    let path = repo_root().join("fixtures").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).expect("golden dir");
        }
        fs::write(&path, got).expect("write golden");
        return None;
    }
    let want = fs::read_to_string(&path).unwrap_or_default();
    if want == got {
        return None;
    }
    let line = want
        .lines()
        .zip(got.lines())
        .position(|(w, g)| w != g)
        .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
    Some(format!(
        "{name} differs at line {}:\n  expected: {:?}\n  actual:   {:?}\n(UPDATE_GOLDEN=1 rewrites it; review the diff)",
        line + 1,
        want.lines().nth(line).unwrap_or("(end)"),
        got.lines().nth(line).unwrap_or("(end)")
    ))
}
