//! The RFC 3834 loop guard: whether the daemon may answer a message
//! automatically. Mail from machines, lists and bounces, and the daemon's
//! own, is never answered; the other half is [`crate::mail`], which marks
//! everything the daemon sends as automatic.

use crate::message::Email;

/// Local parts of senders that are machines.
const MACHINE_SENDERS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "no-reply",
    "noreply",
    "do-not-reply",
    "donotreply",
    "bounce",
    "bounces",
    "auto-reply",
    "autoreply",
];

/// Why a message gets no automatic reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoReply {
    #[error("the message is automatic (Auto-Submitted, Precedence or List-Id)")]
    Automatic,
    #[error("the message has a null return path (a bounce)")]
    Bounce,
    #[error("the message has no sender")]
    NoSender,
    #[error("the sender is a machine (mailer-daemon, no-reply, ...)")]
    Machine,
    #[error("the sender is one of the daemon's own addresses")]
    Own,
}

/// Whether the daemon may send an automatic reply to this message (RFC
/// 3834 section 2): `Err` says why not.
pub fn reply_allowed(email: &Email, own_addresses: &[String]) -> Result<(), NoReply> {
    if email.automatic().is_some() {
        return Err(NoReply::Automatic);
    }
    if email.return_path.as_deref() == Some("") {
        return Err(NoReply::Bounce);
    }
    let Some(from) = email.from.as_deref() else {
        return Err(NoReply::NoSender);
    };
    let local = from.split('@').next().unwrap_or("").to_ascii_lowercase();
    if MACHINE_SENDERS.iter().any(|m| {
        local == *m || local.starts_with(&format!("{m}+")) || local.starts_with(&format!("{m}-"))
    }) {
        return Err(NoReply::Machine);
    }
    if own_addresses.iter().any(|a| a.eq_ignore_ascii_case(from)) {
        return Err(NoReply::Own);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_own_reply_is_never_answered() {
        let identity = crate::mail::Identity {
            from: "Escalations <mailtriage@example.com>".parse().unwrap(),
            domain: "mailtriage.example.com".into(),
        };
        let rendered = crate::route::Rendered {
            subject: "Re: Escalation (Order #CK1) [ESC-2026-000001]".into(),
            body: "Logged as ESC-2026-000001.\n".into(),
            high_importance: false,
        };
        let agent = crate::message::parse(
            b"From: priya@example.com\r\nSubject: Escalation (Order #CK1)\r\n\r\nCustomer Name: Asha\r\n",
        )
        .unwrap();
        assert!(reply_allowed(&agent, &[]).is_ok());
        let out = crate::mail::compose_reply(
            &identity,
            "ESC-2026-000001",
            "0",
            "priya@example.com",
            Some("ops@example.com"),
            &rendered,
            &agent,
            std::time::SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        let echo = crate::message::parse(&out.raw).unwrap();
        assert!(reply_allowed(&echo, &[]).is_err());
    }

    #[test]
    fn loops_are_refused() {
        let own = vec!["ops@example.com".to_string()];
        let cases: &[(&str, Result<(), NoReply>)] = &[
            ("From: priya@example.com\r\nSubject: x\r\n\r\nb", Ok(())),
            (
                "From: priya@example.com\r\nAuto-Submitted: auto-replied\r\nSubject: x\r\n\r\nb",
                Err(NoReply::Automatic),
            ),
            (
                "From: priya@example.com\r\nAuto-Submitted: no\r\nSubject: x\r\n\r\nb",
                Ok(()),
            ),
            (
                "From: priya@example.com\r\nPrecedence: bulk\r\nSubject: x\r\n\r\nb",
                Err(NoReply::Automatic),
            ),
            (
                "From: priya@example.com\r\nList-Id: <l.example.com>\r\nSubject: x\r\n\r\nb",
                Err(NoReply::Automatic),
            ),
            (
                "Return-Path: <>\r\nFrom: priya@example.com\r\nSubject: x\r\n\r\nb",
                Err(NoReply::Bounce),
            ),
            (
                "From: MAILER-DAEMON@example.com\r\nSubject: x\r\n\r\nb",
                Err(NoReply::Machine),
            ),
            (
                "From: no-reply@example.com\r\nSubject: x\r\n\r\nb",
                Err(NoReply::Machine),
            ),
            (
                "From: bounces+123@example.com\r\nSubject: x\r\n\r\nb",
                Err(NoReply::Machine),
            ),
            (
                "From: OPS@example.com\r\nSubject: x\r\n\r\nb",
                Err(NoReply::Own),
            ),
            ("Subject: x\r\n\r\nb", Err(NoReply::NoSender)),
        ];
        for (raw, allowed) in cases {
            let e = crate::message::parse(raw.as_bytes()).unwrap();
            assert_eq!(reply_allowed(&e, &own), *allowed, "{raw:?}");
        }
    }
}
