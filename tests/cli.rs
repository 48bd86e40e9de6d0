//! The `modbot` binary itself: configuration errors, `config`, `migrate`, and `serve` from
//! start to SIGTERM.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{chat_message, modbot_command};
use modbot::proto::moderation_client::ModerationClient;
use modbot::proto::{ClassifyRequest, Decision};

fn run(command: &mut Command) -> (Output, String) {
    let output = command.output().expect("run modbot");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

#[test]
fn invalid_configuration_exits_2_naming_the_key() {
    // (arguments, environment, what the error must name)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["config"],
            &[("MODBOT_GRPC_MAX_MESSAGES_PER_CALL", "lots")],
            "grpc.max_messages_per_call",
        ),
        (&["serve", "--grpc-addr", "nowhere"], &[], "grpc.addr"),
        (&["serve", "--set", "grpc.bogus=1"], &[], "grpc.bogus"),
        (
            &["migrate", "--database-url", "mysql://x"],
            &[],
            "database.url",
        ),
        (
            &["serve", "--config", "/nonexistent/modbot.toml"],
            &[],
            "/nonexistent/modbot.toml",
        ),
    ];
    for (args, env, expected) in cases {
        let (output, stderr) = run(modbot_command(args).envs(env.iter().copied()));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error: configuration") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn config_prints_the_effective_configuration_redacted() {
    let (output, stderr) = run(
        modbot_command(&["config", "--set", "grpc.max_text_bytes=512"]).env(
            "MODBOT_DATABASE_URL",
            "postgres://modbot:hunter2@db:5432/modbot",
        ),
    );
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let printed: toml::Table = stdout.parse().expect("the output is TOML");
    assert_eq!(printed["grpc"]["max_text_bytes"].as_integer(), Some(512));
    assert_eq!(
        printed["database"]["url"].as_str(),
        Some("postgres://modbot:***@db:5432/modbot")
    );
    assert!(!stdout.contains("hunter2"));
}

/// Every place a secret can be given, each secret spelled `s3cret...`.
const SECRET_ENV: &[(&str, &str)] = &[
    (
        "MODBOT_DATABASE_URL",
        "postgres://modbot:s3cret-userinfo@127.0.0.1:1/modbot?password=s3cret-query&sslpassword=s3cret-key",
    ),
    ("MODBOT_REDIS_URL", "redis://:s3cret-redis@127.0.0.1:1/0"),
    (
        "MODBOT_AUTH_TOKENS",
        "admin ops s3cret-admin-0123456789; bridge dgg s3cret-service-012345 bridge_ids=dgg-1 channels=destinygg",
    ),
    ("MODBOT_BRIDGE_CHAT_TOKEN", "s3cret-chat-login"),
    ("MODBOT_BRIDGE_SERVER_TOKEN", "s3cret-bearer-token"),
    (
        "MODBOT_BRIDGE_CHAT_URL",
        "wss://chat.example/ws?token=s3cret-in-url",
    ),
];

#[test]
fn config_never_prints_a_secret() {
    let (output, stderr) = run(modbot_command(&["config"]).envs(SECRET_ENV.iter().copied()));
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!stdout.contains("s3cret"), "{stdout}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let printed: toml::Table = stdout.parse().expect("the output is TOML");
    assert_eq!(
        printed["database"]["url"].as_str(),
        Some("postgres://modbot:***@127.0.0.1:1/modbot?password=***&sslpassword=***")
    );
    assert_eq!(
        printed["redis"]["url"].as_str(),
        Some("redis://:***@127.0.0.1:1/0")
    );
}

#[test]
fn bridge_configuration_errors_exit_2_naming_the_key_and_tokens_stay_secret() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let chat = ["bridge", "--chat-url", "wss://chat.example/ws"];
    let cases: &[Case] = &[
        (&["bridge", "--bot-nick", "b"], &[], "bridge.chat_url"),
        (
            &[
                "bridge",
                "--chat-url",
                "https://chat.example/ws",
                "--bot-nick",
                "b",
            ],
            &[],
            "bridge.chat_url",
        ),
        (&chat, &[], "bridge.bot_nick"),
        (
            &[
                chat[0],
                chat[1],
                chat[2],
                "--bot-nick",
                "b",
                "--dialect",
                "irc",
            ],
            &[],
            "bridge.dialect",
        ),
        (
            &[
                chat[0],
                chat[1],
                chat[2],
                "--bot-nick",
                "b",
                "--server-url",
                "tcp://x",
            ],
            &[],
            "bridge.server_url",
        ),
        (
            &[chat[0], chat[1], chat[2], "--bot-nick", "b"],
            &[("MODBOT_BRIDGE_CHAT_TOKEN_FILE", "/nonexistent/token")],
            "bridge.chat_token_file",
        ),
        (
            &[chat[0], chat[1], chat[2], "--bot-nick", "b"],
            &[("MODBOT_BRIDGE_BUFFER_EVENTS", "0")],
            "bridge.buffer_events",
        ),
    ];
    for (args, env, expected) in cases {
        let (output, stderr) = run(modbot_command(args).envs(env.iter().copied()));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error: configuration") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
    let (output, stderr) = run(modbot_command(&["config"])
        .env("MODBOT_BRIDGE_CHAT_TOKEN", "s3cret-chat-login")
        .env("MODBOT_BRIDGE_SERVER_TOKEN", "s3cret-bearer-token"));
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!stdout.contains("s3cret"), "{stdout}");
    let printed: toml::Table = stdout.parse().expect("the output is TOML");
    assert_eq!(printed["bridge"]["chat_token"].as_str(), Some("***"));
    assert_eq!(printed["bridge"]["server_token"].as_str(), Some("***"));
}

#[test]
fn migrate_creates_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (output, stderr) = run(&mut modbot_command(&[
        "migrate",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]));
    assert!(output.status.success(), "{stderr}");
    assert!(data_dir.join("modbot.db").is_file(), "{stderr}");
}

/// A database that cannot be reached, with passwords in every form in its URL: neither the
/// error nor any log line (the driver's own warnings included) shows one.
#[test]
fn an_unreachable_database_never_prints_its_password() {
    let (output, stderr) = run(modbot_command(&[
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "",
        "--http-addr",
        "",
        "--model-dir",
        "",
        "--set",
        "database.connect_timeout_secs=1",
        "--set",
        "log.level=trace",
    ])
    .envs(SECRET_ENV.iter().copied()));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stderr.contains("cannot connect to the database at postgres://modbot:***@127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sslpassword"),
        "the ignored parameter is named: {stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

#[test]
fn serve_exits_with_a_clear_error_when_the_database_is_unreachable() {
    let (output, stderr) = run(&mut modbot_command(&[
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "",
        "--http-addr",
        "",
        "--database-url",
        "postgres://modbot:pw@127.0.0.1:1/modbot",
        "--set",
        "database.connect_timeout_secs=1",
    ]));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to the database at postgres://modbot:***@127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Kills the server if a test fails before stopping it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `modbot serve` on free ports with JSON logs, `extra` arguments and `env`; returns
/// the server, its remaining log lines and its gRPC address (from the "modbot serving" line).
fn serve_json(
    dir: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Server, LogLines, String) {
    let mut args = vec![
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--log-format",
        "json",
    ];
    args.extend_from_slice(extra);
    let child = modbot_command(&args)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start modbot serve");
    let mut server = Server(child);
    let mut lines = BufReader::new(server.0.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("modbot logs before it exits").unwrap();
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if event["message"] == "modbot serving" {
            break event["addr"].as_str().expect("addr field").to_owned();
        }
    };
    (server, lines, addr)
}

type LogLines = std::io::Lines<BufReader<std::process::ChildStderr>>;

/// Sends SIGTERM; returns the log lines written until the server exited, and its exit status.
async fn stop(mut server: Server, lines: LogLines) -> (Vec<String>, std::process::ExitStatus) {
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Read the rest off the runtime's thread: the client's connection must stay responsive
    // (it answers the server's GOAWAY ping) for the shutdown to be prompt.
    let waited = tokio::task::spawn_blocking(move || {
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = server.0.wait();
        (rest, status, server)
    });
    let (rest, status, _server) = tokio::time::timeout(Duration::from_secs(10), waited)
        .await
        .expect("modbot stops promptly after SIGTERM")
        .unwrap();
    (rest, status.unwrap())
}

#[tokio::test]
async fn serve_answers_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (server, lines, addr) = serve_json(dir.path(), &["--model-dir", ""], &[]);
    let mut client = ModerationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let verdicts = client
        .classify(ClassifyRequest {
            messages: vec![chat_message("m1", "spammer", "buy followers here")],
            options: None,
        })
        .await
        .expect("classify")
        .into_inner()
        .verdicts;
    assert_eq!(verdicts[0].decision, Decision::Hide as i32);
    assert!(
        dir.path().join("modbot.db").is_file(),
        "the SQLite file is created on first run"
    );

    let (rest, status) = stop(server, lines).await;
    assert!(status.success(), "exit 0 after SIGTERM: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("modbot stopped")),
        "{rest:?}"
    );
}

/// The JSON log of one Classify call at `modbot=debug`, with the model configured but missing
/// (so each message logs, at debug, that it was decided without the model), `extra`
/// arguments, and a caller's request id. Returns every line logged after start-up, parsed,
/// and the request id the response carried.
async fn classify_logged(extra: &[&str], text: &str) -> (Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-model");
    let mut args = vec![
        "--model-dir",
        missing.to_str().unwrap(),
        "--set",
        "model.fetch_if_missing=false",
    ];
    args.extend_from_slice(extra);
    let (server, lines, addr) = serve_json(dir.path(), &args, &[("RUST_LOG", "modbot=debug")]);
    let mut client = ModerationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(ClassifyRequest {
        messages: vec![chat_message("log-m1", "logger", text)],
        options: None,
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-logging-7".parse().unwrap());
    let response = client.classify(request).await.expect("classify");
    let echoed = response
        .metadata()
        .get("x-request-id")
        .expect("the request id comes back")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.into_inner().verdicts.len(), 1);
    // A call without an id of its own gets a new one.
    let generated = client
        .classify(ClassifyRequest {
            messages: vec![chat_message("log-m2", "logger", "hello there")],
            options: None,
        })
        .await
        .expect("classify");
    let generated = generated
        .metadata()
        .get("x-request-id")
        .expect("generated id");
    assert_eq!(generated.len(), 36, "a UUID: {generated:?}");
    let (rest, status) = stop(server, lines).await;
    assert!(status.success(), "{rest:?}");
    let events = rest
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    (events, echoed)
}

/// The spans of the events logged while deciding `log-m1`.
fn message_events(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|event| {
            event["spans"].as_array().is_some_and(|spans| {
                spans
                    .iter()
                    .any(|s| s["name"] == "message" && s["message_id"] == "log-m1")
            })
        })
        .collect()
}

#[tokio::test]
async fn json_logs_carry_request_and_message_ids_but_never_the_text_by_default() {
    let text = "zebra quartz marker says hello";
    let (events, echoed) = classify_logged(&[], text).await;
    assert_eq!(echoed, "req-logging-7", "the caller's id is echoed");
    let decided = message_events(&events);
    assert!(
        !decided.is_empty(),
        "the debug line about the missing model is logged in the message's span: {events:?}"
    );
    for event in &decided {
        let spans = event["spans"].as_array().unwrap();
        let grpc = spans
            .iter()
            .find(|s| s["name"] == "grpc")
            .expect("grpc span");
        assert_eq!(grpc["request_id"], "req-logging-7", "{event}");
        assert_eq!(grpc["rpc"], "Moderation/Classify", "{event}");
        let message = spans.iter().find(|s| s["name"] == "message").unwrap();
        assert_eq!(message["channel"], "destinygg", "{event}");
        assert!(message.get("text").is_none(), "{event}");
    }
    for event in &events {
        assert!(!event.to_string().contains("zebra quartz"), "{event}");
    }
}

#[tokio::test]
async fn message_text_is_logged_only_when_configured() {
    let text = "zebra quartz marker says hello";
    let (events, _) = classify_logged(&["--set", "log.message_text=true"], text).await;
    let decided = message_events(&events);
    assert!(!decided.is_empty(), "{events:?}");
    for event in decided {
        let spans = event["spans"].as_array().unwrap();
        let message = spans.iter().find(|s| s["name"] == "message").unwrap();
        assert_eq!(message["text"], text, "{event}");
    }
}

#[test]
fn replay_fails_clearly_when_the_server_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("chat.log");
    std::fs::write(&log, "[2017-02-01 20:00:01 UTC] Destiny: hello chat\n").unwrap();
    let (output, stderr) = run(&mut modbot_command(&[
        "replay",
        log.to_str().unwrap(),
        "--server-url",
        "http://127.0.0.1:1",
    ]));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: cannot connect to the modbot server at http://127.0.0.1:1 (bridge.server_url)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty(), "no summary on failure");

    let (output, stderr) = run(&mut modbot_command(&[
        "replay",
        log.to_str().unwrap(),
        "--server-url",
        "127.0.0.1:50051",
    ]));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bridge.server_url: `127.0.0.1:50051` is not an http:// or https:// URL"),
        "{stderr}"
    );

    // Neither refusal nor a failed connection shows a password in the URL.
    for url in [
        "tcp://replay:s3cret@127.0.0.1:1",
        "http://replay:s3cret@127.0.0.1:1/?token=s3cret",
    ] {
        let (output, stderr) = run(&mut modbot_command(&[
            "replay",
            log.to_str().unwrap(),
            "--server-url",
            url,
        ]));
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("replay:***@127.0.0.1:1"), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}

#[test]
fn replay_fails_naming_a_missing_file() {
    let (output, stderr) = run(&mut modbot_command(&["replay", "missing-file.log"]));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the log missing-file.log"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Bad flags are usage errors (clap's exit code 2).
    for args in [
        &["replay", "x.log", "--rate", "fast"][..],
        &["replay", "x.log", "--rate", "-1"],
        &["replay", "x.log", "--limit", "0"],
        &["replay", "x.log", "--dialect", "irc"],
        &["replay"],
    ] {
        let (output, stderr) = run(&mut modbot_command(args));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn replay_prints_its_summary_to_stdout_and_logs_to_stderr() {
    let server = common::TestServer::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("chat.log");
    std::fs::write(
        &log,
        "[2017-02-01 20:00:01 UTC] Destiny: hello chat\n\
         not a log line\n\
         [2017-02-01 20:00:02 UTC] Loud_Larry: WHY IS NOBODY TALKING ABOUT THE DEBATE\n",
    )
    .unwrap();
    let url = format!("http://{}", server.addr);
    let log_arg = log.to_str().unwrap().to_owned();
    for json in [true, false] {
        let mut args = vec![
            "replay".to_owned(),
            log_arg.clone(),
            "--server-url".to_owned(),
            url.clone(),
            "--channel".to_owned(),
            format!("cli-{json}"),
        ];
        if json {
            args.push("--json".to_owned());
        }
        let output = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            modbot_command(&args).output().expect("run modbot replay")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.contains("replaying"), "logs go to stderr: {stderr}");
        if json {
            let summary: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
            assert_eq!(summary["messages_sent"], 2, "{stdout}");
            assert_eq!(summary["verdicts"], 2, "{stdout}");
            assert_eq!(summary["malformed"]["first"][0]["line"], 2, "{stdout}");
            assert_eq!(summary["decisions"]["hide"], 1, "{stdout}");
            assert_eq!(summary["channel"], "cli-true", "{stdout}");
        } else {
            assert!(stdout.starts_with("replay of "), "{stdout}");
            assert!(
                stdout.contains("decisions         allow 1, hold 0, hide 1"),
                "{stdout}"
            );
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn classify_asks_a_running_server_and_prints_the_verdict() {
    let server = common::TestServer::start(|config| {
        config.auth.tokens = "classifier cli-tester cli-classifier-token-6d2f".into();
    })
    .await;
    let url = format!("http://{}", server.addr);
    let run = |args: Vec<String>, token: Option<&'static str>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut command = modbot_command(&args);
            if let Some(token) = token {
                command.env("MODBOT_BRIDGE_SERVER_TOKEN", token);
            }
            command.output().expect("run modbot classify")
        })
    };
    let scam = "FREE NITRO giveaway claim it at discord-gift.ru/claim";
    let args = |extra: &[&str]| {
        let mut args = vec![
            "classify".to_owned(),
            scam.to_owned(),
            "--server-url".to_owned(),
            url.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    let output = run(args(&[]), Some("cli-classifier-token-6d2f"))
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("decision   hide"), "{stdout}");
    assert!(stdout.contains("dry run"), "{stdout}");
    assert!(stdout.contains("scam-giveaway"), "{stdout}");
    assert!(stdout.contains("harm-hidden"), "{stdout}");

    let output = run(
        args(&["--json", "--channel", "strims"]),
        Some("cli-classifier-token-6d2f"),
    )
    .await
    .unwrap();
    assert!(output.status.success());
    let verdict: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(verdict["decision"], "hide", "{verdict}");
    assert_eq!(verdict["channel"], "strims");
    assert!(
        verdict["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["ruleId"] == "scam-giveaway")),
        "{verdict}"
    );

    // A dry run wrote nothing: the same text again is still a first offence (a recorded one
    // would have put the user on the ladder, and the next would be a timeout).
    let again = run(args(&[]), Some("cli-classifier-token-6d2f"))
        .await
        .unwrap();
    let again = String::from_utf8(again.stdout).unwrap();
    assert!(again.starts_with("decision   hide"), "{again}");
    let recorded = run(args(&["--record"]), Some("cli-classifier-token-6d2f"))
        .await
        .unwrap();
    assert!(
        String::from_utf8(recorded.stdout)
            .unwrap()
            .contains("(enforced)")
    );
    let after = run(args(&[]), Some("cli-classifier-token-6d2f"))
        .await
        .unwrap();
    let after = String::from_utf8(after.stdout).unwrap();
    assert!(
        after.starts_with("decision   timeout"),
        "the recorded one counts: {after}"
    );

    // Without the token: the refusal, clearly, and a failing exit code.
    let output = run(args(&[]), None).await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    server.stop().await.unwrap();
}
