//! The digest job: a digest built from the stored cases, queued in the
//! outbox with the period it covers, on the clock or on request.
//!
//! This is where digests meet the store and outgoing mail; what the cases
//! mean for a digest and how it reads are the pure parts of
//! [`crate::digest`]. The daemon calls [`queue_due`] on its clock and
//! [`digest_command`] for `mailtriage digest`; without a daemon the command
//! line calls [`digest_command`] itself.

use std::sync::MutexGuard;

use jiff::Timestamp;

use crate::config::{Config, Settings};
use crate::digest::{DigestData, DigestError, RenderedDigest, render_template, spec_of};
use crate::mail::{self, ComposeError, FromError, Identity};
use crate::store::{Store, StoreError};

/// Why a digest was not built or queued.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Compose(#[from] ComposeError),
    /// Who the digest is from (`[smtp] from`).
    #[error(transparent)]
    Identity(#[from] FromError),
}

/// Queues every scheduled digest whose period has come and was not sent,
/// at `t` (unix seconds); says how many it queued. A period the daemon was
/// down for is sent once, when it is back: the latest period only,
/// covering everything since the last one sent. `lock_cases` is held while
/// a digest reads the cases and is queued.
pub fn queue_due<'a>(
    config: &Config,
    store: &Store,
    identity: &Identity,
    now: Timestamp,
    lock_cases: impl Fn() -> MutexGuard<'a, ()>,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for (name, d) in &config.router.digests {
        let Some(schedule) = &d.schedule else {
            continue;
        };
        let last = store.digest_sent(name)?;
        let Some(period) = crate::calendar::due(schedule, last, now) else {
            continue;
        };
        if last.is_none() {
            // A new installation (or a new digest) starts counting here
            // rather than mailing managers the moment it starts.
            store.queue_digest(name, period, &[], now)?;
            tracing::info!(digest = %name, next = schedule.next_after(now).map(tracing::field::display), "digest scheduled: the first goes at the next period");
            continue;
        }
        let _guard = lock_cases();
        match queue_digest(config, store, identity, name, last, period, now) {
            Ok(summary) => {
                tracing::info!(digest = %name, period = %period, "{summary}");
                n += 1;
            }
            Err(e) => tracing::error!(digest = %name, error = %e, "digest not sent"),
        }
    }
    Ok(n)
}

/// What digest `name` says at `now`, covering cases since `since`: the
/// rendered digest and its recipients. Reads the open cases; what they
/// mean for the digest is [`DigestData::from_cases`].
pub fn build_digest(
    config: &Config,
    store: &Store,
    name: &str,
    since: Option<Timestamp>,
    now: Timestamp,
) -> Result<(RenderedDigest, Vec<String>), JobError> {
    let d = spec_of(&config.router, name)?;
    let mut open = Vec::new();
    for id in store.open_case_ids()? {
        open.extend(store.case(&id)?);
    }
    let data = DigestData::from_cases(config.digest_sources(), name, open, since, now)?;
    let rendered = render_template(&config.digest_templates, &d.template, &data)?;
    Ok((rendered, d.to.clone()))
}

/// Builds digest `name` and queues it, recording `period` as sent, in one
/// transaction. Says what it did.
fn queue_digest(
    config: &Config,
    store: &Store,
    identity: &Identity,
    name: &str,
    since: Option<Timestamp>,
    period: Timestamp,
    now: Timestamp,
) -> Result<String, JobError> {
    let (r, to) = build_digest(config, store, name, since, now)?;
    let out = mail::compose_digest(
        identity,
        name,
        period.as_second(),
        &to,
        &r.subject,
        &r.text,
        &r.html,
        crate::clock::system_time(now),
    )?;
    store.queue_digest(name, period, &[out], now)?;
    Ok(format!("digest {name:?} queued for {}", to.join(", ")))
}

/// `mailtriage digest NAME --preview | --send-now`: the next digest's
/// subject and text, or that digest queued now (counting as the current
/// period).
pub(crate) fn digest_command(
    config: &Config,
    daemon: &Settings,
    store: &Store,
    name: &str,
    send_now: bool,
    now: Timestamp,
) -> Result<String, JobError> {
    let since = store.digest_sent(name)?;
    if send_now {
        let identity = Identity::from_config(daemon)?;
        queue_digest(config, store, &identity, name, since, now, now)
    } else {
        let (r, to) = build_digest(config, store, name, since, now)?;
        Ok(format!(
            "To: {}\nSubject: {}\n\n{}",
            to.join(", "),
            r.subject,
            r.text
        ))
    }
}
