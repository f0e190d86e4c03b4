//! Provisioning: planning, applying and deleting an instance's stacks through change sets, in
//! dependency order, with independent stacks in parallel. The core speaks to CloudFormation
//! only through [`StackDeployer`]; the AWS adapter lives in `crate::aws`.

mod engine;
mod plan;
mod teardown;
mod template;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::stacks::StackKind;

// The call error and the polling delay sit below provisioning, for every layer that calls AWS.
pub use crate::cloud::{Backoff, DeployError};
// Kept in the journal, so it belongs to the state below; its old path keeps compiling.
pub use crate::state::RetainedTarget;

pub use engine::apply_journalled;
pub use engine::{ApplyReport, Gate, StackOutcome, apply};
pub use plan::{INSTANCE_TAG, Plan, StackAction, StackPlan, plan};
pub use teardown::{
    Fate, Inventory, InventoryItem, Remaining, TeardownReport, delete_retained_data, inventory,
    teardown, teardown_journalled,
};

/// A stack as CloudFormation describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackState {
    pub name: String,
    pub id: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub last_updated: Option<jiff::Timestamp>,
    pub outputs: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

impl StackState {
    /// A stack that exists only as a container for a CREATE change set nobody executed.
    pub fn is_under_review(&self) -> bool {
        self.status == "REVIEW_IN_PROGRESS"
    }
}

/// Where CloudFormation reads a template from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    Body(String),
    Url(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeSetKind {
    Create,
    Update,
}

#[derive(Debug, Clone)]
pub struct ChangeSetRequest {
    pub stack_name: String,
    pub change_set_name: String,
    pub kind: ChangeSetKind,
    pub template: TemplateSource,
    pub parameters: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

/// The outcome of creating a change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSetStatus {
    Pending,
    Ready(Vec<ResourceChange>),
    /// CloudFormation found nothing to change.
    Empty,
    Failed(String),
}

/// One resource's change, as a change set describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceChange {
    pub action: ChangeAction,
    pub logical_id: String,
    pub resource_type: String,
    /// `True`, `False` or `Conditional` where CloudFormation says; `None` where it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    Add,
    Modify,
    Remove,
    Import,
    Dynamic,
}

impl fmt::Display for ChangeAction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            ChangeAction::Add => "add",
            ChangeAction::Modify => "modify",
            ChangeAction::Remove => "remove",
            ChangeAction::Import => "import",
            ChangeAction::Dynamic => "dynamic",
        })
    }
}

/// One entry of a stack's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackEvent {
    pub id: String,
    pub stack_name: String,
    pub timestamp: jiff::Timestamp,
    pub logical_id: String,
    pub physical_id: Option<String>,
    pub resource_type: String,
    pub status: String,
    pub reason: Option<String>,
}

impl StackEvent {
    /// Whether this event is about the stack itself rather than one of its resources.
    pub fn is_stack_event(&self) -> bool {
        self.resource_type == "AWS::CloudFormation::Stack" && self.logical_id == self.stack_name
    }

    pub fn is_failure(&self) -> bool {
        self.status.ends_with("_FAILED")
    }
}

/// A resource of a deployed stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackResource {
    pub logical_id: String,
    pub physical_id: Option<String>,
    pub resource_type: String,
    pub status: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The operation's journal could not be written, or the operation was asked to stop.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{stack}: {error}")]
    Deploy { stack: String, error: DeployError },
    #[error("a stack named {stack} already exists, and {}", match owner {
        Some(owner) => format!("it belongs to the instance \"{owner}\""),
        None => "stackwright did not create it".to_owned(),
    })]
    NameTaken {
        stack: String,
        owner: Option<String>,
    },
    #[error("{stack} is busy ({status})")]
    StackBusy { stack: String, status: String },
    #[error("{stack} is in DELETE_FAILED from an earlier teardown")]
    DeleteFailedStack { stack: String },
    #[error("{stack} cannot be planned: a stack it depends on is missing or lacks an output")]
    MissingDependencyOutputs { stack: String },
    #[error("{stack}: CloudFormation could not create the change set: {reason}")]
    ChangeSetFailed { stack: String, reason: String },
    #[error("{stack} disappeared while it was being deployed")]
    Vanished { stack: String },
    #[error("{stack}: {action} was declined")]
    Declined { stack: String, action: String },
    #[error(
        "{stack}'s template is {size} bytes, over the inline limit, and the bootstrap stack's artifact bucket does not exist yet"
    )]
    NoArtifactBucket { stack: String, size: usize },
    #[error("{stack} was not deployed: what it needs could not be put in place first: {message}")]
    Prerequisite {
        stack: String,
        message: String,
        hint: Option<String>,
    },
    #[error("{stack} failed and ended in {status}{}", root_cause.as_ref().map(|event| format!(": {} {} ({}) {}: {}", event.status, event.logical_id, event.resource_type, event.stack_name, event.reason.as_deref().unwrap_or("no reason given"))).or_else(|| reason.as_ref().map(|reason| format!(": {reason}"))).unwrap_or_default())]
    StackFailed {
        stack: String,
        status: String,
        reason: Option<String>,
        root_cause: Option<Box<StackEvent>>,
    },
    #[error("{stack} could not be deleted: {reason}{}", if resources.is_empty() { String::new() } else { format!(" (blocked by {})", resources.join(", ")) })]
    DeleteBlocked {
        stack: String,
        resources: Vec<String>,
        reason: String,
    },
}

impl ProvisionError {
    /// Whether CloudFormation undid the failed update: the stack is back as it was before the
    /// operation, healthy, at its previous template.
    pub fn rolled_back(&self) -> bool {
        matches!(self, ProvisionError::StackFailed { status, .. } if status == "UPDATE_ROLLBACK_COMPLETE")
    }

    pub fn deploy(stack: &str, source: DeployError) -> Self {
        ProvisionError::Deploy {
            stack: stack.to_owned(),
            error: source,
        }
    }

    /// The fix to try.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ProvisionError::Deploy { error, .. } => return error.hint(),
            ProvisionError::State(error) => return error.hint(),
            ProvisionError::Prerequisite { hint, .. } => return hint.clone(),
            ProvisionError::NameTaken { .. } => {
                "choose another instance.name in the configuration, or delete or rename the other stack".into()
            }
            ProvisionError::StackBusy { .. } => {
                "wait for the running operation to finish (`stackwright status` shows it), then run the command again".into()
            }
            ProvisionError::DeleteFailedStack { .. } => "run `stackwright teardown` to finish deleting it".into(),
            ProvisionError::MissingDependencyOutputs { .. } => {
                "run `stackwright install` so that the stacks it depends on are complete".into()
            }
            ProvisionError::ChangeSetFailed { .. } => {
                "fix what CloudFormation names (a quota, a permission, a resource in use) and run the command again".into()
            }
            ProvisionError::Vanished { .. } => "someone deleted it meanwhile; run the command again".into(),
            ProvisionError::Declined { .. } => "nothing was changed; run again and confirm to go ahead".into(),
            ProvisionError::NoArtifactBucket { .. } => "install the bootstrap stack first: `stackwright install`".into(),
            ProvisionError::StackFailed { status, .. } if status == "ROLLBACK_COMPLETE" => {
                "fix the cause above and run `stackwright install` again: it deletes the rolled-back stack and creates it anew".into()
            }
            ProvisionError::StackFailed { .. } => {
                "CloudFormation rolled the stack back; fix the cause above and run `stackwright install` again".into()
            }
            ProvisionError::DeleteBlocked { .. } => {
                "remove what blocks the deletion (or confirm retaining it) and run `stackwright teardown` again".into()
            }
        })
    }
}

/// What the core needs from CloudFormation. Every create and update goes through a change set.
#[allow(async_fn_in_trait)]
pub trait StackDeployer: Sync {
    /// The stack, or `None` when no stack of that name exists (deleted ones included).
    async fn describe_stack(&self, name: &str) -> Result<Option<StackState>, DeployError>;
    /// The template body the stack was last deployed with.
    async fn deployed_template(&self, name: &str) -> Result<String, DeployError>;
    /// Creates a change set and returns its ID.
    async fn create_change_set(&self, request: &ChangeSetRequest) -> Result<String, DeployError>;
    async fn change_set_status(&self, id: &str) -> Result<ChangeSetStatus, DeployError>;
    async fn execute_change_set(&self, id: &str, client_token: &str) -> Result<(), DeployError>;
    async fn delete_change_set(&self, id: &str) -> Result<(), DeployError>;
    /// The stack's events, newest first, down to (not including) `since_event_id` if given.
    async fn stack_events(
        &self,
        stack: &str,
        since_event_id: Option<&str>,
    ) -> Result<Vec<StackEvent>, DeployError>;
    async fn stack_resources(&self, stack: &str) -> Result<Vec<StackResource>, DeployError>;
    async fn delete_stack(
        &self,
        name: &str,
        retain: &[String],
        client_token: &str,
    ) -> Result<(), DeployError>;
    async fn continue_update_rollback(
        &self,
        name: &str,
        client_token: &str,
    ) -> Result<(), DeployError>;
    /// Uploads a template too large to pass inline and returns the URL CloudFormation reads.
    async fn upload_template(
        &self,
        bucket: &str,
        key: &str,
        body: &str,
    ) -> Result<String, DeployError>;
    /// Deletes every object version in a bucket, so that the bucket itself can be deleted.
    async fn empty_bucket(&self, bucket: &str) -> Result<u64, DeployError>;
    /// Deletes a resource a stack retained on deletion (buckets are emptied first, tables lose
    /// their deletion protection first).
    async fn delete_retained(
        &self,
        resource_type: &str,
        physical_id: &str,
    ) -> Result<(), DeployError>;
}

/// Told when a stack is deployed or deleted, so that an interrupted operation can resume after
/// it. An error stops the operation once the stacks running beside it are done.
#[allow(async_fn_in_trait)]
pub trait StackJournal: Sync {
    /// Called before a stack that changes is applied, to put in place what it needs (the
    /// release's images, before the stacks that run them).
    async fn before_stack(&self, _kind: StackKind) -> Result<(), ProvisionError> {
        Ok(())
    }

    async fn stack_done(&self, kind: StackKind) -> Result<(), ProvisionError>;
}

/// No journal: nothing is recorded.
pub struct NoJournal;

impl StackJournal for NoJournal {
    async fn stack_done(&self, _kind: StackKind) -> Result<(), ProvisionError> {
        Ok(())
    }
}

/// Progress of a deployment, reported as it happens.
pub trait DeployReporter: Sync {
    fn stack_started(&self, stack: &str, action: StackAction, resources: usize);
    fn event(&self, event: &StackEvent);
    fn stack_finished(&self, stack: &str, status: &str, succeeded: bool);
    /// A line of narrative outside any one stack.
    fn note(&self, message: &str);
}

/// Terminal stack statuses: the stack will not change until someone acts on it.
pub fn is_terminal(status: &str) -> bool {
    !status.ends_with("_IN_PROGRESS")
}

/// Statuses after which the last operation counts as successful.
pub fn is_success(status: &str) -> bool {
    matches!(
        status,
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "DELETE_COMPLETE" | "IMPORT_COMPLETE"
    )
}
