//! The controller never logs a Secret value, whichever provider the value goes through: one
//! controller, every log line it writes at trace level captured, and AnalysisRuns whose
//! Prometheus query and header, web URL and header, and Job arguments come from a Secret —
//! measured successfully, measured into an error (a query the real Prometheus refuses, a
//! connection refused), and terminated. The captured log, the AnalysisRuns' status and the
//! namespace's Events are searched for the values.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, PostParams};
use sluice::api::analysis::AnalysisRun;
use sluice_e2e::prometheus::PrometheusServer;
use sluice_test_support::controller::*;

const TENANT: &str = "tenant-q7Zr2Vx9";
const TOKEN: &str = "tok-Hq3LmW8pKs0Y";

fn run(name: &str, ns: &str, metrics: &str) -> AnalysisRun {
    let yaml = format!(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisRun
metadata: {{name: {name}, namespace: {ns}}}
spec:
  args:
  - name: tenant
    valueFrom: {{secretKeyRef: {{name: provider-secrets, key: tenant}}}}
  - name: token
    valueFrom: {{secretKeyRef: {{name: provider-secrets, key: token}}}}
  metrics:
{metrics}"#
    );
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_provider_logs_a_secret_value_in_success_error_or_termination() {
    if skip_on_real_cluster("reads the controller's own log") {
        return;
    }
    sluice_test_support::logs::capture();
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    // Nothing listens on the discard port: the web metric's connection is refused.
    let refused = "http://127.0.0.1:9";
    let config = sluice::controller::ControllerConfig {
        prometheus: sluice::metrics::prometheus::PrometheusConfig {
            allowlist: sluice::metrics::prometheus::AddressAllowlist::new([
                prom.url().as_str(),
                refused,
            ])
            .expect("allowlist"),
            default_address: None,
        },
        ..config()
    };
    let env = Env::with_config(config).await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), env.ns());
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "provider-secrets"},
                "stringData": {"tenant": TENANT, "token": TOKEN}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let prom_url = prom.url();
    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    let cases = [
        // A query Prometheus answers (no series: an empty result, not a success).
        (
            "prometheus-answered",
            format!(
                r#"  - name: m
    successCondition: "len(result) == 0"
    provider:
      prometheus:
        address: {prom_url}
        query: 'up{{tenant="{{{{args.tenant}}}}"}}'
        headers: [{{key: Authorization, value: "Bearer {{{{args.token}}}}"}}]
"#
            ),
        ),
        // A query Prometheus refuses, quoting what it could not parse.
        (
            "prometheus-refused",
            format!(
                r#"  - name: m
    consecutiveErrorLimit: 0
    provider:
      prometheus:
        address: {prom_url}
        query: 'sum(rate(x{{tenant="{{{{args.tenant}}}}"}}[1m]) {{{{args.token}}}}'
"#
            ),
        ),
        // A web endpoint that refuses the connection, the Secret in its path and header.
        (
            "web-refused",
            format!(
                r#"  - name: m
    consecutiveErrorLimit: 0
    successCondition: "result == true"
    provider:
      web:
        url: "{refused}/{{{{args.tenant}}}}"
        timeoutSeconds: 1
        headers: [{{key: Authorization, value: "Bearer {{{{args.token}}}}"}}]
"#
            ),
        ),
        // A Job given the Secret as arguments, terminated before it ends.
        (
            "job-terminated",
            r#"  - name: m
    provider:
      job:
        spec:
          backoffLimit: 0
          template:
            spec:
              restartPolicy: Never
              containers:
              - name: c
                image: busybox
                args: ["--tenant={{args.tenant}}", "--token={{args.token}}"]
"#
            .to_string(),
        ),
    ];
    for (name, metrics) in &cases {
        runs.create(&PostParams::default(), &run(name, env.ns(), metrics))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The Job's run is terminated as a Rollout moving on would.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = runs.get("job-terminated").await.unwrap();
        if r.status
            .as_ref()
            .is_some_and(|s| !s.metric_results.is_empty())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no measurement of the Job: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runs.patch(
        "job-terminated",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"terminate": true}})),
    )
    .await
    .unwrap();
    let mut statuses = String::new();
    for (name, _) in &cases {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let r = loop {
            let r = runs.get(name).await.unwrap();
            if r.status.as_ref().is_some_and(|s| s.phase.is_completed()) {
                break r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not complete: {:?}",
                r.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        statuses.push_str(&serde_json::to_string(&r.status).unwrap());
        statuses.push('\n');
    }
    // Each case took the path it is there for.
    for (name, phase) in [
        ("prometheus-answered", "\"phase\":\"Successful\""),
        ("prometheus-refused", "\"phase\":\"Error\""),
        ("web-refused", "\"phase\":\"Error\""),
    ] {
        let st = runs.get(name).await.unwrap().status;
        let text = serde_json::to_string(&st).unwrap();
        assert!(text.contains(phase), "{name}: {text}");
    }
    let events: Api<Event> = Api::namespaced(env.client.clone(), env.ns());
    let events: String = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|e| {
            format!(
                "{} {}\n",
                e.reason.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default()
            )
        })
        .collect();
    let logged = sluice_test_support::logs::text();
    // The capture works and saw the measurements.
    assert!(
        logged.contains("querying prometheus"),
        "no provider log captured"
    );
    for (what, text) in [("log", &logged), ("status", &statuses), ("Events", &events)] {
        for secret in [TENANT, TOKEN] {
            let at: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(secret))
                .take(3)
                .collect();
            assert!(at.is_empty(), "a Secret value in the {what}: {at:#?}");
        }
    }
}
