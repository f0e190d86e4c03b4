//! `stackwright init`: the wizard driven through a pseudo-terminal, the same file from flags
//! alone, and the refusals without a terminal.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use crate::common::{REPOSITORY, run, stackwright};

/// Runs the binary with stdin on /dev/null (no terminal), the test's environment only, and
/// temporary paths filtered out of its output.
fn without_terminal(
    directory: &Path,
    variables: &[(&str, &str)],
    args: &[OsString],
) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stackwright"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("HOME", std::env::temp_dir())
        .envs(variables.iter().copied())
        .args(args)
        .current_dir(directory)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
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

fn arguments(config: &Path, rest: &[&str]) -> Vec<OsString> {
    let mut args = vec![OsString::from("--config"), config.as_os_str().to_owned()];
    args.extend(rest.iter().map(OsString::from));
    args
}

/// The file both the wizard and the flags below must write, byte for byte.
const GOLDEN: &str = "tests/golden/init-all-private.toml";
const TOKEN: &str = "swreg-7Qe9-test-token";

fn golden() -> String {
    std::fs::read_to_string(Path::new(REPOSITORY).join(GOLDEN)).expect("the golden file exists")
}

/// Mode bits of a file.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("the file exists")
        .permissions()
        .mode()
        & 0o777
}

/// Waits for `text` on the terminal, keeping everything shown before it in `screen`.
fn expect(session: &mut rexpect::session::PtySession, screen: &mut String, text: &str) {
    match session.exp_string(text) {
        Ok(before) => {
            screen.push_str(&before);
            screen.push_str(text);
        }
        Err(error) => panic!("the wizard never showed {text:?} ({error}); it showed:\n{screen}"),
    }
}

#[test]
fn init_wizard_in_a_terminal_rejects_wrong_answers_and_writes_the_golden_file() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let config = directory.path().join("stackwright.toml");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_stackwright"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", directory.path())
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(&config)
        .arg("init")
        .current_dir(directory.path());
    let mut session = rexpect::session::spawn_command(command, Some(20_000))
        .expect("the wizard starts in a pseudo-terminal");
    let mut screen = String::new();
    let answer = |session: &mut rexpect::session::PtySession,
                  screen: &mut String,
                  prompt: &str,
                  typed: &str| {
        expect(session, screen, prompt);
        session.send_line(typed).expect("the answer is typed");
    };
    answer(&mut session, &mut screen, "Instance name", "acme-dev");
    answer(&mut session, &mut screen, "Domain", "cde.acme.example");
    answer(&mut session, &mut screen, "Region", "eu-central-1");
    answer(&mut session, &mut screen, "Certificate ARN", "");
    expect(&mut session, &mut screen, "3 NAT gateways");
    answer(&mut session, &mut screen, "Networking mode", "hybrid");
    // Refused with the reason `config validate` gives, and asked again.
    expect(
        &mut session,
        &mut screen,
        "\"hybrid\" is not one of the allowed values; use one of `public`, `private`, `all-private`",
    );
    answer(&mut session, &mut screen, "Networking mode", "all-private");
    answer(&mut session, &mut screen, "VPC range", "10.60.0.0/26");
    expect(
        &mut session,
        &mut screen,
        "10.60.0.0/26 is too small for the instance's subnets; use a prefix from /16 to /22",
    );
    answer(&mut session, &mut screen, "VPC range", "10.60.0.0/16");
    answer(&mut session, &mut screen, "Availability zones", "2");
    answer(&mut session, &mut screen, "Public services endpoint?", "y");
    answer(
        &mut session,
        &mut screen,
        "Control plane URL",
        "http://control.example.com",
    );
    expect(
        &mut session,
        &mut screen,
        "uses plain HTTP, which would send the instance's token in clear",
    );
    answer(
        &mut session,
        &mut screen,
        "Control plane URL",
        "https://control.example.com",
    );
    expect(&mut session, &mut screen, "never into it");
    answer(&mut session, &mut screen, "Registration token", TOKEN);
    answer(&mut session, &mut screen, "Release channel", "");
    answer(
        &mut session,
        &mut screen,
        "Maintenance window (UTC)",
        "sat,sun 02:00-05:00",
    );
    expect(&mut session, &mut screen, "stackwright.toml will hold:");
    answer(&mut session, &mut screen, "Write ", "");
    match session.exp_eof() {
        Ok(rest) => screen.push_str(&rest),
        Err(error) => panic!("the wizard did not end ({error}); it showed:\n{screen}"),
    }
    assert!(
        screen.contains("Wrote ")
            && screen.contains("instance acme-dev in eu-central-1, all-private mode"),
        "{screen}"
    );
    assert!(
        !screen.contains(TOKEN),
        "the token was shown on the terminal:\n{screen}"
    );

    let written = std::fs::read_to_string(&config).expect("the configuration is written");
    assert_eq!(written, golden(), "the wizard's file differs from {GOLDEN}");
    let token_file = directory.path().join("stackwright.token");
    assert_eq!(
        std::fs::read_to_string(&token_file).expect("the token file is written"),
        format!("{TOKEN}\n")
    );
    assert_eq!(mode(&token_file), 0o600);
    // What init writes is what `config validate` accepts.
    let (code, stdout, stderr) = run(
        stackwright()
            .arg("--config")
            .arg(&config)
            .args(["config", "validate"]),
        directory.path(),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// `init --yes` with every answer as a flag.
fn init_with_flags(directory: &Path) -> (i32, String, String) {
    without_terminal(
        directory,
        &[("STACKWRIGHT_REGISTRATION_TOKEN", TOKEN)],
        &arguments(
            &directory.join("stackwright.toml"),
            &[
                "--region",
                "eu-central-1",
                "init",
                "--yes",
                "--name",
                "acme-dev",
                "--domain",
                "cde.acme.example",
                "--mode",
                "all-private",
                "--vpc-cidr",
                "10.60.0.0/16",
                "--availability-zones",
                "2",
                "--public-services",
                "--control-plane-url",
                "https://control.example.com",
                "--channel",
                "stable",
                "--maintenance-window",
                "sat,sun 02:00-05:00",
            ],
        ),
    )
}

#[test]
fn init_with_flags_and_yes_writes_the_same_file_without_asking() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (code, stdout, stderr) = init_with_flags(directory.path());
    assert_eq!(code, 0, "{stdout}{stderr}");
    let config = directory.path().join("stackwright.toml");
    assert_eq!(
        std::fs::read_to_string(&config).expect("written"),
        golden(),
        "the file from flags differs from {GOLDEN}"
    );
    let token_file = directory.path().join("stackwright.token");
    assert_eq!(mode(&token_file), 0o600);
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    insta::assert_snapshot!(format!("exit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}"), @r"
    exit: 0
    --- stdout
    Wrote [TEMP]/stackwright.toml: instance acme-dev in eu-central-1, all-private mode.
    The registration token is in [TEMP]/stackwright.token (readable by you only), not in the configuration; keep it out of version control.
    Next: `stackwright --config [TEMP]/stackwright.toml preflight` checks the account and network, then `stackwright --config [TEMP]/stackwright.toml install --release <manifest>` installs.
    --- stderr
    ");
    // Again, with --yes: the file is replaced, and says so.
    let (code, stdout, _) = init_with_flags(directory.path());
    assert_eq!(code, 0);
    assert!(stdout.contains("stackwright.toml (replaced)"), "{stdout}");
}

#[test]
fn init_with_a_bad_flag_names_the_flag_and_writes_nothing() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (code, stdout, stderr) = without_terminal(
        directory.path(),
        &[],
        &arguments(
            &directory.path().join("stackwright.toml"),
            &[
                "init",
                "--yes",
                "--domain",
                "cde.acme.example",
                "--control-plane-url",
                "https://control.example.com",
                "--vpc-cidr",
                "10.40.0.0/26",
                "--maintenance-window",
                "someday",
            ],
        ),
    );
    insta::assert_snapshot!(format!(
        "exit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}"
    ));
    assert!(!directory.path().join("stackwright.toml").exists());
}

#[test]
fn init_without_a_terminal_refuses_with_a_hint() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (code, stdout, stderr) = without_terminal(
        directory.path(),
        &[],
        &arguments(&directory.path().join("stackwright.toml"), &["init"]),
    );
    insta::assert_snapshot!(format!(
        "exit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}"
    ));
    assert!(!directory.path().join("stackwright.toml").exists());
}

#[test]
fn init_then_install_without_a_terminal_refuses_with_a_hint() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (code, _, _) = init_with_flags(directory.path());
    assert_eq!(code, 0);
    let (code, stdout, stderr) = without_terminal(
        directory.path(),
        &[],
        &arguments(
            &directory.path().join("stackwright.toml"),
            &["install", "--release", "1.0.0"],
        ),
    );
    insta::assert_snapshot!(format!("exit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}"), @r"
    exit: 1
    --- stdout
    --- stderr
    error: install needs a confirmation, and there is no terminal to ask on
    hint: run it from a terminal, or pass --yes to go ahead without asking
    ");
}
