//! `stackwright network requirements`.

use crate::common::{ALL_PRIVATE_PUBLIC_SERVICES, config_file, run, stackwright};

#[test]
fn the_all_private_allow_list_as_json() {
    let (directory, path) = config_file(ALL_PRIVATE_PUBLIC_SERVICES);
    let (code, stdout, _) = run(
        stackwright().arg("--config").arg(&path).args([
            "--output",
            "json",
            "network",
            "requirements",
        ]),
        directory.path(),
    );
    assert_eq!(code, 0);
    insta::assert_json_snapshot!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap());
}

#[test]
fn the_public_allow_list_as_a_table_without_a_configuration() {
    let directory = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        stackwright().args(["network", "requirements", "--mode", "public"]),
        directory.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(stdout);
}

#[test]
fn without_a_mode_or_configuration_it_asks_for_one() {
    let directory = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(
        stackwright().args(["network", "requirements"]),
        directory.path(),
    );
    assert_eq!(code, 64);
    assert!(
        stderr.contains("hint: pass --mode public, --mode private or --mode all-private"),
        "{stderr}"
    );
}
