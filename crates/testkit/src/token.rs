//! A loopback OAuth 2.0 token server per test: `token_server.py` (beside
//! this file, Python's standard library only) as a child process. It
//! issues access tokens with a lifetime the test sets, for client
//! credentials, refresh tokens (rotated when asked) and authorization codes
//! (PKCE), revokes a client's grant on command, counts token requests per
//! client, and answers RFC 7662 introspection for Dovecot's `oauth2`
//! passdb and the SMTP capture. [`http`] is the little HTTP client the kit
//! reaches it with (and a test plays the browser with).

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::server::{
    LOG_TAIL_LINES, Launch, ServerProcess, free_port, launch_on_free_ports, read_lossy, server_dir,
    tail, wait_ready_with, write_file,
};

const SCRIPT: &str = include_str!("token_server.py");

/// A client registered at the [`TokenServer`].
#[derive(Clone, Debug)]
pub struct TokenClient {
    pub id: String,
    /// None: a public client (or one that uses an assertion).
    pub secret: Option<String>,
    /// Authenticates with a client assertion (a JWT) instead of a secret.
    pub assertion: bool,
    /// Whom its tokens are for (the IMAP or SMTP user).
    pub username: String,
}

impl TokenClient {
    pub fn with_secret(id: &str, secret: &str, username: &str) -> TokenClient {
        TokenClient {
            id: id.into(),
            secret: Some(secret.into()),
            assertion: false,
            username: username.into(),
        }
    }
}

/// An answer of [`http`].
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// The `Location` header, if any.
    pub location: Option<String>,
    pub body: String,
}

/// One HTTP/1.0 request to 127.0.0.1:`port` (`body`: a form).
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Result<HttpAnswer, String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))?;
    let location = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    Ok(HttpAnswer {
        status,
        location,
        body: body.to_string(),
    })
}

/// The token server. See the module docs.
pub struct TokenServer {
    /// Declared first, so dropped first: the server goes before its dir.
    process: ServerProcess,
    dir: TempDir,
    port: u16,
}

impl TokenServer {
    /// A server with these clients, refresh tokens (token, client id)
    /// already issued, and tokens living `lifetime_s` seconds.
    pub fn start(
        clients: &[TokenClient],
        refresh_tokens: &[(&str, &str)],
        lifetime_s: u64,
    ) -> TokenServer {
        let dir = server_dir("mailtriage-token-");
        write_file(&dir.path().join("token_server.py"), SCRIPT.as_bytes());
        let clients: serde_json::Map<String, serde_json::Value> = clients
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    serde_json::json!({"secret": c.secret, "assertion": c.assertion, "username": c.username}),
                )
            })
            .collect();
        let refresh: serde_json::Map<String, serde_json::Value> = refresh_tokens
            .iter()
            .map(|(t, c)| (t.to_string(), serde_json::Value::from(*c)))
            .collect();
        let config = serde_json::json!({
            "clients": clients,
            "refresh_tokens": refresh,
            "lifetime": lifetime_s,
            "rotate": false,
        });
        write_file(
            &dir.path().join("config.json"),
            config.to_string().as_bytes(),
        );
        let mut server = TokenServer {
            process: ServerProcess::default(),
            dir,
            port: 0,
        };
        let started = launch_on_free_ports(&mut server, |server| {
            server.port = free_port();
            format!("port {}", server.port)
        });
        if let Err(why) = started {
            panic!("token server did not start:\n{why}\n{}", server.log_tail());
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn authorize_url(&self) -> String {
        format!("http://127.0.0.1:{}/authorize", self.port)
    }

    pub fn introspection_url(&self) -> String {
        format!("http://127.0.0.1:{}/introspect", self.port)
    }

    fn control(&self, path: &str, form: &str) {
        let a = http(self.port, "POST", path, Some(form))
            .unwrap_or_else(|e| panic!("token server {path}: {e}\n{}", self.log_tail()));
        assert_eq!(a.status, 200, "token server {path}: {}", a.body);
    }

    fn get_json(&self, path: &str) -> serde_json::Value {
        let a = http(self.port, "GET", path, None)
            .unwrap_or_else(|e| panic!("token server {path}: {e}\n{}", self.log_tail()));
        serde_json::from_str(&a.body)
            .unwrap_or_else(|e| panic!("token server {path}: {e}: {}", a.body))
    }

    /// Token requests made for `client_id` so far (failed ones too).
    pub fn requests(&self, client_id: &str) -> u64 {
        self.get_json("/control/counts")[client_id]
            .as_u64()
            .unwrap_or(0)
    }

    /// Every token of `client_id` stops working, and its token requests
    /// get `invalid_grant`, until [`TokenServer::restore`].
    pub fn revoke(&self, client_id: &str) {
        self.control("/control/revoke", &format!("client_id={client_id}"));
    }

    pub fn restore(&self, client_id: &str) {
        self.control("/control/restore", &format!("client_id={client_id}"));
    }

    /// The lifetime of tokens issued from now on.
    pub fn set_lifetime(&self, seconds: u64) {
        self.control("/control/lifetime", &format!("seconds={seconds}"));
    }

    /// Rotate refresh tokens: each refresh returns a new one and the old
    /// one stops working.
    pub fn set_rotate(&self, on: bool) {
        self.control("/control/rotate", if on { "on=1" } else { "on=0" });
    }

    /// The next `count` token requests are answered `status`.
    pub fn fail_next(&self, status: u16, count: u32) {
        self.control("/control/fail", &format!("status={status}&count={count}"));
    }

    /// Every access token and refresh token issued so far.
    pub fn issued(&self) -> (Vec<String>, Vec<String>) {
        let v = self.get_json("/control/tokens");
        let list = |k: &str| {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        (list("access"), list("refresh"))
    }

    /// Whether `token` is active now (its introspection).
    pub fn active(&self, token: &str) -> bool {
        let a = http(
            self.port,
            "POST",
            "/introspect",
            Some(&format!("token={token}")),
        )
        .unwrap_or_else(|e| panic!("introspect: {e}"));
        a.body.contains("\"active\": true")
    }

    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("token.log"))
    }

    pub fn log_tail(&self) -> String {
        format!(
            "--- token server log tail ---\n{}",
            tail(&self.log(), LOG_TAIL_LINES)
        )
    }
}

fn probe(port: u16) -> Result<String, String> {
    let a = http(port, "GET", "/health", None)?;
    Ok(format!("{}", a.status))
}

impl Launch for TokenServer {
    fn launch(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("token.log"))
            .map_err(|e| format!("open token.log: {e}"))?;
        let child = Command::new(crate::smtp::python_with_aiosmtpd())
            .arg(self.dir.path().join("token_server.py"))
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--config")
            .arg(self.dir.path().join("config.json"))
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("dup log file: {e}"))?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn the token server: {e}"))?;
        let port = self.port;
        self.process
            .start(child, |child| wait_ready_with(child, port, "200", probe))
    }

    fn log(&self) -> String {
        TokenServer::log(self)
    }
}
