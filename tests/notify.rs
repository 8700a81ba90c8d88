//! The daemon's side of `Type=notify`: READY=1 once every mailbox has
//! connected or failed once, WATCHDOG=1 at half the watchdog interval, and
//! STOPPING=1 on SIGTERM, read from a datagram socket standing in for
//! systemd's `$NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailtriage_testkit::{Dovecot, Extra, Secret, SmtpCapture, config, config_dir};

/// The notification datagrams received within `within`, until `done`
/// says enough.
fn receive_until(
    sock: &UnixDatagram,
    within: Duration,
    got: &mut Vec<String>,
    mut done: impl FnMut(&[String]) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while !done(got) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return done(got);
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }
    true
}

fn count(got: &[String], state: &str) -> usize {
    got.iter().filter(|d| d.lines().any(|l| l == state)).count()
}

#[test]
fn ready_after_every_mailbox_reported_then_watchdog_then_stopping() {
    let d = Dovecot::start(&[("ops", "secret"), ("support", "secret")]);
    let s = SmtpCapture::start();
    let dir = config_dir(&d, &s, Extra::default());
    // A second mailbox whose password is wrong: READY must not wait for
    // it to succeed, only for it to have tried.
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let mut toml = std::fs::read_to_string(dir.path().join("mailtriage.toml")).unwrap();
    let mut support = config::mailbox("support", d.port(), Secret::File(&wrong));
    support.set("timeout", "10s");
    toml.push_str(&format!("\n{support}"));
    std::fs::write(dir.path().join("mailtriage.toml"), toml).unwrap();

    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(["run", "--log-format", "text", "--config"])
        .arg(dir.path())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn mailtriage run");
    let log_text = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();

    let mut got = Vec::new();
    let ready = receive_until(&sock, Duration::from_secs(20), &mut got, |g| {
        count(g, "READY=1") > 0
    });
    assert!(ready, "no READY=1 within 20 s; got {got:?}\n{}", log_text());
    // READY came after both mailboxes had their first attempt: the good
    // one connected and the bad one's login failed, both logged before.
    let text = log_text();
    let ready_at = text
        .find("every mailbox has reported")
        .expect("the daemon logs that it is ready");
    let before = &text[..ready_at];
    let has = |a: &str, b: &str| before.lines().any(|l| l.contains(a) && l.contains(b));
    assert!(
        has("connected", "mailbox=ops") && has("mailbox session failed", "mailbox=support"),
        "READY before both mailboxes reported:\n{text}"
    );
    assert_eq!(count(&got, "READY=1"), 1, "{got:?}");

    // Watchdog pings at half of 400 ms: several within two seconds.
    let pinged = receive_until(&sock, Duration::from_secs(5), &mut got, |g| {
        count(g, "WATCHDOG=1") >= 4
    });
    assert!(pinged, "fewer than 4 WATCHDOG=1 within 5 s: {got:?}");

    // SIGTERM: STOPPING=1, then a clean exit.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopping = receive_until(&sock, Duration::from_secs(10), &mut got, |g| {
        count(g, "STOPPING=1") > 0
    });
    assert!(
        stopping,
        "no STOPPING=1 after SIGTERM: {got:?}\n{}",
        log_text()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "no exit 10 s after SIGTERM\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}\n{}", log_text());
    assert_eq!(count(&got, "READY=1"), 1, "READY sent twice: {got:?}");
}
