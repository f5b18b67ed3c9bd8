//! Analysis driving Rollouts through the controller, measured by a real Prometheus server:
//! Successful advances, Failed aborts, Inconclusive pauses, background analysis from its
//! starting step, and a blind analysis (Prometheus stopped) never promotes.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, PostParams};
use sluice::api::analysis::{AnalysisRun, AnalysisTemplate};
use sluice_e2e::prometheus::PrometheusServer;
use sluice_test_support::controller::*;

/// A template whose measured value is its `value` argument, so each test decides the outcome;
/// the query still goes through a real Prometheus.
const TEMPLATE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: rate, namespace: default}
spec:
  args:
  - name: value
  metrics:
  - name: success-rate
    interval: 1s
    count: 3
    failureLimit: 0
    consecutiveErrorLimit: 2
    successCondition: result[0] >= 0.95
    failureCondition: result[0] < 0.5
    provider:
      prometheus:
        query: vector({{args.value}})
"#;

async fn env_with_prometheus(prom: &PrometheusServer) -> Env {
    let env = Env::with_config(prometheus_config(&prom.url(), Some(&prom.url()))).await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let templates: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), env.ns());
    let mut template: AnalysisTemplate = serde_yaml::from_str(TEMPLATE).unwrap();
    template.metadata.namespace = None;
    templates
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    env
}

fn step_analysis(value: &str) -> String {
    format!(
        "{NGINX}steps:\n- setWeight: 20\n- analysis:\n    templates: [{{templateName: rate}}]\n    args: [{{name: value, value: \"{value}\"}}]\n- setWeight: 60\n- pause: {{}}\n"
    )
}

async fn runs(env: &Env) -> Vec<AnalysisRun> {
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    api.list(&Default::default()).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_outcomes_drive_the_rollout() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");

    // Successful: the step completes and the rollout moves on.
    {
        let env = env_with_prometheus(&prom).await;
        env.create(&rollout("web", 2, "web:1", &step_analysis("0.99")))
            .await;
        env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
            .await;
        env.set_image("web", "web:2").await;
        let r = env
            .wait_for("web", "past the analysis", 90, |r| step(r) == Some(3))
            .await;
        assert_eq!(weight(&r), Some(60));
        let st = r.status.unwrap();
        let run = st.canary.current_step_analysis_run_status.clone();
        let all = runs(&env).await;
        assert_eq!(all.len(), 1);
        let run_obj = &all[0];
        assert_eq!(
            run_obj.labels().get("rollout-type").map(String::as_str),
            Some("Step")
        );
        assert_eq!(
            run_obj.labels().get("step-index").map(String::as_str),
            Some("1")
        );
        let status = run_obj.status.clone().unwrap();
        assert_eq!(status.phase.as_str(), "Successful");
        assert_eq!(status.metric_results[0].count, 3);
        let _ = run;
    }

    // Failed: the rollout aborts, traffic returns to stable, and the status says why.
    {
        let env = env_with_prometheus(&prom).await;
        env.create(&rollout("web", 2, "web:1", &step_analysis("0.3")))
            .await;
        env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
            .await;
        env.set_image("web", "web:2").await;
        let r = env
            .wait_for("web", "aborted", 90, |r| {
                phase(r) == "Degraded" && weight(r) == Some(0)
            })
            .await;
        let msg = r.status.unwrap().message.unwrap_or_default();
        assert!(msg.contains("success-rate"), "{msg}");
        assert!(msg.contains("0.3"), "{msg}");
        assert_eq!(env.nginx_weight("web").await, Some(0));
    }

    // Inconclusive: paused until promoted.
    {
        let env = env_with_prometheus(&prom).await;
        env.create(&rollout("web", 2, "web:1", &step_analysis("0.7")))
            .await;
        env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
            .await;
        env.set_image("web", "web:2").await;
        let r = env
            .wait_for("web", "paused inconclusive", 90, |r| phase(r) == "Paused")
            .await;
        assert_eq!(step(&r), Some(1));
        env.promote("web").await;
        env.wait_for("web", "moved on after promote", 60, |r| step(r) == Some(3))
            .await;
    }

    // Background analysis from startingStep 1 that fails: aborted.
    {
        let env = env_with_prometheus(&prom).await;
        let spec = format!(
            "{NGINX}analysis:\n  templates: [{{templateName: rate}}]\n  args: [{{name: value, value: \"0.1\"}}]\n  startingStep: 1\nsteps:\n- setWeight: 20\n- pause: {{duration: 1s}}\n- setWeight: 40\n- pause: {{}}\n"
        );
        env.create(&rollout("web", 2, "web:1", &spec)).await;
        env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
            .await;
        env.set_image("web", "web:2").await;
        env.wait_for("web", "aborted by background analysis", 90, |r| {
            phase(r) == "Degraded"
        })
        .await;
        let all = runs(&env).await;
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].labels().get("rollout-type").map(String::as_str),
            Some("Background")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stopped_never_promotes_and_aborts_after_the_error_limit() {
    let mut prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env_with_prometheus(&prom).await;
    env.create(&rollout("web", 2, "web:1", &step_analysis("0.99")))
        .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    prom.stop();
    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "aborted on errors", 120, |r| phase(r) == "Degraded")
        .await;
    let st = r.status.unwrap();
    assert!(st.abort);
    assert_ne!(
        st.stable_rs, st.current_pod_hash,
        "nothing promoted on missing data"
    );
    let msg = st.message.unwrap_or_default();
    assert!(msg.to_lowercase().contains("error"), "{msg}");
    let _ = Duration::ZERO;
}
