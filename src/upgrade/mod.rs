//! Upgrades: deciding whether and where an instance moves (a pure function of what is installed,
//! what is offered, the local policy and the time), and the maintenance window it waits for.

mod decision;
mod health;
mod review;
mod window;

pub use decision::{Decision, Ignored, OfferedRelease, UpgradePolicy, decide};
pub use health::{Health, HealthSnapshot, ServiceState, TargetGroupState, TargetState};
pub use review::{ChangeReview, Finding, FindingKind, TemplatePair};
pub use window::{MaintenanceWindow, WindowError};
