//! Whether an instance is healthy after its stacks are updated: every ECS service has finished
//! its deployment with the tasks it wants, and no load balancer target is unhealthy. A stack in
//! UPDATE_COMPLETE says CloudFormation is done, not that the new release serves; this is read
//! from ECS and Elastic Load Balancing themselves. The assessment is pure; `aws::health` reads
//! the snapshots.

use std::fmt;

use serde::Serialize;

/// One ECS service as ECS describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceState {
    pub name: String,
    pub desired: i32,
    pub running: i32,
    /// The primary deployment's rollout state (`IN_PROGRESS`, `COMPLETED`, `FAILED`), when ECS
    /// reports one.
    pub rollout: Option<String>,
    pub rollout_reason: Option<String>,
    pub deployments: usize,
}

/// One registered target of a target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetState {
    pub id: String,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`.
    pub state: String,
    pub reason: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroupState {
    pub name: String,
    pub targets: Vec<TargetState>,
}

/// What the platform looks like at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HealthSnapshot {
    pub services: Vec<ServiceState>,
    pub target_groups: Vec<TargetGroupState>,
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "health", rename_all = "snake_case")]
pub enum Health {
    Healthy {
        summary: String,
    },
    /// Still settling: worth asking again.
    Waiting {
        reasons: Vec<String>,
    },
    /// Will not get better by waiting.
    Unhealthy {
        problems: Vec<String>,
    },
}

impl HealthSnapshot {
    pub fn assess(&self) -> Health {
        let mut problems = Vec::new();
        let mut waiting = Vec::new();
        for service in &self.services {
            let name = &service.name;
            match service.rollout.as_deref() {
                Some("FAILED") => problems.push(format!(
                    "service {name}: its deployment failed{}",
                    service
                        .rollout_reason
                        .as_deref()
                        .map(|reason| format!(": {reason}"))
                        .unwrap_or_default()
                )),
                Some("IN_PROGRESS") => waiting.push(format!(
                    "service {name}: deployment in progress, {} of {} tasks running",
                    service.running, service.desired
                )),
                _ if service.running < service.desired => waiting.push(format!(
                    "service {name}: {} of {} tasks running",
                    service.running, service.desired
                )),
                _ if service.deployments > 1 => waiting.push(format!(
                    "service {name}: {} deployments still active",
                    service.deployments
                )),
                _ => {}
            }
        }
        for group in &self.target_groups {
            for target in &group.targets {
                let detail = [target.reason.as_deref(), target.description.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                };
                match target.state.as_str() {
                    "unhealthy" => problems.push(format!(
                        "target group {}: target {} is unhealthy{detail}",
                        group.name, target.id
                    )),
                    "initial" => waiting.push(format!(
                        "target group {}: target {} is still being checked",
                        group.name, target.id
                    )),
                    _ => {}
                }
            }
        }
        if !problems.is_empty() {
            return Health::Unhealthy { problems };
        }
        if !waiting.is_empty() {
            return Health::Waiting { reasons: waiting };
        }
        Health::Healthy {
            summary: self.summary(),
        }
    }

    fn summary(&self) -> String {
        let tasks: i32 = self.services.iter().map(|service| service.running).sum();
        let healthy = self
            .target_groups
            .iter()
            .flat_map(|group| &group.targets)
            .filter(|target| target.state == "healthy")
            .count();
        format!(
            "{} services stable ({tasks} tasks running), {} target groups with {healthy} healthy targets and none unhealthy",
            self.services.len(),
            self.target_groups.len()
        )
    }
}

impl fmt::Display for Health {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy { summary } => write!(formatter, "Healthy: {summary}."),
            Health::Waiting { reasons } => write!(formatter, "Settling: {}.", reasons.join("; ")),
            Health::Unhealthy { problems } => {
                write!(formatter, "Unhealthy: {}.", problems.join("; "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, desired: i32, running: i32, rollout: Option<&str>) -> ServiceState {
        ServiceState {
            name: name.into(),
            desired,
            running,
            rollout: rollout.map(str::to_owned),
            rollout_reason: rollout
                .filter(|state| *state == "FAILED")
                .map(|_| "tasks failed to start".to_owned()),
            deployments: 1,
        }
    }

    fn group(name: &str, states: &[&str]) -> TargetGroupState {
        TargetGroupState {
            name: name.into(),
            targets: states
                .iter()
                .enumerate()
                .map(|(index, state)| TargetState {
                    id: format!("10.0.0.{index}"),
                    state: (*state).into(),
                    reason: (*state == "unhealthy").then(|| "Target.ResponseCodeMismatch".into()),
                    description: (*state == "unhealthy")
                        .then(|| "Health checks failed with these codes: [502]".into()),
                })
                .collect(),
        }
    }

    #[test]
    fn the_verdict_follows_the_worst_part() {
        let table: &[(HealthSnapshot, &str, &str)] = &[
            (
                HealthSnapshot {
                    services: vec![service("server", 2, 2, Some("COMPLETED"))],
                    target_groups: vec![group("server", &["healthy", "healthy"])],
                },
                "healthy",
                "1 services stable (2 tasks running), 1 target groups with 2 healthy targets",
            ),
            (
                HealthSnapshot {
                    services: vec![service("server", 2, 1, Some("IN_PROGRESS"))],
                    target_groups: vec![group("server", &["healthy"])],
                },
                "waiting",
                "service server: deployment in progress, 1 of 2 tasks running",
            ),
            (
                HealthSnapshot {
                    services: vec![service("server", 2, 1, None)],
                    target_groups: vec![],
                },
                "waiting",
                "service server: 1 of 2 tasks running",
            ),
            (
                HealthSnapshot {
                    services: vec![service("server", 2, 2, Some("COMPLETED"))],
                    target_groups: vec![group("server", &["healthy", "initial"])],
                },
                "waiting",
                "target 10.0.0.1 is still being checked",
            ),
            (
                HealthSnapshot {
                    services: vec![service("server", 2, 2, Some("COMPLETED"))],
                    target_groups: vec![group("server", &["healthy", "unhealthy", "initial"])],
                },
                "unhealthy",
                "target group server: target 10.0.0.1 is unhealthy (Target.ResponseCodeMismatch: Health checks failed with these codes: [502])",
            ),
            (
                HealthSnapshot {
                    services: vec![service("server", 2, 0, Some("FAILED"))],
                    target_groups: vec![],
                },
                "unhealthy",
                "service server: its deployment failed: tasks failed to start",
            ),
            // Draining targets belong to the tasks being replaced.
            (
                HealthSnapshot {
                    services: vec![service("server", 1, 1, Some("COMPLETED"))],
                    target_groups: vec![group("server", &["healthy", "draining"])],
                },
                "healthy",
                "1 healthy targets",
            ),
        ];
        for (snapshot, verdict, text) in table {
            let health = snapshot.assess();
            let kind = match &health {
                Health::Healthy { .. } => "healthy",
                Health::Waiting { .. } => "waiting",
                Health::Unhealthy { .. } => "unhealthy",
            };
            assert_eq!(kind, *verdict, "{snapshot:?}");
            assert!(health.to_string().contains(text), "{health} lacks {text}");
        }
    }
}
