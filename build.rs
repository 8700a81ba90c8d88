//! Records the commit the binary is built from, for `mailtriage --version`:
//! `MAILTRIAGE_COMMIT` is the short hash, with `-dirty` when the sources
//! the binary is made of differ from that commit, or `unknown commit` when
//! the crate is not the top of a git work tree (a source tarball) or git
//! is not there. Reads the local repository only.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the binary is made of: a change here (uncommitted) makes it
/// `-dirty`, a change anywhere else does not.
const SOURCES: &[&str] = &["src", "config", "build.rs", "Cargo.toml", "Cargo.lock"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    let commit = match commit(&manifest_dir) {
        Some(c) => c,
        None => "unknown commit".to_string(),
    };
    println!("cargo:rustc-env=MAILTRIAGE_COMMIT={commit}");
}

fn commit(dir: &Path) -> Option<String> {
    // Only this crate's own repository: a tarball unpacked inside another
    // repository must not take that one's commit.
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if std::fs::canonicalize(top.trim()).ok()? != std::fs::canonicalize(dir).ok()? {
        return None;
    }
    // A new commit, a checkout or `git add` change these (in a linked
    // work tree --git-path finds them in the right git directory).
    for path in ["HEAD", "index", "packed-refs"] {
        rerun_if_changed_git_path(dir, path);
    }
    if let Some(head_ref) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        rerun_if_changed_git_path(dir, head_ref.trim());
    }
    let hash = git(dir, &["rev-parse", "--short=7", "HEAD"])?;
    // --no-optional-locks: a build must not write the index.
    let mut status = vec!["--no-optional-locks", "status", "--porcelain", "--"];
    status.extend(SOURCES);
    let changes = git(dir, &status)?;
    let dirty = if changes.trim().is_empty() {
        ""
    } else {
        "-dirty"
    };
    Some(format!("{}{dirty}", hash.trim()))
}

/// Cargo reruns a build script every time for a path that does not exist,
/// so only existing ones are watched (a ref may live in packed-refs).
fn rerun_if_changed_git_path(dir: &Path, path: &str) {
    if let Some(p) = git(
        dir,
        &["rev-parse", "--path-format=absolute", "--git-path", path],
    ) {
        let p = p.trim();
        if Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}

/// The output of a successful git command, or None.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}
