//! The shipped routing table, rule by rule, on the fixtures.

use std::path::Path;

use mailtriage::config::Config;
use mailtriage::route::{Action, ActionType};

fn route(fixture: &str) -> (mailtriage::case::Case, Vec<Action>, Config) {
    let config = Config::builtin().expect("built-in config");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("{fixture}.eml"));
    let raw = std::fs::read(&path).expect("fixture");
    let (email, case) = config.triage.parse(&raw).expect("parses");
    let mut actions = config.router.route(&case, Some("ops"));
    // As the daemon writes it when the message arrives.
    let mut letter = mailtriage::letter::Letter::new("ESC-2026-000042", Some("ops"), &case, &email);
    letter.received_at = email
        .date
        .as_deref()
        .and_then(mailtriage::text::parse_rfc3339);
    letter.respond_within = config.lifecycle.respond_within(case.risk);
    letter.owners = mailtriage::letter::owners(&actions);
    for a in &mut actions {
        if let Some(r) = mailtriage::letter::render(&config.router, a, &letter).expect("renders") {
            a.subject = Some(r.subject);
            a.body = Some(r.body);
        }
    }
    (case, actions, config)
}

/// Each action as `type:rule:to|cc`, for compact expectations.
fn summary(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| {
            let what = match a.kind {
                ActionType::Reply => format!("reply:{}", a.template.as_deref().unwrap_or("")),
                ActionType::Forward => format!("forward:{}|{}", a.to.join(","), a.cc.join(",")),
                ActionType::Digest => format!("digest:{}", a.digest.as_deref().unwrap_or("")),
                ActionType::Tag => format!("tag:{}", a.tags.join(",")),
            };
            format!("{}={what}", a.rule)
        })
        .collect()
}

#[test]
fn shipped_routes() {
    let ack = "acknowledge=reply:ack";
    let digest = "acknowledge=digest:managers_daily";
    let cases: &[(&str, &[&str])] = &[
        // Incorrect promise: ops manager, cc the sales team lead.
        (
            "01-incorrect-promise-price",
            &[
                "incorrect-promise-to-ops=forward:ops.manager@example.com|teamlead.sales@example.com",
                ack,
                digest,
            ],
        ),
        // Missing details: the agent is asked, once, instead of acknowledged.
        (
            "04-incorrect-promise-placeholders",
            &[
                "ask-for-missing=reply:missing_info",
                "incorrect-promise-to-ops=forward:ops.manager@example.com|teamlead.sales@example.com",
                digest,
            ],
        ),
        (
            "06-pickup-rude-vendor",
            &["pickup-to-cx=forward:cx@example.com|", ack, digest],
        ),
        // Fraud: risk 5 but tier 1, so the supervisor alone.
        (
            "17-fraud-scam-accusation",
            &[
                "high-risk-to-supervisor=forward:supervisor.oncall@example.com|",
                ack,
                digest,
            ],
        ),
        // Review threat: tier 2, and the supervisor only once.
        (
            "23-review-threat-trustpilot",
            &[
                "tier-2=forward:tier2@example.com|supervisor.oncall@example.com",
                "tier-2=tag:tier2",
                ack,
                digest,
            ],
        ),
        (
            "51-escalation-missing-contact",
            &["ask-for-missing=reply:missing_info", digest],
        ),
        ("13-status-resolved-payout-fixed", &[]),
        ("44-auto-reply-out-of-office", &[]),
        ("45-newsletter-list", &[]),
        ("48-internal-lunch-friday", &[]),
    ];
    for (fixture, want) in cases {
        let (_, actions, _) = route(fixture);
        assert_eq!(summary(&actions), *want, "{fixture}");
    }
}

#[test]
fn replies_carry_the_case_id_and_answer_the_agent() {
    let (case, actions, _) = route("01-incorrect-promise-price");
    let reply = actions
        .iter()
        .find(|a| a.kind == ActionType::Reply)
        .unwrap();
    assert_eq!(reply.to, [case.from.clone().unwrap()]);
    assert_eq!(
        reply.subject.as_deref(),
        Some("Re: Escalation – Incorrect Promise Made to User (Order #CK482913) [ESC-2026-000042]")
    );
    let body = reply.body.as_deref().unwrap();
    // The first line (the inbox preview) says the case id and who has it.
    assert_eq!(
        body.lines().next(),
        Some("ESC-2026-000042 is logged; the ops manager has it."),
        "{body}"
    );
    assert!(body.contains("order CK482913"), "{body}");
}

#[test]
fn missing_info_lists_exactly_what_is_missing() {
    let (case, actions, _) = route("04-incorrect-promise-placeholders");
    assert_eq!(
        case.missing.iter().map(|f| f.name()).collect::<Vec<_>>(),
        ["customer_name", "phone", "device"]
    );
    let subject = actions[0].subject.as_deref().unwrap();
    assert!(
        subject.starts_with(
            "Details needed: customer name, customer phone number, device (model, storage, colour) [ESC-2026-000042]"
        ),
        "{subject}"
    );
    let body = actions[0].body.as_deref().unwrap();
    let first = body.split("\n\n").next().unwrap().replace('\n', " ");
    assert_eq!(
        first,
        "ESC-2026-000042 needs the customer name, the customer phone number and the device (model, storage, colour) before anyone can work on it."
    );

    // "one of customer name or phone" reads as one requirement.
    let (_, actions, _) = route("51-escalation-missing-contact");
    let subject = actions[0].subject.as_deref().unwrap();
    assert!(
        subject.starts_with("Details needed: customer name or customer phone number [ESC-"),
        "{subject}"
    );
    let body = actions[0].body.as_deref().unwrap();
    assert!(
        body.starts_with("ESC-2026-000042 needs the customer name or customer phone number"),
        "{body}"
    );
}

#[test]
fn forwards_summarise_the_case_first() {
    let (_, actions, _) = route("23-review-threat-trustpilot");
    let fwd = actions
        .iter()
        .find(|a| a.kind == ActionType::Forward)
        .unwrap();
    assert_eq!(
        fwd.subject.as_deref(),
        Some(
            "[ESC-2026-000042] Tier 2 / Risk 5: Customer threatening Trustpilot and Google reviews (Order #CK802113)"
        )
    );
    let body = fwd.body.as_deref().unwrap();
    let first: Vec<&str> = body.lines().take(6).collect();
    assert_eq!(
        first,
        [
            // Tier 2 reads in New York: 20:09 IST is 09:39 EST, and risk 5
            // allows 2 h.
            "Tier 2, risk 5 of 5. Respond by 11:39 EST (risk 5 allows 2 h).",
            "Owner: Tier 2.",
            "",
            "Why:",
            "- Review threat: Trustpilot, Google reviews, One star review",
            "",
        ],
        "{body}"
    );
    assert!(
        body.contains(
            "Reply \"Status: Resolved\" and a note to close it; \"Status: ...\" to update."
        ),
        "{body}"
    );
}
