//! The stacks that make up one instance, their names and the order they deploy in, and the name
//! of the instance's state table.

use std::fmt;

use serde::Serialize;

use crate::config::ConfigFile;
use crate::release::ReleaseManifest;

/// One CloudFormation stack of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StackKind {
    /// Artifact bucket, mirror repositories and the KMS key everything is encrypted with.
    Bootstrap,
    /// VPC, subnets, egress and endpoints for the networking mode.
    Network,
    /// Buckets and tables holding the instance's data; retained when the instance is torn down.
    Data,
    /// OIDC provider and the role workspaces federate into.
    Identity,
    /// ECS cluster and capacity, one service per release component, load balancers, log groups.
    Platform,
    /// The scheduled unattended upgrade job: an EventBridge rule starting the installer image
    /// as a Fargate task on the platform's cluster. Only with a release that names an installer.
    Updater,
}

impl StackKind {
    /// Every kind, in an order where each stack comes after the stacks it depends on.
    pub const ALL: [StackKind; 6] = [
        StackKind::Bootstrap,
        StackKind::Identity,
        StackKind::Network,
        StackKind::Data,
        StackKind::Platform,
        StackKind::Updater,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StackKind::Bootstrap => "bootstrap",
            StackKind::Network => "network",
            StackKind::Data => "data",
            StackKind::Identity => "identity",
            StackKind::Platform => "platform",
            StackKind::Updater => "updater",
        }
    }

    /// The stacks whose outputs this one takes as parameters.
    pub fn depends_on(self) -> &'static [StackKind] {
        match self {
            StackKind::Bootstrap | StackKind::Identity => &[],
            StackKind::Network | StackKind::Data => &[StackKind::Bootstrap],
            StackKind::Platform => &[StackKind::Bootstrap, StackKind::Network, StackKind::Data],
            StackKind::Updater => &[
                StackKind::Bootstrap,
                StackKind::Network,
                StackKind::Platform,
            ],
        }
    }

    /// Whether the stack holds data that teardown keeps unless told otherwise.
    pub fn holds_data(self) -> bool {
        self == StackKind::Data
    }

    /// The CloudFormation stack name for an instance.
    pub fn stack_name(self, instance: &str) -> String {
        format!("{instance}-{}", self.as_str())
    }

    /// The stacks a configuration deploys whatever the release, dependencies first: every
    /// stack but the updater, which comes with a release that names an installer image.
    pub fn for_config(config: &ConfigFile) -> Vec<StackKind> {
        Self::ALL
            .into_iter()
            .filter(|kind| *kind != StackKind::Identity || config.identity.is_some())
            .filter(|kind| *kind != StackKind::Updater)
            .collect()
    }

    /// The stacks a configuration deploys with a release, dependencies first.
    pub fn for_release(config: &ConfigFile, release: &ReleaseManifest) -> Vec<StackKind> {
        let mut kinds = Self::for_config(config);
        if release.installer.is_some() {
            kinds.push(StackKind::Updater);
        }
        kinds
    }
}

impl fmt::Display for StackKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The DynamoDB table that holds an instance's state. The updater's template names it too, so
/// the name lives beside the stack names rather than in the adapter that reads the table.
pub fn state_table_name(instance: &str) -> String {
    format!("stackwright-{instance}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stack_comes_after_its_dependencies() {
        for (position, kind) in StackKind::ALL.iter().enumerate() {
            for dependency in kind.depends_on() {
                let dependency_position = StackKind::ALL
                    .iter()
                    .position(|other| other == dependency)
                    .unwrap();
                assert!(
                    dependency_position < position,
                    "{kind} is listed before {dependency}"
                );
            }
        }
    }
}
