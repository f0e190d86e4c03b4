//! The reference control plane, started as the real binary on a free port of 127.0.0.1 per test:
//! registration, heartbeats and reports as the operator's command reads them back, rollouts in
//! waves, urgent and withdrawn releases, every kind of refused token, token refresh, the signed
//! repository it serves, and a fuzzing run from the OpenAPI document that must find no 500.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stackwright::control_plane::api::{
    INSTANCE_PRINCIPAL, InstanceRecord, TOKEN_AUDIENCE, TokenClaims,
};
use stackwright::control_plane::{
    ControlPlane, ControlPlaneError, Heartbeat, HttpControlPlane, InstanceCredentials, LockStatus,
    OperationKind, OperationReport, Outcome, RegisterRequest, Registration, SecretToken,
    StackStatus, UpdateQuery,
};

use crate::common::REPOSITORY;
use crate::common::control_plane::Server;

/// What these tests ask of a server beyond starting it and running operator commands.
trait Fleet {
    fn client(&self) -> HttpControlPlane;
    fn registration_token(&self, organization: &str) -> SecretToken;
    async fn register(&self, organization: &str) -> Registration;
    fn records(&self) -> Vec<InstanceRecord>;
    fn signing_key(&self) -> Vec<u8>;
}

impl Fleet for Server {
    fn client(&self) -> HttpControlPlane {
        HttpControlPlane::for_url(&self.url).expect("a client")
    }

    fn registration_token(&self, organization: &str) -> SecretToken {
        let stdout = self.operator(&["registration-token", "--organization", organization]);
        SecretToken::new(stdout.trim())
    }

    async fn register(&self, organization: &str) -> Registration {
        let token = self.registration_token(organization);
        self.client()
            .register(&RegisterRequest {
                registration_token: token,
                installer_version: Some("0.1.0".parse().unwrap()),
            })
            .await
            .expect("registration succeeds")
    }

    fn records(&self) -> Vec<InstanceRecord> {
        let stdout = self.operator(&["instances", "--output", "json"]);
        serde_json::from_str(&stdout).expect("instances as JSON")
    }

    /// The server's own signing key, as an operator with the server's files holds it.
    fn signing_key(&self) -> Vec<u8> {
        std::fs::read(self.directory().join("control-plane-signing-key.pk8"))
            .expect("the signing key beside the database")
    }
}

fn stable() -> UpdateQuery {
    UpdateQuery {
        channel: "stable".into(),
        installed_version: Some("1.0.0".parse().unwrap()),
    }
}

async fn offered(server: &Server, credentials: &InstanceCredentials) -> Vec<(String, bool)> {
    server
        .client()
        .check_update(credentials, &stable())
        .await
        .expect("the update check succeeds")
        .releases
        .into_iter()
        .map(|release| (release.version.to_string(), release.urgent))
        .collect()
}

fn refusal(error: ControlPlaneError) -> String {
    match error {
        ControlPlaneError::Unauthorized { code, .. } => code,
        other => panic!("expected a 401, got {other}"),
    }
}

#[tokio::test]
async fn control_plane_a_registration_token_registers_one_instance() {
    let server = Server::start(None);
    let token = server.registration_token("acme");
    let request = RegisterRequest {
        registration_token: token,
        installer_version: None,
    };
    let registration = server.client().register(&request).await.unwrap();
    assert_eq!(registration.organization_id, "acme");
    assert!(uuid::Uuid::parse_str(&registration.instance_id).is_ok());

    let again = server.client().register(&request).await.unwrap_err();
    assert!(!again.needs_registration());
    assert_eq!(refusal(again), "registration_token_used");

    let unknown = server
        .client()
        .register(&RegisterRequest {
            registration_token: SecretToken::new("swr_not-one-we-issued"),
            installer_version: None,
        })
        .await
        .unwrap_err();
    let message = unknown.to_string();
    assert_eq!(refusal(unknown), "registration_token_unknown");
    assert!(!message.contains("swr_not-one-we-issued"), "{message}");

    // The server holds one instance, of that organization.
    let instances = server.records();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].instance_id, registration.instance_id);
    assert_eq!(instances[0].organization_id, "acme");
}

#[tokio::test]
async fn control_plane_heartbeats_and_reports_are_recorded() {
    let server = Server::start(None);
    let registration = server.register("acme").await;
    let credentials = registration.credentials();
    let client = server.client();
    let heartbeat = Heartbeat {
        installed_version: Some("1.0.0".parse().unwrap()),
        installer_version: "0.1.0".parse().unwrap(),
        channel: "stable".into(),
        stacks: vec![StackStatus {
            name: "acme-dev-platform".into(),
            status: "UPDATE_COMPLETE".into(),
            change_set_status: Some("CREATE_COMPLETE".into()),
        }],
        lock: Some(LockStatus {
            holder: "host-1 pid 42".into(),
            operation: "upgrade".into(),
            since: "2026-11-22T10:00:00Z".parse().unwrap(),
        }),
        last_operation: None,
    };
    client.heartbeat(&credentials, &heartbeat).await.unwrap();
    let report = OperationReport {
        operation_id: uuid::Uuid::new_v4().to_string(),
        kind: OperationKind::Upgrade,
        from_version: Some("1.0.0".parse().unwrap()),
        to_version: "1.1.0".parse().unwrap(),
        outcome: Outcome::RolledBack,
        detail: "platform: ECS service did not stabilize".into(),
    };
    let receipt = client.report(&credentials, &report).await.unwrap();
    assert!(!receipt.duplicate);
    // Sent again (a retry): recorded once.
    assert!(
        client
            .report(&credentials, &report)
            .await
            .unwrap()
            .duplicate
    );

    let instances = server.records();
    let instance = &instances[0];
    let last = instance.last_heartbeat.as_ref().expect("a heartbeat");
    assert_eq!(last.heartbeat, heartbeat);
    assert_eq!(
        instance.last_report.as_ref().expect("a report").report,
        report
    );

    let table = server.operator(&["instances"]);
    assert!(
        table.contains("upgrade 1.0.0 -> 1.1.0 rolled_back"),
        "{table}"
    );
    assert!(table.contains(&registration.instance_id), "{table}");
}

#[tokio::test]
async fn control_plane_rollouts_reach_the_waves_below_their_percentage() {
    let server = Server::start(None);
    let mut fleet = Vec::new();
    for _ in 0..6 {
        fleet.push(server.register("acme").await.credentials());
    }
    let buckets: Vec<u8> = {
        let instances = server.records();
        fleet
            .iter()
            .map(|credentials| {
                instances
                    .iter()
                    .find(|instance| instance.instance_id == credentials.instance_id)
                    .expect("registered")
                    .wave_bucket
            })
            .collect()
    };
    // Before a rollout, and at 0 %, nothing is offered.
    for credentials in &fleet {
        assert!(offered(&server, credentials).await.is_empty());
    }
    server.operator(&["rollout", "1.1.0", "--channel", "stable", "--percent", "0"]);
    for credentials in &fleet {
        assert!(offered(&server, credentials).await.is_empty());
    }
    // At each instance's own bucket it is just outside; one more and it is in.
    let mut percents: Vec<u8> = buckets
        .iter()
        .flat_map(|bucket| [*bucket, bucket + 1])
        .collect();
    percents.push(100);
    for percent in percents {
        let stdout = server.operator(&[
            "rollout",
            "1.1.0",
            "--channel",
            "stable",
            "--percent",
            &percent.to_string(),
        ]);
        assert!(
            stdout.contains("release 1.1.0 (stable channel)"),
            "{stdout}"
        );
        for (credentials, bucket) in fleet.iter().zip(&buckets) {
            let expected = if *bucket < percent {
                vec![("1.1.0".to_owned(), false)]
            } else {
                vec![]
            };
            assert_eq!(
                offered(&server, credentials).await,
                expected,
                "bucket {bucket} at {percent} %"
            );
        }
    }
}

#[tokio::test]
async fn control_plane_urgent_releases_and_withdrawals() {
    let server = Server::start(None);
    let credentials = server.register("acme").await.credentials();
    let stdout = server.operator(&["rollout", "1.1.0", "--channel", "stable", "--urgent"]);
    assert_eq!(
        stdout.trim(),
        "release 1.1.0 (stable channel): rolled out to 100% of instances, urgent"
    );
    assert_eq!(
        offered(&server, &credentials).await,
        [("1.1.0".to_owned(), true)]
    );
    // Newer than what runs only, on the instance's channel only.
    let offer = server
        .client()
        .check_update(
            &credentials,
            &UpdateQuery {
                channel: "stable".into(),
                installed_version: Some("1.1.0".parse().unwrap()),
            },
        )
        .await
        .unwrap();
    assert!(offer.releases.is_empty());
    let offer = server
        .client()
        .check_update(
            &credentials,
            &UpdateQuery {
                channel: "beta".into(),
                installed_version: None,
            },
        )
        .await
        .unwrap();
    assert!(offer.releases.is_empty());

    let stdout = server.operator(&["withdraw", "1.1.0"]);
    assert_eq!(stdout.trim(), "release 1.1.0 (stable channel): withdrawn");
    assert!(offered(&server, &credentials).await.is_empty());
    let releases = server.operator(&["releases"]);
    assert!(
        releases.contains("release 1.1.0 (stable channel): withdrawn"),
        "{releases}"
    );

    // A release on another channel, or one the server does not have, is refused.
    let (code, _, stderr) = server.run_operator(&["rollout", "1.1.0", "--channel", "beta"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("published on the stable channel"),
        "{stderr}"
    );
    let (code, _, stderr) = server.run_operator(&["rollout", "9.9.9", "--channel", "stable"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no release 9.9.9"), "{stderr}");
}

fn sign(claims: &TokenClaims, pkcs8: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(pkcs8),
    )
    .expect("signed")
}

fn claims_for(server: &Server, registration: &Registration) -> TokenClaims {
    let now = jiff::Timestamp::now().as_second();
    TokenClaims {
        iss: server.url.trim_end_matches('/').to_owned(),
        aud: TOKEN_AUDIENCE.into(),
        sub: format!("{INSTANCE_PRINCIPAL}:{}", registration.instance_id),
        principal_type: INSTANCE_PRINCIPAL.into(),
        instance_id: registration.instance_id.clone(),
        organization_id: registration.organization_id.clone(),
        iat: now,
        exp: now + 600,
        jti: "test".into(),
    }
}

#[tokio::test]
async fn control_plane_refuses_forged_foreign_and_misdirected_tokens() {
    let server = Server::start(None);
    let first = server.register("acme").await;
    let second = server.register("acme").await;
    let client = server.client();
    let with = |token: String| InstanceCredentials {
        instance_id: first.instance_id.clone(),
        token: SecretToken::new(token),
    };
    let check = |credentials: InstanceCredentials| {
        let client = client.clone();
        async move {
            let error = client
                .check_update(&credentials, &stable())
                .await
                .unwrap_err();
            assert!(error.needs_registration());
            let message = format!("{error} {error:?}");
            assert!(
                !message.contains(credentials.token.expose())
                    || credentials.token.expose().is_empty(),
                "the token leaks into the error: {message}"
            );
            refusal(error)
        }
    };

    // The server's own claims, signed with the server's key: accepted (the control).
    let own_key = server.signing_key();
    let genuine = sign(&claims_for(&server, &first), &own_key);
    assert!(client.check_update(&with(genuine), &stable()).await.is_ok());

    // Signed by another key.
    let other_key =
        aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .unwrap();
    let forged = sign(&claims_for(&server, &first), other_key.as_ref());
    assert_eq!(check(with(forged)).await, "token_signature_invalid");

    // Unsigned (`alg: none`).
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned = format!(
        "{}.{}.",
        base64::Engine::encode(&engine, br#"{"alg":"none","typ":"JWT"}"#),
        base64::Engine::encode(
            &engine,
            serde_json::to_vec(&claims_for(&server, &first)).unwrap()
        )
    );
    assert_eq!(check(with(unsigned)).await, "token_signature_invalid");

    // A genuine token with its payload changed (another instance's ID) and the signature kept.
    let mut parts: Vec<String> = first.token.expose().split('.').map(str::to_owned).collect();
    let mut tampered = claims_for(&server, &first);
    tampered.organization_id = "someone-else".into();
    parts[1] = base64::Engine::encode(&engine, serde_json::to_vec(&tampered).unwrap());
    assert_eq!(
        check(with(parts.join("."))).await,
        "token_signature_invalid"
    );

    // Signed by the server's key, but for another audience, or by another issuer.
    let mut audience = claims_for(&server, &first);
    audience.aud = "some-other-service".into();
    assert_eq!(
        check(with(sign(&audience, &own_key))).await,
        "token_wrong_audience"
    );
    let mut issuer = claims_for(&server, &first);
    issuer.iss = "https://control.example.com".into();
    assert_eq!(
        check(with(sign(&issuer, &own_key))).await,
        "token_wrong_issuer"
    );

    // Expired by its claims.
    let mut expired = claims_for(&server, &first);
    expired.exp = expired.iat - 1;
    assert_eq!(check(with(sign(&expired, &own_key))).await, "token_expired");

    // The second instance's genuine token on the first instance's path.
    assert_eq!(
        check(InstanceCredentials {
            instance_id: first.instance_id.clone(),
            token: second.token.clone(),
        })
        .await,
        "token_other_instance"
    );
    let error = client
        .heartbeat(
            &InstanceCredentials {
                instance_id: first.instance_id.clone(),
                token: second.token.clone(),
            },
            &Heartbeat {
                installed_version: None,
                installer_version: "0.1.0".parse().unwrap(),
                channel: "stable".into(),
                stacks: vec![],
                lock: None,
                last_operation: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refusal(error), "token_other_instance");

    // Not a JWT at all, and no token.
    assert_eq!(check(with("garbage".into())).await, "token_malformed");
    let response = crate::common::tls::http_client()
        .get(format!(
            "{}v1/instances/{}/updates?channel=stable",
            server.url, first.instance_id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "token_missing");
    assert!(body["reason"].as_str().unwrap().contains("Authorization"));

    // Nothing was recorded for the first instance by any of these.
    assert!(
        server
            .records()
            .iter()
            .all(|instance| instance.last_heartbeat.is_none())
    );
}

#[tokio::test]
async fn control_plane_refresh_works_until_the_token_expires() {
    let server = Server::start_with(None, &["--token-lifetime", "2"]);
    let registration = server.register("acme").await;
    let client = server.client();
    let credentials = registration.credentials();

    let refreshed = client.refresh(&credentials).await.unwrap();
    assert_ne!(refreshed.token, credentials.token);
    let renewed = InstanceCredentials {
        instance_id: registration.instance_id.clone(),
        token: refreshed.token,
    };
    assert!(client.check_update(&renewed, &stable()).await.is_ok());

    // Past the first token's expiry (2 s; `exp` has a resolution of one second).
    let wait = registration.expires_at.as_second() - jiff::Timestamp::now().as_second() + 1;
    tokio::time::sleep(Duration::from_secs(u64::try_from(wait.max(0)).unwrap_or(0))).await;

    let error = client
        .check_update(&credentials, &stable())
        .await
        .unwrap_err();
    let hint = error.hint().unwrap_or_default();
    assert_eq!(refusal(error), "token_expired");
    assert!(hint.contains("the instance registers anew"), "{hint}");
    let error = client.refresh(&credentials).await.unwrap_err();
    assert_eq!(refusal(error), "token_expired");
}

#[tokio::test]
async fn control_plane_serves_the_signed_release_repository() {
    let server = Server::start(None);
    let credentials = server.register("acme").await.credentials();
    server.operator(&["rollout", "1.1.0", "--channel", "stable"]);
    let offer = server
        .client()
        .check_update(&credentials, &stable())
        .await
        .unwrap();
    assert_eq!(offer.repository, format!("{}repository/", server.url));
    let release = &offer.releases[0];
    assert_eq!(release.target, "releases/1.1.0.json");

    // The installer verifies the offered release itself, from the repository the offer names.
    let source: stackwright::release::RepositorySource = offer.repository.parse().unwrap();
    let root = std::fs::read(Path::new(REPOSITORY).join("manifests/dev-keys/root.json")).unwrap();
    let verified = stackwright::release::verify(
        &source,
        stackwright::release::Trust {
            installed: Some(&"1.0.0".parse().unwrap()),
            ..stackwright::release::Trust::root(&root)
        },
        jiff::Timestamp::now(),
        &stackwright::release::ReleaseSelection::Version(release.version.clone()),
    )
    .await
    .expect("the offered release verifies");
    assert_eq!(verified.manifest.version, release.version);

    // Nothing outside the repository is served.
    for path in [
        "repository/../Cargo.toml",
        "repository/%2e%2e/Cargo.toml",
        "repository/",
    ] {
        let response = crate::common::tls::http_client()
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn control_plane_answers_bad_input_with_400_and_a_reason() {
    let server = Server::start(None);
    let registration = server.register("acme").await;
    let http = crate::common::tls::http_client();
    let base = &server.url;
    let id = &registration.instance_id;
    let token = registration.token.expose();
    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        ("POST", "v1/register".into(), Some("{"), 400),
        (
            "POST",
            "v1/register".into(),
            Some(r#"{"registration_token": 5}"#),
            400,
        ),
        (
            "POST",
            "v1/register".into(),
            Some(r#"{"registration_token": ""}"#),
            401,
        ),
        (
            "POST",
            format!("v1/instances/{id}/heartbeats"),
            Some(r#"{"channel":"stable"}"#),
            400,
        ),
        (
            "POST",
            format!("v1/instances/{id}/heartbeats"),
            Some(r#"{"channel":"STABLE!","installer_version":"0.1.0"}"#),
            400,
        ),
        (
            "POST",
            format!("v1/instances/{id}/reports"),
            Some(
                r#"{"operation_id":"x","kind":"upgrade","to_version":"1.1.0","outcome":"succeeded"}"#,
            ),
            400,
        ),
        (
            "POST",
            format!("v1/instances/{id}/reports"),
            Some(
                r#"{"operation_id":"0b6c6f0e-1111-4222-8333-444455556666","kind":"upgrade","to_version":"one","outcome":"succeeded"}"#,
            ),
            400,
        ),
        (
            "GET",
            format!("v1/instances/{id}/updates?channel=stable&installed_version=not-a-version"),
            None,
            400,
        ),
        ("GET", format!("v1/instances/{id}/updates"), None, 400),
        ("GET", "v1/nothing-here".into(), None, 404),
        ("DELETE", "v1/register".into(), None, 405),
    ];
    for (method, path, body, status) in cases {
        let mut request = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            status,
            "{method} {path} {body:?}"
        );
        let error: serde_json::Value = response.json().await.unwrap();
        assert!(
            error["error"].is_string() && error["reason"].is_string(),
            "{error}"
        );
    }
}

/// Schemathesis generates requests from `api/control-plane.openapi.yaml`, valid and invalid, and
/// checks the answers: for the installer's calls (with a registered instance's token and its ID
/// in the paths), every check it has (no 5xx, documented status codes and content types,
/// responses that match their schemas, invalid requests refused, valid ones accepted); for the
/// admin calls (with the admin credential), no 5xx. `scripts/dev-tools.sh` installs it.
#[test]
fn control_plane_fuzzed_from_its_openapi_document_never_answers_500() {
    let schemathesis = Path::new(REPOSITORY).join(".venv-fuzz/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run scripts/dev-tools.sh (scripts/test.sh does)",
        schemathesis.display()
    );
    let server = Server::start(None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let registration = runtime.block_on(server.register("acme"));
    server.operator(&["rollout", "1.1.0", "--channel", "stable", "--percent", "50"]);
    // Paths name the registered instance and a file the repository has.
    std::fs::write(
        server.directory().join("schemathesis.toml"),
        format!(
            "[parameters]\n\"path.instance_id\" = \"{}\"\n\"path.path\" = \"metadata/timestamp.json\"\n",
            registration.instance_id
        ),
    )
    .unwrap();
    let admin = std::fs::read_to_string(server.admin_token_file()).unwrap();
    let passes = [
        ("all", registration.token.expose().to_owned(), "instance"),
        ("not_a_server_error", admin.trim().to_owned(), "admin"),
    ];
    for (checks, token, tag) in passes {
        let output = Command::new(&schemathesis)
            .current_dir(server.directory())
            .args([
                "run",
                "--checks",
                checks,
                "--max-examples",
                "40",
                "--seed",
                "1",
            ])
            .args(["--include-tag", tag, "--url", &server.url])
            .arg("--tls-verify")
            .arg(&crate::common::tls::files().ca)
            .arg("--header")
            .arg(format!("Authorization: Bearer {token}"))
            .arg(Path::new(REPOSITORY).join("api/control-plane.openapi.yaml"))
            .env("NO_COLOR", "1")
            .env("NO_PROXY", "127.0.0.1")
            .output()
            .expect("schemathesis runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stdout.contains(&token) && !stderr.contains(&token),
            "schemathesis printed the credential"
        );
        assert!(
            output.status.success(),
            "schemathesis found problems in the {tag} calls:\n{stdout}\n{stderr}"
        );
        let summary = stdout
            .lines()
            .find(|line| line.contains(" generated, "))
            .unwrap_or_default();
        println!("{tag} calls ({checks}): {}", summary.trim());
    }
}
