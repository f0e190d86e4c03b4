//! Image mirroring on its own (`stackwright mirror`): a release's images into the instance's
//! repositories, or a list of images between two registries, with the copy's progress as
//! events.

use crate::error::Error;
use crate::mirror::{self, EcrAccess, ImageList, MirrorSettings, MirrorSummary, RegistryTarget};
use crate::release::ReleaseManifest;

use super::{EventSink, ImageMirror, MirrorEvents};

/// Copies every image of `release` that the instance's repositories lack.
pub async fn mirror_release(
    images: &dyn ImageMirror,
    release: &ReleaseManifest,
    events: &dyn EventSink,
) -> Result<MirrorSummary, Error> {
    images.mirror_release(release, events).await
}

/// Copies the images `list` names from one registry to another (`A` logs in to ECR where a
/// registry is one).
pub async fn mirror_list<A: EcrAccess>(
    settings: &MirrorSettings,
    from: &RegistryTarget,
    to: &RegistryTarget,
    list: &ImageList,
    events: &dyn EventSink,
) -> Result<MirrorSummary, Error> {
    Ok(mirror::mirror_list::<A>(settings, from, to, list, &MirrorEvents(events)).await?)
}
