//! One module per command: each turns resolved settings into calls on the core and prints the
//! result through the printer.

mod config;
mod deploy;
mod init;
mod mirror;
mod network;
mod preflight;
mod release;
mod render;
mod reporter;
mod state;
mod story;
mod upgrade;

use crate::cli::{Cli, Command, ConfigCommand, NetworkCommand, ReleaseCommand};
use crate::error::{Error, ExitStatus};
use crate::settings::GlobalSettings;

/// Runs a parsed command line and reports its outcome; errors are printed here, once.
pub fn run(cli: Cli) -> ExitStatus {
    let settings = GlobalSettings::from_args(&cli.global);
    let printer = settings.printer();
    let result: Result<ExitStatus, Error> = match cli.command {
        Command::Init(args) => init::init(&settings, &printer, &args),
        Command::Preflight(args) => preflight::preflight(&settings, &printer, &args),
        Command::Config {
            command: ConfigCommand::Schema,
        } => config::schema(&printer),
        Command::Config {
            command: ConfigCommand::Validate,
        } => config::validate(&settings, &printer),
        Command::Render(args) => render::render(&settings, &printer, &args),
        Command::Network {
            command: NetworkCommand::Requirements(args),
        } => network::requirements(&settings, &printer, &args),
        Command::Plan(args) => deploy::plan(&settings, &printer, &args),
        Command::Install(args) => deploy::install(&settings, &printer, &args),
        Command::Status => deploy::status(&settings, &printer),
        Command::Teardown(args) => deploy::teardown(&settings, &printer, &args),
        Command::Unlock(args) => state::unlock(&settings, &printer, &args),
        Command::History => state::history(&settings, &printer),
        Command::Upgrade(args) => upgrade::upgrade(&settings, &printer, &args),
        Command::Release {
            command: ReleaseCommand::Verify(args),
        } => release::verify(&settings, &printer, &args),
        Command::Mirror(args) => mirror::mirror(&settings, &printer, &args),
    };
    match result {
        Ok(status) => status,
        Err(error) => {
            printer.error(&error);
            error.exit_status()
        }
    }
}
