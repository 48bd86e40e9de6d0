//! Debian's Chromium through chromedriver (scripts/browser-setup installs both), driven with
//! fantoccini: the console's tests (tests/bridge.rs) and its benchmark under load
//! (benches/soak.rs `feed`). Not part of `common/mod.rs`, so only the binaries that drive a
//! browser compile it: `#[path = "common/browser.rs"] mod browser;`.

// Each binary uses the part it needs.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Set by CI: a missing browser is a failure, not a skip (`tests/common/mod.rs` has the same).
const REQUIRE_SERVICES_ENV: &str = "MODBOT_TEST_REQUIRE_SERVICES";

/// A headless Chromium session; the driver is killed when this is dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser, or `None` after saying the test is SKIPPED (a failure when
    /// MODBOT_TEST_REQUIRE_SERVICES is set: CI installs it).
    pub async fn start(test: &str) -> Option<Self> {
        if !(std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists())
        {
            assert!(
                std::env::var_os(REQUIRE_SERVICES_ENV).is_none(),
                "MODBOT_TEST_REQUIRE_SERVICES is set but {CHROMIUM} or {CHROMEDRIVER} is \
                 missing (scripts/browser-setup installs them)"
            );
            eprintln!("SKIPPED {test}: no Chromium (run scripts/browser-setup)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&shots).expect("a screenshot directory");
        Some(Self {
            client,
            driver,
            shots,
            _profile: profile,
        })
    }

    /// Saves a screenshot as `name.png` (in the target directory's test scratch space).
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("saved");
    }

    /// The element at `css`, waiting up to 15 s for it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => return element,
                Err(error) => {
                    assert!(Instant::now() < deadline, "no {css}: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        element.clear().await.expect("cleared");
        element.send_keys(text).await.expect("typed");
    }

    /// Waits up to 15 s until the text of `css` contains `wanted`; returns the text.
    pub async fn wait_text(&self, css: &str, wanted: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(wanted) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never said `{wanted}`: `{text}`"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Presses `keys` with nothing focused but the page (the console's shortcuts).
    pub async fn press(&self, keys: &str) {
        self.find("body")
            .await
            .send_keys(keys)
            .await
            .expect("keys sent");
    }

    /// Every form control of the page without a label (accessibility basics).
    pub async fn unlabelled(&self) -> serde_json::Value {
        self.eval(
            "return [...document.querySelectorAll('input, select, textarea')]\
             .filter(e => !e.labels || e.labels.length === 0).map(e => e.id || e.outerHTML);",
        )
        .await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
