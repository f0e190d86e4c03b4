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

/// The local AWS emulator that `scripts/dev-env.sh up` starts, and instances installed into it
/// by the real binary. One moto serves every test process: each test owns an instance with a
/// unique name and never resets moto or its recorder.
pub mod replay;

pub mod moto {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;
    use std::time::Duration;

    use aws_config::{AppName, BehaviorVersion, Region, retry::RetryConfig};

    use super::REPOSITORY;

    const UP: &str = "run `scripts/dev-env.sh up` first (scripts/test.sh does): the provision tests install into the local AWS emulator it starts";

    /// The `env.sh` that `scripts/dev-env.sh up` wrote: `target/dev-env/env.sh`, or the file
    /// `STACKWRIGHT_DEV_ENV` names (another checkout's emulator, say).
    pub fn env_file() -> PathBuf {
        std::env::var_os("STACKWRIGHT_DEV_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(REPOSITORY).join("target/dev-env/env.sh"))
    }

    /// The variables of the dev env's `env.sh` (its `export K=V` lines), once moto has been
    /// found answering at `AWS_ENDPOINT_URL`. Panics with the fix otherwise: these tests must
    /// fail, never skip, without the emulator.
    pub fn env() -> &'static BTreeMap<String, String> {
        static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
        ENV.get_or_init(|| {
            let path = env_file();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}; {UP}", path.display()));
            let variables = parse_exports(&text);
            for key in [
                "AWS_ENDPOINT_URL",
                "AWS_REGION",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_EC2_METADATA_DISABLED",
                "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE",
            ] {
                assert!(
                    variables.contains_key(key),
                    "{} does not export {key}; {UP}",
                    path.display()
                );
            }
            let endpoint = &variables["AWS_ENDPOINT_URL"];
            if let Err(error) = http(endpoint, "GET", "/moto-api/") {
                panic!("moto does not answer at {endpoint} ({error}); {UP}");
            }
            variables
        })
    }

    /// The `export K=V [K=V...]` lines of a shell file; other lines are ignored.
    pub fn parse_exports(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("export "))
            .flat_map(str::split_whitespace)
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                let value = value
                    .strip_prefix('"')
                    .and_then(|value| value.strip_suffix('"'))
                    .unwrap_or(value);
                Some((key.to_owned(), value.to_owned()))
            })
            .collect()
    }

    pub fn endpoint() -> &'static str {
        &env()["AWS_ENDPOINT_URL"]
    }

    pub fn region() -> &'static str {
        &env()["AWS_REGION"]
    }

    /// One HTTP/1.0 exchange with moto (no proxy, no keep-alive); the body of a 2xx answer.
    fn http(endpoint: &str, method: &str, path: &str) -> Result<String, String> {
        let authority = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| format!("{endpoint} is not an http:// URL"))?
            .trim_end_matches('/');
        let address = authority
            .to_socket_addrs()
            .map_err(|error| error.to_string())?
            .next()
            .ok_or_else(|| format!("{authority} has no address"))?;
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
            .map_err(|error| error.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|error| error.to_string())?;
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Length: 0\r\n\r\n"
        )
        .map_err(|error| error.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .map_err(|error| error.to_string())?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or("the answer has no header end")?;
        let status = head.split_whitespace().nth(1).unwrap_or_default();
        if !status.starts_with('2') {
            return Err(format!("{method} {path} answered {status}"));
        }
        Ok(body.to_owned())
    }

    /// The ARN of an ACM certificate for `domain` in moto, from `scripts/dev-env.sh
    /// certificate`: moto cannot create the one the platform template would request.
    pub fn certificate(domain: &str) -> String {
        // The dev-env.sh that wrote env.sh: ROOT/target/dev-env/env.sh -> ROOT/scripts/.
        let root = env_file()
            .ancestors()
            .nth(3)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(REPOSITORY));
        let output = std::process::Command::new(root.join("scripts/dev-env.sh"))
            .args(["certificate", domain])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env())
            .output()
            .expect("scripts/dev-env.sh runs");
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            output.status.success() && stdout.starts_with("arn:aws:acm:"),
            "scripts/dev-env.sh certificate {domain} failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// A name no other test and no earlier run against the same moto uses: `prefix`, a hyphen
    /// and six base-36 characters, so its length (and table widths in snapshots) never varies.
    pub fn unique_name(prefix: &str) -> String {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        hasher.write_u32(std::process::id());
        let mut value = hasher.finish();
        let suffix: String = (0..6)
            .map(|_| {
                let digit = (value % 36) as u32;
                value /= 36;
                char::from_digit(digit, 36).expect("a base-36 digit")
            })
            .collect();
        let name = format!("{prefix}-{suffix}");
        assert!(
            (3..=20).contains(&name.len()),
            "{name} is not a valid instance name"
        );
        name
    }

    /// An instance of the platform, owned by one test: its unique name, a domain and a
    /// certificate in moto, and a directory holding its configuration.
    pub struct Instance {
        pub name: String,
        pub domain: String,
        pub certificate_arn: String,
        directory: tempfile::TempDir,
        pub config: PathBuf,
    }

    impl Instance {
        /// A new instance called `prefix-xxxxxx` (prefix: 3 to 13 lowercase characters) with
        /// `template` as its configuration; see [`Instance::configure`].
        pub fn new(prefix: &str, template: &str) -> Self {
            let name = unique_name(prefix);
            let domain = format!("{name}.example.com");
            let certificate_arn = certificate(&domain);
            let directory = tempfile::tempdir().expect("a temporary directory");
            let config = directory.path().join("stackwright.toml");
            let instance = Instance {
                name,
                domain,
                certificate_arn,
                directory,
                config,
            };
            instance.configure(template);
            instance
        }

        /// Writes the configuration from a template whose `{name}`, `{domain}` and
        /// `{certificate_arn}` are replaced by the instance's.
        pub fn configure(&self, template: &str) {
            for placeholder in ["{name}", "{domain}", "{certificate_arn}"] {
                assert!(
                    template.contains(placeholder),
                    "the configuration template lacks {placeholder}"
                );
            }
            let text = template
                .replace("{name}", &self.name)
                .replace("{domain}", &self.domain)
                .replace("{certificate_arn}", &self.certificate_arn);
            std::fs::write(&self.config, text).expect("the configuration is written");
        }

        pub fn directory(&self) -> &Path {
            self.directory.path()
        }

        /// The CloudFormation stack of this instance for a stack kind (`bootstrap`, ...).
        pub fn stack(&self, kind: &str) -> String {
            format!("{}-{kind}", self.name)
        }

        /// The stacks an instance without `[identity]` has, in deployment order.
        pub fn stacks(&self) -> Vec<String> {
            ["bootstrap", "network", "data", "platform"]
                .into_iter()
                .map(|kind| self.stack(kind))
                .collect()
        }

        /// `stackwright --config <this instance's file> ARGS --yes` with only the emulator's
        /// environment.
        pub fn stackwright(&self, args: &[&str]) -> Run<'_> {
            let mut env = env().clone();
            // These runs test provisioning and the lock: preflight, which would count the VPCs
            // every test leaves in the shared emulator against its quota, is tested on its
            // own (tests/it/preflight.rs takes this out).
            env.insert("STACKWRIGHT_SKIP_PREFLIGHT".into(), "1".into());
            Run {
                instance: self,
                args: args.iter().map(|arg| (*arg).to_owned()).collect(),
                env,
                yes: true,
            }
        }

        /// `install --yes --release <version>`, verified in the example repository, which must
        /// succeed.
        pub fn install(&self, version: &str) -> Outcome {
            self.stackwright(&["install", "--release", version])
                .run()
                .succeeded()
        }

        /// Snapshot settings replacing what differs from run to run: the instance's name,
        /// generated ids and suffixes, timestamps, durations and the emulator's port.
        pub fn settings(&self) -> insta::Settings {
            let mut settings = insta::Settings::clone_current();
            settings.set_prepend_module_to_snapshot(true);
            for (pattern, replacement) in [
                (regex_escape(&self.name), "[INSTANCE]"),
                (regex_escape(&self.certificate_arn), "[CERTIFICATE]"),
                (regex_escape(REPOSITORY), "[REPOSITORY]"),
                (
                    regex_escape(&self.directory().display().to_string()),
                    "[TEMP]",
                ),
                (r"127\.0\.0\.1:\d+".into(), "127.0.0.1:[PORT]"),
                (
                    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)".into(),
                    "[TIME]",
                ),
                (r"\b\d+\.\d+ ?s\b".into(), "[SECONDS]"),
                (
                    r#""seconds": [0-9.e-]+"#.into(),
                    r#""seconds": "[SECONDS]""#,
                ),
                (
                    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b".into(),
                    "[UUID]",
                ),
                (
                    r"\b(vpc|subnet|sg|rtb|igw|nat|vpce|fl|lt|eipalloc|acl|eni)-[0-9a-f]{8,17}\b"
                        .into(),
                    "$1-[ID]",
                ),
                (r"-[A-Z0-9]{12,13}\b".into(), "-[SUFFIX]"),
                (r"(bucket)-[a-z0-9]{12}\b".into(), "$1-[SUFFIX]"),
                (r"/[0-9a-f]{16}\b".into(), "/[ID]"),
                (r"\b127(\.\d{1,3}){3}\b".into(), "[IP]"),
            ] {
                settings.add_filter(&pattern, replacement);
            }
            settings
        }
    }

    impl Drop for Instance {
        /// Best effort, so that moto does not pile up stacks run after run; a failure here
        /// changes nothing about the test's verdict.
        fn drop(&mut self) {
            let _ = self
                .stackwright(&["teardown", "--delete-data"])
                .tag("cleanup")
                .run();
        }
    }

    fn regex_escape(text: &str) -> String {
        text.chars()
            .flat_map(|character| {
                let special = "\\.+*?()|[]{}^$#&-~".contains(character);
                special
                    .then_some('\\')
                    .into_iter()
                    .chain(std::iter::once(character))
            })
            .collect()
    }

    /// One run of the binary being prepared.
    pub struct Run<'a> {
        instance: &'a Instance,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        yes: bool,
    }

    impl Run<'_> {
        /// One more argument, after the command's.
        pub fn arg(mut self, arg: &str) -> Self {
            self.args.push(arg.to_owned());
            self
        }

        /// Without `--yes`.
        pub fn without_yes(mut self) -> Self {
            self.yes = false;
            self
        }

        pub fn env(mut self, key: &str, value: &str) -> Self {
            self.env.insert(key.to_owned(), value.to_owned());
            self
        }

        pub fn env_remove(mut self, key: &str) -> Self {
            self.env.remove(key);
            self
        }

        /// Marks every AWS request of the run with `app/<tag>` in its user agent, for
        /// [`record`] to pick out.
        pub fn tag(self, tag: &str) -> Self {
            self.env("AWS_SDK_UA_APP_ID", tag)
        }

        /// The run's environment. Without a control plane to serve releases, versions are
        /// verified in the signed example repository, manifests/repository.
        fn environment(&self) -> BTreeMap<String, String> {
            let mut env = self.env.clone();
            if !env.contains_key("STACKWRIGHT_CONTROL_PLANE_URL") {
                env.entry("STACKWRIGHT_RELEASE_REPOSITORY".into())
                    .or_insert_with(|| format!("{}/manifests/repository", super::REPOSITORY));
            }
            env
        }

        /// Starts the run without waiting for it, its output captured: for races and for
        /// killing it midway.
        pub fn spawn(self) -> std::process::Child {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_stackwright"));
            command
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("NO_COLOR", "1")
                .env("HOME", std::env::temp_dir())
                .envs(self.environment())
                .arg("--config")
                .arg(&self.instance.config)
                .args(&self.args)
                .current_dir(self.instance.directory())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            if self.yes {
                command.arg("--yes");
            }
            command.spawn().expect("the binary starts")
        }

        pub fn run(self) -> Outcome {
            let mut command = super::stackwright();
            command
                .envs(self.environment())
                .arg("--config")
                .arg(&self.instance.config)
                .args(&self.args);
            if self.yes {
                command.arg("--yes");
            }
            let (code, stdout, stderr) = super::run(&mut command, self.instance.directory());
            Outcome {
                args: self.args.join(" "),
                code,
                stdout,
                stderr,
            }
        }
    }

    /// What a run printed and returned.
    #[derive(Debug)]
    pub struct Outcome {
        pub args: String,
        pub code: i32,
        pub stdout: String,
        pub stderr: String,
    }

    impl Outcome {
        /// The exit code and both streams, for snapshots and failure messages.
        pub fn transcript(&self) -> String {
            format!(
                "exit: {}\n--- stdout\n{}--- stderr\n{}",
                self.code, self.stdout, self.stderr
            )
        }

        pub fn exited(self, code: i32) -> Self {
            assert_eq!(
                self.code,
                code,
                "`stackwright {}` exited {}, expected {code}\n{}",
                self.args,
                self.code,
                self.transcript()
            );
            self
        }

        pub fn succeeded(self) -> Self {
            self.exited(0)
        }
    }

    /// One request moto received, as its recorder wrote it down.
    #[derive(Debug, Clone)]
    pub struct Request {
        /// The signing name: `cloudformation`, `sts`, `s3`...
        pub service: String,
        /// `CreateChangeSet`, `DescribeTable`, or `METHOD /path` for REST calls.
        pub operation: String,
        /// Form parameters of query-protocol calls (CloudFormation, STS, EC2).
        pub params: BTreeMap<String, String>,
    }

    impl Request {
        /// A CloudFormation call that may change something.
        pub fn is_cloudformation_write(&self) -> bool {
            self.service == "cloudformation"
                && !["Describe", "List", "Get", "Validate", "Estimate", "Detect"]
                    .iter()
                    .any(|read| self.operation.starts_with(read))
        }

        /// The stack the call names in `StackName`, if it does. Calls that take a change set's
        /// ARN name no stack: the ARN holds the change set's name only.
        pub fn stack_name(&self) -> Option<&str> {
            self.params.get("StackName").map(String::as_str)
        }
    }

    /// Runs `action` (which runs the binary with `.tag(tag)`) and returns what moto recorded of
    /// the requests carrying that tag. The recorder is global, so two markers bracket the run:
    /// when a marker is missing, someone reset or stopped the recorder meanwhile and the
    /// test fails rather than trusting a partial recording.
    pub fn record<T>(tag: &str, action: impl FnOnce() -> T) -> (T, Vec<Request>) {
        let endpoint = endpoint();
        http(endpoint, "POST", "/moto-api/recorder/start-recording")
            .unwrap_or_else(|error| panic!("cannot start moto's recorder: {error}"));
        let nonce = unique_name("mark");
        let marker = |edge: &str| format!("stackwright-marker={tag}-{edge}-{nonce}");
        http(endpoint, "GET", &format!("/moto-api/?{}", marker("begin")))
            .expect("the begin marker is sent");
        let result = action();
        http(endpoint, "GET", &format!("/moto-api/?{}", marker("end")))
            .expect("the end marker is sent");
        let recording = http(endpoint, "GET", "/moto-api/recorder/download-recording")
            .expect("moto's recording downloads");
        let lines: Vec<&str> = recording.lines().collect();
        let position = |edge: &str| {
            let marker = marker(edge);
            lines.iter().rposition(|line| line.contains(&marker))
        };
        let (Some(begin), Some(end)) = (position("begin"), position("end")) else {
            panic!(
                "moto's recording lacks a marker of this run: its recorder was reset or stopped meanwhile (no test may do that)"
            );
        };
        assert!(begin < end, "the markers are out of order");
        let needle = format!("app/{tag}");
        let requests = lines[begin + 1..end]
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| {
                header(entry, "user-agent")
                    .is_some_and(|agent| agent.split_whitespace().any(|part| part == needle))
            })
            .map(|entry| parse_request(&entry))
            .collect();
        (result, requests)
    }

    fn header<'a>(entry: &'a serde_json::Value, name: &str) -> Option<&'a str> {
        entry["headers"]
            .as_object()?
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))?
            .1
            .as_str()
    }

    fn parse_request(entry: &serde_json::Value) -> Request {
        let body = entry["body"].as_str().unwrap_or_default();
        let body = if entry["body_encoded"].as_bool().unwrap_or(false) {
            let bytes = aws_smithy_types::base64::decode(body).expect("the body is base64");
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            body.to_owned()
        };
        let form = header(entry, "content-type")
            .is_some_and(|kind| kind.starts_with("application/x-www-form-urlencoded"));
        let params: BTreeMap<String, String> = if form {
            body.split('&')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((form_decode(key), form_decode(value)))
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        // Credential=KEY/DATE/REGION/SERVICE/aws4_request
        let service = header(entry, "authorization")
            .and_then(|authorization| authorization.split("Credential=").nth(1))
            .and_then(|credential| credential.split('/').nth(3))
            .unwrap_or_default()
            .to_owned();
        let operation = header(entry, "x-amz-target")
            .map(|target| target.rsplit('.').next().unwrap_or(target).to_owned())
            .or_else(|| params.get("Action").cloned())
            .unwrap_or_else(|| {
                let url = entry["url"].as_str().unwrap_or_default();
                let path = url.split_once("://").map_or(url, |(_, rest)| {
                    rest.find('/').map_or("/", |at| &rest[at..])
                });
                format!("{} {path}", entry["method"].as_str().unwrap_or_default())
            });
        Request {
            service,
            operation,
            params,
        }
    }

    fn form_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            match bytes[index] {
                b'+' => decoded.push(b' '),
                b'%' if index + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(byte) => {
                            decoded.push(byte);
                            index += 2;
                        }
                        Err(_) => decoded.push(b'%'),
                    }
                }
                byte => decoded.push(byte),
            }
            index += 1;
        }
        String::from_utf8_lossy(&decoded).into_owned()
    }

    /// The CloudFormation writes among `requests`, each as `Operation stack-name`. A call that
    /// names a change set by ARN (which holds the change set's name, not the stack's) is
    /// attributed to the stack its CreateChangeSet named.
    pub fn cloudformation_writes(requests: &[Request]) -> Vec<String> {
        let stacks_of_change_sets: BTreeMap<&str, &str> = requests
            .iter()
            .filter(|request| request.operation == "CreateChangeSet")
            .filter_map(|request| {
                Some((
                    request.params.get("ChangeSetName")?.as_str(),
                    request.stack_name()?,
                ))
            })
            .collect();
        requests
            .iter()
            .filter(|request| request.is_cloudformation_write())
            .map(|request| {
                let change_set = request.params.get("ChangeSetName").map(String::as_str);
                let stack = request.stack_name().or_else(|| {
                    // arn:aws:cloudformation:REGION:ACCOUNT:changeSet/NAME/ID
                    let name = change_set?.split('/').nth(1)?;
                    stacks_of_change_sets.get(name).copied()
                });
                format!(
                    "{} {}",
                    request.operation,
                    stack.or(change_set).unwrap_or("-")
                )
            })
            .collect()
    }

    /// The distinct `(service, operation)` pairs of `requests`.
    pub fn operations(requests: &[Request]) -> BTreeSet<(String, String)> {
        requests
            .iter()
            .map(|request| (request.service.clone(), request.operation.clone()))
            .collect()
    }

    /// SDK clients on moto, for a test to look at what the cloud holds. Retries are off, so an
    /// emulator error shows as itself.
    pub struct Cloud {
        runtime: tokio::runtime::Runtime,
        pub cloudformation: aws_sdk_cloudformation::Client,
        pub s3: aws_sdk_s3::Client,
        pub dynamodb: aws_sdk_dynamodb::Client,
        pub ec2: aws_sdk_ec2::Client,
        pub ecr: aws_sdk_ecr::Client,
        pub ecs: aws_sdk_ecs::Client,
    }

    impl Cloud {
        pub fn connect() -> Self {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let variables = env();
            let config = runtime.block_on(
                aws_config::defaults(BehaviorVersion::latest())
                    .region(Region::new(region().to_owned()))
                    .endpoint_url(endpoint())
                    .credentials_provider(aws_credential_types::Credentials::new(
                        &variables["AWS_ACCESS_KEY_ID"],
                        &variables["AWS_SECRET_ACCESS_KEY"],
                        None,
                        None,
                        "dev-env",
                    ))
                    .retry_config(RetryConfig::disabled())
                    .app_name(AppName::new("stackwright-tests").expect("a valid app name"))
                    .load(),
            );
            let s3 = aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build();
            Cloud {
                cloudformation: aws_sdk_cloudformation::Client::new(&config),
                s3: aws_sdk_s3::Client::from_conf(s3),
                dynamodb: aws_sdk_dynamodb::Client::new(&config),
                ec2: aws_sdk_ec2::Client::new(&config),
                ecr: aws_sdk_ecr::Client::new(&config),
                ecs: aws_sdk_ecs::Client::new(&config),
                runtime,
            }
        }

        pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
            self.runtime.block_on(future)
        }

        /// The stack as DescribeStacks returns it, or `None` once it is gone (deleted stacks
        /// are only found by their ids).
        pub fn stack(&self, name: &str) -> Option<aws_sdk_cloudformation::types::Stack> {
            use aws_sdk_cloudformation::error::ProvideErrorMetadata;
            match self.block_on(
                self.cloudformation
                    .describe_stacks()
                    .stack_name(name)
                    .send(),
            ) {
                Ok(output) => output.stacks().first().cloned(),
                Err(error)
                    if error
                        .message()
                        .is_some_and(|m| m.contains("does not exist")) =>
                {
                    None
                }
                Err(error) => panic!("DescribeStacks {name}: {error:?}"),
            }
        }

        /// The names among `names` that ListStacks reports in any status but DELETE_COMPLETE.
        pub fn listed_stacks(&self, names: &[String]) -> Vec<String> {
            let mut found = Vec::new();
            let mut token = None;
            loop {
                let output = self
                    .block_on(
                        self.cloudformation
                            .list_stacks()
                            .set_next_token(token)
                            .send(),
                    )
                    .expect("ListStacks");
                for summary in output.stack_summaries() {
                    let name = summary.stack_name().unwrap_or_default();
                    let deleted = summary.stack_status().map(|status| status.as_str())
                        == Some("DELETE_COMPLETE");
                    if !deleted && names.iter().any(|wanted| wanted == name) {
                        found.push(name.to_owned());
                    }
                }
                token = output.next_token().map(str::to_owned);
                if token.is_none() {
                    return found;
                }
            }
        }

        pub fn outputs(&self, stack: &str) -> BTreeMap<String, String> {
            self.stack(stack)
                .unwrap_or_else(|| panic!("{stack} exists"))
                .outputs()
                .iter()
                .map(|output| {
                    (
                        output.output_key().unwrap_or_default().to_owned(),
                        output.output_value().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        }

        /// The physical id of a stack's resource (from ListStackResources: moto answers
        /// DescribeStackResources for one logical id with HTTP 500).
        pub fn resource(&self, stack: &str, logical_id: &str) -> String {
            let mut token = None;
            loop {
                let output = self
                    .block_on(
                        self.cloudformation
                            .list_stack_resources()
                            .stack_name(stack)
                            .set_next_token(token)
                            .send(),
                    )
                    .unwrap_or_else(|error| panic!("ListStackResources {stack}: {error:?}"));
                let found = output
                    .stack_resource_summaries()
                    .iter()
                    .find(|resource| resource.logical_resource_id() == Some(logical_id))
                    .and_then(|resource| resource.physical_resource_id());
                if let Some(physical_id) = found {
                    return physical_id.to_owned();
                }
                token = output.next_token().map(str::to_owned);
                assert!(token.is_some(), "{stack} has no resource {logical_id}");
            }
        }
    }
}

/// The local environment's TLS files, which `scripts/dev-env.sh up` makes and names in env.sh:
/// its CA (`STACKWRIGHT_CA_BUNDLE`) and a certificate and key for 127.0.0.1 signed by it.
pub mod tls {
    use std::path::PathBuf;
    use std::sync::OnceLock;

    pub struct Files {
        pub ca: PathBuf,
        pub certificate: PathBuf,
        pub key: PathBuf,
    }

    /// Panics with the fix when the local environment has not made them.
    pub fn files() -> &'static Files {
        static FILES: OnceLock<Files> = OnceLock::new();
        FILES.get_or_init(|| {
            let path = super::moto::env_file();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
                panic!("cannot read {}: {error}; run `scripts/dev-env.sh up` first (scripts/test.sh does): it makes the local CA these tests trust", path.display())
            });
            let variables = super::moto::parse_exports(&text);
            let file = |key: &str| {
                let file = PathBuf::from(variables.get(key).unwrap_or_else(|| {
                    panic!("{} does not export {key}; run `scripts/dev-env.sh up` again", path.display())
                }));
                assert!(file.exists(), "{} (from {key}) is missing; run `scripts/dev-env.sh up` again", file.display());
                file
            };
            Files {
                ca: file("STACKWRIGHT_CA_BUNDLE"),
                certificate: file("STACKWRIGHT_DEV_TLS_CERT"),
                key: file("STACKWRIGHT_DEV_TLS_KEY"),
            }
        })
    }

    /// Trusts the local CA in this test process too, for the library's own HTTPS clients
    /// (they read `STACKWRIGHT_CA_BUNDLE`, as the installer does).
    pub fn trust_in_this_process() {
        static DONE: OnceLock<()> = OnceLock::new();
        DONE.get_or_init(|| {
            // SAFETY: nextest runs every test in a process of its own (scripts/test.sh uses it),
            // and this runs before the test starts any client that reads the environment.
            unsafe { std::env::set_var("STACKWRIGHT_CA_BUNDLE", &files().ca) };
        });
    }

    /// A reqwest client that trusts the local CA.
    pub fn http_client() -> reqwest::Client {
        stackwright::tls::ExtraRoots::load(&files().ca)
            .expect("the local CA loads")
            .http_client(false)
            .build()
            .expect("an HTTPS client")
    }
}

/// The reference control plane as the real binary on a free port of 127.0.0.1, one per test,
/// serving HTTPS with the local environment's certificate, stopped when dropped; the
/// operator's commands act on it as the README shows.
pub mod control_plane {
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};

    use super::REPOSITORY;

    const BINARY: &str = env!("CARGO_BIN_EXE_stackwright-control-plane");

    pub struct Server {
        child: Child,
        pub url: String,
        directory: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Server {
        /// A server whose catalog and signed repository are `releases` (a directory holding
        /// `releases/*.json` and `repository/`): the project's `manifests/` by default.
        pub fn start(releases: Option<&Path>) -> Server {
            Server::start_with(releases, &[])
        }

        /// The same, with more arguments for `serve`.
        pub fn start_with(releases: Option<&Path>, arguments: &[&str]) -> Server {
            let tls = super::tls::files();
            super::tls::trust_in_this_process();
            let directory = tempfile::tempdir().expect("a temporary directory");
            let manifests = Path::new(REPOSITORY).join("manifests");
            let mut child = Command::new(BINARY)
                .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
                .arg(&tls.certificate)
                .arg("--tls-key")
                .arg(&tls.key)
                .arg("--releases")
                .arg(releases.unwrap_or(&manifests))
                .arg("--database")
                .arg(directory.path().join("control-plane.sqlite"))
                .args(arguments)
                .env("STACKWRIGHT_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the control plane starts");
            let stdout = child.stdout.take().expect("its stdout");
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .expect("the control plane says where it listens");
            let url = line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                .to_owned();
            Server {
                child,
                url,
                directory,
            }
        }

        /// The server's own files: its database, signing key and admin credential.
        pub fn directory(&self) -> &Path {
            self.directory.path()
        }

        pub fn admin_token_file(&self) -> PathBuf {
            self.directory.path().join("admin-token")
        }

        /// Runs an operator command; returns its exit code, stdout and stderr.
        pub fn run_operator(&self, arguments: &[&str]) -> (i32, String, String) {
            let output = Command::new(BINARY)
                .args(arguments)
                .env_clear()
                .env("STACKWRIGHT_CONTROL_PLANE_URL", &self.url)
                .env("STACKWRIGHT_CA_BUNDLE", &super::tls::files().ca)
                .env(
                    "STACKWRIGHT_CONTROL_PLANE_ADMIN_TOKEN_FILE",
                    self.admin_token_file(),
                )
                .env("NO_COLOR", "1")
                .output()
                .expect("the operator command runs");
            (
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }

        /// Runs an operator command, which must succeed; returns its stdout.
        pub fn operator(&self, arguments: &[&str]) -> String {
            let (code, stdout, stderr) = self.run_operator(arguments);
            assert_eq!(code, 0, "{arguments:?} failed: {stdout}{stderr}");
            stdout
        }

        /// What the server holds of every instance, as `instances --output json` prints it.
        pub fn instances(&self) -> serde_json::Value {
            serde_json::from_str(&self.operator(&["instances", "--output", "json"]))
                .expect("instances as JSON")
        }
    }
}
