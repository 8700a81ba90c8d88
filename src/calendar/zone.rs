//! Time zones: an IANA zone by name, and a civil time in a zone as an
//! instant.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

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

/// The instant of a civil date and minute of the day (1440 is the next
/// midnight) in a zone, with compatible disambiguation.
pub(super) fn instant(tz: &TimeZone, date: Date, minute: u16) -> Option<Timestamp> {
    let dt = if minute >= 24 * 60 {
        date.tomorrow().ok()?.at(0, 0, 0, 0)
    } else {
        date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0)
    };
    tz.to_ambiguous_timestamp(dt).compatible().ok()
}
