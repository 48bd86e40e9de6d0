//! Table-driven tests for every rule kind: text in, hit or no hit, evidence out.

use std::sync::Arc;
use std::time::SystemTime;

use super::*;
use crate::domain::{ChannelMessage, ChannelWindow, RecentMessage};
use crate::engine::normalize::normalize;

pub(super) const POLICY: &str = r#"
[policy]
shadow = false
exempt_roles = ["admin", "moderator"]
emotes = ["PepeLaugh", "OMEGALUL", "Kappa", "PogU", "LUL"]
[policy.escalation]
warn_first = false
first_timeout_secs = 60
max_timeout_secs = 86400
ban_after = 0
heat_half_life_secs = 3600
"#;

/// A rule set of the policy above plus one rule (TOML of `[[rule]]`'s body, without id).
fn one_rule(rule: &str) -> RuleSet {
    let text = format!("{POLICY}\n[[rule]]\nid = \"r\"\naction = \"hide\"\n{rule}\n");
    RuleSet::parse(&text, "test").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn message(text: &str) -> ChatMessage {
    ChatMessage {
        channel: "destinygg".into(),
        message_id: "now".into(),
        user_id: "alice".into(),
        nick: "alice".into(),
        roles: vec![],
        text: text.into(),
        sent_at: SystemTime::UNIX_EPOCH,
    }
}

const NOW: i64 = 1_000_000_000;

fn recent(texts: &[&str]) -> Vec<Arc<RecentMessage>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Arc::new(RecentMessage {
                message_id: format!("m{i}"),
                text: normalize(t, &EmoteSet::default()).text,
                at_ms: NOW - 1000 * (texts.len() - i) as i64,
            })
        })
        .collect()
}

fn evaluate(
    set: &RuleSet,
    text: &str,
    history: &UserHistory,
    channel: &ChannelWindow,
) -> Option<Reason> {
    let message = message(text);
    let policy = set.policy(&message.channel);
    let normalized = normalize(text, &policy.emotes);
    let ctx = Context {
        normalized: &normalized,
        history,
        channel_recent: channel,
        now_ms: NOW,
    };
    let evaluation = set.evaluate(&message, policy, &ctx);
    assert_eq!(evaluation.failed, [], "no rule panics on {text:?}");
    let mut reasons = evaluation.reasons;
    assert!(
        reasons.len() <= 1,
        "one rule, at most one reason: {reasons:?}"
    );
    reasons.pop()
}

/// One row: the text, and `None` (must not fire) or the original text the evidence must
/// show (`""` for rules whose evidence is a measure rather than a span).
fn check(set: &RuleSet, text: &str, expected: Option<&str>) {
    check_with(
        set,
        text,
        &UserHistory::default(),
        &ChannelWindow::default(),
        expected,
    );
}

fn check_with(
    set: &RuleSet,
    text: &str,
    history: &UserHistory,
    channel: &ChannelWindow,
    expected: Option<&str>,
) {
    let got = evaluate(set, text, history, channel);
    match (expected, got) {
        (None, None) => {}
        (None, Some(reason)) => panic!("{text:?} should not fire, got {reason:#?}"),
        (Some(_), None) => panic!("{text:?} should fire"),
        (Some(shown), Some(reason)) => {
            assert_eq!(reason.rule_id, "r");
            assert_eq!(
                reason.evidence.matched_text, shown,
                "evidence of {text:?}: {reason:#?}"
            );
            if let Some(span) = reason.evidence.span {
                let typed: String = text
                    .chars()
                    .skip(span.start as usize)
                    .take((span.end - span.start) as usize)
                    .collect();
                assert_eq!(typed, shown, "the span indexes the original text");
            }
        }
    }
}

#[test]
fn phrases_literal_with_evasions() {
    let set = one_rule("kind = \"phrase\"\n[rule.params]\nphrases = [\"free nitro\", \"scam\"]");
    let cases: &[(&str, Option<&str>)] = &[
        ("get free nitro now", Some("free nitro")),
        ("FREE   NITRO!!", Some("FREE   NITRO")),
        ("frеe nitrо", Some("frеe nitrо")), // Cyrillic е and о
        (
            "fr\u{200b}ee ni\u{200d}tro",
            Some("fr\u{200b}ee ni\u{200d}tro"),
        ), // zero-width
        ("fr3e n1tr0", Some("fr3e n1tr0")), // leet
        ("ｆｒｅｅ ｎｉｔｒｏ", Some("ｆｒｅｅ ｎｉｔｒｏ")), // fullwidth
        ("total s c a m here", Some("s c a m")), // spaced letters
        ("freenitro", None),
        ("carefree nitrogen", None),
        ("scampi for dinner", None), // Scunthorpe-style substring
        ("the 2 scammers", None),
    ];
    for &(text, expected) in cases {
        check(&set, text, expected);
    }
}

#[test]
fn phrases_wildcard_anywhere_and_regex() {
    let wildcard = one_rule(
        "kind = \"phrase\"\n[rule.params]\nphrases = [\"viewbot*\", \"b?y followers\"]\nsyntax = \"wildcard\"",
    );
    check(&wildcard, "cheap viewbotting here", Some("viewbotting"));
    check(&wildcard, "buy followers", Some("buy followers"));
    check(&wildcard, "bay followers", Some("bay followers"));
    check(&wildcard, "aviewbot", None);

    let anywhere =
        one_rule("kind = \"phrase\"\n[rule.params]\nphrases = [\"nitro\"]\nanywhere = true");
    check(&anywhere, "freenitrogift", Some("nitro"));

    let regex = one_rule(
        "kind = \"phrase\"\n[rule.params]\nphrases = ['\\bdiscord\\.gg/\\w+']\nsyntax = \"regex\"",
    );
    check(
        &regex,
        "join discord.gg/abc123 now",
        Some("discord.gg/abc123"),
    );
    check(&regex, "discord is nice", None);
}

/// A regex phrase rule of `phrases` (TOML literal strings, so no escaping).
fn regex_rule(phrases: &[&str]) -> RuleSet {
    let list: Vec<String> = phrases.iter().map(|p| format!("'{p}'")).collect();
    one_rule(&format!(
        "kind = \"phrase\"\n[rule.params]\nphrases = [{}]\nsyntax = \"regex\"",
        list.join(", ")
    ))
}

/// Regex phrases with groups of their own: each row is the phrases, a text, and `None` (must
/// not fire) or the original text shown and the phrase the evidence must name. Before phrases
/// were compiled as separate patterns, the first row panicked (group 2 of `(p0)|(p1)` was the
/// user's own group, so the index of `spamword` was 2 of 2 phrases) and the named rows failed
/// to compile.
#[test]
fn regex_phrases_with_their_own_groups_name_the_phrase_that_matched() {
    type Row<'a> = (&'a [&'a str], &'a str, Option<(&'a str, &'a str)>);
    let rows: &[Row<'_>] = &[
        // Capture groups before the phrase that matches.
        (
            &["(free|cheap) nitro", "spamword"],
            "buy SPAMWORD now",
            Some(("SPAMWORD", "spamword")),
        ),
        (
            &["(free|cheap) nitro", "spamword"],
            "cheap nitro here",
            Some(("cheap nitro", "(free|cheap) nitro")),
        ),
        (
            &["(free|cheap) nitro", "spamword"],
            "free nitrogen",
            Some(("free nitro", "(free|cheap) nitro")),
        ),
        (&["(free|cheap) nitro", "spamword"], "expensive nitro", None),
        (
            &["(a)(b)(c)(d)", "(q)", "(f)(g)", "last"],
            "the last one",
            Some(("last", "last")),
        ),
        // Named groups, the same names in two phrases, both syntaxes.
        (
            &["(?P<w>free) (?P<x>nitro)", "(?P<w>spam)(?P<x>word)"],
            "spamword",
            Some(("spamword", "(?P<w>spam)(?P<x>word)")),
        ),
        (
            &["(?<w>scam)", "(?<w>fraud)", "(?P<w>con)"],
            "what a fraud",
            Some(("fraud", "(?<w>fraud)")),
        ),
        // Nested alternations and groups, non-capturing groups, empty groups.
        (
            &["((a|b)(c|(d|e)))+z", "q(r(s(t)))"],
            "say qrst",
            Some(("qrst", "q(r(s(t)))")),
        ),
        (
            &["((a|b)(c|(d|e)))+z", "q(r(s(t)))"],
            "bdacz",
            Some(("bdacz", "((a|b)(c|(d|e)))+z")),
        ),
        (
            &["(?:foo|bar)baz", "(x)(?:y)(z)"],
            "xyz",
            Some(("xyz", "(x)(?:y)(z)")),
        ),
        (
            &["()spam", "(|x)word"],
            "a word",
            Some(("word", "(|x)word")),
        ),
        // Inline flags stay inside their phrase.
        (
            &["(?-i:Exact)", "(loose)"],
            "exact LOOSE",
            Some(("LOOSE", "(loose)")),
        ),
        // The earliest match wins whatever the order; at one position, the first phrase.
        (
            &["(late)", "early"],
            "early then late",
            Some(("early", "early")),
        ),
        (
            &["spam\\w*", "(spam)"],
            "spamword",
            Some(("spamword", "spam\\w*")),
        ),
        (
            &["(spam)", "spam\\w*"],
            "spamword",
            Some(("spam", "(spam)")),
        ),
        (&["(a)(b)", "c(d)"], "nothing here", None),
    ];
    for &(phrases, text, expected) in rows {
        let set = regex_rule(phrases);
        check(&set, text, expected.map(|(shown, _)| shown));
        if let Some((_, phrase)) = expected {
            let reason = evaluate(
                &set,
                text,
                &UserHistory::default(),
                &ChannelWindow::default(),
            )
            .expect("it fired");
            assert_eq!(reason.evidence.pattern, phrase, "{phrases:?} on {text:?}");
            assert!(reason.evidence.detail.contains(phrase), "{reason:#?}");
        }
    }
}

/// What the regex engine cannot do is refused when the rule is saved, naming the phrase.
#[test]
fn regex_phrases_the_engine_cannot_run_are_refused_with_the_reason() {
    let rows: &[(&str, &str, &str)] = &[
        ("(?=nitro)free", "phrases[0]", "look-around"),
        ("(?<=free) nitro", "phrases[0]", "look-around"),
        ("(?!x)y", "phrases[0]", "look-around"),
        ("(unclosed", "phrases[0]", "unclosed group"),
        ("\\1", "phrases[0]", "backreferences are not supported"),
        (
            "(?P<w>a)(?P<w>b)",
            "phrases[0]",
            "duplicate capture group name",
        ),
        ("a{1000}{1000}", "phrases[0]", "more than the limit of"),
        ("a*", "phrases[0]", "without any text"),
        ("^", "phrases[0]", "without any text"),
        ("\\b", "phrases[0]", "without any text"),
        ("spam|", "phrases[0]", "without any text"),
        ("(free)?", "phrases[0]", "without any text"),
    ];
    for &(phrase, place, reason) in rows {
        let text = format!(
            "{POLICY}\n[[rule]]\nid = \"r\"\naction = \"hide\"\nkind = \"phrase\"\n\
             [rule.params]\nphrases = ['ok', '{phrase}']\nsyntax = \"regex\"\n"
        );
        let text = text.replace("['ok', ", "[");
        let error = RuleSet::parse(&text, "test").expect_err(phrase);
        assert!(
            error.place.ends_with(&format!("params.{place}")),
            "{error:?}"
        );
        assert!(error.message.contains(reason), "{phrase}: {error:?}");
        assert!(!error.message.contains('\n'), "one line: {error:?}");
    }
}

#[test]
fn profanity_and_its_false_positives() {
    let set = one_rule("kind = \"profanity\"\n[rule.params]\nmin_severity = \"moderate\"");
    let hits = ["fuck you", "f u c k you", "fuuuuuck you", "you are a b1tch"];
    for text in hits {
        assert!(
            evaluate(
                &set,
                text,
                &UserHistory::default(),
                &ChannelWindow::default()
            )
            .is_some(),
            "{text:?} should fire"
        );
    }
    let clean = [
        "Scunthorpe United won",
        "the assassin's class",
        "I am gay and proud",
        "my muslim neighbours are lovely",
        "a black cat crossed the road",
        "PogU PogU OMEGALUL",
        "3 o'clock in 2024",
    ];
    for text in clean {
        check(&set, text, None);
    }
    let reason = evaluate(
        &set,
        "well fuck this",
        &UserHistory::default(),
        &ChannelWindow::default(),
    )
    .unwrap();
    assert_eq!(reason.evidence.matched_text, "fuck");
}

#[test]
fn look_alike_domains_and_risky_tlds() {
    let lookalike = one_rule(
        "kind = \"link\"\n[rule.params]\nlookalike_brands = [\"Discord\", \"steamcommunity\"]\n\
         allow_domains = [\"discord.com\", \"discord.gg\", \"steamcommunity.com\"]",
    );
    check(
        &lookalike,
        "free nitro https://dlscord-gift.com/a1",
        Some("https://dlscord-gift.com/a1"),
    );
    check(
        &lookalike,
        "claim it: steamcommunnity.ru/gift",
        Some("steamcommunnity.ru/gift"),
    );
    check(
        &lookalike,
        "claim: dlscord-gift[.]com/x",
        Some("dlscord-gift[.]com/x"),
    );
    check(&lookalike, "join discord.gg/destiny", None);
    check(&lookalike, "https://steamcommunity.com/id/me", None);
    check(&lookalike, "discogs.com has the record", None);
    let set = one_rule("kind = \"link\"\n[rule.params]\nlookalike_brands = [\"discord\"]");
    let message = message("go to discord-gift.com now");
    let policy = set.policy(&message.channel);
    let normalized = normalize(&message.text, &policy.emotes);
    let ctx = Context {
        normalized: &normalized,
        history: &UserHistory::default(),
        channel_recent: &ChannelWindow::default(),
        now_ms: NOW,
    };
    let reasons = set.evaluate(&message, policy, &ctx).reasons;
    assert_eq!(reasons[0].evidence.pattern, "discord");
    assert!(
        reasons[0].evidence.detail.contains("poses as discord"),
        "{:?}",
        reasons[0].evidence
    );

    let tlds = one_rule("kind = \"link\"\n[rule.params]\ndeny_tlds = [\".xyz\", \"TOP\"]");
    check(&tlds, "prizes at win-big.xyz", Some("win-big.xyz"));
    check(
        &tlds,
        "https://news.example.top/x",
        Some("https://news.example.top/x"),
    );
    check(&tlds, "https://xyz.example.com", None);
}

#[test]
fn a_channel_trusts_its_own_domains_in_every_link_rule() {
    let rules = "[[rule]]\nid = \"r\"\naction = \"hide\"\nkind = \"link\"\n\
                 [rule.params]\nallow_list_only = true\nallow_domains = [\"youtube.com\"]\n\
                 deny_domains = [\"grabify.link\"]\nmin_user_age_secs = 600\n\
                 lookalike_brands = [\"destiny\"]\ndeny_tlds = [\"gg\"]\n";
    let own = format!(
        "{POLICY}\n[channel.destinygg.links]\n\
         allow_domains = [\"Destiny.gg\", \"clips.example.com\", \"grabify.link\"]\n{rules}"
    );
    let set = RuleSet::parse(&own, "test").unwrap();
    let elsewhere = RuleSet::parse(&format!("{POLICY}\n{rules}"), "test").unwrap();
    let regular = UserHistory {
        first_seen_ms: Some(NOW - 3_600_000),
        ..UserHistory::default()
    };
    let newcomer = UserHistory {
        first_seen_ms: Some(NOW - 60_000),
        ..UserHistory::default()
    };
    let quiet = ChannelWindow::default();
    // In destinygg (the test message's channel) its domains pass the allow-list-only, TLD,
    // look-alike and new-user checks, subdomains included ...
    for text in [
        "https://destiny.gg/bigscreen",
        "www.destiny.gg/embed",
        "https://vods.destiny.gg/x",
        "clips.example.com/abc",
    ] {
        check_with(&set, text, &regular, &quiet, None);
        check_with(&set, text, &newcomer, &quiet, None);
        check_with(&elsewhere, text, &regular, &quiet, Some(text));
    }
    // ... but only they: their parent, a look-alike and other domains still fire,
    check_with(
        &set,
        "example.com/abc",
        &regular,
        &quiet,
        Some("example.com/abc"),
    );
    check_with(
        &set,
        "destiny-gg.ru/free",
        &regular,
        &quiet,
        Some("destiny-gg.ru/free"),
    );
    // and a rule's own deny list still wins.
    check_with(
        &set,
        "grabify.link/x",
        &regular,
        &quiet,
        Some("grabify.link/x"),
    );
    assert_eq!(
        set.policy("destinygg").allow_domains,
        ["destiny.gg", "clips.example.com", "grabify.link"]
    );
    assert!(set.policy("other").allow_domains.is_empty());
}

#[test]
fn links() {
    let deny = one_rule("kind = \"link\"\n[rule.params]\ndeny_domains = [\"grabify.link\"]");
    check(
        &deny,
        "look https://grabify.link/XYZ",
        Some("https://grabify.link/XYZ"),
    );
    check(
        &deny,
        "look at sub.grabify.link/x",
        Some("sub.grabify.link/x"),
    );
    check(&deny, "notgrabify.link/x is different", None);
    check(&deny, "https://youtube.com/watch?v=1", None);

    let only = one_rule(
        "kind = \"link\"\n[rule.params]\nallow_domains = [\"youtube.com\"]\nallow_list_only = true",
    );
    check(&only, "https://www.youtube.com/watch?v=1", None);
    check(&only, "https://m.youtube.com/x", None);
    check(&only, "visit example.com/free", Some("example.com/free"));
    check(&only, "e.g. this is fine", None);

    let age = one_rule("kind = \"link\"\n[rule.params]\nmin_user_age_secs = 600");
    let newcomer = UserHistory {
        first_seen_ms: Some(NOW - 60_000),
        ..UserHistory::default()
    };
    let regular = UserHistory {
        first_seen_ms: Some(NOW - 3_600_000),
        ..UserHistory::default()
    };
    check_with(
        &age,
        "https://example.com",
        &newcomer,
        &ChannelWindow::default(),
        Some("https://example.com"),
    );
    check_with(
        &age,
        "https://example.com",
        &UserHistory::default(),
        &ChannelWindow::default(),
        Some("https://example.com"),
    );
    check_with(
        &age,
        "https://example.com",
        &regular,
        &ChannelWindow::default(),
        None,
    );

    let repeats =
        one_rule("kind = \"link\"\n[rule.params]\nmax_repeats = 3\nrepeat_window_secs = 600");
    let twice = UserHistory {
        recent: recent(&["check https://example.com/a", "hello", "www.example.com/a/"]),
        ..UserHistory::default()
    };
    let once = UserHistory {
        recent: recent(&["check https://example.com/a", "https://example.com/b"]),
        ..UserHistory::default()
    };
    check_with(
        &repeats,
        "http://example.com/a",
        &twice,
        &ChannelWindow::default(),
        Some("http://example.com/a"),
    );
    check_with(
        &repeats,
        "http://example.com/a",
        &once,
        &ChannelWindow::default(),
        None,
    );
}

#[test]
fn caps_ignores_emotes_and_short_messages() {
    let set = one_rule("kind = \"caps\"\n[rule.params]\nmax_ratio = 0.7\nmin_letters = 10");
    check(&set, "WHY IS NOBODY TALKING ABOUT THIS", Some(""));
    check(&set, "why is nobody talking about this", None);
    check(&set, "PogU PogU OMEGALUL OMEGALUL PepeLaugh", None); // emote-only hype
    check(&set, "OMG LOL", None); // too short
    check(&set, "NASA and the FBI are both agencies", None);
}

#[test]
fn emote_flood() {
    let count = one_rule("kind = \"emote_flood\"\n[rule.params]\nmax_emotes = 4");
    check(
        &count,
        "PepeLaugh PepeLaugh PepeLaugh PepeLaugh PepeLaugh",
        Some(""),
    );
    check(&count, "PepeLaugh PepeLaugh PepeLaugh PepeLaugh", None);
    check(
        &count,
        "pepelaugh pepelaugh pepelaugh pepelaugh pepelaugh",
        None,
    ); // emotes are case-sensitive
    let ratio = one_rule("kind = \"emote_flood\"\n[rule.params]\nmax_ratio = 0.5\nmin_tokens = 4");
    check(&ratio, "LUL LUL LUL LUL that was funny", Some(""));
    check(&ratio, "LUL that was really funny", None);
}

#[test]
fn char_floods_and_zalgo() {
    let non_ascii = one_rule("kind = \"char_flood\"\n[rule.params]\nmax_non_ascii = 20");
    check(&non_ascii, &"█".repeat(21), Some(""));
    check(&non_ascii, "café crème brûlée à la carte", None);
    let punctuation = one_rule("kind = \"char_flood\"\n[rule.params]\nmax_punctuation = 10");
    check(&punctuation, "what?!?!?!?!?!?!?!?!", Some(""));
    check(&punctuation, "what?! really?!", None);
    let zalgo = one_rule("kind = \"char_flood\"\n[rule.params]\nmax_combining_marks = 3");
    check(&zalgo, "h\u{301}\u{302}\u{303}\u{304}\u{305}ello", Some(""));
    check(&zalgo, "crème brûlée", None);
}

#[test]
fn a_long_message_repeated_matches_what_state_remembered_of_it() {
    // User state keeps only the first `REMEMBERED_TEXT_BYTES` of a text; the rule compares
    // the same prefix of the new message, so a flood of a long line is still a repeat.
    let set = one_rule(
        "kind = \"repetition\"\n[rule.params]\nmin_similarity = 0.95\nlast_messages = 3\nmin_length = 8",
    );
    let long = "buy my course at my website ".repeat(200);
    let remembered = crate::domain::remembered_text(&long);
    assert!(remembered.len() <= crate::domain::REMEMBERED_TEXT_BYTES);
    let history = UserHistory {
        recent: recent(&[remembered]),
        ..UserHistory::default()
    };
    check_with(&set, &long, &history, &ChannelWindow::default(), Some(""));
}

#[test]
fn repetition_of_own_messages() {
    let set = one_rule(
        "kind = \"repetition\"\n[rule.params]\nmin_similarity = 0.9\nlast_messages = 3\nmin_length = 8",
    );
    let history = UserHistory {
        recent: recent(&[
            "an old message nobody cares about",
            "buy my course at my website",
            "ok",
        ]),
        ..UserHistory::default()
    };
    check_with(
        &set,
        "buy my course at my website!",
        &history,
        &ChannelWindow::default(),
        Some(""),
    );
    check_with(
        &set,
        "BUY MY COURSE AT MY WEBSITE",
        &history,
        &ChannelWindow::default(),
        Some(""),
    );
    check_with(
        &set,
        "something new entirely here",
        &history,
        &ChannelWindow::default(),
        None,
    );
    check_with(&set, "ok", &history, &ChannelWindow::default(), None); // shorter than min_length
    // Emote-only lines are left to the emote rules.
    let emotes = UserHistory {
        recent: recent(&["PepeLaugh PepeLaugh"]),
        ..UserHistory::default()
    };
    check_with(
        &set,
        "PepeLaugh PepeLaugh",
        &emotes,
        &ChannelWindow::default(),
        None,
    );
    let reason = evaluate(
        &set,
        "buy my course at my website!",
        &history,
        &ChannelWindow::default(),
    )
    .unwrap();
    assert_eq!(reason.evidence.similar_message_id, "m1");
    assert!(reason.score >= 0.9);
}

/// Windows reach back from the message's time without overflowing: a window of any length
/// (`window_secs` is a `u64`) at the earliest time a caller may send (0001-01-01) counts every
/// earlier message (found writing the `fuzzing::rules` target; it panicked in debug builds
/// and, wrapped in release, counted none).
#[test]
fn windows_longer_than_time_itself() {
    const YEAR_ONE_MS: i64 = -62_135_596_800_000;
    let rules = [
        "kind = \"repetition\"\n[rule.params]\nmin_similarity = 0.9\nwindow_secs = 9223372036854775807",
        "kind = \"link\"\n[rule.params]\nmax_repeats = 2\nrepeat_window_secs = 9223372036854775807",
    ];
    let text = "buy my course at bit.ly/course";
    for rule in rules {
        let set = one_rule(rule);
        let message = message(text);
        let policy = set.policy(&message.channel);
        let normalized = normalize(text, &policy.emotes);
        let history = UserHistory {
            recent: vec![Arc::new(RecentMessage {
                message_id: "m0".into(),
                text: normalized.text.clone(),
                at_ms: YEAR_ONE_MS,
            })],
            message_times_ms: vec![YEAR_ONE_MS],
            ..UserHistory::default()
        };
        let ctx = Context {
            normalized: &normalized,
            history: &history,
            channel_recent: &ChannelWindow::default(),
            now_ms: YEAR_ONE_MS,
        };
        let reasons = set.evaluate(&message, policy, &ctx).reasons;
        assert_eq!(reasons.len(), 1, "{rule}: {reasons:?}");
    }
}

#[test]
fn copypasta_across_users() {
    let set = one_rule(
        "kind = \"copypasta\"\n[rule.params]\nmin_length = 40\nmin_similarity = 0.9\nlast_messages = 75",
    );
    let pasta =
        "I'm not even mad, that's amazing. This is the best stream in the history of streams";
    let channel = ChannelWindow::from_messages(vec![ChannelMessage {
        user_id: "raider1".into(),
        message_id: "p1".into(),
        text: normalize(pasta, &EmoteSet::default()).text,
        at_ms: NOW - 500,
    }]);
    check_with(&set, pasta, &UserHistory::default(), &channel, Some(""));
    check_with(
        &set,
        &format!("{pasta}!!"),
        &UserHistory::default(),
        &channel,
        Some(""),
    );
    check_with(&set, "short copy", &UserHistory::default(), &channel, None);
    check_with(
        &set,
        "a completely different long message about the game that was just played",
        &UserHistory::default(),
        &channel,
        None,
    );
    let reason = evaluate(&set, pasta, &UserHistory::default(), &channel).unwrap();
    assert_eq!(reason.evidence.similar_message_id, "p1");
}

#[test]
fn message_rate() {
    let set = one_rule("kind = \"rate\"\n[rule.params]\nmax_messages = 4\nwindow_secs = 3.0");
    let burst = UserHistory {
        message_times_ms: vec![NOW - 2500, NOW - 2000, NOW - 1000, NOW - 10],
        ..UserHistory::default()
    };
    let spread = UserHistory {
        message_times_ms: vec![NOW - 9000, NOW - 6000, NOW - 3000, NOW - 10],
        ..UserHistory::default()
    };
    check_with(&set, "hi", &burst, &ChannelWindow::default(), Some(""));
    check_with(&set, "hi", &spread, &ChannelWindow::default(), None);
}

#[test]
fn unique_words_long_words_and_mentions() {
    let unique =
        one_rule("kind = \"unique_words\"\n[rule.params]\nmax_ratio = 0.45\nmin_words = 6");
    check(&unique, "spam spam spam spam spam spam eggs", Some(""));
    check(&unique, "the quick brown fox jumps over the lazy dog", None);
    check(&unique, "no no no", None); // too few words

    let long = one_rule("kind = \"long_word\"\n[rule.params]\nmax_length = 20");
    let word = "a".repeat(25);
    check(&long, &format!("look {word} here"), Some(word.as_str()));
    check(
        &long,
        "https://example.com/a/very/long/path/that/is/not/a/word",
        None,
    );
    check(&long, "antidisestablishment", None);

    let mentions = one_rule("kind = \"mentions\"\n[rule.params]\nmax_mentions = 2");
    check(&mentions, "@alice @bobby @carol hello", Some(""));
    check(&mentions, "@alice @alice @alice @bobby", None); // distinct users only
}

#[test]
fn modes_roles_channels_and_policy() {
    let shadow = one_rule("kind = \"caps\"\nmode = \"shadow\"\n[rule.params]\nmax_ratio = 0.5");
    let reason = evaluate(
        &shadow,
        "THIS IS VERY LOUD TEXT",
        &UserHistory::default(),
        &ChannelWindow::default(),
    )
    .unwrap();
    assert!(reason.shadow);

    let disabled = one_rule("kind = \"caps\"\nmode = \"disabled\"\n[rule.params]\nmax_ratio = 0.5");
    check(&disabled, "THIS IS VERY LOUD TEXT", None);

    let exempt = one_rule(
        "kind = \"caps\"\nexempt_roles = [\"subscriber\"]\n[rule.params]\nmax_ratio = 0.5",
    );
    let mut sub = message("THIS IS VERY LOUD TEXT");
    sub.roles = vec!["subscriber".into()];
    let policy = exempt.policy("destinygg");
    let normalized = normalize(&sub.text, &policy.emotes);
    let history = UserHistory::default();
    let ctx = Context {
        normalized: &normalized,
        history: &history,
        channel_recent: &ChannelWindow::default(),
        now_ms: NOW,
    };
    assert_eq!(exempt.evaluate(&sub, policy, &ctx), Evaluation::default());
    assert!(policy.exempts(&["moderator".into()]));

    let scoped =
        one_rule("kind = \"caps\"\nchannels = [\"strims\"]\n[rule.params]\nmax_ratio = 0.5");
    check(&scoped, "THIS IS VERY LOUD TEXT", None);

    let per_channel = RuleSet::parse(
        &format!("{POLICY}\n[channel.strims]\nshadow = true\nemotes = [\"WEOW\"]\n"),
        "test",
    )
    .unwrap();
    assert!(per_channel.policy("strims").shadow);
    assert!(per_channel.policy("strims").emotes.contains("WEOW"));
    assert!(!per_channel.policy("destinygg").shadow);
    assert!(per_channel.policy("destinygg").emotes.contains("PepeLaugh"));
}

#[test]
fn the_builtin_rules_load_and_catch_the_classics() {
    let set = RuleSet::builtin();
    assert!(set.rules().len() >= 15);
    for kind in KINDS {
        assert!(
            set.rules().iter().any(|r| r.kind == *kind),
            "the built-in set uses {kind}"
        );
    }
}

#[test]
fn bad_rules_are_refused_naming_the_rule_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "kind = \"nope\"",
            "rule[0] (id \"r\").kind: `nope` is not a rule kind",
        ),
        (
            "kind = \"phrase\"\n[rule.params]\nphrases = ['(unclosed']\nsyntax = \"regex\"",
            "rule[0] (id \"r\").params.phrases[0]: invalid or too large pattern",
        ),
        (
            "kind = \"phrase\"\n[rule.params]\nphrases = ['\\w{1000}{1000}']\nsyntax = \"regex\"",
            "params.phrases[0]: invalid or too large pattern",
        ),
        (
            "kind = \"phrase\"\n[rule.params]\nphrases = []",
            "params.phrases: must list at least one phrase",
        ),
        (
            "kind = \"caps\"\n[rule.params]\nmax_ratio = 1.5",
            "params.max_ratio: 1.5 is outside [0, 1]",
        ),
        (
            "kind = \"caps\"\n[rule.params]\nmax_ratio = 0.5\nbogus = 1",
            "params.bogus: unknown field `bogus`",
        ),
        ("kind = \"caps\"", "params: missing field `max_ratio`"),
        (
            "kind = \"rate\"\n[rule.params]\nmax_messages = 4\nwindow_secs = 0.0",
            "params.window_secs",
        ),
        (
            "kind = \"link\"\n[rule.params]\ndeny_domains = [\"not a domain\"]",
            "params.deny_domains",
        ),
        ("kind = \"link\"", "params: sets nothing to check"),
        (
            "kind = \"link\"\n[rule.params]\nlookalike_brands = [\"d\"]",
            "params.lookalike_brands",
        ),
        (
            "kind = \"link\"\n[rule.params]\ndeny_tlds = [\"x y\"]",
            "params.deny_tlds",
        ),
        (
            "kind = \"profanity\"\n[rule.params]\nmin_severity = \"extreme\"",
            "params.min_severity",
        ),
        (
            "kind = \"profanity\"\n[rule.params]\ncategories = [\"rude\"]",
            "params.categories[0]",
        ),
        (
            "kind = \"caps\"\nmode = \"loud\"\n[rule.params]\nmax_ratio = 0.5",
            "rule[0] (id \"r\").mode",
        ),
    ];
    for (rule, expected) in cases {
        let text = format!("{POLICY}\n[[rule]]\nid = \"r\"\naction = \"hide\"\n{rule}\n");
        let error = RuleSet::parse(&text, "test").expect_err(rule).to_string();
        assert!(
            error.contains(expected),
            "expected `{expected}` in `{error}`"
        );
        assert!(error.starts_with("rules file test: "), "{error}");
    }
    let duplicate = format!(
        "{POLICY}\n[[rule]]\nid = \"r\"\nkind = \"caps\"\naction = \"hide\"\n[rule.params]\nmax_ratio = 0.5\n[[rule]]\nid = \"r\"\nkind = \"caps\"\naction = \"hide\"\n[rule.params]\nmax_ratio = 0.5\n"
    );
    let error = RuleSet::parse(&duplicate, "test").unwrap_err().to_string();
    assert!(
        error.contains("rule[1] (id \"r\").id: is used by an earlier rule"),
        "{error}"
    );
    let timeout = format!(
        "{POLICY}\n[[rule]]\nid = \"t\"\nkind = \"caps\"\naction = \"timeout\"\n[rule.params]\nmax_ratio = 0.5\n"
    );
    let error = RuleSet::parse(&timeout, "test").unwrap_err().to_string();
    assert!(
        error.contains("rule[0] (id \"t\").duration_secs"),
        "{error}"
    );
}

/// A rule that panics is skipped and reported; the rules around it still run and fire.
#[test]
fn a_rule_that_panics_is_skipped_and_the_others_still_fire() {
    const {
        assert!(
            crate::fault::ENABLED,
            "unit tests build with the fault-injection feature (the self dev-dependency)"
        );
    }
    let text = format!(
        "{POLICY}\n\
         [[rule]]\nid = \"before\"\naction = \"hide\"\nkind = \"phrase\"\n\
         [rule.params]\nphrases = [\"spam\"]\n\
         [[rule]]\nid = \"boom\"\naction = \"ban\"\nkind = \"phrase\"\n\
         [rule.params]\nphrases = [\"{}\"]\n\
         [[rule]]\nid = \"after\"\naction = \"timeout\"\nduration_secs = 60\nkind = \"phrase\"\n\
         [rule.params]\nphrases = [\"eggs\"]\n",
        crate::fault::PANIC_PHRASE
    );
    let set = RuleSet::parse(&text, "test").unwrap();
    let message = message(&format!("spam and eggs, {}", crate::fault::PANIC_PHRASE));
    let policy = set.policy(&message.channel);
    let normalized = normalize(&message.text, &policy.emotes);
    let history = UserHistory::default();
    let channel = ChannelWindow::default();
    let ctx = Context {
        normalized: &normalized,
        history: &history,
        channel_recent: &channel,
        now_ms: NOW,
    };
    let evaluation = set.evaluate(&message, policy, &ctx);
    let fired: Vec<_> = evaluation
        .reasons
        .iter()
        .map(|r| r.rule_id.as_str())
        .collect();
    assert_eq!(fired, ["before", "after"]);
    assert_eq!(evaluation.failed.len(), 1);
    assert_eq!(evaluation.failed[0].rule_id, "boom");
    assert!(
        evaluation.failed[0].location.contains("fault.rs"),
        "{:?}",
        evaluation.failed[0]
    );
    // Without history too (what decides whether the model is consulted).
    assert_eq!(
        set.harshest_without_history(&message, policy, &normalized),
        Some(Decision::Timeout)
    );
}

#[test]
fn a_rule_that_spares_trusted_regulars_reports_their_hits_as_shadow() {
    let set = one_rule(
        "kind = \"phrase\"\nspare_trusted = true\n[rule.params]\nphrases = [\"link dump\"]",
    );
    let stranger = UserHistory::default();
    let reason = evaluate(
        &set,
        "here is my link dump",
        &stranger,
        &ChannelWindow::default(),
    )
    .expect("fires");
    assert!(!reason.shadow, "a stranger is acted on: {reason:?}");
    // 1,000 clean messages: reputation 0.83, a trusted regular by the default margins.
    let regular = UserHistory {
        messages: 1_000,
        ..UserHistory::default()
    };
    let reason = evaluate(
        &set,
        "here is my link dump",
        &regular,
        &ChannelWindow::default(),
    )
    .expect("still reported");
    assert!(reason.shadow, "{reason:?}");
    assert!(
        reason
            .description
            .ends_with("not acted on, a trusted regular (reputation 0.83)"),
        "{reason:?}"
    );
    // Without the key nobody is spared.
    let plain = one_rule("kind = \"phrase\"\n[rule.params]\nphrases = [\"link dump\"]");
    let reason = evaluate(
        &plain,
        "here is my link dump",
        &regular,
        &ChannelWindow::default(),
    )
    .expect("fires");
    assert!(!reason.shadow);
}
