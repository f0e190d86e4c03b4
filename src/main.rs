//! The `stackwright` binary: parse, set up logging, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use stackwright::cli::{Cli, Command, OutputFormat};
use stackwright::error::ExitStatus;

fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitStatus::Usage.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    // The scheduled job logs one JSON object per line, its errors and logs included.
    if matches!(&cli.command, Command::Upgrade(args) if args.unattended) {
        cli.global.output = OutputFormat::Json;
    }
    init_logging(cli.global.verbose, cli.global.output);
    stackwright::commands::run(cli).into()
}

/// Logs go to stderr: warnings by default, more with each -v, any filter through
/// `STACKWRIGHT_LOG`, and one JSON object per line with `--output json`.
fn init_logging(verbose: u8, output: OutputFormat) {
    // The platform's certificate verifier logs every refusal as an error of its own; the
    // installer's error already names the certificate problem and the fix, once.
    let default = match verbose {
        0 => "warn,rustls_platform_verifier=off",
        1 => "stackwright=info,warn,rustls_platform_verifier=off",
        2 => "stackwright=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STACKWRIGHT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match output {
        OutputFormat::Json => builder.json().init(),
        OutputFormat::Text => builder.with_target(false).without_time().init(),
    }
}
