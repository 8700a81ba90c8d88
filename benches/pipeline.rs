//! Throughput of the triage pipeline against mail-parser alone.
//!
//! Run with `cargo bench --bench pipeline`. The corpus is every
//! `fixtures/*.eml`, replicated round-robin to 10,000 messages held in memory
//! (`MAILTRIAGE_BENCH_MESSAGES` changes the count); when there are no
//! fixtures, a small built-in set of escalation emails is used instead, and
//! the header line says which corpus ran.
//!
//! Three measures, single-threaded, each a warm-up pass and then at least
//! five timed passes over the whole corpus (more until the measure has run
//! for a second), reported as the median pass with min..max:
//!
//! 1. `mail-parser alone`: `MessageParser::default().parse` and reading the
//!    subject and the first text body. This is the floor: no triage can be
//!    cheaper than reading the MIME structure.
//! 2. `full pipeline`: [`Triage::parse`] (parse, extract, classify) and
//!    [`Router::route`] (the routing decision), what the daemon does for
//!    every message it receives. The targets are at most 2.0x the cost of
//!    mail-parser alone and at least 50,000 messages/s.
//! 3. `full pipeline + render`: as 2, plus rendering every action's template
//!    with minijinja. Rendering is reported separately because it happens
//!    only when mail is actually sent (the case id exists only once the case
//!    is stored), not when a message is triaged, so it is not part of the
//!    triage throughput target.
//!
//! Messages that mail-parser or mailtriage rejects stay in the stream
//! (rejecting is work the pipeline does too); they are counted and reported,
//! never unwrapped.
//!
//! After the table, a split of the full pipeline into its steps (each timed
//! the same way, on inputs prepared beforehand) shows where the time beyond
//! mail-parser goes, per message.
//!
//! [`Triage::parse`]: mailtriage::case::Triage::parse
//! [`Router::route`]: mailtriage::route::Router::route

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use mail_parser::MessageParser;
use mailtriage::case::Case;
use mailtriage::classify::{self, Place};
use mailtriage::config::Config;
use mailtriage::extract;
use mailtriage::message::{self, Email};
use mailtriage::route::Action;

const DEFAULT_MESSAGES: usize = 10_000;
const MIN_PASSES: usize = 5;
const MIN_MEASURE_TIME: Duration = Duration::from_secs(1);
const MAX_PASSES: usize = 100_000;
const TARGET_RATIO: f64 = 2.0;
const TARGET_MSGS_PER_SEC: f64 = 50_000.0;
const MAILBOX: Option<&str> = Some("ops");
const CASE_ID: &str = "ESC-2026-000001";

/// Used when `fixtures/` holds no `.eml` file, so the bench always runs.
const BUILTIN: &[(&str, &str)] = &[
    (
        "builtin-incorrect-promise",
        "From: Priya Sharma <priya.sharma@example.com>\r\n\
To: ops.manager@example.com\r\n\
Subject: Escalation - Incorrect Promise Made to User (Order #CK482913)\r\n\
Date: Mon, 23 Nov 2026 09:41:00 +0530\r\n\
Message-ID: <builtin.01@mail.example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=\"utf-8\"\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Hi Team,\r\n\
\r\n\
A user has reported a concern based on an incorrect promise made during our\r\n\
interaction. Below are the details for your review and guidance:\r\n\
\r\n\
Customer Name: Rahul Verma\r\n\
Order ID / Lead ID: CK482913\r\n\
Phone Number: +91 98765 43210\r\n\
Device: iPhone XR, 128GB, Black\r\n\
Issue:\r\n\
User was promised \u{20b9}10,000 payout, but actual quote after inspection is \u{20b9}7,500.\r\n\
Promised By (If Known): Ankit Jain / Sales Team\r\n\
Customer Mood: Upset, Wants Resolution\r\n\
Suggested Resolution:\r\n\
Approve quoted amount, issue goodwill voucher, explain revised price.\r\n\
\r\n\
Please advise on the next steps so we can update the user accordingly.\r\n\
\r\n\
Best,\r\n\
Priya Sharma\r\n\
Customer Support/Sales\r\n",
    ),
    (
        "builtin-pickup-complaint",
        "From: Arjun Mehta <arjun.mehta@example.com>\r\n\
To: cx@example.com\r\n\
Subject: Escalation: Customer Pickup Complaint (Order #CK77120)\r\n\
Date: Tue, 24 Nov 2026 14:05:12 +0530\r\n\
Message-ID: <builtin.02@mail.example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=\"utf-8\"\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Hello Team,\r\n\
\r\n\
Category: Customer Pickup Complaint\r\n\
Customer Name & Number: Neha Kapoor, 98123 45678\r\n\
Order ID: CK77120\r\n\
Pickup Slot / Date: 24 Nov, 11 AM - 1 PM\r\n\
Vendor Name / ID: QuickPick Logistics / V-2231\r\n\
Issue Summary: The pickup executive arrived three hours late, was rude to the =\r\n\
customer and asked for extra money before collecting the device.\r\n\
Negative Experience Risk Rating: 4/5\r\n\
\r\n\
Kindly look into this on priority.\r\n\
\r\n\
Regards,\r\n\
Arjun\r\n",
    ),
    (
        "builtin-tier2-legal-html",
        "From: Sana Iqbal <sana.iqbal@example.com>\r\n\
To: ops@example.com\r\n\
Subject: Escalation - customer threatens legal action (Order #CK90311)\r\n\
Date: Wed, 25 Nov 2026 18:22:40 +0530\r\n\
Message-ID: <builtin.03@mail.example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/html; charset=\"utf-8\"\r\n\
\r\n\
<html><head><style>p{margin:0}</style></head><body>\r\n\
<p><b>Customer Name:</b> Vikram Rao</p>\r\n\
<p><b>Order ID:</b> CK90311</p>\r\n\
<p><b>Phone:</b> +91 99887 66554</p>\r\n\
<p><b>Issue:</b> Payment of &#8377;12,400 not received after 9 days. The customer\r\n\
says this is a scam, will file a complaint in consumer court and post a\r\n\
one star review on Trustpilot.</p>\r\n\
<p>Please advise.</p><p>Thanks,<br>Sana</p>\r\n\
</body></html>\r\n\
--b1--\r\n",
    ),
    (
        "builtin-status-update",
        "From: Ops Desk <ops.desk@example.com>\r\n\
To: support@example.com\r\n\
Subject: Re: Escalation [ESC-2026-000001] (Order #CK482913)\r\n\
Date: Thu, 26 Nov 2026 10:02:00 +0530\r\n\
Message-ID: <builtin.04@mail.example.com>\r\n\
In-Reply-To: <builtin.01@mail.example.com>\r\n\
References: <builtin.01@mail.example.com>\r\n\
Content-Type: text/plain; charset=\"utf-8\"\r\n\
\r\n\
Status: Resolved\r\n\
Remarks: payout corrected to the promised amount #payout_fixed\r\n\
\r\n\
On Mon, 23 Nov 2026 at 09:41, Priya Sharma <priya.sharma@example.com> wrote:\r\n\
> Customer Name: Rahul Verma\r\n\
> Order ID / Lead ID: CK482913\r\n",
    ),
];

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
    passes: usize,
}

/// One warm-up pass, then timed passes: at least `MIN_PASSES`, and more
/// until the timed passes add up to `MIN_MEASURE_TIME`.
fn measure(mut pass: impl FnMut() -> u64) -> Stats {
    black_box(pass());
    let mut times = Vec::new();
    let mut total = Duration::ZERO;
    while times.len() < MIN_PASSES || (total < MIN_MEASURE_TIME && times.len() < MAX_PASSES) {
        let start = Instant::now();
        black_box(pass());
        let t = start.elapsed();
        total += t;
        times.push(t);
    }
    times.sort();
    Stats {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
        passes: times.len(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn per_msg_us(s: &Stats, n: usize) -> f64 {
    s.median.as_secs_f64() * 1e6 / n as f64
}

fn print_row(name: &str, s: &Stats, n: usize, bytes: usize) {
    let secs = s.median.as_secs_f64();
    println!(
        "{name:<24} {:>8.0} {:>8.1} {:>9.1} ms   ({:.1}..{:.1}, {} passes)",
        n as f64 / secs,
        bytes as f64 / secs / 1e6,
        ms(s.median),
        ms(s.min),
        ms(s.max),
        s.passes,
    );
}

fn message_count() -> Result<usize, String> {
    match std::env::var("MAILTRIAGE_BENCH_MESSAGES") {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_MESSAGES),
        Err(e) => Err(format!("MAILTRIAGE_BENCH_MESSAGES: {e}")),
        Ok(v) => match v.trim().replace('_', "").parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "MAILTRIAGE_BENCH_MESSAGES: expected a positive number of messages, found {v:?}"
            )),
        },
    }
}

/// `(name, bytes)` of every `fixtures/*.eml`, by name; unreadable files are
/// reported and skipped.
fn load_fixtures(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml") && p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::read(&path) {
            Ok(bytes) => out.push((name, bytes)),
            Err(e) => eprintln!("skipping {}: {e}", path.display()),
        }
    }
    out
}

fn main() {
    let n = match message_count() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let config = match Config::builtin() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("the built-in config does not load: {e}");
            std::process::exit(1);
        }
    };

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut sources = load_fixtures(&dir);
    let corpus_name = if sources.is_empty() {
        sources = BUILTIN
            .iter()
            .map(|(name, text)| (name.to_string(), text.as_bytes().to_vec()))
            .collect();
        format!(
            "built-in ({} emails; no .eml in {})",
            BUILTIN.len(),
            dir.display()
        )
    } else {
        format!("{} fixtures from {}", sources.len(), dir.display())
    };

    // Check every source once, outside the timing: what does not parse is
    // reported, and stays in the stream.
    let mut mp_rejects = Vec::new();
    let mut mt_rejects = Vec::new();
    let mut render_failures = Vec::new();
    for (name, raw) in &sources {
        if MessageParser::default().parse(raw.as_slice()).is_none() {
            mp_rejects.push(name.as_str());
        }
        match config.triage.parse(raw) {
            Ok((email, case)) => {
                for action in config.router.route(&case, MAILBOX) {
                    if let Err(e) = mailtriage::letter::render(
                        &config.router,
                        &action,
                        &mailtriage::letter::Letter::new(CASE_ID, MAILBOX, &case, &email),
                    ) {
                        render_failures.push(format!("{name}: {e}"));
                    }
                }
            }
            Err(e) => mt_rejects.push(format!("{name} ({e})")),
        }
    }

    let messages: Vec<Vec<u8>> = (0..n)
        .map(|i| sources[i % sources.len()].1.clone())
        .collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();

    if cfg!(debug_assertions) {
        println!("warning: debug assertions are on; run `cargo bench --bench pipeline`");
    }
    println!("corpus: {corpus_name}");
    println!(
        "corpus: {} sources replicated to {n} messages, {:.1} MB, mean {} bytes",
        sources.len(),
        bytes as f64 / 1e6,
        bytes / n,
    );
    println!(
        "rejected: {} by mail-parser, {} by mailtriage::message::parse{}; render errors: {}",
        mp_rejects.len(),
        mt_rejects.len(),
        if mt_rejects.is_empty() {
            String::new()
        } else {
            format!(" [{}]", mt_rejects.join(", "))
        },
        render_failures.len(),
    );
    for f in &render_failures {
        println!("  render error: {f}");
    }
    println!();

    // 1. mail-parser alone.
    let parser_alone = measure(|| {
        let mut acc = 0u64;
        for raw in &messages {
            match MessageParser::default().parse(black_box(raw.as_slice())) {
                Some(msg) => {
                    black_box(msg.subject());
                    let body_len = msg.body_text(0).map_or(0, |t| t.len());
                    acc += black_box(body_len) as u64;
                }
                None => acc += 1,
            }
        }
        acc
    });

    // 2. Full pipeline: parse, extract, classify, route.
    let mut rejected_per_pass = 0u64;
    let mut actions_total = 0u64;
    let full = measure(|| {
        let mut acc = 0u64;
        let mut rejected = 0u64;
        for raw in &messages {
            match config.triage.parse(black_box(raw)) {
                Ok((email, case)) => {
                    let actions = config.router.route(&case, MAILBOX);
                    acc += actions.len() as u64;
                    black_box((&email, &case, &actions));
                }
                Err(e) => {
                    black_box(e);
                    rejected += 1;
                }
            }
        }
        actions_total = acc;
        rejected_per_pass = rejected;
        acc
    });

    // 3. Full pipeline and rendering of every action's template.
    let mut rendered_total = 0u64;
    let full_render = measure(|| {
        let mut rendered = 0u64;
        for raw in &messages {
            let Ok((email, case)) = config.triage.parse(black_box(raw)) else {
                continue;
            };
            let actions = config.router.route(&case, MAILBOX);
            for action in &actions {
                if let Ok(Some(r)) = mailtriage::letter::render(
                    &config.router,
                    action,
                    &mailtriage::letter::Letter::new(CASE_ID, MAILBOX, &case, &email),
                ) {
                    black_box(&r);
                    rendered += 1;
                }
            }
            black_box((&email, &case, &actions));
        }
        rendered_total = rendered;
        rendered
    });

    println!("measure                    msgs/s     MB/s   median pass   (min..max)");
    print_row("mail-parser alone", &parser_alone, n, bytes);
    print_row("full pipeline", &full, n, bytes);
    print_row("full pipeline + render", &full_render, n, bytes);
    let ratio = full.median.as_secs_f64() / parser_alone.median.as_secs_f64();
    println!(
        "cost ratio full / mail-parser: {ratio:.2} (target <= {TARGET_RATIO:.1}): {}",
        if ratio <= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );
    let full_rate = n as f64 / full.median.as_secs_f64();
    println!(
        "full pipeline target {TARGET_MSGS_PER_SEC:.0} msgs/s: {}",
        if full_rate >= TARGET_MSGS_PER_SEC {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "per pass: {rejected_per_pass} messages rejected, {actions_total} actions routed, \
         {rendered_total} templates rendered"
    );

    split(&config, &messages, &parser_alone, &full, &full_render);
}

/// The full pipeline's steps, each timed on its own over inputs prepared
/// beforehand, in microseconds per message.
fn split(
    config: &Config,
    messages: &[Vec<u8>],
    parser_alone: &Stats,
    full: &Stats,
    full_render: &Stats,
) {
    let n = messages.len();
    let emails: Vec<Email> = messages
        .iter()
        .filter_map(|raw| message::parse(raw).ok())
        .collect();
    let cases: Vec<Case> = emails.iter().map(|e| config.triage.case(e)).collect();
    let actions: Vec<Vec<Action>> = cases
        .iter()
        .map(|c| config.router.route(c, MAILBOX))
        .collect();
    let contents: Vec<extract::Content<'_>> = emails
        .iter()
        .map(|e| extract::author_content(&e.text, &e.subject))
        .collect();
    let keywords = config.triage.keywords();

    let message_parse = measure(|| {
        let mut acc = 0u64;
        for raw in messages {
            if let Ok(e) = message::parse(black_box(raw)) {
                acc += e.text.len() as u64;
                black_box(&e);
            }
        }
        acc
    });
    let case = measure(|| {
        let mut acc = 0u64;
        for e in &emails {
            let c = config.triage.case(black_box(e));
            acc += u64::from(c.risk);
            black_box(&c);
        }
        acc
    });
    let author_content = measure(|| {
        let mut acc = 0u64;
        for e in &emails {
            let c = extract::author_content(black_box(&e.text), &e.subject);
            acc += c.lines.len() as u64;
            black_box(&c);
        }
        acc
    });
    let extract_fields = measure(|| {
        let mut acc = 0u64;
        for (e, c) in emails.iter().zip(&contents) {
            let x = extract::extract(black_box(e), c);
            acc += x.tags.len() as u64;
            black_box(&x);
        }
        acc
    });
    let normalize = measure(|| {
        let mut acc = 0u64;
        for (e, c) in emails.iter().zip(&contents) {
            acc += black_box(classify::normalize(&e.subject)).len() as u64;
            acc += black_box(classify::normalize_parts(&c.lines)).len() as u64;
        }
        acc
    });
    let scan = measure(|| {
        let mut acc = 0u64;
        for (e, c) in emails.iter().zip(&contents) {
            let mut flags = Vec::new();
            keywords.scan(black_box(&e.subject), Place::Subject, &mut flags);
            keywords.scan_parts(black_box(&c.lines), Place::Body, &mut flags);
            acc += flags.len() as u64;
            black_box(&flags);
        }
        acc
    });
    let route = measure(|| {
        let mut acc = 0u64;
        for c in &cases {
            let a = config.router.route(black_box(c), MAILBOX);
            acc += a.len() as u64;
            black_box(&a);
        }
        acc
    });
    let render = measure(|| {
        let mut acc = 0u64;
        for ((e, c), acts) in emails.iter().zip(&cases).zip(&actions) {
            for a in acts {
                if let Ok(Some(r)) = mailtriage::letter::render(
                    &config.router,
                    a,
                    &mailtriage::letter::Letter::new(CASE_ID, MAILBOX, c, e),
                ) {
                    acc += r.body.len() as u64;
                    black_box(&r);
                }
            }
        }
        acc
    });

    let us = |s: &Stats| per_msg_us(s, n);
    let mp = us(parser_alone);
    let mparse = us(&message_parse);
    let case_us = us(&case);
    let parts = us(&author_content) + us(&extract_fields) + us(&scan);
    println!();
    println!("split of the full pipeline, median microseconds per message (of {n}):");
    println!("  mail-parser parse (+ subject, body_text(0)) {mp:>8.2}");
    println!("  mailtriage::message::parse                  {mparse:>8.2}");
    println!(
        "    beyond mail-parser (body/header copy)     {:>8.2}",
        mparse - mp
    );
    println!("  Triage::case (extract + classify)           {case_us:>8.2}");
    println!(
        "    extract::author_content                   {:>8.2}",
        us(&author_content)
    );
    println!(
        "    extract::extract                          {:>8.2}",
        us(&extract_fields)
    );
    println!(
        "    Keywords::scan (subject + body lines)     {:>8.2}",
        us(&scan)
    );
    println!(
        "      of which classify::normalize            {:>8.2}",
        us(&normalize)
    );
    println!(
        "    rest (flag floor/tier, required, clones)  {:>8.2}",
        case_us - parts
    );
    println!(
        "  Router::route                               {:>8.2}",
        us(&route)
    );
    println!(
        "  sum of steps (message::parse + case + route) {:>7.2}   vs full pipeline {:.2}",
        mparse + case_us + us(&route),
        us(full)
    );
    println!(
        "  Router::render, all actions of a message    {:>8.2}   (full + render - full: {:.2})",
        us(&render),
        us(full_render) - us(full)
    );
}
