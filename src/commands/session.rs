//! The command line's side of an operation: the AWS adapters connected for the instance's
//! region, the terminal's approver and renderer, and the [`Session`] built from them. The
//! ports an operation needs beyond the core's own traits are implemented here over AWS.

use std::time::Duration;

use async_trait::async_trait;

use super::gate::CliGate;
use super::preflight::check;
use super::terminal::Terminal;
use crate::aws::{Aws, CallerIdentity, CloudFormation, DynamoStateStore, IdentitySecret};
use crate::config::ConfigFile;
use crate::control_plane::{ControlPlane, ControlPlaneError, HttpControlPlane};
use crate::error::Error;
use crate::mirror::{self, CopyOptions, MirrorSettings, MirrorSummary, RegistryOverrides};
use crate::operation::{
    EventSink, HealthProbe, ImageMirror, MirrorEvents, PreflightCheck, RegistrationToken,
    ReleaseSettings, Session,
};
use crate::output::Printer;
use crate::preflight::PreflightReport;
use crate::provision::{self, DeployError, StackResource};
use crate::release::ReleaseManifest;
use crate::settings::GlobalSettings;
use crate::state::{LockSettings, SystemClock};
use crate::upgrade::Health;

/// The dial timeout of commands that run no preflight.
pub(super) const DIAL_TIMEOUT: f64 = 5.0;

/// The instance's account, connected: every adapter a session borrows.
pub(super) struct Connected {
    pub(super) config: ConfigFile,
    pub(super) aws: Aws,
    pub(super) deployer: CloudFormation,
    pub(super) identity: CallerIdentity,
    pub(super) state: DynamoStateStore,
    secret: IdentitySecret,
    images: AwsImages,
    registration_token: RegistrationToken,
    releases: ReleaseSettings,
}

/// Loads the configuration and connects to its account and region.
pub(super) async fn connect(settings: &GlobalSettings) -> Result<Connected, Error> {
    let config = settings.load_config()?;
    let region = config.instance.region.clone();
    let wrap = |source| Error::Provision(provision::ProvisionError::deploy("preflight", source));
    let aws = Aws::connect(&region, settings.profile.as_deref())
        .await
        .map_err(wrap)?;
    let identity = aws.caller_identity().await.map_err(wrap)?;
    let registration_token = RegistrationToken::beside(
        &settings.config_path,
        &config.control_plane.registration_token_file,
        std::env::var("STACKWRIGHT_REGISTRATION_TOKEN").ok(),
    );
    Ok(Connected {
        deployer: aws.cloudformation(),
        state: aws.state(&config.instance.name),
        secret: IdentitySecret::new(&aws, &config.instance.name),
        images: AwsImages {
            aws: aws.clone(),
            instance: config.instance.name.clone(),
            profile: settings.profile.clone(),
            options: CopyOptions::default(),
            plain_http: false,
        },
        registration_token,
        releases: settings.release_settings(),
        config,
        aws,
        identity,
    })
}

/// What a session borrows from the command that opens it: the control plane's client, the
/// preflight, the approver and the terminal.
pub(super) struct Frame<'a> {
    control_plane: Result<HttpControlPlane, ControlPlaneError>,
    preflight: AwsPreflight<'a>,
    approver: CliGate,
    pub(super) terminal: Terminal<'a>,
}

impl Connected {
    /// The parts of a session that talk to people and to the control plane.
    pub(super) fn frame<'a>(
        &'a self,
        printer: &'a Printer,
        assume_yes: bool,
        dial_timeout: f64,
    ) -> Frame<'a> {
        Frame {
            control_plane: HttpControlPlane::for_url(&self.config.control_plane.url),
            preflight: AwsPreflight {
                config: &self.config,
                aws: &self.aws,
                dial_timeout,
            },
            approver: CliGate { assume_yes },
            terminal: Terminal::new(printer),
        }
    }

    pub(super) fn session<'a>(
        &'a self,
        frame: &'a Frame<'a>,
        lock: LockSettings,
    ) -> Session<'a, CloudFormation, DynamoStateStore> {
        let control_plane: Result<&dyn ControlPlane, ControlPlaneError> = match &frame.control_plane
        {
            Ok(plane) => Ok(plane),
            Err(error) => Err(error.clone()),
        };
        Session {
            config: &self.config,
            caller: &self.identity,
            region: &self.aws.region,
            deployer: &self.deployer,
            state: &self.state,
            images: &self.images,
            health: &self.aws,
            identity: &self.secret,
            control_plane,
            registration_token: &self.registration_token,
            releases: &self.releases,
            preflight: &frame.preflight,
            approver: &frame.approver,
            clock: &SystemClock,
            events: &frame.terminal,
            lock,
        }
    }
}

/// The release's images, copied by the copy engine with ECR's credentials.
pub(super) struct AwsImages {
    pub(super) aws: Aws,
    pub(super) instance: String,
    pub(super) profile: Option<String>,
    pub(super) options: CopyOptions,
    pub(super) plain_http: bool,
}

#[async_trait(?Send)]
impl ImageMirror for AwsImages {
    async fn mirror_release(
        &self,
        release: &ReleaseManifest,
        events: &dyn EventSink,
    ) -> Result<MirrorSummary, Error> {
        let settings = MirrorSettings {
            instance: self.instance.clone(),
            region: self.aws.region.clone(),
            profile: self.profile.clone(),
            options: self.options.clone(),
            plain_http: self.plain_http,
            overrides: RegistryOverrides::from_env()?,
        };
        Ok(mirror::mirror_release(&self.aws, &settings, release, &MirrorEvents(events)).await?)
    }
}

/// ECS's and the load balancer's view of the platform's health.
#[async_trait(?Send)]
impl HealthProbe for Aws {
    async fn watch(
        &self,
        resources: &[StackResource],
        timeout: Duration,
        on_wait: &(dyn for<'health> Fn(&'health Health) + Sync),
    ) -> Result<Health, DeployError> {
        crate::aws::health::watch(self, resources, timeout, |health: &Health| on_wait(health)).await
    }
}

/// The preflight checks against the instance's account, with the dial timeout asked for.
pub(super) struct AwsPreflight<'a> {
    config: &'a ConfigFile,
    aws: &'a Aws,
    dial_timeout: f64,
}

#[async_trait(?Send)]
impl PreflightCheck for AwsPreflight<'_> {
    async fn run(&self) -> Result<PreflightReport, Error> {
        check(self.config, Ok(self.aws), self.dial_timeout).await
    }
}
