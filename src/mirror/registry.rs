//! The narrow interface the copy engine needs from a registry, and the errors a registry gives.

use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

/// Media types of the manifests the engine understands. Anything else is copied verbatim too;
/// these only decide whether a manifest has children or blobs.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest type a pull accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A manifest exactly as the registry served it: its bytes are what the digest covers.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Bytes,
}

/// A blob's bytes as they arrive, each chunk already counted against the blob's digest.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>;

/// What the engine asks of a registry. `repository` is a path inside the registry; `reference`
/// a tag or a digest.
#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// The registry's name as the user wrote it, for messages.
    fn name(&self) -> &str;
    /// The digest a tag or digest resolves to, or `None` when the registry does not have it.
    async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError>;
    /// The manifest with this digest, checked against it.
    async fn manifest(&self, repository: &str, digest: &str) -> Result<Manifest, RegistryError>;
    /// Stores a manifest under a digest or a tag.
    async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &Manifest,
    ) -> Result<(), RegistryError>;
    async fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, RegistryError>;
    /// Links a blob the registry holds in `from` into `repository`; false when it declined.
    async fn mount_blob(
        &self,
        repository: &str,
        from: &str,
        digest: &str,
    ) -> Result<bool, RegistryError>;
    /// The blob's bytes, verified against its digest as they flow: the stream ends with an
    /// error instead of its last chunk when they do not match.
    async fn blob(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
    ) -> Result<BlobStream, RegistryError>;
    /// Uploads a blob of known size and digest from a stream, in one request.
    async fn put_blob(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
        bytes: BlobStream,
    ) -> Result<(), RegistryError>;
}

/// What went wrong talking to a registry. Messages never hold credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry} {} for {repository} (HTTP 401 Unauthorized){}", if *.anonymous { "requires credentials, and none were found" } else { "refused the credentials" }, detail_suffix(.detail))]
    Unauthorized {
        registry: String,
        repository: String,
        /// No credentials were sent: the auth file has no entry for the registry.
        anonymous: bool,
        detail: Option<String>,
    },
    #[error("{registry} denied access to {repository} (HTTP 403 Forbidden)")]
    Denied {
        registry: String,
        repository: String,
    },
    #[error("{registry} has no {what} in {repository}")]
    NotFound {
        registry: String,
        repository: String,
        what: String,
    },
    #[error(
        "{registry} served bytes for {repository}@{digest} that do not match that digest{}",
        detail_suffix(.detail)
    )]
    DigestMismatch {
        registry: String,
        repository: String,
        digest: String,
        detail: Option<String>,
    },
    #[error("cannot reach {registry}: {message}")]
    Unreachable { registry: String, message: String },
    /// Worth another try: a 5xx, a 429, a connection that broke.
    #[error("{registry}: {message}")]
    Transient { registry: String, message: String },
    #[error("{registry}: {message}")]
    Other { registry: String, message: String },
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|detail| format!(": {detail}"))
        .unwrap_or_default()
}

impl RegistryError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::Transient { .. } | RegistryError::Unreachable { .. }
        )
    }

    pub fn registry(&self) -> &str {
        match self {
            RegistryError::Unauthorized { registry, .. }
            | RegistryError::Denied { registry, .. }
            | RegistryError::NotFound { registry, .. }
            | RegistryError::DigestMismatch { registry, .. }
            | RegistryError::Unreachable { registry, .. }
            | RegistryError::Transient { registry, .. }
            | RegistryError::Other { registry, .. } => registry,
        }
    }
}

/// Whether a manifest lists other manifests (an index) rather than blobs.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// A `sha256:<hex>` digest of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

pub fn hex(bytes: &[u8]) -> String {
    struct Hex<'a>(&'a [u8]);
    impl fmt::Display for Hex<'_> {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            for byte in self.0 {
                write!(formatter, "{byte:02x}")?;
            }
            Ok(())
        }
    }
    Hex(bytes).to_string()
}

/// Whether text is a `sha256:` digest of 64 lowercase hex digits.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    })
}
