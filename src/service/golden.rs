//! The golden chat: lines of a made-up destiny.gg chat with the decision and reason ids the
//! built-in rules give each (`tests/golden/chat.txt`), checked by one [`check`] through the
//! whole per-message pipeline (normalising, user state, rules, the ladder; no model).
//!
//! A line is `user @seconds | text => decision rule-id…`; `#` starts a comment. Each chat
//! runs from an empty state, its lines in order at their times. A change of behaviour shows
//! as a table of every line that now differs; when the change is intended, rewrite the
//! expectations with `MODBOT_BLESS=1 cargo test --lib golden` and review the diff.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::moderate::Moderator;
use crate::domain::{ChatMessage, ReasonSource};
use crate::engine::decision::{DecideOptions, Engine};
use crate::engine::rules::{DEFAULT_RULES, RuleSet};
use crate::infra::inference::{Description, ModelStatus, Scorer};
use crate::infra::users::{SharedState, StateOptions};

/// One line of the file.
struct Line {
    /// The line as written before `=>`.
    input: String,
    user: String,
    at_secs: u64,
    text: String,
    /// What the file expects: `decision rule-id…`.
    expected: String,
}

fn parse(file: &str) -> Vec<Result<Line, String>> {
    let mut lines = Vec::new();
    for (n, raw) in file.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let parsed = (|| {
            let (input, expected) = raw.rsplit_once(" => ").ok_or("no ` => `")?;
            let (who, text) = input.split_once(" | ").ok_or("no ` | `")?;
            let (user, at) = who.trim().split_once(" @").ok_or("no `user @seconds`")?;
            let at_secs = at.trim().parse().map_err(|_| "seconds are not a number")?;
            Ok::<_, &str>(Line {
                input: input.to_owned(),
                user: user.to_owned(),
                at_secs,
                text: text.to_owned(),
                expected: expected.trim().to_owned(),
            })
        })();
        lines.push(parsed.map_err(|e| format!("tests/golden/chat.txt:{}: {e}: {raw}", n + 1)));
    }
    lines
}

/// Decides every line of `file` with the built-in rules, in order, and returns the file with
/// each line's actual outcome, and the lines that differ from the file.
async fn run(file: &str) -> (String, Vec<String>) {
    let moderator = Moderator::new(
        Engine::new(RuleSet::parse(DEFAULT_RULES, "built-in").expect("the built-in rules")),
        SharedState::memory(StateOptions::default()),
        Scorer::idle(ModelStatus::Off, Description::default()),
    );
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut blessed = String::new();
    let mut differ = Vec::new();
    let parsed = parse(file);
    let mut parsed = parsed.into_iter();
    for (n, raw) in file.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            blessed.push_str(raw);
            blessed.push('\n');
            continue;
        }
        let line = match parsed.next().expect("one parse per line") {
            Ok(line) => line,
            Err(error) => panic!("{error}"),
        };
        let message = ChatMessage {
            channel: "destinygg".into(),
            message_id: format!("line-{}", n + 1),
            user_id: line.user.clone(),
            nick: line.user.clone(),
            roles: Vec::new(),
            text: line.text.clone(),
            sent_at: start + Duration::from_secs(line.at_secs),
        };
        let verdict = moderator
            .moderate(&message, DecideOptions::default(), Instant::now())
            .await
            .expect("no model, never overloaded");
        let mut actual = verdict.decision.as_str().to_owned();
        for reason in verdict.reasons.iter().filter(|r| !r.shadow) {
            let id = match reason.source {
                ReasonSource::Rule => reason.rule_id.clone(),
                other => other.as_str().to_owned(),
            };
            actual.push(' ');
            actual.push_str(&id);
        }
        if actual != line.expected {
            differ.push(format!(
                "line {:>3}: {:<60} expected `{}`, got `{actual}`",
                n + 1,
                line.input,
                line.expected
            ));
        }
        let _ = writeln!(blessed, "{} => {actual}", line.input);
    }
    (blessed, differ)
}

/// Checks the golden chat; with `MODBOT_BLESS` set, rewrites its expectations instead.
async fn check(path: &Path) {
    let file = std::fs::read_to_string(path).expect("read the golden chat");
    let (blessed, differ) = run(&file).await;
    if std::env::var_os("MODBOT_BLESS").is_some() {
        std::fs::write(path, blessed).expect("write the golden chat");
        return;
    }
    assert!(
        differ.is_empty(),
        "{} of the golden chat's lines decide differently ({}); if intended, rewrite it with \
         `MODBOT_BLESS=1 cargo test --lib golden` and review the diff:\n{}",
        differ.len(),
        path.display(),
        differ.join("\n")
    );
}

#[tokio::test]
async fn the_golden_chat_decides_as_written() {
    check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/chat.txt")).await;
}

#[tokio::test]
async fn a_changed_expectation_is_reported_with_its_line() {
    let (_, differ) = run("alice @0 | hello chat => ban made-up-rule\n").await;
    assert_eq!(differ.len(), 1, "{differ:?}");
    assert!(
        differ[0].contains("line   1") && differ[0].contains("got `allow`"),
        "{differ:?}"
    );
    let parsed = parse("no arrow here\n");
    assert!(
        parsed[0]
            .as_ref()
            .is_err_and(|e| e.contains(":1: no ` => `"))
    );
}
