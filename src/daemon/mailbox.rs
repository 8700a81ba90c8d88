//! A mailbox task: one IMAP connection's life, again and again. It
//! connects (jittered exponential backoff after any failure; a mailbox
//! that is down never stops the others), replays the server actions a
//! crash may have left pending, reconciles UIDVALIDITY with its stored
//! cursor (a change starts a rescan, see [`crate::rescan`]), and drains new
//! mail in batches: sizes and INTERNALDATEs first (a message over the
//! limit is left for a human, and so is old mail of a rescan), bodies with `BODY.PEEK[]`, then
//! [`crate::intake::process`] under the case lock, the batch committed in
//! one transaction, and only then the messages marked or moved on the
//! server. Between batches it waits in IDLE, or polls. A mailbox with an
//! OAuth 2.0 grant logs in with its token source's token, and with a new
//! one once more when the server refuses it. A mailbox that cannot log
//! in, or stays down for `alert_after`, alerts the admins once, and once
//! more when it works again; a grant the provider refuses is alerted by
//! the grants task instead, once for all who use it.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use super::Shared;
use crate::backoff::Backoff;
use crate::batch::{Cursor, ServerAction};
use crate::config::{MailboxSection, SecretError};
use crate::health::Link;
use crate::imap::{Auth, Connection, Idled, ImapError, ImapSettings};
use crate::intake::{self, Arrival, LookupError};
use crate::oauth::GrantError;
use crate::rescan::Rescan;
use crate::shutdown::stopped;
use crate::store::StoreError;

/// Jittered exponential backoff for reconnecting: 1 s doubling to 5 min.
fn reconnect_delay(failures: u32, salt: u64) -> Duration {
    let b = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(300),
        give_up_after: Duration::MAX,
    };
    Duration::from_secs(b.delay(failures.saturating_sub(1), salt).max(1) as u64)
}

/// How to reach mailbox `m`, its secret read now (a token command gives a
/// fresh token at each connect). The config guarantees a password, a
/// token or a grant (whose token [`connect`] puts in).
fn imap_settings(m: &MailboxSection) -> Result<ImapSettings, SecretError> {
    let auth = match (&m.password, &m.oauth2_token) {
        (Some(p), _) => Auth::Password(p.read()?),
        (_, Some(t)) => Auth::XOAuth2(t.read()?),
        (None, None) => Auth::XOAuth2(String::new()),
    };
    Ok(ImapSettings {
        host: m.host.clone(),
        port: m.port,
        tls: m.tls,
        user: m.user.clone(),
        auth,
        timeout: m.timeout.0,
        ca_file: m.ca_file.clone(),
    })
}

/// Outage bookkeeping for health alerts.
#[derive(Default)]
struct Health {
    down_since: Option<Timestamp>,
    alerted: bool,
}

pub(super) async fn mailbox_task(
    sh: Arc<Shared>,
    index: usize,
    mut shutdown: watch::Receiver<bool>,
    ready: tokio::sync::mpsc::Sender<String>,
) {
    let m = &sh.settings.mailboxes[index];
    let mut failures: u32 = 0;
    let mut health = Health::default();
    let mut ready = Some(ready);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = session(
            &sh,
            index,
            &mut shutdown,
            &mut ready,
            &mut health,
            &mut failures,
        )
        .await;
        if let Err(e) = &result {
            // Logged before READY, so that the journal says why a mailbox
            // is not working by the time systemd calls the service started.
            tracing::error!(mailbox = %m.name, error = %e, failures = failures + 1, "mailbox session failed");
            sh.record(index, |live, t| live.failed(e.to_string(), t));
            sh.metrics.imap_error(&m.name);
        }
        if let Some(r) = ready.take() {
            let _ = r.send(m.name.clone()).await;
        }
        match result {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                let t = sh.now();
                let since = *health.down_since.get_or_insert(t);
                let is_auth = matches!(
                    e,
                    SessionError::Imap(ImapError::Auth { .. } | ImapError::Certificate(_))
                        | SessionError::Secret(_)
                );
                // A refused grant has its own alert, once for every
                // mailbox (and the SMTP server) that uses it.
                let grant_refused = matches!(&e, SessionError::OAuth(g) if g.is_fatal());
                if !health.alerted
                    && !grant_refused
                    && (is_auth
                        || crate::clock::after(since, sh.settings.daemon.alert_after.0) <= t)
                {
                    health.alerted = true;
                    alert(
                        &sh,
                        m,
                        since,
                        &format!(
                            "mailtriage cannot read the {} mailbox ({}@{}:{}) since {}.\n\nLast error: {e}\n\nEscalations sent there are not being triaged. You will get one more message when it works again.\n",
                            m.name,
                            m.user,
                            m.host,
                            m.port,
                            crate::text::local_time(since, &sh.config.router.readers.zone, since)
                        ),
                        Alert::Down,
                    );
                }
                let delay = reconnect_delay(failures, index as u64 ^ t.as_second() as u64);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped(&mut shutdown) => return,
                }
            }
        }
    }
}

/// Which of a mailbox's two alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alert {
    Down,
    Up,
}

fn alert(sh: &Shared, m: &MailboxSection, since: Timestamp, text: &str, which: Alert) {
    let (subject, what) = match which {
        Alert::Down => (
            format!("mailtriage: the {} mailbox is unreachable", m.name),
            "down",
        ),
        Alert::Up => (
            format!("mailtriage: the {} mailbox works again", m.name),
            "up",
        ),
    };
    let key = format!("{}.{}.{what}", m.name, since.as_second());
    sh.alert_admins(&key, &subject, text.to_string(), which == Alert::Down);
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Imap(#[from] ImapError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Lookup(#[from] LookupError),
    #[error("secret: {0}")]
    Secret(#[from] SecretError),
    #[error("OAuth 2.0: {0}")]
    OAuth(#[from] GrantError),
}

/// Connects to mailbox `index`; with a grant, with its token, and when the
/// server refuses that token, once more with a new one.
async fn connect(sh: &Shared, index: usize) -> Result<Connection, SessionError> {
    let m = &sh.settings.mailboxes[index];
    let mut settings = imap_settings(m)?;
    let Some(source) = sh.grants.mailbox(index) else {
        return Ok(Connection::connect(&settings).await?);
    };
    let token = source.token(sh.now()).await?;
    settings.auth = Auth::XOAuth2(token.secret().to_string());
    match Connection::connect(&settings).await {
        Err(ImapError::Auth { message, .. }) => {
            tracing::info!(mailbox = %m.name, server = %message, "the server refused the access token: one more try with a new one");
            source.invalidate(&token).await;
            let token = source.token(sh.now()).await?;
            settings.auth = Auth::XOAuth2(token.secret().to_string());
            Ok(Connection::connect(&settings).await?)
        }
        r => Ok(r?),
    }
}

/// One connection's life: returns Ok on shutdown, Err on any failure.
async fn session(
    sh: &Shared,
    index: usize,
    shutdown: &mut watch::Receiver<bool>,
    ready: &mut Option<tokio::sync::mpsc::Sender<String>>,
    health: &mut Health,
    failures: &mut u32,
) -> Result<(), SessionError> {
    let m = &sh.settings.mailboxes[index];
    let mut conn = connect(sh, index).await?;
    for folder in std::iter::once(&m.quarantine).chain(m.move_to.iter()) {
        conn.ensure_folder(folder).await?;
    }
    let sel = conn.select(&m.folder).await?;
    tracing::info!(mailbox = %m.name, folder = %m.folder, uid_validity = sel.uid_validity, exists = sel.exists, idle = conn.can_idle(), "connected");
    sh.record(index, |live, t| live.connected(sel.uid_validity, t));
    if let Some(r) = ready.take() {
        let _ = r.send(m.name.clone()).await;
    }
    if health.alerted {
        let since = health.down_since.unwrap_or_else(|| sh.now());
        alert(
            sh,
            m,
            since,
            &format!("mailtriage reads the {} mailbox again.\n", m.name),
            Alert::Up,
        );
    }
    *health = Health::default();
    *failures = 0;

    // Server actions a crash left pending (idempotent: marking twice or
    // moving what is gone is harmless).
    if let Some(p) = sh.store.pending(&m.name)? {
        if p.uid_validity == sel.uid_validity {
            apply_server_actions(&mut conn, m, &p.actions).await?;
        }
        sh.store.clear_pending(&m.name)?;
    }

    let mut cursor = match sh.store.cursor(&m.name)? {
        Some(c) if c.uid_validity == sel.uid_validity => c,
        Some(c) => {
            // The messages there now are what the rescan rule concerns.
            let below_uid = match sel.uid_next {
                Some(n) => n,
                None => conn.uids_after(0).await?.last().map_or(1, |u| u + 1),
            };
            let rescan = Rescan {
                uid_validity: sel.uid_validity,
                below_uid,
            };
            sh.store.set_rescan(&m.name, &rescan)?;
            tracing::warn!(mailbox = %m.name, old = c.uid_validity, new = sel.uid_validity, below_uid, "UIDVALIDITY changed: rescanning; messages already processed are recognised and skipped, and those received before the seen horizon are taken as processed");
            let c = Cursor {
                uid_validity: sel.uid_validity,
                last_uid: 0,
            };
            sh.store.set_cursor(&m.name, c)?;
            c
        }
        None => Cursor {
            uid_validity: sel.uid_validity,
            last_uid: 0,
        },
    };

    loop {
        // Forget what earlier commands announced: the search below sees it.
        conn.drain_unsolicited();
        let found = drain(sh, index, &mut conn, &mut cursor, shutdown).await?;
        if *shutdown.borrow() {
            conn.logout().await;
            return Ok(());
        }
        // Mail that arrives while a batch is processed is announced with
        // the answer to one of its commands, not again in IDLE: look again
        // until a search finds nothing and no EXISTS came with it.
        if found > 0 || conn.saw_new_mail() {
            continue;
        }
        if conn.can_idle() {
            sh.record(index, |live, t| live.set(Link::Idle, t));
            let outcome = {
                let stop = stopped(shutdown);
                conn.idle(m.idle_timeout.0, stop).await?
            };
            if outcome == Idled::Stopped {
                conn.logout().await;
                return Ok(());
            }
        } else {
            sh.record(index, |live, t| live.set(Link::Polling, t));
            tokio::select! {
                _ = tokio::time::sleep(m.poll_interval.0) => {}
                _ = stopped(shutdown) => {
                    conn.logout().await;
                    return Ok(());
                }
            }
            conn.noop().await?;
        }
    }
}

async fn apply_server_actions(
    conn: &mut Connection,
    m: &MailboxSection,
    actions: &[(u32, ServerAction)],
) -> Result<(), ImapError> {
    let processed: Vec<u32> = actions
        .iter()
        .filter(|(_, a)| *a == ServerAction::Processed)
        .map(|(u, _)| *u)
        .collect();
    let quarantine: Vec<u32> = actions
        .iter()
        .filter(|(_, a)| *a == ServerAction::Quarantine)
        .map(|(u, _)| *u)
        .collect();
    if m.mark_seen {
        conn.mark_seen(&processed).await?;
    }
    if let Some(folder) = &m.move_to {
        conn.move_to(&processed, folder).await?;
    }
    conn.move_to(&quarantine, &m.quarantine).await?;
    Ok(())
}

/// Processes every message above the cursor, a batch at a time; says how
/// many there were.
async fn drain(
    sh: &Shared,
    index: usize,
    conn: &mut Connection,
    cursor: &mut Cursor,
    shutdown: &watch::Receiver<bool>,
) -> Result<usize, SessionError> {
    let m = &sh.settings.mailboxes[index];
    let uids = conn.uids_after(cursor.last_uid).await?;
    let rescan = sh
        .store
        .rescan(&m.name)?
        .filter(|r| r.uid_validity == cursor.uid_validity);
    if !uids.is_empty() {
        // Working, no longer idle: an IDLE re-issued with nothing new
        // leaves the mailbox idle since it first was.
        sh.record(index, |live, t| live.set(Link::Connected, t));
    }
    for chunk in uids.chunks(m.batch_size) {
        if *shutdown.borrow() {
            break;
        }
        // Read before the listing: the retention pass only moves it later.
        let horizon = match rescan {
            Some(_) => sh.store.seen_horizon()?,
            None => None,
        };
        let started = std::time::Instant::now();
        let listed = conn.list(chunk).await?;
        let mut small = Vec::with_capacity(chunk.len());
        let mut old = 0;
        for l in &listed {
            let (uid, size) = (l.uid, l.size);
            if crate::rescan::taken_as_processed(
                rescan.as_ref(),
                horizon,
                cursor.uid_validity,
                uid,
                l.received,
            ) {
                old += 1;
            } else if u64::from(size) > m.max_message_size.0 {
                tracing::warn!(mailbox = %m.name, uid, size, limit = m.max_message_size.0, "message over the size limit: not downloaded, left for a human");
            } else {
                small.push(uid);
            }
        }
        if old > 0 {
            tracing::info!(mailbox = %m.name, count = old, horizon = horizon.map(tracing::field::display), "rescan after UIDVALIDITY changed: messages received before the seen horizon taken as processed before, not downloaded");
        }
        let bodies = conn.fetch(&small).await?;
        sh.metrics.fetched(&m.name, bodies.len());
        let t = sh.now();
        let year = t.to_zoned(jiff::tz::TimeZone::UTC).year();
        let arrivals: Vec<Arrival<'_>> = bodies
            .iter()
            .map(|(uid, raw)| Arrival { uid: *uid, raw })
            .collect();
        let last = chunk.iter().copied().max().unwrap_or(cursor.last_uid);
        // Decided and committed under the case lock, so that two mailboxes
        // (or a mailbox and the command line) updating one case do not
        // overwrite each other; the batch's new cases get their ids in one
        // flush, without gaps.
        let guard = sh.lock_cases();
        let mut reserve = |n: usize| -> Result<Vec<String>, LookupError> {
            Ok(sh.store.reserve_case_ids(year, n)?)
        };
        let batch = intake::process(&sh.intake(), m, *cursor, &arrivals, last, t, &mut reserve)?;
        let server = batch.server.clone();
        let committed = sh.store.commit(&batch)?;
        drop(guard);
        *cursor = batch.cursor;
        sh.outbox_wake.notify_one();
        let at = sh.now();
        sh.metrics.committed(&batch, &committed);
        for l in listed
            .iter()
            .filter(|l| bodies.iter().any(|(u, _)| *u == l.uid))
        {
            if let Some(arrived) = l.received {
                let waited = crate::clock::seconds_between(arrived, at);
                sh.metrics.ingest_seconds(&m.name, waited as f64);
            }
        }
        apply_server_actions(conn, m, &server).await?;
        sh.store.clear_pending(&m.name)?;
        sh.metrics
            .batch_seconds(&m.name, started.elapsed().as_secs_f64());
    }
    if let Some(r) = rescan
        && cursor.last_uid.saturating_add(1) >= r.below_uid
    {
        tracing::info!(mailbox = %m.name, uid_validity = r.uid_validity, "rescan after UIDVALIDITY changed: done");
        sh.store.clear_rescan(&m.name)?;
    }
    Ok(uids.len())
}
