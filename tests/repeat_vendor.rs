//! The repeat-vendor report as the vendor manager gets it, against the
//! real servers on a fixed clock: three complaints about fixture 12's
//! vendor (the fixture, and the same message for two other orders) make
//! one report, compared exactly with `fixtures/outgoing/repeat_vendor.txt`
//! (the headers a reader sees, a blank line, the text as a mail program
//! decodes it; `UPDATE_GOLDEN=1` rewrites it).

use std::time::Duration;

use mail_parser::MessageParser;
use mailtriage_testkit::{
    Dovecot, Extra, InProcess, SmtpCapture, by_rcpt, config_dir, fixture, golden, wait_until,
};

const WAIT: Duration = Duration::from_secs(30);

/// Fixture 12 for another order, customer, day and story.
fn complaint(tag: &str, order: &str, customer: &str, date: &str, issue: &str) -> Vec<u8> {
    let raw = String::from_utf8(fixture("12-pickup-no-show.eml")).expect("UTF-8 fixture");
    let changed = raw
        .replace("pickup-no-show.12@", &format!("pickup-no-show.{tag}@"))
        .replace("CK728805", order)
        .replace("Sunita Rao, +91 97400 11882", customer)
        .replace("Sun, 22 Nov 2026 16:20:00 +0530", date)
        .replace(
            "Vendor did not show up in the slot. Customer called the vendor number 6 times and it was switched off. No reschedule message was sent.",
            issue,
        );
    assert_ne!(raw, changed);
    changed.into_bytes()
}

#[test]
fn the_report_names_each_case_by_order_date_and_issue() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    // Wednesday 25 November 2026, 15:30 in Kolkata.
    let now = "2026-11-25T10:00:00Z"
        .parse::<jiff::Timestamp>()
        .expect("time")
        .as_second();
    let clock = mailtriage::daemon::Clock::fixed(ts(now));
    let daemon = InProcess::start_with_clock(dir.path(), clock);
    d.append("ops", "INBOX", &fixture("12-pickup-no-show.eml"));
    d.append(
        "ops",
        "INBOX",
        &complaint(
            "12b",
            "CK731190",
            "Arvind Menon, +91 98450 22113",
            "Mon, 23 Nov 2026 11:05:00 +0530",
            "Vendor came two hours late, then left when the customer asked for the quote in writing.",
        ),
    );
    d.append(
        "ops",
        "INBOX",
        &complaint(
            "12c",
            "CK733402",
            "Lakshmi Iyer, +91 99001 55218",
            "Wed, 25 Nov 2026 09:40:00 +0530",
            "Vendor marked the pickup as done without coming.",
        ),
    );
    wait_until(
        WAIT,
        || !by_rcpt(&s.messages(), "vendor.manager@example.com").is_empty(),
        || "no repeat-vendor report".into(),
    );
    daemon.shutdown();
    let got = s.messages();
    let reports = by_rcpt(&got, "vendor.manager@example.com");
    assert_eq!(reports.len(), 1);
    let m = MessageParser::default()
        .parse(&reports[0].raw)
        .expect("parses");
    let mut shown = String::new();
    for name in ["From", "To", "Subject"] {
        let value = m
            .header_raw(name)
            .map(|v| {
                let decoded = match name {
                    "Subject" => m.subject().unwrap_or("").to_string(),
                    _ => v.trim().to_string(),
                };
                decoded.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .unwrap_or_default();
        shown.push_str(&format!("{name}: {value}\n"));
    }
    let body = m.body_text(0).expect("a text part");
    shown.push('\n');
    shown.push_str(&body);

    for line in body.lines() {
        assert!(line.chars().count() <= 78, "too wide: {line:?}");
    }
    // Each case by id, order, when its agent sent it, and what happened.
    for want in [
        "ESC-2026-000001 · order CK728805 · Sun 22 Nov, 16:20 IST",
        "Vendor did not show up in the slot. Customer called the vendor number 6",
        "ESC-2026-000002 · order CK731190 · Mon 23 Nov, 11:05 IST",
        "ESC-2026-000003 · order CK733402 · Wed 25 Nov, 09:40 IST",
        "Vendor marked the pickup as done without coming.",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(want)),
            "{want:?} in:\n{body}"
        );
    }
    if let Some(diff) = golden("outgoing/repeat_vendor.txt", &shown) {
        panic!("{diff}");
    }
}

/// A time given in unix seconds.
fn ts(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).expect("a time")
}
