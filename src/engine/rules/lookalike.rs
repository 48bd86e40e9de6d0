//! Domains posing as a brand: the `link` rule's `lookalike_brands` and `deny_tlds`.
//!
//! A host poses as a brand when its registrable name (the label before the top-level domain,
//! or before `co.uk`-style two-part suffixes), or one of that name's hyphenated words:
//! - reads as the brand once visually confusable characters are folded (`dlscord`, `twltch`,
//!   `stearn` for `steam`: `1 i l` alike, `0` as `o`, `rn` as `m`, `vv` as `w`, `cl` as `d`),
//! - is the brand with one letter changed, added, dropped or two swapped (`dicsord`,
//!   `steamcommunnity`), for brands of six letters or more (shorter ones are too close to
//!   ordinary words),
//! - or is the brand joined to a word scams use (`discordnitro`, `steamgifts`, `freenitro`);
//!
//! or when an official domain is spelled inside it as subdomains (`steamcommunity.com.gift.ru`).
//! A host on the rule's `allow_domains` (the brands' own domains) never poses as anything.

/// Words a scam joins to a brand's name (`discord-gift`, `steamgifts`, `nitrofree`).
const SCAM_WORDS: &[&str] = &[
    "account", "airdrop", "auth", "bonus", "claim", "code", "codes", "drop", "drops", "event",
    "free", "gift", "gifts", "giveaway", "help", "login", "nitro", "official", "prime", "promo",
    "reward", "rewards", "secure", "skin", "skins", "support", "trade", "trading", "verify",
];

/// [`SCAM_WORDS`] as their skeletons, made once.
static SCAM_SKELETONS: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| SCAM_WORDS.iter().map(|w| skeleton(w)).collect());

/// Second-level labels of two-part public suffixes (`co.uk`, `com.br`), before a two-letter
/// country code.
const SECOND_LEVEL: &[&str] = &["ac", "co", "com", "edu", "gov", "net", "org"];

/// `text` with visually confusable characters folded, so that look-alikes compare equal.
fn skeleton(text: &str) -> String {
    let folded: String = text
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            '1' | 'i' | '|' => 'l',
            '0' => 'o',
            '3' => 'e',
            '4' => 'a',
            '5' => 's',
            '7' => 't',
            c => c,
        })
        .collect();
    folded
        .replace("rn", "m")
        .replace("vv", "w")
        .replace("cl", "d")
}

/// Whether `a` and `b` differ by at most one substitution, insertion, deletion or swap of
/// neighbours.
fn within_one_edit(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long.len() - short.len() > 1 {
        return false;
    }
    let prefix = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    if short.len() == long.len() {
        let (ra, rb) = (&short[prefix..], &long[prefix..]);
        // One substitution, or one swap of neighbours.
        ra[1..] == rb[1..]
            || (ra.len() >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..])
    } else {
        short[prefix..] == long[prefix + 1..]
    }
}

/// A brand a `link` rule watches for, with its skeleton made once when the rule compiles.
#[derive(Debug, Clone)]
pub struct Brand {
    /// Its name, lower case.
    pub name: String,
    skeleton: String,
}

impl Brand {
    /// The brand `name` (lower-cased here).
    pub fn new(name: &str) -> Self {
        let name = name.trim().to_lowercase();
        let skeleton = skeleton(&name);
        Self { name, skeleton }
    }
}

/// The brand `host` (lower case, no trailing dot) poses as, if any: see the module
/// documentation. `official` are the rule's allowed domains.
pub fn lookalike_of<'a>(host: &str, brands: &'a [Brand], official: &[String]) -> Option<&'a str> {
    if brands.is_empty() {
        return None;
    }
    let labels: Vec<&str> = host.split('.').filter(|l| !l.is_empty()).collect();
    if labels.len() < 2 {
        return None;
    }
    // An official domain spelled as subdomains of another host: followed by two labels or
    // more (`steamcommunity.com.gift.ru`), not by a country code alone (`google.com.au` is
    // the brand's own).
    for domain in official {
        let at = if host.starts_with(&format!("{domain}.")) {
            Some(0)
        } else {
            host.find(&format!(".{domain}.")).map(|i| i + 1)
        };
        let Some(at) = at else {
            continue;
        };
        let rest = &host[at + domain.len() + 1..];
        if rest.split('.').filter(|l| !l.is_empty()).count() >= 2 {
            // Named after the longest brand the official domain spells.
            let brand = brands
                .iter()
                .filter(|b| domain.contains(b.name.as_str()))
                .max_by_key(|b| b.name.len())
                .or_else(|| brands.first())?;
            return Some(&brand.name);
        }
    }
    let mut suffix = 1;
    if labels.len() >= 3
        && labels[labels.len() - 1].len() == 2
        && SECOND_LEVEL.contains(&labels[labels.len() - 2])
    {
        suffix = 2;
    }
    // A brand's exact name under a country code is most likely its own (`paypal.co.uk`,
    // `twitch.de`); under anything else it is not (`discord.xyz`, `twitch.gift`).
    let country = labels[labels.len() - 1].len() == 2;
    let name = labels[labels.len() - 1 - suffix];
    let joined = name.replace('-', "");
    let words = name.split('-').chain(std::iter::once(joined.as_str()));
    let words: Vec<(&str, String)> = words
        .filter(|w| w.len() >= 3)
        .map(|w| (w, skeleton(w)))
        .collect();
    brands
        .iter()
        .find(|brand| {
            let target = brand.skeleton.as_str();
            words.iter().any(|(typed, word)| {
                (word == target && !(country && *typed == brand.name))
                    || (brand.name.len() >= 6
                        && word != target
                        && within_one_edit(word.as_bytes(), target.as_bytes()))
                    || [word.strip_prefix(target), word.strip_suffix(target)]
                        .into_iter()
                        .flatten()
                        .any(|rest| SCAM_SKELETONS.iter().any(|scam| scam == rest))
            })
        })
        .map(|brand| brand.name.as_str())
}

/// The top-level domain of `host` if it is one of `tlds` (lower case, without dots).
pub fn denied_tld<'a>(host: &str, tlds: &'a [String]) -> Option<&'a str> {
    let tld = host.trim_end_matches('.').rsplit('.').next()?;
    tlds.iter().map(String::as_str).find(|t| *t == tld)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn poses(host: &str) -> Option<String> {
        let brands: Vec<Brand> = [
            "discord",
            "steam",
            "steamcommunity",
            "twitch",
            "nitro",
            "paypal",
        ]
        .into_iter()
        .map(Brand::new)
        .collect();
        let official = strings(&[
            "discord.com",
            "discord.gg",
            "steamcommunity.com",
            "twitch.tv",
            "paypal.com",
        ]);
        lookalike_of(host, &brands, &official).map(str::to_owned)
    }

    #[test]
    fn look_alikes_of_brands_are_found() {
        for (host, brand) in [
            ("dlscord.com", "discord"),
            ("discorcl.app", "discord"),
            ("dicsord.net", "discord"),
            ("discord-gift.com", "discord"),
            ("discordgifts.ru", "discord"),
            ("free-nitro.xyz", "nitro"),
            ("stearn.store", "steam"),
            ("steamcommunnity.ru", "steamcommunity"),
            ("steamcommunity-trade.ru", "steamcommunity"),
            ("twitch-prime.xyz", "twitch"),
            ("twltch.gift", "twitch"),
            ("paypa1.com", "paypal"),
            ("login.paypal-verify.co.uk", "paypal"),
            ("steamcommunity.com.gift-accept.ru", "steamcommunity"),
            ("www.discord.gg.claim.ru", "discord"),
            ("discord.xyz", "discord"),
            ("paypal-login.co.uk", "paypal"),
            ("dlscord.de", "discord"),
        ] {
            assert_eq!(poses(host).as_deref(), Some(brand), "{host}");
        }
    }

    #[test]
    fn ordinary_and_official_domains_are_not_look_alikes() {
        for host in [
            "discogs.com",
            "streamable.com",
            "nitrotype.com",
            "twitchapps.com",
            "steamed-buns.org",
            "glitch.com",
            "twitter.com",
            "youtube.com",
            "github.com",
            "en.wikipedia.org",
            "bbc.co.uk",
            "localhost",
            // The brands' own country domains.
            "google.com.au",
            "paypal.co.uk",
            "discord.com.au",
            "twitch.de",
            "support.paypal.com.au",
        ] {
            assert_eq!(poses(host), None, "{host}");
        }
    }

    #[test]
    fn one_edit_means_one() {
        assert!(within_one_edit(b"discord", b"dicsord"));
        assert!(within_one_edit(b"discord", b"discor"));
        assert!(within_one_edit(b"discord", b"discordd"));
        assert!(within_one_edit(b"discord", b"discard"));
        assert!(!within_one_edit(b"discord", b"discogs"));
        assert!(!within_one_edit(b"discord", b"idscrod"));
        assert!(!within_one_edit(b"ab", b"abcd"));
    }

    #[test]
    fn top_level_domains_are_matched_whole() {
        let tlds = strings(&["xyz", "top"]);
        assert_eq!(denied_tld("free.xyz", &tlds), Some("xyz"));
        assert_eq!(denied_tld("a.b.top.", &tlds), Some("top"));
        assert_eq!(denied_tld("xyz.com", &tlds), None);
        assert_eq!(denied_tld("example.xyzz", &tlds), None);
    }
}
