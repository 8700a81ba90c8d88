//! An SMTP server per test that captures every message it accepts:
//! `smtp_capture.py` (beside this file) under Debian's python3-aiosmtpd,
//! which stores each message with its envelope in a directory (layout in
//! that script's docstring), can require AUTH, can be told to reject with a
//! given code, and speaks STARTTLS or implicit TLS when asked
//! ([`SmtpCapture::start_tls`]); also stop and restart.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::client::SmtpClient;
use crate::server::{
    LOG_TAIL_LINES, Launch, POLL, ServerProcess, free_port, launch_on_free_ports, read_lossy,
    relaunch, server_dir, tail, wait_ready, wait_ready_with, write_atomically, write_file,
};
use crate::{TestCa, ca};

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
pub(crate) fn python_with_aiosmtpd() -> &'static str {
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
    /// Declared first, so dropped first: the server goes before its dir.
    process: ServerProcess,
    dir: TempDir,
    port: u16,
    auth: Option<(String, String)>,
    /// TLS mode; the certificate files are in `tls/` of its dir.
    tls: Option<SmtpTls>,
    /// Whether EHLO offers 8BITMIME (aiosmtpd's default).
    eight_bit_mime: bool,
    /// AUTH XOAUTH2, the tokens checked at this introspection URL.
    oauth_introspect: Option<String>,
}

impl SmtpCapture {
    /// A capture server that accepts mail without AUTH (and offers none).
    pub fn start() -> SmtpCapture {
        SmtpCapture::start_inner(None, None, true)
    }

    /// A capture server that requires AUTH XOAUTH2 (PLAIN and LOGIN are
    /// refused), each token checked at `introspection_url` (a
    /// [`crate::TokenServer`]'s): active and for the user named. A refused
    /// token gets 535.
    pub fn start_with_oauth(introspection_url: &str) -> SmtpCapture {
        SmtpCapture::start_full(None, None, true, Some(introspection_url.to_string()))
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
        SmtpCapture::start_full(auth, tls, eight_bit_mime, None)
    }

    fn start_full(
        auth: Option<(String, String)>,
        tls: Option<(SmtpTls, &TestCa)>,
        eight_bit_mime: bool,
        oauth_introspect: Option<String>,
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
            process: ServerProcess::default(),
            auth,
            tls: tls.map(|(mode, _)| mode),
            eight_bit_mime,
            oauth_introspect,
        };
        let started = launch_on_free_ports(&mut server, |server| {
            server.port = free_port();
            format!("port {}", server.port)
        });
        if let Err(why) = started {
            panic!(
                "SMTP capture server did not start:\n{why}\n{}",
                server.log_tail()
            );
        }
        server
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
        self.process.running()
    }

    /// Kill the server (connections drop); captured messages stay.
    pub fn stop(&mut self) {
        if let Err(e) = self.process.stop() {
            panic!("stopping the SMTP capture server: {e}\n{}", self.log_tail());
        }
    }

    /// Stop (if running) and start again on the same port and directory;
    /// numbering goes on after the messages already captured.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = relaunch(self) {
            panic!(
                "SMTP capture server did not restart on port {}: {e}\n{}",
                self.port,
                self.log_tail()
            );
        }
    }
}
impl Launch for SmtpCapture {
    /// Starts the capture script on the current port.
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
        if let Some(url) = &self.oauth_introspect {
            command.arg("--oauth-introspect").arg(url);
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
        let child = command
            .spawn()
            .map_err(|e| format!("spawn {python} smtp_capture.py: {e}"))?;
        let port = self.port;
        if self.tls == Some(SmtpTls::Implicit) {
            // The greeting comes after a TLS handshake that trusts the CA.
            let ca = tls_dir.join("ca.pem");
            self.process.start(child, |child| {
                wait_ready_with(child, port, "220", |port| {
                    ca::tls_greeting(port, &ca).map(|(line, _)| line)
                })
            })
        } else {
            self.process
                .start(child, |child| wait_ready(child, port, "220"))
        }
    }

    fn log(&self) -> String {
        SmtpCapture::log(self)
    }
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
