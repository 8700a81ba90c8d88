//! keywords.toml (the flag categories and their terms) and triage.toml (the
//! fields each kind of escalation must carry), read and checked.

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};
use crate::case::Required;
use crate::classify::{Category, Keywords};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeywordsFile {
    #[serde(default)]
    category: Vec<CategoryDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryDef {
    name: Spanned<String>,
    label: Option<String>,
    floor: Spanned<u8>,
    #[serde(default)]
    tier2: bool,
    #[serde(default = "yes")]
    inflect: bool,
    terms: Vec<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriageFile {
    required: Required,
}

/// keywords.toml: each category's name is unique, its floor a risk from 1
/// to 5, and each term has a letter or a digit.
pub(super) fn load_keywords(src: &Source<'_>) -> Result<Keywords, ConfigError> {
    let file: KeywordsFile = src.parse()?;
    let mut cats: Vec<Category> = Vec::new();
    for def in file.category {
        if cats.iter().any(|c| &c.name == def.name.get_ref()) {
            return Err(src.error_at(
                Some(def.name.span()),
                format!("category {:?} is defined twice", def.name.get_ref()),
            ));
        }
        if !(1..=5).contains(def.floor.get_ref()) {
            return Err(src.error_at(
                Some(def.floor.span()),
                format!(
                    "expected a risk floor from 1 to 5, found {}",
                    def.floor.get_ref()
                ),
            ));
        }
        for t in &def.terms {
            if !t.get_ref().chars().any(char::is_alphanumeric) {
                return Err(src.error_at(Some(t.span()), "expected a term with letters or digits"));
            }
        }
        cats.push(Category {
            label: def
                .label
                .filter(|l| !l.trim().is_empty())
                .unwrap_or_else(|| crate::classify::default_label(def.name.get_ref())),
            name: def.name.into_inner(),
            floor: def.floor.into_inner(),
            tier2: def.tier2,
            terms: def.terms.into_iter().map(Spanned::into_inner).collect(),
            inflect: def.inflect,
        });
    }
    Keywords::new(cats).map_err(|e| src.error_at(None, e.to_string()))
}

/// triage.toml: the fields each kind must carry.
pub(super) fn load_required(src: &Source<'_>) -> Result<Required, ConfigError> {
    let file: TriageFile = src.parse()?;
    Ok(file.required)
}
