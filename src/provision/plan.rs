//! `plan`: what installing the rendered stacks would change, stack by stack and resource by
//! resource. A stack whose deployed template, parameters and tags already match is left alone
//! without a single CloudFormation write; an existing stack that differs gets an UPDATE change
//! set; a new stack lists its template's resources (a CREATE change set would create the stack
//! itself, in `REVIEW_IN_PROGRESS`, which a plan must not leave behind).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::template::template_source;
use super::{
    Backoff, ChangeAction, ChangeSetKind, ChangeSetRequest, ChangeSetStatus, DeployError,
    ProvisionError, ResourceChange, StackDeployer, StackState,
};
use crate::render::RenderedStack;

/// What will happen to one stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackAction {
    Create,
    Update,
    /// A failed first create left the stack in `ROLLBACK_COMPLETE`: delete it, then create it.
    Recreate,
    /// An update whose rollback failed: continue the rollback, then update.
    ContinueRollbackAndUpdate,
    NoChange,
    Delete,
}

impl fmt::Display for StackAction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            StackAction::Create => "create",
            StackAction::Update => "update",
            StackAction::Recreate => "delete and create again",
            StackAction::ContinueRollbackAndUpdate => "continue rollback, then update",
            StackAction::NoChange => "no change",
            StackAction::Delete => "delete",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StackPlan {
    pub stack_name: String,
    pub action: StackAction,
    /// The stack's current status, when it exists.
    pub status: Option<String>,
    pub changes: Vec<ResourceChange>,
    /// The change set behind `changes`, kept for `install` to execute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_set_id: Option<String>,
    /// The parameter values the change set was made with.
    #[serde(skip)]
    pub parameters: BTreeMap<String, String>,
    /// Why the action was chosen, when it needs saying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Every stack's plan, in deployment order. Printed as text or JSON; `install` executes it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub instance: String,
    pub stacks: Vec<StackPlan>,
}

impl Plan {
    /// The names of the stacks planned, in order.
    pub fn stack_names(&self) -> Vec<String> {
        self.stacks
            .iter()
            .map(|stack| stack.stack_name.clone())
            .collect()
    }

    pub fn has_changes(&self) -> bool {
        self.stacks
            .iter()
            .any(|stack| stack.action != StackAction::NoChange)
    }

    /// Counts of resource changes by action, over every stack.
    pub fn totals(&self) -> BTreeMap<ChangeAction, usize> {
        let mut totals = BTreeMap::new();
        for change in self.stacks.iter().flat_map(|stack| &stack.changes) {
            *totals.entry(change.action).or_insert(0) += 1;
        }
        totals
    }

    pub fn replacements(&self) -> usize {
        self.stacks
            .iter()
            .flat_map(|stack| &stack.changes)
            .filter(|change| matches!(change.replacement.as_deref(), Some("True" | "Conditional")))
            .count()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for stack in &self.stacks {
            let status = stack
                .status
                .as_deref()
                .map(|status| format!(" ({status})"))
                .unwrap_or_default();
            writeln!(formatter, "{}: {}{status}", stack.stack_name, stack.action)?;
            if let Some(note) = &stack.note {
                writeln!(formatter, "    {note}")?;
            }
            for change in &stack.changes {
                let symbol = match change.action {
                    ChangeAction::Add => "+",
                    ChangeAction::Remove => "-",
                    _ => "~",
                };
                let replacement = match change.replacement.as_deref() {
                    Some("True") => " (replaced)",
                    Some("Conditional") => " (may be replaced)",
                    _ => "",
                };
                writeln!(
                    formatter,
                    "    {symbol} {:<40} {}{replacement}",
                    change.logical_id, change.resource_type
                )?;
            }
        }
        let totals = self.totals();
        let count = |action| totals.get(&action).copied().unwrap_or(0);
        write!(
            formatter,
            "Plan: {} to add, {} to modify, {} to remove, {} replaced, across {} of {} stacks.",
            count(ChangeAction::Add),
            count(ChangeAction::Modify) + count(ChangeAction::Dynamic),
            count(ChangeAction::Remove),
            self.replacements(),
            self.stacks
                .iter()
                .filter(|stack| stack.action != StackAction::NoChange)
                .count(),
            self.stacks.len()
        )
    }
}

/// The tag every stack of an instance carries; a stack without it belongs to someone else.
pub const INSTANCE_TAG: &str = "stackwright:instance";

/// Plans every rendered stack. With `keep_change_sets`, the change sets stay for `apply` to
/// execute; otherwise they are deleted before returning.
pub async fn plan<D: StackDeployer>(
    deployer: &D,
    instance: &str,
    stacks: &[RenderedStack],
    region: &str,
    keep_change_sets: bool,
) -> Result<Plan, ProvisionError> {
    let mut states = outside_dependencies(deployer, stacks).await?;
    let mut plans = Vec::with_capacity(stacks.len());
    for stack in stacks {
        let state = deployer
            .describe_stack(&stack.stack_name)
            .await
            .map_err(|source| ProvisionError::deploy(&stack.stack_name, source))?;
        if let Some(state) = &state {
            check_ownership(instance, state)?;
        }
        let parameters = resolve_parameters(stack, &states);
        let plan = match (&state, parameters) {
            (None, _) => new_stack_plan(stack, StackAction::Create, None, None),
            (Some(state), _) if state.is_under_review() => new_stack_plan(
                stack,
                StackAction::Create,
                Some(state),
                Some("an earlier change set was never executed; it is replaced".into()),
            ),
            (Some(state), _) if state.status == "ROLLBACK_COMPLETE" => new_stack_plan(
                stack,
                StackAction::Recreate,
                Some(state),
                Some(
                    "its first create failed and was rolled back; CloudFormation cannot update it, so it is deleted and created again"
                        .into(),
                ),
            ),
            (Some(state), _) if !super::is_terminal(&state.status) => {
                return Err(ProvisionError::StackBusy {
                    stack: stack.stack_name.clone(),
                    status: state.status.clone(),
                });
            }
            (Some(state), _) if state.status == "DELETE_FAILED" => {
                return Err(ProvisionError::DeleteFailedStack {
                    stack: stack.stack_name.clone(),
                });
            }
            (Some(_), None) => {
                return Err(ProvisionError::MissingDependencyOutputs {
                    stack: stack.stack_name.clone(),
                });
            }
            (Some(state), Some(parameters)) => {
                plan_existing(deployer, stack, state, parameters, &states, region, keep_change_sets).await?
            }
        };
        states.insert(stack.stack_name.clone(), state);
        plans.push(plan);
    }
    Ok(Plan {
        instance: instance.to_owned(),
        stacks: plans,
    })
}

/// Refuses to touch a stack of that name that another instance or tool created.
pub fn check_ownership(instance: &str, state: &StackState) -> Result<(), ProvisionError> {
    match state.tags.get(INSTANCE_TAG) {
        Some(owner) if owner == instance => Ok(()),
        owner => Err(ProvisionError::NameTaken {
            stack: state.name.clone(),
            owner: owner.cloned(),
        }),
    }
}

/// The parameter values from the outputs of the stacks already deployed, or `None` when a
/// dependency does not exist yet.
/// The deployed state of every stack that `stacks` take outputs from without including it:
/// planning or applying some of an instance's stacks (the updater alone) reads the others'
/// outputs from CloudFormation. Nothing is read when every dependency is included.
pub(crate) async fn outside_dependencies<D: StackDeployer>(
    deployer: &D,
    stacks: &[RenderedStack],
) -> Result<BTreeMap<String, Option<StackState>>, ProvisionError> {
    let mut states = BTreeMap::new();
    for source in stacks.iter().flat_map(|stack| &stack.parameters) {
        let included = stacks.iter().any(|stack| stack.stack_name == source.stack);
        if included || states.contains_key(&source.stack) {
            continue;
        }
        let state = deployer
            .describe_stack(&source.stack)
            .await
            .map_err(|error| ProvisionError::deploy(&source.stack, error))?;
        states.insert(source.stack.clone(), state);
    }
    Ok(states)
}

pub fn resolve_parameters(
    stack: &RenderedStack,
    states: &BTreeMap<String, Option<StackState>>,
) -> Option<BTreeMap<String, String>> {
    stack
        .parameters
        .iter()
        .map(|source| {
            let value = states
                .get(&source.stack)?
                .as_ref()?
                .outputs
                .get(&source.output)?;
            Some((source.parameter.clone(), value.clone()))
        })
        .collect()
}

fn new_stack_plan(
    stack: &RenderedStack,
    action: StackAction,
    state: Option<&StackState>,
    note: Option<String>,
) -> StackPlan {
    StackPlan {
        stack_name: stack.stack_name.clone(),
        action,
        status: state.map(|state| state.status.clone()),
        changes: stack
            .summary
            .resource_list
            .iter()
            .map(|resource| ResourceChange {
                action: ChangeAction::Add,
                logical_id: resource.logical_id.clone(),
                resource_type: resource.resource_type.clone(),
                replacement: None,
            })
            .collect(),
        change_set_id: None,
        parameters: BTreeMap::new(),
        note,
    }
}

async fn plan_existing<D: StackDeployer>(
    deployer: &D,
    stack: &RenderedStack,
    state: &StackState,
    parameters: BTreeMap<String, String>,
    states: &BTreeMap<String, Option<StackState>>,
    region: &str,
    keep_change_sets: bool,
) -> Result<StackPlan, ProvisionError> {
    let wrap = |source: DeployError| ProvisionError::deploy(&stack.stack_name, source);
    let rollback_failed = state.status == "UPDATE_ROLLBACK_FAILED";
    let unchanged_plan = || StackPlan {
        stack_name: stack.stack_name.clone(),
        action: StackAction::NoChange,
        status: Some(state.status.clone()),
        changes: Vec::new(),
        change_set_id: None,
        parameters: parameters.clone(),
        note: None,
    };
    if !rollback_failed
        && matches_deployed(deployer, stack, state, &parameters)
            .await
            .map_err(wrap)?
    {
        return Ok(unchanged_plan());
    }
    if rollback_failed {
        // No change set can be made until the rollback is continued; show the template's
        // resources as the update's scope.
        let mut plan = new_stack_plan(
            stack,
            StackAction::ContinueRollbackAndUpdate,
            Some(state),
            Some("an update's rollback failed; the rollback is continued first".into()),
        );
        plan.changes.clear();
        plan.parameters = parameters;
        return Ok(plan);
    }
    let template = template_source(deployer, stack, states, region).await?;
    let request = ChangeSetRequest {
        stack_name: stack.stack_name.clone(),
        change_set_name: change_set_name(),
        kind: ChangeSetKind::Update,
        template,
        parameters: parameters.clone(),
        tags: stack.tags.clone(),
    };
    let id = match deployer.create_change_set(&request).await {
        Ok(id) => id,
        // Some endpoints refuse a change set without changes at once instead of marking it FAILED.
        Err(error) if is_no_change_reason(&error.to_string()) => return Ok(unchanged_plan()),
        Err(error) => return Err(wrap(error)),
    };
    let status = wait_for_change_set(deployer, &id).await.map_err(wrap)?;
    let plan = match status {
        ChangeSetStatus::Ready(changes) => StackPlan {
            stack_name: stack.stack_name.clone(),
            action: StackAction::Update,
            status: Some(state.status.clone()),
            changes,
            change_set_id: keep_change_sets.then(|| id.clone()),
            parameters,
            note: None,
        },
        ChangeSetStatus::Empty => unchanged_plan(),
        ChangeSetStatus::Failed(reason) if is_no_change_reason(&reason) => unchanged_plan(),
        ChangeSetStatus::Failed(reason) => {
            let _ = deployer.delete_change_set(&id).await;
            return Err(ProvisionError::ChangeSetFailed {
                stack: stack.stack_name.clone(),
                reason,
            });
        }
        ChangeSetStatus::Pending => unreachable!("waiting ends on a final status"),
    };
    if plan.change_set_id.is_none() {
        deployer.delete_change_set(&id).await.map_err(wrap)?;
    }
    Ok(plan)
}

/// Whether the deployed stack already has this template, these parameters and these tags.
async fn matches_deployed<D: StackDeployer>(
    deployer: &D,
    stack: &RenderedStack,
    state: &StackState,
    parameters: &BTreeMap<String, String>,
) -> Result<bool, DeployError> {
    let tags_match = stack
        .tags
        .iter()
        .all(|(key, value)| state.tags.get(key) == Some(value));
    let parameters_match = parameters
        .iter()
        .all(|(key, value)| state.parameters.get(key) == Some(value));
    if !tags_match
        || !parameters_match
        || !super::is_success(&state.status) && state.status != "UPDATE_ROLLBACK_COMPLETE"
    {
        return Ok(false);
    }
    Ok(deployer.deployed_template(&stack.stack_name).await? == stack.body)
}

pub(crate) async fn wait_for_change_set<D: StackDeployer>(
    deployer: &D,
    id: &str,
) -> Result<ChangeSetStatus, DeployError> {
    let mut backoff = Backoff::new();
    loop {
        match deployer.change_set_status(id).await? {
            ChangeSetStatus::Pending => backoff.wait().await,
            status => return Ok(status),
        }
    }
}

/// CloudFormation's ways of saying a change set changes nothing.
pub(crate) fn is_no_change_reason(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

/// A change set name unique to this moment.
pub(crate) fn change_set_name() -> String {
    let now = jiff::Timestamp::now();
    format!(
        "stackwright-{}{:09}",
        now.as_second(),
        now.subsec_nanosecond()
    )
}
