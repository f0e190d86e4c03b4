//! `upgrade`: asks the control plane what is offered, verifies it, decides (the pure decision
//! in `upgrade::decide`), and applies each hop under the lock: plan, review the change sets,
//! approve (a person, or the policy when unattended), apply with the images first, check the
//! platform's health, record and report. A release that needs a newer installer is handed
//! over to it.

use std::time::{Duration, Instant};

use semver::Version;
use sha2::{Digest, Sha256};

use crate::control_plane::api::{
    self as wire, InstanceCredentials, OperationReport, Outcome, UpdateOffer, UpdateQuery,
};
use crate::control_plane::{ControlPlane, StoredIdentity};
use crate::error::Error;
use crate::provision::{self, Plan, StackAction, StackDeployer};
use crate::release::{self, ReleaseSelection, Trust, VerifiedRelease};
use crate::render::{self, RenderedStack};
use crate::stacks::StackKind;
use crate::state::{
    Deployed, Installation, InstallationStatus, Operation, OperationInputs, OperationKind,
    OperationResult, StateStore, StateWrite,
};
use crate::upgrade::{
    ChangeReview, Decision, Health, OfferedRelease, TemplatePair, UpgradePolicy, decide,
};

use super::apply::{EngineGate, apply_plan, discard_change_sets};
use super::identity::{register, send_heartbeat};
use super::lock::{locked, record_failure};
use super::preflight::before_install;
use super::release::recorded_floor;
use super::{Event, Session, config_hash, ensure_identity, installer_version};

/// What `upgrade` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct UpgradeOptions {
    /// Go to this version instead of the newest offered (and retry it if it failed here).
    pub to: Option<Version>,
    /// Only decide, change nothing.
    pub check: bool,
    /// The scheduled job: waits for the maintenance window, approves only what the policy
    /// allows and parks the rest.
    pub unattended: bool,
    pub health_timeout: Duration,
    pub skip_preflight: bool,
}

/// How an upgrade ended.
#[derive(Debug, Clone)]
pub enum UpgradeOutcome {
    /// `--check`: what the job would do.
    Checked(Decision),
    /// Up to date, or waiting for the maintenance window.
    NothingToDo,
    /// The updater now runs the installer the next release needs.
    HandedOver,
    /// Every hop applied; the instance runs `release`.
    Upgraded { release: Version },
    /// The hop to `release` waits for a person's approval.
    Parked { release: Version },
}

/// How one hop ended, before it is reported.
struct HopResult {
    outcome: Outcome,
    detail: String,
    operation_id: String,
}

pub async fn upgrade<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    options: &UpgradeOptions,
) -> Result<UpgradeOutcome, Error> {
    let installation = session.state.installation().await?;
    let installed = installation
        .as_ref()
        .and_then(|record| record.installed_release.as_deref())
        .and_then(|text| text.parse::<Version>().ok())
        .ok_or_else(|| Error::Usage {
            message: format!("{} has no installed release to upgrade", session.instance()),
            hint: "install it first: stackwright install".into(),
        })?;
    let plane = session.control_plane()?;
    let (identity, offer) = current_offer(session, plane, &installed).await?;
    let credentials = identity.credentials();
    send_heartbeat(session, plane, &credentials, installation.as_ref()).await;
    // Every run starts from the root built in; the record only says how far it must reach.
    let root = session.releases.trusted_root()?;
    let floor = recorded_floor(session.instance(), installation.as_ref())?;
    let trust = Trust {
        root: &root,
        installed: Some(&installed),
        floor: floor.as_ref(),
    };
    let verified = verify_offer(session, &offer, trust).await?;
    let offered: Vec<OfferedRelease> = verified
        .iter()
        .map(|(release, urgent)| OfferedRelease::from_manifest(&release.manifest, *urgent))
        .collect();
    let verified: Vec<VerifiedRelease> = verified.into_iter().map(|(release, _)| release).collect();
    let policy = policy(session, options, installation.as_ref());
    let decision = decide(
        &installed,
        &offered,
        &policy,
        seed(&credentials.instance_id),
        session.clock.now(),
    );
    session.emit(Event::Decision {
        instance: session.instance().to_owned(),
        decision: Box::new(decision.clone()),
    });
    if options.check {
        return Ok(UpgradeOutcome::Checked(decision));
    }
    let path = match decision {
        Decision::Upgrade { path, .. } => path,
        Decision::UpToDate { .. } | Decision::Wait { .. } => {
            return Ok(UpgradeOutcome::NothingToDo);
        }
        Decision::NeedsInstaller {
            next, installer, ..
        } => {
            return needs_installer(session, options, &verified, next, installer).await;
        }
        Decision::Blocked { reason, hint, .. } => {
            return Err(Error::Usage {
                message: reason,
                hint,
            });
        }
    };
    // What would stop an install stops an upgrade too, before the lock is taken.
    before_install(session, options.skip_preflight).await?;
    follow_path(
        session,
        plane,
        &credentials,
        options,
        installed,
        &path,
        &verified,
    )
    .await
}

/// Applies each hop of `path` in turn, telling the control plane the instance's state after
/// each, and stops at a parked one.
async fn follow_path<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    plane: &dyn ControlPlane,
    credentials: &InstanceCredentials,
    options: &UpgradeOptions,
    installed: Version,
    path: &[Version],
    verified: &[VerifiedRelease],
) -> Result<UpgradeOutcome, Error> {
    let mut from = installed;
    for version in path {
        let Some(hop) = verified
            .iter()
            .find(|release| release.manifest.version == *version)
        else {
            continue;
        };
        let applied = apply_hop(session, plane, credentials, options, &from, hop).await;
        // The control plane learns the new state, whatever happened.
        let installation = session.state.installation().await.ok().flatten();
        send_heartbeat(session, plane, credentials, installation.as_ref()).await;
        if applied? == Outcome::Parked {
            return Ok(UpgradeOutcome::Parked {
                release: version.clone(),
            });
        }
        from = version.clone();
    }
    Ok(UpgradeOutcome::Upgraded { release: from })
}

/// The instance's identity and what the control plane offers it, registering anew when the
/// control plane no longer accepts the instance's token and the vendor's new registration
/// token is at hand.
async fn current_offer<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    plane: &dyn ControlPlane,
    installed: &Version,
) -> Result<(StoredIdentity, UpdateOffer), Error> {
    let config = session.config;
    let mut identity = ensure_identity(session, plane).await?.ok_or_else(|| Error::Usage {
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
        Err(error) if error.needs_registration() => {
            match register(session, plane).await? {
                Some(registered) => identity = registered,
                None => return Err(error.into()),
            }
            plane.check_update(&identity.credentials(), &query).await?
        }
        Err(error) => return Err(error.into()),
    };
    Ok((identity, offer))
}

/// The offered releases that verify from the trusted root, each with whether it is urgent;
/// the others are told and left aside. What is wrong with the repository as a whole (stale or
/// replayed metadata, a root below the recorded floor) is an error: no release from it is
/// trusted.
async fn verify_offer<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    offer: &UpdateOffer,
    trust: Trust<'_>,
) -> Result<Vec<(VerifiedRelease, bool)>, Error> {
    let pinned = super::release::pinned_repository(session.releases, Some(session.config))
        .unwrap_or_default();
    let source = super::release::offered_repository(&pinned, &offer.repository)?;
    let now = session.clock.now();
    let mut verified = Vec::new();
    for release in &offer.releases {
        let selection = ReleaseSelection::Version(release.version.clone());
        match release::verify(&source, trust, now, &selection).await {
            Ok(checked) => verified.push((checked, release.urgent)),
            Err(error) if error.is_repository_wide() => return Err(error.into()),
            Err(error) => session.emit(Event::OfferRefused {
                version: release.version.clone(),
                error: error.to_string(),
            }),
        }
    }
    Ok(verified)
}

/// The local policy: the configuration's channel, pin, window and auto-approval, the target
/// asked for, and the releases that failed here.
fn policy<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    options: &UpgradeOptions,
    installation: Option<&Installation>,
) -> UpgradePolicy {
    let config = session.config;
    let failed = installation
        .map(|record| {
            record
                .failed_releases
                .iter()
                .filter_map(|text| text.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    UpgradePolicy {
        channel: config.release.channel.clone(),
        pin: config.release.pin.clone(),
        target: options.to.clone(),
        // A person upgrading now does not wait for the window; the job does.
        window: if options.unattended {
            config.upgrade.window()
        } else {
            None
        },
        failed,
        installer_version: installer_version(),
    }
}

/// The next release needs a newer installer: the scheduled job hands over to the installer
/// the release carries, when it carries one that is new enough; a person is told what to run.
async fn needs_installer<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    options: &UpgradeOptions,
    verified: &[VerifiedRelease],
    next: Version,
    installer: Version,
) -> Result<UpgradeOutcome, Error> {
    let carrier = verified.iter().find(|release| {
        release.manifest.version == next
            && release
                .manifest
                .installer
                .as_ref()
                .is_some_and(|carried| carried.version >= installer)
    });
    if let Some(release) = carrier
        && options.unattended
    {
        let handed_over = super::hand_over::hand_over(session, &release.manifest).await?;
        return Ok(if handed_over {
            UpgradeOutcome::HandedOver
        } else {
            UpgradeOutcome::NothingToDo
        });
    }
    Err(Error::Usage {
        message: format!(
            "release {next} needs stackwright {installer} or newer; this is {}",
            installer_version()
        ),
        hint: format!(
            "run stackwright {installer} or newer (the updater stack moves its task to that installer's image on its next run)"
        ),
    })
}

/// A stable number per instance, which spreads a fleet inside its maintenance window.
fn seed(instance_id: &str) -> u64 {
    let digest = Sha256::digest(instance_id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// One hop: the lock, the plan, the review, the approval, the apply with the images first,
/// the health, the record and the report. Returns how it ended unless it failed.
async fn apply_hop<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    plane: &dyn ControlPlane,
    credentials: &InstanceCredentials,
    options: &UpgradeOptions,
    from: &Version,
    hop: &VerifiedRelease,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let manifest = &hop.manifest;
    let to = manifest.version.clone();
    let stacks = render::render_all(session.config, manifest)?;
    let inputs = OperationInputs {
        kind: OperationKind::Upgrade,
        release: Some(to.to_string()),
        config_hash: config_hash(session.config),
        delete_data: false,
    };
    session.emit(Event::Upgrading {
        instance: session.instance().to_owned(),
        from: from.clone(),
        to: to.clone(),
    });
    let locked_hop = locked(session, &inputs, async |operation, installation, _begun| {
        hop_locked(session, operation, installation, options, hop, &stacks).await
    })
    .await;
    let (result, hop_result) = match locked_hop {
        Ok(hop_result) => (Ok(()), hop_result),
        // Interrupted or blocked runs are not results; everything else is reported.
        Err(error)
            if matches!(
                error.exit_status(),
                crate::error::ExitStatus::Blocked | crate::error::ExitStatus::Interrupted
            ) || matches!(error, Error::Declined { .. }) =>
        {
            return Err(error);
        }
        Err(error) => {
            let outcome = if matches!(&error, Error::Provision(error) if error.rolled_back()) {
                Outcome::RolledBack
            } else {
                Outcome::Failed
            };
            let hop_result = HopResult {
                outcome,
                detail: error.to_string(),
                operation_id: uuid::Uuid::new_v4().to_string(),
            };
            (Err(error), hop_result)
        }
    };
    let report = OperationReport {
        operation_id: hop_result.operation_id,
        kind: wire::OperationKind::Upgrade,
        from_version: Some(from.clone()),
        to_version: to.clone(),
        outcome: hop_result.outcome,
        detail: hop_result.detail.clone(),
    };
    if let Err(error) = plane.report(credentials, &report).await {
        session.emit(Event::ResultNotReported {
            error: error.to_string(),
        });
    }
    session.emit(Event::UpgradeFinished {
        instance: session.instance().to_owned(),
        from: from.clone(),
        to,
        outcome: hop_result.outcome,
        seconds: started.elapsed().as_secs_f64(),
        detail: hop_result.detail,
    });
    result.map(|()| hop_result.outcome)
}

/// The hop under the lock: planned, reviewed and approved (or parked), applied, health-checked
/// and recorded.
async fn hop_locked<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    operation: &Operation<'_, S>,
    installation: Option<Installation>,
    options: &UpgradeOptions,
    hop: &VerifiedRelease,
    stacks: &[RenderedStack],
) -> Result<HopResult, Error> {
    let to = hop.manifest.version.to_string();
    let journal = operation.journal().await;
    let plan = provision::plan(
        session.deployer,
        session.instance(),
        stacks,
        session.region,
        true,
    )
    .await?;
    let review = review(session, &plan, stacks).await?;
    session.emit(Event::Plan {
        plan: Box::new(plan.clone()),
        review: Box::new(review.clone()),
    });
    let approved = if options.unattended {
        review.approved_by(session.config.upgrade.auto_approve)
    } else {
        let question = format!("Upgrade {} to {to}?", session.instance());
        session.approver.confirm(&question).await
    };
    if !approved {
        discard_change_sets(session.deployer, &plan).await;
        if !options.unattended {
            return Err(Error::Declined {
                action: "upgrade".into(),
            });
        }
        return park(operation, &review).await;
    }
    // The images arrive before the platform stack points at them.
    let applied = apply_plan(
        session,
        operation,
        &plan,
        stacks,
        &EngineGate::Yes,
        Some(&hop.manifest),
    )
    .await;
    let report = match applied {
        Ok(report) => report,
        Err(error) => {
            let mut installation = installation;
            if let Some(record) = installation.as_mut()
                && !record.failed_releases.contains(&to)
            {
                record.failed_releases.push(to.clone());
            }
            return Err(record_failure(operation, installation, error).await);
        }
    };
    // CloudFormation is done; whether the release serves is ECS's and the load balancer's to
    // say.
    let problems = match platform_health(session, options.health_timeout).await {
        Health::Unhealthy { problems } => Some(problems),
        _ => None,
    };
    let stacks = report.stack_names();
    record_hop(session, operation, installation, hop, stacks, problems).await?;
    Ok(HopResult {
        outcome: Outcome::Succeeded,
        detail: String::new(),
        operation_id: journal.operation_id,
    })
}

/// Parks the hop for a person: nothing executed, the findings that kept the policy from
/// approving recorded in the history.
async fn park<S: StateStore>(
    operation: &Operation<'_, S>,
    review: &ChangeReview,
) -> Result<HopResult, Error> {
    let journal = operation.journal().await;
    let detail = review
        .blocking()
        .map(|finding| format!("{} {} {}", finding.stack, finding.logical_id, finding.kind))
        .collect::<Vec<_>>()
        .join("; ");
    let entry = journal.finish(
        OperationResult::Parked,
        Some(detail.clone()),
        operation.now(),
    );
    operation.finish(vec![StateWrite::History(entry)]).await?;
    Ok(HopResult {
        outcome: Outcome::Parked,
        detail,
        operation_id: journal.operation_id,
    })
}

/// The review of a plan's changes: each updated stack's deployed template beside the one
/// rendered for the release.
async fn review<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    plan: &Plan,
    stacks: &[RenderedStack],
) -> Result<ChangeReview, Error> {
    let mut before = Vec::new();
    for stack in plan
        .stacks
        .iter()
        .filter(|stack| stack.action == StackAction::Update)
    {
        let template = session
            .deployer
            .deployed_template(&stack.stack_name)
            .await
            .map_err(|source| provision::ProvisionError::deploy(&stack.stack_name, source))?;
        before.push((stack.stack_name.clone(), template));
    }
    let pairs: Vec<TemplatePair<'_>> = before
        .iter()
        .filter_map(|(name, template)| {
            let rendered = stacks
                .iter()
                .find(|rendered| rendered.stack_name == *name)?;
            Some(TemplatePair {
                stack: name,
                before: Some(template),
                after: &rendered.body,
            })
        })
        .collect();
    Ok(ChangeReview::of(plan, &pairs))
}

/// Records an applied hop: the instance runs the release, healthy or not; an unhealthy release
/// is failed and skipped from now on. Unhealthy is an error after the record is written.
async fn record_hop<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    operation: &Operation<'_, S>,
    installation: Option<Installation>,
    hop: &VerifiedRelease,
    stacks: Vec<String>,
    problems: Option<Vec<String>>,
) -> Result<(), Error> {
    let to = hop.manifest.version.to_string();
    let journal = operation.journal().await;
    let deployed = Deployed {
        release: Some(to.clone()),
        networking_mode: session.config.network.mode.to_string(),
        stacks,
        status: if problems.is_some() {
            InstallationStatus::Failed
        } else {
            InstallationStatus::Installed
        },
    };
    let record = Installation {
        // How far the hop's verification reached is the next run's floor.
        trust_floor: Some(hop.floor.clone()),
        ..Installation::after(&journal, installation.as_ref(), deployed, operation.now())
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
    match problems {
        Some(problems) => Err(Error::Unhealthy {
            instance: session.instance().to_owned(),
            release: to,
            problems,
        }),
        None => Ok(()),
    }
}

/// Waits until the platform's services are stable and its targets healthy, or it is clear they
/// will not be, telling what it sees meanwhile. A health that cannot be read is a problem.
async fn platform_health<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    timeout: Duration,
) -> Health {
    let stack = StackKind::Platform.stack_name(session.instance());
    let events = session.events;
    let show = move |health: &Health| {
        events.emit(Event::Health {
            health: Box::new(health.clone()),
        });
    };
    let read = async {
        let resources = session.deployer.stack_resources(&stack).await?;
        session.health.watch(&resources, timeout, &show).await
    };
    let health = read.await.unwrap_or_else(|error| Health::Unhealthy {
        problems: vec![format!("its health cannot be read: {error}")],
    });
    show(&health);
    health
}
