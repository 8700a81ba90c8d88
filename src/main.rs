#![forbid(unsafe_code)]
//! The `mailtriage` binary: arguments, logging, exit codes. The work is in the
//! library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use mailtriage::cli::{self, Cli, Command, LogFormat, Outcome};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli::run(cli, &mut out) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::SomeInputsFailed(n)) => {
            eprintln!("mailtriage: {n} input(s) were not emails");
            ExitCode::from(1)
        }
        // Like diff(1): the output says what differs.
        Ok(Outcome::Differ(_)) => ExitCode::from(1),
        // 0 healthy, 1 degraded, 2 cannot tell: the report says why.
        Ok(Outcome::Health(verdict)) => ExitCode::from(verdict.exit_code()),
        Err(e) => {
            eprintln!("mailtriage: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs go to standard error for the commands; the daemon logs to journald
/// under systemd, as text on a terminal, or as JSON on request. `RUST_LOG`
/// sets the level (default: info for the daemon, warn for the commands).
fn init_logging(cli: &Cli) {
    let (format, default) = match &cli.command {
        Command::Run { log_format, .. } => (*log_format, "info"),
        _ => (LogFormat::Text, "warn"),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let format = match format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let journald = (format == LogFormat::Journald)
        .then(|| tracing_journald::layer().ok())
        .flatten();
    if journald.is_some() {
        registry.with(journald).init();
    } else if format == LogFormat::Json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        // Colours only for a person at a terminal: a log file or a pipe
        // gets plain text, and so does anyone who sets NO_COLOR.
        let ansi = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .init();
    }
}
