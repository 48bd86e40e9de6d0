//! The fuzz targets in the ordinary test suite: every committed seed (`fuzz/seeds/TARGET/`),
//! every fixed crash (`fuzz/regressions/TARGET/`) and a deterministic sweep of mutated and
//! random inputs (SplitMix64) go through the same functions libFuzzer calls; the rule matcher
//! and the stream pipeline also get property tests over longer random inputs.

use std::path::{Path, PathBuf};

use super::*;
use crate::corpus::{Rng, generate};
use crate::engine::rules::DEFAULT_RULES;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("normalize", normalize),
    ("rules", rules),
    ("chat_frame", chat_frame),
    ("rule_match", rule_match),
    ("stream_events", stream_events),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/KIND/TARGET`, sorted (none if the folder does not exist).
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

fn run(target: Target, name: &str, input: &[u8]) {
    if let Err(panic) = std::panic::catch_unwind(|| target(input)) {
        eprintln!("{name} failed on {:?}", String::from_utf8_lossy(input));
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn committed_seeds_and_fixed_crashes_pass() {
    for &(name, target) in TARGETS {
        let seeds = inputs("seeds", name);
        assert!(
            seeds.len() >= 10,
            "fuzz/seeds/{name} has {} seeds",
            seeds.len()
        );
        for (path, bytes) in seeds.iter().chain(&inputs("regressions", name)) {
            if let Err(panic) = std::panic::catch_unwind(|| target(bytes)) {
                eprintln!("{name} failed on {}", path.display());
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Bytes that look like the target's input: a seed mutated a few times, or random.
fn mutate(rng: &mut Rng, seeds: &[(PathBuf, Vec<u8>)], alphabet: &[u8]) -> Vec<u8> {
    if seeds.is_empty() || rng.below(8) == 0 {
        let len = rng.below(96);
        return (0..len).map(|_| rng.next_u64() as u8).collect();
    }
    let mut bytes = seeds[rng.below(seeds.len())].1.clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 => bytes.truncate(at),
            1 if at < bytes.len() => bytes[at] = alphabet[rng.below(alphabet.len())],
            2 if at < bytes.len() => bytes[at] = rng.next_u64() as u8,
            3 => {
                let most = if rng.below(30) == 0 { 2000 } else { 8 };
                let n = 1 + rng.below(most);
                let c = alphabet[rng.below(alphabet.len())];
                bytes.splice(at..at, std::iter::repeat_n(c, n));
            }
            4 => {
                // Splice in a piece of another seed.
                let other = &seeds[rng.below(seeds.len())].1;
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(64)).min(other.len());
                bytes.splice(at..at, other[from..to].iter().copied());
            }
            _ => {
                let to = (at + rng.below(16)).min(bytes.len());
                bytes.drain(at..to);
            }
        }
    }
    bytes
}

/// Bytes the mutations insert: TOML, JSON and regex syntax, and awkward UTF-8.
const ALPHABET: &[u8] =
    b" \t\n{}[]\":,=.\\0123456789-+*?$@!#'aAzZ_/|()\xc3\xa9\xe2\x80\x8b\xcc\x81\xff\x00";

#[test]
fn deterministic_sweep() {
    let mut rng = Rng(0xF022_5EED);
    // Rules inputs compile regexes and TOML: fewer of them, to keep the debug build quick.
    for &(name, target, count) in &[
        ("normalize", normalize as Target, 3000),
        ("chat_frame", chat_frame as Target, 4000),
        ("rules", rules as Target, 800),
        ("rule_match", rule_match as Target, 300),
        ("stream_events", stream_events as Target, 60),
    ] {
        let seeds = inputs("seeds", name);
        for _ in 0..count {
            let input = mutate(&mut rng, &seeds, ALPHABET);
            run(target, name, &input);
        }
    }
}

/// The property behind the `rule_match` target, on inputs built from random bytes (so each is
/// a structured rule spec × messages): no panic, no rule reported as panicked, and the phrase
/// a hit names really matches there (see [`rule_match`]).
#[test]
fn rule_match_property_holds_for_random_specs() {
    let mut rng = Rng(0x0005_EED5_0F0F_AB1E);
    let (mut compiled, mut hits, mut hits_after_groups) = (0, 0, 0);
    const CASES: usize = 400;
    for _ in 0..CASES {
        let len = 16 + rng.below(160);
        let mut input: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Built specs only: the written ones come from the seeds.
        if input[0].is_multiple_of(4) {
            input[0] |= 1;
        }
        let outcome = std::panic::catch_unwind(|| check_rule_match(&input)).unwrap_or_else(|e| {
            eprintln!("rule_match failed on {input:?}");
            std::panic::resume_unwind(e)
        });
        compiled += usize::from(outcome.compiled);
        hits += outcome.hits;
        hits_after_groups += outcome.hits_after_groups;
    }
    // The generator is worth its time: most rules compile, many fire, and many hits name a
    // phrase that comes after one with groups of its own.
    assert!(compiled > CASES / 2, "{compiled} of {CASES} compiled");
    assert!(hits > CASES / 2, "{hits} hits");
    assert!(
        hits_after_groups >= 10,
        "{hits_after_groups} hits after groups"
    );
}

/// The `stream_events` target on long random scripts: every message gets its one verdict.
#[test]
fn stream_events_property_holds_for_random_scripts() {
    let mut rng = Rng(0x0057_2EA3_5EED);
    for _ in 0..100 {
        let len = 64 + rng.below(400);
        let input: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        run(stream_events, "stream_events", &input);
    }
}

/// One target swept for a stated time (mutated seeds and random bytes, as in
/// [`deterministic_sweep`]), for a figure of executions where cargo-fuzz cannot run:
/// `MODBOT_SWEEP_TARGET=rule_match MODBOT_SWEEP_SECS=300 cargo test --lib sweep_for_a_while --
/// --ignored --nocapture`. Not coverage-guided.
#[test]
#[ignore = "runs for minutes; run by hand"]
fn sweep_for_a_while() {
    let name = std::env::var("MODBOT_SWEEP_TARGET").unwrap_or_else(|_| "rule_match".to_owned());
    let secs: u64 = std::env::var("MODBOT_SWEEP_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let &(_, target) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    let seeds = inputs("seeds", &name);
    let mut rng = Rng(0x5EED_F0F0_1234);
    let started = std::time::Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < std::time::Duration::from_secs(secs) {
        let input = mutate(&mut rng, &seeds, ALPHABET);
        run(target, &name, &input);
        runs += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "{name}: {runs} inputs in {elapsed:.0} s ({:.0}/s), no failure",
        runs as f64 / elapsed
    );
}

/// Writes the seed corpus (`fuzz/seeds/`) from the built-in sources: real chat lines from
/// [`generate`], the built-in rules file, and the protocol's frames. Not a test: run it by hand
/// after changing those sources (`cargo test --lib write_seeds -- --ignored`).
#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_seeds() {
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    // normalize: a selector byte (odd: with the channel's emotes), then the message.
    for (i, message) in generate(7, 150).iter().enumerate() {
        let selector = if i % 3 == 0 { b' ' } else { b'1' };
        write(
            "normalize",
            &format!("corpus-{i:03}"),
            &[&[selector], message.text.as_bytes()].concat(),
        );
    }
    let special = [
        "h3ll0 w0rld 5h1t $hit a$$ 1v1 4k 60fps 2024 3.14 1,000",
        "f u c k  f.u.c.k  f-u-c-k  e.g. i.e.  n 1 g g 3 r  i <3 u",
        "ѕсаm hеllо ʜᴇʟʟᴏ привет как дела 日本語 한국어",
        "z\u{0301}\u{0302}\u{0303}a\u{0336}\u{0489}lgo ｆｕｃｋ 𝐟𝓯 ﬁ ① ½",
        "zero\u{200B}width\u{200D}joined \u{202E}bidi\u{202C} soft\u{00AD}hyphen \u{FEFF}",
        "👨\u{200D}👩\u{200D}👧 🏽 🇺🇸 ❤\u{FE0F} emoji",
        "PepeLaugh:wide OMEGALUL Kappa:flip:hyper LUL",
        "@Destiny hi @a @toolongnicknameaaaaaaaaaaa (@Nick) \"@quoted\"",
        "https://Example.COM/Path?Q=1. www.bit.ly/x, readme.md lol.. e.g. discord.gg/abc!",
        "noooooooo !!!!!!!! ?????? 2000000 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];
    for (i, text) in special.iter().enumerate() {
        write(
            "normalize",
            &format!("special-{i:02}"),
            &[b"1", text.as_bytes()].concat(),
        );
    }

    // rules: selector '0' (4 divides 48) is the raw text of a rules file; others build one.
    write(
        "rules",
        "builtin",
        &[b"0", DEFAULT_RULES.as_bytes()].concat(),
    );
    let document = Document::parse(DEFAULT_RULES, "built in").unwrap();
    let policy = format!("[policy]\n{}", nest(&document.policy_rows()[0].1, "policy"));
    for (id, body) in document.rule_rows() {
        let text = format!("{policy}[[rule]]\n{}", nest(&body, "rule"));
        write(
            "rules",
            &format!("rule-{id}"),
            &[b"0", text.as_bytes()].concat(),
        );
    }
    let mut rng = Rng(0xC0FFEE);
    for i in 0..24 {
        let mut bytes = vec![1 + (i % 3) as u8];
        bytes.extend((0..200).map(|_| rng.next_u64() as u8));
        write("rules", &format!("built-{i:02}"), &bytes);
    }

    // rule_match: written specs (selector '0'), the regexes that once stopped moderation among
    // them, and random built ones.
    let specs = [
        "regex\n(free|cheap) nitro\nspamword\n\nbuy spamword now\ncheap nitro\nnothing",
        "regex\n(?P<w>free) nitro\n(?P<w>spam)word\n(?<w>x)\n\nspamword\nfree nitro x",
        "regex\n((a|b)(c|(d|e)))+z\nq(r(s(t)))\n(?:foo|bar)baz\n\nbdacz qrst\nfoobaz",
        "regex\n(?=x)y\n\nxy",
        "regex\n\\bdiscord\\.gg/\\w+\n()\n(|x)word\n\njoin discord.gg/abc\na word",
        "regex anywhere\nspam\\w*\n(spam)\n\nspamword",
        "literal\nfree nitro\nscam\n\nFREE   NITRO!!\nfr3e n1tr0\nscampi",
        "literal anywhere\nnitro\n\nfreenitrogift",
        "wildcard\nviewbot*\nb?y followers\n\ncheap viewbotting\nbay followers",
        "wildcard\n* *\n?\n\na b\nx",
    ];
    for (i, spec) in specs.iter().enumerate() {
        write(
            "rule_match",
            &format!("written-{i:02}"),
            &[b"0", spec.as_bytes()].concat(),
        );
    }
    let mut rng = Rng(0x5EED_0AA7);
    for i in 0..16 {
        let mut bytes = vec![1 + (i % 3) as u8];
        bytes.extend((0..120).map(|_| rng.next_u64() as u8));
        write("rule_match", &format!("built-{i:02}"), &bytes);
    }

    // stream_events: random scripts of every length.
    for i in 0..16 {
        let bytes: Vec<u8> = (0..32 + 24 * i).map(|_| rng.next_u64() as u8).collect();
        write("stream_events", &format!("script-{i:02}"), &bytes);
    }

    // chat_frame: both dialects' events, and the commands the bridge sends.
    let frames = [
        r#"NAMES {"users":[{"nick":"Bob","features":["subscriber"]},{"nick":"Mod","features":["moderator"]}],"connectioncount":7}"#,
        r#"JOIN {"nick":"a","features":[],"timestamp":3}"#,
        r#"QUIT {"nick":"a","features":["flair3"],"timestamp":1700000000000}"#,
        r#"MSG {"nick":"Bob","features":[],"timestamp":1700000000123,"data":"hi all"}"#,
        r#"MSG {"nick":"a","features":[],"timestamp":5,"data":"x","entities":{"links":[]}}"#,
        r#"MUTE {"nick":"Mod","features":["moderator"],"timestamp":1,"data":"Bob","duration":600}"#,
        r#"MUTE {"nick":"m","features":[],"timestamp":5,"data":"a"}"#,
        r#"BAN {"nick":"Mod","features":["admin"],"timestamp":2,"data":"Spammer"}"#,
        r#"UNBAN {"nick":"Mod","features":[],"timestamp":2,"data":"Spammer"}"#,
        r#"UNMUTE {"nick":"Mod","features":[],"timestamp":2,"data":"Bob"}"#,
        r#"ERR {"description":"nopermission"}"#,
        r#"ERR {"description":"muted","muteTimeLeft":42}"#,
        r#"ERR "throttled""#,
        r#"PONG {"timestamp":1}"#,
        "REFRESH {}",
        r#"SUBONLY {"data":"on"}"#,
        r#"BROADCAST {"data":"hello"}"#,
        r#"PRIVMSG {"messageid":1,"timestamp":1,"nick":"a","data":"psst","targetNick":"b"}"#,
        r#"VIEWERSTATE {"nick":"a","online":true,"channel":{}}"#,
        r#"MSG {"nick":"\u00e9\ud83d\ude00","data":"\"quoted\" \\ \n","timestamp":18446744073709551615}"#,
    ];
    for (i, frame) in frames.iter().enumerate() {
        write("chat_frame", &format!("event-{i:02}"), frame.as_bytes());
    }
    let commands = [
        Command::Mute {
            nick: "Bob".into(),
            duration: Duration::from_secs(60),
        },
        Command::Ban {
            nick: "Bob".into(),
            reason: "spam".into(),
            duration: None,
        },
        Command::Ban {
            nick: "Bob".into(),
            reason: "x".into(),
            duration: Some(Duration::from_secs(3600)),
        },
        Command::Unmute { nick: "Bob".into() },
        Command::Unban { nick: "Bob".into() },
    ];
    for (i, command) in commands.iter().enumerate() {
        write(
            "chat_frame",
            &format!("command-{i}"),
            command.encode().as_bytes(),
        );
    }
}
