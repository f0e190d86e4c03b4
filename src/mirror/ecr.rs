//! What mirroring needs from AWS, as a trait the AWS adapter (`crate::aws`) implements: the
//! account, registry credentials from ECR's API, and the instance's repositories.

use super::credentials::Credentials;
use crate::cloud::DeployError;

/// ECR's API for one account and region, and a way to reach it in another region.
#[allow(async_fn_in_trait)]
pub trait EcrAccess: Sized + Sync {
    /// ECR in `region`, with the credentials of `profile` or the default chain.
    async fn connect(region: &str, profile: Option<&str>) -> Result<Self, DeployError>;
    /// The region the calls go to.
    fn region(&self) -> &str;
    /// The account the credentials belong to.
    async fn account(&self) -> Result<String, DeployError>;
    /// Registry credentials from `GetAuthorizationToken`: user `AWS` and a token valid for 12
    /// hours, which never leaves the `Secret` it is decoded into.
    async fn registry_credentials(&self) -> Result<Credentials, DeployError>;
    /// Creates a repository unless it exists: immutable tags, scan on push, KMS encryption,
    /// untagged images expiring after 14 days. Returns whether it was created.
    async fn ensure_repository(&self, name: &str) -> Result<bool, DeployError>;
}
