//! The command line: `parse`, `route`, `check-config`, `run`, `cases` and
//! `digest`.
//!
//! Each subcommand is a function over the library that writes to a given
//! writer, so tests drive them without a process. Exit codes are part of the
//! interface: 0 ok, 1 input that is not an email (or cannot be read), or a
//! failure the user must see (an unknown case id), 2 a config or usage error.
//!
//! `cases` and `digest` ask the running daemon through its control socket
//! ([`crate::control`]); when no daemon answers they open the database
//! themselves. Either way [`crate::control::handle`] answers, so the output
//! is the same.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::case::Case;
use crate::config::{Config, ConfigError, DaemonConfig};
use crate::control::{self, CaseDetail, Changed, ControlError, Request, Response};
use crate::route::Action;
use crate::store::{CaseRecord, Store};

#[derive(Debug, Parser)]
#[command(
    name = "mailtriage",
    version,
    about = "Triage of customer-support escalation emails"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the case a message makes, as JSON.
    ///
    /// One file (or `-` for standard input, the default) prints one JSON
    /// object. Several files or a directory (a folder of .eml files, or a
    /// Maildir with cur/ and new/) print one JSON object per line, each with a
    /// "file" key; a file that is not an email gets an "error" key and the
    /// rest go on.
    Parse {
        /// Config directory; the built-in config when omitted.
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
        /// Skip files larger than this many bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
        max_size: u64,
        /// Message files, directories, or `-`.
        #[arg(value_name = "FILE")]
        inputs: Vec<PathBuf>,
    },
    /// Print the case and the actions the routing table would take; sends nothing.
    Route {
        /// Config directory; the built-in config when omitted.
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
        /// The mailbox the message arrived in (for rules that match on it).
        #[arg(long)]
        mailbox: Option<String>,
        /// Case id to render into subjects.
        #[arg(long, default_value = "ESC-PREVIEW")]
        case_id: String,
        /// Also print each rendered message body.
        #[arg(long)]
        body: bool,
        /// A message file, or `-` for standard input (the default).
        #[arg(value_name = "FILE")]
        input: Option<PathBuf>,
    },
    /// Load and check a config directory.
    CheckConfig {
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
    },
    /// Run the daemon: watch the mailboxes of DIR/mailtriage.toml until
    /// SIGTERM or SIGINT.
    Run {
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Log format: journald under systemd, text on a terminal, or json.
        #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
        log_format: LogFormat,
    },
    /// List, show, resolve and reopen cases: through the running daemon's
    /// control socket, or in the database when no daemon runs.
    Cases {
        #[command(subcommand)]
        command: CasesCommand,
    },
    /// What a digest would say now (--preview, the default), or queue it
    /// for sending now (--send-now).
    Digest {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The digest's name in the routing table.
        name: String,
        /// Print what the digest would say; send nothing (the default).
        #[arg(long, conflicts_with = "send_now")]
        preview: bool,
        /// Queue the digest for sending now.
        #[arg(long)]
        send_now: bool,
    },
}

/// `mailtriage cases ...`.
#[derive(Debug, Subcommand)]
pub enum CasesCommand {
    /// Cases, oldest first: a table, or JSON with --json.
    List {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Only cases not resolved.
        #[arg(long)]
        open: bool,
        /// Only cases of this tier.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=2))]
        tier: Option<u8>,
        /// Only cases of at least this risk.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
        risk_min: Option<u8>,
        /// Only cases received at or after this: YYYY-MM-DD (midnight UTC)
        /// or an RFC 3339 timestamp.
        #[arg(long, value_name = "DATE", value_parser = parse_since)]
        since: Option<i64>,
        /// Print a JSON array of the case records.
        #[arg(long)]
        json: bool,
    },
    /// One case: its fields, flags, history and every message sent for it.
    Show {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The case id, e.g. ESC-2026-000123.
        id: String,
        /// Print the case record and its outbox items as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resolve a case by hand, with a resolution note.
    Resolve {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        id: String,
        /// The resolution note, kept with the case and in its history.
        #[arg(long, value_name = "TEXT")]
        note: String,
    },
    /// Reopen a resolved case.
    Reopen {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        id: String,
    },
}

/// `--since`: `YYYY-MM-DD` (midnight UTC) or an RFC 3339 timestamp, to
/// unix seconds.
fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    if s.len() == 10
        && let Ok(d) = s.parse::<jiff::civil::Date>()
        && let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp().as_second());
    }
    Err("expected YYYY-MM-DD or an RFC 3339 timestamp such as 2026-11-23T14:02:00Z".into())
}

/// Where and how logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journald when started by systemd (`$JOURNAL_STREAM`), text otherwise.
    Auto,
    Text,
    Json,
    Journald,
}

/// How a command failed, mapped to an exit code by `main`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
    #[error("{0}")]
    Run(#[from] crate::daemon::RunError),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Run(crate::daemon::RunError::Config(_)) => 2,
            CliError::Input { .. }
            | CliError::Output(_)
            | CliError::Run(_)
            | CliError::Other(_) => 1,
        }
    }
}

/// What a command that ran to the end found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Some inputs of a batch were not emails; the others were printed.
    SomeInputsFailed(usize),
}

pub fn run(cli: Cli, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match cli.command {
        Command::Parse {
            config,
            max_size,
            inputs,
        } => parse(config.as_deref(), max_size, &inputs, out),
        Command::Route {
            config,
            mailbox,
            case_id,
            body,
            input,
        } => route(
            config.as_deref(),
            mailbox.as_deref(),
            &case_id,
            body,
            input.as_deref(),
            out,
        ),
        Command::CheckConfig { config } => check_config(&config, out),
        Command::Run { config, .. } => run_daemon(&config),
        Command::Cases { command } => cases(command, out),
        Command::Digest {
            config,
            name,
            preview: _,
            send_now,
        } => digest(&config, name, send_now, out),
    }
}

fn run_daemon(dir: &Path) -> Result<Outcome, CliError> {
    // Config mistakes are found before anything starts, with exit code 2.
    Config::load(dir)?;
    crate::config::DaemonConfig::load(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(anyhow::anyhow!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: stopping");
            let _ = tx.send(true);
        });
        crate::daemon::run(dir, rx).await
    })?;
    Ok(Outcome::Ok)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, only Ctrl-C through tokio's fallback.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn load_config(dir: Option<&Path>) -> Result<Config, ConfigError> {
    match dir {
        Some(d) => Config::load(d),
        None => Config::builtin(),
    }
}

fn read_input(path: &Path, max_size: u64) -> Result<Vec<u8>, CliError> {
    let err = |message: String| CliError::Input {
        path: path.display().to_string(),
        message,
    };
    if path == Path::new("-") {
        let mut buf = Vec::new();
        io::stdin()
            .take(max_size + 1)
            .read_to_end(&mut buf)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        if buf.len() as u64 > max_size {
            return Err(err(format!("larger than {max_size} bytes")));
        }
        return Ok(buf);
    }
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.len() > max_size {
        return Err(err(format!("{} bytes, larger than {max_size}", meta.len())));
    }
    std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))
}

/// Expands directories: a Maildir's cur/ and new/, or a folder's .eml files
/// (all files when the folder itself is a Maildir's cur/ or new/).
fn expand(inputs: &[PathBuf]) -> Result<(Vec<PathBuf>, bool), CliError> {
    if inputs.is_empty() {
        return Ok((vec![PathBuf::from("-")], false));
    }
    let mut files = Vec::new();
    let mut batch = inputs.len() > 1;
    for input in inputs {
        if !input.is_dir() {
            files.push(input.clone());
            continue;
        }
        batch = true;
        let list = |dir: &Path, all: bool| -> Result<Vec<PathBuf>, CliError> {
            let rd = std::fs::read_dir(dir).map_err(|e| CliError::Input {
                path: dir.display().to_string(),
                message: format!("cannot list: {e}"),
            })?;
            let mut v: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
                })
                .filter(|p| {
                    all || p
                        .extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| e.eq_ignore_ascii_case("eml"))
                })
                .collect();
            v.sort();
            Ok(v)
        };
        let (cur, new) = (input.join("cur"), input.join("new"));
        if cur.is_dir() || new.is_dir() {
            for d in [cur, new] {
                if d.is_dir() {
                    files.extend(list(&d, true)?);
                }
            }
        } else {
            let name = input.file_name().and_then(|n| n.to_str());
            let all = matches!(name, Some("cur") | Some("new"));
            files.extend(list(input, all)?);
        }
    }
    Ok((files, batch))
}

#[derive(Serialize)]
struct Line<'a> {
    file: &'a str,
    #[serde(flatten)]
    case: &'a Case,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    file: &'a str,
    error: &'a str,
}

fn parse(
    config: Option<&Path>,
    max_size: u64,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let config = load_config(config)?;
    let (files, batch) = expand(inputs)?;
    if !batch {
        let path = &files[0];
        let raw = read_input(path, max_size)?;
        let (_, case) = config.triage.parse(&raw).map_err(|e| CliError::Input {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        serde_json::to_writer_pretty(&mut *out, &case).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(Outcome::Ok);
    }
    // Files are triaged in parallel, a chunk per thread, and written in
    // their order; one round of chunks is in memory at a time.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut failed = 0;
    for round in files.chunks(BATCH_CHUNK * threads) {
        let results: Vec<(Vec<u8>, usize)> = std::thread::scope(|scope| {
            let handles: Vec<_> = round
                .chunks(BATCH_CHUNK)
                .map(|chunk| (chunk, scope.spawn(|| parse_chunk(&config, max_size, chunk))))
                .collect();
            handles
                .into_iter()
                .map(|(chunk, h)| {
                    h.join().unwrap_or_else(|_| {
                        // A bug, not bad input: still one line per file.
                        tracing::error!(files = chunk.len(), "triage thread panicked");
                        let mut lines = Vec::new();
                        for path in chunk {
                            let name = path.display().to_string();
                            error_line(&mut lines, &name, "internal error: triage panicked");
                        }
                        (lines, chunk.len())
                    })
                })
                .collect()
        });
        for (bytes, chunk_failed) in results {
            out.write_all(&bytes)?;
            failed += chunk_failed;
        }
    }
    out.flush()?;
    Ok(if failed == 0 {
        Outcome::Ok
    } else {
        Outcome::SomeInputsFailed(failed)
    })
}

/// Files per thread in one round of a batch.
const BATCH_CHUNK: usize = 256;

/// JSON Lines for a chunk of files, and how many were not emails.
fn parse_chunk(config: &Config, max_size: u64, files: &[PathBuf]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(files.len() * 1024);
    let mut failed = 0;
    for path in files {
        let name = path.display().to_string();
        let result = read_input(path, max_size).and_then(|raw| {
            config
                .triage
                .parse(&raw)
                .map(|(_, c)| c)
                .map_err(|e| CliError::Input {
                    path: name.clone(),
                    message: e.to_string(),
                })
        });
        match result {
            Ok(case) => {
                let line = Line {
                    file: &name,
                    case: &case,
                };
                match serde_json::to_writer(&mut out, &line) {
                    Ok(()) => out.push(b'\n'),
                    // Writing into a Vec fails only on a serialisation bug:
                    // say so on the file's line instead of losing it.
                    Err(e) => error_line(&mut out, &name, &format!("internal error: {e}")),
                }
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(file = %name, error = %e, "skipped");
                let msg = match &e {
                    CliError::Input { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                error_line(&mut out, &name, &msg);
            }
        }
    }
    (out, failed)
}

/// Appends `{"file": ..., "error": ...}` and a newline.
fn error_line(out: &mut Vec<u8>, file: &str, error: &str) {
    let line = serde_json::to_string(&ErrorLine { file, error })
        .unwrap_or_else(|_| String::from("{\"error\":\"unprintable file name\"}"));
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
}

#[derive(Serialize)]
struct Routed<'a> {
    #[serde(flatten)]
    case: &'a Case,
    actions: &'a [Action],
}

fn route(
    config: Option<&Path>,
    mailbox: Option<&str>,
    case_id: &str,
    with_body: bool,
    input: Option<&Path>,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let config = load_config(config)?;
    let path = input.unwrap_or(Path::new("-"));
    let raw = read_input(path, 64 * 1024 * 1024)?;
    let (email, case) = config.triage.parse(&raw).map_err(|e| CliError::Input {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut actions = config.router.route(&case, mailbox);
    for a in &mut actions {
        let rendered = config
            .router
            .render(
                a,
                &crate::route::Letter::new(case_id, mailbox, &case, &email),
            )
            .map_err(anyhow::Error::from)?;
        if let Some(r) = rendered {
            a.subject = Some(r.subject);
            if with_body {
                a.body = Some(r.body);
            }
        }
    }
    serde_json::to_writer_pretty(
        &mut *out,
        &Routed {
            case: &case,
            actions: &actions,
        },
    )
    .map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(Outcome::Ok)
}

fn check_config(dir: &Path, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let config = Config::load(dir)?;
    let daemon = if dir.join("mailtriage.toml").exists() {
        let d = crate::config::DaemonConfig::load(dir)?;
        format!(", {} mailboxes", d.mailboxes.len())
    } else {
        String::new()
    };
    let cats = config.triage.keywords().categories();
    let terms: usize = cats.iter().map(|c| c.terms.len()).sum();
    writeln!(
        out,
        "{}: ok: {} flag categories, {} terms, {} routing rules, {} digests{daemon}",
        dir.display(),
        cats.len(),
        terms,
        config.router.rules.len(),
        config.router.digests.len(),
    )?;
    Ok(Outcome::Ok)
}

/// How long a command waits for the daemon's answer.
const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn cases(command: CasesCommand, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match command {
        CasesCommand::List {
            config,
            open,
            tier,
            risk_min,
            since,
            json,
        } => {
            let req = Request::List {
                open,
                tier,
                risk_min,
                since,
            };
            let value = ask(&config, req)?;
            if json {
                return print_json(&value, out);
            }
            let cases: Vec<CaseRecord> = from_answer(value)?;
            print_table(&cases, now(), out)?;
        }
        CasesCommand::Show { config, id, json } => {
            let value = ask(&config, Request::Show { id })?;
            if json {
                return print_json(&value, out);
            }
            let detail: CaseDetail = from_answer(value)?;
            print_case(&detail, now(), out)?;
        }
        CasesCommand::Resolve { config, id, note } => {
            let value = ask(
                &config,
                Request::Resolve {
                    id,
                    note: Some(note),
                },
            )?;
            let changed: Changed = from_answer(value)?;
            writeln!(out, "{}", changed.message)?;
        }
        CasesCommand::Reopen { config, id } => {
            let value = ask(&config, Request::Reopen { id })?;
            let changed: Changed = from_answer(value)?;
            writeln!(out, "{}", changed.message)?;
        }
    }
    Ok(Outcome::Ok)
}

fn digest(
    config: &Path,
    name: String,
    send_now: bool,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let value = ask(config, Request::Digest { name, send_now })?;
    match value {
        serde_json::Value::String(text) => {
            write!(out, "{text}")?;
            if !text.ends_with('\n') {
                writeln!(out)?;
            }
            Ok(Outcome::Ok)
        }
        other => print_json(&other, out),
    }
}

/// Unix seconds now.
fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Asks the daemon through its control socket; when none answers, answers
/// from the database directly. An `Err` answer (an unknown case id) is a
/// failure with exit code 1.
fn ask(dir: &Path, req: Request) -> Result<serde_json::Value, CliError> {
    let daemon = DaemonConfig::load(dir)?;
    // An operator's shell has neither RUNTIME_DIRECTORY nor STATE_DIRECTORY:
    // the shipped unit's directories are tried too.
    let mut sockets: Vec<PathBuf> = control::socket_path(&daemon).into_iter().collect();
    let unit_socket = Path::new(control::UNIT_RUNTIME_DIRECTORY).join("mailtriage.sock");
    if !sockets.contains(&unit_socket) {
        sockets.push(unit_socket);
    }
    for path in &sockets {
        match control::request(path, &req, CONTROL_TIMEOUT) {
            Ok(answer) => return answered(answer),
            Err(ControlError::NotRunning { .. }) => {
                tracing::debug!(socket = %path.display(), "no daemon answers here");
            }
            Err(e) => return Err(anyhow::Error::from(e).into()),
        }
    }
    let socket = sockets.first().cloned();
    let unit_db = Path::new(control::UNIT_STATE_DIRECTORY).join("db");
    let Some(db) = control::database_path(&daemon).or_else(|| unit_db.exists().then_some(unit_db))
    else {
        return Err(ConfigError {
            file: dir.join("mailtriage.toml"),
            at: None,
            message: "no database path: set [daemon] database, or STATE_DIRECTORY (and RUNTIME_DIRECTORY for the daemon's control socket) as the service has them".into(),
        }
        .into());
    };
    // Opening creates a database: a command must not create one where the
    // daemon has not.
    if !db.exists() {
        return Err(anyhow::anyhow!(
            "no database at {}: the daemon has not run with this config yet",
            db.display()
        )
        .into());
    }
    refuse_foreign_database(&db)?;
    let store = match Store::open(&db, daemon.daemon.cache.0) {
        Ok(s) => s,
        Err(e) if control::database_in_use(&db) => {
            let socket = socket
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(unknown)".into());
            return Err(anyhow::anyhow!(
                "the database {} is in use but the daemon's control socket at {socket} does not answer ({e})",
                db.display()
            )
            .into());
        }
        Err(e) => {
            return Err(anyhow::anyhow!("opening the database at {}: {e}", db.display()).into());
        }
    };
    let digest = direct_digest(dir, &store);
    // Changes are flushed before `handle` returns (Store::update_case).
    let answer = control::handle(&store, req, now(), &std::sync::Mutex::new(()), &digest);
    answered(answer)
}

/// Opening another user's database as root would leave files the service
/// (a `DynamicUser=`) cannot write: refused, with what to do instead.
fn refuse_foreign_database(db: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user: no libc call needed.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid());
    let owner = std::fs::metadata(db).map(|m| m.uid());
    match (me, owner) {
        (Ok(0), Ok(owner)) if owner != 0 => Err(anyhow::anyhow!(
            "the database {} belongs to uid {owner}, and opening it as root would leave files the daemon cannot write: start the daemon (the command then goes through its control socket) or run the command as that user",
            db.display()
        )
        .into()),
        _ => Ok(()),
    }
}

/// Digests when no daemon runs.
fn direct_digest<'a>(
    dir: &'a Path,
    store: &'a Store,
) -> impl Fn(&str, bool) -> Result<String, String> + 'a {
    move |name: &str, send_now: bool| {
        let config = Config::load(dir).map_err(|e| e.to_string())?;
        let daemon = DaemonConfig::load(dir).map_err(|e| e.to_string())?;
        crate::daemon::digest_command(
            &config,
            &daemon,
            store,
            name,
            send_now,
            jiff::Timestamp::now().as_second(),
        )
    }
}

fn answered(answer: Response) -> Result<serde_json::Value, CliError> {
    match answer {
        Response::Ok { value } => Ok(value),
        Response::Err { error } => Err(anyhow::anyhow!(error).into()),
    }
}

fn from_answer<T: for<'de> serde::Deserialize<'de>>(
    value: serde_json::Value,
) -> Result<T, CliError> {
    serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("unexpected answer from the daemon: {e}").into())
}

fn print_json(value: &serde_json::Value, out: &mut dyn Write) -> Result<Outcome, CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(Outcome::Ok)
}

/// `2026-11-23 14:02 UTC`.
fn utc(at: i64) -> String {
    jiff::Timestamp::from_second(at)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| format!("@{at}"))
}

/// The first `max` characters of `s` on one line, with `…` when cut.
fn one_line(s: &str, max: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Columns of `cases list`.
const LIST_HEADER: [&str; 8] = [
    "CASE", "STATUS", "TIER", "RISK", "AGE", "ORDER", "CUSTOMER", "ISSUE",
];

fn print_table(cases: &[CaseRecord], now: i64, out: &mut dyn Write) -> io::Result<()> {
    if cases.is_empty() {
        return writeln!(out, "no cases");
    }
    let dash = |v: Option<&str>, max: usize| v.map_or_else(|| "-".into(), |s| one_line(s, max));
    let rows: Vec<[String; 8]> = cases
        .iter()
        .map(|r| {
            let f = &r.case.fields;
            let issue = f
                .issue
                .as_deref()
                .or(f.issue_summary.as_deref())
                .or(r.case.subject.as_deref());
            [
                r.id.clone(),
                r.status.clone(),
                r.case.tier.to_string(),
                r.case.risk.to_string(),
                crate::text::age(now - r.received_at),
                dash(f.order_id.as_deref(), 20),
                dash(f.customer_name.as_deref(), 24),
                dash(issue, 60),
            ]
        })
        .collect();
    let mut widths = LIST_HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str], out: &mut dyn Write| -> io::Result<()> {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(&LIST_HEADER, out)?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells, out)?;
    }
    Ok(())
}

fn print_case(d: &CaseDetail, now: i64, out: &mut dyn Write) -> io::Result<()> {
    let r = &d.case;
    let c = &r.case;
    writeln!(
        out,
        "{}  {}  tier {}  risk {}",
        r.id, r.status, c.tier, c.risk
    )?;
    let kv = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {k:<12} {v}");
    kv(
        out,
        "received",
        &format!(
            "{} ({} ago), mailbox {}, uid {}",
            utc(r.received_at),
            crate::text::age(now - r.received_at),
            r.mailbox,
            r.uid
        ),
    )?;
    let from = match (&r.from_name, &c.from) {
        (Some(n), Some(a)) => format!("{n} <{a}>"),
        (None, Some(a)) => a.clone(),
        (Some(n), None) => n.clone(),
        (None, None) => "-".into(),
    };
    kv(out, "from", &from)?;
    if let Some(s) = &c.subject {
        kv(out, "subject", &one_line(s, 200))?;
    }
    if let Some(m) = &c.message_id {
        kv(out, "message-id", m)?;
    }
    let kind = serde_json::to_value(c.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", c.kind));
    kv(out, "kind", &kind)?;
    kv(out, "updated", &utc(r.updated_at))?;
    if let Some(at) = r.resolved_at {
        kv(out, "resolved", &utc(at))?;
    }
    if let Some(note) = &r.resolution {
        kv(out, "resolution", &one_line(note, 500))?;
    }
    if let Some(at) = r.overdue_at {
        kv(out, "overdue", &format!("re-escalated {}", utc(at)))?;
    }
    if let Some(f) = &r.follows {
        kv(out, "follows", f)?;
    }
    if !r.tags.is_empty() {
        let tags: Vec<String> = r.tags.iter().map(|t| format!("#{t}")).collect();
        kv(out, "tags", &tags.join(" "))?;
    }
    if !r.digests.is_empty() {
        kv(out, "digests", &r.digests.join(", "))?;
    }
    if !r.forwarded_to.is_empty() {
        kv(out, "forwarded to", &r.forwarded_to.join(", "))?;
    }

    writeln!(out, "\nFields")?;
    let mut fields: Vec<(String, String)> = crate::extract::Field::ALL
        .iter()
        .filter_map(|&f| {
            let value = match f {
                crate::extract::Field::RiskRating => c.fields.risk_rating.map(|n| n.to_string()),
                _ => c.fields.text(f).map(|v| one_line(v, 500)),
            };
            value.map(|v| (f.name().replace('_', " "), v))
        })
        .collect();
    if fields.is_empty() {
        writeln!(out, "  (none)")?;
    }
    if !c.missing.is_empty() {
        let names: Vec<String> = c
            .missing
            .iter()
            .map(|f| f.name().replace('_', " "))
            .collect();
        fields.push(("missing".into(), names.join(", ")));
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &fields {
        writeln!(out, "  {k:<width$} {v}")?;
    }

    writeln!(out, "\nFlags")?;
    if c.flags.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for f in &c.flags {
        let place = serde_json::to_value(f.place)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        writeln!(out, "  {}: {} (in {place})", f.category, f.term)?;
    }

    writeln!(out, "\nHistory")?;
    writeln!(
        out,
        "  {}  {}  opened",
        utc(r.received_at),
        c.from.as_deref().unwrap_or("-")
    )?;
    for h in &r.history {
        writeln!(out, "  {}  {}  {}", utc(h.at), h.by, h.changes.join("; "))?;
    }

    writeln!(out, "\nMessages")?;
    if d.outbox.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for i in &d.outbox {
        let state = serde_json::to_value(i.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{:?}", i.state));
        let when = match (i.state, i.sent_at) {
            (_, Some(at)) => format!(", sent {}", utc(at)),
            (crate::store::Delivery::Pending, None) => {
                format!(", next try {}", utc(i.next_attempt_at))
            }
            _ => String::new(),
        };
        writeln!(
            out,
            "  #{} {} to {}: {state}, {} attempt{}{when}",
            i.id,
            i.kind,
            i.recipients.join(", "),
            i.attempts,
            if i.attempts == 1 { "" } else { "s" },
        )?;
        if let Some(e) = &i.last_error {
            writeln!(out, "      last error: {}", one_line(e, 300))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::RunError;

    /// The exit codes the README documents: 2 means "fix the config" (the
    /// systemd unit does not restart on it), 1 any other failure.
    #[test]
    fn errors_map_to_the_documented_exit_codes() {
        let config = || ConfigError {
            file: "mailtriage.toml".into(),
            at: None,
            message: "wrong".into(),
        };
        let cases: Vec<(CliError, u8)> = vec![
            (CliError::Config(config()), 2),
            (CliError::Run(RunError::Config(config())), 2),
            (
                CliError::Run(RunError::Database {
                    path: "db".into(),
                    source: crate::store::StoreError::NoSuchItem(1),
                }),
                1,
            ),
            (
                CliError::Run(RunError::Secret("token command failed".into())),
                1,
            ),
            (
                CliError::Run(RunError::Control {
                    path: "s".into(),
                    source: io::Error::other("in use"),
                }),
                1,
            ),
            (
                CliError::Input {
                    path: "x.eml".into(),
                    message: "not an email".into(),
                },
                1,
            ),
            (CliError::Output(io::Error::other("broken pipe")), 1),
            (CliError::Other(anyhow::anyhow!("no case ESC-1")), 1),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e:?}");
        }
    }
}
