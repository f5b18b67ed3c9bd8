//! Minimal JSON patches between the live and the desired form of an object.
//!
//! Routers write user objects (VirtualServices, DestinationRules) as JSON patches that touch only
//! what differs, preceded by a `test` of `metadata.resourceVersion`: a concurrent writer makes the
//! patch fail instead of being overwritten, and fields nobody meant to change are never sent back.

use json_patch::jsonptr::PointerBuf;
use json_patch::{
    AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation, TestOperation,
};
use serde_json::Value;

/// Operations turning `from` into `to` below `path`. Objects are compared key by key; arrays of
/// the same length element by element; an array whose length changed is replaced as a whole,
/// because index-based edits of a list that others may reorder are harder to reason about than
/// one replacement guarded by the resourceVersion test.
pub(crate) fn diff(path: &PointerBuf, from: &Value, to: &Value, ops: &mut Vec<PatchOperation>) {
    if from == to {
        return;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                ops.push(PatchOperation::Remove(RemoveOperation {
                    path: path.with_trailing_token(key.as_str()),
                }));
            }
            for (key, value) in b {
                let child = path.with_trailing_token(key.as_str());
                match a.get(key) {
                    Some(old) => diff(&child, old, value, ops),
                    None => ops.push(PatchOperation::Add(AddOperation {
                        path: child,
                        value: value.clone(),
                    })),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (old, new)) in a.iter().zip(b).enumerate() {
                diff(&path.with_trailing_token(i), old, new, ops);
            }
        }
        _ => ops.push(PatchOperation::Replace(ReplaceOperation {
            path: path.clone(),
            value: to.clone(),
        })),
    }
}

/// The patch turning `live` into `desired` (whole objects), limited to `spec` and
/// `metadata.annotations` and labels, guarded by a `test` of the live resourceVersion. `None`
/// when nothing differs: no write at all.
pub(crate) fn guarded_patch(live: &Value, desired: &Value) -> Option<Patch> {
    let mut ops = Vec::new();
    let spec = PointerBuf::from_tokens(["spec"]);
    match (live.get("spec"), desired.get("spec")) {
        (Some(a), Some(b)) => diff(&spec, a, b, &mut ops),
        (None, Some(b)) => ops.push(PatchOperation::Add(AddOperation {
            path: spec,
            value: b.clone(),
        })),
        _ => {}
    }
    for field in ["annotations", "labels"] {
        let path = PointerBuf::from_tokens(["metadata", field]);
        let empty = Value::Object(Default::default());
        let a = live.pointer(path.as_str()).unwrap_or(&empty);
        let b = desired.pointer(path.as_str()).unwrap_or(&empty);
        if a == b {
            continue;
        }
        if desired.pointer(path.as_str()).is_none() {
            ops.push(PatchOperation::Remove(RemoveOperation { path }));
        } else if live.pointer(path.as_str()).is_none() {
            ops.push(PatchOperation::Add(AddOperation {
                path,
                value: b.clone(),
            }));
        } else {
            diff(&path, a, b, &mut ops);
        }
    }
    if ops.is_empty() {
        return None;
    }
    let rv = live
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(Value::Null);
    ops.insert(
        0,
        PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens(["metadata", "resourceVersion"]),
            value: rv,
        }),
    );
    Some(Patch(ops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(doc: &Value, patch: &Patch) -> Value {
        let mut out = doc.clone();
        json_patch::patch(&mut out, patch).expect("patch applies");
        out
    }

    #[test]
    fn patch_turns_live_into_desired_and_touches_only_differences() {
        let live = json!({
            "metadata": {"name": "vs", "resourceVersion": "7", "annotations": {"a": "1", "x/y": "2"}},
            "spec": {"http": [{"route": [{"weight": 100}, {"weight": 0}], "retries": {"attempts": 3}}]}
        });
        let mut desired = live.clone();
        desired["spec"]["http"][0]["route"][0]["weight"] = json!(80);
        desired["spec"]["http"][0]["route"][1]["weight"] = json!(20);
        desired["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("x/y");
        let patch = guarded_patch(&live, &desired).unwrap();
        let ops = serde_json::to_value(&patch).unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 80},
                {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 20},
                {"op": "remove", "path": "/metadata/annotations/x~1y"}
            ])
        );
        assert_eq!(apply(&live, &patch), desired);
    }

    #[test]
    fn no_patch_when_equal() {
        let live = json!({"metadata": {"resourceVersion": "1"}, "spec": {"a": [1, 2]}});
        assert!(guarded_patch(&live, &live.clone()).is_none());
    }

    #[test]
    fn list_of_other_length_is_replaced_whole_and_missing_annotations_added() {
        let live = json!({"metadata": {"resourceVersion": "1"}, "spec": {"http": [{"name": "a"}]}});
        let desired = json!({
            "metadata": {"resourceVersion": "1", "annotations": {"k": "v"}},
            "spec": {"http": [{"name": "m"}, {"name": "a"}]}
        });
        let patch = guarded_patch(&live, &desired).unwrap();
        assert_eq!(apply(&live, &patch), desired);
        assert_eq!(patch.0.len(), 3);
    }
}
