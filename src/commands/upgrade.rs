//! `stackwright upgrade`: the upgrade operation for a person at a terminal, for `--check`, and
//! for the scheduled job (`--unattended`: JSON lines, never a prompt).

use std::time::Duration;

use super::gate::CliGate;
use super::runtime::block_on;
use super::session::connect;
use crate::cli::{OutputFormat, UpgradeArgs};
use crate::error::{Error, ExitStatus};
use crate::operation::{self, UpgradeOptions, UpgradeOutcome};
use crate::output::Printer;
use crate::settings::GlobalSettings;
use crate::upgrade::Decision;

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
    let lock = settings.lock_settings(args.lock.wait)?;
    let options = UpgradeOptions {
        to: args.to.clone(),
        check: args.check,
        unattended: args.unattended,
        health_timeout: Duration::from_secs(args.health_timeout),
        skip_preflight: args.preflight.skip_preflight,
    };
    block_on(async {
        let connected = connect(settings).await?;
        let frame = connected.frame(printer, settings.assume_yes, args.preflight.dial_timeout);
        let session = connected.session(&frame, lock);
        Ok(match operation::upgrade(&session, &options).await? {
            UpgradeOutcome::Checked(decision) => match decision {
                Decision::Upgrade { .. }
                | Decision::Wait { .. }
                | Decision::NeedsInstaller { .. } => ExitStatus::Changes,
                Decision::UpToDate { .. } => ExitStatus::Success,
                Decision::Blocked { .. } => ExitStatus::Failure,
            },
            UpgradeOutcome::Parked { .. } => ExitStatus::Parked,
            UpgradeOutcome::NothingToDo
            | UpgradeOutcome::HandedOver
            | UpgradeOutcome::Upgraded { .. } => ExitStatus::Success,
        })
    })
}
