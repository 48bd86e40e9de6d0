//! The bridge's and `replay`'s connection to a modbot server: URL, TLS and bearer token.

use std::time::Duration;

use anyhow::Context as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::BridgeConfig;
use crate::proto::moderation_client::ModerationClient;
use crate::proto::{StreamModerateRequest, StreamModerateResponse};

/// How a connection to the server is kept checked: an HTTP/2 PING every `interval`, answered
/// within `timeout`, and TCP keepalive after `interval` of quiet.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    /// Between PINGs.
    pub interval: Duration,
    /// How long a PING may go unanswered.
    pub timeout: Duration,
}

impl Keepalive {
    /// `bridge.keepalive_*_ms` of `bridge`.
    pub fn of(bridge: &BridgeConfig) -> Self {
        Self {
            interval: Duration::from_millis(bridge.keepalive_interval_ms),
            timeout: Duration::from_millis(bridge.keepalive_timeout_ms),
        }
    }
}

impl Default for Keepalive {
    /// The defaults file's `bridge.keepalive_*_ms` (config/modbot.toml defines them).
    fn default() -> Self {
        Self::of(&crate::config::Config::default().bridge)
    }
}

/// How to reach a modbot server.
#[derive(Clone)]
pub struct Server {
    endpoint: Endpoint,
    authorization: Option<MetadataValue<Ascii>>,
}

impl Server {
    /// The server `[bridge]` names: `server_url`, `server_ca_file`, `server_token`.
    pub fn from_config(bridge: &BridgeConfig) -> anyhow::Result<Self> {
        let token = bridge.server_token()?;
        let ca = if bridge.server_ca_file.as_os_str().is_empty() {
            None
        } else {
            Some(std::fs::read(&bridge.server_ca_file).with_context(|| {
                format!(
                    "bridge.server_ca_file: cannot read {}",
                    bridge.server_ca_file.display()
                )
            })?)
        };
        Ok(
            Self::new(&bridge.server_url, ca.as_deref(), token.as_deref())?
                .with_keepalive(Keepalive::of(bridge)),
        )
    }

    /// Connects to the server `bridge` names, or to `url` instead of its `server_url` (a
    /// command's `--server-url`): the server and the connection, or an error naming the URL.
    pub async fn connect_to(
        bridge: &BridgeConfig,
        url: Option<&str>,
    ) -> anyhow::Result<(Self, Channel)> {
        let mut bridge = bridge.clone();
        if let Some(url) = url {
            bridge.server_url = url.to_owned();
        }
        let shown = crate::config::redact_url(&bridge.server_url);
        if !(shown.starts_with("http://") || shown.starts_with("https://")) {
            anyhow::bail!("bridge.server_url: `{shown}` is not an http:// or https:// URL");
        }
        let server = Self::from_config(&bridge)?;
        let channel = server.connect().await.map_err(|error| {
            anyhow::Error::new(error).context(format!(
                "cannot connect to the modbot server at {shown} (bridge.server_url)"
            ))
        })?;
        Ok((server, channel))
    }

    /// The same server with other keepalive timings.
    #[must_use]
    pub fn with_keepalive(mut self, keepalive: Keepalive) -> Self {
        self.endpoint = self
            .endpoint
            .http2_keep_alive_interval(keepalive.interval)
            .keep_alive_timeout(keepalive.timeout)
            .tcp_keepalive(Some(keepalive.interval));
        self
    }

    /// A server at `url` (`http://` or `https://`), trusting `ca_pem` (or the system's roots)
    /// for TLS, sending `token` as a bearer token.
    pub fn new(url: &str, ca_pem: Option<&[u8]>, token: Option<&str>) -> anyhow::Result<Self> {
        let keepalive = Keepalive::default();
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .with_context(|| {
                format!(
                    "bridge.server_url: `{}` is not a URL",
                    crate::config::redact_url(url)
                )
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // A server that vanished without closing (a killed pod, a cut network) is noticed
            // within `keepalive.interval + keepalive.timeout`, not at the next TCP timeout.
            .http2_keep_alive_interval(keepalive.interval)
            .keep_alive_timeout(keepalive.timeout)
            .keep_alive_while_idle(true)
            .tcp_keepalive(Some(keepalive.interval));
        if url.starts_with("https://") {
            let tls = match ca_pem {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .context("bridge.server_url: TLS configuration")?;
        }
        let authorization = token
            .map(|token| {
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .context("bridge.server_token: must be printable ASCII")
            })
            .transpose()?;
        Ok(Self {
            endpoint,
            authorization,
        })
    }

    /// Connects.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        self.endpoint.connect().await
    }

    /// `request` with the bearer token, if there is one.
    pub fn authorize<T>(&self, mut request: tonic::Request<T>) -> tonic::Request<T> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }

    /// Opens a `StreamModerate` stream on `channel` carrying `requests`.
    pub async fn stream_moderate(
        &self,
        channel: Channel,
        requests: impl tokio_stream::Stream<Item = StreamModerateRequest> + Send + 'static,
    ) -> Result<tonic::Streaming<StreamModerateResponse>, tonic::Status> {
        let request = self.authorize(tonic::Request::new(requests));
        let response = ModerationClient::new(channel)
            .stream_moderate(request)
            .await?;
        Ok(response.into_inner())
    }
}
