//! Digests: when they are due, when Tier 2 is at work, and what they say.
//!
//! This module owns three things the daemon needs for the managers' digests
//! and the Tier-2 procedure, kept here as pure functions so that they can be
//! tested at any instant without a clock, a store or a mail server:
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
//! - Rendering ([`render`]): a [`DigestData`] into a subject, a plain-text
//!   body and an HTML body, read on phones.
//!
//! Time is always passed in. Schedules and hours are civil times in a zone:
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
// Digest content and rendering
// ---------------------------------------------------------------------------

/// One case, as a digest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestRow {
    pub case_id: String,
    pub order_id: Option<String>,
    pub customer: Option<String>,
    /// One line: see [`shorten_issue`] (rendering applies it again).
    pub issue: String,
    /// Flag category names.
    pub flags: Vec<String>,
    pub risk: u8,
    pub tier: u8,
    pub status: String,
    /// Unix seconds.
    pub opened_at: i64,
    /// "35 min", "5 h", "3 d": see [`crate::text::age`] (rendering fills it in from
    /// the digest's `now`).
    pub age: String,
    /// The agent's original Message-ID, without `<>`.
    pub message_id: Option<String>,
    pub overdue: bool,
    pub vendor: Option<String>,
}

/// A vendor named by more than one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorRow {
    pub vendor: String,
    pub cases: Vec<String>,
    pub count: usize,
}

/// Everything one digest says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestData {
    pub name: String,
    pub description: Option<String>,
    /// Unix seconds.
    pub now: i64,
    /// Unix seconds: the previous period (None on the first digest).
    pub since: Option<i64>,
    pub time_zone: String,
    /// Cases opened since `since` (the daemon passes open ones only:
    /// resolved cases leave the digests).
    pub opened: Vec<DigestRow>,
    /// All open cases.
    pub open: Vec<DigestRow>,
    pub overdue: Vec<DigestRow>,
    pub repeat_vendors: Vec<VendorRow>,
    /// Cases per flag category (of the open cases plus the ones opened in
    /// the period), highest first.
    pub categories: Vec<(String, usize)>,
}

impl DigestData {
    /// Builds a digest from its rows: `opened` are the cases opened since
    /// `since` (open or not), `open` every open case. Derives `overdue` (the
    /// open rows marked overdue), `repeat_vendors` (vendors, compared without
    /// case, named by two or more of these cases) and `categories`.
    #[allow(clippy::too_many_arguments)]
    pub fn assemble(
        name: &str,
        description: Option<&str>,
        time_zone: &str,
        now: Timestamp,
        since: Option<Timestamp>,
        opened: Vec<DigestRow>,
        open: Vec<DigestRow>,
    ) -> DigestData {
        let mut seen: Vec<&DigestRow> = Vec::new();
        for r in open.iter().chain(&opened) {
            if !seen.iter().any(|s| s.case_id == r.case_id) {
                seen.push(r);
            }
        }
        let mut categories: Vec<(String, usize)> = Vec::new();
        let mut vendors: Vec<VendorRow> = Vec::new();
        for r in &seen {
            let mut flags: Vec<&String> = r.flags.iter().collect();
            flags.sort();
            flags.dedup();
            for f in flags {
                match categories.iter_mut().find(|(c, _)| c == f) {
                    Some((_, n)) => *n += 1,
                    None => categories.push((f.clone(), 1)),
                }
            }
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
        categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        vendors.retain(|v| v.count >= 2);
        for v in &mut vendors {
            v.cases.sort();
        }
        vendors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.vendor.cmp(&b.vendor)));
        let overdue = open.iter().filter(|r| r.overdue).cloned().collect();
        DigestData {
            name: name.to_string(),
            description: description.map(str::to_string),
            now: now.as_second(),
            since: since.map(Timestamp::as_second),
            time_zone: time_zone.to_string(),
            opened,
            open,
            overdue,
            repeat_vendors: vendors,
            categories,
        }
    }
}

/// A rendered digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedDigest {
    pub subject: String,
    pub text: String,
    pub html: String,
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

/// A `mid:` URL (RFC 2392) for a Message-ID given without `<>`: everything
/// but unreserved characters and `@` is percent-encoded (a `/` would start a
/// Content-ID).
pub fn mid_url(message_id: &str) -> String {
    let id = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let mut out = String::from("mid:");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
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

/// What the templates see: the data, plus what rendering derives.
#[derive(Serialize)]
struct Context<'a> {
    name: &'a str,
    description: Option<&'a str>,
    now: i64,
    since: Option<i64>,
    time_zone: &'a str,
    /// "Tue 24 Nov 2026 08:00 EST".
    now_local: String,
    /// "Tue 24 Nov 2026".
    date_local: String,
    since_local: Option<String>,
    opened: Vec<RowContext>,
    open: Vec<RowContext>,
    overdue: Vec<RowContext>,
    /// The open cases by tier, then risk, highest first; oldest first in a
    /// group.
    open_groups: Vec<Group>,
    repeat_vendors: Vec<VendorContext<'a>>,
    categories: Vec<CategoryContext<'a>>,
    counts: Counts,
    /// Set for the HTML, from the text's subject line.
    subject: Option<String>,
}

#[derive(Clone, Serialize)]
struct RowContext {
    #[serde(flatten)]
    row: DigestRow,
    /// "Mon 23 Nov 14:05".
    opened_local: String,
    mid_url: Option<String>,
    /// The issue wrapped for the text version.
    issue_lines: Vec<String>,
}

#[derive(Serialize)]
struct Group {
    tier: u8,
    risk: u8,
    label: String,
    rows: Vec<RowContext>,
}

#[derive(Serialize)]
struct VendorContext<'a> {
    vendor: &'a str,
    cases: &'a [String],
    count: usize,
    /// The case ids wrapped for the text version.
    case_lines: Vec<String>,
}

#[derive(Serialize)]
struct CategoryContext<'a> {
    name: &'a str,
    count: usize,
}

#[derive(Serialize)]
struct Counts {
    opened: usize,
    open: usize,
    overdue: usize,
}

/// Text lines of rows are indented by two: 68 keeps them within 70.
const TEXT_WIDTH: usize = 68;

fn local(tz: &TimeZone, seconds: i64, format: &str) -> String {
    Timestamp::from_second(seconds).map_or_else(
        |_| "?".to_string(),
        |t| t.to_zoned(tz.clone()).strftime(format).to_string(),
    )
}

fn sorted_rows(rows: &[DigestRow], now: i64, tz: &TimeZone) -> Vec<RowContext> {
    let mut rows: Vec<DigestRow> = rows.to_vec();
    rows.sort_by(|a, b| {
        b.tier
            .cmp(&a.tier)
            .then(b.risk.cmp(&a.risk))
            .then(a.opened_at.cmp(&b.opened_at))
            .then_with(|| a.case_id.cmp(&b.case_id))
    });
    rows.into_iter()
        .map(|mut row| {
            row.issue = shorten_issue(&row.issue);
            for field in [&mut row.order_id, &mut row.customer, &mut row.vendor] {
                *field = field
                    .take()
                    .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                    .filter(|v| !v.is_empty());
            }
            row.age = crate::text::age(now.saturating_sub(row.opened_at));
            row.message_id = row
                .message_id
                .map(|m| {
                    m.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string()
                })
                .filter(|m| !m.is_empty());
            RowContext {
                opened_local: local(tz, row.opened_at, "%a %-d %b %H:%M"),
                mid_url: row.message_id.as_deref().map(mid_url),
                issue_lines: crate::text::wrap(&row.issue, TEXT_WIDTH),
                row,
            }
        })
        .collect()
}

/// Renders a digest with the templates `digest.txt` and `digest.html` of
/// `env` (see [`render_template`]).
pub fn render(env: &minijinja::Environment, data: &DigestData) -> Result<RenderedDigest, String> {
    render_template(env, "digest", data)
}

/// What the templates see for `data`.
fn context(data: &DigestData) -> Result<Context<'_>, String> {
    let tz = time_zone(&data.time_zone).map_err(|e| format!("digest {:?}: {e}", data.name))?;
    let open = sorted_rows(&data.open, data.now, &tz);
    let mut open_groups: Vec<Group> = Vec::new();
    for row in open.iter().cloned() {
        match open_groups.last_mut() {
            Some(g) if g.tier == row.row.tier && g.risk == row.row.risk => g.rows.push(row),
            _ => open_groups.push(Group {
                tier: row.row.tier,
                risk: row.row.risk,
                label: format!("Tier {}, risk {}", row.row.tier, row.row.risk),
                rows: vec![row],
            }),
        }
    }
    Ok(Context {
        name: &data.name,
        description: data.description.as_deref(),
        now: data.now,
        since: data.since,
        time_zone: &data.time_zone,
        now_local: local(&tz, data.now, "%a %-d %b %Y %H:%M %Z"),
        date_local: local(&tz, data.now, "%a %-d %b %Y"),
        since_local: data.since.map(|s| local(&tz, s, "%a %-d %b %H:%M")),
        opened: sorted_rows(&data.opened, data.now, &tz),
        overdue: sorted_rows(&data.overdue, data.now, &tz),
        open_groups,
        repeat_vendors: data
            .repeat_vendors
            .iter()
            .map(|v| VendorContext {
                vendor: &v.vendor,
                cases: &v.cases,
                count: v.count,
                case_lines: crate::text::wrap(&v.cases.join(", "), TEXT_WIDTH - 2),
            })
            .collect(),
        categories: data
            .categories
            .iter()
            .map(|(name, count)| CategoryContext {
                name,
                count: *count,
            })
            .collect(),
        counts: Counts {
            opened: data.opened.len(),
            open: data.open.len(),
            overdue: data.overdue.len(),
        },
        open,
        subject: None,
    })
}

/// Renders a digest with the templates `NAME.txt` (a `Subject:` line, a
/// blank line, the body) and `NAME.html` of `env`. Lists come sorted by
/// tier, then risk, highest first, oldest first; ages are computed from
/// `data.now`, issues shortened, times shown in `data.time_zone`. The HTML
/// is escaped when `env` auto-escapes `.html` names (minijinja's default).
pub fn render_template(
    env: &minijinja::Environment,
    name: &str,
    data: &DigestData,
) -> Result<RenderedDigest, String> {
    let mut ctx = context(data)?;
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
    ctx.subject = Some(subject.clone());
    let html = run(&format!("{name}.html"), &ctx)?;
    Ok(RenderedDigest {
        subject,
        text: tidy(body),
        html,
    })
}

/// Contexts to check a digest's templates against when the config loads,
/// each with what it is: a digest with cases of each sort (every field,
/// none, overdue, one vendor twice) since the last one, and an empty first
/// digest.
pub fn sample_contexts() -> Vec<(String, minijinja::Value)> {
    let now = 1_764_000_000;
    let row = |n: u32, full: bool| DigestRow {
        case_id: format!("ESC-2026-{n:06}"),
        order_id: full.then(|| format!("CK{n}")),
        customer: full.then(|| "Priya Sharma".to_string()),
        issue: if full {
            "Vendor came three hours late".into()
        } else {
            String::new()
        },
        flags: if full {
            vec!["review_threat".into()]
        } else {
            vec![]
        },
        risk: if full { 5 } else { 1 },
        tier: if full { 2 } else { 1 },
        status: "open".into(),
        opened_at: now - 3600 * i64::from(n),
        age: String::new(),
        message_id: full.then(|| format!("agent.{n}@mail.example.com")),
        overdue: full,
        vendor: full.then(|| "QuickPick Logistics (VND-1044)".to_string()),
    };
    let rows = vec![row(1, true), row(2, false), row(3, true)];
    let at = |t: i64| Timestamp::from_second(t).unwrap_or(Timestamp::UNIX_EPOCH);
    let full = DigestData::assemble(
        "sample",
        Some("A sample digest"),
        "Asia/Kolkata",
        at(now),
        Some(at(now - 86_400)),
        rows.clone(),
        rows,
    );
    let empty = DigestData::assemble("sample", None, "UTC", at(now), None, vec![], vec![]);
    let mut out = Vec::new();
    for (what, data) in [
        (
            "a digest of three cases (every field, none, overdue, one vendor twice)",
            full,
        ),
        ("an empty first digest", empty),
    ] {
        if let Ok(mut ctx) = context(&data) {
            ctx.subject = Some("sample subject".into());
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
        let s = d.schedule().expect("valid").expect("scheduled");
        assert_eq!(s, Schedule::parse("daily 08:00", NY).expect("valid"));
        let bare = &f.digests["bare"];
        assert_eq!(bare.time_zone_name(), "UTC");
        assert_eq!(bare.schedule(), Ok(None));

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
    fn issue_age_and_mid() {
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
            (5 * 3600 + 1, "5 h"),
            (47 * 3600, "47 h"),
            (48 * 3600, "2 d"),
            (3 * 86400 + 7, "3 d"),
        ];
        for (secs, want) in ages {
            assert_eq!(crate::text::age(secs), want, "{secs}");
        }
        let mids = [
            ("abc.123@mail.example.com", "mid:abc.123@mail.example.com"),
            ("<abc@x>", "mid:abc@x"),
            ("a/b%c d+e@x", "mid:a%2Fb%25c%20d%2Be@x"),
            ("<\"x\"&y@z>", "mid:%22x%22%26y@z"),
        ];
        for (id, want) in mids {
            assert_eq!(mid_url(id), want);
        }
    }

    fn row(id: &str, tier: u8, risk: u8, opened: &str) -> DigestRow {
        DigestRow {
            case_id: id.into(),
            order_id: Some("CK1".into()),
            customer: Some("Priya".into()),
            issue: "Customer upset".into(),
            flags: vec![],
            risk,
            tier,
            status: "open".into(),
            opened_at: et(opened).as_second(),
            age: String::new(),
            message_id: None,
            overdue: false,
            vendor: None,
        }
    }

    fn environment() -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        add_templates(&mut env, "digest", TXT, HTML).expect("the shipped templates compile");
        env
    }

    fn sample() -> DigestData {
        let mut a = row("ESC-2026-000101", 2, 5, "2026-11-23T07:25");
        a.order_id = Some("CK802113".into());
        a.customer = Some("Swati Joshi".into());
        a.issue = "We rescheduled her pickup twice from our side.\nShe says <script>alert(1)</script> she will post a one-star review".into();
        a.flags = vec!["review_threat".into(), "legal".into()];
        a.message_id = Some("<review-threat.23@mail.example.com>".into());
        a.vendor = Some("QuickPick".into());
        a.overdue = true;
        let mut b = row("ESC-2026-000102", 1, 3, "2026-11-22T14:00");
        b.vendor = Some("quickpick ".into());
        b.flags = vec!["legal".into()];
        b.customer = None;
        b.order_id = None;
        let c = row("ESC-2026-000103", 2, 5, "2026-11-20T09:00");
        let mut closed = row("ESC-2026-000104", 1, 1, "2026-11-22T10:00");
        closed.status = "resolved".into();
        DigestData::assemble(
            "managers_daily",
            Some("Every escalation of the day"),
            NY,
            et("2026-11-24T08:00"),
            Some(et("2026-11-23T08:00")),
            vec![closed.clone(), b.clone()],
            vec![b, c, a],
        )
    }

    #[test]
    fn assemble_derives_lists() {
        let d = sample();
        assert_eq!(d.since, Some(et("2026-11-23T08:00").as_second()));
        assert_eq!(d.overdue.len(), 1);
        assert_eq!(d.overdue[0].case_id, "ESC-2026-000101");
        assert_eq!(
            d.repeat_vendors,
            vec![VendorRow {
                vendor: "quickpick".into(),
                cases: vec!["ESC-2026-000101".into(), "ESC-2026-000102".into()],
                count: 2
            }]
        );
        assert_eq!(
            d.categories,
            vec![("legal".to_string(), 2), ("review_threat".to_string(), 1)]
        );
    }

    #[test]
    fn render_text_and_html() {
        let env = environment();
        let r = render(&env, &sample()).expect("renders");
        assert_eq!(
            r.subject,
            "Digest managers_daily, Tue 24 Nov 2026: 2 new, 3 open, 1 overdue"
        );
        let lines: Vec<&str> = r.text.lines().collect();
        for want in [
            "Digest managers_daily, Tue 24 Nov 2026 08:00 EST",
            "Every escalation of the day",
            "Since Mon 23 Nov 08:00: 2 new, 3 open, 1 overdue.",
            "OVERDUE (1)",
            "ESC-2026-000101 · Tier 2 · risk 5 · open · 24 h · OVERDUE",
            "  Order CK802113 · Swati Joshi",
            "  We rescheduled her pickup twice from our side. She says",
            "  <script>alert(1)</script> she…",
            "  Flags: review_threat, legal",
            "  Vendor: QuickPick",
            "  Opened Mon 23 Nov 07:25, original:",
            "  <review-threat.23@mail.example.com>",
            "NEW SINCE MON 23 NOV 08:00 (2)",
            "ESC-2026-000104 · Tier 1 · risk 1 · resolved · 46 h",
            "  Order (none) · (no name)",
            "OPEN, BY TIER AND RISK (3)",
            "-- Tier 2, risk 5 (2) --",
            "-- Tier 1, risk 3 (1) --",
            "REPEAT VENDORS",
            "quickpick: 2 cases",
            "  ESC-2026-000101, ESC-2026-000102",
            "FLAGS (open and new cases)",
            "legal: 2",
            "review_threat: 1",
            "This is an automatic message from mailtriage.",
        ] {
            assert!(
                lines.contains(&want),
                "missing line {want:?} in:\n{}",
                r.text
            );
        }
        // Oldest first within a group: 000103 (20 Nov) before 000101.
        let pos = |s: &str| r.text.find(s).expect(s);
        let open_at = pos("OPEN, BY TIER");
        assert!(
            r.text[open_at..].find("ESC-2026-000103") < r.text[open_at..].find("ESC-2026-000101 ")
        );
        // Tier 2 before tier 1 in the new cases too.
        assert!(pos("ESC-2026-000102 · Tier 1 · risk 3") < pos("ESC-2026-000104"));
        for line in &lines {
            assert!(line.chars().count() <= 72, "too wide: {line:?}");
        }
        assert!(!r.text.contains("\n\n\n"), "{}", r.text);
        assert!(!r.text.starts_with('\n') && r.text.ends_with(".\n"));

        assert!(
            r.html
                .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{}",
            r.html
        );
        assert!(!r.html.contains("<script>"));
        assert!(
            r.html
                .contains("href=\"mid:review-threat.23@mail.example.com\""),
            "{}",
            r.html
        );
        assert!(r.html.contains(
            "<title>Digest managers_daily, Tue 24 Nov 2026: 2 new, 3 open, 1 overdue</title>"
        ));
        assert!(r.html.contains("name=\"viewport\""));
        assert!(!r.html.contains("<table"));
        assert!(r.html.contains(">ESC-2026-000103<"));
    }

    #[test]
    fn render_empty_sections_say_so() {
        let env = environment();
        let d = DigestData::assemble(
            "tier2",
            None,
            "UTC",
            at("UTC", "2026-11-24T08:00"),
            None,
            vec![],
            vec![],
        );
        let r = render(&env, &d).expect("renders");
        assert_eq!(
            r.subject,
            "Digest tier2, Tue 24 Nov 2026: 0 new, 0 open, 0 overdue"
        );
        for want in [
            "No case is overdue.",
            "No case was opened.",
            "No case is open.",
            "No vendor has more than one case.",
            "No case is flagged.",
        ] {
            assert!(
                r.text.lines().any(|l| l == want),
                "{want:?} in:\n{}",
                r.text
            );
            assert!(r.html.contains(want), "{want:?} in the HTML");
        }
        assert!(r.text.lines().any(|l| l == "NEW (0)"), "{}", r.text);
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
