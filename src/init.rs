//! What `stackwright init` collects and writes: the answers, each checked by the
//! configuration's own rules (the answers are rendered into the file's text and parsed as
//! `config validate` parses a file, so no rule lives twice), and the commented
//! `stackwright.toml` they become.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{ConfigError, ConfigFile, Problem};
use crate::network::NetworkMode;

/// Every answer of the wizard; `None` where a key is left to its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    pub name: String,
    pub domain: String,
    pub region: String,
    pub certificate_arn: Option<String>,
    /// As typed, so that an unknown mode is refused by the file's own check.
    pub mode: String,
    pub vpc_cidr: String,
    pub availability_zones: u8,
    pub public_services: bool,
    pub control_plane_url: String,
    pub channel: String,
    pub maintenance_window: Option<String>,
}

/// The name of the token file `control_plane.registration_token_file` defaults to.
pub const TOKEN_FILE: &str = "stackwright.token";

/// The default of each question, before any answer.
pub mod defaults {
    pub const NAME: &str = "cde";
    pub const REGION: &str = "us-east-1";
    pub const VPC_CIDR: &str = "10.40.0.0/16";
    pub const AVAILABILITY_ZONES: u8 = 3;
    pub const CHANNEL: &str = "stable";
    pub const MAINTENANCE_WINDOW: &str = "sun 02:00-05:00";
}

impl Answers {
    /// Answers made of the defaults, with placeholders where there is none (the domain and the
    /// control plane): the starting point the questions fill in.
    pub fn placeholder() -> Self {
        Answers {
            name: defaults::NAME.into(),
            domain: "cde.example.com".into(),
            region: defaults::REGION.into(),
            certificate_arn: None,
            mode: NetworkMode::Private.to_string(),
            vpc_cidr: defaults::VPC_CIDR.into(),
            availability_zones: defaults::AVAILABILITY_ZONES,
            public_services: false,
            control_plane_url: "https://control.example.com".into(),
            channel: defaults::CHANNEL.into(),
            maintenance_window: Some(defaults::MAINTENANCE_WINDOW.into()),
        }
    }

    /// The networking mode, when the answer names one.
    pub fn network_mode(&self) -> Option<NetworkMode> {
        NetworkMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == self.mode)
    }

    /// The problems of the configuration these answers make, as `config validate` would
    /// report them.
    pub fn problems(&self) -> Vec<Problem> {
        match ConfigFile::parse(&self.to_toml(), Path::new("stackwright.toml")) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Err(other) => vec![Problem {
                key: "(file)".into(),
                message: other.to_string(),
                hint: other.hint().unwrap_or_default(),
            }],
        }
    }

    /// The problem with one key, if any: the check of one answer as it is typed.
    pub fn problem_with(&self, key: &str) -> Option<Problem> {
        self.problems()
            .into_iter()
            .find(|problem| problem.key == key)
    }

    /// The validated configuration.
    pub fn config(&self) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(&self.to_toml(), Path::new("stackwright.toml"))
    }

    /// `stackwright.toml` with a comment above every key saying what it means.
    pub fn to_toml(&self) -> String {
        let quote = |text: &str| toml::Value::String(text.to_owned()).to_string();
        let mut text = String::new();
        let mut line = |content: &str| {
            text.push_str(content);
            text.push('\n');
        };
        line("# stackwright.toml, written by `stackwright init`.");
        line(
            "# `stackwright config validate` checks it; `stackwright config schema` describes every key.",
        );
        line("schema_version = 1");
        line("");
        line("[instance]");
        line(
            "# Lowercase letters, digits and hyphens, 3 to 20 characters; prefixes every stack name.",
        );
        line(&format!("name = {}", quote(&self.name)));
        line(
            "# The DNS name users reach the instance at; it also serves every name under it (*.domain).",
        );
        line(&format!("domain = {}", quote(&self.domain)));
        line("# The AWS region to install into.");
        line(&format!("region = {}", quote(&self.region)));
        line(
            "# An ACM certificate covering the domain and its wildcard. Without one, the platform stack",
        );
        line("# requests a DNS-validated certificate and install lists the records to create.");
        match &self.certificate_arn {
            Some(arn) => line(&format!("certificate_arn = {}", quote(arn))),
            None => line("# certificate_arn = \"arn:aws:acm:<region>:<account>:certificate/<id>\""),
        }
        line("");
        line("[network]");
        line("# public: internet-facing load balancer, egress through a NAT gateway per zone.");
        line("# private: internal load balancer only, egress through a NAT gateway per zone.");
        line(
            "# all-private: internal load balancer only, no route to the internet; AWS services through",
        );
        line("# VPC endpoints, the control plane through PrivateLink or your proxy.");
        line(&format!("mode = {}", quote(&self.mode)));
        line(
            "# The VPC's address range, from a /16 to a /22; it must not overlap networks it is peered with.",
        );
        line(&format!("vpc_cidr = {}", quote(&self.vpc_cidr)));
        line("# 2 (cheaper) or 3 (survives the loss of a zone with capacity to spare).");
        line(&format!("availability_zones = {}", self.availability_zones));
        if self.network_mode() == Some(NetworkMode::AllPrivate) || self.public_services {
            line("# A separate internet-facing endpoint serving only the OIDC and webhook paths.");
            line(&format!("public_services = {}", self.public_services));
        }
        line("");
        line("[control_plane]");
        line("# The vendor's control plane: heartbeats, update checks and reports go there.");
        line(&format!("url = {}", quote(&self.control_plane_url)));
        line(
            "# The one-time registration token, in its own file beside this one (readable by its owner",
        );
        line(
            "# only); the first install exchanges it for the instance's identity. Never put it here.",
        );
        line(&format!("registration_token_file = {}", quote(TOKEN_FILE)));
        line("");
        line("[release]");
        line("# The release channel this instance follows, such as \"stable\" or \"beta\".");
        line(&format!("channel = {}", quote(&self.channel)));
        line("");
        line("[upgrade]");
        line(
            "# Weekly hours in UTC when the unattended upgrade job may start an upgrade; urgent releases",
        );
        line("# do not wait for it. Without it, upgrades start whenever the job runs.");
        match &self.maintenance_window {
            Some(window) => line(&format!("maintenance_window = {}", quote(window))),
            None => line("# maintenance_window = \"sat,sun 02:00-05:00\""),
        }
        text
    }

    /// A short summary for people: one line per answer.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        let mut row = |label: &str, value: &str| {
            let _ = writeln!(text, "  {label:<22} {value}");
        };
        row("instance name", &self.name);
        row("domain", &format!("{} and *.{}", self.domain, self.domain));
        row("region", &self.region);
        row(
            "certificate",
            self.certificate_arn
                .as_deref()
                .unwrap_or("requested by the install (DNS-validated)"),
        );
        row("networking mode", &self.mode);
        row("VPC range", &self.vpc_cidr);
        row("availability zones", &self.availability_zones.to_string());
        if self.network_mode() == Some(NetworkMode::AllPrivate) {
            row(
                "public services",
                if self.public_services { "yes" } else { "no" },
            );
        }
        row("control plane", &self.control_plane_url);
        row("release channel", &self.channel);
        row(
            "maintenance window",
            &self
                .maintenance_window
                .as_deref()
                .map(|window| format!("{window} UTC"))
                .unwrap_or_else(|| "none: upgrades start whenever the job runs".into()),
        );
        text
    }
}

/// What the networking modes mean and cost, shown before the question.
pub fn mode_explanation(zones: u8) -> String {
    let endpoints = crate::network::INTERFACE_ENDPOINT_SERVICES.len();
    let zones = usize::from(zones);
    format!(
        "  public       users reach it from the internet; egress through {zones} NAT gateways (one per zone,\n\
         \x20              about US$33 a month each before data)\n\
         \x20 private      reachable only from your network; egress through {zones} NAT gateways, as public\n\
         \x20 all-private  no route to the internet at all: {endpoints} interface endpoints in each of {zones} zones\n\
         \x20              (about US$7 a month per endpoint and zone: roughly US${} a month), no NAT gateway",
        endpoints * zones * 73 / 10
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_answers_make_a_valid_file() {
        assert_eq!(Answers::placeholder().problems(), Vec::new());
    }

    #[test]
    fn a_bad_answer_is_named_by_its_key_with_the_configurations_own_message() {
        let answers = Answers {
            vpc_cidr: "10.40.0.0/26".into(),
            ..Answers::placeholder()
        };
        let problem = answers.problem_with("network.vpc_cidr").unwrap();
        assert!(problem.message.contains("too small"), "{problem:?}");
        let answers = Answers {
            vpc_cidr: "ten".into(),
            ..Answers::placeholder()
        };
        let problem = answers.problem_with("network.vpc_cidr").unwrap();
        assert!(problem.message.contains("not an IPv4 CIDR"), "{problem:?}");
    }

    #[test]
    fn quotes_in_answers_cannot_break_the_file() {
        let answers = Answers {
            name: "a\"b\nc".into(),
            ..Answers::placeholder()
        };
        let problem = answers.problem_with("instance.name").unwrap();
        assert!(
            problem.message.contains("not a valid instance name"),
            "{problem:?}"
        );
    }
}
