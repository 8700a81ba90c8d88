//! Digests: what the managers' digests say, and the job that sends them.
//!
//! - Config (`DigestSpec`): a `[digests.NAME]` section as it is read.
//! - Content ([`DigestData::from_cases`]): the stored cases of a digest as
//!   the rows it lists, each open case once, most urgent first, and the
//!   vendors named more than once.
//! - Rendering ([`render`]): a [`DigestData`] into a subject, a plain-text
//!   body and an HTML body, read on phones: a summary a manager reads
//!   without scrolling, then the cases; the HTML kept under the size at
//!   which Gmail clips a message ([`HTML_MAX_BYTES`]).
//! - The job ([`build_digest`], and what the daemon's clock and the
//!   `digest` command call): the one part that reads the store and queues
//!   mail.
//!
//! Content and rendering are pure, so that they can be tested at any
//! instant without a clock, a store or a mail server: time is passed in,
//! and so are the cases. When a digest is due is the calendar's
//! ([`crate::calendar::Schedule`]).

mod data;
mod job;
mod render;
mod spec;

pub use data::{DigestData, DigestRow, VendorRow};
pub use job::build_digest;
pub(crate) use job::{digest_command, queue_due};
pub use render::{HTML_MAX_BYTES, RenderedDigest, render, render_template, sent_size};
pub(crate) use render::{add_templates, sample_contexts};
pub(crate) use spec::DigestSpec;

use crate::calendar::ZoneError;
use crate::config::Config;
use crate::mail::{ComposeError, FromError};
use crate::store::StoreError;

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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Compose(#[from] ComposeError),
    /// Who the digest is from (`[smtp] from`).
    #[error(transparent)]
    Identity(#[from] FromError),
}

/// Digest `name` of the routing table.
fn spec_of<'a>(config: &'a Config, name: &str) -> Result<&'a crate::route::Digest, DigestError> {
    config
        .router
        .digests
        .get(name)
        .ok_or_else(|| DigestError::UnknownDigest {
            name: name.to_string(),
            known: config.router.digests.keys().cloned().collect(),
        })
}
