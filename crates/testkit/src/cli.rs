//! The mailtriage binary run as an operator runs it: `mailtriage ARGS
//! --config DIR`, without the systemd directories and the log filter of
//! the test's own environment (a test run under systemd, or with RUST_LOG
//! set, must see what an operator's shell sees).

use std::path::Path;
use std::process::{Command, Output};

/// Runs `bin ARGS --config DIR`; `bin` is the test's
/// `env!("CARGO_BIN_EXE_mailtriage")`.
pub fn run_cli(bin: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .arg("--config")
        .arg(dir)
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// The standard output of [`run_cli`], which must exit 0 (else the panic
/// shows both outputs).
pub fn cli_ok(bin: &str, dir: &Path, args: &[&str]) -> String {
    let out = run_cli(bin, dir, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "mailtriage {args:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
