//! Which release an operation works with: a manifest's path, a version verified in the signed
//! release repository, or by default the one the control plane offers this instance.

use std::path::{Path, PathBuf};

use semver::Version;

use crate::config::ConfigFile;
use crate::control_plane::api::UpdateQuery;
use crate::error::Error;
use crate::provision::StackDeployer;
use crate::release::{self, ReleaseManifest, ReleaseSelection, RepositorySource};
use crate::state::StateStore;

use super::{Event, Session, ensure_identity};

/// Where releases are verified from, as resolved from the command line and environment.
#[derive(Debug, Clone, Default)]
pub struct ReleaseSettings {
    /// The signed release repository (`STACKWRIGHT_RELEASE_REPOSITORY`); by default the one
    /// the control plane serves.
    pub repository: Option<String>,
    /// A root to trust instead of the embedded one (`--trusted-root`,
    /// `STACKWRIGHT_TRUSTED_ROOT`).
    pub trusted_root: Option<PathBuf>,
}

impl ReleaseSettings {
    /// The root metadata to trust: the file named, else the root built into this installer.
    pub fn trusted_root(&self) -> Result<Vec<u8>, Error> {
        read_trusted_root(self.trusted_root.as_deref())
    }
}

/// The root metadata in `path`, or the embedded root.
pub fn read_trusted_root(path: Option<&Path>) -> Result<Vec<u8>, Error> {
    match path {
        Some(path) => std::fs::read(path).map_err(|source| Error::TrustedRoot {
            path: path.to_owned(),
            source,
        }),
        None => Ok(crate::release::trust::EMBEDDED_ROOT.to_vec()),
    }
}

/// A release named on the command line: the path of a manifest file, or a version verified in
/// the signed release repository that `settings` names, else the one the control plane serves
/// (`<control_plane.url>/repository/`).
pub async fn load_release(
    settings: &ReleaseSettings,
    config: Option<&ConfigFile>,
    release: &str,
) -> Result<ReleaseManifest, Error> {
    let path = Path::new(release);
    let version = match Version::parse(release.trim_start_matches('v')) {
        Ok(version) if !path.exists() => version,
        _ => return Ok(ReleaseManifest::load(path)?),
    };
    let repository = match (&settings.repository, config) {
        (Some(repository), _) => repository.clone(),
        (None, Some(config)) => format!(
            "{}/repository/",
            config.control_plane.url.trim_end_matches('/')
        ),
        (None, None) => {
            return Err(Error::Usage {
                message: format!(
                    "release {version} is a version, and no release repository is set to find it in"
                ),
                hint: "set STACKWRIGHT_RELEASE_REPOSITORY to the vendor's release repository, or pass the manifest's path".into(),
            });
        }
    };
    let source: RepositorySource = repository.parse()?;
    let trusted_root = settings.trusted_root()?;
    let verified = release::verify(
        &source,
        &trusted_root,
        jiff::Timestamp::now(),
        None,
        &ReleaseSelection::Version(version),
    )
    .await?;
    Ok(verified.manifest)
}

/// The release `release` names, or by default the one the control plane offers.
pub(super) async fn choose_release<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    release: Option<&str>,
) -> Result<ReleaseManifest, Error> {
    let release = match release {
        Some(release) => release.to_owned(),
        None => offered_release(session).await?.to_string(),
    };
    load_release(session.releases, Some(session.config), &release).await
}

/// The release a first install takes by default: the newest the control plane offers this
/// instance on its channel, which means registering first.
pub async fn offered_release<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
) -> Result<Version, Error> {
    let config = session.config;
    let plane = session.control_plane()?;
    let identity = ensure_identity(session, plane)
        .await?
        .ok_or_else(|| Error::Usage {
            message: "no release was named, and the control plane cannot be asked which one to install before the instance registers".into(),
            hint: format!(
                "pass --release VERSION (or a manifest's path), or put the vendor's registration token in {} or STACKWRIGHT_REGISTRATION_TOKEN",
                config.control_plane.registration_token_file.display()
            ),
        })?;
    let installed = session
        .state
        .installation()
        .await
        .ok()
        .flatten()
        .and_then(|record| record.installed_release)
        .and_then(|text| text.parse().ok());
    let query = UpdateQuery {
        channel: config.release.channel.clone(),
        installed_version: installed,
    };
    let offer = plane.check_update(&identity.credentials(), &query).await?;
    let newest = offer
        .releases
        .iter()
        .map(|release| release.version.clone())
        .filter(|version| config.release.pin.as_ref().is_none_or(|pin| version <= pin))
        .max()
        .ok_or_else(|| Error::Usage {
            message: format!(
                "the control plane offers no release on channel \"{}\" to this instance",
                config.release.channel
            ),
            hint:
                "pass --release VERSION, or ask the vendor to roll a release out to this instance"
                    .into(),
        })?;
    session.emit(Event::Offered {
        version: newest.clone(),
        channel: config.release.channel.clone(),
    });
    Ok(newest)
}
