//! How connections to mail servers are secured: the `tls` setting of the
//! config, and the rustls client side shared by IMAP and SMTP.
//!
//! Both speak to servers an operator names in the config, so both trust the
//! same roots: the system's, plus a private CA file when the config gives one
//! (a company CA, or the test harness's). ring is the only crypto provider
//! compiled in, so the configuration names it rather than relying on a
//! process-wide default.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
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

/// Builds the client configuration. The error names the CA file when that
/// is what failed.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot use is skipped, not fatal.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs =
            CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut any = false;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            any = true;
        }
        if !any {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
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
    let config = client_config(ca_file).map_err(HandshakeError::Other)?;
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
