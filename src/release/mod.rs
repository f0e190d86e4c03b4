//! Releases: the manifest that names what one version of the platform consists of, the trust
//! that decides whether a published manifest may be installed, and the vendor tooling that signs
//! releases for development and tests.

mod manifest;
pub mod signing;
pub mod transport;
pub mod trust;

pub use manifest::{
    Component, INSTALLER_REPOSITORY, ImageReference, Installer, ManifestError,
    RELEASE_SCHEMA_VERSION, ReleaseManifest, ecr_account_region,
};
pub use trust::{
    RecordedFloor, ReleaseSelection, RepositorySource, Trust, TrustError, TrustFloor,
    VerifiedRelease, verify,
};
