//! The reference control plane: an axum server implementing `api/control-plane.openapi.yaml`
//! for development, tests and demos. It issues and verifies instance tokens, offers releases
//! from its directory in waves, records heartbeats and reports in SQLite, serves the signed
//! release repository, and takes an operator's rollouts through admin calls authenticated by a
//! credential it generates at start into a file only its owner can read.
//!
//! Update checks are the hot path: they verify the token (remembered once verified, see
//! [`super::tokens`]) and read an in-memory snapshot of the offerable releases; SQLite is
//! touched only by writes and by operator changes, which rebuild the snapshot.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use jiff::Timestamp;
use semver::Version;
use sha2::{Digest, Sha256};
use url::Url;

use super::api::{
    ErrorBody, Heartbeat, HeartbeatReceipt, IssuedToken, OperationReport, RegisterRequest,
    Registration, RegistrationTokenCreated, RegistrationTokenRequest, ReleaseStatus, ReportReceipt,
    RolloutRequest, SecretToken, UpdateOffer, UpdateQuery,
};
use super::catalog::{CatalogError, CatalogRelease, Snapshot, load_releases};
use super::listener::{TlsFiles, TlsFilesError, TlsListener};
use super::store::{RegistrationRefusal, Rollout, Store, StoreError};
use super::tokens::{Identity, KeyError, TokenAuthority, load_or_create_key, write_private};

/// The admin credential's file name, beside the database unless told otherwise.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Registration tokens start with this, so that one is recognisable when found lying around.
pub const REGISTRATION_TOKEN_PREFIX: &str = "swr_";
const DEFAULT_REGISTRATION_LIFETIME: u64 = 86_400;
const MAX_REGISTRATION_LIFETIME: u64 = 30 * 86_400;
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Holds `releases/*.json` and the signed repository in `repository/`.
    pub releases: PathBuf,
    /// The SQLite file; the signing key and the admin credential are kept beside it.
    pub database: PathBuf,
    /// How installers reach this server, for the repository's URL and the tokens' issuer;
    /// `https://<listen address>` (or `http://` with `plain_http`) when absent.
    pub public_url: Option<Url>,
    /// Where offers say the signed repository is (a vendor that publishes to a CDN or an S3
    /// bucket names it here); `<public URL>/repository/`, which this server serves, when absent.
    pub repository_url: Option<String>,
    /// The certificate and key to serve HTTPS with.
    pub tls: Option<TlsFiles>,
    /// Serve plain HTTP instead: only when asked, and only on a loopback address.
    pub plain_http: bool,
    pub token_lifetime: Duration,
    /// Where to write the admin credential; `admin-token` beside the database when absent.
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the server needs a certificate and key to serve HTTPS (--tls-cert and --tls-key)")]
    NoCertificate,
    #[error(
        "plain HTTP is served only on a loopback address, and {address} is not one: installers would send their tokens in clear"
    )]
    PlainHttpOffLoopback { address: SocketAddr },
    #[error("both a certificate and plain HTTP were asked for: choose one")]
    TlsAndPlainHttp,
    #[error(transparent)]
    Tls(#[from] TlsFilesError),
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the directory {}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot write the admin credential to {}", path.display())]
    AdminToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the server stopped")]
    Serve(#[source] std::io::Error),
    #[error("cannot generate random bytes")]
    Random,
}

struct AppState {
    store: Arc<Store>,
    tokens: TokenAuthority,
    releases: Vec<CatalogRelease>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Operator changes happen one at a time, so each snapshot follows from the last write.
    changes: tokio::sync::Mutex<()>,
    admin_token_sha256: [u8; 32],
    repository: PathBuf,
    repository_url: Arc<str>,
}

impl ServerError {
    /// The fix to print after the error, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            ServerError::NoCertificate => Some("pass --tls-cert and --tls-key (`scripts/dev-env.sh up` makes a local CA and a certificate for 127.0.0.1 in target/dev-env/tls/); for plain HTTP on a loopback address, pass --plain-http".into()),
            ServerError::PlainHttpOffLoopback { .. } => Some("listen on 127.0.0.1 or [::1] for plain HTTP, or serve HTTPS with --tls-cert and --tls-key".into()),
            ServerError::TlsAndPlainHttp => Some("leave out --plain-http to serve HTTPS".into()),
            ServerError::Tls(_) => Some("--tls-cert names a PEM file of the server's certificate chain, --tls-key a PEM file of its private key (PKCS#8, PKCS#1 or SEC1)".into()),
            _ => None,
        }
    }
}

/// Where connections come from: TLS, or plain TCP on loopback.
enum Listening {
    Tls(TlsListener),
    Plain(tokio::net::TcpListener),
}

/// A bound server, ready to run.
pub struct Server {
    listener: Listening,
    state: Arc<AppState>,
    url: Url,
    admin_token_file: PathBuf,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Server")
            .field("url", &self.url.as_str())
            .field("admin_token_file", &self.admin_token_file)
            .finish_non_exhaustive()
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ServerError> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ServerError::Random)?;
    Ok(bytes)
}

fn random_text(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Server {
    /// Opens the database, loads the releases and the signing key, writes a fresh admin
    /// credential, and binds the listening socket.
    pub async fn bind(settings: ServerSettings) -> Result<Self, ServerError> {
        let directory = settings
            .database
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        std::fs::create_dir_all(&directory).map_err(|source| ServerError::Directory {
            path: directory.clone(),
            source,
        })?;
        let tls = match (&settings.tls, settings.plain_http) {
            (Some(_), true) => return Err(ServerError::TlsAndPlainHttp),
            (Some(files), false) => Some(files.server_config()?),
            (None, true) if settings.listen.ip().is_loopback() => None,
            (None, true) => {
                return Err(ServerError::PlainHttpOffLoopback {
                    address: settings.listen,
                });
            }
            (None, false) => return Err(ServerError::NoCertificate),
        };
        let store = Arc::new(Store::open(&settings.database)?);
        let releases = load_releases(&settings.releases)?;
        let key = load_or_create_key(&directory)?;

        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| ServerError::Bind {
                address: settings.listen,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind {
            address: settings.listen,
            source,
        })?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = match settings.public_url {
            Some(url) => url,
            None => Url::parse(&format!("{scheme}://{local}/")).map_err(|_| ServerError::Bind {
                address: local,
                source: std::io::Error::other("the address does not make a URL"),
            })?,
        };
        let issuer = url.as_str().trim_end_matches('/').to_owned();
        let tokens = TokenAuthority::new(&key, issuer, settings.token_lifetime)?;

        let admin_token = format!("swa_{}", random_text(&random_bytes::<32>()?));
        let admin_token_file = settings
            .admin_token_file
            .unwrap_or_else(|| directory.join(ADMIN_TOKEN_FILE));
        write_private(&admin_token_file, admin_token.as_bytes()).map_err(|source| {
            ServerError::AdminToken {
                path: admin_token_file.clone(),
                source,
            }
        })?;

        let rollouts = store.rollouts()?;
        let snapshot = Snapshot::build(&releases, &rollouts);
        let repository_url = settings
            .repository_url
            .unwrap_or_else(|| format!("{}repository/", url_with_slash(&url)));
        let state = Arc::new(AppState {
            store,
            tokens,
            releases,
            snapshot: RwLock::new(Arc::new(snapshot)),
            changes: tokio::sync::Mutex::new(()),
            admin_token_sha256: Sha256::digest(admin_token.as_bytes()).into(),
            repository: settings.releases.join("repository"),
            repository_url: repository_url.into(),
        });
        let listener = match tls {
            Some(config) => {
                Listening::Tls(TlsListener::new(listener, config).map_err(|source| {
                    ServerError::Bind {
                        address: local,
                        source,
                    }
                })?)
            }
            None => Listening::Plain(listener),
        };
        Ok(Server {
            listener,
            state,
            url,
            admin_token_file,
        })
    }

    /// The URL installers use.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listening::Tls(listener) => axum::serve::Listener::local_addr(listener).ok(),
            Listening::Plain(listener) => listener.local_addr().ok(),
        }
    }

    pub fn admin_token_file(&self) -> &Path {
        &self.admin_token_file
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let router = router(self.state);
        match self.listener {
            Listening::Tls(listener) => axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(ServerError::Serve),
            Listening::Plain(listener) => axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(ServerError::Serve),
        }
    }
}

fn url_with_slash(url: &Url) -> String {
    let text = url.as_str();
    if text.ends_with('/') {
        text.to_owned()
    } else {
        format!("{text}/")
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/register", post(register))
        .route("/v1/instances/{instance_id}/heartbeats", post(heartbeat))
        .route("/v1/instances/{instance_id}/updates", get(check_update))
        .route("/v1/instances/{instance_id}/reports", post(report))
        .route("/v1/instances/{instance_id}/token", post(refresh))
        .route("/repository/{*path}", get(repository_file))
        .route(
            "/admin/v1/registration-tokens",
            post(create_registration_token),
        )
        .route("/admin/v1/rollouts", post(rollout))
        .route("/admin/v1/releases", get(releases))
        .route("/admin/v1/releases/{version}/withdraw", post(withdraw))
        .route("/admin/v1/instances", get(instances))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// An answer other than success: the status, a stable code and a reason.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            reason: reason.into(),
        }
    }

    fn bad_request(reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", reason)
    }

    fn unauthorized(code: &'static str, reason: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, code, reason)
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {error}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the control plane failed to handle the request; it is logged on the server",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.code.to_owned(),
                reason: self.reason,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::internal(error)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, "invalid_request", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Runs a database call off the request threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(
            "token_missing",
            "this call needs an `Authorization: Bearer <token>` header",
        )
    })?;
    let text = value.to_str().map_err(|_| {
        ApiError::unauthorized("token_malformed", "the Authorization header is not text")
    })?;
    let (scheme, token) = text.split_once(' ').ok_or_else(|| {
        ApiError::unauthorized(
            "token_malformed",
            "the Authorization header is not `Bearer <token>`",
        )
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthorized(
            "token_malformed",
            "the Authorization header is not `Bearer <token>`",
        ));
    }
    Ok(token.trim())
}

/// The instance a request speaks for, which must be the one its path names.
fn authenticate(state: &AppState, headers: &HeaderMap, instance_id: &str) -> ApiResult<Identity> {
    let token = bearer(headers)?;
    let identity = state
        .tokens
        .verify(token, Timestamp::now())
        .map_err(|refusal| ApiError::unauthorized(refusal.code, refusal.reason))?;
    if *identity.instance_id != *instance_id {
        return Err(ApiError::unauthorized(
            "token_other_instance",
            "the token was issued to another instance than the one this path names",
        ));
    }
    Ok(identity)
}

fn authenticate_admin(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let refused = || {
        ApiError::unauthorized(
            "admin_unauthorized",
            "admin calls need the server's admin credential as `Authorization: Bearer <credential>`",
        )
    };
    let token = bearer(headers).map_err(|_| refused())?;
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    // Digests of equal length compared whole: the time taken says nothing about the credential.
    let difference = digest
        .iter()
        .zip(state.admin_token_sha256.iter())
        .fold(0u8, |difference, (left, right)| difference | (left ^ right));
    if difference == 0 {
        Ok(())
    } else {
        Err(refused())
    }
}

fn check_channel(channel: &str, field: &str) -> ApiResult<()> {
    let valid = !channel.is_empty()
        && channel.len() <= 32
        && channel
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !channel.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field}: a channel is 1 to 32 lowercase letters, digits and dashes"
        )))
    }
}

fn check_organization(organization: &str) -> ApiResult<()> {
    let valid = !organization.is_empty()
        && organization.len() <= 63
        && organization
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !organization.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "organization_id: 1 to 63 lowercase letters, digits and dashes",
        ))
    }
}

fn check_length(value: &str, max: usize, field: &str) -> ApiResult<()> {
    if value.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "{field}: longer than {max} characters"
        )));
    }
    Ok(())
}

fn check_heartbeat(heartbeat: &Heartbeat) -> ApiResult<()> {
    check_channel(&heartbeat.channel, "channel")?;
    if heartbeat.stacks.len() > 32 {
        return Err(ApiError::bad_request("stacks: more than 32"));
    }
    for stack in &heartbeat.stacks {
        if stack.name.is_empty() {
            return Err(ApiError::bad_request("stacks[].name: empty"));
        }
        check_length(&stack.name, 128, "stacks[].name")?;
        check_length(&stack.status, 64, "stacks[].status")?;
        if let Some(status) = &stack.change_set_status {
            check_length(status, 64, "stacks[].change_set_status")?;
        }
    }
    if let Some(lock) = &heartbeat.lock {
        check_length(&lock.holder, 256, "lock.holder")?;
        check_length(&lock.operation, 64, "lock.operation")?;
    }
    Ok(())
}

fn check_operation_id(operation_id: &str) -> ApiResult<()> {
    if uuid::Uuid::parse_str(operation_id).is_err() {
        return Err(ApiError::bad_request("operation_id: not a UUID"));
    }
    Ok(())
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path in this API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take that method",
    )
}

async fn register(
    State(state): State<Arc<AppState>>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Registration>)> {
    let Json(request) = body?;
    let token = request.registration_token.expose().to_owned();
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::unauthorized(
            "registration_token_unknown",
            "the registration token is not one this control plane issued",
        ));
    }
    let instance_id = uuid::Uuid::new_v4().to_string();
    let now = Timestamp::now();
    let outcome = {
        let store = Arc::clone(&state.store);
        let instance_id = instance_id.clone();
        let installer_version = request.installer_version.clone();
        blocking(move || store.register(&token, &instance_id, installer_version.as_ref(), now))
            .await?
    };
    let organization_id = outcome.map_err(|refusal| match refusal {
        RegistrationRefusal::Unknown => ApiError::unauthorized(
            "registration_token_unknown",
            "the registration token is not one this control plane issued",
        ),
        RegistrationRefusal::Used => ApiError::unauthorized(
            "registration_token_used",
            "the registration token was already used; each one registers a single instance",
        ),
        RegistrationRefusal::Expired => ApiError::unauthorized(
            "registration_token_expired",
            "the registration token expired; ask for a new one",
        ),
    })?;
    let (token, expires_at) = state
        .tokens
        .issue(&instance_id, &organization_id, now)
        .map_err(ApiError::internal)?;
    tracing::info!(instance = %instance_id, organization = %organization_id, "instance registered");
    Ok((
        StatusCode::CREATED,
        Json(Registration {
            instance_id,
            organization_id,
            token,
            expires_at,
        }),
    ))
}

async fn heartbeat(
    State(state): State<Arc<AppState>>,
    path: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<Heartbeat>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<HeartbeatReceipt>)> {
    let UrlPath(instance_id) = path?;
    let identity = authenticate(&state, &headers, &instance_id)?;
    let Json(heartbeat) = body?;
    check_heartbeat(&heartbeat)?;
    let now = Timestamp::now();
    let store = Arc::clone(&state.store);
    blocking(move || store.record_heartbeat(&identity.instance_id, &heartbeat, now)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(HeartbeatReceipt { received_at: now }),
    ))
}

async fn check_update(
    State(state): State<Arc<AppState>>,
    path: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<UpdateQuery>, QueryRejection>,
) -> ApiResult<Json<UpdateOffer>> {
    let UrlPath(instance_id) = path?;
    let identity = authenticate(&state, &headers, &instance_id)?;
    let Query(query) = query?;
    check_channel(&query.channel, "channel")?;
    let snapshot = state
        .snapshot
        .read()
        .map(|snapshot| Arc::clone(&snapshot))
        .map_err(|_| ApiError::internal("the release snapshot's lock is poisoned"))?;
    let releases = snapshot.offer(
        &query.channel,
        query.installed_version.as_ref(),
        identity.wave_bucket,
    );
    Ok(Json(UpdateOffer {
        instance_id,
        channel: query.channel,
        installed_version: query.installed_version,
        releases,
        repository: state.repository_url.to_string(),
    }))
}

async fn report(
    State(state): State<Arc<AppState>>,
    path: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<OperationReport>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ReportReceipt>)> {
    let UrlPath(instance_id) = path?;
    let identity = authenticate(&state, &headers, &instance_id)?;
    let Json(report) = body?;
    check_operation_id(&report.operation_id)?;
    check_length(&report.detail, 4096, "detail")?;
    let now = Timestamp::now();
    let operation_id = report.operation_id.clone();
    let store = Arc::clone(&state.store);
    let recorded = {
        let report = report.clone();
        blocking(move || store.record_report(&identity.instance_id, &report, now)).await?
    };
    if recorded {
        tracing::info!(
            instance = %instance_id,
            operation = report.kind.as_str(),
            outcome = report.outcome.as_str(),
            to = %report.to_version,
            "operation reported"
        );
    }
    Ok((
        StatusCode::CREATED,
        Json(ReportReceipt {
            operation_id,
            received_at: now,
            duplicate: !recorded,
        }),
    ))
}

async fn refresh(
    State(state): State<Arc<AppState>>,
    path: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Json<IssuedToken>> {
    let UrlPath(instance_id) = path?;
    let identity = authenticate(&state, &headers, &instance_id)?;
    let exists = {
        let store = Arc::clone(&state.store);
        let instance_id = Arc::clone(&identity.instance_id);
        blocking(move || store.instance_exists(&instance_id)).await?
    };
    if !exists {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "instance_unknown",
            "this control plane holds no such instance; register it again",
        ));
    }
    let (token, expires_at) = state
        .tokens
        .issue(
            &identity.instance_id,
            &identity.organization_id,
            Timestamp::now(),
        )
        .map_err(ApiError::internal)?;
    Ok(Json(IssuedToken { token, expires_at }))
}

/// A file of the signed repository. Only plain names below the directory are served.
async fn repository_file(
    State(state): State<Arc<AppState>>,
    path: Result<UrlPath<String>, PathRejection>,
) -> ApiResult<Response> {
    let UrlPath(path) = path?;
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file in the repository",
        )
    };
    let relative = Path::new(&path);
    let plain = !path.is_empty()
        && !path.contains('\\')
        && !path.contains('\0')
        && relative
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
    if !plain {
        return Err(missing());
    }
    let full = state.repository.join(relative);
    match tokio::fs::read(&full).await {
        Ok(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
        Err(_) => Err(missing()),
    }
}

async fn create_registration_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<RegistrationTokenRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<RegistrationTokenCreated>)> {
    authenticate_admin(&state, &headers)?;
    let Json(request) = body?;
    let organization_id = match request.organization_id {
        Some(organization) => {
            check_organization(&organization)?;
            organization
        }
        None => {
            let bytes = random_bytes::<6>().map_err(ApiError::internal)?;
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("org-{hex}")
        }
    };
    let lifetime = request
        .expires_in_seconds
        .unwrap_or(DEFAULT_REGISTRATION_LIFETIME);
    if lifetime == 0 || lifetime > MAX_REGISTRATION_LIFETIME {
        return Err(ApiError::bad_request(format!(
            "expires_in_seconds: between 1 and {MAX_REGISTRATION_LIFETIME}"
        )));
    }
    let now = Timestamp::now();
    let expires_at = now
        .checked_add(jiff::SignedDuration::from_secs(
            i64::try_from(lifetime).unwrap_or(i64::MAX),
        ))
        .map_err(ApiError::internal)?;
    let token = format!(
        "{REGISTRATION_TOKEN_PREFIX}{}",
        random_text(&random_bytes::<32>().map_err(ApiError::internal)?)
    );
    {
        let store = Arc::clone(&state.store);
        let token = token.clone();
        let organization_id = organization_id.clone();
        blocking(move || {
            store.create_registration_token(&token, &organization_id, now, expires_at)
        })
        .await?;
    }
    tracing::info!(organization = %organization_id, "registration token created");
    Ok((
        StatusCode::CREATED,
        Json(RegistrationTokenCreated {
            registration_token: SecretToken::new(token),
            organization_id,
            expires_at,
        }),
    ))
}

fn find_release<'a>(state: &'a AppState, version: &Version) -> ApiResult<&'a CatalogRelease> {
    state
        .releases
        .iter()
        .find(|release| release.version == *version)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "release_unknown",
                format!("no release {version} in this control plane's directory"),
            )
        })
}

/// Writes a rollout and rebuilds the snapshot update checks read.
async fn save_rollout(state: &AppState, rollout: Rollout) -> ApiResult<ReleaseStatus> {
    let store = Arc::clone(&state.store);
    let rollouts = {
        let rollout = rollout.clone();
        blocking(move || {
            store.save_rollout(&rollout)?;
            store.rollouts()
        })
        .await?
    };
    let snapshot = Snapshot::build(&state.releases, &rollouts);
    match state.snapshot.write() {
        Ok(mut current) => *current = Arc::new(snapshot),
        Err(_) => {
            return Err(ApiError::internal(
                "the release snapshot's lock is poisoned",
            ));
        }
    }
    Ok(ReleaseStatus::from(&rollout))
}

async fn rollout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<RolloutRequest>, JsonRejection>,
) -> ApiResult<Json<ReleaseStatus>> {
    authenticate_admin(&state, &headers)?;
    let Json(request) = body?;
    check_channel(&request.channel, "channel")?;
    if request.percent > 100 {
        return Err(ApiError::bad_request("percent: between 0 and 100"));
    }
    let release = find_release(&state, &request.version)?;
    if release.channel != request.channel {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "channel_mismatch",
            format!(
                "release {} is published on the {} channel, not {}",
                release.version, release.channel, request.channel
            ),
        ));
    }
    let _change = state.changes.lock().await;
    let status = save_rollout(
        &state,
        Rollout {
            version: request.version,
            channel: request.channel,
            percent: request.percent,
            urgent: request.urgent,
            withdrawn: false,
            updated_at: Timestamp::now(),
        },
    )
    .await?;
    tracing::info!(version = %status.version, channel = %status.channel, percent = status.percent, urgent = status.urgent, "release rolled out");
    Ok(Json(status))
}

async fn withdraw(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<UrlPath<String>, PathRejection>,
) -> ApiResult<Json<ReleaseStatus>> {
    authenticate_admin(&state, &headers)?;
    let UrlPath(version) = path?;
    let version: Version = version
        .parse()
        .map_err(|_| ApiError::bad_request("version: not a semantic version"))?;
    let release = find_release(&state, &version)?.clone();
    let _change = state.changes.lock().await;
    let current = {
        let store = Arc::clone(&state.store);
        blocking(move || store.rollouts()).await?
    }
    .into_iter()
    .find(|rollout| rollout.version == version);
    let rollout = Rollout {
        withdrawn: true,
        updated_at: Timestamp::now(),
        ..current.unwrap_or(Rollout {
            version: release.version,
            channel: release.channel,
            percent: 0,
            urgent: false,
            withdrawn: true,
            updated_at: Timestamp::now(),
        })
    };
    let status = save_rollout(&state, rollout).await?;
    tracing::info!(version = %status.version, "release withdrawn");
    Ok(Json(status))
}

async fn releases(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<ReleaseStatus>>> {
    authenticate_admin(&state, &headers)?;
    let snapshot = state
        .snapshot
        .read()
        .map(|snapshot| Arc::clone(&snapshot))
        .map_err(|_| ApiError::internal("the release snapshot's lock is poisoned"))?;
    Ok(Json(snapshot.statuses().to_vec()))
}

async fn instances(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<super::api::InstanceRecord>>> {
    authenticate_admin(&state, &headers)?;
    let store = Arc::clone(&state.store);
    Ok(Json(blocking(move || store.instances()).await?))
}
