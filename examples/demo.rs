//! The newcomer's first run: a private Dovecot and SMTP capture server on
//! loopback, the fixture emails delivered to the `ops` and `support`
//! mailboxes, the daemon run against them, and what every agent and manager
//! received printed. `scripts/demo` installs the servers and runs this.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mailtriage::config::Config;
use mailtriage::route::ActionType;
use support::{Dovecot, SmtpCapture};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!(
        "Starting a private Dovecot (mailboxes ops, support) and an SMTP capture server on 127.0.0.1 ..."
    );
    let dovecot = Dovecot::start(&[("ops", "demo-ops"), ("support", "demo-support")]);
    let smtp = SmtpCapture::start();
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(dir.path(), &dovecot, &smtp);

    // The fixtures, alternately to ops and support, and how many messages
    // the routing table will send for them (so we know when it is done).
    let config = Config::builtin().expect("built-in config");
    let mut fixtures: Vec<_> = std::fs::read_dir(root.join("fixtures"))
        .expect("fixtures/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    fixtures.sort();
    let mut expected = 0;
    let mut escalations = 0;
    for (i, path) in fixtures.iter().enumerate() {
        let raw = std::fs::read(path).expect("fixture");
        let mailbox = if i % 2 == 0 { "ops" } else { "support" };
        dovecot.append(mailbox, "INBOX", &raw);
        if let Ok((email, case)) = config.triage.parse(&raw) {
            let allowed = email
                .from
                .as_deref()
                .is_some_and(|f| f.ends_with("@example.com"));
            if allowed && case.is_escalation {
                escalations += 1;
                let own = ["mailtriage@example.com".to_string()];
                expected += config
                    .router
                    .route(&case, Some(mailbox))
                    .iter()
                    .filter(|a| match a.kind {
                        ActionType::Forward => true,
                        ActionType::Reply => mailtriage::send::reply_allowed(&email, &own).is_ok(),
                        _ => false,
                    })
                    .count();
            }
        }
    }
    println!(
        "Delivered {} fixture emails ({escalations} escalations) to ops and support.",
        fixtures.len()
    );

    println!(
        "Running mailtriage (mailtriage run --config {}) ...\n",
        dir.path().display()
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    let config_dir = dir.path().to_path_buf();
    let daemon = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(mailtriage::daemon::run(&config_dir, rx))
    });
    let received = smtp.wait_for(expected, Duration::from_secs(120));
    let _ = stop.send(true);
    match daemon.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("the daemon failed: {e:#}"),
        Err(_) => eprintln!("the daemon panicked"),
    }

    // Who got what.
    let mut inboxes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &received {
        let parsed = mail_parser::MessageParser::default().parse(&m.raw);
        let subject = parsed
            .as_ref()
            .and_then(|p| p.subject())
            .unwrap_or("(no subject)")
            .to_string();
        for r in &m.rcpt_to {
            inboxes.entry(r.clone()).or_default().push(subject.clone());
        }
    }
    let managers = [
        "tier2@",
        "supervisor",
        "cx@",
        "ops.manager@",
        "teamlead.sales@",
    ];
    let is_manager = |a: &str| managers.iter().any(|m| a.contains(m));
    for (title, want_manager) in [("MANAGERS AND SUPERVISORS", true), ("AGENTS", false)] {
        println!("==== {title} ====");
        for (addr, subjects) in inboxes
            .iter()
            .filter(|(a, _)| is_manager(a) == want_manager)
        {
            println!("{addr} ({} messages)", subjects.len());
            for s in subjects {
                println!("    {s}");
            }
        }
        println!();
    }
    if let Some(ack) = received
        .iter()
        .find(|m| m.rcpt_to.iter().any(|r| !is_manager(r)))
    {
        println!("==== ONE ACKNOWLEDGEMENT, AS THE AGENT SEES IT ====");
        println!("{}", String::from_utf8_lossy(&ack.raw));
    }
    println!(
        "{} messages sent for {escalations} escalations; {} fixtures were not escalations, from strangers, or automatic mail, and were left untouched.",
        received.len(),
        fixtures.len() - escalations
    );

    // What the managers' digest would say now (`mailtriage digest
    // managers_daily --preview --config DIR`), its beginning.
    let store = mailtriage::store::Store::open(&dir.path().join("db"), 1 << 20)
        .expect("open the demo's database");
    let daemon_config =
        mailtriage::config::DaemonConfig::load(dir.path()).expect("the demo's mailtriage.toml");
    let config = Config::load(dir.path()).expect("the demo's config");
    println!("\n==== THE MANAGERS' DIGEST, IF IT WENT NOW (its first 45 lines) ====");
    match mailtriage::daemon::digest_command(
        &config,
        &daemon_config,
        &store,
        "managers_daily",
        false,
        jiff::Timestamp::now().as_second(),
    ) {
        Ok(text) => {
            for line in text.lines().take(45) {
                println!("{line}");
            }
            println!("...");
        }
        Err(e) => eprintln!("digest: {e}"),
    }
}

fn write_config(dir: &Path, d: &Dovecot, s: &SmtpCapture) {
    // Tier 2 open around the clock, so that what the demo shows does not
    // depend on the hour it runs at.
    support::daemon_proc::copy_clock_free_config(dir);
    let mailbox = |name: &str, pw: &str| {
        let file = dir.join(format!("{name}.password"));
        std::fs::write(&file, pw).expect("write password");
        format!(
            "[[mailbox]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plain\"\nuser = \"{name}\"\npassword = {{ file = \"{}\" }}\nmark_seen = true\nquarantine = \"Quarantine\"\n",
            d.port(),
            file.display()
        )
    };
    let toml = format!(
        "[daemon]\ndatabase = \"{}\"\ndomain = \"mailtriage.demo\"\nallow_senders = [\"example.com\"]\n\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"plain\"\nfrom = \"Escalations <mailtriage@example.com>\"\n\n{}\n{}",
        dir.join("db").display(),
        s.port(),
        mailbox("ops", "demo-ops"),
        mailbox("support", "demo-support"),
    );
    std::fs::write(dir.join("mailtriage.toml"), toml).expect("write mailtriage.toml");
}
