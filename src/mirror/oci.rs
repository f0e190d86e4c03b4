//! The registry adapter: blobs, mounts and authentication through `oci-client`; manifests through
//! a few requests of our own, because `oci-client` returns a pulled manifest without its media
//! type and cannot push one by digest to a registry that omits the `Location` header (ECR).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use super::credentials::{Credentials, RegistryEndpoint, Secret};
use super::registry::{
    BlobStream, MANIFEST_ACCEPT, Manifest, Registry, RegistryError, is_digest, sha256_digest,
};

/// One registry, one connection pool.
pub struct OciRegistry {
    endpoint: RegistryEndpoint,
    display: String,
    credentials: Credentials,
    client: oci_client::Client,
    http: reqwest::Client,
    /// Bearer tokens by repository and operation, for registries that issue them; `None` when
    /// the registry takes the credentials as they are (HTTP Basic, as ECR and htpasswd do).
    tokens: tokio::sync::Mutex<HashMap<(String, bool), Option<Secret>>>,
    /// Repositories the registry has been authenticated for through `oci-client`.
    authenticated: Mutex<HashMap<(String, bool), ()>>,
    /// Set once the registry has answered a challenge without issuing a bearer token: it takes
    /// the credentials as they are for every repository, so our own requests skip the challenge.
    takes_credentials_as_they_are: std::sync::atomic::AtomicBool,
}

impl OciRegistry {
    pub fn new(
        endpoint: RegistryEndpoint,
        credentials: Credentials,
    ) -> Result<Self, RegistryError> {
        let display = endpoint.display_name();
        if endpoint.plain_http && !endpoint.is_loopback() {
            return Err(RegistryError::Other {
                registry: display,
                message: format!(
                    "plain HTTP is used only with a registry on a loopback address, and {} is not one: credentials and images would cross the network unprotected",
                    endpoint.address
                ),
            });
        }
        // The platform's roots and STACKWRIGHT_CA_BUNDLE, for oci-client and our own requests.
        let roots =
            crate::tls::ExtraRoots::from_environment().map_err(|error| RegistryError::Other {
                registry: display.clone(),
                message: format!("{error} ({})", error.hint()),
            })?;
        let protocol = if endpoint.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let extra_root_certificates = if roots.is_empty() {
            Vec::new()
        } else {
            vec![oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: roots.pem().to_vec(),
            }]
        };
        let config = ClientConfig {
            protocol,
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("stackwright/", env!("CARGO_PKG_VERSION")),
            extra_root_certificates,
            ..ClientConfig::default()
        };
        let client = oci_client::Client::new(config);
        let http = roots
            .http_client(endpoint.plain_http)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|error| RegistryError::Other {
                registry: display.clone(),
                message: format!("cannot set up an HTTP client: {error}"),
            })?;
        Ok(OciRegistry {
            endpoint,
            display,
            credentials,
            client,
            http,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            authenticated: Mutex::new(HashMap::new()),
            takes_credentials_as_they_are: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn registry_auth(&self) -> RegistryAuth {
        match &self.credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.expose().to_owned())
            }
        }
    }

    fn reference(&self, repository: &str, reference: &str) -> Reference {
        if is_digest(reference) {
            Reference::with_digest(
                self.endpoint.address.clone(),
                repository.to_owned(),
                reference.to_owned(),
            )
        } else {
            Reference::with_tag(
                self.endpoint.address.clone(),
                repository.to_owned(),
                reference.to_owned(),
            )
        }
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.endpoint.plain_http {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}/v2/{path}", self.endpoint.address)
    }

    /// Makes sure `oci-client` has authenticated for a repository before a blob operation.
    async fn ensure_oci_auth(&self, repository: &str, push: bool) -> Result<(), RegistryError> {
        let key = (repository.to_owned(), push);
        if self
            .authenticated
            .lock()
            .map(|seen| seen.contains_key(&key))
            .unwrap_or(false)
        {
            return Ok(());
        }
        // oci-client keeps its credentials per repository and operation: it needs its own
        // challenge for each, whatever the registry said before.
        let operation = if push {
            RegistryOperation::Push
        } else {
            RegistryOperation::Pull
        };
        self.client
            .auth(
                &self.reference(repository, "latest"),
                &self.registry_auth(),
                operation,
            )
            .await
            .map_err(|error| self.map_error(repository, "authentication", error))?;
        if let Ok(mut seen) = self.authenticated.lock() {
            seen.insert(key, ());
        }
        Ok(())
    }

    /// The bearer token for a repository, fetched once; `None` for Basic or anonymous access.
    async fn token(&self, repository: &str, push: bool) -> Result<Option<Secret>, RegistryError> {
        use std::sync::atomic::Ordering;
        if self.takes_credentials_as_they_are.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let key = (repository.to_owned(), push);
        let mut tokens = self.tokens.lock().await;
        // Another request may have learnt it while this one waited for the lock.
        if self.takes_credentials_as_they_are.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(token) = tokens.get(&key) {
            return Ok(token.clone());
        }
        let operation = if push {
            RegistryOperation::Push
        } else {
            RegistryOperation::Pull
        };
        let reference = self.reference(repository, "latest");
        let token = self
            .client
            .auth(&reference, &self.registry_auth(), operation)
            .await
            .map_err(|error| self.map_error(repository, "authentication", error))?
            .map(Secret::new);
        if token.is_none() {
            self.takes_credentials_as_they_are
                .store(true, Ordering::Relaxed);
        }
        tokens.insert(key, token.clone());
        Ok(token)
    }

    async fn authorization(
        &self,
        repository: &str,
        push: bool,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let value = match (self.token(repository, push).await?, &self.credentials) {
            (Some(token), _) => format!("Bearer {}", token.expose()),
            (None, Credentials::Basic { username, password }) => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()));
                format!("Basic {encoded}")
            }
            (None, Credentials::Anonymous) => return Ok(None),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| RegistryError::Other {
            registry: self.display.clone(),
            message: "the credentials hold characters that cannot be sent in an HTTP header".into(),
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    async fn send(
        &self,
        repository: &str,
        push: bool,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let request = match self.authorization(repository, push).await? {
            Some(value) => request.header(AUTHORIZATION, value),
            None => request,
        };
        request
            .send()
            .await
            .map_err(|error| self.request_error(error))
    }

    fn request_error(&self, error: reqwest::Error) -> RegistryError {
        let message = error_chain(&error);
        if error.is_connect() {
            RegistryError::Unreachable {
                registry: self.display.clone(),
                message,
            }
        } else {
            RegistryError::Transient {
                registry: self.display.clone(),
                message,
            }
        }
    }

    /// An error for an HTTP answer that was not the one expected.
    async fn status_error(
        &self,
        repository: &str,
        what: &str,
        response: reqwest::Response,
    ) -> RegistryError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let detail = registry_message(&body);
        let registry = self.display.clone();
        match status {
            StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
                registry,
                repository: repository.to_owned(),
                anonymous: self.credentials == Credentials::Anonymous,
                detail,
            },
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry,
                repository: repository.to_owned(),
            },
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                registry,
                repository: repository.to_owned(),
                what: what.to_owned(),
            },
            status if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                RegistryError::Transient {
                    registry,
                    message: format!(
                        "{what}: HTTP {status}{}",
                        detail.map(|d| format!(": {d}")).unwrap_or_default()
                    ),
                }
            }
            _ if body.contains("DIGEST_INVALID") => RegistryError::DigestMismatch {
                registry,
                repository: repository.to_owned(),
                digest: what.to_owned(),
                detail,
            },
            status => RegistryError::Other {
                registry,
                message: format!(
                    "{what} in {repository}: HTTP {status}{}",
                    detail.map(|d| format!(": {d}")).unwrap_or_default()
                ),
            },
        }
    }

    fn map_error(
        &self,
        repository: &str,
        what: &str,
        error: OciDistributionError,
    ) -> RegistryError {
        let registry = self.display.clone();
        match error {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
                registry,
                repository: repository.to_owned(),
                anonymous: self.credentials == Credentials::Anonymous,
                detail: None,
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized))
                {
                    RegistryError::Unauthorized {
                        registry,
                        repository: repository.to_owned(),
                        anonymous: self.credentials == Credentials::Anonymous,
                        detail: Some(message),
                    }
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                    RegistryError::Denied {
                        registry,
                        repository: repository.to_owned(),
                    }
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::DigestInvalid))
                {
                    RegistryError::DigestMismatch {
                        registry,
                        repository: repository.to_owned(),
                        digest: what.to_owned(),
                        detail: Some(message),
                    }
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::BlobUnknown
                            | OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    RegistryError::NotFound {
                        registry,
                        repository: repository.to_owned(),
                        what: what.to_owned(),
                    }
                } else {
                    RegistryError::Other {
                        registry,
                        message: format!("{what} in {repository}: {message}"),
                    }
                }
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                401 => RegistryError::Unauthorized {
                    registry,
                    repository: repository.to_owned(),
                    anonymous: self.credentials == Credentials::Anonymous,
                    detail: None,
                },
                403 => RegistryError::Denied {
                    registry,
                    repository: repository.to_owned(),
                },
                404 => RegistryError::NotFound {
                    registry,
                    repository: repository.to_owned(),
                    what: what.to_owned(),
                },
                code if code == 429 || code >= 500 => RegistryError::Transient {
                    registry,
                    message: format!("{what}: HTTP {code}"),
                },
                code => RegistryError::Other {
                    registry,
                    message: format!("{what} in {repository}: HTTP {code}: {}", message.trim()),
                },
            },
            OciDistributionError::DigestError(DigestError::VerificationError {
                actual, ..
            }) => RegistryError::DigestMismatch {
                registry,
                repository: repository.to_owned(),
                digest: what.to_owned(),
                detail: Some(format!("the bytes hash to {actual}")),
            },
            OciDistributionError::RequestError(error) => {
                if let Some(mismatch) = digest_mismatch_in(&error) {
                    return RegistryError::DigestMismatch {
                        registry,
                        repository: repository.to_owned(),
                        digest: what.to_owned(),
                        detail: Some(mismatch),
                    };
                }
                self.request_error(error)
            }
            other => RegistryError::Other {
                registry,
                message: format!("{what} in {repository}: {other}"),
            },
        }
    }
}

/// The message of an error and its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn digest_mismatch_in(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(DigestError::VerificationError { actual, .. }) = cause.downcast_ref() {
            return Some(format!("the bytes hash to {actual}"));
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(DigestError::VerificationError { actual, .. }) = inner.downcast_ref()
        {
            return Some(format!("the bytes hash to {actual}"));
        }
        source = cause.source();
    }
    None
}

/// The `message` fields of an OCI error envelope, or the body's first line.
fn registry_message(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(envelope) = serde_json::from_str::<Envelope>(body) {
        let text = envelope
            .errors
            .iter()
            .map(|entry| {
                format!("{} {}", entry.code, entry.message)
                    .trim()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join("; ");
        return (!text.is_empty()).then_some(text);
    }
    body.lines()
        .next()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| line.chars().take(200).collect())
}

#[async_trait::async_trait]
impl Registry for OciRegistry {
    fn name(&self) -> &str {
        &self.display
    }

    async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        let url = self.url(&format!("{repository}/manifests/{reference}"));
        let request = self.http.head(&url).header(ACCEPT, MANIFEST_ACCEPT);
        let response = self.send(repository, false, request).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => {
                let header = response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|value| value.to_str().ok())
                    .filter(|value| is_digest(value))
                    .map(str::to_owned);
                match header {
                    Some(digest) => Ok(Some(digest)),
                    // Without the header, the digest is that of the bytes a GET returns.
                    None => {
                        let url = self.url(&format!("{repository}/manifests/{reference}"));
                        let request = self.http.get(&url).header(ACCEPT, MANIFEST_ACCEPT);
                        let response = self.send(repository, false, request).await?;
                        if !response.status().is_success() {
                            return Err(self.status_error(repository, reference, response).await);
                        }
                        let bytes = response
                            .bytes()
                            .await
                            .map_err(|error| self.request_error(error))?;
                        Ok(Some(sha256_digest(&bytes)))
                    }
                }
            }
            _ => Err(self
                .status_error(repository, &format!("manifest {reference}"), response)
                .await),
        }
    }

    async fn manifest(&self, repository: &str, digest: &str) -> Result<Manifest, RegistryError> {
        let url = self.url(&format!("{repository}/manifests/{digest}"));
        let request = self.http.get(&url).header(ACCEPT, MANIFEST_ACCEPT);
        let response = self.send(repository, false, request).await?;
        if !response.status().is_success() {
            return Err(self
                .status_error(repository, &format!("manifest {digest}"), response)
                .await);
        }
        let header_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or(value).trim().to_owned());
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.request_error(error))?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.display.clone(),
                repository: repository.to_owned(),
                digest: digest.to_owned(),
                detail: Some(format!("the manifest's bytes hash to {actual}")),
            });
        }
        // The manifest's own mediaType wins over a generic Content-Type.
        let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|value| value.get("mediaType")?.as_str().map(str::to_owned));
        let media_type = declared
            .or(header_type.filter(|value| value.starts_with("application/vnd.")))
            .unwrap_or_else(|| super::registry::OCI_MANIFEST.to_owned());
        Ok(Manifest { media_type, bytes })
    }

    async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("{repository}/manifests/{reference}"));
        let request = self
            .http
            .put(&url)
            .header(CONTENT_TYPE, manifest.media_type.as_str())
            .body(manifest.bytes.clone());
        let response = self.send(repository, true, request).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self
                .status_error(repository, &format!("manifest {reference}"), response)
                .await)
        }
    }

    async fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        self.ensure_oci_auth(repository, false).await?;
        self.client
            .blob_exists(&self.reference(repository, digest), digest)
            .await
            .map_err(|error| self.map_error(repository, digest, error))
    }

    async fn mount_blob(
        &self,
        repository: &str,
        from: &str,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        self.ensure_oci_auth(repository, true).await?;
        match self
            .client
            .mount_blob(
                &self.reference(repository, digest),
                &self.reference(from, digest),
                digest,
            )
            .await
        {
            Ok(()) => Ok(true),
            // The registry declined (it answered 202 with an upload instead): copy the bytes.
            Err(
                OciDistributionError::SpecViolationError(_)
                | OciDistributionError::RegistryNoLocationError
                | OciDistributionError::ServerError { .. },
            ) => Ok(false),
            Err(error) => Err(self.map_error(repository, digest, error)),
        }
    }

    async fn blob(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
    ) -> Result<BlobStream, RegistryError> {
        self.ensure_oci_auth(repository, false).await?;
        let descriptor = OciDescriptor {
            digest: digest.to_owned(),
            size: size as i64,
            ..OciDescriptor::default()
        };
        let sized = self
            .client
            .pull_blob_stream(&self.reference(repository, digest), &descriptor)
            .await
            .map_err(|error| self.map_error(repository, digest, error))?;
        let registry = self.display.clone();
        let repository = repository.to_owned();
        let digest = digest.to_owned();
        let stream = sized.stream.map(move |item| {
            item.map_err(|error| match digest_mismatch_in(&error) {
                Some(detail) => RegistryError::DigestMismatch {
                    registry: registry.clone(),
                    repository: repository.clone(),
                    digest: digest.clone(),
                    detail: Some(detail),
                },
                None => RegistryError::Transient {
                    registry: registry.clone(),
                    message: format!("reading {digest}: {}", error_chain(&error)),
                },
            })
        });
        Ok(Box::pin(HoldLastChunk::new(Box::pin(stream))))
    }

    async fn put_blob(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
        bytes: BlobStream,
    ) -> Result<(), RegistryError> {
        self.ensure_oci_auth(repository, true).await?;
        let stream = bytes.map(|item| {
            item.map_err(|error| OciDistributionError::IoError(std::io::Error::other(error)))
        });
        self.client
            .push_blob_stream(
                &self.reference(repository, digest),
                stream,
                digest,
                Some(size),
            )
            .await
            .map(|_| ())
            .map_err(|error| self.map_error(repository, digest, error))
    }
}

/// Passes chunks on one late: the last one only once the stream has ended cleanly. A source
/// whose bytes fail verification ends with an error instead, so the upload it feeds never
/// receives its full length and cannot be committed, whatever the destination checks.
struct HoldLastChunk {
    inner: BlobStream,
    pending: Option<Bytes>,
    finished: bool,
}

impl HoldLastChunk {
    fn new(inner: BlobStream) -> Self {
        HoldLastChunk {
            inner,
            pending: None,
            finished: false,
        }
    }
}

impl Stream for HoldLastChunk {
    type Item = Result<Bytes, RegistryError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.finished {
                return Poll::Ready(self.pending.take().map(Ok));
            }
            match self.inner.as_mut().poll_next(context) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.finished = true,
                Poll::Ready(Some(Err(error))) => {
                    self.pending = None;
                    self.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    if let Some(previous) = self.pending.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
            }
        }
    }
}
