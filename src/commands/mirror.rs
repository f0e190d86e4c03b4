//! `stackwright mirror`: a release's images into the instance's ECR repositories, or a list of
//! images between two registries; progress as bars, lines or JSON, then the summary.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::aws::Aws;
use crate::cli::MirrorArgs;
use crate::error::{Error, ExitStatus};
use crate::mirror::{
    self, BlobOutcome, CopyOptions, ImageList, ImageOutcome, MirrorReporter, MirrorSettings,
    RegistryError, RegistryOverrides, RegistryTarget, human_bytes,
};
use crate::output::{Printer, Verbosity};
use crate::provision::ProvisionError;
use crate::release::ReleaseManifest;
use crate::settings::GlobalSettings;

use super::deploy::block_on;

pub fn mirror(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &MirrorArgs,
) -> Result<ExitStatus, Error> {
    let overrides = RegistryOverrides::from_env()?;
    let options = CopyOptions {
        jobs: usize::from(args.jobs),
        ..CopyOptions::default()
    };
    let reporter = CliMirrorReporter::new(printer);
    let summary = match (&args.images, &args.release) {
        (Some(images), _) => {
            let list = ImageList::read(images)?;
            let from: RegistryTarget = args.from.as_deref().unwrap_or_default().parse()?;
            let to: RegistryTarget = args.to.as_deref().unwrap_or_default().parse()?;
            let mirror_settings = MirrorSettings {
                instance: String::new(),
                region: settings.region.clone().unwrap_or_default(),
                profile: settings.profile.clone(),
                options,
                plain_http: args.plain_http,
                overrides,
            };
            printer.status(format_args!(
                "Copying {} from {} to {}",
                crate::output::count(list.images.len(), "image", "images"),
                from.host,
                args.to.as_deref().unwrap_or_default()
            ));
            block_on(mirror::mirror_list::<Aws>(
                &mirror_settings,
                &from,
                &to,
                &list,
                &reporter,
            ))
            .map_err(Error::from)
        }
        (None, Some(release)) => {
            let config = settings.load_config()?;
            let region = config.instance.region.clone();
            let mirror_settings = MirrorSettings {
                instance: config.instance.name.clone(),
                region: region.clone(),
                profile: settings.profile.clone(),
                options,
                plain_http: args.plain_http,
                overrides,
            };
            block_on(async {
                let manifest = load_release(settings, release).await?;
                let aws = Aws::connect(&region, settings.profile.as_deref())
                    .await
                    .map_err(|source| {
                        Error::Provision(ProvisionError::deploy("connect", source))
                    })?;
                printer.status(format_args!(
                    "Mirroring the {} images of release {} into the repositories of {}",
                    manifest.components.len(),
                    manifest.version,
                    mirror_settings.instance
                ));
                mirror::mirror_release(&aws, &mirror_settings, &manifest, &reporter)
                    .await
                    .map_err(Error::from)
            })
        }
        (None, None) => {
            return Err(Error::Usage {
                message: "mirror needs --release, or --images with --from and --to".into(),
                hint: "pass --release manifests/releases/1.0.0.json, or --images FILE --from HOST --to HOST".into(),
            });
        }
    };
    reporter.finish();
    let summary = summary?;
    if printer.json_mode() {
        printer.data(&summary);
    } else {
        printer.result(&summary);
    }
    Ok(ExitStatus::Success)
}

/// A manifest from a path, or a version verified from the release repository.
async fn load_release(settings: &GlobalSettings, release: &str) -> Result<ReleaseManifest, Error> {
    let config = settings.load_config().ok();
    super::release::load(settings, config.as_ref(), release).await
}

/// Progress for people or programs: one bar of bytes on a terminal, a line per image
/// otherwise, one JSON object per event with `--output json`.
struct CliMirrorReporter<'a> {
    printer: &'a Printer,
    bar: Option<ProgressBar>,
    started: Instant,
    images: Mutex<(u64, u64)>,
}

impl<'a> CliMirrorReporter<'a> {
    fn new(printer: &'a Printer) -> Self {
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
        CliMirrorReporter {
            printer,
            bar,
            started: Instant::now(),
            images: Mutex::new((0, 0)),
        }
    }

    fn line(&self, text: String) {
        if self.printer.verbosity == Verbosity::Quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            None => self.printer.status(text),
        }
    }

    fn elapsed(&self) -> String {
        format!("{:>6.2}s", self.started.elapsed().as_secs_f64())
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl MirrorReporter for CliMirrorReporter<'_> {
    fn image_started(&self, image: &str, digest: &str) {
        if self.printer.json_mode() {
            self.printer
                .json_line(&json!({ "event": "image_started", "image": image, "digest": digest }));
        } else if self.bar.is_none() && self.printer.verbosity == Verbosity::Verbose {
            self.line(format!("{} {image}: {digest}", self.elapsed()));
        }
    }

    fn bytes_progress(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(total);
        }
    }

    fn blob_finished(&self, image: &str, digest: &str, size: u64, outcome: BlobOutcome) {
        if self.printer.json_mode() {
            self.printer.json_line(&json!({
                "event": "blob", "image": image, "digest": digest, "size": size, "outcome": outcome,
            }));
        } else if self.printer.verbosity == Verbosity::Verbose {
            let outcome = match outcome {
                BlobOutcome::Copied => "copied",
                BlobOutcome::Mounted => "mounted",
                BlobOutcome::Skipped => "already there",
            };
            self.line(format!(
                "{}   {image}: blob {digest} ({}) {outcome}",
                self.elapsed(),
                human_bytes(size)
            ));
        }
    }

    fn image_finished(&self, image: &str, outcome: ImageOutcome) {
        if self.printer.json_mode() {
            self.printer.json_line(
                &json!({ "event": "image_finished", "image": image, "outcome": outcome }),
            );
            return;
        }
        let (done, skipped) = {
            let mut images = self
                .images
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            match outcome {
                ImageOutcome::Copied => images.0 += 1,
                ImageOutcome::Skipped => images.1 += 1,
            }
            *images
        };
        if let Some(bar) = &self.bar {
            bar.set_prefix(format!("{done} copied, {skipped} already there"));
        }
        let outcome = match outcome {
            ImageOutcome::Copied => "copied",
            ImageOutcome::Skipped => "already there",
        };
        self.line(format!("{} ✓ {image}: {outcome}", self.elapsed()));
    }

    fn image_failed(&self, image: &str, error: &RegistryError) {
        if self.printer.json_mode() {
            self.printer.json_line(
                &json!({ "event": "image_failed", "image": image, "error": error.to_string() }),
            );
        } else {
            self.line(format!("{} ✗ {image}: {error}", self.elapsed()));
        }
    }

    fn tagged(&self, image: &str, tag: &str) {
        if self.printer.json_mode() {
            self.printer
                .json_line(&json!({ "event": "tagged", "image": image, "tag": tag }));
        } else if self.printer.verbosity == Verbosity::Verbose {
            self.line(format!("{}   {image}: tagged {tag}", self.elapsed()));
        }
    }

    fn retrying(&self, what: &str, attempt: u32, error: &RegistryError) {
        if self.printer.json_mode() {
            self.printer.json_line(&json!({
                "event": "retry", "what": what, "attempt": attempt, "error": error.to_string(),
            }));
        } else {
            self.line(format!(
                "{}   {what}: attempt {attempt} failed ({error}); trying again",
                self.elapsed()
            ));
        }
    }
}
