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
    let Some(repository) = pinned_repository(settings, config) else {
        return Err(Error::Usage {
            message: format!(
                "release {version} is a version, and no release repository is set to find it in"
            ),
            hint: "set STACKWRIGHT_RELEASE_REPOSITORY to the vendor's release repository, or pass the manifest's path".into(),
        });
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

/// The one release repository this instance reads releases from: `STACKWRIGHT_RELEASE_REPOSITORY`,
/// else the configuration's `release.repository`, else the control plane's own
/// `<control_plane.url>/repository/`.
pub fn pinned_repository(
    settings: &ReleaseSettings,
    config: Option<&ConfigFile>,
) -> Option<String> {
    settings
        .repository
        .clone()
        .or_else(|| config.and_then(|config| config.release.repository.clone()))
        .or_else(|| {
            config.map(|config| {
                format!(
                    "{}/repository/",
                    config.control_plane.url.trim_end_matches('/')
                )
            })
        })
}

/// The repository an update offer names, when it lies within the pinned one (same scheme,
/// host and port, and a path below the pinned path); refused otherwise, naming both.
pub fn offered_repository(pinned: &str, offered: &str) -> Result<RepositorySource, Error> {
    let pinned_source: RepositorySource = pinned.parse()?;
    let offered_source: RepositorySource = offered.parse()?;
    if within(&pinned_source, &offered_source) {
        return Ok(offered_source);
    }
    Err(release::TrustError::OtherRepository {
        offered: offered.to_owned(),
        pinned: pinned.to_owned(),
    }
    .into())
}

/// Whether `offered` is `pinned` or below it.
fn within(pinned: &RepositorySource, offered: &RepositorySource) -> bool {
    match (pinned, offered) {
        (RepositorySource::Directory(pinned), RepositorySource::Directory(offered)) => {
            let absolute = |path: &Path| std::path::absolute(path).ok();
            matches!((absolute(pinned), absolute(offered)), (Some(pinned), Some(offered)) if offered.starts_with(&pinned))
        }
        (RepositorySource::Url(pinned), RepositorySource::Url(offered)) => {
            let directory = |path: &str| {
                if path.ends_with('/') {
                    path.to_owned()
                } else {
                    format!("{path}/")
                }
            };
            pinned.scheme() == offered.scheme()
                && pinned.host_str() == offered.host_str()
                && pinned.port_or_known_default() == offered.port_or_known_default()
                && directory(offered.path()).starts_with(&directory(pinned.path()))
        }
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_accepted_only_within_the_pinned_repository() {
        let pinned = "https://releases.example.com/stackwright/";
        for accepted in [
            "https://releases.example.com/stackwright/",
            "https://releases.example.com/stackwright",
            "https://releases.example.com:443/stackwright/stable/",
        ] {
            assert!(offered_repository(pinned, accepted).is_ok(), "{accepted}");
        }
        for refused in [
            "https://mirror.example.net/stackwright/",
            "https://releases.example.com:8443/stackwright/",
            "https://releases.example.com/stackwright-old/",
            "https://releases.example.com/",
            "s3://releases.example.com/stackwright/",
            "http://127.0.0.1:8470/repository/",
        ] {
            let error = offered_repository(pinned, refused).unwrap_err().to_string();
            assert!(
                error.contains(refused) && error.contains(pinned),
                "{refused}: {error}"
            );
        }
        assert!(offered_repository("s3://vendor/stable", "s3://vendor/stable/").is_ok());
        assert!(offered_repository("s3://vendor/stable", "s3://other/stable/").is_err());
    }
}
