//! `modbot bridge` end to end: a real modbot server, the protocol-faithful test chat
//! (tests/chat_server) in both dialects, and the bridge between them, as the binary runs it.
//!
//! Spam in the chat becomes a MUTE in nanoseconds and an executed action; a moderator's
//! ExecuteAction reaches the chat and a refusal (`nopermission`) fails it with that code; the
//! chat dropping, refreshing or sending garbage and modbot restarting never lose the bridge
//! or make it act twice; a human moderator's MUTE becomes a feedback example; the buffer
//! towards an unreachable modbot stays bounded; warnings and reasons reach the user as private
//! messages.

use crate::{browser, chat_server, common};

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chat_server::{ChatClient, ChatServer, Dialect, Moderation};
use modbot::Config;
use modbot::bridge::BridgeReport;
use modbot::proto::{
    self, ActionKind, ActionSource, ActionStatus, ExecuteActionRequest,
    actions_client::ActionsClient,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::Channel;

const BOT_TOKEN: &str = "bot-login-token";
const MOD_TOKEN: &str = "mod-login-token";
const SPAMMER_TOKEN: &str = "spammer-login-token";
const USER_TOKEN: &str = "user-login-token";

fn channel_of(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Dgg => "destinygg",
        Dialect::Strims => "strims",
    }
}

/// A chat with the bot (a moderator in both dialects), a human moderator, a spammer, an
/// ordinary user, a protected user and an admin.
async fn chat(dialect: Dialect) -> ChatServer {
    let chat = ChatServer::start(dialect).await;
    chat.add_user(BOT_TOKEN, "modbot", &["bot", "moderator"]);
    chat.add_user(MOD_TOKEN, "Mod", &["moderator"]);
    chat.add_user(SPAMMER_TOKEN, "Spammer", &[]);
    chat.add_user(USER_TOKEN, "Bob", &["subscriber"]);
    chat.add_user("protected-login-token", "Shield", &["protected"]);
    chat.add_user("admin-login-token", "Boss", &["admin"]);
    chat
}

/// The bridge's configuration for `chat` and a modbot server at `server`.
fn bridge_config(chat: &ChatServer, server: SocketAddr) -> Config {
    let mut config = Config::default();
    config.metrics.addr = None;
    let bridge = &mut config.bridge;
    bridge.chat_url = chat.url.clone();
    bridge.dialect = match chat.dialect() {
        Dialect::Dgg => "dgg",
        Dialect::Strims => "strims",
    }
    .into();
    bridge.bot_nick = "modbot".into();
    bridge.chat_token = BOT_TOKEN.into();
    bridge.server_url = format!("http://{server}");
    bridge.reconnect_min_ms = 50;
    bridge.reconnect_max_ms = 400;
    bridge.command_timeout_ms = 3000;
    config
}

/// A running bridge.
struct Bridge {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<BridgeReport>>,
}

impl Bridge {
    fn start(config: Config) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            modbot::bridge::run(&config, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Starts a bridge and waits until its connection to `chat` is open, so that what a test
    /// says next is seen (a chat does not replay lines said before a client joined).
    async fn joined(chat: &ChatServer, config: Config) -> Self {
        let before = chat.open_connections();
        let bridge = Self::start(config);
        chat.wait_for_connections(Duration::from_secs(15), |open, _| open > before)
            .await;
        bridge
    }

    async fn stop(mut self) -> BridgeReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the bridge stops promptly")
            .expect("the bridge does not panic")
            .expect("the bridge ends cleanly")
    }
}

/// A modbot server on `addr` (port 0 for any) with its SQLite file in `data_dir`, so a test
/// can stop it and start it again where the bridge expects it.
struct Modbot {
    addr: SocketAddr,
    /// Its HTTP edge: the console and the JSON API.
    http_addr: SocketAddr,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), modbot::app::ServeError>>,
}

impl Modbot {
    async fn start(addr: SocketAddr, data_dir: &Path) -> Self {
        Self::start_with(addr, data_dir, |_| {}).await
    }

    /// [`Modbot::start`] with the test configuration adjusted by `configure`.
    async fn start_with(
        addr: SocketAddr,
        data_dir: &Path,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = common::test_config(data_dir);
        configure(&mut config);
        // The port a stopped server held may take a moment to be free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(Instant::now() < deadline, "cannot bind {addr}: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let addr = listener.local_addr().expect("bound");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let http_addr = http.local_addr().expect("bound");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(modbot::app::serve_with_http(
            config,
            listener,
            Some(http),
            async {
                let _ = stopped.await;
            },
        ));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a URI")
            .connect_lazy();
        Self {
            addr,
            http_addr,
            channel,
            stop: Some(stop),
            task,
        }
    }

    fn actions(&self) -> ActionsClient<Channel> {
        ActionsClient::new(self.channel.clone())
    }

    fn admin(&self) -> proto::admin_client::AdminClient<Channel> {
        proto::admin_client::AdminClient::new(self.channel.clone())
    }

    fn review(&self) -> proto::review_client::ReviewClient<Channel> {
        proto::review_client::ReviewClient::new(self.channel.clone())
    }

    fn appeals(&self) -> proto::appeals_client::AppealsClient<Channel> {
        proto::appeals_client::AppealsClient::new(self.channel.clone())
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("modbot stops within its grace period")
            .expect("no panic")
            .expect("a clean stop");
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("an address")
}

fn moderator_action(dialect: Dialect, kind: ActionKind, target: &str) -> ExecuteActionRequest {
    ExecuteActionRequest {
        channel: channel_of(dialect).into(),
        target_user_id: target.into(),
        kind: kind as i32,
        duration: matches!(kind, ActionKind::Timeout | ActionKind::Hide).then_some(
            prost_types::Duration {
                seconds: 120,
                nanos: 0,
            },
        ),
        reason: "being rude".into(),
        source: ActionSource::Moderator as i32,
        moderator: "Mod".into(),
        ..ExecuteActionRequest::default()
    }
}

async fn execute(modbot: &Modbot, request: ExecuteActionRequest) -> proto::Action {
    // The first call may race the server's start: retry UNAVAILABLE for a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match modbot.actions().execute_action(request.clone()).await {
            Ok(response) => return response.into_inner().action.expect("an action"),
            Err(status)
                if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("ExecuteAction: {status}"),
        }
    }
}

/// Executes `request` and waits until the chat has carried it out (the action is EXECUTED).
async fn carried_out(modbot: &Modbot, request: ExecuteActionRequest) -> proto::Action {
    let action = execute(modbot, request).await;
    let action = settled(modbot, &action.id).await;
    assert_eq!(action.status, ActionStatus::Executed as i32, "{action:?}");
    action
}

/// Polls GetAction until the action leaves pending/sent, for at most 15 s.
async fn settled(modbot: &Modbot, id: &str) -> proto::Action {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let action = modbot
            .actions()
            .get_action(proto::GetActionRequest { id: id.into() })
            .await
            .expect("GetAction")
            .into_inner();
        let status = ActionStatus::try_from(action.status).expect("a status");
        if !matches!(status, ActionStatus::Pending | ActionStatus::Sent) {
            return action;
        }
        assert!(
            Instant::now() < deadline,
            "action never settled: {action:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls ListActions for `target` until `done` holds for one, for at most 15 s.
async fn wait_for_action(
    modbot: &Modbot,
    dialect: Dialect,
    target: &str,
    done: impl Fn(&proto::Action) -> bool,
) -> proto::Action {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let actions = modbot
            .actions()
            .list_actions(proto::ListActionsRequest {
                channel: channel_of(dialect).into(),
                target_user_id: target.into(),
                ..Default::default()
            })
            .await
            .expect("ListActions")
            .into_inner()
            .actions;
        if let Some(action) = actions.iter().find(|a| done(a)) {
            return action.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no matching action on {target} among {actions:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn mutes_of<'a>(moderations: &'a [Moderation], target: &str) -> Vec<&'a Moderation> {
    moderations
        .iter()
        .filter(|m| m.target == target && m.event == "MUTE")
        .collect()
}

/// Says `lines` as `client`, far enough apart for the chat's throttle (300 ms).
async fn say_all(client: &mut ChatClient, lines: &[&str]) {
    for line in lines {
        client.say(line).await;
        tokio::time::sleep(Duration::from_millis(340)).await;
    }
}

async fn spam_is_muted_and_recorded_executed(dialect: Dialect) {
    let chat = chat(dialect).await;
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start(any_port(), data.path()).await;
    let bridge = Bridge::joined(&chat, bridge_config(&chat, modbot.addr)).await;
    let mut spammer = chat.client(Some(SPAMMER_TOKEN)).await;
    let mut watcher = chat.client(Some(USER_TOKEN)).await;
    // The same pitch three times: the repetition rule warns at the second, then times out at
    // the third. A fourth could race the MUTE (sent before the chat applies it, it would earn
    // a second, longer timeout), so there is exactly one timeout to look for.
    say_all(
        &mut spammer,
        &[
            "cheap followers and viewers at followers dot shop, best prices in town, use code ONE",
            "cheap followers and viewers at followers dot shop, best prices in town, use code TWO",
            "cheap followers and viewers at followers dot shop, best prices in town, use code SIX",
        ],
    )
    .await;
    let moderations = chat
        .wait_for_moderations(Duration::from_secs(15), |m| {
            !mutes_of(m, "Spammer").is_empty()
        })
        .await;
    let mute = mutes_of(&moderations, "Spammer")[0].clone();
    assert_eq!(mute.moderator, "modbot");
    let action = wait_for_action(&modbot, dialect, "Spammer", |a| {
        a.kind == ActionKind::Timeout as i32 && a.source == ActionSource::Automod as i32
    })
    .await;
    let action = settled(&modbot, &action.id).await;
    assert_eq!(
        action.status,
        ActionStatus::Executed as i32,
        "the chat's broadcast confirms the action: {action:?}"
    );
    let duration = action.duration.expect("a timeout has a duration");
    let expected_ns = u64::try_from(duration.seconds).unwrap() * 1_000_000_000;
    assert!(duration.seconds >= 60, "{duration:?}");
    assert_eq!(
        mute.duration_ns,
        Some(expected_ns),
        "MUTE carries the action's duration in nanoseconds"
    );
    // The chat broadcast it to everyone; destiny.gg's event says seconds, Strims' nothing.
    let event = loop {
        let event = watcher
            .expect("MUTE", Duration::from_secs(5))
            .await
            .expect("the watcher sees the MUTE broadcast");
        if event["data"] == "Spammer" {
            break event;
        }
    };
    match dialect {
        Dialect::Dgg => assert_eq!(event["duration"], duration.seconds),
        Dialect::Strims => assert!(event.get("duration").is_none(), "{event}"),
    }
    assert_eq!(
        mutes_of(&chat.moderations(), "Spammer").len(),
        1,
        "one action, one MUTE"
    );
    let report = bridge.stop().await;
    assert!(report.events >= 3, "{report:?}");
    assert_eq!(report.events_dropped, 0);
    modbot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spam_is_muted_in_nanoseconds_dgg() {
    spam_is_muted_and_recorded_executed(Dialect::Dgg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spam_is_muted_in_nanoseconds_strims() {
    spam_is_muted_and_recorded_executed(Dialect::Strims).await;
}

async fn moderator_actions_reach_the_chat(dialect: Dialect) {
    let chat = chat(dialect).await;
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start(any_port(), data.path()).await;
    let bridge = Bridge::start(bridge_config(&chat, modbot.addr));

    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Timeout, "Bob"),
    )
    .await;
    let mutes = chat.moderations();
    assert_eq!(
        mutes_of(&mutes, "Bob")[0].duration_ns,
        Some(120_000_000_000)
    );

    // A protected user: the chat answers ERR nopermission (an object on destiny.gg, a bare
    // string on Strims) and the action fails with that code.
    for target in ["Shield", "Boss"] {
        let refused = execute(
            &modbot,
            moderator_action(dialect, ActionKind::Timeout, target),
        )
        .await;
        let refused = settled(&modbot, &refused.id).await;
        assert_eq!(refused.status, ActionStatus::Failed as i32, "{refused:?}");
        assert_eq!(refused.error, "nopermission", "{refused:?}");
    }
    // An unknown nick cannot be banned (notfound); a ban with its reason goes through.
    let unknown = execute(
        &modbot,
        moderator_action(dialect, ActionKind::Ban, "Nobody"),
    )
    .await;
    assert_eq!(settled(&modbot, &unknown.id).await.error, "notfound");
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Ban, "Spammer"),
    )
    .await;
    let banned = chat
        .moderations()
        .into_iter()
        .find(|m| m.event == "BAN" && m.target == "Spammer")
        .expect("the BAN reached the chat");
    assert_eq!(banned.reason.as_deref(), Some("being rude"));
    assert!(banned.permanent, "no duration is a permanent ban");
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Unban, "Spammer"),
    )
    .await;
    // Every command was paced: no `throttled` from the chat.
    assert!(
        chat.commands()
            .iter()
            .all(|c| c.error.as_deref() != Some("throttled")),
        "{:?}",
        chat.commands()
    );
    bridge.stop().await;
    modbot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderator_actions_reach_the_chat_dgg() {
    moderator_actions_reach_the_chat(Dialect::Dgg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderator_actions_reach_the_chat_strims() {
    moderator_actions_reach_the_chat(Dialect::Strims).await;
}

/// What the user sees: a warning arrives as a private message with the rule's reason and how
/// to appeal, nothing of their own text; a moderator's timeout is followed by one saying how
/// long and why.
async fn warnings_and_reasons_reach_the_user(dialect: Dialect) {
    let chat = chat(dialect).await;
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start(any_port(), data.path()).await;
    let bridge = Bridge::joined(&chat, bridge_config(&chat, modbot.addr)).await;
    let mut spammer = chat.client(Some(SPAMMER_TOKEN)).await;
    let mut bob = chat.client(Some(USER_TOKEN)).await;
    // The same pitch twice: the repetition rule's first offence is a warning.
    say_all(
        &mut spammer,
        &[
            "cheap followers and viewers at followers dot shop, best prices in town, use code ONE",
            "cheap followers and viewers at followers dot shop, best prices in town, use code TWO",
        ],
    )
    .await;
    let warning = spammer
        .expect("PRIVMSG", Duration::from_secs(15))
        .await
        .expect("the warning reaches the spammer");
    let text = warning["data"].as_str().unwrap();
    assert_eq!(warning["nick"], "modbot", "{warning}");
    assert!(text.starts_with("Spammer, this is a warning"), "{text}");
    assert!(
        text.contains("To appeal, ask a moderator and quote action"),
        "{text}"
    );
    assert!(
        !text.contains("followers"),
        "nothing of the message is echoed: {text}"
    );
    let warned = wait_for_action(&modbot, dialect, "Spammer", |a| {
        a.kind == ActionKind::Warn as i32
    })
    .await;
    let warned = settled(&modbot, &warned.id).await;
    assert_eq!(warned.status, ActionStatus::Executed as i32, "{warned:?}");
    assert!(
        text.contains(&warned.id),
        "the notice names the action: {text}"
    );

    // A moderator's timeout: the MUTE, then why.
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Timeout, "Bob"),
    )
    .await;
    let notice = bob
        .expect("PRIVMSG", Duration::from_secs(15))
        .await
        .expect("the timeout's notice reaches Bob");
    assert_eq!(
        notice["data"]
            .as_str()
            .unwrap()
            .split(". To appeal")
            .next()
            .unwrap(),
        "Bob, you are muted for 2 minutes: being rude"
    );
    let delivered = chat.private_messages();
    assert_eq!(
        delivered.iter().map(|m| m.to.as_str()).collect::<Vec<_>>(),
        ["Spammer", "Bob"],
        "one notice each: {delivered:?}"
    );
    bridge.stop().await;
    modbot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_and_reasons_reach_the_user_dgg() {
    warnings_and_reasons_reach_the_user(Dialect::Dgg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_and_reasons_reach_the_user_strims() {
    warnings_and_reasons_reach_the_user(Dialect::Strims).await;
}

/// The pending review item of `user` in the dialect's channel, waited for (15 s).
async fn pending_review(modbot: &Modbot, dialect: Dialect, user: &str) -> proto::ReviewItem {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let items = modbot
            .review()
            .list_reviews(proto::ListReviewsRequest {
                channel: channel_of(dialect).into(),
                status: proto::ReviewStatus::Pending as i32,
                user_id: user.into(),
                ..Default::default()
            })
            .await
            .expect("ListReviews")
            .into_inner()
            .items;
        if let Some(item) = items.into_iter().next() {
            return item;
        }
        assert!(
            Instant::now() < deadline,
            "{user} has no pending review item"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn user_card(modbot: &Modbot, dialect: Dialect, user: &str) -> proto::User {
    modbot
        .admin()
        .get_user(proto::GetUserRequest {
            channel: channel_of(dialect).into(),
            user_id: user.into(),
        })
        .await
        .expect("GetUser")
        .into_inner()
}

/// The human loop through the chat: a held message rejected by a moderator becomes a MUTE and a
/// positive example; one approved costs its author nothing (the short mute that hid it while
/// pending is lifted); a warning's overturned appeal takes its strike back and teaches a
/// negative example.
async fn reviews_and_appeals_reach_the_chat(dialect: Dialect) {
    let chat = chat(dialect).await;
    chat.add_user("eve-login-token", "Eve", &[]);
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start(any_port(), data.path()).await;
    let channel = channel_of(dialect);
    // A rule that holds a pitch for review (the shipped policy hides held messages meanwhile).
    let mut admin = modbot.admin();
    let deadline = Instant::now() + Duration::from_secs(10);
    let rule = proto::Rule {
        id: "held-pitch".into(),
        channel: channel.into(),
        description: "Self-promotion, for a moderator to judge".into(),
        action: proto::Decision::Hold as i32,
        mode: proto::RuleMode::Enforce as i32,
        kind: Some(proto::rule::Kind::Phrase(proto::PhraseRule {
            phrases: vec!["check out my stream".into()],
            syntax: proto::PhraseSyntax::Literal as i32,
            ..Default::default()
        })),
        ..Default::default()
    };
    loop {
        match admin
            .upsert_rule(proto::UpsertRuleRequest {
                rule: Some(rule.clone()),
            })
            .await
        {
            Ok(_) => break,
            Err(status)
                if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("UpsertRule: {status}"),
        }
    }
    let bridge = Bridge::joined(&chat, bridge_config(&chat, modbot.addr)).await;
    let mut spammer = chat.client(Some(SPAMMER_TOKEN)).await;
    let mut eve = chat.client(Some("eve-login-token")).await;

    // Rejected: the moderator's timeout reaches the chat as a MUTE of 5 minutes.
    say_all(&mut spammer, &["check out my stream, giveaways every hour"]).await;
    let item = pending_review(&modbot, dialect, "Spammer").await;
    assert!(
        !item.hide_action_id.is_empty(),
        "hidden while pending: {item:?}"
    );
    let ruled = modbot
        .review()
        .resolve_review(proto::ResolveReviewRequest {
            id: item.id.clone(),
            ruling: proto::ReviewRuling::Reject as i32,
            moderator: "Mod".into(),
            action: ActionKind::Timeout as i32,
            duration: Some(prost_types::Duration {
                seconds: 300,
                nanos: 0,
            }),
            label: "spam/spam".into(),
            note: String::new(),
        })
        .await
        .expect("ResolveReview")
        .into_inner();
    let timeout = settled(&modbot, &ruled.action.expect("an action").id).await;
    assert_eq!(timeout.status, ActionStatus::Executed as i32, "{timeout:?}");
    let moderations = chat
        .wait_for_moderations(Duration::from_secs(15), |m| {
            mutes_of(m, "Spammer")
                .iter()
                .any(|m| m.duration_ns == Some(300_000_000_000))
        })
        .await;
    assert_eq!(
        mutes_of(&moderations, "Spammer").len(),
        2,
        "the hide while pending, then the moderator's timeout: {moderations:?}"
    );
    let card = user_card(&modbot, dialect, "Spammer").await;
    assert_eq!(
        card.offences, 1,
        "the rejection counts on the ladder: {card:?}"
    );

    // Approved: the pending hide is lifted, nothing else is done to Eve.
    say_all(
        &mut eve,
        &["check out my stream tomorrow, we are reading the paper"],
    )
    .await;
    let item = pending_review(&modbot, dialect, "Eve").await;
    let hide = settled(&modbot, &item.hide_action_id).await;
    assert_eq!(hide.status, ActionStatus::Executed as i32, "{hide:?}");
    let ruled = modbot
        .review()
        .resolve_review(proto::ResolveReviewRequest {
            id: item.id.clone(),
            ruling: proto::ReviewRuling::Approve as i32,
            moderator: "Mod".into(),
            ..Default::default()
        })
        .await
        .expect("ResolveReview")
        .into_inner();
    assert_eq!(
        ruled.item.as_ref().map(|i| i.status),
        Some(proto::ReviewStatus::Approved as i32)
    );
    let unmute = settled(&modbot, &ruled.action.expect("the hide's unmute").id).await;
    assert_eq!(unmute.kind, ActionKind::Unmute as i32);
    assert_eq!(unmute.status, ActionStatus::Executed as i32, "{unmute:?}");
    let eve_moderations: Vec<_> = chat
        .moderations()
        .into_iter()
        .filter(|m| m.target == "Eve")
        .map(|m| m.event)
        .collect();
    assert_eq!(
        eve_moderations,
        ["MUTE", "UNMUTE"],
        "nothing but the hide and its lifting"
    );
    let card = user_card(&modbot, dialect, "Eve").await;
    assert_eq!(
        (card.offences, card.strikes),
        (0, 0.0),
        "an approval costs nothing"
    );

    // A warning, appealed and overturned: its strike comes off the ladder.
    say_all(
        &mut eve,
        &[
            "does anyone know a good keyboard for programming and gaming at once",
            "does anyone know a good keyboard for programming and gaming at once?",
        ],
    )
    .await;
    let warned = wait_for_action(&modbot, dialect, "Eve", |a| {
        a.kind == ActionKind::Warn as i32
    })
    .await;
    let before = user_card(&modbot, dialect, "Eve").await;
    assert_eq!(before.offences, 1, "{before:?}");
    assert!(before.strikes > 0.9, "{before:?}");
    let appeal = modbot
        .appeals()
        .file_appeal(proto::FileAppealRequest {
            action_id: warned.id.clone(),
            user_id: "Eve".into(),
            text: "I added a question mark, it was a question".into(),
        })
        .await
        .expect("FileAppeal")
        .into_inner();
    modbot
        .appeals()
        .resolve_appeal(proto::ResolveAppealRequest {
            id: appeal.id,
            resolution: proto::AppealResolution::Overturn as i32,
            moderator: "Mod".into(),
            note: "fair".into(),
        })
        .await
        .expect("ResolveAppeal");
    let after = user_card(&modbot, dialect, "Eve").await;
    assert_eq!(after.offences, 0, "{after:?}");
    assert!(after.strikes < 0.01, "{after:?}");

    // The approval and the overturn taught negative examples; the rejection a positive one.
    let store = modbot::infra::store::Store::connect(
        &common::test_config(data.path()).database_url(),
        &modbot::infra::store::ConnectOptions {
            max_connections: 1,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        },
    )
    .await
    .expect("the server's database");
    let feedback = store.feedback().await.expect("feedback");
    let sources: Vec<(&str, bool)> = feedback
        .iter()
        .map(|f| (f.source.as_str(), f.positive))
        .collect();
    assert!(sources.contains(&("review_rejected", true)), "{sources:?}");
    assert!(
        sources.contains(&("appeal_overturned", false)),
        "{sources:?}"
    );
    bridge.stop().await;
    modbot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_and_appeals_reach_the_chat_dgg() {
    reviews_and_appeals_reach_the_chat(Dialect::Dgg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_and_appeals_reach_the_chat_strims() {
    reviews_and_appeals_reach_the_chat(Dialect::Strims).await;
}

/// A raid through the chat: raiders join and paste the same line; the bridge's joins and their
/// copies put the channel in raid mode (Admin.GetStats shows it), the copies are hidden (a
/// short MUTE each), a regular is untouched, and raid mode ends by itself.
async fn a_raid_is_detected_and_ends(dialect: Dialect) {
    let chat = chat(dialect).await;
    let raiders: Vec<String> = (0..6).map(|i| format!("Raider{i}")).collect();
    for raider in &raiders {
        chat.add_user(&format!("{raider}-token"), raider, &[]);
    }
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start(any_port(), data.path()).await;
    let channel = channel_of(dialect);
    // The shipped policy with a small surge and a short raid mode.
    let mut admin = modbot.admin();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut policy = loop {
        match admin
            .get_policy(proto::GetPolicyRequest {
                channel: channel.into(),
            })
            .await
        {
            Ok(policy) => break policy.into_inner(),
            Err(status)
                if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("GetPolicy: {status}"),
        }
    };
    policy.channel = channel.into();
    let raid = policy
        .raid
        .as_mut()
        .expect("the shipped policy has raid mode");
    assert!(raid.enabled);
    raid.join_surge = 5;
    raid.surge_users = 3;
    raid.duration = Some(prost_types::Duration {
        seconds: 3,
        nanos: 0,
    });
    raid.subonly = true;
    admin
        .set_policy(proto::SetPolicyRequest {
            policy: Some(policy),
        })
        .await
        .expect("SetPolicy");
    let bridge = Bridge::joined(&chat, bridge_config(&chat, modbot.addr)).await;
    let mut bob = chat.client(Some(USER_TOKEN)).await;
    // Bob, new too, says something of his own during the raid: untouched.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut clients = Vec::new();
    for raider in &raiders {
        clients.push(chat.client(Some(&format!("{raider}-token"))).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let copy = "this stream is dead, come watch a real streamer at raid dot tv";
    for client in &mut clients {
        client.say(copy).await;
    }
    bob.say("welcome raiders, we are reading chapter three tonight")
        .await;
    // From the raid's start its copies are hidden (raiders whose copy came after the chat went
    // subscriber-only were refused by the chat itself).
    let moderations = chat
        .wait_for_moderations(Duration::from_secs(15), |m| {
            raiders.iter().any(|r| !mutes_of(m, r).is_empty())
        })
        .await;
    assert!(mutes_of(&moderations, "Bob").is_empty(), "{moderations:?}");
    let hidden_raider = raiders
        .iter()
        .find(|r| !mutes_of(&moderations, r).is_empty())
        .expect("a raider was muted");
    let stats = admin
        .get_stats(proto::GetStatsRequest {
            channel: channel.into(),
            ..Default::default()
        })
        .await
        .expect("GetStats")
        .into_inner();
    let raid = stats.raids.first().expect("the channel is in raid mode");
    assert_eq!(raid.channel, channel);
    assert!(raid.raiders >= 3 && raid.joins >= 5, "{raid:?}");
    assert!(raid.sample.contains("real streamer"), "{raid:?}");
    // Past the chat's throttle (300 ms) since his first line.
    tokio::time::sleep(Duration::from_millis(400)).await;
    bob.say("the raid is a bit much, glad the chat is calm again")
        .await;
    let hidden = wait_for_action(&modbot, dialect, hidden_raider, |a| {
        a.kind == ActionKind::Hide as i32
    })
    .await;
    assert!(hidden.reason.contains("raid mode"), "{hidden:?}");
    // Raid mode ends by itself 3 s after the last copy.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stats = admin
            .get_stats(proto::GetStatsRequest {
                channel: channel.into(),
                ..Default::default()
            })
            .await
            .expect("GetStats")
            .into_inner();
        if stats.raids.is_empty() && chat.subonly_changes() == [true, false] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "raid mode never ended: {stats:?}, subscriber-only changes {:?}",
            chat.subonly_changes()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Bob, a subscriber, could talk throughout; a raider who tried during subscriber-only
    // mode was refused with `submode`.
    let bob_refused: Vec<_> = chat
        .commands()
        .into_iter()
        .filter(|c| c.nick == "Bob" && c.error.is_some())
        .collect();
    assert!(bob_refused.is_empty(), "{bob_refused:?}");
    bridge.stop().await;
    modbot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raid_is_detected_and_ends_dgg() {
    a_raid_is_detected_and_ends(Dialect::Dgg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raid_is_detected_and_ends_strims() {
    a_raid_is_detected_and_ends(Dialect::Strims).await;
}

/// The chat drops every connection, then asks for a reconnect: the bridge comes back each
/// time, actions before and after are carried out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_drops_and_refreshes_never_act_twice() {
    let dialect = Dialect::Dgg;
    let chat = chat(dialect).await;
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start(any_port(), data.path()).await;
    let bridge = Bridge::start(bridge_config(&chat, modbot.addr));

    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Timeout, "Bob"),
    )
    .await;
    let accepted = chat.accepted_connections();
    chat.drop_connections();
    // Recorded while the bridge is away from the chat: carried out once it is back.
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Timeout, "Spammer"),
    )
    .await;
    assert!(
        chat.accepted_connections() > accepted,
        "the bridge reconnected"
    );

    let accepted = chat.accepted_connections();
    chat.refresh();
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Unmute, "Bob"),
    )
    .await;
    assert!(chat.accepted_connections() > accepted, "REFRESH reconnects");

    // Give any duplicate time to show, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let moderations = chat.moderations();
    assert_eq!(mutes_of(&moderations, "Bob").len(), 1, "{moderations:?}");
    assert_eq!(
        mutes_of(&moderations, "Spammer").len(),
        1,
        "{moderations:?}"
    );
    assert_eq!(
        moderations.iter().filter(|m| m.event == "UNMUTE").count(),
        1,
        "{moderations:?}"
    );
    bridge.stop().await;
    modbot.stop().await;
}

/// modbot stops while the chat goes on: the bridge holds the chat's messages, reconnects when
/// modbot is back on the same address, hands them over, and carries out new actions once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbot_restarts_and_the_bridge_resumes() {
    let dialect = Dialect::Dgg;
    let chat = chat(dialect).await;
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start(any_port(), data.path()).await;
    let addr = modbot.addr;
    let bridge = Bridge::start(bridge_config(&chat, addr));

    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Timeout, "Bob"),
    )
    .await;
    modbot.stop().await;

    // Spam while modbot is down: held by the bridge, decided when modbot is back.
    let mut spammer = chat.client(Some(SPAMMER_TOKEN)).await;
    say_all(
        &mut spammer,
        &[
            "cheap followers and viewers at followers dot shop, best prices in town, use code ONE",
            "cheap followers and viewers at followers dot shop, best prices in town, use code TWO",
            "cheap followers and viewers at followers dot shop, best prices in town, use code SIX",
        ],
    )
    .await;
    let modbot = Modbot::start(addr, data.path()).await;
    let spam = wait_for_action(&modbot, dialect, "Spammer", |a| {
        a.kind == ActionKind::Timeout as i32 && a.source == ActionSource::Automod as i32
    })
    .await;
    assert_eq!(
        settled(&modbot, &spam.id).await.status,
        ActionStatus::Executed as i32
    );
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Unmute, "Bob"),
    )
    .await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let moderations = chat.moderations();
    assert_eq!(mutes_of(&moderations, "Bob").len(), 1, "{moderations:?}");
    assert_eq!(
        mutes_of(&moderations, "Spammer").len(),
        1,
        "{moderations:?}"
    );
    let report = bridge.stop().await;
    assert_eq!(report.events_dropped, 0);
    modbot.stop().await;
}

/// A human moderator mutes a user in the chat: the bridge streams the MUTE, modbot records
/// it as an executed moderator action and turns the user's message into a feedback example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_mute_becomes_feedback() {
    for dialect in [Dialect::Dgg, Dialect::Strims] {
        let chat = chat(dialect).await;
        let data = tempfile::tempdir().expect("a temporary directory");
        let modbot = Modbot::start(any_port(), data.path()).await;
        let bridge = Bridge::joined(&chat, bridge_config(&chat, modbot.addr)).await;
        let mut moderator = chat.client(Some(MOD_TOKEN)).await;
        let mut bob = chat.client(Some(USER_TOKEN)).await;
        // Let the bridge see (and modbot decide) Bob's message before the mute.
        bob.say("you are all a bunch of clowns and i hate this stream")
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        moderator
            .send(
                "MUTE",
                serde_json::json!({"data": "Bob", "duration": 600_000_000_000u64}),
            )
            .await;
        let action = wait_for_action(&modbot, dialect, "Bob", |a| {
            a.source == ActionSource::Moderator as i32
        })
        .await;
        assert_eq!(action.status, ActionStatus::Executed as i32);
        assert_eq!(action.moderator, "Mod");
        assert_eq!(action.kind, ActionKind::Timeout as i32);
        let store = modbot::infra::store::Store::connect(
            &common::test_config(data.path()).database_url(),
            &modbot::infra::store::ConnectOptions {
                max_connections: 1,
                connect_timeout: Duration::from_secs(2),
                statement_timeout: Duration::from_secs(5),
            },
        )
        .await
        .expect("the server's database");
        let deadline = Instant::now() + Duration::from_secs(10);
        let feedback = loop {
            let feedback = store.feedback().await.expect("feedback");
            if !feedback.is_empty() {
                break feedback;
            }
            assert!(
                Instant::now() < deadline,
                "no feedback example ({dialect:?})"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(feedback[0].user_id, "Bob");
        assert!(feedback[0].text.contains("clowns"), "{:?}", feedback[0]);
        store.close().await;
        bridge.stop().await;
        modbot.stop().await;
    }
}

/// Garbage from the chat is logged and skipped: the bridge stays connected (or, for a text
/// frame that is not UTF-8, which breaks the WebSocket itself, reconnects) and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_never_stop_the_bridge() {
    let dialect = Dialect::Strims;
    let chat = chat(dialect).await;
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start(any_port(), data.path()).await;
    let bridge = Bridge::start(bridge_config(&chat, modbot.addr));
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Timeout, "Bob"),
    )
    .await;
    let accepted = chat.accepted_connections();
    for frame in [
        Message::Binary(vec![0xff, 0x00, 0x42].into()),
        Message::Text("NOSPACE".into()),
        Message::Text("MSG {not json".into()),
        Message::Text(r#"MSG {"nick":"","data":"x"}"#.into()),
        Message::Text("NEWFANGLED {}".into()),
        Message::Text("msg {}".into()),
        Message::Text(format!(r#"MSG {{"nick":"Bob","data":"{}"}}"#, "x".repeat(20_000)).into()),
        Message::Text(r#"ERR 42"#.into()),
        Message::Text(r#"MUTE {"nick":"Mod","features":[],"timestamp":1}"#.into()),
    ] {
        chat.inject(frame);
    }
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Unmute, "Bob"),
    )
    .await;
    assert_eq!(
        chat.accepted_connections(),
        accepted,
        "no reconnect for skipped frames"
    );

    // A text frame whose bytes are not UTF-8 is a WebSocket protocol violation: the
    // connection ends and the bridge reconnects.
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    chat.inject(Message::Frame(Frame::message(
        vec![b'M', b'S', b'G', b' ', 0xc3, 0x28],
        OpCode::Data(Data::Text),
        true,
    )));
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Timeout, "Spammer"),
    )
    .await;
    bridge.stop().await;
    modbot.stop().await;
}

/// modbot unreachable: the chat's events are held up to `buffer_events`, the oldest dropped
/// and counted; memory stays bounded however long the chat talks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_towards_an_unreachable_modbot_is_bounded() {
    let chat = chat(Dialect::Dgg).await;
    // A port nothing listens on.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("an address");
    let mut config = bridge_config(&chat, unused);
    config.bridge.buffer_events = 3;
    let bridge = Bridge::joined(&chat, config).await;
    let mut bob = chat.client(Some(USER_TOKEN)).await;
    let lines: Vec<String> = (0..8)
        .map(|i| format!("message number {i} of many"))
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    say_all(&mut bob, &lines).await;
    let report = bridge.stop().await;
    assert!(report.events >= 8, "{report:?}");
    assert_eq!(report.events_dropped, report.events - 3, "{report:?}");
}

/// Without the `bot` feature the chat throttles the bridge's commands like anyone's. At the
/// chat's own pace (300 ms) a burst of actions goes through without a single `throttled`; a
/// bridge set to pace faster than the chat allows gets `throttled`, backs off (doubling) and
/// still carries every action out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_paced_and_back_off_when_throttled() {
    for (throttle_base_ms, expect_throttled) in [(300, false), (50, true)] {
        let chat = ChatServer::start(Dialect::Dgg).await;
        chat.add_user(BOT_TOKEN, "modbot", &["moderator"]);
        let targets = ["t1", "t2", "t3"];
        for target in targets {
            chat.add_user(&format!("{target}-login-token"), target, &[]);
        }
        let data = tempfile::tempdir().expect("a temporary directory");
        let modbot = Modbot::start(any_port(), data.path()).await;
        let mut config = bridge_config(&chat, modbot.addr);
        config.bridge.throttle_base_ms = throttle_base_ms;
        let bridge = Bridge::start(config);
        let mut ids = Vec::new();
        for target in targets {
            ids.push(
                execute(
                    &modbot,
                    moderator_action(Dialect::Dgg, ActionKind::Unmute, target),
                )
                .await
                .id,
            );
        }
        for id in &ids {
            let action = settled(&modbot, id).await;
            assert_eq!(action.status, ActionStatus::Executed as i32, "{action:?}");
        }
        let commands: Vec<_> = chat
            .commands()
            .into_iter()
            .filter(|c| c.nick == "modbot")
            .collect();
        let throttled = commands
            .iter()
            .filter(|c| c.error.as_deref() == Some("throttled"))
            .count();
        assert_eq!(throttled > 0, expect_throttled, "{commands:?}");
        let moderations = chat.moderations();
        for target in targets {
            assert_eq!(
                moderations.iter().filter(|m| m.target == target).count(),
                1,
                "{moderations:?}"
            );
        }
        bridge.stop().await;
        modbot.stop().await;
    }
}

/// A production-shaped server: TLS with its own CA, and bearer tokens. The bridge trusts the
/// CA from `bridge.server_ca_file`, presents its `bridge` token (bound to its id and channel),
/// and carries a moderator's
/// action out; with a token the server does not know it never gets a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_reaches_a_tls_server_with_its_token() {
    const SERVICE: &str = "bridge-service-token-0123456789";
    const MODERATOR: &str = "mod-tools-token-0123456789";
    let pki = common::Pki::generate();
    let chat = chat(Dialect::Dgg).await;
    let server = common::TestServer::start_tls(
        |config| {
            pki.serve_tls(config, false);
            config.auth.tokens = format!(
                "bridge bridge {SERVICE} bridge_ids=bridge-destinygg channels=destinygg; \
                 moderator mods {MODERATOR}"
            );
        },
        pki.client(),
    )
    .await;
    let mut config = bridge_config(&chat, server.addr);
    config.bridge.server_url = format!("https://localhost:{}", server.addr.port());
    config.bridge.server_ca_file = pki.path("ca.pem");
    config.bridge.server_token = SERVICE.into();
    let bridge = Bridge::start(config);
    let mut actions =
        ActionsClient::with_interceptor(server.channel.clone(), common::bearer(MODERATOR));
    let action = actions
        .execute_action(moderator_action(Dialect::Dgg, ActionKind::Timeout, "Bob"))
        .await
        .expect("ExecuteAction with the moderator's token")
        .into_inner()
        .action
        .expect("an action");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = actions
            .get_action(proto::GetActionRequest {
                id: action.id.clone(),
            })
            .await
            .expect("GetAction")
            .into_inner();
        if got.status == ActionStatus::Executed as i32 {
            assert_eq!(got.bridge_id, "bridge-destinygg");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never executed over TLS: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(mutes_of(&chat.moderations(), "Bob").len(), 1);
    bridge.stop().await;

    // A token the server does not know: no stream, so a new action is never carried out.
    let mut config = bridge_config(&chat, server.addr);
    config.bridge.server_url = format!("https://localhost:{}", server.addr.port());
    config.bridge.server_ca_file = pki.path("ca.pem");
    config.bridge.server_token = "not-a-known-token-0123456789".into();
    let bridge = Bridge::start(config);
    let refused = actions
        .execute_action(moderator_action(
            Dialect::Dgg,
            ActionKind::Timeout,
            "Spammer",
        ))
        .await
        .expect("ExecuteAction")
        .into_inner()
        .action
        .expect("an action");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = actions
        .get_action(proto::GetActionRequest { id: refused.id })
        .await
        .expect("GetAction")
        .into_inner();
    assert_eq!(got.status, ActionStatus::Pending as i32, "{got:?}");
    assert!(mutes_of(&chat.moderations(), "Spammer").is_empty());
    bridge.stop().await;
    server.stop().await.expect("a clean stop");
}

/// The chat servers send frames far larger than the 6,144 bytes they accept from clients: a
/// busy chat's NAMES (here 100 KB and 2 MB, past the old 1 MiB read limit that ended the
/// connection, again on every reconnect) is read and passed on, with no reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_chats_names_is_read() {
    let dialect = Dialect::Dgg;
    let chat = chat(dialect).await;
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start(any_port(), data.path()).await;
    let bridge = Bridge::start(bridge_config(&chat, modbot.addr));
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Timeout, "Bob"),
    )
    .await;
    let accepted = chat.accepted_connections();
    for users in [2_000, 40_000] {
        let mut list: Vec<serde_json::Value> = (0..users)
            .map(|i| serde_json::json!({"nick": format!("viewer{i:06}"), "features": ["subscriber", "flair3"]}))
            .collect();
        list.push(serde_json::json!({"nick": "modbot", "features": ["bot", "moderator"]}));
        let names = format!(
            "NAMES {}",
            serde_json::json!({"users": list, "connectioncount": users + 1})
        );
        assert!(names.len() > 6_144);
        if users == 40_000 {
            assert!(names.len() > 1 << 20, "{} bytes", names.len());
        }
        chat.inject(Message::Text(names.into()));
    }
    // Frames are handled in order: once this is carried out, both NAMES were read.
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Unmute, "Bob"),
    )
    .await;
    assert_eq!(
        chat.accepted_connections(),
        accepted,
        "a large frame does not end the connection"
    );
    let report = bridge.stop().await;
    // The first NAMES, then the two injected ones (at least).
    assert!(report.events >= 3, "{report:?}");
    modbot.stop().await;
}

/// A Strims MSG carries its entities: a short text can be a 64 KB frame, and the old 6,144-byte
/// read limit skipped it, so a spammer could pad a message past moderation. Now it is
/// moderated; and a text longer than `grpc.max_text_bytes` reaches modbot cut (its verdict
/// says so), rather than being refused unmoderated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_strims_message_with_entities_is_moderated() {
    let dialect = Dialect::Strims;
    let chat = chat(dialect).await;
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start(any_port(), data.path()).await;
    let bridge = Bridge::start(bridge_config(&chat, modbot.addr));
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Unmute, "Shield"),
    )
    .await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // A scam with 64 KB of entities (emote and link spans, as Strims sends them).
    let text = "claim your reward: free nitro for everyone who clicks";
    let entities: Vec<serde_json::Value> = (0..1_200)
        .map(|i| serde_json::json!({"name": "PEPE", "modifiers": ["wide", "spin"], "bounds": [i, i + 4]}))
        .collect();
    let padded = format!(
        "MSG {}",
        serde_json::json!({
            "nick": "Spammer", "features": [], "timestamp": now_ms, "data": text,
            "entities": {"emotes": entities, "links": [], "codes": []},
        })
    );
    assert!(padded.len() >= 64 * 1024, "{} bytes", padded.len());
    chat.inject(Message::Text(padded.into()));
    // A 60 KB text that starts with a scam: cut to 4,096 bytes, still moderated.
    let long_text = format!(
        "crypto giveaway: double your bitcoin today {}",
        "and the rest of the text goes on ".repeat(1_900)
    );
    assert!(long_text.len() > 60_000);
    let long = format!(
        "MSG {}",
        serde_json::json!({
            "nick": "Bob", "features": ["subscriber"], "timestamp": now_ms + 1, "data": long_text,
            "entities": {},
        })
    );
    chat.inject(Message::Text(long.into()));
    // Both reached modbot and were acted on (a first offence is a warning, `warn_first`, which
    // hides a scam: the rule is harmful).
    for target in ["Spammer", "Bob"] {
        let action = wait_for_action(&modbot, dialect, target, |a| {
            a.source == ActionSource::Automod as i32
        })
        .await;
        assert_eq!(
            action.kind,
            ActionKind::Hide as i32,
            "{target}: the scam rule fired, softened to a warning that hides: {action:?}"
        );
    }
    bridge.stop().await;
    modbot.stop().await;
}

/// The fault: the network between bridge and modbot silently stops carrying anything (a
/// blackhole: neither side's socket is closed). Actions recorded during the blackhole, and
/// right after it heals, are each carried out exactly once within the stated bound after the
/// heal: both sides' HTTP/2 keepalive (here 300 ms + 300 ms) notices the dead connection, the
/// server's session ends and gives back what it never wrote, the bridge reconnects (backoff
/// at most 400 ms) and is sent what waits and, again, what its dead session was sent (its
/// executor remembers what it did, so nothing is done twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_connection_loses_no_action_and_acts_once() {
    /// What the test promises: every action executed within this long after the heal.
    const BOUND: Duration = Duration::from_secs(10);
    let dialect = Dialect::Dgg;
    let chat = chat(dialect).await;
    let targets: Vec<String> = (0..8).map(|i| format!("Viewer{i}")).collect();
    for (i, nick) in targets.iter().enumerate() {
        chat.add_user(&format!("viewer-token-{i}"), nick, &[]);
    }
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start_with(any_port(), data.path(), |config| {
        config.grpc.keepalive_interval_ms = 300;
        config.grpc.keepalive_timeout_ms = 300;
        config.actions.poll_interval_ms = 50;
        config.actions.resend_interval_ms = 500;
    })
    .await;
    let proxy = common::proxy::TcpProxy::start(modbot.addr).await;
    let mut config = bridge_config(&chat, proxy.addr());
    config.bridge.keepalive_interval_ms = 300;
    config.bridge.keepalive_timeout_ms = 300;
    let bridge = Bridge::start(config);
    carried_out(
        &modbot,
        moderator_action(dialect, ActionKind::Timeout, "Bob"),
    )
    .await;

    proxy.sever();
    let mut ids = Vec::new();
    for target in &targets[..4] {
        ids.push(
            execute(
                &modbot,
                moderator_action(dialect, ActionKind::Timeout, target),
            )
            .await
            .id,
        );
    }
    // Longer than both keepalives: each side has given up on the connection.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.heal();
    let healed = Instant::now();
    for target in &targets[4..] {
        ids.push(
            execute(
                &modbot,
                moderator_action(dialect, ActionKind::Timeout, target),
            )
            .await
            .id,
        );
    }
    for id in &ids {
        let action = settled(&modbot, id).await;
        assert_eq!(action.status, ActionStatus::Executed as i32, "{action:?}");
    }
    let took = healed.elapsed();
    assert!(took < BOUND, "all carried out {took:?} after the heal");
    eprintln!(
        "blackhole: {} actions executed {took:?} after the heal",
        ids.len()
    );
    // Give a duplicate time to show.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let moderations = chat.moderations();
    for target in &targets {
        assert_eq!(
            mutes_of(&moderations, target).len(),
            1,
            "{target}: {moderations:?}"
        );
    }
    assert!(proxy.dropped_bytes() > 0, "the blackhole swallowed traffic");
    bridge.stop().await;
    modbot.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The console in a real browser: Debian's Chromium through chromedriver, driving the page a
// moderator uses against a real server, bridge and chat.

/// The moderator's day in the console, in a real browser, against a real server, bridge and
/// destiny.gg test chat: sign in; the live feed shows a chat line; a held message is rejected
/// with a timeout and the MUTE reaches the chat; an appeal is overturned and the reversal shows
/// in the actions log; a nuke is previewed, confirmed and undone with aegis; a moderator cannot
/// save a rule, an admin can and it then matches; the feed under 1,000 messages/s; sign out.
/// Every control has a label, and the review queue works from the keyboard alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_moderates_a_test_chat_in_a_real_browser() {
    use serde_json::json;

    const ADMIN: &str = "console-admin-token-51c2";
    const MODERATOR: &str = "console-mod-token-a93f";
    const BRIDGE: &str = "console-bridge-token-7d0e";
    let Some(browser) = browser::Browser::start("the_console_moderates_a_test_chat").await else {
        return;
    };
    let dialect = Dialect::Dgg;
    let chat = chat(dialect).await;
    chat.add_user("eve-login-token", "Eve", &[]);
    let data = tempfile::tempdir().expect("a temporary directory");
    let modbot = Modbot::start_with(any_port(), data.path(), |config| {
        config.auth.tokens = format!(
            "admin ops {ADMIN}; moderator Mod {MODERATOR}; \
             bridge dgg-bridge {BRIDGE} bridge_ids=bridge-destinygg channels=destinygg"
        );
    })
    .await;
    let api = common::http::Http::new(modbot.http_addr).with_bearer(ADMIN);
    let hold = api
        .post(
            "/admin/rules",
            &json!({ "rule": { "id": "held-pitch", "channel": "destinygg", "action": "DECISION_HOLD",
                "mode": "RULE_MODE_ENFORCE", "description": "Self-promotion, for a moderator to judge",
                "phrase": { "phrases": ["check out my stream"], "syntax": "PHRASE_SYNTAX_LITERAL" } } }),
        )
        .await;
    assert_eq!(hold.status, 200, "{}", hold.text);
    let mut config = bridge_config(&chat, modbot.addr);
    config.bridge.server_token = BRIDGE.into();
    let bridge = Bridge::joined(&chat, config).await;
    let mut bob = chat.client(Some(USER_TOKEN)).await;
    let mut spammer = chat.client(Some(SPAMMER_TOKEN)).await;
    let mut eve = chat.client(Some("eve-login-token")).await;
    let base = format!("http://{}", modbot.http_addr);

    // Sign in as the moderator.
    let started = Instant::now();
    browser
        .client
        .goto(&format!("{base}/"))
        .await
        .expect("the console loads");
    browser.find("#token").await;
    let load = started.elapsed();
    let unlabelled = browser.unlabelled().await;
    assert_eq!(unlabelled, json!([]), "every control has a label");
    browser.type_into("#token", "not-the-token-at-all").await;
    browser.click("#sign-in").await;
    browser.wait_text("#login-error", "not valid").await;
    browser.shot("01-login").await;
    browser.type_into("#token", MODERATOR).await;
    browser.click("#sign-in").await;
    browser.wait_text("#who", "Mod (moderator)").await;

    // The live feed: a chat line appears with its verdict.
    browser.find("#feed-rows").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        bob.say("what a play by the streamer").await;
        if browser
            .eval("return document.getElementById('feed-rows').textContent;")
            .await
            .as_str()
            .is_some_and(|t| t.contains("what a play by the streamer"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the chat line never reached the feed"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    browser.wait_text("#feed-rows", "allow").await;
    assert_eq!(
        browser.unlabelled().await,
        json!([]),
        "feed controls are labelled"
    );
    browser.shot("02-feed").await;

    // The review queue, from the keyboard: the held pitch is rejected with a 5-minute timeout.
    say_all(&mut spammer, &["check out my stream, giveaways every hour"]).await;
    browser.press("2").await;
    browser
        .wait_text("#review-text", "check out my stream")
        .await;
    browser.wait_text("#review-detail", "held-pitch").await;
    assert_eq!(
        browser.unlabelled().await,
        json!([]),
        "review controls are labelled"
    );
    browser
        .find("#review-action")
        .await
        .select_by_value("ACTION_KIND_TIMEOUT")
        .await
        .expect("a timeout");
    browser.type_into("#review-duration", "300s").await;
    browser
        .find("#review-label")
        .await
        .select_by_value("spam")
        .await
        .expect("a label");
    browser.shot("03-review").await;
    // Focus leaves the inputs; then `r` rejects with what was chosen.
    browser
        .eval("document.activeElement.blur(); return null;")
        .await;
    browser.press("r").await;
    browser.wait_text("#status", "Rejected").await;
    chat.wait_for_moderations(Duration::from_secs(15), |m| {
        mutes_of(m, "Spammer")
            .iter()
            .any(|m| m.duration_ns == Some(300_000_000_000))
    })
    .await;

    // The spammer appeals (through the site's backend); the moderator overturns it.
    let actions = api
        .post(
            "/modbot.v1.Actions/ListActions",
            &json!({ "channel": "destinygg", "targetUserId": "Spammer", "kind": "ACTION_KIND_TIMEOUT" }),
        )
        .await;
    let timeout_id = actions.json["actions"][0]["id"]
        .as_str()
        .expect("the timeout")
        .to_owned();
    let appeal = api
        .post(
            "/appeals",
            &json!({ "actionId": timeout_id, "userId": "Spammer", "text": "it was a joke, sorry" }),
        )
        .await;
    assert_eq!(appeal.status, 200, "{}", appeal.text);
    browser.press("3").await;
    browser.wait_text("#appeal-text", "it was a joke").await;
    browser.wait_text("#appeal-detail", "timeout").await;
    browser.shot("04-appeal").await;
    browser.click("#appeal-overturn").await;
    browser.wait_text("#status", "overturned").await;
    chat.wait_for_moderations(Duration::from_secs(15), |m| {
        m.iter()
            .any(|m| m.target == "Spammer" && m.event == "UNMUTE")
    })
    .await;
    // The reversal in the actions log.
    browser.press("4").await;
    browser.wait_text("#actions-rows", "unmute").await;
    browser.wait_text("#actions-rows", "appeal").await;
    browser.shot("05-actions").await;

    // Nuke: preview who would be muted, confirm, then aegis.
    say_all(&mut bob, &["the nuke phrase is bananas"]).await;
    say_all(&mut eve, &["bananas for everyone"]).await;
    browser.press("6").await;
    browser.type_into("#nuke-channel", "destinygg").await;
    browser.type_into("#nuke-pattern", "bananas").await;
    browser.click("#nuke-preview").await;
    let preview = browser.wait_text("#nuke-preview-count", "2 user(s)").await;
    assert!(preview.contains("would be muted"), "{preview}");
    assert!(
        chat.moderations().iter().all(|m| m.target != "Eve"),
        "a preview does nothing"
    );
    browser.shot("06-nuke-preview").await;
    browser.click("#nuke-confirm").await;
    browser.wait_text("#nuke-done", "2 user(s) muted").await;
    chat.wait_for_moderations(Duration::from_secs(15), |m| {
        m.iter().any(|m| m.target == "Eve" && m.event == "MUTE")
    })
    .await;
    browser.click("#nuke-aegis").await;
    browser.wait_text("#aegis-done", "2 user(s) unmuted").await;
    chat.wait_for_moderations(Duration::from_secs(15), |m| {
        m.iter().any(|m| m.target == "Eve" && m.event == "UNMUTE")
    })
    .await;

    // A moderator reads rules but cannot save one.
    browser.press("7").await;
    browser.type_into("#rules-channel", "destinygg").await;
    browser.click("#rules-refresh").await;
    browser.wait_text("#rules-rows", "held-pitch").await;
    let save = browser.find("#rule-save").await;
    assert!(
        !save.is_enabled().await.expect("a state"),
        "a moderator's save is disabled"
    );

    // The feed under 1,000 messages/s for 3 s (through Classify on its own channel).
    browser.press("1").await;
    browser.find("#feed-rows").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let classifier = common::http::Http::new(modbot.http_addr).with_bearer(ADMIN);
    let load_started = Instant::now();
    let sent = feed_load(&classifier, 1_000, Duration::from_secs(3)).await;
    let load_secs = load_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let stats = browser.eval("return window.modbotFeedStats;").await;
    let received = stats["received"].as_u64().unwrap_or(0) + stats["skipped"].as_u64().unwrap_or(0);
    eprintln!(
        "console: page load {:.0} ms; feed load: sent {sent} in {load_secs:.2} s ({:.0}/s), {stats}",
        load.as_secs_f64() * 1e3,
        sent as f64 / load_secs
    );
    assert!(
        received >= sent,
        "every decision reached the page or was counted skipped: {stats}"
    );
    let rows = browser
        .eval("return document.getElementById('feed-rows').childElementCount;")
        .await;
    assert!(
        rows.as_u64().is_some_and(|n| n <= 200),
        "rendering is bounded: {rows}"
    );
    browser.shot("07-feed-load").await;

    // Bob mentions a kiwi in chat (allowed: no rule is about kiwis yet) and a moderator can
    // backtest, the JSON way first: the message is in the channel's history once decided.
    bob.say("i had a kiwi for lunch").await;
    let kiwis = json!({ "rule": { "id": "no-kiwis", "channel": "destinygg", "action": "DECISION_HIDE",
        "mode": "RULE_MODE_ENFORCE", "phrase": { "phrases": ["kiwi"], "syntax": "PHRASE_SYNTAX_LITERAL" } },
        "channel": "destinygg" });
    let moderator_api = common::http::Http::new(modbot.http_addr).with_bearer(MODERATOR);
    common::eventually("Bob's kiwi is in the channel's history", || async {
        let tried = moderator_api
            .post("/modbot.v1.Admin/BacktestRule", &kiwis)
            .await;
        assert_eq!(tried.status, 200, "{}", tried.text);
        tried.json["matched"] == 1
    })
    .await;
    let caps = moderator_api
        .post(
            "/modbot.v1.Admin/BacktestRule",
            &json!({ "rule": { "channel": "destinygg", "action": "DECISION_HIDE", "mode": "RULE_MODE_SHADOW",
                "caps": { "maxRatio": 0.5 } }, "channel": "destinygg" }),
        )
        .await;
    assert_eq!(caps.status, 400, "{}", caps.text);
    assert_eq!(caps.json["code"], "failed_precondition", "{}", caps.text);
    assert!(
        caps.json["message"]
            .as_str()
            .is_some_and(|m| m.contains("capital letters")),
        "says why: {}",
        caps.text
    );

    // Sign out; the admin signs in, backtests and saves a rule, and chat matches it.
    browser.click("#logout").await;
    browser.wait_text("#login-error", "Signed out").await;
    browser.type_into("#token", ADMIN).await;
    browser.click("#sign-in").await;
    browser.wait_text("#who", "ops (admin)").await;
    browser.press("7").await;
    browser.type_into("#rules-channel", "destinygg").await;
    browser.click("#rules-refresh").await;
    browser.wait_text("#rules-rows", "held-pitch").await;
    browser.click("#rule-new").await;
    let editor = browser.find("#rule-json").await;
    editor.clear().await.expect("cleared");
    editor
        .send_keys(r#"{"id": "no-kiwis", "channel": "destinygg", "action": "DECISION_HIDE", "mode": "RULE_MODE_ENFORCE", "phrase": {"phrases": []}}"#)
        .await
        .expect("typed");
    browser.click("#rule-save").await;
    browser.wait_text("#rule-error", "phrase").await;
    browser.shot("08-rule-error").await;
    editor.clear().await.expect("cleared");
    editor
        .send_keys(r#"{"id": "no-kiwis", "channel": "destinygg", "description": "kiwis are off topic", "action": "DECISION_HIDE", "mode": "RULE_MODE_ENFORCE", "phrase": {"phrases": ["kiwi"], "syntax": "PHRASE_SYNTAX_LITERAL"}}"#)
        .await
        .expect("typed");
    browser.click("#rule-backtest").await;
    browser
        .wait_text(
            "#backtest-summary",
            "would have matched 1, of which 1 were allowed before",
        )
        .await;
    browser
        .wait_text("#backtest-matches", "i had a kiwi for lunch")
        .await;
    browser.shot("09-backtest").await;
    browser.click("#rule-save").await;
    browser.wait_text("#status", "Saved rule no-kiwis").await;
    browser.wait_text("#rules-rows", "no-kiwis").await;
    browser.shot("10-rules").await;
    let matched = api
        .post("/webhooks/chat-message", &json!({ "channel": "destinygg", "messageId": "k1", "userId": "Bob", "text": "i love kiwi" }))
        .await;
    assert_eq!(
        matched.json["decision"], "DECISION_HIDE",
        "{}",
        matched.text
    );

    // The admin publishes the channel's moderation log in the policy editor; anyone reads it.
    let private = common::http::Http::new(modbot.http_addr)
        .get("/public/destinygg")
        .await;
    assert_eq!(private.status, 404, "private until the policy says so");
    browser.click("#policy-load").await;
    browser.wait_text("#policy-status", "Revision").await;
    let edited = browser
        .eval(
            "const e = document.getElementById('policy-json'); const p = JSON.parse(e.value); \
             if (p.channel !== 'destinygg') return p.channel; \
             p.transparency = { ...(p.transparency || {}), public: true }; \
             e.value = JSON.stringify(p, null, 2); return 'ok';",
        )
        .await;
    assert_eq!(edited, json!("ok"), "the editor holds destinygg's policy");
    browser.click("#policy-save").await;
    browser
        .wait_text("#status", "Saved the policy of destinygg")
        .await;
    let public = common::http::Http::new(modbot.http_addr)
        .get("/public/destinygg")
        .await;
    assert_eq!(public.status, 200, "{}", public.text);
    assert!(public.text.contains("Moderation log: destinygg"));
    assert!(
        public.text.contains("kiwis are off topic"),
        "the rule's description is the reason: {}",
        public.text
    );
    // The stats view draws decisions over time from its successive polls.
    browser.press("8").await;
    browser.find("#stats-body").await;
    browser.click("#stats-refresh").await;
    browser.find("#stats-series").await;
    browser.shot("11-stats").await;
    browser
        .client
        .goto(&format!("{base}/public/destinygg"))
        .await
        .expect("the public log opens");
    browser.wait_text("h1", "Moderation log: destinygg").await;
    browser.shot("12-public-log").await;
    browser
        .client
        .goto(&format!("{base}/"))
        .await
        .expect("back to the console");
    browser.find("#logout").await;

    browser.click("#logout").await;
    browser.wait_text("#login-error", "Signed out").await;
    let after = browser
        .eval("return fetch('/console/session').then(r => r.status);")
        .await;
    assert_eq!(after, json!(401), "the session is gone");
    browser
        .client
        .clone()
        .close()
        .await
        .expect("the session closes");
    bridge.stop().await;
    modbot.stop().await;
}

/// Classifies `per_second` messages a second for `length` on the channel `load`: a batch every
/// twentieth of a second, each its own call so a slow answer does not hold the next batch back
/// (at most 16 in flight); returns how many were decided.
async fn feed_load(http: &common::http::Http, per_second: u64, length: Duration) -> u64 {
    let batches_per_second = 20;
    let per_batch = per_second / batches_per_second;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / batches_per_second));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut calls = tokio::task::JoinSet::new();
    let end = Instant::now() + length;
    let mut batch = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let permit = std::sync::Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("open");
        let messages: Vec<_> = (0..per_batch)
            .map(|i| {
                serde_json::json!({ "channel": "load", "messageId": format!("l{batch}-{i}"),
                    "userId": format!("viewer{}", i % 40), "text": format!("chat line {batch} {i} pog") })
            })
            .collect();
        let http = http.clone();
        calls.spawn(async move {
            let reply = http
                .post(
                    "/modbot.v1.Moderation/Classify",
                    &serde_json::json!({ "messages": messages }),
                )
                .await;
            drop(permit);
            assert_eq!(reply.status, 200, "{}", reply.text);
        });
        batch += 1;
    }
    while let Some(call) = calls.join_next().await {
        call.expect("a batch");
    }
    batch * per_batch
}
