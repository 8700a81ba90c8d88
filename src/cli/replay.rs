//! `replay`: what a config change would change. Every message is triaged
//! and routed under both configs, and those decided differently are shown.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::batch::{Item, Items, batch, error_line, inputs_of, json_line};
use super::triage::{check_mailbox, known_mailboxes};
use super::{CliError, Outcome, load_config, one_line};
use crate::case::Case;
use crate::config::Config;
use crate::route::Action;

/// What `replay` compares of a message under one config: what triage and
/// routing decide, not what the templates render.
#[derive(Debug, PartialEq, Serialize)]
struct Decided {
    kind: crate::extract::Kind,
    /// Each category and term once, in order of first appearance; where
    /// they were found is left out.
    flags: Vec<FlagTerm>,
    risk: u8,
    tier: u8,
    missing: Vec<crate::extract::Field>,
    actions: Vec<Decision>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct FlagTerm {
    category: String,
    term: String,
}

/// An action as routing decides it, before rendering.
#[derive(Debug, PartialEq, Serialize)]
struct Decision {
    #[serde(rename = "type")]
    kind: crate::route::ActionType,
    rule: String,
    to: Vec<String>,
    cc: Vec<String>,
    template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hours: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    after_hours: Vec<String>,
}

impl Decided {
    fn new(case: Case, actions: Vec<Action>) -> Decided {
        let mut flags: Vec<FlagTerm> = Vec::new();
        for f in case.flags {
            if !flags
                .iter()
                .any(|x| x.category == f.category && x.term == f.term)
            {
                flags.push(FlagTerm {
                    category: f.category,
                    term: f.term,
                });
            }
        }
        let actions = actions
            .into_iter()
            .map(|a| Decision {
                kind: a.kind,
                rule: a.rule,
                to: a.to,
                cc: a.cc,
                template: a.template,
                digest: a.digest,
                tags: a.tags,
                hours: a.hours,
                after_hours: a.after_hours,
            })
            .collect();
        Decided {
            kind: case.kind,
            flags,
            risk: case.risk,
            tier: case.tier,
            missing: case.missing,
            actions,
        }
    }

    /// The names of the parts that differ from `new`, in output order.
    fn changed(&self, new: &Decided) -> Vec<&'static str> {
        [
            ("kind", self.kind != new.kind),
            ("flags", sorted(&self.flags) != sorted(&new.flags)),
            ("risk", self.risk != new.risk),
            ("tier", self.tier != new.tier),
            ("missing", self.missing != new.missing),
            ("actions", self.actions != new.actions),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }
}

fn sorted<T: Clone + Ord>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// A message that the two configs treat differently.
#[derive(Debug, Serialize)]
struct Replayed {
    message_id: Option<String>,
    subject: Option<String>,
    old: Decided,
    new: Decided,
    changed: Vec<&'static str>,
}

/// Triages and routes one message under both configs; `None` when they
/// agree.
fn replay_one(
    new: &Config,
    old: &Config,
    mailbox: Option<&str>,
    raw: &[u8],
) -> Result<Option<Replayed>, String> {
    let email = crate::message::parse(raw).map_err(|e| e.to_string())?;
    let decide = |config: &Config| {
        let case = config.triage.case(&email);
        let actions = config.router.route(&case, mailbox);
        (
            case.message_id.clone(),
            case.subject.clone(),
            Decided::new(case, actions),
        )
    };
    let (_, _, old) = decide(old);
    let (message_id, subject, new) = decide(new);
    let changed = old.changed(&new);
    Ok((!changed.is_empty()).then_some(Replayed {
        message_id,
        subject,
        old,
        new,
        changed,
    }))
}

pub(super) fn replay(
    new_dir: &Path,
    old_dir: Option<&Path>,
    mailbox: Option<&str>,
    json: bool,
    max_size: u64,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let new = Config::load(new_dir)?;
    let old = load_config(old_dir)?;
    let mailbox = match mailbox {
        Some(m) => Some(check_mailbox(
            m,
            &[
                known_mailboxes(Some(new_dir), &new)?,
                known_mailboxes(old_dir, &old)?,
            ],
        )?),
        None => None,
    };
    let mailbox = mailbox.as_deref();
    let (files, _) = inputs_of(inputs)?;
    let work = |_: &Item, raw: Result<&[u8], String>| {
        raw.and_then(|raw| replay_one(&new, &old, mailbox, raw))
    };
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let (mut messages, mut differ, mut failed) = (0usize, 0usize, 0usize);
    batch(
        Items::new(files, max_size),
        max_size,
        &work,
        &mut |item, result| match result {
            Ok(None) => {
                messages += 1;
                Ok(())
            }
            Ok(Some(r)) => {
                messages += 1;
                differ += 1;
                if json {
                    out.write_all(&json_line(item, &r))
                } else {
                    print_replayed(item, &r, &mut out)
                }
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(file = %item.label(), error = %e, "skipped");
                if json {
                    out.write_all(&error_line(item, &e))
                } else {
                    writeln!(out, "{}\n  error    {}\n", item.label(), one_line(&e, 300))
                }
            }
        },
    )?;
    if !json {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        let verb = if differ == 1 { "differs" } else { "differ" };
        write!(out, "{messages} message{}, {differ} {verb}", s(messages))?;
        if failed > 0 {
            write!(out, ", {failed} not email{}", s(failed))?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    Ok(if failed > 0 {
        Outcome::SomeInputsFailed(failed)
    } else if differ > 0 {
        Outcome::Differ(differ)
    } else {
        Outcome::Ok
    })
}

/// One changed message for people: the file and subject, then each part
/// that changed as `old -> new`; flags and actions as those removed (`-`)
/// and added (`+`).
fn print_replayed(item: &Item, r: &Replayed, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", item.label())?;
    let subject = r
        .subject
        .as_deref()
        .map_or_else(|| "(no subject)".to_string(), |s| one_line(s, 120));
    writeln!(out, "  subject  {subject}")?;
    let (old, new) = (&r.old, &r.new);
    for part in &r.changed {
        let (before, after) = match *part {
            "kind" => (snake(&old.kind), snake(&new.kind)),
            "flags" => {
                let text = |flags: &[FlagTerm]| -> Vec<String> {
                    flags
                        .iter()
                        .map(|f| format!("{} {:?}", f.category, f.term))
                        .collect()
                };
                print_lines(part, &text(&old.flags), &text(&new.flags), out)?;
                continue;
            }
            "risk" => (old.risk.to_string(), new.risk.to_string()),
            "tier" => (old.tier.to_string(), new.tier.to_string()),
            "missing" => (field_list(&old.missing), field_list(&new.missing)),
            _ => {
                let text = |actions: &[Decision]| -> Vec<String> {
                    actions.iter().map(action_text).collect()
                };
                print_lines(part, &text(&old.actions), &text(&new.actions), out)?;
                continue;
            }
        };
        writeln!(out, "  {part:<8} {before} -> {after}")?;
    }
    writeln!(out)
}

/// The entries only in the old list (`-`) and only in the new (`+`); when
/// both hold the same entries in another order, both lists.
fn print_lines(label: &str, old: &[String], new: &[String], out: &mut dyn Write) -> io::Result<()> {
    let mut lines: Vec<String> = Vec::new();
    for a in old.iter().filter(|a| !new.contains(a)) {
        lines.push(format!("- {a}"));
    }
    for a in new.iter().filter(|a| !old.contains(a)) {
        lines.push(format!("+ {a}"));
    }
    if lines.is_empty() {
        lines.push("the same, in another order:".into());
        lines.extend(old.iter().map(|a| format!("- {a}")));
        lines.extend(new.iter().map(|a| format!("+ {a}")));
    }
    for (i, line) in lines.iter().enumerate() {
        let label = if i == 0 { label } else { "" };
        writeln!(out, "  {label:<8} {line}")?;
    }
    Ok(())
}

/// An action on one line: `forward to a@x cc b@x (rule tier-2)`.
fn action_text(a: &Decision) -> String {
    use crate::route::ActionType;
    let mut s = match a.kind {
        ActionType::Reply => format!(
            "reply {} to {}",
            a.template.as_deref().unwrap_or("-"),
            a.to.join(", ")
        ),
        ActionType::Forward => {
            let mut s = format!("forward to {}", a.to.join(", "));
            if !a.cc.is_empty() {
                s.push_str(&format!(" cc {}", a.cc.join(", ")));
            }
            if let Some(t) = a.template.as_deref().filter(|t| *t != "forward") {
                s.push_str(&format!(" with {t}"));
            }
            if let Some(h) = &a.hours {
                s.push_str(&format!(" in {h} hours"));
                if !a.after_hours.is_empty() {
                    s.push_str(&format!(", after hours to {}", a.after_hours.join(", ")));
                }
            }
            s
        }
        ActionType::Digest => format!("digest {}", a.digest.as_deref().unwrap_or("-")),
        ActionType::Tag => format!("tag {}", a.tags.join(", ")),
    };
    s.push_str(&format!(" (rule {})", a.rule));
    s
}

fn field_list(fields: &[crate::extract::Field]) -> String {
    if fields.is_empty() {
        return "none".into();
    }
    let v: Vec<&str> = fields.iter().map(|f| f.name()).collect();
    v.join(", ")
}

/// A unit enum's serde name (`pickup_complaint`).
fn snake<T: Serialize + std::fmt::Debug>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{v:?}"))
}
