//! The HTTP edge as its callers use it: the JSON API (every RPC, from the proto), the seed's
//! paths, Server-Sent Events, console sessions with CSRF, the security headers, `/openapi.json`,
//! `/healthz` and `/metrics`. Roles over JSON are checked method by method in `tests/auth.rs`.

use crate::common;

use std::time::Duration;

use common::TestServer;
use serde_json::json;

const MODERATOR: &str = "moderator-token-4b1f9e02c7";
const ADMIN: &str = "admin-token-8e3d51a6f09b";
const CLASSIFIER: &str = "classifier-token-2a7c90d4e1";

fn tokens() -> String {
    format!("moderator alice {MODERATOR}; admin ops {ADMIN}; classifier backend {CLASSIFIER}")
}

async fn server_with_tokens() -> TestServer {
    TestServer::start(|config| config.auth.tokens = tokens()).await
}

fn message(id: &str, user: &str, text: &str) -> serde_json::Value {
    json!({ "channel": "destinygg", "messageId": id, "userId": user, "text": text })
}

#[tokio::test]
async fn every_unary_rpc_is_json_and_bad_input_names_its_field() {
    let server = TestServer::start(|_| {}).await;
    let http = server.http();

    let reply = http
        .post(
            "/modbot.v1.Moderation/Classify",
            &json!({ "messages": [message("m1", "u1", "hello chat")] }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["verdicts"][0]["decision"], "DECISION_ALLOW");
    assert_eq!(reply.json["verdicts"][0]["messageId"], "m1");
    // Every field is shown, defaults too.
    assert!(
        reply.json["verdicts"][0].get("enforced").is_some(),
        "{}",
        reply.text
    );
    // proto field names are accepted as well as JSON names.
    let reply = http
        .post(
            "/modbot.v1.Moderation/Classify",
            &json!({ "messages": [{ "channel": "destinygg", "message_id": "m2", "user_id": "u1", "text": "hi" }] }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // The handler's own validation: the field path, as gRPC names it.
    let reply = http
        .post(
            "/modbot.v1.Moderation/Classify",
            &json!({ "messages": [message("m3", "u1", "ok"), { "channel": "destinygg", "messageId": "m4", "userId": "u1" }] }),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.code(), "invalid_argument");
    assert_eq!(reply.field(), "messages[1].text", "{}", reply.text);

    // JSON that is not the message: the JSON path of the field at fault.
    let reply = http
        .post(
            "/modbot.v1.Moderation/Classify",
            &json!({ "messages": [{ "channel": "destinygg", "text": 42 }] }),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.field(), "messages[0].text", "{}", reply.text);
    let reply = http
        .post("/modbot.v1.Moderation/Classify", &json!({ "mesages": [] }))
        .await;
    assert_eq!(reply.field(), "mesages", "{}", reply.text);
    let reply = http
        .request(
            "POST",
            "/modbot.v1.Moderation/Classify",
            &[("content-type", "application/json")],
            b"{\"messages\": [".to_vec(),
        )
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        (400, "messages"),
        "{}",
        reply.text
    );

    // Not JSON, not POST, not a method.
    let reply = http
        .request(
            "POST",
            "/modbot.v1.Moderation/Classify",
            &[("content-type", "text/plain")],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!((reply.status, reply.field()), (400, "Content-Type"));
    let reply = http.get("/modbot.v1.Moderation/Classify").await;
    assert_eq!((reply.status, reply.code()), (501, "unimplemented"));
    let reply = http.post("/modbot.v1.Moderation/Nothing", &json!({})).await;
    assert_eq!((reply.status, reply.code()), (404, "not_found"));
    let reply = http
        .post("/modbot.v1.Moderation/StreamModerate", &json!({}))
        .await;
    assert_eq!(reply.status, 501, "{}", reply.text);

    // A body larger than any valid request is refused unread.
    let huge = http
        .request(
            "POST",
            "/modbot.v1.Moderation/Classify",
            &[("content-type", "application/json")],
            vec![b' '; 5 * 1024 * 1024],
        )
        .await;
    assert_eq!(huge.status, 413);

    // Other services: a not-found keeps its code.
    let reply = http
        .post("/modbot.v1.Actions/GetAction", &json!({ "id": "nope" }))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (404, "not_found"),
        "{}",
        reply.text
    );
    let reply = http.post("/modbot.v1.Admin/GetModelInfo", &json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["loaded"], false);

    // Nothing of a refused call was decided: the stats count the two good messages only.
    let stats = http.get("/admin/stats").await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    assert_eq!(stats.json["messages"], "2", "{}", stats.text);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_seed_paths_stand_for_their_rpcs() {
    let server = server_with_tokens().await;
    let admin = server.http().with_bearer(ADMIN);

    let reply = admin
        .post(
            "/webhooks/chat-message",
            &message(
                "w1",
                "spammer",
                "FREE NITRO giveaway claim at discord-gift.ru/claim",
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json["messageId"], "w1",
        "the verdict itself: {}",
        reply.text
    );
    assert_ne!(reply.json["decision"], "DECISION_ALLOW", "{}", reply.text);
    let bad = admin
        .post(
            "/webhooks/chat-message",
            &json!({ "channel": "destinygg", "messageId": "w2", "userId": "u" }),
        )
        .await;
    assert_eq!((bad.status, bad.field()), (400, "text"), "{}", bad.text);

    let rule = admin
        .post(
            "/admin/rules",
            &json!({ "rule": {
                "id": "no-blorp", "description": "blorp is banned here", "action": "DECISION_HIDE",
                "mode": "RULE_MODE_ENFORCE", "phrase": { "phrases": ["blorp"], "syntax": "PHRASE_SYNTAX_LITERAL" }
            }}),
        )
        .await;
    assert_eq!(rule.status, 200, "{}", rule.text);
    assert_eq!(rule.json["id"], "no-blorp");
    let invalid = admin
        .post(
            "/admin/rules",
            &json!({ "rule": { "id": "empty", "action": "DECISION_HIDE", "phrase": { "phrases": [] } } }),
        )
        .await;
    assert_eq!(invalid.status, 400, "{}", invalid.text);
    assert!(invalid.field().starts_with("rule."), "{}", invalid.text);

    // An action to appeal against, then the appeal.
    let action = admin
        .post(
            "/modbot.v1.Actions/ExecuteAction",
            &json!({ "channel": "destinygg", "targetUserId": "victim", "kind": "ACTION_KIND_TIMEOUT",
                     "duration": "600s", "reason": "test", "source": "ACTION_SOURCE_MODERATOR",
                     "moderator": "ops", "idempotencyKey": "seed-1" }),
        )
        .await;
    assert_eq!(action.status, 200, "{}", action.text);
    let action_id = action.json["action"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let appeal = admin
        .post(
            "/appeals",
            &json!({ "actionId": action_id, "userId": "victim", "text": "I was quoting someone" }),
        )
        .await;
    assert_eq!(appeal.status, 200, "{}", appeal.text);
    let id = appeal.json["id"].as_str().expect("an appeal id");
    let got = admin.get(&format!("/appeals/{id}")).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json["text"], "I was quoting someone");
    assert_eq!(got.json["status"], "APPEAL_STATUS_OPEN");
    let missing = admin.get("/appeals/no-such-appeal").await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));

    let stats = admin.get("/admin/stats?channel=destinygg").await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    assert_eq!(stats.json["messages"], "1", "{}", stats.text);
    let bad_since = admin.get("/admin/stats?since=yesterday").await;
    assert_eq!(
        (bad_since.status, bad_since.field()),
        (400, "since"),
        "{}",
        bad_since.text
    );

    // The seed's paths are the RPCs': same roles.
    let classifier = server.http().with_bearer(CLASSIFIER);
    assert_eq!(classifier.get("/admin/stats").await.status, 403);
    assert_eq!(
        classifier
            .post("/webhooks/chat-message", &message("w3", "u", "hello"))
            .await
            .status,
        200
    );
    let moderator = server.http().with_bearer(MODERATOR);
    let refused = moderator
        .post("/admin/rules", &json!({ "rule": { "id": "x" } }))
        .await;
    assert_eq!((refused.status, refused.code()), (403, "permission_denied"));
    assert_eq!(server.http().get("/admin/stats").await.status, 401);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn console_sessions_need_a_moderator_token_and_csrf_and_end_at_logout() {
    let server = TestServer::start(|config| {
        config.auth.tokens = tokens();
        config.http.login_attempts_per_minute = 3;
    })
    .await;
    let mut http = server.http();

    let wrong = http.login("not-a-token-at-all-really").await;
    assert_eq!((wrong.status, wrong.code()), (401, "unauthenticated"));
    let classifier = http.login(CLASSIFIER).await;
    assert_eq!(
        (classifier.status, classifier.code()),
        (403, "permission_denied")
    );
    assert!(
        classifier.json["message"]
            .as_str()
            .unwrap_or("")
            .contains("moderator")
    );

    let ok = http.login(MODERATOR).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let cookie = ok.header("set-cookie").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP without a proxy: {cookie}"
    );
    assert_eq!(ok.json["name"], "alice");
    assert_eq!(ok.json["roles"], json!(["moderator"]));
    assert!(!ok.text.contains(MODERATOR), "the token never comes back");

    let session = http.get("/console/session").await;
    assert_eq!(session.json["name"], "alice");

    // The session calls as its moderator; a change needs the CSRF token.
    let stats = http.post("/modbot.v1.Admin/GetStats", &json!({})).await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    let forged = http
        .request(
            "POST",
            "/modbot.v1.Admin/GetStats",
            &[
                ("content-type", "application/json"),
                ("x-csrf-token", "forged"),
            ],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!((forged.status, forged.code()), (403, "permission_denied"));
    assert!(forged.text.contains("CSRF"), "{}", forged.text);
    let mut no_csrf = http.clone();
    no_csrf.csrf = None;
    assert_eq!(
        no_csrf
            .post("/modbot.v1.Admin/GetStats", &json!({}))
            .await
            .status,
        403
    );
    // The moderator's roles, not more.
    let rule = http
        .post(
            "/modbot.v1.Admin/UpsertRule",
            &json!({ "rule": { "id": "x" } }),
        )
        .await;
    assert_eq!(
        (rule.status, rule.code()),
        (403, "permission_denied"),
        "{}",
        rule.text
    );
    // Console actions are recorded with the moderator's name.
    let action = http
        .post(
            "/modbot.v1.Actions/ExecuteAction",
            &json!({ "channel": "destinygg", "targetUserId": "troll", "kind": "ACTION_KIND_WARN",
                     "reason": "be nice", "source": "ACTION_SOURCE_MODERATOR", "moderator": "alice",
                     "idempotencyKey": "console-1" }),
        )
        .await;
    assert_eq!(action.status, 200, "{}", action.text);
    assert_eq!(
        action.json["action"]["requestedBy"], "alice",
        "{}",
        action.text
    );

    // Logout needs the CSRF token too, then the cookie is dead.
    let mut stale = http.clone();
    stale.csrf = Some("wrong".into());
    assert_eq!(stale.post("/console/logout", &json!({})).await.status, 403);
    let out = http.post("/console/logout", &json!({})).await;
    assert_eq!(out.status, 200, "{}", out.text);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let after = http.post("/modbot.v1.Admin/GetStats", &json!({})).await;
    assert_eq!((after.status, after.code()), (401, "unauthenticated"));
    assert_eq!(http.get("/console/session").await.status, 401);

    // Failed logins are limited per address: the third failure above was the limit's third.
    let mut other = server.http();
    assert_eq!(other.login("still-not-a-token-no").await.status, 401);
    let limited = other.login(MODERATOR).await;
    assert_eq!(
        (limited.status, limited.code()),
        (429, "resource_exhausted")
    );
    assert!(!limited.header("retry-after").is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn decisions_and_reviews_stream_as_server_sent_events() {
    let server = server_with_tokens().await;
    let moderator = server.http().with_bearer(MODERATOR);
    let (status, mut feed) = moderator
        .events("/modbot.v1.Admin/WatchDecisions?message=%7B%22channel%22%3A%22destinygg%22%7D")
        .await;
    assert_eq!(status, 200);
    let (status, mut reviews) = moderator.events("/modbot.v1.Review/WatchReviews").await;
    assert_eq!(status, 200);

    // Keep classifying until the watch is subscribed (the stream opens before its first
    // event), then the event carries the message and its verdict.
    let classifier = server.http().with_bearer(CLASSIFIER);
    let mut event = None;
    for i in 0..50 {
        let reply = classifier
            .post(
                "/modbot.v1.Moderation/Classify",
                &json!({ "messages": [message(&format!("f{i}"), "viewer", "what a play")] }),
            )
            .await;
        assert_eq!(reply.status, 200);
        if let Some(next) = feed.next(Duration::from_millis(200)).await {
            event = Some(next);
            break;
        }
    }
    let event = event.expect("a decision event");
    assert_eq!(event.kind, "message");
    assert_eq!(event.data["message"]["text"], "what a play");
    assert_eq!(event.data["verdict"]["decision"], "DECISION_ALLOW");

    // Another channel's decisions are not in this feed.
    classifier
        .post(
            "/modbot.v1.Moderation/Classify",
            &json!({ "messages": [{ "channel": "elsewhere", "messageId": "x1", "userId": "v", "text": "hi" }] }),
        )
        .await;
    classifier
        .post(
            "/modbot.v1.Moderation/Classify",
            &json!({ "messages": [message("last", "viewer", "the end")] }),
        )
        .await;
    loop {
        let next = feed.next(Duration::from_secs(10)).await.expect("an event");
        assert_eq!(
            next.data["message"]["channel"], "destinygg",
            "{:?}",
            next.data
        );
        if next.data["message"]["messageId"] == "last" {
            break;
        }
    }

    // A held message reaches the review watch.
    let admin = server.http().with_bearer(ADMIN);
    let rule = admin
        .post(
            "/modbot.v1.Admin/UpsertRule",
            &json!({ "rule": { "id": "hold-links", "action": "DECISION_HOLD", "mode": "RULE_MODE_ENFORCE",
                               "phrase": { "phrases": ["suspicious offer"], "syntax": "PHRASE_SYNTAX_LITERAL" } } }),
        )
        .await;
    assert_eq!(rule.status, 200, "{}", rule.text);
    let held = classifier
        .post(
            "/modbot.v1.Moderation/Classify",
            &json!({ "messages": [message("h1", "seller", "suspicious offer for you")] }),
        )
        .await;
    assert_eq!(
        held.json["verdicts"][0]["decision"], "DECISION_HOLD",
        "{}",
        held.text
    );
    // The watch tells of items as they are settled, by any moderator.
    let review_id = held.json["verdicts"][0]["reviewId"]
        .as_str()
        .expect("a review id");
    let ruled = moderator
        .post(
            "/modbot.v1.Review/ResolveReview",
            &json!({ "id": review_id, "ruling": "REVIEW_RULING_APPROVE", "moderator": "alice" }),
        )
        .await;
    assert_eq!(ruled.status, 200, "{}", ruled.text);
    let item = reviews
        .next(Duration::from_secs(10))
        .await
        .expect("a review item");
    assert_eq!(item.data["text"], "suspicious offer for you");
    assert_eq!(item.data["status"], "REVIEW_STATUS_APPROVED");
    assert_eq!(item.data["moderator"], "alice");

    // A bad request is refused before the stream starts.
    let (status, _) = moderator
        .events("/modbot.v1.Review/WatchReviews?message=%7B%22since%22%3A%22soon%22%7D")
        .await;
    assert_eq!(status, 400);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_the_api_describes_itself() {
    let server = server_with_tokens().await;
    let http = server.http();
    let page = http.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("/assets/console.js"));
    let csp = page.header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("x-frame-options"), "DENY");
    for asset in ["/assets/console.js", "/assets/console.css"] {
        let reply = http.get(asset).await;
        assert_eq!(reply.status, 200, "{asset}");
        assert!(!reply.header("content-security-policy").is_empty());
    }
    assert_eq!(http.get("/assets/nothing.js").await.status, 404);

    let openapi = http.get("/openapi.json").await;
    assert_eq!(openapi.status, 200);
    assert_eq!(openapi.json["openapi"], "3.1.0");
    assert!(openapi.json["paths"]["/modbot.v1.Moderation/Classify"]["post"].is_object());
    assert!(openapi.json["paths"]["/modbot.v1.Admin/WatchDecisions"]["get"].is_object());

    let health = http.get("/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(health.json["status"], "SERVING");
    assert_eq!(health.json["model"], "NOT_SERVING", "no model in tests");

    // /metrics reads like GetStats: a moderator may, a classifier may not, nobody else.
    assert_eq!(http.get("/metrics").await.status, 401);
    assert_eq!(
        server
            .http()
            .with_bearer(CLASSIFIER)
            .get("/metrics")
            .await
            .status,
        403
    );
    let metrics = server.http().with_bearer(MODERATOR).get("/metrics").await;
    assert!(matches!(metrics.status, 200 | 503), "{}", metrics.text);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn without_tokens_only_loopback_hosts_are_answered() {
    let server = TestServer::start(|_| {}).await;
    let http = server.http();
    assert_eq!(http.get("/healthz").await.status, 200);
    let rebound = http
        .request(
            "GET",
            "/healthz",
            &[("host", "evil.example:8080")],
            Vec::new(),
        )
        .await;
    assert_eq!((rebound.status, rebound.code()), (403, "permission_denied"));
    let local = http
        .request("GET", "/healthz", &[("host", "localhost:8080")], Vec::new())
        .await;
    assert_eq!(local.status, 200);
    // The console signs in as `local` without a token.
    let mut console = server.http();
    let login = console.login("").await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.json["name"], "local");
    server.stop().await.unwrap();
}

/// A channel's public moderation log: private until its policy publishes it; then anyone reads
/// it, without a token, with reasons but no evidence or text, pseudonyms unless the policy
/// shows nicks, every value escaped.
#[tokio::test]
async fn a_channel_publishes_its_moderation_log_only_when_its_policy_says_so() {
    let server = server_with_tokens().await;
    let admin = server.http().with_bearer(ADMIN);
    let moderator = server.http().with_bearer(MODERATOR);
    let anyone = server.http();

    // Private by default: the same 404 as for a channel nobody ever used.
    for channel in ["destinygg", "no-such-channel"] {
        let page = anyone.get(&format!("/public/{channel}")).await;
        assert_eq!(page.status, 404, "{}", page.text);
        assert!(
            page.text.contains("No public moderation log"),
            "{}",
            page.text
        );
        let log = anyone.get(&format!("/public/{channel}/log.json")).await;
        assert_eq!(log.status, 404, "{}", log.text);
        assert_eq!(log.code(), "not_found");
    }

    // A rule with a description, an automatic action through it, a moderator's warning whose
    // reason has markup, in two channels: one hashing nicks, one showing nicks and text.
    for (channel, nicks, show_text) in [
        ("destinygg", "NICK_DISPLAY_HASHED", false),
        ("strims", "NICK_DISPLAY_SHOWN", true),
    ] {
        let policy = admin
            .post("/modbot.v1.Admin/GetPolicy", &json!({ "channel": channel }))
            .await;
        assert_eq!(policy.status, 200, "{}", policy.text);
        let mut policy = policy.json;
        policy["channel"] = json!(channel);
        policy["transparency"] = json!({ "public": true, "nicks": nicks, "showText": show_text });
        for server_set in ["updatedAt", "revision", "isDefault"] {
            policy.as_object_mut().unwrap().remove(server_set);
        }
        let set = admin
            .post("/modbot.v1.Admin/SetPolicy", &json!({ "policy": policy }))
            .await;
        assert_eq!(set.status, 200, "{}", set.text);
        let rule = admin
            .post(
                "/modbot.v1.Admin/UpsertRule",
                &json!({ "rule": { "id": format!("fruit-{channel}"), "channel": channel,
                    "description": "Fruit scams", "action": "DECISION_HIDE", "mode": "RULE_MODE_ENFORCE",
                    "phrase": { "phrases": ["kiwi offer"], "syntax": "PHRASE_SYNTAX_LITERAL" } } }),
            )
            .await;
        assert_eq!(rule.status, 200, "{}", rule.text);
        let decided = admin
            .post(
                "/modbot.v1.Moderation/Classify",
                &json!({ "messages": [{ "channel": channel, "messageId": "s1", "userId": "Spammer",
                    "nick": "Spammer", "text": "best kiwi offer <b>today</b>" }] }),
            )
            .await;
        assert_eq!(
            decided.json["verdicts"][0]["decision"], "DECISION_HIDE",
            "{}",
            decided.text
        );
        let warned = moderator
            .post(
                "/modbot.v1.Actions/ExecuteAction",
                &json!({ "channel": channel, "targetUserId": "Bob", "targetNick": "<i>Bob</i>",
                    "kind": "ACTION_KIND_WARN", "source": "ACTION_SOURCE_MODERATOR", "reason": "<script>alert(1)</script> being rude",
                    "moderator": "alice" }),
            )
            .await;
        assert_eq!(warned.status, 200, "{}", warned.text);
    }

    let log = anyone.get("/public/destinygg/log.json").await;
    assert_eq!(log.status, 200, "{}", log.text);
    assert!(
        log.header("cache-control").contains("max-age=15"),
        "{:?}",
        log.headers
    );
    let recent = log.json["recent"]
        .as_array()
        .expect("recent actions")
        .clone();
    assert_eq!(recent.len(), 2, "{}", log.text);
    let automatic = recent
        .iter()
        .find(|a| a["by"] == "automatic")
        .expect("the rule's action");
    assert_eq!(
        automatic["reason"], "Fruit scams",
        "the rule's description, no evidence"
    );
    assert_eq!(automatic["kind"], "hide");
    let user = automatic["user"].as_str().unwrap();
    assert!(
        user.starts_with("user-") && !user.contains("Spammer"),
        "{user}"
    );
    assert!(
        automatic.get("text").is_none_or(|t| t == ""),
        "no text: {automatic}"
    );
    assert!(
        !log.text.contains("kiwi offer") && !log.text.contains("Spammer"),
        "{}",
        log.text
    );
    assert!(!log.text.contains("Bob"), "nicks are hashed: {}", log.text);
    assert_eq!(
        log.json["byReason"].as_array().map(Vec::len),
        Some(2),
        "{}",
        log.text
    );
    assert_eq!(log.json["counted"], 2);

    let page = anyone.get("/public/destinygg").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.header("content-security-policy")
            .contains("script-src")
    );
    assert!(page.text.contains("Fruit scams"));
    assert!(page.text.contains(user), "the same pseudonym on the page");
    assert!(
        page.text
            .contains("&lt;script&gt;alert(1)&lt;/script&gt; being rude")
    );
    assert!(
        !page.text.contains("<script"),
        "no script, none injected: {}",
        page.text
    );

    // The other channel shows nicks and the message an automatic action was about.
    let shown = anyone.get("/public/strims/log.json").await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    let automatic = shown.json["recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["by"] == "automatic")
        .expect("the rule's action")
        .clone();
    assert_eq!(automatic["user"], "Spammer");
    assert_eq!(automatic["text"], "best kiwi offer <b>today</b>");
    let page = anyone.get("/public/strims").await;
    assert!(
        page.text
            .contains("best kiwi offer &lt;b&gt;today&lt;/b&gt;"),
        "{}",
        page.text
    );
    assert!(
        page.text.contains("&lt;i&gt;Bob&lt;/i&gt;"),
        "{}",
        page.text
    );

    // Bad input names its field; over gRPC too, without a token.
    let bad = anyone
        .post(
            "/modbot.v1.Transparency/GetPublicLog",
            &json!({ "channel": "" }),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.field(), "channel");
    let mut transparency =
        modbot::proto::transparency_client::TransparencyClient::new(server.channel.clone());
    let log = transparency
        .get_public_log(modbot::proto::GetPublicLogRequest {
            channel: "destinygg".into(),
        })
        .await
        .expect("anyone may read a public log")
        .into_inner();
    assert_eq!(log.recent.len(), 2);
}
