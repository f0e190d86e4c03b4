//! Signed releases: the generated JSON Schema of the manifest, and trust in a release repository.
//! Each refusal is asserted by the text a user reads. Repositories are built in temporary
//! directories with `stackwright::release::signing` (the vendor side), with expiries relative to
//! the clock, and verified with `now` passed in.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use semver::Version;
use stackwright::release::signing::{
    Expiries, build_repository, expiry, generate_keys, resign_timestamp, rotate_keys,
};
use stackwright::release::{
    RecordedFloor, ReleaseManifest, ReleaseSelection, RepositorySource, Trust, TrustError,
    VerifiedRelease, verify,
};

use crate::common::REPOSITORY;

#[test]
fn the_committed_release_schema_is_the_generated_one() {
    let path = Path::new(REPOSITORY).join("manifests/release.schema.json");
    let generated = serde_json::to_string_pretty(&schemars::schema_for!(ReleaseManifest))
        .expect("the schema serializes")
        + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("the schema file is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from the schema of ReleaseManifest; regenerate it with \
         `UPDATE_SCHEMA=1 cargo nextest run release_schema` and commit it",
        path.display()
    );
}

/// A key set and a repository publishing 1.0.0 and 1.1.0, valid for 30 days from now.
struct Fixture {
    directory: tempfile::TempDir,
    now: Timestamp,
}

impl Fixture {
    async fn new() -> Self {
        let fixture = Fixture {
            directory: tempfile::tempdir().expect("a temporary directory"),
            now: Timestamp::now(),
        };
        // The root outlives the rest, as it does in production: it is re-signed rarely, offline.
        let root_expires = expiry(fixture.now, "365d").expect("a valid duration");
        generate_keys(&fixture.keys(), root_expires)
            .await
            .expect("keygen");
        for version in ["1.0.0", "1.1.0"] {
            fixture
                .publish(&fixture.repository(), &fixture.keys(), version)
                .await;
        }
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    fn keys(&self) -> PathBuf {
        self.path("keys")
    }

    fn repository(&self) -> PathBuf {
        self.path("repository")
    }

    fn expires(&self) -> Timestamp {
        expiry(self.now, "30d").expect("a valid duration")
    }

    fn trusted_root(&self) -> Vec<u8> {
        std::fs::read(self.keys().join("root.json")).expect("root.json")
    }

    /// Publishes the example manifest of `version`, with an expiry a year out so that the
    /// examples' own dates never decide these tests.
    async fn publish(&self, repository: &Path, keys: &Path, version: &str) {
        let example = std::fs::read(crate::common::release(version)).expect("example manifest");
        let mut manifest: serde_json::Value = serde_json::from_slice(&example).expect("JSON");
        manifest["expires"] = (self.now + days(365)).to_string().into();
        let path = self.path(&format!("{version}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("JSON"))
            .expect("write the manifest");
        build_repository(Some(&path), keys, repository, self.expires())
            .await
            .expect("build the repository");
    }

    async fn verify(
        &self,
        repository: &Path,
        root: &[u8],
        now: Timestamp,
        last_trusted: Option<&str>,
        selection: ReleaseSelection,
    ) -> Result<VerifiedRelease, TrustError> {
        let last_trusted = last_trusted.map(|version| Version::parse(version).expect("semver"));
        verify(
            &RepositorySource::Directory(repository.to_owned()),
            Trust {
                installed: last_trusted.as_ref(),
                ..Trust::root(root)
            },
            now,
            &selection,
        )
        .await
    }

    async fn refusal(&self, repository: &Path, now: Timestamp, last: Option<&str>) -> String {
        self.verify(
            repository,
            &self.trusted_root(),
            now,
            last,
            ReleaseSelection::Newest,
        )
        .await
        .expect_err("the repository must be refused")
        .to_string()
    }

    /// The metadata or target file in the repository whose name ends with `suffix`.
    fn file(&self, suffix: &str) -> PathBuf {
        walk(&self.repository())
            .into_iter()
            .find(|path| path.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no file ending in {suffix}"))
    }
}

fn days(count: i64) -> SignedDuration {
    SignedDuration::from_hours(count * 24)
}

fn walk(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory).expect("a directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn copy_tree(from: &Path, to: &Path) {
    for file in walk(from) {
        let destination = to.join(file.strip_prefix(from).expect("inside"));
        std::fs::create_dir_all(destination.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(&file, &destination).expect("copy");
    }
}

/// Serves `root` over HTTP/1.0 on 127.0.0.1 until the test ends; returns its base URL.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = listener.local_addr().expect("an address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let file = root.join(path.trim_start_matches("/repo/"));
            let response = match std::fs::read(&file) {
                Ok(body) if !path.contains("..") => {
                    let mut response =
                        format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .into_bytes();
                    response.extend(body);
                    response
                }
                _ => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    format!("http://{address}/repo")
}

#[tokio::test]
async fn the_example_repository_verifies_with_the_development_root() {
    let repository = Path::new(REPOSITORY).join("manifests/repository");
    let root = std::fs::read(Path::new(REPOSITORY).join("manifests/dev-keys/root.json"))
        .expect("the development root");
    let source = RepositorySource::Directory(repository);
    let newest = verify(
        &source,
        Trust::root(&root),
        Timestamp::now(),
        &ReleaseSelection::Newest,
    )
    .await
    .unwrap_or_else(|error| {
        panic!("{error}: if it expired, re-sign it with scripts/sign-releases.sh")
    });
    assert_eq!(newest.manifest.version, Version::new(1, 1, 0));
    assert_eq!(newest.available, ["1.0.0", "1.1.0"]);
    assert_eq!(
        newest.manifest,
        ReleaseManifest::load(&crate::common::release("1.1.0")).expect("the example")
    );
    let first = verify(
        &source,
        Trust::root(&root),
        Timestamp::now(),
        &ReleaseSelection::Version(Version::new(1, 0, 0)),
    )
    .await
    .expect("1.0.0 verifies");
    assert_eq!(first.target, "releases/1.0.0.json");
    assert_eq!(
        first.manifest,
        ReleaseManifest::load(&crate::common::release("1.0.0")).expect("the example")
    );
}

#[tokio::test]
async fn a_good_repository_verifies_from_a_directory_and_over_http() {
    let fixture = Fixture::new().await;
    let from_directory = fixture
        .verify(
            &fixture.repository(),
            &fixture.trusted_root(),
            fixture.now,
            Some("1.0.0"),
            ReleaseSelection::Newest,
        )
        .await
        .expect("verifies from a directory");
    let url = serve(fixture.repository());
    let source: RepositorySource = url.parse().expect("a loopback URL");
    let over_http = verify(
        &source,
        Trust {
            installed: Some(&Version::new(1, 0, 0)),
            ..Trust::root(&fixture.trusted_root())
        },
        fixture.now,
        &ReleaseSelection::Newest,
    )
    .await
    .expect("verifies over HTTP");
    for verified in [&from_directory, &over_http] {
        assert_eq!(verified.manifest.version, Version::new(1, 1, 0));
        assert_eq!(verified.target, "releases/1.1.0.json");
        assert_eq!((verified.root_version, verified.timestamp_version), (1, 2));
        assert_eq!(verified.available, ["1.0.0", "1.1.0"]);
    }
    assert_eq!(from_directory.sha256, over_http.sha256);
    let text = over_http.to_string();
    assert!(
        text.starts_with(&format!(
            "verified release 1.1.0 (stable channel) from {url}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("metadata   root v1, timestamp v2, snapshot v2, targets v2; signatures meet every role's threshold"),
        "{text}"
    );

    // Over HTTP too, a tampered manifest is refused.
    let manifest = fixture.file("1.1.0.json");
    let mut bytes = std::fs::read(&manifest).expect("the target");
    bytes[10] ^= 1;
    std::fs::write(&manifest, bytes).expect("tamper");
    let refusal = verify(
        &source,
        Trust::root(&fixture.trusted_root()),
        fixture.now,
        &ReleaseSelection::Newest,
    )
    .await
    .expect_err("refused");
    assert_eq!(
        refusal.to_string(),
        "the release manifest releases/1.1.0.json was tampered with: its content does not match the length and SHA-256 signed for it (SHA-256 differs)"
    );
}

#[tokio::test]
async fn a_tampered_manifest_is_refused() {
    let fixture = Fixture::new().await;
    let manifest = fixture.file("1.1.0.json");
    let original = std::fs::read(&manifest).expect("the target");
    let tampered = String::from_utf8(original.clone())
        .expect("UTF-8")
        .replacen("\"desired_count\": 2", "\"desired_count\": 9", 1);
    assert_eq!(tampered.len(), original.len());
    std::fs::write(&manifest, &tampered).expect("tamper");
    let refusal = fixture
        .refusal(&fixture.repository(), fixture.now, None)
        .await;
    assert_eq!(
        refusal,
        "the release manifest releases/1.1.0.json was tampered with: its content does not match the length and SHA-256 signed for it (SHA-256 differs)"
    );

    let mut longer = original;
    longer.extend(b"\n\n");
    std::fs::write(&manifest, &longer).expect("tamper");
    let refusal = fixture
        .refusal(&fixture.repository(), fixture.now, None)
        .await;
    assert_eq!(
        refusal,
        "the release manifest releases/1.1.0.json was tampered with: its content does not match the length and SHA-256 signed for it (longer than signed)"
    );
}

#[tokio::test]
async fn tampered_metadata_is_refused() {
    let fixture = Fixture::new().await;
    // targets.json lists the manifests' digests; snapshot.json signs its digest in turn.
    let targets = fixture.file("/2.targets.json");
    let text = std::fs::read_to_string(&targets).expect("targets metadata");
    std::fs::write(&targets, text.replace("\"length\": 14", "\"length\": 24")).expect("tamper");
    let refusal = fixture
        .refusal(&fixture.repository(), fixture.now, None)
        .await;
    assert_eq!(
        refusal,
        "the metadata file 2.targets.json was tampered with: its content does not match the length and SHA-256 signed for it (SHA-256 differs)"
    );

    // timestamp.json is the entry point: only its signature protects it.
    let fixture = Fixture::new().await;
    let timestamp = fixture.file("/timestamp.json");
    let text = std::fs::read_to_string(&timestamp).expect("timestamp metadata");
    let year = fixture.expires().strftime("%Y").to_string();
    let later = (fixture.expires() + days(3650)).strftime("%Y").to_string();
    std::fs::write(&timestamp, text.replacen(&year, &later, 1)).expect("tamper");
    let refusal = fixture
        .refusal(&fixture.repository(), fixture.now, None)
        .await;
    assert_eq!(
        refusal,
        "the timestamp metadata is not signed by any key the trusted root names for it: it was signed by an unknown or revoked key, or altered after signing"
    );
}

#[tokio::test]
async fn the_vendors_timestamp_lives_a_day_and_is_kept_fresh_with_the_timestamp_key_alone() {
    let fixture = Fixture::new().await;
    let repository = fixture.path("short-lived");
    let manifest = fixture.path("1.1.0.json");
    let expiries = Expiries::from_now(fixture.now, fixture.expires()).expect("expiries");
    build_repository(Some(&manifest), &fixture.keys(), &repository, expiries)
        .await
        .expect("build");
    let root = fixture.trusted_root();
    let source = RepositorySource::Directory(repository.clone());
    let at = |now: Timestamp| verify(&source, Trust::root(&root), now, &ReleaseSelection::Newest);
    at(fixture.now + days(0)).await.expect("fresh");
    let tomorrow = fixture.now + days(1) + jiff::SignedDuration::from_mins(1);
    let stale = at(tomorrow)
        .await
        .expect_err("a day-old timestamp is stale");
    assert!(
        matches!(&stale, TrustError::Expired { role, .. } if role == "timestamp"),
        "{stale}"
    );

    // The schedule re-signs the timestamp with its key alone; the other keys stay offline.
    let online = fixture.path("online");
    std::fs::create_dir_all(&online).expect("a directory");
    std::fs::copy(
        fixture.keys().join("timestamp.pem"),
        online.join("timestamp.pem"),
    )
    .expect("the timestamp key");
    let refreshed = expiry(tomorrow, "1d").expect("a duration");
    let summary = resign_timestamp(&repository, &online.join("timestamp.pem"), refreshed)
        .await
        .expect("re-sign the timestamp");
    assert_eq!(summary.version, 2);
    let verified = at(tomorrow).await.expect("fresh again");
    assert_eq!(verified.timestamp_version, 2);
    assert_eq!(verified.expires, refreshed);

    // A week on, the snapshot (signed with an offline key) has run out: the vendor re-signs.
    let stale = at(fixture.now + days(7) + jiff::SignedDuration::from_mins(1))
        .await
        .expect_err("a week-old snapshot is stale");
    assert!(
        matches!(&stale, TrustError::Expired { role, .. } if role == "timestamp" || role == "snapshot"),
        "{stale}"
    );
    // Signing with a key the root does not name for the timestamp is refused.
    let wrong = resign_timestamp(&repository, &fixture.keys().join("targets.pem"), refreshed)
        .await
        .expect_err("the targets key cannot sign the timestamp");
    assert!(wrong.to_string().contains("sign the timestamp"), "{wrong}");
}

#[tokio::test]
async fn expired_metadata_is_refused_as_a_freeze() {
    let fixture = Fixture::new().await;
    let later = fixture.now + days(31);
    let refusal = fixture.refusal(&fixture.repository(), later, None).await;
    assert_eq!(
        refusal,
        format!(
            "the timestamp metadata expired at {} (it is now {later}): refusing stale metadata, which a freeze attack would serve",
            fixture.expires()
        )
    );
    let error = fixture
        .verify(
            &fixture.repository(),
            &fixture.trusted_root(),
            later,
            None,
            ReleaseSelection::Newest,
        )
        .await
        .expect_err("refused");
    assert_eq!(
        error.hint().as_deref(),
        Some(
            "the vendor re-signs the timestamp every day (stackwright-release resign-timestamp, which the control plane runs on a schedule): the repository, or the mirror in front of it, has stopped being refreshed. Check this machine's clock, then tell the vendor"
        )
    );

    // Re-signing without a new release refreshes the expiry.
    let refreshed = expiry(later, "30d").expect("a duration");
    build_repository(None, &fixture.keys(), &fixture.repository(), refreshed)
        .await
        .expect("re-sign");
    let verified = fixture
        .verify(
            &fixture.repository(),
            &fixture.trusted_root(),
            later,
            None,
            ReleaseSelection::Newest,
        )
        .await
        .expect("verifies once re-signed");
    assert_eq!(verified.timestamp_version, 3);
}

#[tokio::test]
async fn an_older_release_than_the_installed_one_is_refused_as_a_rollback() {
    let fixture = Fixture::new().await;
    let error = fixture
        .verify(
            &fixture.repository(),
            &fixture.trusted_root(),
            fixture.now,
            Some("1.1.0"),
            ReleaseSelection::Version(Version::new(1, 0, 0)),
        )
        .await
        .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "release 1.0.0 is older than release 1.1.0, which is already trusted here: refusing to roll back"
    );

    // An old but validly signed repository, replayed after 1.1.0 was installed.
    let replayed = fixture.path("replayed");
    fixture.publish(&replayed, &fixture.keys(), "1.0.0").await;
    let refusal = fixture.refusal(&replayed, fixture.now, Some("1.1.0")).await;
    assert_eq!(
        refusal,
        "release 1.0.0 is older than release 1.1.0, which is already trusted here: refusing to roll back"
    );
    // The same release again is no rollback (a re-install).
    let again = fixture
        .verify(
            &replayed,
            &fixture.trusted_root(),
            fixture.now,
            Some("1.0.0"),
            ReleaseSelection::Newest,
        )
        .await
        .expect("the installed release verifies");
    assert_eq!(again.manifest.version, Version::new(1, 0, 0));
}

#[tokio::test]
async fn a_repository_signed_by_an_unknown_key_is_refused() {
    let fixture = Fixture::new().await;
    let other_keys = fixture.path("other-keys");
    generate_keys(&other_keys, fixture.expires())
        .await
        .expect("keygen");
    let forged = fixture.path("forged");
    fixture.publish(&forged, &other_keys, "1.1.0").await;
    let refusal = fixture.refusal(&forged, fixture.now, None).await;
    assert_eq!(
        refusal,
        "the timestamp metadata is not signed by any key the trusted root names for it: it was signed by an unknown or revoked key, or altered after signing"
    );
}

#[tokio::test]
async fn a_replayed_timestamp_is_refused_once_a_newer_one_was_seen() {
    let fixture = Fixture::new().await;
    // A mirror keeps today's copy; tomorrow the vendor re-signs, and the instance sees that.
    let replayed = fixture.path("replayed");
    copy_tree(&fixture.repository(), &replayed);
    build_repository(
        None,
        &fixture.keys(),
        &fixture.repository(),
        fixture.expires(),
    )
    .await
    .expect("re-sign");
    let root = fixture.trusted_root();
    let seen = verify(
        &RepositorySource::Directory(fixture.repository()),
        Trust::root(&root),
        fixture.now,
        &ReleaseSelection::Newest,
    )
    .await
    .expect("the re-signed repository verifies");
    let recorded = RecordedFloor {
        floor: seen.floor.clone(),
        recorded_in: "the state table".into(),
    };
    let trust = Trust {
        floor: Some(&recorded),
        ..Trust::root(&root)
    };
    let (current, replayed) = (
        RepositorySource::Directory(fixture.repository()),
        RepositorySource::Directory(replayed),
    );
    verify(&current, trust, fixture.now, &ReleaseSelection::Newest)
        .await
        .expect("the same repository still verifies");
    let error = verify(&replayed, trust, fixture.now, &ReleaseSelection::Newest)
        .await
        .expect_err("the old copy is refused");
    assert_eq!(
        error.to_string(),
        format!(
            "the timestamp metadata is version {}, but version {} was already trusted: refusing to roll back",
            seen.timestamp_version - 1,
            seen.timestamp_version
        )
    );
}

#[tokio::test]
async fn a_rotated_root_verifies_and_the_revoked_keys_are_refused() {
    let fixture = Fixture::new().await;
    let new_keys = fixture.path("new-keys");
    let (summary, repository) = rotate_keys(
        &fixture.keys(),
        &new_keys,
        &fixture.repository(),
        fixture.expires(),
        fixture.expires(),
    )
    .await
    .expect("rotate");
    assert_eq!((summary.root_version, repository.root_version), (2, 2));

    // An installer that pinned root v1 follows the chain to v2, and learns the new root.
    let verified = fixture
        .verify(
            &fixture.repository(),
            &fixture.trusted_root(),
            fixture.now,
            None,
            ReleaseSelection::Newest,
        )
        .await
        .expect("the rotated repository verifies from the old root");
    assert_eq!(verified.root_version, 2);
    assert_eq!(verified.floor.root_version, 2);

    // Someone holding the revoked keys signs a release, next to the published rotation.
    let forged = fixture.path("forged");
    fixture.publish(&forged, &fixture.keys(), "1.1.0").await;
    std::fs::copy(
        fixture.repository().join("metadata/2.root.json"),
        forged.join("metadata/2.root.json"),
    )
    .expect("copy the rotation");
    let refused = "the timestamp metadata is not signed by any key the trusted root names for it: it was signed by an unknown or revoked key, or altered after signing";
    assert_eq!(fixture.refusal(&forged, fixture.now, None).await, refused);

    // Hiding the rotation does not help against an instance whose record says it reached
    // root v2: the walk from the built-in root stops at v1, below the floor.
    std::fs::remove_file(forged.join("metadata/2.root.json")).expect("hide the rotation");
    let recorded = RecordedFloor {
        floor: verified.floor.clone(),
        recorded_in: "the record".into(),
    };
    let root = fixture.trusted_root();
    let trust = Trust {
        floor: Some(&recorded),
        ..Trust::root(&root)
    };
    let error = verify(
        &RepositorySource::Directory(forged.clone()),
        trust,
        fixture.now,
        &ReleaseSelection::Newest,
    )
    .await
    .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "the release repository's root is version 1, but version 2 was already trusted here (the record): refusing an older root, which would hide a key rotation"
    );

    // A new root signed only by the new keys, without the old root's consent, is refused.
    let hijacked = fixture.path("hijacked");
    copy_tree(&fixture.repository(), &hijacked);
    let rotation = hijacked.join("metadata/2.root.json");
    let mut root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rotation).expect("2.root.json")).expect("JSON");
    let old_root_key = String::from_utf8(fixture.trusted_root()).expect("UTF-8");
    root["signatures"]
        .as_array_mut()
        .expect("signatures")
        .retain(|signature| !old_root_key.contains(signature["keyid"].as_str().expect("a key id")));
    std::fs::write(&rotation, serde_json::to_vec_pretty(&root).expect("JSON")).expect("write");
    assert_eq!(
        fixture.refusal(&hijacked, fixture.now, None).await,
        "the root metadata is not signed by any key the trusted root names for it: it was signed by an unknown or revoked key, or altered after signing"
    );
}

#[tokio::test]
async fn metadata_below_its_signature_threshold_is_refused() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::Ed25519KeyPair;
    use tough::editor::signed::SignedRole;
    use tough::key_source::{KeySource, LocalKeySource};
    use tough::schema::{KeyHolder, RoleType, Root, Signed};
    use tough::sign::Sign;

    // Root v2 asks for two timestamp signatures; the published timestamp carries one.
    let fixture = Fixture::new().await;
    let mut root: Signed<Root> = serde_json::from_slice(&fixture.trusted_root()).expect("root");
    let random = SystemRandom::new();
    let document = Ed25519KeyPair::generate_pkcs8(&random).expect("a key");
    let second = Ed25519KeyPair::from_pkcs8(document.as_ref()).expect("a key");
    let key = Sign::tuf_key(&second);
    let key_id = key.key_id().expect("a key id");
    root.signed.version = root.signed.version.saturating_add(1);
    root.signed.keys.insert(key_id.clone(), key);
    let timestamp = root
        .signed
        .roles
        .get_mut(&RoleType::Timestamp)
        .expect("a timestamp role");
    timestamp.keyids.push(key_id);
    timestamp.threshold = std::num::NonZeroU64::new(2).expect("two");
    // tough reads Ed25519 keys as PKCS#8 DER; the key set keeps them as PEM.
    let pem =
        pem::parse(std::fs::read(fixture.keys().join("root.pem")).expect("root.pem")).expect("PEM");
    let der = fixture.path("root.der");
    std::fs::write(&der, pem.contents()).expect("write the key");
    let keys: Vec<Box<dyn KeySource>> = vec![Box::new(LocalKeySource { path: der })];
    let signed = SignedRole::new(
        root.signed.clone(),
        &KeyHolder::Root(root.signed),
        &keys,
        &random,
    )
    .await
    .expect("sign root v2");
    std::fs::write(
        fixture.repository().join("metadata/2.root.json"),
        signed.buffer(),
    )
    .expect("publish root v2");
    assert_eq!(
        fixture
            .refusal(&fixture.repository(), fixture.now, None)
            .await,
        "the timestamp metadata has 1 valid signature(s) from the keys the trusted root names for it, fewer than the 2 it requires"
    );
}

#[tokio::test]
async fn a_missing_release_and_a_broken_trusted_root_are_named() {
    let fixture = Fixture::new().await;
    let error = fixture
        .verify(
            &fixture.repository(),
            &fixture.trusted_root(),
            fixture.now,
            None,
            ReleaseSelection::Version(Version::new(2, 0, 0)),
        )
        .await
        .expect_err("refused");
    assert_eq!(
        error
            .to_string()
            .replace(&fixture.repository().display().to_string(), "[REPOSITORY]"),
        "the repository [REPOSITORY] has no release 2.0.0 (it lists: 1.0.0, 1.1.0)"
    );
    let error = fixture
        .verify(
            &fixture.repository(),
            b"{}",
            fixture.now,
            None,
            ReleaseSelection::Newest,
        )
        .await
        .expect_err("refused");
    assert!(
        error
            .to_string()
            .starts_with("the trusted root is not valid TUF root metadata: "),
        "{error}"
    );
}

/// `stackwright release verify` as a user runs it: the example repository verifies with the
/// root built into the binary, and a tampered copy is refused with the reason and a hint.
#[test]
fn release_verify_prints_what_was_verified_or_why_it_was_refused() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let repository = Path::new(REPOSITORY).join("manifests/repository");
    let (code, stdout, stderr) = crate::common::run(
        crate::common::stackwright()
            .args(["release", "verify", "--repository"])
            .arg(&repository),
        directory.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(
            "verified release 1.1.0 (stable channel) from [REPOSITORY]/manifests/repository\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("signatures meet every role's threshold"),
        "{stdout}"
    );
    assert!(stdout.contains("available  1.0.0, 1.1.0"), "{stdout}");

    let (code, stdout, _) = crate::common::run(
        crate::common::stackwright()
            .args([
                "--output",
                "json",
                "release",
                "verify",
                "--release",
                "1.0.0",
                "--repository",
            ])
            .arg(&repository),
        directory.path(),
    );
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(json["manifest"]["version"], "1.0.0");
    assert_eq!(json["target"], "releases/1.0.0.json");

    // Installed 1.1.0 already: 1.0.0 is a rollback.
    let (code, _, stderr) = crate::common::run(
        crate::common::stackwright()
            .args([
                "release",
                "verify",
                "--release",
                "1.0.0",
                "--installed",
                "1.1.0",
                "--repository",
            ])
            .arg(&repository),
        directory.path(),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("error: release 1.0.0 is older than release 1.1.0, which is already trusted here: refusing to roll back"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "hint: to go back on purpose, run install --release VERSION --allow-downgrade"
        ),
        "{stderr}"
    );

    // A copy whose manifest was altered after signing.
    let copy = directory.path().join("copy");
    copy_tree(&repository, &copy);
    let manifest = walk(&copy.join("targets"))
        .into_iter()
        .find(|file| file.ends_with("1.1.0.json"))
        .expect("the signed 1.1.0 manifest");
    let text = std::fs::read_to_string(&manifest).expect("the target");
    std::fs::write(
        &manifest,
        text.replacen("\"desired_count\": 2", "\"desired_count\": 9", 1),
    )
    .expect("tamper");
    let (code, stdout, stderr) = crate::common::run(
        crate::common::stackwright()
            .args(["release", "verify", "--repository"])
            .arg(&copy),
        directory.path(),
    );
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("error: the release manifest releases/1.1.0.json was tampered with"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: do not install from this repository"),
        "{stderr}"
    );

    // A trusted root that cannot be read is named, not silently replaced by the built-in one.
    let (code, _, stderr) = crate::common::run(
        crate::common::stackwright()
            .args([
                "release",
                "verify",
                "--trusted-root",
                "missing-root.json",
                "--repository",
            ])
            .arg(&repository),
        directory.path(),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("error: cannot read the trusted root missing-root.json"),
        "{stderr}"
    );
}
