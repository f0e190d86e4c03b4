//! `init`'s questions: one at a time, each explained, defaulted and checked as it is typed with
//! the configuration's own rules; an answer given by its flag is not asked.

use dialoguer::theme::ColorfulTheme;
use dialoguer::{Confirm, Input, Password};

use super::answers::{flag_of, window_answer};
use crate::cli::InitArgs;
use crate::config::Problem;
use crate::init::{Answers, TOKEN_FILE, defaults, mode_explanation};
use crate::network::NetworkMode;
use crate::settings::GlobalSettings;

/// One question: what it is for, how it is asked, and the key it sets.
struct Question<'a> {
    given: Option<String>,
    explanation: &'a str,
    prompt: &'a str,
    default: Option<String>,
    key: &'a str,
    apply: &'a dyn Fn(&mut Answers, &str),
}

struct Wizard {
    theme: ColorfulTheme,
    answers: Answers,
}

impl Wizard {
    /// Asks for one text answer unless its flag gave it; `apply` puts the typed text into the
    /// answers, whose key is then checked as `config validate` would check it.
    fn ask(&mut self, question: Question<'_>) -> Result<(), dialoguer::Error> {
        let Question {
            given,
            explanation,
            prompt,
            default,
            key,
            apply,
        } = question;
        if let Some(given) = given {
            apply(&mut self.answers, &given);
            if self.answers.problem_with(key).is_none() {
                eprintln!("{prompt}: {given} (given by {})", flag_of(key));
                return Ok(());
            }
        }
        eprintln!();
        eprintln!("{explanation}");
        let current = self.answers.clone();
        let mut input = Input::<String>::with_theme(&self.theme)
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
        apply(&mut self.answers, typed.trim());
        Ok(())
    }

    fn instance(
        &mut self,
        settings: &GlobalSettings,
        args: &InitArgs,
    ) -> Result<(), dialoguer::Error> {
        self.ask(Question {
            given: args.name.clone(),
            explanation: "The instance's name prefixes every stack, bucket and table it creates.",
            prompt: "Instance name",
            default: Some(defaults::NAME.into()),
            key: "instance.name",
            apply: &|answers, text| answers.name = text.to_owned(),
        })?;
        self.ask(Question {
            given: args.domain.clone(),
            explanation: "The DNS name users reach the instance at; workspaces get names under it (*.domain), so you\nwill create two DNS records for it at the end of the install.",
            prompt: "Domain",
            default: None,
            key: "instance.domain",
            apply: &|answers, text| answers.domain = text.to_owned(),
        })?;
        self.ask(Question {
            given: settings.region.clone(),
            explanation: "The AWS region to install into (your credentials' account decides where it is billed).",
            prompt: "Region",
            default: Some(
                std::env::var("AWS_REGION")
                    .ok()
                    .filter(|region| !region.is_empty())
                    .unwrap_or_else(|| defaults::REGION.into()),
            ),
            key: "instance.region",
            apply: &|answers, text| answers.region = text.to_owned(),
        })?;
        self.ask(Question {
            given: args.certificate_arn.clone(),
            explanation: "An ACM certificate for the domain and its wildcard, if you have one (Enter for none: the\ninstall then requests one, validated through DNS records it lists).",
            prompt: "Certificate ARN",
            default: Some(String::new()),
            key: "instance.certificate_arn",
            apply: &|answers, text| answers.certificate_arn = (!text.is_empty()).then(|| text.to_owned()),
        })
    }

    fn network(&mut self, args: &InitArgs) -> Result<(), dialoguer::Error> {
        let zones_for_costs = args
            .availability_zones
            .unwrap_or(defaults::AVAILABILITY_ZONES);
        self.ask(Question {
            given: args.mode.map(|mode| mode.to_string()),
            explanation: &format!(
                "The networking mode: how users reach the instance and how it reaches out.\n{}",
                mode_explanation(zones_for_costs)
            ),
            prompt: "Networking mode (public, private, all-private)",
            default: Some(NetworkMode::Private.to_string()),
            key: "network.mode",
            // An unknown mode is kept as typed, so that the file's own check names it.
            apply: &|answers, text| answers.mode = text.to_owned(),
        })?;
        self.ask(Question {
            given: args.vpc_cidr.clone(),
            explanation: "The VPC's address range, from a /16 to a /22; pick one that does not overlap the networks\nit will be peered or connected with.",
            prompt: "VPC range",
            default: Some(defaults::VPC_CIDR.into()),
            key: "network.vpc_cidr",
            apply: &|answers, text| answers.vpc_cidr = text.to_owned(),
        })?;
        self.ask(Question {
            given: args.availability_zones.map(|zones| zones.to_string()),
            explanation: "How many availability zones to spread over: 2 is cheaper, 3 survives the loss of a zone\nwith capacity to spare.",
            prompt: "Availability zones",
            default: Some(defaults::AVAILABILITY_ZONES.to_string()),
            key: "network.availability_zones",
            apply: &|answers, text| answers.availability_zones = text.parse().unwrap_or(0),
        })?;
        if self.answers.network_mode() == Some(NetworkMode::AllPrivate) {
            self.answers.public_services = match args.public_services {
                Some(given) => given,
                None => {
                    eprintln!();
                    eprintln!(
                        "All-private can still expose only the OIDC and webhook paths on a small internet-facing\nendpoint, so that Git providers can trigger prebuilds and third parties can read the OIDC keys."
                    );
                    Confirm::with_theme(&self.theme)
                        .with_prompt("Public services endpoint?")
                        .default(false)
                        .wait_for_newline(true)
                        .interact()?
                }
            };
        }
        Ok(())
    }

    fn registration_token(&self, args: &InitArgs) -> Result<Option<String>, dialoguer::Error> {
        if let Some(token) = &args.registration_token {
            return Ok(Some(token.trim().to_owned()).filter(|token| !token.is_empty()));
        }
        eprintln!();
        eprintln!(
            "The one-time registration token the vendor issued. It is not shown as you type, and is\nwritten to {TOKEN_FILE} beside the configuration (readable by you only), never into it.\nEnter for none: you can put it there later."
        );
        let typed = Password::with_theme(&self.theme)
            .with_prompt("Registration token")
            .allow_empty_password(true)
            .interact()?;
        Ok(Some(typed.trim().to_owned()).filter(|token| !token.is_empty()))
    }

    fn releases(&mut self, args: &InitArgs) -> Result<(), dialoguer::Error> {
        self.ask(Question {
            given: args.channel.clone(),
            explanation: "The release channel the instance follows.",
            prompt: "Release channel",
            default: Some(defaults::CHANNEL.into()),
            key: "release.channel",
            apply: &|answers, text| answers.channel = text.to_owned(),
        })?;
        self.ask(Question {
            given: args.maintenance_window.clone(),
            explanation: "When the unattended upgrade job may start an upgrade: days and hours in UTC, such as\n\"sat,sun 02:00-05:00\" or \"daily 03:00-04:00\"; \"none\" to upgrade whenever the job runs.",
            prompt: "Maintenance window (UTC)",
            default: Some(defaults::MAINTENANCE_WINDOW.into()),
            key: "upgrade.maintenance_window",
            apply: &|answers, text| answers.maintenance_window = window_answer(text),
        })
    }
}

/// The wizard: every answer and the registration token, in the order people think of them.
pub(super) fn ask(
    settings: &GlobalSettings,
    args: &InitArgs,
) -> Result<(Answers, Option<String>), dialoguer::Error> {
    let mut wizard = Wizard {
        theme: ColorfulTheme::default(),
        answers: Answers::placeholder(),
    };
    eprintln!(
        "This writes {}: a few questions, each with a default in brackets (Enter keeps it).",
        settings.config_path.display()
    );
    wizard.instance(settings, args)?;
    wizard.network(args)?;
    wizard.ask(Question {
        given: settings.control_plane_url.clone(),
        explanation: "The vendor's control plane: the instance reports there and learns of new releases.",
        prompt: "Control plane URL",
        default: None,
        key: "control_plane.url",
        apply: &|answers, text| answers.control_plane_url = text.to_owned(),
    })?;
    let token = wizard.registration_token(args)?;
    wizard.releases(args)?;
    Ok((wizard.answers, token))
}
