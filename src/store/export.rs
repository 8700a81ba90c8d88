//! Export and import: everything the store holds, written as one snapshot
//! in a versioned JSON Lines format (`format`), and read back into a new
//! database; one pair of functions per tree (`trees`).
//!
//! # One point in time
//!
//! sled has no snapshots, and a transaction cannot scan. So the store has
//! a write gate: every write takes it shared (the transactions of
//! [`Store::transact`], and the few writes outside one), and
//! [`Store::snapshot`] takes it exclusively while it reads every tree.
//! No write is under way while the trees are read, and none starts: what
//! is read is the database as it stood at one instant, between two
//! writes, whichever task (a mailbox, the outbox, the clock, the control
//! socket) makes them. Taking the daemon's case lock and pausing the
//! outbox instead would leave out the writes of neither (cursors set after
//! a UIDVALIDITY change, pending actions cleared, health alerts queued,
//! reply counts pruned), and would make every new writer remember it.
//!
//! The gate is held only while the records are written to a spool file
//! (an unnamed temporary file beside the database, gone when closed):
//! writers wait for as long as it takes to copy the store to local disk,
//! never for a slow reader of the export. The header (which counts the
//! records), the records and the end line (their count and a SHA-256 of
//! everything before it) are then written from the spool, the gate free.
//!
//! # A whole database or none
//!
//! [`import`] fills a new database in a directory beside the target
//! (`.NAME.import-PID`), in bounded transactions, flushes it, checks that
//! the export was whole (its end line: the counts and the checksum) and
//! that every record became an entry of its own, and only then renames it
//! into place. A failed import removes its directory; one killed midway
//! leaves that hidden directory, which nothing opens: the target never
//! holds half a database.

mod format;
mod trees;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;

pub use format::{
    Bytes, Checked, Counts, End, FORMAT, FORMAT_VERSION, FormatError, Header, Line, Reader,
    copy_checked, verify,
};

use super::{Store, StoreError, abort};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export's spool file in {}: {source}", .dir.display())]
    Spool {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<sled::Error> for ExportError {
    fn from(e: sled::Error) -> Self {
        ExportError::Store(StoreError::Db(e))
    }
}

/// Why an import failed. The target database is untouched.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error("line {line}: {message}")]
    Record { line: u64, message: String },
    #[error("the database at {} is in use by another process (a running daemon?): stop it first", .0.display())]
    InUse(PathBuf),
    #[error("the database at {} is not empty (it holds {holds}): import fills only an empty one; move it aside first", .path.display())]
    NotEmpty { path: PathBuf, holds: String },
    #[error("{} is not a database (it holds {what}): move it aside, or name another database", .path.display())]
    NotADatabase { path: PathBuf, what: String },
    #[error(
        "{records} records fill only {entries} entries of {tree}: some records repeat the key of another"
    )]
    Repeated {
        tree: &'static str,
        records: u64,
        entries: u64,
    },
    #[error("the new database: {0}")]
    Store(#[from] StoreError),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What [`import`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub header: Header,
    /// Records read.
    pub records: u64,
    /// Entries written (an outbox record is up to three).
    pub entries: u64,
}

/// The store's records at one point in time, spooled; written out, with
/// header and end line, by [`Snapshot::write_to`].
pub struct Snapshot {
    header: Header,
    records: File,
}

/// Where an export's records go while the gate is held.
struct Spool {
    out: BufWriter<File>,
    dir: PathBuf,
    counts: Counts,
}

impl Spool {
    fn emit(&mut self, line: &Line) -> Result<(), ExportError> {
        serde_json::to_writer(&mut self.out, line)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| ExportError::Spool {
                dir: self.dir.clone(),
                source,
            })?;
        *self.counts.entry(line.kind().to_string()).or_default() += 1;
        Ok(())
    }

    fn raw(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), ExportError> {
        self.emit(&Line::Raw {
            tree: tree.to_string(),
            key: Bytes(key.to_vec()),
            value: Bytes(value.to_vec()),
        })
    }
}

/// One entry an import writes.
struct Put {
    tree: &'static str,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// The largest transaction of an import, in entries and in bytes.
const CHUNK_ENTRIES: usize = 1_000;
const CHUNK_BYTES: usize = 8 << 20;

impl Store {
    /// Every record of the store at one point in time (see the module's
    /// doc), spooled beside the database; `at` is the time the header
    /// gives.
    pub fn snapshot(&self, at: Timestamp) -> Result<Snapshot, ExportError> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let spool_err = |source| ExportError::Spool {
            dir: dir.clone(),
            source,
        };
        let file = tempfile::tempfile_in(&dir).map_err(spool_err)?;
        let mut spool = Spool {
            out: BufWriter::with_capacity(1 << 20, file),
            dir: dir.clone(),
            counts: Counts::new(),
        };
        {
            // Exclusive: no write is under way, none starts (see above).
            let _gate = self
                .gate
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (_, export) in trees::EXPORTS {
                export(self, &mut spool)?;
            }
        }
        let mut records = spool
            .out
            .into_inner()
            .map_err(|e| spool_err(e.into_error()))?;
        records.rewind().map_err(spool_err)?;
        Ok(Snapshot {
            header: Header {
                format: FORMAT.into(),
                version: FORMAT_VERSION,
                mailtriage: env!("CARGO_PKG_VERSION").into(),
                exported_at: at,
                counts: spool.counts,
            },
            records,
        })
    }

    /// The trees that hold anything, with how many entries: empty when
    /// the database is.
    pub fn holdings(&self) -> Result<Vec<(&'static str, usize)>, StoreError> {
        let mut out = Vec::new();
        for (name, tree) in self.trees() {
            if !tree.is_empty() {
                out.push((name, tree.len()));
            }
        }
        Ok(out)
    }

    /// Writes one bounded batch of an import, in one transaction.
    fn put_all(&self, puts: &[Put]) -> Result<(), StoreError> {
        self.transact_unflushed(|tx| {
            for p in puts {
                let tree = tx
                    .by_name(p.tree)
                    .ok_or_else(|| abort(StoreError::NoSuchTree(p.tree)))?;
                tree.insert(p.key.as_slice(), p.value.as_slice())?;
            }
            Ok(())
        })
    }
}

impl Snapshot {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Writes the export: header, records, end line.
    pub fn write_to(self, out: &mut dyn Write) -> io::Result<End> {
        let mut records = BufReader::with_capacity(1 << 20, self.records);
        format::write(&self.header, &mut records, out)
    }
}

/// Reads the export `input` into a new database at `db`, which must not
/// exist, or be an empty directory or an empty database (one that is
/// moved aside and removed). With `owner` (uid, gid), the new database's
/// files are given to that owner before it is moved into place. See the
/// module's doc for how a failure leaves nothing behind.
pub fn import(
    db: &Path,
    cache_bytes: u64,
    input: impl BufRead,
    owner: Option<(u32, u32)>,
) -> Result<Imported, ImportError> {
    let io_err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Io { what, path, source }
    };
    let target = Target::of(db, cache_bytes)?;
    let parent = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "db".into());
    let pid = std::process::id();
    let temp = Removed(parent.join(format!(".{name}.import-{pid}")));
    if temp.0.exists() {
        std::fs::remove_dir_all(&temp.0).map_err(io_err("removing", &temp.0))?;
    }
    let imported = fill(&temp.0, cache_bytes, input)?;
    if let Some((uid, gid)) = owner {
        chown_all(&temp.0, uid, gid).map_err(io_err("giving to its owner", &temp.0))?;
    }
    if target == Target::EmptyDatabase {
        let aside = Removed(parent.join(format!(".{name}.empty-{pid}")));
        std::fs::rename(db, &aside.0).map_err(io_err("moving aside", db))?;
        std::fs::rename(&temp.0, db).map_err(io_err("moving into place", db))?;
    } else {
        // Fails, rather than replaces, if a non-empty directory appeared.
        std::fs::rename(&temp.0, db).map_err(io_err("moving into place", db))?;
    }
    File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", &parent))?;
    Ok(imported)
}

/// What is at an import's target.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// Nothing, or an empty directory: the new database is renamed onto it.
    Nothing,
    /// A database that holds nothing: moved aside first.
    EmptyDatabase,
}

impl Target {
    fn of(db: &Path, cache_bytes: u64) -> Result<Target, ImportError> {
        let meta = match std::fs::symlink_metadata(db) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Target::Nothing),
            Err(source) => {
                return Err(ImportError::Io {
                    what: "reading",
                    path: db.to_path_buf(),
                    source,
                });
            }
        };
        let not_a_db = |what: String| ImportError::NotADatabase {
            path: db.to_path_buf(),
            what,
        };
        if !meta.is_dir() {
            return Err(not_a_db("no directory".into()));
        }
        let mut names = Vec::new();
        let entries = std::fs::read_dir(db).map_err(|source| ImportError::Io {
            what: "reading",
            path: db.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        if names.is_empty() {
            return Ok(Target::Nothing);
        }
        // Only what sled keeps there: anything else is not ours to remove.
        let foreign: Vec<&String> = names
            .iter()
            .filter(|n| !matches!(n.as_str(), "conf" | "db" | "blobs") && !n.starts_with("snap."))
            .collect();
        if !foreign.is_empty() {
            return Err(not_a_db(format!("{foreign:?}")));
        }
        if Store::in_use(db) {
            return Err(ImportError::InUse(db.to_path_buf()));
        }
        let store = Store::open(db, cache_bytes)?;
        let holds = store.holdings()?;
        drop(store);
        wait_unlocked(db);
        if holds.is_empty() {
            return Ok(Target::EmptyDatabase);
        }
        let holds = holds
            .iter()
            .map(|(tree, n)| format!("{n} {tree}"))
            .collect::<Vec<_>>()
            .join(", ");
        Err(ImportError::NotEmpty {
            path: db.to_path_buf(),
            holds,
        })
    }
}

/// Reads every record of `input` into a new database at `dir`, checks the
/// whole, flushes and closes it.
fn fill(dir: &Path, cache_bytes: u64, input: impl BufRead) -> Result<Imported, ImportError> {
    let store = Store::open(dir, cache_bytes)?;
    let mut reader = Reader::new(input)?;
    let mut chunk: Vec<Put> = Vec::new();
    let mut bytes = 0;
    let mut written: BTreeMap<&'static str, u64> = BTreeMap::new();
    while let Some(line) = reader.next_record()? {
        let puts = entries_of(&store, &line).map_err(|message| ImportError::Record {
            line: reader.line(),
            message,
        })?;
        for p in puts {
            *written.entry(p.tree).or_default() += 1;
            bytes += p.key.len() + p.value.len();
            chunk.push(p);
        }
        if chunk.len() >= CHUNK_ENTRIES || bytes >= CHUNK_BYTES {
            store.put_all(&chunk)?;
            chunk.clear();
            bytes = 0;
        }
    }
    store.put_all(&chunk)?;
    store.flush()?;
    for (tree, entries) in store.trees() {
        let records = written.get(tree).copied().unwrap_or(0);
        let entries = entries.len() as u64;
        if entries != records {
            return Err(ImportError::Repeated {
                tree,
                records,
                entries,
            });
        }
    }
    // Its items' undeliverable index came whole with them: marked built,
    // as Store::open marks a database's once it has checked it.
    store.index_undeliverable_once()?;
    let imported = Imported {
        header: reader.header().clone(),
        records: reader.records(),
        entries: written.values().sum(),
    };
    drop(store);
    wait_unlocked(dir);
    Ok(imported)
}

/// The entries a record of an export becomes: a raw record's as it is,
/// into a tree of this version; any other's by [`trees::puts`].
fn entries_of(store: &Store, line: &Line) -> Result<Vec<Put>, String> {
    let Line::Raw { tree, key, value } = line else {
        return trees::puts(line);
    };
    let (tree, _) = store
        .trees()
        .into_iter()
        .find(|(name, _)| name == tree)
        .ok_or_else(|| format!("a raw record of an unknown tree {tree:?}"))?;
    Ok(vec![Put {
        tree,
        key: key.0.clone(),
        value: value.0.clone(),
    }])
}

/// sled's threads may hold the database's lock a moment after the last
/// handle is gone: waits (10 s at most) until it is free.
fn wait_unlocked(db: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Store::in_use(db) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Gives `dir` and everything under it to `uid`:`gid`.
fn chown_all(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_all(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// A directory removed when dropped, unless it was renamed away.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests;
