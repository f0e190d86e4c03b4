//! Command-line types. They hold no logic: doc comments are the help text, and `commands`
//! turns them into resolved settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::network::NetworkMode;
use crate::operation::ReleaseChoice;

/// Installs, upgrades and tears down a self-hosted platform in your AWS account.
#[derive(Debug, Parser)]
#[command(
    name = "stackwright",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The configuration file [default: stackwright.toml] [env: STACKWRIGHT_CONFIG]. Without
    /// this option, STACKWRIGHT_CONFIG_TEXT may hold the configuration itself instead.
    #[arg(long, global = true, value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Print results as text for people or JSON for programs (one object per line for events).
    #[arg(long, global = true, value_enum, env = "STACKWRIGHT_OUTPUT", default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Print only results and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail; repeat for debug (-vv) and trace (-vvv) logs.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never prompt: assume yes where a confirmation would be asked.
    #[arg(short, long, global = true)]
    pub yes: bool,
    /// Print plain lines instead of progress bars.
    #[arg(long, global = true, env = "STACKWRIGHT_NO_PROGRESS")]
    pub no_progress: bool,
    /// The AWS profile to use (overrides AWS_PROFILE).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// The AWS region, overriding the configuration's `instance.region`.
    #[arg(long, global = true, env = "STACKWRIGHT_REGION")]
    pub region: Option<String>,
    /// The control plane's URL, overriding the configuration's `control_plane.url`.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "STACKWRIGHT_CONTROL_PLANE_URL"
    )]
    pub control_plane_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write stackwright.toml by answering a few questions (or from flags with --yes).
    Init(Box<InitArgs>),
    /// Check the account, the quotas, leftover stacks, the certificate and connectivity before
    /// installing (exit code 2 with warnings only, 1 with a failure).
    Preflight(PreflightArgs),
    /// Inspect and check the configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write every stack's CloudFormation template and parameters for the configuration.
    Render(RenderArgs),
    /// Describe what the networking modes need.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Show what `install` would change, stack by stack and resource by resource (exit code 2
    /// when there are changes).
    Plan(ReleaseArgs),
    /// Create or update every stack of the instance, after a plan and a confirmation. Resumes
    /// an install that was interrupted.
    Install(InstallArgs),
    /// The installed release, the lock's holder, and each stack's status, last update and outputs.
    Status,
    /// Delete the instance's stacks, after an inventory and a typed confirmation. Data is kept
    /// unless --delete-data.
    Teardown(TeardownArgs),
    /// Break the instance's lock after showing who holds it (when its holder is gone for good).
    Unlock(UnlockArgs),
    /// Past operations: when, who, what, from and to which release, result and duration.
    History,
    /// Move the instance to a newer release the control plane offers: the decision, the images,
    /// the change sets reviewed (replacements, stateful changes, broader permissions), a
    /// confirmation, then the upgrade. `--unattended` is the scheduled job's way: no prompt,
    /// JSON lines, only what the policy approves (exit 4 when it parks an upgrade).
    Upgrade(UpgradeArgs),
    /// Check signed releases.
    Release {
        #[command(subcommand)]
        command: ReleaseCommand,
    },
    /// Copy a release's images into the instance's ECR repositories (created if missing), or a
    /// list of images from one registry to another as `skopeo sync` does. By digest, resumable:
    /// a second run copies only what is missing.
    Mirror(MirrorArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// Allow a release older than the installed one; its version must be typed to go ahead.
    #[arg(long)]
    pub allow_downgrade: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub preflight: PreflightFirst,
    /// Do not copy the release's images into the instance's repositories first: they are
    /// there already (copied with `stackwright mirror`, or by other means in an air-gapped
    /// account).
    #[arg(long)]
    pub skip_mirror: bool,
}

/// The preflight checks that `install` and `upgrade` run before anything changes.
#[derive(Debug, Args)]
pub struct PreflightFirst {
    /// Go ahead without running the preflight checks first (said so in the output).
    #[arg(long, env = "STACKWRIGHT_SKIP_PREFLIGHT", value_parser = clap::builder::FalseyValueParser::new())]
    pub skip_preflight: bool,
    /// Seconds each connectivity check of the preflight may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub dial_timeout: f64,
}

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// Seconds each connectivity check may take; all are dialled at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub dial_timeout: f64,
}

/// Every answer of `init` can be given as a flag named after its key; with --yes, the
/// defaults fill in what is not given and nothing is asked. The region and the control plane
/// come from the global --region and --control-plane-url.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// instance.name: lowercase letters, digits and hyphens, 3 to 20 characters.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// instance.domain: the DNS name users reach the instance at.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// instance.certificate_arn: an ACM certificate for the domain and its wildcard.
    #[arg(long, value_name = "ARN")]
    pub certificate_arn: Option<String>,
    /// network.mode.
    #[arg(long, value_enum)]
    pub mode: Option<NetworkMode>,
    /// network.vpc_cidr: from a /16 to a /22.
    #[arg(long, value_name = "CIDR")]
    pub vpc_cidr: Option<String>,
    /// network.availability_zones: 2 or 3.
    #[arg(long, value_name = "COUNT")]
    pub availability_zones: Option<u8>,
    /// network.public_services (all-private only).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub public_services: Option<bool>,
    /// The one-time registration token; prefer the environment variable, which `ps` does not
    /// show. Written to the token file beside the configuration, never into it.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "STACKWRIGHT_REGISTRATION_TOKEN",
        hide_env_values = true
    )]
    pub registration_token: Option<String>,
    /// release.channel.
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// upgrade.maintenance_window: weekly hours in UTC, such as "sat,sun 02:00-05:00"; "none"
    /// for none.
    #[arg(long, value_name = "WINDOW")]
    pub maintenance_window: Option<String>,
}

/// How a command that changes the instance treats a lock held by another run.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Wait up to this many seconds for another run to release the lock (default: exit 3 at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Go to this version (through the releases that may not be skipped), instead of the
    /// newest one offered; also retries a version that failed here.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<semver::Version>,
    /// Only report what would happen: exit 2 when an upgrade is available, 0 when up to date.
    #[arg(long, conflicts_with = "unattended")]
    pub check: bool,
    /// Run as the scheduled job: never prompt, log JSON lines, wait for the maintenance
    /// window, apply only what `upgrade.auto_approve` allows.
    #[arg(long)]
    pub unattended: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub preflight: PreflightFirst,
    /// Seconds the platform may take, after its stacks are updated, to have every ECS service
    /// deployed and no unhealthy load balancer target; past that the upgrade has failed.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub health_timeout: u64,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Required: breaking a lock lets another run start while its holder might still run.
    #[arg(long, required = true)]
    pub force: bool,
    /// The ID of the lock to break, as `status` or the refused run showed it.
    #[arg(value_name = "LOCK_ID")]
    pub lock_id: String,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The release's version, verified in the signed release repository
    /// (STACKWRIGHT_RELEASE_REPOSITORY, else the control plane's). By default, the newest
    /// release the control plane offers this instance on its channel.
    #[arg(long, value_name = "VERSION", conflicts_with = "manifest_file")]
    pub release: Option<String>,
    /// A release manifest file that no one signed, instead of a version (development builds
    /// only, and only with --allow-unsigned).
    #[arg(long, value_name = "PATH")]
    pub manifest_file: Option<PathBuf>,
    /// Say that the unsigned --manifest-file is meant.
    #[arg(long, requires = "manifest_file")]
    pub allow_unsigned: bool,
}

impl ReleaseArgs {
    /// The release these arguments name: a version, an unsigned file asked for as such, or by
    /// default the one the control plane offers.
    pub fn choice(&self) -> Result<ReleaseChoice, Error> {
        if let Some(path) = &self.manifest_file {
            if !self.allow_unsigned {
                return Err(Error::Usage {
                    message: format!(
                        "--manifest-file {} names a release manifest no one signed",
                        path.display()
                    ),
                    hint: "add --allow-unsigned to say that is meant (development builds only), or name a signed release with --release VERSION".into(),
                });
            }
            return Ok(ReleaseChoice::UnsignedFile(path.clone()));
        }
        let Some(text) = &self.release else {
            return Ok(ReleaseChoice::Offered);
        };
        match semver::Version::parse(text.trim_start_matches('v')) {
            Ok(version) => Ok(ReleaseChoice::Version(version)),
            Err(error) => Err(Error::Usage {
                message: format!(
                    "--release takes a release's version, and \"{text}\" is not one ({error})"
                ),
                hint: if text.ends_with(".json") || std::path::Path::new(text).exists() {
                    format!(
                        "name the release by its version (--release 1.2.0); a manifest file no one signed is read only by development builds: --manifest-file {text} --allow-unsigned"
                    )
                } else {
                    "name the release by its version, such as --release 1.2.0".into()
                },
            }),
        }
    }

    /// The release, where one must be named.
    pub fn named(&self) -> Result<ReleaseChoice, Error> {
        match self.choice()? {
            ReleaseChoice::Offered => Err(Error::Usage {
                message: "no release was named".into(),
                hint: "pass --release VERSION".into(),
            }),
            choice => Ok(choice),
        }
    }
}

#[derive(Debug, Args)]
pub struct TeardownArgs {
    /// Also delete the data stack and everything in it: buckets are emptied, tables dropped.
    #[arg(long)]
    pub delete_data: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the JSON Schema of stackwright.toml.
    Schema,
    /// Check the configuration file and report every problem with its fix.
    Validate,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Directory to write `<stack>.template.yaml` and `<stack>.parameters.json` into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The release whose components the platform stack runs.
    #[command(flatten)]
    pub release: ReleaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// The egress and ingress allow-list a networking mode needs.
    Requirements(RequirementsArgs),
}

#[derive(Debug, Args)]
pub struct RequirementsArgs {
    /// The mode to describe; defaults to the configuration's.
    #[arg(long, value_enum)]
    pub mode: Option<NetworkMode>,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Verify a signed release repository as an install would (signatures, expiry, rollback,
    /// key rotation) and print what was verified or why it was refused.
    Verify(ReleaseVerifyArgs),
}

#[derive(Debug, Args)]
pub struct ReleaseVerifyArgs {
    /// The release repository: a directory holding metadata/ and targets/, or an http:// URL
    /// on a loopback address.
    #[arg(long, value_name = "PATH|URL", env = "STACKWRIGHT_RELEASE_REPOSITORY")]
    pub repository: String,
    /// The release to verify; the newest the repository lists by default.
    #[arg(long, value_name = "VERSION")]
    pub release: Option<semver::Version>,
    /// The release already installed: anything older is refused as a rollback.
    #[arg(long, value_name = "VERSION")]
    pub installed: Option<semver::Version>,
    /// The root metadata to trust instead of the one built in (development builds only).
    #[cfg(feature = "dev-root")]
    #[arg(long, value_name = "PATH", env = "STACKWRIGHT_TRUSTED_ROOT")]
    pub trusted_root: Option<PathBuf>,
}

impl ReleaseVerifyArgs {
    /// The root file `--trusted-root` names: always none in a build for customers, which trusts
    /// only the root it was built with.
    pub fn trusted_root(&self) -> Option<&std::path::Path> {
        #[cfg(feature = "dev-root")]
        let path = self.trusted_root.as_deref();
        #[cfg(not(feature = "dev-root"))]
        let path = None;
        path
    }
}

/// Either `--release` (into the instance's ECR repositories, tagged with the release's version)
/// or `--images` with `--from` and `--to`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The release whose images to copy.
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// A file listing the images to copy, one `repository:tag` or `repository@sha256:<digest>`
    /// per line (# starts a comment).
    #[arg(long, value_name = "FILE", requires_all = ["from", "to"], conflicts_with_all = ["release", "manifest_file"])]
    pub images: Option<PathBuf>,
    /// The registry to copy the listed images from.
    #[arg(long, value_name = "HOST[:PORT]", requires = "images")]
    pub from: Option<String>,
    /// The registry to copy them to; repository paths are kept under PREFIX.
    #[arg(long, value_name = "HOST[:PORT][/PREFIX]", requires = "images")]
    pub to: Option<String>,
    /// Speak plain HTTP, without TLS, to registries (local registries only).
    #[arg(long)]
    pub plain_http: bool,
    /// Blobs transferred, and images worked on, at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}
