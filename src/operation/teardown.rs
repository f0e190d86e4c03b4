//! `teardown`: the inventory of what is deleted and what is kept, a typed confirmation, the
//! stacks deleted in reverse dependency order under the lock, the data too when asked, and the
//! state table last, once no stack is left for it to guard.

use std::time::Instant;

use crate::error::Error;
use crate::provision::{self, Inventory, StackDeployer, TeardownReport};
use crate::state::{
    Deployed, Installation, InstallationStatus, Operation, OperationInputs, OperationKind,
    OperationResult, Phase, StateStore, StateWrite,
};

use super::apply::{EngineGate, JournalHook};
use super::lock::{Begun, locked, record_failure};
use super::{DeployEvents, Event, Session, config_hash};

/// How a teardown ended.
#[derive(Debug, Clone)]
pub enum TeardownOutcome {
    /// No stack was left; the state table was deleted if there was one.
    NothingDeployed {
        table: String,
        table_deleted: bool,
    },
    /// Only kept stacks (the data) remain: a teardown would delete nothing.
    OnlyData {
        stacks: Vec<String>,
    },
    Deleted(Box<TornDown>),
}

/// What a teardown deleted and what remains.
#[derive(Debug, Clone)]
pub struct TornDown {
    pub seconds: f64,
    pub report: TeardownReport,
    pub table: String,
    pub table_deleted: bool,
}

pub async fn teardown<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    delete_data: bool,
) -> Result<TeardownOutcome, Error> {
    let started = Instant::now();
    let instance = session.instance();
    // Nothing deployed and no state: nothing to lock, nothing to delete.
    if !session.state.exists().await?
        && provision::inventory(session.deployer, instance, delete_data)
            .await?
            .is_empty()
    {
        return Ok(TeardownOutcome::NothingDeployed {
            table: session.state.location().to_owned(),
            table_deleted: false,
        });
    }
    let inputs = OperationInputs {
        kind: OperationKind::Teardown,
        release: None,
        config_hash: config_hash(session.config),
        delete_data,
    };
    locked(session, &inputs, async |operation, installation, begun| {
        teardown_locked(
            session,
            operation,
            installation,
            begun,
            delete_data,
            started,
        )
        .await
    })
    .await
}

async fn teardown_locked<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    operation: &Operation<'_, S>,
    installation: Option<Installation>,
    begun: Begun,
    delete_data: bool,
    started: Instant,
) -> Result<TeardownOutcome, Error> {
    let instance = session.instance().to_owned();
    let table = session.state.location().to_owned();
    let inventory = provision::inventory(session.deployer, &instance, delete_data).await?;
    if inventory.is_empty() && begun == Begun::Fresh {
        // No stack is left: the state goes with the instance.
        session.state.destroy().await?;
        return Ok(TeardownOutcome::NothingDeployed {
            table,
            table_deleted: true,
        });
    }
    if begun == Begun::Fresh && inventory.stacks.iter().all(|stack| !stack.delete_stack) {
        // Only kept stacks remain (the data): a teardown that would delete nothing is no
        // operation, and records none.
        let stacks = inventory
            .stacks
            .iter()
            .map(|stack| stack.stack_name.clone());
        return Ok(TeardownOutcome::OnlyData {
            stacks: stacks.collect(),
        });
    }
    if delete_data {
        session.emit(Event::DeletingData {
            instance: instance.clone(),
        });
    }
    session.emit(Event::Inventory {
        inventory: Box::new(inventory.clone()),
        account: session.caller.account.clone(),
        region: session.region.to_owned(),
    });
    let prompt = format!("Type the instance name ({instance}) to delete it");
    if !session.approver.confirm_typed(&prompt, &instance).await {
        return Err(Error::Declined {
            action: "teardown".into(),
        });
    }
    let report = match delete(session, operation, &inventory, delete_data).await {
        Ok(report) => report,
        Err(error) => return Err(record_failure(operation, installation, error).await),
    };
    let table_deleted = record(session, operation, &inventory, installation).await?;
    for warning in &report.warnings {
        session.emit(Event::TeardownWarning {
            message: warning.clone(),
        });
    }
    Ok(TeardownOutcome::Deleted(Box::new(TornDown {
        seconds: started.elapsed().as_secs_f64(),
        report,
        table,
        table_deleted,
    })))
}

/// Deletes the inventory's stacks, journalled, then the retained data when asked.
async fn delete<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    operation: &Operation<'_, S>,
    inventory: &Inventory,
    delete_data: bool,
) -> Result<TeardownReport, Error> {
    session.emit(Event::DeployStarted);
    let reporter = DeployEvents(session.events);
    let gate = EngineGate::Ask(session.approver);
    let targets = inventory.retained_targets();
    operation
        .complete(Phase::Inventory, |journal| {
            for target in targets {
                if !journal.retained.contains(&target) {
                    journal.retained.push(target);
                }
            }
        })
        .await?;
    let report = provision::teardown_journalled(
        session.deployer,
        inventory,
        &reporter,
        &gate,
        &JournalHook(operation),
    )
    .await?;
    if delete_data {
        let targets = operation.journal().await.retained;
        provision::delete_retained_data(session.deployer, &targets, &reporter).await?;
        operation.complete(Phase::Data, |_| {}).await?;
    }
    Ok(report)
}

/// Records the teardown: history, the record of what is kept (if anything), and the state
/// table deleted when nothing is. Returns whether the table was deleted.
async fn record<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    operation: &Operation<'_, S>,
    inventory: &Inventory,
    installation: Option<Installation>,
) -> Result<bool, Error> {
    let journal = operation.journal().await;
    let entry = journal.finish(OperationResult::Succeeded, None, operation.now());
    let kept: Vec<String> = inventory
        .stacks
        .iter()
        .filter(|stack| !stack.delete_stack)
        .map(|stack| stack.stack_name.clone())
        .collect();
    let mut writes = vec![StateWrite::History(entry)];
    if !kept.is_empty() {
        let deployed = Deployed {
            release: installation
                .as_ref()
                .and_then(|record| record.installed_release.clone()),
            networking_mode: session.config.network.mode.to_string(),
            stacks: kept.clone(),
            status: InstallationStatus::DataKept,
        };
        writes.push(StateWrite::Installation(Installation::after(
            &journal,
            installation.as_ref(),
            deployed,
            operation.now(),
        )));
    }
    operation.finish(writes).await?;
    // The table goes last, once no stack is left for it to guard.
    if kept.is_empty() {
        session.state.destroy().await?;
    }
    Ok(kept.is_empty())
}
