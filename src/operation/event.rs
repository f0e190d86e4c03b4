//! What an operation tells as it works: one typed [`Event`] stream that every consumer reads
//! (the terminal, JSON lines, and whatever records a run), and the adapters that turn the
//! provisioning engine's and the copy engine's progress callbacks into events.

use serde_json::{Value, json};

use crate::control_plane::api::Outcome;
use crate::mirror::{BlobOutcome, ImageOutcome, MirrorReporter, MirrorSummary, RegistryError};
use crate::preflight::PreflightReport;
use crate::provision::{DeployReporter, Inventory, Plan, StackAction, StackEvent};
use crate::state::{Journal, Lease, OperationKind};
use crate::upgrade::{ChangeReview, Decision, Health};

/// Where events go. Implementations must be cheap: the copy engine reports bytes a few times a
/// second.
pub trait EventSink: Sync {
    fn emit(&self, event: Event);
}

/// Events that nobody listens to.
pub struct Discard;

impl EventSink for Discard {
    fn emit(&self, _event: Event) {}
}

/// Everything an operation tells, in the order it happens. Variants whose [`Event::json`] is
/// `Some` are part of the JSON-lines interface (`--output json`, the unattended job's log);
/// their names and fields never change meaning. The others are for people only.
#[derive(Debug, Clone)]
pub enum Event {
    // The lock and the journal.
    /// The lock is held by another run; this one waits up to `wait_seconds`.
    LockWaiting {
        instance: String,
        holder: Box<Lease>,
        wait_seconds: u64,
    },
    /// An interrupted operation of the same kind and inputs continues.
    Resuming {
        journal: Box<Journal>,
    },
    /// An interrupted operation that asked for something else is recorded as abandoned.
    Superseded {
        kind: OperationKind,
        operation_id: String,
    },
    /// A first signal: the operation stops after its current step.
    Stopping,
    /// The lock could not be released; its lease runs out by itself.
    LockNotReleased {
        error: String,
    },

    // Preflight before an install or upgrade.
    PreflightSkipped,
    /// Preflight did not run because another run holds the lock.
    PreflightDeferred {
        instance: String,
    },
    PreflightStarted,
    Preflight {
        report: Box<PreflightReport>,
    },

    // Deployments, from the provisioning engine.
    /// A deployment (a plan's apply, a teardown) begins: its clock starts.
    DeployStarted,
    StackStarted {
        stack: String,
        action: StackAction,
        resources: usize,
    },
    Resource {
        detail: Box<StackEvent>,
    },
    StackFinished {
        stack: String,
        status: String,
        succeeded: bool,
    },
    Note {
        message: String,
    },

    // Releases and the control plane.
    /// The release a first install takes by default.
    Offered {
        version: semver::Version,
        channel: String,
    },
    Registered {
        instance_id: String,
        organization_id: String,
        secret: String,
    },
    /// An offered release failed verification and is left aside.
    OfferRefused {
        version: semver::Version,
        error: String,
    },
    /// The instance has no identity, after an install that changed something.
    NotRegistered {
        token_file: String,
    },
    /// Registration, heartbeat or report after an install failed; the install stands.
    InstallNotReported {
        error: String,
        hint: Option<String>,
    },
    /// An upgrade's result could not be reported.
    ResultNotReported {
        error: String,
    },

    // Install.
    Installing {
        instance: String,
        release: semver::Version,
        mode: String,
        account: String,
        principal: String,
        region: String,
    },
    /// What an install is about to do, shown to people before they approve it.
    InstallPlan {
        account: String,
        region: String,
        plan: Box<Plan>,
    },

    // Images.
    Mirrored {
        summary: MirrorSummary,
    },
    ImageStarted {
        image: String,
        digest: String,
    },
    BytesCopied {
        total: u64,
    },
    Blob {
        image: String,
        digest: String,
        size: u64,
        outcome: BlobOutcome,
    },
    ImageFinished {
        image: String,
        outcome: ImageOutcome,
    },
    ImageFailed {
        image: String,
        error: String,
    },
    Tagged {
        image: String,
        tag: String,
    },
    Retry {
        what: String,
        attempt: u32,
        error: String,
    },

    // Teardown.
    DeletingData {
        instance: String,
    },
    Inventory {
        inventory: Box<Inventory>,
        account: String,
        region: String,
    },
    /// Something a teardown left behind or could not do, said after it.
    TeardownWarning {
        message: String,
    },

    // Upgrade.
    Decision {
        instance: String,
        decision: Box<Decision>,
    },
    Upgrading {
        instance: String,
        from: semver::Version,
        to: semver::Version,
    },
    Plan {
        plan: Box<Plan>,
        review: Box<ChangeReview>,
    },
    Health {
        health: Box<Health>,
    },
    HandedOver {
        release: semver::Version,
        installer: semver::Version,
        image: String,
        detail: String,
    },
    UpgradeFinished {
        instance: String,
        from: semver::Version,
        to: semver::Version,
        outcome: Outcome,
        seconds: f64,
        detail: String,
    },
}

impl Event {
    /// The event's line in the JSON-lines stream, or `None` for events only people see.
    pub fn json(&self) -> Option<Value> {
        Some(match self {
            Event::PreflightSkipped => json!({ "event": "preflight", "skipped": true }),
            Event::Preflight { report } => json!({ "event": "preflight", "report": report }),
            Event::StackStarted {
                stack,
                action,
                resources,
            } => {
                json!({ "event": "stack_started", "stack": stack, "action": action, "resources": resources })
            }
            Event::Resource { detail } => json!({ "event": "resource", "detail": detail }),
            Event::StackFinished {
                stack,
                status,
                succeeded,
            } => {
                json!({ "event": "stack_finished", "stack": stack, "status": status, "succeeded": succeeded })
            }
            Event::Note { message } => json!({ "event": "note", "message": message }),
            Event::Mirrored { summary } => json!({ "event": "mirrored", "summary": summary }),
            Event::ImageStarted { image, digest } => {
                json!({ "event": "image_started", "image": image, "digest": digest })
            }
            Event::Blob {
                image,
                digest,
                size,
                outcome,
            } => {
                json!({ "event": "blob", "image": image, "digest": digest, "size": size, "outcome": outcome })
            }
            Event::ImageFinished { image, outcome } => {
                json!({ "event": "image_finished", "image": image, "outcome": outcome })
            }
            Event::ImageFailed { image, error } => {
                json!({ "event": "image_failed", "image": image, "error": error })
            }
            Event::Tagged { image, tag } => {
                json!({ "event": "tagged", "image": image, "tag": tag })
            }
            Event::Retry {
                what,
                attempt,
                error,
            } => json!({ "event": "retry", "what": what, "attempt": attempt, "error": error }),
            Event::Inventory { inventory, .. } => {
                json!({ "event": "inventory", "inventory": inventory })
            }
            Event::Decision { instance, decision } => {
                json!({ "event": "decision", "instance": instance, "decision": decision })
            }
            Event::Plan { plan, review } => {
                json!({ "event": "plan", "plan": plan, "review": review })
            }
            Event::Health { health } => json!({ "event": "health", "health": health }),
            Event::HandedOver {
                release,
                installer,
                image,
                detail,
            } => json!({
                "event": "handed_over",
                "release": release,
                "installer": installer,
                "image": image,
                "detail": detail,
            }),
            Event::UpgradeFinished {
                from,
                to,
                outcome,
                seconds,
                detail,
                ..
            } => {
                json!({ "event": "upgrade_finished", "from": from, "to": to, "outcome": outcome, "seconds": seconds, "detail": detail })
            }
            _ => return None,
        })
    }
}

/// The provisioning engine's progress, as events.
pub struct DeployEvents<'a>(pub &'a dyn EventSink);

impl DeployReporter for DeployEvents<'_> {
    fn stack_started(&self, stack: &str, action: StackAction, resources: usize) {
        self.0.emit(Event::StackStarted {
            stack: stack.to_owned(),
            action,
            resources,
        });
    }

    fn event(&self, event: &StackEvent) {
        self.0.emit(Event::Resource {
            detail: Box::new(event.clone()),
        });
    }

    fn stack_finished(&self, stack: &str, status: &str, succeeded: bool) {
        self.0.emit(Event::StackFinished {
            stack: stack.to_owned(),
            status: status.to_owned(),
            succeeded,
        });
    }

    fn note(&self, message: &str) {
        self.0.emit(Event::Note {
            message: message.to_owned(),
        });
    }
}

/// The copy engine's progress, as events.
pub struct MirrorEvents<'a>(pub &'a dyn EventSink);

impl MirrorReporter for MirrorEvents<'_> {
    fn image_started(&self, image: &str, digest: &str) {
        self.0.emit(Event::ImageStarted {
            image: image.to_owned(),
            digest: digest.to_owned(),
        });
    }

    fn bytes_progress(&self, total: u64) {
        self.0.emit(Event::BytesCopied { total });
    }

    fn blob_finished(&self, image: &str, digest: &str, size: u64, outcome: BlobOutcome) {
        self.0.emit(Event::Blob {
            image: image.to_owned(),
            digest: digest.to_owned(),
            size,
            outcome,
        });
    }

    fn image_finished(&self, image: &str, outcome: ImageOutcome) {
        self.0.emit(Event::ImageFinished {
            image: image.to_owned(),
            outcome,
        });
    }

    fn image_failed(&self, image: &str, error: &RegistryError) {
        self.0.emit(Event::ImageFailed {
            image: image.to_owned(),
            error: error.to_string(),
        });
    }

    fn tagged(&self, image: &str, tag: &str) {
        self.0.emit(Event::Tagged {
            image: image.to_owned(),
            tag: tag.to_owned(),
        });
    }

    fn retrying(&self, what: &str, attempt: u32, error: &RegistryError) {
        self.0.emit(Event::Retry {
            what: what.to_owned(),
            attempt,
            error: error.to_string(),
        });
    }
}

/// Collects events in memory: for tests, and for anything that reads a run back afterwards.
#[derive(Default)]
pub struct Recorder {
    events: std::sync::Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(event);
    }
}
