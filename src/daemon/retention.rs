//! The retention task: the store's retention pass soon after the daemon
//! starts and then once a day, by the daemon's clock (a test that moves the
//! clock moves it too), off the async threads. The pass takes the case
//! lock one batch at a time, so mail keeps flowing while it runs; what it
//! did is logged at info.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::watch;

use super::Shared;
use crate::shutdown::stopped;
use crate::store::Retention;

/// How often the pass runs.
const EVERY: Duration = Duration::from_secs(86_400);

/// How often the task looks at the clock between passes.
const LOOK: Duration = Duration::from_secs(3600);

pub(super) async fn retention_task(
    sh: Arc<Shared>,
    retention: Retention,
    mut shutdown: watch::Receiver<bool>,
) {
    let retention = Arc::new(retention);
    let mut last: Option<Timestamp> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let changed = sh.clock.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let now = sh.now();
        if last.is_none_or(|l| crate::clock::after(l, EVERY) <= now) {
            last = Some(now);
            run_pass(&sh, &retention, now).await;
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(LOOK) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn run_pass(sh: &Arc<Shared>, retention: &Arc<Retention>, now: Timestamp) {
    let (sh2, r) = (sh.clone(), retention.clone());
    let started = Instant::now();
    let done = tokio::task::spawn_blocking(move || {
        sh2.store.retention_pass_with(&r, now, || sh2.lock_cases())
    })
    .await;
    let archive = retention.archive.display();
    match done {
        Ok(Ok(r)) => tracing::info!(
            sent_bytes_dropped = r.sent_dropped,
            seen_pruned = r.seen_pruned,
            cases_archived = r.cases_archived,
            cases_waiting = r.cases_waiting,
            outbox_items_removed = r.items_removed,
            originals_removed = r.originals_removed,
            indexed = r.indexed,
            batches = r.batches,
            ms = started.elapsed().as_millis() as u64,
            %archive,
            "retention pass"
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, %archive, "retention pass failed; it runs again tomorrow")
        }
        Err(e) => tracing::error!(error = %e, "retention pass failed; it runs again tomorrow"),
    }
}
