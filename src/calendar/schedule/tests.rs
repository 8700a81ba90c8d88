//! The schedule forms, their errors, and fire times around boundaries and
//! DST changes, at fixed instants.

use jiff::SignedDuration;

use super::*;
use crate::calendar::testing::{NY, at, et, show};

#[test]
fn schedule_forms_parse() {
    // spec, zone, now (in zone), the next fire time after now.
    let cases = [
        (
            "daily 08:00",
            NY,
            "2026-11-23T07:00",
            "2026-11-23T08:00 EST",
        ),
        ("daily 8:00", NY, "2026-11-23T08:00", "2026-11-24T08:00 EST"),
        (
            "  Daily   23:59 ",
            "UTC",
            "2026-11-23T00:00",
            "2026-11-23T23:59 UTC",
        ),
        ("hourly", NY, "2026-11-23T07:00", "2026-11-23T08:00 EST"),
        ("hourly :15", NY, "2026-11-23T07:20", "2026-11-23T08:15 EST"),
        (
            "weekdays 08:00",
            NY,
            "2026-11-27T09:00",
            "2026-11-30T08:00 EST",
        ),
        (
            "weekdays 08:00",
            NY,
            "2026-11-28T07:00",
            "2026-11-30T08:00 EST",
        ),
        (
            "cron 30 7 * * 1-5",
            NY,
            "2026-11-27T08:00",
            "2026-11-30T07:30 EST",
        ),
        (
            "cron */20 9-10 * * *",
            NY,
            "2026-11-23T09:41",
            "2026-11-23T10:00 EST",
        ),
        (
            "cron 0 8 1 * *",
            NY,
            "2026-11-23T08:00",
            "2026-12-01T08:00 EST",
        ),
        (
            "cron 0 8 * * sun",
            NY,
            "2026-11-23T08:00",
            "2026-11-29T08:00 EST",
        ),
        (
            "cron 0 8 * * 7",
            NY,
            "2026-11-23T08:00",
            "2026-11-29T08:00 EST",
        ),
        (
            "cron 0 8 * * 0",
            NY,
            "2026-11-23T08:00",
            "2026-11-29T08:00 EST",
        ),
        (
            "cron 0 8 * jan mon",
            NY,
            "2026-11-23T08:00",
            "2027-01-04T08:00 EST",
        ),
        (
            "cron 0 12 15 * FRI",
            NY,
            "2026-11-23T08:00",
            "2026-11-27T12:00 EST",
        ),
        (
            "cron 5/20 0 * * *",
            "UTC",
            "2026-11-23T00:06",
            "2026-11-23T00:25 UTC",
        ),
        (
            "cron 0,30 8 * * 1,3",
            NY,
            "2026-11-23T08:10",
            "2026-11-23T08:30 EST",
        ),
        (
            "cron 0 9 * * 5-7",
            NY,
            "2026-11-23T08:00",
            "2026-11-27T09:00 EST",
        ),
    ];
    for (spec, zone, now, next) in cases {
        match Schedule::parse(spec, zone) {
            Ok(s) => {
                assert_eq!(s.time_zone(), zone, "{spec}");
                assert_eq!(
                    show(s.next_after(at(zone, now)), zone),
                    next,
                    "{spec} after {now}"
                );
            }
            Err(e) => assert_eq!(next, "none", "{spec}: {e}"),
        }
    }
    let s = Schedule::parse("  daily   08:00 ", NY).expect("valid");
    assert_eq!(s.spec(), "daily 08:00");
    assert_eq!(s.to_string(), "daily 08:00 (America/New_York)");
}

#[test]
fn schedule_errors_say_what_was_expected() {
    let cases = [
        ("", NY, "the schedule is empty: expected \"daily HH:MM\""),
        (
            "weekly 08:00",
            NY,
            "unknown schedule \"weekly 08:00\": expected \"daily HH:MM\", \"weekdays HH:MM\", \"hourly\", \"hourly :MM\" or \"cron MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\"",
        ),
        (
            "daily",
            NY,
            "schedule \"daily\": expected a time after \"daily\", e.g. \"daily 08:00\"",
        ),
        (
            "daily 25:00",
            NY,
            "expected a time from 00:00 to 23:59 after \"daily\"",
        ),
        ("daily 8am", NY, "expected a time from 00:00 to 23:59"),
        (
            "daily 08:00 09:00",
            NY,
            "expected only a time after \"daily\"",
        ),
        (
            "weekdays 08:60",
            NY,
            "after \"weekdays\", e.g. \"weekdays 08:00\"",
        ),
        (
            "hourly 15",
            NY,
            "expected \"hourly\" (at minute 0) or \"hourly :MM\" with MM from 00 to 59",
        ),
        ("hourly :75", NY, "with MM from 00 to 59"),
        (
            "daily 08:00",
            "America/NewYork",
            "unknown time zone \"America/NewYork\": expected an IANA name such as \"America/New_York\" or \"UTC\"",
        ),
        ("daily 08:00", " ", "the time zone is empty"),
        (
            "cron 0 8 * *",
            NY,
            "has 4 cron fields: expected 5, MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK",
        ),
        (
            "cron 60 8 * * *",
            NY,
            "cron field 1 (minute) \"60\": expected minutes 0-59",
        ),
        (
            "cron 0 24 * * *",
            NY,
            "cron field 2 (hour) \"24\": expected hours 0-23",
        ),
        (
            "cron 0 8 0 * *",
            NY,
            "cron field 3 (day of month) \"0\": expected days 1-31",
        ),
        (
            "cron 0 8 * 13 *",
            NY,
            "cron field 4 (month) \"13\": expected months 1-12 or jan-dec",
        ),
        (
            "cron 0 8 * * 8",
            NY,
            "cron field 5 (day of week) \"8\": expected days 0-7 (0 and 7 are Sunday) or sun-sat",
        ),
        (
            "cron 0 8 * * fri-mon",
            NY,
            "the range \"fri-mon\" runs backwards",
        ),
        ("cron */0 8 * * *", NY, "cron field 1 (minute) \"*/0\""),
        ("cron 0 8 ,1 * *", NY, "cron field 3 (day of month) \",1\""),
        (
            "cron 0 8 31 2 *",
            NY,
            "schedule \"cron 0 8 31 2 *\" fires less than once a year (or never)",
        ),
        ("cron 0 8 29 2 *", NY, "fires less than once a year"),
    ];
    for (spec, zone, want) in cases {
        let err = Schedule::parse(spec, zone).expect_err(spec);
        assert!(err.to_string().contains(want), "{spec:?}: {err}");
    }
}

#[test]
fn latest_and_next_around_boundaries() {
    // spec, now (ET), latest <= now, first > now.
    let cases = [
        (
            "daily 08:00",
            "2026-11-23T07:59:59",
            "2026-11-22T08:00 EST",
            "2026-11-23T08:00 EST",
        ),
        (
            "daily 08:00",
            "2026-11-23T08:00",
            "2026-11-23T08:00 EST",
            "2026-11-24T08:00 EST",
        ),
        (
            "daily 08:00",
            "2026-11-23T08:00:01",
            "2026-11-23T08:00 EST",
            "2026-11-24T08:00 EST",
        ),
        (
            "hourly",
            "2026-11-23T00:00",
            "2026-11-23T00:00 EST",
            "2026-11-23T01:00 EST",
        ),
        (
            "hourly",
            "2026-11-22T23:59",
            "2026-11-22T23:00 EST",
            "2026-11-23T00:00 EST",
        ),
        (
            "hourly :15",
            "2026-11-23T10:14",
            "2026-11-23T09:15 EST",
            "2026-11-23T10:15 EST",
        ),
        (
            "weekdays 08:00",
            "2026-11-29T12:00",
            "2026-11-27T08:00 EST",
            "2026-11-30T08:00 EST",
        ),
        (
            "weekdays 08:00",
            "2026-11-30T08:00",
            "2026-11-30T08:00 EST",
            "2026-12-01T08:00 EST",
        ),
        (
            "cron 0 8 1 1 *",
            "2026-11-23T08:00",
            "2026-01-01T08:00 EST",
            "2027-01-01T08:00 EST",
        ),
        (
            "cron 0 0 31 12 *",
            "2026-12-31T00:00",
            "2026-12-31T00:00 EST",
            "2027-12-31T00:00 EST",
        ),
    ];
    for (spec, now, latest, next) in cases {
        let s = Schedule::parse(spec, NY).expect(spec);
        let now = et(now);
        assert_eq!(
            show(s.latest_at_or_before(now), NY),
            latest,
            "{spec} latest at {now}"
        );
        assert_eq!(show(s.next_after(now), NY), next, "{spec} next at {now}");
    }
}

#[test]
fn cron_day_of_month_or_day_of_week() {
    // Both restricted: either matches (crontab). `*/N` counts as `*`.
    let s = Schedule::parse("cron 0 8 1 * mon", NY).expect("valid");
    let from = et("2026-11-23T09:00"); // a Monday
    let mut fired = Vec::new();
    let mut t = from;
    for _ in 0..4 {
        let Some(n) = s.next_after(t) else { break };
        fired.push(show(Some(n), NY));
        t = n;
    }
    assert_eq!(
        fired,
        [
            "2026-11-30T08:00 EST",
            "2026-12-01T08:00 EST",
            "2026-12-07T08:00 EST",
            "2026-12-14T08:00 EST"
        ]
    );
    let s = Schedule::parse("cron 0 8 */2 * mon", NY).expect("valid");
    // Odd days that are Mondays only: 2026-11-23 is odd, 11-30 even,
    // 12-07 odd.
    assert_eq!(show(s.next_after(from), NY), "2026-12-07T08:00 EST");
}

#[test]
fn due_sends_one_digest_for_the_latest_period() {
    let s = Schedule::parse("daily 08:00", NY).expect("valid");
    let period = et("2026-11-23T08:00");
    // last sent, now, due.
    let cases = [
        // Never sent: the latest period is due.
        (None, "2026-11-23T09:30", Some("2026-11-23T08:00 EST")),
        (None, "2026-11-23T07:00", Some("2026-11-22T08:00 EST")),
        // This period already sent.
        (Some(period), "2026-11-23T09:30", None),
        (Some(period), "2026-11-24T07:59", None),
        // The next period has come.
        (
            Some(period),
            "2026-11-24T08:00",
            Some("2026-11-24T08:00 EST"),
        ),
        // Down for three periods: one digest, for the latest.
        (
            Some(period),
            "2026-11-26T10:00",
            Some("2026-11-26T08:00 EST"),
        ),
    ];
    for (last, now, want) in cases {
        let got = due(&s, last, et(now));
        assert_eq!(
            show(got, NY),
            want.unwrap_or("none"),
            "last {last:?}, now {now}"
        );
    }
    // A digest sent at a later instant than any period (clock moved)
    // is not resent.
    assert_eq!(
        due(&s, Some(et("2026-11-23T12:00")), et("2026-11-23T13:00")),
        None
    );
}

#[test]
fn dst_spring_forward_and_fall_back() {
    // 2026-03-08: 02:00 EST becomes 03:00 EDT in New York.
    let s = Schedule::parse("daily 02:30", NY).expect("valid");
    let before = et("2026-03-07T12:00");
    let fire = s.next_after(before).expect("fires");
    assert_eq!(show(Some(fire), NY), "2026-03-08T03:30 EDT");
    assert_eq!(fire.to_string(), "2026-03-08T07:30:00Z");
    assert_eq!(show(s.next_after(fire), NY), "2026-03-09T02:30 EDT");
    assert_eq!(
        show(s.latest_at_or_before(et("2026-03-08T12:00")), NY),
        "2026-03-08T03:30 EDT"
    );
    assert_eq!(due(&s, Some(fire), et("2026-03-08T23:00")), None);

    // Hourly across the gap: 01:00 EST, then 03:00 EDT (02:00 does not
    // exist and lands on 03:00), one real hour apart.
    let h = Schedule::parse("hourly", NY).expect("valid");
    let one = et("2026-03-08T01:00");
    let next = h.next_after(one).expect("fires");
    assert_eq!(show(Some(next), NY), "2026-03-08T03:00 EDT");
    assert_eq!(next.duration_since(one), SignedDuration::from_hours(1));

    // 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice and
    // fires once, at the first.
    let s = Schedule::parse("daily 01:30", NY).expect("valid");
    let fire = s.next_after(et("2026-10-31T12:00")).expect("fires");
    assert_eq!(show(Some(fire), NY), "2026-11-01T01:30 EDT");
    assert_eq!(show(s.next_after(fire), NY), "2026-11-02T01:30 EST");
    let second_0130 = fire + SignedDuration::from_hours(1);
    assert_eq!(
        show(s.latest_at_or_before(second_0130), NY),
        "2026-11-01T01:30 EDT"
    );
    assert_eq!(due(&s, Some(fire), second_0130), None);

    // Daily 08:00 stays 08:00 local across both changes (23 h and 25 h
    // days).
    let s = Schedule::parse("daily 08:00", NY).expect("valid");
    let a = s.next_after(et("2026-03-07T09:00")).expect("fires");
    assert_eq!(show(Some(a), NY), "2026-03-08T08:00 EDT");
    let b = s.next_after(et("2026-10-31T09:00")).expect("fires");
    assert_eq!(show(Some(b), NY), "2026-11-01T08:00 EST");
}
