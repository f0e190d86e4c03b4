//! Checks on a rendered template: it parses, has the shape CloudFormation accepts, every
//! reference names something that exists, stateful resources say what happens to them on
//! delete, and it fits CloudFormation's size limits.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use super::S3_TEMPLATE_LIMIT;

const TOP_LEVEL_KEYS: &[&str] = &[
    "AWSTemplateFormatVersion",
    "Description",
    "Metadata",
    "Parameters",
    "Rules",
    "Mappings",
    "Conditions",
    "Transform",
    "Resources",
    "Outputs",
];

const RESOURCE_KEYS: &[&str] = &[
    "Type",
    "Properties",
    "DependsOn",
    "Condition",
    "DeletionPolicy",
    "UpdateReplacePolicy",
    "Metadata",
    "CreationPolicy",
    "UpdatePolicy",
];

const PSEUDO_PARAMETERS: &[&str] = &[
    "AWS::AccountId",
    "AWS::NotificationARNs",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
];

/// Resource types whose loss loses data: each must state its `DeletionPolicy`.
const STATEFUL_TYPES: &[&str] = &[
    "AWS::S3::Bucket",
    "AWS::DynamoDB::Table",
    "AWS::ECR::Repository",
    "AWS::KMS::Key",
    "AWS::Logs::LogGroup",
];

/// CloudFormation's per-template quotas.
const MAX_RESOURCES: usize = 500;
const MAX_PARAMETERS: usize = 200;
const MAX_OUTPUTS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("it is not valid YAML")]
    Syntax(#[source] serde_yaml_ng::Error),
    #[error("{0}")]
    Shape(String),
    #[error("{location} refers to {target}, which is not defined in the template")]
    DanglingReference { location: String, target: String },
    #[error("{resource} ({resource_type}) holds data but does not state its DeletionPolicy")]
    MissingDeletionPolicy {
        resource: String,
        resource_type: String,
    },
    #[error(
        "it is {size} bytes, over CloudFormation's limit of {S3_TEMPLATE_LIMIT} bytes even through S3"
    )]
    TooLarge { size: usize },
}

/// One resource a template declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateResource {
    pub logical_id: String,
    pub resource_type: String,
    /// `Retain` keeps the resource when the stack is deleted.
    pub deletion_policy: Option<String>,
}

/// What a valid template declares, for wiring stacks together and for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateSummary {
    pub size: usize,
    pub resources: usize,
    /// Each resource's logical ID, type and deletion policy, in template order.
    #[serde(skip)]
    pub resource_list: Vec<TemplateResource>,
    /// Parameters without a default: each must be supplied from another stack's output.
    pub required_parameters: Vec<String>,
    pub outputs: Vec<String>,
}

pub fn validate(body: &str) -> Result<TemplateSummary, ValidationError> {
    if body.len() > S3_TEMPLATE_LIMIT {
        return Err(ValidationError::TooLarge { size: body.len() });
    }
    let template: Value = serde_yaml_ng::from_str(body).map_err(ValidationError::Syntax)?;
    let root = template
        .as_object()
        .ok_or_else(|| shape("the template is not a mapping"))?;
    if let Some(key) = root
        .keys()
        .find(|key| !TOP_LEVEL_KEYS.contains(&key.as_str()))
    {
        return Err(shape(format!("unknown top-level section {key}")));
    }
    let section = |name: &str| -> Result<serde_json::Map<String, Value>, ValidationError> {
        match root.get(name) {
            None | Some(Value::Null) => Ok(serde_json::Map::new()),
            Some(Value::Object(map)) => Ok(map.clone()),
            Some(_) => Err(shape(format!("section {name} is not a mapping"))),
        }
    };
    let resources = section("Resources")?;
    let parameters = section("Parameters")?;
    let outputs = section("Outputs")?;
    let conditions = section("Conditions")?;
    if resources.is_empty() {
        return Err(shape("the template declares no resources"));
    }
    if resources.len() > MAX_RESOURCES
        || parameters.len() > MAX_PARAMETERS
        || outputs.len() > MAX_OUTPUTS
    {
        return Err(shape(format!(
            "{} resources, {} parameters and {} outputs exceed CloudFormation's quotas ({MAX_RESOURCES}, {MAX_PARAMETERS}, {MAX_OUTPUTS})",
            resources.len(),
            parameters.len(),
            outputs.len()
        )));
    }

    let mut referable: BTreeSet<&str> = PSEUDO_PARAMETERS.iter().copied().collect();
    referable.extend(parameters.keys().map(String::as_str));
    referable.extend(resources.keys().map(String::as_str));

    for (name, resource) in &resources {
        let resource = resource
            .as_object()
            .ok_or_else(|| shape(format!("resource {name} is not a mapping")))?;
        if let Some(key) = resource
            .keys()
            .find(|key| !RESOURCE_KEYS.contains(&key.as_str()))
        {
            return Err(shape(format!(
                "resource {name} has the unknown attribute {key}"
            )));
        }
        let resource_type = resource
            .get("Type")
            .and_then(Value::as_str)
            .filter(|kind| kind.starts_with("AWS::") || kind.starts_with("Custom::"))
            .ok_or_else(|| shape(format!("resource {name} has no valid Type")))?;
        if STATEFUL_TYPES.contains(&resource_type) && !resource.contains_key("DeletionPolicy") {
            return Err(ValidationError::MissingDeletionPolicy {
                resource: name.clone(),
                resource_type: resource_type.to_owned(),
            });
        }
        let depends_on = match resource.get("DependsOn") {
            None => Vec::new(),
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(shape(format!("resource {name} has a malformed DependsOn"))),
        };
        for target in depends_on {
            if !resources.contains_key(target) {
                return Err(ValidationError::DanglingReference {
                    location: format!("Resources.{name}.DependsOn"),
                    target: target.to_owned(),
                });
            }
        }
        if let Some(condition) = resource.get("Condition").and_then(Value::as_str)
            && !conditions.contains_key(condition)
        {
            return Err(ValidationError::DanglingReference {
                location: format!("Resources.{name}.Condition"),
                target: condition.to_owned(),
            });
        }
        check_references(
            resource.get("Properties").unwrap_or(&Value::Null),
            &format!("Resources.{name}"),
            &referable,
            &resources,
            &conditions,
        )?;
    }
    for (name, output) in &outputs {
        check_references(
            output,
            &format!("Outputs.{name}"),
            &referable,
            &resources,
            &conditions,
        )?;
    }
    for (name, condition) in &conditions {
        check_references(
            condition,
            &format!("Conditions.{name}"),
            &referable,
            &resources,
            &conditions,
        )?;
    }

    Ok(TemplateSummary {
        size: body.len(),
        resources: resources.len(),
        resource_list: resources
            .iter()
            .map(|(name, resource)| TemplateResource {
                logical_id: name.clone(),
                resource_type: resource["Type"].as_str().unwrap_or_default().to_owned(),
                deletion_policy: resource
                    .get("DeletionPolicy")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
            .collect(),
        required_parameters: parameters
            .iter()
            .filter(|(_, parameter)| parameter.get("Default").is_none())
            .map(|(name, _)| name.clone())
            .collect(),
        outputs: outputs.keys().cloned().collect(),
    })
}

fn shape(message: impl Into<String>) -> ValidationError {
    ValidationError::Shape(message.into())
}

/// Walks a value and checks every `Ref`, `Fn::GetAtt`, `Fn::Sub` variable and condition name.
fn check_references(
    value: &Value,
    location: &str,
    referable: &BTreeSet<&str>,
    resources: &serde_json::Map<String, Value>,
    conditions: &serde_json::Map<String, Value>,
) -> Result<(), ValidationError> {
    let dangling = |target: &str| ValidationError::DanglingReference {
        location: location.to_owned(),
        target: target.to_owned(),
    };
    match value {
        Value::Object(map) if map.len() == 1 => {
            let (function, argument) = map.iter().next().expect("one entry");
            match function.as_str() {
                "Ref" => {
                    let target = argument
                        .as_str()
                        .ok_or_else(|| shape(format!("{location}: Ref takes a name")))?;
                    if !referable.contains(target) {
                        return Err(dangling(target));
                    }
                    return Ok(());
                }
                "Fn::GetAtt" => {
                    let target = match argument {
                        Value::Array(parts) => parts.first().and_then(Value::as_str),
                        Value::String(dotted) => dotted.split('.').next(),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        shape(format!(
                            "{location}: Fn::GetAtt takes [resource, attribute]"
                        ))
                    })?;
                    if !resources.contains_key(target) {
                        return Err(dangling(target));
                    }
                    return Ok(());
                }
                "Fn::Sub" => {
                    let (text, variables) = match argument {
                        Value::String(text) => (text.as_str(), None),
                        Value::Array(parts) => (
                            parts.first().and_then(Value::as_str).unwrap_or_default(),
                            parts.get(1).and_then(Value::as_object),
                        ),
                        _ => {
                            return Err(shape(format!(
                                "{location}: Fn::Sub takes a string or [string, variables]"
                            )));
                        }
                    };
                    for variable in sub_variables(text) {
                        let base = variable.split('.').next().unwrap_or(variable);
                        let known = variables
                            .is_some_and(|variables| variables.contains_key(variable))
                            || referable.contains(variable)
                            || (variable.contains('.') && resources.contains_key(base));
                        if !known {
                            return Err(dangling(variable));
                        }
                    }
                    if let Some(Value::Object(variables)) =
                        argument.as_array().and_then(|parts| parts.get(1))
                    {
                        for value in variables.values() {
                            check_references(value, location, referable, resources, conditions)?;
                        }
                    }
                    return Ok(());
                }
                "Fn::If" | "Condition" => {
                    let name = match argument {
                        Value::Array(parts) => parts.first().and_then(Value::as_str),
                        Value::String(name) => Some(name.as_str()),
                        _ => None,
                    };
                    if let Some(name) = name
                        && !conditions.contains_key(name)
                    {
                        return Err(dangling(name));
                    }
                }
                _ => {}
            }
            check_references(argument, location, referable, resources, conditions)
        }
        Value::Object(map) => map.values().try_for_each(|value| {
            check_references(value, location, referable, resources, conditions)
        }),
        Value::Array(items) => items.iter().try_for_each(|value| {
            check_references(value, location, referable, resources, conditions)
        }),
        _ => Ok(()),
    }
}

/// The `${Name}` variables of an `Fn::Sub` string, skipping `${!Literal}` escapes.
fn sub_variables(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find('}') else { break };
        let name = &rest[..end];
        if !name.starts_with('!') {
            found.push(name.trim());
        }
        rest = &rest[end + 1..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(resources: &str) -> String {
        format!(
            "AWSTemplateFormatVersion: '2010-09-09'\nParameters:\n  KeyArn:\n    Type: String\nResources:\n{resources}"
        )
    }

    #[test]
    fn a_reference_to_an_undefined_resource_is_caught() {
        let body = template(
            "  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      KmsMasterKeyId:\n        Ref: KeyArm\n",
        );
        let error = validate(&body).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Resources.Topic refers to KeyArm, which is not defined in the template"
        );
    }

    #[test]
    fn sub_variables_are_checked_and_escapes_skipped() {
        let body = template(
            "  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName:\n        Fn::Sub: '${AWS::StackName}-${!Literal}-${Missing}'\n",
        );
        assert!(
            matches!(validate(&body), Err(ValidationError::DanglingReference { target, .. }) if target == "Missing")
        );
    }

    #[test]
    fn a_bucket_without_deletion_policy_is_refused() {
        let body = template("  Bucket:\n    Type: AWS::S3::Bucket\n");
        assert!(matches!(
            validate(&body),
            Err(ValidationError::MissingDeletionPolicy { .. })
        ));
    }

    #[test]
    fn parameters_without_defaults_are_required() {
        let body = template(
            "  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      KmsMasterKeyId:\n        Ref: KeyArn\n",
        );
        assert_eq!(validate(&body).unwrap().required_parameters, ["KeyArn"]);
    }
}
