//! `plan`, `install`, `status` and `teardown` through the real binary against the local AWS
//! emulator (`scripts/dev-env.sh up`): what the cloud holds afterwards, read back through the
//! services' own APIs, and which requests the installer sent, read from moto's recorder.
//!
//! Every test owns an instance with a unique name, so the tests run in parallel against one
//! moto, run after run, without resetting it.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::moto::{
    Cloud, Instance, Outcome, Run, cloudformation_writes, operations, record,
};
use crate::common::release;

// --- Configurations -------------------------------------------------------------------------
// `{name}`, `{domain}` and `{certificate_arn}` are filled in per test. The certificate comes
// from moto's ACM: moto cannot create the one the platform template requests without it.

const PUBLIC: &str = r#"schema_version = 1
[instance]
name = "{name}"
domain = "{domain}"
region = "us-east-1"
certificate_arn = "{certificate_arn}"
[network]
mode = "public"
vpc_cidr = "10.71.0.0/16"
availability_zones = 2
[control_plane]
url = "https://control.example.com"
"#;

const PRIVATE: &str = r#"schema_version = 1
[instance]
name = "{name}"
domain = "{domain}"
region = "us-east-1"
certificate_arn = "{certificate_arn}"
[network]
mode = "private"
vpc_cidr = "10.72.0.0/20"
availability_zones = 2
ingress_cidrs = ["10.0.0.0/8"]
[control_plane]
url = "https://control.example.com"
"#;

const ALL_PRIVATE: &str = r#"schema_version = 1
[instance]
name = "{name}"
domain = "{domain}"
region = "us-east-1"
certificate_arn = "{certificate_arn}"
[network]
mode = "all-private"
vpc_cidr = "10.73.0.0/16"
availability_zones = 3
[control_plane]
url = "https://control.example.com"
"#;

const CONTROL_PLANE_SERVICE: &str = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0";

const ALL_PRIVATE_PUBLIC_SERVICES: &str = r#"schema_version = 1
[instance]
name = "{name}"
domain = "{domain}"
region = "us-east-1"
certificate_arn = "{certificate_arn}"
[network]
mode = "all-private"
vpc_cidr = "10.74.0.0/22"
availability_zones = 3
public_services = true
control_plane_endpoint_service = "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0"
[control_plane]
url = "https://control.example.com"
"#;

/// What a networking mode must have created, written out by hand rather than computed by the
/// code under test.
struct Expected {
    vpc_cidr: &'static str,
    private_subnets: &'static [&'static str],
    public_subnets: &'static [&'static str],
    nat_gateways: usize,
    internet_gateway: bool,
    /// Interface endpoints for the AWS services (all-private).
    aws_interface_endpoints: bool,
    control_plane_endpoint: Option<&'static str>,
    public_services: bool,
}

const PUBLIC_EXPECTED: Expected = Expected {
    vpc_cidr: "10.71.0.0/16",
    private_subnets: &["10.71.0.0/18", "10.71.64.0/18"],
    public_subnets: &["10.71.192.0/20", "10.71.208.0/20"],
    nat_gateways: 2,
    internet_gateway: true,
    aws_interface_endpoints: false,
    control_plane_endpoint: None,
    public_services: false,
};

const PRIVATE_EXPECTED: Expected = Expected {
    vpc_cidr: "10.72.0.0/20",
    private_subnets: &["10.72.0.0/22", "10.72.4.0/22"],
    public_subnets: &["10.72.12.0/24", "10.72.13.0/24"],
    nat_gateways: 2,
    internet_gateway: true,
    aws_interface_endpoints: false,
    control_plane_endpoint: None,
    public_services: false,
};

const ALL_PRIVATE_EXPECTED: Expected = Expected {
    vpc_cidr: "10.73.0.0/16",
    private_subnets: &["10.73.0.0/18", "10.73.64.0/18", "10.73.128.0/18"],
    public_subnets: &[],
    nat_gateways: 0,
    internet_gateway: false,
    aws_interface_endpoints: true,
    control_plane_endpoint: None,
    public_services: false,
};

const ALL_PRIVATE_PUBLIC_SERVICES_EXPECTED: Expected = Expected {
    vpc_cidr: "10.74.0.0/22",
    private_subnets: &["10.74.0.0/24", "10.74.1.0/24", "10.74.2.0/24"],
    public_subnets: &["10.74.3.0/26", "10.74.3.64/26", "10.74.3.128/26"],
    nat_gateways: 0,
    internet_gateway: true,
    aws_interface_endpoints: true,
    control_plane_endpoint: Some(CONTROL_PLANE_SERVICE),
    public_services: true,
};

/// The AWS services an all-private VPC reaches through interface endpoints.
const INTERFACE_SERVICES: &[&str] = &[
    "autoscaling",
    "cloudformation",
    "ec2",
    "ec2messages",
    "ecr.api",
    "ecr.dkr",
    "ecs",
    "ecs-agent",
    "ecs-telemetry",
    "elasticloadbalancing",
    "kms",
    "logs",
    "monitoring",
    "secretsmanager",
    "ssm",
    "ssmmessages",
    "sts",
];

// --- Helpers --------------------------------------------------------------------------------

/// The release to name: a version, verified in the example repository.
fn release_arg(version: &str) -> String {
    version.to_owned()
}

/// A component of a release manifest, as the platform stack must run it.
struct Component {
    name: String,
    digest: String,
    desired_count: i32,
}

impl Component {
    /// The prefix of the component's logical ids: `workspace-manager` -> `WorkspaceManager`.
    fn logical_id(&self) -> String {
        self.name
            .split('-')
            .map(|word| {
                let mut characters = word.chars();
                characters
                    .next()
                    .map(|first| first.to_ascii_uppercase().to_string() + characters.as_str())
                    .unwrap_or_default()
            })
            .collect()
    }
}

fn components(version: &str) -> Vec<Component> {
    let text = std::fs::read_to_string(release(version)).expect("the manifest exists");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("the manifest is JSON");
    manifest["components"]
        .as_array()
        .expect("the manifest lists components")
        .iter()
        .map(|component| Component {
            name: component["name"].as_str().expect("a name").to_owned(),
            digest: component["image"]
                .as_str()
                .and_then(|image| image.split_once('@'))
                .map(|(_, digest)| digest.to_owned())
                .expect("an image pinned by digest"),
            desired_count: component["desired_count"]
                .as_i64()
                .expect("a desired count") as i32,
        })
        .collect()
}

/// Each stack's status, creation and last update time, to tell which stacks an operation
/// touched. (moto leaves LastUpdatedTime empty even after an update, but sets the status.)
type StackMarks = BTreeMap<String, (String, String, Option<String>)>;

fn stack_marks(cloud: &Cloud, instance: &Instance) -> StackMarks {
    instance
        .stacks()
        .into_iter()
        .map(|name| {
            let stack = cloud
                .stack(&name)
                .unwrap_or_else(|| panic!("{name} exists"));
            let marks = (
                stack
                    .stack_status()
                    .map(|status| status.as_str().to_owned())
                    .unwrap_or_default(),
                format!("{:?}", stack.creation_time()),
                stack.last_updated_time().map(|time| format!("{time:?}")),
            );
            (name, marks)
        })
        .collect()
}

/// No stack of the instance exists: neither DescribeStacks nor ListStacks knows one.
fn assert_nothing_created(cloud: &Cloud, instance: &Instance) {
    let mut names = instance.stacks();
    names.push(instance.stack("identity"));
    for name in &names {
        assert!(cloud.stack(name).is_none(), "{name} was created");
    }
    assert_eq!(
        cloud.listed_stacks(&names),
        Vec::<String>::new(),
        "ListStacks knows stacks of {}",
        instance.name
    );
}

/// Everything a successful install of `mode` must have left in the cloud, looked up through
/// the services' own APIs, and the URL and DNS records it printed.
fn assert_installed(instance: &Instance, expected: &Expected, install: &Outcome) {
    let cloud = Cloud::connect();
    let region = crate::common::moto::region();

    // Every stack, complete and tagged as the instance's; no identity stack without [identity].
    for name in instance.stacks() {
        let stack = cloud
            .stack(&name)
            .unwrap_or_else(|| panic!("{name} exists"));
        let status = stack
            .stack_status()
            .map(|status| status.as_str().to_owned());
        assert!(
            matches!(
                status.as_deref(),
                Some("CREATE_COMPLETE" | "UPDATE_COMPLETE")
            ),
            "{name} is {status:?}"
        );
        let owner = stack
            .tags()
            .iter()
            .find(|tag| tag.key() == Some("stackwright:instance"))
            .and_then(|tag| tag.value());
        assert_eq!(owner, Some(instance.name.as_str()), "{name}'s instance tag");
    }
    assert!(cloud.stack(&instance.stack("identity")).is_none());

    // The VPC and its subnets.
    let network_stack = instance.stack("network");
    let network = cloud.outputs(&network_stack);
    let vpc_id = network["VpcId"].clone();
    assert_eq!(vpc_id, cloud.resource(&network_stack, "Vpc"));
    let vpcs = cloud
        .block_on(cloud.ec2.describe_vpcs().vpc_ids(&vpc_id).send())
        .expect("DescribeVpcs");
    let vpc = vpcs.vpcs().first().expect("the VPC exists");
    assert_eq!(vpc.cidr_block(), Some(expected.vpc_cidr));

    let vpc_filter = |name: &str| {
        aws_sdk_ec2::types::Filter::builder()
            .name(name)
            .values(&vpc_id)
            .build()
    };
    let subnets = cloud
        .block_on(
            cloud
                .ec2
                .describe_subnets()
                .filters(vpc_filter("vpc-id"))
                .send(),
        )
        .expect("DescribeSubnets");
    let subnet_cidr: BTreeMap<String, String> = subnets
        .subnets()
        .iter()
        .map(|subnet| {
            (
                subnet.subnet_id().unwrap_or_default().to_owned(),
                subnet.cidr_block().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let all_cidrs: BTreeSet<&str> = subnet_cidr.values().map(String::as_str).collect();
    let expected_cidrs: BTreeSet<&str> = expected
        .private_subnets
        .iter()
        .chain(expected.public_subnets)
        .copied()
        .collect();
    assert_eq!(all_cidrs, expected_cidrs, "the VPC's subnets");
    let cidrs_of = |ids: Option<&String>| -> Vec<String> {
        ids.map(|ids| {
            ids.split(',')
                .map(|id| {
                    subnet_cidr
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| id.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
    };
    assert_eq!(
        cidrs_of(network.get("PrivateSubnetIds")),
        expected.private_subnets,
        "the private subnets the network stack reports"
    );
    assert_eq!(
        cidrs_of(network.get("PublicSubnetIds")),
        expected.public_subnets,
        "the public subnets the network stack reports"
    );

    // Endpoints: gateways for S3 and DynamoDB always; interfaces in all-private.
    let endpoints = cloud
        .block_on(
            cloud
                .ec2
                .describe_vpc_endpoints()
                .filters(vpc_filter("vpc-id"))
                .send(),
        )
        .expect("DescribeVpcEndpoints");
    let of_type = |kind: &str| -> BTreeSet<String> {
        endpoints
            .vpc_endpoints()
            .iter()
            .filter(|endpoint| endpoint.vpc_endpoint_type().map(|kind| kind.as_str()) == Some(kind))
            .map(|endpoint| endpoint.service_name().unwrap_or_default().to_owned())
            .collect()
    };
    let gateway: BTreeSet<String> = ["s3", "dynamodb"]
        .iter()
        .map(|service| format!("com.amazonaws.{region}.{service}"))
        .collect();
    assert_eq!(of_type("Gateway"), gateway, "gateway endpoints");
    let mut interface: BTreeSet<String> = BTreeSet::new();
    if expected.aws_interface_endpoints {
        interface.extend(
            INTERFACE_SERVICES
                .iter()
                .map(|service| format!("com.amazonaws.{region}.{service}")),
        );
    }
    interface.extend(expected.control_plane_endpoint.map(str::to_owned));
    let interfaces = of_type("Interface");
    assert_eq!(interfaces, interface, "interface endpoints");
    if expected.aws_interface_endpoints {
        for service in ["ecr.api", "ecr.dkr", "sts", "logs"] {
            assert!(
                interfaces.contains(&format!("com.amazonaws.{region}.{service}")),
                "no interface endpoint for {service}"
            );
        }
    }

    // Egress: NAT gateways only in public and private; an internet gateway where there are
    // public subnets.
    let nat_gateways = cloud
        .block_on(
            cloud
                .ec2
                .describe_nat_gateways()
                .filter(vpc_filter("vpc-id"))
                .send(),
        )
        .expect("DescribeNatGateways");
    assert_eq!(
        nat_gateways.nat_gateways().len(),
        expected.nat_gateways,
        "NAT gateways"
    );
    let internet_gateways = cloud
        .block_on(
            cloud
                .ec2
                .describe_internet_gateways()
                .filters(vpc_filter("attachment.vpc-id"))
                .send(),
        )
        .expect("DescribeInternetGateways");
    assert_eq!(
        !internet_gateways.internet_gateways().is_empty(),
        expected.internet_gateway,
        "an internet gateway"
    );

    // The state table (the installer's own, outside every stack: the lock in it must exist
    // before the first stack is created), the data bucket and table.
    let bootstrap = cloud.outputs(&instance.stack("bootstrap"));
    assert!(
        !bootstrap.contains_key("StateTableName"),
        "the bootstrap stack no longer owns the state table"
    );
    let state_table = format!("stackwright-{}", instance.name);
    let data = cloud.outputs(&instance.stack("data"));
    for table in [&state_table, &data["DataTableName"]] {
        let described = cloud
            .block_on(cloud.dynamodb.describe_table().table_name(table).send())
            .unwrap_or_else(|error| panic!("DescribeTable {table}: {error:?}"));
        assert_eq!(
            described
                .table()
                .and_then(|table| table.table_status())
                .map(|status| status.as_str()),
            Some("ACTIVE"),
            "{table}"
        );
    }
    cloud
        .block_on(
            cloud
                .s3
                .head_bucket()
                .bucket(&data["DataBucketName"])
                .send(),
        )
        .expect("the data bucket exists");

    // One ECR repository per component, named <instance>/<component>.
    let components = components("1.0.0");
    let wanted: BTreeSet<String> = components
        .iter()
        .map(|component| format!("{}/{}", instance.name, component.name))
        .collect();
    let repositories = cloud
        .block_on(
            cloud
                .ecr
                .describe_repositories()
                .set_repository_names(Some(wanted.iter().cloned().collect()))
                .send(),
        )
        .expect("DescribeRepositories");
    let found: BTreeSet<String> = repositories
        .repositories()
        .iter()
        .filter_map(|repository| repository.repository_name().map(str::to_owned))
        .collect();
    assert_eq!(found, wanted, "ECR repositories");

    // The ECS cluster, and one service per component running its image by digest.
    let platform = cloud.outputs(&instance.stack("platform"));
    assert_eq!(platform["ClusterName"], instance.name);
    let clusters = cloud
        .block_on(
            cloud
                .ecs
                .describe_clusters()
                .clusters(&instance.name)
                .send(),
        )
        .expect("DescribeClusters");
    assert_eq!(
        clusters
            .clusters()
            .iter()
            .map(|cluster| cluster.status().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["ACTIVE"],
        "the cluster"
    );
    let running = services(&cloud, &instance.name);
    let mut expected_services = BTreeMap::new();
    for component in &components {
        expected_services.insert(
            component.name.clone(),
            (
                format!(
                    "123456789012.dkr.ecr.{region}.amazonaws.com/{}/{}@{}",
                    instance.name, component.name, component.digest
                ),
                component.desired_count,
            ),
        );
    }
    assert_eq!(running, expected_services, "the cluster's services");

    // What the user is told: the URL and the DNS records to create.
    let load_balancer = &platform["LoadBalancerDnsName"];
    let stdout = &install.stdout;
    let url = format!("https://{}", instance.domain);
    assert!(
        stdout
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == ["URL", url.as_str()]),
        "the URL {url} is printed:\n{stdout}"
    );
    for name in [instance.domain.clone(), format!("*.{}", instance.domain)] {
        assert!(
            stdout.lines().any(|line| {
                let columns: Vec<&str> = line.split_whitespace().collect();
                columns == [name.as_str(), "CNAME", load_balancer.as_str()]
            }),
            "the DNS record {name} -> {load_balancer} is printed:\n{stdout}"
        );
    }
    let public = platform.get("PublicServicesDnsName");
    assert_eq!(public.is_some(), expected.public_services);
    if let Some(public) = public {
        assert!(
            stdout.lines().any(|line| {
                line.starts_with(&format!("{} (public zone)", instance.domain))
                    && line.trim_end().ends_with(&format!("CNAME  {public}"))
            }),
            "the public-zone record -> {public} is printed:\n{stdout}"
        );
    }
}

/// The cluster's services by component: the image each runs and its desired count.
fn services(cloud: &Cloud, cluster: &str) -> BTreeMap<String, (String, i32)> {
    let listed = cloud
        .block_on(cloud.ecs.list_services().cluster(cluster).send())
        .expect("ListServices");
    let arns = listed.service_arns().to_vec();
    assert!(!arns.is_empty(), "the cluster has no service");
    let described = cloud
        .block_on(
            cloud
                .ecs
                .describe_services()
                .cluster(cluster)
                .set_services(Some(arns))
                .send(),
        )
        .expect("DescribeServices");
    described
        .services()
        .iter()
        .map(|service| {
            let task_definition = service.task_definition().expect("a task definition");
            let definition = cloud
                .block_on(
                    cloud
                        .ecs
                        .describe_task_definition()
                        .task_definition(task_definition)
                        .send(),
                )
                .expect("DescribeTaskDefinition");
            let definition = definition.task_definition().expect("the definition");
            let container = definition
                .container_definitions()
                .first()
                .expect("a container");
            (
                container.name().unwrap_or_default().to_owned(),
                (
                    container.image().unwrap_or_default().to_owned(),
                    service.desired_count(),
                ),
            )
        })
        .collect()
}

fn install_and_check(prefix: &str, template: &str, expected: &Expected, snapshot: &str) {
    let instance = Instance::new(prefix, template);
    let install = instance.install("1.0.0");
    assert_installed(&instance, expected, &install);
    instance
        .settings()
        .bind(|| insta::assert_snapshot!(snapshot, install.stdout));
}

// --- 1. Each networking mode installs completely ---------------------------------------------

#[test]
fn an_install_copies_the_release_images_into_the_instance_repositories() {
    let instance = Instance::new("images", PUBLIC);
    let install = instance.install("1.0.0");
    assert!(
        install.stderr.contains("Images: "),
        "{}",
        install.transcript()
    );
    let release = stackwright::release::ReleaseManifest::load(&crate::common::release("1.0.0"))
        .expect("the example release");
    let customer = crate::mirror::customer();
    for component in &release.components {
        let digest = component.image.digest.as_str();
        let path = format!("{}/{}/manifests/{digest}", instance.name, component.name);
        let (status, found, _) = crate::mirror::fetch(&customer, "HEAD", &path);
        assert_eq!(status, 200, "{path} is not in the instance's registry");
        assert_eq!(found.as_deref(), Some(digest), "{path}");
    }
}

#[test]
fn public_mode_installs_every_stack_and_resource() {
    install_and_check("pub", PUBLIC, &PUBLIC_EXPECTED, "install_public");
}

#[test]
fn private_mode_installs_every_stack_and_resource() {
    install_and_check("priv", PRIVATE, &PRIVATE_EXPECTED, "install_private");
}

#[test]
fn all_private_mode_installs_every_stack_and_resource() {
    install_and_check(
        "allpriv",
        ALL_PRIVATE,
        &ALL_PRIVATE_EXPECTED,
        "install_all_private",
    );
}

#[test]
fn all_private_mode_with_public_services_installs_every_stack_and_resource() {
    install_and_check(
        "pubsvc",
        ALL_PRIVATE_PUBLIC_SERVICES,
        &ALL_PRIVATE_PUBLIC_SERVICES_EXPECTED,
        "install_all_private_public_services",
    );
}

// --- 2. A change is planned and applied to the stack it concerns only -----------------------

/// Runs `install` recorded, and returns the CloudFormation writes it made, by stack.
fn recorded_install(instance: &Instance, version: &str, tag: &str) -> (Outcome, Vec<String>) {
    let release = release_arg(version);
    let (outcome, requests) = record(tag, || {
        instance
            .stackwright(&["install", "--release", &release])
            .tag(tag)
            .run()
    });
    let outcome = outcome.succeeded();
    // The recording must hold the run's reads, or an empty list of writes proves nothing.
    let operations = operations(&requests);
    for (service, operation) in [
        ("sts", "GetCallerIdentity"),
        ("cloudformation", "DescribeStacks"),
        ("cloudformation", "GetTemplate"),
    ] {
        assert!(
            operations.contains(&(service.to_owned(), operation.to_owned())),
            "the recording of the run lacks {service}:{operation}: {operations:?}"
        );
    }
    (outcome, cloudformation_writes(&requests))
}

fn assert_only_platform_changed(instance: &Instance, before: &StackMarks, after: &StackMarks) {
    let platform = instance.stack("platform");
    for (name, marks) in before {
        if *name == platform {
            assert_eq!(after[name].0, "UPDATE_COMPLETE", "{name} was updated");
            assert_eq!(after[name].1, marks.1, "{name} was updated, not replaced");
        } else {
            assert_eq!(&after[name], marks, "{name} was left alone");
        }
    }
}

#[test]
fn a_new_ingress_range_is_planned_and_applied_to_the_platform_stack_only() {
    let instance = Instance::new("ingress", PRIVATE);
    instance.install("1.0.0");
    let cloud = Cloud::connect();
    let before = stack_marks(&cloud, &instance);

    instance.configure(&PRIVATE.replace(
        r#"ingress_cidrs = ["10.0.0.0/8"]"#,
        r#"ingress_cidrs = ["10.0.0.0/8", "192.168.10.0/24"]"#,
    ));
    let release = release_arg("1.0.0");
    let plan = instance
        .stackwright(&["plan", "--release", &release])
        .without_yes()
        .run()
        .exited(2);
    assert!(
        plan.stdout
            .contains(&format!("{}: update", instance.stack("platform"))),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("~ LoadBalancerSecurityGroup"));
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("plan_ingress_change", plan.transcript()));

    let tag = format!("{}-apply", instance.name);
    let (_, writes) = recorded_install(&instance, "1.0.0", &tag);
    let platform = instance.stack("platform");
    assert_eq!(
        writes,
        [
            format!("CreateChangeSet {platform}"),
            format!("ExecuteChangeSet {platform}")
        ],
        "CloudFormation writes of the install"
    );
    assert_only_platform_changed(&instance, &before, &stack_marks(&cloud, &instance));

    // The load balancer's security group now admits the new range, and still the old one.
    let group = cloud.resource(&platform, "LoadBalancerSecurityGroup");
    let groups = cloud
        .block_on(
            cloud
                .ec2
                .describe_security_groups()
                .group_ids(&group)
                .send(),
        )
        .expect("DescribeSecurityGroups");
    let https_ranges: BTreeSet<String> = groups
        .security_groups()
        .iter()
        .flat_map(|group| group.ip_permissions())
        .filter(|permission| permission.from_port() == Some(443))
        .flat_map(|permission| permission.ip_ranges())
        .filter_map(|range| range.cidr_ip().map(str::to_owned))
        .collect();
    assert_eq!(
        https_ranges,
        BTreeSet::from(["10.0.0.0/8".to_owned(), "192.168.10.0/24".to_owned()]),
        "HTTPS ingress of the load balancer"
    );
}

#[test]
fn a_new_release_is_planned_and_applied_as_new_task_definitions_only() {
    let instance = Instance::new("upgrade", PUBLIC);
    instance.install("1.0.0");
    let cloud = Cloud::connect();
    let before = stack_marks(&cloud, &instance);
    let platform = instance.stack("platform");
    let old_definitions: Vec<String> = components("1.0.0")
        .iter()
        .map(|component| {
            cloud.resource(
                &platform,
                &format!("{}TaskDefinition", component.logical_id()),
            )
        })
        .collect();

    let release = release_arg("1.1.0");
    let plan = instance
        .stackwright(&["plan", "--release", &release])
        .without_yes()
        .run()
        .exited(2);
    for component in components("1.1.0") {
        assert!(
            plan.stdout
                .contains(&format!("~ {}TaskDefinition", component.logical_id())),
            "{}",
            plan.stdout
        );
    }
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("plan_release_change", plan.transcript()));

    let tag = format!("{}-apply", instance.name);
    let (install, writes) = recorded_install(&instance, "1.1.0", &tag);
    assert_eq!(
        writes,
        [
            format!("CreateChangeSet {platform}"),
            format!("ExecuteChangeSet {platform}")
        ],
        "CloudFormation writes of the install"
    );
    assert!(
        install.stderr.contains("(release 1.1.0, public mode)"),
        "{}",
        install.stderr
    );
    assert_only_platform_changed(&instance, &before, &stack_marks(&cloud, &instance));

    // What the platform stack deployed: each task definition pins the new release's digest,
    // none the old one. (moto 5.2.5 registers a revision made by a stack update without its
    // container definitions: its update path skips the key conversion its create path does.
    // So the images are read from the deployed template, not from ECS.)
    let template = cloud
        .block_on(
            cloud
                .cloudformation
                .get_template()
                .stack_name(&platform)
                .send(),
        )
        .expect("GetTemplate");
    let body = template.template_body().unwrap_or_default();
    for (old, new) in components("1.0.0").iter().zip(components("1.1.0")) {
        assert_eq!(old.name, new.name);
        let image = format!("{}/{}@{}", instance.name, new.name, new.digest);
        assert_eq!(body.matches(&image).count(), 1, "{image} in the template");
        assert!(
            !body.contains(&old.digest),
            "{} is still deployed",
            old.digest
        );
    }

    // Each task definition is a new revision in ECS, the only active one of its family. (The
    // services are not checked: moto does not update a resource whose Ref to a replaced
    // resource changed, so its services keep running revision 1; AWS updates them.)
    for (component, old) in components("1.1.0").iter().zip(&old_definitions) {
        let arn = cloud.resource(
            &platform,
            &format!("{}TaskDefinition", component.logical_id()),
        );
        assert_ne!(&arn, old, "a new revision of {}", component.name);
        let family = format!("{}-{}", instance.name, component.name);
        let active = cloud
            .block_on(
                cloud
                    .ecs
                    .list_task_definitions()
                    .family_prefix(&family)
                    .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
                    .send(),
            )
            .expect("ListTaskDefinitions");
        assert_eq!(
            active.task_definition_arns(),
            [arn],
            "the active revisions of {family}"
        );
    }
}

// --- 3. Nothing changed: nothing written ----------------------------------------------------

#[test]
fn an_unchanged_install_makes_no_cloudformation_write_and_plan_exits_0() {
    let instance = Instance::new("again", ALL_PRIVATE);
    instance.install("1.0.0");

    let tag = format!("{}-again", instance.name);
    let (again, writes) = recorded_install(&instance, "1.0.0", &tag);
    // The installer compares the deployed parameters with its own: an emulator that describes a
    // List<...> parameter otherwise than AWS ("a,b") makes it plan the platform stack again.
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "CloudFormation writes of an unchanged install"
    );
    assert_eq!(
        again.stdout,
        format!(
            "Nothing to change: all 4 stacks of {} are up to date.\n",
            instance.name
        )
    );
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("install_unchanged", again.transcript()));

    let tag = format!("{}-plan", instance.name);
    let release = release_arg("1.0.0");
    let (plan, requests) = record(&tag, || {
        instance
            .stackwright(&["plan", "--release", &release])
            .without_yes()
            .tag(&tag)
            .run()
    });
    let plan = plan.exited(0);
    assert!(
        operations(&requests).contains(&("cloudformation".to_owned(), "GetTemplate".to_owned())),
        "the recording of the plan lacks its reads"
    );
    assert_eq!(
        cloudformation_writes(&requests),
        Vec::<String>::new(),
        "CloudFormation writes of the plan"
    );
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("plan_unchanged", plan.transcript()));
}

// --- 4. Teardown keeps the data until asked ---------------------------------------------------

#[test]
fn teardown_keeps_the_data_stack_and_delete_data_removes_it() {
    let instance = Instance::new("teardown", PUBLIC);
    instance.install("1.0.0");
    let cloud = Cloud::connect();
    let data = cloud.outputs(&instance.stack("data"));
    let bucket = data["DataBucketName"].clone();
    let table = data["DataTableName"].clone();
    cloud
        .block_on(
            cloud
                .s3
                .put_object()
                .bucket(&bucket)
                .key("workspaces/keep.json")
                .body(b"{}".to_vec().into())
                .send(),
        )
        .expect("PutObject");
    let key = |value: &str| aws_sdk_dynamodb::types::AttributeValue::S(value.to_owned());
    cloud
        .block_on(
            cloud
                .dynamodb
                .put_item()
                .table_name(&table)
                .item("pk", key("workspace#1"))
                .item("sk", key("meta"))
                .send(),
        )
        .expect("PutItem");

    let teardown = instance.stackwright(&["teardown"]).run().succeeded();
    let [bootstrap, network, data_stack, platform] =
        <[String; 4]>::try_from(instance.stacks()).expect("four stacks");
    for gone in [&bootstrap, &network, &platform] {
        assert!(cloud.stack(gone).is_none(), "{gone} still exists");
    }
    assert_eq!(
        cloud.listed_stacks(&instance.stacks()),
        std::slice::from_ref(&data_stack),
        "ListStacks after teardown"
    );
    let kept = cloud.stack(&data_stack).expect("the data stack is kept");
    assert_eq!(
        kept.stack_status().map(|status| status.as_str()),
        Some("CREATE_COMPLETE")
    );
    let object = cloud
        .block_on(
            cloud
                .s3
                .get_object()
                .bucket(&bucket)
                .key("workspaces/keep.json")
                .send(),
        )
        .expect("the data bucket keeps its objects");
    assert_eq!(object.content_length(), Some(2));
    let item = cloud
        .block_on(
            cloud
                .dynamodb
                .get_item()
                .table_name(&table)
                .key("pk", key("workspace#1"))
                .key("sk", key("meta"))
                .send(),
        )
        .expect("the data table is kept");
    assert!(item.item().is_some(), "the data table keeps its items");
    for resource in [&bucket, &table] {
        assert!(
            teardown
                .stdout
                .lines()
                .any(|line| line.contains(resource.as_str())
                    && line.contains("data is retained; --delete-data removes it")),
            "the output names {resource} as kept:\n{}",
            teardown.stdout
        );
    }
    assert!(
        teardown
            .stdout
            .starts_with(&format!("Deleted 3 stacks of {} in ", instance.name)),
        "{}",
        teardown.stdout
    );
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("teardown_keeps_data", teardown.stdout));

    let delete_data = instance
        .stackwright(&["teardown", "--delete-data"])
        .run()
        .succeeded();
    assert!(cloud.stack(&data_stack).is_none(), "the data stack is gone");
    assert_eq!(
        cloud.listed_stacks(&instance.stacks()),
        Vec::<String>::new()
    );
    let head = cloud.block_on(cloud.s3.head_bucket().bucket(&bucket).send());
    assert!(
        head.as_ref()
            .is_err_and(|error| error.as_service_error().is_some_and(|e| e.is_not_found())),
        "the data bucket is deleted: {head:?}"
    );
    let described = cloud.block_on(cloud.dynamodb.describe_table().table_name(&table).send());
    assert!(
        described.as_ref().is_err_and(|error| error
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())),
        "the data table is deleted: {described:?}"
    );
    assert!(
        delete_data
            .stderr
            .contains("--delete-data: the data stack of"),
        "{}",
        delete_data.stderr
    );
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("teardown_delete_data", delete_data.stdout));

    let status = instance
        .stackwright(&["status"])
        .without_yes()
        .run()
        .succeeded();
    assert_eq!(
        status.stdout,
        format!(
            "{} is not installed in account 123456789012 (us-east-1).\n",
            instance.name
        )
    );
}

// --- 5. Bad input: a clear error, a hint, exit 1, nothing created --------------------------

/// Runs `install --yes` recorded, expects exit 1 with an error and a hint, and checks that no
/// CloudFormation write was made and no stack exists. Returns the transcript.
fn refused_install(instance: &Instance, adjust: impl FnOnce(Run<'_>) -> Run<'_>) -> Outcome {
    let tag = format!("{}-refused", instance.name);
    let release = release_arg("1.0.0");
    let (outcome, requests) = record(&tag, || {
        adjust(
            instance
                .stackwright(&["install", "--release", &release])
                .tag(&tag),
        )
        .run()
    });
    let outcome = outcome.exited(1);
    assert!(
        outcome.stderr.starts_with("error: ") || outcome.stderr.contains("\nerror: "),
        "an error on stderr:\n{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("\nhint: "),
        "a hint on stderr:\n{}",
        outcome.stderr
    );
    assert_eq!(
        cloudformation_writes(&requests),
        Vec::<String>::new(),
        "CloudFormation writes"
    );
    assert_nothing_created(&Cloud::connect(), instance);
    outcome
}

#[test]
fn without_credentials_install_fails_before_any_call() {
    let instance = Instance::new("nocreds", PUBLIC);
    // Nothing may reach beyond 127.0.0.1: no profile files, no instance metadata.
    let env = crate::common::moto::env();
    assert_eq!(env["AWS_CONFIG_FILE"], "/dev/null");
    assert_eq!(env["AWS_SHARED_CREDENTIALS_FILE"], "/dev/null");
    assert_eq!(env["AWS_EC2_METADATA_DISABLED"], "true");
    let outcome = refused_install(&instance, |run| {
        run.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
    });
    assert!(outcome.stderr.contains("no AWS credentials were found"));
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("refused_no_credentials", outcome.transcript()));
}

#[test]
fn a_region_the_endpoint_rejects_fails_with_a_hint() {
    // What moto 5.2.5 rejects: its STS answers in any region, but its CloudFormation serves
    // real regions only, so `us-fake-1` gets HTTP 500 without an AWS error (a KeyError inside
    // moto) on the first DescribeStacks. Real opt-in regions (`ap-southeast-7`) it accepts.
    let instance = Instance::new("region", PUBLIC);
    let outcome = refused_install(&instance, |run| run.arg("--region").arg("us-fake-1"));
    assert!(outcome.stderr.contains("us-fake-1"), "{}", outcome.stderr);
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("refused_unknown_region", outcome.transcript()));

    // A name that is no region at all is refused before any call.
    let outcome = refused_install(&instance, |run| run.arg("--region").arg("us_east_1"));
    assert!(outcome.stderr.contains("--region"), "{}", outcome.stderr);
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("refused_malformed_region", outcome.transcript()));
}

#[test]
fn an_invalid_configuration_fails_before_any_call() {
    let instance = Instance::new("invalid", PUBLIC);
    instance.configure(&PUBLIC.replace("10.71.0.0/16", "10.71.0.0/24"));
    let tag = format!("{}-invalid", instance.name);
    let release = release_arg("1.0.0");
    let (outcome, requests) = record(&tag, || {
        instance
            .stackwright(&["install", "--release", &release])
            .tag(&tag)
            .run()
    });
    let outcome = outcome.exited(1);
    assert!(requests.is_empty(), "requests were sent: {requests:?}");
    assert!(
        outcome.stderr.contains("network.vpc_cidr"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("\nhint: "), "{}", outcome.stderr);
    assert_nothing_created(&Cloud::connect(), &instance);
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("refused_invalid_configuration", outcome.transcript()));
}

#[test]
fn a_stack_name_taken_by_someone_else_is_refused_and_left_alone() {
    let instance = Instance::new("taken", PUBLIC);
    let cloud = Cloud::connect();
    let foreign = instance.stack("bootstrap");
    let template = format!(
        r#"{{"Resources": {{"Marker": {{"Type": "AWS::SSM::Parameter", "Properties": {{"Name": "/{}/foreign", "Type": "String", "Value": "not stackwright's"}}}}}}}}"#,
        instance.name
    );
    cloud
        .block_on(
            cloud
                .cloudformation
                .create_stack()
                .stack_name(&foreign)
                .template_body(&template)
                .send(),
        )
        .expect("CreateStack");
    let before = cloud.stack(&foreign).expect("the foreign stack exists");

    let tag = format!("{}-refused", instance.name);
    let release = release_arg("1.0.0");
    let (outcome, requests) = record(&tag, || {
        instance
            .stackwright(&["install", "--release", &release])
            .tag(&tag)
            .run()
    });
    let outcome = outcome.exited(1);
    assert!(
        outcome.stderr.contains(&format!(
            "a stack named {foreign} already exists, and stackwright did not create it"
        )),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("\nhint: "), "{}", outcome.stderr);
    assert_eq!(cloudformation_writes(&requests), Vec::<String>::new());
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("refused_name_taken", outcome.transcript()));

    // The foreign stack is as it was: same status, never updated, same template, no change set.
    let after = cloud
        .stack(&foreign)
        .expect("the foreign stack still exists");
    assert_eq!(after.stack_id(), before.stack_id());
    assert_eq!(after.stack_status(), before.stack_status());
    assert_eq!(after.last_updated_time(), before.last_updated_time());
    assert!(after.tags().is_empty());
    let body = cloud
        .block_on(
            cloud
                .cloudformation
                .get_template()
                .stack_name(&foreign)
                .send(),
        )
        .expect("GetTemplate");
    assert_eq!(body.template_body(), Some(template.as_str()));
    let change_sets = cloud
        .block_on(
            cloud
                .cloudformation
                .list_change_sets()
                .stack_name(&foreign)
                .send(),
        )
        .expect("ListChangeSets");
    // moto lists every stack's change sets whatever StackName says.
    let foreign_change_sets: Vec<_> = change_sets
        .summaries()
        .iter()
        .filter(|summary| summary.stack_name() == Some(foreign.as_str()))
        .collect();
    assert!(
        foreign_change_sets.is_empty(),
        "change sets on {foreign}: {foreign_change_sets:?}"
    );
    let others: Vec<String> = instance
        .stacks()
        .into_iter()
        .filter(|name| *name != foreign)
        .collect();
    assert_eq!(cloud.listed_stacks(&others), Vec::<String>::new());

    cloud
        .block_on(
            cloud
                .cloudformation
                .delete_stack()
                .stack_name(&foreign)
                .send(),
        )
        .expect("DeleteStack of the foreign stack");
}

// --- 6. Confirmation and status ---------------------------------------------------------------

#[test]
fn without_yes_or_a_terminal_install_and_teardown_refuse_before_any_call() {
    let instance = Instance::new("noyes", PUBLIC);
    let release = release_arg("1.0.0");
    for (args, snapshot) in [
        (
            vec!["install", "--release", release.as_str()],
            "refused_install_unconfirmed",
        ),
        (vec!["teardown"], "refused_teardown_unconfirmed"),
    ] {
        let tag = format!("{}-{}", instance.name, args[0]);
        let (outcome, requests) = record(&tag, || {
            instance.stackwright(&args).without_yes().tag(&tag).run()
        });
        let outcome = outcome.exited(1);
        assert!(requests.is_empty(), "requests were sent: {requests:?}");
        assert!(outcome.stderr.contains("--yes"), "{}", outcome.stderr);
        instance
            .settings()
            .bind(|| insta::assert_snapshot!(snapshot, outcome.transcript()));
    }
    assert_nothing_created(&Cloud::connect(), &instance);
}

#[test]
fn status_shows_each_stack_and_its_outputs_as_text_and_json() {
    let instance = Instance::new("status", PUBLIC);
    let before = instance
        .stackwright(&["status"])
        .without_yes()
        .run()
        .succeeded();
    assert_eq!(
        before.stdout,
        format!(
            "{} is not installed in account 123456789012 (us-east-1).\n",
            instance.name
        )
    );

    instance.install("1.0.0");
    let cloud = Cloud::connect();
    let text = instance
        .stackwright(&["status"])
        .without_yes()
        .run()
        .succeeded();
    for name in instance.stacks() {
        assert!(
            text.stdout
                .lines()
                .any(|line| line.starts_with(&name) && line.contains("CREATE_COMPLETE")),
            "{name} and its status:\n{}",
            text.stdout
        );
        for (key, value) in cloud.outputs(&name) {
            assert!(
                text.stdout.lines().any(|line| {
                    let mut columns = line.split_whitespace();
                    columns.next() == Some(name.as_str())
                        && columns.next() == Some(key.as_str())
                        && line.trim_end().ends_with(value.as_str())
                }),
                "{name}'s output {key} = {value}:\n{}",
                text.stdout
            );
        }
    }
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("status_text", text.stdout));

    let json = instance
        .stackwright(&["status", "--output", "json"])
        .without_yes()
        .run()
        .succeeded();
    let document: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("status --output json prints JSON");
    assert_eq!(document["instance"], instance.name.as_str());
    assert_eq!(document["account"], "123456789012");
    assert_eq!(document["region"], "us-east-1");
    let stacks = document["stacks"].as_array().expect("a list of stacks");
    assert_eq!(
        stacks
            .iter()
            .map(|stack| stack["name"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>(),
        instance.stacks()
    );
    for stack in stacks {
        let name = stack["name"].as_str().expect("a name");
        assert_eq!(stack["status"], "CREATE_COMPLETE");
        let outputs: BTreeMap<String, String> =
            serde_json::from_value(stack["outputs"].clone()).expect("outputs by name");
        assert_eq!(outputs, cloud.outputs(name), "{name}'s outputs");
        assert_eq!(
            stack["tags"]["stackwright:instance"],
            instance.name.as_str()
        );
    }
    // Parameters are left out of the snapshot: moto describes list parameters its own way
    // (see scripts/moto_server.py), and they are the configuration, not the status.
    let mut shown = document.clone();
    for stack in shown["stacks"].as_array_mut().expect("a list of stacks") {
        stack
            .as_object_mut()
            .expect("a stack is an object")
            .remove("parameters");
    }
    // The configuration's hash changes with the instance's generated name.
    assert_eq!(
        shown["installation"]["config_hash"].as_str().map(str::len),
        Some(64),
        "the installation record holds the configuration's SHA-256"
    );
    shown["installation"]["config_hash"] = "[SHA-256]".into();
    // The local control plane re-signs its timestamp at every start and then twice a day.
    assert!(shown["installation"]["trust_floor"]["timestamp_version"].as_u64() >= Some(2));
    shown["installation"]["trust_floor"]["timestamp_version"] = "[VERSION]".into();
    let shown = serde_json::to_string_pretty(&shown).expect("JSON");
    instance
        .settings()
        .bind(|| insta::assert_snapshot!("status_json", shown));
}

// --- 7. Templates over the inline limit --------------------------------------------------------

/// A release like 1.0.0 with enough extra components that the platform template exceeds
/// CloudFormation's 51,200-byte inline limit.
fn large_release(directory: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(release("1.0.0")).expect("the manifest exists");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&text).expect("the manifest is JSON");
    let template = manifest["components"][2].clone();
    let components = manifest["components"].as_array_mut().expect("components");
    for index in 0..12 {
        let mut extra = template.clone();
        extra["name"] = format!("worker-{index:02}").into();
        let digest = stackwright::render::content_digest(&format!("worker-{index}"));
        extra["image"] = format!(
            "111122223333.dkr.ecr.us-east-1.amazonaws.com/stackwright/worker@sha256:{digest}"
        )
        .into();
        components.push(extra);
    }
    let path = directory.join("large-release.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&manifest).expect("serializes"),
    )
    .expect("written");
    path
}

#[test]
fn a_template_over_the_inline_limit_is_uploaded_to_the_artifact_bucket_and_passed_by_url() {
    let instance = Instance::new("large", PUBLIC);
    let manifest = large_release(instance.directory());
    let config = stackwright::config::ConfigFile::load(&instance.config)
        .expect("the configuration is valid");
    let release_manifest =
        stackwright::release::ReleaseManifest::load(&manifest).expect("the release is valid");
    let platform = stackwright::render::render_all(&config, &release_manifest)
        .expect("renders")
        .into_iter()
        .find(|stack| stack.kind == stackwright::stacks::StackKind::Platform)
        .expect("a platform stack");
    assert!(
        platform.body.len() > stackwright::render::INLINE_TEMPLATE_LIMIT,
        "the test release must exceed the inline limit, but the platform template is {} bytes",
        platform.body.len()
    );

    let manifest_arg = manifest.to_str().expect("UTF-8").to_owned();
    // The test release's images exist nowhere: they are not what this test is about.
    instance
        .stackwright(&[
            "install",
            "--skip-mirror",
            "--manifest-file",
            &manifest_arg,
            "--allow-unsigned",
        ])
        .run()
        .succeeded();

    let cloud = Cloud::connect();
    let stack = cloud
        .stack(&instance.stack("platform"))
        .expect("the platform stack exists");
    assert_eq!(
        stack.stack_status().map(|status| status.as_str()),
        Some("CREATE_COMPLETE")
    );
    // The template went through the bucket, named by its content, and is what was deployed.
    let bucket = cloud.outputs(&instance.stack("bootstrap"))["ArtifactBucketName"].clone();
    let key = format!(
        "templates/{}/{}.yaml",
        instance.stack("platform"),
        stackwright::render::content_digest(&platform.body)
    );
    let uploaded = cloud
        .block_on(cloud.s3.get_object().bucket(&bucket).key(&key).send())
        .unwrap_or_else(|error| panic!("s3://{bucket}/{key} is missing: {error:?}"));
    let uploaded = cloud
        .block_on(uploaded.body.collect())
        .expect("the object reads")
        .into_bytes();
    assert_eq!(uploaded.as_ref(), platform.body.as_bytes());
    let deployed = cloud
        .block_on(
            cloud
                .cloudformation
                .get_template()
                .stack_name(instance.stack("platform"))
                .send(),
        )
        .expect("GetTemplate answers");
    assert_eq!(deployed.template_body(), Some(platform.body.as_str()));

    // Installing again recognises the uploaded template as deployed: nothing changes.
    let again = instance
        .stackwright(&[
            "install",
            "--skip-mirror",
            "--manifest-file",
            &manifest_arg,
            "--allow-unsigned",
        ])
        .run()
        .succeeded();
    assert!(
        again.stdout.contains("Nothing to change"),
        "{}",
        again.transcript()
    );
    instance.stackwright(&["teardown", "--delete-data"]).run();
}

// --- The updater stack -----------------------------------------------------------------------

/// One call of EventBridge's JSON API on moto, the answer as JSON. The test's SDK clients have
/// no EventBridge client, and moto keeps a rule's targets as CloudFormation gave them, so the
/// raw answer is also the most faithful view of what it holds.
fn events(cloud: &Cloud, operation: &str, body: serde_json::Value) -> serde_json::Value {
    let variables = crate::common::moto::env();
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/20250101/{}/events/aws4_request, SignedHeaders=host, Signature=0",
        variables["AWS_ACCESS_KEY_ID"],
        crate::common::moto::region()
    );
    let response = cloud.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client")
            .post(crate::common::moto::endpoint())
            .header("X-Amz-Target", format!("AWSEvents.{operation}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("Authorization", authorization)
            .body(body.to_string())
            .send()
            .await
            .expect("moto answers")
    });
    let status = response.status();
    let text = cloud.block_on(response.text()).expect("the answer reads");
    let mut answer: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("events {operation}: not JSON ({error}): {text}"));
    answer["status"] = status.as_u16().into();
    answer
}

#[test]
fn a_release_with_an_installer_image_installs_the_updater_stack_and_teardown_removes_it() {
    let schedule = "cron(0 3 * * ? *)";
    let config = format!("{PRIVATE}[upgrade]\nschedule = \"{schedule}\"\n");
    let instance = Instance::new("updater", &config);
    let manifest = crate::render::release_with_installer(instance.directory());
    let manifest_arg = manifest.to_str().expect("UTF-8").to_owned();
    // The installer image named in the test release exists nowhere.
    let install = instance
        .stackwright(&[
            "install",
            "--skip-mirror",
            "--manifest-file",
            &manifest_arg,
            "--allow-unsigned",
        ])
        .run()
        .succeeded();
    let words = install
        .stdout
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        words.contains(&format!(
            "The unattended upgrade job runs on the schedule {schedule} in this account (the updater stack)."
        )),
        "{}",
        install.transcript()
    );
    let updater = instance.stack("updater");
    assert!(
        install.transcript().contains(&updater),
        "the install names the updater stack:\n{}",
        install.transcript()
    );

    let cloud = Cloud::connect();
    let stack = cloud.stack(&updater).expect("the updater stack exists");
    assert_eq!(
        stack.stack_status().map(|status| status.as_str()),
        Some("CREATE_COMPLETE")
    );
    let outputs = cloud.outputs(&updater);
    let rule_name = &outputs["UpgradeScheduleName"];
    assert_eq!(rule_name, &format!("{}-upgrade", instance.name));
    let task_definition_arn = &outputs["UpgradeTaskDefinitionArn"];

    // The rule runs on the configured schedule and starts one Fargate task of the job's task
    // definition on the platform's cluster, in the private subnets, without a public address.
    let rule = events(
        &cloud,
        "DescribeRule",
        serde_json::json!({ "Name": rule_name }),
    );
    assert_eq!(rule["ScheduleExpression"], schedule, "{rule}");
    assert_eq!(rule["State"], "ENABLED", "{rule}");
    assert_eq!(
        rule["Arn"],
        outputs["UpgradeScheduleArn"].as_str(),
        "{rule}"
    );
    let targets = events(
        &cloud,
        "ListTargetsByRule",
        serde_json::json!({ "Rule": rule_name }),
    );
    let [target] = targets["Targets"].as_array().expect("targets").as_slice() else {
        panic!("one target: {targets}");
    };
    let clusters = cloud
        .block_on(
            cloud
                .ecs
                .describe_clusters()
                .clusters(&instance.name)
                .send(),
        )
        .expect("DescribeClusters");
    let cluster_arn = clusters.clusters()[0]
        .cluster_arn()
        .expect("the cluster's ARN");
    assert_eq!(target["Arn"], cluster_arn, "{target}");
    assert!(
        target["RoleArn"]
            .as_str()
            .is_some_and(|role| role.contains(&format!(":role/{}-ScheduleRole", updater))),
        "{target}"
    );
    let ecs = &target["EcsParameters"];
    assert_eq!(
        ecs["TaskDefinitionArn"],
        task_definition_arn.as_str(),
        "{target}"
    );
    assert_eq!(ecs["LaunchType"], "FARGATE", "{target}");
    assert_eq!(ecs["TaskCount"], 1, "{target}");
    let network = &ecs["NetworkConfiguration"]["AwsVpcConfiguration"];
    assert_eq!(network["AssignPublicIp"], "DISABLED", "{target}");
    let private_subnets: Vec<String> =
        cloud.outputs(&instance.stack("network"))["PrivateSubnetIds"]
            .split(',')
            .map(str::to_owned)
            .collect();
    assert_eq!(
        network["Subnets"],
        serde_json::json!(private_subnets),
        "{target}"
    );

    // The task definition runs the installer's mirror in the instance's ECR, by digest, as the
    // unattended job, with the configuration in its environment. (moto keeps only the family,
    // the containers and the volumes of a task definition from CloudFormation; Fargate, the
    // size and the roles are asserted on the rendered template in tests/it/render.rs.)
    let described = cloud
        .block_on(
            cloud
                .ecs
                .describe_task_definition()
                .task_definition(task_definition_arn)
                .send(),
        )
        .expect("DescribeTaskDefinition");
    let definition = described.task_definition().expect("a task definition");
    assert_eq!(
        definition.family(),
        Some(format!("{}-updater", instance.name).as_str())
    );
    let [container] = definition.container_definitions() else {
        panic!("one container: {definition:?}");
    };
    let digest = crate::render::INSTALLER_IMAGE
        .split_once('@')
        .expect("pinned by digest")
        .1;
    assert_eq!(
        container.image(),
        Some(
            format!(
                "123456789012.dkr.ecr.{}.amazonaws.com/{}/installer@{digest}",
                crate::common::moto::region(),
                instance.name
            )
            .as_str()
        )
    );
    assert_eq!(container.command(), ["upgrade", "--unattended"]);
    let config_text = container
        .environment()
        .iter()
        .find(|variable| variable.name() == Some("STACKWRIGHT_CONFIG_TEXT"))
        .and_then(|variable| variable.value())
        .expect("the configuration in STACKWRIGHT_CONFIG_TEXT");
    let handed_over =
        stackwright::config::ConfigFile::parse(config_text, std::path::Path::new("task"))
            .expect("the handed-over configuration is valid");
    // It is the configuration as the install resolved it: the file, with the control plane's
    // URL from the environment (the local control plane's) in place of the file's.
    let mut installed = stackwright::config::ConfigFile::load(&instance.config).expect("valid");
    if let Some(url) = crate::common::moto::env().get("STACKWRIGHT_CONTROL_PLANE_URL") {
        assert_eq!(
            handed_over.control_plane.url.trim_end_matches('/'),
            url.trim_end_matches('/')
        );
        installed.control_plane.url = handed_over.control_plane.url.clone();
    }
    assert_eq!(handed_over.to_toml(), installed.to_toml());
    assert_eq!(handed_over.upgrade.schedule, schedule);

    // Teardown deletes the updater stack first, and the rule with it. (moto leaves ECS task
    // definitions behind when their stack goes; AWS deregisters them.)
    let teardown = instance
        .stackwright(&["teardown", "--delete-data"])
        .run()
        .succeeded();
    assert!(
        teardown.transcript().contains(&updater),
        "the teardown names the updater stack:\n{}",
        teardown.transcript()
    );
    assert!(cloud.stack(&updater).is_none(), "{updater} is gone");
    assert_eq!(
        cloud.listed_stacks(std::slice::from_ref(&updater)),
        Vec::<String>::new()
    );
    let gone = events(
        &cloud,
        "DescribeRule",
        serde_json::json!({ "Name": rule_name }),
    );
    assert_eq!(gone["__type"], "ResourceNotFoundException", "{gone}");
}
