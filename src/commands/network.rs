//! `stackwright network requirements`.

use crate::cli::RequirementsArgs;
use crate::config::ConfigError;
use crate::error::{Error, ExitStatus};
use crate::network;
use crate::output::{Printer, table};
use crate::settings::GlobalSettings;

pub fn requirements(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &RequirementsArgs,
) -> Result<ExitStatus, Error> {
    // The configuration fills in the domain and control plane; without one, placeholders do,
    // so that the list can be read before anything is configured.
    let config = match settings.load_config() {
        Ok(config) => Some(config),
        Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            None
        }
        Err(error) => return Err(error.into()),
    };
    let mode = match (args.mode, &config) {
        (Some(mode), _) => mode,
        (None, Some(config)) => config.network.mode,
        (None, None) => {
            return Err(Error::Usage {
                message: format!(
                    "no networking mode: {} does not exist",
                    settings.config_path.display()
                ),
                hint: "pass --mode public, --mode private or --mode all-private".into(),
            });
        }
    };
    let inputs = config.as_ref().map(|config| config.requirement_inputs());
    let list = network::requirements(mode, inputs.as_ref());
    if printer.json_mode() {
        printer.data(&serde_json::json!({ "mode": mode, "requirements": list }));
    } else {
        printer.status(format!(
            "Connectivity the {mode} mode needs (port 443, HTTPS):"
        ));
        printer.result(table(
            ["DIR", "DESTINATION", "PURPOSE", "ROUTE", "NEEDED", "WHY"],
            list.iter().map(|requirement| {
                [
                    requirement.direction.to_string(),
                    requirement.destination.clone(),
                    requirement.purpose.to_owned(),
                    requirement.route.clone(),
                    if requirement.required {
                        "always"
                    } else {
                        "feature"
                    }
                    .to_owned(),
                    requirement.reason.to_owned(),
                ]
            }),
        ));
    }
    Ok(ExitStatus::Success)
}
