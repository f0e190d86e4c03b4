//! `stackwright release verify`: checks a signed release repository the way an install would,
//! and prints what was verified or why it was refused.

use std::path::Path;

use crate::cli::ReleaseVerifyArgs;
use crate::config::ConfigFile;
use crate::error::{Error, ExitStatus};
use crate::output::Printer;
use crate::release::{self, ReleaseManifest, ReleaseSelection, RepositorySource, TrustError};
use crate::settings::GlobalSettings;

use super::deploy::block_on;

pub fn verify(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &ReleaseVerifyArgs,
) -> Result<ExitStatus, Error> {
    let source: RepositorySource = args.repository.parse().map_err(Error::Trust)?;
    let trusted_root = settings.trusted_root(args.trusted_root.as_deref())?;
    let selection = args
        .release
        .clone()
        .map_or(ReleaseSelection::Newest, ReleaseSelection::Version);
    printer.status(format_args!("Verifying {source}"));
    let verified = block_on(release::verify(
        &source,
        &trusted_root,
        jiff::Timestamp::now(),
        args.installed.as_ref(),
        &selection,
    ))
    .map_err(|error: TrustError| Error::Trust(error))?;
    if printer.json_mode() {
        printer.data(&verified);
    } else {
        printer.result(&verified);
    }
    Ok(ExitStatus::Success)
}

/// A release named on the command line: the path of a manifest file, or a version verified in
/// the signed release repository that `STACKWRIGHT_RELEASE_REPOSITORY` names, else the one the
/// control plane serves (`<control_plane.url>/repository/`).
pub(super) async fn load(
    settings: &GlobalSettings,
    config: Option<&ConfigFile>,
    release: &str,
) -> Result<ReleaseManifest, Error> {
    let path = Path::new(release);
    let version = match semver::Version::parse(release.trim_start_matches('v')) {
        Ok(version) if !path.exists() => version,
        _ => return Ok(ReleaseManifest::load(path)?),
    };
    let repository = match (std::env::var("STACKWRIGHT_RELEASE_REPOSITORY"), config) {
        (Ok(repository), _) => repository,
        (Err(_), Some(config)) => format!(
            "{}/repository/",
            config.control_plane.url.trim_end_matches('/')
        ),
        (Err(_), None) => {
            return Err(Error::Usage {
                message: format!(
                    "release {version} is a version, and no release repository is set to find it in"
                ),
                hint: "set STACKWRIGHT_RELEASE_REPOSITORY to the vendor's release repository, or pass the manifest's path".into(),
            });
        }
    };
    let source: RepositorySource = repository.parse()?;
    let trusted_root = settings.trusted_root(None)?;
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
