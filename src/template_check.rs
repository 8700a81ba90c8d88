//! Templates checked when the config loads (`check-config`, and the daemon
//! before it starts): every name a template uses must exist in what it is
//! rendered with, and it must render for sample cases of each kind. A typo
//! such as `{{ caseid }}`, or a value printed without a default where a case
//! may lack it, is then an error naming the file, the line and the name,
//! instead of an empty bracket in an agent's inbox.
//!
//! Pure: the samples are built from messages triaged with the config being
//! loaded, so the flags and fields are the operator's.

use minijinja::{Environment, Value};

use crate::case::{Case, Triage};
use crate::letter::{Attached, Letter, Origin};
use crate::message::Email;
use crate::record::CaseRecord;
use crate::route::Router;

/// What is wrong with one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// 1-based line in the template's file, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// A context a template is checked against, and what it stands for ("a
/// pickup complaint with every field").
#[derive(Debug, Clone)]
pub struct Sample {
    pub what: String,
    pub ctx: Value,
}

/// Checks template `name` of `env`, preceded by `offset` lines in its file.
/// The first sample must hold every value a template may use: a name it
/// lacks is unknown. Then the template must render for every sample.
pub fn check(
    env: &Environment<'_>,
    name: &str,
    offset: usize,
    samples: &[Sample],
) -> Result<(), Fault> {
    let template = env.get_template(name).map_err(|e| Fault {
        line: e.line().map(|l| l + offset),
        message: e.to_string(),
    })?;
    if let Some(full) = samples.first() {
        let mut used: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        used.sort();
        for path in used {
            if let Some(message) = unknown(&full.ctx, &path) {
                return Err(Fault {
                    line: line_of(template.source(), &path).map(|l| l + offset),
                    message,
                });
            }
        }
    }
    for sample in samples {
        if let Err(e) = template.render(&sample.ctx) {
            let what = match e.kind() {
                minijinja::ErrorKind::UndefinedError => {
                    "it prints a value that is not there: a misspelt name, or a value \
                     this case lacks (test it with {% if ... %}, or give a default with `or`)"
                        .to_string()
                }
                _ => e.to_string(),
            };
            return Err(Fault {
                line: e.line().map(|l| l + offset),
                message: format!("cannot render for {}: {what}", sample.what),
            });
        }
    }
    Ok(())
}

/// Why `path` (`caseid`, `fields.custmer_name`) names nothing in `ctx`,
/// listing what there is; `None` when it exists (or cannot be told: a name
/// inside a list's items).
fn unknown(ctx: &Value, path: &str) -> Option<String> {
    let mut value = ctx.clone();
    let mut seen = String::new();
    for part in path.split('.') {
        if value.kind() != minijinja::value::ValueKind::Map {
            return None;
        }
        let next = value.get_attr(part).unwrap_or(Value::UNDEFINED);
        if next.is_undefined() {
            let names = keys(&value).join(", ");
            return Some(if seen.is_empty() {
                format!("unknown name {path:?}: the names a template here can use are {names}")
            } else {
                format!("unknown name {path:?}: {seen} has {names}")
            });
        }
        if !seen.is_empty() {
            seen.push('.');
        }
        seen.push_str(part);
        value = next;
    }
    None
}

fn keys(map: &Value) -> Vec<String> {
    let mut out: Vec<String> = map
        .try_iter()
        .map(|it| it.map(|k| k.to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The first line of `source` (1-based) that uses `path` as a name.
fn line_of(source: &str, path: &str) -> Option<usize> {
    let is_name = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    source
        .lines()
        .position(|line| {
            line.match_indices(path).any(|(i, _)| {
                let before = line[..i].chars().next_back();
                let after = line[i + path.len()..].chars().next();
                !before.is_some_and(is_name) && !after.is_some_and(|c| is_name(c) && c != '.')
            })
        })
        .map(|i| i + 1)
}

/// Sample messages, one of each escalation kind with every field the
/// templates can see, and one with none.
const FULL: &[(&str, &str)] = &[
    (
        "a pickup complaint with every field",
        "From: Ravi Kumar <ravi.k@example.com>\r\nSubject: Pickup complaint - vendor rude, customer threatens Trustpilot (Order #CK640218)\r\nDate: Sun, 22 Nov 2026 19:03:00 +0530\r\nMessage-ID: <sample.pickup@mail.example.com>\r\nReferences: <older@mail.example.com>\r\n\r\nCategory: Customer Pickup Complaint\r\nOrder ID / Lead ID: CK640218\r\nCustomer Name: Priya Sharma\r\nPhone Number: 98765 43210\r\nDevice Info: iPhone 11, 64GB, White\r\nPickup Slot/Date: 22 Nov 2026, 4:00 PM - 6:00 PM\r\nIssue Summary: Vendor rude during inspection\r\nIssue: Vendor raised his voice; she will post a one-star review on Trustpilot.\r\nPromised By: Sales Team\r\nCustomer Mood: Upset\r\nSuggested Resolution: Call her back today\r\nVendor: SwiftCollect Services (VND-1187)\r\nTicket ID: 55821\r\nRisk Rating: 5\r\nStatus: Escalated\r\nRemarks: Vendor to be warned\r\n\r\n#vendor_warned\r\n",
    ),
    (
        "an incorrect promise",
        "From: Deepa R <deepa.r@example.com>\r\nSubject: Escalation - Incorrect Promise Made to User (Order #CK552019)\r\nDate: Mon, 23 Nov 2026 11:40:00 +0530\r\nMessage-ID: <sample.promise@mail.example.com>\r\n\r\nCustomer Name: Sunita Verma\r\nOrder ID / Lead ID: CK552019\r\nPhone Number: 98111 22334\r\nDevice: iPhone 12, 128GB, Blue\r\nIssue:\r\nUser was promised 12,500 but the quote is 9,800.\r\nPromised By (If Known): Sales Team\r\nCustomer Mood: Upset\r\nSuggested Resolution:\r\nApprove 11,000 as goodwill.\r\n",
    ),
    (
        "an escalation",
        "From: agent@example.com\r\nSubject: Escalation: customer says we are a scam\r\nMessage-ID: <sample.escalation@mail.example.com>\r\n\r\nCustomer Name: Rahul\r\nOrder ID: CK1\r\nIssue: The customer says we are a scam and will call a lawyer.\r\n",
    ),
];

/// The sparse sample: an escalation with nothing but a sender and a
/// subject (no name, no date, no Message-ID, no fields).
const SPARSE: (&str, &str) = (
    "an escalation with no fields, date or Message-ID",
    "From: agent@example.com\r\nSubject: Escalation\r\n\r\nPlease help, details to follow.\r\n",
);

/// The sample messages, triaged with `triage`.
fn sample_cases(triage: &Triage) -> Vec<(&'static str, Email, Case)> {
    FULL.iter()
        .chain(std::iter::once(&SPARSE))
        .filter_map(|(what, raw)| {
            let (email, case) = triage.parse(raw.as_bytes()).ok()?;
            Some((*what, email, case))
        })
        .collect()
}

/// Contexts for the templates of replies and forwards: each sample as a new
/// case, as a forward (its original attached as a message, or as a file),
/// and as a message joining another sample's case; the full ones with an
/// owner and a time to answer by, the sparse one with neither. The first
/// has every value.
pub fn letter_samples(triage: &Triage, router: &Router) -> Vec<Sample> {
    let cases = sample_cases(triage);
    let mut out = Vec::new();
    let Some((_, first_email, _)) = cases.first() else {
        return out;
    };
    let origin = Origin::of(first_email);
    let attached = [
        (
            "attached as a file",
            Attached::File("it has a line longer than 998 characters"),
        ),
        ("attached as a message", Attached::Message),
        ("", Attached::Nothing),
    ];
    let received: jiff::Timestamp = jiff::Timestamp::from_second(1_764_000_000).unwrap_or_default();
    for (n, (what, email, case)) in cases.iter().enumerate() {
        let sparse = n + 1 == cases.len();
        let timed = |letter: &mut Letter<'_>| {
            if !sparse {
                letter.received_at = Some(received);
                letter.respond_within = Some(std::time::Duration::from_secs(2 * 3600));
                letter.now = Some(received);
                letter.owners = vec!["Tier 2".into(), "the CX team".into()];
            }
        };
        for (how, attached) in attached {
            let mut letter = Letter::new("ESC-2026-000123", Some("ops"), case, email);
            letter.attached = attached;
            letter.origin = Some(origin);
            timed(&mut letter);
            let what = match how {
                "" => format!("{what}, joining a case"),
                how => format!("{what}, {how}"),
            };
            out.push(Sample {
                what,
                ctx: crate::letter::context("sample-rule", &letter, router),
            });
        }
        let mut letter = Letter::new("ESC-2026-000123", Some("ops"), case, email);
        timed(&mut letter);
        out.push(Sample {
            what: format!("{what}, opening its case"),
            ctx: crate::letter::context("sample-rule", &letter, router),
        });
    }
    out
}

fn record(case: &Case) -> CaseRecord {
    CaseRecord::new(
        "ESC-2026-000123".into(),
        "ops",
        1,
        1,
        jiff::Timestamp::from_second(1_764_000_000).unwrap_or_default(),
        case.clone(),
        None,
        vec![],
    )
}

/// Contexts for the overdue notice's template.
pub fn overdue_samples(triage: &Triage, router: &Router) -> Vec<Sample> {
    sample_cases(triage)
        .iter()
        .map(|(what, _, case)| Sample {
            what: format!("{what}, overdue"),
            ctx: crate::lifecycle::overdue_context(&record(case), "3 h", "2 h", &router.readers),
        })
        .collect()
}

/// Contexts for the repeat-vendor report's template: the sample cases
/// (every field first, the one without fields last) as one vendor's
/// complaints.
pub fn vendor_samples(triage: &Triage) -> Vec<Sample> {
    let records: Vec<CaseRecord> = sample_cases(triage)
        .iter()
        .enumerate()
        .map(|(i, (_, _, case))| {
            let mut r = record(case);
            r.id = format!("ESC-2026-{:06}", 121 + i);
            r
        })
        .collect();
    let zone = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap_or(jiff::tz::TimeZone::UTC);
    vec![Sample {
        what: "a vendor's third complaint".into(),
        ctx: crate::lifecycle::vendor_report_context(
            "SwiftCollect Services (VND-1187)",
            &records.iter().collect::<Vec<_>>(),
            30,
            "ESC-2026-000123",
            &zone,
            jiff::Timestamp::from_second(1_764_000_000).unwrap_or_default(),
        ),
    }]
}

/// Contexts for a digest's templates.
pub fn digest_samples() -> Vec<Sample> {
    crate::digest::sample_contexts()
        .into_iter()
        .map(|(what, ctx)| Sample { what, ctx })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(source: &str) -> Environment<'static> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        env.add_template_owned("t", source.to_string()).unwrap();
        env
    }

    fn samples() -> Vec<Sample> {
        vec![
            Sample {
                what: "full".into(),
                ctx: minijinja::context! { case_id => "ESC-1", fields => minijinja::context! { order_id => "CK1", phone => "98" } },
            },
            Sample {
                what: "sparse".into(),
                ctx: minijinja::context! { case_id => "ESC-1", fields => minijinja::context! {} },
            },
        ]
    }

    #[test]
    fn templates_are_held_to_their_samples() {
        // (template, offset, expected line, expected fragment; "" for ok)
        let cases: &[(&str, usize, Option<usize>, &str)] = &[
            ("logged as {{ case_id }}.", 0, None, ""),
            (
                "a\nlogged as {{ caseid }}.",
                2,
                Some(4),
                "unknown name \"caseid\": the names a template here can use are case_id, fields",
            ),
            (
                "{% if x %}{{ case_id }}{% endif %}",
                0,
                Some(1),
                "unknown name \"x\"",
            ),
            (
                "{{ fields.order_idd or '-' }}",
                0,
                Some(1),
                "unknown name \"fields.order_idd\": fields has order_id, phone",
            ),
            ("{{ fields.phone or '-' }}", 0, None, ""),
            (
                "{% if fields.phone %}{{ fields.phone }}{% endif %}",
                0,
                None,
                "",
            ),
            (
                "\n\n{{ fields.phone }}",
                0,
                Some(3),
                "cannot render for sparse: it prints a value that is not there",
            ),
            (
                "{% for f in flags_x %}{% endfor %}",
                0,
                Some(1),
                "unknown name \"flags_x\"",
            ),
            (
                "{% macro m() %}{{ nope }}{% endmacro %}",
                0,
                Some(1),
                "unknown name \"nope\"",
            ),
        ];
        for (source, offset, line, want) in cases {
            let got = check(&env(source), "t", *offset, &samples());
            match (got, want.is_empty()) {
                (Ok(()), true) => {}
                (Err(f), false) => {
                    assert!(f.message.contains(want), "{source:?}: {}", f.message);
                    assert_eq!(f.line, *line, "{source:?}: {}", f.message);
                }
                (got, _) => panic!("{source:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn the_first_letter_sample_has_every_field() {
        let config = crate::config::Config::builtin().unwrap();
        let samples = letter_samples(&config.triage, &config.router);
        assert!(samples.len() >= 16, "{}", samples.len());
        let fields = samples[0].ctx.get_attr("fields").unwrap();
        for f in crate::extract::Field::ALL {
            assert!(
                !fields.get_attr(f.name()).unwrap().is_undefined(),
                "the full sample lacks {}",
                f.name()
            );
        }
        for name in [
            "date",
            "from_name",
            "message_id",
            "origin",
            "original",
            "received",
            "respond_by",
            "respond_within",
            "owner",
            "deadline",
        ] {
            assert!(
                !samples[0].ctx.get_attr(name).unwrap().is_undefined(),
                "{name}"
            );
        }
        assert!(
            !samples[0]
                .ctx
                .get_attr("original")
                .unwrap()
                .get_attr("why")
                .unwrap()
                .is_undefined()
        );
    }
}
