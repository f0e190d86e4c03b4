//! The preflight at the start of an install or upgrade: failures stop it, warnings are told
//! and it goes on.

use crate::error::Error;
use crate::preflight::Outcome;
use crate::provision::StackDeployer;
use crate::state::StateStore;

use super::{Event, Session};

pub(super) async fn before_install<D: StackDeployer, S: StateStore>(
    session: &Session<'_, D, S>,
    skip: bool,
) -> Result<(), Error> {
    if skip {
        session.emit(Event::PreflightSkipped);
        return Ok(());
    }
    // Another run at work has its stacks in progress: the lock, not preflight, says so (exit 3).
    if let Ok(Some(lease)) = session.state.lock().await
        && lease.is_live(session.clock.now())
    {
        session.emit(Event::PreflightDeferred {
            instance: session.instance().to_owned(),
        });
        return Ok(());
    }
    session.emit(Event::PreflightStarted);
    let report = session.preflight.run().await?;
    let failed = report.result == Outcome::Fail;
    let failures = report.failures().map(|check| check.title.clone()).collect();
    session.emit(Event::Preflight {
        report: Box::new(report),
    });
    if failed {
        return Err(Error::PreflightFailed { failures });
    }
    Ok(())
}
