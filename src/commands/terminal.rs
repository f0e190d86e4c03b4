//! The terminal's reading of an operation's events: lines, bars and results for people, or
//! with `--output json` one JSON object per line, as the events define them.

use std::sync::Mutex;

use super::bars::{CopyProgress, StackProgress};
use super::story;
use crate::control_plane::api::Outcome;
use crate::operation::{Event, EventSink};
use crate::output::Printer;
use crate::preflight::Outcome as PreflightOutcome;

/// Renders events through the printer.
pub struct Terminal<'a> {
    printer: &'a Printer,
    stacks: Mutex<StackProgress>,
    /// Only the `mirror` command shows the copy's progress.
    copy: Option<Mutex<CopyProgress>>,
}

impl<'a> Terminal<'a> {
    pub fn new(printer: &'a Printer) -> Self {
        Terminal {
            printer,
            stacks: Mutex::new(StackProgress::new(printer)),
            copy: None,
        }
    }

    /// A terminal that shows an image copy's progress.
    pub fn copying(printer: &'a Printer) -> Self {
        Terminal {
            copy: Some(Mutex::new(CopyProgress::new(printer))),
            ..Terminal::new(printer)
        }
    }

    /// Clears what progress is still drawn.
    pub fn finish(&self) {
        if let Some(copy) = &self.copy {
            lock(copy).finish();
        }
    }

    fn warn(&self, text: impl std::fmt::Display) {
        self.printer.warn(text);
    }

    fn status(&self, text: impl std::fmt::Display) {
        self.printer.status(text);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn rounded(time: jiff::Timestamp) -> jiff::Timestamp {
    time.round(jiff::Unit::Second).unwrap_or(time)
}

impl EventSink for Terminal<'_> {
    fn emit(&self, event: Event) {
        // Warnings are said in both modes: as text, or as the printer's JSON warning line.
        if let Some(warning) = warning(&event) {
            self.warn(warning);
        }
        if self.printer.json_mode() {
            if let Some(line) = event.json() {
                self.printer.json_line(&line);
            }
            return;
        }
        self.text(event);
    }
}

/// The warning an event is, if it is one.
fn warning(event: &Event) -> Option<String> {
    Some(match event {
        Event::Superseded { kind, operation_id } => format!(
            "an interrupted {kind} ({operation_id}) was asked something else; it is recorded as abandoned and this run starts anew"
        ),
        Event::Stopping => "stopping after the current step; the lock is released and the journal kept (press Ctrl-C again to stop at once)".into(),
        Event::LockNotReleased { error } => format!("the lock was not released: {error}"),
        Event::PreflightSkipped => "preflight skipped (--skip-preflight or STACKWRIGHT_SKIP_PREFLIGHT): quotas, leftover stacks, the certificate and connectivity were not checked".into(),
        Event::OfferRefused { version, error } => format!("release {version} is offered but refused: {error}"),
        Event::NotRegistered { token_file } => format!(
            "not registered with the control plane: upgrades will not be offered until a registration token is put in {token_file} or STACKWRIGHT_REGISTRATION_TOKEN and `stackwright upgrade` runs"
        ),
        Event::InstallNotReported { error, hint } => format!(
            "the control plane was not told about this install: {error}{}",
            hint.as_ref().map(|hint| format!(" ({hint})")).unwrap_or_default()
        ),
        Event::ResultNotReported { error } => format!("the result was not reported to the control plane: {error}"),
        Event::DeletingData { instance } => format!(
            "--delete-data: the data stack of {instance} is deleted too. Its buckets are emptied and its tables dropped; this cannot be undone."
        ),
        Event::TeardownWarning { message } => message.clone(),
        _ => return None,
    })
}

impl Terminal<'_> {
    /// An event for people, in text mode.
    fn text(&self, event: Event) {
        let printer = self.printer;
        match event {
            Event::LockWaiting { instance, holder, wait_seconds } => self.status(format!(
                "Waiting up to {wait_seconds} s for the lock on {instance}, held by {holder}"
            )),
            Event::Resuming { journal } => {
                let done = if journal.completed.is_empty() {
                    String::new()
                } else {
                    let phases: Vec<String> = journal.completed.iter().map(ToString::to_string).collect();
                    format!(" (done: {})", phases.join(", "))
                };
                self.status(format!(
                    "Resuming the interrupted {} {} started {} by {}{done}",
                    journal.kind,
                    journal.operation_id,
                    rounded(journal.started_at),
                    journal.started_by,
                ));
            }
            Event::PreflightDeferred { instance } => self.status(format!(
                "Preflight: not run, another run holds the lock of {instance}."
            )),
            Event::PreflightStarted => self.status(
                "Preflight: checking the account, quotas, leftover stacks, the certificate and connectivity...",
            ),
            Event::Preflight { report } => match report.result {
                PreflightOutcome::Pass => self.status(format!("Preflight: {}.", report.summary())),
                PreflightOutcome::Fail => self.status(&report),
                _ => {
                    self.status(format!("Preflight: {}:", report.summary()));
                    self.status(report.problems().trim_end());
                }
            },
            Event::DeployStarted => *lock(&self.stacks) = StackProgress::new(printer),
            Event::StackStarted { stack, action, resources } => {
                lock(&self.stacks).stack_started(printer, &stack, action, resources);
            }
            Event::Resource { detail } => lock(&self.stacks).event(printer, &detail),
            Event::StackFinished { stack, status, succeeded } => {
                lock(&self.stacks).stack_finished(printer, &stack, &status, succeeded);
            }
            Event::Note { message } => lock(&self.stacks).note(printer, &message),
            event => self.operation_text(event),
        }
    }

    /// The events of installs, upgrades and teardowns, in text mode.
    fn operation_text(&self, event: Event) {
        let printer = self.printer;
        match event {
            Event::Offered { version, channel } => self.status(format!(
                "The control plane offers release {version} on channel \"{channel}\""
            )),
            Event::Registered { instance_id, organization_id, secret } => self.status(format!(
                "Registered with the control plane as instance {instance_id} (organization {organization_id}); its token is kept in Secrets Manager as {secret}"
            )),
            Event::Installing { instance, release, mode, account, principal, region } => self.status(format!(
                "Installing {instance} (release {release}, {mode} mode) into account {account} as {principal}, region {region}"
            )),
            Event::InstallPlan { account, region, plan } => {
                if let Some(introduction) = story::introduction(&plan, &account, &region) {
                    self.status(introduction);
                    self.status("");
                }
                self.status(&plan);
            }
            Event::Mirrored { summary } => self.status(format!("Images: {summary}")),
            Event::Inventory { inventory, account, region } => {
                self.status(format!(
                    "Teardown of {} in account {account} ({region}). What is deleted and what is kept:",
                    inventory.instance
                ));
                self.status(&inventory);
            }
            Event::Decision { decision, .. } => printer.result(&decision),
            Event::Upgrading { instance, from, to } => {
                self.status(format!("Upgrading {instance} from {from} to {to}"));
            }
            Event::Plan { plan, review } => {
                self.status(&plan);
                self.status(&review);
            }
            Event::Health { health } => self.status(&health),
            Event::HandedOver { detail, .. } => printer.result(format!("Handed over: {detail}.")),
            Event::UpgradeFinished { instance, from, to, outcome, seconds, detail } => match outcome {
                Outcome::RolledBack => self.warn(format!(
                    "the upgrade to {to} failed and CloudFormation rolled it back: {instance} still runs {from}; {to} is skipped from now on (retry it with `stackwright upgrade --to {to}`)"
                )),
                Outcome::Parked => printer.result(format!(
                    "Upgrade to {to} parked: {detail}. Run `stackwright upgrade --to {to}` to review and apply it."
                )),
                Outcome::Succeeded => printer.result(format!(
                    "Upgraded {instance} from {from} to {to} in {seconds:.1} s."
                )),
                Outcome::Failed => {}
            },
            event => self.copy_progress(event),
        }
    }

    /// The copy's events, when this terminal shows them.
    fn copy_progress(&self, event: Event) {
        let Some(copy) = &self.copy else {
            return;
        };
        let printer = self.printer;
        let mut copy = lock(copy);
        match event {
            Event::ImageStarted { image, digest } => copy.image_started(printer, &image, &digest),
            Event::BytesCopied { total } => copy.bytes(total),
            Event::Blob {
                image,
                digest,
                size,
                outcome,
            } => {
                copy.blob(printer, &image, &digest, size, outcome);
            }
            Event::ImageFinished { image, outcome } => {
                copy.image_finished(printer, &image, outcome)
            }
            Event::ImageFailed { image, error } => copy.image_failed(printer, &image, &error),
            Event::Tagged { image, tag } => copy.tagged(printer, &image, &tag),
            Event::Retry {
                what,
                attempt,
                error,
            } => copy.retrying(printer, &what, attempt, &error),
            _ => {}
        }
    }
}
