//! Structural check of a manifest against a kind's generated CRD schema (unknown fields, types,
//! required fields, enums), without a cluster.
//!
//! The schema is the one `sluice crds` writes, generated from the API types; the API server
//! applies the same schema when the manifest is applied, so `sluice lint` reports the same
//! fields. Messages are lint's own words, one per field.

use serde_json::Value;

use super::validation::FieldError;

/// Checks an object against the `openAPIV3Schema` of its kind: every top-level field but
/// `apiVersion`, `kind`, `metadata` and `status`, and a name (or `generateName`).
pub fn check_object(value: &Value, schema: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                continue;
            }
            match schema.pointer(&format!("/properties/{k}")) {
                Some(s) => check_value(v, s, k, &mut out),
                None => out.push(error(k, format!("unknown field \"{k}\""))),
            }
        }
    }
    if value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && value.pointer("/metadata/generateName").is_none()
    {
        out.push(error("metadata.name", "required field is missing"));
    }
    out
}

fn error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks one value against its schema, recursively; `path` names it in the errors.
fn check_value(v: &Value, schema: &Value, path: &str, out: &mut Vec<FieldError>) {
    if v.is_null() {
        // `key:` with no value: the API server drops it like an absent field.
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            out.push(error(
                path,
                format!("must be an integer or a string, got {}", type_name(v)),
            ));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !ok {
        let article = if matches!(ty, Some("integer" | "array" | "object")) {
            "an"
        } else {
            "a"
        };
        out.push(error(
            path,
            format!(
                "must be {article} {}, got {}",
                ty.unwrap_or("?"),
                type_name(v)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        out.push(error(
            path,
            format!("must be one of {}, got {v}", list.join(", ")),
        ));
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve =
                schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            for (k, child) in map {
                let child_path = format!("{path}.{k}");
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) | (None, Some(s)) => check_value(child, s, &child_path, out),
                    (None, None) if preserve || props.is_none() => {}
                    (None, None) => out.push(error(&child_path, format!("unknown field \"{k}\""))),
                }
            }
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = req.as_str()
                    && !map.contains_key(r)
                {
                    out.push(error(&format!("{path}.{r}"), "required field is missing"));
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_value(item, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}
