//! A digest's config: a `[digests.NAME]` section of routing.toml, checked
//! as it is read.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::calendar::{Schedule, time_zone};

/// A `[digests.NAME]` section of routing.toml. Values that must be checked
/// against something else (address names, templates, the schedule against
/// its zone) keep their place in the file for the error message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestSpec {
    /// Addresses or names from `[addresses]`.
    pub to: Vec<Spanned<String>>,
    /// The digest in words, for its subject and heading ("Daily
    /// escalations"); default: the name, with spaces for underscores.
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// A [`Schedule`] form; none: the digest is not sent on a schedule.
    #[serde(default)]
    pub schedule: Option<Spanned<String>>,
    /// IANA name; default "UTC".
    #[serde(default)]
    pub time_zone: Option<Spanned<String>>,
    /// Templates `NAME.txt` and `NAME.html`; default "digest".
    #[serde(default)]
    pub template: Option<Spanned<String>>,
}

/// A config value that is wrong, with its place (a byte range of the file)
/// when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub span: Option<Range<usize>>,
    pub message: String,
}

impl DigestSpec {
    pub fn time_zone_name(&self) -> &str {
        self.time_zone
            .as_ref()
            .map_or("UTC", |t| t.get_ref().as_str())
    }

    /// The title, or `name` in words (`managers_daily`: "Managers daily").
    pub fn title(&self, name: &str) -> String {
        self.title
            .as_deref()
            .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| crate::classify::default_label(name))
    }

    pub fn template_name(&self) -> &str {
        self.template
            .as_ref()
            .map_or("digest", |t| t.get_ref().as_str())
    }

    /// Checks the time zone and parses the schedule (None when there is no
    /// schedule).
    pub fn schedule(&self) -> Result<Option<Schedule>, SpecError> {
        if let Some(tz) = &self.time_zone {
            time_zone(tz.get_ref()).map_err(|e| SpecError {
                span: Some(tz.span()),
                message: e.to_string(),
            })?;
        }
        self.schedule
            .as_ref()
            .map(|s| {
                Schedule::parse(s.get_ref(), self.time_zone_name()).map_err(|e| SpecError {
                    span: Some(s.span()),
                    message: e.to_string(),
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::calendar::testing::NY;

    #[test]
    fn digest_spec_from_toml() {
        #[derive(Deserialize)]
        struct File {
            digests: BTreeMap<String, DigestSpec>,
        }
        let text = r#"
[digests.managers_daily]
to = ["managers"]
title = "  Daily   escalations "
description = "Every escalation of the day"
schedule = "daily 08:00"
time_zone = "America/New_York"
template = "digest"

[digests.bare]
to = ["a@example.com"]
"#;
        let f: File = toml::from_str(text).expect("valid");
        let d = &f.digests["managers_daily"];
        assert_eq!(d.to[0].get_ref(), "managers");
        assert_eq!(d.time_zone_name(), NY);
        assert_eq!(d.template_name(), "digest");
        assert_eq!(d.title("managers_daily"), "Daily escalations");
        let s = d.schedule().expect("valid").expect("scheduled");
        assert_eq!(s, Schedule::parse("daily 08:00", NY).expect("valid"));
        let bare = &f.digests["bare"];
        assert_eq!(bare.time_zone_name(), "UTC");
        assert_eq!(bare.schedule(), Ok(None));
        assert_eq!(bare.title("bare"), "Bare");
        assert_eq!(bare.title("managers_daily"), "Managers daily");

        let bad = "[digests.x]\nto = []\nschedule = \"daily 8pm\"\ntime_zone = \"UTC\"\n";
        let f: File = toml::from_str(bad).expect("parses");
        let err = f.digests["x"].schedule().expect_err("bad schedule");
        assert_eq!(&bad[err.span.clone().expect("span")], "\"daily 8pm\"");
        assert!(
            err.message.contains("expected a time from 00:00 to 23:59"),
            "{err}"
        );
        let bad = "[digests.x]\nto = []\ntime_zone = \"Nowhere\"\n";
        let f: File = toml::from_str(bad).expect("parses");
        let err = f.digests["x"].schedule().expect_err("bad zone");
        assert_eq!(&bad[err.span.clone().expect("span")], "\"Nowhere\"");

        let unknown = "[digests.x]\nto = []\nshedule = \"daily 08:00\"\n";
        let err = toml::from_str::<File>(unknown)
            .err()
            .expect("unknown field");
        assert!(err.message().contains("unknown field `shedule`"), "{err}");
    }
}
