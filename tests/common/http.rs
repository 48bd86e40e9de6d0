//! A small JSON client of the HTTP edge for tests: bearer tokens or a console session (cookie
//! and CSRF token kept after `login`), answers read whole or as Server-Sent Events.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An answer read whole.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: serde_json::Value,
}

impl Reply {
    /// The JSON error's `code`, for a failed call.
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }

    /// The JSON error's `field`.
    pub fn field(&self) -> &str {
        self.json["field"].as_str().unwrap_or("")
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// The client.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    bearer: Option<String>,
    /// The session cookie's value, after a login.
    pub cookie: Option<String>,
    /// The session's CSRF token, after a login.
    pub csrf: Option<String>,
}

impl Http {
    /// A client of the server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            bearer: None,
            cookie: None,
            csrf: None,
        }
    }

    /// The same client sending `authorization: Bearer <token>`.
    #[must_use]
    pub fn with_bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_owned());
        self
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// POSTs `json` to `path`.
    pub async fn post(&self, path: &str, json: &serde_json::Value) -> Reply {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            json.to_string().into_bytes(),
        )
        .await
    }

    /// GETs `path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], Vec::new()).await
    }

    /// Any request, with the client's credentials and `headers` (which win).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let request = self.build(method, path, headers, body);
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("{method} {path} did not answer in 30 s"))
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body is read")
            .to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    fn build(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> http::Request<Full<Bytes>> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.bearer {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        if let Some(cookie) = &self.cookie {
            builder = builder.header("cookie", format!("modbot_session={cookie}"));
        }
        if let Some(csrf) = &self.csrf
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("x-csrf-token"))
        {
            builder = builder.header("x-csrf-token", csrf);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request")
    }

    /// Signs in to the console with `token`; on success keeps the cookie and CSRF token.
    pub async fn login(&mut self, token: &str) -> Reply {
        let reply = self
            .post("/console/login", &serde_json::json!({ "token": token }))
            .await;
        if reply.status == 200 {
            let set_cookie = reply.header("set-cookie");
            let value = set_cookie
                .split(';')
                .next()
                .and_then(|pair| pair.strip_prefix("modbot_session="))
                .expect("a session cookie");
            self.cookie = Some(value.to_owned());
            self.csrf = reply.json["csrfToken"].as_str().map(str::to_owned);
        }
        reply
    }

    /// GETs `path` as Server-Sent Events: the status, and the events as they come.
    pub async fn events(&self, path: &str) -> (u16, Events) {
        let request = self.build("GET", path, &[("accept", "text/event-stream")], Vec::new());
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("the stream answers in 30 s")
            .expect("the stream opens");
        let status = response.status().as_u16();
        (
            status,
            Events {
                body: response.into_body(),
                buffer: String::new(),
            },
        )
    }
}

/// A Server-Sent Events stream.
pub struct Events {
    body: hyper::body::Incoming,
    buffer: String,
}

/// One event: its type (`message` unless named) and its data as JSON.
#[derive(Debug, Clone)]
pub struct Event {
    /// The `event:` field, or `message`.
    pub kind: String,
    /// The `data:` field as JSON.
    pub data: serde_json::Value,
}

impl Events {
    /// The next event (comments and keep-alives skipped), or `None` when the stream ends or
    /// nothing comes within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut kind = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        kind = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if !data.is_empty() {
                    return Some(Event {
                        kind,
                        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                    });
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??;
            if let Ok(data) = frame.ok()?.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}
