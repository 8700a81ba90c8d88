//! `cases` and `digest`: asked of the running daemon through its control
//! socket, or answered from the database when no daemon runs; printed as a
//! table, a case sheet, or JSON. A case retention archived is shown from
//! the archive, saying so.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{CasesCommand, CliError, Outcome, one_line, write_table};
use crate::config::{Config, ConfigError, Settings};
use crate::control::{self, CaseDetail, Changed, ControlError, Request, Response};
use crate::record::CaseRecord;
use crate::store::Store;

/// How long a command waits for the daemon's answer.
const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) fn cases(command: CasesCommand, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match command {
        CasesCommand::List {
            config,
            open,
            tier,
            risk_min,
            since,
            json,
        } => {
            let req = Request::List {
                open,
                tier,
                risk_min,
                since,
            };
            let value = ask(&config, req)?;
            if json {
                return print_json(&value, out);
            }
            let cases: Vec<CaseRecord> = from_answer(value)?;
            print_table(&cases, now(), out)?;
        }
        CasesCommand::Show { config, id, json } => {
            let value = match ask(&config, Request::Show { id: id.clone() }) {
                // Not in the database: perhaps archived by retention.
                Err(CliError::Refused(e)) if e == format!("no case {id}") => {
                    return show_archived(&config, &id, json, e, out);
                }
                r => r?,
            };
            if json {
                return print_json(&value, out);
            }
            let detail: CaseDetail = from_answer(value)?;
            print_case(&detail, now(), out)?;
        }
        CasesCommand::Resolve { config, id, note } => {
            let value = ask(
                &config,
                Request::Resolve {
                    id,
                    note: Some(note),
                },
            )?;
            let changed: Changed = from_answer(value)?;
            writeln!(out, "{}", changed.message)?;
        }
        CasesCommand::Reopen { config, id } => {
            let value = ask(&config, Request::Reopen { id })?;
            let changed: Changed = from_answer(value)?;
            writeln!(out, "{}", changed.message)?;
        }
    }
    Ok(Outcome::Ok)
}

pub(super) fn digest(
    config: &Path,
    name: String,
    send_now: bool,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let value = ask(config, Request::Digest { name, send_now })?;
    match value {
        serde_json::Value::String(text) => {
            write!(out, "{text}")?;
            if !text.ends_with('\n') {
                writeln!(out)?;
            }
            Ok(Outcome::Ok)
        }
        other => print_json(&other, out),
    }
}

/// Unix seconds now.
fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Asks the daemon through its control socket; when none answers, answers
/// from the database directly. An `Err` answer (an unknown case id) is a
/// failure with exit code 1.
pub(super) fn ask(dir: &Path, req: Request) -> Result<serde_json::Value, CliError> {
    let settings = Settings::load(dir)?;
    if let Some(answer) = ask_daemon(&settings, &req, CONTROL_TIMEOUT)? {
        return answered(answer);
    }
    let (store, _) = open_database(dir, &settings)?;
    let digest = direct_digest(dir, &store);
    // Changes are flushed before `handle` returns (the store flushes each
    // transaction).
    let answer = control::handle(
        &store,
        req,
        now(),
        &std::sync::Mutex::new(()),
        &digest,
        None,
    );
    answered(answer)
}

/// The sockets a daemon may answer on: the one the config implies, then
/// the shipped unit's (an operator's shell has neither RUNTIME_DIRECTORY
/// nor STATE_DIRECTORY).
pub(super) fn sockets(settings: &Settings) -> Vec<PathBuf> {
    let mut sockets: Vec<PathBuf> = control::socket_path(settings).into_iter().collect();
    let unit_socket = Path::new(control::UNIT_RUNTIME_DIRECTORY).join("mailtriage.sock");
    if !sockets.contains(&unit_socket) {
        sockets.push(unit_socket);
    }
    sockets
}

/// The daemon's answer to `req`, from the first socket a daemon answers
/// on; None when none does.
pub(super) fn ask_daemon(
    settings: &Settings,
    req: &Request,
    timeout: std::time::Duration,
) -> Result<Option<Response>, ControlError> {
    for path in &sockets(settings) {
        match control::request(path, req, timeout) {
            Ok(answer) => return Ok(Some(answer)),
            Err(ControlError::NotRunning { .. }) => {
                tracing::debug!(socket = %path.display(), "no daemon answers here");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Opens the database because no daemon answers: `[daemon] database`,
/// else `$STATE_DIRECTORY/db`, else the shipped unit's if it exists. Never
/// creates one, and refuses one another user owns when run as root.
pub(super) fn open_database(dir: &Path, settings: &Settings) -> Result<(Store, PathBuf), CliError> {
    let socket = sockets(settings).first().cloned();
    let unit_db = Path::new(control::UNIT_STATE_DIRECTORY).join("db");
    let Some(db) = control::database_path(settings).or_else(|| unit_db.exists().then_some(unit_db))
    else {
        return Err(no_database_path(dir));
    };
    // Opening creates a database: a command must not create one where the
    // daemon has not.
    if !db.exists() {
        return Err(CliError::NoDatabase(db));
    }
    refuse_foreign_database(&db)?;
    match Store::open(&db, settings.daemon.cache.0) {
        Ok(s) => Ok((s, db)),
        Err(e) if Store::in_use(&db) => {
            let socket = socket
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(unknown)".into());
            Err(CliError::DatabaseInUse {
                db,
                socket,
                source: e,
            })
        }
        Err(e) => Err(CliError::Database { db, source: e }),
    }
}

/// Neither `[daemon] database` nor a state directory says where the
/// database is.
pub(super) fn no_database_path(dir: &Path) -> CliError {
    ConfigError {
        file: dir.join("mailtriage.toml"),
        at: None,
        message: "no database path: set [daemon] database, or STATE_DIRECTORY (and RUNTIME_DIRECTORY for the daemon's control socket) as the service has them".into(),
    }
    .into()
}

/// Opening another user's database as root would leave files the service
/// (a `DynamicUser=`) cannot write: refused, with what to do instead.
fn refuse_foreign_database(db: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user: no libc call needed.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid());
    let owner = std::fs::metadata(db).map(|m| m.uid());
    match (me, owner) {
        (Ok(0), Ok(owner)) if owner != 0 => Err(CliError::ForeignDatabase {
            db: db.to_path_buf(),
            owner,
        }),
        _ => Ok(()),
    }
}

/// Digests when no daemon runs.
fn direct_digest<'a>(
    dir: &'a Path,
    store: &'a Store,
) -> impl Fn(&str, bool) -> Result<String, control::DigestFailure> + 'a {
    move |name: &str, send_now: bool| {
        let config = Config::load(dir)?;
        let settings = Settings::load(dir)?;
        Ok(crate::daemon::digest_command(
            &config,
            &settings,
            store,
            name,
            send_now,
            jiff::Timestamp::now(),
        )?)
    }
}

pub(super) fn answered(answer: Response) -> Result<serde_json::Value, CliError> {
    match answer {
        Response::Ok { value } => Ok(value),
        Response::Err { error } => Err(CliError::Refused(error)),
    }
}

pub(super) fn from_answer<T: for<'de> serde::Deserialize<'de>>(
    value: serde_json::Value,
) -> Result<T, CliError> {
    serde_json::from_value(value).map_err(CliError::UnexpectedAnswer)
}

/// `cases show` of a case the database no longer has: from the archive
/// when retention moved it there, said first; `not_found` (the daemon's
/// answer) when the archive has no such case either.
fn show_archived(
    dir: &Path,
    id: &str,
    json: bool,
    not_found: String,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let settings = Settings::load(dir)?;
    let unit_db = Path::new(control::UNIT_STATE_DIRECTORY).join("db");
    let Some(db) =
        control::database_path(&settings).or_else(|| unit_db.exists().then_some(unit_db))
    else {
        return Err(CliError::Refused(not_found));
    };
    let archive = settings.retention.archive_path(&db);
    let found = match crate::store::find_archived(&archive, id) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(CliError::Refused(not_found)),
        Err(e) => {
            return Err(CliError::Refused(format!(
                "{not_found}, and the archive could not be searched: {e}"
            )));
        }
    };
    let a = found.case;
    if json {
        let value = serde_json::json!({
            "case": a.case,
            "outbox": a.outbox,
            "archived": {
                "archived_at": a.archived_at.as_second(),
                "file": archive,
                "line": found.line,
            },
        });
        return print_json(&value, out);
    }
    writeln!(
        out,
        "{id} was archived {} to {} (line {}): it is no longer in the database.\n",
        utc(a.archived_at),
        archive.display(),
        found.line
    )?;
    let detail = CaseDetail {
        case: a.case,
        outbox: a.outbox,
    };
    print_case(&detail, now(), out)?;
    Ok(Outcome::Ok)
}

pub(super) fn print_json(
    value: &serde_json::Value,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(Outcome::Ok)
}

/// `2026-11-23 14:02 UTC`.
pub(super) fn utc(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// Columns of `cases list`.
const LIST_HEADER: [&str; 8] = [
    "CASE", "STATUS", "TIER", "RISK", "AGE", "ORDER", "CUSTOMER", "ISSUE",
];

fn print_table(cases: &[CaseRecord], now: jiff::Timestamp, out: &mut dyn Write) -> io::Result<()> {
    if cases.is_empty() {
        return writeln!(out, "no cases");
    }
    let dash = |v: Option<&str>, max: usize| v.map_or_else(|| "-".into(), |s| one_line(s, max));
    let rows: Vec<[String; 8]> = cases
        .iter()
        .map(|r| {
            let f = &r.case.fields;
            let issue = f
                .issue
                .as_deref()
                .or(f.issue_summary.as_deref())
                .or(r.case.subject.as_deref());
            [
                r.id.clone(),
                r.status.to_string(),
                r.case.tier.to_string(),
                r.case.risk.to_string(),
                crate::text::age(crate::clock::seconds_between(r.received_at, now)),
                dash(f.order_id.as_deref(), 20),
                dash(f.customer_name.as_deref(), 24),
                dash(issue, 60),
            ]
        })
        .collect();
    write_table(out, &LIST_HEADER, &rows)
}

fn print_case(d: &CaseDetail, now: jiff::Timestamp, out: &mut dyn Write) -> io::Result<()> {
    let r = &d.case;
    let c = &r.case;
    writeln!(
        out,
        "{}  {}  tier {}  risk {}",
        r.id, r.status, c.tier, c.risk
    )?;
    let kv = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {k:<12} {v}");
    kv(
        out,
        "received",
        &format!(
            "{} ({} ago), mailbox {}, uid {}",
            utc(r.received_at),
            crate::text::age(crate::clock::seconds_between(r.received_at, now)),
            r.mailbox,
            r.uid
        ),
    )?;
    let from = match (&r.from_name, &c.from) {
        (Some(n), Some(a)) => format!("{n} <{a}>"),
        (None, Some(a)) => a.clone(),
        (Some(n), None) => n.clone(),
        (None, None) => "-".into(),
    };
    kv(out, "from", &from)?;
    if let Some(s) = &c.subject {
        kv(out, "subject", &one_line(s, 200))?;
    }
    if let Some(m) = &c.message_id {
        kv(out, "message-id", m)?;
    }
    let kind = serde_json::to_value(c.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", c.kind));
    kv(out, "kind", &kind)?;
    kv(out, "updated", &utc(r.updated_at))?;
    if let Some(at) = r.resolved_at {
        kv(out, "resolved", &utc(at))?;
    }
    if let Some(note) = &r.resolution {
        kv(out, "resolution", &one_line(note, 500))?;
    }
    if let Some(at) = r.overdue_at {
        kv(out, "overdue", &format!("re-escalated {}", utc(at)))?;
    }
    if let Some(f) = &r.follows {
        kv(out, "follows", f)?;
    }
    if !r.tags.is_empty() {
        let tags: Vec<String> = r.tags.iter().map(|t| format!("#{t}")).collect();
        kv(out, "tags", &tags.join(" "))?;
    }
    if !r.digests.is_empty() {
        kv(out, "digests", &r.digests.join(", "))?;
    }
    if !r.forwarded_to.is_empty() {
        kv(out, "forwarded to", &r.forwarded_to.join(", "))?;
    }

    writeln!(out, "\nFields")?;
    let mut fields: Vec<(String, String)> = crate::extract::Field::ALL
        .iter()
        .filter_map(|&f| {
            let value = match f {
                crate::extract::Field::RiskRating => c.fields.risk_rating.map(|n| n.to_string()),
                _ => c.fields.text(f).map(|v| one_line(v, 500)),
            };
            value.map(|v| (f.name().replace('_', " "), v))
        })
        .collect();
    if fields.is_empty() {
        writeln!(out, "  (none)")?;
    }
    if !c.missing.is_empty() {
        let names: Vec<String> = c
            .missing
            .iter()
            .map(|f| f.name().replace('_', " "))
            .collect();
        fields.push(("missing".into(), names.join(", ")));
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &fields {
        writeln!(out, "  {k:<width$} {v}")?;
    }

    writeln!(out, "\nFlags")?;
    if c.flags.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for f in &c.flags {
        let place = serde_json::to_value(f.place)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        writeln!(out, "  {}: {} (in {place})", f.category, f.term)?;
    }

    writeln!(out, "\nHistory")?;
    writeln!(
        out,
        "  {}  {}  opened",
        utc(r.received_at),
        c.from.as_deref().unwrap_or("-")
    )?;
    for h in &r.history {
        writeln!(out, "  {}  {}  {}", utc(h.at), h.by, h.changes.join("; "))?;
    }

    writeln!(out, "\nMessages")?;
    if d.outbox.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for i in &d.outbox {
        let state = serde_json::to_value(i.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{:?}", i.state));
        let when = match (i.state, i.sent_at) {
            (_, Some(at)) => format!(", sent {}", utc(at)),
            (crate::outbox::Delivery::Pending, None) => {
                format!(", next try {}", utc(i.next_attempt_at))
            }
            _ => String::new(),
        };
        writeln!(
            out,
            "  #{} {} to {}: {state}, {} attempt{}{when}",
            i.id,
            i.kind,
            i.recipients.join(", "),
            i.attempts,
            if i.attempts == 1 { "" } else { "s" },
        )?;
        if let Some(e) = &i.last_error {
            writeln!(out, "      last error: {}", one_line(e, 300))?;
        }
    }
    Ok(())
}
