//! MIME to text: the one place that reads raw RFC 5322 bytes.
//!
//! Everything downstream (extraction, classification, routing) works on an
//! [`Email`]: the few headers triage needs and the body as plain text. The
//! parsing itself is mail-parser's; this module only chooses which part is
//! "the body" and turns HTML into text that keeps the line structure agents
//! rely on (`Label: value` lines), with `<blockquote>` content marked as quoted
//! (`> `) so that quoted history is recognised the same way in HTML and text.

use mail_parser::{Address, HeaderName, HeaderValue, MessageParser, PartType};

/// Why raw bytes could not be read as an email at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("input is empty")]
    Empty,
    #[error("not an email: no From, To, Subject, Date or Message-ID header found")]
    NotAnEmail,
}

/// The parts of a message that triage reads, decoded and owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Email {
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// The first From address.
    pub from: Option<String>,
    /// The display name of the first From address.
    pub from_name: Option<String>,
    pub subject: String,
    /// Date as RFC 3339, with the offset the sender wrote.
    pub date: Option<String>,
    /// First In-Reply-To id, without angle brackets.
    pub in_reply_to: Option<String>,
    /// References ids, oldest first, without angle brackets.
    pub references: Vec<String>,
    pub auto_submitted: Option<String>,
    pub precedence: Option<String>,
    pub list_id: Option<String>,
    /// `Some("")` for the null reverse path `<>` used by bounces.
    pub return_path: Option<String>,
    /// The body as plain text (`\n` or `\r\n` line ends; read it with `lines`).
    pub text: String,
    /// The body came from an HTML part (no text/plain alternative).
    pub from_html: bool,
}

impl Email {
    /// Why this message is automatic mail (RFC 3834 and list conventions),
    /// or `None` for a message a person wrote.
    pub fn automatic(&self) -> Option<&'static str> {
        if let Some(v) = &self.auto_submitted {
            let v = v.trim();
            if !v.is_empty() && !v.eq_ignore_ascii_case("no") {
                return Some("auto-submitted");
            }
        }
        if let Some(p) = &self.precedence {
            let p = p.trim();
            if ["bulk", "list", "junk"]
                .iter()
                .any(|k| p.eq_ignore_ascii_case(k))
            {
                return Some("precedence");
            }
        }
        if self.list_id.is_some() {
            return Some("list-id");
        }
        None
    }

    /// Whether this message answers an earlier one.
    pub fn is_reply(&self) -> bool {
        self.in_reply_to.is_some() || !self.references.is_empty() || has_reply_prefix(&self.subject)
    }
}

/// `Re:`, `RE:`, `Aw:`, `Re[2]:` at the start of a subject, after any `Fwd:`.
fn has_reply_prefix(subject: &str) -> bool {
    let mut s = subject.trim_start();
    loop {
        let lower = s.get(..4).map(str::to_ascii_lowercase);
        match lower.as_deref() {
            Some("re: ") | Some("aw: ") => return true,
            Some(p) if p.starts_with("re:") || p.starts_with("re[") => return true,
            _ => {}
        }
        if let Some(rest) = strip_prefix_ci(s, "fwd:").or_else(|| strip_prefix_ci(s, "fw:")) {
            s = rest.trim_start();
            continue;
        }
        return false;
    }
}

/// Whether a subject marks a forwarded message (`Fwd:`, `FW:`).
pub fn is_forward_subject(subject: &str) -> bool {
    let s = subject.trim_start();
    strip_prefix_ci(s, "fwd:").is_some() || strip_prefix_ci(s, "fw:").is_some()
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The decoded `Subject:` of a message, from its headers alone (for
/// listing the mail the daemon queued).
pub fn subject_of(raw: &[u8]) -> Option<String> {
    MessageParser::default()
        .parse_headers(raw)?
        .subject()
        .map(str::to_string)
}

/// Parses raw message bytes.
///
/// mail-parser is lenient by design: it reads almost anything as a message.
/// Input with none of the headers every email has is rejected, so that a
/// binary file or a text file is reported as "not an email" instead of being
/// triaged as an empty message.
pub fn parse(raw: &[u8]) -> Result<Email, MessageError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(MessageError::Empty);
    }
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or(MessageError::NotAnEmail)?;

    // One pass over the top-level headers: each accessor of mail-parser
    // would scan them all again. The first occurrence of a header counts.
    let mut email = Email::default();
    let mut identity = false;
    let mut seen_from = false;
    let mut seen_date = false;
    let raw_msg = msg.raw_message();
    for h in msg.headers() {
        match &h.name {
            HeaderName::From if !seen_from => {
                seen_from = true;
                identity = true;
                if let Some((addr, name)) = h.value.as_address().and_then(first_addr) {
                    email.from = addr;
                    email.from_name = name;
                }
            }
            HeaderName::To => identity = true,
            HeaderName::Subject if email.subject.is_empty() => {
                identity = true;
                if let Some(t) = h.value.as_text() {
                    email.subject = collapse_ws(t);
                }
            }
            HeaderName::Date if !seen_date => {
                seen_date = true;
                identity = true;
                email.date = h.value.as_datetime().map(|d| d.to_rfc3339());
            }
            HeaderName::MessageId if email.message_id.is_none() => {
                identity = true;
                email.message_id = h.value.as_text().map(clean_id);
            }
            HeaderName::InReplyTo if email.in_reply_to.is_none() => {
                email.in_reply_to = ids(&h.value).into_iter().next();
            }
            HeaderName::References if email.references.is_empty() => {
                email.references = ids(&h.value);
            }
            HeaderName::ReturnPath if email.return_path.is_none() => {
                email.return_path = raw_value(raw_msg, h).map(|v| clean_id(&v));
            }
            HeaderName::ListId if email.list_id.is_none() => {
                email.list_id = raw_value(raw_msg, h);
            }
            HeaderName::AutoSubmitted if email.auto_submitted.is_none() => {
                email.auto_submitted = raw_value(raw_msg, h);
            }
            HeaderName::Other(name) => {
                let slot = if name.eq_ignore_ascii_case("precedence") {
                    &mut email.precedence
                } else {
                    continue;
                };
                if slot.is_none() {
                    *slot = raw_value(raw_msg, h);
                }
            }
            _ => {}
        }
    }
    if !identity {
        return Err(MessageError::NotAnEmail);
    }
    (email.text, email.from_html) = body_text(&msg);
    Ok(email)
}

/// A header's value as written, white space folded.
fn raw_value(raw: &[u8], h: &mail_parser::Header<'_>) -> Option<String> {
    let v = raw.get(h.offset_start as usize..h.offset_end as usize)?;
    Some(collapse_ws(String::from_utf8_lossy(v).trim()))
}

fn first_addr(a: &Address<'_>) -> Option<(Option<String>, Option<String>)> {
    let first = a.first()?;
    let addr = first
        .address()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let name = first.name().map(collapse_ws).filter(|s| !s.is_empty());
    Some((addr, name))
}

fn clean_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![clean_id(t)],
        HeaderValue::TextList(list) => list.iter().map(|t| clean_id(t)).collect(),
        _ => Vec::new(),
    }
}

fn collapse_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The first text body, or the text of the first HTML body when the message
/// has no plain-text alternative.
fn body_text(msg: &mail_parser::Message<'_>) -> (String, bool) {
    let Some(part) = msg.text_part(0) else {
        return (String::new(), false);
    };
    match &part.body {
        PartType::Text(t) => (normalize_newlines(t), false),
        PartType::Html(h) => (html_to_text(h), true),
        _ => (String::new(), false),
    }
}

/// Line ends stay as they are (`str::lines` reads `\r\n` and `\n` alike);
/// only a lone `\r`, which `lines` would not split on, is rewritten.
fn normalize_newlines(s: &str) -> String {
    let bytes = s.as_bytes();
    let lone_cr = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
    if lone_cr {
        s.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        s.to_string()
    }
}

/// Block-level elements whose start or end begins a new line.
const BLOCK_TAGS: &[&str] = &[
    "p", "div", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "pre",
    "section", "article", "header", "footer", "center",
];

/// HTML to text for extraction: block elements and `<br>` end lines, text
/// inside `<blockquote>` is prefixed with `> ` per level, `<head>`, `<style>`
/// and `<script>` are dropped, entities are decoded (by mail-parser), runs of
/// white space inside a line fold to one space.
pub fn html_to_text(html: &str) -> String {
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len() / 2);
    let mut line = String::new();
    let mut quote_depth: usize = 0;
    let mut line_depth: usize = 0;
    let mut skip_until: Option<&'static str> = None;
    // Outlook writes an empty paragraph as `<p>&nbsp;</p>`: such a block is
    // a blank line, which ends a field's value like a blank line in text.
    let mut nbsp_only = false;
    let mut i = 0;

    let flush = |out: &mut String, line: &mut String, depth: usize| {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            // Keep a single blank line as a paragraph separator.
            if !out.is_empty() && !out.ends_with("\n\n") {
                out.push('\n');
            }
        } else {
            for _ in 0..depth {
                out.push_str("> ");
            }
            out.push_str(trimmed);
            out.push('\n');
        }
        line.clear();
    };

    while i < bytes.len() {
        let b = bytes[i];
        if b == b'<' {
            // Comment.
            if bytes[i..].starts_with(b"<!--") {
                match find(bytes, i + 4, b"-->") {
                    Some(end) => i = end + 3,
                    None => break,
                }
                continue;
            }
            let Some(end) = memchr(b'>', bytes, i + 1) else {
                break;
            };
            let tag = &html[i + 1..end];
            i = end + 1;
            let (closing, name) = tag_name(tag);
            if let Some(wanted) = skip_until {
                if closing && name.eq_ignore_ascii_case(wanted) {
                    skip_until = None;
                }
                continue;
            }
            if !closing {
                for skip in ["head", "style", "script", "title", "template"] {
                    if name.eq_ignore_ascii_case(skip) && !tag.ends_with('/') {
                        skip_until = Some(skip);
                    }
                }
                if skip_until.is_some() {
                    continue;
                }
            }
            if name.eq_ignore_ascii_case("br") {
                flush(&mut out, &mut line, line_depth.max(quote_depth));
                line_depth = quote_depth;
            } else if name.eq_ignore_ascii_case("blockquote") {
                flush_if_text(&mut out, &mut line, line_depth.max(quote_depth), nbsp_only);
                nbsp_only = false;
                if closing {
                    quote_depth = quote_depth.saturating_sub(1);
                } else {
                    quote_depth += 1;
                }
                line_depth = quote_depth;
            } else if name.eq_ignore_ascii_case("td") || name.eq_ignore_ascii_case("th") {
                if closing && !line.ends_with(' ') && !line.is_empty() {
                    line.push(' ');
                }
            } else if BLOCK_TAGS.iter().any(|t| name.eq_ignore_ascii_case(t)) {
                flush_if_text(&mut out, &mut line, line_depth.max(quote_depth), nbsp_only);
                nbsp_only = false;
                line_depth = quote_depth;
            }
            continue;
        }
        if skip_until.is_some() {
            i += 1;
            continue;
        }
        if b == b'&' {
            // An entity is at most a few dozen bytes; anything else is text.
            if let Some(semi) = memchr(b';', bytes, i + 1).filter(|&s| s - i <= 32) {
                let entity = &bytes[i..=semi];
                if entity[1..entity.len() - 1]
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'#')
                {
                    let mut decoded = String::new();
                    mail_parser::decoders::html::add_html_token(&mut decoded, entity, false);
                    for ch in decoded.chars() {
                        if ch == '\u{a0}' {
                            nbsp_only |= line.is_empty();
                            push_text_char(&mut line, ' ');
                        } else {
                            push_text_char(&mut line, ch);
                        }
                    }
                    i = semi + 1;
                    continue;
                }
            }
        }
        // Copy one UTF-8 character.
        let ch_len = utf8_len(b);
        let ch = html.get(i..i + ch_len).and_then(|s| s.chars().next());
        if let Some(ch) = ch {
            if ch == '\u{a0}' {
                nbsp_only |= line.is_empty();
            }
            push_text_char(&mut line, ch);
        }
        i += ch_len.max(1);
    }
    flush_if_text(&mut out, &mut line, line_depth.max(quote_depth), false);
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn flush_if_text(out: &mut String, line: &mut String, depth: usize, blank_block: bool) {
    if !line.trim().is_empty() {
        for _ in 0..depth {
            out.push_str("> ");
        }
        out.push_str(line.trim());
        out.push('\n');
    } else if blank_block && !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    line.clear();
}

fn push_text_char(line: &mut String, ch: char) {
    if ch.is_whitespace() {
        if !line.is_empty() && !line.ends_with(' ') {
            line.push(' ');
        }
    } else {
        line.push(ch);
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

fn tag_name(tag: &str) -> (bool, &str) {
    let t = tag.trim_start();
    let (closing, t) = match t.strip_prefix('/') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, t),
    };
    let end = t
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .unwrap_or(t.len());
    (closing, &t[..end])
}

fn memchr(needle: u8, hay: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .iter()
        .position(|&b| b == needle)
        .map(|p| p + from)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_lines_and_quotes() {
        let cases: &[(&str, &str)] = &[
            (
                "<p>Customer Name: Priya</p><p>Order ID: 12</p>",
                "Customer Name: Priya\nOrder ID: 12\n",
            ),
            ("<div>a</div><div>b<br>c</div>", "a\nb\nc\n"),
            (
                "<b>Device:</b>&nbsp;iPhone&nbsp;XR &amp; case",
                "Device: iPhone XR & case\n",
            ),
            (
                "new<blockquote>old <b>fraud</b><blockquote>older</blockquote></blockquote>",
                "new\n> old fraud\n> > older\n",
            ),
            (
                "<head><title>t</title><style>p{}</style></head><p>x</p>",
                "x\n",
            ),
            ("<!-- hidden -->shown", "shown\n"),
            ("₹ 7,500 &#8377; &#x20B9;", "₹ 7,500 ₹ ₹\n"),
            (
                "<table><tr><td>Order ID:</td><td>42</td></tr></table>",
                "Order ID: 42\n",
            ),
            ("a &bogus b & c", "a &bogus b & c\n"),
            ("unterminated <b", "unterminated\n"),
            (
                "<p>Issue: x</p><p>&nbsp;</p><p>Other</p>",
                "Issue: x\n\nOther\n",
            ),
            ("<div><p>a</p></div><div><p>b</p></div>", "a\nb\n"),
        ];
        for (html, want) in cases {
            assert_eq!(html_to_text(html), *want, "html: {html}");
        }
    }

    #[test]
    fn reply_prefixes() {
        for (s, want) in [
            ("Re: Escalation", true),
            ("RE: x", true),
            ("Fwd: Re: x", true),
            ("AW: x", true),
            ("Escalation – Re: x", false),
            ("Fwd: x", false),
            ("Regarding x", false),
        ] {
            assert_eq!(has_reply_prefix(s), want, "{s}");
        }
    }

    #[test]
    fn rejects_non_email() {
        assert_eq!(parse(b""), Err(MessageError::Empty));
        assert_eq!(parse(b"  \r\n"), Err(MessageError::Empty));
        assert_eq!(
            parse(b"just some words\nno headers"),
            Err(MessageError::NotAnEmail)
        );
    }

    #[test]
    fn automatic_mail() {
        let raw = b"From: a@example.com\r\nAuto-Submitted: auto-replied\r\nSubject: x\r\n\r\nbody";
        assert_eq!(parse(raw).unwrap().automatic(), Some("auto-submitted"));
        let raw = b"From: a@example.com\r\nAuto-Submitted: no\r\nSubject: x\r\n\r\nbody";
        assert_eq!(parse(raw).unwrap().automatic(), None);
        let raw = b"From: a@example.com\r\nPrecedence: Bulk\r\nSubject: x\r\n\r\nbody";
        assert_eq!(parse(raw).unwrap().automatic(), Some("precedence"));
        let raw = b"From: a@example.com\r\nList-Id: <news.example.com>\r\nSubject: x\r\n\r\nbody";
        assert_eq!(parse(raw).unwrap().automatic(), Some("list-id"));
    }
}
