//! Keyword flags, risk and tier.
//!
//! All the configured terms of all categories go into one Aho-Corasick
//! automaton, built once when the config is loaded. A message is scanned
//! twice (subject, then the author's content), each time over a normalised
//! copy of the text: lower case, every run of white space or hyphens folded to
//! one space, typographic apostrophes made plain. That makes matching
//! case-insensitive and lets a multi-word term match across a line break.
//!
//! A match counts only on word boundaries, so "sue" never fires inside
//! "issue" or "pursue". Each term also matches its common inflections
//! (plural, past, -ing), generated here for the last word of the term, so the
//! list names "scam" and catches "scams", "scammed" and "scamming".
//!
//! Precision is a matter of the list, not of the matcher: single words that
//! agents use in ordinary office mail ("executive", "news", "late") appear in
//! the default list only inside phrases.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use serde::{Deserialize, Serialize};

/// Where a flag was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    Subject,
    Body,
}

/// One flagged term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub category: String,
    /// The term as configured (not the inflection found).
    pub term: String,
    #[serde(rename = "in")]
    pub place: Place,
    /// Index of the category in the matcher that made the flag; unknown
    /// (`u16::MAX`) for a flag read back from storage.
    #[serde(skip, default = "unknown_index")]
    category_index: u16,
}

fn unknown_index() -> u16 {
    u16::MAX
}

/// A flag category as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    /// How people read it in mail ("Review threat"); default: the name
    /// with its underscores as spaces, capitalised.
    pub label: String,
    /// Lowest risk a case with this flag has.
    pub floor: u8,
    /// A flag of this category makes the case tier 2.
    pub tier2: bool,
    pub terms: Vec<String>,
    /// Generate inflections of each term's last word.
    pub inflect: bool,
}

/// "review_threat" as people read it: "Review threat".
pub fn default_label(name: &str) -> String {
    let words = name.replace('_', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The compiled keyword matcher.
#[derive(Clone)]
pub struct Keywords {
    ac: AhoCorasick,
    /// For each automaton pattern, the (category, term) pairs it stands for.
    owners: Vec<Vec<(u16, u32)>>,
    categories: Vec<Category>,
    /// Configured terms, flattened: `terms[i]` belongs to `term_cat[i]`.
    terms: Vec<String>,
}

/// Why a keyword list cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum KeywordError {
    #[error("category {category:?}: term {term:?} has no letters or digits")]
    EmptyTerm { category: String, term: String },
    #[error("category {category:?}: risk floor {floor} is outside 1..=5")]
    Floor { category: String, floor: u8 },
    #[error("too many keyword patterns: {0}")]
    Build(#[from] aho_corasick::BuildError),
}

impl std::fmt::Debug for Keywords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keywords")
            .field("categories", &self.categories.len())
            .field("terms", &self.terms.len())
            .field("patterns", &self.owners.len())
            .finish()
    }
}

impl Keywords {
    /// Compiles the categories into one automaton.
    pub fn new(categories: Vec<Category>) -> Result<Self, KeywordError> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut owners: Vec<Vec<(u16, u32)>> = Vec::new();
        let mut exact_owner: Vec<Vec<bool>> = Vec::new();
        let mut terms = Vec::new();
        for (ci, cat) in categories.iter().enumerate() {
            if !(1..=5).contains(&cat.floor) {
                return Err(KeywordError::Floor {
                    category: cat.name.clone(),
                    floor: cat.floor,
                });
            }
            for term in &cat.terms {
                let norm = normalize(term);
                let norm = norm.trim();
                if !norm.chars().any(char::is_alphanumeric) {
                    return Err(KeywordError::EmptyTerm {
                        category: cat.name.clone(),
                        term: term.clone(),
                    });
                }
                let ti = terms.len() as u32;
                terms.push(term.clone());
                let variants = if cat.inflect {
                    inflections(norm)
                } else {
                    vec![norm.to_string()]
                };
                for v in variants {
                    let exact = v == norm;
                    let pi = *index.entry(v.clone()).or_insert_with(|| {
                        patterns.push(v);
                        owners.push(Vec::new());
                        exact_owner.push(Vec::new());
                        patterns.len() - 1
                    });
                    // One string names one term of a category: the term
                    // listed as exactly that string, else the first whose
                    // inflection it is ("drop shipping" is its own term,
                    // not an inflection of "drop ship").
                    let owner = (ci as u16, ti);
                    match owners[pi].iter().position(|o| o.0 == owner.0) {
                        None => {
                            owners[pi].push(owner);
                            exact_owner[pi].push(exact);
                        }
                        Some(k) if exact && !exact_owner[pi][k] => {
                            owners[pi][k] = owner;
                            exact_owner[pi][k] = true;
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        // A full DFA: about a megabyte for the default list, built once,
        // and more than twice as fast to search as the default NFA.
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)?;
        Ok(Keywords {
            ac,
            owners,
            categories,
            terms,
        })
    }

    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    pub fn category(&self, name: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.name == name)
    }

    /// Flags in `text`, appended to `out` in order of first appearance, one
    /// per (category, term, place).
    pub fn scan(&self, text: &str, place: Place, out: &mut Vec<Flag>) {
        self.scan_parts(&[text], place, out);
    }

    /// [`scan`](Self::scan) over several pieces of text read as one, with a
    /// line break between each (the lines of a message, without copying
    /// them together first).
    pub fn scan_parts(&self, parts: &[&str], place: Place, out: &mut Vec<Flag>) {
        let norm = normalize_parts(parts);
        if norm.is_empty() {
            return;
        }
        let hay = norm.as_str();
        // Overlapping search: a match that fails the word-boundary check must
        // not hide a shorter or longer one at the same place.
        let mut spans: Vec<(usize, usize, usize)> = Vec::new();
        for m in self.ac.find_overlapping_iter(hay) {
            if is_word_boundary(hay, m.start(), m.end()) {
                spans.push((m.start(), m.end(), m.pattern().as_usize()));
            }
        }
        // A match inside a longer one is part of that phrase, not a flag of
        // its own: "one-star" within "one star review", "cheating" within
        // "cheating us". Sorted by start, longest first, a span lies inside
        // an earlier one exactly when an earlier one reaches as far.
        spans.sort_unstable_by_key(|&(s, e, _)| (s, std::cmp::Reverse(e)));
        let mut found: Vec<(usize, u16, u32)> = Vec::new();
        let mut reach = 0;
        for (i, &(start, end, pattern)) in spans.iter().enumerate() {
            if i > 0 && reach >= end {
                continue;
            }
            reach = reach.max(end);
            for &(ci, ti) in &self.owners[pattern] {
                found.push((start, ci, ti));
            }
        }
        found.sort_by_key(|&(start, ci, ti)| (start, ci, ti));
        for (_, ci, ti) in found {
            let category = &self.categories[ci as usize].name;
            let term = &self.terms[ti as usize];
            if !out
                .iter()
                .any(|f| f.place == place && &f.category == category && &f.term == term)
            {
                out.push(Flag {
                    category: category.clone(),
                    term: term.clone(),
                    place,
                    category_index: ci,
                });
            }
        }
    }

    /// The category of a flag: by index for a fresh flag, by name for one
    /// read back from storage.
    fn category_of(&self, f: &Flag) -> Option<&Category> {
        self.categories
            .get(f.category_index as usize)
            .filter(|c| c.name == f.category)
            .or_else(|| self.category(&f.category))
    }

    /// The risk floor of a set of flags (1 when there are none).
    pub fn floor(&self, flags: &[Flag]) -> u8 {
        flags
            .iter()
            .filter_map(|f| self.category_of(f))
            .map(|c| c.floor)
            .max()
            .unwrap_or(1)
    }

    /// Whether any flag is of a tier-2 category.
    pub fn any_tier2(&self, flags: &[Flag]) -> bool {
        flags
            .iter()
            .filter_map(|f| self.category_of(f))
            .any(|c| c.tier2)
    }
}

/// Risk: the larger of the agent's own rating and the flags' floor.
pub fn risk(agent_rating: Option<u8>, floor: u8) -> u8 {
    agent_rating.unwrap_or(1).max(floor).clamp(1, 5)
}

/// Tier: 2 when a tier-2 flag is present or the agent wrote `Tier: 2`.
pub fn tier(tier2_flag: bool, agent_tier: Option<u8>) -> u8 {
    if tier2_flag || agent_tier.is_some_and(|t| t >= 2) {
        2
    } else {
        1
    }
}

fn is_word_boundary(hay: &str, start: usize, end: usize) -> bool {
    let before = hay[..start].chars().next_back();
    let after = hay[end..].chars().next();
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

/// Lower case; white space and hyphen runs to one space; `’` to `'`.
pub fn normalize(text: &str) -> String {
    normalize_parts(&[text])
}

/// [`normalize`] of several pieces read as one, a space between each.
pub fn normalize_parts(parts: &[&str]) -> String {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        normalize_into(&mut buf, p);
    }
    // Only ASCII bytes were changed and whole characters copied, so this is
    // UTF-8; the lossy path is never taken, but never panics either.
    String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Bytes copied as they are: ASCII that is not upper case, white space or a
/// hyphen.
static VERBATIM: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = !c.is_ascii_uppercase() && !c.is_ascii_whitespace() && c != b'-';
        b += 1;
    }
    t
};

/// Appends the normalised `text` to `buf`, separated by one space from what
/// `buf` already holds. Runs of plain lower-case ASCII with single spaces,
/// nearly all of a message, are copied in one go; the rest is handled a
/// character at a time.
fn normalize_into(buf: &mut Vec<u8>, text: &str) {
    let trimmed = text.trim_matches(' ');
    let bytes = trimmed.as_bytes();
    // Most lines are plain ASCII words with single spaces: copy them and
    // lower-case in place. The checks are folds without early exit so that
    // they compile to vector code.
    let special = bytes.iter().fold(false, |acc, &b| {
        acc | !(0x20..0x80).contains(&b) | (b == b'-')
    });
    let double_space = bytes
        .windows(2)
        .fold(false, |acc, w| acc | ((w[0] == b' ') & (w[1] == b' ')));
    if !special && !double_space {
        if bytes.is_empty() {
            return;
        }
        if !buf.is_empty() {
            buf.push(b' ');
        }
        let start = buf.len();
        buf.extend_from_slice(bytes);
        buf[start..].make_ascii_lowercase();
        return;
    }
    normalize_slow(buf, text);
}

/// The general case of [`normalize_into`], a character at a time.
fn normalize_slow(buf: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut space = !buf.is_empty();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() {
            let b = bytes[i];
            let single_space =
                b == b' ' && i > start && bytes.get(i + 1).is_some_and(|&n| VERBATIM[n as usize]);
            if VERBATIM[b as usize] || single_space {
                i += 1;
            } else {
                break;
            }
        }
        if i > start {
            if space {
                if !buf.is_empty() {
                    buf.push(b' ');
                }
                space = false;
            }
            buf.extend_from_slice(&bytes[start..i]);
            continue;
        }
        let b = bytes[i];
        if b < 0x80 {
            i += 1;
            if b.is_ascii_whitespace() || b == b'-' {
                space = true;
                continue;
            }
            if space {
                if !buf.is_empty() {
                    buf.push(b' ');
                }
                space = false;
            }
            buf.push(b.to_ascii_lowercase());
            continue;
        }
        let Some(ch) = text.get(i..).and_then(|t| t.chars().next()) else {
            break;
        };
        let len = ch.len_utf8();
        if ch.is_whitespace() || matches!(ch, '‐' | '‑' | '–' | '—') {
            space = true;
        } else {
            if space {
                if !buf.is_empty() {
                    buf.push(b' ');
                }
                space = false;
            }
            match ch {
                '’' | '‘' | 'ʼ' => buf.push(b'\''),
                c if c.is_uppercase() => {
                    let mut tmp = [0u8; 4];
                    for l in c.to_lowercase() {
                        buf.extend_from_slice(l.encode_utf8(&mut tmp).as_bytes());
                    }
                }
                _ => buf.extend_from_slice(&bytes[i..i + len]),
            }
        }
        i += len;
    }
}

/// A term's forms: the term, and the plural, past and -ing forms of its last
/// word. Over-generation is harmless (the automaton just holds a string that
/// never occurs); words whose inflection is a different everyday word
/// ("late" → "later") are avoided by not generating "-er" forms.
fn inflections(term: &str) -> Vec<String> {
    let (head, last) = match term.rfind(' ') {
        Some(i) => (&term[..=i], &term[i + 1..]),
        None => ("", term),
    };
    let mut forms = vec![last.to_string()];
    // Only words of letters inflect; "1 star" or "bbb" plurals are fine too.
    let letters = last.chars().all(|c| c.is_alphabetic() || c == '\'');
    if letters && last.chars().count() >= 2 {
        let chars: Vec<char> = last.chars().collect();
        let n = chars.len();
        let is_vowel = |c: char| "aeiou".contains(c);
        let stem_e = last.strip_suffix('e');
        forms.push(format!("{last}s"));
        forms.push(format!("{last}es"));
        if let Some(stem) = stem_e {
            forms.push(format!("{last}d"));
            if let Some(ie) = last.strip_suffix("ie") {
                forms.push(format!("{ie}ying"));
            } else {
                forms.push(format!("{stem}ing"));
            }
        } else if let Some(stem) = last
            .strip_suffix('y')
            .filter(|_| n >= 3 && !is_vowel(chars[n - 2]))
        {
            forms.push(format!("{stem}ies"));
            forms.push(format!("{stem}ied"));
            forms.push(format!("{last}ing"));
        } else {
            forms.push(format!("{last}ed"));
            forms.push(format!("{last}ing"));
            // Short consonant-vowel-consonant words double the consonant:
            // scam → scammed, scamming.
            if n >= 3
                && !is_vowel(chars[n - 1])
                && !"wxy".contains(chars[n - 1])
                && is_vowel(chars[n - 2])
                && !is_vowel(chars[n - 3])
            {
                let c = chars[n - 1];
                forms.push(format!("{last}{c}ed"));
                forms.push(format!("{last}{c}ing"));
            }
        }
    }
    forms.into_iter().map(|f| format!("{head}{f}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw() -> Keywords {
        let cat = |name: &str, floor, tier2, terms: &[&str]| Category {
            name: name.into(),
            label: default_label(name),
            floor,
            tier2,
            terms: terms.iter().map(|t| t.to_string()).collect(),
            inflect: true,
        };
        Keywords::new(vec![
            cat("fraud", 5, false, &["scam", "fraud", "cheat"]),
            cat(
                "legal",
                5,
                true,
                &[
                    "sue you",
                    "suing",
                    "sued",
                    "legal action",
                    "take us to court",
                ],
            ),
            cat("media", 5, true, &["news channel", "journalist"]),
            cat("profanity", 3, false, &["ass", "shit", "cunt"]),
            cat(
                "review_threat",
                4,
                true,
                &["one-star", "trustpilot", "one star review"],
            ),
        ])
        .unwrap()
    }

    fn cats(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        kw().scan(text, Place::Body, &mut out);
        out.into_iter()
            .map(|f| format!("{}:{}", f.category, f.term))
            .collect()
    }

    #[test]
    fn whole_words_and_inflections() {
        let cases: &[(&str, &[&str])] = &[
            ("This is a SCAM", &["fraud:scam"]),
            ("they scammed me, scams everywhere", &["fraud:scam"]),
            ("we will be suing", &["legal:suing"]),
            ("I will SUE YOU", &["legal:sue you"]),
            ("issue pursue tissue", &[]),
            ("Sue Parker called", &[]),
            ("newsletter, multimedia", &[]),
            ("class assistant Scunthorpe", &[]),
            ("threatens legal\n  action today", &["legal:legal action"]),
            ("a one star rating, one-star", &["review_threat:one-star"]),
            ("cheated and cheating", &["fraud:cheat"]),
            ("Trustpilot’s page", &["review_threat:trustpilot"]),
            ("will take us to court", &["legal:take us to court"]),
            ("Court Road, Bengaluru", &[]),
            ("called a journalist; fraudulent", &["media:journalist"]),
            ("a one star review here", &["review_threat:one star review"]),
            ("one star and one-star", &["review_threat:one-star"]),
        ];
        for (text, want) in cases {
            assert_eq!(cats(text), *want, "{text:?}");
        }
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize("  Legal\r\n  ACTION—now’s É-x "),
            "legal action now's é x"
        );
        assert_eq!(normalize("प्रिया  शर्मा"), "प्रिया शर्मा");
        assert_eq!(normalize("a b  c\td -e- f"), "a b c d e f");
        assert_eq!(normalize(" x y "), "x y");
        assert_eq!(normalize("  Plain ASCII Line "), "plain ascii line");
        let mut buf = Vec::new();
        for part in ["One", "", "  ", "Two-Three", "Four  Five", "Six"] {
            normalize_into(&mut buf, part);
        }
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "one two three four five six"
        );
        assert_eq!(normalize(""), "");
        let k = kw();
        let mut out = Vec::new();
        k.scan_parts(
            &["they will take legal", "action and SUE", "YOU"],
            Place::Body,
            &mut out,
        );
        let terms: Vec<&str> = out.iter().map(|f| f.term.as_str()).collect();
        assert_eq!(terms, ["legal action", "sue you"]);
    }

    #[test]
    fn inflection_forms() {
        let f = inflections("scam");
        for w in ["scam", "scams", "scammed", "scamming"] {
            assert!(f.contains(&w.to_string()), "{w} in {f:?}");
        }
        let f = inflections("sue");
        for w in ["sues", "sued", "suing"] {
            assert!(f.contains(&w.to_string()), "{w} in {f:?}");
        }
        assert!(inflections("lie").contains(&"lying".to_string()));
        assert!(inflections("legal notice").contains(&"legal notices".to_string()));
        assert!(!inflections("came late").contains(&"came later".to_string()));
    }

    #[test]
    fn risk_and_tier() {
        assert_eq!(risk(None, 1), 1);
        assert_eq!(risk(Some(3), 1), 3);
        assert_eq!(risk(Some(2), 5), 5);
        assert_eq!(tier(false, None), 1);
        assert_eq!(tier(true, None), 2);
        assert_eq!(tier(false, Some(2)), 2);
        assert_eq!(tier(false, Some(1)), 1);
    }

    #[test]
    fn flags_name_place_and_dedupe() {
        let k = kw();
        let mut out = Vec::new();
        k.scan("Scam alert", Place::Subject, &mut out);
        k.scan("scam, scam and SCAM", Place::Body, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].place, Place::Subject);
        assert_eq!(out[1].place, Place::Body);
        assert_eq!(k.floor(&out), 5);
        assert!(!k.any_tier2(&out));
    }
}
