//! A deterministic synthetic chat corpus shaped like destiny.gg's chat, for benchmarks and the
//! load generator.
//!
//! [`generate`] is a pure function of its seed: the same seed gives the same messages on every
//! machine (a SplitMix64 generator, no `rand`). The mix, roughly: 58% ordinary talk (short, lower
//! case, some typos, sometimes an emote), 8% emote-only lines, 6% emote-heavy lines, 5%
//! `@mentions`, 5% ALL CAPS, 4% links (three quarters to allowed sites), copypasta raids (bursts
//! in which many users paste the same text), 4% evasions of [`TEST_BANNED_WORDS`] (leetspeak,
//! homoglyphs, spaced letters, zero-width characters, fullwidth), 1.5% zalgo and 1.5% non-ASCII
//! floods. About 2,000 users post with a Zipf-like skew (a few regulars write most lines); some
//! are subscribers, VIPs, moderators or bots.

/// One generated chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusMessage {
    /// `destinygg` mostly, `strims` sometimes.
    pub channel: String,
    /// Stable id of the author (`u0042`).
    pub user_id: String,
    /// The author's nick.
    pub nick: String,
    /// The author's roles, lower case (`subscriber`, `vip`, `moderator`, `bot`).
    pub roles: Vec<String>,
    /// The text as typed.
    pub text: String,
}

/// Harmless stand-ins for banned words that the corpus evades in the ways real chatters do, so
/// benchmarks and tests can count what normalisation catches without shipping slurs.
pub const TEST_BANNED_WORDS: &[&str] = &["idiot", "loser", "scam", "trash", "moron"];

/// The destiny.gg emote names the corpus uses (a representative subset of the real list).
pub fn default_emotes() -> Vec<&'static str> {
    EMOTES.to_vec()
}

const EMOTES: &[&str] = &[
    "PepeLaugh",
    "OMEGALUL",
    "Kappa",
    "LUL",
    "PogU",
    "monkaS",
    "DuckerZ",
    "YEE",
    "FeelsBadMan",
    "FeelsGoodMan",
    "Klappa",
    "NoTears",
    "WEOW",
    "REE",
    "MLADY",
    "SoDoge",
    "PepeHands",
    "FeelsStrongMan",
    "Hhhehhehe",
    "ASLAN",
    "DANKMEMES",
    "NOBULLY",
    "SOTRIGGERED",
    "BasedGod",
    "OverRustle",
    "Disgustiny",
    "FerretLOL",
    "Sippy",
    "nathanWeeb",
    "Slugstiny",
    "Wowee",
    "PepoThink",
    "gachiGASM",
    "AngelThump",
    "BERN",
    "GameOfThrows",
    "Dravewin",
    "UWOTM8",
    "LeRuse",
    "haHAA",
    "POTATO",
    "CheekerZ",
    "YEEHAW",
    "Blade",
    "TRUMPED",
    "MiyanoHype",
    "SpookerZ",
    "DaFeels",
    "Heimerdonger",
    "BlubberWobble",
];

const WORDS: &[&str] = &[
    "the",
    "a",
    "is",
    "it",
    "this",
    "that",
    "he",
    "she",
    "they",
    "you",
    "i",
    "we",
    "just",
    "so",
    "not",
    "no",
    "yes",
    "yeah",
    "lol",
    "lmao",
    "bro",
    "dude",
    "chat",
    "stream",
    "destiny",
    "vod",
    "debate",
    "take",
    "based",
    "cringe",
    "actually",
    "literally",
    "why",
    "what",
    "how",
    "when",
    "did",
    "does",
    "do",
    "was",
    "are",
    "be",
    "have",
    "has",
    "got",
    "get",
    "go",
    "going",
    "said",
    "says",
    "think",
    "know",
    "mean",
    "right",
    "wrong",
    "good",
    "bad",
    "true",
    "false",
    "point",
    "argument",
    "source",
    "clip",
    "video",
    "game",
    "play",
    "win",
    "lose",
    "guy",
    "guys",
    "people",
    "everyone",
    "nobody",
    "again",
    "still",
    "already",
    "never",
    "always",
    "maybe",
    "probably",
    "really",
    "very",
    "too",
    "much",
    "more",
    "less",
    "like",
    "love",
    "hate",
    "watch",
    "listen",
    "read",
    "chatters",
    "mods",
    "sub",
    "emote",
    "today",
    "tomorrow",
    "yesterday",
    "tonight",
    "politics",
    "economy",
    "policy",
    "vote",
    "election",
    "news",
    "twitter",
    "reddit",
    "youtube",
    "music",
    "food",
    "pizza",
    "coffee",
    "sleep",
    "work",
    "school",
    "hours",
    "minutes",
    "2024",
    "3",
    "10",
    "100",
    "1v1",
    "4k",
    "gg",
    "ez",
    "wp",
    "omg",
    "wtf",
    "idk",
    "imo",
    "tbh",
    "ngl",
];

const COPYPASTAS: &[&str] = &[
    "I'm not even mad, that's amazing. This stream is the best thing that has happened to me all week and I will not be taking questions at this time",
    "DESTINY PLEASE READ THIS: I have been watching since 2012 and I have never once seen a debate go this badly PepeLaugh",
    "What the heck did you just say about me, you little chatter? I'll have you know I graduated top of my class in the debate academy",
    "this is a copypasta please copy and paste it to show your support for the stream WEOW WEOW WEOW",
    "POGGERS POGGERS POGGERS the raid is here everyone say hi to the new chatters",
    "it's over. it's so over. we're never getting back. it's actually over this time",
];

const ALLOWED_LINKS: &[&str] = &[
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "https://youtu.be/abc123XYZ",
    "https://twitch.tv/destiny",
    "https://destiny.gg/bigscreen",
    "youtube.com/watch?v=Zb1c2D3e4F",
    "https://twitter.com/i/status/1234567890",
    "https://www.reddit.com/r/Destiny/comments/abc",
    "https://clips.twitch.tv/FunnyClipName",
];

const SPAM_LINKS: &[&str] = &[
    "free nitro at discord-gift.xyz/claim",
    "get followers cheap bit.ly/3xFolLow",
    "https://steamcommunlty.com/gift/free",
    "earn $500 a day crypto-profits.click/join",
    "www.free-skins.top/case",
];

const SHOUTS: &[&str] = &[
    "no way he actually said that",
    "this is the best debate ever",
    "chat is going crazy right now",
    "lets go",
    "he is so wrong",
    "what is happening",
];

const NON_ASCII_FLOODS: &[&str] = &[
    "▀▄▀▄▀▄▀▄▀▄▀▄▀▄▀▄▀▄▀▄▀▄▀▄",
    "⣿⣿⣿⣿⣿⣿⣿⣿⠿⠿⠿⠿⣿⣿⣿⣿⣿⣿⣿⣿",
    "привет чат как дела у всех сегодня",
    "😂😂😂😂😂😂😂😂😂😂😂😂",
    "╔══╗ ╔══╗ ╔══╗ ╚══╝ ╚══╝",
    "ｗｈａｔ ｉｓ ｇｏｉｎｇ ｏｎ",
    "日本語のメッセージです よろしく",
];

/// SplitMix64: small, fast, good enough for synthetic data, and identical everywhere. Also
/// the source of the deterministic adversarial strings in `normalize`'s tests.
pub(crate) struct Rng(pub(crate) u64);

/// One step of SplitMix64 (Steele, Lea & Flood 2014) on `state`: the one generator behind
/// every seeded stream in modbot (this corpus, head training, the n-gram model's visiting
/// order, synthetic test data), so a seed means the same numbers everywhere.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// How many distinct users the corpus draws from.
pub const USERS: usize = 2000;

struct User {
    id: String,
    nick: String,
    roles: Vec<String>,
}

fn make_users(rng: &mut Rng) -> Vec<User> {
    const PARTS: &[&str] = &[
        "dark", "pepe", "chat", "bean", "frog", "based", "lord", "king", "neo", "ban", "gg",
        "rusty", "salt", "void", "meme", "xx", "lil", "big", "mr", "wolf", "cat", "dog", "rat",
        "vibe", "sleepy", "angry", "happy", "crypto", "debate", "gamer",
    ];
    (0..USERS)
        .map(|i| {
            let mut nick = String::new();
            nick.push_str(rng.pick(PARTS));
            let second = rng.pick(PARTS);
            if rng.chance(0.5) {
                let mut chars = second.chars();
                if let Some(first) = chars.next() {
                    nick.extend(first.to_uppercase());
                    nick.push_str(chars.as_str());
                }
            } else {
                nick.push('_');
                nick.push_str(second);
            }
            if rng.chance(0.6) {
                nick.push_str(&(rng.below(999) + 1).to_string());
            }
            nick.truncate(20);
            let mut roles = Vec::new();
            let role = rng.unit();
            if role < 0.005 {
                roles.push("bot".to_owned());
            } else if role < 0.015 {
                roles.push("moderator".to_owned());
                roles.push("subscriber".to_owned());
            } else if role < 0.035 {
                roles.push("vip".to_owned());
                roles.push("subscriber".to_owned());
            } else if role < 0.20 {
                roles.push("subscriber".to_owned());
            }
            User {
                id: format!("u{i:04}"),
                nick,
                roles,
            }
        })
        .collect()
}

/// Exponent of the users' Zipf skew. At 0.8 over 2,000 users the most active one writes about
/// 5% of the lines: in a chat of ten messages a second that is one every two seconds, busy but
/// human. (A steeper skew makes the top users trip the message-rate rule all the time.)
const ZIPF_EXPONENT: f64 = 0.8;

/// Cumulative Zipf weights over user ranks, for sampling by binary search.
fn zipf_cumulative(n: usize) -> Vec<f64> {
    let mut total = 0.0;
    (0..n)
        .map(|rank| {
            total += 1.0 / ((rank + 1) as f64).powf(ZIPF_EXPONENT);
            total
        })
        .collect()
}

/// `count` messages drawn from the seed (see the module documentation for the mix).
pub fn generate(seed: u64, count: usize) -> Vec<CorpusMessage> {
    let mut rng = Rng(seed);
    let users = make_users(&mut rng);
    let cumulative = zipf_cumulative(users.len());
    let total = cumulative.last().copied().unwrap_or(1.0);
    let mut raid: Option<(&'static str, usize)> = None;
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let target = rng.unit() * total;
        let rank = cumulative
            .partition_point(|&c| c < target)
            .min(users.len() - 1);
        let user = &users[rank];
        let text = match raid {
            Some((pasta, left)) if left > 0 => {
                raid = Some((pasta, left - 1));
                if rng.chance(0.7) {
                    pasta.to_owned()
                } else {
                    message(&mut rng, &users)
                }
            }
            _ => {
                raid = None;
                if rng.chance(0.004) {
                    let pasta = rng.pick(COPYPASTAS);
                    raid = Some((pasta, 10 + rng.below(30)));
                    pasta.to_owned()
                } else {
                    message(&mut rng, &users)
                }
            }
        };
        messages.push(CorpusMessage {
            channel: if rng.chance(0.8) {
                "destinygg"
            } else {
                "strims"
            }
            .to_owned(),
            user_id: user.id.clone(),
            nick: user.nick.clone(),
            roles: user.roles.clone(),
            text,
        });
    }
    messages
}

/// One message outside a raid.
fn message(rng: &mut Rng, users: &[User]) -> String {
    let kind = rng.unit();
    if kind < 0.58 {
        let mut text = talk(rng, 2, 10);
        if rng.chance(0.2) {
            text.push(' ');
            text.push_str(rng.pick(EMOTES));
        }
        text
    } else if kind < 0.66 {
        let n = 1 + rng.below(5);
        let emote = rng.pick(EMOTES);
        (0..n)
            .map(|_| {
                if rng.chance(0.7) {
                    emote
                } else {
                    rng.pick(EMOTES)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    } else if kind < 0.72 {
        let mut parts = vec![talk(rng, 1, 4)];
        for _ in 0..2 + rng.below(3) {
            parts.push((rng.pick(EMOTES)).to_owned());
        }
        parts.join(" ")
    } else if kind < 0.77 {
        let to = &users[rng.below(users.len())].nick;
        format!("@{to} {}", talk(rng, 2, 8))
    } else if kind < 0.82 {
        rng.pick(SHOUTS).to_uppercase() + if rng.chance(0.5) { "!!!!" } else { "" }
    } else if kind < 0.85 {
        format!("{} {}", talk(rng, 1, 4), rng.pick(ALLOWED_LINKS))
    } else if kind < 0.86 {
        (rng.pick(SPAM_LINKS)).to_owned()
    } else if kind < 0.90 {
        format!("{} {}", talk(rng, 1, 3), evasion(rng))
    } else if kind < 0.915 {
        let text = talk(rng, 1, 3);
        zalgo(rng, &text)
    } else if kind < 0.93 {
        (rng.pick(NON_ASCII_FLOODS)).to_owned()
    } else {
        // The rest is more ordinary talk, longer, with punctuation.
        let mut text = talk(rng, 8, 20);
        text.push_str(if rng.chance(0.5) { "?" } else { "." });
        text
    }
}

/// `min` to `min + spread - 1` lower-case words with the odd typo.
fn talk(rng: &mut Rng, min: usize, spread: usize) -> String {
    let words = min + rng.below(spread);
    let mut text = String::new();
    for i in 0..words {
        if i > 0 {
            text.push(' ');
        }
        let word = rng.pick(WORDS);
        if word.len() > 3 && rng.chance(0.05) {
            // A typo: two neighbouring letters swapped.
            let mut chars: Vec<char> = word.chars().collect();
            let at = rng.below(chars.len() - 1);
            chars.swap(at, at + 1);
            text.extend(chars);
        } else {
            text.push_str(word);
        }
    }
    text
}

/// A test banned word, evaded.
fn evasion(rng: &mut Rng) -> String {
    let word = rng.pick(TEST_BANNED_WORDS);
    match rng.below(6) {
        0 => word
            .chars()
            .map(|c| match c {
                'o' => '0',
                'i' => '1',
                'e' => '3',
                'a' => '4',
                's' => '5',
                't' => '7',
                c => c,
            })
            .collect(),
        1 => word
            .chars()
            .map(|c| match c {
                'a' => 'а',
                'e' => 'е',
                'o' => 'о',
                'c' => 'с',
                'i' => 'і',
                's' => 'ѕ',
                c => c,
            })
            .collect(),
        2 => {
            let separator = rng.pick(&[" ", ".", "-", "_"]);
            word.chars()
                .map(String::from)
                .collect::<Vec<_>>()
                .join(separator)
        }
        3 => word.chars().flat_map(|c| [c, '\u{200B}']).collect(),
        4 => word
            .chars()
            .map(|c| char::from_u32(c as u32 - 'a' as u32 + 0xFF41).unwrap_or(c))
            .collect(),
        _ => word.to_uppercase(),
    }
}

/// `text` with combining marks stacked on every letter.
fn zalgo(rng: &mut Rng, text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        out.push(c);
        if c.is_alphabetic() {
            for _ in 0..rng.below(12) {
                let mark = 0x0300 + rng.below(0x70) as u32;
                out.push(char::from_u32(mark).unwrap_or('\u{0301}'));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn deterministic_and_shaped_like_chat() {
        let a = generate(7, 20_000);
        assert_eq!(a, generate(7, 20_000));
        assert_ne!(a, generate(8, 20_000));
        assert_eq!(a.len(), 20_000);
        let users: HashSet<&str> = a.iter().map(|m| m.user_id.as_str()).collect();
        assert!(users.len() > 1000, "{} users", users.len());
        // Zipf: the most active user writes far more than the median one.
        let top = a.iter().filter(|m| m.user_id == "u0000").count();
        assert!(top > 200, "top user wrote {top}");
        assert!(
            a.iter()
                .all(|m| !m.text.trim().is_empty() && m.text.len() <= 512)
        );
        assert!(a.iter().any(|m| m.roles.iter().any(|r| r == "moderator")));
        assert!(a.iter().any(|m| m.channel == "strims"));
        let emotes = EMOTES.iter().copied().collect::<HashSet<_>>();
        let emote_only = a
            .iter()
            .filter(|m| m.text.split(' ').all(|w| emotes.contains(w)))
            .count();
        assert!(emote_only > 1000, "{emote_only} emote-only");
        let raided = COPYPASTAS
            .iter()
            .map(|p| a.iter().filter(|m| m.text == *p).count())
            .max()
            .unwrap_or(0);
        assert!(raided > 20, "largest raid {raided}");
        assert!(a.iter().any(|m| m.text.contains("http")));
        assert!(a.iter().any(|m| m.text.contains('\u{200B}')));
        assert!(a.iter().all(|m| m.nick.len() <= 20));
        assert_eq!(default_emotes().len(), EMOTES.len());
    }
}
