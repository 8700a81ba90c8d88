//! A case over its life, against the real servers: replies in the thread
//! update it (status, tags, resolution, new threats that raise the tier and
//! forward to Tier 2 once), a second escalation of the same order joins it,
//! a vendor's third complaint within the window is reported once (however
//! each agent wrote the vendor, and whether the id came first), and a
//! case open longer than its risk allows is re-escalated once (on a clock
//! set by the test).

use std::path::Path;
use std::time::Duration;

use mail_parser::MessageParser;
use mailtriage::store::Store;
use mailtriage_testkit::{
    Captured, Dovecot, Extra, InProcess, SmtpCapture, by_rcpt, config_dir, database, fixture,
    subject, wait_until,
};

const WAIT: Duration = Duration::from_secs(30);

fn case_id_of(subject: &str) -> String {
    mailtriage::lifecycle::case_id_in_subject(subject)
        .unwrap_or_else(|| panic!("no case id in {subject:?}"))
}

/// Waits until `n` captured messages went to `rcpt` (other mail may arrive
/// meanwhile: digests and overdue notices when a test moves the clock);
/// returns everything captured.
fn wait_for_rcpt(s: &SmtpCapture, rcpt: &str, n: usize) -> Vec<Captured> {
    wait_until(
        WAIT,
        || by_rcpt(&s.messages(), rcpt).len() >= n,
        || {
            format!(
                "{} of {n} messages to {rcpt}; captured: {:?}",
                by_rcpt(&s.messages(), rcpt).len(),
                s.messages()
                    .iter()
                    .map(|c| (&c.rcpt_to, subject(c)))
                    .collect::<Vec<_>>()
            )
        },
    );
    s.messages()
}

/// Waits until `n` messages of the ops INBOX are \Seen (processed).
fn wait_processed(d: &Dovecot, n: usize) {
    wait_until(
        WAIT,
        || d.seen("ops", "INBOX").len() >= n,
        || format!("{} of {n} messages processed", d.seen("ops", "INBOX").len()),
    );
}

#[test]
fn a_thread_from_escalation_to_resolution() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    let daemon = InProcess::start(dir.path());

    // 1. The escalation: acknowledgement and the CX forward.
    d.append("ops", "INBOX", &fixture("06-pickup-rude-vendor.eml"));
    let got = s.wait_for(2, WAIT);
    let acks = by_rcpt(&got, "ravi.k@example.com");
    assert_eq!(acks.len(), 1);
    let ack = MessageParser::default().parse(&acks[0].raw).unwrap();
    let ack_id = ack.message_id().unwrap().to_string();
    let case_id = case_id_of(ack.subject().unwrap_or(""));
    assert_eq!(by_rcpt(&got, "cx@example.com").len(), 1);
    assert!(by_rcpt(&got, "tier2@example.com").is_empty());

    // 2. The agent answers the acknowledgement: the customer now threatens
    // a lawyer. Tier 2: forwarded to Tier 2 and the supervisor, once.
    let threat = |n: u32| {
        format!(
            "From: Ravi Kumar <ravi.k@example.com>\r\nTo: ops@example.com\r\nSubject: Re: Pickup complaint [{case_id}]\r\nMessage-ID: <threat{n}@mail.example.com>\r\nIn-Reply-To: <{ack_id}>\r\nReferences: <pickup-rude-vendor.06@mail.example.com> <{ack_id}>\r\n\r\nUpdate: the customer now says he will get a lawyer and sue us.\r\n"
        )
    };
    d.append("ops", "INBOX", threat(1).as_bytes());
    let got = s.wait_for(3, WAIT);
    let t2 = by_rcpt(&got, "tier2@example.com");
    assert_eq!(t2.len(), 1, "the raised case goes to Tier 2");
    assert_eq!(
        t2[0].rcpt_to,
        ["tier2@example.com", "supervisor.oncall@example.com"]
    );
    assert_eq!(case_id_of(&subject(t2[0])), case_id);
    assert!(subject(t2[0]).contains("Tier 2"), "{}", subject(t2[0]));

    // 3. The same threat again, and a second escalation of the same order
    // (a new message, not a reply): no second Tier-2 forward; the agent
    // is told which case it joined.
    d.append("ops", "INBOX", threat(2).as_bytes());
    let mut again = fixture("06-pickup-rude-vendor.eml");
    let text = String::from_utf8_lossy(&again).replace(
        "pickup-rude-vendor.06@mail.example.com",
        "pickup-rude-vendor.second@mail.example.com",
    );
    again = text.into_bytes();
    d.append("ops", "INBOX", &again);
    let got = s.wait_for(4, WAIT);
    let to_agent = by_rcpt(&got, "ravi.k@example.com");
    assert_eq!(
        to_agent.len(),
        2,
        "the acknowledgement and the joined reply"
    );
    let joined = MessageParser::default().parse(&to_agent[1].raw).unwrap();
    assert_eq!(case_id_of(joined.subject().unwrap_or("")), case_id);
    assert!(
        joined.body_text(0).unwrap().contains("already has a case"),
        "{:?}",
        joined.body_text(0)
    );

    // 4. CX resolves it, by the case id in the subject alone.
    let resolve = format!(
        "From: CX Support <cx.support@example.com>\r\nTo: ops@example.com\r\nSubject: Payout sorted [{case_id}]\r\nMessage-ID: <resolved@mail.example.com>\r\n\r\nVendor has been warned.\r\n\r\nStatus: Resolved\r\nResolution: Vendor warned, customer called back and calm.\r\n\r\n#vendor_warned\r\n"
    );
    d.append("ops", "INBOX", resolve.as_bytes());
    wait_processed(&d, 5);

    // The command line reads the case through the running daemon's control
    // socket (the daemon holds the database).
    let cli = |args: &[&str]| {
        mailtriage_testkit::cli_ok(env!("CARGO_BIN_EXE_mailtriage"), dir.path(), args)
    };
    let shown: serde_json::Value =
        serde_json::from_str(&cli(&["cases", "show", &case_id, "--json"])).unwrap();
    assert_eq!(shown["case"]["status"], "resolved", "{shown}");
    assert_eq!(shown["outbox"].as_array().map(Vec::len), Some(4), "{shown}");
    assert!(cli(&["cases", "list", "--open"]).contains("no cases"));
    daemon.shutdown();
    let got = s.messages();
    assert_eq!(
        got.len(),
        4,
        "nothing more was sent: {:?}",
        got.iter().map(subject).collect::<Vec<_>>()
    );

    let store = Store::open(&database(dir.path()), 1 << 20).unwrap();
    let cases: Vec<_> = store.cases().collect::<Result<_, _>>().unwrap();
    assert_eq!(cases.len(), 1, "every message went to one case");
    let rec = &cases[0];
    assert_eq!(rec.id, case_id);
    assert_eq!(rec.status, mailtriage::record::Status::Resolved);
    assert!(rec.resolved_at.is_some());
    assert_eq!(
        rec.resolution.as_deref(),
        Some("Vendor warned, customer called back and calm.")
    );
    assert!(
        rec.tags.contains(&"vendor_warned".to_string()),
        "{:?}",
        rec.tags
    );
    assert_eq!(rec.case.tier, 2);
    let who: Vec<&str> = rec.history.iter().map(|h| h.by.as_str()).collect();
    assert_eq!(
        who,
        [
            "ravi.k@example.com",
            "ravi.k@example.com",
            "ravi.k@example.com",
            "cx.support@example.com"
        ]
    );
    assert!(
        rec.history[0].changes.iter().any(|c| c == "tier 1 -> 2"),
        "{:?}",
        rec.history[0]
    );
    assert!(
        rec.history[3]
            .changes
            .iter()
            .any(|c| c == "status open -> resolved"),
        "{:?}",
        rec.history[3]
    );
    assert!(store.open_case_ids().unwrap().is_empty());
    // The outbox holds what was sent, each once, all for this case.
    assert_eq!(rec.outbox.len(), 4);
}

#[test]
fn a_vendors_third_complaint_is_reported_once() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    let vendors = [
        "FastPick Logistics (VID-77)",
        "fastpick logistics (vid-77)",
        "VID-77",
        "FastPick Logistics (VID-77)",
    ];
    for (n, v) in vendors.iter().enumerate() {
        let raw = format!(
            "From: Ravi Kumar <ravi.k@example.com>\r\nTo: ops@example.com\r\nSubject: Pickup complaint - vendor late (Order #CK70{n})\r\nMessage-ID: <vendor{n}@mail.example.com>\r\n\r\nCustomer Name: Customer {n}\r\nOrder ID: CK70{n}\r\nCustomer Phone Number: 98450 1234{n}\r\nVendor Name: {v}\r\nIssue: The vendor came three hours late for the pickup.\r\n"
        );
        d.append("ops", "INBOX", raw.as_bytes());
    }
    let daemon = InProcess::start(dir.path());
    wait_processed(&d, 4);
    wait_until(
        WAIT,
        || !by_rcpt(&s.messages(), "vendor.manager@example.com").is_empty(),
        || "no repeat-vendor report".into(),
    );
    // Everything the four cases send is out once the outbox is idle: the
    // acknowledgements are the last thing each case queues before the next.
    wait_until(
        WAIT,
        || by_rcpt(&s.messages(), "ravi.k@example.com").len() == 4,
        || "four acknowledgements".into(),
    );
    // The digest (asked of the running daemon) names the vendor once, with
    // all four cases, however each agent wrote it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(["digest", "managers_daily", "--preview", "--config"])
        .arg(dir.path())
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .expect("run mailtriage digest");
    let preview = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        preview.contains("\nRepeat vendor: FastPick Logistics (VID-77), 4 cases\n"),
        "{preview}"
    );
    daemon.shutdown();
    let got = s.messages();
    let reports = by_rcpt(&got, "vendor.manager@example.com");
    assert_eq!(
        reports.len(),
        1,
        "one report at the threshold, not one per case after it"
    );
    let m = MessageParser::default().parse(&reports[0].raw).unwrap();
    assert!(
        m.subject().unwrap_or("").contains("3 complaints"),
        "{:?}",
        m.subject()
    );
    let body = m.body_text(0).unwrap();
    assert_eq!(body.matches("ESC-").count(), 3, "{body}");
}

/// A pickup complaint about `vendor` as an agent writes it; `n` tells the
/// test's complaints (and their orders) apart.
fn vendor_complaint(n: usize, vendor: &str) -> Vec<u8> {
    format!(
        "From: Ravi Kumar <ravi.k@example.com>\r\nTo: ops@example.com\r\nSubject: Pickup complaint - vendor late (Order #CK81{n})\r\nMessage-ID: <vendor-spelling{n}@mail.example.com>\r\n\r\nCustomer Name: Customer {n}\r\nOrder ID: CK81{n}\r\nCustomer Phone Number: 98450 1234{n}\r\nVendor Name: {vendor}\r\nIssue: The vendor came three hours late for the pickup.\r\n"
    )
    .into_bytes()
}

/// The managers' digest, previewed through the running daemon.
fn digest_preview(dir: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(["digest", "managers_daily", "--preview", "--config"])
        .arg(dir)
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .expect("run mailtriage digest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The repeat vendors the digest's summary names: `VENDOR, N cases`.
fn repeat_vendor_lines(preview: &str) -> Vec<&str> {
    preview
        .lines()
        .filter_map(|l| l.strip_prefix("Repeat vendor: "))
        .collect()
}

/// The case ids a report names, in order.
fn case_ids_in(report: &Captured) -> Vec<String> {
    let m = MessageParser::default().parse(&report.raw).unwrap();
    m.body_text(0)
        .unwrap()
        .split_whitespace()
        .filter(|w| w.starts_with("ESC-"))
        .map(str::to_string)
        .collect()
}

/// Each test complaint's case id (by its order `CK81n`) and vendor key.
fn vendor_cases(dir: &Path) -> Vec<(String, String, Option<String>)> {
    let store = Store::open(&database(dir), 1 << 20).unwrap();
    let mut cases: Vec<(String, String, Option<String>)> = store
        .cases()
        .map(|r| {
            let r = r.unwrap();
            (
                r.case.fields.order_id.clone().unwrap_or_default(),
                r.id.clone(),
                r.vendor_key().map(|k| k.to_string()),
            )
        })
        .collect();
    cases.sort();
    cases
}

#[test]
fn a_vendor_spelled_another_way_the_third_time_is_reported_once() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    d.append(
        "ops",
        "INBOX",
        &vendor_complaint(0, "QuickPick Logistics (VND-1044)"),
    );
    d.append("ops", "INBOX", &vendor_complaint(1, "VND-1044 / QuickPick"));
    let daemon = InProcess::start(dir.path());
    wait_processed(&d, 2);
    wait_for_rcpt(&s, "ravi.k@example.com", 2);
    // In a later batch: no id, another spelling of the name given with it.
    d.append(
        "ops",
        "INBOX",
        &vendor_complaint(2, "quickpick logistics pvt ltd"),
    );
    wait_processed(&d, 3);
    wait_for_rcpt(&s, "vendor.manager@example.com", 1);
    wait_for_rcpt(&s, "ravi.k@example.com", 3);
    let preview = digest_preview(dir.path());
    assert_eq!(
        repeat_vendor_lines(&preview),
        ["QuickPick Logistics (VND-1044), 3 cases"],
        "{preview}"
    );
    daemon.shutdown();

    let cases = vendor_cases(dir.path());
    let ids: Vec<String> = cases.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(cases.len(), 3);
    for (order, id, key) in &cases {
        assert_eq!(key.as_deref(), Some("id:vnd-1044"), "{order} {id}");
    }
    let got = s.messages();
    let reports = by_rcpt(&got, "vendor.manager@example.com");
    assert_eq!(reports.len(), 1, "one report for one vendor");
    assert_eq!(case_ids_in(reports[0]), ids);
    let subject = subject(reports[0]);
    assert!(
        subject.contains("QuickPick Logistics (VND-1044), 3 complaints"),
        "{subject}"
    );
}

#[test]
fn complaints_naming_a_vendor_before_its_id_was_given_count_under_the_id() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    // The name alone, stored.
    d.append("ops", "INBOX", &vendor_complaint(0, "Sai Traders"));
    let daemon = InProcess::start(dir.path());
    wait_processed(&d, 1);
    wait_for_rcpt(&s, "ravi.k@example.com", 1);
    daemon.shutdown();
    // One batch: the name alone again, then the id with the name.
    d.append(
        "ops",
        "INBOX",
        &vendor_complaint(1, "SAI TRADERS PVT. LTD."),
    );
    d.append(
        "ops",
        "INBOX",
        &vendor_complaint(2, "Sai Traders (VND-2290)"),
    );
    let daemon = InProcess::start(dir.path());
    wait_processed(&d, 3);
    wait_for_rcpt(&s, "vendor.manager@example.com", 1);
    // And the name alone once more: the same vendor, already reported.
    d.append("ops", "INBOX", &vendor_complaint(3, "sai traders"));
    wait_processed(&d, 4);
    wait_for_rcpt(&s, "ravi.k@example.com", 4);
    let preview = digest_preview(dir.path());
    assert_eq!(
        repeat_vendor_lines(&preview),
        ["Sai Traders (VND-2290), 4 cases"],
        "{preview}"
    );
    daemon.shutdown();

    let cases = vendor_cases(dir.path());
    assert_eq!(cases.len(), 4);
    for (order, id, key) in &cases {
        assert_eq!(key.as_deref(), Some("id:vnd-2290"), "{order} {id}");
    }
    let got = s.messages();
    let reports = by_rcpt(&got, "vendor.manager@example.com");
    assert_eq!(reports.len(), 1, "once per vendor per window");
    let first_three: Vec<String> = cases[..3].iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(case_ids_in(reports[0]), first_three);
    assert!(
        subject(reports[0]).contains("Sai Traders (VND-2290), 3 complaints"),
        "{}",
        subject(reports[0])
    );
}

#[test]
fn an_overdue_case_is_re_escalated_once() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    let t0 = jiff::Timestamp::now().as_second();
    let clock = mailtriage::daemon::Clock::fixed(ts(t0));
    let daemon = InProcess::start_with_clock(dir.path(), clock.clone());
    // Risk 5 (2 hours allowed), opened at t0.
    d.append("ops", "INBOX", &fixture("17-fraud-scam-accusation.eml"));
    wait_processed(&d, 1);
    let director = |g: &[Captured]| by_rcpt(g, "ops.director@example.com").len();
    wait_for_rcpt(&s, "ankit.jain@example.com", 1);
    assert_eq!(director(&s.messages()), 0);

    // Three hours later: over its two hours.
    clock.set(ts(t0 + 3 * 3600));
    let got = wait_for_rcpt(&s, "ops.director@example.com", 1);
    assert_eq!(director(&got), 1, "re-escalated");
    let m = MessageParser::default()
        .parse(&by_rcpt(&got, "ops.director@example.com")[0].raw)
        .unwrap();
    assert!(
        m.subject().unwrap_or("").starts_with("Overdue: [ESC-"),
        "{:?}",
        m.subject()
    );

    // Risk 4 (8 hours allowed), opened at t0 + 3 h; at t0 + 12 h it is
    // overdue too, and the pass that finds it finds the first case again:
    // exactly one re-escalation each.
    d.append("ops", "INBOX", &fixture("20-integrity-lying.eml"));
    wait_processed(&d, 2);
    clock.set(ts(t0 + 4 * 3600));
    clock.set(ts(t0 + 12 * 3600));
    wait_until(
        WAIT,
        || director(&s.messages()) >= 2,
        || format!("{} re-escalations", director(&s.messages())),
    );
    daemon.shutdown();
    assert_eq!(director(&s.messages()), 2, "one re-escalation per case");
    let store = Store::open(&database(dir.path()), 1 << 20).unwrap();
    for rec in store.cases() {
        let rec = rec.unwrap();
        assert!(rec.overdue_at.is_some(), "{}", rec.id);
        assert!(
            rec.history
                .iter()
                .any(|h| h.by == "daemon" && h.changes[0].starts_with("overdue after")),
            "{:?}",
            rec.history
        );
    }
}

/// A config directory with the shipped routing table as it is (Tier-2
/// hours and the digest schedule included): these tests set the clock.
fn shipped_hours_config(d: &Dovecot, s: &SmtpCapture) -> tempfile::TempDir {
    let dir = config_dir(d, s, Extra::default());
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/routing.toml"),
        dir.path().join("routing.toml"),
    )
    .unwrap();
    dir
}

/// A time given in unix seconds.
fn ts(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).expect("a time")
}

fn at(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_second()
}

#[test]
fn tier_2_after_hours_goes_to_the_supervisor_now_and_to_tier_2_when_they_open() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = shipped_hours_config(&d, &s);
    // Saturday 28 November 2026, 17:00 in New York: Tier 2 closed at 16:30.
    let clock = mailtriage::daemon::Clock::fixed(ts(at("2026-11-28T22:00:00Z")));
    let daemon = InProcess::start_with_clock(dir.path(), clock.clone());
    d.append("ops", "INBOX", &fixture("23-review-threat-trustpilot.eml"));
    wait_processed(&d, 1);
    let got = s.wait_for(2, WAIT);
    assert_eq!(
        by_rcpt(&got, "deepa.r@example.com").len(),
        1,
        "the agent's acknowledgement"
    );
    let now = by_rcpt(&got, "supervisor.oncall@example.com");
    assert_eq!(now.len(), 1, "the supervisor on call at once");
    assert_eq!(now[0].rcpt_to, ["supervisor.oncall@example.com"]);
    assert!(
        by_rcpt(&got, "tier2@example.com").is_empty(),
        "Tier 2 is closed"
    );

    // Sunday: still closed. Monday 08:00 in New York (13:00 UTC): it goes.
    clock.set(ts(at("2026-11-29T18:00:00Z")));
    clock.set(ts(at("2026-11-30T13:00:00Z")));
    let got = wait_for_rcpt(&s, "tier2@example.com", 1);
    let t2 = by_rcpt(&got, "tier2@example.com");
    assert_eq!(t2.len(), 1);
    assert_eq!(
        t2[0].rcpt_to,
        ["tier2@example.com"],
        "the supervisor had it already"
    );

    // In hours (Monday 10:00 New York), a Tier-2 case goes to both at once.
    clock.set(ts(at("2026-11-30T15:00:00Z")));
    d.append("ops", "INBOX", &fixture("33-tier2-news-media.eml"));
    wait_processed(&d, 2);
    wait_for_rcpt(&s, "supervisor.oncall@example.com", 2);
    let got = wait_for_rcpt(&s, "tier2@example.com", 2);
    daemon.shutdown();
    let t2 = by_rcpt(&got, "tier2@example.com");
    assert_eq!(
        t2.len(),
        2,
        "{:?}",
        got.iter().map(subject).collect::<Vec<_>>()
    );
    assert_eq!(
        t2[1].rcpt_to,
        ["tier2@example.com", "supervisor.oncall@example.com"]
    );
    // Nothing went twice (the clock also passed digest times and the first
    // case's overdue time: those go to others).
    let got = s.messages();
    assert_eq!(by_rcpt(&got, "tier2@example.com").len(), 2);
    assert_eq!(by_rcpt(&got, "supervisor.oncall@example.com").len(), 2);
}

#[test]
fn the_managers_digest_lists_the_store_and_goes_once_per_period() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = shipped_hours_config(&d, &s);
    // Wednesday 25 November 2026, 08:30 in Kolkata: the daily 08:00
    // digest's period has begun; a new installation starts counting here.
    let clock = mailtriage::daemon::Clock::fixed(ts(at("2026-11-25T03:00:00Z")));
    let daemon = InProcess::start_with_clock(dir.path(), clock.clone());
    for f in [
        "06-pickup-rude-vendor.eml",
        "17-fraud-scam-accusation.eml",
        "23-review-threat-trustpilot.eml",
        "01-incorrect-promise-price.eml",
    ] {
        d.append("ops", "INBOX", &fixture(f));
    }
    wait_processed(&d, 4);
    // One of them is resolved by a reply in its thread.
    clock.set(ts(at("2026-11-25T09:00:00Z")));
    d.append("ops", "INBOX", b"From: CX Support <cx.support@example.com>\r\nTo: ops@example.com\r\nSubject: Re: Pickup complaint\r\nMessage-ID: <res@mail.example.com>\r\nIn-Reply-To: <pickup-rude-vendor.06@mail.example.com>\r\n\r\nStatus: Resolved\r\nResolution: vendor warned\r\n");
    wait_processed(&d, 5);
    let digests = |g: &[Captured]| by_rcpt(g, "cx.manager@example.com").len();
    assert_eq!(digests(&s.messages()), 0, "no digest before its time");

    // Thursday 08:00 in Kolkata.
    let now = at("2026-11-26T02:30:00Z");
    clock.set(ts(now));
    wait_until(
        WAIT,
        || digests(&s.messages()) >= 1,
        || "no digest at 08:00".into(),
    );
    daemon.shutdown();
    let got = s.messages();

    let digest = by_rcpt(&got, "cx.manager@example.com")[0];
    assert_eq!(
        digest.rcpt_to,
        ["ops.manager@example.com", "cx.manager@example.com"]
    );
    let m = MessageParser::default().parse(&digest.raw).unwrap();
    assert!(m.body_html(0).is_some(), "an HTML part");
    let text = m.body_text(0).unwrap().to_string();
    let store = Store::open(&database(dir.path()), 1 << 20).unwrap();
    let cases: Vec<_> = store.cases().collect::<Result<_, _>>().unwrap();
    assert_eq!(cases.len(), 4);
    let open: Vec<_> = cases.iter().filter(|c| c.is_open()).collect();
    assert_eq!(open.len(), 3);
    // The risk-5 cases are past their two hours by now, and were
    // re-escalated: the digest shows them as overdue.
    let overdue = open.iter().filter(|c| c.overdue_at.is_some()).count();
    assert_eq!(overdue, 2);
    let tier2 = open.iter().filter(|c| c.case.tier == 2).count();
    assert_eq!(
        m.subject().unwrap(),
        format!("Daily escalations, Thu 26 Nov: 3 open ({tier2} Tier 2), {overdue} overdue, 3 new")
    );
    let lines: Vec<&str> = text.lines().collect();
    for rec in &cases {
        let at: Vec<usize> = (0..lines.len())
            .filter(|i| lines[*i].starts_with(&rec.id))
            .collect();
        if !rec.is_open() {
            assert!(at.is_empty(), "a resolved case leaves the digest:\n{text}");
            continue;
        }
        // Listed once, new since the last digest, its age counted from
        // when the agent sent it.
        assert_eq!(at.len(), 1, "each case once:\n{text}");
        let head = format!(
            "{}{} · NEW",
            rec.id,
            if rec.overdue_at.is_some() {
                " · OVERDUE"
            } else {
                ""
            }
        );
        assert_eq!(lines[at[0]], head, "\n{text}");
        let sent = mailtriage::lifecycle::sent_at(rec);
        assert!(sent < rec.received_at, "the fixture's Date is earlier");
        let facts = format!(
            "Tier {} · risk {} · {} old",
            rec.case.tier,
            rec.case.risk,
            mailtriage::text::age(now - sent.as_second())
        );
        assert!(lines[at[0] + 1].starts_with(&facts), "{facts:?} in\n{text}");
        let order = format!(
            "Order {} · {}",
            rec.case.fields.order_id.as_deref().unwrap(),
            rec.case.fields.customer_name.as_deref().unwrap()
        );
        assert!(lines.contains(&order.as_str()), "{order:?} in\n{text}");
    }
    // No links to originals the managers never received.
    let message_id = cases[0].case.message_id.as_deref().unwrap();
    assert!(!text.contains(message_id), "{text}");
    let html = m.body_html(0).unwrap();
    assert!(!html.contains("mid:") && !html.contains(message_id));
    drop(store);

    // A restart in the same period sends nothing; a restart after the
    // daemon was down three days sends one digest, not three.
    let daemon = InProcess::start_with_clock(dir.path(), clock.clone());
    d.append("ops", "INBOX", &fixture("18-counterfeit-product.eml"));
    wait_processed(&d, 6);
    wait_until(
        WAIT,
        || {
            by_rcpt(&s.messages(), "kavya.menon@example.com")
                .iter()
                .any(|c| subject(c).contains("Counterfeit") || subject(c).contains("counterfeit"))
        },
        || "no acknowledgement for the case opened after the restart".into(),
    );
    daemon.shutdown();
    assert_eq!(digests(&s.messages()), 1, "not twice in one period");
    clock.set(ts(at("2026-11-29T05:00:00Z")));
    let daemon = InProcess::start_with_clock(dir.path(), clock.clone());
    wait_until(
        WAIT,
        || digests(&s.messages()) >= 2,
        || "no digest after the downtime".into(),
    );
    // A sync point after the daemon's first pass over the clock: the
    // acknowledgement of a case opened after the restart.
    d.append("ops", "INBOX", &fixture("20-integrity-lying.eml"));
    wait_processed(&d, 7);
    wait_for_rcpt(&s, "suresh.patil@example.com", 1);
    daemon.shutdown();
    assert_eq!(digests(&s.messages()), 2, "one digest for the missed days");
}

#[test]
fn an_order_resolved_long_ago_opens_a_new_case_that_follows_the_old_one() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    let t0 = at("2026-11-02T06:00:00Z");
    let clock = mailtriage::daemon::Clock::fixed(ts(t0));
    let daemon = InProcess::start_with_clock(dir.path(), clock.clone());
    let escalation = |n: u32| {
        String::from_utf8_lossy(&fixture("06-pickup-rude-vendor.eml"))
            .replace(
                "pickup-rude-vendor.06@mail.example.com",
                &format!("again{n}@mail.example.com"),
            )
            .into_bytes()
    };
    let resolve = |n: u32| {
        format!(
            "From: cx.support@example.com\r\nTo: ops@example.com\r\nSubject: Done\r\nMessage-ID: <done{n}@mail.example.com>\r\nIn-Reply-To: <again{n}@mail.example.com>\r\n\r\nStatus: Resolved\r\n"
        )
        .into_bytes()
    };
    d.append("ops", "INBOX", &escalation(1));
    d.append("ops", "INBOX", &resolve(1));
    wait_processed(&d, 2);
    // Resolved a day ago: a new escalation of the order reopens the case.
    clock.set(ts(t0 + 86_400));
    d.append("ops", "INBOX", &escalation(2));
    wait_processed(&d, 3);
    d.append("ops", "INBOX", &resolve(2));
    wait_processed(&d, 4);
    // Resolved three weeks ago (more than the shipped 14 days): a new case
    // that follows the old one.
    clock.set(ts(t0 + 22 * 86_400));
    d.append("ops", "INBOX", &escalation(3));
    wait_processed(&d, 5);
    daemon.shutdown();

    let store = Store::open(&database(dir.path()), 1 << 20).unwrap();
    let cases: Vec<_> = store.cases().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        cases.len(),
        2,
        "{:?}",
        cases.iter().map(|c| &c.id).collect::<Vec<_>>()
    );
    let (old, new) = (&cases[0], &cases[1]);
    assert_eq!(old.status, mailtriage::record::Status::Resolved);
    let reopened = old
        .history
        .iter()
        .any(|h| h.changes.iter().any(|c| c == "status resolved -> open"));
    assert!(reopened, "{:?}", old.history);
    assert_eq!(new.follows.as_deref(), Some(old.id.as_str()));
    assert!(new.is_open());
}

#[test]
fn a_second_agent_joining_a_case_is_answered_as_themselves() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    let daemon = InProcess::start(dir.path());

    // Ravi opens the case.
    d.append("ops", "INBOX", &fixture("06-pickup-rude-vendor.eml"));
    let got = wait_for_rcpt(&s, "ravi.k@example.com", 1);
    let case_id = case_id_of(&subject(by_rcpt(&got, "ravi.k@example.com")[0]));

    // Deepa escalates the same order on her own, with a review threat
    // (Tier 2): she joins Ravi's case, and the case goes to Tier 2.
    let deepa = "From: Deepa R <deepa.r@example.com>\r\nTo: support@example.com\r\nSubject: Customer Priya Sharma now threatening Trustpilot (Order #CK640218)\r\nDate: Tue, 24 Nov 2026 09:15:00 +0530\r\nMessage-ID: <deepa-joins.1@mail.example.com>\r\n\r\nCustomer Name: Priya Sharma\r\nOrder ID: CK640218\r\nPhone: 98765 43210\r\nIssue: She called again and says she will post a one-star review on Trustpilot today.\r\n\r\nThanks,\r\nDeepa\r\n";
    d.append("ops", "INBOX", deepa.as_bytes());
    let got = wait_for_rcpt(&s, "tier2@example.com", 1);
    let got = if by_rcpt(&got, "deepa.r@example.com").is_empty() {
        wait_for_rcpt(&s, "deepa.r@example.com", 1)
    } else {
        got
    };
    daemon.shutdown();

    let to_deepa = by_rcpt(&got, "deepa.r@example.com");
    assert_eq!(to_deepa.len(), 1, "Deepa is answered, once");
    assert_eq!(to_deepa[0].rcpt_to, ["deepa.r@example.com"]);
    let reply = MessageParser::default().parse(&to_deepa[0].raw).unwrap();
    assert_eq!(
        reply.in_reply_to().as_text(),
        Some("deepa-joins.1@mail.example.com"),
        "threads to her message"
    );
    let reply_subject = reply.subject().unwrap_or("");
    assert!(
        reply_subject.starts_with("Re: Customer Priya Sharma now threatening Trustpilot")
            && case_id_of(reply_subject) == case_id,
        "{reply_subject}"
    );
    assert_eq!(
        by_rcpt(&got, "ravi.k@example.com").len(),
        1,
        "Ravi only had his own acknowledgement"
    );

    // Neither the reply nor the Tier-2 forward pairs one person's name
    // with the other's address; the forward describes Deepa's message.
    let forward = MessageParser::default()
        .parse(&by_rcpt(&got, "tier2@example.com")[0].raw)
        .unwrap();
    let forward_text = forward.body_text(0).unwrap().into_owned();
    for (what, text) in [
        ("reply", reply.body_text(0).unwrap().into_owned()),
        ("forward", forward_text.clone()),
    ] {
        for line in text.lines() {
            let l = line.to_ascii_lowercase();
            let mixed = (l.contains("ravi") && l.contains("deepa.r@"))
                || (l.contains("deepa") && l.contains("ravi.k@"));
            assert!(!mixed, "{what} mixes the two agents: {line:?}\n{text}");
        }
    }
    assert!(
        reply.body_text(0).unwrap().contains("Hi Deepa R"),
        "{:?}",
        reply.body_text(0)
    );
    assert!(
        forward_text.contains("Deepa R <deepa.r@example.com>"),
        "{forward_text}"
    );
    let attached = forward.attachment(0).and_then(|a| a.message()).unwrap();
    assert_eq!(
        attached.message_id(),
        Some("deepa-joins.1@mail.example.com"),
        "the forward carries the message it describes"
    );
}

#[test]
fn replies_to_the_daemons_mail_come_back_to_the_watched_mailbox() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(
        &d,
        &s,
        Extra {
            mailbox: "reply_to = \"ops@example.com\"",
            ..Default::default()
        },
    );
    let daemon = InProcess::start(dir.path());
    d.append("ops", "INBOX", &fixture("06-pickup-rude-vendor.eml"));
    let got = wait_for_rcpt(&s, "cx@example.com", 1);
    let got = if by_rcpt(&got, "ravi.k@example.com").is_empty() {
        wait_for_rcpt(&s, "ravi.k@example.com", 1)
    } else {
        got
    };
    let ack = MessageParser::default()
        .parse(&by_rcpt(&got, "ravi.k@example.com")[0].raw)
        .unwrap();
    let forward = MessageParser::default()
        .parse(&by_rcpt(&got, "cx@example.com")[0].raw)
        .unwrap();
    let case_id = case_id_of(ack.subject().unwrap_or(""));

    // What a mail program does with "reply": To is the Reply-To, threaded
    // to the message answered. The Dovecot user of an address is its local
    // part (ops@example.com is the watched "ops" mailbox).
    let answer = |m: &mail_parser::Message, from: &str, id: &str, body: &str| {
        let reply_to = m
            .header_raw("Reply-To")
            .map(str::trim)
            .unwrap_or_else(|| panic!("no Reply-To on {:?}", m.subject()));
        assert_eq!(reply_to, "ops@example.com");
        let user = reply_to.split('@').next().unwrap();
        let parent = m.message_id().unwrap();
        let raw = format!(
            "From: {from}\r\nTo: {reply_to}\r\nSubject: Re: {}\r\nMessage-ID: <{id}>\r\nIn-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n\r\n{body}\r\n",
            m.subject().unwrap_or("")
        );
        d.append(user, "INBOX", raw.as_bytes());
    };
    answer(
        &ack,
        "Ravi Kumar <ravi.k@example.com>",
        "ravi-update@mail.example.com",
        "Status: Escalated\r\nThe customer called again, still upset.\r\n\r\n#callback_due",
    );
    wait_processed(&d, 2);
    answer(
        &forward,
        "CX Manager <cx.manager@example.com>",
        "cx-resolves@mail.example.com",
        "Status: Resolved\r\nResolution: Vendor warned, pickup rescheduled for tomorrow.",
    );
    wait_processed(&d, 3);
    daemon.shutdown();

    let store = Store::open(&database(dir.path()), 1 << 20).unwrap();
    let rec = store.case(&case_id).unwrap().expect("the case");
    let who: Vec<&str> = rec.history.iter().map(|h| h.by.as_str()).collect();
    assert_eq!(who, ["ravi.k@example.com", "cx.manager@example.com"]);
    assert!(
        rec.tags.contains(&"callback_due".to_string()),
        "{:?}",
        rec.tags
    );
    assert_eq!(rec.status, mailtriage::record::Status::Resolved);
    assert_eq!(
        rec.resolution.as_deref(),
        Some("Vendor warned, pickup rescheduled for tomorrow.")
    );
}
