//! The "tools in other languages" user: the clients generated from proto/ call Health and
//! Classify on a real server. Python: grpcio-tools.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestServer;

/// The interpreter to use: `MODBOT_TEST_PYTHON`, else the `.venv` that the test script makes,
/// else `python3`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("MODBOT_TEST_PYTHON") {
        return python.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

#[tokio::test]
async fn python_client_checks_health_and_classifies() {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools, grpc_health"])
        .output();
    let importable = probe.as_ref().is_ok_and(|o| o.status.success());
    if !importable {
        let why = match &probe {
            Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
            Err(error) => error.to_string(),
        };
        assert!(
            std::env::var_os(common::REQUIRE_SERVICES_ENV).is_none(),
            "{} cannot import the client's dependencies (pip install -r clients/python/requirements.txt): {why}",
            python.display()
        );
        eprintln!(
            "SKIPPED python_client: {} lacks grpcio-tools: {why}",
            python.display()
        );
        return;
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = tempfile::tempdir().unwrap();
    let status = Command::new(&python)
        .arg(root.join("clients/python/generate.py"))
        .arg(generated.path())
        .status()
        .expect("run generate.py");
    assert!(status.success(), "code generation failed");
    assert!(
        generated
            .path()
            .join("modbot/v1/moderation_pb2_grpc.py")
            .is_file()
    );

    let server = TestServer::start(|_| {}).await;
    let addr = server.addr.to_string();
    let example = root.join("clients/python/example.py");
    let first = python.clone();
    let first_generated = generated.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&first)
            .arg(example)
            .args([
                "--addr",
                &addr,
                "--channel",
                "strims",
                "hi from python",
                "FREE NITRO giveaway",
            ])
            .env("PYTHONPATH", &first_generated)
            .output()
            .expect("run example.py")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "example.py failed: {stderr}");
    let printed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("example.py prints JSON");
    assert_eq!(printed["health"], "SERVING");
    let verdicts = printed["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdicts[0]["decision"], "DECISION_ALLOW");
    assert_eq!(verdicts[0]["channel"], "strims");
    // A first offence: the rule's timeout becomes a warning, carried out as a hide (a scam is
    // harmful), and every reason is shown: the hide, the softening, the rule.
    assert_eq!(verdicts[1]["decision"], "DECISION_HIDE");
    assert_eq!(verdicts[1]["reasons"][0]["label"], "harm-hidden");
    assert_eq!(verdicts[1]["reasons"][0]["harmful"], true);
    assert_eq!(
        verdicts[1]["reasons"][1]["source"],
        "REASON_SOURCE_ESCALATION"
    );
    assert_eq!(verdicts[1]["reasons"][2]["ruleId"], "scam-giveaway");
    assert_eq!(verdicts[1]["reasons"][2]["duration"], "600s");
    assert_eq!(
        verdicts[1]["reasons"][2]["evidence"]["matchedText"],
        "FREE NITRO"
    );
    server.stop().await.expect("clean stop");

    // Against a server with TLS and tokens: the token from MODBOT_TOKEN, the CA from a file.
    let pki = common::Pki::generate();
    let server = TestServer::start_tls(
        |config| {
            pki.serve_tls(config, false);
            config.auth.tokens = "classifier py-tools python-token-3c8e1f07".into();
        },
        pki.client(),
    )
    .await;
    let addr = format!("localhost:{}", server.addr.port());
    let run = |token: Option<&'static str>| {
        let python = python.clone();
        let example = root.join("clients/python/example.py");
        let generated = generated.path().to_owned();
        let addr = addr.clone();
        let ca = pki.path("ca.pem");
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(&python);
            command
                .arg(example)
                .args(["--addr", &addr, "--ca-file"])
                .arg(ca)
                .arg("hello over TLS")
                .env("PYTHONPATH", generated)
                .env_remove("MODBOT_TOKEN");
            if let Some(token) = token {
                command.env("MODBOT_TOKEN", token);
            }
            command.output().expect("run example.py")
        })
    };
    let output = run(Some("python-token-3c8e1f07")).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "example.py with TLS and a token failed: {stderr}"
    );
    let printed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("example.py prints JSON");
    assert_eq!(printed["verdicts"][0]["decision"], "DECISION_ALLOW");
    let refused = run(None).await.unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("UNAUTHENTICATED"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    server.stop().await.expect("clean stop");
}
