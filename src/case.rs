//! The case: what triage makes of one message, and the engine that makes it.
//!
//! [`Case`] is the JSON contract of `mailtriage parse` and the record the
//! daemon stores; its field names are relied on outside the crate. [`Triage`]
//! holds what is compiled once from the config (the keyword automaton, the
//! required fields) and turns an [`Email`] into a [`Case`] without I/O.

use serde::{Deserialize, Serialize};

use crate::classify::{self, Flag, Keywords, Place};
use crate::extract::{self, Field, Fields, Kind};
use crate::message::{self, Email, MessageError};

/// One message, triaged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
    pub in_reply_to: Option<String>,
    pub kind: Kind,
    pub is_escalation: bool,
    pub fields: Fields,
    pub tags: Vec<String>,
    pub missing: Vec<Field>,
    pub flags: Vec<Flag>,
    pub risk: u8,
    pub tier: u8,
    /// Each unmet requirement in words ("customer name or customer phone
    /// number"), for the reply that asks for them.
    #[serde(skip_serializing, default)]
    pub missing_labels: Vec<String>,
}

impl Case {
    /// Flag categories, each once, in order of first appearance.
    pub fn flag_categories(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in &self.flags {
            if !out.contains(&f.category.as_str()) {
                out.push(&f.category);
            }
        }
        out
    }
}

/// One requirement: any one of these fields satisfies it. Written in the
/// config as a field name, or a list of names any one of which will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    One(Field),
    AnyOf(Vec<Field>),
}

impl<'de> Deserialize<'de> for Requirement {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Requirement;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name or a list of field names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Requirement, E> {
                field_named(v).map(Requirement::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Requirement, A::Error> {
                let mut fields = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    fields.push(field_named(&name)?);
                }
                if fields.is_empty() {
                    return Err(serde::de::Error::custom(
                        "expected at least one field name in the list",
                    ));
                }
                Ok(Requirement::AnyOf(fields))
            }
        }
        d.deserialize_any(V)
    }
}

fn field_named<E: serde::de::Error>(name: &str) -> Result<Field, E> {
    Field::ALL
        .iter()
        .copied()
        .find(|f| f.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
            E::custom(format!(
                "unknown field name `{name}`, expected one of: {}",
                names.join(", ")
            ))
        })
}

impl Requirement {
    fn fields(&self) -> &[Field] {
        match self {
            Requirement::One(f) => std::slice::from_ref(f),
            Requirement::AnyOf(v) => v,
        }
    }
}

/// Required fields for each kind of escalation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Required {
    #[serde(default)]
    pub incorrect_promise: Vec<Requirement>,
    #[serde(default)]
    pub pickup_complaint: Vec<Requirement>,
    #[serde(default)]
    pub escalation: Vec<Requirement>,
}

impl Required {
    fn for_kind(&self, kind: Kind) -> &[Requirement] {
        match kind {
            Kind::IncorrectPromise => &self.incorrect_promise,
            Kind::PickupComplaint => &self.pickup_complaint,
            Kind::Escalation => &self.escalation,
            Kind::StatusUpdate | Kind::NotEscalation => &[],
        }
    }

    /// The fields of each requirement of `kind` that `fields` leaves unmet,
    /// and each such requirement in words.
    fn unmet(&self, kind: Kind, fields: &Fields) -> (Vec<Field>, Vec<String>) {
        let mut missing = Vec::new();
        let mut labels = Vec::new();
        for req in self.for_kind(kind) {
            let any = req.fields();
            if !any.iter().any(|f| fields.has(*f)) {
                missing.extend_from_slice(any);
                let words: Vec<&str> = any.iter().map(|f| f.label()).collect();
                labels.push(words.join(" or "));
            }
        }
        (missing, labels)
    }
}

/// The compiled triage rules: keywords, risk floors, tiers, required fields.
#[derive(Debug, Clone)]
pub struct Triage {
    keywords: Keywords,
    required: Required,
}

impl Triage {
    pub fn new(keywords: Keywords, required: Required) -> Self {
        Triage { keywords, required }
    }

    /// Works out again what `case` lacks, after a reply filled some of its
    /// fields in: a requirement that any one of several fields meets
    /// ("customer name or phone") is met by the one that arrived, so the
    /// others are no longer missing either.
    pub fn refresh_missing(&self, case: &mut Case) {
        (case.missing, case.missing_labels) = self.required.unmet(case.kind, &case.fields);
    }

    pub fn keywords(&self) -> &Keywords {
        &self.keywords
    }

    /// Parses raw bytes and triages them.
    pub fn parse(&self, raw: &[u8]) -> Result<(Email, Case), MessageError> {
        let email = message::parse(raw)?;
        let case = self.case(&email);
        Ok((email, case))
    }

    /// Triages a parsed message.
    pub fn case(&self, email: &Email) -> Case {
        let content = extract::author_content(&email.text, &email.subject);
        let x = extract::extract(email, &content);

        let mut flags = Vec::new();
        self.keywords
            .scan(&email.subject, Place::Subject, &mut flags);
        self.keywords
            .scan_parts(&content.lines, Place::Body, &mut flags);

        let risk = classify::risk(x.fields.risk_rating, self.keywords.floor(&flags));
        let tier = classify::tier(self.keywords.any_tier2(&flags), x.tier);

        let (missing, missing_labels) = self.required.unmet(x.kind, &x.fields);

        Case {
            message_id: email.message_id.clone(),
            from: email.from.clone(),
            subject: (!email.subject.is_empty()).then(|| email.subject.clone()),
            date: email.date.clone(),
            in_reply_to: email.in_reply_to.clone(),
            kind: x.kind,
            is_escalation: x.kind.is_escalation(),
            fields: x.fields,
            tags: x.tags,
            missing,
            flags,
            risk,
            tier,
            missing_labels,
        }
    }
}
