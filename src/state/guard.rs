//! Holding the lock for the length of an operation: acquiring it (waiting if asked), renewing
//! its lease in the background, journalling phases under it, and stopping cleanly on Ctrl-C or
//! SIGTERM.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{Clock, Holder, Journal, Lease, Phase, StateError, StateStore, StateWrite, fault};

/// How the lock is held: the lease's length, and how long to wait for a held lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockSettings {
    pub lease: Duration,
    pub wait: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings {
            lease: Duration::from_secs(60),
            wait: Duration::ZERO,
        }
    }
}

/// `time + duration`, saturating.
pub(crate) fn later(time: Timestamp, duration: Duration) -> Timestamp {
    SignedDuration::try_from(duration)
        .ok()
        .and_then(|duration| time.checked_add(duration).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Takes the lock, retrying while it is held and `settings.wait` has not run out. `on_wait` is
/// told the holder once, when waiting starts.
pub async fn acquire<S: StateStore, C: Clock + ?Sized>(
    store: &S,
    clock: &C,
    holder: &Holder,
    settings: &LockSettings,
    mut on_wait: impl FnMut(&Lease),
) -> Result<Lease, StateError> {
    let lock_id = uuid::Uuid::new_v4().to_string();
    let deadline = later(clock.now(), settings.wait);
    let mut waiting = false;
    loop {
        match store
            .acquire(holder, &lock_id, clock.now(), settings.lease)
            .await
        {
            Err(StateError::LockHeld {
                instance,
                holder: current,
            }) => {
                let now = clock.now();
                if now >= deadline {
                    return Err(StateError::LockHeld {
                        instance,
                        holder: current,
                    });
                }
                if !waiting {
                    on_wait(&current);
                    waiting = true;
                }
                // Try again when the lease would expire, or within a second if the holder
                // releases it sooner, and never past the deadline.
                let to_expiry = Duration::try_from(current.expires_at - now).unwrap_or_default()
                    + Duration::from_millis(20);
                let to_deadline = Duration::try_from(deadline - now).unwrap_or_default();
                let pause = to_expiry
                    .min(Duration::from_secs(1))
                    .min(to_deadline)
                    .max(Duration::from_millis(20));
                tokio::time::sleep(pause).await;
            }
            result => return result,
        }
    }
}

/// An operation under a held lock: its journal, written phase by phase with writes fenced by
/// the lease.
pub struct Operation<'a, S: StateStore> {
    store: &'a S,
    clock: &'a dyn Clock,
    lease: Lease,
    duration: Duration,
    journal: tokio::sync::Mutex<Journal>,
    stop: AtomicBool,
}

impl<'a, S: StateStore> Operation<'a, S> {
    pub fn new(
        store: &'a S,
        clock: &'a dyn Clock,
        lease: Lease,
        duration: Duration,
        journal: Journal,
    ) -> Self {
        Operation {
            store,
            clock,
            lease,
            duration,
            journal: tokio::sync::Mutex::new(journal),
            stop: AtomicBool::new(false),
        }
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub async fn journal(&self) -> Journal {
        self.journal.lock().await.clone()
    }

    /// Whether a phase was completed, by this run or the one it resumes.
    pub async fn is_done(&self, phase: &Phase) -> bool {
        self.journal.lock().await.is_done(phase)
    }

    /// Records `phase` as complete (after `change` to the journal), then stops here if a
    /// signal asked for it. Writes are serialised so that the stored journal never loses a
    /// phase to a write that overtook it.
    pub async fn complete(
        &self,
        phase: Phase,
        change: impl FnOnce(&mut Journal),
    ) -> Result<(), StateError> {
        {
            let mut journal = self.journal.lock().await;
            let mut next = journal.clone();
            change(&mut next);
            if !next.is_done(&phase) {
                next.completed.push(phase.clone());
            }
            self.write(vec![StateWrite::Journal(next.clone())]).await?;
            *journal = next;
        }
        tracing::info!(%phase, "phase journalled");
        fault::after_phase(&phase).await;
        self.check_stop()
    }

    /// Writes the operation's last records and clears its journal, in one transaction.
    pub async fn finish(&self, mut writes: Vec<StateWrite>) -> Result<(), StateError> {
        writes.push(StateWrite::ClearJournal);
        self.write(writes).await?;
        fault::after_phase(&Phase::Record).await;
        Ok(())
    }

    /// One fenced transaction.
    pub async fn write(&self, writes: Vec<StateWrite>) -> Result<(), StateError> {
        match self
            .store
            .write(&self.lease, self.clock.now(), writes.clone())
            .await
        {
            // The lease may only have run out because renewals were slow. If nobody took the
            // lock meanwhile (same ID, same token: what the renewal checks), nobody else wrote
            // either, so extending the lease and writing again is safe.
            Err(StateError::LeaseLost { .. }) => {
                self.store
                    .renew(&self.lease, self.clock.now(), self.duration)
                    .await?;
                tracing::warn!("the lease had run out unclaimed; renewed it and wrote again");
                self.store
                    .write(&self.lease, self.clock.now(), writes)
                    .await
            }
            result => result,
        }
    }

    /// `Interrupted` once a signal asked the operation to stop.
    pub fn check_stop(&self) -> Result<(), StateError> {
        if self.stop.load(Ordering::SeqCst) {
            Err(StateError::Interrupted)
        } else {
            Ok(())
        }
    }
}

/// Runs `work` while renewing the lease every third of its length. A first Ctrl-C or SIGTERM
/// asks `work` to stop at its next phase boundary (`on_signal` says so); a second one stops it
/// at once. A lost lease stops it at once: its writes would be refused anyway.
pub async fn run_guarded<S, T, E, F>(
    operation: &Operation<'_, S>,
    settings: &LockSettings,
    work: F,
    on_signal: impl Fn(),
) -> Result<T, E>
where
    S: StateStore,
    F: Future<Output = Result<T, E>>,
    E: From<StateError>,
{
    let keep_alive = keep_alive(operation, settings.lease);
    tokio::pin!(work);
    tokio::pin!(keep_alive);
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        tokio::select! {
            result = &mut work => return result,
            error = &mut keep_alive => return Err(error.into()),
            () = next_signal(&mut terminate) => {
                if operation.stop.swap(true, Ordering::SeqCst) {
                    return Err(StateError::Interrupted.into());
                }
                on_signal();
            }
        }
    }
}

async fn next_signal(terminate: &mut Option<tokio::signal::unix::Signal>) {
    match terminate {
        Some(terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Renews the lease until it is lost, which it returns.
async fn keep_alive<S: StateStore>(operation: &Operation<'_, S>, lease: Duration) -> StateError {
    let period = lease / 3;
    loop {
        tokio::time::sleep(period).await;
        match operation
            .store
            .renew(&operation.lease, operation.clock.now(), lease)
            .await
        {
            Ok(until) => tracing::debug!(%until, "lease renewed"),
            Err(error @ StateError::LeaseLost { .. }) => return error,
            // A failed call is retried at the next period; if none succeeds before the lease
            // runs out, the next fenced write is refused.
            Err(error) => tracing::warn!(%error, "could not renew the lock's lease"),
        }
    }
}
