//! Profanity and slurs from the `rustrict` lexicon, which also sees through evasions
//! (spacing, repeated letters, homoglyphs, leetspeak) on its own.
//!
//! `rustrict` is thorough but costs several microseconds per message, more than every other
//! rule together. So a [`Lexicon`] runs it once per message for all profanity rules (with the
//! union of their thresholds), skips messages without words, and remembers the analysis of
//! recent normalised texts (chat repeats itself: emote lines, copypastas, "W", "LUL"). A rule
//! that fires runs the censor once more, with its own threshold, to find the span.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use rustrict::{Censor, Type};

use super::checks::Hit;
use crate::domain::{Evidence, Span};
use crate::engine::normalize::Normalized;

/// Analyses remembered, by normalised text.
const CACHE_ENTRIES: usize = 16_384;

/// The shared `rustrict` pass of a rule set.
#[derive(Debug)]
pub struct Lexicon {
    /// Union of every profanity rule's mask: the analysis must see all of them.
    mask: Type,
    /// A std mutex: it is held for a hash-map lookup or insert, never across an await.
    cache: Mutex<LruCache<String, Type>>,
}

impl Lexicon {
    /// A lexicon serving rules with these masks.
    pub fn new(masks: impl IntoIterator<Item = Type>) -> Self {
        Self {
            mask: masks.into_iter().fold(Type::NONE, |all, m| all | m),
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_ENTRIES).expect("a positive cache size"),
            )),
        }
    }

    /// The analysis of a message (restricted to this lexicon's mask).
    pub fn analyze(&self, normalized: &Normalized<'_>) -> Type {
        // Only the words go to the lexicon: emotes, links and mentions are not language, and
        // leaving them out shortens the costly pass. The words keep their original spelling,
        // so rustrict's own evasion handling still sees what the user typed.
        let original = normalized.original;
        let starts: Vec<usize> = original
            .char_indices()
            .map(|(byte, _)| byte)
            .chain(std::iter::once(original.len()))
            .collect();
        let mut words = String::with_capacity(original.len());
        for word in normalized.words() {
            let (start, end) = (word.original.start as usize, word.original.end as usize);
            if let (Some(&from), Some(&to)) = (starts.get(start), starts.get(end)) {
                if !words.is_empty() {
                    words.push(' ');
                }
                words.push_str(&original[from..to]);
            }
        }
        if words.is_empty() {
            return Type::NONE;
        }
        let key = normalized.text.as_str();
        if let Some(known) = self.lock().get(key) {
            metrics::counter!("modbot_profanity_cache_total", "result" => "hit").increment(1);
            return *known;
        }
        metrics::counter!("modbot_profanity_cache_total", "result" => "miss").increment(1);
        let analysis = Censor::from_str(&words).analyze() & self.mask;
        self.lock().put(key.to_owned(), analysis);
        analysis
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Type>> {
        // A panic while holding the lock cannot leave the cache inconsistent: use it anyway.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

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

    /// The mask this rule fires on.
    pub fn mask(&self) -> Type {
        self.mask
    }

    /// Whether the message's analysis meets this rule; if so, the span of the first word the
    /// censor replaces at this rule's threshold.
    pub fn check(&self, normalized: &Normalized<'_>, analysis: Type) -> Option<Hit> {
        if !analysis.is(self.mask) {
            return None;
        }
        let original = normalized.original;
        let mut censor = Censor::from_str(original);
        censor
            .with_censor_threshold(self.mask)
            .with_censor_first_character_threshold(self.mask)
            .with_ignore_self_censoring(true);
        let span = censored_span(original, &censor.censor());
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
