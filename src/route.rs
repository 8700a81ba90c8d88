//! Routing: from a case to the actions it calls for.
//!
//! The routing table is an ordered list of rules; the first rule that matches
//! ends the walk unless it says `continue = true`. Deciding is pure and cheap
//! ([`Router::route`]); rendering a template into a subject and body is a
//! separate step ([`letter::render`](crate::letter::render)) done once an action is really taken,
//! because the case id exists only when the case is stored.
//!
//! Two guarantees hold whatever the table says: the sender gets at most one
//! reply per message (the first matching rule's), and an address gets a case
//! forwarded at most once (later forwards drop addresses already served).

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::case::Case;
use crate::extract::{Field, Kind};

/// When a rule applies. Every condition set must hold; an empty matcher
/// matches every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    pub mailbox: Vec<String>,
    pub kind: Vec<Kind>,
    pub escalation: Option<bool>,
    pub status_update: Option<bool>,
    pub flags_any: Vec<String>,
    pub flags_all: Vec<String>,
    pub risk_at_least: Option<u8>,
    pub tier: Option<u8>,
    /// Addresses (`a@example.com`) or domains (`example.com`, `@example.com`).
    pub sender: Vec<String>,
    /// `true`: some required field is missing; `false`: none is.
    pub missing: Option<bool>,
    pub missing_any: Vec<Field>,
}

impl Matcher {
    pub fn matches(&self, case: &Case, mailbox: Option<&str>) -> bool {
        if !self.mailbox.is_empty()
            && !mailbox.is_some_and(|m| self.mailbox.iter().any(|x| x.eq_ignore_ascii_case(m)))
        {
            return false;
        }
        if !self.kind.is_empty() && !self.kind.contains(&case.kind) {
            return false;
        }
        if self.escalation.is_some_and(|e| e != case.is_escalation) {
            return false;
        }
        if self
            .status_update
            .is_some_and(|s| s != (case.kind == Kind::StatusUpdate))
        {
            return false;
        }
        let has_flag = |c: &String| case.flags.iter().any(|f| &f.category == c);
        if !self.flags_any.is_empty() && !self.flags_any.iter().any(has_flag) {
            return false;
        }
        if !self.flags_all.iter().all(has_flag) {
            return false;
        }
        if self.risk_at_least.is_some_and(|r| case.risk < r) {
            return false;
        }
        if self.tier.is_some_and(|t| case.tier != t) {
            return false;
        }
        if !self.sender.is_empty()
            && !case
                .from
                .as_deref()
                .is_some_and(|from| self.sender.iter().any(|s| sender_matches(s, from)))
        {
            return false;
        }
        if self.missing.is_some_and(|m| m == case.missing.is_empty()) {
            return false;
        }
        if !self.missing_any.is_empty()
            && !self.missing_any.iter().any(|f| case.missing.contains(f))
        {
            return false;
        }
        true
    }
}

/// `pattern` is an address, or a domain (with or without `@`) that also
/// covers its subdomains.
pub fn sender_matches(pattern: &str, from: &str) -> bool {
    let from = from.trim();
    if pattern.contains('@') && !pattern.starts_with('@') {
        return pattern.eq_ignore_ascii_case(from);
    }
    let domain = pattern.trim_start_matches('@');
    let Some((_, from_domain)) = from.rsplit_once('@') else {
        return false;
    };
    from_domain.eq_ignore_ascii_case(domain)
        || (from_domain.len() > domain.len()
            && from_domain.as_bytes()[from_domain.len() - domain.len() - 1] == b'.'
            && from_domain[from_domain.len() - domain.len()..].eq_ignore_ascii_case(domain))
}

/// A forward's recipients and the template of its summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub template: String,
    /// Named business hours (`[hours.NAME]`): outside them the forward is
    /// held until they open, and `after_hours` get it at once.
    pub hours: Option<String>,
    pub after_hours: Vec<String>,
    /// Who owns the case once forwarded, in words ("Tier 2").
    pub owner: String,
}

/// One rule of the routing table, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub when: Matcher,
    /// Reply to the sender with this template.
    pub reply: Option<String>,
    pub forward: Option<ForwardSpec>,
    /// Add the case to this digest.
    pub digest: Option<String>,
    pub tags: Vec<String>,
    pub cont: bool,
}

/// A named digest: who receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    pub to: Vec<String>,
    /// None: sent only on request (`mailtriage digest NAME --send-now`).
    pub schedule: Option<crate::calendar::Schedule>,
    pub template: String,
    /// In words, for the subject and the heading ("Daily escalations").
    pub title: String,
    pub description: Option<String>,
    pub time_zone: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    Reply,
    Forward,
    Digest,
    Tag,
}

/// What routing decided to do with a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: ActionType,
    /// The rule that asked for it.
    pub rule: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub template: Option<String>,
    /// Filled in by rendering (`mailtriage route` does).
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Filled in by rendering, shown only on request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A forward held outside these business hours (see [`ForwardSpec`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_hours: Vec<String>,
    /// Who has the case once this forward goes (see [`ForwardSpec`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Action {
    /// A reply to `to` with `template`, asked for by `rule`.
    pub fn reply(rule: &str, to: &str, template: &str) -> Action {
        Action {
            kind: ActionType::Reply,
            rule: rule.to_string(),
            to: vec![to.to_string()],
            cc: vec![],
            template: Some(template.to_string()),
            subject: None,
            digest: None,
            tags: vec![],
            body: None,
            hours: None,
            after_hours: vec![],
            owner: None,
        }
    }
}

/// A rendered template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
    /// Risk 4-5: sent with `Importance: high` and `X-Priority: 1`.
    pub high_importance: bool,
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("template {name:?}: {source}")]
pub struct RenderError {
    pub name: String,
    #[source]
    pub source: minijinja::Error,
}

/// Message templates: each is a `Subject:` line, a blank line, and a body,
/// rendered by minijinja with the case.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    names: Vec<String>,
    /// Lines before each template's body in its file.
    body_offsets: BTreeMap<String, usize>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        // A name a template uses that the context lacks is an error, not an
        // empty string in someone's mail ("logged as ."); testing a value
        // that may be absent (`{% if fields.vendor %}`, `x or "-"`) is fine.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        Templates {
            env,
            names: Vec::new(),
            body_offsets: BTreeMap::new(),
        }
    }
}

impl Templates {
    /// Adds a template from its source (`Subject: ...\n\nbody`). Returns the
    /// line (1-based) and message of a syntax error.
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), (usize, String)> {
        let source = source.replace("\r\n", "\n");
        let (first, body) = source.split_once('\n').unwrap_or((&source, ""));
        let Some(subject) = first.strip_prefix("Subject:") else {
            return Err((1, "expected the first line to be `Subject: ...`".into()));
        };
        let body = body.strip_prefix('\n').unwrap_or(body);
        let body_offset = if source[first.len()..].starts_with("\n\n") {
            2
        } else {
            1
        };
        self.env
            .add_template_owned(format!("{name}.subject"), subject.trim().to_string())
            .map_err(|e| (1, e.to_string()))?;
        self.env
            .add_template_owned(format!("{name}.body"), body.to_string())
            .map_err(|e| (e.line().unwrap_or(0) + body_offset, e.to_string()))?;
        self.names.push(name.to_string());
        self.body_offsets.insert(name.to_string(), body_offset);
        Ok(())
    }

    /// The environment the templates live in: template `NAME` is
    /// `NAME.subject` (line 1 of its file) and `NAME.body`.
    pub fn env(&self) -> &Environment<'static> {
        &self.env
    }

    /// The environment's two templates of `NAME`, each with the number of
    /// lines before it in the file.
    pub fn parts(&self, name: &str) -> [(String, usize); 2] {
        [
            (format!("{name}.subject"), 0),
            (
                format!("{name}.body"),
                self.body_offsets.get(name).copied().unwrap_or(2),
            ),
        ]
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    pub fn render(&self, name: &str, ctx: &minijinja::Value) -> Result<Rendered, RenderError> {
        let err = |source| RenderError {
            name: name.to_string(),
            source,
        };
        let subject = self
            .env
            .get_template(&format!("{name}.subject"))
            .and_then(|t| t.render(ctx))
            .map_err(err)?;
        let body = self
            .env
            .get_template(&format!("{name}.body"))
            .and_then(|t| t.render(ctx))
            .map_err(err)?;
        Ok(Rendered {
            subject: one_line(&subject),
            // Templates are written a paragraph a line: the text part
            // wraps them (see `text::flowed`). One line break ends it.
            body: body.trim_end().to_string() + "\n",
            high_importance: false,
        })
    }
}

/// Subjects are one line: a template or a value with a newline must not be
/// able to inject headers.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The routing table, compiled, with its templates.
#[derive(Debug, Default)]
pub struct Router {
    /// Named business hours, `[hours.NAME]`.
    pub hours: BTreeMap<String, crate::calendar::BusinessHours>,
    pub rules: Vec<Rule>,
    pub digests: BTreeMap<String, Digest>,
    pub templates: Templates,
    pub readers: Readers,
}

/// How mail reads to the people who get it: the time zone each reads in
/// (`[routing] zone` and `[routing.zones]`) and the flag categories in
/// words.
#[derive(Debug, Clone)]
pub struct Readers {
    pub zone: jiff::tz::TimeZone,
    /// Lowercased address: the zone its reader is in.
    pub zones: BTreeMap<String, jiff::tz::TimeZone>,
    /// Flag category: its label ("Review threat").
    pub labels: BTreeMap<String, String>,
}

impl Default for Readers {
    fn default() -> Self {
        Readers {
            zone: jiff::tz::TimeZone::UTC,
            zones: BTreeMap::new(),
            labels: BTreeMap::new(),
        }
    }
}

impl Readers {
    /// The zone `address` reads mail in.
    pub fn zone_of(&self, address: &str) -> &jiff::tz::TimeZone {
        self.zones
            .get(&address.trim().to_ascii_lowercase())
            .unwrap_or(&self.zone)
    }

    /// A flag category in words.
    pub fn label(&self, category: &str) -> String {
        self.labels
            .get(category)
            .cloned()
            .unwrap_or_else(|| crate::classify::default_label(category))
    }
}

impl Router {
    /// The actions the table asks for, in rule order.
    pub fn route(&self, case: &Case, mailbox: Option<&str>) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut replied = false;
        let mut forwarded: Vec<String> = Vec::new();
        for rule in &self.rules {
            if !rule.when.matches(case, mailbox) {
                continue;
            }
            if let (Some(template), Some(from), false) = (&rule.reply, &case.from, replied) {
                replied = true;
                actions.push(Action::reply(&rule.name, from, template));
            }
            if let Some(fwd) = &rule.forward {
                let mut fresh = |list: &[String]| -> Vec<String> {
                    let mut out = Vec::new();
                    for a in list {
                        if !forwarded.iter().any(|f| f.eq_ignore_ascii_case(a)) {
                            forwarded.push(a.clone());
                            out.push(a.clone());
                        }
                    }
                    out
                };
                let to = fresh(&fwd.to);
                let cc = fresh(&fwd.cc);
                if !to.is_empty() || !cc.is_empty() {
                    actions.push(Action {
                        kind: ActionType::Forward,
                        rule: rule.name.clone(),
                        to,
                        cc,
                        template: Some(fwd.template.clone()),
                        subject: None,
                        digest: None,
                        tags: vec![],
                        body: None,
                        hours: fwd.hours.clone(),
                        after_hours: fwd.after_hours.clone(),
                        owner: Some(fwd.owner.clone()),
                    });
                }
            }
            if let Some(name) = &rule.digest {
                let already = actions
                    .iter()
                    .any(|a| a.kind == ActionType::Digest && a.digest.as_ref() == Some(name));
                if !already {
                    actions.push(Action {
                        kind: ActionType::Digest,
                        rule: rule.name.clone(),
                        to: self
                            .digests
                            .get(name)
                            .map(|d| d.to.clone())
                            .unwrap_or_default(),
                        cc: vec![],
                        template: None,
                        subject: None,
                        digest: Some(name.clone()),
                        tags: vec![],
                        body: None,
                        hours: None,
                        after_hours: vec![],
                        owner: None,
                    });
                }
            }
            if !rule.tags.is_empty() {
                actions.push(Action {
                    kind: ActionType::Tag,
                    rule: rule.name.clone(),
                    to: vec![],
                    cc: vec![],
                    template: None,
                    subject: None,
                    digest: None,
                    tags: rule.tags.clone(),
                    body: None,
                    hours: None,
                    after_hours: vec![],
                    owner: None,
                });
            }
            if !rule.cont {
                break;
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders() {
        let cases = [
            ("a@example.com", "A@Example.com", true),
            ("a@example.com", "b@example.com", false),
            ("example.com", "b@example.com", true),
            ("@example.com", "b@ops.example.com", true),
            ("example.com", "b@badexample.com", false),
            ("example.com", "no-at-sign", false),
        ];
        for (pattern, from, want) in cases {
            assert_eq!(sender_matches(pattern, from), want, "{pattern} {from}");
        }
    }

    #[test]
    fn template_needs_subject_line() {
        let mut t = Templates::default();
        assert!(t.add("x", "no subject\n\nbody").is_err());
        assert!(
            t.add(
                "y",
                "Subject: {{ case_id }}\n\nHi {{ fields.customer_name }}"
            )
            .is_ok()
        );
        let err = t.add("z", "Subject: ok\n\nline\n{% if %}").unwrap_err();
        assert_eq!(err.0, 4, "{err:?}");
    }
}
