//! Which release an operation works with: a manifest's path, a version verified in the signed
//! release repository, or by default the one the control plane offers this instance.

use std::path::{Path, PathBuf};

use semver::Version;

use crate::config::ConfigFile;
use crate::control_plane::api::UpdateQuery;
use crate::error::Error;
use crate::provision::StackDeployer;
use crate::release::{
    self, RecordedFloor, ReleaseManifest, ReleaseSelection, RepositorySource, Trust, TrustError,
    TrustFloor,
};
use crate::state::{Installation, StateStore};

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

/// The root metadata in `path`, or the embedded root. Only a `dev-root` build reads a root
/// from a file: a build for customers trusts the root it was built with and nothing else.
pub fn read_trusted_root(path: Option<&Path>) -> Result<Vec<u8>, Error> {
    match path {
        None => Ok(crate::release::trust::embedded_root()?.to_vec()),
        Some(path) if cfg!(feature = "dev-root") => {
            std::fs::read(path).map_err(|source| Error::TrustedRoot {
                path: path.to_owned(),
                source,
            })
        }
        Some(path) => Err(Error::Usage {
            message: format!(
                "STACKWRIGHT_TRUSTED_ROOT names {}, but this installer trusts only the release root it was built with",
                path.display()
            ),
            hint: "unset STACKWRIGHT_TRUSTED_ROOT; a root file is read only by development builds (cargo build --features dev-root)".into(),
        }),
    }
}

/// How a command names its release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReleaseChoice {
    /// The newest release the control plane offers this instance.
    #[default]
    Offered,
    /// A version, verified in the signed release repository.
    Version(Version),
    /// A manifest file no one signed: only development builds read one, when asked to.
    UnsignedFile(PathBuf),
}

/// A release to work with, and how far its verification reached (nothing for an unsigned
/// file).
#[derive(Debug, Clone)]
pub struct ChosenRelease {
    pub manifest: ReleaseManifest,
    pub floor: Option<TrustFloor>,
}

/// The repository a version is verified in: the pinned one ([`pinned_repository`]).
fn repository(
    settings: &ReleaseSettings,
    config: Option<&ConfigFile>,
    version: &Version,
) -> Result<RepositorySource, Error> {
    let Some(repository) = pinned_repository(settings, config) else {
        return Err(Error::Usage {
            message: format!(
                "release {version} is a version, and no release repository is set to find it in"
            ),
            hint: "set STACKWRIGHT_RELEASE_REPOSITORY to the vendor's release repository".into(),
        });
    };
    Ok(repository.parse()?)
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

/// Verifies `version` from the root built into the installer. What it must stay above (the
/// installed release, the recorded floor) is checked against the record: [`above_record`].
pub async fn verify_version(
    settings: &ReleaseSettings,
    config: Option<&ConfigFile>,
    version: &Version,
) -> Result<ChosenRelease, Error> {
    let source = repository(settings, config, version)?;
    let root = settings.trusted_root()?;
    let trust = Trust::root(&root);
    let selection = ReleaseSelection::Version(version.clone());
    let verified = release::verify(&source, trust, jiff::Timestamp::now(), &selection).await?;
    Ok(ChosenRelease {
        manifest: verified.manifest,
        floor: Some(verified.floor),
    })
}

/// An unsigned manifest file, which only a `dev-root` build reads.
pub fn load_unsigned(path: &Path) -> Result<ChosenRelease, Error> {
    if !cfg!(feature = "dev-root") {
        return Err(Error::Usage {
            message: format!(
                "{} is an unsigned release manifest, and this installer installs only releases the vendor signed",
                path.display()
            ),
            hint: "name the release by its version (--release VERSION); unsigned manifests are read only by development builds (cargo build --features dev-root)".into(),
        });
    }
    Ok(ChosenRelease {
        manifest: ReleaseManifest::load(path)?,
        floor: None,
    })
}

/// A release for work that deploys nothing (rendering, copying images): verified from the
/// built-in root, with no installed release or floor to stay above.
pub async fn load_release(
    settings: &ReleaseSettings,
    config: Option<&ConfigFile>,
    choice: &ReleaseChoice,
) -> Result<ChosenRelease, Error> {
    match choice {
        ReleaseChoice::Version(version) => verify_version(settings, config, version).await,
        ReleaseChoice::UnsignedFile(path) => load_unsigned(path),
        ReleaseChoice::Offered => Err(Error::Usage {
            message: "no release was named".into(),
            hint: "pass --release VERSION".into(),
        }),
    }
}

/// Where the floor `installation` records lives, for errors to name.
pub(super) fn floor_item(instance: &str) -> String {
    format!(
        "the state table {}, item {instance}/installation",
        crate::stacks::state_table_name(instance)
    )
}

/// The floor `installation` records: its trust floor, or from a record kept before floors, the
/// root it held (derived, never trusted as a root).
pub(super) fn recorded_floor(
    instance: &str,
    installation: Option<&Installation>,
) -> Result<Option<RecordedFloor>, Error> {
    let Some(record) = installation else {
        return Ok(None);
    };
    let floor = match (&record.trust_floor, &record.trusted_root) {
        (Some(floor), _) => floor.clone(),
        (None, Some(root)) => TrustFloor::of_root_file(root.as_bytes()).map_err(|reason| {
            TrustError::FloorUnreadable {
                recorded_in: floor_item(instance),
                reason,
            }
        })?,
        (None, None) => return Ok(None),
    };
    Ok(Some(RecordedFloor {
        floor,
        recorded_in: floor_item(instance),
    }))
}

/// The release an install or plan works with: the one `choice` names, or by default the one
/// the control plane offers, verified from the root built in.
pub(super) async fn choose_release<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    choice: &ReleaseChoice,
) -> Result<ChosenRelease, Error> {
    let version = match choice {
        ReleaseChoice::UnsignedFile(path) => return load_unsigned(path),
        ReleaseChoice::Version(version) => version.clone(),
        ReleaseChoice::Offered => offered_release(session).await?,
    };
    verify_version(session.releases, Some(session.config), &version).await
}

/// Refuses `chosen` where it is below what the instance's record holds: a verification that
/// reached less far than the recorded floor, or a release older than the installed one, unless
/// `allow_downgrade` and the older version is typed.
pub(super) async fn above_record<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    chosen: &ChosenRelease,
    allow_downgrade: bool,
) -> Result<(), Error> {
    let installation = session.state.installation().await?;
    if let (Some(reached), Some(recorded)) = (
        &chosen.floor,
        recorded_floor(session.instance(), installation.as_ref())?,
    ) {
        reached.meets(&recorded)?;
    }
    let installed = installation
        .as_ref()
        .and_then(|record| record.installed_release.as_deref())
        .and_then(|text| text.parse::<Version>().ok());
    let offered = &chosen.manifest.version;
    let Some(installed) = installed.filter(|installed| offered < installed) else {
        return Ok(());
    };
    if !allow_downgrade {
        return Err(TrustError::Rollback {
            offered: offered.clone(),
            trusted: installed,
        }
        .into());
    }
    let prompt = format!(
        "{} runs {installed}; type {offered} to downgrade it to {offered}",
        session.instance()
    );
    if session
        .approver
        .confirm_typed(&prompt, &offered.to_string())
        .await
    {
        Ok(())
    } else {
        Err(Error::Declined {
            action: "downgrade".into(),
        })
    }
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
