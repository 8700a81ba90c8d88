//! Time zones: an IANA zone by name, and a civil time in a zone as an
//! instant.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// A time zone name that names no zone.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error(
        "the time zone is empty: expected an IANA name such as \"America/New_York\" or \"UTC\""
    )]
    Empty,
    #[error(
        "unknown time zone {name:?}: expected an IANA name such as \"America/New_York\" or \"UTC\""
    )]
    Unknown {
        name: String,
        #[source]
        source: jiff::Error,
    },
}

/// Looks up an IANA time zone by name.
pub(crate) fn time_zone(name: &str) -> Result<TimeZone, ZoneError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ZoneError::Empty);
    }
    TimeZone::get(name).map_err(|source| ZoneError::Unknown {
        name: name.to_string(),
        source,
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
