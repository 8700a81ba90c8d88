//! `Status`: the facts a status is made of, gathered from the store and
//! the host's [`Scope`], and turned into the report by
//! [`crate::health::report`]; and the scope the config on disk gives when
//! no daemon runs.

use std::path::{Path, PathBuf};

use super::Scope;
use crate::config::{Config, Settings};
use crate::health::{self, DatabaseReport, DigestFacts, Facts, MailboxFacts, OutboxFacts, Report};
use crate::store::{Store, StoreError};

/// The status at `now`: what the store holds about each mailbox of the
/// scope, the outbox's queue, each digest's last period, the database's
/// size.
pub(super) fn status(
    store: &Store,
    scope: &Scope,
    now: jiff::Timestamp,
) -> Result<Report, StoreError> {
    let mut mailboxes = Vec::with_capacity(scope.mailboxes.len());
    for (name, live) in &scope.mailboxes {
        mailboxes.push(MailboxFacts {
            name: name.clone(),
            live: live.clone(),
            cursor: store.cursor(name)?,
            last_message: store.last_message(name)?,
        });
    }
    let queue = store.outbox_summary()?;
    let outbox = OutboxFacts {
        pending: queue.pending,
        retrying: queue.retrying,
        undeliverable: queue.undeliverable,
        oldest_retrying: queue
            .oldest_retrying
            .map(|i| (i.id, i.failing_since.unwrap_or(i.queued_at), i.last_error)),
    };
    let mut digests = Vec::with_capacity(scope.digests.len());
    for (name, schedule) in &scope.digests {
        digests.push(DigestFacts {
            name: name.clone(),
            schedule: schedule.clone(),
            last: store.digest_sent(name)?,
        });
    }
    Ok(health::report(Facts {
        now,
        alert_after: scope.alert_after,
        running: scope.running.clone(),
        mailboxes,
        outbox,
        digests,
        database: DatabaseReport {
            path: scope.database.display().to_string(),
            bytes: disk_usage(&scope.database),
        },
        grants: scope.grants.clone(),
    }))
}

/// The space the files under `path` take on disk (their blocks, as `du`
/// counts them: sled's files are sparse), not following links; what
/// cannot be read counts nothing.
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let inside: u64 = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| disk_usage(&e.path()))
        .sum();
    own + inside
}

impl Scope {
    /// What `config` and `settings` say a status covers, with no daemon
    /// running: mailboxes without live records.
    pub fn from_config(config: &Config, settings: &Settings, database: PathBuf) -> Scope {
        Scope {
            running: None,
            alert_after: settings.daemon.alert_after.0,
            mailboxes: settings
                .mailboxes
                .iter()
                .map(|m| (m.name.clone(), None))
                .collect(),
            digests: config
                .router
                .digests
                .iter()
                .map(|(name, d)| (name.clone(), d.schedule.clone()))
                .collect(),
            database,
            grants: Vec::new(),
        }
    }
}
