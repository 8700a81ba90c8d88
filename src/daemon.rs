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

use anyhow::{Context, bail};
use tokio::sync::{Notify, watch};

use crate::config::{Config, DaemonConfig, MailboxSection};
use crate::imap::{Auth, Connection, Idled, ImapError, ImapSettings};
use crate::route::ActionType;
use crate::send::{self, Backoff, Identity, Smtp, SmtpSettings};
use crate::store::{
    Batch, BatchItem, BatchOutcome, CaseRecord, Cursor, MessageKey, NewOutgoing, Seen,
    ServerAction, Store, StoreError,
};

/// Unix seconds now.
fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// What every task shares.
struct Shared {
    config: Config,
    daemon: DaemonConfig,
    store: Store,
    identity: Identity,
    /// Addresses the daemon sends from or reads: never answered.
    own: Vec<String>,
    outbox_wake: Notify,
}

/// Opens the store and runs every task until `shutdown` turns true.
pub async fn run(config_dir: &Path, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let config = Config::load(config_dir).map_err(anyhow::Error::from)?;
    let daemon = DaemonConfig::load(config_dir).map_err(anyhow::Error::from)?;
    let db_path = database_path(&daemon)?;
    let store = Store::open(&db_path, daemon.daemon.cache.0)
        .with_context(|| format!("opening the database at {}", db_path.display()))?;
    let from: lettre::message::Mailbox = daemon
        .smtp
        .from
        .parse()
        .with_context(|| format!("[smtp] from = {:?} is not an address", daemon.smtp.from))?;
    let mut own = vec![from.email.to_string()];
    own.extend(
        daemon
            .mailboxes
            .iter()
            .filter(|m| m.user.contains('@'))
            .map(|m| m.user.clone()),
    );
    own.extend(daemon.smtp.user.iter().filter(|u| u.contains('@')).cloned());
    let smtp = Smtp::new(&SmtpSettings {
        host: daemon.smtp.host.clone(),
        port: daemon.smtp.port,
        tls: daemon.smtp.tls,
        credentials: match (&daemon.smtp.user, &daemon.smtp.password) {
            (Some(u), Some(p)) => Some((
                u.clone(),
                p.read()
                    .map_err(|e| anyhow::anyhow!("[smtp] password: {e}"))?,
            )),
            _ => None,
        },
        timeout: daemon.smtp.timeout.0,
        ca_file: daemon.smtp.ca_file.clone(),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let identity = Identity {
        from,
        domain: daemon.daemon.domain.clone(),
    };
    let shared = Arc::new(Shared {
        config,
        daemon,
        store,
        identity,
        own,
        outbox_wake: Notify::new(),
    });
    tracing::info!(database = %db_path.display(), mailboxes = shared.daemon.mailboxes.len(), "mailtriage starting");

    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<String>(64);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..shared.daemon.mailboxes.len() {
        let (sh, sd, ready) = (shared.clone(), shutdown.clone(), ready_tx.clone());
        tasks.spawn(async move { mailbox_task(sh, i, sd, ready).await });
    }
    drop(ready_tx);
    {
        let (sh, sd) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move { outbox_task(sh, smtp, sd).await });
    }

    // READY once every mailbox has connected or failed once; WATCHDOG
    // pings from here while the tasks run.
    let mut reported = 0;
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            r = ready_rx.recv(), if reported < shared.daemon.mailboxes.len() => {
                if r.is_some() {
                    reported += 1;
                    if reported == shared.daemon.mailboxes.len() {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                        tracing::info!("every mailbox has reported; ready");
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
    shared.store.flush().context("flushing the database")?;
    tracing::info!("stopped");
    Ok(())
}

fn database_path(d: &DaemonConfig) -> anyhow::Result<PathBuf> {
    if let Some(p) = &d.daemon.database {
        return Ok(p.clone());
    }
    match std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated: the first is ours.
        Some(dirs) => {
            let first = dirs
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            Ok(Path::new(&first).join("db"))
        }
        None => bail!(
            "no database path: set [daemon] database in mailtriage.toml, or run under systemd with StateDirectory="
        ),
    }
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
        (Some(p), _) => Auth::Password(p.read()?),
        (None, Some(t)) => Auth::XOAuth2(t.read()?),
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
    down_since: Option<i64>,
    alerted: bool,
}

async fn mailbox_task(
    sh: Arc<Shared>,
    index: usize,
    mut shutdown: watch::Receiver<bool>,
    ready: tokio::sync::mpsc::Sender<String>,
) {
    let m = &sh.daemon.mailboxes[index];
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
        if let Some(r) = ready.take() {
            let _ = r.send(m.name.clone()).await;
        }
        match result {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                let t = now();
                let since = *health.down_since.get_or_insert(t);
                let is_auth = matches!(
                    e,
                    SessionError::Imap(ImapError::Auth { .. }) | SessionError::Secret(_)
                );
                tracing::error!(mailbox = %m.name, error = %e, failures, "mailbox session failed");
                if !health.alerted
                    && (is_auth || t - since >= sh.daemon.daemon.alert_after.0.as_secs() as i64)
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
                                .map(|t| t.to_string())
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
    if sh.daemon.daemon.admin.is_empty() {
        return;
    }
    let subject = match what {
        "down" => format!("mailtriage: the {} mailbox is unreachable", m.name),
        _ => format!("mailtriage: the {} mailbox works again", m.name),
    };
    let key = format!("{}.{}.{}", m.name, since, what);
    match send::compose_notice(
        &sh.identity,
        "health",
        &key,
        &sh.daemon.daemon.admin,
        &subject,
        text,
        SystemTime::now(),
    ) {
        Ok(msg) => match sh.store.enqueue(&[msg], now()) {
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
        let since = health.down_since.unwrap_or_else(now);
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
        drain(sh, m, &mut conn, &mut cursor, shutdown).await?;
        if *shutdown.borrow() {
            conn.logout().await;
            return Ok(());
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

/// Processes every message above the cursor, a batch at a time.
async fn drain(
    sh: &Shared,
    m: &MailboxSection,
    conn: &mut Connection,
    cursor: &mut Cursor,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), SessionError> {
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
        let t = now();
        let year = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .year();
        let mut items = Vec::with_capacity(bodies.len());
        let mut server = Vec::new();
        let mut replies: HashMap<String, usize> = HashMap::new();
        // Decide every message first, so that the batch's new cases get
        // their ids in one flush, without gaps.
        let steps: Vec<Step> = bodies
            .iter()
            .map(|(uid, raw)| process(sh, m, *uid, raw))
            .collect::<Result<_, _>>()?;
        let new_cases = steps.iter().filter(|s| matches!(s, Step::Case(_))).count();
        let mut ids = sh.store.reserve_case_ids(year, new_cases)?.into_iter();
        for (step, (uid, raw)) in steps.into_iter().zip(&bodies) {
            let (item, action) = match step {
                Step::Done(item, action) => (item, action),
                Step::Case(new) => {
                    // Reserved above, one per new case; never run out, but
                    // if they did, skipping would lose the message.
                    let case_id = match ids.next() {
                        Some(id) => id,
                        None => sh.store.reserve_case_id(year)?,
                    };
                    open_case(
                        sh,
                        m,
                        *new,
                        case_id,
                        cursor.uid_validity,
                        raw,
                        t,
                        &mut replies,
                    )?
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
        };
        sh.store.commit(&batch)?;
        *cursor = batch.cursor;
        sh.outbox_wake.notify_one();
        apply_server_actions(conn, m, &server).await?;
        sh.store.clear_pending(&m.name)?;
    }
    Ok(())
}

/// What [`process`] decided for a message.
enum Step {
    /// Settled: what to store (if anything) and what to do on the server.
    Done(Option<BatchItem>, Option<ServerAction>),
    /// A new case, to be opened once its id is reserved.
    Case(Box<NewCase>),
}

/// A message that opens a case.
struct NewCase {
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
        tracing::info!(?seen, "seen before: not processed again");
        let action = match seen {
            Seen::Case { .. } => Some(ServerAction::Processed),
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
        .daemon
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
    let case = sh.config.triage.case(&email);
    if !case.is_escalation {
        tracing::info!(
            kind = case.kind.name(),
            automatic = email.automatic().unwrap_or("no"),
            "not an escalation: left untouched"
        );
        return Ok(Step::Done(
            Some(item(BatchOutcome::Ignored {
                reason: case.kind.name().to_string(),
            })),
            None,
        ));
    }

    Ok(Step::Case(Box::new(NewCase {
        key,
        uid,
        email,
        case,
    })))
}

/// Opens a case: routes it, renders and composes its outgoing mail (the
/// agent's reply first, so the acknowledgement leaves before the forwards).
#[allow(clippy::too_many_arguments)]
fn open_case(
    sh: &Shared,
    m: &MailboxSection,
    new: NewCase,
    case_id: String,
    uid_validity: u32,
    raw: &[u8],
    t: i64,
    replies: &mut HashMap<String, usize>,
) -> Result<(Option<BatchItem>, Option<ServerAction>), StoreError> {
    let NewCase {
        key,
        uid,
        email,
        case,
    } = new;
    let span = tracing::info_span!("message", mailbox = %m.name, uid, message_id = email.message_id.as_deref().unwrap_or("-"));
    let _enter = span.enter();
    let item = |outcome| BatchItem {
        key: key.clone(),
        uid,
        outcome,
    };
    let from = email.from.clone().unwrap_or_default();
    let span = tracing::info_span!("case", case = %case_id);
    let _enter_case = span.enter();
    let actions = sh.config.router.route(&case, Some(&m.name));
    let mut outgoing: Vec<NewOutgoing> = Vec::new();
    let mut replied_to = None;
    let mut digests = Vec::new();
    let mut tags = Vec::new();
    let date = SystemTime::now();
    for (n, action) in actions.iter().enumerate() {
        let rendered = match sh
            .config
            .router
            .render(action, &case, &email, &case_id, Some(&m.name))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, rule = %action.rule, "template failed: quarantined");
                return Ok((
                    Some(item(BatchOutcome::Quarantined {
                        error: e.to_string(),
                    })),
                    Some(ServerAction::Quarantine),
                ));
            }
        };
        let composed = match (action.kind, rendered) {
            (ActionType::Reply, Some(r)) => {
                if let Err(why) = send::reply_allowed(&email, &sh.own) {
                    tracing::info!(why, "no automatic reply");
                    continue;
                }
                let sender = from.to_ascii_lowercase();
                let limit = sh.daemon.daemon.replies_per_sender_per_hour as usize;
                let earlier = sh.store.replies_since(&sender, t - 3600)?
                    + replies.get(&sender).copied().unwrap_or(0);
                if earlier >= limit {
                    tracing::warn!(sender = %sender, limit, "reply rate limit reached: no automatic reply");
                    continue;
                }
                *replies.entry(sender.clone()).or_default() += 1;
                replied_to = Some(sender);
                send::compose_reply(&sh.identity, &case_id, n, &from, &r, &email, date)
            }
            (ActionType::Forward, Some(r)) => send::compose_forward(
                &sh.identity,
                &case_id,
                n,
                &action.to,
                &action.cc,
                &r,
                raw,
                date,
            ),
            (ActionType::Digest, _) => {
                digests.extend(action.digest.clone());
                continue;
            }
            (ActionType::Tag, _) => {
                tags.extend(action.tags.iter().cloned());
                continue;
            }
            (_, None) => continue,
        };
        match composed {
            Ok(msg) => outgoing.push(msg),
            Err(e) => {
                tracing::error!(error = %e, rule = %action.rule, "could not compose: quarantined");
                return Ok((
                    Some(item(BatchOutcome::Quarantined {
                        error: e.to_string(),
                    })),
                    Some(ServerAction::Quarantine),
                ));
            }
        }
    }
    // The agent's reply first; the stable sort keeps the forwards in rule order.
    outgoing.sort_by_key(|o| o.kind != "reply");
    tracing::info!(
        kind = case.kind.name(),
        risk = case.risk,
        tier = case.tier,
        flags = case.flags.len(),
        outgoing = outgoing.len(),
        "case opened"
    );
    let record = CaseRecord {
        id: case_id,
        mailbox: m.name.clone(),
        uid,
        uid_validity,
        received_at: t,
        from_name: email.from_name.clone(),
        references: email.references.clone(),
        outbox: Vec::new(),
        digests,
        tags,
        case,
    };
    Ok((
        Some(item(BatchOutcome::Case {
            record: Box::new(record),
            outgoing,
            replied_to,
        })),
        Some(ServerAction::Processed),
    ))
}

async fn outbox_task(sh: Arc<Shared>, smtp: Smtp, mut shutdown: watch::Receiver<bool>) {
    let backoff = Backoff {
        first: sh.daemon.smtp.retry_first.0,
        max: sh.daemon.smtp.retry_max.0,
        ..Backoff::default()
    };
    let mut pruned_at = 0;
    loop {
        if *shutdown.borrow() {
            smtp.close().await;
            return;
        }
        // The reply counts behind the rate limit look back an hour; keep a
        // day of them, pruned hourly.
        if now() - pruned_at >= 3600 {
            pruned_at = now();
            if let Err(e) = sh.store.prune_replies(pruned_at - 86_400) {
                tracing::error!(error = %e, "pruning reply counts");
            }
        }
        match send::deliver_due(&sh.store, &smtp, &backoff, now()).await {
            Ok(d) if d.sent + d.retrying + d.undeliverable > 0 => {
                tracing::debug!(
                    sent = d.sent,
                    retrying = d.retrying,
                    undeliverable = d.undeliverable,
                    "outbox pass"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "outbox: store error"),
        }
        // Sleep until woken by new mail to send, the next retry, or a
        // minute at most.
        let next = match sh.store.next_due() {
            Ok(Some(at)) => Duration::from_secs((at - now()).clamp(0, 60) as u64),
            _ => Duration::from_secs(60),
        };
        tokio::select! {
            _ = sh.outbox_wake.notified() => {}
            _ = tokio::time::sleep(next) => {}
            _ = stopped(&mut shutdown) => {
                smtp.close().await;
                return;
            }
        }
    }
}
