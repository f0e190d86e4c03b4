//! The instance's identity at the control plane (registered with a one-time token, refreshed
//! before it expires, kept in the identity store), and what the instance tells it: heartbeats
//! and the results of installs.

use std::path::{Path, PathBuf};

use semver::Version;

use crate::control_plane::api::{
    self as wire, Heartbeat, InstanceCredentials, LastOperation, OperationReport, Outcome,
    RegisterRequest, SecretToken, StackStatus,
};
use crate::control_plane::{ControlPlane, StoredIdentity};
use crate::error::Error;
use crate::provision::{self, DeployError, StackDeployer};
use crate::stacks::StackKind;
use crate::state::{HistoryEntry, Installation, OperationKind, OperationResult, StateStore};

use super::{Event, Session, installer_version};

/// Refresh the token once less than this share of its lifetime is left.
const REFRESH_WHEN_LEFT: f64 = 1.0 / 3.0;

/// Where the one-time registration token comes from: `STACKWRIGHT_REGISTRATION_TOKEN`, else
/// the token file. Read only when the instance must register.
#[derive(Debug, Clone)]
pub struct RegistrationToken {
    /// The variable's value, when set.
    pub from_environment: Option<String>,
    /// The token file, resolved against the configuration's directory.
    pub file: PathBuf,
}

impl RegistrationToken {
    /// The token file `file` names, relative to the configuration file's directory as the
    /// configuration's own paths are.
    pub fn beside(config_path: &Path, file: &Path, from_environment: Option<String>) -> Self {
        let file = match config_path.parent() {
            Some(directory) if file.is_relative() => directory.join(file),
            _ => file.to_owned(),
        };
        RegistrationToken {
            from_environment,
            file,
        }
    }

    pub fn read(&self) -> Result<Option<SecretToken>, Error> {
        if let Some(token) = &self.from_environment
            && !token.trim().is_empty()
        {
            return Ok(Some(SecretToken::new(token.trim())));
        }
        match std::fs::read_to_string(&self.file) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(SecretToken::new(text.trim()))),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read {
                path: self.file.clone(),
                source,
            }),
        }
    }
}

fn identity_error(source: DeployError) -> Error {
    Error::Provision(provision::ProvisionError::deploy(
        "control-plane identity",
        source,
    ))
}

/// The instance's identity at the control plane: the stored one (refreshed when a third of its
/// lifetime is left), or a new registration when a registration token is at hand. `None` when
/// the instance has not registered and no token is given.
pub async fn ensure_identity<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    plane: &dyn ControlPlane,
) -> Result<Option<StoredIdentity>, Error> {
    let now = session.clock.now();
    let Some(mut identity) = session.identity.read().await.map_err(identity_error)? else {
        return register(session, plane).await;
    };
    let lifetime = identity
        .expires_at
        .duration_since(identity.issued_at)
        .as_secs_f64();
    let left = identity.expires_at.duration_since(now).as_secs_f64();
    if left < lifetime * REFRESH_WHEN_LEFT {
        let issued = match plane.refresh(&identity.credentials()).await {
            Ok(issued) => issued,
            Err(error) if error.needs_registration() => {
                return match register(session, plane).await? {
                    Some(registered) => Ok(Some(registered)),
                    None => Err(error.into()),
                };
            }
            Err(error) => return Err(error.into()),
        };
        identity.token = issued.token;
        identity.expires_at = issued.expires_at;
        identity.issued_at = now;
        session
            .identity
            .write(&identity)
            .await
            .map_err(identity_error)?;
        tracing::info!(expires_at = %identity.expires_at, "refreshed the control-plane token");
    }
    Ok(Some(identity))
}

/// Registers with the registration token at hand, replacing any stored identity; `None` when
/// there is no token.
pub(super) async fn register<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    plane: &dyn ControlPlane,
) -> Result<Option<StoredIdentity>, Error> {
    let now = session.clock.now();
    let Some(token) = session.registration_token.read()? else {
        return Ok(None);
    };
    let registration = plane
        .register(&RegisterRequest {
            registration_token: token,
            installer_version: Some(installer_version()),
        })
        .await?;
    let identity = StoredIdentity {
        instance_id: registration.instance_id.clone(),
        organization_id: registration.organization_id.clone(),
        token: registration.token.clone(),
        expires_at: registration.expires_at,
        issued_at: now,
    };
    session
        .identity
        .write(&identity)
        .await
        .map_err(identity_error)?;
    session.emit(Event::Registered {
        instance_id: identity.instance_id.clone(),
        organization_id: identity.organization_id.clone(),
        secret: session.identity.name().to_owned(),
    });
    Ok(Some(identity))
}

/// Tells the control plane how the instance is; a failure is logged, never fatal.
pub(super) async fn send_heartbeat<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    plane: &dyn ControlPlane,
    credentials: &InstanceCredentials,
    installation: Option<&Installation>,
) {
    let mut stacks = Vec::new();
    for kind in StackKind::ALL {
        let name = kind.stack_name(session.instance());
        if let Ok(Some(state)) = session.deployer.describe_stack(&name).await {
            stacks.push(StackStatus {
                name,
                status: state.status.clone(),
                change_set_status: None,
            });
        }
    }
    let lock = session
        .state
        .lock()
        .await
        .ok()
        .flatten()
        .map(|lock| wire::LockStatus {
            holder: format!("{} pid {}", lock.holder.host, lock.holder.pid),
            operation: lock.holder.operation.to_string(),
            since: lock.created_at,
        });
    let history = session.state.history().await.unwrap_or_default();
    let heartbeat = Heartbeat {
        installed_version: installation
            .and_then(|record| record.installed_release.as_deref())
            .and_then(|text| text.parse().ok()),
        installer_version: installer_version(),
        channel: session.config.release.channel.clone(),
        stacks,
        lock,
        last_operation: last_operation(history),
    };
    if let Err(error) = plane.heartbeat(credentials, &heartbeat).await {
        tracing::warn!(%error, "the heartbeat was not delivered");
    }
}

/// The last operation's result as the control plane hears of it. A hand-over to a newer
/// installer is a step on the way, not an operation's result.
fn last_operation(history: Vec<HistoryEntry>) -> Option<LastOperation> {
    let last = history
        .into_iter()
        .filter(|entry| entry.result != OperationResult::HandedOver)
        .max_by_key(|entry| entry.finished_at)?;
    Some(LastOperation {
        kind: match last.kind {
            OperationKind::Install => wire::OperationKind::Install,
            OperationKind::Upgrade => wire::OperationKind::Upgrade,
            OperationKind::Teardown => wire::OperationKind::Teardown,
        },
        outcome: match last.result {
            OperationResult::Succeeded => Outcome::Succeeded,
            OperationResult::Parked => Outcome::Parked,
            OperationResult::RolledBack => Outcome::RolledBack,
            _ => Outcome::Failed,
        },
        from_version: last.from_release.and_then(|text| text.parse().ok()),
        to_version: last.to_release.and_then(|text| text.parse().ok()),
        finished_at: Some(last.finished_at),
    })
}

/// After an install: registers when a registration token is at hand, then sends a heartbeat
/// and the install's result (`from` → `to` of operation `operation_id`; no `to` when nothing
/// changed). The control plane is contacted only once the instance has an identity or a
/// token; a failure there never undoes the install, and is told as an event.
pub async fn after_install<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    operation_id: &str,
    from: Option<&str>,
    to: Option<&str>,
) {
    let result = async {
        let plane = session.control_plane()?;
        let Some(identity) = ensure_identity(session, plane).await? else {
            // Said once, after the install that changed something, not on every re-run.
            if to.is_some() {
                session.emit(Event::NotRegistered {
                    token_file: session
                        .config
                        .control_plane
                        .registration_token_file
                        .display()
                        .to_string(),
                });
            }
            return Ok::<_, Error>(());
        };
        let credentials = identity.credentials();
        let installation = session.state.installation().await?;
        send_heartbeat(session, plane, &credentials, installation.as_ref()).await;
        if let Some(to) = to.and_then(|text| text.parse::<Version>().ok()) {
            let report = OperationReport {
                operation_id: operation_id.to_owned(),
                kind: wire::OperationKind::Install,
                from_version: from.and_then(|text| text.parse().ok()),
                to_version: to,
                outcome: Outcome::Succeeded,
                detail: String::new(),
            };
            plane.report(&credentials, &report).await?;
        }
        Ok(())
    }
    .await;
    if let Err(error) = result {
        session.emit(Event::InstallNotReported {
            error: error.to_string(),
            hint: error.hint(),
        });
    }
}
