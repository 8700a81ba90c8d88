//! Test certificates, made with the `openssl` command-line tool: a private
//! CA and a server certificate for 127.0.0.1 signed by it, for the TLS
//! modes of the harness's servers ([`crate::Dovecot::start_tls`],
//! [`crate::SmtpCapture::start_tls`]) and of the daemon's config.
//!
//! rustls is strict about what it accepts, so the certificates carry the
//! extensions it checks: the CA has `basicConstraints = critical, CA:TRUE`
//! and `keyUsage = critical, keyCertSign, cRLSign`; the server certificate
//! has `subjectAltName = IP:127.0.0.1, DNS:localhost` (rustls ignores the
//! CN), `basicConstraints = CA:FALSE`, `keyUsage = digitalSignature` and
//! `extendedKeyUsage = serverAuth`. A self-signed certificate used directly
//! as the server's would be refused (`CaUsedAsEndEntity`), hence the CA.
//! Keys are ECDSA P-256: fast to make, and accepted by rustls, Dovecot
//! (OpenSSL) and Python's ssl module.
//!
//! Every [`TestCa::new`] makes a fresh CA key, so two of them are
//! unrelated: a server certificate from one is refused by a client that
//! trusts only the other (the "wrong CA" tests).
//!
//! [`tls_greeting`] is a tiny rustls client (the same library and checks
//! as the daemon) that reads a TLS server's greeting: the harness uses it
//! to wait for an implicit-TLS listener, and the self-tests to check that
//! one accepts the right CA and is refused with an unrelated one.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The openssl binary: `MAILTRIAGE_TEST_OPENSSL`, else /usr/bin/openssl,
/// else `openssl` on PATH.
pub fn openssl_binary() -> String {
    if let Ok(bin) = std::env::var("MAILTRIAGE_TEST_OPENSSL") {
        return bin;
    }
    if Path::new("/usr/bin/openssl").exists() {
        return "/usr/bin/openssl".into();
    }
    "openssl".into()
}

/// Run openssl with `args` in `dir`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let bin = openssl_binary();
    let output = Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("run {bin} (Debian's openssl package; or set MAILTRIAGE_TEST_OPENSSL): {e}")
        });
    if !output.status.success() {
        panic!(
            "{bin} {} failed ({}) in {}:\n{}{}",
            args.join(" "),
            output.status,
            dir.display(),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout),
        );
    }
}

/// The extensions of both certificates (an openssl config file: no
/// dependence on the system's openssl.cnf).
const OPENSSL_CNF: &str = r#"# mailtriage test CA (crates/testkit/src/ca.rs)
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"#;

/// A private CA and a server certificate for 127.0.0.1 / localhost signed
/// by it, in a temp dir that lives as long as this value.
pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    /// A fresh CA (its own key: unrelated to any other) named `name` (in
    /// its CN), and a server certificate it signed.
    pub fn new(name: &str) -> TestCa {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == ' '),
            "CA name {name:?}: letters, digits and spaces only"
        );
        let dir = tempfile::Builder::new()
            .prefix("mailtriage-ca-")
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temp dir for the test CA: {e}"));
        let d = dir.path();
        fs::write(d.join("openssl.cnf"), OPENSSL_CNF)
            .unwrap_or_else(|e| panic!("write {}: {e}", d.join("openssl.cnf").display()));
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let ca_subject = format!("/O=mailtriage tests/CN={name}");
        let mut args = vec!["req", "-x509", "-new", "-config", "openssl.cnf"];
        args.extend(ec);
        args.extend([
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3650",
            "-sha256",
            "-subj",
            &ca_subject,
            "-extensions",
            "v3_ca",
        ]);
        openssl(d, &args);

        let mut args = vec!["req", "-new", "-config", "openssl.cnf"];
        args.extend(ec);
        args.extend([
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/O=mailtriage tests/CN=127.0.0.1",
        ]);
        openssl(d, &args);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-CAserial",
                "ca.srl",
                "-days",
                "825",
                "-sha256",
                "-extfile",
                "openssl.cnf",
                "-extensions",
                "v3_server",
                "-out",
                "server.pem",
            ],
        );
        // Catch a bad certificate here rather than as a handshake error.
        openssl(
            d,
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-purpose",
                "sslserver",
                "server.pem",
            ],
        );
        let mut chain = fs::read(d.join("server.pem")).expect("read server.pem");
        chain.extend(fs::read(d.join("ca.pem")).expect("read ca.pem"));
        fs::write(d.join("server-chain.pem"), chain).expect("write server-chain.pem");
        TestCa { dir }
    }

    /// The CA certificate (PEM): what a client trusts (`ca_file`).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate alone (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server certificate followed by the CA certificate (PEM): what a
    /// server presents.
    pub fn server_chain(&self) -> PathBuf {
        self.dir.path().join("server-chain.pem")
    }

    /// The server's private key (PEM, PKCS#8, unencrypted).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// Copy the CA certificate, the server chain and key into `dir` as
    /// `ca.pem`, `server-chain.pem` and `server.key` (mode 0600 for the
    /// key), for a server that must outlive this value; returns `dir`.
    pub(crate) fn install(&self, dir: &Path) -> PathBuf {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        for (from, to) in [
            (self.ca_pem(), "ca.pem"),
            (self.server_chain(), "server-chain.pem"),
            (self.server_key(), "server.key"),
        ] {
            fs::copy(&from, dir.join(to)).unwrap_or_else(|e| {
                panic!("copy {} to {}: {e}", from.display(), dir.join(to).display())
            });
        }
        crate::server::set_mode(&dir.join("server.key"), 0o600);
        dir.to_path_buf()
    }
}

/// A rustls client config that trusts only the CA certificate(s) in `ca`.
fn client_config(ca: &Path) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Connect to 127.0.0.1:`port`, do a TLS handshake for the name
/// 127.0.0.1 trusting only `ca`, and return the server's first line (its
/// greeting) and the TLS version. Err with rustls's reason when the
/// certificate is refused.
pub fn tls_greeting(port: u16, ca: &Path) -> Result<(String, String), String> {
    let config = client_config(ca)?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP address is a server name");
    let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(StreamOwned::new(conn, tcp));
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("TLS greeting from 127.0.0.1:{port}: {e}"))?;
    let stream = reader.into_inner();
    let version = stream
        .conn
        .protocol_version()
        .map_or_else(|| "unknown".to_string(), |v| format!("{v:?}"));
    let _ = stream.sock.shutdown(Shutdown::Both);
    Ok((line.trim_end().to_string(), version))
}
