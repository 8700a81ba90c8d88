//! The deadline an agent wrote into an escalation ("if the pickup does not
//! happen tomorrow morning", "update here by EOD"), found so that a
//! forward can say it on its first lines instead of leaving it in the
//! attachment.
//!
//! Pure. The standard formats have no deadline field, so agents write it
//! into their sentences; this finds the first sentence of the issue, the
//! suggested resolution, the customer's mood or the summary that names a
//! time limit, and returns it shortened.

use std::sync::OnceLock;

use regex::Regex;

use crate::extract::Fields;

/// The longest deadline sentence quoted, in characters.
const MAX: usize = 120;

/// Time limits as agents write them, on word boundaries, any case.
fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?ix)\b(
                by\s+(eod|end\s+of\s+(the\s+)?day|tonight|today|tomorrow|noon|monday|tuesday|wednesday|thursday|friday|saturday|sunday|\d{1,2}(:\d{2})?\s*(am|pm|hrs)?)
              | before\s+(noon|eod|\d{1,2}(:\d{2})?\s*(am|pm)?|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday)
              | within\s+(\d+|an?|one|two|three|24|48|72)\s*(hours?|hrs?|days?|minutes?|mins?)
              | (day\s+after\s+)?tomorrow(\s+(morning|noon|afternoon|evening))?
              | tonight
              | (later\s+)?today
              | this\s+(week|evening|afternoon|morning)
              | eod
              | asap
              | immediately
              | deadline
            )\b",
        )
        .unwrap_or_else(|_| Regex::new(r"\bdeadline\b").expect("a fixed pattern"))
    })
}

/// Openings that merely report when something happened ("reported on the
/// support line today", "called again today") rather than set a limit:
/// a sentence whose only time words are these is not a deadline.
const REPORTING: &[&str] = &[
    "reported",
    "called again",
    "called today",
    "escalating",
    "came today",
];

/// The agent's deadline, if the escalation names one: the first sentence
/// with a time limit, shortened to a line.
pub fn deadline(fields: &Fields) -> Option<String> {
    let texts = [
        fields.suggested_resolution.as_deref(),
        fields.issue.as_deref(),
        fields.customer_mood.as_deref(),
        fields.issue_summary.as_deref(),
    ];
    for text in texts.into_iter().flatten() {
        for sentence in sentences(text) {
            let lower = sentence.to_lowercase();
            let Some(m) = pattern().find(&lower) else {
                continue;
            };
            let only_reporting = m.as_str().ends_with("today")
                && !lower.contains("by today")
                && REPORTING.iter().any(|r| lower.contains(r));
            if !only_reporting {
                return Some(crate::text::shorten(&sentence, MAX));
            }
        }
    }
    None
}

/// Sentences of a field: agents hard-wrap their lines mid-sentence, so the
/// lines are joined first, then split after `.`, `!` or `?` and a space.
fn sentences(text: &str) -> Vec<String> {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = joined.as_bytes();
    for i in 0..bytes.len() {
        if matches!(bytes[i], b'.' | b'!' | b'?') && bytes.get(i + 1) == Some(&b' ') {
            out.push(joined[start..=i].trim().to_string());
            start = i + 1;
        }
    }
    out.push(joined[start..].trim().to_string());
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(text: &str) -> Fields {
        Fields {
            issue: Some(text.to_string()),
            ..Fields::default()
        }
    }

    #[test]
    fn deadlines_as_agents_write_them() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "We rescheduled her pickup twice. She says she will post a one-star review on Trustpilot if the pickup does not happen tomorrow morning.",
                Some(
                    "She says she will post a one-star review on Trustpilot if the pickup does not happen tomorrow morning.",
                ),
            ),
            (
                "Finance team, please check the UTR and update here by EOD.",
                Some("Finance team, please check the UTR and update here by EOD."),
            ),
            (
                "Please assign a priority slot before 10 AM.",
                Some("Please assign a priority slot before 10 AM."),
            ),
            (
                "He is threatening BBB unless a technician is booked within 48 hours.",
                Some("He is threatening BBB unless a technician is booked within 48 hours."),
            ),
            ("Call back ASAP", Some("Call back ASAP")),
            (
                "Escalating a bad pickup experience reported on the support line today.",
                None,
            ),
            ("Vendor came three hours late and was rude.", None),
            ("The customer is from Tomorrowland Electronics.", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(deadline(&issue(text)).as_deref(), *want, "{text:?}");
        }
    }

    #[test]
    fn the_suggested_resolution_comes_first_and_long_sentences_are_shortened() {
        let f = Fields {
            issue: Some("She wants it fixed today.".into()),
            suggested_resolution: Some("Approve the price by 5 pm so we can call her back.".into()),
            ..Fields::default()
        };
        assert_eq!(
            deadline(&f).as_deref(),
            Some("Approve the price by 5 pm so we can call her back.")
        );
        let long = format!("{} by EOD.", "word ".repeat(40));
        let got = deadline(&issue(&long)).unwrap();
        assert!(got.chars().count() <= MAX && got.ends_with('…'), "{got}");
    }
}
