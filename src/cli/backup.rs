//! `export` and `import`: the database written out as one snapshot
//! (through the running daemon's control socket, or straight from the
//! database when no daemon runs) to a file, a dated file in a directory
//! with the oldest pruned, or standard output; and read back into an
//! empty database while no daemon runs.
//!
//! A file is written under a temporary name beside it and renamed into
//! place once the export is whole (the daemon's stream is checked line by
//! line, its end line and checksum included): a failed export never
//! leaves a file that looks like a backup.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cases::{no_database_path, open_database, sockets};
use super::{CliError, Outcome};
use crate::config::Settings;
use crate::control::{self, ControlError, Request, Response};
use crate::store::{self, Counts};

/// How long the daemon may take to answer an export: it spools the whole
/// store first.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(600);

/// The names `--out-dir` gives its files: `mailtriage-20260301T020000Z.jsonl`.
const BACKUP_PREFIX: &str = "mailtriage-";
const BACKUP_SUFFIX: &str = ".jsonl";

/// Where `export` writes.
pub(super) enum Destination {
    Stdout,
    File(PathBuf),
    /// A new dated file in the directory; then only the newest `keep`
    /// such files are kept.
    Dir {
        dir: PathBuf,
        keep: Option<usize>,
    },
}

impl Destination {
    /// From `--out FILE|-`, `--out-dir DIR` and `--keep N` (which clap
    /// allows only together as they make sense).
    pub(super) fn of(file: Option<PathBuf>, dir: Option<PathBuf>, keep: Option<u32>) -> Self {
        match (file, dir) {
            (_, Some(dir)) => Destination::Dir {
                dir,
                keep: keep.map(|k| k as usize),
            },
            (Some(f), None) if f != Path::new("-") => Destination::File(f),
            _ => Destination::Stdout,
        }
    }
}

pub(super) fn export(
    config: &Path,
    to: Destination,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let settings = Settings::load(config)?;
    let (path, keep) = match to {
        Destination::Stdout => {
            let written = write_export(config, &settings, out)?;
            warn_raw(&written);
            return Ok(Outcome::Ok);
        }
        Destination::File(path) => (path, None),
        Destination::Dir { dir, keep } => {
            std::fs::create_dir_all(&dir).map_err(|source| CliError::Write {
                path: dir.clone(),
                source,
            })?;
            (dir.join(backup_name(jiff::Timestamp::now())), keep)
        }
    };
    let written = write_file(&path, |file| write_export(config, &settings, file))?;
    warn_raw(&written);
    writeln!(
        out,
        "exported {} records ({}) to {}",
        written.records,
        summary(&written.counts),
        path.display()
    )?;
    if let (Some(keep), Some(dir)) = (keep, path.parent()) {
        for old in prune(dir, keep)? {
            writeln!(out, "removed the older backup {}", old.display())?;
        }
    }
    Ok(Outcome::Ok)
}

/// What an export wrote.
struct Written {
    records: u64,
    counts: Counts,
}

/// The export, from the daemon if one answers, else from the database.
fn write_export(
    config: &Path,
    settings: &Settings,
    out: &mut dyn Write,
) -> Result<Written, CliError> {
    let sockets = sockets(settings);
    for path in &sockets {
        match control::request_stream(path, &Request::Export, EXPORT_TIMEOUT) {
            Ok((Response::Ok { .. }, stream)) => {
                let checked = store::copy_checked(stream, out).map_err(CliError::ExportStream)?;
                return Ok(Written {
                    records: checked.records,
                    counts: checked.header.counts,
                });
            }
            Ok((Response::Err { error }, _)) => return Err(CliError::Refused(error)),
            Err(ControlError::NotRunning { .. }) => {
                tracing::debug!(socket = %path.display(), "no daemon answers here");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (store, _) = open_database(config, settings)?;
    let snapshot = store.snapshot(jiff::Timestamp::now())?;
    let counts = snapshot.header().counts.clone();
    let end = snapshot.write_to(out)?;
    Ok(Written {
        records: end.records,
        counts,
    })
}

/// Runs `fill` on a temporary file beside `path` (owner-only: a backup
/// holds customer data), then syncs it and renames it to `path`.
fn write_file<T>(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let write_err = |source: io::Error| CliError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".mailtriage-export-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(write_err)?;
    let mut w = BufWriter::with_capacity(1 << 20, temp);
    // A failure drops the temporary file, which removes it.
    let value = fill(&mut w)?;
    let temp = w.into_inner().map_err(|e| write_err(e.into_error()))?;
    temp.as_file().sync_all().map_err(write_err)?;
    temp.persist(path).map_err(|e| write_err(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)?;
    Ok(value)
}

/// `mailtriage-20260301T020000Z.jsonl`: sorts by time.
fn backup_name(at: jiff::Timestamp) -> String {
    format!(
        "{BACKUP_PREFIX}{}{BACKUP_SUFFIX}",
        at.strftime("%Y%m%dT%H%M%SZ")
    )
}

/// Whether `name` is one of `backup_name`'s.
fn is_backup_name(name: &str) -> bool {
    name.strip_prefix(BACKUP_PREFIX)
        .and_then(|rest| rest.strip_suffix(BACKUP_SUFFIX))
        .is_some_and(|stamp| {
            stamp.len() == 16
                && stamp.bytes().enumerate().all(|(i, b)| match i {
                    8 => b == b'T',
                    15 => b == b'Z',
                    _ => b.is_ascii_digit(),
                })
        })
}

/// Removes all but the newest `keep` backups in `dir` (by name, which
/// sorts by time; nothing else in the directory is touched); returns what
/// it removed.
fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, CliError> {
    let read_err = |source| CliError::Write {
        path: dir.to_path_buf(),
        source,
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_backup_name(n))
        .collect();
    names.sort();
    let old = names.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for name in &names[..old] {
        let path = dir.join(name);
        std::fs::remove_file(&path).map_err(|source| CliError::Write {
            path: path.clone(),
            source,
        })?;
        removed.push(path);
    }
    Ok(removed)
}

/// "3 case, 12 seen, ...".
fn summary(counts: &Counts) -> String {
    counts
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn warn_raw(written: &Written) {
    if let Some(n) = written.counts.get("raw") {
        tracing::warn!(
            entries = n,
            "the database has entries this version does not read as what their tree holds (corrupt, or written by a newer version): they are in the export as raw records, byte for byte"
        );
    }
}

pub(super) fn import(config: &Path, file: &Path, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let settings = Settings::load(config)?;
    for socket in sockets(&settings) {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(CliError::DaemonRunning(socket));
        }
    }
    // The shipped unit's database, when its state directory is there
    // (the database itself usually is not: it was moved aside).
    let unit_state = Path::new(control::UNIT_STATE_DIRECTORY);
    let Some(db) = control::database_path(&settings)
        .or_else(|| unit_state.is_dir().then(|| unit_state.join("db")))
    else {
        return Err(no_database_path(config));
    };
    refuse_foreign_target(&db)?;
    let input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).map_err(|e| CliError::Input {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    let imported =
        store::import(&db, settings.daemon.cache.0, input, owner_for(&db)).map_err(|source| {
            CliError::Import {
                file: file.to_path_buf(),
                source,
            }
        })?;
    writeln!(
        out,
        "imported {} records ({}) into {}: exported at {} by mailtriage {}",
        imported.records,
        summary(&imported.header.counts),
        db.display(),
        imported.header.exported_at,
        imported.header.mailtriage,
    )?;
    Ok(Outcome::Ok)
}

/// As root, a database that is there and belongs to another user (the
/// service's) is not opened to see whether it is empty: opening it could
/// leave it files the service cannot write.
fn refuse_foreign_target(db: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid());
    let target = std::fs::symlink_metadata(db);
    let empty_dir = std::fs::read_dir(db).is_ok_and(|mut d| d.next().is_none());
    match (me, target) {
        (Ok(0), Ok(t)) if t.uid() != 0 && !empty_dir => Err(CliError::Refused(format!(
            "{} exists and belongs to uid {} (the service's user): import fills only an empty database, and as root does not open another user's; move it aside first: mv {} {}.old",
            db.display(),
            t.uid(),
            db.display(),
            db.display()
        ))),
        _ => Ok(()),
    }
}

/// As root, a new database belongs to whoever owns the directory it goes
/// in (the service's dynamic user owns its state directory): files root
/// left there could not be written by the service.
fn owner_for(db: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user: no libc call needed.
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    let parent = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::metadata(parent).ok()?;
    (me == 0 && dir.uid() != 0).then(|| (dir.uid(), dir.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_are_named_by_time_and_only_they_are_pruned() {
        let at: jiff::Timestamp = "2026-03-01T02:00:09Z".parse().unwrap();
        assert_eq!(backup_name(at), "mailtriage-20260301T020009Z.jsonl");
        for (name, is) in [
            ("mailtriage-20260301T020009Z.jsonl", true),
            ("mailtriage-20260301T020009Z.jsonl.tmp", false),
            (".mailtriage-export-abc.tmp", false),
            ("mailtriage-2026-03-01.jsonl", false),
            ("mailtriage-20260301X020009Z.jsonl", false),
            ("notes.jsonl", false),
        ] {
            assert_eq!(is_backup_name(name), is, "{name}");
        }

        let dir = tempfile::tempdir().unwrap();
        let day = |d: u32| format!("mailtriage-202603{d:02}T020000Z.jsonl");
        for d in [3, 1, 4, 2, 5] {
            std::fs::write(dir.path().join(day(d)), "x").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let removed = prune(dir.path(), 3).unwrap();
        assert_eq!(removed, [dir.path().join(day(1)), dir.path().join(day(2))]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [day(3), day(4), day(5), "notes.txt".into()]);
        assert!(prune(dir.path(), 3).unwrap().is_empty());
    }
}
