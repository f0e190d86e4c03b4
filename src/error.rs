//! The errors commands return, the hint each one carries, and the exit codes they map to.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::ConfigError;
use crate::control_plane::ControlPlaneError;
use crate::mirror::MirrorError;
use crate::preflight::{Outcome, PreflightReport};
use crate::provision::{DeployError, ProvisionError};
use crate::release::{ManifestError, TrustError};
use crate::render::RenderError;
use crate::state::StateError;

/// What the process tells its caller. The numbers are documented in the README and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Done; nothing left to do.
    Success,
    /// An error: bad input, a failed call, a failed deployment.
    Failure,
    /// `plan` found changes to make.
    Changes,
    /// `preflight` passed with warnings: 2 again, "done, but look at this", like `plan`'s.
    Warnings,
    /// Another run holds the instance's lock.
    Blocked,
    /// Stopped by Ctrl-C or SIGTERM; the next run resumes.
    Interrupted,
    /// An unattended upgrade whose changes the policy would not approve: parked for a person.
    Parked,
    /// The command line itself was wrong.
    Usage,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Changes | ExitStatus::Warnings => 2,
            ExitStatus::Blocked => 3,
            ExitStatus::Parked => 4,
            ExitStatus::Interrupted => 130,
            ExitStatus::Usage => 64,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

/// A preflight's exit status: 0 when everything passed (or was skipped), 2 with warnings only,
/// 1 with a failure. Worked out here, above preflight, where the exit statuses live.
impl From<&PreflightReport> for ExitStatus {
    fn from(report: &PreflightReport) -> Self {
        match report.result {
            Outcome::Fail => ExitStatus::Failure,
            Outcome::Warn => ExitStatus::Warnings,
            Outcome::Pass | Outcome::Skip => ExitStatus::Success,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Aws(#[from] DeployError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("cannot read the trusted root {}", path.display())]
    TrustedRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{message}")]
    Usage { message: String, hint: String },
    #[error("{instance} runs release {release}, but it is not healthy: {}", problems.join("; "))]
    Unhealthy {
        instance: String,
        release: String,
        problems: Vec<String>,
    },
    #[error("preflight found {} that would stop the install: {}", crate::text::count(failures.len(), "problem", "problems"), failures.join("; "))]
    PreflightFailed { failures: Vec<String> },
    #[error("{action} needs a confirmation, and there is no terminal to ask on")]
    Unconfirmed { action: String },
    #[error("{action} was not confirmed; nothing was changed")]
    Declined { action: String },
}

impl Error {
    /// The fix to print after the error and its causes.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Config(error) => error.hint(),
            Error::Manifest(ManifestError::Read { .. }) => {
                Some("pass --manifest-file with the path of a release manifest, such as manifests/releases/1.0.0.json, or name a signed release with --release VERSION".into())
            }
            Error::Manifest(_) => Some("use the manifest as the vendor published it; `stackwright release verify` checks one".into()),
            Error::Render(RenderError::Invalid { .. } | RenderError::Compile { .. } | RenderError::Render { .. } | RenderError::UnsourcedParameter { .. }) => {
                Some("this is a defect in stackwright's templates, not in your configuration: please report it with the output of `stackwright --version`".into())
            }
            Error::Provision(error) => error.hint(),
            Error::Aws(error) => error.hint(),
            Error::State(error) => error.hint(),
            Error::Mirror(error) => error.hint(),
            Error::Trust(error) => error.hint(),
            Error::TrustedRoot { .. } => Some("unset STACKWRIGHT_TRUSTED_ROOT (or drop --trusted-root) to use the root built into stackwright, or point it at the vendor's root.json".into()),
            Error::ControlPlane(error) => error.hint(),
            Error::Write { .. } => Some("check that the directory exists and is writable".into()),
            Error::Read { .. } => Some("check that the file exists and is readable".into()),
            Error::Usage { hint, .. } => Some(hint.clone()),
            Error::Unhealthy { release, .. } => Some(format!("look at the services' events and the load balancer's health checks named above; release {release} is skipped from now on until a person retries it with `stackwright upgrade --to {release}`, or a newer release replaces it")),
            Error::PreflightFailed { .. } => Some("fix what the report above names (`stackwright preflight` checks again), or pass --skip-preflight to install anyway".into()),
            Error::Unconfirmed { .. } => Some("run it from a terminal, or pass --yes to go ahead without asking".into()),
            Error::Declined { .. } => None,
        }
    }

    pub fn exit_status(&self) -> ExitStatus {
        let state = match self {
            Error::Usage { .. } => return ExitStatus::Usage,
            Error::State(error) | Error::Provision(ProvisionError::State(error)) => error,
            _ => return ExitStatus::Failure,
        };
        match state {
            StateError::LockHeld { .. } => ExitStatus::Blocked,
            StateError::Interrupted => ExitStatus::Interrupted,
            _ => ExitStatus::Failure,
        }
    }

    /// The error's causes, outermost first, without the error itself.
    pub fn causes(&self) -> Vec<String> {
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(self);
        while let Some(error) = source {
            causes.push(error.to_string());
            source = error.source();
        }
        causes
    }
}
