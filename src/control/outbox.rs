//! The outbox's requests: list, show, retry and drop. A change takes the
//! case lock (it writes the item's case's history), and a retry wakes the
//! daemon's outbox task through the host.

use std::sync::{Mutex, PoisonError};

use super::{BY, Host, OutboxChanged, OutboxEntry, Response};
use crate::outbox::{OutboxItem, QueueState};
use crate::store::{HandChange, ItemChanged, Store, StoreError};

/// What `OutboxList` lists when no state is given: what is still to go,
/// and what needs a human.
const QUEUED: [QueueState; 3] = [
    QueueState::Pending,
    QueueState::Retrying,
    QueueState::Undeliverable,
];

pub(super) fn list(store: &Store, states: &[QueueState]) -> Response {
    let states = if states.is_empty() {
        &QUEUED[..]
    } else {
        states
    };
    let listed = store.outbox_in(states).and_then(|items| {
        items
            .into_iter()
            .map(|i| entry(store, i, false))
            .collect::<Result<Vec<_>, _>>()
    });
    match listed {
        Ok(entries) => Response::ok(&entries),
        Err(e) => Response::err(e.to_string()),
    }
}

pub(super) fn show(store: &Store, id: u64) -> Response {
    match store.outbox_item(id) {
        Ok(Some(item)) => match entry(store, item, true) {
            Ok(e) => Response::ok(&e),
            Err(e) => Response::err(e.to_string()),
        },
        Ok(None) => Response::err(no_item(id)),
        Err(e) => Response::err(e.to_string()),
    }
}

/// Retries or drops item `id` by hand.
pub(super) fn change(
    store: &Store,
    id: u64,
    change: HandChange,
    now: jiff::Timestamp,
    lock: &Mutex<()>,
    host: Option<&dyn Host>,
) -> Response {
    let changed = {
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        store.change_item(id, change, BY, now)
    };
    match changed {
        Ok(c) => {
            if c.changed && change == HandChange::Retry {
                wake(host);
            }
            Response::ok(&answer(c, change))
        }
        Err(StoreError::NoSuchItem(_)) => Response::err(no_item(id)),
        Err(e) => Response::err(format!("changing outbox #{id}: {e}")),
    }
}

/// Retries every undeliverable item, each in its own transaction.
pub(super) fn retry_undeliverable(
    store: &Store,
    now: jiff::Timestamp,
    lock: &Mutex<()>,
    host: Option<&dyn Host>,
) -> Response {
    let retried = (|| -> Result<Vec<OutboxChanged>, StoreError> {
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for id in store.undeliverable_ids()? {
            let c = store.change_item(id, HandChange::Retry, BY, now)?;
            out.push(answer(c, HandChange::Retry));
        }
        Ok(out)
    })();
    match retried {
        Ok(out) => {
            if out.iter().any(|c| c.changed) {
                wake(host);
            }
            Response::ok(&out)
        }
        Err(e) => Response::err(format!("retrying the undeliverable items: {e}")),
    }
}

fn wake(host: Option<&dyn Host>) {
    if let Some(h) = host {
        h.wake_outbox();
    }
}

fn no_item(id: u64) -> String {
    format!("no outbox item {id}")
}

/// The change in words: `outbox #12 forward to a@x: retried (was
/// undeliverable)`, or why nothing changed.
fn answer(c: ItemChanged, change: HandChange) -> OutboxChanged {
    let label = format!("outbox {}", c.item.label());
    let message = match (c.changed, change, c.before) {
        (true, HandChange::Retry, before) => format!("{label}: retried (was {before})"),
        (true, HandChange::Drop, before) => format!("{label}: dropped (was {before})"),
        (false, _, QueueState::Sent) => {
            let at = c
                .item
                .sent_at
                .map(|t| format!(" at {}", t.strftime("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default();
            format!("{label} was sent{at}; nothing changed")
        }
        (false, _, before) => format!("{label} is already {before}; nothing changed"),
    };
    OutboxChanged {
        changed: c.changed,
        message,
        item: c.item,
    }
}

/// An item with its subject and size, and with `headers` its header
/// section, read from its bytes when they are kept.
fn entry(store: &Store, item: OutboxItem, headers: bool) -> Result<OutboxEntry, StoreError> {
    let raw = match store.outbox_raw(item.id) {
        Ok(raw) => Some(raw),
        Err(StoreError::NoSuchItem(_)) => None,
        Err(e) => return Err(e),
    };
    let header_section = |raw: &[u8]| {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(raw.len(), |i| i + 2);
        String::from_utf8_lossy(&raw[..end]).into_owned()
    };
    Ok(OutboxEntry {
        queue: item.queue_state(),
        subject: raw.as_deref().and_then(crate::message::subject_of),
        size: raw.as_ref().map(|r| r.len() as u64),
        headers: raw.as_deref().filter(|_| headers).map(header_section),
        item,
    })
}
