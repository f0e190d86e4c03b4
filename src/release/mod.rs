//! Releases: the manifest that names what one version of the platform consists of.

mod manifest;

pub use manifest::{
    Component, ImageReference, ManifestError, RELEASE_SCHEMA_VERSION, ReleaseManifest,
};
