//! OAuth 2.0 access tokens for IMAP and SMTP XOAUTH2 (Microsoft 365,
//! Google Workspace, or any provider with a token endpoint).
//!
//! - [`protocol`]: pure: the token request's form, the answer read and its
//!   errors classified, expiry, XOAUTH2, PKCE and the consent URL.
//! - [`assertion`]: the signed client assertion of a certificate credential.
//! - `saved`: a refresh token kept in the state directory (rotated by the
//!   provider, or stored by `mailtriage oauth2 authorize`), one small file
//!   per grant, written atomically with mode 0600.
//! - [`TokenSource`]: one grant's tokens, cached, shared by every
//!   connection that uses it, refreshed by one request at a time, and the
//!   grant's health (a refused grant is reported once, and its recovery).
//!
//! The grant itself, as configured, is [`crate::config::Grant`].

pub mod assertion;
pub mod protocol;
mod saved;
mod source;

pub use crate::health::GrantHealth;
pub use protocol::{AccessToken, GrantError, RefreshToken};
pub use saved::{SavedError, saved_path};
pub use source::{GrantEvent, Grants, Notify, TokenSource};
