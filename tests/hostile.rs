//! Hostile input: whatever arrives, triage returns a case or a clear error,
//! never a panic, a stack overflow or a hang.
//!
//! Each input runs on its own thread with the stack size of a tokio worker
//! (2 MiB), and the test waits for the result on a channel with a generous
//! timeout: a hang fails the test instead of stalling the suite. The timeout
//! is a bound on waiting, not a performance assertion.

use std::sync::mpsc;
use std::time::Duration;

use mailtriage::config::Config;
use mailtriage::message::MessageError;

/// Outcome of triaging one input: the kind, or the error text.
fn triage(name: &'static str, raw: Vec<u8>) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let config = Config::builtin().expect("built-in config");
            let result = config
                .triage
                .parse(&raw)
                .map(|(_, case)| {
                    // The result must also serialise and route.
                    serde_json::to_string(&case).expect("serialisable");
                    config.router.route(&case, Some("ops"));
                    case.kind.name().to_string()
                })
                .map_err(|e: MessageError| e.to_string());
            let _ = tx.send(result);
        })
        .expect("spawn");
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: no result within 60 s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{name}: triage panicked"),
    }
}

const HEAD: &str = "From: Priya Sharma <priya.sharma@example.com>\r\nTo: ops@example.com\r\nSubject: Escalation (Order #CK1001)\r\nDate: Mon, 23 Nov 2026 10:02:00 +0530\r\nMessage-ID: <hostile@example.com>\r\n";

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

#[test]
fn empty_input_is_an_error() {
    assert_eq!(triage("empty", vec![]), Err("input is empty".into()));
    assert_eq!(
        triage("blank", b"\r\n\r\n  ".to_vec()),
        Err("input is empty".into())
    );
}

#[test]
fn binary_garbage_is_not_an_email() {
    for seed in 1..=20u64 {
        let r = triage("garbage", noise(64 * 1024, seed));
        assert!(r.is_err(), "seed {seed}: garbage read as {r:?}");
    }
}

#[test]
fn twenty_megabyte_attachment() {
    let mut raw = String::from(HEAD);
    raw.push_str("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCustomer Name: Asha Rao\r\nIssue: vendor asked for extra money\r\n--b\r\nContent-Type: video/mp4; name=\"call.mp4\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    while raw.len() < 20 * 1024 * 1024 {
        raw.push_str(line);
    }
    raw.push_str("--b--\r\n");
    assert_eq!(triage("20mb", raw.into_bytes()), Ok("escalation".into()));
}

#[test]
fn ten_thousand_header_lines() {
    let mut raw = String::from(HEAD);
    for i in 0..10_000 {
        raw.push_str(&format!("X-Trace-{i}: hop {i} via relay.example.com\r\n"));
    }
    raw.push_str("\r\nCustomer Name: Asha Rao\r\nOrder ID: CK1\r\n");
    assert_eq!(triage("headers", raw.into_bytes()), Ok("escalation".into()));
}

#[test]
fn multiparts_nested_a_thousand_deep() {
    let depth = 1000;
    let mut raw = String::from(HEAD);
    raw.push_str("MIME-Version: 1.0\r\n");
    for i in 0..depth {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    raw.push_str("Content-Type: text/plain\r\n\r\nCustomer Name: Asha\r\nOrder ID: CK2\r\n");
    for i in (0..depth).rev() {
        raw.push_str(&format!("--b{i}--\r\n"));
    }
    let r = triage("nested", raw.into_bytes());
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn message_rfc822_nested_a_thousand_deep() {
    let mut raw = String::new();
    for _ in 0..1000 {
        raw.push_str(HEAD);
        raw.push_str("MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n");
    }
    raw.push_str(HEAD);
    raw.push_str("\r\nCustomer Name: Asha\r\n");
    let r = triage("rfc822", raw.into_bytes());
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn unknown_and_lying_charsets() {
    for charset in [
        "x-unknown-9",
        "utf-7",
        "",
        "utf-16",
        "iso-2022-jp",
        "\"\"",
        "binary",
    ] {
        let raw = format!(
            "{HEAD}MIME-Version: 1.0\r\nContent-Type: text/plain; charset={charset}\r\n\r\nCustomer Name: Jos\u{e9}\r\nOrder ID: CK3\r\n"
        );
        let r = triage("charset", raw.into_bytes());
        assert_eq!(r, Ok("escalation".into()), "charset {charset:?}");
    }
    // Declared UTF-8, but the bytes are Latin-1.
    let mut raw =
        format!("{HEAD}Content-Type: text/plain; charset=utf-8\r\n\r\nCustomer Name: Jos")
            .into_bytes();
    raw.extend_from_slice(b"\xe9 M\xfcller\r\nOrder ID: CK4\r\n");
    assert_eq!(triage("latin1-as-utf8", raw), Ok("escalation".into()));
}

#[test]
fn nul_bytes_everywhere() {
    let mut raw = HEAD.replace("Subject: ", "Subject: \0").into_bytes();
    raw.extend_from_slice(b"\r\nCustomer\0 Name: Asha\0\r\nOrder ID: CK5\0\0\r\n\0\0\0");
    let r = triage("nul", raw);
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn one_megabyte_single_line() {
    let mut raw = String::from(HEAD);
    raw.push_str("\r\nIssue: ");
    for _ in 0..(1024 * 1024 / 8) {
        raw.push_str("scam no ");
    }
    raw.push_str("\r\n");
    assert_eq!(
        triage("long-line", raw.clone().into_bytes()).map(|_| ()),
        Ok(())
    );
    // The same as HTML without a single tag closed.
    let html = format!(
        "{HEAD}Content-Type: text/html\r\n\r\n<p>{}<b<i<&amp&#99999999;&#x;",
        "&lt;<".repeat(100_000)
    );
    assert!(triage("html", html.into_bytes()).is_ok());
}

#[test]
fn mutated_fixtures_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "eml") {
            seeds.push(std::fs::read(p).expect("fixture"));
        }
    }
    assert!(!seeds.is_empty(), "no fixtures to mutate");
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let config = Config::builtin().expect("config");
            let mut state = 0x9e3779b97f4a7c15u64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut runs = 0;
            for round in 0..40 {
                for seed in &seeds {
                    let mut m = seed.clone();
                    for _ in 0..(1 + round % 8) {
                        let r = next() as usize;
                        match r % 4 {
                            0 if !m.is_empty() => {
                                let i = r / 4 % m.len();
                                m[i] = (next() & 0xff) as u8;
                            }
                            1 if !m.is_empty() => {
                                let i = r / 4 % m.len();
                                m.truncate(i);
                            }
                            2 => {
                                let i = r / 4 % (m.len() + 1);
                                let junk: &[u8] = match next() % 6 {
                                    0 => b"\r\n--",
                                    1 => b"=?utf-8?B?",
                                    2 => b"<blockquote>",
                                    3 => b"\xff\xfe",
                                    4 => b"Content-Type: multipart/mixed; boundary=x\r\n",
                                    _ => b":",
                                };
                                m.splice(i..i, junk.iter().copied());
                            }
                            _ if !m.is_empty() => {
                                let i = r / 4 % m.len();
                                let j = (i + (next() as usize % 64)).min(m.len());
                                m.drain(i..j);
                            }
                            _ => {}
                        }
                    }
                    if let Ok((email, case)) = config.triage.parse(&m) {
                        for a in config.router.route(&case, None) {
                            let _ = mailtriage::letter::render(
                                &config.router,
                                &a,
                                &mailtriage::letter::Letter::new("ESC-1", None, &case, &email),
                            );
                        }
                    }
                    runs += 1;
                }
            }
            let _ = tx.send(runs);
        })
        .expect("spawn");
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(runs) => assert!(runs >= 40, "{runs} mutated messages ran"),
        Err(e) => panic!("mutation run did not finish: {e}"),
    }
}
