//! The judge templates of `analysis-templates/` through a real nginx data plane and a real
//! Prometheus: each one, run look by look as the controller runs it, passes a good canary and
//! fails a bad one (30% errors, 300 ms more latency), for ingress-nginx's metrics through
//! Ingresses, Istio's through VirtualServices and the Gateway API ones through HTTPRoutes.

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::json;
use sluice::analysis::args::{SecretValues, merge_args};
use sluice::analysis::run::{ProviderRequest, begin};
use sluice::api::analysis::{AnalysisRunSpec, AnalysisRunStatus, AnalysisTemplate, Argument};
use sluice::api::common::AnalysisPhase;
use sluice::metrics::prometheus::{AddressAllowlist, PrometheusConfig, PrometheusProvider};
use sluice_e2e::TestCluster;
use sluice_e2e::dataplane::DataPlane;
use sluice_e2e::demo_app::{AppRunner, ERROR_RATIO, LATENCY};
use sluice_e2e::loadgen::LoadGenerator;
use sluice_e2e::prometheus::PrometheusServer;
use sluice_test_support::controller::skip_on_real_cluster;
use sluice_test_support::manifests::{deployment, ingress, service};

fn template(name: &str) -> AnalysisTemplate {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("analysis-templates")
        .join(format!("{name}.yaml"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn virtual_service(name: &str, host: &str, stable: &str, canary: &str) -> serde_json::Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": [host], "http": [{"name": "primary", "route": [
            {"destination": {"host": stable}, "weight": 50},
            {"destination": {"host": canary}, "weight": 50}]}]}})
}

fn http_route(name: &str, host: &str, stable: &str, canary: &str) -> serde_json::Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hostnames": [host], "rules": [{"backendRefs": [
            {"name": stable, "port": 80, "weight": 50}, {"name": canary, "port": 80, "weight": 50}]}]}})
}

/// Runs `t` look by look (every second, as its `interval` says) until it completes: the phase,
/// the deciding measurement's message and how many looks it took.
async fn judge_run(
    prom: &PrometheusServer,
    t: &AnalysisTemplate,
    supplied: &[(&str, &str)],
) -> (AnalysisPhase, String, usize) {
    let supplied: Vec<Argument> = supplied
        .iter()
        .map(|(k, v)| Argument {
            name: k.to_string(),
            value: Some(v.to_string()),
            value_from: None,
        })
        .collect();
    let spec = AnalysisRunSpec {
        metrics: t.spec.metrics.clone(),
        args: merge_args(&t.spec.args, &supplied).unwrap(),
        ..Default::default()
    };
    for m in &spec.metrics {
        assert!(m.provider.judge.is_some(), "{} is a judge", m.name);
    }
    let provider = PrometheusProvider::new(PrometheusConfig {
        allowlist: AddressAllowlist::new([prom.url()]).unwrap(),
        default_address: Some(prom.url()),
    })
    .unwrap();
    let mut status: Option<AnalysisRunStatus> = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut looks = 0;
    loop {
        let now = Timestamp::now();
        let pass = begin(&spec, status.as_ref(), &SecretValues::new(), now);
        let mut results = Vec::new();
        for req in pass.requests.clone() {
            let ProviderRequest::Judge(j) = &req.provider else {
                panic!("not a judge request: {req:?}");
            };
            looks += 1;
            let answer = sluice::metrics::judge::measure(&provider, j).await;
            results.push(req.into_result(now, Timestamp::now(), answer));
        }
        let u = pass.finish(results, Timestamp::now());
        if u.status.phase.is_completed() {
            let message = u.status.metric_results[0]
                .measurements
                .last()
                .and_then(|m| m.message.clone())
                .unwrap_or_default();
            return (u.status.phase, message, looks);
        }
        assert!(
            Instant::now() < deadline,
            "no verdict after 3 minutes: {:?}",
            u.status
        );
        status = Some(u.status);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_judge_template_passes_a_good_canary_and_fails_a_bad_one_through_real_prometheus() {
    if skip_on_real_cluster("needs pod processes the test cluster runs (the demo app)") {
        return;
    }
    let cluster = TestCluster::builder()
        .pod_ready_delay(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    cluster.install_istio_crds().unwrap();
    cluster.set_pod_runner(AppRunner);
    for obj in [
        deployment("good", json!({LATENCY: "1ms"})),
        deployment("bad", json!({ERROR_RATIO: "0.3", LATENCY: "300ms"})),
        deployment("stable", json!({LATENCY: "1ms"})),
        service("good-stable", "stable"),
        service("good-canary", "good"),
        service("bad-stable", "stable"),
        service("bad-canary", "bad"),
        ingress("good", "good.example", "good-stable", None),
        ingress("good-canary", "good.example", "good-canary", Some(50)),
        ingress("bad", "bad.example", "bad-stable", None),
        ingress("bad-canary", "bad.example", "bad-canary", Some(50)),
        virtual_service("good", "good.mesh", "good-stable", "good-canary"),
        virtual_service("bad", "bad.mesh", "bad-stable", "bad-canary"),
        http_route("good", "good.gw", "good-stable", "good-canary"),
        http_route("bad", "bad.gw", "bad-stable", "bad-canary"),
    ] {
        cluster.apply_object(obj).unwrap();
    }
    let dp = DataPlane::start(cluster.client()).await.expect("nginx");
    let prom = PrometheusServer::start(&[dp.metrics_addr()])
        .await
        .expect("prometheus");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ["bad-canary", "good-canary", "good-stable"]
        .iter()
        .flat_map(|s| cluster.endpoints("default", s))
        .filter(|e| e.ready && e.process_port.is_some())
        .count()
        < 6
    {
        assert!(Instant::now() < deadline, "pods never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dp.wait_synced(Duration::from_secs(5)).await;
    let _loads = [
        LoadGenerator::start(dp.ingress_addr(), "good.example", 20),
        LoadGenerator::start(dp.ingress_addr(), "bad.example", 20),
        LoadGenerator::start(dp.mesh_addr(), "good.mesh", 20),
        LoadGenerator::start(dp.mesh_addr(), "bad.mesh", 20),
        LoadGenerator::start(dp.gateway_addr(), "good.gw", 20),
        LoadGenerator::start(dp.gateway_addr(), "bad.gw", 20),
    ];
    prom.wait_until(
        "count(nginx_ingress_controller_requests{canary!=\"\"})",
        |v| v.first().is_some_and(|x| *x >= 2.0),
        Duration::from_secs(30),
    )
    .await
    .expect("canary series scraped");

    let mut report = Vec::new();
    for name in ["nginx-judge", "istio-judge", "gateway-api-judge"] {
        let t = template(name);
        for (case, expect) in [
            ("bad", AnalysisPhase::Failed),
            ("good", AnalysisPhase::Successful),
        ] {
            let canary = format!("{case}-canary");
            let stable = format!("{case}-stable");
            let args = [
                ("namespace", "default"),
                ("ingress", case),
                ("route", case),
                ("service", canary.as_str()),
                ("stable-service", stable.as_str()),
            ];
            let (phase, message, looks) = judge_run(&prom, &t, &args).await;
            assert_eq!(phase, expect, "{name} on the {case} canary: {message}");
            report.push(format!(
                "{name} {case}: {phase:?} after {looks} looks: {message}"
            ));
        }
    }
    println!("{}", report.join("\n"));
}
