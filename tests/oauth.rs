//! OAuth 2.0 end to end: the daemon gets its tokens from a real loopback
//! token server (crates/testkit `TokenServer`) and logs in with XOAUTH2 to
//! a real Dovecot whose `oauth2` passdb checks each token at that server's
//! introspection endpoint, and to the SMTP capture, which checks them the
//! same way. Tokens expire, rotate and are revoked on the test's command;
//! the token server counts the requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mailtriage_testkit::{
    Dovecot, InProcess, MailtriageToml, Secret, SmtpCapture, TokenClient, TokenServer, by_rcpt,
    copy_clock_free_config, database, wait_until,
};

const WAIT: Duration = Duration::from_secs(40);
/// For what waits on a backoff that may have grown to its cap (a minute)
/// while a grant was refused.
const RECOVERY: Duration = Duration::from_secs(120);
const ADMIN: &str = "it.oncall@example.com";

/// What a test's config holds besides the servers' addresses.
#[derive(Default)]
struct Setup<'a> {
    /// The `ops` mailbox's `oauth2 = ...` line (None: a password).
    ops_oauth: Option<String>,
    /// A second mailbox, `support`, with a password.
    support: bool,
    /// `[smtp]` `user` and `oauth2 = ...` lines.
    smtp_oauth: Option<String>,
    mailbox_extra: &'a str,
}

fn write_config(d: &Dovecot, s: &SmtpCapture, setup: &Setup) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_clock_free_config(dir.path());
    let password = dir.path().join("imap-password");
    std::fs::write(&password, "secret\n").unwrap();
    std::fs::write(dir.path().join("client-secret"), "app-s3cret-value\n").unwrap();
    std::fs::write(dir.path().join("refresh-token"), "rt-initial-token\n").unwrap();
    let mut toml = MailtriageToml::new(&database(dir.path()), s.port());
    toml.daemon.set("admin", vec![ADMIN]);
    toml.smtp
        .set("timeout", "10s")
        .set("retry_first", "1s")
        .set("retry_max", "2s");
    if let Some(lines) = &setup.smtp_oauth {
        toml.smtp.lines(lines);
    }
    let ops = toml.mailbox("ops", d.port(), Secret::File(&password));
    ops.set("timeout", "10s").lines(setup.mailbox_extra);
    if let Some(line) = &setup.ops_oauth {
        ops.unset("password").lines(line);
    }
    if setup.support {
        toml.mailbox("support", d.port(), Secret::File(&password))
            .set("timeout", "10s");
    }
    toml.write(dir.path());
    dir
}

/// An `oauth2` line for the token server: client credentials of `client`.
fn client_credentials(t: &TokenServer, dir_hint: &str, client: &str) -> String {
    format!(
        "oauth2 = {{ token_url = \"{}\", scope = \"mail\", client_id = \"{client}\", client_secret = {{ file = \"{dir_hint}/client-secret\" }} }}",
        t.token_url()
    )
}

/// The config dir's path as the oauth2 lines name it: written before the
/// dir exists, so the lines use a placeholder replaced here.
fn fix_paths(dir: &Path) {
    let path = dir.join("mailtriage.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("@DIR@", &dir.display().to_string())).unwrap();
}

fn run(dir: &Path, args: &[&str]) -> Output {
    mailtriage_testkit::run_cli(env!("CARGO_BIN_EXE_mailtriage"), dir, args)
}

/// An escalation to `to`: the daemon answers it with one acknowledgement.
fn escalation(n: u32, to: &str) -> Vec<u8> {
    format!(
        "From: Agent <priya.s@example.com>\r\nTo: {to}\r\nSubject: Escalation (Order #CK9{n:04})\r\nMessage-ID: <oauth-{n}@agents.example.com>\r\n\r\nCustomer Name: Asha Verma\r\nOrder ID: CK9{n:04}\r\nPhone: 98765 4{n:04}\r\nIssue: The refund has not arrived after ten days.\r\n"
    )
    .into_bytes()
}

/// Mail to `rcpt` captured so far.
fn to(s: &SmtpCapture, rcpt: &str) -> Vec<mailtriage_testkit::Captured> {
    by_rcpt(&s.messages(), rcpt).into_iter().cloned().collect()
}

fn subjects(s: &SmtpCapture, rcpt: &str) -> Vec<String> {
    to(s, rcpt)
        .iter()
        .map(mailtriage_testkit::subject)
        .collect()
}

#[test]
fn imap_and_smtp_log_in_with_one_shared_client_credentials_token() {
    let t = TokenServer::start(
        &[TokenClient::with_secret("app", "app-s3cret-value", "ops")],
        &[],
        3600,
    );
    let d = Dovecot::start_oauth(
        &[("ops", "secret"), ("support", "secret")],
        &t.introspection_url(),
    );
    let s = SmtpCapture::start_with_oauth(&t.introspection_url());
    let line = client_credentials(&t, "@DIR@", "app");
    let dir = write_config(
        &d,
        &s,
        &Setup {
            ops_oauth: Some(line.clone()),
            smtp_oauth: Some(format!("user = \"ops\"\n{line}")),
            ..Default::default()
        },
    );
    fix_paths(dir.path());
    mailtriage_testkit::cli_ok(
        env!("CARGO_BIN_EXE_mailtriage"),
        dir.path(),
        &["check-config"],
    );

    d.deliver("ops", "INBOX", &escalation(1, "ops@example.com"));
    let daemon = InProcess::start(dir.path());
    let got = s.wait_for(1, WAIT);
    assert!(
        got.iter().all(|c| c.auth_user.as_deref() == Some("ops")),
        "every message went through AUTH XOAUTH2 as ops: {got:?}"
    );
    assert_eq!(d.seen("ops", "INBOX"), vec![1], "read over IMAP XOAUTH2");
    assert!(
        d.log().contains("oauth2") || d.log().contains("XOAUTH2") || d.log().contains("xoauth2"),
        "{}",
        d.log_tail()
    );
    assert_eq!(
        t.requests("app"),
        1,
        "the mailbox and the SMTP server share the grant's one token"
    );
    daemon.shutdown();
}

#[test]
fn a_token_the_servers_refuse_is_replaced_once_and_the_login_tried_again() {
    // Two grants (two clients), so that IMAP and SMTP each present their
    // own stale token.
    let t = TokenServer::start(
        &[
            TokenClient::with_secret("app", "app-s3cret-value", "ops"),
            TokenClient::with_secret("mailer", "app-s3cret-value", "ops"),
        ],
        &[],
        3600,
    );
    let mut d = Dovecot::start_oauth(&[("ops", "secret")], &t.introspection_url());
    let mut s = SmtpCapture::start_with_oauth(&t.introspection_url());
    let dir = write_config(
        &d,
        &s,
        &Setup {
            ops_oauth: Some(client_credentials(&t, "@DIR@", "app")),
            smtp_oauth: Some(format!(
                "user = \"ops\"\n{}",
                client_credentials(&t, "@DIR@", "mailer")
            )),
            ..Default::default()
        },
    );
    fix_paths(dir.path());
    d.deliver("ops", "INBOX", &escalation(1, "ops@example.com"));
    let daemon = InProcess::start(dir.path());
    s.wait_for(1, WAIT);
    assert_eq!((t.requests("app"), t.requests("mailer")), (1, 1));

    // The provider drops every token it issued (the grants themselves
    // still work): the daemon's cached ones, fresh by its own clock, are
    // refused by both servers. Both connections drop.
    for client in ["app", "mailer"] {
        t.revoke(client);
        t.restore(client);
    }
    d.restart();
    s.restart();
    d.deliver("ops", "INBOX", &escalation(2, "ops@example.com"));
    s.wait_for(2, WAIT);
    assert_eq!(
        (t.requests("app"), t.requests("mailer")),
        (2, 2),
        "one new token each, after each server refused the old one"
    );
    assert_eq!(
        s.log().matches("AUTH XOAUTH2 for 'ops': failed").count(),
        1,
        "the SMTP server refused the stale token once: {}",
        s.log_tail()
    );
    assert_eq!(
        d.log()
            .matches("oauth2 failed: Introspection failed")
            .count(),
        1,
        "Dovecot's oauth2 passdb refused the stale token once: {}",
        d.log_tail()
    );
    assert!(
        to(&s, ADMIN).is_empty(),
        "a refused token is not a refused grant: no alert"
    );
    daemon.shutdown();
}

#[test]
fn twenty_connections_within_a_tokens_lifetime_fetch_one_token() {
    let t = TokenServer::start(
        &[TokenClient::with_secret("app", "app-s3cret-value", "ops")],
        &[],
        3600,
    );
    let d = Dovecot::start_oauth(&[("ops", "secret")], &t.introspection_url());
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "app-s3cret-value").unwrap();
    let section: mailtriage::config::OAuth2Section = toml::from_str(&format!(
        "token_url = \"{}\"\nscope = \"mail\"\nclient_id = \"app\"\nclient_secret = {{ file = \"{}\" }}",
        t.token_url(),
        secret.path().display()
    ))
    .unwrap();
    let source = Arc::new(mailtriage::oauth::TokenSource::new(
        section.grant("ops").unwrap(),
        vec!["mailbox ops".into()],
        None,
        None,
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = d.port();
    // Twenty at once (they wait for the one request), then twenty more,
    // one after the other: each logs in with XOAUTH2.
    let logged_in = rt.block_on(async {
        let connect = |source: Arc<mailtriage::oauth::TokenSource>| async move {
            let token = source.token(jiff::Timestamp::now()).await.expect("a token");
            let settings = mailtriage::imap::ImapSettings {
                host: "127.0.0.1".into(),
                port,
                tls: mailtriage::tls::Tls::Plain,
                user: "ops".into(),
                auth: mailtriage::imap::Auth::XOAuth2(token.secret().to_string()),
                timeout: Duration::from_secs(10),
                ca_file: None,
            };
            let mut c = mailtriage::imap::Connection::connect(&settings)
                .await
                .expect("XOAUTH2 login");
            c.select("INBOX").await.expect("select");
            c.logout().await;
        };
        let mut all = Vec::new();
        for _ in 0..20 {
            all.push(tokio::spawn(connect(source.clone())));
        }
        let mut n = 0;
        for h in all {
            h.await.unwrap();
            n += 1;
        }
        for _ in 0..20 {
            connect(source.clone()).await;
            n += 1;
        }
        n
    });
    assert_eq!(logged_in, 40);
    assert_eq!(t.requests("app"), 1, "forty logins, one token request");
    assert!(
        d.log().matches("Login: user=<ops>").count() >= 40,
        "{}",
        d.log_tail()
    );
}

#[test]
fn a_token_that_expires_during_a_long_idle_is_replaced_when_the_mailbox_reconnects() {
    let t = TokenServer::start(
        &[TokenClient::with_secret("app", "app-s3cret-value", "ops")],
        &[],
        3,
    );
    let mut d = Dovecot::start_oauth(&[("ops", "secret")], &t.introspection_url());
    let s = SmtpCapture::start();
    let dir = write_config(
        &d,
        &s,
        &Setup {
            ops_oauth: Some(client_credentials(&t, "@DIR@", "app")),
            // IDLE re-issued every second on the same connection: the
            // session outlives its token.
            mailbox_extra: "idle_timeout = \"1s\"",
            ..Default::default()
        },
    );
    fix_paths(dir.path());
    d.deliver("ops", "INBOX", &escalation(1, "ops@example.com"));
    let daemon = InProcess::start(dir.path());
    s.wait_for(1, WAIT);
    let (first, _) = t.issued();
    assert_eq!(first.len(), 1);
    wait_until(
        WAIT,
        || !t.active(&first[0]),
        || "the first token never expired".into(),
    );
    // Still the first session, idling past its token's expiry.
    d.deliver("ops", "INBOX", &escalation(2, "ops@example.com"));
    s.wait_for(2, WAIT);
    assert_eq!(t.requests("app"), 1, "an idling session needs no new token");
    // The connection drops; the reconnect must not present the expired
    // token (Dovecot would refuse it) but a fresh one.
    d.restart();
    d.deliver("ops", "INBOX", &escalation(3, "ops@example.com"));
    s.wait_for(3, WAIT);
    assert_eq!(t.requests("app"), 2, "one new token for the reconnect");
    assert!(
        !d.log().contains("Introspection failed") && !d.log().contains("auth failed"),
        "the expired token was not presented: {}",
        d.log_tail()
    );
    daemon.shutdown();
}

/// The saved refresh token of the config dir (the only grant there).
fn saved_token_file(dir: &Path) -> PathBuf {
    let saved: Vec<PathBuf> = std::fs::read_dir(dir.join("oauth2"))
        .expect("oauth2/ in the state directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    saved[0].clone()
}

#[test]
fn a_rotated_refresh_token_is_kept_across_a_restart_and_no_secret_is_logged_at_trace() {
    let t = TokenServer::start(
        &[TokenClient::with_secret("gapp", "app-s3cret-value", "ops")],
        &[("rt-initial-token", "gapp")],
        3600,
    );
    t.set_rotate(true);
    let mut d = Dovecot::start_oauth(&[("ops", "secret")], &t.introspection_url());
    let s = SmtpCapture::start_with_oauth(&t.introspection_url());
    let line = format!(
        "oauth2 = {{ token_url = \"{}\", authorize_url = \"{}\", scope = \"mail\", client_id = \"gapp\", client_secret = {{ file = \"@DIR@/client-secret\" }}, refresh_token = {{ file = \"@DIR@/refresh-token\" }} }}",
        t.token_url(),
        t.authorize_url()
    );
    let dir = write_config(
        &d,
        &s,
        &Setup {
            ops_oauth: Some(line.clone()),
            smtp_oauth: Some(format!("user = \"ops\"\n{line}")),
            ..Default::default()
        },
    );
    fix_paths(dir.path());
    let command =
        mailtriage_testkit::DaemonCommand::new(env!("CARGO_BIN_EXE_mailtriage")).filter("trace");

    d.deliver("ops", "INBOX", &escalation(1, "ops@example.com"));
    let mut daemon = command.spawn(dir.path());
    s.wait_for(1, WAIT);
    daemon.terminate(WAIT);
    let (_, refresh) = t.issued();
    assert_eq!(
        refresh.len(),
        2,
        "the initial refresh token and its rotation"
    );
    let saved = saved_token_file(dir.path());
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        text.contains(&refresh[1]),
        "the rotated token is kept: {text}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("refresh-token")).unwrap(),
        "rt-initial-token\n",
        "the config's token is left as it was"
    );

    // The initial token no longer works at the provider; the restarted
    // daemon uses the kept one, and keeps the next rotation.
    d.restart();
    d.deliver("ops", "INBOX", &escalation(2, "ops@example.com"));
    let mut daemon = command.spawn(dir.path());
    s.wait_for(2, WAIT);
    daemon.terminate(WAIT);
    let (access, refresh) = t.issued();
    assert_eq!(refresh.len(), 3);
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.contains(&refresh[2]), "{text}");
    assert_eq!(
        t.requests("gapp"),
        2,
        "one token per run, shared by IMAP and SMTP"
    );

    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log is at trace level"
    );
    assert!(log.contains("access token issued"), "{log}");
    let mut secrets = vec!["app-s3cret-value".to_string()];
    secrets.extend(access);
    secrets.extend(refresh);
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret ({}...) is in the log",
            &secret[..6]
        );
    }
}

#[test]
fn a_revoked_grant_raises_one_alert_and_one_recovery_notice_and_the_rest_goes_on() {
    let t = TokenServer::start(
        &[TokenClient::with_secret("app", "app-s3cret-value", "ops")],
        &[],
        3600,
    );
    let mut d = Dovecot::start_oauth(
        &[("ops", "secret"), ("support", "secret")],
        &t.introspection_url(),
    );
    let s = SmtpCapture::start();
    let dir = write_config(
        &d,
        &s,
        &Setup {
            ops_oauth: Some(client_credentials(&t, "@DIR@", "app")),
            support: true,
            ..Default::default()
        },
    );
    fix_paths(dir.path());
    d.deliver("ops", "INBOX", &escalation(1, "ops@example.com"));
    let daemon = InProcess::start(dir.path());
    s.wait_for(1, WAIT);

    // Revoked: every token stops working. The connection drops; the
    // reconnect's token is refused by Dovecot, the new one by the provider.
    t.revoke("app");
    d.restart();
    wait_until(
        WAIT,
        || !to(&s, ADMIN).is_empty(),
        || format!("no alert; token requests: {}", t.requests("app")),
    );
    let alert = &to(&s, ADMIN)[0];
    let body = String::from_utf8_lossy(&alert.raw).into_owned();
    assert!(
        body.contains("AADSTS50173") && body.contains("invalid_grant"),
        "the provider's words: {body}"
    );
    assert!(body.contains("mailbox ops"), "{body}");
    // The mailbox keeps trying (and failing) without another alert; the
    // other mailbox and the outbox go on.
    let before = t.requests("app");
    d.deliver("support", "INBOX", &escalation(2, "support@example.com"));
    s.wait_for(3, WAIT);
    wait_until(
        WAIT,
        || t.requests("app") >= before + 2,
        || "the mailbox stopped retrying".into(),
    );
    assert_eq!(
        to(&s, ADMIN).len(),
        1,
        "one alert: {:?}",
        subjects(&s, ADMIN)
    );

    t.restore("app");
    d.deliver("ops", "INBOX", &escalation(3, "ops@example.com"));
    wait_until(
        RECOVERY,
        || to(&s, ADMIN).len() >= 2 && s.messages().len() >= 5,
        || format!("no recovery: {:?}", subjects(&s, ADMIN)),
    );
    let admin = subjects(&s, ADMIN);
    assert_eq!(admin.len(), 2, "{admin:?}");
    assert!(
        admin[0].contains("no OAuth 2.0 token for mailbox ops"),
        "{admin:?}"
    );
    assert!(admin[1].contains("works again"), "{admin:?}");
    assert!(
        admin.iter().all(|s| !s.contains("unreachable")),
        "the mailbox's own alert leaves a refused grant to the grant's: {admin:?}"
    );
    daemon.shutdown();
}

#[test]
fn smtp_whose_grant_is_refused_keeps_the_mail_and_says_so_in_status() {
    let t = TokenServer::start(
        &[TokenClient::with_secret(
            "mailer",
            "app-s3cret-value",
            "mailtriage",
        )],
        &[],
        3600,
    );
    let d = Dovecot::start(&[("ops", "secret")]);
    let s = SmtpCapture::start_with_oauth(&t.introspection_url());
    let dir = write_config(
        &d,
        &s,
        &Setup {
            smtp_oauth: Some(format!(
                "user = \"mailtriage\"\n{}",
                client_credentials(&t, "@DIR@", "mailer")
            )),
            ..Default::default()
        },
    );
    fix_paths(dir.path());
    t.revoke("mailer");
    d.deliver("ops", "INBOX", &escalation(1, "ops@example.com"));
    let mut daemon =
        mailtriage_testkit::Daemon::spawn(env!("CARGO_BIN_EXE_mailtriage"), dir.path());
    let status = || String::from_utf8_lossy(&run(dir.path(), &["status"]).stdout).into_owned();
    wait_until(
        WAIT,
        || {
            let text = status();
            text.lines().any(|l| {
                l.starts_with("outbox")
                    && l.contains("retrying (the oldest")
                    && l.contains("invalid_grant")
            })
        },
        || {
            format!(
                "status does not say why: {}\n{}",
                status(),
                daemon.log_tail()
            )
        },
    );
    let text = status();
    assert!(
        text.starts_with("degraded: OAuth 2.0 grant of [smtp] refused"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("oauth2    [smtp] (client_credentials")
                && l.contains("refused since")
                && l.contains("AADSTS50173")),
        "{text}"
    );
    assert!(s.messages().is_empty());
    assert!(
        daemon.run_log().contains("invalid_grant"),
        "{}",
        daemon.log_tail()
    );

    // Restored: the mail waiting in the outbox goes (the acknowledgement,
    // the forward, and the alert about the grant, which waited too).
    t.restore("mailer");
    let got = s.wait_for(3, RECOVERY);
    assert!(
        got.iter()
            .all(|c| c.auth_user.as_deref() == Some("mailtriage"))
    );
    assert_eq!(by_rcpt(&got, "priya.s@example.com").len(), 1);
    let admin = subjects(&s, ADMIN);
    assert_eq!(admin.len(), 2, "the alert and the recovery: {admin:?}");
    assert!(
        admin[0].contains("no OAuth 2.0 token for [smtp]"),
        "{admin:?}"
    );
    daemon.terminate(WAIT);
}

/// A config whose `ops` mailbox has a refresh-token grant at `t` and no
/// refresh token yet.
/// The servers of a refresh-token grant that waits for a user's consent
/// (client `gapp` for `ops`), and its config directory.
fn consent_setup() -> (TokenServer, Dovecot, SmtpCapture, tempfile::TempDir) {
    let t = TokenServer::start(
        &[TokenClient::with_secret("gapp", "app-s3cret-value", "ops")],
        &[],
        3600,
    );
    let d = Dovecot::start_oauth(&[("ops", "secret")], &t.introspection_url());
    let s = SmtpCapture::start();
    let dir = consent_config(&t, &d, &s);
    (t, d, s, dir)
}

fn consent_config(t: &TokenServer, d: &Dovecot, s: &SmtpCapture) -> tempfile::TempDir {
    let dir = write_config(
        d,
        s,
        &Setup {
            ops_oauth: Some(format!(
                "oauth2 = {{ flow = \"refresh_token\", token_url = \"{}\", authorize_url = \"{}\", scope = \"mail offline_access\", client_id = \"gapp\", client_secret = {{ file = \"@DIR@/client-secret\" }} }}",
                t.token_url(),
                t.authorize_url()
            )),
            ..Default::default()
        },
    );
    fix_paths(dir.path());
    dir
}

/// Starts `oauth2 authorize` and reads the consent URL it prints.
fn start_authorize(dir: &Path, extra: &[&str]) -> (std::process::Child, String, impl BufRead) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(["oauth2", "authorize", "--config"])
        .arg(dir)
        .arg("ops")
        .args(extra)
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mailtriage oauth2 authorize");
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        if lines.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(u) = line.trim().strip_prefix("http://") {
            url = format!("http://{u}");
            break;
        }
    }
    assert!(!url.is_empty(), "no consent URL printed");
    (child, url, lines)
}

/// The browser at the consent page: the token server consents at once
/// and redirects; returns where to.
fn consent(t: &TokenServer, url: &str) -> String {
    let path = url
        .strip_prefix(&format!("http://127.0.0.1:{}", t.port()))
        .unwrap_or_else(|| panic!("{url}"));
    assert!(
        path.contains("code_challenge_method=S256") && path.contains("state="),
        "{url}"
    );
    let a = mailtriage_testkit::http(t.port(), "GET", path, None).unwrap();
    assert_eq!(a.status, 302, "{}", a.body);
    a.location.expect("a redirect")
}

#[test]
fn oauth2_authorize_takes_the_redirect_and_the_daemon_uses_the_refresh_token() {
    let (t, d, s, dir) = consent_setup();
    mailtriage_testkit::cli_ok(
        env!("CARGO_BIN_EXE_mailtriage"),
        dir.path(),
        &["check-config"],
    );

    let (mut child, url, mut rest) = start_authorize(dir.path(), &["--listen"]);
    let location = consent(&t, &url);
    // The browser follows the redirect to the command's loopback port.
    let target = location
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{location}"));
    let (port, path) = target.split_once('/').unwrap();
    let favicon =
        mailtriage_testkit::http(port.parse().unwrap(), "GET", "/favicon.ico", None).unwrap();
    assert_eq!(favicon.status, 404);
    let page =
        mailtriage_testkit::http(port.parse().unwrap(), "GET", &format!("/{path}"), None).unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    let status = child.wait().unwrap();
    let mut printed = String::new();
    rest.read_to_string(&mut printed).unwrap();
    assert!(status.success(), "{printed}");
    assert!(
        printed.contains("Stored the refresh token for ops"),
        "{printed}"
    );
    let saved = saved_token_file(dir.path());
    let (_, refresh) = t.issued();
    assert!(
        std::fs::read_to_string(&saved)
            .unwrap()
            .contains(&refresh[0])
    );

    d.deliver("ops", "INBOX", &escalation(1, "ops@example.com"));
    let daemon = InProcess::start(dir.path());
    s.wait_for(1, WAIT);
    assert_eq!(
        t.requests("gapp"),
        2,
        "the code's exchange, then one refresh"
    );
    daemon.shutdown();
}

#[test]
fn oauth2_authorize_reads_the_pasted_address_and_refuses_another_consents() {
    let (t, _d, _s, dir) = consent_setup();

    // Another consent's redirect (its state is not this one's).
    let (mut other, other_url, _) = start_authorize(dir.path(), &[]);
    other.kill().unwrap();
    other.wait().unwrap();
    let stale = consent(&t, &other_url);
    let (mut child, _, mut rest) = start_authorize(dir.path(), &[]);
    writeln!(child.stdin.as_mut().unwrap(), "{stale}").unwrap();
    let mut printed = String::new();
    rest.read_to_string(&mut printed).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("state does not match"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (mut child, url, mut rest) = start_authorize(dir.path(), &[]);
    let location = consent(&t, &url);
    assert!(
        location.starts_with("http://127.0.0.1/?code="),
        "{location}"
    );
    writeln!(child.stdin.as_mut().unwrap(), "{location}").unwrap();
    let mut printed = String::new();
    rest.read_to_string(&mut printed).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("Stored the refresh token for ops"),
        "{printed}"
    );
    saved_token_file(dir.path());

    // A mailbox with client credentials has nothing to authorize.
    let out = run(dir.path(), &["oauth2", "authorize", "support"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown mailbox is a usage error"
    );
}

/// A token source for `client` at `t` (client credentials with `secret`),
/// its events collected.
fn source_for(
    t: &TokenServer,
    client: &str,
    secret_file: &Path,
) -> (
    mailtriage::oauth::TokenSource,
    Arc<std::sync::Mutex<Vec<mailtriage::oauth::GrantEvent>>>,
) {
    let section: mailtriage::config::OAuth2Section = toml::from_str(&format!(
        "token_url = \"{}\"\nscope = \"mail\"\nclient_id = \"{client}\"\nclient_secret = {{ file = \"{}\" }}",
        t.token_url(),
        secret_file.display()
    ))
    .unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let source = mailtriage::oauth::TokenSource::new(
        section.grant("ops").unwrap(),
        vec!["mailbox ops".into()],
        None,
        Some(Arc::new(move |e| sink.lock().unwrap().push(e))),
    );
    (source, events)
}

#[test]
fn an_unavailable_endpoint_is_retried_with_backoff_and_a_refusal_told_once() {
    use mailtriage::oauth::{GrantError, GrantEvent};
    let t = TokenServer::start(
        &[TokenClient::with_secret("app", "app-s3cret-value", "ops")],
        &[],
        3600,
    );
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "app-s3cret-value").unwrap();
    let (source, events) = source_for(&t, "app", secret.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t0 = jiff::Timestamp::now();
    let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
    rt.block_on(async {
        // 503: not fatal, not told; asked again only after the backoff
        // (the time is given, so nothing waits).
        t.fail_next(503, 1);
        let e = source.token(at(0)).await.unwrap_err();
        assert!(matches!(e, GrantError::Unavailable(_)), "{e}");
        assert!(!e.is_fatal());
        assert!(
            source.token(at(0)).await.is_err(),
            "held during the backoff"
        );
        assert_eq!(t.requests("app"), 1);
        let token = source.token(at(2)).await.expect("after the backoff");
        assert_eq!(t.requests("app"), 2);
        assert!(
            events.lock().unwrap().is_empty(),
            "a transient failure is not alerted"
        );

        // Past the margin before expiry the token is renewed; a renewal
        // that fails goes on with the present token while it is valid,
        // and asks again only after the backoff.
        t.fail_next(503, 1);
        let kept = source.token(at(3400)).await.expect("the present token");
        assert!(kept == token, "the present token is used meanwhile");
        assert!(source.token(at(3400)).await.unwrap() == token);
        assert_eq!(t.requests("app"), 3);
        let token = source.token(at(3402)).await.expect("renewed");
        assert!(token != kept);
        assert_eq!(t.requests("app"), 4);
        assert!(events.lock().unwrap().is_empty());

        // Revoked: the server refuses the token, it is dropped, the
        // provider refuses the grant: told once however often it is asked.
        t.revoke("app");
        source.invalidate(&token).await;
        for s in [10, 10, 10, 11, 11] {
            let e = source.token(at(s)).await.unwrap_err();
            assert!(e.is_fatal(), "{e}");
        }
        assert_eq!(
            t.requests("app"),
            4 + 2,
            "asked at 10 s, and after the first backoff (1 s), not in between"
        );
        t.restore("app");
        source.token(at(1000)).await.expect("restored");
        source.token(at(1001)).await.expect("cached");
    });
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    match &events[0] {
        GrantEvent::Broken { error, used_by, .. } => {
            assert!(error.contains("invalid_grant: AADSTS50173"), "{error}");
            assert_eq!(used_by, &["mailbox ops"]);
        }
        e => panic!("{e:?}"),
    }
    assert!(
        matches!(events[1], GrantEvent::Recovered { .. }),
        "{events:?}"
    );
    let health = source.health();
    assert!(health.error.is_none() && !health.refused && health.token_expires.is_some());
}

#[test]
fn a_certificate_credential_signs_a_client_assertion_the_provider_accepts() {
    let t = TokenServer::start(
        &[TokenClient {
            id: "certapp".into(),
            secret: None,
            assertion: true,
            username: "ops".into(),
        }],
        &[],
        3600,
    );
    let d = Dovecot::start_oauth(&[("ops", "secret")], &t.introspection_url());
    let s = SmtpCapture::start();
    let dir = write_config(
        &d,
        &s,
        &Setup {
            ops_oauth: Some(format!(
                "oauth2 = {{ token_url = \"{}\", scope = \"mail\", client_id = \"certapp\", certificate = \"@DIR@/app.pem\", private_key = {{ file = \"@DIR@/app.key\" }} }}",
                t.token_url()
            )),
            ..Default::default()
        },
    );
    fix_paths(dir.path());
    for args in [
        &["genrsa", "-out", "app.key", "2048"][..],
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "app.key",
            "-subj",
            "/CN=mailtriage",
            "-days",
            "2",
            "-out",
            "app.pem",
        ],
    ] {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args:?}");
    }
    d.deliver("ops", "INBOX", &escalation(1, "ops@example.com"));
    let daemon = InProcess::start(dir.path());
    s.wait_for(1, WAIT);
    assert_eq!(t.requests("certapp"), 1);
    daemon.shutdown();
}
