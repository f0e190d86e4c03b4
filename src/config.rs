//! The configuration file `stackwright.toml`: its versioned schema, parsing and validation.
//!
//! Reading happens in three steps so that every mistake is reported against the key that holds
//! it: the `schema_version` is checked on the raw table first (a file from a newer installer must
//! not be half-understood), then the typed structure is deserialized with unknown keys rejected,
//! then every value is validated and all problems are reported together.

mod window;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use window::{MaintenanceWindow, WindowError};

use crate::network::{self, NetworkMode, RequirementInputs};

/// The only configuration schema this installer reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Smallest VPC the subnet layout fits in: a /22 gives every private subnet a /24.
pub const SMALLEST_VPC_PREFIX: u8 = 22;
/// Largest VPC AWS allows.
pub const LARGEST_VPC_PREFIX: u8 = 16;

/// `stackwright.toml`, schema version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "stackwright.toml")]
pub struct ConfigFile {
    /// Version of this file's schema; this installer reads version 1.
    pub schema_version: u32,
    pub instance: InstanceConfig,
    pub network: NetworkConfig,
    pub control_plane: ControlPlaneConfig,
    #[serde(default)]
    pub release: ReleaseConfig,
    #[serde(default)]
    pub upgrade: UpgradeConfig,
    /// OIDC federation from workspaces into this AWS account (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfig>,
}

/// What the instance is called and where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Lowercase letters, digits and hyphens, 3 to 20 characters; prefixes every stack name.
    pub name: String,
    /// The DNS name users reach the instance at; the instance also serves `*.<domain>`.
    pub domain: String,
    /// The AWS region to install into, for example `us-east-1`.
    pub region: String,
    /// ARN of an ACM certificate covering the domain and its wildcard. Without one, the platform
    /// stack requests a DNS-validated certificate and the install lists the records to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_arn: Option<String>,
    /// Extra tags applied to every stack and, through CloudFormation, to its resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// How the instance is reachable and how it reaches out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// `public`, `private` or `all-private`.
    pub mode: NetworkMode,
    /// The VPC's address range, from a /16 to a /22.
    #[serde(default = "default_vpc_cidr", deserialize_with = "cidr")]
    #[schemars(with = "String")]
    pub vpc_cidr: Ipv4Net,
    /// How many availability zones to spread over: 2 or 3.
    #[serde(default = "default_availability_zones")]
    pub availability_zones: u8,
    /// Only with `all-private`: a separate internet-facing endpoint serving only the OIDC and
    /// webhook paths.
    #[serde(default)]
    pub public_services: bool,
    /// Only with `all-private`: the PrivateLink service name through which the control plane is
    /// reached, for example `com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint_service: Option<String>,
    /// Address ranges allowed to reach the load balancer. Defaults to everywhere for `public` and
    /// to the VPC's own range otherwise.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "cidrs"
    )]
    #[schemars(with = "Option<Vec<String>>")]
    pub ingress_cidrs: Option<Vec<Ipv4Net>>,
}

/// The vendor's control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// HTTPS address of the control plane (plain HTTP is accepted only for loopback addresses).
    pub url: String,
    /// File holding the one-time registration token the vendor issued, relative to this file;
    /// keep it readable by its owner only. Used once, by the first install; the token never goes
    /// into this file.
    #[serde(default = "default_registration_token_file")]
    pub registration_token_file: PathBuf,
}

/// Which releases this instance follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseConfig {
    /// Release channel, for example `stable` or `beta`.
    #[serde(default = "default_channel")]
    pub channel: String,
    /// Never upgrade past this version (unattended or not) until the pin is moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub pin: Option<semver::Version>,
    /// Where the vendor publishes its signed releases: an `https://` URL or an
    /// `s3://bucket/prefix` (plain `http://` only on a loopback address). Releases are read
    /// only from here, and an update offer that names another repository is refused. Without
    /// it, the control plane's own `<control_plane.url>/repository/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

impl Default for ReleaseConfig {
    fn default() -> Self {
        Self {
            channel: default_channel(),
            pin: None,
            repository: None,
        }
    }
}

/// How the scheduled upgrade job behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    /// Weekly hours in UTC when an unattended upgrade may start, such as `sat,sun 02:00-05:00`;
    /// urgent releases do not wait for it. Without it, upgrades start whenever the job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<String>,
    /// How often the updater job runs in the account, as an EventBridge schedule expression.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// Which changes the unattended job applies by itself: `safe` (no replacement or deletion of
    /// stateful resources, no broader IAM permissions) or `none` (every upgrade waits for a person).
    #[serde(default)]
    pub auto_approve: AutoApprove,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        Self {
            maintenance_window: None,
            schedule: default_schedule(),
            auto_approve: AutoApprove::default(),
        }
    }
}

impl UpgradeConfig {
    /// The parsed window; `problems` has already refused a malformed one.
    pub fn window(&self) -> Option<MaintenanceWindow> {
        self.maintenance_window
            .as_deref()
            .and_then(|text| text.parse().ok())
    }
}

/// Which upgrades the unattended job may apply without a person.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AutoApprove {
    /// Changes that neither replace nor delete stateful resources nor broaden IAM permissions.
    #[default]
    Safe,
    /// Nothing: every upgrade is parked for a person to run `stackwright upgrade`.
    None,
}

/// OIDC federation: workspaces exchange the instance's identity tokens for an AWS role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `sub` claim patterns allowed to assume the workspace role, each naming an organization,
    /// for example `org:7f3a9c2e/project:*`.
    pub subject_patterns: Vec<String>,
    /// Audience of the tokens exchanged with STS.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Managed policies attached to the workspace role; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_policy_arns: Vec<String>,
}

fn parse_cidr<E: serde::de::Error>(text: &str) -> Result<Ipv4Net, E> {
    text.parse().map_err(|_| {
        E::custom(format!(
            "\"{text}\" is not an IPv4 CIDR block (an address and a prefix length, such as 10.40.0.0/16)"
        ))
    })
}

fn cidr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Ipv4Net, D::Error> {
    parse_cidr(&String::deserialize(deserializer)?)
}

fn cidrs<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<Ipv4Net>>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| parse_cidr(text))
        .collect::<Result<_, _>>()
        .map(Some)
}

fn default_vpc_cidr() -> Ipv4Net {
    Ipv4Net::new(std::net::Ipv4Addr::new(10, 40, 0, 0), 16).expect("a /16 is a valid prefix")
}
fn default_availability_zones() -> u8 {
    3
}
fn default_registration_token_file() -> PathBuf {
    PathBuf::from("stackwright.token")
}
fn default_schedule() -> String {
    "rate(1 hour)".to_owned()
}
fn default_channel() -> String {
    "stable".to_owned()
}
fn default_audience() -> String {
    "sts.amazonaws.com".to_owned()
}

/// One thing wrong with a configuration value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Dotted path of the key, such as `network.vpc_cidr`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid TOML (line {line}): {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{} has schema_version {found}, but this stackwright reads version {SCHEMA_VERSION}", path.display())]
    SchemaVersion { path: PathBuf, found: String },
    #[error("{} is invalid: {}", path.display(), render_problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("both {CONFIG_PATH_VARIABLE} ({}) and {CONFIG_TEXT_VARIABLE} name a configuration", path.display())]
    TwoSources { path: PathBuf },
}

/// The environment variable naming the configuration file, as `--config` does.
pub const CONFIG_PATH_VARIABLE: &str = "STACKWRIGHT_CONFIG";
/// The environment variable holding the configuration itself (the updater's task hands it over
/// this way); errors in it name the variable where they would name the file.
pub const CONFIG_TEXT_VARIABLE: &str = "STACKWRIGHT_CONFIG_TEXT";

/// Where the configuration comes from: `--config` on the command line, else
/// `STACKWRIGHT_CONFIG_TEXT` or `STACKWRIGHT_CONFIG` (not both), else `./stackwright.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// The text of `STACKWRIGHT_CONFIG_TEXT`.
    Text(String),
    /// Both environment variables are set and no `--config` decides between them.
    Conflict {
        path: PathBuf,
    },
}

impl ConfigSource {
    /// Resolves the source from the command line's `--config` and the two variables' values
    /// (a variable that is empty counts as unset).
    pub fn resolve(
        command_line: Option<PathBuf>,
        path_variable: Option<String>,
        text_variable: Option<String>,
    ) -> Self {
        let path_variable = path_variable.filter(|value| !value.trim().is_empty());
        let text_variable = text_variable.filter(|value| !value.trim().is_empty());
        match (command_line, path_variable, text_variable) {
            (Some(path), _, _) => ConfigSource::File(path),
            (None, Some(path), Some(_)) => ConfigSource::Conflict { path: path.into() },
            (None, None, Some(text)) => ConfigSource::Text(text),
            (None, Some(path), None) => ConfigSource::File(path.into()),
            (None, None, None) => ConfigSource::File(PathBuf::from("stackwright.toml")),
        }
    }

    /// The name messages use: the file's path, or the variable's name.
    pub fn display_path(&self) -> PathBuf {
        match self {
            ConfigSource::File(path) | ConfigSource::Conflict { path } => path.clone(),
            ConfigSource::Text(_) => PathBuf::from(CONFIG_TEXT_VARIABLE),
        }
    }

    /// Reads and validates the configuration from wherever it comes.
    pub fn load(&self) -> Result<ConfigFile, ConfigError> {
        match self {
            ConfigSource::File(path) => ConfigFile::load(path),
            ConfigSource::Text(text) => ConfigFile::parse(text, Path::new(CONFIG_TEXT_VARIABLE)),
            ConfigSource::Conflict { path } => Err(ConfigError::TwoSources { path: path.clone() }),
        }
    }
}

fn render_problems(problems: &[Problem]) -> String {
    if let [only] = problems {
        return only.to_string();
    }
    let mut text = format!("{} problems", problems.len());
    for problem in problems {
        text.push_str("\n  - ");
        text.push_str(&problem.to_string());
    }
    text
}

impl ConfigError {
    /// The fix a user should try.
    pub fn hint(&self) -> Option<String> {
        match self {
            ConfigError::Read { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                Some(format!(
                    "create {} with `stackwright init`, or point --config at an existing file",
                    path.display()
                ))
            }
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { .. } => {
                Some("fix the TOML syntax on that line; `stackwright config schema` shows the expected shape".to_owned())
            }
            ConfigError::SchemaVersion { .. } => Some(format!(
                "set `schema_version = {SCHEMA_VERSION}` if the file was written for this installer, or run the stackwright release that wrote it"
            )),
            ConfigError::TwoSources { .. } => Some(
                "unset one of them, or give --config PATH, which takes precedence over both".into(),
            ),
            ConfigError::Invalid { problems, .. } => Some(
                problems
                    .iter()
                    .map(|problem| format!("{}: {}", problem.key, problem.hint))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    }
}

impl ConfigFile {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// What the connectivity allow-list (`network::requirements`) names from this file.
    pub fn requirement_inputs(&self) -> RequirementInputs {
        RequirementInputs {
            domain: self.instance.domain.clone(),
            region: self.instance.region.clone(),
            control_plane_host: network::host_of(&self.control_plane.url).to_owned(),
            public_services: self.network.public_services,
            private_link: self.network.control_plane_endpoint_service.is_some(),
        }
    }

    /// Parses and validates configuration text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |problem: Problem| ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![problem],
        };
        let table: toml::Table = toml::from_str(text).map_err(|error| ConfigError::Syntax {
            path: path.to_owned(),
            line: line_of(text, error.span()),
            message: error.message().trim().to_owned(),
        })?;
        match table.get("schema_version") {
            None => {
                return Err(invalid(Problem {
                    key: "schema_version".into(),
                    message: "missing".into(),
                    hint: format!(
                        "add `schema_version = {SCHEMA_VERSION}` as the file's first line"
                    ),
                }));
            }
            Some(toml::Value::Integer(version)) if *version == i64::from(SCHEMA_VERSION) => {}
            Some(toml::Value::Integer(version)) => {
                return Err(ConfigError::SchemaVersion {
                    path: path.to_owned(),
                    found: version.to_string(),
                });
            }
            Some(other) => {
                return Err(invalid(Problem {
                    key: "schema_version".into(),
                    message: format!("expected an integer, found {}", other.type_str()),
                    hint: format!("write `schema_version = {SCHEMA_VERSION}`"),
                }));
            }
        }
        let config: ConfigFile = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|error| {
                let key = error.path().to_string();
                let message = error.into_inner().message().trim().to_owned();
                invalid(structural_problem(key, message))
            })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Every problem with the values of an otherwise well-formed file.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut check = |key: &str, result: Result<(), (String, String)>| {
            if let Err((message, hint)) = result {
                problems.push(Problem {
                    key: key.to_owned(),
                    message,
                    hint,
                });
            }
        };
        check("instance.name", check_name(&self.instance.name));
        check("instance.domain", check_domain(&self.instance.domain));
        check("instance.region", check_region(&self.instance.region));
        if let Some(arn) = &self.instance.certificate_arn {
            check("instance.certificate_arn", check_certificate_arn(arn));
        }
        for (key, value) in &self.instance.tags {
            check(&format!("instance.tags.{key}"), check_tag(key, value));
        }
        check("network.vpc_cidr", check_vpc_cidr(self.network.vpc_cidr));
        check(
            "network.availability_zones",
            match self.network.availability_zones {
                2 | 3 => Ok(()),
                other => Err((
                    format!("{other} is not supported"),
                    "use 2 (cheaper) or 3 (survives the loss of a zone with capacity to spare)"
                        .into(),
                )),
            },
        );
        let all_private = self.network.mode == NetworkMode::AllPrivate;
        check(
            "network.public_services",
            if self.network.public_services && !all_private {
                Err((
                    format!(
                        "only valid with mode = \"all-private\", but mode is \"{}\"",
                        self.network.mode
                    ),
                    format!(
                        "remove `public_services`: in {} mode the load balancer already serves the OIDC and webhook paths",
                        self.network.mode
                    ),
                ))
            } else {
                Ok(())
            },
        );
        if let Some(service) = &self.network.control_plane_endpoint_service {
            check(
                "network.control_plane_endpoint_service",
                if all_private {
                    check_endpoint_service(service)
                } else {
                    Err((
                        format!("only valid with mode = \"all-private\", but mode is \"{}\"", self.network.mode),
                        "remove it: in this mode the control plane is reached through the NAT gateways".into(),
                    ))
                },
            );
        }
        if let Some(cidrs) = &self.network.ingress_cidrs {
            check(
                "network.ingress_cidrs",
                if cidrs.is_empty() {
                    Err((
                        "is empty, so nobody could reach the instance".into(),
                        "list at least one range, or remove the key for the mode's default".into(),
                    ))
                } else if let Some(cidr) = cidrs.iter().find(|cidr| cidr.addr() != cidr.network()) {
                    Err((
                        format!("{cidr} has host bits set"),
                        format!("write it as {}", cidr.trunc()),
                    ))
                } else {
                    Ok(())
                },
            );
        }
        check(
            "control_plane.url",
            check_control_plane_url(&self.control_plane.url),
        );
        check("release.channel", check_channel(&self.release.channel));
        if let Some(repository) = &self.release.repository {
            check("release.repository", check_release_repository(repository));
        }
        if let Some(window) = &self.upgrade.maintenance_window {
            check(
                "upgrade.maintenance_window",
                window
                    .parse::<MaintenanceWindow>()
                    .map(drop)
                    .map_err(|error| (error.to_string(), WindowError::HINT.to_owned())),
            );
        }
        check("upgrade.schedule", check_schedule(&self.upgrade.schedule));
        check(
            "control_plane.registration_token_file",
            if self
                .control_plane
                .registration_token_file
                .as_os_str()
                .is_empty()
            {
                fail("is empty", "name a file, such as \"stackwright.token\"")
            } else {
                Ok(())
            },
        );
        if let Some(identity) = &self.identity {
            if identity.subject_patterns.is_empty() {
                check(
                    "identity.subject_patterns",
                    Err((
                        "is empty, so no workspace could assume the role".into(),
                        "list patterns such as \"org:<organization-id>/project:*\", or remove [identity]".into(),
                    )),
                );
            }
            for (index, pattern) in identity.subject_patterns.iter().enumerate() {
                check(
                    &format!("identity.subject_patterns[{index}]"),
                    check_subject_pattern(pattern),
                );
            }
            check("identity.audience", check_audience(&identity.audience));
            for (index, arn) in identity.managed_policy_arns.iter().enumerate() {
                check(
                    &format!("identity.managed_policy_arns[{index}]"),
                    check_policy_arn(arn),
                );
            }
        }
        problems
    }

    /// The file as TOML, in the canonical key order.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration serializes to TOML")
    }
}

/// Turns serde's message about the structure (unknown, missing or mistyped key) into a problem.
fn structural_problem(mut key: String, message: String) -> Problem {
    if let Some(field) = between(&message, "unknown field `", "`") {
        if key == "." || key.is_empty() {
            key = field.to_owned();
        } else if !key.ends_with(field) {
            key = format!("{key}.{field}");
        }
        let expected = expected_values(&message)
            .map(|rest| format!("the keys allowed here are {rest}"))
            .unwrap_or_else(|| "remove it".into());
        return Problem {
            key,
            message: "unknown key".into(),
            hint: format!("remove it or check its spelling: {expected}"),
        };
    }
    if let Some(field) = between(&message, "missing field `", "`") {
        let full = if key == "." || key.is_empty() {
            field.to_owned()
        } else {
            format!("{key}.{field}")
        };
        return Problem {
            key: full,
            message: "missing".into(),
            hint: "add it; `stackwright config schema` describes every key".into(),
        };
    }
    if let Some(variant) = between(&message, "unknown variant `", "`") {
        return Problem {
            key,
            message: format!("\"{variant}\" is not one of the allowed values"),
            hint: expected_values(&message)
                .map(|rest| format!("use one of {rest}"))
                .unwrap_or_else(|| "see `stackwright config schema`".into()),
        };
    }
    let hint = match key.as_str() {
        "network.vpc_cidr" => format!(
            "use a range from /{LARGEST_VPC_PREFIX} to /{SMALLEST_VPC_PREFIX}, such as 10.40.0.0/16"
        ),
        _ => "see `stackwright config schema` for the expected type".into(),
    };
    Problem { key, message, hint }
}

/// The alternatives serde lists after "expected" in its messages.
fn expected_values(message: &str) -> Option<&str> {
    message
        .split_once("expected ")
        .map(|(_, rest)| rest.trim_start_matches("one of ").trim())
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    let offset = span.map_or(0, |span| span.start.min(text.len()));
    text[..offset].matches('\n').count() + 1
}

type Check = Result<(), (String, String)>;

fn fail(message: impl Into<String>, hint: impl Into<String>) -> Check {
    Err((message.into(), hint.into()))
}

fn check_name(name: &str) -> Check {
    let valid_characters = name.chars().all(|character| {
        character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
    });
    if !(3..=20).contains(&name.len()) {
        fail(
            format!("\"{name}\" is {} characters long", name.len()),
            "use 3 to 20 characters: it prefixes stack, bucket and table names, which AWS limits",
        )
    } else if !valid_characters
        || !name.starts_with(|character: char| character.is_ascii_lowercase())
        || name.ends_with('-')
        || name.contains("--")
    {
        fail(
            format!("\"{name}\" is not a valid instance name"),
            "use lowercase letters, digits and single hyphens, starting with a letter, for example \"acme-dev\"",
        )
    } else {
        Ok(())
    }
}

fn check_domain(domain: &str) -> Check {
    let hint = "use a DNS name you control, in lowercase, such as \"cde.example.com\"";
    if domain.len() > 253 {
        return fail(format!("\"{domain}\" is longer than 253 characters"), hint);
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return fail(
            format!("\"{domain}\" is not a fully qualified domain name"),
            hint,
        );
    }
    for label in &labels {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|character| {
                character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
            })
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return fail(
                format!("\"{domain}\" has an invalid label \"{label}\""),
                hint,
            );
        }
    }
    if labels
        .last()
        .is_some_and(|top| top.chars().all(|character| character.is_ascii_digit()))
    {
        return fail(
            format!("\"{domain}\" looks like an IP address, not a domain"),
            hint,
        );
    }
    Ok(())
}

fn check_region(region: &str) -> Check {
    let parts: Vec<&str> = region.split('-').collect();
    let shaped = parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(|part| {
            !part.is_empty() && part.chars().all(|character| character.is_ascii_lowercase())
        })
        && parts[parts.len() - 1].parse::<u8>().is_ok();
    if shaped {
        Ok(())
    } else {
        fail(
            format!("\"{region}\" is not an AWS region name"),
            "use a region code such as \"us-east-1\" or \"eu-central-1\"",
        )
    }
}

fn check_certificate_arn(arn: &str) -> Check {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "acm"
        && parts[5].starts_with("certificate/")
    {
        Ok(())
    } else {
        fail(
            format!("\"{arn}\" is not an ACM certificate ARN"),
            "use the ARN from `aws acm list-certificates`, such as arn:aws:acm:us-east-1:123456789012:certificate/…, or remove the key to have one requested",
        )
    }
}

fn check_tag(key: &str, value: &str) -> Check {
    if key.is_empty() || key.len() > 128 || value.len() > 256 {
        fail(
            "tag keys must be 1 to 128 characters and values at most 256",
            "shorten the tag",
        )
    } else if key.starts_with("aws:") {
        fail(
            "tag keys starting with \"aws:\" are reserved by AWS",
            "choose another key",
        )
    } else {
        Ok(())
    }
}

fn check_vpc_cidr(cidr: Ipv4Net) -> Check {
    if cidr.addr() != cidr.network() {
        return fail(
            format!("{cidr} has host bits set"),
            format!("write the network address: {}", cidr.trunc()),
        );
    }
    if cidr.prefix_len() < LARGEST_VPC_PREFIX {
        return fail(
            format!("{cidr} is larger than AWS allows for a VPC"),
            format!(
                "use a prefix from /{LARGEST_VPC_PREFIX} to /{SMALLEST_VPC_PREFIX}, such as 10.40.0.0/16"
            ),
        );
    }
    if cidr.prefix_len() > SMALLEST_VPC_PREFIX {
        return fail(
            format!("{cidr} is too small for the instance's subnets"),
            format!(
                "use a prefix from /{LARGEST_VPC_PREFIX} to /{SMALLEST_VPC_PREFIX}, such as 10.40.0.0/16"
            ),
        );
    }
    Ok(())
}

fn check_endpoint_service(service: &str) -> Check {
    let valid = service.starts_with("com.amazonaws.vpce.")
        && service
            .rsplit('.')
            .next()
            .is_some_and(|last| last.starts_with("vpce-svc-") && last.len() > "vpce-svc-".len());
    if valid {
        Ok(())
    } else {
        fail(
            format!("\"{service}\" is not a PrivateLink service name"),
            "use the name the vendor gave you, such as com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0",
        )
    }
}

fn check_control_plane_url(url: &str) -> Check {
    let hint = "use the https:// address the vendor gave you, such as https://control.example.com";
    let (scheme, rest) = match url.split_once("://") {
        Some(parts) => parts,
        None => return fail(format!("\"{url}\" is not a URL"), hint),
    };
    let host = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit_once(':')
        .map_or(
            rest.split(['/', '?', '#']).next().unwrap_or_default(),
            |(host, port)| {
                if port.chars().all(|character| character.is_ascii_digit()) {
                    host
                } else {
                    rest
                }
            },
        );
    if host.is_empty() || host.contains(char::is_whitespace) {
        return fail(format!("\"{url}\" has no host"), hint);
    }
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        "http" => fail(
            format!("\"{url}\" uses plain HTTP, which would send the instance's token in clear"),
            "use https:// (plain http is accepted only for a control plane on this machine's loopback address)",
        ),
        _ => fail(
            format!("\"{url}\" has the unsupported scheme \"{scheme}\""),
            hint,
        ),
    }
}

fn check_release_repository(repository: &str) -> Check {
    let hint = "use the address the vendor gave you, such as https://releases.example.com/stackwright/ or s3://vendor-releases/stable";
    let Some((scheme, rest)) = repository.split_once("://") else {
        return fail(format!("\"{repository}\" is not a URL"), hint);
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return fail(format!("\"{repository}\" has no host or bucket"), hint);
    }
    let address = host
        .strip_prefix('[')
        .and_then(|host| host.split_once(']'))
        .map_or_else(
            || host.rsplit_once(':').map_or(host, |(address, _)| address),
            |(address, _)| address,
        );
    match scheme {
        "https" | "s3" => Ok(()),
        "http"
            if address
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback()) =>
        {
            Ok(())
        }
        "http" => fail(
            format!("\"{repository}\" uses plain HTTP"),
            "use https:// (plain http is accepted only on a loopback address, 127.0.0.1 or [::1])",
        ),
        _ => fail(
            format!("\"{repository}\" has the unsupported scheme \"{scheme}\""),
            hint,
        ),
    }
}

/// Whether a host names this machine: plain HTTP to it never leaves the machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

fn check_schedule(schedule: &str) -> Check {
    let hint =
        "use an EventBridge schedule expression, such as \"rate(1 hour)\" or \"cron(0 3 * * ? *)\"";
    let rate = schedule
        .strip_prefix("rate(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|inner| inner.split_once(' '))
        .is_some_and(|(value, unit)| {
            value.parse::<u32>().is_ok_and(|value| value > 0)
                && ["minute", "minutes", "hour", "hours", "day", "days"].contains(&unit)
        });
    let cron = schedule
        .strip_prefix("cron(")
        .and_then(|rest| rest.strip_suffix(')'))
        .is_some_and(|inner| inner.split_whitespace().count() == 6);
    if rate || cron {
        Ok(())
    } else {
        fail(format!("\"{schedule}\" is not a schedule expression"), hint)
    }
}

fn check_channel(channel: &str) -> Check {
    let valid = !channel.is_empty()
        && channel.len() <= 32
        && channel.starts_with(|character: char| character.is_ascii_lowercase())
        && channel.chars().all(|character| {
            character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
        });
    if valid {
        Ok(())
    } else {
        fail(
            format!("\"{channel}\" is not a channel name"),
            "use the channel the vendor named, such as \"stable\" or \"beta\"",
        )
    }
}

fn check_subject_pattern(pattern: &str) -> Check {
    let hint = "start with a concrete organization, such as \"org:7f3a9c2e/project:*\" or \"org:7f3a9c2e/project:web/environment:*\"";
    let Some(rest) = pattern.strip_prefix("org:") else {
        return fail(format!("\"{pattern}\" does not start with \"org:\""), hint);
    };
    let organization = rest.split('/').next().unwrap_or_default();
    if organization.is_empty() || organization.contains(['*', '?']) {
        return fail(
            format!(
                "\"{pattern}\" does not name one organization, so workspaces of any tenant could assume the role"
            ),
            hint,
        );
    }
    if pattern
        .chars()
        .any(|character| character.is_whitespace() || character == '"')
    {
        return fail(format!("\"{pattern}\" contains whitespace or quotes"), hint);
    }
    Ok(())
}

fn check_audience(audience: &str) -> Check {
    if audience.is_empty() || audience.contains(char::is_whitespace) {
        fail(
            format!("\"{audience}\" is not a valid audience"),
            "use \"sts.amazonaws.com\", the audience STS expects",
        )
    } else {
        Ok(())
    }
}

fn check_policy_arn(arn: &str) -> Check {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() == 6 && parts[0] == "arn" && parts[2] == "iam" && parts[5].starts_with("policy/")
    {
        Ok(())
    } else {
        fail(
            format!("\"{arn}\" is not an IAM policy ARN"),
            "use an ARN such as arn:aws:iam::123456789012:policy/workspace-access",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_wins_then_one_environment_variable_then_the_default_file() {
        let text = Some("schema_version = 1".to_owned());
        let path = Some("from-environment.toml".to_owned());
        assert_eq!(
            ConfigSource::resolve(Some("cli.toml".into()), path.clone(), text.clone()),
            ConfigSource::File("cli.toml".into())
        );
        assert_eq!(
            ConfigSource::resolve(None, None, text.clone()),
            ConfigSource::Text("schema_version = 1".into())
        );
        assert_eq!(
            ConfigSource::resolve(None, path.clone(), None),
            ConfigSource::File("from-environment.toml".into())
        );
        assert_eq!(
            ConfigSource::resolve(None, path, text),
            ConfigSource::Conflict {
                path: "from-environment.toml".into()
            }
        );
        assert_eq!(
            ConfigSource::resolve(None, Some(String::new()), Some(" ".into())),
            ConfigSource::File("stackwright.toml".into())
        );
        assert_eq!(
            ConfigSource::Text(String::new()).display_path(),
            PathBuf::from(CONFIG_TEXT_VARIABLE)
        );
    }

    const SAMPLE: &str = r#"
schema_version = 1
[instance]
name = "acme-dev"
domain = "cde.acme.example"
region = "us-east-1"
[network]
mode = "all-private"
vpc_cidr = "10.40.0.0/16"
availability_zones = 3
public_services = true
[control_plane]
url = "https://control.example.com"
[release]
channel = "stable"
"#;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(text, Path::new("stackwright.toml"))
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid configuration, got {other:?}"),
        }
    }

    #[test]
    fn the_sample_from_the_documentation_parses() {
        let config = parse(SAMPLE).unwrap();
        assert_eq!(config.instance.name, "acme-dev");
        assert_eq!(config.network.mode, NetworkMode::AllPrivate);
        assert_eq!(config.network.vpc_cidr.to_string(), "10.40.0.0/16");
        assert!(config.network.public_services);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_path() {
        let found = problems(&SAMPLE.replace("[release]", "[release]\nchanel = \"x\""));
        assert_eq!(found[0].key, "release.chanel");
        assert_eq!(found[0].message, "unknown key");
        assert!(found[0].hint.contains("`channel`"), "{:?}", found[0].hint);
    }

    #[test]
    fn a_missing_key_is_named_with_its_path() {
        let found = problems(&SAMPLE.replace("domain = \"cde.acme.example\"\n", ""));
        assert_eq!(found[0].key, "instance.domain");
        assert_eq!(found[0].message, "missing");
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let text = SAMPLE
            .replace("10.40.0.0/16", "10.40.0.0/26")
            .replace("availability_zones = 3", "availability_zones = 4")
            .replace("mode = \"all-private\"", "mode = \"public\"");
        let keys: Vec<String> = problems(&text)
            .into_iter()
            .map(|problem| problem.key)
            .collect();
        assert_eq!(
            keys,
            [
                "network.vpc_cidr",
                "network.availability_zones",
                "network.public_services"
            ]
        );
    }

    #[test]
    fn host_bits_in_the_cidr_suggest_the_network_address() {
        let found = problems(&SAMPLE.replace("10.40.0.0/16", "10.40.1.0/16"));
        assert_eq!(found[0].hint, "write the network address: 10.40.0.0/16");
    }

    #[test]
    fn a_newer_schema_version_is_refused_before_anything_else() {
        let error = parse(&SAMPLE.replace("schema_version = 1", "schema_version = 2\nfuture = 1"))
            .unwrap_err();
        assert!(matches!(error, ConfigError::SchemaVersion { ref found, .. } if found == "2"));
    }

    #[test]
    fn domains_are_checked_label_by_label() {
        assert!(check_domain("cde.acme.example").is_ok());
        assert!(check_domain("localhost").is_err());
        assert!(check_domain("cde..example").is_err());
        assert!(check_domain("-cde.example").is_err());
        assert!(check_domain("CDE.example").is_err());
        assert!(check_domain("10.0.0.1").is_err());
    }

    #[test]
    fn release_repositories_are_https_s3_or_loopback_http() {
        for accepted in [
            "https://releases.example.com/stackwright/",
            "s3://vendor-releases/stable",
            "http://127.0.0.1:8470/repository/",
            "http://[::1]:8470/",
        ] {
            assert!(check_release_repository(accepted).is_ok(), "{accepted}");
        }
        for refused in [
            "http://releases.example.com/",
            "http://localhost:8470/",
            "ftp://releases.example.com/",
            "releases.example.com",
            "s3:///prefix",
        ] {
            assert!(check_release_repository(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn plain_http_is_accepted_only_for_loopback() {
        assert!(check_control_plane_url("http://127.0.0.1:8080").is_ok());
        assert!(check_control_plane_url("http://localhost:8080/api").is_ok());
        assert!(check_control_plane_url("http://control.example.com").is_err());
        assert!(check_control_plane_url("https://control.example.com").is_ok());
        assert!(check_control_plane_url("control.example.com").is_err());
    }

    #[test]
    fn subject_patterns_must_name_one_organization() {
        assert!(check_subject_pattern("org:7f3a/project:*").is_ok());
        assert!(check_subject_pattern("org:*").is_err());
        assert!(check_subject_pattern("project:web").is_err());
    }
}
