//! A case over its life, after the message that opened it: what an update
//! in its thread changes (status, tags, resolution note, fields that were
//! missing, new flags that raise risk and tier), resolving and reopening.
//!
//! Pure: the daemon finds the case and stores the result; this decides what
//! the update means and writes it into the case's history, so that `cases
//! show` can say who changed what and when.

use jiff::Timestamp;

use crate::case::Case;
use crate::extract::Field;
use crate::record::{CaseRecord, HistoryEntry, Requested, Status, thread_key};

/// What happens to a case after the message that opened it
/// (`[lifecycle]` in routing.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// A new escalation of an order whose case was resolved longer ago than
    /// this opens a new case (linked to the old one); sooner, it reopens it.
    pub reopen_within: std::time::Duration,
    /// The reply telling an agent their escalation joined an open case.
    pub joined_reply: Option<String>,
    pub repeat_vendor: Option<RepeatVendor>,
    pub overdue: Option<Overdue>,
}

impl Lifecycle {
    /// How long a case of `risk` has for an answer before it is overdue.
    pub fn respond_within(&self, risk: u8) -> Option<std::time::Duration> {
        self.overdue
            .as_ref()
            .and_then(|o| o.after.get(usize::from(risk)).copied().flatten())
    }

    /// Whether `rec` is open past the time its risk allows at `now`: how
    /// long it has been open and how long it was allowed. The time counts
    /// from when the case came in (`received_at`), as the forward's
    /// "respond by" does, so that the re-escalation, the digest and the
    /// forward agree on when a case is late.
    pub fn past_due(
        &self,
        rec: &CaseRecord,
        now: Timestamp,
    ) -> Option<(std::time::Duration, std::time::Duration)> {
        let allowed = self.respond_within(rec.case.risk)?;
        let open_for = u64::try_from(crate::clock::seconds_between(rec.received_at, now)).ok()?;
        let open_for = std::time::Duration::from_secs(open_for);
        (rec.is_open() && open_for > allowed).then_some((open_for, allowed))
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            reopen_within: std::time::Duration::from_secs(14 * 86_400),
            joined_reply: None,
            repeat_vendor: None,
            overdue: None,
        }
    }
}

/// The vendor manager hears of a vendor with `complaints` cases within
/// `within`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatVendor {
    pub complaints: usize,
    pub within: std::time::Duration,
    pub to: Vec<String>,
    pub template: String,
}

/// Cases open longer than their risk allows are re-escalated once to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    /// Indexed by risk 0-5; `None`: that risk is never overdue.
    pub after: [Option<std::time::Duration>; 6],
    pub to: Vec<String>,
    pub template: String,
}

/// The case id a subject carries, as in `Re: [ESC-2026-000123] ...`.
pub fn case_id_in_subject(subject: &str) -> Option<String> {
    let mut rest = subject;
    while let Some(i) = rest.find("[ESC-") {
        let tail = &rest[i + 1..];
        if let Some(end) = tail.find(']') {
            let id = &tail[..end];
            let mut parts = id.splitn(3, '-');
            let ok = parts.next() == Some("ESC")
                && parts
                    .next()
                    .is_some_and(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
                && parts
                    .next()
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if ok {
                return Some(id.to_string());
            }
        }
        rest = &rest[i + 5..];
    }
    None
}

/// What an update did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// In words, as the history keeps them.
    pub changes: Vec<String>,
    /// Risk, tier or the flag categories went up: routing runs again.
    pub raised: bool,
    pub resolved: bool,
    pub reopened: bool,
}

/// Applies an update (a reply in the case's thread, or another escalation
/// of the same order) from `by` at `at`.
pub fn apply_update(rec: &mut CaseRecord, upd: &Case, by: &str, at: Timestamp) -> Applied {
    let mut a = Applied::default();
    let was_open = rec.is_open();
    let new_complaint = upd.is_escalation
        || upd
            .flags
            .iter()
            .any(|f| !rec.case.flags.iter().any(|g| g.category == f.category));
    match upd.fields.status.as_deref().and_then(Status::requested) {
        Some(Requested::Set(Status::Resolved)) if was_open => {
            set_status(rec, Status::Resolved, &mut a.changes);
            rec.resolved_at = Some(at);
            a.resolved = true;
        }
        Some(Requested::Set(s @ (Status::Escalated | Status::HighPriority))) if rec.status != s => {
            set_status(rec, s, &mut a.changes);
            rec.resolved_at = None;
            a.reopened = !was_open;
        }
        Some(Requested::Reopen) if !was_open => {
            set_status(rec, Status::Open, &mut a.changes);
            rec.resolved_at = None;
            a.reopened = true;
        }
        _ => {}
    }
    let reopen_tag = upd.tags.iter().any(|t| t == "reopen" || t == "reopened");
    if !was_open && !a.reopened && !a.resolved && (new_complaint || reopen_tag) {
        set_status(rec, Status::Open, &mut a.changes);
        rec.resolved_at = None;
        a.reopened = true;
    }
    for t in &upd.tags {
        if !rec.tags.contains(t) {
            rec.tags.push(t.clone());
            a.changes.push(format!("tag #{t}"));
        }
    }
    if let Some(note) = &upd.fields.resolution
        && rec.resolution.as_deref() != Some(note.as_str())
    {
        rec.resolution = Some(note.clone());
        a.changes.push(format!("resolution note: {note}"));
    }
    // Details the agent was asked for arrive in a reply.
    for f in Field::ALL {
        if matches!(f, Field::Status | Field::Resolution) {
            continue;
        }
        if let (None, Some(v)) = (rec.case.fields.text(f), upd.fields.text(f))
            && let Some(slot) = rec.case.fields.slot(f)
        {
            *slot = Some(v.to_string());
            rec.case.missing.retain(|m| *m != f);
            a.changes.push(format!("{}: {v}", f.label()));
        }
    }
    let categories_before: Vec<String> = rec
        .case
        .flag_categories()
        .into_iter()
        .map(str::to_string)
        .collect();
    for f in &upd.flags {
        if !rec
            .case
            .flags
            .iter()
            .any(|g| g.category == f.category && g.term == f.term)
        {
            rec.case.flags.push(f.clone());
            if !categories_before.contains(&f.category) {
                a.changes.push(format!("flag {}: {}", f.category, f.term));
                a.raised = true;
            }
        }
    }
    if upd.risk > rec.case.risk {
        a.changes
            .push(format!("risk {} -> {}", rec.case.risk, upd.risk));
        rec.case.risk = upd.risk;
        a.raised = true;
    }
    if upd.tier > rec.case.tier {
        a.changes
            .push(format!("tier {} -> {}", rec.case.tier, upd.tier));
        rec.case.tier = upd.tier;
        a.raised = true;
    }
    if let Some(m) = &upd.message_id {
        let k = thread_key(m);
        if !rec.thread.contains(&k) {
            rec.thread.push(k);
        }
    }
    let changes = if a.changes.is_empty() {
        vec!["message added to the thread".into()]
    } else {
        a.changes.clone()
    };
    record(rec, by, at, upd.message_id.clone(), changes);
    a
}

/// Adds a change to the case's history and marks the case updated.
pub fn record(
    rec: &mut CaseRecord,
    by: &str,
    at: Timestamp,
    message_id: Option<String>,
    changes: Vec<String>,
) {
    rec.updated_at = at;
    rec.history.push(HistoryEntry {
        at,
        by: by.to_string(),
        message_id,
        changes,
    });
}

/// Resolves a case by hand (`mailtriage cases resolve`). False if it was
/// already resolved.
pub fn resolve(rec: &mut CaseRecord, note: Option<&str>, by: &str, at: Timestamp) -> bool {
    if !rec.is_open() {
        return false;
    }
    let mut changes = Vec::new();
    set_status(rec, Status::Resolved, &mut changes);
    rec.resolved_at = Some(at);
    if let Some(n) = note {
        rec.resolution = Some(n.to_string());
        changes.push(format!("resolution note: {n}"));
    }
    record(rec, by, at, None, changes);
    true
}

/// Reopens a resolved case. False if it was open.
pub fn reopen(rec: &mut CaseRecord, by: &str, at: Timestamp) -> bool {
    if rec.is_open() {
        return false;
    }
    let mut changes = Vec::new();
    set_status(rec, Status::Open, &mut changes);
    rec.resolved_at = None;
    record(rec, by, at, None, changes);
    true
}

/// What the overdue notice's template sees: the case, how long it has
/// been open and how long its risk allows (both in words), when it came in
/// (in `zone`), and its flags in words.
pub fn overdue_context(
    rec: &CaseRecord,
    age: &str,
    allowed: &str,
    readers: &crate::route::Readers,
) -> minijinja::Value {
    let received = crate::text::local_time(rec.received_at, &readers.zone, rec.received_at);
    let why: Vec<String> = rec
        .case
        .flag_categories()
        .into_iter()
        .map(|c| readers.label(c))
        .collect();
    minijinja::context! {
        case_id => rec.id.clone(),
        status => rec.status.label(),
        risk => rec.case.risk,
        tier => rec.case.tier,
        fields => minijinja::Value::from(minijinja::value::Serde(&rec.case.fields)),
        from => rec.case.from.clone(),
        from_name => rec.from_name.clone(),
        message_id => rec.case.message_id.clone(),
        age => age,
        allowed => allowed,
        received => received,
        why => why,
        forwarded_to => rec.forwarded_to.clone(),
    }
}

/// When the agent sent the message that opened the case: its `Date:`,
/// else (no date, or one later than its arrival: a clock that is wrong)
/// when the daemon received it. Ages count from here.
pub fn sent_at(rec: &CaseRecord) -> Timestamp {
    rec.case
        .date
        .as_deref()
        .and_then(crate::text::parse_rfc3339)
        .filter(|d| *d <= rec.received_at)
        .unwrap_or(rec.received_at)
}

/// The longest issue line of a repeat-vendor report: with its two
/// spaces of indent, it fits in [`crate::text::WIDTH`].
const REPORT_ISSUE_MAX: usize = crate::text::WIDTH - 2;

/// One case as the repeat-vendor report lists it; a value the case lacks
/// is left out, so that a template must ask for it.
#[derive(serde::Serialize)]
struct ReportedCase {
    case_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer: Option<String>,
    /// When the agent sent it, as people write it.
    date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issue: Option<String>,
}

/// What the repeat-vendor report's template sees: the vendor as the cases
/// wrote it, the cases of the window (each with its order id, customer,
/// when the agent sent it, in `zone`, and its issue in one line), the
/// window in days, and the case that made the count.
pub fn vendor_report_context(
    vendor: &str,
    cases: &[&CaseRecord],
    within_days: u64,
    case_id: &str,
    zone: &jiff::tz::TimeZone,
    now: Timestamp,
) -> minijinja::Value {
    let listed: Vec<ReportedCase> = cases
        .iter()
        .map(|rec| {
            let f = &rec.case.fields;
            ReportedCase {
                case_id: rec.id.clone(),
                order_id: f.order_id.clone(),
                customer: f.customer_name.clone(),
                date: crate::text::local_time(sent_at(rec), zone, now),
                issue: f
                    .issue
                    .as_deref()
                    .or(f.issue_summary.as_deref())
                    .or(rec.case.subject.as_deref())
                    .map(|i| crate::text::shorten(i, REPORT_ISSUE_MAX))
                    .filter(|i| !i.is_empty()),
            }
        })
        .collect();
    minijinja::context! {
        vendor => vendor,
        count => listed.len(),
        cases => minijinja::Value::from(minijinja::value::Serde(&listed)),
        within_days => within_days,
        case_id => case_id,
    }
}

fn set_status(rec: &mut CaseRecord, to: Status, changes: &mut Vec<String>) {
    changes.push(format!("status {} -> {to}", rec.status));
    rec.status = to;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn triage(body: &str) -> Case {
        let config = Config::builtin().unwrap();
        let raw = format!(
            "From: ravi@example.com\r\nSubject: Re: Escalation\r\nMessage-ID: <u{}@example.com>\r\n\r\n{body}\r\n",
            body.len()
        );
        config.triage.parse(raw.as_bytes()).unwrap().1
    }

    fn record() -> CaseRecord {
        let case = triage(
            "Customer Name: Asha\r\nIssue: pickup was late and the vendor was rude\r\nCustomer Mood: upset",
        );
        CaseRecord::new(
            "ESC-2026-000001".into(),
            "ops",
            1,
            1,
            Timestamp::from_second(100).unwrap(),
            case,
            None,
            vec![],
        )
    }

    #[test]
    fn past_due_counts_from_receipt_at_the_risks_allowance() {
        let hours = |h: u64| Some(std::time::Duration::from_secs(h * 3600));
        let lc = Lifecycle {
            overdue: Some(Overdue {
                after: [None, None, None, hours(8), hours(3), hours(2)],
                to: vec!["ops.director@example.com".into()],
                template: "overdue".into(),
            }),
            ..Lifecycle::default()
        };
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        // (risk, resolved, seconds after receipt (100), past due?)
        let rows = [
            (5, false, 2 * 3600, false),
            (5, false, 2 * 3600 + 1, true),
            (4, false, 3 * 3600 + 1, true),
            (3, false, 3 * 3600 + 1, false),
            (2, false, 400 * 86_400, false),
            (5, true, 10 * 3600, false),
            (5, false, -3600, false),
        ];
        for (risk, resolved, after, want) in rows {
            let mut rec = record();
            rec.case.risk = risk;
            if resolved {
                assert!(resolve(&mut rec, None, "cli", at(150)));
            }
            let got = lc.past_due(&rec, at(100 + after));
            assert_eq!(
                got.is_some(),
                want,
                "risk {risk}, resolved {resolved}, {after} s"
            );
            if let Some((open_for, allowed)) = got {
                assert_eq!(open_for.as_secs(), after as u64);
                assert_eq!(Some(allowed), lc.respond_within(risk));
            }
        }
        assert_eq!(Lifecycle::default().past_due(&record(), at(1 << 33)), None);
    }

    #[test]
    fn subjects_carry_case_ids() {
        for (subject, want) in [
            ("Re: [ESC-2026-000123] Escalation", Some("ESC-2026-000123")),
            ("Fwd: [ESC-2026-7] x", Some("ESC-2026-7")),
            ("[ESC-26-000123]", None),
            ("[ESC-2026-]", None),
            ("[ESC-2026-12a]", None),
            ("[ESC- [ESC-2027-000001]", Some("ESC-2027-000001")),
            ("no id", None),
        ] {
            assert_eq!(case_id_in_subject(subject).as_deref(), want, "{subject}");
        }
    }

    #[test]
    fn status_tags_and_resolution_are_applied_and_recorded() {
        let mut rec = record();
        let upd =
            triage("Status: Resolved\r\nResolution: payout done manually\r\n\r\n#payout_fixed");
        let a = apply_update(
            &mut rec,
            &upd,
            "cx@example.com",
            Timestamp::from_second(200).unwrap(),
        );
        assert!(a.resolved && !a.reopened && !a.raised, "{a:?}");
        assert_eq!(rec.status, Status::Resolved);
        assert_eq!(rec.resolved_at, Some(Timestamp::from_second(200).unwrap()));
        assert_eq!(rec.resolution.as_deref(), Some("payout done manually"));
        assert_eq!(rec.tags, ["payout_fixed"]);
        assert_eq!(rec.history.len(), 1);
        assert_eq!(rec.history[0].by, "cx@example.com");
        assert_eq!(
            rec.history[0].changes,
            [
                "status open -> resolved",
                "tag #payout_fixed",
                "resolution note: payout done manually"
            ]
        );
        assert!(!rec.is_open());
    }

    #[test]
    fn new_threats_raise_risk_and_tier_and_reopen() {
        let mut rec = record();
        assert!(resolve(
            &mut rec,
            Some("done"),
            "cli",
            Timestamp::from_second(150).unwrap()
        ));
        assert!(!resolve(
            &mut rec,
            None,
            "cli",
            Timestamp::from_second(151).unwrap()
        ));
        let upd = triage("The customer now says he will call his lawyer and sue us.");
        let a = apply_update(
            &mut rec,
            &upd,
            "ravi@example.com",
            Timestamp::from_second(300).unwrap(),
        );
        assert!(a.raised && a.reopened, "{a:?}");
        assert_eq!(rec.case.tier, 2);
        assert!(rec.case.risk >= 4);
        assert_eq!(rec.status, Status::Open);
        assert!(
            rec.history[1]
                .changes
                .iter()
                .any(|c| c.starts_with("tier 1 -> 2"))
        );
        // The same threat again changes nothing.
        let again = apply_update(
            &mut rec,
            &upd,
            "ravi@example.com",
            Timestamp::from_second(400).unwrap(),
        );
        assert!(!again.raised && again.changes.is_empty(), "{again:?}");
        assert_eq!(rec.history.len(), 3);
    }

    #[test]
    fn missing_details_are_filled_in_from_a_reply() {
        let mut rec = record();
        assert!(rec.case.fields.order_id.is_none());
        let upd = triage("Order ID: CK-7781\r\nCustomer Phone Number: 98450 12345");
        apply_update(
            &mut rec,
            &upd,
            "ravi@example.com",
            Timestamp::from_second(200).unwrap(),
        );
        assert_eq!(rec.case.fields.order_id.as_deref(), Some("CK-7781"));
        assert!(!rec.case.missing.contains(&Field::OrderId));
        assert!(rec.is_open());
    }

    #[test]
    fn reopen_by_hand_and_by_status() {
        let mut rec = record();
        assert!(!reopen(
            &mut rec,
            "cli",
            Timestamp::from_second(10).unwrap()
        ));
        resolve(&mut rec, None, "cli", Timestamp::from_second(20).unwrap());
        let upd = triage("Status: Reopened");
        let a = apply_update(
            &mut rec,
            &upd,
            "ravi@example.com",
            Timestamp::from_second(30).unwrap(),
        );
        assert!(a.reopened);
        assert!(rec.is_open());
        resolve(&mut rec, None, "cli", Timestamp::from_second(40).unwrap());
        assert!(reopen(&mut rec, "cli", Timestamp::from_second(50).unwrap()));
        assert_eq!(rec.resolved_at, None);
    }
}
