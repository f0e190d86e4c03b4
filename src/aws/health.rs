//! Reads the platform's health from ECS and Elastic Load Balancing: the services and target
//! groups are the platform stack's own resources.

use std::time::{Duration, Instant};

use super::{Aws, sdk_error};
use crate::provision::{DeployError, StackResource};
use crate::upgrade::{Health, HealthSnapshot, ServiceState, TargetGroupState, TargetState};

/// ECS describes at most this many services per call.
const SERVICES_PER_CALL: usize = 10;

/// The services and target groups of the platform stack, as ECS and ELB see them now.
pub async fn snapshot(
    aws: &Aws,
    resources: &[StackResource],
) -> Result<HealthSnapshot, DeployError> {
    let of_type = |kind: &'static str| {
        resources
            .iter()
            .filter(move |resource| resource.resource_type == kind)
            .filter_map(|resource| {
                Some((
                    resource.logical_id.as_str(),
                    resource.physical_id.as_deref()?,
                ))
            })
    };
    let mut snapshot = HealthSnapshot::default();
    let services: Vec<&str> = of_type("AWS::ECS::Service").map(|(_, arn)| arn).collect();
    if let Some((_, cluster)) = of_type("AWS::ECS::Cluster").next()
        && !services.is_empty()
    {
        let ecs = aws_sdk_ecs::Client::new(&aws.config);
        for chunk in services.chunks(SERVICES_PER_CALL) {
            let output = ecs
                .describe_services()
                .cluster(cluster)
                .set_services(Some(chunk.iter().map(|arn| (*arn).to_owned()).collect()))
                .send()
                .await
                .map_err(|error| sdk_error("ecs:DescribeServices", error))?;
            for failure in output.failures() {
                snapshot.services.push(ServiceState {
                    name: failure.arn().unwrap_or_default().to_owned(),
                    desired: 1,
                    running: 0,
                    rollout: Some("FAILED".into()),
                    rollout_reason: failure.reason().map(str::to_owned),
                    deployments: 0,
                });
            }
            for service in output.services() {
                let primary = service
                    .deployments()
                    .iter()
                    .find(|deployment| deployment.status() == Some("PRIMARY"));
                snapshot.services.push(ServiceState {
                    name: service.service_name().unwrap_or_default().to_owned(),
                    desired: service.desired_count(),
                    running: service.running_count(),
                    rollout: primary
                        .and_then(|deployment| deployment.rollout_state())
                        .map(|state| state.as_str().to_owned()),
                    rollout_reason: primary
                        .and_then(|deployment| deployment.rollout_state_reason())
                        .map(str::to_owned),
                    deployments: service.deployments().len(),
                });
            }
        }
    }
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws.config);
    for (logical_id, arn) in of_type("AWS::ElasticLoadBalancingV2::TargetGroup") {
        let output = elb
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|error| sdk_error("elasticloadbalancing:DescribeTargetHealth", error))?;
        snapshot.target_groups.push(TargetGroupState {
            name: logical_id.to_owned(),
            targets: output
                .target_health_descriptions()
                .iter()
                .map(|description| {
                    let health = description.target_health();
                    TargetState {
                        id: description
                            .target()
                            .and_then(|target| target.id())
                            .unwrap_or_default()
                            .to_owned(),
                        state: health
                            .and_then(|health| health.state())
                            .map(|state| state.as_str().to_owned())
                            .unwrap_or_default(),
                        reason: health
                            .and_then(|health| health.reason())
                            .map(|reason| reason.as_str().to_owned()),
                        description: health
                            .and_then(|health| health.description())
                            .map(str::to_owned),
                    }
                })
                .collect(),
        });
    }
    Ok(snapshot)
}

/// Asks again while the platform is settling, up to `timeout`; then whatever is still settling
/// is a problem. `on_wait` hears each intermediate verdict.
pub async fn watch(
    aws: &Aws,
    resources: &[StackResource],
    timeout: Duration,
    on_wait: impl Fn(&Health),
) -> Result<Health, DeployError> {
    let started = Instant::now();
    let mut delay = Duration::from_secs(2);
    loop {
        let health = snapshot(aws, resources).await?.assess();
        let Health::Waiting { reasons } = &health else {
            return Ok(health);
        };
        if started.elapsed() + delay > timeout {
            return Ok(Health::Unhealthy {
                problems: reasons
                    .iter()
                    .map(|reason| format!("{reason}, still after {} s", timeout.as_secs()))
                    .collect(),
            });
        }
        on_wait(&health);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(15));
    }
}
