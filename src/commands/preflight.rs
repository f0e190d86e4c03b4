//! `stackwright preflight`, and the same checks at the start of `install`.

use std::time::Duration;

use super::runtime::block_on;
use crate::aws::{Aws, AwsAccount, CloudFormation};
use crate::cli::PreflightArgs;
use crate::config::ConfigFile;
use crate::error::{Error, ExitStatus};
use crate::output::Printer;
use crate::preflight::dial::{DialSettings, NetworkDialer};
use crate::preflight::{self, PreflightReport};
use crate::settings::GlobalSettings;

fn dial_timeout(seconds: f64) -> Result<Duration, Error> {
    if seconds.is_finite() && (0.05..=300.0).contains(&seconds) {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(Error::Usage {
            message: format!("--dial-timeout {seconds} is not between 0.05 and 300 seconds"),
            hint: "give the seconds each connection may take, such as --dial-timeout 5".into(),
        })
    }
}

/// The dial settings and the dialer from the environment, with the fix when they are wrong.
fn dialing(timeout: f64) -> Result<(DialSettings, NetworkDialer), Error> {
    let usage = |error: preflight::dial::DialSettingsError| Error::Usage {
        message: error.to_string(),
        hint: format!(
            "fix or unset {}: overrides look like host:port=127.0.0.1:port,...",
            error.variable
        ),
    };
    let settings = DialSettings::from_environment(dial_timeout(timeout)?).map_err(usage)?;
    let roots = crate::tls::ExtraRoots::from_environment().map_err(|error| Error::Usage {
        hint: error.hint(),
        message: error.to_string(),
    })?;
    let dialer = NetworkDialer::new(&roots).map_err(usage)?;
    Ok((settings, dialer))
}

/// Runs every check against the configured account and region.
pub(super) async fn check(
    config: &ConfigFile,
    aws: Result<&Aws, &crate::provision::DeployError>,
    timeout: f64,
) -> Result<PreflightReport, Error> {
    let (dial_settings, dialer) = dialing(timeout)?;
    let now = jiff::Timestamp::now();
    Ok(match aws {
        Ok(aws) => {
            let account = AwsAccount::new(aws);
            let deployer = CloudFormation::new(aws);
            preflight::run(
                config,
                Ok((&account, &deployer)),
                &dialer,
                &dial_settings,
                now,
            )
            .await
        }
        Err(error) => {
            preflight::run::<AwsAccount, CloudFormation, _>(
                config,
                Err(error),
                &dialer,
                &dial_settings,
                now,
            )
            .await
        }
    })
}

pub fn preflight(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &PreflightArgs,
) -> Result<ExitStatus, Error> {
    let config = settings.load_config()?;
    // Validate the timeout and the environment before any call.
    dialing(args.dial_timeout)?;
    block_on(async {
        printer.status(format!(
            "Checking {} in {}: account, stacks, quotas, certificate, connectivity...",
            config.instance.name, config.instance.region
        ));
        let aws = Aws::connect(&config.instance.region, settings.profile.as_deref()).await;
        let report = check(&config, aws.as_ref(), args.dial_timeout).await?;
        if printer.json_mode() {
            printer.data(&report);
        } else {
            printer.result(&report);
        }
        Ok(ExitStatus::from(&report))
    })
}
