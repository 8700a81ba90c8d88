//! Retry timing: how long to wait after a failure before trying again.
//!
//! The outbox retries transient delivery failures with it, the mailbox
//! tasks reconnect with it, and the config's `[smtp]` retry defaults are its
//! defaults. Doubling with jitter, so that many items (or many mailboxes
//! after one outage) do not retry in step.

use std::time::Duration;

/// Retry timing for transient failures.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// After this long since queueing, a message is given up on.
    pub give_up_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(30),
            max: Duration::from_secs(30 * 60),
            give_up_after: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl Backoff {
    /// Seconds to wait after the `attempts`th failure: doubling, capped, with
    /// up to a fifth of jitter so that many items do not retry in step.
    pub fn delay(&self, attempts: u32, salt: u64) -> i64 {
        let base = self.first.as_secs().max(1);
        let exp = base.saturating_mul(1u64 << attempts.min(20));
        let capped = exp.min(self.max.as_secs().max(1));
        // A cheap mix of the salt (item id, attempt) for the jitter.
        let mut x = salt ^ (u64::from(attempts) << 32) ^ 0x9e37_79b9_7f4a_7c15;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let jitter = x % (capped / 5 + 1);
        (capped - capped / 10 + jitter) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let b = Backoff {
            first: Duration::from_secs(30),
            max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(3600),
        };
        for (attempts, base) in [(0u32, 30i64), (1, 60), (2, 120), (5, 600), (30, 600)] {
            let d = b.delay(attempts, 7);
            assert!(
                d >= base - base / 10 && d <= base + base / 10,
                "attempt {attempts}: {d}"
            );
        }
        assert_ne!(b.delay(3, 1), b.delay(3, 2), "jitter differs between items");
    }
}
