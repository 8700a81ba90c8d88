//! Backup and restore against the real servers: the real daemon binary
//! processes mail; `mailtriage export` through its control socket and
//! with it stopped give the same records; the database is deleted and
//! `mailtriage import` makes a new one; the daemon started again on the
//! same mailboxes with more mail sends nothing twice, duplicates no case,
//! lists the same cases, says the same in `status` and `outbox list`, and
//! new mail joins the restored cases.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use mail_parser::MessageParser;
use mailtriage_testkit::{
    Captured, Daemon, Dovecot, Extra, SmtpCapture, by_rcpt, config_dir, database, fixture, subject,
    wait_until,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `mailtriage ARGS --config DIR`, without the systemd directories of the
/// test's own environment.
fn mailtriage(dir: &Path, args: &[&str]) -> Output {
    mailtriage_testkit::run_cli(env!("CARGO_BIN_EXE_mailtriage"), dir, args)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cases_json(dir: &Path) -> Value {
    serde_json::from_str(&ok(&mailtriage(dir, &["cases", "list", "--json"]))).expect("JSON")
}

/// `outbox list --state all --json`: every item, with its state, tries,
/// error and size.
fn outbox_json(dir: &Path) -> Value {
    serde_json::from_str(&ok(&mailtriage(
        dir,
        &["outbox", "list", "--state", "all", "--json"],
    )))
    .expect("JSON")
}

/// What `status --json` says of the data, once healthy (exit 0): the
/// verdict, each mailbox's UIDVALIDITY, cursor and last message, the
/// outbox, each digest's last period; not what is of this run of the
/// daemon (its start, a connection's, the time, the database's size).
fn status_of_data(dir: &Path, source: &str) -> Value {
    let report = std::cell::RefCell::new(Value::Null);
    wait_until(
        WAIT,
        || {
            let out = mailtriage(dir, &["status", "--json"]);
            *report.borrow_mut() = serde_json::from_slice(&out.stdout).unwrap_or_default();
            out.status.code() == Some(0) || (source == "database" && out.status.code() == Some(1))
        },
        || format!("status is not healthy: {:#}", report.borrow()),
    );
    let r = report.into_inner();
    assert_eq!(r["source"], source, "{r:#}");
    let mailboxes: Vec<Value> = r["mailboxes"]
        .as_array()
        .expect("mailboxes")
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m["name"],
                "uid_validity": m["uid_validity"],
                "last_uid": m["last_uid"],
                "last_message": m["last_message"],
            })
        })
        .collect();
    let digests: Vec<Value> = r["digests"]
        .as_array()
        .expect("digests")
        .iter()
        .map(|d| serde_json::json!({ "name": d["name"], "last": d["last"] }))
        .collect();
    serde_json::json!({
        "verdict": r["verdict"],
        "reasons": r["reasons"],
        "mailboxes": mailboxes,
        "outbox": r["outbox"],
        "digests": digests,
    })
}

/// `export --out FILE`: the file's lines.
fn export(dir: &Path, file: &Path) -> Vec<String> {
    let said = ok(&mailtriage(
        dir,
        &["export", "--out", file.to_str().expect("utf-8 path")],
    ));
    assert!(said.starts_with("exported "), "{said}");
    std::fs::read_to_string(file)
        .expect("the export")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until every outbox item of the store is sent, as an export
/// through the running daemon says; returns that export's lines.
fn export_when_all_sent(dir: &Path, file: &Path, items: usize) -> Vec<String> {
    let lines = std::cell::RefCell::new(Vec::new());
    wait_until(
        WAIT,
        || {
            let lines = &mut *lines.borrow_mut();
            *lines = export(dir, file);
            let states: Vec<Value> = lines
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["record"] == "outbox")
                .map(|v| v["item"]["state"].clone())
                .collect();
            states.len() == items && states.iter().all(|s| s == "sent")
        },
        || format!("not all {items} outbox items sent: {:#?}", lines.borrow()),
    );
    lines.into_inner()
}

/// The records of two exports are the same (their headers' times, and so
/// their end lines' checksums, may differ); says where they part, briefly.
fn assert_same_records(a: &[String], b: &[String], what: &str) {
    let (a, b) = (&a[1..a.len() - 1], &b[1..b.len() - 1]);
    let cut = |l: &str| l.chars().take(300).collect::<String>();
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
        panic!(
            "{what}: record {} differs:\n{}\n{}",
            i + 1,
            cut(&a[i]),
            cut(&b[i])
        );
    }
    assert_eq!(a.len(), b.len(), "{what}: as many records");
}

fn case_id_of(c: &Captured) -> String {
    mailtriage::lifecycle::case_id_in_subject(&subject(c))
        .unwrap_or_else(|| panic!("no case id in {:?}", subject(c)))
}

#[test]
fn a_restored_database_goes_on_where_the_old_one_stopped() {
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    let dir = dir.path();
    let binary = env!("CARGO_BIN_EXE_mailtriage");

    // Two escalations (a pickup complaint: acknowledgement and CX
    // forward; a review threat: acknowledgement and Tier-2 forward) and a
    // newsletter left alone.
    d.append("ops", "INBOX", &fixture("06-pickup-rude-vendor.eml"));
    d.append("ops", "INBOX", &fixture("23-review-threat-trustpilot.eml"));
    d.append("ops", "INBOX", &fixture("45-newsletter-list.eml"));
    let mut daemon = Daemon::spawn(binary, dir);
    let got = s.wait_for(4, WAIT);
    let ack = by_rcpt(&got, "ravi.k@example.com")[0];
    let pickup = case_id_of(ack);
    let ack_id = MessageParser::default()
        .parse(&ack.raw)
        .and_then(|m| m.message_id().map(str::to_string))
        .expect("the acknowledgement's Message-ID");
    let review = case_id_of(by_rcpt(&got, "deepa.r@example.com")[0]);
    assert_ne!(pickup, review);

    // Through the daemon's socket, once everything is sent.
    let running = export_when_all_sent(dir, &dir.join("running.jsonl"), 4);
    assert!(
        daemon.count_lines("export sent") >= 1,
        "the daemon answered the export\n{}",
        daemon.log_tail()
    );
    let before = cases_json(dir);
    assert_eq!(before.as_array().map(Vec::len), Some(2), "{before}");
    let status_before = status_of_data(dir, "daemon");
    assert_eq!(status_before["verdict"], "healthy", "{status_before:#}");
    assert_eq!(
        status_before["mailboxes"][0]["last_uid"], 3,
        "{status_before:#}"
    );
    let outbox_before = outbox_json(dir);
    assert_eq!(
        outbox_before.as_array().map(Vec::len),
        Some(4),
        "{outbox_before:#}"
    );
    // No import while the daemon runs.
    let refused = mailtriage(dir, &["import", "running.jsonl"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("stop it first"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    daemon.assert_running();
    daemon.stop();

    // With the daemon stopped, from the database: the same records.
    let stopped = export(dir, &dir.join("stopped.jsonl"));
    assert_same_records(
        &running,
        &stopped,
        "through the daemon and from the database",
    );
    let header: Value = serde_json::from_str(&stopped[0]).unwrap();
    assert_eq!(header["counts"]["case"], 2);
    assert_eq!(header["counts"]["outbox"], 4);
    assert_eq!(header["counts"]["cursor"], 1);
    // The two forwards' originals, once each, apart from their bytes.
    assert_eq!(header["counts"]["original"], 2);
    assert_eq!(header["counts"]["last_message"], 1);
    let stopped_status = status_of_data(dir, "database");
    let stopped_outbox = outbox_json(dir);

    // Restore: the database deleted, the export imported into a new one.
    std::fs::remove_dir_all(database(dir)).expect("delete the database");
    let said = ok(&mailtriage(
        dir,
        &["import", dir.join("stopped.jsonl").to_str().unwrap()],
    ));
    assert!(
        said.starts_with("imported ") && said.contains("2 case, "),
        "{said}"
    );
    // Once only: the database now holds something.
    let again = mailtriage(
        dir,
        &["import", dir.join("stopped.jsonl").to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let restored = export(dir, &dir.join("restored.jsonl"));
    assert_same_records(&stopped, &restored, "the restored database");
    assert_eq!(
        status_of_data(dir, "database"),
        stopped_status,
        "status from the restored database"
    );
    assert_eq!(outbox_json(dir), stopped_outbox, "outbox list, restored");

    // The daemon again, on the same mailboxes: nothing reprocessed,
    // nothing resent, the same cases.
    // Ready once it holds the database and every mailbox has reported (a
    // command run before would open the database itself, in its way).
    let mut daemon = Daemon::spawn(binary, dir);
    wait_until(
        WAIT,
        || daemon.count_lines("every mailbox has reported; ready") == 1,
        || format!("the restarted daemon is not ready\n{}", daemon.log_tail()),
    );
    assert_eq!(cases_json(dir), before, "cases list is the same");
    assert_eq!(
        status_of_data(dir, "daemon"),
        status_before,
        "status through the restarted daemon"
    );
    assert_eq!(outbox_json(dir), outbox_before, "outbox list is the same");

    // New mail: the agent answers the pickup case's acknowledgement with a
    // new threat (Tier 2 now: forwarded to Tier 2), and the review
    // threat's order is escalated again (joins its case: a joined reply).
    d.append(
        "ops",
        "INBOX",
        format!(
            "From: Ravi Kumar <ravi.k@example.com>\r\nTo: ops@example.com\r\nSubject: Re: Pickup complaint [{pickup}]\r\nMessage-ID: <threat@mail.example.com>\r\nIn-Reply-To: <{ack_id}>\r\nReferences: <pickup-rude-vendor.06@mail.example.com> <{ack_id}>\r\n\r\nUpdate: the customer now says he will get a lawyer and sue us.\r\n"
        )
        .as_bytes(),
    );
    let second = String::from_utf8_lossy(&fixture("23-review-threat-trustpilot.eml")).replace(
        "review-threat-trustpilot.23@mail.example.com",
        "review-threat-trustpilot.again@mail.example.com",
    );
    d.append("ops", "INBOX", second.as_bytes());
    let got = s.wait_for(6, WAIT);
    let tier2 = by_rcpt(&got, "tier2@example.com");
    assert_eq!(
        tier2.len(),
        2,
        "the review threat's, then the pickup case's"
    );
    assert_eq!(case_id_of(tier2[1]), pickup);
    let to_deepa = by_rcpt(&got, "deepa.r@example.com");
    assert_eq!(
        to_deepa.len(),
        2,
        "the acknowledgement, then the joined reply"
    );
    assert_eq!(case_id_of(to_deepa[1]), review);
    let joined = MessageParser::default().parse(&to_deepa[1].raw).unwrap();
    assert!(
        joined
            .body_text(0)
            .is_some_and(|b| b.contains("already has a case")),
        "{:?}",
        joined.body_text(0)
    );

    // Settled: everything sent once, no case twice.
    export_when_all_sent(dir, &dir.join("after.jsonl"), 6);
    daemon.stop();
    let got = s.messages();
    assert_eq!(
        got.len(),
        6,
        "nothing sent twice: {:?}",
        got.iter().map(subject).collect::<Vec<_>>()
    );
    let after = cases_json(dir);
    let ids: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [pickup.as_str(), review.as_str()], "no case twice");
    let show = |id: &str| -> Value {
        serde_json::from_str(&ok(&mailtriage(dir, &["cases", "show", id, "--json"]))).unwrap()
    };
    let p = show(&pickup);
    assert_eq!(p["case"]["case"]["tier"], 2, "{p}");
    assert_eq!(
        p["case"]["history"].as_array().map(Vec::len),
        Some(1),
        "{p}"
    );
    let r = show(&review);
    let history = r["case"]["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len(), 1, "{r}");
    assert_eq!(
        history[0]["message_id"], "review-threat-trustpilot.again@mail.example.com",
        "{r}"
    );
}

/// A config directory whose database is `DIR/db`; no server is contacted.
fn offline_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    mailtriage_testkit::copy_shipped_config(dir.path());
    let mut toml = mailtriage_testkit::MailtriageToml::new(&database(dir.path()), 2525);
    toml.mailbox(
        "ops",
        1143,
        mailtriage_testkit::Secret::Env("MAILTRIAGE_TEST_UNUSED"),
    );
    toml.write(dir.path());
    dir
}

/// A database with a case in it, closed.
fn fill(dir: &Path) {
    let db = database(dir);
    let store = mailtriage::store::Store::open(&db, 1 << 20).expect("open");
    store.reserve_case_id(2026).expect("a case id");
    store
        .enqueue(
            &[mailtriage::outbox::NewOutgoing {
                kind: mailtriage::outbox::OutgoingKind::Health,
                case_id: None,
                message_id: "alert.1@mailtriage.test".into(),
                envelope_from: "mailtriage@example.com".into(),
                recipients: vec!["admin@example.com".into()],
                raw: b"Subject: alert\r\n\r\nbody\xff".to_vec(),
                original: None,
                not_before: None,
            }],
            jiff::Timestamp::from_second(1_000).unwrap(),
        )
        .expect("enqueue");
    drop(store);
    wait_until(
        WAIT,
        || !mailtriage::store::Store::in_use(&db),
        || "the database stays locked".into(),
    );
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn standard_output_and_standard_input_carry_the_same_export() {
    let dir = offline_config();
    let dir = dir.path();
    fill(dir);
    let to_file = export(dir, &dir.join("file.jsonl"));
    let to_stdout = ok(&mailtriage(dir, &["export"]));
    let dash = ok(&mailtriage(dir, &["export", "--out", "-"]));
    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    assert_same_records(&to_file, &lines(&to_stdout), "standard output");
    assert_same_records(&to_file, &lines(&dash), "--out -");

    std::fs::remove_dir_all(database(dir)).unwrap();
    let mut import = Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(["import", "-", "--config"])
        .arg(dir)
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut import.stdin.take().unwrap(), to_stdout.as_bytes()).unwrap();
    let said = ok(&import.wait_with_output().unwrap());
    assert!(
        said.starts_with("imported 3 records (2 counter, 1 outbox) into "),
        "{said}"
    );
    assert_same_records(&to_file, &export(dir, &dir.join("again.jsonl")), "restored");
}

/// A control socket that answers an export with its first records and
/// then hangs up, as a daemon that died in the middle would.
#[test]
fn an_export_cut_short_leaves_no_file() {
    let dir = offline_config();
    let dir = dir.path();
    fill(dir);
    let whole = export(dir, &dir.join("whole.jsonl"));
    std::fs::remove_file(dir.join("whole.jsonl")).unwrap();
    let socket = dir.join("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&conn), &mut request).unwrap();
        assert_eq!(request.trim(), r#"{"request":"export"}"#);
        let answer = format!(
            "{{\"result\":\"ok\",\"value\":{{}}}}\n{}\n{}\n",
            whole[0], whole[1]
        );
        std::io::Write::write_all(&mut conn, answer.as_bytes()).unwrap();
    });
    let out = mailtriage(dir, &["export", "--out", "backup.jsonl"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the daemon's export: the export ends after line 2 without its end line: it is truncated"),
        "{stderr}"
    );
    assert_eq!(
        files_in(dir)
            .iter()
            .filter(|n| n.contains("backup") || n.ends_with(".tmp"))
            .count(),
        0,
        "{:?}",
        files_in(dir)
    );
}

#[test]
fn a_newer_format_is_refused_by_import() {
    let dir = offline_config();
    let dir = dir.path();
    fill(dir);
    let whole = export(dir, &dir.join("whole.jsonl"));
    std::fs::remove_dir_all(database(dir)).unwrap();
    let newer: String = whole
        .iter()
        .map(|l| format!("{}\n", l.replacen(r#""version":1"#, r#""version":7"#, 1)))
        .collect();
    std::fs::write(dir.join("newer.jsonl"), newer).unwrap();
    let out = mailtriage(dir, &["import", dir.join("newer.jsonl").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is in format version 7 (written by mailtriage 0.1.0); this mailtriage (0.1.0) reads version 1 and older"),
        "{stderr}"
    );
    assert!(!database(dir).exists(), "no database made");
}

/// As root (the tests run as root, as CI does), a new database goes to
/// the owner of its directory (the service's user), and another user's
/// database is not opened.
#[test]
fn as_root_the_database_belongs_to_the_owner_of_its_directory() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        eprintln!("not root: nothing to check");
        return;
    }
    let dir = offline_config();
    let dir = dir.path();
    fill(dir);
    let whole = dir.join("whole.jsonl");
    export(dir, &whole);
    std::fs::remove_dir_all(database(dir)).unwrap();
    // The directory the database goes in, as the service's would be.
    std::os::unix::fs::chown(dir, Some(61_234), Some(61_235)).unwrap();
    let said = ok(&mailtriage(dir, &["import", whole.to_str().unwrap()]));
    assert!(said.starts_with("imported 3 records"), "{said}");
    let mut owners = Vec::new();
    let mut walk = vec![database(dir)];
    while let Some(p) = walk.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        owners.push((p.clone(), m.uid(), m.gid()));
        if m.is_dir() {
            walk.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(owners.len() > 2, "{owners:?}");
    assert!(
        owners.iter().all(|(_, u, g)| (*u, *g) == (61_234, 61_235)),
        "{owners:?}"
    );
    // That database now belongs to another user: not opened to see
    // whether it is empty.
    let out = mailtriage(dir, &["import", whole.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("belongs to uid 61234 (the service's user)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
