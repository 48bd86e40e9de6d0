//! `modbot train` and `modbot eval` as a user runs them, on small labelled files written by
//! the test (the real datasets are trained on by `scripts/test`'s release run): heads written
//! and loadable, deterministic, metrics recorded and checked, reports, comparisons, feedback
//! folded in from the database, and bad input refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use modbot::infra::model::heads::Heads;
use modbot::infra::store::{ConnectOptions, Feedback, FeedbackSource, Store};

/// Set by `.ci/run`: a missing model is then a failure, not a skip.
const REQUIRE_MODEL_ENV: &str = "MODBOT_TEST_REQUIRE_MODEL";

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

fn have_model(test: &str) -> bool {
    if modbot::infra::model::fetch::is_present(&model_dir()) {
        return true;
    }
    assert!(
        std::env::var_os(REQUIRE_MODEL_ENV).is_none(),
        "{REQUIRE_MODEL_ENV} is set but there is no model (run `modbot fetch-model`)"
    );
    eprintln!("SKIPPED {test}: no model (run `modbot fetch-model`)");
    false
}

/// The binary with a configuration pointing at `work` (its data dir) and the real encoder.
fn modbot(work: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_modbot"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("MODBOT_") {
            command.env_remove(name);
        }
    }
    command
        .env_remove("RUST_LOG")
        .env("MODBOT_DATA_DIR", work)
        .env("MODBOT_MODEL_DIR", model_dir());
    command
}

fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().expect("run modbot");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

const INSULTS: &[&str] = &[
    "you are a complete idiot",
    "shut up you stupid moron",
    "what an ignorant fool you are",
    "you pathetic loser, nobody likes you",
    "go away you worthless clown",
    "you are dumb as a rock",
    "only an imbecile would write this garbage",
    "you disgusting little troll",
];
const CLEAN: &[&str] = &[
    "thanks for the stream today",
    "the weather is lovely this morning",
    "I think the second option is better",
    "what time does the match start",
    "good luck on the exam tomorrow",
    "that recipe looks delicious",
    "the new update fixed my problem",
    "see you all next week",
];

/// Lines of the toxicity head's other labels: (dataset, label, positives).
const OTHER_LABELS: &[(&str, &str, &[&str])] = &[
    (
        "threat",
        "threat",
        &[
            "i will find you and break your legs",
            "someone should stab that streamer",
            "i know where you live and i am coming",
            "say that again and i will hurt you",
        ],
    ),
    (
        "sexual",
        "sexual",
        &[
            "send me nudes right now",
            "show us your body in a bikini",
            "i want to sleep with you tonight",
            "take your top off for the stream",
        ],
    ),
    (
        "identity",
        "identity_attack",
        &[
            "those immigrants are vermin",
            "women are too stupid to vote",
            "gay people should not have rights",
            "go back to your own country",
        ],
    ),
];

/// Writes `insults/{train,test}.jsonl`, `sentiment/{train,test}.jsonl` and the toxicity
/// head's other labels' files (threat, sexual, identity) under `dir`.
fn write_datasets(dir: &Path) {
    let line = |id: String, text: &str, label: &str| {
        serde_json::json!({"id": id, "text": text, "label": label, "source": "test"}).to_string()
    };
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (round, prefix) in ["", "honestly, ", "lol ", "well "].iter().enumerate() {
        for (i, text) in INSULTS.iter().enumerate() {
            let target = if round == 3 { &mut test } else { &mut train };
            target.push(line(
                format!("i{round}-{i}"),
                &format!("{prefix}{text}"),
                "insult",
            ));
        }
        for (i, text) in CLEAN.iter().enumerate() {
            let target = if round == 3 { &mut test } else { &mut train };
            target.push(line(
                format!("c{round}-{i}"),
                &format!("{prefix}{text}"),
                "clean",
            ));
        }
    }
    std::fs::create_dir_all(dir.join("insults")).unwrap();
    std::fs::write(dir.join("insults/train.jsonl"), train.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("insults/test.jsonl"), test.join("\n") + "\n").unwrap();
    // The insult label trains on the forum comments and chat lines together (here the same).
    std::fs::create_dir_all(dir.join("insult_chat")).unwrap();
    std::fs::write(dir.join("insult_chat/train.jsonl"), train.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("insult_chat/test.jsonl"), test.join("\n") + "\n").unwrap();

    for (dataset, label, positives) in OTHER_LABELS {
        let mut train = Vec::new();
        let mut test = Vec::new();
        for (round, prefix) in ["", "lol ", "ok ", "fr "].iter().enumerate() {
            let target = if round == 3 { &mut test } else { &mut train };
            for (i, text) in positives.iter().enumerate() {
                target.push(line(
                    format!("p{round}-{i}"),
                    &format!("{prefix}{text}"),
                    label,
                ));
            }
            for (i, text) in CLEAN.iter().chain(INSULTS).enumerate() {
                target.push(line(
                    format!("n{round}-{i}"),
                    &format!("{prefix}{text}"),
                    "clean",
                ));
            }
        }
        std::fs::create_dir_all(dir.join(dataset)).unwrap();
        std::fs::write(
            dir.join(dataset).join("train.jsonl"),
            train.join("\n") + "\n",
        )
        .unwrap();
        std::fs::write(dir.join(dataset).join("test.jsonl"), test.join("\n") + "\n").unwrap();
    }

    let rated = [
        ("I love this, it is wonderful", "positive", 0.9),
        ("what a great and happy day", "positive", 0.8),
        ("this is terrible and I hate it", "negative", -0.9),
        ("awful, sad and disappointing", "negative", -0.7),
        ("the meeting is at noon", "neutral", 0.0),
        ("the box contains three items", "neutral", 0.0),
    ];
    let mut train = Vec::new();
    let mut test = Vec::new();
    let prefixes = ["", "so ", "today ", "well ", "really, ", "honestly "];
    for (round, prefix) in prefixes.iter().enumerate() {
        for (i, (text, label, compound)) in rated.iter().enumerate() {
            let target = if round == 5 { &mut test } else { &mut train };
            target.push(
                serde_json::json!({"id": format!("s{round}-{i}"), "text": format!("{prefix}{text}"),
                    "label": label, "source": "test", "vader_compound": compound})
                .to_string(),
            );
        }
    }
    std::fs::create_dir_all(dir.join("sentiment")).unwrap();
    std::fs::write(dir.join("sentiment/train.jsonl"), train.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("sentiment/test.jsonl"), test.join("\n") + "\n").unwrap();
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("heads.json")).unwrap()).unwrap()
}

#[test]
fn train_writes_deterministic_calibrated_heads_that_eval_reproduces() {
    if !have_model("train_writes_deterministic_calibrated_heads_that_eval_reproduces") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("datasets");
    write_datasets(&data);
    let first = work.path().join("heads-a");
    let second = work.path().join("heads-b");
    // The second run caches its embeddings elsewhere (--cache-dir): it finds none of the
    // first run's there, so it reads from its cache only what it wrote itself (a text set
    // embedded twice in one run), as often as the first did, and writes the same bytes.
    let elsewhere = work.path().join("shared-cache");
    let mut hits = Vec::new();
    for (out, cache) in [(&first, None), (&second, Some(&elsewhere))] {
        let mut command = modbot(
            work.path(),
            &[
                "train",
                "--heads",
                "toxicity,sentiment",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        command.args(["--validation-fraction", "0.25"]);
        if let Some(cache) = cache {
            command.args(["--cache-dir", cache.to_str().unwrap()]);
        }
        let (output, _, stderr) = run(&mut command);
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.contains("training head `toxicity`"), "{stderr}");
        hits.push(stderr.matches("from the cache").count());
    }
    assert_eq!(
        hits[0], hits[1],
        "the second run did not read the first run's cache"
    );
    let cached = std::fs::read_dir(&elsewhere).unwrap().count();
    assert!(cached > 0, "the embeddings were cached in --cache-dir");
    // The same data and seed give the same bytes.
    for file in [
        "heads.json",
        "toxicity.safetensors",
        "sentiment.safetensors",
    ] {
        assert_eq!(
            std::fs::read(first.join(file)).unwrap(),
            std::fs::read(second.join(file)).unwrap(),
            "{file} differs between two runs"
        );
    }
    // The service can load what was written, and the manifest says how it was made.
    let heads = Heads::load(&first, 384).expect("the heads load");
    assert_eq!(
        heads.label_names(),
        [
            "toxicity/insult",
            "toxicity/threat",
            "toxicity/sexual",
            "toxicity/identity_attack",
            "sentiment/negative",
            "sentiment/neutral",
            "sentiment/positive"
        ]
    );
    let threshold = heads.threshold("toxicity/insult").unwrap();
    assert!((0.0..=1.0).contains(&threshold), "{threshold}");
    let written = manifest(&first);
    let toxicity = &written["heads"][0];
    assert_eq!(toxicity["per_label"], true, "a network per label");
    for (key, label) in [
        ("insults/test.roc_auc", "insult"),
        ("threat/test.roc_auc", "threat"),
        ("sexual/test.roc_auc", "sexual"),
        ("identity/test.roc_auc", "identity_attack"),
    ] {
        let auc = toxicity["metrics"][key].as_f64().unwrap();
        assert!(auc > 0.9, "the toy {label} lines are easy: {key} {auc}");
        let threshold = heads.threshold(&format!("toxicity/{label}")).unwrap();
        assert!((0.0..=1.0).contains(&threshold), "{label}: {threshold}");
    }
    let insult = &toxicity["training"]["insult"];
    assert_eq!(
        insult["train_examples"].as_u64().unwrap()
            + insult["validation_examples"].as_u64().unwrap(),
        48
    );
    // The threat label learns from its own file and, as negatives, from the other tasks'.
    assert_eq!(
        toxicity["training"]["threat"]["extra_negatives"]["datasets"],
        serde_json::json!(["sentiment", "insults"])
    );
    assert_eq!(
        insult["train_file_sha256"].as_str().unwrap(),
        modbot::infra::model::fetch::sha256_file(&data.join("insult_chat/train.jsonl")).unwrap()
    );
    assert!(
        written["heads"][1]["metrics"]["sentiment/test.macro_f1"]
            .as_f64()
            .unwrap()
            > 0.5
    );
    // An insult scores above the threshold, a pleasant line below it.
    let (encoder, _) = modbot::tools::datasets::load_encoder(&model_dir(), None).unwrap();
    let texts =
        modbot::tools::datasets::embed::normalized(&["you stupid idiot", "have a nice evening"]);
    let embedded = encoder.embed(&[&texts[0], &texts[1]]).unwrap();
    let score = |i: usize| {
        let links = modbot::engine::rules::lookalike::link_signals(&texts[i]);
        heads.score(&embedded[i], &heads.lexical(&texts[i], &links))[0]
    };
    let (rude, kind) = (score(0), score(1));
    assert!(
        rude > threshold as f32 && kind < threshold as f32,
        "{rude} {kind}"
    );

    // eval reproduces the recorded metrics, prints JSON with the baselines, writes a report.
    let report = work.path().join("report");
    let (output, stdout, stderr) = run(modbot(
        work.path(),
        &[
            "eval",
            "--heads-dir",
            first.to_str().unwrap(),
            "--json",
            "--check",
            "--report",
        ],
    )
    .arg(&report));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("reproduced within the tolerance"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("eval --json prints JSON");
    let sets: Vec<&str> = json["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["set"].as_str().unwrap())
        .collect();
    assert_eq!(
        sets,
        [
            "insult_chat/test",
            "insults/test",
            "threat/test",
            "sexual/test",
            "identity/test",
            "sentiment/test"
        ]
    );
    let insult_models = json["sets"][0]["models"].as_array().unwrap();
    assert_eq!(insult_models.len(), 2, "the heads and the n-gram baseline");
    assert!(insult_models[1][0].as_str().unwrap().contains("n-gram"));
    assert_eq!(
        json["sets"][5]["models"].as_array().unwrap().len(),
        3,
        "heads + 2 VADER"
    );
    let markdown = std::fs::read_to_string(report.join("README.md")).unwrap();
    assert!(markdown.contains("## insults/test") && markdown.contains("roc-insults-test.svg"));
    let svg = std::fs::read_to_string(report.join("roc-insults-test.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));

    // A recorded metric that does not reproduce fails the check, naming it.
    let mut tampered = manifest(&first);
    tampered["heads"][0]["metrics"]["insults/test.roc_auc"] = serde_json::json!(0.5);
    std::fs::write(first.join("heads.json"), tampered.to_string()).unwrap();
    let (output, _, stderr) = run(&mut modbot(
        work.path(),
        &[
            "eval",
            "--heads-dir",
            first.to_str().unwrap(),
            "--check",
            "--no-baselines",
        ],
    ));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("check failed: toxicity insults/test.roc_auc: recorded 0.5000"),
        "{stderr}"
    );

    // --compare shows both side by side with the differences.
    let (output, stdout, stderr) = run(&mut modbot(
        work.path(),
        &[
            "eval",
            "--no-baselines",
            "--dataset",
            "insults",
            "--compare",
            first.to_str().unwrap(),
            second.to_str().unwrap(),
        ],
    ));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("| old (") && stdout.contains("| new ("),
        "{stdout}"
    );
    assert!(stdout.contains("new − old: f1 +0.0000"), "{stdout}");

    // A peer's decisions on the dataset splits are a column beside the heads: it flags every
    // second insult and nothing else, so precision 1, recall a half, no false positive.
    let test_ids: Vec<(String, bool)> = std::fs::read_to_string(data.join("insults/test.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v["label"] == "insult"))
        .collect();
    let peer_lines: Vec<String> = test_ids
        .iter()
        .enumerate()
        .map(|(i, (id, insult))| {
            let acted = *insult && i % 2 == 0;
            serde_json::json!({"set": "insults/test", "id": id, "acted": acted,
                "score": if acted { 0.9 } else { 0.2 }, "peer": "toy peer"})
            .to_string()
        })
        .collect();
    let peer = work.path().join("peer.jsonl");
    std::fs::write(&peer, peer_lines.join("\n") + "\n").unwrap();
    let (output, stdout, stderr) = run(modbot(
        work.path(),
        &["eval", "--no-baselines", "--json", "--heads-dir"],
    )
    .arg(&first)
    .args(["--dataset", "insults", "--peer"])
    .arg(&peer));
    assert!(output.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let models = json["sets"][0]["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "the heads and the peer: {models:?}");
    assert_eq!(models[1][0], "peer: toy peer");
    let flagged = test_ids
        .iter()
        .enumerate()
        .filter(|(i, (_, insult))| *insult && i % 2 == 0)
        .count();
    let insults = test_ids.iter().filter(|(_, insult)| *insult).count();
    let confusion = &models[1][1]["confusion"];
    assert_eq!(
        (confusion["tp"].as_u64(), confusion["fp"].as_u64()),
        (Some(flagged as u64), Some(0)),
        "{confusion}"
    );
    assert_eq!(confusion["fn_"].as_u64(), Some((insults - flagged) as u64));
    // A peer file that leaves an example of a covered set undecided is refused, naming it.
    std::fs::write(&peer, peer_lines[1..].join("\n") + "\n").unwrap();
    let (output, _, stderr) = run(modbot(
        work.path(),
        &["eval", "--no-baselines", "--dataset", "insults", "--peer"],
    )
    .arg(&peer)
    .arg("--heads-dir")
    .arg(&first));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no decision for `{}` of insults/test",
            test_ids[0].0
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn feedback_in_the_database_is_folded_into_training() {
    if !have_model("feedback_in_the_database_is_folded_into_training") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    write_datasets(&work.path().join("datasets"));
    let db = work.path().join("modbot.db");
    let url = format!("sqlite://{}", db.display());
    let store = Store::connect(
        &url,
        &ConnectOptions {
            max_connections: 1,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let feedback = [
        ("f1", "toxicity/insult", "ur such a bot lmao get rekt", true),
        ("f2", "toxicity/insult", "touch grass nerd", true),
        (
            "f3",
            "toxicity/insult",
            "you are a clown (said with love)",
            false,
        ),
        ("f4", "spam/spam", "buy followers cheap", true),
        // A rule's action overturned: a negative of every binary label.
        ("f5", "benign", "gg that clutch was insane", false),
        // A mute seen in chat: harmful in no known way, taught to no label.
        ("f6", "unlabeled", "you know what you did", true),
    ];
    for (i, (id, label, text, positive)) in feedback.into_iter().enumerate() {
        let recorded = store
            .record_feedback(&Feedback {
                id: id.into(),
                created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(i as u64),
                channel: "destinygg".into(),
                user_id: format!("user{i}"),
                message_id: format!("m{i}"),
                text: text.into(),
                label: label.into(),
                positive,
                source: if positive {
                    FeedbackSource::ModeratorAction
                } else {
                    FeedbackSource::AppealOverturned
                },
                actor: "mod".into(),
                action: "timeout".into(),
            })
            .await
            .unwrap();
        assert!(recorded);
    }
    store.close().await;

    let out = work.path().join("heads");
    let (output, _, stderr) = run(modbot(
        work.path(),
        &[
            "train",
            "--heads",
            "toxicity",
            "--with-feedback",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .env("MODBOT_DATABASE_URL", &url));
    assert!(output.status.success(), "{stderr}");
    // Insult: three toxicity examples (two positive, one negative) and the benign one; the spam
    // one has no head here, the unlabeled one teaches nothing.
    assert!(stderr.contains("4 from feedback"), "{stderr}");
    let training = &manifest(&out)["heads"][0]["training"];
    assert_eq!(training["insult"]["feedback_examples"], 4);
    assert_eq!(
        training["threat"]["feedback_examples"], 1,
        "insult feedback teaches the insult label only; a benign one every label"
    );

    // The same retrain again (as a scheduled one would run with no new feedback) learns
    // nothing new: it adds no second copy of the version beside the registry's set.
    let again = work.path().join("heads-again");
    std::fs::create_dir_all(&again).unwrap();
    std::fs::write(again.join("keep.txt"), "not training's").unwrap();
    let (output, _, stderr) = run(modbot(
        work.path(),
        &["train", "--heads", "toxicity", "--with-feedback", "--out"],
    )
    .arg(&again)
    .env("MODBOT_DATABASE_URL", &url)
    .env("MODBOT_MODEL_REGISTRY_DIR", work.path()));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("the retrain learned nothing new")
            && stderr.contains(&out.display().to_string()),
        "{stderr}"
    );
    assert!(!again.join("heads.json").exists() && !again.join("toxicity.safetensors").exists());
    assert!(
        again.join("keep.txt").exists(),
        "only what training wrote is removed"
    );
}

#[test]
fn bad_requests_are_refused_clearly() {
    let work = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["train", "--validation-fraction", "0.9"],
            2,
            "--validation-fraction: 0.9 is outside",
        ),
        (
            &["train", "--subset", "0"],
            2,
            "--subset: must be at least 1",
        ),
        (
            &["eval", "--check", "2"],
            2,
            "--check: the tolerance must be in [0, 1]",
        ),
        (&["eval", "--file", "x.jsonl"], 2, "--head"),
        (
            &["train", "--with-feedback"],
            2,
            "--with-feedback makes a candidate: name a new directory with --out",
        ),
        (
            &["train", "--with-feedback", "--out", "models/heads"],
            2,
            "holds a head set already; a retrain never overwrites one",
        ),
    ];
    for (args, code, expected) in cases {
        let (output, _, stderr) = run(&mut modbot(work.path(), args));
        assert_eq!(output.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: `{expected}` not in {stderr}"
        );
    }
    if !have_model("bad_requests_are_refused_clearly (model part)") {
        return;
    }
    // Missing data names the command that prepares it; an unknown head is named.
    let (output, _, stderr) = run(&mut modbot(work.path(), &["train", "--heads", "toxicity"]));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("insult_chat/train.jsonl is missing")
            && stderr.contains("python3 scripts/fetch_datasets.py"),
        "{stderr}"
    );
    let (output, _, stderr) = run(&mut modbot(work.path(), &["train", "--heads", "nope"]));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no head `nope`"), "{stderr}");
    // A labelled file with a label of another task names the line.
    let file = work.path().join("bad.jsonl");
    std::fs::write(&file, "{\"id\":\"1\",\"text\":\"hi\",\"label\":\"spam\"}\n").unwrap();
    let heads = work.path().join("heads");
    std::fs::create_dir_all(&heads).unwrap();
    modbot::infra::model::heads::write_head(
        &heads.join("toxicity.safetensors"),
        &[(vec![vec![0.0; 384]], vec![0.0])],
    )
    .unwrap();
    std::fs::write(
        heads.join("heads.json"),
        r#"{"version":"t","encoder":"all-MiniLM-L6-v2","embedding_dim":384,"heads":[{"name":"toxicity","file":"toxicity.safetensors","multi_label":true,"labels":["insult"]}]}"#,
    )
    .unwrap();
    let (output, _, stderr) = run(&mut modbot(
        work.path(),
        &[
            "eval",
            "--heads-dir",
            heads.to_str().unwrap(),
            "--file",
            file.to_str().unwrap(),
            "--head",
            "toxicity/insult",
        ],
    ));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.jsonl:1: label `spam`"), "{stderr}");
}

/// The model card's metrics table is the committed manifest's, number for number.
#[test]
fn the_model_card_states_the_committed_heads_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let card = std::fs::read_to_string(root.join("models/README.md")).unwrap();
    let manifest = manifest(&root.join("models/heads"));
    let (start, end) = (
        card.find("<!-- metrics:")
            .expect("the card marks its metrics table"),
        card.find("<!-- /metrics -->")
            .expect("the card marks its metrics table's end"),
    );
    let table: Vec<&str> = card[start..end]
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| head") && !l.starts_with("| ---"))
        .collect();
    let mut expected = Vec::new();
    for head in manifest["heads"].as_array().unwrap() {
        let name = head["name"].as_str().unwrap();
        for (key, value) in head["metrics"].as_object().unwrap() {
            expected.push(format!(
                "| {name} | {key} | {:.4} |",
                value.as_f64().unwrap()
            ));
        }
    }
    assert!(
        !expected.is_empty(),
        "the committed heads record no metrics"
    );
    assert_eq!(
        table, expected,
        "models/README.md's metrics differ from models/heads/heads.json"
    );
    let version = manifest["version"].as_str().unwrap();
    assert!(
        card.contains(&format!("modbot heads `{version}`")),
        "the card names another version"
    );
}

/// `eval --chat` on a small set of the same shape as `models/chatset`: the committed heads and
/// the built-in rules decide it as `serve` would, and the JSON says what each category got.
#[test]
fn eval_chat_decides_a_chat_set_through_the_whole_path() {
    let work = tempfile::tempdir().unwrap();
    let set = work.path().join("set");
    std::fs::create_dir_all(&set).unwrap();
    let line = |id: &str, text: &str, category: &str, split: &str| {
        serde_json::json!({"id": id, "text": text, "category": category, "kind": "k", "split": split})
            .to_string()
    };
    let paste = "this is a copypasta that everyone in chat keeps pasting over and over again, \
                 it is long enough to count and nobody finds it funny any more at all";
    let lines = [
        line(
            "insult/001",
            "you are a complete worthless idiot",
            "insult",
            "test",
        ),
        line("flood/001", &"A".repeat(60), "flood", "test"),
        line("copypasta/001", paste, "copypasta", "test"),
        line(
            "benign/001",
            "good luck on the exam tomorrow",
            "benign",
            "test",
        ),
        line(
            "benign/002",
            "what time does the match start",
            "benign",
            "validation",
        ),
    ];
    std::fs::write(set.join("lines.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        set.join("evasions.jsonl"),
        serde_json::json!({"id": "insult/001~leet-edges", "text": "you are a complete worthless 1diot",
            "category": "insult", "kind": "k", "split": "test", "evasion": "leet-edges", "of": "insult/001"})
            .to_string()
            + "\n",
    )
    .unwrap();
    // Refused at once: --chat with dataset options, and a set with an unknown category.
    let (output, _, stderr) = run(&mut modbot(
        work.path(),
        &["eval", "--chat", set.to_str().unwrap(), "--check"],
    ));
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let bad = work.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("lines.jsonl"),
        line("rude/001", "hi", "rude", "test") + "\n",
    )
    .unwrap();
    let (output, _, stderr) = run(&mut modbot(
        work.path(),
        &["eval", "--chat", bad.to_str().unwrap()],
    ));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lines.jsonl:1: category: `rude`"),
        "{stderr}"
    );

    // A peer's file must decide every line of the set, and --peer needs --chat.
    let peer = work.path().join("peer.jsonl");
    std::fs::write(&peer, "{\"id\":\"insult/001\",\"acted\":true}\n").unwrap();
    let (output, _, stderr) = run(&mut modbot(
        work.path(),
        &[
            "eval",
            "--chat",
            set.to_str().unwrap(),
            "--peer",
            peer.to_str().unwrap(),
        ],
    ));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no decision for the chat line `flood/001`"),
        "{stderr}"
    );
    // A peer is a column beside the heads, not a recorded metric: never with --check.
    let (output, _, stderr) = run(&mut modbot(
        work.path(),
        &["eval", "--check", "--peer", peer.to_str().unwrap()],
    ));
    assert_eq!(output.status.code(), Some(2), "{stderr}");

    if !have_model("eval_chat_decides_a_chat_set_through_the_whole_path") {
        return;
    }
    // The peer flags only the insult (not its variant).
    let decisions: String = [
        "insult/001",
        "flood/001",
        "copypasta/001",
        "benign/001",
        "benign/002",
        "insult/001~leet-edges",
    ]
    .iter()
    .map(|id| format!("{{\"id\":\"{id}\",\"acted\":{}}}\n", *id == "insult/001"))
    .collect();
    std::fs::write(&peer, decisions).unwrap();
    let (output, stdout, stderr) = run(&mut modbot(
        work.path(),
        &[
            "eval",
            "--chat",
            set.to_str().unwrap(),
            "--json",
            "--peer",
            peer.to_str().unwrap(),
        ],
    ));
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report["model"].as_str().unwrap().contains("heads@"),
        "{report}"
    );
    let test = &report["splits"]["test"];
    let acted = |category: &str| test["categories"][category]["acted"].as_u64().unwrap();
    assert_eq!(acted("insult"), 1, "{report}");
    assert_eq!(test["categories"]["insult"]["by_model"], 1, "{report}");
    assert_eq!(acted("flood"), 1, "{report}");
    assert_eq!(acted("copypasta"), 1, "the third copy: {report}");
    assert_eq!(acted("benign"), 0, "{report}");
    assert_eq!(
        test["evasions"]["leet-edges"]["variants"]["acted"], 1,
        "{report}"
    );
    assert_eq!(
        report["splits"]["validation"]["categories"]["benign"]["n"],
        1
    );
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 5, "{report}");
    let peer = &report["peer"];
    assert_eq!(peer["name"], "peer", "named after its file: {report}");
    let peer_test = &peer["splits"]["test"];
    assert_eq!(peer_test["categories"]["insult"]["acted"], 1, "{report}");
    assert_eq!(peer_test["categories"]["flood"]["acted"], 0, "{report}");
    assert_eq!(
        peer_test["all_evasions"]["variants"]["acted"], 0,
        "{report}"
    );
    assert_eq!(peer["targets"].as_array().unwrap().len(), 5, "{report}");
}

#[test]
fn finetune_writes_an_adapter_that_train_and_eval_load_with_the_encoder() {
    if !have_model("finetune_writes_an_adapter_that_train_and_eval_load_with_the_encoder") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    write_datasets(&work.path().join("datasets"));
    let adapter = work.path().join("adapter");
    let (output, stdout, stderr) = run(&mut modbot(
        work.path(),
        &[
            "finetune",
            "--heads",
            "toxicity",
            "--per-task",
            "24",
            "--epochs",
            "1",
            "--rank",
            "2",
            "--validation-fraction",
            "0.25",
            "--out",
            adapter.to_str().unwrap(),
        ],
    ));
    assert!(output.status.success(), "{stderr}");
    // One row per toxicity label, frozen beside adapted.
    for label in ["insult", "threat", "sexual", "identity_attack"] {
        assert!(
            stdout.contains(&format!("| toxicity/{label} |")),
            "{stdout}"
        );
    }
    let adapter_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(adapter.join("adapter.json")).unwrap()).unwrap();
    assert_eq!(adapter_manifest["rank"], 2);
    assert_eq!(adapter_manifest["layer"], 5);
    assert_eq!(
        adapter_manifest["base_sha256"].as_str().unwrap(),
        modbot::infra::model::fetch::sha256_file(&model_dir().join("model.safetensors")).unwrap()
    );
    assert_eq!(
        adapter_manifest["provenance"]["validation_roc_auc"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // An adapter is never overwritten, and is trained on the plain encoder.
    for (args, expected) in [
        (
            vec!["finetune", "--out", adapter.to_str().unwrap()],
            "is not empty",
        ),
        (
            vec![
                "finetune",
                "--out",
                "x",
                "--adapter",
                adapter.to_str().unwrap(),
            ],
            "--adapter: an adapter is trained on the plain encoder",
        ),
        (
            vec!["finetune", "--out", "x", "--per-task", "5"],
            "--per-task must be at least 10",
        ),
    ] {
        let (output, _, stderr) = run(&mut modbot(work.path(), &args));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }

    // Heads trained with the adapter say so, and eval scores them with it.
    let heads = work.path().join("heads");
    let (output, _, stderr) = run(&mut modbot(
        work.path(),
        &[
            "train",
            "--heads",
            "toxicity/insult",
            "--validation-fraction",
            "0.25",
            "--adapter",
            adapter.to_str().unwrap(),
            "--out",
            heads.to_str().unwrap(),
        ],
    ));
    assert!(output.status.success(), "{stderr}");
    let written = manifest(&heads);
    let adapter_sha =
        modbot::infra::model::fetch::sha256_file(&adapter.join("adapter.safetensors")).unwrap();
    let suffix = format!("+adapter@{}", &adapter_sha[..12]);
    assert!(
        written["encoder"].as_str().unwrap().ends_with(&suffix)
            && written["training"]["encoder"]
                .as_str()
                .unwrap()
                .ends_with(&suffix),
        "{written}"
    );
    let (output, _, stderr) = run(&mut modbot(
        work.path(),
        &[
            "eval",
            "--heads-dir",
            heads.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--no-baselines",
            "--dataset",
            "insults",
        ],
    ));
    assert!(output.status.success(), "{stderr}");
    // An adapter for other weights is refused by name.
    let mut other = adapter_manifest.clone();
    other["base_sha256"] = serde_json::json!("f".repeat(64));
    std::fs::write(adapter.join("adapter.json"), other.to_string()).unwrap();
    let (output, _, stderr) = run(&mut modbot(
        work.path(),
        &[
            "eval",
            "--heads-dir",
            heads.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--no-baselines",
        ],
    ));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the adapter was trained on encoder weights ffffffffffff"),
        "{stderr}"
    );
}
