//! ECR's API for mirroring: the authorization token a registry login takes, and the instance's
//! repositories, created with the settings the bootstrap template gives them.

use base64::Engine as _;

use super::{Aws, sdk_error};
use crate::cloud::DeployError;
use crate::mirror::{Credentials, EcrAccess, Secret};

/// Untagged images expire after 14 days, as in the bootstrap template.
const LIFECYCLE_POLICY: &str = r#"{"rules":[{"rulePriority":1,"description":"Expire untagged images","selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;

pub struct Ecr {
    client: aws_sdk_ecr::Client,
}

impl Ecr {
    pub fn new(aws: &Aws) -> Self {
        Ecr {
            client: aws_sdk_ecr::Client::new(&aws.config),
        }
    }

    /// Registry credentials from `GetAuthorizationToken`: user `AWS` and a token valid for 12
    /// hours, which never leaves the `Secret` it is decoded into.
    pub async fn credentials(&self) -> Result<Credentials, DeployError> {
        let output = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|error| sdk_error("ecr:GetAuthorizationToken", error))?;
        let malformed = || DeployError::Aws {
            operation: "ecr:GetAuthorizationToken",
            code: None,
            message: "the answer holds no usable authorization token".into(),
        };
        let token = output
            .authorization_data()
            .first()
            .and_then(|data| data.authorization_token())
            .ok_or_else(malformed)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (username, password) = decoded.split_once(':').ok_or_else(malformed)?;
        Ok(Credentials::Basic {
            username: username.to_owned(),
            password: Secret::new(password),
        })
    }

    /// Creates a repository unless it exists: immutable tags, scan on push, KMS encryption,
    /// untagged images expiring after 14 days. Returns whether it was created.
    pub async fn ensure_repository(&self, name: &str) -> Result<bool, DeployError> {
        use aws_sdk_ecr::types::{
            EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability,
        };
        let encryption = EncryptionConfiguration::builder()
            .encryption_type(EncryptionType::Kms)
            .build()
            .map_err(|error| DeployError::Aws {
                operation: "ecr:CreateRepository",
                code: None,
                message: error.to_string(),
            })?;
        let result = self
            .client
            .create_repository()
            .repository_name(name)
            .image_tag_mutability(ImageTagMutability::Immutable)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .encryption_configuration(encryption)
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|error| error.is_repository_already_exists_exception()) =>
            {
                return Ok(false);
            }
            Err(error) => return Err(sdk_error("ecr:CreateRepository", error)),
        }
        self.client
            .put_lifecycle_policy()
            .repository_name(name)
            .lifecycle_policy_text(LIFECYCLE_POLICY)
            .send()
            .await
            .map_err(|error| sdk_error("ecr:PutLifecyclePolicy", error))?;
        Ok(true)
    }
}

/// Mirroring reaches ECR through the same connection as everything else, and connects to the
/// vendor's region with the same profile when its registry is elsewhere.
impl EcrAccess for Aws {
    async fn connect(region: &str, profile: Option<&str>) -> Result<Self, DeployError> {
        Aws::connect(region, profile).await
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn account(&self) -> Result<String, DeployError> {
        Ok(self.caller_identity().await?.account)
    }

    async fn registry_credentials(&self) -> Result<Credentials, DeployError> {
        Ecr::new(self).credentials().await
    }

    async fn ensure_repository(&self, name: &str) -> Result<bool, DeployError> {
        Ecr::new(self).ensure_repository(name).await
    }
}
