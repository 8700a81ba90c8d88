//! Schedules: when a digest fires, as crontab's five fields in a time
//! zone, and whether a digest is due.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::zone::{instant, time_zone};
use super::{add_days, parse_hhmm};

/// How far schedules are searched, in days.
const SEARCH_DAYS: i32 = 400;

/// The minutes, hours, days and months a schedule fires at: crontab's five
/// fields, as bit sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    /// Bits 0-59.
    minutes: u64,
    /// Bits 0-23.
    hours: u32,
    /// Bits 1-31.
    days_of_month: u32,
    /// Bits 1-12.
    months: u16,
    /// Bits 0-6, Sunday is 0.
    days_of_week: u8,
    /// The day-of-month field starts with `*`.
    dom_star: bool,
    /// The day-of-week field starts with `*`.
    dow_star: bool,
}

impl Fields {
    fn at(minute: u16, days_of_week: u8) -> Fields {
        Fields {
            minutes: 1 << (minute % 60),
            hours: 1 << (minute / 60),
            days_of_month: ALL_DAYS_OF_MONTH,
            months: ALL_MONTHS,
            days_of_week,
            dom_star: true,
            dow_star: days_of_week == ALL_DAYS_OF_WEEK,
        }
    }

    /// Whether the schedule fires on this day. As in crontab, when both the
    /// day of the month and the day of the week are restricted (neither
    /// starts with `*`), either one matching is enough.
    fn matches_day(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The fire times of one day, as instants (unordered near a DST gap).
    fn fire_times(&self, tz: &TimeZone, date: Date) -> Vec<Timestamp> {
        if !self.matches_day(date) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for h in (0..24u16).filter(|h| self.hours & (1 << h) != 0) {
            for m in (0..60u16).filter(|m| self.minutes & (1 << m) != 0) {
                if let Some(t) = instant(tz, date, h * 60 + m) {
                    out.push(t);
                }
            }
        }
        out
    }
}

const ALL_DAYS_OF_MONTH: u32 = 0xFFFF_FFFE;
const ALL_MONTHS: u16 = 0x1FFE;
const ALL_DAYS_OF_WEEK: u8 = 0x7F;
/// Monday to Friday, Sunday being bit 0.
const WEEKDAYS: u8 = 0b011_1110;

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const CRON_DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct CronField {
    name: &'static str,
    min: u8,
    max: u8,
    names: &'static [&'static str],
    /// The value of `names[0]`.
    names_from: u8,
    expected: &'static str,
}

const CRON_FIELDS: [CronField; 5] = [
    CronField {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
        expected: "minutes 0-59",
    },
    CronField {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
        expected: "hours 0-23",
    },
    CronField {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
        expected: "days 1-31",
    },
    CronField {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
        names_from: 1,
        expected: "months 1-12 or jan-dec",
    },
    CronField {
        name: "day of week",
        min: 0,
        max: 7,
        names: &CRON_DAY_NAMES,
        names_from: 0,
        expected: "days 0-7 (0 and 7 are Sunday) or sun-sat",
    },
];

impl CronField {
    /// One field: a comma list of `*`, `N`, `A-B`, each optionally `/STEP`
    /// (`N/STEP` runs from N to the end).
    fn parse(&self, number: usize, text: &str) -> Result<u64, String> {
        let bad = || {
            format!(
                "cron field {number} ({}) {text:?}: expected {}, with `*`, lists (1,15), ranges (1-5) and steps (*/15)",
                self.name, self.expected
            )
        };
        let value = |s: &str| -> Option<u8> {
            let s = s.to_ascii_lowercase();
            if let Some(i) = self.names.iter().position(|n| *n == s) {
                return Some(self.names_from + i as u8);
            }
            if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok().filter(|v| (self.min..=self.max).contains(v))
        };
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u8 = s.parse().ok().filter(|s| *s >= 1).ok_or_else(bad)?;
                    (r, Some(step))
                }
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                (value(a).ok_or_else(bad)?, value(b).ok_or_else(bad)?)
            } else {
                let v = value(range).ok_or_else(bad)?;
                (v, if step.is_some() { self.max } else { v })
            };
            if lo > hi {
                return Err(format!(
                    "cron field {number} ({}) {text:?}: the range {range:?} runs backwards: expected the smaller value first",
                    self.name
                ));
            }
            for v in (lo..=hi).step_by(usize::from(step.unwrap_or(1))) {
                bits |= 1 << v;
            }
        }
        Ok(bits)
    }
}

/// When a digest fires: a set of civil times in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    spec: String,
    tz_name: String,
    tz: TimeZone,
    fields: Fields,
}

const SCHEDULE_FORMS: &str = "expected \"daily HH:MM\", \"weekdays HH:MM\", \"hourly\", \"hourly :MM\" or \"cron MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\"";

impl Schedule {
    /// Parses the config forms: "daily 08:00", "hourly" (at minute 0),
    /// "hourly :15", "weekdays 08:00" (Mon-Fri), and "cron MIN HOUR DOM MON
    /// DOW" (5-field, like crontab), in the IANA time zone `tz` (e.g.
    /// "America/New_York"). Errors are human sentences naming what was
    /// expected.
    pub fn parse(spec: &str, tz: &str) -> Result<Schedule, String> {
        let zone = time_zone(tz)?;
        let words: Vec<&str> = spec.split_whitespace().collect();
        let Some(first) = words.first() else {
            return Err(format!("the schedule is empty: {SCHEDULE_FORMS}"));
        };
        let time_of = |form: &str| -> Result<u16, String> {
            match words[1..] {
                [t] => parse_hhmm(t, false).ok_or_else(|| {
                    format!(
                        "schedule {spec:?}: expected a time from 00:00 to 23:59 after \"{form}\", e.g. \"{form} 08:00\""
                    )
                }),
                [] => Err(format!(
                    "schedule {spec:?}: expected a time after \"{form}\", e.g. \"{form} 08:00\""
                )),
                _ => Err(format!(
                    "schedule {spec:?}: expected only a time after \"{form}\", e.g. \"{form} 08:00\""
                )),
            }
        };
        let fields = match first.to_ascii_lowercase().as_str() {
            "daily" => Fields::at(time_of("daily")?, ALL_DAYS_OF_WEEK),
            "weekdays" => Fields::at(time_of("weekdays")?, WEEKDAYS),
            "hourly" => {
                let minute = match words[1..] {
                    [] => 0,
                    [m] => m
                        .strip_prefix(':')
                        .filter(|m| m.len() == 2 && m.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|m| m.parse::<u8>().ok())
                        .filter(|m| *m < 60)
                        .ok_or_else(|| {
                            format!(
                                "schedule {spec:?}: expected \"hourly\" (at minute 0) or \"hourly :MM\" with MM from 00 to 59, e.g. \"hourly :15\""
                            )
                        })?,
                    _ => {
                        return Err(format!(
                            "schedule {spec:?}: expected \"hourly\" (at minute 0) or \"hourly :MM\", e.g. \"hourly :15\""
                        ));
                    }
                };
                Fields {
                    minutes: 1 << minute,
                    hours: (1 << 24) - 1,
                    days_of_month: ALL_DAYS_OF_MONTH,
                    months: ALL_MONTHS,
                    days_of_week: ALL_DAYS_OF_WEEK,
                    dom_star: true,
                    dow_star: true,
                }
            }
            "cron" => Self::parse_cron(spec, &words[1..])?,
            _ => return Err(format!("unknown schedule {spec:?}: {SCHEDULE_FORMS}")),
        };
        Ok(Schedule {
            spec: words.join(" "),
            tz_name: tz.trim().to_string(),
            tz: zone,
            fields,
        })
    }

    fn parse_cron(spec: &str, fields: &[&str]) -> Result<Fields, String> {
        if fields.len() != 5 {
            return Err(format!(
                "schedule {spec:?} has {} cron field{}: expected 5, MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK, e.g. \"cron 0 8 * * 1-5\"",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            ));
        }
        let mut bits = [0u64; 5];
        for (i, (def, text)) in CRON_FIELDS.iter().zip(fields).enumerate() {
            bits[i] = def.parse(i + 1, text)?;
        }
        // Sunday is 0 or 7.
        let dow = (bits[4] | (bits[4] >> 7)) & u64::from(ALL_DAYS_OF_WEEK);
        let f = Fields {
            minutes: bits[0],
            hours: bits[1] as u32,
            days_of_month: bits[2] as u32,
            months: bits[3] as u16,
            days_of_week: dow as u8,
            dom_star: fields[2].starts_with('*'),
            dow_star: fields[4].starts_with('*'),
        };
        // A schedule that leaves a gap longer than the search window (29
        // February, 31 April) would look "never due": refuse it here. 28
        // years are a full cycle of weekdays and leap years (1901-2099).
        let mut last = Date::constant(2000, 1, 1);
        let mut day = last;
        let end = Date::constant(2028, 12, 31);
        let mut fired = false;
        while day <= end {
            if f.matches_day(day) {
                if fired
                    && day
                        .since(last)
                        .map_or(true, |s| s.get_days() >= SEARCH_DAYS)
                {
                    break;
                }
                fired = true;
                last = day;
            }
            day = match day.tomorrow() {
                Ok(d) => d,
                Err(_) => break,
            };
        }
        let gap_at_end = end
            .since(last)
            .map_or(true, |s| s.get_days() >= SEARCH_DAYS);
        if !fired || day <= end || gap_at_end {
            return Err(format!(
                "schedule {spec:?} fires less than once a year (or never): expected days that occur at least once a year"
            ));
        }
        Ok(f)
    }

    /// The schedule as written (spaces normalised).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The IANA name of the schedule's time zone.
    pub fn time_zone(&self) -> &str {
        &self.tz_name
    }

    /// The latest fire time <= now (None if none in the last ~400 days).
    pub fn latest_at_or_before(&self, now: Timestamp) -> Option<Timestamp> {
        let today = self.tz.to_datetime(now).date();
        let mut best: Option<Timestamp> = None;
        let mut found_on: Option<i32> = None;
        // From tomorrow (a DST gap can move a time across midnight)
        // backwards; the day before the first day with a fire time is
        // looked at too, for the same reason.
        for k in -1..=SEARCH_DAYS {
            if found_on.is_some_and(|f| k > f + 1) {
                break;
            }
            let Some(date) = add_days(today, -k) else {
                continue;
            };
            for t in self.fields.fire_times(&self.tz, date) {
                if t <= now && best.is_none_or(|b| t > b) {
                    best = Some(t);
                    found_on.get_or_insert(k);
                }
            }
        }
        best
    }

    /// The first fire time > now (None if none in the next ~400 days).
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        let today = self.tz.to_datetime(now).date();
        let mut best: Option<Timestamp> = None;
        let mut found_on: Option<i32> = None;
        for k in -1..=SEARCH_DAYS {
            if found_on.is_some_and(|f| k > f + 1) {
                break;
            }
            let Some(date) = add_days(today, k) else {
                continue;
            };
            for t in self.fields.fire_times(&self.tz, date) {
                if t > now && best.is_none_or(|b| t < b) {
                    best = Some(t);
                    found_on.get_or_insert(k);
                }
            }
        }
        best
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.spec, self.tz_name)
    }
}

/// Whether a digest is due: `last_sent` is the fire time (period) of the
/// last digest sent (None: never). Returns the period to send now: the
/// latest fire time <= now, if it is later than last_sent. A daemon down for
/// several periods therefore sends ONE digest (for the latest period) when
/// it comes back, not one per missed period. When never sent, the latest
/// period counts as due.
pub fn due(schedule: &Schedule, last_sent: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
    let latest = schedule.latest_at_or_before(now)?;
    match last_sent {
        Some(sent) if latest <= sent => None,
        _ => Some(latest),
    }
}

#[cfg(test)]
mod tests {
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
            assert!(err.contains(want), "{spec:?}: {err}");
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
}
