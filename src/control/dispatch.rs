//! The one dispatcher: a request answered against the store, the same for
//! the socket server and for the command line without a daemon.

use std::sync::{Mutex, PoisonError};

use super::{BY, CaseDetail, Changed, DigestFailure, Host, Request, Response};
use jiff::Timestamp;

use crate::lifecycle;
use crate::record::CaseRecord;
use crate::store::{HandChange, Store, StoreError};

/// Answers one request against `store`: the one dispatcher of the socket
/// server and of the command line without a daemon.
///
/// `Resolve` and `Reopen` hold `lock` (the daemon's case lock, held by the
/// daemon while it changes cases) from reading the case to writing it, so
/// that a change from the command line and one from mail do not overwrite
/// each other; so do the outbox's changes, which write a case's history.
///
/// `host` answers what the store cannot: the scope of `Status` and waking
/// the outbox after a retry. Without one, `Status` is refused.
pub fn handle(
    store: &Store,
    req: Request,
    now: jiff::Timestamp,
    lock: &Mutex<()>,
    digest: &dyn Fn(&str, bool) -> Result<String, DigestFailure>,
    host: Option<&dyn Host>,
) -> Response {
    match req {
        Request::List {
            open,
            tier,
            risk_min,
            since,
        } => match list(store, open, tier, risk_min, since) {
            Ok(cases) => Response::ok(&cases),
            Err(e) => Response::err(e.to_string()),
        },
        Request::Show { id } => match show(store, &id) {
            Ok(Some(detail)) => Response::ok(&detail),
            Ok(None) => Response::err(format!("no case {id}")),
            Err(e) => Response::err(e.to_string()),
        },
        Request::Resolve { id, note } => change(store, &id, now, lock, |rec| {
            if lifecycle::resolve(rec, note.as_deref(), BY, now) {
                (true, format!("{id} resolved"))
            } else {
                (false, format!("{id} is already resolved; nothing changed"))
            }
        }),
        Request::Reopen { id } => change(store, &id, now, lock, |rec| {
            if lifecycle::reopen(rec, BY, now) {
                (true, format!("{id} reopened"))
            } else {
                (false, format!("{id} is already open; nothing changed"))
            }
        }),
        Request::Digest { name, send_now } => match digest(&name, send_now) {
            Ok(text) => Response::Ok {
                value: serde_json::Value::String(text),
            },
            Err(error) => Response::Err {
                error: error.to_string(),
            },
        },
        // Answered by a stream, not a line: the server streams it, the
        // command line without a daemon writes the store's snapshot.
        Request::Export => Response::err("export: the answer is a stream; ask the control socket"),
        Request::Status => match host {
            Some(h) => match super::status::status(store, &h.scope(), now) {
                Ok(report) => Response::ok(&report),
                Err(e) => Response::err(format!("reading the status: {e}")),
            },
            None => Response::err("this control socket gives no status"),
        },
        Request::OutboxList { states } => super::outbox::list(store, &states),
        Request::OutboxShow { id } => super::outbox::show(store, id),
        Request::OutboxRetry { id } => {
            super::outbox::change(store, id, HandChange::Retry, now, lock, host)
        }
        Request::OutboxRetryUndeliverable => {
            super::outbox::retry_undeliverable(store, now, lock, host)
        }
        Request::OutboxDrop { id } => {
            super::outbox::change(store, id, HandChange::Drop, now, lock, host)
        }
    }
}

fn list(
    store: &Store,
    open: bool,
    tier: Option<u8>,
    risk_min: Option<u8>,
    since: Option<Timestamp>,
) -> Result<Vec<CaseRecord>, StoreError> {
    let keep = |r: &CaseRecord| {
        (!open || r.is_open())
            && tier.is_none_or(|t| r.case.tier == t)
            && risk_min.is_none_or(|m| r.case.risk >= m)
            && since.is_none_or(|s| r.received_at >= s)
    };
    let mut out = Vec::new();
    if open {
        // The open-case index spares reading every resolved case.
        for id in store.open_case_ids()? {
            if let Some(r) = store.case(&id)?
                && keep(&r)
            {
                out.push(r);
            }
        }
    } else {
        for r in store.cases() {
            let r = r?;
            if keep(&r) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

fn show(store: &Store, id: &str) -> Result<Option<CaseDetail>, StoreError> {
    let Some(case) = store.case(id)? else {
        return Ok(None);
    };
    let mut outbox = Vec::with_capacity(case.outbox.len());
    for &item in &case.outbox {
        match store.outbox_item(item)? {
            Some(i) => outbox.push(i),
            None => tracing::warn!(case = id, item, "outbox item of the case is missing"),
        }
    }
    Ok(Some(CaseDetail { case, outbox }))
}

fn change(
    store: &Store,
    id: &str,
    now: jiff::Timestamp,
    lock: &Mutex<()>,
    apply: impl FnOnce(&mut CaseRecord) -> (bool, String),
) -> Response {
    // A panic while the lock was held cannot have left a case half written
    // (the store is transactional): a poisoned lock is still usable.
    let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
    let mut rec = match store.case(id) {
        Ok(Some(r)) => r,
        Ok(None) => return Response::err(format!("no case {id}")),
        Err(e) => return Response::err(e.to_string()),
    };
    let (changed, message) = apply(&mut rec);
    let case = if changed {
        match store.update_case(&rec, &[], now) {
            Ok(r) => r,
            Err(e) => return Response::err(format!("storing {id}: {e}")),
        }
    } else {
        rec
    };
    Response::ok(&Changed {
        changed,
        message,
        case,
    })
}
