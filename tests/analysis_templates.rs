//! The ready-made AnalysisTemplates of `analysis-templates/`: every file passes Sluice's own
//! parser and `sluice lint`, and every metric of every template, measured through a real nginx
//! and a real Prometheus, succeeds on a healthy canary and fails on a bad one (30% errors,
//! 300 ms added latency): ingress-nginx's metrics through Ingresses, Istio's through
//! VirtualServices, the Gateway API ones through HTTPRoutes.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sluice::analysis::args::{ResolvedArgs, merge_args};
use sluice::analysis::condition::{Condition, Conditions};
use sluice::analysis::value::MetricValue;
use sluice::api::analysis::{AnalysisTemplate, Argument};
use sluice::api::common::AnalysisPhase;
use sluice_e2e::TestCluster;
use sluice_e2e::dataplane::DataPlane;
use sluice_e2e::demo_app::{AppRunner, ERROR_RATIO, LATENCY};
use sluice_e2e::loadgen::LoadGenerator;
use sluice_e2e::prometheus::PrometheusServer;
use sluice_test_support::controller::skip_on_real_cluster;
use sluice_test_support::manifests::{deployment, ingress, service};

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("analysis-templates")
}

fn templates() -> Vec<(String, AnalysisTemplate)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir()).expect("analysis-templates/") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let t: AnalysisTemplate = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        out.push((path.display().to_string(), t));
    }
    assert!(out.len() >= 9, "the nine templates are there: {out:?}");
    for name in [
        "gateway-api-success-rate",
        "gateway-api-latency",
        "nginx-judge",
        "istio-judge",
        "gateway-api-judge",
    ] {
        assert!(
            out.iter()
                .any(|(_, t)| t.metadata.name.as_deref() == Some(name)),
            "{name} is there"
        );
    }
    out
}

#[test]
fn every_template_parses_and_its_conditions_compile_with_default_args() {
    for (path, t) in templates() {
        assert_eq!(
            t.metadata.name.as_deref().map(str::is_empty),
            Some(false),
            "{path}"
        );
        // Supply the arguments without a default, keep the defaults (thresholds) of the others.
        let supplied: Vec<Argument> = t
            .spec
            .args
            .iter()
            .filter(|a| a.value.is_none())
            .map(|a| Argument {
                name: a.name.clone(),
                value: Some("x".into()),
                value_from: None,
            })
            .collect();
        let merged = merge_args(&t.spec.args, &supplied).unwrap();
        let args = ResolvedArgs::resolve(&merged, &Default::default()).unwrap();
        for m in &t.spec.metrics {
            let m = args.resolve_metric(m).unwrap();
            if let Some(j) = &m.provider.judge {
                // A judge has no condition: its settings and every query must be valid.
                sluice::analysis::validation::check_judge(j)
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                let sides = std::iter::once(&j.canary).chain(j.baseline.as_ref());
                for q in sides {
                    for query in [
                        Some(&q.requests),
                        Some(&q.errors),
                        q.latency_buckets.as_ref(),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        promql_parser::parser::parse(query)
                            .unwrap_or_else(|e| panic!("{path}: {query}: {e}"));
                    }
                }
                continue;
            }
            let cond = m.success_condition.as_deref().expect("a success condition");
            Condition::compile(cond).unwrap_or_else(|e| panic!("{path}: {e}"));
            let query = &m.provider.prometheus.as_ref().expect("prometheus").query;
            promql_parser::parser::parse(query).unwrap_or_else(|e| panic!("{path}: {query}: {e}"));
            // Missing data is never a success.
            let none = Conditions::compile(Some(cond), m.failure_condition.as_deref())
                .unwrap()
                .evaluate(&MetricValue::Numbers(vec![]));
            assert_ne!(none.phase, AnalysisPhase::Successful, "{path}");
            let nan = Conditions::compile(Some(cond), m.failure_condition.as_deref())
                .unwrap()
                .evaluate(&MetricValue::Numbers(vec![f64::NAN]));
            assert_ne!(nan.phase, AnalysisPhase::Successful, "{path}");
        }
    }
}

#[test]
fn sluice_lint_accepts_the_folder() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["lint", "-f"])
        .arg(dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("no problems"), "{text}");
}

fn virtual_service(name: &str, host: &str, dest: &str) -> serde_json::Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": [host], "http": [{"name": "primary", "route": [{"destination": {"host": dest}, "weight": 100}]}]}})
}

fn http_route(name: &str, host: &str, stable: &str, canary: &str) -> serde_json::Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hostnames": [host], "rules": [{"backendRefs": [
            {"name": stable, "port": 80, "weight": 50}, {"name": canary, "port": 80, "weight": 50}]}]}})
}

/// Measures every metric of `t` with `supplied` args; returns (metric, value, phase).
async fn measure(
    prom: &PrometheusServer,
    t: &AnalysisTemplate,
    supplied: &[(&str, &str)],
) -> Vec<(String, Vec<f64>, AnalysisPhase)> {
    let supplied: Vec<Argument> = supplied
        .iter()
        .map(|(k, v)| Argument {
            name: k.to_string(),
            value: Some(v.to_string()),
            value_from: None,
        })
        .collect();
    let mut out = Vec::new();
    // Judge templates are measured by `judge_templates.rs`.
    if t.spec.metrics.iter().any(|m| m.provider.judge.is_some()) {
        return out;
    }
    let merged = merge_args(&t.spec.args, &supplied).unwrap();
    let args = ResolvedArgs::resolve(&merged, &Default::default()).unwrap();
    for m in &t.spec.metrics {
        let m = args.resolve_metric(m).unwrap();
        let query = &m.provider.prometheus.as_ref().unwrap().query;
        let v = prom.query(query).await.expect("query");
        let verdict = Conditions::compile(
            m.success_condition.as_deref(),
            m.failure_condition.as_deref(),
        )
        .unwrap()
        .evaluate(&MetricValue::Numbers(v.clone()));
        out.push((m.name.clone(), v, verdict.phase));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_passes_a_good_canary_and_fails_a_bad_one_through_real_prometheus() {
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
        service("good-stable", "good"),
        service("good-canary", "good"),
        service("bad-stable", "good"),
        service("bad-canary", "bad"),
        ingress("good", "good.example", "good-stable", None),
        ingress("good-canary", "good.example", "good-canary", Some(50)),
        ingress("bad", "bad.example", "bad-stable", None),
        ingress("bad-canary", "bad.example", "bad-canary", Some(50)),
        virtual_service("good", "good.mesh", "good-canary"),
        virtual_service("bad", "bad.mesh", "bad-canary"),
        http_route("good", "good.gw", "good-stable", "good-canary"),
        http_route("bad", "bad.gw", "bad-stable", "bad-canary"),
    ] {
        cluster.apply_object(obj).unwrap();
    }
    let dp = DataPlane::start(cluster.client()).await.expect("nginx");
    let prom = PrometheusServer::start(&[dp.metrics_addr()])
        .await
        .expect("prometheus");
    // Until nginx has every pod.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cluster
        .endpoints("default", "bad-canary")
        .iter()
        .chain(cluster.endpoints("default", "good-canary").iter())
        .filter(|e| e.ready && e.process_port.is_some())
        .count()
        < 4
    {
        assert!(std::time::Instant::now() < deadline, "pods never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dp.wait_synced(Duration::from_secs(5)).await;
    let loads = [
        LoadGenerator::start(dp.ingress_addr(), "good.example", 20),
        LoadGenerator::start(dp.ingress_addr(), "bad.example", 20),
        LoadGenerator::start(dp.mesh_addr(), "good.mesh", 20),
        LoadGenerator::start(dp.mesh_addr(), "bad.mesh", 20),
        LoadGenerator::start(dp.gateway_addr(), "good.gw", 20),
        LoadGenerator::start(dp.gateway_addr(), "bad.gw", 20),
    ];
    // A 5s rate window full of samples.
    prom.wait_until(
        "count(istio_requests_total) + count(nginx_ingress_controller_requests{canary!=\"\"})",
        |v| v.first().is_some_and(|x| *x >= 4.0),
        Duration::from_secs(30),
    )
    .await
    .expect("canary series scraped");
    prom.wait_until(
        "count(gateway_api_http_requests_total{backend_name=~\".*-canary\"})",
        |v| v.first().is_some_and(|x| *x >= 3.0),
        Duration::from_secs(30),
    )
    .await
    .expect("HTTPRoute canary series scraped");
    tokio::time::sleep(Duration::from_secs(7)).await;

    let thresholds = [
        ("success-rate", "0.95"),
        ("window", "5s"),
        ("namespace", "default"),
    ];
    for (path, t) in templates() {
        let istio = path.contains("istio");
        let (p95, p99) = if istio {
            ("200", "200")
        } else {
            ("0.2", "0.2")
        };
        for (case, expect) in [
            ("good", AnalysisPhase::Successful),
            ("bad", AnalysisPhase::Failed),
        ] {
            let service = format!("{case}-canary");
            let mut args = thresholds.to_vec();
            args.extend([
                ("ingress", case),
                ("route", case),
                ("service", service.as_str()),
                ("p95-threshold", p95),
                ("p99-threshold", p99),
            ]);
            for (metric, value, phase) in measure(&prom, &t, &args).await {
                assert_eq!(
                    phase, expect,
                    "{path} metric {metric} on the {case} canary measured {value:?}"
                );
            }
        }
    }
    drop(loads);
}
