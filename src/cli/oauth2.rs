//! `mailtriage oauth2 authorize --config DIR NAME`: a user's consent for a
//! refresh-token grant, once, so that the daemon can get tokens from then
//! on. It prints the provider's consent page (PKCE S256 and a random
//! state), takes the code back (pasted, or from a redirect to a loopback
//! port it listens on with `--listen`), exchanges it at the token
//! endpoint, and stores the refresh token in the state directory, where
//! the daemon reads it.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::CliError;
use crate::config::{Flow, Grant, Settings};
use crate::oauth::TokenSource;
use crate::oauth::protocol::{self, Pkce, ReplyError};

/// How long `--listen` waits for the browser.
const LISTEN_FOR: Duration = Duration::from_secs(600);

/// What `authorize` was asked.
pub struct Authorize<'a> {
    pub config: &'a Path,
    /// A mailbox's name, or `smtp`.
    pub name: &'a str,
    /// Listen on 127.0.0.1 for the redirect: Some(port), 0 for any.
    pub listen: Option<u16>,
    /// The redirect URI registered with the provider (paste mode).
    pub redirect_uri: Option<&'a str>,
}

/// The grant `name` uses.
fn grant_of(settings: &Settings, name: &str) -> Result<Grant, CliError> {
    let (grant, what) = if name == "smtp" {
        (settings.smtp.grant.clone(), "[smtp]".to_string())
    } else {
        let m = settings
            .mailboxes
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = settings.mailboxes.iter().map(|m| m.name.as_str()).collect();
                CliError::Usage(format!(
                    "no mailbox {name:?} in the config (mailboxes: {}; or smtp)",
                    names.join(", ")
                ))
            })?;
        (m.grant.clone(), format!("mailbox {name}"))
    };
    let grant = grant.ok_or_else(|| {
        CliError::Usage(format!(
            "{what} has no `oauth2` table: nothing to authorize"
        ))
    })?;
    if grant.flow != Flow::RefreshToken {
        return Err(CliError::Usage(format!(
            "{what} uses client credentials (the application's own token): there is no user consent to give; flow = \"refresh_token\" is the one authorize is for"
        )));
    }
    Ok(grant)
}

fn random<const N: usize>() -> Result<[u8; N], CliError> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| CliError::Refused("no randomness for PKCE".into()))?;
    Ok(b)
}

pub(super) fn authorize(
    a: &Authorize,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<super::Outcome, CliError> {
    let settings = Settings::load(a.config)?;
    let grant = grant_of(&settings, a.name)?;
    let database = crate::control::database_path(&settings).ok_or_else(|| {
        CliError::Usage(
            "no state directory: set [daemon] database (the refresh token is kept beside it), or run with STATE_DIRECTORY set as the service has it".into(),
        )
    })?;
    let state_dir = crate::control::state_directory(&database);
    let pkce = Pkce::from_random(&random::<32>()?);
    let state: String = random::<16>()?.iter().map(|b| format!("{b:02x}")).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async {
        let listener = match a.listen {
            Some(port) => Some(
                tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .map_err(|e| CliError::Refused(format!("listening on 127.0.0.1:{port}: {e}")))?,
            ),
            None => None,
        };
        let redirect_uri = match &listener {
            Some(l) => format!(
                "http://127.0.0.1:{}/",
                l.local_addr().map_err(CliError::Output)?.port()
            ),
            None => a.redirect_uri.unwrap_or("http://127.0.0.1/").to_string(),
        };
        let url = protocol::consent_url(&grant, &redirect_uri, &state, &pkce)
            .map_err(CliError::Usage)?;
        let who = grant.user.as_deref().unwrap_or("the mailbox's user");
        writeln!(
            out,
            "Open this page in a browser, sign in as {who} and consent:\n\n  {url}\n"
        )?;
        let code = match listener {
            Some(l) => {
                writeln!(out, "Waiting for the browser to come back to {redirect_uri} ...")?;
                out.flush()?;
                match tokio::time::timeout(LISTEN_FOR, redirect(&l, &state)).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(CliError::Refused(format!(
                            "no redirect came to {redirect_uri} within {} minutes",
                            LISTEN_FOR.as_secs() / 60
                        )));
                    }
                }
            }
            None => {
                writeln!(
                    out,
                    "The browser is then sent to {redirect_uri}?code=... (the page may not load):\npaste that whole address here, or the code alone, and press Enter:"
                )?;
                out.flush()?;
                let mut line = String::new();
                input.read_line(&mut line)?;
                protocol::code_from_reply(&line, &state)
                    .map_err(|e| CliError::Refused(format!("consent: {e}")))?
            }
        };
        let source = TokenSource::new(grant.clone(), vec![a.name.to_string()], Some(state_dir), None);
        let now = jiff::Timestamp::now();
        let issued = source
            .exchange_code(&code, &pkce.verifier, &redirect_uri, now)
            .await
            .map_err(|e| CliError::Refused(format!("exchanging the code at {}: {e}", grant.token_url)))?;
        let refresh = issued.refresh_token.ok_or_else(|| {
            CliError::Refused(format!(
                "{} issued an access token but no refresh token: the scope must allow offline access (Microsoft: offline_access; Google: the built-in access_type=offline and prompt=consent)",
                grant.token_url
            ))
        })?;
        let path = source
            .save_refresh_token(&refresh, now)
            .map_err(|e| CliError::Refused(format!("storing the refresh token: {e}")))?;
        if let Some(path) = path {
            give_to_state_owner(&path)?;
            writeln!(
                out,
                "Stored the refresh token for {} in {}.\nThe daemon uses it from its next token request (a running daemon whose grant was refused reads it when it next retries).",
                a.name,
                path.display()
            )?;
        }
        Ok(super::Outcome::Ok)
    })
}

/// Run as root for a service whose state directory belongs to its own
/// (dynamic) user: the stored token and its directory are given to that
/// user, or the daemon could not read them.
fn give_to_state_owner(path: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::MetadataExt as _;
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let Some(state) = dir.parent() else {
        return Ok(());
    };
    // /proc/self belongs to the effective user: no libc call needed.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid());
    let owner = std::fs::metadata(state).map(|m| (m.uid(), m.gid()));
    if let (Ok(0), Ok((uid, gid))) = (me, owner)
        && uid != 0
    {
        for p in [dir, path] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|source| {
                CliError::Write {
                    path: p.to_path_buf(),
                    source,
                }
            })?;
        }
    }
    Ok(())
}

/// Serves the loopback redirect until one carries a code (or an error)
/// for this `state`; anything else (a favicon) gets 404.
async fn redirect(listener: &tokio::net::TcpListener, state: &str) -> Result<String, CliError> {
    loop {
        let (mut stream, _) = listener.accept().await.map_err(CliError::Output)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        // The request line and headers; a browser's are a few KB.
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/");
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let answer = if query.contains("code=") || query.contains("error=") {
            Some(protocol::code_from_query(query, state))
        } else {
            None
        };
        let (status, text) = match &answer {
            Some(Ok(_)) => (
                "200 OK",
                "mailtriage: authorized. You can close this window.".to_string(),
            ),
            Some(Err(e)) => (
                "400 Bad Request",
                format!("mailtriage: not authorized: {e}"),
            ),
            None => ("404 Not Found", "not here".to_string()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        match answer {
            Some(Ok(code)) => return Ok(code),
            // Another consent's redirect, or a forged one: keep waiting
            // for ours.
            Some(Err(ReplyError::State)) => {}
            Some(Err(e)) => return Err(CliError::Refused(format!("consent: {e}"))),
            None => {}
        }
    }
}
