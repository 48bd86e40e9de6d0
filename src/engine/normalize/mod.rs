//! Chat-aware text normalisation: the one folded form of a message that the rules and the
//! model see, with a map back to what the user actually typed.
//!
//! [`normalize`] is pure (no I/O, no allocation beyond its result and a few scratch buffers) and
//! never panics, whatever the input. It runs on every chat message.
//!
//! # What folding does
//!
//! The message is split on whitespace into chunks, and each chunk is first tried, on the
//! original characters (invisible ones skipped), as one of the tokens that are never folded:
//!
//! - **Emote**: the whole chunk is a name of the channel's [`EmoteSet`], case-sensitively,
//!   optionally with destiny.gg modifiers (`PepeLaugh:wide`). Kept verbatim (the modifiers are
//!   dropped from the folded text but covered by the token's original span).
//! - **Mention**: `@` and a destiny.gg nick (3–20 of `A-Za-z0-9_`). A bare nick is a word.
//!   Folded to lower case (nicks compare case-insensitively).
//! - **Link**: `http(s)://...`, `www....`, or a bare `host.tld/...` whose TLD is one that chat
//!   links use (`e.g.`, `lol..`, `readme.md` are not links). Only the scheme and host are
//!   lower-cased; the path is kept exactly. Trailing sentence punctuation is not part of it.
//!
//! Opening brackets or quotes before a mention or link, and whatever follows it in the chunk,
//! are folded as ordinary text. Everything else is folded character by character:
//!
//! 1. Invisible characters are removed and counted: zero-width characters (U+200B..U+200D,
//!    U+2060, U+FEFF), the soft hyphen, bidi controls (U+200E/F, U+202A..U+202E,
//!    U+2066..U+2069), every other format or control character, variation selectors and the
//!    Hangul filler letters. An emoji ZWJ sequence thus becomes its emoji side by side.
//! 2. NFKC, then NFD, then every combining mark stripped (implemented as NFKD without the
//!    marks, which is the same thing): fullwidth and mathematical letters become ASCII, accents
//!    come off (`é` → `e`), zalgo disappears. Marks are counted per base character for
//!    [`TextStats::max_combining_run`]. Hangul syllables are kept composed.
//! 3. Lower case; typographic quotes and dashes become ASCII (`don’t` → `don't`).
//! 4. Words are found: runs of letters and digits, with `'` between letters, `.`/`,` between
//!    digits (`3.14`, `1,000`), and leetspeak symbols (`@ $ ! +`) between letters or digits
//!    (plus a leading `$` or up to two trailing `$` next to a letter: `$hit`, `a$$`; a leading
//!    `@` is left to mentions).
//! 5. Confusables: a word whose non-ASCII letters *all* have a clear Latin lookalike gets them
//!    folded when it also has ASCII letters (`hеllо` with Cyrillic е, о → `hello`), or when it
//!    is made only of lookalikes (`ѕсаm`, `ʜᴇʟʟᴏ` → `scam`, `hello`) and the message has no
//!    genuine non-Latin word. A word with a letter that has no lookalike is real text of its
//!    script and stays (`привет`), and so does every all-lookalike word of such a message
//!    (`привет как дела` keeps `как`). The lookalikes come from Unicode's confusables data
//!    (UTS #39), see [`chars::confusable`].
//! 6. Leetspeak (see below).
//! 7. Spaced-out letters are joined (see below).
//! 8. Runs of three or more of the same character shrink to two (`noooooo` → `noo`, `!!!!!!` →
//!    `!!`), except digits (`2000` stays) and except inside emotes, links and mentions. Of a
//!    squeezed run, the first kept character maps to the run's first original character and the
//!    second to its last, so a span over both covers the whole run.
//! 9. Whitespace runs become one space; leading and trailing whitespace goes.
//!
//! ## The leetspeak rule
//!
//! Digits and symbols are read as letters (`0`→o, `1`→i, `11`→ll, `3`→e, `4`→a, `5`→s, `7`→t,
//! `@`→a, `$`→s, `!`→i, `+`→t; other digits stay) only in a word that has **at least two
//! letters** (or one and two leet symbols: `a$$`) and **a digit or leet symbol between two of
//! its letters** (or a leading or trailing `$` next to a letter). Then every leet character of the word folds, the edges
//! included: `h3ll0` → `hello`, `n1gg3r`-style evasions fold, `5h1t` → `shit`, `$hit` → `shit`,
//! `he11o` → `hello`.
//!
//! A word of at least two letters whose digits are **only at its edges** (`5hit`, `fr33`,
//! `1diot`, `ki11`, `nitr0`) folds only when the folded word — a single `1` read as `i` or
//! as `l`, runs of three letters or more squeezed, a final `s` allowed — is one evaders disguise:
//! abuse, threats, sexual harassment, spam and scam words (`edge_leet_words.txt`, about 240
//! words; see [`chars::edge_leet_word`]).
//!
//! Otherwise nothing folds, so numbers and the common mixed chat terms stay as typed: `2024`,
//! `3 o'clock`, `top 10`, `20%` (no letters); `1v1`, `4k`, `b4` (one letter); `60fps`,
//! `1080p`, `mp3`, `ps5`, `gr8`, `5head`, `5am`, `3rd` (digits only at the edges, as units or
//! versions, and no listed word).
//!
//! ## The spaced-letter rule
//!
//! Three or more single letters in a row, each separated from the next by the same gap
//! (whitespace and/or at most one punctuation character), are joined: `f u c k`, `f.u.c.k`,
//! `f-u-c-k`, `f. u. c. k` → `fuck`; `e.g. i.e.` stays (its gaps differ). Single leet digits may be inside such a run (not at its ends) when it has at least
//! three letters (`n 1 g g 3 r` joins; `i <3 u` does not). `I am a dog` stays as it is (`am`
//! is no single letter). The joined word maps back to the span from its first letter to its last.
//! Lists of initials join too (`a, b, c` → `abc`), which is harmless for matching; a single
//! `a` or `i` right before spaced letters is swallowed (`a f u c k` → `afuck`), since nothing
//! tells the article from a spaced letter.
//!
//! # Statistics
//!
//! [`TextStats`] counts the original text. `non_ascii` counts every non-ASCII code point
//! (emoji, marks and invisible characters included), which is what destiny.gg's own bot counts
//! for its non-ASCII flood rule; `emoji` counts the emoji among them so that a rule can spare
//! them. `punctuation` is general category P, `symbols` is category S without the emoji.
//!
//! # Choice of crates
//!
//! `unicode-normalization` does NFKD and tells combining marks; `unicode-properties` gives
//! general categories and emoji properties (both were already in the dependency tree).
//! Confusables use `unicode-security`'s UTS #39 `skeleton()` (it adds only `unicode-script`):
//! it is Unicode's own data, the same the Rust compiler uses for its confusable-identifier lint,
//! and conservative. The skeleton is computed per character once, into a table, so folding keeps
//! a per-character map back to the original. `decancer` was rejected: its tables fold far too
//! much for chat (emoji `😀` and `❤` to `o`, `日` to `8`, `丂` to `5`, `ß` to `b`, Cyrillic
//! `д` to `a`), and its `cure()` reorders bidi text and returns no map back to positions.

mod chars;
mod detect;
#[cfg(test)]
mod tests;

use std::ops::Range;

pub use detect::{EmoteSet, refang};

use crate::domain::Span;

/// A message's text normalised for matching, with its tokens, statistics and a map back to the
/// original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized<'a> {
    /// The text exactly as typed.
    pub original: &'a str,
    /// The folded text that rules and models see.
    pub text: String,
    /// The tokens of [`Normalized::text`], in order of appearance.
    pub tokens: Vec<Token>,
    /// Counts over the original text.
    pub stats: TextStats,
    /// `origin[i]` is the code point of the original that folded byte `i` came from; one extra
    /// entry at the end holds the original's length in code points, so an exclusive end maps
    /// too. Never decreasing.
    origin: Vec<u32>,
}

/// One token of the folded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What the token is.
    pub kind: TokenKind,
    /// Its bytes in [`Normalized::text`].
    pub folded: Range<usize>,
    /// The code points of the original it came from (an emote's modifiers included).
    pub original: Span,
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A word: letters, possibly with digits (`1v1`, `h3ll0` folded to `hello`).
    Word,
    /// A number: digits, possibly with `.`/`,` between them.
    Number,
    /// An emote of the channel's [`EmoteSet`], verbatim.
    Emote,
    /// A link, scheme and host lower-cased, path verbatim.
    Link,
    /// An `@nick` mention, lower-cased.
    Mention,
}

/// Counts over the original text (see the module documentation for the choices).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextStats {
    /// Code points.
    pub chars: u32,
    /// Alphabetic characters outside emote, link and mention tokens.
    pub letters: u32,
    /// Upper-case letters outside emote, link and mention tokens (for the caps ratio).
    pub uppercase: u32,
    /// Non-ASCII code points, all of them (emoji, marks, invisible characters included), as
    /// destiny.gg's bot counts them.
    pub non_ascii: u32,
    /// Emoji (non-ASCII symbols with the Emoji property, skin tones, regional indicators).
    pub emoji: u32,
    /// Punctuation characters (general category P), ASCII or not.
    pub punctuation: u32,
    /// Other symbols (general category S: math, currency, box drawing, ...), emoji excluded.
    pub symbols: u32,
    /// Combining marks, all of them.
    pub combining_marks: u32,
    /// The most combining marks stacked on one base character (zalgo).
    pub max_combining_run: u32,
    /// Invisible characters removed (zero-width, bidi controls, other format characters).
    pub invisible: u32,
    /// Emote tokens.
    pub emotes: u32,
    /// Link tokens.
    pub links: u32,
    /// Mention tokens.
    pub mentions: u32,
    /// Word and number tokens (after spaced letters are joined).
    pub words: u32,
}

/// The folded text of a message is at most this many times its original's bytes, whatever the
/// message (a test checks every character). Compatibility forms are what could grow a text:
/// one of more than four characters is not used (see `chars::MAX_FOLDED_CHARS`), which keeps
/// U+FDFA's 18 characters from turning 4 KiB of chat into 45.
pub const MAX_EXPANSION: usize = 4;

/// The links of a normalised text ([`Normalized::text`]), as written there (possibly
/// defanged: see [`refang`]): every space-separated chunk that, after any opening brackets or
/// quotes, starts with what [`normalize`] takes for a link. Links keep their characters in
/// the folded text, so these are the message's links, plus any that folding revealed
/// (`ｄｉｓｃｏｒｄ．ｇｇ/x` in fullwidth letters reads `discord.gg/x` here).
pub fn links(normalized_text: &str) -> impl Iterator<Item = &str> {
    normalized_text.split(' ').filter_map(|chunk| {
        let rest = chunk.trim_start_matches(['(', '[', '{', '<', '"', '\'']);
        detect::match_link(rest).and_then(|link| rest.get(..link.len))
    })
}

/// Normalises one chat message. `emotes` are the channel's emotes; pass an empty set (or
/// `EmoteSet::default()`) to fold a configured phrase the same way as messages.
pub fn normalize<'a>(text: &'a str, emotes: &EmoteSet) -> Normalized<'a> {
    let mut builder = Builder::new(text.len(), emotes);
    let chars = builder.scan(text);
    builder.fold_lookalike_words();
    builder.join_spaced_letters();
    builder.finish(text, chars)
}

/// A [`Normalized`] without its borrow of the original text, so that a message's two stages
/// (consulting the model, then deciding) fold its text once: [`Normalized::detach`], then
/// [`Folded::attach`] to the same text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    text: String,
    tokens: Vec<Token>,
    stats: TextStats,
    origin: Vec<u32>,
    /// The original's length in bytes, checked when attached again.
    original_len: usize,
}

impl Folded {
    /// The normalised form of `original` again, or `None` if `original` cannot be the text it
    /// was folded from (another length).
    pub fn attach(self, original: &str) -> Option<Normalized<'_>> {
        (original.len() == self.original_len).then_some(Normalized {
            original,
            text: self.text,
            tokens: self.tokens,
            stats: self.stats,
            origin: self.origin,
        })
    }
}

impl Normalized<'_> {
    /// The folded form without its borrow of the original (see [`Folded`]).
    pub fn detach(self) -> Folded {
        Folded {
            original_len: self.original.len(),
            text: self.text,
            tokens: self.tokens,
            stats: self.stats,
            origin: self.origin,
        }
    }
}

impl Normalized<'_> {
    /// The original code-point span that the folded byte range came from. The end maps through
    /// the range's last byte, so characters that one original character expanded into do not
    /// stretch the span. Out-of-range or reversed ranges are clamped, never a panic.
    pub fn span(&self, folded: Range<usize>) -> Span {
        let len = self.text.len();
        let start = folded.start.min(len);
        let end = folded.end.min(len).max(start);
        let at = |i: usize| self.origin.get(i).copied().unwrap_or(0);
        if start == end {
            Span {
                start: at(start),
                end: at(start),
            }
        } else {
            Span {
                start: at(start),
                end: at(end - 1).saturating_add(1),
            }
        }
    }

    /// The original text of a span (clamped to the original).
    pub fn original_text(&self, span: Span) -> String {
        self.original
            .chars()
            .skip(span.start as usize)
            .take(span.end.saturating_sub(span.start) as usize)
            .collect()
    }

    /// The folded text of a token (empty for a token of another text).
    pub fn token_text(&self, token: &Token) -> &str {
        self.text.get(token.folded.clone()).unwrap_or_default()
    }

    /// The word and number tokens: what unique-word ratios and long-word rules count.
    pub fn words(&self) -> impl Iterator<Item = &Token> {
        self.tokens
            .iter()
            .filter(|token| matches!(token.kind, TokenKind::Word | TokenKind::Number))
    }

    /// The tokens of one kind.
    pub fn tokens_of(&self, kind: TokenKind) -> impl Iterator<Item = &Token> {
        self.tokens.iter().filter(move |token| token.kind == kind)
    }
}

/// One character of the folded text before it is written out, with the original code point it
/// came from.
#[derive(Debug, Clone, Copy)]
struct Unit {
    ch: char,
    orig: u32,
    /// The ASCII letters `ch` looks like, used if its whole word has such lookalikes.
    alt: Option<&'static str>,
}

impl Unit {
    fn new(ch: char, orig: u32) -> Self {
        Self {
            ch,
            orig,
            alt: None,
        }
    }
}

/// A piece of the folded text before spaced letters are joined and the text is written out.
#[derive(Debug, Clone)]
struct Item {
    kind: ItemKind,
    /// Its characters in `Builder::units` (empty for a space).
    units: Range<usize>,
    original: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Token(TokenKind),
    /// Punctuation, symbols, emoji: anything between tokens but whitespace.
    Punct,
    /// Whitespace (written as one space, only between other items).
    Space,
}

/// One visible character of the current chunk.
#[derive(Debug, Clone, Copy)]
struct ChunkChar {
    ch: char,
    orig: u32,
    /// Its byte offset in `Builder::chunk_text`.
    byte: usize,
    mark: bool,
}

struct Builder<'e> {
    emotes: &'e EmoteSet,
    stats: TextStats,
    units: Vec<Unit>,
    items: Vec<Item>,
    /// The current whitespace-separated chunk, invisible characters left out.
    chunk: Vec<ChunkChar>,
    chunk_text: String,
    /// Scratch: the folded characters of one text segment.
    segment: Vec<Unit>,
    /// Items (indices) of words made only of Latin lookalikes, folded at the end unless
    /// `foreign_words`.
    lookalike_words: Vec<usize>,
    /// Whether the message has a word of a non-Latin script that is not all lookalikes.
    foreign_words: bool,
}

impl<'e> Builder<'e> {
    fn new(len: usize, emotes: &'e EmoteSet) -> Self {
        Self {
            emotes,
            stats: TextStats::default(),
            units: Vec::with_capacity(len + 8),
            items: Vec::with_capacity(len / 3 + 4),
            chunk: Vec::with_capacity(32),
            chunk_text: String::with_capacity(64),
            segment: Vec::with_capacity(64),
            lookalike_words: Vec::new(),
            foreign_words: false,
        }
    }

    /// Reads the original once: statistics, chunks, and every chunk folded into items.
    /// Returns the original's length in code points.
    fn scan(&mut self, text: &str) -> u32 {
        let mut index = 0u32;
        let mut mark_run = 0u32;
        for c in text.chars() {
            let orig = index;
            index = index.saturating_add(1);
            if !c.is_ascii() {
                self.stats.non_ascii += 1;
            }
            if c.is_whitespace() {
                mark_run = 0;
                self.flush_chunk();
                self.push_space(orig);
                continue;
            }
            if chars::is_invisible(c) {
                self.stats.invisible += 1;
                continue;
            }
            let mark = chars::is_mark(c);
            if mark {
                mark_run = mark_run.saturating_add(1);
                self.stats.combining_marks = self.stats.combining_marks.saturating_add(1);
                self.stats.max_combining_run = self.stats.max_combining_run.max(mark_run);
            } else {
                mark_run = 0;
                match chars::stat_class(c) {
                    chars::StatClass::Punctuation => self.stats.punctuation += 1,
                    chars::StatClass::Symbol => self.stats.symbols += 1,
                    chars::StatClass::Emoji => self.stats.emoji += 1,
                    chars::StatClass::Other => {}
                }
            }
            self.chunk.push(ChunkChar {
                ch: c,
                orig,
                byte: self.chunk_text.len(),
                mark,
            });
            self.chunk_text.push(c);
        }
        self.flush_chunk();
        self.stats.chars = index;
        index
    }

    fn push_space(&mut self, orig: u32) {
        if self
            .items
            .last()
            .is_some_and(|item| item.kind != ItemKind::Space)
        {
            self.items.push(Item {
                kind: ItemKind::Space,
                units: 0..0,
                original: Span {
                    start: orig,
                    end: orig.saturating_add(1),
                },
            });
        }
    }

    /// The chunk index of the character at byte `offset` of the chunk text.
    fn chunk_index(&self, offset: usize) -> usize {
        self.chunk.partition_point(|c| c.byte < offset)
    }

    /// Folds the current chunk into items and clears it.
    fn flush_chunk(&mut self) {
        let n = self.chunk.len();
        if n == 0 {
            return;
        }
        if let Some(name_len) = self.emotes.match_chunk(&self.chunk_text) {
            let name_end = self.chunk_index(name_len);
            self.push_special(TokenKind::Emote, 0..name_end, 0..n, None);
        } else {
            let open = self
                .chunk
                .iter()
                .take_while(|c| matches!(c.ch, '(' | '[' | '{' | '<' | '"' | '\''))
                .count();
            let rest = self
                .chunk
                .get(open)
                .map_or("", |c| &self.chunk_text[c.byte..]);
            let rest_start = self.chunk.get(open).map_or(0, |c| c.byte);
            if let Some(len) = detect::match_mention(rest) {
                let end = self.chunk_index(rest_start + len);
                self.fold_text(0..open);
                self.push_special(TokenKind::Mention, open..end, open..end, Some(end));
                self.fold_text(end..n);
            } else if let Some(link) = detect::match_link(rest) {
                let end = self.chunk_index(rest_start + link.len);
                let host_end = self.chunk_index(rest_start + link.host_end);
                self.fold_text(0..open);
                self.push_special(TokenKind::Link, open..end, open..end, Some(host_end));
                self.fold_text(end..n);
            } else {
                self.fold_text(0..n);
            }
        }
        self.chunk.clear();
        self.chunk_text.clear();
    }

    /// Pushes an unfolded token: the chunk characters `text`, lower-cased up to `lower_end`
    /// (a chunk index; `None` for none), covering the original span of the chunk characters
    /// `covered`.
    fn push_special(
        &mut self,
        kind: TokenKind,
        text: Range<usize>,
        covered: Range<usize>,
        lower_end: Option<usize>,
    ) {
        let start = self.units.len();
        for (i, c) in self.chunk[text.clone()].iter().enumerate() {
            if lower_end.is_some_and(|end| text.start + i < end) {
                for lower in c.ch.to_lowercase() {
                    self.units.push(Unit::new(lower, c.orig));
                }
            } else {
                self.units.push(Unit::new(c.ch, c.orig));
            }
        }
        let (Some(first), Some(last)) = (
            self.chunk.get(covered.start),
            covered.end.checked_sub(1).and_then(|i| self.chunk.get(i)),
        ) else {
            return;
        };
        self.items.push(Item {
            kind: ItemKind::Token(kind),
            units: start..self.units.len(),
            original: Span {
                start: first.orig,
                end: last.orig.saturating_add(1),
            },
        });
    }

    /// Folds the chunk characters `range` as ordinary text: letter statistics, then character
    /// folding, then words.
    fn fold_text(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        let mut segment = std::mem::take(&mut self.segment);
        segment.clear();
        for c in &self.chunk[range] {
            if c.mark {
                continue;
            }
            if c.ch.is_alphabetic() {
                self.stats.letters += 1;
                if c.ch.is_uppercase() {
                    self.stats.uppercase += 1;
                }
            }
            let orig = c.orig;
            chars::fold_char(c.ch, |ch, alt| segment.push(Unit { ch, orig, alt }));
        }
        self.segment_words(&segment);
        self.segment = segment;
    }

    /// Splits folded characters into words, numbers, punctuation and (from decompositions such
    /// as `¨` → space + mark) spaces.
    fn segment_words(&mut self, seg: &[Unit]) {
        let n = seg.len();
        let mut i = 0;
        while i < n {
            if seg[i].ch.is_whitespace() {
                self.push_space(seg[i].orig);
                i += 1;
            } else if starts_run(seg, i) {
                let end = scan_run(seg, i);
                self.push_run(&seg[i..end]);
                i = end;
            } else {
                let end = (i + 1..n)
                    .find(|&j| seg[j].ch.is_whitespace() || starts_run(seg, j))
                    .unwrap_or(n);
                self.push_units(ItemKind::Punct, &seg[i..end]);
                i = end;
            }
        }
    }

    /// Pushes a word run (see [`scan_run`]), leet-folded if it qualifies.
    fn push_run(&mut self, run: &[Unit]) {
        let letters = run.iter().filter(|u| u.ch.is_alphabetic()).count();
        let first = run.iter().position(|u| u.ch.is_alphabetic());
        let last = run.iter().rposition(|u| u.ch.is_alphabetic());
        let interior = match (first, last) {
            (Some(first), Some(last)) => run[first..last]
                .iter()
                .any(|u| u.ch.is_ascii_digit() || chars::is_leet_symbol(u.ch)),
            _ => false,
        };
        let edge_symbol =
            run.first().is_some_and(|u| u.ch == '$') || run.last().is_some_and(|u| u.ch == '$');
        let symbols = run.iter().filter(|u| chars::is_leet_symbol(u.ch)).count();
        if (letters >= 2 || (letters == 1 && symbols >= 2)) && (interior || edge_symbol) {
            let start = self.units.len();
            let mut k = 0;
            while k < run.len() {
                let u = run[k];
                if u.ch == '1' {
                    let ones = run[k..].iter().take_while(|u| u.ch == '1').count();
                    let ch = if ones >= 2 { 'l' } else { 'i' };
                    for u in &run[k..k + ones] {
                        self.units.push(Unit::new(ch, u.orig));
                    }
                    k += ones;
                    continue;
                }
                let ch = if u.ch.is_ascii_digit() || chars::is_leet_symbol(u.ch) {
                    chars::leet(u.ch).unwrap_or(u.ch)
                } else {
                    u.ch
                };
                self.units.push(Unit::new(ch, u.orig));
                k += 1;
            }
            self.fold_confusables(start);
            self.push_item(TokenKind::Word, start);
            return;
        }
        // Digits only at the edges: folded only into a word evaders disguise (`5hit`, `fr33`).
        if letters >= 2
            && let Some(folded) = chars::edge_leet_word(run.iter().map(|u| u.ch))
        {
            let start = self.units.len();
            for (u, ch) in run.iter().zip(folded) {
                self.units.push(Unit::new(ch, u.orig));
            }
            self.fold_confusables(start);
            self.push_item(TokenKind::Word, start);
            return;
        }
        // No leetspeak: symbols are punctuation, the rest words or numbers as typed.
        let mut k = 0;
        while k < run.len() {
            if chars::is_leet_symbol(run[k].ch) {
                self.push_units(ItemKind::Punct, &run[k..k + 1]);
                k += 1;
                continue;
            }
            let end = run[k..]
                .iter()
                .position(|u| chars::is_leet_symbol(u.ch))
                .map_or(run.len(), |p| k + p);
            let part = &run[k..end];
            if part.iter().any(|u| u.ch.is_alphabetic()) {
                let start = self.units.len();
                self.units.extend_from_slice(part);
                self.fold_confusables(start);
                self.push_item(TokenKind::Word, start);
            } else {
                self.push_units(ItemKind::Token(TokenKind::Number), part);
            }
            k = end;
        }
    }

    /// Folds the confusables of the word in `units[start..]` (about to become the next item) if
    /// every non-ASCII letter of it has a Latin lookalike. A word that mixes them with ASCII
    /// letters (`fuсk`) is folded at once; a word made only of lookalikes (`сор`) waits for the
    /// end of the message and is folded only if the message has no genuine non-Latin word, so
    /// real Russian (`как дела`) keeps its script.
    fn fold_confusables(&mut self, start: usize) {
        let mut lookalikes = false;
        let mut ascii_letters = false;
        for u in &self.units[start..] {
            if u.alt.is_some() {
                lookalikes = true;
            } else if u.ch.is_ascii() {
                ascii_letters |= u.ch.is_ascii_alphabetic();
            } else if u.ch.is_alphabetic() {
                // A letter with no lookalike: a real word of its script, unless it is Latin
                // (`straße`).
                self.foreign_words |= u.ch >= '\u{0370}';
                return;
            }
        }
        if !lookalikes {
            return;
        }
        if ascii_letters {
            let folded = self.with_lookalikes(start..self.units.len());
            self.units.truncate(start);
            self.units.extend_from_slice(&folded);
        } else {
            self.lookalike_words.push(self.items.len());
        }
    }

    /// The units of `range` with every lookalike replaced by its ASCII letters.
    fn with_lookalikes(&self, range: Range<usize>) -> Vec<Unit> {
        let mut folded = Vec::with_capacity(range.len() + 2);
        for u in &self.units[range] {
            match u.alt {
                Some(ascii) => folded.extend(ascii.chars().map(|ch| Unit::new(ch, u.orig))),
                None => folded.push(*u),
            }
        }
        folded
    }

    /// Folds the words made only of lookalikes, once the whole message is known (see
    /// [`Builder::fold_confusables`]).
    fn fold_lookalike_words(&mut self) {
        if self.foreign_words {
            return;
        }
        for index in std::mem::take(&mut self.lookalike_words) {
            let Some(range) = self.items.get(index).map(|item| item.units.clone()) else {
                continue;
            };
            let folded = self.with_lookalikes(range);
            let start = self.units.len();
            self.units.extend_from_slice(&folded);
            self.items[index].units = start..self.units.len();
        }
    }

    fn push_units(&mut self, kind: ItemKind, units: &[Unit]) {
        let start = self.units.len();
        self.units.extend_from_slice(units);
        match kind {
            ItemKind::Token(kind) => self.push_item(kind, start),
            _ => self.push_item_kind(kind, start),
        }
    }

    fn push_item(&mut self, kind: TokenKind, start: usize) {
        self.push_item_kind(ItemKind::Token(kind), start);
    }

    /// Pushes an item made of `units[start..]`.
    fn push_item_kind(&mut self, kind: ItemKind, start: usize) {
        let (Some(first), Some(last)) = (self.units.get(start), self.units.last()) else {
            return;
        };
        let original = Span {
            start: first.orig,
            end: last.orig.saturating_add(1),
        };
        self.items.push(Item {
            kind,
            units: start..self.units.len(),
            original,
        });
    }

    /// Joins runs of spaced-out single letters (see the module documentation).
    fn join_spaced_letters(&mut self) {
        let items = std::mem::take(&mut self.items);
        let mut joined = Vec::with_capacity(items.len());
        let mut members: Vec<usize> = Vec::new();
        let mut i = 0;
        while i < items.len() {
            if self.single(&items[i]) != Single::Letter {
                joined.push(items[i].clone());
                i += 1;
                continue;
            }
            members.clear();
            members.push(i);
            let mut k = i;
            // Every gap of a run must look the same (`f.u.c.k`, `f u c k`, `f. u. c. k`), so
            // `e.g. i.e.` is not joined into one word.
            let mut run_gap = None;
            loop {
                let mut j = k + 1;
                let mut punctuation = 0;
                let mut gap = Gap::default();
                while let Some(item) = items.get(j) {
                    match item.kind {
                        ItemKind::Space => gap.space = true,
                        ItemKind::Punct => {
                            punctuation += item.units.len();
                            gap.punctuation = self.units.get(item.units.start).map(|u| u.ch);
                        }
                        ItemKind::Token(_) => break,
                    }
                    j += 1;
                }
                if j == k + 1 || punctuation > 1 || j >= items.len() {
                    break;
                }
                if *run_gap.get_or_insert(gap) != gap || self.single(&items[j]) == Single::No {
                    break;
                }
                members.push(j);
                k = j;
            }
            while members
                .last()
                .is_some_and(|&m| self.single(&items[m]) != Single::Letter)
            {
                members.pop();
            }
            let letters = members
                .iter()
                .filter(|&&m| self.single(&items[m]) == Single::Letter)
                .count();
            let leet = members.len() - letters;
            if members.len() < 3 || (leet > 0 && letters < 3) {
                joined.push(items[i].clone());
                i += 1;
                continue;
            }
            let start = self.units.len();
            for &m in &members {
                let u = self.units[items[m].units.start];
                let ch = if u.ch.is_ascii_digit() {
                    chars::leet(u.ch).unwrap_or(u.ch)
                } else {
                    u.ch
                };
                self.units.push(Unit::new(ch, u.orig));
            }
            let last = members[members.len() - 1];
            joined.push(Item {
                kind: ItemKind::Token(TokenKind::Word),
                units: start..self.units.len(),
                original: Span {
                    start: items[i].original.start,
                    end: items[last].original.end,
                },
            });
            i = last + 1;
        }
        self.items = joined;
    }

    /// Whether an item is a single letter or a single leet digit, for spaced-letter joining.
    fn single(&self, item: &Item) -> Single {
        if item.units.len() != 1 {
            return Single::No;
        }
        let ch = self.units[item.units.start].ch;
        match item.kind {
            ItemKind::Token(TokenKind::Word) if ch.is_alphabetic() => Single::Letter,
            ItemKind::Token(TokenKind::Number) if chars::leet(ch).is_some() => Single::Leet,
            _ => Single::No,
        }
    }

    /// Writes the items out as the folded text with its origin map and tokens.
    fn finish<'a>(self, original: &'a str, chars: u32) -> Normalized<'a> {
        let mut text = String::with_capacity(self.units.len() + 8);
        let mut origin = Vec::with_capacity(self.units.len() + 8);
        let mut tokens = Vec::with_capacity(self.items.len() / 2 + 1);
        let mut stats = self.stats;
        let mut pending_space: Option<u32> = None;
        let push = |text: &mut String, origin: &mut Vec<u32>, ch: char, orig: u32| {
            text.push(ch);
            origin.extend(std::iter::repeat_n(orig, ch.len_utf8()));
        };
        for item in &self.items {
            if item.kind == ItemKind::Space {
                if !text.is_empty() {
                    pending_space = Some(item.original.start);
                }
                continue;
            }
            let units = &self.units[item.units.clone()];
            if units.is_empty() {
                continue;
            }
            if let Some(orig) = pending_space.take() {
                push(&mut text, &mut origin, ' ', orig);
            }
            let start = text.len();
            let squeeze = matches!(
                item.kind,
                ItemKind::Punct | ItemKind::Token(TokenKind::Word)
            );
            let mut k = 0;
            while k < units.len() {
                let ch = units[k].ch;
                let run = units[k..].iter().take_while(|u| u.ch == ch).count();
                if squeeze && run > 2 && !ch.is_ascii_digit() {
                    push(&mut text, &mut origin, ch, units[k].orig);
                    push(&mut text, &mut origin, ch, units[k + run - 1].orig);
                } else {
                    for u in &units[k..k + run] {
                        push(&mut text, &mut origin, u.ch, u.orig);
                    }
                }
                k += run;
            }
            if let ItemKind::Token(kind) = item.kind {
                match kind {
                    TokenKind::Word | TokenKind::Number => stats.words += 1,
                    TokenKind::Emote => stats.emotes += 1,
                    TokenKind::Link => stats.links += 1,
                    TokenKind::Mention => stats.mentions += 1,
                }
                tokens.push(Token {
                    kind,
                    folded: start..text.len(),
                    original: item.original,
                });
            }
        }
        origin.push(chars);
        Normalized {
            original,
            text,
            tokens,
            stats,
            origin,
        }
    }
}

/// What separates two spaced-out letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Gap {
    space: bool,
    punctuation: Option<char>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Single {
    Letter,
    Leet,
    No,
}

fn is_alnum(u: Option<&Unit>) -> bool {
    u.is_some_and(|u| u.ch.is_alphanumeric())
}

fn is_alpha(u: Option<&Unit>) -> bool {
    u.is_some_and(|u| u.ch.is_alphabetic())
}

/// Whether a word run starts at `seg[i]`: a letter or digit, or a `$` right before a letter
/// and not right after a letter or digit. (A leading `@` is a mention's, not leetspeak.)
fn starts_run(seg: &[Unit], i: usize) -> bool {
    let c = seg[i].ch;
    c.is_alphanumeric()
        || (c == '$'
            && is_alpha(seg.get(i + 1))
            && !is_alnum(i.checked_sub(1).and_then(|p| seg.get(p))))
}

/// The end of the word run starting at `seg[start]` (see the module documentation, step 4).
fn scan_run(seg: &[Unit], start: usize) -> usize {
    let mut j = start + 1;
    while let Some(u) = seg.get(j) {
        let prev = seg.get(j - 1);
        let next = seg.get(j + 1);
        let c = u.ch;
        let joins = c.is_alphanumeric()
            || (c == '\'' && is_alpha(prev) && is_alpha(next))
            || (matches!(c, '.' | ',')
                && prev.is_some_and(|p| p.ch.is_numeric())
                && next.is_some_and(|n| n.ch.is_numeric()))
            || (matches!(c, '!' | '+' | '@') && is_alnum(prev) && is_alnum(next));
        if joins {
            j += 1;
        } else if c == '$' && is_alnum(prev) {
            let dollars = seg[j..].iter().take(3).take_while(|u| u.ch == '$').count();
            let after = seg.get(j + dollars);
            if dollars <= 2 && is_alnum(after) {
                j += dollars;
            } else if dollars <= 2 && is_alpha(prev) {
                // Trailing `$` after a letter (`a$$`) ends the run.
                return j + dollars;
            } else {
                break;
            }
        } else {
            break;
        }
    }
    j
}
