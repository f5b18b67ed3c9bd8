//! The traffic router objects of a rollout (NGINX canary Ingress, Istio VirtualService and
//! DestinationRule) and the weights they hold now, read when the rollout page is rendered.

use kube::api::{Api, DynamicObject};
use kube::{Client, ResourceExt};
use maud::{Markup, html};
use serde_json::Value;

use crate::api::rollout::Rollout;
use crate::traffic::{RoutingConfig, watched_objects};

/// What one object says about traffic, in short lines (`web-canary: 20`).
fn weights(kind: &str, obj: &DynamicObject) -> Vec<String> {
    match kind {
        "Ingress" => {
            let a = obj.annotations();
            match a.get("nginx.ingress.kubernetes.io/canary-weight") {
                Some(w)
                    if a.get("nginx.ingress.kubernetes.io/canary")
                        .map(String::as_str)
                        == Some("true") =>
                {
                    vec![format!("canary-weight {w}")]
                }
                _ => vec!["stable Ingress".to_string()],
            }
        }
        "VirtualService" => obj
            .data
            .pointer("/spec/http")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|route| {
                let name = route
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                route
                    .get("route")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(move |d| {
                        let host = d
                            .pointer("/destination/host")
                            .and_then(Value::as_str)
                            .unwrap_or("?");
                        let subset = d
                            .pointer("/destination/subset")
                            .and_then(Value::as_str)
                            .map(|s| format!("/{s}"))
                            .unwrap_or_default();
                        let weight = d.get("weight").and_then(Value::as_i64).unwrap_or(0);
                        let route = if name.is_empty() {
                            String::new()
                        } else {
                            format!("{name}: ")
                        };
                        format!("{route}{host}{subset} {weight}")
                    })
            })
            .collect(),
        "DestinationRule" => obj
            .data
            .pointer("/spec/subsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|s| {
                let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
                let labels = s
                    .get("labels")
                    .and_then(Value::as_object)
                    .map(|l| {
                        l.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                format!("subset {name} ({labels})")
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The router objects of `rollout` with their weights; a missing or unreadable one says so.
pub async fn objects(client: &Client, rollout: &Rollout) -> Markup {
    let watched = watched_objects(rollout, &RoutingConfig::default());
    let mut found = Vec::new();
    for w in &watched {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &w.namespace, &w.api_resource());
        let lines = match api.get_opt(&w.name).await {
            Ok(Some(obj)) => weights(&w.kind, &obj),
            Ok(None) => vec!["not found".to_string()],
            Err(e) => vec![format!("cannot be read: {e}")],
        };
        found.push((w, lines));
    }
    html! {
        @if found.is_empty() {
            p { "No traffic router: traffic follows the ratio of canary to stable pods." }
        } @else {
            ul class="router" {
                @for (w, lines) in &found {
                    li data-kind=(w.kind) data-name=(w.name) {
                        (w.kind) " " b { (w.name) } ": " (lines.join("; "))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("a valid object")
    }

    #[test]
    fn virtual_service_routes_with_their_weights() {
        let vs = object(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web"},
            "spec": {"http": [{"name": "primary", "route": [
                {"destination": {"host": "web", "subset": "stable"}, "weight": 80},
                {"destination": {"host": "web", "subset": "canary"}, "weight": 20}
            ]}]}
        }));
        assert_eq!(
            weights("VirtualService", &vs),
            ["primary: web/stable 80", "primary: web/canary 20"]
        );
    }

    #[test]
    fn canary_ingress_weight_and_stable_ingress() {
        let canary = object(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web-web-canary", "annotations": {
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "30"}}
        }));
        assert_eq!(weights("Ingress", &canary), ["canary-weight 30"]);
        let stable = object(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web"}
        }));
        assert_eq!(weights("Ingress", &stable), ["stable Ingress"]);
    }

    #[test]
    fn destination_rule_subsets() {
        let dr = object(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "web"},
            "spec": {"subsets": [{"name": "canary", "labels": {"rollout.sluice.dev/pod-template-hash": "abc"}}]}
        }));
        assert_eq!(
            weights("DestinationRule", &dr),
            ["subset canary (rollout.sluice.dev/pod-template-hash=abc)"]
        );
    }
}
