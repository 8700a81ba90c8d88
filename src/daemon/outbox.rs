//! The outbox task: delivers what is due over SMTP, recording each outcome
//! in the store before going on, and sleeps until woken by new mail to
//! send, the next retry, or a minute. Transient failures are retried with
//! jittered doubling backoff; permanent ones (5xx, or three days of
//! transient ones) are kept as undeliverable, for a human. SMTP failing
//! for `alert_after` is said once at ERROR (an alert mail would have to go
//! through the same server), and once more when it delivers again.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use super::Shared;
use crate::backoff::Backoff;
use crate::metrics::{Metrics, SmtpFailure};
use crate::shutdown::stopped;
use crate::smtp::{SendError, Smtp};
use crate::store::{Store, StoreError};

pub(super) async fn outbox_task(sh: Arc<Shared>, smtp: Smtp, mut shutdown: watch::Receiver<bool>) {
    let backoff = Backoff {
        first: sh.settings.smtp.retry_first.0,
        max: sh.settings.smtp.retry_max.0,
        ..Backoff::default()
    };
    let mut pruned_at = Timestamp::UNIX_EPOCH;
    // SMTP failing for `alert_after`: said once at ERROR (an alert mail
    // would have to go through the same SMTP), and once when it recovers.
    let mut failing_since: Option<Timestamp> = None;
    let mut reported = false;
    loop {
        if *shutdown.borrow() {
            smtp.close().await;
            return;
        }
        // Registered before the pass, so that setting the clock during it
        // is not missed (a held forward may have become due).
        let clock_set = sh.clock.notified();
        tokio::pin!(clock_set);
        clock_set.as_mut().enable();
        // The reply counts behind the rate limit look back an hour; keep a
        // day of them, pruned hourly.
        if crate::clock::after(pruned_at, Duration::from_secs(3600)) <= sh.now() {
            pruned_at = sh.now();
            if let Err(e) = sh
                .store
                .prune_replies(crate::clock::before(pruned_at, Duration::from_secs(86_400)))
            {
                tracing::error!(error = %e, "pruning reply counts");
            }
        }
        match deliver_due(&sh.store, &smtp, &backoff, sh.now(), &sh.metrics).await {
            Ok(d) if d.sent + d.retrying + d.undeliverable > 0 => {
                tracing::debug!(
                    sent = d.sent,
                    retrying = d.retrying,
                    undeliverable = d.undeliverable,
                    "outbox pass"
                );
                let t = sh.now();
                if d.sent > 0 {
                    if reported {
                        tracing::warn!(
                            down_for = %crate::text::age(crate::clock::seconds_between(failing_since.unwrap_or(t), t)),
                            "SMTP delivers again"
                        );
                    }
                    failing_since = None;
                    reported = false;
                } else if d.retrying > 0 {
                    let since = *failing_since.get_or_insert(t);
                    if !reported
                        && crate::clock::after(since, sh.settings.daemon.alert_after.0) <= t
                    {
                        reported = true;
                        tracing::error!(
                            host = %sh.settings.smtp.host,
                            failing_for = %crate::text::age(crate::clock::seconds_between(since, t)),
                            "SMTP has been failing: outgoing mail waits in the outbox (no alert mail can go through it)"
                        );
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "outbox: store error"),
        }
        // Sleep until woken by new mail to send, the next retry, or a
        // minute at most.
        let next = match sh.store.next_due() {
            Ok(Some(at)) => {
                Duration::from_secs(crate::clock::seconds_between(sh.now(), at).clamp(0, 60) as u64)
            }
            _ => Duration::from_secs(60),
        };
        tokio::select! {
            _ = sh.outbox_wake.notified() => {}
            _ = clock_set => {}
            _ = tokio::time::sleep(next) => {}
            _ = stopped(&mut shutdown) => {
                smtp.close().await;
                return;
            }
        }
    }
}

/// What one pass over the due items did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Delivered {
    pub sent: usize,
    pub retrying: usize,
    pub undeliverable: usize,
}

/// Sends every item due at `now`, recording each outcome in the store
/// before going on.
pub(super) async fn deliver_due(
    store: &Store,
    smtp: &Smtp,
    backoff: &Backoff,
    now: jiff::Timestamp,
    metrics: &Metrics,
) -> Result<Delivered, StoreError> {
    let mut done = Delivered::default();
    for item in store.outbox_due(now, 100)? {
        let raw = store.outbox_raw(item.id)?;
        match smtp.send(&item, &raw).await {
            Ok(()) => {
                store.mark_sent(item.id, now)?;
                metrics.sent(item.kind);
                tracing::info!(outbox = item.id, message_id = %item.message_id, case = item.case_id.as_deref().unwrap_or("-"), kind = %item.kind, "sent");
                done.sent += 1;
            }
            Err(SendError::Permanent(e)) => {
                metrics.smtp_error(SmtpFailure::Permanent);
                store.mark_undeliverable(item.id, &e)?;
                tracing::error!(outbox = item.id, message_id = %item.message_id, case = item.case_id.as_deref().unwrap_or("-"), error = %e, "undeliverable, kept for a human");
                done.undeliverable += 1;
            }
            Err(SendError::Transient(e)) => {
                metrics.smtp_error(SmtpFailure::Transient);
                // Three days of failures, counted from the first (not from
                // when it was queued: a forward held for business hours, or
                // retried by hand, gets its own three days).
                let failing_since = item.failing_since.unwrap_or(if item.attempts == 0 {
                    now
                } else {
                    item.queued_at
                });
                if crate::clock::after(failing_since, backoff.give_up_after) < now {
                    store.mark_undeliverable(
                        item.id,
                        &format!("gave up after {} attempts: {e}", item.attempts + 1),
                    )?;
                    tracing::error!(outbox = item.id, message_id = %item.message_id, error = %e, "gave up retrying");
                    done.undeliverable += 1;
                } else {
                    let delay = std::time::Duration::from_secs(
                        backoff.delay(item.attempts, item.id).max(0) as u64,
                    );
                    let retry_at = crate::clock::after(now, delay);
                    store.mark_retry(item.id, &e, now, retry_at)?;
                    tracing::warn!(outbox = item.id, message_id = %item.message_id, error = %e, retry_at = %retry_at, "will retry");
                    done.retrying += 1;
                }
            }
        }
    }
    Ok(done)
}
