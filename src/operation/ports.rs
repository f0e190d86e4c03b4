//! The narrow traits an operation needs beyond CloudFormation and the state table: approval,
//! the release's images, the platform's health, the control-plane identity and preflight. The
//! command line implements them over AWS and the terminal; tests implement them in memory.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Error;
use crate::mirror::MirrorSummary;
use crate::preflight::PreflightReport;
use crate::provision::{DeployError, StackResource};
use crate::release::ReleaseManifest;
use crate::upgrade::Health;

use super::EventSink;

/// Who approves what an operation is about to do: a person at a terminal, `--yes`, or nobody.
#[async_trait(?Send)]
pub trait Approver: Send + Sync {
    /// Asks a yes/no question; `false` when nobody can answer.
    async fn confirm(&self, question: &str) -> bool;
    /// Asks for `expected` to be typed, for what cannot be undone.
    async fn confirm_typed(&self, prompt: &str, expected: &str) -> bool;
    /// The same question as `confirm`, from code that cannot wait asynchronously (the
    /// provisioning engine's questions about a stack it cannot deploy as it is).
    fn confirm_now(&self, question: &str) -> bool;
}

/// Copies a release's images into the instance's repositories, telling `events` the copy's
/// progress.
#[async_trait(?Send)]
pub trait ImageMirror: Send + Sync {
    async fn mirror_release(
        &self,
        release: &ReleaseManifest,
        events: &dyn EventSink,
    ) -> Result<MirrorSummary, Error>;
}

/// Reads whether the platform's services are stable and its targets healthy.
#[async_trait(?Send)]
pub trait HealthProbe: Send + Sync {
    /// Waits up to `timeout` for a verdict, telling `on_wait` what it sees meanwhile.
    async fn watch(
        &self,
        resources: &[StackResource],
        timeout: Duration,
        on_wait: &(dyn for<'health> Fn(&'health Health) + Sync),
    ) -> Result<Health, DeployError>;
}

/// Runs the preflight checks against the instance's account and region.
#[async_trait(?Send)]
pub trait PreflightCheck: Send + Sync {
    async fn run(&self) -> Result<PreflightReport, Error>;
}
