//! Adapters to AWS: the SDK configuration every client shares, the caller's identity, and the
//! implementations of the core's traits. Endpoints come from the SDK's own settings
//! (`AWS_ENDPOINT_URL` and friends), so the local emulator needs no code path of its own.

mod cloudformation;
mod dynamodb;
mod ecr;
pub mod health;
mod preflight;
mod secrets;

use aws_credential_types::provider::ProvideCredentials;
pub use cloudformation::CloudFormation;
pub use dynamodb::DynamoStateStore;
pub use preflight::AwsAccount;
pub use secrets::{IdentitySecret, StoredIdentity};

// The identity and the error mapping sit in the bottom layer, where every layer may name them.
pub use crate::cloud::CallerIdentity;
use crate::cloud::DeployError;
pub(crate) use crate::cloud::sdk_error;

/// Clients for one account and region.
#[derive(Debug, Clone)]
pub struct Aws {
    pub config: aws_config::SdkConfig,
    pub region: String,
}

impl Aws {
    /// Loads the SDK configuration for a region and optional profile, and checks that
    /// credentials can be found before anything else is attempted.
    pub async fn connect(region: &str, profile: Option<&str>) -> Result<Self, DeployError> {
        let config = crate::cloud::sdk_config(Some(region), profile).await;
        let provider = config
            .credentials_provider()
            .ok_or_else(|| DeployError::NoCredentials {
                detail: "no credentials provider is configured".into(),
            })?;
        provider
            .provide_credentials()
            .await
            .map_err(|error| DeployError::NoCredentials {
                detail: aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
            })?;
        Ok(Aws {
            config,
            region: region.to_owned(),
        })
    }

    /// The account and principal behind the credentials.
    pub async fn caller_identity(&self) -> Result<CallerIdentity, DeployError> {
        let output = aws_sdk_sts::Client::new(&self.config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|error| sdk_error("sts:GetCallerIdentity", error))?;
        Ok(CallerIdentity {
            account: output.account().unwrap_or_default().to_owned(),
            principal: output.arn().unwrap_or_default().to_owned(),
        })
    }

    pub fn cloudformation(&self) -> CloudFormation {
        CloudFormation::new(self)
    }

    /// The state store of an instance.
    pub fn state(&self, instance: &str) -> DynamoStateStore {
        DynamoStateStore::new(self, instance)
    }

    /// S3 with path-style addressing when an endpoint override is set.
    pub(crate) fn s3(&self) -> aws_sdk_s3::Client {
        crate::cloud::s3_client(&self.config)
    }
}

pub(crate) fn timestamp(time: &aws_smithy_types::DateTime) -> jiff::Timestamp {
    jiff::Timestamp::new(time.secs(), time.subsec_nanos() as i32)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}
