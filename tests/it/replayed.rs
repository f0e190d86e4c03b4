//! Failure and recovery paths of `plan`, `install` and `teardown` that the local emulator cannot
//! produce: it has no rollback, no `DELETE_FAILED`, no per-resource events, no `Replacement` in
//! change sets and no "didn't contain changes" change sets. Each test here therefore replays
//! the response shapes CloudFormation really returns, through `aws-smithy-mocks` behind real
//! SDK clients and the real adapter, and runs the real `plan`, `apply`, `inventory` and
//! `teardown` on the rendered stacks of an example configuration.
//!
//! The replay is a small script per stack: the state and the events CloudFormation shows on
//! each `DescribeStacks` poll after a write (`ExecuteChangeSet`, `DeleteStack`,
//! `ContinueUpdateRollback`). It also holds CloudFormation's own rules where a mistake of the
//! installer would otherwise pass unnoticed: a CREATE change set on an existing stack, an
//! update of a stack in `UPDATE_ROLLBACK_FAILED`, `RetainResources` outside `DELETE_FAILED`,
//! executing a change set that is not available, and a reused client request token.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_sdk_cloudformation as cloudformation;
use aws_smithy_mocks::{
    MockResponse, MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock,
};
use cloudformation::error::ErrorMetadata;
use cloudformation::operation::continue_update_rollback::{
    ContinueUpdateRollbackError, ContinueUpdateRollbackInput, ContinueUpdateRollbackOutput,
};
use cloudformation::operation::create_change_set::{
    CreateChangeSetError, CreateChangeSetInput, CreateChangeSetOutput,
};
use cloudformation::operation::delete_change_set::{
    DeleteChangeSetError, DeleteChangeSetInput, DeleteChangeSetOutput,
};
use cloudformation::operation::delete_stack::{
    DeleteStackError, DeleteStackInput, DeleteStackOutput,
};
use cloudformation::operation::describe_change_set::{
    DescribeChangeSetError, DescribeChangeSetInput, DescribeChangeSetOutput,
};
use cloudformation::operation::describe_stack_events::{
    DescribeStackEventsError, DescribeStackEventsInput, DescribeStackEventsOutput,
};
use cloudformation::operation::describe_stacks::{
    DescribeStacksError, DescribeStacksInput, DescribeStacksOutput,
};
use cloudformation::operation::execute_change_set::{
    ExecuteChangeSetError, ExecuteChangeSetInput, ExecuteChangeSetOutput,
};
use cloudformation::operation::get_template::{
    GetTemplateError, GetTemplateInput, GetTemplateOutput,
};
use cloudformation::operation::list_stack_resources::{
    ListStackResourcesError, ListStackResourcesInput, ListStackResourcesOutput,
};
use cloudformation::primitives::DateTime;
use cloudformation::types as cfn;
use stackwright::aws::CloudFormation;
use stackwright::config::ConfigFile;
use stackwright::provision::{
    self, DeployReporter, Gate, Plan, ProvisionError, StackAction, StackEvent, StackPlan,
};
use stackwright::release::ReleaseManifest;
use stackwright::render::{self, RenderedStack};
use stackwright::stacks::StackKind;

use crate::common::{VARIANTS, release};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
/// 2025-06-01T10:00:00Z: the replayed clock starts here and ticks one second per event.
const START: i64 = 1_748_772_000;
const KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:123456789012:key/4f1c2a9e-7b3d-4e8f-a1c6-2d9b0e5f7a38";

// ---------------------------------------------------------------------------------------------
// What CloudFormation shows: events and the steps a stack goes through after a write.

#[derive(Debug, Clone)]
struct Event {
    /// `None` for an event about the stack itself.
    logical_id: Option<String>,
    physical_id: Option<String>,
    resource_type: String,
    status: String,
    reason: Option<String>,
    /// Published in the same instant as the event before it.
    at_once: bool,
}

/// An event of one resource.
fn resource(logical_id: &str, resource_type: &str, status: &str) -> Event {
    Event {
        logical_id: Some(logical_id.to_owned()),
        physical_id: None,
        resource_type: resource_type.to_owned(),
        status: status.to_owned(),
        reason: None,
        at_once: false,
    }
}

/// An event of the stack itself.
fn stack_event(status: &str) -> Event {
    Event {
        logical_id: None,
        physical_id: None,
        resource_type: "AWS::CloudFormation::Stack".to_owned(),
        status: status.to_owned(),
        reason: None,
        at_once: false,
    }
}

impl Event {
    fn because(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }

    fn physical(mut self, id: &str) -> Self {
        self.physical_id = Some(id.to_owned());
        self
    }

    fn at_once(mut self) -> Self {
        self.at_once = true;
        self
    }
}

/// What one `DescribeStacks` poll shows, with the events published since the previous one.
#[derive(Debug, Clone)]
struct Step {
    /// `None` once the stack is gone.
    status: Option<String>,
    reason: Option<String>,
    events: Vec<Event>,
}

fn step(status: &str, events: Vec<Event>) -> Step {
    Step {
        status: Some(status.to_owned()),
        reason: None,
        events,
    }
}

fn gone() -> Step {
    Step {
        status: None,
        reason: None,
        events: Vec::new(),
    }
}

impl Step {
    fn because(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }
}

/// The writes that start an operation on a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Trigger {
    Execute,
    Delete,
    ContinueRollback,
}

#[derive(Debug, Clone)]
struct Change {
    action: &'static str,
    logical_id: String,
    resource_type: String,
    replacement: Option<&'static str>,
}

fn change(
    action: &'static str,
    logical_id: &str,
    resource_type: &str,
    replacement: Option<&'static str>,
) -> Change {
    Change {
        action,
        logical_id: logical_id.to_owned(),
        resource_type: resource_type.to_owned(),
        replacement,
    }
}

/// One `DescribeChangeSet` answer.
#[derive(Debug, Clone)]
struct ChangeSetReply {
    status: &'static str,
    execution: &'static str,
    reason: Option<String>,
    changes: Vec<Change>,
}

fn change_set_in_progress() -> ChangeSetReply {
    ChangeSetReply {
        status: "CREATE_IN_PROGRESS",
        execution: "UNAVAILABLE",
        reason: None,
        changes: Vec::new(),
    }
}

fn change_set_ready(changes: Vec<Change>) -> ChangeSetReply {
    ChangeSetReply {
        status: "CREATE_COMPLETE",
        execution: "AVAILABLE",
        reason: None,
        changes,
    }
}

fn change_set_failed(reason: &str) -> ChangeSetReply {
    ChangeSetReply {
        status: "FAILED",
        execution: "UNAVAILABLE",
        reason: Some(reason.to_owned()),
        changes: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The replayed account.

struct Resource {
    logical_id: String,
    physical_id: Option<String>,
    resource_type: String,
    status: String,
}

struct Stack {
    name: String,
    id: String,
    /// `None` once deleted.
    status: Option<String>,
    reason: Option<String>,
    tags: BTreeMap<String, String>,
    parameters: BTreeMap<String, String>,
    outputs: BTreeMap<String, String>,
    template: String,
    resources: Vec<Resource>,
    /// Oldest first: ID, time, event.
    events: Vec<(String, i64, Event)>,
    pending: VecDeque<Step>,
}

struct ChangeSet {
    id: String,
    name: String,
    stack: usize,
    template: String,
    parameters: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    replies: VecDeque<ChangeSetReply>,
    /// Whether the first reply was given: each later description moves on to the next one.
    described: bool,
    deleted: bool,
    executed: bool,
}

#[derive(Default)]
struct Cloud {
    stacks: Vec<Stack>,
    change_sets: Vec<ChangeSet>,
    scripts: HashMap<(String, Trigger), VecDeque<Vec<Step>>>,
    change_set_replies: HashMap<String, VecDeque<Vec<ChangeSetReply>>>,
    bucket_listings: HashMap<String, VecDeque<Vec<(String, String)>>>,
    /// Every call, in order: `(is_write, description)`.
    calls: Vec<(bool, String)>,
    tokens: HashSet<String>,
    clock: i64,
    serial: u64,
    /// Events per `DescribeStackEvents` page (CloudFormation's is 100).
    event_page: usize,
    /// Changes per `DescribeChangeSet` page.
    change_page: usize,
}

fn missing(name: &str) -> ErrorMetadata {
    validation(&format!("Stack with id {name} does not exist"))
}

fn validation(message: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code("ValidationError")
        .message(message)
        .build()
}

/// How a token shows in the call log: its fixed prefix, without the unique part.
fn token_shape(token: Option<&str>) -> String {
    match token {
        Some(token) => format!(
            "{}…",
            token
                .split(|c: char| c.is_ascii_digit())
                .next()
                .unwrap_or("")
        ),
        None => "none".to_owned(),
    }
}

/// CloudFormation's rule for client request tokens.
fn valid_token(token: &str) -> bool {
    token.len() <= 128
        && token.starts_with(|c: char| c.is_ascii_alphabetic())
        && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn physical_id(stack: &str, logical_id: &str, resource_type: &str) -> String {
    let suffix: u64 = logical_id
        .bytes()
        .chain(stack.bytes())
        .fold(1469598103934665603, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(1099511628211)
        });
    match resource_type {
        "AWS::EC2::VPC" => format!("vpc-{:017x}", suffix >> 4),
        "AWS::EC2::Subnet" => format!("subnet-{:017x}", suffix >> 4),
        "AWS::EC2::SecurityGroup" => format!("sg-{:017x}", suffix >> 4),
        "AWS::EC2::NatGateway" => format!("nat-{:017x}", suffix >> 4),
        "AWS::EC2::EIP" => format!("eipalloc-{:017x}", suffix >> 4),
        _ => format!(
            "{stack}-{}-{:012X}",
            logical_id.to_ascii_lowercase(),
            suffix >> 16
        ),
    }
}

/// The bootstrap stack's artifact bucket.
fn artifact_bucket() -> String {
    physical_id("acme-pub-bootstrap", "ArtifactBucket", "AWS::S3::Bucket")
}

/// The value each known output has in the replayed account.
fn output_value(output: &str) -> String {
    match output {
        "KmsKeyArn" => KMS_KEY_ARN.to_owned(),
        "ArtifactBucketName" => artifact_bucket(),
        other => format!("replayed-{}", other.to_ascii_lowercase()),
    }
}

impl Cloud {
    fn new() -> Self {
        Cloud {
            event_page: 100,
            change_page: 100,
            ..Cloud::default()
        }
    }

    fn uuid(&mut self) -> String {
        self.serial += 1;
        format!(
            "5f1a{:04x}-3e1b-11f0-8c2d-0a{:010x}",
            self.serial, self.serial
        )
    }

    /// A stack deployed from `stack` that reached `status`, with the history of its create.
    fn deploy(&mut self, stack: &RenderedStack, status: &str) -> &mut Stack {
        let id = format!(
            "arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{}/{}",
            stack.stack_name,
            self.uuid()
        );
        let index = self.stacks.len();
        self.stacks.push(Stack {
            name: stack.stack_name.clone(),
            id,
            status: Some("CREATE_IN_PROGRESS".to_owned()),
            reason: None,
            tags: stack.tags.clone(),
            parameters: stack
                .parameters
                .iter()
                .map(|source| (source.parameter.clone(), output_value(&source.output)))
                .collect(),
            outputs: stack
                .summary
                .outputs
                .iter()
                .map(|output| (output.clone(), output_value(output)))
                .collect(),
            template: stack.body.clone(),
            resources: Vec::new(),
            events: Vec::new(),
            pending: VecDeque::new(),
        });
        let mut history = vec![stack_event("CREATE_IN_PROGRESS").because("User Initiated")];
        history.extend(stack.summary.resource_list.iter().map(|declared| {
            resource(
                &declared.logical_id,
                &declared.resource_type,
                "CREATE_COMPLETE",
            )
        }));
        history.push(stack_event("CREATE_COMPLETE"));
        for event in history {
            self.record(index, event);
        }
        self.stacks[index].status = Some(status.to_owned());
        &mut self.stacks[index]
    }

    /// Appends events to a stack's history, as if they had happened before the test.
    fn history(&mut self, name: &str, events: Vec<Event>) {
        let index = self.find(name).expect("the stack is replayed");
        for event in events {
            self.record(index, event);
        }
    }

    /// What the stack goes through after the next write of this kind.
    fn on(&mut self, name: &str, trigger: Trigger, steps: Vec<Step>) {
        self.scripts
            .entry((name.to_owned(), trigger))
            .or_default()
            .push_back(steps);
    }

    /// The `DescribeChangeSet` answers for the next change set made for the stack.
    fn change_set(&mut self, name: &str, replies: Vec<ChangeSetReply>) {
        self.change_set_replies
            .entry(name.to_owned())
            .or_default()
            .push_back(replies);
    }

    /// The stack with this ID, or the newest stack with this name.
    fn find(&self, name_or_id: &str) -> Option<usize> {
        self.stacks
            .iter()
            .position(|stack| stack.id == name_or_id)
            .or_else(|| {
                self.stacks
                    .iter()
                    .rposition(|stack| stack.name == name_or_id)
            })
    }

    /// The stack by ID, or by name while it exists: CloudFormation forgets deleted stacks' names.
    fn visible(&self, name_or_id: &str) -> Option<usize> {
        self.find(name_or_id).filter(|index| {
            self.stacks[*index].status.is_some() || self.stacks[*index].id == name_or_id
        })
    }

    fn record(&mut self, index: usize, event: Event) {
        if !event.at_once {
            self.clock += 1;
        }
        let time = START + self.clock;
        let stack = &mut self.stacks[index];
        let mut event = event;
        let Some(logical_id) = event.logical_id.clone() else {
            event.physical_id = Some(stack.id.clone());
            let id = format!("{:08x}-5f1a-11f0-8b2e-0a1b2c3d4e5f", self.clock);
            stack.events.push((id, time, event));
            return;
        };
        match stack
            .resources
            .iter_mut()
            .find(|known| known.logical_id == logical_id)
        {
            Some(known) => {
                known.status = event.status.clone();
                if event.physical_id.is_some() {
                    known.physical_id = event.physical_id.clone();
                }
                event.physical_id = known.physical_id.clone();
            }
            None => {
                if event.physical_id.is_none() && event.status.ends_with("_COMPLETE") {
                    event.physical_id =
                        Some(physical_id(&stack.name, &logical_id, &event.resource_type));
                }
                stack.resources.push(Resource {
                    logical_id: logical_id.clone(),
                    physical_id: event.physical_id.clone(),
                    resource_type: event.resource_type.clone(),
                    status: event.status.clone(),
                });
            }
        }
        if event.status == "DELETE_COMPLETE" {
            stack
                .resources
                .retain(|known| known.logical_id != logical_id);
        }
        let when = jiff::Timestamp::from_second(time).expect("a valid time");
        let id = format!("{logical_id}-{}-{when}", event.status);
        stack.events.push((id, time, event));
    }

    /// One poll: the stack moves on to its next scripted step.
    fn advance(&mut self, index: usize) {
        let Some(step) = self.stacks[index].pending.pop_front() else {
            return;
        };
        for event in step.events {
            self.record(index, event);
        }
        let stack = &mut self.stacks[index];
        stack.status = step.status;
        stack.reason = step.reason;
    }

    fn script(&mut self, name: &str, trigger: Trigger) -> Option<Vec<Step>> {
        self.scripts
            .get_mut(&(name.to_owned(), trigger))
            .and_then(VecDeque::pop_front)
    }

    fn read(&mut self, call: String) {
        self.calls.push((false, call));
    }

    fn write(&mut self, call: String) {
        self.calls.push((true, call));
    }

    /// Whether a token was seen before; CloudFormation then takes the call for a retry of the
    /// earlier one and does nothing.
    fn repeated_token(&mut self, token: Option<&str>) -> bool {
        token.is_some_and(|token| !self.tokens.insert(token.to_owned()))
    }

    // --- CloudFormation operations -------------------------------------------------------

    fn describe_stacks(
        &mut self,
        input: &DescribeStacksInput,
    ) -> MockResponse<DescribeStacksOutput, DescribeStacksError> {
        let name = input.stack_name().unwrap_or_default().to_owned();
        self.read(format!("DescribeStacks {name}"));
        let Some(index) = self.visible(&name) else {
            return MockResponse::Error(DescribeStacksError::generic(missing(&name)));
        };
        self.advance(index);
        let stack = &self.stacks[index];
        let status = match &stack.status {
            Some(status) => status.clone(),
            None if stack.id == name => "DELETE_COMPLETE".to_owned(),
            None => return MockResponse::Error(DescribeStacksError::generic(missing(&name))),
        };
        let described = cfn::Stack::builder()
            .stack_name(&stack.name)
            .stack_id(&stack.id)
            .creation_time(DateTime::from_secs(START))
            .last_updated_time(DateTime::from_secs(START + self.clock))
            .stack_status(cfn::StackStatus::from(status.as_str()))
            .set_stack_status_reason(stack.reason.clone())
            .set_parameters(Some(
                stack
                    .parameters
                    .iter()
                    .map(|(key, value)| {
                        cfn::Parameter::builder()
                            .parameter_key(key)
                            .parameter_value(value)
                            .build()
                    })
                    .collect(),
            ))
            .set_outputs(Some(
                stack
                    .outputs
                    .iter()
                    .map(|(key, value)| {
                        cfn::Output::builder()
                            .output_key(key)
                            .output_value(value)
                            .build()
                    })
                    .collect(),
            ))
            .set_tags(Some(
                stack
                    .tags
                    .iter()
                    .map(|(key, value)| cfn::Tag::builder().key(key).value(value).build())
                    .collect(),
            ))
            .build();
        MockResponse::Output(DescribeStacksOutput::builder().stacks(described).build())
    }

    fn describe_stack_events(
        &mut self,
        input: &DescribeStackEventsInput,
    ) -> MockResponse<DescribeStackEventsOutput, DescribeStackEventsError> {
        let name = input.stack_name().unwrap_or_default().to_owned();
        let start: usize = input.next_token().map_or(0, |token| token.parse().unwrap());
        self.read(format!("DescribeStackEvents {name} from {start}"));
        let Some(index) = self.visible(&name) else {
            return MockResponse::Error(DescribeStackEventsError::generic(validation(&format!(
                "Stack [{name}] does not exist"
            ))));
        };
        let stack = &self.stacks[index];
        let newest_first: Vec<_> = stack.events.iter().rev().collect();
        let end = (start + self.event_page).min(newest_first.len());
        let page = newest_first[start..end]
            .iter()
            .map(|(id, time, event)| {
                cfn::StackEvent::builder()
                    .stack_id(&stack.id)
                    .event_id(id)
                    .stack_name(&stack.name)
                    .logical_resource_id(event.logical_id.as_deref().unwrap_or(&stack.name))
                    .set_physical_resource_id(event.physical_id.clone())
                    .resource_type(&event.resource_type)
                    .timestamp(DateTime::from_secs(*time))
                    .resource_status(cfn::ResourceStatus::from(event.status.as_str()))
                    .set_resource_status_reason(event.reason.clone())
                    .build()
            })
            .collect();
        MockResponse::Output(
            DescribeStackEventsOutput::builder()
                .set_stack_events(Some(page))
                .set_next_token((end < newest_first.len()).then(|| end.to_string()))
                .build(),
        )
    }

    fn create_change_set(
        &mut self,
        input: &CreateChangeSetInput,
    ) -> MockResponse<CreateChangeSetOutput, CreateChangeSetError> {
        let name = input.stack_name().unwrap_or_default().to_owned();
        let change_set_name = input.change_set_name().unwrap_or_default().to_owned();
        let kind = input
            .change_set_type()
            .map(|kind| kind.as_str().to_owned())
            .unwrap_or_else(|| "UPDATE".to_owned());
        let parameters: BTreeMap<String, String> = input
            .parameters()
            .iter()
            .map(|parameter| {
                (
                    parameter.parameter_key().unwrap_or_default().to_owned(),
                    parameter.parameter_value().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let tags: BTreeMap<String, String> = input
            .tags()
            .iter()
            .map(|tag| {
                (
                    tag.key().unwrap_or_default().to_owned(),
                    tag.value().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let template = input
            .template_body()
            .expect("every replayed template is passed inline")
            .to_owned();
        self.write(format!(
            "CreateChangeSet {name} {kind} {}",
            parameters
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        assert_eq!(
            input.client_token(),
            Some(change_set_name.as_str()),
            "the change set's unique name is its idempotency token"
        );
        if template.contains("AWS::IAM::") && input.capabilities().is_empty() {
            return MockResponse::Error(CreateChangeSetError::InsufficientCapabilitiesException(
                cfn::error::InsufficientCapabilitiesException::builder()
                    .message("Requires capabilities : [CAPABILITY_IAM]")
                    .build(),
            ));
        }
        let existing = self
            .visible(&name)
            .filter(|index| self.stacks[*index].status.is_some());
        let index = match (kind.as_str(), existing) {
            ("CREATE", Some(index))
                if self.stacks[index].status.as_deref() != Some("REVIEW_IN_PROGRESS") =>
            {
                return MockResponse::Error(CreateChangeSetError::AlreadyExistsException(
                    cfn::error::AlreadyExistsException::builder()
                        .message(format!("Stack [{name}] already exists"))
                        .build(),
                ));
            }
            ("CREATE", Some(index)) => index,
            ("CREATE", None) => {
                let id = format!(
                    "arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{name}/{}",
                    self.uuid()
                );
                self.stacks.push(Stack {
                    name: name.clone(),
                    id,
                    status: Some("REVIEW_IN_PROGRESS".to_owned()),
                    reason: None,
                    tags: tags.clone(),
                    parameters: BTreeMap::new(),
                    outputs: BTreeMap::new(),
                    template: String::new(),
                    resources: Vec::new(),
                    events: Vec::new(),
                    pending: VecDeque::new(),
                });
                let index = self.stacks.len() - 1;
                self.record(
                    index,
                    stack_event("REVIEW_IN_PROGRESS").because("User Initiated"),
                );
                index
            }
            (_, None) => {
                return MockResponse::Error(CreateChangeSetError::generic(validation(&format!(
                    "Stack [{name}] does not exist"
                ))));
            }
            (_, Some(index)) => {
                let status = self.stacks[index].status.clone().unwrap_or_default();
                let updatable = matches!(
                    status.as_str(),
                    "CREATE_COMPLETE"
                        | "UPDATE_COMPLETE"
                        | "UPDATE_ROLLBACK_COMPLETE"
                        | "IMPORT_COMPLETE"
                );
                if !updatable {
                    return MockResponse::Error(CreateChangeSetError::generic(validation(
                        &format!(
                            "Stack:{} is in {status} state and can not be updated.",
                            self.stacks[index].id
                        ),
                    )));
                }
                index
            }
        };
        let replies = match self
            .change_set_replies
            .get_mut(&name)
            .and_then(VecDeque::pop_front)
        {
            Some(replies) => replies,
            None if kind == "CREATE" => {
                let summary = render::validate(&template).expect("the template is valid");
                vec![change_set_ready(
                    summary
                        .resource_list
                        .iter()
                        .map(|declared| {
                            change("Add", &declared.logical_id, &declared.resource_type, None)
                        })
                        .collect(),
                )]
            }
            None => panic!("no change set is scripted for {name}"),
        };
        let id = format!(
            "arn:aws:cloudformation:{REGION}:{ACCOUNT}:changeSet/{change_set_name}/{}",
            self.uuid()
        );
        self.change_sets.push(ChangeSet {
            id: id.clone(),
            name: change_set_name,
            stack: index,
            template,
            parameters,
            tags,
            replies: replies.into(),
            described: false,
            deleted: false,
            executed: false,
        });
        MockResponse::Output(
            CreateChangeSetOutput::builder()
                .id(id)
                .stack_id(&self.stacks[index].id)
                .build(),
        )
    }

    fn change_set_index(&self, id: &str) -> Option<usize> {
        self.change_sets
            .iter()
            .position(|change_set| change_set.id == id && !change_set.deleted)
    }

    fn describe_change_set(
        &mut self,
        input: &DescribeChangeSetInput,
    ) -> MockResponse<DescribeChangeSetOutput, DescribeChangeSetError> {
        let id = input.change_set_name().unwrap_or_default().to_owned();
        let start: usize = input.next_token().map_or(0, |token| token.parse().unwrap());
        self.read(format!("DescribeChangeSet from {start}"));
        let Some(index) = self.change_set_index(&id) else {
            return MockResponse::Error(DescribeChangeSetError::ChangeSetNotFoundException(
                cfn::error::ChangeSetNotFoundException::builder()
                    .message(format!("ChangeSet [{id}] does not exist"))
                    .build(),
            ));
        };
        let page_size = self.change_page;
        let change_set = &mut self.change_sets[index];
        if start == 0 {
            if change_set.described && change_set.replies.len() > 1 {
                change_set.replies.pop_front();
            }
            change_set.described = true;
        }
        let reply = change_set.replies.front().expect("a reply").clone();
        let stack = &self.stacks[change_set.stack];
        let end = (start + page_size).min(reply.changes.len());
        let changes = reply.changes[start..end]
            .iter()
            .map(|change| {
                cfn::Change::builder()
                    .r#type(cfn::ChangeType::Resource)
                    .resource_change(
                        cfn::ResourceChange::builder()
                            .action(cfn::ChangeAction::from(change.action))
                            .logical_resource_id(&change.logical_id)
                            .resource_type(&change.resource_type)
                            .set_replacement(change.replacement.map(cfn::Replacement::from))
                            .build(),
                    )
                    .build()
            })
            .collect();
        MockResponse::Output(
            DescribeChangeSetOutput::builder()
                .change_set_id(&change_set.id)
                .change_set_name(&change_set.name)
                .stack_id(&stack.id)
                .stack_name(&stack.name)
                .status(cfn::ChangeSetStatus::from(reply.status))
                .execution_status(cfn::ExecutionStatus::from(reply.execution))
                .set_status_reason(reply.reason.clone())
                .set_changes(Some(changes))
                .set_next_token((end < reply.changes.len()).then(|| end.to_string()))
                .build(),
        )
    }

    fn execute_change_set(
        &mut self,
        input: &ExecuteChangeSetInput,
    ) -> MockResponse<ExecuteChangeSetOutput, ExecuteChangeSetError> {
        let id = input.change_set_name().unwrap_or_default().to_owned();
        let token = input.client_request_token();
        let Some(index) = self.change_set_index(&id) else {
            self.write("ExecuteChangeSet of an unknown change set".to_owned());
            return MockResponse::Error(ExecuteChangeSetError::ChangeSetNotFoundException(
                cfn::error::ChangeSetNotFoundException::builder()
                    .message(format!("ChangeSet [{id}] does not exist"))
                    .build(),
            ));
        };
        let stack_index = self.change_sets[index].stack;
        let name = self.stacks[stack_index].name.clone();
        self.write(format!(
            "ExecuteChangeSet {name} token={}",
            token_shape(token)
        ));
        if !token.is_some_and(valid_token) {
            return MockResponse::Error(ExecuteChangeSetError::generic(validation(
                "1 validation error detected: Value at 'clientRequestToken' failed to satisfy constraint",
            )));
        }
        if self.repeated_token(token) {
            return MockResponse::Output(ExecuteChangeSetOutput::builder().build());
        }
        let change_set = &mut self.change_sets[index];
        let reply = change_set.replies.front().expect("a reply");
        if change_set.executed
            || reply.status != "CREATE_COMPLETE"
            || reply.execution != "AVAILABLE"
        {
            return MockResponse::Error(ExecuteChangeSetError::InvalidChangeSetStatusException(
                cfn::error::InvalidChangeSetStatusException::builder()
                    .message(format!(
                        "ChangeSet [{id}] cannot be executed in its current status of [{}]",
                        reply.status
                    ))
                    .build(),
            ));
        }
        change_set.executed = true;
        let (template, parameters, tags) = (
            change_set.template.clone(),
            change_set.parameters.clone(),
            change_set.tags.clone(),
        );
        let steps = self
            .script(&name, Trigger::Execute)
            .unwrap_or_else(|| panic!("no execution is scripted for {name}"));
        let stack = &mut self.stacks[stack_index];
        stack.template = template;
        stack.parameters = parameters;
        stack.tags = tags;
        stack.pending = steps.into();
        MockResponse::Output(ExecuteChangeSetOutput::builder().build())
    }

    fn delete_change_set(
        &mut self,
        input: &DeleteChangeSetInput,
    ) -> MockResponse<DeleteChangeSetOutput, DeleteChangeSetError> {
        let id = input.change_set_name().unwrap_or_default().to_owned();
        let Some(index) = self.change_set_index(&id) else {
            self.write("DeleteChangeSet of an unknown change set".to_owned());
            return MockResponse::Error(DeleteChangeSetError::generic(validation(&format!(
                "ChangeSet [{id}] does not exist"
            ))));
        };
        let name = self.stacks[self.change_sets[index].stack].name.clone();
        self.write(format!("DeleteChangeSet {name}"));
        self.change_sets[index].deleted = true;
        MockResponse::Output(DeleteChangeSetOutput::builder().build())
    }

    fn delete_stack(
        &mut self,
        input: &DeleteStackInput,
    ) -> MockResponse<DeleteStackOutput, DeleteStackError> {
        let name = input.stack_name().unwrap_or_default().to_owned();
        let token = input.client_request_token();
        let retain = input.retain_resources();
        self.write(format!(
            "DeleteStack {name} retain=[{}] token={}",
            retain.join(", "),
            token_shape(token)
        ));
        if self.repeated_token(token) {
            return MockResponse::Output(DeleteStackOutput::builder().build());
        }
        let Some(index) = self
            .visible(&name)
            .filter(|index| self.stacks[*index].status.is_some())
        else {
            // Deleting a stack that does not exist succeeds and does nothing.
            return MockResponse::Output(DeleteStackOutput::builder().build());
        };
        let status = self.stacks[index].status.clone().unwrap_or_default();
        if !retain.is_empty() && status != "DELETE_FAILED" {
            return MockResponse::Error(DeleteStackError::generic(validation(&format!(
                "Invalid operation on stack [{}]. RetainResources can only be specified when stack is in DELETE_FAILED state",
                self.stacks[index].id
            ))));
        }
        let steps = self.script(&name, Trigger::Delete).unwrap_or_else(|| {
            vec![
                step(
                    "DELETE_IN_PROGRESS",
                    vec![stack_event("DELETE_IN_PROGRESS").because("User Initiated")],
                ),
                gone(),
            ]
        });
        self.stacks[index].pending = steps.into();
        MockResponse::Output(DeleteStackOutput::builder().build())
    }

    fn continue_update_rollback(
        &mut self,
        input: &ContinueUpdateRollbackInput,
    ) -> MockResponse<ContinueUpdateRollbackOutput, ContinueUpdateRollbackError> {
        let name = input.stack_name().unwrap_or_default().to_owned();
        let token = input.client_request_token();
        self.write(format!(
            "ContinueUpdateRollback {name} token={}",
            token_shape(token)
        ));
        if self.repeated_token(token) {
            return MockResponse::Output(ContinueUpdateRollbackOutput::builder().build());
        }
        let index = self.visible(&name).expect("the stack exists");
        let status = self.stacks[index].status.clone().unwrap_or_default();
        if status != "UPDATE_ROLLBACK_FAILED" {
            return MockResponse::Error(ContinueUpdateRollbackError::generic(validation(
                &format!("Stack {name} is in {status} state and can not be continued"),
            )));
        }
        let steps = self
            .script(&name, Trigger::ContinueRollback)
            .unwrap_or_else(|| panic!("no rollback is scripted for {name}"));
        self.stacks[index].pending = steps.into();
        MockResponse::Output(ContinueUpdateRollbackOutput::builder().build())
    }

    fn list_stack_resources(
        &mut self,
        input: &ListStackResourcesInput,
    ) -> MockResponse<ListStackResourcesOutput, ListStackResourcesError> {
        let name = input.stack_name().unwrap_or_default().to_owned();
        self.read(format!("ListStackResources {name}"));
        let Some(index) = self.visible(&name) else {
            return MockResponse::Error(ListStackResourcesError::generic(missing(&name)));
        };
        let summaries = self.stacks[index]
            .resources
            .iter()
            .map(|known| {
                cfn::StackResourceSummary::builder()
                    .logical_resource_id(&known.logical_id)
                    .set_physical_resource_id(known.physical_id.clone())
                    .resource_type(&known.resource_type)
                    .resource_status(cfn::ResourceStatus::from(known.status.as_str()))
                    .last_updated_timestamp(DateTime::from_secs(START + self.clock))
                    .build()
            })
            .collect();
        MockResponse::Output(
            ListStackResourcesOutput::builder()
                .set_stack_resource_summaries(Some(summaries))
                .build(),
        )
    }

    fn get_template(
        &mut self,
        input: &GetTemplateInput,
    ) -> MockResponse<GetTemplateOutput, GetTemplateError> {
        let name = input.stack_name().unwrap_or_default().to_owned();
        self.read(format!("GetTemplate {name}"));
        match self.visible(&name) {
            Some(index) => MockResponse::Output(
                GetTemplateOutput::builder()
                    .template_body(&self.stacks[index].template)
                    .build(),
            ),
            None => MockResponse::Error(GetTemplateError::generic(missing(&name))),
        }
    }

    // --- S3 operations -------------------------------------------------------------------

    fn list_object_versions(
        &mut self,
        input: &aws_sdk_s3::operation::list_object_versions::ListObjectVersionsInput,
    ) -> aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput {
        let bucket = input.bucket().unwrap_or_default().to_owned();
        self.read(format!("s3:ListObjectVersions {bucket}"));
        let versions = self
            .bucket_listings
            .get_mut(&bucket)
            .and_then(VecDeque::pop_front)
            .unwrap_or_default();
        aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput::builder()
            .set_versions(Some(
                versions
                    .into_iter()
                    .map(|(key, version)| {
                        aws_sdk_s3::types::ObjectVersion::builder()
                            .key(key)
                            .version_id(version)
                            .build()
                    })
                    .collect(),
            ))
            .build()
    }

    fn delete_objects(
        &mut self,
        input: &aws_sdk_s3::operation::delete_objects::DeleteObjectsInput,
    ) -> aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput {
        let bucket = input.bucket().unwrap_or_default();
        let objects = input.delete().map_or(0, |delete| delete.objects().len());
        self.write(format!("s3:DeleteObjects {bucket} ({objects} versions)"));
        aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput::builder().build()
    }
}

type Shared = Arc<Mutex<Cloud>>;

/// A rule that answers every call of one operation from the replayed account.
macro_rules! route {
    ($cloud:expr, $operation:path, $handler:ident) => {{
        let cloud = $cloud.clone();
        mock!($operation).then_compute_response(move |input| cloud.lock().unwrap().$handler(input))
    }};
}

/// The same for operations that cannot fail here.
macro_rules! route_ok {
    ($cloud:expr, $operation:path, $handler:ident) => {{
        let cloud = $cloud.clone();
        mock!($operation).then_compute_output(move |input| cloud.lock().unwrap().$handler(input))
    }};
}

fn interceptor(rules: &[Rule]) -> MockResponseInterceptor {
    rules.iter().fold(
        MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
        |interceptor, rule| interceptor.with_rule(rule),
    )
}

fn credentials() -> cloudformation::config::Credentials {
    cloudformation::config::Credentials::new("AKIDREPLAYED", "replayed", None, None, "replayed")
}

/// The real adapter over real SDK clients whose every call is answered from `cloud`. An
/// operation the replay does not know panics (the interceptor requires a match).
fn adapter(cloud: &Shared) -> CloudFormation {
    let cloudformation_rules = [
        route!(
            cloud,
            cloudformation::Client::describe_stacks,
            describe_stacks
        ),
        route!(
            cloud,
            cloudformation::Client::describe_stack_events,
            describe_stack_events
        ),
        route!(
            cloud,
            cloudformation::Client::create_change_set,
            create_change_set
        ),
        route!(
            cloud,
            cloudformation::Client::describe_change_set,
            describe_change_set
        ),
        route!(
            cloud,
            cloudformation::Client::execute_change_set,
            execute_change_set
        ),
        route!(
            cloud,
            cloudformation::Client::delete_change_set,
            delete_change_set
        ),
        route!(cloud, cloudformation::Client::delete_stack, delete_stack),
        route!(
            cloud,
            cloudformation::Client::continue_update_rollback,
            continue_update_rollback
        ),
        route!(
            cloud,
            cloudformation::Client::list_stack_resources,
            list_stack_resources
        ),
        route!(cloud, cloudformation::Client::get_template, get_template),
    ];
    let client = cloudformation::Client::from_conf(
        cloudformation::Config::builder()
            .behavior_version(cloudformation::config::BehaviorVersion::latest())
            .region(cloudformation::config::Region::new(REGION))
            .credentials_provider(credentials())
            .retry_config(cloudformation::config::retry::RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor(&cloudformation_rules))
            .build(),
    );
    let s3_rules = [
        route_ok!(
            cloud,
            aws_sdk_s3::Client::list_object_versions,
            list_object_versions
        ),
        route_ok!(cloud, aws_sdk_s3::Client::delete_objects, delete_objects),
    ];
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .credentials_provider(credentials())
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor(&s3_rules))
            .build(),
    );
    // No test here reaches DynamoDB: a call would find no rule and fail the test.
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new(REGION))
            .credentials_provider(credentials())
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor(&[]))
            .build(),
    );
    CloudFormation::from_clients(client, s3, dynamodb, REGION)
}

struct Replay {
    cloud: Shared,
    deployer: CloudFormation,
}

impl Replay {
    fn new(setup: impl FnOnce(&mut Cloud)) -> Self {
        let mut cloud = Cloud::new();
        setup(&mut cloud);
        let cloud = Arc::new(Mutex::new(cloud));
        let deployer = adapter(&cloud);
        Replay { cloud, deployer }
    }

    /// The writes the installer sent, in order.
    fn writes(&self) -> Vec<String> {
        self.cloud
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(write, _)| *write)
            .map(|(_, call)| call.clone())
            .collect()
    }

    /// How many calls start with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.cloud
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(_, call)| call.starts_with(prefix))
            .count()
    }

    /// Marks the calls so far as seen: `writes` then lists only later ones.
    fn forget_calls(&self) {
        self.cloud.lock().unwrap().calls.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// The person at the terminal: the questions they are asked and what they see.

struct Operator {
    answer: bool,
    questions: Mutex<Vec<String>>,
}

impl Operator {
    fn answering(answer: bool) -> Self {
        Operator {
            answer,
            questions: Mutex::new(Vec::new()),
        }
    }

    fn questions(&self) -> Vec<String> {
        self.questions.lock().unwrap().clone()
    }
}

impl Gate for Operator {
    fn confirm(&self, question: &str) -> bool {
        self.questions.lock().unwrap().push(question.to_owned());
        self.answer
    }
}

#[derive(Default)]
struct Screen {
    lines: Mutex<Vec<String>>,
    events: Mutex<Vec<StackEvent>>,
}

impl Screen {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn text(&self) -> String {
        self.lines().join("\n")
    }

    fn events(&self) -> Vec<StackEvent> {
        self.events.lock().unwrap().clone()
    }
}

impl DeployReporter for Screen {
    fn stack_started(&self, stack: &str, action: StackAction, resources: usize) {
        self.lines
            .lock()
            .unwrap()
            .push(format!("start {stack}: {action} ({resources} resources)"));
    }

    fn event(&self, event: &StackEvent) {
        let reason = event
            .reason
            .as_deref()
            .map(|reason| format!(": {reason}"))
            .unwrap_or_default();
        self.lines.lock().unwrap().push(format!(
            "  {} {} {} {}{reason}",
            event.stack_name, event.logical_id, event.resource_type, event.status
        ));
        self.events.lock().unwrap().push(event.clone());
    }

    fn stack_finished(&self, stack: &str, status: &str, succeeded: bool) {
        let verdict = if succeeded { "ok" } else { "failed" };
        self.lines
            .lock()
            .unwrap()
            .push(format!("end {stack}: {status} ({verdict})"));
    }

    fn note(&self, message: &str) {
        self.lines.lock().unwrap().push(format!("note: {message}"));
    }
}

// ---------------------------------------------------------------------------------------------
// The instance: the public example configuration, rendered with release 1.0.0.

fn rendered() -> Vec<RenderedStack> {
    let (_, text) = VARIANTS
        .iter()
        .find(|(variant, _)| *variant == "public")
        .expect("the public variant");
    let config = ConfigFile::parse(text, Path::new("stackwright.toml")).expect("it parses");
    let release = ReleaseManifest::load(&release("1.0.0")).expect("the release loads");
    render::render_all(&config, &release).expect("the stacks render")
}

fn stacks_of(kinds: &[StackKind]) -> Vec<RenderedStack> {
    rendered()
        .into_iter()
        .filter(|stack| kinds.contains(&stack.kind))
        .collect()
}

fn stack(stacks: &[RenderedStack], kind: StackKind) -> &RenderedStack {
    stacks
        .iter()
        .find(|stack| stack.kind == kind)
        .expect("the stack is rendered")
}

const INSTANCE: &str = "acme-pub";
const NETWORK: &str = "acme-pub-network";
const PLATFORM: &str = "acme-pub-platform";

/// The bootstrap and network stacks: the network takes the bootstrap's KMS key as a parameter.
fn bootstrap_and_network() -> Vec<RenderedStack> {
    stacks_of(&[StackKind::Bootstrap, StackKind::Network])
}

fn network_plan(plan: &Plan) -> &StackPlan {
    plan.stacks
        .iter()
        .find(|stack| stack.stack_name == NETWORK)
        .expect("the network is planned")
}

const CREATE_NETWORK: &str = "CreateChangeSet acme-pub-network CREATE KmsKeyArn=arn:aws:kms:us-east-1:123456789012:key/4f1c2a9e-7b3d-4e8f-a1c6-2d9b0e5f7a38";
const UPDATE_NETWORK: &str = "CreateChangeSet acme-pub-network UPDATE KmsKeyArn=arn:aws:kms:us-east-1:123456789012:key/4f1c2a9e-7b3d-4e8f-a1c6-2d9b0e5f7a38";
const EXECUTE_NETWORK: &str = "ExecuteChangeSet acme-pub-network token=stackwright-execute-…";

/// The events of a first create of the network whose Elastic IP ran into the account's
/// address quota, as CloudFormation records them, oldest first.
fn address_quota_failure() -> Vec<Step> {
    vec![
        step(
            "CREATE_IN_PROGRESS",
            vec![
                stack_event("CREATE_IN_PROGRESS").because("User Initiated"),
                resource("Vpc", "AWS::EC2::VPC", "CREATE_IN_PROGRESS"),
                resource("Vpc", "AWS::EC2::VPC", "CREATE_COMPLETE"),
                resource("NatGatewayAEip", "AWS::EC2::EIP", "CREATE_IN_PROGRESS"),
                resource("NatGatewayBEip", "AWS::EC2::EIP", "CREATE_IN_PROGRESS"),
                resource("NatGatewayCEip", "AWS::EC2::EIP", "CREATE_IN_PROGRESS"),
            ],
        ),
        step(
            "CREATE_IN_PROGRESS",
            vec![
                resource("NatGatewayAEip", "AWS::EC2::EIP", "CREATE_COMPLETE"),
                resource("NatGatewayA", "AWS::EC2::NatGateway", "CREATE_IN_PROGRESS"),
                // The failure and the cancellations it causes are published in the same
                // instant, in no guaranteed order: here a cancellation comes first.
                resource("NatGatewayA", "AWS::EC2::NatGateway", "CREATE_FAILED")
                    .because("Resource creation cancelled"),
                resource("NatGatewayBEip", "AWS::EC2::EIP", "CREATE_FAILED").at_once().because(
                    "Resource handler returned message: \"The maximum number of addresses has been reached. (Service: Ec2, Status Code: 400, Request ID: 5b2c7e1a-9f3d-4c8e-b6a2-1d0e9f8c7b6a)\" (RequestToken: 0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f, HandlerErrorCode: ServiceLimitExceeded)",
                ),
                resource("NatGatewayCEip", "AWS::EC2::EIP", "CREATE_FAILED").because(
                    "Resource handler returned message: \"The maximum number of addresses has been reached. (Service: Ec2, Status Code: 400, Request ID: 7d8e9f0a-1b2c-4d3e-8f4a-5b6c7d8e9f0a)\" (RequestToken: 1d2e3f4a-5b6c-7d8e-9f0a-1b2c3d4e5f6a, HandlerErrorCode: ServiceLimitExceeded)",
                ),
            ],
        ),
        step(
            "ROLLBACK_IN_PROGRESS",
            vec![
                stack_event("ROLLBACK_IN_PROGRESS").because(
                    "The following resource(s) failed to create: [NatGatewayCEip, NatGatewayA, NatGatewayBEip]. Rollback requested by user.",
                ),
                resource("NatGatewayA", "AWS::EC2::NatGateway", "DELETE_IN_PROGRESS"),
            ],
        )
        .because(
            "The following resource(s) failed to create: [NatGatewayCEip, NatGatewayA, NatGatewayBEip]. Rollback requested by user.",
        ),
        step(
            "ROLLBACK_COMPLETE",
            vec![
                resource("NatGatewayA", "AWS::EC2::NatGateway", "DELETE_COMPLETE"),
                resource("NatGatewayAEip", "AWS::EC2::EIP", "DELETE_COMPLETE"),
                resource("Vpc", "AWS::EC2::VPC", "DELETE_COMPLETE"),
                stack_event("ROLLBACK_COMPLETE"),
            ],
        ),
    ]
}

/// A first create of the network that goes through.
fn network_created() -> Vec<Step> {
    vec![
        step(
            "CREATE_IN_PROGRESS",
            vec![
                stack_event("CREATE_IN_PROGRESS").because("User Initiated"),
                resource("Vpc", "AWS::EC2::VPC", "CREATE_IN_PROGRESS"),
            ],
        ),
        step(
            "CREATE_IN_PROGRESS",
            vec![
                resource("Vpc", "AWS::EC2::VPC", "CREATE_COMPLETE"),
                resource("NatGatewayA", "AWS::EC2::NatGateway", "CREATE_IN_PROGRESS"),
            ],
        ),
        step(
            "CREATE_COMPLETE",
            vec![
                resource("NatGatewayA", "AWS::EC2::NatGateway", "CREATE_COMPLETE"),
                stack_event("CREATE_COMPLETE"),
            ],
        ),
    ]
}

/// The bootstrap stack deployed and unchanged, and the network stack in `status`.
fn deployed_network(cloud: &mut Cloud, stacks: &[RenderedStack], status: &str) {
    cloud.deploy(stack(stacks, StackKind::Bootstrap), "CREATE_COMPLETE");
    cloud.deploy(stack(stacks, StackKind::Network), status);
}

// ---------------------------------------------------------------------------------------------
// 1. A stack left in ROLLBACK_COMPLETE by a failed first create.

/// Replays recorded response shapes because moto cannot produce this state: it has no rollback,
/// so no stack ever reaches ROLLBACK_COMPLETE there.
fn rolled_back_network(cloud: &mut Cloud, stacks: &[RenderedStack]) {
    cloud.deploy(stack(stacks, StackKind::Bootstrap), "CREATE_COMPLETE");
    let network = stack(stacks, StackKind::Network);
    let index = {
        cloud.deploy(network, "CREATE_IN_PROGRESS");
        cloud.stacks.len() - 1
    };
    // The history is that of the failed create, not a completed one.
    cloud.stacks[index].events.clear();
    cloud.stacks[index].resources.clear();
    cloud.stacks[index].outputs.clear();
    cloud.stacks[index].pending = address_quota_failure().into();
    while !cloud.stacks[index].pending.is_empty() {
        cloud.advance(index);
    }
    assert_eq!(
        cloud.stacks[index].status.as_deref(),
        Some("ROLLBACK_COMPLETE")
    );
}

#[tokio::test]
async fn replayed_a_rolled_back_first_create_is_planned_as_a_recreate_and_declining_changes_nothing()
 {
    // Replays recorded response shapes because moto cannot produce this state (no rollback).
    let stacks = bootstrap_and_network();
    let replay = Replay::new(|cloud| rolled_back_network(cloud, &stacks));

    let plan = provision::plan(&replay.deployer, INSTANCE, &stacks, REGION, true)
        .await
        .expect("the plan is made");
    let network = network_plan(&plan);
    assert_eq!(network.action, StackAction::Recreate);
    assert_eq!(network.status.as_deref(), Some("ROLLBACK_COMPLETE"));
    let text = plan.to_string();
    let mut lines = text.lines().skip_while(|line| !line.starts_with(NETWORK));
    insta::assert_snapshot!(lines.by_ref().take(2).collect::<Vec<_>>().join("\n"), @r"
    acme-pub-network: delete and create again (ROLLBACK_COMPLETE)
        its first create failed and was rolled back; CloudFormation cannot update it, so it is deleted and created again
    ");
    assert!(replay.writes().is_empty(), "planning writes nothing");

    let operator = Operator::answering(false);
    let screen = Screen::default();
    let error = provision::apply(&replay.deployer, &plan, &stacks, REGION, &screen, &operator)
        .await
        .expect_err("declining stops the install");
    assert!(
        matches!(&error, ProvisionError::Declined { stack, .. } if stack == NETWORK),
        "{error:?}"
    );
    insta::assert_snapshot!(operator.questions().join("\n"), @"acme-pub-network is in ROLLBACK_COMPLETE after its first create failed. Delete it and create it again?");
    insta::assert_snapshot!(format!("{error}\nhint: {}", error.hint().unwrap()), @r"
    acme-pub-network: delete and recreate was declined
    hint: nothing was changed; run again and confirm to go ahead
    ");
    assert_eq!(
        replay.writes(),
        Vec::<String>::new(),
        "no DeleteStack, nothing else"
    );
}

#[tokio::test]
async fn replayed_a_rolled_back_first_create_is_deleted_then_created_anew_when_confirmed() {
    // Replays recorded response shapes because moto cannot produce this state (no rollback).
    let stacks = bootstrap_and_network();
    let replay = Replay::new(|cloud| {
        rolled_back_network(cloud, &stacks);
        cloud.on(
            NETWORK,
            Trigger::Delete,
            vec![
                step(
                    "DELETE_IN_PROGRESS",
                    vec![stack_event("DELETE_IN_PROGRESS").because("User Initiated")],
                ),
                gone(),
            ],
        );
        cloud.on(NETWORK, Trigger::Execute, network_created());
    });

    let plan = provision::plan(&replay.deployer, INSTANCE, &stacks, REGION, true)
        .await
        .expect("the plan is made");
    let operator = Operator::answering(true);
    let screen = Screen::default();
    let report = provision::apply(&replay.deployer, &plan, &stacks, REGION, &screen, &operator)
        .await
        .expect("the stack is recreated");

    assert_eq!(operator.questions().len(), 1);
    assert_eq!(
        replay.writes(),
        [
            "DeleteStack acme-pub-network retain=[] token=stackwright-delete-stackwright-…",
            CREATE_NETWORK,
            EXECUTE_NETWORK,
        ]
    );
    let network = report
        .stacks
        .iter()
        .find(|outcome| outcome.stack_name == NETWORK)
        .expect("the network's outcome");
    assert_eq!(network.status, "CREATE_COMPLETE");
    assert_eq!(network.action, StackAction::Recreate);
    insta::assert_snapshot!(screen.text(), @r"
    end acme-pub-bootstrap: unchanged (ok)
    note: acme-pub-network: deleting the rolled-back stack before creating it again
      acme-pub-network acme-pub-network AWS::CloudFormation::Stack DELETE_IN_PROGRESS: User Initiated
    start acme-pub-network: delete and create again (36 resources)
      acme-pub-network acme-pub-network AWS::CloudFormation::Stack CREATE_IN_PROGRESS: User Initiated
      acme-pub-network Vpc AWS::EC2::VPC CREATE_IN_PROGRESS
      acme-pub-network Vpc AWS::EC2::VPC CREATE_COMPLETE
      acme-pub-network NatGatewayA AWS::EC2::NatGateway CREATE_IN_PROGRESS
      acme-pub-network NatGatewayA AWS::EC2::NatGateway CREATE_COMPLETE
      acme-pub-network acme-pub-network AWS::CloudFormation::Stack CREATE_COMPLETE
    end acme-pub-network: CREATE_COMPLETE (ok)
    ");
}

// ---------------------------------------------------------------------------------------------
// 2. A create that fails and rolls back.

#[tokio::test]
async fn replayed_a_failed_create_is_explained_by_its_first_failed_resource() {
    // Replays recorded response shapes because moto cannot produce this state: a failing
    // resource there is an API error from CreateStack, with no CREATE_FAILED events and no
    // rollback.
    let stacks = bootstrap_and_network();
    let replay = Replay::new(|cloud| {
        cloud.deploy(stack(&stacks, StackKind::Bootstrap), "CREATE_COMPLETE");
        cloud.change_set(
            NETWORK,
            vec![
                change_set_in_progress(),
                change_set_ready(vec![change("Add", "Vpc", "AWS::EC2::VPC", None)]),
            ],
        );
        cloud.on(NETWORK, Trigger::Execute, address_quota_failure());
    });

    let plan = provision::plan(&replay.deployer, INSTANCE, &stacks, REGION, true)
        .await
        .expect("the plan is made");
    assert_eq!(network_plan(&plan).action, StackAction::Create);
    let screen = Screen::default();
    let operator = Operator::answering(true);
    let error = provision::apply(&replay.deployer, &plan, &stacks, REGION, &screen, &operator)
        .await
        .expect_err("the create fails");

    let ProvisionError::StackFailed {
        stack,
        status,
        root_cause,
        ..
    } = &error
    else {
        panic!("not a stack failure: {error:?}");
    };
    assert_eq!(stack, NETWORK);
    assert_eq!(status, "ROLLBACK_COMPLETE");
    let cause = root_cause.as_deref().expect("a root cause");
    assert_eq!(
        (cause.logical_id.as_str(), cause.status.as_str()),
        ("NatGatewayBEip", "CREATE_FAILED"),
        "the first failed resource, not a later one, a cancellation or the stack"
    );
    insta::assert_snapshot!(format!("{error}\nhint: {}", error.hint().unwrap()), @r#"
    acme-pub-network failed and ended in ROLLBACK_COMPLETE: CREATE_FAILED NatGatewayBEip (AWS::EC2::EIP) acme-pub-network: Resource handler returned message: "The maximum number of addresses has been reached. (Service: Ec2, Status Code: 400, Request ID: 5b2c7e1a-9f3d-4c8e-b6a2-1d0e9f8c7b6a)" (RequestToken: 0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f, HandlerErrorCode: ServiceLimitExceeded)
    hint: fix the cause above and run `stackwright install` again: it deletes the rolled-back stack and creates it anew
    "#);
    assert!(operator.questions().is_empty());
    assert_eq!(replay.writes(), [CREATE_NETWORK, EXECUTE_NETWORK]);
    let lines = screen.lines();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("end acme-pub-network: ROLLBACK_COMPLETE (failed)")
    );
    assert!(
        lines.iter().any(|line| line.contains(
            "NatGatewayA AWS::EC2::NatGateway CREATE_FAILED: Resource creation cancelled"
        )),
        "every event is shown: {lines:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A failure inside a nested stack.

#[tokio::test]
async fn replayed_a_nested_stack_failure_is_explained_by_the_nested_stacks_first_failed_resource() {
    // Replays recorded response shapes because moto cannot produce this state: it creates
    // nested stacks but never fails them, and records no per-resource events. The rendered
    // templates have no nested stack today; the replayed create of the network has one, as a
    // release that moves the interface endpoints into their own template would.
    const NESTED: &str = "acme-pub-network-Endpoints-1RX2T4ZQK9WLM";
    let stacks = bootstrap_and_network();
    let replay = Replay::new(|cloud| {
        cloud.deploy(stack(&stacks, StackKind::Bootstrap), "CREATE_COMPLETE");
        // The nested stack as CloudFormation keeps it after the parent's rollback deleted it:
        // reachable by its ID only.
        let nested = {
            let entry = cloud.deploy(stack(&stacks, StackKind::Network), "CREATE_IN_PROGRESS");
            entry.name = NESTED.to_owned();
            entry.id = format!(
                "arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{NESTED}/6a7b8c9d-3e1b-11f0-8c2d-0a1b2c3d4e5f"
            );
            entry.events.clear();
            entry.resources.clear();
            entry.id.clone()
        };
        cloud.history(
            &nested,
            vec![
                stack_event("CREATE_IN_PROGRESS").because("User Initiated"),
                resource("EndpointSecurityGroup", "AWS::EC2::SecurityGroup", "CREATE_COMPLETE"),
                resource("EcrApiEndpoint", "AWS::EC2::VPCEndpoint", "CREATE_FAILED").because(
                    "Resource handler returned message: \"The VPC endpoint service com.amazonaws.us-east-1.ecr.api does not support the availability zone of the subnet: subnet-0c2f4e6a8b0d1f3e5. (Service: Ec2, Status Code: 400, Request ID: 2e4f6a8c-0b1d-4f3e-a5c7-9e1b3d5f7a9c)\" (RequestToken: 3f5a7c9e-1b2d-4e6f-8a0c-2e4f6a8c0b1d, HandlerErrorCode: InvalidRequest)",
                ),
                resource("EcrDkrEndpoint", "AWS::EC2::VPCEndpoint", "CREATE_FAILED")
                    .because("Resource creation cancelled"),
                stack_event("ROLLBACK_IN_PROGRESS"),
                stack_event("ROLLBACK_COMPLETE"),
                stack_event("DELETE_COMPLETE"),
            ],
        );
        let index = cloud.find(&nested).unwrap();
        cloud.stacks[index].status = None;
        cloud.on(
            NETWORK,
            Trigger::Execute,
            vec![
                step(
                    "CREATE_IN_PROGRESS",
                    vec![
                        stack_event("CREATE_IN_PROGRESS").because("User Initiated"),
                        resource("Vpc", "AWS::EC2::VPC", "CREATE_COMPLETE"),
                        resource("Endpoints", "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS")
                            .physical(&nested),
                    ],
                ),
                step(
                    "ROLLBACK_COMPLETE",
                    vec![
                        resource("Endpoints", "AWS::CloudFormation::Stack", "CREATE_FAILED").because(&format!(
                            "Embedded stack {nested} was not successfully created: The following resource(s) failed to create: [EcrApiEndpoint, EcrDkrEndpoint]."
                        )),
                        stack_event("ROLLBACK_IN_PROGRESS").because(
                            "The following resource(s) failed to create: [Endpoints]. Rollback requested by user.",
                        ),
                        resource("Endpoints", "AWS::CloudFormation::Stack", "DELETE_COMPLETE"),
                        resource("Vpc", "AWS::EC2::VPC", "DELETE_COMPLETE"),
                        stack_event("ROLLBACK_COMPLETE"),
                    ],
                ),
            ],
        );
    });

    let plan = provision::plan(&replay.deployer, INSTANCE, &stacks, REGION, true)
        .await
        .expect("the plan is made");
    let screen = Screen::default();
    let error = provision::apply(
        &replay.deployer,
        &plan,
        &stacks,
        REGION,
        &screen,
        &Operator::answering(true),
    )
    .await
    .expect_err("the create fails");
    let ProvisionError::StackFailed { root_cause, .. } = &error else {
        panic!("not a stack failure: {error:?}");
    };
    let cause = root_cause.as_deref().expect("a root cause");
    assert_eq!(cause.stack_name, NESTED);
    assert_eq!(cause.logical_id, "EcrApiEndpoint");
    insta::assert_snapshot!(error.to_string(), @r#"acme-pub-network failed and ended in ROLLBACK_COMPLETE: CREATE_FAILED EcrApiEndpoint (AWS::EC2::VPCEndpoint) acme-pub-network-Endpoints-1RX2T4ZQK9WLM: Resource handler returned message: "The VPC endpoint service com.amazonaws.us-east-1.ecr.api does not support the availability zone of the subnet: subnet-0c2f4e6a8b0d1f3e5. (Service: Ec2, Status Code: 400, Request ID: 2e4f6a8c-0b1d-4f3e-a5c7-9e1b3d5f7a9c)" (RequestToken: 3f5a7c9e-1b2d-4e6f-8a0c-2e4f6a8c0b1d, HandlerErrorCode: InvalidRequest)"#);
    assert!(
        replay.count(&format!(
            "DescribeStackEvents arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{NESTED}/"
        )) > 0,
        "the nested stack is read by its ID: its name is gone once the parent rolled back"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. An update whose rollback failed.

#[tokio::test]
async fn replayed_a_failed_rollback_is_continued_then_the_update_is_applied() {
    // Replays recorded response shapes because moto cannot produce this state: a failing update
    // there leaves the stack in UPDATE_COMPLETE, and ContinueUpdateRollback is not implemented.
    let stacks = bootstrap_and_network();
    let replay = Replay::new(|cloud| {
        deployed_network(cloud, &stacks, "UPDATE_ROLLBACK_FAILED");
        cloud.history(
            NETWORK,
            vec![
                stack_event("UPDATE_IN_PROGRESS").because("User Initiated"),
                resource("FlowLogRole", "AWS::IAM::Role", "UPDATE_IN_PROGRESS"),
                resource("FlowLogRole", "AWS::IAM::Role", "UPDATE_COMPLETE"),
                resource("FlowLog", "AWS::EC2::FlowLog", "UPDATE_FAILED").because(
                    "Resource handler returned message: \"Access Denied for LogDestination: acme-pub-network-FlowLogGroup. Please check LogDestination permission\" (HandlerErrorCode: InvalidRequest)",
                ),
                stack_event("UPDATE_ROLLBACK_IN_PROGRESS").because(
                    "The following resource(s) failed to update: [FlowLog].",
                ),
                resource("FlowLogRole", "AWS::IAM::Role", "UPDATE_FAILED").because(
                    "Resource handler returned message: \"The role with name acme-pub-network-flowlogrole cannot be found. (Service: Iam, Status Code: 404, Request ID: 8c0e2a4c-6e8a-4c0e-a2c4-6e8a0c2e4a6c)\" (HandlerErrorCode: NotFound)",
                ),
                stack_event("UPDATE_ROLLBACK_FAILED").because(
                    "The following resource(s) failed to update: [FlowLogRole].",
                ),
            ],
        );
        cloud.on(
            NETWORK,
            Trigger::ContinueRollback,
            vec![
                step(
                    "UPDATE_ROLLBACK_IN_PROGRESS",
                    vec![stack_event("UPDATE_ROLLBACK_IN_PROGRESS").because("User Initiated")],
                ),
                step(
                    "UPDATE_ROLLBACK_COMPLETE",
                    vec![
                        resource("FlowLogRole", "AWS::IAM::Role", "UPDATE_COMPLETE"),
                        stack_event("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"),
                        stack_event("UPDATE_ROLLBACK_COMPLETE"),
                    ],
                ),
            ],
        );
        cloud.change_set(
            NETWORK,
            vec![change_set_ready(vec![change(
                "Modify",
                "FlowLog",
                "AWS::EC2::FlowLog",
                Some("False"),
            )])],
        );
        cloud.on(
            NETWORK,
            Trigger::Execute,
            vec![
                step(
                    "UPDATE_IN_PROGRESS",
                    vec![
                        stack_event("UPDATE_IN_PROGRESS").because("User Initiated"),
                        resource("FlowLog", "AWS::EC2::FlowLog", "UPDATE_IN_PROGRESS"),
                    ],
                ),
                step(
                    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
                    vec![
                        resource("FlowLog", "AWS::EC2::FlowLog", "UPDATE_COMPLETE"),
                        stack_event("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"),
                    ],
                ),
                step("UPDATE_COMPLETE", vec![stack_event("UPDATE_COMPLETE")]),
            ],
        );
    });

    let plan = provision::plan(&replay.deployer, INSTANCE, &stacks, REGION, true)
        .await
        .expect("the plan is made");
    let network = network_plan(&plan);
    assert_eq!(network.action, StackAction::ContinueRollbackAndUpdate);
    assert_eq!(
        network.note.as_deref(),
        Some("an update's rollback failed; the rollback is continued first")
    );
    assert!(
        replay.writes().is_empty(),
        "no change set can be made before the rollback is continued"
    );

    let screen = Screen::default();
    let report = provision::apply(
        &replay.deployer,
        &plan,
        &stacks,
        REGION,
        &screen,
        &Operator::answering(false),
    )
    .await
    .expect("the rollback is continued and the update applied");
    assert_eq!(
        replay.writes(),
        [
            "ContinueUpdateRollback acme-pub-network token=stackwright-continue-stackwright-…",
            UPDATE_NETWORK,
            EXECUTE_NETWORK,
        ]
    );
    assert_eq!(
        report
            .stacks
            .iter()
            .find(|outcome| outcome.stack_name == NETWORK)
            .map(|outcome| outcome.status.as_str()),
        Some("UPDATE_COMPLETE")
    );
    // Only what happens during this run is shown, not the failed update before it.
    insta::assert_snapshot!(screen.text(), @r"
    end acme-pub-bootstrap: unchanged (ok)
    note: acme-pub-network: continuing the failed rollback
      acme-pub-network acme-pub-network AWS::CloudFormation::Stack UPDATE_ROLLBACK_IN_PROGRESS: User Initiated
      acme-pub-network FlowLogRole AWS::IAM::Role UPDATE_COMPLETE
      acme-pub-network acme-pub-network AWS::CloudFormation::Stack UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS
      acme-pub-network acme-pub-network AWS::CloudFormation::Stack UPDATE_ROLLBACK_COMPLETE
    start acme-pub-network: continue rollback, then update (36 resources)
      acme-pub-network acme-pub-network AWS::CloudFormation::Stack UPDATE_IN_PROGRESS: User Initiated
      acme-pub-network FlowLog AWS::EC2::FlowLog UPDATE_IN_PROGRESS
      acme-pub-network FlowLog AWS::EC2::FlowLog UPDATE_COMPLETE
      acme-pub-network acme-pub-network AWS::CloudFormation::Stack UPDATE_COMPLETE_CLEANUP_IN_PROGRESS
      acme-pub-network acme-pub-network AWS::CloudFormation::Stack UPDATE_COMPLETE
    end acme-pub-network: UPDATE_COMPLETE (ok)
    ");
}

// ---------------------------------------------------------------------------------------------
// 5. A teardown blocked by resources that cannot be deleted.

/// Every stack of the instance deployed, the platform's history holding an earlier failed
/// upgrade, and a teardown in which two task security groups are still in use.
fn blocked_teardown(cloud: &mut Cloud, stacks: &[RenderedStack]) {
    for each in stacks {
        cloud.deploy(each, "UPDATE_COMPLETE");
    }
    cloud.history(
        PLATFORM,
        vec![
            stack_event("UPDATE_IN_PROGRESS").because("User Initiated"),
            resource("ServerService", "AWS::ECS::Service", "UPDATE_IN_PROGRESS"),
            resource("ServerService", "AWS::ECS::Service", "UPDATE_FAILED").because(
                "Resource handler returned message: \"Error occurred during operation 'ECS Deployment Circuit Breaker was triggered'.\" (HandlerErrorCode: GeneralServiceException)",
            ),
            stack_event("UPDATE_ROLLBACK_IN_PROGRESS")
                .because("The following resource(s) failed to update: [ServerService]."),
            resource("ServerService", "AWS::ECS::Service", "UPDATE_COMPLETE"),
            stack_event("UPDATE_ROLLBACK_COMPLETE"),
            stack_event("UPDATE_IN_PROGRESS").because("User Initiated"),
            resource("ServerService", "AWS::ECS::Service", "UPDATE_COMPLETE"),
            stack_event("UPDATE_COMPLETE"),
        ],
    );
    let in_use = |group: &str, request: &str| {
        resource(group, "AWS::EC2::SecurityGroup", "DELETE_FAILED").because(&format!(
            "Resource handler returned message: \"resource {} has a dependent object (Service: Ec2, Status Code: 400, Request ID: {request})\" (HandlerErrorCode: InvalidRequest)",
            physical_id(PLATFORM, group, "AWS::EC2::SecurityGroup")
        ))
    };
    cloud.on(
        PLATFORM,
        Trigger::Delete,
        vec![
            step(
                "DELETE_IN_PROGRESS",
                vec![
                    stack_event("DELETE_IN_PROGRESS").because("User Initiated"),
                    resource("ServerService", "AWS::ECS::Service", "DELETE_IN_PROGRESS"),
                    resource("ServerService", "AWS::ECS::Service", "DELETE_COMPLETE"),
                ],
            ),
            step(
                "DELETE_FAILED",
                vec![
                    in_use(
                        "WorkspaceManagerSecurityGroup",
                        "9a1c3e5a-7c9e-4b1d-a3f5-7a9c1e3b5d7f",
                    ),
                    in_use("ServerSecurityGroup", "0b2d4f6b-8d0f-4c2e-b4a6-8b0d2f4c6e8a"),
                    stack_event("DELETE_FAILED").because(
                        "The following resource(s) failed to delete: [ServerSecurityGroup, WorkspaceManagerSecurityGroup]. ",
                    ),
                ],
            )
            .because(
                "The following resource(s) failed to delete: [ServerSecurityGroup, WorkspaceManagerSecurityGroup]. ",
            ),
        ],
    );
    cloud.on(
        PLATFORM,
        Trigger::Delete,
        vec![
            step(
                "DELETE_IN_PROGRESS",
                vec![
                    stack_event("DELETE_IN_PROGRESS").because("User Initiated"),
                    resource(
                        "WorkspaceManagerSecurityGroup",
                        "AWS::EC2::SecurityGroup",
                        "DELETE_SKIPPED",
                    ),
                    resource(
                        "ServerSecurityGroup",
                        "AWS::EC2::SecurityGroup",
                        "DELETE_SKIPPED",
                    ),
                ],
            ),
            gone(),
        ],
    );
    cloud.bucket_listings.insert(
        artifact_bucket(),
        VecDeque::from([vec![
            (
                "templates/acme-pub-platform/3f9a.yaml".to_owned(),
                "Xq1.vB7d2".to_owned(),
            ),
            (
                "templates/acme-pub-platform/8c1e.yaml".to_owned(),
                "Lm4.kT0a9".to_owned(),
            ),
        ]]),
    );
}

const BLOCKED_QUESTION: &str =
    "acme-pub-platform could not be deleted: Resource handler returned message: \"resource sg-";

#[tokio::test]
async fn replayed_a_blocked_deletion_retains_exactly_the_blocking_resources_when_confirmed() {
    // Replays recorded response shapes because moto cannot produce this state: a resource that
    // cannot be deleted makes its DeleteStack fail and the stack vanish, never DELETE_FAILED.
    let stacks = rendered();
    let replay = Replay::new(|cloud| blocked_teardown(cloud, &stacks));
    let inventory = provision::inventory(&replay.deployer, INSTANCE, false)
        .await
        .expect("the inventory is made");
    replay.forget_calls();

    let operator = Operator::answering(true);
    let screen = Screen::default();
    let report = provision::teardown(&replay.deployer, &inventory, &screen, &operator)
        .await
        .expect("the teardown goes through");

    let questions = operator.questions();
    assert_eq!(questions.len(), 1, "{questions:#?}");
    assert!(
        questions[0].starts_with(BLOCKED_QUESTION),
        "{}",
        questions[0]
    );
    insta::assert_snapshot!(questions[0], @r#"acme-pub-platform could not be deleted: Resource handler returned message: "resource sg-00f34f8f2a4325ac8 has a dependent object (Service: Ec2, Status Code: 400, Request ID: 9a1c3e5a-7c9e-4b1d-a3f5-7a9c1e3b5d7f)" (HandlerErrorCode: InvalidRequest). Blocking: ServerSecurityGroup (AWS::EC2::SecurityGroup), WorkspaceManagerSecurityGroup (AWS::EC2::SecurityGroup). Retain them and delete the rest?"#);
    let writes = replay.writes();
    assert_eq!(
        writes[..3],
        [
            "DeleteStack acme-pub-platform retain=[] token=stackwright-delete-stackwright-…",
            "DeleteStack acme-pub-platform retain=[ServerSecurityGroup, WorkspaceManagerSecurityGroup] token=stackwright-delete-stackwright-…",
            // The data stack is kept: its data outlives the instance unless asked otherwise.
            "DeleteStack acme-pub-network retain=[] token=stackwright-delete-stackwright-…",
        ]
    );
    // The bootstrap and identity stacks go together, the bucket emptied before its stack.
    let emptied = format!("s3:DeleteObjects {} (2 versions)", artifact_bucket());
    let mut last = writes[3..].to_vec();
    last.sort();
    assert_eq!(
        last,
        [
            "DeleteStack acme-pub-bootstrap retain=[] token=stackwright-delete-stackwright-…",
            "DeleteStack acme-pub-identity retain=[] token=stackwright-delete-stackwright-…",
            emptied.as_str(),
        ]
    );
    let position = |call: &str| writes.iter().position(|write| write.starts_with(call));
    assert!(position("s3:DeleteObjects") < position("DeleteStack acme-pub-bootstrap"));
    let retained: Vec<(&str, &str)> = report
        .remaining
        .iter()
        .filter(|remaining| remaining.reason == "retained after it blocked the stack's deletion")
        .map(|remaining| (remaining.stack_name.as_str(), remaining.logical_id.as_str()))
        .collect();
    assert_eq!(
        retained,
        [
            (PLATFORM, "ServerSecurityGroup"),
            (PLATFORM, "WorkspaceManagerSecurityGroup")
        ]
    );
    assert!(report.deleted_stacks.contains(&PLATFORM.to_owned()));
    assert!(
        screen
            .lines()
            .contains(&"end acme-pub-platform: DELETE_COMPLETE (ok)".to_owned())
    );
}

#[tokio::test]
async fn replayed_a_blocked_deletion_stops_with_the_blocking_resources_when_declined() {
    // Replays recorded response shapes because moto cannot produce this state (no DELETE_FAILED).
    let stacks = rendered();
    let replay = Replay::new(|cloud| blocked_teardown(cloud, &stacks));
    let inventory = provision::inventory(&replay.deployer, INSTANCE, false)
        .await
        .expect("the inventory is made");
    replay.forget_calls();

    let operator = Operator::answering(false);
    let screen = Screen::default();
    let error = provision::teardown(&replay.deployer, &inventory, &screen, &operator)
        .await
        .expect_err("the teardown stops");

    let ProvisionError::DeleteBlocked {
        stack, resources, ..
    } = &error
    else {
        panic!("not a blocked deletion: {error:?}");
    };
    assert_eq!(stack, PLATFORM);
    assert_eq!(
        resources,
        &["ServerSecurityGroup", "WorkspaceManagerSecurityGroup"]
    );
    assert_eq!(operator.questions().len(), 1);
    assert!(operator.questions()[0].starts_with(BLOCKED_QUESTION));
    insta::assert_snapshot!(format!("{error}\nhint: {}", error.hint().unwrap()), @r#"
    acme-pub-platform could not be deleted: Resource handler returned message: "resource sg-00f34f8f2a4325ac8 has a dependent object (Service: Ec2, Status Code: 400, Request ID: 9a1c3e5a-7c9e-4b1d-a3f5-7a9c1e3b5d7f)" (HandlerErrorCode: InvalidRequest) (blocked by ServerSecurityGroup, WorkspaceManagerSecurityGroup)
    hint: remove what blocks the deletion (or confirm retaining it) and run `stackwright teardown` again
    "#);
    assert_eq!(
        replay.writes(),
        ["DeleteStack acme-pub-platform retain=[] token=stackwright-delete-stackwright-…"],
        "nothing is retained and no other stack is touched"
    );
    assert_eq!(
        screen.lines().last().map(String::as_str),
        Some("end acme-pub-platform: DELETE_FAILED (failed)")
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Events across polls and pages.

#[tokio::test]
async fn replayed_events_are_reported_oldest_first_and_once_across_polls_and_pages() {
    // Replays recorded response shapes because moto cannot produce this: it records stack-level
    // events only, two per operation, so neither polling nor paging is exercised.
    let stacks = bootstrap_and_network();
    // Four polls: the subnets and routes of one zone each, then the end of the update. Every
    // poll publishes more events than a page holds.
    let mut steps: Vec<Step> = ["A", "B", "C"]
        .iter()
        .map(|zone| {
            step(
                "UPDATE_IN_PROGRESS",
                vec![
                    resource(
                        &format!("PrivateSubnet{zone}"),
                        "AWS::EC2::Subnet",
                        "UPDATE_IN_PROGRESS",
                    ),
                    resource(
                        &format!("PrivateSubnet{zone}"),
                        "AWS::EC2::Subnet",
                        "UPDATE_COMPLETE",
                    ),
                    resource(
                        &format!("PrivateRouteTable{zone}"),
                        "AWS::EC2::RouteTable",
                        "UPDATE_IN_PROGRESS",
                    ),
                    resource(
                        &format!("PrivateRouteTable{zone}"),
                        "AWS::EC2::RouteTable",
                        "UPDATE_COMPLETE",
                    ),
                    resource(
                        &format!("PrivateRouteTable{zone}DefaultRoute"),
                        "AWS::EC2::Route",
                        "UPDATE_COMPLETE",
                    ),
                ],
            )
        })
        .collect();
    steps[0].events.insert(
        0,
        stack_event("UPDATE_IN_PROGRESS").because("User Initiated"),
    );
    steps.push(step(
        "UPDATE_COMPLETE",
        vec![
            resource("FlowLog", "AWS::EC2::FlowLog", "UPDATE_COMPLETE"),
            stack_event("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"),
            stack_event("UPDATE_COMPLETE"),
        ],
    ));
    let expected: Vec<String> = steps
        .iter()
        .flat_map(|step| &step.events)
        .map(|event| {
            format!(
                "{} {}",
                event.logical_id.as_deref().unwrap_or(NETWORK),
                event.status
            )
        })
        .collect();
    let replay = Replay::new(|cloud| {
        // Pages of three events, so that every poll reads several pages, newest first.
        cloud.event_page = 3;
        deployed_network(cloud, &stacks, "UPDATE_COMPLETE");
        cloud.stacks.last_mut().unwrap().template = "an older template".to_owned();
        cloud.change_set(
            NETWORK,
            vec![change_set_ready(vec![change(
                "Modify",
                "PrivateSubnetA",
                "AWS::EC2::Subnet",
                Some("False"),
            )])],
        );
        cloud.on(NETWORK, Trigger::Execute, steps);
    });

    let plan = provision::plan(&replay.deployer, INSTANCE, &stacks, REGION, true)
        .await
        .expect("the plan is made");
    assert_eq!(network_plan(&plan).action, StackAction::Update);
    let screen = Screen::default();
    provision::apply(
        &replay.deployer,
        &plan,
        &stacks,
        REGION,
        &screen,
        &Operator::answering(false),
    )
    .await
    .expect("the update goes through");

    let events = screen.events();
    let shown: Vec<String> = events
        .iter()
        .map(|event| format!("{} {}", event.logical_id, event.status))
        .collect();
    assert_eq!(
        shown, expected,
        "every event of the update, oldest first, once"
    );
    assert!(
        events
            .windows(2)
            .all(|pair| pair[0].timestamp < pair[1].timestamp),
        "oldest first"
    );
    // The planned change set is executed as it is: no second one.
    assert_eq!(replay.writes(), [UPDATE_NETWORK, EXECUTE_NETWORK]);
    assert_eq!(
        replay.count("DescribeStacks acme-pub-network"),
        1 + 4,
        "the plan's look, then the update watched over four polls"
    );
    assert!(
        replay.count("DescribeStackEvents acme-pub-network from 3") >= 3,
        "polls read beyond the first page"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. A change set that replaces resources.

#[tokio::test]
async fn replayed_replacements_are_counted_and_marked_in_the_plan() {
    // Replays recorded response shapes because moto cannot produce this: its change sets carry
    // only Action, LogicalResourceId and ResourceType, never Replacement.
    let stacks = bootstrap_and_network();
    let replay = Replay::new(|cloud| {
        // Pages of two changes, as a long change set comes in several.
        cloud.change_page = 2;
        deployed_network(cloud, &stacks, "UPDATE_COMPLETE");
        cloud.stacks.last_mut().unwrap().template = "an older template".to_owned();
        cloud.change_set(
            NETWORK,
            vec![
                change_set_in_progress(),
                change_set_ready(vec![
                    change("Modify", "Vpc", "AWS::EC2::VPC", Some("True")),
                    change("Modify", "PublicSubnetA", "AWS::EC2::Subnet", Some("True")),
                    change("Modify", "PrivateSubnetA", "AWS::EC2::Subnet", Some("True")),
                    change(
                        "Modify",
                        "PrivateRouteTableA",
                        "AWS::EC2::RouteTable",
                        Some("Conditional"),
                    ),
                    change("Modify", "FlowLogRole", "AWS::IAM::Role", Some("False")),
                    change("Add", "PrivateSubnetD", "AWS::EC2::Subnet", None),
                    change("Remove", "PublicSubnetC", "AWS::EC2::Subnet", None),
                ]),
            ],
        );
    });

    let plan = provision::plan(&replay.deployer, INSTANCE, &stacks, REGION, false)
        .await
        .expect("the plan is made");
    assert_eq!(plan.replacements(), 4, "three replaced and one that may be");
    assert_eq!(network_plan(&plan).changes.len(), 7, "every page is read");
    insta::assert_snapshot!(plan.to_string(), @r"
    acme-pub-bootstrap: no change (CREATE_COMPLETE)
    acme-pub-network: update (UPDATE_COMPLETE)
        ~ Vpc                                      AWS::EC2::VPC (replaced)
        ~ PublicSubnetA                            AWS::EC2::Subnet (replaced)
        ~ PrivateSubnetA                           AWS::EC2::Subnet (replaced)
        ~ PrivateRouteTableA                       AWS::EC2::RouteTable (may be replaced)
        ~ FlowLogRole                              AWS::IAM::Role
        + PrivateSubnetD                           AWS::EC2::Subnet
        - PublicSubnetC                            AWS::EC2::Subnet
    Plan: 1 to add, 5 to modify, 1 to remove, 4 replaced, across 1 of 2 stacks.
    ");
    assert_eq!(
        replay.writes(),
        [UPDATE_NETWORK, "DeleteChangeSet acme-pub-network"],
        "a plan that is only shown leaves no change set behind"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. A change set without changes.

const NO_CHANGES: &str = "The submitted information didn't contain changes. Submit different information to create a change set.";

#[tokio::test]
async fn replayed_a_change_set_without_changes_is_no_change_and_deleted() {
    // Replays recorded response shapes because moto cannot produce this: its empty change sets
    // end CREATE_COMPLETE with no changes, where CloudFormation marks them FAILED.
    let stacks = bootstrap_and_network();
    let replay = Replay::new(|cloud| {
        deployed_network(cloud, &stacks, "UPDATE_COMPLETE");
        // Deployed by an older installer whose template differed only in layout.
        let template = cloud.stacks.last().unwrap().template.replace('\n', "\n\n");
        cloud.stacks.last_mut().unwrap().template = template;
        cloud.change_set(
            NETWORK,
            vec![change_set_in_progress(), change_set_failed(NO_CHANGES)],
        );
        cloud.change_set(
            NETWORK,
            vec![change_set_in_progress(), change_set_failed(NO_CHANGES)],
        );
    });

    let plan = provision::plan(&replay.deployer, INSTANCE, &stacks, REGION, true)
        .await
        .expect("the plan is made");
    let network = network_plan(&plan);
    assert_eq!(network.action, StackAction::NoChange);
    assert_eq!(network.change_set_id, None);
    assert!(!plan.has_changes());
    assert_eq!(
        replay.writes(),
        [UPDATE_NETWORK, "DeleteChangeSet acme-pub-network"]
    );

    // An install that makes its own change set (the plan it was given kept none) finds the same.
    replay.forget_calls();
    let mut stale = plan.clone();
    for planned in &mut stale.stacks {
        if planned.stack_name == NETWORK {
            planned.action = StackAction::Update;
        }
    }
    let screen = Screen::default();
    let report = provision::apply(
        &replay.deployer,
        &stale,
        &stacks,
        REGION,
        &screen,
        &Operator::answering(false),
    )
    .await
    .expect("nothing to do is not an error");
    assert_eq!(
        replay.writes(),
        [UPDATE_NETWORK, "DeleteChangeSet acme-pub-network"],
        "the change set is deleted, never executed"
    );
    let network = report
        .stacks
        .iter()
        .find(|outcome| outcome.stack_name == NETWORK)
        .expect("the network's outcome");
    assert_eq!(network.action, StackAction::NoChange);
    assert_eq!(network.status, "UPDATE_COMPLETE");
    insta::assert_snapshot!(screen.text(), @r"
    end acme-pub-bootstrap: unchanged (ok)
    end acme-pub-network: unchanged (ok)
    ");
}
