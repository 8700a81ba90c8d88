//! `completions` and `man`: the shell completion scripts (clap_complete)
//! and the man pages (clap_mangen), generated from the command line's own
//! clap definitions, so they always say what the binary accepts. The
//! Debian package installs what these print (`scripts/package`).

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use super::{Cli, CliError, Outcome, VERSION};

const NAME: &str = "mailtriage";

/// `mailtriage completions SHELL`: the script on `out`.
pub(super) fn completions(shell: Shell, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let mut script = Vec::new();
    // Into memory first: clap_complete panics when its writer fails, and
    // `out` may be a pipe closed early.
    clap_complete::generate(shell, &mut Cli::command(), NAME, &mut script);
    out.write_all(&script)?;
    Ok(Outcome::Ok)
}

/// `mailtriage man`: mailtriage(1) on `out`; with a directory, a page for
/// the program and each command (visible ones, nested ones too), named as
/// mailtriage(1) refers to them (`mailtriage-cases-list.1`), their paths
/// on `out`.
pub(super) fn man(dir: Option<&Path>, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let pages = pages();
    let Some(dir) = dir else {
        out.write_all(&pages[0].1)?;
        return Ok(Outcome::Ok);
    };
    for (name, page) in &pages {
        let path = dir.join(name);
        std::fs::write(&path, page).map_err(|source| CliError::Write {
            path: path.clone(),
            source,
        })?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(Outcome::Ok)
}

/// Every page as (file name, roff), mailtriage.1 first.
fn pages() -> Vec<(String, Vec<u8>)> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Gives each subcommand its display name, `mailtriage-cases-list`.
    cmd.build();
    let mut pages = vec![(
        Man::new(cmd.clone()).get_filename(),
        render_top(cmd.clone()),
    )];
    let mut todo: Vec<clap::Command> = visible_subcommands(&cmd);
    while let Some(sub) = todo.pop() {
        todo.extend(visible_subcommands(&sub));
        let man = Man::new(sub).source(source());
        let mut page = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = man.render(&mut page);
        pages.push((man.get_filename(), page));
    }
    pages[1..].sort_by(|a, b| a.0.cmp(&b.0));
    pages
}

fn visible_subcommands(cmd: &clap::Command) -> Vec<clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect()
}

/// The footer's source: the program and its version, on every page.
fn source() -> String {
    format!("{NAME} {VERSION}")
}

/// mailtriage(1): clap_mangen's sections, then what an operator looks for
/// in a daemon's page: exit status, files, and where the manual is.
fn render_top(cmd: clap::Command) -> Vec<u8> {
    let man = Man::new(cmd).source(source());
    let mut page = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut page);
    let _ = man.render_name_section(&mut page);
    let _ = man.render_synopsis_section(&mut page);
    let _ = man.render_description_section(&mut page);
    let _ = man.render_options_section(&mut page);
    let _ = man.render_subcommands_section(&mut page);
    let _ = operator_sections().to_writer(&mut page);
    let _ = man.render_version_section(&mut page);
    page
}

fn operator_sections() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "Success."),
        (
            "1",
            "An input that is not an email (or cannot be read), a command that failed \
             (an unknown case id, no database yet), a daemon that failed to start for a \
             reason that may pass, or a replay that found messages that differ.",
        ),
        (
            "2",
            "A config or usage error. The systemd unit does not restart the daemon \
             after it: fix the config, check it with mailtriage check-config, and \
             restart the service.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(code)]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["FILES"]);
    for (path, meaning) in [
        (
            "/etc/mailtriage/",
            "The config directory: mailtriage.toml (the servers and mailboxes, and \
             where each secret comes from), keywords.toml, triage.toml, routing.toml \
             and templates/.",
        ),
        (
            "/etc/credstore.encrypted/",
            "The secrets, encrypted with systemd-creds, that the service loads with \
             LoadCredentialEncrypted= (the unit, or a drop-in made with systemctl edit \
             mailtriage).",
        ),
        (
            "/var/lib/mailtriage/db",
            "The database of the service (StateDirectory=).",
        ),
        (
            "/run/mailtriage/mailtriage.sock",
            "The running daemon's control socket, which the cases and digest commands use.",
        ),
        (
            "/usr/lib/systemd/system/mailtriage.service",
            "The systemd unit, installed neither enabled nor started.",
        ),
        (
            "/usr/share/doc/mailtriage/README.md",
            "The manual: installing, configuring, what the daemon does and sends.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([italic(path)]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "systemctl(1), journalctl(1), systemd-creds(1), systemd.exec(5), \
         /usr/share/doc/mailtriage/README.md",
    )]);
    roff
}
