//! The `mailtriage` binary as an operator uses it: output, exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailtriage"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailtriage");
    if let Some(input) = stdin {
        // The command may exit before reading (a config error): a closed pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(input);
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn parse_one_file_prints_its_golden_json() {
    let eml = fixture("23-review-threat-trustpilot.eml");
    let out = run(&["parse", eml.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let want = std::fs::read_to_string(fixture("23-review-threat-trustpilot.json")).unwrap();
    assert_eq!(text(&out.stdout), want);
}

#[test]
fn parse_reads_standard_input() {
    let raw = std::fs::read(fixture("01-incorrect-promise-price.eml")).unwrap();
    let out = run(&["parse", "-"], Some(&raw));
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "incorrect_promise");
    let out = run(&["parse"], Some(&raw));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn not_an_email_exits_1() {
    let out = run(&["parse", "-"], Some(b"\x00\x01\x02 binary \xff"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not an email"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["parse", "-"], Some(b""));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("empty"));
    let out = run(&["parse", "/nonexistent/x.eml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/x.eml"));
}

#[test]
fn a_non_escalation_is_not_an_error() {
    let out = run(
        &[
            "parse",
            fixture("48-internal-lunch-friday.eml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "not_escalation");
    assert_eq!(v["is_escalation"], false);
}

#[test]
fn a_directory_prints_json_lines_and_goes_on_past_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["06-pickup-rude-vendor.eml", "17-fraud-scam-accusation.eml"] {
        std::fs::copy(fixture(name), dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("00-garbage.eml"), b"\x00\x01not mail").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored: not .eml").unwrap();
    let out = run(&["parse", dir.path().to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad file makes the batch exit 1"
    );
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("00-garbage.eml")
    );
    assert!(lines[0]["error"].as_str().unwrap().contains("not an email"));
    assert_eq!(lines[1]["kind"], "pickup_complaint");
    assert_eq!(lines[2]["flags"][0]["category"], "fraud");
}

#[test]
fn a_maildir_reads_cur_and_new() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    std::fs::copy(
        fixture("01-incorrect-promise-price.eml"),
        dir.path().join("cur/1700000000.1.host:2,S"),
    )
    .unwrap();
    std::fs::copy(
        fixture("06-pickup-rude-vendor.eml"),
        dir.path().join("new/1700000001.2.host"),
    )
    .unwrap();
    std::fs::copy(
        fixture("17-fraud-scam-accusation.eml"),
        dir.path().join("tmp/half-written"),
    )
    .unwrap();
    let out = run(&["parse", dir.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let kinds: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["incorrect_promise", "pickup_complaint"]);
}

#[test]
fn route_prints_actions_with_rendered_subjects() {
    let eml = fixture("06-pickup-rude-vendor.eml");
    let out = run(
        &[
            "route",
            eml.to_str().unwrap(),
            "--mailbox",
            "ops",
            "--case-id",
            "ESC-2026-000007",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "pickup_complaint");
    let actions = v["actions"].as_array().unwrap();
    let types: Vec<&str> = actions
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["forward", "reply", "digest"]);
    assert_eq!(actions[0]["to"][0], "cx@example.com");
    assert!(
        actions[0]["subject"]
            .as_str()
            .unwrap()
            .starts_with("[ESC-2026-000007] Tier 1 / Risk 2")
    );
    assert!(
        actions[1]["subject"]
            .as_str()
            .unwrap()
            .ends_with("[ESC-2026-000007]")
    );
    assert!(actions[1].get("body").is_none(), "bodies only with --body");
}

#[test]
fn check_config_accepts_the_shipped_config_and_rejects_a_broken_one() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let out = run(
        &["check-config", "--config", shipped.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok"));

    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["check-config", "--config", dir.path().to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("keywords.toml: cannot read"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        &["parse", "--config", dir.path().to_str().unwrap(), "-"],
        Some(b"From: a@example.com\n\nx"),
    );
    assert_eq!(out.status.code(), Some(2));
}

/// `run` refuses a config it cannot run with, with exit code 2 (the systemd
/// unit does not restart on it) and a message saying what is missing.
#[test]
fn run_says_what_its_config_lacks_and_exits_2() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    for name in ["keywords.toml", "triage.toml", "routing.toml"] {
        std::fs::copy(shipped.join(name), dir.path().join(name)).unwrap();
    }
    for e in std::fs::read_dir(shipped.join("templates")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(
            &p,
            dir.path().join("templates").join(p.file_name().unwrap()),
        )
        .unwrap();
    }
    let run_it = || {
        bin()
            .args(["run", "--config"])
            .arg(dir.path())
            .env_remove("STATE_DIRECTORY")
            .output()
            .unwrap()
    };
    let out = run_it();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("has no mailtriage.toml, which names the mailboxes"),
        "{}",
        text(&out.stderr)
    );
    // The shipped example names no database: outside systemd that is a
    // config error too, not a failure to retry.
    std::fs::copy(
        shipped.join("mailtriage.toml"),
        dir.path().join("mailtriage.toml"),
    )
    .unwrap();
    let out = run_it();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no database path: set [daemon] database"),
        "{}",
        text(&out.stderr)
    );
}

/// `--version` (and `-V`): the version and the commit the binary was built
/// from, `-dirty` when its sources differed from it, `unknown commit`
/// outside git.
#[test]
fn version_names_the_commit_it_was_built_from() {
    let pattern = regex::Regex::new(
        r"^mailtriage (\S+) \(([0-9a-f]{7})(-dirty)?\)\n$|^mailtriage (\S+) \(unknown commit\)\n$",
    )
    .unwrap();
    for flag in ["--version", "-V"] {
        let out = run(&[flag], None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let line = text(&out.stdout);
        let caps = pattern
            .captures(&line)
            .unwrap_or_else(|| panic!("{flag}: {line:?}"));
        let version = caps.get(1).or(caps.get(4)).unwrap().as_str();
        assert_eq!(version, env!("CARGO_PKG_VERSION"), "{line:?}");
        // Built from this checkout (cargo rebuilt it for the test): the
        // commit is the checkout's.
        let head = Command::new("git")
            .args(["rev-parse", "--short=7", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output();
        if let Ok(head) = head
            && head.status.success()
        {
            assert_eq!(
                caps.get(2).map(|m| m.as_str()),
                Some(text(&head.stdout).trim()),
                "{line:?}"
            );
        }
    }
}

/// Every command and nested command, by name: what the completions and
/// the man pages must know.
fn command_names() -> Vec<(Vec<String>, String)> {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &[String], out: &mut Vec<(Vec<String>, String)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut p = path.to_vec();
            p.push(sub.get_name().to_string());
            out.push((p.clone(), sub.get_name().to_string()));
            walk(sub, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(&mailtriage::cli::Cli::command(), &[], &mut out);
    out
}

#[test]
fn completions_for_each_shell_know_every_command() {
    let names = command_names();
    assert!(names.len() >= 12, "{names:?}");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell], None);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains("mailtriage"), "{shell}: {script}");
        for (_, name) in &names {
            assert!(script.contains(name.as_str()), "{shell}: no {name}");
        }
        // Options too, down to a nested command's.
        assert!(script.contains("risk-min"), "{shell}: no --risk-min");
    }
    let out = run(&["completions", "tcsh"], None);
    assert_eq!(out.status.code(), Some(2));
}

/// The bash script loads in bash and completes a command name.
#[test]
fn bash_completion_loads_and_completes() {
    let out = run(&["completions", "bash"], None);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mailtriage.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let probe = r#"
        source "$1" || exit 3
        complete -p mailtriage || exit 4
        COMP_WORDS=(mailtriage chec); COMP_CWORD=1; COMP_LINE="mailtriage chec"; COMP_POINT=${#COMP_LINE}
        _mailtriage mailtriage chec mailtriage
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", probe, "probe"])
        .arg(&script)
        .output()
        .expect("bash");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().next().is_some_and(
            |l| l.starts_with("complete ") && l.ends_with(" -F _mailtriage mailtriage")
        ),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l == "check-config"), "{stdout}");
}

/// `man` prints mailtriage(1): a roff page with the program's sections
/// and every command it refers to; `man -l` renders it without warnings.
#[test]
fn the_man_page_renders() {
    let out = run(&["man"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(
        page.lines().any(|l| l.starts_with(".TH mailtriage 1 ")),
        "{page}"
    );
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "SUBCOMMANDS",
        "EXIT STATUS",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(
            page.lines()
                .any(|l| l == format!(".SH {section}") || l == format!(".SH \"{section}\"")),
            "no {section}:\n{page}"
        );
    }
    for (path, _) in command_names().iter().filter(|(p, _)| p.len() == 1) {
        assert!(
            page.contains(&format!("mailtriage\\-{}(1)", path[0].replace('-', "\\-"))),
            "no {path:?}"
        );
    }
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("man(1) is not installed: rendering not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mailtriage.1");
    std::fs::write(&file, &out.stdout).unwrap();
    let shown = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&file)
        .env("MANWIDTH", "80")
        .env_remove("MANPAGER")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown.stderr));
    assert!(
        text(&shown.stderr).trim().is_empty(),
        "{}",
        text(&shown.stderr)
    );
    // Bold and underline come as overstrikes (c, backspace, c) off a
    // terminal.
    let shown = regex::Regex::new(".\x08")
        .unwrap()
        .replace_all(&text(&shown.stdout), "")
        .into_owned();
    assert!(shown.contains("EXIT STATUS"), "{shown}");
    assert!(shown.contains("/etc/mailtriage/"), "{shown}");
}

/// `man --dir` writes mailtriage.1 and a page for every command any page
/// refers to, and prints their paths; a directory it cannot write to is
/// an error naming the file.
#[test]
fn man_dir_writes_every_page_the_pages_refer_to() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["man", "--dir", dir.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(listed.len(), written.len(), "{listed:?}");
    assert_eq!(written.len(), command_names().len() + 1, "{written:?}");
    assert!(written.contains(&"mailtriage.1".to_string()));
    for (path, _) in command_names() {
        let name = format!("mailtriage-{}.1", path.join("-"));
        assert!(written.contains(&name), "no {name}: {written:?}");
    }
    // Every reference (mailtriage\-cases\-list(1)) has its page.
    let refs = regex::Regex::new(r"(mailtriage(?:\\-[a-z]+(?:\\-[a-z]+)*)?)\(1\)").unwrap();
    for page in &written {
        let roff = std::fs::read_to_string(dir.path().join(page)).unwrap();
        for cap in refs.captures_iter(&roff) {
            let target = format!("{}.1", cap[1].replace("\\-", "-"));
            assert!(written.contains(&target), "{page} refers to {target}");
        }
    }
    let out = run(&["man", "--dir", "/nonexistent/man1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/nonexistent/man1/mailtriage.1"),
        "{}",
        text(&out.stderr)
    );
}
