//! Waiting in tests: a deadline loop on a condition, never a fixed sleep.

use std::time::{Duration, Instant};

/// Poll interval of [`wait_until`].
const POLL: Duration = Duration::from_millis(50);

/// Polls `done` (every 50 ms) until it holds; after `timeout`, panics with
/// `why()`.
pub fn wait_until(timeout: Duration, done: impl FnMut() -> bool, why: impl FnOnce() -> String) {
    wait_until_every(POLL, timeout, done, why)
}

/// [`wait_until`], polling every `poll` (for a cheap condition whose moment
/// matters).
pub fn wait_until_every(
    poll: Duration,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    why: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            panic!("waited {timeout:?} in vain: {}", why());
        }
        std::thread::sleep(poll);
    }
}
