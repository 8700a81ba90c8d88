//! The daemon: tasks and I/O only. One task per mailbox (`mailbox`), one
//! for the outbox (`outbox`), one for what runs on time (`clock`), one for
//! the daily retention pass (`retention`), one that alerts the admins
//! about OAuth 2.0 grants that cannot be used (`grants`), the control
//! socket, and the metrics endpoint when configured (`metrics`); what becomes of mail is
//! decided by [`crate::intake`].
//! This module starts them (the store opened, READY and WATCHDOG told to
//! systemd) and stops them: shutdown is a value passed in; when it turns
//! true, tasks finish the message in hand, the store is flushed, and `run`
//! returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

use crate::config::{Config, ConfigError, Settings};
use crate::health::{MailboxLive, Running};
use crate::intake;
use crate::mail::Identity;
use crate::smtp::{Smtp, SmtpSettings};
use crate::store::{Store, StoreError};

pub use crate::clock::Clock;

mod clock;
mod digest;
mod grants;
mod mailbox;
mod metrics;
mod outbox;
mod retention;

pub(crate) use digest::digest_command;
pub use digest::{JobError, build_digest, queue_due};

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
    /// Each mailbox's connection as its task last said, in the order of
    /// `settings.mailboxes`: what `mailtriage status` reports live.
    live: Vec<std::sync::Mutex<MailboxLive>>,
    started_at: Timestamp,
    database: PathBuf,
    /// This daemon's own metrics, served when `[daemon] metrics` is set.
    metrics: crate::metrics::Metrics,
    /// The OAuth 2.0 grants of the mailboxes and the SMTP server, one
    /// token source each.
    grants: crate::oauth::Grants,
}

impl Shared {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Records a fact about mailbox `index`'s connection.
    fn record(&self, index: usize, fact: impl FnOnce(&mut MailboxLive, Timestamp)) {
        if let Some(m) = self.live.get(index) {
            // Plain data: a panic while it was held left nothing half done.
            let mut m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            fact(&mut m, self.now());
        }
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

    /// Queues a health alert to `[daemon] admin` (nothing when it names
    /// no one) and wakes the outbox. `key` names the alert's Message-ID, so
    /// that one event alerts once; `urgent` marks it high importance.
    fn alert_admins(&self, key: &str, subject: &str, body: String, urgent: bool) {
        if self.settings.daemon.admin.is_empty() {
            return;
        }
        let rendered = crate::route::Rendered {
            subject: subject.to_string(),
            body,
            high_importance: urgent,
        };
        match crate::mail::compose_notice(
            &self.identity,
            crate::outbox::OutgoingKind::Health,
            key,
            None,
            &self.settings.daemon.admin,
            None,
            &rendered,
            crate::clock::system_time(self.now()),
        ) {
            Ok(msg) => match self.store.enqueue(&[msg], self.now()) {
                Ok(_) => {
                    tracing::warn!("health alert queued: {subject}");
                    self.outbox_wake.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "could not queue a health alert"),
            },
            Err(e) => tracing::error!(error = %e, "could not compose a health alert"),
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

/// The daemon as the control socket sees it: its scope with each
/// mailbox's live record, and its outbox task to wake.
struct Host(Arc<Shared>);

impl crate::control::Host for Host {
    fn scope(&self) -> crate::control::Scope {
        let sh = &self.0;
        let mut scope =
            crate::control::Scope::from_config(&sh.config, &sh.settings, sh.database.clone());
        scope.running = Some(Running {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: sh.started_at,
        });
        scope.grants = sh.grants.health();
        for ((_, live), m) in scope.mailboxes.iter_mut().zip(&sh.live) {
            let m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *live = Some(m.clone());
        }
        scope
    }

    fn wake_outbox(&self) {
        self.0.outbox_wake.notify_one();
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
    /// `[daemon] metrics` names an address that cannot be listened on.
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
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
    config.check_mailboxes(config_dir, &settings)?;
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
    // A grant that cannot be used is told to the grants task, which
    // alerts the admins (the sources are made before what they would
    // need for that).
    let (grant_events, grant_rx) = tokio::sync::mpsc::unbounded_channel();
    let grants = crate::oauth::Grants::from_settings(
        &settings,
        Some(crate::control::state_directory(&db_path)),
        Some(Arc::new(move |e| {
            let _ = grant_events.send(e);
        })),
    );
    let smtp = Smtp::new(&SmtpSettings {
        host: settings.smtp.host.clone(),
        port: settings.smtp.port,
        tls: settings.smtp.tls,
        credentials: smtp_password,
        oauth2: match (grants.smtp(), &settings.smtp.user) {
            (Some(source), Some(user)) => Some(crate::smtp::SmtpOAuth {
                user: user.clone(),
                source,
                clock: clock.clone(),
            }),
            _ => None,
        },
        timeout: settings.smtp.timeout.0,
        ca_file: settings.smtp.ca_file.clone(),
    })
    .map_err(|e| ConfigError {
        file: toml.clone(),
        at: None,
        message: e.to_string(),
    })?;
    let started_at = clock.now();
    let live = settings
        .mailboxes
        .iter()
        .map(|_| std::sync::Mutex::new(MailboxLive::starting(started_at)))
        .collect();
    let shared = Arc::new(Shared {
        config,
        settings,
        store,
        identity,
        own,
        outbox_wake: Notify::new(),
        case_lock: Arc::new(std::sync::Mutex::new(())),
        clock,
        live,
        started_at,
        database: db_path.clone(),
        metrics: crate::metrics::Metrics::new(),
        grants,
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
                    digest::digest_command(
                        &sh.config,
                        &sh.settings,
                        &sh.store,
                        name,
                        send_now,
                        sh.now(),
                    )
                    .map_err(crate::control::DigestFailure::from)
                };
                if send_now && r.is_ok() {
                    sh.outbox_wake.notify_one();
                }
                r
            })
        },
        host: Some(Arc::new(Host(shared.clone()))),
    });
    let listener = crate::control::bind(&socket).map_err(|source| RunError::Control {
        path: socket.clone(),
        source,
    })?;
    tracing::info!(socket = %socket.display(), "control socket ready");
    let metrics = match shared.settings.daemon.metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Metrics { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| RunError::Metrics { addr, source })?;
            tracing::info!(addr = %bound, "metrics endpoint listening: http://{bound}/metrics");
            Some(listener)
        }
        None => None,
    };

    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<String>(64);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(listener.serve(control, shutdown.clone()));
    if let Some(listener) = metrics {
        tasks.spawn(metrics::serve(listener, shared.clone(), shutdown.clone()));
    }
    for i in 0..shared.settings.mailboxes.len() {
        let (sh, sd, ready) = (shared.clone(), shutdown.clone(), ready_tx.clone());
        tasks.spawn(async move { mailbox::mailbox_task(sh, i, sd, ready).await });
    }
    drop(ready_tx);
    {
        let (sh, sd) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move { outbox::outbox_task(sh, smtp, sd).await });
    }
    {
        let (sh, sd) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move { clock::clock_task(sh, sd).await });
    }
    {
        let (sh, sd) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move { grants::grants_task(sh, grant_rx, sd).await });
    }
    {
        let (sh, sd) = (shared.clone(), shutdown.clone());
        let r = &sh.settings.retention;
        let retention = crate::store::Retention {
            keep_sent: r.keep_sent(),
            keep_resolved: r.keep_resolved(),
            keep_seen: r.keep_seen(),
            archive: r.archive_path(&db_path),
            batch: crate::store::Retention::BATCH,
        };
        tasks.spawn(async move { retention::retention_task(sh, retention, sd).await });
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
