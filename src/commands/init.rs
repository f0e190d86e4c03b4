//! `stackwright init`: asks for each answer (or takes it from its flag), checks it as it is
//! typed with the configuration's own rules, shows the result, and writes a commented
//! stackwright.toml, with the registration token in a file of its own beside it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use dialoguer::Confirm;
use dialoguer::theme::ColorfulTheme;
use serde_json::json;

use super::answers::from_flags;
use super::gate::CliGate;
use super::wizard::ask;
use crate::cli::InitArgs;
use crate::config::{CONFIG_TEXT_VARIABLE, ConfigSource};
use crate::error::{Error, ExitStatus};
use crate::init::Answers;
use crate::output::Printer;
use crate::settings::GlobalSettings;

pub fn init(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &InitArgs,
) -> Result<ExitStatus, Error> {
    can_ask_or_write(settings)?;
    let path = settings.config_path.clone();
    let exists = path.exists();
    if exists && !settings.assume_yes {
        let overwrite = Confirm::with_theme(&ColorfulTheme::default())
            .with_prompt(format!("{} exists. Replace it?", path.display()))
            .default(false)
            .wait_for_newline(true)
            .interact()
            .unwrap_or(false);
        if !overwrite {
            return Err(Error::Declined {
                action: format!("replacing {}", path.display()),
            });
        }
    }
    let (answers, token) = if settings.assume_yes {
        from_flags(settings, args)?
    } else {
        ask(settings, args).map_err(|error| Error::Usage {
            message: format!("init stopped: {error}"),
            hint: "run it again on a terminal, or give the answers as flags with --yes".into(),
        })?
    };
    // The file is written only as a whole and only when valid.
    let config = answers.config()?;
    let token_path = token_path(&path, &config.control_plane.registration_token_file);
    if !settings.assume_yes {
        eprintln!();
        eprintln!("stackwright.toml will hold:");
        eprint!("{}", answers.summary());
        let write = Confirm::with_theme(&ColorfulTheme::default())
            .with_prompt(format!("Write {}?", path.display()))
            .default(true)
            .wait_for_newline(true)
            .interact()
            .unwrap_or(false);
        if !write {
            return Err(Error::Declined {
                action: format!("writing {}", path.display()),
            });
        }
    }
    write_file(&path, answers.to_toml().as_bytes(), None)?;
    if let Some(token) = &token {
        write_file(&token_path, format!("{token}\n").as_bytes(), Some(0o600))?;
    }
    print_written(
        printer,
        &path,
        exists,
        &answers,
        token.is_some(),
        &token_path,
    );
    Ok(ExitStatus::Success)
}

/// Refuses where init can neither ask nor write: the configuration comes from a variable, or
/// there is no terminal and no `--yes`.
fn can_ask_or_write(settings: &GlobalSettings) -> Result<(), Error> {
    if matches!(settings.config_source, ConfigSource::Text(_)) {
        return Err(Error::Usage {
            message: format!(
                "init writes a configuration file, but {CONFIG_TEXT_VARIABLE} holds the configuration"
            ),
            hint: format!(
                "unset {CONFIG_TEXT_VARIABLE}, or give --config PATH to name the file to write"
            ),
        });
    }
    let path = &settings.config_path;
    if !settings.assume_yes && !CliGate::interactive() {
        return Err(Error::Usage {
            message: "init asks its questions on a terminal, and there is none".into(),
            hint: format!(
                "give every answer as a flag and --yes, such as `stackwright --config {} init --yes --name acme-dev --domain cde.acme.example --mode private --control-plane-url https://control.example.com`; or write the file yourself from examples/demo.toml (`stackwright config schema` describes every key)",
                path.display()
            ),
        });
    }
    Ok(())
}

/// What was written, and what to run next.
fn print_written(
    printer: &Printer,
    path: &Path,
    exists: bool,
    answers: &Answers,
    token_given: bool,
    token_path: &Path,
) {
    if printer.json_mode() {
        printer.data(&json!({
            "config": path,
            "replaced": exists,
            "registration_token_file": token_given.then_some(token_path),
        }));
        return;
    }
    printer.result(format!(
        "Wrote {}{}: instance {} in {}, {} mode.",
        path.display(),
        if exists { " (replaced)" } else { "" },
        answers.name,
        answers.region,
        answers.mode
    ));
    match token_given {
        true => printer.result(format!(
            "The registration token is in {} (readable by you only), not in the configuration; keep it out of version control.",
            token_path.display()
        )),
        false => printer.result(format!(
            "No registration token was given: put the one the vendor issued into {} (chmod 600) before the first install.",
            token_path.display()
        )),
    }
    printer.result(format!(
        "Next: `stackwright --config {0} preflight` checks the account and network, then `stackwright --config {0} install --release <manifest>` installs.",
        path.display()
    ));
}

/// The token file's path: relative names are beside the configuration file.
fn token_path(config: &Path, token_file: &Path) -> PathBuf {
    if token_file.is_absolute() {
        return token_file.to_owned();
    }
    config
        .parent()
        .map_or_else(|| token_file.to_owned(), |parent| parent.join(token_file))
}

/// Writes a file whole (to a temporary name, then renamed), with `mode` when given.
fn write_file(path: &Path, contents: &[u8], mode: Option<u32>) -> Result<(), Error> {
    let failed = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp-init");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(&temporary).map_err(failed)?;
    #[cfg(unix)]
    if let Some(mode) = mode {
        // The mode given at creation is masked by the umask, and an old file keeps its own.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(failed)?;
    }
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(failed)
}
