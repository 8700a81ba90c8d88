//! Labels and values: the table of label aliases the standard formats are
//! written with, matching a line's label, and cleaning values (order ids,
//! phone numbers, names, ratings, statuses, the template's placeholders).

use std::collections::HashMap;
use std::sync::OnceLock;

use super::Field;

/// What a label line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Label {
    Field(Field),
    /// `Customer Name & Number:` holds both.
    NameAndNumber,
    Tier,
    /// Known labels that are not fields (`Attachments:`): they end the
    /// previous value.
    Other,
}

/// Label aliases, normalised: lower case, no markup, no parenthesised notes,
/// no spaces around `/` and `&`, single spaces.
const LABELS: &[(&str, Label)] = &[
    ("customer name", Label::Field(Field::CustomerName)),
    ("customer full name", Label::Field(Field::CustomerName)),
    ("customer", Label::Field(Field::CustomerName)),
    ("client name", Label::Field(Field::CustomerName)),
    ("user name", Label::Field(Field::CustomerName)),
    ("name of customer", Label::Field(Field::CustomerName)),
    ("order id/lead id", Label::Field(Field::OrderId)),
    ("order/lead id", Label::Field(Field::OrderId)),
    ("order id", Label::Field(Field::OrderId)),
    ("lead id", Label::Field(Field::OrderId)),
    ("order #", Label::Field(Field::OrderId)),
    ("order no", Label::Field(Field::OrderId)),
    ("order no.", Label::Field(Field::OrderId)),
    ("order number", Label::Field(Field::OrderId)),
    ("order", Label::Field(Field::OrderId)),
    ("phone number", Label::Field(Field::Phone)),
    ("phone", Label::Field(Field::Phone)),
    ("phone no", Label::Field(Field::Phone)),
    ("phone no.", Label::Field(Field::Phone)),
    ("customer number", Label::Field(Field::Phone)),
    ("customer phone", Label::Field(Field::Phone)),
    ("customer phone number", Label::Field(Field::Phone)),
    ("customer mobile", Label::Field(Field::Phone)),
    ("mobile", Label::Field(Field::Phone)),
    ("mobile number", Label::Field(Field::Phone)),
    ("mobile no", Label::Field(Field::Phone)),
    ("mobile no.", Label::Field(Field::Phone)),
    ("contact number", Label::Field(Field::Phone)),
    ("contact no", Label::Field(Field::Phone)),
    ("contact no.", Label::Field(Field::Phone)),
    ("customer name&number", Label::NameAndNumber),
    ("customer name and number", Label::NameAndNumber),
    ("customer name/number", Label::NameAndNumber),
    ("customer name&phone", Label::NameAndNumber),
    ("customer name&contact", Label::NameAndNumber),
    ("customer details", Label::NameAndNumber),
    ("device", Label::Field(Field::Device)),
    ("device info", Label::Field(Field::Device)),
    ("device details", Label::Field(Field::Device)),
    ("device model", Label::Field(Field::Device)),
    ("model", Label::Field(Field::Device)),
    ("pickup slot/date", Label::Field(Field::PickupSlot)),
    ("pickup date/slot", Label::Field(Field::PickupSlot)),
    ("pickup slot", Label::Field(Field::PickupSlot)),
    ("pickup date", Label::Field(Field::PickupSlot)),
    ("pick-up slot/date", Label::Field(Field::PickupSlot)),
    ("slot/date", Label::Field(Field::PickupSlot)),
    ("issue", Label::Field(Field::Issue)),
    ("issue details", Label::Field(Field::Issue)),
    ("detailed description", Label::Field(Field::Issue)),
    ("detailed complaint", Label::Field(Field::Issue)),
    ("complaint", Label::Field(Field::Issue)),
    ("description", Label::Field(Field::Issue)),
    ("issue summary", Label::Field(Field::IssueSummary)),
    ("summary", Label::Field(Field::IssueSummary)),
    ("promised by", Label::Field(Field::PromisedBy)),
    ("customer mood", Label::Field(Field::CustomerMood)),
    ("mood", Label::Field(Field::CustomerMood)),
    (
        "suggested resolution",
        Label::Field(Field::SuggestedResolution),
    ),
    (
        "proposed resolution",
        Label::Field(Field::SuggestedResolution),
    ),
    ("category", Label::Field(Field::Category)),
    ("vendor", Label::Field(Field::Vendor)),
    ("vendor name", Label::Field(Field::Vendor)),
    ("vendor id", Label::Field(Field::Vendor)),
    ("vendor name/id", Label::Field(Field::Vendor)),
    ("vendor details", Label::Field(Field::Vendor)),
    ("ticket id", Label::Field(Field::TicketId)),
    ("ticket", Label::Field(Field::TicketId)),
    ("ticket no", Label::Field(Field::TicketId)),
    ("ticket number", Label::Field(Field::TicketId)),
    (
        "negative experience risk rating",
        Label::Field(Field::RiskRating),
    ),
    ("risk rating", Label::Field(Field::RiskRating)),
    ("risk", Label::Field(Field::RiskRating)),
    ("status", Label::Field(Field::Status)),
    ("ticket status", Label::Field(Field::Status)),
    ("resolution", Label::Field(Field::Resolution)),
    ("resolution note", Label::Field(Field::Resolution)),
    ("final resolution", Label::Field(Field::Resolution)),
    ("remarks", Label::Field(Field::Resolution)),
    ("remark", Label::Field(Field::Resolution)),
    ("tier", Label::Tier),
    ("attachments", Label::Other),
    ("attachment", Label::Other),
    ("field", Label::Other),
    ("entry", Label::Other),
];

/// Longest label that is worth looking for; anything longer before the colon
/// is a sentence, not a label.
const MAX_LABEL: usize = 48;

/// The label table as a map, built on first use.
fn label_map() -> &'static HashMap<&'static str, Label> {
    static MAP: OnceLock<HashMap<&'static str, Label>> = OnceLock::new();
    MAP.get_or_init(|| LABELS.iter().copied().collect())
}

/// Reads `Label: value` at the start of a line: the label and the rest.
///
/// This runs on every line of every message, so the label is normalised
/// into a small buffer on the stack (labels are ASCII), and a line without a
/// colon near its start is given up on at once.
pub(super) fn match_label(line: &str) -> Option<(Label, &str)> {
    let t = line
        .trim_start()
        .trim_start_matches(['*', '_', '•', '·', '-', '–', ' ', '\t']);
    let bytes = t.as_bytes();
    let window = &bytes[..bytes.len().min(MAX_LABEL + 16)];
    let (colon, colon_len) = match window.iter().position(|&b| b == b':') {
        Some(i) => (i, 1),
        None => match t.get(..window.len()).and_then(|w| w.find('：')) {
            Some(i) => (i, '：'.len_utf8()),
            None => return order_hash_line(t),
        },
    };
    let mut key = [0u8; MAX_LABEL];
    let mut n = 0;
    let mut depth = 0usize;
    let mut after_sep = false;
    for &b in &bytes[..colon] {
        match b {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b'*' | b'_' => {}
            _ if depth > 0 => {}
            b' ' | b'\t' => {
                if n > 0 && key[n - 1] != b' ' && !after_sep {
                    key[n] = b' ';
                    n += 1;
                }
            }
            b'/' | b'&' => {
                if n > 0 && key[n - 1] == b' ' {
                    n -= 1;
                }
                key[n] = b;
                n += 1;
                after_sep = true;
                if n == MAX_LABEL {
                    return None;
                }
                continue;
            }
            0x80.. => return None,
            _ => {
                key[n] = b.to_ascii_lowercase();
                n += 1;
            }
        }
        after_sep = false;
        if n == MAX_LABEL {
            return None;
        }
    }
    while n > 0 && key[n - 1] == b' ' {
        n -= 1;
    }
    let key = std::str::from_utf8(&key[..n]).ok()?;
    let label = *label_map().get(key)?;
    let rest = t[colon + colon_len..].trim_start_matches(['*', '_']);
    Some((label, rest))
}

/// `Order #12345` written without a colon.
fn order_hash_line(t: &str) -> Option<(Label, &str)> {
    let head = t.get(..7)?;
    if !head.eq_ignore_ascii_case("order #") {
        return None;
    }
    let rest = &t[7..];
    (rest.split_whitespace().count() == 1).then_some((Label::Field(Field::OrderId), rest))
}

/// A value left as the template had it, or written to say "nothing".
pub(super) fn is_placeholder(v: &str) -> bool {
    let v = v.trim().trim_end_matches(['.', ',']);
    if v.is_empty() {
        return true;
    }
    if (v.starts_with('[') && v.ends_with(']')) || (v.starts_with('<') && v.ends_with('>')) {
        return true;
    }
    if v.chars()
        .all(|c| c == 'X' || c == 'x' || c == '-' || c == ' ' || c == '_' || c == '.')
    {
        return true;
    }
    [
        "n/a",
        "na",
        "nil",
        "none",
        "tbd",
        "unknown",
        "not known",
        "not available",
        "-",
    ]
    .iter()
    .any(|p| v.eq_ignore_ascii_case(p))
}

/// Removes markup from the ends of a value (`**`, `__`).
pub(super) fn clean_value(v: &str) -> &str {
    v.trim_matches(|c: char| c == '*' || c == '_' || c.is_whitespace())
}

/// Order ids: no `#`, first token, no trailing punctuation.
pub(super) fn normalize_order_id(v: &str) -> Option<String> {
    let v = clean_value(v);
    if is_placeholder(v) {
        return None;
    }
    let token = v
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '/')
        .map(|t| t.trim_start_matches('#'))
        .find(|t| !t.is_empty())?;
    let token = token.trim_end_matches(|c: char| !c.is_alphanumeric());
    let token = token.trim_start_matches(|c: char| !c.is_alphanumeric());
    if token.is_empty() || !token.chars().any(|c| c.is_ascii_digit()) || is_placeholder(token) {
        return None;
    }
    Some(token.to_string())
}

/// Phone numbers: the first number in the value, separators removed, a
/// leading `+` kept. Fewer than six digits is not a phone number.
pub(super) fn normalize_phone(v: &str) -> Option<String> {
    let (start, end) = phone_span(v)?;
    let mut out = String::with_capacity(end - start);
    for c in v[start..end].chars() {
        if c.is_ascii_digit() || (c == '+' && out.is_empty()) {
            out.push(c);
        }
    }
    Some(out)
}

/// Byte range of the first phone-like run: digits with spaces, dashes, dots
/// and brackets, at least six digits.
pub(super) fn phone_span(v: &str) -> Option<(usize, usize)> {
    let bytes = v.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit()
            || (b == b'+' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
            || (b == b'('
                && bytes
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'+'))
        {
            let start = i;
            let mut end = i;
            let mut digits = 0;
            let mut j = i;
            while j < bytes.len() {
                let c = bytes[j];
                if c.is_ascii_digit() {
                    digits += 1;
                    end = j + 1;
                } else if matches!(c, b' ' | b'-' | b'.' | b'(' | b')' | b'+') {
                    if c == b')' {
                        end = j + 1;
                    }
                } else {
                    break;
                }
                j += 1;
            }
            if digits >= 6 {
                // Keep the opening bracket only if it belongs to the number.
                return Some((start, end));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    None
}

/// `Priya Sharma, 98765 43210`, `Neha (9812345678)`, `98765 43210 - Priya`.
pub(super) fn split_name_and_number(v: &str) -> (Option<String>, Option<String>) {
    let v = clean_value(v);
    if is_placeholder(v) {
        return (None, None);
    }
    match phone_span(v) {
        Some((s, e)) => {
            let phone = normalize_phone(&v[s..e]);
            let sep = |c: char| {
                c.is_whitespace()
                    || matches!(c, ',' | '-' | '–' | '|' | '/' | '(' | ')' | ':' | ';')
            };
            let before = v[..s].trim_matches(sep);
            let after = v[e..].trim_matches(sep);
            let name = if !before.is_empty() { before } else { after };
            (clean_name(name), phone)
        }
        None => (clean_name(v), None),
    }
}

pub(super) fn clean_name(v: &str) -> Option<String> {
    let v = clean_value(v).trim_end_matches([',', '.', ';', '-']).trim();
    (!is_placeholder(v)).then(|| v.to_string())
}

pub(super) fn parse_rating(v: &str, max: u8) -> Option<u8> {
    let d = v.chars().find(|c| c.is_ascii_digit())?;
    let n = d.to_digit(10)? as u8;
    (1..=max).contains(&n).then_some(n)
}

pub(super) fn canonical_status(v: &str) -> String {
    let l = v.trim().trim_end_matches('.').to_lowercase();
    let first = l
        .split(['(', '-', '–', ',', ';'])
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    match first.as_str() {
        "high priority" | "high-priority" | "priority" => "high_priority".into(),
        "resolved" | "closed" | "fixed" | "done" => "resolved".into(),
        "escalated" => "escalated".into(),
        "reopened" | "reopen" | "re-opened" => "reopened".into(),
        "open" | "pending" | "in progress" => first.replace(' ', "_"),
        _ => first.replace(' ', "_"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let cases: &[(&str, Option<Label>)] = &[
            (
                "Customer Name: Priya",
                Some(Label::Field(Field::CustomerName)),
            ),
            (
                "**Customer Name:** Priya",
                Some(Label::Field(Field::CustomerName)),
            ),
            ("*Order ID*: 12", Some(Label::Field(Field::OrderId))),
            ("Order ID / Lead ID: 12", Some(Label::Field(Field::OrderId))),
            ("ORDER ID/LEAD ID : 12", Some(Label::Field(Field::OrderId))),
            (
                "Promised By (If Known): Ravi",
                Some(Label::Field(Field::PromisedBy)),
            ),
            (
                "Customer Name & Number: P, 98765 43210",
                Some(Label::NameAndNumber),
            ),
            (
                "Pickup Slot / Date: 12 Nov",
                Some(Label::Field(Field::PickupSlot)),
            ),
            ("- Mobile: 98765", Some(Label::Field(Field::Phone))),
            (
                "Negative Experience Risk Rating: 4/5",
                Some(Label::Field(Field::RiskRating)),
            ),
            ("Order #12345", Some(Label::Field(Field::OrderId))),
            ("Order #12345 was late", None),
            ("The customer said: refund", None),
            ("Issue", None),
            ("Note: x", None),
        ];
        for (line, want) in cases {
            assert_eq!(match_label(line).map(|(l, _)| l), *want, "{line}");
        }
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize_phone("+91 98765-43210").as_deref(),
            Some("+919876543210")
        );
        assert_eq!(
            normalize_phone("(987) 654.3210").as_deref(),
            Some("9876543210")
        );
        assert_eq!(
            normalize_phone("call 98765 43210 / 91234 56789").as_deref(),
            Some("9876543210")
        );
        assert_eq!(normalize_phone("12345"), None);
        assert_eq!(normalize_order_id("#CK482913").as_deref(), Some("CK482913"));
        assert_eq!(
            normalize_order_id("1048276 / L-55321").as_deref(),
            Some("1048276")
        );
        assert_eq!(normalize_order_id("[XXXXXX]"), None);
        assert_eq!(normalize_order_id("XXXXXX"), None);
        assert_eq!(
            split_name_and_number("Priya Sharma, 98765 43210"),
            (Some("Priya Sharma".into()), Some("9876543210".into()))
        );
        assert_eq!(
            split_name_and_number("Arjun Mehta - +91 99887 66554"),
            (Some("Arjun Mehta".into()), Some("+919988766554".into()))
        );
        assert_eq!(
            split_name_and_number("Neha (9812345678)"),
            (Some("Neha".into()), Some("9812345678".into()))
        );
        assert_eq!(
            split_name_and_number("98765 43210 - Priya"),
            (Some("Priya".into()), Some("9876543210".into()))
        );
        assert_eq!(parse_rating("4/5", 5), Some(4));
        assert_eq!(parse_rating("7", 5), None);
        assert_eq!(canonical_status("High Priority"), "high_priority");
        assert_eq!(canonical_status("Resolved."), "resolved");
    }

    #[test]
    fn placeholders() {
        for p in [
            "[Insert]",
            "[XXXXXX]",
            "[Customer Full Name]",
            "[e.g., iPhone XR]",
            "",
            "N/A",
            "XXXXXXXXXX",
        ] {
            assert!(is_placeholder(p), "{p:?}");
        }
        for v in ["Priya", "iPhone XR", "[sic] real"] {
            assert!(!is_placeholder(v), "{v:?}");
        }
    }
}
