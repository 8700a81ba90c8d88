//! The managers' digest as its readers get it: built by the daemon's
//! `build_digest` from a store of the fixture escalations, compared
//! exactly with its goldens (`fixtures/outgoing/digest.txt` and
//! `digest.html`; `UPDATE_GOLDEN=1` rewrites them), kept under Gmail's
//! clipping size for 100 and 300 cases, and rendered in a headless
//! Chromium at a phone's width (`UPDATE_SCREENSHOTS=1` rewrites
//! `docs/digest-phone.png`, the README's picture of it).

use std::path::Path;

use mailtriage::batch::{Batch, BatchItem, BatchOutcome, Cursor, MessageKey};
use mailtriage::config::Config;
use mailtriage::digest::{DigestData, HTML_MAX_BYTES, RenderedDigest, sent_size};
use mailtriage::record::CaseRecord;
use mailtriage::route::ActionType;
use mailtriage::store::Store;
use mailtriage_testkit::browser::{self, Marker};
use mailtriage_testkit::{fixture, golden};

/// Thursday 26 November 2026, 08:00 in Kolkata: the shipped digest's
/// period, a day after the last one.
const NOW: &str = "2026-11-26T02:30:00Z";
const SINCE: &str = "2026-11-25T02:30:00Z";
const DIGEST: &str = "managers_daily";
/// A phone held upright, in CSS pixels (an iPhone 14's screen).
const PHONE: (u32, u32) = (390, 844);

/// A time given in unix seconds.
fn ts(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).expect("a time")
}

fn at(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .expect("test time")
        .as_second()
}

/// The fixture escalations as the daemon stores them: triaged and routed
/// with the shipped config (its forwards' recipients and its digest),
/// received two minutes after the agent sent them, in file order. The
/// auto-submitted pickup complaint (47) is left out, as the daemon leaves
/// it. Added, so that every kind of line shows: a second complaint about
/// fixture 12's vendor for another order (a repeat vendor), and fixture
/// 09's case resolved (it leaves the digest).
fn fixture_cases(config: &Config) -> Vec<CaseRecord> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml") && !n.starts_with("47-"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let Ok((_, case)) = config.triage.parse(&fixture(&name)) else {
            continue;
        };
        if !case.is_escalation {
            continue;
        }
        let sent = case
            .date
            .as_deref()
            .map(at)
            .expect("every fixture escalation has a date");
        let n = out.len() as u32 + 1;
        let mut rec = CaseRecord::new(
            format!("ESC-2026-{n:06}"),
            "ops",
            n,
            1,
            ts(sent + 120),
            case,
            None,
            vec![],
        );
        for a in config.router.route(&rec.case, Some("ops")) {
            match a.kind {
                ActionType::Forward => {
                    rec.forwarded_to.extend(a.to.iter().chain(&a.cc).cloned());
                }
                ActionType::Digest => rec.digests.extend(a.digest.clone()),
                _ => {}
            }
        }
        rec.vendor = rec
            .case
            .fields
            .vendor
            .as_deref()
            .and_then(|v| config.vendors.parse(v))
            .and_then(|v| v.resolve(None));
        if name.starts_with("09-") {
            assert!(mailtriage::lifecycle::resolve(
                &mut rec,
                Some("payout fixed"),
                "cx.support@example.com",
                ts(at(SINCE) + 3600)
            ));
        }
        let again = name.starts_with("12-").then(|| rec.clone());
        out.push(rec);
        if let Some(mut second) = again {
            let n = out.len() as u32 + 1;
            second.id = format!("ESC-2026-{n:06}");
            second.uid = n;
            second.received_at = ts(at(SINCE) + 4 * 3600);
            second.case.date = Some("2026-11-25T11:58:00+05:30".into());
            second.case.fields.order_id = Some("CK790114".into());
            second.case.fields.customer_name = Some("Farhan Qureshi".into());
            second.case.fields.issue =
                Some("Vendor did not turn up for the second slot either.".into());
            out.push(second);
        }
    }
    out
}

/// `count` open cases like the fixtures' (each fixture's case again for
/// other orders, sent an hour apart), for the size limits.
fn many_cases(config: &Config, count: usize) -> Vec<CaseRecord> {
    let base: Vec<CaseRecord> = fixture_cases(config)
        .into_iter()
        .filter(|r| r.is_open())
        .collect();
    (0..count)
        .map(|i| {
            let mut r = base[i % base.len()].clone();
            let round = (i / base.len()) as i64;
            r.id = format!("ESC-2026-{:06}", i + 1);
            r.received_at -= jiff::SignedDuration::from_secs(round * 3600);
            r.case.date = None;
            if let Some(o) = &mut r.case.fields.order_id {
                o.push_str(&format!("-{round}"));
            }
            r
        })
        .collect()
}

/// Stores `cases` as one batch, as the daemon's commit does.
fn store_of(dir: &Path, cases: Vec<CaseRecord>) -> Store {
    let store = Store::open(&dir.join("db"), 1 << 20).expect("open store");
    let last_uid = cases.iter().map(|c| c.uid).max().unwrap_or(0);
    let items = cases
        .into_iter()
        .map(|record| BatchItem {
            key: MessageKey::new(Some(&format!("{}@example.com", record.id)), b"raw"),
            uid: record.uid,
            outcome: BatchOutcome::Case {
                record: Box::new(record),
                outgoing: vec![],
                replied_to: None,
            },
        })
        .collect();
    store
        .commit(&Batch {
            mailbox: "ops".into(),
            cursor: Cursor {
                uid_validity: 1,
                last_uid,
            },
            items,
            server: vec![],
            now: ts(at(SINCE)),
            vendors_reported: vec![],
        })
        .expect("commit");
    store
}

/// The shipped digest of the fixture escalations, as the daemon builds it.
fn fixture_digest(config: &Config) -> (RenderedDigest, Vec<CaseRecord>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = fixture_cases(config);
    let store = store_of(dir.path(), cases.clone());
    let (rendered, to) =
        mailtriage::daemon::build_digest(config, &store, DIGEST, Some(ts(at(SINCE))), ts(at(NOW)))
            .expect("the digest builds");
    assert_eq!(to, ["ops.manager@example.com", "cx.manager@example.com"]);
    (rendered, cases)
}

#[test]
fn the_digest_of_the_fixtures_matches_its_goldens() {
    let config = Config::builtin().expect("shipped config");
    let (r, cases) = fixture_digest(&config);
    let text = format!("Subject: {}\n\n{}", r.subject, r.text);
    let mut differences: Vec<String> = [
        golden("outgoing/digest.txt", &text),
        golden("outgoing/digest.html", &r.html),
    ]
    .into_iter()
    .flatten()
    .collect();

    // What the goldens must show, whatever they are regenerated to.
    let open: Vec<&CaseRecord> = cases.iter().filter(|c| c.is_open()).collect();
    assert_eq!(open.len() + 1, cases.len(), "one case was resolved");
    assert_eq!(r.listed, open.len(), "all listed");
    for c in &cases {
        let times = r.text.matches(&c.id).count();
        let want = usize::from(c.is_open());
        if times != want {
            differences.push(format!("{} is listed {times} times, not {want}", c.id));
        }
    }
    let new = open
        .iter()
        .filter(|c| c.received_at >= ts(at(SINCE)))
        .count();
    let overdue_head = r
        .text
        .lines()
        .filter(|l| l.starts_with("ESC-") && l.contains(" · OVERDUE"))
        .count();
    assert_eq!(
        r.subject,
        format!(
            "Daily escalations, Thu 26 Nov: {} open ({} Tier 2), {overdue_head} overdue, {new} new",
            open.len(),
            open.iter().filter(|c| c.case.tier == 2).count()
        )
    );
    let top: Vec<&str> = r.text.lines().take(12).collect();
    for want in [
        "Daily escalations".to_string(),
        "Thu 26 Nov, 08:00 IST".to_string(),
        format!("{} open cases", open.len()),
        format!("Overdue: {overdue_head}"),
        "Repeat vendor: QuickPick Logistics (VND-1044), 2 cases".to_string(),
        format!("New since Wed 25 Nov, 08:00 IST: {new}"),
    ] {
        assert!(
            top.contains(&want.as_str()),
            "{want:?} in the top lines:\n{}",
            top.join("\n")
        );
    }
    let waiting = open.iter().filter(|c| !c.case.missing.is_empty()).count();
    assert!(waiting > 0);
    assert!(
        top.contains(&format!("Waiting on the agent for details: {waiting}").as_str()),
        "{top:?}"
    );
    // Ages from the agent's Date: fixture 23, sent Tue 24 Nov 20:09 IST,
    // is 35 h old at Thu 08:00 (and NEW in no way).
    let review = open
        .iter()
        .find(|c| {
            c.case.message_id.as_deref() == Some("review-threat-trustpilot.23@mail.example.com")
        })
        .expect("fixture 23");
    let block = r
        .text
        .split("\n\n")
        .find(|b| b.starts_with(&review.id))
        .expect("fixture 23's block");
    assert!(
        block.contains("Tier 2 · risk 5 · 35 h old · with Tier 2"),
        "{block}"
    );
    assert!(block.contains("Review threat"), "flags in words: {block}");
    for line in r.text.lines() {
        assert!(line.chars().count() <= 78, "too wide: {line:?}");
    }
    for part in [&r.text, &r.html] {
        assert!(!part.contains("mid:"), "no links to originals");
        assert!(
            !part.contains("+05:30") && !part.contains("T02:30"),
            "no RFC 3339"
        );
    }
    assert!(r.html.is_ascii());
    assert!(sent_size(&r.html) <= HTML_MAX_BYTES);

    // As composed for sending, Python's strict reader finds a text and an
    // HTML part, without defects; the HTML goes as it was measured.
    let identity = mailtriage::mail::Identity {
        from: "Escalations <mailtriage@example.com>"
            .parse()
            .expect("from"),
        domain: "mailtriage.test".into(),
    };
    let out = mailtriage::mail::compose_digest(
        &identity,
        DIGEST,
        at(NOW),
        &["ops.manager@example.com".to_string()],
        &r.subject,
        &r.text,
        &r.html,
        std::time::SystemTime::UNIX_EPOCH,
    )
    .expect("composes");
    let parts = mailtriage_testkit::python_read(&out.raw);
    let parts = parts.as_array().expect("parts");
    let types: Vec<&str> = parts.iter().filter_map(|p| p["type"].as_str()).collect();
    assert_eq!(
        types,
        ["multipart/alternative", "text/plain", "text/html"],
        "{parts:?}"
    );
    for p in parts {
        assert_eq!(p["defects"], serde_json::json!([]), "{p}");
    }
    assert_eq!(parts[2]["cte"], "quoted-printable", "{:?}", parts[2]);
    let m = mail_parser::MessageParser::default()
        .parse(&out.raw)
        .expect("parses");
    let html = m.html_part(0).expect("an HTML part");
    let sent = (html.raw_end_offset() - html.raw_body_offset()) as usize;
    assert!(
        sent.abs_diff(sent_size(&r.html)) <= 2,
        "the HTML as sent: {sent} bytes, measured {}",
        sent_size(&r.html)
    );

    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn the_html_stays_under_gmails_clipping_size() {
    let config = Config::builtin().expect("shipped config");
    let render = |count: usize| {
        let data = DigestData::from_cases(
            config.digest_sources(),
            DIGEST,
            many_cases(&config, count),
            Some(ts(at(SINCE))),
            ts(at(NOW)),
        )
        .expect("digest data");
        let r = mailtriage::digest::render(&config.digest_templates, &data).expect("renders");
        (data, r)
    };
    let (data, r) = render(100);
    eprintln!(
        "100 cases: {} bytes of HTML, {} as sent",
        r.html.len(),
        sent_size(&r.html)
    );
    assert_eq!(data.cases.len(), 100);
    assert_eq!(r.listed, 100, "100 cases fit");
    assert!(sent_size(&r.html) <= HTML_MAX_BYTES);
    assert!(!r.text.contains("more open case"));

    let (data, r) = render(300);
    eprintln!(
        "300 cases: {} bytes of HTML, {} as sent, {} cases listed",
        r.html.len(),
        sent_size(&r.html),
        r.listed
    );
    assert!(sent_size(&r.html) <= HTML_MAX_BYTES);
    assert!((100..300).contains(&r.listed), "{}", r.listed);
    // The most urgent are listed; the rest are counted, in both parts.
    let rest = &data.cases[r.listed..];
    let more = format!(
        "… and {} more open cases ({} Tier 2, {} overdue)",
        rest.len(),
        rest.iter().filter(|c| c.tier == 2).count(),
        rest.iter().filter(|c| c.overdue).count()
    );
    eprintln!("{more}");
    assert!(r.text.contains(&more), "{more:?} in the text");
    let more_html = format!(
        "&hellip; and {} more open cases</b> ({} Tier 2, {} overdue)",
        rest.len(),
        rest.iter().filter(|c| c.tier == 2).count(),
        rest.iter().filter(|c| c.overdue).count()
    );
    assert!(r.html.contains(&more_html), "{more_html:?} in the HTML");
    for (i, c) in data.cases.iter().enumerate() {
        let listed = r.text.contains(&format!("\n{}", c.case_id));
        assert_eq!(listed, i < r.listed, "{} (#{i})", c.case_id);
    }
    // The summary still counts every case.
    assert!(r.text.contains("\n300 open cases\n"));
}

#[test]
fn the_digest_reads_on_a_phone() {
    let config = Config::builtin().expect("shipped config");
    let (r, _) = fixture_digest(&config);
    let (width, height) = PHONE;
    let facts = browser::measure(&r.html, width, height, Marker::Id("summary"));
    eprintln!("{facts:?}");
    assert_eq!(facts.inner_width, f64::from(width));
    assert!(facts.fits_width(), "wider than the phone: {facts:?}");
    let summary = facts.marker_bottom.expect("the summary is marked");
    // The mail app shows the sender and subject above the message (about
    // 200 px): the summary must still end on the first screen.
    assert!(
        summary <= f64::from(height) - 200.0,
        "the summary ends at {summary} px: {facts:?}"
    );
    // Forty cases in a few screens, not eighteen.
    let screens = facts.height / f64::from(height);
    eprintln!("{screens:.1} screens");
    assert!(screens < 12.0, "{screens:.1} screens");

    // The text part, as a phone's mail app shows it: its summary on the
    // first screen too.
    let text = browser::measure(
        &browser::text_part_as_html(&r.text),
        width,
        height,
        Marker::Text("New since"),
    );
    assert!(text.fits_width(), "{text:?}");
    let end = text.marker_bottom.expect("the text's summary");
    assert!(end <= f64::from(height) - 200.0, "{text:?}");

    if std::env::var_os("UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/digest-phone.png");
        std::fs::create_dir_all(path.parent().expect("docs/")).expect("docs/");
        browser::screenshot(&r.html, width, height, &path);
    }
}

#[test]
fn the_browser_sees_a_page_wider_than_the_phone() {
    // The control for the test above: what it measures can fail.
    let (width, height) = PHONE;
    let html = "<!DOCTYPE html><html><body><p id=\"top\">Hello</p><div style=\"width:600px\">wide</div></body></html>";
    let facts = browser::measure(html, width, height, Marker::Id("top"));
    assert_eq!(facts.inner_width, f64::from(width));
    assert!(!facts.fits_width(), "{facts:?}");
    assert!(facts.widest_right > 600.0, "{facts:?}");
    assert!(facts.marker_bottom.is_some_and(|b| b > 0.0 && b < 100.0));
}
