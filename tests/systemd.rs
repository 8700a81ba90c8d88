//! The systemd units: `systemd-analyze verify` is clean, `systemd-analyze
//! security` rates the service and the backup 2.0 or lower, the service
//! loads every credential the example config names, the documentation is
//! what the Debian package installs, the package installs every unit, and
//! the backup's command runs as written, keeping the newest 14 backups.

use std::path::Path;
use std::process::Command;

fn unit_text() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/mailtriage.service"),
    )
    .expect("systemd/mailtriage.service")
}

/// Every unit of systemd/, as the package installs them (ExecStart
/// pointing at the binary under test), in a temp dir.
fn installed_units() -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in UNITS {
        let path = dir.path().join(name);
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("systemd")
                .join(name),
        )
        .unwrap_or_else(|e| panic!("systemd/{name}: {e}"));
        std::fs::write(
            &path,
            text.replace("/usr/bin/mailtriage", env!("CARGO_BIN_EXE_mailtriage")),
        )
        .unwrap();
        units.push(path);
    }
    (dir, units)
}

const UNITS: [&str; 3] = [
    "mailtriage.service",
    "mailtriage-backup.service",
    "mailtriage-backup.timer",
];

#[test]
fn verify_is_clean() {
    let (_dir, units) = installed_units();
    // --man=no: the man page of Documentation= exists once the package is
    // installed, where `scripts/package-test` verifies without it.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warns:\n{stderr}"
    );
}

/// A configuration error (exit 2) stops the restarts; other failures
/// restart. systemd applies RestartPreventExitStatus= to the main process
/// only, so the config is checked by `run` itself, not by an ExecStartPre.
#[test]
fn a_config_error_is_not_restarted_forever() {
    let unit = unit_text();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    assert!(lines.contains(&"Restart=on-failure"), "{unit}");
    assert!(lines.contains(&"RestartPreventExitStatus=2"), "{unit}");
    assert!(
        !lines.iter().any(|l| l.starts_with("ExecStartPre=")),
        "an ExecStartPre failure would restart regardless of its status"
    );
    // And `run` does exit 2 on a config error, before anything starts.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(["run", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn security_exposure_is_at_most_2() {
    let (_dir, units) = installed_units();
    for unit in &units[..2] {
        exposure_at_most_2(unit);
    }
}

fn exposure_at_most_2(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .expect("systemd-analyze");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the level in {line:?}"));
    assert!(level <= 2.0, "exposure {level} > 2.0: {line}");
}

#[test]
fn the_unit_loads_every_credential_the_example_config_names() {
    use mailtriage::config::{Secret, Settings};
    let config = Settings::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .expect("example config");
    let unit = unit_text();
    let grant_secrets = |g: &mailtriage::config::Grant| {
        let client = match &g.client {
            mailtriage::config::ClientAuth::Secret(s) => Some(s.clone()),
            mailtriage::config::ClientAuth::Certificate { private_key, .. } => {
                Some(private_key.clone())
            }
            mailtriage::config::ClientAuth::None => None,
        };
        [client, g.refresh_token.clone()]
    };
    let secrets = config
        .mailboxes
        .iter()
        .flat_map(|m| [m.password.clone(), m.oauth2_token.clone()])
        .chain([config.smtp.password.clone()])
        .chain(
            config
                .mailboxes
                .iter()
                .filter_map(|m| m.grant.as_ref())
                .chain(config.smtp.grant.as_ref())
                .flat_map(grant_secrets),
        )
        .flatten();
    let mut named = 0;
    for secret in secrets {
        if let Secret::Credential(name) = secret {
            named += 1;
            // By name alone: systemd looks in /etc/credstore.encrypted/
            // (README "Install"), and skips one that is not there instead
            // of failing the start, so the daemon can say which it lacks.
            let line = format!("LoadCredentialEncrypted={name}");
            assert!(
                unit.lines().any(|l| l.trim() == line),
                "the unit has no {line}"
            );
        }
    }
    assert!(named >= 3, "the example config names {named} credentials");
    for needle in [
        "Type=notify",
        "StateDirectory=",
        "ConfigurationDirectory=",
        "Restart=on-failure",
        "WatchdogSec=",
    ] {
        assert!(unit.contains(needle), "the unit lacks {needle}");
    }
}

/// The backup's command as the unit runs it (its directories moved into
/// a temp dir, the shipped config): a dated, whole export in the backup
/// directory, and the newest 14 backups kept.
#[test]
fn the_backup_runs_as_written_and_keeps_14() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/mailtriage-backup.service"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let backups = state.join("backup");
    std::fs::create_dir_all(&backups).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let args: Vec<String> = exec
        .split_whitespace()
        .map(|a| {
            a.replace("/etc/mailtriage", config.to_str().unwrap())
                .replace("/var/lib/mailtriage", state.to_str().unwrap())
        })
        .collect();
    assert_eq!(args[0], "/usr/bin/mailtriage");
    // The database the daemon would have, with a case in it.
    let db = state.join("db");
    {
        let store = mailtriage::store::Store::open(&db, 1 << 20).unwrap();
        store.reserve_case_id(2026).unwrap();
    }
    let old = |d: u32| format!("mailtriage-200001{d:02}T000000Z.jsonl");
    for d in 1..=15 {
        std::fs::write(backups.join(old(d)), "old").unwrap();
    }
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_mailtriage"))
            .args(&args[1..])
            // As systemd sets them for the unit (no runtime directory).
            .env(
                "STATE_DIRECTORY",
                format!("{}:{}", state.display(), backups.display()),
            )
            .env_remove("RUNTIME_DIRECTORY")
            .output()
            .unwrap()
    };
    // sled may hold the lock a moment after the store is dropped.
    mailtriage_testkit::wait_until(
        std::time::Duration::from_secs(10),
        || !mailtriage::store::Store::in_use(&db),
        || "the database stays locked".into(),
    );
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 14, "{names:?}");
    assert_eq!(names[0], old(3), "the two oldest removed");
    let new = names.last().unwrap();
    assert!(new.starts_with("mailtriage-20") && !new.starts_with("mailtriage-2000"));
    let file = std::fs::File::open(backups.join(new)).unwrap();
    let checked = mailtriage::store::verify(std::io::BufReader::new(file)).unwrap();
    assert_eq!(checked.header.counts.get("counter"), Some(&1));
}

/// `Documentation=` names the man page and the README, and the package's
/// assets (Cargo.toml, `[package.metadata.deb]`) install both;
/// `scripts/package-test` checks the built package's file list too.
#[test]
fn documentation_points_at_what_the_package_installs() {
    let unit = unit_text();
    let docs: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Documentation="))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(
        docs,
        [
            "man:mailtriage(1)",
            "file:///usr/share/doc/mailtriage/README.md"
        ],
        "{unit}"
    );
    let manifest: toml::Table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let assets: Vec<(String, String)> = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets")
        .iter()
        .map(|a| {
            (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let installs = |source: &str, dest: &str| assets.iter().any(|a| a.0 == source && a.1 == dest);
    assert!(
        installs("README.md", "usr/share/doc/mailtriage/"),
        "{assets:?}"
    );
    assert!(
        installs("target/deb-assets/man/*.1", "usr/share/man/man1/"),
        "{assets:?}"
    );
}

/// The package installs every unit of systemd/ (cargo-deb takes
/// `UNIT-NAME.service`, `.timer`, ... of each `systemd-units` entry from
/// the `maintainer-scripts` directory), none enabled or started on
/// install, and every unit's `Documentation=` is a file the package
/// installs; `scripts/package-test` checks the built package holds them.
#[test]
fn the_package_installs_every_unit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    assert_eq!(deb["maintainer-scripts"].as_str(), Some("systemd/"));
    let entries = deb["systemd-units"]
        .as_array()
        .expect("[package.metadata.deb] systemd-units");
    let mut names = Vec::new();
    for e in entries {
        let name = e["unit-name"].as_str().expect("unit-name");
        assert_eq!(e["enable"].as_bool(), Some(false), "{name}: enabled");
        assert_eq!(e["start"].as_bool(), Some(false), "{name}: started");
        names.push(name.to_string());
    }
    let mut files: Vec<String> = std::fs::read_dir(root.join("systemd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service") || n.ends_with(".timer"))
        .collect();
    files.sort();
    let mut units = UNITS.map(String::from).to_vec();
    units.sort();
    assert_eq!(files, units, "UNITS lists every unit of systemd/");
    for file in &files {
        let stem = file.rsplit_once('.').map(|(s, _)| s).unwrap();
        assert!(
            names.iter().any(|n| n == stem),
            "systemd/{file} is in no systemd-units entry of Cargo.toml: the package would not install it"
        );
        let text = std::fs::read_to_string(root.join("systemd").join(file)).unwrap();
        for doc in text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Documentation="))
            .flat_map(str::split_whitespace)
        {
            assert!(
                [
                    "man:mailtriage(1)",
                    "file:///usr/share/doc/mailtriage/README.md"
                ]
                .contains(&doc),
                "{file}: Documentation={doc} is not what the package installs"
            );
        }
    }
}
