//! What the reference server can offer: the releases published in its directory
//! (`releases/*.json`, each with its version and channel) and the operator's rollouts of them,
//! combined into an immutable snapshot that update checks read without touching the database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use semver::Version;

use super::api::{OfferedRelease, ReleaseStatus};
use super::store::Rollout;
use super::wave::in_wave;
use crate::release::signing::{self, SigningError};
use crate::release::{ManifestError, ReleaseManifest};

/// A release the server knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRelease {
    pub version: Version,
    pub channel: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot list the releases in {}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{} names version {version}, which another manifest already has", path.display())]
    Duplicate { path: PathBuf, version: Version },
}

/// Reads `directory/releases/*.json`.
pub fn load_releases(directory: &Path) -> Result<Vec<CatalogRelease>, CatalogError> {
    let releases_directory = directory.join("releases");
    let list = |source| CatalogError::List {
        path: releases_directory.clone(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&releases_directory)
        .map_err(list)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .map_err(list)?;
    paths.retain(|path| {
        path.extension()
            .is_some_and(|extension| extension == "json")
    });
    paths.sort();
    let mut releases: Vec<CatalogRelease> = Vec::new();
    for path in paths {
        let manifest = ReleaseManifest::load(&path)?;
        if releases
            .iter()
            .any(|release| release.version == manifest.version)
        {
            return Err(CatalogError::Duplicate {
                path,
                version: manifest.version,
            });
        }
        releases.push(CatalogRelease {
            version: manifest.version,
            channel: manifest.channel,
        });
    }
    releases.sort_by(|left, right| left.version.cmp(&right.version));
    Ok(releases)
}

#[derive(Debug, Clone)]
struct Entry {
    version: Version,
    percent: u8,
    urgent: bool,
    target: String,
}

/// The releases offerable right now, per channel, oldest first. Rebuilt on every operator
/// change; read by every update check.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    channels: HashMap<String, Vec<Entry>>,
    statuses: Vec<ReleaseStatus>,
}

impl Snapshot {
    pub fn build(releases: &[CatalogRelease], rollouts: &[Rollout]) -> Self {
        let mut channels: HashMap<String, Vec<Entry>> = HashMap::new();
        let mut statuses = Vec::new();
        for release in releases {
            let rollout = rollouts
                .iter()
                .find(|rollout| rollout.version == release.version);
            let status = match rollout {
                Some(rollout) => ReleaseStatus::from(rollout),
                None => ReleaseStatus {
                    version: release.version.clone(),
                    channel: release.channel.clone(),
                    percent: 0,
                    urgent: false,
                    withdrawn: false,
                    updated_at: None,
                },
            };
            if !status.withdrawn && status.percent > 0 {
                channels
                    .entry(status.channel.clone())
                    .or_default()
                    .push(Entry {
                        version: status.version.clone(),
                        percent: status.percent,
                        urgent: status.urgent,
                        target: format!("releases/{}.json", status.version),
                    });
            }
            statuses.push(status);
        }
        for entries in channels.values_mut() {
            entries.sort_by(|left, right| left.version.cmp(&right.version));
        }
        Snapshot { channels, statuses }
    }

    /// The releases offered to an instance in `bucket` on `channel` that are newer than
    /// `installed` (all of them before a first install), oldest first.
    pub fn offer(
        &self,
        channel: &str,
        installed: Option<&Version>,
        bucket: u8,
    ) -> Vec<OfferedRelease> {
        let Some(entries) = self.channels.get(channel) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|entry| installed.is_none_or(|installed| entry.version > *installed))
            .filter(|entry| in_wave(bucket, entry.percent))
            .map(|entry| OfferedRelease {
                version: entry.version.clone(),
                urgent: entry.urgent,
                target: entry.target.clone(),
            })
            .collect()
    }

    /// Every release with its rollout, oldest first.
    pub fn statuses(&self) -> &[ReleaseStatus] {
        &self.statuses
    }
}

/// Re-signs the timestamp of the repository at `repository` with `key`, valid for `lifetime`
/// (such as `1d`); returns how long to wait before the next signing: half the lifetime.
pub async fn resign_timestamp(
    repository: &Path,
    key: &Path,
    lifetime: &str,
) -> Result<std::time::Duration, SigningError> {
    let now = jiff::Timestamp::now();
    let expires = signing::expiry(now, lifetime)?;
    let summary = signing::resign_timestamp(repository, key, expires).await?;
    tracing::info!(
        version = summary.version,
        expires = %summary.expires,
        "timestamp re-signed"
    );
    let remaining = expires.duration_since(now).unsigned_abs();
    Ok((remaining / 2).max(std::time::Duration::from_secs(1)))
}

/// Keeps re-signing, every `period` and then every half of the lifetime, as a vendor's release
/// service does; a failed signing is logged and tried again a minute later, while the timestamp
/// served is still valid.
pub async fn keep_timestamp_fresh(
    repository: PathBuf,
    key: PathBuf,
    lifetime: String,
    mut period: std::time::Duration,
) {
    loop {
        tokio::time::sleep(period).await;
        period = match resign_timestamp(&repository, &key, &lifetime).await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%error, "cannot re-sign the timestamp; trying again in a minute");
                std::time::Duration::from_secs(60)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;

    fn release(version: &str, channel: &str) -> CatalogRelease {
        CatalogRelease {
            version: version.parse().unwrap(),
            channel: channel.into(),
        }
    }

    fn rollout(
        version: &str,
        channel: &str,
        percent: u8,
        urgent: bool,
        withdrawn: bool,
    ) -> Rollout {
        Rollout {
            version: version.parse().unwrap(),
            channel: channel.into(),
            percent,
            urgent,
            withdrawn,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn control_plane_offers_by_channel_wave_version_and_withdrawal() {
        let releases = [
            release("1.0.0", "stable"),
            release("1.1.0", "stable"),
            release("1.2.0", "stable"),
            release("2.0.0-beta.1", "beta"),
        ];
        let rollouts = [
            rollout("1.0.0", "stable", 100, false, false),
            rollout("1.1.0", "stable", 50, true, false),
            rollout("1.2.0", "stable", 100, false, true),
            rollout("2.0.0-beta.1", "beta", 100, false, false),
        ];
        let snapshot = Snapshot::build(&releases, &rollouts);
        let versions = |offer: Vec<OfferedRelease>| {
            offer
                .into_iter()
                .map(|release| (release.version.to_string(), release.urgent))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            versions(snapshot.offer("stable", None, 49)),
            [("1.0.0".into(), false), ("1.1.0".into(), true)]
        );
        assert_eq!(
            versions(snapshot.offer("stable", Some(&"1.0.0".parse().unwrap()), 50)),
            []
        );
        assert_eq!(
            versions(snapshot.offer("beta", Some(&"1.1.0".parse().unwrap()), 99)),
            [("2.0.0-beta.1".into(), false)]
        );
        assert!(snapshot.offer("nightly", None, 0).is_empty());
        assert_eq!(snapshot.statuses().len(), 4);
    }
}
