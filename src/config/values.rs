//! The values the config writes in words: durations (`10m`), sizes
//! (`25MB`), and where a secret comes from (never the secret itself).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where a secret comes from. The config names the source, never the
/// secret, so that the file can be shared and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A systemd credential (`LoadCredentialEncrypted=` or
    /// `LoadCredential=`): the file of that name in
    /// `$CREDENTIALS_DIRECTORY`.
    Credential(String),
    File(PathBuf),
    Env(String),
    /// A command whose standard output (trimmed) is the secret, run each
    /// time it is needed: the way to get fresh OAuth 2 access tokens.
    Command(Vec<String>),
}

/// The sources, as written in the config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum SecretSource {
    Credential(String),
    File(PathBuf),
    Env(String),
    Command(Vec<String>),
}

const SECRET_FORMS: &str = "{ credential = \"NAME\" }, { file = \"/path\" }, { env = \"VARIABLE\" } or { command = [\"prog\", \"arg\"] }";

impl<'de> Deserialize<'de> for Secret {
    /// A secret written as a literal string is refused without repeating
    /// it: the error goes to terminals and the journal.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Source(toml::Table),
            // Held only to be refused: never kept, never shown.
            Literal(serde::de::IgnoredAny),
        }
        match Raw::deserialize(d)? {
            Raw::Literal(_) => Err(serde::de::Error::custom(format!(
                "a secret is never written into the config (the value was not read back): name where it comes from, {SECRET_FORMS}"
            ))),
            Raw::Source(table) => {
                let source = SecretSource::deserialize(toml::Value::Table(table)).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "expected one of {SECRET_FORMS}: {}",
                        e.message().trim()
                    ))
                })?;
                Ok(match source {
                    SecretSource::Credential(n) => Secret::Credential(n),
                    SecretSource::File(p) => Secret::File(p),
                    SecretSource::Env(v) => Secret::Env(v),
                    SecretSource::Command(c) => Secret::Command(c),
                })
            }
        }
    }
}

impl Secret {
    /// Reads the secret now.
    pub fn read(&self) -> Result<String, SecretError> {
        let value = match self {
            Secret::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory { name: name.clone() })?;
                let path = Path::new(&dir).join(name);
                std::fs::read_to_string(&path).map_err(|source| SecretError::Credential {
                    name: name.clone(),
                    path: path.clone(),
                    source,
                })?
            }
            Secret::File(path) => {
                std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?
            }
            Secret::Env(var) => std::env::var(var).map_err(|source| SecretError::Env {
                var: var.clone(),
                source,
            })?,
            Secret::Command(argv) => {
                let (prog, args) = argv.split_first().ok_or(SecretError::EmptyCommand)?;
                let out = std::process::Command::new(prog)
                    .args(args)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|source| SecretError::Command {
                        prog: prog.clone(),
                        source,
                    })?;
                if !out.status.success() {
                    return Err(SecretError::CommandFailed {
                        prog: prog.clone(),
                        status: out.status,
                    });
                }
                String::from_utf8(out.stdout).map_err(|e| SecretError::CommandOutput {
                    prog: prog.clone(),
                    source: e.utf8_error(),
                })?
            }
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(SecretError::Empty(self.clone()));
        }
        Ok(value)
    }
}

/// Why a secret could not be read. The messages name the source, never
/// what was read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "credential {name:?}: $CREDENTIALS_DIRECTORY is not set (LoadCredentialEncrypted= or LoadCredential= in the unit)"
    )]
    NoCredentialsDirectory { name: String },
    #[error("credential {name:?} ({}): {source}", .path.display())]
    Credential {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {}: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("environment variable {var}: {source}")]
    Env {
        var: String,
        #[source]
        source: std::env::VarError,
    },
    #[error("secret command is empty")]
    EmptyCommand,
    #[error("secret command {prog:?}: {source}")]
    Command {
        prog: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret command {prog:?} exited with {status}")]
    CommandFailed {
        prog: String,
        status: std::process::ExitStatus,
    },
    #[error("secret command {prog:?} printed non-UTF-8")]
    CommandOutput {
        prog: String,
        /// Where the text stops being UTF-8; not the bytes, which may be
        /// the secret.
        #[source]
        source: std::str::Utf8Error,
    },
    #[error("{0:?} is empty")]
    Empty(Secret),
}

/// A duration written as `90s`, `10m`, `2h`, `1h 30m`, or in days and
/// weeks of 24 hours (`30d`, `2w`) (not `Duration`: it stands beside std's
/// wherever the config is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parsed = s.parse::<jiff::SignedDuration>().or_else(|e| {
            // Days and weeks are not in SignedDuration's units; a span
            // counts them as 24 hours (months and years stay refused).
            s.parse::<jiff::Span>()
                .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
                .map_err(|_| e)
        });
        let parsed = parsed.map_err(|e| {
            serde::de::Error::custom(format!(
                "expected a duration such as \"90s\", \"10m\", \"1h 30m\" or \"30d\", found {s:?} ({e})"
            ))
        })?;
        if parsed.is_negative() {
            return Err(serde::de::Error::custom(format!(
                "expected a positive duration, found {s:?}"
            )));
        }
        Ok(HumanDuration(parsed.unsigned_abs()))
    }
}

/// A size written as `25MB`, `512KB` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!(
                "expected a size such as \"25MB\", \"512KB\" or a number of bytes, found {s:?}"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => {
                let t = s.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let n: u64 = t[..split].parse().map_err(|_| bad(&s))?;
                let mult = match t[split..].trim().to_ascii_uppercase().as_str() {
                    "" | "B" => 1,
                    "KB" | "K" | "KIB" => 1 << 10,
                    "MB" | "M" | "MIB" => 1 << 20,
                    "GB" | "G" | "GIB" => 1 << 30,
                    _ => return Err(bad(&s)),
                };
                n.checked_mul(mult).map(Size).ok_or_else(|| bad(&s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_trimmed_and_errors_never_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret\n").unwrap();
        let blank = dir.path().join("blank");
        std::fs::write(&blank, " \n").unwrap();
        let missing = dir.path().join("missing");
        let command = |script: &str| Secret::Command(vec!["sh".into(), "-c".into(), script.into()]);
        let cases: Vec<(Secret, Result<&str, String>)> = vec![
            (Secret::File(file), Ok("s3cret")),
            (command("printf ' s3cret '"), Ok("s3cret")),
            (
                Secret::File(blank.clone()),
                Err(format!("File({blank:?}) is empty")),
            ),
            (
                Secret::File(missing.clone()),
                Err(format!(
                    "secret file {}: No such file or directory (os error 2)",
                    missing.display()
                )),
            ),
            (
                Secret::Env("MAILTRIAGE_TEST_UNSET_VARIABLE".into()),
                Err("environment variable MAILTRIAGE_TEST_UNSET_VARIABLE: environment variable not found".into()),
            ),
            (Secret::Command(vec![]), Err("secret command is empty".into())),
            (
                command("printf s3cret; exit 3"),
                Err("secret command \"sh\" exited with exit status: 3".into()),
            ),
            (
                command("printf 's3cret\\377'"),
                Err("secret command \"sh\" printed non-UTF-8".into()),
            ),
        ];
        for (secret, want) in cases {
            let got = secret.read().map_err(|e| {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("s3cret"), "{shown}");
                e.to_string()
            });
            assert_eq!(
                got.as_deref().map_err(String::as_str),
                want.as_deref().map_err(String::as_str),
                "{secret:?}"
            );
        }
    }

    #[test]
    fn durations_and_sizes_are_read_as_written() {
        #[derive(Deserialize)]
        struct D {
            d: HumanDuration,
        }
        let durations: &[(&str, Option<u64>)] = &[
            ("\"90s\"", Some(90)),
            ("\"10m\"", Some(600)),
            ("\"1h 30m\"", Some(5400)),
            ("\"30d\"", Some(30 * 86_400)),
            ("\"400 days\"", Some(400 * 86_400)),
            ("\"2w 1d\"", Some(15 * 86_400)),
            ("\"1d 12h\"", Some(36 * 3600)),
            ("\"1 month\"", None),
            ("\"1y\"", None),
            ("\"-5m\"", None),
            ("\"soon\"", None),
            ("90", None),
        ];
        for (text, want) in durations {
            let got = toml::from_str::<D>(&format!("d = {text}")).map(|d| d.d.0.as_secs());
            assert_eq!(got.ok(), *want, "{text}");
        }
        #[derive(Deserialize)]
        struct S {
            s: Size,
        }
        let sizes: &[(&str, Option<u64>)] = &[
            ("1024", Some(1024)),
            ("\"512KB\"", Some(512 << 10)),
            ("\"25 MB\"", Some(25 << 20)),
            ("\"2g\"", Some(2 << 30)),
            ("\"10B\"", Some(10)),
            ("\"25TB\"", None),
            ("\"MB\"", None),
            ("\"99999999999999999999GB\"", None),
        ];
        for (text, want) in sizes {
            let got = toml::from_str::<S>(&format!("s = {text}")).map(|s| s.s.0);
            assert_eq!(got.ok(), *want, "{text}");
        }
    }
}
