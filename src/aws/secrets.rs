//! The instance's control-plane identity in AWS Secrets Manager: the instance ID, organization
//! and the current token, under `stackwright/<instance>/control-plane`. Nothing here logs or
//! returns the token in an error.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;

use super::{Aws, sdk_error};
use crate::control_plane::IdentityStore;
pub use crate::control_plane::StoredIdentity;
use crate::provision::DeployError;

/// The secret of one instance.
pub struct IdentitySecret {
    client: Client,
    name: String,
}

impl IdentitySecret {
    pub fn new(aws: &Aws, instance: &str) -> Self {
        IdentitySecret {
            client: Client::new(&aws.config),
            name: format!("stackwright/{instance}/control-plane"),
        }
    }

    /// The stored identity, or `None` before the instance registered.
    async fn read_secret(&self) -> Result<Option<StoredIdentity>, DeployError> {
        let output = match self
            .client
            .get_secret_value()
            .secret_id(&self.name)
            .send()
            .await
        {
            Ok(output) => output,
            Err(error) if error.code() == Some("ResourceNotFoundException") => {
                return Ok(None);
            }
            Err(error) => return Err(sdk_error("secretsmanager:GetSecretValue", error)),
        };
        let text = output.secret_string().unwrap_or_default();
        serde_json::from_str(text)
            .map(Some)
            .map_err(|error| DeployError::Aws {
                operation: "secretsmanager:GetSecretValue",
                code: Some("MalformedSecret".into()),
                message: format!(
                    "the secret {} does not hold a control-plane identity ({})",
                    self.name,
                    error.classify_without_data()
                ),
            })
    }

    /// Stores `identity`, creating the secret on first use.
    async fn write_secret(&self, identity: &StoredIdentity) -> Result<(), DeployError> {
        let body = serde_json::to_string(identity).map_err(|error| DeployError::Aws {
            operation: "secretsmanager:PutSecretValue",
            code: None,
            message: format!("the identity does not serialize: {error}"),
        })?;
        let put = self
            .client
            .put_secret_value()
            .secret_id(&self.name)
            .secret_string(&body)
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("ResourceNotFoundException") => {
                self.client
                    .create_secret()
                    .name(&self.name)
                    .description(
                        "stackwright: this instance's identity at the vendor's control plane",
                    )
                    .secret_string(&body)
                    .send()
                    .await
                    .map_err(|error| sdk_error("secretsmanager:CreateSecret", error))?;
                Ok(())
            }
            Err(error) => Err(sdk_error("secretsmanager:PutSecretValue", error)),
        }
    }

    /// Removes the identity (teardown).
    pub async fn delete(&self) -> Result<(), DeployError> {
        match self
            .client
            .delete_secret()
            .secret_id(&self.name)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("ResourceNotFoundException") => Ok(()),
            Err(error) => Err(sdk_error("secretsmanager:DeleteSecret", error)),
        }
    }
}

/// serde_json's error without the data it quotes, which could be the token.
trait Classify {
    fn classify_without_data(&self) -> String;
}

impl Classify for serde_json::Error {
    fn classify_without_data(&self) -> String {
        format!(
            "{:?} error at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

#[async_trait::async_trait]
impl IdentityStore for IdentitySecret {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&self) -> Result<Option<StoredIdentity>, DeployError> {
        self.read_secret().await
    }

    async fn write(&self, identity: &StoredIdentity) -> Result<(), DeployError> {
        self.write_secret(identity).await
    }
}
