//! [`AccountReader`] on STS, EC2, Service Quotas and ACM: what preflight reads from the
//! account besides CloudFormation.

use aws_sdk_ec2::types::Filter;

use super::{Aws, CallerIdentity, sdk_error, timestamp};
use crate::preflight::{
    AccountReader, Certificate, QuotaResource, QuotaSource, QuotaSpec, QuotaValue, RegionStatus,
};
use crate::provision::DeployError;

/// The account-side reads of preflight.
#[derive(Debug, Clone)]
pub struct AwsAccount {
    aws: Aws,
    ec2: aws_sdk_ec2::Client,
    quotas: aws_sdk_servicequotas::Client,
    acm: aws_sdk_acm::Client,
}

impl AwsAccount {
    pub fn new(aws: &Aws) -> Self {
        AwsAccount {
            aws: aws.clone(),
            ec2: aws_sdk_ec2::Client::new(&aws.config),
            quotas: aws_sdk_servicequotas::Client::new(&aws.config),
            acm: aws_sdk_acm::Client::new(&aws.config),
        }
    }

    /// `vpc-max-elastic-ips` from EC2's account attributes: the Elastic IP limit where
    /// Service Quotas does not answer.
    async fn elastic_ip_attribute(&self) -> Result<Option<u32>, DeployError> {
        let output = self
            .ec2
            .describe_account_attributes()
            .send()
            .await
            .map_err(|error| sdk_error("ec2:DescribeAccountAttributes", error))?;
        Ok(output
            .account_attributes()
            .iter()
            .find(|attribute| attribute.attribute_name() == Some("vpc-max-elastic-ips"))
            .and_then(|attribute| attribute.attribute_values().first())
            .and_then(|value| value.attribute_value())
            .and_then(|value| value.parse().ok()))
    }

    async fn count_vpcs(&self) -> Result<u32, DeployError> {
        let mut count = 0;
        let mut token = None;
        loop {
            let output = self
                .ec2
                .describe_vpcs()
                .set_next_token(token)
                .send()
                .await
                .map_err(|error| sdk_error("ec2:DescribeVpcs", error))?;
            count += output.vpcs().len() as u32;
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(count);
            }
        }
    }

    async fn count_internet_gateways(&self) -> Result<u32, DeployError> {
        let mut count = 0;
        let mut token = None;
        loop {
            let output = self
                .ec2
                .describe_internet_gateways()
                .set_next_token(token)
                .send()
                .await
                .map_err(|error| sdk_error("ec2:DescribeInternetGateways", error))?;
            count += output.internet_gateways().len() as u32;
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(count);
            }
        }
    }

    async fn count_elastic_ips(&self) -> Result<u32, DeployError> {
        let output = self
            .ec2
            .describe_addresses()
            .send()
            .await
            .map_err(|error| sdk_error("ec2:DescribeAddresses", error))?;
        Ok(output.addresses().len() as u32)
    }

    async fn count_gateway_endpoints(&self) -> Result<u32, DeployError> {
        let mut count = 0;
        let mut token = None;
        loop {
            let output = self
                .ec2
                .describe_vpc_endpoints()
                .filters(
                    Filter::builder()
                        .name("vpc-endpoint-type")
                        .values("Gateway")
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(|error| sdk_error("ec2:DescribeVpcEndpoints", error))?;
            count += output
                .vpc_endpoints()
                .iter()
                .filter(|endpoint| {
                    !matches!(
                        endpoint.state().map(|state| state.as_str().to_ascii_lowercase()),
                        Some(state) if state == "deleted" || state == "deleting"
                    )
                })
                .count() as u32;
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(count);
            }
        }
    }

    /// NAT gateways (pending or available) in the availability zone that has the most.
    async fn most_nat_gateways_in_a_zone(&self) -> Result<u32, DeployError> {
        let mut subnets = Vec::new();
        let mut token = None;
        loop {
            let output = self
                .ec2
                .describe_nat_gateways()
                .filter(
                    Filter::builder()
                        .name("state")
                        .values("pending")
                        .values("available")
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(|error| sdk_error("ec2:DescribeNatGateways", error))?;
            subnets.extend(
                output
                    .nat_gateways()
                    .iter()
                    .filter_map(|gateway| gateway.subnet_id().map(str::to_owned)),
            );
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        if subnets.is_empty() {
            return Ok(0);
        }
        let mut unique = subnets.clone();
        unique.sort();
        unique.dedup();
        // A filter, not SubnetIds: a subnet deleted under a gateway that is going away must not
        // fail the count (SubnetIds refuses an unknown ID); such a gateway counts as "unknown".
        let output = self
            .ec2
            .describe_subnets()
            .filters(
                Filter::builder()
                    .name("subnet-id")
                    .set_values(Some(unique))
                    .build(),
            )
            .send()
            .await
            .map_err(|error| sdk_error("ec2:DescribeSubnets", error))?;
        let mut per_zone = std::collections::BTreeMap::<String, u32>::new();
        for subnet in &subnets {
            let zone = output
                .subnets()
                .iter()
                .find(|found| found.subnet_id() == Some(subnet.as_str()))
                .and_then(|found| found.availability_zone())
                .unwrap_or("unknown");
            *per_zone.entry(zone.to_owned()).or_default() += 1;
        }
        Ok(per_zone.into_values().max().unwrap_or(0))
    }
}

fn certificate_names(domain: &str, alternatives: &[String]) -> Vec<String> {
    let mut names = vec![domain.to_owned()];
    for name in alternatives {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

impl AccountReader for AwsAccount {
    async fn identity(&self) -> Result<CallerIdentity, DeployError> {
        self.aws.caller_identity().await
    }

    async fn region_status(&self, region: &str) -> Result<RegionStatus, DeployError> {
        let output = self
            .ec2
            .describe_regions()
            .all_regions(true)
            .send()
            .await
            .map_err(|error| sdk_error("ec2:DescribeRegions", error))?;
        let Some(found) = output
            .regions()
            .iter()
            .find(|candidate| candidate.region_name() == Some(region))
        else {
            return Ok(RegionStatus::Unknown);
        };
        Ok(match found.opt_in_status() {
            Some("not-opted-in") => RegionStatus::NotOptedIn,
            _ => RegionStatus::Enabled,
        })
    }

    async fn quota(&self, spec: &QuotaSpec) -> QuotaValue {
        let read = self
            .quotas
            .get_service_quota()
            .service_code(spec.service_code)
            .quota_code(spec.quota_code)
            .send()
            .await
            .map_err(|error| sdk_error("servicequotas:GetServiceQuota", error));
        let reason = match read {
            Ok(output) => match output.quota().and_then(|quota| quota.value()) {
                Some(value) if value >= 0.0 => {
                    return QuotaValue {
                        value: value as u32,
                        source: QuotaSource::ServiceQuotas,
                    };
                }
                _ => "Service Quotas answered without a value".to_owned(),
            },
            Err(error) => error.to_string(),
        };
        // EC2 also tells the Elastic IP limit; Service Quotas may not (or the emulator may not
        // know the ec2 service code).
        if spec.resource == QuotaResource::ElasticIps
            && let Ok(Some(value)) = self.elastic_ip_attribute().await
        {
            return QuotaValue {
                value,
                source: QuotaSource::AccountAttribute,
            };
        }
        QuotaValue {
            value: spec.aws_default,
            source: QuotaSource::Default { reason },
        }
    }

    async fn usage(&self, resource: QuotaResource) -> Result<u32, DeployError> {
        match resource {
            QuotaResource::Vpcs => self.count_vpcs().await,
            QuotaResource::InternetGateways => self.count_internet_gateways().await,
            QuotaResource::NatGatewaysPerZone => self.most_nat_gateways_in_a_zone().await,
            QuotaResource::ElasticIps => self.count_elastic_ips().await,
            QuotaResource::GatewayEndpoints => self.count_gateway_endpoints().await,
            QuotaResource::InterfaceEndpointsPerVpc => Ok(0),
        }
    }

    async fn certificate(&self, arn: &str) -> Result<Option<Certificate>, DeployError> {
        let output = match self
            .acm
            .describe_certificate()
            .certificate_arn(arn)
            .send()
            .await
        {
            Ok(output) => output,
            Err(error) => {
                let error = sdk_error("acm:DescribeCertificate", error);
                return if error.code() == Some("ResourceNotFoundException") {
                    Ok(None)
                } else {
                    Err(error)
                };
            }
        };
        let Some(detail) = output.certificate() else {
            return Ok(None);
        };
        let domain = detail.domain_name().unwrap_or_default();
        Ok(Some(Certificate {
            arn: arn.to_owned(),
            domain: domain.to_owned(),
            names: certificate_names(domain, detail.subject_alternative_names()),
            status: detail
                .status()
                .map(|status| status.as_str().to_owned())
                .unwrap_or_default(),
            not_after: detail.not_after().map(timestamp),
        }))
    }

    async fn issued_certificates(&self) -> Result<Vec<Certificate>, DeployError> {
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let output = self
                .acm
                .list_certificates()
                .certificate_statuses(aws_sdk_acm::types::CertificateStatus::Issued)
                .set_next_token(token)
                .send()
                .await
                .map_err(|error| sdk_error("acm:ListCertificates", error))?;
            for summary in output.certificate_summary_list() {
                let domain = summary.domain_name().unwrap_or_default();
                found.push(Certificate {
                    arn: summary.certificate_arn().unwrap_or_default().to_owned(),
                    domain: domain.to_owned(),
                    names: certificate_names(domain, summary.subject_alternative_name_summaries()),
                    status: summary
                        .status()
                        .map(|status| status.as_str().to_owned())
                        .unwrap_or_default(),
                    not_after: summary.not_after().map(timestamp),
                });
            }
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(found);
            }
        }
    }
}
