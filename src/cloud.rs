//! What every layer that talks to AWS shares: the SDK configuration, the error of a failed call,
//! the mapping of an SDK error to it, the polling delay, and the identity the calls are made as. It imports nothing
//! of the crate, so that the core's traits and the AWS adapters can both name it.

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{operation} failed: {message}")]
    Aws {
        operation: &'static str,
        code: Option<String>,
        message: String,
    },
    #[error("no AWS credentials were found")]
    NoCredentials { detail: String },
}

impl DeployError {
    /// The fix to try.
    pub fn hint(&self) -> Option<String> {
        match self {
            DeployError::NoCredentials { .. } => Some(
                "configure credentials (AWS_PROFILE or --profile, environment variables, or an instance role) and try again"
                    .into(),
            ),
            // No AWS error code: the endpoint was not reached, or did not answer as AWS does,
            // which is what a region it does not serve gets.
            DeployError::Aws { code: None, .. } => Some(
                "check the region (instance.region, or --region): it must exist and be enabled for the account; and check that this machine reaches AWS, or the endpoint AWS_ENDPOINT_URL names"
                    .into(),
            ),
            DeployError::Aws { .. } => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            DeployError::Aws { code, .. } => code.as_deref(),
            DeployError::NoCredentials { .. } => None,
        }
    }
}

/// The SDK configuration every AWS client of the installer starts from: the SDK's own
/// settings (credentials, `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>`, profile files),
/// the region and profile when given, and standard retries (3 attempts, or
/// `STACKWRIGHT_AWS_MAX_ATTEMPTS`).
pub async fn sdk_config(region: Option<&str>, profile: Option<&str>) -> aws_config::SdkConfig {
    let attempts = std::env::var("STACKWRIGHT_AWS_MAX_ATTEMPTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3);
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(attempts));
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(profile) = profile {
        loader = loader.profile_name(profile);
    }
    loader.load().await
}

/// An S3 client, with path-style addressing when an endpoint override is set: a local emulator
/// has no DNS for bucket subdomains.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(config);
    if config.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Who the calls are made as.
#[derive(Debug, Clone, Serialize)]
pub struct CallerIdentity {
    pub account: String,
    pub principal: String,
}

/// Maps any SDK error to the operation, AWS's error code and its message. Every service's
/// crate re-exports the same smithy error and response types; CloudFormation's names them.
pub(crate) fn sdk_error<E>(
    operation: &'static str,
    error: aws_sdk_cloudformation::error::SdkError<
        E,
        aws_sdk_cloudformation::config::http::HttpResponse,
    >,
) -> DeployError
where
    E: std::error::Error
        + aws_sdk_cloudformation::error::ProvideErrorMetadata
        + Send
        + Sync
        + 'static,
{
    let code = aws_sdk_cloudformation::error::ProvideErrorMetadata::code(&error).map(str::to_owned);
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let prefix = code
        .as_deref()
        .map(|code| format!("{code}: "))
        .unwrap_or_default();
    let message = match (
        aws_sdk_cloudformation::error::ProvideErrorMetadata::message(&error),
        status,
    ) {
        (Some(message), _) => format!("{prefix}{message}"),
        // The endpoint answered, but not in AWS's error format (an emulator's crash, a proxy).
        (None, Some(status)) => {
            format!("{prefix}the endpoint answered HTTP {status} without an AWS error")
        }
        (None, None) => aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
    };
    DeployError::Aws {
        operation,
        code,
        message,
    }
}

/// A delay that starts short and grows, so a fast operation is seen at once and a slow one is
/// not polled more than every few seconds.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: std::time::Duration,
    max: std::time::Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff {
            next: std::time::Duration::from_millis(50),
            max: std::time::Duration::from_secs(5),
        }
    }

    pub fn next_delay(&mut self) -> std::time::Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_starts_fast_and_backs_off_to_a_ceiling() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..10).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
    }
}
