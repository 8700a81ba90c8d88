//! The export format, without the database: JSON Lines, a header first,
//! one typed record per line, an end line last that counts the records and
//! carries a SHA-256 of every byte before it; writing one, and reading one
//! back with every check that tells a whole export from a cut or altered
//! one.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::batch::{Cursor, LastMessage, Pending, Seen};
use crate::outbox::OutboxItem;
use crate::record::CaseRecord;
use crate::rescan::Rescan;
use crate::vendor::VendorKey;

/// The `format` of the header: what this file is.
pub const FORMAT: &str = "mailtriage-export";

/// The version of the format this mailtriage writes. It reads this one;
/// a newer one is refused (its records may mean what this version cannot
/// keep); an older one would be migrated as it is read (there is none yet).
pub const FORMAT_VERSION: u32 = 1;

/// The longest line read back (a record with the bytes of a large
/// message), so that a damaged file cannot make the reader take all memory.
const MAX_LINE: u64 = 512 * 1024 * 1024;

/// How many records of each kind, by the name in their `record` field.
pub type Counts = BTreeMap<String, u64>;

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the mailtriage that wrote it.
    pub version: u32,
    /// The version of the mailtriage that wrote it.
    pub mailtriage: String,
    /// The point in time the records are of.
    #[serde(with = "rfc3339")]
    pub exported_at: Timestamp,
    /// The records that follow, by kind.
    pub counts: Counts,
}

/// The last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// The records between the header and this line.
    pub records: u64,
    /// SHA-256 of every byte before this line, in lowercase hex.
    pub sha256: String,
}

/// Bytes, as base64 in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Bytes)
            .map_err(serde::de::Error::custom)
    }
}

/// Where a forward's original goes back into its bytes: the original's
/// SHA-256 (hex) and the offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalAt {
    pub sha256: String,
    pub at: usize,
}

/// One line of an export: `{"record": "case", ...}`. Times are unix
/// seconds, as the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Line {
    Header(Header),
    /// A case with its history (`cases`).
    Case {
        case: Box<CaseRecord>,
    },
    /// A message processed before (`seen`), by its key: the Message-ID as
    /// keyed (lowercase, may be empty) and the SHA-256 of its bytes; `at`,
    /// when it was processed (none in entries of earlier versions).
    Seen {
        message_id: String,
        sha256: String,
        seen: Seen,
        #[serde(with = "crate::clock::seconds::option")]
        at: Option<Timestamp>,
    },
    /// A mailbox's UIDVALIDITY and last UID processed (`cursors`).
    Cursor {
        mailbox: String,
        cursor: Cursor,
    },
    /// Server actions of committed batches not yet done (`pending`).
    Pending {
        mailbox: String,
        pending: Pending,
    },
    /// An outgoing message (`outbox`), when it is due if it is pending
    /// (`outbox_pending`), and its bytes while they are kept
    /// (`outbox_raw`), as stored: a forward's without the body of the
    /// original it attaches, which `original` names (`originals`).
    Outbox {
        item: Box<OutboxItem>,
        #[serde(with = "crate::clock::seconds::option")]
        due: Option<Timestamp>,
        raw: Option<Bytes>,
        original: Option<OriginalAt>,
    },
    /// An original that forwards attach, kept once (`originals`): the
    /// SHA-256 of its part body (hex), how many outbox items refer to it,
    /// and the body.
    Original {
        sha256: String,
        refs: u64,
        body: Bytes,
    },
    /// Automatic replies to a sender in one second (`replies`).
    Reply {
        sender: String,
        #[serde(with = "crate::clock::seconds")]
        at: Timestamp,
        count: u32,
    },
    /// A Message-ID of a case's thread, as keyed (`index`).
    Thread {
        message_id: String,
        case_id: String,
    },
    /// The latest case of an order, the order as keyed (`index`).
    Order {
        order: String,
        case_id: String,
    },
    /// An open case (`index`).
    Open {
        case_id: String,
    },
    /// A complaint about a vendor, when its case opened (`index`).
    Complaint {
        vendor: VendorKey,
        #[serde(with = "crate::clock::seconds")]
        at: Timestamp,
        case_id: String,
    },
    /// The id a vendor name was first given with (`index`).
    Alias {
        name: VendorKey,
        vendor: VendorKey,
    },
    /// An undeliverable outbox item (`index`).
    Undeliverable {
        id: u64,
    },
    /// A sequence (`meta`): `case_seq`, the last case number given;
    /// `outbox_seq`, the last outbox id.
    Counter {
        name: String,
        value: u64,
    },
    /// When a vendor was last reported to the vendor manager (`meta`).
    VendorReported {
        vendor: VendorKey,
        #[serde(with = "crate::clock::seconds")]
        at: Timestamp,
    },
    /// The period of the last digest sent (`meta`).
    DigestSent {
        digest: String,
        #[serde(with = "crate::clock::seconds")]
        period: Timestamp,
    },
    /// The last message a mailbox processed (`meta`).
    LastMessage {
        mailbox: String,
        last: LastMessage,
    },
    /// The time before which `seen` entries may have been pruned (`meta`).
    SeenHorizon {
        #[serde(with = "crate::clock::seconds")]
        at: Timestamp,
    },
    /// A mailbox read again after its UIDVALIDITY changed (`meta`).
    Rescan {
        mailbox: String,
        rescan: Rescan,
    },
    /// A step done once (`meta`): `expiry_indexed`, the records of an
    /// earlier version indexed for retention.
    Flag {
        name: String,
    },
    /// A delivered item whose bytes are kept, by when it was delivered
    /// (`expiry`).
    ExpirySent {
        id: u64,
        #[serde(with = "crate::clock::seconds")]
        at: Timestamp,
    },
    /// A `seen` entry, by when its message was processed (`expiry`).
    ExpirySeen {
        message_id: String,
        sha256: String,
        #[serde(with = "crate::clock::seconds")]
        at: Timestamp,
    },
    /// A resolved case, by when it was resolved (`expiry`).
    ExpiryResolved {
        case_id: String,
        #[serde(with = "crate::clock::seconds")]
        at: Timestamp,
    },
    /// An entry this version cannot read as a record of its tree (a
    /// corrupt one), kept byte for byte.
    Raw {
        tree: String,
        key: Bytes,
        value: Bytes,
    },
    End(End),
}

impl Line {
    /// The `record` field: what the line is.
    pub fn kind(&self) -> &'static str {
        match self {
            Line::Header(_) => "header",
            Line::Case { .. } => "case",
            Line::Seen { .. } => "seen",
            Line::Cursor { .. } => "cursor",
            Line::Pending { .. } => "pending",
            Line::Outbox { .. } => "outbox",
            Line::Original { .. } => "original",
            Line::Reply { .. } => "reply",
            Line::Thread { .. } => "thread",
            Line::Order { .. } => "order",
            Line::Open { .. } => "open",
            Line::Complaint { .. } => "complaint",
            Line::Alias { .. } => "alias",
            Line::Undeliverable { .. } => "undeliverable",
            Line::Counter { .. } => "counter",
            Line::VendorReported { .. } => "vendor_reported",
            Line::DigestSent { .. } => "digest_sent",
            Line::LastMessage { .. } => "last_message",
            Line::SeenHorizon { .. } => "seen_horizon",
            Line::Rescan { .. } => "rescan",
            Line::Flag { .. } => "flag",
            Line::ExpirySent { .. } => "expiry_sent",
            Line::ExpirySeen { .. } => "expiry_seen",
            Line::ExpiryResolved { .. } => "expiry_resolved",
            Line::Raw { .. } => "raw",
            Line::End(_) => "end",
        }
    }
}

/// Why a file is not a whole export this version can read. `line` is the
/// line number, from 1.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("reading the export: {0}")]
    Read(#[source] io::Error),
    #[error("writing the export: {0}")]
    Write(#[source] io::Error),
    #[error("the input is empty: not a mailtriage export")]
    Empty,
    #[error("line 1 is not the header of a mailtriage export ({0})")]
    NotAnExport(String),
    #[error(
        "the export is in format version {version} (written by mailtriage {mailtriage}); this mailtriage ({}) reads version {FORMAT_VERSION} and older: import it with mailtriage {mailtriage} or newer",
        env!("CARGO_PKG_VERSION")
    )]
    Newer { version: u32, mailtriage: String },
    #[error("the export has format version {0}, which no mailtriage wrote")]
    UnknownVersion(u32),
    #[error("line {line}: {source}")]
    BadLine {
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line}: longer than {MAX_LINE} bytes")]
    TooLong { line: u64 },
    #[error("line {line}: a second header")]
    SecondHeader { line: u64 },
    #[error("line {line}: a record after the end line")]
    AfterEnd { line: u64 },
    #[error(
        "the export ends after line {line} without its end line: it is truncated (an export cut short)"
    )]
    Truncated { line: u64 },
    #[error(
        "line {line}: the end line counts {said} records, the file has {found}: records are missing or added"
    )]
    RecordCount { line: u64, said: u64, found: u64 },
    #[error(
        "the header counts {said} {kind} records, the file has {found}: records are missing or added"
    )]
    KindCount { kind: String, said: u64, found: u64 },
    #[error(
        "line {line}: the checksum does not match: the file was changed or damaged after it was written"
    )]
    Checksum { line: u64 },
}

/// Writes `header`, the record lines of `records` (each ending in `\n`),
/// and the end line to `out`; returns the end line.
pub fn write(header: &Header, records: &mut dyn BufRead, out: &mut dyn Write) -> io::Result<End> {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut first = serde_json::to_vec(&Line::Header(header.clone())).map_err(io::Error::other)?;
    first.push(b'\n');
    hash.update(&first);
    out.write_all(&first)?;
    let mut n = 0u64;
    loop {
        let buf = records.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        n += buf.iter().filter(|b| **b == b'\n').count() as u64;
        hash.update(buf);
        out.write_all(buf)?;
        let len = buf.len();
        records.consume(len);
    }
    let end = End {
        records: n,
        sha256: hex(hash.finish().as_ref()),
    };
    let mut last = serde_json::to_vec(&Line::End(end.clone())).map_err(io::Error::other)?;
    last.push(b'\n');
    out.write_all(&last)?;
    out.flush()?;
    Ok(end)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads an export line by line, checking it as it goes: the header
/// first (format and version), then records, then the end line (the
/// record count, each kind's count against the header, the checksum), and
/// nothing after it.
pub struct Reader<R> {
    input: R,
    header: Header,
    /// The line last read, with its `\n`.
    raw: Vec<u8>,
    line: u64,
    hash: ring::digest::Context,
    counts: Counts,
    records: u64,
    ended: bool,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Reader<R>, FormatError> {
        let mut raw = Vec::new();
        read_line(&mut input, &mut raw, 1)?;
        if raw.is_empty() {
            return Err(FormatError::Empty);
        }
        let header = match serde_json::from_slice::<Line>(&raw) {
            Ok(Line::Header(h)) => h,
            Ok(other) => {
                return Err(FormatError::NotAnExport(format!(
                    "a {} record",
                    other.kind()
                )));
            }
            // A header this version cannot read may be a newer one: its
            // version says so, if it has one.
            Err(e) => match serde_json::from_slice::<Probe>(&raw) {
                Ok(p) if p.format.as_deref() == Some(FORMAT) && p.version > FORMAT_VERSION => {
                    return Err(FormatError::Newer {
                        version: p.version,
                        mailtriage: p.mailtriage.unwrap_or_else(|| "?".into()),
                    });
                }
                _ => return Err(FormatError::NotAnExport(e.to_string())),
            },
        };
        if header.format != FORMAT {
            return Err(FormatError::NotAnExport(format!(
                "its format is {:?}",
                header.format
            )));
        }
        if header.version > FORMAT_VERSION {
            return Err(FormatError::Newer {
                version: header.version,
                mailtriage: header.mailtriage,
            });
        }
        if header.version == 0 {
            return Err(FormatError::UnknownVersion(0));
        }
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        hash.update(&raw);
        Ok(Reader {
            input,
            header,
            raw,
            line: 1,
            hash,
            counts: Counts::new(),
            records: 0,
            ended: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The number of the line last read, from 1.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The line last read (the header, a record, or the end line), as it
    /// is in the file.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The next record; `None` after the end line, once everything is
    /// checked.
    pub fn next_record(&mut self) -> Result<Option<Line>, FormatError> {
        if self.ended {
            return Ok(None);
        }
        self.line += 1;
        read_line(&mut self.input, &mut self.raw, self.line)?;
        if self.raw.is_empty() || self.raw.last() != Some(&b'\n') {
            return Err(FormatError::Truncated {
                line: self.line - 1,
            });
        }
        let line = self.line;
        let parsed: Line = serde_json::from_slice(&self.raw)
            .map_err(|source| FormatError::BadLine { line, source })?;
        match parsed {
            Line::Header(_) => Err(FormatError::SecondHeader { line }),
            Line::End(end) => {
                self.finish(&end)?;
                self.ended = true;
                Ok(None)
            }
            record => {
                self.hash.update(&self.raw);
                self.records += 1;
                *self.counts.entry(record.kind().to_string()).or_default() += 1;
                Ok(Some(record))
            }
        }
    }

    fn finish(&mut self, end: &End) -> Result<(), FormatError> {
        let line = self.line;
        let hash = std::mem::replace(
            &mut self.hash,
            ring::digest::Context::new(&ring::digest::SHA256),
        );
        if hex(hash.finish().as_ref()) != end.sha256 {
            return Err(FormatError::Checksum { line });
        }
        if end.records != self.records {
            return Err(FormatError::RecordCount {
                line,
                said: end.records,
                found: self.records,
            });
        }
        let kinds = self.header.counts.keys().chain(self.counts.keys());
        for kind in kinds {
            let said = self.header.counts.get(kind).copied().unwrap_or(0);
            let found = self.counts.get(kind).copied().unwrap_or(0);
            if said != found {
                return Err(FormatError::KindCount {
                    kind: kind.clone(),
                    said,
                    found,
                });
            }
        }
        let mut rest = Vec::new();
        read_line(&mut self.input, &mut rest, line + 1)?;
        if !rest.is_empty() {
            return Err(FormatError::AfterEnd { line: line + 1 });
        }
        Ok(())
    }
}

/// What a header that does not read as this version's says of itself.
#[derive(Deserialize)]
struct Probe {
    format: Option<String>,
    #[serde(default)]
    version: u32,
    mailtriage: Option<String>,
}

/// Reads one line (with its `\n`, if it has one) into `buf`; empty at the
/// end of the input.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, line: u64) -> Result<(), FormatError> {
    buf.clear();
    let n = io::Read::take(&mut *input, MAX_LINE + 1)
        .read_until(b'\n', buf)
        .map_err(FormatError::Read)?;
    if n as u64 > MAX_LINE {
        return Err(FormatError::TooLong { line });
    }
    Ok(())
}

/// Copies an export from `input` to `out` line by line, checking it all;
/// returns its header and end line. `out` has seen every byte of a whole
/// export when this returns `Ok`.
pub fn copy_checked(input: impl BufRead, out: &mut dyn Write) -> Result<Checked, FormatError> {
    let mut reader = Reader::new(input)?;
    out.write_all(reader.raw()).map_err(FormatError::Write)?;
    while reader.next_record()?.is_some() {
        out.write_all(reader.raw()).map_err(FormatError::Write)?;
    }
    // The end line.
    out.write_all(reader.raw()).map_err(FormatError::Write)?;
    Ok(Checked {
        header: reader.header.clone(),
        records: reader.records,
    })
}

/// Checks a whole export, writing nothing.
pub fn verify(input: impl BufRead) -> Result<Checked, FormatError> {
    copy_checked(input, &mut io::sink())
}

/// What [`copy_checked`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub header: Header,
    pub records: u64,
}

/// A timestamp as RFC 3339 (UTC), for the header, which a person reads.
mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    /// To the second: a person reads it.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        let t = Timestamp::from_second(t.as_second()).unwrap_or(*t);
        s.serialize_str(&t.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
