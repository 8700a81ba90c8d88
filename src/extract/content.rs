//! The author's own lines of a message: quoted history (`On ... wrote:`,
//! `-----Original Message-----`, Outlook header blocks, `>` lines) and the
//! signature dropped, forwarded messages kept.

use super::labels::match_label;
use crate::message::is_forward_subject;

/// The author's own lines of a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Content<'a> {
    /// Lines the author wrote, including forwarded messages, without quoted
    /// history and without the signature.
    pub lines: Vec<&'a str>,
    /// `Subject:` lines of forwarded messages' header blocks.
    pub forwarded_subjects: Vec<&'a str>,
}

#[derive(PartialEq, Eq)]
enum State {
    Content,
    /// Inside a forwarded message's header block (`From:`, `Date:`, ...).
    ForwardHeaders,
    /// After a `-- ` delimiter: skipped up to a forwarded message.
    Signature,
}

/// Splits the author's content from quoted history and signature.
///
/// `subject` decides how Outlook-style header blocks are read: in a forward
/// (`Fwd:`/`FW:`) they introduce the forwarded message, which is content; in
/// anything else they introduce the quoted history, which is not.
pub fn author_content<'a>(text: &'a str, subject: &str) -> Content<'a> {
    let forward = is_forward_subject(subject);
    let all: Vec<&str> = text.lines().collect();
    let mut c = Content::default();
    let mut state = State::Content;
    let mut i = 0;
    while i < all.len() {
        let line = all[i].trim_end();
        let t = line.trim_start();
        if is_forward_marker(t) {
            state = State::ForwardHeaders;
            c.lines.push(line);
            i += 1;
            continue;
        }
        match state {
            State::ForwardHeaders => {
                if t.is_empty() {
                    state = State::Content;
                } else if let Some(s) = header_value(t, "subject") {
                    c.forwarded_subjects.push(s);
                } else if !looks_like_header(t) {
                    state = State::Content;
                    continue;
                }
                c.lines.push(line);
            }
            State::Signature => {
                if !forward && quote_starts(&all, i) {
                    break;
                }
                if forward && outlook_block(&all, i) {
                    state = State::ForwardHeaders;
                    continue;
                }
            }
            State::Content => {
                if t.starts_with('>') {
                    // Inline quote: skipped, the author's text may follow.
                } else if line == "-- " || line == "--" {
                    state = State::Signature;
                } else if quote_starts(&all, i) {
                    if forward && (outlook_block(&all, i) || is_original_message(t)) {
                        state = State::ForwardHeaders;
                        if is_original_message(t) {
                            c.lines.push(line);
                        } else {
                            continue;
                        }
                    } else {
                        break;
                    }
                } else {
                    c.lines.push(line);
                }
            }
        }
        i += 1;
    }
    strip_signoff_signature(&mut c.lines);
    while c.lines.last().is_some_and(|l| l.trim().is_empty()) {
        c.lines.pop();
    }
    c
}

pub(super) fn is_forward_marker(t: &str) -> bool {
    let lower_has = |needle: &str| {
        t.len() >= needle.len()
            && t.as_bytes()
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    (t.starts_with("---") && lower_has("forwarded message"))
        || t.eq_ignore_ascii_case("begin forwarded message:")
}

fn is_original_message(t: &str) -> bool {
    let core = t.trim_matches(|c: char| c == '-' || c.is_whitespace());
    t.starts_with("---") && core.eq_ignore_ascii_case("original message")
}

/// Where quoted history begins: `On ... wrote:`, `-----Original Message-----`,
/// or an Outlook header block.
fn quote_starts(all: &[&str], i: usize) -> bool {
    let t = all[i].trim();
    // Every form starts with `-`, `_`, `*` or the first letter of "On",
    // "Am", "Le", "El" or "From": most lines are ruled out by one byte.
    if !matches!(
        t.as_bytes().first(),
        Some(
            b'-' | b'_'
                | b'*'
                | b'o'
                | b'O'
                | b'a'
                | b'A'
                | b'l'
                | b'L'
                | b'e'
                | b'E'
                | b'f'
                | b'F'
        )
    ) {
        return false;
    }
    if is_original_message(t) || outlook_block(all, i) {
        return true;
    }
    let starts_on = |s: &str| {
        ["on ", "am ", "le ", "el "]
            .iter()
            .any(|p| s.get(..3).is_some_and(|h| h.eq_ignore_ascii_case(p)))
    };
    let ends_wrote = |s: &str| {
        let s = s.trim_end();
        ["wrote:", "schrieb:", "a écrit :", "a écrit:", "escribió:"]
            .iter()
            .any(|w| {
                s.len() >= w.len()
                    && s.is_char_boundary(s.len() - w.len())
                    && s[s.len() - w.len()..].eq_ignore_ascii_case(w)
            })
    };
    if starts_on(t) {
        if ends_wrote(t) {
            return true;
        }
        // Clients wrap a long attribution line once.
        if let Some(next) = all.get(i + 1)
            && ends_wrote(next)
            && !next.trim().is_empty()
            && next.len() < 120
        {
            return true;
        }
    }
    false
}

/// An Outlook header block: `From:` followed within four lines by `Sent:` or
/// `Date:` and by `To:` or `Subject:`.
fn outlook_block(all: &[&str], i: usize) -> bool {
    let t = strip_markup(all[i].trim());
    if header_value(t, "from").is_none() {
        return false;
    }
    let window = &all[i + 1..all.len().min(i + 5)];
    let has = |names: &[&str]| {
        window.iter().any(|l| {
            let l = strip_markup(l.trim());
            names.iter().any(|n| header_value(l, n).is_some())
        })
    };
    has(&["sent", "date"]) && has(&["to", "subject"])
}

fn strip_markup(s: &str) -> &str {
    s.trim_matches(|c: char| c == '*' || c == '_' || c.is_whitespace())
}

/// The value of `Name: value` when the line is that header (case-insensitive).
fn header_value<'a>(t: &'a str, name: &str) -> Option<&'a str> {
    let t = strip_markup(t);
    let head = t.get(..name.len())?;
    if !head.eq_ignore_ascii_case(name) {
        return None;
    }
    let rest = t[name.len()..].trim_start_matches(['*', '_']);
    let rest = rest.strip_prefix(':')?;
    Some(rest.trim_matches(|c: char| c == '*' || c == '_' || c.is_whitespace()))
}

fn looks_like_header(t: &str) -> bool {
    [
        "from", "date", "sent", "to", "cc", "bcc", "subject", "reply-to",
    ]
    .iter()
    .any(|n| header_value(t, n).is_some())
}

/// Sign-off lines (`Best,`, `Regards,`): they end a field's value, and what
/// follows the last of them, when short, is the signature.
pub(super) fn is_signoff(t: &str) -> bool {
    if t.len() > 40 {
        return false;
    }
    let t = strip_markup(t).trim_end_matches([',', '.', '!']).trim();
    if t.len() > 24 {
        return false;
    }
    const SIGNOFFS: &[&str] = &[
        "best",
        "best regards",
        "regards",
        "kind regards",
        "warm regards",
        "warmest regards",
        "with regards",
        "thanks",
        "thank you",
        "thanks and regards",
        "thanks & regards",
        "many thanks",
        "cheers",
        "sincerely",
        "yours sincerely",
        "yours truly",
        "rgds",
        "br",
    ];
    SIGNOFFS.iter().any(|s| t.eq_ignore_ascii_case(s))
}

/// Template closers that end a value ("Please advise on the next steps...").
pub(super) fn is_closing(t: &str) -> bool {
    const CLOSERS: &[&str] = &[
        "please advise",
        "please let me know",
        "please let us know",
        "kindly advise",
        "kindly let me know",
        "kindly look into",
        "please look into",
        "looking forward",
        "let me know",
    ];
    CLOSERS
        .iter()
        .any(|c| t.get(..c.len()).is_some_and(|h| h.eq_ignore_ascii_case(c)))
}

fn strip_signoff_signature(lines: &mut Vec<&str>) {
    let Some(pos) = lines.iter().rposition(|l| is_signoff(l)) else {
        return;
    };
    let after = lines[pos + 1..]
        .iter()
        .filter(|l| !l.trim().is_empty())
        .count();
    let labelled = lines[pos + 1..].iter().any(|l| match_label(l).is_some());
    if after <= 6 && !labelled {
        lines.truncate(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_history_is_not_content() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "Re: x",
                "New text\n\nOn Mon, 23 Nov 2026 at 10:02, Priya <p@example.com> wrote:\n> old\nold too\n",
                &["New text"],
            ),
            (
                "Re: x",
                "New\nOn Mon, 23 Nov 2026 at 10:02, Priya Sharma\n<p@example.com> wrote:\n> old\n",
                &["New"],
            ),
            (
                "RE: x",
                "Mine\n\n-----Original Message-----\nFrom: a\nold\n",
                &["Mine"],
            ),
            (
                "RE: x",
                "Mine\n________________________________\nFrom: Priya\nSent: Monday\nTo: ops\nSubject: x\n\nold\n",
                &["Mine", "________________________________"],
            ),
            ("x", "a\n> quoted\nb\n", &["a", "b"]),
            ("x", "a\n-- \nRavi\nSales Executive\n", &["a"]),
            ("x", "a\n\nThanks,\nRavi\nSales\n", &["a"]),
        ];
        for (subject, text, want) in cases {
            let c = author_content(text, subject);
            assert_eq!(c.lines, *want, "{text:?}");
        }
    }
}
