#![forbid(unsafe_code)]
//! mailtriage turns the standard escalation emails of a customer-support
//! organisation into classified, routed cases.
//!
//! The pipeline, one module a step:
//!
//! 1. [`message`]: raw RFC 5322 bytes to an [`Email`](message::Email): the
//!    headers triage needs and the body as text (HTML converted).
//! 2. [`extract`]: the author's own lines (no quoted history, no signature),
//!    the labelled fields of the standard formats, hashtags, and the kind.
//! 3. [`classify`]: keyword flags (one Aho-Corasick automaton), risk 1-5 and
//!    tier 1-2.
//! 4. [`route`]: the routing table's actions for the case; [`letter`] says
//!    what each reply or forward tells its reader, rendered from its template.
//!
//! [`case::Triage`] runs steps 1-3 and yields a [`Case`](case::Case), the JSON
//! contract of `mailtriage parse`. [`config`] loads everything an operator
//! changes (keywords, required fields, routing, templates) and checks it.
//!
//! Above the steps, [`intake`] decides what becomes of each message of a
//! mailbox's batch: a new case, an update to one ([`lifecycle`] holds the case
//! rules), or nothing; and the mail that sends, composed by [`mail`]. It
//! returns a [`Batch`](batch::Batch) of plain data. [`digest`] turns stored
//! cases into the managers' digests, and [`health`] facts about the daemon
//! into the report and verdict of `mailtriage status`. All of these are
//! pure: no I/O, no clock (time is a value passed in), no global state.
//!
//! The I/O sits around them: [`store`] (the only module that knows sled)
//! commits a batch in one transaction, keeps its data bounded (retention)
//! and exports and imports it; [`daemon`] runs the IMAP, outbox, clock and
//! retention tasks that carry batches between the servers and the store;
//! [`oauth`] gets and caches the OAuth 2.0 tokens the IMAP and SMTP logins
//! use; [`metrics`] counts what happens for Prometheus; and [`cli`] is the
//! command line, over [`control`] when a daemon runs.
//!
//! ```
//! let config = mailtriage::config::Config::builtin().unwrap();
//! let raw = b"From: priya@example.com\r\nSubject: Escalation (Order #CK1)\r\n\r\n\
//!             Customer Name: Rahul\r\nIssue: customer says we are a scam\r\n";
//! let (_email, case) = config.triage.parse(raw).unwrap();
//! assert!(case.is_escalation);
//! assert_eq!(case.fields.order_id.as_deref(), Some("CK1"));
//! assert_eq!(case.risk, 5);
//! let actions = config.router.route(&case, Some("ops"));
//! assert!(actions.iter().any(|a| a.template.as_deref() == Some("ack")));
//! ```

pub mod backoff;
pub mod batch;
pub mod calendar;
pub mod case;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deadline;
pub mod digest;
pub mod extract;
pub mod health;
pub mod imap;
pub mod intake;
pub mod letter;
pub mod lifecycle;
pub mod mail;
pub mod message;
pub mod metrics;
pub mod oauth;
pub mod outbox;
pub mod record;
pub mod rescan;
pub mod route;
pub(crate) mod shutdown;
pub(crate) mod smtp;
pub mod store;
pub mod template_check;
pub mod text;
pub mod tls;
pub mod vendor;
