//! Reading a mailbox again after its UIDVALIDITY changed, with `seen`
//! pruned. Pure: no I/O.
//!
//! When UIDVALIDITY changes (a server migrated, a mailbox rebuilt), every
//! UID is new and the mailbox is read again from UID 1; `seen` is what
//! recognises the mail processed before, which is still on the server when
//! the mailbox only marks it `\Seen`. But `seen` is pruned after
//! `keep_seen` (the store's retention pass), so it cannot recognise
//! everything: the rule here covers what it has forgotten.
//!
//! The store keeps a horizon: every message processed at or after it still
//! has its `seen` entry. A message processed before it may not, and its
//! INTERNALDATE (when the server received it) is earlier than its
//! processing, so earlier than the horizon plus [`CLOCK_MARGIN`] (the
//! server's clock against the daemon's). So, during a rescan, a message
//! that `seen` does not know and whose INTERNALDATE is earlier than that is
//! taken as processed before: not downloaded, not processed, not marked.
//!
//! The rule holds for the messages that were on the server when the change
//! was seen (below its UIDNEXT then, [`Rescan::below_uid`]); mail that
//! arrives later is new whatever its INTERNALDATE, so an old message moved
//! into the folder is triaged as usual. It assumes that mail is read
//! within `keep_seen` of arriving (a mailbox down that long has raised its
//! alert long before) and that a migration keeps INTERNALDATE (imapsync
//! and dsync do).

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How much later than the daemon's clock the server's may run: a message
/// received that much after the horizon is still taken as processed.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(86_400);

/// The least `keep_seen` the config allows: the horizon plus the margin
/// must stay well in the past.
pub const MIN_KEEP_SEEN: Duration = Duration::from_secs(7 * 86_400);

/// A mailbox read again after its UIDVALIDITY changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rescan {
    /// The UIDVALIDITY it is read again under.
    pub uid_validity: u32,
    /// The server's UIDNEXT when the change was seen: the messages below
    /// were there before; those from it on arrived later.
    pub below_uid: u32,
}

/// Whether message `uid` (of a mailbox under `uid_validity`), which `seen`
/// does not know, is taken as processed before: during `rescan`, received
/// before `horizon` (the store's, see the module docs) plus the margin.
/// Without a rescan, a horizon or an INTERNALDATE, it is not.
pub fn taken_as_processed(
    rescan: Option<&Rescan>,
    horizon: Option<Timestamp>,
    uid_validity: u32,
    uid: u32,
    internal_date: Option<Timestamp>,
) -> bool {
    let (Some(r), Some(h), Some(received)) = (rescan, horizon, internal_date) else {
        return false;
    };
    r.uid_validity == uid_validity
        && uid < r.below_uid
        && received < crate::clock::after(h, CLOCK_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::{Rescan, taken_as_processed};

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn old_mail_of_a_rescan_is_taken_as_processed() {
        const DAY: i64 = 86_400;
        let horizon = Some(ts(100 * DAY));
        let r = Rescan {
            uid_validity: 9,
            below_uid: 50,
        };
        // During the rescan, the horizon at day 100: (uid, received, taken
        // as processed?)
        for (name, uid, received, want) in [
            ("received long before the horizon", 1, Some(10 * DAY), true),
            ("just before the horizon", 49, Some(100 * DAY - 1), true),
            (
                "after the horizon, within the margin",
                2,
                Some(101 * DAY - 1),
                true,
            ),
            (
                "after the horizon and the margin",
                2,
                Some(101 * DAY),
                false,
            ),
            ("recent mail", 3, Some(200 * DAY), false),
            (
                "arrived after the change was seen",
                50,
                Some(10 * DAY),
                false,
            ),
            ("no INTERNALDATE", 1, None, false),
        ] {
            let got = taken_as_processed(Some(&r), horizon, 9, uid, received.map(ts));
            assert_eq!(got, want, "{name}");
        }
        // Never outside a rescan of this UIDVALIDITY, nor before anything
        // was pruned.
        for (name, rescan, horizon, validity) in [
            ("no rescan under way", None, horizon, 9),
            ("a rescan of another UIDVALIDITY", Some(&r), horizon, 10),
            ("nothing pruned yet", Some(&r), None, 9),
        ] {
            let got = taken_as_processed(rescan, horizon, validity, 1, Some(ts(10 * DAY)));
            assert!(!got, "{name}");
        }
    }
}
