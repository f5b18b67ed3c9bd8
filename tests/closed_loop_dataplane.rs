//! The nginx data plane of the closed loop on its own (no controller): it follows Ingress canary
//! annotations (weight, weight-total, by-header, by-header-value, by-cookie) and VirtualServices
//! (weights, subsets from a DestinationRule, header matches), and reloads when they change.

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

fn service(name: &str, selector: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]}})
}

fn ingress(name: &str, service: &str, annotations: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"rules": [{"host": "web.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
}

/// Versions of `n` requests.
async fn versions(
    addr: std::net::SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (status, version) = get(addr, host, headers).await;
        assert_eq!(status, 200, "{host} {headers:?}");
        out.push(version);
    }
    out
}

/// Whether `n` requests all got a 200 from `version` (no assertion: for waiting).
async fn served(
    addr: std::net::SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    version: &str,
    n: usize,
) -> bool {
    for _ in 0..n {
        if get(addr, host, headers).await != (200, version.to_string()) {
            return false;
        }
    }
    true
}

fn count(v: &[String], version: &str) -> usize {
    v.iter().filter(|x| *x == version).count()
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
async fn nginx_follows_ingress_canary_annotations_and_virtual_services() {
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
        service("web-stable", json!({"app": "web", "track": "stable"})),
        service("web-canary", json!({"app": "web", "track": "canary"})),
        service("web", json!({"app": "web"})),
        ingress("web", "web-stable", json!({})),
        ingress(
            "web-canary",
            "web-canary",
            json!({"nginx.ingress.kubernetes.io/canary": "true",
                   "nginx.ingress.kubernetes.io/canary-weight": "0",
                   "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary",
                   "nginx.ingress.kubernetes.io/canary-by-cookie": "canary"}),
        ),
    ] {
        cluster.apply_object(obj).unwrap();
    }
    let dp = DataPlane::start(cluster.client()).await.expect("nginx");
    let ing = dp.ingress_addr();
    until(&dp, "all four pods behind nginx", async || {
        cluster
            .endpoints("default", "web")
            .iter()
            .filter(|e| e.ready && e.process_port.is_some())
            .count()
            == 4
            && served(ing, "web.example", &[], "v1", 4).await
            && served(ing, "web.example", &[("X-Canary", "always")], "v2", 4).await
    })
    .await;

    // Weight 0: nothing to the canary, unless a header or cookie asks for it.
    let plain = versions(ing, "web.example", &[], 40).await;
    assert_eq!(count(&plain, "v2"), 0);
    let always = versions(ing, "web.example", &[("X-Canary", "always")], 10).await;
    assert_eq!(count(&always, "v2"), 10);
    let cookie = versions(ing, "web.example", &[("Cookie", "canary=always")], 10).await;
    assert_eq!(count(&cookie, "v2"), 10);
    // The header wins over the cookie.
    let never = versions(
        ing,
        "web.example",
        &[("X-Canary", "never"), ("Cookie", "canary=always")],
        10,
    )
    .await;
    assert_eq!(count(&never, "v2"), 0);

    // Weight 30 of a total of 200: exactly 15% (smooth weighted round robin, one worker).
    let reloads = dp.reloads();
    cluster
        .apply_object(ingress(
            "web-canary",
            "web-canary",
            json!({"nginx.ingress.kubernetes.io/canary": "true",
                   "nginx.ingress.kubernetes.io/canary-weight": "30",
                   "nginx.ingress.kubernetes.io/canary-weight-total": "200",
                   "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary",
                   "nginx.ingress.kubernetes.io/canary-by-header-value": "yes-please"}),
        ))
        .unwrap();
    until(&dp, "reloaded with the new weight", async || {
        dp.reloads() > reloads
            && dp.config().contains("weight=30")
            && served(ing, "web.example", &[("X-Canary", "yes-please")], "v2", 4).await
    })
    .await;
    let split = versions(ing, "web.example", &[], 200).await;
    assert_eq!(count(&split, "v2"), 30, "15% of 200");
    let value = versions(ing, "web.example", &[("X-Canary", "yes-please")], 10).await;
    assert_eq!(count(&value, "v2"), 10);

    // VirtualService: 25/75 between subsets of one Service, a header route to the canary.
    cluster
        .apply_object(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"host": "web", "subsets": [
                {"name": "stable", "labels": {"track": "stable"}},
                {"name": "canary", "labels": {"track": "canary"}}]}}),
        )
        .unwrap();
    cluster
        .apply_object(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"hosts": ["web.mesh"], "http": [
                {"name": "preview", "match": [{"headers": {"x-preview": {"exact": "1"}}}],
                 "route": [{"destination": {"host": "web", "subset": "canary"}}]},
                {"name": "primary", "route": [
                    {"destination": {"host": "web", "subset": "stable"}, "weight": 75},
                    {"destination": {"host": "web", "subset": "canary"}, "weight": 25}]}]}}),
        )
        .unwrap();
    let mesh = dp.mesh_addr();
    until(&dp, "the VirtualService is served", async || {
        served(mesh, "web.mesh", &[("x-preview", "1")], "v2", 4).await
    })
    .await;
    let split = versions(mesh, "web.mesh", &[], 100).await;
    assert_eq!(count(&split, "v2"), 25, "25% of 100");
    let preview = versions(mesh, "web.mesh", &[("x-preview", "1")], 10).await;
    assert_eq!(count(&preview, "v2"), 10);

    // The access log became metrics with ingress-nginx's and Istio's names and labels.
    let deadline = Instant::now() + Duration::from_secs(10);
    while dp.logged_requests() < 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = dp.metrics_text();
    assert!(
        text.contains(
            "nginx_ingress_controller_requests{canary=\"default-web-canary-80\",ingress=\"web\",namespace=\"default\",service=\"web-stable\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("istio_requests_total{destination_service_name=\"web\",destination_service_namespace=\"default\",destination_version=\"v2\""),
        "{text}"
    );
}
