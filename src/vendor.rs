//! Vendors: which complaints are about the same vendor, however the agent
//! wrote the vendor field.
//!
//! Agents write one vendor as `QuickPick Logistics (VND-1142)`, `VND-1142 /
//! QuickPick`, `QuickPick Logistics - VND-1142`, `VND 1142 QuickPick`,
//! `vnd-1142` or `QuickPick Logistics Pvt. Ltd.`. [`VendorRules::parse`]
//! reads such a field into a [`VendorRef`]: the vendor id wherever it stands
//! (found by the configured pattern, case-insensitively, and written in one
//! canonical form, `vnd-1142`), and the normalised name (no case,
//! punctuation or spacing, no legal-form suffix such as `Pvt Ltd`).
//!
//! Complaints are counted under a [`VendorKey`]: the id when there is one,
//! else the name. A name given next to an id becomes an alias of the id (the
//! store keeps it), so that a later complaint naming the vendor alone counts
//! under the id: see [`CaseVendor`]. Everything here is pure.

use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// Letters, an optional separator (space, `-`, `_`, `/`, `.`, `#`), digits:
/// `VND-1142`, `vnd 1142`, `VND1142`. Bounded so that a phone number or a
/// long word is not taken for an id.
pub const DEFAULT_ID_PATTERN: &str = r"\b[a-z]{2,5}(?:\s*[-_/.#]\s*|\s+)?\d{2,8}\b";

/// Legal forms, which agents add or leave out at will. Words such as
/// `Services` or `Logistics` are not here: `Sai Services` and `Sai
/// Logistics` may well be two vendors.
pub const DEFAULT_NAME_SUFFIXES: &[&str] = &[
    "private limited",
    "pvt ltd",
    "p ltd",
    "pvt",
    "private",
    "ltd",
    "limited",
    "llp",
    "llc",
    "inc",
    "co",
    "corp",
    "corporation",
    "company",
];

/// Words that announce the id (`ID VND-2045`, `Vendor Code: VND-2045`), not
/// part of the name.
const ID_LABELS: &[&str] = &["id", "no", "code", "number", "num"];

/// What a vendor's complaints are counted under: `id:vnd-1142` or
/// `name:quickpicklogistics`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VendorKey(String);

impl VendorKey {
    fn id(canonical: &str) -> VendorKey {
        VendorKey(format!("id:{canonical}"))
    }

    fn name(normalised: &str) -> VendorKey {
        VendorKey(format!("name:{normalised}"))
    }

    /// A key as stored (the store's index holds keys as text).
    pub(crate) fn from_stored(key: String) -> VendorKey {
        VendorKey(key)
    }

    /// Keyed by an id (not by a name).
    pub fn is_id(&self) -> bool {
        self.0.starts_with("id:")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VendorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one vendor field says: an id, a name, or both (never neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorRef {
    pub id: Option<VendorKey>,
    pub name: Option<VendorKey>,
}

impl VendorRef {
    /// The case's vendor, given the id the name is a known alias of.
    pub fn resolve(self, alias: Option<VendorKey>) -> Option<CaseVendor> {
        let key = self.id.or(alias).or_else(|| self.name.clone())?;
        Some(CaseVendor {
            key,
            name: self.name,
        })
    }
}

/// A case's vendor, as resolved when the case opened (stored with it, so
/// that the report, the digest and the store's index agree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseVendor {
    /// What the complaint counts under: the id the field gives, else the
    /// id its name is an alias of, else the name. The store changes it from
    /// the name to the id when a later case teaches that alias.
    pub key: VendorKey,
    /// The name the field gives, if any: stored as an alias of `key` when
    /// `key` is an id.
    #[serde(default)]
    pub name: Option<VendorKey>,
}

/// Why vendor rules cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("expected a regular expression for vendor ids: {0}")]
    Pattern(String),
    #[error("the vendor id pattern matches an empty text: every field would have an id")]
    MatchesEmpty,
    /// The suffix at this index has no letters or digits.
    #[error("expected a name suffix with letters or digits")]
    Suffix(usize),
}

/// How vendor fields are read (`[vendors]` in routing.toml).
#[derive(Debug, Clone)]
pub struct VendorRules {
    id: Regex,
    /// Each suffix as words, longest first.
    suffixes: Vec<Vec<String>>,
}

impl VendorRules {
    /// Rules from an id pattern (a regular expression, matched
    /// case-insensitively) and name suffixes.
    pub fn new<S: AsRef<str>>(id_pattern: &str, suffixes: &[S]) -> Result<VendorRules, RulesError> {
        let id = RegexBuilder::new(id_pattern)
            .case_insensitive(true)
            .build()
            .map_err(|e| RulesError::Pattern(regex_message(&e)))?;
        if id.is_match("") {
            return Err(RulesError::MatchesEmpty);
        }
        let mut words = Vec::with_capacity(suffixes.len());
        for (i, s) in suffixes.iter().enumerate() {
            let w = tokens(s.as_ref());
            if w.is_empty() {
                return Err(RulesError::Suffix(i));
            }
            words.push(w);
        }
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        Ok(VendorRules {
            id,
            suffixes: words,
        })
    }

    /// The shipped rules: [`DEFAULT_ID_PATTERN`], [`DEFAULT_NAME_SUFFIXES`].
    pub fn shipped() -> Result<VendorRules, RulesError> {
        VendorRules::new(DEFAULT_ID_PATTERN, DEFAULT_NAME_SUFFIXES)
    }

    /// Reads a vendor field. `None` when it names nothing (empty, only
    /// punctuation).
    pub fn parse(&self, field: &str) -> Option<VendorRef> {
        // Several candidates (`Shop 24 Movers (VND-1142)`): the one with the
        // most digits is the id, the first of those on a tie.
        let mut best: Option<regex::Match<'_>> = None;
        for m in self.id.find_iter(field) {
            let digits =
                |m: &regex::Match<'_>| m.as_str().chars().filter(char::is_ascii_digit).count();
            if !m.is_empty() && best.as_ref().is_none_or(|b| digits(&m) > digits(b)) {
                best = Some(m);
            }
        }
        let id = best.and_then(|m| canonical_id(m.as_str()));
        let mut words = match (&id, best) {
            (Some(_), Some(m)) => {
                let mut before = tokens(&field[..m.start()]);
                strip_labels(&mut before);
                before.extend(tokens(&field[m.end()..]));
                before
            }
            _ => tokens(field),
        };
        strip_prefix(&mut words);
        self.strip_suffixes(&mut words);
        let name = (!words.is_empty()).then(|| VendorKey::name(&words.concat()));
        let id = id.map(|i| VendorKey::id(&i));
        (id.is_some() || name.is_some()).then_some(VendorRef { id, name })
    }

    /// The key a field counts under when no alias is known.
    pub fn key(&self, field: &str) -> Option<VendorKey> {
        self.parse(field)?.resolve(None).map(|v| v.key)
    }

    /// Whether `later`, a later case's spelling of a vendor, names it
    /// better than `current` (the name so far, empty for none): a spelling
    /// with the id beats one without, else the earliest stays. The digest
    /// and the repeat-vendor report name a vendor alike this way.
    pub fn better_spelling(&self, current: &str, later: &str) -> bool {
        let has_id = |s: &str| self.parse(s).is_some_and(|v| v.id.is_some());
        current.is_empty() || (!has_id(current) && has_id(later))
    }

    /// Removes legal-form suffixes from the end, again and again
    /// (`Co Pvt Ltd`), but never the whole name.
    fn strip_suffixes(&self, words: &mut Vec<String>) {
        'again: loop {
            for s in &self.suffixes {
                if words.len() > s.len() && words.ends_with(s) {
                    words.truncate(words.len() - s.len());
                    continue 'again;
                }
            }
            return;
        }
    }
}

/// The last line of a regex error (the first lines repeat the pattern).
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim().trim_start_matches("error:").trim().to_string()
}

/// The words of a text, lowercased: every character that is not a letter
/// or a digit separates words.
fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// `VND-1142`, `vnd 1142`, `VND1142` → `vnd-1142`: runs of letters and of
/// digits, lowercased, joined by `-`.
fn canonical_id(m: &str) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut prev: Option<bool> = None;
    for c in m.chars() {
        if !c.is_alphanumeric() {
            prev = None;
            continue;
        }
        let digit = c.is_numeric();
        match parts.last_mut() {
            Some(last) if prev == Some(digit) => last.extend(c.to_lowercase()),
            _ => parts.push(c.to_lowercase().collect()),
        }
        prev = Some(digit);
    }
    (!parts.is_empty()).then(|| parts.join("-"))
}

/// Drops the words that announce the id, right before it (`ID`, `Vendor
/// Code`).
fn strip_labels(words: &mut Vec<String>) {
    let mut dropped = false;
    while words
        .last()
        .is_some_and(|w| ID_LABELS.contains(&w.as_str()))
    {
        words.pop();
        dropped = true;
    }
    if dropped && words.last().is_some_and(|w| w == "vendor") {
        words.pop();
    }
}

/// Drops `M/s` and `Messrs` before a firm's name.
fn strip_prefix(words: &mut Vec<String>) {
    let n = match words.as_slice() {
        [m, s, _, ..] if m == "m" && s == "s" => 2,
        [m, _, ..] if m == "messrs" => 1,
        _ => 0,
    };
    words.drain(..n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> VendorRules {
        VendorRules::shipped().unwrap()
    }

    /// (field, id, name) as keys would show them, without their prefix.
    fn read(rules: &VendorRules, field: &str) -> Option<(Option<String>, Option<String>)> {
        rules.parse(field).map(|v| {
            (
                v.id.map(|k| k.as_str().trim_start_matches("id:").to_string()),
                v.name
                    .map(|k| k.as_str().trim_start_matches("name:").to_string()),
            )
        })
    }

    #[test]
    fn spellings_of_one_vendor() {
        let qp = "quickpicklogistics";
        // (field, id, name)
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            // The six ways agents write it.
            ("QuickPick Logistics (VND-1142)", Some("vnd-1142"), Some(qp)),
            ("VND-1142 / QuickPick Logistics", Some("vnd-1142"), Some(qp)),
            ("QuickPick Logistics - VND-1142", Some("vnd-1142"), Some(qp)),
            ("VND 1142 QuickPick Logistics", Some("vnd-1142"), Some(qp)),
            ("vnd-1142", Some("vnd-1142"), None),
            ("QuickPick Logistics", None, Some(qp)),
            // The id's separators and case.
            ("VND1142", Some("vnd-1142"), None),
            ("vnd_1142", Some("vnd-1142"), None),
            ("VND/1142", Some("vnd-1142"), None),
            ("VND.1142", Some("vnd-1142"), None),
            ("Vnd - 1142", Some("vnd-1142"), None),
            ("QuickPick Logistics(VND#1142)", Some("vnd-1142"), Some(qp)),
            ("QuickPick Logistics-VND-1142", Some("vnd-1142"), Some(qp)),
            // Labels before the id are not the name.
            (
                "Ramesh Yadav (ID VND-2045)",
                Some("vnd-2045"),
                Some("rameshyadav"),
            ),
            (
                "Ramesh Yadav, Vendor Code: VND-2045",
                Some("vnd-2045"),
                Some("rameshyadav"),
            ),
            (
                "GreenBox Pickups (VND-3310)",
                Some("vnd-3310"),
                Some("greenboxpickups"),
            ),
            // Case, punctuation, spacing.
            ("  quickpick   LOGISTICS  ", None, Some(qp)),
            ("Quick-Pick Logistics.", None, Some(qp)),
            ("Quick Pick Logistics", None, Some(qp)),
            ("\"QuickPick Logistics\"", None, Some(qp)),
            // Legal forms.
            ("QuickPick Logistics Pvt. Ltd.", None, Some(qp)),
            ("QuickPick Logistics Private Limited", None, Some(qp)),
            ("QuickPick Logistics (P) Ltd", None, Some(qp)),
            ("QuickPick Logistics Pvt.Ltd", None, Some(qp)),
            ("quickpick logistics pvt ltd", None, Some(qp)),
            ("QuickPick Logistics & Co. Pvt Ltd", None, Some(qp)),
            (
                "QUICKPICK LOGISTICS PVT LTD (vnd 1142)",
                Some("vnd-1142"),
                Some(qp),
            ),
            ("M/s QuickPick Logistics", None, Some(qp)),
            // ...but not the words that tell vendors apart, and never the
            // whole name.
            ("Sai Services", None, Some("saiservices")),
            ("Sai Logistics", None, Some("sailogistics")),
            ("Limited", None, Some("limited")),
            // Digits that are not an id; an id among other numbers.
            ("24x7 Movers", None, Some("24x7movers")),
            ("A2Z Pickups", None, Some("a2zpickups")),
            ("Ravi 9845012345", None, Some("ravi9845012345")),
            (
                "Shop 24 Movers (VND-1142)",
                Some("vnd-1142"),
                Some("shop24movers"),
            ),
        ];
        let rules = shipped();
        for (field, id, name) in cases {
            assert_eq!(
                read(&rules, field),
                Some((id.map(str::to_string), name.map(str::to_string))),
                "{field:?}"
            );
        }
    }

    #[test]
    fn fields_that_name_no_vendor() {
        let rules = shipped();
        for field in ["", "   ", "\t\r\n", "()", " - / ", "\"\""] {
            assert_eq!(rules.parse(field), None, "{field:?}");
        }
    }

    #[test]
    fn keys_count_an_id_before_a_name() {
        let rules = shipped();
        let spellings = [
            "QuickPick Logistics (VND-1142)",
            "VND-1142 / QuickPick",
            "vnd 1142",
            "QuickPick Logistics Pvt Ltd (VND1142)",
        ];
        for s in spellings {
            assert_eq!(
                rules.key(s).map(|k| k.to_string()).as_deref(),
                Some("id:vnd-1142"),
                "{s:?}"
            );
        }
        assert_eq!(
            rules
                .key("QuickPick Logistics")
                .map(|k| k.to_string())
                .as_deref(),
            Some("name:quickpicklogistics")
        );
        // A name alone resolves through a known alias; an id never does.
        let alias = rules.key("VND-1142");
        let name_only = rules.parse("QuickPick Logistics pvt ltd").unwrap();
        assert_eq!(
            name_only.clone().resolve(alias.clone()),
            Some(CaseVendor {
                key: alias.clone().unwrap(),
                name: name_only.name.clone(),
            })
        );
        let other = rules.parse("VND-9999 QuickPick Logistics").unwrap();
        assert_eq!(other.resolve(alias).unwrap().key.as_str(), "id:vnd-9999");
        assert!(rules.key("vnd-1142").unwrap().is_id());
        assert!(!rules.key("QuickPick").unwrap().is_id());
    }

    #[test]
    fn a_configured_pattern_and_suffixes() {
        // Ids that are always `V` and five digits, and `Services` dropped.
        let rules = VendorRules::new(r"\bv\d{5}\b", &["services", "pvt ltd"]).unwrap();
        assert_eq!(
            read(&rules, "SwiftCollect Services Pvt Ltd v01187"),
            Some((Some("v-01187".into()), Some("swiftcollect".into())))
        );
        assert_eq!(
            read(&rules, "SwiftCollect (VND-1187)"),
            Some((None, Some("swiftcollectvnd1187".into())))
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(matches!(
            VendorRules::new("VND-(\\d+", &[] as &[&str]),
            Err(RulesError::Pattern(m)) if m.contains("unclosed group")
        ));
        assert_eq!(
            VendorRules::new(r"\d*", &[] as &[&str]).unwrap_err(),
            RulesError::MatchesEmpty
        );
        assert_eq!(
            VendorRules::new(DEFAULT_ID_PATTERN, &["ltd", " . "]).unwrap_err(),
            RulesError::Suffix(1)
        );
    }
}
