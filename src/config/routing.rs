//! routing.toml, read and checked: the named address lists, the digests,
//! business hours, the ordered rules, what happens to a case after its
//! first message, how vendor fields are read, and the readers' time zones.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::values::HumanDuration;
use super::{ConfigError, Source, looks_like_address};
use crate::classify::Keywords;
use crate::extract::{Field, Kind};
use crate::lifecycle::{Lifecycle, Overdue, RepeatVendor};
use crate::route::{Digest, ForwardSpec, Matcher, Readers, Router, Rule, Templates};
use crate::vendor::VendorRules;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingFile {
    #[serde(default)]
    addresses: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    digests: BTreeMap<String, crate::digest::DigestSpec>,
    #[serde(default)]
    rule: Vec<RuleDef>,
    #[serde(default)]
    lifecycle: LifecycleDef,
    /// Named business hours.
    #[serde(default)]
    hours: BTreeMap<String, crate::calendar::BusinessHours>,
    /// How vendor fields are read (see [`load_vendors`]).
    vendors: Option<VendorsDef>,
    /// How the mail reads: the time zone its times are shown in.
    #[serde(default)]
    routing: RoutingDef,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RoutingDef {
    /// IANA name; default "UTC".
    zone: Option<Spanned<String>>,
    /// Per address, or name from [addresses]: the zone its reader is in.
    #[serde(default)]
    zones: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VendorsDef {
    id_pattern: Option<Spanned<String>>,
    name_suffixes: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LifecycleDef {
    reopen_within: Option<HumanDuration>,
    joined_reply: Option<Spanned<String>>,
    repeat_vendor: Option<RepeatVendorDef>,
    overdue: Option<OverdueDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepeatVendorDef {
    complaints: usize,
    within: HumanDuration,
    to: Vec<Spanned<String>>,
    #[serde(default = "repeat_vendor_template")]
    template: Spanned<String>,
}

fn repeat_vendor_template() -> Spanned<String> {
    Spanned::new(0..0, "repeat_vendor".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverdueDef {
    /// Risk level ("5", "4", ...) to how long a case may stay open.
    after: BTreeMap<String, Spanned<HumanDuration>>,
    to: Vec<Spanned<String>>,
    #[serde(default = "overdue_template")]
    template: Spanned<String>,
}

fn overdue_template() -> Spanned<String> {
    Spanned::new(0..0, "overdue".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    name: String,
    #[serde(default)]
    when: WhenDef,
    reply: Option<Spanned<String>>,
    forward: Option<ForwardDef>,
    digest: Option<Spanned<String>>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, rename = "continue")]
    cont: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WhenDef {
    #[serde(default)]
    mailbox: Vec<String>,
    #[serde(default)]
    kind: Vec<Kind>,
    escalation: Option<bool>,
    status_update: Option<bool>,
    #[serde(default)]
    flags_any: Vec<Spanned<String>>,
    #[serde(default)]
    flags_all: Vec<Spanned<String>>,
    risk_at_least: Option<Spanned<u8>>,
    tier: Option<Spanned<u8>>,
    #[serde(default)]
    sender: Vec<String>,
    missing: Option<bool>,
    #[serde(default)]
    missing_any: Vec<Field>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardDef {
    #[serde(default)]
    to: Vec<Spanned<String>>,
    #[serde(default)]
    cc: Vec<Spanned<String>>,
    #[serde(default = "forward_template")]
    template: Spanned<String>,
    hours: Option<Spanned<String>>,
    #[serde(default)]
    after_hours: Vec<Spanned<String>>,
    /// Who owns the case once forwarded, in words ("Tier 2").
    owner: Option<String>,
}

fn forward_template() -> Spanned<String> {
    Spanned::new(0..0, "forward".to_string())
}

/// What routing.toml makes: the router, the lifecycle and the vendor rules.
pub(super) struct Routing {
    pub router: Router,
    pub lifecycle: Lifecycle,
    pub vendors: VendorRules,
}

/// Reads routing.toml a section at a time, each checked against what it
/// names (addresses, templates, flag categories, digests, hours), in the
/// order the sections refer to each other.
pub(super) fn load_routing(
    src: &Source<'_>,
    keywords: &Keywords,
    templates: Templates,
) -> Result<Routing, ConfigError> {
    let file: RoutingFile = src.parse()?;
    check_addresses(src, &file.addresses)?;
    let names = Names {
        src,
        addresses: &file.addresses,
        templates: &templates,
        keywords,
    };
    let digests = load_digests(&names, &file.digests)?;
    let rules = file
        .rule
        .into_iter()
        .map(|def| load_rule(&names, def, &digests, &file.hours))
        .collect::<Result<Vec<_>, _>>()?;
    let lifecycle = load_lifecycle(&names, &file.lifecycle)?;
    let readers = load_readers(&names, &file.routing)?;
    let vendors = load_vendors(src, file.vendors.as_ref())?;
    let router = Router {
        hours: file.hours,
        rules,
        digests,
        templates,
        readers,
    };
    Ok(Routing {
        router,
        lifecycle,
        vendors,
    })
}

/// `[addresses]`: every entry of every list is an email address.
fn check_addresses(
    src: &Source<'_>,
    addresses: &BTreeMap<String, Vec<Spanned<String>>>,
) -> Result<(), ConfigError> {
    for a in addresses.values().flatten() {
        if !looks_like_address(a.get_ref()) {
            return Err(src.error_at(
                Some(a.span()),
                format!("expected an email address, found {:?}", a.get_ref()),
            ));
        }
    }
    Ok(())
}

/// What the sections of routing.toml refer to by name, for checking each
/// reference where it is written.
struct Names<'a> {
    src: &'a Source<'a>,
    addresses: &'a BTreeMap<String, Vec<Spanned<String>>>,
    templates: &'a Templates,
    keywords: &'a Keywords,
}

impl Names<'_> {
    /// Recipients are addresses, or names from `[addresses]`; each address
    /// once, whatever its case.
    fn recipients(&self, list: &[Spanned<String>]) -> Result<Vec<String>, ConfigError> {
        let mut out: Vec<String> = Vec::new();
        for item in list {
            let s = item.get_ref().trim();
            let addrs: Vec<String> = if s.contains('@') {
                if !looks_like_address(s) {
                    return Err(self.src.error_at(
                        Some(item.span()),
                        format!("expected an email address, found {s:?}"),
                    ));
                }
                vec![s.to_string()]
            } else {
                match self.addresses.get(s) {
                    Some(v) => v.iter().map(|a| a.get_ref().trim().to_string()).collect(),
                    None => {
                        let known: Vec<&str> = self.addresses.keys().map(String::as_str).collect();
                        return Err(self.src.error_at(
                            Some(item.span()),
                            format!(
                                "unknown address name {s:?}: expected an address or one of [addresses]: {}",
                                known.join(", ")
                            ),
                        ));
                    }
                }
            };
            for a in addrs {
                if !out.iter().any(|o| o.eq_ignore_ascii_case(&a)) {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    /// A letter's template: `templates/NAME.txt` exists. A defaulted name
    /// (no span) is reported without a place.
    fn template(&self, t: &Spanned<String>) -> Result<String, ConfigError> {
        if self.templates.contains(t.get_ref()) {
            Ok(t.get_ref().clone())
        } else {
            let span = (t.span() != (0..0)).then(|| t.span());
            Err(self.src.error_at(
                span,
                format!(
                    "unknown template {:?}: expected a file templates/{}.txt",
                    t.get_ref(),
                    t.get_ref()
                ),
            ))
        }
    }

    /// A flag category keywords.toml defines.
    fn category(&self, c: &Spanned<String>) -> Result<String, ConfigError> {
        if self.keywords.category(c.get_ref()).is_some() {
            Ok(c.get_ref().clone())
        } else {
            let known: Vec<&str> = self
                .keywords
                .categories()
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            Err(self.src.error_at(
                Some(c.span()),
                format!(
                    "unknown flag category {:?}: expected one of keywords.toml's: {}",
                    c.get_ref(),
                    known.join(", ")
                ),
            ))
        }
    }

    /// A number in `lo..=hi`, reported at its place otherwise.
    fn bounded(
        &self,
        v: &Option<Spanned<u8>>,
        lo: u8,
        hi: u8,
        what: &str,
    ) -> Result<Option<u8>, ConfigError> {
        match v {
            Some(x) if !(lo..=hi).contains(x.get_ref()) => Err(self.src.error_at(
                Some(x.span()),
                format!("expected {what} from {lo} to {hi}, found {}", x.get_ref()),
            )),
            Some(x) => Ok(Some(*x.get_ref())),
            None => Ok(None),
        }
    }
}

/// `[digests.NAME]`: a schedule, a template with both its text and HTML
/// files, and recipients.
fn load_digests(
    names: &Names<'_>,
    defs: &BTreeMap<String, crate::digest::DigestSpec>,
) -> Result<BTreeMap<String, Digest>, ConfigError> {
    let src = names.src;
    let mut digests = BTreeMap::new();
    for (name, def) in defs {
        let schedule = def
            .schedule()
            .map_err(|e| src.error_at(e.span.clone(), e.message.clone()))?;
        let template = def.template_name().to_string();
        if !names.templates.contains(&template) {
            return Err(src.error_at(
                def.template.as_ref().map(|t| t.span()),
                format!(
                    "digest {name:?}: unknown template {template:?}: expected templates/{template}.txt and templates/{template}.html"
                ),
            ));
        }
        digests.insert(
            name.clone(),
            Digest {
                schedule,
                template,
                title: def.title(name),
                description: def.description.clone(),
                time_zone: def.time_zone_name().to_string(),
                to: names.recipients(&def.to)?,
            },
        );
    }
    Ok(digests)
}

/// One `[[rule]]`: its conditions, reply, forward and digest, each checked
/// against what it names.
fn load_rule(
    names: &Names<'_>,
    def: RuleDef,
    digests: &BTreeMap<String, Digest>,
    hours: &BTreeMap<String, crate::calendar::BusinessHours>,
) -> Result<Rule, ConfigError> {
    let src = names.src;
    let w = def.when;
    let when = Matcher {
        mailbox: w.mailbox,
        kind: w.kind,
        escalation: w.escalation,
        status_update: w.status_update,
        flags_any: w
            .flags_any
            .iter()
            .map(|c| names.category(c))
            .collect::<Result<_, _>>()?,
        flags_all: w
            .flags_all
            .iter()
            .map(|c| names.category(c))
            .collect::<Result<_, _>>()?,
        risk_at_least: names.bounded(&w.risk_at_least, 1, 5, "a risk")?,
        tier: names.bounded(&w.tier, 1, 2, "a tier")?,
        sender: w.sender,
        missing: w.missing,
        missing_any: w.missing_any,
    };
    let reply = def.reply.as_ref().map(|t| names.template(t)).transpose()?;
    let forward = def
        .forward
        .as_ref()
        .map(|f| load_forward(names, &def.name, f, hours))
        .transpose()?;
    let digest = match &def.digest {
        Some(d) if digests.contains_key(d.get_ref()) => Some(d.get_ref().clone()),
        Some(d) => {
            return Err(src.error_at(
                Some(d.span()),
                format!(
                    "unknown digest {:?}: expected a [digests.{}] table",
                    d.get_ref(),
                    d.get_ref()
                ),
            ));
        }
        None => None,
    };
    Ok(Rule {
        name: def.name,
        when,
        reply,
        forward,
        digest,
        tags: def.tags,
        cont: def.cont,
    })
}

/// A rule's `forward`: at least one recipient, known business hours, and
/// an after-hours list only with hours.
fn load_forward(
    names: &Names<'_>,
    rule: &str,
    f: &ForwardDef,
    hours: &BTreeMap<String, crate::calendar::BusinessHours>,
) -> Result<ForwardSpec, ConfigError> {
    let src = names.src;
    let to = names.recipients(&f.to)?;
    let cc = names.recipients(&f.cc)?;
    if to.is_empty() && cc.is_empty() {
        return Err(src.error_at(
            Some(f.template.span()).filter(|s| *s != (0..0)),
            format!("rule {rule:?}: a forward needs at least one recipient in `to` or `cc`"),
        ));
    }
    let in_hours = match &f.hours {
        Some(h) if hours.contains_key(h.get_ref()) => Some(h.get_ref().clone()),
        Some(h) => {
            return Err(src.error_at(
                Some(h.span()),
                format!(
                    "unknown business hours {:?}: expected a [hours.{}] table",
                    h.get_ref(),
                    h.get_ref()
                ),
            ));
        }
        None => None,
    };
    let after_hours = names.recipients(&f.after_hours)?;
    if in_hours.is_none() && !after_hours.is_empty() {
        return Err(src.error_at(
            f.after_hours.first().map(|a| a.span()),
            format!(
                "rule {rule:?}: `after_hours` needs `hours`, the business hours it is outside of"
            ),
        ));
    }
    let owner = f
        .owner
        .clone()
        .filter(|o| !o.trim().is_empty())
        .unwrap_or_else(|| {
            f.to.iter()
                .map(|t| t.get_ref().trim().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        });
    Ok(ForwardSpec {
        to,
        cc,
        hours: in_hours,
        after_hours,
        owner,
        template: names.template(&f.template)?,
    })
}

/// `[lifecycle]`: reopening, the joined reply, the repeat-vendor report and
/// overdue cases, each defaulting to off (reopening to 14 days).
fn load_lifecycle(names: &Names<'_>, lc: &LifecycleDef) -> Result<Lifecycle, ConfigError> {
    let mut lifecycle = Lifecycle::default();
    if let Some(d) = lc.reopen_within {
        lifecycle.reopen_within = d.0;
    }
    if let Some(t) = &lc.joined_reply {
        lifecycle.joined_reply = Some(names.template(t)?);
    }
    if let Some(rv) = &lc.repeat_vendor {
        lifecycle.repeat_vendor = Some(RepeatVendor {
            complaints: rv.complaints.max(1),
            within: rv.within.0,
            to: names.recipients(&rv.to)?,
            template: names.template(&rv.template)?,
        });
    }
    if let Some(od) = &lc.overdue {
        let mut after = [None; 6];
        for (risk, d) in &od.after {
            match risk.parse::<usize>() {
                Ok(r) if (1..=5).contains(&r) => after[r] = Some(d.get_ref().0),
                _ => {
                    return Err(names.src.error_at(
                        Some(d.span()),
                        format!("expected a risk level 1 to 5 as the key, found {risk:?}"),
                    ));
                }
            }
        }
        lifecycle.overdue = Some(Overdue {
            after,
            to: names.recipients(&od.to)?,
            template: names.template(&od.template)?,
        });
    }
    Ok(lifecycle)
}

/// `[routing]`: the time zone the mail's times are shown in, per reader,
/// and the flag categories' labels.
fn load_readers(names: &Names<'_>, def: &RoutingDef) -> Result<Readers, ConfigError> {
    let src = names.src;
    let mut readers = Readers {
        labels: names
            .keywords
            .categories()
            .iter()
            .map(|c| (c.name.clone(), c.label.clone()))
            .collect(),
        ..Default::default()
    };
    if let Some(z) = &def.zone {
        readers.zone = crate::calendar::time_zone(z.get_ref())
            .map_err(|e| src.error_at(Some(z.span()), e.to_string()))?;
    }
    for (who, zone) in &def.zones {
        let tz = crate::calendar::time_zone(zone.get_ref())
            .map_err(|e| src.error_at(Some(zone.span()), e.to_string()))?;
        for address in names.recipients(std::slice::from_ref(who))? {
            readers
                .zones
                .insert(address.to_ascii_lowercase(), tz.clone());
        }
    }
    Ok(readers)
}

/// `[vendors]`: the vendor id pattern and the name suffixes, each
/// defaulting to the shipped one; a pattern that is not a regular
/// expression is refused at its place.
fn load_vendors(src: &Source<'_>, def: Option<&VendorsDef>) -> Result<VendorRules, ConfigError> {
    use crate::vendor::{DEFAULT_ID_PATTERN, DEFAULT_NAME_SUFFIXES, RulesError};
    let Some(def) = def else {
        return VendorRules::new(DEFAULT_ID_PATTERN, DEFAULT_NAME_SUFFIXES)
            .map_err(|e| src.error_at(None, e.to_string()));
    };
    let pattern = def
        .id_pattern
        .as_ref()
        .map_or(DEFAULT_ID_PATTERN, |p| p.get_ref().as_str());
    let suffixes: Vec<&str> = match &def.name_suffixes {
        Some(list) => list.iter().map(|s| s.get_ref().as_str()).collect(),
        None => DEFAULT_NAME_SUFFIXES.to_vec(),
    };
    VendorRules::new(pattern, &suffixes).map_err(|e| {
        let span = match &e {
            RulesError::Pattern(_) | RulesError::MatchesEmpty => {
                def.id_pattern.as_ref().map(|p| p.span())
            }
            RulesError::Suffix(i) => def
                .name_suffixes
                .as_ref()
                .and_then(|l| l.get(*i))
                .map(|s| s.span()),
        };
        src.error_at(span, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_vendors_table_says_the_defaults() {
        let file: RoutingFile = toml::from_str(super::super::builtin::ROUTING).unwrap();
        let v = file.vendors.expect("a [vendors] table");
        assert_eq!(
            v.id_pattern.unwrap().into_inner(),
            crate::vendor::DEFAULT_ID_PATTERN
        );
        let suffixes: Vec<String> = v
            .name_suffixes
            .unwrap()
            .into_iter()
            .map(Spanned::into_inner)
            .collect();
        assert_eq!(suffixes, crate::vendor::DEFAULT_NAME_SUFFIXES);
    }

    /// routing.toml's text loaded against the shipped keywords and a
    /// `forward` template: the forwards of its rules, or the error.
    fn forwards(text: &str) -> Result<Vec<ForwardSpec>, ConfigError> {
        let config = super::super::Config::builtin().unwrap();
        let mut templates = Templates::default();
        templates.add("forward", "Subject: x\n\nbody").unwrap();
        let src = Source {
            path: "routing.toml".into(),
            text,
        };
        let routing = load_routing(&src, config.triage.keywords(), templates)?;
        Ok(routing
            .router
            .rules
            .into_iter()
            .filter_map(|r| r.forward)
            .collect())
    }

    #[test]
    fn rules_are_checked_against_what_they_name() {
        let head =
            "[addresses]\nteam = [\"A@example.com\", \"b@example.com\"]\n[[rule]]\nname = \"r\"\n";
        // (the rule's line; the forward's `to` and owner, or the error and
        // the text on that line it points at)
        type Want =
            Result<(&'static [&'static str], &'static str), (&'static str, Option<&'static str>)>;
        let cases: &[(&str, Want)] = &[
            (
                "forward = { to = [\"a@example.com\", \"team\"] }",
                Ok((&["a@example.com", "b@example.com"], "a@example.com, team")),
            ),
            (
                "forward = { to = [\"team\"], owner = \"Tier 2\" }",
                Ok((&["A@example.com", "b@example.com"], "Tier 2")),
            ),
            (
                "forward = { cc = [] }",
                Err((
                    "rule \"r\": a forward needs at least one recipient in `to` or `cc`",
                    None,
                )),
            ),
            (
                "forward = { to = [\"team\"], after_hours = [\"b@example.com\"] }",
                Err((
                    "rule \"r\": `after_hours` needs `hours`, the business hours it is outside of",
                    Some("\"b@example.com\""),
                )),
            ),
            (
                "forward = { to = [\"team\"], template = \"fwd\" }",
                Err((
                    "unknown template \"fwd\": expected a file templates/fwd.txt",
                    Some("\"fwd\""),
                )),
            ),
            (
                "forward = { to = [\"teams\"] }",
                Err((
                    "unknown address name \"teams\": expected an address or one of [addresses]: team",
                    Some("\"teams\""),
                )),
            ),
            (
                "when = { flags_all = [\"legal\", \"lawsuit\"] }",
                Err((
                    "unknown flag category \"lawsuit\": expected one of keywords.toml's:",
                    Some("\"lawsuit\""),
                )),
            ),
            (
                "when = { risk_at_least = 6 }",
                Err(("expected a risk from 1 to 5, found 6", Some("6"))),
            ),
            (
                "digest = \"daily\"",
                Err((
                    "unknown digest \"daily\": expected a [digests.daily] table",
                    Some("\"daily\""),
                )),
            ),
        ];
        for (rule, want) in cases {
            let got = forwards(&format!("{head}{rule}\n"));
            match (got, want) {
                (Ok(forwards), Ok((to, owner))) => {
                    assert_eq!(forwards.len(), 1, "{rule}");
                    assert_eq!(forwards[0].to, *to, "{rule}");
                    assert_eq!(forwards[0].owner, *owner, "{rule}");
                }
                (Err(e), Err((message, at))) => {
                    assert!(e.message.starts_with(message), "{rule}: {e}");
                    let at = at.map(|token| (5, rule.find(token).unwrap() + 1));
                    assert_eq!(e.at, at, "{rule}: {e}");
                }
                (got, _) => panic!("{rule}: {got:?}"),
            }
        }
    }
}
