//! The service quotas a networking mode consumes: which ones, how many of each, and AWS's
//! default for each when the account's own value cannot be read.

use serde::Serialize;

use crate::config::ConfigFile;
use crate::network::{INTERFACE_ENDPOINT_SERVICES, NetworkMode};

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaResource {
    Vpcs,
    InternetGateways,
    /// Counted in the availability zone that has the most.
    NatGatewaysPerZone,
    ElasticIps,
    GatewayEndpoints,
    /// Counted per VPC; the instance's VPC is new, so nothing is in use yet.
    InterfaceEndpointsPerVpc,
}

impl QuotaResource {
    /// Whether current usage matters (a per-VPC quota on a new VPC starts at zero).
    pub fn counted(self) -> bool {
        self != QuotaResource::InterfaceEndpointsPerVpc
    }

    /// How the need is counted, for the report.
    pub fn scope(self) -> &'static str {
        match self {
            QuotaResource::NatGatewaysPerZone => " per zone (usage in the fullest zone)",
            QuotaResource::InterfaceEndpointsPerVpc => " in the new VPC",
            _ => " in the region",
        }
    }

    /// The command that lists what uses the quota, for the fix.
    pub fn how_to_list(self) -> &'static str {
        match self {
            QuotaResource::Vpcs => "aws ec2 describe-vpcs lists them",
            QuotaResource::InternetGateways => "aws ec2 describe-internet-gateways lists them",
            QuotaResource::NatGatewaysPerZone => "aws ec2 describe-nat-gateways lists them",
            QuotaResource::ElasticIps => "aws ec2 describe-addresses lists them",
            QuotaResource::GatewayEndpoints => {
                "aws ec2 describe-vpc-endpoints --filters Name=vpc-endpoint-type,Values=Gateway lists them"
            }
            QuotaResource::InterfaceEndpointsPerVpc => "the new VPC has none yet",
        }
    }
}

/// One quota the install consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaSpec {
    /// Service Quotas' service code: `vpc` or `ec2`.
    pub service_code: &'static str,
    /// Service Quotas' quota code, such as `L-F678F1CE`.
    pub quota_code: &'static str,
    pub name: &'static str,
    pub resource: QuotaResource,
    /// How many the install creates.
    pub needed: u32,
    /// AWS's default, used when the account's value cannot be read.
    pub aws_default: u32,
}

/// Where a quota's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum QuotaSource {
    ServiceQuotas,
    /// EC2's `DescribeAccountAttributes` (`vpc-max-elastic-ips`).
    AccountAttribute,
    /// AWS's documented default, because the account's value could not be read.
    Default {
        reason: String,
    },
}

/// An account's limit for one quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaValue {
    pub value: u32,
    pub source: QuotaSource,
}

/// The quotas the configuration's network stack consumes, and how much of each.
pub fn quotas_for(config: &ConfigFile) -> Vec<QuotaSpec> {
    let network = &config.network;
    let zones = u32::from(network.availability_zones);
    let public_subnets = network.mode != NetworkMode::AllPrivate || network.public_services;
    let mut list = vec![QuotaSpec {
        service_code: "vpc",
        quota_code: "L-F678F1CE",
        name: "VPCs per Region",
        resource: QuotaResource::Vpcs,
        needed: 1,
        aws_default: 5,
    }];
    if public_subnets {
        list.push(QuotaSpec {
            service_code: "vpc",
            quota_code: "L-A4707A72",
            name: "Internet gateways per Region",
            resource: QuotaResource::InternetGateways,
            needed: 1,
            aws_default: 5,
        });
    }
    if network.mode.nat_egress() {
        list.push(QuotaSpec {
            service_code: "vpc",
            quota_code: "L-FE5A380F",
            name: "NAT gateways per Availability Zone",
            resource: QuotaResource::NatGatewaysPerZone,
            needed: 1,
            aws_default: 5,
        });
        list.push(QuotaSpec {
            service_code: "ec2",
            quota_code: "L-0263D0A3",
            name: "EC2-VPC Elastic IPs",
            resource: QuotaResource::ElasticIps,
            needed: zones,
            aws_default: 5,
        });
    }
    list.push(QuotaSpec {
        service_code: "vpc",
        quota_code: "L-1B52E74A",
        name: "Gateway VPC endpoints per Region",
        resource: QuotaResource::GatewayEndpoints,
        needed: crate::network::GATEWAY_ENDPOINT_SERVICES.len() as u32,
        aws_default: 20,
    });
    if network.mode == NetworkMode::AllPrivate {
        let private_link = u32::from(network.control_plane_endpoint_service.is_some());
        list.push(QuotaSpec {
            service_code: "vpc",
            quota_code: "L-29B6F2EB",
            name: "Interface VPC endpoints per VPC",
            resource: QuotaResource::InterfaceEndpointsPerVpc,
            needed: INTERFACE_ENDPOINT_SERVICES.len() as u32 + private_link,
            aws_default: 50,
        });
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: &str, extra: &str) -> ConfigFile {
        let text = format!(
            "schema_version = 1\n[instance]\nname = \"acme-dev\"\ndomain = \"cde.acme.example\"\nregion = \"us-east-1\"\n[network]\nmode = \"{mode}\"\navailability_zones = 2\n{extra}[control_plane]\nurl = \"https://control.example.com\"\n"
        );
        ConfigFile::parse(&text, std::path::Path::new("stackwright.toml")).unwrap()
    }

    fn needs(config: &ConfigFile) -> Vec<(&'static str, u32)> {
        quotas_for(config)
            .into_iter()
            .map(|spec| (spec.quota_code, spec.needed))
            .collect()
    }

    #[test]
    fn nat_modes_need_an_elastic_ip_per_zone() {
        assert_eq!(
            needs(&config("private", "")),
            [
                ("L-F678F1CE", 1),
                ("L-A4707A72", 1),
                ("L-FE5A380F", 1),
                ("L-0263D0A3", 2),
                ("L-1B52E74A", 2)
            ]
        );
    }

    #[test]
    fn all_private_needs_endpoints_and_no_nat() {
        assert_eq!(
            needs(&config("all-private", "")),
            [("L-F678F1CE", 1), ("L-1B52E74A", 2), ("L-29B6F2EB", 17)]
        );
        assert_eq!(
            needs(&config("all-private", "public_services = true\n"))[1],
            ("L-A4707A72", 1)
        );
    }
}
