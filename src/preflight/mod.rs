//! Preflight checks: everything that can be known to stop an install before it creates
//! anything. Who the credentials act as, whether the region is enabled, stacks of the instance
//! left failed or still busy, the service quotas the networking mode consumes against what the
//! account already uses, the certificate, and the connectivity the mode needs from here.
//!
//! Each check passes, warns, fails or is skipped, and every warning and failure carries its fix.
//! The AWS side is read through [`AccountReader`] and [`StackDeployer`], connections go through
//! [`dial::Dialer`]; the checks themselves are plain functions of what those return.

pub mod dial;
mod quota;

use std::fmt;

use serde::Serialize;

pub use quota::{QuotaResource, QuotaSource, QuotaSpec, QuotaValue, quotas_for};

use crate::cloud::CallerIdentity;
use crate::config::ConfigFile;
use crate::network::{self, Direction, NetworkMode};
use crate::provision::INSTANCE_TAG;
use crate::provision::{DeployError, StackDeployer};
use crate::stacks::StackKind;
use crate::text::table;
use dial::{DialReport, DialSettings, Dialer, Plan};

/// What became of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// Not checked, with the reason in the detail.
    Skip,
    /// Worth knowing; does not stop an install.
    Warn,
    /// Stops an install until fixed.
    Fail,
}

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Outcome::Pass => "pass",
            Outcome::Skip => "skip",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
        })
    }
}

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable identifier, such as `quota.vpc.L-F678F1CE` or `connectivity.open-vsx.org:443`.
    pub id: String,
    /// What was checked, for people.
    pub title: String,
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// How to fix a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(id: impl Into<String>, title: impl Into<String>, outcome: Outcome) -> Self {
        Check {
            id: id.into(),
            title: title.into(),
            outcome,
            detail: String::new(),
            fix: None,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// How many checks ended each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

/// Every check of one preflight run, in the order they are shown.
#[derive(Debug, Clone, Serialize)]
pub struct PreflightReport {
    pub instance: String,
    pub region: String,
    pub mode: NetworkMode,
    /// The account the credentials belong to, when they could be used.
    pub account: Option<String>,
    /// The worst outcome: `fail`, `warn` or `pass`.
    pub result: Outcome,
    pub counts: Counts,
    pub checks: Vec<Check>,
}

impl PreflightReport {
    fn new(config: &ConfigFile, account: Option<String>, checks: Vec<Check>) -> Self {
        let mut counts = Counts::default();
        for check in &checks {
            match check.outcome {
                Outcome::Pass => counts.pass += 1,
                Outcome::Warn => counts.warn += 1,
                Outcome::Fail => counts.fail += 1,
                Outcome::Skip => counts.skip += 1,
            }
        }
        let result = if counts.fail > 0 {
            Outcome::Fail
        } else if counts.warn > 0 {
            Outcome::Warn
        } else {
            Outcome::Pass
        };
        PreflightReport {
            instance: config.instance.name.clone(),
            region: config.instance.region.clone(),
            mode: config.network.mode,
            account,
            result,
            counts,
            checks,
        }
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|check| check.outcome == Outcome::Fail)
    }

    /// One line: "12 passed, 1 warning, 1 failed, 9 skipped".
    pub fn summary(&self) -> String {
        let counts = &self.counts;
        format!(
            "{} passed, {} {}, {} failed, {} skipped",
            counts.pass,
            counts.warn,
            if counts.warn == 1 {
                "warning"
            } else {
                "warnings"
            },
            counts.fail,
            counts.skip
        )
    }

    /// Only the warnings and failures, with their fixes: what `install` shows when all is
    /// well enough to go on.
    pub fn problems(&self) -> String {
        render_fixes(
            self.checks
                .iter()
                .filter(|check| matches!(check.outcome, Outcome::Warn | Outcome::Fail)),
        )
    }
}

fn render_fixes<'a>(checks: impl Iterator<Item = &'a Check>) -> String {
    let mut text = String::new();
    for check in checks {
        text.push_str(&format!(
            "{} {}: {}\n",
            check.outcome, check.title, check.detail
        ));
        if let Some(fix) = &check.fix {
            text.push_str(&format!("     fix: {fix}\n"));
        }
    }
    text
}

impl fmt::Display for PreflightReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "Preflight for {} ({} mode) in {}{}",
            self.instance,
            self.mode,
            self.region,
            self.account
                .as_deref()
                .map(|account| format!(", account {account}"))
                .unwrap_or_default()
        )?;
        writeln!(formatter)?;
        writeln!(
            formatter,
            "{}",
            table(
                ["RESULT", "CHECK", "DETAIL"],
                self.checks.iter().map(|check| {
                    [
                        check.outcome.to_string(),
                        check.title.clone(),
                        check.detail.clone(),
                    ]
                }),
            )
        )?;
        let with_fixes: Vec<&Check> = self
            .checks
            .iter()
            .filter(|check| check.fix.is_some() && check.outcome >= Outcome::Warn)
            .collect();
        if !with_fixes.is_empty() {
            writeln!(formatter)?;
            writeln!(formatter, "To fix:")?;
            for check in with_fixes {
                writeln!(
                    formatter,
                    "  {} {}: {}",
                    check.outcome,
                    check.title,
                    check.fix.as_deref().unwrap_or_default()
                )?;
            }
        }
        writeln!(formatter)?;
        write!(formatter, "{}", self.summary())
    }
}

/// Whether a region can be used by the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionStatus {
    Enabled,
    /// An opt-in region the account has not enabled.
    NotOptedIn,
    /// The region is not among the account's regions at all.
    Unknown,
}

/// An ACM certificate, as far as preflight cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub arn: String,
    pub domain: String,
    /// The domain and every subject alternative name.
    pub names: Vec<String>,
    /// `ISSUED`, `PENDING_VALIDATION`, `EXPIRED`...
    pub status: String,
    pub not_after: Option<jiff::Timestamp>,
}

impl Certificate {
    fn covers(&self, name: &str) -> bool {
        self.names.iter().any(|covered| covered == name)
    }
}

/// The account-side reads preflight makes, besides CloudFormation. The AWS adapter is the one
/// implementation; its errors are already domain errors.
#[allow(async_fn_in_trait)]
pub trait AccountReader: Sync {
    async fn identity(&self) -> Result<CallerIdentity, DeployError>;
    async fn region_status(&self, region: &str) -> Result<RegionStatus, DeployError>;
    /// The account's limit, from Service Quotas or whatever stands in for it.
    async fn quota(&self, spec: &QuotaSpec) -> QuotaValue;
    /// How many of the quota's resources exist now (for a per-zone quota: in the fullest zone).
    async fn usage(&self, resource: QuotaResource) -> Result<u32, DeployError>;
    async fn certificate(&self, arn: &str) -> Result<Option<Certificate>, DeployError>;
    async fn issued_certificates(&self) -> Result<Vec<Certificate>, DeployError>;
}

/// Runs every check. `account` is `None` when no AWS client could be set up (no credentials),
/// which `connect_error` explains; the AWS checks are then reported as failed or skipped.
pub async fn run<A: AccountReader, S: StackDeployer, D: Dialer>(
    config: &ConfigFile,
    account: Result<(&A, &S), &DeployError>,
    dialer: &D,
    dial_settings: &DialSettings,
    now: jiff::Timestamp,
) -> PreflightReport {
    let mut checks = Vec::new();
    let mut account_id = None;
    // Connectivity runs alongside the AWS reads: both are mostly waiting.
    let connectivity = connectivity_checks(config, dialer, dial_settings);
    let aws = async {
        let mut checks = Vec::new();
        match account {
            Err(error) => {
                checks.push(
                    Check::new("aws.identity", "AWS identity", Outcome::Fail)
                        .detail(error.to_string())
                        .fix(error.hint().unwrap_or_else(|| {
                            "configure AWS credentials (AWS_PROFILE or --profile, environment variables, or an instance role)".into()
                        })),
                );
                checks.push(
                    Check::new("aws", "AWS account checks", Outcome::Skip)
                        .detail("skipped: no AWS identity to check the account with"),
                );
                (checks, None)
            }
            Ok((reader, deployer)) => {
                let identity = identity_check(reader).await;
                let found = identity.1.clone();
                checks.push(identity.0);
                if found.is_none() {
                    checks.push(
                        Check::new("aws", "AWS account checks", Outcome::Skip)
                            .detail("skipped: the credentials were refused"),
                    );
                    return (checks, None);
                }
                checks.push(region_check(reader, &config.instance.region).await);
                checks.extend(stack_checks(deployer, &config.instance.name).await);
                match existing_network(deployer, &config.instance.name).await {
                    Some(check) => checks.push(check),
                    None => checks.extend(quota_checks(reader, config).await),
                }
                checks.push(certificate_check(reader, config, now).await);
                (checks, found.map(|identity| identity.account))
            }
        }
    };
    let ((aws_checks, found_account), dial_checks) = tokio::join!(aws, connectivity);
    if let Some(account) = found_account {
        account_id = Some(account);
    }
    checks.extend(aws_checks);
    checks.extend(dial_checks);
    PreflightReport::new(config, account_id, checks)
}

async fn identity_check<A: AccountReader>(reader: &A) -> (Check, Option<CallerIdentity>) {
    match reader.identity().await {
        Ok(identity) => {
            let root = identity.principal.ends_with(":root");
            let check = Check::new(
                "aws.identity",
                "AWS identity",
                if root { Outcome::Warn } else { Outcome::Pass },
            )
            .detail(format!(
                "account {} as {}",
                identity.account, identity.principal
            ));
            let check = if root {
                check.fix("install with a role or user made for it, not the account's root user")
            } else {
                check
            };
            (check, Some(identity))
        }
        Err(error) => (
            Check::new("aws.identity", "AWS identity", Outcome::Fail)
                .detail(error.to_string())
                .fix(error.hint().unwrap_or_else(|| {
                    "check the credentials (AWS_PROFILE or --profile): they were refused".into()
                })),
            None,
        ),
    }
}

async fn region_check<A: AccountReader>(reader: &A, region: &str) -> Check {
    let check = Check::new("aws.region", "region", Outcome::Pass);
    match reader.region_status(region).await {
        Ok(RegionStatus::Enabled) => check.detail(format!("{region} is enabled for the account")),
        Ok(RegionStatus::NotOptedIn) => Check { outcome: Outcome::Fail, ..check }
            .detail(format!("{region} is an opt-in region the account has not enabled"))
            .fix(format!("enable {region} under Account > AWS Regions in the console, or choose another region (instance.region)")),
        Ok(RegionStatus::Unknown) => Check { outcome: Outcome::Fail, ..check }
            .detail(format!("{region} is not a region of this account's partition"))
            .fix("set instance.region to a region the account uses, such as us-east-1"),
        Err(error) => Check { outcome: Outcome::Warn, ..check }
            .detail(format!("could not list the account's regions: {error}"))
            .fix("allow ec2:DescribeRegions to the installing principal, or check the region by hand"),
    }
}

/// The instance's stacks that would get in the way of an install.
pub async fn stack_checks<S: StackDeployer>(deployer: &S, instance: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut stable = Vec::new();
    for kind in StackKind::ALL {
        let name = kind.stack_name(instance);
        let id = format!("stacks.{kind}");
        let title = format!("stack {name}");
        let state = match deployer.describe_stack(&name).await {
            Ok(Some(state)) => state,
            Ok(None) => continue,
            Err(error) => {
                checks.push(
                    Check::new(id, title, Outcome::Warn)
                        .detail(format!("could not be described: {error}"))
                        .fix("allow cloudformation:DescribeStacks to the installing principal"),
                );
                continue;
            }
        };
        let since = state
            .last_updated
            .map(|time| {
                format!(
                    " (last change {})",
                    time.round(jiff::Unit::Second).unwrap_or(time)
                )
            })
            .unwrap_or_default();
        let reason = state
            .status_reason
            .as_deref()
            .filter(|reason| !reason.is_empty())
            .map(|reason| format!(": {reason}"))
            .unwrap_or_default();
        let owner = state.tags.get(INSTANCE_TAG);
        if let Some(owner) = owner.filter(|owner| *owner != instance) {
            checks.push(
                Check::new(id, title, Outcome::Fail)
                    .detail(format!(
                        "exists ({}) but belongs to instance \"{owner}\", not to this one",
                        state.status,
                    ))
                    .fix(format!("choose another instance name (instance.name), or delete that stack if it is no longer used: aws cloudformation delete-stack --stack-name {name}")),
            );
            continue;
        }
        let status = state.status.as_str();
        let check = match status {
            "ROLLBACK_COMPLETE" => Some(
                Check::new(id, title, Outcome::Warn)
                    .detail(format!("ROLLBACK_COMPLETE{since}: a failed first create left it empty{reason}"))
                    .fix("nothing to do first: install deletes it and creates it again, after asking"),
            ),
            "UPDATE_ROLLBACK_FAILED" => Some(
                Check::new(id, title, Outcome::Warn)
                    .detail(format!("UPDATE_ROLLBACK_FAILED{since}{reason}"))
                    .fix("install continues the rollback first; if a resource blocks it, fix that resource (the stack's events name it)"),
            ),
            "REVIEW_IN_PROGRESS" => Some(
                Check::new(id, title, Outcome::Warn)
                    .detail(format!("REVIEW_IN_PROGRESS{since}: an install was interrupted before creating it"))
                    .fix("nothing to do first: install plans it again"),
            ),
            "DELETE_FAILED" | "ROLLBACK_FAILED" | "CREATE_FAILED" | "IMPORT_ROLLBACK_FAILED" => Some(
                Check::new(id, title, Outcome::Fail)
                    .detail(format!("{status}{since}{reason}"))
                    .fix(format!("`stackwright teardown` deletes it and names what blocks the deletion; or delete it yourself: aws cloudformation delete-stack --stack-name {name}")),
            ),
            _ if status.ends_with("_IN_PROGRESS") => Some(
                Check::new(id, title, Outcome::Fail)
                    .detail(format!("{status}{since}: an operation on it has not finished"))
                    .fix(format!("wait for it to finish (`stackwright status` shows it and who holds the lock); if it never ends, look at the stack's events: aws cloudformation describe-stack-events --stack-name {name}")),
            ),
            _ if owner.is_none() => Some(
                Check::new(id, title, Outcome::Warn)
                    .detail(format!("{status}, without the {INSTANCE_TAG} tag: made by something other than stackwright?"))
                    .fix(format!("install would take it over: if it is not this instance's, choose another instance name (instance.name) or delete it: aws cloudformation delete-stack --stack-name {name}")),
            ),
            _ => {
                stable.push(format!("{name} ({status})"));
                None
            }
        };
        checks.extend(check);
    }
    if checks.is_empty() {
        let detail = if stable.is_empty() {
            format!("no stack of {instance} exists yet")
        } else {
            format!("{}: install updates them", stable.join(", "))
        };
        checks.push(Check::new("stacks", "leftover stacks", Outcome::Pass).detail(detail));
    }
    checks
}

/// When the instance's network stack is already in place, an install updates it: the VPC,
/// gateways and addresses it counts against the quotas exist already, and counting them again
/// as new would report a shortfall that is not there.
async fn existing_network<S: StackDeployer>(deployer: &S, instance: &str) -> Option<Check> {
    let name = StackKind::Network.stack_name(instance);
    let state = deployer.describe_stack(&name).await.ok()??;
    if matches!(
        state.status.as_str(),
        "ROLLBACK_COMPLETE" | "REVIEW_IN_PROGRESS" | "DELETE_COMPLETE"
    ) {
        return None;
    }
    Some(
        Check::new("quota", "quotas", Outcome::Pass).detail(format!(
            "{name} exists ({}): an install updates it, so its VPC, gateways and addresses are counted already",
            state.status
        )),
    )
}

async fn quota_checks<A: AccountReader>(reader: &A, config: &ConfigFile) -> Vec<Check> {
    let region = &config.instance.region;
    let mut checks = Vec::new();
    for spec in quotas_for(config) {
        let id = format!("quota.{}.{}", spec.service_code, spec.quota_code);
        let title = format!("quota: {}", spec.name);
        let value = reader.quota(&spec).await;
        let usage = match spec.resource.counted() {
            true => reader.usage(spec.resource).await,
            false => Ok(0),
        };
        let usage = match usage {
            Ok(usage) => usage,
            Err(error) => {
                checks.push(
                    Check::new(id, title, Outcome::Warn)
                        .detail(format!("needs {}; current usage unknown: {error}", spec.needed))
                        .fix(format!("allow ec2:Describe* to the installing principal, or compare by hand with the quota of {}", value.value)),
                );
                continue;
            }
        };
        let available = value.value.saturating_sub(usage);
        let source = match &value.source {
            QuotaSource::ServiceQuotas => String::new(),
            QuotaSource::AccountAttribute => " (from EC2's account attributes)".into(),
            QuotaSource::Default { reason } => {
                format!(" (AWS's default: the quota could not be read: {reason})")
            }
        };
        let scope = spec.resource.scope();
        let detail = format!(
            "needs {}{scope}, {usage} in use of {}{source}",
            spec.needed, value.value
        );
        let check = if spec.needed > available {
            let desired = usage + spec.needed;
            let mut fix = format!(
                "free {} ({}) or request a quota of at least {desired}: aws service-quotas request-service-quota-increase --region {region} --service-code {} --quota-code {} --desired-value {desired}",
                spec.needed - available,
                spec.resource.how_to_list(),
                spec.service_code,
                spec.quota_code,
            );
            if config.network.mode != NetworkMode::AllPrivate
                && matches!(
                    spec.resource,
                    QuotaResource::ElasticIps | QuotaResource::NatGatewaysPerZone
                )
            {
                if config.network.availability_zones > 2 {
                    fix.push_str(
                        "; or use fewer availability zones (network.availability_zones = 2)",
                    );
                }
                fix.push_str("; or use the all-private mode, which needs no NAT gateway");
            }
            Check::new(id, title, Outcome::Fail)
                .detail(format!("{detail}: short by {}", spec.needed - available))
                .fix(fix)
        } else if matches!(value.source, QuotaSource::Default { .. }) {
            Check::new(id, title, Outcome::Warn)
                .detail(detail)
                .fix(format!("allow servicequotas:GetServiceQuota, or check {} {} in the Service Quotas console", spec.service_code, spec.quota_code))
        } else {
            Check::new(id, title, Outcome::Pass).detail(detail)
        };
        checks.push(check);
    }
    checks
}

async fn certificate_check<A: AccountReader>(
    reader: &A,
    config: &ConfigFile,
    now: jiff::Timestamp,
) -> Check {
    let domain = &config.instance.domain;
    let wildcard = format!("*.{domain}");
    let region = &config.instance.region;
    let check = Check::new("certificate", "certificate", Outcome::Pass);
    let Some(arn) = &config.instance.certificate_arn else {
        return match reader.issued_certificates().await {
            Ok(found) => match found.iter().find(|certificate| certificate.covers(domain) && certificate.covers(&wildcard)) {
                Some(certificate) => check.detail(format!(
                    "none configured; {} in this region covers {domain} and {wildcard}: set instance.certificate_arn to use it, or install requests a new one",
                    certificate.arn
                )),
                None => check.detail(format!(
                    "none configured: the platform stack requests one for {domain} and {wildcard}, validated through DNS records that install lists"
                )),
            },
            Err(error) => Check { outcome: Outcome::Skip, ..check }.detail(format!(
                "none configured, so install requests one; existing certificates could not be listed: {error}"
            )),
        };
    };
    let arn_region = arn.split(':').nth(3).unwrap_or_default();
    if arn_region != region {
        return Check { outcome: Outcome::Fail, ..check }
            .detail(format!("{arn} is in {arn_region}, but the load balancer is in {region}"))
            .fix(format!("request or import a certificate for {domain} and {wildcard} in {region}: certificates serve only their own region"));
    }
    let certificate = match reader.certificate(arn).await {
        Ok(Some(certificate)) => certificate,
        Ok(None) => {
            return Check { outcome: Outcome::Fail, ..check }
                .detail(format!("{arn} does not exist in this account"))
                .fix("correct instance.certificate_arn (`aws acm list-certificates` lists them), or remove it to have one requested");
        }
        Err(error) => {
            return Check {
                outcome: Outcome::Warn,
                ..check
            }
            .detail(format!("{arn} could not be read: {error}"))
            .fix("allow acm:DescribeCertificate to the installing principal");
        }
    };
    let missing: Vec<&str> = [domain.as_str(), wildcard.as_str()]
        .into_iter()
        .filter(|name| !certificate.covers(name))
        .collect();
    if !missing.is_empty() {
        return Check {
            outcome: Outcome::Fail,
            ..check
        }
        .detail(format!("{arn} does not cover {}", missing.join(" nor ")))
        .fix(format!(
            "use a certificate whose names include {domain} and {wildcard}"
        ));
    }
    if certificate.status != "ISSUED" {
        let fix = if certificate.status == "PENDING_VALIDATION" {
            "create the DNS validation records ACM shows for it (aws acm describe-certificate), then wait for ISSUED"
        } else {
            "request or import a new certificate and set instance.certificate_arn to it"
        };
        return Check {
            outcome: Outcome::Fail,
            ..check
        }
        .detail(format!("{arn} is {}, not ISSUED", certificate.status))
        .fix(fix);
    }
    if let Some(not_after) = certificate.not_after {
        let days = (not_after.as_second() - now.as_second()) / 86_400;
        if days < 0 {
            return Check {
                outcome: Outcome::Fail,
                ..check
            }
            .detail(format!("{arn} expired on {not_after}"))
            .fix("renew or replace the certificate");
        }
        if days < 30 {
            return Check {
                outcome: Outcome::Warn,
                ..check
            }
            .detail(format!(
                "covers {domain} and {wildcard}, but expires in {days} days"
            ))
            .fix("renew it (ACM renews DNS-validated certificates whose records are in place)");
        }
    }
    check.detail(format!(
        "{arn} is issued and covers {domain} and {wildcard}"
    ))
}

/// A destination of `network requirements` and how preflight treats it.
struct Destined {
    purpose: &'static str,
    required: bool,
    /// The destination, or what it is called and why it cannot be dialled.
    destination: Result<dial::Destination, (String, String)>,
    aws_service: bool,
}

/// The outbound destinations of the mode that can be dialled from here, and a reason for each
/// one that cannot.
fn destinations(config: &ConfigFile) -> Vec<Destined> {
    let region = &config.instance.region;
    let mut list = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for requirement in
        network::requirements(config.network.mode, Some(&config.requirement_inputs()))
    {
        if requirement.direction != Direction::Out {
            continue;
        }
        let fixed = |host: String, aws_service: bool| Destined {
            purpose: requirement.purpose,
            required: requirement.required,
            destination: Ok(dial::Destination {
                host,
                port: requirement.port,
                tls: true,
            }),
            aws_service,
        };
        let entries: Vec<Destined> = match requirement.purpose {
            "control-plane" => {
                let url = &config.control_plane.url;
                let tls = url.starts_with("https://");
                let port = port_of(url).unwrap_or(if tls { 443 } else { 80 });
                vec![Destined {
                    purpose: requirement.purpose,
                    required: requirement.required,
                    destination: Ok(dial::Destination {
                        host: network::host_of(url).to_owned(),
                        port,
                        tls,
                    }),
                    aws_service: false,
                }]
            }
            "instance" => continue,
            "image-registry" => vec![fixed(format!("api.ecr.{region}.amazonaws.com"), true)],
            "telemetry" => vec![fixed(requirement.destination.clone(), true)],
            "aws-services" if requirement.destination == "*.amazonaws.com" => vec![
                fixed(format!("sts.{region}.amazonaws.com"), true),
                fixed(format!("cloudformation.{region}.amazonaws.com"), true),
            ],
            _ if requirement.destination.starts_with("*.") => vec![Destined {
                purpose: requirement.purpose,
                required: requirement.required,
                destination: Err((
                    requirement.destination.clone(),
                    "a wildcard, with no single host to dial".into(),
                )),
                aws_service: false,
            }],
            _ if requirement.destination.contains(' ') => vec![Destined {
                purpose: requirement.purpose,
                required: requirement.required,
                destination: Err((
                    requirement.destination.clone(),
                    "yours to choose, so unknown to stackwright: check it from the instance's network".into(),
                )),
                aws_service: false,
            }],
            _ => vec![fixed(requirement.destination.clone(), false)],
        };
        for entry in entries {
            let key = match &entry.destination {
                Ok(destination) => destination.to_string(),
                Err((name, _)) => name.clone(),
            };
            if seen.insert(key) {
                list.push(entry);
            }
        }
    }
    list
}

fn port_of(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let (_, port) = authority.rsplit_once(':')?;
    if port.ends_with(']') {
        return None;
    }
    port.parse().ok()
}

async fn connectivity_checks<D: Dialer>(
    config: &ConfigFile,
    dialer: &D,
    settings: &DialSettings,
) -> Vec<Check> {
    let destined = destinations(config);
    let mut planned = Vec::new();
    let mut checks: Vec<Option<Check>> = Vec::new();
    let mut positions = Vec::new();
    for entry in &destined {
        match &entry.destination {
            Err((name, reason)) => checks.push(Some(
                Check::new(
                    format!("connectivity.{}", entry.purpose),
                    format!("reach {name}"),
                    Outcome::Skip,
                )
                .detail(format!("not dialled: {reason}")),
            )),
            Ok(destination) => match settings.plan(destination, entry.aws_service) {
                Plan::Skip { reason } => checks.push(Some(
                    Check::new(
                        format!("connectivity.{destination}"),
                        format!("reach {destination}"),
                        Outcome::Skip,
                    )
                    .detail(reason),
                )),
                Plan::Dial { target, via } => {
                    positions.push(checks.len());
                    checks.push(None);
                    planned.push((destination.clone(), target, via));
                }
            },
        }
    }
    let reports = dial::dial_all(dialer, settings.timeout, planned).await;
    for (position, report) in positions.into_iter().zip(reports) {
        let entry = destined
            .iter()
            .find(|entry| entry.destination.as_ref().ok() == Some(&report.destination));
        let (purpose, required) =
            entry.map_or(("", false), |entry| (entry.purpose, entry.required));
        checks[position] = Some(dial_check(purpose, required, &report));
    }
    checks.into_iter().flatten().collect()
}

fn dial_check(purpose: &str, required: bool, report: &DialReport) -> Check {
    let destination = &report.destination;
    let id = format!("connectivity.{destination}");
    let title = format!("reach {destination}");
    let via = match report.via {
        "direct" => String::new(),
        via => format!(" ({via})"),
    };
    match &report.result {
        Ok(dialled) => {
            let milliseconds = report.elapsed.as_millis();
            let peer = dialled.peer;
            let detail = match &dialled.tls_version {
                Some(version) => {
                    format!("{version} handshake with {peer}{via} in {milliseconds} ms")
                }
                None if destination.tls => format!(
                    "TCP connection to {peer}{via} in {milliseconds} ms; no TLS handshake: the endpoint speaks plain HTTP"
                ),
                None => format!("TCP connection to {peer}{via} in {milliseconds} ms"),
            };
            Check::new(id, title, Outcome::Pass).detail(detail)
        }
        Err(failure) => {
            let outcome = if required {
                Outcome::Fail
            } else {
                Outcome::Warn
            };
            let mut fix = match purpose {
                "control-plane" => format!(
                    "check control_plane.url and that this machine reaches {destination} (a firewall or proxy may block it); the installer registers the instance there"
                ),
                "image-registry" | "aws-services" | "telemetry" => format!(
                    "allow HTTPS to {destination} (*.amazonaws.com) from here: the installer calls AWS through it"
                ),
                _ => format!(
                    "allow HTTPS to {destination} from the instance's network: {purpose} needs it (from here it is only an indication)"
                ),
            };
            if failure.stage == dial::DialStage::Tls {
                fix.push_str(&format!(
                    "; if a TLS-inspecting proxy sits in between, trust its certificate authority with {}",
                    crate::tls::CA_BUNDLE_VARIABLE
                ));
            }
            Check::new(id, title, outcome)
                .detail(format!("{failure} ({}{via})", report.target.address))
                .fix(fix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: &str, url: &str) -> ConfigFile {
        let text = format!(
            "schema_version = 1\n[instance]\nname = \"acme-dev\"\ndomain = \"cde.acme.example\"\nregion = \"eu-west-1\"\n[network]\nmode = \"{mode}\"\n[control_plane]\nurl = \"{url}\"\n"
        );
        ConfigFile::parse(&text, std::path::Path::new("stackwright.toml")).unwrap()
    }

    #[test]
    fn destinations_are_concrete_hosts_with_a_reason_for_the_rest() {
        let list = destinations(&config("public", "http://127.0.0.1:8080"));
        let dialled: Vec<String> = list
            .iter()
            .filter_map(|entry| entry.destination.as_ref().ok().map(ToString::to_string))
            .collect();
        assert_eq!(dialled[0], "127.0.0.1:8080");
        assert!(dialled.contains(&"api.ecr.eu-west-1.amazonaws.com:443".to_owned()));
        assert!(dialled.contains(&"sts.eu-west-1.amazonaws.com:443".to_owned()));
        assert!(dialled.contains(&"open-vsx.org:443".to_owned()));
        assert!(!dialled.iter().any(|host| host.contains("cde.acme.example")));
        let control = list[0].destination.as_ref().unwrap();
        assert!(!control.tls, "a plain-HTTP control plane gets no handshake");
        assert!(
            list.iter()
                .any(|entry| matches!(&entry.destination, Err((name, _)) if name.contains("SSO")))
        );
    }

    #[test]
    fn ports_come_from_urls() {
        assert_eq!(port_of("https://control.example.com:8443/api"), Some(8443));
        assert_eq!(port_of("https://control.example.com/api"), None);
        assert_eq!(port_of("http://[::1]"), None);
    }
}
