//! The command line: `parse`, `route`, `replay`, `check-config`, `run`,
//! `cases`, `digest`, `status`, `outbox` and `oauth2 authorize`;
//! `completions` and `man`; `--version`.
//!
//! Each subcommand is a function over the library that writes to a given
//! writer, so tests drive them without a process. Exit codes are part of the
//! interface: 0 ok, 1 input that is not an email (or cannot be read), or a
//! failure the user must see (an unknown case id), or messages that `replay`
//! finds changed, 2 a config or usage error; `status` exits with its
//! verdict (0 healthy, 1 degraded, 2 cannot tell).
//!
//! `cases`, `digest`, `status` and `outbox` ask the running daemon through
//! its control socket ([`crate::control`]); when no daemon answers they open
//! the database themselves. Either way [`crate::control::handle`] answers, so the output
//! is the same.
//!
//! Here are the arguments, the dispatch and the exit codes; `parse` and
//! `route` are in `triage`, `replay` in `replay`, the engine the three share
//! for batches of messages in `batch`, `cases` and `digest` in `cases`
//! (with the way to the daemon or the database the others share),
//! `status` in `status` (its exit code is its verdict), `outbox` in
//! `outbox`, `oauth2 authorize` in `oauth2`, and the completion scripts and man pages in `generate`.

mod batch;
mod cases;
mod generate;
mod oauth2;
mod outbox;
mod replay;
mod status;
mod triage;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// The version and the commit the binary was built from (build.rs):
/// `0.1.0 (abc1234)`, `0.1.0 (abc1234-dirty)` when its sources differed
/// from that commit, `0.1.0 (unknown commit)` when built outside git.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("MAILTRIAGE_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "mailtriage",
    version = VERSION,
    about = "Triage of customer-support escalation emails",
    long_about = "Triage of customer-support escalation emails: parse the standard \
                  escalation format, flag dangerous words, rate risk and tier, and route \
                  each case. The run command is the daemon that watches the IMAP mailboxes \
                  and sends the acknowledgements, forwards and digests; the others triage \
                  files, check a config, and look at or change the daemon's cases."
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
    /// The daemon's health at a glance: each mailbox's connection, the
    /// outbox, the digests, the database, the daemon.
    ///
    /// Asks the running daemon; when none answers, reads the database and
    /// says so. Exits 0 when healthy, 1 when degraded (the daemon not
    /// running, a mailbox down, mail retrying longer than `[daemon]
    /// alert_after`, anything undeliverable), 2 when it cannot tell (no
    /// daemon answers and the database cannot be read, or the answer
    /// cannot be read): a monitoring check can run it as it is.
    Status {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The mail waiting to go out, and what was given up: list, show,
    /// retry and drop items, through the running daemon's control socket,
    /// or in the database when no daemon runs.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// OAuth 2.0 grants of the mailboxes and the SMTP server.
    Oauth2 {
        #[command(subcommand)]
        command: OAuth2Command,
    },
    /// Print the completion script for a shell.
    ///
    /// The Debian package installs them for bash, zsh and fish; elsewhere,
    /// e.g. `mailtriage completions bash > /etc/bash_completion.d/mailtriage`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one for each command into a directory.
    ///
    /// `mailtriage man | man -l -` shows it; the Debian package installs
    /// the pages.
    Man {
        /// Write mailtriage.1 and a page for each command
        /// (mailtriage-run.1, mailtriage-cases-list.1, ...) here, and print
        /// their paths.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `mailtriage outbox ...`.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Items oldest first: pending, retrying and undeliverable unless
    /// --state says otherwise; a table, or JSON with --json.
    List {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Only items in this state: pending, retrying, sent,
        /// undeliverable, dropped, or all (repeatable).
        #[arg(long = "state", value_name = "STATE", value_enum)]
        states: Vec<StateArg>,
        /// Print a JSON array of the items.
        #[arg(long)]
        json: bool,
    },
    /// One item: its state, attempts, error, history and headers.
    Show {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The item's number, as `outbox list` shows it.
        id: u64,
        /// Print the item as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send an item (not sent yet) at once, with its attempts counted
    /// afresh; or every undeliverable one.
    Retry {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        #[arg(required_unless_present = "all_undeliverable")]
        id: Option<u64>,
        /// Retry every undeliverable item.
        #[arg(long, conflicts_with = "id")]
        all_undeliverable: bool,
    },
    /// Give up an item not sent yet: it is never sent, and kept as
    /// dropped.
    Drop {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        id: u64,
    },
}

/// `outbox list --state`: where an item stands, or every state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateArg {
    Pending,
    Retrying,
    Sent,
    Undeliverable,
    Dropped,
    All,
}

impl StateArg {
    fn states(self) -> Vec<crate::outbox::QueueState> {
        use crate::outbox::QueueState;
        match self {
            StateArg::Pending => vec![QueueState::Pending],
            StateArg::Retrying => vec![QueueState::Retrying],
            StateArg::Sent => vec![QueueState::Sent],
            StateArg::Undeliverable => vec![QueueState::Undeliverable],
            StateArg::Dropped => vec![QueueState::Dropped],
            StateArg::All => QueueState::ALL.to_vec(),
        }
    }
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
        since: Option<jiff::Timestamp>,
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
fn parse_since(s: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    if s.len() == 10
        && let Ok(d) = s.parse::<jiff::civil::Date>()
        && let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp());
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
/// `mailtriage oauth2 ...`.
#[derive(Debug, Subcommand)]
pub enum OAuth2Command {
    /// Give a user's consent for a refresh-token grant, and store the
    /// refresh token in the state directory for the daemon.
    ///
    /// Prints the provider's consent page (with PKCE and a state). Open it,
    /// sign in as the mailbox's user and consent; the browser is then sent
    /// to the redirect URI with a code. Paste that address (or the code)
    /// back, or, with --listen, let the command take the redirect itself on
    /// 127.0.0.1. The code is exchanged at the token endpoint and the
    /// refresh token stored (oauth2/ beside the database, mode 0600). Run
    /// it as the user the daemon runs as.
    Authorize {
        /// Config directory: its mailtriage.toml has the grant and names
        /// the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The mailbox whose grant to authorize, or `smtp` for `[smtp]`'s.
        #[arg(value_name = "NAME")]
        name: String,
        /// Take the browser's redirect on http://127.0.0.1:PORT/ instead
        /// of reading the pasted address.
        #[arg(long)]
        listen: bool,
        /// The port for --listen (0: any free one; the provider must
        /// accept any loopback port, as Google's desktop clients and
        /// Microsoft's public clients do).
        #[arg(long, value_name = "PORT", default_value_t = 0, requires = "listen")]
        port: u16,
        /// The redirect URI registered with the provider, when pasting
        /// (default: http://127.0.0.1/).
        #[arg(long, value_name = "URI", conflicts_with = "listen")]
        redirect_uri: Option<String>,
    },
}

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
    /// A file a command was asked to write (`man --dir`).
    #[error("writing {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Run(#[from] crate::daemon::RunError),
    #[error("starting the runtime: {0}")]
    Runtime(#[source] io::Error),
    /// `route`: a template failed on a message.
    #[error(transparent)]
    Render(#[from] crate::route::RenderError),
    /// The daemon's control socket is there but the exchange failed.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// The daemon (or the database) refused: an unknown case id, a case
    /// already resolved, an unknown digest.
    #[error("{0}")]
    Refused(String),
    #[error("unexpected answer from the daemon: {0}")]
    UnexpectedAnswer(#[source] serde_json::Error),
    /// Opening would create a database where the daemon has none.
    #[error("no database at {}: the daemon has not run with this config yet", .0.display())]
    NoDatabase(PathBuf),
    #[error("the database {} is in use but the daemon's control socket at {socket} does not answer ({source})", .db.display())]
    DatabaseInUse {
        db: PathBuf,
        socket: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("opening the database at {}: {source}", .db.display())]
    Database {
        db: PathBuf,
        #[source]
        source: crate::store::StoreError,
    },
    /// Root opening a database the service owns would leave files it
    /// cannot write.
    #[error("the database {} belongs to uid {owner}, and opening it as root would leave files the daemon cannot write: start the daemon (the command then goes through its control socket) or run the command as that user", .db.display())]
    ForeignDatabase { db: PathBuf, owner: u32 },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_)
            | CliError::Usage(_)
            | CliError::Run(crate::daemon::RunError::Config(_)) => 2,
            CliError::Input { .. }
            | CliError::Output(_)
            | CliError::Write { .. }
            | CliError::Run(_)
            | CliError::Runtime(_)
            | CliError::Render(_)
            | CliError::Control(_)
            | CliError::Refused(_)
            | CliError::UnexpectedAnswer(_)
            | CliError::NoDatabase(_)
            | CliError::DatabaseInUse { .. }
            | CliError::Database { .. }
            | CliError::ForeignDatabase { .. } => 1,
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
    /// `status`: the verdict, which is the exit status.
    Health(crate::health::Verdict),
}

pub fn run(cli: Cli, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match cli.command {
        Command::Parse {
            config,
            max_size,
            inputs,
        } => triage::parse(config.as_deref(), max_size, &inputs, out),
        Command::Route {
            config,
            mailbox,
            case_id,
            body,
            max_size,
            inputs,
        } => triage::route(
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
        } => replay::replay(
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
        Command::Cases { command } => cases::cases(command, out),
        Command::Digest {
            config,
            name,
            preview: _,
            send_now,
        } => cases::digest(&config, name, send_now, out),
        Command::Status { config, json } => status::status(&config, json, out),
        Command::Outbox { command } => outbox::outbox(command, out),
        Command::Oauth2 {
            command:
                OAuth2Command::Authorize {
                    config,
                    name,
                    listen,
                    port,
                    redirect_uri,
                },
        } => oauth2::authorize(
            &oauth2::Authorize {
                config: &config,
                name: &name,
                listen: listen.then_some(port),
                redirect_uri: redirect_uri.as_deref(),
            },
            &mut io::stdin().lock(),
            out,
        ),
        Command::Completions { shell } => generate::completions(shell, out),
        Command::Man { dir } => generate::man(dir.as_deref(), out),
    }
}

fn run_daemon(dir: &Path) -> Result<Outcome, CliError> {
    // Config mistakes are found before anything starts, with exit code 2.
    Config::load(dir)?;
    crate::config::Settings::load(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
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

fn check_config(dir: &Path, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let config = Config::load(dir)?;
    let daemon = if dir.join("mailtriage.toml").exists() {
        let d = crate::config::Settings::load(dir)?;
        config.check_mailboxes(dir, &d)?;
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

/// A table as `cases list` and `outbox list` print it: the header, then
/// the rows, each column as wide as its widest cell and two spaces from the
/// next, no space at the end of a line.
fn write_table<const N: usize>(
    out: &mut dyn Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut s = String::new();
        for (cell, w) in cells.zip(widths) {
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(&mut header.iter().copied())?;
    for row in rows {
        line(&mut row.iter().map(String::as_str))?;
    }
    Ok(())
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
            (
                CliError::Write {
                    path: "man/mailtriage.1".into(),
                    source: io::Error::other("read-only"),
                },
                1,
            ),
            (CliError::Refused("no case ESC-1".into()), 1),
            (CliError::Runtime(io::Error::other("no threads")), 1),
            (
                CliError::Render(crate::route::RenderError {
                    name: "ack".into(),
                    source: minijinja::Error::new(minijinja::ErrorKind::UndefinedError, "x"),
                }),
                1,
            ),
            (
                CliError::Control(crate::control::ControlError::NotRunning { path: "s".into() }),
                1,
            ),
            (
                CliError::UnexpectedAnswer(serde_json::from_str::<u8>("[]").unwrap_err()),
                1,
            ),
            (CliError::NoDatabase("db".into()), 1),
            (
                CliError::DatabaseInUse {
                    db: "db".into(),
                    socket: "s".into(),
                    source: crate::store::StoreError::NoSuchItem(1),
                },
                1,
            ),
            (
                CliError::Database {
                    db: "db".into(),
                    source: crate::store::StoreError::NoSuchItem(1),
                },
                1,
            ),
            (
                CliError::ForeignDatabase {
                    db: "db".into(),
                    owner: 1000,
                },
                1,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e:?}");
        }
    }
}
