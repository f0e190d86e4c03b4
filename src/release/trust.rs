//! Trust in a release: verifies a release manifest published in a repository of The Update
//! Framework (TUF) against a pinned root, with the `tough` crate doing the TUF client workflow.
//!
//! What each threat meets:
//! - tampering: every metadata file is checked against the signatures its role's keys in the
//!   root must make, and every file pulled (snapshot, targets, the manifest itself) against the
//!   length and SHA-256 that the metadata above it signed;
//! - freeze: the root, timestamp, snapshot and targets metadata and the manifest each carry an
//!   expiry; all are checked against the `now` the caller passes in, so a mirror that keeps
//!   serving an old but validly signed repository is refused once it goes stale;
//! - rollback: the caller passes the newest release it already trusts (the installed one); an
//!   older release is refused, whatever its signatures. TUF's own version checks refuse a root
//!   chain that skips or repeats a version;
//! - a compromised old key: keys are rotated by publishing root version N+1, signed by the
//!   threshold of both the old and the new root keys. The client walks `1.root.json`,
//!   `2.root.json`, … from the root it trusts, so metadata signed by a revoked key is refused
//!   once the rotation is published. [`VerifiedRelease::trusted_root`] is the newest root
//!   reached: keeping it as the next trusted root means an attacker who holds the old key and
//!   hides the rotation still cannot go back.
//!
//! Time is an argument, not the system clock: `tough` is told not to check expiry itself
//! (it would read the clock), and [`verify`] checks every role's expiry against `now` instead.
//!
//! Repositories are read from a directory, an `https://` URL, an `s3://bucket/prefix` URL, or
//! plain `http://` on a loopback address, through [`RepositoryTransport`] (`transport.rs`);
//! `tough`'s own HTTP client is not compiled in.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jiff::Timestamp;
use semver::Version;
use serde::{Deserialize, Serialize};
use tough::schema::{RoleType, Root, Signed};
use tough::{ExpirationEnforcement, IntoVec, RepositoryLoader, TargetName, TransportErrorKind};
use url::Url;

use super::transport::{FetchFailure, RepositoryTransport, loopback_address};
use super::{ManifestError, ReleaseManifest};

/// The root metadata this build trusts before it has seen any repository, chosen when it was
/// built (see `build.rs`): the vendor's root that `STACKWRIGHT_VENDOR_ROOT` named, or in a
/// `dev-root` build the development root in `manifests/dev-keys/`. Empty when neither was.
const EMBEDDED_ROOT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/trusted_root.json"));

/// The root built into this installer, or why there is none.
pub fn embedded_root() -> Result<&'static [u8], TrustError> {
    if EMBEDDED_ROOT.is_empty() {
        return Err(TrustError::NoEmbeddedRoot);
    }
    Ok(EMBEDDED_ROOT)
}

/// Release manifests are published as targets named `releases/<version>.json`.
pub const RELEASE_TARGET_PREFIX: &str = "releases/";

/// Where a release repository is: a directory holding `metadata/` and `targets/`, or a URL below
/// which they are: `https://`, `s3://bucket/prefix`, or plain `http://` on a loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositorySource {
    Directory(PathBuf),
    Url(Url),
}

impl RepositorySource {
    fn base_url(&self) -> Result<Url, TrustError> {
        match self {
            RepositorySource::Directory(path) => {
                let absolute =
                    std::path::absolute(path).map_err(|error| TrustError::Unreachable {
                        repository: self.to_string(),
                        reason: error.to_string(),
                    })?;
                if !absolute.is_dir() {
                    return Err(TrustError::Unreachable {
                        repository: self.to_string(),
                        reason: "no such directory".into(),
                    });
                }
                Url::from_directory_path(&absolute).map_err(|()| TrustError::Unreachable {
                    repository: self.to_string(),
                    reason: "the path cannot be expressed as a file URL".into(),
                })
            }
            RepositorySource::Url(url) => {
                let mut url = url.clone();
                if !url.path().ends_with('/') {
                    url.set_path(&format!("{}/", url.path()));
                }
                Ok(url)
            }
        }
    }
}

impl FromStr for RepositorySource {
    type Err = TrustError;

    /// An `https://` or `s3://` URL, an `http://` URL on a loopback address, or else a
    /// directory path.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if !text.contains("://") {
            return Ok(RepositorySource::Directory(PathBuf::from(text)));
        }
        let url = Url::parse(text).map_err(|error| TrustError::UnsupportedSource {
            source_text: text.to_owned(),
            reason: error.to_string(),
        })?;
        match url.scheme() {
            "file" => url
                .to_file_path()
                .map(RepositorySource::Directory)
                .map_err(|()| TrustError::UnsupportedSource {
                    source_text: text.to_owned(),
                    reason: "not a local file URL".into(),
                }),
            "https" if url.host_str().is_some() => Ok(RepositorySource::Url(url)),
            "http" if loopback_address(&url).is_some() => Ok(RepositorySource::Url(url)),
            "http" => Err(TrustError::UnsupportedSource {
                source_text: text.to_owned(),
                reason: "plain http:// is accepted only on a loopback address (127.0.0.1 or [::1]): anywhere else, whoever is on the way could serve stale metadata and hold back a security release".into(),
            }),
            "s3" if url.host_str().is_some_and(|bucket| !bucket.is_empty()) => {
                Ok(RepositorySource::Url(url))
            }
            _ => Err(TrustError::UnsupportedSource {
                source_text: text.to_owned(),
                reason: "only a directory, an https:// URL, an s3://bucket/prefix URL, or plain http:// on a loopback address is supported".into(),
            }),
        }
    }
}

impl fmt::Display for RepositorySource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositorySource::Directory(path) => write!(formatter, "{}", path.display()),
            RepositorySource::Url(url) => write!(formatter, "{url}"),
        }
    }
}

/// Which release to take from the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseSelection {
    /// The highest version the repository lists.
    Newest,
    /// Exactly this version.
    Version(Version),
}

/// How far this instance has already seen the release repository: a later run must reach at
/// least as far, so metadata an attacker replays (an old timestamp hiding a security release,
/// an older root) is refused. The root itself is never read back from storage: every run walks
/// the chain from the root built into the installer, and the floor only says where that walk
/// must arrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustFloor {
    pub root_version: u64,
    /// SHA-256 of that root's canonical signed form.
    pub root_sha256: String,
    #[serde(default)]
    pub timestamp_version: u64,
    #[serde(default)]
    pub snapshot_version: u64,
    #[serde(default)]
    pub targets_version: u64,
}

impl TrustFloor {
    /// The floor of a whole root metadata file (a record from before floors were kept): its
    /// version and hash, no metadata versions.
    pub fn of_root_file(text: &[u8]) -> Result<TrustFloor, String> {
        let root: Signed<Root> =
            serde_json::from_slice(text).map_err(|error| format!("not root metadata: {error}"))?;
        Ok(TrustFloor {
            root_version: root.signed.version.get(),
            root_sha256: root_digest(&root.signed).map_err(|error| error.to_string())?,
            timestamp_version: 0,
            snapshot_version: 0,
            targets_version: 0,
        })
    }
}

/// A floor, and where it was read from, for errors to name.
#[derive(Debug, Clone)]
pub struct RecordedFloor {
    pub floor: TrustFloor,
    /// Such as `the state table stackwright-acme, item acme/installation`.
    pub recorded_in: String,
}

fn root_digest(root: &Root) -> Result<String, tough::schema::Error> {
    use sha2::Digest;
    use tough::schema::Role;
    Ok(hex_encode(&sha2::Sha256::digest(root.canonical_form()?)))
}

/// What was verified, for the caller to act on and to show.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedRelease {
    /// The manifest, parsed and checked.
    pub manifest: ReleaseManifest,
    /// The target it was published as, such as `releases/1.1.0.json`.
    pub target: String,
    /// Its SHA-256, as signed in the targets metadata.
    pub sha256: String,
    pub length: u64,
    /// Where it came from.
    pub repository: String,
    /// Version of the newest root reached from the trusted one.
    pub root_version: u64,
    pub timestamp_version: u64,
    pub snapshot_version: u64,
    pub targets_version: u64,
    /// The first expiry among the root, timestamp, snapshot, targets and the manifest, and whose.
    pub expires: Timestamp,
    pub expires_first: String,
    /// Every release version the repository lists, oldest first.
    pub available: Vec<String>,
    /// How far this verification reached: the floor the next one must reach.
    #[serde(skip)]
    pub floor: TrustFloor,
}

impl fmt::Display for VerifiedRelease {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let manifest = &self.manifest;
        writeln!(
            formatter,
            "verified release {} ({} channel) from {}",
            manifest.version, manifest.channel, self.repository
        )?;
        writeln!(
            formatter,
            "  target     {} ({} bytes, sha256 {})",
            self.target, self.length, self.sha256
        )?;
        writeln!(
            formatter,
            "  metadata   root v{}, timestamp v{}, snapshot v{}, targets v{}; signatures meet every role's threshold",
            self.root_version, self.timestamp_version, self.snapshot_version, self.targets_version
        )?;
        writeln!(
            formatter,
            "  expires    {} ({} expires first)",
            self.expires, self.expires_first
        )?;
        writeln!(
            formatter,
            "  components {}",
            manifest
                .components
                .iter()
                .map(|component| component.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        write!(formatter, "  available  {}", self.available.join(", "))
    }
}

/// Why a release was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("\"{source_text}\" is not a release repository stackwright can read: {reason}")]
    UnsupportedSource { source_text: String, reason: String },
    #[error(
        "this installer was built without a release root, so it trusts no release: it was built without STACKWRIGHT_VENDOR_ROOT"
    )]
    NoEmbeddedRoot,
    #[error("the trusted root is not valid TUF root metadata: {reason}")]
    TrustedRoot { reason: String },
    #[error("cannot read the release repository {repository}: {reason}")]
    Unreachable { repository: String, reason: String },
    #[error(
        "the control plane offers releases from {offered}, but this instance reads releases only from {pinned}: refusing the offer"
    )]
    OtherRepository { offered: String, pinned: String },
    #[error("cannot read the release repository {repository}: {problem} ({url})")]
    Certificate {
        repository: String,
        url: String,
        problem: String,
    },
    #[error(
        "{what} was tampered with: its content does not match the length and SHA-256 signed for it ({detail})"
    )]
    Tampered { what: String, detail: String },
    #[error(
        "the {role} metadata expired at {expired} (it is now {now}): refusing stale metadata, which a freeze attack would serve"
    )]
    Expired {
        role: String,
        expired: Timestamp,
        now: Timestamp,
    },
    #[error(
        "release {offered} is older than release {trusted}, which is already trusted here: refusing to roll back"
    )]
    Rollback { offered: Version, trusted: Version },
    #[error(
        "the {role} metadata is version {offered}, but version {trusted} was already trusted: refusing to roll back"
    )]
    MetadataRollback {
        role: String,
        offered: u64,
        trusted: u64,
    },
    #[error(
        "the release repository's root is version {reached}, but version {floor} was already trusted here ({recorded_in}): refusing an older root, which would hide a key rotation"
    )]
    RootBelowFloor {
        reached: u64,
        floor: u64,
        recorded_in: String,
    },
    #[error(
        "{recorded_in} records root version {version} with SHA-256 {recorded}, but the root version {version} reached from the root built into this installer has SHA-256 {reached}: the record was not written by this installer from this repository, so it is not trusted"
    )]
    FloorMismatch {
        version: u64,
        recorded: String,
        reached: String,
        recorded_in: String,
    },
    #[error("{recorded_in} holds a trusted root that cannot be read: {reason}")]
    FloorUnreadable { recorded_in: String, reason: String },
    #[error(
        "the {role} metadata is not signed by any key the trusted root names for it: it was signed by an unknown or revoked key, or altered after signing"
    )]
    UntrustedSignature { role: String },
    #[error(
        "the {role} metadata has {valid} valid signature(s) from the keys the trusted root names for it, fewer than the {threshold} it requires"
    )]
    ThresholdNotMet {
        role: String,
        valid: u64,
        threshold: u64,
    },
    #[error("{what} is malformed: {reason}")]
    Malformed { what: String, reason: String },
    #[error("the repository {repository} has no release {wanted} (it lists: {available})")]
    ReleaseNotFound {
        repository: String,
        wanted: String,
        available: String,
    },
    #[error("the signed target {target} is not a valid release manifest")]
    Manifest {
        target: String,
        #[source]
        source: ManifestError,
    },
    #[error("the signed target {target} holds release {found}, not the release its name says")]
    VersionMismatch { target: String, found: Version },
    #[error("release {version}'s manifest expired at {expired} (it is now {now})")]
    ManifestExpired {
        version: Version,
        expired: Timestamp,
        now: Timestamp,
    },
}

impl TrustError {
    /// Whether the error is the repository's as a whole rather than one release's: then no
    /// release from it can be trusted.
    pub fn is_repository_wide(&self) -> bool {
        !matches!(
            self,
            TrustError::ReleaseNotFound { .. }
                | TrustError::Rollback { .. }
                | TrustError::Manifest { .. }
                | TrustError::VersionMismatch { .. }
                | TrustError::ManifestExpired { .. }
                | TrustError::Tampered { .. }
        )
    }

    /// The fix to print after the error.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            TrustError::UnsupportedSource { .. } => {
                "name the repository as https://host/path, s3://bucket/prefix, or a directory holding metadata/ and targets/"
            }
            TrustError::NoEmbeddedRoot => {
                "use the installer the vendor ships; a vendor builds it with STACKWRIGHT_VENDOR_ROOT=path/to/root.json cargo build --release"
            }
            TrustError::TrustedRoot { .. } => {
                "the trusted root is the vendor's root.json as shipped; restore it rather than editing it"
            }
            TrustError::Unreachable { .. } => {
                "check the path or URL and that this machine reaches it (an s3:// repository with the AWS credentials and region in use); a repository holds metadata/timestamp.json"
            }
            TrustError::Certificate { .. } => return Some(crate::tls::certificate_hint()),
            TrustError::OtherRepository { offered, .. } => {
                return Some(format!(
                    "if the vendor has moved its release repository, set release.repository = \"{offered}\" in the configuration (or STACKWRIGHT_RELEASE_REPOSITORY) and run again; otherwise the offer did not come from the vendor's repository: leave the setting and report it"
                ));
            }
            TrustError::Tampered { .. }
            | TrustError::UntrustedSignature { .. }
            | TrustError::ThresholdNotMet { .. } => {
                "do not install from this repository; fetch it again from the vendor, and report it if the refusal repeats"
            }
            TrustError::Expired { role, .. } => {
                return Some(
                    match role.as_str() {
                        "timestamp" => "the vendor re-signs the timestamp every day (stackwright-release resign-timestamp, which the control plane runs on a schedule): the repository, or the mirror in front of it, has stopped being refreshed. Check this machine's clock, then tell the vendor",
                        "snapshot" | "targets" => "the vendor must re-sign the repository (stackwright-release build --keys KEYS --out REPOSITORY, which signs the next targets, snapshot and timestamp). Check this machine's clock, then tell the vendor",
                        _ => "the vendor must publish the next root (stackwright-release rotate) before the root expires. Check this machine's clock, then tell the vendor",
                    }
                    .to_owned(),
                );
            }
            TrustError::ManifestExpired { .. } => {
                "the vendor publishes a release with a new expiry before the old one ends: ask for a newer release, and check this machine's clock"
            }
            TrustError::RootBelowFloor { .. } => {
                "the repository is replaying an old root (or it is not the vendor's repository): fetch releases from the vendor's repository, and report it if the refusal repeats"
            }
            TrustError::FloorMismatch { .. } | TrustError::FloorUnreadable { .. } => {
                "find out who wrote that item (CloudTrail records dynamodb:PutItem and UpdateItem on the state table); once it is explained, remove its trust_floor and trusted_root attributes so the next run starts again from the root built into stackwright"
            }
            TrustError::Rollback { .. } | TrustError::MetadataRollback { .. } => {
                "to go back on purpose, run install --release VERSION --allow-downgrade and type the version; if you did not ask for an older release, the repository may be replaying old ones"
            }
            TrustError::Malformed { .. } | TrustError::VersionMismatch { .. } => {
                "the repository is damaged or not a stackwright release repository; fetch it again from the vendor"
            }
            TrustError::ReleaseNotFound { .. } => "pick one of the releases the repository lists",
            TrustError::Manifest { .. } => {
                "the manifest is signed but this stackwright cannot read it: upgrade stackwright"
            }
        };
        Some(hint.to_owned())
    }
}

/// What a verification starts from: the root to walk from, the installed release (the floor
/// below which a release is a rollback) and how far earlier runs reached.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// The content of a root.json the vendor shipped out of band: the embedded root.
    pub root: &'a [u8],
    pub installed: Option<&'a Version>,
    pub floor: Option<&'a RecordedFloor>,
}

impl<'a> Trust<'a> {
    /// Trust from `root` alone, with no release installed and no floor.
    pub fn root(root: &'a [u8]) -> Self {
        Trust {
            root,
            installed: None,
            floor: None,
        }
    }
}

/// Verifies the repository from `trust`'s root, picks the release `selection` names, and
/// returns its checked manifest. `now` decides expiry.
pub async fn verify(
    source: &RepositorySource,
    trust: Trust<'_>,
    now: Timestamp,
    selection: &ReleaseSelection,
) -> Result<VerifiedRelease, TrustError> {
    let trusted_root = trust.root;
    let last_trusted = trust.installed;
    let trusted: Signed<Root> =
        serde_json::from_slice(trusted_root).map_err(|error| TrustError::TrustedRoot {
            reason: error.to_string(),
        })?;
    trusted
        .signed
        .verify_role(&trusted)
        .map_err(|error| TrustError::TrustedRoot {
            reason: error.to_string(),
        })?;

    let base = source.base_url()?;
    let join = |path: &str| {
        base.join(path)
            .map_err(|error| TrustError::UnsupportedSource {
                source_text: source.to_string(),
                reason: error.to_string(),
            })
    };
    let transport = RepositoryTransport::for_base(&base)
        .await
        .map_err(|failure| TrustError::Unreachable {
            repository: source.to_string(),
            reason: failure.message,
        })?;
    let repository = RepositoryLoader::new(&trusted_root, join("metadata/")?, join("targets/")?)
        .transport(transport)
        // Expiry is checked below against the `now` passed in rather than the system clock.
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .load()
        .await
        .map_err(|error| classify(&error, source, None))?;

    let root = repository.root();
    let timestamp = repository.timestamp();
    let snapshot = repository.snapshot();
    let targets = repository.targets();
    let mut expiries = [
        ("timestamp", timestamp.signed.expires),
        ("snapshot", snapshot.signed.expires),
        ("targets", targets.signed.expires),
        ("root", root.signed.expires),
    ];
    expiries.sort_by_key(|(_, expires)| *expires);
    if let Some((role, expired)) = expiries.iter().find(|(_, expires)| *expires <= now) {
        return Err(TrustError::Expired {
            role: (*role).to_owned(),
            expired: *expired,
            now,
        });
    }

    let floor = TrustFloor {
        root_version: root.signed.version.get(),
        root_sha256: root_digest(&root.signed).map_err(|error| TrustError::Malformed {
            what: "the root metadata".into(),
            reason: error.to_string(),
        })?,
        timestamp_version: timestamp.signed.version.get(),
        snapshot_version: snapshot.signed.version.get(),
        targets_version: targets.signed.version.get(),
    };
    if let Some(recorded) = trust.floor {
        floor.meets(recorded)?;
    }

    let mut releases: Vec<(Version, TargetName)> = repository
        .all_targets()
        .filter_map(|(name, _)| {
            let version = name
                .raw()
                .strip_prefix(RELEASE_TARGET_PREFIX)?
                .strip_suffix(".json")?;
            Some((Version::parse(version).ok()?, name.clone()))
        })
        .collect();
    releases.sort_by(|(left, _), (right, _)| left.cmp(right));
    let available: Vec<String> = releases
        .iter()
        .map(|(version, _)| version.to_string())
        .collect();
    let chosen = match selection {
        ReleaseSelection::Newest => releases.last(),
        ReleaseSelection::Version(wanted) => releases.iter().find(|(version, _)| version == wanted),
    };
    let Some((version, name)) = chosen.cloned() else {
        return Err(TrustError::ReleaseNotFound {
            repository: source.to_string(),
            wanted: match selection {
                ReleaseSelection::Newest => "at all".into(),
                ReleaseSelection::Version(wanted) => wanted.to_string(),
            },
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        });
    };
    if let Some(trusted) = last_trusted
        && &version < trusted
    {
        return Err(TrustError::Rollback {
            offered: version,
            trusted: trusted.clone(),
        });
    }

    let target =
        targets
            .signed
            .find_target(&name, false)
            .map_err(|error| TrustError::Malformed {
                what: "the targets metadata".into(),
                reason: error.to_string(),
            })?;
    let (sha256, length) = (hex_encode(&target.hashes.sha256), target.length);
    let stream = repository
        .read_target(&name)
        .await
        .map_err(|error| classify(&error, source, Some(name.raw())))?
        .ok_or_else(|| TrustError::Malformed {
            what: "the targets metadata".into(),
            reason: format!("{} is listed but cannot be found", name.raw()),
        })?;
    let bytes = stream
        .into_vec()
        .await
        .map_err(|error| classify(&error, source, Some(name.raw())))?;

    let manifest = ReleaseManifest::parse(&bytes, Path::new(name.raw())).map_err(|error| {
        TrustError::Manifest {
            target: name.raw().to_owned(),
            source: error,
        }
    })?;
    if manifest.version != version {
        return Err(TrustError::VersionMismatch {
            target: name.raw().to_owned(),
            found: manifest.version,
        });
    }
    if manifest.expires <= now {
        return Err(TrustError::ManifestExpired {
            version: manifest.version,
            expired: manifest.expires,
            now,
        });
    }
    let (mut expires, mut expires_first) = (expiries[0].1, expiries[0].0.to_owned());
    if manifest.expires < expires {
        expires = manifest.expires;
        expires_first = "the manifest".into();
    }

    Ok(VerifiedRelease {
        target: name.raw().to_owned(),
        sha256,
        length,
        repository: source.to_string(),
        root_version: root.signed.version.get(),
        timestamp_version: timestamp.signed.version.get(),
        snapshot_version: snapshot.signed.version.get(),
        targets_version: targets.signed.version.get(),
        expires,
        expires_first,
        available,
        floor,
        manifest,
    })
}

impl TrustFloor {
    /// Whether this, reached by a verification, is at or above what earlier runs recorded.
    pub fn meets(&self, recorded: &RecordedFloor) -> Result<(), TrustError> {
        let reached = self;
        let floor = &recorded.floor;
        if reached.root_version < floor.root_version {
            return Err(TrustError::RootBelowFloor {
                reached: reached.root_version,
                floor: floor.root_version,
                recorded_in: recorded.recorded_in.clone(),
            });
        }
        // A later root was reached through signatures of this one, checked on the way; the same
        // version must be the same root.
        if reached.root_version == floor.root_version && reached.root_sha256 != floor.root_sha256 {
            return Err(TrustError::FloorMismatch {
                version: floor.root_version,
                recorded: floor.root_sha256.clone(),
                reached: reached.root_sha256.clone(),
                recorded_in: recorded.recorded_in.clone(),
            });
        }
        for (role, reached, trusted) in [
            (
                "timestamp",
                reached.timestamp_version,
                floor.timestamp_version,
            ),
            ("snapshot", reached.snapshot_version, floor.snapshot_version),
            ("targets", reached.targets_version, floor.targets_version),
        ] {
            if reached < trusted {
                return Err(TrustError::MetadataRollback {
                    role: role.to_owned(),
                    offered: reached,
                    trusted,
                });
            }
        }
        Ok(())
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn role_name(role: RoleType) -> String {
    match role {
        RoleType::Root => "root",
        RoleType::Snapshot => "snapshot",
        RoleType::Targets => "targets",
        RoleType::Timestamp => "timestamp",
        RoleType::DelegatedTargets => "delegated targets",
    }
    .to_owned()
}

/// Turns what `tough` reports into the refusal a user reads. Its errors nest (a digest mismatch
/// travels inside a transport error), so the whole chain is searched for the telling one.
fn classify(
    error: &(dyn std::error::Error + 'static),
    source: &RepositorySource,
    target: Option<&str>,
) -> TrustError {
    use tough::error::Error as Tough;
    use tough::schema::Error as Schema;

    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut role: Option<RoleType> = None;
    while let Some(error) = current {
        if let Some(error) = error.downcast_ref::<Tough>() {
            match error {
                Tough::HashMismatch { context, .. } => {
                    return TrustError::Tampered {
                        what: tampered_what(target, context),
                        detail: "SHA-256 differs".into(),
                    };
                }
                Tough::MaxSizeExceeded { specifier, .. } => {
                    return TrustError::Tampered {
                        what: tampered_what(target, specifier),
                        detail: "longer than signed".into(),
                    };
                }
                Tough::VerifyMetadata { role: failed, .. } => role = Some(*failed),
                Tough::VerifyTrustedMetadata { .. } => role = Some(RoleType::Root),
                Tough::OlderMetadata {
                    role,
                    current_version,
                    new_version,
                    ..
                } => {
                    return TrustError::MetadataRollback {
                        role: role_name(*role),
                        offered: *new_version,
                        trusted: *current_version,
                    };
                }
                Tough::VersionMismatch {
                    role,
                    fetched,
                    expected,
                    ..
                } => {
                    return TrustError::Tampered {
                        what: format!("the {} metadata", role_name(*role)),
                        detail: format!("version {fetched} where version {expected} was signed"),
                    };
                }
                Tough::ParseMetadata { role, source, .. } => {
                    return TrustError::Malformed {
                        what: format!("the {} metadata", role_name(*role)),
                        reason: source.to_string(),
                    };
                }
                Tough::ParseTrustedMetadata { source, .. } => {
                    return TrustError::TrustedRoot {
                        reason: source.to_string(),
                    };
                }
                Tough::Transport {
                    url, source: cause, ..
                } => {
                    if cause.kind() == TransportErrorKind::FileNotFound {
                        return TrustError::Unreachable {
                            repository: source.to_string(),
                            reason: format!("{url} does not exist"),
                        };
                    }
                    if let Some(problem) = std::error::Error::source(cause)
                        .and_then(|cause| cause.downcast_ref::<FetchFailure>())
                        .and_then(|failure| failure.certificate_problem.clone())
                    {
                        return TrustError::Certificate {
                            repository: source.to_string(),
                            url: url.to_string(),
                            problem,
                        };
                    }
                }
                _ => {}
            }
        }
        if let Some(Schema::SignatureThreshold {
            role: failed,
            threshold,
            valid,
            ..
        }) = error.downcast_ref::<Schema>()
        {
            let role = role_name(role.unwrap_or(*failed));
            return if *valid == 0 {
                TrustError::UntrustedSignature { role }
            } else {
                TrustError::ThresholdNotMet {
                    role,
                    valid: *valid,
                    threshold: *threshold,
                }
            };
        }
        current = error.source();
    }
    match role {
        Some(role) => TrustError::Malformed {
            what: format!("the {} metadata", role_name(role)),
            reason: error.to_string(),
        },
        None => TrustError::Unreachable {
            repository: source.to_string(),
            reason: error.to_string(),
        },
    }
}

fn tampered_what(target: Option<&str>, url: &str) -> String {
    match target {
        Some(target) => format!("the release manifest {target}"),
        None => {
            let file = url.rsplit('/').next().unwrap_or(url);
            format!("the metadata file {file}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_directories_https_s3_or_loopback_urls() {
        assert_eq!(
            "manifests/repository".parse::<RepositorySource>().unwrap(),
            RepositorySource::Directory("manifests/repository".into())
        );
        for accepted in [
            "http://127.0.0.1:8080/repo",
            "http://[::1]:8080/",
            "https://releases.example.com/",
            "https://127.0.0.1:8443/repository/",
            "s3://vendor-releases/stable",
            "s3://vendor-releases",
        ] {
            assert!(
                matches!(
                    accepted.parse::<RepositorySource>(),
                    Ok(RepositorySource::Url(_))
                ),
                "{accepted}"
            );
        }
        for (refused, reason) in [
            ("http://releases.example.com/", "loopback"),
            ("http://10.0.0.1/", "loopback"),
            ("http://localhost:8080/", "loopback"),
            ("ftp://127.0.0.1/", "only a directory"),
            ("s3:///prefix", "only a directory"),
        ] {
            let error = refused.parse::<RepositorySource>().unwrap_err();
            assert!(
                matches!(&error, TrustError::UnsupportedSource { reason: text, .. } if text.contains(reason)),
                "{refused}: {error}"
            );
        }
    }
}
