//! Field ownership for server-side apply: `metadata.managedFields`, conflicts between managers,
//! and removal of fields a manager stopped applying.
//!
//! Ownership is tracked per leaf path: maps are walked key by key, while lists, scalars and empty
//! maps are leaves. So every list is atomic, as lists of custom resources without
//! `x-kubernetes-list-type: map` are on a real server; built-in associative lists (containers by
//! name, ports...) are also atomic here, which is coarser than a real server.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::ApiError;

pub type FieldPath = Vec<String>;
pub type PathSet = BTreeSet<FieldPath>;

/// Metadata the server owns; never part of anyone's field set.
const SERVER_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The object itself; `status` excluded when the resource has a status subresource.
    Main { skip_status: bool },
    /// The `/status` subresource: only `status`.
    Status,
}

impl Scope {
    fn includes(self, top: &str) -> bool {
        match self {
            Self::Main { skip_status } => {
                !(matches!(top, "apiVersion" | "kind") || (skip_status && top == "status"))
            }
            Self::Status => top == "status",
        }
    }
}

/// Every leaf path of `obj` within `scope`.
pub fn leaves(obj: &Value, scope: Scope) -> PathSet {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut PathSet) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
    }
    let mut out = PathSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, child) in map {
        if !scope.includes(k) {
            continue;
        }
        let mut prefix = vec![k.clone()];
        if k == "metadata" {
            if let Some(meta) = child.as_object() {
                for (mk, mv) in meta {
                    if SERVER_METADATA.contains(&mk.as_str()) {
                        continue;
                    }
                    prefix.push(mk.clone());
                    walk(mv, &mut prefix, &mut out);
                    prefix.pop();
                }
            }
            continue;
        }
        walk(child, &mut prefix, &mut out);
    }
    out
}

pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.get(k))
}

/// Removes the field at `path` (and nothing else).
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut v = obj;
    for k in parent {
        match v.get_mut(k) {
            Some(child) => v = child,
            None => return,
        }
    }
    if let Some(map) = v.as_object_mut() {
        map.remove(last);
    }
}

/// Leaves whose value differs between `old` and `new` (added, changed or removed).
pub fn diff(old: &Value, new: &Value, scope: Scope) -> PathSet {
    let before = leaves(old, scope);
    let after = leaves(new, scope);
    let mut changed: PathSet = after
        .iter()
        .filter(|p| value_at(old, p) != value_at(new, p))
        .cloned()
        .collect();
    changed.extend(before.difference(&after).cloned());
    changed
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub subresource: Option<String>,
    pub api_version: String,
    pub time: String,
    pub paths: PathSet,
}

impl Entry {
    fn same_slot(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

fn paths_from_fields_v1(fields: &Value, prefix: &mut FieldPath, out: &mut PathSet) {
    let Some(map) = fields.as_object() else {
        return;
    };
    let mut has_child = false;
    for (k, child) in map {
        if let Some(key) = k.strip_prefix("f:") {
            has_child = true;
            prefix.push(key.to_string());
            paths_from_fields_v1(child, prefix, out);
            prefix.pop();
        }
    }
    // An empty set, a `.` marker, or keyed list items (`k:`/`v:`, from real servers) all mean
    // this node is owned as a whole here.
    if !has_child && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
}

fn fields_v1(paths: &PathSet) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for k in path {
            node = node
                .entry(format!("f:{k}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// The entries of an object's `metadata.managedFields`.
pub fn parse(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut paths = PathSet::new();
            paths_from_fields_v1(
                e.get("fieldsV1").unwrap_or(&Value::Null),
                &mut Vec::new(),
                &mut paths,
            );
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(String::from),
                api_version: s("apiVersion"),
                time: s("time"),
                paths,
            }
        })
        .collect()
}

pub fn to_json(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                    "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&e.paths),
                });
                if let Some(sub) = &e.subresource {
                    v["subresource"] = json!(sub);
                }
                v
            })
            .collect(),
    )
}

/// How a write changes ownership.
#[derive(Debug, Clone)]
pub enum Ownership {
    /// A non-apply write: the writer takes every field it changed from everyone else.
    Update,
    /// An apply: the manager owns exactly `paths`; `forced` fields are taken from others.
    Apply { paths: PathSet, forced: PathSet },
}

/// Computes the entries after a write of `new` over `old` by `manager`.
#[allow(clippy::too_many_arguments)]
pub fn record(
    old: &Value,
    new: &Value,
    scope: Scope,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
    ownership: &Ownership,
) -> Vec<Entry> {
    let mut entries = parse(old);
    let (operation, mine, taken) = match ownership {
        Ownership::Update => {
            let changed = diff(old, new, scope);
            let present = leaves(new, scope);
            let mine: PathSet = changed.intersection(&present).cloned().collect();
            ("Update", mine, changed)
        }
        Ownership::Apply { paths, forced } => ("Apply", paths.clone(), forced.clone()),
    };
    for e in entries.iter_mut() {
        if e.same_slot(manager, operation, subresource) {
            continue;
        }
        let before = e.paths.len();
        e.paths.retain(|p| !taken.contains(p));
        if e.paths.len() != before {
            e.time = now.to_string();
        }
    }
    let slot = entries
        .iter()
        .position(|e| e.same_slot(manager, operation, subresource));
    match (slot, operation) {
        (Some(i), "Apply") => {
            if entries[i].paths != mine {
                entries[i].paths = mine;
                entries[i].time = now.to_string();
                entries[i].api_version = api_version.to_string();
            }
        }
        (Some(i), _) => {
            let before = entries[i].paths.len();
            entries[i].paths.extend(mine);
            if entries[i].paths.len() != before || !taken.is_empty() {
                entries[i].time = now.to_string();
                entries[i].api_version = api_version.to_string();
            }
        }
        (None, _) if !mine.is_empty() => entries.push(Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            subresource: subresource.map(String::from),
            api_version: api_version.to_string(),
            time: now.to_string(),
            paths: mine,
        }),
        (None, _) => {}
    }
    entries.retain(|e| !e.paths.is_empty());
    entries
}

/// Whether two entry lists say the same thing, ignoring timestamps.
pub fn same_ownership(a: &[Entry], b: &[Entry]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.manager == y.manager
                && x.operation == y.operation
                && x.subresource == y.subresource
                && x.paths == y.paths
        })
}

fn render(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

/// The fields an apply by `manager` would change that another manager owns.
pub fn conflicts(
    live: &Value,
    config: &Value,
    manager: &str,
    paths: &PathSet,
) -> Vec<(String, String, FieldPath)> {
    let mut out = Vec::new();
    for e in parse(live) {
        if e.manager == manager {
            continue;
        }
        for p in e.paths.intersection(paths) {
            if value_at(live, p) != value_at(config, p) {
                out.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    out
}

/// The 409 of an apply that conflicts, worded as kube-apiserver words it.
pub fn conflict_error(
    kind: &str,
    group: &str,
    name: &str,
    conflicts: &[(String, String, FieldPath)],
) -> ApiError {
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, v, p)| format!("conflict with \"{m}\" using {v}: {}", render(p)))
        .collect();
    let message = if lines.len() == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!(
            "Apply failed with {} conflicts: {}",
            lines.len(),
            lines.join("\n")
        )
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, v, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {v}"), "field": render(p)}))
        .collect();
    ApiError::new(409, "Conflict", message)
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FieldPath {
        s.split('.').map(String::from).collect()
    }

    #[test]
    fn leaves_walk_maps_and_stop_at_lists() {
        let obj = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"a": 1, "l": [1, 2], "e": {}}, "status": {"s": 1}});
        let got = leaves(&obj, Scope::Main { skip_status: true });
        let want: PathSet = [
            p("metadata.labels.x"),
            p("spec.a"),
            p("spec.l"),
            p("spec.e"),
        ]
        .into();
        assert_eq!(got, want);
        assert_eq!(leaves(&obj, Scope::Status), [p("status.s")].into());
    }

    #[test]
    fn fields_v1_round_trips() {
        let paths: PathSet = [p("spec.a"), p("spec.b.c"), p("metadata.labels.x")].into();
        let mut back = PathSet::new();
        paths_from_fields_v1(&fields_v1(&paths), &mut Vec::new(), &mut back);
        assert_eq!(back, paths);
    }

    #[test]
    fn an_update_takes_the_fields_it_changed() {
        let old = json!({"metadata": {"managedFields": to_json(&[Entry {
            manager: "git".into(), operation: "Apply".into(), subresource: None, api_version: "v1".into(),
            time: "t0".into(), paths: [p("spec.a"), p("spec.b")].into(),
        }])}, "spec": {"a": 1, "b": 1}});
        let mut new = old.clone();
        new["spec"]["b"] = json!(2);
        let entries = record(
            &old,
            &new,
            Scope::Main { skip_status: false },
            "ctl",
            None,
            "v1",
            "t1",
            &Ownership::Update,
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].paths, [p("spec.a")].into());
        assert_eq!(
            (entries[1].manager.as_str(), &entries[1].paths),
            ("ctl", &[p("spec.b")].into())
        );
    }
}
