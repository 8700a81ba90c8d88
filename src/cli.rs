//! The command line: `parse`, `route`, `replay`, `check-config`, `run`,
//! `cases` and `digest`.
//!
//! Each subcommand is a function over the library that writes to a given
//! writer, so tests drive them without a process. Exit codes are part of the
//! interface: 0 ok, 1 input that is not an email (or cannot be read), or a
//! failure the user must see (an unknown case id), or messages that `replay`
//! finds changed, 2 a config or usage error.
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
use crate::config::{Config, ConfigError, Settings};
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
    /// object. Several files, a directory (a folder of .eml files, or a
    /// Maildir with cur/ and new/) or an mbox file print one JSON object per
    /// line, each with a "file" key; a file that is not an email gets an
    /// "error" key and the rest go on.
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
    ///
    /// One file (or `-` for standard input, the default) prints one JSON
    /// object; several files, a directory or an mbox file print JSON Lines,
    /// each with a "file" key, as `parse` does.
    Route {
        /// Config directory; the built-in config when omitted.
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
        /// The mailbox the messages arrived in (for rules that match on it):
        /// one the config knows.
        #[arg(long)]
        mailbox: Option<String>,
        /// Case id to render into subjects.
        #[arg(long, default_value = "ESC-PREVIEW")]
        case_id: String,
        /// Also print each rendered message body.
        #[arg(long)]
        body: bool,
        /// Skip files larger than this many bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
        max_size: u64,
        /// Message files, directories, mbox files, or `-`.
        #[arg(value_name = "FILE")]
        inputs: Vec<PathBuf>,
    },
    /// What a config change would change: triage and route every message
    /// under both configs and print those whose kind, flags, risk, tier,
    /// missing fields or actions differ.
    ///
    /// Prints a block per changed message and a count, or with --json one
    /// JSON object per changed message (and per input that is not an email).
    /// Exits 1 when any message differs, 0 when none does.
    Replay {
        /// The new config directory.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The config directory to compare with; the built-in config when
        /// omitted.
        #[arg(long, value_name = "OLD")]
        against: Option<PathBuf>,
        /// The mailbox the messages arrived in (for rules that match on it);
        /// none when omitted.
        #[arg(long)]
        mailbox: Option<String>,
        /// Print JSON Lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Skip files larger than this many bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
        max_size: u64,
        /// Message files, directories (folders of .eml files, Maildirs),
        /// mbox files, or `-`.
        #[arg(value_name = "PATH", required = true)]
        inputs: Vec<PathBuf>,
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
    /// A usage mistake clap cannot see, such as an unknown mailbox.
    #[error("{0}")]
    Usage(String),
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
            CliError::Config(_)
            | CliError::Usage(_)
            | CliError::Run(crate::daemon::RunError::Config(_)) => 2,
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
    /// `replay`: this many messages are triaged or routed differently.
    Differ(usize),
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
            max_size,
            inputs,
        } => route(
            config.as_deref(),
            mailbox.as_deref(),
            &case_id,
            body,
            max_size,
            &inputs,
            out,
        ),
        Command::Replay {
            config,
            against,
            mailbox,
            json,
            max_size,
            inputs,
        } => replay(
            &config,
            against.as_deref(),
            mailbox.as_deref(),
            json,
            max_size,
            &inputs,
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
    crate::config::Settings::load(dir)?;
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

/// The files of the inputs, each marked when it was named on the command line
/// (only those may be mbox files), and whether the inputs are a batch
/// (several inputs, a directory, or an mbox file) rather than one message.
fn inputs_of(inputs: &[PathBuf]) -> Result<(Vec<(PathBuf, bool)>, bool), CliError> {
    if inputs.is_empty() {
        return Ok((vec![(PathBuf::from("-"), false)], false));
    }
    let mut files = Vec::new();
    let mut batch = inputs.len() > 1;
    for input in inputs {
        if input.is_dir() {
            batch = true;
            let (found, _) = expand(std::slice::from_ref(input))?;
            files.extend(found.into_iter().map(|p| (p, false)));
        } else {
            files.push((input.clone(), true));
        }
    }
    if let [(path, true)] = files.as_slice()
        && open_mbox(path).is_some()
    {
        batch = true;
    }
    Ok((files, batch))
}

/// The file opened for reading when it is an mbox file: its first line is
/// an mbox `From ` line, which no email's headers can begin with.
fn open_mbox(path: &Path) -> Option<io::BufReader<std::fs::File>> {
    use std::io::BufRead;
    if path == Path::new("-") {
        return None;
    }
    let mut reader = io::BufReader::new(std::fs::File::open(path).ok()?);
    let head = reader.fill_buf().ok()?;
    head.starts_with(b"From ").then_some(reader)
}

/// One message of a batch.
struct Item {
    /// The file, as named on the command line or found in a directory.
    path: PathBuf,
    /// Its place (from 1) in an mbox file.
    mbox_message: Option<usize>,
    /// An mbox message's bytes, or why they could not be read. `None`: the
    /// thread that triages the message reads `path`.
    raw: Option<Result<Vec<u8>, String>>,
}

impl Item {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// For people: the file, and the message's place in an mbox file.
    fn label(&self) -> String {
        match self.mbox_message {
            Some(n) => format!("{}, message {n}", self.path.display()),
            None => self.name(),
        }
    }
}

/// The messages of a batch's files, in order; an mbox file is read one
/// message at a time, as the batch asks for them.
struct Items {
    files: std::vec::IntoIter<(PathBuf, bool)>,
    max_size: u64,
    mbox: Option<Mbox>,
}

struct Mbox {
    path: PathBuf,
    messages: mail_parser::mailbox::mbox::MessageIterator<io::BufReader<std::fs::File>>,
    count: usize,
}

impl Items {
    fn new(files: Vec<(PathBuf, bool)>, max_size: u64) -> Items {
        Items {
            files: files.into_iter(),
            max_size,
            mbox: None,
        }
    }
}

impl Iterator for Items {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(mbox) = &mut self.mbox {
                let (raw, give_up) = match mbox.messages.next() {
                    None => {
                        self.mbox = None;
                        continue;
                    }
                    Some(Ok(m)) if m.contents().len() as u64 > self.max_size => (
                        Err(format!(
                            "{} bytes, larger than {}",
                            m.contents().len(),
                            self.max_size
                        )),
                        false,
                    ),
                    Some(Ok(m)) => (Ok(m.unwrap_contents()), false),
                    // A read error would only repeat: the rest of the file
                    // is given up.
                    Some(Err(e)) => (Err(format!("cannot read: {e}")), true),
                };
                mbox.count += 1;
                let item = Item {
                    path: mbox.path.clone(),
                    mbox_message: Some(mbox.count),
                    raw: Some(raw),
                };
                if give_up {
                    self.mbox = None;
                }
                return Some(item);
            }
            let (path, named) = self.files.next()?;
            if named && let Some(reader) = open_mbox(&path) {
                self.mbox = Some(Mbox {
                    path,
                    messages: mail_parser::mailbox::mbox::MessageIterator::new(reader),
                    count: 0,
                });
                continue;
            }
            return Some(Item {
                path,
                mbox_message: None,
                raw: None,
            });
        }
    }
}

/// What a batch does with one message: its bytes, or why there are none.
type Work<'a, R> = dyn Fn(&Item, Result<&[u8], String>) -> R + Sync + 'a;

/// Files per thread in one round of a batch.
const BATCH_CHUNK: usize = 256;

/// Runs `work` on every message, on every core, and hands the results to
/// `emit` in the messages' order. One round of chunks is in memory at a time.
fn batch<R: Send>(
    items: Items,
    max_size: u64,
    work: &Work<'_, R>,
    emit: &mut dyn FnMut(&Item, R) -> io::Result<()>,
) -> io::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut items = items;
    loop {
        let round: Vec<Item> = items.by_ref().take(BATCH_CHUNK * threads).collect();
        if round.is_empty() {
            return Ok(());
        }
        let results: Vec<Vec<R>> = std::thread::scope(|scope| {
            let handles: Vec<_> = round
                .chunks(BATCH_CHUNK)
                .map(|chunk| {
                    let handle = scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|item| work_on(item, max_size, work))
                            .collect::<Vec<R>>()
                    });
                    (chunk, handle)
                })
                .collect();
            handles
                .into_iter()
                .map(|(chunk, h)| {
                    h.join().unwrap_or_else(|_| {
                        // A bug, not bad input: still one result per message.
                        tracing::error!(files = chunk.len(), "triage thread panicked");
                        chunk
                            .iter()
                            .map(|item| work(item, Err(PANICKED.into())))
                            .collect()
                    })
                })
                .collect()
        });
        for (item, result) in round.iter().zip(results.into_iter().flatten()) {
            emit(item, result)?;
        }
    }
}

const PANICKED: &str = "internal error: triage panicked";

/// Reads one message and runs `work` on it; a panic (a bug) becomes the
/// message's error instead of ending the batch.
fn work_on<R>(item: &Item, max_size: u64, work: &Work<'_, R>) -> R {
    let read;
    let raw = match &item.raw {
        Some(Ok(bytes)) => Ok(bytes.as_slice()),
        Some(Err(e)) => Err(e.clone()),
        None => match read_input(&item.path, max_size) {
            Ok(bytes) => {
                read = bytes;
                Ok(read.as_slice())
            }
            Err(CliError::Input { message, .. }) => Err(message),
            Err(e) => Err(e.to_string()),
        },
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(item, raw)))
        .unwrap_or_else(|_| work(item, Err(PANICKED.into())))
}

/// A line of a batch's JSON Lines: the message's file, then `value`.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mbox_message: Option<usize>,
    #[serde(flatten)]
    value: &'a T,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mbox_message: Option<usize>,
    error: &'a str,
}

/// `value` as a JSON line tagged with the message's file.
fn json_line<T: Serialize>(item: &Item, value: &T) -> Vec<u8> {
    let name = item.name();
    let line = Line {
        file: &name,
        mbox_message: item.mbox_message,
        value,
    };
    match serde_json::to_vec(&line) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            bytes
        }
        // Writing into a Vec fails only on a serialisation bug: say so on
        // the message's line instead of losing it.
        Err(e) => error_line(item, &format!("internal error: {e}")),
    }
}

/// `{"file": ..., "error": ...}` and a newline.
fn error_line(item: &Item, error: &str) -> Vec<u8> {
    let name = item.name();
    let line = ErrorLine {
        file: &name,
        mbox_message: item.mbox_message,
        error,
    };
    let mut bytes = serde_json::to_vec(&line)
        .unwrap_or_else(|_| b"{\"error\":\"unprintable file name\"}".to_vec());
    bytes.push(b'\n');
    bytes
}

/// Runs a batch whose work yields a JSON line and whether the message
/// failed, and writes the lines.
fn json_lines(
    items: Items,
    max_size: u64,
    work: &Work<'_, (Vec<u8>, bool)>,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut failed = 0;
    batch(items, max_size, work, &mut |_, (line, bad)| {
        failed += usize::from(bad);
        out.write_all(&line)
    })?;
    out.flush()?;
    Ok(if failed == 0 {
        Outcome::Ok
    } else {
        Outcome::SomeInputsFailed(failed)
    })
}

/// A message's error line, logged.
fn failed_line(item: &Item, error: &str) -> (Vec<u8>, bool) {
    tracing::warn!(file = %item.label(), error = %error, "skipped");
    (error_line(item, error), true)
}

fn parse(
    config: Option<&Path>,
    max_size: u64,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let config = load_config(config)?;
    let (files, batched) = inputs_of(inputs)?;
    if !batched {
        let path = &files[0].0;
        let raw = read_input(path, max_size)?;
        let (_, case) = config.triage.parse(&raw).map_err(|e| CliError::Input {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        serde_json::to_writer_pretty(&mut *out, &case).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(Outcome::Ok);
    }
    let work = |item: &Item, raw: Result<&[u8], String>| match raw
        .and_then(|raw| config.triage.parse(raw).map_err(|e| e.to_string()))
    {
        Ok((_, case)) => (json_line(item, &case), false),
        Err(e) => failed_line(item, &e),
    };
    json_lines(Items::new(files, max_size), max_size, &work, out)
}

#[derive(Serialize)]
struct Routed<'a> {
    #[serde(flatten)]
    case: &'a Case,
    actions: &'a [Action],
}

/// The mailbox names a config knows, and where they come from.
struct KnownMailboxes {
    names: Vec<String>,
    from: String,
}

/// The names `--mailbox` may take with this config: the `[[mailbox]]` names
/// of its mailtriage.toml (the shipped one for the built-in config), or, in a
/// directory without one, the mailboxes its routing rules match on.
fn known_mailboxes(dir: Option<&Path>, config: &Config) -> Result<KnownMailboxes, CliError> {
    let daemon_names =
        |d: Settings| -> Vec<String> { d.mailboxes.into_iter().map(|m| m.name).collect() };
    let Some(dir) = dir else {
        return Ok(KnownMailboxes {
            names: daemon_names(Settings::builtin()?),
            from: "the [[mailbox]] names of the built-in config/mailtriage.toml".into(),
        });
    };
    let toml = dir.join("mailtriage.toml");
    if toml.exists() {
        return Ok(KnownMailboxes {
            names: daemon_names(Settings::load(dir)?),
            from: format!("the [[mailbox]] names of {}", toml.display()),
        });
    }
    let mut names: Vec<String> = Vec::new();
    for rule in &config.router.rules {
        for m in &rule.when.mailbox {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(m)) {
                names.push(m.clone());
            }
        }
    }
    let routing = dir.join("routing.toml");
    let from = if names.is_empty() {
        format!(
            "no rule of {} matches on a mailbox, and there is no {}",
            routing.display(),
            toml.display()
        )
    } else {
        format!(
            "the mailboxes the rules of {} match on, as there is no {}",
            routing.display(),
            toml.display()
        )
    };
    Ok(KnownMailboxes { names, from })
}

/// `--mailbox NAME` when some config knows it, spelled as that config spells
/// it (routing compares mailbox names without regard to case); otherwise a
/// usage error that lists the known names.
fn check_mailbox(name: &str, known: &[KnownMailboxes]) -> Result<String, CliError> {
    if let Some(found) = known
        .iter()
        .flat_map(|k| &k.names)
        .find(|n| n.eq_ignore_ascii_case(name))
    {
        return Ok(found.clone());
    }
    let mut names: Vec<&str> = Vec::new();
    for n in known.iter().flat_map(|k| &k.names) {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let from: Vec<&str> = known.iter().map(|k| k.from.as_str()).collect();
    let expected = if names.is_empty() {
        "no mailbox is known".to_string()
    } else {
        format!("expected one of {}", names.join(", "))
    };
    Err(CliError::Usage(format!(
        "--mailbox {name:?}: unknown mailbox; {expected} ({})",
        from.join("; ")
    )))
}

fn route(
    config_dir: Option<&Path>,
    mailbox: Option<&str>,
    case_id: &str,
    with_body: bool,
    max_size: u64,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let config = load_config(config_dir)?;
    let mailbox = match mailbox {
        Some(m) => Some(check_mailbox(m, &[known_mailboxes(config_dir, &config)?])?),
        None => None,
    };
    let mailbox = mailbox.as_deref();
    let (files, batched) = inputs_of(inputs)?;
    let routed = |raw: &[u8], path: &Path| -> Result<(Case, Vec<Action>), CliError> {
        let (email, case) = config.triage.parse(raw).map_err(|e| CliError::Input {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut actions = config.router.route(&case, mailbox);
        // As the daemon would write it had the message just arrived.
        let mut letter = crate::letter::Letter::new(case_id, mailbox, &case, &email);
        letter.received_at = email.date.as_deref().and_then(crate::text::parse_rfc3339);
        letter.respond_within = config.lifecycle.respond_within(case.risk);
        letter.owners = crate::letter::owners(&actions);
        for a in &mut actions {
            let rendered = config
                .router
                .render(a, &letter)
                .map_err(anyhow::Error::from)?;
            if let Some(r) = rendered {
                a.subject = Some(r.subject);
                if with_body {
                    a.body = Some(r.body);
                }
            }
        }
        Ok((case, actions))
    };
    if !batched {
        let path = &files[0].0;
        let raw = read_input(path, max_size)?;
        let (case, actions) = routed(&raw, path)?;
        serde_json::to_writer_pretty(
            &mut *out,
            &Routed {
                case: &case,
                actions: &actions,
            },
        )
        .map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(Outcome::Ok);
    }
    let work = |item: &Item, raw: Result<&[u8], String>| {
        let result = raw.and_then(|raw| {
            routed(raw, &item.path).map_err(|e| match e {
                CliError::Input { message, .. } => message,
                other => other.to_string(),
            })
        });
        match result {
            Ok((case, actions)) => {
                let line = Routed {
                    case: &case,
                    actions: &actions,
                };
                (json_line(item, &line), false)
            }
            Err(e) => failed_line(item, &e),
        }
    };
    json_lines(Items::new(files, max_size), max_size, &work, out)
}

/// What `replay` compares of a message under one config: what triage and
/// routing decide, not what the templates render.
#[derive(Debug, PartialEq, Serialize)]
struct Decided {
    kind: crate::extract::Kind,
    /// Each category and term once, in order of first appearance; where
    /// they were found is left out.
    flags: Vec<FlagTerm>,
    risk: u8,
    tier: u8,
    missing: Vec<crate::extract::Field>,
    actions: Vec<Decision>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct FlagTerm {
    category: String,
    term: String,
}

/// An action as routing decides it, before rendering.
#[derive(Debug, PartialEq, Serialize)]
struct Decision {
    #[serde(rename = "type")]
    kind: crate::route::ActionType,
    rule: String,
    to: Vec<String>,
    cc: Vec<String>,
    template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hours: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    after_hours: Vec<String>,
}

impl Decided {
    fn new(case: Case, actions: Vec<Action>) -> Decided {
        let mut flags: Vec<FlagTerm> = Vec::new();
        for f in case.flags {
            if !flags
                .iter()
                .any(|x| x.category == f.category && x.term == f.term)
            {
                flags.push(FlagTerm {
                    category: f.category,
                    term: f.term,
                });
            }
        }
        let actions = actions
            .into_iter()
            .map(|a| Decision {
                kind: a.kind,
                rule: a.rule,
                to: a.to,
                cc: a.cc,
                template: a.template,
                digest: a.digest,
                tags: a.tags,
                hours: a.hours,
                after_hours: a.after_hours,
            })
            .collect();
        Decided {
            kind: case.kind,
            flags,
            risk: case.risk,
            tier: case.tier,
            missing: case.missing,
            actions,
        }
    }

    /// The names of the parts that differ from `new`, in output order.
    fn changed(&self, new: &Decided) -> Vec<&'static str> {
        [
            ("kind", self.kind != new.kind),
            ("flags", sorted(&self.flags) != sorted(&new.flags)),
            ("risk", self.risk != new.risk),
            ("tier", self.tier != new.tier),
            ("missing", self.missing != new.missing),
            ("actions", self.actions != new.actions),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }
}

fn sorted<T: Clone + Ord>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// A message that the two configs treat differently.
#[derive(Debug, Serialize)]
struct Replayed {
    message_id: Option<String>,
    subject: Option<String>,
    old: Decided,
    new: Decided,
    changed: Vec<&'static str>,
}

/// Triages and routes one message under both configs; `None` when they
/// agree.
fn replay_one(
    new: &Config,
    old: &Config,
    mailbox: Option<&str>,
    raw: &[u8],
) -> Result<Option<Replayed>, String> {
    let email = crate::message::parse(raw).map_err(|e| e.to_string())?;
    let decide = |config: &Config| {
        let case = config.triage.case(&email);
        let actions = config.router.route(&case, mailbox);
        (
            case.message_id.clone(),
            case.subject.clone(),
            Decided::new(case, actions),
        )
    };
    let (_, _, old) = decide(old);
    let (message_id, subject, new) = decide(new);
    let changed = old.changed(&new);
    Ok((!changed.is_empty()).then_some(Replayed {
        message_id,
        subject,
        old,
        new,
        changed,
    }))
}

fn replay(
    new_dir: &Path,
    old_dir: Option<&Path>,
    mailbox: Option<&str>,
    json: bool,
    max_size: u64,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let new = Config::load(new_dir)?;
    let old = load_config(old_dir)?;
    let mailbox = match mailbox {
        Some(m) => Some(check_mailbox(
            m,
            &[
                known_mailboxes(Some(new_dir), &new)?,
                known_mailboxes(old_dir, &old)?,
            ],
        )?),
        None => None,
    };
    let mailbox = mailbox.as_deref();
    let (files, _) = inputs_of(inputs)?;
    let work = |_: &Item, raw: Result<&[u8], String>| {
        raw.and_then(|raw| replay_one(&new, &old, mailbox, raw))
    };
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let (mut messages, mut differ, mut failed) = (0usize, 0usize, 0usize);
    batch(
        Items::new(files, max_size),
        max_size,
        &work,
        &mut |item, result| match result {
            Ok(None) => {
                messages += 1;
                Ok(())
            }
            Ok(Some(r)) => {
                messages += 1;
                differ += 1;
                if json {
                    out.write_all(&json_line(item, &r))
                } else {
                    print_replayed(item, &r, &mut out)
                }
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(file = %item.label(), error = %e, "skipped");
                if json {
                    out.write_all(&error_line(item, &e))
                } else {
                    writeln!(out, "{}\n  error    {}\n", item.label(), one_line(&e, 300))
                }
            }
        },
    )?;
    if !json {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        let verb = if differ == 1 { "differs" } else { "differ" };
        write!(out, "{messages} message{}, {differ} {verb}", s(messages))?;
        if failed > 0 {
            write!(out, ", {failed} not email{}", s(failed))?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    Ok(if failed > 0 {
        Outcome::SomeInputsFailed(failed)
    } else if differ > 0 {
        Outcome::Differ(differ)
    } else {
        Outcome::Ok
    })
}

/// One changed message for people: the file and subject, then each part
/// that changed as `old -> new`; flags and actions as those removed (`-`)
/// and added (`+`).
fn print_replayed(item: &Item, r: &Replayed, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", item.label())?;
    let subject = r
        .subject
        .as_deref()
        .map_or_else(|| "(no subject)".to_string(), |s| one_line(s, 120));
    writeln!(out, "  subject  {subject}")?;
    let (old, new) = (&r.old, &r.new);
    for part in &r.changed {
        let (before, after) = match *part {
            "kind" => (snake(&old.kind), snake(&new.kind)),
            "flags" => {
                let text = |flags: &[FlagTerm]| -> Vec<String> {
                    flags
                        .iter()
                        .map(|f| format!("{} {:?}", f.category, f.term))
                        .collect()
                };
                print_lines(part, &text(&old.flags), &text(&new.flags), out)?;
                continue;
            }
            "risk" => (old.risk.to_string(), new.risk.to_string()),
            "tier" => (old.tier.to_string(), new.tier.to_string()),
            "missing" => (field_list(&old.missing), field_list(&new.missing)),
            _ => {
                let text = |actions: &[Decision]| -> Vec<String> {
                    actions.iter().map(action_text).collect()
                };
                print_lines(part, &text(&old.actions), &text(&new.actions), out)?;
                continue;
            }
        };
        writeln!(out, "  {part:<8} {before} -> {after}")?;
    }
    writeln!(out)
}

/// The entries only in the old list (`-`) and only in the new (`+`); when
/// both hold the same entries in another order, both lists.
fn print_lines(label: &str, old: &[String], new: &[String], out: &mut dyn Write) -> io::Result<()> {
    let mut lines: Vec<String> = Vec::new();
    for a in old.iter().filter(|a| !new.contains(a)) {
        lines.push(format!("- {a}"));
    }
    for a in new.iter().filter(|a| !old.contains(a)) {
        lines.push(format!("+ {a}"));
    }
    if lines.is_empty() {
        lines.push("the same, in another order:".into());
        lines.extend(old.iter().map(|a| format!("- {a}")));
        lines.extend(new.iter().map(|a| format!("+ {a}")));
    }
    for (i, line) in lines.iter().enumerate() {
        let label = if i == 0 { label } else { "" };
        writeln!(out, "  {label:<8} {line}")?;
    }
    Ok(())
}

/// An action on one line: `forward to a@x cc b@x (rule tier-2)`.
fn action_text(a: &Decision) -> String {
    use crate::route::ActionType;
    let mut s = match a.kind {
        ActionType::Reply => format!(
            "reply {} to {}",
            a.template.as_deref().unwrap_or("-"),
            a.to.join(", ")
        ),
        ActionType::Forward => {
            let mut s = format!("forward to {}", a.to.join(", "));
            if !a.cc.is_empty() {
                s.push_str(&format!(" cc {}", a.cc.join(", ")));
            }
            if let Some(t) = a.template.as_deref().filter(|t| *t != "forward") {
                s.push_str(&format!(" with {t}"));
            }
            if let Some(h) = &a.hours {
                s.push_str(&format!(" in {h} hours"));
                if !a.after_hours.is_empty() {
                    s.push_str(&format!(", after hours to {}", a.after_hours.join(", ")));
                }
            }
            s
        }
        ActionType::Digest => format!("digest {}", a.digest.as_deref().unwrap_or("-")),
        ActionType::Tag => format!("tag {}", a.tags.join(", ")),
    };
    s.push_str(&format!(" (rule {})", a.rule));
    s
}

fn field_list(fields: &[crate::extract::Field]) -> String {
    if fields.is_empty() {
        return "none".into();
    }
    let v: Vec<&str> = fields.iter().map(|f| f.name()).collect();
    v.join(", ")
}

/// A unit enum's serde name (`pickup_complaint`).
fn snake<T: Serialize + std::fmt::Debug>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{v:?}"))
}

fn check_config(dir: &Path, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let config = Config::load(dir)?;
    let daemon = if dir.join("mailtriage.toml").exists() {
        let d = crate::config::Settings::load(dir)?;
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
    let settings = Settings::load(dir)?;
    // An operator's shell has neither RUNTIME_DIRECTORY nor STATE_DIRECTORY:
    // the shipped unit's directories are tried too.
    let mut sockets: Vec<PathBuf> = control::socket_path(&settings).into_iter().collect();
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
    let Some(db) =
        control::database_path(&settings).or_else(|| unit_db.exists().then_some(unit_db))
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
    let store = match Store::open(&db, settings.daemon.cache.0) {
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
        let settings = Settings::load(dir).map_err(|e| e.to_string())?;
        crate::daemon::digest_command(
            &config,
            &settings,
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

    #[test]
    fn mailbox_names_are_checked_without_regard_to_case() {
        let known = |names: &[&str], from: &str| KnownMailboxes {
            names: names.iter().map(|n| n.to_string()).collect(),
            from: from.into(),
        };
        let cases: &[(&[KnownMailboxes], &str, Result<&str, &str>)] = &[
            (&[known(&["ops", "support"], "a")], "ops", Ok("ops")),
            (&[known(&["ops", "support"], "a")], "Support", Ok("support")),
            (
                &[known(&["ops", "support"], "a")],
                "opz",
                Err("--mailbox \"opz\": unknown mailbox; expected one of ops, support (a)"),
            ),
            (
                &[known(&["ops"], "a"), known(&["ops", "vip"], "b")],
                "VIP",
                Ok("vip"),
            ),
            (
                &[known(&["ops"], "a"), known(&["ops", "vip"], "b")],
                "x",
                Err("--mailbox \"x\": unknown mailbox; expected one of ops, vip (a; b)"),
            ),
            (
                &[known(&[], "none here")],
                "ops",
                Err("--mailbox \"ops\": unknown mailbox; no mailbox is known (none here)"),
            ),
        ];
        for (known, name, want) in cases {
            let got = check_mailbox(name, known).map_err(|e| {
                assert_eq!(e.exit_code(), 2);
                e.to_string()
            });
            assert_eq!(
                got.as_deref().map_err(String::as_str),
                *want,
                "--mailbox {name}"
            );
        }
    }

    #[test]
    fn named_mbox_files_are_split_into_their_messages() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("archive");
        std::fs::write(
            &mbox,
            "From a@example.com Mon Nov 23 10:00:00 2026\n\
             Subject: one\n\nbody\n>From here on, quoted\n\n\
             From b@example.com Mon Nov 23 10:01:00 2026\n\
             Subject: two\n\n0123456789012345678901234567890123456789\n\
             From c@example.com Mon Nov 23 10:02:00 2026\n\
             Subject: three\n\nok\n",
        )
        .unwrap();
        let eml = dir.path().join("one.eml");
        std::fs::write(&eml, "Subject: eml\n\nbody\n").unwrap();
        // Found in a directory, a file is one message whatever it begins with.
        let found = dir.path().join("found");
        std::fs::write(&found, "From a@example.com Mon Nov 23 10:00:00 2026\n").unwrap();
        let files = vec![
            (eml.clone(), true),
            (mbox.clone(), true),
            (found.clone(), false),
            (PathBuf::from("-"), true),
        ];
        type Got = (PathBuf, Option<usize>, Option<Result<String, String>>);
        let got: Vec<Got> = Items::new(files, 50)
            .map(|i| {
                let raw = i
                    .raw
                    .map(|r| r.map(|b| String::from_utf8_lossy(&b).into_owned()));
                (i.path, i.mbox_message, raw)
            })
            .collect();
        let want = vec![
            (eml, None, None),
            (
                mbox.clone(),
                Some(1),
                Some(Ok(
                    "Subject: one\n\nbody\nFrom here on, quoted\n\n".to_string()
                )),
            ),
            // Too large, and the next message is still read.
            (
                mbox.clone(),
                Some(2),
                Some(Err("55 bytes, larger than 50".to_string())),
            ),
            (
                mbox,
                Some(3),
                Some(Ok("Subject: three\n\nok\n".to_string())),
            ),
            (found, None, None),
            (PathBuf::from("-"), None, None),
        ];
        assert_eq!(got, want);
    }
}
