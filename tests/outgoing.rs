//! Golden tests of the mail people receive: each kind the daemon sends
//! about a case (acknowledgement, "details needed", joined, forward,
//! Tier-2 forward, overdue notice), as its reader sees it (the headers a
//! mail program shows, the text part decoded), compared exactly with
//! `fixtures/outgoing/*.txt`. `UPDATE_GOLDEN=1 cargo test --test outgoing`
//! rewrites them; review `git diff fixtures/` before committing.
//!
//! The mail is the real daemon's, sent to the real test servers, on a
//! clock the test sets, with the shipped routing table (Tier 2's hours
//! and zones included). Every message is also held to what all mail must
//! be: no text line over 78 characters, and read by Python's email package
//! without a defect.

use std::path::Path;
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use mailtriage_testkit::{
    Captured, Dovecot, Extra, InProcess, SmtpCapture, by_rcpt, config_dir, fixture, subject,
    wait_until,
};

const WAIT: Duration = Duration::from_secs(30);

/// A time given in unix seconds.
fn ts(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).expect("a time")
}

fn at(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_second()
}

/// What a reader sees of a message: the headers a mail program shows (and
/// the ones that change how it shows it), the attachment, and the text.
fn as_read(c: &Captured) -> String {
    let m = MessageParser::default().parse(&c.raw).expect("parses");
    let mut out = String::new();
    for name in [
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Importance",
        "X-Priority",
        "Auto-Submitted",
    ] {
        if let Some(v) = m.header_raw(name) {
            let v: String = v.split_whitespace().collect::<Vec<_>>().join(" ");
            let v = if name == "Subject" {
                m.subject().unwrap_or_default().to_string()
            } else {
                v
            };
            out.push_str(&format!("{name}: {v}\n"));
        }
    }
    if m.in_reply_to().as_text().is_some() {
        out.push_str("(threaded to the agent's message)\n");
    }
    for a in m.attachments() {
        let ct = a
            .content_type()
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
            .unwrap_or_default();
        out.push_str(&format!(
            "Attachment: {} ({ct})\n",
            a.attachment_name().unwrap_or("(no name)")
        ));
    }
    out.push('\n');
    // As a mail program that does not reflow shows it (format=flowed's
    // soft-break spaces are invisible there).
    for line in m
        .body_text(0)
        .unwrap_or_default()
        .replace("\r\n", "\n")
        .lines()
    {
        out.push_str(if line == "-- " { line } else { line.trim_end() });
        out.push('\n');
    }
    out
}

/// What all mail must be.
fn check_what_everyone_gets(c: &Captured) {
    let m = MessageParser::default().parse(&c.raw).unwrap();
    let text_part = m.text_part(0).expect("a text part");
    let flowed = text_part
        .content_type()
        .and_then(|ct| ct.attribute("format"))
        .is_some_and(|f| f.eq_ignore_ascii_case("flowed"));
    let is_digest = subject(c).contains("escalations");
    assert!(flowed || is_digest, "{}: not format=flowed", subject(c));
    let text = m.body_text(0).unwrap_or_default();
    for line in text.lines() {
        assert!(
            line.chars().count() <= 78,
            "{}: a line over 78 characters: {line:?}",
            subject(c)
        );
    }
    let parts = mailtriage_testkit::python_read(&c.raw);
    for p in parts.as_array().unwrap() {
        assert!(
            p["defects"].as_array().is_some_and(|d| d.is_empty()),
            "{}: {p}",
            subject(c)
        );
    }
}

#[test]
fn what_people_receive_matches_the_golden_files() {
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
    // The shipped routing table as it is: Tier 2's hours and zones.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/routing.toml"),
        dir.path().join("routing.toml"),
    )
    .unwrap();
    // Tuesday 24 November 2026, 15:00 UTC: 20:30 in Kolkata, 10:00 in New
    // York (Tier 2 open).
    let t0 = at("2026-11-24T15:00:00Z");
    let clock = mailtriage::daemon::Clock::fixed(ts(t0));
    let daemon = InProcess::start_with_clock(dir.path(), clock.clone());

    // A review threat (Tier 2, risk 5), an incorrect promise, an escalation
    // without a way to reach the customer.
    d.append("ops", "INBOX", &fixture("23-review-threat-trustpilot.eml"));
    d.append("ops", "INBOX", &fixture("01-incorrect-promise-price.eml"));
    d.append(
        "ops",
        "INBOX",
        &fixture("51-escalation-missing-contact.eml"),
    );
    let wait_for = |rcpt: &str, n: usize| {
        wait_until(
            WAIT,
            || by_rcpt(&s.messages(), rcpt).len() >= n,
            || {
                format!(
                    "{n} messages to {rcpt}: {:?}",
                    s.messages().iter().map(subject).collect::<Vec<_>>()
                )
            },
        )
    };
    wait_for("tier2@example.com", 1);
    wait_for("ops.manager@example.com", 1);
    // Priya sent the incorrect promise too: an acknowledgement and a
    // "details needed" reply.
    wait_for("priya.sharma@example.com", 2);
    // Another agent escalates order CK802113 again: it joins its case.
    let again = String::from_utf8(fixture("23-review-threat-trustpilot.eml"))
        .unwrap()
        .replace(
            "Deepa R <deepa.r@example.com>",
            "Arjun Nair <arjun.n@example.com>",
        )
        .replace(
            "review-threat-trustpilot.23@mail.example.com",
            "review-threat-again@mail.example.com",
        )
        .replace(
            "Date: Tue, 24 Nov 2026 20:09:00 +0530",
            "Date: Tue, 24 Nov 2026 20:25:00 +0530",
        );
    d.append("ops", "INBOX", again.as_bytes());
    wait_for("arjun.n@example.com", 1);
    // Three hours on, the risk-5 case is overdue (risk 5 allows 2 h).
    clock.set(ts(t0 + 3 * 3600));
    wait_for("ops.director@example.com", 1);
    daemon.shutdown();

    let got = s.messages();
    let one = |rcpt: &str, pick: &dyn Fn(&Captured) -> bool| -> Captured {
        let all: Vec<&Captured> = by_rcpt(&got, rcpt)
            .into_iter()
            .filter(|c| pick(c))
            .collect();
        assert_eq!(
            all.len(),
            1,
            "{rcpt}: {:?}",
            all.iter().map(|c| subject(c)).collect::<Vec<_>>()
        );
        all[0].clone()
    };
    let any = |_: &Captured| true;
    let goldens: Vec<(&str, Captured)> = vec![
        ("outgoing/ack.txt", one("deepa.r@example.com", &any)),
        (
            "outgoing/details-needed.txt",
            one("priya.sharma@example.com", &|c| {
                subject(c).starts_with("Details needed:")
            }),
        ),
        ("outgoing/joined.txt", one("arjun.n@example.com", &any)),
        (
            "outgoing/forward.txt",
            one("ops.manager@example.com", &|c| {
                subject(c).contains("Incorrect Promise")
            }),
        ),
        ("outgoing/forward-tier2.txt", one("tier2@example.com", &any)),
        (
            "outgoing/overdue.txt",
            one("ops.director@example.com", &any),
        ),
    ];
    let mut failures = Vec::new();
    for (name, c) in &goldens {
        if let Some(diff) = mailtriage_testkit::golden(name, &as_read(c)) {
            failures.push(diff);
        }
    }
    for c in &got {
        check_what_everyone_gets(c);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The Tier-2 forward as a phone's mail app shows its text: nothing
    // wider than the screen, and how to act on it on the first screen,
    // below the app's own header (about 200 px).
    let (width, height) = (390, 844);
    let fwd = &goldens
        .iter()
        .find(|(n, _)| n.ends_with("forward-tier2.txt"))
        .unwrap()
        .1;
    let wire = MessageParser::default()
        .parse(&fwd.raw)
        .and_then(|m| m.body_text(0).map(|t| t.replace("\r\n", "\n")))
        .unwrap();
    // As a phone's mail app that reflows format=flowed shows it (Apple
    // Mail), and as one that shows the lines as sent.
    let page = mailtriage_testkit::browser::text_part_as_html(&mailtriage::text::unflow(&wire));
    for (what, html) in [
        ("reflowed", page.clone()),
        (
            "as sent",
            mailtriage_testkit::browser::text_part_as_html(&wire),
        ),
    ] {
        let facts = mailtriage_testkit::browser::measure(
            &html,
            width,
            height,
            mailtriage_testkit::browser::Marker::Text("to close it"),
        );
        assert!(
            facts.fits_width(),
            "{what}: wider than the phone: {facts:?}"
        );
        let act = facts.marker_bottom.expect("the line that says how to act");
        assert!(
            act <= f64::from(height) - 200.0,
            "{what}: how to act ends at {act} px: {facts:?}"
        );
    }
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/forward-phone.png");
        mailtriage_testkit::browser::screenshot(&page, width, height, &path);
    }
}
