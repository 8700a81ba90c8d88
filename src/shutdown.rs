//! Shutdown as every task sees it: a `watch` channel whose value turns true
//! once, when the daemon is asked to stop (SIGTERM, SIGINT, or the caller of
//! `daemon::run` dropping its side).

use tokio::sync::watch;

/// Resolves when `shutdown` is (or turns) true, or its sender is gone:
/// nobody is left to say stop, so the task stops too.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}
