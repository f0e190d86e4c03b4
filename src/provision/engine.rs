//! `apply`: executes a plan level by level (a stack starts when every stack it depends on is
//! done; stacks of one level run in parallel), passing outputs on as parameters, watching
//! events with a poll that starts fast and backs off, and explaining a failure by its first
//! failed resource event.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use serde::Serialize;

use super::plan::{
    StackAction, StackPlan, change_set_name, is_no_change_reason, outside_dependencies,
    resolve_parameters, wait_for_change_set,
};
use super::template::template_source;
use super::{
    Backoff, ChangeSetKind, ChangeSetRequest, ChangeSetStatus, DeployError, DeployReporter,
    NoJournal, Plan, ProvisionError, StackDeployer, StackEvent, StackJournal, StackState,
};
use crate::render::RenderedStack;
use crate::stacks::StackKind;

/// Asks a person (or a policy) whether a risky recovery step may go ahead.
pub trait Gate: Sync {
    fn confirm(&self, question: &str) -> bool;
}

#[derive(Debug, Clone, Serialize)]
pub struct StackOutcome {
    pub stack_name: String,
    pub action: StackAction,
    pub status: String,
    pub outputs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub stacks: Vec<StackOutcome>,
}

impl ApplyReport {
    /// The names of the stacks applied, in order.
    pub fn stack_names(&self) -> Vec<String> {
        self.stacks
            .iter()
            .map(|stack| stack.stack_name.clone())
            .collect()
    }

    /// The outputs of every stack, by stack name.
    pub fn output(&self, name: &str) -> Option<&str> {
        self.stacks
            .iter()
            .find_map(|stack| stack.outputs.get(name))
            .map(String::as_str)
    }
}

/// Applies a plan made from `stacks`.
pub async fn apply<D: StackDeployer, R: DeployReporter, G: Gate>(
    deployer: &D,
    plan: &Plan,
    stacks: &[RenderedStack],
    region: &str,
    reporter: &R,
    gate: &G,
) -> Result<ApplyReport, ProvisionError> {
    apply_journalled(deployer, plan, stacks, region, reporter, gate, &NoJournal).await
}

/// Applies a plan made from `stacks`, telling `journal` as each stack is done.
pub async fn apply_journalled<D: StackDeployer, R: DeployReporter, G: Gate, J: StackJournal>(
    deployer: &D,
    plan: &Plan,
    stacks: &[RenderedStack],
    region: &str,
    reporter: &R,
    gate: &G,
    journal: &J,
) -> Result<ApplyReport, ProvisionError> {
    let mut states = outside_dependencies(deployer, stacks).await?;
    let mut outcomes: Vec<StackOutcome> = Vec::new();
    let kinds: Vec<StackKind> = stacks.iter().map(|stack| stack.kind).collect();
    for level in levels(&kinds) {
        let level_stacks = stacks.iter().filter(|stack| level.contains(&stack.kind));
        let results = join_all(level_stacks.map(|stack| {
            let stack_plan = plan
                .stacks
                .iter()
                .find(|planned| planned.stack_name == stack.stack_name)
                .expect("the plan covers every rendered stack");
            let states = &states;
            async move {
                if stack_plan.action != StackAction::NoChange {
                    journal.before_stack(stack.kind).await?;
                }
                let applied =
                    apply_stack(deployer, stack, stack_plan, states, region, reporter, gate)
                        .await?;
                journal.stack_done(stack.kind).await?;
                Ok::<_, ProvisionError>(applied)
            }
        }))
        .await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok((outcome, state)) => {
                    states.insert(outcome.stack_name.clone(), Some(state));
                    outcomes.push(outcome);
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
    }
    Ok(ApplyReport { stacks: outcomes })
}

/// The stacks grouped so that each group depends only on earlier groups; a dependency that is
/// not among `kinds` is taken as satisfied.
pub fn levels(kinds: &[StackKind]) -> Vec<Vec<StackKind>> {
    let mut placed: Vec<StackKind> = Vec::new();
    let mut levels = Vec::new();
    let mut remaining: Vec<StackKind> = kinds.to_vec();
    while !remaining.is_empty() {
        let (ready, waiting): (Vec<StackKind>, Vec<StackKind>) =
            remaining.into_iter().partition(|kind| {
                kind.depends_on()
                    .iter()
                    .all(|dependency| placed.contains(dependency) || !kinds.contains(dependency))
            });
        assert!(!ready.is_empty(), "the stack graph has no cycle");
        placed.extend(&ready);
        levels.push(ready);
        remaining = waiting;
    }
    levels
}

async fn apply_stack<D: StackDeployer, R: DeployReporter, G: Gate>(
    deployer: &D,
    stack: &RenderedStack,
    planned: &StackPlan,
    states: &BTreeMap<String, Option<StackState>>,
    region: &str,
    reporter: &R,
    gate: &G,
) -> Result<(StackOutcome, StackState), ProvisionError> {
    let name = stack.stack_name.as_str();
    let wrap = |source: DeployError| ProvisionError::deploy(name, source);
    let parameters = resolve_parameters(stack, states).ok_or_else(|| {
        ProvisionError::MissingDependencyOutputs {
            stack: name.to_owned(),
        }
    })?;

    if planned.action == StackAction::NoChange && planned.parameters == parameters {
        let state = deployer
            .describe_stack(name)
            .await
            .map_err(wrap)?
            .ok_or_else(|| ProvisionError::Vanished {
                stack: name.to_owned(),
            })?;
        reporter.stack_finished(name, "unchanged", true);
        return Ok((outcome(planned.action, &state), state));
    }

    let mut kind = ChangeSetKind::Update;
    match planned.action {
        StackAction::Create => kind = ChangeSetKind::Create,
        StackAction::Recreate => {
            let question = format!(
                "{name} is in ROLLBACK_COMPLETE after its first create failed. Delete it and create it again?"
            );
            if !gate.confirm(&question) {
                return Err(ProvisionError::Declined {
                    stack: name.to_owned(),
                    action: "delete and recreate".into(),
                });
            }
            reporter.note(&format!(
                "{name}: deleting the rolled-back stack before creating it again"
            ));
            delete_and_wait(deployer, name, &[], reporter).await?;
            kind = ChangeSetKind::Create;
        }
        StackAction::ContinueRollbackAndUpdate => {
            reporter.note(&format!("{name}: continuing the failed rollback"));
            // Only events after this one belong to the continued rollback: the failed update
            // before it is history, not progress.
            let before = newest_event(deployer, name).await?;
            let token = format!("stackwright-continue-{}", change_set_name());
            deployer
                .continue_update_rollback(name, &token)
                .await
                .map_err(wrap)?;
            let state = watch(deployer, name, before.as_deref(), reporter).await?;
            if state.status != "UPDATE_ROLLBACK_COMPLETE" {
                return Err(failure(deployer, name, &state, before.as_deref()).await);
            }
        }
        StackAction::Update | StackAction::NoChange | StackAction::Delete => {}
    }

    // Reuse the planned change set if the values it was made with still hold.
    let reusable = planned
        .change_set_id
        .as_ref()
        .filter(|_| planned.parameters == parameters && kind == ChangeSetKind::Update);
    let change_set_id = match reusable {
        Some(id) => id.clone(),
        None => {
            if let Some(stale) = &planned.change_set_id {
                deployer.delete_change_set(stale).await.map_err(wrap)?;
            }
            let template = template_source(deployer, stack, states, region).await?;
            let request = ChangeSetRequest {
                stack_name: name.to_owned(),
                change_set_name: change_set_name(),
                kind,
                template,
                parameters: parameters.clone(),
                tags: stack.tags.clone(),
            };
            let id = match deployer.create_change_set(&request).await {
                Ok(id) => id,
                // Some endpoints refuse a change set without changes at once.
                Err(error)
                    if kind == ChangeSetKind::Update && is_no_change_reason(&error.to_string()) =>
                {
                    return unchanged(deployer, name, planned.action, reporter).await;
                }
                Err(error) => return Err(wrap(error)),
            };
            match wait_for_change_set(deployer, &id).await.map_err(wrap)? {
                ChangeSetStatus::Ready(_) => id,
                ChangeSetStatus::Empty if kind == ChangeSetKind::Update => {
                    deployer.delete_change_set(&id).await.map_err(wrap)?;
                    return unchanged(deployer, name, planned.action, reporter).await;
                }
                ChangeSetStatus::Failed(reason) if is_no_change_reason(&reason) => {
                    deployer.delete_change_set(&id).await.map_err(wrap)?;
                    return unchanged(deployer, name, planned.action, reporter).await;
                }
                ChangeSetStatus::Failed(reason) => {
                    let _ = deployer.delete_change_set(&id).await;
                    return Err(ProvisionError::ChangeSetFailed {
                        stack: name.to_owned(),
                        reason,
                    });
                }
                ChangeSetStatus::Empty | ChangeSetStatus::Pending => id,
            }
        }
    };

    // Only events after this one belong to this operation.
    let last_event = newest_event(deployer, name).await?;
    reporter.stack_started(name, planned.action, stack.summary.resources);
    let token = format!(
        "stackwright-execute-{}",
        change_set_id.rsplit('/').next().unwrap_or(&change_set_id)
    );
    let token: String = token
        .chars()
        .filter(|character| character.is_ascii_alphanumeric() || *character == '-')
        .take(128)
        .collect();
    deployer
        .execute_change_set(&change_set_id, &token)
        .await
        .map_err(wrap)?;
    let state = watch(deployer, name, last_event.as_deref(), reporter).await?;
    if !super::is_success(&state.status) {
        reporter.stack_finished(name, &state.status, false);
        return Err(failure(deployer, name, &state, last_event.as_deref()).await);
    }
    reporter.stack_finished(name, &state.status, true);
    Ok((outcome(planned.action, &state), state))
}

async fn unchanged<D: StackDeployer, R: DeployReporter>(
    deployer: &D,
    name: &str,
    action: StackAction,
    reporter: &R,
) -> Result<(StackOutcome, StackState), ProvisionError> {
    let state = deployer
        .describe_stack(name)
        .await
        .map_err(|source| ProvisionError::deploy(name, source))?
        .ok_or_else(|| ProvisionError::Vanished {
            stack: name.to_owned(),
        })?;
    reporter.stack_finished(name, "unchanged", true);
    let mut outcome = outcome(action, &state);
    outcome.action = StackAction::NoChange;
    Ok((outcome, state))
}

fn outcome(action: StackAction, state: &StackState) -> StackOutcome {
    StackOutcome {
        stack_name: state.name.clone(),
        action,
        status: state.status.clone(),
        outputs: state.outputs.clone(),
    }
}

/// The ID of the stack's newest event: only events after it belong to an operation about to
/// start.
pub(crate) async fn newest_event<D: StackDeployer>(
    deployer: &D,
    name: &str,
) -> Result<Option<String>, ProvisionError> {
    Ok(deployer
        .stack_events(name, None)
        .await
        .map_err(|source| ProvisionError::deploy(name, source))?
        .first()
        .map(|event| event.id.clone()))
}

/// Reports, oldest first, the events newer than `last_seen`, and moves `last_seen` on.
async fn report_new_events<D: StackDeployer, R: DeployReporter>(
    deployer: &D,
    name: &str,
    last_seen: &mut Option<String>,
    reporter: &R,
) -> Result<(), ProvisionError> {
    let events = deployer
        .stack_events(name, last_seen.as_deref())
        .await
        .map_err(|source| ProvisionError::deploy(name, source))?;
    if let Some(newest) = events.first() {
        *last_seen = Some(newest.id.clone());
    }
    for event in events.iter().rev() {
        reporter.event(event);
    }
    Ok(())
}

/// Polls the stack until it reaches a terminal status, reporting every new event once, oldest
/// first.
pub(crate) async fn watch<D: StackDeployer, R: DeployReporter>(
    deployer: &D,
    name: &str,
    after_event: Option<&str>,
    reporter: &R,
) -> Result<StackState, ProvisionError> {
    let wrap = |source: DeployError| ProvisionError::deploy(name, source);
    let mut backoff = Backoff::new();
    let mut last_seen = after_event.map(str::to_owned);
    loop {
        let state = deployer.describe_stack(name).await.map_err(wrap)?;
        report_new_events(deployer, name, &mut last_seen, reporter).await?;
        match state {
            Some(state) if super::is_terminal(&state.status) => return Ok(state),
            Some(_) => backoff.wait().await,
            None => {
                return Err(ProvisionError::Vanished {
                    stack: name.to_owned(),
                });
            }
        }
    }
}

/// Deletes a stack and waits until it is gone.
pub(crate) async fn delete_and_wait<D: StackDeployer, R: DeployReporter>(
    deployer: &D,
    name: &str,
    retain: &[String],
    reporter: &R,
) -> Result<Option<StackState>, ProvisionError> {
    let wrap = |source: DeployError| ProvisionError::deploy(name, source);
    let mut last_seen = newest_event(deployer, name).await?;
    let token = format!("stackwright-delete-{}", change_set_name());
    deployer
        .delete_stack(name, retain, &token)
        .await
        .map_err(wrap)?;
    let mut backoff = Backoff::new();
    loop {
        let state = deployer.describe_stack(name).await.map_err(wrap)?;
        if state.is_some() {
            report_new_events(deployer, name, &mut last_seen, reporter).await?;
        }
        match state {
            None => return Ok(None),
            Some(state) if state.status == "DELETE_COMPLETE" => return Ok(None),
            Some(state) if super::is_terminal(&state.status) => return Ok(Some(state)),
            Some(_) => backoff.wait().await,
        }
    }
}

/// Explains a failed operation by the first failed resource event since it started, following
/// nested stacks down to the resource that failed first.
async fn failure<D: StackDeployer>(
    deployer: &D,
    name: &str,
    state: &StackState,
    after_event: Option<&str>,
) -> ProvisionError {
    let root_cause = root_cause(deployer, name, after_event).await;
    ProvisionError::StackFailed {
        stack: name.to_owned(),
        status: state.status.clone(),
        reason: state.status_reason.clone(),
        root_cause: root_cause.map(Box::new),
    }
}

pub(crate) async fn root_cause<D: StackDeployer>(
    deployer: &D,
    name: &str,
    after_event: Option<&str>,
) -> Option<StackEvent> {
    let mut stack = name.to_owned();
    let mut after = after_event.map(str::to_owned);
    let mut found: Option<StackEvent> = None;
    // Nested stacks are followed a bounded number of levels, in case of a cycle of references.
    for _ in 0..5 {
        let events = deployer.stack_events(&stack, after.as_deref()).await.ok()?;
        let first_failure = events
            .iter()
            .rev()
            .find(|event| event.is_failure() && !event.is_stack_event() && !is_cancellation(event))
            .cloned()?;
        let nested = first_failure.resource_type == "AWS::CloudFormation::Stack";
        let nested_id = first_failure.physical_id.clone();
        found = Some(first_failure);
        match (nested, nested_id) {
            (true, Some(id)) => {
                stack = id;
                after = None;
            }
            _ => break,
        }
    }
    found
}

/// Resources CloudFormation stopped because another one failed are not the cause.
fn is_cancellation(event: &StackEvent) -> bool {
    event.reason.as_deref().is_some_and(|reason| {
        reason.contains("Resource creation cancelled")
            || reason.contains("Resource update cancelled")
    })
}
