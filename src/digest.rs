//! Digests: when they are due, when Tier 2 is at work, and what they say.
//!
//! This module owns what the daemon needs for the managers' digests and the
//! Tier-2 procedure, kept here as pure functions so that they can be tested
//! at any instant without a clock, a store or a mail server:
//!
//! - [`Schedule`]: the config's schedule forms (`daily 08:00`, `weekdays
//!   08:00`, `hourly`, `hourly :15`, `cron MIN HOUR DOM MON DOW`) in an IANA
//!   time zone, and [`due`], which decides whether a digest must go now. A
//!   daemon that was down for several periods sends one digest, for the
//!   latest period, not one per missed period.
//! - [`BusinessHours`]: the Tier-2 opening hours ("Monday-Friday 8:00AM-9:00PM
//!   and Saturday 8:00AM-4:30PM" in the organisation's zone), used to say
//!   whether Tier 2 is open (and [`BusinessHours::open_between`], for
//!   counting time in working hours; overdue cases are counted in wall-clock
//!   time for now).
//! - Content ([`rows`], [`DigestData::from_cases`]): the stored cases of a
//!   digest as the rows it lists, each open case once, most urgent first.
//! - Rendering ([`render`]): a [`DigestData`] into a subject, a plain-text
//!   body and an HTML body, read on phones: a summary a manager reads
//!   without scrolling, then the cases; the HTML kept under the size at
//!   which Gmail clips a message ([`HTML_MAX_BYTES`]).
//!
//! - The job ([`build_digest`] and the daemon's and the command's entry
//!   points, in `job`): the one part that reads the store and queues mail.
//!
//! Time is always passed in, and so are the cases (the job reads the
//! store). Schedules and hours are civil times in a zone:
//! a time that does not exist on a spring-forward day (02:30 in New York)
//! fires at the same distance after the transition (03:30), and a time that
//! happens twice on a fall-back day fires at the first of the two (jiff's
//! "compatible" disambiguation, as cron daemons and calendars do). The only
//! thing read from outside is the time-zone database, by zone name (the
//! system's, else the copy compiled in).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::Config;
use crate::extract::Field;
use crate::record::CaseRecord;
use crate::vendor::VendorKey;

mod job;

pub use job::build_digest;
pub(crate) use job::{digest_command, queue_due};

/// How far schedules and opening hours are searched, in days.
const SEARCH_DAYS: i32 = 400;

/// Looks up an IANA time zone by name.
pub(crate) fn time_zone(name: &str) -> Result<TimeZone, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(
            "the time zone is empty: expected an IANA name such as \"America/New_York\" or \"UTC\""
                .into(),
        );
    }
    TimeZone::get(name).map_err(|_| {
        format!(
            "unknown time zone {name:?}: expected an IANA name such as \"America/New_York\" or \"UTC\""
        )
    })
}

/// `H:MM` or `HH:MM` to minutes since midnight; `24:00` only when allowed.
fn parse_hhmm(s: &str, allow_24: bool) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if !(1..=2).contains(&h.len()) || m.len() != 2 {
        return None;
    }
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if h < 24 && m < 60 {
        Some(h * 60 + m)
    } else if allow_24 && h == 24 && m == 0 {
        Some(24 * 60)
    } else {
        None
    }
}

/// The instant of a civil date and minute of the day (1440 is the next
/// midnight) in a zone, with compatible disambiguation.
fn instant(tz: &TimeZone, date: Date, minute: u16) -> Option<Timestamp> {
    let dt = if minute >= 24 * 60 {
        date.tomorrow().ok()?.at(0, 0, 0, 0)
    } else {
        date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0)
    };
    tz.to_ambiguous_timestamp(dt).compatible().ok()
}

fn add_days(date: Date, n: i32) -> Option<Date> {
    date.checked_add(jiff::Span::new().days(n)).ok()
}

// ---------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Business hours
// ---------------------------------------------------------------------------

const DAY_NAMES: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

/// A day key (`mon`, `monday`, `mon-fri`, `sat-sun`) to weekdays, Monday 0.
fn parse_day_key(key: &str) -> Result<Vec<usize>, String> {
    let day = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        DAY_NAMES.iter().position(|(a, b)| *a == s || *b == s)
    };
    let days = match key.split_once('-') {
        Some((a, b)) => day(a).zip(day(b)).map(|(a, b)| {
            let mut v = vec![a];
            let mut d = a;
            while d != b {
                d = (d + 1) % 7;
                v.push(d);
            }
            v
        }),
        None => day(key).map(|d| vec![d]),
    };
    days.ok_or_else(|| {
        format!(
            "unknown day {key:?}: expected mon, tue, wed, thu, fri, sat, sun, or a range of them such as \"mon-fri\""
        )
    })
}

/// `08:00-21:00`, several separated by commas, or `closed`.
fn parse_ranges(key: &str, value: &str) -> Result<Vec<(u16, u16)>, String> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("closed") {
        return Ok(Vec::new());
    }
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for part in v.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, ""));
        let (Some(open), Some(close)) = (parse_hhmm(a, false), parse_hhmm(b, true)) else {
            return Err(format!(
                "{key} = {value:?}: expected opening hours such as \"08:00-21:00\" (several separated by commas, or \"closed\")"
            ));
        };
        if close <= open {
            return Err(format!(
                "{key} = {value:?}: {} closes before it opens: expected a range within one day such as \"08:00-21:00\" (a night past 24:00 is split across two days)",
                part.trim()
            ));
        }
        ranges.push((open, close));
    }
    ranges.sort_unstable();
    if ranges.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(format!(
            "{key} = {value:?}: the ranges overlap: expected separate ranges such as \"08:00-12:00, 13:00-17:00\""
        ));
    }
    Ok(ranges)
}

/// A day key, the weekdays it names, and their ranges.
type DayEntry = (String, Vec<usize>, Vec<(u16, u16)>);

/// Opening hours in a time zone: for each weekday, zero or more
/// `[open, close)` ranges of civil time.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    tz_name: String,
    tz: TimeZone,
    /// Monday first; minutes since midnight, `close` up to 1440.
    days: [Vec<(u16, u16)>; 7],
}

impl BusinessHours {
    /// From config: time zone and a map like { mon = "08:00-21:00", tue =
    /// ..., sat = "08:00-16:30" } (days absent are closed; also accept
    /// "mon-fri" as a key meaning each of those days). Error messages name
    /// the bad value and what was expected.
    pub fn parse(tz: &str, days: &BTreeMap<String, String>) -> Result<BusinessHours, String> {
        let zone = time_zone(tz)?;
        let mut entries = Vec::new();
        for (key, value) in days {
            entries.push((key.clone(), parse_day_key(key)?, parse_ranges(key, value)?));
        }
        Self::build(tz.trim().to_string(), zone, entries)
    }

    fn build(
        tz_name: String,
        tz: TimeZone,
        entries: Vec<DayEntry>,
    ) -> Result<BusinessHours, String> {
        let mut days: [Vec<(u16, u16)>; 7] = Default::default();
        let mut given_by: [Option<String>; 7] = Default::default();
        for (key, weekdays, ranges) in entries {
            for d in weekdays {
                if let Some(previous) = &given_by[d] {
                    return Err(format!(
                        "{} is given twice, by {previous:?} and by {key:?}: expected each day once",
                        DAY_NAMES[d].0
                    ));
                }
                given_by[d] = Some(key.clone());
                days[d] = ranges.clone();
            }
        }
        Ok(BusinessHours { tz_name, tz, days })
    }

    /// The IANA name of the time zone.
    pub fn time_zone(&self) -> &str {
        &self.tz_name
    }

    fn ranges(&self, date: Date) -> &[(u16, u16)] {
        &self.days[date.weekday().to_monday_zero_offset() as usize]
    }

    pub fn is_open(&self, at: Timestamp) -> bool {
        let dt = self.tz.to_datetime(at);
        let second =
            i32::from(dt.hour()) * 3600 + i32::from(dt.minute()) * 60 + i32::from(dt.second());
        self.ranges(dt.date())
            .iter()
            .any(|&(o, c)| i32::from(o) * 60 <= second && second < i32::from(c) * 60)
    }

    /// `at` itself if open, else the next opening time (None if never open).
    ///
    /// An opening time that falls in a DST gap counts from the same distance
    /// after the transition (08:00 that does not exist becomes 09:00).
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        if self.is_open(at) {
            return Some(at);
        }
        let today = self.tz.to_datetime(at).date();
        let mut best: Option<Timestamp> = None;
        let mut found_on: Option<i32> = None;
        for k in -1..=8 {
            if found_on.is_some_and(|f| k > f + 1) {
                break;
            }
            let Some(date) = add_days(today, k) else {
                continue;
            };
            for &(open, _) in self.ranges(date) {
                let Some(t) = instant(&self.tz, date, open) else {
                    continue;
                };
                if t > at && self.is_open(t) && best.is_none_or(|b| t < b) {
                    best = Some(t);
                    found_on.get_or_insert(k);
                }
            }
        }
        best
    }

    /// How long the business was open between `from` and `to` (zero when
    /// `to` is not after `from`): the clock for Tier-2 overdue cases.
    pub fn open_between(&self, from: Timestamp, to: Timestamp) -> SignedDuration {
        if to <= from {
            return SignedDuration::ZERO;
        }
        let mut total = SignedDuration::ZERO;
        let Some(mut date) = add_days(self.tz.to_datetime(from).date(), -1) else {
            return total;
        };
        let Some(last) = add_days(self.tz.to_datetime(to).date(), 1) else {
            return total;
        };
        while date <= last {
            for &(open, close) in self.ranges(date) {
                if let (Some(o), Some(c)) = (
                    instant(&self.tz, date, open),
                    instant(&self.tz, date, close),
                ) {
                    let (o, c) = (o.max(from), c.min(to));
                    if c > o {
                        total += c.duration_since(o);
                    }
                }
            }
            date = match date.tomorrow() {
                Ok(d) => d,
                Err(_) => break,
            };
        }
        total
    }
}

/// `[tier2_hours]`: `time_zone` and one key per day or range of days, each
/// checked as it is read, so that a config error points at the bad value.
impl<'de> Deserialize<'de> for BusinessHours {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ZoneValue(String, TimeZone);
        impl<'de> Deserialize<'de> for ZoneValue {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = String::deserialize(d)?;
                let tz = time_zone(&name).map_err(de::Error::custom)?;
                Ok(ZoneValue(name.trim().to_string(), tz))
            }
        }
        // A key checked as it is read, so that an error points at it.
        enum HoursKey {
            TimeZone,
            Days(String, Vec<usize>),
        }
        impl<'de> Deserialize<'de> for HoursKey {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let key = String::deserialize(d)?;
                if key == "time_zone" {
                    return Ok(HoursKey::TimeZone);
                }
                let days = parse_day_key(&key).map_err(de::Error::custom)?;
                Ok(HoursKey::Days(key, days))
            }
        }
        struct RangesSeed<'k>(&'k str);
        impl<'de> DeserializeSeed<'de> for RangesSeed<'_> {
            type Value = Vec<(u16, u16)>;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                let value = String::deserialize(d)?;
                parse_ranges(self.0, &value).map_err(de::Error::custom)
            }
        }
        struct HoursVisitor;
        impl<'de> Visitor<'de> for HoursVisitor {
            type Value = BusinessHours;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a table with `time_zone` and opening hours per day, such as `mon-fri = \"08:00-21:00\"`",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BusinessHours, A::Error> {
                let mut zone: Option<ZoneValue> = None;
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<HoursKey>()? {
                    match key {
                        HoursKey::TimeZone => {
                            if zone.is_some() {
                                return Err(de::Error::duplicate_field("time_zone"));
                            }
                            zone = Some(map.next_value()?);
                        }
                        HoursKey::Days(key, days) => {
                            let ranges = map.next_value_seed(RangesSeed(&key))?;
                            entries.push((key, days, ranges));
                        }
                    }
                }
                let ZoneValue(name, tz) =
                    zone.ok_or_else(|| de::Error::missing_field("time_zone"))?;
                BusinessHours::build(name, tz, entries).map_err(de::Error::custom)
            }
        }
        d.deserialize_map(HoursVisitor)
    }
}

// ---------------------------------------------------------------------------
// Digest config
// ---------------------------------------------------------------------------

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub span: Option<Range<usize>>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

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
            time_zone(tz.get_ref()).map_err(|message| SpecError {
                span: Some(tz.span()),
                message,
            })?;
        }
        self.schedule
            .as_ref()
            .map(|s| {
                Schedule::parse(s.get_ref(), self.time_zone_name()).map_err(|message| SpecError {
                    span: Some(s.span()),
                    message,
                })
            })
            .transpose()
    }
}

// ---------------------------------------------------------------------------
// Digest content: the stored cases as rows (pure)
// ---------------------------------------------------------------------------

/// One case, as a digest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestRow {
    pub case_id: String,
    pub order_id: Option<String>,
    pub customer: Option<String>,
    /// One line: see [`shorten_issue`].
    pub issue: String,
    /// Flag categories in words ("Review threat"), each once.
    pub flags: Vec<String>,
    pub risk: u8,
    pub tier: u8,
    /// `open`, `escalated` or `high_priority`.
    pub status: String,
    /// When the agent sent it (see [`crate::lifecycle::sent_at`]), Unix
    /// seconds: ages count from here.
    pub sent_at: i64,
    /// When the daemon received it, Unix seconds: whether it is new since
    /// the last digest.
    pub received_at: i64,
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
    /// Unix seconds.
    pub now: i64,
    /// Unix seconds: the previous period (None on the first digest).
    pub since: Option<i64>,
    /// Every open case of the digest, each once, most urgent first (see
    /// [`urgency`]).
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
/// - Ages, and so being overdue, count from when the agent sent the case
///   (its `Date:`, see [`crate::lifecycle::sent_at`]); a case already
///   re-escalated is overdue whatever its age.
/// - The owner is the `owner` of the first rule (in table order) whose
///   forward went to one of the case's recipients, so a Tier-2 case that
///   the supervisor also had is Tier 2's.
/// - A vendor is named as the earliest of its cases that gives the id
///   wrote it, else as the earliest did (as the repeat-vendor report
///   names it), so that `VID-77` and `FastPick (VID-77)` are one vendor.
///   A case stored before vendors were resolved is read with today's
///   rules.
pub fn rows(
    config: &Config,
    digest: &str,
    cases: impl IntoIterator<Item = CaseRecord>,
    now: i64,
) -> Vec<DigestRow> {
    let overdue_after = config.lifecycle.overdue.as_ref().map(|o| o.after);
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
        let age = now.saturating_sub(sent_at);
        let allowed = overdue_after
            .as_ref()
            .and_then(|a| a.get(usize::from(rec.case.risk)).copied().flatten());
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
            overdue: rec.overdue_at.is_some()
                || allowed.is_some_and(|a| age > i64::try_from(a.as_secs()).unwrap_or(i64::MAX)),
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
fn one_line(value: Option<&str>) -> Option<String> {
    value
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|v| !v.is_empty())
}

impl DigestData {
    /// Digest `name` of `config` at `now` for the stored `cases` (all or
    /// only the open ones: see [`rows`]), covering `since` (the previous
    /// period; None for the first digest).
    pub fn from_cases(
        config: &Config,
        name: &str,
        cases: impl IntoIterator<Item = CaseRecord>,
        since: Option<i64>,
        now: i64,
    ) -> Result<DigestData, String> {
        let d = config.router.digests.get(name).ok_or_else(|| {
            let known: Vec<&str> = config.router.digests.keys().map(String::as_str).collect();
            format!("no digest {name:?}: expected one of {}", known.join(", "))
        })?;
        let ts = |t: i64| Timestamp::from_second(t).map_err(|e| e.to_string());
        Ok(DigestData::assemble(
            name,
            &d.title,
            d.description.as_deref(),
            &d.time_zone,
            ts(now)?,
            since.map(ts).transpose()?,
            rows(config, name, cases, now),
        ))
    }

    /// A digest of `cases`: sorts them by [`urgency`] and finds the vendors
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
            now: now.as_second(),
            since: since.map(Timestamp::as_second),
            time_zone: time_zone.to_string(),
            cases,
            repeat_vendors: vendors,
        }
    }

    /// Whether a case is new since the last digest (every case is, in the
    /// first).
    fn is_new(&self, row: &DigestRow) -> bool {
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

// ---------------------------------------------------------------------------
// Rendering (pure)
// ---------------------------------------------------------------------------

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
    let now = at(data.now);
    RowContext {
        case_id: row.case_id.clone(),
        order_id: one_line(row.order_id.as_deref()),
        customer: one_line(row.customer.as_deref()),
        issue: shorten_issue(&row.issue),
        flags: row.flags.clone(),
        risk: row.risk,
        tier: row.tier,
        status: (row.status != "open").then(|| row.status.replace('_', " ")),
        age: crate::text::age(data.now.saturating_sub(row.sent_at)),
        sent_local: crate::text::local_time(at(row.sent_at), tz, now),
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
    fn new(data: &'a DigestData) -> Result<Prepared<'a>, String> {
        let tz = time_zone(&data.time_zone).map_err(|e| format!("digest {:?}: {e}", data.name))?;
        let now = at(data.now);
        Ok(Prepared {
            data,
            now_local: crate::text::local_time(now, &tz, now),
            date_local: now.to_zoned(tz.clone()).strftime("%a %-d %b").to_string(),
            since_local: data.since.map(|s| crate::text::local_time(at(s), &tz, now)),
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
pub fn render(env: &minijinja::Environment, data: &DigestData) -> Result<RenderedDigest, String> {
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
) -> Result<RenderedDigest, String> {
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
) -> Result<RenderedDigest, String> {
    let mut ctx = prepared.context(listed);
    let run = |template: &str, ctx: &Context<'_>| -> Result<String, String> {
        env.get_template(template)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(ctx))))
            .map_err(|e| format!("template {template:?}: {e:#}"))
    };
    let txt_name = format!("{name}.txt");
    let text = run(&txt_name, &ctx)?;
    let (first, body) = text.split_once('\n').unwrap_or((&text, ""));
    let Some(subject) = first.strip_prefix("Subject:") else {
        return Err(format!(
            "template {txt_name:?}: expected the first line to be `Subject: ...`"
        ));
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
        sent_at: now - 3600 * n,
        received_at: now - 3600 * n + 60,
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

    const NY: &str = "America/New_York";
    const TXT: &str = include_str!("../config/templates/digest.txt");
    const HTML: &str = include_str!("../config/templates/digest.html");

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).expect("the test machine has tzdata")
    }

    /// A civil time ("2026-11-23T08:00") in a zone, compatible.
    fn at(zone: &str, civil: &str) -> Timestamp {
        let dt: jiff::civil::DateTime = civil.parse().expect("test datetime");
        tz(zone)
            .to_ambiguous_timestamp(dt)
            .compatible()
            .expect("test datetime in range")
    }

    fn et(civil: &str) -> Timestamp {
        at(NY, civil)
    }

    fn show(t: Option<Timestamp>, zone: &str) -> String {
        t.map_or("none".into(), |t| {
            t.to_zoned(tz(zone))
                .strftime("%Y-%m-%dT%H:%M %Z")
                .to_string()
        })
    }

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

    fn tier2_hours() -> BusinessHours {
        let days = BTreeMap::from([
            ("mon-fri".to_string(), "08:00-21:00".to_string()),
            ("sat".to_string(), "08:00-16:30".to_string()),
        ]);
        BusinessHours::parse(NY, &days).expect("valid")
    }

    #[test]
    fn business_hours_open_at_fixed_instants() {
        let h = tier2_hours();
        assert_eq!(h.time_zone(), NY);
        let cases = [
            ("2026-11-23T07:59", false), // Monday
            ("2026-11-23T07:59:59", false),
            ("2026-11-23T08:00", true),
            ("2026-11-23T20:59", true),
            ("2026-11-23T20:59:59", true),
            ("2026-11-23T21:00", false),
            ("2026-11-27T12:00", true), // Friday
            ("2026-11-28T08:00", true), // Saturday
            ("2026-11-28T16:29", true),
            ("2026-11-28T16:30", false),
            ("2026-11-29T12:00", false), // Sunday
            ("2026-07-13T08:00", true),  // a Monday in summer time (EDT)
            ("2026-07-13T07:59", false),
        ];
        for (t, open) in cases {
            assert_eq!(h.is_open(et(t)), open, "{t}");
        }
    }

    #[test]
    fn business_hours_next_open() {
        let h = tier2_hours();
        let cases = [
            ("2026-11-27T22:00", "2026-11-28T08:00 EST"), // Friday night -> Saturday
            ("2026-11-28T17:00", "2026-11-30T08:00 EST"), // Saturday -> Monday
            ("2026-11-29T23:59", "2026-11-30T08:00 EST"), // Sunday
            ("2026-11-23T07:59", "2026-11-23T08:00 EST"),
            ("2026-11-23T10:00", "2026-11-23T10:00 EST"), // open: itself
            ("2026-03-07T17:00", "2026-03-09T08:00 EDT"), // over spring-forward
        ];
        for (from, want) in cases {
            assert_eq!(show(h.next_open(et(from)), NY), want, "from {from}");
        }
        let never = BusinessHours::parse(NY, &BTreeMap::new()).expect("valid");
        assert_eq!(never.next_open(et("2026-11-23T10:00")), None);
        assert!(!never.is_open(et("2026-11-23T10:00")));

        // Several ranges a day, a whole day, and "closed".
        let days = BTreeMap::from([
            ("Monday".to_string(), "08:00-12:00, 13:00-17:00".to_string()),
            ("sat-sun".to_string(), "00:00-24:00".to_string()),
            ("fri".to_string(), "closed".to_string()),
        ]);
        let h = BusinessHours::parse("UTC", &days).expect("valid");
        let utc = |s: &str| at("UTC", s);
        assert!(!h.is_open(utc("2026-11-23T12:30")));
        assert_eq!(
            show(h.next_open(utc("2026-11-23T12:30")), "UTC"),
            "2026-11-23T13:00 UTC"
        );
        assert!(h.is_open(utc("2026-11-29T23:59:59")));
        assert!(!h.is_open(utc("2026-11-27T10:00")));
        assert_eq!(
            show(h.next_open(utc("2026-11-27T10:00")), "UTC"),
            "2026-11-28T00:00 UTC"
        );
    }

    #[test]
    fn business_hours_errors_name_the_value() {
        let cases = [
            (
                "mom",
                "08:00-21:00",
                "unknown day \"mom\": expected mon, tue, wed, thu, fri, sat, sun, or a range of them such as \"mon-fri\"",
            ),
            (
                "mon",
                "8-21",
                "mon = \"8-21\": expected opening hours such as \"08:00-21:00\"",
            ),
            ("mon", "08:00", "mon = \"08:00\": expected opening hours"),
            ("mon", "21:00-08:00", "21:00-08:00 closes before it opens"),
            ("mon", "08:00-12:00,11:00-13:00", "the ranges overlap"),
            ("mon", "24:00-24:00", "expected opening hours"),
        ];
        for (key, value, want) in cases {
            let days = BTreeMap::from([(key.to_string(), value.to_string())]);
            let err = BusinessHours::parse(NY, &days).expect_err(key);
            assert!(err.contains(want), "{key} = {value}: {err}");
        }
        let days = BTreeMap::from([
            ("mon-fri".to_string(), "08:00-21:00".to_string()),
            ("fri".to_string(), "08:00-17:00".to_string()),
        ]);
        let err = BusinessHours::parse(NY, &days).expect_err("twice");
        assert_eq!(
            err,
            "fri is given twice, by \"fri\" and by \"mon-fri\": expected each day once"
        );
        let err = BusinessHours::parse("EST5", &BTreeMap::new()).expect_err("zone");
        assert!(err.starts_with("unknown time zone \"EST5\""), "{err}");
    }

    #[test]
    fn business_hours_from_toml() {
        #[derive(Deserialize)]
        struct File {
            tier2_hours: BusinessHours,
        }
        let text = "[tier2_hours]\ntime_zone = \"America/New_York\"\nmon-fri = \"08:00-21:00\"\nsat = \"08:00-16:30\"\n";
        let f: File = toml::from_str(text).expect("valid");
        assert_eq!(f.tier2_hours, tier2_hours());

        // Errors point at the bad value (line 3 here).
        let line_of = |text: &str| -> (usize, String) {
            let e = toml::from_str::<File>(text).err().expect("an error");
            let line = e
                .span()
                .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
            (line, e.message().to_string())
        };
        let (line, msg) =
            line_of("[tier2_hours]\ntime_zone = \"America/New_York\"\nmon = \"8-21\"\n");
        assert_eq!(line, 3, "{msg}");
        assert!(
            msg.contains("mon = \"8-21\": expected opening hours"),
            "{msg}"
        );
        let (line, msg) = line_of("[tier2_hours]\ntime_zone = \"Mars/Olympus\"\n");
        assert_eq!(line, 2, "{msg}");
        assert!(msg.contains("unknown time zone \"Mars/Olympus\""), "{msg}");
        let (_, msg) = line_of("[tier2_hours]\nmon = \"08:00-21:00\"\n");
        assert!(msg.contains("time_zone"), "{msg}");
        let (_, msg) = line_of("[tier2_hours]\ntime_zone = \"UTC\"\nholiday = \"closed\"\n");
        assert!(msg.contains("unknown day \"holiday\""), "{msg}");
    }

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

    #[test]
    fn business_hours_open_between() {
        let h = tier2_hours();
        // Opened Saturday 15:00: 1.5 h that day, closed Sunday, 2 h Monday.
        let opened = et("2026-11-28T15:00");
        let cases = [
            ("2026-11-28T15:00", "2026-11-30T10:00", 90 + 120),
            ("2026-11-28T17:00", "2026-11-30T07:00", 0),
            ("2026-11-30T10:00", "2026-11-28T15:00", 0),
            (
                "2026-11-23T00:00",
                "2026-11-30T00:00",
                5 * 13 * 60 + 8 * 60 + 30,
            ),
            // Over spring-forward: Saturday 7 March to Monday 9 March.
            ("2026-03-07T16:00", "2026-03-09T09:00", 30 + 60),
        ];
        for (from, to, minutes) in cases {
            assert_eq!(
                h.open_between(et(from), et(to)),
                SignedDuration::from_mins(minutes),
                "{from} to {to}"
            );
        }
        assert_eq!(h.open_between(opened, opened), SignedDuration::ZERO);
    }

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
        config: &Config,
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
            received.as_second(),
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
        let config = Config::builtin().expect("shipped config");
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
        assert!(crate::lifecycle::resolve(
            &mut d,
            None,
            "cli",
            now.as_second()
        ));
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
        f.overdue_at = Some(now.as_second());

        let rows = rows(
            &config,
            "managers_daily",
            [f, e, d, c, b, a],
            now.as_second(),
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
            "2026-11-24T14:39:00Z"
                .parse::<Timestamp>()
                .expect("t")
                .as_second()
        );
        assert_eq!(a.received_at, a.sent_at + 120);
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

    fn row(id: &str, tier: u8, risk: u8, sent: &str) -> DigestRow {
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
            sent_at: sent,
            received_at: sent + 120,
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

    fn environment() -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        add_templates(&mut env, "digest", TXT, HTML).expect("the shipped templates compile");
        env
    }

    fn sample() -> DigestData {
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
        a.received_at = et("2026-11-23T09:00").as_second();
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
        assert_eq!(d.since, Some(et("2026-11-23T08:00").as_second()));
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
        assert!(err.contains("unknown time zone \"Nowhere/Land\""), "{err}");
        let err = render_template(&env, "weekly", &sample()).expect_err("missing");
        assert!(err.contains("\"weekly.txt\""), "{err}");
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
