//! Image mirroring: copies images by digest from one registry to another through the OCI
//! distribution API, and fills an instance's ECR repositories with a release's images.
//!
//! The engine (`engine`) talks to registries through the narrow [`Registry`] trait; `oci` is
//! its adapter, `credentials` finds addresses and logins, `ecr` is what it needs of ECR's API
//! (implemented in `crate::aws`), and
//! `synthetic` builds the deterministic images that development and the benchmark push.

mod credentials;
mod ecr;
mod engine;
mod oci;
mod registry;
mod release;
pub mod synthetic;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use credentials::{
    Credentials, OVERRIDES_VARIABLE, RegistryEndpoint, RegistryOverrides, Secret, auth_file_path,
    from_auth_file,
};
pub use ecr::EcrAccess;
pub use engine::{
    BlobOutcome, CopyOptions, ImageOutcome, MirrorReporter, SilentReporter, copy_images,
};
pub use oci::OciRegistry;
pub use registry::{BlobStream, Manifest, Registry, RegistryError, sha256_digest};
pub use release::{
    ImageList, MirrorSettings, RegistryTarget, connect, mirror_list, mirror_release,
};

use crate::cloud::DeployError;
// The release names the registries, so reading an ECR host belongs there; the old path keeps
// compiling.
pub use crate::release::ecr_account_region;

/// One image to copy: from a repository and tag or digest of the source, into a repository of
/// the destination, with the tags to give it there once everything has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCopy {
    pub source_repository: String,
    /// A tag, or a `sha256:` digest.
    pub source_reference: String,
    pub destination_repository: String,
    pub tags: Vec<String>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MirrorSummary {
    pub images_copied: u64,
    pub images_skipped: u64,
    pub manifests_copied: u64,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_skipped: u64,
    pub bytes_copied: u64,
    pub tags_pushed: u64,
    pub seconds: f64,
}

impl MirrorSummary {
    /// Adds another run's counts (a release whose images come from several registries).
    pub fn add(&mut self, other: &MirrorSummary) {
        self.images_copied += other.images_copied;
        self.images_skipped += other.images_skipped;
        self.manifests_copied += other.manifests_copied;
        self.blobs_copied += other.blobs_copied;
        self.blobs_mounted += other.blobs_mounted;
        self.blobs_skipped += other.blobs_skipped;
        self.bytes_copied += other.bytes_copied;
        self.tags_pushed += other.tags_pushed;
        self.seconds += other.seconds;
    }
}

impl fmt::Display for MirrorSummary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "images: {} copied, {} already there; blobs: {} copied, {} mounted, {} already there; {} copied in {:.2} s",
            self.images_copied,
            self.images_skipped,
            self.blobs_copied,
            self.blobs_mounted,
            self.blobs_skipped,
            human_bytes(self.bytes_copied),
            self.seconds
        )
    }
}

/// "1.5 MiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An image that did not arrive, and why.
#[derive(Debug, Clone)]
pub struct ImageFailure {
    pub image: String,
    pub error: RegistryError,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{} of {total} images could not be copied, so no tag was pushed:{}", failures.len(), list_failures(failures))]
    Images {
        failures: Vec<ImageFailure>,
        total: usize,
        summary: Box<MirrorSummary>,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{OVERRIDES_VARIABLE} has an entry \"{entry}\" that is not NAME=HOST[:PORT]")]
    Override { entry: String },
    #[error("cannot read the registry auth file {}: {problem}", path.display())]
    AuthFile { path: PathBuf, problem: String },
    #[error("cannot read the image list {}", path.display())]
    ImageList {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}, line {line}: \"{text}\" is not `repository:tag` or `repository@sha256:<digest>`", path.display())]
    ImageListLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("\"{text}\" is not a registry address: {problem}")]
    Address { text: String, problem: String },
    #[error("{registry} is an ECR registry, and its credentials come from ECR's API")]
    Ecr {
        registry: String,
        #[source]
        source: DeployError,
    },
    #[error(transparent)]
    Aws(#[from] DeployError),
}

fn list_failures(failures: &[ImageFailure]) -> String {
    failures
        .iter()
        .map(|failure| format!("\n  {}: {}", failure.image, failure.error))
        .collect()
}

impl MirrorError {
    /// The fix to print after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            MirrorError::Images { failures, .. } => {
                failures.first().map(|failure| registry_hint(&failure.error))
            }
            MirrorError::Registry(error) => Some(registry_hint(error)),
            MirrorError::Override { .. } => Some(format!(
                "write {OVERRIDES_VARIABLE} as registry=address pairs separated by commas, such as 111122223333.dkr.ecr.us-east-1.amazonaws.com=http://127.0.0.1:5000"
            )),
            MirrorError::AuthFile { .. } => Some(
                "fix the file, or point REGISTRY_AUTH_FILE at one written by `skopeo login` or `docker login`"
                    .into(),
            ),
            MirrorError::ImageList { .. } => {
                Some("pass --images with the path of a text file listing one image per line".into())
            }
            MirrorError::ImageListLine { .. } => Some(
                "write one image per line, such as `team/app:1.2` or `team/app@sha256:<64 hex digits>`; lines starting with # are ignored"
                    .into(),
            ),
            MirrorError::Address { .. } => {
                Some("write it as HOST[:PORT], and for --to optionally /PREFIX after it".into())
            }
            MirrorError::Ecr { source, .. } => source.hint(),
            MirrorError::Aws(error) => error.hint(),
        }
    }
}

fn registry_hint(error: &RegistryError) -> String {
    match error {
        RegistryError::Unauthorized { registry, .. } => {
            let file = auth_file_path()
                .map(|path| path.display().to_string())
                .unwrap_or_else(|| "none is set or found".into());
            format!(
                "log in to {registry} so that its credentials are in the auth file (REGISTRY_AUTH_FILE, else $DOCKER_CONFIG/config.json, else ~/.docker/config.json; in use: {file}), for example with `skopeo login`; an ECR registry takes its credentials from the AWS credentials"
            )
        }
        RegistryError::Denied { registry, .. } => format!(
            "the credentials for {registry} are valid but lack the permission: grant pull on the source and push on the destination"
        ),
        RegistryError::NotFound { registry, .. } => format!(
            "check that the image was published to {registry} under that name; the next run copies whatever is missing"
        ),
        RegistryError::DigestMismatch { registry, .. } => format!(
            "{registry} holds content that does not match the digest the release pins: it is corrupted or was tampered with, so nothing was tagged; do not use it, and report it to whoever publishes the image"
        ),
        RegistryError::Unreachable { registry, .. } => format!(
            "check that {registry} is reachable from here (address, port, --plain-http for a registry without TLS); the next run resumes where this one stopped"
        ),
        RegistryError::Transient { .. } | RegistryError::Other { .. } => {
            "run it again: what arrived is kept, and the next run copies only what is missing"
                .into()
        }
    }
}
