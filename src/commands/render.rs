//! `stackwright render`: every stack's template and parameters, written only once all of them
//! have rendered and passed validation.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::runtime::block_on;
use crate::cli::RenderArgs;
use crate::error::{Error, ExitStatus};
use crate::operation;
use crate::output::{Printer, table};
use crate::render::{self, RenderedStack};
use crate::settings::GlobalSettings;

#[derive(Serialize)]
struct WrittenStack<'a> {
    #[serde(flatten)]
    stack: &'a RenderedStack,
    template_file: PathBuf,
    parameters_file: PathBuf,
    /// `inline` when the template fits in the request, `s3` when it is uploaded first.
    delivery: &'static str,
}

pub fn render(
    settings: &GlobalSettings,
    printer: &Printer,
    args: &RenderArgs,
) -> Result<ExitStatus, Error> {
    let config = settings.load_config()?;
    let choice = args.release.named()?;
    let release = block_on(operation::load_release(
        &settings.release_settings(),
        Some(&config),
        &choice,
    ))?
    .manifest;
    let stacks = render::render_all(&config, &release)?;

    std::fs::create_dir_all(&args.out).map_err(|source| Error::Write {
        path: args.out.clone(),
        source,
    })?;
    let mut written = Vec::with_capacity(stacks.len());
    for stack in &stacks {
        let template_file = args.out.join(format!("{}.template.yaml", stack.kind));
        let parameters_file = args.out.join(format!("{}.parameters.json", stack.kind));
        write_file(&template_file, stack.body.as_bytes())?;
        let parameters = serde_json::to_vec_pretty(stack).expect("a rendered stack serializes");
        write_file(&parameters_file, &[parameters.as_slice(), b"\n"].concat())?;
        written.push(WrittenStack {
            stack,
            template_file,
            parameters_file,
            delivery: if stack.fits_inline() { "inline" } else { "s3" },
        });
    }

    if printer.json_mode() {
        printer.data(
            &serde_json::json!({ "release": release.version.to_string(), "stacks": written }),
        );
    } else {
        printer.result(table(
            ["STACK", "RESOURCES", "BYTES", "DELIVERY", "TEMPLATE"],
            written.iter().map(|stack| {
                [
                    stack.stack.stack_name.clone(),
                    stack.stack.summary.resources.to_string(),
                    stack.stack.summary.size.to_string(),
                    stack.delivery.to_owned(),
                    stack.template_file.display().to_string(),
                ]
            }),
        ));
        printer.status(format!(
            "Rendered {} stacks for release {} in {} mode into {}",
            written.len(),
            release.version,
            config.network.mode,
            args.out.display()
        ));
    }
    Ok(ExitStatus::Success)
}

/// Writes through a temporary file and a rename, so a reader never sees half a template.
fn write_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|source| Error::Write {
            path: path.to_owned(),
            source,
        })
}
