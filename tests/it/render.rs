//! `stackwright render`: every stack of every networking variant, snapshot-tested, with the
//! properties that distinguish the modes asserted on the parsed templates.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::{VARIANTS, config_file, release, run, stackwright};

/// Renders a variant through the CLI and returns each written file by name.
fn render(config: &str) -> BTreeMap<String, String> {
    let (directory, path) = config_file(config);
    let out = directory.path().join("out");
    let (code, _, stderr) = run(
        stackwright()
            .arg("--config")
            .arg(&path)
            .arg("render")
            .arg("--out")
            .arg(&out)
            .arg("--release")
            .arg(release("1.0.0")),
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
            .args(["--release", "nowhere.json"]),
        directory.path(),
    );
    assert_eq!(code, 1);
    insta::assert_snapshot!(stderr, @r"
    error: cannot read the release manifest nowhere.json
      caused by: No such file or directory (os error 2)
    hint: pass --release with the path of a release manifest, such as manifests/releases/1.0.0.json
    ");
    assert!(!out.exists());
}
