//! Logging and metrics helpers: `tracing` to standard error (text or JSON lines), the
//! Prometheus exporter's histogram buckets, and the metrics every verdict and every degraded
//! component report.
//!
//! Spans (every line logged inside one carries its fields):
//! - `grpc{rpc, request_id}` (`info`) around every call ([`crate::edge::grpc::trace`]); the request id is the
//!   caller's `x-request-id` or a new one, and is sent back in the response headers;
//! - `stream{session, bridge}` (`info`) around a `StreamModerate` session;
//! - `message{channel, message_id}` (`debug`) around one message's decision ([`crate::service::moderate`]), with
//!   `text` only when `log.message_text` is set;
//! - `model_batch{messages, tokens}` (`debug`) on the model thread, linked by `follows_from`
//!   to the `message` spans whose texts it scores.
//!
//! No message text is logged unless `log.message_text` says so, and no token or password ever.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::domain::{ChatMessage, Degraded, Verdict};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
/// Does nothing if a subscriber is already installed (tests that start several servers).
pub fn init(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Bucket bounds (seconds) of every `*_seconds` histogram: from a cached rule-only decision
/// (tens of microseconds) to a stream's life (minutes).
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0, 60.0,
];

/// Bucket bounds of `modbot_model_batch_messages` (up to `model.max_batch_messages`' limit).
pub const BATCH_MESSAGES_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Bucket bounds of `modbot_review_time_to_review_seconds`: a moderator's ruling takes seconds
/// to the better part of an hour.
pub const REVIEW_WAIT_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// Bucket bounds of `modbot_model_batch_tokens`.
pub const BATCH_TOKENS_BUCKETS: [f64; 10] = [
    16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// The process's Prometheus recorder, once installed: `/metrics` on the HTTP edge renders it.
static PROMETHEUS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Keeps `handle` for [`prometheus_handle`]; the first one installed wins.
pub fn set_prometheus_handle(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let _ = PROMETHEUS.set(handle);
}

/// The installed Prometheus recorder's handle, if any.
pub fn prometheus_handle() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    PROMETHEUS.get()
}

/// The Prometheus exporter's builder with modbot's histogram buckets: every histogram
/// (`*_seconds`, the model's batch sizes) is exported as a Prometheus histogram, so replicas
/// can be aggregated, never as a per-process summary.
pub fn prometheus_builder() -> metrics_exporter_prometheus::PrometheusBuilder {
    use metrics_exporter_prometheus::Matcher;
    // A full name is matched before a suffix (the exporter orders its matchers).
    let buckets: [(Matcher, &[f64]); 4] = [
        (Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS),
        (
            Matcher::Full("modbot_review_time_to_review_seconds".to_owned()),
            &REVIEW_WAIT_BUCKETS,
        ),
        (
            Matcher::Full("modbot_model_batch_messages".to_owned()),
            &BATCH_MESSAGES_BUCKETS,
        ),
        (
            Matcher::Full("modbot_model_batch_tokens".to_owned()),
            &BATCH_TOKENS_BUCKETS,
        ),
    ];
    buckets.into_iter().fold(
        metrics_exporter_prometheus::PrometheusBuilder::new(),
        |builder, (matcher, bounds)| {
            builder
                .set_buckets_for_metric(matcher, bounds)
                .expect("the bucket lists are not empty. This is a bug")
        },
    )
}

/// Counts one verdict: `modbot_verdicts_total{decision}`, one
/// `modbot_verdict_reasons_total{kind, reason, mode}` per reason (`kind` is `rule`, `model`,
/// `escalation` or `policy`; `reason` the rule id, else the label; `mode` `enforce` or
/// `shadow`), `modbot_verdicts_degraded_total{component}` per degraded component, and the
/// time from receipt to verdict in `modbot_decision_seconds`. Rule ids are bounded by the rule
/// set and labels by the heads, so the label sets stay small.
pub fn record_verdict(verdict: &Verdict) {
    metrics::counter!("modbot_verdicts_total", "decision" => verdict.decision.as_str())
        .increment(1);
    for reason in &verdict.reasons {
        let id = if reason.rule_id.is_empty() {
            &reason.label
        } else {
            &reason.rule_id
        };
        metrics::counter!(
            "modbot_verdict_reasons_total",
            "kind" => reason.source.as_str(),
            "reason" => id.clone(),
            "mode" => if reason.shadow { "shadow" } else { "enforce" }
        )
        .increment(1);
    }
    for component in &verdict.degraded {
        metrics::counter!("modbot_verdicts_degraded_total", "component" => component.as_str())
            .increment(1);
    }
    metrics::histogram!("modbot_decision_seconds").record(verdict.elapsed.as_secs_f64());
}

/// Sets the gauge `modbot_degraded{component}`: 1 while `component` is unavailable (the model
/// failed, Redis is not answering, the last audit write failed), 0 otherwise.
pub fn set_degraded(component: Degraded, degraded: bool) {
    metrics::gauge!("modbot_degraded", "component" => component.as_str()).set(if degraded {
        1.0
    } else {
        0.0
    });
}

/// The `message{channel, message_id}` span one message is decided in (both stages: the model
/// job it queues carries it to the model thread). At `debug`: under a JSON subscriber at
/// `info` it would cost ~1 µs per message (`cargo bench --bench stats`), 7% of the rules-only
/// path, for spans that nothing logged at `info` would use. `text` is recorded only when `with_text`
/// (`log.message_text`): chat text is personal data and stays out of logs by default.
pub fn message_span(message: &ChatMessage, with_text: bool) -> tracing::Span {
    let span = tracing::debug_span!(
        "message",
        channel = %message.channel,
        message_id = %message.message_id,
        text = tracing::field::Empty,
    );
    if with_text {
        span.record("text", message.text.as_str());
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_histogram_is_exported_with_buckets() {
        let recorder = prometheus_builder().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("modbot_model_batch_messages").record(3.0);
            metrics::histogram!("modbot_model_batch_tokens").record(100.0);
            metrics::histogram!("modbot_decision_seconds").record(0.002);
        });
        let rendered = recorder.handle().render();
        for line in [
            "modbot_model_batch_messages_bucket{le=\"2\"} 0",
            "modbot_model_batch_messages_bucket{le=\"4\"} 1",
            "modbot_model_batch_tokens_bucket{le=\"128\"} 1",
            "modbot_decision_seconds_bucket{le=\"0.0025\"} 1",
        ] {
            assert!(rendered.lines().any(|l| l == line), "{line}\n{rendered}");
        }
        assert!(!rendered.contains("quantile"), "no summaries:\n{rendered}");
    }
}
