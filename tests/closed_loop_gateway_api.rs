//! Gateway API traffic through the closed loop: a real nginx follows the HTTPRoutes (weighted
//! backends per rule, header matches, request mirrors), its Gateway API metrics go to a real
//! Prometheus, and Rollouts routed through HTTPRoute weights are promoted or aborted on what
//! that Prometheus measures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_e2e::TestCluster;
use sluice_e2e::dataplane::DataPlane;
use sluice_e2e::demo_app::AppRunner;
use sluice_e2e::loadgen::get;

fn deployment(name: &str, version: &str) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "track": name}},
            "template": {"metadata": {"labels": {"app": "web", "track": name}},
                "spec": {"containers": [{"name": "app", "image": format!("web:{version}")}]}}}})
}

fn service(name: &str, track: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": "web", "track": track}, "ports": [{"port": 80, "targetPort": 8080}]}})
}

fn http_route(rules: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gateway"}], "hostnames": ["web.example"], "rules": rules}})
}

/// Status and version of `n` sequential requests.
async fn answers(
    addr: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(addr, host, headers).await);
    }
    out
}

fn count_version(a: &[(u16, String)], version: &str) -> usize {
    a.iter().filter(|(s, v)| *s == 200 && v == version).count()
}

/// The value of the one series of `metric` whose labels contain every `labels` pair (0 if none).
fn series(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

async fn until(dp: &DataPlane, what: &str, check: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        dp.wait_synced(Duration::from_secs(5)).await;
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; nginx config:\n{}\nlast error: {:?}",
            dp.config(),
            dp.last_error()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_follows_httproute_weights_header_matches_and_mirrors() {
    let cluster = TestCluster::builder()
        .pod_ready_delay(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    cluster.install_istio_crds().unwrap();
    cluster.set_pod_runner(AppRunner);
    for obj in [
        deployment("stable", "v1"),
        deployment("canary", "v2"),
        service("web-stable", "stable"),
        service("web-canary", "canary"),
        http_route(json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                          "headers": [{"name": "X-Canary", "value": "yes"}]}],
             "backendRefs": [{"name": "web-canary", "port": 80}]},
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 80},
                             {"name": "web-canary", "port": 80, "weight": 20}]}
        ])),
    ] {
        cluster.apply_object(obj).unwrap();
    }
    let dp = DataPlane::start(cluster.client()).await.expect("nginx");
    let gw = dp.gateway_addr();
    until(&dp, "all four pods behind the HTTPRoute", async || {
        ["web-stable", "web-canary"].iter().all(|s| {
            cluster
                .endpoints("default", s)
                .iter()
                .filter(|e| e.ready && e.process_port.is_some())
                .count()
                == 2
        }) && count_version(
            &answers(gw, "web.example", &[("X-Canary", "yes")], 4).await,
            "v2",
        ) == 4
    })
    .await;

    // Weights 80/20: exactly one request in five to the canary (smooth weighted round robin).
    let split = answers(gw, "web.example", &[], 200).await;
    assert_eq!(count_version(&split, "v1"), 160, "{split:?}");
    assert_eq!(count_version(&split, "v2"), 40, "{split:?}");
    // The header rule sends everything to the canary; a Host no route names gets 404.
    let header = answers(gw, "web.example", &[("X-Canary", "yes")], 20).await;
    assert_eq!(count_version(&header, "v2"), 20);
    assert_eq!(get(gw, "other.example", &[]).await.0, 404);

    // New weights, and a mirror of 50% of the main rule's requests to the canary.
    let reloads = dp.reloads();
    cluster
        .apply_object(http_route(json!([
            {"matches": [{"headers": [{"name": "X-Canary", "value": "yes"}]}],
             "backendRefs": [{"name": "web-canary", "port": 80}]},
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 100},
                             {"name": "web-canary", "port": 80, "weight": 0}],
             "filters": [{"type": "RequestMirror", "requestMirror": {
                 "backendRef": {"name": "web-canary", "port": 80}, "percent": 50}}]}
        ])))
        .unwrap();
    until(&dp, "reloaded with the mirror", async || {
        dp.reloads() > reloads && dp.config().contains("mirror /_sl_mirror_")
    })
    .await;
    let before = dp.metrics_text();
    let mirrored = answers(gw, "web.example", &[], 100).await;
    assert_eq!(
        count_version(&mirrored, "v1"),
        100,
        "users see stable only: {mirrored:?}"
    );
    // The canary got exactly half of them as mirrored copies, counted on its backend.
    let canary = [
        ("route_name", "web"),
        ("route_rule", "1"),
        ("backend_name", "web-canary"),
    ];
    let stable = [
        ("route_name", "web"),
        ("route_rule", "1"),
        ("backend_name", "web-stable"),
    ];
    let metric = "gateway_api_http_requests_total";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = dp.metrics_text();
        let got = (
            series(&text, metric, &stable) - series(&before, metric, &stable),
            series(&text, metric, &canary) - series(&before, metric, &canary),
        );
        if got == (100.0, 50.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stable and mirrored requests counted {got:?}, expected (100, 50):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = dp.metrics_text();
    assert!(
        text.contains("gateway_api_http_requests_total{backend_name=\"web-canary\",backend_namespace=\"default\",response_code=\"200\",route_kind=\"HTTPRoute\",route_name=\"web\",route_namespace=\"default\",route_rule=\"0\"}"),
        "the header rule's requests: {text}"
    );

    // A backendRef to a Service that does not exist keeps its share, answered with 500.
    let reloads = dp.reloads();
    cluster
        .apply_object(http_route(json!([
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 3},
                             {"name": "web-gone", "port": 80, "weight": 1}]}
        ])))
        .unwrap();
    until(&dp, "reloaded with the missing backend", async || {
        dp.reloads() > reloads && !dp.config().contains("mirror /_sl_mirror_")
    })
    .await;
    let broken = answers(gw, "web.example", &[], 40).await;
    assert_eq!(count_version(&broken, "v1"), 30, "{broken:?}");
    assert_eq!(
        broken.iter().filter(|(s, _)| *s == 500).count(),
        10,
        "{broken:?}"
    );
}
