//! The installer's side: the [`ControlPlane`] trait the core talks to, and
//! [`HttpControlPlane`], its adapter over HTTPS (reqwest with rustls).

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::api::{
    ErrorBody, Heartbeat, HeartbeatReceipt, InstanceCredentials, IssuedToken, OperationReport,
    RegisterRequest, Registration, ReportReceipt, UpdateOffer, UpdateQuery,
};

/// What the installer asks of the vendor's control plane. Every call but `register` carries
/// the instance's token; the implementation never logs or returns it.
#[async_trait]
pub trait ControlPlane: Send + Sync {
    /// Exchange a one-time registration token for the instance's identity and first token.
    async fn register(&self, request: &RegisterRequest) -> Result<Registration, ControlPlaneError>;

    /// Report the instance's status.
    async fn heartbeat(
        &self,
        credentials: &InstanceCredentials,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatReceipt, ControlPlaneError>;

    /// The releases offered to this instance on its channel, newer than `installed_version`.
    async fn check_update(
        &self,
        credentials: &InstanceCredentials,
        query: &UpdateQuery,
    ) -> Result<UpdateOffer, ControlPlaneError>;

    /// Report how an operation ended (idempotent by `operation_id`).
    async fn report(
        &self,
        credentials: &InstanceCredentials,
        report: &OperationReport,
    ) -> Result<ReportReceipt, ControlPlaneError>;

    /// A new token for a valid, unexpired one.
    async fn refresh(
        &self,
        credentials: &InstanceCredentials,
    ) -> Result<IssuedToken, ControlPlaneError>;
}

/// Why a call to the control plane failed. Never carries a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("the control plane URL \"{url}\" is not usable: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot set up the HTTP client: {reason}")]
    Client { reason: String },
    #[error(
        "the control plane at {url} did not answer the {operation} after {attempts} attempt(s): {reason}"
    )]
    Unreachable {
        operation: &'static str,
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error("the control plane at {url} cannot be trusted for the {operation}: {problem}")]
    Certificate {
        operation: &'static str,
        url: String,
        problem: String,
    },
    #[error("the control plane refused the {operation}'s credentials ({code}): {reason}")]
    Unauthorized {
        operation: &'static str,
        code: String,
        reason: String,
    },
    #[error("the control plane refused the {operation} with HTTP {status} ({code}): {reason}")]
    Refused {
        operation: &'static str,
        status: u16,
        code: String,
        reason: String,
    },
    #[error(
        "the control plane's answer to the {operation} (HTTP {status}) is not what the API describes: {reason}"
    )]
    InvalidResponse {
        operation: &'static str,
        status: u16,
        reason: String,
    },
}

impl ControlPlaneError {
    /// The fix to print after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            ControlPlaneError::InvalidUrl { .. } => Some(
                "set control_plane.url in the configuration, --control-plane-url or STACKWRIGHT_CONTROL_PLANE_URL to an https:// URL (http:// only on a loopback address)"
                    .into(),
            ),
            ControlPlaneError::Client { .. } => None,
            ControlPlaneError::Certificate { .. } => Some(crate::tls::certificate_hint()),
            ControlPlaneError::Unreachable { .. } => Some(
                "check that the control plane's address is reachable from here (`stackwright preflight`), through the proxy or PrivateLink endpoint in all-private mode".into(),
            ),
            ControlPlaneError::Unauthorized { operation: "register", .. } => Some(
                "registration tokens work once and expire: ask the vendor for a new one".into(),
            ),
            ControlPlaneError::Unauthorized { code, .. } if code == "token_expired" => Some(
                "the instance's token expired before it was refreshed: put a new registration token from the vendor in stackwright.token beside the configuration (or STACKWRIGHT_REGISTRATION_TOKEN) and run the command again; the instance registers anew".into(),
            ),
            ControlPlaneError::Unauthorized { .. } => Some(
                "the instance's token is not accepted: put a new registration token from the vendor in stackwright.token beside the configuration (or STACKWRIGHT_REGISTRATION_TOKEN) and run the command again; the instance registers anew".into(),
            ),
            ControlPlaneError::Refused { .. } | ControlPlaneError::InvalidResponse { .. } => {
                Some("check that control_plane.url points at the vendor's control plane".into())
            }
        }
    }

    /// Whether the instance must register again (its token is no good).
    pub fn needs_registration(&self) -> bool {
        matches!(self, ControlPlaneError::Unauthorized { operation, .. } if *operation != "register")
    }
}

/// How to reach the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneClientSettings {
    /// The API's base URL; the paths of the OpenAPI document are resolved below it.
    pub base_url: Url,
    pub connect_timeout: Duration,
    /// For one attempt, connection included.
    pub request_timeout: Duration,
    /// Attempts per call, for transient failures (connection refused or reset, timeouts on
    /// calls that are safe to repeat, HTTP 429, 502, 503, 504).
    pub attempts: u32,
    /// Wait before the second attempt; doubles for each one after.
    pub backoff: Duration,
}

impl ControlPlaneClientSettings {
    /// Defaults for `url`: 5 s to connect, 15 s per attempt, 3 attempts, 250 ms backoff.
    pub fn new(url: &str) -> Result<Self, ControlPlaneError> {
        let invalid = |reason: String| ControlPlaneError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let mut base_url = Url::parse(url).map_err(|error| invalid(error.to_string()))?;
        match base_url.scheme() {
            "https" => {}
            "http" if is_loopback(&base_url) => {}
            "http" => {
                return Err(invalid(
                    "plain http:// is only allowed on a loopback address".into(),
                ));
            }
            scheme => return Err(invalid(format!("the scheme {scheme} is not http or https"))),
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            return Err(invalid("credentials do not belong in the URL".into()));
        }
        base_url.set_query(None);
        base_url.set_fragment(None);
        Ok(ControlPlaneClientSettings {
            base_url,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            attempts: 3,
            backoff: Duration::from_millis(250),
        })
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        Some(url::Host::Domain(domain)) => domain == "localhost",
        None => false,
    }
}

/// The control plane over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpControlPlane {
    settings: ControlPlaneClientSettings,
    client: reqwest::Client,
}

/// Whether a call may be sent again after a failure that may have reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Repeat {
    /// Only when the request cannot have been processed (no connection, 429, 503).
    IfNotProcessed,
    /// Whenever the failure is transient.
    Safe,
}

impl HttpControlPlane {
    pub fn new(settings: ControlPlaneClientSettings) -> Result<Self, ControlPlaneError> {
        // The platform's roots and STACKWRIGHT_CA_BUNDLE; plain HTTP only for a loopback URL,
        // which the settings have already checked.
        let roots = crate::tls::ExtraRoots::from_environment().map_err(|error| {
            ControlPlaneError::Client {
                reason: format!("{error} ({})", error.hint()),
            }
        })?;
        let client = roots
            .http_client(settings.base_url.scheme() == "http")
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .build()
            .map_err(|error| ControlPlaneError::Client {
                reason: error.to_string(),
            })?;
        Ok(HttpControlPlane { settings, client })
    }

    /// A client for `url` with the default timeouts and retries.
    pub fn for_url(url: &str) -> Result<Self, ControlPlaneError> {
        Self::new(ControlPlaneClientSettings::new(url)?)
    }

    pub fn base_url(&self) -> &Url {
        &self.settings.base_url
    }

    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.settings.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn instance_url(&self, instance_id: &str, last: &str) -> Url {
        self.url(&["v1", "instances", instance_id, last])
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.client
    }

    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        repeat: Repeat,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, ControlPlaneError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.settings.attempts.max(1);
            let outcome = request().send().await;
            let response = match outcome {
                Ok(response) => response,
                Err(error) => {
                    if let Some(problem) = crate::tls::certificate_problem(&error) {
                        return Err(ControlPlaneError::Certificate {
                            operation,
                            url: self.settings.base_url.to_string(),
                            problem,
                        });
                    }
                    let unprocessed = error.is_connect();
                    let transient = unprocessed || error.is_timeout() || error.is_request();
                    if transient && !last && (unprocessed || repeat == Repeat::Safe) {
                        tracing::debug!(
                            operation,
                            attempt,
                            "control plane unreachable, retrying: {error}"
                        );
                        self.pause(attempt).await;
                        continue;
                    }
                    return Err(ControlPlaneError::Unreachable {
                        operation,
                        url: self.settings.base_url.to_string(),
                        attempts: attempt,
                        reason: describe(&error),
                    });
                }
            };
            let status = response.status().as_u16();
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(error) => {
                    if !last && repeat == Repeat::Safe {
                        self.pause(attempt).await;
                        continue;
                    }
                    return Err(ControlPlaneError::Unreachable {
                        operation,
                        url: self.settings.base_url.to_string(),
                        attempts: attempt,
                        reason: describe(&error),
                    });
                }
            };
            tracing::debug!(operation, attempt, status, "control plane answered");
            if (200..300).contains(&status) {
                return serde_json::from_slice(&body).map_err(|error| {
                    ControlPlaneError::InvalidResponse {
                        operation,
                        status,
                        reason: error.to_string(),
                    }
                });
            }
            let unprocessed = matches!(status, 429 | 503);
            let transient = unprocessed || matches!(status, 502 | 504);
            if transient && !last && (unprocessed || repeat == Repeat::Safe) {
                self.pause(attempt).await;
                continue;
            }
            let (code, reason) = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(ErrorBody { error, reason }) => (error, reason),
                Err(_) => (
                    "unknown".to_owned(),
                    format!("the body is not an API error ({} bytes)", body.len()),
                ),
            };
            return Err(if status == 401 {
                ControlPlaneError::Unauthorized {
                    operation,
                    code,
                    reason,
                }
            } else {
                ControlPlaneError::Refused {
                    operation,
                    status,
                    code,
                    reason,
                }
            });
        }
    }

    async fn pause(&self, attempt: u32) {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(6));
        tokio::time::sleep(self.settings.backoff.saturating_mul(factor)).await;
    }
}

/// The error and its causes in one line. reqwest's errors name the URL, which never holds a
/// token (tokens travel only in the `Authorization` header).
fn describe(error: &reqwest::Error) -> String {
    crate::tls::describe_error(error)
}

fn json_request<B: Serialize + ?Sized>(
    builder: reqwest::RequestBuilder,
    body: &B,
) -> reqwest::RequestBuilder {
    builder.json(body)
}

#[async_trait]
impl ControlPlane for HttpControlPlane {
    async fn register(&self, request: &RegisterRequest) -> Result<Registration, ControlPlaneError> {
        let url = self.url(&["v1", "register"]);
        // A registration token works once: repeat only what cannot have reached the server.
        self.call("register", Repeat::IfNotProcessed, || {
            json_request(self.client.post(url.clone()), request)
        })
        .await
    }

    async fn heartbeat(
        &self,
        credentials: &InstanceCredentials,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatReceipt, ControlPlaneError> {
        let url = self.instance_url(&credentials.instance_id, "heartbeats");
        self.call("heartbeat", Repeat::Safe, || {
            json_request(self.client.post(url.clone()), heartbeat)
                .bearer_auth(credentials.token.expose())
        })
        .await
    }

    async fn check_update(
        &self,
        credentials: &InstanceCredentials,
        query: &UpdateQuery,
    ) -> Result<UpdateOffer, ControlPlaneError> {
        let url = self.instance_url(&credentials.instance_id, "updates");
        self.call("update check", Repeat::Safe, || {
            self.client
                .get(url.clone())
                .query(query)
                .bearer_auth(credentials.token.expose())
        })
        .await
    }

    async fn report(
        &self,
        credentials: &InstanceCredentials,
        report: &OperationReport,
    ) -> Result<ReportReceipt, ControlPlaneError> {
        let url = self.instance_url(&credentials.instance_id, "reports");
        // Idempotent: the server records an operation ID once.
        self.call("report", Repeat::Safe, || {
            json_request(self.client.post(url.clone()), report)
                .bearer_auth(credentials.token.expose())
        })
        .await
    }

    async fn refresh(
        &self,
        credentials: &InstanceCredentials,
    ) -> Result<IssuedToken, ControlPlaneError> {
        let url = self.instance_url(&credentials.instance_id, "token");
        self.call("token refresh", Repeat::Safe, || {
            self.client
                .post(url.clone())
                .bearer_auth(credentials.token.expose())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(ControlPlaneClientSettings::new("http://127.0.0.1:8470").is_ok());
        assert!(ControlPlaneClientSettings::new("http://localhost:8470/api").is_ok());
        assert!(ControlPlaneClientSettings::new("https://control.example.com").is_ok());
        assert!(ControlPlaneClientSettings::new("http://control.example.com").is_err());
        assert!(ControlPlaneClientSettings::new("https://user:pw@control.example.com").is_err());
        assert!(ControlPlaneClientSettings::new("control.example.com").is_err());
    }

    #[test]
    fn paths_resolve_below_the_base_url() {
        let client = HttpControlPlane::for_url("http://127.0.0.1:8470/api/").unwrap();
        assert_eq!(
            client.instance_url("abc/../x", "updates").as_str(),
            "http://127.0.0.1:8470/api/v1/instances/abc%2F..%2Fx/updates"
        );
        let client = HttpControlPlane::for_url("http://127.0.0.1:8470").unwrap();
        assert_eq!(
            client.url(&["v1", "register"]).as_str(),
            "http://127.0.0.1:8470/v1/register"
        );
    }
}
