//! The clock task: what runs on time. Every minute, and at once when a
//! test sets the clock: the digests whose period has come, and the cases
//! open longer than their risk allows (re-escalated once, see
//! [`crate::intake::overdue`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;
use crate::intake;
use crate::shutdown::stopped;
use crate::store::StoreError;

/// What runs on the clock: digests and overdue re-escalations. Every minute, and at
/// once when a test sets the clock.
pub(super) async fn clock_task(sh: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let changed = sh.clock.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        clock_pass(&sh, "digests queued", |sh| {
            super::digest::queue_due(&sh.config, &sh.store, &sh.identity, sh.now(), || {
                sh.lock_cases()
            })
        })
        .await;
        clock_pass(&sh, "overdue cases re-escalated", overdue_pass).await;
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Runs one of the clock's passes off the async threads (they read and
/// write the store) and wakes the outbox when it queued mail.
async fn clock_pass<E: std::fmt::Display + Send + 'static>(
    sh: &Arc<Shared>,
    done: &'static str,
    pass: impl FnOnce(&Shared) -> Result<usize, E> + Send + 'static,
) {
    let sh2 = sh.clone();
    match tokio::task::spawn_blocking(move || pass(&sh2)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => {
            tracing::info!(count = n, "{done}");
            sh.outbox_wake.notify_one();
        }
        Ok(Err(e)) => tracing::error!(error = %e, "{done}: failed"),
        Err(e) => tracing::error!(error = %e, "{done}: failed"),
    }
}

/// Re-escalates, once, every open case older than its risk allows (see
/// [`intake::overdue`]).
fn overdue_pass(sh: &Shared) -> Result<usize, StoreError> {
    let _guard = sh.lock_cases();
    let t = sh.now();
    let ix = sh.intake();
    let mut n = 0;
    for id in sh.store.open_case_ids()? {
        let Some(rec) = sh.store.case(&id)? else {
            continue;
        };
        if let Some((rec, notice)) = intake::overdue(&ix, &rec, t) {
            sh.store.update_case(&rec, &[notice], t)?;
            n += 1;
        }
    }
    Ok(n)
}
