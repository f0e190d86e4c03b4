//! Applying a plan under an operation: the plan phase journalled, each stack journalled as it
//! is done, and the release's images copied right before the first stack that runs them.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;
use crate::provision::{
    self, ApplyReport, Gate, Plan, ProvisionError, StackDeployer, StackJournal,
};
use crate::release::ReleaseManifest;
use crate::render::RenderedStack;
use crate::stacks::StackKind;
use crate::state::{Operation, Phase, StateStore};

use super::{Approver, DeployEvents, Discard, Event, Session};

/// The provisioning engine's questions (recreate a rolled-back stack, retain what blocks a
/// deletion), answered by the session's approver or, for upgrades, always yes.
pub(super) enum EngineGate<'a> {
    Ask(&'a dyn Approver),
    Yes,
}

impl Gate for EngineGate<'_> {
    fn confirm(&self, question: &str) -> bool {
        match self {
            EngineGate::Ask(approver) => approver.confirm_now(question),
            EngineGate::Yes => true,
        }
    }
}

/// Applies `plan` under `operation`, copying `images` (when given) right before the first
/// stack that runs them. The caller records a failure, knowing what it changed.
pub(super) async fn apply_plan<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    operation: &Operation<'_, S>,
    plan: &Plan,
    stacks: &[RenderedStack],
    gate: &EngineGate<'_>,
    images: Option<&ReleaseManifest>,
) -> Result<ApplyReport, Error> {
    operation.complete(Phase::Plan, |_| {}).await?;
    let hook = ImagesFirst {
        session,
        operation,
        images,
        mirrored: AtomicBool::new(false),
    };
    session.emit(Event::DeployStarted);
    Ok(provision::apply_journalled(
        session.deployer,
        plan,
        stacks,
        session.region,
        &DeployEvents(session.events),
        gate,
        &hook,
    )
    .await?)
}

/// Copies every image of `release` that the instance's repositories lack (a no-op costs a few
/// requests), and says what was copied.
pub(super) async fn mirror_images<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    release: &ReleaseManifest,
) -> Result<(), Error> {
    let summary = session.images.mirror_release(release, &Discard).await?;
    session.emit(Event::Mirrored { summary });
    Ok(())
}

/// The hook of installs and upgrades: journals each stack, and mirrors the release's images
/// once, right before the first stack that runs them changes, after the bootstrap stack has
/// made their repositories (copying first would create a new component's repository through
/// the ECR API, and the bootstrap stack could then not create it). A resumed run mirrors again,
/// which copies only what is missing.
struct ImagesFirst<'a, 'b, D: StackDeployer, S: StateStore> {
    session: &'a Session<'b, D, S>,
    operation: &'a Operation<'b, S>,
    /// None with `--skip-mirror`.
    images: Option<&'a ReleaseManifest>,
    mirrored: AtomicBool,
}

impl<D: StackDeployer, S: StateStore> StackJournal for ImagesFirst<'_, '_, D, S> {
    async fn before_stack(&self, kind: StackKind) -> Result<(), ProvisionError> {
        let Some(release) = self.images else {
            return Ok(());
        };
        if !matches!(kind, StackKind::Platform | StackKind::Updater)
            || self.mirrored.load(Ordering::SeqCst)
        {
            return Ok(());
        }
        mirror_images(self.session, release)
            .await
            .map_err(|error| ProvisionError::Prerequisite {
                stack: kind.stack_name(self.session.instance()),
                message: format!("the release's images: {error}"),
                hint: error.hint(),
            })?;
        self.mirrored.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn stack_done(&self, kind: StackKind) -> Result<(), ProvisionError> {
        Ok(self.operation.complete(Phase::Stack(kind), |_| {}).await?)
    }
}

/// Tells the journal as each stack is deleted.
pub(super) struct JournalHook<'a, 'b, S: StateStore>(pub(super) &'a Operation<'b, S>);

impl<S: StateStore> StackJournal for JournalHook<'_, '_, S> {
    async fn stack_done(&self, kind: StackKind) -> Result<(), ProvisionError> {
        Ok(self.0.complete(Phase::Stack(kind), |_| {}).await?)
    }
}

/// Deletes the change sets of a plan that will not be applied.
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
