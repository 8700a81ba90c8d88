//! What a reply or a forward says: a [`Letter`] (the case as it stands,
//! the message answered, the case's first message) and the context its
//! template sees, which leads with what a reader on a phone needs first:
//! how bad, why (the flags in words), what the agent asks and by when,
//! who owns it, and how to act.
//!
//! Pure: times come in as values (the case's receipt, the time of
//! writing) and are shown in the reader's time zone.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::case::Case;
use crate::route::{Action, ActionType, RenderError, Rendered, Router};

/// The case's first message, as a template cites it.
///
/// What a message lacks is left out (undefined to a template), so that a
/// template that prints it unguarded fails the config check instead of
/// writing "none" into someone's mail.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Origin<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<&'a str>,
}

impl<'a> Origin<'a> {
    /// A message as the origin of its own case.
    pub fn of(email: &'a crate::message::Email) -> Origin<'a> {
        Origin {
            from: email.from.as_deref(),
            from_name: email.from_name.as_deref(),
            subject: Some(email.subject.as_str()).filter(|s| !s.is_empty()),
            date: email.date.as_deref(),
            message_id: email.message_id.as_deref(),
        }
    }
}

/// How a forward carries the agent's original (see the outbox's rules
/// for message/rfc822 parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attached {
    /// Not a forward.
    #[default]
    Nothing,
    /// As a message the reader's mail program opens.
    Message,
    /// As a file, `original.eml`, for this reason.
    File(&'static str),
}

/// What one rendering is about: the case as it stands, the message being
/// answered, and the case's first message when that is another one.
///
/// A template's `from`, `from_name`, `subject`, `date` and `message_id`
/// are always those of `message`: a second agent joining a case is
/// answered as themselves. The case's first message is `origin`.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    pub case_id: &'a str,
    pub mailbox: Option<&'a str>,
    /// The case as it stands: fields, flags, risk, tier, missing.
    pub case: &'a Case,
    /// The message being answered or forwarded.
    pub message: &'a crate::message::Email,
    /// The case's first message; `None` when it is `message`.
    pub origin: Option<Origin<'a>>,
    pub attached: Attached,
    /// When the case came in: its answer is due `respond_within` later.
    pub received_at: Option<Timestamp>,
    /// How long the case's risk allows for an answer (`[lifecycle.overdue]`).
    pub respond_within: Option<std::time::Duration>,
    /// The time of writing, for dates relative to it ("14:30 IST" today,
    /// the year when it differs); `None`: the message's own date.
    pub now: Option<Timestamp>,
    /// Who has the case: a forward's owner, or, in a reply, the owners of
    /// the forwards sent with it.
    pub owners: Vec<String>,
    /// The reader's zone; `None`: the first recipient's, as
    /// `[routing.zones]` says, else `[routing] zone`.
    pub zone: Option<TimeZone>,
}

impl<'a> Letter<'a> {
    /// A letter about a message that is its case's first, with nothing
    /// attached and nothing known of time or owners.
    pub fn new(
        case_id: &'a str,
        mailbox: Option<&'a str>,
        case: &'a Case,
        message: &'a crate::message::Email,
    ) -> Letter<'a> {
        Letter {
            case_id,
            mailbox,
            case,
            message,
            origin: None,
            attached: Attached::Nothing,
            received_at: None,
            respond_within: None,
            now: None,
            owners: Vec::new(),
            zone: None,
        }
    }
}

/// The owners of the forwards among `actions`, each once, in order.
pub fn owners(actions: &[Action]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in actions {
        if let Some(o) = &a.owner
            && !out.contains(o)
        {
            out.push(o.clone());
        }
    }
    out
}

#[derive(Debug, Serialize)]
struct OriginalContext {
    as_file: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<&'static str>,
}

/// The case's first message as a template sees it, its date in words.
#[derive(Debug, Serialize)]
struct OriginContext<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
}

/// One flag category of the case, in words, with its terms each once.
#[derive(Debug, Serialize)]
struct Why {
    label: String,
    terms: Vec<String>,
    /// "Review threat: Trustpilot, Google reviews".
    line: String,
}

/// What a template sees. Absent values are left out, as in [`Origin`].
#[derive(Debug, Serialize)]
struct TemplateContext<'a> {
    case_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mailbox: Option<&'a str>,
    rule: &'a str,
    subject: &'a str,
    /// `Re: <subject>` unless the subject already starts with `Re:`.
    reply_subject: String,
    /// Why the case matters, for a subject: the agent's own subject
    /// without "Escalation" and reply prefixes, else the kind and main flag.
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_name: Option<&'a str>,
    /// When the message was sent, as people write it in the reader's zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    origin: OriginContext<'a>,
    original: OriginalContext,
    kind: &'a str,
    kind_label: &'a str,
    is_escalation: bool,
    fields: &'a crate::extract::Fields,
    missing: Vec<&'static str>,
    missing_labels: &'a [String],
    flags: &'a [crate::classify::Flag],
    flag_categories: Vec<&'a str>,
    /// The flags in words, a category each.
    why: Vec<Why>,
    risk: u8,
    tier: u8,
    tags: &'a [String],
    /// When the case came in, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    received: Option<String>,
    /// The answer is due by then: "14:30 IST" today, else with the date.
    #[serde(skip_serializing_if = "Option::is_none")]
    respond_by: Option<String>,
    /// What the risk allows: "2 h".
    #[serde(skip_serializing_if = "Option::is_none")]
    respond_within: Option<String>,
    /// Who has it: "Tier 2", "the CX team and the ops manager".
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// A deadline the agent wrote, quoted.
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    /// A customer's name for examples that is not the agent's own.
    example_customer: &'static str,
}

/// Names for examples of "Customer Name:", tried in order: the first that
/// shares no word with the agent's own name is used.
const EXAMPLE_CUSTOMERS: &[&str] = &["Priya Sharma", "Rahul Verma", "Anita Desai"];

fn example_customer(agent: &crate::message::Email) -> &'static str {
    let agent = format!(
        "{} {}",
        agent.from_name.as_deref().unwrap_or(""),
        agent.from.as_deref().unwrap_or("")
    )
    .to_lowercase();
    let words: Vec<&str> = agent
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 1)
        .collect();
    EXAMPLE_CUSTOMERS
        .iter()
        .find(|name| !name.to_lowercase().split(' ').any(|w| words.contains(&w)))
        .copied()
        .unwrap_or(EXAMPLE_CUSTOMERS[EXAMPLE_CUSTOMERS.len() - 1])
}

/// "Escalation – Customer threatening Trustpilot (Order #CK1)" as the
/// reason in a subject: "Customer threatening Trustpilot (Order #CK1)";
/// a subject that says nothing more than "Escalation" gives the kind and
/// the case's first flag in words.
fn reason(subject: &str, case: &Case, router: &Router) -> String {
    let mut rest = subject.trim();
    loop {
        let before = rest;
        for prefix in [
            "re:",
            "fw:",
            "fwd:",
            "aw:",
            "escalation",
            "escalated",
            "urgent",
        ] {
            if rest
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
            {
                rest = &rest[prefix.len()..];
            }
        }
        if let Some(id) = crate::lifecycle::case_id_in_subject(rest)
            && let Some(i) = rest.find(&format!("[{id}]"))
            && rest[..i].trim().is_empty()
        {
            rest = &rest[i + id.len() + 2..];
        }
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || "-–—:|".contains(c));
        if rest == before {
            break;
        }
    }
    let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ");
    if rest.chars().filter(|c| c.is_alphanumeric()).count() >= 4 {
        return rest;
    }
    match case.flag_categories().first() {
        Some(c) => format!("{}, {}", case.kind.label(), router.readers.label(c)),
        None => case.kind.label().to_string(),
    }
}

/// The case's flags in words: one entry per category, in order of
/// appearance, each term once, capitalised as a reader expects.
fn why(case: &Case, router: &Router) -> Vec<Why> {
    let mut out: Vec<Why> = Vec::new();
    for category in case.flag_categories() {
        let mut terms: Vec<String> = Vec::new();
        for f in case.flags.iter().filter(|f| f.category == category) {
            let term = capitalise(&f.term);
            if !terms.iter().any(|t| t.eq_ignore_ascii_case(&term)) {
                terms.push(term);
            }
        }
        let label = router.readers.label(category);
        let line = format!("{label}: {}", terms.join(", "));
        out.push(Why { label, terms, line });
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "Tier 2", "the CX team and the ops manager", "A, B and C".
fn joined(names: &[String]) -> Option<String> {
    match names {
        [] => None,
        [one] => Some(one.clone()),
        [init @ .., last] => Some(format!("{} and {last}", init.join(", "))),
    }
}

/// Renders `action`'s template for a letter: in the zone of the action's
/// first reader (unless the letter says), with the forward's owner, and
/// marked high importance for a risk 4 or 5 case. `None` for an action
/// without a template (a digest, a tag).
pub fn render(
    router: &Router,
    action: &Action,
    letter: &Letter<'_>,
) -> Result<Option<Rendered>, RenderError> {
    let Some(template) = &action.template else {
        return Ok(None);
    };
    let mut letter = letter.clone();
    if letter.zone.is_none()
        && let Some(reader) = action.to.first()
    {
        letter.zone = Some(router.readers.zone_of(reader).clone());
    }
    if action.kind == ActionType::Forward {
        letter.owners = action.owner.iter().cloned().collect();
    }
    let mut rendered = router
        .templates
        .render(template, &context(&action.rule, &letter, router))?;
    rendered.high_importance = letter.case.risk >= 4;
    Ok(Some(rendered))
}

/// What a letter's template sees, for the rule `rule`, with `router`'s
/// readers (zones, flag labels).
pub fn context(rule: &str, letter: &Letter<'_>, router: &Router) -> minijinja::Value {
    let (case, message) = (letter.case, letter.message);
    let subject = message.subject.as_str();
    let reply_subject = if subject
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("re:"))
    {
        subject.to_string()
    } else if subject.is_empty() {
        "Re: your escalation".to_string()
    } else {
        format!("Re: {subject}")
    };
    let zone = letter
        .zone
        .clone()
        .unwrap_or_else(|| router.readers.zone.clone());
    let sent = message.date.as_deref().and_then(crate::text::parse_rfc3339);
    let now = letter.now.or(letter.received_at).or(sent);
    let words = |at: Timestamp| crate::text::local_time(at, &zone, now.unwrap_or(at));
    let origin = letter.origin.unwrap_or_else(|| Origin::of(message));
    let due = letter
        .received_at
        .zip(letter.respond_within)
        .and_then(|(at, within)| at.checked_add(within).ok());
    let ctx = TemplateContext {
        case_id: letter.case_id,
        mailbox: letter.mailbox,
        rule,
        subject,
        reply_subject,
        reason: reason(subject, case, router),
        from: message.from.as_deref(),
        from_name: message.from_name.as_deref(),
        date: sent.map(words),
        message_id: message.message_id.as_deref(),
        origin: OriginContext {
            from: origin.from,
            from_name: origin.from_name,
            subject: origin.subject,
            date: origin.date.and_then(crate::text::parse_rfc3339).map(words),
            message_id: origin.message_id,
        },
        original: OriginalContext {
            as_file: matches!(letter.attached, Attached::File(_)),
            why: match letter.attached {
                Attached::File(why) => Some(why),
                _ => None,
            },
        },
        kind: case.kind.name(),
        kind_label: case.kind.label(),
        is_escalation: case.is_escalation,
        fields: &case.fields,
        missing: case.missing.iter().map(|f| f.name()).collect(),
        missing_labels: &case.missing_labels,
        flags: &case.flags,
        flag_categories: case.flag_categories(),
        why: why(case, router),
        risk: case.risk,
        tier: case.tier,
        tags: &case.tags,
        received: letter.received_at.map(words),
        respond_by: due.map(|at| crate::text::local_clock(at, &zone, now.unwrap_or(at))),
        respond_within: letter
            .respond_within
            .map(|d| crate::text::age(d.as_secs() as i64)),
        owner: joined(&letter.owners),
        deadline: crate::deadline::deadline(&case.fields),
        example_customer: example_customer(message),
    };
    minijinja::Value::from(minijinja::value::Serde(&ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triage(raw: &str) -> (crate::message::Email, Case) {
        crate::config::Config::builtin()
            .unwrap()
            .triage
            .parse(raw.as_bytes())
            .unwrap()
    }

    #[test]
    fn reasons_carry_what_the_subject_says() {
        let router = crate::config::Config::builtin().unwrap().router;
        let cases = [
            (
                "Escalation – Customer threatening Trustpilot and Google reviews (Order #CK802113)",
                "Customer threatening Trustpilot and Google reviews (Order #CK802113)",
            ),
            ("Re: Fwd: ESCALATION: vendor no-show", "vendor no-show"),
            ("Re: [ESC-2026-000001] Escalation - lawyer", "lawyer"),
            (
                "Pickup complaint (Order #CK1)",
                "Pickup complaint (Order #CK1)",
            ),
            ("Escalation", "Escalation, Legal threat"),
            ("", "Escalation, Legal threat"),
        ];
        for (subject, want) in cases {
            let raw = format!(
                "From: a@example.com\r\nSubject: {subject}\r\n\r\nCustomer Name: X\r\nOrder ID: CK1\r\nIssue: she will call a lawyer\r\n"
            );
            let (_, case) = triage(&raw);
            assert_eq!(reason(subject, &case, &router), want, "{subject:?}");
        }
    }

    #[test]
    fn flags_in_words_each_term_once() {
        let router = crate::config::Config::builtin().unwrap().router;
        let (_, case) = triage(
            "From: a@example.com\r\nSubject: Escalation - Trustpilot threat\r\n\r\nIssue: she will post on Trustpilot and Google reviews, Trustpilot again, and call a lawyer.\r\n",
        );
        let lines: Vec<String> = why(&case, &router).into_iter().map(|w| w.line).collect();
        assert_eq!(
            lines,
            [
                "Review threat: Trustpilot, Google reviews",
                "Legal threat: Lawyer"
            ]
        );
    }

    #[test]
    fn examples_never_use_the_agents_name() {
        let mail = |from: &str| {
            crate::message::parse(format!("From: {from}\r\nSubject: x\r\n\r\nb").as_bytes())
                .unwrap()
        };
        assert_eq!(
            example_customer(&mail("Ravi Kumar <ravi.k@example.com>")),
            "Priya Sharma"
        );
        assert_eq!(
            example_customer(&mail("Priya Sharma <ps@example.com>")),
            "Rahul Verma"
        );
        assert_eq!(
            example_customer(&mail("priya.rahul@example.com")),
            "Anita Desai"
        );
    }

    #[test]
    fn respond_by_is_in_the_readers_zone() {
        let router = crate::config::Config::builtin().unwrap().router;
        let (email, case) = triage(
            "From: Deepa <deepa@example.com>\r\nSubject: Escalation\r\nDate: Tue, 24 Nov 2026 20:09:00 +0530\r\n\r\nIssue: lawyer\r\n",
        );
        let mut letter = Letter::new("ESC-1", Some("ops"), &case, &email);
        letter.received_at = Some("2026-11-24T14:40:00Z".parse().unwrap());
        letter.respond_within = Some(std::time::Duration::from_secs(2 * 3600));
        letter.owners = vec!["Tier 2".into(), "the CX team".into()];
        let ctx = context("r", &letter, &router);
        let get = |k: &str| ctx.get_attr(k).unwrap().to_string();
        assert_eq!(get("respond_by"), "22:10 IST");
        assert_eq!(get("respond_within"), "2 h");
        assert_eq!(get("date"), "Tue 24 Nov, 20:09 IST");
        assert_eq!(get("owner"), "Tier 2 and the CX team");
        letter.zone = Some(TimeZone::get("America/New_York").unwrap());
        let ctx = context("r", &letter, &router);
        assert_eq!(ctx.get_attr("respond_by").unwrap().to_string(), "11:40 EST");
    }
}
