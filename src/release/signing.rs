//! The vendor's side of release trust, for development and tests: generating a key set, building
//! and re-signing a TUF repository that publishes release manifests, and rotating keys.
//!
//! A key set is a directory with one Ed25519 private key per top-level role (`root.pem`,
//! `targets.pem`, `snapshot.pem`, `timestamp.pem`, PKCS#8 in PEM) and `root.json`, the signed root
//! that names them, which installers pin. A repository is a directory with `metadata/` (TUF
//! metadata with consistent snapshots) and `targets/` (the manifests, named by digest).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use jiff::{Span, Timestamp, Unit, tz::TimeZone};
use tough::editor::RepositoryEditor;
use tough::editor::signed::{PathExists, SignedRole};
use tough::key_source::KeySource;
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Signed, Target};
use tough::sign::Sign;
use tough::{ExpirationEnforcement, FilesystemTransport, RepositoryLoader, TargetName};
use url::Url;

use super::trust::RELEASE_TARGET_PREFIX;
use super::{ManifestError, ReleaseManifest};

/// The top-level roles, each with its own key.
const ROLES: [(RoleType, &str); 4] = [
    (RoleType::Root, "root"),
    (RoleType::Targets, "targets"),
    (RoleType::Snapshot, "snapshot"),
    (RoleType::Timestamp, "timestamp"),
];

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} already holds keys; refusing to overwrite them", path.display())]
    KeysExist { path: PathBuf },
    #[error("{} is not an Ed25519 private key in PKCS#8 PEM: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error("cannot generate a key")]
    Generate,
    #[error("\"{text}\" is not a duration such as 730d, 2y or 12h: {reason}")]
    Duration { text: String, reason: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "release {version} is already published with different content; a published release never changes, publish a new version"
    )]
    AlreadyPublished { version: String },
    #[error("{} holds no root metadata (N.root.json)", path.display())]
    NoRoot { path: PathBuf },
    #[error("cannot {action}")]
    Tuf {
        action: String,
        #[source]
        source: Box<tough::error::Error>,
    },
    #[error("cannot {action}: {reason}")]
    Other { action: String, reason: String },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SigningError {
    let path = path.to_owned();
    move |source| SigningError::Io {
        action,
        path,
        source,
    }
}

fn tuf(action: impl Into<String>) -> impl FnOnce(tough::error::Error) -> SigningError {
    let action = action.into();
    move |source| SigningError::Tuf {
        action,
        source: Box::new(source),
    }
}

/// Adds a duration such as `730d`, `2y` or `P2Y` to `now`.
pub fn expiry(now: Timestamp, duration: &str) -> Result<Timestamp, SigningError> {
    let failed = |reason: String| SigningError::Duration {
        text: duration.to_owned(),
        reason,
    };
    let span: Span = duration
        .parse()
        .map_err(|error: jiff::Error| failed(error.to_string()))?;
    let expires = now
        .to_zoned(TimeZone::UTC)
        .checked_add(span)
        .map_err(|error| failed(error.to_string()))?
        .timestamp();
    // Whole seconds keep the metadata readable; TUF dates carry no fractions.
    expires
        .round(Unit::Second)
        .map_err(|error| failed(error.to_string()))
}

/// An Ed25519 key read from a PKCS#8 PEM file.
#[derive(Debug)]
struct PemKeySource {
    path: PathBuf,
}

impl PemKeySource {
    fn key_pair(&self) -> Result<Ed25519KeyPair, SigningError> {
        let failed = |reason: String| SigningError::KeyFile {
            path: self.path.clone(),
            reason,
        };
        let text = std::fs::read(&self.path).map_err(io("read", &self.path))?;
        let pem = pem::parse(&text).map_err(|error| failed(error.to_string()))?;
        if pem.tag() != "PRIVATE KEY" {
            return Err(failed(format!("a \"{}\" block", pem.tag())));
        }
        Ed25519KeyPair::from_pkcs8(pem.contents()).map_err(|error| failed(error.to_string()))
    }
}

#[tough::async_trait]
impl KeySource for PemKeySource {
    async fn as_sign(
        &self,
    ) -> Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(Box::new(self.key_pair()?))
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("keys are written by `stackwright-release keygen` only".into())
    }
}

fn key_sources(directory: &Path) -> Vec<Box<dyn KeySource>> {
    ROLES
        .iter()
        .map(|(_, name)| {
            Box::new(PemKeySource {
                path: directory.join(format!("{name}.pem")),
            }) as Box<dyn KeySource>
        })
        .collect()
}

fn read_root(path: &Path) -> Result<Signed<Root>, SigningError> {
    let bytes = std::fs::read(path).map_err(io("read", path))?;
    serde_json::from_slice(&bytes).map_err(|error| SigningError::Other {
        action: format!("read the root metadata {}", path.display()),
        reason: error.to_string(),
    })
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), SigningError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io("create", path))?;
    file.write_all(contents).map_err(io("write", path))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Public facts about a key set, to print.
#[derive(Debug, Clone)]
pub struct KeySetSummary {
    pub directory: PathBuf,
    pub root_version: u64,
    pub expires: Timestamp,
    /// Role name and key ID, in role order.
    pub key_ids: Vec<(String, String)>,
}

impl fmt::Display for KeySetSummary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "wrote {}/root.json (root v{}, expires {}) and one private key per role:",
            self.directory.display(),
            self.root_version,
            self.expires
        )?;
        for (role, key_id) in &self.key_ids {
            writeln!(formatter, "  {role:<10} {key_id}")?;
        }
        Ok(())
    }
}

/// Generates a private key per role into `directory` (made if missing, refused if it already
/// holds keys) and a root (version 1 when `previous` is `None`) naming them; with `previous`,
/// the new root follows it and is signed by its root key too, which is what rotation needs.
async fn generate(
    directory: &Path,
    expires: Timestamp,
    previous: Option<(&Signed<Root>, &Path)>,
) -> Result<(Signed<Root>, Vec<u8>, KeySetSummary), SigningError> {
    for (_, name) in ROLES {
        let path = directory.join(format!("{name}.pem"));
        if path.exists() {
            return Err(SigningError::KeysExist { path });
        }
    }
    std::fs::create_dir_all(directory).map_err(io("create", directory))?;
    let random = SystemRandom::new();
    let mut keys = HashMap::new();
    let mut roles = HashMap::new();
    let mut key_ids = Vec::new();
    for (role, name) in ROLES {
        let document =
            Ed25519KeyPair::generate_pkcs8(&random).map_err(|_| SigningError::Generate)?;
        let pair =
            Ed25519KeyPair::from_pkcs8(document.as_ref()).map_err(|_| SigningError::Generate)?;
        let key = Sign::tuf_key(&pair);
        let key_id = key.key_id().map_err(|error| SigningError::Other {
            action: "compute a key ID".into(),
            reason: error.to_string(),
        })?;
        debug_assert_eq!(pair.public_key().as_ref().len(), 32);
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", document.as_ref().to_vec()));
        write_private(&directory.join(format!("{name}.pem")), pem.as_bytes())?;
        key_ids.push((name.to_owned(), hex_encode(&key_id)));
        roles.insert(
            role,
            RoleKeys {
                keyids: vec![key_id.clone()],
                threshold: NonZeroU64::MIN,
                _extra: HashMap::new(),
            },
        );
        keys.insert(key_id, key);
    }
    let version = previous.map_or(NonZeroU64::MIN, |(root, _)| {
        root.signed.version.saturating_add(1)
    });
    let root = Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: true,
        version,
        expires,
        keys,
        roles,
        _extra: HashMap::new(),
    };
    let new_keys = key_sources(directory);
    let signed = SignedRole::new(
        root.clone(),
        &KeyHolder::Root(root.clone()),
        &new_keys,
        &random,
    )
    .await
    .map_err(tuf("sign the new root with its own root key"))?;
    let signed = match previous {
        None => signed,
        Some((previous_root, previous_keys)) => {
            let by_previous = SignedRole::new(
                root,
                &KeyHolder::Root(previous_root.signed.clone()),
                &key_sources(previous_keys),
                &random,
            )
            .await
            .map_err(tuf("sign the new root with the previous root key"))?;
            signed
                .add_old_signatures(by_previous.signed().signatures.clone())
                .map_err(tuf("combine the root signatures"))?
        }
    };
    let root_path = directory.join("root.json");
    std::fs::write(&root_path, signed.buffer()).map_err(io("write", &root_path))?;
    let summary = KeySetSummary {
        directory: directory.to_owned(),
        root_version: version.get(),
        expires,
        key_ids,
    };
    Ok((signed.signed().clone(), signed.buffer().clone(), summary))
}

/// `keygen`: a new key set and its version 1 root.
pub async fn generate_keys(
    directory: &Path,
    expires: Timestamp,
) -> Result<KeySetSummary, SigningError> {
    let (_, _, summary) = generate(directory, expires, None).await?;
    Ok(summary)
}

/// How long each role's metadata stays valid once signed. The timestamp is re-signed every
/// day and the snapshot every week, so a mirror that stops refreshing, or replays what it once
/// served, is found out within a day; the targets list what is published and live longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiries {
    pub targets: Timestamp,
    pub snapshot: Timestamp,
    pub timestamp: Timestamp,
}

impl Expiries {
    /// The vendor's defaults for a signing at `now`: the timestamp for 1 day, the snapshot for 7,
    /// the targets until `targets`; no role outlives the targets.
    pub fn from_now(now: Timestamp, targets: Timestamp) -> Result<Self, SigningError> {
        Expiries::with(now, targets, "1d", "7d")
    }

    /// Expiries for a signing at `now` from durations such as `1d` and `7d`.
    pub fn with(
        now: Timestamp,
        targets: Timestamp,
        timestamp: &str,
        snapshot: &str,
    ) -> Result<Self, SigningError> {
        Ok(Expiries {
            targets,
            snapshot: expiry(now, snapshot)?.min(targets),
            timestamp: expiry(now, timestamp)?.min(targets),
        })
    }

    /// The first to expire.
    pub fn first(&self) -> Timestamp {
        self.timestamp.min(self.snapshot).min(self.targets)
    }
}

/// One expiry for every role: examples committed to the repository, and tests.
impl From<Timestamp> for Expiries {
    fn from(expires: Timestamp) -> Self {
        Expiries {
            targets: expires,
            snapshot: expires,
            timestamp: expires,
        }
    }
}

/// What a build or rotation left in the repository.
#[derive(Debug, Clone)]
pub struct RepositorySummary {
    pub repository: PathBuf,
    pub published: Option<String>,
    pub releases: Vec<String>,
    pub root_version: u64,
    pub timestamp_version: u64,
    pub expires: Expiries,
}

impl fmt::Display for RepositorySummary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(published) = &self.published {
            writeln!(formatter, "published {published}")?;
        }
        writeln!(
            formatter,
            "signed {} (root v{}, timestamp v{}; the timestamp expires {}, the snapshot {}, the targets {})",
            self.repository.display(),
            self.root_version,
            self.timestamp_version,
            self.expires.timestamp,
            self.expires.snapshot,
            self.expires.targets
        )?;
        write!(formatter, "  releases {}", self.releases.join(", "))
    }
}

/// The numbers of the `N.root.json` files in a metadata directory, ascending.
fn root_versions(metadata: &Path) -> Result<Vec<u64>, SigningError> {
    let entries = match std::fs::read_dir(metadata) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io("list", metadata)(error)),
    };
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("list", metadata))?;
        if let Some(version) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.strip_suffix(".root.json"))
            .and_then(|number| number.parse().ok())
        {
            versions.push(version);
        }
    }
    versions.sort_unstable();
    Ok(versions)
}

/// `build`: publishes `manifest` (if any) as `releases/<version>.json` in `repository` (created
/// if missing, from the key set's root) and re-signs the targets, snapshot and timestamp
/// metadata with the next versions and the given expiry. Without a manifest it only re-signs,
/// which is how a vendor refreshes expiring metadata.
pub async fn build_repository(
    manifest_path: Option<&Path>,
    keys: &Path,
    repository: &Path,
    expires: impl Into<Expiries>,
) -> Result<RepositorySummary, SigningError> {
    let expires = expires.into();
    let layout = Layout::new(repository)?;
    if root_versions(&layout.metadata)?.is_empty() {
        let root_path = keys.join("root.json");
        let root = read_root(&root_path)?;
        let published = layout
            .metadata
            .join(format!("{}.root.json", root.signed.version));
        std::fs::copy(&root_path, &published).map_err(io("copy the root to", &published))?;
    }
    let existing = layout.load().await?;
    layout.sign(existing, manifest_path, keys, expires).await
}

/// A repository's two directories.
struct Layout {
    repository: PathBuf,
    metadata: PathBuf,
    targets: PathBuf,
}

impl Layout {
    fn new(repository: &Path) -> Result<Self, SigningError> {
        let layout = Layout {
            repository: repository.to_owned(),
            metadata: repository.join("metadata"),
            targets: repository.join("targets"),
        };
        for directory in [&layout.metadata, &layout.targets] {
            std::fs::create_dir_all(directory).map_err(io("create", directory))?;
        }
        Ok(layout)
    }

    fn root_path(&self, pick: fn(&[u64]) -> Option<&u64>) -> Result<PathBuf, SigningError> {
        let versions = root_versions(&self.metadata)?;
        let version = pick(&versions).ok_or_else(|| SigningError::NoRoot {
            path: self.metadata.clone(),
        })?;
        Ok(self.metadata.join(format!("{version}.root.json")))
    }

    /// The repository as it stands, if it has been signed before.
    async fn load(&self) -> Result<Option<tough::Repository>, SigningError> {
        if !self.metadata.join("timestamp.json").exists() {
            return Ok(None);
        }
        let first_root_path = self.root_path(<[u64]>::first)?;
        let first_root = std::fs::read(&first_root_path).map_err(io("read", &first_root_path))?;
        let url = |path: &Path| {
            let absolute = std::path::absolute(path).map_err(io("resolve", path))?;
            Url::from_directory_path(&absolute).map_err(|()| SigningError::Other {
                action: format!("address {}", path.display()),
                reason: "not an absolute path".into(),
            })
        };
        // The vendor may be re-signing precisely because the metadata expired.
        RepositoryLoader::new(&first_root, url(&self.metadata)?, url(&self.targets)?)
            .transport(FilesystemTransport)
            .expiration_enforcement(ExpirationEnforcement::Unsafe)
            .load()
            .await
            .map(Some)
            .map_err(tuf(format!(
                "load the repository {}",
                self.repository.display()
            )))
    }

    /// Signs the next version of the metadata with the newest root in the repository and
    /// `keys`, adding the manifest if there is one.
    async fn sign(
        &self,
        existing: Option<tough::Repository>,
        manifest_path: Option<&Path>,
        keys: &Path,
        expires: Expiries,
    ) -> Result<RepositorySummary, SigningError> {
        let latest_root = self.root_path(<[u64]>::last)?;
        let next = |version: NonZeroU64| version.saturating_add(1);
        let (timestamp_version, snapshot_version, targets_version) = match &existing {
            Some(loaded) => (
                next(loaded.timestamp().signed.version),
                next(loaded.snapshot().signed.version),
                next(loaded.targets().signed.version),
            ),
            None => (NonZeroU64::MIN, NonZeroU64::MIN, NonZeroU64::MIN),
        };
        let mut releases: Vec<String> = existing
            .as_ref()
            .map(|loaded| {
                loaded
                    .all_targets()
                    .map(|(name, _)| name.raw().to_owned())
                    .collect()
            })
            .unwrap_or_default();

        let published = match manifest_path {
            None => None,
            Some(path) => {
                let manifest = ReleaseManifest::load(path)?;
                let name = format!("{RELEASE_TARGET_PREFIX}{}.json", manifest.version);
                let target =
                    Target::from_path(path)
                        .await
                        .map_err(|error| SigningError::Other {
                            action: format!("hash {}", path.display()),
                            reason: error.to_string(),
                        })?;
                if let Some(loaded) = &existing {
                    let target_name =
                        TargetName::new(name.as_str()).map_err(tuf(format!("name {name}")))?;
                    if let Ok(previous) = loaded.targets().signed.find_target(&target_name, false)
                        && previous.hashes.sha256 != target.hashes.sha256
                    {
                        return Err(SigningError::AlreadyPublished {
                            version: manifest.version.to_string(),
                        });
                    }
                }
                Some((path.to_owned(), name, target))
            }
        };

        let mut editor = match existing {
            Some(loaded) => RepositoryEditor::from_repo(&latest_root, loaded).await,
            None => RepositoryEditor::new(&latest_root).await,
        }
        .map_err(tuf("start editing the repository"))?;
        if let Some((_, name, target)) = &published {
            editor
                .add_target(name.as_str(), target.clone())
                .map_err(tuf(format!("add {name}")))?;
            if !releases.contains(name) {
                releases.push(name.clone());
            }
        }
        editor
            .targets_version(targets_version)
            .map_err(tuf("set the targets version"))?
            .targets_expires(expires.targets)
            .map_err(tuf("set the targets expiry"))?
            .snapshot_version(snapshot_version)
            .snapshot_expires(expires.snapshot)
            .timestamp_version(timestamp_version)
            .timestamp_expires(expires.timestamp);
        let signed = editor
            .sign(&key_sources(keys))
            .await
            .map_err(tuf(format!("sign with the keys in {}", keys.display())))?;
        signed
            .write(&self.metadata)
            .await
            .map_err(tuf(format!("write {}", self.metadata.display())))?;
        if let Some((path, name, _)) = &published {
            let target_name =
                TargetName::new(name.as_str()).map_err(tuf(format!("name {name}")))?;
            signed
                .copy_target(path, &self.targets, PathExists::Skip, Some(&target_name))
                .await
                .map_err(tuf(format!("copy {}", path.display())))?;
        }
        let root = read_root(&latest_root)?;
        releases.sort();
        Ok(RepositorySummary {
            repository: self.repository.clone(),
            published: published.map(|(_, name, _)| name),
            releases,
            root_version: root.signed.version.get(),
            timestamp_version: timestamp_version.get(),
            expires,
        })
    }
}

/// `rotate`: generates a new key set into `new_keys`, publishes root version N+1 naming it
/// (signed by both the current root key in `current_keys` and the new one) into `repository`,
/// and re-signs the repository with the new keys. The old keys are revoked from then on.
pub async fn rotate_keys(
    current_keys: &Path,
    new_keys: &Path,
    repository: &Path,
    expires: Timestamp,
    metadata: impl Into<Expiries>,
) -> Result<(KeySetSummary, RepositorySummary), SigningError> {
    let layout = Layout::new(repository)?;
    let current_root = read_root(&layout.root_path(<[u64]>::last)?)?;
    // Read the repository while its current root still vouches for its metadata.
    let existing = layout.load().await?;
    let (new_root, buffer, summary) =
        generate(new_keys, expires, Some((&current_root, current_keys))).await?;
    let published = layout
        .metadata
        .join(format!("{}.root.json", new_root.signed.version));
    std::fs::write(&published, &buffer).map_err(io("write", &published))?;
    let repository_summary = layout
        .sign(existing, None, new_keys, metadata.into())
        .await?;
    Ok((summary, repository_summary))
}

/// What re-signing the timestamp left.
#[derive(Debug, Clone)]
pub struct TimestampSummary {
    pub repository: PathBuf,
    pub version: u64,
    pub expires: Timestamp,
}

impl fmt::Display for TimestampSummary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "re-signed {}/metadata/timestamp.json (timestamp v{}, expires {})",
            self.repository.display(),
            self.version,
            self.expires
        )
    }
}

/// `resign-timestamp`: signs the next version of the timestamp, naming the same snapshot, valid
/// until `expires`, with the timestamp key alone (the one key kept online, where the schedule
/// runs). The file is replaced at once, so a server reading it never sees half of one.
pub async fn resign_timestamp(
    repository: &Path,
    timestamp_key: &Path,
    expires: Timestamp,
) -> Result<TimestampSummary, SigningError> {
    let layout = Layout::new(repository)?;
    let loaded = layout.load().await?.ok_or_else(|| SigningError::Other {
        action: format!("re-sign the timestamp of {}", repository.display()),
        reason: "the repository has no timestamp.json yet: build it first".into(),
    })?;
    let root = read_root(&layout.root_path(<[u64]>::last)?)?;
    let mut timestamp = loaded.timestamp().signed.clone();
    timestamp.version = timestamp.version.saturating_add(1);
    timestamp.expires = expires;
    let keys: Vec<Box<dyn KeySource>> = vec![Box::new(PemKeySource {
        path: timestamp_key.to_owned(),
    })];
    let signed = SignedRole::new(
        timestamp.clone(),
        &KeyHolder::Root(root.signed),
        &keys,
        &SystemRandom::new(),
    )
    .await
    .map_err(tuf(format!(
        "sign the timestamp with {}",
        timestamp_key.display()
    )))?;
    let path = layout.metadata.join("timestamp.json");
    let partial = layout.metadata.join(".timestamp.json.partial");
    std::fs::write(&partial, signed.buffer()).map_err(io("write", &partial))?;
    std::fs::rename(&partial, &path).map_err(io("replace", &path))?;
    Ok(TimestampSummary {
        repository: repository.to_owned(),
        version: timestamp.version.get(),
        expires,
    })
}
