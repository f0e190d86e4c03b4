//! [`StateStore`] on a DynamoDB table the installer creates and owns: `stackwright-<instance>`,
//! string keys `pk` (the instance) and `sk` (the document), on-demand, encrypted with the
//! AWS-managed KMS key, point-in-time recovery on, deletion protection on. It is not part of
//! any stack, because the lock it holds must exist before the first stack is created.
//!
//! The lock is one item: acquired by a conditional update that also increments its fencing
//! token, renewed and released by updates conditional on the holder's lock ID. Every other
//! write is a transaction whose first element checks that the writer still holds the lock
//! with the same token and an unexpired lease.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement,
    KeyType, PointInTimeRecoverySpecification, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, SseSpecification, SseType,
    TableStatus, Tag, TransactWriteItem,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Aws, sdk_error};
use crate::provision::{Backoff, DeployError};
use crate::state::{
    HistoryEntry, Holder, Installation, ItemKey, Journal, Lease, SCHEMA_VERSION, StateError,
    StateStore, StateWrite, StoredItem, decode, encode,
};

/// What the lock item's body holds; the lock ID, the token and the expiry are attributes of
/// their own, because conditions test them.
#[derive(Debug, Serialize, Deserialize)]
struct LockBody {
    #[serde(flatten)]
    holder: Holder,
    created_at: Timestamp,
}

/// Attribute names, aliased in every expression so that none can collide with a reserved word.
const NAMES: [(&str, &str); 6] = [
    ("#sk", "sk"),
    ("#lock_id", "lock_id"),
    ("#token", "fencing_token"),
    ("#expires", "expires_at"),
    ("#version", "schema_version"),
    ("#body", "body"),
];

#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
    instance: String,
}

impl DynamoStateStore {
    pub fn new(aws: &Aws, instance: &str) -> Self {
        Self::from_client(Client::new(&aws.config), instance)
    }

    pub fn from_client(client: Client, instance: &str) -> Self {
        DynamoStateStore {
            client,
            table: Self::table_name(instance),
            instance: instance.to_owned(),
        }
    }

    /// The state table of an instance.
    pub fn table_name(instance: &str) -> String {
        crate::stacks::state_table_name(instance)
    }

    fn key(&self, key: &ItemKey) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(self.instance.clone())),
            ("sk".to_owned(), AttributeValue::S(key.sort_key())),
        ])
    }

    fn store_error(&self, source: DeployError) -> StateError {
        StateError::Store {
            table: self.table.clone(),
            error: source,
        }
    }

    fn stored(&self, item: &HashMap<String, AttributeValue>) -> StoredItem {
        let sort_key = item
            .get("sk")
            .and_then(|value| value.as_s().ok())
            .cloned()
            .unwrap_or_default();
        StoredItem {
            key: format!("{}/{sort_key}", self.instance),
            schema_version: item.get("schema_version").map(|value| match value {
                AttributeValue::N(number) => number.clone(),
                other => format!("{other:?}"),
            }),
            body: item
                .get("body")
                .and_then(|value| value.as_s().ok())
                .cloned(),
        }
    }

    /// The lease a lock item describes, or `None` when it is free.
    fn lease(&self, item: &HashMap<String, AttributeValue>) -> Result<Option<Lease>, StateError> {
        let stored = self.stored(item);
        let Some(lock_id) = item.get("lock_id").and_then(|value| value.as_s().ok()) else {
            // A free lock still must be of a known version: it is about to be written.
            if stored
                .schema_version
                .as_deref()
                .is_some_and(|version| version != SCHEMA_VERSION.to_string())
            {
                return Err(StateError::UnknownSchemaVersion {
                    key: stored.key,
                    found: stored.schema_version.unwrap_or_default(),
                });
            }
            return Ok(None);
        };
        let body: LockBody = decode(&stored)?;
        let number = |name: &str| -> Result<i64, StateError> {
            item.get(name)
                .and_then(|value| value.as_n().ok())
                .and_then(|number| number.parse().ok())
                .ok_or_else(|| StateError::Malformed {
                    key: stored.key.clone(),
                    reason: format!("it has no numeric {name}"),
                })
        };
        let expires_at = Timestamp::from_millisecond(number("expires_at")?).map_err(|error| {
            StateError::Malformed {
                key: stored.key.clone(),
                reason: format!("expires_at: {error}"),
            }
        })?;
        Ok(Some(Lease {
            lock_id: lock_id.clone(),
            fencing_token: number("fencing_token")?.max(0) as u64,
            holder: body.holder,
            created_at: body.created_at,
            expires_at,
        }))
    }

    async fn get(
        &self,
        key: &ItemKey,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StateError> {
        match self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(key)))
            .consistent_read(true)
            .send()
            .await
        {
            Ok(output) => Ok(output.item),
            Err(error) if is_missing_table(&error) => Ok(None),
            Err(error) => Err(self.store_error(sdk_error("dynamodb:GetItem", error))),
        }
    }

    async fn document<T: serde::de::DeserializeOwned>(
        &self,
        key: &ItemKey,
    ) -> Result<Option<T>, StateError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(item) => decode(&self.stored(&item)).map(Some),
        }
    }

    fn put(&self, key: &ItemKey, body: String) -> Result<TransactWriteItem, StateError> {
        let mut item = self.key(key);
        item.insert(
            "schema_version".into(),
            AttributeValue::N(SCHEMA_VERSION.to_string()),
        );
        item.insert("body".into(), AttributeValue::S(body));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            // Never over an item of another version.
            .condition_expression("attribute_not_exists(#sk) OR #version = :version")
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_names("#version", "schema_version")
            .expression_attribute_values(":version", AttributeValue::N(SCHEMA_VERSION.to_string()))
            .build()
            .map_err(|error| self.build_error(error))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn build_error(&self, error: impl std::fmt::Display) -> StateError {
        self.store_error(DeployError::Aws {
            operation: "dynamodb:TransactWriteItems",
            code: None,
            message: error.to_string(),
        })
    }

    /// The reason a fenced transaction's write was refused: the item it would have replaced.
    async fn refused_write(&self, key: &ItemKey) -> StateError {
        match self.get(key).await {
            Ok(Some(item)) => match decode::<serde_json::Value>(&self.stored(&item)) {
                Err(error) => error,
                Ok(_) => StateError::Malformed {
                    key: format!("{}/{}", self.instance, key.sort_key()),
                    reason: "it changed while it was being written".into(),
                },
            },
            Ok(None) => StateError::Malformed {
                key: format!("{}/{}", self.instance, key.sort_key()),
                reason: "it changed while it was being written".into(),
            },
            Err(error) => error,
        }
    }
}

fn is_missing_table<E: ProvideErrorMetadata>(error: &E) -> bool {
    error.code() == Some("ResourceNotFoundException")
}

fn millis(time: Timestamp) -> AttributeValue {
    AttributeValue::N(time.as_millisecond().to_string())
}

impl StateStore for DynamoStateStore {
    fn location(&self) -> &str {
        &self.table
    }

    async fn prepare(&self) -> Result<(), StateError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let build = |error: aws_sdk_dynamodb::error::BuildError| {
            self.store_error(DeployError::Aws {
                operation: "dynamodb:CreateTable",
                code: None,
                message: error.to_string(),
            })
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attribute("pk").map_err(build)?)
            .attribute_definitions(attribute("sk").map_err(build)?)
            .key_schema(key("pk", KeyType::Hash).map_err(build)?)
            .key_schema(key("sk", KeyType::Range).map_err(build)?)
            .billing_mode(BillingMode::PayPerRequest)
            .sse_specification(
                SseSpecification::builder()
                    .enabled(true)
                    .sse_type(SseType::Kms)
                    .build(),
            )
            .deletion_protection_enabled(true)
            .tags(
                Tag::builder()
                    .key(crate::provision::INSTANCE_TAG)
                    .value(&self.instance)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(table = %self.table, "state table created"),
            // Another run created it first, or an earlier one did: the same table for us.
            Err(error) if error.code() == Some("ResourceInUseException") => {}
            Err(error) => return Err(self.store_error(sdk_error("dynamodb:CreateTable", error))),
        }
        let mut backoff = Backoff::new();
        let started = std::time::Instant::now();
        loop {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|error| self.store_error(sdk_error("dynamodb:DescribeTable", error)))?;
            let status = described.table().and_then(|table| table.table_status());
            if status == Some(&TableStatus::Active) {
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                return Err(self.store_error(DeployError::Aws {
                    operation: "dynamodb:DescribeTable",
                    code: None,
                    message: format!("the table is still {status:?} after 5 minutes"),
                }));
            }
            backoff.wait().await;
        }
        let backups = self
            .client
            .describe_continuous_backups()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|error| {
                self.store_error(sdk_error("dynamodb:DescribeContinuousBackups", error))
            })?;
        let recovery_on = backups
            .continuous_backups_description()
            .and_then(|description| description.point_in_time_recovery_description())
            .and_then(|description| description.point_in_time_recovery_status())
            .is_some_and(|status| status.as_str() == "ENABLED");
        if !recovery_on {
            self.client
                .update_continuous_backups()
                .table_name(&self.table)
                .point_in_time_recovery_specification(
                    PointInTimeRecoverySpecification::builder()
                        .point_in_time_recovery_enabled(true)
                        .build()
                        .map_err(build)?,
                )
                .send()
                .await
                .map_err(|error| {
                    self.store_error(sdk_error("dynamodb:UpdateContinuousBackups", error))
                })?;
        }
        Ok(())
    }

    async fn exists(&self) -> Result<bool, StateError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_missing_table(&error) => Ok(false),
            Err(error) => Err(self.store_error(sdk_error("dynamodb:DescribeTable", error))),
        }
    }

    async fn destroy(&self) -> Result<(), StateError> {
        match self
            .client
            .update_table()
            .table_name(&self.table)
            .deletion_protection_enabled(false)
            .send()
            .await
        {
            Ok(_) => {}
            Err(error) if is_missing_table(&error) => return Ok(()),
            Err(error) => return Err(self.store_error(sdk_error("dynamodb:UpdateTable", error))),
        }
        match self
            .client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_missing_table(&error) => Ok(()),
            Err(error) => Err(self.store_error(sdk_error("dynamodb:DeleteTable", error))),
        }
    }

    async fn acquire(
        &self,
        holder: &Holder,
        lock_id: &str,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Lease, StateError> {
        let body = encode(&LockBody {
            holder: holder.clone(),
            created_at: now,
        });
        let expires_at = crate::state::later(now, duration);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&ItemKey::Lock)))
            .condition_expression(
                "(attribute_not_exists(#lock_id) OR #expires < :now) AND (attribute_not_exists(#version) OR #version = :version)",
            )
            .update_expression(
                "SET #token = if_not_exists(#token, :zero) + :one, #lock_id = :id, #expires = :expires, #version = :version, #body = :body",
            )
            .set_expression_attribute_names(Some(names(&["#lock_id", "#expires", "#version", "#token", "#body"])))
            .expression_attribute_values(":now", millis(now))
            .expression_attribute_values(":version", AttributeValue::N(SCHEMA_VERSION.to_string()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":id", AttributeValue::S(lock_id.to_owned()))
            .expression_attribute_values(":expires", millis(expires_at))
            .expression_attribute_values(":body", AttributeValue::S(body))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => {
                let attributes = output.attributes.unwrap_or_default();
                self.lease(&attributes)?
                    .ok_or_else(|| StateError::Malformed {
                        key: format!("{}/lock", self.instance),
                        reason: "the lock was taken but reads back as free".into(),
                    })
            }
            Err(error) => {
                let old = error
                    .as_service_error()
                    .and_then(|error| match error {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(failed) => Some(failed.item.clone()),
                        _ => None,
                    });
                let Some(old) = old else {
                    return Err(self.store_error(sdk_error("dynamodb:UpdateItem", error)));
                };
                // The item as it was, from the error or, where an endpoint leaves it out, read.
                let old = match old {
                    Some(item) => Some(item),
                    None => self.get(&ItemKey::Lock).await?,
                };
                match old.map(|item| self.lease(&item)).transpose()?.flatten() {
                    Some(holder) => Err(StateError::LockHeld {
                        instance: self.instance.clone(),
                        holder: Box::new(holder),
                    }),
                    // Released between the attempt and the read: try again.
                    None => Box::pin(self.acquire(holder, lock_id, now, duration)).await,
                }
            }
        }
    }

    async fn renew(
        &self,
        lease: &Lease,
        now: Timestamp,
        duration: Duration,
    ) -> Result<Timestamp, StateError> {
        let until = crate::state::later(now, duration);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&ItemKey::Lock)))
            .condition_expression("#lock_id = :id AND #token = :token")
            .update_expression("SET #expires = :expires")
            .set_expression_attribute_names(Some(names(&["#lock_id", "#token", "#expires"])))
            .expression_attribute_values(":id", AttributeValue::S(lease.lock_id.clone()))
            .expression_attribute_values(
                ":token",
                AttributeValue::N(lease.fencing_token.to_string()),
            )
            .expression_attribute_values(":expires", millis(until))
            .send()
            .await;
        match result {
            Ok(_) => Ok(until),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|error| error.is_conditional_check_failed_exception()) =>
            {
                Err(StateError::LeaseLost {
                    instance: self.instance.clone(),
                })
            }
            Err(error) => Err(self.store_error(sdk_error("dynamodb:UpdateItem", error))),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), StateError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&ItemKey::Lock)))
            .condition_expression("#lock_id = :id")
            // The token stays, so that the next holder's is larger.
            .update_expression("REMOVE #lock_id, #expires, #body")
            .set_expression_attribute_names(Some(names(&["#lock_id", "#expires", "#body"])))
            .expression_attribute_values(":id", AttributeValue::S(lease.lock_id.clone()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|error| error.is_conditional_check_failed_exception()) =>
            {
                Err(StateError::LeaseLost {
                    instance: self.instance.clone(),
                })
            }
            Err(error) if is_missing_table(&error) => Ok(()),
            Err(error) => Err(self.store_error(sdk_error("dynamodb:UpdateItem", error))),
        }
    }

    async fn lock(&self) -> Result<Option<Lease>, StateError> {
        match self.get(&ItemKey::Lock).await? {
            None => Ok(None),
            Some(item) => self.lease(&item),
        }
    }

    async fn break_lock(&self, lock_id: &str) -> Result<(), StateError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&ItemKey::Lock)))
            .condition_expression("#lock_id = :id")
            .update_expression("REMOVE #lock_id, #expires, #body")
            .set_expression_attribute_names(Some(names(&["#lock_id", "#expires", "#body"])))
            .expression_attribute_values(":id", AttributeValue::S(lock_id.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|error| error.is_conditional_check_failed_exception()) =>
            {
                Err(StateError::LockIdMismatch {
                    instance: self.instance.clone(),
                    given: lock_id.to_owned(),
                    holder: self.lock().await?.map(Box::new),
                })
            }
            Err(error) if is_missing_table(&error) => Err(StateError::LockIdMismatch {
                instance: self.instance.clone(),
                given: lock_id.to_owned(),
                holder: None,
            }),
            Err(error) => Err(self.store_error(sdk_error("dynamodb:UpdateItem", error))),
        }
    }

    async fn installation(&self) -> Result<Option<Installation>, StateError> {
        self.document(&ItemKey::Installation).await
    }

    async fn journal(&self) -> Result<Option<Journal>, StateError> {
        self.document(&ItemKey::Journal).await
    }

    async fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        let mut entries = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let result = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#sk", "sk")
                .expression_attribute_values(":pk", AttributeValue::S(self.instance.clone()))
                .expression_attribute_values(
                    ":prefix",
                    AttributeValue::S(ItemKey::HISTORY_PREFIX.into()),
                )
                .scan_index_forward(false)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await;
            let output = match result {
                Ok(output) => output,
                Err(error) if is_missing_table(&error) => return Ok(entries),
                Err(error) => return Err(self.store_error(sdk_error("dynamodb:Query", error))),
            };
            for item in output.items() {
                entries.push(decode(&self.stored(item))?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(entries),
            }
        }
    }

    async fn write(
        &self,
        lease: &Lease,
        now: Timestamp,
        writes: Vec<StateWrite>,
    ) -> Result<(), StateError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(self.key(&ItemKey::Lock)))
            .condition_expression("#lock_id = :id AND #token = :token AND #expires > :now")
            .set_expression_attribute_names(Some(names(&["#lock_id", "#token", "#expires"])))
            .expression_attribute_values(":id", AttributeValue::S(lease.lock_id.clone()))
            .expression_attribute_values(
                ":token",
                AttributeValue::N(lease.fencing_token.to_string()),
            )
            .expression_attribute_values(":now", millis(now))
            .build()
            .map_err(|error| self.build_error(error))?;
        let mut items = vec![TransactWriteItem::builder().condition_check(check).build()];
        let mut keys = vec![ItemKey::Lock];
        for write in writes {
            let (key, item) = match write {
                StateWrite::Installation(installation) => {
                    let key = ItemKey::Installation;
                    let item = self.put(&key, encode(&installation))?;
                    (key, item)
                }
                StateWrite::Journal(journal) => {
                    let key = ItemKey::Journal;
                    let item = self.put(&key, encode(&journal))?;
                    (key, item)
                }
                StateWrite::History(entry) => {
                    let key = ItemKey::History {
                        started_at: entry.started_at,
                        operation_id: entry.operation_id.clone(),
                    };
                    let item = self.put(&key, encode(&entry))?;
                    (key, item)
                }
                StateWrite::ClearJournal => {
                    let key = ItemKey::Journal;
                    let delete = Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(self.key(&key)))
                        .condition_expression("attribute_not_exists(#sk) OR #version = :version")
                        .expression_attribute_names("#sk", "sk")
                        .expression_attribute_names("#version", "schema_version")
                        .expression_attribute_values(
                            ":version",
                            AttributeValue::N(SCHEMA_VERSION.to_string()),
                        )
                        .build()
                        .map_err(|error| self.build_error(error))?;
                    (key, TransactWriteItem::builder().delete(delete).build())
                }
            };
            keys.push(key);
            items.push(item);
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let reasons: Option<Vec<Option<String>>> = error
            .as_service_error()
            .and_then(|error| match error {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(canceled) => Some(canceled),
                _ => None,
            })
            .map(|canceled| {
                canceled
                    .cancellation_reasons()
                    .iter()
                    .map(|reason| reason.code().map(str::to_owned))
                    .collect()
            });
        let Some(reasons) = reasons else {
            return Err(self.store_error(sdk_error("dynamodb:TransactWriteItems", error)));
        };
        let failed = |index: usize| {
            reasons
                .get(index)
                .and_then(Option::as_deref)
                .is_some_and(|code| code == "ConditionalCheckFailed")
        };
        if failed(0) {
            return Err(StateError::LeaseLost {
                instance: self.instance.clone(),
            });
        }
        for (index, key) in keys.iter().enumerate().skip(1) {
            if failed(index) {
                return Err(self.refused_write(key).await);
            }
        }
        Err(self.store_error(sdk_error("dynamodb:TransactWriteItems", error)))
    }
}

fn names(wanted: &[&str]) -> HashMap<String, String> {
    NAMES
        .iter()
        .filter(|(alias, _)| wanted.contains(alias))
        .map(|(alias, name)| ((*alias).to_owned(), (*name).to_owned()))
        .collect()
}
