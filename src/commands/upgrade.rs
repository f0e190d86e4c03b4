//! `stackwright upgrade`: asks the control plane what is offered, verifies it, decides (the pure
//! decision in `upgrade::decide`), and applies each hop under the lock: mirror the images,
//! plan, review the change sets, approve (a person, or the policy when unattended), apply,
//! record and report. Also the instance's registration, which the first install performs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use semver::Version;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::deploy::{
    Images, Session, apply_plan, block_on, config_hash, confirm, connect, discard_change_sets,
    locked, record_failure,
};
use super::reporter::CliGate;
use crate::aws::{IdentitySecret, StoredIdentity};
use crate::cli::{OutputFormat, UpgradeArgs};
use crate::control_plane::api::{
    self as wire, Heartbeat, InstanceCredentials, LastOperation, OperationReport, Outcome,
    RegisterRequest, SecretToken, StackStatus, UpdateQuery,
};
use crate::control_plane::{ControlPlane, HttpControlPlane};
use crate::error::{Error, ExitStatus};
use crate::output::Printer;
use crate::provision::{self, StackAction};
use crate::release::{self, ReleaseManifest, ReleaseSelection, RepositorySource, VerifiedRelease};
use crate::render;
use crate::settings::GlobalSettings;
use crate::stacks::StackKind;
use crate::state::{
    Installation, InstallationStatus, OperationInputs, OperationKind, OperationResult, StateStore,
    StateWrite,
};
use crate::upgrade::{
    ChangeReview, Decision, Health, OfferedRelease, TemplatePair, UpgradePolicy, decide,
};

/// Refresh the token once less than this share of its lifetime is left.
const REFRESH_WHEN_LEFT: f64 = 1.0 / 3.0;

pub fn upgrade(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &UpgradeArgs,
) -> Result<ExitStatus, Error> {
    // The scheduled job never prompts and logs one JSON object per line.
    let unattended_printer;
    let printer = if args.unattended {
        unattended_printer = Printer::new(OutputFormat::Json, printer.verbosity, true);
        &unattended_printer
    } else {
        printer
    };
    if !args.check && !args.unattended && !settings.assume_yes && !CliGate::interactive() {
        return Err(Error::Unconfirmed {
            action: "upgrade".into(),
        });
    }
    let lock_settings = settings.lock_settings(args.lock.wait)?;
    block_on(async {
        let session = connect(settings).await?;
        let config = &session.config;
        let installation = session.state.installation().await?;
        let installed = installation
            .as_ref()
            .and_then(|record| record.installed_release.as_deref())
            .and_then(|text| text.parse::<Version>().ok())
            .ok_or_else(|| Error::Usage {
                message: format!(
                    "{} has no installed release to upgrade",
                    config.instance.name
                ),
                hint: "install it first: stackwright install".into(),
            })?;
        let plane = HttpControlPlane::for_url(&config.control_plane.url)?;
        let mut identity = ensure_identity(settings, &session, &plane, printer).await?.ok_or_else(|| Error::Usage {
            message: format!("{} has not registered with the control plane, which offers its upgrades", config.instance.name),
            hint: format!(
                "put the registration token the vendor issued in {} (beside the configuration) or STACKWRIGHT_REGISTRATION_TOKEN, and run the command again",
                config.control_plane.registration_token_file.display()
            ),
        })?;
        let query = UpdateQuery {
            channel: config.release.channel.clone(),
            installed_version: Some(installed.clone()),
        };
        let offer = match plane.check_update(&identity.credentials(), &query).await {
            Ok(offer) => offer,
            // The control plane no longer accepts the instance's token: register anew if the
            // vendor's new registration token is at hand, else say how.
            Err(error) if error.needs_registration() => {
                match register(settings, &session, &plane, printer).await? {
                    Some(registered) => identity = registered,
                    None => return Err(error.into()),
                }
                plane.check_update(&identity.credentials(), &query).await?
            }
            Err(error) => return Err(error.into()),
        };
        let credentials = identity.credentials();
        send_heartbeat(&session, &plane, &credentials, installation.as_ref()).await;
        let source: RepositorySource = offer.repository.parse()?;
        let trusted_root = match installation
            .as_ref()
            .and_then(|record| record.trusted_root.clone())
        {
            Some(root) => root.into_bytes(),
            None => settings.trusted_root(None)?,
        };
        let now = jiff::Timestamp::now();
        let mut offered = Vec::new();
        let mut verified = Vec::new();
        for release in &offer.releases {
            let selection = ReleaseSelection::Version(release.version.clone());
            match release::verify(&source, &trusted_root, now, Some(&installed), &selection).await {
                Ok(release_verified) => {
                    offered.push(OfferedRelease::from_manifest(
                        &release_verified.manifest,
                        release.urgent,
                    ));
                    verified.push(release_verified);
                }
                Err(error) => printer.warn(format!(
                    "release {} is offered but refused: {error}",
                    release.version
                )),
            }
        }
        let failed = installation
            .as_ref()
            .map(|record| {
                record
                    .failed_releases
                    .iter()
                    .filter_map(|text| text.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let policy = UpgradePolicy {
            channel: config.release.channel.clone(),
            pin: config.release.pin.clone(),
            target: args.to.clone(),
            // A person upgrading now does not wait for the window; the job does.
            window: if args.unattended {
                config.upgrade.window()
            } else {
                None
            },
            failed,
            installer_version: installer_version(),
        };
        let decision = decide(
            &installed,
            &offered,
            &policy,
            seed(&credentials.instance_id),
            now,
        );
        if printer.json_mode() {
            printer.json_line(&json!({ "event": "decision", "instance": config.instance.name, "decision": decision }));
        } else {
            printer.result(&decision);
        }
        if args.check {
            return Ok(match decision {
                Decision::Upgrade { .. }
                | Decision::Wait { .. }
                | Decision::NeedsInstaller { .. } => ExitStatus::Changes,
                Decision::UpToDate { .. } => ExitStatus::Success,
                Decision::Blocked { .. } => ExitStatus::Failure,
            });
        }
        let path = match decision {
            Decision::Upgrade { path, .. } => path,
            Decision::UpToDate { .. } | Decision::Wait { .. } => return Ok(ExitStatus::Success),
            Decision::NeedsInstaller {
                next, installer, ..
            } => {
                // The scheduled job hands over to the installer the release names, when the
                // release carries one that is new enough.
                let carrier = verified.iter().find(|release| {
                    release.manifest.version == next
                        && release
                            .manifest
                            .installer
                            .as_ref()
                            .is_some_and(|carried| carried.version >= installer)
                });
                if let Some(release) = carrier
                    && args.unattended
                {
                    return hand_over(settings, printer, &session, &lock_settings, release).await;
                }
                return Err(Error::Usage {
                    message: format!(
                        "release {next} needs stackwright {installer} or newer; this is {}",
                        installer_version()
                    ),
                    hint: format!(
                        "run stackwright {installer} or newer (the updater stack moves its task to that installer's image on its next run)"
                    ),
                });
            }
            Decision::Blocked { reason, hint, .. } => {
                return Err(Error::Usage {
                    message: reason,
                    hint,
                });
            }
        };
        // What would stop an install stops an upgrade too, before the lock is taken.
        super::preflight::before_install(printer, &session, &args.preflight).await?;
        let mut from = installed;
        let mut status = ExitStatus::Success;
        for version in path {
            let Some(hop) = verified
                .iter()
                .find(|release| release.manifest.version == version)
            else {
                continue;
            };
            let applied = apply_hop(
                settings,
                printer,
                &session,
                &plane,
                &credentials,
                args,
                &lock_settings,
                &from,
                hop,
            )
            .await;
            // The control plane learns the new state, whatever happened.
            let installation = session.state.installation().await.ok().flatten();
            send_heartbeat(&session, &plane, &credentials, installation.as_ref()).await;
            status = applied?;
            if status != ExitStatus::Success {
                break;
            }
            from = version;
        }
        Ok(status)
    })
}

/// Moves the updater stack's task to the installer image `release` carries (that image
/// mirrored first), under the lock: that installer applies the release on the job's next run. Nothing else changes. Only an updater stack in the account runs the job; a
/// job run elsewhere (a systemd timer) is moved by a person.
async fn hand_over(
    settings: &GlobalSettings,
    printer: &Printer,
    session: &Session,
    lock_settings: &crate::state::LockSettings,
    release: &VerifiedRelease,
) -> Result<ExitStatus, Error> {
    let config = &session.config;
    let manifest = &release.manifest;
    let Some(installer) = &manifest.installer else {
        return Ok(ExitStatus::Success);
    };
    let updater = StackKind::Updater.stack_name(&config.instance.name);
    let exists = provision::StackDeployer::describe_stack(&session.deployer, &updater)
        .await
        .map_err(|source| provision::ProvisionError::deploy(&updater, source))?
        .is_some();
    if !exists {
        return Err(Error::Usage {
            message: format!(
                "release {} needs stackwright {} or newer; this is {}, and no updater stack runs the job in this account",
                manifest.version,
                installer.version,
                installer_version()
            ),
            hint: format!(
                "run stackwright {} or newer where the job runs (the README's systemd timer names the binary)",
                installer.version
            ),
        });
    }
    let installer_only = ReleaseManifest {
        components: Vec::new(),
        ..manifest.clone()
    };
    let stacks: Vec<_> = render::render_all(config, manifest)?
        .into_iter()
        .filter(|stack| stack.kind == StackKind::Updater)
        .collect();
    let inputs = OperationInputs {
        kind: OperationKind::Upgrade,
        release: Some(manifest.version.to_string()),
        config_hash: config_hash(config),
        delete_data: false,
    };
    let detail = format!(
        "the updater runs stackwright {} now, which applies release {} on its next run",
        installer.version, manifest.version
    );
    locked(
        session,
        printer,
        lock_settings,
        &inputs,
        async |operation, installation, _begun| {
            let journal = operation.journal().await;
            let plan = provision::plan(
                &session.deployer,
                &config.instance.name,
                &stacks,
                &session.aws.region,
                true,
            )
            .await?;
            // The installer's image only: the release's own images arrive when the new
            // installer applies it, after its bootstrap stack has made any new repository.
            let images = Images {
                settings,
                printer,
                session,
                release: &installer_only,
            };
            let gate = CliGate { assume_yes: true };
            let applied = apply_plan(
                session,
                printer,
                operation,
                &plan,
                &stacks,
                &gate,
                Some(images),
            )
            .await;
            if let Err(error) = applied {
                return Err(record_failure(operation, installation, error).await);
            }
            let entry = journal.finish(
                OperationResult::HandedOver,
                Some(detail.clone()),
                operation.now(),
            );
            operation.finish(vec![StateWrite::History(entry)]).await?;
            Ok(())
        },
    )
    .await?;
    if printer.json_mode() {
        printer.json_line(&json!({
            "event": "handed_over",
            "release": manifest.version,
            "installer": installer.version,
            "image": installer.image.to_string(),
            "detail": detail,
        }));
    } else {
        printer.result(format!("Handed over: {detail}."));
    }
    Ok(ExitStatus::Success)
}

/// Waits until the platform's services are stable and its targets healthy, or it is clear they
/// will not be; says what it sees while it waits. A health that cannot be read is a problem.
async fn platform_health(session: &Session, printer: &Printer, timeout_seconds: u64) -> Health {
    let stack = StackKind::Platform.stack_name(&session.config.instance.name);
    let show = |health: &Health| {
        if printer.json_mode() {
            printer.json_line(&json!({ "event": "health", "health": health }));
        } else {
            printer.status(health);
        }
    };
    let read = async {
        let resources =
            provision::StackDeployer::stack_resources(&session.deployer, &stack).await?;
        let timeout = std::time::Duration::from_secs(timeout_seconds);
        crate::aws::health::watch(&session.aws, &resources, timeout, show).await
    };
    let health = read.await.unwrap_or_else(|error| Health::Unhealthy {
        problems: vec![format!("its health cannot be read: {error}")],
    });
    show(&health);
    health
}

/// The installer's own version.
fn installer_version() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or_else(|_| Version::new(0, 0, 0))
}

/// A stable number per instance, which spreads a fleet inside its maintenance window.
fn seed(instance_id: &str) -> u64 {
    let digest = Sha256::digest(instance_id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// One hop: the lock, the images, the plan, the review, the approval, the apply, the record and
/// the report.
#[allow(clippy::too_many_arguments)]
async fn apply_hop(
    settings: &GlobalSettings,
    printer: &Printer,
    session: &Session,
    plane: &HttpControlPlane,
    credentials: &InstanceCredentials,
    args: &UpgradeArgs,
    lock_settings: &crate::state::LockSettings,
    from: &Version,
    hop: &VerifiedRelease,
) -> Result<ExitStatus, Error> {
    let started = Instant::now();
    let config = &session.config;
    let manifest: &ReleaseManifest = &hop.manifest;
    let to = manifest.version.clone();
    let stacks = render::render_all(config, manifest)?;
    let inputs = OperationInputs {
        kind: OperationKind::Upgrade,
        release: Some(to.to_string()),
        config_hash: config_hash(config),
        delete_data: false,
    };
    printer.status(format!(
        "Upgrading {} from {from} to {to}",
        config.instance.name
    ));
    let outcome = locked(
        session,
        printer,
        lock_settings,
        &inputs,
        async |operation, installation, _begun| {
            let journal = operation.journal().await;
            let operation_id = journal.operation_id.clone();
            let plan = provision::plan(
                &session.deployer,
                &config.instance.name,
                &stacks,
                &session.aws.region,
                true,
            )
            .await?;
            let mut pairs = Vec::new();
            let mut before = Vec::new();
            for stack in plan
                .stacks
                .iter()
                .filter(|stack| stack.action == StackAction::Update)
            {
                let template = provision::StackDeployer::deployed_template(
                    &session.deployer,
                    &stack.stack_name,
                )
                .await
                .map_err(|source| provision::ProvisionError::deploy(&stack.stack_name, source))?;
                before.push((stack.stack_name.clone(), template));
            }
            for (name, template) in &before {
                if let Some(rendered) = stacks.iter().find(|rendered| rendered.stack_name == *name)
                {
                    pairs.push(TemplatePair {
                        stack: name,
                        before: Some(template),
                        after: &rendered.body,
                    });
                }
            }
            let review = ChangeReview::of(&plan, &pairs);
            if printer.json_mode() {
                printer.json_line(&json!({ "event": "plan", "plan": plan, "review": review }));
            } else {
                printer.status(&plan);
                printer.status(&review);
            }
            let approved = if args.unattended {
                review.approved_by(config.upgrade.auto_approve)
            } else {
                confirm(
                    &CliGate {
                        assume_yes: settings.assume_yes,
                    },
                    &format!("Upgrade {} to {to}?", config.instance.name),
                )
                .await
            };
            if !approved {
                discard_change_sets(&session.deployer, &plan).await;
                if !args.unattended {
                    return Err(Error::Declined {
                        action: "upgrade".into(),
                    });
                }
                let detail = review
                    .blocking()
                    .map(|finding| {
                        format!("{} {} {}", finding.stack, finding.logical_id, finding.kind)
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                let entry = journal.finish(
                    OperationResult::Parked,
                    Some(detail.clone()),
                    operation.now(),
                );
                operation.finish(vec![StateWrite::History(entry)]).await?;
                return Ok((Outcome::Parked, detail, operation_id));
            }
            // The images arrive before the platform stack points at them.
            let images = Images {
                settings,
                printer,
                session,
                release: manifest,
            };
            let gate = CliGate { assume_yes: true };
            let applied = apply_plan(
                session,
                printer,
                operation,
                &plan,
                &stacks,
                &gate,
                Some(images),
            )
            .await;
            let report = match applied {
                Ok(report) => report,
                Err(error) => {
                    let mut installation = installation;
                    if let Some(record) = installation.as_mut()
                        && !record.failed_releases.contains(&to.to_string())
                    {
                        record.failed_releases.push(to.to_string());
                    }
                    return Err(record_failure(operation, installation, error).await);
                }
            };
            // CloudFormation is done; whether the release serves is ECS's and the load
            // balancer's to say.
            let problems = match platform_health(session, printer, args.health_timeout).await {
                Health::Unhealthy { problems } => Some(problems),
                _ => None,
            };
            let mut failed_releases = installation
                .map(|record| record.failed_releases)
                .unwrap_or_default();
            failed_releases.retain(|version| *version != to.to_string());
            if problems.is_some() {
                failed_releases.push(to.to_string());
            }
            let record = Installation {
                installed_release: Some(to.to_string()),
                networking_mode: config.network.mode.to_string(),
                stacks: report
                    .stacks
                    .iter()
                    .map(|stack| stack.stack_name.clone())
                    .collect(),
                status: if problems.is_some() {
                    InstallationStatus::Failed
                } else {
                    InstallationStatus::Installed
                },
                config_hash: journal.config_hash.clone(),
                operation_id: journal.operation_id.clone(),
                updated_at: operation.now(),
                failed_releases,
                trusted_root: String::from_utf8(hop.trusted_root.clone()).ok(),
            };
            let entry = match &problems {
                Some(problems) => journal.finish(
                    OperationResult::Failed,
                    Some(problems.join("; ")),
                    operation.now(),
                ),
                None => journal.finish(OperationResult::Succeeded, None, operation.now()),
            };
            operation
                .finish(vec![
                    StateWrite::Installation(record),
                    StateWrite::History(entry),
                ])
                .await?;
            if let Some(problems) = problems {
                return Err(Error::Unhealthy {
                    instance: config.instance.name.clone(),
                    release: to.to_string(),
                    problems,
                });
            }
            Ok((Outcome::Succeeded, String::new(), operation_id))
        },
    )
    .await;
    let (outcome, detail, operation_id, result) = match outcome {
        Ok((outcome, detail, operation_id)) => (outcome, detail, operation_id, Ok(())),
        Err(error) => {
            // Interrupted or blocked runs are not results; everything else is reported.
            if matches!(
                error.exit_status(),
                ExitStatus::Blocked | ExitStatus::Interrupted
            ) || matches!(error, Error::Declined { .. })
            {
                return Err(error);
            }
            let outcome = if matches!(&error, Error::Provision(error) if error.rolled_back()) {
                Outcome::RolledBack
            } else {
                Outcome::Failed
            };
            (
                outcome,
                error.to_string(),
                uuid::Uuid::new_v4().to_string(),
                Err(error),
            )
        }
    };
    let sent = plane
        .report(
            credentials,
            &OperationReport {
                operation_id,
                kind: wire::OperationKind::Upgrade,
                from_version: Some(from.clone()),
                to_version: to.clone(),
                outcome,
                detail: detail.clone(),
            },
        )
        .await;
    if let Err(error) = sent {
        printer.warn(format!(
            "the result was not reported to the control plane: {error}"
        ));
    }
    let seconds = started.elapsed().as_secs_f64();
    if printer.json_mode() {
        printer.json_line(&json!({ "event": "upgrade_finished", "from": from, "to": to, "outcome": outcome, "seconds": seconds, "detail": detail }));
    }
    if let Err(error) = result {
        if outcome == Outcome::RolledBack && !printer.json_mode() {
            printer.warn(format!(
                "the upgrade to {to} failed and CloudFormation rolled it back: {} still runs {from}; {to} is skipped from now on (retry it with `stackwright upgrade --to {to}`)",
                session.config.instance.name
            ));
        }
        return Err(error);
    }
    match outcome {
        Outcome::Parked => {
            if !printer.json_mode() {
                printer.result(format!("Upgrade to {to} parked: {detail}. Run `stackwright upgrade --to {to}` to review and apply it."));
            }
            Ok(ExitStatus::Parked)
        }
        _ => {
            if !printer.json_mode() {
                printer.result(format!(
                    "Upgraded {} from {from} to {to} in {seconds:.1} s.",
                    session.config.instance.name
                ));
            }
            Ok(ExitStatus::Success)
        }
    }
}

/// The instance's identity at the control plane: the stored one (refreshed when a third of its
/// lifetime is left), or a new registration when a registration token is at hand. `None` when
/// the instance has not registered and no token is given.
pub(super) async fn ensure_identity(
    settings: &GlobalSettings,
    session: &Session,
    plane: &dyn ControlPlane,
    printer: &Printer,
) -> Result<Option<StoredIdentity>, Error> {
    let secret = IdentitySecret::new(&session.aws, &session.config.instance.name);
    let now = jiff::Timestamp::now();
    if let Some(mut identity) = secret.read().await.map_err(deploy_error)? {
        let lifetime = identity
            .expires_at
            .duration_since(identity.issued_at)
            .as_secs_f64();
        let left = identity.expires_at.duration_since(now).as_secs_f64();
        if left < lifetime * REFRESH_WHEN_LEFT {
            let issued = match plane.refresh(&identity.credentials()).await {
                Ok(issued) => issued,
                Err(error) if error.needs_registration() => {
                    return match register(settings, session, plane, printer).await? {
                        Some(registered) => Ok(Some(registered)),
                        None => Err(error.into()),
                    };
                }
                Err(error) => return Err(error.into()),
            };
            identity.token = issued.token;
            identity.expires_at = issued.expires_at;
            identity.issued_at = now;
            secret.write(&identity).await.map_err(deploy_error)?;
            tracing::info!(expires_at = %identity.expires_at, "refreshed the control-plane token");
        }
        return Ok(Some(identity));
    }
    register(settings, session, plane, printer).await
}

/// Registers with the registration token at hand, replacing any stored identity; `None` when
/// there is no token.
async fn register(
    settings: &GlobalSettings,
    session: &Session,
    plane: &dyn ControlPlane,
    printer: &Printer,
) -> Result<Option<StoredIdentity>, Error> {
    let secret = IdentitySecret::new(&session.aws, &session.config.instance.name);
    let now = jiff::Timestamp::now();
    let Some(token) = registration_token(
        settings,
        &session.config.control_plane.registration_token_file,
    )?
    else {
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
    secret.write(&identity).await.map_err(deploy_error)?;
    printer.status(format!(
        "Registered with the control plane as instance {} (organization {}); its token is kept in Secrets Manager as {}",
        identity.instance_id,
        identity.organization_id,
        secret.name()
    ));
    Ok(Some(identity))
}

fn deploy_error(source: crate::provision::DeployError) -> Error {
    Error::Provision(provision::ProvisionError::deploy(
        "control-plane identity",
        source,
    ))
}

/// The one-time registration token: `STACKWRIGHT_REGISTRATION_TOKEN`, else the token file
/// (relative to the configuration file).
fn registration_token(
    settings: &GlobalSettings,
    file: &Path,
) -> Result<Option<SecretToken>, Error> {
    if let Ok(token) = std::env::var("STACKWRIGHT_REGISTRATION_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(Some(SecretToken::new(token.trim())));
    }
    let path: PathBuf = match settings.config_path.parent() {
        Some(directory) if file.is_relative() => directory.join(file),
        _ => file.to_owned(),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(SecretToken::new(text.trim()))),
        Ok(_) => Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { path, source }),
    }
}

/// Tells the control plane how the instance is; a failure is logged, never fatal.
pub(super) async fn send_heartbeat(
    session: &Session,
    plane: &dyn ControlPlane,
    credentials: &InstanceCredentials,
    installation: Option<&Installation>,
) {
    let mut stacks = Vec::new();
    for kind in crate::stacks::StackKind::ALL {
        let name = kind.stack_name(&session.config.instance.name);
        if let Ok(Some(state)) =
            provision::StackDeployer::describe_stack(&session.deployer, &name).await
        {
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
    // A hand-over to a newer installer is a step on the way, not an operation's result.
    let last = history
        .into_iter()
        .filter(|entry| entry.result != OperationResult::HandedOver)
        .max_by_key(|entry| entry.finished_at);
    let last_operation = last.map(|entry| LastOperation {
        kind: match entry.kind {
            OperationKind::Install => wire::OperationKind::Install,
            OperationKind::Upgrade => wire::OperationKind::Upgrade,
            OperationKind::Teardown => wire::OperationKind::Teardown,
        },
        outcome: match entry.result {
            OperationResult::Succeeded => Outcome::Succeeded,
            OperationResult::Parked => Outcome::Parked,
            OperationResult::RolledBack => Outcome::RolledBack,
            _ => Outcome::Failed,
        },
        from_version: entry.from_release.and_then(|text| text.parse().ok()),
        to_version: entry.to_release.and_then(|text| text.parse().ok()),
        finished_at: Some(entry.finished_at),
    });
    let heartbeat = Heartbeat {
        installed_version: installation
            .and_then(|record| record.installed_release.as_deref())
            .and_then(|text| text.parse().ok()),
        installer_version: installer_version(),
        channel: session.config.release.channel.clone(),
        stacks,
        lock,
        last_operation,
    };
    if let Err(error) = plane.heartbeat(credentials, &heartbeat).await {
        tracing::warn!(%error, "the heartbeat was not delivered");
    }
}

/// After a first install (or any install): registers when a registration token is at hand,
/// then sends a heartbeat and the install's result. The control plane is contacted only once
/// the instance has an identity or a token; a failure there never undoes the install.
pub(super) async fn after_install(
    settings: &GlobalSettings,
    printer: &Printer,
    session: &Session,
    operation_id: &str,
    from: Option<&str>,
    to: Option<&str>,
) {
    let result = async {
        let plane = HttpControlPlane::for_url(&session.config.control_plane.url)?;
        let Some(identity) = ensure_identity(settings, session, &plane, printer).await? else {
            // Said once, after the install that changed something, not on every re-run.
            if to.is_none() {
                return Ok::<_, Error>(());
            }
            printer.warn(format!(
                "not registered with the control plane: upgrades will not be offered until a registration token is put in {} or STACKWRIGHT_REGISTRATION_TOKEN and `stackwright upgrade` runs",
                session.config.control_plane.registration_token_file.display()
            ));
            return Ok::<_, Error>(());
        };
        let credentials = identity.credentials();
        let installation = session.state.installation().await?;
        send_heartbeat(session, &plane, &credentials, installation.as_ref()).await;
        if let Some(to) = to.and_then(|text| text.parse::<Version>().ok()) {
            plane
                .report(
                    &credentials,
                    &OperationReport {
                        operation_id: operation_id.to_owned(),
                        kind: wire::OperationKind::Install,
                        from_version: from.and_then(|text| text.parse().ok()),
                        to_version: to,
                        outcome: Outcome::Succeeded,
                        detail: String::new(),
                    },
                )
                .await?;
        }
        Ok(())
    }
    .await;
    if let Err(error) = result {
        printer.warn(format!(
            "the control plane was not told about this install: {error}{}",
            error
                .hint()
                .map(|hint| format!(" ({hint})"))
                .unwrap_or_default()
        ));
    }
}

/// The release a first install takes by default: the newest the control plane offers this
/// instance on its channel, which means registering first.
pub(super) async fn offered_release(
    settings: &GlobalSettings,
    session: &Session,
    printer: &Printer,
) -> Result<Version, Error> {
    let config = &session.config;
    let plane = HttpControlPlane::for_url(&config.control_plane.url)?;
    let identity = ensure_identity(settings, session, &plane, printer)
        .await?
        .ok_or_else(|| Error::Usage {
            message: "no release was named, and the control plane cannot be asked which one to install before the instance registers".into(),
            hint: format!(
                "pass --release VERSION (or a manifest's path), or put the vendor's registration token in {} or STACKWRIGHT_REGISTRATION_TOKEN",
                config.control_plane.registration_token_file.display()
            ),
        })?;
    let installed = session
        .state
        .installation()
        .await
        .ok()
        .flatten()
        .and_then(|record| record.installed_release)
        .and_then(|text| text.parse().ok());
    let offer = plane
        .check_update(
            &identity.credentials(),
            &UpdateQuery {
                channel: config.release.channel.clone(),
                installed_version: installed,
            },
        )
        .await?;
    let newest = offer
        .releases
        .iter()
        .map(|release| release.version.clone())
        .filter(|version| config.release.pin.as_ref().is_none_or(|pin| version <= pin))
        .max()
        .ok_or_else(|| Error::Usage {
            message: format!(
                "the control plane offers no release on channel \"{}\" to this instance",
                config.release.channel
            ),
            hint:
                "pass --release VERSION, or ask the vendor to roll a release out to this instance"
                    .into(),
        })?;
    printer.status(format!(
        "The control plane offers release {newest} on channel \"{}\"",
        config.release.channel
    ));
    Ok(newest)
}
