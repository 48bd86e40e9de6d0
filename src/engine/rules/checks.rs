//! The checks behind each rule kind. Each is a pure function of a [`Context`] that says
//! whether it fired, with the measured score, the threshold and the evidence.

use std::collections::HashSet;
use std::time::Duration;

use super::Context;
use super::lookalike::{domain_matches, link_host};
use super::phrase::PhraseCheck;
use super::profanity::ProfanityCheck;
use super::similarity::Profile;
use crate::domain::Evidence;
use crate::domain::remembered_text;
use crate::engine::normalize::{Token, TokenKind};

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The measured value (ratio, count, similarity; 0 for a plain match).
    pub score: f64,
    /// What it was compared against.
    pub threshold: f64,
    /// Why it fired; `detail` says it in words.
    pub evidence: Evidence,
}

impl Hit {
    fn measured(score: f64, threshold: f64, detail: String) -> Self {
        Self {
            score,
            threshold,
            evidence: Evidence {
                detail,
                ..Evidence::default()
            },
        }
    }

    fn token(mut self, ctx: &Context<'_>, token: &Token) -> Self {
        self.evidence.span = Some(token.original);
        self.evidence.matched_text = ctx.normalized.original_text(token.original);
        self
    }
}

/// A rule's check, with its parameters.
#[derive(Debug)]
pub enum Check {
    /// Banned phrases.
    Phrase(PhraseCheck),
    /// The profanity lexicon.
    Profanity(ProfanityCheck),
    /// Links.
    Link(LinkCheck),
    /// Shouting.
    Caps(CapsCheck),
    /// Emote walls.
    EmoteFlood(EmoteFloodCheck),
    /// Unusual-character floods and zalgo.
    CharFlood(CharFloodCheck),
    /// Repeating one's own messages.
    Repetition(RepetitionCheck),
    /// Copying others' messages.
    Copypasta(CopypastaCheck),
    /// Message rate.
    Rate(RateCheck),
    /// Low word variety.
    UniqueWords(UniqueWordsCheck),
    /// Very long words.
    LongWord(LongWordCheck),
    /// Mention spam.
    Mentions(MentionsCheck),
}

impl Check {
    /// Whether the check looks at the author's or the channel's history (and so can only run
    /// once the message has joined it); the others see the message alone.
    pub fn needs_history(&self) -> bool {
        matches!(
            self,
            Check::Link(_) | Check::Repetition(_) | Check::Copypasta(_) | Check::Rate(_)
        )
    }

    /// Runs the check in a channel with `policy` (profanity excepted, which
    /// `RuleSet::evaluate` runs with the shared analysis).
    pub fn check(&self, ctx: &Context<'_>, policy: &super::Policy) -> Option<Hit> {
        match self {
            Check::Phrase(c) => c.check(ctx.normalized),
            // Needs the shared analysis: `RuleSet::evaluate` calls it directly.
            Check::Profanity(_) => None,
            Check::Link(c) => c.check(ctx, &policy.allow_domains),
            Check::Caps(c) => c.check(ctx),
            Check::EmoteFlood(c) => c.check(ctx),
            Check::CharFlood(c) => c.check(ctx),
            Check::Repetition(c) => c.check(ctx),
            Check::Copypasta(c) => c.check(ctx),
            Check::Rate(c) => c.check(ctx),
            Check::UniqueWords(c) => c.check(ctx),
            Check::LongWord(c) => c.check(ctx),
            Check::Mentions(c) => c.check(ctx),
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Links by domain, user age and repetition.
#[derive(Debug)]
pub struct LinkCheck {
    /// Allowed domains (lower case).
    pub allow: Vec<String>,
    /// Denied domains (lower case).
    pub deny: Vec<String>,
    /// Only allowed domains pass.
    pub allow_list_only: bool,
    /// No links from users seen for less than this.
    pub min_user_age: Duration,
    /// Same link this many times within `repeat_window` fires (0 = off).
    pub max_repeats: u32,
    /// Window for `max_repeats`.
    pub repeat_window: Duration,
    /// Brands whose look-alike domains fire.
    pub lookalike_brands: Vec<super::lookalike::Brand>,
    /// Top-level domains that fire (lower case, no dot).
    pub deny_tlds: Vec<String>,
}

/// A link without scheme, `www.` and trailing slash, for comparing repeats.
fn canonical_link(link: &str) -> &str {
    let rest = link.split_once("://").map_or(link, |(_, rest)| rest);
    rest.strip_prefix("www.")
        .unwrap_or(rest)
        .trim_end_matches('/')
}

impl LinkCheck {
    /// `channel_allow`: the channel's own trusted domains (`[policy.links]`), allowed as the
    /// rule's `allow_domains` are.
    fn check(&self, ctx: &Context<'_>, channel_allow: &[String]) -> Option<Hit> {
        let links = ctx
            .normalized
            .tokens
            .iter()
            .filter(|t| t.kind == TokenKind::Link);
        for token in links {
            let typed = ctx.normalized.token_text(token);
            let refanged = crate::engine::normalize::refang(typed);
            let link = refanged.as_deref().unwrap_or(typed);
            let host = link_host(link).to_lowercase();
            if let Some(domain) = domain_matches(&host, &self.deny) {
                let mut hit = Hit::measured(1.0, 0.0, format!("link to denied domain {domain}"))
                    .token(ctx, token);
                hit.evidence.pattern = domain;
                return Some(hit);
            }
            let allowed = domain_matches(&host, &self.allow).is_some()
                || domain_matches(&host, channel_allow).is_some();
            if !allowed
                && let Some(brand) =
                    super::lookalike::lookalike_of(&host, &self.lookalike_brands, &self.allow)
            {
                let mut hit =
                    Hit::measured(1.0, 0.0, format!("link to {host}, which poses as {brand}"))
                        .token(ctx, token);
                hit.evidence.pattern = brand.to_owned();
                return Some(hit);
            }
            if !allowed && let Some(tld) = super::lookalike::denied_tld(&host, &self.deny_tlds) {
                let mut hit = Hit::measured(1.0, 0.0, format!("link to a .{tld} domain ({host})"))
                    .token(ctx, token);
                hit.evidence.pattern = format!(".{tld}");
                return Some(hit);
            }
            if self.allow_list_only && !allowed {
                return Some(
                    Hit::measured(1.0, 0.0, format!("link to {host}, which is not allowed"))
                        .token(ctx, token),
                );
            }
            if !self.min_user_age.is_zero() && !allowed {
                let age_ms = ctx
                    .history
                    .first_seen_ms
                    .map_or(0, |first| ctx.now_ms - first);
                if age_ms < millis(self.min_user_age) {
                    let age = Duration::from_millis(age_ms.max(0).unsigned_abs());
                    return Some(
                        Hit::measured(
                            age.as_secs_f64(),
                            self.min_user_age.as_secs_f64(),
                            format!("link from a user first seen {}s ago", age.as_secs()),
                        )
                        .token(ctx, token),
                    );
                }
            }
            if self.max_repeats > 0 {
                let canonical = canonical_link(link);
                let since = ctx.now_ms.saturating_sub(millis(self.repeat_window));
                let earlier = ctx
                    .history
                    .recent
                    .iter()
                    .filter(|m| m.at_ms >= since)
                    .filter(|m| m.text.split(' ').any(|w| canonical_link(w) == canonical))
                    .count();
                let times = earlier as u32 + 1;
                if times >= self.max_repeats {
                    return Some(
                        Hit::measured(
                            f64::from(times),
                            f64::from(self.max_repeats),
                            format!(
                                "the same link {times} times in {}s",
                                self.repeat_window.as_secs()
                            ),
                        )
                        .token(ctx, token),
                    );
                }
            }
        }
        None
    }
}

/// Shouting.
#[derive(Debug)]
pub struct CapsCheck {
    /// Highest allowed share of capitals.
    pub max_ratio: f64,
    /// Fewer letters are never checked.
    pub min_letters: u32,
}

impl CapsCheck {
    fn check(&self, ctx: &Context<'_>) -> Option<Hit> {
        let stats = &ctx.normalized.stats;
        if stats.letters < self.min_letters.max(1) {
            return None;
        }
        let ratio = f64::from(stats.uppercase) / f64::from(stats.letters);
        (ratio > self.max_ratio).then(|| {
            Hit::measured(
                ratio,
                self.max_ratio,
                format!(
                    "{} of {} letters are capitals",
                    stats.uppercase, stats.letters
                ),
            )
        })
    }
}

/// Emote walls.
#[derive(Debug)]
pub struct EmoteFloodCheck {
    /// Most emotes (0 = no limit).
    pub max_emotes: u32,
    /// Highest share of emotes among tokens (0 = no limit).
    pub max_ratio: f64,
    /// Fewer tokens are never checked by ratio.
    pub min_tokens: u32,
}

impl EmoteFloodCheck {
    fn check(&self, ctx: &Context<'_>) -> Option<Hit> {
        let emotes = ctx.normalized.stats.emotes;
        if self.max_emotes > 0 && emotes > self.max_emotes {
            return Some(Hit::measured(
                f64::from(emotes),
                f64::from(self.max_emotes),
                format!("{emotes} emotes"),
            ));
        }
        let tokens = ctx.normalized.tokens.len() as u32;
        if self.max_ratio > 0.0 && tokens >= self.min_tokens.max(1) {
            let ratio = f64::from(emotes) / f64::from(tokens);
            if ratio > self.max_ratio {
                return Some(Hit::measured(
                    ratio,
                    self.max_ratio,
                    format!("{emotes} of {tokens} tokens are emotes"),
                ));
            }
        }
        None
    }
}

/// Floods of unusual characters.
#[derive(Debug)]
pub struct CharFloodCheck {
    /// Most non-ASCII characters (0 = no limit).
    pub max_non_ascii: u32,
    /// Most punctuation characters (0 = no limit).
    pub max_punctuation: u32,
    /// Most combining marks on one character (0 = no limit).
    pub max_combining_marks: u32,
}

impl CharFloodCheck {
    fn check(&self, ctx: &Context<'_>) -> Option<Hit> {
        let stats = &ctx.normalized.stats;
        let limits = [
            (self.max_non_ascii, stats.non_ascii, "non-ASCII characters"),
            (
                self.max_punctuation,
                stats.punctuation,
                "punctuation characters",
            ),
            (
                self.max_combining_marks,
                stats.max_combining_run,
                "combining marks on one character",
            ),
        ];
        limits
            .into_iter()
            .find(|&(limit, count, _)| limit > 0 && count > limit)
            .map(|(limit, count, what)| {
                Hit::measured(
                    f64::from(count),
                    f64::from(limit),
                    format!("{count} {what}"),
                )
            })
    }
}

/// Whether a message has anything but emotes: emote-only lines are chat's applause, left to
/// the emote rules rather than counted as repetition.
fn has_content(ctx: &Context<'_>) -> bool {
    ctx.normalized
        .tokens
        .iter()
        .any(|t| t.kind != TokenKind::Emote)
}

/// An earlier message a new one is compared with: its id, text and author.
type Candidate<'m> = (&'m str, &'m str, &'m str);

/// The first candidate at least `threshold` similar to the profiled text, with its score;
/// candidates whose length alone rules them out are not compared.
fn first_similar<'m>(
    profile: &Profile<'_>,
    threshold: f64,
    candidates: impl Iterator<Item = Candidate<'m>>,
) -> Option<(f64, Candidate<'m>)> {
    candidates
        .filter(|(_, text, _)| profile.may_reach(text, threshold))
        .find_map(|candidate| {
            let score = profile.similarity(candidate.1);
            (score >= threshold).then_some((score, candidate))
        })
}

fn similar_hit(score: f64, threshold: f64, detail: String, id: &str, text: &str) -> Hit {
    let mut hit = Hit::measured(score, threshold, detail);
    hit.evidence.similar_message_id = id.to_owned();
    hit.evidence.similar_text = text.to_owned();
    hit
}

/// Repeating one's own recent messages.
#[derive(Debug)]
pub struct RepetitionCheck {
    /// Similarity at or above which two messages are the same.
    pub min_similarity: f64,
    /// How many of the user's recent messages to compare with.
    pub last_messages: usize,
    /// Only messages this recent count.
    pub window: Duration,
    /// Shorter messages (characters of the normalised text) are never checked.
    pub min_length: usize,
}

impl RepetitionCheck {
    fn check(&self, ctx: &Context<'_>) -> Option<Hit> {
        // The part user state remembers, so a long message compares like with like.
        let text = remembered_text(ctx.normalized.text.as_str());
        // Bytes bound characters from above: short messages stop here without counting.
        if text.len() < self.min_length || !has_content(ctx) {
            return None;
        }
        let profile = Profile::new(text);
        if profile.chars() < self.min_length {
            return None;
        }
        let since = ctx.now_ms.saturating_sub(millis(self.window));
        let candidates = ctx
            .history
            .recent
            .iter()
            .rev()
            .take(self.last_messages)
            .filter(|m| m.at_ms >= since)
            .map(|m| (m.message_id.as_str(), m.text.as_str(), ""));
        let (score, (id, earlier, _)) = first_similar(&profile, self.min_similarity, candidates)?;
        Some(similar_hit(
            score,
            self.min_similarity,
            format!("{:.0}% similar to the user's message {id}", score * 100.0),
            id,
            earlier,
        ))
    }
}

/// Copies of other users' recent messages.
#[derive(Debug)]
pub struct CopypastaCheck {
    /// Shorter messages are never checked.
    pub min_length: usize,
    /// Similarity at or above which a message is a copy.
    pub min_similarity: f64,
    /// How many recent messages from others to compare with.
    pub last_messages: usize,
}

impl CopypastaCheck {
    fn check(&self, ctx: &Context<'_>) -> Option<Hit> {
        // The part user state remembers, so a long message compares like with like.
        let text = remembered_text(ctx.normalized.text.as_str());
        // Bytes bound characters from above: most messages are short and stop here.
        if text.len() < self.min_length.max(1) {
            return None;
        }
        let profile = Profile::new(text);
        if profile.chars() < self.min_length.max(1) {
            return None;
        }
        let candidates = ctx
            .channel_recent
            .iter()
            .rev()
            .take(self.last_messages)
            .filter(|m| m.text.len() >= self.min_length)
            .map(|m| (m.message_id.as_str(), m.text.as_str(), m.user_id.as_str()));
        let (score, (id, earlier, user)) =
            first_similar(&profile, self.min_similarity, candidates)?;
        Some(similar_hit(
            score,
            self.min_similarity,
            format!("{:.0}% similar to {user}'s message {id}", score * 100.0),
            id,
            earlier,
        ))
    }
}

/// Message rate.
#[derive(Debug)]
pub struct RateCheck {
    /// More messages than this within `window` fire.
    pub max_messages: u32,
    /// The window.
    pub window: Duration,
}

impl RateCheck {
    fn check(&self, ctx: &Context<'_>) -> Option<Hit> {
        let since = ctx.now_ms.saturating_sub(millis(self.window));
        let earlier = ctx
            .history
            .message_times_ms
            .iter()
            .filter(|&&t| t > since)
            .count();
        let count = earlier as u32 + 1;
        (count > self.max_messages).then(|| {
            Hit::measured(
                f64::from(count),
                f64::from(self.max_messages),
                format!("{count} messages in {:.1}s", self.window.as_secs_f64()),
            )
        })
    }
}

/// Low word variety.
#[derive(Debug)]
pub struct UniqueWordsCheck {
    /// Fires at or below this share of distinct words.
    pub max_ratio: f64,
    /// Fewer words are never checked.
    pub min_words: u32,
}

impl UniqueWordsCheck {
    fn check(&self, ctx: &Context<'_>) -> Option<Hit> {
        let words: Vec<&str> = ctx
            .normalized
            .words()
            .map(|t| ctx.normalized.token_text(t))
            .collect();
        let total = words.len() as u32;
        if total < self.min_words {
            return None;
        }
        let distinct = words.iter().collect::<HashSet<_>>().len() as u32;
        let ratio = f64::from(distinct) / f64::from(total);
        (ratio <= self.max_ratio).then(|| {
            Hit::measured(
                ratio,
                self.max_ratio,
                format!("{distinct} distinct of {total} words"),
            )
        })
    }
}

/// Very long words.
#[derive(Debug)]
pub struct LongWordCheck {
    /// Longest allowed word, in characters as typed.
    pub max_length: u32,
}

impl LongWordCheck {
    fn check(&self, ctx: &Context<'_>) -> Option<Hit> {
        ctx.normalized
            .tokens
            .iter()
            .filter(|t| t.kind == TokenKind::Word)
            .map(|t| (t, t.original.end - t.original.start))
            .find(|&(_, length)| length > self.max_length)
            .map(|(token, length)| {
                Hit::measured(
                    f64::from(length),
                    f64::from(self.max_length),
                    format!("a word of {length} characters"),
                )
                .token(ctx, token)
            })
    }
}

/// Mention spam.
#[derive(Debug)]
pub struct MentionsCheck {
    /// Most distinct mentions.
    pub max_mentions: u32,
}

impl MentionsCheck {
    fn check(&self, ctx: &Context<'_>) -> Option<Hit> {
        let mentioned: HashSet<&str> = ctx
            .normalized
            .tokens
            .iter()
            .filter(|t| t.kind == TokenKind::Mention)
            .map(|t| ctx.normalized.token_text(t))
            .collect();
        let count = mentioned.len() as u32;
        (count > self.max_mentions).then(|| {
            Hit::measured(
                f64::from(count),
                f64::from(self.max_mentions),
                format!("{count} users mentioned"),
            )
        })
    }
}
