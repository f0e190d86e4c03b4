//! `plan` and `install`: what the release would change in the instance's stacks, and the
//! install that applies it under the lock, images first, then registers with the control
//! plane.

use std::time::Instant;

use serde::Serialize;

use crate::config::ConfigFile;
use crate::error::Error;
use crate::provision::{self, Plan, StackDeployer, StackOutcome};
use crate::release::{ReleaseManifest, TrustFloor};
use crate::render::{self, RenderedStack};
use crate::stacks::StackKind;
use crate::state::{
    Deployed, Installation, InstallationStatus, Journal, Operation, OperationInputs, OperationKind,
    OperationResult, StateStore, StateWrite,
};

use super::apply::{EngineGate, apply_plan, discard_change_sets};
use super::lock::{Begun, locked, record_failure};
use super::preflight::before_install;
use super::release::{ReleaseChoice, above_record, choose_release};
use super::{Event, Session, after_install, config_hash};

/// What `install` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// The release; by default the one the control plane offers.
    pub release: ReleaseChoice,
    /// An older release than the installed one may be installed, once its version is typed.
    pub allow_downgrade: bool,
    /// The release's images are already in the instance's repositories.
    pub skip_mirror: bool,
    pub skip_preflight: bool,
}

/// How an install ended.
#[derive(Debug, Clone)]
pub enum InstallOutcome {
    /// Every stack was up to date.
    Unchanged {
        plan: Plan,
    },
    Installed(Box<Installed>),
}

/// What a completed install made.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub seconds: f64,
    pub operation_id: String,
    pub url: String,
    pub load_balancer: String,
    pub dns_records: Vec<DnsRecord>,
    pub stacks: Vec<StackOutcome>,
    /// Whether the updater stack runs the unattended upgrade job in the account.
    pub updater_in_account: bool,
    /// The platform stack requested the certificate from ACM (none was configured).
    pub certificate_requested: bool,
}

/// A DNS record to create for the instance.
#[derive(Debug, Clone, Serialize)]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub target: String,
}

/// The plan of `release` (by default the offered one) against the deployed stacks; its change
/// sets are left for CloudFormation to show, not executed.
pub async fn plan<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    release: &ReleaseChoice,
) -> Result<Plan, Error> {
    let chosen = choose_release(session, release).await?;
    above_record(session, &chosen, false).await?;
    let stacks = render::render_all(session.config, &chosen.manifest)?;
    Ok(provision::plan(
        session.deployer,
        session.instance(),
        &stacks,
        session.region,
        false,
    )
    .await?)
}

/// Installs the release, or brings the instance's stacks up to it: preflight, then under the
/// lock the plan, the approval, the images and the stacks, the record, and the report to the
/// control plane.
pub async fn install<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    options: &InstallOptions,
) -> Result<InstallOutcome, Error> {
    let started = Instant::now();
    let config = session.config;
    let chosen = choose_release(session, &options.release).await?;
    let release = &chosen.manifest;
    let stacks = render::render_all(config, release)?;
    before_install(session, options.skip_preflight).await?;
    session.emit(Event::Installing {
        instance: config.instance.name.clone(),
        release: release.version.clone(),
        mode: config.network.mode.to_string(),
        account: session.caller.account.clone(),
        principal: session.caller.principal.clone(),
        region: session.region.to_owned(),
    });
    above_record(session, &chosen, options.allow_downgrade).await?;
    let inputs = OperationInputs {
        kind: OperationKind::Install,
        release: Some(release.version.to_string()),
        config_hash: config_hash(config),
        delete_data: false,
    };
    let prepared = Prepared {
        stacks: &stacks,
        images: (!options.skip_mirror).then_some(release),
        floor: chosen.floor.as_ref(),
        started,
    };
    locked(session, &inputs, async |operation, installation, begun| {
        install_locked(session, operation, installation, begun, &prepared).await
    })
    .await
}

/// What an install works from once the release is chosen and rendered.
struct Prepared<'a> {
    stacks: &'a [RenderedStack],
    /// The release whose images to copy first, unless they are there already.
    images: Option<&'a ReleaseManifest>,
    /// How far the release's verification reached, to record.
    floor: Option<&'a TrustFloor>,
    started: Instant,
}

async fn install_locked<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    operation: &Operation<'_, S>,
    installation: Option<Installation>,
    begun: Begun,
    prepared: &Prepared<'_>,
) -> Result<InstallOutcome, Error> {
    let Prepared {
        stacks,
        images,
        floor,
        started,
    } = *prepared;
    let journal = operation.journal().await;
    let plan = provision::plan(
        session.deployer,
        session.instance(),
        stacks,
        session.region,
        true,
    )
    .await?;
    if !plan.has_changes() && begun == Begun::Fresh {
        let record = installation_record(
            session.config,
            &journal,
            installation.as_ref(),
            plan.stack_names(),
            floor,
            operation.now(),
        );
        bring_record_up_to_date(operation, installation.as_ref(), record).await?;
        after_install(session, "", None, None).await;
        return Ok(InstallOutcome::Unchanged { plan });
    }
    session.emit(Event::InstallPlan {
        account: session.caller.account.clone(),
        region: session.region.to_owned(),
        plan: Box::new(plan.clone()),
    });
    if !session.approver.confirm("Apply this plan?").await {
        discard_change_sets(session.deployer, &plan).await;
        return Err(Error::Declined {
            action: "install".into(),
        });
    }
    let gate = EngineGate::Ask(session.approver);
    let report = match apply_plan(session, operation, &plan, stacks, &gate, images).await {
        Ok(report) => report,
        Err(error) => return Err(record_failure(operation, installation, error).await),
    };
    let record = installation_record(
        session.config,
        &journal,
        installation.as_ref(),
        report.stack_names(),
        floor,
        operation.now(),
    );
    let entry = journal.finish(OperationResult::Succeeded, None, operation.now());
    operation
        .finish(vec![
            StateWrite::Installation(record),
            StateWrite::History(entry),
        ])
        .await?;
    after_install(
        session,
        &journal.operation_id,
        journal.from_release.as_deref(),
        journal.to_release.as_deref(),
    )
    .await;
    Ok(InstallOutcome::Installed(Box::new(installed(
        session.config,
        &journal,
        report.stacks,
        started.elapsed().as_secs_f64(),
    ))))
}

/// Nothing to do, and no operation to record; the record is brought up to date if an earlier
/// version or a failure left it behind.
async fn bring_record_up_to_date<S: StateStore>(
    operation: &Operation<'_, S>,
    installation: Option<&Installation>,
    record: Installation,
) -> Result<(), Error> {
    let current = installation.is_some_and(|found| {
        found.installed_release == record.installed_release
            && found.config_hash == record.config_hash
            && found.status == record.status
            && found.stacks == record.stacks
            && found.trust_floor == record.trust_floor
    });
    if !current {
        operation
            .write(vec![StateWrite::Installation(record)])
            .await?;
    }
    Ok(())
}

/// The record after an install: the journal's release runs on `stacks`, and the floor its
/// verification reached, if it was verified, is the next one's.
fn installation_record(
    config: &ConfigFile,
    journal: &Journal,
    previous: Option<&Installation>,
    stacks: Vec<String>,
    floor: Option<&TrustFloor>,
    now: jiff::Timestamp,
) -> Installation {
    let deployed = Deployed {
        release: journal.to_release.clone(),
        networking_mode: config.network.mode.to_string(),
        stacks,
        status: InstallationStatus::Installed,
    };
    let record = Installation::after(journal, previous, deployed, now);
    Installation {
        trust_floor: floor.cloned().or(record.trust_floor.clone()),
        ..record
    }
}

/// What the install made: the URL, the load balancer and the DNS records that point at it.
fn installed(
    config: &ConfigFile,
    journal: &Journal,
    stacks: Vec<StackOutcome>,
    seconds: f64,
) -> Installed {
    let output = |name: &str| {
        stacks
            .iter()
            .find_map(|stack| stack.outputs.get(name))
            .cloned()
    };
    let load_balancer = output("LoadBalancerDnsName").unwrap_or_else(|| "(not reported)".into());
    let url =
        output("InstanceUrl").unwrap_or_else(|| format!("https://{}", config.instance.domain));
    let cname = |name: String, target: &str| DnsRecord {
        name,
        record_type: "CNAME",
        target: target.to_owned(),
    };
    let mut dns_records = vec![
        cname(config.instance.domain.clone(), &load_balancer),
        cname(format!("*.{}", config.instance.domain), &load_balancer),
    ];
    if let Some(public) = output("PublicServicesDnsName") {
        dns_records.push(cname(
            format!("{} (public zone)", config.instance.domain),
            &public,
        ));
    }
    let updater = StackKind::Updater.stack_name(&config.instance.name);
    Installed {
        seconds,
        operation_id: journal.operation_id.clone(),
        url,
        load_balancer,
        dns_records,
        updater_in_account: stacks.iter().any(|stack| stack.stack_name == updater),
        stacks,
        certificate_requested: config.instance.certificate_arn.is_none(),
    }
}
