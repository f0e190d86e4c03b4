//! `stackwright-release`: the vendor's side of signed releases, for development and tests.
//! Generates keys, builds and re-signs a release repository, rotates keys, verifies a
//! repository as an installer would, and pushes the deterministic images the example releases
//! (and the mirror benchmark) pin. The work is in `stackwright::release::signing` and
//! `stackwright::release::trust`; this file parses and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use semver::Version;
use stackwright::mirror::{OciRegistry, RegistryEndpoint, RegistryOverrides, synthetic};
use stackwright::release::signing::{self, SigningError};
use stackwright::release::{ReleaseSelection, RepositorySource, TrustError};

/// Signs stackwright releases (development and test keys only)
#[derive(Debug, Parser)]
#[command(name = "stackwright-release", version)]
struct ReleaseArgs {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a private key per TUF role and the root metadata naming them (root.json)
    Keygen {
        /// Directory to write the keys and root.json to; refused if it already holds keys
        #[arg(long)]
        out: PathBuf,
        /// How long the root stays valid, such as 730d or 2y
        #[arg(long, default_value = "730d")]
        expires: String,
    },
    /// Publish a release manifest into a repository (created if missing) and re-sign it
    Build {
        /// The release manifest to publish as releases/<version>.json; without it, only re-sign
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The key set from `keygen` (or `rotate`) that the repository's newest root names
        #[arg(long)]
        keys: PathBuf,
        /// The repository directory (metadata/ and targets/)
        #[arg(long)]
        out: PathBuf,
        /// How long the targets metadata stays valid, such as 730d or 2y
        #[arg(long, default_value = "730d")]
        expires: String,
        #[command(flatten)]
        short: ShortLived,
    },
    /// Replace every key: publish a new root signed by the old and new root keys, and re-sign
    Rotate {
        /// The current key set
        #[arg(long)]
        keys: PathBuf,
        /// Directory for the new key set and its root.json
        #[arg(long)]
        new_keys: PathBuf,
        /// The repository directory
        #[arg(long)]
        repository: PathBuf,
        /// How long the new root and the targets metadata stay valid
        #[arg(long, default_value = "730d")]
        expires: String,
        #[command(flatten)]
        short: ShortLived,
    },
    /// Sign the next version of the timestamp with the timestamp key alone: run it daily (the
    /// reference control plane does with --timestamp-key), before the timestamp expires
    ResignTimestamp {
        /// The repository directory
        #[arg(long)]
        repository: PathBuf,
        /// The timestamp role's private key (PKCS#8 PEM)
        #[arg(long)]
        key: PathBuf,
        /// How long the new timestamp stays valid
        #[arg(long, default_value = "1d")]
        expires: String,
    },
    /// Build the example releases' deterministic images and push them; prints their digests
    Images {
        /// The registry to push to, HOST:PORT (credentials from the docker-style auth file)
        #[arg(long)]
        push_to: String,
        /// Speak plain HTTP (a local registry without TLS)
        #[arg(long)]
        plain_http: bool,
        /// The repository prefix the release manifests name
        #[arg(long, default_value = "stackwright")]
        prefix: String,
        /// The example releases to build (default: 1.0.0 and 1.1.0)
        #[arg(long = "release")]
        releases: Vec<String>,
    },
    /// Push a synthetic release for the mirror benchmark: IMAGES images sharing base layers,
    /// seeded pseudo-random data; writes the image list for `stackwright mirror --images`
    Synthetic {
        /// The registry to push to, HOST:PORT
        #[arg(long)]
        push_to: String,
        #[arg(long)]
        plain_http: bool,
        /// Repository prefix
        #[arg(long, default_value = "bench")]
        prefix: String,
        /// How many images
        #[arg(long, default_value_t = 12)]
        images: usize,
        /// The release's tag
        #[arg(long, default_value = "1")]
        tag: String,
        /// Sizes of the base layers every image shares, in MiB
        #[arg(long, value_delimiter = ',', default_value = "64,32,16")]
        base_mib: Vec<u64>,
        /// Sizes of each image's own layers, in MiB
        #[arg(long, value_delimiter = ',', default_value = "12,4")]
        own_mib: Vec<u64>,
        /// Every Nth image gets new own layers (an incremental release); 0 for none
        #[arg(long, default_value_t = 0)]
        change_every: usize,
        /// The generation of changed layers (1 for the first release)
        #[arg(long, default_value_t = 1)]
        generation: u64,
        /// Data seed
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Write `repository:tag` lines here
        #[arg(long)]
        list: Option<PathBuf>,
    },
    /// Verify a repository as an installer would, and print what was verified
    Verify {
        /// A directory, or an http:// URL on 127.0.0.1
        #[arg(long)]
        repository: String,
        /// The pinned root metadata to trust
        #[arg(long)]
        root: PathBuf,
        /// The release to verify (default: the newest)
        #[arg(long)]
        release: Option<Version>,
        /// The release already installed; an older one is refused as a rollback
        #[arg(long)]
        last_trusted: Option<Version>,
    },
}

/// The roles re-signed often: a stale copy is found out within their lifetime.
#[derive(Debug, clap::Args)]
struct ShortLived {
    /// How long the timestamp metadata stays valid (re-signed daily with resign-timestamp)
    #[arg(long, default_value = "1d")]
    timestamp_expires: String,
    /// How long the snapshot metadata stays valid
    #[arg(long, default_value = "7d")]
    snapshot_expires: String,
}

impl ShortLived {
    fn expiries(
        &self,
        now: jiff::Timestamp,
        targets: jiff::Timestamp,
    ) -> Result<signing::Expiries, SigningError> {
        signing::Expiries::with(
            now,
            targets,
            &self.timestamp_expires,
            &self.snapshot_expires,
        )
    }
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("cannot read the trusted root {}", path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Mirror(#[from] stackwright::mirror::MirrorError),
    #[error(transparent)]
    Registry(#[from] stackwright::mirror::RegistryError),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

fn main() -> ExitCode {
    let args = ReleaseArgs::parse();
    match run(args) {
        Ok(output) => {
            println!("{}", output.trim_end());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            if let Failure::Trust(error) = &error
                && let Some(hint) = error.hint()
            {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: ReleaseArgs) -> Result<String, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::Runtime)?;
    let now = jiff::Timestamp::now();
    runtime.block_on(async {
        Ok(match args.command {
            Command::Keygen { out, expires } => {
                let expires = signing::expiry(now, &expires)?;
                signing::generate_keys(&out, expires).await?.to_string()
            }
            Command::Build {
                manifest,
                keys,
                out,
                expires,
                short,
            } => {
                let expires = short.expiries(now, signing::expiry(now, &expires)?)?;
                signing::build_repository(manifest.as_deref(), &keys, &out, expires)
                    .await?
                    .to_string()
            }
            Command::Rotate {
                keys,
                new_keys,
                repository,
                expires,
                short,
            } => {
                let expires = signing::expiry(now, &expires)?;
                let metadata = short.expiries(now, expires)?;
                let (keys, repository) =
                    signing::rotate_keys(&keys, &new_keys, &repository, expires, metadata).await?;
                format!("{keys}{repository}")
            }
            Command::ResignTimestamp {
                repository,
                key,
                expires,
            } => {
                let expires = signing::expiry(now, &expires)?;
                signing::resign_timestamp(&repository, &key, expires)
                    .await?
                    .to_string()
            }
            Command::Images {
                push_to,
                plain_http,
                prefix,
                releases,
            } => {
                let registry = registry(&push_to, plain_http)?;
                let releases = if releases.is_empty() {
                    vec!["1.0.0".to_owned(), "1.1.0".to_owned()]
                } else {
                    releases
                };
                let mut output = String::new();
                for version in releases {
                    for image in synthetic::example_release(&version, &prefix) {
                        let digest = synthetic::push(&registry, &image).await?;
                        let tag = image.tag.as_deref().unwrap_or_default();
                        output.push_str(&format!("{}:{tag} {digest}\n", image.repository));
                    }
                }
                output
            }
            Command::Synthetic {
                push_to,
                plain_http,
                prefix,
                images,
                tag,
                base_mib,
                own_mib,
                change_every,
                generation,
                seed,
                list,
            } => {
                let registry = registry(&push_to, plain_http)?;
                const MIB: u64 = 1024 * 1024;
                let base: Vec<synthetic::Layer> = base_mib
                    .iter()
                    .enumerate()
                    .map(|(index, mib)| {
                        synthetic::Layer::new(seed ^ (index as u64 + 1) << 32, mib * MIB)
                    })
                    .collect();
                let mut lines = String::new();
                let mut output = String::new();
                let pushes = (0..images).map(|number| {
                    let changed = change_every > 0 && number % change_every == 0;
                    let layer_generation = if changed { generation } else { 1 };
                    let mut layers = base.clone();
                    for (index, mib) in own_mib.iter().enumerate() {
                        let layer_seed = synthetic::seed_of(&format!(
                            "{seed}-{number}-{index}-{layer_generation}"
                        ));
                        layers.push(synthetic::Layer::new(layer_seed, mib * MIB));
                    }
                    synthetic::SyntheticImage {
                        repository: format!("{prefix}/image-{number:02}"),
                        tag: Some(tag.clone()),
                        platforms: vec![synthetic::PlatformImage {
                            os: "linux".into(),
                            architecture: "amd64".into(),
                            layers,
                            labels: vec![("number".into(), number.to_string())],
                        }],
                    }
                });
                let results: Vec<Result<(String, String), stackwright::mirror::RegistryError>> =
                    futures_util::stream::iter(pushes)
                        .map(|image| {
                            let registry = &registry;
                            async move {
                                let digest = synthetic::push(registry, &image).await?;
                                Ok((image.repository, digest))
                            }
                        })
                        .buffered(4)
                        .collect()
                        .await;
                let relative = |repository: &str| {
                    repository
                        .strip_prefix(&format!("{prefix}/"))
                        .unwrap_or(repository)
                        .to_owned()
                };
                // What an incremental release changes: the new layers and the configurations
                // that name them (an unchanged image keeps its manifest and digest).
                let changed_bytes: u64 = if change_every == 0 || generation == 1 {
                    0
                } else {
                    (0..images)
                        .filter(|number| number % change_every == 0)
                        .map(|_| {
                            own_mib
                                .iter()
                                .map(|mib| synthetic::Layer::new(0, mib * MIB).blob_size())
                                .sum::<u64>()
                        })
                        .sum()
                };
                output.push_str(&format!(
                    "# changed bytes {changed_bytes} (layers, without their configurations)\n"
                ));
                for result in results {
                    let (repository, digest) = result?;
                    lines.push_str(&format!("{}:{tag}\n", relative(&repository)));
                    output.push_str(&format!("{repository}:{tag} {digest}\n"));
                }
                if let Some(path) = list {
                    std::fs::write(&path, lines)
                        .map_err(|source| Failure::Write { path, source })?;
                }
                output
            }
            Command::Verify {
                repository,
                root,
                release,
                last_trusted,
            } => {
                let source: RepositorySource = repository.parse()?;
                let trusted_root = std::fs::read(&root).map_err(|source| Failure::Root {
                    path: root.clone(),
                    source,
                })?;
                let selection = release.map_or(ReleaseSelection::Newest, ReleaseSelection::Version);
                let trust = stackwright::release::Trust {
                    installed: last_trusted.as_ref(),
                    ..stackwright::release::Trust::root(&trusted_root)
                };
                stackwright::release::verify(&source, trust, now, &selection)
                    .await?
                    .to_string()
            }
        })
    })
}

/// A client for a registry, logged in with the docker-style auth file's entry for it.
fn registry(address: &str, plain_http: bool) -> Result<OciRegistry, Failure> {
    let endpoint = RegistryEndpoint::resolve(address, &RegistryOverrides::default(), plain_http);
    let credentials = stackwright::mirror::from_auth_file(&endpoint)?;
    Ok(OciRegistry::new(endpoint, credentials)?)
}
