//! The command line's arguments: every command and option as clap
//! defines them (the man pages and completions are generated from these),
//! and the parsers of values that are not plain strings.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The version and the commit the binary was built from (build.rs):
/// `0.1.0 (abc1234)`, `0.1.0 (abc1234-dirty)` when its sources differed
/// from that commit, `0.1.0 (unknown commit)` when built outside git.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("MAILTRIAGE_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "mailtriage",
    version = VERSION,
    about = "Triage of customer-support escalation emails",
    long_about = "Triage of customer-support escalation emails: parse the standard \
                  escalation format, flag dangerous words, rate risk and tier, and route \
                  each case. The run command is the daemon that watches the IMAP mailboxes \
                  and sends the acknowledgements, forwards and digests; the others triage \
                  files, check a config, and look at or change the daemon's cases."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the case a message makes, as JSON.
    ///
    /// One file (or `-` for standard input, the default) prints one JSON
    /// object. Several files, a directory (a folder of .eml files, or a
    /// Maildir with cur/ and new/) or an mbox file print one JSON object per
    /// line, each with a "file" key; a file that is not an email gets an
    /// "error" key and the rest go on.
    Parse {
        /// Config directory; the built-in config when omitted.
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
        /// Skip files larger than this many bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
        max_size: u64,
        /// Message files, directories, or `-`.
        #[arg(value_name = "FILE")]
        inputs: Vec<PathBuf>,
    },
    /// Print the case and the actions the routing table would take; sends nothing.
    ///
    /// One file (or `-` for standard input, the default) prints one JSON
    /// object; several files, a directory or an mbox file print JSON Lines,
    /// each with a "file" key, as `parse` does.
    Route {
        /// Config directory; the built-in config when omitted.
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
        /// The mailbox the messages arrived in (for rules that match on it):
        /// one the config knows.
        #[arg(long)]
        mailbox: Option<String>,
        /// Case id to render into subjects.
        #[arg(long, default_value = "ESC-PREVIEW")]
        case_id: String,
        /// Also print each rendered message body.
        #[arg(long)]
        body: bool,
        /// Skip files larger than this many bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
        max_size: u64,
        /// Message files, directories, mbox files, or `-`.
        #[arg(value_name = "FILE")]
        inputs: Vec<PathBuf>,
    },
    /// What a config change would change: triage and route every message
    /// under both configs and print those whose kind, flags, risk, tier,
    /// missing fields or actions differ.
    ///
    /// Prints a block per changed message and a count, or with --json one
    /// JSON object per changed message (and per input that is not an email).
    /// Exits 1 when any message differs, 0 when none does.
    Replay {
        /// The new config directory.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The config directory to compare with; the built-in config when
        /// omitted.
        #[arg(long, value_name = "OLD")]
        against: Option<PathBuf>,
        /// The mailbox the messages arrived in (for rules that match on it);
        /// none when omitted.
        #[arg(long)]
        mailbox: Option<String>,
        /// Print JSON Lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Skip files larger than this many bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
        max_size: u64,
        /// Message files, directories (folders of .eml files, Maildirs),
        /// mbox files, or `-`.
        #[arg(value_name = "PATH", required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Load and check a config directory.
    CheckConfig {
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
    },
    /// Run the daemon: watch the mailboxes of DIR/mailtriage.toml until
    /// SIGTERM or SIGINT.
    Run {
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Log format: journald under systemd, text on a terminal, or json.
        #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
        log_format: LogFormat,
    },
    /// List, show, resolve and reopen cases: through the running daemon's
    /// control socket, or in the database when no daemon runs.
    Cases {
        #[command(subcommand)]
        command: CasesCommand,
    },
    /// What a digest would say now (--preview, the default), or queue it
    /// for sending now (--send-now).
    Digest {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The digest's name in the routing table.
        name: String,
        /// Print what the digest would say; send nothing (the default).
        #[arg(long, conflicts_with = "send_now")]
        preview: bool,
        /// Queue the digest for sending now.
        #[arg(long)]
        send_now: bool,
    },
    /// Write everything the database holds, at one point in time, as
    /// JSON Lines: through the running daemon's control socket, or from
    /// the database when no daemon runs.
    ///
    /// To standard output (the default, or `--out -`), to a file (written
    /// under a temporary name and renamed once whole), or to a new file
    /// `mailtriage-YYYYMMDDTHHMMSSZ.jsonl` in a directory (`--out-dir`),
    /// keeping only the newest `--keep` of those.
    Export {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR", default_value = "/etc/mailtriage")]
        config: PathBuf,
        /// The file to write, or `-` for standard output.
        #[arg(long, value_name = "FILE", conflicts_with = "out_dir")]
        out: Option<PathBuf>,
        /// A directory to write a new dated file in.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// With --out-dir: remove the oldest of its dated files beyond N.
        #[arg(long, value_name = "N", requires = "out_dir", value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
    },
    /// Read an export into an empty database (the one mailtriage.toml
    /// names), while no daemon runs.
    Import {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The export, or `-` for standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// The daemon's health at a glance: each mailbox's connection, the
    /// outbox, the digests, the database, the daemon.
    ///
    /// Asks the running daemon; when none answers, reads the database and
    /// says so. Exits 0 when healthy, 1 when degraded (the daemon not
    /// running, a mailbox down, mail retrying longer than `[daemon]
    /// alert_after`, anything undeliverable), 2 when it cannot tell (no
    /// daemon answers and the database cannot be read, or the answer
    /// cannot be read): a monitoring check can run it as it is.
    Status {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The mail waiting to go out, and what was given up: list, show,
    /// retry and drop items, through the running daemon's control socket,
    /// or in the database when no daemon runs.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// OAuth 2.0 grants of the mailboxes and the SMTP server.
    Oauth2 {
        #[command(subcommand)]
        command: OAuth2Command,
    },
    /// Print the completion script for a shell.
    ///
    /// The Debian package installs them for bash, zsh and fish; elsewhere,
    /// e.g. `mailtriage completions bash > /etc/bash_completion.d/mailtriage`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one for each command into a directory.
    ///
    /// `mailtriage man | man -l -` shows it; the Debian package installs
    /// the pages.
    Man {
        /// Write mailtriage.1 and a page for each command
        /// (mailtriage-run.1, mailtriage-cases-list.1, ...) here, and print
        /// their paths.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `mailtriage outbox ...`.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Items oldest first: pending, retrying and undeliverable unless
    /// --state says otherwise; a table, or JSON with --json.
    List {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Only items in this state: pending, retrying, sent,
        /// undeliverable, dropped, or all (repeatable).
        #[arg(long = "state", value_name = "STATE", value_enum)]
        states: Vec<StateArg>,
        /// Print a JSON array of the items.
        #[arg(long)]
        json: bool,
    },
    /// One item: its state, attempts, error, history and headers.
    Show {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The item's number, as `outbox list` shows it.
        id: u64,
        /// Print the item as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send an item (not sent yet) at once, with its attempts counted
    /// afresh; or every undeliverable one.
    Retry {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        #[arg(required_unless_present = "all_undeliverable")]
        id: Option<u64>,
        /// Retry every undeliverable item.
        #[arg(long, conflicts_with = "id")]
        all_undeliverable: bool,
    },
    /// Give up an item not sent yet: it is never sent, and kept as
    /// dropped.
    Drop {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        id: u64,
    },
}

/// `outbox list --state`: where an item stands, or every state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateArg {
    Pending,
    Retrying,
    Sent,
    Undeliverable,
    Dropped,
    All,
}

impl StateArg {
    pub(super) fn states(self) -> Vec<crate::outbox::QueueState> {
        use crate::outbox::QueueState;
        match self {
            StateArg::Pending => vec![QueueState::Pending],
            StateArg::Retrying => vec![QueueState::Retrying],
            StateArg::Sent => vec![QueueState::Sent],
            StateArg::Undeliverable => vec![QueueState::Undeliverable],
            StateArg::Dropped => vec![QueueState::Dropped],
            StateArg::All => QueueState::ALL.to_vec(),
        }
    }
}

/// `mailtriage cases ...`.
#[derive(Debug, Subcommand)]
pub enum CasesCommand {
    /// Cases, oldest first: a table, or JSON with --json.
    List {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// Only cases not resolved.
        #[arg(long)]
        open: bool,
        /// Only cases of this tier.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=2))]
        tier: Option<u8>,
        /// Only cases of at least this risk.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
        risk_min: Option<u8>,
        /// Only cases received at or after this: YYYY-MM-DD (midnight UTC)
        /// or an RFC 3339 timestamp.
        #[arg(long, value_name = "DATE", value_parser = parse_since)]
        since: Option<jiff::Timestamp>,
        /// Print a JSON array of the case records.
        #[arg(long)]
        json: bool,
    },
    /// One case: its fields, flags, history and every message sent for it.
    Show {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The case id, e.g. ESC-2026-000123.
        id: String,
        /// Print the case record and its outbox items as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resolve a case by hand, with a resolution note.
    Resolve {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        id: String,
        /// The resolution note, kept with the case and in its history.
        #[arg(long, value_name = "TEXT")]
        note: String,
    },
    /// Reopen a resolved case.
    Reopen {
        /// Config directory: its mailtriage.toml names the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        id: String,
    },
}

/// `--since`: `YYYY-MM-DD` (midnight UTC) or an RFC 3339 timestamp, to
/// unix seconds.
fn parse_since(s: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    if s.len() == 10
        && let Ok(d) = s.parse::<jiff::civil::Date>()
        && let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp());
    }
    Err("expected YYYY-MM-DD or an RFC 3339 timestamp such as 2026-11-23T14:02:00Z".into())
}

/// Where and how logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journald when started by systemd (`$JOURNAL_STREAM`), text otherwise.
    Auto,
    Text,
    Json,
    Journald,
}

/// `mailtriage oauth2 ...`.
#[derive(Debug, Subcommand)]
pub enum OAuth2Command {
    /// Give a user's consent for a refresh-token grant, and store the
    /// refresh token in the state directory for the daemon.
    ///
    /// Prints the provider's consent page (with PKCE and a state). Open it,
    /// sign in as the mailbox's user and consent; the browser is then sent
    /// to the redirect URI with a code. Paste that address (or the code)
    /// back, or, with --listen, let the command take the redirect itself on
    /// 127.0.0.1. The code is exchanged at the token endpoint and the
    /// refresh token stored (oauth2/ beside the database, mode 0600). Run
    /// it as the user the daemon runs as.
    Authorize {
        /// Config directory: its mailtriage.toml has the grant and names
        /// the database.
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
        /// The mailbox whose grant to authorize, or `smtp` for `[smtp]`'s.
        #[arg(value_name = "NAME")]
        name: String,
        /// Take the browser's redirect on http://127.0.0.1:PORT/ instead
        /// of reading the pasted address.
        #[arg(long)]
        listen: bool,
        /// The port for --listen (0: any free one; the provider must
        /// accept any loopback port, as Google's desktop clients and
        /// Microsoft's public clients do).
        #[arg(long, value_name = "PORT", default_value_t = 0, requires = "listen")]
        port: u16,
        /// The redirect URI registered with the provider, when pasting
        /// (default: http://127.0.0.1/).
        #[arg(long, value_name = "URI", conflicts_with = "listen")]
        redirect_uri: Option<String>,
    },
}
