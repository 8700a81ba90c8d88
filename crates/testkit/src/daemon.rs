//! The real `mailtriage run` binary as a child process, for the tests that
//! kill it (SIGKILL), stop it (SIGTERM) or take its servers away
//! (tests/crash.rs, tests/outage.rs): a config directory pointing at the
//! harness's servers, the child with its standard error in a log file, and
//! a deadline loop on a condition.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{Dovecot, SmtpCapture};

/// Poll interval of [`wait_until`].
const POLL: Duration = Duration::from_millis(50);
/// Lines of the daemon's log shown in a failure message.
const LOG_TAIL_LINES: usize = 80;

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

/// `mailtriage run --config DIR` as a child process. Every run of one
/// directory appends to `DIR/daemon.log`, after a `=== run N ===` line.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    /// Where this run's lines start in the log.
    offset: usize,
    run: usize,
}

impl Daemon {
    /// Starts `binary` (the test's `env!("CARGO_BIN_EXE_mailtriage")`:
    /// cargo tells only the package's own tests where it is) with info logs
    /// as text, no colours.
    pub fn spawn(binary: &str, dir: &Path) -> Daemon {
        let log = dir.join("daemon.log");
        let previous = fs::read(&log).unwrap_or_default();
        let run = String::from_utf8_lossy(&previous)
            .lines()
            .filter(|l| l.starts_with("=== run "))
            .count()
            + 1;
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        std::io::Write::write_all(&mut file, format!("=== run {run} ===\n").as_bytes()).unwrap();
        let offset = previous.len();
        let child = Command::new(binary)
            .args(["run", "--log-format", "text", "--config"])
            .arg(dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn mailtriage run: {e}"));
        Daemon {
            child: Some(child),
            log,
            offset,
            run,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Which run of its directory this is (1, 2, ...).
    pub fn run(&self) -> usize {
        self.run
    }

    /// Is the process still running?
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child
                .wait()
                .unwrap_or_else(|e| panic!("wait for the killed daemon: {e}"));
        }
    }

    /// SIGTERM; the exit status, or a panic (with the log tail) if it has
    /// not exited within `within`.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon was already stopped");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + within;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the daemon did not exit within {within:?} of SIGTERM\n{}",
                        self.log_tail()
                    );
                }
                Err(e) => panic!("wait for the daemon: {e}"),
            }
        }
    }

    /// The whole log, every run.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// This run's part of the log.
    pub fn run_log(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.log)
            && f.seek(SeekFrom::Start(self.offset as u64)).is_ok()
        {
            let _ = f.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// How many lines of this run's log contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.run_log()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The end of the log, labelled, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

/// The end of the daemon log at `path`, labelled.
pub fn log_tail(path: &Path) -> String {
    let text = String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = format!("--- daemon log tail ({}) ---\n", path.display());
    for l in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
        let _ = writeln!(out, "{l}");
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `done` (every 50 ms) until it holds; after `timeout`, panics with
/// `why()`.
pub fn wait_until(timeout: Duration, done: impl FnMut() -> bool, why: impl FnOnce() -> String) {
    wait_until_every(POLL, timeout, done, why)
}

/// [`wait_until`], polling every `poll` (for a cheap condition whose moment
/// matters).
pub fn wait_until_every(
    poll: Duration,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    why: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            panic!("waited {timeout:?} in vain: {}", why());
        }
        std::thread::sleep(poll);
    }
}

/// `mailtriage::daemon::run` on its own runtime thread in this process
/// (for tests that inject the clock or read the store afterwards), stopped
/// through [`InProcess::shutdown`].
pub struct InProcess {
    stop: tokio::sync::watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<Result<(), String>>,
}

impl InProcess {
    /// Starts the daemon on the system clock. Its log lines go to the
    /// test's output (shown when a test fails).
    pub fn start(dir: &Path) -> InProcess {
        InProcess::start_with_clock(dir, mailtriage::daemon::Clock::system())
    }

    pub fn start_with_clock(
        dir: &Path,
        clock: std::sync::Arc<mailtriage::daemon::Clock>,
    ) -> InProcess {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (done_tx, done) = std::sync::mpsc::channel();
        let dir: PathBuf = dir.to_path_buf();
        std::thread::spawn(move || {
            let r = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))
                .and_then(|rt| {
                    rt.block_on(mailtriage::daemon::run_with_clock(&dir, rx, clock))
                        .map_err(|e| format!("{e:#}"))
                });
            let _ = done_tx.send(r);
        });
        InProcess { stop, done }
    }

    /// Asks it to stop and waits (10 s at most) for a clean end.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        match self.done.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the daemon failed: {e}"),
            Err(e) => panic!("the daemon did not stop within 10 s after shutdown: {e}"),
        }
    }
}

/// Stops the daemon with SIGTERM and checks that it exits 0.
pub fn stop(daemon: &mut Daemon) {
    let status = daemon.terminate(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status} after SIGTERM\n{}",
        daemon.log_tail()
    );
}

/// The outbox of a [`config_dir`]'s database, once the daemon has exited.
pub fn outbox(dir: &Path) -> Vec<mailtriage::store::OutboxItem> {
    mailtriage::store::Store::open(&database(dir), 1 << 20)
        .expect("open the store")
        .outbox_items()
        .expect("read the outbox")
}
