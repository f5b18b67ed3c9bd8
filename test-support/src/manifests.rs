//! Kubernetes objects the data-plane tests apply to the test cluster, as JSON: a two-replica
//! Deployment, a Service, and an NGINX Ingress (canary or not), all in `default`.

use serde_json::json;

/// A two-replica Deployment of image `NAME:v1`, its pods labelled `app: NAME` with `annotations`.
pub fn deployment(name: &str, annotations: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": format!("{name}:v1")}]}}}})
}

/// A Service on port 80 for the pods labelled `app: APP`.
pub fn service(name: &str, app: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}})
}

/// An NGINX Ingress for `host` to `service`; with `canary_weight`, a canary Ingress.
pub fn ingress(
    name: &str,
    host: &str,
    service: &str,
    canary_weight: Option<u32>,
) -> serde_json::Value {
    let annotations = match canary_weight {
        Some(w) => json!({"nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-weight": w.to_string()}),
        None => json!({}),
    };
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
}
