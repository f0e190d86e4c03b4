//! `plan`, `install`, `status` and `teardown`: the commands that talk to CloudFormation.

use std::time::Instant;

use serde_json::json;

use super::reporter::{CliGate, CliReporter};
use crate::aws::{Aws, CallerIdentity, CloudFormation};
use crate::cli::{ReleaseArgs, TeardownArgs};
use crate::config::ConfigFile;
use crate::error::{Error, ExitStatus};
use crate::output::{Printer, count, table};
use crate::provision::{self, Gate, Plan, StackDeployer};
use crate::release::ReleaseManifest;
use crate::render::{self, RenderedStack};
use crate::settings::GlobalSettings;
use crate::stacks::StackKind;

/// The AWS side of a command: clients for the instance's region and who they act as.
struct Session {
    config: ConfigFile,
    aws: Aws,
    deployer: CloudFormation,
    identity: CallerIdentity,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the async runtime starts")
}

async fn connect(settings: &GlobalSettings) -> Result<Session, Error> {
    let config = settings.load_config()?;
    let region = config.instance.region.clone();
    let wrap = |source| Error::Provision(provision::ProvisionError::deploy("preflight", source));
    let aws = Aws::connect(&region, settings.profile.as_deref())
        .await
        .map_err(wrap)?;
    let identity = aws.caller_identity().await.map_err(wrap)?;
    let deployer = aws.cloudformation();
    Ok(Session {
        config,
        aws,
        deployer,
        identity,
    })
}

fn render_release(
    config: &ConfigFile,
    release: &std::path::Path,
) -> Result<(ReleaseManifest, Vec<RenderedStack>), Error> {
    let release = ReleaseManifest::load(release)?;
    let stacks = render::render_all(config, &release)?;
    Ok((release, stacks))
}

fn print_plan(printer: &Printer, plan: &Plan) {
    if printer.json_mode() {
        printer.data(plan);
    } else {
        printer.result(plan);
    }
}

pub fn plan(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &ReleaseArgs,
) -> Result<ExitStatus, Error> {
    runtime().block_on(async {
        let session = connect(settings).await?;
        let (_, stacks) = render_release(&session.config, &args.release)?;
        let plan = provision::plan(
            &session.deployer,
            &session.config.instance.name,
            &stacks,
            &session.aws.region,
            false,
        )
        .await?;
        print_plan(printer, &plan);
        Ok(if plan.has_changes() {
            ExitStatus::Changes
        } else {
            ExitStatus::Success
        })
    })
}

pub fn install(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &ReleaseArgs,
) -> Result<ExitStatus, Error> {
    // Refuse early, before any call, when nobody could answer the confirmation.
    if !settings.assume_yes && !CliGate::interactive() {
        return Err(Error::Unconfirmed {
            action: "install".into(),
        });
    }
    runtime().block_on(async {
        let started = Instant::now();
        let session = connect(settings).await?;
        let config = &session.config;
        let (release, stacks) = render_release(config, &args.release)?;
        printer.status(format!(
            "Installing {} (release {}, {} mode) into account {} as {}, region {}",
            config.instance.name,
            release.version,
            config.network.mode,
            session.identity.account,
            session.identity.principal,
            session.aws.region
        ));
        let plan = provision::plan(&session.deployer, &config.instance.name, &stacks, &session.aws.region, true).await?;
        if !plan.has_changes() {
            if printer.json_mode() {
                printer.data(&json!({ "changed": false, "plan": plan }));
            } else {
                printer.result(format!(
                    "Nothing to change: all {} stacks of {} are up to date.",
                    plan.stacks.len(),
                    config.instance.name
                ));
            }
            return Ok(ExitStatus::Success);
        }
        if !printer.json_mode() {
            printer.status(&plan);
        }
        let gate = CliGate {
            assume_yes: settings.assume_yes,
        };
        if !gate.confirm("Apply this plan?") {
            discard_change_sets(&session.deployer, &plan).await;
            return Err(Error::Declined {
                action: "install".into(),
            });
        }
        let reporter = CliReporter::new(printer);
        let report = provision::apply(&session.deployer, &plan, &stacks, &session.aws.region, &reporter, &gate).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let load_balancer = report.output("LoadBalancerDnsName").unwrap_or("(not reported)").to_owned();
        let url = report
            .output("InstanceUrl")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("https://{}", config.instance.domain));
        let mut records = vec![
            (config.instance.domain.clone(), load_balancer.clone()),
            (format!("*.{}", config.instance.domain), load_balancer.clone()),
        ];
        if let Some(public) = report.output("PublicServicesDnsName") {
            records.push((format!("{} (public zone)", config.instance.domain), public.to_owned()));
        }
        if printer.json_mode() {
            printer.data(&json!({
                "changed": true,
                "seconds": elapsed,
                "url": url,
                "load_balancer": load_balancer,
                "dns_records": records.iter().map(|(name, target)| json!({ "name": name, "type": "CNAME", "target": target })).collect::<Vec<_>>(),
                "stacks": report.stacks,
            }));
        } else {
            printer.result(format!("Installed {} in {elapsed:.1} s.", config.instance.name));
            printer.result(table(
                ["", ""],
                [
                    ["URL".to_owned(), url],
                    ["Load balancer".to_owned(), load_balancer],
                ],
            ));
            printer.result("DNS records to create:");
            printer.result(table(
                ["NAME", "TYPE", "TARGET"],
                records.into_iter().map(|(name, target)| [name, "CNAME".to_owned(), target]),
            ));
        }
        Ok(ExitStatus::Success)
    })
}

async fn discard_change_sets<D: StackDeployer>(deployer: &D, plan: &Plan) {
    for id in plan
        .stacks
        .iter()
        .filter_map(|stack| stack.change_set_id.as_deref())
    {
        if let Err(error) = deployer.delete_change_set(id).await {
            tracing::warn!(%error, change_set = id, "could not delete a planned change set");
        }
    }
}

pub fn status(settings: &GlobalSettings, printer: &Printer) -> Result<ExitStatus, Error> {
    runtime().block_on(async {
        let session = connect(settings).await?;
        let instance = &session.config.instance.name;
        let mut stacks = Vec::new();
        for kind in StackKind::ALL {
            let name = kind.stack_name(instance);
            let state = session
                .deployer
                .describe_stack(&name)
                .await
                .map_err(|source| provision::ProvisionError::deploy(&name, source))?;
            if let Some(state) = state {
                stacks.push(state);
            }
        }
        if printer.json_mode() {
            printer.data(&json!({ "instance": instance, "account": session.identity.account, "region": session.aws.region, "stacks": stacks }));
            return Ok(ExitStatus::Success);
        }
        if stacks.is_empty() {
            printer.result(format!("{instance} is not installed in account {} ({}).", session.identity.account, session.aws.region));
            return Ok(ExitStatus::Success);
        }
        printer.result(table(
            ["STACK", "STATUS", "LAST UPDATED"],
            stacks.iter().map(|state| {
                [
                    state.name.clone(),
                    state.status.clone(),
                    state.last_updated.map(|time| time.to_string()).unwrap_or_default(),
                ]
            }),
        ));
        let outputs: Vec<[String; 3]> = stacks
            .iter()
            .flat_map(|state| {
                state
                    .outputs
                    .iter()
                    .map(|(key, value)| [state.name.clone(), key.clone(), value.clone()])
            })
            .collect();
        if !outputs.is_empty() {
            printer.result("");
            printer.result(table(["STACK", "OUTPUT", "VALUE"], outputs));
        }
        Ok(ExitStatus::Success)
    })
}

pub fn teardown(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &TeardownArgs,
) -> Result<ExitStatus, Error> {
    if !settings.assume_yes && !CliGate::interactive() {
        return Err(Error::Unconfirmed {
            action: "teardown".into(),
        });
    }
    runtime().block_on(async {
        let started = Instant::now();
        let session = connect(settings).await?;
        let instance = session.config.instance.name.clone();
        let inventory = provision::inventory(&session.deployer, &instance, args.delete_data).await?;
        if inventory.is_empty() {
            printer.result(format!("{instance} has no stacks in account {} ({}): nothing to delete.", session.identity.account, session.aws.region));
            return Ok(ExitStatus::Success);
        }
        if args.delete_data {
            printer.warn(format!(
                "--delete-data: the data stack of {instance} is deleted too. Its buckets are emptied and its tables dropped; this cannot be undone."
            ));
        }
        if printer.json_mode() {
            printer.json_line(&json!({ "event": "inventory", "inventory": inventory }));
        } else {
            printer.status(format!(
                "Teardown of {instance} in account {} ({}). What is deleted and what is kept:",
                session.identity.account, session.aws.region
            ));
            printer.status(&inventory);
        }
        if !settings.assume_yes {
            let typed: String = dialoguer::Input::new()
                .with_prompt(format!("Type the instance name ({instance}) to delete it"))
                .allow_empty(true)
                .interact_text()
                .unwrap_or_default();
            if typed.trim() != instance {
                return Err(Error::Declined {
                    action: "teardown".into(),
                });
            }
        }
        let reporter = CliReporter::new(printer);
        let gate = CliGate {
            assume_yes: settings.assume_yes,
        };
        let report = provision::teardown(&session.deployer, &inventory, &reporter, &gate).await?;
        let elapsed = started.elapsed().as_secs_f64();
        for warning in &report.warnings {
            printer.warn(warning);
        }
        if printer.json_mode() {
            printer.data(&json!({ "seconds": elapsed, "report": report }));
        } else {
            printer.result(format!(
                "Deleted {} of {instance} in {elapsed:.1} s.",
                count(report.deleted_stacks.len(), "stack", "stacks")
            ));
            if report.remaining.is_empty() {
                printer.result("Nothing of these stacks remains.");
            } else {
                printer.result("What remains:");
                printer.result(table(
                    ["STACK", "RESOURCE", "TYPE", "ID", "WHY"],
                    report.remaining.iter().map(|item| {
                        [
                            item.stack_name.clone(),
                            item.logical_id.clone(),
                            item.resource_type.clone(),
                            item.physical_id.clone().unwrap_or_default(),
                            item.reason.clone(),
                        ]
                    }),
                ));
            }
        }
        Ok(ExitStatus::Success)
    })
}
