//! Progress on a terminal: a bar per stack while stacks deploy, a byte counter while images
//! copy; one plain line per event where there is no terminal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::mirror::{BlobOutcome, ImageOutcome, human_bytes};
use crate::output::{Printer, Verbosity};
use crate::provision::{StackAction, StackEvent};

/// The stacks of one deployment: bars on a terminal, timed lines otherwise.
pub(super) struct StackProgress {
    bars: Option<MultiProgress>,
    stacks: HashMap<String, ProgressBar>,
    started: Instant,
}

impl StackProgress {
    pub(super) fn new(printer: &Printer) -> Self {
        StackProgress {
            bars: printer
                .progress_bars
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            stacks: HashMap::new(),
            started: Instant::now(),
        }
    }

    fn elapsed(&self) -> String {
        format!("{:>6.1}s", self.started.elapsed().as_secs_f64())
    }

    fn line(&self, printer: &Printer, text: String) {
        if printer.verbosity == Verbosity::Quiet {
            return;
        }
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text);
            }
            None => printer.status(text),
        }
    }

    pub(super) fn stack_started(
        &mut self,
        printer: &Printer,
        stack: &str,
        action: StackAction,
        resources: usize,
    ) {
        let Some(bars) = &self.bars else {
            let text = format!(
                "{} {stack}: {action} ({resources} resources)",
                self.elapsed()
            );
            return self.line(printer, text);
        };
        let bar = bars.add(ProgressBar::new(resources as u64));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:<24} [{bar:24.cyan/blue}] {pos:>3}/{len:<3} {wide_msg}",
            )
            .expect("the progress template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(stack.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        self.stacks.insert(stack.to_owned(), bar);
    }

    pub(super) fn event(&self, printer: &Printer, event: &StackEvent) {
        let Some(bar) = self.stacks.get(&event.stack_name) else {
            let reason = event
                .reason
                .as_deref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default();
            let text = format!(
                "{} {} {} {} {}{reason}",
                self.elapsed(),
                event.stack_name,
                event.resource_type,
                event.logical_id,
                event.status
            );
            return self.line(printer, text);
        };
        if !event.is_stack_event() && event.status.ends_with("_COMPLETE") {
            bar.inc(1);
        }
        bar.set_message(format!("{} {}", event.logical_id, event.status));
        if event.is_failure() {
            let reason = event.reason.as_deref().unwrap_or_default();
            let text = format!(
                "  {} {} {}: {reason}",
                event.stack_name, event.logical_id, event.status
            );
            self.line(printer, text);
        }
    }

    pub(super) fn stack_finished(
        &mut self,
        printer: &Printer,
        stack: &str,
        status: &str,
        succeeded: bool,
    ) {
        let mark = if succeeded { "✓" } else { "✗" };
        let Some(bar) = self.stacks.remove(stack) else {
            let text = format!("{} {mark} {stack}: {status}", self.elapsed());
            return self.line(printer, text);
        };
        bar.set_style(
            ProgressStyle::with_template("{prefix:<26} {wide_msg}").expect("the template is valid"),
        );
        bar.set_prefix(format!("{mark} {stack}"));
        bar.finish_with_message(format!(
            "{status} after {:.1}s",
            bar.elapsed().as_secs_f64()
        ));
    }

    pub(super) fn note(&self, printer: &Printer, message: &str) {
        let text = format!("{} {message}", self.elapsed());
        self.line(printer, text);
    }
}

/// An image copy: one counter of bytes on a terminal, a line per image otherwise (and per
/// blob with `-v`).
pub(super) struct CopyProgress {
    bar: Option<ProgressBar>,
    started: Instant,
    copied: u64,
    skipped: u64,
}

impl CopyProgress {
    pub(super) fn new(printer: &Printer) -> Self {
        let bar = (printer.progress_bars && printer.verbosity != Verbosity::Quiet).then(|| {
            let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bar = bars.add(ProgressBar::new_spinner());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner:.cyan} {prefix} {binary_bytes} at {binary_bytes_per_sec} {wide_msg}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        CopyProgress {
            bar,
            started: Instant::now(),
            copied: 0,
            skipped: 0,
        }
    }

    fn line(&self, printer: &Printer, text: String) {
        if printer.verbosity == Verbosity::Quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            None => printer.status(text),
        }
    }

    fn elapsed(&self) -> String {
        format!("{:>6.2}s", self.started.elapsed().as_secs_f64())
    }

    pub(super) fn image_started(&self, printer: &Printer, image: &str, digest: &str) {
        if self.bar.is_none() && printer.verbosity == Verbosity::Verbose {
            self.line(printer, format!("{} {image}: {digest}", self.elapsed()));
        }
    }

    pub(super) fn bytes(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(total);
        }
    }

    pub(super) fn blob(
        &self,
        printer: &Printer,
        image: &str,
        digest: &str,
        size: u64,
        outcome: BlobOutcome,
    ) {
        if printer.verbosity != Verbosity::Verbose {
            return;
        }
        let outcome = match outcome {
            BlobOutcome::Copied => "copied",
            BlobOutcome::Mounted => "mounted",
            BlobOutcome::Skipped => "already there",
        };
        let text = format!(
            "{}   {image}: blob {digest} ({}) {outcome}",
            self.elapsed(),
            human_bytes(size)
        );
        self.line(printer, text);
    }

    pub(super) fn image_finished(&mut self, printer: &Printer, image: &str, outcome: ImageOutcome) {
        match outcome {
            ImageOutcome::Copied => self.copied += 1,
            ImageOutcome::Skipped => self.skipped += 1,
        }
        if let Some(bar) = &self.bar {
            bar.set_prefix(format!(
                "{} copied, {} already there",
                self.copied, self.skipped
            ));
        }
        let outcome = match outcome {
            ImageOutcome::Copied => "copied",
            ImageOutcome::Skipped => "already there",
        };
        self.line(printer, format!("{} ✓ {image}: {outcome}", self.elapsed()));
    }

    pub(super) fn image_failed(&self, printer: &Printer, image: &str, error: &str) {
        self.line(printer, format!("{} ✗ {image}: {error}", self.elapsed()));
    }

    pub(super) fn tagged(&self, printer: &Printer, image: &str, tag: &str) {
        if printer.verbosity == Verbosity::Verbose {
            self.line(
                printer,
                format!("{}   {image}: tagged {tag}", self.elapsed()),
            );
        }
    }

    pub(super) fn retrying(&self, printer: &Printer, what: &str, attempt: u32, error: &str) {
        let text = format!(
            "{}   {what}: attempt {attempt} failed ({error}); trying again",
            self.elapsed()
        );
        self.line(printer, text);
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
