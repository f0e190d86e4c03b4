//! cfn-lint and checkov on every rendered template of every networking variant: zero findings,
//! or a skip written in the template with its reason. The Python tools come from the
//! repository's `.venv`, which `scripts/dev-tools.sh` installs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{REPOSITORY, VARIANTS};

fn tool(name: &str) -> PathBuf {
    let path = Path::new(REPOSITORY).join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/dev-tools.sh to install the pinned Python tools",
        path.display()
    );
    path
}

/// Renders every variant into its own directory below one temporary directory, with release
/// 1.0.0 plus an installer image, so that every stack is there, the updater included.
fn render_variants() -> (tempfile::TempDir, Vec<PathBuf>) {
    let root = tempfile::tempdir().unwrap();
    let release_directory = tempfile::tempdir().unwrap();
    let manifest = stackwright::release::ReleaseManifest::load(
        &crate::render::release_with_installer(release_directory.path()),
    )
    .unwrap();
    let mut templates = Vec::new();
    for (variant, text) in VARIANTS {
        let config = stackwright::config::ConfigFile::parse(text, Path::new(variant)).unwrap();
        let directory = root.path().join(variant);
        std::fs::create_dir_all(&directory).unwrap();
        for stack in stackwright::render::render_all(&config, &manifest).unwrap() {
            let path = directory.join(format!("{}.template.yaml", stack.kind));
            std::fs::write(&path, &stack.body).unwrap();
            templates.push(path);
        }
    }
    let updaters = templates
        .iter()
        .filter(|path| path.ends_with("updater.template.yaml"))
        .count();
    assert_eq!(
        updaters,
        VARIANTS.len(),
        "an updater stack in every variant"
    );
    (root, templates)
}

#[test]
fn cfn_lint_finds_nothing_in_any_template() {
    let (_root, templates) = render_variants();
    let output = Command::new(tool("cfn-lint"))
        .args([
            "--regions",
            "us-east-1",
            "eu-central-1",
            "--format",
            "parseable",
            "--",
        ])
        .args(&templates)
        .output()
        .unwrap();
    let findings = String::from_utf8_lossy(&output.stdout);
    let errors = findings.lines().filter(|line| line.contains(":E")).count();
    let warnings = findings.lines().filter(|line| line.contains(":W")).count();
    println!(
        "cfn-lint: {} templates, {errors} errors, {warnings} warnings, {} other findings",
        templates.len(),
        findings.lines().count() - errors - warnings
    );
    assert!(
        output.status.success() && findings.trim().is_empty(),
        "cfn-lint reported:\n{findings}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn checkov_passes_every_check_or_skips_it_with_a_reason() {
    let (root, templates) = render_variants();
    let output = Command::new(tool("checkov"))
        .arg("--directory")
        .arg(root.path())
        .args([
            "--framework",
            "cloudformation",
            "--output",
            "json",
            "--compact",
        ])
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "checkov printed no JSON report ({error}):\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let reports = match report {
        serde_json::Value::Array(reports) => reports,
        single => vec![single],
    };
    let total = |field: &str| -> u64 {
        reports
            .iter()
            .map(|report| report["summary"][field].as_u64().unwrap_or(0))
            .sum()
    };
    let (passed, failed, skipped, parsing_errors) = (
        total("passed"),
        total("failed"),
        total("skipped"),
        total("parsing_errors"),
    );
    println!(
        "checkov: {} templates, {passed} passed, {failed} failed, {skipped} skipped, {parsing_errors} parsing errors",
        templates.len()
    );
    let mut skips: Vec<String> = reports
        .iter()
        .flat_map(|report| {
            report["results"]["skipped_checks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|check| {
            format!(
                "{} {}: {}",
                check["check_id"].as_str().unwrap_or_default(),
                check["resource"].as_str().unwrap_or_default(),
                check["check_result"]["suppress_comment"]
                    .as_str()
                    .unwrap_or_default()
            )
        })
        .collect();
    skips.sort();
    skips.dedup();
    for skip in &skips {
        println!("  skipped {skip}");
    }
    let failures: Vec<String> = reports
        .iter()
        .flat_map(|report| {
            report["results"]["failed_checks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|check| {
            format!(
                "{} {} in {}",
                check["check_id"].as_str().unwrap_or_default(),
                check["resource"].as_str().unwrap_or_default(),
                check["file_path"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert!(passed > 0, "checkov ran no checks");
    assert_eq!(parsing_errors, 0, "checkov could not parse a template");
    assert!(
        failures.is_empty(),
        "checkov failed checks:\n{}",
        failures.join("\n")
    );
    for skip in &skips {
        let reason = skip
            .split_once(": ")
            .map(|(_, reason)| reason.trim())
            .unwrap_or_default();
        assert!(reason.len() > 10, "a skip without a reason: {skip}");
    }
}
