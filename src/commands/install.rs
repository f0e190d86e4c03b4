//! `plan` and `install`: what a release would change, and the install that applies it, with
//! what it made and what comes next.

use serde_json::json;

use super::gate::CliGate;
use super::runtime::block_on;
use super::session::{DIAL_TIMEOUT, connect};
use super::story::UpgradeJob;
use crate::cli::{InstallArgs, ReleaseArgs};
use crate::error::{Error, ExitStatus};
use crate::operation::{self, InstallOptions, InstallOutcome};
use crate::output::{Printer, table};
use crate::settings::GlobalSettings;
use crate::state::LockSettings;

pub fn plan(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &ReleaseArgs,
) -> Result<ExitStatus, Error> {
    block_on(async {
        let connected = connect(settings).await?;
        let frame = connected.frame(printer, settings.assume_yes, DIAL_TIMEOUT);
        let session = connected.session(&frame, LockSettings::default());
        let plan = operation::plan(&session, &args.choice()?).await?;
        if printer.json_mode() {
            printer.data(&plan);
        } else {
            printer.result(&plan);
        }
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
    args: &InstallArgs,
) -> Result<ExitStatus, Error> {
    // Refuse early, before any call, when nobody could answer the confirmation.
    if !settings.assume_yes && !CliGate::interactive() {
        return Err(Error::Unconfirmed {
            action: "install".into(),
        });
    }
    let lock = settings.lock_settings(args.lock.wait)?;
    let options = InstallOptions {
        release: args.release.choice()?,
        allow_downgrade: args.allow_downgrade,
        skip_mirror: args.skip_mirror,
        skip_preflight: args.preflight.skip_preflight,
    };
    block_on(async {
        let connected = connect(settings).await?;
        let frame = connected.frame(printer, settings.assume_yes, args.preflight.dial_timeout);
        let session = connected.session(&frame, lock);
        let outcome = operation::install(&session, &options).await?;
        print_outcome(printer, &connected.config, outcome);
        Ok(ExitStatus::Success)
    })
}

fn print_outcome(printer: &Printer, config: &crate::config::ConfigFile, outcome: InstallOutcome) {
    let installed = match outcome {
        InstallOutcome::Unchanged { plan } => {
            if printer.json_mode() {
                printer.data(&json!({ "changed": false, "plan": plan }));
            } else {
                printer.result(format!(
                    "Nothing to change: all {} stacks of {} are up to date.",
                    plan.stacks.len(),
                    config.instance.name
                ));
            }
            return;
        }
        InstallOutcome::Installed(installed) => installed,
    };
    let upgrade_job =
        UpgradeJob::from_config(config, installed.updater_in_account, jiff::Timestamp::now());
    if printer.json_mode() {
        printer.data(&json!({
            "changed": true,
            "seconds": installed.seconds,
            "operation_id": installed.operation_id,
            "url": installed.url,
            "load_balancer": installed.load_balancer,
            "dns_records": installed.dns_records,
            "stacks": installed.stacks,
            "upgrade_job": upgrade_job,
        }));
        return;
    }
    printer.result(format!(
        "Installed {} in {:.1} s.",
        config.instance.name, installed.seconds
    ));
    printer.result(table(
        ["", ""],
        [
            ["URL".to_owned(), installed.url.clone()],
            ["Load balancer".to_owned(), installed.load_balancer.clone()],
        ],
    ));
    printer.result("");
    printer.result(format!(
        "DNS records to create in the zone of {} (a CNAME each, or an alias record at a zone apex):",
        config.instance.domain
    ));
    printer.result(table(
        ["NAME", "TYPE", "TARGET"],
        installed.dns_records.iter().map(|record| {
            [
                record.name.clone(),
                record.record_type.to_owned(),
                record.target.clone(),
            ]
        }),
    ));
    if installed.certificate_requested {
        printer.result("The certificate was requested from ACM: its DNS validation records (aws acm describe-certificate) must exist too before it is issued.");
    }
    printer.result("");
    printer.result(upgrade_job.describe(&config.control_plane.url));
}
