//! The archive file: the resolved cases the retention pass removed from the
//! database, one [`ArchivedCase`] a line (JSON Lines), appended and synced
//! to disk before the cases are removed. A crash between the two archives
//! those cases again at the next pass, so a case may have more than one
//! line; they hold the same case, and [`find_archived`] reads the last.
//! The file is the operator's to keep, rotate or move; the daemon only
//! appends to it (mode 0600: it holds what agents wrote about customers).

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::outbox::OutboxItem;
use crate::record::CaseRecord;

use super::StoreError;

/// The format of the lines this version writes.
pub const ARCHIVE_FORMAT: u32 = 1;

/// One line of the archive: a case as it was when it was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedCase {
    /// The line's format ([`ARCHIVE_FORMAT`]).
    pub archive: u32,
    pub case_id: String,
    #[serde(with = "crate::clock::seconds")]
    pub archived_at: Timestamp,
    pub case: CaseRecord,
    /// The mail queued for the case, without its bytes.
    pub outbox: Vec<OutboxItem>,
}

/// Appends `cases` to the archive at `path` (created 0600 if missing) and
/// syncs it, and its directory when the file is new, to disk.
pub(super) fn append(path: &Path, cases: &[ArchivedCase]) -> Result<(), StoreError> {
    if cases.is_empty() {
        return Ok(());
    }
    let failed = |source| StoreError::Archive {
        path: path.to_path_buf(),
        source,
    };
    let new = !path.exists();
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(failed)?
    };
    let mut lines = Vec::new();
    // A line cut short by a crash while it was written must not swallow
    // the next one.
    if file.seek(SeekFrom::End(0)).map_err(failed)? > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1)).map_err(failed)?;
        file.read_exact(&mut last).map_err(failed)?;
        if last[0] != b'\n' {
            lines.push(b'\n');
        }
    }
    for case in cases {
        // Plain data with string keys: serialising it cannot fail.
        serde_json::to_writer(&mut lines, case).map_err(|e| failed(e.into()))?;
        lines.push(b'\n');
    }
    file.write_all(&lines).map_err(failed)?;
    file.sync_data().map_err(failed)?;
    if new && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
    }
    Ok(())
}

/// An archived case and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub case: ArchivedCase,
    /// Its line in the file, from 1.
    pub line: usize,
}

/// Why the archive could not be searched.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the archive {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: not an archived case: {source}", .path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// The last line of the archive at `path` that holds case `id`; `None`
/// when there is none, or no archive yet.
pub fn find_archived(path: &Path, id: &str) -> Result<Option<Found>, ArchiveError> {
    let read_failed = |source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_failed(e)),
    };
    // Serialised as the line writes it, so a plain search finds it before
    // the line is parsed.
    let needle = format!("\"case_id\":{}", serde_json::Value::from(id));
    let mut reader = std::io::BufReader::new(file);
    let mut buf = Vec::new();
    let (mut found, mut corrupt) = (None, None);
    let mut line = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(read_failed)? == 0 {
            break;
        }
        line += 1;
        if !std::str::from_utf8(&buf).is_ok_and(|s| s.contains(&needle)) {
            continue;
        }
        match serde_json::from_slice::<ArchivedCase>(&buf) {
            Ok(case) if case.case_id == id => found = Some(Found { case, line }),
            Ok(_) => {}
            // A line cut short by a crash: its case was archived again.
            Err(source) => corrupt = Some((line, source)),
        }
    }
    match (found, corrupt) {
        (Some(f), _) => Ok(Some(f)),
        (None, Some((line, source))) => Err(ArchiveError::Corrupt {
            path: path.to_path_buf(),
            line,
            source,
        }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::super::fixtures::{case_record, ts};
    use super::super::{Store, StoreError};
    use super::{ARCHIVE_FORMAT, ArchiveError, ArchivedCase, append, find_archived};

    #[test]
    fn lines_are_appended_private_and_found_after_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let path = dir.path().join("archive.jsonl");
        let line = |n: u32| {
            let case = case_record(&store, n);
            ArchivedCase {
                archive: ARCHIVE_FORMAT,
                case_id: case.id.clone(),
                archived_at: ts(1_000),
                case,
                outbox: vec![],
            }
        };
        let (a, b) = (line(1), line(2));
        assert_eq!(
            find_archived(&path, &a.case_id).unwrap(),
            None,
            "no file yet"
        );
        append(&path, std::slice::from_ref(&a)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A crash while a line was written: cut short, no line break.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(format!("{{\"archive\":1,\"case_id\":\"{}\",\"arch", b.case_id).as_bytes())
            .unwrap();
        drop(f);
        let e = find_archived(&path, &b.case_id).unwrap_err();
        assert!(matches!(e, ArchiveError::Corrupt { line: 2, .. }), "{e}");
        // Archived again at the next pass: on a line of its own.
        append(&path, &[b.clone(), a.clone()]).unwrap();
        let found = find_archived(&path, &b.case_id).unwrap().unwrap();
        assert_eq!((found.line, &found.case), (3, &b));
        let found = find_archived(&path, &a.case_id).unwrap().unwrap();
        assert_eq!(found.line, 4, "the last line of a case");
        assert_eq!(find_archived(&path, "ESC-2026-999999").unwrap(), None);
        let e = append(&dir.path().join("no/such/dir.jsonl"), &[a]).unwrap_err();
        assert!(matches!(e, StoreError::Archive { .. }), "{e}");
    }
}
