//! PATCH bodies by content type.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The patch types of `PATCH` requests, chosen by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let base = content_type.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch_map) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let map = target.as_object_mut().expect("made an object above");
            for (k, v) in patch_map {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The merge key of a list under strategic merge, for the lists of the core types that have one.
/// This is an approximation of the per-field `patchMergeKey` tags of the Go types.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let all_have = |key: &str| items.iter().all(|i| i.get(key).is_some());
    match field {
        "ownerReferences" if all_have("uid") => Some("uid"),
        "ports" if all_have("containerPort") => Some("containerPort"),
        "ports" if all_have("port") => Some("port"),
        "addresses" | "subsets" | "finalizers" => None,
        _ if !items.is_empty() && items.iter().all(Value::is_object) && all_have("name") => {
            Some("name")
        }
        _ if field == "conditions" && all_have("type") => Some("type"),
        _ => None,
    }
}

/// Strategic merge patch, approximated: a merge patch in which lists of objects that carry a
/// merge key (`name` for containers, env, volumes...; `uid` for ownerReferences; `type` for
/// conditions) are merged item by item, `$patch: delete` removes an item, `finalizers` are
/// unioned, and other lists are replaced. `$retainKeys` and `$setElementOrder` are ignored.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    strategic_merge_field("", target, patch)
}

fn strategic_merge_field(field: &str, target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch_map) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let map = target.as_object_mut().expect("made an object above");
            for (k, v) in patch_map {
                if k.starts_with("$setElementOrder") || k == "$retainKeys" || k == "$patch" {
                    continue;
                }
                if v.is_null() {
                    map.remove(k);
                    continue;
                }
                let entry = map.entry(k.clone()).or_insert(Value::Null);
                strategic_merge_field(k, entry, v);
            }
        }
        Value::Array(items) => {
            if field == "finalizers" {
                let mut merged = target.as_array().cloned().unwrap_or_default();
                for item in items {
                    if !merged.contains(item) {
                        merged.push(item.clone());
                    }
                }
                *target = Value::Array(merged);
                return;
            }
            let existing = target.as_array().cloned().unwrap_or_default();
            match merge_key(field, items).filter(|_| existing.iter().all(Value::is_object)) {
                Some(key) => {
                    let mut merged = existing;
                    for item in items {
                        let id = item.get(key);
                        let pos = merged.iter().position(|e| e.get(key) == id);
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(p), true) => {
                                merged.remove(p);
                            }
                            (Some(p), false) => strategic_merge_field("", &mut merged[p], item),
                            (None, false) => {
                                let mut fresh = Value::Null;
                                strategic_merge_field("", &mut fresh, item);
                                merged.push(fresh)
                            }
                            (None, true) => {}
                        }
                    }
                    *target = Value::Array(merged);
                }
                None => *target = patch.clone(),
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902 JSON patch; a failed `test` or a bad path is a 422, as kube-apiserver answers.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    json_patch::patch(target, &ops).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_deletes_with_directive() {
        let mut doc = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}});
        strategic_merge(
            &mut doc,
            &json!({"spec": {"containers": [{"name": "b", "image": "2"}, {"name": "a", "$patch": "delete"}, {"name": "c", "image": "3"}]}}),
        );
        assert_eq!(
            doc,
            json!({"spec": {"containers": [{"name": "b", "image": "2"}, {"name": "c", "image": "3"}]}})
        );
    }

    #[test]
    fn failed_json_patch_test_is_422() {
        let mut doc = json!({"metadata": {"finalizers": ["x"]}});
        let err = json_patch(
            &mut doc,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": ["y"]}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }
}
