//! The daemon: one task per mailbox, one for the outbox, shutdown on request.
//!
//! A mailbox task connects (with jittered exponential backoff, capped, after
//! any failure; a mailbox that is down never stops the others), replays the
//! server actions a crash may have left pending, reconciles UIDVALIDITY with
//! its stored cursor, and then drains new mail in batches: sizes first (a
//! message over the limit is logged and left for a human), bodies with
//! `BODY.PEEK[]`, each message triaged, routed and its outgoing mail
//! composed, the whole batch committed to the store in one transaction, and
//! only then the messages marked or moved on the server. Between batches it
//! waits in IDLE, or polls where the server has no IDLE.
//!
//! The outbox task delivers what is due and sleeps until woken by a new
//! batch or the next retry. Shutdown is a value passed in: when it turns
//! true, tasks finish the message in hand, the store is flushed, and `run`
//! returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

use crate::backoff::Backoff;
use crate::batch::{Cursor, ServerAction};
use crate::config::{Config, ConfigError, MailboxSection, Settings};
use crate::imap::{Auth, Connection, Idled, ImapError, ImapSettings};
use crate::intake::{self, Arrival, LookupError};
use crate::mail::{self, Identity};
use crate::outbox::OutgoingKind;
use crate::smtp::{self, Smtp, SmtpSettings};
use crate::store::{Store, StoreError};

pub use crate::clock::Clock;

/// What every task shares.
struct Shared {
    config: Config,
    settings: Settings,
    store: Store,
    identity: Identity,
    /// Addresses the daemon sends from or reads: never answered.
    own: Vec<String>,
    outbox_wake: Notify,
    /// Held while cases are read, changed and committed, so that two
    /// mailboxes (or a mailbox and the command line) updating one case do
    /// not overwrite each other.
    case_lock: Arc<std::sync::Mutex<()>>,
    clock: Arc<Clock>,
}

impl Shared {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Intake over this daemon's config and store.
    fn intake(&self) -> intake::Intake<'_> {
        intake::Intake {
            config: &self.config,
            settings: &self.settings,
            identity: &self.identity,
            own: &self.own,
            lookup: &self.store,
        }
    }

    fn lock_cases(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding it cannot leave a case half written (the
        // store is transactional), so a poisoned lock is still usable.
        self.case_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why the daemon could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is wrong: restarting will not help (exit 2).
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("opening the database at {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    /// A secret could not be read now (a command that failed may work
    /// on the next start).
    #[error("{0}")]
    Secret(String),
    #[error("control socket {path}: {source}")]
    Control {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("flushing the database: {0}")]
    Flush(#[source] StoreError),
}

/// Opens the store and runs every task until `shutdown` turns true.
pub async fn run(config_dir: &Path, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    run_with_clock(config_dir, shutdown, Clock::system()).await
}

/// [`run`] with a given clock (tests set the time by hand).
pub async fn run_with_clock(
    config_dir: &Path,
    mut shutdown: watch::Receiver<bool>,
    clock: Arc<Clock>,
) -> Result<(), RunError> {
    let config = Config::load(config_dir)?;
    let settings = Settings::load(config_dir)?;
    let toml = config_dir.join("mailtriage.toml");
    let db_path = database_path(&settings).ok_or_else(|| ConfigError {
        file: toml.clone(),
        at: None,
        message:
            "no database path: set [daemon] database, or run under systemd with StateDirectory="
                .into(),
    })?;
    let identity = Identity::from_config(&settings).map_err(|e| ConfigError {
        file: toml.clone(),
        at: None,
        message: e.to_string(),
    })?;
    let smtp_password = match (&settings.smtp.user, &settings.smtp.password) {
        (Some(u), Some(p)) => Some((
            u.clone(),
            p.read().map_err(|e| {
                let message = format!("[smtp] password: {e}");
                // A source that does not hold the secret is the config's
                // (or the unit's) mistake; a command may work next time.
                if matches!(p, crate::config::Secret::Command(_)) {
                    RunError::Secret(message)
                } else {
                    RunError::Config(ConfigError {
                        file: toml.clone(),
                        at: None,
                        message,
                    })
                }
            })?,
        )),
        _ => None,
    };
    let store =
        Store::open(&db_path, settings.daemon.cache.0).map_err(|source| RunError::Database {
            path: db_path.clone(),
            source,
        })?;
    let mut own = vec![identity.from.email.to_string()];
    own.extend(
        settings
            .mailboxes
            .iter()
            .filter(|m| m.user.contains('@'))
            .map(|m| m.user.clone()),
    );
    own.extend(
        settings
            .mailboxes
            .iter()
            .filter_map(|m| m.reply_address().map(str::to_string)),
    );
    for m in settings
        .mailboxes
        .iter()
        .filter(|m| m.reply_address().is_none())
    {
        tracing::warn!(mailbox = %m.name, "no reply_to and the user is not an address: replies to the daemon's mail about its cases go to [smtp] from, which mailtriage does not read");
    }
    own.extend(
        settings
            .smtp
            .user
            .iter()
            .filter(|u| u.contains('@'))
            .cloned(),
    );
    let smtp = Smtp::new(&SmtpSettings {
        host: settings.smtp.host.clone(),
        port: settings.smtp.port,
        tls: settings.smtp.tls,
        credentials: smtp_password,
        timeout: settings.smtp.timeout.0,
        ca_file: settings.smtp.ca_file.clone(),
    })
    .map_err(|e| ConfigError {
        file: toml.clone(),
        at: None,
        message: e.to_string(),
    })?;
    let shared = Arc::new(Shared {
        config,
        settings,
        store,
        identity,
        own,
        outbox_wake: Notify::new(),
        case_lock: Arc::new(std::sync::Mutex::new(())),
        clock,
    });
    tracing::info!(database = %db_path.display(), mailboxes = shared.settings.mailboxes.len(), "mailtriage starting");

    // `mailtriage cases` and `mailtriage digest` reach the store through
    // this socket while the daemon holds the database.
    let socket = crate::control::socket_path(&shared.settings)
        .unwrap_or_else(|| db_path.with_file_name("control.sock"));
    let control = Arc::new(crate::control::Control {
        store: shared.store.clone(),
        case_lock: shared.case_lock.clone(),
        now: {
            let c = shared.clock.clone();
            Arc::new(move || c.now())
        },
        digest: {
            let sh = shared.clone();
            Arc::new(move |name: &str, send_now: bool| {
                let r = {
                    let _guard = sh.lock_cases();
                    crate::digest::digest_command(
                        &sh.config,
                        &sh.settings,
                        &sh.store,
                        name,
                        send_now,
                        sh.now(),
                    )
                    .map_err(|e| e.to_string())
                };
                if send_now && r.is_ok() {
                    sh.outbox_wake.notify_one();
                }
                r
            })
        },
    });
    let listener = crate::control::bind(&socket).map_err(|source| RunError::Control {
        path: socket.clone(),
        source,
    })?;
    tracing::info!(socket = %socket.display(), "control socket ready");

    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<String>(64);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(listener.serve(control, shutdown.clone()));
    for i in 0..shared.settings.mailboxes.len() {
        let (sh, sd, ready) = (shared.clone(), shutdown.clone(), ready_tx.clone());
        tasks.spawn(async move { mailbox_task(sh, i, sd, ready).await });
    }
    drop(ready_tx);
    {
        let (sh, sd) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move { outbox_task(sh, smtp, sd).await });
    }
    {
        let (sh, sd) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move { clock_task(sh, sd).await });
    }

    // READY once every mailbox has connected or failed once; WATCHDOG
    // pings from here while the tasks run.
    let mut reported = 0;
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            r = ready_rx.recv(), if reported < shared.settings.mailboxes.len() => {
                if r.is_some() {
                    reported += 1;
                    if reported == shared.settings.mailboxes.len() {
                        // Logged first: whoever is told READY can read why.
                        tracing::info!("every mailbox has reported; ready");
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                    }
                }
            }
            _ = ping.tick(), if watchdog.is_some() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            done = tasks.join_next() => {
                match done {
                    Some(Err(e)) => tracing::error!(error = %e, "a task ended abnormally"),
                    Some(Ok(())) => {}
                    None => break,
                }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: finishing the message in hand");
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "a task ended abnormally");
        }
    }
    shared.store.flush().map_err(RunError::Flush)?;
    tracing::info!("stopped");
    Ok(())
}

fn database_path(d: &Settings) -> Option<PathBuf> {
    crate::control::database_path(d)
}

/// Resolves when `shutdown` is (or turns) true.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Jittered exponential backoff for reconnecting: 1 s doubling to 5 min.
fn reconnect_delay(failures: u32, salt: u64) -> Duration {
    let b = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(300),
        give_up_after: Duration::MAX,
    };
    Duration::from_secs(b.delay(failures.saturating_sub(1), salt).max(1) as u64)
}

fn imap_settings(m: &MailboxSection) -> Result<ImapSettings, String> {
    let auth = match (&m.password, &m.oauth2_token) {
        (Some(p), _) => Auth::Password(p.read().map_err(|e| e.to_string())?),
        (None, Some(t)) => Auth::XOAuth2(t.read().map_err(|e| e.to_string())?),
        (None, None) => return Err("no password or oauth2_token".into()),
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

async fn mailbox_task(
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
            m,
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
                if !health.alerted
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
                        "down",
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

fn alert(sh: &Shared, m: &MailboxSection, since: Timestamp, text: &str, what: &str) {
    if sh.settings.daemon.admin.is_empty() {
        return;
    }
    let subject = match what {
        "down" => format!("mailtriage: the {} mailbox is unreachable", m.name),
        _ => format!("mailtriage: the {} mailbox works again", m.name),
    };
    let key = format!("{}.{}.{}", m.name, since.as_second(), what);
    let rendered = crate::route::Rendered {
        subject: subject.clone(),
        body: text.to_string(),
        high_importance: what == "down",
    };
    match mail::compose_notice(
        &sh.identity,
        OutgoingKind::Health,
        &key,
        None,
        &sh.settings.daemon.admin,
        None,
        &rendered,
        SystemTime::now(),
    ) {
        Ok(msg) => match sh.store.enqueue(&[msg], sh.now()) {
            Ok(_) => {
                tracing::warn!(mailbox = %m.name, "health alert queued: {subject}");
                sh.outbox_wake.notify_one();
            }
            Err(e) => {
                tracing::error!(mailbox = %m.name, error = %e, "could not queue a health alert")
            }
        },
        Err(e) => {
            tracing::error!(mailbox = %m.name, error = %e, "could not compose a health alert")
        }
    }
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
    Secret(String),
}

/// One connection's life: returns Ok on shutdown, Err on any failure.
async fn session(
    sh: &Shared,
    m: &MailboxSection,
    shutdown: &mut watch::Receiver<bool>,
    ready: &mut Option<tokio::sync::mpsc::Sender<String>>,
    health: &mut Health,
    failures: &mut u32,
) -> Result<(), SessionError> {
    let settings = imap_settings(m).map_err(SessionError::Secret)?;
    let mut conn = Connection::connect(&settings).await?;
    for folder in std::iter::once(&m.quarantine).chain(m.move_to.iter()) {
        conn.ensure_folder(folder).await?;
    }
    let sel = conn.select(&m.folder).await?;
    tracing::info!(mailbox = %m.name, folder = %m.folder, uid_validity = sel.uid_validity, exists = sel.exists, idle = conn.can_idle(), "connected");
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
            "up",
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
            tracing::warn!(mailbox = %m.name, old = c.uid_validity, new = sel.uid_validity, "UIDVALIDITY changed: rescanning; messages already processed are recognised and skipped");
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
        let found = drain(sh, m, &mut conn, &mut cursor, shutdown).await?;
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
            let outcome = {
                let stop = stopped(shutdown);
                conn.idle(m.idle_timeout.0, stop).await?
            };
            if outcome == Idled::Stopped {
                conn.logout().await;
                return Ok(());
            }
        } else {
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
    m: &MailboxSection,
    conn: &mut Connection,
    cursor: &mut Cursor,
    shutdown: &watch::Receiver<bool>,
) -> Result<usize, SessionError> {
    let uids = conn.uids_after(cursor.last_uid).await?;
    for chunk in uids.chunks(m.batch_size) {
        if *shutdown.borrow() {
            break;
        }
        let sizes = conn.sizes(chunk).await?;
        let mut small = Vec::with_capacity(chunk.len());
        for (uid, size) in &sizes {
            if u64::from(*size) > m.max_message_size.0 {
                tracing::warn!(mailbox = %m.name, uid, size, limit = m.max_message_size.0, "message over the size limit: not downloaded, left for a human");
            } else {
                small.push(*uid);
            }
        }
        let bodies = conn.fetch(&small).await?;
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
        sh.store.commit(&batch)?;
        drop(guard);
        *cursor = batch.cursor;
        sh.outbox_wake.notify_one();
        apply_server_actions(conn, m, &server).await?;
        sh.store.clear_pending(&m.name)?;
    }
    Ok(uids.len())
}

/// What runs on the clock: digests and overdue re-escalations. Every minute, and at
/// once when a test sets the clock.
async fn clock_task(sh: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let changed = sh.clock.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        clock_pass(&sh, "digests queued", |sh| {
            crate::digest::queue_due(&sh.config, &sh.store, &sh.identity, sh.now(), || {
                sh.lock_cases()
            })
            .map_err(|e| e.to_string())
        })
        .await;
        clock_pass(&sh, "overdue cases re-escalated", |sh| {
            overdue_pass(sh).map_err(|e| e.to_string())
        })
        .await;
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Runs one of the clock's passes off the async threads (they read and
/// write the store) and wakes the outbox when it queued mail.
async fn clock_pass(
    sh: &Arc<Shared>,
    done: &'static str,
    pass: impl FnOnce(&Shared) -> Result<usize, String> + Send + 'static,
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

async fn outbox_task(sh: Arc<Shared>, smtp: Smtp, mut shutdown: watch::Receiver<bool>) {
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
        match smtp::deliver_due(&sh.store, &smtp, &backoff, sh.now()).await {
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
