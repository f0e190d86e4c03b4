//! Reviewing an upgrade's change sets before anything is applied: which changes replace or
//! delete stateful resources, which replace anything, and which broaden IAM permissions. The
//! unattended job applies only what the policy approves and parks the rest for a person.
//!
//! Replacements and deletions come from the change sets. IAM broadening is read from the
//! templates themselves, before and after: CloudFormation says only that a role is modified,
//! not whether it may now do more.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::config::AutoApprove;
use crate::provision::{ChangeAction, Plan};

/// Resource types that hold data, or keys to it, which a replacement or deletion would lose.
const STATEFUL_TYPES: &[&str] = &[
    "AWS::S3::Bucket",
    "AWS::DynamoDB::Table",
    "AWS::KMS::Key",
    "AWS::Logs::LogGroup",
    "AWS::ECR::Repository",
    "AWS::SecretsManager::Secret",
    "AWS::EFS::FileSystem",
    "AWS::RDS::DBInstance",
    "AWS::RDS::DBCluster",
];

/// What a finding is about, most serious first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    StatefulDeletion,
    StatefulReplacement,
    IamBroadening,
    Replacement,
}

impl fmt::Display for FindingKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            FindingKind::StatefulDeletion => "deletes a stateful resource",
            FindingKind::StatefulReplacement => "replaces a stateful resource",
            FindingKind::IamBroadening => "broadens permissions",
            FindingKind::Replacement => "replaces a resource",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub stack: String,
    pub logical_id: String,
    pub resource_type: String,
    /// For IAM broadening: what is newly allowed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
}

/// Every finding of an upgrade's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangeReview {
    pub findings: Vec<Finding>,
}

/// One stack's template before (when it exists) and after the upgrade.
pub struct TemplatePair<'a> {
    pub stack: &'a str,
    pub before: Option<&'a str>,
    pub after: &'a str,
}

impl ChangeReview {
    /// Reviews `plan`, with each stack's templates for the IAM comparison.
    pub fn of(plan: &Plan, templates: &[TemplatePair<'_>]) -> Self {
        let mut findings = Vec::new();
        for stack in &plan.stacks {
            for change in &stack.changes {
                let stateful = STATEFUL_TYPES.contains(&change.resource_type.as_str());
                let replaced =
                    matches!(change.replacement.as_deref(), Some("True" | "Conditional"));
                let kind = match (change.action, stateful, replaced) {
                    (ChangeAction::Remove, true, _) => FindingKind::StatefulDeletion,
                    (ChangeAction::Modify, true, true) => FindingKind::StatefulReplacement,
                    (ChangeAction::Modify, false, true) => FindingKind::Replacement,
                    _ => continue,
                };
                findings.push(Finding {
                    kind,
                    stack: stack.stack_name.clone(),
                    logical_id: change.logical_id.clone(),
                    resource_type: change.resource_type.clone(),
                    detail: Vec::new(),
                });
            }
        }
        for pair in templates {
            findings.extend(broadening(pair));
        }
        findings.sort_by(|a, b| {
            (a.kind, &a.stack, &a.logical_id).cmp(&(b.kind, &b.stack, &b.logical_id))
        });
        ChangeReview { findings }
    }

    /// Whether the unattended job may apply the plan under `policy`.
    pub fn approved_by(&self, policy: AutoApprove) -> bool {
        match policy {
            AutoApprove::None => false,
            AutoApprove::Safe => self
                .findings
                .iter()
                .all(|finding| finding.kind == FindingKind::Replacement),
        }
    }

    /// The findings that keep the `safe` policy from approving.
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|finding| finding.kind != FindingKind::Replacement)
    }
}

impl fmt::Display for ChangeReview {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.findings.is_empty() {
            return write!(
                formatter,
                "Review: no replacement, no stateful change, no broader permissions."
            );
        }
        write!(formatter, "Review:")?;
        for finding in &self.findings {
            write!(
                formatter,
                "\n  ! {} {} ({}) {}",
                finding.stack, finding.logical_id, finding.resource_type, finding.kind
            )?;
            for line in &finding.detail {
                write!(formatter, "\n      + {line}")?;
            }
        }
        Ok(())
    }
}

/// Resources whose properties grant permissions, and where in them the policy documents are.
fn policy_documents(resource_type: &str, properties: &Value) -> Vec<(String, Value)> {
    let at = |name: &str| properties.get(name).cloned();
    let mut documents = Vec::new();
    match resource_type {
        "AWS::IAM::Role" => {
            if let Some(document) = at("AssumeRolePolicyDocument") {
                documents.push(("trust".to_owned(), document));
            }
            for policy in at("Policies")
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
            {
                let name = policy.get("PolicyName").map_or_else(String::new, compact);
                if let Some(document) = policy.get("PolicyDocument") {
                    documents.push((format!("policy {name}"), document.clone()));
                }
            }
        }
        "AWS::IAM::Policy"
        | "AWS::IAM::ManagedPolicy"
        | "AWS::IAM::RolePolicy"
        | "AWS::S3::BucketPolicy"
        | "AWS::SQS::QueuePolicy"
        | "AWS::SNS::TopicPolicy" => {
            if let Some(document) = at("PolicyDocument") {
                documents.push(("policy".to_owned(), document));
            }
        }
        "AWS::KMS::Key" => {
            if let Some(document) = at("KeyPolicy") {
                documents.push(("key policy".to_owned(), document));
            }
        }
        "AWS::ECR::Repository" => {
            if let Some(document) = at("RepositoryPolicyText") {
                documents.push(("repository policy".to_owned(), document));
            }
        }
        _ => {}
    }
    documents
}

/// Each allow as one line per action and resource (with its principal and condition), and each
/// deny likewise: an allow that appears or a deny that disappears broadens.
fn grants(documents: &[(String, Value)]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut allows = BTreeSet::new();
    let mut denies = BTreeSet::new();
    for (place, document) in documents {
        let statements = match document.get("Statement") {
            Some(Value::Array(statements)) => statements.clone(),
            Some(statement) => vec![statement.clone()],
            None => Vec::new(),
        };
        for statement in statements {
            let effect = statement
                .get("Effect")
                .and_then(Value::as_str)
                .unwrap_or("Allow");
            let list = |key: &str| match statement.get(key) {
                Some(Value::Array(items)) => items.iter().map(compact).collect(),
                Some(item) => vec![compact(item)],
                None => Vec::new(),
            };
            let actions: Vec<String> = list("Action")
                .into_iter()
                .chain(
                    list("NotAction")
                        .into_iter()
                        .map(|action| format!("not {action}")),
                )
                .collect();
            let mut resources: Vec<String> = list("Resource")
                .into_iter()
                .chain(
                    list("NotResource")
                        .into_iter()
                        .map(|resource| format!("not {resource}")),
                )
                .collect();
            if resources.is_empty() {
                resources.push(String::new());
            }
            let principal = statement.get("Principal").map(compact).unwrap_or_default();
            let condition = statement.get("Condition").map(compact).unwrap_or_default();
            for action in &actions {
                for resource in &resources {
                    let mut line = format!("{place}: {action}");
                    if !resource.is_empty() {
                        line.push_str(&format!(" on {resource}"));
                    }
                    if !principal.is_empty() {
                        line.push_str(&format!(" to {principal}"));
                    }
                    if !condition.is_empty() {
                        line.push_str(&format!(" when {condition}"));
                    }
                    if effect == "Deny" {
                        denies.insert(line);
                    } else {
                        allows.insert(line);
                    }
                }
            }
        }
    }
    (allows, denies)
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Permission-granting resources of a template: logical ID → (type, properties).
fn permission_resources(template: &str) -> BTreeMap<String, (String, Value)> {
    let parsed: Value = serde_yaml_ng::from_str(template).unwrap_or(Value::Null);
    let mut found = BTreeMap::new();
    if let Some(Value::Object(resources)) = parsed.get("Resources") {
        for (logical_id, resource) in resources {
            let resource_type = resource
                .get("Type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let properties = resource.get("Properties").cloned().unwrap_or(Value::Null);
            let managed = properties.get("ManagedPolicyArns").is_some();
            if !policy_documents(resource_type, &properties).is_empty() || managed {
                found.insert(logical_id.clone(), (resource_type.to_owned(), properties));
            }
        }
    }
    found
}

fn broadening(pair: &TemplatePair<'_>) -> Vec<Finding> {
    let before = pair.before.map(permission_resources).unwrap_or_default();
    let after = permission_resources(pair.after);
    let mut findings = Vec::new();
    for (logical_id, (resource_type, properties)) in &after {
        let (new_allows, new_denies) = grants(&policy_documents(resource_type, properties));
        let (old_allows, old_denies) = before
            .get(logical_id)
            .map(|(old_type, old)| grants(&policy_documents(old_type, old)))
            .unwrap_or_default();
        let managed = |properties: &Value| -> BTreeSet<String> {
            properties
                .get("ManagedPolicyArns")
                .and_then(Value::as_array)
                .map(|arns| arns.iter().map(compact).collect())
                .unwrap_or_default()
        };
        let old_managed = before
            .get(logical_id)
            .map(|(_, old)| managed(old))
            .unwrap_or_default();
        let mut detail: Vec<String> = new_allows.difference(&old_allows).cloned().collect();
        detail.extend(
            old_denies
                .difference(&new_denies)
                .map(|line| format!("no longer denied: {line}")),
        );
        detail.extend(
            managed(properties)
                .difference(&old_managed)
                .map(|arn| format!("managed policy {arn}")),
        );
        // A resource new to the stack grants what it grants: only count it on an update.
        if detail.is_empty() || pair.before.is_none() {
            continue;
        }
        findings.push(Finding {
            kind: FindingKind::IamBroadening,
            stack: pair.stack.to_owned(),
            logical_id: logical_id.clone(),
            resource_type: resource_type.clone(),
            detail,
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::{ResourceChange, StackAction, StackPlan};

    fn plan(changes: Vec<(ChangeAction, &str, &str, Option<&str>)>) -> Plan {
        Plan {
            instance: "acme".into(),
            stacks: vec![StackPlan {
                stack_name: "acme-platform".into(),
                action: StackAction::Update,
                status: Some("UPDATE_COMPLETE".into()),
                changes: changes
                    .into_iter()
                    .map(
                        |(action, logical_id, resource_type, replacement)| ResourceChange {
                            action,
                            logical_id: logical_id.into(),
                            resource_type: resource_type.into(),
                            replacement: replacement.map(str::to_owned),
                        },
                    )
                    .collect(),
                change_set_id: None,
                parameters: BTreeMap::new(),
                note: None,
            }],
        }
    }

    const ROLE_BEFORE: &str = r#"
Resources:
  TaskRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - Effect: Allow
            Principal: { Service: ecs-tasks.amazonaws.com }
            Action: sts:AssumeRole
      Policies:
        - PolicyName: data
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: [s3:GetObject, s3:PutObject]
                Resource: { "Fn::Sub": "${DataBucket.Arn}/*" }
              - Effect: Deny
                Action: s3:DeleteBucket
                Resource: "*"
"#;

    #[test]
    fn image_updates_and_safe_replacements_are_approved() {
        let review = ChangeReview::of(
            &plan(vec![
                (
                    ChangeAction::Modify,
                    "ServerTaskDefinition",
                    "AWS::ECS::TaskDefinition",
                    Some("True"),
                ),
                (
                    ChangeAction::Modify,
                    "ServerService",
                    "AWS::ECS::Service",
                    Some("False"),
                ),
                (
                    ChangeAction::Add,
                    "NewLogGroup",
                    "AWS::Logs::LogGroup",
                    None,
                ),
            ]),
            &[TemplatePair {
                stack: "acme-platform",
                before: Some(ROLE_BEFORE),
                after: ROLE_BEFORE,
            }],
        );
        assert_eq!(review.findings.len(), 1);
        assert_eq!(review.findings[0].kind, FindingKind::Replacement);
        assert!(review.approved_by(AutoApprove::Safe));
        assert!(!review.approved_by(AutoApprove::None));
    }

    #[test]
    fn stateful_replacement_and_deletion_are_parked() {
        let review = ChangeReview::of(
            &plan(vec![
                (
                    ChangeAction::Modify,
                    "DataTable",
                    "AWS::DynamoDB::Table",
                    Some("True"),
                ),
                (ChangeAction::Remove, "DataBucket", "AWS::S3::Bucket", None),
                (
                    ChangeAction::Modify,
                    "Key",
                    "AWS::KMS::Key",
                    Some("Conditional"),
                ),
                (
                    ChangeAction::Modify,
                    "Logs",
                    "AWS::Logs::LogGroup",
                    Some("False"),
                ),
            ]),
            &[],
        );
        let kinds: Vec<(FindingKind, &str)> = review
            .findings
            .iter()
            .map(|finding| (finding.kind, finding.logical_id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (FindingKind::StatefulDeletion, "DataBucket"),
                (FindingKind::StatefulReplacement, "DataTable"),
                (FindingKind::StatefulReplacement, "Key"),
            ]
        );
        assert!(!review.approved_by(AutoApprove::Safe));
        assert!(review.to_string().contains(
            "acme-platform DataTable (AWS::DynamoDB::Table) replaces a stateful resource"
        ));
    }

    #[test]
    fn broader_permissions_are_found_in_the_templates() {
        let wider_action = ROLE_BEFORE.replace(
            "[s3:GetObject, s3:PutObject]",
            "[s3:GetObject, s3:PutObject, s3:DeleteObject]",
        );
        let wider_resource =
            ROLE_BEFORE.replace(r#"{ "Fn::Sub": "${DataBucket.Arn}/*" }"#, r#""*""#);
        let deny_dropped = ROLE_BEFORE.replace("Effect: Deny", "Effect: Allow");
        let new_principal = ROLE_BEFORE.replace("ecs-tasks.amazonaws.com", "ec2.amazonaws.com");
        let managed = ROLE_BEFORE.replace(
            "      Policies:",
            "      ManagedPolicyArns: [arn:aws:iam::aws:policy/AdministratorAccess]\n      Policies:",
        );
        let narrower = ROLE_BEFORE.replace("[s3:GetObject, s3:PutObject]", "[s3:GetObject]");
        let cases = [
            (
                wider_action,
                Some("policy data: s3:DeleteObject on {\"Fn::Sub\":\"${DataBucket.Arn}/*\"}"),
            ),
            (wider_resource, Some("policy data: s3:GetObject on *")),
            (
                deny_dropped,
                Some("no longer denied: policy data: s3:DeleteBucket on *"),
            ),
            (
                new_principal,
                Some("trust: sts:AssumeRole to {\"Service\":\"ec2.amazonaws.com\"}"),
            ),
            (
                managed,
                Some("managed policy arn:aws:iam::aws:policy/AdministratorAccess"),
            ),
            (narrower, None),
        ];
        for (after, expected) in cases {
            let review = ChangeReview::of(
                &plan(vec![]),
                &[TemplatePair {
                    stack: "acme-platform",
                    before: Some(ROLE_BEFORE),
                    after: &after,
                }],
            );
            match expected {
                Some(line) => {
                    assert_eq!(review.findings.len(), 1, "{after}");
                    assert_eq!(review.findings[0].kind, FindingKind::IamBroadening);
                    assert!(
                        review.findings[0]
                            .detail
                            .iter()
                            .any(|detail| detail == line),
                        "{:?} lacks {line}",
                        review.findings[0].detail
                    );
                    assert!(!review.approved_by(AutoApprove::Safe));
                }
                None => assert!(review.findings.is_empty(), "{:?}", review.findings),
            }
        }
    }
}
