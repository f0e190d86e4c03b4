//! Teardown: an inventory of what will be deleted and what is kept, then deletion in reverse
//! dependency order, and a report of what remains. The data stack is kept unless data
//! deletion is asked for; resources whose `DeletionPolicy` is `Retain` outlive their stack.

use std::collections::BTreeMap;
use std::fmt;

use futures_util::future::join_all;
use serde::Serialize;

use super::engine::{Gate, delete_and_wait, levels};
use super::plan::check_ownership;
use super::{DeployError, DeployReporter, NoJournal, ProvisionError, StackDeployer, StackJournal};
use crate::stacks::StackKind;
use crate::state::RetainedTarget;
use crate::text::count;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fate", rename_all = "lowercase")]
pub enum Fate {
    Deleted,
    Kept { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct InventoryItem {
    pub logical_id: String,
    pub resource_type: String,
    pub physical_id: Option<String>,
    #[serde(flatten)]
    pub fate: Fate,
    /// Its `DeletionPolicy` is `Retain`, so deleting it means deleting it after its stack.
    #[serde(skip)]
    retained_by_policy: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StackInventory {
    pub kind: StackKind,
    pub stack_name: String,
    pub status: String,
    /// Whether teardown deletes the stack itself.
    pub delete_stack: bool,
    pub resources: Vec<InventoryItem>,
}

/// Every deployed stack of the instance, last-deployed first, with each resource's fate.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub instance: String,
    pub delete_data: bool,
    pub stacks: Vec<StackInventory>,
}

impl Inventory {
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    pub fn kept(&self) -> impl Iterator<Item = (&str, &InventoryItem)> {
        self.stacks.iter().flat_map(|stack| {
            stack
                .resources
                .iter()
                .filter(|item| matches!(item.fate, Fate::Kept { .. }))
                .map(|item| (stack.stack_name.as_str(), item))
        })
    }
}

impl fmt::Display for Inventory {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for stack in &self.stacks {
            let verdict = if stack.delete_stack {
                "deleted"
            } else {
                "kept"
            };
            writeln!(
                formatter,
                "{} ({}): stack {verdict}",
                stack.stack_name, stack.status
            )?;
            for item in &stack.resources {
                let physical = item.physical_id.as_deref().unwrap_or("-");
                match &item.fate {
                    Fate::Deleted => writeln!(
                        formatter,
                        "    - delete  {} {} {physical}",
                        item.resource_type, item.logical_id
                    )?,
                    Fate::Kept { reason } => writeln!(
                        formatter,
                        "    = keep    {} {} {physical}  ({reason})",
                        item.resource_type, item.logical_id
                    )?,
                }
            }
        }
        let kept = self.kept().count();
        let total: usize = self.stacks.iter().map(|stack| stack.resources.len()).sum();
        write!(
            formatter,
            "{}; {} deleted, {kept} kept.",
            count(self.stacks.len(), "stack", "stacks"),
            count(total - kept, "resource", "resources"),
        )
    }
}

/// Builds the inventory from what is deployed, looking for every stack an instance can have.
pub async fn inventory<D: StackDeployer>(
    deployer: &D,
    instance: &str,
    delete_data: bool,
) -> Result<Inventory, ProvisionError> {
    let mut inventories = Vec::new();
    for kind in StackKind::ALL.iter().rev() {
        let stack_name = kind.stack_name(instance);
        let name = stack_name.as_str();
        let wrap = |source: DeployError| ProvisionError::deploy(name, source);
        let Some(state) = deployer.describe_stack(name).await.map_err(wrap)? else {
            continue;
        };
        check_ownership(instance, &state)?;
        let policies = deletion_policies(&deployer.deployed_template(name).await.map_err(wrap)?);
        let holds_data = kind.holds_data();
        let delete_stack = !holds_data || delete_data;
        let resources = deployer
            .stack_resources(name)
            .await
            .map_err(wrap)?
            .into_iter()
            .filter(|resource| !resource.logical_id.is_empty())
            .map(|resource| {
                let retained = policies
                    .get(&resource.logical_id)
                    .is_some_and(|policy| policy == "Retain");
                let fate = if holds_data && !delete_data {
                    Fate::Kept {
                        reason: "data is retained; --delete-data removes it".into(),
                    }
                } else if retained && !holds_data {
                    Fate::Kept {
                        reason: "DeletionPolicy Retain".into(),
                    }
                } else {
                    Fate::Deleted
                };
                InventoryItem {
                    logical_id: resource.logical_id,
                    resource_type: resource.resource_type,
                    physical_id: resource.physical_id,
                    fate,
                    retained_by_policy: retained,
                }
            })
            .collect();
        inventories.push(StackInventory {
            kind: *kind,
            stack_name: name.to_owned(),
            status: state.status,
            delete_stack,
            resources,
        });
    }
    Ok(Inventory {
        instance: instance.to_owned(),
        delete_data,
        stacks: inventories,
    })
}

fn deletion_policies(template: &str) -> BTreeMap<String, String> {
    let Ok(crate::render::validate::TemplateSummary { resource_list, .. }) =
        crate::render::validate(template)
    else {
        return BTreeMap::new();
    };
    resource_list
        .into_iter()
        .filter_map(|resource| Some((resource.logical_id, resource.deletion_policy?)))
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Remaining {
    pub stack_name: String,
    pub logical_id: String,
    pub resource_type: String,
    pub physical_id: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TeardownReport {
    pub deleted_stacks: Vec<String>,
    pub remaining: Vec<Remaining>,
    pub warnings: Vec<String>,
}

impl Inventory {
    /// What data deletion removes after the stacks are gone.
    pub fn retained_targets(&self) -> Vec<RetainedTarget> {
        self.stacks
            .iter()
            .filter(|stack| stack.delete_stack)
            .flat_map(|stack| {
                stack.resources.iter().filter_map(|item| {
                    match (&item.fate, item.retained_by_policy, &item.physical_id) {
                        (Fate::Deleted, true, Some(physical_id)) => Some(RetainedTarget {
                            stack_name: stack.stack_name.clone(),
                            resource_type: item.resource_type.clone(),
                            physical_id: physical_id.clone(),
                        }),
                        _ => None,
                    }
                })
            })
            .collect()
    }
}

/// Deletes what the inventory says, in reverse dependency order, then what the deleted stacks
/// retained, when data deletion was asked for.
pub async fn teardown<D: StackDeployer, R: DeployReporter, G: Gate>(
    deployer: &D,
    inventory: &Inventory,
    reporter: &R,
    gate: &G,
) -> Result<TeardownReport, ProvisionError> {
    let report = teardown_journalled(deployer, inventory, reporter, gate, &NoJournal).await?;
    delete_retained_data(deployer, &inventory.retained_targets(), reporter).await?;
    Ok(report)
}

/// Deletes the retained resources of deleted stacks (buckets emptied first, tables unprotected
/// first); one already gone counts as deleted.
pub async fn delete_retained_data<D: StackDeployer, R: DeployReporter>(
    deployer: &D,
    targets: &[RetainedTarget],
    reporter: &R,
) -> Result<(), ProvisionError> {
    for target in targets {
        deployer
            .delete_retained(&target.resource_type, &target.physical_id)
            .await
            .map_err(|source| ProvisionError::deploy(&target.stack_name, source))?;
        reporter.note(&format!(
            "{}: deleted retained {} {}",
            target.stack_name, target.resource_type, target.physical_id
        ));
    }
    Ok(())
}

/// Deletes the stacks the inventory says, in reverse dependency order, telling `journal` as
/// each is gone. Retained resources are left to [`delete_retained_data`].
pub async fn teardown_journalled<D: StackDeployer, R: DeployReporter, G: Gate, J: StackJournal>(
    deployer: &D,
    inventory: &Inventory,
    reporter: &R,
    gate: &G,
    journal: &J,
) -> Result<TeardownReport, ProvisionError> {
    let mut report = TeardownReport {
        deleted_stacks: Vec::new(),
        remaining: Vec::new(),
        warnings: Vec::new(),
    };
    let kinds: Vec<StackKind> = inventory.stacks.iter().map(|entry| entry.kind).collect();
    let mut order = levels(&kinds);
    order.reverse();
    for level in order {
        let targets: Vec<&StackInventory> = inventory
            .stacks
            .iter()
            .filter(|entry| level.contains(&entry.kind) && entry.delete_stack)
            .collect();
        let results = join_all(targets.iter().map(|entry| async move {
            let outcome = delete_one(deployer, entry, reporter, gate).await?;
            journal.stack_done(entry.kind).await?;
            Ok::<_, ProvisionError>(outcome)
        }))
        .await;
        for result in results {
            let outcome = result?;
            report.deleted_stacks.extend(outcome.deleted);
            report.remaining.extend(outcome.remaining);
            report.warnings.extend(outcome.warnings);
        }
    }
    for (stack_name, item) in inventory.kept() {
        let Fate::Kept { reason } = &item.fate else {
            continue;
        };
        report.remaining.push(Remaining {
            stack_name: stack_name.to_owned(),
            logical_id: item.logical_id.clone(),
            resource_type: item.resource_type.clone(),
            physical_id: item.physical_id.clone(),
            reason: reason.clone(),
        });
    }
    Ok(report)
}

#[derive(Default)]
struct DeleteOutcome {
    deleted: Option<String>,
    remaining: Vec<Remaining>,
    warnings: Vec<String>,
}

async fn delete_one<D: StackDeployer, R: DeployReporter, G: Gate>(
    deployer: &D,
    entry: &StackInventory,
    reporter: &R,
    gate: &G,
) -> Result<DeleteOutcome, ProvisionError> {
    let name = entry.stack_name.as_str();
    let mut outcome = DeleteOutcome::default();
    // A bucket must be empty before CloudFormation can delete it.
    for item in &entry.resources {
        if item.resource_type == "AWS::S3::Bucket"
            && item.fate == Fate::Deleted
            && let Some(bucket) = &item.physical_id
        {
            let removed = deployer
                .empty_bucket(bucket)
                .await
                .map_err(|source| ProvisionError::deploy(name, source))?;
            reporter.note(&format!(
                "{name}: emptied bucket {bucket} ({removed} object versions)"
            ));
        }
    }
    // Only events after this one belong to this deletion: an earlier failed update in the
    // stack's history is not why the deletion failed.
    let before = super::engine::newest_event(deployer, name).await?;
    reporter.stack_started(name, super::StackAction::Delete, entry.resources.len());
    let result = delete_and_wait(deployer, name, &[], reporter).await;
    let state = match result {
        Ok(state) => state,
        // The call failed but the stack may be gone all the same: report what is left.
        Err(ProvisionError::Deploy { error: source, .. }) => {
            match deployer.describe_stack(name).await {
                Ok(None) => {
                    outcome.deleted = Some(name.to_owned());
                    outcome.warnings.push(format!(
                    "{name}: CloudFormation reported \"{source}\" while deleting; the stack is gone, but some of its resources may remain"
                ));
                    None
                }
                _ => return Err(ProvisionError::deploy(name, source)),
            }
        }
        Err(other) => return Err(other),
    };
    let Some(state) = state else {
        reporter.stack_finished(name, "DELETE_COMPLETE", true);
        outcome.deleted = Some(name.to_owned());
        return Ok(outcome);
    };
    // DELETE_FAILED: name what blocks it, and offer to leave those resources behind.
    let blocking: Vec<super::StackResource> = deployer
        .stack_resources(name)
        .await
        .map_err(|source| ProvisionError::deploy(name, source))?
        .into_iter()
        .filter(|resource| resource.status == "DELETE_FAILED")
        .collect();
    let reason = super::engine::root_cause(deployer, name, before.as_deref())
        .await
        .and_then(|event| event.reason)
        .unwrap_or_else(|| state.status_reason.clone().unwrap_or_default());
    let listing = blocking
        .iter()
        .map(|resource| format!("{} ({})", resource.logical_id, resource.resource_type))
        .collect::<Vec<_>>()
        .join(", ");
    let question = format!(
        "{name} could not be deleted: {reason}. Blocking: {listing}. Retain them and delete the rest?"
    );
    if blocking.is_empty() || !gate.confirm(&question) {
        reporter.stack_finished(name, &state.status, false);
        return Err(ProvisionError::DeleteBlocked {
            stack: name.to_owned(),
            resources: blocking
                .iter()
                .map(|resource| resource.logical_id.clone())
                .collect(),
            reason,
        });
    }
    let retain: Vec<String> = blocking
        .iter()
        .map(|resource| resource.logical_id.clone())
        .collect();
    match delete_and_wait(deployer, name, &retain, reporter).await? {
        None => {
            reporter.stack_finished(name, "DELETE_COMPLETE", true);
            outcome.deleted = Some(name.to_owned());
            outcome
                .remaining
                .extend(blocking.into_iter().map(|resource| Remaining {
                    stack_name: name.to_owned(),
                    logical_id: resource.logical_id,
                    resource_type: resource.resource_type,
                    physical_id: resource.physical_id,
                    reason: "retained after it blocked the stack's deletion".into(),
                }));
            Ok(outcome)
        }
        Some(state) => {
            reporter.stack_finished(name, &state.status, false);
            Err(ProvisionError::DeleteBlocked {
                stack: name.to_owned(),
                resources: retain,
                reason: state.status_reason.unwrap_or_default(),
            })
        }
    }
}
