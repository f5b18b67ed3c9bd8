//! Structural OpenAPI v3 schema handling for custom resources: defaulting, pruning of unknown
//! fields, and validation, in that order, as kube-apiserver does for CRDs.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

/// The outcome of applying a schema to an object.
#[derive(Debug, Default)]
pub struct SchemaOutcome {
    /// `(field path, message)` pairs, each a 422 cause.
    pub errors: Vec<(String, String)>,
    /// Paths of unknown fields that were pruned (reported as warnings, or errors in `Strict`).
    pub pruned: Vec<String>,
}

thread_local! {
    static CEL: (kube_cel::Validator, std::cell::RefCell<HashMap<u64, std::rc::Rc<kube_cel::CompiledSchema>>>) =
        (kube_cel::Validator::new(), Default::default());
}

/// Evaluates the schema's `x-kubernetes-validations` (CEL) rules on a write, with `old` as
/// `oldSelf` for transition rules. Only rules that evaluate to false (or to a non-boolean) reject
/// the write; a rule kube-cel cannot compile or evaluate (a CEL feature it lacks) is skipped with
/// a warning rather than rejecting every object, so it is not enforced. Returns 422 causes.
pub fn cel_errors(
    schema: &Value,
    schema_id: u64,
    obj: &Value,
    old: Option<&Value>,
    root: &kube_cel::RootContext,
) -> Vec<(String, String)> {
    CEL.with(|(validator, cache)| {
        let compiled = cache
            .borrow_mut()
            .entry(schema_id)
            .or_insert_with(|| std::rc::Rc::new(kube_cel::compile_schema(schema)))
            .clone();
        let Err(errors) = validator.validate_compiled_with_context(&compiled, obj, old, Some(root)) else {
            return Vec::new();
        };
        errors
            .into_vec()
            .into_iter()
            .filter_map(|e| match e.kind {
                kube_cel::ErrorKind::ValidationFailure | kube_cel::ErrorKind::InvalidResult => {
                    Some((e.field_path.clone(), format!("Invalid value: \"object\": {}", e.message)))
                }
                _ => {
                    tracing::warn!(rule = %e.rule, error = %e.message, "cel rule not enforced by the test cluster");
                    None
                }
            })
            .collect()
    })
}

/// Applies `schema` (a CRD version's `openAPIV3Schema`) to `obj` in place.
pub fn apply(schema: &Value, obj: &mut Value) -> SchemaOutcome {
    let mut out = SchemaOutcome::default();
    let Some(map) = obj.as_object_mut() else {
        out.errors.push((String::new(), "must be an object".into()));
        return out;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    // apiVersion, kind and metadata are validated by the server itself, never pruned.
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&key)) {
            Some(sub) => {
                if map[&key].is_null() && !nullable(sub) {
                    map.remove(&key);
                    continue;
                }
                walk(
                    sub,
                    map.get_mut(&key).expect("key listed above"),
                    &key,
                    &mut out,
                )
            }
            None if preserves_unknown(schema) => {}
            None => {
                map.remove(&key);
                out.pruned.push(key);
            }
        }
    }
    apply_defaults(schema, map, "", &mut out);
    check_required(schema, map, "", &mut out);
    out
}

fn nullable(schema: &Value) -> bool {
    schema
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn apply_defaults(
    schema: &Value,
    map: &mut Map<String, Value>,
    _path: &str,
    _out: &mut SchemaOutcome,
) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (key, sub) in props {
            if let Some(default) = sub.get("default")
                && !map.contains_key(key)
            {
                map.insert(key.clone(), default.clone());
            }
        }
    }
}

fn check_required(schema: &Value, map: &Map<String, Value>, path: &str, out: &mut SchemaOutcome) {
    for req in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(key) = req.as_str()
            && !map.contains_key(key)
        {
            out.errors.push((join(path, key), "Required value".into()));
        }
    }
}

fn cached_regex(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok())
        .clone()
}

fn walk(schema: &Value, value: &mut Value, path: &str, out: &mut SchemaOutcome) {
    if value.is_null() {
        if !nullable(schema) {
            out.errors.push((
                path.into(),
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("object")
                ),
            ));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let declared = schema.get("type").and_then(Value::as_str);
    if int_or_string {
        if !(value.is_string() || type_name(value) == "integer") {
            out.errors.push((
                path.into(),
                format!(
                    "Invalid value: {}: {path} in body must be of type integer or string: {}",
                    render(value),
                    render(value)
                ),
            ));
        }
    } else if let Some(expected) = declared {
        let actual = type_name(value);
        let ok = actual == expected
            || (expected == "number" && actual == "integer")
            || (expected == "integer" && value.as_f64().is_some_and(|f| f.fract() == 0.0));
        if !ok {
            out.errors.push((path.into(), format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\"")));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let supported: Vec<String> = options.iter().map(render).collect();
        out.errors.push((
            path.into(),
            format!(
                "Unsupported value: {}: supported values: {}",
                render(value),
                supported.join(", ")
            ),
        ));
    }
    match value {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or_default();
            let excl_min = schema
                .get("exclusiveMinimum")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let excl_max = schema
                .get("exclusiveMaximum")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && (f < min || (excl_min && f == min))
            {
                let rel = if excl_min {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                out.errors.push((
                    path.into(),
                    format!(
                        "Invalid value: {n}: {path} in body should be {rel} {}",
                        schema["minimum"]
                    ),
                ));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && (f > max || (excl_max && f == max))
            {
                let rel = if excl_max {
                    "less than"
                } else {
                    "less than or equal to"
                };
                out.errors.push((
                    path.into(),
                    format!(
                        "Invalid value: {n}: {path} in body should be {rel} {}",
                        schema["maximum"]
                    ),
                ));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                out.errors.push((
                    path.into(),
                    format!(
                        "Invalid value: {s:?}: {path} in body should be at least {min} chars long"
                    ),
                ));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                out.errors.push((
                    path.into(),
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match cached_regex(pattern) {
                    Some(re) if re.is_match(s) => {}
                    _ => out.errors.push((
                        path.into(),
                        format!("Invalid value: {s:?}: {path} in body should match '{pattern}'"),
                    )),
                }
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                out.errors.push((
                    path.into(),
                    format!(
                        "Invalid value: {len}: {path} in body should have at least {min} items"
                    ),
                ));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                out.errors.push((
                    path.into(),
                    format!("Too many: {len}: must have at most {max} items"),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            let embedded = schema
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                let sub = props
                    .and_then(|p| p.get(&key))
                    .or(additional.filter(|a| a.is_object()));
                match sub {
                    Some(sub) => {
                        if map[&key].is_null() && !nullable(sub) && sub.get("default").is_some() {
                            map.remove(&key);
                            continue;
                        }
                        walk(
                            sub,
                            map.get_mut(&key).expect("key listed above"),
                            &child_path,
                            out,
                        )
                    }
                    None if preserves_unknown(schema)
                        || additional.and_then(Value::as_bool) == Some(true)
                        || (embedded
                            && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")) => {}
                    None => {
                        map.remove(&key);
                        out.pruned.push(child_path);
                    }
                }
            }
            apply_defaults(schema, map, path, out);
            check_required(schema, map, path, out);
            if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
                && (map.len() as u64) < min
            {
                out.errors.push((
                    path.into(),
                    format!(
                        "Invalid value: {}: {path} in body should have at least {min} properties",
                        map.len()
                    ),
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["replicas"],
                    "properties": {
                        "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "name": {"type": "string", "pattern": "^[a-z]+$"},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "port": {"x-kubernetes-int-or-string": true}
                    }
                }
            }
        })
    }

    #[test]
    fn defaults_prunes_and_accepts_valid_objects() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"replicas": 3, "extra": 1, "free": {"any": {"thing": 1}}, "port": "http"}, "junk": true});
        let out = apply(&schema(), &mut obj);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(
            out.pruned,
            vec!["junk".to_string(), "spec.extra".to_string()]
        );
        assert_eq!(obj["spec"]["mode"], "a");
        assert_eq!(obj["spec"]["free"]["any"]["thing"], 1);
    }

    #[test]
    fn reports_each_violation_with_its_field() {
        let mut obj = json!({"spec": {"replicas": 11, "mode": "c", "name": "A1", "port": 1.5}});
        let out = apply(&schema(), &mut obj);
        let fields: Vec<&str> = out.errors.iter().map(|(f, _)| f.as_str()).collect();
        // Object keys are visited in sorted order.
        assert_eq!(
            fields,
            vec!["spec.mode", "spec.name", "spec.port", "spec.replicas"]
        );
        let mut missing = json!({"spec": {"replicas": "three"}});
        let out = apply(&schema(), &mut missing);
        assert!(
            out.errors[0].1.contains("must be of type integer"),
            "{:?}",
            out.errors
        );
        let mut none = json!({"spec": {}});
        assert_eq!(
            apply(&schema(), &mut none).errors[0],
            ("spec.replicas".to_string(), "Required value".to_string())
        );
    }
}
