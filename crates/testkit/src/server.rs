//! A server as a child process of the kit ([`ServerProcess`], started and
//! restarted through [`Launch`]): a temp dir of its own, a free port, the
//! wait for its greeting, and the kill of its whole process group (so that
//! a stopped server frees its port at once, as in an outage).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer its greeting after being started.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopped server's processes may take to go away.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval of every deadline loop.
pub(crate) const POLL: Duration = Duration::from_millis(10);
/// How many fresh ports to try when a server cannot bind the one it was given.
const PORT_ATTEMPTS: usize = 5;
/// Lines of a server log shown in a failure message.
pub(crate) const LOG_TAIL_LINES: usize = 60;

static UNIQUE: AtomicU64 = AtomicU64::new(0);

pub(crate) fn unique() -> u64 {
    UNIQUE.fetch_add(1, Ordering::Relaxed)
}

/// A port on 127.0.0.1 that was free a moment ago (bind :0, read, drop).
pub(crate) fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local_addr of the port-finding listener")
        .port()
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(crate) fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

pub(crate) fn write_file(path: &Path, contents: &[u8]) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Write via a temporary name and rename, so a reader never sees half a file.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", unique()));
    write_file(&tmp, contents);
    fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), path.display()));
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A temp dir others can traverse (Dovecot's unprivileged processes, as root).
pub(crate) fn server_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("create a temp dir for {prefix}: {e}"));
    set_mode(dir.path(), 0o755);
    dir
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

/// A server's process, in a process group of its own (the server and every
/// process it forks): killed as a whole when stopped or dropped.
#[derive(Default)]
pub(crate) struct ServerProcess {
    child: Option<Child>,
}

impl ServerProcess {
    /// Keeps `child` as the running server once `ready` says it answers;
    /// kills it and says why if it does not.
    pub(crate) fn start(
        &mut self,
        mut child: Child,
        ready: impl FnOnce(&mut Child) -> Result<(), String>,
    ) -> Result<(), String> {
        match ready(&mut child) {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(why) => {
                let _ = kill_server(&mut child);
                Err(why)
            }
        }
    }

    /// Is the server process running (started and not stopped)?
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server and its process group, if running, and waits for
    /// them to go; Err if some are left.
    pub(crate) fn stop(&mut self) -> Result<(), String> {
        match self.child.take() {
            Some(mut child) => kill_server(&mut child),
            None => Ok(()),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A server the kit starts: its process on its current port(s), and its
/// log, whose words tell a port someone else took.
pub(crate) trait Launch {
    /// Starts the server on its current port(s) and waits for its greeting;
    /// Err (the process killed) if it exits or does not answer in time.
    fn launch(&mut self) -> Result<(), String>;

    /// The server's whole log.
    fn log(&self) -> String;
}

/// Launches `server` on the port(s) `pick_ports` gives it (and describes),
/// and on fresh ones while someone took one between [`free_port`] and the
/// server's bind, [`PORT_ATTEMPTS`] times at most; Err says each attempt.
pub(crate) fn launch_on_free_ports<S: Launch>(
    server: &mut S,
    mut pick_ports: impl FnMut(&mut S) -> String,
) -> Result<(), String> {
    let mut why = String::new();
    for attempt in 1..=PORT_ATTEMPTS {
        let ports = pick_ports(server);
        let since = server.log().len();
        match server.launch() {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = writeln!(why, "attempt {attempt} on {ports}: {e}");
                if !bind_failed(&server.log(), since) {
                    break;
                }
            }
        }
    }
    Err(why)
}

/// Launches a stopped `server` again on the same port(s), retrying while
/// the port is still held, up to [`START_TIMEOUT`].
pub(crate) fn relaunch(server: &mut impl Launch) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let since = server.log().len();
        match server.launch() {
            Ok(()) => return Ok(()),
            Err(e) if !bind_failed(&server.log(), since) || Instant::now() >= deadline => {
                return Err(e);
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Wait until 127.0.0.1:`port` answers with a first line starting with
/// `greeting`, or `child` exits (Err: its log says why), or the deadline
/// passes.
pub(crate) fn wait_ready(child: &mut Child, port: u16, greeting: &str) -> Result<(), String> {
    wait_ready_with(child, port, greeting, read_greeting)
}

/// [`wait_ready`], reading the first line with `probe` (e.g. over TLS).
pub(crate) fn wait_ready_with(
    child: &mut Child,
    port: u16,
    greeting: &str,
    probe: impl Fn(u16) -> Result<String, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("server exited with {status}")),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot poll the server process: {e}")),
        }
        let last = match probe(port) {
            Ok(line) if line.starts_with(greeting) => return Ok(()),
            Ok(line) => format!("unexpected greeting {line:?}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!(
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
