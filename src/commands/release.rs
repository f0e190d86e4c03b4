//! `stackwright release verify`: checks a signed release repository the way an install would,
//! and prints what was verified or why it was refused.

use super::runtime::block_on;
use crate::cli::ReleaseVerifyArgs;
use crate::error::{Error, ExitStatus};
use crate::output::Printer;
use crate::release::{self, ReleaseSelection, RepositorySource, TrustError};
use crate::settings::GlobalSettings;

pub fn verify(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &ReleaseVerifyArgs,
) -> Result<ExitStatus, Error> {
    let source: RepositorySource = args.repository.parse().map_err(Error::Trust)?;
    let trusted_root = settings.trusted_root(args.trusted_root())?;
    let selection = args
        .release
        .clone()
        .map_or(ReleaseSelection::Newest, ReleaseSelection::Version);
    printer.status(format_args!("Verifying {source}"));
    let verified = block_on(release::verify(
        &source,
        release::Trust {
            installed: args.installed.as_ref(),
            ..release::Trust::root(&trusted_root)
        },
        jiff::Timestamp::now(),
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
