//! Secrets never reach the logs, even at the most verbose level: the real
//! binary runs with `RUST_LOG=trace` against an IMAP server and an SMTP
//! server that both require authentication, and its output is searched for
//! the passwords. The passwords come from an environment variable and a
//! command, two of the secret sources of mailtriage.toml.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use mailtriage_testkit::{
    Dovecot, MailtriageToml, Secret, SmtpCapture, copy_shipped_config, database,
};

const IMAP_PASSWORD: &str = "imap-S3cret-pw-4711";
const SMTP_PASSWORD: &str = "smtp-S3cret-pw-0815";

fn config_dir(d: &Dovecot, s: &SmtpCapture) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_shipped_config(dir.path());
    let pw_file = dir.path().join("imap.pw");
    std::fs::write(&pw_file, IMAP_PASSWORD).unwrap();
    let mut toml = MailtriageToml::new(&database(dir.path()), s.port());
    toml.smtp
        .set("user", "mailtriage@example.com")
        .set("password", Secret::Env("MAILTRIAGE_TEST_SMTP_PASSWORD"));
    let pw = pw_file.display().to_string();
    toml.mailbox("ops", d.port(), Secret::Command(&["cat", &pw]));
    toml.write(dir.path());
    dir
}

#[test]
fn passwords_never_reach_the_logs() {
    let d = Dovecot::start(&[("ops", IMAP_PASSWORD)]);
    let s = SmtpCapture::start_with_auth("mailtriage@example.com", SMTP_PASSWORD);
    let dir = config_dir(&d, &s);
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(["run", "--config"])
        .arg(dir.path())
        .env("RUST_LOG", "trace")
        .env("MAILTRIAGE_TEST_SMTP_PASSWORD", SMTP_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start mailtriage run");

    d.append(
        "ops",
        "INBOX",
        b"From: priya@example.com\r\nTo: ops@example.com\r\nSubject: Escalation (Order #CK1)\r\nMessage-ID: <secret-test@example.com>\r\n\r\nCustomer Name: Asha\r\nPhone: 9876543210\r\n",
    );
    let got = s.wait_for(1, Duration::from_secs(30));
    assert_eq!(
        got[0].auth_user.as_deref(),
        Some("mailtriage@example.com"),
        "SMTP AUTH was used"
    );

    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait().map(|s| s.code()));
    });
    let code = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("mailtriage did not exit within 10 s of SIGTERM")
        .expect("wait");
    assert_eq!(code, Some(0), "SIGTERM ends the daemon with exit code 0");

    let mut text = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        text.contains("case opened"),
        "the log was written at all:\n{text}"
    );
    for secret in [IMAP_PASSWORD, SMTP_PASSWORD] {
        assert!(!text.contains(secret), "a password is in the log");
    }
    // AUTH PLAIN sends base64("\0user\0password"); look for the password's
    // base64 at each of the three alignments.
    for prefix in ["", "\0", "\0\0"] {
        let encoded = mailtriage_testkit::base64(format!("{prefix}{SMTP_PASSWORD}").as_bytes());
        let core = &encoded[4..encoded.len() - 4];
        assert!(
            !text.contains(core),
            "the SMTP password is in the log, base64-encoded"
        );
    }
}
