//! `stackwright render`: every stack of every networking variant, snapshot-tested, with the
//! properties that distinguish the modes asserted on the parsed templates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{VARIANTS, config_file, release, run, stackwright};

/// The installer image the test releases name: an example digest in the vendor's registry.
pub const INSTALLER_IMAGE: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com/stackwright/installer@sha256:4f2e8c1a9b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f";

/// Writes release 1.0.0 with an installer image into `directory`, as a vendor would publish a
/// release that brings the updater stack, and returns the manifest's path. (The example
/// releases name no installer image; see the CHANGELOG.)
pub fn release_with_installer(directory: &Path) -> PathBuf {
    let text = std::fs::read_to_string(release("1.0.0")).expect("the example release exists");
    let mut manifest: Value = serde_json::from_str(&text).expect("the example release is JSON");
    manifest["installer"] = serde_json::json!({ "version": "0.1.0", "image": INSTALLER_IMAGE });
    let path = directory.join("release-with-installer.json");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    path
}

/// Renders a variant through the CLI and returns each written file by name.
fn render(config: &str) -> BTreeMap<String, String> {
    render_release(config, &release("1.0.0"))
}

/// Renders a variant with a given release manifest through the CLI.
fn render_release(config: &str, manifest: &Path) -> BTreeMap<String, String> {
    let (directory, path) = config_file(config);
    let out = directory.path().join("out");
    let (code, _, stderr) = run(
        stackwright()
            .arg("--config")
            .arg(&path)
            .arg("render")
            .arg("--out")
            .arg(&out)
            .arg("--manifest-file")
            .arg(manifest)
            .arg("--allow-unsigned"),
        directory.path(),
    );
    assert_eq!(code, 0, "render failed: {stderr}");
    read_directory(&out)
}

fn read_directory(directory: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(entry.path()).unwrap(),
            )
        })
        .collect()
}

fn template(files: &BTreeMap<String, String>, stack: &str) -> Value {
    serde_yaml_ng::from_str(&files[&format!("{stack}.template.yaml")]).unwrap()
}

/// How many resources of a type a template declares.
fn count(template: &Value, resource_type: &str) -> usize {
    template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|resource| resource["Type"] == resource_type)
        .count()
}

fn resources_of<'a>(
    template: &'a Value,
    resource_type: &'a str,
) -> impl Iterator<Item = &'a Value> {
    template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(move |resource| resource["Type"] == resource_type)
}

fn load_balancer_schemes(platform: &Value) -> Vec<String> {
    let mut schemes: Vec<String> =
        resources_of(platform, "AWS::ElasticLoadBalancingV2::LoadBalancer")
            .map(|balancer| {
                balancer["Properties"]["Scheme"]
                    .as_str()
                    .unwrap_or("internet-facing")
                    .to_owned()
            })
            .collect();
    schemes.sort();
    schemes
}

#[test]
fn every_template_of_every_variant_matches_its_snapshot() {
    for (variant, config) in VARIANTS {
        for (name, contents) in render(config) {
            insta::with_settings!({ snapshot_suffix => format!("{variant}-{name}"), prepend_module_to_snapshot => false }, {
                insta::assert_snapshot!("render", contents);
            });
        }
    }
}

#[test]
fn rendering_is_deterministic() {
    for (_, config) in VARIANTS {
        assert_eq!(render(config), render(config));
    }
}

#[test]
fn public_mode_faces_the_internet_and_egresses_through_nat() {
    let files = render(VARIANTS[0].1);
    let network = template(&files, "network");
    assert_eq!(count(&network, "AWS::EC2::InternetGateway"), 1);
    assert_eq!(
        count(&network, "AWS::EC2::NatGateway"),
        3,
        "one NAT gateway per zone"
    );
    assert_eq!(count(&network, "AWS::EC2::Subnet"), 6);
    assert_eq!(
        count(&network, "AWS::EC2::VPCEndpoint"),
        2,
        "only the S3 and DynamoDB gateways"
    );
    assert_eq!(
        load_balancer_schemes(&template(&files, "platform")),
        ["internet-facing"]
    );
    assert!(
        files.contains_key("identity.template.yaml"),
        "identity is configured"
    );
}

#[test]
fn private_mode_keeps_the_load_balancer_internal_with_nat_egress() {
    let files = render(VARIANTS[1].1);
    let network = template(&files, "network");
    assert_eq!(
        count(&network, "AWS::EC2::NatGateway"),
        2,
        "one NAT gateway per zone"
    );
    assert_eq!(
        load_balancer_schemes(&template(&files, "platform")),
        ["internal"]
    );
    assert!(
        !files.contains_key("identity.template.yaml"),
        "identity is not configured"
    );
}

#[test]
fn all_private_mode_has_no_route_to_the_internet() {
    let files = render(VARIANTS[2].1);
    let network = template(&files, "network");
    assert_eq!(count(&network, "AWS::EC2::InternetGateway"), 0);
    assert_eq!(count(&network, "AWS::EC2::NatGateway"), 0);
    assert_eq!(
        count(&network, "AWS::EC2::Subnet"),
        3,
        "private subnets only"
    );
    let routes: Vec<&Value> = resources_of(&network, "AWS::EC2::Route").collect();
    assert!(routes.is_empty(), "no route leaves the VPC: {routes:?}");
    let endpoints: Vec<String> = resources_of(&network, "AWS::EC2::VPCEndpoint")
        .map(|endpoint| endpoint["Properties"]["ServiceName"].to_string())
        .collect();
    assert_eq!(
        endpoints.len(),
        stackwright::network::INTERFACE_ENDPOINT_SERVICES.len() + 2,
        "an interface endpoint per service plus the S3 and DynamoDB gateways: {endpoints:?}"
    );
    for service in [
        "ecr.api",
        "ecr.dkr",
        "sts",
        "logs",
        "secretsmanager",
        "kms",
        "s3",
        "dynamodb",
    ] {
        assert!(
            endpoints
                .iter()
                .any(|name| name.contains(&format!(".{service}"))),
            "no endpoint for {service}"
        );
    }
    assert_eq!(
        load_balancer_schemes(&template(&files, "platform")),
        ["internal"]
    );
}

#[test]
fn public_services_add_an_internet_facing_endpoint_for_oidc_and_webhooks_only() {
    let files = render(VARIANTS[3].1);
    let network = template(&files, "network");
    assert_eq!(
        count(&network, "AWS::EC2::InternetGateway"),
        1,
        "for the public-services endpoint"
    );
    assert_eq!(
        count(&network, "AWS::EC2::NatGateway"),
        0,
        "still no egress to the internet"
    );
    let private_link = resources_of(&network, "AWS::EC2::VPCEndpoint")
        .filter(|endpoint| {
            endpoint["Properties"]["ServiceName"]
                == "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"
        })
        .count();
    assert_eq!(
        private_link, 1,
        "the control plane is reached through PrivateLink"
    );
    let platform = template(&files, "platform");
    assert_eq!(
        load_balancer_schemes(&platform),
        ["internal", "internet-facing"]
    );
    // The listener of the internet-facing load balancer.
    let resources = platform["Resources"].as_object().unwrap();
    let public_balancer = resources
        .iter()
        .find(|(_, resource)| {
            resource["Type"] == "AWS::ElasticLoadBalancingV2::LoadBalancer"
                && resource["Properties"]["Scheme"] == "internet-facing"
        })
        .map(|(name, _)| name.clone())
        .unwrap();
    let public_listener = resources
        .iter()
        .find(|(_, resource)| {
            resource["Type"] == "AWS::ElasticLoadBalancingV2::Listener"
                && resource["Properties"]["LoadBalancerArn"]["Ref"] == public_balancer.as_str()
        })
        .map(|(name, _)| name.clone())
        .unwrap();
    let mut public_paths: Vec<String> =
        resources_of(&platform, "AWS::ElasticLoadBalancingV2::ListenerRule")
            .filter(|rule| {
                let listener = rule["Properties"]["ListenerArn"]["Ref"]
                    .as_str()
                    .unwrap_or_default();
                listener == public_listener
            })
            .flat_map(|rule| {
                rule["Properties"]["Conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|condition| {
                        condition["PathPatternConfig"]["Values"]
                            .as_array()
                            .or(condition["Values"].as_array())
                            .cloned()
                            .unwrap_or_default()
                    })
                    .map(|path| path.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
    public_paths.sort();
    assert_eq!(public_paths, ["/.well-known/*", "/oidc/*", "/webhooks/*"]);
}

#[test]
fn services_run_the_release_images_by_digest_from_the_mirror() {
    let files = render(VARIANTS[0].1);
    let platform = &files["platform.template.yaml"];
    let manifest = stackwright::release::ReleaseManifest::load(&release("1.0.0")).unwrap();
    for component in &manifest.components {
        let pinned = format!("acme-pub/{}@{}", component.name, component.image.digest);
        assert!(
            platform.contains(&pinned),
            "{pinned} is not in the platform template"
        );
    }
    assert!(!platform.contains(":latest"));
}

#[test]
fn parameters_name_the_outputs_that_feed_them() {
    let files = render(VARIANTS[0].1);
    let platform: Value = serde_json::from_str(&files["platform.parameters.json"]).unwrap();
    let sources: Vec<String> = platform["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| {
            format!(
                "{} <- {}.{}",
                source["parameter"], source["stack"], source["output"]
            )
            .replace('"', "")
        })
        .collect();
    assert!(
        sources.contains(&"VpcId <- acme-pub-network.VpcId".to_owned()),
        "{sources:?}"
    );
    assert!(
        sources.contains(&"KmsKeyArn <- acme-pub-bootstrap.KmsKeyArn".to_owned()),
        "{sources:?}"
    );
    assert_eq!(
        platform["depends_on"],
        serde_json::json!(["acme-pub-bootstrap", "acme-pub-network", "acme-pub-data"])
    );
}

#[test]
fn every_template_fits_inline_for_the_example_release() {
    for (variant, config) in VARIANTS {
        for (name, contents) in render(config) {
            if name.ends_with(".template.yaml") {
                assert!(
                    contents.len() <= stackwright::render::INLINE_TEMPLATE_LIMIT,
                    "{variant} {name} is {} bytes",
                    contents.len()
                );
            }
        }
    }
}

#[test]
fn a_missing_release_manifest_is_a_clear_error_and_writes_nothing() {
    let (directory, path) = config_file(VARIANTS[0].1);
    let out = directory.path().join("out");
    let (code, _, stderr) = run(
        stackwright()
            .arg("--config")
            .arg(&path)
            .args(["render", "--out"])
            .arg(&out)
            .args(["--manifest-file", "nowhere.json", "--allow-unsigned"]),
        directory.path(),
    );
    assert_eq!(code, 1);
    insta::assert_snapshot!(stderr, @r"
    error: cannot read the release manifest nowhere.json
      caused by: No such file or directory (os error 2)
    hint: pass --manifest-file with the path of a release manifest, such as manifests/releases/1.0.0.json, or name a signed release with --release VERSION
    ");
    assert!(!out.exists());
}

// --- The updater stack -----------------------------------------------------------------------

/// Every variant rendered with a release that names an installer image.
fn render_with_installer() -> Vec<(&'static str, &'static str, BTreeMap<String, String>)> {
    let directory = tempfile::tempdir().unwrap();
    let manifest = release_with_installer(directory.path());
    VARIANTS
        .iter()
        .map(|(variant, config)| (*variant, *config, render_release(config, &manifest)))
        .collect()
}

#[test]
fn a_release_without_an_installer_image_renders_no_updater_stack() {
    for (variant, config) in VARIANTS {
        let files = render(config);
        assert!(
            !files.keys().any(|name| name.starts_with("updater.")),
            "{variant}: {:?}",
            files.keys()
        );
        assert!(
            !files["bootstrap.template.yaml"].contains("InstallerRepository"),
            "{variant}: no installer repository without an installer image"
        );
    }
}

#[test]
fn the_updater_template_of_every_variant_matches_its_snapshot() {
    for (variant, _, files) in render_with_installer() {
        for name in ["updater.template.yaml", "updater.parameters.json"] {
            insta::with_settings!({ snapshot_suffix => format!("{variant}-{name}"), prepend_module_to_snapshot => false }, {
                insta::assert_snapshot!("render", &files[name]);
            });
        }
    }
}

/// The statements of a role's inline policies and of the policies attached to it.
fn statements<'a>(template: &'a Value, role: &str) -> Vec<&'a Value> {
    let resources = template["Resources"].as_object().unwrap();
    let inline = resources[role]["Properties"]["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|policy| &policy["PolicyDocument"]);
    let attached = resources
        .values()
        .filter(|resource| {
            resource["Type"] == "AWS::IAM::Policy"
                && resource["Properties"]["Roles"]
                    .as_array()
                    .is_some_and(|roles| roles.iter().any(|name| name["Ref"] == role))
        })
        .map(|policy| &policy["Properties"]["PolicyDocument"]);
    inline
        .chain(attached)
        .flat_map(|document| document["Statement"].as_array().unwrap().iter())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(values) => values.iter().flat_map(strings).collect(),
        Value::String(text) => vec![text.clone()],
        Value::Object(map) => map.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// The instance name a configuration's text sets.
fn instance_name(config: &str) -> &str {
    config
        .lines()
        .find_map(|line| line.strip_prefix("name = "))
        .unwrap()
        .trim_matches('"')
}

#[test]
fn the_updater_runs_the_installer_on_the_configured_schedule_in_the_private_subnets() {
    for (variant, config, files) in render_with_installer() {
        let instance = instance_name(config);
        let updater = template(&files, "updater");
        let resources = updater["Resources"].as_object().unwrap();

        let rule = &resources["Schedule"];
        assert_eq!(rule["Type"], "AWS::Events::Rule");
        assert_eq!(
            rule["Properties"]["ScheduleExpression"], "rate(1 hour)",
            "{variant}: the default upgrade.schedule"
        );
        let target = &rule["Properties"]["Targets"][0];
        let ecs = &target["EcsParameters"];
        assert_eq!(ecs["LaunchType"], "FARGATE", "{variant}");
        assert_eq!(ecs["TaskCount"], 1, "{variant}");
        assert_eq!(
            ecs["TaskDefinitionArn"]["Ref"], "TaskDefinition",
            "{variant}"
        );
        let awsvpc = &ecs["NetworkConfiguration"]["AwsVpcConfiguration"];
        assert_eq!(
            awsvpc["AssignPublicIp"], "DISABLED",
            "{variant}: never a public address"
        );
        assert_eq!(awsvpc["Subnets"]["Ref"], "PrivateSubnetIds", "{variant}");
        assert!(
            strings(&target["Arn"])
                .iter()
                .any(|arn| arn.ends_with(":cluster/${ClusterName}")),
            "{variant}: the target is the platform's cluster"
        );

        let task = &resources["TaskDefinition"]["Properties"];
        assert_eq!(
            task["RequiresCompatibilities"],
            serde_json::json!(["FARGATE"])
        );
        assert_eq!(task["NetworkMode"], "awsvpc");
        let container = &task["ContainerDefinitions"][0];
        assert_eq!(
            container["Command"],
            serde_json::json!(["upgrade", "--unattended"])
        );
        let digest = INSTALLER_IMAGE.split_once('@').unwrap().1;
        assert_eq!(
            container["Image"]["Fn::Sub"],
            format!(
                "${{AWS::AccountId}}.dkr.ecr.${{AWS::Region}}.${{AWS::URLSuffix}}/{instance}/installer@{digest}"
            ),
            "{variant}: the installer's mirror in the customer's ECR, by digest"
        );
        // The configuration handed over in the environment is the one rendered from.
        let text = container["Environment"]
            .as_array()
            .unwrap()
            .iter()
            .find(|variable| variable["Name"] == "STACKWRIGHT_CONFIG_TEXT")
            .and_then(|variable| variable["Value"].as_str())
            .unwrap_or_else(|| panic!("{variant}: no STACKWRIGHT_CONFIG_TEXT"));
        let original = stackwright::config::ConfigFile::parse(config, Path::new("a")).unwrap();
        let handed_over = stackwright::config::ConfigFile::parse(text, Path::new("b")).unwrap();
        assert_eq!(handed_over.to_toml(), original.to_toml(), "{variant}");

        let log_group = &resources["LogGroup"];
        assert_eq!(log_group["Properties"]["KmsKeyId"]["Ref"], "KmsKeyArn");
        assert_eq!(log_group["Properties"]["RetentionInDays"], 365);

        // The bootstrap stack holds the installer's mirror repository.
        let bootstrap = template(&files, "bootstrap");
        assert_eq!(
            bootstrap["Resources"]["InstallerRepository"]["Properties"]["RepositoryName"],
            format!("{instance}/installer")
        );

        let parameters: Value = serde_json::from_str(&files["updater.parameters.json"]).unwrap();
        assert_eq!(
            parameters["depends_on"],
            serde_json::json!([
                format!("{instance}-bootstrap"),
                format!("{instance}-network"),
                format!("{instance}-platform")
            ])
        );
    }
}

#[test]
fn the_updater_roles_name_the_instance_resources_and_wildcards_only_where_aws_requires() {
    // The only actions AWS authorizes on "*" alone.
    const ONLY_ON_ANY_RESOURCE: &[&str] = &[
        "ecr:GetAuthorizationToken",
        "ecs:RegisterTaskDefinition",
        "ecs:DeregisterTaskDefinition",
        "ecs:DescribeTaskDefinition",
        "ec2:DescribeRegions",
        "ec2:DescribeVpcs",
        "ec2:DescribeSubnets",
        "ec2:DescribeInternetGateways",
        "ec2:DescribeNatGateways",
        "ec2:DescribeAddresses",
        "ec2:DescribeAccountAttributes",
        "ec2:DescribeVpcEndpoints",
        "acm:ListCertificates",
        "elasticloadbalancing:DescribeTargetHealth",
    ];
    for (variant, config, files) in render_with_installer() {
        let instance = instance_name(config);
        let updater = template(&files, "updater");
        for role in ["TaskRole", "ExecutionRole", "ScheduleRole"] {
            for statement in statements(&updater, role) {
                assert_eq!(statement["Effect"], "Allow");
                let actions = strings(&statement["Action"]);
                let resources = strings(&statement["Resource"]);
                for action in &actions {
                    assert!(
                        !action.contains('*'),
                        "{variant} {role}: wildcard action {action}"
                    );
                }
                if resources.iter().any(|resource| resource == "*") {
                    for action in &actions {
                        assert!(
                            ONLY_ON_ANY_RESOURCE.contains(&action.as_str()),
                            "{variant} {role}: {action} on \"*\""
                        );
                    }
                }
                if actions
                    .iter()
                    .any(|action| action.starts_with("cloudformation:"))
                {
                    let mut stacks: Vec<String> = resources
                        .iter()
                        .map(|arn| {
                            arn.rsplit_once(":stack/")
                                .map(|(_, rest)| rest.trim_end_matches("/*").to_owned())
                                .unwrap_or_else(|| panic!("{variant}: {arn} is not a stack"))
                        })
                        .collect();
                    stacks.sort();
                    let mut expected: Vec<String> = [
                        "bootstrap",
                        "data",
                        "identity",
                        "network",
                        "platform",
                        "updater",
                    ]
                    .iter()
                    .map(|kind| format!("{instance}-{kind}"))
                    .collect();
                    expected.sort();
                    assert_eq!(stacks, expected, "{variant}: the instance's stacks only");
                }
                if actions.iter().any(|action| action.starts_with("dynamodb:")) {
                    assert_eq!(
                        resources,
                        [format!(
                            "arn:${{AWS::Partition}}:dynamodb:${{AWS::Region}}:${{AWS::AccountId}}:table/stackwright-{instance}"
                        )],
                        "{variant}: the state table only"
                    );
                }
                if actions
                    .iter()
                    .any(|action| action.starts_with("secretsmanager:"))
                {
                    assert_eq!(
                        resources,
                        [format!(
                            "arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:stackwright/{instance}/*"
                        )]
                    );
                }
                if actions.iter().any(|action| action.starts_with("s3:")) {
                    assert_eq!(
                        resources,
                        ["arn:${AWS::Partition}:s3:::${ArtifactBucketName}/*"]
                    );
                }
                if actions.iter().any(|action| action == "ecr:PutImage") {
                    assert_eq!(
                        resources,
                        [format!(
                            "arn:${{AWS::Partition}}:ecr:${{AWS::Region}}:${{AWS::AccountId}}:repository/{instance}/*"
                        )]
                    );
                }
            }
        }
        // EventBridge may run the job's task definition on the platform's cluster, and pass
        // exactly the job's two roles.
        let schedule = statements(&updater, "ScheduleRole");
        let run_task = schedule
            .iter()
            .find(|statement| statement["Action"] == "ecs:RunTask")
            .expect("a RunTask statement");
        assert!(
            strings(&run_task["Resource"])[0]
                .ends_with(&format!(":task-definition/{instance}-updater:*")),
            "{variant}"
        );
        assert!(
            strings(&run_task["Condition"]["ArnEquals"]["ecs:cluster"])[0]
                .ends_with(":cluster/${ClusterName}"),
            "{variant}"
        );
        let pass_role = schedule
            .iter()
            .find(|statement| statement["Action"] == "iam:PassRole")
            .expect("a PassRole statement");
        assert_eq!(
            pass_role["Resource"],
            serde_json::json!([
                { "Fn::GetAtt": ["ExecutionRole", "Arn"] },
                { "Fn::GetAtt": ["TaskRole", "Arn"] }
            ]),
            "{variant}"
        );
        assert_eq!(schedule.len(), 2, "{variant}: nothing else");
    }
}
