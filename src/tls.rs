//! How connections to mail servers are secured: the `tls` setting of the
//! config, and the rustls client side shared by IMAP and SMTP.
//!
//! Both speak to servers an operator names in the config, so both trust the
//! same roots: the system's, plus a private CA file when the config gives one
//! (a company CA, or the test harness's). ring is the only crypto provider
//! compiled in, so the configuration names it rather than relying on a
//! process-wide default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// How a connection to a mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// TLS from the first byte (IMAP 993, SMTP 465).
    Implicit,
    /// STARTTLS, required (IMAP 143, SMTP 587).
    Starttls,
    /// No TLS at all: only for loopback test servers, and only when the
    /// config says so explicitly.
    Plain,
}

/// Why the client configuration cannot be built: mostly the CA file, which
/// the error names.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientConfigError {
    /// The file cannot be read, or a certificate in it is not PEM.
    #[error("{}: {source}", .path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// rustls refuses a certificate of the file as a root.
    #[error("{}: {source}", .path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: no PEM certificate in it", .path.display())]
    NoCertificate { path: PathBuf },
    /// The crypto provider offers none of the protocol versions.
    #[error("{0}")]
    Protocols(#[source] rustls::Error),
}

/// Builds the client configuration.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, ClientConfigError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot use is skipped, not fatal.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = |source| ClientConfigError::Pem {
            path: path.to_owned(),
            source,
        };
        let mut any = false;
        for cert in CertificateDer::pem_file_iter(path).map_err(pem)? {
            roots
                .add(cert.map_err(pem)?)
                .map_err(|source| ClientConfigError::Root {
                    path: path.to_owned(),
                    source,
                })?;
            any = true;
        }
        if !any {
            return Err(ClientConfigError::NoCertificate {
                path: path.to_owned(),
            });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientConfigError::Protocols)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Runs the TLS handshake on a connected socket, checking the certificate
/// against `host`.
pub(crate) async fn handshake(
    tcp: TcpStream,
    host: &str,
    ca_file: Option<&Path>,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let config = client_config(ca_file).map_err(|e| HandshakeError::Other(e.to_string()))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| HandshakeError::Other(format!("server name {host:?}: {e}")))?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let certificate = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|r| {
                    matches!(
                        r,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                });
            let message = format!("TLS handshake with {host}: {e}");
            if certificate {
                HandshakeError::Certificate(message)
            } else {
                HandshakeError::Other(message)
            }
        })
}

/// Why a handshake failed: the server's certificate was refused (a
/// configuration problem that retrying will not fix), or anything else.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Certificate(String),
    Other(String),
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn a_ca_file_that_cannot_serve_says_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("missing.pem", None, "Pem"),
            ("empty.pem", Some(""), "NoCertificate"),
            (
                "not-base64.pem",
                Some("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
                "Pem",
            ),
            (
                "not-a-certificate.pem",
                Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                "Root",
            ),
        ];
        for (name, contents, expected) in cases {
            let path = dir.path().join(name);
            if let Some(c) = contents {
                std::fs::write(&path, c).unwrap();
            }
            let e = client_config(Some(&path)).expect_err(name);
            let variant = match &e {
                ClientConfigError::Pem { .. } => "Pem",
                ClientConfigError::Root { .. } => "Root",
                ClientConfigError::NoCertificate { .. } => "NoCertificate",
                ClientConfigError::Protocols(_) => "Protocols",
            };
            assert_eq!(variant, *expected, "{name}: {e}");
            assert!(
                e.to_string().starts_with(&format!("{}: ", path.display())),
                "{name}: {e}"
            );
            assert_eq!(
                e.source().is_some(),
                *expected != "NoCertificate",
                "{name}: the cause is kept"
            );
        }
        assert!(client_config(None).is_ok(), "the system's roots alone");
    }
}
