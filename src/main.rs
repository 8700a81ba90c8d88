#![forbid(unsafe_code)]
//! The `mailtriage` binary: arguments, logging, exit codes. The work is in the
//! library.

use std::process::ExitCode;

use clap::Parser;
use mailtriage::cli::{self, Cli, Outcome};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli::run(cli, &mut out) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::SomeInputsFailed(n)) => {
            eprintln!("mailtriage: {n} input(s) were not emails");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("mailtriage: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
