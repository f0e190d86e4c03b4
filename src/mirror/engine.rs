//! The copy: images by digest from one registry to another. Manifests go verbatim, children
//! first; blobs stream from the source's GET into the destination's PUT, verified as they flow;
//! what the destination has is skipped, what another of its repositories has is mounted; tags go
//! last, and only once every image has arrived.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, try_join_all};
use futures_util::{FutureExt, StreamExt, stream};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::registry::{Manifest, Registry, RegistryError, is_digest, is_index};
use super::{ImageCopy, ImageFailure, MirrorError, MirrorSummary};

/// How hard the engine works.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Blob transfers at once, and images worked on at once.
    pub jobs: usize,
    /// Tries per request before a transient error (5xx, 429, a broken connection) is given up.
    pub attempts: u32,
    /// The wait before the first retry; it doubles with each.
    pub backoff: Duration,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            jobs: 8,
            attempts: 4,
            backoff: Duration::from_millis(200),
        }
    }
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobOutcome {
    Copied,
    Mounted,
    Skipped,
}

/// What happened to one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageOutcome {
    Copied,
    Skipped,
}

/// Progress callbacks; the CLI draws them as bars, lines or JSON. Called from many tasks at once.
pub trait MirrorReporter: Send + Sync {
    /// An image's digest is known and its copy starts.
    fn image_started(&self, _image: &str, _digest: &str) {}
    /// Bytes streamed so far in this run, all blobs together; called a few times a second.
    fn bytes_progress(&self, _total: u64) {}
    /// A blob of an image reached the destination (or was there already).
    fn blob_finished(&self, _image: &str, _digest: &str, _size: u64, _outcome: BlobOutcome) {}
    fn image_finished(&self, _image: &str, _outcome: ImageOutcome) {}
    fn image_failed(&self, _image: &str, _error: &RegistryError) {}
    fn tagged(&self, _image: &str, _tag: &str) {}
    fn retrying(&self, _what: &str, _attempt: u32, _error: &RegistryError) {}
}

/// A reporter that reports nothing.
pub struct SilentReporter;
impl MirrorReporter for SilentReporter {}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
struct ManifestBody {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Default)]
struct Counters {
    manifests_copied: AtomicU64,
    blobs_copied: AtomicU64,
    blobs_mounted: AtomicU64,
    blobs_skipped: AtomicU64,
    bytes_copied: AtomicU64,
}

struct Run<'a> {
    source: &'a dyn Registry,
    destination: &'a dyn Registry,
    reporter: &'a dyn MirrorReporter,
    options: CopyOptions,
    transfers: Semaphore,
    /// (destination repository, digest) of blobs and manifests known to be there.
    present: Mutex<HashSet<(String, String)>>,
    /// Per blob digest: a lock that serializes its transfers, and a destination repository
    /// known to hold it (to mount from).
    holders: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<String>>>>>,
    counters: Counters,
    /// Bytes streamed so far, failed attempts included: the progress figure.
    streamed: Arc<AtomicU64>,
}

/// Copies images from `source` to `destination`. Every image's content is copied first (in
/// parallel, `options.jobs` at a time); the tags follow only if every image arrived, so a tag
/// never names a release that is only partly there.
pub async fn copy_images(
    source: &dyn Registry,
    destination: &dyn Registry,
    images: &[ImageCopy],
    options: &CopyOptions,
    reporter: &dyn MirrorReporter,
) -> Result<MirrorSummary, MirrorError> {
    let started = Instant::now();
    let jobs = options.jobs.max(1);
    let run = Run {
        source,
        destination,
        reporter,
        options: options.clone(),
        transfers: Semaphore::new(jobs),
        present: Mutex::new(HashSet::new()),
        holders: Mutex::new(HashMap::new()),
        counters: Counters::default(),
        streamed: Arc::default(),
    };
    let streamed = run.streamed.clone();
    let work = copy_all(&run, images, jobs, started);
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = ticker.tick() => reporter.bytes_progress(streamed.load(Ordering::Relaxed)),
        }
    };
    reporter.bytes_progress(streamed.load(Ordering::Relaxed));
    result
}

async fn copy_all(
    run: &Run<'_>,
    images: &[ImageCopy],
    jobs: usize,
    started: Instant,
) -> Result<MirrorSummary, MirrorError> {
    let reporter = run.reporter;
    let results: Vec<(usize, Result<CopiedImage, RegistryError>)> =
        stream::iter(images.iter().enumerate())
            .map(|(index, image)| async move { (index, run.copy_image(image).await) })
            .buffer_unordered(jobs)
            .collect()
            .await;

    let mut copied = Vec::new();
    let mut failures = Vec::new();
    for (index, result) in results {
        match result {
            Ok(image) => copied.push((index, image)),
            Err(error) => {
                reporter.image_failed(&images[index].label(), &error);
                failures.push(ImageFailure {
                    image: images[index].label(),
                    error,
                });
            }
        }
    }
    let mut summary = run.summary(started);
    if !failures.is_empty() {
        failures.sort_by(|a, b| a.image.cmp(&b.image));
        summary.images_copied = copied
            .iter()
            .filter(|(_, image)| image.outcome == ImageOutcome::Copied)
            .count() as u64;
        return Err(MirrorError::Images {
            failures,
            total: images.len(),
            summary: Box::new(summary),
        });
    }

    // Tags last: every image is complete in the destination.
    copied.sort_by_key(|(index, _)| *index);
    let tag_results: Vec<Result<u64, (usize, RegistryError)>> = stream::iter(copied.iter())
        .map(|(index, image)| {
            let copy = &images[*index];
            async move {
                run.push_tags(copy, image)
                    .await
                    .map_err(|error| (*index, error))
            }
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    let mut tags_pushed = 0;
    for result in tag_results {
        match result {
            Ok(count) => tags_pushed += count,
            Err((index, error)) => failures.push(ImageFailure {
                image: images[index].label(),
                error,
            }),
        }
    }
    let mut summary = run.summary(started);
    summary.tags_pushed = tags_pushed;
    for (_, image) in &copied {
        match image.outcome {
            ImageOutcome::Copied => summary.images_copied += 1,
            ImageOutcome::Skipped => summary.images_skipped += 1,
        }
    }
    if !failures.is_empty() {
        return Err(MirrorError::Images {
            failures,
            total: images.len(),
            summary: Box::new(summary),
        });
    }
    Ok(summary)
}

/// An image whose content is in the destination, waiting for its tags.
struct CopiedImage {
    digest: String,
    outcome: ImageOutcome,
    /// Tags still to push (those not already naming the digest).
    tags: Vec<String>,
    /// The root manifest, when it was fetched.
    manifest: Option<Manifest>,
}

impl Run<'_> {
    fn summary(&self, started: Instant) -> MirrorSummary {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MirrorSummary {
            images_copied: 0,
            images_skipped: 0,
            manifests_copied: load(&self.counters.manifests_copied),
            blobs_copied: load(&self.counters.blobs_copied),
            blobs_mounted: load(&self.counters.blobs_mounted),
            blobs_skipped: load(&self.counters.blobs_skipped),
            bytes_copied: load(&self.counters.bytes_copied),
            tags_pushed: 0,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// Runs a request again after a transient error, waiting longer each time.
    async fn retry<T, F, Fut>(&self, what: &str, mut operation: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut attempt = 1;
        loop {
            match operation().await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_transient() && attempt < self.options.attempts => {
                    self.reporter.retrying(what, attempt, &error);
                    tracing::debug!(%error, attempt, what, "retrying");
                    let wait = self.options.backoff * 2u32.saturating_pow(attempt - 1);
                    tokio::time::sleep(wait.min(Duration::from_secs(10))).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn is_present(&self, repository: &str, digest: &str) -> bool {
        self.present
            .lock()
            .map(|present| present.contains(&(repository.to_owned(), digest.to_owned())))
            .unwrap_or(false)
    }

    fn mark_present(&self, repository: &str, digest: &str) {
        if let Ok(mut present) = self.present.lock() {
            present.insert((repository.to_owned(), digest.to_owned()));
        }
    }

    async fn copy_image(&self, image: &ImageCopy) -> Result<CopiedImage, RegistryError> {
        let label = image.label();
        let digest = if is_digest(&image.source_reference) {
            image.source_reference.clone()
        } else {
            self.retry(&label, || {
                self.source
                    .manifest_digest(&image.source_repository, &image.source_reference)
            })
            .await?
            .ok_or_else(|| RegistryError::NotFound {
                registry: self.source.name().to_owned(),
                repository: image.source_repository.clone(),
                what: format!("tag {}", image.source_reference),
            })?
        };
        self.reporter.image_started(&label, &digest);

        // The tags that do not name this digest yet. All of them in place means nothing to do.
        let mut tags = Vec::new();
        for tag in &image.tags {
            let current = self
                .retry(&label, || {
                    self.destination
                        .manifest_digest(&image.destination_repository, tag)
                })
                .await?;
            if current.as_deref() != Some(digest.as_str()) {
                tags.push(tag.clone());
            }
        }
        if !image.tags.is_empty() && tags.is_empty() {
            self.reporter.image_finished(&label, ImageOutcome::Skipped);
            return Ok(CopiedImage {
                digest,
                outcome: ImageOutcome::Skipped,
                tags,
                manifest: None,
            });
        }

        let (copied, manifest) = self
            .copy_manifest(
                label.clone(),
                image.source_repository.clone(),
                image.destination_repository.clone(),
                digest.clone(),
            )
            .await?;
        let outcome = if copied {
            ImageOutcome::Copied
        } else {
            ImageOutcome::Skipped
        };
        self.reporter.image_finished(&label, outcome);
        Ok(CopiedImage {
            digest,
            outcome,
            tags,
            manifest,
        })
    }

    /// Copies a manifest and everything it refers to, children first. Returns whether it was
    /// copied (false: the destination had it), and the manifest when it was fetched.
    fn copy_manifest(
        &self,
        image: String,
        source_repository: String,
        destination_repository: String,
        digest: String,
    ) -> BoxFuture<'_, Result<(bool, Option<Manifest>), RegistryError>> {
        async move {
            if self.is_present(&destination_repository, &digest) {
                return Ok((false, None));
            }
            let existing = self
                .retry(&image, || {
                    self.destination
                        .manifest_digest(&destination_repository, &digest)
                })
                .await?;
            if existing.is_some() {
                // A registry accepts a manifest only once everything it refers to is there.
                self.mark_present(&destination_repository, &digest);
                return Ok((false, None));
            }
            let manifest = self
                .retry(&image, || self.source.manifest(&source_repository, &digest))
                .await?;
            let body: ManifestBody =
                serde_json::from_slice(&manifest.bytes).map_err(|error| RegistryError::Other {
                    registry: self.source.name().to_owned(),
                    message: format!(
                        "the manifest {source_repository}@{digest} is not valid JSON: {error}"
                    ),
                })?;
            if is_index(&manifest.media_type) || !body.manifests.is_empty() {
                try_join_all(body.manifests.iter().map(|child| {
                    self.copy_manifest(
                        image.clone(),
                        source_repository.clone(),
                        destination_repository.clone(),
                        child.digest.clone(),
                    )
                }))
                .await?;
            } else {
                try_join_all(body.config.iter().chain(body.layers.iter()).map(|blob| {
                    self.copy_blob(
                        &image,
                        &source_repository,
                        &destination_repository,
                        &blob.digest,
                        blob.size,
                    )
                }))
                .await?;
            }
            self.retry(&image, || {
                self.destination
                    .put_manifest(&destination_repository, &digest, &manifest)
            })
            .await?;
            self.counters
                .manifests_copied
                .fetch_add(1, Ordering::Relaxed);
            self.mark_present(&destination_repository, &digest);
            Ok((true, Some(manifest)))
        }
        .boxed()
    }

    async fn copy_blob(
        &self,
        image: &str,
        source_repository: &str,
        destination_repository: &str,
        digest: &str,
        size: u64,
    ) -> Result<(), RegistryError> {
        if !is_digest(digest) {
            return Err(RegistryError::Other {
                registry: self.source.name().to_owned(),
                message: format!(
                    "{source_repository} refers to a blob \"{digest}\" that is not a sha256 digest"
                ),
            });
        }
        if self.is_present(destination_repository, digest) {
            return Ok(());
        }
        let slot = {
            let mut holders = self.holders.lock().map_err(|_| RegistryError::Other {
                registry: self.destination.name().to_owned(),
                message: "an earlier transfer panicked".into(),
            })?;
            holders.entry(digest.to_owned()).or_default().clone()
        };
        let mut holder = slot.lock().await;
        if self.is_present(destination_repository, digest) {
            return Ok(());
        }
        let finish = |outcome: BlobOutcome| {
            self.mark_present(destination_repository, digest);
            self.reporter.blob_finished(image, digest, size, outcome);
        };
        if self
            .retry(image, || {
                self.destination.blob_exists(destination_repository, digest)
            })
            .await?
        {
            self.counters.blobs_skipped.fetch_add(1, Ordering::Relaxed);
            holder.get_or_insert_with(|| destination_repository.to_owned());
            finish(BlobOutcome::Skipped);
            return Ok(());
        }
        if let Some(from) = holder.clone()
            && from != destination_repository
            && self
                .retry(image, || {
                    self.destination
                        .mount_blob(destination_repository, &from, digest)
                })
                .await?
        {
            self.counters.blobs_mounted.fetch_add(1, Ordering::Relaxed);
            finish(BlobOutcome::Mounted);
            return Ok(());
        }

        let _permit = self
            .transfers
            .acquire()
            .await
            .map_err(|_| RegistryError::Other {
                registry: self.destination.name().to_owned(),
                message: "the transfer pool closed".into(),
            })?;
        let mut attempt = 1;
        loop {
            match self
                .transfer(source_repository, destination_repository, digest, size)
                .await
            {
                Ok(()) => break,
                Err(error) if error.is_transient() && attempt < self.options.attempts => {
                    self.reporter.retrying(digest, attempt, &error);
                    let wait = self.options.backoff * 2u32.saturating_pow(attempt - 1);
                    tokio::time::sleep(wait.min(Duration::from_secs(10))).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
        self.counters.blobs_copied.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_copied
            .fetch_add(size, Ordering::Relaxed);
        *holder = Some(destination_repository.to_owned());
        finish(BlobOutcome::Copied);
        Ok(())
    }

    /// One attempt at streaming a blob: the source's GET body is the destination's PUT body.
    /// A failure of the source (such as bytes that do not match the digest) is the one reported,
    /// rather than the destination's view of a broken upload.
    async fn transfer(
        &self,
        source_repository: &str,
        destination_repository: &str,
        digest: &str,
        size: u64,
    ) -> Result<(), RegistryError> {
        let stream = self.source.blob(source_repository, digest, size).await?;
        let source_failure: Arc<Mutex<Option<RegistryError>>> = Arc::default();
        let recorded = source_failure.clone();
        let streamed = self.streamed.clone();
        let counted = stream.map(move |item| {
            match &item {
                Ok(chunk) => {
                    streamed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    if let Ok(mut slot) = recorded.lock() {
                        *slot = Some(error.clone());
                    }
                }
            }
            item
        });
        let result = self
            .destination
            .put_blob(destination_repository, digest, size, Box::pin(counted))
            .await;
        let from_source = source_failure.lock().ok().and_then(|mut slot| slot.take());
        match (result, from_source) {
            (_, Some(error)) => Err(error),
            (result, None) => result,
        }
    }
}

impl ImageCopy {
    /// `repository:tag` or `repository@digest` of the source, for messages.
    pub fn label(&self) -> String {
        if is_digest(&self.source_reference) {
            format!("{}@{}", self.source_repository, self.source_reference)
        } else {
            format!("{}:{}", self.source_repository, self.source_reference)
        }
    }
}

impl Run<'_> {
    async fn push_tags(&self, copy: &ImageCopy, image: &CopiedImage) -> Result<u64, RegistryError> {
        if image.tags.is_empty() {
            return Ok(0);
        }
        let label = copy.label();
        let manifest = match &image.manifest {
            Some(manifest) => manifest.clone(),
            None => {
                self.retry(&label, || {
                    self.destination
                        .manifest(&copy.destination_repository, &image.digest)
                })
                .await?
            }
        };
        for tag in &image.tags {
            self.retry(&label, || {
                self.destination
                    .put_manifest(&copy.destination_repository, tag, &manifest)
            })
            .await?;
            self.reporter.tagged(&label, tag);
        }
        Ok(image.tags.len() as u64)
    }
}
