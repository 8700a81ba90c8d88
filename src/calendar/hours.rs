//! Business hours: when Tier 2 is at work, in its time zone, read from a
//! `[hours.NAME]` table.

use std::collections::BTreeMap;
use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::zone::{ZoneError, instant, time_zone};
use super::{add_days, parse_hhmm};

const DAY_NAMES: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

/// Why opening hours were refused: the value, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum HoursError {
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error(
        "unknown day {key:?}: expected mon, tue, wed, thu, fri, sat, sun, or a range of them such as \"mon-fri\""
    )]
    UnknownDay { key: String },
    #[error(
        "{key} = {value:?}: expected opening hours such as \"08:00-21:00\" (several separated by commas, or \"closed\")"
    )]
    NotHours { key: String, value: String },
    /// `range` is the one of `value` that closes before it opens.
    #[error(
        "{key} = {value:?}: {range} closes before it opens: expected a range within one day such as \"08:00-21:00\" (a night past 24:00 is split across two days)"
    )]
    Backwards {
        key: String,
        value: String,
        range: String,
    },
    #[error(
        "{key} = {value:?}: the ranges overlap: expected separate ranges such as \"08:00-12:00, 13:00-17:00\""
    )]
    Overlap { key: String, value: String },
    /// A day named by two keys (`mon-fri` and `fri`).
    #[error("{day} is given twice, by {first:?} and by {second:?}: expected each day once")]
    Twice {
        day: &'static str,
        first: String,
        second: String,
    },
}

/// A day key (`mon`, `monday`, `mon-fri`, `sat-sun`) to weekdays, Monday 0.
fn parse_day_key(key: &str) -> Result<Vec<usize>, HoursError> {
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
    days.ok_or_else(|| HoursError::UnknownDay {
        key: key.to_string(),
    })
}

/// `08:00-21:00`, several separated by commas, or `closed`.
fn parse_ranges(key: &str, value: &str) -> Result<Vec<(u16, u16)>, HoursError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("closed") {
        return Ok(Vec::new());
    }
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for part in v.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, ""));
        let (Some(open), Some(close)) = (parse_hhmm(a, false), parse_hhmm(b, true)) else {
            return Err(HoursError::NotHours {
                key: key.to_string(),
                value: value.to_string(),
            });
        };
        if close <= open {
            return Err(HoursError::Backwards {
                key: key.to_string(),
                value: value.to_string(),
                range: part.trim().to_string(),
            });
        }
        ranges.push((open, close));
    }
    ranges.sort_unstable();
    if ranges.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(HoursError::Overlap {
            key: key.to_string(),
            value: value.to_string(),
        });
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
    pub fn parse(tz: &str, days: &BTreeMap<String, String>) -> Result<BusinessHours, HoursError> {
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
    ) -> Result<BusinessHours, HoursError> {
        let mut days: [Vec<(u16, u16)>; 7] = Default::default();
        let mut given_by: [Option<String>; 7] = Default::default();
        for (key, weekdays, ranges) in entries {
            for d in weekdays {
                if let Some(previous) = &given_by[d] {
                    return Err(HoursError::Twice {
                        day: DAY_NAMES[d].0,
                        first: previous.clone(),
                        second: key,
                    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::testing::{NY, at, et, show};

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
            assert!(err.to_string().contains(want), "{key} = {value}: {err}");
        }
        let days = BTreeMap::from([
            ("mon-fri".to_string(), "08:00-21:00".to_string()),
            ("fri".to_string(), "08:00-17:00".to_string()),
        ]);
        let err = BusinessHours::parse(NY, &days).expect_err("twice");
        assert_eq!(
            err.to_string(),
            "fri is given twice, by \"fri\" and by \"mon-fri\": expected each day once"
        );
        let err = BusinessHours::parse("EST5", &BTreeMap::new()).expect_err("zone");
        assert!(
            err.to_string().starts_with("unknown time zone \"EST5\""),
            "{err}"
        );
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
}
