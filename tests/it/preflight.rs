//! `stackwright preflight` against the local emulator and TLS and TCP listeners on 127.0.0.1.
//!
//! Each moto test owns an instance with a unique name and a region no other test uses, so that
//! quota usage (VPCs, Elastic IPs) is its own. Every destination dialled is on 127.0.0.1: the
//! listeners are reached through `STACKWRIGHT_DIAL_OVERRIDES`, the AWS endpoints through
//! `AWS_ENDPOINT_URL`, and the rest is skipped by `STACKWRIGHT_DIAL_ONLY_LOOPBACK=1`; the last
//! tests prove it, in-process through the dialer and at the process level with strace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use serde_json::Value;
use stackwright::config::ConfigFile;
use stackwright::preflight::dial::{
    DialAddress, DialFailure, DialSettings, DialTarget, Dialer, Dialled, NetworkDialer,
};
use stackwright::preflight::{self, Outcome};

use crate::common::moto::{self, Instance};

/// A configuration template: the certificate stays a comment (the emulator's certificates
/// are pending for a minute), so the certificate check looks for one instead.
fn template(region: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"schema_version = 1
[instance]
name = "{{name}}"
domain = "{{domain}}"
region = "{region}"
# a certificate of the emulator, unused here: {{certificate_arn}}
[network]
mode = "{mode}"
availability_zones = 3
{extra}
[control_plane]
url = "https://control.example.com"
"#
    )
}

/// A certificate authority and TLS listeners on 127.0.0.1 presenting certificates it signed
/// (or, for an untrusted listener, one it did not).
struct LocalTls {
    runtime: tokio::runtime::Runtime,
    authority: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    directory: tempfile::TempDir,
}

impl LocalTls {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "stackwright test authority");
        let key = rcgen::KeyPair::generate().expect("a key");
        let authority = rcgen::CertifiedIssuer::self_signed(params, key).expect("a CA");
        LocalTls {
            runtime,
            authority,
            directory: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// The authority's certificate as a PEM file, for `STACKWRIGHT_CA_BUNDLE`.
    fn ca_file(&self) -> PathBuf {
        let path = self.directory.path().join("authority.pem");
        std::fs::write(&path, self.authority.pem()).expect("the CA file is written");
        path
    }

    /// A listener completing TLS handshakes as `name`; its port.
    fn listen(&self, name: &str, trusted: bool) -> u16 {
        let key = rcgen::KeyPair::generate().expect("a key");
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        let certificate = if trusted {
            params
                .signed_by(&key, &self.authority)
                .expect("a signed certificate")
        } else {
            params.self_signed(&key).expect("a self-signed certificate")
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .expect("a server configuration");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback listener");
        let port = listener.local_addr().expect("an address").port();
        self.runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    }
                });
            }
        });
        port
    }
}

/// A port of 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.local_addr().expect("an address").port()
}

fn json(outcome: &moto::Outcome) -> Value {
    serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|error| panic!("stdout is not JSON ({error}):\n{}", outcome.transcript()))
}

/// The check with this id in a JSON report.
fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|check| check["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

#[test]
fn preflight_reports_a_reachable_and_an_unreachable_destination() {
    let instance = Instance::new("pf-dial", &template("eu-west-2", "public", ""));
    let tls = LocalTls::new();
    let control_plane = tls.listen("control.example.com", true);
    let untrusted = tls.listen("download.jetbrains.com", false);
    let closed = closed_port();
    let overrides = format!(
        "control.example.com:443=127.0.0.1:{control_plane},www.schemastore.org=127.0.0.1:{closed},download.jetbrains.com=127.0.0.1:{untrusted}"
    );
    let outcome = instance
        .stackwright(&["--output", "json", "preflight", "--dial-timeout", "3"])
        .env("STACKWRIGHT_DIAL_OVERRIDES", &overrides)
        .env("STACKWRIGHT_DIAL_ONLY_LOOPBACK", "1")
        .env(
            "STACKWRIGHT_CA_BUNDLE",
            tls.ca_file().to_str().expect("UTF-8"),
        )
        // The configuration's control plane, not the local environment's.
        .env_remove("STACKWRIGHT_CONTROL_PLANE_URL")
        .run();
    // Only the two feature destinations fail, so the run ends with warnings: exit code 2.
    let outcome = outcome.exited(2);
    let report = json(&outcome);
    assert_eq!(report["result"], "warn", "{report:#}");

    let reached = check(&report, "connectivity.control.example.com:443");
    assert_eq!(reached["outcome"], "pass", "{reached:#}");
    let detail = reached["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("TLS 1.3 handshake with 127.0.0.1:")
            && detail.contains(&format!(":{control_plane} (override)")),
        "{detail}"
    );

    let refused = check(&report, "connectivity.www.schemastore.org:443");
    assert_eq!(refused["outcome"], "warn", "{refused:#}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("TCP connection failed: Connection refused"),
        "{refused:#}"
    );
    assert!(
        refused["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("allow HTTPS to www.schemastore.org:443"),
        "{refused:#}"
    );

    // A listener with a certificate nobody vouches for: reached, but the handshake fails, as
    // behind a TLS-inspecting proxy.
    let inspected = check(&report, "connectivity.download.jetbrains.com:443");
    assert_eq!(inspected["outcome"], "warn", "{inspected:#}");
    assert!(
        inspected["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("TLS handshake failed: invalid peer certificate"),
        "{inspected:#}"
    );
    assert!(
        inspected["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("STACKWRIGHT_CA_BUNDLE"),
        "{inspected:#}"
    );

    // The AWS endpoints are dialled where the SDK goes (the emulator, plain HTTP), and what has
    // no local stand-in is skipped, not dialled.
    let sts = check(&report, "connectivity.sts.eu-west-2.amazonaws.com:443");
    assert_eq!(sts["outcome"], "pass", "{sts:#}");
    assert!(
        sts["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("(AWS_ENDPOINT_URL)"),
        "{sts:#}"
    );
    let vscode = check(&report, "connectivity.open-vsx.org:443");
    assert_eq!(vscode["outcome"], "skip", "{vscode:#}");
    assert_eq!(
        vscode["detail"],
        "not dialled: no local override (STACKWRIGHT_DIAL_ONLY_LOOPBACK=1)"
    );

    // The text report says the same to a person, with the fixes under the table.
    let text = instance
        .stackwright(&["preflight", "--dial-timeout", "3"])
        .env("STACKWRIGHT_DIAL_OVERRIDES", &overrides)
        .env("STACKWRIGHT_DIAL_ONLY_LOOPBACK", "1")
        .env(
            "STACKWRIGHT_CA_BUNDLE",
            tls.ca_file().to_str().expect("UTF-8"),
        )
        .env_remove("STACKWRIGHT_CONTROL_PLANE_URL")
        .run()
        .exited(2);
    assert!(
        text.stdout
            .contains("pass    reach control.example.com:443")
            && text
                .stdout
                .contains("warn    reach www.schemastore.org:443")
            && text
                .stdout
                .contains("To fix:\n  warn reach www.schemastore.org:443: allow HTTPS")
            && text.stdout.contains(" passed, 2 warnings, 0 failed, "),
        "{}",
        text.transcript()
    );
}

/// EC2 in a region of the emulator, for usage the test sets up itself.
fn ec2(region: &str) -> (tokio::runtime::Runtime, aws_sdk_ec2::Client) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let variables = moto::env();
    let config = runtime.block_on(
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(moto::endpoint())
            .credentials_provider(aws_credential_types::Credentials::new(
                &variables["AWS_ACCESS_KEY_ID"],
                &variables["AWS_SECRET_ACCESS_KEY"],
                None,
                None,
                "dev-env",
            ))
            .load(),
    );
    (runtime, aws_sdk_ec2::Client::new(&config))
}

#[test]
fn preflight_reports_a_quota_short_with_its_fix() {
    // This region is this test's alone: it fills the VPC quota (5, moto's default from
    // Service Quotas) and uses 3 of the 5 Elastic IPs (moto's EC2 account attribute: its
    // Service Quotas knows only the vpc service, so the ec2 quota falls back to EC2).
    let region = "ap-southeast-2";
    let (runtime, ec2) = ec2(region);
    runtime.block_on(async {
        let vpcs = ec2
            .describe_vpcs()
            .send()
            .await
            .expect("DescribeVpcs")
            .vpcs()
            .len();
        for index in vpcs..5 {
            ec2.create_vpc()
                .cidr_block(format!("10.{}.0.0/16", 100 + index))
                .send()
                .await
                .expect("CreateVpc");
        }
        let addresses = ec2
            .describe_addresses()
            .send()
            .await
            .expect("DescribeAddresses")
            .addresses()
            .len();
        for _ in addresses..3 {
            ec2.allocate_address()
                .domain(aws_sdk_ec2::types::DomainType::Vpc)
                .send()
                .await
                .expect("AllocateAddress");
        }
    });
    let instance = Instance::new("pf-quota", &template(region, "public", ""));
    let outcome = instance
        .stackwright(&["--output", "json", "preflight"])
        .env("STACKWRIGHT_DIAL_ONLY_LOOPBACK", "1")
        .run()
        .exited(1);
    let report = json(&outcome);
    let vpcs = check(&report, "quota.vpc.L-F678F1CE");
    assert_eq!(vpcs["outcome"], "fail", "{vpcs:#}");
    assert_eq!(
        vpcs["detail"],
        "needs 1 in the region, 5 in use of 5: short by 1"
    );
    assert_eq!(
        vpcs["fix"],
        "free 1 (aws ec2 describe-vpcs lists them) or request a quota of at least 6: aws service-quotas request-service-quota-increase --region ap-southeast-2 --service-code vpc --quota-code L-F678F1CE --desired-value 6"
    );
    let addresses = check(&report, "quota.ec2.L-0263D0A3");
    assert_eq!(addresses["outcome"], "fail", "{addresses:#}");
    assert_eq!(
        addresses["detail"],
        "needs 3 in the region, 3 in use of 5 (from EC2's account attributes): short by 1"
    );
    let fix = addresses["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("--quota-code L-0263D0A3 --desired-value 6")
            && fix.contains("network.availability_zones = 2")
            && fix.contains("all-private mode"),
        "{fix}"
    );
    // Quotas with room to spare pass.
    assert_eq!(check(&report, "quota.vpc.L-FE5A380F")["outcome"], "pass");
}

#[test]
fn preflight_finds_a_stack_left_in_progress_and_install_stops_there() {
    let region = "eu-north-1";
    let instance = Instance::new("pf-stack", &template(region, "private", ""));
    let stack = instance.stack("network");
    // moto has no rollback: a resource that fails leaves its stack in CREATE_IN_PROGRESS for
    // good, which is what a leftover, still-busy stack looks like to the installer.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let variables = moto::env();
    let config = runtime.block_on(
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region))
            .endpoint_url(moto::endpoint())
            .credentials_provider(aws_credential_types::Credentials::new(
                &variables["AWS_ACCESS_KEY_ID"],
                &variables["AWS_SECRET_ACCESS_KEY"],
                None,
                None,
                "dev-env",
            ))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load(),
    );
    let cloudformation = aws_sdk_cloudformation::Client::new(&config);
    let created = runtime.block_on(
        cloudformation
            .create_stack()
            .stack_name(&stack)
            .template_body(
                "Resources:\n  Subnet:\n    Type: AWS::EC2::Subnet\n    Properties:\n      VpcId: vpc-0000000000000dead\n      CidrBlock: 10.0.0.0/24\n",
            )
            .tags(
                aws_sdk_cloudformation::types::Tag::builder()
                    .key("stackwright:instance")
                    .value(&instance.name)
                    .build(),
            )
            .send(),
    );
    assert!(created.is_err(), "moto refuses the subnet: {created:?}");
    let status = runtime
        .block_on(cloudformation.describe_stacks().stack_name(&stack).send())
        .expect("the stack exists")
        .stacks()[0]
        .stack_status()
        .map(|status| status.as_str().to_owned());
    assert_eq!(status.as_deref(), Some("CREATE_IN_PROGRESS"));

    let outcome = instance
        .stackwright(&["--output", "json", "preflight"])
        .env("STACKWRIGHT_DIAL_ONLY_LOOPBACK", "1")
        .run()
        .exited(1);
    let report = json(&outcome);
    let found = check(&report, "stacks.network");
    assert_eq!(found["outcome"], "fail", "{found:#}");
    assert!(
        found["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("CREATE_IN_PROGRESS (last change "),
        "{found:#}"
    );
    assert!(
        found["fix"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("describe-stack-events --stack-name {stack}")),
        "{found:#}"
    );

    // The network stack is there already: its VPC is not counted against the quota again.
    let quotas = check(&report, "quota");
    assert_eq!(quotas["outcome"], "pass", "{quotas:#}");
    assert!(
        quotas["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{stack} exists (CREATE_IN_PROGRESS)")),
        "{quotas:#}"
    );

    // install runs the same checks first and stops before creating anything.
    let install = instance
        .stackwright(&["install", "--release", "1.0.0"])
        .env("STACKWRIGHT_DIAL_ONLY_LOOPBACK", "1")
        .env_remove("STACKWRIGHT_SKIP_PREFLIGHT")
        .run()
        .exited(1);
    assert!(
        install.stderr.contains(&format!("FAIL    stack {stack}"))
            && install.stderr.contains(&format!(
                "error: preflight found 1 problem that would stop the install: stack {stack}"
            ))
            && install.stderr.contains("--skip-preflight"),
        "{}",
        install.transcript()
    );
    let bootstrap = runtime.block_on(
        cloudformation
            .describe_stacks()
            .stack_name(instance.stack("bootstrap"))
            .send(),
    );
    assert!(bootstrap.is_err(), "install created nothing: {bootstrap:?}");
    let _ = runtime.block_on(cloudformation.delete_stack().stack_name(&stack).send());
}

#[test]
fn preflight_output_json_is_stable() {
    let instance = Instance::new(
        "pf-json",
        &template("eu-west-3", "all-private", "public_services = true"),
    );
    let tls = LocalTls::new();
    let control_plane = tls.listen("control.example.com", true);
    let outcome = instance
        .stackwright(&["--output", "json", "preflight"])
        .env(
            "STACKWRIGHT_DIAL_OVERRIDES",
            &format!("control.example.com=127.0.0.1:{control_plane}"),
        )
        .env("STACKWRIGHT_DIAL_ONLY_LOOPBACK", "1")
        .env(
            "STACKWRIGHT_CA_BUNDLE",
            tls.ca_file().to_str().expect("UTF-8"),
        )
        .env_remove("STACKWRIGHT_CONTROL_PLANE_URL")
        .run()
        .succeeded();
    let mut settings = instance.settings();
    settings.add_filter(r"in \d+ ms", "in [MS] ms");
    settings.bind(|| insta::assert_snapshot!(outcome.stdout));
}

/// Records every target dialled, then dials it for real.
struct RecordingDialer {
    inner: NetworkDialer,
    dialled: Mutex<Vec<DialTarget>>,
}

impl Dialer for RecordingDialer {
    async fn dial(&self, target: &DialTarget) -> Result<Dialled, DialFailure> {
        self.dialled
            .lock()
            .expect("the record is not poisoned")
            .push(target.clone());
        self.inner.dial(target).await
    }
}

/// The variables of the local environment's env.sh, which must turn on loopback-only dialling.
fn local_environment() -> std::collections::BTreeMap<String, String> {
    let variables = moto::env().clone();
    assert_eq!(
        variables
            .get("STACKWRIGHT_DIAL_ONLY_LOOPBACK")
            .map(String::as_str),
        Some("1"),
        "env.sh of the local environment does not set STACKWRIGHT_DIAL_ONLY_LOOPBACK=1: run scripts/dev-env.sh up again"
    );
    variables
}

fn all_private_config(name: &str) -> ConfigFile {
    let text = template("us-east-1", "all-private", "public_services = true")
        .replace("{name}", name)
        .replace("{domain}", &format!("{name}.example.com"))
        .replace("{certificate_arn}", "none");
    ConfigFile::parse(&text, Path::new("stackwright.toml")).expect("a valid configuration")
}

#[test]
fn preflight_with_the_local_environment_dials_only_loopback_in_process() {
    let variables = local_environment();
    let settings =
        DialSettings::from_variables(Duration::from_secs(3), |name| variables.get(name).cloned())
            .expect("the local environment's dial settings are valid");
    let dialer = RecordingDialer {
        inner: NetworkDialer::new(&stackwright::tls::ExtraRoots::none()).expect("a dialer"),
        dialled: Mutex::new(Vec::new()),
    };
    let config = all_private_config(&moto::unique_name("pf-loop"));
    let no_credentials = stackwright::provision::DeployError::NoCredentials {
        detail: "this test checks connectivity only".into(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime.block_on(preflight::run::<
        stackwright::aws::AwsAccount,
        stackwright::aws::CloudFormation,
        _,
    >(
        &config,
        Err(&no_credentials),
        &dialer,
        &settings,
        jiff::Timestamp::now(),
    ));
    let dialled = dialer.dialled.into_inner().expect("not poisoned");
    let addresses: Vec<SocketAddr> = dialled
        .iter()
        .map(|target| match &target.address {
            DialAddress::Socket(address) => *address,
            DialAddress::Name { host, port } => {
                panic!("{host}:{port} was left to name resolution, which may leave the machine")
            }
        })
        .collect();
    assert!(
        addresses
            .iter()
            .all(|address| address.ip() == std::net::IpAddr::from([127, 0, 0, 1])),
        "{addresses:?}"
    );
    // The four AWS destinations go to the emulator; everything else is reported, not dialled.
    let endpoint: SocketAddr = moto::endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("the emulator's address");
    assert_eq!(addresses, vec![endpoint; 4]);
    let connectivity: Vec<(&str, Outcome)> = report
        .checks
        .iter()
        .filter(|check| check.id.starts_with("connectivity."))
        .map(|check| (check.title.as_str(), check.outcome))
        .collect();
    assert_eq!(
        connectivity
            .iter()
            .filter(|(_, outcome)| *outcome == Outcome::Pass)
            .count(),
        4,
        "{connectivity:?}"
    );
    assert!(
        connectivity
            .iter()
            .all(|(_, outcome)| matches!(outcome, Outcome::Pass | Outcome::Skip)),
        "{connectivity:?}"
    );
}

/// Every `connect()` of the binary and its threads, as strace saw them.
fn connects_under_strace(
    instance: &Instance,
    variables: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let trace = instance.directory().join("connect.trace");
    let strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=connect", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_stackwright"))
        .arg("--config")
        .arg(&instance.config)
        .arg("preflight")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("NO_COLOR", "1")
        .envs(variables)
        .current_dir(instance.directory())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|error| {
            panic!("strace does not run ({error}): install it (Debian package strace; scripts/dev-tools.sh does)")
        });
    let stderr = String::from_utf8_lossy(&strace.stderr);
    assert!(
        !stderr.contains("ptrace") && matches!(strace.status.code(), Some(0 | 2)),
        "preflight under strace did not end with 0 or 2: {strace:?}"
    );
    std::fs::read_to_string(&trace)
        .expect("strace wrote its trace")
        .lines()
        .filter(|line| line.contains("connect("))
        .map(str::to_owned)
        .collect()
}

#[test]
fn preflight_with_the_local_environment_connects_only_to_loopback_under_strace() {
    let variables = local_environment();
    // A region of its own, so that other tests' VPCs cannot make its quota checks fail.
    let instance = Instance::new(
        "pf-strace",
        &template("ca-central-1", "all-private", "public_services = true"),
    );
    let connects = connects_under_strace(&instance, &variables);
    let internet: Vec<&String> = connects
        .iter()
        .filter(|line| line.contains("AF_INET"))
        .collect();
    assert!(
        !internet.is_empty(),
        "no TCP connection at all was traced: {connects:#?}"
    );
    let elsewhere: Vec<&&String> = internet
        .iter()
        .filter(|line| !(line.contains("inet_addr(\"127.0.0.1\")") || line.contains("\"::1\"")))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "connections beyond the loopback address: {elsewhere:#?}"
    );
}

#[test]
fn preflight_replayed_rollback_complete_and_delete_failed_stacks() {
    // moto never leaves a stack in ROLLBACK_COMPLETE or DELETE_FAILED: these are CloudFormation's
    // answers replayed through the real adapter.
    use aws_sdk_cloudformation as cloudformation;
    use aws_smithy_mocks::{
        MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock,
    };
    use cloudformation::operation::describe_stacks::{DescribeStacksError, DescribeStacksOutput};
    use cloudformation::types::{Stack, StackStatus, Tag};

    let instance = "acme-dev";
    let stack = |kind: &str, status: StackStatus, reason: &str| {
        let name = format!("{instance}-{kind}");
        let reason = reason.to_owned();
        mock!(cloudformation::Client::describe_stacks)
            .match_requests({
                let name = name.clone();
                move |input| input.stack_name() == Some(name.as_str())
            })
            .then_output(move || {
                DescribeStacksOutput::builder()
                    .stacks(
                        Stack::builder()
                            .stack_name(&name)
                            .stack_id(format!(
                                "arn:aws:cloudformation:us-east-1:123456789012:stack/{name}/1"
                            ))
                            .stack_status(status.clone())
                            .stack_status_reason(&reason)
                            .creation_time(aws_smithy_types::DateTime::from_secs(1_748_772_000))
                            .tags(
                                Tag::builder()
                                    .key("stackwright:instance")
                                    .value(instance)
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            })
    };
    let rules: Vec<Rule> = vec![
        stack(
            "network",
            StackStatus::RollbackComplete,
            "The following resource(s) failed to create: [NatGatewayAEip].",
        ),
        stack(
            "platform",
            StackStatus::DeleteFailed,
            "The following resource(s) failed to delete: [LoadBalancer].",
        ),
        mock!(cloudformation::Client::describe_stacks).then_error(|| {
            DescribeStacksError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("ValidationError")
                    .message("Stack with id x does not exist")
                    .build(),
            )
        }),
    ];
    let interceptor = rules.iter().fold(
        MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
        |interceptor, rule| interceptor.with_rule(rule),
    );
    let client = cloudformation::Client::from_conf(
        cloudformation::Config::builder()
            .behavior_version(cloudformation::config::BehaviorVersion::latest())
            .region(cloudformation::config::Region::new("us-east-1"))
            .credentials_provider(cloudformation::config::Credentials::new(
                "AKIDREPLAYED",
                "replayed",
                None,
                None,
                "replayed",
            ))
            .retry_config(cloudformation::config::retry::RetryConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .build(),
    );
    // Preflight reads stacks only: S3 and DynamoDB are never called.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .http_client(create_mock_http_client())
            .build(),
    );
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .http_client(create_mock_http_client())
            .build(),
    );
    let deployer =
        stackwright::aws::CloudFormation::from_clients(client, s3, dynamodb, "us-east-1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let checks = runtime.block_on(preflight::stack_checks(&deployer, instance));
    let found: Vec<(&str, Outcome, &str, Option<&str>)> = checks
        .iter()
        .map(|check| {
            (
                check.id.as_str(),
                check.outcome,
                check.detail.as_str(),
                check.fix.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "stacks.network",
                Outcome::Warn,
                "ROLLBACK_COMPLETE (last change 2025-06-01T10:00:00Z): a failed first create left it empty: The following resource(s) failed to create: [NatGatewayAEip].",
                Some("nothing to do first: install deletes it and creates it again, after asking"),
            ),
            (
                "stacks.platform",
                Outcome::Fail,
                "DELETE_FAILED (last change 2025-06-01T10:00:00Z): The following resource(s) failed to delete: [LoadBalancer].",
                Some(
                    "`stackwright teardown` deletes it and names what blocks the deletion; or delete it yourself: aws cloudformation delete-stack --stack-name acme-dev-platform"
                ),
            ),
        ]
    );
}
