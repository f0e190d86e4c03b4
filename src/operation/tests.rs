//! The operations against in-memory fakes of every port: the upgrade paths that the emulator
//! tests reach only through moto by accident of where the code lived (a reviewed upgrade, a
//! parked one, a rolled-back one) shown from the outcome, the events, the state and what the
//! control plane was told.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use semver::Version;

use super::fakes::{FakeCloudFormation, FakeControlPlane, MemoryStateStore};
use super::*;
use crate::config::{AutoApprove, ConfigFile};
use crate::control_plane::api::{OfferedRelease, Outcome, Registration, SecretToken};
use crate::mirror::MirrorSummary;
use crate::preflight::PreflightReport;
use crate::provision::{DeployError, StackResource};
use crate::release::ReleaseManifest;
use crate::state::{InstallationStatus, OperationResult, StateStore, SystemClock};
use crate::upgrade::{Decision, Health};

fn repository_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Remembers which releases' images it was asked to copy.
#[derive(Default)]
struct RecordingMirror(Mutex<Vec<Version>>);

#[async_trait(?Send)]
impl ImageMirror for RecordingMirror {
    async fn mirror_release(
        &self,
        release: &ReleaseManifest,
        _events: &dyn EventSink,
    ) -> Result<MirrorSummary, Error> {
        self.0
            .lock()
            .expect("not poisoned")
            .push(release.version.clone());
        Ok(MirrorSummary::default())
    }
}

struct Healthy;

#[async_trait(?Send)]
impl HealthProbe for Healthy {
    async fn watch(
        &self,
        _resources: &[StackResource],
        _timeout: Duration,
        _on_wait: &(dyn for<'health> Fn(&'health Health) + Sync),
    ) -> Result<Health, DeployError> {
        Ok(Health::Healthy {
            summary: "3 services stable".into(),
        })
    }
}

/// Preflight is skipped in these tests; asking for it is a defect.
struct NoPreflight;

#[async_trait(?Send)]
impl PreflightCheck for NoPreflight {
    async fn run(&self) -> Result<PreflightReport, Error> {
        panic!("preflight was not asked for")
    }
}

struct Yes;

#[async_trait(?Send)]
impl Approver for Yes {
    async fn confirm(&self, _question: &str) -> bool {
        true
    }
    async fn confirm_typed(&self, _prompt: &str, _expected: &str) -> bool {
        true
    }
    fn confirm_now(&self, _question: &str) -> bool {
        true
    }
}

#[derive(Default)]
struct MemoryIdentity(Mutex<Option<crate::control_plane::StoredIdentity>>);

#[async_trait]
impl crate::control_plane::IdentityStore for MemoryIdentity {
    fn name(&self) -> &str {
        "stackwright/acme-dev/control-plane"
    }
    async fn read(&self) -> Result<Option<crate::control_plane::StoredIdentity>, DeployError> {
        Ok(self.0.lock().expect("not poisoned").clone())
    }
    async fn write(
        &self,
        identity: &crate::control_plane::StoredIdentity,
    ) -> Result<(), DeployError> {
        *self.0.lock().expect("not poisoned") = Some(identity.clone());
        Ok(())
    }
}

/// One instance in memory: the demo configuration, every port faked.
struct Instance {
    config: ConfigFile,
    caller: crate::cloud::CallerIdentity,
    deployer: FakeCloudFormation,
    state: MemoryStateStore,
    images: RecordingMirror,
    identity: MemoryIdentity,
    control_plane: FakeControlPlane,
    token: RegistrationToken,
    releases: ReleaseSettings,
    events: Recorder,
}

impl Instance {
    fn new(auto_approve: AutoApprove) -> Self {
        let mut config = ConfigFile::load(&repository_file("examples/demo.toml"))
            .expect("the demo configuration loads");
        config.upgrade.auto_approve = auto_approve;
        config.upgrade.maintenance_window = None;
        let registration = Registration {
            instance_id: "instance-1".into(),
            organization_id: "organization-1".into(),
            token: SecretToken::new("instance-token"),
            expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24),
        };
        Instance {
            state: MemoryStateStore::new(&config.instance.name),
            config,
            caller: crate::cloud::CallerIdentity {
                account: "123456789012".into(),
                principal: "arn:aws:iam::123456789012:user/platform".into(),
            },
            deployer: FakeCloudFormation::new(),
            images: RecordingMirror::default(),
            identity: MemoryIdentity::default(),
            control_plane: FakeControlPlane::new("registration-token", registration),
            token: RegistrationToken {
                from_environment: Some("registration-token".into()),
                file: repository_file("no-such-token-file"),
            },
            // The offers name the signed repository in the source tree: pin it.
            releases: ReleaseSettings {
                repository: Some(
                    repository_file("manifests/repository")
                        .display()
                        .to_string(),
                ),
                ..ReleaseSettings::default()
            },
            events: Recorder::default(),
        }
    }

    fn session(&self) -> Session<'_, FakeCloudFormation, MemoryStateStore> {
        Session {
            config: &self.config,
            caller: &self.caller,
            region: "us-east-1",
            deployer: &self.deployer,
            state: &self.state,
            images: &self.images,
            health: &Healthy,
            identity: &self.identity,
            control_plane: Ok(&self.control_plane),
            registration_token: &self.token,
            releases: &self.releases,
            preflight: &NoPreflight,
            approver: &Yes,
            clock: &SystemClock,
            events: &self.events,
            lock: crate::state::LockSettings::default(),
        }
    }

    /// Installs 1.0.0, then has the control plane offer 1.1.0 from the signed repository.
    async fn installed_with_an_offer(auto_approve: AutoApprove) -> Self {
        let instance = Instance::new(auto_approve);
        let options = InstallOptions {
            release: ReleaseChoice::UnsignedFile(repository_file("manifests/releases/1.0.0.json")),
            allow_downgrade: false,
            skip_mirror: false,
            skip_preflight: true,
        };
        let outcome = install(&instance.session(), &options)
            .await
            .expect("1.0.0 installs");
        assert!(matches!(outcome, InstallOutcome::Installed(_)));
        let repository = repository_file("manifests/repository")
            .display()
            .to_string();
        instance.control_plane.set_offer(
            &instance.config.release.channel,
            vec![OfferedRelease {
                version: Version::new(1, 1, 0),
                urgent: false,
                target: "releases/1.1.0.json".into(),
            }],
            &repository,
        );
        instance
    }

    fn unattended() -> UpgradeOptions {
        UpgradeOptions {
            unattended: true,
            health_timeout: Duration::from_secs(1),
            skip_preflight: true,
            ..UpgradeOptions::default()
        }
    }

    async fn installed_release(&self) -> (Option<String>, InstallationStatus, Vec<String>) {
        let record = self
            .state
            .installation()
            .await
            .expect("readable")
            .expect("a record");
        (
            record.installed_release,
            record.status,
            record.failed_releases,
        )
    }

    fn upgrade_reports(&self) -> Vec<(Outcome, String)> {
        self.control_plane
            .reports()
            .into_iter()
            .filter(|report| report.kind == crate::control_plane::api::OperationKind::Upgrade)
            .map(|report| (report.outcome, report.to_version.to_string()))
            .collect()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn an_offered_release_is_reviewed_approved_by_the_policy_and_applied() {
    runtime().block_on(async {
        let instance = Instance::installed_with_an_offer(AutoApprove::Safe).await;
        let outcome = upgrade(&instance.session(), &Instance::unattended()).await.expect("upgrades");
        assert!(matches!(outcome, UpgradeOutcome::Upgraded { release } if release == Version::new(1, 1, 0)));
        let events = instance.events.events();
        assert!(events.iter().any(|event| matches!(event, Event::Decision { decision, .. } if matches!(**decision, Decision::Upgrade { .. }))));
        let review = events.iter().find_map(|event| match event {
            Event::Plan { review, plan } => Some((review.clone(), plan.clone())),
            _ => None,
        });
        let (review, plan) = review.expect("the plan and its review are told");
        assert!(plan.has_changes(), "1.1.0 changes the platform stack");
        assert!(review.approved_by(AutoApprove::Safe), "{review}");
        assert_eq!(
            instance.installed_release().await,
            (Some("1.1.0".into()), InstallationStatus::Installed, Vec::new())
        );
        assert_eq!(instance.upgrade_reports(), [(Outcome::Succeeded, "1.1.0".into())]);
        let mirrored = instance.images.0.lock().expect("not poisoned").clone();
        assert_eq!(mirrored, [Version::new(1, 0, 0), Version::new(1, 1, 0)]);
        let history = instance.state.history().await.expect("readable");
        assert_eq!(history[0].result, OperationResult::Succeeded);
        assert_eq!(history[0].to_release.as_deref(), Some("1.1.0"));
        // Every JSON line an upgrade emits keeps its documented name.
        let names: Vec<String> = events
            .iter()
            .filter_map(|event| event.json())
            .filter_map(|line| line["event"].as_str().map(str::to_owned))
            .collect();
        for name in ["decision", "plan", "stack_started", "stack_finished", "health", "upgrade_finished"] {
            assert!(names.iter().any(|found| found == name), "{name} missing from {names:?}");
        }
    });
}

#[test]
fn a_release_the_policy_would_not_approve_is_parked_and_nothing_is_executed() {
    runtime().block_on(async {
        let instance = Instance::installed_with_an_offer(AutoApprove::None).await;
        let executed_before = instance.deployer.writes().iter().filter(|write| write.starts_with("ExecuteChangeSet")).count();
        let outcome = upgrade(&instance.session(), &Instance::unattended()).await.expect("parks");
        assert!(matches!(outcome, UpgradeOutcome::Parked { release } if release == Version::new(1, 1, 0)));
        let executed_after = instance.deployer.writes().iter().filter(|write| write.starts_with("ExecuteChangeSet")).count();
        assert_eq!(executed_before, executed_after, "a parked upgrade executes no change set");
        assert!(instance.deployer.open_change_sets().is_empty(), "its change sets are discarded");
        assert_eq!(
            instance.installed_release().await,
            (Some("1.0.0".into()), InstallationStatus::Installed, Vec::new())
        );
        assert_eq!(instance.upgrade_reports(), [(Outcome::Parked, "1.1.0".into())]);
        let history = instance.state.history().await.expect("readable");
        assert_eq!(history[0].result, OperationResult::Parked);
        assert!(instance.state.journal().await.expect("readable").is_none(), "no journal is left");
    });
}

#[test]
fn a_rolled_back_upgrade_is_recorded_reported_and_skipped_on_the_next_run() {
    runtime().block_on(async {
        let instance = Instance::installed_with_an_offer(AutoApprove::Safe).await;
        let platform =
            crate::stacks::StackKind::Platform.stack_name(&instance.config.instance.name);
        instance.deployer.fail_next_update(
            &platform,
            "ServerTaskDefinition",
            "the circuit breaker tripped",
        );
        let error = upgrade(&instance.session(), &Instance::unattended())
            .await
            .expect_err("fails");
        assert!(
            matches!(&error, Error::Provision(error) if error.rolled_back()),
            "{error}"
        );
        assert!(
            error.to_string().contains("the circuit breaker tripped"),
            "{error}"
        );
        let finished = instance
            .events
            .events()
            .into_iter()
            .find_map(|event| match event {
                Event::UpgradeFinished { outcome, .. } => Some(outcome),
                _ => None,
            });
        assert_eq!(finished, Some(Outcome::RolledBack));
        assert_eq!(
            instance.installed_release().await,
            (
                Some("1.0.0".into()),
                InstallationStatus::Installed,
                vec!["1.1.0".to_owned()]
            )
        );
        assert_eq!(
            instance.upgrade_reports(),
            [(Outcome::RolledBack, "1.1.0".into())]
        );
        assert_eq!(
            instance.state.history().await.expect("readable")[0].result,
            OperationResult::RolledBack
        );
        // The next run leaves 1.1.0 aside and writes nothing to CloudFormation.
        let writes = instance.deployer.writes().len();
        let outcome = upgrade(&instance.session(), &Instance::unattended())
            .await
            .expect("decides");
        assert!(matches!(outcome, UpgradeOutcome::NothingToDo));
        assert_eq!(instance.deployer.writes().len(), writes);
    });
}
