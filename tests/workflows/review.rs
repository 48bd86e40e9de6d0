//! The review queue end to end: a held message waits as an item, a moderator approves or
//! rejects it (the first ruling stands), nobody ruling lets its channel's policy settle it, a
//! backend watching learns the outcome of what it held, and nobody else's.

use std::time::Duration;

use super::common::{TestServer, assert_invalid_field, bearer, chat_message, eventually};
use modbot::proto::{
    self, ActionKind, ActionStatus, Decision, GetPolicyRequest, GetReviewRequest,
    ListReviewsRequest, ResolveReviewRequest, ReviewExpiry, ReviewPolicy, ReviewRuling,
    ReviewStatus, SetPolicyRequest, UpsertRuleRequest, WatchReviewsRequest,
    review_client::ReviewClient, rule,
};
use tonic::Code;

/// A rule that holds any message saying "holdme".
fn hold_rule_request() -> UpsertRuleRequest {
    UpsertRuleRequest {
        rule: Some(proto::Rule {
            id: "hold-test".into(),
            description: "held for review".into(),
            action: Decision::Hold.into(),
            mode: proto::RuleMode::Enforce.into(),
            kind: Some(rule::Kind::Phrase(proto::PhraseRule {
                phrases: vec!["holdme".into()],
                syntax: proto::PhraseSyntax::Literal.into(),
                anywhere: false,
            })),
            ..proto::Rule::default()
        }),
    }
}

async fn hold_rule(server: &TestServer) {
    server
        .admin()
        .upsert_rule(hold_rule_request())
        .await
        .expect("the hold rule is stored");
}

/// Sets `channel`'s review settings on top of the default policy.
async fn review_policy(server: &TestServer, channel: &str, review: ReviewPolicy) {
    let mut policy = server
        .admin()
        .get_policy(GetPolicyRequest {
            channel: channel.into(),
        })
        .await
        .expect("get the policy")
        .into_inner();
    policy.channel = channel.into();
    policy.review = Some(review);
    server
        .admin()
        .set_policy(SetPolicyRequest {
            policy: Some(policy),
        })
        .await
        .expect("set the policy");
}

fn reject(id: &str, moderator: &str) -> ResolveReviewRequest {
    ResolveReviewRequest {
        id: id.into(),
        ruling: ReviewRuling::Reject.into(),
        moderator: moderator.into(),
        action: ActionKind::Timeout.into(),
        duration: Some(prost_types::Duration {
            seconds: 600,
            nanos: 0,
        }),
        label: "spam/spam".into(),
        note: "selling followers".into(),
    }
}

fn approve(id: &str, moderator: &str) -> ResolveReviewRequest {
    ResolveReviewRequest {
        id: id.into(),
        ruling: ReviewRuling::Approve.into(),
        moderator: moderator.into(),
        ..ResolveReviewRequest::default()
    }
}

async fn pending(client: &mut ReviewClient<tonic::transport::Channel>) -> Vec<proto::ReviewItem> {
    client
        .list_reviews(ListReviewsRequest {
            status: ReviewStatus::Pending.into(),
            ..ListReviewsRequest::default()
        })
        .await
        .expect("list the queue")
        .into_inner()
        .items
}

#[tokio::test]
async fn a_held_message_waits_for_review_and_a_rejection_acts_once() {
    let server = TestServer::start(|_| {}).await;
    hold_rule(&server).await;
    let verdicts = server
        .classify(vec![
            chat_message("m1", "seller", "please holdme now"),
            chat_message("m2", "regular", "good stream today"),
        ])
        .await;
    assert_eq!(verdicts[0].decision, Decision::Hold as i32);
    assert!(!verdicts[0].review_id.is_empty(), "a hold names its item");
    assert!(verdicts[1].review_id.is_empty(), "an allow has no item");

    let mut review = server.review();
    let queue = pending(&mut review).await;
    assert_eq!(queue.len(), 1, "{queue:?}");
    let item = &queue[0];
    assert_eq!(item.id, verdicts[0].review_id);
    assert_eq!(
        (item.user_id.as_str(), item.text.as_str()),
        ("seller", "please holdme now")
    );
    assert_eq!(item.reasons[0].rule_id, "hold-test");
    assert_eq!(
        item.expires_at.unwrap().seconds - item.created_at.unwrap().seconds,
        900,
        "the default policy's 15 minutes"
    );

    let ruled = review
        .resolve_review(reject(&item.id, "alice"))
        .await
        .expect("reject")
        .into_inner();
    let settled = ruled.item.unwrap();
    assert_eq!(settled.status, ReviewStatus::Rejected as i32);
    assert_eq!(
        (settled.moderator.as_str(), settled.label.as_str()),
        ("alice", "spam/spam")
    );
    let action = ruled.action.expect("a rejection acts");
    assert_eq!(action.kind, ActionKind::Timeout as i32);
    assert_eq!(action.target_user_id, "seller");
    assert_eq!(action.message_id, "m1");
    assert_eq!(settled.action_id, action.id);
    // Held for a Classify caller in a channel that records Classify actions: recorded only.
    assert_eq!(action.status, ActionStatus::Recorded as i32);

    // The first ruling stands, and says whose it was.
    let second = review
        .resolve_review(approve(&item.id, "bob"))
        .await
        .expect_err("already rejected");
    assert_eq!(second.code(), Code::FailedPrecondition);
    assert!(second.message().contains("rejected by alice"), "{second:?}");
    assert!(pending(&mut review).await.is_empty());

    // The rejection taught one positive example of the moderator's label.
    let feedback = server.store().await.feedback().await.unwrap();
    assert_eq!(feedback.len(), 1, "{feedback:?}");
    assert!(feedback[0].positive);
    assert_eq!(feedback[0].label, "spam/spam");
    assert_eq!(feedback[0].source.as_str(), "review_rejected");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn of_concurrent_rulings_exactly_one_stands() {
    let server = TestServer::start(|_| {}).await;
    hold_rule(&server).await;
    let verdicts = server
        .classify(vec![chat_message("m1", "seller", "holdme")])
        .await;
    let id = verdicts[0].review_id.clone();
    let mut calls = Vec::new();
    for i in 0..8 {
        let mut client = server.review();
        let request = if i % 2 == 0 {
            reject(&id, &format!("mod{i}"))
        } else {
            approve(&id, &format!("mod{i}"))
        };
        calls.push(tokio::spawn(
            async move { client.resolve_review(request).await },
        ));
    }
    let mut won = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(response) => won.push(response.into_inner().item.unwrap()),
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert_eq!(won.len(), 1, "one ruling stands: {won:?}");
    let stored = server
        .review()
        .get_review(GetReviewRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.moderator, won[0].moderator);
    assert_eq!(stored.status, won[0].status);
    // Only the winning ruling's example exists: a rejection teaches a positive, an approval
    // of a rule's hold a benign negative.
    let feedback = server.store().await.feedback().await.unwrap();
    let rejected = won[0].status == ReviewStatus::Rejected as i32;
    assert_eq!(feedback.len(), 1, "{feedback:?}");
    assert_eq!(feedback[0].positive, rejected, "{feedback:?}");
    assert!(feedback.iter().all(|f| f.actor == won[0].moderator));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_approval_lets_the_message_stand_and_teaches_it_is_benign() {
    let server = TestServer::start(|_| {}).await;
    hold_rule(&server).await;
    let verdicts = server
        .classify(vec![chat_message("m1", "fan", "holdme please")])
        .await;
    let ruled = server
        .review()
        .resolve_review(approve(&verdicts[0].review_id, "alice"))
        .await
        .expect("approve")
        .into_inner();
    assert_eq!(ruled.item.unwrap().status, ReviewStatus::Approved as i32);
    assert!(ruled.action.is_none(), "nothing happens to the author");
    // A rule's hold, not a model's: no model label to correct, but the message is acceptable
    // chat, a negative of every label.
    let feedback = server.store().await.feedback().await.unwrap();
    let taught: Vec<_> = feedback
        .iter()
        .map(|f| {
            (
                f.label.as_str(),
                f.positive,
                f.source.as_str(),
                f.message_id.as_str(),
            )
        })
        .collect();
    assert_eq!(taught, [("benign", false, "review_approved", "m1")]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn nobody_ruling_lets_the_channel_policy_settle_the_item() {
    let server = TestServer::start(|_| {}).await;
    hold_rule(&server).await;
    review_policy(
        &server,
        "strims",
        ReviewPolicy {
            ttl: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            on_expiry: ReviewExpiry::Hide.into(),
            hide_while_pending: false,
        },
    )
    .await;
    let mut held = chat_message("s1", "seller", "holdme");
    held.channel = "strims".into();
    let mut other = chat_message("d1", "seller", "holdme");
    other.channel = "destinygg".into();
    let verdicts = server.classify(vec![held, other]).await;
    let (strims, dgg) = (verdicts[0].review_id.clone(), verdicts[1].review_id.clone());

    let mut review = server.review();
    eventually("the strims item expires", || {
        let mut review = review.clone();
        let id = strims.clone();
        async move {
            let item = review.get_review(GetReviewRequest { id }).await.unwrap();
            item.into_inner().status == ReviewStatus::Expired as i32
        }
    })
    .await;
    let expired = review
        .get_review(GetReviewRequest { id: strims.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(!expired.action_id.is_empty(), "on_expiry = hide acts");
    let action = server
        .actions()
        .get_action(proto::GetActionRequest {
            id: expired.action_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(action.kind, ActionKind::Hide as i32);

    // The default channel keeps its 15 minutes.
    let waiting = review
        .get_review(GetReviewRequest { id: dgg })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waiting.status, ReviewStatus::Pending as i32);
    // A moderator arriving late is told the expiry settled it.
    let late = review
        .resolve_review(approve(&strims, "alice"))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(late.message().contains("expired by its expiry"), "{late:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_backend_watching_learns_the_outcomes_of_its_own_held_messages_only() {
    const TOKENS: &str = "classifier shop shop-secret-5f2a9c81d4e7; \
                          classifier forum forum-secret-c70d2e9a41b6; \
                          moderator mods mods-secret-0b6e13f2a8; admin ops ops-secret-7d41c0e99b3f";
    let server = TestServer::start(|config| config.auth.tokens = TOKENS.into()).await;
    proto::admin_client::AdminClient::with_interceptor(
        server.channel.clone(),
        bearer("ops-secret-7d41c0e99b3f"),
    )
    .upsert_rule(hold_rule_request())
    .await
    .expect("the hold rule is stored");

    let classify = |token: &'static str, id: &'static str| {
        let channel = server.channel.clone();
        async move {
            proto::moderation_client::ModerationClient::with_interceptor(channel, bearer(token))
                .classify(proto::ClassifyRequest {
                    messages: vec![chat_message(id, "seller", "holdme")],
                    options: None,
                })
                .await
                .expect("classify")
                .into_inner()
                .verdicts
                .remove(0)
        }
    };
    let shop_review = |channel: tonic::transport::Channel| {
        ReviewClient::with_interceptor(channel, bearer("shop-secret-5f2a9c81d4e7"))
    };
    let mut shop = shop_review(server.channel.clone());
    let mut watch = shop
        .watch_reviews(WatchReviewsRequest::default())
        .await
        .expect("a classifier may watch")
        .into_inner();

    let mine = classify("shop-secret-5f2a9c81d4e7", "s1").await;
    let theirs = classify("forum-secret-c70d2e9a41b6", "f1").await;
    assert_ne!(mine.review_id, theirs.review_id);

    // The forum's item is not the shop's to see.
    let hidden = shop
        .get_review(GetReviewRequest {
            id: theirs.review_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    shop.get_review(GetReviewRequest {
        id: mine.review_id.clone(),
    })
    .await
    .expect("its own item");
    // Nor may a classifier rule or list.
    let refused = shop
        .resolve_review(approve(&mine.review_id, "x"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    let mut mods =
        ReviewClient::with_interceptor(server.channel.clone(), bearer("mods-secret-0b6e13f2a8"));
    mods.resolve_review(approve(&theirs.review_id, "alice"))
        .await
        .unwrap();
    mods.resolve_review(reject(&mine.review_id, "alice"))
        .await
        .unwrap();

    let outcome = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the outcome arrives")
        .unwrap()
        .unwrap();
    assert_eq!(outcome.id, mine.review_id, "only the shop's own item");
    assert_eq!(outcome.status, ReviewStatus::Rejected as i32);
    assert!(!outcome.action_id.is_empty());
    // Nothing else comes (the forum's approval is not the shop's business).
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), watch.message())
            .await
            .is_err()
    );

    // A backend that was away catches up from `since`.
    let mut caught_up = shop_review(server.channel.clone())
        .watch_reviews(WatchReviewsRequest {
            since: Some(prost_types::Timestamp {
                seconds: outcome.created_at.unwrap().seconds - 60,
                nanos: 0,
            }),
            ..WatchReviewsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let again = tokio::time::timeout(Duration::from_secs(10), caught_up.message())
        .await
        .expect("the missed outcome arrives")
        .unwrap()
        .unwrap();
    assert_eq!(again.id, mine.review_id);
    server.stop().await.unwrap();
}

/// The next verdict on a bridge's stream.
async fn next_verdict(
    responses: &mut tonic::Streaming<proto::StreamModerateResponse>,
) -> proto::Verdict {
    loop {
        let response = tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("a verdict within 10 s")
            .expect("a healthy stream")
            .expect("a response");
        if let Some(proto::stream_moderate_response::Kind::Verdict(verdict)) = response.kind {
            return verdict;
        }
    }
}

#[tokio::test]
async fn in_a_chat_a_held_message_is_hidden_while_pending_and_the_ruling_reaches_the_chat() {
    let server = TestServer::start(|_| {}).await;
    hold_rule(&server).await;
    review_policy(
        &server,
        "destinygg",
        ReviewPolicy {
            ttl: None,
            on_expiry: ReviewExpiry::Allow.into(),
            hide_while_pending: true,
        },
    )
    .await;
    let (tx, mut responses) = super::common::bridge(&server, "bridge-review").await;

    // Rejected: hidden at once, then the moderator's ban reaches the chat.
    tx.send(super::common::stream_message(
        "c1", "seller", "holdme", None,
    ))
    .await
    .unwrap();
    let verdict = next_verdict(&mut responses).await;
    assert_eq!(verdict.decision, Decision::Hold as i32);
    assert!(!verdict.review_id.is_empty() && !verdict.action_id.is_empty());
    let hide = super::next_command(&mut responses).await;
    assert_eq!(hide.action_id, verdict.action_id);
    assert_eq!(hide.kind, ActionKind::Hide as i32);
    assert_eq!(hide.target, "seller");
    let ruled = server
        .review()
        .resolve_review(ResolveReviewRequest {
            action: ActionKind::Ban.into(),
            duration: None,
            ..reject(&verdict.review_id, "alice")
        })
        .await
        .unwrap()
        .into_inner();
    let ban = super::next_command(&mut responses).await;
    assert_eq!(ban.action_id, ruled.action.unwrap().id);
    assert_eq!(ban.kind, ActionKind::Ban as i32);
    assert_eq!(ban.target, "seller");

    // Approved: the hide is lifted.
    tx.send(super::common::stream_message(
        "c2",
        "fan",
        "holdme pls",
        None,
    ))
    .await
    .unwrap();
    let verdict = next_verdict(&mut responses).await;
    let hide = super::next_command(&mut responses).await;
    assert_eq!(
        (hide.kind, hide.target.as_str()),
        (ActionKind::Hide as i32, "fan")
    );
    let ruled = server
        .review()
        .resolve_review(approve(&verdict.review_id, "alice"))
        .await
        .unwrap()
        .into_inner();
    let lift = ruled.action.expect("the approval lifts the hide");
    let unmute = super::next_command(&mut responses).await;
    assert_eq!(unmute.action_id, lift.id);
    assert_eq!(
        (unmute.kind, unmute.target.as_str()),
        (ActionKind::Unmute as i32, "fan")
    );
    drop(tx);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_review_requests_name_their_field() {
    let server = TestServer::start(|_| {}).await;
    hold_rule(&server).await;
    let id = server
        .classify(vec![chat_message("m1", "seller", "holdme")])
        .await
        .remove(0)
        .review_id;
    let mut review = server.review();
    let cases: Vec<(ResolveReviewRequest, &str)> = vec![
        (
            ResolveReviewRequest {
                ruling: 0,
                ..approve(&id, "alice")
            },
            "ruling",
        ),
        (approve("", "alice"), "id"),
        (approve(&id, ""), "moderator"),
        (
            ResolveReviewRequest {
                action: ActionKind::Ban.into(),
                ..approve(&id, "alice")
            },
            "action",
        ),
        (
            ResolveReviewRequest {
                label: String::new(),
                ..reject(&id, "alice")
            },
            "label",
        ),
        (
            ResolveReviewRequest {
                duration: None,
                ..reject(&id, "alice")
            },
            "duration",
        ),
        (
            ResolveReviewRequest {
                action: ActionKind::Unban.into(),
                ..reject(&id, "alice")
            },
            "action",
        ),
        (
            ResolveReviewRequest {
                note: "x".repeat(2001),
                ..reject(&id, "alice")
            },
            "note",
        ),
    ];
    for (request, field) in cases {
        let status = review.resolve_review(request).await.unwrap_err();
        assert_invalid_field(&status, field);
    }
    // Nothing was settled by the bad requests.
    assert_eq!(pending(&mut review).await.len(), 1);

    let status = review
        .list_reviews(ListReviewsRequest {
            page_token: "not-a-token".into(),
            ..ListReviewsRequest::default()
        })
        .await
        .unwrap_err();
    assert_invalid_field(&status, "page_token");
    let status = review
        .list_reviews(ListReviewsRequest {
            status: 99,
            ..ListReviewsRequest::default()
        })
        .await
        .unwrap_err();
    assert_invalid_field(&status, "status");
    let status = review
        .watch_reviews(WatchReviewsRequest {
            since: Some(prost_types::Timestamp {
                seconds: 1_000,
                nanos: 0,
            }),
            ..WatchReviewsRequest::default()
        })
        .await
        .unwrap_err();
    assert_invalid_field(&status, "since");
    let missing = review
        .get_review(GetReviewRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_queue_pages_newest_first_without_repeats() {
    let server = TestServer::start(|_| {}).await;
    hold_rule(&server).await;
    let messages = (0..7)
        .map(|i| chat_message(&format!("p{i}"), &format!("u{i}"), "holdme"))
        .collect();
    server.classify(messages).await;
    let mut review = server.review();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = review
            .list_reviews(ListReviewsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..ListReviewsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|i| i.message_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "{seen:?}");
    // A token is tied to its filters.
    let first = review
        .list_reviews(ListReviewsRequest {
            page_size: 3,
            ..ListReviewsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = review
        .list_reviews(ListReviewsRequest {
            page_token: first.next_page_token,
            channel: "strims".into(),
            ..ListReviewsRequest::default()
        })
        .await
        .unwrap_err();
    assert_invalid_field(&status, "page_token");
    server.stop().await.unwrap();
}
