//! The daemon under test, two ways: the real `mailtriage run` binary as a
//! child process ([`Daemon`], for the tests that kill it with SIGKILL, stop
//! it with SIGTERM or take its servers away, and for the benchmark), and
//! `mailtriage::daemon::run_with_clock` on a thread of the test
//! ([`InProcess`], for the tests that set the clock or read the store).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::database;

/// Poll interval of [`Daemon::terminate`].
const POLL: Duration = Duration::from_millis(50);
/// Lines of the daemon's log shown in a failure message.
const LOG_TAIL_LINES: usize = 80;

/// The daemon's `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How [`Daemon`]s are started: `binary` (the test's
/// `env!("CARGO_BIN_EXE_mailtriage")`: cargo tells only the package's own
/// tests and benchmarks where it is), its log format and filter, and a
/// program to run it under (a profiler). Not under systemd, whatever the
/// environment of the test says.
#[derive(Clone, Debug)]
pub struct DaemonCommand {
    binary: PathBuf,
    log_format: LogFormat,
    /// `RUST_LOG`; None: the test's own `RUST_LOG`, else `info`.
    filter: Option<String>,
    wrapper: Vec<String>,
}

impl DaemonCommand {
    /// `binary run` with info logs as text, no colours.
    pub fn new(binary: impl Into<PathBuf>) -> DaemonCommand {
        DaemonCommand {
            binary: binary.into(),
            log_format: LogFormat::Text,
            filter: None,
            wrapper: Vec::new(),
        }
    }

    pub fn log_format(mut self, format: LogFormat) -> DaemonCommand {
        self.log_format = format;
        self
    }

    /// `RUST_LOG` for the daemon, whatever the test's is.
    pub fn filter(mut self, filter: &str) -> DaemonCommand {
        self.filter = Some(filter.to_string());
        self
    }

    /// Runs the daemon as `PROGRAM ARGS... binary run ...` (e.g.
    /// `heaptrack -o /tmp/mt`); nothing: as itself.
    pub fn wrapped_in(mut self, argv: Vec<String>) -> DaemonCommand {
        self.wrapper = argv;
        self
    }

    /// `run --config DIR`. Every run of one directory appends to
    /// `DIR/daemon.log`, after a `=== run N ===` line.
    pub fn spawn(&self, dir: &Path) -> Daemon {
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
        std::io::Write::write_all(&mut file, format!("=== run {run} ===\n").as_bytes())
            .unwrap_or_else(|e| panic!("write {}: {e}", log.display()));
        let offset = previous.len();
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        let filter = self
            .filter
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "info".into());
        let stdout = file
            .try_clone()
            .unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
        let started = Instant::now();
        let child = command
            .args(["run", "--log-format", format, "--config"])
            .arg(dir)
            .env("RUST_LOG", filter)
            .env("NO_COLOR", "1")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} run: {e}", self.binary.display()));
        Daemon {
            child: Some(child),
            log,
            offset,
            started,
        }
    }
}

/// `mailtriage run --config DIR` as a child process, started by
/// [`DaemonCommand::spawn`] or [`Daemon::spawn`]; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    /// Where this run's lines start in the log.
    offset: usize,
    started: Instant,
}

impl Daemon {
    /// `binary run --config DIR` as [`DaemonCommand::new`] says.
    pub fn spawn(binary: &str, dir: &Path) -> Daemon {
        DaemonCommand::new(binary).spawn(dir)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
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

    /// When the process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Panics, with the exit status and the log tail, if the process has
    /// exited.
    pub fn assert_running(&mut self) {
        let exited = self.child.as_mut().map(Child::try_wait);
        if let Some(Ok(Some(status))) = exited {
            panic!("the daemon exited with {status}\n{}", self.log_tail());
        }
    }

    /// SIGTERM; the exit status, or None if it had not exited within
    /// `within` (it is killed then).
    pub fn try_terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("the daemon was already stopped");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + within;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                Err(e) => panic!("wait for the daemon: {e}"),
            }
        }
    }

    /// SIGTERM; the exit status, or a panic (with the log tail) if it has
    /// not exited within `within`.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.try_terminate(within).unwrap_or_else(|| {
            panic!(
                "the daemon did not exit within {within:?} of SIGTERM\n{}",
                self.log_tail()
            )
        })
    }

    /// SIGTERM, and a check that it exits 0 within 10 s.
    pub fn stop(&mut self) {
        let status = self.terminate(Duration::from_secs(10));
        assert!(
            status.success(),
            "exit status {status} after SIGTERM\n{}",
            self.log_tail()
        );
    }

    /// The log file, `daemon.log` of its directory.
    pub fn log_path(&self) -> &Path {
        &self.log
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

/// `mailtriage::daemon::run` on its own runtime thread in this process
/// (for tests that inject the clock or read the store afterwards, and the
/// demo), stopped through [`InProcess::shutdown`] or [`InProcess::stop`].
pub struct InProcess {
    stop: tokio::sync::watch::Sender<bool>,
    done: mpsc::Receiver<Result<(), String>>,
    thread: std::thread::JoinHandle<()>,
}

impl InProcess {
    /// Starts the daemon on the system clock. Its log lines go to the
    /// test's output (shown when a test fails), unless the program set up
    /// logging first.
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
        let (done_tx, done) = mpsc::channel();
        let dir: PathBuf = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
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
        InProcess { stop, done, thread }
    }

    /// Is the daemon still running (it ends by itself on a config it
    /// refuses, say)?
    pub fn running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Asks it to stop and waits (10 s at most) for its end: Err says why
    /// it was not a clean one.
    pub fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        match self.done.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the daemon failed: {e}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err("the daemon did not stop within 10 s after shutdown".into())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the daemon panicked".into()),
        }
    }

    /// [`InProcess::stop`], and a panic unless it ended cleanly.
    pub fn shutdown(self) {
        if let Err(e) = self.stop() {
            panic!("{e}");
        }
    }
}

/// The outbox of a [`crate::config_dir`]'s database, once the daemon has exited.
pub fn outbox(dir: &Path) -> Vec<mailtriage::outbox::OutboxItem> {
    mailtriage::store::Store::open(&database(dir), 1 << 20)
        .expect("open the store")
        .outbox_items()
        .expect("read the outbox")
}
