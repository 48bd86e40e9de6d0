//! Profanity and slurs from the `rustrict` lexicon, which also sees through evasions
//! (spacing, repeated letters, homoglyphs, leetspeak) on its own.

use rustrict::{Censor, Type};

use super::checks::Hit;
use crate::decision::{Evidence, Span};
use crate::normalize::Normalized;

/// A profanity rule's threshold, as a `rustrict` type mask.
#[derive(Debug)]
pub struct ProfanityCheck {
    mask: Type,
    description: String,
}

impl ProfanityCheck {
    /// Builds the mask from a minimum severity and categories (all when empty); an error names
    /// the parameter.
    pub fn new(min_severity: &str, categories: &[String]) -> Result<Self, (String, String)> {
        let severity = match min_severity {
            "mild" => Type::MILD_OR_HIGHER,
            "moderate" => Type::MODERATE_OR_HIGHER,
            "severe" => Type::SEVERE,
            other => {
                return Err((
                    "min_severity".to_owned(),
                    format!("`{other}` is not one of mild, moderate, severe"),
                ));
            }
        };
        let mut kinds = Type::NONE;
        for (i, category) in categories.iter().enumerate() {
            kinds |= match category.as_str() {
                "profane" => Type::PROFANE,
                "offensive" => Type::OFFENSIVE,
                "sexual" => Type::SEXUAL,
                "mean" => Type::MEAN,
                other => {
                    return Err((
                        format!("categories[{i}]"),
                        format!("`{other}` is not one of profane, offensive, sexual, mean"),
                    ));
                }
            };
        }
        if categories.is_empty() {
            kinds = Type::PROFANE | Type::OFFENSIVE | Type::SEXUAL | Type::MEAN;
        }
        let names = if categories.is_empty() {
            "profane, offensive, sexual or mean".to_owned()
        } else {
            categories.join(" or ")
        };
        Ok(Self {
            mask: kinds & severity,
            description: format!("{min_severity} or worse {names} language"),
        })
    }

    /// Analyses the original text (rustrict normalises on its own and keeps positions).
    pub fn check(&self, normalized: &Normalized<'_>) -> Option<Hit> {
        let original = normalized.original;
        let mut censor = Censor::from_str(original);
        censor
            .with_censor_threshold(self.mask)
            .with_censor_first_character_threshold(self.mask)
            .with_ignore_self_censoring(true);
        let (censored, analysis) = censor.censor_and_analyze();
        if !analysis.is(self.mask) {
            return None;
        }
        let span = censored_span(original, &censored);
        Some(Hit {
            score: 1.0,
            threshold: 1.0,
            evidence: Evidence {
                span,
                matched_text: span
                    .map(|s| normalized.original_text(s))
                    .unwrap_or_default(),
                pattern: "profanity lexicon".to_owned(),
                detail: self.description.clone(),
                ..Evidence::default()
            },
        })
    }
}

/// The first run of characters the censor replaced, when its output lines up with the input
/// character for character (it does unless it dropped characters, when no span is given).
fn censored_span(original: &str, censored: &str) -> Option<Span> {
    if original.chars().count() != censored.chars().count() {
        return None;
    }
    let mut start = None;
    let mut end = 0u32;
    for (i, (o, c)) in original.chars().zip(censored.chars()).enumerate() {
        let i = u32::try_from(i).ok()?;
        let replaced = c == '*' && o != '*';
        match (replaced, start) {
            (true, None) => {
                start = Some(i);
                end = i + 1;
            }
            (true, Some(_)) => end = i + 1,
            // Allow single separators inside one evasive word ("f u c k").
            (false, Some(_)) if i == end && !o.is_alphanumeric() => {}
            (false, Some(_)) if i > end => break,
            _ => {}
        }
    }
    start.map(|start| Span { start, end })
}
