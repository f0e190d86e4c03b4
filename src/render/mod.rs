//! Rendering: the embedded handlebars templates in `templates/`, the typed context they render
//! from, and the checks every rendered template passes before anyone sees it.

mod context;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use handlebars::{Handlebars, handlebars_helper};
use serde::Serialize;

pub use context::{PUBLIC_SERVICE_PATHS, TemplateContext, pascal_case};
pub use validate::{TemplateResource, TemplateSummary, ValidationError, validate};

use crate::config::ConfigFile;
use crate::release::ReleaseManifest;
use crate::stacks::StackKind;

/// CloudFormation's limit for a template passed inline in the request body.
pub const INLINE_TEMPLATE_LIMIT: usize = 51_200;
/// CloudFormation's limit for a template passed by S3 URL.
pub const S3_TEMPLATE_LIMIT: usize = 1_000_000;

/// A template embedded in the binary, named by the stack it belongs to.
fn template_source(kind: StackKind) -> &'static str {
    match kind {
        StackKind::Bootstrap => include_str!("../../templates/bootstrap.yaml"),
        StackKind::Network => include_str!("../../templates/network.yaml"),
        StackKind::Data => include_str!("../../templates/data.yaml"),
        StackKind::Identity => include_str!("../../templates/identity.yaml"),
        StackKind::Platform => include_str!("../../templates/platform.yaml"),
        StackKind::Updater => include_str!("../../templates/updater.yaml"),
    }
}

handlebars_helper!(json: |value: Json| serde_json::to_string(value).unwrap_or_default());

static REGISTRY: LazyLock<Result<Handlebars<'static>, (StackKind, String)>> = LazyLock::new(|| {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    registry.register_helper("json", Box::new(json));
    for kind in StackKind::ALL {
        registry
            .register_template_string(kind.as_str(), template_source(kind))
            .map_err(|error| (kind, error.to_string()))?;
    }
    Ok(registry)
});

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the embedded {stack} template does not compile: {message}")]
    Compile { stack: StackKind, message: String },
    #[error("rendering the {stack} template failed")]
    Render {
        stack: StackKind,
        #[source]
        source: Box<handlebars::RenderError>,
    },
    #[error("the rendered {stack} template is not valid")]
    Invalid {
        stack: StackKind,
        #[source]
        source: ValidationError,
    },
    #[error("the {stack} stack takes parameter {parameter}, but none of the stacks it depends on ({}) outputs it", depends_on.iter().map(|kind| kind.as_str()).collect::<Vec<_>>().join(", "))]
    UnsourcedParameter {
        stack: StackKind,
        parameter: String,
        depends_on: Vec<StackKind>,
    },
}

/// Where a stack parameter's value comes from when the stack is deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParameterSource {
    /// The parameter's name in the template.
    pub parameter: String,
    /// The stack whose output supplies it.
    pub stack: String,
    /// The output's name.
    pub output: String,
}

/// One stack's template, rendered and validated.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedStack {
    pub kind: StackKind,
    pub stack_name: String,
    /// Stacks that must exist before this one.
    pub depends_on: Vec<String>,
    #[serde(skip)]
    pub body: String,
    pub parameters: Vec<ParameterSource>,
    pub tags: BTreeMap<String, String>,
    pub summary: TemplateSummary,
}

impl RenderedStack {
    /// Whether the template fits in the request itself or must go through S3.
    pub fn fits_inline(&self) -> bool {
        self.body.len() <= INLINE_TEMPLATE_LIMIT
    }
}

/// Renders and validates every stack the configuration deploys with the release, dependencies
/// first (the updater only when the release names an installer image).
pub fn render_all(
    config: &ConfigFile,
    release: &ReleaseManifest,
) -> Result<Vec<RenderedStack>, RenderError> {
    let context = TemplateContext::new(config, release);
    let kinds = StackKind::for_release(config, release);
    let mut rendered: Vec<RenderedStack> = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let body = render_template(kind, &context)?;
        let summary = validate::validate(&body).map_err(|source| RenderError::Invalid {
            stack: kind,
            source,
        })?;
        let parameters = summary
            .required_parameters
            .iter()
            .map(|parameter| {
                kind.depends_on()
                    .iter()
                    .filter_map(|dependency| {
                        rendered.iter().find(|stack| stack.kind == *dependency)
                    })
                    .find(|dependency| dependency.summary.outputs.contains(parameter))
                    .map(|dependency| ParameterSource {
                        parameter: parameter.clone(),
                        stack: dependency.stack_name.clone(),
                        output: parameter.clone(),
                    })
                    .ok_or_else(|| RenderError::UnsourcedParameter {
                        stack: kind,
                        parameter: parameter.clone(),
                        depends_on: kind.depends_on().to_vec(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        rendered.push(RenderedStack {
            kind,
            stack_name: kind.stack_name(&config.instance.name),
            depends_on: kind
                .depends_on()
                .iter()
                .map(|dependency| dependency.stack_name(&config.instance.name))
                .collect(),
            body,
            parameters,
            tags: stack_tags(config, kind),
            summary,
        });
    }
    Ok(rendered)
}

/// Renders one template without validating it.
pub fn render_template(kind: StackKind, context: &TemplateContext) -> Result<String, RenderError> {
    let registry = REGISTRY
        .as_ref()
        .map_err(|(stack, message)| RenderError::Compile {
            stack: *stack,
            message: message.clone(),
        })?;
    registry
        .render(kind.as_str(), context)
        .map_err(|source| RenderError::Render {
            stack: kind,
            source: Box::new(source),
        })
}

/// The sha256 of a template, in hex: names uploaded templates by content.
pub fn content_digest(body: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(body.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Tags on every stack: the configured ones plus the installer's own, which CloudFormation
/// copies to the resources that support them.
fn stack_tags(config: &ConfigFile, kind: StackKind) -> BTreeMap<String, String> {
    let mut tags = config.instance.tags.clone();
    tags.insert("stackwright:instance".into(), config.instance.name.clone());
    tags.insert("stackwright:stack".into(), kind.as_str().into());
    tags
}
