//! The imap module against a real Dovecot (crates/testkit).

use std::sync::Arc;
use std::time::Duration;

use mailtriage::imap::{Auth, Connection, Idled, ImapError, ImapSettings};
use mailtriage::tls::Tls;
use mailtriage_testkit::Dovecot;

fn settings(d: &Dovecot, user: &str, password: &str) -> ImapSettings {
    ImapSettings {
        host: "127.0.0.1".into(),
        port: d.port(),
        tls: Tls::Plain,
        user: user.into(),
        auth: Auth::Password(password.into()),
        timeout: Duration::from_secs(10),
        ca_file: None,
    }
}

fn mail(n: u32) -> Vec<u8> {
    format!(
        "From: Priya <priya@example.com>\r\nTo: ops@example.com\r\nSubject: Escalation {n}\r\nMessage-ID: <m{n}@example.com>\r\n\r\nCustomer Name: Asha {n}\r\nOrder ID: CK{n}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn login_is_checked() {
    let d = Dovecot::start(&[("ops", "secret")]);
    assert!(
        Connection::connect(&settings(&d, "ops", "secret"))
            .await
            .is_ok()
    );
    match Connection::connect(&settings(&d, "ops", "wrong")).await {
        Err(ImapError::Auth { user, .. }) => assert_eq!(user, "ops"),
        Err(e) => panic!("expected an authentication error, got {e}"),
        Ok(_) => panic!("a wrong password logged in"),
    }
}

#[tokio::test]
async fn fetches_by_uid_without_marking_then_marks_and_moves() {
    let d = Dovecot::start(&[("ops", "secret")]);
    for n in 1..=4 {
        d.append("ops", "INBOX", &mail(n));
    }
    let mut c = Connection::connect(&settings(&d, "ops", "secret"))
        .await
        .unwrap();
    assert!(c.can_idle());
    let sel = c.select("INBOX").await.unwrap();
    assert_eq!(sel.exists, 4);
    assert_eq!(sel.uid_validity, d.uid_validity("ops", "INBOX"));
    assert_eq!(c.uids_after(0).await.unwrap(), [1, 2, 3, 4]);
    assert_eq!(c.uids_after(2).await.unwrap(), [3, 4]);
    assert_eq!(c.uids_after(4).await.unwrap(), Vec::<u32>::new());

    let sizes = c.sizes(&[1, 2]).await.unwrap();
    assert_eq!(
        sizes,
        [(1, mail(1).len() as u32), (2, mail(2).len() as u32)]
    );
    let bodies = c.fetch(&[2, 3]).await.unwrap();
    assert_eq!(bodies, [(2, mail(2)), (3, mail(3))]);
    assert!(
        d.seen("ops", "INBOX").is_empty(),
        "fetching must not set \\Seen"
    );

    c.mark_seen(&[1, 2]).await.unwrap();
    assert_eq!(d.seen("ops", "INBOX"), [1, 2]);

    c.ensure_folder("Processed").await.unwrap();
    c.ensure_folder("Processed").await.unwrap();
    c.move_to(&[1, 3], "Processed").await.unwrap();
    assert_eq!(d.count("ops", "INBOX"), 2);
    assert_eq!(d.count("ops", "Processed"), 2);

    match c.select("NoSuchFolder").await {
        Err(ImapError::MissingFolder(f)) => assert_eq!(f, "NoSuchFolder"),
        other => panic!("expected MissingFolder, got {:?}", other.map(|_| ())),
    }
    c.logout().await;
}

#[tokio::test]
async fn idle_reports_new_mail_and_stops_on_request() {
    let d = Arc::new(Dovecot::start(&[("ops", "secret")]));
    let mut c = Connection::connect(&settings(&d, "ops", "secret"))
        .await
        .unwrap();
    c.select("INBOX").await.unwrap();

    // A message arriving while the client idles: the appender cannot know
    // when IDLE has started, so it appends, and again if no news came
    // within a few seconds (waiting on the outcome, not sleeping).
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let appender = {
        let d = d.clone();
        std::thread::spawn(move || {
            for n in 1..=5 {
                d.append("ops", "INBOX", &mail(n));
                if done_rx.recv_timeout(Duration::from_secs(3)).is_ok() {
                    return n;
                }
            }
            0
        })
    };
    let outcome = c
        .idle(Duration::from_secs(30), std::future::pending())
        .await
        .unwrap();
    let _ = done_tx.send(());
    assert_eq!(outcome, Idled::NewData);
    let appended = appender.join().unwrap();
    assert!(appended >= 1);
    assert!(
        !c.uids_after(0).await.unwrap().is_empty(),
        "the session works after IDLE"
    );

    // A stop request ends IDLE at once; the bound ends it otherwise.
    let outcome = c.idle(Duration::from_secs(30), async {}).await.unwrap();
    assert_eq!(outcome, Idled::Stopped);
    let outcome = c
        .idle(Duration::from_millis(300), std::future::pending())
        .await
        .unwrap();
    assert_eq!(outcome, Idled::Timeout);
    c.noop().await.unwrap();
}

/// Mail that arrives between commands is announced with the answer to the
/// next command (an untagged EXISTS), and IDLE does not announce it again:
/// the daemon asks `saw_new_mail` before it idles.
#[tokio::test]
async fn an_exists_announced_with_another_answer_is_seen_before_idling() {
    let d = Dovecot::start(&[("ops", "secret")]);
    d.append("ops", "INBOX", &mail(1));
    let mut c = Connection::connect(&settings(&d, "ops", "secret"))
        .await
        .unwrap();
    c.select("INBOX").await.unwrap();
    assert_eq!(c.uids_after(0).await.unwrap(), [1]);
    c.drain_unsolicited();
    assert!(!c.saw_new_mail(), "nothing new yet");

    // Another session delivers; this one learns of it with its next answer.
    d.append("ops", "INBOX", &mail(2));
    c.noop().await.unwrap();
    assert!(
        c.saw_new_mail(),
        "the EXISTS that came with the NOOP's answer"
    );
    assert!(!c.saw_new_mail(), "told once");
    // Why it matters: IDLE now says nothing about that message (Dovecot
    // announces new mail to an idling client within about 500 ms; this
    // waits four times that).
    let idled = c
        .idle(Duration::from_secs(2), std::future::pending())
        .await
        .unwrap();
    assert_eq!(
        idled,
        Idled::Timeout,
        "IDLE announced a message already announced"
    );
    assert_eq!(c.uids_after(1).await.unwrap(), [2]);
}
