//! `outbox list|show|retry|drop`: asked of the running daemon through its
//! control socket, or done in the database when no daemon runs; printed as
//! a table, an item's sheet, or JSON.

use std::io::{self, Write};

use super::cases::{ask, from_answer, print_json, utc};
use super::{CliError, OutboxCommand, Outcome, one_line, write_table};
use crate::control::{OutboxChanged, OutboxEntry, Request};
use crate::outbox::QueueState;

pub(super) fn outbox(command: OutboxCommand, out: &mut dyn Write) -> Result<Outcome, CliError> {
    match command {
        OutboxCommand::List {
            config,
            states,
            json,
        } => {
            let mut wanted: Vec<QueueState> = Vec::new();
            for s in states.iter().flat_map(|s| s.states()) {
                if !wanted.contains(&s) {
                    wanted.push(s);
                }
            }
            let value = ask(
                &config,
                Request::OutboxList {
                    states: wanted.clone(),
                },
            )?;
            if json {
                return print_json(&value, out);
            }
            let entries: Vec<OutboxEntry> = from_answer(value)?;
            print_table(&entries, wanted.is_empty(), jiff::Timestamp::now(), out)?;
        }
        OutboxCommand::Show { config, id, json } => {
            let value = ask(&config, Request::OutboxShow { id })?;
            if json {
                return print_json(&value, out);
            }
            let entry: OutboxEntry = from_answer(value)?;
            print_item(&entry, out)?;
        }
        OutboxCommand::Retry {
            config,
            id,
            all_undeliverable,
        } => {
            let req = match id {
                Some(id) if !all_undeliverable => Request::OutboxRetry { id },
                _ => Request::OutboxRetryUndeliverable,
            };
            let single = matches!(req, Request::OutboxRetry { .. });
            let value = ask(&config, req)?;
            if single {
                let changed: OutboxChanged = from_answer(value)?;
                writeln!(out, "{}", changed.message)?;
            } else {
                let changed: Vec<OutboxChanged> = from_answer(value)?;
                for c in &changed {
                    writeln!(out, "{}", c.message)?;
                }
                let n = changed.iter().filter(|c| c.changed).count();
                match n {
                    0 => writeln!(out, "nothing undeliverable; nothing changed")?,
                    1 => writeln!(out, "1 item retried")?,
                    n => writeln!(out, "{n} items retried")?,
                }
            }
        }
        OutboxCommand::Drop { config, id } => {
            let value = ask(&config, Request::OutboxDrop { id })?;
            let changed: OutboxChanged = from_answer(value)?;
            writeln!(out, "{}", changed.message)?;
        }
    }
    Ok(Outcome::Ok)
}

/// When an item is tried next: `now` when due, its time when later, `-`
/// when it is not waiting.
fn next_try(e: &OutboxEntry, now: jiff::Timestamp) -> String {
    match e.queue {
        QueueState::Pending | QueueState::Retrying if e.item.next_attempt_at <= now => "now".into(),
        QueueState::Pending | QueueState::Retrying => utc(e.item.next_attempt_at),
        _ => "-".into(),
    }
}

/// Columns of `outbox list`.
const LIST_HEADER: [&str; 8] = [
    "ID",
    "STATE",
    "KIND",
    "TO",
    "SUBJECT",
    "TRIES",
    "NEXT TRY",
    "LAST ERROR",
];

fn print_table(
    entries: &[OutboxEntry],
    queued_only: bool,
    now: jiff::Timestamp,
    out: &mut dyn Write,
) -> io::Result<()> {
    if entries.is_empty() {
        let none = if queued_only {
            "nothing pending, retrying or undeliverable"
        } else {
            "no outbox items"
        };
        return writeln!(out, "{none}");
    }
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            [
                e.item.id.to_string(),
                e.queue.to_string(),
                e.item.kind.to_string(),
                one_line(&e.item.recipients.join(", "), 40),
                one_line(e.subject.as_deref().unwrap_or("-"), 50),
                e.item.attempts.to_string(),
                next_try(e, now),
                one_line(e.item.last_error.as_deref().unwrap_or("-"), 60),
            ]
        })
        .collect();
    write_table(out, &LIST_HEADER, &rows)
}

fn print_item(e: &OutboxEntry, out: &mut dyn Write) -> io::Result<()> {
    let i = &e.item;
    writeln!(out, "outbox #{}  {}  {}", i.id, e.queue, i.kind)?;
    let kv = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {k:<12} {v}");
    kv(out, "case", i.case_id.as_deref().unwrap_or("-"))?;
    kv(out, "to", &i.recipients.join(", "))?;
    kv(out, "from", &i.envelope_from)?;
    kv(
        out,
        "subject",
        &one_line(e.subject.as_deref().unwrap_or("-"), 200),
    )?;
    kv(out, "message-id", &i.message_id)?;
    kv(out, "queued", &utc(i.queued_at))?;
    let tries = format!(
        "{} attempt{}",
        i.attempts,
        if i.attempts == 1 { "" } else { "s" }
    );
    kv(out, "attempts", &tries)?;
    if matches!(e.queue, QueueState::Pending | QueueState::Retrying) {
        kv(out, "next try", &utc(i.next_attempt_at))?;
    }
    if let Some(at) = i.failing_since {
        kv(out, "failing since", &utc(at))?;
    }
    if let Some(at) = i.sent_at {
        kv(out, "sent", &utc(at))?;
    }
    if let Some(err) = &i.last_error {
        kv(out, "last error", &one_line(err, 500))?;
    }
    let size = e.size.map_or_else(
        || "its bytes are no longer kept".to_string(),
        |n| format!("{n} bytes"),
    );
    kv(out, "size", &size)?;
    if !i.history.is_empty() {
        writeln!(out, "\nHistory")?;
        for h in &i.history {
            writeln!(out, "  {}  {}  {}", utc(h.at), h.by, h.changes.join("; "))?;
        }
    }
    if let Some(headers) = &e.headers {
        writeln!(out, "\nHeaders")?;
        for l in headers.lines() {
            writeln!(out, "  {l}")?;
        }
    }
    Ok(())
}
