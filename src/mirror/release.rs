//! The two ways in: a release's images into an instance's ECR repositories, and a plain list of
//! images from one registry to another (as `skopeo sync` does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::credentials::{self, RegistryEndpoint, RegistryOverrides};
use super::ecr::EcrAccess;
use super::engine::{CopyOptions, MirrorReporter, copy_images};
use super::oci::OciRegistry;
use super::registry::is_digest;
use super::{ImageCopy, MirrorError, MirrorSummary};
use crate::release::{INSTALLER_REPOSITORY, ImageReference, ReleaseManifest};

/// What a mirror run needs to know, resolved by the command.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    /// The instance, whose repositories are `<instance>/<component>`.
    pub instance: String,
    pub region: String,
    pub profile: Option<String>,
    pub options: CopyOptions,
    /// HTTP without TLS for registries that are not overridden (local registries).
    pub plain_http: bool,
    pub overrides: RegistryOverrides,
}

/// A registry given on the command line: `HOST[:PORT]`, and for a destination an optional
/// `/PREFIX` that repository paths are kept under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTarget {
    pub host: String,
    pub prefix: Option<String>,
}

impl FromStr for RegistryTarget {
    type Err = MirrorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |problem: &str| MirrorError::Address {
            text: text.to_owned(),
            problem: problem.to_owned(),
        };
        let trimmed = text
            .strip_prefix("docker://")
            .unwrap_or(text)
            .trim_end_matches('/');
        if trimmed.contains("://") {
            return Err(invalid(
                "give the host without a scheme; use --plain-http for HTTP",
            ));
        }
        let (host, prefix) = match trimmed.split_once('/') {
            Some((host, prefix)) => (host, Some(prefix)),
            None => (trimmed, None),
        };
        let host_valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        if !host_valid {
            return Err(invalid(
                "the host is empty or holds characters a host name cannot",
            ));
        }
        if let Some(prefix) = prefix
            && !valid_repository(prefix)
        {
            return Err(invalid(
                "the prefix must be lowercase path components (letters, digits, . _ -)",
            ));
        }
        Ok(RegistryTarget {
            host: host.to_owned(),
            prefix: prefix.map(str::to_owned),
        })
    }
}

fn valid_repository(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
}

/// The images of an `--images` file: `repository:tag` or `repository@sha256:<digest>` per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageList {
    /// (repository, tag or digest)
    pub images: Vec<(String, String)>,
}

impl ImageList {
    pub fn read(path: &Path) -> Result<Self, MirrorError> {
        let text = std::fs::read_to_string(path).map_err(|source| MirrorError::ImageList {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, MirrorError> {
        let mut images = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = || MirrorError::ImageListLine {
                path: PathBuf::from(path),
                line: index + 1,
                text: line.to_owned(),
            };
            let (repository, reference) = match line.split_once('@') {
                Some((repository, digest)) if is_digest(digest) => (repository, digest),
                Some(_) => return Err(invalid()),
                None => {
                    let (repository, tag) = line.rsplit_once(':').ok_or_else(invalid)?;
                    let tag_valid = !tag.is_empty()
                        && tag.len() <= 128
                        && tag
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                        && !tag.starts_with(['.', '-']);
                    if !tag_valid {
                        return Err(invalid());
                    }
                    (repository, tag)
                }
            };
            if !valid_repository(repository) {
                return Err(invalid());
            }
            images.push((repository.to_owned(), reference.to_owned()));
        }
        Ok(ImageList { images })
    }
}

/// A client for a registry: its address through the overrides; credentials from ECR's API for
/// an ECR registry reached at its own address, from the auth file otherwise.
pub async fn connect<A: EcrAccess>(
    name: &str,
    settings: &MirrorSettings,
    aws: Option<&A>,
) -> Result<OciRegistry, MirrorError> {
    let endpoint = RegistryEndpoint::resolve(name, &settings.overrides, settings.plain_http);
    let credentials = match endpoint.ecr_account_region() {
        Some((_, region)) if !endpoint.overridden => {
            let connected;
            let aws = match aws {
                Some(aws) if aws.region() == region => aws,
                _ => {
                    connected = A::connect(&region, settings.profile.as_deref())
                        .await
                        .map_err(|source| MirrorError::Ecr {
                            registry: name.to_owned(),
                            source,
                        })?;
                    &connected
                }
            };
            aws.registry_credentials()
                .await
                .map_err(|source| MirrorError::Ecr {
                    registry: name.to_owned(),
                    source,
                })?
        }
        _ => credentials::from_auth_file(&endpoint)?,
    };
    Ok(OciRegistry::new(endpoint, credentials)?)
}

/// Copies every component image of a release, and its installer image when it names one, into
/// the instance's ECR repositories `<instance>/<component>` and `<instance>/installer` (created
/// if missing), tagged with the release's version once all of them have arrived. A second run
/// finds everything in place and copies nothing.
pub async fn mirror_release<A: EcrAccess>(
    aws: &A,
    settings: &MirrorSettings,
    manifest: &ReleaseManifest,
    reporter: &dyn MirrorReporter,
) -> Result<MirrorSummary, MirrorError> {
    let account = aws.account().await?;
    let destination_name = format!("{account}.dkr.ecr.{}.amazonaws.com", settings.region);
    let images: Vec<(&str, &ImageReference)> = manifest
        .components
        .iter()
        .map(|component| (component.name.as_str(), &component.image))
        .chain(
            manifest
                .installer
                .iter()
                .map(|installer| (INSTALLER_REPOSITORY, &installer.image)),
        )
        .collect();
    for (name, _) in &images {
        let repository = format!("{}/{name}", settings.instance);
        if aws.ensure_repository(&repository).await? {
            tracing::info!(repository, "created the ECR repository");
        }
    }
    let destination = connect(&destination_name, settings, Some(aws)).await?;
    // Tags may not hold `+`; build metadata keeps its meaning with `_`.
    let tag = manifest.version.to_string().replace('+', "_");
    let mut by_registry: BTreeMap<&str, Vec<ImageCopy>> = BTreeMap::new();
    for (name, image) in images {
        by_registry
            .entry(image.registry.as_str())
            .or_default()
            .push(ImageCopy {
                source_repository: image.repository.clone(),
                source_reference: image.digest.clone(),
                destination_repository: format!("{}/{name}", settings.instance),
                tags: vec![tag.clone()],
            });
    }
    let mut summary = MirrorSummary::default();
    for (registry, images) in by_registry {
        let source = connect(registry, settings, Some(aws)).await?;
        let part = copy_images(&source, &destination, &images, &settings.options, reporter).await?;
        summary.add(&part);
    }
    Ok(summary)
}

/// Copies a list of images from one registry to another, repository paths kept under the
/// destination's prefix and tags kept as they are; digests are copied by digest, untagged.
/// `A` reaches ECR's API when either registry is an ECR registry.
pub async fn mirror_list<A: EcrAccess>(
    settings: &MirrorSettings,
    from: &RegistryTarget,
    to: &RegistryTarget,
    list: &ImageList,
    reporter: &dyn MirrorReporter,
) -> Result<MirrorSummary, MirrorError> {
    let images: Vec<ImageCopy> = list
        .images
        .iter()
        .map(|(repository, reference)| {
            let source_repository = match &from.prefix {
                Some(prefix) => format!("{prefix}/{repository}"),
                None => repository.clone(),
            };
            ImageCopy {
                source_repository,
                source_reference: reference.clone(),
                destination_repository: match &to.prefix {
                    Some(prefix) => format!("{prefix}/{repository}"),
                    None => repository.clone(),
                },
                tags: if is_digest(reference) {
                    Vec::new()
                } else {
                    vec![reference.clone()]
                },
            }
        })
        .collect();
    let source = connect::<A>(&from.host, settings, None).await?;
    let destination = connect::<A>(&to.host, settings, None).await?;
    copy_images(&source, &destination, &images, &settings.options, reporter).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_lists_take_tags_and_digests_and_name_bad_lines() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let text = format!("# comment\n\nteam/app:1.2\nbase@{digest}\n");
        let list = ImageList::parse(Path::new("images.txt"), &text).expect("valid");
        assert_eq!(
            list.images,
            vec![
                ("team/app".to_owned(), "1.2".to_owned()),
                ("base".to_owned(), digest)
            ]
        );
        let error =
            ImageList::parse(Path::new("images.txt"), "ok:1\nNo-Tag\n").expect_err("invalid");
        assert!(error.to_string().contains("line 2"), "{error}");
    }

    #[test]
    fn targets_keep_a_prefix() {
        let target: RegistryTarget = "127.0.0.1:5000/mirror/team".parse().expect("valid");
        assert_eq!(target.host, "127.0.0.1:5000");
        assert_eq!(target.prefix.as_deref(), Some("mirror/team"));
        assert!("http://127.0.0.1:5000".parse::<RegistryTarget>().is_err());
    }
}
