//! Golden tests: every `fixtures/*.eml` beside the `.json` that
//! `mailtriage parse` must print for it, compared exactly.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the `.json` files;
//! review the diff before committing it. A second test holds each golden file
//! to `fixtures/intent.toml`, written by hand from what each email means, so
//! that regenerating cannot quietly bless a regression in kind, flags, risk,
//! tier or the key fields.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use mailtriage::config::Config;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(fixtures_dir())
        .expect("fixtures/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    v.sort();
    v
}

/// What `mailtriage parse FILE` prints for one message.
fn parse_output(config: &Config, raw: &[u8]) -> String {
    match config.triage.parse(raw) {
        Ok((_, case)) => serde_json::to_string_pretty(&case).expect("serialisable") + "\n",
        Err(e) => format!("{{\n  \"error\": {:?}\n}}\n", e.to_string()),
    }
}

fn first_difference(want: &str, got: &str) -> String {
    for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        if w != g {
            return format!("line {}:\n  expected: {w}\n  actual:   {g}", i + 1);
        }
    }
    format!(
        "lengths differ: expected {} lines, actual {}",
        want.lines().count(),
        got.lines().count()
    )
}

#[test]
fn parse_output_matches_golden_json() {
    let config = Config::builtin().expect("built-in config");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut ran = 0;
    let mut failures = Vec::new();
    for eml in fixtures() {
        let raw = fs::read(&eml).expect("readable fixture");
        let got = parse_output(&config, &raw);
        let json = eml.with_extension("json");
        if update {
            fs::write(&json, &got).expect("write golden");
        } else {
            match fs::read_to_string(&json) {
                Ok(want) if want == got => {}
                Ok(want) => failures.push(format!(
                    "{}: {}",
                    json.display(),
                    first_difference(&want, &got)
                )),
                Err(e) => failures.push(format!(
                    "{}: {e} (run UPDATE_GOLDEN=1 cargo test --test golden)",
                    json.display()
                )),
            }
        }
        ran += 1;
    }
    assert!(
        ran >= 40,
        "only {ran} fixtures ran; at least 40 are expected"
    );
    assert!(
        failures.is_empty(),
        "{} of {ran} fixtures differ from their golden JSON:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_golden_json_has_its_message() {
    let orphans: Vec<String> = fs::read_dir(fixtures_dir())
        .expect("fixtures/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| !p.with_extension("eml").exists())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        orphans.is_empty(),
        "golden files without a fixture: {orphans:?}"
    );
}

fn strings(v: Option<&toml::Value>) -> Option<BTreeSet<String>> {
    v.and_then(|v| v.as_array()).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

fn json_strings(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn golden_json_agrees_with_intent() {
    let text = fs::read_to_string(fixtures_dir().join("intent.toml")).expect("intent.toml");
    let intent: toml::Table = toml::from_str(&text).expect("intent.toml is valid TOML");
    let config = Config::builtin().expect("built-in config");
    let mut problems = Vec::new();
    let mut checked = 0;
    for eml in fixtures() {
        let name = eml.file_stem().unwrap().to_string_lossy().to_string();
        let Some(want) = intent.get(&name).and_then(|v| v.as_table()) else {
            problems.push(format!("{name}: no entry in intent.toml"));
            continue;
        };
        let raw = fs::read(&eml).expect("fixture");
        let got: serde_json::Value =
            serde_json::from_str(&parse_output(&config, &raw)).expect("json");
        let mut check = |what: &str, ok: bool, detail: String| {
            if !ok {
                problems.push(format!("{name}: {what}: {detail}"));
            }
        };
        if let Some(k) = want.get("kind").and_then(|v| v.as_str()) {
            check(
                "kind",
                got["kind"] == k,
                format!("intent {k}, parsed {}", got["kind"]),
            );
        }
        for key in ["risk", "tier"] {
            if let Some(n) = want.get(key).and_then(|v| v.as_integer()) {
                check(
                    key,
                    got[key] == n,
                    format!("intent {n}, parsed {}", got[key]),
                );
            }
        }
        if let Some(flags) = strings(want.get("flags")) {
            let parsed: BTreeSet<String> = got["flags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f["category"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            check(
                "flags",
                flags == parsed,
                format!("intent {flags:?}, parsed {parsed:?}"),
            );
        }
        for key in ["missing", "tags"] {
            if let Some(w) = strings(want.get(key)) {
                let g = json_strings(&got[key]);
                check(key, w == g, format!("intent {w:?}, parsed {g:?}"));
            }
        }
        if let Some(fields) = want.get("fields").and_then(|v| v.as_table()) {
            for (k, v) in fields {
                let parsed = &got["fields"][k];
                let ok = match v {
                    toml::Value::String(s) => parsed.as_str() == Some(s.as_str()),
                    toml::Value::Integer(i) => parsed.as_i64() == Some(*i),
                    _ => false,
                };
                check(
                    &format!("fields.{k}"),
                    ok,
                    format!("intent {v}, parsed {parsed}"),
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} fixtures had intent entries");
    assert!(
        problems.is_empty(),
        "{} disagreements between parse output and intent.toml:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// How a forward carries each `fixtures/attach/*.eml`, beside its `.json`
/// (RFC 2046 section 5.2.1: a message/rfc822 part is 7bit or 8bit, and an
/// original neither can carry goes as a file). Read back with mail-parser
/// from the composed forward's bytes; `UPDATE_GOLDEN=1` rewrites.
#[test]
fn forwards_attach_each_original_in_the_part_it_fits() {
    use mail_parser::{MessageParser, MimeHeaders};
    use mailtriage::mail::{Identity, Original, compose_forward};
    use mailtriage::route::Rendered;

    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = fixtures_dir().join("attach");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("fixtures/attach/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "7-bit, 8-bit UTF-8 and over-long line");
    let identity = Identity {
        from: "Escalations <mailtriage@example.com>".parse().unwrap(),
        domain: "mailtriage.example.com".into(),
    };
    let rendered = Rendered {
        subject: "[ESC-2026-000001] forward".into(),
        body: "summary\n".into(),
        high_importance: false,
    };
    let mut failures = Vec::new();
    for eml in files {
        let raw = fs::read(&eml).expect("fixture");
        let original = Original::new(&raw);
        let out = compose_forward(
            &identity,
            "ESC-2026-000001",
            "1",
            &["cx@example.com".into()],
            &[],
            None,
            &rendered,
            &original,
            std::time::SystemTime::UNIX_EPOCH,
        )
        .expect("composed");
        let m = MessageParser::default().parse(&out.raw).expect("parses");
        let part = m.attachment(0).expect("attached");
        let headers = String::from_utf8_lossy(
            &out.raw[part.raw_header_offset() as usize..part.raw_body_offset() as usize],
        )
        .to_string();
        let cte = headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Transfer-Encoding: "))
            .unwrap_or("(none)");
        let got = serde_json::to_string_pretty(&serde_json::json!({
            "content_type": part.content_type().map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or(""))),
            "content_transfer_encoding": cte,
            "filename": part.attachment_name(),
            "read_as_message": part.message().is_some(),
            "bytes_are_the_original": part.contents() == raw.as_slice(),
            "needs_8bitmime": !out.raw.is_ascii(),
        }))
        .unwrap()
            + "\n";
        let json = eml.with_extension("json");
        if update {
            fs::write(&json, &got).expect("write golden");
            continue;
        }
        let want = fs::read_to_string(&json).unwrap_or_default();
        if want != got {
            failures.push(format!("{}:\n{got}", eml.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
