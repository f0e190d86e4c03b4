//! `stackwright init`: asks for each answer (or takes it from its flag), checks it as it is
//! typed with the configuration's own rules, shows the result, and writes a commented
//! stackwright.toml, with the registration token in a file of its own beside it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use dialoguer::theme::ColorfulTheme;
use dialoguer::{Confirm, Input, Password};
use serde_json::json;

use super::reporter::CliGate;
use crate::cli::InitArgs;
use crate::config::{CONFIG_TEXT_VARIABLE, ConfigSource, Problem};
use crate::error::{Error, ExitStatus};
use crate::init::{Answers, TOKEN_FILE, defaults, mode_explanation};
use crate::network::NetworkMode;
use crate::output::Printer;
use crate::settings::GlobalSettings;

pub fn init(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &InitArgs,
) -> Result<ExitStatus, Error> {
    if matches!(settings.config_source, ConfigSource::Text(_)) {
        return Err(Error::Usage {
            message: format!(
                "init writes a configuration file, but {CONFIG_TEXT_VARIABLE} holds the configuration"
            ),
            hint: format!(
                "unset {CONFIG_TEXT_VARIABLE}, or give --config PATH to name the file to write"
            ),
        });
    }
    let path = settings.config_path.clone();
    let interactive = CliGate::interactive();
    if !settings.assume_yes && !interactive {
        return Err(Error::Usage {
            message: "init asks its questions on a terminal, and there is none".into(),
            hint: format!(
                "give every answer as a flag and --yes, such as `stackwright --config {} init --yes --name acme-dev --domain cde.acme.example --mode private --control-plane-url https://control.example.com`; or write the file yourself from examples/demo.toml (`stackwright config schema` describes every key)",
                path.display()
            ),
        });
    }
    let exists = path.exists();
    if exists && !settings.assume_yes {
        let overwrite = Confirm::with_theme(&ColorfulTheme::default())
            .with_prompt(format!("{} exists. Replace it?", path.display()))
            .default(false)
            .wait_for_newline(true)
            .interact()
            .unwrap_or(false);
        if !overwrite {
            return Err(Error::Declined {
                action: format!("replacing {}", path.display()),
            });
        }
    }
    let (answers, token) = if settings.assume_yes {
        from_flags(settings, args)?
    } else {
        ask(settings, args).map_err(|error| Error::Usage {
            message: format!("init stopped: {error}"),
            hint: "run it again on a terminal, or give the answers as flags with --yes".into(),
        })?
    };
    // The file is written only as a whole and only when valid.
    let config = answers.config()?;
    let token_path = token_path(&path, &config.control_plane.registration_token_file);
    if !settings.assume_yes {
        eprintln!();
        eprintln!("stackwright.toml will hold:");
        eprint!("{}", answers.summary());
        let write = Confirm::with_theme(&ColorfulTheme::default())
            .with_prompt(format!("Write {}?", path.display()))
            .default(true)
            .wait_for_newline(true)
            .interact()
            .unwrap_or(false);
        if !write {
            return Err(Error::Declined {
                action: format!("writing {}", path.display()),
            });
        }
    }
    write_file(&path, answers.to_toml().as_bytes(), None)?;
    if let Some(token) = &token {
        write_file(&token_path, format!("{token}\n").as_bytes(), Some(0o600))?;
    }
    if printer.json_mode() {
        printer.data(&json!({
            "config": path,
            "replaced": exists,
            "registration_token_file": token.as_ref().map(|_| &token_path),
        }));
        return Ok(ExitStatus::Success);
    }
    printer.result(format!(
        "Wrote {}{}: instance {} in {}, {} mode.",
        path.display(),
        if exists { " (replaced)" } else { "" },
        answers.name,
        answers.region,
        answers.mode
    ));
    match &token {
        Some(_) => printer.result(format!(
            "The registration token is in {} (readable by you only), not in the configuration; keep it out of version control.",
            token_path.display()
        )),
        None => printer.result(format!(
            "No registration token was given: put the one the vendor issued into {} (chmod 600) before the first install.",
            token_path.display()
        )),
    }
    printer.result(format!(
        "Next: `stackwright --config {0} preflight` checks the account and network, then `stackwright --config {0} install --release <manifest>` installs.",
        path.display()
    ));
    Ok(ExitStatus::Success)
}

/// The token file's path: relative names are beside the configuration file.
fn token_path(config: &Path, token_file: &Path) -> PathBuf {
    if token_file.is_absolute() {
        return token_file.to_owned();
    }
    config
        .parent()
        .map_or_else(|| token_file.to_owned(), |parent| parent.join(token_file))
}

/// Writes a file whole (to a temporary name, then renamed), with `mode` when given.
fn write_file(path: &Path, contents: &[u8], mode: Option<u32>) -> Result<(), Error> {
    let failed = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp-init");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(&temporary).map_err(failed)?;
    #[cfg(unix)]
    if let Some(mode) = mode {
        // The mode given at creation is masked by the umask, and an old file keeps its own.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(failed)?;
    }
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(failed)
}

/// The answers from flags and defaults, every problem reported at once with its flag's name.
fn from_flags(
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
fn window_answer(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && text != "none").then(|| text.to_owned())
}

/// The flag that sets a configuration key, for messages about flags.
fn flag_of(key: &str) -> String {
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

/// The wizard: one question at a time, each explained, defaulted and checked as typed.
fn ask(
    settings: &GlobalSettings,
    args: &InitArgs,
) -> Result<(Answers, Option<String>), dialoguer::Error> {
    let theme = ColorfulTheme::default();
    let mut answers = Answers::placeholder();
    eprintln!(
        "This writes {}: a few questions, each with a default in brackets (Enter keeps it).",
        settings.config_path.display()
    );
    // Asks for one text answer unless its flag gave it; `apply` puts the typed text into the
    // answers, whose key is then checked as `config validate` would check it.
    let question = |answers: &mut Answers,
                    given: Option<String>,
                    explanation: &str,
                    prompt: &str,
                    default: Option<String>,
                    key: &str,
                    apply: &dyn Fn(&mut Answers, &str)|
     -> Result<(), dialoguer::Error> {
        if let Some(given) = given {
            apply(answers, &given);
            if answers.problem_with(key).is_none() {
                eprintln!("{prompt}: {given} (given by {})", flag_of(key));
                return Ok(());
            }
        }
        eprintln!();
        eprintln!("{explanation}");
        let current = answers.clone();
        let mut input = Input::<String>::with_theme(&theme)
            .with_prompt(prompt)
            .allow_empty(default.as_deref() == Some(""))
            .validate_with(|typed: &String| -> Result<(), String> {
                let mut candidate = current.clone();
                apply(&mut candidate, typed.trim());
                match candidate.problem_with(key) {
                    None => Ok(()),
                    Some(Problem { message, hint, .. }) => Err(format!("{message}; {hint}")),
                }
            });
        if let Some(default) = default.filter(|default| !default.is_empty()) {
            input = input.default(default);
        }
        let typed = input.interact_text()?;
        apply(answers, typed.trim());
        Ok(())
    };

    question(
        &mut answers,
        args.name.clone(),
        "The instance's name prefixes every stack, bucket and table it creates.",
        "Instance name",
        Some(defaults::NAME.into()),
        "instance.name",
        &|answers, text| answers.name = text.to_owned(),
    )?;
    question(
        &mut answers,
        args.domain.clone(),
        "The DNS name users reach the instance at; workspaces get names under it (*.domain), so you\nwill create two DNS records for it at the end of the install.",
        "Domain",
        None,
        "instance.domain",
        &|answers, text| answers.domain = text.to_owned(),
    )?;
    question(
        &mut answers,
        settings.region.clone(),
        "The AWS region to install into (your credentials' account decides where it is billed).",
        "Region",
        Some(
            std::env::var("AWS_REGION")
                .ok()
                .filter(|region| !region.is_empty())
                .unwrap_or_else(|| defaults::REGION.into()),
        ),
        "instance.region",
        &|answers, text| answers.region = text.to_owned(),
    )?;
    question(
        &mut answers,
        args.certificate_arn.clone(),
        "An ACM certificate for the domain and its wildcard, if you have one (Enter for none: the\ninstall then requests one, validated through DNS records it lists).",
        "Certificate ARN",
        Some(String::new()),
        "instance.certificate_arn",
        &|answers, text| answers.certificate_arn = (!text.is_empty()).then(|| text.to_owned()),
    )?;
    let zones_for_costs = args
        .availability_zones
        .unwrap_or(defaults::AVAILABILITY_ZONES);
    question(
        &mut answers,
        args.mode.map(|mode| mode.to_string()),
        &format!(
            "The networking mode: how users reach the instance and how it reaches out.\n{}",
            mode_explanation(zones_for_costs)
        ),
        "Networking mode (public, private, all-private)",
        Some(NetworkMode::Private.to_string()),
        "network.mode",
        // An unknown mode is kept as typed, so that the file's own check names it.
        &|answers, text| answers.mode = text.to_owned(),
    )?;
    question(
        &mut answers,
        args.vpc_cidr.clone(),
        "The VPC's address range, from a /16 to a /22; pick one that does not overlap the networks\nit will be peered or connected with.",
        "VPC range",
        Some(defaults::VPC_CIDR.into()),
        "network.vpc_cidr",
        &|answers, text| answers.vpc_cidr = text.to_owned(),
    )?;
    question(
        &mut answers,
        args.availability_zones.map(|zones| zones.to_string()),
        "How many availability zones to spread over: 2 is cheaper, 3 survives the loss of a zone\nwith capacity to spare.",
        "Availability zones",
        Some(defaults::AVAILABILITY_ZONES.to_string()),
        "network.availability_zones",
        &|answers, text| answers.availability_zones = text.parse().unwrap_or(0),
    )?;
    if answers.network_mode() == Some(NetworkMode::AllPrivate) {
        answers.public_services = match args.public_services {
            Some(given) => given,
            None => {
                eprintln!();
                eprintln!(
                    "All-private can still expose only the OIDC and webhook paths on a small internet-facing\nendpoint, so that Git providers can trigger prebuilds and third parties can read the OIDC keys."
                );
                Confirm::with_theme(&theme)
                    .with_prompt("Public services endpoint?")
                    .default(false)
                    .wait_for_newline(true)
                    .interact()?
            }
        };
    }
    question(
        &mut answers,
        settings.control_plane_url.clone(),
        "The vendor's control plane: the instance reports there and learns of new releases.",
        "Control plane URL",
        None,
        "control_plane.url",
        &|answers, text| answers.control_plane_url = text.to_owned(),
    )?;
    let token = match &args.registration_token {
        Some(token) => Some(token.trim().to_owned()).filter(|token| !token.is_empty()),
        None => {
            eprintln!();
            eprintln!(
                "The one-time registration token the vendor issued. It is not shown as you type, and is\nwritten to {TOKEN_FILE} beside the configuration (readable by you only), never into it.\nEnter for none: you can put it there later."
            );
            let typed = Password::with_theme(&theme)
                .with_prompt("Registration token")
                .allow_empty_password(true)
                .interact()?;
            Some(typed.trim().to_owned()).filter(|token| !token.is_empty())
        }
    };
    question(
        &mut answers,
        args.channel.clone(),
        "The release channel the instance follows.",
        "Release channel",
        Some(defaults::CHANNEL.into()),
        "release.channel",
        &|answers, text| answers.channel = text.to_owned(),
    )?;
    question(
        &mut answers,
        args.maintenance_window.clone(),
        "When the unattended upgrade job may start an upgrade: days and hours in UTC, such as\n\"sat,sun 02:00-05:00\" or \"daily 03:00-04:00\"; \"none\" to upgrade whenever the job runs.",
        "Maintenance window (UTC)",
        Some(defaults::MAINTENANCE_WINDOW.into()),
        "upgrade.maintenance_window",
        &|answers, text| answers.maintenance_window = window_answer(text),
    )?;
    Ok((answers, token))
}
