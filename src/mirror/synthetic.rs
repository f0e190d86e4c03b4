//! Deterministic synthetic images for development, tests and the benchmark: the same inputs
//! give the same bytes, so the same digests, on every machine. A layer is an uncompressed tar
//! holding one file of seeded pseudo-random bytes; layers are generated as they are uploaded,
//! never held whole in memory.

use bytes::Bytes;
use futures_util::stream;
use serde_json::json;

use super::registry::{
    BlobStream, Manifest, OCI_INDEX, OCI_MANIFEST, Registry, RegistryError, hex, sha256_digest,
};

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const CHUNK: usize = 256 * 1024;

/// One layer: a tar with one file of `size` bytes drawn from a generator seeded with `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub seed: u64,
    pub size: u64,
}

impl Layer {
    pub const fn new(seed: u64, size: u64) -> Self {
        Layer { seed, size }
    }

    /// The tar's length: header, data padded to 512 bytes, two zero blocks.
    pub fn blob_size(&self) -> u64 {
        512 + self.size.div_ceil(512) * 512 + 1024
    }

    fn header(&self) -> [u8; 512] {
        let mut header = [0u8; 512];
        let name = format!("data/{:016x}.bin", self.seed);
        header[..name.len()].copy_from_slice(name.as_bytes());
        let mut field = |offset: usize, text: &str| {
            header[offset..offset + text.len()].copy_from_slice(text.as_bytes());
        };
        field(100, "0000644\0");
        field(108, "0000000\0");
        field(116, "0000000\0");
        field(124, &format!("{:011o}\0", self.size));
        field(136, "00000000000\0");
        field(156, "0");
        field(257, "ustar\0");
        field(263, "00");
        // The checksum is computed with its own field read as spaces.
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&byte| u32::from(byte)).sum();
        let checksum = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(checksum.as_bytes());
        header
    }

    /// The layer's bytes, chunk by chunk.
    pub fn chunks(self) -> impl Iterator<Item = Bytes> {
        let total = self.blob_size();
        let header = self.header();
        let state = self.seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut position = 0u64;
        std::iter::from_fn(move || {
            if position >= total {
                return None;
            }
            let length = (total - position).min(CHUNK as u64) as usize;
            let mut chunk = vec![0u8; length];
            if position < 512 {
                let end = (512 - position as usize).min(length);
                chunk[..end].copy_from_slice(&header[position as usize..position as usize + end]);
            }
            // The data region, filled eight bytes at a time from a splitmix64 sequence.
            let data_start = 512u64;
            let data_end = 512 + self.size;
            let from = position.max(data_start);
            let to = (position + length as u64).min(data_end);
            let mut offset = from;
            while offset < to {
                let word_index = (offset - data_start) / 8;
                let word =
                    splitmix(state.wrapping_add(word_index.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                let bytes = word.to_le_bytes();
                let within = ((offset - data_start) % 8) as usize;
                let take = ((8 - within) as u64).min(to - offset) as usize;
                let start = (offset - position) as usize;
                chunk[start..start + take].copy_from_slice(&bytes[within..within + take]);
                offset += take as u64;
            }
            position += length as u64;
            Some(Bytes::from(chunk))
        })
    }

    /// The layer's digest (one pass over its bytes).
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        for chunk in self.chunks() {
            hasher.update(&chunk);
        }
        format!("sha256:{}", hex(&hasher.finalize()))
    }

    fn stream(self) -> BlobStream {
        Box::pin(stream::iter(self.chunks().map(Ok)))
    }
}

/// The value with every object's keys in sorted order. serde_json keeps an object's keys sorted,
/// or in insertion order when its `preserve_order` feature is on, which some dependencies turn on
/// in some builds (the tests' among them): the images' bytes, and so their digests, which the
/// example releases pin, must not depend on the build.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|left, right| left.0.cmp(&right.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted(value)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

fn splitmix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// An image for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformImage {
    pub os: String,
    pub architecture: String,
    pub layers: Vec<Layer>,
    /// Labels in the image's configuration (component name, version).
    pub labels: Vec<(String, String)>,
}

/// An image to publish: one platform, or several behind an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticImage {
    pub repository: String,
    pub tag: Option<String>,
    pub platforms: Vec<PlatformImage>,
}

/// The manifests of an image, children before the index, with its digest.
pub struct BuiltImage {
    pub digest: String,
    pub size: u64,
    pub manifests: Vec<BuiltManifest>,
    pub index: Option<Manifest>,
}

/// One platform's manifest, its layers with their digests, and its configuration blob.
pub struct BuiltManifest {
    pub digest: String,
    pub manifest: Manifest,
    pub layers: Vec<(Layer, String)>,
    pub config_digest: String,
    pub config: Bytes,
}

/// Builds the manifests of an image (hashing every layer once).
pub fn build(image: &SyntheticImage) -> BuiltImage {
    let mut manifests = Vec::new();
    for platform in &image.platforms {
        let layers: Vec<(Layer, String)> = platform
            .layers
            .iter()
            .map(|layer| (*layer, layer.digest()))
            .collect();
        let labels: serde_json::Map<String, serde_json::Value> = platform
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), json!(value)))
            .collect();
        let config = json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "created": "2026-01-01T00:00:00Z",
            "config": { "Labels": labels },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|(_, digest)| digest.clone()).collect::<Vec<_>>(),
            },
        });
        let config = Bytes::from(serde_json::to_vec(&sorted(config)).unwrap_or_default());
        let config_digest = sha256_digest(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers.iter().map(|(layer, digest)| json!({
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": digest,
                "size": layer.blob_size(),
            })).collect::<Vec<_>>(),
        });
        let bytes = Bytes::from(serde_json::to_vec_pretty(&sorted(manifest)).unwrap_or_default());
        let digest = sha256_digest(&bytes);
        manifests.push(BuiltManifest {
            digest,
            manifest: Manifest {
                media_type: OCI_MANIFEST.to_owned(),
                bytes,
            },
            layers,
            config_digest,
            config,
        });
    }
    if manifests.len() == 1 && image.platforms.len() == 1 {
        let first = &manifests[0];
        return BuiltImage {
            digest: first.digest.clone(),
            size: first.manifest.bytes.len() as u64,
            index: None,
            manifests,
        };
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests.iter().zip(&image.platforms).map(|(built, platform)| json!({
            "mediaType": OCI_MANIFEST,
            "digest": built.digest,
            "size": built.manifest.bytes.len(),
            "platform": { "architecture": platform.architecture, "os": platform.os },
        })).collect::<Vec<_>>(),
    });
    let bytes = Bytes::from(serde_json::to_vec_pretty(&sorted(index)).unwrap_or_default());
    BuiltImage {
        digest: sha256_digest(&bytes),
        size: bytes.len() as u64,
        index: Some(Manifest {
            media_type: OCI_INDEX.to_owned(),
            bytes,
        }),
        manifests,
    }
}

/// Pushes an image (blobs the registry lacks, then manifests, then the tag); returns its digest.
pub async fn push(
    registry: &dyn Registry,
    image: &SyntheticImage,
) -> Result<String, RegistryError> {
    let built = build(image);
    let repository = &image.repository;
    for BuiltManifest {
        digest,
        manifest,
        layers,
        config_digest,
        config,
    } in &built.manifests
    {
        for (layer, layer_digest) in layers {
            if !registry.blob_exists(repository, layer_digest).await? {
                registry
                    .put_blob(repository, layer_digest, layer.blob_size(), layer.stream())
                    .await?;
            }
        }
        if !registry.blob_exists(repository, config_digest).await? {
            let config = config.clone();
            registry
                .put_blob(
                    repository,
                    config_digest,
                    config.len() as u64,
                    Box::pin(stream::iter([Ok(config)])),
                )
                .await?;
        }
        registry.put_manifest(repository, digest, manifest).await?;
    }
    if let Some(index) = &built.index {
        registry
            .put_manifest(repository, &built.digest, index)
            .await?;
    }
    if let Some(tag) = &image.tag {
        let root = built
            .index
            .clone()
            .unwrap_or_else(|| built.manifests[0].manifest.clone());
        registry.put_manifest(repository, tag, &root).await?;
    }
    Ok(built.digest)
}

/// The example releases' images (`manifests/releases/<version>.json`): every component shares
/// a base and a runtime layer; each release changes the components' application layers; the
/// `server` is published for linux/amd64 and linux/arm64 behind an index.
pub fn example_release(version: &str, prefix: &str) -> Vec<SyntheticImage> {
    const KIB: u64 = 1024;
    let generation = seed_of(version);
    let base = |architecture: &str| Layer::new(seed_of(&format!("base-{architecture}")), 384 * KIB);
    let runtime =
        |architecture: &str| Layer::new(seed_of(&format!("runtime-{architecture}")), 192 * KIB);
    let platform = |component: &str, architecture: &str, app_size: u64| PlatformImage {
        os: "linux".into(),
        architecture: architecture.into(),
        layers: vec![
            base(architecture),
            runtime(architecture),
            Layer::new(
                seed_of(&format!("{component}-{architecture}")) ^ generation,
                app_size,
            ),
        ],
        labels: vec![
            ("org.opencontainers.image.title".into(), component.into()),
            ("org.opencontainers.image.version".into(), version.into()),
        ],
    };
    let image = |component: &str, platforms: Vec<PlatformImage>| SyntheticImage {
        repository: format!("{prefix}/{component}"),
        tag: Some(version.to_owned()),
        platforms,
    };
    vec![
        image("dashboard", vec![platform("dashboard", "amd64", 48 * KIB)]),
        image(
            "server",
            vec![
                platform("server", "amd64", 96 * KIB),
                platform("server", "arm64", 96 * KIB),
            ],
        ),
        image(
            "workspace-manager",
            vec![platform("workspace-manager", "amd64", 64 * KIB)],
        ),
    ]
}

/// A seed from a name: the first eight bytes of its sha256.
pub fn seed_of(name: &str) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    /// The digests the example releases pin, whichever features this build has.
    #[test]
    fn the_example_images_have_the_digests_the_example_releases_pin() {
        for version in ["1.0.0", "1.1.0"] {
            let path = format!(
                "{}/manifests/releases/{version}.json",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).expect("the example release");
            for image in super::example_release(version, "stackwright") {
                let digest = super::build(&image).digest;
                assert!(
                    text.contains(&format!("{}@{digest}", image.repository)),
                    "{} {version} built as {digest}, which {path} does not pin",
                    image.repository
                );
            }
        }
    }

    use super::*;

    #[test]
    fn layers_are_valid_tars_of_the_stated_size() {
        let layer = Layer::new(7, 1000);
        let bytes: Vec<u8> = layer.chunks().flat_map(|chunk| chunk.to_vec()).collect();
        assert_eq!(bytes.len() as u64, layer.blob_size());
        assert_eq!(&bytes[257..262], b"ustar");
        assert_eq!(layer.digest(), sha256_digest(&bytes));
        // Chunk boundaries do not change the data: a larger layer starts with the same bytes.
        let large = Layer::new(7, 3 * CHUNK as u64 + 5);
        let large_bytes: Vec<u8> = large.chunks().flat_map(|chunk| chunk.to_vec()).collect();
        assert_eq!(&large_bytes[512..1512], &bytes[512..1512]);
    }

    #[test]
    fn the_example_images_are_deterministic_and_the_server_is_multi_arch() {
        let first = example_release("1.0.0", "stackwright");
        let second = example_release("1.0.0", "stackwright");
        assert_eq!(build(&first[1]).digest, build(&second[1]).digest);
        assert!(build(&first[1]).index.is_some());
        let next = example_release("1.1.0", "stackwright");
        assert_ne!(build(&first[0]).digest, build(&next[0]).digest);
        assert_eq!(
            first[0].platforms[0].layers[0],
            next[0].platforms[0].layers[0]
        );
    }
}
