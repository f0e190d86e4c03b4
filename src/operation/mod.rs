//! The operations themselves (install, upgrade, teardown, image mirroring, the control-plane
//! identity) as library functions over a [`Session`] of narrow traits. They return typed
//! results, tell what happens as [`Event`]s, and never print: the command line renders both.

mod apply;
mod event;
mod hand_over;
mod identity;
mod install;
mod lock;
mod mirror;
mod ports;
mod preflight;
mod release;
mod teardown;
mod upgrade;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;

use semver::Version;

pub use event::{DeployEvents, Discard, Event, EventSink, MirrorEvents, Recorder};
pub use identity::{RegistrationToken, after_install, ensure_identity};
pub use install::{InstallOptions, InstallOutcome, install, plan};
pub use lock::Begun;
pub use mirror::{mirror_list, mirror_release};
pub use ports::{Approver, HealthProbe, ImageMirror, PreflightCheck};
pub use release::{
    ChosenRelease, ReleaseChoice, ReleaseSettings, load_release, load_unsigned, offered_release,
    read_trusted_root, verify_version,
};
pub use teardown::{TeardownOutcome, teardown};
pub use upgrade::{UpgradeOptions, UpgradeOutcome, upgrade};

use crate::cloud::CallerIdentity;
use crate::config::ConfigFile;
use crate::control_plane::{ControlPlane, ControlPlaneError, IdentityStore};
use crate::error::Error;
use crate::provision::StackDeployer;
use crate::state::{Clock, LockSettings, StateStore};

/// What an operation works with: the instance's configuration, who acts in which account, and
/// the adapters behind each trait.
pub struct Session<'a, D: StackDeployer, S: StateStore> {
    pub config: &'a ConfigFile,
    pub caller: &'a CallerIdentity,
    pub region: &'a str,
    pub deployer: &'a D,
    pub state: &'a S,
    pub images: &'a dyn ImageMirror,
    pub health: &'a dyn HealthProbe,
    pub identity: &'a dyn IdentityStore,
    /// The control plane's client, or why there is none (an unusable URL): an install goes
    /// ahead without it and says so.
    pub control_plane: Result<&'a dyn ControlPlane, ControlPlaneError>,
    pub registration_token: &'a RegistrationToken,
    pub releases: &'a ReleaseSettings,
    pub preflight: &'a dyn PreflightCheck,
    pub approver: &'a dyn Approver,
    pub clock: &'a dyn Clock,
    pub events: &'a dyn EventSink,
    pub lock: LockSettings,
}

impl<D: StackDeployer, S: StateStore> Session<'_, D, S> {
    pub fn instance(&self) -> &str {
        &self.config.instance.name
    }

    fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    fn control_plane(&self) -> Result<&dyn ControlPlane, Error> {
        self.control_plane.clone().map_err(Error::from)
    }
}

/// The SHA-256 of the configuration as it resolved, so that a changed file is recognised.
pub fn config_hash(config: &ConfigFile) -> String {
    crate::render::content_digest(
        &serde_json::to_string(config).expect("the configuration serializes"),
    )
}

/// The installer's own version.
pub fn installer_version() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or_else(|_| Version::new(0, 0, 0))
}
