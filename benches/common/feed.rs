//! The console's live feed under load, in a real browser, against the release server: the
//! page a moderator keeps open while chat runs at `rate` messages/s.
//!
//! A rules-only release `modbot serve` (a child process; the model's capacity is the `load`
//! scenario's business, this one measures the feed and the page), Debian's Chromium signed in
//! to the console (without a token: a loopback server) on the live feed, and `rate` corpus
//! messages/s through unary `Classify` calls, a twentieth of a second's messages at a time in
//! calls of at most 50, each call its own task (at most 32 in flight), for `secs`. Reported: decisions sent and achieved rate,
//! what the page received and was told it skipped (the feed's counters,
//! `window.modbotFeedStats`), its rows, frames drawn, the longest frame and the worst
//! event-loop lag. Checked: every decision reached the page or was counted as skipped (the
//! feed never drops silently), the rows stay bounded, the offered rate was achieved, and the
//! page still answers at once afterwards (a keypress switches views).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use modbot::corpus::CorpusMessage;
use modbot::proto::moderation_client::ModerationClient;
use modbot::proto::{ChatMessage, ClassifyRequest};

use crate::Checks;
use crate::browser::Browser;
use crate::load;
use crate::services::{self, ServerOptions};

/// Runs the scenario; `Err("SKIPPED ...")` without Chromium (unless CI requires it).
pub async fn scenario(
    corpus: &Arc<Vec<CorpusMessage>>,
    rate: f64,
    secs: f64,
) -> Result<Checks, String> {
    let Some(browser) = Browser::start("feed").await else {
        return Err("SKIPPED: no Chromium (scripts/browser-setup installs it)".into());
    };
    let mut server = services::Modbot::start(&ServerOptions::default());
    server.wait_serving(Duration::from_secs(60)).await?;
    let mut checks = Checks::default();

    let opened = Instant::now();
    browser
        .client
        .goto(&format!("http://{}/", server.http))
        .await
        .map_err(|e| format!("open the console: {e}"))?;
    browser.click("#sign-in").await;
    browser.wait_text("#who", "local").await;
    browser.find("#feed-rows").await;
    println!(
        "  console open and signed in, on the live feed: {:.0} ms",
        opened.elapsed().as_secs_f64() * 1e3
    );
    // The feed's EventSource connects after the view is drawn.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let channel = tonic::transport::Endpoint::from_shared(server.addr.clone())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let started = Instant::now();
    let (sent, failed) = offer(channel, corpus, rate, secs).await;
    let took = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = browser.eval("return window.modbotFeedStats;").await;
    let number = |key: &str| stats[key].as_f64().unwrap_or(0.0);
    let (received, skipped) = (number("received"), number("skipped"));
    let rows = browser
        .eval("return document.getElementById('feed-rows').childElementCount;")
        .await
        .as_u64()
        .unwrap_or(u64::MAX);
    let frames = number("frames");
    println!(
        "  sent {sent} decisions in {took:.2} s ({:.0}/s offered {rate:.0}/s, {failed} calls failed); \
         the page received {received:.0} and was told it skipped {skipped:.0}; {rows} rows; \
         {frames:.0} frames drawn, mean {:.2} ms, longest {:.1} ms; worst event-loop lag {:.0} ms",
        sent as f64 / took,
        if frames > 0.0 {
            number("totalFrameMs") / frames
        } else {
            0.0
        },
        number("maxFrameMs"),
        number("maxLagMs"),
    );
    checks.check(
        failed == 0,
        format!("every Classify call answered ({failed} failed)"),
    );
    checks.check(
        sent as f64 / took >= rate * 0.95,
        format!(
            "the offered rate was achieved ({:.0}/s)",
            sent as f64 / took
        ),
    );
    checks.check(
        received + skipped >= sent as f64,
        format!(
            "every decision reached the page or was counted skipped ({received:.0} + {skipped:.0} of {sent})"
        ),
    );
    checks.check(
        rows <= 200,
        format!("the page keeps at most 200 rows ({rows})"),
    );
    let answered = Instant::now();
    browser.press("2").await;
    browser.find("#view-review").await;
    let switch_ms = answered.elapsed().as_secs_f64() * 1e3;
    println!("  after the load, a keypress switched to the review queue in {switch_ms:.0} ms");
    checks.check(
        switch_ms < 2_000.0,
        format!("the page answers at once after the load ({switch_ms:.0} ms)"),
    );
    browser.shot("feed-under-load").await;
    drop(browser);
    server.stop(Duration::from_secs(5));
    Ok(checks)
}

/// `rate` messages/s for `secs` as Classify calls of a twentieth of a second's messages each;
/// returns the messages decided and the calls that failed.
async fn offer(
    channel: tonic::transport::Channel,
    corpus: &Arc<Vec<CorpusMessage>>,
    rate: f64,
    secs: f64,
) -> (u64, u64) {
    const TICKS_PER_SECOND: f64 = 20.0;
    const MESSAGES_PER_CALL: usize = 50;
    let per_batch = (rate / TICKS_PER_SECOND).round().max(1.0) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / TICKS_PER_SECOND));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(32));
    let mut calls = tokio::task::JoinSet::new();
    let batches = (secs * TICKS_PER_SECOND).round() as usize;
    for batch in 0..batches {
        tick.tick().await;
        let messages: Vec<ChatMessage> = (0..per_batch)
            .map(|i| {
                let n = batch * per_batch + i;
                let source = &corpus[n % corpus.len()];
                load::chat_message(source, "feed", format!("f{n}"), SystemTime::now())
            })
            .collect();
        // At most MESSAGES_PER_CALL a call (within grpc.max_messages_per_call).
        for messages in messages.chunks(MESSAGES_PER_CALL) {
            let permit = Arc::clone(&in_flight)
                .acquire_owned()
                .await
                .expect("never closed");
            let messages = messages.to_vec();
            let mut client = ModerationClient::new(channel.clone());
            calls.spawn(async move {
                let answer = client
                    .classify(ClassifyRequest {
                        messages,
                        options: None,
                    })
                    .await;
                drop(permit);
                answer.map(|a| a.into_inner().verdicts.len() as u64)
            });
        }
    }
    let (mut sent, mut failed) = (0, 0);
    while let Some(call) = calls.join_next().await {
        match call {
            Ok(Ok(decided)) => sent += decided,
            _ => failed += 1,
        }
    }
    (sent, failed)
}
