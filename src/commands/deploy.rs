//! `plan`, `install`, `status` and `teardown`: the commands that talk to CloudFormation, the
//! mutating ones under the instance's lock and journal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::json;

use super::reporter::{CliGate, CliReporter};
use crate::aws::{Aws, CallerIdentity, CloudFormation, DynamoStateStore};
use crate::cli::{InstallArgs, ReleaseArgs, TeardownArgs};
use crate::config::ConfigFile;
use crate::error::{Error, ExitStatus};
use crate::mirror::{self, CopyOptions, MirrorSettings, RegistryOverrides, SilentReporter};
use crate::output::{Printer, count, table};
use crate::provision::{self, Gate, Plan, ProvisionError, StackDeployer, StackJournal};
use crate::release::ReleaseManifest;
use crate::render::{self, RenderedStack};
use crate::settings::GlobalSettings;
use crate::stacks::StackKind;
use crate::state::{
    self, Clock, Holder, Installation, InstallationStatus, Journal, LockSettings, Operation,
    OperationInputs, OperationKind, OperationResult, Phase, ResumeDecision, StateError, StateStore,
    StateWrite, SystemClock,
};

/// The AWS side of a command: clients for the instance's region and who they act as.
pub(super) struct Session {
    pub(super) config: ConfigFile,
    pub(super) aws: Aws,
    pub(super) deployer: CloudFormation,
    pub(super) identity: CallerIdentity,
    pub(super) state: DynamoStateStore,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the async runtime starts")
}

/// Runs a command's future to its end. A prompt still waiting on the terminal (a second Ctrl-C
/// stops the command while a confirmation is asked) must not keep the process alive, so the
/// runtime does not wait for it.
pub(super) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let runtime = runtime();
    let output = runtime.block_on(future);
    runtime.shutdown_background();
    output
}

pub(super) async fn connect(settings: &GlobalSettings) -> Result<Session, Error> {
    let config = settings.load_config()?;
    let region = config.instance.region.clone();
    let wrap = |source| Error::Provision(provision::ProvisionError::deploy("preflight", source));
    let aws = Aws::connect(&region, settings.profile.as_deref())
        .await
        .map_err(wrap)?;
    let identity = aws.caller_identity().await.map_err(wrap)?;
    let deployer = aws.cloudformation();
    let state = aws.state(&config.instance.name);
    Ok(Session {
        config,
        aws,
        deployer,
        identity,
        state,
    })
}

async fn render_release(
    settings: &GlobalSettings,
    printer: &Printer,
    session: &Session,
    release: Option<&str>,
) -> Result<(ReleaseManifest, Vec<RenderedStack>), Error> {
    let config = &session.config;
    let release = match release {
        Some(release) => release.to_owned(),
        None => super::upgrade::offered_release(settings, session, printer)
            .await?
            .to_string(),
    };
    let release = super::release::load(settings, Some(config), &release).await?;
    let stacks = render::render_all(config, &release)?;
    Ok((release, stacks))
}

fn print_plan(printer: &Printer, plan: &Plan) {
    if printer.json_mode() {
        printer.data(plan);
    } else {
        printer.result(plan);
    }
}

pub fn plan(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &ReleaseArgs,
) -> Result<ExitStatus, Error> {
    block_on(async {
        let session = connect(settings).await?;
        let (_, stacks) =
            render_release(settings, printer, &session, args.release.as_deref()).await?;
        let plan = provision::plan(
            &session.deployer,
            &session.config.instance.name,
            &stacks,
            &session.aws.region,
            false,
        )
        .await?;
        print_plan(printer, &plan);
        Ok(if plan.has_changes() {
            ExitStatus::Changes
        } else {
            ExitStatus::Success
        })
    })
}

pub fn install(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &InstallArgs,
) -> Result<ExitStatus, Error> {
    // Refuse early, before any call, when nobody could answer the confirmation.
    if !settings.assume_yes && !CliGate::interactive() {
        return Err(Error::Unconfirmed {
            action: "install".into(),
        });
    }
    let lock_settings = settings.lock_settings(args.lock.wait)?;
    block_on(async {
        let started = Instant::now();
        let session = connect(settings).await?;
        let config = &session.config;
        let (release, stacks) =
            render_release(settings, printer, &session, args.release.release.as_deref()).await?;
        super::preflight::before_install(printer, &session, &args.preflight).await?;
        printer.status(format!(
            "Installing {} (release {}, {} mode) into account {} as {}, region {}",
            config.instance.name,
            release.version,
            config.network.mode,
            session.identity.account,
            session.identity.principal,
            session.aws.region
        ));
        let inputs = OperationInputs {
            kind: OperationKind::Install,
            release: Some(release.version.to_string()),
            config_hash: config_hash(config),
            delete_data: false,
        };
        locked(
            &session,
            printer,
            &lock_settings,
            &inputs,
            async |operation, installation, begun| {
                install_locked(
                    settings,
                    printer,
                    &session,
                    (!args.skip_mirror).then_some(&release),
                    &stacks,
                    operation,
                    installation,
                    begun,
                    started,
                )
                .await
            },
        )
        .await
    })
}

#[allow(clippy::too_many_arguments)]
async fn install_locked(
    settings: &GlobalSettings,
    printer: &Printer,
    session: &Session,
    mirror_release: Option<&ReleaseManifest>,
    stacks: &[RenderedStack],
    operation: &Operation<'_, DynamoStateStore>,
    installation: Option<Installation>,
    begun: Begun,
    started: Instant,
) -> Result<ExitStatus, Error> {
    let config = &session.config;
    let journal = operation.journal().await;
    let plan = provision::plan(
        &session.deployer,
        &config.instance.name,
        stacks,
        &session.aws.region,
        true,
    )
    .await?;
    if !plan.has_changes() && begun == Begun::Fresh {
        // Nothing to do, and no operation to record; the record is brought up to date if an
        // earlier version or a failure left it behind.
        let record = installation_record(
            config,
            &journal,
            installation.as_ref(),
            plan.stacks
                .iter()
                .map(|stack| stack.stack_name.clone())
                .collect(),
            operation.now(),
        );
        let current = installation.as_ref().is_some_and(|found| {
            found.installed_release == record.installed_release
                && found.config_hash == record.config_hash
                && found.status == record.status
                && found.stacks == record.stacks
        });
        if !current {
            operation
                .write(vec![StateWrite::Installation(record)])
                .await?;
        }
        super::upgrade::after_install(settings, printer, session, "", None, None).await;
        if printer.json_mode() {
            printer.data(&json!({ "changed": false, "plan": plan }));
        } else {
            printer.result(format!(
                "Nothing to change: all {} stacks of {} are up to date.",
                plan.stacks.len(),
                config.instance.name
            ));
        }
        return Ok(ExitStatus::Success);
    }
    if !printer.json_mode() {
        if let Some(introduction) =
            super::story::introduction(config, &plan, &session.identity.account)
        {
            printer.status(introduction);
            printer.status("");
        }
        printer.status(&plan);
    }
    let gate = CliGate {
        assume_yes: settings.assume_yes,
    };
    if !confirm(&gate, "Apply this plan?").await {
        discard_change_sets(&session.deployer, &plan).await;
        return Err(Error::Declined {
            action: "install".into(),
        });
    }
    let images = mirror_release.map(|release| Images {
        settings,
        printer,
        session,
        release,
    });
    let applied = apply_plan(session, printer, operation, &plan, stacks, &gate, images).await;
    let report = match applied {
        Ok(report) => report,
        Err(error) => return Err(record_failure(operation, installation, error).await),
    };
    let record = installation_record(
        config,
        &journal,
        installation.as_ref(),
        report
            .stacks
            .iter()
            .map(|stack| stack.stack_name.clone())
            .collect(),
        operation.now(),
    );
    let entry = journal.finish(OperationResult::Succeeded, None, operation.now());
    operation
        .finish(vec![
            StateWrite::Installation(record),
            StateWrite::History(entry),
        ])
        .await?;
    super::upgrade::after_install(
        settings,
        printer,
        session,
        &journal.operation_id,
        journal.from_release.as_deref(),
        journal.to_release.as_deref(),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let load_balancer = report
        .output("LoadBalancerDnsName")
        .unwrap_or("(not reported)")
        .to_owned();
    let url = report
        .output("InstanceUrl")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("https://{}", config.instance.domain));
    let mut records = vec![
        (config.instance.domain.clone(), load_balancer.clone()),
        (
            format!("*.{}", config.instance.domain),
            load_balancer.clone(),
        ),
    ];
    if let Some(public) = report.output("PublicServicesDnsName") {
        records.push((
            format!("{} (public zone)", config.instance.domain),
            public.to_owned(),
        ));
    }
    let updater = StackKind::Updater.stack_name(&config.instance.name);
    let in_account = report
        .stacks
        .iter()
        .any(|stack| stack.stack_name == updater);
    let upgrade_job =
        super::story::UpgradeJob::from_config(config, in_account, jiff::Timestamp::now());
    if printer.json_mode() {
        printer.data(&json!({
            "changed": true,
            "seconds": elapsed,
            "operation_id": journal.operation_id,
            "url": url,
            "load_balancer": load_balancer,
            "dns_records": records.iter().map(|(name, target)| json!({ "name": name, "type": "CNAME", "target": target })).collect::<Vec<_>>(),
            "stacks": report.stacks,
            "upgrade_job": upgrade_job,
        }));
    } else {
        printer.result(format!(
            "Installed {} in {elapsed:.1} s.",
            config.instance.name
        ));
        printer.result(table(
            ["", ""],
            [
                ["URL".to_owned(), url],
                ["Load balancer".to_owned(), load_balancer],
            ],
        ));
        printer.result("");
        printer.result(format!(
            "DNS records to create in the zone of {} (a CNAME each, or an alias record at a zone apex):",
            config.instance.domain
        ));
        printer.result(table(
            ["NAME", "TYPE", "TARGET"],
            records
                .into_iter()
                .map(|(name, target)| [name, "CNAME".to_owned(), target]),
        ));
        if config.instance.certificate_arn.is_none() {
            printer.result("The certificate was requested from ACM: its DNS validation records (aws acm describe-certificate) must exist too before it is issued.");
        }
        printer.result("");
        printer.result(upgrade_job.describe(&config.control_plane.url));
    }
    Ok(ExitStatus::Success)
}

/// The installation record after an install of the journal's release.
/// The record after an install. What an earlier record learned stays: the newest trusted root
/// it reached, and the releases that failed here (but the one just installed).
fn installation_record(
    config: &ConfigFile,
    journal: &Journal,
    previous: Option<&Installation>,
    stacks: Vec<String>,
    now: jiff::Timestamp,
) -> Installation {
    let failed_releases = previous
        .map(|record| record.failed_releases.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|version| Some(version) != journal.to_release.as_ref())
        .collect();
    Installation {
        installed_release: journal.to_release.clone(),
        networking_mode: config.network.mode.to_string(),
        stacks,
        status: InstallationStatus::Installed,
        config_hash: journal.config_hash.clone(),
        operation_id: journal.operation_id.clone(),
        updated_at: now,
        failed_releases,
        trusted_root: previous.and_then(|record| record.trusted_root.clone()),
    }
}

/// The SHA-256 of the configuration as it resolved, so that a changed file is recognised.
pub(super) fn config_hash(config: &ConfigFile) -> String {
    render::content_digest(&serde_json::to_string(config).expect("the configuration serializes"))
}

/// Asks without stalling the lease's renewal, which runs on the same task.
pub(super) async fn confirm(gate: &CliGate, question: &str) -> bool {
    let gate = gate.clone();
    let question = question.to_owned();
    tokio::task::spawn_blocking(move || gate.confirm(&question))
        .await
        .unwrap_or(false)
}

/// A failed operation: recorded in history and the installation record, its journal cleared,
/// unless it was stopped (signal, lost lease), which leaves the journal for the next run. An
/// operation that failed before its first phase changed nothing and leaves no trace.
pub(super) async fn record_failure(
    operation: &Operation<'_, DynamoStateStore>,
    installation: Option<Installation>,
    error: Error,
) -> Error {
    let stopped = matches!(
        &error,
        Error::State(StateError::Interrupted | StateError::LeaseLost { .. })
            | Error::Provision(ProvisionError::State(
                StateError::Interrupted | StateError::LeaseLost { .. }
            ))
    );
    if stopped {
        return error;
    }
    let journal = operation.journal().await;
    if journal.completed.is_empty() {
        return error;
    }
    // After a completed rollback the instance runs what it ran before: its status stands.
    let rolled_back = matches!(&error, Error::Provision(error) if error.rolled_back());
    let entry = journal.finish(
        if rolled_back {
            OperationResult::RolledBack
        } else {
            OperationResult::Failed
        },
        Some(error.to_string()),
        operation.now(),
    );
    let mut writes = vec![StateWrite::History(entry)];
    if let Some(mut installation) = installation.filter(|_| journal.kind != OperationKind::Teardown)
    {
        if !rolled_back {
            installation.status = InstallationStatus::Failed;
        }
        installation.operation_id = journal.operation_id.clone();
        installation.updated_at = operation.now();
        writes.push(StateWrite::Installation(installation));
    }
    if let Err(write_error) = operation.finish(writes).await {
        tracing::warn!(%write_error, "could not record the failed operation");
    }
    error
}

/// Applies a plan under `operation`: the plan phase recorded, each stack journalled as it is
/// done, and `images` (when given) copied right before the first stack that runs them. The
/// caller records a failure, knowing what it changed.
pub(super) async fn apply_plan(
    session: &Session,
    printer: &Printer,
    operation: &Operation<'_, DynamoStateStore>,
    plan: &Plan,
    stacks: &[RenderedStack],
    gate: &CliGate,
    images: Option<Images<'_>>,
) -> Result<provision::ApplyReport, Error> {
    operation.complete(Phase::Plan, |_| {}).await?;
    let hook = ImagesFirst {
        journal: JournalHook(operation),
        images,
        mirrored: AtomicBool::new(false),
    };
    Ok(provision::apply_journalled(
        &session.deployer,
        plan,
        stacks,
        &session.aws.region,
        &CliReporter::new(printer),
        gate,
        &hook,
    )
    .await?)
}

/// The release's images, to be copied into the instance's repositories.
pub(super) struct Images<'a> {
    pub(super) settings: &'a GlobalSettings,
    pub(super) printer: &'a Printer,
    pub(super) session: &'a Session,
    pub(super) release: &'a ReleaseManifest,
}

impl Images<'_> {
    /// Copies every image of the release that the instance's repositories lack (a no-op costs
    /// a few requests), and says what was copied.
    pub(super) async fn mirror(&self) -> Result<(), Error> {
        let session = self.session;
        let mirror_settings = MirrorSettings {
            instance: session.config.instance.name.clone(),
            region: session.aws.region.clone(),
            profile: self.settings.profile.clone(),
            options: CopyOptions::default(),
            plain_http: false,
            overrides: RegistryOverrides::from_env()?,
        };
        let summary = mirror::mirror_release(
            &session.aws,
            &mirror_settings,
            self.release,
            &SilentReporter,
        )
        .await?;
        if self.printer.json_mode() {
            self.printer
                .json_line(&json!({ "event": "mirrored", "summary": summary }));
        } else {
            self.printer.status(format!("Images: {summary}"));
        }
        Ok(())
    }
}

/// The hook of installs and upgrades: journals each stack, and mirrors the release's images
/// once, right before the first stack that runs them changes, after the bootstrap stack has
/// made their repositories (copying first would create a new component's repository through
/// the ECR API, and the bootstrap stack could then not create it). A resumed run mirrors again,
/// which copies only what is missing.
struct ImagesFirst<'a, 'b> {
    journal: JournalHook<'a, 'b>,
    /// None with `--skip-mirror`.
    images: Option<Images<'a>>,
    mirrored: AtomicBool,
}

impl StackJournal for ImagesFirst<'_, '_> {
    async fn before_stack(&self, kind: StackKind) -> Result<(), ProvisionError> {
        let Some(images) = &self.images else {
            return Ok(());
        };
        if !matches!(kind, StackKind::Platform | StackKind::Updater)
            || self.mirrored.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        images
            .mirror()
            .await
            .map_err(|error| ProvisionError::Prerequisite {
                stack: kind.stack_name(&images.session.config.instance.name),
                message: format!("the release's images: {error}"),
                hint: error.hint(),
            })?;
        self.mirrored.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn stack_done(&self, kind: StackKind) -> Result<(), ProvisionError> {
        self.journal.stack_done(kind).await
    }
}

/// Tells the journal as each stack is done.
struct JournalHook<'a, 'b>(&'a Operation<'b, DynamoStateStore>);

impl StackJournal for JournalHook<'_, '_> {
    async fn stack_done(&self, kind: StackKind) -> Result<(), ProvisionError> {
        Ok(self.0.complete(Phase::Stack(kind), |_| {}).await?)
    }
}

/// Whether a run starts an operation or continues an interrupted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Begun {
    Fresh,
    Resumed,
}

/// Runs `work` under the instance's lock: creates the state table if needed, takes the lock
/// (waiting as asked), reads the state, decides from the journal whether to start, resume or
/// refuse, and releases the lock whatever happens (unless the table went with the instance).
pub(super) async fn locked<T>(
    session: &Session,
    printer: &Printer,
    lock_settings: &LockSettings,
    inputs: &OperationInputs,
    work: impl AsyncFnOnce(
        &Operation<'_, DynamoStateStore>,
        Option<Installation>,
        Begun,
    ) -> Result<T, Error>,
) -> Result<T, Error> {
    let store = &session.state;
    let clock = SystemClock;
    store.prepare().await?;
    let holder = Holder::this_process(&session.identity.principal, inputs.kind);
    let lease = state::acquire(store, &clock, &holder, lock_settings, |held| {
        printer.status(format!(
            "Waiting up to {} s for the lock on {}, held by {held}",
            lock_settings.wait.as_secs(),
            session.config.instance.name
        ));
    })
    .await?;
    tracing::info!(lock_id = %lease.lock_id, token = lease.fencing_token, "lock acquired");
    let result = async {
        let installation = store.installation().await?;
        let found = store.journal().await?;
        let now = clock.now();
        let from_release = installation.as_ref().and_then(|record| record.installed_release.clone());
        let (journal, begun, superseded) = match state::resume_decision(found, inputs) {
            ResumeDecision::Fresh => (Journal::new(inputs, &session.identity.principal, from_release, now), Begun::Fresh, None),
            ResumeDecision::Resume(journal) => {
                printer.status(format!(
                    "Resuming the interrupted {} {} started {} by {}{}",
                    journal.kind,
                    journal.operation_id,
                    journal.started_at.round(jiff::Unit::Second).unwrap_or(journal.started_at),
                    journal.started_by,
                    if journal.completed.is_empty() {
                        String::new()
                    } else {
                        format!(" (done: {})", journal.completed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
                    }
                ));
                (journal, Begun::Resumed, None)
            }
            ResumeDecision::Supersede(old) => {
                printer.warn(format!(
                    "an interrupted {} ({}) was asked something else; it is recorded as abandoned and this run starts anew",
                    old.kind, old.operation_id
                ));
                (Journal::new(inputs, &session.identity.principal, from_release, now), Begun::Fresh, Some(old))
            }
            ResumeDecision::Refuse(unfinished) => {
                return Err(Error::State(StateError::UnfinishedOperation {
                    instance: session.config.instance.name.clone(),
                    requested: inputs.kind,
                    unfinished: Box::new(unfinished),
                }));
            }
        };
        let operation = Operation::new(store, &clock, lease.clone(), lock_settings.lease, journal);
        let guarded = async {
            if let Some(old) = superseded {
                let entry = old.finish(OperationResult::Abandoned, None, operation.now());
                operation.write(vec![StateWrite::History(entry), StateWrite::ClearJournal]).await?;
            }
            work(&operation, installation, begun).await
        };
        state::run_guarded(&operation, lock_settings, guarded, || {
            printer.warn("stopping after the current step; the lock is released and the journal kept (press Ctrl-C again to stop at once)");
        })
        .await
    }
    .await;
    match store.release(&lease).await {
        Ok(()) => {}
        Err(error) => printer.warn(format!("the lock was not released: {error}")),
    }
    result
}

pub(super) async fn discard_change_sets<D: StackDeployer>(deployer: &D, plan: &Plan) {
    for id in plan
        .stacks
        .iter()
        .filter_map(|stack| stack.change_set_id.as_deref())
    {
        if let Err(error) = deployer.delete_change_set(id).await {
            tracing::warn!(%error, change_set = id, "could not delete a planned change set");
        }
    }
}

pub fn status(settings: &GlobalSettings, printer: &Printer) -> Result<ExitStatus, Error> {
    block_on(async {
        let session = connect(settings).await?;
        let instance = &session.config.instance.name;
        let mut stacks = Vec::new();
        for kind in StackKind::ALL {
            let name = kind.stack_name(instance);
            let state = session
                .deployer
                .describe_stack(&name)
                .await
                .map_err(|source| provision::ProvisionError::deploy(&name, source))?;
            if let Some(state) = state {
                stacks.push(state);
            }
        }
        // Read only: status never creates the table nor takes the lock.
        let installation = session.state.installation().await?;
        let lock = session.state.lock().await?;
        let journal = session.state.journal().await?;
        if printer.json_mode() {
            printer.data(&json!({
                "instance": instance,
                "account": session.identity.account,
                "region": session.aws.region,
                "state_table": session.state.location(),
                "installation": installation,
                "lock": lock,
                "unfinished_operation": journal,
                "stacks": stacks,
            }));
            return Ok(ExitStatus::Success);
        }
        if stacks.is_empty() && installation.is_none() && lock.is_none() && journal.is_none() {
            printer.result(format!(
                "{instance} is not installed in account {} ({}).",
                session.identity.account, session.aws.region
            ));
            return Ok(ExitStatus::Success);
        }
        let now = jiff::Timestamp::now();
        let release_line = match &installation {
            Some(record) => format!(
                "{} ({} mode, {}, by operation {} at {})",
                record.installed_release.as_deref().unwrap_or("none"),
                record.networking_mode,
                record.status,
                record.operation_id,
                record
                    .updated_at
                    .round(jiff::Unit::Second)
                    .unwrap_or(record.updated_at)
            ),
            None => "unknown (no installation record)".into(),
        };
        let lock_line = match &lock {
            None => "free".to_owned(),
            Some(lease) if lease.is_live(now) => format!("held by {lease}"),
            Some(lease) => format!("expired: {lease}"),
        };
        let mut summary = vec![
            ["Installed release".to_owned(), release_line],
            ["Lock".to_owned(), lock_line],
        ];
        if let Some(journal) = &journal {
            summary.push([
                "Unfinished".to_owned(),
                format!(
                    "{} {} started {} (done: {})",
                    journal.kind,
                    journal.operation_id,
                    journal
                        .started_at
                        .round(jiff::Unit::Second)
                        .unwrap_or(journal.started_at),
                    journal
                        .completed
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ]);
        }
        for [label, value] in summary {
            printer.result(format!("{label:<18} {value}"));
        }
        printer.result("");
        printer.result(table(
            ["STACK", "STATUS", "LAST UPDATED"],
            stacks.iter().map(|state| {
                [
                    state.name.clone(),
                    state.status.clone(),
                    state
                        .last_updated
                        .map(|time| time.to_string())
                        .unwrap_or_default(),
                ]
            }),
        ));
        let outputs: Vec<[String; 3]> = stacks
            .iter()
            .flat_map(|state| {
                state
                    .outputs
                    .iter()
                    .map(|(key, value)| [state.name.clone(), key.clone(), value.clone()])
            })
            .collect();
        if !outputs.is_empty() {
            printer.result("");
            printer.result(table(["STACK", "OUTPUT", "VALUE"], outputs));
        }
        Ok(ExitStatus::Success)
    })
}

pub fn teardown(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &TeardownArgs,
) -> Result<ExitStatus, Error> {
    if !settings.assume_yes && !CliGate::interactive() {
        return Err(Error::Unconfirmed {
            action: "teardown".into(),
        });
    }
    let lock_settings = settings.lock_settings(args.lock.wait)?;
    block_on(async {
        let started = Instant::now();
        let session = connect(settings).await?;
        let instance = session.config.instance.name.clone();
        // Nothing deployed and no state: nothing to lock, nothing to delete.
        if !session.state.exists().await?
            && provision::inventory(&session.deployer, &instance, args.delete_data)
                .await?
                .is_empty()
        {
            printer.result(format!(
                "{instance} has no stacks in account {} ({}): nothing to delete.",
                session.identity.account, session.aws.region
            ));
            return Ok(ExitStatus::Success);
        }
        let inputs = OperationInputs {
            kind: OperationKind::Teardown,
            release: None,
            config_hash: config_hash(&session.config),
            delete_data: args.delete_data,
        };
        locked(
            &session,
            printer,
            &lock_settings,
            &inputs,
            async |operation, installation, begun| {
                teardown_locked(
                    settings,
                    printer,
                    &session,
                    args,
                    operation,
                    installation,
                    begun,
                    started,
                )
                .await
            },
        )
        .await
    })
}

#[allow(clippy::too_many_arguments)]
async fn teardown_locked(
    settings: &GlobalSettings,
    printer: &Printer,
    session: &Session,
    args: &TeardownArgs,
    operation: &Operation<'_, DynamoStateStore>,
    installation: Option<Installation>,
    begun: Begun,
    started: Instant,
) -> Result<ExitStatus, Error> {
    let instance = session.config.instance.name.clone();
    let table = session.state.location().to_owned();
    let inventory = provision::inventory(&session.deployer, &instance, args.delete_data).await?;
    if inventory.is_empty() && begun == Begun::Fresh {
        // No stack is left: the state goes with the instance.
        session.state.destroy().await?;
        printer.result(format!(
            "{instance} has no stacks in account {} ({}): nothing to delete. Its state table {table} was deleted.",
            session.identity.account, session.aws.region
        ));
        return Ok(ExitStatus::Success);
    }
    if begun == Begun::Fresh && inventory.stacks.iter().all(|stack| !stack.delete_stack) {
        // Only kept stacks remain (the data): a teardown that would delete nothing is no
        // operation, and records none.
        printer.result(format!(
            "Nothing to delete: only the data of {instance} remains ({}); `stackwright teardown --delete-data` deletes it.",
            inventory.stacks.iter().map(|stack| stack.stack_name.as_str()).collect::<Vec<_>>().join(", ")
        ));
        return Ok(ExitStatus::Success);
    }
    if args.delete_data {
        printer.warn(format!(
            "--delete-data: the data stack of {instance} is deleted too. Its buckets are emptied and its tables dropped; this cannot be undone."
        ));
    }
    if printer.json_mode() {
        printer.json_line(&json!({ "event": "inventory", "inventory": inventory }));
    } else {
        printer.status(format!(
            "Teardown of {instance} in account {} ({}). What is deleted and what is kept:",
            session.identity.account, session.aws.region
        ));
        printer.status(&inventory);
    }
    if !settings.assume_yes {
        let expected = instance.clone();
        let typed = tokio::task::spawn_blocking(move || {
            dialoguer::Input::<String>::new()
                .with_prompt(format!("Type the instance name ({expected}) to delete it"))
                .allow_empty(true)
                .interact_text()
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        if typed.trim() != instance {
            return Err(Error::Declined {
                action: "teardown".into(),
            });
        }
    }
    let reporter = CliReporter::new(printer);
    let gate = CliGate {
        assume_yes: settings.assume_yes,
    };
    let deleted = async {
        let targets = inventory.retained_targets();
        operation
            .complete(Phase::Inventory, |journal| {
                for target in targets {
                    if !journal.retained.contains(&target) {
                        journal.retained.push(target);
                    }
                }
            })
            .await?;
        let report = provision::teardown_journalled(
            &session.deployer,
            &inventory,
            &reporter,
            &gate,
            &JournalHook(operation),
        )
        .await?;
        if args.delete_data {
            let targets = operation.journal().await.retained;
            provision::delete_retained_data(&session.deployer, &targets, &reporter).await?;
            operation.complete(Phase::Data, |_| {}).await?;
        }
        Ok::<_, Error>(report)
    }
    .await;
    let report = match deleted {
        Ok(report) => report,
        Err(error) => return Err(record_failure(operation, installation, error).await),
    };
    let journal = operation.journal().await;
    let entry = journal.finish(OperationResult::Succeeded, None, operation.now());
    let kept: Vec<String> = inventory
        .stacks
        .iter()
        .filter(|stack| !stack.delete_stack)
        .map(|stack| stack.stack_name.clone())
        .collect();
    let mut writes = vec![StateWrite::History(entry)];
    if !kept.is_empty() {
        writes.push(StateWrite::Installation(Installation {
            installed_release: installation
                .as_ref()
                .and_then(|record| record.installed_release.clone()),
            networking_mode: session.config.network.mode.to_string(),
            stacks: kept.clone(),
            status: InstallationStatus::DataKept,
            config_hash: journal.config_hash.clone(),
            operation_id: journal.operation_id.clone(),
            updated_at: operation.now(),
            failed_releases: Vec::new(),
            trusted_root: None,
        }));
    }
    operation.finish(writes).await?;
    // The table goes last, once no stack is left for it to guard.
    let table_deleted = kept.is_empty();
    if table_deleted {
        session.state.destroy().await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    for warning in &report.warnings {
        printer.warn(warning);
    }
    let state_line = if table_deleted {
        format!(
            "The state table {table} was deleted with the instance, and the history of its operations with it."
        )
    } else {
        format!(
            "The state table {table} is kept while the data stack remains; `stackwright history` shows its operations."
        )
    };
    if printer.json_mode() {
        printer.data(&json!({ "seconds": elapsed, "report": report, "state_table": { "name": table, "deleted": table_deleted } }));
    } else {
        printer.result(format!(
            "Deleted {} of {instance} in {elapsed:.1} s.",
            count(report.deleted_stacks.len(), "stack", "stacks")
        ));
        if report.remaining.is_empty() {
            printer.result("Nothing of these stacks remains.");
        } else {
            printer.result("What remains:");
            printer.result(table_of_remaining(&report));
        }
        printer.result(state_line);
    }
    Ok(ExitStatus::Success)
}

fn table_of_remaining(report: &provision::TeardownReport) -> String {
    table(
        ["STACK", "RESOURCE", "TYPE", "ID", "WHY"],
        report.remaining.iter().map(|item| {
            [
                item.stack_name.clone(),
                item.logical_id.clone(),
                item.resource_type.clone(),
                item.physical_id.clone().unwrap_or_default(),
                item.reason.clone(),
            ]
        }),
    )
}
