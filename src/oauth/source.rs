//! One grant's tokens, for every connection that uses it: a cached access
//! token handed out until a margin before it expires, one token request
//! at a time (twenty connections that want a token at once wait for one
//! request, not twenty), a token the server refused dropped so that the
//! next asks anew, a rotated refresh token kept, and the grant's health:
//! a refusal is told once (the daemon alerts the admins) and so is the
//! recovery.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;

use super::protocol::{self, AccessToken, GrantError, Issued, RefreshToken};
use super::saved;
use crate::config::{ClientAuth, Flow, Grant, Settings};
use crate::health::GrantHealth;

/// A token request that takes longer than this has failed (transiently).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the daemon is told about a grant's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantEvent {
    /// The grant cannot be used: the provider refused it, or it cannot be
    /// asked for. Told once per outage.
    Broken {
        /// The grant's key ([`Grant::key`]).
        grant: String,
        /// What uses it: `mailbox ops`, `[smtp]`.
        used_by: Vec<String>,
        token_url: String,
        since: Timestamp,
        /// The provider's own words (error and error_description).
        error: String,
    },
    /// The grant works again after [`GrantEvent::Broken`].
    Recovered {
        grant: String,
        used_by: Vec<String>,
        token_url: String,
        since: Timestamp,
    },
}

/// Called with each [`GrantEvent`].
pub type Notify = Arc<dyn Fn(GrantEvent) + Send + Sync>;

struct Held {
    token: AccessToken,
    fresh_until: Timestamp,
    expires_at: Timestamp,
}

#[derive(Default)]
struct Cache {
    token: Option<Held>,
    /// The refresh token in use: the saved one, a rotated one, or None
    /// (then the config's is read).
    refresh: Option<RefreshToken>,
    saved_loaded: bool,
}

#[derive(Default)]
struct Outage {
    since: Option<Timestamp>,
    error: Option<crate::health::Noted>,
    refused: bool,
    told: bool,
    /// Failed requests in a row, and the last one's error: until
    /// `next_try` that error is the answer, without asking again (a
    /// provider throttles a client that insists).
    failures: u32,
    last: Option<GrantError>,
    next_try: Option<Timestamp>,
}

/// Waits between failed token requests: 1 s doubling to a minute (a
/// grant an operator has just fixed is taken up within a minute).
const RETRY: crate::backoff::Backoff = crate::backoff::Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(60),
    give_up_after: Duration::MAX,
};

/// One grant's tokens. See the module docs.
pub struct TokenSource {
    grant: Grant,
    used_by: Vec<String>,
    saved: Option<PathBuf>,
    http: Result<reqwest::Client, String>,
    cache: tokio::sync::Mutex<Cache>,
    outage: std::sync::Mutex<Outage>,
    notify: Option<Notify>,
    requests: AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("grant", &self.grant.key())
            .field("used_by", &self.used_by)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source for `grant`, used by `used_by`; its refresh token kept
    /// under `state_dir` (None: only in memory).
    pub fn new(
        grant: Grant,
        used_by: Vec<String>,
        state_dir: Option<PathBuf>,
        notify: Option<Notify>,
    ) -> TokenSource {
        let saved = state_dir.map(|d| saved::saved_path(&d, &grant));
        // Building the client loads the system's roots once; when it
        // fails, each request says why.
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("mailtriage/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| describe(&e));
        TokenSource {
            grant,
            used_by,
            saved,
            http,
            cache: tokio::sync::Mutex::new(Cache::default()),
            outage: std::sync::Mutex::new(Outage::default()),
            notify,
            requests: AtomicU64::new(0),
        }
    }

    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Where the refresh token is kept, if anywhere.
    pub fn saved_path(&self) -> Option<&std::path::Path> {
        self.saved.as_deref()
    }

    /// A token to use now: the cached one while fresh, else a new one.
    pub async fn token(&self, now: Timestamp) -> Result<AccessToken, GrantError> {
        let mut cache = self.cache.lock().await;
        if let Some(h) = &cache.token
            && now < h.fresh_until
        {
            return Ok(h.token.clone());
        }
        if let Some(e) = self.held_error(now) {
            // Too early to ask again: the present token while it is valid.
            if let Some(h) = &cache.token
                && now < h.expires_at
            {
                return Ok(h.token.clone());
            }
            return Err(e);
        }
        match self.refresh(&mut cache, now).await {
            Ok(token) => {
                self.worked(now);
                Ok(token)
            }
            Err(e @ GrantError::Unavailable(_)) => {
                self.failed(&e, now);
                // The old token still works for a while: use it, and ask
                // again after the backoff.
                match &cache.token {
                    Some(h) if now < h.expires_at => Ok(h.token.clone()),
                    _ => Err(e),
                }
            }
            Err(e) => {
                if self.grant.flow == Flow::RefreshToken {
                    // A refresh token stored since (`mailtriage oauth2
                    // authorize`) is read at the next try.
                    cache.refresh = None;
                    cache.saved_loaded = false;
                }
                self.failed(&e, now);
                Err(e)
            }
        }
    }

    /// The server refused `rejected`: the next [`TokenSource::token`] asks
    /// for a new one (unless another connection has already replaced it).
    pub async fn invalidate(&self, rejected: &AccessToken) {
        let mut cache = self.cache.lock().await;
        if cache.token.as_ref().is_some_and(|h| &h.token == rejected) {
            tracing::info!(grant = %self.grant.key(), "the server refused the access token: asking for a new one");
            cache.token = None;
        }
    }

    /// Exchanges an authorization code (`mailtriage oauth2 authorize`) and
    /// saves the refresh token it brings. Returns the issued tokens.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        now: Timestamp,
    ) -> Result<Issued, GrantError> {
        let form = protocol::token_form(&self.grant, None, Some((code, verifier, redirect_uri)));
        self.request(form, now).await
    }

    /// Saves `token` as the grant's refresh token.
    pub fn save_refresh_token(
        &self,
        token: &RefreshToken,
        now: Timestamp,
    ) -> Result<Option<PathBuf>, saved::SavedError> {
        match &self.saved {
            Some(path) => {
                saved::save(path, &self.grant, token, now)?;
                Ok(Some(path.clone()))
            }
            None => Ok(None),
        }
    }

    /// The grant's health now.
    pub fn health(&self) -> GrantHealth {
        let o = self
            .outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let token_expires = self
            .cache
            .try_lock()
            .ok()
            .and_then(|c| c.token.as_ref().map(|h| h.expires_at));
        GrantHealth {
            used_by: self.used_by.clone(),
            flow: self.grant.flow.name().to_string(),
            token_url: self.grant.token_url.clone(),
            token_expires,
            error: o.error.clone(),
            refused: o.refused,
            requests: self.requests.load(Ordering::Relaxed),
        }
    }

    /// The last failure's error, while it is too early to ask again.
    fn held_error(&self, now: Timestamp) -> Option<GrantError> {
        let o = self
            .outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&o.last, o.next_try) {
            (Some(e), Some(at)) if now < at => Some(e.clone()),
            _ => None,
        }
    }

    fn worked(&self, now: Timestamp) {
        let event = {
            let mut o = self
                .outage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let event = (o.told).then(|| GrantEvent::Recovered {
                grant: self.grant.key(),
                used_by: self.used_by.clone(),
                token_url: self.grant.token_url.clone(),
                since: o.since.unwrap_or(now),
            });
            *o = Outage::default();
            event
        };
        if let Some(e) = event {
            tracing::warn!(grant = %self.grant.key(), used_by = ?self.used_by, "OAuth 2.0 grant works again");
            self.tell(e);
        }
    }

    fn failed(&self, e: &GrantError, now: Timestamp) {
        let event = {
            let mut o = self
                .outage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let since = *o.since.get_or_insert(now);
            o.error = Some(crate::health::Noted {
                at: now,
                message: e.to_string(),
            });
            o.refused = e.is_fatal();
            o.failures = o.failures.saturating_add(1);
            let wait = RETRY.delay(o.failures - 1, self.requests.load(Ordering::Relaxed));
            o.next_try = Some(crate::clock::after(
                now,
                Duration::from_secs(u64::try_from(wait).unwrap_or(1)),
            ));
            o.last = Some(e.clone());
            (e.is_fatal() && !o.told).then(|| {
                o.told = true;
                GrantEvent::Broken {
                    grant: self.grant.key(),
                    used_by: self.used_by.clone(),
                    token_url: self.grant.token_url.clone(),
                    since,
                    error: e.to_string(),
                }
            })
        };
        tracing::error!(grant = %self.grant.key(), used_by = ?self.used_by, error = %e, "OAuth 2.0 token request failed");
        if let Some(ev) = event {
            self.tell(ev);
        }
    }

    fn tell(&self, e: GrantEvent) {
        if let Some(n) = &self.notify {
            n(e);
        }
    }

    /// Asks the token endpoint for a new access token (holding the cache,
    /// so that one request serves everyone waiting).
    async fn refresh(&self, cache: &mut Cache, now: Timestamp) -> Result<AccessToken, GrantError> {
        let refresh = match self.grant.flow {
            Flow::ClientCredentials => None,
            Flow::RefreshToken => Some(self.refresh_token(cache)?),
        };
        let form = protocol::token_form(&self.grant, refresh.as_ref(), None);
        let issued = self.request(form, now).await?;
        if let Some(new) = &issued.refresh_token
            && Some(new) != refresh.as_ref()
            && self.grant.flow == Flow::RefreshToken
        {
            match self.save_refresh_token(new, now) {
                Ok(Some(path)) => {
                    tracing::info!(grant = %self.grant.key(), path = %path.display(), "the provider rotated the refresh token: stored");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(grant = %self.grant.key(), error = %e, "the provider rotated the refresh token and it could not be stored: it is used until the daemon stops");
                }
            }
            cache.refresh = Some(new.clone());
        }
        tracing::debug!(grant = %self.grant.key(), lifetime_s = issued.lifetime.as_secs(), "access token issued");
        let token = issued.access_token.clone();
        cache.token = Some(Held {
            token: issued.access_token,
            fresh_until: protocol::fresh_until(now, issued.lifetime),
            expires_at: protocol::expires_at(now, issued.lifetime),
        });
        Ok(token)
    }

    /// The refresh token to use: the one in use, else the saved one, else
    /// the config's.
    fn refresh_token(&self, cache: &mut Cache) -> Result<RefreshToken, GrantError> {
        if cache.refresh.is_none() && !cache.saved_loaded {
            cache.saved_loaded = true;
            if let Some(path) = &self.saved {
                match saved::load(path) {
                    Ok(r) => cache.refresh = r,
                    Err(e) => {
                        tracing::error!(grant = %self.grant.key(), error = %e, "the saved refresh token cannot be read; using the config's")
                    }
                }
            }
        }
        if let Some(r) = &cache.refresh {
            return Ok(r.clone());
        }
        match &self.grant.refresh_token {
            Some(secret) => secret
                .read()
                .map(RefreshToken::new)
                .map_err(|e| GrantError::Unusable(format!("oauth2 refresh_token: {e}"))),
            None => Err(GrantError::Unusable(format!(
                "no refresh token for {}: run `mailtriage oauth2 authorize` for it, or set `refresh_token`",
                self.used_by.join(", ")
            ))),
        }
    }

    /// One request to the token endpoint, the client authenticated.
    async fn request(
        &self,
        mut form: Vec<(&'static str, String)>,
        now: Timestamp,
    ) -> Result<Issued, GrantError> {
        match &self.grant.client {
            ClientAuth::None => {}
            ClientAuth::Secret(s) => {
                let secret = s
                    .read()
                    .map_err(|e| GrantError::Unusable(format!("oauth2 client_secret: {e}")))?;
                form.push(("client_secret", secret));
            }
            ClientAuth::Certificate {
                certificate,
                private_key,
            } => {
                let cert = std::fs::read(certificate).map_err(|e| {
                    GrantError::Unusable(format!(
                        "oauth2 certificate {}: {e}",
                        certificate.display()
                    ))
                })?;
                let key = private_key
                    .read()
                    .map_err(|e| GrantError::Unusable(format!("oauth2 private_key: {e}")))?;
                let rng = ring::rand::SystemRandom::new();
                let mut jti = [0u8; 16];
                ring::rand::SecureRandom::fill(&rng, &mut jti).map_err(|_| {
                    GrantError::Unusable("no randomness for a client assertion".into())
                })?;
                let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
                let assertion = super::assertion::client_assertion(
                    &cert,
                    key.as_bytes(),
                    &self.grant.client_id,
                    &self.grant.token_url,
                    now,
                    &jti,
                    &rng,
                )
                .map_err(|e| {
                    GrantError::Unusable(format!(
                        "oauth2 certificate {}: {e}",
                        certificate.display()
                    ))
                })?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", assertion));
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(grant = %self.grant.key(), url = %self.grant.token_url, "token request");
        let http = self
            .http
            .as_ref()
            .map_err(|e| GrantError::Unusable(format!("the HTTP client cannot start: {e}")))?;
        let response = http
            .post(&self.grant.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| GrantError::Unavailable(describe(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| GrantError::Unavailable(describe(&e)))?;
        protocol::parse_token_response(status, &body)
    }
}

/// A reqwest error with its causes (reqwest's own text is terse:
/// "error sending request for url (...)").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Every grant of a config, one [`TokenSource`] per grant however many
/// mailboxes (and the SMTP server) use it.
#[derive(Debug, Default)]
pub struct Grants {
    sources: Vec<Arc<TokenSource>>,
    mailboxes: Vec<Option<usize>>,
    smtp: Option<usize>,
}

impl Grants {
    /// The grants of `settings`, their refresh tokens kept under
    /// `state_dir`.
    pub fn from_settings(
        settings: &Settings,
        state_dir: Option<PathBuf>,
        notify: Option<Notify>,
    ) -> Grants {
        let mut found: Vec<(Grant, Vec<String>)> = Vec::new();
        let mut index = |grant: &Grant, user: String| -> usize {
            let key = grant.key();
            match found.iter().position(|(g, _)| g.key() == key) {
                Some(i) => {
                    found[i].1.push(user);
                    i
                }
                None => {
                    found.push((grant.clone(), vec![user]));
                    found.len() - 1
                }
            }
        };
        let mailboxes = settings
            .mailboxes
            .iter()
            .map(|m| {
                m.grant
                    .as_ref()
                    .map(|g| index(g, format!("mailbox {}", m.name)))
            })
            .collect();
        let smtp = settings
            .smtp
            .grant
            .as_ref()
            .map(|g| index(g, "[smtp]".to_string()));
        let sources = found
            .into_iter()
            .map(|(g, used_by)| {
                Arc::new(TokenSource::new(
                    g,
                    used_by,
                    state_dir.clone(),
                    notify.clone(),
                ))
            })
            .collect();
        Grants {
            sources,
            mailboxes,
            smtp,
        }
    }

    /// The source of mailbox `index`, when it uses a grant.
    pub fn mailbox(&self, index: usize) -> Option<Arc<TokenSource>> {
        let i = (*self.mailboxes.get(index)?)?;
        self.sources.get(i).cloned()
    }

    /// The source of `[smtp]`, when it uses a grant.
    pub fn smtp(&self) -> Option<Arc<TokenSource>> {
        self.sources.get(self.smtp?).cloned()
    }

    /// Every grant's health.
    pub fn health(&self) -> Vec<GrantHealth> {
        self.sources.iter().map(|s| s.health()).collect()
    }
}
