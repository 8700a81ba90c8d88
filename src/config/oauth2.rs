//! The `oauth2` table of a `[[mailbox]]` or `[smtp]`: how the daemon gets
//! OAuth 2.0 access tokens for XOAUTH2, checked and resolved into a
//! [`Grant`] (provider presets applied, the flow chosen, the token URL
//! checked). Here rather than in [`crate::oauth`] because the config must
//! check it at load time and `oauth` reads the config, not the reverse.

use std::path::PathBuf;

use serde::Deserialize;

use super::values::Secret;

/// The providers whose endpoints and scopes are built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Microsoft 365 (Entra ID): needs `tenant`.
    Microsoft,
    /// Google Workspace.
    Google,
}

/// The two grants a daemon can use by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// RFC 6749 §4.4: the application's own token (Microsoft 365
    /// app-only access).
    ClientCredentials,
    /// RFC 6749 §6: a user's refresh token, from `mailtriage oauth2
    /// authorize` or the config (Google Workspace, Microsoft delegated).
    RefreshToken,
}

impl Flow {
    pub fn name(self) -> &'static str {
        match self {
            Flow::ClientCredentials => "client_credentials",
            Flow::RefreshToken => "refresh_token",
        }
    }
}

/// `oauth2 = { ... }` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Section {
    pub provider: Option<Provider>,
    /// The Entra ID tenant (a domain or its id), with `provider = "microsoft"`.
    pub tenant: Option<String>,
    /// Default: `refresh_token` for Google or when `refresh_token` is set,
    /// else `client_credentials`.
    pub flow: Option<Flow>,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// The client certificate (PEM) registered with the provider: the
    /// client authenticates with an assertion signed by `private_key`
    /// (RFC 7523) instead of a secret.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<Secret>,
    /// The first refresh token; one stored by `mailtriage oauth2
    /// authorize` or rotated by the provider is used instead.
    pub refresh_token: Option<Secret>,
    pub token_url: Option<String>,
    /// The consent page, for `mailtriage oauth2 authorize`.
    pub authorize_url: Option<String>,
    pub scope: Option<String>,
}

/// How the client proves who it is at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// A public client (refresh tokens only): the client id alone.
    None,
    Secret(Secret),
    /// A JWT signed with the key of a registered certificate.
    Certificate {
        certificate: PathBuf,
        private_key: Secret,
    },
}

/// A grant, resolved: everything a token request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub flow: Flow,
    pub token_url: String,
    pub authorize_url: Option<String>,
    pub scope: String,
    pub client_id: String,
    pub client: ClientAuth,
    pub refresh_token: Option<Secret>,
    /// The account the tokens are for: part of a refresh-token grant's
    /// identity (each user has their own), not of a client-credentials one
    /// (the application's token serves every mailbox it was given).
    pub user: Option<String>,
    /// Extra parameters of the consent URL (Google gives a refresh token
    /// only with `access_type=offline`, again only with `prompt=consent`).
    pub authorize_extra: Vec<(String, String)>,
}

const MICROSOFT_APP_SCOPE: &str = "https://outlook.office365.com/.default";
const MICROSOFT_DELEGATED_SCOPE: &str = "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access";
const GOOGLE_SCOPE: &str = "https://mail.google.com/";

impl OAuth2Section {
    /// Resolves the table for the account `user`; the error says what was
    /// expected, without the place (the caller knows it) and never a secret.
    pub fn grant(&self, user: &str) -> Result<Grant, String> {
        if self.client_id.trim().is_empty() {
            return Err("oauth2: client_id is empty".into());
        }
        let flow = self.flow.unwrap_or(
            if self.provider == Some(Provider::Google) || self.refresh_token.is_some() {
                Flow::RefreshToken
            } else {
                Flow::ClientCredentials
            },
        );
        if self.tenant.is_some() && self.provider != Some(Provider::Microsoft) {
            return Err("oauth2: `tenant` goes with provider = \"microsoft\"".into());
        }
        let (token_url, authorize_url, scope, authorize_extra) = match self.provider {
            Some(Provider::Microsoft) => {
                let tenant = self.tenant.as_deref().map(str::trim).unwrap_or_default();
                if tenant.is_empty()
                    || !tenant
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
                {
                    return Err("oauth2: provider = \"microsoft\" expects `tenant`, the Entra ID tenant's domain (contoso.onmicrosoft.com) or id".into());
                }
                let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
                let scope = match flow {
                    Flow::ClientCredentials => MICROSOFT_APP_SCOPE,
                    Flow::RefreshToken => MICROSOFT_DELEGATED_SCOPE,
                };
                (
                    format!("{base}/token"),
                    Some(format!("{base}/authorize")),
                    scope.to_string(),
                    Vec::new(),
                )
            }
            Some(Provider::Google) => {
                if flow == Flow::ClientCredentials {
                    return Err("oauth2: Google Workspace mail takes flow = \"refresh_token\" (a user's consent, `mailtriage oauth2 authorize`), not client credentials".into());
                }
                (
                    "https://oauth2.googleapis.com/token".to_string(),
                    Some("https://accounts.google.com/o/oauth2/v2/auth".to_string()),
                    GOOGLE_SCOPE.to_string(),
                    vec![
                        ("access_type".to_string(), "offline".to_string()),
                        ("prompt".to_string(), "consent".to_string()),
                    ],
                )
            }
            None => {
                let (Some(token_url), Some(scope)) = (&self.token_url, &self.scope) else {
                    return Err("oauth2: expected `provider = \"microsoft\"` (with `tenant`) or `provider = \"google\"`, or `token_url` and `scope` for another provider".into());
                };
                (
                    token_url.clone(),
                    self.authorize_url.clone(),
                    scope.clone(),
                    Vec::new(),
                )
            }
        };
        // What is set by hand wins over the preset.
        let token_url = self.token_url.clone().unwrap_or(token_url);
        let authorize_url = self.authorize_url.clone().or(authorize_url);
        let scope = self.scope.clone().unwrap_or(scope);
        check_url("token_url", &token_url)?;
        if let Some(a) = &authorize_url {
            check_url("authorize_url", a)?;
        }
        if scope.trim().is_empty() {
            return Err("oauth2: scope is empty".into());
        }
        let client = match (&self.client_secret, &self.certificate, &self.private_key) {
            (Some(s), None, None) => ClientAuth::Secret(s.clone()),
            (None, Some(c), Some(k)) => ClientAuth::Certificate {
                certificate: c.clone(),
                private_key: k.clone(),
            },
            (None, None, None) => ClientAuth::None,
            (Some(_), _, _) => {
                return Err("oauth2: expected `client_secret` or `certificate` with `private_key`, not both".into());
            }
            (None, _, _) => {
                return Err("oauth2: `certificate` (the PEM certificate registered with the provider) and `private_key` (where its key comes from) go together".into());
            }
        };
        match flow {
            Flow::ClientCredentials => {
                if client == ClientAuth::None {
                    return Err("oauth2: client credentials expect `client_secret`, or `certificate` and `private_key`".into());
                }
                if self.refresh_token.is_some() {
                    return Err("oauth2: `refresh_token` goes with flow = \"refresh_token\"".into());
                }
            }
            Flow::RefreshToken => {}
        }
        Ok(Grant {
            flow,
            token_url,
            authorize_url,
            scope,
            client_id: self.client_id.clone(),
            client,
            refresh_token: self.refresh_token.clone(),
            user: (flow == Flow::RefreshToken).then(|| user.to_string()),
            authorize_extra,
        })
    }
}

/// A token endpoint is reached over HTTPS; plain HTTP only on loopback
/// (tests, a local proxy), where nothing crosses a network.
fn check_url(key: &str, text: &str) -> Result<(), String> {
    let url = url::Url::parse(text)
        .map_err(|e| format!("oauth2: {key}: expected an https:// URL, found {text:?} ({e})"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        _ => Err(format!(
            "oauth2: {key}: expected an https:// URL (http:// only on 127.0.0.1, ::1 or localhost), found {text:?}"
        )),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl Grant {
    /// The grant's identity: connections with the same one share its
    /// tokens, and its rotated refresh token is stored under it. Hex of
    /// the first 8 bytes of SHA-256 over what makes it (no secret).
    pub fn key(&self) -> String {
        let mut text = String::new();
        for part in [
            self.flow.name(),
            &self.token_url,
            &self.client_id,
            &self.scope,
            self.user.as_deref().unwrap_or(""),
        ] {
            text.push_str(part);
            text.push('\0');
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> OAuth2Section {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn presets_and_hand_settings_resolve() {
        struct Case {
            toml: &'static str,
            flow: Flow,
            token_url: &'static str,
            scope: &'static str,
            user: Option<&'static str>,
        }
        let cases = [
            Case {
                toml: "provider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\nclient_secret = { env = \"S\" }",
                flow: Flow::ClientCredentials,
                token_url: "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
                scope: MICROSOFT_APP_SCOPE,
                user: None,
            },
            Case {
                toml: "provider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nflow = \"refresh_token\"\nclient_id = \"app\"",
                flow: Flow::RefreshToken,
                token_url: "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
                scope: MICROSOFT_DELEGATED_SCOPE,
                user: Some("ops@example.com"),
            },
            Case {
                toml: "provider = \"google\"\nclient_id = \"app\"\nclient_secret = { env = \"S\" }",
                flow: Flow::RefreshToken,
                token_url: "https://oauth2.googleapis.com/token",
                scope: GOOGLE_SCOPE,
                user: Some("ops@example.com"),
            },
            Case {
                toml: "token_url = \"http://127.0.0.1:8080/token\"\nscope = \"mail\"\nclient_id = \"app\"\ncertificate = \"/c.pem\"\nprivate_key = { file = \"/k.pem\" }",
                flow: Flow::ClientCredentials,
                token_url: "http://127.0.0.1:8080/token",
                scope: "mail",
                user: None,
            },
            Case {
                toml: "provider = \"google\"\nscope = \"https://mail.google.com/ openid\"\nclient_id = \"app\"",
                flow: Flow::RefreshToken,
                token_url: "https://oauth2.googleapis.com/token",
                scope: "https://mail.google.com/ openid",
                user: Some("ops@example.com"),
            },
        ];
        for c in cases {
            let g = section(c.toml).grant("ops@example.com").unwrap();
            assert_eq!(
                (
                    g.flow,
                    g.token_url.as_str(),
                    g.scope.as_str(),
                    g.user.as_deref()
                ),
                (c.flow, c.token_url, c.scope, c.user),
                "{}",
                c.toml
            );
        }
    }

    #[test]
    fn mistakes_say_what_was_expected() {
        let cases: &[(&str, &str)] = &[
            (
                "provider = \"microsoft\"\nclient_id = \"a\"\nclient_secret = { env = \"S\" }",
                "expects `tenant`",
            ),
            (
                "provider = \"microsoft\"\ntenant = \"a/b\"\nclient_id = \"a\"\nclient_secret = { env = \"S\" }",
                "expects `tenant`",
            ),
            (
                "provider = \"google\"\nflow = \"client_credentials\"\nclient_id = \"a\"\nclient_secret = { env = \"S\" }",
                "not client credentials",
            ),
            (
                "client_id = \"a\"\nclient_secret = { env = \"S\" }",
                "or `token_url` and `scope`",
            ),
            (
                "token_url = \"http://login.example.com/token\"\nscope = \"s\"\nclient_id = \"a\"\nclient_secret = { env = \"S\" }",
                "expected an https:// URL",
            ),
            (
                "token_url = \"not a url\"\nscope = \"s\"\nclient_id = \"a\"\nclient_secret = { env = \"S\" }",
                "expected an https:// URL",
            ),
            (
                "provider = \"microsoft\"\ntenant = \"t\"\nclient_id = \"a\"",
                "expect `client_secret`",
            ),
            (
                "provider = \"microsoft\"\ntenant = \"t\"\nclient_id = \"a\"\nclient_secret = { env = \"S\" }\ncertificate = \"/c.pem\"\nprivate_key = { env = \"K\" }",
                "not both",
            ),
            (
                "provider = \"microsoft\"\ntenant = \"t\"\nclient_id = \"a\"\ncertificate = \"/c.pem\"",
                "go together",
            ),
            (
                "provider = \"google\"\ntenant = \"t\"\nclient_id = \"a\"",
                "`tenant` goes with",
            ),
            (
                "provider = \"google\"\nclient_id = \" \"",
                "client_id is empty",
            ),
            (
                "provider = \"microsoft\"\ntenant = \"t\"\nflow = \"client_credentials\"\nclient_id = \"a\"\nclient_secret = { env = \"S\" }\nrefresh_token = { env = \"R\" }",
                "goes with flow",
            ),
        ];
        for (text, expected) in cases {
            let e = section(text).grant("u").unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn a_grant_is_shared_by_client_and_scope_and_a_users_by_user() {
        let app = "provider = \"microsoft\"\ntenant = \"t\"\nclient_id = \"a\"\nclient_secret = { env = \"S\" }";
        let app_other_secret = "provider = \"microsoft\"\ntenant = \"t\"\nclient_id = \"a\"\nclient_secret = { env = \"T\" }";
        let user = "provider = \"google\"\nclient_id = \"a\"";
        let key = |t: &str, u: &str| section(t).grant(u).unwrap().key();
        assert_eq!(key(app, "ops@x.com"), key(app, "support@x.com"));
        assert_eq!(key(app, "ops@x.com"), key(app_other_secret, "ops@x.com"));
        assert_ne!(key(user, "ops@x.com"), key(user, "support@x.com"));
        assert_ne!(key(app, "ops@x.com"), key(user, "ops@x.com"));
        assert_eq!(key(user, "ops@x.com").len(), 16);
    }
}
