//! Upgrades driven by the reference control plane, end to end against the real binary, moto,
//! the two local registries and the control plane started per test: the first install
//! registers, the control plane offers a release, an unattended run mirrors its images and
//! upgrades the platform stack, the history, the installation record and the control plane
//! hold the result, and the next run finds nothing to do; the maintenance window holds an
//! upgrade back unless the release is urgent.

use std::sync::{Arc, Mutex};

use crate::common::control_plane::Server;
use crate::common::moto::{Cloud, Instance, Run};
use crate::common::release;
use crate::common::replay::{Answer, ChangeSet, Endpoint, element, fixture};

const CONFIG: &str = r#"schema_version = 1

[instance]
name = "{name}"
domain = "{domain}"
region = "us-east-1"
certificate_arn = "{certificate_arn}"

[network]
mode = "public"
availability_zones = 2

[control_plane]
url = "https://control.example.com"
"#;

/// An installed instance of release 1.0.0 registered with `server` through a token file.
fn installed(prefix: &str, server: &Server, extra: &str) -> Instance {
    installed_from(prefix, server, extra, &release("1.0.0"))
}

/// The same, from the release manifest at `manifest`.
fn installed_from(
    prefix: &str,
    server: &Server,
    extra: &str,
    manifest: &std::path::Path,
) -> Instance {
    let instance = Instance::new(prefix, &format!("{CONFIG}{extra}"));
    let token = server.operator(&["registration-token"]);
    let token_file = instance.directory().join("stackwright.token");
    std::fs::write(&token_file, token.trim()).expect("the token file");
    let install = instance
        .stackwright(&[
            "install",
            "--manifest-file",
            manifest.to_str().expect("UTF-8"),
            "--allow-unsigned",
        ])
        .env("STACKWRIGHT_CONTROL_PLANE_URL", &server.url)
        .run()
        .succeeded();
    assert!(
        install
            .stderr
            .contains("Registered with the control plane as instance"),
        "{}",
        install.transcript()
    );
    instance
}

fn upgrade<'a>(instance: &'a Instance, server: &Server, args: &[&str]) -> Run<'a> {
    let mut all = vec!["upgrade"];
    all.extend_from_slice(args);
    instance
        .stackwright(&all)
        .env("STACKWRIGHT_CONTROL_PLANE_URL", &server.url)
}

/// The operator offers `version` to every instance on the stable channel (urgent: `--urgent`).
fn rollout_with(server: &Server, version: &str, extra: &[&str]) {
    let mut arguments = vec![
        "rollout",
        version,
        "--channel",
        "stable",
        "--percent",
        "100",
    ];
    arguments.extend_from_slice(extra);
    server.operator(&arguments);
}

fn rollout(server: &Server, version: &str) {
    rollout_with(server, version, &[]);
}

/// The installed release as `status --output json` reports it.
fn installed_release(instance: &Instance) -> String {
    installation(instance)["installed_release"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The installation record as `status --output json` reports it.
fn installation(instance: &Instance) -> serde_json::Value {
    let status = instance
        .stackwright(&["--output", "json", "status"])
        .run()
        .succeeded();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("JSON");
    status["installation"].clone()
}

/// The error an unattended run printed, as its JSON line.
fn error_line(lines: &[serde_json::Value]) -> &serde_json::Value {
    lines
        .iter()
        .find(|line| line["level"] == "error")
        .expect("the error, as a JSON line")
}

/// The events of a successful `upgrade --unattended`.
fn unattended(instance: &Instance, server: &Server) -> Vec<serde_json::Value> {
    let run = upgrade(instance, server, &["--unattended"])
        .run()
        .succeeded();
    events(&format!("{}{}", run.stdout, run.stderr))
}

/// The upgrades `history --output json` lists.
fn upgrades_in_history(instance: &Instance) -> Vec<serde_json::Value> {
    let history = instance
        .stackwright(&["--output", "json", "history"])
        .run()
        .succeeded();
    let history: serde_json::Value = serde_json::from_str(&history.stdout).expect("JSON");
    history["operations"]
        .as_array()
        .expect("a list of operations")
        .iter()
        .filter(|entry| entry["kind"] == "upgrade")
        .cloned()
        .collect()
}

/// The JSON lines an unattended run printed, by event.
fn events(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}

fn event<'a>(events: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    events.iter().find(|event| event["event"] == name)
}

fn digest(version: &str, component: &str) -> String {
    let text = std::fs::read_to_string(release(version)).expect("the manifest");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    manifest["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|entry| entry["name"] == component)
        .and_then(|entry| entry["image"].as_str())
        .and_then(|image| image.split_once('@'))
        .map(|(_, digest)| digest.to_owned())
        .expect("the component's digest")
}

/// The platform stack in moto runs `version`'s images, from the instance's own repositories.
fn assert_platform_runs(instance: &Instance, version: &str) {
    let cloud = Cloud::connect();
    let template = cloud
        .block_on(
            cloud
                .cloudformation
                .get_template()
                .stack_name(instance.stack("platform"))
                .send(),
        )
        .expect("GetTemplate");
    let body = template.template_body().unwrap_or_default();
    for component in ["dashboard", "server", "workspace-manager"] {
        let image = format!(
            "{}/{component}@{}",
            instance.name,
            digest(version, component)
        );
        assert!(body.contains(&image), "{image} is not deployed");
    }
}

#[test]
fn an_offered_release_is_upgraded_to_unattended_and_the_next_run_finds_nothing() {
    let server = Server::start(None);
    rollout(&server, "1.0.0");
    let instance = installed("upgrade", &server, "");
    let records = server.instances();
    let record = &records[0];
    assert_eq!(record["last_report"]["report"]["kind"], "install");
    assert_eq!(record["last_report"]["report"]["to_version"], "1.0.0");
    assert_eq!(
        record["last_heartbeat"]["heartbeat"]["installed_version"],
        "1.0.0"
    );

    // Nothing newer is offered yet.
    let check = upgrade(&instance, &server, &["--check"]).run().succeeded();
    assert!(
        check.stdout.contains("Release 1.0.0 is up to date."),
        "{}",
        check.transcript()
    );

    rollout(&server, "1.1.0");
    let check = upgrade(&instance, &server, &["--check"]).run().exited(2);
    assert!(
        check.stdout.contains("Upgrade available: 1.0.0 → 1.1.0"),
        "{}",
        check.transcript()
    );

    let run = upgrade(&instance, &server, &["--unattended"])
        .run()
        .succeeded();
    let output = format!("{}{}", run.stdout, run.stderr);
    let lines = events(&output);
    assert_eq!(
        event(&lines, "decision").expect("a decision")["decision"]["decision"],
        "upgrade"
    );
    let mirrored = &event(&lines, "mirrored").expect("the images were mirrored")["summary"];
    assert!(
        mirrored["bytes_copied"].as_u64().unwrap_or(0) > 0,
        "{mirrored}"
    );
    let finished = event(&lines, "upgrade_finished").expect("a result");
    assert_eq!(finished["outcome"], "succeeded");
    assert_eq!(finished["to"], "1.1.0");
    // ECS and the load balancer were asked, after CloudFormation was done.
    let health = &event(&lines, "health").expect("a health check")["health"];
    assert_eq!(health["health"], "healthy", "{health}");
    assert!(
        health["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3 services stable"),
        "{health}"
    );
    // Unattended runs print nothing but JSON lines.
    for line in output.lines().filter(|line| !line.trim().is_empty()) {
        assert!(line.starts_with('{'), "not a JSON line: {line}");
    }

    // The platform stack runs the new images, from the instance's own repositories.
    assert_platform_runs(&instance, "1.1.0");
    assert_eq!(installed_release(&instance), "1.1.0");
    let upgrades = upgrades_in_history(&instance);
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0]["from_release"], "1.0.0");
    assert_eq!(upgrades[0]["to_release"], "1.1.0");
    assert_eq!(upgrades[0]["result"], "succeeded");

    // The control plane holds the result and the new state.
    let records = server.instances();
    let report = &records[0]["last_report"]["report"];
    assert_eq!(report["kind"], "upgrade");
    assert_eq!(report["from_version"], "1.0.0");
    assert_eq!(report["to_version"], "1.1.0");
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(
        records[0]["last_heartbeat"]["heartbeat"]["installed_version"],
        "1.1.0"
    );

    // The next run finds nothing to do, and changes nothing.
    let (again, requests) = crate::common::moto::record(&instance.name, || {
        upgrade(&instance, &server, &["--unattended"])
            .tag(&instance.name)
            .run()
            .succeeded()
    });
    let lines = events(&format!("{}{}", again.stdout, again.stderr));
    assert_eq!(
        event(&lines, "decision").expect("a decision")["decision"]["decision"],
        "up_to_date"
    );
    assert!(event(&lines, "upgrade_finished").is_none());
    assert_eq!(
        crate::common::moto::cloudformation_writes(&requests),
        Vec::<String>::new()
    );
}

#[test]
fn an_upgrade_waits_for_the_maintenance_window_unless_the_release_is_urgent() {
    // A one-hour window two days from now: closed whenever this test runs.
    let day = (jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::UTC)
        .date()
        + jiff::Span::new().days(2))
    .weekday();
    let name =
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][day.to_monday_zero_offset() as usize];
    let server = Server::start(None);
    rollout(&server, "1.0.0");
    let instance = installed(
        "window",
        &server,
        &format!("\n[upgrade]\nmaintenance_window = \"{name} 00:00-01:00\"\n"),
    );
    rollout(&server, "1.1.0");

    let lines = unattended(&instance, &server);
    let decision = &event(&lines, "decision").expect("a decision")["decision"];
    assert_eq!(decision["decision"], "wait", "{decision}");
    assert!(decision["until"].as_str().is_some(), "{decision}");
    assert!(event(&lines, "upgrade_finished").is_none());
    assert_eq!(installed_release(&instance), "1.0.0");

    // A person upgrading does not wait for the window.
    let check = upgrade(&instance, &server, &["--check"]).run().exited(2);
    assert!(
        check.stdout.contains("Upgrade available: 1.0.0 → 1.1.0"),
        "{}",
        check.transcript()
    );

    // The vendor marks it urgent: the job goes ahead outside the window.
    rollout_with(&server, "1.1.0", &["--urgent"]);
    let lines = unattended(&instance, &server);
    let decision = &event(&lines, "decision").expect("a decision")["decision"];
    assert_eq!(decision["decision"], "upgrade", "{decision}");
    assert_eq!(decision["urgent"], true);
    assert_eq!(
        event(&lines, "upgrade_finished").expect("a result")["outcome"],
        "succeeded"
    );
}

#[test]
fn an_unregistered_instance_is_told_how_to_register() {
    let server = Server::start(None);
    let instance = Instance::new("unreg", CONFIG);
    instance
        .stackwright(&["install", "--release", "1.0.0"])
        .env("STACKWRIGHT_CONTROL_PLANE_URL", &server.url)
        .run()
        .succeeded();
    let run = upgrade(&instance, &server, &["--check"]).run().exited(64);
    assert!(
        run.stderr
            .contains("has not registered with the control plane"),
        "{}",
        run.transcript()
    );
    assert!(
        run.stderr.contains("hint: put the registration token"),
        "{}",
        run.transcript()
    );
    // Nothing reached the control plane.
    assert_eq!(server.instances(), serde_json::json!([]));
}

/// A change made to a copy of a manifest.
type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);

/// A catalog for the control plane (`releases/` and the signed `repository/`): the example
/// releases 1.0.0 and 1.1.0, each edited by `edit`, plus `extra` releases made from 1.1.0,
/// signed with the development keys that the binary trusts.
fn catalog(
    edit: impl Fn(&str, &mut serde_json::Value),
    extra: &[(&str, Edit<'_>)],
) -> tempfile::TempDir {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let releases = directory.path().join("releases");
    std::fs::create_dir_all(&releases).expect("releases/");
    let read = |version: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(release(version)).expect("the manifest"))
            .expect("JSON")
    };
    let mut manifests = Vec::new();
    for version in ["1.0.0", "1.1.0"] {
        let mut manifest = read(version);
        edit(version, &mut manifest);
        manifests.push((version.to_owned(), manifest));
    }
    for (version, change) in extra {
        let mut manifest = read("1.1.0");
        manifest["version"] = serde_json::json!(version);
        change(&mut manifest);
        manifests.push(((*version).to_owned(), manifest));
    }
    let keys = std::path::Path::new(crate::common::REPOSITORY).join("manifests/dev-keys");
    let repository = directory.path().join("repository");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let expires =
        stackwright::release::signing::expiry(jiff::Timestamp::now(), "30d").expect("an expiry");
    for (version, manifest) in manifests {
        let path = releases.join(format!("{version}.json"));
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&manifest).expect("JSON"),
        )
        .expect("the manifest");
        runtime
            .block_on(stackwright::release::signing::build_repository(
                Some(&path),
                &keys,
                &repository,
                expires,
            ))
            .expect("the release is signed");
    }
    directory
}

#[test]
fn a_release_that_broadens_permissions_is_parked_for_a_person() {
    // 1.1.0 gives the dashboard access to the instance's data: its task role gains permissions.
    let releases = catalog(
        |version, manifest| {
            if version == "1.1.0" {
                manifest["components"][0]["data_access"] = serde_json::json!(true);
            }
        },
        &[],
    );
    let server = Server::start(Some(releases.path()));
    rollout(&server, "1.0.0");
    let instance = installed("parked", &server, "");
    rollout(&server, "1.1.0");

    let (run, requests) = crate::common::moto::record(&instance.name, || {
        upgrade(&instance, &server, &["--unattended"])
            .tag(&instance.name)
            .run()
            .exited(4)
    });
    let lines = events(&format!("{}{}", run.stdout, run.stderr));
    let plan = event(&lines, "plan").expect("the plan");
    let findings = plan["review"]["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .any(|finding| finding["kind"] == "iam-broadening"
                && finding["logical_id"] == "DashboardTaskRole"),
        "{findings:?}"
    );
    let finished = event(&lines, "upgrade_finished").expect("a result");
    assert_eq!(finished["outcome"], "parked");
    // Planned, never executed: the change sets were made and deleted again.
    let writes = crate::common::moto::cloudformation_writes(&requests);
    assert!(
        writes
            .iter()
            .all(|write| !write.starts_with("ExecuteChangeSet")),
        "{writes:?}"
    );
    assert_eq!(installed_release(&instance), "1.0.0");
    let records = server.instances();
    assert_eq!(records[0]["last_report"]["report"]["outcome"], "parked");
    assert_eq!(records[0]["last_report"]["report"]["to_version"], "1.1.0");
    let detail = records[0]["last_report"]["report"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.contains("DashboardTaskRole broadens permissions"),
        "{detail}"
    );

    // A person reviews and applies it.
    let applied = upgrade(&instance, &server, &["--to", "1.1.0"])
        .run()
        .succeeded();
    assert!(
        applied.stdout.contains("Upgraded") && applied.stdout.contains("from 1.0.0 to 1.1.0"),
        "{}",
        applied.transcript()
    );
}

#[test]
fn a_release_that_may_not_be_skipped_is_applied_on_the_way() {
    // 1.1.0 may not be skipped (as the example says); 1.2.0 requires 1.1.0 or later.
    let releases = catalog(
        |_, _| {},
        &[("1.2.0", &|manifest: &mut serde_json::Value| {
            manifest["minimum_upgrade_from"] = serde_json::json!("1.1.0");
            manifest["skippable"] = serde_json::json!(true);
        })],
    );
    let server = Server::start(Some(releases.path()));
    rollout(&server, "1.0.0");
    let instance = installed("hops", &server, "");
    for version in ["1.1.0", "1.2.0"] {
        rollout(&server, version);
    }
    let check = upgrade(&instance, &server, &["--check"]).run().exited(2);
    assert!(
        check
            .stdout
            .contains("Upgrade available: 1.0.0 → 1.1.0 → 1.2.0"),
        "{}",
        check.transcript()
    );
    let lines = unattended(&instance, &server);
    let hops: Vec<(String, String)> = lines
        .iter()
        .filter(|event| event["event"] == "upgrade_finished")
        .map(|event| {
            assert_eq!(event["outcome"], "succeeded", "{event}");
            (
                event["from"].as_str().unwrap_or_default().to_owned(),
                event["to"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        [
            ("1.0.0".to_owned(), "1.1.0".to_owned()),
            ("1.1.0".to_owned(), "1.2.0".to_owned())
        ]
    );
    assert_eq!(upgrades_in_history(&instance).len(), 2);
}

#[test]
fn a_refused_token_is_replaced_by_registering_again() {
    let first = Server::start(None);
    rollout(&first, "1.0.0");
    let instance = installed("rereg", &first, "");
    drop(first);
    // Another control plane, with another signing key: the stored token is not its own.
    let second = Server::start(None);
    rollout(&second, "1.1.0");

    // The token file still holds the used registration token, which this server refuses.
    let refused = upgrade(&instance, &second, &["--check"]).run().exited(1);
    assert!(
        refused
            .stderr
            .contains("hint: registration tokens work once and expire"),
        "{}",
        refused.transcript()
    );
    assert!(
        !refused.stderr.contains("eyJ"),
        "a token leaked: {}",
        refused.stderr
    );

    // With a new registration token the instance registers anew and goes on.
    let token = second.operator(&["registration-token"]);
    std::fs::write(instance.directory().join("stackwright.token"), token.trim())
        .expect("the token file");
    let check = upgrade(&instance, &second, &["--check"]).run().exited(2);
    assert!(
        check
            .stderr
            .contains("Registered with the control plane as instance"),
        "{}",
        check.transcript()
    );
    assert!(
        check.stdout.contains("Upgrade available: 1.0.0 → 1.1.0"),
        "{}",
        check.transcript()
    );
    assert_eq!(second.instances().as_array().map(Vec::len), Some(1));
}

#[test]
fn a_first_install_takes_the_release_the_control_plane_offers_or_the_version_named() {
    let server = Server::start(None);
    rollout(&server, "1.0.0");
    let instance = Instance::new("offered", CONFIG);

    // Not registered, no release named: nothing to ask, and the fix is named.
    let refused = instance
        .stackwright(&["install"])
        .env("STACKWRIGHT_CONTROL_PLANE_URL", &server.url)
        .run()
        .exited(64);
    assert!(
        refused.stderr.contains("hint: pass --release VERSION"),
        "{}",
        refused.transcript()
    );
    assert_eq!(server.instances(), serde_json::json!([]));

    let token = server.operator(&["registration-token"]);
    std::fs::write(instance.directory().join("stackwright.token"), token.trim())
        .expect("the token file");
    let install = instance
        .stackwright(&["install"])
        .env("STACKWRIGHT_CONTROL_PLANE_URL", &server.url)
        .run()
        .succeeded();
    assert!(
        install
            .stderr
            .contains("The control plane offers release 1.0.0 on channel \"stable\""),
        "{}",
        install.transcript()
    );
    assert_eq!(installed_release(&instance), "1.0.0");

    // A version named is verified in the control plane's signed repository, offered or not.
    let plan = instance
        .stackwright(&["plan", "--release", "1.1.0"])
        .env("STACKWRIGHT_CONTROL_PLANE_URL", &server.url)
        .run()
        .exited(2);
    assert!(
        plan.stdout
            .contains(&format!("{}: update", instance.stack("platform"))),
        "{}",
        plan.transcript()
    );
    let missing = instance
        .stackwright(&["plan", "--release", "9.9.9"])
        .env("STACKWRIGHT_CONTROL_PLANE_URL", &server.url)
        .run()
        .exited(1);
    assert!(
        missing
            .stderr
            .contains("has no release 9.9.9 (it lists: 1.0.0, 1.1.0)"),
        "{}",
        missing.transcript()
    );
}

/// A CloudFormation endpoint under which the platform stack's next update fails and is rolled
/// back, as CloudFormation reports it (recorded in `tests/fixtures/cloudformation/`): moto
/// applies every update it is given, so the change set is never executed there and the stack
/// keeps its template, as it would after a real rollback.
fn rolling_back_platform(instance: &Instance) -> Endpoint {
    let platform = instance.stack("platform");
    let change_set = ChangeSet::default();
    // When the update was executed: the recorded events are stamped from there, once.
    let executed: Arc<Mutex<Option<jiff::Timestamp>>> = Arc::default();
    Endpoint::start(move |call| {
        let on_platform = call.param("StackName") == Some(platform.as_str());
        let started = *executed.lock().expect("the execution time");
        match (call.action.as_str(), started) {
            ("CreateChangeSet", _) if on_platform => change_set.learn(),
            ("ExecuteChangeSet", _) if change_set.named_by(call) => {
                *executed.lock().expect("the execution time") = Some(jiff::Timestamp::now());
                Answer::Replay(fixture("cloudformation/execute-change-set.xml", &[]))
            }
            ("DescribeStacks", Some(_)) if on_platform => Answer::Rewrite(Box::new(|body| {
                let status = element(&body, "StackStatus").unwrap_or_default().to_owned();
                body.replacen(
                    &format!("<StackStatus>{status}</StackStatus>"),
                    "<StackStatus>UPDATE_ROLLBACK_COMPLETE</StackStatus>",
                    1,
                )
            })),
            ("DescribeStackEvents", Some(started)) if on_platform => {
                let stack = platform.clone();
                Answer::Rewrite(Box::new(move |body| {
                    let stack_id = element(&body, "StackId").unwrap_or_default().to_owned();
                    let at = |seconds: i64| {
                        (started + jiff::SignedDuration::from_secs(seconds))
                            .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                            .to_string()
                    };
                    let service = format!(
                        "arn:aws:ecs:us-east-1:123456789012:service/{stack}/{stack}-server"
                    );
                    let uuid = stack_id.rsplit('/').next().unwrap_or_default().to_owned();
                    let times: Vec<String> = (0..6).map(|step| at(step * 20)).collect();
                    let mut values = vec![
                        ("stack", stack.as_str()),
                        ("stack_id", stack_id.as_str()),
                        ("stack_uuid", uuid.as_str()),
                        ("service_arn", service.as_str()),
                    ];
                    let keys = ["t0", "t1", "t2", "t3", "t4", "t5"];
                    values.extend(
                        keys.iter()
                            .zip(&times)
                            .map(|(key, time)| (*key, time.as_str())),
                    );
                    let recorded = fixture("cloudformation/update-rollback-events.xml", &values);
                    body.replacen("<StackEvents>", &format!("<StackEvents>{recorded}"), 1)
                }))
            }
            _ => Answer::Forward,
        }
    })
}

#[test]
fn a_failed_upgrade_is_rolled_back_reported_and_skipped_on_the_next_run() {
    let server = Server::start(None);
    rollout(&server, "1.0.0");
    let instance = installed("rollback", &server, "");
    rollout(&server, "1.1.0");

    let endpoint = rolling_back_platform(&instance);
    let run = upgrade(&instance, &server, &["--unattended"])
        .env("AWS_ENDPOINT_URL_CLOUDFORMATION", &endpoint.url)
        .run()
        .exited(1);
    assert!(
        endpoint
            .actions()
            .iter()
            .any(|action| action == "ExecuteChangeSet"),
        "{:?}",
        endpoint.actions()
    );
    let lines = events(&format!("{}{}", run.stdout, run.stderr));
    let finished = event(&lines, "upgrade_finished").expect("a result");
    assert_eq!(finished["outcome"], "rolled_back", "{}", run.transcript());
    assert_eq!(finished["to"], "1.1.0");
    // The root cause is the first resource that failed, not the stack's summary.
    let detail = finished["detail"].as_str().unwrap_or_default();
    for expected in [
        "UPDATE_ROLLBACK_COMPLETE",
        "ServerService",
        "ECS Deployment Circuit Breaker was triggered",
    ] {
        assert!(detail.contains(expected), "{expected} missing in {detail}");
    }
    let error = error_line(&lines);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("UPDATE_ROLLBACK_COMPLETE"),
        "{error}"
    );

    // The instance runs 1.0.0 as before, and its record says so.
    assert_platform_runs(&instance, "1.0.0");
    let status = installation(&instance);
    assert_eq!(status["installed_release"], "1.0.0");
    assert_eq!(status["status"], "installed", "{status}");
    assert_eq!(status["failed_releases"], serde_json::json!(["1.1.0"]));
    let upgrades = upgrades_in_history(&instance);
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0]["result"], "rolled_back");
    assert_eq!(upgrades[0]["to_release"], "1.1.0");

    // The control plane holds the result.
    let records = server.instances();
    let report = &records[0]["last_report"]["report"];
    assert_eq!(report["kind"], "upgrade");
    assert_eq!(report["to_version"], "1.1.0");
    assert_eq!(report["outcome"], "rolled_back");
    assert!(
        report["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("ECS Deployment Circuit Breaker was triggered"),
        "{report}"
    );

    // The next run skips 1.1.0 and changes nothing.
    let (again, requests) = crate::common::moto::record(&instance.name, || {
        upgrade(&instance, &server, &["--unattended"])
            .tag(&instance.name)
            .run()
            .succeeded()
    });
    let lines = events(&format!("{}{}", again.stdout, again.stderr));
    let decision = &event(&lines, "decision").expect("a decision")["decision"];
    assert_eq!(decision["decision"], "up_to_date", "{decision}");
    assert!(
        decision.to_string().contains("failed here before"),
        "{decision}"
    );
    assert_eq!(
        crate::common::moto::cloudformation_writes(&requests),
        Vec::<String>::new()
    );

    // A person retries it on purpose, and it goes through.
    upgrade(&instance, &server, &["--to", "1.1.0"])
        .run()
        .succeeded();
    assert_platform_runs(&instance, "1.1.0");
    let status = installation(&instance);
    assert_eq!(status["installed_release"], "1.1.0");
    assert_eq!(
        status["failed_releases"],
        serde_json::Value::Null,
        "a release that went through is no longer skipped"
    );
}

#[test]
fn a_release_that_replaces_a_stateful_resource_is_parked_not_applied() {
    let server = Server::start(None);
    rollout(&server, "1.0.0");
    let instance = installed("stateful", &server, "");
    rollout(&server, "1.1.0");

    // CloudFormation says the platform change set replaces the server's log group (as a renamed
    // LogGroupName would); moto reports no replacements, so that answer is replayed.
    let platform = instance.stack("platform");
    let log_group = format!("/stackwright/{}/server", instance.name);
    let change_set = ChangeSet::default();
    let endpoint = Endpoint::start(move |call| match call.action.as_str() {
        "CreateChangeSet" if call.param("StackName") == Some(platform.as_str()) => {
            change_set.learn()
        }
        "DescribeChangeSet" if change_set.named_by(call) => {
            let recorded = fixture(
                "cloudformation/stateful-replacement-change.xml",
                &[("log_group", log_group.as_str())],
            );
            Answer::Rewrite(Box::new(move |body| {
                body.replacen("<Changes>", &format!("<Changes>{recorded}"), 1)
            }))
        }
        _ => Answer::Forward,
    });
    let (run, requests) = crate::common::moto::record(&instance.name, || {
        upgrade(&instance, &server, &["--unattended"])
            .env("AWS_ENDPOINT_URL_CLOUDFORMATION", &endpoint.url)
            .tag(&instance.name)
            .run()
            .exited(4)
    });
    assert!(
        endpoint
            .actions()
            .iter()
            .any(|action| action == "DescribeChangeSet"),
        "{:?}",
        endpoint.actions()
    );
    let lines = events(&format!("{}{}", run.stdout, run.stderr));
    let plan = event(&lines, "plan").expect("the plan");
    let findings = plan["review"]["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .any(|finding| finding["kind"] == "stateful-replacement"
                && finding["logical_id"] == "ServerLogGroup"
                && finding["resource_type"] == "AWS::Logs::LogGroup"),
        "{findings:?}"
    );
    assert_eq!(
        event(&lines, "upgrade_finished").expect("a result")["outcome"],
        "parked"
    );
    // Planned, never executed: moto saw no ExecuteChangeSet, and the instance runs 1.0.0.
    let writes = crate::common::moto::cloudformation_writes(&requests);
    assert!(
        writes
            .iter()
            .all(|write| !write.starts_with("ExecuteChangeSet")),
        "{writes:?}"
    );
    assert_platform_runs(&instance, "1.0.0");
    assert_eq!(installed_release(&instance), "1.0.0");
    let upgrades = upgrades_in_history(&instance);
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0]["result"], "parked");
    let report = &server.instances()[0]["last_report"]["report"];
    assert_eq!(report["outcome"], "parked");
    assert!(
        report["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("ServerLogGroup replaces a stateful resource"),
        "{report}"
    );
}

#[test]
fn an_upgrade_whose_targets_fail_their_health_checks_is_failed_reported_and_skipped() {
    let server = Server::start(None);
    rollout(&server, "1.0.0");
    let instance = installed("unhealthy", &server, "");
    rollout(&server, "1.1.0");

    // CloudFormation completes; then the load balancer reports a target answering 502, which
    // moto never does (it registers no tasks as targets), so that answer is replayed.
    let recorded = fixture("elbv2/unhealthy-target.xml", &[]);
    let endpoint = Endpoint::start(move |call| match call.action.as_str() {
        "DescribeTargetHealth" => {
            let recorded = recorded.clone();
            Answer::Rewrite(Box::new(move |body| {
                let members =
                    format!("<TargetHealthDescriptions>{recorded}</TargetHealthDescriptions>");
                if body.contains("<TargetHealthDescriptions/>") {
                    body.replacen("<TargetHealthDescriptions/>", &members, 1)
                } else {
                    body.replacen(
                        "<TargetHealthDescriptions>",
                        &format!("<TargetHealthDescriptions>{recorded}"),
                        1,
                    )
                }
            }))
        }
        _ => Answer::Forward,
    });
    let run = upgrade(&instance, &server, &["--unattended"])
        .env("AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2", &endpoint.url)
        .run()
        .exited(1);
    assert!(
        endpoint
            .actions()
            .iter()
            .any(|action| action == "DescribeTargetHealth"),
        "{:?}",
        endpoint.actions()
    );
    let lines = events(&format!("{}{}", run.stdout, run.stderr));
    let health = lines
        .iter()
        .rfind(|line| line["event"] == "health")
        .expect("a health check");
    assert_eq!(health["health"]["health"], "unhealthy", "{health}");
    let finished = event(&lines, "upgrade_finished").expect("a result");
    assert_eq!(finished["outcome"], "failed", "{}", run.transcript());
    let detail = finished["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("runs release 1.1.0, but it is not healthy")
            && detail.contains("target 10.0.1.23 is unhealthy (Target.ResponseCodeMismatch: Health checks failed with these codes: [502])"),
        "{detail}"
    );
    let error = error_line(&lines);
    assert!(
        error["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("stackwright upgrade --to 1.1.0"),
        "{error}"
    );

    // The stacks run 1.1.0, and the record says it is not healthy and is not to be retried.
    assert_platform_runs(&instance, "1.1.0");
    let status = installation(&instance);
    assert_eq!(status["installed_release"], "1.1.0");
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(status["failed_releases"], serde_json::json!(["1.1.0"]));
    let upgrades = upgrades_in_history(&instance);
    assert_eq!(upgrades[0]["result"], "failed");
    let report = &server.instances()[0]["last_report"]["report"];
    assert_eq!(report["outcome"], "failed");
    assert_eq!(report["to_version"], "1.1.0");
}

/// An installer image of `version` pushed to the vendor registry, named as a release names it.
fn installer_image(version: &str) -> (String, String) {
    use stackwright::mirror::synthetic;
    let image = synthetic::SyntheticImage {
        repository: "stackwright/installer".into(),
        tag: Some(version.into()),
        platforms: vec![synthetic::PlatformImage {
            os: "linux".into(),
            architecture: "amd64".into(),
            layers: vec![synthetic::Layer::new(
                synthetic::seed_of(&format!("installer-{version}")),
                64 * 1024,
            )],
            labels: Vec::new(),
        }],
    };
    let digest = crate::mirror::push(&[image]).remove(0);
    (
        format!("111122223333.dkr.ecr.us-east-1.amazonaws.com/stackwright/installer@{digest}"),
        digest,
    )
}

/// The image the updater stack's task runs, as its deployed template names it.
fn updater_image(instance: &Instance) -> String {
    let cloud = Cloud::connect();
    let template = cloud
        .block_on(
            cloud
                .cloudformation
                .get_template()
                .stack_name(instance.stack("updater"))
                .send(),
        )
        .expect("GetTemplate");
    let body = template.template_body().unwrap_or_default();
    let start = body
        .find(&format!("{}/installer@", instance.name))
        .expect("the installer image in the updater's template");
    body[start..]
        .split(|character: char| character.is_whitespace() || character == '"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_release_that_needs_a_newer_installer_moves_the_updater_to_it_first() {
    let (old, old_digest) = installer_image("0.1.0");
    let (new, new_digest) = installer_image("0.2.0");
    let releases = catalog(
        |version, manifest| {
            if version == "1.0.0" {
                manifest["installer"] = serde_json::json!({ "version": "0.1.0", "image": old });
            } else {
                manifest["minimum_installer_version"] = serde_json::json!("0.2.0");
                manifest["installer"] = serde_json::json!({ "version": "0.2.0", "image": new });
            }
        },
        &[],
    );
    let server = Server::start(Some(releases.path()));
    rollout(&server, "1.0.0");
    let instance = installed_from(
        "handover",
        &server,
        "",
        &releases.path().join("releases/1.0.0.json"),
    );
    assert_eq!(
        updater_image(&instance),
        format!("{}/installer@{old_digest}", instance.name)
    );
    rollout(&server, "1.1.0");

    let run = upgrade(&instance, &server, &["--unattended"])
        .run()
        .succeeded();
    let lines = events(&format!("{}{}", run.stdout, run.stderr));
    let decision = &event(&lines, "decision").expect("a decision")["decision"];
    assert_eq!(decision["decision"], "needs_installer", "{decision}");
    let handed = event(&lines, "handed_over").expect("a hand-over");
    assert_eq!(handed["installer"], "0.2.0");
    assert_eq!(handed["release"], "1.1.0");

    // The updater's task runs the new installer, from the instance's own repository; the
    // platform did not move, and the history says why.
    assert_eq!(
        updater_image(&instance),
        format!("{}/installer@{new_digest}", instance.name),
        "{}",
        run.transcript()
    );
    let (status, found, _) = crate::mirror::fetch(
        &crate::mirror::customer(),
        "HEAD",
        &format!("{}/installer/manifests/{new_digest}", instance.name),
    );
    assert_eq!(status, 200);
    assert_eq!(found.as_deref(), Some(new_digest.as_str()));
    assert_platform_runs(&instance, "1.0.0");
    assert_eq!(installed_release(&instance), "1.0.0");
    let upgrades = upgrades_in_history(&instance);
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0]["result"], "handed_over");

    // The old installer, run again, finds the hand-over made and writes nothing.
    let (again, requests) = crate::common::moto::record(&instance.name, || {
        upgrade(&instance, &server, &["--unattended"])
            .tag(&instance.name)
            .run()
            .succeeded()
    });
    let lines = events(&format!("{}{}", again.stdout, again.stderr));
    assert!(
        event(&lines, "handed_over").is_some(),
        "{}",
        again.transcript()
    );
    let writes = crate::common::moto::cloudformation_writes(&requests);
    assert!(
        writes
            .iter()
            .all(|write| !write.starts_with("ExecuteChangeSet")),
        "{writes:?}"
    );

    // A person with the old installer is told what to run.
    let manual = upgrade(&instance, &server, &[]).run().exited(64);
    assert!(
        manual.stderr.contains("needs stackwright 0.2.0 or newer"),
        "{}",
        manual.transcript()
    );
}

/// Every file below `directory`, as paths relative to it.
fn files_below(directory: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("a readable directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(directory).expect("below").to_path_buf());
            }
        }
    }
    found
}

#[test]
fn an_upgrade_verifies_its_release_from_an_s3_bucket() {
    // The vendor publishes the signed repository to a bucket; the control plane's offers name
    // it, and the control plane itself serves no repository, so only S3 can answer.
    let releases = catalog(|_, _| {}, &[]);
    let cloud = Cloud::connect();
    let bucket = crate::common::moto::unique_name("releases").to_lowercase();
    cloud
        .block_on(cloud.s3.create_bucket().bucket(&bucket).send())
        .expect("CreateBucket");
    let repository = releases.path().join("repository");
    for relative in files_below(&repository) {
        let body = std::fs::read(repository.join(&relative)).expect("a repository file");
        let key = format!("stackwright/stable/{}", relative.display());
        cloud
            .block_on(
                cloud
                    .s3
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .body(body.into())
                    .send(),
            )
            .expect("PutObject");
    }
    std::fs::remove_dir_all(&repository).expect("the local copy is gone");
    let origin = format!("s3://{bucket}/stackwright/stable");
    let server = Server::start_with(
        Some(releases.path()),
        &["--repository-url", &format!("{origin}/")],
    );
    let instance = installed(
        "s3-repository",
        &server,
        &format!("\n[release]\nrepository = \"{origin}\"\n"),
    );
    rollout(&server, "1.1.0");

    let lines = unattended(&instance, &server);
    assert!(
        !lines
            .iter()
            .any(|line| line.to_string().contains("is offered but refused")),
        "{lines:?}"
    );
    let finished = event(&lines, "upgrade_finished").expect("a result");
    assert_eq!(finished["outcome"], "succeeded", "{lines:?}");
    assert_eq!(finished["to"], "1.1.0");
    assert_eq!(installed_release(&instance), "1.1.0");
    assert_platform_runs(&instance, "1.1.0");
}

#[test]
fn an_offer_naming_another_repository_than_the_pinned_one_is_refused() {
    let server = Server::start(None);
    let pinned = "https://127.0.0.1:9/vendor/releases/";
    let instance = installed(
        "pinned-origin",
        &server,
        &format!("\n[release]\nrepository = \"{pinned}\"\n"),
    );
    rollout(&server, "1.1.0");

    let check = upgrade(&instance, &server, &["--check"]).run().exited(1);
    let offered = format!("{}repository/", server.url);
    assert!(
        check.stderr.contains(&format!(
            "error: the control plane offers releases from {offered}, but this instance reads releases only from {pinned}: refusing the offer"
        )),
        "{}",
        check.transcript()
    );
    assert!(
        check.stderr.contains(&format!(
            "hint: if the vendor has moved its release repository, set release.repository = \"{offered}\""
        )),
        "{}",
        check.transcript()
    );
    // Nothing was applied: the instance stays on 1.0.0.
    assert_eq!(installed_release(&instance), "1.0.0");
}
