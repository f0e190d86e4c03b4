//! Networking modes: what each one provisions, the subnet layout of the VPC, and the
//! connectivity allow-list (`stackwright network requirements`) a mode needs.

use std::fmt;

use ipnet::Ipv4Net;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the instance is exposed and how it reaches the internet.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// Internet-facing load balancer, egress through NAT gateways.
    Public,
    /// Internal load balancer only, egress through NAT gateways.
    Private,
    /// Internal load balancer only, no route to the internet: AWS services through VPC
    /// endpoints, the control plane through PrivateLink or the customer's proxy.
    AllPrivate,
}

impl NetworkMode {
    pub const ALL: [NetworkMode; 3] = [
        NetworkMode::Public,
        NetworkMode::Private,
        NetworkMode::AllPrivate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Public => "public",
            NetworkMode::Private => "private",
            NetworkMode::AllPrivate => "all-private",
        }
    }

    /// Whether the main load balancer is reachable from the internet.
    pub fn internet_facing(self) -> bool {
        self == NetworkMode::Public
    }

    /// Whether the VPC has NAT gateways for egress to the internet.
    pub fn nat_egress(self) -> bool {
        self != NetworkMode::AllPrivate
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The AWS services the instance and its updater call, each reached through an interface
/// endpoint in `all-private` mode. S3 and DynamoDB use gateway endpoints in every mode.
pub const INTERFACE_ENDPOINT_SERVICES: &[&str] = &[
    "autoscaling",
    "cloudformation",
    "ec2",
    "ec2messages",
    "ecr.api",
    "ecr.dkr",
    "ecs",
    "ecs-agent",
    "ecs-telemetry",
    "elasticloadbalancing",
    "kms",
    "logs",
    "monitoring",
    "secretsmanager",
    "ssm",
    "ssmmessages",
    "sts",
];

/// Services reached through gateway endpoints (free, attached to route tables).
pub const GATEWAY_ENDPOINT_SERVICES: &[&str] = &["dynamodb", "s3"];

/// The subnets of one availability zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneSubnets {
    /// 0-based position among the zones `Fn::GetAZs` returns.
    pub index: usize,
    /// `A`, `B` or `C`: the suffix of the zone's logical IDs.
    pub suffix: char,
    pub private_cidr: Ipv4Net,
    pub public_cidr: Ipv4Net,
}

/// Carves the VPC range into subnets: the first three quarters are the private subnets (where
/// the workloads and endpoints live, so they get the room), and the last quarter is split into
/// four for the public subnets, which hold only load balancers and NAT gateways.
pub fn subnet_layout(vpc: Ipv4Net, zones: u8) -> Vec<ZoneSubnets> {
    let quarters: Vec<Ipv4Net> = vpc
        .subnets(vpc.prefix_len() + 2)
        .expect("a VPC prefix of /22 or shorter splits into quarters")
        .collect();
    let public: Vec<Ipv4Net> = quarters[3]
        .subnets(vpc.prefix_len() + 4)
        .expect("a quarter splits into four")
        .collect();
    (0..usize::from(zones))
        .map(|index| ZoneSubnets {
            index,
            suffix: char::from(b'A' + index as u8),
            private_cidr: quarters[index],
            public_cidr: public[index],
        })
        .collect()
}

/// Which way a connection is opened, seen from the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The instance opens the connection.
    Out,
    /// Someone else opens a connection to the instance.
    In,
}

impl fmt::Display for Direction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Direction::Out => "out",
            Direction::In => "in",
        })
    }
}

/// One entry of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// What needs the connection: `control-plane`, `vscode`, ...
    pub purpose: &'static str,
    pub direction: Direction,
    /// A host, a wildcard domain, or a description of a destination the customer chooses.
    pub destination: String,
    pub port: u16,
    /// Whether the instance cannot work without it (as opposed to one feature).
    pub required: bool,
    /// How the traffic flows in this mode.
    pub route: String,
    /// Why it is needed.
    pub reason: &'static str,
}

/// What the allow-list names beyond the mode, as the configuration sets it. Plain values, so
/// that networking stays below the configuration that supplies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequirementInputs {
    pub domain: String,
    pub region: String,
    /// The host of the control plane's URL.
    pub control_plane_host: String,
    /// Whether `all-private` exposes the OIDC and webhook paths through a public endpoint.
    pub public_services: bool,
    /// Whether the control plane is reached through a PrivateLink endpoint service.
    pub private_link: bool,
}

/// The connectivity the instance needs in `mode`, for the configuration's domain and control
/// plane when one is given.
pub fn requirements(mode: NetworkMode, inputs: Option<&RequirementInputs>) -> Vec<Requirement> {
    let domain = inputs.map_or("<domain>".to_owned(), |inputs| inputs.domain.clone());
    let region = inputs.map_or("<region>".to_owned(), |inputs| inputs.region.clone());
    let control_plane = inputs.map_or("<control plane host>".to_owned(), |inputs| {
        inputs.control_plane_host.clone()
    });
    let public_services = inputs.is_some_and(|inputs| inputs.public_services);
    let private_link = inputs.is_some_and(|inputs| inputs.private_link);

    let egress = match mode {
        NetworkMode::AllPrivate => "customer proxy or network (no route to the internet)",
        _ => "NAT gateway",
    };
    let aws = match mode {
        NetworkMode::AllPrivate => "VPC endpoint",
        _ => "NAT gateway (S3 and DynamoDB through gateway endpoints)",
    };
    let inbound_third_party = match mode {
        NetworkMode::Public => "internet-facing load balancer",
        NetworkMode::Private => "internal load balancer (the customer's network must route it)",
        NetworkMode::AllPrivate if public_services => {
            "public-services endpoint (OIDC and webhook paths only)"
        }
        NetworkMode::AllPrivate => "internal load balancer (the customer's network must route it)",
    };
    let users = match mode {
        NetworkMode::Public => "internet-facing load balancer",
        _ => "internal load balancer",
    };
    let control_plane_route = if mode == NetworkMode::AllPrivate && private_link {
        "PrivateLink endpoint".to_owned()
    } else {
        egress.to_owned()
    };

    let out = |purpose, destination: String, route: &str, required, reason| Requirement {
        purpose,
        direction: Direction::Out,
        destination,
        port: 443,
        required,
        route: route.to_owned(),
        reason,
    };
    let mut list = vec![
        out(
            "control-plane",
            control_plane,
            &control_plane_route,
            true,
            "heartbeats, update checks and operation reports to the vendor's control plane",
        ),
        out(
            "telemetry",
            format!("s3.{region}.amazonaws.com"),
            aws,
            false,
            "observability data exported to the vendor's bucket for support",
        ),
        out(
            "image-registry",
            format!("*.dkr.ecr.{region}.amazonaws.com"),
            aws,
            true,
            "pulling release images from the vendor's ECR into this account's ECR",
        ),
        out(
            "aws-services",
            "*.amazonaws.com".to_owned(),
            aws,
            true,
            "AWS APIs: ECR, S3, DynamoDB, STS, CloudFormation, ECS, CloudWatch Logs, KMS, Secrets Manager",
        ),
        out(
            "aws-services",
            "*.aws.amazon.com".to_owned(),
            aws,
            true,
            "AWS APIs served under aws.amazon.com",
        ),
        out(
            "sso",
            "your SSO provider's OIDC issuer".to_owned(),
            egress,
            true,
            "users log in through OIDC; the callback resolves on the user's machine, so only outbound is needed",
        ),
        out(
            "git-provider",
            "your Git provider".to_owned(),
            egress,
            true,
            "reading repositories",
        ),
        Requirement {
            purpose: "git-provider",
            direction: Direction::In,
            destination: format!("{domain} (webhook paths)"),
            port: 443,
            required: false,
            route: inbound_third_party.to_owned(),
            reason: "webhooks from the Git provider trigger prebuilds",
        },
        out(
            "identity-provider",
            "the identity provider workspaces federate with".to_owned(),
            egress,
            false,
            "OIDC from workspaces to third parties such as AWS",
        ),
        Requirement {
            purpose: "identity-provider",
            direction: Direction::In,
            destination: format!("{domain} (OIDC discovery and keys)"),
            port: 443,
            required: false,
            route: inbound_third_party.to_owned(),
            reason: "third parties fetch the instance's OIDC configuration and signing keys",
        },
    ];
    for (host, reason) in [
        (
            "open-vsx.org",
            "VS Code extension search, install and updates",
        ),
        (
            "openvsxorg.blob.core.windows.net",
            "VS Code extension downloads",
        ),
        ("www.schemastore.org", "JSON language features of VS Code"),
    ] {
        list.push(out("vscode", host.to_owned(), egress, false, reason));
    }
    for host in [
        "download.jetbrains.com",
        "download-cf.jetbrains.com",
        "download-cdn.jetbrains.com",
        "data.services.jetbrains.com",
    ] {
        list.push(out(
            "jetbrains",
            host.to_owned(),
            egress,
            false,
            "JetBrains marketplace and client and backend downloads",
        ));
    }
    for destination in [domain.clone(), format!("*.{domain}")] {
        list.push(Requirement {
            purpose: "instance",
            direction: Direction::In,
            destination: destination.clone(),
            port: 443,
            required: true,
            route: users.to_owned(),
            reason: "users and workspaces reach the instance and its workspace subdomains",
        });
        list.push(out(
            "instance",
            destination,
            "inside the VPC",
            true,
            "components of the instance call each other through its domain",
        ));
    }
    list
}

/// The host part of a URL, without scheme, credentials, port or path.
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_and_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host_and_port.starts_with('[') {
        return host_and_port
            .split(']')
            .next()
            .map_or(host_and_port, |host| &host[1..]);
    }
    host_and_port.split(':').next().unwrap_or(host_and_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigFile;

    #[test]
    fn a_sixteen_splits_into_private_quarters_and_small_public_subnets() {
        let layout = subnet_layout("10.40.0.0/16".parse().unwrap(), 3);
        let private: Vec<String> = layout
            .iter()
            .map(|zone| zone.private_cidr.to_string())
            .collect();
        let public: Vec<String> = layout
            .iter()
            .map(|zone| zone.public_cidr.to_string())
            .collect();
        assert_eq!(private, ["10.40.0.0/18", "10.40.64.0/18", "10.40.128.0/18"]);
        assert_eq!(
            public,
            ["10.40.192.0/20", "10.40.208.0/20", "10.40.224.0/20"]
        );
    }

    #[test]
    fn the_smallest_vpc_still_gives_every_zone_a_subnet() {
        let layout = subnet_layout("10.1.4.0/22".parse().unwrap(), 3);
        assert_eq!(layout[2].private_cidr.to_string(), "10.1.6.0/24");
        assert_eq!(layout[2].public_cidr.to_string(), "10.1.7.128/26");
    }

    #[test]
    fn hosts_are_taken_from_urls() {
        assert_eq!(
            host_of("https://control.example.com/api"),
            "control.example.com"
        );
        assert_eq!(host_of("http://127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("https://user@host.example:8443/x"), "host.example");
        assert_eq!(host_of("http://[::1]:80/"), "::1");
    }

    #[test]
    fn all_private_routes_the_control_plane_through_private_link_when_configured() {
        let mut config: ConfigFile = toml::from_str(
            r#"schema_version = 1
[instance]
name = "acme-dev"
domain = "cde.acme.example"
region = "us-east-1"
[network]
mode = "all-private"
control_plane_endpoint_service = "com.amazonaws.vpce.us-east-1.vpce-svc-0123"
[control_plane]
url = "https://control.example.com"
"#,
        )
        .unwrap();
        let control_plane = |config: &ConfigFile| {
            requirements(NetworkMode::AllPrivate, Some(&config.requirement_inputs()))
                .into_iter()
                .find(|requirement| requirement.purpose == "control-plane")
                .unwrap()
        };
        assert_eq!(control_plane(&config).route, "PrivateLink endpoint");
        assert_eq!(control_plane(&config).destination, "control.example.com");
        config.network.control_plane_endpoint_service = None;
        assert!(control_plane(&config).route.starts_with("customer proxy"));
    }
}
