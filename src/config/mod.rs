//! Configuration: the files an operator edits, read and checked.
//!
//! A config directory holds
//!
//! - `keywords.toml`: flag categories, each with its risk floor, whether it
//!   makes a case tier 2, and its terms;
//! - `triage.toml`: the fields each kind of escalation must carry;
//! - `routing.toml`: named address lists, digests, and the ordered rules;
//! - `templates/*.txt`: the messages rules send, rendered by minijinja;
//! - `mailtriage.toml`, for the daemon only: its [`Settings`], the mailboxes
//!   it watches, the SMTP server it sends through, and how long it keeps
//!   what it stores.
//!
//! Everything is checked when it is loaded, so that a mistake shows at start-up
//! with the file, line and column, and never at three in the morning when the
//! first legal threat arrives: unknown keys, unknown templates, digests, address
//! names and flag categories are all errors. The shipped `config/` is compiled
//! into the binary as the default.

mod oauth2;
mod retention;
mod routing;
mod settings;
mod templates;
mod triage;
mod values;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::case::Triage;
use crate::lifecycle::Lifecycle;
use crate::route::Router;
use templates::TemplateFiles;

pub use oauth2::{ClientAuth, Flow, Grant, OAuth2Section, Provider};
pub use retention::RetentionSection;
pub use settings::{DaemonSection, MailboxSection, Settings, SmtpSection};
pub use values::{HumanDuration, Secret, SecretError, Size};

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
    pub const KEYWORDS: &str = include_str!("../../config/keywords.toml");
    pub const TRIAGE: &str = include_str!("../../config/triage.toml");
    pub const ROUTING: &str = include_str!("../../config/routing.toml");
    pub const TEMPLATES: &[(&str, &str)] = &[
        ("ack", include_str!("../../config/templates/ack.txt")),
        (
            "missing_info",
            include_str!("../../config/templates/missing_info.txt"),
        ),
        (
            "forward",
            include_str!("../../config/templates/forward.txt"),
        ),
        ("joined", include_str!("../../config/templates/joined.txt")),
        ("digest", include_str!("../../config/templates/digest.txt")),
        (
            "overdue",
            include_str!("../../config/templates/overdue.txt"),
        ),
        (
            "repeat_vendor",
            include_str!("../../config/templates/repeat_vendor.txt"),
        ),
    ];
    pub const HTML: &[(&str, &str)] =
        &[("digest", include_str!("../../config/templates/digest.html"))];
    pub const DAEMON: &str = include_str!("../../config/mailtriage.toml");
}

impl Config {
    /// What the digests are made from.
    pub fn digest_sources(&self) -> crate::digest::Sources<'_> {
        crate::digest::Sources {
            router: &self.router,
            lifecycle: &self.lifecycle,
            vendors: &self.vendors,
            templates: &self.digest_templates,
        }
    }
}

impl Config {
    /// Checks the rules' `when.mailbox` names against the mailboxes
    /// `settings` watches: a rule for a mailbox that does not exist never
    /// matches, and nothing would say so. `dir` is where routing.toml is
    /// read from, to give the mistake's line.
    pub fn check_mailboxes(&self, dir: &Path, settings: &Settings) -> Result<(), ConfigError> {
        let known = |name: &str| {
            settings
                .mailboxes
                .iter()
                .any(|m| m.name.eq_ignore_ascii_case(name))
        };
        let Some((rule, name)) = self.router.rules.iter().find_map(|r| {
            r.when
                .mailbox
                .iter()
                .find(|m| !known(m))
                .map(|m| (r.name.as_str(), m.as_str()))
        }) else {
            return Ok(());
        };
        let path = dir.join("routing.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let names: Vec<&str> = settings.mailboxes.iter().map(|m| m.name.as_str()).collect();
        Err(ConfigError {
            at: mailbox_place(&text, rule, name).map(|o| line_col(&text, o)),
            file: path,
            message: format!(
                "rule {rule:?}: `when.mailbox` names {name:?}, which is not a [[mailbox]] of mailtriage.toml; expected one of: {}",
                names.join(", ")
            ),
        })
    }
}

/// Where in routing.toml's `text` the rule named `rule` names `mailbox`:
/// the first `"mailbox"` after the rule's name.
fn mailbox_place(text: &str, rule: &str, mailbox: &str) -> Option<usize> {
    let start = text.find(&format!("{rule:?}"))?;
    let at = text[start..].find(&format!("{mailbox:?}"))?;
    Some(start + at)
}

impl Config {
    /// The shipped `config/` directory, as compiled into the binary.
    pub fn builtin() -> Result<Config, ConfigError> {
        let dir = Path::new("(built-in)/config");
        Self::from_texts(
            dir,
            builtin::KEYWORDS,
            builtin::TRIAGE,
            builtin::ROUTING,
            TemplateFiles::builtin(dir),
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
        let templates = TemplateFiles::read(dir)?;
        Self::from_texts(dir, &keywords, &triage, &routing, templates)
    }

    fn from_texts(
        dir: &Path,
        keywords: &str,
        triage: &str,
        routing: &str,
        templates: TemplateFiles,
    ) -> Result<Config, ConfigError> {
        let source = |name: &str, text| Source {
            path: dir.join(name),
            text,
        };
        let keywords = triage::load_keywords(&source("keywords.toml", keywords))?;
        let required = triage::load_required(&source("triage.toml", triage))?;
        let routing::Routing {
            router,
            lifecycle,
            vendors,
        } = routing::load_routing(
            &source("routing.toml", routing),
            &keywords,
            templates.letters()?,
        )?;
        let digest_templates = templates.digests(&router)?;
        let config = Config {
            triage: Triage::new(keywords, required),
            router,
            lifecycle,
            vendors,
            digest_templates,
        };
        templates.check(&config)?;
        Ok(config)
    }
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
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd\nef", 0), (1, 1));
        assert_eq!(line_col("ab\ncd\nef", 4), (2, 2));
        assert_eq!(line_col("ab\ncd\nef", 99), (3, 3));
    }
}
