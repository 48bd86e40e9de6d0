//! Recognising the tokens that are matched on the original text and never folded: emotes,
//! links and mentions.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// A channel's emotes, matched exactly and case-sensitively (destiny.gg's `Kappa` is an emote,
/// `kappa` is a word).
///
/// A whitespace-separated chunk of the message is an emote when it is one of these names, or one
/// followed by destiny.gg modifiers (`PepeLaugh:wide`, `Kappa:flip:rain`: a colon and lower-case
/// ASCII letters each). Like destiny.gg's own client, `Kappa,` (with punctuation attached) is not
/// an emote.
#[derive(Debug, Clone, Default)]
pub struct EmoteSet {
    names: HashSet<Box<str>, BuildHasherDefault<Fnv>>,
    /// Length bounds of the names, a cheap first test for the many chunks that are no emote.
    shortest: usize,
    longest: usize,
}

impl EmoteSet {
    /// A set of emote names. Empty names are ignored.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(emotes: I) -> Self {
        let names: HashSet<Box<str>, BuildHasherDefault<Fnv>> = emotes
            .into_iter()
            .map(|name| name.into().into_boxed_str())
            .filter(|name| !name.is_empty())
            .collect();
        let shortest = names.iter().map(|name| name.len()).min().unwrap_or(0);
        let longest = names.iter().map(|name| name.len()).max().unwrap_or(0);
        Self {
            names,
            shortest,
            longest,
        }
    }

    /// Whether `token` is exactly one of the names.
    pub fn contains(&self, token: &str) -> bool {
        (self.shortest..=self.longest).contains(&token.len()) && self.names.contains(token)
    }

    /// Whether the set has no names.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// How many names the set has.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The byte length of the emote name at the start of `chunk` if the whole chunk is an emote,
    /// with or without modifiers.
    pub(super) fn match_chunk(&self, chunk: &str) -> Option<usize> {
        if self.names.is_empty() {
            return None;
        }
        if self.contains(chunk) {
            return Some(chunk.len());
        }
        let colon = chunk.find(':')?;
        let (name, modifiers) = chunk.split_at(colon);
        let modifiers_ok = modifiers[1..]
            .split(':')
            .all(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_lowercase()));
        (modifiers_ok && self.contains(name)).then_some(name.len())
    }
}

/// FNV-1a: emote names are short and not attacker-chosen keys of a long-lived table an attacker
/// can flood (the set is built from configuration), so a simple fast hash beats SipHash here.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

/// The byte length of an `@nick` mention at the start of `s`: `@` and 3 to 20 nick characters
/// (ASCII letters, digits, `_`, as destiny.gg nicks are), not followed by another nick character.
pub(super) fn match_mention(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('@')?;
    let nick = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    (3..=20).contains(&nick).then_some(1 + nick)
}

/// A link found at the start of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LinkMatch {
    /// Byte length of the link (trailing sentence punctuation excluded).
    pub len: usize,
    /// Byte length of the scheme and host, the part that is lower-cased.
    pub host_end: usize,
}

/// Top-level domains a bare `name.tld` is taken as a link for. A short list on purpose: most
/// two-letter country codes are also file extensions or words (`readme.md`, `main.rs`,
/// `ok.so`, `it.is`), so only the ones that chat links really use are here, and the cheap
/// generic ones spam and phishing favour (`gift`, `bet`, `cfd`, `sbs` ...). With a scheme
/// (`https://`) or `www.`, any alphabetic TLD counts.
const BARE_TLDS: &[&str] = &[
    "ai", "app", "art", "au", "be", "bet", "bid", "biz", "blog", "br", "buzz", "ca", "cam", "cc",
    "cf", "cfd", "click", "club", "cn", "co", "com", "cyou", "date", "de", "dev", "edu", "es",
    "eu", "fm", "fr", "fun", "ga", "gg", "gift", "gl", "gov", "gq", "icu", "info", "io", "jp",
    "kr", "la", "li", "link", "live", "loan", "lol", "ly", "me", "ml", "moe", "monster", "net",
    "news", "nl", "online", "org", "page", "pro", "pw", "ru", "sbs", "se", "shop", "site", "space",
    "store", "stream", "su", "tech", "tk", "top", "tv", "uk", "vip", "website", "wiki", "win",
    "work", "ws", "xxx", "xyz", "zone",
];

/// Characters trimmed from the end of a link: sentence punctuation and closing brackets.
fn is_trailing_punctuation(c: char) -> bool {
    matches!(
        c,
        '.' | ',' | ';' | ':' | '!' | '?' | '\'' | '"' | ')' | ']' | '}' | '>'
    )
}

/// Defanged dots, as security write-ups print links and spammers dodge link filters:
/// `example[.]com`, `example(dot)com`.
const DEFANGED_DOTS: &[&str] = &["[.]", "(.)", "{.}", "[dot]", "(dot)", "{dot}"];

/// A defanged link refanged, lower case (`Discord[.]gg/x` → `discord.gg/x`, `hxxps://` →
/// `https://`), or `None` when `s` has nothing defanged.
pub fn refang(s: &str) -> Option<String> {
    // Every chunk of every message passes here: most have no bracket and no `hxxp`.
    let hxxp = s
        .get(..4)
        .is_some_and(|head| head.eq_ignore_ascii_case("hxxp"));
    if !hxxp && !s.contains(['[', '(', '{']) {
        return None;
    }
    let lower = s.to_ascii_lowercase();
    let scheme = lower.starts_with("hxxp://") || lower.starts_with("hxxps://");
    if !scheme && !DEFANGED_DOTS.iter().any(|d| lower.contains(d)) {
        return None;
    }
    let mut out = if scheme {
        lower.replacen("hxxp", "http", 1)
    } else {
        lower
    };
    for dot in DEFANGED_DOTS {
        out = out.replace(dot, ".");
    }
    Some(out)
}

/// The link at the start of `s` (a whitespace-free chunk with any opening brackets already
/// skipped): `http(s)://host...`, `www.host...`, or a bare `host.tld/...` whose TLD is in
/// [`BARE_TLDS`]; also any of these defanged (see [`refang`]), when the whole chunk is one.
pub(super) fn match_link(s: &str) -> Option<LinkMatch> {
    let Some(refanged) = refang(s) else {
        return match_plain_link(s);
    };
    let found = match_plain_link(&refanged)?;
    // The refanged link must be the whole chunk but for trailing punctuation, which the
    // original ends with too; then the original is the link.
    let trimmed = &refanged[found.len..];
    if !s.to_ascii_lowercase().ends_with(trimmed) {
        return None;
    }
    let len = s.len().checked_sub(trimmed.len())?;
    let link = s.get(..len)?;
    let host_start = link.find("://").map_or(0, |i| i + 3);
    let host_end = link[host_start..]
        .find(['/', '?', '#'])
        .map_or(len, |i| host_start + i);
    Some(LinkMatch { len, host_end })
}

/// [`match_link`] for a link written plainly.
fn match_plain_link(s: &str) -> Option<LinkMatch> {
    let scheme = ["https://", "http://"]
        .into_iter()
        .find(|scheme| {
            s.get(..scheme.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
        })
        .map_or(0, str::len);
    // Most chunks are plain words: without a scheme, a link needs a dot.
    if scheme == 0 && !s.as_bytes().contains(&b'.') {
        return None;
    }
    let mut end = s.len();
    while let Some(last) = s[..end].chars().next_back() {
        // A closing parenthesis belongs to the link when the link opened one (Wikipedia).
        let balanced = || {
            let text = &s[..end];
            text.matches('(').count() >= text.matches(')').count()
        };
        if !is_trailing_punctuation(last) || (last == ')' && balanced()) {
            break;
        }
        end -= last.len_utf8();
    }
    let candidate = &s[..end];
    let after_scheme = candidate.get(scheme..)?;
    let host_len = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let authority = &after_scheme[..host_len];
    // A port, if any, is part of the authority but not of the host name.
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return None,
        None => authority,
    };
    let www = host
        .get(..4)
        .is_some_and(|head| head.eq_ignore_ascii_case("www."));
    let valid = if scheme > 0 {
        valid_host(host, true) || host.eq_ignore_ascii_case("localhost") || is_ipv4(host)
    } else if www {
        valid_host(host, true)
    } else {
        valid_host(host, false)
            && host.rsplit('.').next().is_some_and(|tld| {
                BARE_TLDS
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(tld))
            })
    };
    valid.then_some(LinkMatch {
        len: end,
        host_end: scheme + host_len,
    })
}

/// Whether `host` is dot-separated labels of letters, digits and hyphens (any script when
/// `unicode`, for internationalised names; ASCII otherwise), at least two of them, not starting
/// or ending with a hyphen, and ending in an alphabetic TLD of two or more letters.
fn valid_host(host: &str, unicode: bool) -> bool {
    let mut labels = 0;
    for label in host.split('.') {
        let ok_char = |c: char| {
            c == '-'
                || if unicode {
                    c.is_alphanumeric()
                } else {
                    c.is_ascii_alphanumeric()
                }
        };
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return false;
        }
        if !label.chars().all(ok_char) {
            return false;
        }
        labels += 1;
    }
    let tld = host.rsplit('.').next().unwrap_or_default();
    labels >= 2 && tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic)
}

fn is_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.parse::<u8>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links() {
        let check = |s: &str, expected: Option<(&str, &str)>| {
            let got = match_link(s).map(|m| (&s[..m.len], &s[..m.host_end]));
            assert_eq!(got, expected, "{s:?}");
        };
        check(
            "https://Example.com/AbC?x=1",
            Some(("https://Example.com/AbC?x=1", "https://Example.com")),
        );
        check(
            "http://localhost:8080/x",
            Some(("http://localhost:8080/x", "http://localhost:8080")),
        );
        check(
            "www.youtube.com/watch?v=x.",
            Some(("www.youtube.com/watch?v=x", "www.youtube.com")),
        );
        check("bit.ly/abc", Some(("bit.ly/abc", "bit.ly")));
        check("example.com/x", Some(("example.com/x", "example.com")));
        check("destiny.gg!", Some(("destiny.gg", "destiny.gg")));
        check("Twitch.TV", Some(("Twitch.TV", "Twitch.TV")));
        check(
            "en.wikipedia.org/wiki/Foo_(bar))",
            Some(("en.wikipedia.org/wiki/Foo_(bar)", "en.wikipedia.org")),
        );
        // Defanged links are links.
        check(
            "Discord[.]gg/abc,",
            Some(("Discord[.]gg/abc", "Discord[.]gg")),
        );
        check(
            "viewbot(dot)store",
            Some(("viewbot(dot)store", "viewbot(dot)store")),
        );
        check(
            "hxxps://steam[.]gift/x",
            Some(("hxxps://steam[.]gift/x", "hxxps://steam[.]gift")),
        );
        check("a[.]b", None);
        check("[.]", None);
        assert_eq!(refang("Discord[.]GG").as_deref(), Some("discord.gg"));
        assert_eq!(refang("discord.gg"), None);
        check("e.g.", None);
        check("i.e.", None);
        check("lol..", None);
        check("lol...what", None);
        check("3.14", None);
        check("readme.md", None);
        check("main.rs", None);
        check("ok.so", None);
        check("me@example.com", None);
        check("http://", None);
        check("https://.com", None);
        check("example.com:abc", None);
        check("-bad.com", None);
    }

    #[test]
    fn mentions() {
        assert_eq!(match_mention("@Destiny"), Some(8));
        assert_eq!(match_mention("@nick_1,"), Some(7));
        assert_eq!(match_mention("@ab"), None);
        assert_eq!(match_mention("@"), None);
        assert_eq!(match_mention("nick"), None);
        assert_eq!(match_mention(&format!("@{}", "a".repeat(21))), None);
    }

    #[test]
    fn emotes() {
        let set = EmoteSet::new(["Kappa", "PepeLaugh", "OMEGALUL"]);
        assert!(set.contains("Kappa") && !set.contains("kappa") && !set.contains("Kappa,"));
        assert_eq!(set.match_chunk("PepeLaugh:wide"), Some(9));
        assert_eq!(set.match_chunk("Kappa:flip:rain"), Some(5));
        assert_eq!(set.match_chunk("Kappa:"), None);
        assert_eq!(set.match_chunk("Kappa:Wide"), None);
        assert_eq!(set.match_chunk("kappa"), None);
        assert!(!set.is_empty() && set.len() == 3);
        assert!(EmoteSet::default().is_empty());
        assert_eq!(EmoteSet::default().match_chunk("Kappa"), None);
    }
}
