//! The release manifest: a versioned schema naming a release's version, its upgrade rules, and
//! each component's image pinned by digest.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use schemars::JsonSchema;
use semver::Version;
use serde::{Deserialize, Serialize};

/// The manifest schema this installer reads.
pub const RELEASE_SCHEMA_VERSION: u32 = 1;

/// One release of the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Stackwright release manifest")]
pub struct ReleaseManifest {
    /// Version of this document's schema.
    pub schema_version: u32,
    /// The release's semantic version.
    #[schemars(with = "String")]
    pub version: Version,
    /// The channel the release is published on.
    pub channel: String,
    /// Installations older than this must first upgrade to it (or a later release that allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub minimum_upgrade_from: Option<Version>,
    /// Whether an upgrade path may pass over this release.
    pub skippable: bool,
    /// The oldest installer that can apply this release.
    #[schemars(with = "String")]
    pub minimum_installer_version: Version,
    /// When the manifest stops being trusted, as an RFC 3339 timestamp.
    #[schemars(with = "String")]
    pub expires: jiff::Timestamp,
    /// The services the release runs.
    pub components: Vec<Component>,
    /// The installer image that runs the unattended upgrade job in the customer's account (the
    /// updater stack). Without it, the updater stack is not deployed with this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<Installer>,
}

/// The installer that comes with a release, as a container image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Installer {
    /// The installer's semantic version; at least the release's `minimum_installer_version`.
    #[schemars(with = "String")]
    pub version: Version,
    /// The image, by digest: `registry/repository@sha256:<64 hex digits>`. It is mirrored into
    /// the instance's repository `<instance>/installer`.
    #[schemars(with = "String")]
    pub image: ImageReference,
}

/// The name of the installer's repository below the instance's prefix, `<instance>/installer`;
/// no component may take it.
pub const INSTALLER_REPOSITORY: &str = "installer";

/// One service of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Lowercase name, also the name of its repository.
    pub name: String,
    /// The image, by digest: `registry/repository@sha256:<64 hex digits>`.
    #[schemars(with = "String")]
    pub image: ImageReference,
    /// Container port the service listens on.
    pub port: u16,
    /// CPU units (1024 is one vCPU).
    pub cpu: u32,
    /// Memory in MiB.
    pub memory: u32,
    /// Tasks to run.
    pub desired_count: u32,
    /// Path the load balancer probes.
    pub health_check_path: String,
    /// Path patterns the load balancer forwards to this component, most specific first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Whether the component reads and writes the instance's data bucket and table.
    #[serde(default)]
    pub data_access: bool,
}

/// An image pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    pub registry: String,
    pub repository: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// `<account>.dkr.ecr.<region>.amazonaws.com` → (account, region).
pub fn ecr_account_region(host: &str) -> Option<(String, String)> {
    let rest = host.strip_suffix(".amazonaws.com")?;
    let (account, rest) = rest.split_once(".dkr.ecr.")?;
    (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()) && !rest.is_empty())
        .then(|| (account.to_owned(), rest.to_owned()))
}

impl FromStr for ImageReference {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, digest) = text.split_once('@').ok_or_else(|| {
            format!("\"{text}\" is not pinned by digest (expected …@sha256:<hex>)")
        })?;
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("\"{digest}\" is not a sha256 digest"))?;
        if hex.len() != 64
            || !hex
                .chars()
                .all(|character| matches!(character, '0'..='9' | 'a'..='f'))
        {
            return Err(format!("\"{digest}\" is not 64 lowercase hex digits"));
        }
        let (registry, repository) = name
            .split_once('/')
            .filter(|(registry, _)| registry.contains(['.', ':']) || *registry == "localhost")
            .ok_or_else(|| format!("\"{name}\" does not start with a registry host"))?;
        let repository_valid = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.chars().all(|character| {
                        character.is_ascii_lowercase()
                            || character.is_ascii_digit()
                            || "._-".contains(character)
                    })
            });
        if !repository_valid {
            return Err(format!("\"{repository}\" is not a valid repository path"));
        }
        Ok(ImageReference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            digest: digest.to_owned(),
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}/{}@{}",
            self.registry, self.repository, self.digest
        )
    }
}

impl Serialize for ImageReference {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageReference {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the release manifest {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the release manifest {} is malformed at `{key}`: {message}", path.display())]
    Malformed {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("the release manifest {} has schema_version {found}, but this stackwright reads version {RELEASE_SCHEMA_VERSION}", path.display())]
    SchemaVersion { path: PathBuf, found: u32 },
    #[error("the release manifest {} is invalid: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
}

impl ReleaseManifest {
    /// Reads a manifest from a JSON file and checks its contents.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses a manifest; `path` only names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, ManifestError> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let manifest: ReleaseManifest = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|error| ManifestError::Malformed {
                path: path.to_owned(),
                key: error.path().to_string(),
                message: error.into_inner().to_string(),
            })?;
        if manifest.schema_version != RELEASE_SCHEMA_VERSION {
            return Err(ManifestError::SchemaVersion {
                path: path.to_owned(),
                found: manifest.schema_version,
            });
        }
        manifest.check().map_err(|problem| ManifestError::Invalid {
            path: path.to_owned(),
            problem,
        })?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        if self.components.is_empty() {
            return Err("it lists no components".into());
        }
        let mut names = std::collections::BTreeSet::new();
        let mut routed_paths = std::collections::BTreeMap::new();
        for component in &self.components {
            let name = &component.name;
            let valid_name = (1..=32).contains(&name.len())
                && name.starts_with(|character: char| character.is_ascii_lowercase())
                && name.chars().all(|character| {
                    character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
                });
            if !valid_name {
                return Err(format!(
                    "component name \"{name}\" must be lowercase letters, digits and hyphens"
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(format!("component \"{name}\" is listed twice"));
            }
            if component.port == 0 || component.cpu == 0 || component.memory == 0 {
                return Err(format!(
                    "component \"{name}\" needs a port, cpu and memory above zero"
                ));
            }
            if !component.health_check_path.starts_with('/') {
                return Err(format!(
                    "component \"{name}\" has a health check path that does not start with /"
                ));
            }
            if let Some(path) = component.paths.iter().find(|path| !path.starts_with('/')) {
                return Err(format!(
                    "component \"{name}\" routes \"{path}\", which does not start with /"
                ));
            }
            for path in &component.paths {
                if let Some(other) = routed_paths.insert(path.as_str(), name.as_str()) {
                    return Err(format!(
                        "components \"{other}\" and \"{name}\" both route \"{path}\""
                    ));
                }
            }
        }
        if let Some(installer) = &self.installer {
            if installer.version < self.minimum_installer_version {
                return Err(format!(
                    "the installer image is version {}, older than minimum_installer_version {}",
                    installer.version, self.minimum_installer_version
                ));
            }
            if names.contains(INSTALLER_REPOSITORY) {
                return Err(format!(
                    "component \"{INSTALLER_REPOSITORY}\" would share its repository with the installer image"
                ));
            }
        }
        if let Some(minimum) = &self.minimum_upgrade_from
            && minimum > &self.version
        {
            return Err(format!(
                "minimum_upgrade_from {minimum} is newer than the release {}",
                self.version
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with_installer(
        installer: &str,
        component: &str,
    ) -> Result<ReleaseManifest, String> {
        let digest = format!("sha256:{}", "a".repeat(64));
        let text = format!(
            r#"{{"schema_version": 1, "version": "1.2.0", "channel": "stable", "skippable": true,
            "minimum_installer_version": "0.3.0", "expires": "2030-01-01T00:00:00Z",
            "components": [{{"name": "{component}", "image": "registry.example/vendor/{component}@{digest}",
              "port": 80, "cpu": 256, "memory": 512, "desired_count": 1, "health_check_path": "/"}}],
            "installer": {{"version": "{installer}", "image": "registry.example/vendor/installer@{digest}"}}}}"#
        );
        ReleaseManifest::parse(text.as_bytes(), Path::new("release.json"))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn an_installer_image_is_read_and_checked() {
        let manifest = manifest_with_installer("0.3.0", "server").expect("valid");
        let installer = manifest.installer.expect("an installer");
        assert_eq!(installer.version, Version::new(0, 3, 0));
        assert_eq!(installer.image.repository, "vendor/installer");
        let older = manifest_with_installer("0.2.9", "server").expect_err("too old");
        assert!(
            older.contains(
                "installer image is version 0.2.9, older than minimum_installer_version 0.3.0"
            ),
            "{older}"
        );
        let clash = manifest_with_installer("0.3.0", "installer").expect_err("a clash");
        assert!(
            clash.contains("component \"installer\" would share its repository"),
            "{clash}"
        );
    }

    #[test]
    fn image_references_must_be_pinned_by_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let reference: ImageReference =
            format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/vendor/server@{digest}")
                .parse()
                .unwrap();
        assert_eq!(reference.repository, "vendor/server");
        assert!(
            "registry.example/server:latest"
                .parse::<ImageReference>()
                .is_err()
        );
        assert!("server@sha256:abc".parse::<ImageReference>().is_err());
        assert!(
            format!("registry.example/Server@{digest}")
                .parse::<ImageReference>()
                .is_err()
        );
    }

    #[test]
    fn ecr_hosts_name_their_account_and_region() {
        assert_eq!(
            ecr_account_region("123456789012.dkr.ecr.eu-central-1.amazonaws.com"),
            Some(("123456789012".into(), "eu-central-1".into()))
        );
        assert_eq!(ecr_account_region("127.0.0.1:5000"), None);
    }
}
