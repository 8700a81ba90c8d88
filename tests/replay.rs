//! `mailtriage replay` (what a config change moves), `route` over many
//! messages, and `--mailbox` checked against the config: through the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("fixtures")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mailtriage")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The last component of a "file" value.
fn base(file: &Value) -> String {
    let file = file.as_str().expect("file is a string");
    Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A copy of the shipped config/ with `edit` applied to one of its files.
fn edited_config(file: &str, edit: &dyn Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("config"), dir.path());
    let path = dir.path().join(file);
    let before = std::fs::read_to_string(&path).unwrap();
    let after = edit(&before);
    assert_ne!(before, after, "the edit of {file} changed nothing");
    std::fs::write(&path, after).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `text` with `from` replaced once, which must be there.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} once in the config");
    text.replacen(from, to, 1)
}

/// A table block: the lines of one message, after its subject line.
fn table_blocks(table: &str) -> BTreeMap<String, Vec<String>> {
    let mut blocks = BTreeMap::new();
    for block in table.split("\n\n") {
        let mut lines = block.lines();
        let Some(head) = lines.next() else { continue };
        let Some(subject) = lines.next() else {
            continue; // the summary line
        };
        assert!(subject.starts_with("  subject  "), "{block}");
        let name = Path::new(head)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        blocks.insert(name, lines.map(str::to_string).collect());
    }
    blocks
}

/// A config change, and the fixtures it moves: each with the parts that
/// change and the table's lines for them (exactly).
struct Change {
    what: &'static str,
    file: &'static str,
    edit: fn(&str) -> String,
    mailbox: Option<&'static str>,
    moved: &'static [(
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    )],
    /// What the JSON says of each moved message: (file, old, new).
    check: fn(&str, &Value, &Value),
}

fn has_action(side: &Value, rule: &str) -> bool {
    side["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["rule"] == rule)
}

const TO_SUPERVISOR: &[&str] =
    &["  actions  + forward to supervisor.oncall@example.com (rule high-risk-to-supervisor)"];
const TIER2_ACTIONS: &[&str] = &[
    "  tier     1 -> 2",
    "  actions  + forward to tier2@example.com cc supervisor.oncall@example.com in tier2 hours, after hours to supervisor.oncall@example.com (rule tier-2)",
    "           + tag tier2 (rule tier-2)",
];
const PAYOUT_RISK_1: &[&str] = &["  flags    + payment \"payout\"", "  risk     1 -> 3"];
const PAYOUT: &[&str] = &["  flags    + payment \"payout\""];
const NO_CX: &[&str] = &["  actions  - forward to cx@example.com (rule pickup-to-cx)"];

const CHANGES: &[Change] = &[
    Change {
        what: "the supervisor's risk threshold lowered from 4 to 3",
        file: "routing.toml",
        edit: |t| {
            replace_once(
                t,
                "tier = 1, risk_at_least = 4 }",
                "tier = 1, risk_at_least = 3 }",
            )
        },
        mailbox: None,
        moved: &[
            ("10-pickup-wrong-device.eml", &["actions"], TO_SUPERVISOR),
            ("19-product-quality-html.eml", &["actions"], TO_SUPERVISOR),
            (
                "21-payment-disputed-cp1252.eml",
                &["actions"],
                TO_SUPERVISOR,
            ),
            ("22-drop-shipping-markdown.eml", &["actions"], TO_SUPERVISOR),
            (
                "24-profanity-raw-utf8-subject.eml",
                &["actions"],
                TO_SUPERVISOR,
            ),
            (
                "25-agent-complaint-unresolved.eml",
                &["actions"],
                TO_SUPERVISOR,
            ),
            ("26-supervisor-judgement.eml", &["actions"], TO_SUPERVISOR),
            (
                "51-escalation-missing-contact.eml",
                &["actions"],
                TO_SUPERVISOR,
            ),
        ],
        check: |file, old, new| {
            assert_eq!(
                (&old["risk"], &new["risk"]),
                (&3.into(), &3.into()),
                "{file}"
            );
            assert!(!has_action(old, "high-risk-to-supervisor"), "{file}");
            assert!(has_action(new, "high-risk-to-supervisor"), "{file}");
        },
    },
    Change {
        what: "payment flags made Tier 2",
        file: "keywords.toml",
        edit: |t| {
            replace_once(
                t,
                "name = \"payment\"\n",
                "name = \"payment\"\ntier2 = true\n",
            )
        },
        mailbox: None,
        moved: &[
            // A status update: not routed, so only its tier moves.
            (
                "15-status-high-priority.eml",
                &["tier"],
                &["  tier     1 -> 2"],
            ),
            (
                "21-payment-disputed-cp1252.eml",
                &["tier", "actions"],
                TIER2_ACTIONS,
            ),
            (
                "51-escalation-missing-contact.eml",
                &["tier", "actions"],
                TIER2_ACTIONS,
            ),
        ],
        check: |file, old, new| {
            assert_eq!(
                (&old["tier"], &new["tier"]),
                (&1.into(), &2.into()),
                "{file}"
            );
            assert_eq!(has_action(new, "tier-2"), new["kind"] != "status_update");
        },
    },
    Change {
        what: "the term \"payout\" added to the payment flags",
        file: "keywords.toml",
        edit: |t| replace_once(t, "  \"chargeback\",", "  \"payout\", \"chargeback\","),
        mailbox: None,
        moved: &[
            (
                "01-incorrect-promise-price.eml",
                &["flags", "risk"],
                PAYOUT_RISK_1,
            ),
            (
                "09-pickup-extra-money.eml",
                &["flags", "risk"],
                &["  flags    + payment \"payout\"", "  risk     2 -> 3"],
            ),
            (
                "13-status-resolved-payout-fixed.eml",
                &["flags", "risk"],
                PAYOUT_RISK_1,
            ),
            ("15-status-high-priority.eml", &["flags"], PAYOUT),
            ("25-agent-complaint-unresolved.eml", &["flags"], PAYOUT),
            ("41-forwarded-consumer-forum.eml", &["flags"], PAYOUT),
            ("51-escalation-missing-contact.eml", &["flags"], PAYOUT),
        ],
        check: |file, old, new| {
            let payout = serde_json::json!({"category": "payment", "term": "payout"});
            assert!(
                !old["flags"].as_array().unwrap().contains(&payout),
                "{file}"
            );
            assert!(new["flags"].as_array().unwrap().contains(&payout), "{file}");
        },
    },
    Change {
        what: "pickups forwarded to CX only from the ops mailbox, replayed as ops",
        file: "routing.toml",
        edit: cx_only_from_ops,
        mailbox: Some("ops"),
        moved: &[],
        check: |file, _, _| panic!("{file} moved"),
    },
    Change {
        what: "pickups forwarded to CX only from the ops mailbox, replayed as support",
        file: "routing.toml",
        edit: cx_only_from_ops,
        mailbox: Some("support"),
        moved: &[
            ("06-pickup-rude-vendor.eml", &["actions"], NO_CX),
            ("07-pickup-vendor-hours-late.eml", &["actions"], NO_CX),
            ("08-pickup-fake-marked.eml", &["actions"], NO_CX),
            ("09-pickup-extra-money.eml", &["actions"], NO_CX),
            ("10-pickup-wrong-device.eml", &["actions"], NO_CX),
            ("11-pickup-price-changed-latin1.eml", &["actions"], NO_CX),
            ("12-pickup-no-show.eml", &["actions"], NO_CX),
            ("47-auto-submitted-no-pickup.eml", &["actions"], NO_CX),
            ("50-pickup-ticket-copy-missing.eml", &["actions"], NO_CX),
        ],
        check: |file, old, new| {
            assert!(has_action(old, "pickup-to-cx"), "{file}");
            assert!(!has_action(new, "pickup-to-cx"), "{file}");
        },
    },
];

fn cx_only_from_ops(routing: &str) -> String {
    replace_once(
        routing,
        "when = { kind = [\"pickup_complaint\"] }",
        "when = { kind = [\"pickup_complaint\"], mailbox = [\"ops\"] }",
    )
}

const PARTS: [&str; 6] = ["kind", "flags", "risk", "tier", "missing", "actions"];

#[test]
fn replay_lists_exactly_the_messages_a_change_moves() {
    let fixtures = fixtures();
    let total = std::fs::read_dir(&fixtures)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
        })
        .count();
    for change in CHANGES {
        let dir = edited_config(change.file, &change.edit);
        let mut args = vec![
            "replay",
            "--config",
            dir.path().to_str().unwrap(),
            fixtures.to_str().unwrap(),
        ];
        if let Some(m) = change.mailbox {
            args.extend(["--mailbox", m]);
        }
        let want: BTreeMap<String, (&[&str], &[&str])> = change
            .moved
            .iter()
            .map(|(f, changed, lines)| (f.to_string(), (*changed, *lines)))
            .collect();

        // The table: a block per moved fixture, exactly these lines, and a count.
        let out = run(&args);
        let table = text(&out.stdout);
        // Like diff: 1 when something differs.
        let code = if want.is_empty() { 0 } else { 1 };
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}: {}",
            change.what,
            text(&out.stderr)
        );
        let blocks = table_blocks(&table);
        assert_eq!(
            blocks.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{}:\n{table}",
            change.what
        );
        for (file, lines) in &blocks {
            assert_eq!(lines, want[file].1, "{}: {file}\n{table}", change.what);
        }
        assert!(
            table.ends_with(&format!("{total} messages, {} differ\n", want.len())),
            "{}:\n{table}",
            change.what
        );

        // JSON Lines: the same messages, with both sides.
        args.push("--json");
        let out = run(&args);
        assert_eq!(out.status.code(), Some(code), "{}", change.what);
        let lines = json_lines(&out);
        let files: Vec<String> = lines.iter().map(|l| base(&l["file"])).collect();
        assert_eq!(
            files,
            want.keys().cloned().collect::<Vec<_>>(),
            "{}",
            change.what
        );
        for line in &lines {
            let file = base(&line["file"]);
            let changed: Vec<&str> = line["changed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            assert_eq!(changed, want[&file].0, "{}: {file}", change.what);
            let (old, new) = (&line["old"], &line["new"]);
            for part in PARTS {
                assert_eq!(
                    old[part] != new[part],
                    changed.contains(&part),
                    "{}: {file}: {part}",
                    change.what
                );
            }
            assert!(line["message_id"].is_string() && line["subject"].is_string());
            (change.check)(&file, old, new);
        }
    }
}

#[test]
fn identical_configs_list_nothing() {
    let shipped = root().join("config");
    let fixtures = fixtures();
    let (shipped, fixtures) = (shipped.to_str().unwrap(), fixtures.to_str().unwrap());
    for args in [
        vec![
            "replay",
            "--config",
            shipped,
            "--against",
            shipped,
            fixtures,
        ],
        // Without --against: the built-in config, which is the shipped one.
        vec!["replay", "--config", shipped, fixtures],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "51 messages, 0 differ\n");
        let mut json = args.clone();
        json.push("--json");
        let out = run(&json);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(text(&out.stdout), "");
    }
}

/// An mbox file: each message after a `From ` line, `From ` in bodies quoted.
fn mbox(fixtures: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for name in fixtures {
        let raw = std::fs::read(self::fixtures().join(name)).unwrap();
        out.extend_from_slice(b"From agent@example.com Mon Nov 23 10:00:00 2026\n");
        for line in raw.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b"From ") {
                out.push(b'>');
            }
            out.extend_from_slice(line);
        }
        out.extend_from_slice(b"\n\n");
    }
    out
}

#[test]
fn replay_reads_maildirs_mbox_files_and_says_which_inputs_are_not_email() {
    let config = edited_config("keywords.toml", &|t| {
        replace_once(
            t,
            "name = \"payment\"\n",
            "name = \"payment\"\ntier2 = true\n",
        )
    });
    let tmp = tempfile::tempdir().unwrap();
    let maildir = tmp.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    std::fs::copy(
        fixtures().join("21-payment-disputed-cp1252.eml"),
        maildir.join("cur/1700000000.1.host:2,S"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("06-pickup-rude-vendor.eml"),
        maildir.join("new/1700000001.2.host"),
    )
    .unwrap();
    let archive = tmp.path().join("archive");
    std::fs::write(
        &archive,
        mbox(&[
            "01-incorrect-promise-price.eml",
            "51-escalation-missing-contact.eml",
        ]),
    )
    .unwrap();
    let garbage = tmp.path().join("garbage.eml");
    std::fs::write(&garbage, b"\x00\x01 not mail").unwrap();

    let args = [
        "replay",
        "--config",
        config.path().to_str().unwrap(),
        maildir.to_str().unwrap(),
        archive.to_str().unwrap(),
        garbage.to_str().unwrap(),
    ];
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    let heads: Vec<&str> = table
        .split("\n\n")
        .filter_map(|b| b.lines().next())
        .collect();
    let cur = maildir.join("cur/1700000000.1.host:2,S");
    assert_eq!(
        heads,
        [
            cur.to_str().unwrap(),
            &format!("{}, message 2", archive.display()),
            garbage.to_str().unwrap(),
            "4 messages, 2 differ, 1 not email",
        ],
        "{table}"
    );
    assert!(table.contains("  error    not an email"), "{table}");
    assert!(text(&out.stderr).contains("1 input(s) were not emails"));

    let mut json = args.to_vec();
    json.push("--json");
    let lines = json_lines(&run(&json));
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["file"], cur.to_str().unwrap());
    assert!(lines[0].get("mbox_message").is_none());
    assert_eq!(lines[1]["file"], archive.to_str().unwrap());
    assert_eq!(lines[1]["mbox_message"], 2);
    assert_eq!(
        lines[1]["message_id"],
        "escalation-missing-contact.51@mail.example.com"
    );
    assert_eq!(lines[2]["file"], garbage.to_str().unwrap());
    assert!(lines[2]["error"].as_str().unwrap().contains("not an email"));
}

#[test]
fn route_over_a_directory_prints_a_json_line_per_message_with_its_file() {
    let fixtures = fixtures();
    let out = run(&["route", "--mailbox", "ops", fixtures.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    let mut names: Vec<String> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    names.sort();
    assert_eq!(
        lines.iter().map(|l| base(&l["file"])).collect::<Vec<_>>(),
        names
    );
    for (i, line) in lines.iter().enumerate() {
        let file = base(&line["file"]);
        // The case is the golden one; the actions are the single file's
        // (checked on a sample: a process per fixture is slow).
        let golden: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures.join(file.replace(".eml", ".json"))).unwrap(),
        )
        .unwrap();
        let mut case = line.clone();
        let actions = case.as_object_mut().unwrap().remove("actions");
        case.as_object_mut().unwrap().remove("file");
        assert_eq!(case, golden, "{file}");
        assert!(actions.as_ref().is_some_and(Value::is_array), "{file}");
        if i % 10 != 5 {
            continue;
        }
        let one = run(&[
            "route",
            "--mailbox",
            "ops",
            fixtures.join(&file).to_str().unwrap(),
        ]);
        let one: Value = serde_json::from_slice(&one.stdout).unwrap();
        assert_eq!(actions.as_ref(), Some(&one["actions"]), "{file}");
    }

    // An mbox file is a batch too, even alone.
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("archive.mbox");
    std::fs::write(
        &archive,
        mbox(&["06-pickup-rude-vendor.eml", "17-fraud-scam-accusation.eml"]),
    )
    .unwrap();
    let out = run(&["route", archive.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    let kinds: Vec<(&Value, &Value)> = lines
        .iter()
        .map(|l| (&l["mbox_message"], &l["kind"]))
        .collect();
    assert_eq!(
        kinds,
        [
            (&1.into(), &"pickup_complaint".into()),
            (&2.into(), &"escalation".into())
        ]
    );
}

#[test]
fn an_unknown_mailbox_is_a_usage_error_naming_the_known_ones() {
    let eml = fixtures().join("06-pickup-rude-vendor.eml");
    let eml = eml.to_str().unwrap();
    let renamed = edited_config("mailtriage.toml", &|t| {
        replace_once(t, "name = \"support\"", "name = \"billing\"")
    });
    // Without a mailtriage.toml, the mailboxes the rules match on are known.
    let rules_only = edited_config("routing.toml", &|t| {
        replace_once(
            t,
            "when = { kind = [\"pickup_complaint\"] }",
            "when = { kind = [\"pickup_complaint\"], mailbox = [\"vip\"] }",
        )
    });
    std::fs::remove_file(rules_only.path().join("mailtriage.toml")).unwrap();
    let (renamed, rules_only) = (
        renamed.path().to_str().unwrap(),
        rules_only.path().to_str().unwrap(),
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &["route", "--mailbox", "opz", eml],
            "expected one of ops, support",
        ),
        (
            &["route", "--config", renamed, "--mailbox", "support", eml],
            "expected one of ops, billing",
        ),
        (
            &["route", "--config", rules_only, "--mailbox", "ops", eml],
            "expected one of vip",
        ),
        (
            &["replay", "--config", renamed, "--mailbox", "opz", eml],
            "expected one of ops, billing, support",
        ),
    ];
    for (args, want) in cases {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("unknown mailbox") && err.contains(want),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty());
    }

    // Known names pass, in any case, as routing compares them.
    for args in [
        &["route", "--mailbox", "OPS", eml][..],
        &["route", "--config", rules_only, "--mailbox", "vip", eml],
        &["replay", "--config", renamed, "--mailbox", "billing", eml],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
