//! A digest as mail: the templates' context, the text and HTML parts, and
//! the size the HTML must stay under. Pure.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use super::DigestError;
use super::data::{DigestData, DigestRow, VendorRow, one_line, shorten_issue};
use crate::calendar::time_zone;

/// The most HTML a digest may have, in bytes, as sent. Gmail shows a
/// message whose HTML is over 102 KB clipped ("[Message clipped] View
/// entire message"), hiding the rest behind a link that a phone opens in a
/// browser; 2 KB are left for what the way there may add. The HTML is made
/// ASCII (other characters become numeric references), which lettre sends
/// quoted-printable, and is measured so encoded (see [`sent_size`]): larger
/// than the HTML itself, so under the limit whichever of the two Gmail
/// counts. A digest that would be larger lists the most urgent cases that
/// fit and says how many more there are.
pub const HTML_MAX_BYTES: usize = 100 * 1024;

/// The size of an ASCII HTML part as the digest's mail carries it:
/// quoted-printable, with CRLF line ends.
pub fn sent_size(html: &str) -> usize {
    quoted_printable::encode(html.replace('\n', "\r\n")).len()
}

/// A rendered digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedDigest {
    pub subject: String,
    /// Lines of at most [`crate::text::WIDTH`] characters (a URL longer
    /// than that keeps a line of its own).
    pub text: String,
    /// ASCII, at most [`HTML_MAX_BYTES`] as sent (see [`sent_size`]).
    pub html: String,
    /// How many cases it lists (the rest are counted, not listed).
    pub listed: usize,
}

/// What the templates see: the data, plus what rendering derives. A value
/// that is not there is left out (not `none`), so that the template check
/// holds a template that prints it unguarded to account.
#[derive(Serialize)]
struct Context<'a> {
    name: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    time_zone: &'a str,
    /// "Thu 26 Nov, 08:00 IST".
    now_local: String,
    /// "Thu 26 Nov".
    date_local: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    since_local: Option<String>,
    summary: &'a Summary,
    /// The cases listed, most urgent first.
    cases: &'a [RowContext],
    /// The cases left out to stay under [`HTML_MAX_BYTES`].
    #[serde(skip_serializing_if = "Option::is_none")]
    more: Option<More>,
    repeat_vendors: &'a [VendorRow],
    /// Set for the HTML, from the text's subject line.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
}

/// The counts at the top of a digest.
#[derive(Serialize)]
struct Summary {
    open: usize,
    tier2: usize,
    /// Tier 2, then Tier 1 (both always), with the count per risk,
    /// highest first (risks with no case left out).
    tiers: Vec<TierCount>,
    overdue: usize,
    /// Cases whose agent has not yet sent the details asked for.
    waiting: usize,
    new: usize,
}

#[derive(Serialize)]
struct TierCount {
    tier: u8,
    count: usize,
    risks: Vec<RiskCount>,
}

#[derive(Serialize)]
struct RiskCount {
    risk: u8,
    count: usize,
}

#[derive(Serialize)]
struct More {
    count: usize,
    tier2: usize,
    overdue: usize,
}

/// One case as the templates see it.
#[derive(Clone, Serialize)]
struct RowContext {
    case_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer: Option<String>,
    issue: String,
    flags: Vec<String>,
    risk: u8,
    tier: u8,
    /// The status in words when it is not plain `open` ("high priority").
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    /// Since the agent sent it: "35 min", "5 h", "3 d".
    age: String,
    /// When the agent sent it: "Tue 24 Nov, 20:09 IST".
    sent_local: String,
    overdue: bool,
    /// Opened since the last digest.
    new: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    waiting_for: Vec<String>,
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn summary(data: &DigestData) -> Summary {
    // Tier by tier, risk by risk; both tiers always.
    let mut counts: BTreeMap<u8, BTreeMap<u8, usize>> =
        BTreeMap::from([(1, BTreeMap::new()), (2, BTreeMap::new())]);
    for r in &data.cases {
        *counts.entry(r.tier).or_default().entry(r.risk).or_default() += 1;
    }
    let tiers = counts
        .into_iter()
        .rev()
        .map(|(tier, risks)| TierCount {
            tier,
            count: risks.values().sum(),
            risks: risks
                .into_iter()
                .rev()
                .map(|(risk, count)| RiskCount { risk, count })
                .collect(),
        })
        .collect();
    Summary {
        open: data.cases.len(),
        tier2: data.cases.iter().filter(|r| r.tier >= 2).count(),
        tiers,
        overdue: data.cases.iter().filter(|r| r.overdue).count(),
        waiting: data
            .cases
            .iter()
            .filter(|r| !r.waiting_for.is_empty())
            .count(),
        new: data.cases.iter().filter(|r| data.is_new(r)).count(),
    }
}

fn row_context(data: &DigestData, row: &DigestRow, tz: &TimeZone) -> RowContext {
    let now = data.now;
    RowContext {
        case_id: row.case_id.clone(),
        order_id: one_line(row.order_id.as_deref()),
        customer: one_line(row.customer.as_deref()),
        issue: shorten_issue(&row.issue),
        flags: row.flags.clone(),
        risk: row.risk,
        tier: row.tier,
        status: (row.status != "open").then(|| row.status.replace('_', " ")),
        age: crate::text::age(crate::clock::seconds_between(row.sent_at, data.now)),
        sent_local: crate::text::local_time(row.sent_at, tz, now),
        overdue: row.overdue,
        new: data.is_new(row),
        vendor: one_line(row.vendor.as_deref()),
        owner: one_line(row.owner.as_deref()),
        waiting_for: row.waiting_for.clone(),
    }
}

/// What rendering derives once, whatever number of cases is listed.
struct Prepared<'a> {
    data: &'a DigestData,
    now_local: String,
    date_local: String,
    since_local: Option<String>,
    summary: Summary,
    rows: Vec<RowContext>,
}

impl<'a> Prepared<'a> {
    fn new(data: &'a DigestData) -> Result<Prepared<'a>, DigestError> {
        let tz = time_zone(&data.time_zone).map_err(|source| DigestError::Zone {
            digest: data.name.clone(),
            source,
        })?;
        let now = data.now;
        Ok(Prepared {
            data,
            now_local: crate::text::local_time(now, &tz, now),
            date_local: now.to_zoned(tz.clone()).strftime("%a %-d %b").to_string(),
            since_local: data.since.map(|s| crate::text::local_time(s, &tz, now)),
            summary: summary(data),
            rows: data
                .cases
                .iter()
                .map(|r| row_context(data, r, &tz))
                .collect(),
        })
    }

    /// The context listing the first `listed` cases.
    fn context(&self, listed: usize) -> Context<'_> {
        let listed = listed.min(self.rows.len());
        let rest = &self.data.cases[listed..];
        Context {
            name: &self.data.name,
            title: &self.data.title,
            description: self.data.description.as_deref(),
            time_zone: &self.data.time_zone,
            now_local: self.now_local.clone(),
            date_local: self.date_local.clone(),
            since_local: self.since_local.clone(),
            summary: &self.summary,
            cases: &self.rows[..listed],
            more: (!rest.is_empty()).then(|| More {
                count: rest.len(),
                tier2: rest.iter().filter(|r| r.tier >= 2).count(),
                overdue: rest.iter().filter(|r| r.overdue).count(),
            }),
            repeat_vendors: &self.data.repeat_vendors,
            subject: None,
        }
    }
}

/// Renders a digest with the templates `digest.txt` and `digest.html` of
/// `env` (see [`render_template`]).
pub fn render(
    env: &minijinja::Environment,
    data: &DigestData,
) -> Result<RenderedDigest, DigestError> {
    render_template(env, "digest", data)
}

/// Renders a digest with the templates `NAME.txt` (a `Subject:` line, a
/// blank line, the body) and `NAME.html` of `env`. Ages are computed from
/// `data.now`, issues shortened, times shown in `data.time_zone`; the text
/// is wrapped to [`crate::text::WIDTH`]; the HTML is escaped when `env`
/// auto-escapes `.html` names (minijinja's default) and made ASCII. When
/// the HTML of every case would be over [`HTML_MAX_BYTES`], the most
/// urgent cases that fit are listed, in both parts, and the templates see
/// the rest counted in `more`.
pub fn render_template(
    env: &minijinja::Environment,
    name: &str,
    data: &DigestData,
) -> Result<RenderedDigest, DigestError> {
    let prepared = Prepared::new(data)?;
    let render = |listed: usize| render_listing(env, name, &prepared, listed);
    let fits = |r: &RenderedDigest| sent_size(&r.html) <= HTML_MAX_BYTES;
    let all = render(data.cases.len())?;
    if fits(&all) {
        return Ok(all);
    }
    // The HTML grows with each case listed: the most that fit, by halves.
    let mut best = render(0)?;
    if !fits(&best) {
        return Ok(best);
    }
    let (mut fit, mut too_many) = (0, data.cases.len());
    while too_many - fit > 1 {
        let mid = fit + (too_many - fit) / 2;
        let r = render(mid)?;
        if fits(&r) {
            fit = mid;
            best = r;
        } else {
            too_many = mid;
        }
    }
    Ok(best)
}

fn render_listing(
    env: &minijinja::Environment,
    name: &str,
    prepared: &Prepared<'_>,
    listed: usize,
) -> Result<RenderedDigest, DigestError> {
    let mut ctx = prepared.context(listed);
    let run = |template: &str, ctx: &Context<'_>| -> Result<String, DigestError> {
        env.get_template(template)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(ctx))))
            .map_err(|source| DigestError::Template {
                template: template.to_string(),
                source,
            })
    };
    let txt_name = format!("{name}.txt");
    let text = run(&txt_name, &ctx)?;
    let (first, body) = text.split_once('\n').unwrap_or((&text, ""));
    let Some(subject) = first.strip_prefix("Subject:") else {
        return Err(DigestError::NoSubject { template: txt_name });
    };
    let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    ctx.subject = Some(&subject);
    let html = ascii_html(&run(&format!("{name}.html"), &ctx)?);
    let listed = ctx.cases.len();
    Ok(RenderedDigest {
        text: crate::text::wrap_text(&tidy(body), crate::text::WIDTH),
        subject,
        html,
        listed,
    })
}

/// HTML in ASCII: every other character as a numeric character reference,
/// so that the part goes quoted-printable (never base64), as measured.
fn ascii_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len() + html.len() / 8);
    for c in html.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("&#{};", u32::from(c)));
        }
    }
    out
}

/// Trailing spaces off, at most one blank line in a row, none at either end,
/// one final newline.
fn tidy(text: &str) -> String {
    let mut out = String::new();
    let mut blank = false;
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if blank {
            out.push('\n');
            blank = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Contexts to check a digest's templates against when the config loads,
/// each with what it is: a digest since the last one with cases of each
/// sort (every value, none, overdue, one vendor twice) and more cases than
/// it lists (the first: it has every value a template may use), and an
/// empty first digest.
pub fn sample_contexts() -> Vec<(String, minijinja::Value)> {
    let now = 1_764_000_000;
    let row = |n: i64, full: bool| DigestRow {
        case_id: format!("ESC-2026-{n:06}"),
        order_id: full.then(|| format!("CK{n}")),
        customer: full.then(|| "Priya Sharma".to_string()),
        issue: if full {
            "Vendor came three hours late".into()
        } else {
            String::new()
        },
        flags: if full {
            vec!["Review threat".into()]
        } else {
            vec![]
        },
        risk: if full { 5 } else { 1 },
        tier: if full { 2 } else { 1 },
        status: if full { "high_priority" } else { "open" }.into(),
        sent_at: at(now - 3600 * n),
        received_at: at(now - 3600 * n + 60),
        overdue: full,
        vendor: full.then(|| "QuickPick Logistics (VND-1044)".to_string()),
        owner: full.then(|| "Tier 2".to_string()),
        waiting_for: if full { vec!["phone".into()] } else { vec![] },
    };
    let full = DigestData::assemble(
        "sample",
        "Sample digest",
        Some("A sample digest"),
        "Asia/Kolkata",
        at(now),
        Some(at(now - 86_400)),
        vec![row(1, true), row(2, false), row(3, true), row(30, false)],
    );
    let empty = DigestData::assemble("sample", "Sample", None, "UTC", at(now), None, vec![]);
    let mut out = Vec::new();
    for (what, data, listed) in [
        (
            "a digest of four cases listing three (every value, none, overdue, one vendor twice)",
            &full,
            3,
        ),
        ("an empty first digest", &empty, 0),
    ] {
        if let Ok(p) = Prepared::new(data) {
            let mut ctx = p.context(listed);
            ctx.subject = Some("sample subject");
            out.push((
                what.to_string(),
                minijinja::Value::from(minijinja::value::Serde(&ctx)),
            ));
        }
    }
    out
}

/// Adds a digest's two templates to `env` as `NAME.txt` and `NAME.html`
/// (so that the HTML one is auto-escaped by minijinja's default). On error,
/// says which one (`"txt"` or `"html"`), the line (1-based) and what is
/// wrong.
pub fn add_templates(
    env: &mut minijinja::Environment<'static>,
    name: &str,
    txt: &str,
    html: &str,
) -> Result<(), (&'static str, usize, String)> {
    if !txt.starts_with("Subject:") {
        return Err((
            "txt",
            1,
            "expected the first line to be `Subject: ...`".into(),
        ));
    }
    env.add_template_owned(format!("{name}.txt"), txt.replace("\r\n", "\n"))
        .map_err(|e| ("txt", e.line().unwrap_or(0), e.to_string()))?;
    env.add_template_owned(format!("{name}.html"), html.replace("\r\n", "\n"))
        .map_err(|e| ("html", e.line().unwrap_or(0), e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::testing::{NY, at, et};
    use crate::digest::data::tests::{row, sample};

    const TXT: &str = include_str!("../../config/templates/digest.txt");
    const HTML: &str = include_str!("../../config/templates/digest.html");

    fn environment() -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        add_templates(&mut env, "digest", TXT, HTML).expect("the shipped templates compile");
        env
    }

    #[test]
    fn render_text_and_html() {
        let env = environment();
        let r = render(&env, &sample()).expect("renders");
        assert_eq!(
            r.subject,
            "Daily escalations, Tue 24 Nov: 3 open (2 Tier 2), 1 overdue, 1 new"
        );
        assert_eq!(r.listed, 3);
        let want = "\
Daily escalations
Tue 24 Nov, 08:00 EST

3 open cases
Tier 2: 2 (2 risk 5)
Tier 1: 1 (1 risk 3)
Overdue: 1
Waiting on the agent for details: 1
Repeat vendor: QuickPick, 2 cases
New since Mon 23 Nov, 08:00 EST: 1

CASES, MOST URGENT FIRST

ESC-2026-000101 · OVERDUE · NEW
Tier 2 · risk 5 · 24 h old · high priority · with Tier 2
Review threat, Legal threat
We rescheduled her pickup twice from our side. She says
<script>alert(1)</script> she…
Order CK802113 · Swati Joshi
Vendor: QuickPick
Waiting on the agent for: phone

ESC-2026-000103
Tier 2 · risk 5 · 3 d old
Customer upset
Order CK1 · Priya

ESC-2026-000102
Tier 1 · risk 3 · 42 h old
Legal threat
Customer upset
Vendor: quickpick

--
Every escalation of the day
This is an automatic message from mailtriage.
";
        assert_eq!(r.text, want, "\n{}", r.text);
        for line in r.text.lines() {
            assert!(line.chars().count() <= crate::text::WIDTH, "{line:?}");
        }

        let html = &r.html;
        assert!(html.is_ascii());
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>") && !html.contains("mid:"));
        assert!(html.contains(
            "<title>Daily escalations, Tue 24 Nov: 3 open (2 Tier 2), 1 overdue, 1 new</title>"
        ));
        assert!(html.contains(">Daily escalations</h1>"), "{html}");
        assert!(html.contains("<div id=\"summary\">"));
        assert!(html.contains("name=\"viewport\""));
        assert!(!html.contains("<table") && !html.contains("<style"));
        assert!(html.contains("Repeat vendor: <b>QuickPick</b>, 2 cases"));
        assert!(html.contains("New since Mon 23 Nov, 08:00 EST: <b>1</b>"));
        // Each case once, most urgent first.
        let pos = |id: &str| {
            assert_eq!(html.matches(id).count(), 1, "{id} once");
            html.find(id).expect(id)
        };
        assert!(pos("ESC-2026-000101") < pos("ESC-2026-000103"));
        assert!(pos("ESC-2026-000103") < pos("ESC-2026-000102"));
        // No fixed width wider than a phone.
        for w in html.split("width:").skip(1) {
            let px: String = w.chars().take_while(char::is_ascii_digit).collect();
            assert!(
                px.is_empty()
                    || px.parse::<u32>().is_ok_and(|px| px <= 320)
                    || w.starts_with("600px"),
                "width:{}",
                &w[..w.len().min(12)]
            );
        }
    }

    #[test]
    fn render_an_empty_first_digest() {
        let env = environment();
        let d = DigestData::assemble(
            "tier2",
            "Tier 2",
            None,
            "UTC",
            at("UTC", "2026-11-24T08:00"),
            None,
            vec![],
        );
        let r = render(&env, &d).expect("renders");
        assert_eq!(
            r.subject,
            "Tier 2, Tue 24 Nov: 0 open (0 Tier 2), 0 overdue, 0 new"
        );
        for want in [
            "0 open cases",
            "Tier 2: 0",
            "Tier 1: 0",
            "Repeat vendors: none",
            "New: 0",
            "No case is open.",
        ] {
            assert!(
                r.text.lines().any(|l| l == want),
                "{want:?} in:\n{}",
                r.text
            );
        }
        assert!(r.html.contains("No case is open."));
        assert!(!r.text.contains("CASES"));
    }

    #[test]
    fn render_lists_the_most_urgent_cases_that_fit() {
        // Each case's HTML is 10 KB: ten fit, the rest are counted.
        let mut env = minijinja::Environment::new();
        add_templates(
            &mut env,
            "big",
            "Subject: s\n\n{% for r in cases %}{{ r.case_id }}\n{% endfor %}{% if more %}and {{ more.count }} more, {{ more.tier2 }} Tier 2, {{ more.overdue }} overdue{% endif %}\n",
            "{% for r in cases %}<p>{{ r.case_id }}{% for i in range(1000) %}0123456789{% endfor %}</p>\n{% endfor %}",
        )
        .expect("compiles");
        let rows: Vec<DigestRow> = (0..25)
            .map(|i| DigestRow {
                overdue: i % 5 == 0,
                ..row(
                    &format!("ESC-2026-{i:06}"),
                    if i < 12 { 2 } else { 1 },
                    3,
                    "2026-11-23T07:00",
                )
            })
            .collect();
        let d = DigestData::assemble("big", "Big", None, NY, et("2026-11-24T08:00"), None, rows);
        let r = render_template(&env, "big", &d).expect("renders");
        assert!(sent_size(&r.html) <= HTML_MAX_BYTES, "{}", r.html.len());
        assert!((8..25).contains(&r.listed), "{}", r.listed);
        let prepared = Prepared::new(&d).expect("prepared");
        let one_more = render_listing(&env, "big", &prepared, r.listed + 1).expect("renders");
        assert!(
            sent_size(&one_more.html) > HTML_MAX_BYTES,
            "the most that fit"
        );
        let listed: Vec<&str> = r.text.lines().filter(|l| l.starts_with("ESC-")).collect();
        let first: Vec<&str> = d.cases[..r.listed]
            .iter()
            .map(|c| c.case_id.as_str())
            .collect();
        assert_eq!(listed, first, "the most urgent, in order");
        let rest = &d.cases[r.listed..];
        assert!(
            r.text.ends_with(&format!(
                "and {} more, {} Tier 2, {} overdue\n",
                rest.len(),
                rest.iter().filter(|c| c.tier == 2).count(),
                rest.iter().filter(|c| c.overdue).count()
            )),
            "{:?}",
            r.text
        );
    }

    #[test]
    fn html_is_measured_as_sent() {
        assert_eq!(
            ascii_html("₹3,000 – <b>ok</b>"),
            "&#8377;3,000 &#8211; <b>ok</b>"
        );
        // Quoted-printable, CRLF: `=` is escaped, long lines are broken.
        assert_eq!(sent_size("a=b\nc"), "a=3Db\r\nc".len());
        let long = "x".repeat(200);
        assert!(sent_size(&long) > 200);
    }

    #[test]
    fn the_samples_hold_every_value_the_templates_use() {
        let samples = sample_contexts();
        assert_eq!(samples.len(), 2);
        let full = &samples[0].1;
        for name in ["description", "since_local", "more", "subject"] {
            assert!(!full.get_attr(name).expect(name).is_undefined(), "{name}");
        }
        let case = full
            .get_attr("cases")
            .and_then(|c| c.get_item(&minijinja::Value::from(0)))
            .expect("a case");
        for name in ["order_id", "customer", "status", "vendor", "owner"] {
            assert!(!case.get_attr(name).expect(name).is_undefined(), "{name}");
        }
        // Absent values are left out, not none.
        let empty = &samples[1].1;
        assert!(empty.get_attr("since_local").expect("since").is_undefined());
        assert!(empty.get_attr("more").expect("more").is_undefined());
    }

    #[test]
    fn render_errors() {
        let env = environment();
        let mut d = sample();
        d.time_zone = "Nowhere/Land".into();
        let err = render(&env, &d).expect_err("zone");
        assert!(
            err.to_string()
                .contains("unknown time zone \"Nowhere/Land\""),
            "{err}"
        );
        let err = render_template(&env, "weekly", &sample()).expect_err("missing");
        assert!(err.to_string().contains("\"weekly.txt\""), "{err}");
        let mut env = minijinja::Environment::new();
        assert_eq!(
            add_templates(&mut env, "x", "Hello\n", "").map_err(|e| (e.0, e.1)),
            Err(("txt", 1))
        );
        let err = add_templates(&mut env, "x", "Subject: a\n\n{% if %}", "").expect_err("syntax");
        assert_eq!((err.0, err.1), ("txt", 3));
        let err = add_templates(&mut env, "x", "Subject: a\n", "<p>\n{{ }}").expect_err("syntax");
        assert_eq!((err.0, err.1), ("html", 2));
    }

    #[test]
    fn shipped_text_template_loads_as_a_route_template() {
        // config/templates/*.txt are all loaded as message templates.
        let mut t = crate::route::Templates::default();
        assert_eq!(t.add("digest", TXT), Ok(()));
    }
}
