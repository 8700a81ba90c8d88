//! The client assertion of a certificate credential (RFC 7523, as
//! Microsoft Entra ID takes it): a JWT naming the client, for the token
//! endpoint, signed RS256 with the key of the certificate registered with
//! the provider, whose thumbprints (`x5t`, `x5t#S256`) it carries.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use ring::rand::SecureRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long an assertion is valid: Entra ID's own libraries use ten minutes.
const LIFETIME_SECONDS: i64 = 600;

/// Why no assertion could be made. Never shows the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the certificate is not a PEM certificate")]
    Certificate,
    #[error("the private key is not a PEM private key (PKCS#8 or PKCS#1)")]
    KeyFormat,
    #[error("the private key is not an RSA key of 2048 bits or more ({0}): Entra ID takes RS256")]
    KeyType(String),
    #[error("signing failed")]
    Sign,
}

/// The signed JWT for `client_id` at `audience` (the token URL), valid
/// from `now` for ten minutes, with the unique `jti`.
pub fn client_assertion(
    certificate_pem: &[u8],
    key_pem: &[u8],
    client_id: &str,
    audience: &str,
    now: Timestamp,
    jti: &str,
    rng: &dyn SecureRandom,
) -> Result<String, AssertionError> {
    let cert =
        CertificateDer::from_pem_slice(certificate_pem).map_err(|_| AssertionError::Certificate)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| AssertionError::KeyFormat)?;
    let pair = match &key {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return Err(AssertionError::KeyType("not RSA".into())),
    }
    .map_err(|e| AssertionError::KeyType(e.to_string()))?;
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
    let sha256 = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let header = serde_json::json!({
        "alg": "RS256",
        "typ": "JWT",
        "x5t": URL_SAFE_NO_PAD.encode(sha1.as_ref()),
        "x5t#S256": URL_SAFE_NO_PAD.encode(sha256.as_ref()),
    });
    let t = now.as_second();
    let claims = serde_json::json!({
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": jti,
        "iat": t,
        "nbf": t,
        "exp": t + LIFETIME_SECONDS,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        rng,
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| AssertionError::Sign)?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    fn openssl(dir: &std::path::Path, args: &[&str]) {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args:?}");
    }

    #[test]
    fn an_assertion_is_a_jwt_signed_by_the_certificates_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(d, &["genrsa", "-out", "key.pem", "2048"]);
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "key.pem",
                "-subj",
                "/CN=mailtriage",
                "-days",
                "2",
                "-out",
                "cert.pem",
            ],
        );
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ec.pem",
            ],
        );
        let cert = std::fs::read(d.join("cert.pem")).unwrap();
        let key = std::fs::read(d.join("key.pem")).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let jwt = client_assertion(
            &cert,
            &key,
            "app",
            "https://login.example.com/t",
            now,
            "j1",
            &rng,
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let json = |p: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        };
        let (header, claims) = (json(parts[0]), json(parts[1]));
        let der = CertificateDer::from_pem_slice(&cert).unwrap();
        let thumb = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t#S256"], URL_SAFE_NO_PAD.encode(thumb.as_ref()));
        assert_eq!(header["x5t"].as_str().map(str::len), Some(27));
        assert_eq!(claims["iss"], "app");
        assert_eq!(claims["sub"], "app");
        assert_eq!(claims["aud"], "https://login.example.com/t");
        assert_eq!(claims["jti"], "j1");
        assert_eq!(claims["exp"], 1_800_000_600);
        let pkcs8 = PrivateKeyDer::from_pem_slice(&key).unwrap();
        let pair = match &pkcs8 {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).unwrap(),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()).unwrap(),
            _ => panic!("RSA key"),
        };
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            pair.public_key().as_ref().to_vec(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .expect("the signature verifies with the certificate's key");

        let ec = std::fs::read(d.join("ec.pem")).unwrap();
        let cases: &[(&[u8], &[u8], AssertionError)] = &[
            (b"junk", &key, AssertionError::Certificate),
            (&cert, b"junk", AssertionError::KeyFormat),
            (&cert, &ec, AssertionError::KeyType("not RSA".into())),
        ];
        for (c, k, want) in cases {
            assert_eq!(
                client_assertion(c, k, "app", "aud", now, "j", &rng).as_ref(),
                Err(want)
            );
        }
    }
}
