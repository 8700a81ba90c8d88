//! A digest's content: the stored cases of a digest as the rows it lists,
//! most urgent first, and the vendors named more than once. Pure: the job
//! reads the store.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use super::DigestError;
use super::Sources;
use crate::extract::Field;
use crate::record::CaseRecord;
use crate::vendor::VendorKey;

/// One case, as a digest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestRow {
    pub case_id: String,
    pub order_id: Option<String>,
    pub customer: Option<String>,
    /// One line: see `shorten_issue`.
    pub issue: String,
    /// Flag categories in words ("Review threat"), each once.
    pub flags: Vec<String>,
    pub risk: u8,
    pub tier: u8,
    /// `open`, `escalated` or `high_priority`.
    pub status: String,
    /// When the agent sent it (see [`crate::lifecycle::sent_at`]): ages
    /// count from here.
    #[serde(with = "crate::clock::seconds")]
    pub sent_at: Timestamp,
    /// When the daemon received it: whether it is new since the last
    /// digest.
    #[serde(with = "crate::clock::seconds")]
    pub received_at: Timestamp,
    pub overdue: bool,
    /// The vendor, named alike in every case of it.
    pub vendor: Option<String>,
    /// Who has the case, in words ("Tier 2").
    pub owner: Option<String>,
    /// The details the agent was asked for and has not sent, in words.
    pub waiting_for: Vec<String>,
}

/// A vendor named by more than one case of a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VendorRow {
    pub vendor: String,
    pub cases: Vec<String>,
    pub count: usize,
}

/// Everything one digest says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestData {
    /// The digest's name in the config.
    pub name: String,
    /// Its title in words, for the subject and the heading.
    pub title: String,
    pub description: Option<String>,
    pub time_zone: String,
    #[serde(with = "crate::clock::seconds")]
    pub now: Timestamp,
    /// The previous period (None on the first digest).
    #[serde(with = "crate::clock::seconds::option")]
    pub since: Option<Timestamp>,
    /// Every open case of the digest, each once, most urgent first (see
    /// `urgency`).
    pub cases: Vec<DigestRow>,
    /// Vendors named by two or more of the cases, most cases first.
    pub repeat_vendors: Vec<VendorRow>,
}

/// The order a digest lists cases in: overdue first, then Tier 2, then
/// higher risk, then the oldest (by when the agent sent it).
pub fn urgency(a: &DigestRow, b: &DigestRow) -> std::cmp::Ordering {
    b.overdue
        .cmp(&a.overdue)
        .then(b.tier.cmp(&a.tier))
        .then(b.risk.cmp(&a.risk))
        .then(a.sent_at.cmp(&b.sent_at))
        .then_with(|| a.case_id.cmp(&b.case_id))
}

/// A detail the agent was asked for, as a manager would say it.
fn detail_in_words(field: Field) -> &'static str {
    match field {
        Field::CustomerName => "customer name",
        Field::OrderId => "order ID",
        Field::Phone => "phone",
        Field::Device => "device",
        Field::PickupSlot => "pickup slot",
        Field::Issue => "issue",
        Field::IssueSummary => "issue summary",
        Field::PromisedBy => "promised by",
        Field::CustomerMood => "customer mood",
        Field::SuggestedResolution => "suggested resolution",
        Field::Category => "category",
        Field::Vendor => "vendor",
        Field::TicketId => "ticket ID",
        Field::RiskRating => "risk rating",
        Field::Status => "status",
        Field::Resolution => "resolution",
    }
}

/// The rows of digest `digest` at `now`: each open case the routing table
/// added to it, read with `config` (flag labels, overdue times, who owns a
/// forwarded case, how vendors are named). Pure: the caller reads the
/// store.
///
/// - Ages count from when the agent sent the case (its `Date:`, see
///   [`crate::lifecycle::sent_at`]): how long the customer has waited.
///   Being overdue is the re-escalation's rule
///   ([`Lifecycle::past_due`](crate::lifecycle::Lifecycle::past_due), from
///   when the case came in), so that the digest calls late exactly the cases
///   the forward's "respond by" made late; a case already re-escalated is
///   overdue whatever its age.
/// - The owner is the `owner` of the first rule (in table order) whose
///   forward went to one of the case's recipients, so a Tier-2 case that
///   the supervisor also had is Tier 2's.
/// - A vendor is named as the earliest of its cases that gives the id
///   wrote it, else as the earliest did (as the repeat-vendor report
///   names it), so that `VID-77` and `FastPick (VID-77)` are one vendor.
///   A case stored before vendors were resolved is read with today's
///   rules.
pub fn rows(
    config: Sources<'_>,
    digest: &str,
    cases: impl IntoIterator<Item = CaseRecord>,
    now: Timestamp,
) -> Vec<DigestRow> {
    let owners: Vec<&crate::route::ForwardSpec> = config
        .router
        .rules
        .iter()
        .filter_map(|r| r.forward.as_ref())
        .collect();
    let mut cases: Vec<CaseRecord> = cases
        .into_iter()
        .filter(|r| r.is_open() && r.digests.iter().any(|d| d == digest))
        .collect();
    // Oldest first, for the vendors' names.
    cases.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
    let mut vendor_names: BTreeMap<VendorKey, String> = BTreeMap::new();
    let mut rows = Vec::with_capacity(cases.len());
    let mut vendors = Vec::with_capacity(cases.len());
    for rec in &cases {
        let f = &rec.case.fields;
        let sent_at = crate::lifecycle::sent_at(rec);
        let owner = owners
            .iter()
            .find(|fwd| {
                fwd.to.iter().any(|a| {
                    rec.forwarded_to
                        .iter()
                        .any(|t| t.trim().eq_ignore_ascii_case(a.trim()))
                })
            })
            .map(|fwd| fwd.owner.clone());
        let mut waiting_for: Vec<String> = Vec::new();
        for m in &rec.case.missing {
            let w = detail_in_words(*m).to_string();
            if !waiting_for.contains(&w) {
                waiting_for.push(w);
            }
        }
        let vendor = rec
            .vendor_key()
            .cloned()
            .or_else(|| f.vendor.as_deref().and_then(|v| config.vendors.key(v)));
        if let (Some(k), Some(spelling)) = (&vendor, &f.vendor) {
            let name = vendor_names.entry(k.clone()).or_default();
            if config.vendors.better_spelling(name, spelling) {
                *name = spelling.clone();
            }
        }
        vendors.push(vendor);
        rows.push(DigestRow {
            case_id: rec.id.clone(),
            order_id: one_line(f.order_id.as_deref()),
            customer: one_line(f.customer_name.as_deref()),
            issue: shorten_issue(
                f.issue
                    .as_deref()
                    .or(f.issue_summary.as_deref())
                    .or(rec.case.subject.as_deref())
                    .unwrap_or(""),
            ),
            flags: rec
                .case
                .flag_categories()
                .into_iter()
                .map(|c| config.router.readers.label(c))
                .collect(),
            risk: rec.case.risk,
            tier: rec.case.tier,
            status: rec.status.to_string(),
            sent_at,
            received_at: rec.received_at,
            overdue: rec.overdue_at.is_some() || config.lifecycle.past_due(rec, now).is_some(),
            vendor: None,
            owner,
            waiting_for,
        });
    }
    for (row, key) in rows.iter_mut().zip(vendors) {
        row.vendor = key
            .and_then(|k| vendor_names.get(&k).map(|n| one_line(Some(n))))
            .flatten();
    }
    rows
}

/// A field's value in one line, None when it is empty.
pub(super) fn one_line(value: Option<&str>) -> Option<String> {
    value
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|v| !v.is_empty())
}

impl DigestData {
    /// Digest `name` of `config` at `now` for the stored `cases` (all or
    /// only the open ones: see `rows`), covering `since` (the previous
    /// period; None for the first digest).
    pub fn from_cases(
        config: Sources<'_>,
        name: &str,
        cases: impl IntoIterator<Item = CaseRecord>,
        since: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<DigestData, DigestError> {
        let d = super::spec_of(config.router, name)?;
        Ok(DigestData::assemble(
            name,
            &d.title,
            d.description.as_deref(),
            &d.time_zone,
            now,
            since,
            rows(config, name, cases, now),
        ))
    }

    /// A digest of `cases`: sorts them by `urgency` and finds the vendors
    /// that two or more of them name (compared without case).
    pub fn assemble(
        name: &str,
        title: &str,
        description: Option<&str>,
        time_zone: &str,
        now: Timestamp,
        since: Option<Timestamp>,
        mut cases: Vec<DigestRow>,
    ) -> DigestData {
        cases.sort_by(urgency);
        let mut vendors: Vec<VendorRow> = Vec::new();
        for r in &cases {
            if let Some(v) = r.vendor.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                match vendors
                    .iter_mut()
                    .find(|x| x.vendor.to_lowercase() == v.to_lowercase())
                {
                    Some(x) => {
                        x.cases.push(r.case_id.clone());
                        x.count += 1;
                    }
                    None => vendors.push(VendorRow {
                        vendor: v.to_string(),
                        cases: vec![r.case_id.clone()],
                        count: 1,
                    }),
                }
            }
        }
        vendors.retain(|v| v.count >= 2);
        for v in &mut vendors {
            v.cases.sort();
        }
        vendors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.vendor.cmp(&b.vendor)));
        DigestData {
            name: name.to_string(),
            title: title.to_string(),
            description: description.map(str::to_string),
            now,
            since,
            time_zone: time_zone.to_string(),
            cases,
            repeat_vendors: vendors,
        }
    }

    /// Whether a case is new since the last digest (every case is, in the
    /// first).
    pub(super) fn is_new(&self, row: &DigestRow) -> bool {
        self.since.is_none_or(|s| row.received_at >= s)
    }
}

const ISSUE_MAX: usize = 90;

/// An issue as one line of at most 90 characters (see
/// [`crate::text::shorten`]); "(no issue given)" for none.
pub fn shorten_issue(issue: &str) -> String {
    let line = crate::text::shorten(issue, ISSUE_MAX);
    if line.is_empty() {
        "(no issue given)".into()
    } else {
        line
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::calendar::testing::{NY, et};

    #[test]
    fn issues_in_one_line_and_ages() {
        let long = "We rescheduled her pickup twice from our side. She says she will post a one-star review on Trustpilot and Google.";
        let cases = [
            ("Customer angry", "Customer angry"),
            ("  line one\n  line two  ", "line one line two"),
            ("", "(no issue given)"),
            (
                long,
                "We rescheduled her pickup twice from our side. She says she will post a one-star review…",
            ),
            (&"x".repeat(120), &format!("{}…", "x".repeat(89))),
        ];
        for (issue, want) in cases {
            let got = shorten_issue(issue);
            assert_eq!(got, want);
            assert!(got.chars().count() <= 90, "{got}");
            assert_eq!(shorten_issue(&got), got, "idempotent");
        }
        let ages = [
            (0, "0 min"),
            (-50, "0 min"),
            (35 * 60 + 59, "35 min"),
            (3600, "1 h"),
            (47 * 3600, "47 h"),
            (48 * 3600, "2 d"),
        ];
        for (secs, want) in ages {
            assert_eq!(crate::text::age(secs), want, "{secs}");
        }
    }

    /// A case as the daemon stores it: `headers` and `body` of an agent's
    /// message, received at `received`, added to the managers' digest and
    /// forwarded to `forwarded_to`.
    fn stored(
        config: &crate::config::Config,
        n: u32,
        headers: &str,
        body: &str,
        received: Timestamp,
        forwarded_to: &[&str],
    ) -> CaseRecord {
        let raw = format!(
            "From: Ravi <ravi@example.com>\r\nSubject: Escalation\r\nMessage-ID: <m{n}@mail.example.com>\r\n{headers}\r\n{body}\r\n"
        );
        let (_, case) = config.triage.parse(raw.as_bytes()).expect("parses");
        let mut r = CaseRecord::new(
            format!("ESC-2026-{n:06}"),
            "ops",
            n,
            1,
            received,
            case,
            None,
            vec![],
        );
        r.digests = vec!["managers_daily".into()];
        r.forwarded_to = forwarded_to.iter().map(|s| s.to_string()).collect();
        r.vendor = r
            .case
            .fields
            .vendor
            .as_deref()
            .and_then(|v| config.vendors.parse(v))
            .and_then(|v| v.resolve(None));
        r
    }

    #[test]
    fn rows_read_stored_cases_for_the_digest() {
        let config = crate::config::Config::builtin().expect("shipped config");
        let now: Timestamp = "2026-11-26T02:30:00Z".parse().expect("now");
        let ago = |s: i64| Timestamp::from_second(now.as_second() - s).expect("time");
        let full = "Customer Name: Asha Verma\r\nOrder ID: CK1\r\nCustomer Phone Number: 98450 12345\r\nDevice: iPhone 12\r\nPickup Slot: 24 Nov, 4-6 PM\r\nVendor Name: QuickPick Logistics (VND-1044)\r\nIssue: She will post a one-star review on Trustpilot.\r\n";
        // Sent Tue 24 Nov 20:09 IST, received two minutes later.
        let a = stored(
            &config,
            1,
            "Date: Tue, 24 Nov 2026 20:09:00 +0530\r\n",
            full,
            "2026-11-24T14:41:00Z".parse().expect("t"),
            &["Tier2@Example.com", "supervisor.oncall@example.com"],
        );
        // No date; no customer name or phone; the vendor by its id alone.
        let b = stored(
            &config,
            2,
            "",
            "Order ID: CK2\r\nVendor Name: vnd 1044\r\nIssue: The customer is upset.\r\n",
            ago(30 * 60),
            &[],
        );
        // A date later than its arrival (the agent's clock is wrong).
        let c = stored(
            &config,
            3,
            "Date: Thu, 26 Nov 2026 09:30:00 +0530\r\n",
            full,
            ago(10 * 60),
            &["cx@example.com"],
        );
        let mut d = stored(&config, 4, "", full, ago(60), &[]);
        assert!(crate::lifecycle::resolve(&mut d, None, "cli", now));
        let mut e = stored(&config, 5, "", full, ago(60), &[]);
        e.digests.clear();
        // Young, but re-escalated already: overdue.
        let mut f = stored(
            &config,
            6,
            "",
            "Customer Name: Ravi\r\nOrder ID: CK6\r\nIssue: The customer says we are a scam.\r\n",
            ago(60),
            &["supervisor.oncall@example.com"],
        );
        f.overdue_at = Some(now);

        let rows = rows(
            config.digest_sources(),
            "managers_daily",
            [f, e, d, c, b, a],
            now,
        );
        let ids: Vec<&str> = rows.iter().map(|r| r.case_id.as_str()).collect();
        // Open cases of this digest only, oldest received first.
        assert_eq!(
            ids,
            [
                "ESC-2026-000001",
                "ESC-2026-000002",
                "ESC-2026-000003",
                "ESC-2026-000006"
            ]
        );
        let [a, b, c, f] = [&rows[0], &rows[1], &rows[2], &rows[3]];

        assert_eq!(
            a.sent_at,
            "2026-11-24T14:39:00Z".parse::<Timestamp>().expect("t")
        );
        assert_eq!(
            a.received_at,
            crate::clock::after(a.sent_at, std::time::Duration::from_secs(120))
        );
        assert!(
            a.flags.contains(&"Review threat".to_string()),
            "{:?}",
            a.flags
        );
        assert_eq!(a.owner.as_deref(), Some("Tier 2"), "the first rule's owner");
        assert!(a.overdue, "35 h at risk {}", a.risk);
        assert!(a.waiting_for.is_empty(), "{:?}", a.waiting_for);
        assert_eq!(a.order_id.as_deref(), Some("CK1"));
        assert_eq!(a.customer.as_deref(), Some("Asha Verma"));
        assert_eq!(a.issue, "She will post a one-star review on Trustpilot.");

        assert_eq!(b.sent_at, b.received_at, "no date: when it arrived");
        assert_eq!(b.owner, None);
        // A pickup complaint (it names a vendor) wants a device and a slot too.
        assert_eq!(
            b.waiting_for,
            ["customer name", "phone", "device", "pickup slot"]
        );
        assert_eq!(b.customer, None);
        assert!(!b.overdue);
        // One vendor, named as the case that gives the id with a name wrote it.
        assert_eq!(a.vendor.as_deref(), Some("QuickPick Logistics (VND-1044)"));
        assert_eq!(b.vendor, a.vendor);

        assert_eq!(c.sent_at, c.received_at, "a date in the future is not used");
        assert_eq!(c.owner.as_deref(), Some("the CX team"));

        assert!(f.overdue, "re-escalated");
        assert_eq!(f.owner.as_deref(), Some("the supervisor on call"));
        assert!(
            f.flags.contains(&"Fraud or scam accusation".to_string()),
            "{:?}",
            f.flags
        );
    }

    pub(in crate::digest) fn row(id: &str, tier: u8, risk: u8, sent: &str) -> DigestRow {
        let sent = et(sent).as_second();
        DigestRow {
            case_id: id.into(),
            order_id: Some("CK1".into()),
            customer: Some("Priya".into()),
            issue: "Customer upset".into(),
            flags: vec![],
            risk,
            tier,
            status: "open".into(),
            sent_at: jiff::Timestamp::from_second(sent).expect("a time"),
            received_at: jiff::Timestamp::from_second(sent + 120).expect("a time"),
            overdue: false,
            vendor: None,
            owner: None,
            waiting_for: vec![],
        }
    }

    #[test]
    fn cases_go_most_urgent_first() {
        // (id, overdue, tier, risk, sent)
        let cases = [
            ("young-t1-r2", false, 1, 2, "2026-11-23T07:00"),
            ("old-t1-r2", false, 1, 2, "2026-11-20T07:00"),
            ("t1-r4", false, 1, 4, "2026-11-23T07:00"),
            ("t2-r3", false, 2, 3, "2026-11-23T07:00"),
            ("t2-r5", false, 2, 5, "2026-11-23T07:00"),
            ("overdue-t1-r3", true, 1, 3, "2026-11-23T07:00"),
            ("overdue-t2-r4", true, 2, 4, "2026-11-23T07:00"),
        ];
        let rows: Vec<DigestRow> = cases
            .iter()
            .map(|(id, overdue, tier, risk, sent)| DigestRow {
                overdue: *overdue,
                ..row(id, *tier, *risk, sent)
            })
            .collect();
        let d = DigestData::assemble("x", "X", None, NY, et("2026-11-24T08:00"), None, rows);
        let order: Vec<&str> = d.cases.iter().map(|r| r.case_id.as_str()).collect();
        assert_eq!(
            order,
            [
                "overdue-t2-r4",
                "overdue-t1-r3",
                "t2-r5",
                "t2-r3",
                "t1-r4",
                "old-t1-r2",
                "young-t1-r2"
            ]
        );
    }

    pub(in crate::digest) fn sample() -> DigestData {
        let mut a = row("ESC-2026-000101", 2, 5, "2026-11-23T07:25");
        a.order_id = Some("CK802113".into());
        a.customer = Some("Swati Joshi".into());
        a.issue = "We rescheduled her pickup twice from our side.\nShe says <script>alert(1)</script> she will post a one-star review".into();
        a.flags = vec!["Review threat".into(), "Legal threat".into()];
        a.vendor = Some("QuickPick".into());
        a.owner = Some("Tier 2".into());
        a.waiting_for = vec!["phone".into()];
        a.status = crate::record::Status::HighPriority.to_string();
        a.overdue = true;
        // Received long after it was sent (the daemon was down): new.
        a.received_at = et("2026-11-23T09:00");
        let mut b = row("ESC-2026-000102", 1, 3, "2026-11-22T14:00");
        b.vendor = Some("quickpick ".into());
        b.flags = vec!["Legal threat".into()];
        b.customer = None;
        b.order_id = None;
        let c = row("ESC-2026-000103", 2, 5, "2026-11-20T09:00");
        DigestData::assemble(
            "managers_daily",
            "Daily escalations",
            Some("Every escalation of the day"),
            NY,
            et("2026-11-24T08:00"),
            Some(et("2026-11-23T08:00")),
            vec![b, c, a],
        )
    }

    #[test]
    fn assemble_finds_repeat_vendors() {
        let d = sample();
        assert_eq!(
            d.repeat_vendors,
            vec![VendorRow {
                vendor: "QuickPick".into(),
                cases: vec!["ESC-2026-000101".into(), "ESC-2026-000102".into()],
                count: 2
            }]
        );
        assert_eq!(d.since, Some(et("2026-11-23T08:00")));
    }
}
