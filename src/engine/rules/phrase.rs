//! Banned phrases: literal, wildcard and regex, matched on the normalised text.

use regex_automata::meta::{BuildError, Config, Regex};
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind};
use serde::{Deserialize, Serialize};

use super::checks::Hit;
use crate::domain::Evidence;
use crate::engine::normalize::{EmoteSet, Normalized, normalize};

/// Largest compiled program one rule's phrases may make. The regex crate matches in linear
/// time, so this bound (with the DFA cache bound) is what keeps a pathological pattern from
/// costing memory or time.
const REGEX_SIZE_LIMIT: usize = 2 << 20;
const DFA_SIZE_LIMIT: usize = 4 << 20;

/// How phrases are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhraseSyntax {
    /// Plain text.
    #[default]
    Literal,
    /// `*` matches any run of word characters, `?` one.
    Wildcard,
    /// A regular expression, matched as written (case-insensitively).
    Regex,
}

/// One rule's phrases, compiled into a single multi-pattern regex.
#[derive(Debug)]
pub struct PhraseCheck {
    /// Pattern `i` is phrase `i`.
    ///
    /// Why a multi-pattern regex and not one alternation `(p0)|(p1)|...` read back by its
    /// capture groups: an admin's regex brings its own groups, which shift the numbering (a
    /// phrase `(free|cheap) nitro` before `spamword` made group 3, not 2, stand for
    /// `spamword`, and the lookup panicked), and the same group name in two phrases does not
    /// compile as one pattern at all. Compiled as separate patterns of one regex, every phrase
    /// keeps its own group namespace, the search stays a single linear-time pass with the
    /// alternation's leftmost-first semantics (the earliest match, the first phrase among
    /// those matching there), and the engine itself says which pattern matched: no group is
    /// ever counted, so no phrase the API accepts can make the lookup wrong.
    combined: Regex,
    /// The phrases as written, for evidence.
    phrases: Vec<String>,
}

/// Folds a piece of a phrase the way messages are folded, so both compare alike.
fn fold(piece: &str) -> String {
    normalize(piece, &EmoteSet::default()).text
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

impl PhraseCheck {
    /// Compiles phrases; an error names the parameter (`phrases[2]`) and the reason.
    pub fn new(
        phrases: &[String],
        syntax: PhraseSyntax,
        anywhere: bool,
    ) -> Result<Self, (String, String)> {
        if phrases.is_empty() {
            return Err((
                "phrases".to_owned(),
                "must list at least one phrase".to_owned(),
            ));
        }
        let mut alternatives = Vec::with_capacity(phrases.len());
        for (i, phrase) in phrases.iter().enumerate() {
            let key = format!("phrases[{i}]");
            let pattern = match syntax {
                PhraseSyntax::Regex => {
                    // A pattern that can match no text at all (`a*`, `^`, `\b`, `x|`) matches
                    // at some position of nearly every message: one admin's typo would act
                    // on the whole chat. What the parser cannot read is left to `build` below,
                    // which says why.
                    if let Ok(hir) = syntax::parse(phrase)
                        && hir.properties().minimum_len() == Some(0)
                    {
                        return Err((
                            key,
                            "can match without any text (e.g. `a*`, `^`, `\\b`, `x|`), so it \
                             would hit nearly every message"
                                .to_owned(),
                        ));
                    }
                    phrase.clone()
                }
                PhraseSyntax::Literal | PhraseSyntax::Wildcard => {
                    let (pattern, first, last) =
                        literal_pattern(phrase, syntax == PhraseSyntax::Wildcard);
                    if pattern.is_empty() {
                        return Err((key, "is empty after normalisation".to_owned()));
                    }
                    if anywhere {
                        pattern
                    } else {
                        // Word boundaries only where the phrase itself begins or ends with a
                        // word character: `\b` before punctuation would never match.
                        let start = if is_word(first) { r"\b" } else { "" };
                        let end = if is_word(last) { r"\b" } else { "" };
                        format!("{start}(?:{pattern}){end}")
                    }
                }
            };
            build(&[&pattern]).map_err(|e| (key, e))?;
            alternatives.push(pattern);
        }
        let combined = build(&alternatives).map_err(|e| ("phrases".to_owned(), e))?;
        Ok(Self {
            combined,
            phrases: phrases.to_vec(),
        })
    }

    /// The first phrase found, with the span of what the user typed.
    pub fn check(&self, normalized: &Normalized<'_>) -> Option<Hit> {
        let text = normalized.text.as_str();
        let found = self.combined.find(Input::new(text))?;
        let span = normalized.span(found.range());
        // The patterns are the phrases, one for one, so the index is always in range.
        let phrase = self.phrases.get(found.pattern().as_usize())?;
        crate::fault::phrase_matched(phrase);
        Some(Hit {
            score: 0.0,
            threshold: 0.0,
            evidence: Evidence {
                span: Some(span),
                matched_text: normalized.original_text(span),
                pattern: phrase.clone(),
                detail: format!("banned phrase \"{phrase}\""),
                ..Evidence::default()
            },
        })
    }
}

/// The regex for a literal or wildcard phrase, with its first and last folded characters.
fn literal_pattern(phrase: &str, wildcard: bool) -> (String, Option<char>, Option<char>) {
    if !wildcard {
        let folded = fold(phrase);
        return (
            regex::escape(&folded),
            folded.chars().next(),
            folded.chars().next_back(),
        );
    }
    let mut pattern = String::new();
    let mut folded_all = String::new();
    let mut piece = String::new();
    let flush = |piece: &mut String, pattern: &mut String, folded_all: &mut String| {
        if !piece.is_empty() {
            // Keep spaces next to wildcards: fold trims them.
            let lead = piece.starts_with(char::is_whitespace) && !pattern.is_empty();
            let trail = piece.ends_with(char::is_whitespace);
            let folded = fold(piece);
            if lead {
                pattern.push(' ');
            }
            pattern.push_str(&regex::escape(&folded));
            folded_all.push_str(&folded);
            if trail && !folded.is_empty() {
                pattern.push(' ');
            }
            piece.clear();
        }
    };
    for c in phrase.chars() {
        match c {
            '*' | '?' => {
                flush(&mut piece, &mut pattern, &mut folded_all);
                pattern.push_str(if c == '*' { r"\w*" } else { r"\w" });
                folded_all.push('a');
            }
            _ => piece.push(c),
        }
    }
    flush(&mut piece, &mut pattern, &mut folded_all);
    let pattern = pattern.trim().to_owned();
    (
        pattern,
        folded_all.chars().next(),
        folded_all.chars().next_back(),
    )
}

/// Compiles patterns as one regex, case-insensitively and within the size limits; an error
/// says why in one line.
fn build<P: AsRef<str>>(patterns: &[P]) -> Result<Regex, String> {
    Regex::builder()
        .syntax(syntax::Config::new().case_insensitive(true).utf8(true))
        .configure(
            Config::new()
                .match_kind(MatchKind::LeftmostFirst)
                .utf8_empty(true)
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
                .hybrid_cache_capacity(DFA_SIZE_LIMIT),
        )
        .build_many(patterns)
        .map_err(|e| build_error(&e))
}

/// One line for a compile error: the parser's own reason (look-around, say, which the
/// linear-time engine does not support) without its drawing of the pattern.
fn build_error(error: &BuildError) -> String {
    const PREFIX: &str = "invalid or too large pattern";
    if let Some(limit) = error.size_limit() {
        return format!("{PREFIX}: compiles to more than the limit of {limit} bytes");
    }
    let Some(syntax) = error.syntax_error() else {
        return format!("{PREFIX}: {error}");
    };
    let full = syntax.to_string();
    let reason = full
        .lines()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or(&full);
    format!("{PREFIX}: {reason}")
}
