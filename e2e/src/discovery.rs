//! Discovery (`/api`, `/apis`, `/apis/GROUP[/VERSION]`, `/version`, the OpenAPI documents of
//! `crate::openapi`) and the `Table` rendering that `kubectl get` asks for.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use axum::{
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::clock::parse_time;
use crate::error::ApiError;
use crate::resources::ResourceDef;
use crate::server::AppState;

fn ok(body: Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Kubernetes version priority: GA > beta > alpha, then by number (v1 > v1beta2 > v1beta1 > v1alpha3).
pub fn version_priority(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> (u32, u32, u32) {
        let Some(rest) = v.strip_prefix('v') else {
            return (0, 0, 0);
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major = digits.parse().unwrap_or(0);
        let tail = &rest[digits.len()..];
        let (stage, minor) = if tail.is_empty() {
            (3, 0)
        } else if let Some(n) = tail.strip_prefix("beta") {
            (2, n.parse().unwrap_or(0))
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n.parse().unwrap_or(0))
        } else {
            (0, 0)
        };
        (stage, major, minor)
    }
    parse(b).cmp(&parse(a))
}

fn groups(state: &AppState) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for res in state.store.resources() {
        let versions = groups.entry(res.group.clone()).or_default();
        for v in res.versions.iter().filter(|v| v.served) {
            if !versions.contains(&v.name) {
                versions.push(v.name.clone());
            }
        }
    }
    for versions in groups.values_mut() {
        versions.sort_by(|a, b| version_priority(a, b));
    }
    groups
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first()})
}

fn resource_list(state: &AppState, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for res in state.store.resources() {
        if res.group != group {
            continue;
        }
        let Some(v) = res.version(version) else {
            continue;
        };
        let verbs = json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]);
        let mut entry = json!({
            "name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
            "kind": res.kind, "verbs": verbs,
        });
        if !res.short_names.is_empty() {
            entry["shortNames"] = json!(res.short_names);
        }
        if !res.categories.is_empty() {
            entry["categories"] = json!(res.categories);
        }
        resources.push(entry);
        if v.status_subresource {
            resources.push(json!({"name": format!("{}/status", res.plural), "singularName": "", "namespaced": res.namespaced, "kind": res.kind, "verbs": ["get", "patch", "update"]}));
        }
        if res.group.is_empty() && res.plural == "pods" {
            resources.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        }
        if v.scale.is_some() {
            resources.push(json!({"name": format!("{}/scale", res.plural), "singularName": "", "namespaced": res.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// Serves discovery, OpenAPI and health paths; `None` for anything else.
pub fn serve(
    state: &AppState,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Option<Response> {
    if method != Method::GET {
        return None;
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || {
        Some(
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .into_response(),
        )
    };
    match segs.as_slice() {
        ["version"] => Some(ok(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0+sluice-test-cluster", "gitCommit": "",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "n/a",
            "compiler": "rustc", "platform": "linux/amd64",
        }))),
        ["healthz"] | ["readyz"] | ["livez"] => Some((StatusCode::OK, "ok").into_response()),
        ["openapi", ..] => Some(crate::openapi::serve(
            &state.store.resources(),
            path,
            query,
            headers,
        )),
        ["api"] => Some(ok(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.address}],
        }))),
        ["api", version] => resource_list(state, "", version).map(ok).or_else(not_found),
        ["apis"] => {
            let groups: Vec<Value> = groups(state)
                .iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| group_json(g, vs))
                .collect();
            Some(ok(
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ))
        }
        ["apis", group] => match groups(state).get(*group) {
            Some(vs) => {
                let mut g = group_json(group, vs);
                g["kind"] = json!("APIGroup");
                g["apiVersion"] = json!("v1");
                Some(ok(g))
            }
            None => not_found(),
        },
        ["apis", group, version] => resource_list(state, group, version)
            .map(ok)
            .or_else(not_found),
        _ => None,
    }
}

/// `kubectl`'s short age format (`45s`, `12m`, `5h`, `3d`).
fn age(created: Option<&str>, now: jiff::Timestamp) -> String {
    let Some(created) = created.and_then(parse_time) else {
        return "<unknown>".into();
    };
    let secs = now.duration_since(created).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

type Cell = fn(&Value) -> Value;

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The columns `kubectl get` shows for the built-in kinds that tests and demos look at most.
fn builtin_columns(plural: &str) -> Vec<(&'static str, Cell)> {
    match plural {
        "pods" => vec![
            ("Ready", |o| {
                let statuses = o
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let total = o
                    .pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let ready = statuses
                    .iter()
                    .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                    .count();
                json!(format!("{ready}/{total}"))
            }),
            ("Status", |o| {
                let waiting = o
                    .pointer("/status/containerStatuses/0/state/waiting/reason")
                    .and_then(Value::as_str);
                json!(
                    waiting
                        .or(o.pointer("/status/phase").and_then(Value::as_str))
                        .unwrap_or("Pending")
                )
            }),
            ("Restarts", |o| {
                json!(int(o, "/status/containerStatuses/0/restartCount"))
            }),
        ],
        "deployments" => vec![
            ("Ready", |o| {
                json!(format!(
                    "{}/{}",
                    int(o, "/status/readyReplicas"),
                    int(o, "/spec/replicas")
                ))
            }),
            ("Up-to-date", |o| json!(int(o, "/status/updatedReplicas"))),
            ("Available", |o| json!(int(o, "/status/availableReplicas"))),
        ],
        "replicasets" => vec![
            ("Desired", |o| json!(int(o, "/spec/replicas"))),
            ("Current", |o| json!(int(o, "/status/replicas"))),
            ("Ready", |o| json!(int(o, "/status/readyReplicas"))),
        ],
        _ => Vec::new(),
    }
}

/// Renders objects as a `meta.k8s.io/v1` `Table`: name, the CRD's printer columns, age.
pub fn table(
    state: &AppState,
    res: &ResourceDef,
    version: &str,
    items: &[Value],
    rv: Value,
    query: &HashMap<String, String>,
) -> Value {
    let columns = res
        .version(version)
        .map(|v| v.printer_columns.clone())
        .unwrap_or_default();
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    let builtin = builtin_columns(&res.plural);
    for (name, _) in &builtin {
        defs.push(
            json!({"name": name, "type": "string", "format": "", "description": "", "priority": 0}),
        );
    }
    for c in &columns {
        if c.name != "Age" {
            defs.push(json!({"name": c.name, "type": c.type_, "format": "", "description": "", "priority": 0}));
        }
    }
    defs.push(json!({"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0}));
    let now = state.store.clock.now();
    let include = query
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(builtin.iter().map(|(_, cell)| cell(obj)));
            for c in columns.iter().filter(|c| c.name != "Age") {
                let pointer: String = c.json_path.trim_start_matches('.').split('.').map(|s| format!("/{s}")).collect();
                cells.push(obj.pointer(&pointer).cloned().unwrap_or(json!("")));
            }
            cells.push(json!(age(obj.pointer("/metadata/creationTimestamp").and_then(Value::as_str), now)));
            let object = match include {
                "None" => Value::Null,
                "Object" => obj.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata")}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_kubernetes_priority() {
        let mut v = vec!["v1alpha3", "v1beta1", "v1", "v2beta1"];
        v.sort_by(|a, b| version_priority(a, b));
        assert_eq!(v, vec!["v1", "v2beta1", "v1beta1", "v1alpha3"]);
    }
}
