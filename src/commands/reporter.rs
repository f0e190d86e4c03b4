//! The CLI's side of progress: indicatif bars on a terminal, one plain line per event
//! otherwise, one JSON object per event with `--output json`; and the confirmation gate.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::output::{Printer, Verbosity};
use crate::provision::{DeployReporter, Gate, StackAction, StackEvent};

pub struct CliReporter<'a> {
    printer: &'a Printer,
    bars: Option<MultiProgress>,
    stacks: Mutex<HashMap<String, ProgressBar>>,
    started: Instant,
}

impl<'a> CliReporter<'a> {
    pub fn new(printer: &'a Printer) -> Self {
        let bars = printer
            .progress_bars
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        CliReporter {
            printer,
            bars,
            stacks: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    fn elapsed(&self) -> String {
        format!("{:>6.1}s", self.started.elapsed().as_secs_f64())
    }

    fn line(&self, text: String) {
        if self.printer.verbosity == Verbosity::Quiet {
            return;
        }
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text);
            }
            None => self.printer.status(text),
        }
    }
}

impl DeployReporter for CliReporter<'_> {
    fn stack_started(&self, stack: &str, action: StackAction, resources: usize) {
        if self.printer.json_mode() {
            self.printer
                .json_line(&json!({ "event": "stack_started", "stack": stack, "action": action, "resources": resources }));
            return;
        }
        if let Some(bars) = &self.bars {
            let bar = bars.add(ProgressBar::new(resources as u64));
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {prefix:<24} [{bar:24.cyan/blue}] {pos:>3}/{len:<3} {wide_msg}")
                    .expect("the progress template is valid")
                    .progress_chars("=> "),
            );
            bar.set_prefix(stack.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            self.stacks
                .lock()
                .expect("not poisoned")
                .insert(stack.to_owned(), bar);
        } else {
            self.line(format!(
                "{} {stack}: {action} ({resources} resources)",
                self.elapsed()
            ));
        }
    }

    fn event(&self, event: &StackEvent) {
        if self.printer.json_mode() {
            self.printer
                .json_line(&json!({ "event": "resource", "detail": event }));
            return;
        }
        let bar = self
            .stacks
            .lock()
            .expect("not poisoned")
            .get(&event.stack_name)
            .cloned();
        match bar {
            Some(bar) => {
                if !event.is_stack_event() && event.status.ends_with("_COMPLETE") {
                    bar.inc(1);
                }
                bar.set_message(format!("{} {}", event.logical_id, event.status));
                if event.is_failure() {
                    let reason = event.reason.as_deref().unwrap_or_default();
                    self.line(format!(
                        "  {} {} {}: {reason}",
                        event.stack_name, event.logical_id, event.status
                    ));
                }
            }
            None => {
                let reason = event
                    .reason
                    .as_deref()
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default();
                self.line(format!(
                    "{} {} {} {} {}{reason}",
                    self.elapsed(),
                    event.stack_name,
                    event.resource_type,
                    event.logical_id,
                    event.status
                ));
            }
        }
    }

    fn stack_finished(&self, stack: &str, status: &str, succeeded: bool) {
        if self.printer.json_mode() {
            self.printer
                .json_line(&json!({ "event": "stack_finished", "stack": stack, "status": status, "succeeded": succeeded }));
            return;
        }
        let bar = self.stacks.lock().expect("not poisoned").remove(stack);
        let mark = if succeeded { "✓" } else { "✗" };
        match bar {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("{prefix:<26} {wide_msg}")
                        .expect("the template is valid"),
                );
                bar.set_prefix(format!("{mark} {stack}"));
                bar.finish_with_message(format!(
                    "{status} after {:.1}s",
                    bar.elapsed().as_secs_f64()
                ));
            }
            None => self.line(format!("{} {mark} {stack}: {status}", self.elapsed())),
        }
    }

    fn note(&self, message: &str) {
        if self.printer.json_mode() {
            self.printer
                .json_line(&json!({ "event": "note", "message": message }));
        } else {
            self.line(format!("{} {message}", self.elapsed()));
        }
    }
}

/// Asks on the terminal; `--yes` answers yes; without a terminal nothing risky goes ahead.
#[derive(Debug, Clone)]
pub struct CliGate {
    pub assume_yes: bool,
}

impl CliGate {
    pub fn interactive() -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }
}

impl Gate for CliGate {
    fn confirm(&self, question: &str) -> bool {
        if self.assume_yes {
            return true;
        }
        if !Self::interactive() {
            return false;
        }
        dialoguer::Confirm::new()
            .with_prompt(question)
            .default(false)
            .interact()
            .unwrap_or(false)
    }
}
