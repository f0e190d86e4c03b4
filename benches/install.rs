//! A full install against the local emulator, beside `aws cloudformation deploy` deploying the
//! same rendered templates one after another, in the same run. Prints its figures; run it with
//! `scripts/bench.sh`, which installs the AWS CLI into .venv-bench and starts the emulator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const RUNS: usize = 3;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The variables `scripts/dev-env.sh up` wrote for the SDK.
fn emulator_environment() -> Vec<(String, String)> {
    let path = root().join("target/dev-env/env.sh");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run scripts/dev-env.sh up (or scripts/bench.sh)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .flat_map(|assignments| assignments.split_whitespace())
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('"').to_owned()))
        .collect()
}

fn command(program: impl AsRef<std::ffi::OsStr>, environment: &[(String, String)]) -> Command {
    let mut command = Command::new(program);
    command.envs(environment.iter().map(|(key, value)| (key, value)));
    command
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn config(directory: &Path, name: &str, certificate: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("examples/demo.toml"))
        .expect("the demo configuration")
        .replace("name = \"acme-dev\"", &format!("name = \"{name}\""))
        .replace(
            "region = \"us-east-1\"",
            &format!("region = \"us-east-1\"\ncertificate_arn = \"{certificate}\""),
        );
    let path = directory.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("the configuration is written");
    path
}

/// Deploys rendered stacks one after another with the AWS CLI, feeding outputs to parameters.
fn aws_deploy(aws: &Path, environment: &[(String, String)], rendered: &Path, order: &[&str]) {
    for stack in order {
        let parameters_file = rendered.join(format!("{stack}.parameters.json"));
        let Ok(text) = std::fs::read_to_string(&parameters_file) else {
            continue;
        };
        let description: serde_json::Value =
            serde_json::from_str(&text).expect("parameters are JSON");
        let mut overrides = Vec::new();
        let mut outputs_by_stack: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for source in description["parameters"].as_array().expect("a list") {
            let from = source["stack"].as_str().expect("a stack name").to_owned();
            let outputs = outputs_by_stack.entry(from.clone()).or_insert_with(|| {
                let json = run(command(aws, environment).args([
                    "cloudformation",
                    "describe-stacks",
                    "--stack-name",
                    &from,
                    "--query",
                    "Stacks[0].Outputs",
                    "--output",
                    "json",
                ]));
                serde_json::from_str(&json).expect("outputs are JSON")
            });
            let value = outputs
                .as_array()
                .and_then(|outputs| {
                    outputs
                        .iter()
                        .find(|output| output["OutputKey"] == source["output"])
                })
                .and_then(|output| output["OutputValue"].as_str())
                .expect("the output exists");
            overrides.push(format!(
                "{}={value}",
                source["parameter"].as_str().expect("a name")
            ));
        }
        let tags: Vec<String> = description["tags"]
            .as_object()
            .expect("tags")
            .iter()
            .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
            .collect();
        let mut deploy = command(aws, environment);
        deploy
            .args(["cloudformation", "deploy", "--template-file"])
            .arg(rendered.join(format!("{stack}.template.yaml")))
            .args([
                "--stack-name",
                description["stack_name"].as_str().expect("a name"),
            ])
            .args([
                "--capabilities",
                "CAPABILITY_IAM",
                "CAPABILITY_NAMED_IAM",
                "--no-fail-on-empty-changeset",
            ]);
        if !overrides.is_empty() {
            deploy.arg("--parameter-overrides").args(&overrides);
        }
        deploy.arg("--tags").args(&tags);
        run(&mut deploy);
    }
}

fn main() {
    let environment = emulator_environment();
    let stackwright = env!("CARGO_BIN_EXE_stackwright");
    let aws = root().join(".venv-bench/bin/aws");
    assert!(
        aws.exists(),
        "{} is missing: run scripts/bench.sh",
        aws.display()
    );
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let certificate = run(command(root().join("scripts/dev-env.sh"), &environment)
        .args(["certificate", "cde.acme.example"]))
    .trim()
    .to_owned();
    let release = root().join("manifests/releases/1.0.0.json");
    let order = ["bootstrap", "identity", "network", "data", "platform"];

    println!(
        "full install of every stack against the emulator (all-private with public services, 5 stacks)"
    );
    println!(
        "{:<6} {:>16} {:>22} {:>8}",
        "run", "stackwright (s)", "aws cf deploy (s)", "ratio"
    );
    let mut totals = (0.0, 0.0);
    for index in 0..RUNS {
        let tag = format!("{}{index}", std::process::id() % 100_000);
        let ours = config(scratch.path(), &format!("bs{tag}"), &certificate);
        let started = Instant::now();
        run(command(stackwright, &environment)
            .arg("--config")
            .arg(&ours)
            .args(["--yes", "--quiet", "install", "--manifest-file"])
            .arg(&release)
            .arg("--allow-unsigned"));
        let stackwright_seconds = started.elapsed().as_secs_f64();

        let theirs = config(scratch.path(), &format!("ba{tag}"), &certificate);
        let rendered = scratch.path().join(format!("ba{tag}"));
        run(command(stackwright, &environment)
            .arg("--config")
            .arg(&theirs)
            .args(["--quiet", "render", "--out"])
            .arg(&rendered)
            .arg("--manifest-file")
            .arg(&release)
            .arg("--allow-unsigned"));
        let started = Instant::now();
        aws_deploy(&aws, &environment, &rendered, &order);
        let aws_seconds = started.elapsed().as_secs_f64();

        for config in [&ours, &theirs] {
            run(command(stackwright, &environment)
                .arg("--config")
                .arg(config)
                .args(["--yes", "--quiet", "teardown", "--delete-data"]));
        }
        println!(
            "{:<6} {stackwright_seconds:>16.2} {aws_seconds:>22.2} {:>8.2}",
            index + 1,
            stackwright_seconds / aws_seconds
        );
        totals.0 += stackwright_seconds;
        totals.1 += aws_seconds;
    }
    println!(
        "{:<6} {:>16.2} {:>22.2} {:>8.2}",
        "mean",
        totals.0 / RUNS as f64,
        totals.1 / RUNS as f64,
        totals.0 / totals.1
    );
}
