//! One module per command: each resolves its settings, calls one operation
//! (or a read of the core), and renders its events and result through the printer. `session`
//! wires the AWS adapters and the terminal into an operation's session.

mod answers;
mod bars;
mod config;
mod gate;
mod init;
mod install;
mod mirror;
mod network;
mod preflight;
mod release;
mod render;
mod runtime;
mod session;
mod state;
mod status;
mod story;
mod teardown;
mod terminal;
mod upgrade;
mod wizard;

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
        Command::Plan(args) => install::plan(&settings, &printer, &args),
        Command::Install(args) => install::install(&settings, &printer, &args),
        Command::Status => status::status(&settings, &printer),
        Command::Teardown(args) => teardown::teardown(&settings, &printer, &args),
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
