//! The newcomer's first run: a private Dovecot and SMTP capture server on
//! loopback, the fixture emails delivered to the `ops` and `support`
//! mailboxes, the daemon run against them, and then what people received,
//! decoded as a mail client shows it: who got what, an acknowledgement, a
//! "details missing" reply, a forward, what became of each fixture that
//! opened no case, and the start of the managers' digest.
//! `scripts/demo` installs the servers, builds, and runs this.
//!
//! `--keep DIR` writes the config and the database to DIR (new or empty)
//! and leaves them there, for `mailtriage cases list --config DIR`.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mail_parser::{Address, Message, MessageParser, MimeHeaders};
use mailtriage::batch::{MessageKey, Seen};
use mailtriage::config::{Config, Settings};
use mailtriage::control::{self, CaseDetail, Request, Response};
use mailtriage::outbox::{Delivery, OutboxItem};
use mailtriage::record::CaseRecord;
use mailtriage::route::ActionType;
use mailtriage::store::Store;
use mailtriage_testkit::{
    Captured, Dovecot, InProcess, MailtriageToml, Secret, SmtpCapture, copy_clock_free_config,
};

/// How long the daemon gets to process the fixtures, and then to send
/// what they caused.
const PATIENCE: Duration = Duration::from_secs(120);
/// Lines of the digest's text part shown.
const DIGEST_LINES: usize = 30;
/// Lines of a message body shown.
const BODY_LINES: usize = 60;

fn main() -> ExitCode {
    let keep = match parse_args() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("demo: {e}\nusage: scripts/demo [--keep DIR]");
            return ExitCode::from(2);
        }
    };
    init_logging();
    match run(keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--keep DIR`, or nothing.
fn parse_args() -> Result<Option<PathBuf>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(None),
        [flag, dir] if flag == "--keep" => Ok(Some(PathBuf::from(dir))),
        [flag] if flag == "--keep" => Err("--keep needs a directory".into()),
        other => Err(format!("unexpected arguments {other:?}")),
    }
}

/// The daemon runs in this process: its warnings go to standard error
/// (`RUST_LOG` sets the level; `scripts/demo` says warn).
fn init_logging() {
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// One fixture as delivered.
struct Fixture {
    name: String,
    /// As the IMAP server returns it.
    raw: Vec<u8>,
    mailbox: &'static str,
    uid: u32,
}

fn run(keep: Option<PathBuf>) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The config directory: a temporary one, or the one to keep.
    let (_temp, dir) = match &keep {
        None => {
            let t = tempfile::tempdir().context("creating a temporary directory")?;
            let d = t.path().to_path_buf();
            (Some(t), d)
        }
        Some(k) => (None, prepare_keep_dir(k)?),
    };

    println!(
        "Starting a private Dovecot (mailboxes ops, support) and an SMTP capture server on 127.0.0.1 ..."
    );
    let dovecot = Dovecot::start(&[("ops", "demo-ops"), ("support", "demo-support")]);
    let smtp = SmtpCapture::start();
    write_config(&dir, &dovecot, &smtp)?;
    let config = Config::load(&dir).context("the demo's config")?;
    let settings = Settings::load(&dir).context("the demo's mailtriage.toml")?;

    // The fixtures, alternately to ops and support.
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join("fixtures"))
        .context("reading fixtures/")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    paths.sort();
    let mut fixtures = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mailbox = if i % 2 == 0 { "ops" } else { "support" };
        let uid = dovecot.append(mailbox, "INBOX", &raw);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        fixtures.push(Fixture {
            name,
            raw,
            mailbox,
            uid,
        });
    }
    // The bytes as the server keeps them (and the daemon reads them: line
    // ends become CRLF), by which the daemon's store knows each message.
    for mailbox in ["ops", "support"] {
        for m in dovecot.fetch(mailbox, "INBOX") {
            if let Some(f) = fixtures
                .iter_mut()
                .find(|f| f.mailbox == mailbox && f.uid == m.uid)
            {
                f.raw = m.raw;
            }
        }
    }
    println!(
        "Delivered the {} fixture emails (fixtures/*.eml) to ops and support, alternately.",
        fixtures.len()
    );
    println!(
        "Running mailtriage (as `mailtriage run --config {}` would) ...",
        dir.display()
    );

    let daemon = InProcess::start(&dir);

    let socket = control::socket_path(&settings).unwrap_or_else(|| dir.join("control.sock"));
    // A daemon that stopped (a config it refused, say) ends the waiting.
    let running = || daemon.running();
    let waited = wait_for_triage(&dovecot, &config, &settings, &fixtures, &running)
        .and_then(|()| wait_for_outbox(&socket, &running))
        .and_then(|()| send_digest(&config, &socket, &smtp, &running));
    if let Err(e) = daemon.stop() {
        bail!("{e}");
    }
    if let Err(e) = waited {
        eprintln!("demo: {e:#}; showing what there is");
    }

    let store = Store::open(&dir.join("db"), 1 << 20).context("opening the demo's database")?;
    let received = smtp.messages();
    let items = store.outbox_items().context("reading the outbox")?;
    let report = Report::new(&config, &store, &items, &received);
    println!("Done: {} messages went out over SMTP.\n", received.len());
    report.who_got_what();
    report.examples(&fixtures)?;
    report.fixtures_without_case(&fixtures)?;
    report.digest();
    drop(store);

    match keep {
        Some(_) => {
            println!(
                "\nThe config and the database are in {} (the mail servers are gone). Try:",
                dir.display()
            );
            println!(
                "    {} cases list --config {}",
                mailtriage_command(),
                shell_word(&dir.display().to_string())
            );
        }
        None => println!(
            "\n(Everything was in a temporary directory, now removed. `scripts/demo --keep DIR` leaves the config and the database in DIR, for `mailtriage cases list --config DIR`.)"
        ),
    }
    Ok(())
}

/// Creates `dir` if needed; refuses one that has files in it (the demo
/// must not mix its database into someone's files). Absolute, since
/// mailtriage.toml names the database by its path.
fn prepare_keep_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let not_empty = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .next()
        .is_some();
    if not_empty {
        bail!(
            "{} is not empty: give --keep a new or empty directory",
            dir.display()
        );
    }
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// How to run the mailtriage binary built next to this example
/// (`target/release/mailtriage`), by its full path so that the line works
/// from any directory.
fn mailtriage_command() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("mailtriage")))
        .filter(|p| p.is_file())
        .map_or_else(
            || "cargo run --release --".into(),
            |p| shell_word(&p.display().to_string()),
        )
}

/// `s` as one word for a POSIX shell: as it is when it is safe, else in
/// single quotes.
fn shell_word(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Waits until the daemon has committed every fixture: in each mailbox, the
/// last message it will mark (an escalation from an allowed sender is
/// marked `\Seen` once its batch is stored, or moved if quarantined) is
/// marked or gone. Batches are stored in UID order.
fn wait_for_triage(
    dovecot: &Dovecot,
    config: &Config,
    settings: &Settings,
    fixtures: &[Fixture],
    running: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    let mut last: BTreeMap<&str, u32> = BTreeMap::new();
    for f in fixtures {
        let Ok((email, case)) = config.triage.parse(&f.raw) else {
            continue;
        };
        let from = email.from.as_deref().unwrap_or("");
        let allowed = settings
            .daemon
            .allow_senders
            .iter()
            .any(|p| mailtriage::route::sender_matches(p, from));
        if allowed && case.is_escalation {
            let l = last.entry(f.mailbox).or_default();
            *l = (*l).max(f.uid);
        }
    }
    let deadline = Instant::now() + PATIENCE;
    for (mailbox, uid) in last {
        loop {
            let done = match dovecot
                .flags(mailbox, "INBOX")
                .iter()
                .find(|(u, _)| *u == uid)
            {
                None => true,
                Some((_, flags)) => flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")),
            };
            if done {
                break;
            }
            if !running() {
                bail!("the daemon stopped before it had processed mailbox {mailbox}");
            }
            if Instant::now() > deadline {
                bail!("the daemon had not processed mailbox {mailbox} after {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Waits, asking the daemon over its control socket (as `mailtriage cases
/// show` does), until no message queued for a case is still pending.
fn wait_for_outbox(socket: &Path, running: &dyn Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let cases: Vec<CaseRecord> = ask(
            socket,
            &Request::List {
                open: false,
                tier: None,
                risk_min: None,
                since: None,
            },
        )?;
        let mut pending = 0;
        for c in &cases {
            let detail: CaseDetail = ask(socket, &Request::Show { id: c.id.clone() })?;
            pending += detail
                .outbox
                .iter()
                .filter(|i| i.state == Delivery::Pending)
                .count();
        }
        if pending == 0 {
            return Ok(());
        }
        if !running() {
            bail!("the daemon stopped with {pending} messages still to send");
        }
        if Instant::now() > deadline {
            bail!("{pending} messages were still waiting to be sent after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends the first digest now (`mailtriage digest NAME --send-now`) and
/// waits for it to arrive.
fn send_digest(
    config: &Config,
    socket: &Path,
    smtp: &SmtpCapture,
    running: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    let Some(name) = config.router.digests.keys().next() else {
        return Ok(());
    };
    let before = smtp.messages().len();
    let _: String = ask(
        socket,
        &Request::Digest {
            name: name.clone(),
            send_now: true,
        },
    )?;
    let deadline = Instant::now() + PATIENCE;
    while smtp.messages().len() <= before {
        if !running() {
            bail!("the daemon stopped before it sent the digest {name:?}");
        }
        if Instant::now() > deadline {
            bail!("the digest {name:?} was not sent within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// One request to the daemon's control socket, its answer decoded.
fn ask<T: serde::de::DeserializeOwned>(socket: &Path, req: &Request) -> anyhow::Result<T> {
    match control::request(socket, req, Duration::from_secs(10))? {
        Response::Ok { value } => {
            serde_json::from_value(value).context("reading the daemon's answer")
        }
        Response::Err { error } => bail!("the daemon answered: {error}"),
    }
}

/// What the run left: the store (outbox items carry what each message is)
/// and the messages as the SMTP server received them.
struct Report<'a> {
    config: &'a Config,
    store: &'a Store,
    items: &'a [OutboxItem],
    /// Received messages by Message-ID (without angle brackets).
    received: HashMap<String, &'a Captured>,
}

impl<'a> Report<'a> {
    fn new(
        config: &'a Config,
        store: &'a Store,
        items: &'a [OutboxItem],
        received: &'a [Captured],
    ) -> Report<'a> {
        let received = received
            .iter()
            .filter_map(|m| {
                let id = MessageParser::default()
                    .parse(&m.raw)?
                    .message_id()?
                    .to_string();
                Some((id, m))
            })
            .collect();
        Report {
            config,
            store,
            items,
            received,
        }
    }

    /// The received message that carries this outbox item's Message-ID.
    fn received(&self, item: &OutboxItem) -> Option<&'a Captured> {
        self.received
            .get(item.message_id.trim_matches(['<', '>']))
            .copied()
    }

    /// Every address and the subjects of what it received: the agents (who
    /// get replies) apart from the managers and supervisors.
    fn who_got_what(&self) {
        let mut agents: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut managers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for item in self.items {
            let subject = self
                .received(item)
                .and_then(|m| {
                    MessageParser::default()
                        .parse(&m.raw)
                        .and_then(|p| p.subject().map(str::to_string))
                })
                .unwrap_or_else(|| format!("(not received: {:?})", item.state));
            let group = if item.kind == mailtriage::outbox::OutgoingKind::Reply {
                &mut agents
            } else {
                &mut managers
            };
            for r in &item.recipients {
                group.entry(r).or_default().push(subject.clone());
            }
        }
        for (title, group) in [
            (
                "MANAGERS AND SUPERVISORS (forwards, reports, the digest)",
                managers,
            ),
            ("AGENTS (replies)", agents),
        ] {
            println!("==== {title} ====");
            for (addr, subjects) in group {
                let n = subjects.len();
                println!("{addr} ({n} message{})", if n == 1 { "" } else { "s" });
                for s in subjects {
                    println!("    {s}");
                }
            }
            println!();
        }
    }

    /// An acknowledgement, a "details missing" reply and a forward, chosen
    /// by what they are (the case had nothing missing; the routing table
    /// chose another reply for a case with details missing; a forward),
    /// not by their text, and shown decoded.
    fn examples(&self, fixtures: &[Fixture]) -> anyhow::Result<()> {
        // Each fixture that opened a case, with its case and the reply its
        // opening sent (the first reply queued for the case).
        let mut opened = Vec::new();
        for f in fixtures {
            let Some(Seen::Case { case_id }) = seen(self.store, f)? else {
                continue;
            };
            let Some(record) = self.store.case(&case_id)? else {
                continue;
            };
            let Some(reply) = record
                .outbox
                .iter()
                .filter_map(|id| self.items.iter().find(|i| i.id == *id))
                .find(|i| i.kind == mailtriage::outbox::OutgoingKind::Reply)
            else {
                continue;
            };
            // The case as the fixture opened it (the stored one may have
            // changed since), and the template its reply was rendered with.
            let Ok((_, case)) = self.config.triage.parse(&f.raw) else {
                continue;
            };
            let template = self
                .config
                .router
                .route(&case, Some(f.mailbox))
                .into_iter()
                .find(|a| a.kind == ActionType::Reply)
                .and_then(|a| a.template);
            opened.push(Opened {
                fixture: f,
                case_id,
                case,
                reply,
                template,
            });
        }
        let ack = opened.iter().find(|o| o.case.missing.is_empty());
        let ack_template = ack.and_then(|o| o.template.clone());
        let missing = opened
            .iter()
            .find(|o| !o.case.missing.is_empty() && o.template != ack_template);

        match ack {
            Some(o) => self.show(
                &format!(
                    "AN ACKNOWLEDGEMENT, AS THE AGENT SEES IT ({}, {})",
                    o.case_id, o.fixture.name
                ),
                o.reply,
            ),
            None => println!("(No fixture got an acknowledgement.)\n"),
        }
        match missing {
            Some(o) => {
                let what: Vec<&str> = o.case.missing.iter().map(|m| m.name()).collect();
                self.show(
                    &format!(
                        "A \"DETAILS MISSING\" REPLY ({}, {}: missing {})",
                        o.case_id,
                        o.fixture.name,
                        what.join(", ")
                    ),
                    o.reply,
                );
            }
            None => println!("(No fixture got a \"details missing\" reply.)\n"),
        }
        // A forward of the acknowledged case if it had one, else the first.
        let forward = ack
            .and_then(|o| {
                self.items.iter().find(|i| {
                    i.kind == mailtriage::outbox::OutgoingKind::Forward
                        && i.case_id.as_deref() == Some(&o.case_id)
                })
            })
            .or_else(|| {
                self.items
                    .iter()
                    .find(|i| i.kind == mailtriage::outbox::OutgoingKind::Forward)
            });
        match forward {
            Some(item) => self.show(
                &format!(
                    "A FORWARD, AS A MANAGER SEES IT ({})",
                    item.case_id.as_deref().unwrap_or("-")
                ),
                item,
            ),
            None => println!("(No forward was sent.)\n"),
        }
        Ok(())
    }

    /// One line for each fixture that opened no case: what the daemon did
    /// with it, from its record of every message (`seen`) and the case's
    /// history; then the counts.
    fn fixtures_without_case(&self, fixtures: &[Fixture]) -> anyhow::Result<()> {
        println!("==== THE FIXTURES THAT OPENED NO CASE ====");
        let (mut cases, mut updates, mut left) = (0, 0, 0);
        for f in fixtures {
            let outcome = seen(self.store, f)?;
            let line = match &outcome {
                Some(Seen::Case { .. }) => {
                    cases += 1;
                    continue;
                }
                Some(Seen::Update { case_id }) => {
                    updates += 1;
                    self.update_line(f, case_id)?
                }
                Some(Seen::Ignored { reason }) => {
                    left += 1;
                    ignored_line(self.config, f, reason)
                }
                Some(Seen::Quarantined { error }) => {
                    left += 1;
                    format!("unreadable ({error}): moved to the Quarantine folder for a human")
                }
                None => "not processed (the daemon did not get to it)".into(),
            };
            println!("{}: {line}", f.name);
        }
        let (mut open, mut resolved) = (0, 0);
        for c in self.store.cases().flatten() {
            if c.is_open() {
                open += 1;
            } else {
                resolved += 1;
            }
        }
        println!(
            "\n{} fixtures: {cases} opened a case, {updates} updated a case, {left} were left alone. \
             Cases now: {open} open, {resolved} resolved.\n",
            fixtures.len(),
        );
        Ok(())
    }

    /// "status update of ESC-2026-000004 (status open -> resolved)".
    fn update_line(&self, f: &Fixture, case_id: &str) -> anyhow::Result<String> {
        let email = mailtriage::message::parse(&f.raw).ok();
        let case = email.as_ref().map(|e| self.config.triage.case(e));
        let what = match &case {
            Some(c) if c.is_escalation => match &c.fields.order_id {
                Some(order) => format!("another escalation of order {order}: joined {case_id}"),
                None => format!("an escalation in the thread of {case_id}"),
            },
            Some(c) if c.kind == mailtriage::extract::Kind::StatusUpdate => {
                format!("status update of {case_id}")
            }
            _ => format!("reply in the thread of {case_id}"),
        };
        let mid = email
            .as_ref()
            .and_then(|e| e.message_id.as_deref())
            .map(mailtriage::record::thread_key);
        let changes = self
            .store
            .case(case_id)?
            .and_then(|r| {
                r.history
                    .into_iter()
                    .find(|h| h.message_id.as_deref().map(mailtriage::record::thread_key) == mid)
            })
            .map(|h| h.changes)
            .unwrap_or_default();
        Ok(if changes.is_empty() {
            format!("{what} (nothing changed)")
        } else {
            format!("{what} ({})", shorten(&changes.join("; "), 100))
        })
    }

    /// The digest as the managers got it: headers and the first lines of
    /// its text part.
    fn digest(&self) {
        let Some(item) = self
            .items
            .iter()
            .rev()
            .find(|i| i.kind == mailtriage::outbox::OutgoingKind::Digest)
        else {
            return;
        };
        let Some(msg) = self.received(item) else {
            return;
        };
        let Some(parsed) = MessageParser::default().parse(&msg.raw) else {
            return;
        };
        println!(
            "==== THE MANAGERS' DIGEST, SENT NOW (the first {DIGEST_LINES} lines of its text part) ===="
        );
        print_headers(&parsed);
        let text = parsed.body_text(0).unwrap_or_default();
        for line in text.lines().take(DIGEST_LINES) {
            println!("{}", line.trim_end());
        }
        if text.lines().count() > DIGEST_LINES {
            println!("...");
        }
    }

    /// An outbox item as its recipient's mail client shows it.
    fn show(&self, title: &str, item: &OutboxItem) {
        println!("==== {title} ====");
        let Some(msg) = self.received(item) else {
            println!("(not received: {:?})\n", item.state);
            return;
        };
        let Some(parsed) = MessageParser::default().parse(&msg.raw) else {
            println!("(not a readable message)\n");
            return;
        };
        print_headers(&parsed);
        let text = parsed.body_text(0).unwrap_or_default();
        let lines: Vec<&str> = text.trim_end().lines().collect();
        for line in lines.iter().take(BODY_LINES) {
            println!("{}", line.trim_end());
        }
        if lines.len() > BODY_LINES {
            println!("...");
        }
        for part in parsed.attachments() {
            println!("{}", attachment_line(part));
        }
        println!();
    }
}

/// A fixture that opened a case, and the reply the opening sent.
struct Opened<'a> {
    fixture: &'a Fixture,
    case_id: String,
    case: mailtriage::case::Case,
    reply: &'a OutboxItem,
    template: Option<String>,
}

/// What the store recorded for a fixture (found as the daemon finds a
/// message: Message-ID plus a digest of its bytes).
fn seen(store: &Store, f: &Fixture) -> anyhow::Result<Option<Seen>> {
    let message_id = mailtriage::message::parse(&f.raw)
        .ok()
        .and_then(|e| e.message_id);
    Ok(store.seen(&MessageKey::new(message_id.as_deref(), &f.raw))?)
}

/// Why a fixture was left alone, in words.
fn ignored_line(config: &Config, f: &Fixture, reason: &str) -> String {
    let Ok((email, case)) = config.triage.parse(&f.raw) else {
        return format!("left alone ({reason})");
    };
    let from = email.from.as_deref().unwrap_or("no sender");
    if reason.starts_with("sender ") {
        return format!("from {from}, not on the allow-list: left alone");
    }
    if let Some(why) = email.automatic() {
        let header = match why {
            "auto-submitted" => format!(
                "Auto-Submitted: {}",
                email.auto_submitted.as_deref().unwrap_or("").trim()
            ),
            "precedence" => format!(
                "Precedence: {}",
                email.precedence.as_deref().unwrap_or("").trim()
            ),
            "list-id" => "List-Id".to_string(),
            other => other.to_string(),
        };
        return format!("automatic mail ({header}): left alone");
    }
    if case.kind == mailtriage::extract::Kind::StatusUpdate {
        let about: Vec<String> = [
            case.fields.status.as_ref().map(|s| s.replace('_', " ")),
            case.fields.order_id.as_ref().map(|o| format!("order {o}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        return format!(
            "status update ({}) to no case mailtriage has: left alone",
            about.join(", ")
        );
    }
    if case.kind == mailtriage::extract::Kind::NotEscalation {
        return "not an escalation: left alone".into();
    }
    format!("{}, not part of a case: left alone", case.kind.label())
}

/// From, To, Cc, Subject and Date, decoded, then a blank line.
fn print_headers(m: &Message) {
    if let Some(a) = m.from() {
        println!("From:    {}", addresses(a));
    }
    if let Some(a) = m.to() {
        println!("To:      {}", addresses(a));
    }
    if let Some(a) = m.cc() {
        println!("Cc:      {}", addresses(a));
    }
    println!("Subject: {}", m.subject().unwrap_or("(no subject)"));
    if let Some(d) = m.date() {
        println!("Date:    {}", d.to_rfc822());
    }
    println!();
}

/// `Name <address>, address`.
fn addresses(a: &Address) -> String {
    a.iter()
        .map(|addr| match (addr.name(), addr.address()) {
            (Some(n), Some(a)) => format!("{n} <{a}>"),
            (None, Some(a)) => a.to_string(),
            (Some(n), None) => n.to_string(),
            (None, None) => String::new(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `[attached: original.eml, message/rfc822: "Subject" from a@b]`.
fn attachment_line(part: &mail_parser::MessagePart) -> String {
    let name = part.attachment_name().unwrap_or("(no name)");
    let ctype = part.content_type().map_or_else(
        || "application/octet-stream".to_string(),
        |c| match c.subtype() {
            Some(s) => format!("{}/{s}", c.ctype()),
            None => c.ctype().to_string(),
        },
    );
    match part.message() {
        Some(inner) => {
            let from = inner
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or("no sender");
            format!(
                "[attached: {name}, {ctype}: \"{}\" from {from}]",
                inner.subject().unwrap_or("(no subject)")
            )
        }
        None => format!(
            "[attached: {name}, {ctype}, {} bytes]",
            part.contents().len()
        ),
    }
}

/// At most `max` characters, with "…" when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max - 1).collect();
    format!("{}…", cut.trim_end())
}

fn write_config(dir: &Path, d: &Dovecot, s: &SmtpCapture) -> anyhow::Result<()> {
    // Tier 2 open around the clock and the digest on request only, so
    // that what the demo shows does not depend on the hour it runs at.
    copy_clock_free_config(dir);
    let mut toml = MailtriageToml::new(&dir.join("db"), s.port());
    toml.daemon.set("domain", "mailtriage.demo");
    for (name, pw) in [("ops", "demo-ops"), ("support", "demo-support")] {
        let file = dir.join(format!("{name}.password"));
        std::fs::write(&file, pw).with_context(|| format!("writing {}", file.display()))?;
        toml.mailbox(name, d.port(), Secret::File(&file));
    }
    let path = dir.join("mailtriage.toml");
    std::fs::write(&path, toml.to_string()).with_context(|| format!("writing {}", path.display()))
}
