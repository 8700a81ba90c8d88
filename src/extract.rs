//! Fixed-format extraction: from a message's text to labelled fields.
//!
//! Agents fill in the standard escalation templates of the procedures by hand,
//! in every mail client there is, so this module is forgiving about form
//! (bold markers, spacing around the colon, label aliases, values on the next
//! line) and strict about meaning: placeholders left from the template are
//! missing, quoted history is not the author's content, and nothing after the
//! signature counts.
//!
//! The work happens in two steps. [`author_content`] keeps the lines the
//! author wrote (dropping quoted replies and the signature, keeping forwarded
//! messages), and [`extract`] reads labelled fields, hashtags and the kind of
//! message from those lines.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::message::{Email, is_forward_subject};

/// A field of a case, as named in the JSON output and in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    CustomerName,
    OrderId,
    Phone,
    Device,
    PickupSlot,
    Issue,
    IssueSummary,
    PromisedBy,
    CustomerMood,
    SuggestedResolution,
    Category,
    Vendor,
    TicketId,
    RiskRating,
    Status,
    Resolution,
}

impl Field {
    pub const ALL: [Field; 16] = [
        Field::CustomerName,
        Field::OrderId,
        Field::Phone,
        Field::Device,
        Field::PickupSlot,
        Field::Issue,
        Field::IssueSummary,
        Field::PromisedBy,
        Field::CustomerMood,
        Field::SuggestedResolution,
        Field::Category,
        Field::Vendor,
        Field::TicketId,
        Field::RiskRating,
        Field::Status,
        Field::Resolution,
    ];

    /// The JSON and config name.
    pub fn name(self) -> &'static str {
        match self {
            Field::CustomerName => "customer_name",
            Field::OrderId => "order_id",
            Field::Phone => "phone",
            Field::Device => "device",
            Field::PickupSlot => "pickup_slot",
            Field::Issue => "issue",
            Field::IssueSummary => "issue_summary",
            Field::PromisedBy => "promised_by",
            Field::CustomerMood => "customer_mood",
            Field::SuggestedResolution => "suggested_resolution",
            Field::Category => "category",
            Field::Vendor => "vendor",
            Field::TicketId => "ticket_id",
            Field::RiskRating => "risk_rating",
            Field::Status => "status",
            Field::Resolution => "resolution",
        }
    }

    /// How a person would name it in a reply ("order ID").
    pub fn label(self) -> &'static str {
        match self {
            Field::CustomerName => "customer name",
            Field::OrderId => "order ID / lead ID",
            Field::Phone => "customer phone number",
            Field::Device => "device (model, storage, colour)",
            Field::PickupSlot => "pickup slot / date",
            Field::Issue => "issue (what went wrong, in the customer's words)",
            Field::IssueSummary => "issue summary",
            Field::PromisedBy => "promised by",
            Field::CustomerMood => "customer mood",
            Field::SuggestedResolution => "suggested resolution",
            Field::Category => "category",
            Field::Vendor => "vendor name / ID",
            Field::TicketId => "ticket ID",
            Field::RiskRating => "negative experience risk rating (1-5)",
            Field::Status => "status",
            Field::Resolution => "resolution",
        }
    }

    /// Values that end at the end of their line: names, ids, numbers.
    fn single_line(self) -> bool {
        !matches!(
            self,
            Field::Issue
                | Field::IssueSummary
                | Field::CustomerMood
                | Field::SuggestedResolution
                | Field::Resolution
        )
    }
}

/// The fields found in a message; absent ones are `None` and left out of JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pickup_slot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue_summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promised_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_mood: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_resolution: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk_rating: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

impl Fields {
    pub fn has(&self, f: Field) -> bool {
        match f {
            Field::RiskRating => self.risk_rating.is_some(),
            _ => self.text(f).is_some(),
        }
    }

    /// A text field's value (`None` for `risk_rating`, which is a number).
    pub fn text(&self, f: Field) -> Option<&str> {
        let v = match f {
            Field::CustomerName => &self.customer_name,
            Field::OrderId => &self.order_id,
            Field::Phone => &self.phone,
            Field::Device => &self.device,
            Field::PickupSlot => &self.pickup_slot,
            Field::Issue => &self.issue,
            Field::IssueSummary => &self.issue_summary,
            Field::PromisedBy => &self.promised_by,
            Field::CustomerMood => &self.customer_mood,
            Field::SuggestedResolution => &self.suggested_resolution,
            Field::Category => &self.category,
            Field::Vendor => &self.vendor,
            Field::TicketId => &self.ticket_id,
            Field::RiskRating => return None,
            Field::Status => &self.status,
            Field::Resolution => &self.resolution,
        };
        v.as_deref()
    }

    pub(crate) fn slot(&mut self, f: Field) -> Option<&mut Option<String>> {
        Some(match f {
            Field::CustomerName => &mut self.customer_name,
            Field::OrderId => &mut self.order_id,
            Field::Phone => &mut self.phone,
            Field::Device => &mut self.device,
            Field::PickupSlot => &mut self.pickup_slot,
            Field::Issue => &mut self.issue,
            Field::IssueSummary => &mut self.issue_summary,
            Field::PromisedBy => &mut self.promised_by,
            Field::CustomerMood => &mut self.customer_mood,
            Field::SuggestedResolution => &mut self.suggested_resolution,
            Field::Category => &mut self.category,
            Field::Vendor => &mut self.vendor,
            Field::TicketId => &mut self.ticket_id,
            Field::RiskRating => return None,
            Field::Status => &mut self.status,
            Field::Resolution => &mut self.resolution,
        })
    }
}

/// What kind of message this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    IncorrectPromise,
    PickupComplaint,
    Escalation,
    StatusUpdate,
    NotEscalation,
}

impl Kind {
    pub fn is_escalation(self) -> bool {
        matches!(
            self,
            Kind::IncorrectPromise | Kind::PickupComplaint | Kind::Escalation
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::IncorrectPromise => "incorrect_promise",
            Kind::PickupComplaint => "pickup_complaint",
            Kind::Escalation => "escalation",
            Kind::StatusUpdate => "status_update",
            Kind::NotEscalation => "not_escalation",
        }
    }

    /// How the kind reads in a subject line or a digest.
    pub fn label(self) -> &'static str {
        match self {
            Kind::IncorrectPromise => "Incorrect promise",
            Kind::PickupComplaint => "Pickup complaint",
            Kind::Escalation => "Escalation",
            Kind::StatusUpdate => "Status update",
            Kind::NotEscalation => "Not an escalation",
        }
    }
}

/// The author's own lines of a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Content<'a> {
    /// Lines the author wrote, including forwarded messages, without quoted
    /// history and without the signature.
    pub lines: Vec<&'a str>,
    /// `Subject:` lines of forwarded messages' header blocks.
    pub forwarded_subjects: Vec<&'a str>,
}

/// Everything [`extract`] reads from a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub kind: Kind,
    pub fields: Fields,
    pub tags: Vec<String>,
    /// The agent's `Tier:` line, if any.
    pub tier: Option<u8>,
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

fn is_forward_marker(t: &str) -> bool {
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
fn is_signoff(t: &str) -> bool {
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
fn is_closing(t: &str) -> bool {
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

/// What a label line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
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
fn match_label(line: &str) -> Option<(Label, &str)> {
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
fn is_placeholder(v: &str) -> bool {
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
fn clean_value(v: &str) -> &str {
    v.trim_matches(|c: char| c == '*' || c == '_' || c.is_whitespace())
}

/// Order ids: no `#`, first token, no trailing punctuation.
pub fn normalize_order_id(v: &str) -> Option<String> {
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
pub fn normalize_phone(v: &str) -> Option<String> {
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
fn phone_span(v: &str) -> Option<(usize, usize)> {
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
fn split_name_and_number(v: &str) -> (Option<String>, Option<String>) {
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

fn clean_name(v: &str) -> Option<String> {
    let v = clean_value(v).trim_end_matches([',', '.', ';', '-']).trim();
    (!is_placeholder(v)).then(|| v.to_string())
}

fn parse_rating(v: &str, max: u8) -> Option<u8> {
    let d = v.chars().find(|c| c.is_ascii_digit())?;
    let n = d.to_digit(10)? as u8;
    (1..=max).contains(&n).then_some(n)
}

fn canonical_status(v: &str) -> String {
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

struct Pending {
    label: Label,
    lines: Vec<String>,
    /// The label line had no value: the value may start on the next line.
    waiting: bool,
    blank_seen: bool,
}

/// Reads fields, hashtags and kind from a message and its author content.
pub fn extract(email: &Email, content: &Content<'_>) -> Extracted {
    let mut fields = Fields::default();
    let mut tier = None;
    let mut seen_promised_by = false;
    let mut seen_pickup_labels = false;
    let mut pending: Option<Pending> = None;

    let finish = |p: Pending, fields: &mut Fields, tier: &mut Option<u8>| {
        let value = p.lines.join("\n");
        set_value(fields, tier, p.label, &value);
    };

    for raw in &content.lines {
        let line = raw.trim();
        if let Some((label, rest)) = match_label(line) {
            if let Some(p) = pending.take() {
                finish(p, &mut fields, &mut tier);
            }
            match label {
                Label::Field(Field::PromisedBy) => seen_promised_by = true,
                Label::Field(Field::PickupSlot)
                | Label::Field(Field::Vendor)
                | Label::NameAndNumber => seen_pickup_labels = true,
                _ => {}
            }
            let rest = clean_value(rest);
            let single = match label {
                Label::Field(f) => f.single_line(),
                _ => true,
            };
            let p = Pending {
                label,
                lines: if rest.is_empty() {
                    vec![]
                } else {
                    vec![rest.to_string()]
                },
                waiting: rest.is_empty(),
                blank_seen: false,
            };
            if single && !rest.is_empty() {
                finish(p, &mut fields, &mut tier);
            } else {
                pending = Some(p);
            }
            continue;
        }
        let Some(p) = pending.as_mut() else {
            continue;
        };
        if line.is_empty() {
            // One blank line is allowed between an empty label and its value.
            if p.waiting && !p.blank_seen {
                p.blank_seen = true;
                continue;
            }
            if let Some(p) = pending.take() {
                finish(p, &mut fields, &mut tier);
            }
            continue;
        }
        if is_signoff(line) || is_closing(line) || is_forward_marker(line) {
            if let Some(p) = pending.take() {
                finish(p, &mut fields, &mut tier);
            }
            continue;
        }
        p.lines.push(clean_value(line).to_string());
        p.waiting = false;
        let single = match p.label {
            Label::Field(f) => f.single_line(),
            _ => true,
        };
        if single && let Some(p) = pending.take() {
            finish(p, &mut fields, &mut tier);
        }
    }
    if let Some(p) = pending.take() {
        finish(p, &mut fields, &mut tier);
    }

    // Counted before the subject fallback: the body alone decides whether a
    // message without "Escalation" in its subject is one.
    let body_evidence = [
        fields.order_id.is_some(),
        fields.customer_name.is_some(),
        fields.phone.is_some(),
        fields.issue.is_some() || fields.issue_summary.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();

    if fields.order_id.is_none() {
        fields.order_id = order_id_from_subject(&email.subject).or_else(|| {
            content
                .forwarded_subjects
                .iter()
                .find_map(|s| order_id_from_subject(s))
        });
    }

    let tags = hashtags(&content.lines);
    let subject_lower = email.subject.to_lowercase();
    let fwd_subjects_lower: Vec<String> = content
        .forwarded_subjects
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let any_subject = |needle: &str| {
        contains_word(&subject_lower, needle)
            || fwd_subjects_lower.iter().any(|s| contains_word(s, needle))
    };

    let kind = if email.automatic().is_some() {
        Kind::NotEscalation
    } else if email.is_reply() && (fields.status.is_some() || !tags.is_empty()) {
        Kind::StatusUpdate
    } else if any_subject("escalation") || body_evidence >= 2 {
        let category_pickup = fields.category.as_deref().is_some_and(|c| {
            c.to_lowercase().contains("pickup") || c.to_lowercase().contains("pick-up")
        });
        if any_subject("incorrect promise") || seen_promised_by {
            Kind::IncorrectPromise
        } else if category_pickup || any_subject("pickup complaint") || seen_pickup_labels {
            Kind::PickupComplaint
        } else {
            Kind::Escalation
        }
    } else {
        Kind::NotEscalation
    };

    Extracted {
        kind,
        fields,
        tags,
        tier,
    }
}

fn set_value(fields: &mut Fields, tier: &mut Option<u8>, label: Label, value: &str) {
    let value = value.trim();
    match label {
        Label::Other => {}
        Label::Tier => {
            if tier.is_none() {
                *tier = parse_rating(value, 9).map(|t| t.min(2));
            }
        }
        Label::NameAndNumber => {
            let (name, phone) = split_name_and_number(value);
            if fields.customer_name.is_none() {
                fields.customer_name = name;
            }
            if fields.phone.is_none() {
                fields.phone = phone;
            }
        }
        Label::Field(Field::RiskRating) => {
            if fields.risk_rating.is_none() {
                fields.risk_rating = parse_rating(value, 5);
            }
        }
        Label::Field(f) => {
            let v = match f {
                Field::OrderId => normalize_order_id(value),
                Field::Phone => {
                    if is_placeholder(value) {
                        None
                    } else {
                        normalize_phone(value)
                    }
                }
                Field::CustomerName => {
                    // A name line that also carries the number.
                    if phone_span(value).is_some() {
                        let (name, phone) = split_name_and_number(value);
                        if fields.phone.is_none() {
                            fields.phone = phone;
                        }
                        name
                    } else {
                        clean_name(value)
                    }
                }
                Field::Status => (!is_placeholder(value)).then(|| canonical_status(value)),
                _ => (!is_placeholder(value)).then(|| value.to_string()),
            };
            if let Some(slot) = fields.slot(f) {
                // The first value wins: a forwarded copy or a later repeat
                // does not overwrite what the author wrote first.
                if slot.is_none() {
                    *slot = v;
                }
            }
        }
    }
}

/// `(Order #123)`, `Order #123`, `Order ID: 123` in a subject.
fn order_id_from_subject(subject: &str) -> Option<String> {
    let lower = subject.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("order") {
        let at = from + pos + 5;
        let rest = &subject[at..];
        let rest = rest.trim_start_matches([' ', ':']);
        let rest = strip_prefix_ci(rest, "id").unwrap_or(rest);
        let rest = rest.trim_start_matches([' ', ':']);
        if let Some(r) = rest
            .strip_prefix('#')
            .or_else(|| strip_prefix_ci(rest, "no."))
        {
            let r = r.trim_start();
            let end = r.find([')', ']', ' ', ',']).unwrap_or(r.len());
            if let Some(id) = normalize_order_id(&r[..end]) {
                return Some(id);
            }
        }
        from = at;
    }
    None
}

fn strip_prefix_ci<'a>(s: &'a str, p: &str) -> Option<&'a str> {
    s.get(..p.len())
        .filter(|h| h.eq_ignore_ascii_case(p))
        .map(|_| &s[p.len()..])
}

/// Whether `hay` contains `needle` starting at a word boundary.
fn contains_word(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        hay[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric())
    })
}

/// `#payout_fixed`-style tags: `#` after a space or at a line start, a
/// letter, then letters, digits and `_`. Tokens with digits and no `_`
/// (`#CK48291`) are order numbers, not tags.
fn hashtags(lines: &[&str]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for line in lines {
        let bytes = line.as_bytes();
        for (i, _) in line.match_indices('#') {
            if i > 0 && !matches!(bytes[i - 1], b' ' | b'\t' | b'(' | b',') {
                continue;
            }
            let rest = &line[i + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let tag = &rest[..end];
            let Some(first) = tag.chars().next() else {
                continue;
            };
            if !first.is_ascii_alphabetic() || tag.len() < 2 {
                continue;
            }
            if tag.chars().any(|c| c.is_ascii_digit()) && !tag.contains('_') {
                continue;
            }
            let before = line[..i].trim_end().to_ascii_lowercase();
            if ["order", "lead", "ticket", "id", "no", "no.", "number"]
                .iter()
                .any(|w| before.ends_with(w))
            {
                continue;
            }
            let tag = tag.to_ascii_lowercase();
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(subject: &str, text: &str) -> Email {
        Email {
            subject: subject.into(),
            text: text.into(),
            ..Email::default()
        }
    }

    fn run(subject: &str, text: &str) -> Extracted {
        let e = email(subject, text);
        let c = author_content(&e.text, &e.subject);
        extract(&e, &c)
    }

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

    #[test]
    fn values_span_lines_until_a_stop() {
        let x = run(
            "Escalation – Incorrect Promise Made to User (Order #CK1)",
            "Hi Team,\n\nCustomer Name: Rahul Verma\nIssue:\nUser was promised ₹10,000\npayout, quote is ₹7,500.\nPromised By (If Known): [Agent Name / Sales Team]\nSuggested Resolution:\nApprove quote.\nOffer voucher.\nPlease advise on the next steps.\n\nBest,\nPriya\nSupport\n",
        );
        assert_eq!(x.kind, Kind::IncorrectPromise);
        assert_eq!(x.fields.customer_name.as_deref(), Some("Rahul Verma"));
        assert_eq!(x.fields.order_id.as_deref(), Some("CK1"));
        assert_eq!(
            x.fields.issue.as_deref(),
            Some("User was promised ₹10,000\npayout, quote is ₹7,500.")
        );
        assert_eq!(x.fields.promised_by, None);
        assert_eq!(
            x.fields.suggested_resolution.as_deref(),
            Some("Approve quote.\nOffer voucher.")
        );
    }

    #[test]
    fn single_line_fields_do_not_swallow_text() {
        let x = run(
            "Escalation",
            "Customer Name: Priya Sharma\nShe is very upset.\nOrder ID:\n#48291\n",
        );
        assert_eq!(x.fields.customer_name.as_deref(), Some("Priya Sharma"));
        assert_eq!(x.fields.order_id.as_deref(), Some("48291"));
    }

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

    #[test]
    fn forwarded_message_is_content() {
        let text = "FYI\n\n---------- Forwarded message ---------\nFrom: Priya <p@example.com>\nDate: Mon, 23 Nov 2026\nSubject: Escalation (Order #777)\nTo: ops@example.com\n\nCustomer Name: Sue Parker\nIssue: wants to go to consumer forum\n";
        let x = run("Fwd: Escalation (Order #777)", text);
        assert_eq!(x.fields.customer_name.as_deref(), Some("Sue Parker"));
        assert_eq!(x.fields.order_id.as_deref(), Some("777"));
        assert!(x.kind.is_escalation());

        let outlook = "See below\n\nFrom: Priya\nSent: Monday\nTo: ops\nSubject: Escalation\n\nCustomer Name: Asha\nPhone: 98765 43210\n";
        let x = run("FW: Escalation", outlook);
        assert_eq!(x.fields.customer_name.as_deref(), Some("Asha"));
        assert_eq!(x.fields.phone.as_deref(), Some("9876543210"));
    }

    #[test]
    fn tags_and_status() {
        let mut e = email(
            "Re: Escalation [ESC-2026-000001]",
            "Status: Resolved\nRemarks: payout done #payout_fixed #vendor_warned\nOrder #CK4829 done",
        );
        e.in_reply_to = Some("x@example.com".into());
        let c = author_content(&e.text, &e.subject);
        let x = extract(&e, &c);
        assert_eq!(x.kind, Kind::StatusUpdate);
        assert_eq!(x.tags, ["payout_fixed", "vendor_warned"]);
        assert_eq!(x.fields.status.as_deref(), Some("resolved"));
        assert_eq!(
            x.fields.resolution.as_deref(),
            Some("payout done #payout_fixed #vendor_warned\nOrder #CK4829 done")
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(
            run("Lunch on Friday", "Who is in?").kind,
            Kind::NotEscalation
        );
        assert_eq!(
            run("Question", "Order ID: 123\nCan you check?").kind,
            Kind::NotEscalation
        );
        assert_eq!(
            run("Help", "Order ID: 123\nCustomer Name: Asha").kind,
            Kind::Escalation
        );
        assert_eq!(
            run(
                "Escalation",
                "Category: Customer Pickup Complaint\nOrder ID: 1"
            )
            .kind,
            Kind::PickupComplaint
        );
        let mut e = email("Re: Escalation", "Customer Name: Asha\nOrder ID: 1");
        e.auto_submitted = Some("auto-replied".into());
        let c = author_content(&e.text, &e.subject);
        assert_eq!(extract(&e, &c).kind, Kind::NotEscalation);
    }
}
