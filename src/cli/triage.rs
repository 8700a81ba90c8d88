//! `parse` and `route`: the case a message makes, and the actions the
//! routing table would take for it (rendered, never sent); and the mailbox
//! names `--mailbox` may take.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::batch::{Item, Items, failed_line, inputs_of, json_line, json_lines, read_input};
use super::{CliError, Outcome, load_config};
use crate::case::Case;
use crate::config::{Config, Settings};
use crate::route::Action;

pub(super) fn parse(
    config: Option<&Path>,
    max_size: u64,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let config = load_config(config)?;
    let (files, batched) = inputs_of(inputs)?;
    if !batched {
        let path = &files[0].0;
        let raw = read_input(path, max_size)?;
        let (_, case) = config.triage.parse(&raw).map_err(|e| CliError::Input {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        serde_json::to_writer_pretty(&mut *out, &case).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(Outcome::Ok);
    }
    let work = |item: &Item, raw: Result<&[u8], String>| match raw
        .and_then(|raw| config.triage.parse(raw).map_err(|e| e.to_string()))
    {
        Ok((_, case)) => (json_line(item, &case), false),
        Err(e) => failed_line(item, &e),
    };
    json_lines(Items::new(files, max_size), max_size, &work, out)
}

#[derive(Serialize)]
struct Routed<'a> {
    #[serde(flatten)]
    case: &'a Case,
    actions: &'a [Action],
}

/// The mailbox names a config knows, and where they come from.
pub(super) struct KnownMailboxes {
    names: Vec<String>,
    from: String,
}

/// The names `--mailbox` may take with this config: the `[[mailbox]]` names
/// of its mailtriage.toml (the shipped one for the built-in config), or, in a
/// directory without one, the mailboxes its routing rules match on.
pub(super) fn known_mailboxes(
    dir: Option<&Path>,
    config: &Config,
) -> Result<KnownMailboxes, CliError> {
    let daemon_names =
        |d: Settings| -> Vec<String> { d.mailboxes.into_iter().map(|m| m.name).collect() };
    let Some(dir) = dir else {
        return Ok(KnownMailboxes {
            names: daemon_names(Settings::builtin()?),
            from: "the [[mailbox]] names of the built-in config/mailtriage.toml".into(),
        });
    };
    let toml = dir.join("mailtriage.toml");
    if toml.exists() {
        return Ok(KnownMailboxes {
            names: daemon_names(Settings::load(dir)?),
            from: format!("the [[mailbox]] names of {}", toml.display()),
        });
    }
    let mut names: Vec<String> = Vec::new();
    for rule in &config.router.rules {
        for m in &rule.when.mailbox {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(m)) {
                names.push(m.clone());
            }
        }
    }
    let routing = dir.join("routing.toml");
    let from = if names.is_empty() {
        format!(
            "no rule of {} matches on a mailbox, and there is no {}",
            routing.display(),
            toml.display()
        )
    } else {
        format!(
            "the mailboxes the rules of {} match on, as there is no {}",
            routing.display(),
            toml.display()
        )
    };
    Ok(KnownMailboxes { names, from })
}

/// `--mailbox NAME` when some config knows it, spelled as that config spells
/// it (routing compares mailbox names without regard to case); otherwise a
/// usage error that lists the known names.
pub(super) fn check_mailbox(name: &str, known: &[KnownMailboxes]) -> Result<String, CliError> {
    if let Some(found) = known
        .iter()
        .flat_map(|k| &k.names)
        .find(|n| n.eq_ignore_ascii_case(name))
    {
        return Ok(found.clone());
    }
    let mut names: Vec<&str> = Vec::new();
    for n in known.iter().flat_map(|k| &k.names) {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let from: Vec<&str> = known.iter().map(|k| k.from.as_str()).collect();
    let expected = if names.is_empty() {
        "no mailbox is known".to_string()
    } else {
        format!("expected one of {}", names.join(", "))
    };
    Err(CliError::Usage(format!(
        "--mailbox {name:?}: unknown mailbox; {expected} ({})",
        from.join("; ")
    )))
}

pub(super) fn route(
    config_dir: Option<&Path>,
    mailbox: Option<&str>,
    case_id: &str,
    with_body: bool,
    max_size: u64,
    inputs: &[PathBuf],
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let config = load_config(config_dir)?;
    let mailbox = match mailbox {
        Some(m) => Some(check_mailbox(m, &[known_mailboxes(config_dir, &config)?])?),
        None => None,
    };
    let mailbox = mailbox.as_deref();
    let (files, batched) = inputs_of(inputs)?;
    let routed = |raw: &[u8], path: &Path| -> Result<(Case, Vec<Action>), CliError> {
        let (email, case) = config.triage.parse(raw).map_err(|e| CliError::Input {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut actions = config.router.route(&case, mailbox);
        // As the daemon would write it had the message just arrived.
        let mut letter = crate::letter::Letter::new(case_id, mailbox, &case, &email);
        letter.received_at = email.date.as_deref().and_then(crate::text::parse_rfc3339);
        letter.respond_within = config.lifecycle.respond_within(case.risk);
        letter.owners = crate::letter::owners(&actions);
        for a in &mut actions {
            let rendered = crate::letter::render(&config.router, a, &letter)?;
            if let Some(r) = rendered {
                a.subject = Some(r.subject);
                if with_body {
                    a.body = Some(r.body);
                }
            }
        }
        Ok((case, actions))
    };
    if !batched {
        let path = &files[0].0;
        let raw = read_input(path, max_size)?;
        let (case, actions) = routed(&raw, path)?;
        serde_json::to_writer_pretty(
            &mut *out,
            &Routed {
                case: &case,
                actions: &actions,
            },
        )
        .map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(Outcome::Ok);
    }
    let work = |item: &Item, raw: Result<&[u8], String>| {
        let result = raw.and_then(|raw| {
            routed(raw, &item.path).map_err(|e| match e {
                CliError::Input { message, .. } => message,
                other => other.to_string(),
            })
        });
        match result {
            Ok((case, actions)) => {
                let line = Routed {
                    case: &case,
                    actions: &actions,
                };
                (json_line(item, &line), false)
            }
            Err(e) => failed_line(item, &e),
        }
    };
    json_lines(Items::new(files, max_size), max_size, &work, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_names_are_checked_without_regard_to_case() {
        let known = |names: &[&str], from: &str| KnownMailboxes {
            names: names.iter().map(|n| n.to_string()).collect(),
            from: from.into(),
        };
        let cases: &[(&[KnownMailboxes], &str, Result<&str, &str>)] = &[
            (&[known(&["ops", "support"], "a")], "ops", Ok("ops")),
            (&[known(&["ops", "support"], "a")], "Support", Ok("support")),
            (
                &[known(&["ops", "support"], "a")],
                "opz",
                Err("--mailbox \"opz\": unknown mailbox; expected one of ops, support (a)"),
            ),
            (
                &[known(&["ops"], "a"), known(&["ops", "vip"], "b")],
                "VIP",
                Ok("vip"),
            ),
            (
                &[known(&["ops"], "a"), known(&["ops", "vip"], "b")],
                "x",
                Err("--mailbox \"x\": unknown mailbox; expected one of ops, vip (a; b)"),
            ),
            (
                &[known(&[], "none here")],
                "ops",
                Err("--mailbox \"ops\": unknown mailbox; no mailbox is known (none here)"),
            ),
        ];
        for (known, name, want) in cases {
            let got = check_mailbox(name, known).map_err(|e| {
                assert_eq!(e.exit_code(), 2);
                e.to_string()
            });
            assert_eq!(
                got.as_deref().map_err(String::as_str),
                *want,
                "--mailbox {name}"
            );
        }
    }
}
