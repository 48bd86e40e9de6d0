//! `modbot classify "text"`: asks a running server for one message's verdict and prints it as
//! a table (or JSON): the quickest way to try modbot once `modbot serve` runs.
//!
//! The server, its token and CA come from `[bridge]` (`server_url`, `server_token` or
//! `MODBOT_BRIDGE_SERVER_TOKEN`, `server_ca_file`), as for `replay`; the token needs the
//! `classifier` (or `admin`) role. The call is a dry run unless `--record`: nothing is written
//! and the user's history is not touched, so trying a text twice gives the same answer.

use std::fmt::Write as _;

use anyhow::Context as _;

use super::client::Server;
use crate::proto::moderation_client::ModerationClient;
use crate::proto::{ChatMessage, ClassifyOptions, ClassifyRequest, Decision, Reason, Verdict};

/// `modbot classify`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ClassifyArgs {
    /// The message text.
    #[arg(value_name = "TEXT")]
    pub text: String,
    /// The channel it is said in.
    #[arg(long, default_value = "cli")]
    pub channel: String,
    /// The user who says it.
    #[arg(long, default_value = "cli-user")]
    pub user: String,
    /// Record the verdict as a real message would be (audit log, the user's history,
    /// actions); by default the call is a dry run.
    #[arg(long)]
    pub record: bool,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// The server (default: bridge.server_url); token and CA come from [bridge].
    #[arg(long, value_name = "URL")]
    pub server_url: Option<String>,
}

/// Asks the server and returns what to print.
pub async fn run(config: &crate::config::Config, args: &ClassifyArgs) -> anyhow::Result<String> {
    let (server, channel) = Server::connect_to(&config.bridge, args.server_url.as_deref()).await?;
    let message = ChatMessage {
        channel: args.channel.clone(),
        message_id: format!("cli-{}", uuid::Uuid::now_v7()),
        user_id: args.user.clone(),
        nick: args.user.clone(),
        text: args.text.clone(),
        ..ChatMessage::default()
    };
    let request = server.authorize(tonic::Request::new(ClassifyRequest {
        messages: vec![message],
        options: Some(ClassifyOptions {
            dry_run: !args.record,
            include_scores: true,
            include_normalized_text: true,
        }),
    }));
    let response = ModerationClient::new(channel)
        .classify(request)
        .await
        .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))
        .context("Classify failed")?;
    let verdict = response
        .into_inner()
        .verdicts
        .into_iter()
        .next()
        .context("the server answered no verdict")?;
    Ok(if args.json {
        let mut json = serde_json::to_string_pretty(&verdict_json(&verdict))?;
        json.push('\n');
        json
    } else {
        table(&verdict, args.record)
    })
}

fn decision(value: i32) -> String {
    Decision::try_from(value)
        .map(|d| {
            d.as_str_name()
                .trim_start_matches("DECISION_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| value.to_string())
}

fn duration(value: Option<&prost_types::Duration>) -> String {
    match value {
        Some(d) if d.seconds > 0 || d.nanos > 0 => {
            let secs = d.seconds as f64 + f64::from(d.nanos) / 1e9;
            if secs >= 1.0 {
                format!("{secs:.0}s")
            } else {
                format!("{:.1}ms", secs * 1000.0)
            }
        }
        _ => String::new(),
    }
}

fn source(reason: &Reason) -> String {
    crate::proto::ReasonSource::try_from(reason.source)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("REASON_SOURCE_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

/// The verdict as a readable table.
pub fn table(verdict: &Verdict, recorded: bool) -> String {
    let mut out = String::new();
    let mut decided = decision(verdict.decision);
    let length = duration(verdict.duration.as_ref());
    if !length.is_empty() {
        decided = format!("{decided} {length}");
    }
    let how = match (recorded, verdict.enforced) {
        (false, _) => "dry run: nothing recorded or done",
        (true, true) => "enforced",
        (true, false) => "not enforced",
    };
    let _ = writeln!(out, "decision   {decided}  ({how})");
    if verdict.shadow_decision != verdict.decision && verdict.shadow_decision != 0 {
        let _ = writeln!(out, "shadow     {}", decision(verdict.shadow_decision));
    }
    if !verdict.normalized_text.is_empty() {
        let _ = writeln!(out, "normalised {}", verdict.normalized_text);
    }
    let _ = writeln!(
        out,
        "took       {}{}",
        duration(verdict.elapsed.as_ref()),
        if verdict.model_version.is_empty() {
            ", rules only".to_owned()
        } else {
            format!(", model {}", verdict.model_version)
        }
    );
    if !verdict.degraded.is_empty() {
        let names: Vec<String> = verdict
            .degraded
            .iter()
            .filter_map(|d| crate::proto::DegradedComponent::try_from(*d).ok())
            .map(|d| {
                d.as_str_name()
                    .trim_start_matches("DEGRADED_COMPONENT_")
                    .to_lowercase()
            })
            .collect();
        let _ = writeln!(out, "degraded   {}", names.join(", "));
    }
    if verdict.reasons.is_empty() {
        let _ = writeln!(out, "reasons    none: nothing fired");
    } else {
        let rows: Vec<[String; 5]> = verdict
            .reasons
            .iter()
            .map(|r| {
                let what = if r.rule_id.is_empty() {
                    r.label.clone()
                } else {
                    r.rule_id.clone()
                };
                let score = if r.threshold > 0.0 {
                    format!("{:.2} >= {:.2}", r.score, r.threshold)
                } else {
                    String::new()
                };
                let mut decided = decision(r.decision);
                if r.shadow {
                    decided.push_str(" (shadow)");
                }
                [source(r), what, decided, score, r.description.clone()]
            })
            .collect();
        let header = ["source", "rule/label", "decision", "score", "why"].map(str::to_owned);
        let mut widths = [0usize; 4];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let _ = writeln!(out, "reasons");
        for row in std::iter::once(&header).chain(&rows) {
            let _ = writeln!(
                out,
                "  {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
        }
    }
    if !verdict.scores.is_empty() {
        let mut scores: Vec<_> = verdict.scores.iter().collect();
        scores.sort_by(|a, b| a.0.cmp(b.0));
        let line: Vec<String> = scores.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        let _ = writeln!(out, "scores     {}", line.join(", "));
    }
    out
}

/// The verdict as JSON, with names rather than numbers.
pub fn verdict_json(verdict: &Verdict) -> serde_json::Value {
    serde_json::json!({
        "messageId": verdict.message_id,
        "channel": verdict.channel,
        "userId": verdict.user_id,
        "decision": decision(verdict.decision),
        "duration": duration(verdict.duration.as_ref()),
        "enforced": verdict.enforced,
        "shadowDecision": decision(verdict.shadow_decision),
        "modelVersion": verdict.model_version,
        "elapsed": duration(verdict.elapsed.as_ref()),
        "normalizedText": verdict.normalized_text,
        "scores": verdict.scores,
        "reasons": verdict.reasons.iter().map(|r| serde_json::json!({
            "source": source(r),
            "ruleId": r.rule_id,
            "label": r.label,
            "decision": decision(r.decision),
            "score": r.score,
            "threshold": r.threshold,
            "shadow": r.shadow,
            "harmful": r.harmful,
            "description": r.description,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_the_decision_and_each_reason() {
        let verdict = Verdict {
            decision: Decision::Hide as i32,
            enforced: true,
            reasons: vec![Reason {
                source: crate::proto::ReasonSource::Rule as i32,
                rule_id: "scam-giveaway".into(),
                decision: Decision::Hide as i32,
                description: "a giveaway scam".into(),
                ..Reason::default()
            }],
            ..Verdict::default()
        };
        let text = table(&verdict, true);
        assert!(text.starts_with("decision   hide  (enforced)"), "{text}");
        assert!(text.contains("rule    scam-giveaway  hide"), "{text}");
        assert!(text.contains("a giveaway scam"), "{text}");
        let json = verdict_json(&verdict);
        assert_eq!(json["decision"], "hide");
        assert_eq!(json["reasons"][0]["ruleId"], "scam-giveaway");
        let quiet = table(
            &Verdict {
                decision: Decision::Allow as i32,
                ..Verdict::default()
            },
            false,
        );
        assert!(
            quiet.contains("dry run") && quiet.contains("nothing fired"),
            "{quiet}"
        );
    }
}
