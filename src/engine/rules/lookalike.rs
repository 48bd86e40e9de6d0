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
//!
//! [`link_signals`] reads a message's links with the default rules' lists, for the spam head.

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

/// The host of a link token, lower case, without `www.`.
pub fn link_host(link: &str) -> &str {
    let rest = link.split_once("://").map_or(link, |(_, rest)| rest);
    let rest = rest.strip_prefix("www.").unwrap_or(rest);
    let end = rest.find(['/', '?', '#', ':']).unwrap_or(rest.len());
    let host = &rest[..end];
    // Userinfo (`user@host`) would let a link pose as another host.
    host.rsplit_once('@').map_or(host, |(_, h)| h)
}

/// The entry of `domains` that `host` is, or is a subdomain of.
pub fn domain_matches(host: &str, domains: &[String]) -> Option<String> {
    domains
        .iter()
        .find(|d| {
            host == d.as_str()
                || host
                    .strip_suffix(d.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        })
        .cloned()
}

/// Brands whose look-alike domains are evidence of a scam: the default `lookalike-domains`
/// rule's `lookalike_brands`, and the brands [`link_signals`] watches for.
pub const SCAMMED_BRANDS: &[&str] = &[
    "discord",
    "discordapp",
    "nitro",
    "steam",
    "steamcommunity",
    "steampowered",
    "twitch",
    "epicgames",
    "roblox",
    "paypal",
    "youtube",
    "instagram",
    "tiktok",
    "twitter",
    "google",
    "microsoft",
    "apple",
    "netflix",
    "spotify",
    "binance",
    "coinbase",
    "metamask",
    "opensea",
    "riotgames",
    "valorant",
    "minecraft",
    "playstation",
];

/// [`SCAMMED_BRANDS`]' own domains, which never pose as anything: the default
/// `lookalike-domains` rule's `allow_domains`.
pub const OFFICIAL_DOMAINS: &[&str] = &[
    "discord.com",
    "discord.gg",
    "discordapp.com",
    "discordapp.net",
    "discord.media",
    "discordstatus.com",
    "steamcommunity.com",
    "steampowered.com",
    "steamstatic.com",
    "steamusercontent.com",
    "steamgames.com",
    "steam.tv",
    "steamdeck.com",
    "twitch.tv",
    "twitchcdn.net",
    "twitchsvc.net",
    "twitchstatus.com",
    "epicgames.com",
    "roblox.com",
    "paypal.com",
    "paypal.me",
    "youtube.com",
    "youtu.be",
    "youtubekids.com",
    "instagram.com",
    "tiktok.com",
    "twitter.com",
    "x.com",
    "google.com",
    "microsoft.com",
    "apple.com",
    "netflix.com",
    "spotify.com",
    "binance.com",
    "coinbase.com",
    "metamask.io",
    "opensea.io",
    "riotgames.com",
    "playvalorant.com",
    "minecraft.net",
    "playstation.com",
];

/// URL shorteners: the default `link-shorteners` rule's `deny_domains`.
pub const SHORTENERS: &[&str] = &[
    "bit.ly",
    "bitly.com",
    "cutt.ly",
    "tinyurl.com",
    "goo.gl",
    "is.gd",
    "v.gd",
    "ow.ly",
    "t.ly",
    "rebrand.ly",
    "shorturl.at",
    "tiny.cc",
    "rb.gy",
    "s.id",
    "bl.ink",
    "shorte.st",
    "adf.ly",
    "clck.ru",
    "qrco.de",
    "gg.gg",
    "u.to",
    "short.gy",
];

/// Top-level domains mostly registered for spam and phishing: the default `risky-tlds` rule's
/// `deny_tlds`.
pub const RISKY_TLDS: &[&str] = &[
    "xyz", "top", "click", "icu", "cfd", "sbs", "buzz", "cyou", "monster", "rest", "bond", "gift",
    "bet", "date", "cam", "loan", "win", "bid", "gq", "tk", "ml", "cf", "ga", "pw", "su",
];

/// The built-in lists, compiled once.
struct BuiltIn {
    brands: Vec<Brand>,
    official: Vec<String>,
    shorteners: Vec<String>,
    tlds: Vec<String>,
}

static BUILT_IN: std::sync::LazyLock<BuiltIn> = std::sync::LazyLock::new(|| {
    let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
    BuiltIn {
        brands: SCAMMED_BRANDS.iter().map(|b| Brand::new(b)).collect(),
        official: owned(OFFICIAL_DOMAINS),
        shorteners: owned(SHORTENERS),
        tlds: owned(RISKY_TLDS),
    }
});

/// What the links of a normalised text show, by the built-in lists (never an admin's rules:
/// a model reads these as inputs and must see the definition it was trained on). The same
/// tests as the `link` rule's: [`lookalike_of`] with the official domains allowed, a
/// [`denied_tld`], and a shortener's domain or subdomain.
pub fn link_signals(normalized_text: &str) -> crate::domain::LinkSignals {
    let lists = &*BUILT_IN;
    let mut signals = crate::domain::LinkSignals::default();
    for typed in crate::engine::normalize::links(normalized_text) {
        signals.links += 1;
        let refanged = crate::engine::normalize::refang(typed);
        let link = refanged.as_deref().unwrap_or(typed);
        let host = link_host(link).to_lowercase();
        let host = host.trim_end_matches('.');
        if domain_matches(host, &lists.official).is_some() {
            continue;
        }
        signals.lookalike |= lookalike_of(host, &lists.brands, &lists.official).is_some();
        signals.risky_tld |= denied_tld(host, &lists.tlds).is_some();
        signals.shortener |= domain_matches(host, &lists.shorteners).is_some();
    }
    signals
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

    #[test]
    fn link_signals_read_the_links_of_the_normalised_text_with_the_built_in_lists() {
        use crate::domain::LinkSignals;
        let of = |text: &str| {
            link_signals(&crate::engine::normalize::normalize(text, &Default::default()).text)
        };
        assert_eq!(
            of("no links here, just gg.wp and readme.md"),
            LinkSignals::default()
        );
        let official = of("clip https://www.twitch.tv/destiny and discord.gg/abc");
        assert_eq!(
            official,
            LinkSignals {
                links: 2,
                ..LinkSignals::default()
            }
        );
        assert_eq!(official.inputs(), [1.0, 1.0, 0.0, 0.0, 0.0]);
        let scam = of("FREE NITRO claim at https://dlscord-gift.com/claim now");
        assert!(
            scam.lookalike && !scam.risky_tld && !scam.shortener,
            "{scam:?}"
        );
        assert_eq!(scam.inputs(), [1.0, 0.0, 1.0, 0.0, 0.0]);
        let tld = of("earn $500 a day -> cashflow.xyz/join");
        assert!(tld.risky_tld && !tld.lookalike, "{tld:?}");
        // Defanged and through a shortener; a subdomain of a shortener counts too.
        let short = of("watch bit[.]ly/3xYz or go.tinyurl.com/abc");
        assert_eq!((short.links, short.shortener), (2, true), "{short:?}");
        // The official domain spelled as subdomains of another host poses; the brand's own
        // subdomain does not.
        assert!(of("steamcommunity.com.gift.ru/tradeoffer").lookalike);
        assert!(!of("https://help.steampowered.com/en").lookalike);
        // Opening brackets and trailing punctuation around a link.
        assert_eq!(of("(see twltch.top/x).").links, 1);
        assert!(of("(see twltch.top/x).").lookalike && of("(see twltch.top/x).").risky_tld);
    }

    /// The spam head reads links with the lists the default rules ship: if one side changes
    /// alone, the head and the rules disagree about the same link without anyone deciding so.
    #[test]
    fn the_built_in_lists_are_the_default_rules_lists() {
        let document = super::super::Document::parse(super::super::DEFAULT_RULES, "built in")
            .expect("the built-in rules parse");
        let list = |id: &str, key: &str| -> Vec<String> {
            let rule = document
                .rules
                .iter()
                .find(|r| r.get("id").and_then(|v| v.as_str()) == Some(id))
                .unwrap_or_else(|| panic!("no default rule {id}"));
            rule["params"][key]
                .as_array()
                .unwrap_or_else(|| panic!("{id}: no {key}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            list("lookalike-domains", "lookalike_brands"),
            strings(SCAMMED_BRANDS)
        );
        assert_eq!(
            list("lookalike-domains", "allow_domains"),
            strings(OFFICIAL_DOMAINS)
        );
        assert_eq!(list("link-shorteners", "deny_domains"), strings(SHORTENERS));
        assert_eq!(list("risky-tlds", "deny_tlds"), strings(RISKY_TLDS));
    }
}
