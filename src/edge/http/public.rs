//! A channel's public moderation log as a page anyone can read: `GET /public/{channel}` (HTML
//! drawn by the server, no script) and `GET /public/{channel}/log.json` (the
//! `Transparency.GetPublicLog` answer). Both call that RPC without credentials, through the
//! gRPC stack like every JSON call; a channel whose policy keeps its log private is 404.
//!
//! Every value from the log is escaped ([`escape`]): nicks, moderators' reasons and (where the
//! policy shows it) message text are anyone's writing.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::rpc::Caller;
use super::{HttpState, call_json};

const METHOD: &str = "/modbot.v1.Transparency/GetPublicLog";
/// Proxies and browsers may keep a page as long as the server does (`CACHE_TTL`).
const CACHE_CONTROL: &str = "public, max-age=15";

async fn fetch(state: &HttpState, channel: &str) -> Result<Value, ApiError> {
    let request = serde_json::json!({ "channel": channel }).to_string();
    call_json(state, &Caller::default(), METHOD, request.as_bytes()).await
}

fn cached(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    response
}

/// `GET /public/{channel}/log.json`.
pub async fn json(State(state): State<HttpState>, Path(channel): Path<String>) -> Response {
    match fetch(&state, &channel).await {
        Ok(log) => cached(axum::Json(log).into_response()),
        Err(error) => error.into_response(),
    }
}

/// `GET /public/{channel}`.
pub async fn page(State(state): State<HttpState>, Path(channel): Path<String>) -> Response {
    match fetch(&state, &channel).await {
        Ok(log) => cached(Html(render(&log)).into_response()),
        Err(error) => {
            let status = super::error::http_status(error.code);
            let title = if status == StatusCode::NOT_FOUND {
                format!("No public moderation log for {}", escape(&channel))
            } else {
                "The moderation log cannot be shown now".to_owned()
            };
            let body = shell(
                &title,
                &format!("<p class=\"muted\">{}</p>", escape(&error.message)),
            );
            (status, Html(body)).into_response()
        }
    }
}

/// `text` with `& < > " '` escaped, for element content and quoted attributes alike.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn shell(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\
         <body class=\"public\"><main><h1>{title}</h1>{body}</main></body></html>\n"
    )
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        // The proto3 JSON mapping writes 64-bit integers as strings.
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// `2026-12-07T09:10:11.123Z` as `2026-12-07 09:10 UTC`.
fn when(value: &Value) -> String {
    let at = text(value);
    match (at.get(..10), at.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => at,
    }
}

fn duration(secs: u64) -> String {
    match secs {
        0 => String::new(),
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn counts_table(id: &str, heading: &str, counts: &Value) -> String {
    let mut rows = String::new();
    for count in counts.as_array().into_iter().flatten() {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(&text(&count["name"])),
            number(&count["count"])
        );
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"2\" class=\"muted\">none</td></tr>");
    }
    format!(
        "<section class=\"panel\"><h2>{heading}</h2><table id=\"{id}\"><tbody>{rows}</tbody></table></section>"
    )
}

/// The page of a log (`Transparency.GetPublicLog`'s answer, as JSON).
fn render(log: &Value) -> String {
    let channel = escape(&text(&log["channel"]));
    let days = number(&log["windowDays"]);
    let counted = number(&log["counted"]);
    let mut body = String::new();
    let _ = write!(
        body,
        "<p class=\"muted\">What moderation did in {channel} and why, over the last {days} days \
         ({counted} actions{}). Users are named as the channel chose; message text is not shown \
         unless the channel chose to. Built {}.</p>",
        if log["truncated"].as_bool() == Some(true) {
            ", the newest of more"
        } else {
            ""
        },
        escape(&when(&log["generatedAt"]))
    );
    body.push_str("<div class=\"cards\">");
    body.push_str(&counts_table("by-reason", "By reason", &log["byReason"]));
    body.push_str(&counts_table("by-kind", "By action", &log["byKind"]));
    let _ = write!(
        body,
        "<section class=\"panel\"><h2>Appeals</h2><table id=\"appeals\"><tbody>\
         <tr><td>overturned</td><td class=\"num\">{}</td></tr>\
         <tr><td>upheld</td><td class=\"num\">{}</td></tr>\
         <tr><td>open</td><td class=\"num\">{}</td></tr></tbody></table></section>",
        number(&log["appealsOverturned"]),
        number(&log["appealsUpheld"]),
        number(&log["appealsOpen"]),
    );
    body.push_str("</div><h2>Recent actions</h2><table id=\"recent\"><thead><tr>");
    for heading in ["When", "User", "Action", "Reason", "By", ""] {
        let _ = write!(body, "<th scope=\"col\">{heading}</th>");
    }
    body.push_str("</tr></thead><tbody>");
    let recent = log["recent"].as_array().cloned().unwrap_or_default();
    if recent.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"muted\">No actions yet.</td></tr>");
    }
    for action in &recent {
        let kind = text(&action["kind"]);
        let length = duration(number(&action["durationSecs"]));
        let shown_text = text(&action["text"]);
        let _ = write!(
            body,
            "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td><span class=\"badge d-{}\">{}</span>{}</td>\
             <td class=\"text\">{}{}</td><td>{}</td><td>{}</td></tr>",
            escape(&when(&action["at"])),
            escape(&text(&action["user"])),
            escape(&kind),
            escape(&kind),
            if length.is_empty() {
                String::new()
            } else {
                format!(" {}", escape(&length))
            },
            escape(&text(&action["reason"])),
            if shown_text.is_empty() {
                String::new()
            } else {
                format!("<blockquote>{}</blockquote>", escape(&shown_text))
            },
            escape(&text(&action["by"])),
            if action["undone"].as_bool() == Some(true) {
                "<span class=\"muted\">undone</span>"
            } else {
                ""
            },
        );
    }
    body.push_str("</tbody></table>");
    shell(&format!("Moderation log: {channel}"), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_escaped() {
        let log = serde_json::json!({
            "channel": "<b>chan</b>",
            "windowDays": 30,
            "counted": "1",
            "recent": [{ "at": "2026-12-07T09:10:11Z", "user": "<script>alert(1)</script>",
                "kind": "timeout", "durationSecs": "600", "reason": "\"quoted\" & <i>",
                "by": "moderator", "text": "<img src=x onerror=alert(1)>", "undone": true }],
            "byReason": [{ "name": "<svg onload=alert(1)>", "count": "1" }],
            "byKind": [{ "name": "timeout", "count": "1" }],
        });
        let page = render(&log);
        for raw in ["<script>", "<img", "<svg", "<b>chan", "<i>"] {
            assert!(!page.contains(raw), "{raw} is not escaped: {page}");
        }
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&quot;quoted&quot; &amp; &lt;i&gt;"));
        assert!(page.contains("2026-12-07 09:10 UTC"));
        assert!(page.contains(">timeout</span> 10 min"));
        assert!(!page.contains("<script"), "no script at all");
    }
}
