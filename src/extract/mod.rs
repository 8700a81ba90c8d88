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
//! message from those lines. `content` is the first step; `labels` holds the
//! label table, label matching and the cleaning of values; this module, the
//! fields, the kinds and the reading of the lines.

mod content;
mod labels;

use serde::{Deserialize, Serialize};

use crate::message::Email;
use content::{is_closing, is_forward_marker, is_signoff};
use labels::{
    Label, canonical_status, clean_name, clean_value, is_placeholder, match_label,
    normalize_order_id, normalize_phone, parse_rating, phone_span, split_name_and_number,
};

pub use content::{Content, author_content};

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

/// Everything [`extract`] reads from a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub kind: Kind,
    pub fields: Fields,
    pub tags: Vec<String>,
    /// The agent's `Tier:` line, if any.
    pub tier: Option<u8>,
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
