//! The installer's HTTPS against the real local components: the reference control plane serving
//! TLS with the local environment's certificate, trusted through `STACKWRIGHT_CA_BUNDLE` and
//! refused, with the certificate problem and the fix named, without it; and the server's own
//! refusal to speak plain HTTP unless asked, and then only on loopback.

use crate::common::control_plane::Server;
use crate::common::{run, stackwright, tls};

#[test]
fn a_release_is_verified_over_https_from_the_control_plane_with_the_local_ca() {
    let server = Server::start(None);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let repository = format!("{}repository/", server.url);
    let directory = tempfile::tempdir().expect("a temporary directory");

    let (code, stdout, stderr) = run(
        stackwright()
            .env("STACKWRIGHT_CA_BUNDLE", &tls::files().ca)
            .args(["release", "verify", "--repository", &repository]),
        directory.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "verified release 1.1.0 (stable channel) from {repository}\n"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("available  1.0.0, 1.1.0"), "{stdout}");
}

#[test]
fn a_client_without_the_local_ca_is_refused_naming_the_certificate_problem_and_the_fix() {
    let server = Server::start(None);
    let repository = format!("{}repository/", server.url);
    let directory = tempfile::tempdir().expect("a temporary directory");

    // The release repository.
    let (code, stdout, stderr) = run(
        stackwright().args(["release", "verify", "--repository", &repository]),
        directory.path(),
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("error: cannot read the release repository {repository}: the server's certificate is signed by a certificate authority this machine does not trust (unknown issuer)")),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: if the server is meant to present this certificate (a TLS-inspecting proxy's, a private CA's, or the local environment's), put that CA's certificate in a PEM file and set STACKWRIGHT_CA_BUNDLE to its path"),
        "{stderr}"
    );

    // The control plane's API, through the operator's command (the installer's own client).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stackwright-control-plane"))
        .args(["releases", "--url", &server.url, "--admin-token-file"])
        .arg(server.admin_token_file())
        .env_clear()
        .env("NO_COLOR", "1")
        .output()
        .expect("the operator command runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: the control plane at {} cannot be trusted for the",
            server.url
        )) && stderr.contains("unknown issuer"),
        "{stderr}"
    );
    assert!(
        stderr.contains("set STACKWRIGHT_CA_BUNDLE to its path"),
        "{stderr}"
    );

    // A bundle that is not a certificate is named as such, not silently ignored.
    let bogus = directory.path().join("bundle.pem");
    std::fs::write(&bogus, "not a certificate\n").expect("the file is written");
    let (code, _, stderr) = run(
        stackwright().env("STACKWRIGHT_CA_BUNDLE", &bogus).args([
            "release",
            "verify",
            "--repository",
            &repository,
        ]),
        directory.path(),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the CA bundle [TEMP]/bundle.pem cannot be used: it holds no certificate"),
        "{stderr}"
    );
}

#[test]
fn the_control_plane_serves_plain_http_only_when_asked_and_only_on_loopback() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let serve = |arguments: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_stackwright-control-plane"))
            .arg("serve")
            .args(arguments)
            .arg("--database")
            .arg(directory.path().join("control-plane.sqlite"))
            .arg("--releases")
            .arg(std::path::Path::new(crate::common::REPOSITORY).join("manifests"))
            .env_clear()
            .env("NO_COLOR", "1")
            .output()
            .expect("the server runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // Neither is refused after binding: nothing ever listens on anything but loopback here.
    let (code, stderr) = serve(&["--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error: the server needs a certificate and key to serve HTTPS (--tls-cert and --tls-key)")
            && stderr.contains("hint: pass --tls-cert and --tls-key"),
        "{stderr}"
    );
    let (code, stderr) = serve(&["--listen", "0.0.0.0:0", "--plain-http"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: plain HTTP is served only on a loopback address, and 0.0.0.0:0 is not one"
        ),
        "{stderr}"
    );
}
