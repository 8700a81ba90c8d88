//! The agent's original, kept once. Every forward of a case attaches the
//! same original; each used to be stored whole in `outbox_raw`. Now a
//! forward's bytes are stored without its original's part body, which goes
//! to `originals` under its SHA-256, with a count of the items that refer
//! to it; the item's reference says which original and where it goes back
//! in. Reassembled, the bytes are exactly those composed (the body is cut
//! out of the composed message, not composed again), so a resend is the
//! same message.
//!
//! Keys of `originals`: `b` and the digest, the body; `c` and the digest,
//! how many items refer to it (u64, big-endian); `i` and an item id, the
//! item's [`OriginalRef`]. All three change in the transaction that queues
//! or drops an item, so a crash leaves no count that disagrees with the
//! references.

use serde::{Deserialize, Serialize};

use crate::outbox::NewOutgoing;

use super::{Store, StoreError, Tx, TxResult, abort, decode, encode};

/// Where an item's original goes back in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct OriginalRef {
    /// The SHA-256 of the original's part body, in hex.
    pub(super) sha256: String,
    /// Its offset in the composed message.
    pub(super) at: usize,
}

pub(super) type Digest = [u8; 32];

/// The first byte of each kind of key.
pub(super) const BODY: u8 = b'b';
pub(super) const COUNT: u8 = b'c';
pub(super) const REF: u8 = b'i';

fn digest(body: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(super) fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex(s: &str) -> Option<Digest> {
    let mut out = [0u8; 32];
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub(super) fn body_key(d: &Digest) -> Vec<u8> {
    [&[BODY][..], d].concat()
}

pub(super) fn count_key(d: &Digest) -> Vec<u8> {
    [&[COUNT][..], d].concat()
}

pub(super) fn ref_key(id: u64) -> Vec<u8> {
    [&[REF][..], &id.to_be_bytes()].concat()
}

fn read_count(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| v.as_ref().try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// What dropping an item's bytes released.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dropped {
    /// The item had bytes.
    pub bytes: bool,
    /// It was the last item referring to its original, which went too.
    pub original: bool,
}

/// Stores the bytes of item `id` inside a transaction: a forward's
/// original once (see the module docs), the rest in `outbox_raw`.
pub(super) fn put_raw(tx: &Tx, id: u64, out: &NewOutgoing) -> TxResult<()> {
    let key = id.to_be_bytes();
    let span = out
        .original
        .clone()
        .filter(|r| r.start < r.end && r.end <= out.raw.len());
    let Some(span) = span else {
        tx.outbox_raw.insert(&key, out.raw.as_slice())?;
        return Ok(());
    };
    let body = &out.raw[span.clone()];
    let d = digest(body);
    let count = read_count(tx.originals.get(count_key(&d))?);
    if count == 0 {
        tx.originals.insert(body_key(&d), body)?;
    }
    tx.originals
        .insert(count_key(&d), &(count + 1).to_be_bytes())?;
    let rest = [&out.raw[..span.start], &out.raw[span.end..]].concat();
    tx.outbox_raw.insert(&key, rest)?;
    let r = OriginalRef {
        sha256: hex(&d),
        at: span.start,
    };
    tx.originals.insert(ref_key(id), encode(&r))?;
    Ok(())
}

/// Drops the bytes of item `id` inside a transaction, and its hold on its
/// original (removed with its last reference).
pub(super) fn drop_raw(tx: &Tx, id: u64) -> TxResult<Dropped> {
    let mut dropped = Dropped {
        bytes: tx.outbox_raw.remove(&id.to_be_bytes())?.is_some(),
        original: false,
    };
    if let Some(v) = tx.originals.remove(ref_key(id))? {
        let r: OriginalRef = decode("originals", &v).map_err(abort)?;
        let d = unhex(&r.sha256).ok_or_else(|| abort(StoreError::MissingOriginal(id)))?;
        match read_count(tx.originals.get(count_key(&d))?) {
            0 | 1 => {
                tx.originals.remove(count_key(&d))?;
                dropped.original = tx.originals.remove(body_key(&d))?.is_some();
            }
            n => {
                tx.originals.insert(count_key(&d), &(n - 1).to_be_bytes())?;
            }
        }
    }
    Ok(dropped)
}

impl Store {
    /// The bytes of an outbox item, as composed: a forward's original put
    /// back where it was.
    pub fn outbox_raw(&self, id: u64) -> Result<Vec<u8>, StoreError> {
        let key = id.to_be_bytes();
        let Some(rest) = self.outbox_raw.get(key)? else {
            return Err(if self.outbox.contains_key(key)? {
                StoreError::BytesDropped(id)
            } else {
                StoreError::NoSuchItem(id)
            });
        };
        let Some(r) = self.originals.get(ref_key(id))? else {
            return Ok(rest.to_vec());
        };
        let r: OriginalRef = decode("originals", &r)?;
        let body = unhex(&r.sha256)
            .map(|d| self.originals.get(body_key(&d)))
            .transpose()?
            .flatten()
            .filter(|_| r.at <= rest.len())
            .ok_or(StoreError::MissingOriginal(id))?;
        Ok([&rest[..r.at], body.as_ref(), &rest[r.at..]].concat())
    }

    /// How many originals are stored (each once, whatever refers to it).
    pub fn originals_stored(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for r in self.originals.scan_prefix([BODY]) {
            r?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::mail::{Identity, Original, OriginalPart, Unfit, compose_forward};
    use crate::outbox::NewOutgoing;
    use crate::route::Rendered;

    use super::super::Store;
    use super::super::fixtures::ts;

    fn identity() -> Identity {
        Identity {
            from: "Escalations <mailtriage@example.com>".parse().unwrap(),
            domain: "mailtriage.example.com".into(),
        }
    }

    fn forward(raw: &[u8], seq: &str, to: &str) -> NewOutgoing {
        let rendered = Rendered {
            subject: "[ESC-2026-000001] Tier 2 / Risk 5: a test".into(),
            body: "Tier 2, risk 5 of 5.\n\nThe agent's original is attached.".into(),
            high_importance: true,
        };
        compose_forward(
            &identity(),
            "ESC-2026-000001",
            seq,
            &[to.to_string()],
            &[],
            Some("ops@example.com"),
            &rendered,
            &Original::new(raw),
            crate::clock::system_time(ts(1_780_000_000)),
        )
        .unwrap()
    }

    /// Every fixture, and an original for each encoding branch: what is
    /// stored reads back as the composed bytes, and two forwards of one
    /// original store it once.
    #[test]
    fn forwards_read_back_byte_for_byte_and_share_their_original() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut originals: Vec<(String, Vec<u8>)> = std::fs::read_dir(&fixtures)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        originals.sort();
        assert!(originals.len() >= 40, "{} fixtures", originals.len());
        let head = b"From: a@example.com\r\nSubject: x\r\n\r\n".to_vec();
        let synthetic = [
            ("7bit", [&head[..], b"plain ascii\r\n"].concat()),
            (
                "8bit",
                [&head[..], "\u{20b9} 500 r\u{e9}fund\r\n".as_bytes()].concat(),
            ),
            (
                "long line",
                [&head[..], &[b'x'; 1200][..], b"\r\n"].concat(),
            ),
            ("nul", [&head[..], b"a\0b\r\n"].concat()),
            ("bare cr", [&head[..], b"a\rb\r\n"].concat()),
            ("bare lf", [&head[..], b"line one\nline two\n"].concat()),
        ];
        originals.extend(synthetic.iter().map(|(n, r)| (n.to_string(), r.clone())));
        let mut parts = Vec::new();
        for (name, raw) in &originals {
            parts.push(Original::new(raw).part);
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let a = forward(raw, "0", "tier2@example.com");
            let b = forward(raw, "1", "cx@example.com");
            assert!(a.original.is_some(), "{name}: the original was not found");
            assert_ne!(a.raw, b.raw, "{name}");
            let ids = store.enqueue(&[a.clone(), b.clone()], ts(100)).unwrap();
            assert_eq!(store.outbox_raw(ids[0]).unwrap(), a.raw, "{name}");
            assert_eq!(store.outbox_raw(ids[1]).unwrap(), b.raw, "{name}");
            assert_eq!(store.originals_stored().unwrap(), 1, "{name}");
            let stored: usize = ids
                .iter()
                .map(|&id| {
                    store
                        .outbox_raw
                        .get(id.to_be_bytes())
                        .unwrap()
                        .unwrap()
                        .len()
                })
                .sum();
            let body = a.original.clone().unwrap().len();
            assert_eq!(stored, a.raw.len() + b.raw.len() - 2 * body, "{name}");
        }
        // Each branch of the part ran.
        for want in [
            OriginalPart::SevenBit,
            OriginalPart::EightBit,
            OriginalPart::File(Unfit::LongLine),
            OriginalPart::File(Unfit::Nul),
            OriginalPart::File(Unfit::BareCr),
        ] {
            assert!(parts.contains(&want), "{want:?} not covered");
        }
    }

    #[test]
    fn the_original_goes_with_its_last_reference() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let raw = b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n";
        let other = b"From: b@example.com\r\nSubject: y\r\n\r\nother\r\n";
        let (a, b, c) = (
            forward(raw, "0", "x@example.com"),
            forward(raw, "1", "y@example.com"),
            forward(other, "0", "x@example.com"),
        );
        let ids = store.enqueue(&[a, b, c.clone()], ts(1)).unwrap();
        assert_eq!(store.originals_stored().unwrap(), 2);
        let drop = |id: u64| store.transact(|tx| super::drop_raw(tx, id)).unwrap();
        assert_eq!(
            drop(ids[0]),
            super::Dropped {
                bytes: true,
                original: false
            }
        );
        assert_eq!(store.originals_stored().unwrap(), 2);
        assert!(matches!(
            store.outbox_raw(ids[0]),
            Err(super::StoreError::BytesDropped(_))
        ));
        assert_eq!(
            drop(ids[1]),
            super::Dropped {
                bytes: true,
                original: true
            }
        );
        assert_eq!(store.originals_stored().unwrap(), 1);
        assert_eq!(drop(ids[1]), super::Dropped::default(), "dropped once");
        assert_eq!(store.outbox_raw(ids[2]).unwrap(), c.raw);
        assert!(matches!(
            store.outbox_raw(99),
            Err(super::StoreError::NoSuchItem(99))
        ));
    }
}
