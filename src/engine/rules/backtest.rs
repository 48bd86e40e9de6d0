//! Trying one rule on a channel's remembered messages before it is saved: "over this channel's
//! last N messages this rule would have fired on these".
//!
//! The user state keeps each channel's recent messages as their normalised text (what rules and
//! models see), with the author and the time, not the original text, the author's roles or the
//! author's history at that moment. So a backtest can run the rules that look at one message's
//! words alone — phrases, profanity, links by domain, emote floods, word variety, long words,
//! mentions — and says plainly that it cannot run the others, rather than answering with
//! numbers that mean nothing.

use super::checks::Check;
use super::{Context, FailedRule, Rule, RuleSet};
use crate::domain::{ChannelMessage, ChannelWindow, Reason, UserHistory};
use crate::engine::normalize::normalize;

/// Where a rule fired in a backtest.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestHit {
    /// The message's index in the messages given to [`RuleSet::backtest`].
    pub index: usize,
    /// What the rule said about it.
    pub reason: Reason,
}

/// What one rule did over a channel's remembered messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backtest {
    /// The messages it fired on, oldest first.
    pub hits: Vec<BacktestHit>,
    /// Messages on which the rule panicked (skipped, as in live moderation).
    pub failed: Vec<(usize, FailedRule)>,
}

/// Why a rule cannot be backtested; the text completes "this rule cannot be backtested: ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotBacktestable(pub String);

impl Check {
    /// Why this check cannot run on remembered (normalised) messages, if it cannot.
    fn backtest_limit(&self) -> Option<&'static str> {
        match self {
            Check::Link(link) if !link.min_user_age.is_zero() || link.max_repeats > 0 => Some(
                "its user-age and repeat limits need each author's history at the time, which \
                 a backtest does not rebuild (a link rule with only allowed and denied domains \
                 can be backtested)",
            ),
            Check::Repetition(_) | Check::Copypasta(_) | Check::Rate(_) => Some(
                "it compares a message with the author's or the channel's earlier messages as \
                 they were at the time, which a backtest does not rebuild",
            ),
            Check::Caps(_) => Some(
                "it counts capital letters, and the channel's history keeps messages folded to \
                 lower case",
            ),
            Check::CharFlood(_) => Some(
                "it counts unusual characters, and the channel's history keeps messages folded \
                 to plain letters",
            ),
            _ => None,
        }
    }
}

impl RuleSet {
    /// Runs the rule `rule_id` alone over `messages` (a channel's remembered messages), whatever
    /// its mode, as if each message had just been said by a user with no history: the text is
    /// normalised again with `channel`'s emotes (normalising is idempotent on its own output)
    /// and the rule checks it. Exempt roles are not applied (the history keeps no roles).
    pub fn backtest(
        &self,
        rule_id: &str,
        channel: &str,
        messages: &[ChannelMessage],
    ) -> Result<Backtest, NotBacktestable> {
        let rule: &Rule = self
            .rules
            .iter()
            .find(|rule| rule.id == rule_id)
            .ok_or_else(|| NotBacktestable(format!("there is no rule \"{rule_id}\"")))?;
        if !rule.channels.is_empty() && !rule.channels.iter().any(|c| c == channel) {
            return Err(NotBacktestable(format!(
                "it applies only to the channels {}, not to \"{channel}\"",
                rule.channels.join(", ")
            )));
        }
        if let Some(limit) = rule.check.backtest_limit() {
            return Err(NotBacktestable(limit.to_owned()));
        }
        let policy = self.policy(channel);
        let history = UserHistory::default();
        let channel_recent = ChannelWindow::default();
        let mut backtest = Backtest::default();
        for (index, message) in messages.iter().enumerate() {
            let normalized = normalize(&message.text, &policy.emotes);
            let ctx = Context {
                normalized: &normalized,
                history: &history,
                channel_recent: &channel_recent,
                now_ms: message.at_ms,
            };
            let analysis = std::cell::OnceCell::new();
            match self.run(rule, policy, &ctx, false, history.reputation(), &analysis) {
                Ok(Some(reason)) => backtest.hits.push(BacktestHit { index, reason }),
                Ok(None) => {}
                Err(failed) => backtest.failed.push((index, failed)),
            }
        }
        Ok(backtest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule set of the rules tests' policy and `rules`.
    fn set(rules: &str) -> RuleSet {
        let text = format!("{}\n{rules}", crate::engine::rules::tests::POLICY);
        RuleSet::parse(&text, "test").unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn said(user: &str, text: &str, at_ms: i64) -> ChannelMessage {
        ChannelMessage {
            user_id: user.to_owned(),
            message_id: format!("m{at_ms}"),
            // As the state remembers it: the normalised text.
            text: normalize(text, &Default::default()).text,
            at_ms,
        }
    }

    #[test]
    fn a_phrase_rule_fires_on_the_remembered_messages_it_matches_whatever_its_mode() {
        let rules = set(r#"
[[rule]]
id = "pitch"
kind = "phrase"
mode = "disabled"
action = "hide"
[rule.params]
phrases = ["free followers"]
"#);
        let history = vec![
            said("a", "hello chat", 1),
            said("b", "FREE F0LL0WERS at my site", 2),
            said("c", "free followers? no thanks", 3),
            said("d", "followers are free to leave", 4),
        ];
        let backtest = rules
            .backtest("pitch", "dgg", &history)
            .expect("backtestable");
        let hit: Vec<usize> = backtest.hits.iter().map(|h| h.index).collect();
        assert_eq!(hit, [1, 2], "{backtest:?}");
        assert_eq!(backtest.hits[0].reason.rule_id, "pitch");
        assert!(backtest.failed.is_empty());
    }

    #[test]
    fn rules_that_need_what_the_history_does_not_keep_say_why() {
        let rules = set(r#"
[[rule]]
id = "shout"
kind = "caps"
action = "hide"
[rule.params]
max_ratio = 0.5

[[rule]]
id = "again"
kind = "repetition"
action = "warn"
[rule.params]
min_similarity = 0.9

[[rule]]
id = "new-links"
kind = "link"
action = "hold"
[rule.params]
min_user_age_secs = 600

[[rule]]
id = "bad-domains"
kind = "link"
action = "hide"
[rule.params]
deny_domains = ["grabify.link"]

[[rule]]
id = "elsewhere"
kind = "phrase"
action = "hide"
channels = ["strims"]
[rule.params]
phrases = ["x"]
"#);
        let history = vec![said("a", "see https://grabify.link/abc", 1)];
        for (id, why) in [
            ("shout", "capital letters"),
            ("again", "earlier messages"),
            ("new-links", "user-age"),
            ("elsewhere", "only to the channels strims"),
            ("missing", "no rule"),
        ] {
            let error = rules.backtest(id, "dgg", &history).unwrap_err();
            assert!(error.0.contains(why), "{id}: {error}");
        }
        let domains = rules.backtest("bad-domains", "dgg", &history).unwrap();
        assert_eq!(domains.hits.len(), 1, "{domains:?}");
    }
}
