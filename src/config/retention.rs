//! `[retention]` in mailtriage.toml: how long the daemon keeps what it
//! stores (the bytes of delivered mail, resolved cases, the record of each
//! message processed) and where resolved cases go when it stops keeping
//! them. Every key has a default; the table may be left out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::values::HumanDuration;

const DAY: u64 = 86_400;

/// `[retention]` in mailtriage.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// How long the bytes of delivered mail are kept (default 30 days).
    pub keep_sent: Option<HumanDuration>,
    /// How long a resolved case stays in the database (default 400 days).
    pub keep_resolved: Option<HumanDuration>,
    /// How long each processed message is remembered (default 90 days).
    pub keep_seen: Option<Spanned<HumanDuration>>,
    /// The archive file; default `archive.jsonl` beside the database, and a
    /// relative path is taken from the database's directory too.
    pub archive: Option<PathBuf>,
}

impl RetentionSection {
    pub const KEEP_SENT: Duration = Duration::from_secs(30 * DAY);
    pub const KEEP_RESOLVED: Duration = Duration::from_secs(400 * DAY);
    pub const KEEP_SEEN: Duration = Duration::from_secs(90 * DAY);

    pub fn keep_sent(&self) -> Duration {
        self.keep_sent.map_or(Self::KEEP_SENT, |d| d.0)
    }

    pub fn keep_resolved(&self) -> Duration {
        self.keep_resolved.map_or(Self::KEEP_RESOLVED, |d| d.0)
    }

    pub fn keep_seen(&self) -> Duration {
        self.keep_seen
            .as_ref()
            .map_or(Self::KEEP_SEEN, |d| d.get_ref().0)
    }

    /// The archive file of the database at `database` (a directory).
    pub fn archive_path(&self, database: &Path) -> PathBuf {
        let beside = database.parent().unwrap_or(Path::new(""));
        match &self.archive {
            Some(p) => beside.join(p),
            None => beside.join("archive.jsonl"),
        }
    }

    /// A `keep_seen` too short for the rescan rule (see
    /// [`crate::rescan`]): its place and what is expected.
    pub(super) fn check(&self) -> Option<(std::ops::Range<usize>, String)> {
        let seen = self.keep_seen.as_ref()?;
        (seen.get_ref().0 < crate::rescan::MIN_KEEP_SEEN).then(|| {
            (
                seen.span(),
                format!(
                    "[retention] keep_seen: expected at least {} days, so that mail still on the server is recognised after UIDVALIDITY changes",
                    crate::rescan::MIN_KEEP_SEEN.as_secs() / DAY
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Settings;

    const BASE: &str = r#"
[daemon]
domain = "mailtriage.example.com"
allow_senders = ["example.com"]

[smtp]
host = "127.0.0.1"
port = 25
tls = "plain"
from = "mailtriage@example.com"

[[mailbox]]
name = "ops"
host = "127.0.0.1"
port = 143
tls = "plain"
user = "ops@example.com"
password = { env = "X" }
mark_seen = true
quarantine = "Quarantine"
"#;

    #[test]
    fn retention_is_read_with_its_defaults_and_checked() {
        const DAY: u64 = 86_400;
        let db = Path::new("/var/lib/mailtriage/db");
        let file = Path::new("/etc/mailtriage/mailtriage.toml");
        // (table, Ok((keep_sent, keep_resolved, keep_seen, archive)) or the error)
        type Want = Result<(u64, u64, u64, &'static str), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("", Ok((30, 400, 90, "/var/lib/mailtriage/archive.jsonl"))),
            (
                "[retention]\nkeep_sent = \"7d\"\nkeep_resolved = \"2w\"\nkeep_seen = \"30 days\"\narchive = \"/srv/cases.jsonl\"\n",
                Ok((7, 14, 30, "/srv/cases.jsonl")),
            ),
            (
                "[retention]\narchive = \"old/cases.jsonl\"\n",
                Ok((30, 400, 90, "/var/lib/mailtriage/old/cases.jsonl")),
            ),
            (
                "[retention]\nkeep_seen = \"6d\"\n",
                Err(
                    "/etc/mailtriage/mailtriage.toml:23:13: [retention] keep_seen: expected at least 7 days, so that mail still on the server is recognised after UIDVALIDITY changes",
                ),
            ),
            (
                "[retention]\nkeep_sent = \"a month\"\n",
                Err("/etc/mailtriage/mailtriage.toml:23:13: expected a duration"),
            ),
            (
                "[retention]\nkeep_forever = true\n",
                Err("/etc/mailtriage/mailtriage.toml:23:1: unknown field `keep_forever`"),
            ),
        ];
        for (table, want) in cases {
            let text = format!("{BASE}\n{table}");
            let got = Settings::parse(file, &text).map(|s| {
                let r = &s.retention;
                (
                    r.keep_sent().as_secs() / DAY,
                    r.keep_resolved().as_secs() / DAY,
                    r.keep_seen().as_secs() / DAY,
                    r.archive_path(db).display().to_string(),
                )
            });
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!((got.0, got.1, got.2, got.3.as_str()), *want, "{table}")
                }
                (Err(e), Err(want)) => {
                    assert!(e.to_string().starts_with(want), "{table}: {e}")
                }
                (got, want) => panic!("{table}: {got:?}, expected {want:?}"),
            }
        }
        assert_eq!(
            super::RetentionSection::default().keep_seen(),
            Duration::from_secs(90 * DAY)
        );
    }
}
