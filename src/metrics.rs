//! The daemon's Prometheus metrics: what happened to mail (fetched,
//! triaged, cases opened and updated, flags), the outbox's queue and
//! deliveries, IMAP and SMTP errors, and how long batches and ingestion
//! take.
//!
//! Each daemon owns its [`Metrics`] (a `prometheus-client` registry and
//! the handles that write to it); nothing is process-wide, so several
//! daemons in one process (the tests' `InProcess`) count apart. The daemon
//! records as it goes and always keeps them (a few counters cost nothing);
//! `daemon/metrics.rs` serves them over HTTP when `[daemon] metrics` names
//! an address. Gauges of state (the queue, the connections) are set when
//! scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::batch::{Batch, BatchOutcome};
use crate::store::Committed;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MailboxLabel {
    mailbox: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriagedLabels {
    mailbox: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenedLabels {
    mailbox: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

type Histograms = Family<MailboxLabel, Histogram, fn() -> Histogram>;

/// A batch takes milliseconds to seconds.
fn batch_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Mail waits seconds (IDLE) to minutes (polling, outages) before it is
/// committed; INTERNALDATE has whole seconds.
fn latency_histogram() -> Histogram {
    Histogram::new([
        1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21_600.0,
    ])
}

/// An SMTP failure, as the outbox counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpFailure {
    Transient,
    Permanent,
}

/// One daemon's metrics.
pub struct Metrics {
    registry: Registry,
    fetched: Family<MailboxLabel, Counter>,
    triaged: Family<TriagedLabels, Counter>,
    opened: Family<OpenedLabels, Counter>,
    updated: Family<MailboxLabel, Counter>,
    flags: Family<CategoryLabel, Counter>,
    outbox: Family<StateLabel, Gauge>,
    sent: Family<KindLabel, Counter>,
    imap_errors: Family<MailboxLabel, Counter>,
    smtp_errors: Family<ClassLabel, Counter>,
    batch_seconds: Histograms,
    ingest_seconds: Histograms,
    up: Family<MailboxLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric, named `mailtriage_...`.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("mailtriage"),
            fetched: Family::default(),
            triaged: Family::default(),
            opened: Family::default(),
            updated: Family::default(),
            flags: Family::default(),
            outbox: Family::default(),
            sent: Family::default(),
            imap_errors: Family::default(),
            smtp_errors: Family::default(),
            batch_seconds: Family::new_with_constructor(batch_histogram),
            ingest_seconds: Family::new_with_constructor(latency_histogram),
            up: Family::default(),
        };
        let mut r = m.registry;
        r.register(
            "messages_fetched",
            "Messages downloaded from a mailbox",
            m.fetched.clone(),
        );
        r.register(
            "messages_triaged",
            "Messages committed, by what became of them (opened, updated, ignored, quarantined, already_seen)",
            m.triaged.clone(),
        );
        r.register(
            "cases_opened",
            "Cases opened, by mailbox and the escalation's kind",
            m.opened.clone(),
        );
        r.register(
            "cases_updated",
            "Messages that updated a case",
            m.updated.clone(),
        );
        r.register(
            "flags",
            "Cases opened with a flag of this category (once per case and category)",
            m.flags.clone(),
        );
        r.register(
            "outbox_items",
            "Outbox items waiting or given up, by state (pending, retrying, undeliverable), as stored when scraped",
            m.outbox.clone(),
        );
        r.register(
            "mail_sent",
            "Messages the SMTP server accepted, by kind",
            m.sent.clone(),
        );
        r.register(
            "imap_errors",
            "Mailbox sessions that failed (connect, login, any command)",
            m.imap_errors.clone(),
        );
        r.register(
            "smtp_errors",
            "Deliveries that failed, by class (transient: retried; permanent: undeliverable)",
            m.smtp_errors.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "A batch from listing its messages to marking them on the server",
            m.batch_seconds.clone(),
        );
        r.register(
            "ingest_latency_seconds",
            "From a message's arrival at the IMAP server (INTERNALDATE) to its batch's commit",
            m.ingest_seconds.clone(),
        );
        r.register(
            "mailbox_up",
            "1 while the mailbox is connected (working, idle or polling), else 0",
            m.up.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    pub fn fetched(&self, mailbox: &str, n: usize) {
        self.fetched
            .get_or_create(&mailbox_label(mailbox))
            .inc_by(n as u64);
    }

    /// A committed batch: each message by what became of it, the cases it
    /// opened (by kind, and their flag categories) and updated.
    pub fn committed(&self, batch: &Batch, committed: &[Committed]) {
        for (item, c) in batch.items.iter().zip(committed) {
            let outcome = match (c, &item.outcome) {
                (Committed::AlreadySeen(_), _) => "already_seen",
                (_, BatchOutcome::Case { record, .. }) => {
                    self.opened
                        .get_or_create(&OpenedLabels {
                            mailbox: batch.mailbox.clone(),
                            kind: record.case.kind.name(),
                        })
                        .inc();
                    let mut categories: Vec<&str> = record
                        .case
                        .flags
                        .iter()
                        .map(|f| f.category.as_str())
                        .collect();
                    categories.sort_unstable();
                    categories.dedup();
                    for category in categories {
                        self.flags
                            .get_or_create(&CategoryLabel {
                                category: category.to_string(),
                            })
                            .inc();
                    }
                    "opened"
                }
                (_, BatchOutcome::Update { .. }) => {
                    self.updated
                        .get_or_create(&mailbox_label(&batch.mailbox))
                        .inc();
                    "updated"
                }
                (_, BatchOutcome::Ignored { .. }) => "ignored",
                (_, BatchOutcome::Quarantined { .. }) => "quarantined",
            };
            self.triaged
                .get_or_create(&TriagedLabels {
                    mailbox: batch.mailbox.clone(),
                    outcome,
                })
                .inc();
        }
    }

    pub fn imap_error(&self, mailbox: &str) {
        self.imap_errors
            .get_or_create(&mailbox_label(mailbox))
            .inc();
    }

    pub fn sent(&self, kind: crate::outbox::OutgoingKind) {
        self.sent
            .get_or_create(&KindLabel { kind: kind.name() })
            .inc();
    }

    pub fn smtp_error(&self, failure: SmtpFailure) {
        let class = match failure {
            SmtpFailure::Transient => "transient",
            SmtpFailure::Permanent => "permanent",
        };
        self.smtp_errors.get_or_create(&ClassLabel { class }).inc();
    }

    pub fn batch_seconds(&self, mailbox: &str, seconds: f64) {
        self.batch_seconds
            .get_or_create(&mailbox_label(mailbox))
            .observe(seconds);
    }

    pub fn ingest_seconds(&self, mailbox: &str, seconds: f64) {
        self.ingest_seconds
            .get_or_create(&mailbox_label(mailbox))
            .observe(seconds.max(0.0));
    }

    /// The queue as stored now.
    pub fn outbox(&self, pending: usize, retrying: usize, undeliverable: usize) {
        for (state, n) in [
            ("pending", pending),
            ("retrying", retrying),
            ("undeliverable", undeliverable),
        ] {
            self.outbox
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn mailbox_up(&self, mailbox: &str, up: bool) {
        self.up
            .get_or_create(&mailbox_label(mailbox))
            .set(i64::from(up));
    }
}

fn mailbox_label(mailbox: &str) -> MailboxLabel {
    MailboxLabel {
        mailbox: mailbox.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two registries count apart: a daemon's metrics are its own.
    #[test]
    fn each_daemons_metrics_are_its_own_and_encode_as_openmetrics() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.fetched("ops", 3);
        a.smtp_error(SmtpFailure::Permanent);
        a.outbox(2, 1, 0);
        a.mailbox_up("ops", true);
        b.fetched("ops", 1);
        let text = a.encode().unwrap();
        for line in [
            "# TYPE mailtriage_messages_fetched counter",
            "mailtriage_messages_fetched_total{mailbox=\"ops\"} 3",
            "mailtriage_smtp_errors_total{class=\"permanent\"} 1",
            "mailtriage_outbox_items{state=\"pending\"} 2",
            "mailtriage_outbox_items{state=\"retrying\"} 1",
            "mailtriage_mailbox_up{mailbox=\"ops\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            b.encode()
                .unwrap()
                .lines()
                .any(|l| l == "mailtriage_messages_fetched_total{mailbox=\"ops\"} 1")
        );
    }
}
