//! `stackwright status`: the installed release, the lock, an unfinished operation, and the
//! stacks with their outputs. Read only: it never creates the table nor takes the lock.

use serde_json::json;

use super::runtime::block_on;
use super::session::connect;
use crate::error::{Error, ExitStatus};
use crate::output::{Printer, table};
use crate::provision::StackState;
use crate::provision::{self, StackDeployer};
use crate::settings::GlobalSettings;
use crate::stacks::StackKind;
use crate::state::{Installation, Journal, Lease, StateStore};

pub fn status(settings: &GlobalSettings, printer: &Printer) -> Result<ExitStatus, Error> {
    block_on(async {
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
        // Read only: status never creates the table nor takes the lock.
        let installation = session.state.installation().await?;
        let lock = session.state.lock().await?;
        let journal = session.state.journal().await?;
        if printer.json_mode() {
            printer.data(&json!({
                "instance": instance,
                "account": session.identity.account,
                "region": session.aws.region,
                "state_table": session.state.location(),
                "installation": installation,
                "lock": lock,
                "unfinished_operation": journal,
                "stacks": stacks,
            }));
            return Ok(ExitStatus::Success);
        }
        if stacks.is_empty() && installation.is_none() && lock.is_none() && journal.is_none() {
            printer.result(format!(
                "{instance} is not installed in account {} ({}).",
                session.identity.account, session.aws.region
            ));
            return Ok(ExitStatus::Success);
        }
        print_summary(
            printer,
            installation.as_ref(),
            lock.as_ref(),
            journal.as_ref(),
        );
        print_stacks(printer, &stacks);
        Ok(ExitStatus::Success)
    })
}

/// The installed release, the lock and any unfinished operation, one line each.
fn print_summary(
    printer: &Printer,
    installation: Option<&Installation>,
    lock: Option<&Lease>,
    journal: Option<&Journal>,
) {
    let now = jiff::Timestamp::now();
    let release_line = match installation {
        Some(record) => format!(
            "{} ({} mode, {}, by operation {} at {})",
            record.installed_release.as_deref().unwrap_or("none"),
            record.networking_mode,
            record.status,
            record.operation_id,
            record
                .updated_at
                .round(jiff::Unit::Second)
                .unwrap_or(record.updated_at)
        ),
        None => "unknown (no installation record)".into(),
    };
    let lock_line = match lock {
        None => "free".to_owned(),
        Some(lease) if lease.is_live(now) => format!("held by {lease}"),
        Some(lease) => format!("expired: {lease}"),
    };
    let mut summary = vec![
        ["Installed release".to_owned(), release_line],
        ["Lock".to_owned(), lock_line],
    ];
    if let Some(journal) = journal {
        summary.push([
            "Unfinished".to_owned(),
            format!(
                "{} {} started {} (done: {})",
                journal.kind,
                journal.operation_id,
                journal
                    .started_at
                    .round(jiff::Unit::Second)
                    .unwrap_or(journal.started_at),
                journal
                    .completed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ]);
    }
    for [label, value] in summary {
        printer.result(format!("{label:<18} {value}"));
    }
}

/// Each stack's status, then every stack's outputs.
fn print_stacks(printer: &Printer, stacks: &[StackState]) {
    printer.result("");
    printer.result(table(
        ["STACK", "STATUS", "LAST UPDATED"],
        stacks.iter().map(|state| {
            [
                state.name.clone(),
                state.status.clone(),
                state
                    .last_updated
                    .map(|time| time.to_string())
                    .unwrap_or_default(),
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
}
