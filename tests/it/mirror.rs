//! Image mirroring against the two local registries and moto that `scripts/dev-env.sh up`
//! starts (the vendor's registry, the customer's, and ECR's API). Every test uses repositories
//! of its own; what is asserted is what the destination registry holds, read back over HTTP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use stackwright::mirror::{
    self, OciRegistry, Registry, RegistryEndpoint, RegistryOverrides, synthetic,
};

use crate::common::moto::{env, unique_name};
use crate::common::{release, run, stackwright};

const UP: &str = "run `scripts/dev-env.sh up` first (scripts/test.sh does): the mirror tests copy between the registries it starts";

/// The dev env's variables, with the registries found answering.
fn registries() -> &'static BTreeMap<String, String> {
    let variables = env();
    for key in [
        "STACKWRIGHT_VENDOR_REGISTRY",
        "STACKWRIGHT_CUSTOMER_REGISTRY",
        "STACKWRIGHT_VENDOR_REGISTRY_STORAGE",
        "REGISTRY_AUTH_FILE",
        "STACKWRIGHT_REGISTRY_OVERRIDES",
    ] {
        assert!(
            variables.contains_key(key),
            "env.sh does not export {key}; {UP}"
        );
    }
    for key in [
        "STACKWRIGHT_VENDOR_REGISTRY",
        "STACKWRIGHT_CUSTOMER_REGISTRY",
    ] {
        let address = &variables[key];
        let answered = std::net::TcpStream::connect(address.as_str());
        assert!(
            answered.is_ok(),
            "the registry at {address} ({key}) does not answer; {UP}"
        );
    }
    variables
}

fn vendor() -> String {
    registries()["STACKWRIGHT_VENDOR_REGISTRY"].clone()
}

pub(crate) fn customer() -> String {
    registries()["STACKWRIGHT_CUSTOMER_REGISTRY"].clone()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A client for a local registry, logged in from the dev env's auth file.
fn client(address: &str) -> OciRegistry {
    crate::common::tls::trust_in_this_process();
    let endpoint = RegistryEndpoint::resolve(address, &RegistryOverrides::default(), false);
    let file = &registries()["REGISTRY_AUTH_FILE"];
    let text = std::fs::read_to_string(file).expect("the dev env's auth file");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let auth = value["auths"][address]["auth"]
        .as_str()
        .expect("an entry for the registry");
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(auth)
            .expect("base64"),
    )
    .expect("UTF-8");
    let (username, password) = decoded.split_once(':').expect("user:password");
    OciRegistry::new(
        endpoint,
        mirror::Credentials::Basic {
            username: username.into(),
            password: mirror::Secret::new(password),
        },
    )
    .expect("a client")
}

/// Pushes images to the vendor registry; returns their digests.
pub(crate) fn push(images: &[synthetic::SyntheticImage]) -> Vec<String> {
    let vendor = client(&vendor());
    runtime().block_on(async {
        let mut digests = Vec::new();
        for image in images {
            digests.push(synthetic::push(&vendor, image).await.expect("pushed"));
        }
        digests
    })
}

/// The example release's images in the vendor registry, where its manifest says they are.
fn seed_example(version: &str) {
    push(&synthetic::example_release(version, "stackwright"));
}

/// One HTTP GET or HEAD on a local registry as its dev-env user: status, digest header, body.
pub(crate) fn fetch(address: &str, method: &str, path: &str) -> (u16, Option<String>, Vec<u8>) {
    let file = &registries()["REGISTRY_AUTH_FILE"];
    let text = std::fs::read_to_string(file).expect("the dev env's auth file");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let auth = value["auths"][address]["auth"]
        .as_str()
        .expect("an entry")
        .to_owned();
    let url = format!("https://{address}/v2/{path}");
    runtime().block_on(async move {
        let client = crate::common::tls::http_client();
        let request = match method {
            "HEAD" => client.head(&url),
            _ => client.get(&url),
        };
        let response = request
            .header("Authorization", format!("Basic {auth}"))
            .header("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .expect("the registry answers");
        let status = response.status().as_u16();
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.expect("a body").to_vec();
        (status, digest, body)
    })
}

fn sha256(bytes: &[u8]) -> String {
    mirror::sha256_digest(bytes)
}

/// The configuration of an instance called `name`, in a fresh directory.
fn instance(name: &str) -> (tempfile::TempDir, PathBuf) {
    crate::common::config_file(&format!(
        r#"schema_version = 1
[instance]
name = "{name}"
domain = "{name}.example.com"
region = "us-east-1"
[network]
mode = "private"
vpc_cidr = "10.40.0.0/16"
availability_zones = 2
[control_plane]
url = "https://control.example.com"
"#
    ))
}

fn mirror_command(directory: &Path, args: &[&str]) -> (i32, String, String) {
    let mut command = stackwright();
    command.envs(registries()).args(["mirror"]).args(args);
    run(&mut command, directory)
}

fn summary(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|error| panic!("not a JSON summary ({error}): {stdout}"))
}

#[test]
fn mirror_release_copies_a_multi_arch_index_with_identical_digests_then_nothing() {
    seed_example("1.0.0");
    let name = unique_name("mirror");
    let (directory, config) = instance(&name);
    let manifest_path = release("1.0.0");
    let manifest =
        stackwright::release::ReleaseManifest::load(&manifest_path).expect("the example");
    let args = [
        "--config",
        config.to_str().expect("UTF-8"),
        "--output",
        "json",
        "mirror",
        "--manifest-file",
        manifest_path.to_str().expect("UTF-8"),
        "--allow-unsigned",
    ];
    let mut command = stackwright();
    command.envs(registries()).args(args);
    let (code, stdout, stderr) = run(&mut command, directory.path());
    assert_eq!(code, 0, "{stderr}");
    let first = summary(&stdout);
    assert_eq!(first["images_copied"], 3, "{stdout}");
    assert_eq!(first["tags_pushed"], 3, "{stdout}");
    assert!(
        first["blobs_mounted"].as_u64() > Some(0),
        "shared layers are mounted: {stdout}"
    );
    // One JSON object per line on stderr, one `image_finished` per image.
    let finished = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["event"] == "image_finished")
        .count();
    assert_eq!(finished, 3, "{stderr}");

    // What the customer's registry holds: every manifest byte for byte, by tag and by digest.
    for component in &manifest.components {
        let repository = format!("{name}/{}", component.name);
        let (status, digest, body) =
            fetch(&customer(), "GET", &format!("{repository}/manifests/1.0.0"));
        assert_eq!(status, 200, "{repository}:1.0.0");
        assert_eq!(sha256(&body), component.image.digest, "{repository}");
        assert_eq!(digest.as_deref(), Some(component.image.digest.as_str()));
        let document: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        if component.name == "server" {
            let children = document["manifests"].as_array().expect("an index");
            let platforms: Vec<&str> = children
                .iter()
                .map(|child| {
                    child["platform"]["architecture"]
                        .as_str()
                        .unwrap_or_default()
                })
                .collect();
            assert_eq!(platforms, ["amd64", "arm64"]);
            for child in children {
                let child_digest = child["digest"].as_str().expect("a digest");
                let (status, _, child_body) = fetch(
                    &customer(),
                    "GET",
                    &format!("{repository}/manifests/{child_digest}"),
                );
                assert_eq!(status, 200);
                assert_eq!(sha256(&child_body), child_digest);
            }
        }
    }

    // ECR's side: the repositories exist with the bootstrap template's settings.
    let repositories = runtime().block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(crate::common::moto::endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        aws_sdk_ecr::Client::new(&config)
            .describe_repositories()
            .repository_names(format!("{name}/server"))
            .send()
            .await
            .expect("the repository exists")
    });
    let repository = &repositories.repositories()[0];
    assert_eq!(
        repository.image_tag_mutability(),
        Some(&aws_sdk_ecr::types::ImageTagMutability::Immutable)
    );
    assert_eq!(
        repository
            .image_scanning_configuration()
            .map(|scanning| scanning.scan_on_push()),
        Some(true)
    );

    // Again: everything is there, nothing moves, the immutable tags are left as they are.
    let mut command = stackwright();
    command.envs(registries()).args(args);
    let (code, stdout, stderr) = run(&mut command, directory.path());
    assert_eq!(code, 0, "{stderr}");
    let second = summary(&stdout);
    assert_eq!(second["bytes_copied"], 0, "{stdout}");
    assert_eq!(second["blobs_copied"], 0, "{stdout}");
    assert_eq!(second["images_skipped"], 3, "{stdout}");
    assert_eq!(second["tags_pushed"], 0, "{stdout}");
}

/// Synthetic images of a test's own: `count` images sharing one base layer.
fn own_images(prefix: &str, count: usize, tag: &str) -> Vec<synthetic::SyntheticImage> {
    let base = synthetic::Layer::new(synthetic::seed_of(&format!("{prefix}-base")), 200_000);
    (0..count)
        .map(|number| synthetic::SyntheticImage {
            repository: format!("{prefix}/app-{number}"),
            tag: Some(tag.to_owned()),
            platforms: vec![synthetic::PlatformImage {
                os: "linux".into(),
                architecture: "amd64".into(),
                layers: vec![
                    base,
                    synthetic::Layer::new(
                        synthetic::seed_of(&format!("{prefix}-{number}")),
                        50_000,
                    ),
                ],
                labels: Vec::new(),
            }],
        })
        .collect()
}

fn image_list(directory: &Path, lines: &[String]) -> PathBuf {
    let path = directory.join("images.txt");
    std::fs::write(&path, lines.join("\n") + "\n").expect("the list is written");
    path
}

#[test]
fn mirror_images_keeps_paths_under_the_prefix_and_copies_digests_untagged() {
    let source = unique_name("list");
    let images = own_images(&source, 2, "v1");
    let digests = push(&images);
    let directory = tempfile::tempdir().expect("a directory");
    let list = image_list(
        directory.path(),
        &[
            "# one by tag, one by digest".into(),
            format!("{source}/app-0:v1"),
            format!("{source}/app-1@{}", digests[1]),
        ],
    );
    let prefix = unique_name("copy");
    let to = format!("{}/{prefix}", customer());
    let (code, stdout, stderr) = mirror_command(
        directory.path(),
        &[
            "--images",
            list.to_str().expect("UTF-8"),
            "--from",
            &vendor(),
            "--to",
            &to,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("images: 2 copied, 0 already there"),
        "{stdout}"
    );
    let (status, digest, _) = fetch(
        &customer(),
        "HEAD",
        &format!("{prefix}/{source}/app-0/manifests/v1"),
    );
    assert_eq!(
        (status, digest.as_deref()),
        (200, Some(digests[0].as_str()))
    );
    let (status, _, body) = fetch(
        &customer(),
        "GET",
        &format!("{prefix}/{source}/app-1/manifests/{}", digests[1]),
    );
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), digests[1]);
    // By digest means by digest only: no tag appears.
    let (status, _, _) = fetch(
        &customer(),
        "HEAD",
        &format!("{prefix}/{source}/app-1/manifests/v1"),
    );
    assert_eq!(status, 404);
}

#[test]
fn mirror_resumes_an_interrupted_copy_without_sending_what_arrived() {
    let source = unique_name("resume");
    let images = own_images(&source, 3, "v1");
    push(&images);
    let prefix = unique_name("resumed");
    // An interrupted run leaves blobs without their manifests: the shared base layer and the
    // first image's own layer are already in the destination.
    let customer_client = client(&customer());
    let vendor_client = client(&vendor());
    let base = images[0].platforms[0].layers[0];
    let own = images[0].platforms[0].layers[1];
    runtime().block_on(async {
        for layer in [base, own] {
            let digest = layer.digest();
            let stream = vendor_client
                .blob(&format!("{source}/app-0"), &digest, layer.blob_size())
                .await
                .expect("the source has it");
            customer_client
                .put_blob(
                    &format!("{prefix}/{source}/app-0"),
                    &digest,
                    layer.blob_size(),
                    stream,
                )
                .await
                .expect("pre-populated");
        }
    });
    let directory = tempfile::tempdir().expect("a directory");
    let list = image_list(
        directory.path(),
        &(0..3)
            .map(|number| format!("{source}/app-{number}:v1"))
            .collect::<Vec<_>>(),
    );
    let to = format!("{}/{prefix}", customer());
    let args = [
        "--output",
        "json",
        "mirror",
        "--images",
        list.to_str().expect("UTF-8"),
        "--from",
        &vendor(),
        "--to",
        &to,
        "--jobs",
        "1",
    ];
    let mut command = stackwright();
    command.envs(registries()).args(args);
    let (code, stdout, stderr) = run(&mut command, directory.path());
    assert_eq!(code, 0, "{stderr}");
    let resumed = summary(&stdout);
    // What arrived before is found (base, own layer of app-0), the base is mounted into the
    // other two repositories, and only the rest is sent: two own layers and three configs.
    assert_eq!(resumed["blobs_skipped"], 2, "{stdout}");
    assert_eq!(resumed["blobs_mounted"], 2, "{stdout}");
    assert_eq!(resumed["blobs_copied"], 5, "{stdout}");
    let own_bytes: u64 = images[1..]
        .iter()
        .map(|image| image.platforms[0].layers[1].blob_size())
        .sum();
    let copied = resumed["bytes_copied"].as_u64().expect("a number");
    assert!(
        copied > own_bytes && copied < own_bytes + 4096,
        "{copied} bytes for {own_bytes}"
    );
    for number in 0..3 {
        let (status, _, _) = fetch(
            &customer(),
            "HEAD",
            &format!("{prefix}/{source}/app-{number}/manifests/v1"),
        );
        assert_eq!(status, 200, "app-{number}");
    }
    let mut command = stackwright();
    command.envs(registries()).args(args);
    let (code, stdout, stderr) = run(&mut command, directory.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary(&stdout)["bytes_copied"], 0, "{stdout}");
}

#[test]
fn mirror_refuses_a_blob_whose_bytes_do_not_match_its_digest_and_tags_nothing() {
    let source = unique_name("tamper");
    // Layers of this test's own, so that tampering with one harms no other test.
    let images = own_images(&source, 2, "v1");
    push(&images);
    let victim = images[1].platforms[0].layers[1];
    let digest = victim.digest();
    let hex = digest.trim_start_matches("sha256:");
    let data = Path::new(&registries()["STACKWRIGHT_VENDOR_REGISTRY_STORAGE"]).join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&data).expect("the blob's file in the vendor's storage");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).expect("tampered");

    let directory = tempfile::tempdir().expect("a directory");
    let list = image_list(
        directory.path(),
        &[format!("{source}/app-0:v1"), format!("{source}/app-1:v1")],
    );
    let prefix = unique_name("tampered");
    let to = format!("{}/{prefix}", customer());
    let (code, stdout, stderr) = mirror_command(
        directory.path(),
        &[
            "--images",
            list.to_str().expect("UTF-8"),
            "--from",
            &vendor(),
            "--to",
            &to,
        ],
    );
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("1 of 2 images could not be copied, so no tag was pushed"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{source}/app-1:v1")), "{stderr}");
    assert!(stderr.contains("do not match that digest"), "{stderr}");
    assert!(
        stderr.contains("hint:") && stderr.contains("tampered"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    // Neither image is tagged (not even the good one), and the bad blob is not in the destination.
    for number in 0..2 {
        let (status, _, _) = fetch(
            &customer(),
            "HEAD",
            &format!("{prefix}/{source}/app-{number}/manifests/v1"),
        );
        assert_eq!(status, 404, "app-{number} must not be tagged");
    }
    let (status, _, _) = fetch(
        &customer(),
        "HEAD",
        &format!("{prefix}/{source}/app-1/blobs/{digest}"),
    );
    assert_eq!(status, 404);
}

#[test]
fn mirror_with_a_wrong_or_missing_password_names_the_registry_and_never_prints_it() {
    let source = unique_name("login");
    push(&own_images(&source, 1, "v1"));
    let directory = tempfile::tempdir().expect("a directory");
    let list = image_list(directory.path(), &[format!("{source}/app-0:v1")]);
    let real: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&registries()["REGISTRY_AUTH_FILE"]).expect("the auth file"),
    )
    .expect("JSON");
    let wrong_password = "not-the-password-Zq81";
    let wrong =
        base64::engine::general_purpose::STANDARD.encode(format!("stackwright:{wrong_password}"));
    // The vendor's login is right, the customer's is wrong.
    let auth_file = directory.path().join("auth.json");
    let mut auths = real["auths"].clone();
    auths[customer()] = serde_json::json!({ "auth": wrong });
    std::fs::write(
        &auth_file,
        serde_json::json!({ "auths": auths }).to_string(),
    )
    .expect("written");
    let to = format!("{}/{}", customer(), unique_name("denied"));
    let args = [
        "mirror",
        "--images",
        list.to_str().expect("UTF-8"),
        "--from",
        &vendor(),
        "--to",
        &to,
    ];
    let mut command = stackwright();
    command
        .envs(registries())
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .args(args);
    let (code, stdout, stderr) = run(&mut command, directory.path());
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("{} refused the credentials", customer())),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: log in to") && stderr.contains("[TEMP]/auth.json"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(wrong_password) && !stderr.contains(&wrong),
        "{stderr}"
    );

    // No entry for the vendor's registry at all: anonymous, refused, named.
    let mut auths = real["auths"].clone();
    auths.as_object_mut().expect("an object").remove(&vendor());
    std::fs::write(
        &auth_file,
        serde_json::json!({ "auths": auths }).to_string(),
    )
    .expect("written");
    let mut command = stackwright();
    command
        .envs(registries())
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["--output", "json"])
        .args(args);
    let (code, _, stderr) = run(&mut command, directory.path());
    assert_eq!(code, 1, "{stderr}");
    let error: serde_json::Value = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["level"] == "error")
        .unwrap_or_else(|| panic!("a JSON error line: {stderr}"));
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "{} requires credentials, and none were found",
            vendor()
        )),
        "{message}"
    );
    assert!(
        error["hint"]
            .as_str()
            .is_some_and(|hint| hint.contains("skopeo login")),
        "{error}"
    );
}
