//! The agent's original as a forward carries it: the part it fits (RFC
//! 2046 section 5.2.1 allows message/rfc822 only the identity encodings),
//! and the 7-bit form of a composed message for a server without 8BITMIME.

use lettre::message::header::{ContentDisposition, ContentTransferEncoding, ContentType};
use lettre::message::{Body, SinglePart};

use super::ComposeError;

/// Why an original cannot travel as a message/rfc822 part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// A line longer than 998 octets (RFC 5322 section 2.1.1).
    LongLine,
    /// A NUL octet.
    Nul,
    /// A CR not followed by LF.
    BareCr,
}

impl Unfit {
    /// In words, for the forward's summary and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Unfit::LongLine => "it has a line longer than 998 characters",
            Unfit::Nul => "it contains NUL bytes",
            Unfit::BareCr => "it contains a carriage return outside a line break",
        }
    }
}

/// How the agent's original is attached to a forward.
///
/// RFC 2046 section 5.2.1 allows a message/rfc822 part only the identity
/// encodings (7bit, 8bit, binary), so the original goes as it is or not at
/// all as a message: one that no identity encoding can carry over SMTP
/// goes as a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginalPart {
    /// message/rfc822, 7bit: ASCII with lines of at most 998 octets.
    SevenBit,
    /// message/rfc822, 8bit: the same with octets over 127, which needs
    /// the SMTP server's 8BITMIME; a server without it gets the file form
    /// instead (see `Smtp::send`).
    EightBit,
    /// application/octet-stream named `original.eml`, base64.
    File(Unfit),
}

impl OriginalPart {
    /// Whether a reader's mail program shows it as a message.
    pub fn is_message(self) -> bool {
        !matches!(self, OriginalPart::File(_))
    }
}

/// The agent's original, ready to attach: line ends made CRLF (a file or
/// Maildir may store bare LF; on the wire every line ends in CRLF) and
/// the part it fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub part: OriginalPart,
    bytes: Vec<u8>,
}

/// The longest line RFC 5322 allows, without its CRLF.
const MAX_LINE: usize = 998;

impl Original {
    pub fn new(raw: &[u8]) -> Original {
        let mut bytes = Vec::with_capacity(raw.len() + raw.len() / 32);
        for (i, &b) in raw.iter().enumerate() {
            if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
                bytes.push(b'\r');
            }
            bytes.push(b);
        }
        let part = match fit(&bytes) {
            Ok(false) => OriginalPart::SevenBit,
            Ok(true) => OriginalPart::EightBit,
            Err(why) => OriginalPart::File(why),
        };
        Original { part, bytes }
    }

    /// The bytes as attached (CRLF line ends).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The part, and its body as the composed message carries it (the
    /// bytes for an identity encoding, their base64 for the file form):
    /// what the store keeps once however many forwards attach it.
    pub(super) fn mime_part(&self) -> Result<(SinglePart, Vec<u8>), ComposeError> {
        let content_type = |s: &str| ContentType::parse(s).map_err(ComposeError::ContentType);
        let disposition = ContentDisposition::attachment("original.eml");
        // `Body::new_with_encoding` would check again, but it takes 8bit to
        // mean UTF-8 only, and an ISO-8859-1 original is 8bit too (RFC 2045
        // section 2.8): `fit` is the RFC's rule, applied above.
        let (ct, body) = match self.part {
            OriginalPart::SevenBit => (
                content_type("message/rfc822")?,
                Body::dangerous_pre_encoded(self.bytes.clone(), ContentTransferEncoding::SevenBit),
            ),
            OriginalPart::EightBit => (
                content_type("message/rfc822")?,
                Body::dangerous_pre_encoded(self.bytes.clone(), ContentTransferEncoding::EightBit),
            ),
            OriginalPart::File(_) => (
                content_type("application/octet-stream")?,
                Body::new_with_encoding(self.bytes.clone(), ContentTransferEncoding::Base64)
                    .map_err(|_| ComposeError::Base64Refused)?,
            ),
        };
        let encoded = body.as_ref().to_vec();
        let part = SinglePart::builder()
            .header(ct)
            .header(disposition)
            .body(body);
        Ok((part, encoded))
    }
}

/// How far from the end of a composed forward the original's body may
/// end: the closing boundary line (`--` and at most 70 characters, RFC
/// 2046 section 5.1.1) and the line breaks around it.
const TAIL_MAX: usize = 128;

/// Where `body`, the original's part body, sits in the composed forward
/// `raw`: it is the last part, so its body ends just before the closing
/// boundary. `None` when it is not found there (then the forward is
/// stored whole).
pub(super) fn locate(raw: &[u8], body: &[u8]) -> Option<std::ops::Range<usize>> {
    if body.is_empty() {
        return None;
    }
    let last = raw.len().checked_sub(body.len())?;
    (last.saturating_sub(TAIL_MAX)..=last)
        .rev()
        .find(|&at| raw[at..at + body.len()] == *body)
        .map(|at| at..at + body.len())
}

/// Whether CRLF-terminated `bytes` fit an identity encoding: `Ok(true)`
/// when they need 8bit, `Ok(false)` when 7bit will do.
fn fit(bytes: &[u8]) -> Result<bool, Unfit> {
    let mut eight = false;
    let mut line = 0usize;
    let mut long = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            0 => return Err(Unfit::Nul),
            b'\r' if bytes.get(i + 1) != Some(&b'\n') => return Err(Unfit::BareCr),
            b'\r' => {}
            b'\n' => line = 0,
            _ => {
                eight |= b > 127;
                line += 1;
                long |= line > MAX_LINE;
            }
        }
    }
    if long {
        Err(Unfit::LongLine)
    } else {
        Ok(eight)
    }
}

/// `raw` with every 8bit message/rfc822 part turned into the file form
/// (application/octet-stream, base64), for a server without 8BITMIME.
/// Deterministic, so a resend is the same message. `None` when some other
/// part of `raw` is 8bit (nothing the daemon composes is).
pub fn seven_bit(raw: &[u8]) -> Option<Vec<u8>> {
    use mail_parser::{MessageParser, MimeHeaders};
    let msg = MessageParser::default().parse(raw)?;
    let mut out = Vec::with_capacity(raw.len() * 4 / 3);
    let mut at = 0usize;
    for part in &msg.parts {
        let is_rfc822 = part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("rfc822"))
        });
        let eight = part
            .content_transfer_encoding()
            .is_some_and(|e| e.eq_ignore_ascii_case("8bit"));
        if !is_rfc822 || !eight {
            continue;
        }
        let (h, b, e) = (
            part.raw_header_offset() as usize,
            part.raw_body_offset() as usize,
            part.raw_end_offset() as usize,
        );
        if h < at || b < h || e < b || e > raw.len() {
            return None;
        }
        let encoded =
            Body::new_with_encoding(raw[b..e].to_vec(), ContentTransferEncoding::Base64).ok()?;
        out.extend_from_slice(&raw[at..h]);
        out.extend_from_slice(
            b"Content-Type: application/octet-stream\r\n\
              Content-Disposition: attachment; filename=\"original.eml\"\r\n\
              Content-Transfer-Encoding: base64\r\n\r\n",
        );
        out.extend_from_slice(encoded.as_ref());
        at = e;
    }
    out.extend_from_slice(&raw[at..]);
    out.is_ascii().then_some(out)
}
