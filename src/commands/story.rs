//! The words around a first install: what it is about to create and roughly how long that
//! takes, and afterwards what the unattended upgrade job will do and when.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{AutoApprove, ConfigFile};
use crate::output::count;
use crate::provision::{ChangeAction, Plan, StackAction};

/// The main resource types, as people call them, in the order they are listed.
const MAIN_RESOURCES: &[(&str, &str, &str)] = &[
    ("AWS::EC2::VPC", "VPC", "VPCs"),
    ("AWS::EC2::Subnet", "subnet", "subnets"),
    ("AWS::EC2::NatGateway", "NAT gateway", "NAT gateways"),
    ("AWS::EC2::VPCEndpoint", "VPC endpoint", "VPC endpoints"),
    ("AWS::KMS::Key", "KMS key", "KMS keys"),
    ("AWS::S3::Bucket", "bucket", "buckets"),
    ("AWS::DynamoDB::Table", "table", "tables"),
    (
        "AWS::ECR::Repository",
        "image repository",
        "image repositories",
    ),
    ("AWS::ECS::Cluster", "ECS cluster", "ECS clusters"),
    ("AWS::ECS::Service", "ECS service", "ECS services"),
    (
        "AWS::AutoScaling::AutoScalingGroup",
        "auto scaling group",
        "auto scaling groups",
    ),
    (
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "load balancer",
        "load balancers",
    ),
    (
        "AWS::CertificateManager::Certificate",
        "certificate",
        "certificates",
    ),
    ("AWS::IAM::OIDCProvider", "OIDC provider", "OIDC providers"),
    ("AWS::IAM::Role", "IAM role", "IAM roles"),
    ("AWS::Events::Rule", "schedule", "schedules"),
];

/// Rough minutes CloudFormation takes to create a stack on AWS: its slowest resources.
fn minutes_to_create(stack_name: &str, types: &BTreeMap<&str, usize>) -> u32 {
    let has = |resource_type: &str| types.get(resource_type).copied().unwrap_or(0) > 0;
    let mut minutes = 1;
    if has("AWS::EC2::NatGateway") {
        minutes += 3;
    }
    if has("AWS::EC2::VPCEndpoint") {
        minutes += 2;
    }
    if has("AWS::ElasticLoadBalancingV2::LoadBalancer") {
        minutes += 4;
    }
    if has("AWS::ECS::Service") {
        // The services wait for their tasks to be healthy on fresh EC2 capacity.
        minutes += 6;
    }
    if has("AWS::KMS::Key") || stack_name.ends_with("-data") {
        minutes += 1;
    }
    minutes
}

/// What a first install is about to create, and how long it may take; `None` when the plan
/// creates no stack (an update says what changes through the plan alone).
pub fn introduction(plan: &Plan, account: &str, region: &str) -> Option<String> {
    let created: Vec<_> = plan
        .stacks
        .iter()
        .filter(|stack| matches!(stack.action, StackAction::Create | StackAction::Recreate))
        .collect();
    if created.is_empty() {
        return None;
    }
    let mut text = format!(
        "This install creates {} in account {account} ({region}):\n",
        count(created.len(), "stack", "stacks"),
    );
    let mut levels: BTreeMap<u8, u32> = BTreeMap::new();
    for stack in &created {
        let mut types: BTreeMap<&str, usize> = BTreeMap::new();
        for change in &stack.changes {
            if change.action == ChangeAction::Add {
                *types.entry(change.resource_type.as_str()).or_default() += 1;
            }
        }
        let main: Vec<String> = MAIN_RESOURCES
            .iter()
            .filter_map(|(resource_type, singular, plural)| {
                types
                    .get(resource_type)
                    .map(|number| count(*number, singular, plural))
            })
            .collect();
        let total: usize = types.values().sum();
        text.push_str(&format!(
            "  {:<24} {}{}\n",
            stack.stack_name,
            count(total, "resource", "resources"),
            if main.is_empty() {
                String::new()
            } else {
                format!(": {}", main.join(", "))
            }
        ));
        // Stacks deploy in levels (bootstrap and identity, network and data, platform, then the
        // updater); a level takes as long as its slowest stack.
        let level = match stack.stack_name.rsplit('-').next() {
            Some("bootstrap" | "identity") => 0,
            Some("network" | "data") => 1,
            Some("updater") => 3,
            _ => 2,
        };
        let minutes = minutes_to_create(&stack.stack_name, &types);
        let slowest = levels.entry(level).or_default();
        *slowest = (*slowest).max(minutes);
    }
    // A range, rounded to five minutes: the estimate is rough and should read so.
    let minutes: u32 = levels.values().sum::<u32>().div_ceil(5) * 5;
    text.push_str(&wrap(&format!(
        "On AWS this takes roughly {} to {} minutes (NAT gateways, endpoints, the load balancer and the first healthy tasks are the slow part); progress shows as it happens, and an interrupted run resumes.",
        minutes,
        minutes * 2
    )));
    Some(text)
}

/// What the unattended upgrade job does, from the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeJob {
    /// Whether the updater stack runs the job in the account (the release names an installer
    /// image); otherwise it runs wherever a person schedules it.
    pub in_account: bool,
    pub schedule: String,
    pub channel: String,
    pub pin: Option<String>,
    pub maintenance_window: Option<String>,
    /// When the window next opens (UTC), when there is one.
    pub next_window: Option<String>,
    pub auto_approve: AutoApprove,
}

impl UpgradeJob {
    pub fn from_config(config: &ConfigFile, in_account: bool, now: jiff::Timestamp) -> Self {
        let window = config.upgrade.window();
        UpgradeJob {
            in_account,
            schedule: config.upgrade.schedule.clone(),
            channel: config.release.channel.clone(),
            pin: config.release.pin.as_ref().map(ToString::to_string),
            maintenance_window: config.upgrade.maintenance_window.clone(),
            next_window: window.map(|window| {
                let opening = window.next_opening(now);
                opening.strftime("%a %Y-%m-%d %H:%M UTC").to_string()
            }),
            auto_approve: config.upgrade.auto_approve,
        }
    }

    /// The paragraph for people.
    pub fn describe(&self, control_plane: &str) -> String {
        let pin = self
            .pin
            .as_deref()
            .map(|pin| format!(", never past {pin} (release.pin)"))
            .unwrap_or_default();
        let when = match (&self.maintenance_window, &self.next_window) {
            (Some(window), Some(next)) => format!(
                "starts an upgrade only within {window} UTC (next: {next}); urgent releases do not wait"
            ),
            _ => {
                "starts an upgrade on the run that finds one (no maintenance window is set)".into()
            }
        };
        let approve = match self.auto_approve {
            AutoApprove::Safe => {
                "It applies changes by itself only when nothing stateful is replaced or deleted and no IAM permission grows; anything else waits for `stackwright upgrade`."
            }
            AutoApprove::None => {
                "It applies nothing by itself: every upgrade waits for `stackwright upgrade` (upgrade.auto_approve = \"none\")."
            }
        };
        let runs = if self.in_account {
            format!(
                "The unattended upgrade job runs on the schedule {} in this account (the updater stack).",
                self.schedule
            )
        } else {
            "No updater stack runs the unattended upgrade job in this account (the release names no installer image): run `stackwright upgrade --unattended` on a schedule where this configuration lives, as the README's systemd timer does.".to_owned()
        };
        wrap(&format!(
            "{runs} It reports to {control_plane}, asks for a newer release on the {} channel{pin}, and {when}. {approve} A failed upgrade rolls back and that release is skipped.",
            self.channel
        ))
    }
}

/// Breaks a paragraph into lines of at most 100 characters, at spaces.
fn wrap(paragraph: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in paragraph.split(' ') {
        if !line.is_empty() && line.len() + 1 + word.len() > 100 {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_wrap_at_spaces_within_a_hundred_characters() {
        let paragraph = "word ".repeat(60);
        let wrapped = wrap(paragraph.trim_end());
        assert!(wrapped.lines().all(|line| line.len() <= 100), "{wrapped}");
        assert_eq!(wrapped.replace('\n', " "), paragraph.trim_end());
    }
}
