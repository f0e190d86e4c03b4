//! `init`'s answers from its flags and the defaults, every problem reported at once with its
//! flag's name.

use crate::cli::InitArgs;
use crate::error::Error;
use crate::init::{Answers, defaults};
use crate::network::NetworkMode;
use crate::settings::GlobalSettings;

/// The answers from flags and defaults, every problem reported at once with its flag's name.
pub(super) fn from_flags(
    settings: &GlobalSettings,
    args: &InitArgs,
) -> Result<(Answers, Option<String>), Error> {
    let mut missing = Vec::new();
    let domain = args.domain.clone().unwrap_or_else(|| {
        missing.push("--domain");
        String::new()
    });
    let control_plane_url = settings.control_plane_url.clone().unwrap_or_else(|| {
        missing.push("--control-plane-url");
        String::new()
    });
    if !missing.is_empty() {
        return Err(Error::Usage {
            message: format!(
                "init --yes needs {}: there is no default for them",
                missing.join(" and ")
            ),
            hint: "give them as flags, such as --domain cde.acme.example --control-plane-url https://control.example.com".into(),
        });
    }
    let answers = answers_from(settings, args, domain, control_plane_url);
    let problems = answers.problems();
    if !problems.is_empty() {
        return Err(Error::Usage {
            message: format!(
                "init: {}",
                problems
                    .iter()
                    .map(|problem| format!("{}: {}", flag_of(&problem.key), problem.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            hint: problems
                .iter()
                .map(|problem| format!("{}: {}", flag_of(&problem.key), problem.hint))
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    let token = args
        .registration_token
        .as_deref()
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(str::to_owned);
    Ok((answers, token))
}

fn answers_from(
    settings: &GlobalSettings,
    args: &InitArgs,
    domain: String,
    control_plane_url: String,
) -> Answers {
    let mode = args.mode.unwrap_or(NetworkMode::Private).to_string();
    Answers {
        name: args.name.clone().unwrap_or_else(|| defaults::NAME.into()),
        domain,
        region: settings
            .region
            .clone()
            .unwrap_or_else(|| defaults::REGION.into()),
        certificate_arn: args.certificate_arn.clone().filter(|arn| !arn.is_empty()),
        mode,
        vpc_cidr: args
            .vpc_cidr
            .clone()
            .unwrap_or_else(|| defaults::VPC_CIDR.into()),
        availability_zones: args
            .availability_zones
            .unwrap_or(defaults::AVAILABILITY_ZONES),
        public_services: args.public_services.unwrap_or(false),
        control_plane_url,
        channel: args
            .channel
            .clone()
            .unwrap_or_else(|| defaults::CHANNEL.into()),
        maintenance_window: window_answer(
            args.maintenance_window
                .as_deref()
                .unwrap_or(defaults::MAINTENANCE_WINDOW),
        ),
    }
}

/// "none" (or nothing) means no window.
pub(super) fn window_answer(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && text != "none").then(|| text.to_owned())
}

/// The flag that sets a configuration key, for messages about flags.
pub(super) fn flag_of(key: &str) -> String {
    match key {
        "instance.name" => "--name".into(),
        "instance.domain" => "--domain".into(),
        "instance.region" => "--region".into(),
        "instance.certificate_arn" => "--certificate-arn".into(),
        "network.mode" => "--mode".into(),
        "network.vpc_cidr" => "--vpc-cidr".into(),
        "network.availability_zones" => "--availability-zones".into(),
        "network.public_services" => "--public-services".into(),
        "control_plane.url" => "--control-plane-url".into(),
        "release.channel" => "--channel".into(),
        "upgrade.maintenance_window" => "--maintenance-window".into(),
        other => other.into(),
    }
}
