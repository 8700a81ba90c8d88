//! The command line: `parse`, `route`, `replay`, `check-config`, `run`,
//! `cases`, `digest`, `status`, `outbox`, `export`, `import` and `oauth2
//! authorize`; `completions` and `man`; `--version`.
//!
//! Each subcommand is a function over the library that writes to a given
//! writer, so tests drive them without a process. Exit codes are part of the
//! interface: 0 ok, 1 input that is not an email (or cannot be read), or a
//! failure the user must see (an unknown case id), or messages that `replay`
//! finds changed, 2 a config or usage error; `status` exits with its
//! verdict (0 healthy, 1 degraded, 2 cannot tell).
//!
//! `cases`, `digest`, `status`, `outbox` and `export` ask the running
//! daemon through its control socket ([`crate::control`]); when no daemon
//! answers they open the database themselves. Either way the same code
//! answers ([`crate::control::handle`], or the store's snapshot for
//! `export`), so the output is the same.
//!
//! Here are the dispatch and the exit codes; the arguments are in `args`,
//! `parse` and `route` in `triage`, `replay` in `replay`, the engine the three share
//! for batches of messages in `batch`, `cases` and `digest` in `cases`
//! (with the way to the daemon or the database the others share),
//! `status` in `status` (its exit code is its verdict), `outbox` in
//! `outbox`, `export` and `import` in `backup`, `oauth2 authorize` in
//! `oauth2`, and the completion scripts and man pages in `generate`.

mod args;
mod backup;
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

use crate::config::{Config, ConfigError};

pub use args::{
    CasesCommand, Cli, Command, LogFormat, OAuth2Command, OutboxCommand, StateArg, VERSION,
};

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
    /// A file a command was asked to write (`man --dir`, `export --out`).
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
    /// `export` without a daemon: the store could not be read.
    #[error("export: {0}")]
    Export(#[from] crate::store::ExportError),
    /// `export` through the daemon: what it sent is not a whole export.
    #[error("the daemon's export: {0}")]
    ExportStream(#[source] crate::store::FormatError),
    #[error("importing {}: {source}", .file.display())]
    Import {
        file: PathBuf,
        #[source]
        source: crate::store::ImportError,
    },
    #[error("a daemon answers on {}: stop it first (systemctl stop mailtriage)", .0.display())]
    DaemonRunning(PathBuf),
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
            | CliError::ForeignDatabase { .. }
            | CliError::Export(_)
            | CliError::ExportStream(_)
            | CliError::Import { .. }
            | CliError::DaemonRunning(_) => 1,
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
        Command::Export {
            config,
            out: file,
            out_dir,
            keep,
        } => backup::export(&config, backup::Destination::of(file, out_dir, keep), out),
        Command::Import { config, file } => backup::import(&config, &file, out),
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
            (
                CliError::ExportStream(crate::store::FormatError::Truncated { line: 3 }),
                1,
            ),
            (
                CliError::Import {
                    file: "backup.jsonl".into(),
                    source: crate::store::ImportError::InUse("db".into()),
                },
                1,
            ),
            (CliError::DaemonRunning("s".into()), 1),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e:?}");
        }
    }
}
