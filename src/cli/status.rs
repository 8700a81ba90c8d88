//! `status`: the daemon's health, asked of the running daemon or read from
//! the database when none answers, printed at a glance (the verdict on the
//! first line) or as JSON; its exit code is the verdict, for a monitoring
//! check. Whatever goes wrong while finding out is "cannot tell" (exit 2),
//! said on standard output too, so that the check shows why.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::cases::{ask_daemon, open_database};
use super::{CliError, Outcome, one_line};
use crate::config::{Config, Settings};
use crate::control::{self, Host, Request, Response, Scope};
use crate::health::{CannotTell, Link, MailboxReport, Report, Verdict, span};

/// How long `status` waits for the daemon: a monitoring check has a
/// timeout of its own, often 10 s.
const STATUS_TIMEOUT: Duration = Duration::from_secs(8);

pub(super) fn status(dir: &Path, json: bool, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match report(dir) {
        Ok(report) => {
            if json {
                serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::from)?;
                writeln!(out)?;
            } else {
                print_report(&report, out)?;
            }
            Ok(Outcome::Health(report.verdict))
        }
        Err(why) => {
            let cannot = CannotTell::new(why);
            if json {
                serde_json::to_writer_pretty(&mut *out, &cannot).map_err(std::io::Error::from)?;
                writeln!(out)?;
            } else {
                writeln!(out, "cannot tell: {}", cannot.reasons.join("; "))?;
            }
            Ok(Outcome::Health(Verdict::Unknown))
        }
    }
}

/// The report, from the daemon or the database; Err says why there is
/// none.
fn report(dir: &Path) -> Result<Report, String> {
    let settings = Settings::load(dir).map_err(|e| e.to_string())?;
    match ask_daemon(&settings, &Request::Status, STATUS_TIMEOUT) {
        Ok(Some(Response::Ok { value })) => serde_json::from_value(value)
            .map_err(|e| format!("the daemon's answer cannot be read: {e}")),
        Ok(Some(Response::Err { error })) => Err(format!("the daemon answered: {error}")),
        Ok(None) => from_database(dir, &settings),
        Err(e) => Err(e.to_string()),
    }
}

/// No daemon answers: the status the database and the config on disk
/// give, through the same dispatcher.
fn from_database(dir: &Path, settings: &Settings) -> Result<Report, String> {
    let (store, db) =
        open_database(dir, settings).map_err(|e| format!("no daemon answers, and {e}"))?;
    let config = Config::load(dir).map_err(|e| e.to_string())?;
    let host = OnItsOwn(Scope::from_config(&config, settings, db));
    let no_digest = |_: &str, _: bool| -> Result<String, control::DigestFailure> {
        Err("no digest here".into())
    };
    let answer = control::handle(
        &store,
        Request::Status,
        jiff::Timestamp::now(),
        &std::sync::Mutex::new(()),
        &no_digest,
        Some(&host),
    );
    match answer {
        Response::Ok { value } => serde_json::from_value(value).map_err(|e| e.to_string()),
        Response::Err { error } => Err(error),
    }
}

/// The command line on its own: the config's scope, nothing to wake.
struct OnItsOwn(Scope);

impl Host for OnItsOwn {
    fn scope(&self) -> Scope {
        self.0.clone()
    }

    fn wake_outbox(&self) {}
}

/// `2026-11-23 14:02:05 UTC`.
fn utc(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `12.3 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// The report at a glance: the verdict first, then a line (or a few) per
/// part, labels in one column.
fn print_report(r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let now = r.now;
    let ago = |t: jiff::Timestamp| span(crate::clock::seconds_between(t, now));
    writeln!(out, "{}", r.headline())?;
    let d = &r.daemon;
    match (&d.version, d.started_at) {
        (Some(version), Some(started)) if d.running => writeln!(
            out,
            "daemon    running, version {version}, up {} (since {})",
            ago(started),
            utc(started)
        )?,
        _ => writeln!(
            out,
            "daemon    not running: read from the database; whether the mailboxes are connected cannot be known"
        )?,
    }
    for m in &r.mailboxes {
        print_mailbox(m, now, out)?;
    }
    let o = &r.outbox;
    let retrying = match &o.oldest_retrying {
        Some(old) => format!(
            "{} retrying (the oldest, #{}, for {}: {})",
            o.retrying,
            old.id,
            span(old.seconds),
            one_line(old.last_error.as_deref().unwrap_or("no error kept"), 160)
        ),
        None => format!("{} retrying", o.retrying),
    };
    writeln!(
        out,
        "outbox    {} pending, {retrying}, {} undeliverable",
        o.pending, o.undeliverable
    )?;
    for g in &r.oauth2 {
        let state = match (&g.error, g.token_expires) {
            (Some(e), _) => format!(
                "{} since {}: {}",
                if g.refused { "refused" } else { "failing" },
                utc(e.at),
                one_line(&e.message, 200)
            ),
            (None, Some(exp)) => format!("token valid until {}", utc(exp)),
            (None, None) => "no token yet".to_string(),
        };
        writeln!(
            out,
            "oauth2    {} ({}, {}): {state}; {} token requests",
            g.used_by.join(", "),
            g.flow,
            g.token_url,
            g.requests
        )?;
    }
    for g in &r.digests {
        let last = g.last.map_or_else(|| "never".to_string(), utc);
        let next = match (&g.schedule, g.next) {
            (Some(s), Some(n)) => format!("next {} ({s})", utc(n)),
            (Some(s), None) => format!("no next run found ({s})"),
            (None, _) => "sent on request only".to_string(),
        };
        writeln!(out, "digest    {}: last {last}, {next}", g.name)?;
    }
    writeln!(
        out,
        "database  {}, {}",
        r.database.path,
        bytes(r.database.bytes)
    )
}

fn print_mailbox(
    m: &MailboxReport,
    now: jiff::Timestamp,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let ago = |t: jiff::Timestamp| span(crate::clock::seconds_between(t, now));
    let state = match (m.state, m.since) {
        (Link::Unknown, _) | (_, None) => format!("{} (no daemon)", m.state),
        (state, Some(since)) => format!("{state} since {} ({})", utc(since), ago(since)),
    };
    writeln!(out, "mailbox   {}: {state}", m.name)?;
    if let Some(e) = &m.last_error {
        writeln!(
            out,
            "            last error {}: {}",
            utc(e.at),
            one_line(&e.message, 200)
        )?;
    }
    match &m.last_message {
        Some(l) => writeln!(
            out,
            "            last message UID {} at {} ({} ago): {}",
            l.uid,
            utc(l.at),
            ago(l.at),
            l.seen
        )?,
        None => writeln!(out, "            no message processed yet")?,
    }
    let show = |n: Option<u32>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    writeln!(
        out,
        "            UIDVALIDITY {}, cursor (last UID) {}",
        show(m.uid_validity),
        show(m.last_uid)
    )
}
