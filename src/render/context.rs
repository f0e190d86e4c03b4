//! The typed context templates render from: exactly the values a template may use, computed
//! once from the configuration and the release so that templates hold no logic beyond
//! conditionals and loops.

use serde::Serialize;

use crate::config::ConfigFile;
use crate::network::{self, NetworkMode};
use crate::release::{INSTALLER_REPOSITORY, ReleaseManifest};
use crate::stacks::StackKind;

/// Path patterns the public-services endpoint may forward: OIDC discovery and keys, and the
/// webhooks Git providers call. A release cannot widen this list.
pub const PUBLIC_SERVICE_PATHS: &[&str] = &["/.well-known/*", "/oidc/*", "/webhooks/*"];

/// Application load balancers accept at most five values across a rule's conditions.
const PATHS_PER_RULE: usize = 5;

#[derive(Debug, Clone, Serialize)]
pub struct TemplateContext {
    pub installer_version: &'static str,
    pub instance: InstanceContext,
    pub network: NetworkContext,
    pub release: ReleaseContext,
    pub identity: Option<IdentityContext>,
    pub upgrade: UpgradeContext,
    /// The installer image the updater stack runs; `None` when the release names none.
    pub installer: Option<InstallerContext>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpgradeContext {
    /// EventBridge schedule expression of the unattended upgrade job.
    pub schedule: String,
    /// The configuration the job runs with, as TOML: handed to the task in
    /// `STACKWRIGHT_CONFIG_TEXT`. It holds no secret (the registration token lives in its own
    /// file, the identity in Secrets Manager).
    pub config_text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstallerContext {
    pub version: String,
    /// The mirror repository in the customer's ECR, `<instance>/installer`.
    pub repository: String,
    pub digest: String,
    /// The vendor's ECR repositories the job mirrors images from: the parents of the release's
    /// image repositories, so that a later release's new component under the same prefix is
    /// covered.
    pub source_repositories: Vec<SourceRepositoryContext>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SourceRepositoryContext {
    pub account: String,
    pub region: String,
    /// A repository name or a `prefix/*` pattern.
    pub pattern: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceContext {
    pub name: String,
    pub domain: String,
    pub region: String,
    /// The configured certificate; when `None` the platform stack requests one.
    pub certificate_arn: Option<String>,
    /// The name of every stack the instance can have.
    pub stack_names: Vec<String>,
    /// The DynamoDB table holding the instance's state, lock and history.
    pub state_table: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkContext {
    pub mode: NetworkMode,
    /// Main load balancer scheme: internet-facing in `public` mode, internal otherwise.
    pub internet_facing: bool,
    /// NAT gateways, one per zone, for egress.
    pub nat_egress: bool,
    /// Public subnets and an internet gateway: for the load balancer or NAT gateways, or for the
    /// public-services endpoint in `all-private` mode (ingress only: no private route uses it).
    pub public_subnets: bool,
    pub public_services: bool,
    pub vpc_cidr: String,
    pub zones: Vec<ZoneContext>,
    /// Interface endpoints, in `all-private` mode only.
    pub interface_endpoints: Vec<EndpointContext>,
    /// Gateway endpoints, in every mode (they are free and keep S3 and DynamoDB traffic off NAT).
    pub gateway_endpoints: Vec<EndpointContext>,
    /// PrivateLink service of the control plane, in `all-private` mode when configured.
    pub control_plane_endpoint_service: Option<String>,
    /// Ranges allowed to reach the main load balancer.
    pub ingress_cidrs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ZoneContext {
    pub index: usize,
    pub suffix: char,
    pub private_cidr: String,
    pub public_cidr: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointContext {
    /// Used in logical IDs, such as `EcrApi` for `ecr.api`.
    pub logical_id: String,
    /// The service's short name, such as `ecr.api`.
    pub service: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseContext {
    pub version: String,
    pub components: Vec<ComponentContext>,
    /// The component that answers paths no rule matches, if one routes `/*`.
    pub default_component: Option<String>,
    /// Listener rules of the public-services endpoint.
    pub public_rules: Vec<RuleContext>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentContext {
    pub name: String,
    pub logical_id: String,
    /// The mirror repository in the customer's ECR.
    pub repository: String,
    pub digest: String,
    pub port: u16,
    pub cpu: u32,
    pub memory: u32,
    pub desired_count: u32,
    pub health_check_path: String,
    /// Whether the main load balancer routes any path to it.
    pub routed: bool,
    /// Whether its task role may use the data bucket and table.
    pub data_access: bool,
    /// Listener rules of the main load balancer for this component.
    pub rules: Vec<RuleContext>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleContext {
    pub logical_id: String,
    pub priority: u32,
    pub paths: Vec<String>,
    /// Logical ID of the component the rule forwards to.
    pub component: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdentityContext {
    /// The issuer host: the instance serves OIDC discovery at `https://<domain>`.
    pub provider_host: String,
    pub audience: String,
    pub subject_patterns: Vec<String>,
    pub managed_policy_arns: Vec<String>,
}

impl TemplateContext {
    pub fn new(config: &ConfigFile, release: &ReleaseManifest) -> Self {
        let mode = config.network.mode;
        let all_private = mode == NetworkMode::AllPrivate;
        let public_services = all_private && config.network.public_services;
        let zones =
            network::subnet_layout(config.network.vpc_cidr, config.network.availability_zones)
                .into_iter()
                .map(|zone| ZoneContext {
                    index: zone.index,
                    suffix: zone.suffix,
                    private_cidr: zone.private_cidr.to_string(),
                    public_cidr: zone.public_cidr.to_string(),
                })
                .collect();
        let endpoints = |services: &[&str]| {
            services
                .iter()
                .map(|service| EndpointContext {
                    logical_id: pascal_case(service),
                    service: (*service).to_owned(),
                })
                .collect::<Vec<_>>()
        };
        let ingress_cidrs = match &config.network.ingress_cidrs {
            Some(cidrs) => cidrs.iter().map(ToString::to_string).collect(),
            None if mode == NetworkMode::Public => vec!["0.0.0.0/0".to_owned()],
            None => vec![config.network.vpc_cidr.to_string()],
        };
        TemplateContext {
            installer_version: env!("CARGO_PKG_VERSION"),
            instance: InstanceContext {
                name: config.instance.name.clone(),
                domain: config.instance.domain.clone(),
                region: config.instance.region.clone(),
                certificate_arn: config.instance.certificate_arn.clone(),
                stack_names: StackKind::ALL
                    .iter()
                    .map(|kind| kind.stack_name(&config.instance.name))
                    .collect(),
                state_table: crate::stacks::state_table_name(&config.instance.name),
            },
            network: NetworkContext {
                mode,
                internet_facing: mode.internet_facing(),
                nat_egress: mode.nat_egress(),
                public_subnets: mode.nat_egress() || public_services,
                public_services,
                vpc_cidr: config.network.vpc_cidr.to_string(),
                zones,
                interface_endpoints: if all_private {
                    endpoints(network::INTERFACE_ENDPOINT_SERVICES)
                } else {
                    Vec::new()
                },
                gateway_endpoints: endpoints(network::GATEWAY_ENDPOINT_SERVICES),
                control_plane_endpoint_service: if all_private {
                    config.network.control_plane_endpoint_service.clone()
                } else {
                    None
                },
                ingress_cidrs,
            },
            release: release_context(&config.instance.name, release, public_services),
            identity: config.identity.as_ref().map(|identity| IdentityContext {
                provider_host: config.instance.domain.clone(),
                audience: identity.audience.clone(),
                subject_patterns: identity.subject_patterns.clone(),
                managed_policy_arns: identity.managed_policy_arns.clone(),
            }),
            upgrade: UpgradeContext {
                schedule: config.upgrade.schedule.clone(),
                config_text: config.to_toml(),
            },
            installer: release
                .installer
                .as_ref()
                .map(|installer| InstallerContext {
                    version: installer.version.to_string(),
                    repository: format!("{}/{INSTALLER_REPOSITORY}", config.instance.name),
                    digest: installer.image.digest.clone(),
                    source_repositories: source_repositories(release),
                }),
        }
    }
}

/// The vendor's ECR repositories the release's images come from, as IAM resource patterns:
/// `stackwright/server` becomes `stackwright/*`. Images in registries other than ECR need no
/// IAM permission and are left out.
fn source_repositories(release: &ReleaseManifest) -> Vec<SourceRepositoryContext> {
    let images = release
        .components
        .iter()
        .map(|component| &component.image)
        .chain(release.installer.iter().map(|installer| &installer.image));
    let mut repositories = std::collections::BTreeSet::new();
    for image in images {
        let Some((account, region)) = crate::release::ecr_account_region(&image.registry) else {
            continue;
        };
        let pattern = match image.repository.rsplit_once('/') {
            Some((parent, _)) => format!("{parent}/*"),
            None => image.repository.clone(),
        };
        repositories.insert(SourceRepositoryContext {
            account,
            region,
            pattern,
        });
    }
    repositories.into_iter().collect()
}

/// A listener rule priority that depends only on the component and the rule's position in it,
/// so that a release adding or removing another component's rules never moves this one: an
/// update that gave a new rule a priority an existing rule still holds would fail.
fn stable_priority(
    component: &str,
    index: usize,
    taken: &mut std::collections::BTreeSet<u32>,
) -> u32 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{component}#{index}").as_bytes());
    let mut priority =
        1 + u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 49_999;
    while !taken.insert(priority) {
        priority = priority % 49_999 + 1;
    }
    priority
}

fn release_context(
    instance: &str,
    release: &ReleaseManifest,
    public_services: bool,
) -> ReleaseContext {
    let mut taken = std::collections::BTreeSet::new();
    let mut default_component = None;
    let mut public_rules = Vec::new();
    let components = release
        .components
        .iter()
        .map(|component| {
            let logical_id = pascal_case(&component.name);
            let mut rules = Vec::new();
            let specific: Vec<&String> = component
                .paths
                .iter()
                .filter(|path| path.as_str() != "/*")
                .collect();
            if specific.len() < component.paths.len() && default_component.is_none() {
                default_component = Some(logical_id.clone());
            }
            for (index, paths) in specific.chunks(PATHS_PER_RULE).enumerate() {
                rules.push(RuleContext {
                    logical_id: format!("{logical_id}Rule{}", index + 1),
                    priority: stable_priority(&component.name, index, &mut taken),
                    paths: paths.iter().map(|path| (*path).clone()).collect(),
                    component: logical_id.clone(),
                });
            }
            if public_services {
                let exposed: Vec<String> = component
                    .paths
                    .iter()
                    .filter(|path| PUBLIC_SERVICE_PATHS.contains(&path.as_str()))
                    .cloned()
                    .collect();
                if !exposed.is_empty() {
                    public_rules.push(RuleContext {
                        logical_id: format!("{logical_id}PublicRule"),
                        priority: public_rules.len() as u32 + 1,
                        paths: exposed,
                        component: logical_id.clone(),
                    });
                }
            }
            ComponentContext {
                name: component.name.clone(),
                repository: format!("{instance}/{}", component.name),
                digest: component.image.digest.clone(),
                port: component.port,
                cpu: component.cpu,
                memory: component.memory,
                desired_count: component.desired_count,
                health_check_path: component.health_check_path.clone(),
                routed: !component.paths.is_empty(),
                data_access: component.data_access,
                rules,
                logical_id,
            }
        })
        .collect();
    ReleaseContext {
        version: release.version.to_string(),
        components,
        default_component,
        public_rules,
    }
}

/// `ecr.api` → `EcrApi`, `workspace-manager` → `WorkspaceManager`.
pub fn pascal_case(name: &str) -> String {
    name.split(|character: char| !character.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut characters = part.chars();
            characters
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + characters.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_priorities_do_not_move_when_another_component_changes() {
        let mut first = std::collections::BTreeSet::new();
        let server = stable_priority("server", 0, &mut first);
        let mut second = std::collections::BTreeSet::new();
        stable_priority("dashboard", 0, &mut second);
        stable_priority("dashboard", 1, &mut second);
        assert_eq!(stable_priority("server", 0, &mut second), server);
        assert!((1..=49_999).contains(&server));
    }

    #[test]
    fn taken_priorities_are_skipped() {
        let mut taken = std::collections::BTreeSet::new();
        let first = stable_priority("server", 0, &mut taken);
        let mut crowded: std::collections::BTreeSet<u32> = [first].into();
        assert_ne!(stable_priority("server", 0, &mut crowded), first);
    }

    #[test]
    fn names_become_logical_ids() {
        assert_eq!(pascal_case("ecr.api"), "EcrApi");
        assert_eq!(pascal_case("workspace-manager"), "WorkspaceManager");
        assert_eq!(pascal_case("ecs-agent"), "EcsAgent");
    }
}
