//! Banned phrases matched on whole words, case-insensitively, with evidence that points
//! at what the user actually typed.

use std::time::Duration;

use super::{Decision, Evidence, Reason, ReasonSource, Span};
use crate::config::PhraseRuleConfig;

/// A message's text lower-cased with whitespace runs collapsed, plus a map from every byte
/// of the folded text back to the code point of the original it came from.
#[derive(Debug)]
pub struct Folded<'a> {
    original: &'a str,
    text: String,
    /// `origin[i]` is the original code point index of the folded byte `i`; one extra entry
    /// at the end holds the original length, so an exclusive end maps too.
    origin: Vec<u32>,
}

impl<'a> Folded<'a> {
    /// Folds `original`.
    pub fn new(original: &'a str) -> Self {
        let mut text = String::with_capacity(original.len());
        let mut origin = Vec::with_capacity(original.len() + 1);
        let mut in_space = true; // drops leading whitespace
        let mut count = 0u32;
        for (index, c) in original.chars().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            count = index.saturating_add(1);
            if c.is_whitespace() {
                if !in_space {
                    text.push(' ');
                    origin.push(index);
                }
                in_space = true;
                continue;
            }
            in_space = false;
            for lower in c.to_lowercase() {
                let before = text.len();
                text.push(lower);
                origin.extend(std::iter::repeat_n(index, text.len() - before));
            }
        }
        if text.ends_with(' ') {
            text.pop();
            origin.pop();
        }
        origin.push(count);
        Self {
            original,
            text,
            origin,
        }
    }

    /// The folded text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The original span of the folded byte range `start..end`.
    fn span(&self, start: usize, end: usize) -> Span {
        // The end maps through the last byte of the range, so trailing folded characters that
        // came from one original character do not stretch the span past it.
        let last = self.origin[end - 1];
        Span {
            start: self.origin[start],
            end: last + 1,
        }
    }

    /// The original text of a span.
    fn original_text(&self, span: Span) -> String {
        self.original
            .chars()
            .skip(span.start as usize)
            .take((span.end - span.start) as usize)
            .collect()
    }
}

/// A banned-phrase rule, ready to match.
#[derive(Debug)]
pub struct PhraseRule {
    id: String,
    /// Phrases folded the same way as messages, so they compare byte for byte.
    phrases: Vec<String>,
    decision: Decision,
    duration: Option<Duration>,
    shadow: bool,
}

impl PhraseRule {
    /// Prepares a configured rule.
    pub fn from_config(config: &PhraseRuleConfig) -> Self {
        let duration = match config.action {
            Decision::Timeout | Decision::Ban if config.duration_secs > 0 => {
                Some(Duration::from_secs(config.duration_secs))
            }
            _ => None,
        };
        Self {
            id: config.id.clone(),
            phrases: config.phrases.iter().map(|p| Folded::new(p).text).collect(),
            decision: config.action,
            duration,
            shadow: config.shadow,
        }
    }

    /// The reason this rule fires for a message, with the first match as evidence.
    pub fn check(&self, folded: &Folded<'_>) -> Option<Reason> {
        let text = folded.text();
        let (phrase, start) = self.phrases.iter().find_map(|phrase| {
            text.match_indices(phrase.as_str())
                .map(|(start, _)| start)
                .find(|&start| is_whole_word(text, start, start + phrase.len()))
                .map(|start| (phrase, start))
        })?;
        let span = folded.span(start, start + phrase.len());
        Some(Reason {
            source: ReasonSource::Rule,
            rule_id: self.id.clone(),
            label: "phrase".to_owned(),
            decision: self.decision,
            duration: self.duration,
            score: 0.0,
            threshold: 0.0,
            shadow: self.shadow,
            evidence: Evidence {
                span: Some(span),
                matched_text: folded.original_text(span),
                pattern: phrase.clone(),
                ..Evidence::default()
            },
            description: format!("banned phrase \"{phrase}\" (rule {})", self.id),
        })
    }
}

/// Whether `text[start..end]` neither starts nor ends inside a word.
fn is_whole_word(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One table row: the text, and the expected (start, end, matched original text) or `None`.
    fn check(text: &str, phrase: &str, expected: Option<(u32, u32, &str)>) {
        let rule = PhraseRule::from_config(&PhraseRuleConfig {
            id: "r".into(),
            phrases: vec![phrase.into()],
            action: Decision::Hide,
            duration_secs: 0,
            shadow: false,
        });
        let got = rule.check(&Folded::new(text)).map(|reason| {
            let span = reason.evidence.span.expect("phrase reasons carry a span");
            (span.start, span.end, reason.evidence.matched_text)
        });
        let expected = expected.map(|(s, e, t)| (s, e, t.to_owned()));
        assert_eq!(got, expected, "text {text:?}, phrase {phrase:?}");
    }

    #[test]
    fn phrase_matching() {
        check(
            "get free nitro now",
            "free nitro",
            Some((4, 14, "free nitro")),
        );
        check(
            "FREE   Nitro!!",
            "free nitro",
            Some((0, 12, "FREE   Nitro")),
        );
        check("  free\tnitro", "Free Nitro", Some((2, 12, "free\tnitro")));
        check("freenitro", "free nitro", None);
        check("carefree nitro", "free nitro", None);
        check("free nitros", "free nitro", None);
        check(
            "skip freenitro then free nitro",
            "free nitro",
            Some((20, 30, "free nitro")),
        );
        // Offsets count code points of the original, not bytes.
        check("😀😀 free nitro", "free nitro", Some((3, 13, "free nitro")));
        // Lower-casing that changes length still maps back to the original character.
        check("İ free nitro", "free nitro", Some((2, 12, "free nitro")));
        check("Straße", "straße", Some((0, 6, "Straße")));
        check("", "free nitro", None);
    }
}
