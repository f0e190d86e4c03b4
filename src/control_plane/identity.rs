//! The instance's identity at the control plane as the installer keeps it between runs, and
//! the [`IdentityStore`] that keeps it (Secrets Manager in AWS). Nothing here logs the token.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::api::{InstanceCredentials, SecretToken};
use crate::provision::DeployError;

/// What is kept between runs.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredIdentity {
    pub instance_id: String,
    pub organization_id: String,
    pub token: SecretToken,
    pub expires_at: jiff::Timestamp,
    pub issued_at: jiff::Timestamp,
}

impl std::fmt::Debug for StoredIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StoredIdentity")
            .field("instance_id", &self.instance_id)
            .field("organization_id", &self.organization_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl StoredIdentity {
    pub fn credentials(&self) -> InstanceCredentials {
        InstanceCredentials {
            instance_id: self.instance_id.clone(),
            token: self.token.clone(),
        }
    }
}

/// Where the identity is kept.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// The name people know it by (the secret's name).
    fn name(&self) -> &str;
    /// The stored identity, or `None` before the instance registered.
    async fn read(&self) -> Result<Option<StoredIdentity>, DeployError>;
    /// Stores `identity`, replacing what was there.
    async fn write(&self, identity: &StoredIdentity) -> Result<(), DeployError>;
}
