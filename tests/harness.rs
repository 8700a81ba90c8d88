//! Proof that the real-server test kit (crates/testkit) works: private
//! Dovecot and SMTP capture servers start, serve, record, reject, stop and
//! restart, side by side. Runs against the real servers, never skipped.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use mailtriage_testkit::ca::tls_greeting;
use mailtriage_testkit::{Dovecot, RejectAt, SmtpCapture, SmtpClient, SmtpTls, TestCa};

const WAIT: Duration = Duration::from_secs(10);

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Customer <customer@example.com>\r\n\
         To: Support <support@example.org>\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{}@example.com>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         \r\n\
         {body}\r\n",
        subject.replace(' ', ".")
    )
    .into_bytes()
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn refused(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
}

#[test]
fn dovecot_login_accepts_the_right_password_only() {
    let dovecot = Dovecot::start(&[("alice", "alice-pw"), ("bob", "b\"ob pw\\")]);
    assert_ne!(dovecot.port(), 0);

    let mut client = dovecot.connect().expect("connect");
    assert!(
        client.greeting.contains("IDLE"),
        "greeting {:?}",
        client.greeting
    );
    client
        .login("alice", "alice-pw")
        .unwrap_or_else(|e| panic!("right password refused: {e}\n{}", dovecot.log_tail()));
    client.logout().expect("LOGOUT");

    // A password that needs quoting.
    let mut client = dovecot.connect().expect("connect");
    client
        .login("bob", "b\"ob pw\\")
        .unwrap_or_else(|e| panic!("quoted password refused: {e}\n{}", dovecot.log_tail()));

    let mut client = dovecot.connect().expect("connect");
    let err = client
        .login("alice", "wrong")
        .expect_err("a wrong password was accepted");
    assert!(err.contains("AUTHENTICATIONFAILED"), "{err}");
    // The connection is still usable after a failed LOGIN, as in IMAP.
    client
        .login("alice", "alice-pw")
        .expect("LOGIN after a failed one");

    let mut client = dovecot.connect().expect("connect");
    let err = client
        .login("mallory", "alice-pw")
        .expect_err("an unknown user was accepted");
    assert!(err.contains("NO"), "{err}");

    // Password change (passwd-file re-read): old one fails, new one works.
    let mut dovecot = dovecot;
    dovecot.set_password("alice", "new-pw");
    let mut client = dovecot.connect().expect("connect");
    client
        .login("alice", "alice-pw")
        .expect_err("the old password still works after set_password");
    client.login("alice", "new-pw").expect("the new password");
    assert!(dovecot.log().contains("alice"), "log: {}", dovecot.log());
}

#[test]
fn dovecot_delivered_and_appended_messages_are_visible() {
    let dovecot = Dovecot::start(&[("alice", "pw")]);
    let first = message("Delivered one", "straight into the Maildir");
    let second = message("Appended one", "over IMAP APPEND");

    let path = dovecot.deliver("alice", "INBOX", &first);
    assert!(
        path.starts_with(dovecot.maildir("alice").join("new")),
        "{path:?}"
    );
    let uid = dovecot.append("alice", "INBOX", &second);
    assert_eq!(dovecot.count("alice", "INBOX"), 2);
    // A message written into the Maildir gets its UID when a session next
    // syncs the folder, so here the APPEND may come first: UIDs are 1 and 2
    // in either order.
    assert!(uid == 1 || uid == 2, "APPENDUID {uid}");

    // A folder that does not exist yet, both ways.
    dovecot.deliver("alice", "Support", &first);
    dovecot.deliver("alice", "Support.Billing", &second);
    let archived = dovecot.append("alice", "Archive", &second);
    assert_eq!(archived, 1);
    assert_eq!(dovecot.count("alice", "Support"), 1);
    assert_eq!(dovecot.count("alice", "Support.Billing"), 1);
    assert_eq!(dovecot.count("alice", "Archive"), 1);
    assert_eq!(
        dovecot.folders("alice"),
        ["Archive", "INBOX", "Support", "Support.Billing"]
    );

    // The bytes come back as they went in.
    let inbox = dovecot.fetch("alice", "INBOX");
    assert_eq!(inbox.len(), 2);
    let appended = inbox.iter().find(|m| m.uid == uid).expect("the APPENDUID");
    let delivered = inbox.iter().find(|m| m.uid != uid).expect("the other UID");
    assert_eq!(appended.raw, second);
    assert_eq!(delivered.raw, first);
    assert_eq!(dovecot.fetch("alice", "Archive")[0].raw, second);

    // A folder that does not exist: a panic naming it, with the log tail.
    let err = catch_unwind(AssertUnwindSafe(|| dovecot.count("alice", "Nope")))
        .expect_err("count of a missing folder did not panic");
    let text = panic_text(err);
    assert!(text.contains("STATUS Nope"), "{text}");
    assert!(text.contains("log tail"), "{text}");
}

#[test]
fn dovecot_flags_read_back_seen_store_and_move() {
    let dovecot = Dovecot::start(&[("alice", "pw")]);
    dovecot.deliver("alice", "INBOX", &message("Unseen", "a"));
    dovecot.deliver_with_flags("alice", "INBOX", &message("Seen on disk", "b"), "S");
    dovecot.append_with_flags(
        "alice",
        "INBOX",
        &message("Seen appended", "c"),
        &["\\Seen"],
    );
    dovecot.deliver_with_flags("alice", "INBOX", &message("Flagged", "d"), "F");

    // UIDs by subject (Maildir deliveries get theirs at the next sync).
    let inbox = dovecot.fetch("alice", "INBOX");
    let uid_of = |subject: &str| {
        let header = format!("Subject: {subject}\r\n");
        inbox
            .iter()
            .find(|m| String::from_utf8_lossy(&m.raw).contains(&header))
            .unwrap_or_else(|| panic!("no {subject:?} in {inbox:?}"))
            .uid
    };
    let (unseen, seen_disk, seen_append, flagged) = (
        uid_of("Unseen"),
        uid_of("Seen on disk"),
        uid_of("Seen appended"),
        uid_of("Flagged"),
    );

    let flags = dovecot.flags("alice", "INBOX");
    let uids: Vec<u32> = flags.iter().map(|(uid, _)| *uid).collect();
    assert_eq!(uids, [1, 2, 3, 4], "{flags:?}");
    let flags_of = |uid: u32| {
        flags
            .iter()
            .find(|(u, _)| *u == uid)
            .expect("uid")
            .1
            .clone()
    };
    assert!(flags_of(unseen).is_empty(), "{flags:?}");
    assert_eq!(flags_of(seen_disk), ["\\Seen"], "{flags:?}");
    assert_eq!(flags_of(seen_append), ["\\Seen"], "{flags:?}");
    assert_eq!(flags_of(flagged), ["\\Flagged"], "{flags:?}");
    let mut seen = vec![seen_disk, seen_append];
    seen.sort();
    assert_eq!(dovecot.seen("alice", "INBOX"), seen);

    // What a daemon does: mark seen, then move; read back both.
    let mut client = dovecot.client("alice");
    client.select("INBOX").expect("SELECT");
    client
        .command(&format!("UID STORE {unseen} +FLAGS (\\Seen)"))
        .expect("STORE");
    client.command("CREATE Handled").expect("CREATE");
    client
        .command(&format!("UID MOVE {seen_disk} Handled"))
        .expect("MOVE");
    client.logout().expect("LOGOUT");

    let mut seen = vec![unseen, seen_append];
    seen.sort();
    assert_eq!(dovecot.seen("alice", "INBOX"), seen);
    assert_eq!(dovecot.count("alice", "INBOX"), 3);
    let moved = dovecot.flags("alice", "Handled");
    assert_eq!(
        moved,
        [(1, vec!["\\Seen".to_string()])],
        "a moved message keeps its flags and gets the next UID of its new folder"
    );
    let moved = dovecot.fetch("alice", "Handled");
    assert!(String::from_utf8_lossy(&moved[0].raw).contains("Subject: Seen on disk"));

    // Empty folder: no messages, no error.
    dovecot.create_folder("alice", "Empty");
    assert!(dovecot.flags("alice", "Empty").is_empty());
    assert_eq!(dovecot.count("alice", "Empty"), 0);
}

#[test]
fn dovecot_idle_client_is_told_about_appends_and_deliveries() {
    let dovecot = Dovecot::start(&[("alice", "pw")]);
    let mut idler = dovecot.client("alice");
    assert_eq!(idler.select("INBOX").expect("SELECT"), 0);
    let tag = idler.idle().expect("IDLE");

    let started = Instant::now();
    dovecot.append("alice", "INBOX", &message("Arrives by APPEND", "x"));
    let line = idler
        .wait_for_untagged("EXISTS", WAIT)
        .expect("read while idling")
        .unwrap_or_else(|| {
            panic!(
                "no EXISTS within {WAIT:?} of an APPEND\n{}",
                dovecot.log_tail()
            )
        });
    assert_eq!(line, "* 1 EXISTS");
    eprintln!("IDLE: EXISTS {:?} after APPEND", started.elapsed());

    let started = Instant::now();
    dovecot.deliver("alice", "INBOX", &message("Arrives in the Maildir", "y"));
    let line = idler
        .wait_for_untagged("EXISTS", WAIT)
        .expect("read while idling")
        .unwrap_or_else(|| {
            panic!(
                "no EXISTS within {WAIT:?} of a delivery\n{}",
                dovecot.log_tail()
            )
        });
    assert_eq!(line, "* 2 EXISTS");
    eprintln!(
        "IDLE: EXISTS {:?} after Maildir delivery",
        started.elapsed()
    );

    idler.idle_done(&tag).expect("DONE");
    idler.logout().expect("LOGOUT");
}

#[test]
fn dovecot_idle_client_sees_flag_changes_moves_and_new_uidvalidity() {
    let dovecot = Dovecot::start(&[("alice", "pw")]);
    dovecot.append("alice", "INBOX", &message("One", "a"));
    dovecot.append("alice", "INBOX", &message("Two", "b"));
    let mut idler = dovecot.client("alice");
    assert_eq!(idler.select("INBOX").expect("SELECT"), 2);
    let tag = idler.idle().expect("IDLE");

    // Another session (the daemon, a user's phone) marks one seen...
    let mut other = dovecot.client("alice");
    other.select("INBOX").expect("SELECT");
    let started = Instant::now();
    other.command("UID STORE 1 +FLAGS (\\Seen)").expect("STORE");
    let line = idler
        .wait_for_untagged("FETCH", WAIT)
        .expect("read while idling")
        .unwrap_or_else(|| {
            panic!(
                "no FETCH within {WAIT:?} of a STORE\n{}",
                dovecot.log_tail()
            )
        });
    assert!(
        line.starts_with("* 1 FETCH (") && line.contains("FLAGS (\\Seen"),
        "{line}"
    );
    eprintln!("IDLE: {line:?} {:?} after STORE", started.elapsed());

    // ...and moves the other one away: the idler sees it expunged.
    other.command("CREATE Done").expect("CREATE");
    let started = Instant::now();
    other.command("UID MOVE 2 Done").expect("MOVE");
    let line = idler
        .wait_for_untagged("EXPUNGE", WAIT)
        .expect("read while idling")
        .unwrap_or_else(|| {
            panic!(
                "no EXPUNGE within {WAIT:?} of a MOVE\n{}",
                dovecot.log_tail()
            )
        });
    assert_eq!(line, "* 2 EXPUNGE");
    eprintln!("IDLE: {line:?} {:?} after MOVE", started.elapsed());
    idler.idle_done(&tag).expect("DONE");
    idler.logout().expect("LOGOUT");

    // A new folder gets a new UIDVALIDITY; so does one deleted and re-created.
    let inbox = dovecot.uid_validity("alice", "INBOX");
    let done = dovecot.uid_validity("alice", "Done");
    assert!(done > inbox, "INBOX {inbox}, Done {done}");
    other.command("DELETE Done").expect("DELETE");
    other.command("CREATE Done").expect("CREATE again");
    other.logout().expect("LOGOUT");
    let again = dovecot.uid_validity("alice", "Done");
    assert!(
        again > done,
        "re-created Done kept UIDVALIDITY {done} (now {again})"
    );
    eprintln!("UIDVALIDITY: INBOX {inbox}, Done {done}, Done re-created {again}");
}

#[test]
fn dovecot_stop_and_restart_keep_data_and_port() {
    let mut dovecot = Dovecot::start(&[("alice", "pw")]);
    let port = dovecot.port();
    dovecot.deliver("alice", "INBOX", &message("Before the outage", "a"));
    dovecot.append("alice", "Archive", &message("Archived", "b"));
    let validity = dovecot.uid_validity("alice", "INBOX");
    let mut open = dovecot.client("alice");
    open.select("INBOX").expect("SELECT");

    dovecot.stop();
    assert!(!dovecot.running());
    assert!(refused(port), "port {port} still answers after stop()");
    assert!(
        !dovecot.dir().join("run").join("master.pid").exists(),
        "master.pid left behind"
    );
    // A connection open during the outage is gone.
    assert!(
        open.command("NOOP").is_err(),
        "NOOP worked on a stopped server"
    );
    dovecot.stop(); // stopping twice is harmless

    dovecot.restart();
    assert!(dovecot.running());
    assert_eq!(dovecot.port(), port);
    assert_eq!(dovecot.count("alice", "INBOX"), 1);
    assert_eq!(dovecot.count("alice", "Archive"), 1);
    assert_eq!(dovecot.uid_validity("alice", "INBOX"), validity);
    let uid = dovecot.append("alice", "INBOX", &message("After the outage", "c"));
    assert_eq!(uid, 2);

    // restart() of a running server works too.
    dovecot.restart();
    assert_eq!(dovecot.count("alice", "INBOX"), 2);
}

#[test]
fn smtp_capture_records_message_and_envelope() {
    let capture = SmtpCapture::start();
    let raw = message("Reply to you", "line one\r\n.leading dot\r\nlast line");

    let mut client = capture.connect().expect("connect");
    assert_eq!(client.greeting.code, 220, "{:?}", client.greeting);
    let ehlo = client.command("EHLO client.test").expect("EHLO");
    assert_eq!(ehlo.code, 250);
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "AUTH offered without start_with_auth: {ehlo:?}"
    );
    let reply = client
        .command("MAIL FROM:<support@example.org>")
        .expect("MAIL");
    assert_eq!(reply.code, 250, "{reply:?}");
    for rcpt in ["customer@example.com", "cc@example.net"] {
        let reply = client.command(&format!("RCPT TO:<{rcpt}>")).expect("RCPT");
        assert_eq!(reply.code, 250, "{reply:?}");
    }
    let reply = client.data(&raw).expect("DATA");
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit();

    let messages = capture.wait_for(1, WAIT);
    assert_eq!(messages.len(), 1);
    let got = &messages[0];
    assert_eq!(got.mail_from, "support@example.org");
    assert_eq!(got.rcpt_to, ["customer@example.com", "cc@example.net"]);
    assert_eq!(got.auth_user, None);
    assert_eq!(got.raw, raw, "{}", String::from_utf8_lossy(&got.raw));
    assert!(got.path.ends_with("messages/000001.eml"), "{:?}", got.path);

    // Null sender and a second message.
    let mut client = capture.connect().expect("connect");
    let sent = client
        .send_mail("", &["bounce@example.com"], &message("Bounce", "x"))
        .expect("SMTP conversation");
    assert!(sent.is_ok(), "{sent:?}");
    let messages = capture.wait_for(2, WAIT);
    assert_eq!(messages[1].mail_from, "");
    assert_eq!(messages[1].rcpt_to, ["bounce@example.com"]);

    // wait_for panics with what arrived and the log tail.
    let err = catch_unwind(AssertUnwindSafe(|| {
        capture.wait_for(3, Duration::from_millis(100))
    }))
    .expect_err("wait_for(3) with 2 messages did not panic");
    let text = panic_text(err);
    assert!(text.contains("for 3 message(s), got 2"), "{text}");
    assert!(text.contains("SMTP capture log tail"), "{text}");
}

#[test]
fn smtp_capture_auth_mode_rejects_wrong_credentials() {
    let capture = SmtpCapture::start_with_auth("mailer", "s3cret");
    let raw = message("Authenticated", "x");

    let mut client = capture.connect().expect("connect");
    let ehlo = client.command("EHLO client.test").expect("EHLO");
    assert!(
        ehlo.lines
            .iter()
            .any(|l| l.starts_with("AUTH") && l.contains("PLAIN") && l.contains("LOGIN")),
        "no AUTH PLAIN LOGIN in {ehlo:?}"
    );
    let reply = client.command("MAIL FROM:<a@example.org>").expect("MAIL");
    assert_eq!(reply.code, 530, "MAIL before AUTH: {reply:?}");
    let reply = client.auth_plain("mailer", "wrong").expect("AUTH PLAIN");
    assert_eq!(reply.code, 535, "wrong password: {reply:?}");
    let reply = client.auth_login("intruder", "s3cret").expect("AUTH LOGIN");
    assert_eq!(reply.code, 535, "wrong user: {reply:?}");
    let reply = client.auth_plain("mailer", "s3cret").expect("AUTH PLAIN");
    assert_eq!(reply.code, 235, "right password: {reply:?}");
    let sent = client
        .send_mail("a@example.org", &["b@example.com"], &raw)
        .expect("SMTP conversation");
    assert!(sent.is_ok(), "{sent:?}\n{}", capture.log_tail());
    client.quit();

    let mut client = capture.connect().expect("connect");
    client.command("EHLO client.test").expect("EHLO");
    let reply = client.auth_login("mailer", "s3cret").expect("AUTH LOGIN");
    assert_eq!(reply.code, 235, "AUTH LOGIN: {reply:?}");
    client.quit();

    let messages = capture.wait_for(1, WAIT);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].auth_user.as_deref(), Some("mailer"));
    assert_eq!(messages[0].raw, raw);
}

#[test]
fn smtp_capture_reject_mode_answers_the_code_until_cleared() {
    let capture = SmtpCapture::start();
    let raw = message("Rejected", "x");
    let send = || {
        let mut client = capture.connect().expect("connect");
        let result = client
            .send_mail("a@example.org", &["b@example.com"], &raw)
            .expect("SMTP conversation");
        client.quit();
        result
    };

    capture.set_reject(Some(451));
    let reply = send().expect_err("accepted while rejecting with 451");
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(reply.text().contains("4.0.0"), "{reply:?}");

    capture.set_reject(Some(550));
    let reply = send().expect_err("accepted while rejecting with 550");
    assert_eq!(reply.code, 550, "{reply:?}");

    capture.set_reject_at(RejectAt::Data, 554);
    let reply = send().expect_err("accepted while rejecting DATA with 554");
    assert_eq!(reply.code, 554, "{reply:?}");

    capture.set_reject(None);
    let reply = send().unwrap_or_else(|r| panic!("still rejected after clearing: {r:?}"));
    assert_eq!(reply.code, 250);
    capture.set_reject(None); // clearing twice is harmless

    let messages = capture.wait_for(1, WAIT);
    assert_eq!(messages.len(), 1, "a rejected message was stored");
    assert_eq!(
        capture.rejections(),
        [
            "rcpt 451 b@example.com",
            "rcpt 550 b@example.com",
            "data 554 b@example.com"
        ]
    );
}

#[test]
fn smtp_capture_stop_and_restart_keep_port_and_messages() {
    let mut capture = SmtpCapture::start();
    let port = capture.port();
    let send = |subject: &str| {
        let mut client = SmtpClient::connect(port).expect("connect");
        let sent = client
            .send_mail("a@example.org", &["b@example.com"], &message(subject, "x"))
            .expect("SMTP conversation");
        assert!(sent.is_ok(), "{sent:?}");
        client.quit();
    };
    send("Before");
    capture.wait_for(1, WAIT);

    capture.stop();
    assert!(!capture.running());
    assert!(refused(port), "port {port} still answers after stop()");
    assert!(SmtpClient::connect(port).is_err());

    capture.restart();
    assert!(capture.running());
    assert_eq!(capture.port(), port);
    send("After");
    let messages = capture.wait_for(2, WAIT);
    assert_eq!(messages.len(), 2);
    assert!(
        messages[1].path.ends_with("messages/000002.eml"),
        "{:?}",
        messages[1].path
    );
    assert!(String::from_utf8_lossy(&messages[1].raw).contains("Subject: After"));
}

#[test]
fn two_harness_instances_run_side_by_side() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| (Dovecot::start(&[("alice", "pw")]), SmtpCapture::start()));
        let b = s.spawn(|| (Dovecot::start(&[("alice", "pw")]), SmtpCapture::start()));
        (
            a.join().expect("first instance"),
            b.join().expect("second instance"),
        )
    });
    let ((dovecot_a, smtp_a), (dovecot_b, smtp_b)) = (a, b);
    assert_ne!(dovecot_a.port(), dovecot_b.port());
    assert_ne!(smtp_a.port(), smtp_b.port());
    assert_ne!(dovecot_a.maildir("alice"), dovecot_b.maildir("alice"));

    dovecot_a.deliver("alice", "INBOX", &message("Only in A", "a"));
    dovecot_b.append("alice", "INBOX", &message("Only in B", "b"));
    dovecot_b.append("alice", "INBOX", &message("Also in B", "b"));
    assert_eq!(dovecot_a.count("alice", "INBOX"), 1);
    assert_eq!(dovecot_b.count("alice", "INBOX"), 2);

    let mut client = smtp_b.connect().expect("connect");
    let sent = client
        .send_mail("a@example.org", &["b@example.com"], &message("To B", "x"))
        .expect("SMTP conversation");
    assert!(sent.is_ok(), "{sent:?}");
    client.quit();
    assert_eq!(smtp_b.wait_for(1, WAIT).len(), 1);
    assert!(smtp_a.messages().is_empty());
}

/// Wait until the file at `path` contains `needle` (case-insensitive).
fn wait_for_text(path: &Path, needle: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.to_ascii_lowercase().contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never said {needle:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn restart_waits_while_the_port_is_taken() {
    let mut dovecot = Dovecot::start(&[("alice", "pw")]);
    let mut capture = SmtpCapture::start();
    dovecot.stop();
    capture.stop();
    // Someone else holds both ports during the outage.
    let imap_squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, dovecot.port()))
        .expect("bind the stopped Dovecot's port");
    let smtp_squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, capture.port()))
        .expect("bind the stopped capture server's port");
    let dovecot_log = dovecot.dir().join("dovecot.log");
    let smtp_log = capture.dir().join("smtp.log");
    std::thread::scope(|s| {
        let d = s.spawn(|| dovecot.restart());
        let c = s.spawn(|| capture.restart());
        // Both tried and found the port taken; then it frees up.
        wait_for_text(&dovecot_log, "address already in use");
        wait_for_text(&smtp_log, "address already in use");
        drop(imap_squatter);
        drop(smtp_squatter);
        d.join().expect("Dovecot restart");
        c.join().expect("capture restart");
    });
    assert!(dovecot.running() && capture.running());
    assert_eq!(dovecot.count("alice", "INBOX"), 0);
    let client = capture.connect().expect("connect after restart");
    assert_eq!(client.greeting.code, 220);
    client.quit();
}

/// What a plaintext client reads first from 127.0.0.1:`port` within half a
/// second: None from a TLS server, which waits for the client's hello.
fn plain_first_line(port: u16) -> Option<String> {
    use std::io::Read;
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set read timeout");
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

/// `openssl x509 -noout -text` of a certificate.
fn x509_text(path: &Path) -> String {
    let out = std::process::Command::new(mailtriage_testkit::ca::openssl_binary())
        .args(["x509", "-noout", "-text", "-in"])
        .arg(path)
        .output()
        .expect("run openssl x509");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn test_ca_certificates_carry_the_extensions_rustls_checks() {
    let ca = TestCa::new("harness CA");
    let ca_text = x509_text(&ca.ca_pem());
    assert!(ca_text.contains("CN = harness CA"), "{ca_text}");
    assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
    assert!(ca_text.contains("Certificate Sign"), "{ca_text}");
    let server = x509_text(&ca.server_cert());
    assert!(
        server.contains("Issuer: O = mailtriage tests, CN = harness CA"),
        "{server}"
    );
    assert!(server.contains("CA:FALSE"), "{server}");
    assert!(server.contains("TLS Web Server Authentication"), "{server}");
    assert!(
        server.contains("IP Address:127.0.0.1") && server.contains("DNS:localhost"),
        "{server}"
    );
    // The chain is the server certificate, then the CA.
    let chain = std::fs::read_to_string(ca.server_chain()).expect("read the chain");
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "{chain}");
    assert!(
        std::fs::read_to_string(ca.server_key())
            .expect("key")
            .contains("PRIVATE KEY")
    );

    // Two CAs are unrelated: different keys.
    let other = TestCa::new("other CA");
    assert_ne!(
        std::fs::read(ca.ca_pem()).unwrap(),
        std::fs::read(other.ca_pem()).unwrap()
    );
}

#[test]
fn dovecot_tls_offers_starttls_and_implicit_tls_signed_by_the_test_ca() {
    let ca = TestCa::new("dovecot CA");
    let dovecot = Dovecot::start_tls(&[("alice", "pw")], &ca);
    assert_ne!(dovecot.imaps_port(), dovecot.port());

    // The normal listener offers STARTTLS and still allows plaintext LOGIN.
    let mut client = dovecot.connect().expect("connect");
    assert!(
        client.greeting.contains("STARTTLS"),
        "greeting {:?}",
        client.greeting
    );
    client.login("alice", "pw").expect("plaintext LOGIN");
    client.logout().expect("LOGOUT");

    // The imaps listener: TLS from the first byte, a certificate rustls
    // accepts for 127.0.0.1 with the test CA, then the IMAP greeting.
    let (greeting, version) = tls_greeting(dovecot.imaps_port(), &dovecot.ca_file())
        .unwrap_or_else(|e| panic!("TLS to imaps: {e}\n{}", dovecot.log_tail()));
    assert!(greeting.starts_with("* OK"), "{greeting:?}");
    assert!(version.starts_with("TLSv1_"), "{version}");

    // A client that trusts another CA refuses the certificate.
    let other = TestCa::new("unrelated CA");
    let err = tls_greeting(dovecot.imaps_port(), &other.ca_pem())
        .expect_err("a certificate from an unrelated CA was accepted");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Not plain IMAP: a plain client gets no greeting there.
    assert_eq!(plain_first_line(dovecot.imaps_port()), None);
}

#[test]
fn smtp_capture_tls_modes_require_starttls_or_speak_tls_at_once() {
    let ca = TestCa::new("smtp CA");

    // STARTTLS required: offered in EHLO, and MAIL before it is refused.
    let capture = SmtpCapture::start_tls(SmtpTls::StarttlsRequired, &ca);
    assert_eq!(capture.tls(), Some(SmtpTls::StarttlsRequired));
    let mut client = capture.connect().expect("connect");
    let ehlo = client.command("EHLO client.test").expect("EHLO");
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    let reply = client.command("MAIL FROM:<a@example.org>").expect("MAIL");
    assert_eq!(reply.code, 530, "MAIL before STARTTLS: {reply:?}");
    let reply = client.command("STARTTLS").expect("STARTTLS");
    assert_eq!(reply.code, 220, "{reply:?}");
    drop(client);

    // STARTTLS offered, not required: plain mail is accepted, recorded as
    // not TLS.
    let capture = SmtpCapture::start_tls(SmtpTls::Starttls, &ca);
    let mut client = capture.connect().expect("connect");
    let sent = client
        .send_mail("a@example.org", &["b@example.com"], &message("Plain", "x"))
        .expect("SMTP conversation");
    assert!(sent.is_ok(), "{sent:?}\n{}", capture.log_tail());
    client.quit();
    assert_eq!(capture.wait_for(1, WAIT)[0].tls, None);

    // Implicit TLS: the greeting comes over TLS with the test CA only.
    let capture = SmtpCapture::start_tls(SmtpTls::Implicit, &ca);
    let (greeting, _) = tls_greeting(capture.port(), &capture.ca_file())
        .unwrap_or_else(|e| panic!("TLS to the capture: {e}\n{}", capture.log_tail()));
    assert!(greeting.starts_with("220"), "{greeting:?}");
    let other = TestCa::new("unrelated CA");
    let err = tls_greeting(capture.port(), &other.ca_pem())
        .expect_err("a certificate from an unrelated CA was accepted");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(plain_first_line(capture.port()), None);
}
