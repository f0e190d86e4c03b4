//! The operator's side of the reference control plane: admin calls on a running server
//! (rollouts, withdrawals, registration tokens, what it holds per instance), authenticated with
//! the credential the server wrote at start.

use std::path::{Path, PathBuf};

use semver::Version;

use super::api::{
    InstanceRecord, RegistrationTokenCreated, RegistrationTokenRequest, ReleaseStatus,
    RolloutRequest, SecretToken,
};
use super::client::{ControlPlaneClientSettings, ControlPlaneError, HttpControlPlane, Repeat};

/// The running server's address, when not given on the command line.
pub const URL_VARIABLE: &str = "STACKWRIGHT_CONTROL_PLANE_URL";
/// The file holding the running server's admin credential.
pub const ADMIN_TOKEN_FILE_VARIABLE: &str = "STACKWRIGHT_CONTROL_PLANE_ADMIN_TOKEN_FILE";

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot read the admin credential from {}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin credential file {} is empty", path.display())]
    EmptyTokenFile { path: PathBuf },
    #[error(transparent)]
    Call(#[from] ControlPlaneError),
}

impl OperatorError {
    pub fn hint(&self) -> Option<String> {
        match self {
            OperatorError::TokenFile { .. } | OperatorError::EmptyTokenFile { .. } => {
                Some(format!(
                    "start the server (`scripts/dev-env.sh up`, then `source target/dev-env/env.sh`) or point {ADMIN_TOKEN_FILE_VARIABLE} at the admin-token file it wrote"
                ))
            }
            OperatorError::Call(ControlPlaneError::Unauthorized { .. }) => Some(format!(
                "{ADMIN_TOKEN_FILE_VARIABLE} must name the admin-token file of the server at {URL_VARIABLE}; it is written anew each time the server starts"
            )),
            OperatorError::Call(ControlPlaneError::Unreachable { .. }) => Some(format!(
                "is the server running? `scripts/dev-env.sh up` starts it and writes {URL_VARIABLE} into target/dev-env/env.sh"
            )),
            OperatorError::Call(error) => error.hint(),
        }
    }
}

/// Admin calls on a running reference server.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: HttpControlPlane,
    credential: SecretToken,
}

impl AdminClient {
    pub fn new(url: &str, credential: SecretToken) -> Result<Self, OperatorError> {
        Ok(AdminClient {
            http: HttpControlPlane::new(ControlPlaneClientSettings::new(url)?)?,
            credential,
        })
    }

    /// Reads the credential from the file the server wrote.
    pub fn from_token_file(url: &str, path: &Path) -> Result<Self, OperatorError> {
        let text = std::fs::read_to_string(path).map_err(|source| OperatorError::TokenFile {
            path: path.to_owned(),
            source,
        })?;
        let credential = text.trim();
        if credential.is_empty() {
            return Err(OperatorError::EmptyTokenFile {
                path: path.to_owned(),
            });
        }
        Self::new(url, SecretToken::new(credential))
    }

    async fn post<B: serde::Serialize + Sync, T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        repeat: Repeat,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<T, OperatorError> {
        let url = self.http.url(segments);
        let client = self.http.http();
        Ok(self
            .http
            .call(operation, repeat, || {
                let request = client
                    .post(url.clone())
                    .bearer_auth(self.credential.expose());
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        segments: &[&str],
    ) -> Result<T, OperatorError> {
        let url = self.http.url(segments);
        let client = self.http.http();
        Ok(self
            .http
            .call(operation, Repeat::Safe, || {
                client
                    .get(url.clone())
                    .bearer_auth(self.credential.expose())
            })
            .await?)
    }

    pub async fn rollout(&self, request: &RolloutRequest) -> Result<ReleaseStatus, OperatorError> {
        self.post(
            "rollout",
            Repeat::Safe,
            &["admin", "v1", "rollouts"],
            Some(request),
        )
        .await
    }

    pub async fn withdraw(&self, version: &Version) -> Result<ReleaseStatus, OperatorError> {
        let version = version.to_string();
        self.post::<(), _>(
            "withdrawal",
            Repeat::Safe,
            &["admin", "v1", "releases", &version, "withdraw"],
            None,
        )
        .await
    }

    pub async fn registration_token(
        &self,
        request: &RegistrationTokenRequest,
    ) -> Result<RegistrationTokenCreated, OperatorError> {
        self.post(
            "registration token",
            Repeat::IfNotProcessed,
            &["admin", "v1", "registration-tokens"],
            Some(request),
        )
        .await
    }

    pub async fn releases(&self) -> Result<Vec<ReleaseStatus>, OperatorError> {
        self.get("release listing", &["admin", "v1", "releases"])
            .await
    }

    pub async fn instances(&self) -> Result<Vec<InstanceRecord>, OperatorError> {
        self.get("instance listing", &["admin", "v1", "instances"])
            .await
    }
}
