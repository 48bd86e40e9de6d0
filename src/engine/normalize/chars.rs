//! Character-level folding: what one code point of the original becomes in the folded text,
//! and how it is counted in [`super::TextStats`].

use std::sync::LazyLock;

use unicode_normalization::char::{decompose_compatible, is_combining_mark};
use unicode_properties::{
    GeneralCategory, GeneralCategoryGroup, UnicodeEmoji, UnicodeGeneralCategory,
};

/// Whether `c` is removed outright and counted as invisible: zero-width characters, bidi
/// controls, the soft hyphen, the byte-order mark, variation selectors, tag characters, other
/// format characters (general category Cf), control characters that are not whitespace, and the
/// blank "filler" letters that render as nothing (U+115F, U+1160, U+3164, U+FFA0).
pub(super) fn is_invisible(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control() && !c.is_ascii_whitespace();
    }
    matches!(
        c,
        '\u{034F}' // combining grapheme joiner (a mark that joins nothing visible)
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
            | '\u{180B}'..='\u{180F}' // Mongolian variation selectors and vowel separator
            | '\u{FE00}'..='\u{FE0F}' // variation selectors (emoji presentation included)
            | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    ) || matches!(
        c.general_category(),
        GeneralCategory::Format | GeneralCategory::Control
    )
}

/// Whether `c` is a combining mark (general category M): stripped from the folded text and
/// counted per base character.
pub(super) fn is_mark(c: char) -> bool {
    !c.is_ascii() && is_combining_mark(c)
}

/// How a visible, non-mark character of the original counts in the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StatClass {
    /// Punctuation (general category P).
    Punctuation,
    /// Emoji: a non-ASCII symbol with the Emoji property, a regional indicator or a skin tone.
    Emoji,
    /// Any other symbol (general category S: math, currency, modifiers, box drawing, ...).
    Symbol,
    /// Letters, numbers, separators and the rest.
    Other,
}

/// The statistics class of a visible, non-mark character.
pub(super) fn stat_class(c: char) -> StatClass {
    if c.is_ascii() {
        return match c {
            '$' | '+' | '<' | '=' | '>' | '^' | '`' | '|' | '~' => StatClass::Symbol,
            c if c.is_ascii_punctuation() => StatClass::Punctuation,
            _ => StatClass::Other,
        };
    }
    match c.general_category_group() {
        GeneralCategoryGroup::Punctuation => StatClass::Punctuation,
        GeneralCategoryGroup::Symbol if c.is_emoji_char_or_emoji_component() => StatClass::Emoji,
        GeneralCategoryGroup::Symbol => StatClass::Symbol,
        _ => StatClass::Other,
    }
}

/// Most characters that one character's compatibility form may fold into. A few characters
/// decompose into whole phrases: U+FDFA (ARABIC LIGATURE SALLALLAHOU ALAYHE WASALLAM) into 18
/// characters, 33 bytes from 3, so a message of them would grow elevenfold and everything that
/// holds folded text (rules, the score cache, user state) would pay for it. A character whose
/// form is longer than this is kept as itself: the ones that are (phrase ligatures, squared
/// katakana words) spell nothing Latin that an evasion could hide, so rules lose nothing, and
/// folded text stays within [`super::MAX_EXPANSION`] times the original's bytes.
pub(super) const MAX_FOLDED_CHARS: usize = 4;

/// Folds one visible, non-mark character of the original and hands the result to `emit`, one
/// character at a time: compatibility decomposition (NFKD, which is NFKC followed by NFD), marks
/// dropped, lower-cased, typographic quotes and dashes made ASCII. Each character comes with
/// its Latin lookalike, if it has one ([`confusable`], looked up before lower-casing, since
/// Greek `Η` looks like `H` but `η` like `n`); whether the lookalike is used is decided per
/// word, later, as is leetspeak.
///
/// Hangul syllables are kept whole: NFKD would split them into jamo that NFKC recomposes, and
/// they carry no marks to strip.
pub(super) fn fold_char(c: char, mut emit: impl FnMut(char, Option<&'static str>)) {
    if c.is_ascii() {
        emit(c.to_ascii_lowercase(), None);
        return;
    }
    if ('\u{AC00}'..='\u{D7A3}').contains(&c) {
        emit(c, None);
        return;
    }
    let mut folded_len = 0;
    decompose_compatible(c, |_| folded_len += 1);
    if folded_len > MAX_FOLDED_CHARS {
        // A phrase ligature, kept as the one character it is (see `MAX_FOLDED_CHARS`).
        emit(c, None);
        return;
    }
    decompose_compatible(c, |d| {
        if d.is_ascii() {
            emit(d.to_ascii_lowercase(), None);
            return;
        }
        if is_combining_mark(d) {
            return;
        }
        let alt = confusable(d);
        let mut lowers = d.to_lowercase();
        if let Some(alt) = alt {
            // The lookalike stands for the whole character, however it lower-cases.
            emit(lowers.next().unwrap_or(d), Some(alt));
            return;
        }
        for lower in lowers {
            // Lower-casing can add a mark back (U+0130 İ becomes i + U+0307).
            if !is_combining_mark(lower) {
                emit(fold_punctuation(lower), None);
            }
        }
    });
}

/// Typographic apostrophes, quotes and dashes as their ASCII forms, so `don’t` folds like
/// `don't`.
fn fold_punctuation(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{2032}' | '\u{02BC}' | '\u{FF07}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201F}' | '\u{2033}' => '"',
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        c => c,
    }
}

/// The ASCII letters a non-ASCII letter looks like, if it clearly looks like some: Cyrillic
/// `а` → `a`, Greek `ο` → `o`, Latin `ł` → `l`, small capitals, Cherokee, ...
///
/// The mapping is Unicode's own confusable data (UTS #39 skeletons, through the
/// `unicode-security` crate) restricted to the scripts that chat evasion borrows Latin
/// lookalikes from, and to results made only of ASCII letters. It is computed once, on first
/// use, into a sorted table (about a thousand entries), so a lookup is one binary search.
pub(super) fn confusable(c: char) -> Option<&'static str> {
    static TABLE: LazyLock<Vec<(char, Box<str>)>> = LazyLock::new(build_confusables);
    let table: &'static [(char, Box<str>)] = &TABLE;
    table
        .binary_search_by_key(&c, |entry| entry.0)
        .ok()
        .map(|index| &*table[index].1)
}

/// Script blocks whose letters are folded to Latin lookalikes. Scripts that people write real
/// text in and that merely contain a few round letters (Arabic `ه`, Hebrew `ס`, Georgian,
/// CJK `丫`) are left out on purpose: folding them would invent Latin words.
const CONFUSABLE_BLOCKS: &[(u32, u32)] = &[
    (0x0080, 0x02AF),   // Latin-1, Latin Extended-A/B, IPA
    (0x0370, 0x03FF),   // Greek and Coptic
    (0x0400, 0x052F),   // Cyrillic and its supplement
    (0x0530, 0x058F),   // Armenian
    (0x13A0, 0x13FF),   // Cherokee
    (0x1400, 0x167F),   // Unified Canadian Aboriginal Syllabics (fancy-text generators)
    (0x16A0, 0x16FF),   // Runic (fancy-text generators)
    (0x1C80, 0x1C8F),   // Cyrillic Extended-C
    (0x1D00, 0x1DBF),   // Phonetic extensions (small capitals)
    (0x1E00, 0x1FFF),   // Latin Extended Additional, Greek Extended
    (0x2100, 0x214F),   // Letterlike symbols
    (0x2C60, 0x2CFF),   // Latin Extended-C, Coptic
    (0x2DE0, 0x2DFF),   // Cyrillic Extended-A
    (0xA640, 0xA69F),   // Cyrillic Extended-B
    (0xA4D0, 0xA4FF),   // Lisu (a full set of Latin-capital lookalikes)
    (0xA720, 0xA7FF),   // Latin Extended-D
    (0xAB30, 0xABBF),   // Latin Extended-E, Cherokee supplement
    (0x1D400, 0x1D7FF), // Mathematical alphanumerics (the Greek ones NFKC leaves Greek)
];

/// The small capitals of "fancy text" generators (`ʜᴇʟʟᴏ`) that UTS #39 does not list as
/// confusable with their Latin letter (it does list `ᴄ ᴏ ᴜ ᴠ ᴡ ᴢ`).
const SMALL_CAPITALS: &[(char, &str)] = &[
    ('ᴀ', "a"),
    ('ʙ', "b"),
    ('ᴅ', "d"),
    ('ᴇ', "e"),
    ('ꜰ', "f"),
    ('ɢ', "g"),
    ('ʜ', "h"),
    ('ɪ', "i"),
    ('ᴊ', "j"),
    ('ᴋ', "k"),
    ('ʟ', "l"),
    ('ᴍ', "m"),
    ('ɴ', "n"),
    ('ᴘ', "p"),
    ('ꞯ', "q"),
    ('ʀ', "r"),
    ('ꜱ', "s"),
    ('ᴛ', "t"),
    ('ʏ', "y"),
];

fn build_confusables() -> Vec<(char, Box<str>)> {
    let mut table = Vec::new();
    for &(first, last) in CONFUSABLE_BLOCKS {
        for c in (first..=last).filter_map(char::from_u32) {
            if !c.is_alphabetic() || is_mark(c) {
                continue;
            }
            // Letters that fold to ASCII by decomposition (é, ｆ, 𝐟) need no entry.
            let mut folds_to_ascii = true;
            decompose_compatible(c, |d| {
                folds_to_ascii &= d.is_ascii() || is_combining_mark(d)
            });
            if folds_to_ascii {
                continue;
            }
            if let Some(ascii) = ascii_lookalike(c) {
                table.push((c, ascii.into_boxed_str()));
            }
        }
    }
    for &(c, ascii) in SMALL_CAPITALS {
        if !table.iter().any(|entry| entry.0 == c) {
            table.push((c, ascii.into()));
        }
    }
    table.sort_unstable_by_key(|entry| entry.0);
    table
}

/// The skeleton of `c` if it is one to three ASCII letters once marks are dropped, lower-cased.
/// An upper-case letter whose skeleton is `l` reads as `I` (the skeleton's prototype for
/// `I`-like glyphs is `l`), so it folds to `i`. When `c` itself has no such skeleton, its
/// lower-case form is tried, and for Cyrillic its upper-case form last: Cyrillic lower-case
/// letters are small capitals of the upper-case ones (`к` reads as `K`, `т` as `T`), unlike
/// Greek, whose `μ` does not read as `M`.
fn ascii_lookalike(c: char) -> Option<String> {
    let mut candidates = vec![c];
    let mut lower = c.to_lowercase();
    if let (Some(l), None) = (lower.next(), lower.next()) {
        candidates.push(l);
    }
    if ('\u{0400}'..='\u{052F}').contains(&c) {
        let mut upper = c.to_uppercase();
        if let (Some(u), None) = (upper.next(), upper.next()) {
            candidates.push(u);
        }
    }
    candidates.into_iter().find_map(|candidate| {
        let mut buffer = [0u8; 4];
        let mut out = String::new();
        for s in unicode_security::skeleton(candidate.encode_utf8(&mut buffer)) {
            if !is_combining_mark(s) {
                out.extend(s.to_lowercase());
            }
        }
        if out == "l" && candidate.is_uppercase() {
            out = "i".to_owned();
        }
        (!out.is_empty() && out.len() <= 3 && out.bytes().all(|b| b.is_ascii_lowercase()))
            .then_some(out)
    })
}

/// The letter a leetspeak digit or symbol stands for, inside a token that qualifies (see the
/// module documentation). `1` is `i` here; a run of two or more `1`s is `l` (see
/// [`super`]'s rules), which the caller decides.
pub(super) fn leet(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' | '!' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' | '+' => 't',
        _ => return None,
    })
}

/// The words a leetspeak spelling with digits only at its edges may fold into
/// (`edge_leet_words.txt`: one per line, `#` comments).
static EDGE_LEET_WORDS: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| {
        include_str!("edge_leet_words.txt")
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    });

/// Single `1`s read both ways at most this many times in a word (2^3 spellings).
const MAX_AMBIGUOUS_ONES: usize = 3;

/// The letters of a word whose leet digits (and symbols) are only at its edges, if read as
/// letters it is one of [`EDGE_LEET_WORDS`]: every character of `word` must be a letter or a
/// leet digit or symbol, at least one of them the latter. A run of `1`s is `l`s; a single `1` is
/// tried as `i`, then as `l` (`1diot`, `1oser`). The lookup squeezes runs of three or more of a
/// letter to two (`fr333` → `free`) and allows a final `s` (`1diots`). Returns one letter per
/// character of `word`.
pub(super) fn edge_leet_word(word: impl Iterator<Item = char>) -> Option<Vec<char>> {
    let chars: Vec<char> = word.collect();
    if chars.len() > 32 || chars.iter().all(|c| c.is_alphabetic()) {
        return None;
    }
    let mut folded = Vec::with_capacity(chars.len());
    let mut ambiguous = Vec::new();
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        if c.is_alphabetic() {
            if !c.is_ascii_lowercase() {
                return None;
            }
            folded.push(c);
        } else if c == '1' {
            let ones = chars[k..].iter().take_while(|&&c| c == '1').count();
            if ones == 1 {
                ambiguous.push(folded.len());
            }
            folded.extend(std::iter::repeat_n(if ones >= 2 { 'l' } else { 'i' }, ones));
            k += ones;
            continue;
        } else {
            folded.push(leet(c)?);
        }
        k += 1;
    }
    if ambiguous.len() > MAX_AMBIGUOUS_ONES {
        return None;
    }
    let mut text = String::with_capacity(folded.len());
    for choice in 0u32..(1 << ambiguous.len()) {
        for (bit, &at) in ambiguous.iter().enumerate() {
            folded[at] = if choice & (1 << bit) == 0 { 'i' } else { 'l' };
        }
        text.clear();
        for &c in &folded {
            let doubled =
                text.len() >= 2 && text.ends_with([c]) && text[..text.len() - 1].ends_with([c]);
            if !doubled {
                text.push(c);
            }
        }
        let listed = |w: &str| w.len() >= 3 && EDGE_LEET_WORDS.contains(w);
        if listed(&text) || text.strip_suffix('s').is_some_and(listed) {
            return Some(folded);
        }
    }
    None
}

/// Symbols that stand for letters in leetspeak (digits are the others).
pub(super) fn is_leet_symbol(c: char) -> bool {
    matches!(c, '@' | '$' | '!' | '+')
}

/// A rough "is this an emoji" for statistics; see [`StatClass::Emoji`].
#[cfg(test)]
pub(super) fn is_emoji(c: char) -> bool {
    stat_class(c) == StatClass::Emoji
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusables_fold_the_usual_lookalikes() {
        for (c, expected) in [
            ('а', "a"),
            ('е', "e"),
            ('о', "o"),
            ('р', "p"),
            ('с', "c"),
            ('х', "x"),
            ('і', "i"),
            ('ѕ', "s"),
            ('к', "k"),
            ('т', "t"),
            ('ο', "o"),
            ('α', "a"),
            ('ι', "i"),
            ('Ι', "i"),
            ('І', "i"),
            ('Η', "h"),
            ('η', "n"),
            ('ł', "l"),
            ('ø', "o"),
            ('ı', "i"),
            ('ᴄ', "c"),
            ('æ', "ae"),
        ] {
            assert_eq!(confusable(c), Some(expected), "{c:?} U+{:04X}", c as u32);
        }
        // Real letters of other scripts, and non-letters, stay.
        for c in ['ß', 'я', 'д', 'и', 'ה', 'ا', '日', '한', 'a', '😀', '€'] {
            assert_eq!(confusable(c), None, "{c:?}");
        }
    }

    #[test]
    fn fold_char_decomposes_and_lowercases() {
        let fold = |c: char| {
            let mut out = String::new();
            fold_char(c, |d, _| out.push(d));
            out
        };
        assert_eq!(fold('É'), "e");
        assert_eq!(fold('ｆ'), "f");
        assert_eq!(fold('𝐅'), "f");
        assert_eq!(fold('ﬁ'), "fi");
        assert_eq!(fold('İ'), "i");
        assert_eq!(fold('①'), "1");
        assert_eq!(fold('’'), "'");
        assert_eq!(fold('한'), "한");
        assert_eq!(fold('Д'), "д");
        let mut alts = Vec::new();
        fold_char('Η', |d, alt| alts.push((d, alt)));
        fold_char('η', |d, alt| alts.push((d, alt)));
        assert_eq!(alts, [('η', Some("h")), ('η', Some("n"))]);
    }

    #[test]
    fn character_classes() {
        for c in [
            '\u{200B}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{202E}',
        ] {
            assert!(is_invisible(c), "{c:?}");
        }
        for c in [
            '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{FE0F}', '\u{3164}',
        ] {
            assert!(is_invisible(c), "{c:?}");
        }
        assert!(!is_invisible(' ') && !is_invisible('a') && !is_invisible('😀'));
        assert!(is_mark('\u{0301}') && is_mark('\u{20E3}') && !is_mark('a'));
        assert!(is_emoji('😀') && is_emoji('❤') && is_emoji('\u{1F3FD}'));
        assert!(!is_emoji('€') && !is_emoji('#') && !is_emoji('1'));
        assert_eq!(stat_class('!'), StatClass::Punctuation);
        assert_eq!(stat_class('¿'), StatClass::Punctuation);
        assert_eq!(stat_class('€'), StatClass::Symbol);
        assert_eq!(stat_class('═'), StatClass::Symbol);
        assert_eq!(stat_class('$'), StatClass::Symbol);
        assert_eq!(stat_class('a'), StatClass::Other);
    }
}
