//! Work under the instance's lock: the table prepared, the lock taken (waiting as asked), the
//! journal read to start, resume or refuse, the lease renewed while the work runs, and the lock
//! released whatever happens. A failed operation is recorded here too.

use crate::error::Error;
use crate::provision::{ProvisionError, StackDeployer};
use crate::state::{
    self, Holder, Installation, InstallationStatus, Journal, Operation, OperationInputs,
    OperationKind, OperationResult, ResumeDecision, StateError, StateStore, StateWrite,
};

use super::{Event, Session};

/// Whether a run starts an operation or continues an interrupted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    Fresh,
    Resumed,
}

/// Runs `work` under the instance's lock: creates the state table if needed, takes the lock,
/// reads the state, decides from the journal whether to start, resume or refuse, and releases
/// the lock whatever happens (unless the table went with the instance).
pub(super) async fn locked<D: StackDeployer, S: StateStore, T>(
    session: &Session<'_, D, S>,
    inputs: &OperationInputs,
    work: impl AsyncFnOnce(&Operation<'_, S>, Option<Installation>, Begun) -> Result<T, Error>,
) -> Result<T, Error> {
    let store = session.state;
    store.prepare().await?;
    let holder = Holder::this_process(&session.caller.principal, inputs.kind);
    let lease = state::acquire(store, session.clock, &holder, &session.lock, |held| {
        session.emit(Event::LockWaiting {
            instance: session.instance().to_owned(),
            holder: Box::new(held.clone()),
            wait_seconds: session.lock.wait.as_secs(),
        });
    })
    .await?;
    tracing::info!(lock_id = %lease.lock_id, token = lease.fencing_token, "lock acquired");
    let result = async {
        let installation = store.installation().await?;
        let (journal, begun, superseded) = start_or_resume(session, inputs, &installation).await?;
        let operation = Operation::new(
            store,
            session.clock,
            lease.clone(),
            session.lock.lease,
            journal,
        );
        let guarded = async {
            if let Some(old) = superseded {
                let entry = old.finish(OperationResult::Abandoned, None, operation.now());
                operation
                    .write(vec![StateWrite::History(entry), StateWrite::ClearJournal])
                    .await?;
            }
            work(&operation, installation, begun).await
        };
        state::run_guarded(&operation, &session.lock, guarded, || {
            session.emit(Event::Stopping);
        })
        .await
    }
    .await;
    if let Err(error) = store.release(&lease).await {
        session.emit(Event::LockNotReleased {
            error: error.to_string(),
        });
    }
    result
}

/// The journal this run works under, whether it resumes one, and the interrupted operation it
/// supersedes (recorded as abandoned once the work starts).
async fn start_or_resume<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    inputs: &OperationInputs,
    installation: &Option<Installation>,
) -> Result<(Journal, Begun, Option<Journal>), Error> {
    let found = session.state.journal().await?;
    let now = session.clock.now();
    let from_release = installation
        .as_ref()
        .and_then(|record| record.installed_release.clone());
    let fresh = || Journal::new(inputs, &session.caller.principal, from_release.clone(), now);
    Ok(match state::resume_decision(found, inputs) {
        ResumeDecision::Fresh => (fresh(), Begun::Fresh, None),
        ResumeDecision::Resume(journal) => {
            session.emit(Event::Resuming {
                journal: Box::new(journal.clone()),
            });
            (journal, Begun::Resumed, None)
        }
        ResumeDecision::Supersede(old) => {
            session.emit(Event::Superseded {
                kind: old.kind,
                operation_id: old.operation_id.clone(),
            });
            (fresh(), Begun::Fresh, Some(old))
        }
        ResumeDecision::Refuse(unfinished) => {
            return Err(Error::State(StateError::UnfinishedOperation {
                instance: session.instance().to_owned(),
                requested: inputs.kind,
                unfinished: Box::new(unfinished),
            }));
        }
    })
}

/// A failed operation: recorded in history and the installation record, its journal cleared,
/// unless it was stopped (signal, lost lease), which leaves the journal for the next run. An
/// operation that failed before its first phase changed nothing and leaves no trace.
pub(super) async fn record_failure<S: StateStore>(
    operation: &Operation<'_, S>,
    installation: Option<Installation>,
    error: Error,
) -> Error {
    let stopped = matches!(
        &error,
        Error::State(StateError::Interrupted | StateError::LeaseLost { .. })
            | Error::Provision(ProvisionError::State(
                StateError::Interrupted | StateError::LeaseLost { .. }
            ))
    );
    if stopped {
        return error;
    }
    let journal = operation.journal().await;
    if journal.completed.is_empty() {
        return error;
    }
    // After a completed rollback the instance runs what it ran before: its status stands.
    let rolled_back = matches!(&error, Error::Provision(error) if error.rolled_back());
    let entry = journal.finish(
        if rolled_back {
            OperationResult::RolledBack
        } else {
            OperationResult::Failed
        },
        Some(error.to_string()),
        operation.now(),
    );
    let mut writes = vec![StateWrite::History(entry)];
    if let Some(mut installation) = installation.filter(|_| journal.kind != OperationKind::Teardown)
    {
        if !rolled_back {
            installation.status = InstallationStatus::Failed;
        }
        installation.operation_id = journal.operation_id.clone();
        installation.updated_at = operation.now();
        writes.push(StateWrite::Installation(installation));
    }
    if let Err(write_error) = operation.finish(writes).await {
        tracing::warn!(%write_error, "could not record the failed operation");
    }
    error
}
