//! Shared test context: the example configurations, a command builder with a clean
//! environment, and snapshot settings.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub const REPOSITORY: &str = env!("CARGO_MANIFEST_DIR");

pub fn release(version: &str) -> PathBuf {
    Path::new(REPOSITORY).join(format!("manifests/releases/{version}.json"))
}

/// The configuration from the documentation: all-private with the public-services endpoint.
pub const ALL_PRIVATE_PUBLIC_SERVICES: &str = r#"schema_version = 1
[instance]
name = "acme-dev"
domain = "cde.acme.example"
region = "us-east-1"
certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/0b3c9f0e-8a7d-4c1e-9b2a-5d6e7f8a9b0c"
[network]
mode = "all-private"
vpc_cidr = "10.40.0.0/16"
availability_zones = 3
public_services = true
control_plane_endpoint_service = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"
[control_plane]
url = "https://control.example.com"
[release]
channel = "stable"
"#;

/// One configuration per networking variant the templates must render completely.
pub const VARIANTS: &[(&str, &str)] = &[
    (
        "public",
        r#"schema_version = 1
[instance]
name = "acme-pub"
domain = "cde.acme.example"
region = "us-east-1"
[instance.tags]
cost-center = "platform"
[network]
mode = "public"
vpc_cidr = "10.40.0.0/16"
availability_zones = 3
[control_plane]
url = "https://control.example.com"
[identity]
subject_patterns = ["org:7f3a9c2e/project:*", "org:7f3a9c2e/project:web/environment:*"]
"#,
    ),
    (
        "private",
        r#"schema_version = 1
[instance]
name = "acme-priv"
domain = "cde.acme.example"
region = "eu-central-1"
[network]
mode = "private"
vpc_cidr = "10.50.0.0/20"
availability_zones = 2
ingress_cidrs = ["10.0.0.0/8"]
[control_plane]
url = "https://control.example.com"
"#,
    ),
    (
        "all-private",
        r#"schema_version = 1
[instance]
name = "acme-ap"
domain = "cde.acme.example"
region = "us-east-1"
[network]
mode = "all-private"
vpc_cidr = "10.60.0.0/16"
availability_zones = 3
[control_plane]
url = "https://control.example.com"
"#,
    ),
    ("all-private-public-services", ALL_PRIVATE_PUBLIC_SERVICES),
];

/// The `stackwright` binary with an environment that cannot leak in from the developer's shell.
pub fn stackwright() -> Command {
    let mut command = Command::cargo_bin("stackwright").expect("the binary is built");
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("HOME", std::env::temp_dir());
    command
}

/// Writes a configuration into a fresh temporary directory.
pub fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("stackwright.toml");
    std::fs::write(&path, text).expect("the configuration is written");
    (directory, path)
}

/// Runs a command and returns its exit code, stdout and stderr with temporary paths filtered.
pub fn run(command: &mut Command, directory: &Path) -> (i32, String, String) {
    let output = command
        .current_dir(directory)
        .output()
        .expect("the command runs");
    let filter = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .replace(&directory.display().to_string(), "[TEMP]")
            .replace(REPOSITORY, "[REPOSITORY]")
    };
    (
        output.status.code().unwrap_or(-1),
        filter(&output.stdout),
        filter(&output.stderr),
    )
}
