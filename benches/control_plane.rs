//! Update checks per second and their latency on the reference control plane, under a
//! simulated fleet on loopback. Prints its figures; run with `cargo bench --bench control_plane`.
//!
//! The server is the real binary (built with the bench profile) on a free port of 127.0.0.1;
//! the fleet is registered through the API with one-time registration tokens, and a release is
//! rolled out to half of it so that the answers mix offers and empty ones. The load generator
//! shares the machine: it runs on one thread, keeps one HTTP/1.1 connection per simulated
//! client, and sends each instance's own token on its own path, rotating through the fleet.
//!
//! The server speaks HTTPS, as a vendor's does, with a certificate for 127.0.0.1 from a CA the
//! benchmark makes for itself (rcgen); each load-generating connection does one TLS handshake
//! and then keeps it alive, so the figures include TLS on every request.
//!
//! Two phases: the first check of every token (its Ed25519 signature verified), then the steady
//! state (tokens remembered once verified) for a fixed time. Settings through the environment:
//! `BENCH_INSTANCES` (2000), `BENCH_CONNECTIONS` (32), `BENCH_SECONDS` (10).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stackwright::control_plane::api::{RegistrationTokenRequest, RolloutRequest};
use stackwright::control_plane::operator::AdminClient;
use stackwright::control_plane::{ControlPlane, HttpControlPlane, RegisterRequest};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TARGET_PER_SECOND: f64 = 10_000.0;
const TARGET_P99: Duration = Duration::from_millis(10);

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|value| *value > 0)
        .unwrap_or(default)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One prepared request: the instance's update check with its token, as bytes on the wire.
struct Check {
    request: Vec<u8>,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: usize,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
    }

    fn print(&mut self, label: &str, elapsed: Duration) -> (f64, Duration) {
        self.latencies.sort_unstable();
        let count = self.latencies.len();
        let at = |fraction: f64| {
            self.latencies
                .get(((count as f64 * fraction).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        let rate = count as f64 / elapsed.as_secs_f64();
        let milliseconds = |duration: Duration| duration.as_secs_f64() * 1000.0;
        println!(
            "  {label:<40} {count:>8} checks in {:>5.2} s = {rate:>8.0}/s   p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   errors {}",
            elapsed.as_secs_f64(),
            milliseconds(at(0.50)),
            milliseconds(at(0.99)),
            milliseconds(self.latencies.last().copied().unwrap_or_default()),
            self.errors
        );
        (rate, at(0.99))
    }
}

/// Reads one HTTP/1.1 response with a Content-Length; returns its status.
async fn read_response(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    buffer: &mut Vec<u8>,
) -> std::io::Result<u16> {
    buffer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
        let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buffer[..end]).map_err(std::io::Error::other)?;
        let status: u16 = head
            .get(9..12)
            .and_then(|status| status.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| std::io::Error::other("no content-length"))?;
        let total = end + 4 + length;
        while buffer.len() < total {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        return Ok(status);
    }
}

/// One client connection working through `checks` (its share of the fleet) until `until`, or
/// once through them when `until` is `None`.
async fn client(
    address: std::net::SocketAddr,
    tls: tokio_rustls::TlsConnector,
    checks: Vec<Check>,
    until: Option<Instant>,
) -> std::io::Result<Tally> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
    let mut stream = tls.connect(name, stream).await?;
    let mut tally = Tally::default();
    let mut buffer = Vec::with_capacity(4096);
    let mut index = 0;
    loop {
        match until {
            Some(until) if Instant::now() >= until => break,
            None if index == checks.len() => break,
            _ => {}
        }
        let check = &checks[index % checks.len()];
        index += 1;
        let started = Instant::now();
        stream.write_all(&check.request).await?;
        let status = read_response(&mut stream, &mut buffer).await?;
        tally.latencies.push(started.elapsed());
        if status != 200 {
            tally.errors += 1;
        }
    }
    Ok(tally)
}

async fn phase(
    address: std::net::SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    shares: &[Vec<(String, String)>],
    until: Option<Instant>,
) -> (Tally, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for share in shares {
        let checks = share
            .iter()
            .map(|(instance_id, token)| Check {
                request: format!(
                    "GET /v1/instances/{instance_id}/updates?channel=stable&installed_version=1.0.0 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\r\n"
                )
                .into_bytes(),
            })
            .collect();
        tasks.push(tokio::spawn(client(address, tls.clone(), checks, until)));
    }
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok(Ok(part)) => tally.merge(part),
            Ok(Err(error)) => {
                eprintln!("a client connection failed: {error}");
                tally.errors += 1;
            }
            Err(error) => {
                eprintln!("a client task failed: {error}");
                tally.errors += 1;
            }
        }
    }
    (tally, started.elapsed())
}

/// A CA and a certificate for 127.0.0.1 it signed, as PEM files in `directory`: the CA's, the
/// server's certificate and its key.
fn certificates(directory: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_certificate = ca_params.self_signed(&ca_key).expect("the CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().expect("a server key");
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server parameters")
        .signed_by(&server_key, &issuer)
        .expect("the server certificate");
    let paths = (
        directory.join("ca.pem"),
        directory.join("server.pem"),
        directory.join("server.key"),
    );
    std::fs::write(&paths.0, ca_certificate.pem()).expect("the CA is written");
    std::fs::write(&paths.1, server.pem()).expect("the certificate is written");
    std::fs::write(&paths.2, server_key.serialize_pem()).expect("the key is written");
    paths
}

fn main() {
    let instances = setting("BENCH_INSTANCES", 2000);
    let connections = setting("BENCH_CONNECTIONS", 32).min(instances);
    let seconds = setting("BENCH_SECONDS", 10);
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (ca, certificate, key) = certificates(directory.path());
    // The library's clients (registration, rollouts) trust the CA as the installer would.
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var("STACKWRIGHT_CA_BUNDLE", &ca) };
    let mut child = Command::new(env!("CARGO_BIN_EXE_stackwright-control-plane"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&certificate)
        .arg("--tls-key")
        .arg(&key)
        .arg("--releases")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests"))
        .arg("--database")
        .arg(directory.path().join("control-plane.sqlite"))
        .env("STACKWRIGHT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the control plane starts");
    let stdout = child.stdout.take().expect("its stdout");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the control plane says where it listens");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("a URL")
        .to_owned();
    let address: std::net::SocketAddr = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .expect("a socket address");

    // The load generator gets one thread; the server's two workers share the other core with it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let admin =
            AdminClient::from_token_file(&url, &directory.path().join("admin-token")).unwrap();
        let client = HttpControlPlane::for_url(&url).unwrap();
        let registering = Instant::now();
        let mut fleet = Vec::with_capacity(instances);
        for _ in 0..instances {
            let token = admin
                .registration_token(&RegistrationTokenRequest {
                    organization_id: Some("bench".into()),
                    expires_in_seconds: None,
                })
                .await
                .expect("a registration token");
            let registration = client
                .register(&RegisterRequest {
                    registration_token: token.registration_token,
                    installer_version: None,
                })
                .await
                .expect("registered");
            fleet.push((registration.instance_id, registration.token.expose().to_owned()));
        }
        let registered_in = registering.elapsed();
        for (version, percent) in [("1.0.0", 100), ("1.1.0", 50)] {
            admin
                .rollout(&RolloutRequest {
                    version: version.parse().unwrap(),
                    channel: "stable".into(),
                    percent,
                    urgent: false,
                })
                .await
                .expect("rolled out");
        }
        let mut shares = vec![Vec::new(); connections];
        for (index, member) in fleet.into_iter().enumerate() {
            shares[index % connections].push(member);
        }
        println!(
            "control plane update checks: {instances} instances (registered in {:.1} s), {connections} keep-alive connections, loopback, 2 cores shared with the load generator",
            registered_in.as_secs_f64()
        );

        let tls = tokio_rustls::TlsConnector::from(
            stackwright::tls::ExtraRoots::load(&ca)
                .expect("the CA loads")
                .rustls_config()
                .expect("a TLS client configuration"),
        );
        let (mut first, elapsed) = phase(address, &tls, &shares, None).await;
        first.print("first check of each token (verified)", elapsed);
        let until = Instant::now() + Duration::from_secs(seconds.try_into().unwrap_or(10));
        let (mut steady, elapsed) = phase(address, &tls, &shares, Some(until)).await;
        let (rate, p99) = steady.print("steady state (verified tokens remembered)", elapsed);
        let met = rate >= TARGET_PER_SECOND && p99 < TARGET_P99 && steady.errors == 0;
        println!(
            "  target: >= {TARGET_PER_SECOND:.0} checks/s at p99 < {} ms, no errors: {}",
            TARGET_P99.as_millis(),
            if met { "met" } else { "NOT met" }
        );
    });
    drop(server);
}
