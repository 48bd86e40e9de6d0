//! The "tools in other languages" user: the Python client generated from proto/ with
//! grpcio-tools, and the TypeScript one generated with protoc-gen-es (Connect, gRPC over
//! HTTP/2), call Health and Classify on a real server.

use crate::common;

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

/// What both examples print for the same two messages, in the proto3 JSON mapping (enum
/// names, camelCase fields, durations as "600s"): health, then an allow and a first scam
/// offence, whose rule timeout becomes a warning carried out as a hide (a scam is harmful),
/// every reason shown: the hide, the softening, the rule.
fn assert_example_printed(stdout: &[u8], example: &str) {
    let printed: serde_json::Value =
        serde_json::from_slice(stdout).unwrap_or_else(|e| panic!("{example} prints JSON: {e}"));
    assert_eq!(printed["health"], "SERVING", "{example}");
    let verdicts = printed["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 2, "{example}");
    assert_eq!(verdicts[0]["decision"], "DECISION_ALLOW");
    assert_eq!(verdicts[0]["channel"], "strims");
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
    assert_example_printed(&output.stdout, "example.py");
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

/// Runs `npm run build` in clients/typescript (generate from proto/ with buf and
/// protoc-gen-es, then tsc), or says why it cannot: no node or npm on PATH, or the packages
/// not installed (`scripts/test` runs `npm ci` for them; nothing is fetched here).
fn build_typescript_client(dir: &Path) -> Result<(), String> {
    let probe = |tool: &str| match Command::new(tool).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "`{tool} --version` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Err(format!("no `{tool}` on PATH ({error})")),
    };
    probe("node")?;
    probe("npm")?;
    if !dir.join("node_modules/.bin/protoc-gen-es").exists() {
        return Err(format!(
            "its packages are not installed (npm ci in {})",
            dir.display()
        ));
    }
    let output = Command::new("npm")
        .args(["run", "--silent", "build"])
        .current_dir(dir)
        .output()
        .expect("run npm run build");
    // Not a reason to skip: the client no longer builds from the protos.
    assert!(
        output.status.success(),
        "npm run build failed in {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn typescript_client_classifies_over_tls_with_a_token() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript");
    if let Err(why) = build_typescript_client(&dir) {
        assert!(
            std::env::var_os(common::REQUIRE_SERVICES_ENV).is_none(),
            "{} is set but the TypeScript client cannot be built: {why}",
            common::REQUIRE_SERVICES_ENV
        );
        eprintln!("SKIPPED typescript_client: {why}");
        return;
    }
    let example = dir.join("dist/src/example.js");
    assert!(example.is_file(), "{} was not built", example.display());

    // TLS (the test CA in a file) and tokens: a classifier token from MODBOT_TOKEN or a file.
    let token = "typescript-token-5d2a9e41";
    let pki = common::Pki::generate();
    let server = TestServer::start_tls(
        |config| {
            pki.serve_tls(config, false);
            config.auth.tokens = format!("classifier ts-tools {token}");
        },
        pki.client(),
    )
    .await;
    let url = format!("https://localhost:{}", server.addr.port());
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("modbot-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let run = |env_token: Option<&str>, extra: Vec<String>| {
        let mut command = Command::new("node");
        command
            .arg(&example)
            .args(["--url", &url, "--channel", "strims", "--ca-file"])
            .arg(pki.path("ca.pem"))
            .args(extra)
            .args(["hi from typescript", "FREE NITRO giveaway"])
            .env_remove("MODBOT_TOKEN");
        if let Some(token) = env_token {
            command.env("MODBOT_TOKEN", token);
        }
        tokio::task::spawn_blocking(move || command.output().expect("run example.js"))
    };

    let output = run(Some(token), vec![]).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "example.js with TLS and MODBOT_TOKEN failed: {stderr}"
    );
    assert_example_printed(&output.stdout, "example.js");

    let from_file = run(
        None,
        vec!["--token-file".into(), token_file.display().to_string()],
    )
    .await
    .unwrap();
    assert!(
        from_file.status.success(),
        "example.js with --token-file failed: {}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let printed: serde_json::Value =
        serde_json::from_slice(&from_file.stdout).expect("example.js prints JSON");
    assert_eq!(printed["verdicts"].as_array().map(Vec::len), Some(2));

    // Without a token: health still answers, Classify is refused, and the tool says so.
    let refused = run(None, vec![]).await.unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(refused.stdout.is_empty());
    assert!(
        stderr.contains("Classify failed: UNAUTHENTICATED: missing bearer token"),
        "{stderr}"
    );
    let wrong = run(Some("not-the-token-0000000"), vec![]).await.unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Classify failed: UNAUTHENTICATED: invalid bearer token"),
        "{stderr}"
    );
    server.stop().await.expect("clean stop");
}
