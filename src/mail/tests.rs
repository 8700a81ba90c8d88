//! Composing replies, forwards and the original's part, read back with
//! mail-parser.

use super::*;
use mail_parser::MessageParser;

fn identity() -> Identity {
    Identity {
        from: "Escalations <mailtriage@example.com>".parse().unwrap(),
        domain: "mailtriage.example.com".into(),
    }
}

fn rendered() -> Rendered {
    Rendered {
        subject: "Re: Escalation (Order #CK1) [ESC-2026-000001]".into(),
        body: "Logged as ESC-2026-000001.\n".into(),
        high_importance: false,
    }
}

fn agent_mail() -> Email {
    crate::message::parse(b"From: Priya <priya@example.com>\r\nSubject: Escalation (Order #CK1)\r\nMessage-ID: <agent-1@example.com>\r\nReferences: <older@example.com>\r\n\r\nCustomer Name: Asha\r\n").unwrap()
}

#[test]
fn replies_are_threaded_and_marked_automatic() {
    let out = compose_reply(
        &identity(),
        "ESC-2026-000001",
        "0",
        "priya@example.com",
        Some("ops@example.com"),
        &rendered(),
        &agent_mail(),
        SystemTime::UNIX_EPOCH,
    )
    .unwrap();
    assert_eq!(out.recipients, ["priya@example.com"]);
    assert_eq!(
        out.message_id,
        "ESC-2026-000001.reply.0@mailtriage.example.com"
    );
    let m = MessageParser::default().parse(&out.raw).unwrap();
    assert_eq!(
        m.message_id(),
        Some("ESC-2026-000001.reply.0@mailtriage.example.com")
    );
    assert_eq!(m.in_reply_to().as_text(), Some("agent-1@example.com"));
    let refs: Vec<&str> = m
        .references()
        .as_text_list()
        .map(|l| l.iter().map(|s| s.as_ref()).collect())
        .unwrap_or_default();
    assert_eq!(refs, ["older@example.com", "agent-1@example.com"]);
    assert_eq!(
        m.header_raw("Reply-To").map(str::trim),
        Some("ops@example.com"),
        "replies come back to the watched mailbox"
    );
    assert_eq!(
        m.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(
        m.header_raw("X-Auto-Response-Suppress").map(str::trim),
        Some("All")
    );
    assert_eq!(
        m.subject(),
        Some("Re: Escalation (Order #CK1) [ESC-2026-000001]")
    );
    assert_eq!(
        m.body_text(0).as_deref().map(str::trim_end),
        Some("Logged as ESC-2026-000001.")
    );
}

fn forward_of(original: &[u8]) -> (Original, NewOutgoing) {
    let original = Original::new(original);
    let out = compose_forward(
        &identity(),
        "ESC-2026-000001",
        "1",
        &["tier2@example.com".into()],
        &["sup@example.com".into()],
        Some("ops@example.com"),
        &rendered(),
        &original,
        SystemTime::UNIX_EPOCH,
    )
    .unwrap();
    (original, out)
}

/// The raw header block of the forward's second part (the original).
fn attachment_headers(raw: &[u8]) -> String {
    let m = MessageParser::default().parse(raw).unwrap();
    let part = &m.parts[2];
    String::from_utf8_lossy(
        &raw[part.raw_header_offset() as usize..part.raw_body_offset() as usize],
    )
    .to_ascii_lowercase()
}

#[test]
fn forwards_attach_the_original() {
    let original = b"From: priya@example.com\r\nSubject: Escalation\r\nMessage-ID: <agent-1@example.com>\r\n\r\nCustomer Name: Asha\r\n";
    let (_, out) = forward_of(original);
    assert_eq!(out.recipients, ["tier2@example.com", "sup@example.com"]);
    let m = MessageParser::default().parse(&out.raw).unwrap();
    assert_eq!(
        m.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    assert_eq!(
        m.header_raw("Reply-To").map(str::trim),
        Some("ops@example.com")
    );
    assert_eq!(
        m.body_text(0).as_deref().map(str::trim_end),
        Some("Logged as ESC-2026-000001.")
    );
    let att = m.attachment(0).expect("the original is attached");
    let nested = att.message().expect("as message/rfc822");
    assert_eq!(nested.message_id(), Some("agent-1@example.com"));
    assert_eq!(att.contents(), original, "byte for byte");
}

#[test]
fn the_original_goes_in_the_part_it_fits() {
    let long = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(999));
    let just = format!("Subject: x\r\n\r\n{}\r\n", "a".repeat(998));
    let cases: &[(&str, &[u8], OriginalPart, &str)] = &[
        (
            "ascii",
            b"Subject: x\r\n\r\nbody\r\n",
            OriginalPart::SevenBit,
            "7bit",
        ),
        (
            "utf-8",
            "Subject: x\r\n\r\n\u{20b9}10,000\r\n".as_bytes(),
            OriginalPart::EightBit,
            "8bit",
        ),
        (
            "latin-1",
            b"Subject: x\r\n\r\ncaf\xe9\r\n",
            OriginalPart::EightBit,
            "8bit",
        ),
        (
            "998 octets",
            just.as_bytes(),
            OriginalPart::SevenBit,
            "7bit",
        ),
        (
            "999 octets",
            long.as_bytes(),
            OriginalPart::File(Unfit::LongLine),
            "base64",
        ),
        (
            "NUL",
            b"Subject: x\r\n\r\na\0b\r\n",
            OriginalPart::File(Unfit::Nul),
            "base64",
        ),
        (
            "bare CR",
            b"Subject: x\r\n\r\na\rb\r\n",
            OriginalPart::File(Unfit::BareCr),
            "base64",
        ),
        (
            "bare LF, made CRLF",
            b"Subject: x\n\nbody\n",
            OriginalPart::SevenBit,
            "7bit",
        ),
    ];
    for (what, raw, part, cte) in cases {
        let (original, out) = forward_of(raw);
        assert_eq!(original.part, *part, "{what}");
        let headers = attachment_headers(&out.raw);
        assert!(
            headers.contains(&format!("content-transfer-encoding: {cte}")),
            "{what}: {headers}"
        );
        let m = MessageParser::default().parse(&out.raw).unwrap();
        let att = m.attachment(0).expect(what);
        if part.is_message() {
            assert!(
                headers.contains("content-type: message/rfc822"),
                "{what}: {headers}"
            );
            assert!(att.message().is_some(), "{what}: read as a message");
        } else {
            assert!(
                headers.contains("content-type: application/octet-stream"),
                "{what}"
            );
            assert!(headers.contains("original.eml"), "{what}: {headers}");
        }
        assert_eq!(
            att.contents(),
            original.bytes(),
            "{what}: the bytes come back"
        );
    }
    // LF line ends become CRLF, nothing else changes.
    assert_eq!(Original::new(b"a\nb\r\nc\n").bytes(), b"a\r\nb\r\nc\r\n");
}

#[test]
fn an_8bit_original_goes_as_a_file_to_a_server_without_8bitmime() {
    let raw = "From: priya@example.com\r\nSubject: x\r\n\r\nPromised \u{20b9}10,000\r\n";
    let (_, out) = forward_of(raw.as_bytes());
    assert!(!out.raw.is_ascii());
    let seven = seven_bit(&out.raw).expect("downgraded");
    assert!(seven.is_ascii());
    assert_eq!(
        seven_bit(&seven),
        Some(seven.clone()),
        "nothing left to change"
    );
    let headers = attachment_headers(&seven);
    assert!(
        headers.contains("content-type: application/octet-stream"),
        "{headers}"
    );
    assert!(
        headers.contains("content-transfer-encoding: base64"),
        "{headers}"
    );
    let m = MessageParser::default().parse(&seven).unwrap();
    assert_eq!(m.attachment(0).unwrap().contents(), raw.as_bytes());
    assert_eq!(
        m.body_text(0).as_deref().map(str::trim_end),
        Some("Logged as ESC-2026-000001."),
        "the summary is untouched"
    );
}
