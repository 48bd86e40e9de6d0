//! Actions, appeals, nukes and users end to end through the generated clients, on SQLite and
//! PostgreSQL: idempotency (also concurrent and across a restart), stable paging, delivery to
//! a bridge's stream and its results, expiry, resending to a reconnecting bridge, automatic
//! actions of verdicts, appeals with their reversal and feedback, nukes and aegis, and the
//! review queue of held messages (`workflows/review.rs`).

use crate::common;
#[path = "workflows/review.rs"]
mod review;

use std::time::{Duration, Instant};

use common::{PgSchema, TestServer, assert_invalid_field, bridge, chat_message};
use modbot::proto::{
    self, ActionKind, ActionSource, ActionStatus, AppealResolution, ExecuteActionRequest,
    StreamModerateRequest, StreamModerateResponse, actions_client::ActionsClient,
    admin_client::AdminClient, appeals_client::AppealsClient, stream_moderate_request,
    stream_moderate_response,
};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

struct Clients {
    actions: ActionsClient<Channel>,
    appeals: AppealsClient<Channel>,
    admin: AdminClient<Channel>,
}

fn clients(server: &TestServer) -> Clients {
    Clients {
        actions: server.actions(),
        appeals: server.appeals(),
        admin: server.admin(),
    }
}

fn secs(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

fn timeout(target: &str, key: &str) -> ExecuteActionRequest {
    ExecuteActionRequest {
        channel: "destinygg".into(),
        target_user_id: target.into(),
        kind: ActionKind::Timeout as i32,
        duration: secs(60),
        reason: "being rude".into(),
        source: ActionSource::Moderator as i32,
        moderator: "mod".into(),
        idempotency_key: key.into(),
        ..ExecuteActionRequest::default()
    }
}

async fn execute(clients: &mut Clients, request: ExecuteActionRequest) -> proto::Action {
    clients
        .actions
        .execute_action(request)
        .await
        .expect("ExecuteAction")
        .into_inner()
        .action
        .expect("an action")
}

async fn list(clients: &mut Clients, request: proto::ListActionsRequest) -> Vec<proto::Action> {
    clients
        .actions
        .list_actions(request)
        .await
        .expect("ListActions")
        .into_inner()
        .actions
}

async fn get(clients: &mut Clients, id: &str) -> proto::Action {
    clients
        .actions
        .get_action(proto::GetActionRequest { id: id.into() })
        .await
        .expect("GetAction")
        .into_inner()
}

/// Polls `GetAction` (nothing to await across the database) until `done`, for at most 10 s.
async fn wait_for(
    clients: &mut Clients,
    id: &str,
    done: impl Fn(&proto::Action) -> bool,
) -> proto::Action {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let action = get(clients, id).await;
        if done(&action) {
            return action;
        }
        assert!(Instant::now() < deadline, "timed out waiting on {action:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next action command on a bridge's stream (verdicts in between are skipped).
async fn next_command(responses: &mut Streaming<StreamModerateResponse>) -> proto::ActionCommand {
    loop {
        let response = tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("a command within 10 s")
            .expect("a healthy stream")
            .expect("a response");
        if let Some(stream_moderate_response::Kind::Command(command)) = response.kind {
            return command;
        }
    }
}

fn result(action_id: &str, ok: bool, error_code: &str) -> StreamModerateRequest {
    StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::ActionResult(
            proto::ActionResult {
                action_id: action_id.into(),
                ok,
                error_code: error_code.into(),
                detail: String::new(),
            },
        )),
    }
}

/// The server's answer to an action result.
#[derive(Debug, PartialEq)]
enum Answer {
    /// Recorded: `ActionResultAck`.
    Ack(String),
    /// Refused in-band.
    Refused(proto::StreamError),
}

/// The next answer to an action result on a bridge's stream (commands and verdicts skipped).
async fn next_answer(responses: &mut Streaming<StreamModerateResponse>) -> Answer {
    loop {
        let response = tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("an answer within 10 s")
            .expect("a healthy stream")
            .expect("a response");
        match response.kind {
            Some(stream_moderate_response::Kind::ResultAck(ack)) => {
                return Answer::Ack(ack.action_id);
            }
            Some(stream_moderate_response::Kind::Error(error)) => return Answer::Refused(error),
            _ => {}
        }
    }
}

/// The suite both backends run: everything that depends on the database's semantics.
async fn suite(server: &TestServer) {
    let mut c = clients(server);

    // Bad input writes nothing.
    let status = c
        .actions
        .execute_action(ExecuteActionRequest {
            kind: 0,
            ..timeout("bob", "k0")
        })
        .await
        .unwrap_err();
    assert_invalid_field(&status, "kind: ");
    let listed = c
        .actions
        .list_actions(proto::ListActionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.actions.is_empty(), "{listed:?}");
    // The server's own sources cannot be claimed by a caller.
    for source in [
        ActionSource::Automod,
        ActionSource::Nuke,
        ActionSource::Appeal,
    ] {
        let status = c
            .actions
            .execute_action(ExecuteActionRequest {
                source: source as i32,
                ..timeout("bob", "k-source")
            })
            .await
            .unwrap_err();
        assert_invalid_field(&status, "source: `");
        assert!(
            status.message().contains("server only"),
            "{source:?}: {status:?}"
        );
    }
    // Nor the keys the server gives its own actions.
    for key in ["appeal:a1:reversal", "nuke:n1:bob", "aegis:n1:bob"] {
        let status = c
            .actions
            .execute_action(timeout("bob", key))
            .await
            .unwrap_err();
        assert_invalid_field(&status, "idempotency_key: keys starting with");
    }
    let listed = c
        .actions
        .list_actions(proto::ListActionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.actions.is_empty(), "{listed:?}");

    // A retried call returns the first action; a different request under the key is refused.
    let first = c
        .actions
        .execute_action(timeout("bob", "k1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    let first = first.action.unwrap();
    assert_eq!(first.status, ActionStatus::Pending as i32);
    assert!(first.expires_at.is_some());
    let again = c
        .actions
        .execute_action(timeout("bob", "k1"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.action.unwrap().id, first.id);
    let status = c
        .actions
        .execute_action(timeout("carol", "k1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().starts_with("idempotency_key: "),
        "{}",
        status.message()
    );

    // Concurrent calls with one key make one action.
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut actions = c.actions.clone();
            tokio::spawn(async move {
                actions
                    .execute_action(timeout("dave", "k-concurrent"))
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut fresh = 0;
    for call in calls {
        let response = call.await.unwrap().expect("every concurrent call succeeds");
        fresh += usize::from(!response.replayed);
        ids.push(response.action.unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one action for one key: {ids:?}");
    assert_eq!(fresh, 1, "exactly one call recorded it");

    // Paging is stable under inserts: what is inserted while paging never shifts a page.
    for i in 0..7 {
        execute(&mut c, timeout(&format!("pager{i}"), "")).await;
    }
    let page = |token: String| proto::ListActionsRequest {
        channel: "destinygg".into(),
        source: ActionSource::Moderator as i32,
        page_size: 3,
        page_token: token,
        ..proto::ListActionsRequest::default()
    };
    let before: Vec<String> = list(
        &mut c,
        proto::ListActionsRequest {
            page_size: 500,
            ..page(String::new())
        },
    )
    .await
    .into_iter()
    .map(|a| a.id)
    .collect();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let response = c
            .actions
            .list_actions(page(token))
            .await
            .unwrap()
            .into_inner();
        assert!(response.actions.len() <= 3);
        seen.extend(response.actions.into_iter().map(|a| a.id));
        // Inserted mid-listing: newer than everything listed, so never in a later page.
        execute(&mut c, timeout("latecomer", "")).await;
        token = response.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        seen, before,
        "pages are the listing as it was, in order, once each"
    );
    let status = c
        .actions
        .list_actions(proto::ListActionsRequest {
            channel: "other".into(),
            page_token: "7631".into(),
            ..proto::ListActionsRequest::default()
        })
        .await
        .unwrap_err();
    assert_invalid_field(&status, "page_token: ");
    let filtered = list(
        &mut c,
        proto::ListActionsRequest {
            target_user_id: "bob".into(),
            ..proto::ListActionsRequest::default()
        },
    )
    .await;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].id, first.id);

    // Appeals: one open per action, only by its target; concurrent rulings apply once.
    let appeal = c
        .appeals
        .file_appeal(proto::FileAppealRequest {
            action_id: first.id.clone(),
            user_id: "bob".into(),
            text: "I was joking".into(),
        })
        .await
        .expect("FileAppeal")
        .into_inner();
    assert_eq!(appeal.status, proto::AppealStatus::Open as i32);
    for (request, code, start) in [
        (
            proto::FileAppealRequest {
                action_id: first.id.clone(),
                user_id: "bob".into(),
                text: "again".into(),
            },
            Code::AlreadyExists,
            "action ",
        ),
        (
            proto::FileAppealRequest {
                action_id: first.id.clone(),
                user_id: "mallory".into(),
                text: String::new(),
            },
            Code::InvalidArgument,
            "user_id: ",
        ),
        (
            proto::FileAppealRequest {
                action_id: "no-such-action".into(),
                user_id: "bob".into(),
                text: String::new(),
            },
            Code::NotFound,
            "no action",
        ),
        (
            proto::FileAppealRequest {
                action_id: first.id.clone(),
                user_id: "bob".into(),
                text: "x".repeat(2001),
            },
            Code::InvalidArgument,
            "text: ",
        ),
    ] {
        let status = c.appeals.file_appeal(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(start), "{}", status.message());
    }
    let rulings: Vec<_> = (0..8)
        .map(|i| {
            let mut appeals = c.appeals.clone();
            let id = appeal.id.clone();
            tokio::spawn(async move {
                appeals
                    .resolve_appeal(proto::ResolveAppealRequest {
                        id,
                        resolution: AppealResolution::Overturn as i32,
                        moderator: format!("mod{i}"),
                        note: "fair enough".into(),
                    })
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut wins = Vec::new();
    for ruling in rulings {
        match ruling.await.unwrap() {
            Ok(response) => wins.push(response),
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one ruling applies");
    let won = wins.pop().unwrap();
    let resolved = won.appeal.unwrap();
    assert_eq!(resolved.status, proto::AppealStatus::Overturned as i32);
    let reversal = won.reversal.expect("a timeout is reversed by an unmute");
    assert_eq!(reversal.kind, ActionKind::Unmute as i32);
    assert_eq!(reversal.source, ActionSource::Appeal as i32);
    assert_eq!(reversal.appeal_id, appeal.id);
    assert_eq!(resolved.reversal_action_id, reversal.id);
    let reversals = list(
        &mut c,
        proto::ListActionsRequest {
            source: ActionSource::Appeal as i32,
            ..proto::ListActionsRequest::default()
        },
    )
    .await;
    assert_eq!(
        reversals.len(),
        1,
        "one reversal however many rulings raced"
    );
    let status = c
        .appeals
        .file_appeal(proto::FileAppealRequest {
            action_id: first.id.clone(),
            user_id: "bob".into(),
            text: "and again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "a reversed action");
    let listed = c
        .appeals
        .list_appeals(proto::ListAppealsRequest {
            status: proto::AppealStatus::Overturned as i32,
            ..proto::ListAppealsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.appeals.len(), 1);
    assert_eq!(
        c.appeals
            .get_appeal(proto::GetAppealRequest {
                id: appeal.id.clone()
            })
            .await
            .unwrap()
            .into_inner()
            .moderator,
        resolved.moderator
    );
}

#[tokio::test]
async fn workflows_on_sqlite() {
    let server = TestServer::start(|_| {}).await;
    suite(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn workflows_on_postgres() {
    let Some(schema) = PgSchema::create("workflows_on_postgres").await else {
        return;
    };
    let url = schema.url.clone();
    let server = TestServer::start(move |config| config.database.url = url).await;
    suite(&server).await;
    server.stop().await.unwrap();
    schema.drop().await;
}

#[tokio::test]
async fn an_idempotency_key_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/modbot.db", dir.path().display());
    let start = |url: String| TestServer::start(move |config| config.database.url = url);
    let server = start(url.clone()).await;
    let first = execute(&mut clients(&server), timeout("bob", "restart-key")).await;
    server.stop().await.unwrap();
    let server = start(url).await;
    let again = clients(&server)
        .actions
        .execute_action(timeout("bob", "restart-key"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.action.unwrap().id, first.id);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bridge_carries_actions_out_and_reports_the_chat_answer() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server);
    // Recorded before any bridge is connected: it waits.
    let waiting = execute(&mut c, timeout("bob", "")).await;
    assert_eq!(waiting.status, ActionStatus::Pending as i32);

    let (tx, mut responses) = bridge(&server, "bridge-1").await;
    let command = next_command(&mut responses).await;
    assert_eq!(command.action_id, waiting.id);
    assert_eq!(command.target, "bob");
    assert_eq!(command.kind, ActionKind::Timeout as i32);
    assert_eq!(command.duration, secs(60));
    assert_eq!(get(&mut c, &waiting.id).await.bridge_id, "bridge-1");
    tx.send(result(&waiting.id, true, "")).await.unwrap();
    // Recorded results are acknowledged: the bridge forgets a result only then.
    assert_eq!(
        next_answer(&mut responses).await,
        Answer::Ack(waiting.id.clone())
    );
    let done = wait_for(&mut c, &waiting.id, |a| {
        a.status != ActionStatus::Sent as i32
    })
    .await;
    assert_eq!(done.status, ActionStatus::Executed as i32);

    // Recorded while the bridge is connected: sent at once; a refusal is recorded with its code.
    let refused = execute(
        &mut c,
        ExecuteActionRequest {
            kind: ActionKind::Ban as i32,
            duration: None,
            ..timeout("admin", "")
        },
    )
    .await;
    let command = next_command(&mut responses).await;
    assert_eq!(command.action_id, refused.id);
    assert_eq!(command.duration, None, "a permanent ban");
    tx.send(result(&refused.id, false, "nopermission"))
        .await
        .unwrap();
    assert_eq!(
        next_answer(&mut responses).await,
        Answer::Ack(refused.id.clone())
    );
    let failed = wait_for(&mut c, &refused.id, |a| {
        a.status != ActionStatus::Sent as i32
    })
    .await;
    assert_eq!(failed.status, ActionStatus::Failed as i32);
    assert_eq!(failed.error, "nopermission");

    // Results for unknown actions, for actions not sent to this bridge, or without a code, are
    // answered in-band; a repeated answer changes nothing.
    let unsent = execute(&mut c, timeout("zed", "")).await;
    assert_eq!(next_command(&mut responses).await.action_id, unsent.id);
    let (other_tx, mut other) = bridge(&server, "bridge-2").await;
    other_tx
        .send(result(&unsent.id, false, "nopermission"))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), other.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(stream_moderate_response::Kind::Error(error)) = response.kind else {
        panic!("expected an in-band error, got {response:?}");
    };
    assert!(
        error.message.contains("was not sent to this bridge"),
        "{}",
        error.message
    );
    assert_eq!(
        error.action_id, unsent.id,
        "the refusal names the result's action"
    );
    assert_eq!(error.code, Code::FailedPrecondition as i32);
    assert_eq!(
        get(&mut c, &unsent.id).await.status,
        ActionStatus::Sent as i32
    );
    drop(other_tx);
    tx.send(result(&refused.id, true, "")).await.unwrap();
    tx.send(result("no-such-action", true, "")).await.unwrap();
    tx.send(result(&refused.id, false, "")).await.unwrap();
    // A repeated answer is acknowledged (the first one stands); the others are refused,
    // each naming its action.
    assert_eq!(
        next_answer(&mut responses).await,
        Answer::Ack(refused.id.clone())
    );
    for (expected, id, code) in [
        (
            "action_result.action_id: no action",
            "no-such-action",
            Code::NotFound,
        ),
        (
            "action_result.error_code: ",
            refused.id.as_str(),
            Code::InvalidArgument,
        ),
    ] {
        let Answer::Refused(error) = next_answer(&mut responses).await else {
            panic!("expected an in-band error");
        };
        assert!(error.message.starts_with(expected), "{}", error.message);
        assert_eq!(error.action_id, id);
        assert_eq!(error.code, code as i32);
    }
    assert_eq!(
        get(&mut c, &refused.id).await.status,
        ActionStatus::Failed as i32,
        "the first answer stands"
    );

    // A moderator's warning goes to the chat too: the private message with their reason.
    let warning = execute(
        &mut c,
        ExecuteActionRequest {
            kind: ActionKind::Warn as i32,
            duration: None,
            ..timeout("carol", "")
        },
    )
    .await;
    assert_eq!(warning.status, ActionStatus::Pending as i32);
    let command = next_command(&mut responses).await;
    assert_eq!(command.action_id, warning.id);
    assert_eq!(command.kind, ActionKind::Warn as i32);
    assert!(
        command
            .notice
            .starts_with("carol, this is a warning from the chat's moderation bot: being rude."),
        "{command:?}"
    );
    drop(tx);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unanswered_commands_go_again_to_the_reconnecting_bridge() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server);
    let (tx, mut responses) = bridge(&server, "bridge-r").await;
    let action = execute(&mut c, timeout("bob", "")).await;
    assert_eq!(next_command(&mut responses).await.action_id, action.id);
    drop(tx);
    drop(responses);
    let (tx, mut responses) = bridge(&server, "bridge-r").await;
    assert_eq!(
        next_command(&mut responses).await.action_id,
        action.id,
        "sent again: the bridge never answered it"
    );
    tx.send(result(&action.id, true, "")).await.unwrap();
    wait_for(&mut c, &action.id, |a| {
        a.status == ActionStatus::Executed as i32
    })
    .await;
    // Another bridge id is never sent what was sent to the first.
    drop(tx);
    drop(responses);
    let (_tx, mut other) = bridge(&server, "bridge-other").await;
    let later = execute(&mut c, timeout("carol", "")).await;
    assert_eq!(next_command(&mut other).await.action_id, later.id);
    server.stop().await.unwrap();
}

/// A command lost on the way (a dead connection, a bridge that missed it) is not lost for
/// good: while it stays unanswered it is sent again every `actions.resend_interval_ms`, on the
/// same stream, not only when the bridge reconnects.
#[tokio::test]
async fn unanswered_commands_are_offered_again_periodically() {
    let server = TestServer::start(|config| {
        config.actions.poll_interval_ms = 50;
        config.actions.resend_interval_ms = 200;
    })
    .await;
    let mut c = clients(&server);
    let (tx, mut responses) = bridge(&server, "bridge-p").await;
    let action = execute(&mut c, timeout("bob", "")).await;
    assert_eq!(next_command(&mut responses).await.action_id, action.id);
    let started = Instant::now();
    assert_eq!(
        next_command(&mut responses).await.action_id,
        action.id,
        "offered again on the same stream"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "not before the resend interval: {:?}",
        started.elapsed()
    );
    // Answered: never offered again.
    tx.send(result(&action.id, true, "")).await.unwrap();
    assert_eq!(
        next_answer(&mut responses).await,
        Answer::Ack(action.id.clone())
    );
    let later = execute(&mut c, timeout("carol", "")).await;
    loop {
        let command = next_command(&mut responses).await;
        assert_ne!(
            command.action_id, action.id,
            "an answered action went again"
        );
        if command.action_id == later.id {
            break;
        }
    }
    drop(tx);
    server.stop().await.unwrap();
}

/// A bridge id that registers again evicts its older session: the old stream ends with
/// ABORTED naming the bridge, and the actions recorded from then on go to the new session
/// (the old one, possibly a dead connection, never claims another).
#[tokio::test]
async fn a_bridge_id_that_registers_again_evicts_its_older_session() {
    let server = TestServer::start(|config| config.actions.poll_interval_ms = 50).await;
    let mut c = clients(&server);
    let (_old_tx, mut old) = bridge(&server, "bridge-e").await;
    let (_new_tx, mut new) = bridge(&server, "bridge-e").await;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), old.message())
            .await
            .expect("the old stream ends within 10 s")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the old stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(
        status.message().contains("bridge-e"),
        "{}",
        status.message()
    );
    for target in ["bob", "carol", "dave"] {
        let action = execute(&mut c, timeout(target, "")).await;
        assert_eq!(next_command(&mut new).await.action_id, action.id);
    }
    server.stop().await.unwrap();
}

/// An action sent to a bridge that never answers is not `expired` (which says it never
/// reached the chat) but `unknown`: the chat may have carried it out, so the user can appeal
/// it; a late answer still settles it.
#[tokio::test]
async fn an_action_sent_but_never_answered_becomes_unknown_and_appealable() {
    let server = TestServer::start(|config| {
        config.actions.pending_ttl_secs = 1;
        config.actions.poll_interval_ms = 50;
    })
    .await;
    let mut c = clients(&server);
    let (tx, mut responses) = bridge(&server, "silent-bridge").await;
    let action = execute(&mut c, timeout("bob", "")).await;
    assert_eq!(next_command(&mut responses).await.action_id, action.id);
    let unknown = wait_for(&mut c, &action.id, |a| {
        a.status != ActionStatus::Sent as i32
    })
    .await;
    assert_eq!(unknown.status, ActionStatus::Unknown as i32, "{unknown:?}");
    assert!(unknown.expires_at.is_none(), "it is no longer open");
    let listed = list(
        &mut c,
        proto::ListActionsRequest {
            status: ActionStatus::Unknown as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed.len(), 1);
    c.appeals
        .file_appeal(proto::FileAppealRequest {
            action_id: action.id.clone(),
            user_id: "bob".into(),
            text: "I was muted for nothing".into(),
        })
        .await
        .expect("an unknown action can be appealed");
    // The bridge's late answer still counts.
    tx.send(result(&action.id, true, "")).await.unwrap();
    assert_eq!(
        next_answer(&mut responses).await,
        Answer::Ack(action.id.clone())
    );
    assert_eq!(
        get(&mut c, &action.id).await.status,
        ActionStatus::Executed as i32
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn actions_no_bridge_carries_out_expire() {
    let server = TestServer::start(|config| {
        config.actions.pending_ttl_secs = 1;
        config.actions.poll_interval_ms = 50;
    })
    .await;
    let mut c = clients(&server);
    let action = execute(&mut c, timeout("bob", "")).await;
    let expired = wait_for(&mut c, &action.id, |a| {
        a.status != ActionStatus::Pending as i32
    })
    .await;
    assert_eq!(expired.status, ActionStatus::Expired as i32);
    assert!(
        expired.expires_at.is_none(),
        "only open actions carry an expiry"
    );
    // An expired action is never sent, and cannot be appealed.
    let (_tx, mut responses) = bridge(&server, "late-bridge").await;
    let fresh = execute(&mut c, timeout("carol", "")).await;
    assert_eq!(next_command(&mut responses).await.action_id, fresh.id);
    let status = c
        .appeals
        .file_appeal(proto::FileAppealRequest {
            action_id: action.id.clone(),
            user_id: "bob".into(),
            text: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    server.stop().await.unwrap();
}

/// Gives `channel` a policy of its own: the default one with `classify_actions` set.
async fn set_classify_actions(
    clients: &mut Clients,
    channel: &str,
    classify_actions: proto::ClassifyActions,
) {
    let mut policy = clients
        .admin
        .get_policy(proto::GetPolicyRequest {
            channel: channel.into(),
        })
        .await
        .expect("GetPolicy")
        .into_inner();
    policy.classify_actions = classify_actions as i32;
    let set = clients
        .admin
        .set_policy(proto::SetPolicyRequest {
            policy: Some(policy),
        })
        .await
        .expect("SetPolicy")
        .into_inner();
    assert_eq!(set.classify_actions, classify_actions as i32);
}

#[tokio::test]
async fn classify_verdicts_are_recorded_unless_the_channel_sends_them() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server);
    let (_tx, mut responses) = bridge(&server, "bridge-policy").await;
    let classify = |id: &str, channel: &str| {
        let mut message = chat_message(id, "scammer", "FREE NITRO at scam dot link");
        message.channel = channel.into();
        proto::ClassifyRequest {
            messages: vec![message],
            options: None,
        }
    };
    let decide = |request| {
        let mut moderation = server.moderation();
        async move {
            moderation
                .classify(request)
                .await
                .unwrap()
                .into_inner()
                .verdicts
                .remove(0)
        }
    };
    // The first offence is a warning (recorded whatever the policy); the second a timeout.
    decide(classify("p1", "destinygg")).await;
    let kept = decide(classify("p2", "destinygg")).await;
    let kept = get(&mut c, &kept.action_id).await;
    assert_eq!(kept.kind, ActionKind::Timeout as i32);
    assert_eq!(
        kept.status,
        ActionStatus::Recorded as i32,
        "by default the caller enforces: recorded, never pending (so never expiring either)"
    );
    // It is never offered to the bridge: the next command it gets is a later action's.
    let later = execute(&mut c, timeout("bob", "after-the-verdict")).await;
    assert_eq!(next_command(&mut responses).await.action_id, later.id);
    assert_eq!(
        get(&mut c, &kept.id).await.status,
        ActionStatus::Recorded as i32
    );
    // modbot never sent it, so overturning it sends no reversal to the chat either.
    let appeal = c
        .appeals
        .file_appeal(proto::FileAppealRequest {
            action_id: kept.id.clone(),
            user_id: "scammer".into(),
            text: "not me".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let resolved = c
        .appeals
        .resolve_appeal(proto::ResolveAppealRequest {
            id: appeal.id,
            resolution: AppealResolution::Overturn as i32,
            moderator: "mod".into(),
            note: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resolved.reversal.is_none(), "{resolved:?}");

    // A channel whose policy sends them: pending, and carried to the bridge.
    set_classify_actions(&mut c, "destinygg", proto::ClassifyActions::Send).await;
    let sent = decide(classify("p3", "destinygg")).await;
    assert_eq!(next_command(&mut responses).await.action_id, sent.action_id);
    assert_eq!(
        get(&mut c, &sent.action_id).await.status,
        ActionStatus::Sent as i32
    );
    server.stop().await.unwrap();
}

/// Two moderator credentials using one idempotency key make two actions; each gets its own
/// back when it retries.
async fn idempotency_keys_are_per_credential(database_url: Option<String>) {
    const ONE: &str = "moderator-one-secret-0123456789";
    const TWO: &str = "moderator-two-secret-0123456789";
    let server = TestServer::start(move |config| {
        config.auth.tokens = format!("moderator tool-one {ONE}; moderator tool-two {TWO}");
        if let Some(url) = database_url {
            config.database.url = url;
        }
    })
    .await;
    let client = |token: &'static str| {
        ActionsClient::with_interceptor(server.channel.clone(), common::bearer(token))
    };
    let (mut one, mut two) = (client(ONE), client(TWO));
    let first = one
        .execute_action(timeout("bob", "shared-key"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    let first = first.action.unwrap();
    assert_eq!(first.requested_by, "tool-one");
    // The same key from another credential: a new action, not the first one handed over.
    let other = two
        .execute_action(timeout("bob", "shared-key"))
        .await
        .unwrap()
        .into_inner();
    assert!(!other.replayed, "{other:?}");
    let other = other.action.unwrap();
    assert_ne!(other.id, first.id);
    assert_eq!(other.requested_by, "tool-two");
    // Each credential's retry returns its own.
    for (client, expected) in [(&mut one, &first), (&mut two, &other)] {
        let again = client
            .execute_action(timeout("bob", "shared-key"))
            .await
            .unwrap()
            .into_inner();
        assert!(again.replayed);
        assert_eq!(again.action.unwrap().id, expected.id);
    }
    // Within one credential a different request under the key is still refused.
    let status = two
        .execute_action(timeout("carol", "shared-key"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn idempotency_keys_are_per_credential_on_sqlite() {
    idempotency_keys_are_per_credential(None).await;
}

#[tokio::test]
async fn idempotency_keys_are_per_credential_on_postgres() {
    let Some(schema) = PgSchema::create("idempotency_keys_are_per_credential").await else {
        return;
    };
    idempotency_keys_are_per_credential(Some(schema.url.clone())).await;
    schema.drop().await;
}

#[tokio::test]
async fn enforced_verdicts_become_actions_once() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server);
    set_classify_actions(&mut c, "destinygg", proto::ClassifyActions::Send).await;
    let (_tx, mut responses) = bridge(&server, "bridge-auto").await;
    let classify = |id: &str| {
        let mut message = chat_message(id, "scammer", "FREE NITRO at scam dot link");
        // Now, so that GetUser's heat (decayed to now) is still warm.
        message.sent_at = Some(std::time::SystemTime::now().into());
        proto::ClassifyRequest {
            messages: vec![message],
            options: None,
        }
    };
    // The scam rule times out; a first offence is softened to a warning, carried out as a hide
    // (the rule is harmful); the second is a timeout. Both go to the chat.
    let mut verdicts = Vec::new();
    for id in ["s1", "s2"] {
        let verdict = server
            .moderation()
            .classify(classify(id))
            .await
            .unwrap()
            .into_inner()
            .verdicts
            .remove(0);
        assert!(!verdict.action_id.is_empty(), "{verdict:?}");
        verdicts.push(verdict);
    }
    let warned = get(&mut c, &verdicts[0].action_id).await;
    assert_eq!(warned.kind, ActionKind::Hide as i32);
    assert_eq!(warned.source, ActionSource::Automod as i32);
    assert_eq!(warned.message_id, "s1");
    let timed_out = get(&mut c, &verdicts[1].action_id).await;
    assert_eq!(timed_out.kind, ActionKind::Timeout as i32);
    // The hide goes to the chat with the private message that tells the user why.
    let warning = next_command(&mut responses).await;
    assert_eq!(warning.action_id, warned.id);
    assert!(
        warning
            .notice
            .starts_with("scammer, your message was hidden: a warning, and the message hidden")
            && warning.notice.contains(&warned.id),
        "{warning:?}"
    );
    assert!(
        !warning.notice.contains("NITRO"),
        "the message is not echoed"
    );
    let command = next_command(&mut responses).await;
    assert_eq!(command.action_id, timed_out.id);
    assert_eq!(
        command.notice, "",
        "told moments ago: the rate limit holds this one back"
    );
    // Deciding the same message again finds its action instead of making another.
    let again = server
        .moderation()
        .classify(classify("s2"))
        .await
        .unwrap()
        .into_inner()
        .verdicts
        .remove(0);
    assert_eq!(again.action_id, timed_out.id);
    let automatic = list(
        &mut c,
        proto::ListActionsRequest {
            source: ActionSource::Automod as i32,
            ..proto::ListActionsRequest::default()
        },
    )
    .await;
    assert_eq!(automatic.len(), 2, "{automatic:?}");
    // A dry run creates nothing.
    let dry = server
        .moderation()
        .classify(proto::ClassifyRequest {
            options: Some(proto::ClassifyOptions {
                dry_run: true,
                ..proto::ClassifyOptions::default()
            }),
            ..classify("s3")
        })
        .await
        .unwrap()
        .into_inner()
        .verdicts
        .remove(0);
    assert!(dry.action_id.is_empty());

    // GetUser shows what is remembered.
    let user = c
        .admin
        .get_user(proto::GetUserRequest {
            channel: "destinygg".into(),
            user_id: "scammer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.messages, 3, "the dry run is not remembered: {user:?}");
    assert_eq!(user.escalation_step, 2);
    // Deciding s2 again counted again in user state (only its action is not repeated).
    assert_eq!(user.offences, 3);
    assert!(user.heat > 0.0);
    assert!(user.reputation < 0.0);
    // The ladder: a warning and two timeouts remembered as strikes, standing on rung 2, where
    // a timeout-worthy offence now would get four minutes.
    assert!((user.strikes - 3.0).abs() < 0.01, "{user:?}");
    assert_eq!(user.ladder_step, 2);
    assert_eq!(user.next_escalation, proto::Decision::Timeout as i32);
    assert_eq!(user.next_timeout, secs(240));
    assert_eq!(user.recent_actions.len(), 2);
    assert_eq!(user.recent_verdicts.len(), 3);
    // The messages themselves, as remembered (normalised), newest first: s2 was decided twice.
    let remembered: Vec<(&str, &str)> = user
        .recent_messages
        .iter()
        .map(|m| (m.message_id.as_str(), m.text.as_str()))
        .collect();
    assert_eq!(
        remembered,
        [
            ("s2", "free nitro at scam dot link"),
            ("s2", "free nitro at scam dot link"),
            ("s1", "free nitro at scam dot link"),
        ],
        "{user:?}"
    );
    assert!(user.recent_messages.iter().all(|m| m.sent_at.is_some()));
    let status = c
        .admin
        .get_user(proto::GetUserRequest {
            channel: "destinygg".into(),
            user_id: "stranger".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_overturned_automatic_action_teaches_a_false_positive() {
    let server = TestServer::start(|_| {}).await;
    let verdict = server
        .moderation()
        .classify(proto::ClassifyRequest {
            messages: vec![chat_message("m1", "eve", "FREE NITRO at scam dot link")],
            options: None,
        })
        .await
        .unwrap()
        .into_inner()
        .verdicts
        .remove(0);
    let mut c = clients(&server);
    let appeal = c
        .appeals
        .file_appeal(proto::FileAppealRequest {
            action_id: verdict.action_id.clone(),
            user_id: "eve".into(),
            text: "it was a joke".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let resolved = c
        .appeals
        .resolve_appeal(proto::ResolveAppealRequest {
            id: appeal.id,
            resolution: AppealResolution::Overturn as i32,
            moderator: "mod".into(),
            note: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        resolved.reversal.is_none(),
        "a warning has nothing to undo in chat"
    );
    let feedback = server.store().await.feedback().await.unwrap();
    assert_eq!(feedback.len(), 1, "{feedback:?}");
    assert!(!feedback[0].positive);
    // A rule's action overturned: the message is a negative of every label, not of one.
    assert_eq!(feedback[0].label, "benign");
    assert_eq!(feedback[0].message_id, "m1");
    assert_eq!(feedback[0].text, "free nitro at scam dot link");
    server.stop().await.unwrap();
}

/// A warning and two timeouts for scams, the second timeout appealed and overturned: its heat,
/// strike, offence and rung come off the ladder, as `GetUser` shows; overturning a moderator's
/// action that never counted on the ladder takes nothing off it.
async fn an_overturn_lowers_the_ladder(server: &TestServer) {
    let mut c = clients(server);
    let scam = |id: &str| {
        let mut message = chat_message(id, "scammer", "FREE NITRO at scam dot link");
        // Now, so that GetUser's heat (decayed to now) is still warm.
        message.sent_at = Some(std::time::SystemTime::now().into());
        proto::ClassifyRequest {
            messages: vec![message],
            options: None,
        }
    };
    let mut verdicts = Vec::new();
    for id in ["l1", "l2", "l3"] {
        let verdict = server
            .moderation()
            .classify(scam(id))
            .await
            .unwrap()
            .into_inner()
            .verdicts
            .remove(0);
        verdicts.push(verdict);
    }
    let decisions: Vec<i32> = verdicts.iter().map(|v| v.decision).collect();
    use proto::Decision::{Hide, Timeout};
    // The first is a warning, carried out as a hide: the scam rule is harmful.
    assert_eq!(decisions, [Hide as i32, Timeout as i32, Timeout as i32]);
    let user = get_user(&mut c, "scammer").await;
    assert_eq!((user.offences, user.escalation_step), (3, 2), "{user:?}");
    assert!((user.strikes - 3.0).abs() < 0.01, "{user:?}");
    assert!((user.heat - 5.0).abs() < 0.01, "1 + 2 + 2: {user:?}");
    assert_eq!(user.next_timeout, secs(240));

    overturn(&mut c, &verdicts[2].action_id, "that link was my own shop").await;

    let user = get_user(&mut c, "scammer").await;
    assert_eq!(user.offences, 2, "one offence fewer: {user:?}");
    assert_eq!(user.escalation_step, 1, "one rung lower: {user:?}");
    assert!(
        (user.strikes - 2.0).abs() < 0.01,
        "one strike fewer: {user:?}"
    );
    assert!(
        (user.heat - 3.0).abs() < 0.01,
        "its heat taken back: {user:?}"
    );
    assert_eq!(user.ladder_step, 1);
    assert_eq!(user.next_timeout, secs(120), "the next timeout is shorter");
    assert_eq!(user.messages, 3, "the message itself is still remembered");

    // A moderator's timeout through the Actions API never counted on the ladder: overturning
    // it takes nothing off (pardoning would take back one of the scams).
    let manual = execute(&mut c, timeout("scammer", "manual-timeout")).await;
    overturn(&mut c, &manual.id, "again?").await;
    let after = get_user(&mut c, "scammer").await;
    assert_eq!(
        (after.offences, after.escalation_step),
        (2, 1),
        "unchanged: {after:?}"
    );
    assert!((after.strikes - user.strikes).abs() < 0.01, "{after:?}");

    // The first scam's warning was carried out as a hide (the rule is harmful): overturning it
    // takes back what it was charged as, a warning (a strike, heat 1), not a hide's half.
    overturn(&mut c, &verdicts[0].action_id, "not a scam").await;
    let last = get_user(&mut c, "scammer").await;
    assert_eq!(last.offences, 1, "{last:?}");
    assert!(
        (last.strikes - 1.0).abs() < 0.01,
        "a whole strike: {last:?}"
    );
    assert!(
        (last.heat - 2.0).abs() < 0.01,
        "the warning's heat: {last:?}"
    );
}

/// Files an appeal of `action_id` by the scammer and overturns it.
async fn overturn(c: &mut Clients, action_id: &str, text: &str) {
    let appeal = c
        .appeals
        .file_appeal(proto::FileAppealRequest {
            action_id: action_id.to_owned(),
            user_id: "scammer".into(),
            text: text.into(),
        })
        .await
        .unwrap()
        .into_inner();
    c.appeals
        .resolve_appeal(proto::ResolveAppealRequest {
            id: appeal.id,
            resolution: AppealResolution::Overturn as i32,
            moderator: "mod".into(),
            note: String::new(),
        })
        .await
        .expect("the ruling stands");
}

async fn get_user(c: &mut Clients, user_id: &str) -> proto::User {
    c.admin
        .get_user(proto::GetUserRequest {
            channel: "destinygg".into(),
            user_id: user_id.into(),
        })
        .await
        .expect("GetUser")
        .into_inner()
}

#[tokio::test]
async fn an_overturn_lowers_the_ladder_in_memory() {
    let server = TestServer::start(|_| {}).await;
    an_overturn_lowers_the_ladder(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_overturn_lowers_the_ladder_in_redis() {
    let Some(redis) = common::RedisPrefix::create("an_overturn_lowers_the_ladder").await else {
        return;
    };
    let server = TestServer::start(|config| {
        config.redis.url = redis.url.clone();
        config.redis.key_prefix = redis.prefix.clone();
    })
    .await;
    an_overturn_lowers_the_ladder(&server).await;
    server.stop().await.unwrap();
    assert!(!redis.keys().await.is_empty(), "the state was Redis's");
    redis.delete_keys().await;
}

/// With Redis down the state is this replica's memory: the ruling stands and the pardon
/// reaches that memory (logged and counted as not reaching Redis).
#[tokio::test]
async fn an_overturn_with_redis_down_still_stands() {
    let server =
        TestServer::start(|config| config.redis.url = "redis://127.0.0.1:1/0".into()).await;
    an_overturn_lowers_the_ladder(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn nuke_mutes_who_said_it_and_aegis_undoes_it() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server);
    let lines = [
        ("n1", "ann", "the ending was a BIG spoiler"),
        ("n2", "ben", "lol"),
        ("n3", "cat", "B1G SPOILER incoming"),
        ("n4", "ann", "big spoiler again"),
        ("n5", "dan", "no spoilers please"),
    ];
    let now = std::time::SystemTime::now();
    let messages = lines
        .iter()
        .map(|(id, user, text)| {
            let mut message = chat_message(id, user, text);
            message.sent_at = Some(now.into());
            message
        })
        .collect();
    server
        .moderation()
        .classify(proto::ClassifyRequest {
            messages,
            options: None,
        })
        .await
        .unwrap();
    let nuke = |pattern: &str, regex: bool, dry_run: bool| proto::NukeRequest {
        channel: "destinygg".into(),
        pattern: pattern.into(),
        regex,
        moderator: "mod".into(),
        dry_run,
        ..proto::NukeRequest::default()
    };
    let dry = c
        .admin
        .nuke(nuke("big spoiler", false, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.targets, ["ann", "cat"]);
    assert!(dry.actions.is_empty() && dry.nuke_id.is_empty());
    assert_eq!(dry.searched_messages, 5);
    for (request, field) in [
        (nuke(".*", true, false), "pattern: "),
        (nuke("(", true, false), "pattern: "),
        (
            proto::NukeRequest {
                window: secs(7200),
                ..nuke("x", false, false)
            },
            "window: ",
        ),
        (
            proto::NukeRequest {
                duration: secs(8 * 86_400),
                ..nuke("x", false, false)
            },
            "duration: ",
        ),
        (
            proto::NukeRequest {
                moderator: String::new(),
                ..nuke("x", false, false)
            },
            "moderator: ",
        ),
    ] {
        let status = c.admin.nuke(request).await.unwrap_err();
        assert_invalid_field(&status, field);
    }
    let done = c
        .admin
        .nuke(nuke("spoil", false, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.targets, ["ann", "cat", "dan"]);
    assert_eq!(done.actions.len(), 3);
    assert!(done.actions.iter().all(|a| a.nuke_id == done.nuke_id
        && a.kind == ActionKind::Timeout as i32
        && a.duration == secs(600)));
    let aegis = c
        .admin
        .aegis(proto::AegisRequest {
            channel: "destinygg".into(),
            nuke_id: String::new(),
            moderator: "mod".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aegis.nuke_id, done.nuke_id, "the channel's latest nuke");
    assert_eq!(aegis.actions.len(), 3);
    assert!(
        aegis
            .actions
            .iter()
            .all(|a| a.kind == ActionKind::Unmute as i32)
    );
    let status = c
        .admin
        .aegis(proto::AegisRequest {
            channel: "destinygg".into(),
            nuke_id: done.nuke_id.clone(),
            moderator: "mod".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = c
        .admin
        .aegis(proto::AegisRequest {
            channel: "destinygg".into(),
            nuke_id: String::new(),
            moderator: "mod".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "nothing left to undo");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn moderators_actions_in_chat_join_the_trail_but_the_bots_own_do_not() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server);
    let (tx, mut responses) = bridge(&server, "bridge-chat").await;
    let action = |moderator: &str, target: &str, at_ms: i64| StreamModerateRequest {
        kind: Some(stream_moderate_request::Kind::Event(proto::ChatEvent {
            channel: "destinygg".into(),
            kind: Some(proto::chat_event::Kind::ModeratorAction(
                proto::ModeratorAction {
                    moderator: moderator.into(),
                    target: target.into(),
                    kind: ActionKind::Timeout as i32,
                    duration: secs(300),
                    at: Some(prost_types::Timestamp {
                        seconds: at_ms / 1000,
                        nanos: 0,
                    }),
                },
            )),
        })),
    };
    tx.send(action("HumanMod", "troll", 1_700_000_000_000))
        .await
        .unwrap();
    // The same broadcast again (a bridge replaying after a reconnect) is recorded once.
    tx.send(action("HumanMod", "troll", 1_700_000_000_000))
        .await
        .unwrap();
    tx.send(action("ModBot", "other", 1_700_000_001_000))
        .await
        .unwrap();
    drop(tx);
    while responses.message().await.expect("a clean end").is_some() {}
    let listed = list(&mut c, proto::ListActionsRequest::default()).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let recorded = &listed[0];
    assert_eq!(recorded.target_user_id, "troll");
    assert_eq!(recorded.moderator, "HumanMod");
    assert_eq!(recorded.source, ActionSource::Moderator as i32);
    assert_eq!(recorded.status, ActionStatus::Executed as i32);
    assert_eq!(recorded.duration, secs(300));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn each_action_reaches_exactly_one_bridge_across_replicas() {
    let Some(schema) = PgSchema::create("each_action_reaches_exactly_one_bridge").await else {
        return;
    };
    let start = |url: String| {
        TestServer::start(move |config| {
            config.database.url = url;
            config.actions.poll_interval_ms = 20;
        })
    };
    let first = start(schema.url.clone()).await;
    let second = start(schema.url.clone()).await;
    // One bridge on each replica, both serving the channel.
    let (_tx1, mut bridge1) = bridge(&first, "bridge-a").await;
    let (_tx2, mut bridge2) = bridge(&second, "bridge-b").await;
    let mut c = clients(&first);
    let mut recorded = Vec::new();
    for i in 0..30 {
        recorded.push(execute(&mut c, timeout(&format!("user{i}"), "")).await.id);
    }
    // Every action is sent once, to one of the bridges; collect until all have arrived.
    let mut delivered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while delivered.len() < recorded.len() {
        assert!(Instant::now() < deadline, "delivered only {delivered:?}");
        tokio::select! {
            Ok(Some(response)) = bridge1.message() => {
                if let Some(stream_moderate_response::Kind::Command(command)) = response.kind {
                    delivered.push(command.action_id);
                }
            }
            Ok(Some(response)) = bridge2.message() => {
                if let Some(stream_moderate_response::Kind::Command(command)) = response.kind {
                    delivered.push(command.action_id);
                }
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Nothing more arrives: no action went to both.
    for responses in [&mut bridge1, &mut bridge2] {
        let more = tokio::time::timeout(Duration::from_millis(300), responses.message()).await;
        assert!(more.is_err(), "an extra response: {more:?}");
    }
    delivered.sort();
    recorded.sort();
    assert_eq!(delivered, recorded);
    first.stop().await.unwrap();
    second.stop().await.unwrap();
    schema.drop().await;
}
