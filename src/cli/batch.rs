//! The batch engine of `parse`, `route` and `replay`: the inputs (files,
//! folders of .eml files, Maildirs, mbox files, standard input) read one
//! message at a time, triaged on every core, and written in order, as JSON
//! Lines or by the command.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{CliError, Outcome};

pub(super) fn read_input(path: &Path, max_size: u64) -> Result<Vec<u8>, CliError> {
    let err = |message: String| CliError::Input {
        path: path.display().to_string(),
        message,
    };
    if path == Path::new("-") {
        let mut buf = Vec::new();
        io::stdin()
            .take(max_size + 1)
            .read_to_end(&mut buf)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        if buf.len() as u64 > max_size {
            return Err(err(format!("larger than {max_size} bytes")));
        }
        return Ok(buf);
    }
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.len() > max_size {
        return Err(err(format!("{} bytes, larger than {max_size}", meta.len())));
    }
    std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))
}

/// Expands directories: a Maildir's cur/ and new/, or a folder's .eml files
/// (all files when the folder itself is a Maildir's cur/ or new/).
fn expand(inputs: &[PathBuf]) -> Result<(Vec<PathBuf>, bool), CliError> {
    if inputs.is_empty() {
        return Ok((vec![PathBuf::from("-")], false));
    }
    let mut files = Vec::new();
    let mut batch = inputs.len() > 1;
    for input in inputs {
        if !input.is_dir() {
            files.push(input.clone());
            continue;
        }
        batch = true;
        let list = |dir: &Path, all: bool| -> Result<Vec<PathBuf>, CliError> {
            let rd = std::fs::read_dir(dir).map_err(|e| CliError::Input {
                path: dir.display().to_string(),
                message: format!("cannot list: {e}"),
            })?;
            let mut v: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
                })
                .filter(|p| {
                    all || p
                        .extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| e.eq_ignore_ascii_case("eml"))
                })
                .collect();
            v.sort();
            Ok(v)
        };
        let (cur, new) = (input.join("cur"), input.join("new"));
        if cur.is_dir() || new.is_dir() {
            for d in [cur, new] {
                if d.is_dir() {
                    files.extend(list(&d, true)?);
                }
            }
        } else {
            let name = input.file_name().and_then(|n| n.to_str());
            let all = matches!(name, Some("cur") | Some("new"));
            files.extend(list(input, all)?);
        }
    }
    Ok((files, batch))
}

/// The files of the inputs, each marked when it was named on the command line
/// (only those may be mbox files), and whether the inputs are a batch
/// (several inputs, a directory, or an mbox file) rather than one message.
pub(super) fn inputs_of(inputs: &[PathBuf]) -> Result<(Vec<(PathBuf, bool)>, bool), CliError> {
    if inputs.is_empty() {
        return Ok((vec![(PathBuf::from("-"), false)], false));
    }
    let mut files = Vec::new();
    let mut batch = inputs.len() > 1;
    for input in inputs {
        if input.is_dir() {
            batch = true;
            let (found, _) = expand(std::slice::from_ref(input))?;
            files.extend(found.into_iter().map(|p| (p, false)));
        } else {
            files.push((input.clone(), true));
        }
    }
    if let [(path, true)] = files.as_slice()
        && open_mbox(path).is_some()
    {
        batch = true;
    }
    Ok((files, batch))
}

/// The file opened for reading when it is an mbox file: its first line is
/// an mbox `From ` line, which no email's headers can begin with.
fn open_mbox(path: &Path) -> Option<io::BufReader<std::fs::File>> {
    use std::io::BufRead;
    if path == Path::new("-") {
        return None;
    }
    let mut reader = io::BufReader::new(std::fs::File::open(path).ok()?);
    let head = reader.fill_buf().ok()?;
    head.starts_with(b"From ").then_some(reader)
}

/// One message of a batch.
pub(super) struct Item {
    /// The file, as named on the command line or found in a directory.
    pub(super) path: PathBuf,
    /// Its place (from 1) in an mbox file.
    mbox_message: Option<usize>,
    /// An mbox message's bytes, or why they could not be read. `None`: the
    /// thread that triages the message reads `path`.
    raw: Option<Result<Vec<u8>, String>>,
}

impl Item {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// For people: the file, and the message's place in an mbox file.
    pub(super) fn label(&self) -> String {
        match self.mbox_message {
            Some(n) => format!("{}, message {n}", self.path.display()),
            None => self.name(),
        }
    }
}

/// The messages of a batch's files, in order; an mbox file is read one
/// message at a time, as the batch asks for them.
pub(super) struct Items {
    files: std::vec::IntoIter<(PathBuf, bool)>,
    max_size: u64,
    mbox: Option<Mbox>,
}

struct Mbox {
    path: PathBuf,
    messages: mail_parser::mailbox::mbox::MessageIterator<io::BufReader<std::fs::File>>,
    count: usize,
}

impl Items {
    pub(super) fn new(files: Vec<(PathBuf, bool)>, max_size: u64) -> Items {
        Items {
            files: files.into_iter(),
            max_size,
            mbox: None,
        }
    }
}

impl Iterator for Items {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(mbox) = &mut self.mbox {
                let (raw, give_up) = match mbox.messages.next() {
                    None => {
                        self.mbox = None;
                        continue;
                    }
                    Some(Ok(m)) if m.contents().len() as u64 > self.max_size => (
                        Err(format!(
                            "{} bytes, larger than {}",
                            m.contents().len(),
                            self.max_size
                        )),
                        false,
                    ),
                    Some(Ok(m)) => (Ok(m.unwrap_contents()), false),
                    // A read error would only repeat: the rest of the file
                    // is given up.
                    Some(Err(e)) => (Err(format!("cannot read: {e}")), true),
                };
                mbox.count += 1;
                let item = Item {
                    path: mbox.path.clone(),
                    mbox_message: Some(mbox.count),
                    raw: Some(raw),
                };
                if give_up {
                    self.mbox = None;
                }
                return Some(item);
            }
            let (path, named) = self.files.next()?;
            if named && let Some(reader) = open_mbox(&path) {
                self.mbox = Some(Mbox {
                    path,
                    messages: mail_parser::mailbox::mbox::MessageIterator::new(reader),
                    count: 0,
                });
                continue;
            }
            return Some(Item {
                path,
                mbox_message: None,
                raw: None,
            });
        }
    }
}

/// What a batch does with one message: its bytes, or why there are none.
pub(super) type Work<'a, R> = dyn Fn(&Item, Result<&[u8], String>) -> R + Sync + 'a;

/// Files per thread in one round of a batch.
const BATCH_CHUNK: usize = 256;

/// Runs `work` on every message, on every core, and hands the results to
/// `emit` in the messages' order. One round of chunks is in memory at a time.
pub(super) fn batch<R: Send>(
    items: Items,
    max_size: u64,
    work: &Work<'_, R>,
    emit: &mut dyn FnMut(&Item, R) -> io::Result<()>,
) -> io::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut items = items;
    loop {
        let round: Vec<Item> = items.by_ref().take(BATCH_CHUNK * threads).collect();
        if round.is_empty() {
            return Ok(());
        }
        let results: Vec<Vec<R>> = std::thread::scope(|scope| {
            let handles: Vec<_> = round
                .chunks(BATCH_CHUNK)
                .map(|chunk| {
                    let handle = scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|item| work_on(item, max_size, work))
                            .collect::<Vec<R>>()
                    });
                    (chunk, handle)
                })
                .collect();
            handles
                .into_iter()
                .map(|(chunk, h)| {
                    h.join().unwrap_or_else(|_| {
                        // A bug, not bad input: still one result per message.
                        tracing::error!(files = chunk.len(), "triage thread panicked");
                        chunk
                            .iter()
                            .map(|item| work(item, Err(PANICKED.into())))
                            .collect()
                    })
                })
                .collect()
        });
        for (item, result) in round.iter().zip(results.into_iter().flatten()) {
            emit(item, result)?;
        }
    }
}

const PANICKED: &str = "internal error: triage panicked";

/// Reads one message and runs `work` on it; a panic (a bug) becomes the
/// message's error instead of ending the batch.
fn work_on<R>(item: &Item, max_size: u64, work: &Work<'_, R>) -> R {
    let read;
    let raw = match &item.raw {
        Some(Ok(bytes)) => Ok(bytes.as_slice()),
        Some(Err(e)) => Err(e.clone()),
        None => match read_input(&item.path, max_size) {
            Ok(bytes) => {
                read = bytes;
                Ok(read.as_slice())
            }
            Err(CliError::Input { message, .. }) => Err(message),
            Err(e) => Err(e.to_string()),
        },
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(item, raw)))
        .unwrap_or_else(|_| work(item, Err(PANICKED.into())))
}

/// A line of a batch's JSON Lines: the message's file, then `value`.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mbox_message: Option<usize>,
    #[serde(flatten)]
    value: &'a T,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mbox_message: Option<usize>,
    error: &'a str,
}

/// `value` as a JSON line tagged with the message's file.
pub(super) fn json_line<T: Serialize>(item: &Item, value: &T) -> Vec<u8> {
    let name = item.name();
    let line = Line {
        file: &name,
        mbox_message: item.mbox_message,
        value,
    };
    match serde_json::to_vec(&line) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            bytes
        }
        // Writing into a Vec fails only on a serialisation bug: say so on
        // the message's line instead of losing it.
        Err(e) => error_line(item, &format!("internal error: {e}")),
    }
}

/// `{"file": ..., "error": ...}` and a newline.
pub(super) fn error_line(item: &Item, error: &str) -> Vec<u8> {
    let name = item.name();
    let line = ErrorLine {
        file: &name,
        mbox_message: item.mbox_message,
        error,
    };
    let mut bytes = serde_json::to_vec(&line)
        .unwrap_or_else(|_| b"{\"error\":\"unprintable file name\"}".to_vec());
    bytes.push(b'\n');
    bytes
}

/// Runs a batch whose work yields a JSON line and whether the message
/// failed, and writes the lines.
pub(super) fn json_lines(
    items: Items,
    max_size: u64,
    work: &Work<'_, (Vec<u8>, bool)>,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut failed = 0;
    batch(items, max_size, work, &mut |_, (line, bad)| {
        failed += usize::from(bad);
        out.write_all(&line)
    })?;
    out.flush()?;
    Ok(if failed == 0 {
        Outcome::Ok
    } else {
        Outcome::SomeInputsFailed(failed)
    })
}

/// A message's error line, logged.
pub(super) fn failed_line(item: &Item, error: &str) -> (Vec<u8>, bool) {
    tracing::warn!(file = %item.label(), error = %error, "skipped");
    (error_line(item, error), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_mbox_files_are_split_into_their_messages() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("archive");
        std::fs::write(
            &mbox,
            "From a@example.com Mon Nov 23 10:00:00 2026\n\
             Subject: one\n\nbody\n>From here on, quoted\n\n\
             From b@example.com Mon Nov 23 10:01:00 2026\n\
             Subject: two\n\n0123456789012345678901234567890123456789\n\
             From c@example.com Mon Nov 23 10:02:00 2026\n\
             Subject: three\n\nok\n",
        )
        .unwrap();
        let eml = dir.path().join("one.eml");
        std::fs::write(&eml, "Subject: eml\n\nbody\n").unwrap();
        // Found in a directory, a file is one message whatever it begins with.
        let found = dir.path().join("found");
        std::fs::write(&found, "From a@example.com Mon Nov 23 10:00:00 2026\n").unwrap();
        let files = vec![
            (eml.clone(), true),
            (mbox.clone(), true),
            (found.clone(), false),
            (PathBuf::from("-"), true),
        ];
        type Got = (PathBuf, Option<usize>, Option<Result<String, String>>);
        let got: Vec<Got> = Items::new(files, 50)
            .map(|i| {
                let raw = i
                    .raw
                    .map(|r| r.map(|b| String::from_utf8_lossy(&b).into_owned()));
                (i.path, i.mbox_message, raw)
            })
            .collect();
        let want = vec![
            (eml, None, None),
            (
                mbox.clone(),
                Some(1),
                Some(Ok(
                    "Subject: one\n\nbody\nFrom here on, quoted\n\n".to_string()
                )),
            ),
            // Too large, and the next message is still read.
            (
                mbox.clone(),
                Some(2),
                Some(Err("55 bytes, larger than 50".to_string())),
            ),
            (
                mbox,
                Some(3),
                Some(Ok("Subject: three\n\nok\n".to_string())),
            ),
            (found, None, None),
            (PathBuf::from("-"), None, None),
        ];
        assert_eq!(got, want);
    }
}
