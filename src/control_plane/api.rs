//! The API's wire types, shared by the reference server and the installer's client. The
//! OpenAPI document `api/control-plane.openapi.yaml` describes the same shapes; a test keeps
//! the two in step.

use std::fmt;

use jiff::Timestamp;
use semver::Version;
use serde::{Deserialize, Serialize};

/// The JWT's `principal_type` for an installed instance.
pub const INSTANCE_PRINCIPAL: &str = "instance";
/// The audience every instance token is issued for: this API.
pub const TOKEN_AUDIENCE: &str = "stackwright-control-plane";

/// A bearer token, registration token or admin credential. Its `Debug` never shows the value
/// and it has no `Display`, so it cannot end up in a log line, an error or the output by
/// accident; [`SecretToken::expose`] is the one way to read it, for the `Authorization` header
/// and the store that keeps it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretToken(String);

impl SecretToken {
    pub fn new(value: impl Into<String>) -> Self {
        SecretToken(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecretToken(<redacted>)")
    }
}

impl From<String> for SecretToken {
    fn from(value: String) -> Self {
        SecretToken(value)
    }
}

/// Every error the server answers: a stable code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub reason: String,
}

/// `POST /v1/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The one-time token an operator created for this instance's organization.
    pub registration_token: SecretToken,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer_version: Option<Version>,
}

/// The instance's identity and its first token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub instance_id: String,
    pub organization_id: String,
    pub token: SecretToken,
    pub expires_at: Timestamp,
}

impl Registration {
    pub fn credentials(&self) -> InstanceCredentials {
        InstanceCredentials {
            instance_id: self.instance_id.clone(),
            token: self.token.clone(),
        }
    }
}

/// What an instance sends with every call after registering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCredentials {
    pub instance_id: String,
    pub token: SecretToken,
}

/// `POST /v1/instances/{id}/token`: a new token for a valid one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    pub token: SecretToken,
    pub expires_at: Timestamp,
}

/// The claims of an instance token. Identity only: no names, no e-mail, nothing personal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    pub iss: String,
    pub aud: String,
    /// `instance:<instance_id>`.
    pub sub: String,
    pub principal_type: String,
    pub instance_id: String,
    pub organization_id: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// One stack's state as the installer last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackStatus {
    pub name: String,
    /// CloudFormation's status, such as `UPDATE_COMPLETE`.
    pub status: String,
    /// The status of a change set waiting on the stack, if any.
    #[serde(default)]
    pub change_set_status: Option<String>,
}

/// Who holds the instance's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockStatus {
    /// Host and process, never a person.
    pub holder: String,
    pub operation: String,
    pub since: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Install,
    Upgrade,
    Teardown,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Install => "install",
            OperationKind::Upgrade => "upgrade",
            OperationKind::Teardown => "teardown",
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Failed, and CloudFormation rolled the stacks back.
    RolledBack,
    /// Not applied: the policy would not approve its changes; left for a person.
    Parked,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Parked => "parked",
        }
    }
}

/// The last finished operation, as a heartbeat carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastOperation {
    pub kind: OperationKind,
    pub outcome: Outcome,
    #[serde(default)]
    pub from_version: Option<Version>,
    #[serde(default)]
    pub to_version: Option<Version>,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
}

/// `POST /v1/instances/{id}/heartbeats`: the instance's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The release the instance runs; none before the first install.
    #[serde(default)]
    pub installed_version: Option<Version>,
    pub installer_version: Version,
    pub channel: String,
    #[serde(default)]
    pub stacks: Vec<StackStatus>,
    /// The lock's holder; none when the lock is free.
    #[serde(default)]
    pub lock: Option<LockStatus>,
    #[serde(default)]
    pub last_operation: Option<LastOperation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReceipt {
    pub received_at: Timestamp,
}

/// `GET /v1/instances/{id}/updates?channel=…&installed_version=…`. Unknown parameters are
/// ignored, so that a newer installer can ask an older server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateQuery {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<Version>,
}

/// A release the control plane offers this instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedRelease {
    pub version: Version,
    /// The vendor asks for it now, even outside a maintenance window.
    pub urgent: bool,
    /// Its manifest's target name in the release repository, such as `releases/1.1.0.json`.
    pub target: String,
}

/// The answer to an update check: the releases offered to this instance, oldest first, and
/// where to verify them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOffer {
    pub instance_id: String,
    pub channel: String,
    #[serde(default)]
    pub installed_version: Option<Version>,
    pub releases: Vec<OfferedRelease>,
    /// Base URL of the signed release repository (`metadata/` and `targets/` below it).
    pub repository: String,
}

/// `POST /v1/instances/{id}/reports`: how an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationReport {
    /// Chosen by the installer (a UUID); the same report sent twice is recorded once.
    pub operation_id: String,
    pub kind: OperationKind,
    #[serde(default)]
    pub from_version: Option<Version>,
    pub to_version: Version,
    pub outcome: Outcome,
    #[serde(default)]
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportReceipt {
    pub operation_id: String,
    pub received_at: Timestamp,
    /// The report had been received before; nothing new was recorded.
    pub duplicate: bool,
}

/// `POST /admin/v1/registration-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationTokenRequest {
    /// A new organization when none is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationTokenCreated {
    pub registration_token: SecretToken,
    pub organization_id: String,
    pub expires_at: Timestamp,
}

/// `POST /admin/v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    pub version: Version,
    pub channel: String,
    #[serde(default = "all_instances")]
    pub percent: u8,
    #[serde(default)]
    pub urgent: bool,
}

fn all_instances() -> u8 {
    100
}

/// A release in the catalog and how far it is rolled out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStatus {
    pub version: Version,
    pub channel: String,
    /// Instances in wave buckets below this are offered the release; 0 until rolled out.
    pub percent: u8,
    pub urgent: bool,
    pub withdrawn: bool,
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRecord {
    pub received_at: Timestamp,
    pub heartbeat: Heartbeat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRecord {
    pub received_at: Timestamp,
    pub report: OperationReport,
}

/// What the server holds for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance_id: String,
    pub organization_id: String,
    pub registered_at: Timestamp,
    #[serde(default)]
    pub installer_version: Option<Version>,
    /// 0 to 99: the instance is offered a release rolled out to more than this percentage.
    pub wave_bucket: u8,
    #[serde(default)]
    pub last_heartbeat: Option<HeartbeatRecord>,
    #[serde(default)]
    pub last_report: Option<ReportRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_token_never_shows_in_debug() {
        let request = RegisterRequest {
            registration_token: SecretToken::new("swr_very-secret"),
            installer_version: None,
        };
        let debug = format!("{request:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(debug.contains("<redacted>"));
        // It is still sent on the wire.
        let json = serde_json::to_string(&request).unwrap();
        assert!(json.contains("swr_very-secret"));
    }
}
