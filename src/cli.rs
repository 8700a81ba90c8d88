//! The command line: `parse`, `route`, `check-config`.
//!
//! Each subcommand is a function over the library that writes to a given
//! writer, so tests drive them without a process. Exit codes are part of the
//! interface: 0 ok, 1 input that is not an email (or cannot be read), 2 a
//! config error.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::case::Case;
use crate::config::{Config, ConfigError};
use crate::route::Action;

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
    Other(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => 2,
            CliError::Input { .. } | CliError::Output(_) | CliError::Other(_) => 1,
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
            .render(a, &case, &email, case_id, mailbox)
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
