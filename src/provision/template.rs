//! Where CloudFormation reads a stack's template from: inline when it fits, otherwise from the
//! bootstrap stack's artifact bucket. Both planning and applying need it.

use std::collections::BTreeMap;

use super::{ProvisionError, StackDeployer, StackState, TemplateSource};
use crate::render::RenderedStack;

/// The output of the bootstrap stack naming the bucket large templates are uploaded to.
pub const ARTIFACT_BUCKET_OUTPUT: &str = "ArtifactBucketName";

/// The template inline when it fits, otherwise uploaded to the artifact bucket.
pub(crate) async fn template_source<D: StackDeployer>(
    deployer: &D,
    stack: &RenderedStack,
    states: &BTreeMap<String, Option<StackState>>,
    region: &str,
) -> Result<TemplateSource, ProvisionError> {
    if stack.fits_inline() {
        return Ok(TemplateSource::Body(stack.body.clone()));
    }
    let bucket = states
        .values()
        .flatten()
        .find_map(|state| state.outputs.get(ARTIFACT_BUCKET_OUTPUT))
        .ok_or_else(|| ProvisionError::NoArtifactBucket {
            stack: stack.stack_name.clone(),
            size: stack.body.len(),
        })?;
    let digest = crate::render::content_digest(&stack.body);
    let key = format!("templates/{}/{digest}.yaml", stack.stack_name);
    let url = deployer
        .upload_template(bucket, &key, &stack.body)
        .await
        .map_err(|source| ProvisionError::deploy(&stack.stack_name, source))?;
    tracing::info!(stack = %stack.stack_name, %url, region, "template uploaded");
    Ok(TemplateSource::Url(url))
}
