//! In-memory fakes of the core's narrow traits (CloudFormation's [`StackDeployer`], the state
//! table's [`StateStore`], [`Clock`] and the vendor's [`ControlPlane`]) that keep the real
//! adapters' semantics, so that whole workflows are unit-tested without an emulator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde_yaml_ng::Value;

use crate::control_plane::{
    ControlPlane, ControlPlaneError, Heartbeat, HeartbeatReceipt, InstanceCredentials, IssuedToken,
    OfferedRelease, OperationReport, RegisterRequest, Registration, ReportReceipt, SecretToken,
    UpdateOffer, UpdateQuery,
};
use crate::provision::{
    ChangeAction, ChangeSetKind, ChangeSetRequest, ChangeSetStatus, DeployError, ResourceChange,
    StackDeployer, StackEvent, StackResource, StackState, TemplateSource,
};
use crate::state::{
    Clock, HistoryEntry, Holder, Installation, ItemKey, Journal, Lease, SCHEMA_VERSION, StateError,
    StateStore, StateWrite, StoredItem, decode, encode,
};

/// The state of a fake, behind its mutex. A test that panicked while holding it has failed
/// already, so a poisoned mutex is not worth recovering from.
fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("a fake's state is not poisoned")
}

// --- CloudFormation -----------------------------------------------------------------------

/// The account every fake ARN names.
const ACCOUNT: &str = "123456789012";
/// The time of the fake's first event (2026-01-01T00:00:00Z); each later one is a second on.
const FIRST_EVENT_SECOND: i64 = 1_767_225_600;
const STACK_TYPE: &str = "AWS::CloudFormation::Stack";

/// CloudFormation, S3 uploads and retained-resource deletion in memory. Every call takes one
/// lock for its whole effect, so stacks deployed in parallel see each other's changes whole.
/// Operations finish at once: a stack is terminal again when the call that started its
/// operation returns, with the events the operation would have produced.
pub(crate) struct FakeCloudFormation {
    region: String,
    cloud: Mutex<Cloud>,
}

#[derive(Default)]
struct Cloud {
    stacks: BTreeMap<String, FakeStack>,
    change_sets: BTreeMap<String, FakeChangeSet>,
    /// Uploaded templates by the URL CloudFormation reads them from.
    uploads: BTreeMap<String, Upload>,
    sequence: Sequence,
    writes: Vec<String>,
    deleted_stacks: Vec<String>,
    emptied_buckets: Vec<String>,
    deleted_retained: Vec<(String, String)>,
    skipped_on_delete: Vec<SkippedResource>,
    update_failures: BTreeMap<String, ScriptedFailure>,
    create_failures: BTreeMap<String, ScriptedFailure>,
    delete_failures: BTreeMap<String, ScriptedFailure>,
    /// (stack, logical ID) pairs whose next modification replaces the resource.
    replacements: BTreeSet<(String, String)>,
}

/// The source of event IDs, timestamps and physical IDs: increasing, and the same run after run.
#[derive(Default)]
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> (u64, Timestamp) {
        self.0 += 1;
        let second = FIRST_EVENT_SECOND + i64::try_from(self.0).unwrap_or(i64::MAX / 2);
        let time = Timestamp::from_second(second).expect("the fake's clock stays in range");
        (self.0, time)
    }
}

#[derive(Debug, Clone)]
struct ScriptedFailure {
    logical_id: String,
    reason: String,
}

struct FakeStack {
    state: StackState,
    /// The body of the last template deployed; empty while the stack is under review.
    template: String,
    resources: Vec<FakeResource>,
    /// Oldest first.
    events: Vec<StackEvent>,
}

#[derive(Debug, Clone)]
struct FakeResource {
    logical_id: String,
    resource_type: String,
    physical_id: String,
    status: String,
}

struct FakeChangeSet {
    stack_name: String,
    name: String,
    kind: ChangeSetKind,
    body: String,
    parameters: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    status: ChangeSetStatus,
}

struct Upload {
    bucket: String,
    key: String,
    body: String,
}

/// A resource the fake left in place when its stack was deleted (`DeletionPolicy: Retain`, or
/// named in the deletion's retain list), as CloudFormation reports with `DELETE_SKIPPED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SkippedResource {
    pub stack_name: String,
    pub logical_id: String,
    pub resource_type: String,
    pub physical_id: String,
}

/// What the fake reads from a template.
struct Template {
    resources: Vec<TemplateResource>,
    /// Each output's key and its `Value`.
    outputs: Vec<(String, Value)>,
    parameter_defaults: BTreeMap<String, String>,
}

struct TemplateResource {
    logical_id: String,
    resource_type: String,
    definition: Value,
    retained: bool,
}

impl Template {
    fn resource(&self, logical_id: &str) -> Option<&TemplateResource> {
        self.resources
            .iter()
            .find(|resource| resource.logical_id == logical_id)
    }
}

fn parse_template(body: &str) -> Result<Template, String> {
    let root: Value =
        serde_yaml_ng::from_str(body).map_err(|error| format!("Template format error: {error}"))?;
    let resources = root
        .get("Resources")
        .and_then(Value::as_mapping)
        .filter(|resources| !resources.is_empty())
        .ok_or("Template format error: At least one Resources member must be defined.")?
        .iter()
        .map(|(logical_id, definition)| {
            let logical_id = logical_id
                .as_str()
                .ok_or("Template format error: a resource's logical ID is not a string")?;
            let resource_type = definition
                .get("Type")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("Template format error: {logical_id} has no Type"))?;
            Ok(TemplateResource {
                logical_id: logical_id.to_owned(),
                resource_type: resource_type.to_owned(),
                retained: definition.get("DeletionPolicy").and_then(Value::as_str)
                    == Some("Retain"),
                definition: definition.clone(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let outputs = root
        .get("Outputs")
        .and_then(Value::as_mapping)
        .map(|outputs| {
            outputs
                .iter()
                .filter_map(|(key, output)| {
                    Some((
                        key.as_str()?.to_owned(),
                        output.get("Value").cloned().unwrap_or(Value::Null),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let parameter_defaults = root
        .get("Parameters")
        .and_then(Value::as_mapping)
        .map(|parameters| {
            parameters
                .iter()
                .filter_map(|(name, parameter)| {
                    Some((
                        name.as_str()?.to_owned(),
                        scalar_text(parameter.get("Default")?)?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Template {
        resources,
        outputs,
        parameter_defaults,
    })
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Whether a resource's definition refers to any of `parameters`, by `Ref` or inside a `Sub`.
fn refers_to(value: &Value, parameters: &BTreeSet<String>) -> bool {
    match value {
        Value::Mapping(mapping) => mapping.iter().any(|(key, value)| {
            (key.as_str() == Some("Ref")
                && value
                    .as_str()
                    .is_some_and(|target| parameters.contains(target)))
                || refers_to(value, parameters)
        }),
        Value::Sequence(items) => items.iter().any(|item| refers_to(item, parameters)),
        Value::String(text) => parameters
            .iter()
            .any(|parameter| text.contains(&format!("${{{parameter}}}"))),
        Value::Tagged(tagged) => refers_to(&tagged.value, parameters),
        _ => false,
    }
}

/// The parameters a stack ends up with: the template's defaults, overridden by those given.
fn effective_parameters(
    template: &Template,
    given: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut parameters = template.parameter_defaults.clone();
    parameters.extend(
        given
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    parameters
}

fn aws_error(operation: &'static str, code: &str, message: impl Into<String>) -> DeployError {
    // The real adapter prefixes the service's message with its code.
    DeployError::Aws {
        operation,
        code: Some(code.to_owned()),
        message: format!("{code}: {}", message.into()),
    }
}

fn missing_stack(operation: &'static str, name: &str) -> DeployError {
    aws_error(
        operation,
        "ValidationError",
        format!("Stack with id {name} does not exist"),
    )
}

impl Default for FakeCloudFormation {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCloudFormation {
    /// An empty account in `us-east-1`.
    pub(crate) fn new() -> Self {
        Self::in_region("us-east-1")
    }

    /// An empty account in `region`, which names stack ARNs and upload URLs.
    pub(crate) fn in_region(region: &str) -> Self {
        FakeCloudFormation {
            region: region.to_owned(),
            cloud: Mutex::new(Cloud::default()),
        }
    }

    /// The next update of `stack` fails at `logical_id` with `reason` and is rolled back: the
    /// stack ends in `UPDATE_ROLLBACK_COMPLETE` at its previous template.
    pub(crate) fn fail_next_update(&self, stack: &str, logical_id: &str, reason: &str) {
        guard(&self.cloud)
            .update_failures
            .insert(stack.to_owned(), scripted(logical_id, reason));
    }

    /// The next create of `stack` fails at `logical_id` with `reason`: the stack ends in
    /// `ROLLBACK_COMPLETE`, its resources deleted, as a failed first create leaves it.
    pub(crate) fn fail_next_create(&self, stack: &str, logical_id: &str, reason: &str) {
        guard(&self.cloud)
            .create_failures
            .insert(stack.to_owned(), scripted(logical_id, reason));
    }

    /// The next deletion of `stack` cannot delete `logical_id`: the stack ends in
    /// `DELETE_FAILED` with that resource `DELETE_FAILED` and the others deleted.
    pub(crate) fn fail_next_delete(&self, stack: &str, logical_id: &str, reason: &str) {
        guard(&self.cloud)
            .delete_failures
            .insert(stack.to_owned(), scripted(logical_id, reason));
    }

    /// A modification of `logical_id` in `stack` replaces the resource: its change says
    /// `replacement: True`, and executing it gives the resource a new physical ID.
    pub(crate) fn replace_on_update(&self, stack: &str, logical_id: &str) {
        guard(&self.cloud)
            .replacements
            .insert((stack.to_owned(), logical_id.to_owned()));
    }

    /// Puts an existing stack into `status`, as an operation outside the test would have left
    /// it (`UPDATE_IN_PROGRESS`, `UPDATE_ROLLBACK_FAILED`...).
    pub(crate) fn set_stack_status(&self, stack: &str, status: &str) {
        let mut cloud = guard(&self.cloud);
        let stack = cloud
            .stacks
            .get_mut(stack)
            .unwrap_or_else(|| panic!("the fake holds no stack {stack}"));
        stack.state.status = status.to_owned();
    }

    /// Every mutating call made, in order, as `<API operation> <target>`: `CreateChangeSet`,
    /// `ExecuteChangeSet`, `DeleteChangeSet`, `DeleteStack`, `ContinueUpdateRollback`,
    /// `PutObject`, `EmptyBucket`, `DeleteRetained`.
    pub(crate) fn writes(&self) -> Vec<String> {
        guard(&self.cloud).writes.clone()
    }

    /// The stack as `describe_stack` returns it.
    pub(crate) fn stack(&self, name: &str) -> Option<StackState> {
        guard(&self.cloud)
            .stacks
            .get(name)
            .map(|stack| stack.state.clone())
    }

    /// The names of the stacks that exist, deleted ones excluded.
    pub(crate) fn stack_names(&self) -> Vec<String> {
        guard(&self.cloud).stacks.keys().cloned().collect()
    }

    /// The template body the stack was last deployed with.
    pub(crate) fn template(&self, name: &str) -> Option<String> {
        guard(&self.cloud)
            .stacks
            .get(name)
            .map(|stack| stack.template.clone())
    }

    /// The IDs of the change sets that exist, none executed or deleted.
    pub(crate) fn open_change_sets(&self) -> Vec<String> {
        guard(&self.cloud).change_sets.keys().cloned().collect()
    }

    /// The stacks deleted, in order.
    pub(crate) fn deleted_stacks(&self) -> Vec<String> {
        guard(&self.cloud).deleted_stacks.clone()
    }

    /// Uploaded templates as (bucket, key), emptied buckets' objects excluded.
    pub(crate) fn uploads(&self) -> Vec<(String, String)> {
        guard(&self.cloud)
            .uploads
            .values()
            .map(|upload| (upload.bucket.clone(), upload.key.clone()))
            .collect()
    }

    pub(crate) fn emptied_buckets(&self) -> Vec<String> {
        guard(&self.cloud).emptied_buckets.clone()
    }

    /// Retained resources deleted after their stack, as (resource type, physical ID).
    pub(crate) fn deleted_retained(&self) -> Vec<(String, String)> {
        guard(&self.cloud).deleted_retained.clone()
    }

    /// Resources left in place by stack deletions.
    pub(crate) fn skipped_on_delete(&self) -> Vec<SkippedResource> {
        guard(&self.cloud).skipped_on_delete.clone()
    }

    fn change_set_arn(&self, stack: &str, name: &str, number: u64) -> String {
        format!(
            "arn:aws:cloudformation:{}:{ACCOUNT}:changeSet/{name}/{stack}-{number:08}",
            self.region
        )
    }

    fn stack_arn(&self, stack: &str, number: u64) -> String {
        format!(
            "arn:aws:cloudformation:{}:{ACCOUNT}:stack/{stack}/{number:08}",
            self.region
        )
    }

    /// The same URL form as the real adapter's.
    fn template_url(&self, bucket: &str, key: &str) -> String {
        if self.region == "us-east-1" {
            format!("https://s3.amazonaws.com/{bucket}/{key}")
        } else {
            format!("https://s3.{}.amazonaws.com/{bucket}/{key}", self.region)
        }
    }
}

fn scripted(logical_id: &str, reason: &str) -> ScriptedFailure {
    ScriptedFailure {
        logical_id: logical_id.to_owned(),
        reason: reason.to_owned(),
    }
}

fn push_event(
    stack: &mut FakeStack,
    sequence: &mut Sequence,
    resource: (&str, Option<&str>, &str),
    status: &str,
    reason: Option<&str>,
) {
    let (number, timestamp) = sequence.next();
    let (logical_id, physical_id, resource_type) = resource;
    stack.events.push(StackEvent {
        id: format!("event-{number:08}"),
        stack_name: stack.state.name.clone(),
        timestamp,
        logical_id: logical_id.to_owned(),
        physical_id: physical_id.map(str::to_owned),
        resource_type: resource_type.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
    });
}

fn push_resource_event(
    stack: &mut FakeStack,
    sequence: &mut Sequence,
    resource: &FakeResource,
    reason: Option<&str>,
) {
    push_event(
        stack,
        sequence,
        (
            &resource.logical_id,
            Some(&resource.physical_id),
            &resource.resource_type,
        ),
        &resource.status,
        reason,
    );
}

/// An event about the stack itself, which also moves the stack to `status`.
fn push_stack_event(
    stack: &mut FakeStack,
    sequence: &mut Sequence,
    status: &str,
    reason: Option<&str>,
) {
    let name = stack.state.name.clone();
    let id = stack.state.id.clone();
    push_event(
        stack,
        sequence,
        (&name, Some(&id), STACK_TYPE),
        status,
        reason,
    );
    stack.state.status = status.to_owned();
    stack.state.status_reason = reason.map(str::to_owned);
}

fn new_physical_id(stack: &str, logical_id: &str, sequence: &mut Sequence) -> String {
    let (number, _) = sequence.next();
    format!("{stack}-{logical_id}-{number:04}").to_lowercase()
}

/// Output values as CloudFormation would resolve them: a literal stays as it is, a `Ref` to a
/// resource is its physical ID and to a parameter its value; anything else (`GetAtt`, `Sub`...)
/// gets a value made of the stack's name and the output's.
fn resolve_outputs(
    stack: &str,
    template: &Template,
    resources: &[FakeResource],
    parameters: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    template
        .outputs
        .iter()
        .map(|(key, value)| {
            let referenced = value.get("Ref").and_then(Value::as_str).and_then(|target| {
                resources
                    .iter()
                    .find(|resource| resource.logical_id == target)
                    .map(|resource| resource.physical_id.clone())
                    .or_else(|| parameters.get(target).cloned())
            });
            let resolved = scalar_text(value)
                .or(referenced)
                .unwrap_or_else(|| format!("{stack}-{key}"));
            (key.clone(), resolved)
        })
        .collect()
}

/// The changes a change set would list, in template order, removals last.
fn diff(
    stack: &str,
    deployed: Option<(&Template, &StackState)>,
    proposed: &Template,
    parameters: &BTreeMap<String, String>,
    tags: &BTreeMap<String, String>,
    replacements: &BTreeSet<(String, String)>,
) -> Vec<ResourceChange> {
    let Some((deployed, state)) = deployed else {
        return proposed
            .resources
            .iter()
            .map(|resource| ResourceChange {
                action: ChangeAction::Add,
                logical_id: resource.logical_id.clone(),
                resource_type: resource.resource_type.clone(),
                replacement: None,
            })
            .collect();
    };
    let changed_parameters: BTreeSet<String> = parameters
        .keys()
        .chain(state.parameters.keys())
        .filter(|key| parameters.get(*key) != state.parameters.get(*key))
        .cloned()
        .collect();
    // CloudFormation copies stack tags to every resource that takes tags: changing them
    // modifies the resources.
    let tags_changed = *tags != state.tags;
    let mut changes = Vec::new();
    for resource in &proposed.resources {
        let Some(before) = deployed.resource(&resource.logical_id) else {
            changes.push(ResourceChange {
                action: ChangeAction::Add,
                logical_id: resource.logical_id.clone(),
                resource_type: resource.resource_type.clone(),
                replacement: None,
            });
            continue;
        };
        let modified = before.definition != resource.definition
            || tags_changed
            || refers_to(&resource.definition, &changed_parameters);
        if !modified {
            continue;
        }
        let replaced = before.resource_type != resource.resource_type
            || replacements.contains(&(stack.to_owned(), resource.logical_id.clone()));
        changes.push(ResourceChange {
            action: ChangeAction::Modify,
            logical_id: resource.logical_id.clone(),
            resource_type: resource.resource_type.clone(),
            replacement: Some(if replaced { "True" } else { "False" }.to_owned()),
        });
    }
    for resource in &deployed.resources {
        if proposed.resource(&resource.logical_id).is_none() {
            changes.push(ResourceChange {
                action: ChangeAction::Remove,
                logical_id: resource.logical_id.clone(),
                resource_type: resource.resource_type.clone(),
                replacement: None,
            });
        }
    }
    changes
}

/// Why a change set of `kind` cannot be made on the stack as it is, if it cannot.
fn change_set_refusal(
    kind: ChangeSetKind,
    name: &str,
    stack: Option<&FakeStack>,
) -> Option<String> {
    match (kind, stack) {
        (ChangeSetKind::Create, None) => None,
        (ChangeSetKind::Create, Some(stack)) if stack.state.is_under_review() => None,
        (ChangeSetKind::Create, Some(_)) => Some(format!("Stack [{name}] already exists")),
        (ChangeSetKind::Update, None) => Some(format!("Stack [{name}] does not exist")),
        (ChangeSetKind::Update, Some(stack)) => {
            let status = stack.state.status.as_str();
            let updatable = crate::provision::is_terminal(status)
                && !matches!(
                    status,
                    "REVIEW_IN_PROGRESS"
                        | "ROLLBACK_COMPLETE"
                        | "ROLLBACK_FAILED"
                        | "DELETE_FAILED"
                        | "UPDATE_ROLLBACK_FAILED"
                        | "CREATE_FAILED"
                );
            (!updatable).then(|| {
                format!(
                    "Stack:{} is in {status} state and can not be updated.",
                    stack.state.id
                )
            })
        }
    }
}

impl Cloud {
    fn template_body(&self, source: &TemplateSource) -> Result<String, DeployError> {
        match source {
            TemplateSource::Body(body) => Ok(body.clone()),
            TemplateSource::Url(url) => self
                .uploads
                .get(url)
                .map(|upload| upload.body.clone())
                .ok_or_else(|| {
                    aws_error(
                        "cloudformation:CreateChangeSet",
                        "ValidationError",
                        format!("S3 error: the template at {url} does not exist"),
                    )
                }),
        }
    }

    fn execute_create(&mut self, change_set: FakeChangeSet) {
        let Cloud {
            stacks,
            sequence,
            create_failures,
            ..
        } = self;
        let name = change_set.stack_name.as_str();
        let stack = stacks
            .get_mut(name)
            .expect("a CREATE change set's stack exists under review");
        let template = parse_template(&change_set.body).expect("the change set's template parsed");
        let parameters = effective_parameters(&template, &change_set.parameters);
        stack.template = change_set.body.clone();
        stack.state.parameters = parameters.clone();
        stack.state.tags = change_set.tags.clone();
        push_stack_event(
            stack,
            sequence,
            "CREATE_IN_PROGRESS",
            Some("User Initiated"),
        );
        stack.state.last_updated = stack.events.last().map(|event| event.timestamp);
        let failure = create_failures.remove(name);
        let mut created: Vec<FakeResource> = Vec::new();
        let mut failed = None;
        for resource in &template.resources {
            if let Some(failure) = failure
                .as_ref()
                .filter(|failure| failure.logical_id == resource.logical_id)
            {
                failed = Some((resource.resource_type.clone(), failure.clone()));
                break;
            }
            let created_resource = FakeResource {
                logical_id: resource.logical_id.clone(),
                resource_type: resource.resource_type.clone(),
                physical_id: new_physical_id(name, &resource.logical_id, sequence),
                status: "CREATE_COMPLETE".into(),
            };
            push_resource_event(stack, sequence, &created_resource, None);
            created.push(created_resource);
        }
        if failed.is_none()
            && let Some(failure) = failure
        {
            // The named resource is not in the template: fail after the last one.
            failed = Some(("AWS::CloudFormation::CustomResource".into(), failure));
        }
        if let Some((resource_type, failure)) = failed {
            push_event(
                stack,
                sequence,
                (&failure.logical_id, None, &resource_type),
                "CREATE_FAILED",
                Some(&failure.reason),
            );
            let reason = format!(
                "The following resource(s) failed to create: [{}]. Rollback requested by user.",
                failure.logical_id
            );
            push_stack_event(stack, sequence, "ROLLBACK_IN_PROGRESS", Some(&reason));
            for resource in created.iter_mut().rev() {
                resource.status = "DELETE_COMPLETE".into();
                push_resource_event(stack, sequence, resource, None);
            }
            stack.resources = created;
            stack.state.outputs = BTreeMap::new();
            push_stack_event(stack, sequence, "ROLLBACK_COMPLETE", None);
            return;
        }
        stack.state.outputs = resolve_outputs(name, &template, &created, &parameters);
        stack.resources = created;
        push_stack_event(stack, sequence, "CREATE_COMPLETE", None);
    }

    fn execute_update(&mut self, change_set: FakeChangeSet, changes: Vec<ResourceChange>) {
        let Cloud {
            stacks,
            sequence,
            update_failures,
            skipped_on_delete,
            ..
        } = self;
        let name = change_set.stack_name.as_str();
        let stack = stacks
            .get_mut(name)
            .expect("an UPDATE change set's stack exists");
        let proposed = parse_template(&change_set.body).expect("the change set's template parsed");
        let deployed = parse_template(&stack.template).expect("the deployed template parsed");
        push_stack_event(
            stack,
            sequence,
            "UPDATE_IN_PROGRESS",
            Some("User Initiated"),
        );
        stack.state.last_updated = stack.events.last().map(|event| event.timestamp);

        if let Some(failure) = update_failures.remove(name) {
            let existing = stack
                .resources
                .iter()
                .find(|resource| resource.logical_id == failure.logical_id);
            let resource_type = proposed
                .resource(&failure.logical_id)
                .map(|resource| resource.resource_type.clone())
                .or_else(|| existing.map(|resource| resource.resource_type.clone()))
                .unwrap_or_else(|| "AWS::CloudFormation::CustomResource".into());
            let physical_id = existing.map(|resource| resource.physical_id.clone());
            push_event(
                stack,
                sequence,
                (&failure.logical_id, physical_id.as_deref(), &resource_type),
                "UPDATE_FAILED",
                Some(&failure.reason),
            );
            let reason = format!(
                "The following resource(s) failed to update: [{}]. ",
                failure.logical_id
            );
            push_stack_event(
                stack,
                sequence,
                "UPDATE_ROLLBACK_IN_PROGRESS",
                Some(&reason),
            );
            push_stack_event(
                stack,
                sequence,
                "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
                None,
            );
            push_stack_event(stack, sequence, "UPDATE_ROLLBACK_COMPLETE", None);
            return;
        }

        let change_of = |logical_id: &str| {
            changes
                .iter()
                .find(|change| change.logical_id == logical_id)
                .cloned()
        };
        let mut resources = Vec::with_capacity(proposed.resources.len());
        let mut replaced = Vec::new();
        for resource in &proposed.resources {
            let existing = stack
                .resources
                .iter()
                .find(|existing| existing.logical_id == resource.logical_id)
                .cloned();
            let change = change_of(&resource.logical_id);
            let updated = match (change, existing) {
                (None, Some(existing)) => existing,
                (Some(change), Some(existing)) if change.action == ChangeAction::Modify => {
                    let physical_id = if change.replacement.as_deref() == Some("True") {
                        replaced.push(existing.clone());
                        new_physical_id(name, &resource.logical_id, sequence)
                    } else {
                        existing.physical_id.clone()
                    };
                    FakeResource {
                        resource_type: resource.resource_type.clone(),
                        physical_id,
                        status: "UPDATE_COMPLETE".into(),
                        ..existing
                    }
                }
                _ => FakeResource {
                    logical_id: resource.logical_id.clone(),
                    resource_type: resource.resource_type.clone(),
                    physical_id: new_physical_id(name, &resource.logical_id, sequence),
                    status: "CREATE_COMPLETE".into(),
                },
            };
            if change_of(&resource.logical_id).is_some() {
                push_resource_event(stack, sequence, &updated, None);
            }
            resources.push(updated);
        }
        let removed: Vec<FakeResource> = stack
            .resources
            .iter()
            .filter(|existing| proposed.resource(&existing.logical_id).is_none())
            .cloned()
            .collect();
        if !removed.is_empty() || !replaced.is_empty() {
            push_stack_event(stack, sequence, "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", None);
            for mut resource in replaced {
                resource.status = "DELETE_COMPLETE".into();
                push_resource_event(stack, sequence, &resource, None);
            }
            for mut resource in removed {
                let retained = deployed
                    .resource(&resource.logical_id)
                    .is_some_and(|definition| definition.retained);
                resource.status = if retained {
                    "DELETE_SKIPPED"
                } else {
                    "DELETE_COMPLETE"
                }
                .into();
                push_resource_event(stack, sequence, &resource, None);
                if retained {
                    skipped_on_delete.push(SkippedResource {
                        stack_name: name.to_owned(),
                        logical_id: resource.logical_id.clone(),
                        resource_type: resource.resource_type.clone(),
                        physical_id: resource.physical_id.clone(),
                    });
                }
            }
        }
        let parameters = effective_parameters(&proposed, &change_set.parameters);
        stack.state.outputs = resolve_outputs(name, &proposed, &resources, &parameters);
        stack.state.parameters = parameters;
        stack.state.tags = change_set.tags.clone();
        stack.template = change_set.body.clone();
        stack.resources = resources;
        push_stack_event(stack, sequence, "UPDATE_COMPLETE", None);
    }
}

impl StackDeployer for FakeCloudFormation {
    async fn describe_stack(&self, name: &str) -> Result<Option<StackState>, DeployError> {
        Ok(self.stack(name))
    }

    async fn deployed_template(&self, name: &str) -> Result<String, DeployError> {
        self.template(name)
            .ok_or_else(|| missing_stack("cloudformation:GetTemplate", name))
    }

    async fn create_change_set(&self, request: &ChangeSetRequest) -> Result<String, DeployError> {
        let mut cloud = guard(&self.cloud);
        let kind = match request.kind {
            ChangeSetKind::Create => "CREATE",
            ChangeSetKind::Update => "UPDATE",
        };
        cloud
            .writes
            .push(format!("CreateChangeSet {} {kind}", request.stack_name));
        let name = request.stack_name.as_str();
        if cloud.change_sets.values().any(|change_set| {
            change_set.stack_name == name && change_set.name == request.change_set_name
        }) {
            return Err(aws_error(
                "cloudformation:CreateChangeSet",
                "AlreadyExistsException",
                format!("ChangeSet [{}] already exists", request.change_set_name),
            ));
        }
        let body = cloud.template_body(&request.template)?;
        let proposed = parse_template(&body).map_err(|message| {
            aws_error("cloudformation:CreateChangeSet", "ValidationError", message)
        })?;
        let parameters = effective_parameters(&proposed, &request.parameters);
        let status = match change_set_refusal(request.kind, name, cloud.stacks.get(name)) {
            Some(reason) => ChangeSetStatus::Failed(reason),
            None => {
                let deployed = match request.kind {
                    ChangeSetKind::Create => None,
                    ChangeSetKind::Update => {
                        let stack = &cloud.stacks[name];
                        let template = parse_template(&stack.template).map_err(|message| {
                            aws_error("cloudformation:CreateChangeSet", "ValidationError", message)
                        })?;
                        Some((template, stack.state.clone()))
                    }
                };
                let changes = diff(
                    name,
                    deployed.as_ref().map(|(template, state)| (template, state)),
                    &proposed,
                    &parameters,
                    &request.tags,
                    &cloud.replacements,
                );
                if changes.is_empty() {
                    // The real adapter reports a change set without changes as empty.
                    ChangeSetStatus::Empty
                } else {
                    ChangeSetStatus::Ready(changes)
                }
            }
        };
        let (number, _) = cloud.sequence.next();
        if request.kind == ChangeSetKind::Create && !cloud.stacks.contains_key(name) {
            // CloudFormation creates the stack itself for a CREATE change set, under review
            // until the change set is executed.
            let Cloud {
                stacks, sequence, ..
            } = &mut *cloud;
            let mut stack = FakeStack {
                state: StackState {
                    name: name.to_owned(),
                    id: self.stack_arn(name, number),
                    status: String::new(),
                    status_reason: None,
                    last_updated: None,
                    outputs: BTreeMap::new(),
                    parameters: BTreeMap::new(),
                    tags: request.tags.clone(),
                },
                template: String::new(),
                resources: Vec::new(),
                events: Vec::new(),
            };
            push_stack_event(
                &mut stack,
                sequence,
                "REVIEW_IN_PROGRESS",
                Some("User Initiated"),
            );
            stack.state.last_updated = stack.events.last().map(|event| event.timestamp);
            stacks.insert(name.to_owned(), stack);
        }
        let id = self.change_set_arn(name, &request.change_set_name, number);
        cloud.change_sets.insert(
            id.clone(),
            FakeChangeSet {
                stack_name: name.to_owned(),
                name: request.change_set_name.clone(),
                kind: request.kind,
                body,
                parameters: request.parameters.clone(),
                tags: request.tags.clone(),
                status,
            },
        );
        Ok(id)
    }

    async fn change_set_status(&self, id: &str) -> Result<ChangeSetStatus, DeployError> {
        guard(&self.cloud)
            .change_sets
            .get(id)
            .map(|change_set| change_set.status.clone())
            .ok_or_else(|| {
                aws_error(
                    "cloudformation:DescribeChangeSet",
                    "ChangeSetNotFound",
                    format!("ChangeSet [{id}] does not exist"),
                )
            })
    }

    async fn execute_change_set(&self, id: &str, _client_token: &str) -> Result<(), DeployError> {
        let mut cloud = guard(&self.cloud);
        let stack_name = cloud
            .change_sets
            .get(id)
            .map(|change_set| change_set.stack_name.clone())
            .unwrap_or_default();
        cloud.writes.push(format!("ExecuteChangeSet {stack_name}"));
        let Some(change_set) = cloud.change_sets.remove(id) else {
            return Err(aws_error(
                "cloudformation:ExecuteChangeSet",
                "ChangeSetNotFound",
                format!("ChangeSet [{id}] does not exist"),
            ));
        };
        let changes = match &change_set.status {
            ChangeSetStatus::Ready(changes) => changes.clone(),
            other => {
                let status = match other {
                    ChangeSetStatus::Failed(_) => "FAILED",
                    ChangeSetStatus::Pending => "CREATE_PENDING",
                    _ => "UNAVAILABLE",
                };
                cloud.change_sets.insert(id.to_owned(), change_set);
                return Err(aws_error(
                    "cloudformation:ExecuteChangeSet",
                    "InvalidChangeSetStatus",
                    format!(
                        "ChangeSet [{id}] cannot be executed in its current status of [{status}]"
                    ),
                ));
            }
        };
        // CloudFormation deletes a stack's other change sets once one is executed.
        cloud
            .change_sets
            .retain(|_, other| other.stack_name != change_set.stack_name);
        match change_set.kind {
            ChangeSetKind::Create => cloud.execute_create(change_set),
            ChangeSetKind::Update => cloud.execute_update(change_set, changes),
        }
        Ok(())
    }

    async fn delete_change_set(&self, id: &str) -> Result<(), DeployError> {
        let mut cloud = guard(&self.cloud);
        let stack_name = cloud
            .change_sets
            .get(id)
            .map(|change_set| change_set.stack_name.clone())
            .unwrap_or_default();
        cloud.writes.push(format!("DeleteChangeSet {stack_name}"));
        cloud.change_sets.remove(id).map(|_| ()).ok_or_else(|| {
            aws_error(
                "cloudformation:DeleteChangeSet",
                "ChangeSetNotFound",
                format!("ChangeSet [{id}] does not exist"),
            )
        })
    }

    async fn stack_events(
        &self,
        stack: &str,
        since_event_id: Option<&str>,
    ) -> Result<Vec<StackEvent>, DeployError> {
        let cloud = guard(&self.cloud);
        // The real adapter reads a missing stack's events as none.
        let Some(stack) = cloud.stacks.get(stack) else {
            return Ok(Vec::new());
        };
        Ok(stack
            .events
            .iter()
            .rev()
            .take_while(|event| Some(event.id.as_str()) != since_event_id)
            .cloned()
            .collect())
    }

    async fn stack_resources(&self, stack: &str) -> Result<Vec<StackResource>, DeployError> {
        let cloud = guard(&self.cloud);
        let stack = cloud
            .stacks
            .get(stack)
            .ok_or_else(|| missing_stack("cloudformation:ListStackResources", stack))?;
        Ok(stack
            .resources
            .iter()
            .map(|resource| StackResource {
                logical_id: resource.logical_id.clone(),
                physical_id: Some(resource.physical_id.clone()),
                resource_type: resource.resource_type.clone(),
                status: resource.status.clone(),
            })
            .collect())
    }

    async fn delete_stack(
        &self,
        name: &str,
        retain: &[String],
        _client_token: &str,
    ) -> Result<(), DeployError> {
        let mut cloud = guard(&self.cloud);
        cloud.writes.push(if retain.is_empty() {
            format!("DeleteStack {name}")
        } else {
            format!("DeleteStack {name} retaining {}", retain.join(","))
        });
        let Cloud {
            stacks,
            change_sets,
            sequence,
            deleted_stacks,
            skipped_on_delete,
            delete_failures,
            ..
        } = &mut *cloud;
        // Deleting a stack that does not exist succeeds, as CloudFormation's DeleteStack does.
        let Some(stack) = stacks.get_mut(name) else {
            return Ok(());
        };
        if !retain.is_empty() && stack.state.status != "DELETE_FAILED" {
            return Err(aws_error(
                "cloudformation:DeleteStack",
                "ValidationError",
                format!(
                    "Invalid operation on stack [{}]: RetainResources can only be specified when the stack is in the DELETE_FAILED state",
                    stack.state.id
                ),
            ));
        }
        let retained_by_policy: BTreeSet<String> = parse_template(&stack.template)
            .map(|template| {
                template
                    .resources
                    .into_iter()
                    .filter(|resource| resource.retained)
                    .map(|resource| resource.logical_id)
                    .collect()
            })
            .unwrap_or_default();
        push_stack_event(
            stack,
            sequence,
            "DELETE_IN_PROGRESS",
            Some("User Initiated"),
        );
        let failure = delete_failures.remove(name);
        let mut failed = None;
        let mut resources = std::mem::take(&mut stack.resources);
        for resource in resources.iter_mut().rev() {
            if matches!(
                resource.status.as_str(),
                "DELETE_COMPLETE" | "DELETE_SKIPPED"
            ) {
                continue;
            }
            if failure
                .as_ref()
                .is_some_and(|failure| failure.logical_id == resource.logical_id)
            {
                resource.status = "DELETE_FAILED".into();
                let reason = failure.as_ref().map(|failure| failure.reason.as_str());
                push_resource_event(stack, sequence, resource, reason);
                failed = Some(resource.logical_id.clone());
                continue;
            }
            let skipped = retain.contains(&resource.logical_id)
                || retained_by_policy.contains(&resource.logical_id);
            resource.status = if skipped {
                "DELETE_SKIPPED"
            } else {
                "DELETE_COMPLETE"
            }
            .into();
            push_resource_event(stack, sequence, resource, None);
            if skipped {
                skipped_on_delete.push(SkippedResource {
                    stack_name: name.to_owned(),
                    logical_id: resource.logical_id.clone(),
                    resource_type: resource.resource_type.clone(),
                    physical_id: resource.physical_id.clone(),
                });
            }
        }
        stack.resources = resources;
        if let Some(logical_id) = failed {
            let reason = format!("The following resource(s) failed to delete: [{logical_id}]. ");
            push_stack_event(stack, sequence, "DELETE_FAILED", Some(&reason));
            return Ok(());
        }
        stacks.remove(name);
        change_sets.retain(|_, change_set| change_set.stack_name != name);
        deleted_stacks.push(name.to_owned());
        Ok(())
    }

    async fn continue_update_rollback(
        &self,
        name: &str,
        _client_token: &str,
    ) -> Result<(), DeployError> {
        let mut cloud = guard(&self.cloud);
        cloud.writes.push(format!("ContinueUpdateRollback {name}"));
        let Cloud {
            stacks, sequence, ..
        } = &mut *cloud;
        let stack = stacks
            .get_mut(name)
            .ok_or_else(|| missing_stack("cloudformation:ContinueUpdateRollback", name))?;
        if stack.state.status != "UPDATE_ROLLBACK_FAILED" {
            return Err(aws_error(
                "cloudformation:ContinueUpdateRollback",
                "ValidationError",
                format!(
                    "Stack {name} is in {} state and can not continue an update rollback",
                    stack.state.status
                ),
            ));
        }
        push_stack_event(stack, sequence, "UPDATE_ROLLBACK_IN_PROGRESS", None);
        push_stack_event(stack, sequence, "UPDATE_ROLLBACK_COMPLETE", None);
        Ok(())
    }

    async fn upload_template(
        &self,
        bucket: &str,
        key: &str,
        body: &str,
    ) -> Result<String, DeployError> {
        let mut cloud = guard(&self.cloud);
        cloud.writes.push(format!("PutObject {bucket}/{key}"));
        let url = self.template_url(bucket, key);
        cloud.uploads.insert(
            url.clone(),
            Upload {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                body: body.to_owned(),
            },
        );
        Ok(url)
    }

    async fn empty_bucket(&self, bucket: &str) -> Result<u64, DeployError> {
        let mut cloud = guard(&self.cloud);
        cloud.writes.push(format!("EmptyBucket {bucket}"));
        cloud.emptied_buckets.push(bucket.to_owned());
        let before = cloud.uploads.len();
        cloud.uploads.retain(|_, upload| upload.bucket != bucket);
        Ok((before - cloud.uploads.len()) as u64)
    }

    async fn delete_retained(
        &self,
        resource_type: &str,
        physical_id: &str,
    ) -> Result<(), DeployError> {
        let mut cloud = guard(&self.cloud);
        cloud
            .writes
            .push(format!("DeleteRetained {resource_type} {physical_id}"));
        if resource_type == "AWS::S3::Bucket" {
            cloud
                .uploads
                .retain(|_, upload| upload.bucket != physical_id);
        }
        cloud
            .deleted_retained
            .push((resource_type.to_owned(), physical_id.to_owned()));
        Ok(())
    }
}

// --- State ----------------------------------------------------------------------------------

/// The state table in memory, with the DynamoDB store's conditions: the lock is free or its
/// lease expired before `now` to be acquired; renewal needs the same lock ID and fencing
/// token; release needs the same lock ID; every write needs the same lock ID and token and an
/// unexpired lease. Times are compared at millisecond precision, as the table stores them.
/// Documents are stored as the real store encodes them, and read back through the same decoder.
pub(crate) struct MemoryStateStore {
    instance: String,
    table_name: String,
    table: Mutex<Option<Table>>,
}

#[derive(Default)]
struct Table {
    lock: LockItem,
    /// Documents by sort key.
    items: BTreeMap<String, Document>,
    transactions: Vec<Vec<String>>,
}

#[derive(Default)]
struct LockItem {
    /// Kept when the lock is released or broken, so that the next holder's is larger.
    fencing_token: u64,
    held: Option<HeldLock>,
}

struct HeldLock {
    lock_id: String,
    expires_at_millisecond: i64,
    holder: Holder,
    created_at: Timestamp,
}

struct Document {
    schema_version: String,
    body: String,
}

impl MemoryStateStore {
    /// The store of `instance` before its table exists, as in a fresh account.
    pub(crate) fn new(instance: &str) -> Self {
        MemoryStateStore {
            instance: instance.to_owned(),
            table_name: format!("stackwright-{instance}"),
            table: Mutex::new(None),
        }
    }

    /// The store of `instance` with its table created.
    pub(crate) fn prepared(instance: &str) -> Self {
        let store = Self::new(instance);
        *guard(&store.table) = Some(Table::default());
        store
    }

    /// The labels of every committed transaction's writes, in order (`installation`,
    /// `journal`, `clear-journal`, `history`).
    pub(crate) fn transactions(&self) -> Vec<Vec<String>> {
        guard(&self.table)
            .as_ref()
            .map(|table| table.transactions.clone())
            .unwrap_or_default()
    }

    /// Puts an item as another writer might have left it (another schema version, a body that
    /// does not parse), under its sort key (`installation`, `journal`, `history#…`).
    pub(crate) fn put_raw_item(&self, sort_key: &str, schema_version: &str, body: &str) {
        guard(&self.table)
            .as_mut()
            .expect("the table exists")
            .items
            .insert(
                sort_key.to_owned(),
                Document {
                    schema_version: schema_version.to_owned(),
                    body: body.to_owned(),
                },
            );
    }

    fn missing_table(&self, operation: &'static str) -> StateError {
        StateError::Store {
            table: self.table_name.clone(),
            error: aws_error(
                operation,
                "ResourceNotFoundException",
                "Requested resource not found",
            ),
        }
    }

    fn stored(&self, sort_key: &str, document: &Document) -> StoredItem {
        StoredItem {
            key: format!("{}/{sort_key}", self.instance),
            schema_version: Some(document.schema_version.clone()),
            body: Some(document.body.clone()),
        }
    }

    fn lease(&self, lock: &LockItem) -> Option<Lease> {
        let held = lock.held.as_ref()?;
        Some(Lease {
            lock_id: held.lock_id.clone(),
            fencing_token: lock.fencing_token,
            holder: held.holder.clone(),
            created_at: held.created_at,
            expires_at: Timestamp::from_millisecond(held.expires_at_millisecond)
                .unwrap_or(Timestamp::MAX),
        })
    }

    fn document<T: serde::de::DeserializeOwned>(
        &self,
        key: &ItemKey,
    ) -> Result<Option<T>, StateError> {
        let table = guard(&self.table);
        let sort_key = key.sort_key();
        match table.as_ref().and_then(|table| table.items.get(&sort_key)) {
            None => Ok(None),
            Some(document) => decode(&self.stored(&sort_key, document)).map(Some),
        }
    }
}

impl StateStore for MemoryStateStore {
    fn location(&self) -> &str {
        &self.table_name
    }

    async fn prepare(&self) -> Result<(), StateError> {
        guard(&self.table).get_or_insert_with(Table::default);
        Ok(())
    }

    async fn exists(&self) -> Result<bool, StateError> {
        Ok(guard(&self.table).is_some())
    }

    async fn destroy(&self) -> Result<(), StateError> {
        *guard(&self.table) = None;
        Ok(())
    }

    async fn acquire(
        &self,
        holder: &Holder,
        lock_id: &str,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Lease, StateError> {
        let mut table = guard(&self.table);
        let table = table
            .as_mut()
            .ok_or_else(|| self.missing_table("dynamodb:UpdateItem"))?;
        let free = table.lock.held.as_ref().is_none_or(|held| {
            // `expires_at < now`: a lease that ends this very millisecond is still held.
            held.expires_at_millisecond < now.as_millisecond()
        });
        if !free {
            let current = self.lease(&table.lock).expect("a held lock has a lease");
            return Err(StateError::LockHeld {
                instance: self.instance.clone(),
                holder: Box::new(current),
            });
        }
        table.lock.fencing_token += 1;
        table.lock.held = Some(HeldLock {
            lock_id: lock_id.to_owned(),
            expires_at_millisecond: crate::state::later(now, duration).as_millisecond(),
            holder: holder.clone(),
            created_at: now,
        });
        Ok(self.lease(&table.lock).expect("the lock was just taken"))
    }

    async fn renew(
        &self,
        lease: &Lease,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Timestamp, StateError> {
        let mut table = guard(&self.table);
        let table = table
            .as_mut()
            .ok_or_else(|| self.missing_table("dynamodb:UpdateItem"))?;
        let fencing_token = table.lock.fencing_token;
        // No expiry condition: a lease that ran out unclaimed may still be renewed.
        match table.lock.held.as_mut() {
            Some(held) if held.lock_id == lease.lock_id && fencing_token == lease.fencing_token => {
                let until = crate::state::later(now, duration);
                held.expires_at_millisecond = until.as_millisecond();
                Ok(until)
            }
            _ => Err(StateError::LeaseLost {
                instance: self.instance.clone(),
            }),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), StateError> {
        let mut table = guard(&self.table);
        let Some(table) = table.as_mut() else {
            return Ok(());
        };
        match &table.lock.held {
            Some(held) if held.lock_id == lease.lock_id => {
                table.lock.held = None;
                Ok(())
            }
            _ => Err(StateError::LeaseLost {
                instance: self.instance.clone(),
            }),
        }
    }

    async fn lock(&self) -> Result<Option<Lease>, StateError> {
        Ok(guard(&self.table)
            .as_ref()
            .and_then(|table| self.lease(&table.lock)))
    }

    async fn break_lock(&self, lock_id: &str) -> Result<(), StateError> {
        let mut table = guard(&self.table);
        let Some(table) = table.as_mut() else {
            return Err(StateError::LockIdMismatch {
                instance: self.instance.clone(),
                given: lock_id.to_owned(),
                holder: None,
            });
        };
        match &table.lock.held {
            Some(held) if held.lock_id == lock_id => {
                table.lock.held = None;
                Ok(())
            }
            _ => Err(StateError::LockIdMismatch {
                instance: self.instance.clone(),
                given: lock_id.to_owned(),
                holder: self.lease(&table.lock).map(Box::new),
            }),
        }
    }

    async fn installation(&self) -> Result<Option<Installation>, StateError> {
        self.document(&ItemKey::Installation)
    }

    async fn journal(&self) -> Result<Option<Journal>, StateError> {
        self.document(&ItemKey::Journal)
    }

    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        let table = guard(&self.table);
        let Some(table) = table.as_ref() else {
            return Ok(Vec::new());
        };
        // Newest first: the real store queries the history's sort keys in descending order.
        table
            .items
            .iter()
            .rev()
            .filter(|(sort_key, _)| sort_key.starts_with(ItemKey::HISTORY_PREFIX))
            .map(|(sort_key, document)| decode(&self.stored(sort_key, document)))
            .collect()
    }

    async fn write(
        &self,
        lease: &Lease,
        now: Timestamp,
        writes: Vec<StateWrite>,
    ) -> Result<(), StateError> {
        let mut table = guard(&self.table);
        let table = table
            .as_mut()
            .ok_or_else(|| self.missing_table("dynamodb:TransactWriteItems"))?;
        let fenced = table.lock.held.as_ref().is_some_and(|held| {
            held.lock_id == lease.lock_id
                && table.lock.fencing_token == lease.fencing_token
                && held.expires_at_millisecond > now.as_millisecond()
        });
        if !fenced {
            return Err(StateError::LeaseLost {
                instance: self.instance.clone(),
            });
        }
        // Each write as (sort key, new body or `None` to delete, label).
        let planned: Vec<(String, Option<String>, &str)> = writes
            .iter()
            .map(|write| match write {
                StateWrite::Installation(installation) => (
                    ItemKey::Installation.sort_key(),
                    Some(encode(installation)),
                    "installation",
                ),
                StateWrite::Journal(journal) => (
                    ItemKey::Journal.sort_key(),
                    Some(encode(journal)),
                    "journal",
                ),
                StateWrite::ClearJournal => (ItemKey::Journal.sort_key(), None, "clear-journal"),
                StateWrite::History(entry) => (
                    ItemKey::History {
                        started_at: entry.started_at,
                        operation_id: entry.operation_id.clone(),
                    }
                    .sort_key(),
                    Some(encode(entry)),
                    "history",
                ),
            })
            .collect();
        let mut keys = BTreeSet::new();
        if !planned.iter().all(|(key, _, _)| keys.insert(key.clone())) {
            // DynamoDB refuses a transaction that touches one item twice.
            return Err(StateError::Store {
                table: self.table_name.clone(),
                error: aws_error(
                    "dynamodb:TransactWriteItems",
                    "ValidationException",
                    "Transaction request cannot include multiple operations on one item",
                ),
            });
        }
        // Every put and delete is conditional on the item being of this installer's version.
        for (key, _, _) in &planned {
            if let Some(document) = table.items.get(key)
                && document.schema_version != SCHEMA_VERSION.to_string()
            {
                return Err(decode::<serde_json::Value>(&self.stored(key, document))
                    .err()
                    .unwrap_or_else(|| StateError::Malformed {
                        key: format!("{}/{key}", self.instance),
                        reason: "it changed while it was being written".into(),
                    }));
            }
        }
        let mut labels = Vec::with_capacity(planned.len());
        for (key, body, label) in planned {
            match body {
                Some(body) => {
                    table.items.insert(
                        key,
                        Document {
                            schema_version: SCHEMA_VERSION.to_string(),
                            body,
                        },
                    );
                }
                None => {
                    table.items.remove(&key);
                }
            }
            labels.push(label.to_owned());
        }
        table.transactions.push(labels);
        Ok(())
    }
}

/// A clock that stands still until a test moves it.
pub(crate) struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub(crate) fn new(start: Timestamp) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub(crate) fn set(&self, time: Timestamp) {
        *guard(&self.now) = time;
    }

    pub(crate) fn advance(&self, duration: Duration) {
        let mut now = guard(&self.now);
        *now = crate::state::later(*now, duration);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *guard(&self.now)
    }
}

// --- Control plane ------------------------------------------------------------------------

/// A call of the [`ControlPlane`] trait, to script a failure of or to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlPlaneCall {
    Register,
    Heartbeat,
    CheckUpdate,
    Report,
    Refresh,
}

impl ControlPlaneCall {
    /// The operation's name in the HTTP adapter's errors.
    pub(crate) fn operation(self) -> &'static str {
        match self {
            ControlPlaneCall::Register => "register",
            ControlPlaneCall::Heartbeat => "heartbeat",
            ControlPlaneCall::CheckUpdate => "update check",
            ControlPlaneCall::Report => "report",
            ControlPlaneCall::Refresh => "token refresh",
        }
    }
}

/// The vendor's control plane in memory, for one instance: it registers once with its
/// registration token, accepts the tokens it issued (refreshing issues another and keeps the
/// earlier ones valid until expiry, as the server's signed tokens are), offers the releases
/// it is given, and records heartbeats and reports (a report once per operation ID).
pub(crate) struct FakeControlPlane {
    plane: Mutex<Plane>,
}

struct Plane {
    registration_token: String,
    registration: Registration,
    registered: bool,
    issued_tokens: BTreeSet<String>,
    tokens_expired: bool,
    channel: String,
    releases: Vec<OfferedRelease>,
    repository: String,
    heartbeats: Vec<Heartbeat>,
    reports: Vec<OperationReport>,
    update_queries: Vec<UpdateQuery>,
    calls: Vec<ControlPlaneCall>,
    failures: Vec<(ControlPlaneCall, ControlPlaneError)>,
}

impl FakeControlPlane {
    /// A control plane that answers `registration_token` with `registration`, offering no
    /// release until [`FakeControlPlane::set_offer`].
    pub(crate) fn new(registration_token: &str, registration: Registration) -> Self {
        FakeControlPlane {
            plane: Mutex::new(Plane {
                registration_token: registration_token.to_owned(),
                registration,
                registered: false,
                issued_tokens: BTreeSet::new(),
                tokens_expired: false,
                channel: "stable".into(),
                releases: Vec::new(),
                repository: "https://releases.example.com/".into(),
                heartbeats: Vec::new(),
                reports: Vec::new(),
                update_queries: Vec::new(),
                calls: Vec::new(),
                failures: Vec::new(),
            }),
        }
    }

    /// The releases offered on `channel` (to an instance below their version) and the release
    /// repository's URL.
    pub(crate) fn set_offer(&self, channel: &str, releases: Vec<OfferedRelease>, repository: &str) {
        let mut plane = guard(&self.plane);
        plane.channel = channel.to_owned();
        plane.releases = releases;
        plane.repository = repository.to_owned();
    }

    /// The next `call` fails with `error`, before it has any effect.
    pub(crate) fn fail_next(&self, call: ControlPlaneCall, error: ControlPlaneError) {
        guard(&self.plane).failures.push((call, error));
    }

    /// Every token issued so far has expired: calls are refused with `token_expired`, which
    /// [`ControlPlaneError::needs_registration`] reads as a reason to register again.
    pub(crate) fn expire_tokens(&self) {
        guard(&self.plane).tokens_expired = true;
    }

    /// The refusal the server answers a token it does not accept with.
    pub(crate) fn unauthorized(call: ControlPlaneCall, code: &str) -> ControlPlaneError {
        ControlPlaneError::Unauthorized {
            operation: call.operation(),
            code: code.to_owned(),
            reason: format!("the control plane does not accept this credential ({code})"),
        }
    }

    pub(crate) fn is_registered(&self) -> bool {
        guard(&self.plane).registered
    }

    pub(crate) fn heartbeats(&self) -> Vec<Heartbeat> {
        guard(&self.plane).heartbeats.clone()
    }

    /// Reports recorded, once per operation ID, in the order first received.
    pub(crate) fn reports(&self) -> Vec<OperationReport> {
        guard(&self.plane).reports.clone()
    }

    pub(crate) fn update_queries(&self) -> Vec<UpdateQuery> {
        guard(&self.plane).update_queries.clone()
    }

    /// Every call made, failed ones included.
    pub(crate) fn calls(&self) -> Vec<ControlPlaneCall> {
        guard(&self.plane).calls.clone()
    }
}

impl Plane {
    /// Records the call and takes its scripted failure, if any.
    fn begin(&mut self, call: ControlPlaneCall) -> Result<(), ControlPlaneError> {
        self.calls.push(call);
        match self
            .failures
            .iter()
            .position(|(failing, _)| *failing == call)
        {
            Some(index) => Err(self.failures.remove(index).1),
            None => Ok(()),
        }
    }

    fn authenticate(
        &self,
        call: ControlPlaneCall,
        credentials: &InstanceCredentials,
    ) -> Result<(), ControlPlaneError> {
        if !self.issued_tokens.contains(credentials.token.expose()) {
            return Err(FakeControlPlane::unauthorized(
                call,
                "token_signature_invalid",
            ));
        }
        if self.tokens_expired {
            return Err(FakeControlPlane::unauthorized(call, "token_expired"));
        }
        if credentials.instance_id != self.registration.instance_id {
            return Err(FakeControlPlane::unauthorized(call, "token_other_instance"));
        }
        Ok(())
    }
}

#[async_trait]
impl ControlPlane for FakeControlPlane {
    async fn register(&self, request: &RegisterRequest) -> Result<Registration, ControlPlaneError> {
        let mut plane = guard(&self.plane);
        plane.begin(ControlPlaneCall::Register)?;
        if request.registration_token.expose() != plane.registration_token {
            return Err(Self::unauthorized(
                ControlPlaneCall::Register,
                "registration_token_unknown",
            ));
        }
        if plane.registered {
            return Err(Self::unauthorized(
                ControlPlaneCall::Register,
                "registration_token_used",
            ));
        }
        plane.registered = true;
        let token = plane.registration.token.expose().to_owned();
        plane.issued_tokens.insert(token);
        Ok(plane.registration.clone())
    }

    async fn heartbeat(
        &self,
        credentials: &InstanceCredentials,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatReceipt, ControlPlaneError> {
        let mut plane = guard(&self.plane);
        plane.begin(ControlPlaneCall::Heartbeat)?;
        plane.authenticate(ControlPlaneCall::Heartbeat, credentials)?;
        plane.heartbeats.push(heartbeat.clone());
        Ok(HeartbeatReceipt {
            received_at: Timestamp::now(),
        })
    }

    async fn check_update(
        &self,
        credentials: &InstanceCredentials,
        query: &UpdateQuery,
    ) -> Result<UpdateOffer, ControlPlaneError> {
        let mut plane = guard(&self.plane);
        plane.begin(ControlPlaneCall::CheckUpdate)?;
        plane.authenticate(ControlPlaneCall::CheckUpdate, credentials)?;
        plane.update_queries.push(query.clone());
        let mut releases: Vec<OfferedRelease> = if query.channel == plane.channel {
            plane
                .releases
                .iter()
                .filter(|release| {
                    query
                        .installed_version
                        .as_ref()
                        .is_none_or(|installed| release.version > *installed)
                })
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        releases.sort_by(|left, right| left.version.cmp(&right.version));
        Ok(UpdateOffer {
            instance_id: credentials.instance_id.clone(),
            channel: query.channel.clone(),
            installed_version: query.installed_version.clone(),
            releases,
            repository: plane.repository.clone(),
        })
    }

    async fn report(
        &self,
        credentials: &InstanceCredentials,
        report: &OperationReport,
    ) -> Result<ReportReceipt, ControlPlaneError> {
        let mut plane = guard(&self.plane);
        plane.begin(ControlPlaneCall::Report)?;
        plane.authenticate(ControlPlaneCall::Report, credentials)?;
        let duplicate = plane
            .reports
            .iter()
            .any(|recorded| recorded.operation_id == report.operation_id);
        if !duplicate {
            plane.reports.push(report.clone());
        }
        Ok(ReportReceipt {
            operation_id: report.operation_id.clone(),
            received_at: Timestamp::now(),
            duplicate,
        })
    }

    async fn refresh(
        &self,
        credentials: &InstanceCredentials,
    ) -> Result<IssuedToken, ControlPlaneError> {
        let mut plane = guard(&self.plane);
        plane.begin(ControlPlaneCall::Refresh)?;
        plane.authenticate(ControlPlaneCall::Refresh, credentials)?;
        let issued = plane.issued_tokens.len();
        let token = format!("{}-refreshed-{issued}", plane.registration.token.expose());
        plane.issued_tokens.insert(token.clone());
        let hours = i64::try_from(issued).unwrap_or(i64::MAX / 2);
        Ok(IssuedToken {
            token: SecretToken::new(token),
            expires_at: plane
                .registration
                .expires_at
                .checked_add(jiff::SignedDuration::from_hours(hours))
                .unwrap_or(Timestamp::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Duration;

    use jiff::Timestamp;

    use crate::config::ConfigFile;
    use crate::control_plane::{
        ControlPlane, Heartbeat, InstanceCredentials, OfferedRelease, OperationKind as ReportKind,
        OperationReport, Outcome, RegisterRequest, Registration, SecretToken, UpdateQuery,
    };
    use crate::operation::fakes::{
        ControlPlaneCall, FakeCloudFormation, FakeControlPlane, ManualClock, MemoryStateStore,
    };
    use crate::provision::{
        self, ApplyReport, ChangeAction, ChangeSetKind, ChangeSetRequest, ChangeSetStatus,
        DeployReporter, Gate, NoJournal, Plan, ProvisionError, ResourceChange, StackAction,
        StackDeployer, StackEvent, TemplateSource,
    };
    use crate::release::ReleaseManifest;
    use crate::render::{RenderedStack, render_all};
    use crate::stacks::StackKind;
    use crate::state::{
        self, Clock, Holder, Installation, InstallationStatus, Journal, LockSettings,
        OperationInputs, OperationKind, OperationResult, StateError, StateStore, StateWrite,
    };

    const INSTANCE: &str = "acme-dev";

    fn repository_file(relative: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
    }

    fn demo_config() -> ConfigFile {
        ConfigFile::load(&repository_file("examples/demo.toml"))
            .expect("the demo configuration loads")
    }

    fn rendered(version: &str) -> Vec<RenderedStack> {
        let release = ReleaseManifest::load(&repository_file(&format!(
            "manifests/releases/{version}.json"
        )))
        .expect("the release manifest loads");
        render_all(&demo_config(), &release).expect("the demo renders")
    }

    fn region() -> String {
        demo_config().instance.region
    }

    fn name(kind: StackKind) -> String {
        kind.stack_name(INSTANCE)
    }

    fn stack_of(stacks: &[RenderedStack], kind: StackKind) -> &RenderedStack {
        stacks
            .iter()
            .find(|stack| stack.kind == kind)
            .expect("the stack is rendered")
    }

    /// Remembers everything it is told, one line per call.
    #[derive(Default)]
    struct RecordingReporter {
        lines: Mutex<Vec<String>>,
        events: Mutex<Vec<StackEvent>>,
    }

    impl RecordingReporter {
        fn lines(&self) -> Vec<String> {
            self.lines.lock().unwrap().clone()
        }

        fn events(&self) -> Vec<StackEvent> {
            self.events.lock().unwrap().clone()
        }
    }

    impl DeployReporter for RecordingReporter {
        fn stack_started(&self, stack: &str, action: StackAction, resources: usize) {
            self.lines
                .lock()
                .unwrap()
                .push(format!("started {stack} {action} {resources}"));
        }

        fn event(&self, event: &StackEvent) {
            self.events.lock().unwrap().push(event.clone());
        }

        fn stack_finished(&self, stack: &str, status: &str, succeeded: bool) {
            self.lines
                .lock()
                .unwrap()
                .push(format!("finished {stack} {status} {succeeded}"));
        }

        fn note(&self, message: &str) {
            self.lines.lock().unwrap().push(format!("note {message}"));
        }
    }

    /// Says yes to every question, and remembers them.
    #[derive(Default)]
    struct Yes {
        questions: Mutex<Vec<String>>,
    }

    impl Gate for Yes {
        fn confirm(&self, question: &str) -> bool {
            self.questions.lock().unwrap().push(question.to_owned());
            true
        }
    }

    async fn plan_of(cloud: &FakeCloudFormation, stacks: &[RenderedStack], keep: bool) -> Plan {
        provision::plan(cloud, INSTANCE, stacks, &region(), keep)
            .await
            .expect("planning succeeds")
    }

    async fn apply(
        cloud: &FakeCloudFormation,
        plan: &Plan,
        stacks: &[RenderedStack],
        reporter: &RecordingReporter,
    ) -> Result<ApplyReport, ProvisionError> {
        provision::apply_journalled(
            cloud,
            plan,
            stacks,
            &region(),
            reporter,
            &Yes::default(),
            &NoJournal,
        )
        .await
    }

    async fn install(cloud: &FakeCloudFormation, version: &str) -> Vec<RenderedStack> {
        let stacks = rendered(version);
        let plan = plan_of(cloud, &stacks, true).await;
        apply(cloud, &plan, &stacks, &RecordingReporter::default())
            .await
            .expect("the install succeeds");
        stacks
    }

    fn task_definition_changes() -> Vec<ResourceChange> {
        [
            "DashboardTaskDefinition",
            "ServerTaskDefinition",
            "WorkspaceManagerTaskDefinition",
        ]
        .into_iter()
        .map(|logical_id| ResourceChange {
            action: ChangeAction::Modify,
            logical_id: logical_id.into(),
            resource_type: "AWS::ECS::TaskDefinition".into(),
            replacement: Some("False".into()),
        })
        .collect()
    }

    // --- CloudFormation through the library's workflows ---------------------------------

    #[tokio::test]
    async fn an_install_creates_every_stack_with_its_outputs_wired_into_the_next() {
        let cloud = FakeCloudFormation::new();
        let stacks = rendered("1.0.0");
        let plan = plan_of(&cloud, &stacks, true).await;
        assert!(
            plan.stacks
                .iter()
                .all(|stack| stack.action == StackAction::Create),
            "{plan}"
        );
        // Planning new stacks makes no change set: one would leave a stack under review.
        assert_eq!(cloud.writes(), Vec::<String>::new());

        let reporter = RecordingReporter::default();
        let report = apply(&cloud, &plan, &stacks, &reporter)
            .await
            .expect("the install succeeds");

        assert_eq!(report.stacks.len(), stacks.len());
        assert_eq!(
            cloud.stack_names().into_iter().collect::<BTreeSet<_>>(),
            stacks
                .iter()
                .map(|stack| stack.stack_name.clone())
                .collect::<BTreeSet<_>>()
        );
        for stack in &stacks {
            let state = cloud.stack(&stack.stack_name).expect("the stack exists");
            assert_eq!(state.status, "CREATE_COMPLETE", "{}", stack.stack_name);
            assert_eq!(
                state.outputs.keys().cloned().collect::<BTreeSet<_>>(),
                stack
                    .summary
                    .outputs
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>(),
                "{}",
                stack.stack_name
            );
            assert!(state.outputs.values().all(|value| !value.is_empty()));
            assert_eq!(
                cloud.template(&stack.stack_name).as_ref(),
                Some(&stack.body)
            );
            assert_eq!(
                state.tags.get(provision::INSTANCE_TAG).map(String::as_str),
                Some(INSTANCE)
            );
            // Every parameter is the output of the stack it comes from.
            for source in &stack.parameters {
                let from = cloud.stack(&source.stack).expect("the dependency exists");
                assert_eq!(
                    state.parameters.get(&source.parameter),
                    from.outputs.get(&source.output),
                    "{} {}",
                    stack.stack_name,
                    source.parameter
                );
            }
            let resources = cloud
                .stack_resources(&stack.stack_name)
                .await
                .expect("the stack lists its resources");
            assert_eq!(
                resources
                    .iter()
                    .map(|resource| (resource.logical_id.clone(), resource.resource_type.clone()))
                    .collect::<Vec<_>>(),
                stack
                    .summary
                    .resource_list
                    .iter()
                    .map(|resource| (resource.logical_id.clone(), resource.resource_type.clone()))
                    .collect::<Vec<_>>()
            );
            assert!(
                resources
                    .iter()
                    .all(|resource| resource.status == "CREATE_COMPLETE")
            );
            assert!(reporter.lines().contains(&format!(
                "finished {} CREATE_COMPLETE true",
                stack.stack_name
            )));
            // Each resource's creation was reported, once.
            let created: Vec<String> = reporter
                .events()
                .into_iter()
                .filter(|event| {
                    event.stack_name == stack.stack_name
                        && !event.is_stack_event()
                        && event.status == "CREATE_COMPLETE"
                })
                .map(|event| event.logical_id)
                .collect();
            assert_eq!(
                created.len(),
                stack.summary.resources,
                "{}",
                stack.stack_name
            );
        }
        // A `Ref` output is the physical ID of the resource it names.
        let bootstrap = name(StackKind::Bootstrap);
        let artifact_bucket = cloud
            .stack_resources(&bootstrap)
            .await
            .unwrap()
            .into_iter()
            .find(|resource| resource.logical_id == "ArtifactBucket")
            .and_then(|resource| resource.physical_id);
        assert_eq!(
            cloud
                .stack(&bootstrap)
                .unwrap()
                .outputs
                .get("ArtifactBucketName"),
            artifact_bucket.as_ref()
        );
        assert_eq!(cloud.open_change_sets(), Vec::<String>::new());
        let executed = cloud
            .writes()
            .iter()
            .filter(|write| write.starts_with("ExecuteChangeSet"))
            .count();
        assert_eq!(executed, stacks.len());
    }

    #[tokio::test]
    async fn planning_the_installed_release_again_changes_nothing_and_writes_nothing() {
        let cloud = FakeCloudFormation::new();
        let stacks = install(&cloud, "1.0.0").await;
        let writes = cloud.writes();

        let plan = plan_of(&cloud, &stacks, true).await;
        assert!(!plan.has_changes(), "{plan}");
        assert!(
            plan.stacks
                .iter()
                .all(|stack| stack.action == StackAction::NoChange && stack.changes.is_empty())
        );
        let reporter = RecordingReporter::default();
        let report = apply(&cloud, &plan, &stacks, &reporter).await.unwrap();

        assert_eq!(cloud.writes(), writes);
        assert!(
            report
                .stacks
                .iter()
                .all(|stack| stack.status == "CREATE_COMPLETE")
        );
        assert!(reporter.events().is_empty());
    }

    #[tokio::test]
    async fn an_upgrade_plan_modifies_the_platform_task_definitions_and_applying_it_updates_them() {
        let cloud = FakeCloudFormation::new();
        let installed = install(&cloud, "1.0.0").await;
        let platform = name(StackKind::Platform);
        let before = cloud.stack_resources(&platform).await.unwrap();
        let install_writes = cloud.writes().len();

        let upgrade = rendered("1.1.0");
        let plan = plan_of(&cloud, &upgrade, false).await;
        for stack in &plan.stacks {
            if stack.stack_name == platform {
                assert_eq!(stack.action, StackAction::Update);
                assert_eq!(stack.changes, task_definition_changes());
            } else {
                assert_eq!(stack.action, StackAction::NoChange, "{}", stack.stack_name);
            }
        }
        // The plan's change set was made and deleted again; nothing else was written.
        let plan_writes: Vec<String> = cloud.writes()[install_writes..]
            .iter()
            .filter(|write| !write.starts_with("PutObject"))
            .cloned()
            .collect();
        assert_eq!(
            plan_writes,
            [
                format!("CreateChangeSet {platform} UPDATE"),
                format!("DeleteChangeSet {platform}"),
            ]
        );
        assert_eq!(cloud.open_change_sets(), Vec::<String>::new());
        assert_eq!(
            cloud.template(&platform).as_ref(),
            Some(&stack_of(&installed, StackKind::Platform).body)
        );

        let plan = plan_of(&cloud, &upgrade, true).await;
        let reporter = RecordingReporter::default();
        apply(&cloud, &plan, &upgrade, &reporter)
            .await
            .expect("the upgrade succeeds");
        let state = cloud.stack(&platform).unwrap();
        assert_eq!(state.status, "UPDATE_COMPLETE");
        assert_eq!(
            cloud.template(&platform).as_ref(),
            Some(&stack_of(&upgrade, StackKind::Platform).body)
        );
        let updated: BTreeSet<String> = reporter
            .events()
            .into_iter()
            .filter(|event| event.status == "UPDATE_COMPLETE" && !event.is_stack_event())
            .map(|event| event.logical_id)
            .collect();
        assert_eq!(
            updated,
            task_definition_changes()
                .into_iter()
                .map(|change| change.logical_id)
                .collect()
        );
        // Modified in place: every resource keeps its physical ID.
        assert_eq!(
            cloud
                .stack_resources(&platform)
                .await
                .unwrap()
                .iter()
                .map(|resource| resource.physical_id.clone())
                .collect::<Vec<_>>(),
            before
                .iter()
                .map(|resource| resource.physical_id.clone())
                .collect::<Vec<_>>()
        );
        assert!(!plan_of(&cloud, &upgrade, false).await.has_changes());
    }

    #[tokio::test]
    async fn a_failed_update_is_rolled_back_to_the_previous_template() {
        let cloud = FakeCloudFormation::new();
        let installed = install(&cloud, "1.0.0").await;
        let platform = name(StackKind::Platform);
        let outputs = cloud.stack(&platform).unwrap().outputs;
        cloud.fail_next_update(
            &platform,
            "ServerTaskDefinition",
            "CannotPullContainerError: the image was not found",
        );

        let upgrade = rendered("1.1.0");
        let plan = plan_of(&cloud, &upgrade, true).await;
        let reporter = RecordingReporter::default();
        let error = apply(&cloud, &plan, &upgrade, &reporter)
            .await
            .expect_err("the update fails");

        assert!(error.rolled_back(), "{error}");
        let ProvisionError::StackFailed {
            stack, root_cause, ..
        } = &error
        else {
            panic!("expected a failed stack, got {error:?}");
        };
        assert_eq!(stack, &platform);
        let cause = root_cause.as_deref().expect("the failed resource is named");
        assert_eq!(cause.logical_id, "ServerTaskDefinition");
        assert_eq!(cause.status, "UPDATE_FAILED");
        assert_eq!(
            cause.reason.as_deref(),
            Some("CannotPullContainerError: the image was not found")
        );
        assert!(
            error.to_string().contains("CannotPullContainerError"),
            "{error}"
        );

        let state = cloud.stack(&platform).unwrap();
        assert_eq!(state.status, "UPDATE_ROLLBACK_COMPLETE");
        assert_eq!(state.outputs, outputs);
        assert_eq!(
            cloud.template(&platform).as_ref(),
            Some(&stack_of(&installed, StackKind::Platform).body)
        );
        assert!(reporter.lines().contains(&format!(
            "finished {platform} UPDATE_ROLLBACK_COMPLETE false"
        )));
        // Rolled back is healthy at the old release: planning it again finds nothing to do.
        assert!(!plan_of(&cloud, &installed, false).await.has_changes());
    }

    #[tokio::test]
    async fn a_replacement_is_planned_as_one_and_gives_the_resource_a_new_physical_id() {
        let cloud = FakeCloudFormation::new();
        install(&cloud, "1.0.0").await;
        let platform = name(StackKind::Platform);
        let physical_id = |resources: &[crate::provision::StackResource]| {
            resources
                .iter()
                .find(|resource| resource.logical_id == "ServerTaskDefinition")
                .and_then(|resource| resource.physical_id.clone())
        };
        let before = physical_id(&cloud.stack_resources(&platform).await.unwrap());
        cloud.replace_on_update(&platform, "ServerTaskDefinition");

        let upgrade = rendered("1.1.0");
        let plan = plan_of(&cloud, &upgrade, true).await;
        let platform_plan = plan
            .stacks
            .iter()
            .find(|stack| stack.stack_name == platform)
            .unwrap();
        let mut expected = task_definition_changes();
        expected[1].replacement = Some("True".into());
        assert_eq!(platform_plan.changes, expected);
        assert_eq!(plan.replacements(), 1);

        let reporter = RecordingReporter::default();
        apply(&cloud, &plan, &upgrade, &reporter).await.unwrap();
        let after = physical_id(&cloud.stack_resources(&platform).await.unwrap());
        assert_ne!(after, before);
        // The old one goes in the cleanup after the update.
        assert!(reporter.events().iter().any(|event| {
            event.logical_id == "ServerTaskDefinition"
                && event.status == "DELETE_COMPLETE"
                && event.physical_id == before
        }));
    }

    #[tokio::test]
    async fn a_failed_first_create_is_deleted_and_created_again() {
        let cloud = FakeCloudFormation::new();
        let identity = name(StackKind::Identity);
        cloud.fail_next_create(&identity, "WorkspaceRole", "Role name already in use");
        let stacks = rendered("1.0.0");
        let plan = plan_of(&cloud, &stacks, true).await;
        let error = apply(&cloud, &plan, &stacks, &RecordingReporter::default())
            .await
            .expect_err("the create fails");
        assert!(!error.rolled_back());
        assert!(
            matches!(&error, ProvisionError::StackFailed { status, .. } if status == "ROLLBACK_COMPLETE"),
            "{error:?}"
        );
        assert_eq!(cloud.stack(&identity).unwrap().status, "ROLLBACK_COMPLETE");

        let plan = plan_of(&cloud, &stacks, true).await;
        let identity_plan = plan
            .stacks
            .iter()
            .find(|stack| stack.stack_name == identity)
            .unwrap();
        assert_eq!(identity_plan.action, StackAction::Recreate);
        let gate = Yes::default();
        provision::apply_journalled(
            &cloud,
            &plan,
            &stacks,
            &region(),
            &RecordingReporter::default(),
            &gate,
            &NoJournal,
        )
        .await
        .expect("the retry succeeds");
        assert_eq!(cloud.stack(&identity).unwrap().status, "CREATE_COMPLETE");
        assert_eq!(gate.questions.lock().unwrap().len(), 1);
        assert!(cloud.deleted_stacks().contains(&identity));
    }

    #[tokio::test]
    async fn teardown_deletes_every_stack_but_the_data_stack() {
        let cloud = FakeCloudFormation::new();
        let stacks = install(&cloud, "1.0.0").await;
        let data = name(StackKind::Data);
        // What teardown must leave and what it must empty, from the templates themselves.
        let mut expected_skipped = BTreeSet::new();
        let mut expected_emptied = BTreeSet::new();
        for stack in stacks.iter().filter(|stack| stack.kind != StackKind::Data) {
            let physical: BTreeMap<String, String> = cloud
                .stack_resources(&stack.stack_name)
                .await
                .unwrap()
                .into_iter()
                .map(|resource| (resource.logical_id, resource.physical_id.unwrap()))
                .collect();
            for resource in &stack.summary.resource_list {
                let retained = resource.deletion_policy.as_deref() == Some("Retain");
                if retained {
                    expected_skipped
                        .insert((stack.stack_name.clone(), resource.logical_id.clone()));
                } else if resource.resource_type == "AWS::S3::Bucket" {
                    expected_emptied.insert(physical[&resource.logical_id].clone());
                }
            }
        }

        let inventory = provision::inventory(&cloud, INSTANCE, false).await.unwrap();
        let reporter = RecordingReporter::default();
        let report = provision::teardown(&cloud, &inventory, &reporter, &Yes::default())
            .await
            .expect("the teardown succeeds");

        assert_eq!(cloud.stack_names(), vec![data.clone()]);
        assert_eq!(cloud.stack(&data).unwrap().status, "CREATE_COMPLETE");
        assert_eq!(
            report
                .deleted_stacks
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            stacks
                .iter()
                .filter(|stack| stack.kind != StackKind::Data)
                .map(|stack| stack.stack_name.clone())
                .collect::<BTreeSet<_>>()
        );
        assert!(!cloud.writes().contains(&format!("DeleteStack {data}")));
        // Dependents go first, the bootstrap stack everything depends on last.
        let deleted = cloud.deleted_stacks();
        assert_eq!(deleted.first(), Some(&name(StackKind::Platform)));
        assert_eq!(deleted.last(), Some(&name(StackKind::Bootstrap)));
        assert_eq!(
            cloud
                .skipped_on_delete()
                .into_iter()
                .map(|skipped| (skipped.stack_name, skipped.logical_id))
                .collect::<BTreeSet<_>>(),
            expected_skipped
        );
        assert_eq!(
            cloud.emptied_buckets().into_iter().collect::<BTreeSet<_>>(),
            expected_emptied
        );
        assert_eq!(cloud.deleted_retained(), Vec::<(String, String)>::new());
        let data_stack = stack_of(&stacks, StackKind::Data);
        assert_eq!(
            report
                .remaining
                .iter()
                .filter(|remaining| remaining.stack_name == data)
                .count(),
            data_stack.summary.resources
        );
    }

    #[tokio::test]
    async fn teardown_with_data_deletes_the_data_stack_and_then_what_it_retained() {
        let cloud = FakeCloudFormation::new();
        let stacks = install(&cloud, "1.0.0").await;
        let data = name(StackKind::Data);
        let data_resources = cloud.stack_resources(&data).await.unwrap();
        let expected: BTreeSet<(String, String)> = stack_of(&stacks, StackKind::Data)
            .summary
            .resource_list
            .iter()
            .filter(|resource| resource.deletion_policy.as_deref() == Some("Retain"))
            .map(|resource| {
                let physical = data_resources
                    .iter()
                    .find(|deployed| deployed.logical_id == resource.logical_id)
                    .and_then(|deployed| deployed.physical_id.clone())
                    .unwrap();
                (resource.resource_type.clone(), physical)
            })
            .collect();
        assert!(!expected.is_empty());

        let inventory = provision::inventory(&cloud, INSTANCE, true).await.unwrap();
        provision::teardown(
            &cloud,
            &inventory,
            &RecordingReporter::default(),
            &Yes::default(),
        )
        .await
        .unwrap();

        assert_eq!(cloud.stack_names(), Vec::<String>::new());
        assert_eq!(
            cloud
                .deleted_retained()
                .into_iter()
                .collect::<BTreeSet<_>>(),
            expected
        );
    }

    #[tokio::test]
    async fn a_blocked_deletion_is_retried_leaving_what_blocked_it() {
        let cloud = FakeCloudFormation::new();
        install(&cloud, "1.0.0").await;
        let platform = name(StackKind::Platform);
        cloud.fail_next_delete(
            &platform,
            "Cluster",
            "The cluster still has container instances",
        );

        let inventory = provision::inventory(&cloud, INSTANCE, false).await.unwrap();
        let gate = Yes::default();
        let report = provision::teardown(&cloud, &inventory, &RecordingReporter::default(), &gate)
            .await
            .expect("the teardown succeeds once the cluster is retained");

        assert!(cloud.stack(&platform).is_none());
        let questions = gate.questions.lock().unwrap().clone();
        assert_eq!(questions.len(), 1);
        assert!(
            questions[0].contains("The cluster still has container instances"),
            "{questions:?}"
        );
        assert!(
            cloud
                .writes()
                .contains(&format!("DeleteStack {platform} retaining Cluster"))
        );
        assert!(report.remaining.iter().any(|remaining| {
            remaining.stack_name == platform && remaining.logical_id == "Cluster"
        }));
    }

    #[tokio::test]
    async fn a_busy_stack_stops_the_plan_before_any_write() {
        let cloud = FakeCloudFormation::new();
        let stacks = install(&cloud, "1.0.0").await;
        let platform = name(StackKind::Platform);
        cloud.set_stack_status(&platform, "UPDATE_IN_PROGRESS");
        let writes = cloud.writes();
        let error = provision::plan(&cloud, INSTANCE, &rendered("1.1.0"), &region(), true)
            .await
            .expect_err("a busy stack cannot be planned");
        assert!(
            matches!(&error, ProvisionError::StackBusy { stack, status } if *stack == platform && status == "UPDATE_IN_PROGRESS"),
            "{error:?}"
        );
        assert_eq!(cloud.writes(), writes);
        assert_eq!(
            cloud.template(&platform).as_ref(),
            Some(&stack_of(&stacks, StackKind::Platform).body)
        );
    }

    #[tokio::test]
    async fn a_failed_rollback_is_continued_before_the_update() {
        let cloud = FakeCloudFormation::new();
        install(&cloud, "1.0.0").await;
        let platform = name(StackKind::Platform);
        cloud.set_stack_status(&platform, "UPDATE_ROLLBACK_FAILED");
        let install_writes = cloud.writes().len();

        let upgrade = rendered("1.1.0");
        let plan = plan_of(&cloud, &upgrade, true).await;
        let platform_plan = plan
            .stacks
            .iter()
            .find(|stack| stack.stack_name == platform)
            .unwrap();
        assert_eq!(platform_plan.action, StackAction::ContinueRollbackAndUpdate);
        apply(&cloud, &plan, &upgrade, &RecordingReporter::default())
            .await
            .expect("the rollback is continued, then the update applied");

        let writes: Vec<String> = cloud.writes()[install_writes..]
            .iter()
            .filter(|write| !write.starts_with("PutObject"))
            .cloned()
            .collect();
        assert_eq!(
            writes,
            [
                format!("ContinueUpdateRollback {platform}"),
                format!("CreateChangeSet {platform} UPDATE"),
                format!("ExecuteChangeSet {platform}"),
            ]
        );
        assert_eq!(cloud.stack(&platform).unwrap().status, "UPDATE_COMPLETE");
        assert_eq!(
            cloud.template(&platform).as_ref(),
            Some(&stack_of(&upgrade, StackKind::Platform).body)
        );
    }

    // --- CloudFormation's own rules -------------------------------------------------------

    fn request(kind: ChangeSetKind, name: &str, body: &str) -> ChangeSetRequest {
        ChangeSetRequest {
            stack_name: "acme-dev-demo".into(),
            change_set_name: name.into(),
            kind,
            template: TemplateSource::Body(body.into()),
            parameters: BTreeMap::from([("Size".to_owned(), "1".to_owned())]),
            tags: BTreeMap::from([(provision::INSTANCE_TAG.to_owned(), INSTANCE.to_owned())]),
        }
    }

    const QUEUE: &str = "Parameters:\n  Size:\n    Type: String\nResources:\n  Queue:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds:\n        Ref: Size\n  Topic:\n    Type: AWS::SNS::Topic\nOutputs:\n  Mode:\n    Value: fifo\n  QueueUrl:\n    Value:\n      Ref: Queue\n  TopicArn:\n    Value:\n      Fn::GetAtt: [Topic, TopicArn]\n";

    #[tokio::test]
    async fn a_create_change_set_holds_its_stack_under_review_until_it_is_executed() {
        let cloud = FakeCloudFormation::new();
        let id = cloud
            .create_change_set(&request(ChangeSetKind::Create, "first", QUEUE))
            .await
            .unwrap();
        let review = cloud.stack("acme-dev-demo").expect("the stack exists");
        assert!(review.is_under_review());
        assert_eq!(
            cloud.change_set_status(&id).await.unwrap(),
            ChangeSetStatus::Ready(vec![
                ResourceChange {
                    action: ChangeAction::Add,
                    logical_id: "Queue".into(),
                    resource_type: "AWS::SQS::Queue".into(),
                    replacement: None,
                },
                ResourceChange {
                    action: ChangeAction::Add,
                    logical_id: "Topic".into(),
                    resource_type: "AWS::SNS::Topic".into(),
                    replacement: None,
                },
            ])
        );

        cloud.execute_change_set(&id, "token").await.unwrap();
        let state = cloud.stack("acme-dev-demo").unwrap();
        assert_eq!(state.status, "CREATE_COMPLETE");
        let queue = cloud
            .stack_resources("acme-dev-demo")
            .await
            .unwrap()
            .into_iter()
            .find(|resource| resource.logical_id == "Queue")
            .and_then(|resource| resource.physical_id)
            .unwrap();
        assert_eq!(
            state.outputs,
            BTreeMap::from([
                ("Mode".to_owned(), "fifo".to_owned()),
                ("QueueUrl".to_owned(), queue),
                ("TopicArn".to_owned(), "acme-dev-demo-TopicArn".to_owned()),
            ])
        );
        // Newest first, down to (not including) the one given.
        let events = cloud.stack_events("acme-dev-demo", None).await.unwrap();
        assert_eq!(
            events
                .iter()
                .map(|event| format!("{} {}", event.logical_id, event.status))
                .collect::<Vec<_>>(),
            [
                "acme-dev-demo CREATE_COMPLETE",
                "Topic CREATE_COMPLETE",
                "Queue CREATE_COMPLETE",
                "acme-dev-demo CREATE_IN_PROGRESS",
                "acme-dev-demo REVIEW_IN_PROGRESS",
            ]
        );
        assert!(
            events
                .windows(2)
                .all(|pair| pair[0].timestamp > pair[1].timestamp)
        );
        let since = cloud
            .stack_events("acme-dev-demo", Some(&events[2].id))
            .await
            .unwrap();
        assert_eq!(since, events[..2].to_vec());
        // Executing a change set consumes it.
        assert!(cloud.execute_change_set(&id, "token").await.is_err());

        let again = cloud
            .create_change_set(&request(ChangeSetKind::Create, "second", QUEUE))
            .await
            .unwrap();
        assert!(matches!(
            cloud.change_set_status(&again).await.unwrap(),
            ChangeSetStatus::Failed(reason) if reason.contains("already exists")
        ));
        let mut missing = request(ChangeSetKind::Update, "third", QUEUE);
        missing.stack_name = "acme-dev-missing".into();
        let missing = cloud.create_change_set(&missing).await.unwrap();
        assert!(matches!(
            cloud.change_set_status(&missing).await.unwrap(),
            ChangeSetStatus::Failed(reason) if reason.contains("does not exist")
        ));
        assert!(cloud.stack("acme-dev-missing").is_none());
    }

    #[tokio::test]
    async fn an_update_change_set_lists_what_differs_and_is_empty_when_nothing_does() {
        let cloud = FakeCloudFormation::new();
        let id = cloud
            .create_change_set(&request(ChangeSetKind::Create, "create", QUEUE))
            .await
            .unwrap();
        cloud.execute_change_set(&id, "token").await.unwrap();

        let same = cloud
            .create_change_set(&request(ChangeSetKind::Update, "same", QUEUE))
            .await
            .unwrap();
        assert_eq!(
            cloud.change_set_status(&same).await.unwrap(),
            ChangeSetStatus::Empty
        );

        // A parameter change modifies what refers to it.
        let mut resized = request(ChangeSetKind::Update, "resized", QUEUE);
        resized.parameters.insert("Size".into(), "5".into());
        let resized = cloud.create_change_set(&resized).await.unwrap();
        assert_eq!(
            cloud.change_set_status(&resized).await.unwrap(),
            ChangeSetStatus::Ready(vec![ResourceChange {
                action: ChangeAction::Modify,
                logical_id: "Queue".into(),
                resource_type: "AWS::SQS::Queue".into(),
                replacement: Some("False".into()),
            }])
        );

        let reshaped = QUEUE
            .replace(
                "  Topic:\n    Type: AWS::SNS::Topic\n",
                "  Bucket:\n    Type: AWS::S3::Bucket\n    DeletionPolicy: Retain\n",
            )
            .replace(
                "  TopicArn:\n    Value:\n      Fn::GetAtt: [Topic, TopicArn]\n",
                "",
            );
        let reshaped = cloud
            .create_change_set(&request(ChangeSetKind::Update, "reshaped", &reshaped))
            .await
            .unwrap();
        let ChangeSetStatus::Ready(changes) = cloud.change_set_status(&reshaped).await.unwrap()
        else {
            panic!("expected changes");
        };
        assert_eq!(
            changes
                .iter()
                .map(|change| (change.action, change.logical_id.as_str()))
                .collect::<Vec<_>>(),
            [
                (ChangeAction::Add, "Bucket"),
                (ChangeAction::Remove, "Topic")
            ]
        );
        cloud.execute_change_set(&reshaped, "token").await.unwrap();
        let state = cloud.stack("acme-dev-demo").unwrap();
        assert_eq!(state.status, "UPDATE_COMPLETE");
        assert!(!state.outputs.contains_key("TopicArn"));
        // Executing one change set deletes the stack's others.
        assert_eq!(cloud.open_change_sets(), Vec::<String>::new());

        // The bucket is retained when the stack goes.
        cloud
            .delete_stack("acme-dev-demo", &[], "token")
            .await
            .unwrap();
        assert!(
            cloud
                .describe_stack("acme-dev-demo")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            cloud
                .skipped_on_delete()
                .into_iter()
                .map(|skipped| skipped.logical_id)
                .collect::<Vec<_>>(),
            ["Bucket"]
        );
        assert!(cloud.deployed_template("acme-dev-demo").await.is_err());
    }

    #[tokio::test]
    async fn uploaded_templates_are_read_back_by_their_url_and_go_with_their_bucket() {
        let cloud = FakeCloudFormation::in_region("eu-west-1");
        let url = cloud
            .upload_template("artifacts", "templates/demo.yaml", QUEUE)
            .await
            .unwrap();
        assert_eq!(
            url,
            "https://s3.eu-west-1.amazonaws.com/artifacts/templates/demo.yaml"
        );
        let mut by_url = request(ChangeSetKind::Create, "by-url", QUEUE);
        by_url.template = TemplateSource::Url(url);
        let id = cloud.create_change_set(&by_url).await.unwrap();
        cloud.execute_change_set(&id, "token").await.unwrap();
        assert_eq!(cloud.template("acme-dev-demo").as_deref(), Some(QUEUE));

        assert_eq!(cloud.empty_bucket("artifacts").await.unwrap(), 1);
        assert_eq!(cloud.uploads(), Vec::<(String, String)>::new());
        assert_eq!(
            cloud.writes(),
            [
                "PutObject artifacts/templates/demo.yaml",
                "CreateChangeSet acme-dev-demo CREATE",
                "ExecuteChangeSet acme-dev-demo",
                "EmptyBucket artifacts",
            ]
        );
    }

    #[tokio::test]
    async fn independent_stacks_deploy_in_parallel_without_losing_a_change() {
        let cloud = FakeCloudFormation::new();
        let requests: Vec<ChangeSetRequest> = (0..8)
            .map(|index| {
                let mut request = request(ChangeSetKind::Create, "create", QUEUE);
                request.stack_name = format!("acme-dev-demo-{index}");
                request
            })
            .collect();
        let cloud = &cloud;
        futures_util::future::join_all(requests.iter().map(|request| async move {
            let id = cloud.create_change_set(request).await.unwrap();
            cloud.execute_change_set(&id, "token").await.unwrap();
        }))
        .await;
        assert_eq!(cloud.stack_names().len(), 8);
        assert!(
            cloud
                .stack_names()
                .iter()
                .all(|name| cloud.stack(name).unwrap().status == "CREATE_COMPLETE")
        );
    }

    // --- State ----------------------------------------------------------------------------

    fn holder(owner: &str) -> Holder {
        Holder {
            owner: owner.into(),
            operation: OperationKind::Install,
            host: "build-host".into(),
            pid: 4242,
            installer_version: "0.9.0".into(),
        }
    }

    fn start() -> Timestamp {
        "2026-03-01T12:00:00Z".parse().unwrap()
    }

    fn settings() -> LockSettings {
        LockSettings {
            lease: Duration::from_secs(60),
            wait: Duration::ZERO,
        }
    }

    fn installation(operation_id: &str, now: Timestamp) -> Installation {
        Installation {
            installed_release: Some("1.0.0".into()),
            networking_mode: "all-private".into(),
            stacks: vec![name(StackKind::Bootstrap)],
            status: InstallationStatus::Installed,
            config_hash: "hash".into(),
            operation_id: operation_id.into(),
            updated_at: now,
            failed_releases: Vec::new(),
            trust_floor: None,
            trusted_root: None,
        }
    }

    fn journal(now: Timestamp) -> Journal {
        let inputs = OperationInputs {
            kind: OperationKind::Install,
            release: Some("1.0.0".into()),
            config_hash: "hash".into(),
            delete_data: false,
        };
        Journal::new(
            &inputs,
            "arn:aws:iam::123456789012:role/installer",
            None,
            now,
        )
    }

    #[tokio::test]
    async fn a_second_holder_is_refused_until_the_first_ones_lease_runs_out() {
        let store = MemoryStateStore::prepared(INSTANCE);
        let clock = ManualClock::new(start());
        let first = state::acquire(&store, &clock, &holder("first"), &settings(), |_| {})
            .await
            .unwrap();
        store
            .write(
                &first,
                clock.now(),
                vec![StateWrite::Installation(installation(
                    "by-first",
                    clock.now(),
                ))],
            )
            .await
            .unwrap();

        let refused = state::acquire(&store, &clock, &holder("second"), &settings(), |_| {})
            .await
            .expect_err("the lock is held");
        let StateError::LockHeld {
            holder: current, ..
        } = &refused
        else {
            panic!("expected LockHeld, got {refused:?}");
        };
        assert_eq!(current.lock_id, first.lock_id);
        assert_eq!(current.holder.owner, "first");
        assert!(
            refused.to_string().contains("first on build-host"),
            "{refused}"
        );

        clock.advance(Duration::from_secs(61));
        let second = state::acquire(&store, &clock, &holder("second"), &settings(), |_| {})
            .await
            .expect("an expired lease is taken over");
        assert!(second.fencing_token > first.fencing_token);
        assert_ne!(second.lock_id, first.lock_id);

        let late = store
            .write(
                &first,
                clock.now(),
                vec![StateWrite::Installation(installation("late", clock.now()))],
            )
            .await;
        assert!(
            matches!(late, Err(StateError::LeaseLost { .. })),
            "{late:?}"
        );
        assert!(matches!(
            store
                .renew(&first, clock.now(), Duration::from_secs(60))
                .await,
            Err(StateError::LeaseLost { .. })
        ));
        assert!(matches!(
            store.release(&first).await,
            Err(StateError::LeaseLost { .. })
        ));
        assert_eq!(
            store
                .installation()
                .await
                .unwrap()
                .map(|record| record.operation_id),
            Some("by-first".to_owned())
        );

        store
            .write(
                &second,
                clock.now(),
                vec![StateWrite::Installation(installation(
                    "by-second",
                    clock.now(),
                ))],
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .installation()
                .await
                .unwrap()
                .map(|record| record.operation_id),
            Some("by-second".to_owned())
        );
        assert_eq!(store.lock().await.unwrap(), Some(second));
    }

    #[tokio::test]
    async fn a_lease_is_held_through_its_last_millisecond_but_writes_stop_at_it() {
        let store = MemoryStateStore::prepared(INSTANCE);
        let clock = ManualClock::new(start());
        let first = state::acquire(&store, &clock, &holder("first"), &settings(), |_| {})
            .await
            .unwrap();
        assert_eq!(
            first.expires_at,
            start() + jiff::SignedDuration::from_secs(60)
        );
        clock.set(first.expires_at);
        // The real store acquires only when `expires_at < now`, and writes only while
        // `expires_at > now`: at the expiry itself, nobody may do either.
        assert!(matches!(
            state::acquire(&store, &clock, &holder("second"), &settings(), |_| {}).await,
            Err(StateError::LockHeld { .. })
        ));
        assert!(matches!(
            store.write(&first, clock.now(), vec![]).await,
            Err(StateError::LeaseLost { .. })
        ));
        // Unclaimed, it may still be renewed, and then written under.
        let until = store
            .renew(&first, clock.now(), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(until > clock.now());
        store.write(&first, clock.now(), vec![]).await.unwrap();

        clock.advance(Duration::from_millis(60_001));
        assert!(
            state::acquire(&store, &clock, &holder("second"), &settings(), |_| {})
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_transaction_applies_whole_and_history_reads_newest_first() {
        let store = MemoryStateStore::prepared(INSTANCE);
        let clock = ManualClock::new(start());
        let lease = state::acquire(&store, &clock, &holder("first"), &settings(), |_| {})
            .await
            .unwrap();
        let first = journal(clock.now());
        store
            .write(
                &lease,
                clock.now(),
                vec![StateWrite::Journal(first.clone())],
            )
            .await
            .unwrap();
        assert_eq!(store.journal().await.unwrap(), Some(first.clone()));

        // One item twice in a transaction: DynamoDB refuses it whole.
        let refused = store
            .write(
                &lease,
                clock.now(),
                vec![
                    StateWrite::Installation(installation("refused", clock.now())),
                    StateWrite::Journal(first.clone()),
                    StateWrite::ClearJournal,
                ],
            )
            .await;
        assert!(
            matches!(refused, Err(StateError::Store { .. })),
            "{refused:?}"
        );
        assert_eq!(store.installation().await.unwrap(), None);

        clock.advance(Duration::from_secs(30));
        let first_entry = first.finish(OperationResult::Succeeded, None, clock.now());
        store
            .write(
                &lease,
                clock.now(),
                vec![
                    StateWrite::Installation(installation(&first.operation_id, clock.now())),
                    StateWrite::History(first_entry.clone()),
                    StateWrite::ClearJournal,
                ],
            )
            .await
            .unwrap();
        assert_eq!(store.journal().await.unwrap(), None);
        assert_eq!(
            store
                .installation()
                .await
                .unwrap()
                .map(|record| record.operation_id),
            Some(first.operation_id.clone())
        );

        let second = journal(clock.now());
        let second_entry = second.finish(OperationResult::RolledBack, None, clock.now());
        store
            .write(
                &lease,
                clock.now(),
                vec![StateWrite::History(second_entry.clone())],
            )
            .await
            .unwrap();
        assert_eq!(
            store.history().await.unwrap(),
            vec![second_entry, first_entry]
        );
        assert_eq!(
            store.transactions(),
            vec![
                vec!["journal".to_owned()],
                vec![
                    "installation".to_owned(),
                    "history".to_owned(),
                    "clear-journal".to_owned()
                ],
                vec!["history".to_owned()],
            ]
        );
    }

    #[tokio::test]
    async fn release_keeps_the_fencing_token_and_breaking_the_lock_needs_its_id() {
        let store = MemoryStateStore::prepared(INSTANCE);
        let clock = ManualClock::new(start());
        let first = state::acquire(&store, &clock, &holder("first"), &settings(), |_| {})
            .await
            .unwrap();
        assert_eq!(first.fencing_token, 1);
        store.release(&first).await.unwrap();
        assert_eq!(store.lock().await.unwrap(), None);

        let second = state::acquire(&store, &clock, &holder("second"), &settings(), |_| {})
            .await
            .unwrap();
        assert_eq!(second.fencing_token, 2);
        let mismatch = store.break_lock(&first.lock_id).await;
        let Err(StateError::LockIdMismatch {
            holder: Some(current),
            ..
        }) = &mismatch
        else {
            panic!("expected a mismatch naming the holder, got {mismatch:?}");
        };
        assert_eq!(current.lock_id, second.lock_id);
        store.break_lock(&second.lock_id).await.unwrap();
        assert_eq!(store.lock().await.unwrap(), None);
        assert!(matches!(
            store.write(&second, clock.now(), vec![]).await,
            Err(StateError::LeaseLost { .. })
        ));
        let third = state::acquire(&store, &clock, &holder("third"), &settings(), |_| {})
            .await
            .unwrap();
        assert_eq!(third.fencing_token, 3);
    }

    #[tokio::test]
    async fn without_its_table_the_store_reads_nothing_and_cannot_lock() {
        let store = MemoryStateStore::new(INSTANCE);
        assert_eq!(store.location(), "stackwright-acme-dev");
        assert!(!store.exists().await.unwrap());
        assert_eq!(store.lock().await.unwrap(), None);
        assert_eq!(store.installation().await.unwrap(), None);
        assert!(store.history().await.unwrap().is_empty());
        let clock = ManualClock::new(start());
        let refused = state::acquire(&store, &clock, &holder("first"), &settings(), |_| {}).await;
        assert!(
            matches!(&refused, Err(StateError::Store { error, .. }) if error.code() == Some("ResourceNotFoundException")),
            "{refused:?}"
        );

        store.prepare().await.unwrap();
        store.prepare().await.unwrap();
        assert!(store.exists().await.unwrap());
        let lease = state::acquire(&store, &clock, &holder("first"), &settings(), |_| {})
            .await
            .unwrap();
        store.destroy().await.unwrap();
        assert!(!store.exists().await.unwrap());
        assert!(store.release(&lease).await.is_ok());
    }

    #[tokio::test]
    async fn an_item_of_another_schema_version_is_neither_read_nor_overwritten() {
        let store = MemoryStateStore::prepared(INSTANCE);
        store.put_raw_item("installation", "2", "{}");
        let clock = ManualClock::new(start());
        let lease = state::acquire(&store, &clock, &holder("first"), &settings(), |_| {})
            .await
            .unwrap();
        assert!(matches!(
            store.installation().await,
            Err(StateError::UnknownSchemaVersion { .. })
        ));
        let refused = store
            .write(
                &lease,
                clock.now(),
                vec![StateWrite::Installation(installation("new", clock.now()))],
            )
            .await;
        assert!(
            matches!(&refused, Err(StateError::UnknownSchemaVersion { key, found }) if key == "acme-dev/installation" && found == "2"),
            "{refused:?}"
        );
    }

    // --- Control plane --------------------------------------------------------------------

    fn registration() -> Registration {
        Registration {
            instance_id: "instance-1".into(),
            organization_id: "organization-1".into(),
            token: SecretToken::new("instance-token"),
            expires_at: "2026-04-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn register_request(token: &str) -> RegisterRequest {
        RegisterRequest {
            registration_token: SecretToken::new(token),
            installer_version: None,
        }
    }

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            installed_version: Some("1.0.0".parse().unwrap()),
            installer_version: "0.9.0".parse().unwrap(),
            channel: "stable".into(),
            stacks: Vec::new(),
            lock: None,
            last_operation: None,
        }
    }

    fn report(operation_id: &str) -> OperationReport {
        OperationReport {
            operation_id: operation_id.into(),
            kind: ReportKind::Upgrade,
            from_version: Some("1.0.0".parse().unwrap()),
            to_version: "1.1.0".parse().unwrap(),
            outcome: Outcome::Succeeded,
            detail: String::new(),
        }
    }

    fn offered(version: &str) -> OfferedRelease {
        OfferedRelease {
            version: version.parse().unwrap(),
            urgent: false,
            target: format!("releases/{version}.json"),
        }
    }

    #[tokio::test]
    async fn a_registration_token_works_once_and_its_token_opens_the_other_calls() {
        let plane = FakeControlPlane::new("registration-token", registration());
        let stranger = InstanceCredentials {
            instance_id: "instance-1".into(),
            token: SecretToken::new("forged"),
        };
        let refused = plane.heartbeat(&stranger, &heartbeat()).await.unwrap_err();
        assert!(refused.needs_registration());

        let unknown = plane
            .register(&register_request("other"))
            .await
            .unwrap_err();
        assert!(!unknown.needs_registration());
        let registered = plane
            .register(&register_request("registration-token"))
            .await
            .unwrap();
        assert_eq!(registered, registration());
        assert!(plane.is_registered());
        let reused = plane
            .register(&register_request("registration-token"))
            .await
            .unwrap_err();
        assert!(
            matches!(&reused, crate::control_plane::ControlPlaneError::Unauthorized { operation: "register", code, .. } if code == "registration_token_used"),
            "{reused:?}"
        );

        let credentials = registered.credentials();
        plane.heartbeat(&credentials, &heartbeat()).await.unwrap();
        let issued = plane.refresh(&credentials).await.unwrap();
        assert_ne!(issued.token, credentials.token);
        // Both the first token and the refreshed one are accepted until they expire.
        let refreshed = InstanceCredentials {
            instance_id: credentials.instance_id.clone(),
            token: issued.token,
        };
        plane.heartbeat(&refreshed, &heartbeat()).await.unwrap();
        plane.heartbeat(&credentials, &heartbeat()).await.unwrap();
        assert_eq!(plane.heartbeats(), vec![heartbeat(); 3]);
    }

    #[tokio::test]
    async fn an_update_check_offers_the_newer_releases_of_the_instance_channel() {
        let plane = FakeControlPlane::new("registration-token", registration());
        plane.set_offer(
            "stable",
            vec![offered("1.2.0"), offered("1.0.0"), offered("1.1.0")],
            "https://releases.example.com/acme/",
        );
        let credentials = plane
            .register(&register_request("registration-token"))
            .await
            .unwrap()
            .credentials();
        let query = UpdateQuery {
            channel: "stable".into(),
            installed_version: Some("1.0.0".parse().unwrap()),
        };
        let offer = plane.check_update(&credentials, &query).await.unwrap();
        assert_eq!(offer.releases, vec![offered("1.1.0"), offered("1.2.0")]);
        assert_eq!(offer.repository, "https://releases.example.com/acme/");
        assert_eq!(offer.instance_id, "instance-1");

        let beta = UpdateQuery {
            channel: "beta".into(),
            installed_version: None,
        };
        assert!(
            plane
                .check_update(&credentials, &beta)
                .await
                .unwrap()
                .releases
                .is_empty()
        );
        assert_eq!(plane.update_queries(), vec![query, beta]);
    }

    #[tokio::test]
    async fn a_report_is_recorded_once_per_operation() {
        let plane = FakeControlPlane::new("registration-token", registration());
        let credentials = plane
            .register(&register_request("registration-token"))
            .await
            .unwrap()
            .credentials();
        assert!(
            !plane
                .report(&credentials, &report("op-1"))
                .await
                .unwrap()
                .duplicate
        );
        assert!(
            plane
                .report(&credentials, &report("op-1"))
                .await
                .unwrap()
                .duplicate
        );
        assert!(
            !plane
                .report(&credentials, &report("op-2"))
                .await
                .unwrap()
                .duplicate
        );
        assert_eq!(plane.reports(), vec![report("op-1"), report("op-2")]);
    }

    #[tokio::test]
    async fn scripted_failures_happen_once_and_expired_tokens_ask_for_registration() {
        let plane = FakeControlPlane::new("registration-token", registration());
        let credentials = plane
            .register(&register_request("registration-token"))
            .await
            .unwrap()
            .credentials();
        plane.fail_next(
            ControlPlaneCall::Report,
            crate::control_plane::ControlPlaneError::Unreachable {
                operation: "report",
                url: "https://control.example.com/".into(),
                attempts: 3,
                reason: "connection refused".into(),
            },
        );
        let unreachable = plane
            .report(&credentials, &report("op-1"))
            .await
            .unwrap_err();
        assert!(!unreachable.needs_registration());
        assert!(plane.reports().is_empty());
        plane.report(&credentials, &report("op-1")).await.unwrap();

        plane.expire_tokens();
        let expired = plane.refresh(&credentials).await.unwrap_err();
        assert!(expired.needs_registration());
        assert!(
            matches!(&expired, crate::control_plane::ControlPlaneError::Unauthorized { code, .. } if code == "token_expired")
        );
        assert_eq!(
            plane.calls(),
            [
                ControlPlaneCall::Register,
                ControlPlaneCall::Report,
                ControlPlaneCall::Report,
                ControlPlaneCall::Refresh,
            ]
        );
    }
}
