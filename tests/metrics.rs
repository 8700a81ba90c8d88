//! The Prometheus endpoint (`[daemon] metrics`), scraped over HTTP from the
//! real binary running against real servers: what was fetched, triaged,
//! opened and flagged, what was sent and refused, the outbox's queue, the
//! batch and ingest histograms, a mailbox's connection and its IMAP
//! errors; and nothing but `/metrics` served.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use mailtriage_testkit::{
    Daemon, Dovecot, Extra, SmtpCapture, by_rcpt, config_dir, fixture, wait_until,
};

const WAIT: Duration = Duration::from_secs(30);

/// A complete escalation without flags: an acknowledgement and nothing
/// else.
fn escalation(n: u32, from: &str) -> Vec<u8> {
    format!(
        "From: Agent <{from}>\r\nTo: ops@example.com\r\nSubject: Escalation (Order #CK6{n:04})\r\nMessage-ID: <metrics-{n}@agents.example.com>\r\n\r\nCustomer Name: Asha Verma\r\nOrder ID: CK6{n:04}\r\nPhone: 98765 4{n:04}\r\nIssue: The refund has not arrived after ten days.\r\n"
    )
    .into_bytes()
}

/// `GET path` over HTTP/1.1: the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The samples of a scrape: `name{labels}` to value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(s: &HashMap<String, f64>, name: &str) -> f64 {
    s.get(name).copied().unwrap_or(-1.0)
}

#[test]
fn the_metrics_endpoint_counts_what_the_daemon_did() {
    let mut d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(
        &d,
        &s,
        Extra {
            // Any free port: the log says which.
            daemon: "metrics = \"127.0.0.1:0\"",
            ..Extra::default()
        },
    );
    let mut daemon = Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());
    let mut addr = String::new();
    wait_until(
        WAIT,
        || {
            let log = daemon.run_log();
            let found = log
                .split("http://")
                .nth(1)
                .and_then(|rest| rest.split_once("/metrics"))
                .map(|(a, _)| a.to_string());
            found.map(|a| addr = a).is_some()
        },
        || format!("the endpoint was not announced\n{}", daemon.log_tail()),
    );
    let scrape = |addr: &str| {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        samples(&body)
    };
    let why = |what: &str, daemon: &Daemon| {
        format!(
            "{what}\n{}\n{}",
            get(&addr, "/metrics").1,
            daemon.log_tail()
        )
    };

    // Three escalations, one of them a review threat (acknowledged and
    // forwarded), and a newsletter left alone.
    d.append("ops", "INBOX", &fixture("23-review-threat-trustpilot.eml"));
    d.append("ops", "INBOX", &escalation(1, "one@example.com"));
    d.append("ops", "INBOX", &escalation(2, "two@example.com"));
    d.append("ops", "INBOX", &fixture("45-newsletter-list.eml"));
    wait_until(
        WAIT,
        || {
            let got = s.messages();
            by_rcpt(&got, "one@example.com").len() == 1
                && by_rcpt(&got, "two@example.com").len() == 1
                && by_rcpt(&got, "deepa.r@example.com").len() == 1
                && by_rcpt(&got, "tier2@example.com").len() == 1
        },
        || {
            why(
                "the acknowledgements and the forward were not sent",
                &daemon,
            )
        },
    );
    // One refused for good.
    s.set_reject(Some(550));
    d.append("ops", "INBOX", &escalation(3, "refused@example.com"));
    wait_until(
        WAIT,
        || {
            s.rejections()
                .iter()
                .any(|l| l.contains("refused@example.com"))
        },
        || why("the last acknowledgement was not tried", &daemon),
    );
    wait_until(
        WAIT,
        || {
            value(
                &scrape(&addr),
                "mailtriage_outbox_items{state=\"undeliverable\"}",
            ) == 1.0
        },
        || why("the undeliverable item is not counted", &daemon),
    );

    let m = scrape(&addr);
    let sent = s.messages().len() as f64;
    let expected = [
        ("mailtriage_messages_fetched_total{mailbox=\"ops\"}", 5.0),
        (
            "mailtriage_messages_triaged_total{mailbox=\"ops\",outcome=\"opened\"}",
            4.0,
        ),
        (
            "mailtriage_messages_triaged_total{mailbox=\"ops\",outcome=\"ignored\"}",
            1.0,
        ),
        (
            "mailtriage_cases_opened_total{mailbox=\"ops\",kind=\"escalation\"}",
            4.0,
        ),
        ("mailtriage_flags_total{category=\"review_threat\"}", 1.0),
        ("mailtriage_mail_sent_total{kind=\"reply\"}", 3.0),
        ("mailtriage_smtp_errors_total{class=\"permanent\"}", 1.0),
        ("mailtriage_outbox_items{state=\"pending\"}", 0.0),
        ("mailtriage_outbox_items{state=\"retrying\"}", 0.0),
        ("mailtriage_mailbox_up{mailbox=\"ops\"}", 1.0),
        (
            "mailtriage_ingest_latency_seconds_count{mailbox=\"ops\"}",
            5.0,
        ),
    ];
    for (name, want) in expected {
        assert_eq!(value(&m, name), want, "{name}\n{}", why("", &daemon));
    }
    let sent_total: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("mailtriage_mail_sent_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(sent_total, sent, "every message the server accepted");
    assert!(
        value(
            &m,
            "mailtriage_batch_duration_seconds_count{mailbox=\"ops\"}"
        ) >= 1.0,
        "{}",
        why("no batch timed", &daemon)
    );
    assert!(
        value(&m, "mailtriage_flags_total{category=\"profanity\"}") < 0.0,
        "a category no case had is not there"
    );

    // Only /metrics is served.
    let (status, _) = get(&addr, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // The IMAP server goes away: the mailbox is down and its error counted.
    d.stop();
    wait_until(
        WAIT,
        || {
            let m = scrape(&addr);
            value(&m, "mailtriage_mailbox_up{mailbox=\"ops\"}") == 0.0
                && value(&m, "mailtriage_imap_errors_total{mailbox=\"ops\"}") >= 1.0
        },
        || why("the outage was not counted", &daemon),
    );
    daemon.stop();
}
