//! mailtriage's real-server test kit: private Dovecot IMAP and aiosmtpd SMTP
//! instances on loopback, and the daemon run against them, for the tests,
//! the benchmarks and the demo.
//!
//! - [`Dovecot`] ([`dovecot`]): a private Dovecot 2.3 per test, with users,
//!   Maildir storage and its log in a temp dir; mail in, flags and folders
//!   out, outages, TLS.
//! - [`SmtpCapture`] ([`smtp`]): an aiosmtpd server that stores every
//!   message it accepts with its envelope; AUTH, rejections, TLS, outages.
//! - [`TokenServer`] ([`token`]): a loopback OAuth 2.0 token server that
//!   issues, expires and revokes tokens and counts requests; Dovecot
//!   ([`Dovecot::start_oauth`]) and the SMTP capture
//!   ([`SmtpCapture::start_with_oauth`]) check XOAUTH2 tokens against it.
//! - [`TestCa`] ([`ca`]): a private CA and a server certificate for
//!   127.0.0.1, for the TLS modes above and the daemon's `ca_file`.
//! - [`ImapClient`] and [`SmtpClient`] ([`client`]): tiny synchronous
//!   clients on one line reader, for the kit itself and for tests that act
//!   as a user or a sender.
//! - [`config_dir`] ([`config`]): a config directory for the daemon that
//!   points at those servers.
//! - [`Daemon`] and [`InProcess`] ([`daemon`]): the daemon as a child
//!   process, or on a thread of the test; [`run_cli`] and [`cli_ok`]
//!   ([`cli`]): its command line, as an operator's shell runs it.
//! - [`browser`]: mail as a phone shows it, in Debian's headless Chromium.
//! - [`fixture`], [`golden`], [`python_read`], [`wait_until`], [`Rng`]:
//!   the fixtures, golden files, a second reader of what the daemon sends,
//!   waiting on a condition, and a seeded generator.
//!
//! Why: the daemon's IMAP IDLE, flag, move and SMTP retry behaviour can
//! only be trusted when tested against real servers, and each test needs
//! its own so that tests run in parallel and can take a server down.
//! Everything listens on 127.0.0.1 only. The servers come from Debian's
//! `dovecot-imapd` and `python3-aiosmtpd` packages, which `scripts/test`
//! installs.
//!
//! Failures panic (this is test code) with what failed and the server's log
//! tail. Waits are deadline loops on a condition (port answers, file
//! appears), never fixed sleeps.

#![forbid(unsafe_code)]

pub mod browser;
pub mod ca;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod dovecot;
mod fixtures;
mod python_email;
mod rng;
mod server;
pub mod smtp;
pub mod token;
mod wait;

pub use ca::TestCa;
pub use cli::{cli_ok, run_cli};
pub use client::{ImapClient, ImapMessage, SmtpClient, base64};
pub use config::{
    Extra, MailtriageToml, Secret, TlsMode, Via, config_dir, copy_clock_free_config,
    copy_shipped_config, database, password_file,
};
pub use daemon::{Daemon, DaemonCommand, InProcess, LogFormat, log_tail, outbox};
pub use dovecot::Dovecot;
pub use fixtures::{fixture, golden};
pub use python_email::python_read;
pub use rng::Rng;
pub use smtp::{Captured, RejectAt, SmtpCapture, SmtpTls, by_rcpt, subject};
pub use token::{HttpAnswer, TokenClient, TokenServer, http};
pub use wait::{wait_until, wait_until_every};
