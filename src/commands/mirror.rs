//! `stackwright mirror`: a release's images into the instance's ECR repositories, or a list of
//! images between two registries; progress as bars, lines or JSON, then the summary.

use super::runtime::block_on;
use super::session::AwsImages;
use super::terminal::Terminal;
use crate::aws::Aws;
use crate::cli::MirrorArgs;
use crate::error::{Error, ExitStatus};
use crate::mirror::{CopyOptions, ImageList, MirrorSettings, RegistryOverrides, RegistryTarget};
use crate::operation::{self, ReleaseChoice};
use crate::output::{Printer, count};
use crate::provision::ProvisionError;
use crate::settings::GlobalSettings;

pub fn mirror(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &MirrorArgs,
) -> Result<ExitStatus, Error> {
    let overrides = RegistryOverrides::from_env()?;
    let options = CopyOptions {
        jobs: usize::from(args.jobs),
        ..CopyOptions::default()
    };
    let terminal = Terminal::copying(printer);
    let summary = match (&args.images, args.release.choice()?) {
        (Some(images), _) => {
            let list = ImageList::read(images)?;
            let from: RegistryTarget = args.from.as_deref().unwrap_or_default().parse()?;
            let to: RegistryTarget = args.to.as_deref().unwrap_or_default().parse()?;
            let mirror_settings = MirrorSettings {
                instance: String::new(),
                region: settings.region.clone().unwrap_or_default(),
                profile: settings.profile.clone(),
                options,
                plain_http: args.plain_http,
                overrides,
            };
            printer.status(format_args!(
                "Copying {} from {} to {}",
                count(list.images.len(), "image", "images"),
                from.host,
                args.to.as_deref().unwrap_or_default()
            ));
            block_on(operation::mirror_list::<Aws>(
                &mirror_settings,
                &from,
                &to,
                &list,
                &terminal,
            ))
        }
        (None, ReleaseChoice::Offered) => {
            return Err(Error::Usage {
                message: "mirror needs --release, or --images with --from and --to".into(),
                hint: "pass --release VERSION, or --images FILE --from HOST --to HOST".into(),
            });
        }
        (None, release) => {
            let config = settings.load_config()?;
            block_on(async {
                let manifest =
                    operation::load_release(&settings.release_settings(), Some(&config), &release)
                        .await?
                        .manifest;
                let aws = Aws::connect(&config.instance.region, settings.profile.as_deref())
                    .await
                    .map_err(|source| {
                        Error::Provision(ProvisionError::deploy("connect", source))
                    })?;
                printer.status(format_args!(
                    "Mirroring the {} images of release {} into the repositories of {}",
                    manifest.components.len(),
                    manifest.version,
                    config.instance.name
                ));
                let images = AwsImages {
                    aws,
                    instance: config.instance.name.clone(),
                    profile: settings.profile.clone(),
                    options,
                    plain_http: args.plain_http,
                };
                operation::mirror_release(&images, &manifest, &terminal).await
            })
        }
    };
    terminal.finish();
    let summary = summary?;
    if printer.json_mode() {
        printer.data(&summary);
    } else {
        printer.result(&summary);
    }
    Ok(ExitStatus::Success)
}
