//! A test-only fault hook. Built with the `fault-injection` feature (the test suite's builds),
//! `STACKWRIGHT_FAULT_PHASE=<phase>` makes the process stop dead right after that phase is
//! journalled, as a crash would: `std::process::abort`, no cleanup, the lock left to expire.
//! `STACKWRIGHT_FAULT_ACTION=sleep:<milliseconds>` makes it pause there instead, holding the
//! lock, for tests that need a holder to race against. Without the feature (release builds)
//! the hook is an empty function and the variables mean nothing.

use super::Phase;

/// Called once a phase is journalled.
#[cfg(feature = "fault-injection")]
pub async fn after_phase(phase: &Phase) {
    let Ok(wanted) = std::env::var("STACKWRIGHT_FAULT_PHASE") else {
        return;
    };
    if wanted != phase.to_string() {
        return;
    }
    let action = std::env::var("STACKWRIGHT_FAULT_ACTION").unwrap_or_else(|_| "abort".into());
    match action
        .strip_prefix("sleep:")
        .and_then(|millis| millis.parse().ok())
    {
        Some(millis) => {
            eprintln!("fault injection: sleeping {millis} ms after {phase}");
            tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        }
        None => {
            eprintln!("fault injection: aborting after {phase}");
            std::process::abort();
        }
    }
}

/// Called once a phase is journalled; does nothing in this build.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub async fn after_phase(_phase: &Phase) {}
