//! The systemd unit: `systemd-analyze verify` is clean, `systemd-analyze
//! security` rates it 2.0 or lower, it loads every credential the example
//! config names, and its documentation is what the Debian package installs.

use std::path::Path;
use std::process::Command;

fn unit_text() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/mailtriage.service"),
    )
    .expect("systemd/mailtriage.service")
}

/// The unit, with ExecStart pointing at the binary under test (verify
/// checks that the executable exists), in a temp dir.
fn installed_unit() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailtriage.service");
    let text = unit_text().replace("/usr/bin/mailtriage", env!("CARGO_BIN_EXE_mailtriage"));
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn verify_is_clean() {
    let (_dir, unit) = installed_unit();
    // --man=no: the man page of Documentation= exists once the package is
    // installed, where `scripts/package-test` verifies without it.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
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
    let (_dir, unit) = installed_unit();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
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
