//! `stackwright-control-plane`: the reference control plane for development, tests and demos,
//! and the operator's commands that act on a running one. The server is
//! `stackwright::control_plane::server`, the admin calls `stackwright::control_plane::operator`;
//! this file parses, sets up logging and prints.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use semver::Version;
use stackwright::control_plane::api::{
    InstanceRecord, RegistrationTokenRequest, ReleaseStatus, RolloutRequest,
};
use stackwright::control_plane::listener::TlsFiles;
use stackwright::control_plane::operator::{
    ADMIN_TOKEN_FILE_VARIABLE, AdminClient, OperatorError, URL_VARIABLE,
};
use stackwright::control_plane::server::{Server, ServerError, ServerSettings};

/// The reference control plane, and the operator's commands on a running one
#[derive(Debug, Parser)]
#[command(name = "stackwright-control-plane", version, max_term_width = 100)]
struct ControlPlaneArgs {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until Ctrl-C or SIGTERM
    Serve(Box<ServeArgs>),
    /// Offer a release to a percentage of the instances on its channel
    Rollout {
        /// The release's version, as in its manifest
        version: Version,
        /// The channel it is published on
        #[arg(long)]
        channel: String,
        /// Offer it to instances whose wave bucket (0-99) is below this
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
        /// Ask instances to apply it now, even outside their maintenance window
        #[arg(long)]
        urgent: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop offering a release to anyone
    Withdraw {
        version: Version,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create a one-time registration token and print it on stdout
    RegistrationToken {
        /// The organization the instance will belong to (a new one by default)
        #[arg(long)]
        organization: Option<String>,
        /// How long the token stays usable
        #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
        expires_in: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Every registered instance with its wave, last heartbeat and last report
    Instances {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Every release the server knows of, with its rollout
    Releases {
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8470")]
    listen: SocketAddr,
    /// Directory holding releases/*.json and the signed repository in repository/
    #[arg(long, value_name = "DIR", default_value = "manifests")]
    releases: PathBuf,
    /// The SQLite database; the signing key and the admin credential are kept beside it
    #[arg(long, value_name = "FILE")]
    database: PathBuf,
    /// How installers reach this server (default: https://LISTEN, or http://LISTEN with --plain-http)
    #[arg(long, value_name = "URL")]
    public_url: Option<url::Url>,
    /// Where offers say the signed release repository is (default: PUBLIC_URL/repository/, served here)
    #[arg(long, value_name = "URL")]
    repository_url: Option<String>,
    /// PEM file of the server's certificate chain, for HTTPS
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM file of the certificate's private key
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP without TLS (only on a loopback listen address)
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    plain_http: bool,
    /// How long an instance token lives
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    token_lifetime: u64,
    /// Where to write the admin credential (default: admin-token beside the database)
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Keep the repository's timestamp fresh with this timestamp key (PKCS#8 PEM): re-signed
    /// at start and then every half of its lifetime, in place in --releases
    #[arg(long, value_name = "FILE")]
    timestamp_key: Option<PathBuf>,
    /// How long each re-signed timestamp stays valid
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1d",
        requires = "timestamp_key"
    )]
    timestamp_expires: String,
}

/// Where the running server is, for the operator's commands.
#[derive(Debug, Args)]
struct ServerArgs {
    /// The running server's URL
    #[arg(long, env = URL_VARIABLE)]
    url: String,
    /// The file the running server wrote its admin credential to
    #[arg(long, value_name = "FILE", env = ADMIN_TOKEN_FILE_VARIABLE)]
    admin_token_file: PathBuf,
    /// Print results as text for people or JSON for programs
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error(transparent)]
    Signing(#[from] stackwright::release::signing::SigningError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

fn main() -> ExitCode {
    let args = match ControlPlaneArgs::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 64 } else { 0 });
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STACKWRIGHT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("stackwright=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            let mut source = std::error::Error::source(&failure);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            let hint = match &failure {
                Failure::Operator(error) => error.hint(),
                Failure::Server(error) => error.hint(),
                Failure::Signing(_) => Some("--timestamp-key must be the timestamp role's key the repository's root names, and --releases a repository built with stackwright-release build".into()),
                Failure::Runtime(_) => None,
            };
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: ControlPlaneArgs) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::Runtime)?;
    runtime.block_on(async {
        match args.command {
            Command::Serve(serve) => run_server(*serve).await,
            Command::Rollout {
                version,
                channel,
                percent,
                urgent,
                server,
            } => {
                let status = admin(&server)?
                    .rollout(&RolloutRequest {
                        version,
                        channel,
                        percent,
                        urgent,
                    })
                    .await?;
                print_status(server.output, &status);
                Ok(())
            }
            Command::Withdraw { version, server } => {
                let status = admin(&server)?.withdraw(&version).await?;
                print_status(server.output, &status);
                Ok(())
            }
            Command::RegistrationToken {
                organization,
                expires_in,
                server,
            } => {
                let created = admin(&server)?
                    .registration_token(&RegistrationTokenRequest {
                        organization_id: organization,
                        expires_in_seconds: Some(expires_in),
                    })
                    .await?;
                match server.output {
                    Output::Json => print_json(&created),
                    Output::Text => {
                        eprintln!(
                            "registration token for organization {}, usable once until {}:",
                            created.organization_id, created.expires_at
                        );
                        // The one place a token is printed: it is this command's result.
                        println!("{}", created.registration_token.expose());
                    }
                }
                Ok(())
            }
            Command::Instances { server } => {
                let instances = admin(&server)?.instances().await?;
                match server.output {
                    Output::Json => print_json(&instances),
                    Output::Text => print_instances(&instances),
                }
                Ok(())
            }
            Command::Releases { server } => {
                let releases = admin(&server)?.releases().await?;
                match server.output {
                    Output::Json => print_json(&releases),
                    Output::Text => {
                        for status in &releases {
                            println!("{}", describe(status));
                        }
                    }
                }
                Ok(())
            }
        }
    })
}

async fn run_server(args: ServeArgs) -> Result<(), Failure> {
    if let Some(key) = &args.timestamp_key {
        let repository = args.releases.join("repository");
        // The first signing happens before the server answers, so it never serves a stale one.
        let period = stackwright::control_plane::catalog::resign_timestamp(
            &repository,
            key,
            &args.timestamp_expires,
        )
        .await?;
        tokio::spawn(stackwright::control_plane::catalog::keep_timestamp_fresh(
            repository,
            key.clone(),
            args.timestamp_expires.clone(),
            period,
        ));
    }
    let server = Server::bind(ServerSettings {
        listen: args.listen,
        releases: args.releases,
        database: args.database,
        public_url: args.public_url,
        repository_url: args.repository_url,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(certificate, key)| TlsFiles { certificate, key }),
        plain_http: args.plain_http,
        token_lifetime: Duration::from_secs(args.token_lifetime.max(1)),
        admin_token_file: args.admin_token_file,
    })
    .await?;
    // Stdout carries where the server is, so a caller that asked for port 0 can find it.
    println!("listening on {}", server.url());
    tracing::info!(
        url = %server.url(),
        admin_token_file = %server.admin_token_file().display(),
        "control plane ready"
    );
    server.run(shutdown()).await?;
    tracing::info!("control plane stopped");
    Ok(())
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn admin(server: &ServerArgs) -> Result<AdminClient, OperatorError> {
    AdminClient::from_token_file(&server.url, &server.admin_token_file)
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("error: cannot print the result as JSON: {error}"),
    }
}

fn describe(status: &ReleaseStatus) -> String {
    let state = if status.withdrawn {
        "withdrawn".to_owned()
    } else if status.percent == 0 {
        "not rolled out".to_owned()
    } else {
        format!("rolled out to {}% of instances", status.percent)
    };
    let urgent = if status.urgent && !status.withdrawn {
        ", urgent"
    } else {
        ""
    };
    format!(
        "release {} ({} channel): {state}{urgent}",
        status.version, status.channel
    )
}

fn print_status(output: Output, status: &ReleaseStatus) {
    match output {
        Output::Json => print_json(status),
        Output::Text => println!("{}", describe(status)),
    }
}

fn print_instances(instances: &[InstanceRecord]) {
    if instances.is_empty() {
        println!("no instance has registered");
        return;
    }
    let mut rows = Vec::new();
    for instance in instances {
        let runs = instance
            .last_heartbeat
            .as_ref()
            .and_then(|record| record.heartbeat.installed_version.as_ref())
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        let heartbeat = instance.last_heartbeat.as_ref().map_or_else(
            || "never".to_owned(),
            |record| record.received_at.to_string(),
        );
        let report = instance.last_report.as_ref().map_or_else(
            || "none".to_owned(),
            |record| {
                let report = &record.report;
                let from = report
                    .from_version
                    .as_ref()
                    .map_or_else(String::new, |version| format!("{version} -> "));
                format!(
                    "{} {from}{} {} at {}",
                    report.kind.as_str(),
                    report.to_version,
                    report.outcome.as_str(),
                    record.received_at
                )
            },
        );
        rows.push([
            instance.instance_id.clone(),
            instance.organization_id.clone(),
            instance.wave_bucket.to_string(),
            runs,
            heartbeat,
            report,
        ]);
    }
    println!(
        "{}",
        stackwright::output::table(
            [
                "INSTANCE",
                "ORGANIZATION",
                "WAVE",
                "RUNS",
                "LAST HEARTBEAT",
                "LAST REPORT",
            ],
            rows,
        )
    );
}
