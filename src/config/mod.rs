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
//!   it watches and the SMTP server it sends through.
//!
//! Everything is checked when it is loaded, so that a mistake shows at start-up
//! with the file, line and column, and never at three in the morning when the
//! first legal threat arrives: unknown keys, unknown templates, digests, address
//! names and flag categories are all errors. The shipped `config/` is compiled
//! into the binary as the default.

mod routing;
mod settings;
mod triage;
mod values;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::case::Triage;
use crate::route::{Router, Templates};

pub use routing::{Lifecycle, Overdue, RepeatVendor};
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
        let keywords = triage::load_keywords(&kw_src)?;

        let tr_src = Source {
            path: dir.join("triage.toml"),
            text: triage,
        };
        let required = triage::load_required(&tr_src)?;

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
        let routing::Routing {
            router,
            lifecycle,
            vendors,
        } = routing::load_routing(&rt_src, &keywords, tpl)?;

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
            triage: Triage::new(keywords, required),
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
