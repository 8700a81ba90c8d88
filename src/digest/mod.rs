//! Digests: what the managers' digests say. Pure; the job that builds
//! them from the store and queues them is the daemon's (`daemon::digest`).
//!
//! - Config (`DigestSpec`): a `[digests.NAME]` section as it is read.
//! - Content ([`DigestData::from_cases`]): the stored cases of a digest as
//!   the rows it lists, each open case once, most urgent first, and the
//!   vendors named more than once.
//! - Rendering ([`render`]): a [`DigestData`] into a subject, a plain-text
//!   body and an HTML body, read on phones: a summary a manager reads
//!   without scrolling, then the cases; the HTML kept under the size at
//!   which Gmail clips a message ([`HTML_MAX_BYTES`]).
//!
//! Content and rendering are pure, so that they can be tested at any
//! instant without a clock, a store or a mail server: time is passed in,
//! and so are the cases. When a digest is due is the calendar's
//! ([`crate::calendar::Schedule`]).

mod data;
mod render;
mod spec;

pub use data::{DigestData, DigestRow, VendorRow};
pub use render::{HTML_MAX_BYTES, RenderedDigest, render, render_template, sent_size};
pub(crate) use render::{add_templates, sample_contexts};
pub(crate) use spec::DigestSpec;

use crate::calendar::ZoneError;
use crate::lifecycle::Lifecycle;
use crate::route::Router;
use crate::vendor::VendorRules;

/// What digests are made from, out of the compiled config: the routing
/// table (the digests, their readers' zones and words, the forwards'
/// owners), the overdue allowances, how vendors are told apart, and the
/// digests' templates.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub router: &'a Router,
    pub lifecycle: &'a Lifecycle,
    pub vendors: &'a VendorRules,
    pub templates: &'a minijinja::Environment<'static>,
}

/// Why a digest could not be made or queued: said to the operator who
/// asked for it, or logged by the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("no digest {name:?}: expected one of {}", .known.join(", "))]
    UnknownDigest { name: String, known: Vec<String> },
    /// The digest's time zone (checked when the config loads).
    #[error("digest {digest:?}: {source}")]
    Zone {
        digest: String,
        #[source]
        source: ZoneError,
    },
    /// An instant out of the range of the calendar.
    #[error(transparent)]
    Time(#[from] jiff::Error),
    #[error("template {template:?}: {source:#}")]
    Template {
        template: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("template {template:?}: expected the first line to be `Subject: ...`")]
    NoSubject { template: String },
}

/// Digest `name` of the routing table.
pub fn spec_of<'a>(
    router: &'a Router,
    name: &str,
) -> Result<&'a crate::route::Digest, DigestError> {
    router
        .digests
        .get(name)
        .ok_or_else(|| DigestError::UnknownDigest {
            name: name.to_string(),
            known: router.digests.keys().cloned().collect(),
        })
}
