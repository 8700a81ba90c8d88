//! templates/: the letters' templates (`NAME.txt`) and the digests'
//! (`NAME.txt` and `NAME.html`), read, compiled, and checked by rendering
//! each one the config uses against sample cases.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, builtin};
use crate::route::{Router, Templates};
use crate::template_check as tc;

/// One file of templates/.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct TemplateFile {
    name: String,
    path: PathBuf,
    text: String,
}

/// The files of templates/: text and HTML apart.
pub(super) struct TemplateFiles {
    dir: PathBuf,
    txt: Vec<TemplateFile>,
    html: Vec<TemplateFile>,
}

impl TemplateFiles {
    /// The shipped templates, as if in `config_dir`/templates.
    pub(super) fn builtin(config_dir: &Path) -> TemplateFiles {
        let dir = config_dir.join("templates");
        let files = |list: &[(&str, &str)], ext: &str| -> Vec<TemplateFile> {
            list.iter()
                .map(|(n, s)| TemplateFile {
                    name: n.to_string(),
                    path: dir.join(format!("{n}.{ext}")),
                    text: s.to_string(),
                })
                .collect()
        };
        TemplateFiles {
            txt: files(builtin::TEMPLATES, "txt"),
            html: files(builtin::HTML, "html"),
            dir,
        }
    }

    /// Reads `config_dir`/templates: its `.txt` and `.html` files, in order
    /// of name; other files are left alone.
    pub(super) fn read(config_dir: &Path) -> Result<TemplateFiles, ConfigError> {
        let dir = config_dir.join("templates");
        let entries = std::fs::read_dir(&dir).map_err(|e| ConfigError {
            file: dir.clone(),
            at: None,
            message: format!("cannot read the templates directory: {e}"),
        })?;
        let mut txt = Vec::new();
        let mut html = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ConfigError {
                file: dir.clone(),
                at: None,
                message: format!("cannot list: {e}"),
            })?;
            let path = entry.path();
            let is_html = match path.extension().and_then(|e| e.to_str()) {
                Some("txt") => false,
                Some("html") => true,
                _ => continue,
            };
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
            let file = TemplateFile { name, path, text };
            if is_html {
                html.push(file);
            } else {
                txt.push(file);
            }
        }
        txt.sort();
        html.sort();
        Ok(TemplateFiles { dir, txt, html })
    }

    /// Every `.txt` file compiled as a letter (`Subject:` line, body); a
    /// syntax error is reported at its line.
    pub(super) fn letters(&self) -> Result<Templates, ConfigError> {
        let mut templates = Templates::default();
        for f in &self.txt {
            templates
                .add(&f.name, &f.text)
                .map_err(|(line, message)| ConfigError {
                    file: f.path.clone(),
                    at: Some((line, 1)),
                    message,
                })?;
        }
        Ok(templates)
    }

    /// The digests' templates: for each template a digest of `router`
    /// names, both its text and its HTML file.
    pub(super) fn digests(
        &self,
        router: &Router,
    ) -> Result<minijinja::Environment<'static>, ConfigError> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        for d in router.digests.values() {
            let name = &d.template;
            if env.get_template(&format!("{name}.txt")).is_ok() {
                continue;
            }
            let txt = find(&self.txt, name).ok_or_else(|| ConfigError {
                file: self.dir.join(format!("{name}.txt")),
                at: None,
                message: "missing: a digest needs its text template".into(),
            })?;
            let html = find(&self.html, name).ok_or_else(|| ConfigError {
                file: self.dir.join(format!("{name}.html")),
                at: None,
                message: "missing: a digest needs its HTML template".into(),
            })?;
            crate::digest::add_templates(&mut env, name, &txt.text, &html.text).map_err(
                |(which, line, message)| ConfigError {
                    file: if which == "html" {
                        html.path.clone()
                    } else {
                        txt.path.clone()
                    },
                    at: (line > 0).then_some((line, 1)),
                    message,
                },
            )?;
        }
        Ok(env)
    }

    /// Where template `name` of kind `ext` is (or would be).
    fn path_of(&self, name: &str, ext: &str) -> PathBuf {
        let list = if ext == "html" { &self.html } else { &self.txt };
        find(list, name)
            .map(|f| f.path.clone())
            .unwrap_or_else(|| self.dir.join(format!("{name}.{ext}")))
    }

    /// Renders every template the config uses against sample cases of
    /// each kind (see [`crate::template_check`]).
    pub(super) fn check(&self, config: &Config) -> Result<(), ConfigError> {
        let fault = |file: PathBuf, f: tc::Fault| ConfigError {
            file,
            at: f.line.map(|l| (l, 1)),
            message: f.message,
        };
        let (router, lifecycle) = (&config.router, &config.lifecycle);
        // Replies and forwards: the rules' templates and the joined reply.
        let mut letters: Vec<&str> = Vec::new();
        for rule in &router.rules {
            letters.extend(rule.reply.as_deref());
            letters.extend(rule.forward.as_ref().map(|f| f.template.as_str()));
        }
        letters.extend(lifecycle.joined_reply.as_deref());
        let mut families: Vec<(Vec<&str>, Vec<tc::Sample>)> =
            vec![(letters, tc::letter_samples(&config.triage, router))];
        if let Some(o) = &lifecycle.overdue {
            families.push((
                vec![o.template.as_str()],
                tc::overdue_samples(&config.triage, router),
            ));
        }
        if let Some(v) = &lifecycle.repeat_vendor {
            families.push((
                vec![v.template.as_str()],
                tc::vendor_samples(&config.triage),
            ));
        }
        for (names, samples) in &mut families {
            names.sort_unstable();
            names.dedup();
            for name in names.iter() {
                for (part, offset) in router.templates.parts(name) {
                    tc::check(router.templates.env(), &part, offset, samples)
                        .map_err(|f| fault(self.path_of(name, "txt"), f))?;
                }
            }
        }
        let samples = tc::digest_samples();
        let mut digests: Vec<&str> = router
            .digests
            .values()
            .map(|d| d.template.as_str())
            .collect();
        digests.sort_unstable();
        digests.dedup();
        for name in digests {
            for ext in ["txt", "html"] {
                tc::check(
                    &config.digest_templates,
                    &format!("{name}.{ext}"),
                    0,
                    &samples,
                )
                .map_err(|f| fault(self.path_of(name, ext), f))?;
            }
        }
        Ok(())
    }
}

fn find<'a>(files: &'a [TemplateFile], name: &str) -> Option<&'a TemplateFile> {
    files.iter().find(|f| f.name == name)
}
