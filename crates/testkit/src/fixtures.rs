//! The repository's files a test reads or compares with: the fixtures and
//! the golden files in `fixtures/`.

use std::fs;
use std::path::Path;

/// The mailtriage repository (this crate is its `crates/testkit`): the
/// shipped config, the fixtures, the docs.
pub(crate) fn repo_root() -> &'static Path {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR"));
    kit.parent()
        .and_then(Path::parent)
        .expect("the test kit lives in crates/testkit of the repository")
}

/// A fixture's bytes (`fixtures/NAME`).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = repo_root().join("fixtures").join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Compares `got` with the golden file `fixtures/NAME` exactly, or, with
/// `UPDATE_GOLDEN=1`, writes it (review `git diff fixtures/` before
/// committing). Returns a description of the difference, if any.
pub fn golden(name: &str, got: &str) -> Option<String> {
    let path = repo_root().join("fixtures").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).expect("golden dir");
        }
        fs::write(&path, got).expect("write golden");
        return None;
    }
    let want = fs::read_to_string(&path).unwrap_or_default();
    if want == got {
        return None;
    }
    let line = want
        .lines()
        .zip(got.lines())
        .position(|(w, g)| w != g)
        .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
    Some(format!(
        "{name} differs at line {}:\n  expected: {:?}\n  actual:   {:?}\n(UPDATE_GOLDEN=1 rewrites it; review the diff)",
        line + 1,
        want.lines().nth(line).unwrap_or("(end)"),
        got.lines().nth(line).unwrap_or("(end)")
    ))
}
