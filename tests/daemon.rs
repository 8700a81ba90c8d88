//! The daemon end to end, against a real Dovecot and a real SMTP server
//! (crates/testkit): escalations in, acknowledgements and forwards out, the
//! rest left alone, nothing done twice across a restart.

use std::time::Duration;

use mail_parser::MessageParser;
use mailtriage_testkit::{Captured, Dovecot, InProcess, SmtpCapture, by_rcpt, fixture};

const WAIT: Duration = Duration::from_secs(30);

/// The harness's config directory for the test servers, with extra lines
/// for `[daemon]`.
fn config_dir(d: &Dovecot, s: &SmtpCapture, extra_daemon: &str) -> tempfile::TempDir {
    mailtriage_testkit::config_dir(
        d,
        s,
        mailtriage_testkit::Extra {
            daemon: extra_daemon,
            ..Default::default()
        },
    )
}

fn header<'a>(m: &'a mail_parser::Message<'a>, name: &'a str) -> Option<&'a str> {
    m.header_raw(name).map(str::trim)
}

#[test]
fn escalations_are_acknowledged_and_forwarded_the_rest_left_alone() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, "");

    // Waiting before the daemon starts: three that must be left alone, then
    // two escalations (processed after them, in UID order).
    d.append("ops", "INBOX", b"From: stranger@outsider.test\r\nTo: ops@example.com\r\nSubject: Escalation (Order #X1)\r\nMessage-ID: <stranger@outsider.test>\r\n\r\nCustomer Name: Asha\r\nOrder ID: X1\r\n");
    d.append("ops", "INBOX", &fixture("45-newsletter-list.eml"));
    d.append("ops", "INBOX", &fixture("44-auto-reply-out-of-office.eml"));
    d.append("ops", "INBOX", &fixture("23-review-threat-trustpilot.eml"));
    d.append("ops", "INBOX", &fixture("06-pickup-rude-vendor.eml"));

    let daemon = InProcess::start(dir.path());
    // 23: forward to Tier 2 (cc supervisor) and an acknowledgement;
    // 06: forward to CX and an acknowledgement.
    let got = s.wait_for(4, WAIT);

    let acks = by_rcpt(&got, "deepa.r@example.com");
    assert_eq!(
        acks.len(),
        1,
        "one acknowledgement for the Trustpilot escalation"
    );
    let ack = MessageParser::default().parse(&acks[0].raw).unwrap();
    let subject = ack.subject().unwrap_or("");
    assert!(
        subject.starts_with("Re: Escalation – Customer threatening Trustpilot"),
        "{subject}"
    );
    assert!(subject.contains("[ESC-"), "{subject}");
    assert_eq!(
        ack.in_reply_to().as_text(),
        Some("review-threat-trustpilot.23@mail.example.com")
    );
    assert_eq!(header(&ack, "Auto-Submitted"), Some("auto-replied"));
    assert_eq!(header(&ack, "X-Auto-Response-Suppress"), Some("All"));
    assert_eq!(acks[0].mail_from, "mailtriage@example.com");

    let fwd = by_rcpt(&got, "tier2@example.com");
    assert_eq!(fwd.len(), 1);
    assert_eq!(
        fwd[0].rcpt_to,
        ["tier2@example.com", "supervisor.oncall@example.com"]
    );
    let fwd = MessageParser::default().parse(&fwd[0].raw).unwrap();
    assert_eq!(header(&fwd, "Auto-Submitted"), Some("auto-generated"));
    assert!(
        fwd.body_text(0)
            .unwrap()
            .starts_with("Tier 2, risk 5 of 5. Respond by"),
        "summary first: {:?}",
        fwd.body_text(0)
    );
    let original = fwd
        .attachment(0)
        .and_then(|a| a.message())
        .expect("original attached");
    assert_eq!(
        original.message_id(),
        Some("review-threat-trustpilot.23@mail.example.com")
    );

    assert_eq!(by_rcpt(&got, "cx@example.com").len(), 1);
    assert_eq!(by_rcpt(&got, "ravi.k@example.com").len(), 1);
    // The agent hears first: each acknowledgement leaves before its case's
    // forwards (captures are numbered in arrival order).
    let position = |rcpt: &str| {
        got.iter()
            .position(|c| c.rcpt_to.iter().any(|r| r == rcpt))
            .unwrap()
    };
    assert!(position("deepa.r@example.com") < position("tier2@example.com"));
    assert!(position("ravi.k@example.com") < position("cx@example.com"));

    // A message arriving now is picked up through IDLE; once its mail is
    // out, everything before it is done, so the counts below are final.
    let mut fresh = fixture("17-fraud-scam-accusation.eml");
    fresh.splice(0..0, b"X-Test: idle\r\n".iter().copied());
    d.append("ops", "INBOX", &fresh);
    let got = s.wait_for(6, WAIT);
    assert_eq!(
        got.len(),
        6,
        "nothing for the stranger, the newsletter or the auto-reply"
    );
    assert!(!by_rcpt(&got, "supervisor.oncall@example.com").is_empty());
    assert!(
        got.iter()
            .all(|c| !c.rcpt_to.iter().any(|r| r.contains("outsider")
                || r.starts_with("newsletter")
                || r == "ops.manager@example.com"))
    );

    // Processed messages are \Seen; the others untouched.
    let flags = d.flags("ops", "INBOX");
    let seen: Vec<u32> = flags
        .iter()
        .filter(|(_, f)| f.iter().any(|x| x == "\\Seen"))
        .map(|(u, _)| *u)
        .collect();
    assert_eq!(seen, [4, 5, 6], "{flags:?}");

    daemon.shutdown();

    // A restart reprocesses nothing.
    let daemon = InProcess::start(dir.path());
    let mut another = fixture("01-incorrect-promise-price.eml");
    another.splice(0..0, b"X-Test: after-restart\r\n".iter().copied());
    d.append("ops", "INBOX", &another);
    let got = s.wait_for(8, WAIT);
    daemon.shutdown();
    assert_eq!(got.len(), 8, "only the new message's ack and forward");
    assert_eq!(by_rcpt(&got, "ops.manager@example.com").len(), 1);
}

#[test]
fn a_reply_storm_from_one_sender_is_capped() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, "replies_per_sender_per_hour = 3");
    for n in 0..6 {
        let raw = format!(
            "From: Priya <priya@example.com>\r\nTo: ops@example.com\r\nSubject: Escalation (Order #CK9{n})\r\nMessage-ID: <storm{n}@example.com>\r\n\r\nCustomer Name: Asha {n}\r\nPhone: 98765 4321{n}\r\nIssue: vendor came late\r\n"
        );
        d.append("ops", "INBOX", raw.as_bytes());
    }
    let daemon = InProcess::start(dir.path());
    // Three acknowledgements, and a sync point: an escalation from someone
    // else, appended last.
    d.append("ops", "INBOX", b"From: ravi.k@example.com\r\nTo: ops@example.com\r\nSubject: Escalation (Order #CK77)\r\nMessage-ID: <sync@example.com>\r\n\r\nCustomer Name: Neha\r\nPhone: 9812345678\r\n");
    let got = s.wait_for(4, WAIT);
    let sync_seen = |g: &[Captured]| by_rcpt(g, "ravi.k@example.com").len() == 1;
    let got = if sync_seen(&got) {
        got
    } else {
        s.wait_for(got.len() + 1, WAIT)
    };
    daemon.shutdown();
    assert!(sync_seen(&got));
    assert_eq!(
        by_rcpt(&got, "priya@example.com").len(),
        3,
        "at most 3 automatic replies an hour"
    );
    assert_eq!(
        d.seen("ops", "INBOX").len(),
        7,
        "every escalation still became a case"
    );
}

/// The attachment of a captured forward: its raw part headers (lower case)
/// and the bytes a reader saves.
fn attached_original(c: &Captured) -> (String, Vec<u8>) {
    let m = MessageParser::default()
        .parse(&c.raw)
        .expect("a forward parses");
    let part = m
        .attachment(0)
        .expect("a forward has the original attached");
    let headers = String::from_utf8_lossy(
        &c.raw[part.raw_header_offset() as usize..part.raw_body_offset() as usize],
    )
    .to_ascii_lowercase();
    (headers, part.contents().to_vec())
}

/// The forwards among `got`, by the Message-ID of the original they carry.
fn forward_of<'a>(got: &'a [Captured], original: &[u8]) -> &'a Captured {
    got.iter()
        .find(|c| {
            MessageParser::default()
                .parse(&c.raw)
                .and_then(|m| m.attachment(0).map(|a| a.contents() == original))
                .unwrap_or(false)
        })
        .unwrap_or_else(|| {
            panic!(
                "no forward carries {}",
                String::from_utf8_lossy(&original[..80])
            )
        })
}

#[test]
fn forwards_carry_each_original_in_a_part_every_reader_opens() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, "");
    let cases = [
        ("attach/7bit-ascii.eml", "message/rfc822", "7bit"),
        ("attach/8bit-utf8.eml", "message/rfc822", "8bit"),
        ("attach/long-line.eml", "application/octet-stream", "base64"),
    ];
    for (name, _, _) in cases {
        d.append("ops", "INBOX", &fixture(name));
    }
    let daemon = InProcess::start(dir.path());
    // An acknowledgement and a forward each.
    let got = s.wait_for(6, WAIT);
    daemon.shutdown();
    assert_eq!(got.len(), 6);
    for (name, content_type, cte) in cases {
        let original = fixture(name);
        let fwd = forward_of(&got, &original);
        let (headers, bytes) = attached_original(fwd);
        assert!(
            headers.contains(&format!("content-type: {content_type}"))
                && headers.contains(&format!("content-transfer-encoding: {cte}"))
                && headers.contains("filename=\"original.eml\""),
            "{name}: {headers}"
        );
        assert_eq!(
            bytes, original,
            "{name}: the attached bytes are the original"
        );
        // 8BITMIME asked for exactly when the message has 8-bit octets.
        assert_eq!(
            fwd.mail_options.iter().any(|o| o == "BODY=8BITMIME"),
            !fwd.raw.is_ascii(),
            "{name}: {:?}",
            fwd.mail_options
        );
        // Python's email package reads it without a defect and opens the
        // original as a message, or saves the file byte for byte.
        let parts = mailtriage_testkit::python_read(&fwd.raw);
        let parts = parts.as_array().expect("a list of parts");
        assert!(
            parts
                .iter()
                .all(|p| p["defects"].as_array().is_some_and(|d| d.is_empty())),
            "{name}: {parts:?}"
        );
        let att = parts
            .iter()
            .find(|p| p["filename"] == "original.eml")
            .unwrap_or_else(|| panic!("{name}: {parts:?}"));
        assert_eq!(att["type"], content_type, "{name}");
        let summary = MessageParser::default()
            .parse(&fwd.raw)
            .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
            .unwrap_or_default();
        if content_type == "message/rfc822" {
            let want = MessageParser::default().parse(&original).unwrap();
            assert_eq!(
                att["message_id"]
                    .as_str()
                    .map(|m| m.trim_matches(['<', '>'])),
                want.message_id(),
                "{name}"
            );
            assert!(!summary.contains("as a file"), "{name}: {summary}");
        } else {
            let hex: String = original.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(att["payload_hex"], hex.as_str(), "{name}");
            // The summary says why the original is a file.
            assert!(
                summary.contains("original.eml") && summary.contains("longer than 998"),
                "{name}: {summary}"
            );
        }
    }
}

#[test]
fn an_8bit_original_goes_as_a_file_through_a_server_without_8bitmime() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start_without_8bitmime();
    let dir = config_dir(&d, &s, "");
    let original = fixture("attach/8bit-utf8.eml");
    d.append("ops", "INBOX", &original);
    let daemon = InProcess::start(dir.path());
    let got = s.wait_for(2, WAIT);
    daemon.shutdown();
    let fwd = by_rcpt(&got, "ops.manager@example.com");
    assert_eq!(fwd.len(), 1, "the forward was delivered, not held back");
    assert!(
        fwd[0].raw.is_ascii(),
        "nothing 8-bit went to a 7-bit server"
    );
    assert!(fwd[0].mail_options.is_empty(), "{:?}", fwd[0].mail_options);
    let (headers, bytes) = attached_original(fwd[0]);
    assert!(
        headers.contains("content-type: application/octet-stream")
            && headers.contains("content-transfer-encoding: base64"),
        "{headers}"
    );
    assert_eq!(bytes, original);
}
