//! `stackwright config schema` and `stackwright config validate`.

use serde::Serialize;

use crate::config::{ConfigError, ConfigFile, Problem};
use crate::error::{Error, ExitStatus};
use crate::output::Printer;
use crate::settings::GlobalSettings;
use crate::stacks::StackKind;

pub fn schema(printer: &Printer) -> Result<ExitStatus, Error> {
    printer.data(&schemars::schema_for!(ConfigFile));
    Ok(ExitStatus::Success)
}

#[derive(Serialize)]
struct ValidationReport<'a> {
    path: String,
    valid: bool,
    problems: &'a [Problem],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stacks: Vec<String>,
}

pub fn validate(settings: &GlobalSettings, printer: &Printer) -> Result<ExitStatus, Error> {
    let path = settings.config_path.display().to_string();
    match settings.load_config() {
        Ok(config) => {
            let stacks: Vec<String> = StackKind::for_config(&config)
                .into_iter()
                .map(|kind| kind.stack_name(&config.instance.name))
                .collect();
            if printer.json_mode() {
                printer.data(&ValidationReport {
                    path,
                    valid: true,
                    problems: &[],
                    stacks,
                });
            } else {
                printer.result(format!(
                    "{path} is valid: instance {} in {}, {} mode over {} availability zones, stacks {}",
                    config.instance.name,
                    config.instance.region,
                    config.network.mode,
                    config.network.availability_zones,
                    stacks.join(", ")
                ));
            }
            Ok(ExitStatus::Success)
        }
        Err(ConfigError::Invalid {
            path: file,
            problems,
        }) if printer.json_mode() => {
            printer.data(&ValidationReport {
                path,
                valid: false,
                problems: &problems,
                stacks: Vec::new(),
            });
            Err(ConfigError::Invalid {
                path: file,
                problems,
            }
            .into())
        }
        Err(error) => Err(error.into()),
    }
}
