//! Validation of a CustomResourceDefinition's schemas on create and update, as kube-apiserver
//! (apiextensions-apiserver `ValidateCustomResourceDefinition`) does before it stores a CRD:
//!
//! 1. the schema is structural (every node has a `type`, arrays have `items`, root metadata only
//!    names `name`/`generateName`, ...);
//! 2. only then, every `default` is checked: it must be pruned (no unknown fields), valid against
//!    its own node's schema, and pass the `x-kubernetes-validations` rules of that node and below,
//!    evaluated on the default value itself (nested defaults are not applied first);
//! 3. schema rules that hold for any node (`additionalProperties` excludes `properties`, ...);
//! 4. only when all of the above hold, the static CEL cost of every rule ([`crate::cel_cost`]).
//!
//! A refused CRD is a 422 `Invalid` on `CustomResourceDefinition.apiextensions.k8s.io "<name>"`
//! with one cause per problem, under the API server's field paths
//! (`spec.validation.openAPIV3Schema.properties[spec].default`).

use serde_json::{Value, json};

use crate::cel_cost;
use crate::error::ApiError;
use crate::schema;

/// Key under which a default value is validated inside a wrapper object; replaced by the
/// default's real field path in the messages.
const DEFAULT_KEY: &str = "__crd_default_value__";

/// Every problem the API server would report for `crd`, as `(field path, message)` where the
/// message is the cause's text (`Forbidden: ...`, `Invalid value: ...`). Empty when valid.
pub fn validate_crd(crd: &Value) -> Vec<(String, String)> {
    validate(crd, None)
}

/// The 422 the API server answers a create (`old` = `None`) or update of `crd` with, if any.
pub fn check(crd: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let errors = validate(crd, old);
    if errors.is_empty() {
        return Ok(());
    }
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let reasons: Vec<&'static str> = errors.iter().map(|(_, m)| reason_of(m)).collect();
    let mut err = ApiError::invalid(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        name,
        errors,
    );
    if let Some(causes) = err
        .details
        .as_mut()
        .and_then(|d| d.get_mut("causes"))
        .and_then(Value::as_array_mut)
    {
        for (cause, reason) in causes.iter_mut().zip(reasons) {
            cause["reason"] = json!(reason);
        }
    }
    Err(err)
}

/// The `StatusCause` reason of a field error, from its message's type prefix.
fn reason_of(message: &str) -> &'static str {
    for (prefix, reason) in [
        ("Forbidden", "FieldValueForbidden"),
        ("Required value", "FieldValueRequired"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
    ] {
        if message.starts_with(prefix) {
            return reason;
        }
    }
    "FieldValueInvalid"
}

fn validate(crd: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    let old_schemas = old.map(cel_cost::crd_schemas).unwrap_or_default();
    let mut errors = Vec::new();
    for (path, schema) in cel_cost::crd_schemas(crd) {
        let mut structural = Vec::new();
        structural_errors(schema, &path, Level::Root, &mut structural);
        structural.sort_by(|a, b| format!("{}: {}", a.0, a.1).cmp(&format!("{}: {}", b.0, b.1)));
        let cel_allowed = structural.is_empty();
        errors.extend(structural);
        let mut defaults = Vec::new();
        if cel_allowed {
            default_errors(schema, &path, true, false, &mut defaults);
        }
        let cel_allowed = cel_allowed && defaults.is_empty();
        errors.extend(defaults);
        let mut node_errors = Vec::new();
        node_schema_errors(schema, &path, &mut node_errors);
        let cel_allowed = cel_allowed && node_errors.is_empty();
        errors.extend(node_errors);
        if cel_allowed {
            let costs = cel_cost::schema_costs(&path, schema);
            // An update that leaves a schema unchanged keeps rules that are already stored,
            // whatever they cost alone; the total still counts.
            let unchanged = old_schemas.iter().any(|(p, s)| *p == path && *s == schema);
            errors.extend(costs.errors().into_iter().filter(|(field, msg)| {
                !(unchanged && field != &path && msg.contains("exceeds budget"))
            }));
        }
    }
    errors
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

fn str_of<'a>(schema: &'a Value, key: &str) -> &'a str {
    schema.get(key).and_then(Value::as_str).unwrap_or("")
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// `ValidateStructural`: the invariants of a structural schema that real CRDs run into.
fn structural_errors(schema: &Value, path: &str, level: Level, out: &mut Vec<(String, String)>) {
    let ty = str_of(schema, "type");
    if ty == "array" && schema.get("items").is_none() {
        out.push((
            format!("{path}.items"),
            "Required value: must be specified".into(),
        ));
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        structural_errors(items, &format!("{path}.items"), Level::Item, out);
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            structural_errors(
                prop,
                &format!("{path}.properties[{name}]"),
                Level::Field,
                out,
            );
        }
    }
    if let Some(additional) = schema.get("additionalProperties") {
        if level == Level::Root {
            out.push((
                format!("{path}.additionalProperties"),
                "Forbidden: must not be used at the root".into(),
            ));
        }
        if additional.is_object() {
            structural_errors(
                additional,
                &format!("{path}.additionalProperties"),
                Level::Field,
                out,
            );
        }
    }
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    if embedded && ty != "object" {
        out.push(if ty.is_empty() {
            (
                format!("{path}.type"),
                "Required value: must be object if x-kubernetes-embedded-resource is true".into(),
            )
        } else {
            (
                format!("{path}.type"),
                format!(
                    "Invalid value: {ty:?}: must be object if x-kubernetes-embedded-resource is true"
                ),
            )
        });
    } else if ty.is_empty()
        && !flag(schema, "x-kubernetes-int-or-string")
        && !flag(schema, "x-kubernetes-preserve-unknown-fields")
    {
        let what = match level {
            Level::Root => "at the root",
            Level::Item => "for specified array items",
            Level::Field => "for specified object fields",
        };
        out.push((
            format!("{path}.type"),
            format!("Required value: must not be empty {what}"),
        ));
    }
    if embedded && schema.get("additionalProperties").is_some() {
        out.push((
            format!("{path}.additionalProperties"),
            "Forbidden: must not be used if x-kubernetes-embedded-resource is set".into(),
        ));
    }
    if level == Level::Root && !ty.is_empty() && ty != "object" {
        out.push((
            format!("{path}.type"),
            format!("Invalid value: {ty:?}: must be object at the root"),
        ));
    }
    let check_metadata = level == Level::Root || embedded;
    if check_metadata {
        for key in ["kind", "apiVersion"] {
            if let Some(prop) = schema.pointer(&format!("/properties/{key}"))
                && str_of(prop, "type") != "string"
            {
                out.push((
                    format!("{path}.properties[{key}].type"),
                    format!("Invalid value: {:?}: must be string", str_of(prop, "type")),
                ));
            }
        }
    }
    if let Some(meta) = schema.pointer("/properties/metadata") {
        let meta_path = format!("{path}.properties[metadata]");
        if check_metadata && str_of(meta, "type") != "object" {
            out.push((
                format!("{meta_path}.type"),
                format!("Invalid value: {:?}: must be object", str_of(meta, "type")),
            ));
        }
        if level == Level::Root && !root_metadata_is_restriction_only(meta) {
            out.push((
                meta_path,
                "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified".into(),
            ));
        }
    }
}

/// Root metadata may only carry its `type`, a `default` (checked elsewhere) and the schemas of
/// `name` and/or `generateName`.
fn root_metadata_is_restriction_only(meta: &Value) -> bool {
    let Some(map) = meta.as_object() else {
        return true;
    };
    map.iter().all(|(key, value)| match key.as_str() {
        "type" | "default" => true,
        "properties" => value.as_object().is_none_or(|props| {
            !props.is_empty()
                && props
                    .keys()
                    .all(|k| matches!(k.as_str(), "name" | "generateName"))
        }),
        _ => false,
    })
}

/// Per-node rules of `ValidateCustomResourceDefinitionOpenAPISchema` that real CRDs run into.
fn node_schema_errors(schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
    if flag(schema, "uniqueItems") {
        out.push((
            format!("{path}.uniqueItems"),
            "Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic".into(),
        ));
    }
    let has_props = schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());
    if let Some(additional) = schema.get("additionalProperties") {
        if has_props && additional != &Value::Bool(true) {
            out.push((
                format!("{path}.additionalProperties"),
                "Forbidden: additionalProperties and properties are mutual exclusive".into(),
            ));
        }
        if additional.is_object() {
            node_schema_errors(additional, &format!("{path}.additionalProperties"), out);
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            node_schema_errors(prop, &format!("{path}.properties[{name}]"), out);
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        node_schema_errors(items, &format!("{path}.items"), out);
    }
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        out.push((
            format!("{path}.x-kubernetes-preserve-unknown-fields"),
            "Invalid value: false: must be true or undefined".into(),
        ));
    }
}

/// `structuraldefaulting.ValidateDefaults`: every default outside resource metadata must be
/// pruned, valid for its schema, and pass its node's CEL rules.
fn default_errors(
    schema: &Value,
    path: &str,
    resource_root: bool,
    inside_meta: bool,
    out: &mut Vec<(String, String)>,
) {
    let resource_root = resource_root || flag(schema, "x-kubernetes-embedded-resource");
    let inside_meta = inside_meta && !flag(schema, "x-kubernetes-embedded-resource");
    if !inside_meta && let Some(default) = schema.get("default").filter(|d| !d.is_null()) {
        out.extend(check_default(schema, default, &format!("{path}.default")));
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        default_errors(items, &format!("{path}.items"), false, inside_meta, out);
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let meta = resource_root && matches!(name.as_str(), "metadata" | "apiVersion" | "kind");
            default_errors(
                prop,
                &format!("{path}.properties[{name}]"),
                false,
                inside_meta || meta,
                out,
            );
        }
    }
}

/// A copy of `schema` without any `default`, so validating a default does not fill in nested
/// defaults first (the API server validates the default value exactly as written).
fn without_defaults(schema: &Value) -> Value {
    let mut out = schema.clone();
    strip_defaults(&mut out);
    out
}

fn strip_defaults(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    map.remove("default");
    if let Some(props) = map.get_mut("properties").and_then(Value::as_object_mut) {
        for prop in props.values_mut() {
            strip_defaults(prop);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = map.get_mut(key) {
            strip_defaults(sub);
        }
    }
}

fn check_default(schema: &Value, default: &Value, path: &str) -> Vec<(String, String)> {
    let node = without_defaults(schema);
    let wrapper = json!({"type": "object", "properties": {DEFAULT_KEY: node}});
    let mut obj = json!({DEFAULT_KEY: default});
    let outcome = schema::apply(&wrapper, &mut obj);
    let relocate = |s: &str| s.replace(DEFAULT_KEY, path);
    if !outcome.pruned.is_empty() {
        return vec![(
            path.to_string(),
            format!(
                "Invalid value: {}: must not have unknown fields",
                go_repr(default)
            ),
        )];
    }
    if !outcome.errors.is_empty() {
        return outcome
            .errors
            .iter()
            .map(|(field, msg)| (relocate(field), relocate(msg)))
            .collect();
    }
    cel_errors_on_default(&node, default, path)
}

/// The node's `x-kubernetes-validations` (and those below it) evaluated on the default value,
/// with the default as `oldSelf` too, as the API server does.
fn cel_errors_on_default(node: &Value, default: &Value, path: &str) -> Vec<(String, String)> {
    let compiled = kube_cel::compile_schema(node);
    let validator = kube_cel::Validator::new();
    let Err(errors) =
        validator.validate_compiled_with_context(&compiled, default, Some(default), None)
    else {
        return Vec::new();
    };
    errors
        .into_vec()
        .into_iter()
        .filter_map(|e| match e.kind {
            kube_cel::ErrorKind::ValidationFailure | kube_cel::ErrorKind::InvalidResult => {
                let field = match e.field_path.as_str() {
                    "" => path.to_string(),
                    p if p.starts_with('[') || p.starts_with('.') => format!("{path}{p}"),
                    p => format!("{path}.{p}"),
                };
                let ty = schema_type_at(node, &e.field_path);
                Some((field, format!("Invalid value: {ty:?}: {}", e.message)))
            }
            _ => {
                tracing::warn!(rule = %e.rule, error = %e.message, "cel rule on a crd default not checked by the test cluster");
                None
            }
        })
        .collect()
}

/// The `type` of the schema node at a field path relative to `schema` (`a.b[0].c`).
fn schema_type_at(schema: &Value, field_path: &str) -> String {
    let mut node = schema;
    for segment in field_path.split('.').filter(|s| !s.is_empty()) {
        let (name, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], segment[i..].matches('[').count()),
            None => (segment, 0),
        };
        if !name.is_empty() {
            node = match node
                .pointer(&format!(
                    "/properties/{}",
                    name.replace('~', "~0").replace('/', "~1")
                ))
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
            {
                Some(n) => n,
                None => return "object".into(),
            };
        }
        for _ in 0..indexes {
            node = match node
                .get("items")
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
            {
                Some(n) => n,
                None => return "object".into(),
            };
        }
    }
    match str_of(node, "type") {
        "" => "object".into(),
        t => t.into(),
    }
}

/// How Go's `%#v` prints a JSON value decoded into `interface{}`, as field errors show
/// defaults that are maps or lists.
fn go_repr(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.to_string(),
        },
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "[]interface {{}}{{{}}}",
            items.iter().map(go_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            format!(
                "map[string]interface {{}}{{{}}}",
                keys.iter()
                    .map(|k| format!("{k:?}:{}", go_repr(&map[*k])))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}
