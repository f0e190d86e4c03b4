//! Settings resolved once, command line over environment over file over default, into plain
//! values the commands receive.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{GlobalArgs, OutputFormat};
use crate::config::{
    CONFIG_PATH_VARIABLE, CONFIG_TEXT_VARIABLE, ConfigError, ConfigFile, ConfigSource, Problem,
};
use crate::error::Error;
use crate::operation::ReleaseSettings;
use crate::output::{Printer, Verbosity};
use crate::state::LockSettings;

/// What every command knows before it starts.
#[derive(Debug, Clone)]
pub struct GlobalSettings {
    /// Where the configuration comes from.
    pub config_source: ConfigSource,
    /// The configuration file, or the name messages give the configuration when it comes from
    /// `STACKWRIGHT_CONFIG_TEXT` (the variable's name, so that errors name it).
    pub config_path: PathBuf,
    pub format: OutputFormat,
    pub verbosity: Verbosity,
    pub assume_yes: bool,
    pub no_progress: bool,
    pub profile: Option<String>,
    pub region: Option<String>,
    /// Overrides `control_plane.url` (`--control-plane-url`, `STACKWRIGHT_CONTROL_PLANE_URL`).
    pub control_plane_url: Option<String>,
}

impl GlobalSettings {
    pub fn from_args(args: &GlobalArgs) -> Self {
        let config_source = ConfigSource::resolve(
            args.config.clone(),
            std::env::var(CONFIG_PATH_VARIABLE).ok(),
            std::env::var(CONFIG_TEXT_VARIABLE).ok(),
        );
        GlobalSettings {
            config_path: config_source.display_path(),
            config_source,
            format: args.output,
            verbosity: if args.quiet {
                Verbosity::Quiet
            } else if args.verbose > 0 {
                Verbosity::Verbose
            } else {
                Verbosity::Normal
            },
            assume_yes: args.yes,
            no_progress: args.no_progress,
            profile: args.profile.clone(),
            region: args.region.clone(),
            control_plane_url: args.control_plane_url.clone(),
        }
    }

    /// The root metadata to trust: the file `path` (or `STACKWRIGHT_TRUSTED_ROOT`) names, else
    /// the root built into this installer.
    pub fn trusted_root(&self, path: Option<&std::path::Path>) -> Result<Vec<u8>, Error> {
        let mut releases = self.release_settings();
        if let Some(path) = path {
            releases.trusted_root = Some(path.to_owned());
        }
        releases.trusted_root()
    }

    /// Where releases named by version are verified: `STACKWRIGHT_RELEASE_REPOSITORY` (else the
    /// control plane's repository), against `STACKWRIGHT_TRUSTED_ROOT` (else the embedded root).
    pub fn release_settings(&self) -> ReleaseSettings {
        ReleaseSettings {
            repository: std::env::var("STACKWRIGHT_RELEASE_REPOSITORY").ok(),
            trusted_root: std::env::var_os("STACKWRIGHT_TRUSTED_ROOT").map(PathBuf::from),
        }
    }

    /// The lock's lease (60 s, or `STACKWRIGHT_LOCK_LEASE_SECONDS`, which tests shorten) and
    /// how long to wait for a held lock.
    pub fn lock_settings(&self, wait_seconds: u64) -> Result<LockSettings, Error> {
        let mut settings = LockSettings {
            wait: Duration::from_secs(wait_seconds),
            ..LockSettings::default()
        };
        if let Ok(text) = std::env::var("STACKWRIGHT_LOCK_LEASE_SECONDS") {
            let seconds: f64 = text.trim().parse().ok().filter(|seconds: &f64| seconds.is_finite() && *seconds >= 0.3).ok_or_else(|| Error::Usage {
                message: format!("STACKWRIGHT_LOCK_LEASE_SECONDS is \"{text}\", not a number of seconds of at least 0.3"),
                hint: "unset it to use the default lease of 60 seconds".into(),
            })?;
            settings.lease = Duration::from_secs_f64(seconds);
        }
        Ok(settings)
    }

    pub fn printer(&self) -> Printer {
        Printer::new(self.format, self.verbosity, self.no_progress)
    }

    /// The configuration file with the command line's and environment's overrides applied, and
    /// validated again afterwards so that an override cannot smuggle in a bad value.
    pub fn load_config(&self) -> Result<ConfigFile, ConfigError> {
        let mut config = self.config_source.load()?;
        if let Some(url) = &self.control_plane_url {
            config.control_plane.url = url.clone();
        }
        if self.region.is_some() || self.control_plane_url.is_some() {
            if let Some(region) = &self.region {
                config.instance.region = region.clone();
            }
            let problems: Vec<Problem> = config
                .problems()
                .into_iter()
                .map(|mut problem| {
                    if problem.key == "instance.region" && self.region.is_some() {
                        problem.key = "--region".into();
                    }
                    if problem.key == "control_plane.url" && self.control_plane_url.is_some() {
                        problem.key = "--control-plane-url".into();
                    }
                    problem
                })
                .collect();
            if !problems.is_empty() {
                return Err(ConfigError::Invalid {
                    path: self.config_path.clone(),
                    problems,
                });
            }
        }
        Ok(config)
    }
}
