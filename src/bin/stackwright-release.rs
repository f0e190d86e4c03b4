//! `stackwright-release`: the vendor's side of signed releases, for development and tests.
//! Generates keys, builds and re-signs a release repository, rotates keys, and verifies a
//! repository as an installer would. The work is in `stackwright::release::signing` and
//! `stackwright::release::trust`; this file parses and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use semver::Version;
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
        /// How long the targets, snapshot and timestamp metadata stay valid, such as 730d or 2y
        #[arg(long, default_value = "730d")]
        expires: String,
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
        /// How long the new root and metadata stay valid
        #[arg(long, default_value = "730d")]
        expires: String,
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
            } => {
                let expires = signing::expiry(now, &expires)?;
                signing::build_repository(manifest.as_deref(), &keys, &out, expires)
                    .await?
                    .to_string()
            }
            Command::Rotate {
                keys,
                new_keys,
                repository,
                expires,
            } => {
                let expires = signing::expiry(now, &expires)?;
                let (keys, repository) =
                    signing::rotate_keys(&keys, &new_keys, &repository, expires).await?;
                format!("{keys}{repository}")
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
                stackwright::release::verify(
                    &source,
                    &trusted_root,
                    now,
                    last_trusted.as_ref(),
                    &selection,
                )
                .await?
                .to_string()
            }
        })
    })
}
