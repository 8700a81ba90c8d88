//! Text as people read it in mail: ages ("3 h"), one-line shortening,
//! wrapping to a phone's width without breaking URLs, and times written
//! the way people write them ("Tue 24 Nov, 20:09 IST").
//!
//! Pure. Every text part the daemon sends goes through [`wrap_text`], so
//! no line is longer than [`WIDTH`] characters, whatever an agent typed.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The longest line of any text part the daemon sends (RFC 5322's
/// recommended 78, which also fits a phone held upright).
pub const WIDTH: usize = 78;

/// How old something is: "35 min" under an hour, "5 h" under two days,
/// then "3 d" (rounded down; "0 min" for the future).
pub fn age(seconds: i64) -> String {
    let minutes = seconds.max(0) / 60;
    if minutes < 60 {
        format!("{minutes} min")
    } else if minutes < 48 * 60 {
        format!("{} h", minutes / 60)
    } else {
        format!("{} d", minutes / (24 * 60))
    }
}

/// `text` as one line of at most `max` characters: line breaks and runs of
/// spaces become one space; a longer text is cut at a word boundary (unless
/// that loses more than a third) and ends with "…".
pub fn shorten(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let limit = line
        .char_indices()
        .nth(max.saturating_sub(1))
        .map_or(line.len(), |(i, _)| i);
    let head = &line[..limit];
    let cut = match head.rfind(' ') {
        Some(i) if i >= limit * 2 / 3 => &head[..i],
        _ => head,
    };
    // "late.…" reads as a typo: the ellipsis replaces the stop.
    let cut = cut.trim_end_matches(|c: char| c.is_whitespace() || ",;:-–.".contains(c));
    format!("{cut}…")
}

/// Greedy word wrap of one paragraph into lines of at most `width`
/// characters. A word longer than `width` (a URL, say) is never broken: it
/// gets a line of its own.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut len = 0;
    for word in text.split_whitespace() {
        let w = word.chars().count();
        if len > 0 && len + 1 + w > width {
            lines.push(std::mem::take(&mut line));
            len = 0;
        }
        if len > 0 {
            line.push(' ');
            len += 1;
        }
        line.push_str(word);
        len += w;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Every line of `text` wrapped to `width`, keeping its line breaks, blank
/// lines and each line's indentation (continuations are indented alike,
/// and by two more after a list's "- ").
pub fn wrap_text(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line == "-- " {
            // The signature separator keeps its space (RFC 3676 4.3).
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if line.chars().count() <= width {
            out.push_str(line.trim_end());
            out.push('\n');
            continue;
        }
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let hang = if body.starts_with("- ") || body.starts_with("* ") {
            format!("{indent}  ")
        } else {
            indent.to_string()
        };
        let room = |prefix: &str| width.saturating_sub(prefix.chars().count()).max(20);
        let first = wrap(body, room(indent));
        let mut rest = String::new();
        for (i, l) in first.iter().enumerate() {
            if i == 0 {
                out.push_str(indent);
                out.push_str(l);
                out.push('\n');
            } else {
                rest.push_str(l);
                rest.push(' ');
            }
        }
        for l in wrap(&rest, room(&hang)) {
            out.push_str(&hang);
            out.push_str(&l);
            out.push('\n');
        }
    }
    // `split` saw one line more than the text has: its newline is extra.
    out.pop();
    out
}

/// `text` as a `format=flowed` text part (RFC 3676): each line wrapped to
/// `width` characters counting the space that marks a soft break, so a
/// mail program that knows the format (Apple Mail, Thunderbird) joins a
/// paragraph's lines again and wraps it to its own screen, and one that
/// does not shows lines no longer than `width`. Original line breaks stay
/// hard; trailing spaces of hard lines go; lines starting with a space, `>`
/// or `From ` are space-stuffed; the signature separator `-- ` stays.
pub fn flowed(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    for line in text.trim_end_matches('\n').split('\n') {
        let line = line.trim_end_matches('\r');
        if line == "-- " {
            out.push_str("-- \n");
            continue;
        }
        let line = line.trim_end();
        let pieces = if line.chars().count() <= width {
            vec![line.to_string()]
        } else {
            let body = line.trim_start();
            let indent = &line[..line.len() - body.len()];
            let room = width.saturating_sub(1 + indent.chars().count()).max(20);
            let mut pieces = wrap(body, room);
            if let Some(first) = pieces.first_mut() {
                first.insert_str(0, indent);
            }
            pieces
        };
        let last = pieces.len().saturating_sub(1);
        for (i, piece) in pieces.into_iter().enumerate() {
            if piece.starts_with(' ') || piece.starts_with('>') || piece.starts_with("From ") {
                out.push(' ');
            }
            out.push_str(&piece);
            if i < last {
                out.push(' ');
            }
            out.push('\n');
        }
    }
    out
}

/// What a mail program that knows `format=flowed` shows of a flowed text:
/// soft-broken lines joined, space-stuffing removed (RFC 3676 4.2).
pub fn unflow(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
        let line = line.trim_end_matches('\r');
        let line = line.strip_prefix(' ').unwrap_or(line);
        out.push_str(line);
        if !line.ends_with(' ') || line == "-- " {
            out.push('\n');
        }
    }
    if !text.ends_with('\n') && out.ends_with('\n') {
        out.pop();
    }
    out
}

/// A time as people write it in `zone`: "Tue 24 Nov, 20:09 IST". The year
/// is added when it is not the year of `now`.
pub fn local_time(at: Timestamp, zone: &TimeZone, now: Timestamp) -> String {
    let z = at.to_zoned(zone.clone());
    let this_year = now.to_zoned(zone.clone()).year() == z.year();
    let date = if this_year {
        z.strftime("%a %-d %b").to_string()
    } else {
        z.strftime("%a %-d %b %Y").to_string()
    };
    format!("{date}, {} {}", z.strftime("%H:%M"), abbreviation(&z))
}

/// Only the clock time, "14:30 IST", for a time within the day of `now`
/// (as the reader sees it); else as [`local_time`].
pub fn local_clock(at: Timestamp, zone: &TimeZone, now: Timestamp) -> String {
    let z = at.to_zoned(zone.clone());
    if z.date() == now.to_zoned(zone.clone()).date() {
        format!("{} {}", z.strftime("%H:%M"), abbreviation(&z))
    } else {
        local_time(at, zone, now)
    }
}

/// The zone's abbreviation at that time ("IST", "EDT"), or its offset
/// ("+04") where the time-zone database has no letters for it.
fn abbreviation(z: &jiff::Zoned) -> String {
    let abbr = z.strftime("%Z").to_string();
    if abbr.is_empty() {
        z.strftime("%:z").to_string()
    } else {
        abbr
    }
}

/// An RFC 3339 date (as triage records a message's `Date:`) as a
/// timestamp.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    s.parse::<Timestamp>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        for (secs, want) in [
            (-5, "0 min"),
            (59, "0 min"),
            (45 * 60, "45 min"),
            (3600, "1 h"),
            (47 * 3600 + 59 * 60, "47 h"),
            (48 * 3600, "2 d"),
            (10 * 86_400, "10 d"),
        ] {
            assert_eq!(age(secs), want, "{secs}");
        }
    }

    #[test]
    fn shortening() {
        assert_eq!(shorten("a\n  b", 10), "a b");
        assert_eq!(
            shorten("the vendor came three hours late and refused", 20),
            "the vendor came…"
        );
        assert_eq!(
            shorten("x".repeat(30).as_str(), 10),
            format!("{}…", "x".repeat(9))
        );
        assert_eq!(
            shorten("The vendor was late. He refused the pickup", 24),
            "The vendor was late…"
        );
    }

    #[test]
    fn wrapping_keeps_urls_lines_and_indentation() {
        let url = format!("https://cx.example.com/{}", "a".repeat(90));
        let text = format!(
            "short line\n\n  - {} {url} end\nIssue: {}\n",
            "word ".repeat(20).trim(),
            "long ".repeat(30).trim()
        );
        let out = wrap_text(&text, 40);
        for l in out.lines() {
            assert!(l.chars().count() <= 40 || l.trim() == url, "{l:?}");
        }
        assert!(out.lines().any(|l| l.trim() == url), "the URL is whole");
        assert!(out.starts_with("short line\n\n  - word"));
        assert!(
            out.lines()
                .nth(3)
                .is_some_and(|l| l.starts_with("    word")),
            "{out}"
        );
        assert!(out.ends_with('\n'));
        assert_eq!(wrap_text("a\nb", 40), "a\nb");
        assert_eq!(wrap_text("text  \n-- \nsig", 40), "text\n-- \nsig");
        assert_eq!(wrap_text("a\nb\n", 40), "a\nb\n");
        assert_eq!(wrap_text("", 40), "");
    }

    #[test]
    fn flowed_text_fits_the_width_and_reflows_to_what_was_written() {
        let para = "We rescheduled her pickup twice from our side. She says she will post a one-star review on Trustpilot and Google if the pickup does not happen tomorrow morning.";
        let text = format!(
            "Tier 2, risk 5 of 5.\n\n{para}\n  Customer Name: Priya\nFrom the agent\n> quoted   \n-- \nsig\n"
        );
        let out = flowed(&text, 78);
        for line in out.lines() {
            assert!(line.chars().count() <= 78, "{line:?}");
        }
        let soft: Vec<&str> = out
            .lines()
            .filter(|l| l.ends_with(' ') && *l != "-- ")
            .collect();
        assert_eq!(soft.len(), 2, "the paragraph's two soft breaks: {out}");
        assert!(
            out.contains("\n   Customer Name: Priya\n"),
            "space-stuffed: {out}"
        );
        assert!(out.contains("\n From the agent\n"), "space-stuffed: {out}");
        assert!(
            out.contains("\n > quoted\n"),
            "stuffed, trailing spaces gone: {out}"
        );
        assert!(out.contains("\n-- \nsig\n"));
        assert_eq!(
            unflow(&out),
            format!(
                "Tier 2, risk 5 of 5.\n\n{para}\n  Customer Name: Priya\nFrom the agent\n> quoted\n-- \nsig\n"
            )
        );
    }

    #[test]
    fn times_as_people_write_them() {
        let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
        let ny = TimeZone::get("America/New_York").unwrap();
        let at: Timestamp = "2026-11-24T14:39:00Z".parse().unwrap();
        let now: Timestamp = "2026-11-24T15:00:00Z".parse().unwrap();
        assert_eq!(local_time(at, &kolkata, now), "Tue 24 Nov, 20:09 IST");
        assert_eq!(local_time(at, &ny, now), "Tue 24 Nov, 09:39 EST");
        assert_eq!(local_clock(at, &kolkata, now), "20:09 IST");
        let later: Timestamp = "2026-11-26T15:00:00Z".parse().unwrap();
        assert_eq!(local_clock(at, &kolkata, later), "Tue 24 Nov, 20:09 IST");
        let next_year: Timestamp = "2027-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(
            local_time(at, &kolkata, next_year),
            "Tue 24 Nov 2026, 20:09 IST"
        );
        let summer: Timestamp = "2026-07-01T14:00:00Z".parse().unwrap();
        assert_eq!(local_time(summer, &ny, summer), "Wed 1 Jul, 10:00 EDT");
    }
}
