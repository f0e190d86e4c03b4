//! `stackwright config`: the schema, validation, and what a user sees for each kind of mistake.

use crate::common::{ALL_PRIVATE_PUBLIC_SERVICES, config_file, run, stackwright};

/// Runs `config validate` on a variation of the documented configuration.
fn validate(text: &str) -> String {
    let (directory, path) = config_file(text);
    let (code, stdout, stderr) = run(
        stackwright()
            .arg("--config")
            .arg(&path)
            .args(["config", "validate"]),
        directory.path(),
    );
    format!("exit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}")
}

fn with(from: &str, to: &str) -> String {
    assert!(
        ALL_PRIVATE_PUBLIC_SERVICES.contains(from),
        "the sample contains {from:?}"
    );
    ALL_PRIVATE_PUBLIC_SERVICES.replacen(from, to, 1)
}

#[test]
fn the_documented_configuration_is_valid() {
    insta::assert_snapshot!(validate(ALL_PRIVATE_PUBLIC_SERVICES), @r"
    exit: 0
    --- stdout
    [TEMP]/stackwright.toml is valid: instance acme-dev in us-east-1, all-private mode over 3 availability zones, stacks acme-dev-bootstrap, acme-dev-network, acme-dev-data, acme-dev-platform
    --- stderr
    ");
}

#[test]
fn a_cidr_that_does_not_parse() {
    insta::assert_snapshot!(validate(&with("10.40.0.0/16", "10.40.0.0/33")));
}

#[test]
fn a_cidr_too_small_for_the_subnets() {
    insta::assert_snapshot!(validate(&with("10.40.0.0/16", "10.40.0.0/24")));
}

#[test]
fn one_availability_zone() {
    insta::assert_snapshot!(validate(&with(
        "availability_zones = 3",
        "availability_zones = 1"
    )));
}

#[test]
fn four_availability_zones() {
    insta::assert_snapshot!(validate(&with(
        "availability_zones = 3",
        "availability_zones = 4"
    )));
}

#[test]
fn public_services_outside_all_private() {
    insta::assert_snapshot!(validate(
        &with("mode = \"all-private\"", "mode = \"private\"")
            .replace("control_plane_endpoint_service = \"com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0\"\n", "")
    ));
}

#[test]
fn an_invalid_domain() {
    insta::assert_snapshot!(validate(&with("cde.acme.example", "cde_acme.example")));
}

#[test]
fn an_unknown_key() {
    insta::assert_snapshot!(validate(&with(
        "[network]\n",
        "[network]\nnat_gateways = 1\n"
    )));
}

#[test]
fn a_missing_required_key() {
    insta::assert_snapshot!(validate(&with("region = \"us-east-1\"\n", "")));
}

#[test]
fn a_wrong_schema_version() {
    insta::assert_snapshot!(validate(&with("schema_version = 1", "schema_version = 2")));
}

#[test]
fn a_missing_schema_version() {
    insta::assert_snapshot!(validate(&with("schema_version = 1\n", "")));
}

#[test]
fn a_mode_that_does_not_exist() {
    insta::assert_snapshot!(validate(&with(
        "mode = \"all-private\"",
        "mode = \"hybrid\""
    )));
}

#[test]
fn broken_toml_names_the_line() {
    insta::assert_snapshot!(validate(&with("[network]", "[network")));
}

#[test]
fn several_problems_are_reported_together() {
    let text = with("10.40.0.0/16", "10.40.0.0/24")
        .replace("availability_zones = 3", "availability_zones = 4")
        .replace("name = \"acme-dev\"", "name = \"Acme\"");
    insta::assert_snapshot!(validate(&text));
}

#[test]
fn a_missing_file_says_how_to_create_one() {
    let directory = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(stackwright().args(["config", "validate"]), directory.path());
    assert_eq!(code, 1);
    insta::assert_snapshot!(stderr, @r"
    error: cannot read the configuration file stackwright.toml
      caused by: No such file or directory (os error 2)
    hint: create stackwright.toml with `stackwright init`, or point --config at an existing file
    ");
}

#[test]
fn json_output_lists_the_problems_for_programs() {
    let (directory, path) = config_file(&with("availability_zones = 3", "availability_zones = 4"));
    let (code, stdout, _) = run(
        stackwright()
            .arg("--config")
            .arg(&path)
            .args(["--output", "json", "config", "validate"]),
        directory.path(),
    );
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["problems"][0]["key"], "network.availability_zones");
}

#[test]
fn a_region_override_is_validated_too() {
    let (directory, path) = config_file(ALL_PRIVATE_PUBLIC_SERVICES);
    let (code, _, stderr) = run(
        stackwright()
            .arg("--config")
            .arg(&path)
            .args(["--region", "mars-1", "config", "validate"]),
        directory.path(),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--region: \"mars-1\" is not an AWS region name"),
        "{stderr}"
    );
}

#[test]
fn the_json_schema_describes_every_section() {
    let directory = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run(stackwright().args(["config", "schema"]), directory.path());
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    insta::assert_json_snapshot!(schema);
}

#[test]
fn a_bad_command_line_exits_with_the_usage_code() {
    let directory = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(stackwright().arg("--frobnicate"), directory.path());
    assert_eq!(code, 64);
    assert!(
        stderr.contains("unexpected argument '--frobnicate'"),
        "{stderr}"
    );
}

/// Runs `config validate` in an empty directory with the given environment and arguments.
fn validate_from_environment(environment: &[(&str, &str)]) -> String {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let mut command = stackwright();
    command.envs(environment.iter().copied());
    let (code, stdout, stderr) = run(command.args(["config", "validate"]), directory.path());
    format!("exit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}")
}

#[test]
fn the_configuration_can_come_from_stackwright_config_text() {
    insta::assert_snapshot!(validate_from_environment(&[("STACKWRIGHT_CONFIG_TEXT", ALL_PRIVATE_PUBLIC_SERVICES)]), @r"
    exit: 0
    --- stdout
    STACKWRIGHT_CONFIG_TEXT is valid: instance acme-dev in us-east-1, all-private mode over 3 availability zones, stacks acme-dev-bootstrap, acme-dev-network, acme-dev-data, acme-dev-platform
    --- stderr
    ");
}

#[test]
fn mistakes_in_stackwright_config_text_name_the_variable() {
    let broken = ALL_PRIVATE_PUBLIC_SERVICES.replacen("[network]", "[network", 1);
    insta::assert_snapshot!(validate_from_environment(&[("STACKWRIGHT_CONFIG_TEXT", &broken)]), @r"
    exit: 1
    --- stdout
    --- stderr
    error: STACKWRIGHT_CONFIG_TEXT is not valid TOML (line 7): unclosed table, expected `]`
    hint: fix the TOML syntax on that line; `stackwright config schema` shows the expected shape
    ");
    let invalid = with("mode = \"all-private\"", "mode = \"everywhere\"");
    insta::assert_snapshot!(validate_from_environment(&[("STACKWRIGHT_CONFIG_TEXT", &invalid)]), @r#"
    exit: 1
    --- stdout
    --- stderr
    error: STACKWRIGHT_CONFIG_TEXT is invalid: network.mode: "everywhere" is not one of the allowed values
    hint: network.mode: use one of `public`, `private`, `all-private`
    "#);
}

#[test]
fn config_on_the_command_line_wins_over_stackwright_config_text() {
    let (directory, path) = config_file(ALL_PRIVATE_PUBLIC_SERVICES);
    let (code, stdout, stderr) = run(
        stackwright()
            .env("STACKWRIGHT_CONFIG_TEXT", "not = [toml")
            .arg("--config")
            .arg(&path)
            .args(["config", "validate"]),
        directory.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("[TEMP]/stackwright.toml is valid"),
        "{stdout}"
    );
}

#[test]
fn stackwright_config_and_stackwright_config_text_together_are_refused() {
    insta::assert_snapshot!(validate_from_environment(&[("STACKWRIGHT_CONFIG", "stackwright.toml"), ("STACKWRIGHT_CONFIG_TEXT", ALL_PRIVATE_PUBLIC_SERVICES)]), @"
    exit: 1
    --- stdout
    --- stderr
    error: both STACKWRIGHT_CONFIG (stackwright.toml) and STACKWRIGHT_CONFIG_TEXT name a configuration
    hint: unset one of them, or give --config PATH, which takes precedence over both
    ");
}
