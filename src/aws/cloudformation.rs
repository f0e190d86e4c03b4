//! [`StackDeployer`] on CloudFormation, with S3 for large templates and bucket emptying and
//! DynamoDB for tables retained by a deleted stack.

use std::collections::BTreeMap;

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::types::{Capability, ChangeSetType, ExecutionStatus, Parameter, Tag};

use super::{Aws, sdk_error, timestamp};
use crate::provision::{
    ChangeAction, ChangeSetKind, ChangeSetRequest, ChangeSetStatus, DeployError, ResourceChange,
    StackDeployer, StackEvent, StackResource, StackState, TemplateSource,
};

/// Pages of events read when looking back for the last one seen.
const MAX_EVENT_PAGES: usize = 10;

#[derive(Debug, Clone)]
pub struct CloudFormation {
    client: Client,
    s3: aws_sdk_s3::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    region: String,
}

impl CloudFormation {
    pub fn new(aws: &Aws) -> Self {
        Self::from_clients(
            Client::new(&aws.config),
            aws.s3(),
            aws_sdk_dynamodb::Client::new(&aws.config),
            &aws.region,
        )
    }

    /// An adapter over given clients: tests pass clients that replay recorded responses.
    pub fn from_clients(
        client: Client,
        s3: aws_sdk_s3::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        region: &str,
    ) -> Self {
        CloudFormation {
            client,
            s3,
            dynamodb,
            region: region.to_owned(),
        }
    }

    /// The URL CloudFormation reads an uploaded template from (path style, which both AWS and
    /// the local emulator resolve).
    fn template_url(&self, bucket: &str, key: &str) -> String {
        if self.region == "us-east-1" {
            format!("https://s3.amazonaws.com/{bucket}/{key}")
        } else {
            format!("https://s3.{}.amazonaws.com/{bucket}/{key}", self.region)
        }
    }
}

fn is_missing_stack(error: &DeployError) -> bool {
    matches!(error, DeployError::Aws { code: Some(code), message, .. } if code == "ValidationError" && message.contains("does not exist"))
}

fn map(pairs: impl Iterator<Item = (Option<String>, Option<String>)>) -> BTreeMap<String, String> {
    pairs
        .filter_map(|(key, value)| Some((key?, value.unwrap_or_default())))
        .collect()
}

impl StackDeployer for CloudFormation {
    async fn describe_stack(&self, name: &str) -> Result<Option<StackState>, DeployError> {
        let result = self.client.describe_stacks().stack_name(name).send().await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                let error = sdk_error("cloudformation:DescribeStacks", error);
                return if is_missing_stack(&error) {
                    Ok(None)
                } else {
                    Err(error)
                };
            }
        };
        let Some(stack) = output.stacks().first() else {
            return Ok(None);
        };
        let status = stack
            .stack_status()
            .map(|status| status.as_str().to_owned())
            .unwrap_or_default();
        if status == "DELETE_COMPLETE" {
            return Ok(None);
        }
        Ok(Some(StackState {
            name: stack.stack_name().unwrap_or(name).to_owned(),
            id: stack.stack_id().unwrap_or_default().to_owned(),
            status,
            status_reason: stack.stack_status_reason().map(str::to_owned),
            last_updated: stack
                .last_updated_time()
                .or(stack.creation_time())
                .map(timestamp),
            outputs: map(stack.outputs().iter().map(|output| {
                (
                    output.output_key().map(str::to_owned),
                    output.output_value().map(str::to_owned),
                )
            })),
            parameters: map(stack.parameters().iter().map(|parameter| {
                (
                    parameter.parameter_key().map(str::to_owned),
                    parameter.parameter_value().map(str::to_owned),
                )
            })),
            tags: map(stack
                .tags()
                .iter()
                .map(|tag| (tag.key().map(str::to_owned), tag.value().map(str::to_owned)))),
        }))
    }

    async fn deployed_template(&self, name: &str) -> Result<String, DeployError> {
        let output = self
            .client
            .get_template()
            .stack_name(name)
            .send()
            .await
            .map_err(|error| sdk_error("cloudformation:GetTemplate", error))?;
        Ok(output.template_body().unwrap_or_default().to_owned())
    }

    async fn create_change_set(&self, request: &ChangeSetRequest) -> Result<String, DeployError> {
        let mut call = self
            .client
            .create_change_set()
            .stack_name(&request.stack_name)
            .change_set_name(&request.change_set_name)
            .change_set_type(match request.kind {
                ChangeSetKind::Create => ChangeSetType::Create,
                ChangeSetKind::Update => ChangeSetType::Update,
            })
            .capabilities(Capability::CapabilityIam)
            .capabilities(Capability::CapabilityNamedIam)
            // The change set's name is unique, so a retried call cannot create a second one.
            .client_token(&request.change_set_name);
        call = match &request.template {
            TemplateSource::Body(body) => call.template_body(body),
            TemplateSource::Url(url) => call.template_url(url),
        };
        for (key, value) in &request.parameters {
            call = call.parameters(
                Parameter::builder()
                    .parameter_key(key)
                    .parameter_value(value)
                    .build(),
            );
        }
        for (key, value) in &request.tags {
            call = call.tags(Tag::builder().key(key).value(value).build());
        }
        let output = call
            .send()
            .await
            .map_err(|error| sdk_error("cloudformation:CreateChangeSet", error))?;
        Ok(output.id().unwrap_or(&request.change_set_name).to_owned())
    }

    async fn change_set_status(&self, id: &str) -> Result<ChangeSetStatus, DeployError> {
        let mut changes = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let output = self
                .client
                .describe_change_set()
                .change_set_name(id)
                .set_next_token(next_token.clone())
                .send()
                .await
                .map_err(|error| sdk_error("cloudformation:DescribeChangeSet", error))?;
            let status = output
                .status()
                .map(|status| status.as_str())
                .unwrap_or_default();
            match status {
                "CREATE_PENDING" | "CREATE_IN_PROGRESS" => return Ok(ChangeSetStatus::Pending),
                "FAILED" => {
                    return Ok(ChangeSetStatus::Failed(
                        output
                            .status_reason()
                            .unwrap_or("no reason given")
                            .to_owned(),
                    ));
                }
                _ => {}
            }
            if output.execution_status() == Some(&ExecutionStatus::Unavailable)
                && output.changes().is_empty()
            {
                return Ok(ChangeSetStatus::Empty);
            }
            changes.extend(output.changes().iter().filter_map(|change| {
                let resource = change.resource_change()?;
                Some(ResourceChange {
                    action: match resource.action()?.as_str() {
                        "Add" => ChangeAction::Add,
                        "Modify" => ChangeAction::Modify,
                        "Remove" => ChangeAction::Remove,
                        "Import" => ChangeAction::Import,
                        _ => ChangeAction::Dynamic,
                    },
                    logical_id: resource
                        .logical_resource_id()
                        .unwrap_or_default()
                        .to_owned(),
                    resource_type: resource.resource_type().unwrap_or_default().to_owned(),
                    replacement: resource
                        .replacement()
                        .map(|replacement| replacement.as_str().to_owned()),
                })
            }));
            next_token = output.next_token().map(str::to_owned);
            if next_token.is_none() {
                break;
            }
        }
        Ok(if changes.is_empty() {
            ChangeSetStatus::Empty
        } else {
            ChangeSetStatus::Ready(changes)
        })
    }

    async fn execute_change_set(&self, id: &str, client_token: &str) -> Result<(), DeployError> {
        self.client
            .execute_change_set()
            .change_set_name(id)
            .client_request_token(client_token)
            .send()
            .await
            .map_err(|error| sdk_error("cloudformation:ExecuteChangeSet", error))?;
        Ok(())
    }

    async fn delete_change_set(&self, id: &str) -> Result<(), DeployError> {
        self.client
            .delete_change_set()
            .change_set_name(id)
            .send()
            .await
            .map_err(|error| sdk_error("cloudformation:DeleteChangeSet", error))?;
        Ok(())
    }

    async fn stack_events(
        &self,
        stack: &str,
        since_event_id: Option<&str>,
    ) -> Result<Vec<StackEvent>, DeployError> {
        let mut events = Vec::new();
        let mut next_token: Option<String> = None;
        for _ in 0..MAX_EVENT_PAGES {
            let output = match self
                .client
                .describe_stack_events()
                .stack_name(stack)
                .set_next_token(next_token.clone())
                .send()
                .await
            {
                Ok(output) => output,
                Err(error) => {
                    let error = sdk_error("cloudformation:DescribeStackEvents", error);
                    return if is_missing_stack(&error) {
                        Ok(events)
                    } else {
                        Err(error)
                    };
                }
            };
            for event in output.stack_events() {
                let id = event.event_id().unwrap_or_default();
                if Some(id) == since_event_id {
                    return Ok(events);
                }
                events.push(StackEvent {
                    id: id.to_owned(),
                    stack_name: event.stack_name().unwrap_or(stack).to_owned(),
                    timestamp: event
                        .timestamp()
                        .map(timestamp)
                        .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                    logical_id: event.logical_resource_id().unwrap_or_default().to_owned(),
                    physical_id: event
                        .physical_resource_id()
                        .filter(|id| !id.is_empty())
                        .map(str::to_owned),
                    resource_type: event.resource_type().unwrap_or_default().to_owned(),
                    status: event
                        .resource_status()
                        .map(|status| status.as_str().to_owned())
                        .unwrap_or_default(),
                    reason: event.resource_status_reason().map(str::to_owned),
                });
            }
            next_token = output.next_token().map(str::to_owned);
            if since_event_id.is_none() || next_token.is_none() {
                break;
            }
        }
        Ok(events)
    }

    async fn stack_resources(&self, stack: &str) -> Result<Vec<StackResource>, DeployError> {
        let mut resources = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let output = self
                .client
                .list_stack_resources()
                .stack_name(stack)
                .set_next_token(next_token.clone())
                .send()
                .await
                .map_err(|error| sdk_error("cloudformation:ListStackResources", error))?;
            resources.extend(output.stack_resource_summaries().iter().map(|resource| {
                StackResource {
                    logical_id: resource
                        .logical_resource_id()
                        .unwrap_or_default()
                        .to_owned(),
                    physical_id: resource
                        .physical_resource_id()
                        .filter(|id| !id.is_empty())
                        .map(str::to_owned),
                    resource_type: resource.resource_type().unwrap_or_default().to_owned(),
                    status: resource
                        .resource_status()
                        .map(|status| status.as_str().to_owned())
                        .unwrap_or_default(),
                }
            }));
            next_token = output.next_token().map(str::to_owned);
            if next_token.is_none() {
                return Ok(resources);
            }
        }
    }

    async fn delete_stack(
        &self,
        name: &str,
        retain: &[String],
        client_token: &str,
    ) -> Result<(), DeployError> {
        self.client
            .delete_stack()
            .stack_name(name)
            .set_retain_resources((!retain.is_empty()).then(|| retain.to_vec()))
            .client_request_token(client_token)
            .send()
            .await
            .map_err(|error| sdk_error("cloudformation:DeleteStack", error))?;
        Ok(())
    }

    async fn continue_update_rollback(
        &self,
        name: &str,
        client_token: &str,
    ) -> Result<(), DeployError> {
        self.client
            .continue_update_rollback()
            .stack_name(name)
            .client_request_token(client_token)
            .send()
            .await
            .map_err(|error| sdk_error("cloudformation:ContinueUpdateRollback", error))?;
        Ok(())
    }

    async fn upload_template(
        &self,
        bucket: &str,
        key: &str,
        body: &str,
    ) -> Result<String, DeployError> {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/x-yaml")
            .body(aws_sdk_s3::primitives::ByteStream::from(
                body.as_bytes().to_vec(),
            ))
            .send()
            .await
            .map_err(|error| sdk_error("s3:PutObject", error))?;
        Ok(self.template_url(bucket, key))
    }

    async fn empty_bucket(&self, bucket: &str) -> Result<u64, DeployError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let mut removed = 0;
        loop {
            let listing = match self
                .s3
                .list_object_versions()
                .bucket(bucket)
                .max_keys(1000)
                .send()
                .await
            {
                Ok(listing) => listing,
                Err(error) => {
                    let error = sdk_error("s3:ListObjectVersions", error);
                    return if error.code() == Some("NoSuchBucket") {
                        Ok(removed)
                    } else {
                        Err(error)
                    };
                }
            };
            let objects: Vec<ObjectIdentifier> = listing
                .versions()
                .iter()
                .map(|version| (version.key(), version.version_id()))
                .chain(
                    listing
                        .delete_markers()
                        .iter()
                        .map(|marker| (marker.key(), marker.version_id())),
                )
                .filter_map(|(key, version)| {
                    ObjectIdentifier::builder()
                        .key(key?)
                        .set_version_id(version.map(str::to_owned))
                        .build()
                        .ok()
                })
                .collect();
            if objects.is_empty() {
                return Ok(removed);
            }
            removed += objects.len() as u64;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|error| DeployError::Aws {
                    operation: "s3:DeleteObjects",
                    code: None,
                    message: error.to_string(),
                })?;
            self.s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|error| sdk_error("s3:DeleteObjects", error))?;
        }
    }

    async fn delete_retained(
        &self,
        resource_type: &str,
        physical_id: &str,
    ) -> Result<(), DeployError> {
        match resource_type {
            "AWS::S3::Bucket" => {
                self.empty_bucket(physical_id).await?;
                match self.s3.delete_bucket().bucket(physical_id).send().await {
                    Ok(_) => Ok(()),
                    Err(error) => {
                        let error = sdk_error("s3:DeleteBucket", error);
                        if error.code() == Some("NoSuchBucket") {
                            Ok(())
                        } else {
                            Err(error)
                        }
                    }
                }
            }
            "AWS::DynamoDB::Table" => {
                let gone = |error: &DeployError| error.code() == Some("ResourceNotFoundException");
                if let Err(error) = self
                    .dynamodb
                    .update_table()
                    .table_name(physical_id)
                    .deletion_protection_enabled(false)
                    .send()
                    .await
                {
                    let error = sdk_error("dynamodb:UpdateTable", error);
                    if gone(&error) {
                        return Ok(());
                    }
                    return Err(error);
                }
                match self
                    .dynamodb
                    .delete_table()
                    .table_name(physical_id)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(error) => {
                        let error = sdk_error("dynamodb:DeleteTable", error);
                        if gone(&error) { Ok(()) } else { Err(error) }
                    }
                }
            }
            // Other retained resources hold no data and are deleted with their stack.
            _ => Ok(()),
        }
    }
}
