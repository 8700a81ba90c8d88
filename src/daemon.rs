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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};

use crate::backoff::Backoff;
use crate::config::{Config, ConfigError, MailboxSection, Settings};
use crate::imap::{Auth, Connection, Idled, ImapError, ImapSettings};
use crate::route::ActionType;
use crate::send::{self, Identity, Smtp, SmtpSettings};
use crate::store::{
    Batch, BatchItem, BatchOutcome, CaseRecord, Cursor, MessageKey, NewOutgoing, Seen,
    ServerAction, Store, StoreError,
};

/// The daemon's clock: the system's, or, in tests, one set by hand
/// ("time is injected, not read from the wall clock"). Setting it wakes
/// the tasks that act on time (overdue cases, digests, the outbox).
#[derive(Debug, Default)]
pub struct Clock {
    /// Unix seconds; 0: the system clock.
    fixed: std::sync::atomic::AtomicI64,
    changed: Notify,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Arc<Clock> {
        Arc::new(Clock::default())
    }

    /// A clock that says `at` (unix seconds) until set again.
    pub fn fixed(at: i64) -> Arc<Clock> {
        let c = Clock::default();
        c.set(at);
        Arc::new(c)
    }

    pub fn set(&self, at: i64) {
        self.fixed
            .store(at.max(1), std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        match self.fixed.load(std::sync::atomic::Ordering::SeqCst) {
            0 => jiff::Timestamp::now().as_second(),
            t => t,
        }
    }
}

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
    fn now(&self) -> i64 {
        self.clock.now()
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
    let identity = identity_of(&settings).map_err(|message| ConfigError {
        file: toml.clone(),
        at: None,
        message,
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
                    digest_command(
                        &sh.config,
                        &sh.settings,
                        &sh.store,
                        name,
                        send_now,
                        sh.now(),
                    )
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

/// Where replies about a case of mailbox `name` go (see
/// [`MailboxSection::reply_address`]).
fn reply_address<'a>(sh: &'a Shared, name: &str) -> Option<&'a str> {
    sh.settings
        .mailboxes
        .iter()
        .find(|m| m.name == name)
        .and_then(MailboxSection::reply_address)
}

/// Outage bookkeeping for health alerts.
#[derive(Default)]
struct Health {
    down_since: Option<i64>,
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
                    && (is_auth || t - since >= sh.settings.daemon.alert_after.0.as_secs() as i64)
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
                            jiff::Timestamp::from_second(since)
                                .map(|at| crate::text::local_time(
                                    at,
                                    &sh.config.router.readers.zone,
                                    at
                                ))
                                .unwrap_or_default()
                        ),
                        "down",
                    );
                }
                let delay = reconnect_delay(failures, index as u64 ^ t as u64);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped(&mut shutdown) => return,
                }
            }
        }
    }
}

fn alert(sh: &Shared, m: &MailboxSection, since: i64, text: &str, what: &str) {
    if sh.settings.daemon.admin.is_empty() {
        return;
    }
    let subject = match what {
        "down" => format!("mailtriage: the {} mailbox is unreachable", m.name),
        _ => format!("mailtriage: the {} mailbox works again", m.name),
    };
    let key = format!("{}.{}.{}", m.name, since, what);
    let rendered = crate::route::Rendered {
        subject: subject.clone(),
        body: text.to_string(),
        high_importance: what == "down",
    };
    match send::compose_notice(
        &sh.identity,
        "health",
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
        let year = jiff::Timestamp::from_second(t)
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .to_zoned(jiff::tz::TimeZone::UTC)
            .year();
        let mut items = Vec::with_capacity(bodies.len());
        let mut server = Vec::new();
        let mut replies: HashMap<String, usize> = HashMap::new();
        // Triage every message first (no store writes); then, holding the
        // case lock, decide which open a case and which update one, so that
        // the batch's new cases get their ids in one flush, without gaps.
        let steps: Vec<Step> = bodies
            .iter()
            .map(|(uid, raw)| process(sh, m, *uid, raw))
            .collect::<Result<_, _>>()?;
        let guard = sh.lock_cases();
        let decisions = plan(sh, &steps, t)?;
        let new_cases = decisions
            .iter()
            .filter(|d| matches!(d, Some(Decision::New { .. })))
            .count();
        let mut ids = sh.store.reserve_case_ids(year, new_cases)?.into_iter();
        let mut opened: Vec<String> = Vec::with_capacity(new_cases);
        let mut working: HashMap<String, CaseRecord> = HashMap::new();
        let mut vendors_reported = Vec::new();
        for ((step, decision), (uid, raw)) in steps.into_iter().zip(decisions).zip(&bodies) {
            let (item, action) = match (step, decision) {
                (Step::Done(item, action), _) => (item, action),
                (Step::Triaged(tri), Some(Decision::New { follows })) => {
                    // Reserved above, one per new case; never run out, but
                    // if they did, skipping would lose the message.
                    let case_id = match ids.next() {
                        Some(id) => id,
                        None => sh.store.reserve_case_id(year)?,
                    };
                    opened.push(case_id.clone());
                    open_case(
                        sh,
                        m,
                        *tri,
                        Opening {
                            case_id,
                            follows,
                            uid_validity: cursor.uid_validity,
                        },
                        raw,
                        t,
                        &mut replies,
                        &mut working,
                        &mut vendors_reported,
                    )?
                }
                (Step::Triaged(tri), Some(Decision::Update { target, joined })) => {
                    let case_id = match target {
                        Target::Stored(id) => id,
                        Target::New(k) => match opened.get(k) {
                            Some(id) => id.clone(),
                            None => {
                                tracing::error!(
                                    uid,
                                    "update of a case not opened: left for a human"
                                );
                                continue;
                            }
                        },
                    };
                    update_case(
                        sh,
                        m,
                        *tri,
                        &case_id,
                        joined,
                        raw,
                        t,
                        &mut replies,
                        &mut working,
                    )?
                }
                (Step::Triaged(tri), None) => {
                    let _span = tracing::info_span!("message", mailbox = %m.name, uid, message_id = tri.email.message_id.as_deref().unwrap_or("-")).entered();
                    tracing::info!(
                        kind = tri.case.kind.name(),
                        automatic = tri.email.automatic().unwrap_or("no"),
                        "not an escalation nor part of a case: left untouched"
                    );
                    (
                        Some(BatchItem {
                            key: tri.key,
                            uid: *uid,
                            outcome: BatchOutcome::Ignored {
                                reason: tri.case.kind.name().to_string(),
                            },
                        }),
                        None,
                    )
                }
            };
            if let Some(item) = item {
                items.push(item);
            }
            if let Some(a) = action {
                server.push((*uid, a));
            }
        }
        let last = chunk.iter().copied().max().unwrap_or(cursor.last_uid);
        let batch = Batch {
            mailbox: m.name.clone(),
            cursor: Cursor {
                uid_validity: cursor.uid_validity,
                last_uid: last.max(cursor.last_uid),
            },
            items,
            server: server.clone(),
            now: t,
            vendors_reported,
        };
        sh.store.commit(&batch)?;
        drop(guard);
        *cursor = batch.cursor;
        sh.outbox_wake.notify_one();
        apply_server_actions(conn, m, &server).await?;
        sh.store.clear_pending(&m.name)?;
    }
    Ok(uids.len())
}

/// What [`process`] decided for a message.
enum Step {
    /// Settled: what to store (if anything) and what to do on the server.
    Done(Option<BatchItem>, Option<ServerAction>),
    /// From an agent, triaged: [`plan`] decides whether it opens a case,
    /// updates one, or is left alone.
    Triaged(Box<Triaged>),
}

/// What becomes of a triaged message.
enum Decision {
    /// It opens a case (following an earlier, long resolved one of the
    /// same order).
    New { follows: Option<String> },
    /// It updates a case: a reply in the thread, or (`joined`) a second
    /// escalation of the same order.
    Update { target: Target, joined: bool },
}

/// A case an update goes to.
#[derive(Clone)]
enum Target {
    Stored(String),
    /// The `k`th case this batch opens.
    New(usize),
}

/// A triaged message from an agent.
struct Triaged {
    key: MessageKey,
    uid: u32,
    email: crate::message::Email,
    case: crate::case::Case,
}

/// Triages one message: whether it was seen before, is unreadable, comes
/// from a stranger, is not an escalation, or opens a case.
fn process(sh: &Shared, m: &MailboxSection, uid: u32, raw: &[u8]) -> Result<Step, StoreError> {
    let parsed = crate::message::parse(raw);
    let message_id = parsed.as_ref().ok().and_then(|e| e.message_id.clone());
    let key = MessageKey::new(message_id.as_deref(), raw);
    let span = tracing::info_span!("message", mailbox = %m.name, uid, message_id = message_id.as_deref().unwrap_or("-"));
    let _enter = span.enter();

    if let Some(seen) = sh.store.seen(&key)? {
        tracing::info!(seen = %seen, "seen before: not processed again");
        let action = match seen {
            Seen::Case { .. } | Seen::Update { .. } => Some(ServerAction::Processed),
            Seen::Quarantined { .. } => Some(ServerAction::Quarantine),
            Seen::Ignored { .. } => None,
        };
        return Ok(Step::Done(None, action));
    }
    let item = |outcome| BatchItem {
        key: key.clone(),
        uid,
        outcome,
    };

    let email = match parsed {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable message: quarantined");
            return Ok(Step::Done(
                Some(item(BatchOutcome::Quarantined {
                    error: e.to_string(),
                })),
                Some(ServerAction::Quarantine),
            ));
        }
    };
    let from = email.from.clone().unwrap_or_default();
    let allowed = sh
        .settings
        .daemon
        .allow_senders
        .iter()
        .any(|p| crate::route::sender_matches(p, &from));
    if !allowed {
        tracing::info!(from = %from, "sender not on the allow-list: left untouched");
        return Ok(Step::Done(
            Some(item(BatchOutcome::Ignored {
                reason: format!("sender {from:?} not allowed"),
            })),
            None,
        ));
    }
    // Whether it opens a case, updates one or is left alone is decided
    // with the other messages of the batch, in `plan`.
    let case = sh.config.triage.case(&email);
    Ok(Step::Triaged(Box::new(Triaged {
        key,
        uid,
        email,
        case,
    })))
}

/// Decides, for each triaged message of a batch in order, whether it opens
/// a case or updates one. Called with the case lock held.
fn plan(sh: &Shared, steps: &[Step], t: i64) -> Result<Vec<Option<Decision>>, StoreError> {
    let mut threads: HashMap<String, Target> = HashMap::new();
    let mut orders: HashMap<String, Target> = HashMap::new();
    let mut opened = 0;
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let Step::Triaged(tri) = step else {
            out.push(None);
            continue;
        };
        let decision = decide(sh, tri, t, &threads, &orders, opened)?;
        let target = match &decision {
            Some(Decision::New { .. }) => {
                opened += 1;
                Some(Target::New(opened - 1))
            }
            Some(Decision::Update { target, .. }) => Some(target.clone()),
            None => None,
        };
        if let Some(target) = target {
            if let Some(mid) = &tri.case.message_id {
                threads.insert(crate::store::thread_key(mid), target.clone());
            }
            if let (Some(order), Some(Decision::New { .. })) =
                (&tri.case.fields.order_id, &decision)
            {
                orders.insert(order.trim().to_ascii_lowercase(), target);
            }
        }
        out.push(decision);
    }
    Ok(out)
}

fn decide(
    sh: &Shared,
    tri: &Triaged,
    t: i64,
    threads: &HashMap<String, Target>,
    orders: &HashMap<String, Target>,
    opened: usize,
) -> Result<Option<Decision>, StoreError> {
    // Automatic mail (an out-of-office answer to an acknowledgement) is no
    // update.
    if tri.email.automatic().is_some() {
        return Ok(None);
    }
    let mut refs: Vec<String> = Vec::new();
    refs.extend(tri.email.in_reply_to.iter().cloned());
    refs.extend(tri.email.references.iter().rev().cloned());
    for r in &refs {
        if let Some(target) = threads.get(&crate::store::thread_key(r)) {
            return Ok(Some(Decision::Update {
                target: target.clone(),
                joined: false,
            }));
        }
    }
    if let Some(id) = sh.store.thread_case(&refs)? {
        return Ok(Some(Decision::Update {
            target: Target::Stored(id),
            joined: false,
        }));
    }
    if let Some(id) = tri
        .case
        .subject
        .as_deref()
        .and_then(crate::lifecycle::case_id_in_subject)
        && sh.store.case(&id)?.is_some()
    {
        return Ok(Some(Decision::Update {
            target: Target::Stored(id),
            joined: false,
        }));
    }
    if !tri.case.is_escalation {
        return Ok(None);
    }
    let Some(order) = tri.case.fields.order_id.as_deref() else {
        return Ok(Some(Decision::New { follows: None }));
    };
    let order = order.trim().to_ascii_lowercase();
    if let Some(target) = orders.get(&order) {
        let _ = opened;
        return Ok(Some(Decision::Update {
            target: target.clone(),
            joined: true,
        }));
    }
    if let Some(id) = sh.store.order_case(&order)?
        && let Some(rec) = sh.store.case(&id)?
    {
        let reopen_within = sh.config.lifecycle.reopen_within.as_secs() as i64;
        let long_resolved = rec.resolved_at.is_some_and(|at| t - at > reopen_within);
        if !long_resolved {
            return Ok(Some(Decision::Update {
                target: Target::Stored(id),
                joined: true,
            }));
        }
        return Ok(Some(Decision::New { follows: Some(id) }));
    }
    Ok(Some(Decision::New { follows: None }))
}

/// What a new case needs besides its message.
struct Opening {
    case_id: String,
    follows: Option<String>,
    uid_validity: u32,
}

/// Outgoing mail composed from routing actions.
#[derive(Default)]
struct Composed {
    outgoing: Vec<NewOutgoing>,
    replied_to: Option<String>,
    digests: Vec<String>,
    tags: Vec<String>,
    /// Every address a forward went to.
    forwarded: Vec<String>,
}

/// Who a case's mail is about and where replies to it go.
struct About<'a> {
    case_id: &'a str,
    /// The mailbox the message came in on (templates see its name).
    mailbox: &'a str,
    /// `Reply-To` of the mail that invites a reply: the case's mailbox.
    reply_to: Option<&'a str>,
    /// The case's first message, when the message answered is another.
    origin: Option<crate::letter::Origin<'a>>,
    /// When the case came in (unix seconds): its answer is due by its
    /// risk's allowance later.
    received_at: i64,
}

/// Renders and composes the mail of `actions` for a case. `n0` numbers
/// the messages (their Message-IDs must differ across the case's life);
/// `skip` are addresses that already had a forward of this case. An error
/// is a template or composition failure: the message goes to quarantine.
#[allow(clippy::too_many_arguments)]
fn compose(
    sh: &Shared,
    about: &About<'_>,
    actions: &[crate::route::Action],
    case: &crate::case::Case,
    email: &crate::message::Email,
    raw: &[u8],
    t: i64,
    n0: usize,
    skip: &[String],
    replies: &mut HashMap<String, usize>,
) -> Result<Composed, String> {
    let case_id = about.case_id;
    let from = email.from.clone().unwrap_or_default();
    let date = SystemTime::now();
    let mut c = Composed::default();
    let mut original: Option<send::Original> = None;
    // Who has the case once this message's forwards go (a reply names
    // them): the owners of the forwards not already sent.
    let fresh_forwards: Vec<crate::route::Action> = actions
        .iter()
        .filter(|a| {
            a.kind == ActionType::Forward
                && a.to
                    .iter()
                    .chain(&a.cc)
                    .any(|r| !skip.iter().any(|s| s.eq_ignore_ascii_case(r)))
        })
        .cloned()
        .collect();
    let owners = crate::letter::owners(&fresh_forwards);
    for (i, action) in actions.iter().enumerate() {
        let n = n0 + i;
        let mut action = action.clone();
        let mut attached = crate::letter::Attached::Nothing;
        if action.kind == ActionType::Forward {
            let fresh = |l: &[String]| -> Vec<String> {
                l.iter()
                    .filter(|a| !skip.iter().any(|s| s.eq_ignore_ascii_case(a)))
                    .cloned()
                    .collect()
            };
            action.to = fresh(&action.to);
            action.cc = fresh(&action.cc);
            if action.to.is_empty() && action.cc.is_empty() {
                continue;
            }
            let o = original.get_or_insert_with(|| send::Original::new(raw));
            attached = match o.part {
                send::OriginalPart::File(why) => crate::letter::Attached::File(why.reason()),
                _ => crate::letter::Attached::Message,
            };
        }
        let mut letter = crate::letter::Letter::new(case_id, Some(about.mailbox), case, email);
        letter.origin = about.origin;
        letter.attached = attached;
        letter.received_at = jiff::Timestamp::from_second(about.received_at).ok();
        letter.now = jiff::Timestamp::from_second(t).ok();
        letter.respond_within = sh.config.lifecycle.respond_within(case.risk);
        letter.owners = owners.clone();
        let rendered = sh
            .config
            .router
            .render(&action, &letter)
            .map_err(|e| format!("template of rule {}: {e}", action.rule))?;
        let composed = match (action.kind, rendered, original.as_ref()) {
            (ActionType::Reply, Some(r), _) => {
                if let Err(why) = send::reply_allowed(email, &sh.own) {
                    tracing::info!(why, "no automatic reply");
                    continue;
                }
                let sender = from.to_ascii_lowercase();
                let limit = sh.settings.daemon.replies_per_sender_per_hour as usize;
                let earlier = sh
                    .store
                    .replies_since(&sender, t - 3600)
                    .map_err(|e| e.to_string())?
                    + replies.get(&sender).copied().unwrap_or(0);
                if earlier >= limit {
                    tracing::warn!(sender = %sender, limit, "reply rate limit reached: no automatic reply");
                    continue;
                }
                *replies.entry(sender.clone()).or_default() += 1;
                c.replied_to = Some(sender);
                send::compose_reply(
                    &sh.identity,
                    case_id,
                    n,
                    &from,
                    about.reply_to,
                    &r,
                    email,
                    date,
                )
            }
            (ActionType::Forward, Some(r), Some(original)) => {
                if let send::OriginalPart::File(why) = original.part {
                    tracing::info!(
                        why = why.reason(),
                        "the original cannot be a message/rfc822 part: attached as a file"
                    );
                }
                let closed = action.hours.as_ref().and_then(|name| {
                    let hours = sh.config.router.hours.get(name)?;
                    let at = jiff::Timestamp::from_second(t).ok()?;
                    if hours.is_open(at) {
                        return None;
                    }
                    Some((name.clone(), hours.next_open(at)))
                });
                let forward = |n: usize, to: &[String], cc: &[String]| {
                    send::compose_forward(
                        &sh.identity,
                        case_id,
                        n,
                        to,
                        cc,
                        about.reply_to,
                        &r,
                        original,
                        date,
                    )
                };
                if let Some((name, opens)) = closed {
                    // Outside the hours: the after-hours targets (the
                    // supervisor on call) get it now, everyone else when
                    // the hours open, from the outbox, once.
                    let now_to: Vec<String> = action
                        .after_hours
                        .iter()
                        .filter(|a| !skip.iter().any(|s| s.eq_ignore_ascii_case(a)))
                        .cloned()
                        .collect();
                    let held = |l: &[String]| -> Vec<String> {
                        l.iter()
                            .filter(|a| !now_to.iter().any(|s| s.eq_ignore_ascii_case(a)))
                            .cloned()
                            .collect()
                    };
                    let (to, cc) = (held(&action.to), held(&action.cc));
                    if !now_to.is_empty() {
                        let out = forward(n + 500, &now_to, &[])
                            .map_err(|e| format!("composing for rule {}: {e}", action.rule))?;
                        c.forwarded.extend(now_to.iter().cloned());
                        c.outgoing.push(out);
                    }
                    if to.is_empty() && cc.is_empty() {
                        continue;
                    }
                    let opens = opens.map(|o| o.as_second());
                    tracing::info!(hours = %name, opens_at = opens.and_then(|o| jiff::Timestamp::from_second(o).ok()).map(tracing::field::display), "outside business hours: forward held until they open");
                    c.forwarded.extend(to.iter().cloned());
                    c.forwarded.extend(cc.iter().cloned());
                    forward(n, &to, &cc).map(|mut out| {
                        out.not_before = opens;
                        out
                    })
                } else {
                    c.forwarded.extend(action.to.iter().cloned());
                    c.forwarded.extend(action.cc.iter().cloned());
                    forward(n, &action.to, &action.cc)
                }
            }
            (ActionType::Digest, _, _) => {
                c.digests.extend(action.digest.clone());
                continue;
            }
            (ActionType::Tag, _, _) => {
                c.tags.extend(action.tags.iter().cloned());
                continue;
            }
            (_, _, _) => continue,
        };
        c.outgoing
            .push(composed.map_err(|e| format!("composing for rule {}: {e}", action.rule))?);
    }
    // The agent's reply first; the stable sort keeps the forwards in rule order.
    c.outgoing.sort_by_key(|o| o.kind != "reply");
    Ok(c)
}

fn quarantined(
    key: MessageKey,
    uid: u32,
    error: String,
) -> (Option<BatchItem>, Option<ServerAction>) {
    tracing::error!(error = %error, "quarantined");
    (
        Some(BatchItem {
            key,
            uid,
            outcome: BatchOutcome::Quarantined { error },
        }),
        Some(ServerAction::Quarantine),
    )
}

/// Opens a case: routes it, renders and composes its outgoing mail (the
/// agent's reply first, so the acknowledgement leaves before the forwards).
#[allow(clippy::too_many_arguments)]
fn open_case(
    sh: &Shared,
    m: &MailboxSection,
    tri: Triaged,
    opening: Opening,
    raw: &[u8],
    t: i64,
    replies: &mut HashMap<String, usize>,
    working: &mut HashMap<String, CaseRecord>,
    vendors_reported: &mut Vec<crate::vendor::VendorKey>,
) -> Result<(Option<BatchItem>, Option<ServerAction>), StoreError> {
    let Triaged {
        key,
        uid,
        email,
        case,
    } = tri;
    let Opening {
        case_id,
        follows,
        uid_validity,
    } = opening;
    let _span = tracing::info_span!("message", mailbox = %m.name, uid, message_id = email.message_id.as_deref().unwrap_or("-"), case = %case_id).entered();
    let actions = sh.config.router.route(&case, Some(&m.name));
    let about = About {
        case_id: &case_id,
        mailbox: &m.name,
        reply_to: m.reply_address(),
        origin: None,
        received_at: t,
    };
    let c = match compose(sh, &about, &actions, &case, &email, raw, t, 0, &[], replies) {
        Ok(c) => c,
        Err(e) => return Ok(quarantined(key, uid, e)),
    };
    let mut record = CaseRecord::new(
        case_id,
        &m.name,
        uid,
        uid_validity,
        t,
        case,
        email.from_name.clone(),
        email.references.clone(),
    );
    record.digests = c.digests;
    record.tags = c.tags;
    record.forwarded_to = c.forwarded;
    record.follows = follows;
    record.vendor = vendor_of(sh, &record, working)?;
    let mut outgoing = c.outgoing;
    if let Some(out) = repeat_vendor(sh, &record, t, working, vendors_reported)? {
        outgoing.push(out);
    }
    tracing::info!(
        kind = record.case.kind.name(),
        risk = record.case.risk,
        tier = record.case.tier,
        flags = record.case.flags.len(),
        outgoing = outgoing.len(),
        follows = record.follows.as_deref().unwrap_or("-"),
        "case opened"
    );
    working.insert(record.id.clone(), record.clone());
    Ok((
        Some(BatchItem {
            key,
            uid,
            outcome: BatchOutcome::Case {
                record: Box::new(record),
                outgoing,
                replied_to: c.replied_to,
            },
        }),
        Some(ServerAction::Processed),
    ))
}

/// The vendor of a new case: what its field says, a name alone resolved
/// through the aliases stored or taught earlier in this batch.
fn vendor_of(
    sh: &Shared,
    record: &CaseRecord,
    working: &HashMap<String, CaseRecord>,
) -> Result<Option<crate::vendor::CaseVendor>, StoreError> {
    let Some(v) = record
        .case
        .fields
        .vendor
        .as_deref()
        .and_then(|f| sh.config.vendors.parse(f))
    else {
        return Ok(None);
    };
    let alias = match (&v.id, &v.name) {
        (None, Some(name)) => match sh.store.vendor_alias(name)? {
            Some(id) => Some(id),
            None => batch_alias(name, working.values()).cloned(),
        },
        _ => None,
    };
    Ok(v.resolve(alias))
}

/// The id the batch's cases first give `name` with: the lowest case id,
/// which is the order they open in and the commit learns aliases in.
fn batch_alias<'a>(
    name: &crate::vendor::VendorKey,
    batch: impl IntoIterator<Item = &'a CaseRecord>,
) -> Option<&'a crate::vendor::VendorKey> {
    batch
        .into_iter()
        .filter_map(|r| r.vendor.as_ref().map(|v| (&r.id, v)))
        .filter(|(_, v)| v.key.is_id() && v.name.as_ref() == Some(name))
        .min_by(|a, b| a.0.cmp(b.0))
        .map(|(_, v)| &v.key)
}

/// The keys whose complaints are `key`'s in this batch: `key`, and for an
/// id the names this batch gives with it first (no alias stored, no earlier
/// case of the batch giving them with another id). The commit moves those
/// names' complaints to the id.
fn vendor_group(
    sh: &Shared,
    key: &crate::vendor::VendorKey,
    record: &CaseRecord,
    working: &HashMap<String, CaseRecord>,
) -> Result<Vec<crate::vendor::VendorKey>, StoreError> {
    let mut group = vec![key.clone()];
    if !key.is_id() {
        return Ok(group);
    }
    let batch: Vec<&CaseRecord> = working.values().chain([record]).collect();
    for r in &batch {
        if let Some(name) = r.vendor.as_ref().and_then(|v| v.name.as_ref())
            && !group.contains(name)
            && batch_alias(name, batch.iter().copied()) == Some(key)
            && sh.store.vendor_alias(name)?.is_none()
        {
            group.push(name.clone());
        }
    }
    Ok(group)
}

/// The vendor as the report names it: as the digest does (see
/// [`crate::vendor::VendorRules::better_spelling`]), over `cases`, oldest
/// first.
fn vendor_name(
    sh: &Shared,
    record: &CaseRecord,
    cases: &[String],
    working: &HashMap<String, CaseRecord>,
) -> Result<String, StoreError> {
    let mut name = String::new();
    for id in cases {
        let field = if *id == record.id {
            record.case.fields.vendor.clone()
        } else if let Some(r) = working.get(id) {
            r.case.fields.vendor.clone()
        } else {
            sh.store.case(id)?.and_then(|r| r.case.fields.vendor)
        };
        if let Some(f) = field
            && sh.config.vendors.better_spelling(&name, &f)
        {
            name = f;
        }
    }
    Ok(name)
}

/// The vendor manager's forward when this case brings its vendor to the
/// configured number of complaints, once per window. The vendor's
/// complaints are those of every key in its [`vendor_group`].
fn repeat_vendor(
    sh: &Shared,
    record: &CaseRecord,
    t: i64,
    working: &HashMap<String, CaseRecord>,
    vendors_reported: &mut Vec<crate::vendor::VendorKey>,
) -> Result<Option<NewOutgoing>, StoreError> {
    let (Some(rv), Some(vendor)) = (&sh.config.lifecycle.repeat_vendor, record.vendor_key()) else {
        return Ok(None);
    };
    let since = t - rv.within.as_secs() as i64;
    let group = vendor_group(sh, vendor, record, working)?;
    for k in &group {
        if vendors_reported.contains(k)
            || sh
                .store
                .vendor_reported_at(k)?
                .is_some_and(|at| at >= since)
        {
            return Ok(None);
        }
    }
    let mut cases: Vec<String> = Vec::new();
    for k in &group {
        for id in sh.store.vendor_cases(k, since)? {
            if !cases.contains(&id) {
                cases.push(id);
            }
        }
    }
    for (id, r) in working {
        if r.received_at >= since
            && r.vendor_key().is_some_and(|k| group.contains(k))
            && !cases.contains(id)
        {
            cases.push(id.clone());
        }
    }
    if !cases.contains(&record.id) {
        cases.push(record.id.clone());
    }
    cases.sort();
    if cases.len() < rv.complaints {
        return Ok(None);
    }
    let name = vendor_name(sh, record, &cases, working)?;
    let mut listed: Vec<CaseRecord> = Vec::with_capacity(cases.len());
    for id in &cases {
        let r = if *id == record.id {
            Some(record.clone())
        } else if let Some(r) = working.get(id) {
            Some(r.clone())
        } else {
            sh.store.case(id)?
        };
        listed.extend(r);
    }
    let ctx = crate::lifecycle::vendor_report_context(
        &name,
        &listed.iter().collect::<Vec<_>>(),
        rv.within.as_secs() / 86_400,
        &record.id,
        &sh.config.router.readers.zone,
        t,
    );
    let rendered = match sh.config.router.templates.render(&rv.template, &ctx) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "repeat-vendor template failed: no report");
            return Ok(None);
        }
    };
    match send::compose_notice(
        &sh.identity,
        "vendor",
        &record.id,
        Some(&record.id),
        &rv.to,
        None,
        &rendered,
        SystemTime::now(),
    ) {
        Ok(out) => {
            tracing::warn!(vendor = %vendor, complaints = cases.len(), "repeat vendor reported");
            vendors_reported.push(vendor.clone());
            Ok(Some(out))
        }
        Err(e) => {
            tracing::error!(error = %e, "could not compose the repeat-vendor report");
            Ok(None)
        }
    }
}

/// Applies an update to its case: status, tags, notes, new flags; routing
/// runs again when risk, tier or flags went up, and forwards go only to
/// whoever has not had this case. A second escalation of the same order is
/// told which case it joined.
#[allow(clippy::too_many_arguments)]
fn update_case(
    sh: &Shared,
    m: &MailboxSection,
    tri: Triaged,
    case_id: &str,
    joined: bool,
    raw: &[u8],
    t: i64,
    replies: &mut HashMap<String, usize>,
    working: &mut HashMap<String, CaseRecord>,
) -> Result<(Option<BatchItem>, Option<ServerAction>), StoreError> {
    let Triaged {
        key,
        uid,
        email,
        case,
    } = tri;
    let _span = tracing::info_span!("message", mailbox = %m.name, uid, message_id = email.message_id.as_deref().unwrap_or("-"), case = %case_id).entered();
    let mut record = match working.remove(case_id) {
        Some(r) => r,
        None => match sh.store.case(case_id)? {
            Some(r) => r,
            None => {
                return Ok(quarantined(
                    key,
                    uid,
                    format!("update of unknown case {case_id}"),
                ));
            }
        },
    };
    let by = email.from.clone().unwrap_or_default();
    let applied = crate::lifecycle::apply_update(&mut record, &case, &by, t);
    let n0 = record.history.len() * 100;
    let mut actions = Vec::new();
    if joined && let Some(template) = &sh.config.lifecycle.joined_reply {
        actions.push(crate::route::Action::reply(
            "lifecycle.joined_reply",
            &by,
            template,
        ));
    }
    if applied.raised || applied.reopened {
        actions.extend(
            sh.config
                .router
                .route(&record.case, Some(&record.mailbox))
                .into_iter()
                .filter(|a| a.kind == ActionType::Forward),
        );
    }
    let skip = record.forwarded_to.clone();
    let about = About {
        case_id,
        mailbox: &m.name,
        reply_to: reply_address(sh, &record.mailbox),
        origin: Some(crate::letter::Origin {
            from: record.case.from.as_deref(),
            from_name: record.from_name.as_deref(),
            subject: record.case.subject.as_deref(),
            date: record.case.date.as_deref(),
            message_id: record.case.message_id.as_deref(),
        }),
        received_at: record.received_at,
    };
    let c = match compose(
        sh,
        &about,
        &actions,
        &record.case,
        &email,
        raw,
        t,
        n0,
        &skip,
        replies,
    ) {
        Ok(c) => c,
        Err(e) => {
            working.insert(case_id.to_string(), record);
            return Ok(quarantined(key, uid, e));
        }
    };
    record.forwarded_to.extend(c.forwarded);
    tracing::info!(
        status = %record.status,
        risk = record.case.risk,
        tier = record.case.tier,
        changes = record.history.last().map_or(0, |h| h.changes.len()),
        outgoing = c.outgoing.len(),
        joined,
        "case updated"
    );
    working.insert(case_id.to_string(), record.clone());
    Ok((
        Some(BatchItem {
            key,
            uid,
            outcome: BatchOutcome::Update {
                record: Box::new(record),
                outgoing: c.outgoing,
                replied_to: c.replied_to,
            },
        }),
        Some(ServerAction::Processed),
    ))
}

/// What runs on the clock: digests and overdue re-escalations. Every minute, and at
/// once when a test sets the clock.
async fn clock_task(sh: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let changed = sh.clock.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        clock_pass(&sh, "digests queued", digest_pass).await;
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

/// Re-escalates, once, every open case older than its risk allows.
fn overdue_pass(sh: &Shared) -> Result<usize, StoreError> {
    let Some(od) = &sh.config.lifecycle.overdue else {
        return Ok(0);
    };
    let _guard = sh.lock_cases();
    let t = sh.now();
    let mut n = 0;
    for id in sh.store.open_case_ids()? {
        let Some(mut rec) = sh.store.case(&id)? else {
            continue;
        };
        let Some(allowed) = od.after.get(usize::from(rec.case.risk)).copied().flatten() else {
            continue;
        };
        let age = t - rec.received_at;
        if rec.overdue_at.is_some() || !rec.is_open() || age <= allowed.as_secs() as i64 {
            continue;
        }
        let _span = tracing::info_span!("case", case = %rec.id).entered();
        let ctx = crate::lifecycle::overdue_context(
            &rec,
            &crate::text::age(age),
            &crate::text::age(allowed.as_secs() as i64),
            &sh.config.router.readers,
        );
        let out = sh
            .config
            .router
            .templates
            .render(&od.template, &ctx)
            .map_err(|e| e.to_string())
            .and_then(|mut r| {
                r.high_importance = rec.case.risk >= 4;
                send::compose_notice(
                    &sh.identity,
                    "overdue",
                    &rec.id,
                    Some(&rec.id),
                    &od.to,
                    reply_address(sh, &rec.mailbox),
                    &r,
                    SystemTime::now(),
                )
                .map_err(|e| e.to_string())
            });
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "could not compose the overdue re-escalation");
                continue;
            }
        };
        rec.overdue_at = Some(t);
        crate::lifecycle::record(
            &mut rec,
            "daemon",
            t,
            None,
            vec![format!(
                "overdue after {}: re-escalated to {}",
                crate::text::age(age),
                od.to.join(", ")
            )],
        );
        sh.store.update_case(&rec, &[out], t)?;
        tracing::warn!(age = %crate::text::age(age), "case overdue: re-escalated");
        n += 1;
    }
    Ok(n)
}

/// Queues every scheduled digest whose period has come and was not sent.
/// A period the daemon was down for is sent once, when it is back: the
/// latest period only, covering everything since the last one sent.
fn digest_pass(sh: &Shared) -> Result<usize, String> {
    let t = sh.now();
    let Ok(now) = jiff::Timestamp::from_second(t) else {
        return Ok(0);
    };
    let mut n = 0;
    for (name, d) in &sh.config.router.digests {
        let Some(schedule) = &d.schedule else {
            continue;
        };
        let last = sh.store.digest_sent(name).map_err(|e| e.to_string())?;
        let last_ts = last.and_then(|l| jiff::Timestamp::from_second(l).ok());
        let Some(period) = crate::digest::due(schedule, last_ts, now) else {
            continue;
        };
        if last.is_none() {
            // A new installation (or a new digest) starts counting here
            // rather than mailing managers the moment it starts.
            sh.store
                .queue_digest(name, period.as_second(), &[], t)
                .map_err(|e| e.to_string())?;
            tracing::info!(digest = %name, next = schedule.next_after(now).map(tracing::field::display), "digest scheduled: the first goes at the next period");
            continue;
        }
        let _guard = sh.lock_cases();
        match queue_digest(
            &sh.config,
            &sh.store,
            &sh.identity,
            name,
            last,
            period.as_second(),
            t,
        ) {
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
/// mean for the digest is [`crate::digest::DigestData::from_cases`].
pub fn build_digest(
    config: &Config,
    store: &Store,
    name: &str,
    since: Option<i64>,
    now: i64,
) -> Result<(crate::digest::RenderedDigest, Vec<String>), String> {
    let d = config.router.digests.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.router.digests.keys().map(String::as_str).collect();
        format!("no digest {name:?}: expected one of {}", known.join(", "))
    })?;
    let mut open = Vec::new();
    for id in store.open_case_ids().map_err(|e| e.to_string())? {
        open.extend(store.case(&id).map_err(|e| e.to_string())?);
    }
    let data = crate::digest::DigestData::from_cases(config, name, open, since, now)?;
    let rendered = crate::digest::render_template(&config.digest_templates, &d.template, &data)?;
    Ok((rendered, d.to.clone()))
}

/// Builds digest `name` and queues it, recording `period` as sent, in one
/// transaction. Says what it did.
pub fn queue_digest(
    config: &Config,
    store: &Store,
    identity: &Identity,
    name: &str,
    since: Option<i64>,
    period: i64,
    now: i64,
) -> Result<String, String> {
    let (r, to) = build_digest(config, store, name, since, now)?;
    let out = send::compose_digest(
        identity,
        name,
        period,
        &to,
        &r.subject,
        &r.text,
        &r.html,
        SystemTime::now(),
    )
    .map_err(|e| e.to_string())?;
    store
        .queue_digest(name, period, &[out], now)
        .map_err(|e| e.to_string())?;
    Ok(format!("digest {name:?} queued for {}", to.join(", ")))
}

/// `mailtriage digest NAME --preview | --send-now`: the next digest's
/// subject and text, or that digest queued now (counting as the current
/// period).
pub fn digest_command(
    config: &Config,
    settings: &Settings,
    store: &Store,
    name: &str,
    send_now: bool,
    now: i64,
) -> Result<String, String> {
    let since = store.digest_sent(name).map_err(|e| e.to_string())?;
    if send_now {
        let identity = identity_of(settings).map_err(|e| format!("{e:#}"))?;
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

/// Who the daemon is when it sends, from `[smtp] from` and `[daemon] domain`.
fn identity_of(settings: &Settings) -> Result<Identity, String> {
    let from: lettre::message::Mailbox = settings.smtp.from.parse().map_err(|e| {
        format!(
            "[smtp] from: expected an address such as \"Escalations <mailtriage@example.com>\", found {:?} ({e})",
            settings.smtp.from
        )
    })?;
    Ok(Identity {
        from,
        domain: settings.daemon.domain.clone(),
    })
}

async fn outbox_task(sh: Arc<Shared>, smtp: Smtp, mut shutdown: watch::Receiver<bool>) {
    let backoff = Backoff {
        first: sh.settings.smtp.retry_first.0,
        max: sh.settings.smtp.retry_max.0,
        ..Backoff::default()
    };
    let mut pruned_at = 0;
    // SMTP failing for `alert_after`: said once at ERROR (an alert mail
    // would have to go through the same SMTP), and once when it recovers.
    let mut failing_since: Option<i64> = None;
    let mut reported = false;
    loop {
        if *shutdown.borrow() {
            smtp.close().await;
            return;
        }
        // Registered before the pass, so that setting the clock during it
        // is not missed (a held forward may have become due).
        let clock_set = sh.clock.changed.notified();
        tokio::pin!(clock_set);
        clock_set.as_mut().enable();
        // The reply counts behind the rate limit look back an hour; keep a
        // day of them, pruned hourly.
        if sh.now() - pruned_at >= 3600 {
            pruned_at = sh.now();
            if let Err(e) = sh.store.prune_replies(pruned_at - 86_400) {
                tracing::error!(error = %e, "pruning reply counts");
            }
        }
        match send::deliver_due(&sh.store, &smtp, &backoff, sh.now()).await {
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
                            down_for = %crate::text::age(t - failing_since.unwrap_or(t)),
                            "SMTP delivers again"
                        );
                    }
                    failing_since = None;
                    reported = false;
                } else if d.retrying > 0 {
                    let since = *failing_since.get_or_insert(t);
                    if !reported && t - since >= sh.settings.daemon.alert_after.0.as_secs() as i64 {
                        reported = true;
                        tracing::error!(
                            host = %sh.settings.smtp.host,
                            failing_for = %crate::text::age(t - since),
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
            Ok(Some(at)) => Duration::from_secs((at - sh.now()).clamp(0, 60) as u64),
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
