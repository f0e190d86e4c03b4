//! `stackwright teardown`: the operation's inventory and typed confirmation, then the report of
//! what was deleted and what remains.

use serde_json::json;

use super::gate::CliGate;
use super::runtime::block_on;
use super::session::{DIAL_TIMEOUT, connect};
use crate::cli::TeardownArgs;
use crate::error::{Error, ExitStatus};
use crate::operation::{self, TeardownOutcome};
use crate::output::{Printer, count, table};
use crate::provision::TeardownReport;
use crate::settings::GlobalSettings;

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
    let lock = settings.lock_settings(args.lock.wait)?;
    block_on(async {
        let connected = connect(settings).await?;
        let frame = connected.frame(printer, settings.assume_yes, DIAL_TIMEOUT);
        let session = connected.session(&frame, lock);
        let outcome = operation::teardown(&session, args.delete_data).await?;
        let instance = session.instance();
        let (account, region) = (&connected.identity.account, &connected.aws.region);
        match outcome {
            TeardownOutcome::NothingDeployed {
                table,
                table_deleted,
            } => printer.result(format!(
                "{instance} has no stacks in account {account} ({region}): nothing to delete.{}",
                if table_deleted {
                    format!(" Its state table {table} was deleted.")
                } else {
                    String::new()
                }
            )),
            TeardownOutcome::OnlyData { stacks } => printer.result(format!(
                "Nothing to delete: only the data of {instance} remains ({}); `stackwright teardown --delete-data` deletes it.",
                stacks.join(", ")
            )),
            TeardownOutcome::Deleted(torn_down) => {
                let state_line = if torn_down.table_deleted {
                    format!(
                        "The state table {} was deleted with the instance, and the history of its operations with it.",
                        torn_down.table
                    )
                } else {
                    format!(
                        "The state table {} is kept while the data stack remains; `stackwright history` shows its operations.",
                        torn_down.table
                    )
                };
                if printer.json_mode() {
                    printer.data(&json!({ "seconds": torn_down.seconds, "report": torn_down.report, "state_table": { "name": torn_down.table, "deleted": torn_down.table_deleted } }));
                    return Ok(ExitStatus::Success);
                }
                let report = &torn_down.report;
                printer.result(format!(
                    "Deleted {} of {instance} in {:.1} s.",
                    count(report.deleted_stacks.len(), "stack", "stacks"),
                    torn_down.seconds
                ));
                if report.remaining.is_empty() {
                    printer.result("Nothing of these stacks remains.");
                } else {
                    printer.result("What remains:");
                    printer.result(table_of_remaining(report));
                }
                printer.result(state_line);
            }
        }
        Ok(ExitStatus::Success)
    })
}

fn table_of_remaining(report: &TeardownReport) -> String {
    table(
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
    )
}
