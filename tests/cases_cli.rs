//! `mailtriage cases` and `mailtriage digest` as an operator uses them:
//! straight on the database when no daemon runs, and through the daemon's
//! control socket while the daemon holds the database (here the socket
//! server runs in the test, with the database open, as the daemon would).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailtriage::batch::{Batch, BatchItem, BatchOutcome, Cursor, MessageKey};
use mailtriage::config::Config;
use mailtriage::control::{self, Control, Request, Response};
use mailtriage::outbox::{NewOutgoing, OutgoingKind};
use mailtriage::record::{CaseRecord, Status};
use mailtriage::store::Store;
use mailtriage_testkit::{MailtriageToml, Secret, copy_shipped_config, database};
use serde_json::Value;
use tempfile::TempDir;

/// A config directory: the shipped triage config and a mailtriage.toml
/// whose database is `DIR/db`. No server is ever contacted.
fn config_dir() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_shipped_config(dir.path());
    let mut toml = MailtriageToml::new(&database(dir.path()), 2525);
    toml.mailbox("ops", 1143, Secret::Env("MAILTRIAGE_TEST_UNUSED"));
    toml.write(dir.path());
    dir
}

/// 2026-01-10, 2026-03-01 and 2026-02-15, midnight UTC.
const JAN_10: i64 = 1_768_003_200;
const MAR_01: i64 = 1_772_323_200;
const FEB_15: i64 = 1_771_113_600;

/// The cases every test starts with, by id:
/// - `ESC-2026-000001`: open, tier 1, risk 2, Asha Verma, CK1, received
///   Jan 10; a reply (sent) and a forward (retried after a 451);
/// - `ESC-2026-000002`: open, tier 2, risk 5 (scam, lawyer), Rahul Mehta,
///   CK2, received Mar 1;
/// - `ESC-2026-000003`: resolved by mail, tier 1, received Feb 15.
struct Cases {
    first: String,
    second: String,
    third: String,
}

fn triage(uid: u32, fields: &str) -> mailtriage::case::Case {
    let config = Config::builtin().expect("built-in config");
    let raw = format!(
        "From: priya@example.com\r\nSubject: Escalation (Order #CK{uid})\r\nMessage-ID: <m{uid}@example.com>\r\n\r\n{fields}\r\n"
    );
    config.triage.parse(raw.as_bytes()).expect("triage").1
}

fn outgoing(case_id: &str, kind: OutgoingKind, to: &str, n: usize) -> NewOutgoing {
    NewOutgoing {
        kind,
        case_id: Some(case_id.into()),
        message_id: format!("{case_id}.{n}@mailtriage.test"),
        envelope_from: "mailtriage@example.com".into(),
        recipients: vec![to.into()],
        raw: format!("Subject: [{case_id}] {kind}\r\n\r\nbody").into_bytes(),
        original: None,
        not_before: None,
    }
}

/// Stores the three cases in the database of `dir` (and closes it).
fn fill(dir: &Path) -> Cases {
    let store = Store::open(&database(dir), 1 << 20).expect("open store");
    let mut items = Vec::new();
    let record = |uid: u32, received: i64, fields: &str| {
        let id = store.reserve_case_id(2026).expect("case id");
        let mut r = CaseRecord::new(
            id,
            "ops",
            uid,
            7,
            ts(received),
            triage(uid, fields),
            Some("Priya".into()),
            vec![],
        );
        // As the shipped routing table's acknowledge rule does.
        r.digests = vec!["managers_daily".into()];
        r
    };
    let first = record(
        1,
        JAN_10,
        "Customer Name: Asha Verma\r\nOrder ID: CK1\r\nIssue: pickup was late and the vendor was rude",
    );
    let second = record(
        2,
        MAR_01,
        "Customer Name: Rahul Mehta\r\nOrder ID: CK2\r\nIssue: customer says we are a scam and he will call his lawyer",
    );
    let mut third = record(
        3,
        FEB_15,
        "Customer Name: Meera\r\nOrder ID: CK3\r\nIssue: wrong price quoted on the phone",
    );
    assert!(mailtriage::lifecycle::resolve(
        &mut third,
        Some("price honoured"),
        "cx@example.com",
        ts(FEB_15 + 3600)
    ));
    let ids = Cases {
        first: first.id.clone(),
        second: second.id.clone(),
        third: third.id.clone(),
    };
    let first_out = vec![
        outgoing(&first.id, OutgoingKind::Reply, "priya@example.com", 0),
        outgoing(
            &first.id,
            OutgoingKind::Forward,
            "ops.manager@example.com",
            1,
        ),
    ];
    for (uid, record, outgoing) in [
        (1, first, first_out),
        (2, second, vec![]),
        (3, third, vec![]),
    ] {
        items.push(BatchItem {
            key: MessageKey::new(
                Some(&format!("m{uid}@example.com")),
                format!("raw {uid}").as_bytes(),
            ),
            uid,
            outcome: BatchOutcome::Case {
                record: Box::new(record),
                outgoing,
                replied_to: None,
            },
        });
    }
    store
        .commit(&Batch {
            mailbox: "ops".into(),
            cursor: Cursor {
                uid_validity: 7,
                last_uid: 3,
            },
            items,
            server: vec![],
            now: ts(JAN_10),
            vendors_reported: vec![],
        })
        .expect("commit");
    store.mark_sent(1, ts(JAN_10 + 5)).expect("mark sent");
    store
        .mark_retry(
            2,
            "451 4.3.0 try again later",
            ts(JAN_10 + 5),
            ts(JAN_10 + 60),
        )
        .expect("mark retry");
    close(store, &database(dir));
    ids
}

/// Closes the store and waits until its lock is released: sled's
/// background threads may hold the database a moment after the last
/// handle is dropped.
fn close(store: Store, db: &Path) {
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Store::in_use(db) {
        assert!(
            Instant::now() < deadline,
            "{} still locked after 10 s",
            db.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the binary with `args`, without the systemd directories of the
/// test's own environment, plus `env`.
fn run_with(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailtriage"));
    cmd.args(args)
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run mailtriage")
}

/// `mailtriage ARGS --config DIR` without a daemon.
fn run(dir: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    let config = dir.to_str().expect("utf-8 temp path");
    all.extend(["--config", config]);
    run_with(&all, &[])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Standard output of a command that must succeed.
fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(out: &Output) -> Value {
    let s = ok(out);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The case ids of `cases list --json`.
fn listed(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn list_prints_a_table_or_json_and_filters() {
    let dir = config_dir();
    let c = fill(dir.path());

    let table = ok(&run(dir.path(), &["cases", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    for column in [
        "CASE", "STATUS", "TIER", "RISK", "AGE", "ORDER", "CUSTOMER", "ISSUE",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    let row = |id: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row for {id}: {table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let first = row(c.first.as_str());
    assert_eq!(&first[1..4], ["open", "1", "2"], "{table}");
    assert!(first.contains(&"CK1") && first.contains(&"Asha"), "{table}");
    let second = row(c.second.as_str());
    assert_eq!(&second[1..4], ["open", "2", "5"], "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("customer says we are a scam"))
    );
    assert_eq!(row(c.third.as_str())[1], "resolved");

    let all = json(&run(dir.path(), &["cases", "list", "--json"]));
    assert_eq!(
        listed(&all),
        [c.first.as_str(), c.second.as_str(), c.third.as_str()]
    );
    assert_eq!(all[1]["case"]["fields"]["customer_name"], "Rahul Mehta");
    assert_eq!(all[2]["status"], "resolved");
    assert_eq!(all[0]["outbox"], serde_json::json!([1, 2]));

    let filtered = |args: &[&str]| {
        let mut a = vec!["cases", "list", "--json"];
        a.extend_from_slice(args);
        listed(&json(&run(dir.path(), &a)))
    };
    assert_eq!(filtered(&["--open"]), [c.first.as_str(), c.second.as_str()]);
    assert_eq!(filtered(&["--tier", "2"]), [c.second.as_str()]);
    assert_eq!(
        filtered(&["--tier", "1"]),
        [c.first.as_str(), c.third.as_str()]
    );
    assert_eq!(filtered(&["--risk-min", "4"]), [c.second.as_str()]);
    assert_eq!(
        filtered(&["--since", "2026-02-01"]),
        [c.second.as_str(), c.third.as_str()]
    );
    // Midnight UTC is included; an RFC 3339 time with an offset works too.
    assert_eq!(
        filtered(&["--since", "2026-02-15"]),
        [c.second.as_str(), c.third.as_str()]
    );
    assert_eq!(
        filtered(&["--since", "2026-02-15T01:00:00+01:00"]),
        [c.second.as_str(), c.third.as_str()]
    );
    assert_eq!(
        filtered(&["--since", "2026-02-15T00:00:01Z"]),
        [c.second.as_str()]
    );
    assert_eq!(
        filtered(&["--open", "--since", "2026-02-01"]),
        [c.second.as_str()]
    );
    assert!(filtered(&["--open", "--tier", "1", "--risk-min", "3"]).is_empty());

    let none = ok(&run(
        dir.path(),
        &["cases", "list", "--since", "2027-01-01"],
    ));
    assert_eq!(none.trim(), "no cases");

    // A date that is not one is a usage error.
    for bad in ["yesterday", "2026-13-01", "2026-02-15T00:00"] {
        let out = run(dir.path(), &["cases", "list", "--since", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("YYYY-MM-DD"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = run(dir.path(), &["cases", "list", "--tier", "3"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn show_prints_fields_flags_history_and_messages() {
    let dir = config_dir();
    let c = fill(dir.path());

    let shown = ok(&run(dir.path(), &["cases", "show", c.second.as_str()]));
    assert!(
        shown.starts_with(&format!("{}  open  tier 2  risk 5", c.second)),
        "{shown}"
    );
    for want in [
        "Priya <priya@example.com>",
        "customer name",
        "Rahul Mehta",
        "order id      CK2",
        "fraud: scam (in body)",
        "legal: lawyer (in body)",
        "2026-03-01 00:00 UTC  priya@example.com  opened",
    ] {
        assert!(shown.contains(want), "no {want:?} in:\n{shown}");
    }

    let shown = ok(&run(dir.path(), &["cases", "show", c.first.as_str()]));
    for want in [
        "#1 reply to priya@example.com: sent, 1 attempt, sent 2026-01-10 00:00 UTC",
        "#2 forward to ops.manager@example.com: pending, 1 attempt, next try 2026-01-10 00:01 UTC",
        "last error: 451 4.3.0 try again later",
    ] {
        assert!(shown.contains(want), "no {want:?} in:\n{shown}");
    }

    let shown = ok(&run(dir.path(), &["cases", "show", c.third.as_str()]));
    for want in [
        "resolution   price honoured",
        "2026-02-15 01:00 UTC  cx@example.com  status open -> resolved; resolution note: price honoured",
    ] {
        assert!(shown.contains(want), "no {want:?} in:\n{shown}");
    }

    let v = json(&run(
        dir.path(),
        &["cases", "show", c.first.as_str(), "--json"],
    ));
    assert_eq!(v["case"]["id"], c.first.as_str());
    assert_eq!(v["case"]["case"]["fields"]["order_id"], "CK1");
    let outbox = v["outbox"].as_array().expect("outbox array");
    assert_eq!(outbox.len(), 2);
    assert_eq!(outbox[0]["kind"], "reply");
    assert_eq!(outbox[0]["state"], "sent");
    assert_eq!(outbox[1]["state"], "pending");
    assert_eq!(outbox[1]["attempts"], 1);
    assert_eq!(outbox[1]["last_error"], "451 4.3.0 try again later");
}

#[test]
fn resolve_and_reopen_change_the_case_and_its_history() {
    let dir = config_dir();
    let c = fill(dir.path());

    let out = ok(&run(
        dir.path(),
        &[
            "cases",
            "resolve",
            c.first.as_str(),
            "--note",
            "refund issued",
        ],
    ));
    assert_eq!(out.trim(), format!("{} resolved", c.first));
    let v = json(&run(
        dir.path(),
        &["cases", "show", c.first.as_str(), "--json"],
    ));
    assert_eq!(v["case"]["status"], "resolved");
    assert_eq!(v["case"]["resolution"], "refund issued");
    assert!(v["case"]["resolved_at"].is_i64());
    let history = v["case"]["history"].as_array().expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["by"], "cli");
    assert_eq!(
        history[0]["changes"],
        serde_json::json!(["status open -> resolved", "resolution note: refund issued"])
    );
    let shown = ok(&run(dir.path(), &["cases", "show", c.first.as_str()]));
    assert!(
        shown.contains("UTC  cli  status open -> resolved; resolution note: refund issued"),
        "{shown}"
    );
    assert!(shown.contains("resolution   refund issued"), "{shown}");
    let open = listed(&json(&run(
        dir.path(),
        &["cases", "list", "--open", "--json"],
    )));
    assert_eq!(open, [c.second.as_str()]);

    // Resolving again changes nothing, and says so.
    let out = ok(&run(
        dir.path(),
        &["cases", "resolve", c.first.as_str(), "--note", "again"],
    ));
    assert!(out.contains("already resolved"), "{out}");
    let v = json(&run(
        dir.path(),
        &["cases", "show", c.first.as_str(), "--json"],
    ));
    assert_eq!(v["case"]["history"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["case"]["resolution"], "refund issued");

    let out = ok(&run(dir.path(), &["cases", "reopen", c.first.as_str()]));
    assert_eq!(out.trim(), format!("{} reopened", c.first));
    let v = json(&run(
        dir.path(),
        &["cases", "show", c.first.as_str(), "--json"],
    ));
    assert_eq!(v["case"]["status"], "open");
    assert!(v["case"]["resolved_at"].is_null());
    assert_eq!(v["case"]["history"][1]["by"], "cli");
    assert_eq!(
        v["case"]["history"][1]["changes"],
        serde_json::json!(["status resolved -> open"])
    );
    let open = listed(&json(&run(
        dir.path(),
        &["cases", "list", "--open", "--json"],
    )));
    assert_eq!(open, [c.first.as_str(), c.second.as_str()]);
    let out = ok(&run(dir.path(), &["cases", "reopen", c.first.as_str()]));
    assert!(out.contains("already open"), "{out}");

    // A resolve needs its note.
    let out = run(dir.path(), &["cases", "resolve", c.second.as_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn an_unknown_case_exits_1_with_a_message() {
    let dir = config_dir();
    fill(dir.path());
    for args in [
        vec!["cases", "show", "ESC-2026-999999"],
        vec!["cases", "show", "ESC-2026-999999", "--json"],
        vec!["cases", "resolve", "ESC-2026-999999", "--note", "x"],
        vec!["cases", "reopen", "ESC-2026-999999"],
    ] {
        let out = run(dir.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("no case ESC-2026-999999"),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn config_and_database_problems_are_reported() {
    // No mailtriage.toml: a config error.
    let empty = tempfile::tempdir().expect("temp dir");
    let out = run(empty.path(), &["cases", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("mailtriage.toml"));

    // No database yet: said so, and none is created.
    let dir = config_dir();
    let out = run(dir.path(), &["cases", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no database at"),
        "{}",
        text(&out.stderr)
    );
    assert!(!database(dir.path()).exists());

    // The database held by another process, and no control socket.
    fill(dir.path());
    let store = Store::open(&database(dir.path()), 1 << 20).expect("open store");
    let run_dir = tempfile::tempdir().expect("temp dir");
    let out = run_with(
        &[
            "cases",
            "list",
            "--config",
            dir.path().to_str().expect("utf-8"),
        ],
        &[("RUNTIME_DIRECTORY", run_dir.path())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let want = format!(
        "is in use but the daemon's control socket at {} does not answer",
        run_dir.path().join("mailtriage.sock").display()
    );
    assert!(text(&out.stderr).contains(&want), "{}", text(&out.stderr));
    close(store, &database(dir.path()));
}

/// The control server of a daemon, in the test: its own runtime, the store
/// open (so that the database is locked), a fixed clock, and a digest
/// function that records what it was asked.
struct Server {
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    store: Store,
    digests: Arc<Mutex<Vec<(String, bool)>>>,
}

const SERVER_NOW: i64 = 1_790_000_000;

impl Server {
    fn start(db: &Path, socket: &Path) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let store = Store::open(db, 1 << 20).expect("open store");
        let digests = Arc::new(Mutex::new(Vec::new()));
        let asked = digests.clone();
        let control = Arc::new(Control {
            store: store.clone(),
            case_lock: Arc::new(Mutex::new(())),
            now: Arc::new(|| ts(SERVER_NOW)),
            digest: Arc::new(move |name: &str, send_now: bool| {
                asked
                    .lock()
                    .expect("digest log")
                    .push((name.to_string(), send_now));
                match (name, send_now) {
                    ("daily", false) => Ok("Daily digest: 2 open cases\n".into()),
                    ("daily", true) => Ok("daily digest queued".into()),
                    (other, _) => Err(format!("no digest {other}").into()),
                }
            }),
            host: None,
        });
        let bound = {
            let _in_runtime = runtime.enter();
            control::bind(socket).expect("bind the control socket")
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = runtime.spawn(bound.serve(control, stopped));
        Server {
            runtime,
            stop,
            task,
            store,
            digests,
        }
    }

    /// Stops the server and waits until it has.
    fn stop(self) -> Store {
        self.stop.send(true).expect("server running");
        self.runtime.block_on(self.task).expect("server task");
        self.store
    }
}

#[test]
fn through_the_control_socket_while_the_database_is_held() {
    let dir = config_dir();
    let c = fill(dir.path());
    // The runtime directory does not exist yet: the server makes it, 0700.
    let base = tempfile::tempdir().expect("temp dir");
    let run_dir = base.path().join("run");
    let socket = run_dir.join("mailtriage.sock");
    let server = Server::start(&database(dir.path()), &socket);

    // The socket and its directory are owner-only.
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(&run_dir), 0o700);
    // The database cannot be opened a second time.
    assert!(Store::open(&database(dir.path()), 1 << 20).is_err());
    assert!(Store::in_use(&database(dir.path())));

    let config = dir.path().to_str().expect("utf-8");
    let env = [("RUNTIME_DIRECTORY", run_dir.as_path())];
    let cli = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--config", config]);
        run_with(&a, &env)
    };

    let all = listed(&json(&cli(&["cases", "list", "--json"])));
    assert_eq!(all, [c.first.as_str(), c.second.as_str(), c.third.as_str()]);
    let open = listed(&json(&cli(&[
        "cases", "list", "--open", "--tier", "2", "--json",
    ])));
    assert_eq!(open, [c.second.as_str()]);
    let table = ok(&cli(&["cases", "list"]));
    assert!(
        table.lines().any(|l| l.starts_with(c.second.as_str())),
        "{table}"
    );

    let out = ok(&cli(&[
        "cases",
        "resolve",
        c.second.as_str(),
        "--note",
        "called the customer",
    ]));
    assert_eq!(out.trim(), format!("{} resolved", c.second));
    // Written by the server, with the daemon's clock.
    let rec = server
        .store
        .case(c.second.as_str())
        .expect("read")
        .expect("the case");
    assert_eq!(rec.status, Status::Resolved);
    assert_eq!(rec.resolved_at, Some(ts(SERVER_NOW)));
    assert_eq!(rec.resolution.as_deref(), Some("called the customer"));
    let last = rec.history.last().expect("history");
    assert_eq!((last.by.as_str(), last.at), ("cli", ts(SERVER_NOW)));

    let shown = ok(&cli(&["cases", "show", c.second.as_str()]));
    assert!(
        shown.contains("cli  status open -> resolved; resolution note: called the customer"),
        "{shown}"
    );
    let out = ok(&cli(&["cases", "reopen", c.second.as_str()]));
    assert_eq!(out.trim(), format!("{} reopened", c.second));
    let rec = server
        .store
        .case(c.second.as_str())
        .expect("read")
        .expect("case");
    assert_eq!(rec.status, Status::Open);

    let out = cli(&["cases", "show", "ESC-2026-999999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no case ESC-2026-999999"));

    // Digests go to the function the daemon gives.
    assert_eq!(
        ok(&cli(&["digest", "daily", "--preview"])),
        "Daily digest: 2 open cases\n"
    );
    assert_eq!(
        ok(&cli(&["digest", "daily"])),
        "Daily digest: 2 open cases\n"
    );
    assert_eq!(
        ok(&cli(&["digest", "daily", "--send-now"])).trim(),
        "daily digest queued"
    );
    let out = cli(&["digest", "weekly"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no digest weekly"));
    let out = cli(&["digest", "daily", "--preview", "--send-now"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        *server.digests.lock().expect("digest log"),
        [
            ("daily".to_string(), false),
            ("daily".to_string(), false),
            ("daily".to_string(), true),
            ("weekly".to_string(), false),
        ]
    );

    // The client of the library, and requests that are not requests.
    let answer = control::request(
        &socket,
        &Request::Show {
            id: c.first.clone(),
        },
        Duration::from_secs(10),
    )
    .expect("an answer");
    let Response::Ok { value } = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(value["case"]["id"], c.first.as_str());
    for bad in [&b"not json\n"[..], b"{\"request\":\"explode\"}\n", b"{}\n"] {
        assert_eq!(raw_exchange(&socket, bad)["result"], "err", "{bad:?}");
        let answer = raw_exchange(&socket, bad);
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("bad request")),
            "{answer}"
        );
    }
    // Still serving after them.
    let all = listed(&json(&cli(&["cases", "list", "--json"])));
    assert_eq!(all.len(), 3);

    // Stopped: the socket is gone, and the commands say the database is
    // in use (it still is, by the test).
    let store = server.stop();
    assert!(!socket.exists());
    assert!(matches!(
        control::request(
            &socket,
            &Request::Reopen {
                id: c.first.clone()
            },
            Duration::from_secs(5)
        ),
        Err(control::ControlError::NotRunning { .. })
    ));
    let out = cli(&["cases", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is in use but the daemon's control socket at"),
        "{}",
        text(&out.stderr)
    );
    close(store, &database(dir.path()));
    // Released: straight on the database, which has the server's changes.
    let v = json(&cli(&["cases", "show", c.second.as_str(), "--json"]));
    assert_eq!(v["case"]["history"].as_array().map(Vec::len), Some(2));
}

#[test]
fn without_a_runtime_directory_the_socket_is_next_to_the_database() {
    let dir = config_dir();
    let c = fill(dir.path());
    let server = Server::start(&database(dir.path()), &dir.path().join("control.sock"));
    let all = listed(&json(&run(dir.path(), &["cases", "list", "--json"])));
    assert_eq!(all, [c.first.as_str(), c.second.as_str(), c.third.as_str()]);
    let out = ok(&run(
        dir.path(),
        &["cases", "resolve", c.first.as_str(), "--note", "done"],
    ));
    assert_eq!(out.trim(), format!("{} resolved", c.first));
    let rec = server.store.case(&c.first).expect("read").expect("case");
    assert_eq!(rec.resolved_at, Some(ts(SERVER_NOW)));
    drop(server.stop());
}

/// Sends `bytes` to the socket and reads the answer line.
fn raw_exchange(socket: &Path, bytes: &[u8]) -> Value {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut line = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut line)
        .expect("read the answer");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn bind_refuses_a_live_socket_and_replaces_a_stale_one() {
    let dir = config_dir();
    fill(dir.path());
    let base = tempfile::tempdir().expect("temp dir");
    let socket = base.path().join("mailtriage.sock");

    // A stale socket (its process gone: nothing listens) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
    assert!(socket.exists());
    let server = Server::start(&database(dir.path()), &socket);
    let answer = control::request(
        &socket,
        &Request::List {
            open: true,
            tier: None,
            risk_min: None,
            since: None,
        },
        Duration::from_secs(10),
    )
    .expect("an answer");
    assert!(matches!(answer, Response::Ok { .. }), "{answer:?}");

    // A live one is not taken over.
    {
        let _in_runtime = server.runtime.enter();
        let err = control::bind(&socket).err().expect("a second bind fails");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
    drop(server.stop());

    // Something that is not a socket is left alone.
    std::fs::write(&socket, "data").expect("write");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _in_runtime = runtime.enter();
    let err = control::bind(&socket)
        .err()
        .expect("bind over a file fails");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&socket).expect("still there"), b"data");
}

#[test]
fn digest_preview_and_send_now_without_a_daemon() {
    let dir = config_dir();
    let c = fill(dir.path());

    let preview = ok(&run(dir.path(), &["digest", "managers_daily", "--preview"]));
    assert!(
        preview.starts_with(
            "To: ops.manager@example.com, cx.manager@example.com\nSubject: Daily escalations, "
        ),
        "{preview}"
    );
    // The open cases, not the resolved one.
    assert!(
        preview.contains(&c.first) && preview.contains(&c.second),
        "{preview}"
    );
    assert!(!preview.contains(&c.third), "{preview}");

    let unknown = run(dir.path(), &["digest", "nightly", "--preview"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("no digest \"nightly\""),
        "{}",
        text(&unknown.stderr)
    );

    let sent = ok(&run(
        dir.path(),
        &["digest", "managers_daily", "--send-now"],
    ));
    assert!(sent.contains("queued"), "{sent}");
    let store = Store::open(&database(dir.path()), 1 << 20).expect("open store");
    let digests: Vec<_> = store
        .outbox_items()
        .expect("outbox")
        .into_iter()
        .filter(|i| i.kind == mailtriage::outbox::OutgoingKind::Digest)
        .collect();
    assert_eq!(digests.len(), 1);
    assert_eq!(
        digests[0].recipients,
        ["ops.manager@example.com", "cx.manager@example.com"]
    );
    assert!(
        store
            .digest_sent("managers_daily")
            .expect("digest state")
            .is_some()
    );
}

#[test]
fn root_does_not_open_a_database_that_belongs_to_the_service() {
    use std::os::unix::fs::MetadataExt;
    let dir = config_dir();
    fill(dir.path());
    let root = std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0);
    if !root {
        // Not root: the owner's own database opens as usual.
        ok(&run(dir.path(), &["cases", "list"]));
        return;
    }
    // As the service's dynamic user would own it.
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(database(dir.path()))
        .status()
        .expect("chown");
    assert!(status.success());
    let out = run(dir.path(), &["cases", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("belongs to uid 65534"), "{err}");
    // Nothing was created or changed as root.
    for e in std::fs::read_dir(database(dir.path())).expect("db dir") {
        let meta = e.expect("entry").metadata().expect("metadata");
        assert_eq!(meta.uid(), 65534);
    }
}

/// A time given in unix seconds.
fn ts(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).expect("a time")
}
