//! The hand-over to a newer installer: the updater stack's task moves to the installer image
//! the next release carries (that image mirrored first), under the lock; that installer
//! applies the release on the job's next run. Nothing else changes.

use crate::error::Error;
use crate::provision::{self, StackDeployer};
use crate::release::ReleaseManifest;
use crate::render;
use crate::stacks::StackKind;
use crate::state::{OperationInputs, OperationKind, OperationResult, StateStore, StateWrite};

use super::apply::{EngineGate, apply_plan};
use super::lock::{locked, record_failure};
use super::{Event, Session, config_hash, installer_version};

/// Whether it handed over (a release without an installer has nothing to hand over to).
/// Only an updater stack in the account runs the job; a job run elsewhere (a systemd timer) is
/// moved by a person.
pub(super) async fn hand_over<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    manifest: &ReleaseManifest,
) -> Result<bool, Error> {
    let config = session.config;
    let Some(installer) = &manifest.installer else {
        return Ok(false);
    };
    updater_runs_the_job(session, manifest, installer).await?;
    // The installer's image only: the release's own images arrive when the new installer
    // applies it, after its bootstrap stack has made any new repository.
    let installer_only = ReleaseManifest {
        components: Vec::new(),
        ..manifest.clone()
    };
    let stacks: Vec<_> = render::render_all(config, manifest)?
        .into_iter()
        .filter(|stack| stack.kind == StackKind::Updater)
        .collect();
    let inputs = OperationInputs {
        kind: OperationKind::Upgrade,
        release: Some(manifest.version.to_string()),
        config_hash: config_hash(config),
        delete_data: false,
    };
    let detail = format!(
        "the updater runs stackwright {} now, which applies release {} on its next run",
        installer.version, manifest.version
    );
    locked(session, &inputs, async |operation, installation, _begun| {
        let plan = provision::plan(
            session.deployer,
            session.instance(),
            &stacks,
            session.region,
            true,
        )
        .await?;
        let images = Some(&installer_only);
        if let Err(error) =
            apply_plan(session, operation, &plan, &stacks, &EngineGate::Yes, images).await
        {
            return Err(record_failure(operation, installation, error).await);
        }
        let entry = operation.journal().await.finish(
            OperationResult::HandedOver,
            Some(detail.clone()),
            operation.now(),
        );
        Ok(operation.finish(vec![StateWrite::History(entry)]).await?)
    })
    .await?;
    session.emit(Event::HandedOver {
        release: manifest.version.clone(),
        installer: installer.version.clone(),
        image: installer.image.to_string(),
        detail,
    });
    Ok(true)
}

/// Refuses a hand-over where no updater stack runs the job in the account.
async fn updater_runs_the_job<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    manifest: &ReleaseManifest,
    installer: &crate::release::Installer,
) -> Result<(), Error> {
    let updater = StackKind::Updater.stack_name(session.instance());
    let exists = session
        .deployer
        .describe_stack(&updater)
        .await
        .map_err(|source| provision::ProvisionError::deploy(&updater, source))?
        .is_some();
    if exists {
        return Ok(());
    }
    Err(Error::Usage {
        message: format!(
            "release {} needs stackwright {} or newer; this is {}, and no updater stack runs the job in this account",
            manifest.version,
            installer.version,
            installer_version()
        ),
        hint: format!(
            "run stackwright {} or newer where the job runs (the README's systemd timer names the binary)",
            installer.version
        ),
    })
}
