//! Upgrades: deciding whether and where an instance moves (a pure function of what is installed,
//! what is offered, the local policy and the time), and the maintenance window it waits for.
//! The window is written in the configuration, so it lives there; its old path keeps compiling.

mod decision;
mod health;
mod review;

pub use crate::config::{MaintenanceWindow, WindowError};
pub use decision::{Decision, Ignored, OfferedRelease, UpgradePolicy, decide};
pub use health::{Health, HealthSnapshot, ServiceState, TargetGroupState, TargetState};
pub use review::{ChangeReview, Finding, FindingKind, TemplatePair};
