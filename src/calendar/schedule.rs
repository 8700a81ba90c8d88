//! Schedules: when a digest fires, as crontab's five fields in a time
//! zone, and whether a digest is due.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::zone::{ZoneError, instant, time_zone};
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
    fn parse(&self, number: usize, text: &str) -> Result<u64, ScheduleError> {
        let bad = || {
            ScheduleError::Invalid(format!(
                "cron field {number} ({}) {text:?}: expected {}, with `*`, lists (1,15), ranges (1-5) and steps (*/15)",
                self.name, self.expected
            ))
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
                return Err(ScheduleError::Invalid(format!(
                    "cron field {number} ({}) {text:?}: the range {range:?} runs backwards: expected the smaller value first",
                    self.name
                )));
            }
            for v in (lo..=hi).step_by(usize::from(step.unwrap_or(1))) {
                bits |= 1 << v;
            }
        }
        Ok(bits)
    }
}

/// Why a schedule was refused: what is wrong with it and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Zone(#[from] ZoneError),
    /// Not one of the forms, or a form with a wrong value.
    #[error("{0}")]
    Invalid(String),
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
    pub fn parse(spec: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let zone = time_zone(tz)?;
        let words: Vec<&str> = spec.split_whitespace().collect();
        let Some(first) = words.first() else {
            return Err(ScheduleError::Invalid(format!(
                "the schedule is empty: {SCHEDULE_FORMS}"
            )));
        };
        let time_of = |form: &str| -> Result<u16, ScheduleError> {
            match words[1..] {
                [t] => parse_hhmm(t, false).ok_or_else(|| {
                    ScheduleError::Invalid(format!(
                        "schedule {spec:?}: expected a time from 00:00 to 23:59 after \"{form}\", e.g. \"{form} 08:00\""
                    ))
                }),
                [] => Err(ScheduleError::Invalid(format!(
                    "schedule {spec:?}: expected a time after \"{form}\", e.g. \"{form} 08:00\""
                ))),
                _ => Err(ScheduleError::Invalid(format!(
                    "schedule {spec:?}: expected only a time after \"{form}\", e.g. \"{form} 08:00\""
                ))),
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
                            ScheduleError::Invalid(format!(
                                "schedule {spec:?}: expected \"hourly\" (at minute 0) or \"hourly :MM\" with MM from 00 to 59, e.g. \"hourly :15\""
                            ))
                        })?,
                    _ => {
                        return Err(ScheduleError::Invalid(format!(
                            "schedule {spec:?}: expected \"hourly\" (at minute 0) or \"hourly :MM\", e.g. \"hourly :15\""
                        )));
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
            _ => {
                return Err(ScheduleError::Invalid(format!(
                    "unknown schedule {spec:?}: {SCHEDULE_FORMS}"
                )));
            }
        };
        Ok(Schedule {
            spec: words.join(" "),
            tz_name: tz.trim().to_string(),
            tz: zone,
            fields,
        })
    }

    fn parse_cron(spec: &str, fields: &[&str]) -> Result<Fields, ScheduleError> {
        if fields.len() != 5 {
            return Err(ScheduleError::Invalid(format!(
                "schedule {spec:?} has {} cron field{}: expected 5, MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK, e.g. \"cron 0 8 * * 1-5\"",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            )));
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
            return Err(ScheduleError::Invalid(format!(
                "schedule {spec:?} fires less than once a year (or never): expected days that occur at least once a year"
            )));
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
mod tests;
