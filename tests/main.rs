//! modbot's integration tests as one test binary: each file beside this one is a module, so
//! the server, clients and helpers they share are compiled and linked once rather than once
//! per file (see "How long CI takes" in README.md). Run one file's tests with a filter:
//! `cargo test --release --test integration -- bridge::`.
//!
//! Three suites stay binaries of their own (`Cargo.toml`'s `[[test]]`): `metrics.rs` and
//! `durability.rs` install the process's one metrics recorder and count what it records, and
//! `users_memory.rs` counts the process's allocations with its own global allocator.

pub mod common;

#[path = "common/browser.rs"]
pub mod browser;
pub mod chat_server;

mod admin_rules;
mod admin_stats;
mod auth;
mod bridge;
mod chat_server_protocol;
mod cli;
mod clients;
mod grpc_api;
mod http;
mod model;
mod model_serving;
mod replay;
mod shutdown;
mod store;
mod stream;
mod train;
mod users;
mod workflows;

/// Every `tests/*.rs` file is a module above or a test binary of its own: a file added
/// beside them and forgotten here would otherwise never run.
#[test]
fn every_test_file_runs() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(here.join("main.rs")).expect("tests/main.rs");
    let manifest = std::fs::read_to_string(here.join("../Cargo.toml")).expect("Cargo.toml");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&here).expect("tests/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let module = format!("\nmod {name};\n");
        let binary = format!("path = \"tests/{name}.rs\"");
        if name != "main" && !main.contains(&module) && !manifest.contains(&binary) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/{{{}}}.rs are neither modules of tests/main.rs nor [[test]] targets",
        missing.join(",")
    );
}
