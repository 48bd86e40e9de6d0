//! Fuzz targets for the parsers of untrusted input and the per-message pipeline, as plain
//! functions of bytes.
//!
//! Each function takes whatever bytes a fuzzer (or a test) hands it, feeds them to one parser
//! and asserts what that parser's documentation promises, panicking on a violation. They live
//! in the library, not only in `fuzz/`, so that the ordinary test suite compiles them and runs
//! the committed seeds, every fixed crash and a deterministic sweep through them
//! (`fuzzing::tests`); `fuzz/fuzz_targets/*.rs` only call them under libFuzzer.
//!
//! - [`normalize`]: chat text (any bytes, lossily UTF-8) through [`crate::engine::normalize::normalize`].
//! - [`rules`]: rules files and stored rule/policy rows, as raw text or as TOML built from the
//!   bytes, through [`crate::engine::rules::Document`], [`RuleSet::compile`] and the specs' `validate`;
//!   a rule set that compiles then decides a few messages.
//! - [`chat_frame`]: a chat WebSocket frame through [`crate::bridge::protocol::parse_bytes`].
//! - [`rule_match`]: a phrase rule (literal, wildcard or regex phrases, capture groups and all)
//!   × messages through the phrase compiler and matcher, every hit checked against each phrase
//!   alone.
//! - [`stream_events`]: a sequence of a stream's events (messages from a few users in a few
//!   channels, moderator actions, presence) through [`crate::service::moderate::Moderator`] with the
//!   built-in rules and in-memory user state.
//!
//! No target does I/O, keeps state between calls or depends on anything but its input (the
//! stream target shares the compiled built-in rules, which are immutable).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bridge::protocol::{
    self, Command, Frame, FrameError, MAX_FRAME_BYTES, MAX_SERVER_FRAME_BYTES, Moderation,
};
use crate::domain::{ChatMessage, Decision, Reason, ReasonSource};
use crate::engine::decision::{DecideOptions, Engine};
use crate::engine::normalize::{EmoteSet, Normalized, TokenKind, normalize as fold};
use crate::engine::rules::spec::{PolicySpec, RuleSpec};
use crate::engine::rules::{Context, DEFAULT_POLICY, Document, KINDS, RuleSet, RulesError};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::domain::{ChannelMessage, ChannelWindow, RecentMessage, UserHistory};

/// Emotes of the channel that [`normalize`] uses for inputs whose first byte is odd.
const EMOTES: &[&str] = &[
    "PepeLaugh",
    "OMEGALUL",
    "Kappa",
    "LUL",
    "PogU",
    "monkaS",
    "YEE",
];

// ---------------------------------------------------------------------------------------------
// normalize

/// The normaliser on any text: the first byte picks the emote set (odd: a channel's, even:
/// none), the rest is the message (invalid UTF-8 replaced).
///
/// Asserts: no panic; deterministic; the folded text has no leading, trailing or double
/// spaces and no invisible (control or format) characters; the byte-to-original map never
/// decreases and stays inside the original's code points ([`Normalized::span`] of every byte,
/// and of every range, lies inside it); tokens are in order, non-empty, on char boundaries,
/// and their original spans are non-empty and inside the original (so
/// [`Normalized::original_text`] of a token is never empty); emote tokens are names of the set,
/// mention tokens `@` and a lower-case nick; no word token keeps a run of three of one
/// non-digit character; every [`crate::engine::normalize::TextStats`] count is consistent with the
/// tokens and at most the original's code points.
///
/// Normalising the folded text again is *not* checked to be stable: the module makes no such
/// promise (a spaced `a f u c k` joins to `afuck` once, confusable folding depends on the
/// other words of the message).
pub fn normalize(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        check_normalized(&fold("", &EmoteSet::default()), &EmoteSet::default());
        return;
    };
    let emotes = if selector & 1 == 1 {
        EmoteSet::new(EMOTES.iter().copied())
    } else {
        EmoteSet::default()
    };
    let text = String::from_utf8_lossy(rest);
    let n = fold(&text, &emotes);
    check_normalized(&n, &emotes);
    assert_eq!(fold(&text, &emotes), n, "normalize is deterministic");
    check_link_signals(&n);
}

/// The spam head's link inputs of a folded text: every link token is counted (a link starts
/// its chunk in the folded text as in the original), at most one link per chunk, and a flag
/// only with a link.
fn check_link_signals(n: &Normalized<'_>) {
    let signals = crate::engine::rules::lookalike::link_signals(&n.text);
    let tokens = n
        .tokens
        .iter()
        .filter(|t| t.kind == TokenKind::Link)
        .count();
    let chunks = n.text.split(' ').count();
    assert!(
        (tokens..=chunks).contains(&(signals.links as usize)),
        "{} links read in {:?}: {tokens} link tokens, {chunks} chunks",
        signals.links,
        n.text
    );
    if signals.lookalike || signals.risky_tld || signals.shortener {
        assert!(signals.links > 0, "a link flag without a link: {signals:?}");
    }
}

/// The invariants of one normalised text (see [`normalize`]).
fn check_normalized(n: &Normalized<'_>, emotes: &EmoteSet) {
    let chars = n.original.chars().count();
    let chars32 = u32::try_from(chars).unwrap_or(u32::MAX);
    let stats = n.stats;
    assert_eq!(stats.chars, chars32, "stats.chars counts code points");

    // The folded text itself.
    let text = n.text.as_str();
    assert!(
        !text.starts_with(' ') && !text.ends_with(' ') && !text.contains("  "),
        "spaces are collapsed and trimmed: {text:?}"
    );
    assert!(
        !text.chars().any(|c| c != ' ' && c.is_whitespace()),
        "whitespace becomes one space: {text:?}"
    );
    assert!(
        !text.chars().any(|c| matches!(
            c.general_category(),
            GeneralCategory::Control | GeneralCategory::Format
        )),
        "invisible characters are removed: {text:?}"
    );

    // The map back: the span of every byte, in order, inside the original.
    let mut previous = 0;
    for i in 0..text.len() {
        let span = n.span(i..i + 1);
        assert_eq!(span.end, span.start + 1, "one byte maps to one code point");
        assert!(span.start < chars32, "byte {i} maps outside the original");
        assert!(span.start >= previous, "the map decreases at byte {i}");
        previous = span.start;
    }
    let end = n.span(text.len()..text.len());
    assert_eq!(
        (end.start, end.end),
        (chars32, chars32),
        "the end maps to the end"
    );
    // Any range, reversed or out of bounds, is clamped.
    let len = text.len();
    for (a, b) in [
        (0, len),
        (len / 3, len / 2),
        (len, 0),
        (len + 5, len + 9),
        (1, 1),
    ] {
        let span = n.span(a..b);
        assert!(
            span.start <= span.end && span.end <= chars32,
            "span({a}..{b}) = {span:?}"
        );
        let shown = n.original_text(span);
        assert_eq!(shown.chars().count(), (span.end - span.start) as usize);
    }

    // Tokens.
    let mut previous_end = 0;
    let mut counts = [0u32; 4];
    for token in &n.tokens {
        let folded = token.folded.clone();
        assert!(
            folded.start >= previous_end && folded.end > folded.start && folded.end <= len,
            "token {token:?} out of order or empty"
        );
        assert!(text.is_char_boundary(folded.start) && text.is_char_boundary(folded.end));
        previous_end = folded.end;
        let original = token.original;
        assert!(
            original.start < original.end && original.end <= chars32,
            "token {token:?} maps outside the original"
        );
        let span = n.span(folded.clone());
        assert!(
            span.start >= original.start && span.end <= original.end,
            "token {token:?}: its bytes map to {span:?}, outside its original span"
        );
        assert!(!n.original_text(original).is_empty());
        let token_text = n.token_text(token);
        assert_eq!(token_text, &text[folded]);
        match token.kind {
            TokenKind::Emote => {
                counts[0] += 1;
                assert!(
                    emotes.contains(token_text),
                    "emote {token_text:?} not in the set"
                );
            }
            TokenKind::Link => counts[1] += 1,
            TokenKind::Mention => {
                counts[2] += 1;
                let nick = token_text.strip_prefix('@').unwrap_or_else(|| {
                    panic!("a mention starts with @: {token_text:?}");
                });
                assert!(
                    (3..=20).contains(&nick.len())
                        && nick
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "a mention is @ and a lower-case nick: {token_text:?}"
                );
            }
            TokenKind::Word | TokenKind::Number => {
                counts[3] += 1;
                if token.kind == TokenKind::Word {
                    let word: Vec<char> = token_text.chars().collect();
                    assert!(
                        !word
                            .windows(3)
                            .any(|w| w[0] == w[1] && w[1] == w[2] && !w[0].is_ascii_digit()),
                        "a run of three survives in word {token_text:?}"
                    );
                }
            }
        }
    }
    assert_eq!(
        [stats.emotes, stats.links, stats.mentions, stats.words],
        counts,
        "token counts in the statistics"
    );
    for (name, count) in [
        ("letters", stats.letters),
        ("non_ascii", stats.non_ascii),
        ("punctuation", stats.punctuation),
        ("symbols", stats.symbols),
        ("combining_marks", stats.combining_marks),
        ("invisible", stats.invisible),
    ] {
        assert!(count <= chars32, "stats.{name} = {count} > {chars} chars");
    }
    assert!(stats.uppercase <= stats.letters, "{stats:?}");
    assert!(stats.emoji <= stats.non_ascii, "{stats:?}");
    assert!(
        stats.max_combining_run <= stats.combining_marks,
        "{stats:?}"
    );
    let ascii = n.original.chars().filter(char::is_ascii).count();
    assert_eq!(
        stats.non_ascii as usize,
        chars - ascii,
        "non_ascii counts every one"
    );
}

// ---------------------------------------------------------------------------------------------
// rules

/// A reader of fuzz bytes that yields zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn chance(&mut self, in_256: u8) -> bool {
        self.byte() < in_256
    }

    /// Up to `max` bytes as text (invalid UTF-8 replaced).
    fn text(&mut self, max: usize) -> String {
        let n = self.below(max + 1).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(head).into_owned()
    }
}

/// A TOML basic string of `s`.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const INTS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "8",
    "60",
    "600",
    "86400",
    "86401",
    "604800",
    "4294967295",
    "4294967296",
    "-1",
    "9223372036854775807",
    "18446744073709",
    "1e3",
];
const FLOATS: &[&str] = &[
    "0.0", "0.45", "0.9", "1.0", "1.5", "-0.0", "-0.5", "nan", "inf", "-inf", "1e-300", "3.0",
    "86400.0", "86400.5", "1", "\"0.5\"",
];
const DECISIONS: &[&str] = &[
    "hold", "hide", "warn", "timeout", "ban", "allow", "mute", "Hide",
];
const MODES: &[&str] = &["enforce", "shadow", "disabled", "off"];
const WORDS: &[&str] = &[
    "free nitro",
    "kys",
    "f*ck",
    "sc?m",
    "b.i.t.c.h",
    "(a|b)+c",
    "[0-9]{3}",
    "a{1000}{1000}",
    "(?i)x{0,4096}",
    "\\bword\\b",
    "((((((",
    "\\p{L}+",
    ".*",
    "*",
    "?",
    "",
    " ",
    "PepeLaugh",
    "bit.ly",
    "discord.gg",
    "https://x.com",
    "\u{0301}",
    "ｆｕｃｋ",
    "h3ll0",
    "moderator",
    "destinygg",
    "mild",
    "moderate",
    "severe",
    "profane",
    "offensive",
    "sexual",
    "mean",
    "literal",
    "wildcard",
    "regex",
];

/// The value of one parameter: typed for the key most of the time, anything otherwise.
fn param_value(b: &mut Bytes<'_>, key: &str) -> String {
    let strings = |b: &mut Bytes<'_>| {
        let n = b.below(5);
        let items: Vec<String> = (0..n)
            .map(|_| {
                if b.chance(200) {
                    quoted(b.pick(WORDS))
                } else {
                    quoted(&b.text(24))
                }
            })
            .collect();
        format!("[{}]", items.join(", "))
    };
    match b.below(10) {
        0 => return b.pick(INTS).to_owned(),
        1 => return b.pick(FLOATS).to_owned(),
        2 => return quoted(&b.text(16)),
        _ => {}
    }
    match key {
        "phrases" | "categories" | "allow_domains" | "deny_domains" | "lookalike_brands"
        | "deny_tlds" => strings(b),
        "syntax" => quoted(b.pick(&["literal", "wildcard", "regex", "glob"])),
        "min_severity" => quoted(b.pick(&["mild", "moderate", "severe", "none"])),
        "anywhere" | "allow_list_only" => b.pick(&["true", "false"]).to_owned(),
        "max_ratio" | "min_similarity" | "window_secs" => b.pick(FLOATS).to_owned(),
        _ => b.pick(INTS).to_owned(),
    }
}

/// Every parameter key of every kind, by kind, in [`KINDS`]' order.
const PARAMS: &[&[&str]] = &[
    &["phrases", "syntax", "anywhere"],
    &["min_severity", "categories"],
    &[
        "allow_domains",
        "deny_domains",
        "allow_list_only",
        "min_user_age_secs",
        "max_repeats",
        "repeat_window_secs",
        "lookalike_brands",
        "deny_tlds",
    ],
    &["max_ratio", "min_letters"],
    &["max_emotes", "max_ratio", "min_tokens"],
    &["max_non_ascii", "max_punctuation", "max_combining_marks"],
    &[
        "min_similarity",
        "last_messages",
        "window_secs",
        "min_length",
    ],
    &["min_length", "min_similarity", "last_messages"],
    &["max_messages", "window_secs"],
    &["max_ratio", "min_words"],
    &["max_length"],
    &["max_mentions"],
];

/// The body of one `[[rule]]` table (without its header) and its id.
fn rule_body(b: &mut Bytes<'_>, index: usize) -> (String, String) {
    let id = match b.below(16) {
        0 => String::new(),
        1 => " ".to_owned(),
        2 => "r0".to_owned(),
        3 => b.text(8),
        _ => format!("r{index}"),
    };
    let kind_index = b.below(KINDS.len() + 1);
    let kind = KINDS.get(kind_index).copied().unwrap_or("nonsense");
    let mut body = format!("id = {}\nkind = {}\n", quoted(&id), quoted(kind));
    if b.chance(240) {
        body += &format!("action = {}\n", quoted(b.pick(DECISIONS)));
    }
    if b.chance(100) {
        body += &format!("duration_secs = {}\n", b.pick(INTS));
    }
    if b.chance(60) {
        body += &format!("mode = {}\n", quoted(b.pick(MODES)));
    }
    if b.chance(40) {
        body += &format!("exempt_roles = [{}]\n", quoted(b.pick(WORDS)));
    }
    if b.chance(40) {
        body += &format!(
            "channels = [{}]\n",
            quoted(b.pick(&["destinygg", "strims", ""]))
        );
    }
    if b.chance(20) {
        body += &format!("{} = 1\n", b.pick(&["description", "params", "bogus"]));
    }
    body += "[params]\n";
    let keys = PARAMS.get(kind_index).copied().unwrap_or(PARAMS[0]);
    let mut seen = Vec::new();
    for _ in 0..b.below(5) {
        let key = if b.chance(230) {
            b.pick(keys)
        } else {
            let all = b.pick(PARAMS);
            b.pick(all)
        };
        if seen.contains(&key) {
            continue; // a duplicate key is only a TOML error
        }
        seen.push(key);
        body += &format!("{key} = {}\n", param_value(b, key));
    }
    (id, body)
}

/// The body of one policy table (without its header).
fn policy_body(b: &mut Bytes<'_>) -> String {
    let mut body = String::new();
    if b.chance(250) {
        body += &format!("shadow = {}\n", b.pick(&["false", "true", "0"]));
    }
    if b.chance(250) {
        body += &format!(
            "exempt_roles = [{}]\n",
            quoted(b.pick(&["moderator", "Admin", ""]))
        );
    }
    if b.chance(250) {
        let emotes = ["\"Kappa\"", "\"PepeLaugh\"", "\"two words\"", "\"\"", "1"];
        body += &format!("emotes = [{}, \"LUL\"]\n", b.pick(&emotes));
    }
    if b.chance(30) {
        body += "bogus = true\n";
    }
    if b.chance(245) {
        body += "[escalation]\n";
        for key in [
            "warn_first",
            "first_timeout_secs",
            "max_timeout_secs",
            "ban_after",
            "heat_half_life_secs",
            "memory_half_life_secs",
        ] {
            if b.chance(248) {
                let value = if key == "warn_first" {
                    b.pick(&["true", "false"])
                } else if b.chance(200) {
                    b.pick(&["60", "86400", "600", "1"])
                } else {
                    b.pick(INTS)
                };
                body += &format!("{key} = {value}\n");
            }
        }
    }
    if b.chance(128) {
        body += "[reputation]\n";
        for key in ["trusted_above", "new_below", "trusted_margin", "new_margin"] {
            if b.chance(200) {
                body += &format!("{key} = {}\n", b.pick(FLOATS));
            }
        }
    }
    if b.chance(128) {
        body += "[raid]\n";
        for key in ["enabled", "hold_links", "subonly"] {
            if b.chance(200) {
                body += &format!("{key} = {}\n", b.pick(&["true", "false"]));
            }
        }
        for key in [
            "window_secs",
            "join_surge",
            "surge_users",
            "duration_secs",
            "min_length",
        ] {
            if b.chance(200) {
                body += &format!("{key} = {}\n", b.pick(INTS));
            }
        }
        for key in ["similarity", "threshold_drop"] {
            if b.chance(200) {
                body += &format!("{key} = {}\n", b.pick(FLOATS));
            }
        }
        if b.chance(128) {
            body += &format!("action = {}\n", quoted(b.pick(DECISIONS)));
        }
    }
    for _ in 0..b.below(3) {
        let label = b.pick(&["toxicity/insult", "spam/spam", "toxicity", "/x", "a/"]);
        body += &format!("[model.labels.{}]\n", quoted(label));
        if b.chance(240) {
            body += &format!("action = {}\n", quoted(b.pick(DECISIONS)));
        }
        if b.chance(128) {
            body += &format!("threshold = {}\n", b.pick(FLOATS));
        }
        if b.chance(128) {
            body += &format!("duration_secs = {}\n", b.pick(INTS));
        }
        if b.chance(60) {
            body += &format!("mode = {}\n", quoted(b.pick(MODES)));
        }
    }
    body
}

/// Puts `[prefix]` in front of every table header of a body, so a stored row's body can be
/// written into a rules file under `[policy]`, `[channel.x]` or `[[rule]]`.
fn nest(body: &str, prefix: &str) -> String {
    body.lines()
        .map(|line| match line.strip_prefix('[') {
            Some(rest) => format!("[{prefix}.{rest}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

/// Rules files and stored rows, from the bytes: the first byte picks how.
///
/// - Raw: the bytes as the text of a rules file.
/// - Built: a rules file written from the bytes (policy, a channel override, up to six rules
///   of any kind with parameters of every shape: valid, out of range, of the wrong type,
///   regexes near and past the size limits), also read back as stored rows, one rule and one
///   policy at a time.
///
/// Asserts: no panic; an error names where (`place`) unless the text is not TOML at all;
/// [`RuleSpec::validate`] and [`PolicySpec::validate`] agree with compiling a rule set of that
/// one rule or policy; a document that compiles survives its rows
/// ([`Document::rule_rows`] / [`Document::from_stored`]) and compiles again to as many rules;
/// and a compiled rule set decides a few messages (with history, at ordinary and extreme
/// times) without panicking, each reason naming one of its rules, with evidence inside the
/// message.
pub fn rules(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 4 == 0 {
        let text = String::from_utf8_lossy(rest);
        if let Some(set) = check_rules_file(&text) {
            decide(&set, "");
        }
        return;
    }
    let mut b = Bytes(rest);
    let policy = policy_body(&mut b);
    let mut text = nest(&policy, "policy");
    text.insert_str(0, "[policy]\n");
    let channel = b.chance(60).then(|| policy_body(&mut b));
    if let Some(over) = &channel {
        text += &format!("[channel.strims]\n{}", nest(over, "channel.strims"));
    }
    let rules: Vec<(String, String)> = (0..b.below(7)).map(|i| rule_body(&mut b, i)).collect();
    for (_, body) in &rules {
        text += &format!("[[rule]]\n{}", nest(body, "rule"));
    }
    let message = b.text(200);
    let compiled = check_rules_file(&text);
    if let Some(set) = &compiled {
        decide(set, &message);
    }

    // The same tables as stored rows, and each on its own.
    let mut policies = vec![(DEFAULT_POLICY, policy.as_str())];
    if let Some(over) = &channel {
        policies.push(("strims", over.as_str()));
    }
    let rows: Vec<(&str, &str)> = rules
        .iter()
        .map(|(id, body)| (id.as_str(), body.as_str()))
        .collect();
    match Document::from_stored(policies.iter().copied(), rows.iter().copied(), "fuzz rows") {
        Ok(document) => {
            if let Ok(set) = RuleSet::compile(&document, "fuzz rows") {
                decide(&set, &message);
            }
        }
        Err(error) => check_error(&error),
    }
    check_policy_alone(&policy);
    for (_, body) in &rules {
        check_rule_alone(body);
    }
}

/// Parses and compiles a rules file, checking the invariants; the rule set if it compiled.
fn check_rules_file(text: &str) -> Option<RuleSet> {
    let document = match Document::parse(text, "fuzz.toml") {
        Ok(document) => document,
        Err(error) => {
            check_error(&error);
            return None;
        }
    };
    let set = match RuleSet::compile(&document, "rules file fuzz.toml") {
        Ok(set) => set,
        Err(error) => {
            check_error(&error);
            return None;
        }
    };
    assert_eq!(set.rules().len(), document.rules.len());
    // Rows hold the document exactly: read back, they are the same rows and compile alike.
    let policies = document.policy_rows();
    let rules = document.rule_rows();
    let stored = Document::from_stored(
        policies.iter().map(|(c, t)| (c.as_str(), t.as_str())),
        rules.iter().map(|(i, t)| (i.as_str(), t.as_str())),
        "rows",
    )
    .unwrap_or_else(|e| panic!("the rows of a compiled document read back: {e}"));
    assert_eq!(stored.policy_rows(), policies, "policy rows round trip");
    assert_eq!(stored.rule_rows(), rules, "rule rows round trip");
    let again = RuleSet::compile(&stored, "rows")
        .unwrap_or_else(|e| panic!("a compiled document's rows compile: {e}"));
    assert_eq!(again.rules().len(), set.rules().len());
    // Every rule and policy on its own is valid too, explicit parameters included.
    for (_, text) in &rules {
        let mut spec = RuleSpec::from_toml(text, "row")
            .unwrap_or_else(|e| panic!("a compiled rule's row reads as a spec: {e}"));
        spec.validate()
            .unwrap_or_else(|e| panic!("a compiled rule validates: {e}"));
        spec.make_params_explicit()
            .unwrap_or_else(|e| panic!("a compiled rule's parameters are written out: {e}"));
        spec.validate()
            .unwrap_or_else(|e| panic!("explicit parameters validate: {e}"));
        let again = RuleSpec::from_toml(&spec.to_toml().expect("a spec writes"), "again")
            .unwrap_or_else(|e| panic!("a written spec reads back: {e}"));
        assert_eq!(
            again.to_toml().ok(),
            spec.to_toml().ok(),
            "a spec round trips"
        );
    }
    for (channel, text) in &policies {
        let spec = PolicySpec::from_toml(text, "row")
            .unwrap_or_else(|e| panic!("a compiled policy's row reads as a spec: {e}"));
        spec.validate(channel)
            .unwrap_or_else(|e| panic!("a compiled policy validates: {e}"));
    }
    Some(set)
}

/// A valid default policy, to compile one rule or policy on its own.
const POLICY_BODY: &str = "shadow = false\nexempt_roles = []\nemotes = [\"Kappa\"]\n\
    [escalation]\nwarn_first = false\nfirst_timeout_secs = 60\nmax_timeout_secs = 600\n\
    ban_after = 0\nheat_half_life_secs = 60\n";

/// One stored rule: `RuleSpec::validate` accepts it exactly when a rule set of it compiles.
fn check_rule_alone(body: &str) {
    let spec = match RuleSpec::from_toml(body, "rule") {
        Ok(spec) => spec,
        Err(error) => {
            check_error(&error);
            return;
        }
    };
    let valid = spec.validate();
    if let Err(error) = &valid {
        check_error(error);
    }
    let document = Document::from_stored(
        [(DEFAULT_POLICY, POLICY_BODY)],
        [(spec.id.as_str(), body)],
        "one rule",
    );
    let Ok(document) = document else {
        return; // the id it is stored under is not its table's (a blank id, say)
    };
    let compiled = RuleSet::compile(&document, "one rule");
    assert_eq!(
        valid.is_ok(),
        compiled.is_ok(),
        "validate and compile disagree on {body:?}: {valid:?} / {:?}",
        compiled.err()
    );
}

/// One stored policy: `PolicySpec::validate` accepts it exactly when a rule set of it compiles.
fn check_policy_alone(body: &str) {
    let spec = match PolicySpec::from_toml(body, "policy") {
        Ok(spec) => spec,
        Err(error) => {
            check_error(&error);
            return;
        }
    };
    let valid = spec.validate(DEFAULT_POLICY);
    if let Err(error) = &valid {
        check_error(error);
    }
    let document = Document::from_stored([(DEFAULT_POLICY, body)], [], "one policy")
        .expect("a policy that reads as a spec is TOML");
    let compiled = RuleSet::compile(&document, "one policy");
    assert_eq!(
        valid.is_ok(),
        compiled.is_ok(),
        "validate and compile disagree on {body:?}: {valid:?} / {:?}",
        compiled.err()
    );
}

/// An error says where, unless the text was not TOML at all.
fn check_error(error: &RulesError) {
    assert!(!error.message.is_empty(), "an error says what: {error:?}");
    assert!(!error.origin.is_empty(), "an error says whence: {error:?}");
    assert!(
        !error.place.is_empty() || error.message.starts_with("not valid TOML"),
        "an error names the key at fault: {error:?}"
    );
}

/// Times a message may carry: ordinary, the epoch, and the earliest a caller may send
/// (0001-01-01, the protobuf timestamp's lower bound).
const TIMES_MS: &[i64] = &[1_700_000_000_000, 0, -62_135_596_800_000];

/// Decides a few messages with a compiled rule set.
fn decide(set: &RuleSet, extra: &str) {
    let texts = [
        extra,
        "hello chat PepeLaugh",
        "FREE NITRO at https://discord.gg/abc and bit.ly/x @Someone @Other",
        "f u c k this h3ll0 ｆｕｃｋ",
        "Kappa Kappa Kappa Kappa Kappa Kappa Kappa Kappa Kappa",
        "z\u{0301}\u{0302}\u{0303}\u{0304}a\u{0305}\u{0306}lgo !!!!!!!! ????",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];
    for (i, &text) in texts.iter().enumerate() {
        let now_ms = TIMES_MS[i % TIMES_MS.len()];
        let message = ChatMessage {
            channel: if i % 2 == 0 { "destinygg" } else { "strims" }.into(),
            message_id: format!("m{i}"),
            user_id: "u".into(),
            nick: "u".into(),
            roles: if i == 3 {
                vec!["moderator".into()]
            } else {
                vec![]
            },
            text: text.into(),
            sent_at: UNIX_EPOCH + Duration::from_millis(now_ms.max(0).unsigned_abs()),
        };
        let policy = set.policy(&message.channel);
        let normalized = fold(text, &policy.emotes);
        let recent: Vec<Arc<RecentMessage>> = texts
            .iter()
            .enumerate()
            .map(|(k, t)| {
                Arc::new(RecentMessage {
                    message_id: format!("r{k}"),
                    text: fold(t, &policy.emotes).text,
                    at_ms: now_ms.saturating_sub(1000 * k as i64),
                })
            })
            .collect();
        let history = UserHistory {
            first_seen_ms: Some(now_ms.saturating_sub(5_000)),
            last_seen_ms: Some(now_ms.saturating_sub(1_000)),
            messages: recent.len() as u64,
            message_times_ms: recent.iter().map(|m| m.at_ms).collect(),
            recent,
            ..UserHistory::default()
        };
        let channel = ChannelWindow::from_messages(
            texts
                .iter()
                .enumerate()
                .map(|(k, t)| ChannelMessage {
                    user_id: format!("other{k}"),
                    message_id: format!("c{k}"),
                    text: fold(t, &policy.emotes).text,
                    at_ms: now_ms.saturating_sub(500 * k as i64),
                })
                .collect(),
        );
        let ctx = Context {
            normalized: &normalized,
            history: &history,
            channel_recent: &channel,
            now_ms,
        };
        let evaluation = set.evaluate(&message, policy, &ctx);
        assert_eq!(evaluation.failed, [], "no rule panics on {text:?}");
        let reasons = evaluation.reasons;
        let chars = text.chars().count() as u32;
        let mut previous = None;
        for reason in &reasons {
            let index = set.rules().iter().position(|r| r.id == reason.rule_id);
            let index = index.unwrap_or_else(|| panic!("{reason:?} names no rule"));
            assert!(previous < Some(index), "one reason per rule, in file order");
            previous = Some(index);
            let rule = &set.rules()[index];
            assert_eq!(reason.source, ReasonSource::Rule);
            assert_eq!(
                (reason.decision, reason.duration),
                (rule.decision, rule.duration)
            );
            if let Some(span) = reason.evidence.span {
                assert!(span.start <= span.end && span.end <= chars, "{reason:?}");
                assert_eq!(reason.evidence.matched_text, normalized.original_text(span));
            }
        }
        // The rules that need no history fire alike without it: what they ask for is a floor
        // under the decision of all the rules.
        let harshest = set.harshest_without_history(&message, policy, &normalized);
        let enforced = reasons
            .iter()
            .filter(|r| !r.shadow)
            .map(|r| r.decision)
            .max();
        assert!(
            harshest <= enforced,
            "{harshest:?} without history, {enforced:?} with it"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// rule match

/// Pieces regex phrases are built from (words the messages use, classes, anchors, flags),
/// each with a text it matches.
const REGEX_ATOMS: &[(&str, &str)] = &[
    ("free", "free"),
    ("nitro", "nitro"),
    ("spam", "spam"),
    ("word", "word"),
    ("a", "a"),
    ("b", "b"),
    ("x", "x"),
    (" ", " "),
    ("\\w", "w"),
    ("\\w+", "word"),
    ("\\d", "7"),
    ("[a-z]", "q"),
    ("[^ ]", "x"),
    (".", "z"),
    ("\\b", ""),
    ("^", ""),
    ("$", ""),
    ("\\s", " "),
    ("é", "é"),
    ("(?i)", ""),
    ("(?-i:A)", "A"),
    ("\\p{L}", "l"),
    ("[0-9]{2,3}", "42"),
    ("\\.", "."),
];
/// Group names, few so that phrases share them.
const GROUP_NAMES: &[&str] = &["w", "x", "name", "n1"];
/// Words literal and wildcard phrases and messages are made of.
const PHRASE_WORDS: &[&str] = &[
    "free",
    "nitro",
    "free nitro",
    "spam",
    "word",
    "spamword",
    "cheap",
    "viewbot",
    "a",
    "x",
    "é",
    "123",
    "discord.gg",
    "!!",
    "@user",
    "ｆｒｅｅ",
    "fr3e",
    "s c a m",
    "scam",
    "kys",
];
/// What messages are made of besides [`PHRASE_WORDS`].
const MESSAGE_WORDS: &[&str] = &[
    "FREE NITRO",
    "fr\u{200b}ee",
    "n1tr0",
    "spamwordspam",
    "xyz",
    "qrst",
    "a b c",
    "https://x.com",
    "viewbotting",
    "ab",
    "aXb",
    " ",
    "\u{FDFA}",
    "z\u{0301}\u{0302}",
    "Kappa",
    "2024",
];

/// A regex from [`REGEX_ATOMS`] with groups (plain, named, non-capturing), alternations,
/// repetitions and now and then look-around (which must be refused) or raw bytes, and a text
/// it is meant to match (the messages are made of such texts; normalisation, anchors and raw
/// bytes make some of them miss, which is fine).
fn regex_phrase(b: &mut Bytes<'_>, depth: u32) -> (String, String) {
    let mut out = String::new();
    let mut witness = String::new();
    let mut last = String::new();
    for _ in 0..1 + b.below(4) {
        let nested = depth < 4;
        let (piece, text) = match b.below(14) {
            // Atoms (classes, anchors) less often than words: a phrase that matches anywhere
            // always wins, and the phrases after it would never be named.
            0..=1 => {
                let (atom, text) = b.pick(REGEX_ATOMS);
                (atom.to_owned(), text.to_owned())
            }
            5 | 6 if nested => {
                let (inner, text) = regex_phrase(b, depth + 1);
                (format!("({inner})"), text)
            }
            7 if nested => {
                let open = if b.chance(128) { "(?P<" } else { "(?<" };
                let name = b.pick(GROUP_NAMES);
                let (inner, text) = regex_phrase(b, depth + 1);
                (format!("{open}{name}>{inner})"), text)
            }
            8 if nested => {
                let (inner, text) = regex_phrase(b, depth + 1);
                (format!("(?:{inner})"), text)
            }
            9 if nested => {
                let (left, left_text) = regex_phrase(b, depth + 1);
                let (right, right_text) = regex_phrase(b, depth + 1);
                let text = if b.chance(128) { left_text } else { right_text };
                (format!("{left}|{right}"), text)
            }
            10 | 11 if !out.is_empty() => {
                let quantifier = b.pick(&["*", "+", "?", "{1,3}", "*?", "{2}"]);
                // The last piece once more for `{2}`; once is a match for the others.
                let text = if quantifier == "{2}" {
                    last.clone()
                } else {
                    String::new()
                };
                (quantifier.to_owned(), text)
            }
            12 if b.chance(64) => {
                let look = b.pick(&["(?=x)", "(?!x)", "(?<=x)", "(?<!x)"]);
                (look.to_owned(), String::new())
            }
            13 => {
                let raw = b.text(6);
                (raw.clone(), raw)
            }
            _ => {
                let word = b.pick(PHRASE_WORDS);
                (word.to_owned(), word.to_owned())
            }
        };
        out.push_str(&piece);
        witness.push_str(&text);
        last = text;
    }
    (out, witness)
}

/// A literal or wildcard phrase (words, now and then with `*` or `?`, or raw bytes) and a
/// text it is meant to match.
fn plain_phrase(b: &mut Bytes<'_>) -> (String, String) {
    if b.chance(24) {
        let raw = b.text(12);
        return (raw.clone(), raw);
    }
    let mut out = String::new();
    let mut witness = String::new();
    for i in 0..1 + b.below(3) {
        if i > 0 {
            out.push(' ');
            witness.push(' ');
        }
        let word = b.pick(PHRASE_WORDS);
        out.push_str(word);
        witness.push_str(word);
        if b.chance(48) {
            let (wildcard, text) = b.pick(&[('*', "xy"), ('?', "q")]);
            out.push(wildcard);
            witness.push_str(text);
        }
    }
    (out, witness)
}

/// A message of texts the phrases are meant to match, phrase words, message words and now
/// and then raw bytes.
fn message_text(b: &mut Bytes<'_>, witnesses: &[String]) -> String {
    let mut out = String::new();
    for _ in 0..b.below(7) {
        match b.below(10) {
            0..=2 => out.push_str(&witnesses[b.below(witnesses.len())]),
            3..=5 => out.push_str(b.pick(PHRASE_WORDS)),
            6..=7 => out.push_str(b.pick(MESSAGE_WORDS)),
            _ => out.push_str(&b.text(12)),
        }
        if b.chance(200) {
            out.push(' ');
        }
    }
    out
}

type PhraseSpec = (&'static str, bool, Vec<String>, Vec<String>);

/// The written form of [`rule_match`]'s input.
fn written_spec(rest: &[u8]) -> PhraseSpec {
    let text = String::from_utf8_lossy(rest);
    let (head, tail) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    let syntax = ["literal", "wildcard", "regex"]
        .into_iter()
        .find(|s| first.starts_with(s))
        .unwrap_or("regex");
    let anywhere = first.ends_with(" anywhere");
    let phrases = lines.take(8).map(str::to_owned).collect();
    let messages = tail.lines().take(8).map(str::to_owned).collect();
    (syntax, anywhere, phrases, messages)
}

/// The built form of [`rule_match`]'s input.
fn built_spec(rest: &[u8]) -> PhraseSpec {
    let mut b = Bytes(rest);
    let syntax = b.pick(&["regex", "regex", "regex", "literal", "wildcard"]);
    let anywhere = b.chance(64);
    let (phrases, witnesses): (Vec<String>, Vec<String>) = (0..1 + b.below(6))
        .map(|_| {
            if syntax != "regex" {
                plain_phrase(&mut b)
            } else if b.chance(160) {
                // A group of its own up front, the shape that once broke the lookup.
                let (group, group_text) = regex_phrase(&mut b, 3);
                let (rest, rest_text) = regex_phrase(&mut b, 1);
                (format!("({group}){rest}"), group_text + &rest_text)
            } else {
                regex_phrase(&mut b, 0)
            }
        })
        .unzip();
    let messages = (0..1 + b.below(4))
        .map(|_| message_text(&mut b, &witnesses))
        .collect();
    (syntax, anywhere, phrases, messages)
}

/// A rule set of one phrase rule (id `r`) under a plain policy.
fn phrase_rule(phrases: &[String], syntax: &str, anywhere: bool) -> Result<RuleSet, RulesError> {
    let list: Vec<String> = phrases.iter().map(|p| quoted(p)).collect();
    let text = format!(
        "[policy]\n{}[[rule]]\nid = \"r\"\nkind = \"phrase\"\naction = \"hide\"\n\
         [rule.params]\nphrases = [{}]\nsyntax = {}\nanywhere = {anywhere}\n",
        nest(POLICY_BODY, "policy"),
        list.join(", "),
        quoted(syntax),
    );
    RuleSet::parse(&text, "fuzz")
}

/// The one reason a one-rule set gives `text` (no history), if it fires; no rule may panic.
fn phrase_hit(set: &RuleSet, text: &str) -> Option<Reason> {
    let message = ChatMessage {
        channel: "destinygg".into(),
        message_id: "m".into(),
        user_id: "u".into(),
        nick: "u".into(),
        roles: vec![],
        text: text.into(),
        sent_at: UNIX_EPOCH,
    };
    let policy = set.policy(&message.channel);
    let normalized = fold(text, &policy.emotes);
    let history = UserHistory::default();
    let channel = ChannelWindow::default();
    let ctx = Context {
        normalized: &normalized,
        history: &history,
        channel_recent: &channel,
        now_ms: 0,
    };
    let evaluation = set.evaluate(&message, policy, &ctx);
    assert_eq!(evaluation.failed, [], "no rule panics on {text:?}");
    let mut reasons = evaluation.reasons;
    assert!(reasons.len() <= 1, "one rule, one reason: {reasons:?}");
    let reason = reasons.pop()?;
    let span = reason.evidence.span.expect("a phrase hit has a span");
    assert!(span.start <= span.end && span.end as usize <= text.chars().count());
    assert_eq!(reason.evidence.matched_text, normalized.original_text(span));
    Some(reason)
}

/// A phrase rule × messages, from the bytes: the first byte picks how.
///
/// - Written (the first byte a multiple of 4): the rest is text, the syntax on the first line
///   (`regex`, `literal` or `wildcard`, then ` anywhere` for that flag), one phrase per line,
///   a blank line, one message per line. Seeds and regressions are written this way.
/// - Built: up to six phrases (literal, wildcard or regex: groups, named groups with names
///   shared between phrases, nested alternations, repetitions, look-around, raw bytes) × up
///   to four messages made of the same words.
///
/// Asserts: no panic, and no rule reported as panicked; a rule that does not compile says so
/// at `params.phrases` or `params.phrases[i]`; every phrase of a rule that compiles compiles
/// alone; and the combined matcher agrees with each phrase alone: it fires exactly when some
/// phrase alone fires, the phrase its evidence names fires alone with the same span and text,
/// and no phrase alone matches earlier in the text.
pub fn rule_match(data: &[u8]) {
    check_rule_match(data);
}

/// What one [`rule_match`] input exercised, so the property test can check that its inputs
/// are not all refused or silent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct RuleMatchOutcome {
    /// The rule compiled.
    compiled: bool,
    /// Messages it fired on.
    hits: usize,
    /// Of those, hits naming a phrase after one with a group of its own: what the old
    /// group-counting lookup got wrong.
    hits_after_groups: usize,
}

fn check_rule_match(data: &[u8]) -> RuleMatchOutcome {
    let mut outcome = RuleMatchOutcome::default();
    let Some((&selector, rest)) = data.split_first() else {
        return outcome;
    };
    let (syntax, anywhere, phrases, messages) = if selector % 4 == 0 {
        written_spec(rest)
    } else {
        built_spec(rest)
    };
    let set = match phrase_rule(&phrases, syntax, anywhere) {
        Ok(set) => set,
        Err(error) => {
            check_error(&error);
            assert!(
                error.place.contains("params.phrases"),
                "a phrase error names the phrase: {error:?}"
            );
            return outcome;
        }
    };
    outcome.compiled = true;
    let alone: Vec<RuleSet> = phrases
        .iter()
        .map(|phrase| {
            phrase_rule(std::slice::from_ref(phrase), syntax, anywhere).unwrap_or_else(|e| {
                panic!("{phrase:?} compiles among {phrases:?} but not alone: {e}")
            })
        })
        .collect();
    for text in &messages {
        let hits: Vec<Option<Reason>> = alone.iter().map(|set| phrase_hit(set, text)).collect();
        let Some(reason) = phrase_hit(&set, text) else {
            for (phrase, hit) in phrases.iter().zip(&hits) {
                assert!(
                    hit.is_none(),
                    "{phrase:?} matches {text:?} alone but not among {phrases:?}"
                );
            }
            continue;
        };
        let named = &reason.evidence.pattern;
        let index = phrases
            .iter()
            .position(|p| p == named)
            .unwrap_or_else(|| panic!("the evidence names {named:?}, not one of {phrases:?}"));
        assert!(reason.evidence.detail.contains(named.as_str()));
        outcome.hits += 1;
        if phrases[..index].iter().any(|p| p.contains('(')) {
            outcome.hits_after_groups += 1;
        }
        let own = hits[index].as_ref().unwrap_or_else(|| {
            panic!("{text:?}: the evidence names {named:?}, which alone does not match")
        });
        assert_eq!(
            (own.evidence.span, &own.evidence.matched_text),
            (reason.evidence.span, &reason.evidence.matched_text),
            "{text:?}: {named:?} alone matches elsewhere"
        );
        let start = reason.evidence.span.map(|s| s.start);
        for (phrase, hit) in phrases.iter().zip(&hits) {
            if let Some(hit) = hit {
                assert!(
                    hit.evidence.span.map(|s| s.start) >= start,
                    "{text:?}: {phrase:?} matches before the reported {named:?}"
                );
            }
        }
    }
    outcome
}

// ---------------------------------------------------------------------------------------------
// stream events

/// Users of [`stream_events`]' chats; `mod` has the moderator role the built-in policy exempts.
const USERS: &[&str] = &["alice", "bob", "carol", "mod"];
/// Its channels.
const CHANNELS: &[&str] = &["destinygg", "strims", "other"];
/// Chat lines that fire the built-in rules (or nearly), and some that stress the normaliser.
const CHAT: &[&str] = &[
    "hello chat PepeLaugh",
    "FREE NITRO at https://discord.gg/abc",
    "buy followers now",
    "viewbotting services",
    "PepeLaugh PepeLaugh PepeLaugh PepeLaugh PepeLaugh PepeLaugh PepeLaugh PepeLaugh",
    "THIS IS VERY LOUD TEXT FOR EVERYONE HERE",
    "f u c k you",
    "z\u{0301}\u{0302}\u{0303}\u{0304}a\u{0305}\u{0306}lgo",
    "@aaa @bbb @ccc @ddd @eee @fff @ggg",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "grabify.link/x bit.ly/y https://example.com",
    "!!!!!!!!!!!!!!!!!!!!!!!!??????????",
    "ｆｒｅｅ ｎｉｔｒｏ",
    "\u{FDFA}\u{FDFA}\u{FDFA}",
    "lol lol lol lol lol lol lol lol",
    "the same long message that a copypasta rule should notice when many people paste it again and again",
];

/// Message times: ordinary (advancing by the input), the epoch, and the earliest a caller may
/// send (0001-01-01).
fn event_time(b: &mut Bytes<'_>, clock_ms: &mut i64) -> SystemTime {
    match b.below(16) {
        0 => UNIX_EPOCH,
        1 => UNIX_EPOCH - Duration::from_millis(62_135_596_800_000),
        2 => UNIX_EPOCH + Duration::from_millis(clock_ms.unsigned_abs() + 86_400_000 * 365),
        _ => {
            *clock_ms += i64::from(b.byte()) * 50;
            UNIX_EPOCH + Duration::from_millis(clock_ms.unsigned_abs())
        }
    }
}

/// The built-in rules, compiled once for every input (they are immutable).
fn builtin_engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    Arc::clone(ENGINE.get_or_init(|| Arc::new(Engine::new(RuleSet::builtin()))))
}

/// One event of a stream, as the session hands it to the pipeline.
enum StreamEvent {
    /// A chat message (already validated), decided with these options.
    Message(ChatMessage, DecideOptions),
    /// A human moderator's action seen in chat.
    Action {
        channel: &'static str,
        moderator: &'static str,
        target: &'static str,
        decision: Decision,
        at: SystemTime,
    },
    /// A join, quit or user list: the session answers nothing and decides nothing.
    Presence,
}

/// Up to 64 events from the bytes.
fn stream_script(b: &mut Bytes<'_>) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    let mut clock_ms = 1_700_000_000_000;
    let mut last_text = String::from("hello");
    while !b.0.is_empty() && events.len() < 64 {
        match b.below(10) {
            0..=6 => {
                let text = match b.below(8) {
                    0..=3 => b.pick(CHAT).to_owned(),
                    4 => last_text.clone(),
                    5 => b.pick(CHAT).repeat(1 + b.below(24)),
                    _ => b.text(120),
                };
                // The session refuses a blank or oversized text before the pipeline.
                let text: String = text.chars().take(2000).collect();
                if text.trim().is_empty() {
                    continue;
                }
                last_text.clone_from(&text);
                let user = b.pick(USERS);
                let message = ChatMessage {
                    channel: b.pick(CHANNELS).to_owned(),
                    message_id: format!("m{}", events.len()),
                    user_id: user.to_owned(),
                    nick: user.to_owned(),
                    roles: match (user, b.below(4)) {
                        ("mod", _) => vec!["moderator".to_owned()],
                        (_, 0) => vec!["subscriber".to_owned()],
                        _ => vec![],
                    },
                    text,
                    sent_at: event_time(b, &mut clock_ms),
                };
                let options = DecideOptions {
                    dry_run: b.chance(16),
                };
                events.push(StreamEvent::Message(message, options));
            }
            7 | 8 => events.push(StreamEvent::Action {
                channel: b.pick(CHANNELS),
                moderator: "mod",
                target: b.pick(USERS),
                decision: b.pick(&[
                    Decision::Hide,
                    Decision::Warn,
                    Decision::Timeout,
                    Decision::Ban,
                ]),
                at: event_time(b, &mut clock_ms),
            }),
            _ => events.push(StreamEvent::Presence),
        }
    }
    events
}

/// A sequence of a stream's events through the real per-message pipeline
/// ([`crate::service::moderate::Moderator`]: built-in rules, in-memory user state, no model), read
/// ahead in windows as a session does (every message of a window consulted, then each decided
/// in order).
///
/// Asserts: no panic; exactly one verdict per message, for that message; no degraded verdict
/// (nothing here can fail); every reason of a rule names a built-in rule, with evidence inside
/// the message; an enforced non-allow verdict has a reason; a dry run enforces nothing; and
/// the example a moderator action teaches is the target's own earlier message in that
/// channel (one decided without a dry run).
pub fn stream_events(data: &[u8]) {
    let mut b = Bytes(data);
    let window = 1 + b.below(8);
    let events = stream_script(&mut b);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(run_stream(events, window));
}

async fn run_stream(events: Vec<StreamEvent>, window: usize) {
    use crate::infra::inference::{Admission, Description, ModelStatus, Scorer};
    use crate::infra::users::{SharedState, StateOptions};

    let engine = builtin_engine();
    let rule_ids: HashSet<&str> = engine
        .rules()
        .rules()
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    let state = SharedState::memory(StateOptions {
        max_users: 64,
        max_channels: 8,
        ..StateOptions::default()
    });
    let scorer = Scorer::idle(ModelStatus::Off, Description::default());
    let moderator =
        crate::service::moderate::Moderator::with_shared_engine(engine.clone(), state, scorer);
    let mut remembered: HashSet<(String, String, String)> = HashSet::new();
    let mut messages = 0;
    let mut verdicts = 0;
    for chunk in events.chunks(window) {
        // Stage one for the whole window, as the session's reader does.
        let mut consults = Vec::new();
        for event in chunk {
            if let StreamEvent::Message(message, _) = event {
                let consult = moderator
                    .consult(message, Admission::Wait)
                    .await
                    .expect("`Wait` never fails");
                consults.push(consult);
            }
        }
        let mut consults = consults.into_iter();
        for event in chunk {
            match event {
                StreamEvent::Message(message, options) => {
                    messages += 1;
                    let consult = consults.next().expect("one consult per message");
                    let verdict = moderator
                        .moderate_with(message, consult, *options, Instant::now())
                        .await;
                    verdicts += 1;
                    assert_eq!(
                        (&verdict.message_id, &verdict.channel, &verdict.user_id),
                        (&message.message_id, &message.channel, &message.user_id),
                        "the verdict is the message's"
                    );
                    assert_eq!(
                        verdict.degraded,
                        [],
                        "nothing here can degrade: {verdict:?}"
                    );
                    let chars = message.text.chars().count() as u32;
                    for reason in &verdict.reasons {
                        if reason.source == ReasonSource::Rule {
                            assert!(rule_ids.contains(reason.rule_id.as_str()), "{reason:?}");
                        }
                        if let Some(span) = reason.evidence.span {
                            assert!(span.start <= span.end && span.end <= chars, "{reason:?}");
                        }
                    }
                    if verdict.enforced && verdict.decision != Decision::Allow {
                        assert!(!verdict.reasons.is_empty(), "{verdict:?}");
                    }
                    if options.dry_run {
                        assert!(!verdict.enforced, "a dry run enforces nothing");
                    } else {
                        remembered.insert((
                            message.channel.clone(),
                            message.user_id.clone(),
                            message.message_id.clone(),
                        ));
                    }
                }
                StreamEvent::Action {
                    channel,
                    moderator: by,
                    target,
                    decision,
                    at,
                } => {
                    let feedback = moderator
                        .moderator_action(channel, by, target, *decision, *at)
                        .await;
                    if let Some(feedback) = feedback {
                        assert_eq!(
                            (feedback.channel.as_str(), feedback.user_id.as_str()),
                            (*channel, *target)
                        );
                        assert!(
                            remembered.contains(&(
                                feedback.channel.clone(),
                                feedback.user_id.clone(),
                                feedback.message_id.clone()
                            )),
                            "{feedback:?} teaches a message the target did not send there"
                        );
                    }
                }
                StreamEvent::Presence => {}
            }
        }
    }
    assert_eq!(verdicts, messages, "one verdict per message");
}

// ---------------------------------------------------------------------------------------------
// chat frames

/// The chat frame parser on any bytes.
///
/// Asserts: no panic; [`FrameError::TooLong`] exactly for frames over [`MAX_SERVER_FRAME_BYTES`],
/// [`FrameError::NotUtf8`] exactly for other bytes that are not UTF-8, and `parse_bytes` agrees
/// with `parse` on text; a parsed frame keeps the protocol's guarantees (a message's text and a
/// moderation's target non-empty, nicks not blank, the time the timestamp); every parsed frame
/// written back as the event it is parses to the same frame; and the command a moderation event
/// confirms ([`Command::encode`]) is a frame of that event within the size limit, with the
/// target and duration it was given.
pub fn chat_frame(data: &[u8]) {
    let parsed = protocol::parse_bytes(data);
    if data.len() > MAX_SERVER_FRAME_BYTES {
        assert_eq!(parsed, Err(FrameError::TooLong(data.len())));
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        assert_eq!(parsed, Err(FrameError::NotUtf8));
        return;
    };
    assert_eq!(protocol::parse(text), parsed, "parse and parse_bytes agree");
    let frame = match parsed {
        Ok(frame) => frame,
        Err(error) => {
            assert!(!matches!(
                error,
                FrameError::TooLong(_) | FrameError::NotUtf8 | FrameError::Binary
            ));
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let (event, _) = text.split_once(' ').expect("a parsed frame has a space");
    assert!(!event.is_empty() && event.bytes().all(|b| b.is_ascii_uppercase()));
    match &frame {
        Frame::Names { .. } => assert_eq!(event, "NAMES"),
        Frame::Join { user, .. } | Frame::Quit { user, .. } => {
            assert!(!user.nick.trim().is_empty());
        }
        Frame::Msg {
            user,
            at,
            timestamp_ms,
            text,
        } => {
            assert!(!user.nick.trim().is_empty() && !text.is_empty());
            assert_eq!(*at, UNIX_EPOCH + Duration::from_millis(*timestamp_ms));
        }
        Frame::Moderation {
            kind,
            moderator,
            target,
            duration,
            ..
        } => {
            assert_eq!(kind.event(), event);
            assert!(!moderator.nick.trim().is_empty() && !target.is_empty());
            check_command(*kind, target, *duration);
        }
        Frame::Err { .. } => assert_eq!(event, "ERR"),
        Frame::PrivmsgSent { target } => {
            assert_eq!(event, "PRIVMSGSENT");
            assert!(target.as_ref().is_none_or(|t| !t.is_empty()));
        }
        Frame::Pong => assert_eq!(event, "PONG"),
        Frame::Refresh => assert_eq!(event, "REFRESH"),
        Frame::Other(name) => {
            assert_eq!(name, event);
            assert!(!KNOWN_EVENTS.contains(&event), "{event} is known");
        }
    }
    if let Some(written) = write_event(&frame) {
        match protocol::parse(&written) {
            Ok(again) => assert_eq!(again, frame, "{written:?} reads back as it was"),
            Err(FrameError::TooLong(_)) => assert!(written.len() > MAX_SERVER_FRAME_BYTES),
            Err(error) => panic!("{written:?} (from {text:?}) does not read back: {error}"),
        }
    }
}

const KNOWN_EVENTS: &[&str] = &[
    "NAMES",
    "JOIN",
    "QUIT",
    "MSG",
    "MUTE",
    "BAN",
    "UNMUTE",
    "UNBAN",
    "ERR",
    "PRIVMSGSENT",
    "PONG",
    "REFRESH",
];

/// A frame written back as the server would send it (`None` for the frames whose payload is
/// not kept).
fn write_event(frame: &Frame) -> Option<String> {
    use serde_json::json;
    let millis =
        |at: &SystemTime| u64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok();
    let (event, payload) = match frame {
        Frame::Names {
            users,
            connection_count,
        } => {
            let users: Vec<_> = users
                .iter()
                .map(|u| json!({"nick": u.nick, "features": u.features}))
                .collect();
            (
                "NAMES",
                json!({"users": users, "connectioncount": connection_count}),
            )
        }
        Frame::Join { user, at } | Frame::Quit { user, at } => (
            if matches!(frame, Frame::Join { .. }) {
                "JOIN"
            } else {
                "QUIT"
            },
            json!({"nick": user.nick, "features": user.features, "timestamp": millis(at)?}),
        ),
        Frame::Msg {
            user,
            timestamp_ms,
            text,
            ..
        } => (
            "MSG",
            json!({"nick": user.nick, "features": user.features, "timestamp": timestamp_ms, "data": text}),
        ),
        Frame::Moderation {
            kind,
            moderator,
            target,
            duration,
            at,
        } => {
            let mut payload = json!({
                "nick": moderator.nick,
                "features": moderator.features,
                "timestamp": millis(at)?,
                "data": target,
            });
            if let Some(duration) = duration {
                payload["duration"] = json!(duration.as_secs());
            }
            (kind.event(), payload)
        }
        Frame::Err { code } => ("ERR", json!({ "description": code })),
        Frame::PrivmsgSent { target: None } => ("PRIVMSGSENT", json!("")),
        Frame::PrivmsgSent {
            target: Some(target),
        } => ("PRIVMSGSENT", json!({ "targetNick": target })),
        Frame::Pong | Frame::Refresh | Frame::Other(_) => return None,
    };
    Some(format!("{event} {payload}"))
}

/// The command a moderation event confirms, encoded: a frame of that event, within the limit
/// for the nicks the service sends (ids of at most 256 bytes), carrying the target and the
/// duration clamped as documented.
fn check_command(kind: Moderation, target: &str, duration: Option<Duration>) {
    let command = match kind {
        Moderation::Mute => Command::Mute {
            nick: target.to_owned(),
            duration: duration.unwrap_or(Duration::from_secs(600)),
        },
        Moderation::Ban => Command::Ban {
            nick: target.to_owned(),
            reason: target.repeat(3),
            duration,
        },
        Moderation::Unmute => Command::Unmute {
            nick: target.to_owned(),
        },
        Moderation::Unban => Command::Unban {
            nick: target.to_owned(),
        },
    };
    assert_eq!(
        command.confirmed_by(),
        crate::bridge::protocol::Confirmation::Broadcast(kind)
    );
    assert_eq!(command.target(), target);
    let frame = command.encode();
    if target.len() <= crate::domain::MAX_ID_BYTES {
        assert!(
            frame.len() <= MAX_FRAME_BYTES,
            "{} bytes: {frame:?}",
            frame.len()
        );
    }
    let (event, payload) = frame.split_once(' ').expect("event and payload");
    assert_eq!(event, kind.event());
    let payload: serde_json::Value = serde_json::from_str(payload).expect("a JSON payload");
    let field = if kind == Moderation::Ban {
        "nick"
    } else {
        "data"
    };
    assert_eq!(
        payload[field].as_str(),
        Some(target),
        "the target is sent as given"
    );
    let nanos = payload["duration"].as_u64();
    match (kind, duration) {
        (Moderation::Mute, given) => {
            let expected = given
                .unwrap_or(Duration::from_secs(600))
                .clamp(Duration::from_secs(1), protocol::MAX_MUTE);
            assert_eq!(nanos, u64::try_from(expected.as_nanos()).ok());
        }
        (Moderation::Ban, given) => {
            let reason = payload["reason"].as_str().expect("a ban has a reason");
            assert!(!reason.is_empty() && reason.chars().count() <= protocol::MAX_REASON_CHARS);
            assert_eq!(payload["ispermanent"].as_bool(), Some(nanos == Some(0)));
            if given.is_none() {
                assert_eq!(nanos, Some(0));
            } else {
                assert!(nanos.is_some_and(|n| n >= 1_000_000_000));
            }
        }
        _ => assert!(payload.get("duration").is_none()),
    }
}

#[cfg(test)]
mod tests;
