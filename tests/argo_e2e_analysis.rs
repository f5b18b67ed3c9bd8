//! Argo Rollouts' analysis e2e scenarios (`test/e2e/analysis_test.go`), replayed on the test
//! cluster with the same actions and expectations. Argo's templates use the `job` and `web`
//! providers; here each metric is a Prometheus query against a real Prometheus whose result
//! gives the same outcome (`vector(1)` where Argo's job exits 0, a failing condition where it
//! exits 1). Each test is named after Argo's; blue-green cases wait for the blue-green strategy.

use std::time::Duration;

use kube::api::{Api, PostParams};
use sluice::api::analysis::AnalysisRun;
use sluice::api::common::AnalysisPhase;
use sluice_e2e::prometheus::PrometheusServer;
use sluice_test_support::argo::{
    analysis_runs as runs, basic, env_with_templates, healthy_then_update, is_background, is_step,
    run_phase, wait_run_phase,
};
use sluice_test_support::controller::*;
use sluice_test_support::rollout::phase_is;

async fn env(prom: &PrometheusServer, templates: &[&str]) -> Env {
    env_with_templates(&prom.url(), Some(&prom.url()), templates).await
}

/// Argo's `web-background`: measures every 5 s (1 s here) until the rollout completes.
const WEB_BACKGROUND: &str = r#"
kind: AnalysisTemplate
metadata: {name: web-background}
spec:
  metrics:
  - name: web
    interval: 1s
    successCondition: result[0] == 1
    provider:
      prometheus: {query: vector(1)}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_background_analysis() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom, &[WEB_BACKGROUND]).await;
    let ro = basic(
        "rollout-background-analysis",
        1,
        "analysis:\n  templates: [{templateName: web-background}]\nsteps:\n- setWeight: 10\n- pause: {}\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(
        "rollout-background-analysis",
        "paused",
        60,
        phase_is("Paused"),
    )
    .await;
    let all = runs(&env).await;
    assert_eq!(all.len(), 1, "one background run");
    assert!(is_background(&all[0]));
    wait_run_phase(&env, is_background, AnalysisPhase::Running, 10).await;
    env.promote("rollout-background-analysis").await;
    env.wait_for(
        "rollout-background-analysis",
        "healthy",
        60,
        phase_is("Healthy"),
    )
    .await;
    // Terminated at completion after passing measurements: Successful.
    wait_run_phase(&env, is_background, AnalysisPhase::Successful, 30).await;
}

/// Argo's `web-background-inconclusive`: neither condition ever holds.
const WEB_BACKGROUND_INCONCLUSIVE: &str = r#"
kind: AnalysisTemplate
metadata: {name: web-background-inconclusive}
spec:
  metrics:
  - name: web
    interval: 1s
    inconclusiveLimit: 3
    successCondition: result[0] == 999
    failureCondition: result[0] == -1
    provider:
      prometheus: {query: vector(1)}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_inconclusive_background_analysis() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom, &[WEB_BACKGROUND_INCONCLUSIVE]).await;
    let name = "rollout-background-analysis-inconclusive";
    let ro = basic(
        name,
        2,
        "steps:\n- setWeight: 10\n- pause: {duration: 30s}\nanalysis:\n  templates: [{templateName: web-background-inconclusive}]\n  startingStep: 1\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "paused", 60, phase_is("Paused")).await;
    wait_run_phase(&env, is_background, AnalysisPhase::Running, 20).await;
    assert_eq!(runs(&env).await.len(), 1);
    wait_run_phase(&env, is_background, AnalysisPhase::Inconclusive, 30).await;
    let r = env
        .wait_for(name, "paused by the inconclusive run", 30, |r| {
            r.status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains("InconclusiveAnalysisRun"))
        })
        .await;
    assert_eq!(phase(&r), "Paused");
    // Past the 30 s pause it stays paused: the inconclusive run holds it, not the step.
    let st = r.status.unwrap();
    assert!(
        st.pause_conditions
            .iter()
            .any(|c| format!("{:?}", c.reason).contains("InconclusiveAnalysis")),
        "{:?}",
        st.pause_conditions
    );
}

/// Argo's `sleep-job` with its default arguments: one measurement that passes.
const SLEEP_JOB: &str = r#"
kind: AnalysisTemplate
metadata: {name: sleep-job}
spec:
  metrics:
  - name: sleep-job
    count: 1
    successCondition: result[0] == 1
    provider:
      prometheus: {query: vector(1)}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_inline_analysis() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom, &[SLEEP_JOB]).await;
    let name = "rollout-inline-analysis";
    let analysis = "- analysis:\n    templates: [{templateName: sleep-job}]\n";
    let ro = basic(
        name,
        1,
        &format!("steps:\n- setWeight: 10\n{analysis}- pause: {{}}\n{analysis}{analysis}"),
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "paused", 60, phase_is("Paused")).await;
    assert_eq!(runs(&env).await.len(), 1);
    wait_run_phase(&env, is_step, AnalysisPhase::Successful, 20).await;
    env.promote(name).await;
    env.wait_for(name, "healthy", 60, phase_is("Healthy")).await;
    let all = runs(&env).await;
    assert_eq!(all.len(), 3, "one run per analysis step");
    assert!(
        all.iter()
            .all(|r| run_phase(r) == AnalysisPhase::Successful)
    );
}

/// Argo's `multiple-job`: two metrics in one template, the first after an initial delay.
const MULTIPLE_JOB: &str = r#"
kind: AnalysisTemplate
metadata: {name: multiple-job}
spec:
  metrics:
  - name: sleep-job
    initialDelay: 4s
    count: 1
    successCondition: result[0] == 1
    provider:
      prometheus: {query: vector(1)}
  - name: sleep-job-rep
    count: 1
    successCondition: result[0] == 1
    provider:
      prometheus: {query: vector(1)}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_inline_multiple_analysis() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom, &[MULTIPLE_JOB]).await;
    let name = "rollout-inline-analysis";
    let ro = basic(
        name,
        1,
        "steps:\n- setWeight: 10\n- pause: {}\n- analysis:\n    templates: [{templateName: multiple-job}]\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "paused", 60, phase_is("Paused")).await;
    env.promote(name).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = runs(&env).await;
    assert_eq!(all.len(), 1, "one run for both metrics");
    assert_eq!(
        run_phase(&all[0]),
        AnalysisPhase::Running,
        "the delayed metric holds it"
    );
    wait_run_phase(&env, is_step, AnalysisPhase::Successful, 30).await;
    env.wait_for(name, "healthy", 60, phase_is("Healthy")).await;
    assert_eq!(runs(&env).await.len(), 1);
}

/// Argo's `multiple-job-fail`: a metric that waits for hours, and one that fails twice.
const MULTIPLE_JOB_FAIL: &str = r#"
kind: AnalysisTemplate
metadata: {name: multiple-job-fail}
spec:
  metrics:
  - name: sleep-job
    initialDelay: 10000s
    count: 1
    successCondition: result[0] == 1
    provider:
      prometheus: {query: vector(1)}
  - name: sleep-job-rep
    count: 2
    interval: 1s
    failureLimit: 1
    successCondition: result[0] == 1
    provider:
      prometheus: {query: vector(0)}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_fail_inline_multiple_analysis() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom, &[MULTIPLE_JOB_FAIL]).await;
    let name = "rollout-inline-analysis";
    let ro = basic(
        name,
        1,
        "steps:\n- setWeight: 10\n- pause: {}\n- analysis:\n    templates: [{templateName: multiple-job-fail}]\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "paused", 60, phase_is("Paused")).await;
    env.promote(name).await;
    // Argo checks Progressing one second after the promotion, while its Job's pod starts; a
    // Prometheus query answers at once, so the run may already have failed by then: what
    // matters (checked below) is that it fails on the second failure, not the first.
    // The failing metric fails the run without waiting for the delayed one.
    wait_run_phase(&env, is_step, AnalysisPhase::Failed, 30).await;
    env.wait_for(name, "degraded", 30, phase_is("Degraded"))
        .await;
    // Failed by the second failure (failureLimit 1 allows one), not the first.
    let run = runs(&env).await.pop().unwrap();
    let result = run
        .status
        .unwrap()
        .metric_results
        .into_iter()
        .find(|m| m.name == "sleep-job-rep")
        .unwrap();
    assert_eq!(result.failed, 2, "{result:?}");
}

/// Argo's `template-a` and `template-b`: each gives a default the other's argument overrides,
/// and the step's args override both.
const TEMPLATE_A: &str = r#"
kind: AnalysisTemplate
metadata: {name: template-a}
spec:
  args:
  - name: host
    value: SHOULD-NOT-USE
  - name: repo
  metrics:
  - name: metric-1
    count: 1
    successCondition: result[0] == 1
    provider:
      prometheus: {query: 'vector({{args.host}})'}
  - name: metric-2
    count: 1
    successCondition: result[0] == 1
    provider:
      prometheus: {query: 'vector({{args.repo}})'}
"#;
const TEMPLATE_B: &str = r#"
kind: AnalysisTemplate
metadata: {name: template-b}
spec:
  args:
  - name: host
  - name: repo
    value: SHOULD-NOT-USE
  metrics:
  - name: metric-3
    count: 1
    successCondition: result[0] == 1
    provider:
      prometheus: {query: 'vector({{args.host}})'}
  - name: metric-4
    count: 1
    successCondition: result[0] == 1
    provider:
      prometheus: {query: 'vector({{args.repo}})'}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_multiple_analysis() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom, &[TEMPLATE_A, TEMPLATE_B]).await;
    let name = "multi-analysis";
    // The values are PromQL numbers here, so a default that leaked through would not parse.
    let ro = basic(
        name,
        1,
        "steps:\n- analysis:\n    templates: [{templateName: template-a}, {templateName: template-b}]\n    args:\n    - {name: host, value: '1'}\n    - {name: repo, value: '1'}\n",
    );
    env.create(&ro).await;
    let r = env.wait_for(name, "healthy", 60, phase_is("Healthy")).await;
    let v1 = stable(&r);
    env.set_image(name, &format!("{name}:2")).await;
    env.wait_for(name, "healthy on the new revision", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r) && stable(r) != v1
    })
    .await;
    let all = runs(&env).await;
    assert_eq!(all.len(), 1, "two templates, one run");
    let metrics: Vec<String> = all[0].spec.metrics.iter().map(|m| m.name.clone()).collect();
    assert_eq!(metrics, ["metric-1", "metric-2", "metric-3", "metric-4"]);
    assert_eq!(run_phase(&all[0]), AnalysisPhase::Successful);
}

/// The Secret Argo's `analysis-secret` templates read their value from; here the value is the
/// PromQL number the query returns.
async fn example_secret(env: &Env) {
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.client.clone(), env.ns());
    let secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "example-secret"},
        "type": "Opaque",
        "stringData": {"secretValue": "1"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &secret)
        .await
        .expect("secret");
}

/// Argo's `analysis-secret`: count, interval and failure limit from arguments, the measured
/// value from a Secret.
const ANALYSIS_SECRET: &str = r#"
kind: AnalysisTemplate
metadata: {name: analysis-secret}
spec:
  args:
  - name: analysis-interval
    value: "1s"
  - name: analysis-runs
    value: "2"
  - name: failure-limit
    value: "1"
  - name: inconclusive-limit
    value: "1"
  - name: secret-value
    valueFrom:
      secretKeyRef: {name: example-secret, key: secretValue}
  metrics:
  - name: webmetric
    count: "{{args.analysis-runs}}"
    interval: "{{args.analysis-interval}}"
    failureLimit: "{{args.failure-limit}}"
    successCondition: result[0] == 1
    provider:
      prometheus: {query: "vector({{args.secret-value}})"}
"#;

/// Argo's `analysis-secret-args`: the Rollout's step gives every argument but the Secret's.
const ANALYSIS_SECRET_ARGS: &str = r#"
kind: AnalysisTemplate
metadata: {name: analysis-secret-args}
spec:
  args:
  - name: analysis-interval
    value: "100s"
  - name: analysis-runs
    value: "10"
  - name: failure-limit
  - name: inconclusive-limit
  - name: success-condition
  - name: secret-value
    valueFrom:
      secretKeyRef: {name: example-secret, key: secretValue}
  metrics:
  - name: webmetric
    count: "{{args.analysis-runs}}"
    interval: "{{args.analysis-interval}}"
    initialDelay: "{{args.analysis-interval}}"
    failureLimit: "{{args.failure-limit}}"
    successCondition: "result[0] == {{args.success-condition}}"
    provider:
      prometheus: {query: "vector({{args.secret-value}})"}
"#;

fn metric_count(run: &AnalysisRun) -> i32 {
    run.status
        .as_ref()
        .and_then(|s| s.metric_results.first())
        .map(|m| m.count)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_analysis_with_secret() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom, &[ANALYSIS_SECRET]).await;
    example_secret(&env).await;
    let name = "rollout-secret";
    let ro = basic(
        name,
        1,
        "steps:\n- setWeight: 25\n- analysis:\n    templates: [{templateName: analysis-secret}]\n- pause: {}\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "paused after the analysis", 60, |r| {
        phase(r) == "Paused" && r.status.as_ref().and_then(|s| s.current_step_index) == Some(2)
    })
    .await;
    let all = runs(&env).await;
    assert_eq!(run_phase(&all[0]), AnalysisPhase::Successful);
    assert_eq!(metric_count(&all[0]), 2, "count from the argument");
    env.promote(name).await;
    env.wait_for(name, "healthy on the new revision", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_analysis_with_args() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom, &[ANALYSIS_SECRET_ARGS]).await;
    example_secret(&env).await;
    let name = "rollout-secret";
    let ro = basic(
        name,
        1,
        "steps:\n- setWeight: 25\n- analysis:\n    templates: [{templateName: analysis-secret-args}]\n    args:\n    - {name: failure-limit, value: '2'}\n    - {name: analysis-interval, value: 1s}\n    - {name: analysis-runs, value: '3'}\n    - {name: inconclusive-limit, value: '2'}\n    - {name: success-condition, value: '1'}\n- pause: {}\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "paused after the analysis", 60, |r| {
        phase(r) == "Paused" && r.status.as_ref().and_then(|s| s.current_step_index) == Some(2)
    })
    .await;
    let all = runs(&env).await;
    assert_eq!(run_phase(&all[0]), AnalysisPhase::Successful);
    assert_eq!(
        metric_count(&all[0]),
        3,
        "the Rollout's count overrides the template's"
    );
    env.promote(name).await;
    env.wait_for(name, "healthy on the new revision", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_background_analysis_with_args() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom, &[ANALYSIS_SECRET]).await;
    example_secret(&env).await;
    let name = "rollout-bg-analysis";
    let ro = basic(
        name,
        1,
        "analysis:\n  templates: [{templateName: analysis-secret}]\n  startingStep: 1\n  args:\n  - {name: failure-limit, value: '2'}\n  - {name: analysis-interval, value: 10s}\n  - {name: inconclusive-limit, value: '2'}\nsteps:\n- setWeight: 25\n- pause: {}\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "paused", 60, phase_is("Paused")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&env).await.len(), 1);
    wait_run_phase(&env, is_background, AnalysisPhase::Running, 10).await;
    env.promote(name).await;
    env.wait_for(name, "healthy", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r)
    })
    .await;
    wait_run_phase(&env, is_background, AnalysisPhase::Successful, 30).await;
}
