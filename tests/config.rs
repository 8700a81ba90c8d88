//! Config mistakes: each is refused with the file, line, column and what
//! was expected.

use std::path::Path;

use mailtriage::config::Config;

/// Copies the shipped config into a temp dir, replaces `from` by `to` in
/// `file`, and loads it.
fn load_with(file: &str, from: &str, to: &str) -> Result<Config, String> {
    let dir = shipped_copy();
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} does not contain {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    Config::load(dir.path()).map_err(|e| {
        // Make the message independent of the temp dir.
        e.to_string()
            .replace(&format!("{}/", dir.path().display()), "")
    })
}

/// A temp dir holding a copy of the shipped config, mailtriage.toml too.
fn shipped_copy() -> tempfile::TempDir {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    for entry in walk(&shipped) {
        let rel = entry.strip_prefix(&shipped).unwrap();
        std::fs::copy(&entry, dir.path().join(rel)).unwrap();
    }
    dir
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Line (1-based) of the first occurrence of `needle` after replacement.
fn line_of(file: &str, from: &str) -> usize {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(file),
    )
    .unwrap();
    text[..text.find(from).unwrap()].matches('\n').count() + 1
}

#[test]
fn shipped_config_loads() {
    assert!(load_with("routing.toml", "[addresses]", "[addresses]").is_ok());
}

#[test]
fn mistakes_are_located_and_explained() {
    // (file, text to replace, replacement, expected message fragment)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "routing.toml",
            "reply = \"missing_info\"",
            "reply = \"missing_infos\"",
            "unknown template \"missing_infos\"",
        ),
        (
            "routing.toml",
            "digest = \"managers_daily\"",
            "digest = \"managers_weekly\"",
            "unknown digest \"managers_weekly\"",
        ),
        (
            "routing.toml",
            "tier = 2 }",
            "tier = 3 }",
            "expected a tier from 1 to 2, found 3",
        ),
        (
            "routing.toml",
            "forward = { to = [\"cx_team\"], owner",
            "forward = { to = [\"cx_teem\"], owner",
            "unknown address name \"cx_teem\"",
        ),
        (
            "routing.toml",
            "zone = \"Asia/Kolkata\"",
            "zone = \"Asia/Calcutta Standard\"",
            "unknown time zone \"Asia/Calcutta Standard\"",
        ),
        (
            "routing.toml",
            "tier2 = \"America/New_York\"",
            "tier3 = \"America/New_York\"",
            "unknown address name \"tier3\"",
        ),
        (
            "routing.toml",
            "when = { kind = [\"pickup_complaint\"] }",
            "when = { kind = [\"pickup\"] }",
            "unknown variant `pickup`",
        ),
        (
            "routing.toml",
            "when = { kind = [\"pickup_complaint\"] }",
            "when = { knd = [\"pickup_complaint\"] }",
            "unknown field `knd`",
        ),
        (
            "routing.toml",
            "reply = \"missing_info\"\ncontinue = true",
            "reply = \"missing_info\"\ncontinue = yes",
            "string values must be quoted",
        ),
        (
            "routing.toml",
            "cx_team = [\"cx@example.com\"]",
            "cx_team = [\"cx.example.com\"]",
            "expected an email address",
        ),
        (
            "routing.toml",
            "missing_any = [\"order_id\", \"customer_name\"",
            "missing_any = [\"order\", \"customer_name\"",
            "unknown variant `order`",
        ),
        (
            "routing.toml",
            "schedule = \"daily 08:00\"",
            "schedule = \"daily 8 o'clock\"",
            "daily",
        ),
        (
            "routing.toml",
            "time_zone = \"Asia/Kolkata\"",
            "time_zone = \"Asia/Kolkatta\"",
            "Asia/Kolkatta",
        ),
        (
            "routing.toml",
            "mon-fri = \"08:00-21:00\"",
            "mon-fri = \"08:00-25:00\"",
            "25:00",
        ),
        (
            "routing.toml",
            "sat = \"08:00-16:30\"",
            "satur = \"08:00-16:30\"",
            "satur",
        ),
        (
            "routing.toml",
            "hours = \"tier2\", after_hours",
            "hours = \"tier3\", after_hours",
            "unknown business hours \"tier3\": expected a [hours.tier3] table",
        ),
        (
            "routing.toml",
            "after = { \"5\" = \"2h\"",
            "after = { \"9\" = \"2h\"",
            "expected a risk level 1 to 5 as the key, found \"9\"",
        ),
        (
            "routing.toml",
            "reopen_within = \"336h\"",
            "reopen_within = \"two weeks\"",
            "expected a duration",
        ),
        (
            "routing.toml",
            "joined_reply = \"joined\"",
            "joined_reply = \"join\"",
            "unknown template \"join\"",
        ),
        (
            "routing.toml",
            "complaints = 3",
            "complaints = \"three\"",
            "invalid type",
        ),
        (
            "routing.toml",
            "id_pattern = '\\b[a-z]{2,5}",
            "id_pattern = '(\\b[a-z]{2,5}",
            "expected a regular expression for vendor ids: unclosed group",
        ),
        (
            "routing.toml",
            "id_pattern = '\\b[a-z]{2,5}(?:\\s*[-_/.#]\\s*|\\s+)?\\d{2,8}\\b'",
            "id_pattern = '[a-z]*\\d*'",
            "the vendor id pattern matches an empty text",
        ),
        (
            "routing.toml",
            "name_suffixes = [\"private limited\"",
            "name_suffixes = [\" . \"",
            "expected a name suffix with letters or digits",
        ),
        (
            "routing.toml",
            "name_suffixes = [",
            "name_suffix = [",
            "unknown field `name_suffix`",
        ),
        (
            "keywords.toml",
            "label = \"Fraud or scam accusation\"\nfloor = 5",
            "label = \"Fraud or scam accusation\"\nfloor = 7",
            "expected a risk floor from 1 to 5, found 7",
        ),
        (
            "keywords.toml",
            "label = \"Fraud or scam accusation\"\nfloor = 5",
            "label = \"Fraud or scam accusation\"\nflor = 5",
            "unknown field `flor`",
        ),
        (
            "templates/ack.txt",
            "{{ case_id }} is logged",
            "{{ caseid }} is logged",
            "unknown name \"caseid\": the names a template here can use are case_id, date, deadline",
        ),
        (
            "templates/forward.txt",
            "{{ fields.customer_name or \"(no name given)\" }}",
            "{{ fields.customer_nam or \"(no name given)\" }}",
            "unknown name \"fields.customer_nam\": fields has category, customer_mood, customer_name",
        ),
        (
            "templates/overdue.txt",
            "{{ fields.order_id or \"(no order ID given)\" }}",
            "{{ fields.order_id }}",
            "cannot render for an escalation with no fields, date or Message-ID, overdue: it prints a value that is not there",
        ),
        (
            "templates/digest.txt",
            "{{ r.case_id }}",
            "{{ r.caseid }}",
            "cannot render for a digest of four cases listing three",
        ),
        (
            "triage.toml",
            "escalation = [\"order_id\"",
            "escalation = [\"order_idd\"",
            "unknown field name `order_idd`, expected one of: customer_name, order_id",
        ),
    ];
    for (file, from, to, want) in cases {
        let err = load_with(file, from, to).expect_err(&format!("{file}: {to:?} must be refused"));
        assert!(err.starts_with(&format!("{file}:")), "{err}");
        assert!(
            err.contains(want),
            "{file}: {to:?}\n  got: {err}\n  want: {want}"
        );
        // Located: file:line:col, on the line of the mistake.
        let line = line_of(file, from);
        let located = err.split(':').nth(1).and_then(|l| l.parse::<usize>().ok());
        assert!(
            located.is_some_and(|l| l >= line && l <= line + 1),
            "{err}: expected line {line}"
        );
    }
}

#[test]
fn a_rule_naming_an_unknown_flag_category_is_refused() {
    let err = load_with(
        "routing.toml",
        "when = { escalation = true, tier = 2 }",
        "when = { escalation = true, flags_any = [\"lawsuit\"] }",
    )
    .unwrap_err();
    assert!(
        err.contains("unknown flag category \"lawsuit\": expected one of keywords.toml's: fraud"),
        "{err}"
    );
}

#[test]
fn a_template_with_a_syntax_error_is_refused_with_its_line() {
    let err = load_with("templates/ack.txt", "{% endif %}\n", "\n").unwrap_err();
    assert!(err.starts_with("templates/ack.txt:"), "{err}");
    let err = load_with("templates/ack.txt", "Subject:", "Subjekt:").unwrap_err();
    assert!(
        err.contains("templates/ack.txt:1:1: expected the first line to be `Subject: ...`"),
        "{err}"
    );
}

/// mailtriage.toml: a secret written as a literal is refused without being
/// repeated; a reply_to that is not an address, a keep_seen too short, and a
/// metrics address that is not an IP address and port, are located.
#[test]
fn mailtriage_toml_mistakes_are_located_and_secrets_never_repeated() {
    use mailtriage::config::Settings;
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mailtriage.toml"),
    )
    .unwrap();
    // (text to replace, replacement, expected fragment, line of the mistake)
    let cases: &[(&str, &str, &str)] = &[
        (
            "password = { credential = \"smtp-password\" }",
            "password = \"hunter2-Secret\"",
            "a secret is never written into the config (the value was not read back): name where it comes from, { credential = \"NAME\" }",
        ),
        (
            "password = { credential = \"smtp-password\" }",
            "password = { credentials = \"hunter2-Secret\" }",
            "expected one of { credential = \"NAME\" }, { file = \"/path\" }",
        ),
        (
            "# reply_to = \"ops@example.com\"",
            "reply_to = \"ops mailbox\"",
            "mailbox \"ops\": reply_to: expected the mailbox's email address, found \"ops mailbox\"",
        ),
        (
            "keep_seen = \"90d\"",
            "keep_seen = \"2d\"",
            "[retention] keep_seen: expected at least 7 days",
        ),
        (
            "# metrics = \"127.0.0.1:9464\"",
            "metrics = \"localhost:9464\"",
            "invalid socket address syntax",
        ),
    ];
    for (from, to, want) in cases {
        assert!(shipped.contains(from), "{from}");
        let text = shipped.replacen(from, to, 1);
        let err = Settings::parse(Path::new("mailtriage.toml"), &text)
            .expect_err(to)
            .to_string();
        assert!(err.contains(want), "{to}:\n  got: {err}\n  want: {want}");
        assert!(!err.contains("hunter2"), "the secret is repeated: {err}");
        let line = shipped[..shipped.find(from).unwrap()].matches('\n').count() + 1;
        assert!(
            err.starts_with(&format!("mailtriage.toml:{line}:")),
            "{err}: expected line {line}"
        );
    }
}

#[test]
fn oauth2_mistakes_are_located_and_secrets_never_repeated() {
    use mailtriage::config::Settings;
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mailtriage.toml"),
    )
    .unwrap();
    let line = |needle: &str| {
        shipped[..shipped.find(needle).unwrap()]
            .matches('\n')
            .count()
            + 1
    };
    let table = line("[mailbox.oauth2]");
    let secret = "client_secret = { credential = \"support-oauth2-client-secret\" }";
    // (text to replace, replacement, expected fragment, line of the mistake)
    let cases: &[(&str, &str, &str, usize)] = &[
        (
            secret,
            "client_secret = \"hunter2-Secret\"",
            "a secret is never written into the config",
            line(secret),
        ),
        (
            secret,
            "client_secret = { credential = \"s\" }\nrefresh_token = \"hunter2-Secret\"",
            "a secret is never written into the config",
            line(secret) + 1,
        ),
        (
            "tenant = \"example.onmicrosoft.com\"",
            "# no tenant",
            "mailbox \"support\": oauth2: provider = \"microsoft\" expects `tenant`",
            table,
        ),
        (
            "provider = \"microsoft\"",
            "provider = \"yahoo\"",
            "unknown variant `yahoo`, expected `microsoft` or `google`",
            line("provider = \"microsoft\""),
        ),
        (
            secret,
            "",
            "client credentials expect `client_secret`, or `certificate` and `private_key`",
            table,
        ),
        (
            secret,
            "client_secret = { credential = \"s\" }\nflow = \"refresh_token\"\ntoken_url = \"http://login.example.com/token\"",
            "token_url: expected an https:// URL (http:// only on 127.0.0.1, ::1 or localhost)",
            table,
        ),
        (
            "user = \"support@example.com\"",
            "user = \"support@example.com\"\npassword = { credential = \"hunter2-Secret\" }",
            "mailbox \"support\": expected one of `password`, `oauth2` and `oauth2_token`, not several",
            table + 1,
        ),
        (
            "password = { credential = \"smtp-password\" }",
            "password = { credential = \"smtp-password\" }\noauth2 = { provider = \"google\", client_id = \"x\" }",
            "[smtp]: expected `password` or `oauth2`, not both",
            0,
        ),
    ];
    for (from, to, want, at) in cases {
        assert!(shipped.contains(from), "{from}");
        let text = shipped.replacen(from, to, 1);
        let err = Settings::parse(Path::new("mailtriage.toml"), &text)
            .expect_err(to)
            .to_string();
        assert!(err.contains(want), "{to}:\n  got: {err}\n  want: {want}");
        assert!(!err.contains("hunter2"), "the secret is repeated: {err}");
        let place = if *at == 0 {
            "mailtriage.toml: ".to_string()
        } else {
            format!("mailtriage.toml:{at}:")
        };
        assert!(err.starts_with(&place), "{err}: expected {place}");
    }
}

#[test]
fn a_bad_vendor_id_pattern_names_its_place() {
    let from = "id_pattern = '\\b[a-z]{2,5}(?:\\s*[-_/.#]\\s*|\\s+)?\\d{2,8}\\b'";
    let line = line_of("routing.toml", from);
    let err = load_with("routing.toml", from, "id_pattern = 'VND[0-9'").unwrap_err();
    assert_eq!(
        err,
        format!(
            "routing.toml:{line}:14: expected a regular expression for vendor ids: unclosed character class"
        )
    );
}

#[test]
fn without_a_vendors_table_the_shipped_rules_apply() {
    let c = load_with("routing.toml", "[vendors]\n", "[vendors_unused]\n");
    assert!(c.is_err(), "an unknown table is refused");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/routing.toml");
    let text = std::fs::read_to_string(shipped).unwrap();
    let start = text.find("[vendors]\n").unwrap();
    let end = start + text[start..].find("name_suffixes").unwrap();
    let end = end + text[end..].find('\n').unwrap() + 1;
    let c = load_with("routing.toml", &text[start..end], "").unwrap();
    let key = |f: &str| c.vendors.key(f).map(|k| k.to_string());
    assert_eq!(key("QuickPick (VND-1142)").as_deref(), Some("id:vnd-1142"));
    assert_eq!(key("QuickPick Pvt Ltd").as_deref(), Some("name:quickpick"));
}

#[test]
fn a_rule_for_a_mailbox_that_is_not_watched_is_refused_with_its_line() {
    let dir = shipped_copy();
    let settings = mailtriage::config::Settings::load(dir.path()).unwrap();
    let check = || {
        let config = Config::load(dir.path()).unwrap();
        config.check_mailboxes(dir.path(), &settings).map_err(|e| {
            e.to_string()
                .replace(&format!("{}/", dir.path().display()), "")
        })
    };
    let routing = dir.path().join("routing.toml");
    let text = std::fs::read_to_string(&routing).unwrap();
    let from = r#"when = { escalation = true, tier = 2 }"#;
    let line = line_of("routing.toml", from);
    for (name, want) in [("OPS", Ok(())), ("opps", Err(()))] {
        let to = format!(r#"when = {{ escalation = true, tier = 2, mailbox = ["{name}"] }}"#);
        std::fs::write(&routing, text.replacen(from, &to, 1)).unwrap();
        match (check(), want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(())) => assert_eq!(
                e,
                format!(
                    "routing.toml:{line}:50: rule \"tier-2\": `when.mailbox` names \"opps\", which is not a [[mailbox]] of mailtriage.toml; expected one of: ops, support"
                )
            ),
            (got, _) => panic!("mailbox {name:?}: {got:?}"),
        }
    }
}
