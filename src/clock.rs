//! Time as the daemon sees it: one injected [`Clock`] (the system's, or
//! one a test sets by hand), and how times are stored (unix seconds, so
//! records written before stay readable and `cases list --json` keeps its
//! numbers).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::Timestamp;
use tokio::sync::Notify;

/// The daemon's clock: the system's, or, in tests, one set by hand. Setting
/// it wakes the tasks that act on time (overdue cases, digests, the
/// outbox).
#[derive(Debug, Default)]
pub struct Clock {
    /// Unix seconds; 0: the system clock.
    fixed: AtomicI64,
    changed: Notify,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Arc<Clock> {
        Arc::new(Clock::default())
    }

    /// A clock that says `at` until set again.
    pub fn fixed(at: Timestamp) -> Arc<Clock> {
        let c = Clock::default();
        c.set(at);
        Arc::new(c)
    }

    pub fn set(&self, at: Timestamp) {
        self.fixed.store(at.as_second().max(1), Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn now(&self) -> Timestamp {
        match self.fixed.load(Ordering::SeqCst) {
            0 => Timestamp::now(),
            t => Timestamp::from_second(t).unwrap_or(Timestamp::UNIX_EPOCH),
        }
    }

    /// Resolves when the clock is set (a test moved time).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The notification behind [`Clock::changed`], to register before
    /// work that must not miss a change made during it.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

/// A timestamp as unix seconds, for `#[serde(with = ...)]`.
pub mod seconds {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.as_second())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let n = i64::deserialize(d)?;
        Timestamp::from_second(n).map_err(serde::de::Error::custom)
    }

    /// The same for an `Option<Timestamp>` (`null` when absent).
    pub mod option {
        use jiff::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&t.as_second()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            Option::<i64>::deserialize(d)?
                .map(|n| Timestamp::from_second(n).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// `t` for a `Date:` header (lettre takes a `SystemTime`).
pub fn system_time(t: Timestamp) -> std::time::SystemTime {
    std::time::SystemTime::from(t)
}

/// `t` plus `d`, saturating at the end of representable time.
pub fn after(t: Timestamp, d: std::time::Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// `t` minus `d`, saturating at the start of representable time.
pub fn before(t: Timestamp, d: std::time::Duration) -> Timestamp {
    t.checked_sub(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MIN)
}

/// Whole seconds from `earlier` to `later` (negative when `later` is
/// earlier).
pub fn seconds_between(earlier: Timestamp, later: Timestamp) -> i64 {
    later.as_second() - earlier.as_second()
}
