//! Table-driven tests of [`normalize`]: one `check(input, expected_folded)` helper, plus tokens,
//! statistics, spans and a no-panic sweep over adversarial strings.

use super::*;
use crate::corpus::Rng;

fn emotes() -> EmoteSet {
    EmoteSet::new([
        "PepeLaugh",
        "OMEGALUL",
        "Kappa",
        "LUL",
        "PogU",
        "monkaS",
        "YEE",
        "FeelsBadMan",
    ])
}

/// The invariants every result holds, whatever the input.
fn check_invariants(n: &Normalized<'_>) {
    let chars = n.original.chars().count() as u32;
    assert_eq!(n.origin.len(), n.text.len() + 1, "origin map length");
    assert_eq!(*n.origin.last().unwrap(), chars);
    assert!(
        n.origin.windows(2).all(|w| w[0] <= w[1]),
        "origin map decreases"
    );
    assert!(n.origin[..n.text.len()].iter().all(|&o| o < chars));
    assert_eq!(n.stats.chars, chars);
    assert!(
        n.text.len() <= MAX_EXPANSION * n.original.len(),
        "{} bytes folded from {}",
        n.text.len(),
        n.original.len()
    );
    assert!(!n.text.starts_with(' ') && !n.text.ends_with(' ') && !n.text.contains("  "));
    let mut previous_end = 0;
    for token in &n.tokens {
        assert!(token.folded.start >= previous_end && token.folded.end > token.folded.start);
        assert!(n.text.is_char_boundary(token.folded.start));
        assert!(n.text.is_char_boundary(token.folded.end));
        assert!(token.original.start < token.original.end && token.original.end <= chars);
        previous_end = token.folded.end;
    }
    let count = |kind| n.tokens_of(kind).count() as u32;
    assert_eq!(n.stats.emotes, count(TokenKind::Emote));
    assert_eq!(n.stats.links, count(TokenKind::Link));
    assert_eq!(n.stats.mentions, count(TokenKind::Mention));
    assert_eq!(n.stats.words, n.words().count() as u32);
    assert!(n.stats.uppercase <= n.stats.letters && n.stats.letters <= chars);
}

/// One table row: the input and its expected folded text.
fn check(input: &str, expected: &str) {
    let n = normalize(input, &emotes());
    assert_eq!(n.text, expected, "input {input:?}");
    check_invariants(&n);
}

#[test]
fn whitespace_and_case() {
    check("", "");
    check("   ", "");
    check("Hello   World", "hello world");
    check("  lead and trail \t", "lead and trail");
    check("a\t\n\u{3000}b", "a b");
    check("\u{200B}", "");
    check(" \u{200B} x \u{200B} ", "x");
    check("FREE   Nitro!!", "free nitro!!");
    check("İ free nitro", "i free nitro");
    check("Straße", "straße");
    check("don’t “quote”", "don't \"quote\"");
}

#[test]
fn unicode_forms_fold() {
    // Fullwidth, mathematical and enclosed letters via NFKC.
    check("ｆｕｃｋ", "fuck");
    check("𝐟𝐮𝐜𝐤 𝓯𝓾𝓬𝓴 𝕗𝕦𝕔𝕜", "fuck fuck fuck");
    check("ⓕⓤⓒⓚ", "fuck");
    check("ﬁne", "fine");
    // Accents come off after NFD.
    check("Café naïve Ångström", "cafe naive angstrom");
    // Zero-width and soft hyphens inside a word.
    check("f\u{200B}u\u{200C}c\u{200D}k", "fuck");
    check("fu\u{00AD}ck i\u{2060}di\u{FEFF}ot", "fuck idiot");
    // Bidi controls.
    check(
        "\u{202E}hello\u{202C} \u{2066}world\u{2069}\u{200F}",
        "hello world",
    );
    // Zalgo, light and heavy.
    check("z̷̢̛͔a̸l̴g̵o̶", "zalgo");
    check(
        &format!("a{}b", "\u{0336}\u{0489}\u{20DD}".repeat(300)),
        "ab",
    );
    // A lone combining mark is nothing.
    check("\u{0301}", "");
    check("\u{0301} x", "x");
}

#[test]
fn confusables_fold_only_lookalike_words() {
    check("fuсk", "fuck"); // Cyrillic с
    check("hеllо", "hello"); // Cyrillic е, о
    check("ΗΕLLΟ", "hello"); // Greek capitals
    check("gοοgle", "google"); // Greek ο
    check("ʜᴇʟʟᴏ", "hello"); // small capitals
    check("іdіоt", "idiot"); // Cyrillic і, о
    check("ѕсаm", "scam");
    check("КАРРА", "kappa"); // Cyrillic capitals (no emote: not the exact name)
    // Real Russian and Greek keep their script: they have letters with no Latin lookalike.
    check("привет мир", "привет мир");
    check("Это хорошо", "это хорошо");
    check("привет чат как дела у всех", "привет чат как дела у всех");
    // Alone, a word of lookalikes reads as Latin; mixed into a Latin word it always does.
    check("сор", "cop");
    check("хорошо", "xopowo");
    check("fuсk привет", "fuck привет");
    check("Straße ѕсаm", "straße scam");
    check("καλημέρα", "καλημερα");
    // Other scripts are not Latinised at all.
    check("日本語 한국어 שלום مرحبا", "日本語 한국어 שלום مرحبا");
}

#[test]
fn leetspeak_folds_inside_words() {
    check("h3ll0", "hello");
    check("1d10t", "idiot");
    check("sh1t", "shit");
    check("5h1t", "shit");
    check("$hit", "shit");
    check("a$$", "ass");
    check("a$$hole", "asshole");
    check("sh!t", "shit");
    check("b@stard", "bastard");
    check("@ss", "@ss"); // a leading `@` is a mention's
    check("he11o", "hello");
    check("l33t", "leet");
    check("w0rd", "word");
    check("ph4ggy", "phaggy");
    check("H3LL0 W0RLD", "hello world");
    check("ｈ３ｌｌ０", "hello");
    check("l0s3r!", "loser!");
}

#[test]
fn leetspeak_at_word_edges_folds_into_listed_words_only() {
    check("5hit", "shit");
    check("fr33 nitr0", "free nitro");
    check("1diot", "idiot");
    check("1diots", "idiots");
    check("1oser", "loser");
    check("ki11 urself", "kill urself");
    check("ky5", "kys");
    check("5tupid", "stupid");
    check("fr333", "free");
    check("FR33", "free");
    check("$hit", "shit");
    // Digits at the edges of anything else stay: units, versions, times, ordinals, gamer talk.
    check("5am 4pm 3rd 1st 10th", "5am 4pm 3rd 1st 10th");
    check("5head 7up 4chan 0day", "5head 7up 4chan 0day");
    check("win10 top5 covid19 mp4 ps5", "win10 top5 covid19 mp4 ps5");
    check("1v1 4k 2024", "1v1 4k 2024");
}

#[test]
fn the_edge_leet_word_list_is_lower_case_ascii_words_listed_once() {
    let text = include_str!("edge_leet_words.txt");
    let mut seen = std::collections::HashSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        assert!(
            line.len() >= 3 && line.bytes().all(|b| b.is_ascii_lowercase()),
            "`{line}`: at least three lower-case ASCII letters"
        );
        assert!(seen.insert(line), "`{line}` is listed twice");
    }
    assert!(seen.len() >= 200, "{}", seen.len());
}

#[test]
fn numbers_and_chat_terms_are_not_leet() {
    check("2024", "2024");
    check("3 o'clock", "3 o'clock");
    check("1v1 me", "1v1 me");
    check("2v2", "2v2");
    check("top 10", "top 10");
    check("4k 60fps 1080p", "4k 60fps 1080p");
    check("20%", "20%");
    check("$5", "$5");
    check("+1", "+1");
    check("1+1=2", "1+1=2");
    check("1,000.50", "1,000.50");
    check("mp3 ps5 gr8 b4", "mp3 ps5 gr8 b4");
    check("5head", "5head");
    check("2000", "2000");
    check("3.14", "3.14");
    check("10am 5pm 1st 2nd", "10am 5pm 1st 2nd");
    check("hello!", "hello!");
    check("what?!", "what?!");
    check("c++", "c++");
    check("!nuke", "!nuke");
}

#[test]
fn false_positives_stay_as_typed() {
    check("Scunthorpe", "scunthorpe");
    check("class", "class");
    check("assassin", "assassin");
    check("Penistone", "penistone");
    check("gay", "gay");
    check("muslim", "muslim");
    check("black", "black");
    check("I am a dog", "i am a dog");
    check("e.g. i.e.", "e.g. i.e.");
    check("a b", "a b");
}

#[test]
fn spaced_letters_join() {
    check("f u c k", "fuck");
    check("f.u.c.k", "fuck");
    check("f-u-c-k", "fuck");
    check("f_u_c_k", "fuck");
    check("f. u. c. k.", "fuck.");
    check("F  U  C  K you", "fuck you");
    check("you are f u c k i n g dumb", "you are fucking dumb");
    // Known limitation: an `a` or `i` before spaced letters joins them.
    check("you are a f u c k i n g idiot", "you are afucking idiot");
    check("s h 1 t", "shit");
    check("i d 1 o t", "idiot");
    check("i <3 u", "i <3 u");
    check("i 4 u", "i 4 u");
    check("f..u..c..k", "f..u..c..k");
    check("a b c", "abc");
    check("ｆ ｕ ｃ ｋ", "fuck");
}

#[test]
fn repeats_squeeze() {
    check("noooooo", "noo");
    check("!!!!!!", "!!");
    check("hiiiii!!!", "hii!!");
    check("aaa", "aa");
    check("soo good", "soo good");
    check("1000000", "1000000");
    check("h000t", "hoot");
    check("he111o", "hello");
    check("........", "..");
}

#[test]
fn emotes_links_mentions_are_not_folded() {
    check("PogU PogU OMEGALUL", "PogU PogU OMEGALUL");
    check("PepeLaugh:wide", "PepeLaugh");
    check("kappa Kappa Kappa,", "kappa Kappa kappa,");
    check("LULLLL", "lull");
    check(
        "check https://YouTube.com/Watch?v=AbC0",
        "check https://youtube.com/Watch?v=AbC0",
    );
    check("go to Destiny.GG.", "go to destiny.gg.");
    check("bit.ly/AbC1", "bit.ly/AbC1");
    check("(bit.ly/x)", "(bit.ly/x)");
    check("www.Example.org/h3ll0", "www.example.org/h3ll0");
    check("e.g. lol..", "e.g. lol..");
    check("@Destiny hi", "@destiny hi");
    check("hey @Nick_1, sup", "hey @nick_1, sup");
    check("@ab", "@ab");
}

#[test]
fn emoji_and_symbols() {
    check("👨\u{200D}👩\u{200D}👧 ok", "👨👩👧 ok");
    check("❤\u{FE0F}", "❤");
    check("👍🏽", "👍🏽");
    check("🇺🇸", "🇺🇸");
    check("1\u{FE0F}\u{20E3}", "1");
    check("╔═╗ ⠿⠿", "╔═╗ ⠿⠿");
    check("¨", "");
    check("a ´ b", "a b");
}

/// The tokens of `input`: kind and folded text.
fn tokens(input: &str) -> Vec<(TokenKind, String)> {
    let n = normalize(input, &emotes());
    check_invariants(&n);
    n.tokens
        .iter()
        .map(|t| (t.kind, n.token_text(t).to_owned()))
        .collect()
}

#[test]
fn token_kinds() {
    use TokenKind::*;
    let own = |v: &[(TokenKind, &str)]| -> Vec<(TokenKind, String)> {
        v.iter().map(|(k, s)| (*k, (*s).to_owned())).collect()
    };
    assert_eq!(
        tokens("@Nick look https://x.com/A PepeLaugh 2024 h3ll0 1v1!"),
        own(&[
            (Mention, "@nick"),
            (Word, "look"),
            (Link, "https://x.com/A"),
            (Emote, "PepeLaugh"),
            (Number, "2024"),
            (Word, "hello"),
            (Word, "1v1"),
        ])
    );
    assert_eq!(
        tokens("PogU PogU OMEGALUL"),
        own(&[(Emote, "PogU"), (Emote, "PogU"), (Emote, "OMEGALUL")])
    );
    assert_eq!(tokens("f u c k off"), own(&[(Word, "fuck"), (Word, "off")]));
    assert_eq!(
        tokens("$5 20% don't"),
        own(&[(Number, "5"), (Number, "20"), (Word, "don't")])
    );
    assert_eq!(tokens("!!! ... 😀"), own(&[]));
    let n = normalize("a b PogU 1 x", &emotes());
    assert_eq!(n.words().count(), 4);
}

#[test]
fn statistics() {
    let n = normalize(
        "HELLO chat PogU https://X.com @Nick 😀 z\u{0337}\u{0338}a!! €5 \u{200B}",
        &emotes(),
    );
    let s = n.stats;
    assert_eq!(s.chars, n.original.chars().count() as u32);
    // HELLO chat z a: PogU, the link and the mention do not count.
    assert_eq!(s.letters, 11);
    assert_eq!(s.uppercase, 5);
    // 😀, two marks, €, zero-width space.
    assert_eq!(s.non_ascii, 5);
    assert_eq!(s.emoji, 1);
    // `:` `/` `/` `.` `@` `!` `!`
    assert_eq!(s.punctuation, 7);
    assert_eq!(s.symbols, 1);
    assert_eq!(s.combining_marks, 2);
    assert_eq!(s.max_combining_run, 2);
    assert_eq!(s.invisible, 1);
    assert_eq!((s.emotes, s.links, s.mentions), (1, 1, 1));
    // hello chat za 5
    assert_eq!(s.words, 4);

    let caps = normalize("PogU PogU OMEGALUL LUL", &emotes()).stats;
    assert_eq!((caps.letters, caps.uppercase, caps.emotes), (0, 0, 4));

    let zalgo = normalize(&format!("a{}", "\u{0301}".repeat(50)), &emotes()).stats;
    assert_eq!((zalgo.combining_marks, zalgo.max_combining_run), (50, 50));

    let rtl = normalize("\u{202E}abc\u{202C}\u{2066}\u{2069}", &emotes()).stats;
    assert_eq!(rtl.invisible, 4);
}

/// The original text behind the first occurrence of `folded` in the folded text of `input`.
fn check_span(input: &str, folded: &str, expected_original: &str) {
    let n = normalize(input, &emotes());
    check_invariants(&n);
    let start = n
        .text
        .find(folded)
        .unwrap_or_else(|| panic!("{folded:?} not in {:?} (input {input:?})", n.text));
    let span = n.span(start..start + folded.len());
    assert_eq!(
        n.original_text(span),
        expected_original,
        "input {input:?}, folded {folded:?}"
    );
}

#[test]
fn spans_map_back_to_what_was_typed() {
    check_span("you 1d10t lol", "idiot", "1d10t");
    check_span("ok f u c k this", "fuck", "f u c k");
    check_span("ok f.u.c.k. this", "fuck", "f.u.c.k");
    check_span("ＦＵＣＫ you", "fuck", "ＦＵＣＫ");
    check_span("ok f\u{200B}uck", "fuck", "f\u{200B}uck");
    check_span("so fuсk", "fuck", "fuсk");
    check_span("z̷a̸l̴g̵o̶ text", "zalgo", "z̷a̸l̴g̵o");
    check_span("noooooo way", "noo", "noooooo");
    check_span("noooooo way", "no", "no");
    check_span("FREE   Nitro!!", "free nitro", "FREE   Nitro");
    check_span("😀😀 free nitro", "free nitro", "free nitro");
    check_span("ﬁne", "f", "ﬁ");
    check_span("ﬁne", "fine", "ﬁne");
    check_span("a $hit b", "shit", "$hit");
    check_span("s h 1 t", "shit", "s h 1 t");
    check_span("hey @Nick_1, sup", "@nick_1", "@Nick_1");
    check_span("go Destiny.GG.", "destiny.gg", "Destiny.GG");
    check_span("\u{202E}hello\u{202C}", "hello", "hello");

    let n = normalize("x PepeLaugh:wide y", &emotes());
    let emote = &n.tokens[1];
    assert_eq!(n.original_text(emote.original), "PepeLaugh:wide");
    assert_eq!(n.token_text(emote), "PepeLaugh");
}

#[test]
fn span_edges_never_panic() {
    let n = normalize("abc ﬁ", &emotes());
    assert_eq!(n.span(0..0), Span { start: 0, end: 0 });
    assert_eq!(n.span(3..100), Span { start: 3, end: 5 });
    assert_eq!(n.span(100..200), Span { start: 5, end: 5 });
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = n.span(3..1);
    assert_eq!(reversed, Span { start: 3, end: 3 });
    assert_eq!(n.original_text(Span { start: 4, end: 99 }), "ﬁ");
    assert_eq!(n.original_text(Span { start: 9, end: 2 }), "");
    let foreign = Token {
        kind: TokenKind::Word,
        folded: 50..60,
        original: Span { start: 0, end: 1 },
    };
    assert_eq!(n.token_text(&foreign), "");
}

/// The old `decision::phrases::Folded` cases give the same spans through `normalize`.
#[test]
fn superset_of_the_phrase_folding() {
    /// Text, phrase, and the expected (start, end, original text) of the match.
    type Case<'a> = (&'a str, &'a str, Option<(u32, u32, &'a str)>);
    let cases: &[Case<'_>] = &[
        (
            "get free nitro now",
            "free nitro",
            Some((4, 14, "free nitro")),
        ),
        (
            "FREE   Nitro!!",
            "free nitro",
            Some((0, 12, "FREE   Nitro")),
        ),
        ("  free\tnitro", "Free Nitro", Some((2, 12, "free\tnitro"))),
        ("freenitro", "free nitro", None),
        ("😀😀 free nitro", "free nitro", Some((3, 13, "free nitro"))),
        ("İ free nitro", "free nitro", Some((2, 12, "free nitro"))),
        ("Straße", "straße", Some((0, 6, "Straße"))),
        ("", "free nitro", None),
    ];
    let none = EmoteSet::default();
    for &(text, phrase, expected) in cases {
        let n = normalize(text, &none);
        let phrase = normalize(phrase, &none).text;
        let got = n.text.find(&phrase).map(|start| {
            let span = n.span(start..start + phrase.len());
            (span.start, span.end, n.original_text(span))
        });
        let expected = expected.map(|(s, e, t)| (s, e, t.to_owned()));
        assert_eq!(got, expected, "text {text:?}");
    }
}

fn adversarial(rng: &mut Rng, len: usize) -> String {
    const POOLS: &[&str] = &[
        "abcXYZ019 @$!+.,'-_:/",
        "\u{0300}\u{0301}\u{0336}\u{0489}\u{20DD}\u{20E3}\u{034F}",
        "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}\u{00AD}\u{180E}",
        "\u{202A}\u{202B}\u{202C}\u{202D}\u{202E}\u{2066}\u{2067}\u{2068}\u{2069}\u{200E}\u{200F}",
        "😀👨👩👧🏽🇺🇸❤\u{FE0F}\u{FE0E}",
        "аеорсхіѕкΗΕοαʜᴇ日本한국שלוםمرحبا",
        "ｆｕｃｋ𝐟𝓯ⓕﬁ①½¨´™",
        " \t\n\u{3000}\u{00A0}\u{2028}\u{3164}",
        "https://www.bit.ly/e.g.com@",
    ];
    let mut s = String::new();
    for _ in 0..len {
        if rng.below(10) == 0 {
            // Any scalar value at all.
            let c = loop {
                if let Some(c) = char::from_u32((rng.next_u64() % 0x11_0000) as u32) {
                    break c;
                }
            };
            s.push(c);
        } else {
            let pool = POOLS[rng.below(POOLS.len())];
            let chars: Vec<char> = pool.chars().collect();
            s.push(chars[rng.below(chars.len())]);
        }
    }
    s
}

#[test]
fn never_panics_on_adversarial_input() {
    let mut rng = Rng(0x5EED);
    let emotes = emotes();
    let mut inputs: Vec<String> = (0..3000)
        .map(|i| {
            let len = rng.below(if i % 100 == 0 { 4096 } else { 120 });
            adversarial(&mut rng, len)
        })
        .collect();
    inputs.push("\u{0301}".repeat(4096));
    inputs.push("a\u{0301}".repeat(2048));
    inputs.push("1".repeat(4096));
    inputs.push("$".repeat(4096));
    inputs.push("a ".repeat(2048));
    inputs.push("a.".repeat(2048));
    inputs.push("Kappa ".repeat(700));
    inputs.push("ﷺ".repeat(1000));
    inputs.push("@".repeat(4096));
    inputs.push("https://".repeat(512));
    for input in &inputs {
        let n = normalize(input, &emotes);
        check_invariants(&n);
        let len = n.text.len();
        for _ in 0..8 {
            let a = rng.below(len + 2);
            let b = rng.below(len + 2);
            let span = n.span(a.min(b)..a.max(b));
            assert!(span.start <= span.end && span.end <= n.stats.chars);
            let _ = n.original_text(span);
        }
        for token in &n.tokens {
            let _ = n.token_text(token);
            let _ = n.original_text(token.original);
        }
        // Folding is deterministic.
        assert_eq!(normalize(input, &emotes), n);
    }
}

#[test]
fn no_character_folds_into_more_than_max_expansion_times_its_bytes() {
    // Every scalar value alone, inside a word and as a word of its own: the per-character
    // bound is what bounds every text (later steps only join, squeeze or drop).
    let emotes = EmoteSet::default();
    let mut worst = (0.0f64, '\0');
    for c in (0..=0x10_FFFFu32).filter_map(char::from_u32) {
        let alone = c.to_string();
        // A character that does not grow alone is tried in words only if it is a letter or a
        // symbol that words can hold (a leet symbol); the sweep stays a few seconds.
        let grows = normalize(&alone, &emotes).text.len() > alone.len();
        let contexts = if grows || c.is_ascii() {
            vec![format!("a{c}b"), format!("{c}{c} x")]
        } else {
            Vec::new()
        };
        for text in std::iter::once(alone).chain(contexts) {
            let n = normalize(&text, &emotes);
            let ratio = n.text.len() as f64 / text.len() as f64;
            if ratio > worst.0 {
                worst = (ratio, c);
            }
            assert!(
                n.text.len() <= MAX_EXPANSION * text.len(),
                "U+{:04X} folds {text:?} into {} bytes",
                c as u32,
                n.text.len()
            );
        }
    }
    eprintln!(
        "largest expansion: {:.2}x, U+{:04X}",
        worst.0, worst.1 as u32
    );
    // The phrase ligature that once grew elevenfold is kept as itself.
    check("\u{FDFA}", "\u{FDFA}");
}

#[test]
fn a_detached_fold_attaches_to_its_text_only() {
    let text = "Ｆｒｅｅ n1tro @someone PepeLaugh https://example.com";
    let normalized = normalize(text, &emotes());
    let folded = normalized.clone().detach();
    assert_eq!(folded.clone().attach(text), Some(normalized));
    assert_eq!(folded.attach("another text"), None);
}
