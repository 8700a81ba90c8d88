//! The calendar: time zones, schedules and opening hours, as pure
//! functions of the instant they are asked about, so that they can be
//! tested at any instant without a clock.
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
//! - Zones (`time_zone`): an IANA zone by name.
//!
//! Schedules and hours are civil times in a zone: a time that does not
//! exist on a spring-forward day (02:30 in New York) fires at the same
//! distance after the transition (03:30), and a time that happens twice on
//! a fall-back day fires at the first of the two (jiff's "compatible"
//! disambiguation, as cron daemons and calendars do). The only thing read
//! from outside is the time-zone database, by zone name (the system's, else
//! the copy compiled in).

mod hours;
mod schedule;
mod zone;

pub use hours::{BusinessHours, HoursError};
pub use schedule::{Schedule, ScheduleError, due};
pub use zone::ZoneError;
pub(crate) use zone::time_zone;

use jiff::civil::Date;

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

fn add_days(date: Date, n: i32) -> Option<Date> {
    date.checked_add(jiff::Span::new().days(n)).ok()
}

/// Instants for tests, in the zones the tests use.
#[cfg(test)]
pub(crate) mod testing {
    use jiff::Timestamp;
    use jiff::tz::TimeZone;

    /// The zone most tests are in (Tier 2's).
    pub(crate) const NY: &str = "America/New_York";

    pub(crate) fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).expect("the test machine has tzdata")
    }

    /// A civil time ("2026-11-23T08:00") in a zone, compatible.
    pub(crate) fn at(zone: &str, civil: &str) -> Timestamp {
        let dt: jiff::civil::DateTime = civil.parse().expect("test datetime");
        tz(zone)
            .to_ambiguous_timestamp(dt)
            .compatible()
            .expect("test datetime in range")
    }

    /// A civil time in New York.
    pub(crate) fn et(civil: &str) -> Timestamp {
        at(NY, civil)
    }

    /// An instant as a civil time in a zone, "none" for none.
    pub(crate) fn show(t: Option<Timestamp>, zone: &str) -> String {
        t.map_or("none".into(), |t| {
            t.to_zoned(tz(zone))
                .strftime("%Y-%m-%dT%H:%M %Z")
                .to_string()
        })
    }
}
