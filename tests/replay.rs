//! `modbot replay`: an OverRustle log through a real server's `StreamModerate`, and the
//! summary it makes.

use crate::common;

use std::io::Write as _;

use common::TestServer;
use modbot::bridge::replay::{self, ReplayArgs, Summary};
use modbot::proto::{ActionStatus, ListActionsRequest};

/// A destiny.gg evening: ordinary talk, a flooder, a shouter, a link and a scam, and five
/// lines that are not log lines (3, 9, 14, 20 and 26).
const LOG: &[&[u8]] = &[
    b"[2017-02-01 20:00:01 UTC] Destiny: okay chat, let's read this article together",
    b"[2017-02-01 20:00:03 UTC] Bingo_Bongo: hello chat PepeLaugh",
    b"=== OverRustle log for Destinygg, February 2017 ===",
    b"[2017-02-01 20:00:05 UTC] mr_sunshine: @Destiny what do you think about the new update?",
    b"[2017-02-01 20:00:08 UTC] CoolCat99: that's actually a good point",
    b"[2017-02-01 20:00:09 UTC] Bingo_Bongo: lol",
    b"[2017-02-01 20:00:09 UTC] Bingo_Bongo: yes",
    b"[2017-02-01 20:00:10 UTC] Bingo_Bongo: no",
    b"[2017-02-30 20:00:10 UTC] nobody: the 30th of February",
    b"[2017-02-01 20:00:10 UTC] Bingo_Bongo: wait",
    b"[2017-02-01 20:00:11 UTC] Bingo_Bongo: what",
    b"[2017-02-01 20:00:11 UTC] Bingo_Bongo: really",
    b"[2017-02-01 20:00:11 UTC] Bingo_Bongo: okay",
    b"[2017-02-01 20:00:12 UTC] two words: a nick with a space",
    b"[2017-02-01 20:00:15 UTC] Loud_Larry: WHY IS NOBODY TALKING ABOUT THE DEBATE RIGHT NOW",
    b"[2017-02-01 20:00:18 UTC] CoolCat99: Kappa",
    b"[2017-02-01 20:00:20 UTC] shady_dude: check this out https://grabify.link/AB12CD",
    b"[2017-02-01 20:00:24 UTC] mr_sunshine: anyone watching the game tonight",
    b"[2017-02-01 20:00:30 UTC] gift_guy: free nitro for everyone who clicks my profile",
    b"[2017-02-01 20:00:31 UTC] bytes: \xff\xfe not text",
    b"[2017-02-01 20:00:33 UTC] Destiny: no, that's not what the study says",
    b"[2017-02-01 20:00:35 UTC] CoolCat99: FeelsGoodMan",
    b"[2017-02-01 20:00:40 UTC] Loud_Larry: STOP IGNORING ME CHAT I AM RIGHT ABOUT THIS",
    b"[2017-02-01 20:00:44 UTC] mr_sunshine: my blog has more on it https://example.com/post",
    b"[2017-02-01 20:00:50 UTC] Destiny: alright, next topic",
    b"",
    b"[2017-02-01 20:00:55 UTC] CoolCat99: gn chat",
];

const MALFORMED: &[u64] = &[3, 9, 14, 20, 26];

fn write_log(lines: &[&[u8]]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    for line in lines {
        file.write_all(line).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.flush().unwrap();
    file
}

fn args_for(server: &TestServer, file: &std::path::Path) -> ReplayArgs {
    let mut args = ReplayArgs::new(file);
    args.server_url = Some(format!("http://{}", server.addr));
    args
}

fn reason<'a>(summary: &'a Summary, id: &str) -> Option<&'a replay::ReasonCount> {
    summary.top_reasons.iter().find(|r| r.id == id)
}

#[tokio::test]
async fn a_chat_log_gets_one_verdict_per_message_and_its_actions_are_answered() {
    let server = TestServer::start(|_| {}).await;
    let log = write_log(LOG);
    let summary = replay::run(&server.config, &args_for(&server, log.path()))
        .await
        .expect("the replay runs");

    let messages = (LOG.len() - MALFORMED.len()) as u64;
    assert_eq!(summary.lines_read, LOG.len() as u64, "{summary}");
    assert_eq!(summary.messages_sent, messages, "{summary}");
    assert_eq!(summary.verdicts, messages, "{summary}");
    assert_eq!(summary.rejected, 0, "{summary}");
    assert_eq!(summary.decisions.total(), messages, "{summary}");
    assert_eq!(summary.malformed.count, MALFORMED.len() as u64);
    let lines: Vec<u64> = summary.malformed.first.iter().map(|m| m.line).collect();
    assert_eq!(lines, MALFORMED, "{summary}");
    let reasons: Vec<&str> = summary
        .malformed
        .first
        .iter()
        .map(|m| m.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "no [YYYY-MM-DD HH:MM:SS UTC] timestamp",
            "invalid date or time",
            "invalid nick",
            "not UTF-8",
            "empty line"
        ]
    );

    // Ordinary talk is allowed; the flooder, the shouter, the IP logger and the scam are not.
    assert!(summary.decisions.allow >= 10, "{summary}");
    assert!(summary.decisions.hide >= 1, "caps: {summary}");
    assert!(summary.decisions.warn >= 1, "first offences: {summary}");
    assert!(summary.decisions.timeout >= 1, "{summary}");
    for (id, count) in [
        ("dgg-rate", 3),
        ("caps", 2),
        ("ip-loggers", 1),
        ("scam-giveaway", 1),
    ] {
        let found = reason(&summary, id).unwrap_or_else(|| panic!("{id}: {summary}"));
        assert_eq!(
            (found.count, found.source.as_str()),
            (count, "rule"),
            "{summary}"
        );
    }
    // Links from users first seen minutes ago: reported in shadow mode, not enforced.
    let shadow = reason(&summary, "new-user-links").expect("the shadow link rule");
    assert_eq!(shadow.count, shadow.shadow);
    assert!(summary.shadow_decisions.hold >= 1, "{summary}");
    assert_eq!(summary.degraded_verdicts, 0, "{summary}");
    assert_eq!(summary.stream_errors.count, 0, "{summary}");

    // Every warning, hide and timeout became an action, sent to the replay (the channel's
    // bridge) and answered as not carried out.
    let acting = summary.decisions.warn
        + summary.decisions.hide
        + summary.decisions.timeout
        + summary.decisions.ban;
    assert_eq!(summary.commands.received, acting, "{summary}");
    assert_eq!(summary.commands.answered, acting, "{summary}");
    assert_eq!(summary.commands.unanswered, 0, "{summary}");
    let actions = server
        .actions()
        .list_actions(ListActionsRequest {
            channel: "replay".into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("ListActions")
        .into_inner()
        .actions;
    let failed: Vec<_> = actions
        .iter()
        .filter(|a| a.status == ActionStatus::Failed as i32)
        .collect();
    assert_eq!(failed.len() as u64, acting, "{actions:#?}");
    assert!(
        failed
            .iter()
            .all(|a| a.error == "replay" && a.bridge_id == summary.bridge_id),
        "{failed:#?}"
    );
    assert!(summary.bridge_id.starts_with("replay-"));

    let l = summary.latency_ms;
    assert!(
        0.0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max,
        "{l:?}"
    );
    assert!(summary.server_latency_ms.max <= l.max, "{summary}");
    assert!(summary.wall_time_secs > 0.0 && summary.messages_per_sec > 0.0);

    // The text and JSON forms say the same.
    let text = summary.to_string();
    for expected in [
        "lines read        27, 5 malformed and skipped: line 3 (",
        "messages sent     22",
        "dgg-rate",
        "latency (client)  p50",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["verdicts"], messages);
    assert_eq!(json["malformed"]["first"][1]["line"], 9);
    assert_eq!(json["decisions"]["allow"], summary.decisions.allow);
    assert!(json["decisions"].get("unspecified").is_none());
    assert!(json["latency_ms"]["p99"].is_f64());

    server.stop().await.expect("a clean shutdown");
}

#[tokio::test]
async fn replaying_again_decides_again_but_never_acts_twice() {
    let server = TestServer::start(|_| {}).await;
    let log = write_log(LOG);
    let args = args_for(&server, log.path());
    let first = replay::run(&server.config, &args).await.unwrap();
    assert!(first.commands.received > 0, "{first}");
    // The server remembers the first replay (every line is now a repetition of its author's
    // own), so the decisions differ; but the actions' ids come from the channel and message
    // ids, so a message acted on once is never acted on again.
    let second = replay::run(&server.config, &args).await.unwrap();
    assert_eq!(second.verdicts, first.verdicts, "{second}");
    assert_eq!(
        second.commands.answered, second.commands.received,
        "{second}"
    );
    assert_ne!(second.bridge_id, first.bridge_id);
    let actions = server
        .actions()
        .list_actions(ListActionsRequest {
            channel: "replay".into(),
            status: ActionStatus::Failed.into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .actions;
    assert_eq!(
        actions.len() as u64,
        first.commands.received + second.commands.received,
        "{first}\n{second}"
    );
    let mut messages: Vec<&str> = actions.iter().map(|a| a.message_id.as_str()).collect();
    messages.sort_unstable();
    messages.dedup();
    assert_eq!(messages.len(), actions.len());
    server.stop().await.unwrap();
}

/// The corpus as an OverRustle log: ten messages a second from 2017-01-01 on.
fn corpus_log(count: usize) -> Vec<u8> {
    let start = 1_483_228_800_i64; // 2017-01-01 00:00:00 UTC
    let mut out = Vec::new();
    for (i, message) in modbot::corpus::generate(7, count).iter().enumerate() {
        let t = start + (i / 10) as i64;
        let (h, m, s) = (t / 3600 % 24, t / 60 % 60, t % 60);
        let day = 1 + (t - start) / 86_400;
        writeln!(
            out,
            "[2017-01-{day:02} {h:02}:{m:02}:{s:02} UTC] {}: {}",
            message.nick, message.text
        )
        .unwrap();
    }
    out
}

#[tokio::test]
async fn a_generated_log_with_a_limit_and_pacing() {
    let server = TestServer::start(|_| {}).await;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&corpus_log(3_000)).unwrap();
    file.flush().unwrap();

    let mut args = args_for(&server, file.path());
    args.limit = Some(2_000);
    let summary = replay::run(&server.config, &args).await.unwrap();
    assert_eq!(summary.malformed.count, 0, "{summary}");
    assert_eq!(
        (summary.lines_read, summary.messages_sent, summary.verdicts),
        (2_000, 2_000, 2_000),
        "{summary}"
    );
    assert_eq!(summary.stream_errors.count, 0, "{summary}");
    assert!(summary.decisions.allow > 1_000, "{summary}");
    assert!(summary.decisions.allow < 2_000, "{summary}");
    assert_eq!(
        summary.commands.answered, summary.commands.received,
        "{summary}"
    );

    // 40 messages at 200 a second take at least 195 ms.
    args.limit = Some(40);
    args.rate = 200.0;
    args.channel = "replay-paced".into();
    let paced = replay::run(&server.config, &args).await.unwrap();
    assert_eq!(paced.verdicts, 40);
    assert!(paced.wall_time_secs >= 0.195, "{paced}");
    assert!(paced.messages_per_sec <= 210.0, "{paced}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_token_comes_from_the_bridge_table() {
    const TOKEN: &str = "replay-test-token-0123456789abcdef";
    let server = TestServer::start(|config| {
        config.auth.tokens =
            format!("bridge replayer {TOKEN} bridge_ids=replay-test channels=replay");
    })
    .await;
    let log = write_log(&LOG[..4]);
    let mut args = args_for(&server, log.path());
    args.bridge_id = Some("replay-test".to_owned());

    let mut config = server.config.clone();
    let error = replay::run(&config, &args).await.unwrap_err();
    let error = format!("{error:#}");
    assert!(
        error.contains("refused the token") && error.contains("bridge.server_token"),
        "{error}"
    );
    config.bridge.server_token = TOKEN.to_owned();
    let summary = replay::run(&config, &args).await.expect("with the token");
    assert_eq!(summary.verdicts, 3, "{summary}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_channel_is_refused_by_the_server() {
    let server = TestServer::start(|_| {}).await;
    let log = write_log(&LOG[..2]);
    let mut args = args_for(&server, log.path());
    args.channel = " ".into();
    let error = format!(
        "{:#}",
        replay::run(&server.config, &args).await.unwrap_err()
    );
    assert!(
        error.contains("refused the stream") && error.contains("hello.channels[0]"),
        "{error}"
    );
    server.stop().await.unwrap();
}

/// Not a test: writes the 20,000-line corpus log that README's measurement replays, to
/// `$MODBOT_TEST_REPLAY_LOG_OUT`. `MODBOT_TEST_REPLAY_LOG_OUT=/tmp/corpus.log cargo test --test
/// integration -- --ignored replay::write_corpus_log`
#[test]
#[ignore = "writes a file for a manual measurement"]
fn write_corpus_log() {
    let path =
        std::env::var("MODBOT_TEST_REPLAY_LOG_OUT").expect("MODBOT_TEST_REPLAY_LOG_OUT is set");
    std::fs::write(&path, corpus_log(20_000)).unwrap();
    eprintln!("wrote {path}");
}
