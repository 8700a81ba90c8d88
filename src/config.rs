//! Configuration: the files an operator edits, read and checked.
//!
//! A config directory holds
//!
//! - `keywords.toml`: flag categories, each with its risk floor, whether it
//!   makes a case tier 2, and its terms;
//! - `triage.toml`: the fields each kind of escalation must carry;
//! - `routing.toml`: named address lists, digests, and the ordered rules;
//! - `templates/*.txt`: the messages rules send, rendered by minijinja.
//!
//! Everything is checked when it is loaded, so that a mistake shows at start-up
//! with the file, line and column, and never at three in the morning when the
//! first legal threat arrives: unknown keys, unknown templates, digests, address
//! names and flag categories are all errors. The shipped `config/` is compiled
//! into the binary as the default.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::case::{Required, Triage};
use crate::classify::{Category, Keywords};
use crate::extract::{Field, Kind};
use crate::route::{Digest, ForwardSpec, Matcher, Router, Rule, Templates};

/// How a connection to a mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// TLS from the first byte (IMAP 993, SMTP 465).
    Implicit,
    /// STARTTLS, required (IMAP 143, SMTP 587).
    Starttls,
    /// No TLS at all: only for loopback test servers, and only when the
    /// config says so explicitly.
    Plain,
}

/// A config mistake, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the mistake has a place.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One config file's text, for locating errors in it.
struct Source<'a> {
    path: PathBuf,
    text: &'a str,
}

impl Source<'_> {
    fn error_at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            at: span.map(|s| line_col(self.text, s.start)),
            message: message.into(),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| self.error_at(e.span(), e.message().trim()))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeywordsFile {
    #[serde(default)]
    category: Vec<CategoryDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryDef {
    name: Spanned<String>,
    label: Option<String>,
    floor: Spanned<u8>,
    #[serde(default)]
    tier2: bool,
    #[serde(default = "yes")]
    inflect: bool,
    terms: Vec<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriageFile {
    required: Required,
}

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
    reopen_within: Option<Duration>,
    joined_reply: Option<Spanned<String>>,
    repeat_vendor: Option<RepeatVendorDef>,
    overdue: Option<OverdueDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepeatVendorDef {
    complaints: usize,
    within: Duration,
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
    after: BTreeMap<String, Spanned<Duration>>,
    to: Vec<Spanned<String>>,
    #[serde(default = "overdue_template")]
    template: Spanned<String>,
}

fn overdue_template() -> Spanned<String> {
    Spanned::new(0..0, "overdue".to_string())
}

/// What happens to a case after the message that opened it
/// (`[lifecycle]` in routing.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// A new escalation of an order whose case was resolved longer ago than
    /// this opens a new case (linked to the old one); sooner, it reopens it.
    pub reopen_within: std::time::Duration,
    /// The reply telling an agent their escalation joined an open case.
    pub joined_reply: Option<String>,
    pub repeat_vendor: Option<RepeatVendor>,
    pub overdue: Option<Overdue>,
}

impl Lifecycle {
    /// How long a case of `risk` has for an answer before it is overdue.
    pub fn respond_within(&self, risk: u8) -> Option<std::time::Duration> {
        self.overdue
            .as_ref()
            .and_then(|o| o.after.get(usize::from(risk)).copied().flatten())
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            reopen_within: std::time::Duration::from_secs(14 * 86_400),
            joined_reply: None,
            repeat_vendor: None,
            overdue: None,
        }
    }
}

/// The vendor manager hears of a vendor with `complaints` cases within
/// `within`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatVendor {
    pub complaints: usize,
    pub within: std::time::Duration,
    pub to: Vec<String>,
    pub template: String,
}

/// Cases open longer than their risk allows are re-escalated once to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    /// Indexed by risk 0-5; `None`: that risk is never overdue.
    pub after: [Option<std::time::Duration>; 6],
    pub to: Vec<String>,
    pub template: String,
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

/// The loaded configuration.
#[derive(Debug)]
pub struct Config {
    pub triage: Triage,
    pub router: Router,
    pub lifecycle: Lifecycle,
    /// How vendor fields are read (`[vendors]` in routing.toml).
    pub vendors: crate::vendor::VendorRules,
    /// The digests' templates, text and HTML (`templates/NAME.txt` and
    /// `templates/NAME.html`).
    pub digest_templates: minijinja::Environment<'static>,
}

/// The shipped configuration, compiled in.
mod builtin {
    pub const KEYWORDS: &str = include_str!("../config/keywords.toml");
    pub const TRIAGE: &str = include_str!("../config/triage.toml");
    pub const ROUTING: &str = include_str!("../config/routing.toml");
    pub const TEMPLATES: &[(&str, &str)] = &[
        ("ack", include_str!("../config/templates/ack.txt")),
        (
            "missing_info",
            include_str!("../config/templates/missing_info.txt"),
        ),
        ("forward", include_str!("../config/templates/forward.txt")),
        ("joined", include_str!("../config/templates/joined.txt")),
        ("digest", include_str!("../config/templates/digest.txt")),
        ("overdue", include_str!("../config/templates/overdue.txt")),
        (
            "repeat_vendor",
            include_str!("../config/templates/repeat_vendor.txt"),
        ),
    ];
    pub const HTML: &[(&str, &str)] =
        &[("digest", include_str!("../config/templates/digest.html"))];
    pub const DAEMON: &str = include_str!("../config/mailtriage.toml");
}

impl Config {
    /// The shipped `config/` directory, as compiled into the binary.
    pub fn builtin() -> Result<Config, ConfigError> {
        let dir = Path::new("(built-in)/config");
        let templates = builtin::TEMPLATES
            .iter()
            .map(|(n, s)| {
                (
                    n.to_string(),
                    dir.join("templates").join(format!("{n}.txt")),
                    s.to_string(),
                )
            })
            .collect();
        let html = builtin::HTML
            .iter()
            .map(|(n, s)| {
                (
                    n.to_string(),
                    dir.join("templates").join(format!("{n}.html")),
                    s.to_string(),
                )
            })
            .collect();
        Self::from_texts(
            dir,
            builtin::KEYWORDS,
            builtin::TRIAGE,
            builtin::ROUTING,
            templates,
            html,
        )
    }

    /// Reads and checks a config directory.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let read = |name: &str| -> Result<String, ConfigError> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| ConfigError {
                file: path,
                at: None,
                message: format!("cannot read: {e}"),
            })
        };
        let keywords = read("keywords.toml")?;
        let triage = read("triage.toml")?;
        let routing = read("routing.toml")?;

        let tdir = dir.join("templates");
        let entries = std::fs::read_dir(&tdir).map_err(|e| ConfigError {
            file: tdir.clone(),
            at: None,
            message: format!("cannot read the templates directory: {e}"),
        })?;
        let mut templates = Vec::new();
        let mut html = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ConfigError {
                file: tdir.clone(),
                at: None,
                message: format!("cannot list: {e}"),
            })?;
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str());
            if ext != Some("txt") && ext != Some("html") {
                continue;
            }
            let Some(name) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                file: path.clone(),
                at: None,
                message: format!("cannot read: {e}"),
            })?;
            if ext == Some("html") {
                html.push((name, path, text));
            } else {
                templates.push((name, path, text));
            }
        }
        templates.sort();
        html.sort();
        Self::from_texts(dir, &keywords, &triage, &routing, templates, html)
    }

    fn from_texts(
        dir: &Path,
        keywords: &str,
        triage: &str,
        routing: &str,
        templates: Vec<(String, PathBuf, String)>,
        html: Vec<(String, PathBuf, String)>,
    ) -> Result<Config, ConfigError> {
        let kw_src = Source {
            path: dir.join("keywords.toml"),
            text: keywords,
        };
        let keywords = load_keywords(&kw_src)?;

        let tr_src = Source {
            path: dir.join("triage.toml"),
            text: triage,
        };
        let tf: TriageFile = tr_src.parse()?;

        let mut tpl = Templates::default();
        for (name, path, text) in &templates {
            tpl.add(name, text).map_err(|(line, message)| ConfigError {
                file: path.clone(),
                at: Some((line, 1)),
                message,
            })?;
        }

        let rt_src = Source {
            path: dir.join("routing.toml"),
            text: routing,
        };
        let (router, lifecycle) = load_routing(&rt_src, &keywords, tpl)?;
        let vendors = load_vendors(&rt_src)?;

        let mut digest_templates = minijinja::Environment::new();
        digest_templates.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        for d in router.digests.values() {
            let name = &d.template;
            if digest_templates
                .get_template(&format!("{name}.txt"))
                .is_ok()
            {
                continue;
            }
            let find = |list: &[(String, PathBuf, String)]| {
                list.iter()
                    .find(|(n, _, _)| n == name)
                    .map(|(_, p, t)| (p.clone(), t.clone()))
            };
            let (txt_path, txt) = find(&templates).ok_or_else(|| ConfigError {
                file: dir.join("templates").join(format!("{name}.txt")),
                at: None,
                message: "missing: a digest needs its text template".into(),
            })?;
            let (html_path, html) = find(&html).ok_or_else(|| ConfigError {
                file: dir.join("templates").join(format!("{name}.html")),
                at: None,
                message: "missing: a digest needs its HTML template".into(),
            })?;
            crate::digest::add_templates(&mut digest_templates, name, &txt, &html).map_err(
                |(which, line, message)| ConfigError {
                    file: if which == "html" {
                        html_path.clone()
                    } else {
                        txt_path.clone()
                    },
                    at: (line > 0).then_some((line, 1)),
                    message,
                },
            )?;
        }

        let config = Config {
            triage: Triage::new(keywords, tf.required),
            router,
            lifecycle,
            vendors,
            digest_templates,
        };
        config.check_templates(dir, &templates, &html)?;
        Ok(config)
    }
}

impl Config {
    /// Renders every template the config uses against sample cases of
    /// each kind (see [`crate::template_check`]).
    fn check_templates(
        &self,
        dir: &Path,
        templates: &[(String, PathBuf, String)],
        html: &[(String, PathBuf, String)],
    ) -> Result<(), ConfigError> {
        use crate::template_check as tc;
        let path_of = |list: &[(String, PathBuf, String)], name: &str, ext: &str| {
            list.iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, p, _)| p.clone())
                .unwrap_or_else(|| dir.join("templates").join(format!("{name}.{ext}")))
        };
        let fault = |file: PathBuf, f: tc::Fault| ConfigError {
            file,
            at: f.line.map(|l| (l, 1)),
            message: f.message,
        };
        // Replies and forwards: the rules' templates and the joined reply.
        let mut letters: Vec<&str> = Vec::new();
        for rule in &self.router.rules {
            letters.extend(rule.reply.as_deref());
            letters.extend(rule.forward.as_ref().map(|f| f.template.as_str()));
        }
        letters.extend(self.lifecycle.joined_reply.as_deref());
        let mut families: Vec<(Vec<&str>, Vec<tc::Sample>)> =
            vec![(letters, tc::letter_samples(&self.triage, &self.router))];
        if let Some(o) = &self.lifecycle.overdue {
            families.push((
                vec![o.template.as_str()],
                tc::overdue_samples(&self.triage, &self.router),
            ));
        }
        if let Some(v) = &self.lifecycle.repeat_vendor {
            families.push((vec![v.template.as_str()], tc::vendor_samples(&self.triage)));
        }
        for (names, samples) in &mut families {
            names.sort_unstable();
            names.dedup();
            for name in names.iter() {
                for (part, offset) in self.router.templates.parts(name) {
                    tc::check(self.router.templates.env(), &part, offset, samples)
                        .map_err(|f| fault(path_of(templates, name, "txt"), f))?;
                }
            }
        }
        let samples = tc::digest_samples();
        let mut digests: Vec<&str> = self
            .router
            .digests
            .values()
            .map(|d| d.template.as_str())
            .collect();
        digests.sort_unstable();
        digests.dedup();
        for name in digests {
            for (ext, list) in [("txt", templates), ("html", html)] {
                tc::check(
                    &self.digest_templates,
                    &format!("{name}.{ext}"),
                    0,
                    &samples,
                )
                .map_err(|f| fault(path_of(list, name, ext), f))?;
            }
        }
        Ok(())
    }
}

fn load_keywords(src: &Source<'_>) -> Result<Keywords, ConfigError> {
    let file: KeywordsFile = src.parse()?;
    let mut cats: Vec<Category> = Vec::new();
    for def in file.category {
        if cats.iter().any(|c| &c.name == def.name.get_ref()) {
            return Err(src.error_at(
                Some(def.name.span()),
                format!("category {:?} is defined twice", def.name.get_ref()),
            ));
        }
        if !(1..=5).contains(def.floor.get_ref()) {
            return Err(src.error_at(
                Some(def.floor.span()),
                format!(
                    "expected a risk floor from 1 to 5, found {}",
                    def.floor.get_ref()
                ),
            ));
        }
        for t in &def.terms {
            if !t.get_ref().chars().any(char::is_alphanumeric) {
                return Err(src.error_at(Some(t.span()), "expected a term with letters or digits"));
            }
        }
        cats.push(Category {
            label: def
                .label
                .filter(|l| !l.trim().is_empty())
                .unwrap_or_else(|| crate::classify::default_label(def.name.get_ref())),
            name: def.name.into_inner(),
            floor: def.floor.into_inner(),
            tier2: def.tier2,
            terms: def.terms.into_iter().map(Spanned::into_inner).collect(),
            inflect: def.inflect,
        });
    }
    Keywords::new(cats).map_err(|e| src.error_at(None, e.to_string()))
}

fn load_routing(
    src: &Source<'_>,
    keywords: &Keywords,
    templates: Templates,
) -> Result<(Router, Lifecycle), ConfigError> {
    let file: RoutingFile = src.parse()?;

    for list in file.addresses.values() {
        for a in list {
            if !looks_like_address(a.get_ref()) {
                return Err(src.error_at(
                    Some(a.span()),
                    format!("expected an email address, found {:?}", a.get_ref()),
                ));
            }
        }
    }
    // Recipients are addresses, or names from [addresses].
    let resolve = |list: &[Spanned<String>]| -> Result<Vec<String>, ConfigError> {
        let mut out: Vec<String> = Vec::new();
        for item in list {
            let s = item.get_ref().trim();
            let addrs: Vec<String> = if s.contains('@') {
                if !looks_like_address(s) {
                    return Err(src.error_at(
                        Some(item.span()),
                        format!("expected an email address, found {s:?}"),
                    ));
                }
                vec![s.to_string()]
            } else {
                match file.addresses.get(s) {
                    Some(v) => v.iter().map(|a| a.get_ref().trim().to_string()).collect(),
                    None => {
                        let known: Vec<&str> = file.addresses.keys().map(String::as_str).collect();
                        return Err(src.error_at(
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
    };

    let mut digests = BTreeMap::new();
    for (name, def) in &file.digests {
        let schedule = def
            .schedule()
            .map_err(|e| src.error_at(e.span.clone(), e.message.clone()))?;
        let template = def.template_name().to_string();
        if !templates.contains(&template) {
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
                to: resolve(&def.to)?,
            },
        );
    }

    let check_template = |t: &Spanned<String>| -> Result<String, ConfigError> {
        if templates.contains(t.get_ref()) {
            Ok(t.get_ref().clone())
        } else {
            let span = (t.span() != (0..0)).then(|| t.span());
            Err(src.error_at(
                span,
                format!(
                    "unknown template {:?}: expected a file templates/{}.txt",
                    t.get_ref(),
                    t.get_ref()
                ),
            ))
        }
    };
    let check_category = |c: &Spanned<String>| -> Result<String, ConfigError> {
        if keywords.category(c.get_ref()).is_some() {
            Ok(c.get_ref().clone())
        } else {
            let known: Vec<&str> = keywords
                .categories()
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            Err(src.error_at(
                Some(c.span()),
                format!(
                    "unknown flag category {:?}: expected one of keywords.toml's: {}",
                    c.get_ref(),
                    known.join(", ")
                ),
            ))
        }
    };

    let mut rules = Vec::new();
    for def in file.rule {
        let w = def.when;
        let bounded = |v: &Option<Spanned<u8>>,
                       lo: u8,
                       hi: u8,
                       what: &str|
         -> Result<Option<u8>, ConfigError> {
            match v {
                Some(x) if !(lo..=hi).contains(x.get_ref()) => Err(src.error_at(
                    Some(x.span()),
                    format!("expected {what} from {lo} to {hi}, found {}", x.get_ref()),
                )),
                Some(x) => Ok(Some(*x.get_ref())),
                None => Ok(None),
            }
        };
        let when = Matcher {
            mailbox: w.mailbox,
            kind: w.kind,
            escalation: w.escalation,
            status_update: w.status_update,
            flags_any: w
                .flags_any
                .iter()
                .map(check_category)
                .collect::<Result<_, _>>()?,
            flags_all: w
                .flags_all
                .iter()
                .map(check_category)
                .collect::<Result<_, _>>()?,
            risk_at_least: bounded(&w.risk_at_least, 1, 5, "a risk")?,
            tier: bounded(&w.tier, 1, 2, "a tier")?,
            sender: w.sender,
            missing: w.missing,
            missing_any: w.missing_any,
        };
        let reply = def.reply.as_ref().map(check_template).transpose()?;
        let forward = match &def.forward {
            Some(f) => {
                let to = resolve(&f.to)?;
                let cc = resolve(&f.cc)?;
                if to.is_empty() && cc.is_empty() {
                    return Err(src.error_at(
                        Some(f.template.span()).filter(|s| *s != (0..0)),
                        format!(
                            "rule {:?}: a forward needs at least one recipient in `to` or `cc`",
                            def.name
                        ),
                    ));
                }
                let hours = match &f.hours {
                    Some(h) if file.hours.contains_key(h.get_ref()) => Some(h.get_ref().clone()),
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
                let after_hours = resolve(&f.after_hours)?;
                if hours.is_none() && !after_hours.is_empty() {
                    return Err(src.error_at(
                        f.after_hours.first().map(|a| a.span()),
                        format!(
                            "rule {:?}: `after_hours` needs `hours`, the business hours it is outside of",
                            def.name
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
                Some(ForwardSpec {
                    to,
                    cc,
                    hours,
                    after_hours,
                    owner,
                    template: check_template(&f.template)?,
                })
            }
            None => None,
        };
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
        rules.push(Rule {
            name: def.name,
            when,
            reply,
            forward,
            digest,
            tags: def.tags,
            cont: def.cont,
        });
    }

    let lc = file.lifecycle;
    let mut lifecycle = Lifecycle::default();
    if let Some(d) = lc.reopen_within {
        lifecycle.reopen_within = d.0;
    }
    if let Some(t) = &lc.joined_reply {
        lifecycle.joined_reply = Some(check_template(t)?);
    }
    if let Some(rv) = &lc.repeat_vendor {
        lifecycle.repeat_vendor = Some(RepeatVendor {
            complaints: rv.complaints.max(1),
            within: rv.within.0,
            to: resolve(&rv.to)?,
            template: check_template(&rv.template)?,
        });
    }
    if let Some(od) = &lc.overdue {
        let mut after = [None; 6];
        for (risk, d) in &od.after {
            match risk.parse::<usize>() {
                Ok(r) if (1..=5).contains(&r) => after[r] = Some(d.get_ref().0),
                _ => {
                    return Err(src.error_at(
                        Some(d.span()),
                        format!("expected a risk level 1 to 5 as the key, found {risk:?}"),
                    ));
                }
            }
        }
        lifecycle.overdue = Some(Overdue {
            after,
            to: resolve(&od.to)?,
            template: check_template(&od.template)?,
        });
    }
    let mut readers = crate::route::Readers {
        labels: keywords
            .categories()
            .iter()
            .map(|c| (c.name.clone(), c.label.clone()))
            .collect(),
        ..Default::default()
    };
    if let Some(z) = &file.routing.zone {
        readers.zone = crate::calendar::time_zone(z.get_ref())
            .map_err(|e| src.error_at(Some(z.span()), e.to_string()))?;
    }
    for (who, zone) in &file.routing.zones {
        let tz = crate::calendar::time_zone(zone.get_ref())
            .map_err(|e| src.error_at(Some(zone.span()), e.to_string()))?;
        for address in resolve(std::slice::from_ref(who))? {
            readers
                .zones
                .insert(address.to_ascii_lowercase(), tz.clone());
        }
    }
    let router = Router {
        hours: file.hours,
        rules,
        digests,
        templates,
        readers,
    };
    Ok((router, lifecycle))
}

/// `[vendors]` of routing.toml: the vendor id pattern and the name
/// suffixes, each defaulting to the shipped one; a pattern that is not a
/// regular expression is refused at its place.
fn load_vendors(src: &Source<'_>) -> Result<crate::vendor::VendorRules, ConfigError> {
    use crate::vendor::{DEFAULT_ID_PATTERN, DEFAULT_NAME_SUFFIXES, RulesError, VendorRules};
    let file: RoutingFile = src.parse()?;
    let Some(def) = file.vendors else {
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

fn looks_like_address(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
                && !s.contains(['<', '>', ',', ';'])
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_config_loads() {
        let c = Config::builtin().expect("the shipped config is valid");
        assert!(c.triage.keywords().category("legal").is_some());
        assert!(!c.router.rules.is_empty());
    }

    #[test]
    fn the_shipped_vendors_table_says_the_defaults() {
        let file: RoutingFile = toml::from_str(builtin::ROUTING).unwrap();
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

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd\nef", 0), (1, 1));
        assert_eq!(line_col("ab\ncd\nef", 4), (2, 2));
        assert_eq!(line_col("ab\ncd\nef", 99), (3, 3));
    }
}

/// Where a secret comes from. The config names the source, never the
/// secret, so that the file can be shared and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A systemd credential (`LoadCredential=`): the file of that name in
    /// `$CREDENTIALS_DIRECTORY`.
    Credential(String),
    File(PathBuf),
    Env(String),
    /// A command whose standard output (trimmed) is the secret, run each
    /// time it is needed: the way to get fresh OAuth 2 access tokens.
    Command(Vec<String>),
}

/// The sources, as written in the config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum SecretSource {
    Credential(String),
    File(PathBuf),
    Env(String),
    Command(Vec<String>),
}

const SECRET_FORMS: &str = "{ credential = \"NAME\" }, { file = \"/path\" }, { env = \"VARIABLE\" } or { command = [\"prog\", \"arg\"] }";

impl<'de> Deserialize<'de> for Secret {
    /// A secret written as a literal string is refused without repeating
    /// it: the error goes to terminals and the journal.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Source(toml::Table),
            // Held only to be refused: never kept, never shown.
            Literal(serde::de::IgnoredAny),
        }
        match Raw::deserialize(d)? {
            Raw::Literal(_) => Err(serde::de::Error::custom(format!(
                "a secret is never written into the config (the value was not read back): name where it comes from, {SECRET_FORMS}"
            ))),
            Raw::Source(table) => {
                let source = SecretSource::deserialize(toml::Value::Table(table)).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "expected one of {SECRET_FORMS}: {}",
                        e.message().trim()
                    ))
                })?;
                Ok(match source {
                    SecretSource::Credential(n) => Secret::Credential(n),
                    SecretSource::File(p) => Secret::File(p),
                    SecretSource::Env(v) => Secret::Env(v),
                    SecretSource::Command(c) => Secret::Command(c),
                })
            }
        }
    }
}

impl Secret {
    /// Reads the secret now.
    pub fn read(&self) -> Result<String, String> {
        let value = match self {
            Secret::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| format!("credential {name:?}: $CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit)"))?;
                let path = Path::new(&dir).join(name);
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("credential {name:?} ({}): {e}", path.display()))?
            }
            Secret::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("secret file {}: {e}", path.display()))?,
            Secret::Env(var) => {
                std::env::var(var).map_err(|e| format!("environment variable {var}: {e}"))?
            }
            Secret::Command(argv) => {
                let (prog, args) = argv.split_first().ok_or("secret command is empty")?;
                let out = std::process::Command::new(prog)
                    .args(args)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|e| format!("secret command {prog:?}: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "secret command {prog:?} exited with {}",
                        out.status
                    ));
                }
                String::from_utf8(out.stdout)
                    .map_err(|_| format!("secret command {prog:?} printed non-UTF-8"))?
            }
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(format!("{self:?} is empty"));
        }
        Ok(value)
    }
}

/// A duration written as `90s`, `10m`, `2h` or `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub std::time::Duration);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parsed: jiff::SignedDuration = s.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "expected a duration such as \"90s\", \"10m\" or \"1h 30m\", found {s:?} ({e})"
            ))
        })?;
        if parsed.is_negative() {
            return Err(serde::de::Error::custom(format!(
                "expected a positive duration, found {s:?}"
            )));
        }
        Ok(Duration(parsed.unsigned_abs()))
    }
}

/// A size written as `25MB`, `512KB` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!(
                "expected a size such as \"25MB\", \"512KB\" or a number of bytes, found {s:?}"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => {
                let t = s.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let n: u64 = t[..split].parse().map_err(|_| bad(&s))?;
                let mult = match t[split..].trim().to_ascii_uppercase().as_str() {
                    "" | "B" => 1,
                    "KB" | "K" | "KIB" => 1 << 10,
                    "MB" | "M" | "MIB" => 1 << 20,
                    "GB" | "G" | "GIB" => 1 << 30,
                    _ => return Err(bad(&s)),
                };
                n.checked_mul(mult).map(Size).ok_or_else(|| bad(&s))
            }
        }
    }
}

fn default_cache() -> Size {
    Size(16 << 20)
}
fn default_replies_per_hour() -> u32 {
    10
}
fn default_alert_after() -> Duration {
    Duration(std::time::Duration::from_secs(600))
}
fn default_folder() -> String {
    "INBOX".into()
}
fn default_poll() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}
fn default_idle() -> Duration {
    Duration(std::time::Duration::from_secs(25 * 60))
}
fn default_max_size() -> Size {
    Size(25 << 20)
}
fn default_batch() -> usize {
    50
}
fn default_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
fn default_retry_first() -> Duration {
    Duration(crate::send::Backoff::default().first)
}
fn default_retry_max() -> Duration {
    Duration(crate::send::Backoff::default().max)
}

/// `[daemon]` in mailtriage.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// The sled database directory; default `$STATE_DIRECTORY/db`.
    pub database: Option<PathBuf>,
    #[serde(default = "default_cache")]
    pub cache: Size,
    /// Right-hand side of the daemon's Message-IDs.
    pub domain: String,
    /// Who gets health alerts (a mailbox that cannot log in or stays down).
    #[serde(default)]
    pub admin: Vec<String>,
    /// Addresses or domains of the agents: only they create cases.
    pub allow_senders: Vec<String>,
    /// Automatic replies to one sender per hour, at most.
    #[serde(default = "default_replies_per_hour")]
    pub replies_per_sender_per_hour: u32,
    /// A mailbox down this long raises a health alert.
    #[serde(default = "default_alert_after")]
    pub alert_after: Duration,
}

/// `[smtp]` in mailtriage.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// From: of everything the daemon sends, e.g. `Escalations <mailtriage@example.com>`.
    pub from: String,
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// First wait before retrying a transient delivery failure; it doubles
    /// (with jitter) up to `retry_max`.
    #[serde(default = "default_retry_first")]
    pub retry_first: Duration,
    #[serde(default = "default_retry_max")]
    pub retry_max: Duration,
    /// A private CA (PEM) to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// One `[[mailbox]]` in mailtriage.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxSection {
    /// The name rules match on (`ops`, `support`).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub user: String,
    /// LOGIN with a password...
    pub password: Option<Secret>,
    /// ...or XOAUTH2 with an access token.
    pub oauth2_token: Option<Secret>,
    #[serde(default = "default_folder")]
    pub folder: String,
    /// Set `\Seen` on processed messages.
    #[serde(default)]
    pub mark_seen: bool,
    /// Move processed messages here.
    pub move_to: Option<String>,
    /// Where messages that cannot be processed go.
    pub quarantine: String,
    /// The address of this mailbox, set as `Reply-To` on the mail the
    /// daemon sends about its cases, so that replies come back here.
    /// Default: `user`, when it is an address.
    pub reply_to: Option<Spanned<String>>,
    #[serde(default = "default_poll")]
    pub poll_interval: Duration,
    #[serde(default = "default_idle")]
    pub idle_timeout: Duration,
    #[serde(default = "default_max_size")]
    pub max_message_size: Size,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// A PEM CA certificate to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl MailboxSection {
    /// Where replies to the daemon's mail about this mailbox's cases go:
    /// `reply_to`, else `user` when it is an address.
    pub fn reply_address(&self) -> Option<&str> {
        self.reply_to
            .as_ref()
            .map(|r| r.get_ref().as_str())
            .or_else(|| looks_like_address(&self.user).then_some(self.user.as_str()))
    }
}

/// mailtriage.toml: what the daemon connects to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub daemon: DaemonSection,
    pub smtp: SmtpSection,
    #[serde(rename = "mailbox")]
    pub mailboxes: Vec<MailboxSection>,
}

impl DaemonConfig {
    /// The shipped `config/mailtriage.toml`, as compiled into the binary:
    /// the mailboxes the built-in config knows.
    pub fn builtin() -> Result<DaemonConfig, ConfigError> {
        Self::parse(
            Path::new("(built-in)/config/mailtriage.toml"),
            builtin::DAEMON,
        )
    }

    /// Reads and checks `DIR/mailtriage.toml`.
    pub fn load(dir: &Path) -> Result<DaemonConfig, ConfigError> {
        let path = dir.join("mailtriage.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            file: path.clone(),
            at: None,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "missing: {} has no mailtriage.toml, which names the mailboxes, the SMTP server and the database (config/mailtriage.toml of the source is a commented example)",
                    dir.display()
                )
            } else {
                format!("cannot read: {e}")
            },
        })?;
        Self::parse(&path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<DaemonConfig, ConfigError> {
        let src = Source {
            path: path.to_path_buf(),
            text,
        };
        let c: DaemonConfig = src.parse()?;
        let whole = |message: String| ConfigError {
            file: path.to_path_buf(),
            at: None,
            message,
        };
        if c.mailboxes.is_empty() {
            return Err(whole("expected at least one [[mailbox]]".into()));
        }
        let mut names: Vec<&str> = Vec::new();
        for m in &c.mailboxes {
            if names.contains(&m.name.as_str()) {
                return Err(whole(format!("mailbox name {:?} is used twice", m.name)));
            }
            names.push(&m.name);
            match (&m.password, &m.oauth2_token) {
                (Some(_), Some(_)) => {
                    return Err(whole(format!(
                        "mailbox {:?}: expected `password` or `oauth2_token`, not both",
                        m.name
                    )));
                }
                (None, None) => {
                    return Err(whole(format!(
                        "mailbox {:?}: expected `password` or `oauth2_token`",
                        m.name
                    )));
                }
                _ => {}
            }
            if !m.mark_seen && m.move_to.is_none() {
                return Err(whole(format!(
                    "mailbox {:?}: expected `mark_seen = true` or `move_to`, so that processed mail is marked",
                    m.name
                )));
            }
            if let Some(r) = &m.reply_to
                && !looks_like_address(r.get_ref())
            {
                return Err(src.error_at(
                    Some(r.span()),
                    format!(
                        "mailbox {:?}: reply_to: expected the mailbox's email address, found {:?}",
                        m.name,
                        r.get_ref()
                    ),
                ));
            }
            if m.batch_size == 0 {
                return Err(whole(format!(
                    "mailbox {:?}: batch_size must be at least 1",
                    m.name
                )));
            }
        }
        if c.daemon.allow_senders.is_empty() {
            return Err(whole(
                "[daemon] allow_senders is empty: no one could open a case".into(),
            ));
        }
        for a in &c.daemon.admin {
            if !looks_like_address(a) {
                return Err(whole(format!(
                    "[daemon] admin: expected an email address, found {a:?}"
                )));
            }
        }
        if c.smtp.user.is_some() != c.smtp.password.is_some() {
            return Err(whole(
                "[smtp]: expected both `user` and `password`, or neither".into(),
            ));
        }
        Ok(c)
    }
}
