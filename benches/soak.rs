//! A year of operation in minutes: the store's size, the memory and the
//! time per batch as 100,000 escalations and their follow-ups go through.
//!
//! Run with `cargo bench --bench soak`. What is real and what is simulated:
//!
//! - **Real:** the store (`mailtriage::store::Store`, sled, in a temp dir,
//!   opened with `[daemon] cache` as the daemon opens it), intake
//!   (`mailtriage::intake::process` over the store as its `CaseLookup`,
//!   with the shipped config: routing, templates, Tier 2 hours, the daily
//!   digest, repeat vendors, overdue cases), each batch committed in one
//!   transaction and its server actions cleared as the daemon's mailbox
//!   task does, the digests queued by the daemon's own
//!   `mailtriage::daemon::queue_due`, overdue re-escalations and reply-count
//!   pruning as the daemon's clock and outbox tasks do them, and the daily
//!   retention pass (`Store::retention_pass_with`, `[retention]` as the
//!   daemon reads it: the defaults) at each simulated midnight.
//! - **Simulated:** IMAP and SMTP. Messages are handed to intake as if
//!   fetched (UIDs counting up in one mailbox, `ops`), and the outbox's
//!   delivery is the store's side of it only: each due item's bytes read
//!   and the item marked sent (`mark_sent`, one transaction and flush each,
//!   as the outbox task records a 250). The clock is injected: every
//!   timestamp intake and the store see is the simulated one.
//!
//! The store and intake run in this process, so the memory reported is this
//! process's (`VmRSS`, `VmHWM` of /proc/self/status); the bench's own data
//! (the corpus, the follow-ups waiting to arrive) is a few MB, printed
//! before the store opens. Idle memory after a restart is measured on the
//! real daemon: the release binary (`mailtriage run`) on the year's
//! database, against the test kit's Dovecot (an empty mailbox) and SMTP
//! capture, read from /proc/PID/status once it is idle; started twice,
//! since the first start on a database that was never reopened does some
//! work once (the README says what).
//!
//! **The mail.** Every message is a copy of a fixture (`fixtures/*.eml`)
//! with a fresh Message-ID and a `Date:` at its simulated arrival:
//!
//! - 100,000 escalations (the fixtures that open a case), each with its own
//!   order id, from one of 150 agents, over a year: weekdays 9:00-19:00 IST
//!   heaviest, Saturdays at 60 %, Sundays at 25 %, little at night (the
//!   arrival times are the order statistics of uniform draws mapped through
//!   that weekly curve, so they bunch as real arrivals do). A pickup
//!   complaint names one of 10,000 vendors, or (15 % of them) one of 8
//!   repeat vendors.
//! - Follow-ups, in the case's thread (`In-Reply-To` its escalation) and in
//!   working hours: 97 % of cases resolved within 2 h to 7 days
//!   (log-uniform: half within 18 h), 2.5 % within 1 to 8 weeks, 0.5 %
//!   never; 25 % get an agent's reply before that, 15 % a status update
//!   (High Priority or Escalated); 5 % a second escalation of the same order
//!   (a join, reopening the case when it was resolved meanwhile, then
//!   resolved again); 3 % an out-of-office answer. 3,000 messages a year
//!   that are no escalation (newsletters, bounces, office chatter).
//!
//! **Batches.** Messages that arrive within `MAILTRIAGE_SOAK_WINDOW`
//! seconds (default 60, as a daemon polling every minute; an idling daemon
//! takes them one at a time) of the first one waiting form a batch, at most
//! `batch_size` (50); the batch runs when its last message arrived. The
//! time per batch is the mailbox task's work on the store without IMAP:
//! reserving case ids, intake, the commit (one transaction and flush) and
//! clearing the server actions (a flush). After each batch the outbox
//! delivers what is due. Every hour of simulated time the clock's work
//! runs (overdue cases, digests, pruning the reply counts; the daemon looks
//! every minute, which changes when a notice goes, not what is stored), and
//! at each simulated midnight the retention pass ([`retention_pass`]).
//! Nothing waits for the simulated time to pass: a year takes minutes, and
//! sled's background flusher gets that much less idle time (a run that
//! slept 200 ms a simulated day ended with a database 14 % smaller).
//!
//! Every 10,000 cases: the database's size on disk, VmRSS and VmHWM, and
//! the time per batch (median and p99 of the batches since the last row).
//! Targets (issue 11): database ≤ 500 MB and RSS ≤ 100 MB throughout with
//! the default retention, RSS at 100,000 ≤ 1.2 × RSS at 50,000, idle RSS
//! after a restart on the year's database ≤ 40 MB, batch time flat (here:
//! the last row's median at most 1.5 × the first's).
//!
//! `MAILTRIAGE_SOAK_CASES` changes the count, `MAILTRIAGE_SOAK_RESTART=0`
//! skips the restart, `MAILTRIAGE_SOAK_KEEP=1` keeps the database (its
//! path is printed), `MAILTRIAGE_SOAK_RESTART_ON=PATH` only starts the
//! daemon on a database a run kept, and `MAILTRIAGE_SOAK_KEEP_RESOLVED`
//! (a duration, `60d`) sets `[retention] keep_resolved`, to see the data
//! bounded within the year.

mod common;

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{count, dir_size, load_average, ms, pct, replace_all, status_kb, verdict};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use mailtriage::batch::{BatchOutcome, Cursor};
use mailtriage::config::{Config, MailboxSection, Settings};
use mailtriage::intake::{self, Arrival, Intake, LookupError};
use mailtriage::mail::Identity;
use mailtriage::store::{Committed, Retention, RetentionReport, Store};
use mailtriage_testkit::{
    DaemonCommand, Dovecot, LogFormat, MailtriageToml, Rng, Secret, SmtpCapture,
    copy_shipped_config, password_file,
};

const CASES: usize = 100_000;
/// Seconds: messages arriving this long after the first one waiting join
/// its batch.
const WINDOW: usize = 60;
const SEED: u64 = 0x11_50a4;
const AGENTS: usize = 150;
const VENDORS: usize = 10_000;
const REPEAT_VENDORS: usize = 8;
const REPEAT_SHARE: f64 = 0.15;
const NOISE_PER_YEAR: usize = 3_000;
/// The agents' zone (routing.toml's `zone`): working hours and `Date:`.
const ZONE: &str = "Asia/Kolkata";
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// How often the clock's work runs, in simulated seconds.
const CLOCK_EVERY: i64 = HOUR;
const USER: &str = "ops";
const PASSWORD: &str = "secret";

const TARGET_DB_MB: f64 = 500.0;
const TARGET_RSS_MB: f64 = 100.0;
const TARGET_PLATEAU: f64 = 1.2;
const TARGET_IDLE_MB: f64 = 40.0;
const TARGET_FLAT: f64 = 1.5;

fn main() {
    let cases = count("MAILTRIAGE_SOAK_CASES", CASES);
    let window = count("MAILTRIAGE_SOAK_WINDOW", WINDOW) as i64;
    let restart = count("MAILTRIAGE_SOAK_RESTART", 1) > 0;
    let keep = count("MAILTRIAGE_SOAK_KEEP", 0) > 0;
    if let Some(db) = std::env::var_os("MAILTRIAGE_SOAK_RESTART_ON") {
        restart_only(Path::new(&db));
        return;
    }
    if cfg!(debug_assertions) {
        println!("warning: debug assertions are on; run `cargo bench --bench soak`");
    }
    let root = tempfile::Builder::new()
        .prefix("mailtriage-soak")
        .tempdir()
        .expect("temp dir");
    let dir = root.path();
    copy_shipped_config(dir);
    fs::write(password_file(dir), format!("{PASSWORD}\n")).expect("write the IMAP password");
    let db = dir.join("db");
    // The servers of the restart are not running yet; the simulation reads
    // no port.
    write_toml(dir, &db, 1, 1);
    let config = Config::load(dir).expect("the shipped config loads");
    let settings = Settings::load(dir).expect("the bench's mailtriage.toml");
    let corpus = Corpus::load(&config);
    corpus.describe();
    println!(
        "load average at start: {}; bench process before the store opens: VmRSS {:.1} MB",
        load_average(),
        status_kb("self", "VmRSS").unwrap_or(0) as f64 / 1024.0
    );

    // The year ends at the last midnight (UTC) before the run, so that the
    // daemon started on its database afterwards, on the real clock, finds
    // it as a day-old installation would.
    let now = Timestamp::now().as_second();
    let year_end = now - now.rem_euclid(DAY);
    let year_start = year_end - 365 * DAY;
    let started = Instant::now();
    let mut sim = Sim::new(&config, &settings, &corpus, &db, year_start, cases, window);
    let rows = sim.run(year_end);
    let sim_wall = started.elapsed();
    sim.summary(&rows, sim_wall);
    drop(sim);

    let idle = if restart {
        starts(dir, &db)
    } else {
        Vec::new()
    };
    let db_mb = dir_size(&db) as f64 / 1e6;
    targets(&rows, &idle, db_mb);
    println!(
        "total bench time {:.0} s; load average at the end: {} (above ~1 while it ran, \
         something else shared the 2 cores)",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    if keep {
        let kept = root.keep();
        println!("database kept: {}", kept.join("db").display());
    }
}

/// Only the restart, on the database `db` a run kept
/// (`MAILTRIAGE_SOAK_KEEP=1`), in the directory beside it that holds its
/// configuration.
fn restart_only(db: &Path) {
    let dir = db.parent().expect("the kept database's directory");
    assert!(
        dir.join("mailtriage.toml").is_file(),
        "{}: no mailtriage.toml beside the database (give the db path a run kept)",
        db.display()
    );
    println!(
        "load average at start: {}; database {:.1} MB",
        load_average(),
        dir_size(db) as f64 / 1e6
    );
    let idle = starts(dir, db);
    println!();
    idle_verdicts(&idle);
}

/// The daemon started on the year's database twice: the first start after
/// the year (it does once what a database that has never been reopened
/// still owes, see the README), then a second one.
fn starts(dir: &Path, db: &Path) -> Vec<Idle> {
    ["first start", "second start"]
        .into_iter()
        .map(|label| restart_daemon(dir, db, label))
        .collect()
}

fn idle_verdicts(idle: &[Idle]) {
    if idle.is_empty() {
        println!("  idle RSS after a restart: not measured (MAILTRIAGE_SOAK_RESTART=0)");
    }
    for i in idle {
        let mb = i.rss_kb as f64 / 1024.0;
        println!(
            "  idle RSS of the daemon on the year's database, {}: {mb:.1} MB (target: <= \
             {TARGET_IDLE_MB:.0} MB): {}",
            i.label,
            verdict(mb <= TARGET_IDLE_MB)
        );
    }
}

/// `dir/mailtriage.toml`: the database at `db`, the `ops` mailbox on
/// 127.0.0.1:`imap_port`, SMTP on 127.0.0.1:`smtp_port`, the defaults for
/// everything the targets are about (cache, retention).
fn write_toml(dir: &Path, db: &Path, imap_port: u16, smtp_port: u16) {
    let password = password_file(dir);
    let mut toml = MailtriageToml::new(db, smtp_port);
    toml.daemon.set("admin", vec!["it.oncall@example.com"]);
    toml.mailbox(USER, imap_port, Secret::File(&password));
    toml.write(dir);
    // Only to see retention bound the data within the year: the default,
    // 400 days, keeps every case of the first year.
    if let Ok(keep) = std::env::var("MAILTRIAGE_SOAK_KEEP_RESOLVED") {
        let path = dir.join("mailtriage.toml");
        let mut text = fs::read_to_string(&path).expect("read mailtriage.toml");
        text.push_str(&format!("\n[retention]\nkeep_resolved = {keep:?}\n"));
        fs::write(&path, text).expect("write mailtriage.toml");
    }
}

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

/// A fixture as the simulation copies it, with what a copy replaces.
struct Template {
    name: String,
    raw: Vec<u8>,
    /// The order id as written, replaced by the case's.
    order: Option<String>,
    /// The sender's address as written, replaced by an agent's.
    sender: Option<String>,
    /// The vendor id as written (`VND-1187`), replaced by the vendor's.
    vendor: Option<String>,
}

/// What a copy of a template gets.
#[derive(Default)]
struct Copy<'a> {
    message_id: &'a str,
    date: &'a str,
    /// In-Reply-To and References.
    thread: Option<&'a str>,
    order: Option<&'a str>,
    sender: Option<&'a str>,
    vendor: Option<&'a str>,
}

impl Template {
    fn new(name: &str, raw: Vec<u8>, config: &Config) -> Option<Template> {
        let (email, case) = config.triage.parse(&raw).ok()?;
        let vendor = case.fields.vendor.as_deref().and_then(vendor_id);
        Some(Template {
            name: name.to_string(),
            order: case.fields.order_id.clone(),
            sender: email.from.clone(),
            vendor,
            raw,
        })
    }

    fn copy(&self, c: &Copy) -> Vec<u8> {
        let mut raw = self.raw.clone();
        let swaps = [
            (&self.order, c.order),
            (&self.sender, c.sender),
            (&self.vendor, c.vendor),
        ];
        for (from, to) in swaps {
            if let (Some(from), Some(to)) = (from, to) {
                raw = replace_all(&raw, from.as_bytes(), to.as_bytes());
            }
        }
        let thread = c.thread.map(|t| format!("<{t}>"));
        with_headers(
            &raw,
            &[
                ("Message-ID", Some(format!("<{}>", c.message_id))),
                ("Date", Some(c.date.to_string())),
                ("In-Reply-To", thread.clone()),
                ("References", thread),
            ],
        )
    }
}

/// `VND-1187` in a vendor field.
fn vendor_id(field: &str) -> Option<String> {
    let at = field.find("VND-")?;
    let digits = field[at + 4..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    (digits > 0).then(|| field[at..at + 4 + digits].to_string())
}

/// The fixtures by the part they play.
struct Corpus {
    fixtures: usize,
    /// Escalations that open a case (and, copied with a case's order id,
    /// join it).
    openers: Vec<Template>,
    /// An agent's reply in a case's thread.
    replies: Vec<Template>,
    /// `Status: High Priority`, `Escalated`.
    statuses: Vec<Template>,
    /// `Status: Resolved`.
    resolutions: Vec<Template>,
    /// Out-of-office answers.
    auto_replies: Vec<Template>,
    /// Mail that is no escalation.
    noise: Vec<Template>,
    /// Fixtures left out, and why.
    left_out: Vec<String>,
}

impl Corpus {
    fn load(config: &Config) -> Corpus {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut paths: Vec<PathBuf> = fs::read_dir(root.join("fixtures"))
            .expect("fixtures/")
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        paths.sort();
        let mut c = Corpus {
            fixtures: paths.len(),
            openers: Vec::new(),
            replies: Vec::new(),
            statuses: Vec::new(),
            resolutions: Vec::new(),
            auto_replies: Vec::new(),
            noise: Vec::new(),
            left_out: Vec::new(),
        };
        for path in &paths {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let raw = fs::read(path).expect("read a fixture");
            let Some(t) = Template::new(&name, raw, config) else {
                c.left_out.push(format!("{name} (does not parse)"));
                continue;
            };
            let (email, case) = config.triage.parse(&t.raw).expect("parsed above");
            let threaded = email.in_reply_to.is_some();
            let status = case.fields.status.as_deref().map(str::to_ascii_lowercase);
            let (slot, part) = if email.automatic().is_some() {
                if threaded {
                    (&mut c.auto_replies, Part::Threaded)
                } else {
                    (&mut c.noise, Part::Other)
                }
            } else if case.is_escalation && threaded {
                (&mut c.replies, Part::Threaded)
            } else if case.is_escalation {
                (&mut c.openers, Part::Opener)
            } else if status.as_deref() == Some("resolved") {
                (&mut c.resolutions, Part::Threaded)
            } else if status.is_some() {
                (&mut c.statuses, Part::Threaded)
            } else {
                (&mut c.noise, Part::Other)
            };
            match check(config, &t, part) {
                Ok(()) => slot.push(t),
                Err(why) => c.left_out.push(format!("{name} ({why})")),
            }
        }
        for (what, v) in [
            ("escalations", &c.openers),
            ("replies", &c.replies),
            ("status updates", &c.statuses),
            ("resolutions", &c.resolutions),
            ("out-of-office answers", &c.auto_replies),
            ("other mail", &c.noise),
        ] {
            assert!(!v.is_empty(), "no fixture serves as {what}");
        }
        c
    }

    fn describe(&self) {
        let names = |v: &[Template]| {
            v.iter()
                .map(|t| t.name.split('-').next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mean = self.openers.iter().map(|t| t.raw.len()).sum::<usize>() / self.openers.len();
        println!(
            "corpus: {} fixtures; {} open cases (mean {mean} bytes): {}; replies: {}; status \
             updates: {}; resolutions: {}; out-of-office: {}; other mail: {}",
            self.fixtures,
            self.openers.len(),
            names(&self.openers),
            names(&self.replies),
            names(&self.statuses),
            names(&self.resolutions),
            names(&self.auto_replies),
            names(&self.noise),
        );
        if !self.left_out.is_empty() {
            println!("  left out: {}", self.left_out.join(", "));
        }
    }
}

/// The part a fixture plays, for [`check`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Opener,
    Threaded,
    Other,
}

/// Whether a copy of `t` reads as intended: its own Message-ID and thread,
/// and for an escalation the order, agent and vendor it was given (an id in
/// an encoded body could not be replaced).
fn check(config: &Config, t: &Template, part: Part) -> Result<(), String> {
    let date = "Mon, 02 Mar 2026 10:00:00 +0530";
    let thread = (part == Part::Threaded).then_some("case.1@agents.example.com");
    let order = t.order.as_ref().map(|o| format!("{o}S1"));
    let vendor = "VND-00042";
    let copy = t.copy(&Copy {
        message_id: "check.1@agents.example.com",
        date,
        thread,
        order: order.as_deref(),
        sender: Some("agent001@example.com"),
        vendor: Some(vendor),
    });
    let (email, case) = config
        .triage
        .parse(&copy)
        .map_err(|e| format!("a copy does not parse: {e}"))?;
    if email.message_id.as_deref() != Some("check.1@agents.example.com") {
        return Err("Message-ID not replaced".into());
    }
    if let Some(th) = thread
        && email.in_reply_to.as_deref() != Some(th)
    {
        return Err("In-Reply-To not set".into());
    }
    if part != Part::Opener {
        return Ok(());
    }
    let Some(o) = &order else {
        return Err("no order id".into());
    };
    if case.fields.order_id.as_deref().map(str::to_ascii_lowercase) != Some(o.to_lowercase()) {
        return Err("order id not replaceable".into());
    }
    if !email
        .from
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("agent001@example.com"))
    {
        return Err("sender not replaceable".into());
    }
    if t.vendor.is_some()
        && !case
            .fields
            .vendor
            .as_deref()
            .is_some_and(|v| v.contains(vendor))
    {
        return Err("vendor id not replaceable".into());
    }
    Ok(())
}

/// `raw` without the headers named in `set` (and their continuation
/// lines), and those of them with a value written first, in the line
/// endings of `raw`.
fn with_headers(raw: &[u8], set: &[(&str, Option<String>)]) -> Vec<u8> {
    let crlf = raw.windows(2).any(|w| w == b"\r\n");
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut out = Vec::with_capacity(raw.len() + 256);
    for (name, value) in set {
        if let Some(v) = value {
            out.extend_from_slice(format!("{name}: {v}").as_bytes());
            out.extend_from_slice(eol);
        }
    }
    let named = |line: &[u8]| {
        set.iter().any(|(name, _)| {
            let n = name.len();
            line.len() > n && line[n] == b':' && line[..n].eq_ignore_ascii_case(name.as_bytes())
        })
    };
    let mut in_headers = true;
    let mut skipping = false;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if in_headers {
            if line.trim_ascii_end().is_empty() {
                in_headers = false;
            } else if skipping && (line[0] == b' ' || line[0] == b'\t') {
                continue;
            } else {
                skipping = named(line);
                if skipping {
                    continue;
                }
            }
        }
        out.extend_from_slice(line);
    }
    out
}

// ---------------------------------------------------------------------------
// Randomness and the year's curve
// ---------------------------------------------------------------------------

/// How much mail arrives in an hour of the week, relative to a weekday's
/// working hour, in the agents' zone.
fn hour_weight(weekday: i8, hour: i8) -> f64 {
    let day = match weekday {
        6 => 0.6,  // Saturday
        7 => 0.25, // Sunday
        _ => 1.0,
    };
    let hour = match hour {
        9..=18 => 1.0,
        8 | 19 | 20 => 0.5,
        21 | 22 => 0.2,
        _ => 0.03,
    };
    day * hour
}

/// The year's arrival curve: cumulative weight at the end of each hour.
struct Curve {
    start: i64,
    cumulative: Vec<f64>,
}

impl Curve {
    fn new(start: i64, end: i64, tz: &TimeZone) -> Curve {
        let mut total = 0.0;
        let cumulative = (start..end)
            .step_by(HOUR as usize)
            .map(|t| {
                let z = ts(t).to_zoned(tz.clone());
                total += hour_weight(z.weekday().to_monday_one_offset(), z.hour());
                total
            })
            .collect();
        Curve { start, cumulative }
    }

    /// The moment below which a share `u` (0..1) of the year's mail arrives.
    fn at(&self, u: f64) -> i64 {
        let total = *self.cumulative.last().unwrap_or(&1.0);
        let w = u * total;
        let h = self.cumulative.partition_point(|&c| c <= w);
        let before = if h == 0 { 0.0 } else { self.cumulative[h - 1] };
        let within = (w - before) / (self.cumulative[h.min(self.cumulative.len() - 1)] - before);
        self.start + h as i64 * HOUR + (within.clamp(0.0, 0.9999) * HOUR as f64) as i64
    }
}

/// `n` arrival times over the curve, in order: the order statistics of `n`
/// uniform draws (cumulative sums of exponentials, normalised), so that
/// arrivals bunch and thin as independent ones do.
struct Arrivals {
    rng: Rng,
    left: usize,
    sum: f64,
    total: f64,
}

impl Arrivals {
    fn new(seed: u64, n: usize) -> Arrivals {
        let mut rng = Rng(seed);
        let total = (0..=n).map(|_| rng.exp()).sum();
        Arrivals {
            rng: Rng(seed),
            left: n,
            sum: 0.0,
            total,
        }
    }

    /// The next arrival's share of the year.
    fn next(&mut self) -> Option<f64> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.sum += self.rng.exp();
        Some(self.sum / self.total)
    }
}

fn ts(t: i64) -> Timestamp {
    Timestamp::from_second(t).expect("a time within jiff's range")
}

// ---------------------------------------------------------------------------
// The simulated mail
// ---------------------------------------------------------------------------

/// A case as its follow-ups need it.
struct CaseRef {
    template: usize,
    agent: usize,
    vendor: Option<usize>,
    order: String,
    message_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Open,
    Reply,
    Status,
    Resolve,
    AutoReply,
    Join,
    Noise,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Open,
        Kind::Reply,
        Kind::Status,
        Kind::Resolve,
        Kind::AutoReply,
        Kind::Join,
        Kind::Noise,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Open => "escalations",
            Kind::Reply => "replies",
            Kind::Status => "status updates",
            Kind::Resolve => "resolutions",
            Kind::AutoReply => "out-of-office",
            Kind::Join => "joins",
            Kind::Noise => "other mail",
        }
    }
}

/// A message due to arrive.
struct Event {
    at: i64,
    seq: u64,
    kind: Kind,
    case: Option<Rc<CaseRef>>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Event {
    /// Reversed: the earliest is the greatest, for a min-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

fn agent(n: usize) -> String {
    format!("agent{n:03}@example.com")
}

fn vendor(n: usize) -> String {
    format!("VND-{n:05}")
}

// ---------------------------------------------------------------------------
// The simulation
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Totals {
    messages: usize,
    by_kind: [usize; Kind::ALL.len()],
    batches: usize,
    opened: usize,
    updated: usize,
    ignored: usize,
    quarantined: usize,
    already_seen: usize,
    queued: usize,
    sent: usize,
    overdue: usize,
    digests: usize,
    retention_runs: usize,
    sent_dropped: usize,
    seen_pruned: usize,
    archived: usize,
    items_removed: usize,
    originals_removed: usize,
}

/// What was measured since the last row.
#[derive(Default)]
struct Interval {
    batch_ms: Vec<f64>,
    batch_messages: usize,
    outbox_us: Vec<f64>,
    clock_ms: Vec<f64>,
    retention_ms: Vec<f64>,
}

/// One row of the table: the state after `cases` cases.
struct Row {
    cases: usize,
    at: i64,
    messages: usize,
    db_bytes: u64,
    rss_kb: u64,
    hwm_kb: u64,
    batch_median_ms: f64,
    batch_p99_ms: f64,
    per_batch: f64,
    outbox_median_us: f64,
    outbox_p99_us: f64,
    clock_median_ms: f64,
    retention_median_ms: f64,
    open: usize,
    wall_s: f64,
}

struct Sim<'a> {
    config: &'a Config,
    settings: &'a Settings,
    corpus: &'a Corpus,
    identity: Identity,
    own: Vec<String>,
    store: Store,
    db: PathBuf,
    tz: TimeZone,
    curve: Curve,
    year_start: i64,
    rng: Rng,
    openers: Arrivals,
    next_open: Option<i64>,
    noise: Arrivals,
    next_noise: Option<i64>,
    heap: BinaryHeap<Event>,
    seq: u64,
    cases: usize,
    /// A row every this many cases: a tenth of the run.
    report_every: usize,
    window: i64,
    cursor: Cursor,
    uid: u32,
    case_lock: Mutex<()>,
    totals: Totals,
    interval: Interval,
    started: Instant,
}

impl<'a> Sim<'a> {
    fn new(
        config: &'a Config,
        settings: &'a Settings,
        corpus: &'a Corpus,
        db: &Path,
        year_start: i64,
        cases: usize,
        window: i64,
    ) -> Sim<'a> {
        let identity = Identity::from_config(settings).expect("identity");
        let tz = TimeZone::get(ZONE).expect("the agents' zone");
        let curve = Curve::new(year_start, year_start + 365 * DAY, &tz);
        let store = Store::open(db, settings.daemon.cache.0).expect("open the store");
        let mut openers = Arrivals::new(SEED ^ 1, cases);
        let mut noise = Arrivals::new(SEED ^ 2, NOISE_PER_YEAR * cases / CASES);
        let next_open = openers.next().map(|u| curve.at(u));
        let next_noise = noise.next().map(|u| curve.at(u));
        Sim {
            own: own_addresses(settings, &identity),
            identity,
            config,
            settings,
            corpus,
            store,
            db: db.to_path_buf(),
            tz,
            curve,
            year_start,
            rng: Rng(SEED),
            openers,
            next_open,
            noise,
            next_noise,
            heap: BinaryHeap::new(),
            seq: 0,
            cases: 0,
            report_every: (cases / 10).max(1),
            window,
            cursor: Cursor {
                uid_validity: 1,
                last_uid: 0,
            },
            uid: 0,
            case_lock: Mutex::new(()),
            totals: Totals::default(),
            interval: Interval::default(),
            started: Instant::now(),
        }
    }

    fn mailbox(&self) -> &'a MailboxSection {
        &self.settings.mailboxes[0]
    }

    /// Runs the year to `year_end`; a row every tenth of the cases,
    /// and one at the end.
    fn run(&mut self, year_end: i64) -> Vec<Row> {
        let mut rows = Vec::new();
        let every = self.report_every;
        let mut next_report = every;
        let mut next_clock = self.year_start + CLOCK_EVERY;
        let mut next_midnight = self.year_start + DAY;
        println!(
            "\n{:>7} {:<16} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>9} {:>9} {:>8} {:>8} {:>6} {:>7}",
            "cases",
            "simulated to",
            "messages",
            "db MB",
            "VmRSS",
            "VmHWM",
            "batch med",
            "batch p99",
            "msg/b",
            "outbox µs",
            "outbox p99",
            "clock ms",
            "retain",
            "open",
            "wall s"
        );
        loop {
            let mail = self.next_mail_at();
            let t = mail.unwrap_or(i64::MAX).min(next_clock).min(next_midnight);
            if t > year_end {
                break;
            }
            if t == next_midnight {
                self.midnight(t);
                next_midnight += DAY;
            } else if t == next_clock {
                self.clock(t);
                next_clock += CLOCK_EVERY;
            } else {
                let limit = (t + self.window).min(next_clock - 1).min(next_midnight - 1);
                let mut events = Vec::new();
                while events.len() < self.mailbox().batch_size
                    && let Some(e) = self.pop_mail(limit)
                {
                    events.push(e);
                }
                let at = events.last().map_or(t, |e| e.at);
                self.batch(&events, at);
                self.deliver(at);
                if self.cases >= next_report {
                    rows.push(self.row(at));
                    next_report += every;
                }
            }
        }
        if rows.last().is_none_or(|r| r.cases != self.cases) {
            rows.push(self.row(year_end));
        }
        rows
    }

    fn next_mail_at(&self) -> Option<i64> {
        [
            self.next_open,
            self.next_noise,
            self.heap.peek().map(|e| e.at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next message arriving at or before `limit`.
    fn pop_mail(&mut self, limit: i64) -> Option<Event> {
        let at = self.next_mail_at().filter(|&at| at <= limit)?;
        self.seq += 1;
        let seq = self.seq;
        if self.heap.peek().is_some_and(|e| e.at == at) {
            return self.heap.pop();
        }
        if self.next_open == Some(at) {
            self.next_open = self.openers.next().map(|u| self.curve.at(u));
            let case = self.new_case(seq);
            self.plan(&case, at);
            return Some(Event {
                at,
                seq,
                kind: Kind::Open,
                case: Some(case),
            });
        }
        self.next_noise = self.noise.next().map(|u| self.curve.at(u));
        Some(Event {
            at,
            seq,
            kind: Kind::Noise,
            case: None,
        })
    }

    fn new_case(&mut self, seq: u64) -> Rc<CaseRef> {
        self.cases += 1;
        let template = self.rng.below(self.corpus.openers.len());
        let t = &self.corpus.openers[template];
        let vendor = t.vendor.is_some().then(|| self.pick_vendor());
        Rc::new(CaseRef {
            template,
            agent: self.rng.below(AGENTS),
            vendor,
            order: format!("{}S{}", t.order.as_deref().unwrap_or("X"), self.cases),
            message_id: format!("soak.{seq}@agents.example.com"),
        })
    }

    fn pick_vendor(&mut self) -> usize {
        if self.rng.chance(REPEAT_SHARE) {
            self.rng.below(REPEAT_VENDORS)
        } else {
            REPEAT_VENDORS + self.rng.below(VENDORS - REPEAT_VENDORS)
        }
    }

    /// What will follow a case opened at `t0`.
    fn plan(&mut self, case: &Rc<CaseRef>, t0: i64) {
        let p = self.rng.unit();
        let resolve = if p < 0.97 {
            Some(t0 + self.rng.log_uniform(2 * HOUR, 7 * DAY))
        } else if p < 0.995 {
            Some(t0 + self.rng.log_uniform(7 * DAY, 56 * DAY))
        } else {
            None
        }
        .map(|t| self.working(t));
        let before_resolved = |t: i64| resolve.is_none_or(|r| t < r);
        if self.rng.chance(0.25) {
            let at = t0 + self.rng.log_uniform(600, 2 * DAY);
            let at = self.working(at);
            if before_resolved(at) {
                self.follow(case, Kind::Reply, at);
            }
        }
        if self.rng.chance(0.15) {
            let at = t0 + self.rng.log_uniform(1800, 3 * DAY);
            let at = self.working(at);
            if before_resolved(at) {
                self.follow(case, Kind::Status, at);
            }
        }
        if self.rng.chance(0.03) {
            let at = t0 + 60 + self.rng.below(240) as i64;
            self.follow(case, Kind::AutoReply, at);
        }
        if self.rng.chance(0.05) {
            let at = t0 + self.rng.log_uniform(HOUR, 5 * DAY);
            let at = self.working(at);
            self.follow(case, Kind::Join, at);
            if !before_resolved(at) {
                // The join reopened the case.
                let again = at + self.rng.log_uniform(2 * HOUR, 3 * DAY);
                let again = self.working(again);
                self.follow(case, Kind::Resolve, again);
            }
        }
        if let Some(at) = resolve {
            self.follow(case, Kind::Resolve, at);
        }
    }

    fn follow(&mut self, case: &Rc<CaseRef>, kind: Kind, at: i64) {
        self.seq += 1;
        self.heap.push(Event {
            at,
            seq: self.seq,
            kind,
            case: Some(case.clone()),
        });
    }

    /// `t`, or the next morning when it falls at night (9:00 to 12:00 in
    /// the agents' zone).
    fn working(&mut self, t: i64) -> i64 {
        let z = ts(t).to_zoned(self.tz.clone());
        if (9..20).contains(&z.hour()) {
            return t;
        }
        let day = if z.hour() >= 20 {
            z.date().tomorrow().expect("a day after")
        } else {
            z.date()
        };
        let nine = day
            .at(9, 0, 0, 0)
            .to_zoned(self.tz.clone())
            .expect("9:00 exists")
            .timestamp()
            .as_second();
        nine + self.rng.below(3 * HOUR as usize) as i64
    }

    /// The bytes of a message as it arrives.
    fn raw(&mut self, e: &Event) -> Vec<u8> {
        let c = self.corpus;
        let message_id = format!("soak.{}@agents.example.com", e.seq);
        let date = ts(e.at)
            .to_zoned(self.tz.clone())
            .strftime("%a, %d %b %Y %H:%M:%S %z")
            .to_string();
        let Some(case) = e.case.as_deref() else {
            let t = &c.noise[self.rng.below(c.noise.len())];
            return t.copy(&Copy {
                message_id: &message_id,
                date: &date,
                ..Copy::default()
            });
        };
        let sender = agent(case.agent);
        let vendor_id = case.vendor.map(vendor);
        let in_thread = Copy {
            message_id: &message_id,
            date: &date,
            thread: Some(&case.message_id),
            order: Some(&case.order),
            ..Copy::default()
        };
        let pick = |rng: &mut Rng, v: &'a [Template]| &v[rng.below(v.len())];
        match e.kind {
            Kind::Open => c.openers[case.template].copy(&Copy {
                message_id: &case.message_id,
                date: &date,
                order: Some(&case.order),
                sender: Some(&sender),
                vendor: vendor_id.as_deref(),
                ..Copy::default()
            }),
            Kind::Join => {
                let t = pick(&mut self.rng, &c.openers);
                let other = agent(self.rng.below(AGENTS));
                let v = vendor_id.unwrap_or_else(|| vendor(self.pick_vendor()));
                t.copy(&Copy {
                    message_id: &message_id,
                    date: &date,
                    order: Some(&case.order),
                    sender: Some(&other),
                    vendor: Some(&v),
                    ..Copy::default()
                })
            }
            Kind::Reply => pick(&mut self.rng, &c.replies).copy(&Copy {
                sender: Some(&sender),
                ..in_thread
            }),
            Kind::Status => pick(&mut self.rng, &c.statuses).copy(&in_thread),
            Kind::Resolve => pick(&mut self.rng, &c.resolutions).copy(&in_thread),
            Kind::AutoReply => pick(&mut self.rng, &c.auto_replies).copy(&in_thread),
            Kind::Noise => unreachable!("other mail belongs to no case"),
        }
    }

    /// One batch through intake and the store, at `t`, as the daemon's
    /// mailbox task runs it (without IMAP).
    fn batch(&mut self, events: &[Event], t: i64) {
        let raws: Vec<(u32, Vec<u8>)> = events
            .iter()
            .map(|e| {
                self.uid += 1;
                (self.uid, self.raw(e))
            })
            .collect();
        for e in events {
            self.totals.by_kind[Kind::ALL.iter().position(|k| *k == e.kind).unwrap_or(0)] += 1;
        }
        let arrivals: Vec<Arrival<'_>> = raws
            .iter()
            .map(|(uid, raw)| Arrival { uid: *uid, raw })
            .collect();
        let now = ts(t);
        let year = now.to_zoned(TimeZone::UTC).year();
        let m = self.mailbox();
        let ix = Intake {
            config: self.config,
            settings: self.settings,
            identity: &self.identity,
            own: &self.own,
            lookup: &self.store,
        };
        let store = &self.store;
        let started = Instant::now();
        let guard = self.case_lock.lock().expect("the case lock");
        let mut reserve =
            |n: usize| -> Result<Vec<String>, LookupError> { Ok(store.reserve_case_ids(year, n)?) };
        let batch = intake::process(&ix, m, self.cursor, &arrivals, self.uid, now, &mut reserve)
            .expect("intake");
        let committed = store.commit(&batch).expect("commit");
        drop(guard);
        store.clear_pending(&m.name).expect("clear_pending");
        let took = started.elapsed();
        self.cursor = batch.cursor;
        self.interval.batch_ms.push(ms(took));
        self.interval.batch_messages += events.len();
        self.totals.batches += 1;
        self.totals.messages += events.len();
        for item in &batch.items {
            match &item.outcome {
                BatchOutcome::Case { outgoing, .. } => {
                    self.totals.opened += 1;
                    self.totals.queued += outgoing.len();
                }
                BatchOutcome::Update { outgoing, .. } => {
                    self.totals.updated += 1;
                    self.totals.queued += outgoing.len();
                }
                BatchOutcome::Ignored { .. } => self.totals.ignored += 1,
                BatchOutcome::Quarantined { .. } => self.totals.quarantined += 1,
            }
        }
        self.totals.already_seen += committed
            .iter()
            .filter(|c| matches!(c, Committed::AlreadySeen(_)))
            .count();
    }

    /// The outbox's side of delivering what is due at `t`, with an SMTP
    /// server that accepts everything: each item's bytes read, then the
    /// item marked sent, as the daemon's outbox task records a 250.
    fn deliver(&mut self, t: i64) {
        loop {
            let due = self.store.outbox_due(ts(t), 100).expect("outbox_due");
            if due.is_empty() {
                break;
            }
            for item in due {
                let started = Instant::now();
                let raw = self.store.outbox_raw(item.id).expect("an item's bytes");
                std::hint::black_box(raw);
                self.store.mark_sent(item.id, ts(t)).expect("mark_sent");
                self.interval.outbox_us.push(ms(started.elapsed()) * 1e3);
                self.totals.sent += 1;
            }
        }
        std::hint::black_box(self.store.next_due().expect("next_due"));
    }

    /// The clock's work at `t`: the reply counts pruned (the outbox task
    /// does it hourly), overdue cases re-escalated and digests queued (the
    /// clock task), then the outbox woken.
    fn clock(&mut self, t: i64) {
        let now = ts(t);
        let started = Instant::now();
        self.store
            .prune_replies(ts(t - DAY))
            .expect("prune the reply counts");
        self.totals.overdue += self.overdue(now);
        let lock = &self.case_lock;
        self.totals.digests +=
            mailtriage::daemon::queue_due(self.config, &self.store, &self.identity, now, || {
                lock.lock().expect("the case lock")
            })
            .expect("digests");
        self.interval.clock_ms.push(ms(started.elapsed()));
        self.deliver(t);
    }

    /// The daemon's overdue pass (daemon/clock.rs): every open case older
    /// than its risk allows, re-escalated once.
    fn overdue(&self, now: Timestamp) -> usize {
        let _guard = self.case_lock.lock().expect("the case lock");
        let ix = Intake {
            config: self.config,
            settings: self.settings,
            identity: &self.identity,
            own: &self.own,
            lookup: &self.store,
        };
        let mut n = 0;
        for id in self.store.open_case_ids().expect("open cases") {
            let Some(rec) = self.store.case(&id).expect("a case") else {
                continue;
            };
            if let Some((rec, notice)) = intake::overdue(&ix, &rec, now) {
                self.store
                    .update_case(&rec, &[notice], now)
                    .expect("an overdue re-escalation");
                n += 1;
            }
        }
        n
    }

    fn midnight(&mut self, t: i64) {
        let started = Instant::now();
        let r = retention_pass(&self.store, self.settings, &self.db, &self.case_lock, ts(t));
        self.interval.retention_ms.push(ms(started.elapsed()));
        self.totals.retention_runs += 1;
        self.totals.sent_dropped += r.sent_dropped;
        self.totals.seen_pruned += r.seen_pruned;
        self.totals.archived += r.cases_archived;
        self.totals.items_removed += r.items_removed;
        self.totals.originals_removed += r.originals_removed;
        self.deliver(t);
    }

    /// The row after the batch at `t`, printed; starts a new interval.
    fn row(&mut self, t: i64) -> Row {
        let i = std::mem::take(&mut self.interval);
        let row = Row {
            cases: self.cases,
            at: t,
            messages: self.totals.messages,
            db_bytes: dir_size(&self.db),
            rss_kb: status_kb("self", "VmRSS").unwrap_or(0),
            hwm_kb: status_kb("self", "VmHWM").unwrap_or(0),
            batch_median_ms: pct(&i.batch_ms, 0.5),
            batch_p99_ms: pct(&i.batch_ms, 0.99),
            per_batch: i.batch_messages as f64 / i.batch_ms.len().max(1) as f64,
            outbox_median_us: pct(&i.outbox_us, 0.5),
            outbox_p99_us: pct(&i.outbox_us, 0.99),
            clock_median_ms: pct(&i.clock_ms, 0.5),
            retention_median_ms: pct(&i.retention_ms, 0.5),
            open: self.store.open_case_ids().map_or(0, |v| v.len()),
            wall_s: self.started.elapsed().as_secs_f64(),
        };
        row.print();
        row
    }

    fn summary(&self, rows: &[Row], wall: Duration) {
        let t = &self.totals;
        println!(
            "\nsimulated {} to {} in {:.0} s: {} messages ({}) in {} batches ({:.2} a batch)",
            day(self.year_start),
            day(rows.last().map_or(self.year_start, |r| r.at)),
            wall.as_secs_f64(),
            t.messages,
            Kind::ALL
                .iter()
                .zip(t.by_kind)
                .map(|(k, n)| format!("{n} {}", k.name()))
                .collect::<Vec<_>>()
                .join(", "),
            t.batches,
            t.messages as f64 / t.batches.max(1) as f64,
        );
        println!(
            "intake: {} cases opened, {} updates, {} left alone, {} quarantined, {} seen before; \
             {} outgoing messages queued by intake, {} overdue re-escalations, {} digests; {} \
             delivered (marked sent)",
            t.opened,
            t.updated,
            t.ignored,
            t.quarantined,
            t.already_seen,
            t.queued,
            t.overdue,
            t.digests,
            t.sent,
        );
        println!(
            "retention: {} daily passes; bytes of {} delivered items dropped, {} seen entries \
             pruned, {} resolved cases archived with {} outbox items and {} originals",
            t.retention_runs,
            t.sent_dropped,
            t.seen_pruned,
            t.archived,
            t.items_removed,
            t.originals_removed,
        );
        println!(
            "written: {:.1} GB through write(2), {:.1} GB to the disk (/proc/self/io wchar, \
             write_bytes)",
            io_bytes("wchar") as f64 / 1e9,
            io_bytes("write_bytes") as f64 / 1e9,
        );
        let items = self.store.outbox_items().map_or(0, |v| v.len());
        let pending = self.store.outbox_due(ts(i64::from(i32::MAX)), usize::MAX);
        println!(
            "the store at the end: {} cases, {} outbox items ({} still pending), {} open cases",
            self.store.cases().count(),
            items,
            pending.map_or(0, |v| v.len()),
            self.store.open_case_ids().map_or(0, |v| v.len()),
        );
    }
}

impl Row {
    fn print(&self) {
        println!(
            "{:>7} {:<16} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>9.2} {:>9.2} {:>6.2} {:>9.0} {:>9.0} {:>8.1} {:>8.1} {:>6} {:>7.0}",
            self.cases,
            minute(self.at),
            self.messages,
            self.db_bytes as f64 / 1e6,
            self.rss_kb as f64 / 1024.0,
            self.hwm_kb as f64 / 1024.0,
            self.batch_median_ms,
            self.batch_p99_ms,
            self.per_batch,
            self.outbox_median_us,
            self.outbox_p99_us,
            self.clock_median_ms,
            self.retention_median_ms,
            self.open,
            self.wall_s,
        );
    }
}

/// The addresses the daemon never answers (daemon/mod.rs): its own, the
/// mailboxes', their reply addresses, the SMTP user.
fn own_addresses(settings: &Settings, identity: &Identity) -> Vec<String> {
    let mut own = vec![identity.from.email.to_string()];
    for m in &settings.mailboxes {
        if m.user.contains('@') {
            own.push(m.user.clone());
        }
        own.extend(m.reply_address().map(str::to_string));
    }
    own.extend(
        settings
            .smtp
            .user
            .iter()
            .filter(|u| u.contains('@'))
            .cloned(),
    );
    own
}

/// The daily retention pass at `now`, as the daemon's retention task runs
/// it: `[retention]` of the bench's mailtriage.toml (the defaults), the
/// archive beside the database, the case lock taken a batch at a time.
fn retention_pass(
    store: &Store,
    settings: &Settings,
    db: &Path,
    lock: &Mutex<()>,
    now: Timestamp,
) -> RetentionReport {
    let r = &settings.retention;
    let retention = Retention {
        keep_sent: r.keep_sent(),
        keep_resolved: r.keep_resolved(),
        keep_seen: r.keep_seen(),
        archive: r.archive_path(db),
        batch: Retention::BATCH,
    };
    store
        .retention_pass_with(&retention, now, || lock.lock().expect("the case lock"))
        .expect("the retention pass")
}

// ---------------------------------------------------------------------------
// The real daemon on the year's database
// ---------------------------------------------------------------------------

/// What the restarted daemon showed.
struct Idle {
    label: &'static str,
    ready_s: f64,
    idle_s: f64,
    rss_kb: u64,
    hwm_kb: u64,
}

/// How long the daemon must have logged nothing and sent nothing to count
/// as idle.
const QUIET: Duration = Duration::from_secs(5);
const RESTART_DEADLINE: Duration = Duration::from_secs(180);

/// Starts the release binary on the year's database, against a Dovecot with
/// an empty mailbox and an SMTP capture; waits until it is idle and reads
/// its memory.
fn restart_daemon(dir: &Path, db: &Path, label: &'static str) -> Idle {
    let d = Dovecot::start(&[(USER, PASSWORD)]);
    let s = SmtpCapture::start();
    write_toml(dir, db, d.port(), s.port());
    let mut daemon = DaemonCommand::new(env!("CARGO_BIN_EXE_mailtriage"))
        .log_format(LogFormat::Json)
        .filter("info")
        .spawn(dir);
    let deadline = Instant::now() + RESTART_DEADLINE;
    let log = daemon.log_path().to_path_buf();
    let pid = daemon.pid().to_string();
    let mut timeline: Vec<(f64, u64)> = Vec::new();
    let mut sample = |started: Instant| {
        let t = started.elapsed().as_secs_f64();
        if timeline.last().is_none_or(|(at, _)| t - at >= 0.5) {
            timeline.push((t, status_kb(&pid, "VmRSS").unwrap_or(0)));
        }
    };
    let ready_s = loop {
        sample(daemon.started());
        if daemon.count_lines("every mailbox has reported; ready") > 0 {
            break daemon.started().elapsed().as_secs_f64();
        }
        daemon.assert_running();
        assert!(
            Instant::now() < deadline,
            "the daemon was not ready within {RESTART_DEADLINE:?}:\n{}",
            daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Idle: nothing logged and nothing sent for QUIET.
    let mut seen = (0, 0);
    let mut quiet_since = Instant::now();
    loop {
        sample(daemon.started());
        let now = (
            fs::metadata(&log).map_or(0, |m| m.len()),
            s.messages().len(),
        );
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= QUIET {
            break;
        }
        daemon.assert_running();
        assert!(
            Instant::now() < deadline,
            "the daemon did not settle within {RESTART_DEADLINE:?}:\n{}",
            daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let idle = Idle {
        label,
        ready_s,
        idle_s: daemon.started().elapsed().as_secs_f64(),
        rss_kb: status_kb(daemon.pid(), "VmRSS").unwrap_or(0),
        hwm_kb: status_kb(daemon.pid(), "VmHWM").unwrap_or(0),
    };
    let clean = daemon.try_terminate(Duration::from_secs(30)).is_some();
    let text = daemon.run_log();
    let troubles: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
        .take(5)
        .collect();
    println!(
        "\n{label}: `mailtriage run` (release binary, JSON log at info) on the year's database \
         ({:.1} MB), an empty mailbox (Dovecot) and an SMTP capture: ready after {:.2} s, idle \
         (nothing logged or sent for {} s) at {:.1} s; it sent {} messages meanwhile (what \
         was due: the day's digest, overdue notices); VmRSS {:.1} MB, VmHWM {:.1} MB; stopped by \
         SIGTERM: {}",
        dir_size(db) as f64 / 1e6,
        idle.ready_s,
        QUIET.as_secs(),
        idle.idle_s,
        s.messages().len(),
        idle.rss_kb as f64 / 1024.0,
        idle.hwm_kb as f64 / 1024.0,
        if clean { "yes" } else { "no (killed)" },
    );
    println!(
        "  its VmRSS from the start (s: MB): {}",
        timeline
            .iter()
            .map(|(t, kb)| format!("{t:.1}: {:.0}", *kb as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for l in troubles {
        println!("  the daemon's log: {l}");
    }
    idle
}

// ---------------------------------------------------------------------------
// Targets and measures
// ---------------------------------------------------------------------------

fn targets(rows: &[Row], idle: &[Idle], final_db_mb: f64) {
    let mb = |kb: u64| kb as f64 / 1024.0;
    let db_max = rows
        .iter()
        .map(|r| r.db_bytes as f64 / 1e6)
        .fold(final_db_mb, f64::max);
    let hwm = rows.iter().map(|r| mb(r.hwm_kb)).fold(0.0, f64::max);
    let last = rows.last().expect("at least one row");
    let half = rows
        .iter()
        .find(|r| r.cases * 2 >= last.cases)
        .expect("a row at half way");
    let first = &rows[0];
    let plateau = mb(last.rss_kb) / mb(half.rss_kb);
    let flat = last.batch_median_ms / first.batch_median_ms;
    println!("\n== targets");
    println!(
        "  database on disk at most {db_max:.1} MB (target: <= {TARGET_DB_MB:.0} MB throughout): \
         {}",
        verdict(db_max <= TARGET_DB_MB)
    );
    println!(
        "  RSS at most {hwm:.1} MB (VmHWM; target: <= {TARGET_RSS_MB:.0} MB throughout): {}",
        verdict(hwm <= TARGET_RSS_MB)
    );
    println!(
        "  VmRSS at {} cases {:.1} MB = {plateau:.2} x at {} cases {:.1} MB (target: <= \
         {TARGET_PLATEAU:.1} x): {}",
        last.cases,
        mb(last.rss_kb),
        half.cases,
        mb(half.rss_kb),
        verdict(plateau <= TARGET_PLATEAU)
    );
    idle_verdicts(idle);
    println!(
        "  batch time: median {:.2} ms over the last {} cases = {flat:.2} x the first {}'s \
         {:.2} ms (target: flat, <= {TARGET_FLAT:.1} x): {}",
        last.batch_median_ms,
        first.cases,
        first.cases,
        first.batch_median_ms,
        verdict(flat <= TARGET_FLAT)
    );
}

/// A counter of /proc/self/io, in bytes.
fn io_bytes(key: &str) -> u64 {
    fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn day(t: i64) -> String {
    ts(t).strftime("%Y-%m-%d").to_string()
}

fn minute(t: i64) -> String {
    ts(t).strftime("%Y-%m-%d %H:%M").to_string()
}
