//! Rules and channel policies in the database, end to end through the generated Admin client:
//! seeding, validation, versioning, applying a change at once, and hot reload across replicas.
//! Every scenario runs on SQLite and on PostgreSQL.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{PgSchema, TestServer, assert_invalid_field, chat_message, eventually};
use modbot::Config;
use modbot::infra::store::{Change, ChangeTarget, ConnectOptions, Store};
use modbot::proto::{
    self, ClassifyOptions, ClassifyRequest, DeleteRuleRequest, GetPolicyRequest, ListRulesRequest,
    SetPolicyRequest, UpsertRuleRequest, rule,
};
use tonic::Code;

/// A database for one test, which may outlive several servers.
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<PgSchema>,
}

impl Db {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self {
            url: format!("sqlite://{}/modbot.db", dir.path().display()),
            _dir: Some(dir),
            schema: None,
        }
    }

    async fn postgres(test: &str) -> Option<Self> {
        let schema = PgSchema::create(test).await?;
        Some(Self {
            url: schema.url.clone(),
            _dir: None,
            schema: Some(schema),
        })
    }

    async fn start(&self, configure: impl FnOnce(&mut Config)) -> TestServer {
        let url = self.url.clone();
        TestServer::start(move |config| {
            config.database.url = url;
            config.rules.reload_interval_ms = 100;
            configure(config);
        })
        .await
    }

    async fn store(&self) -> Store {
        let store = Store::connect(
            &self.url,
            &ConnectOptions {
                max_connections: 4,
                connect_timeout: Duration::from_secs(2),
                statement_timeout: Duration::from_secs(5),
            },
        )
        .await
        .expect("connect to the test database");
        store.migrate().await.expect("migrate");
        store
    }

    async fn finish(self) {
        if let Some(schema) = self.schema {
            schema.drop().await;
        }
    }
}

/// Runs `scenario` on SQLite, and on PostgreSQL when it is there (or required).
macro_rules! on_both_backends {
    ($sqlite:ident, $postgres:ident, $scenario:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            let db = Db::sqlite();
            $scenario(&db).await;
            db.finish().await;
        }

        #[tokio::test]
        async fn $postgres() {
            let Some(db) = Db::postgres(stringify!($postgres)).await else {
                return;
            };
            $scenario(&db).await;
            db.finish().await;
        }
    };
}

fn seconds(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

/// A valid phrase rule.
fn phrase_rule(id: &str, phrases: &[&str]) -> proto::Rule {
    proto::Rule {
        id: id.into(),
        description: "test phrases".into(),
        action: proto::Decision::Hide.into(),
        mode: proto::RuleMode::Enforce.into(),
        kind: Some(rule::Kind::Phrase(proto::PhraseRule {
            phrases: phrases.iter().map(|p| p.to_string()).collect(),
            syntax: proto::PhraseSyntax::Literal.into(),
            anywhere: false,
        })),
        ..proto::Rule::default()
    }
}

fn upsert(rule: proto::Rule) -> UpsertRuleRequest {
    UpsertRuleRequest { rule: Some(rule) }
}

/// The decision for one message in `channel`, decided without side effects (so polling does
/// not build up the author's history).
async fn decide(server: &TestServer, channel: &str, text: &str) -> proto::Verdict {
    let mut message = chat_message("probe", "prober", text);
    message.channel = channel.into();
    server
        .moderation()
        .classify(ClassifyRequest {
            messages: vec![message],
            options: Some(ClassifyOptions {
                dry_run: true,
                ..ClassifyOptions::default()
            }),
        })
        .await
        .expect("classify")
        .into_inner()
        .verdicts
        .remove(0)
}

async fn fired(server: &TestServer, text: &str) -> Vec<String> {
    decide(server, "destinygg", text)
        .await
        .reasons
        .into_iter()
        .map(|r| r.rule_id)
        .collect()
}

async fn list(
    server: &TestServer,
    channel: &str,
    include_global: bool,
) -> proto::ListRulesResponse {
    server
        .admin()
        .list_rules(ListRulesRequest {
            channel: channel.into(),
            include_global,
        })
        .await
        .expect("list rules")
        .into_inner()
}

async fn revision(server: &TestServer) -> u64 {
    list(server, "", false).await.revision
}

const SEED_RULES: &str = r#"
[policy]
shadow = false
exempt_roles = ["moderator"]
emotes = ["PepeLaugh"]
[policy.escalation]
warn_first = false
first_timeout_secs = 60
max_timeout_secs = 3600
ban_after = 0
heat_half_life_secs = 600

[channel.strims]
shadow = true

[[rule]]
id = "zebra"
kind = "phrase"
action = "hide"
[rule.params]
phrases = ["striped horse"]

[[rule]]
id = "two-channels"
kind = "caps"
action = "hold"
channels = ["a", "b"]
[rule.params]
max_ratio = 0.5
"#;

async fn seeding(db: &Db) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.toml");
    std::fs::write(&file, SEED_RULES).unwrap();
    let seed_file = file.clone();
    let server = db.start(move |c| c.rules.file = seed_file).await;

    let global = list(&server, "", false).await;
    assert_eq!(global.revision, 1, "the seed is revision 1");
    let ids: Vec<_> = global.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["zebra"], "only rules without channels are global");
    assert_eq!(global.rules[0].revision, 1);
    assert!(global.rules[0].updated_at.is_some());
    // Rules naming several channels keep them, and are listed for each.
    for channel in ["a", "b"] {
        let listed = list(&server, channel, false).await.rules;
        assert_eq!(listed.len(), 1, "{channel}");
        assert_eq!(listed[0].id, "two-channels");
        assert_eq!(listed[0].channels, ["a", "b"]);
        assert_eq!(listed[0].channel, "");
        let with_global = list(&server, channel, true).await.rules;
        let ids: Vec<_> = with_global.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["two-channels", "zebra"], "ordered by id");
    }
    assert!(list(&server, "c", false).await.rules.is_empty());
    // The channel override was merged into a whole policy of its own.
    let strims = server
        .admin()
        .get_policy(GetPolicyRequest {
            channel: "strims".into(),
        })
        .await
        .expect("get policy")
        .into_inner();
    assert!(strims.shadow && !strims.is_default);
    assert_eq!(strims.emotes, ["PepeLaugh"]);
    assert_eq!(fired(&server, "a striped horse").await, ["zebra"]);
    server.stop().await.expect("clean stop");

    // The second start, with another rules file (the built-in one): the database wins.
    let server = db.start(|_| {}).await;
    let global = list(&server, "", false).await;
    assert_eq!(global.revision, 1, "a second start does not reseed");
    assert_eq!(global.rules.len(), 1);
    assert!(fired(&server, "FREE NITRO for everyone").await.is_empty());
    server.stop().await.expect("clean stop");

    // A bad rules file still stops start-up, seeded database or not.
    std::fs::write(
        &file,
        format!("{SEED_RULES}\n[[rule]]\nid = \"bad\"\nkind = \"caps\"\naction = \"hide\"\n[rule.params]\nmax_ratio = 1.5\n"),
    )
    .unwrap();
    let mut config = common::test_config(dir.path());
    config.database.url = db.url.clone();
    config.rules.file = file;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = modbot::serve(config, listener, std::future::pending())
        .await
        .expect_err("a bad rules file stops start-up");
    assert!(
        error
            .to_string()
            .contains("rule[2] (id \"bad\").params.max_ratio: 1.5 is outside [0, 1]"),
        "{error}"
    );

    let history = db.store().await.ruleset_history().await.unwrap();
    assert!(
        history
            .iter()
            .all(|h| h.revision == 1 && h.change == Change::Seed)
    );
    assert_eq!(
        history.len(),
        2 + 2,
        "two rules and two policies: {history:?}"
    );
}

on_both_backends!(seeding_on_sqlite, seeding_on_postgres, seeding);

#[tokio::test]
async fn the_builtin_rules_seed_an_empty_database() {
    let server = TestServer::start(|_| {}).await;
    let listed = list(&server, "", false).await;
    assert_eq!(listed.revision, 1);
    assert_eq!(listed.rules.len(), 21, "the built-in set's rules");
    let scam = listed
        .rules
        .iter()
        .find(|r| r.id == "scam-giveaway")
        .expect("the built-in scam rule");
    assert_eq!(scam.action, proto::Decision::Timeout as i32);
    assert_eq!(scam.duration, Some(seconds(600)));
    assert_eq!(scam.mode, proto::RuleMode::Enforce as i32);
    let Some(rule::Kind::Phrase(phrase)) = &scam.kind else {
        panic!("a phrase rule: {scam:?}");
    };
    assert!(phrase.phrases.contains(&"free nitro".to_owned()));
    assert_eq!(phrase.syntax, proto::PhraseSyntax::Literal as i32);
    let rate = listed.rules.iter().find(|r| r.id == "dgg-rate").unwrap();
    assert_eq!(
        rate.kind,
        Some(rule::Kind::Rate(proto::RateRule {
            max_messages: 4,
            window: Some(seconds(3)),
        }))
    );
    server.stop().await.expect("clean stop");
}

async fn changes_apply_at_once(db: &Db) {
    let server = db.start(|_| {}).await;
    let mut admin = server.admin();
    assert!(fired(&server, "have a purple banana").await.is_empty());

    let stored = admin
        .upsert_rule(upsert(phrase_rule("banana", &["purple banana"])))
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!(stored.id, "banana");
    assert_eq!(stored.revision, 2);
    assert!(stored.updated_at.is_some());
    // Defaults are written out: what is stored is what acts.
    assert_eq!(stored.kind, phrase_rule("banana", &["purple banana"]).kind);
    let verdict = decide(&server, "destinygg", "have a purple banana").await;
    assert_eq!(verdict.decision, proto::Decision::Hide as i32);
    assert_eq!(verdict.reasons[0].rule_id, "banana");

    // Replacing it: new phrases, shadow mode, one channel.
    let mut replaced = phrase_rule("banana", &["green banana"]);
    replaced.mode = proto::RuleMode::Shadow.into();
    replaced.channel = "destinygg".into();
    let stored = admin
        .upsert_rule(upsert(replaced))
        .await
        .expect("replace")
        .into_inner();
    assert_eq!(stored.revision, 3);
    assert_eq!(stored.channel, "destinygg");
    assert!(fired(&server, "have a purple banana").await.is_empty());
    let verdict = decide(&server, "destinygg", "a green banana").await;
    assert_eq!(verdict.decision, proto::Decision::Allow as i32);
    assert_eq!(verdict.shadow_decision, proto::Decision::Hide as i32);
    assert!(
        decide(&server, "elsewhere", "a green banana")
            .await
            .reasons
            .is_empty()
    );

    // An empty id: the server names the rule.
    let mut unnamed = phrase_rule("", &["blue banana"]);
    unnamed.kind = Some(rule::Kind::Mentions(proto::MentionRule { max_mentions: 2 }));
    let assigned = admin
        .upsert_rule(upsert(unnamed))
        .await
        .expect("upsert without an id")
        .into_inner();
    assert!(!assigned.id.is_empty());
    assert_eq!(assigned.revision, 4);

    admin
        .delete_rule(DeleteRuleRequest {
            id: "banana".into(),
        })
        .await
        .expect("delete");
    assert!(fired(&server, "a green banana").await.is_empty());
    assert!(
        !fired(&server, "@alice @bob @carol hello").await.is_empty(),
        "the unnamed rule acts"
    );
    let missing = admin
        .delete_rule(DeleteRuleRequest {
            id: "banana".into(),
        })
        .await
        .expect_err("deleting twice");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert_eq!(revision(&server).await, 5, "a NOT_FOUND writes nothing");

    let history = server.store().await.ruleset_history().await.unwrap();
    let later: Vec<_> = history
        .iter()
        .filter(|h| h.revision > 1)
        .map(|h| {
            (
                h.revision,
                h.target,
                h.target_id.as_str(),
                h.change,
                h.spec.is_some(),
            )
        })
        .collect();
    assert_eq!(
        later,
        [
            (2, ChangeTarget::Rule, "banana", Change::Upsert, true),
            (3, ChangeTarget::Rule, "banana", Change::Upsert, true),
            (
                4,
                ChangeTarget::Rule,
                assigned.id.as_str(),
                Change::Upsert,
                true
            ),
            (5, ChangeTarget::Rule, "banana", Change::Delete, false),
        ]
    );
    assert!(
        history[history.len() - 2]
            .spec
            .as_deref()
            .unwrap()
            .contains("max_mentions = 2")
    );
    server.stop().await.expect("clean stop");
}

on_both_backends!(
    changes_apply_at_once_on_sqlite,
    changes_apply_at_once_on_postgres,
    changes_apply_at_once
);

/// A valid policy to break one field of.
fn policy(channel: &str) -> proto::Policy {
    proto::Policy {
        channel: channel.into(),
        shadow: false,
        thresholds: [("toxicity/insult".to_owned(), 0.7)].into(),
        label_actions: [
            (
                "toxicity/insult".to_owned(),
                proto::Decision::Timeout as i32,
            ),
            ("spam/spam".to_owned(), proto::Decision::Hold as i32),
        ]
        .into(),
        emotes: vec!["PepeLaugh".into(), "OMEGALUL".into()],
        exempt_roles: vec!["moderator".into()],
        escalation: Some(proto::Escalation {
            warn_first: true,
            first_timeout: Some(seconds(30)),
            max_timeout: Some(seconds(7200)),
            ban_after: 3,
            heat_half_life: Some(seconds(900)),
            memory_half_life: Some(seconds(86_400)),
        }),
        model_enabled: true,
        classify_actions: proto::ClassifyActions::Send as i32,
        review: Some(proto::ReviewPolicy {
            ttl: Some(seconds(120)),
            on_expiry: proto::ReviewExpiry::Hide as i32,
            hide_while_pending: true,
        }),
        notices: Some(proto::Notices {
            warn: "{nick}: {reason}. {appeal}".into(),
            hide: String::new(),
            timeout: "muted {duration}: {reason}".into(),
            ban: "banned: {reason}; you wrote {{{text}}}".into(),
            appeal: "quote {action_id}".into(),
            min_interval: Some(seconds(30)),
        }),
        reputation: Some(proto::ReputationPolicy {
            trusted_above: 0.4,
            new_below: 0.1,
            trusted_margin: 0.05,
            new_margin: 0.1,
        }),
        harmful_labels: vec!["toxicity/insult".into()],
        raid: Some(proto::RaidPolicy {
            enabled: true,
            window: Some(seconds(20)),
            join_surge: 10,
            surge_users: 3,
            burst_users: 6,
            similarity: 0.85,
            min_length: 10,
            new_user: Some(seconds(300)),
            duration: Some(seconds(120)),
            action: proto::Decision::Timeout as i32,
            hold_links: false,
            threshold_drop: 0.2,
            subonly: true,
        }),
        transparency: Some(proto::TransparencyPolicy {
            public: true,
            nicks: proto::NickDisplay::Shown as i32,
            show_text: true,
            recent_actions: 20,
        }),
        links: Some(proto::LinkPolicy {
            allow_domains: vec!["destiny.gg".into(), "clips.example.com".into()],
        }),
        ..proto::Policy::default()
    }
}

async fn bad_input_writes_nothing(db: &Db) {
    let server = db.start(|_| {}).await;
    let mut admin = server.admin();
    let before = revision(&server).await;
    let history_before = server.store().await.ruleset_history().await.unwrap().len();

    let base = || phrase_rule("scam", &["free stuff", "cheap stuff"]);
    let with = |change: fn(&mut proto::Rule)| {
        let mut rule = base();
        change(&mut rule);
        Some(rule)
    };
    let kind = |kind: rule::Kind| {
        let mut rule = base();
        rule.kind = Some(kind);
        Some(rule)
    };
    let rate = |window: Option<prost_types::Duration>| {
        kind(rule::Kind::Rate(proto::RateRule {
            max_messages: 4,
            window,
        }))
    };
    let cases: Vec<(Option<proto::Rule>, &str)> = vec![
        (None, "rule: is required"),
        (
            with(|r| {
                r.kind = Some(rule::Kind::Phrase(proto::PhraseRule {
                    phrases: vec!["fine".into(), "(unclosed".into()],
                    syntax: proto::PhraseSyntax::Regex.into(),
                    anywhere: false,
                }))
            }),
            "rule.phrase.phrases[1]: invalid or too large pattern",
        ),
        (
            kind(rule::Kind::Caps(proto::CapsRule {
                max_ratio: 1.5,
                min_letters: 0,
            })),
            "rule.caps.max_ratio: 1.5 is outside [0, 1] (rule \"scam\")",
        ),
        (
            kind(rule::Kind::Caps(proto::CapsRule {
                max_ratio: f64::NAN,
                min_letters: 0,
            })),
            "rule.caps.max_ratio: NaN is outside [0, 1]",
        ),
        (
            with(|r| r.action = proto::Decision::Timeout.into()),
            "rule.duration: a timeout needs a duration above 0 (rule \"scam\")",
        ),
        (
            with(|r| {
                r.duration = Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 500,
                })
            }),
            "rule.duration: must be whole seconds",
        ),
        (
            with(|r| r.duration = Some(seconds(-5))),
            "rule.duration: must not be negative",
        ),
        (
            with(|r| r.duration = Some(seconds(400 * 86_400))),
            "rule.duration: 34560000 s is above the limit",
        ),
        (with(|r| r.action = 0), "rule.action: is required"),
        (
            with(|r| r.action = 42),
            "rule.action: 42 is not a modbot.v1.Decision",
        ),
        (
            with(|r| r.action = proto::Decision::Allow.into()),
            "rule.action: a rule cannot allow",
        ),
        (with(|r| r.mode = 0), "rule.mode: is required"),
        (with(|r| r.kind = None), "rule.kind: is required"),
        (
            with(|r| r.id = "x".repeat(300)),
            "rule.id: 300 bytes exceed",
        ),
        (
            with(|r| r.id = "a\nb".into()),
            "rule.id: must not contain control characters",
        ),
        (
            with(|r| r.description = "d".repeat(2000)),
            "rule.description: 2000 bytes exceed",
        ),
        (
            with(|r| {
                r.channel = "one".into();
                r.channels = vec!["two".into()];
            }),
            "rule.channels: set either channel or channels",
        ),
        (
            with(|r| r.exempt_roles = vec![String::new()]),
            "rule.exempt_roles[0]: must be 1 to 64 bytes",
        ),
        (
            kind(rule::Kind::Phrase(proto::PhraseRule {
                phrases: vec!["x".into(); 1001],
                syntax: proto::PhraseSyntax::Literal.into(),
                anywhere: false,
            })),
            "rule.phrase.phrases: 1001 entries exceed the limit of 1000",
        ),
        (
            kind(rule::Kind::Phrase(proto::PhraseRule {
                phrases: vec!["y".repeat(600)],
                syntax: proto::PhraseSyntax::Literal.into(),
                anywhere: false,
            })),
            "rule.phrase.phrases[0]: must be 1 to 512 bytes",
        ),
        (
            kind(rule::Kind::Phrase(proto::PhraseRule {
                phrases: vec![],
                syntax: proto::PhraseSyntax::Literal.into(),
                anywhere: false,
            })),
            "rule.phrase.phrases: must list at least one phrase",
        ),
        (
            kind(rule::Kind::Phrase(proto::PhraseRule {
                phrases: vec!["ok".into()],
                syntax: 0,
                anywhere: false,
            })),
            "rule.phrase.syntax: is required",
        ),
        (rate(None), "rule.rate.window: is required"),
        (
            rate(Some(prost_types::Duration {
                seconds: 2,
                nanos: 500_000_000,
            })),
            "rule.rate.window: must be whole seconds",
        ),
        (
            rate(Some(seconds(-1))),
            "rule.rate.window: must not be negative",
        ),
        (rate(Some(seconds(0))), "rule.rate.window: must be above 0"),
        (
            kind(rule::Kind::Link(proto::LinkRule {
                deny_domains: vec!["not a domain".into()],
                ..proto::LinkRule::default()
            })),
            "rule.link.deny_domains: `not a domain` is not a domain name",
        ),
        (
            kind(rule::Kind::Link(proto::LinkRule::default())),
            "rule.link: sets nothing to check",
        ),
        (
            kind(rule::Kind::Link(proto::LinkRule {
                max_repeats: 2,
                repeat_window: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 1,
                }),
                ..proto::LinkRule::default()
            })),
            "rule.link.repeat_window: must be whole seconds",
        ),
        (
            kind(rule::Kind::Profanity(proto::ProfanityRule {
                min_severity: "extreme".into(),
                categories: vec![],
            })),
            "rule.profanity.min_severity:",
        ),
        (
            kind(rule::Kind::Profanity(proto::ProfanityRule {
                min_severity: String::new(),
                categories: vec!["rude".into()],
            })),
            "rule.profanity.categories[0]:",
        ),
        (
            kind(rule::Kind::Repetition(proto::RepetitionRule {
                min_similarity: 2.0,
                ..proto::RepetitionRule::default()
            })),
            "rule.repetition.min_similarity: 2 is outside [0, 1]",
        ),
        (
            kind(rule::Kind::EmoteFlood(proto::EmoteFloodRule::default())),
            "rule.emote_flood: sets neither max_emotes nor max_ratio",
        ),
        (
            kind(rule::Kind::LongWord(proto::LongWordRule { max_length: 0 })),
            "rule.long_word.max_length: must be at least 1",
        ),
        (
            kind(rule::Kind::CharFlood(proto::CharFloodRule {
                max_non_ascii: 2_000_000,
                ..proto::CharFloodRule::default()
            })),
            "rule.char_flood.max_non_ascii: 2000000 is above the limit",
        ),
    ];
    for (rule, expected) in cases {
        let error = admin
            .upsert_rule(UpsertRuleRequest { rule })
            .await
            .expect_err(expected);
        assert_invalid_field(&error, expected);
        let named = !expected.starts_with("rule: ");
        assert!(
            !named || error.message().contains(" (rule \""),
            "the rule is named: {}",
            error.message()
        );
    }
    // A rule without an id is named as new.
    let mut unnamed = base();
    unnamed.id = String::new();
    unnamed.action = proto::Decision::Timeout.into();
    let error = admin.upsert_rule(upsert(unnamed)).await.unwrap_err();
    assert_eq!(
        error.message(),
        "rule.duration: a timeout needs a duration above 0 (new rule)"
    );

    let bad_policy = |change: fn(&mut proto::Policy)| {
        let mut p = policy("strims");
        change(&mut p);
        Some(p)
    };
    let policy_cases: Vec<(Option<proto::Policy>, &str)> = vec![
        (None, "policy: is required"),
        (
            bad_policy(|p| p.channel = String::new()),
            "policy.channel: is required",
        ),
        (
            bad_policy(|p| {
                p.thresholds.insert("toxicity/insult".into(), 1.5);
            }),
            "policy.thresholds[\"toxicity/insult\"]: 1.5 is outside [0, 1]",
        ),
        (
            bad_policy(|p| {
                p.thresholds.insert("toxicity/threat".into(), 0.5);
            }),
            "policy.thresholds[\"toxicity/threat\"]: the label has no action",
        ),
        (
            bad_policy(|p| {
                p.label_actions
                    .insert("spam/spam".into(), proto::Decision::Allow as i32);
            }),
            "policy.label_actions[\"spam/spam\"]: a label cannot allow",
        ),
        (
            bad_policy(|p| {
                p.label_actions.insert("spam/spam".into(), 0);
            }),
            "policy.label_actions[\"spam/spam\"]: is required",
        ),
        (
            bad_policy(|p| {
                p.label_actions
                    .insert("insult".into(), proto::Decision::Hide as i32);
            }),
            "policy.label_actions[\"insult\"]: a model label is named head/label",
        ),
        (
            bad_policy(|p| p.escalation = None),
            "policy.escalation: is required",
        ),
        (
            bad_policy(|p| p.escalation.as_mut().unwrap().first_timeout = Some(seconds(0))),
            "policy.escalation.first_timeout: must be at least 1",
        ),
        (
            bad_policy(|p| p.escalation.as_mut().unwrap().first_timeout = None),
            "policy.escalation.first_timeout: is required",
        ),
        (
            bad_policy(|p| p.escalation.as_mut().unwrap().max_timeout = Some(seconds(10))),
            "policy.escalation.max_timeout: must be at least escalation.first_timeout",
        ),
        (
            bad_policy(|p| {
                p.escalation.as_mut().unwrap().heat_half_life = Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 5,
                })
            }),
            "policy.escalation.heat_half_life: must be whole seconds",
        ),
        (
            bad_policy(|p| p.escalation.as_mut().unwrap().heat_half_life = Some(seconds(0))),
            "policy.escalation.heat_half_life: must be at least 1",
        ),
        (
            bad_policy(|p| p.escalation.as_mut().unwrap().memory_half_life = Some(seconds(0))),
            "policy.escalation.memory_half_life: must be at least 1",
        ),
        (
            bad_policy(|p| p.emotes.push("two words".into())),
            "policy.emotes[2]: `two words` is not an emote name (one word)",
        ),
        (
            bad_policy(|p| p.emotes = vec!["E".into(); 5001]),
            "policy.emotes: 5001 entries exceed the limit of 5000",
        ),
        (
            bad_policy(|p| p.exempt_roles.push("r".repeat(65))),
            "policy.exempt_roles[1]: must be 1 to 64 bytes",
        ),
        (
            bad_policy(|p| p.classify_actions = 9),
            "policy.classify_actions: 9 is not a ClassifyActions value",
        ),
        (
            bad_policy(|p| p.review.as_mut().unwrap().ttl = Some(seconds(0))),
            "policy.review.ttl: must be at least 1",
        ),
        (
            bad_policy(|p| p.review.as_mut().unwrap().on_expiry = 7),
            "policy.review.on_expiry: 7 is not a ReviewExpiry value",
        ),
        (
            bad_policy(|p| p.notices.as_mut().unwrap().warn = "hi {name}".into()),
            "policy.notices.warn: `{name}` is not a placeholder",
        ),
        (
            bad_policy(|p| p.notices.as_mut().unwrap().appeal = "{text}".into()),
            "policy.notices.appeal: `{text}` is not a placeholder",
        ),
        (
            bad_policy(|p| p.notices.as_mut().unwrap().ban = "x".repeat(513)),
            "policy.notices.ban: is longer than 512 characters",
        ),
        (
            bad_policy(|p| p.reputation.as_mut().unwrap().trusted_margin = 1.5),
            "policy.reputation.trusted_margin: 1.5 is outside [0, 1]",
        ),
        (
            bad_policy(|p| p.reputation.as_mut().unwrap().new_margin = f64::NAN),
            "policy.reputation.new_margin: NaN is outside [0, 1]",
        ),
        (
            bad_policy(|p| p.reputation.as_mut().unwrap().new_below = 0.5),
            "policy.reputation.new_below: must be at most reputation.trusted_above",
        ),
        (
            bad_policy(|p| p.harmful_labels.push("spam/nope".into())),
            "policy.harmful_labels[1]: `spam/nope` has no action in label_actions",
        ),
        (
            bad_policy(|p| p.raid.as_mut().unwrap().similarity = 0.2),
            "policy.raid.similarity: 0.2 is outside [0.5, 1]",
        ),
        (
            bad_policy(|p| p.transparency.as_mut().unwrap().recent_actions = 501),
            "policy.transparency.recent_actions: 501 is outside [1, 500]",
        ),
        (
            bad_policy(|p| {
                let links = p.links.as_mut().unwrap();
                links.allow_domains.push("not a domain".into());
            }),
            "policy.links.allow_domains: `not a domain` is not a domain name",
        ),
        (
            bad_policy(|p| {
                p.links.as_mut().unwrap().allow_domains =
                    (0..1001).map(|i| format!("d{i}.example")).collect();
            }),
            "policy.links.allow_domains: 1001 domains; at most 1000",
        ),
        (
            bad_policy(|p| p.transparency.as_mut().unwrap().nicks = 7),
            "policy.transparency.nicks: 7 is not a NickDisplay value (HASHED or SHOWN)",
        ),
        (
            bad_policy(|p| p.raid.as_mut().unwrap().surge_users = 1),
            "policy.raid.surge_users: 1 is outside [2, 10000]",
        ),
        (
            bad_policy(|p| p.raid.as_mut().unwrap().window = Some(seconds(0))),
            "policy.raid.window: 0 is outside [1, 3600]",
        ),
        (
            bad_policy(|p| p.raid.as_mut().unwrap().action = proto::Decision::Allow as i32),
            "policy.raid.action: must act",
        ),
        (
            bad_policy(|p| p.raid.as_mut().unwrap().action = 42),
            "policy.raid.action: 42 is not a modbot.v1.Decision",
        ),
    ];
    for (policy, expected) in policy_cases {
        let error = admin
            .set_policy(SetPolicyRequest { policy })
            .await
            .expect_err(expected);
        assert_invalid_field(&error, expected);
    }

    let others = [
        admin
            .delete_rule(DeleteRuleRequest { id: String::new() })
            .await
            .unwrap_err(),
        admin
            .get_policy(GetPolicyRequest {
                channel: String::new(),
            })
            .await
            .unwrap_err(),
        admin
            .list_rules(ListRulesRequest {
                channel: "c".repeat(300),
                include_global: false,
            })
            .await
            .unwrap_err(),
    ];
    let expected = [
        "id: is required",
        "channel: is required",
        "channel: 300 bytes",
    ];
    for (error, expected) in others.iter().zip(expected) {
        assert_invalid_field(error, expected);
    }

    assert_eq!(revision(&server).await, before, "nothing was written");
    let history = server.store().await.ruleset_history().await.unwrap();
    assert_eq!(history.len(), history_before, "no history either");
    server.stop().await.expect("clean stop");
}

on_both_backends!(
    bad_input_on_sqlite,
    bad_input_on_postgres,
    bad_input_writes_nothing
);

async fn policies_round_trip(db: &Db) {
    let server = db.start(|_| {}).await;
    let mut admin = server.admin();
    let get = |channel: &str| GetPolicyRequest {
        channel: channel.into(),
    };

    // No policy of its own: the default, from the built-in rules file.
    let default = admin
        .get_policy(get("destinygg"))
        .await
        .unwrap()
        .into_inner();
    assert!(default.is_default);
    assert_eq!(default.channel, "destinygg");
    assert_eq!(default.revision, 1);
    assert!(default.model_enabled);
    assert_eq!(
        default.label_actions,
        [
            ("toxicity/insult".to_owned(), proto::Decision::Hide as i32),
            (
                "toxicity/threat".to_owned(),
                proto::Decision::Timeout as i32
            ),
            ("toxicity/sexual".to_owned(), proto::Decision::Hide as i32),
            (
                "toxicity/identity_attack".to_owned(),
                proto::Decision::Hide as i32
            ),
            ("spam/spam".to_owned(), proto::Decision::Hold as i32),
            ("spam/promo".to_owned(), proto::Decision::Hold as i32),
        ]
        .into()
    );
    // The toxicity labels and chat promo have thresholds chosen for chat; e-mail spam keeps
    // the head's trained one.
    let mut overridden: Vec<&str> = default.thresholds.keys().map(String::as_str).collect();
    overridden.sort_unstable();
    assert_eq!(
        overridden,
        [
            "spam/promo",
            "toxicity/identity_attack",
            "toxicity/insult",
            "toxicity/sexual",
            "toxicity/threat"
        ]
    );
    assert!(default.thresholds.values().all(|t| (0.0..1.0).contains(t)));
    let escalation = default.escalation.unwrap();
    assert_eq!(escalation.first_timeout, Some(seconds(60)));
    assert_eq!(escalation.max_timeout, Some(seconds(86_400)));
    assert_eq!(escalation.ban_after, 4, "the shipped ladder ends in a ban");
    assert_eq!(escalation.memory_half_life, Some(seconds(7 * 86_400)));
    assert_eq!(
        default.reputation,
        Some(proto::ReputationPolicy {
            trusted_above: 0.5,
            new_below: 0.05,
            trusted_margin: 0.05,
            new_margin: 0.05,
        })
    );
    assert!(default.emotes.contains(&"PepeLaugh".to_owned()));
    let raid = default.raid.expect("the shipped raid mode");
    assert!(raid.enabled && raid.hold_links && !raid.subonly, "{raid:?}");
    assert_eq!(
        (raid.join_surge, raid.surge_users, raid.burst_users),
        (20, 4, 8)
    );
    assert_eq!(raid.action, proto::Decision::Hide as i32);
    assert_eq!(
        default.classify_actions,
        proto::ClassifyActions::Record as i32,
        "Classify verdicts are recorded, not sent, by default"
    );
    let star = admin.get_policy(get("*")).await.unwrap().into_inner();
    assert!(star.is_default);
    assert_eq!(star.channel, "*");
    assert_eq!(star.label_actions, default.label_actions);

    let mut wanted = policy("strims");
    wanted.shadow = true;
    let set = admin
        .set_policy(SetPolicyRequest {
            policy: Some(wanted.clone()),
        })
        .await
        .expect("set policy")
        .into_inner();
    assert_eq!(set.revision, 2);
    assert!(!set.is_default);
    assert!(set.updated_at.is_some());
    let got = admin.get_policy(get("strims")).await.unwrap().into_inner();
    assert_eq!(got, set, "what SetPolicy answers is what GetPolicy reads");
    let comparable = |mut p: proto::Policy| {
        p.updated_at = None;
        p.revision = 0;
        p
    };
    assert_eq!(comparable(got), wanted, "every field round-trips");
    // Applied at once: the channel is now in shadow mode, the others are not.
    let strims = decide(&server, "strims", "FREE NITRO here").await;
    assert_eq!(strims.decision, proto::Decision::Allow as i32);
    assert_eq!(strims.shadow_decision, proto::Decision::Timeout as i32);
    let elsewhere = decide(&server, "destinygg", "FREE NITRO here").await;
    assert_ne!(elsewhere.decision, proto::Decision::Allow as i32);

    // The model switched off keeps its labels, disabled.
    let mut off = policy("strims");
    off.model_enabled = false;
    let set = admin
        .set_policy(SetPolicyRequest {
            policy: Some(off.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.revision, 3);
    assert_eq!(comparable(set), off);

    // Unspecified is the default, RECORD.
    let mut unspecified = policy("strims");
    unspecified.classify_actions = proto::ClassifyActions::Unspecified as i32;
    let set = admin
        .set_policy(SetPolicyRequest {
            policy: Some(unspecified),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.classify_actions, proto::ClassifyActions::Record as i32);

    // A client from before strikes and reputation: an unset memory half-life is a week, an
    // unset reputation table moves no threshold.
    let mut older = policy("strims");
    older.escalation.as_mut().unwrap().memory_half_life = None;
    older.reputation = None;
    let set = admin
        .set_policy(SetPolicyRequest {
            policy: Some(older),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        set.escalation.unwrap().memory_half_life,
        Some(seconds(7 * 86_400))
    );
    let reputation = set.reputation.unwrap();
    assert_eq!(
        (reputation.trusted_margin, reputation.new_margin),
        (0.0, 0.0)
    );

    // The default policy itself.
    let mut new_default = policy("*");
    new_default.label_actions.clear();
    new_default.thresholds.clear();
    new_default.harmful_labels.clear();
    new_default.model_enabled = false;
    admin
        .set_policy(SetPolicyRequest {
            policy: Some(new_default),
        })
        .await
        .unwrap();
    let default = admin
        .get_policy(get("destinygg"))
        .await
        .unwrap()
        .into_inner();
    assert!(default.is_default && !default.model_enabled);
    assert_eq!(default.revision, 6);
    assert_eq!(default.escalation.unwrap().first_timeout, Some(seconds(30)));
    let history = server.store().await.ruleset_history().await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (
            last.revision,
            last.target,
            last.target_id.as_str(),
            last.change
        ),
        (6, ChangeTarget::Policy, "*", Change::Upsert)
    );
    server.stop().await.expect("clean stop");
}

on_both_backends!(
    policies_round_trip_on_sqlite,
    policies_round_trip_on_postgres,
    policies_round_trip
);

async fn replicas_follow_each_other(db: &Db) {
    let one = db.start(|_| {}).await;
    let two = db.start(|_| {}).await;
    assert_eq!(
        revision(&two).await,
        1,
        "the second replica did not seed again"
    );

    one.admin()
        .upsert_rule(upsert(phrase_rule("replicated", &["orange submarine"])))
        .await
        .expect("upsert on one");
    eventually("the other replica applies the new rule", || async {
        fired(&two, "an orange submarine").await == ["replicated"]
    })
    .await;

    two.admin()
        .delete_rule(DeleteRuleRequest {
            id: "replicated".into(),
        })
        .await
        .expect("delete on two");
    eventually("the first replica drops the deleted rule", || async {
        fired(&one, "an orange submarine").await.is_empty()
    })
    .await;

    let mut shadowed = policy("destinygg");
    shadowed.shadow = true;
    one.admin()
        .set_policy(SetPolicyRequest {
            policy: Some(shadowed),
        })
        .await
        .expect("set policy on one");
    eventually("the other replica applies the new policy", || async {
        let verdict = decide(&two, "destinygg", "FREE NITRO here").await;
        verdict.decision == proto::Decision::Allow as i32
            && verdict.shadow_decision == proto::Decision::Timeout as i32
    })
    .await;
    one.stop().await.expect("clean stop");
    two.stop().await.expect("clean stop");
}

on_both_backends!(
    replicas_follow_each_other_on_sqlite,
    replicas_follow_each_other_on_postgres,
    replicas_follow_each_other
);

async fn concurrent_upserts(db: &Db) {
    let server = Arc::new(db.start(|_| {}).await);
    const TASKS: usize = 6;
    const EACH: usize = 4;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let mut admin = server.admin();
            let mut revisions = Vec::new();
            for i in 0..EACH {
                // Half the tasks fight over one id, the others write their own.
                let id = if task % 2 == 0 {
                    "contended".to_owned()
                } else {
                    format!("rule-{task}-{i}")
                };
                let stored = admin
                    .upsert_rule(upsert(phrase_rule(&id, &[&format!("word{task}x{i}")])))
                    .await
                    .expect("concurrent upsert")
                    .into_inner();
                revisions.push(stored.revision);
            }
            revisions
        }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.extend(task.await.unwrap());
    }
    revisions.sort_unstable();
    let expected: Vec<u64> = (2..2 + (TASKS * EACH) as u64).collect();
    assert_eq!(
        revisions, expected,
        "every upsert got a revision of its own"
    );
    let last = *expected.last().unwrap();
    assert_eq!(revision(&server).await, last);

    let history = server.store().await.ruleset_history().await.unwrap();
    let mut seen: Vec<u64> = history.iter().map(|h| h.revision).collect();
    seen.dedup();
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "every revision is in the history"
    );
    assert_eq!(
        history
            .iter()
            .filter(|h| h.target_id == "contended")
            .count(),
        TASKS / 2 * EACH,
        "no lost update"
    );
    // The contended rule holds the last write; the engine agrees with the database.
    let contended = history
        .iter()
        .rfind(|h| h.target_id == "contended")
        .unwrap();
    let phrase = contended
        .spec
        .as_deref()
        .unwrap()
        .split('"')
        .find(|s| s.starts_with("word"))
        .unwrap()
        .to_owned();
    assert_eq!(fired(&server, &phrase).await, ["contended"]);
    let server = Arc::into_inner(server).expect("every task is done");
    server.stop().await.expect("clean stop");
}

on_both_backends!(
    concurrent_upserts_on_sqlite,
    concurrent_upserts_on_postgres,
    concurrent_upserts
);

async fn replicas_starting_together_seed_once(db: &Db) {
    let rules = vec![("r".to_owned(), "id = \"r\"".to_owned())];
    let policies = vec![("*".to_owned(), "shadow = false".to_owned())];
    let stores = [db.store().await, db.store().await, db.store().await];
    let seeds = futures_join(&stores, &rules, &policies).await;
    assert_eq!(
        seeds.iter().filter(|s| s.is_some()).count(),
        1,
        "exactly one seeds: {seeds:?}"
    );
    let store = &stores[0];
    assert_eq!(store.ruleset_revision().await.unwrap(), 1);
    assert_eq!(store.ruleset_history().await.unwrap().len(), 2);
    let loaded = store.load_ruleset().await.unwrap();
    assert_eq!(loaded.revision, 1);
    assert_eq!(loaded.rules.len(), 1);
    assert_eq!(loaded.policies[0].channel, "*");
    for store in stores {
        store.close().await;
    }
}

async fn futures_join(
    stores: &[Store; 3],
    rules: &[(String, String)],
    policies: &[(String, String)],
) -> Vec<Option<u64>> {
    let (a, b, c) = tokio::join!(
        stores[0].seed_ruleset(rules, policies, "a"),
        stores[1].seed_ruleset(rules, policies, "b"),
        stores[2].seed_ruleset(rules, policies, "c"),
    );
    vec![a.unwrap(), b.unwrap(), c.unwrap()]
}

on_both_backends!(
    seed_once_on_sqlite,
    seed_once_on_postgres,
    replicas_starting_together_seed_once
);

/// `BacktestRule`: a rule as it would be saved, tried on the channel's remembered messages,
/// storing nothing; what had been decided about each match comes from the audit log.
async fn backtests(db: &Db) {
    let server = db.start(|_| {}).await;
    let mut admin = server.admin();
    // A stored rule hides scam links; the candidate is about giveaways.
    let mut scam = phrase_rule("no-scam", &["scam link"]);
    scam.channel = "bt".into();
    admin.upsert_rule(upsert(scam)).await.expect("UpsertRule");
    let said = |id: &str, user: &str, text: &str, channel: &str| {
        let mut message = chat_message(id, user, text);
        message.channel = channel.into();
        message
    };
    let verdicts = server
        .moderation()
        .classify(ClassifyRequest {
            messages: vec![
                said("m1", "u1", "Giveaway and a scam link", "bt"),
                said("m2", "u2", "the giveaway is tonight", "bt"),
                said("m3", "u3", "hello chat", "bt"),
                said("m4", "u4", "a giveaway elsewhere", "other"),
            ],
            options: None,
        })
        .await
        .expect("classify")
        .into_inner()
        .verdicts;
    assert_eq!(verdicts[0].decision, proto::Decision::Hide as i32);
    assert_eq!(verdicts[1].decision, proto::Decision::Allow as i32);
    let before = revision(&server).await;

    let mut candidate = phrase_rule("giveaways", &["giveaway"]);
    candidate.mode = proto::RuleMode::Shadow.into();
    let request = |rule: proto::Rule, channel: &str, last: u32| proto::BacktestRuleRequest {
        rule: Some(rule),
        channel: channel.into(),
        last,
    };
    let tried = admin
        .backtest_rule(request(candidate.clone(), "bt", 0))
        .await
        .expect("BacktestRule")
        .into_inner();
    assert_eq!(
        (
            tried.searched,
            tried.matched,
            tried.allowed_before,
            tried.failed
        ),
        (3, 2, 1, 0),
        "{tried:?}"
    );
    let newest = &tried.matches[0];
    assert_eq!(
        (newest.message_id.as_str(), newest.user_id.as_str()),
        ("m2", "u2")
    );
    assert_eq!(
        newest.text, "the giveaway is tonight",
        "the normalised text"
    );
    assert_eq!(newest.decided, proto::Decision::Allow as i32);
    assert!(newest.allowed_before && !newest.enforced);
    assert_eq!(
        newest.reason.as_ref().map(|r| r.rule_id.as_str()),
        Some("giveaways")
    );
    let oldest = &tried.matches[1];
    assert_eq!(oldest.message_id, "m1");
    assert_eq!(oldest.decided, proto::Decision::Hide as i32);
    assert!(oldest.enforced && !oldest.allowed_before, "{oldest:?}");
    assert!(tried.since.is_some());

    // `last` takes the newest messages only.
    let last_one = admin
        .backtest_rule(request(candidate.clone(), "bt", 1))
        .await
        .expect("BacktestRule")
        .into_inner();
    assert_eq!(
        (last_one.searched, last_one.matched),
        (1, 0),
        "{last_one:?}"
    );

    // A candidate with a stored rule's id is tried in its place.
    let mut edited = phrase_rule("no-scam", &["hello"]);
    edited.channel = "bt".into();
    let replaced = admin
        .backtest_rule(request(edited, "bt", 0))
        .await
        .expect("BacktestRule")
        .into_inner();
    assert_eq!(
        replaced
            .matches
            .iter()
            .map(|m| m.message_id.as_str())
            .collect::<Vec<_>>(),
        ["m3"]
    );

    // Nothing was stored.
    assert_eq!(revision(&server).await, before);
    assert!(
        list(&server, "", false)
            .await
            .rules
            .iter()
            .all(|r| r.id != "giveaways")
    );

    // Bad requests name the field; rules the history cannot replay say why.
    let refused = admin
        .backtest_rule(request(candidate.clone(), "", 0))
        .await
        .unwrap_err();
    assert_invalid_field(&refused, "channel");
    let refused = admin
        .backtest_rule(proto::BacktestRuleRequest {
            rule: None,
            channel: "bt".into(),
            last: 0,
        })
        .await
        .unwrap_err();
    assert_invalid_field(&refused, "rule");
    let refused = admin
        .backtest_rule(request(phrase_rule("empty", &[]), "bt", 0))
        .await
        .unwrap_err();
    assert_invalid_field(&refused, "rule.phrase.phrases");
    let mut caps = phrase_rule("shout", &[]);
    caps.kind = Some(rule::Kind::Caps(proto::CapsRule {
        max_ratio: 0.5,
        min_letters: 0,
    }));
    let refused = admin
        .backtest_rule(request(caps, "bt", 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("capital letters"), "{refused:?}");
    let mut elsewhere = candidate;
    elsewhere.channel = "other".into();
    let refused = admin
        .backtest_rule(request(elsewhere, "bt", 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}

on_both_backends!(backtests_on_sqlite, backtests_on_postgres, backtests);

/// A stored rule set this version cannot compile (as a newer replica might write) is refused,
/// and the rule set in force is kept; the next good revision applies.
#[tokio::test]
async fn a_rule_set_that_does_not_compile_is_not_applied() {
    use modbot::infra::inference::{Description, ModelStatus, Scorer};
    use modbot::infra::users::{SharedState, StateOptions};
    use modbot::service::moderate::Moderator;
    use modbot::service::ruleset::{ReloadError, RuleSource, read_rules_file};

    let db = Db::sqlite();
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let file = read_rules_file(&common::test_config(dir.path())).expect("the built-in rules");
    let (source, rules) = RuleSource::open(store.clone(), &file).await.expect("open");
    let moderator = Moderator::new(
        modbot::engine::decision::Engine::new(rules),
        SharedState::memory(StateOptions::default()),
        Scorer::idle(ModelStatus::Off, Description::default()),
    );
    assert_eq!(source.applied_revision().await, 1);
    assert_eq!(
        source.refresh(&moderator).await.unwrap(),
        None,
        "nothing new"
    );

    let before = moderator.engine();
    store
        .upsert_rule(
            "scam-giveaway",
            "id = \"scam-giveaway\"\nkind = \"hologram\"\naction = \"hide\"\n",
            "a newer replica",
        )
        .await
        .unwrap();
    let error = source
        .refresh(&moderator)
        .await
        .expect_err("does not compile");
    assert!(
        matches!(&error, ReloadError::Rules(e) if e.to_string().contains("`hologram` is not a rule kind")),
        "{error}"
    );
    assert!(
        Arc::ptr_eq(&before, &moderator.engine()),
        "the old rule set is kept"
    );
    assert_eq!(source.applied_revision().await, 1);
    assert_eq!(
        source.refresh(&moderator).await.unwrap(),
        None,
        "a revision that failed is not retried"
    );

    store.delete_rule("scam-giveaway", "test").await.unwrap();
    assert_eq!(source.refresh(&moderator).await.unwrap(), Some(3));
    assert_eq!(source.applied_revision().await, 3);
    let engine = moderator.engine();
    assert!(
        engine
            .rules()
            .rules()
            .iter()
            .all(|r| r.id != "scam-giveaway")
    );
    assert_eq!(engine.rules().rules().len(), 20);
    store.close().await;
    db.finish().await;
}
