//! OAuth 2.0 as data, without I/O: the token request's form, the token
//! endpoint's answer read and its errors classified (a refused grant needs
//! a human, an unavailable endpoint a retry), how long a token is used,
//! the XOAUTH2 string, and what `mailtriage oauth2 authorize` needs (PKCE,
//! the consent URL, the code read back).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use serde::Deserialize;

use crate::config::{Flow, Grant};

/// An access token. Its Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn new(token: String) -> AccessToken {
        AccessToken(token)
    }

    /// The token itself, for the one place it is sent.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

/// What the token endpoint issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub access_token: AccessToken,
    /// `expires_in`; an answer without it is taken as an hour, the usual
    /// lifetime (a token refused earlier is refreshed anyway).
    pub lifetime: Duration,
    /// A new refresh token (the provider rotated it), to be kept.
    pub refresh_token: Option<RefreshToken>,
}

/// A refresh token. Its Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    pub fn new(token: String) -> RefreshToken {
        RefreshToken(token)
    }

    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

/// The token endpoint's error answer (RFC 6749 §5.2), verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    pub status: u16,
    /// `error`, e.g. `invalid_grant`.
    pub error: String,
    pub description: Option<String>,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(d) = &self.description {
            write!(f, ": {d}")?;
        }
        write!(f, " (HTTP {})", self.status)
    }
}

/// Why no token was issued, as the daemon must treat it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The provider refused the grant or the client (revoked or expired
    /// consent, a wrong or expired secret, a missing permission): asking
    /// again gives the same answer until a human acts. Alert.
    #[error("the token endpoint refused: {0}")]
    Refused(ProviderError),
    /// The endpoint could not be reached, or failed (5xx, 429, a garbled
    /// answer): try again later.
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
    /// The grant cannot be asked for yet: no refresh token (`mailtriage
    /// oauth2 authorize` has not been run), a secret that cannot be read,
    /// a certificate that cannot be used. Alert, like a refusal.
    #[error("{0}")]
    Unusable(String),
}

impl GrantError {
    /// Needs a human: the admin alert says so at once.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, GrantError::Unavailable(_))
    }
}

#[derive(Deserialize)]
struct Success {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<ExpiresIn>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Some providers send `expires_in` as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    N(u64),
    S(String),
}

#[derive(Deserialize)]
struct Failure {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// What of a body that is not the expected JSON is shown: its start, on
/// one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

/// Reads the token endpoint's answer.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<Issued, GrantError> {
    if (200..300).contains(&status) {
        let s: Success = serde_json::from_slice(body).map_err(|e| {
            GrantError::Unavailable(format!(
                "HTTP {status} without a token ({e}): {}",
                excerpt_without_secrets(body)
            ))
        })?;
        if s.access_token.is_empty() {
            return Err(GrantError::Unavailable(format!(
                "HTTP {status}: an empty access_token"
            )));
        }
        if let Some(t) = &s.token_type
            && !t.eq_ignore_ascii_case("bearer")
        {
            return Err(GrantError::Refused(ProviderError {
                status,
                error: "unsupported token_type".into(),
                description: Some(format!("{t:?}, where Bearer was expected")),
            }));
        }
        let lifetime = match s.expires_in {
            Some(ExpiresIn::N(n)) => Duration::from_secs(n),
            Some(ExpiresIn::S(text)) => Duration::from_secs(text.trim().parse().map_err(|_| {
                GrantError::Unavailable(format!(
                    "HTTP {status}: expires_in {text:?} is not a number of seconds"
                ))
            })?),
            None => Duration::from_secs(3600),
        };
        return Ok(Issued {
            access_token: AccessToken(s.access_token),
            lifetime,
            refresh_token: s.refresh_token.filter(|r| !r.is_empty()).map(RefreshToken),
        });
    }
    let failure = serde_json::from_slice::<Failure>(body).ok();
    let transient_status = status >= 500 || status == 429 || status == 408;
    match failure {
        // RFC 6749 §5.2's error, or Microsoft's temporarily_unavailable.
        Some(f)
            if !transient_status
                && f.error != "temporarily_unavailable"
                && f.error != "server_error" =>
        {
            Err(GrantError::Refused(ProviderError {
                status,
                error: f.error,
                description: f.error_description,
            }))
        }
        Some(f) => Err(GrantError::Unavailable(
            ProviderError {
                status,
                error: f.error,
                description: f.error_description,
            }
            .to_string(),
        )),
        None if transient_status || status < 400 => Err(GrantError::Unavailable(format!(
            "HTTP {status}: {}",
            excerpt(body)
        ))),
        None => Err(GrantError::Refused(ProviderError {
            status,
            error: "refused".into(),
            description: Some(excerpt(body)).filter(|e| !e.is_empty()),
        })),
    }
}

/// A 2xx body that did not parse may still hold a token: show only that
/// it was not what was expected.
fn excerpt_without_secrets(body: &[u8]) -> String {
    format!("{} bytes", body.len())
}

/// How long before its expiry a token is no longer handed out: a fifth of
/// its lifetime, at most five minutes, so that a connection made with it
/// has time to log in, and a refresh that fails has time to be retried
/// while the old token still works.
pub fn margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(Duration::from_secs(300))
}

/// Until when a token issued at `issued` is handed out.
pub fn fresh_until(issued: Timestamp, lifetime: Duration) -> Timestamp {
    crate::clock::after(issued, lifetime.saturating_sub(margin(lifetime)))
}

/// Until when it is valid at all (a refresh that fails before this falls
/// back on it).
pub fn expires_at(issued: Timestamp, lifetime: Duration) -> Timestamp {
    crate::clock::after(issued, lifetime)
}

/// The SASL XOAUTH2 initial response, before base64 (the IMAP and SMTP
/// libraries encode it).
pub fn xoauth2(user: &str, token: &AccessToken) -> String {
    format!("user={user}\x01auth=Bearer {}\x01\x01", token.0)
}

/// The form of a token request for `grant`, without the client's
/// authentication (`client_secret` or `client_assertion`, added by the
/// caller). `refresh` is the refresh token for that flow; `code` and
/// `verifier` make it the authorization-code exchange instead.
pub fn token_form(
    grant: &Grant,
    refresh: Option<&RefreshToken>,
    code: Option<(&str, &str, &str)>,
) -> Vec<(&'static str, String)> {
    let mut form = vec![("client_id", grant.client_id.clone())];
    match (code, grant.flow) {
        (Some((code, verifier, redirect_uri)), _) => {
            form.push(("grant_type", "authorization_code".into()));
            form.push(("code", code.into()));
            form.push(("code_verifier", verifier.into()));
            form.push(("redirect_uri", redirect_uri.into()));
        }
        (None, Flow::ClientCredentials) => {
            form.push(("grant_type", "client_credentials".into()));
            form.push(("scope", grant.scope.clone()));
        }
        (None, Flow::RefreshToken) => {
            form.push(("grant_type", "refresh_token".into()));
            if let Some(r) = refresh {
                form.push(("refresh_token", r.0.clone()));
            }
            form.push(("scope", grant.scope.clone()));
        }
    }
    form
}

/// PKCE (RFC 7636) with S256.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl fmt::Debug for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pkce(..)")
    }
}

impl Pkce {
    /// From 32 random bytes: a 43-character verifier.
    pub fn from_random(random: &[u8; 32]) -> Pkce {
        let verifier = URL_SAFE_NO_PAD.encode(random);
        let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
        Pkce {
            challenge: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            verifier,
        }
    }
}

/// The consent page's URL for `grant`.
pub fn consent_url(
    grant: &Grant,
    redirect_uri: &str,
    state: &str,
    pkce: &Pkce,
) -> Result<String, String> {
    let base = grant.authorize_url.as_deref().ok_or(
        "oauth2: `authorize_url` is not set (it is built in for the microsoft and google providers)",
    )?;
    let mut url =
        url::Url::parse(base).map_err(|e| format!("oauth2: authorize_url {base:?}: {e}"))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &grant.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &grant.scope)
            .append_pair("state", state)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(user) = &grant.user {
            q.append_pair("login_hint", user);
        }
        for (k, v) in &grant.authorize_extra {
            q.append_pair(k, v);
        }
    }
    Ok(url.into())
}

/// Why what came back from the consent page is not a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("nothing was pasted")]
    Empty,
    #[error("the provider answered {error}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error("the redirect carries no code")]
    NoCode,
    /// Another consent's answer, or a forged one.
    #[error("the redirect's state does not match this request's: start again")]
    State,
}

/// The code from what the operator pasted: the whole redirect URL (or its
/// query), checked against `state`, or the bare code.
pub fn code_from_reply(reply: &str, state: &str) -> Result<String, ReplyError> {
    let reply = reply.trim();
    if reply.is_empty() {
        return Err(ReplyError::Empty);
    }
    let query = if let Ok(url) = url::Url::parse(reply) {
        url.query().unwrap_or_default().to_string()
    } else if let Some(q) = reply.strip_prefix('?') {
        q.to_string()
    } else if reply.contains("code=") || reply.contains("error=") {
        reply.split_once('?').map_or(reply, |(_, q)| q).to_string()
    } else {
        return Ok(reply.to_string());
    };
    code_from_query(&query, state)
}

/// The code from a redirect's query string, checked against `state`.
pub fn code_from_query(query: &str, state: &str) -> Result<String, ReplyError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    if let Some(error) = get("error") {
        return Err(ReplyError::Denied {
            error,
            description: get("error_description"),
        });
    }
    let code = get("code")
        .filter(|c| !c.is_empty())
        .ok_or(ReplyError::NoCode)?;
    if get("state").as_deref() != Some(state) {
        return Err(ReplyError::State);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_are_read_and_errors_classified() {
        enum Want {
            Token(&'static str, u64, Option<&'static str>),
            Refused(&'static str),
            Unavailable(&'static str),
        }
        let cases: &[(u16, &str, Want)] = &[
            (
                200,
                r#"{"access_token":"at1","token_type":"Bearer","expires_in":3599}"#,
                Want::Token("at1", 3599, None),
            ),
            (
                200,
                r#"{"access_token":"at2","token_type":"bearer","expires_in":"60","refresh_token":"rt2"}"#,
                Want::Token("at2", 60, Some("rt2")),
            ),
            (
                200,
                r#"{"access_token":"at3","refresh_token":""}"#,
                Want::Token("at3", 3600, None),
            ),
            (
                200,
                r#"{"access_token":"at4","token_type":"mac"}"#,
                Want::Refused(
                    "unsupported token_type: \"mac\", where Bearer was expected (HTTP 200)",
                ),
            ),
            (
                200,
                r#"{"token":"x"}"#,
                Want::Unavailable("HTTP 200 without a token"),
            ),
            (
                400,
                r#"{"error":"invalid_grant","error_description":"AADSTS70000: The grant was revoked."}"#,
                Want::Refused("invalid_grant: AADSTS70000: The grant was revoked. (HTTP 400)"),
            ),
            (
                401,
                r#"{"error":"invalid_client","error_description":"Unauthorized"}"#,
                Want::Refused("invalid_client: Unauthorized (HTTP 401)"),
            ),
            (
                400,
                r#"{"error":"unauthorized_client"}"#,
                Want::Refused("unauthorized_client (HTTP 400)"),
            ),
            (
                403,
                "<html>Forbidden</html>",
                Want::Refused("refused: <html>Forbidden</html> (HTTP 403)"),
            ),
            (
                503,
                r#"{"error":"temporarily_unavailable","error_description":"try later"}"#,
                Want::Unavailable("temporarily_unavailable: try later (HTTP 503)"),
            ),
            (
                400,
                r#"{"error":"temporarily_unavailable"}"#,
                Want::Unavailable("temporarily_unavailable (HTTP 400)"),
            ),
            (
                502,
                "Bad Gateway",
                Want::Unavailable("HTTP 502: Bad Gateway"),
            ),
            (429, "", Want::Unavailable("HTTP 429: ")),
        ];
        for (status, body, want) in cases {
            let got = parse_token_response(*status, body.as_bytes());
            match (want, got) {
                (Want::Token(t, secs, r), Ok(i)) => {
                    assert_eq!(i.access_token.secret(), *t, "{body}");
                    assert_eq!(i.lifetime, Duration::from_secs(*secs), "{body}");
                    assert_eq!(i.refresh_token.as_ref().map(RefreshToken::secret), *r);
                }
                (Want::Refused(text), Err(ref e @ GrantError::Refused(ref p))) => {
                    assert_eq!(p.to_string(), *text, "{body}");
                    assert!(e.is_fatal());
                }
                (Want::Unavailable(text), Err(ref e @ GrantError::Unavailable(ref m))) => {
                    assert!(m.starts_with(text), "{body}: {m}");
                    assert!(!e.is_fatal());
                }
                (_, got) => panic!("{status} {body}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_success_body_that_does_not_parse_is_not_echoed() {
        let e = parse_token_response(200, br#"{"acces_token":"s3cret"}"#).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(!format!("{:?}", AccessToken::new("s3cret".into())).contains("s3cret"));
        assert!(!format!("{:?}", RefreshToken::new("s3cret".into())).contains("s3cret"));
    }

    #[test]
    fn tokens_are_handed_out_until_a_margin_before_expiry() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let cases: &[(u64, u64)] = &[
            // lifetime, seconds handed out
            (3600, 3300),
            (3599, 3299),
            (600, 480),
            (10, 8),
            (1, 0),
            (0, 0),
        ];
        for (lifetime, fresh) in cases {
            let d = Duration::from_secs(*lifetime);
            assert_eq!(
                crate::clock::seconds_between(t0, fresh_until(t0, d)),
                *fresh as i64,
                "lifetime {lifetime}"
            );
            assert_eq!(
                crate::clock::seconds_between(t0, expires_at(t0, d)),
                *lifetime as i64
            );
        }
    }

    #[test]
    fn xoauth2_string_is_as_the_providers_document_it() {
        assert_eq!(
            xoauth2("ops@example.com", &AccessToken::new("ya29.x".into())),
            "user=ops@example.com\x01auth=Bearer ya29.x\x01\x01"
        );
    }

    fn grant(flow: Flow) -> Grant {
        Grant {
            flow,
            token_url: "https://login.example.com/token".into(),
            authorize_url: Some("https://login.example.com/authorize?tenant=x".into()),
            scope: "https://mail.example.com/".into(),
            client_id: "app id".into(),
            client: crate::config::ClientAuth::None,
            refresh_token: None,
            user: Some("ops@example.com".into()),
            authorize_extra: vec![("access_type".into(), "offline".into())],
        }
    }

    #[test]
    fn token_forms_per_flow() {
        let names = |f: Vec<(&'static str, String)>| {
            f.into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        };
        let r = RefreshToken::new("rt".into());
        assert_eq!(
            names(token_form(&grant(Flow::ClientCredentials), None, None)),
            "client_id=app id&grant_type=client_credentials&scope=https://mail.example.com/"
        );
        assert_eq!(
            names(token_form(&grant(Flow::RefreshToken), Some(&r), None)),
            "client_id=app id&grant_type=refresh_token&refresh_token=rt&scope=https://mail.example.com/"
        );
        assert_eq!(
            names(token_form(
                &grant(Flow::RefreshToken),
                None,
                Some(("c0de", "v", "http://127.0.0.1:1/"))
            )),
            "client_id=app id&grant_type=authorization_code&code=c0de&code_verifier=v&redirect_uri=http://127.0.0.1:1/"
        );
    }

    #[test]
    fn pkce_is_rfc_7636_s256() {
        // RFC 7636 Appendix B.
        let random: [u8; 32] = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212,
            37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let p = Pkce::from_random(&random);
        assert_eq!(p.verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(p.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn consent_url_carries_pkce_state_and_the_providers_extras() {
        let p = Pkce::from_random(&[7; 32]);
        let url = consent_url(
            &grant(Flow::RefreshToken),
            "http://127.0.0.1:8400/",
            "st",
            &p,
        )
        .unwrap();
        let parsed = url::Url::parse(&url).unwrap();
        let q: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("tenant"), Some("x"));
        assert_eq!(get("response_type"), Some("code"));
        assert_eq!(get("client_id"), Some("app id"));
        assert_eq!(get("redirect_uri"), Some("http://127.0.0.1:8400/"));
        assert_eq!(get("state"), Some("st"));
        assert_eq!(get("code_challenge"), Some(p.challenge.as_str()));
        assert_eq!(get("code_challenge_method"), Some("S256"));
        assert_eq!(get("login_hint"), Some("ops@example.com"));
        assert_eq!(get("access_type"), Some("offline"));
        let mut no_page = grant(Flow::RefreshToken);
        no_page.authorize_url = None;
        assert!(consent_url(&no_page, "http://127.0.0.1:1/", "s", &p).is_err());
    }

    #[test]
    fn the_code_is_read_from_what_is_pasted() {
        let cases: &[(&str, Result<&str, ReplyError>)] = &[
            ("http://127.0.0.1:8400/?code=abc&state=st", Ok("abc")),
            ("  http://localhost/?state=st&code=a%2Fb \n", Ok("a/b")),
            ("?code=abc&state=st", Ok("abc")),
            ("code=abc&state=st", Ok("abc")),
            ("4/0Adeu5BW", Ok("4/0Adeu5BW")),
            (
                "http://127.0.0.1:8400/?code=abc&state=other",
                Err(ReplyError::State),
            ),
            ("http://127.0.0.1:8400/?code=abc", Err(ReplyError::State)),
            ("http://127.0.0.1:8400/?state=st", Err(ReplyError::NoCode)),
            (
                "http://127.0.0.1:8400/?error=access_denied&error_description=The+user+declined&state=st",
                Err(ReplyError::Denied {
                    error: "access_denied".into(),
                    description: Some("The user declined".into()),
                }),
            ),
            ("   ", Err(ReplyError::Empty)),
        ];
        for (reply, want) in cases {
            assert_eq!(
                code_from_reply(reply, "st").as_deref(),
                want.as_ref().map(|s| *s),
                "{reply}"
            );
        }
    }
}
