//! `unlock` and `history`: the instance's lock and the record of its operations.

use serde_json::json;

use super::gate::CliGate;
use super::runtime::block_on;
use super::session::connect;
use crate::cli::UnlockArgs;
use crate::error::{Error, ExitStatus};
use crate::operation::Approver;
use crate::output::{Printer, table};
use crate::settings::GlobalSettings;
use crate::state::{StateError, StateStore};

pub fn unlock(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &UnlockArgs,
) -> Result<ExitStatus, Error> {
    if !settings.assume_yes && !CliGate::interactive() {
        return Err(Error::Unconfirmed {
            action: "unlock".into(),
        });
    }
    block_on(async {
        let session = connect(settings).await?;
        let instance = session.config.instance.name.clone();
        let current = session.state.lock().await?;
        let lease = match current {
            Some(lease) if lease.lock_id == args.lock_id => lease,
            holder => {
                return Err(Error::State(StateError::LockIdMismatch {
                    instance,
                    given: args.lock_id.clone(),
                    holder: holder.map(Box::new),
                }));
            }
        };
        let live = lease.is_live(jiff::Timestamp::now());
        printer.status(format!("The lock on {instance} is held by {lease}."));
        if live {
            printer.warn(
                "its lease is live: the holder renewed it recently and may still be running; breaking the lock lets another run start beside it",
            );
        }
        let gate = CliGate {
            assume_yes: settings.assume_yes,
        };
        if !gate.confirm_now(&format!("Break the lock {}?", lease.lock_id)) {
            return Err(Error::Declined {
                action: "unlock".into(),
            });
        }
        session.state.break_lock(&lease.lock_id).await?;
        if printer.json_mode() {
            printer.data(&json!({ "broken": lease, "lease_was_live": live }));
        } else {
            printer.result(format!(
                "Broke the lock {} on {instance}, held by {} on {} (pid {}) for {} since {}. An interrupted operation's journal is kept: the next run of it resumes.",
                lease.lock_id, lease.holder.owner, lease.holder.host, lease.holder.pid, lease.holder.operation, lease.created_at.round(jiff::Unit::Second).unwrap_or(lease.created_at)
            ));
        }
        Ok(ExitStatus::Success)
    })
}

pub fn history(settings: &GlobalSettings, printer: &Printer) -> Result<ExitStatus, Error> {
    block_on(async {
        let session = connect(settings).await?;
        let instance = session.config.instance.name.clone();
        let entries = session.state.history().await?;
        if printer.json_mode() {
            printer.data(&json!({ "instance": instance, "operations": entries }));
            return Ok(ExitStatus::Success);
        }
        if entries.is_empty() {
            printer.result(format!("No operations are recorded for {instance}."));
            return Ok(ExitStatus::Success);
        }
        printer.result(table(
            ["WHEN", "WHO", "WHAT", "FROM", "TO", "RESULT", "DURATION"],
            entries.iter().map(|entry| {
                [
                    entry
                        .started_at
                        .round(jiff::Unit::Second)
                        .unwrap_or(entry.started_at)
                        .to_string(),
                    entry.who.clone(),
                    entry.kind.to_string(),
                    entry.from_release.clone().unwrap_or_else(|| "-".into()),
                    entry.to_release.clone().unwrap_or_else(|| "-".into()),
                    entry.result.to_string(),
                    format!("{:.1} s", entry.duration_seconds),
                ]
            }),
        ));
        Ok(ExitStatus::Success)
    })
}
