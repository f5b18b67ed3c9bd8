//! Argo Rollouts' analysis e2e scenarios that use `job` and `web` metrics
//! (`test/e2e/analysis_test.go`), with Argo's own templates: the Jobs run on the test cluster,
//! whose Job pods run their container's command as a local process (so `exit 1` fails), and
//! the web metrics ask an HTTP server the test starts on loopback (standing in for the
//! Kubernetes version endpoint and the public DNS API Argo's templates call). Each test is named
//! after Argo's; the Prometheus stand-ins of the same scenarios are in `argo_e2e_analysis.rs`.
//! Argo's 10 s job deadline is 2 s here, its 5 s web interval 1 s.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::Api;
use sluice::api::analysis::AnalysisRun;
use sluice::api::common::AnalysisPhase;
use sluice_test_support::argo::{
    analysis_runs as runs, basic, env_with_templates, healthy_then_update, is_background, is_step,
    run_phase, wait_run_phase,
};
use sluice_test_support::controller::*;
use sluice_test_support::rollout::phase_is;

async fn env_with(allowed: &str, templates: &[&str]) -> Env {
    env_with_templates(allowed, None, templates).await
}

async fn env(templates: &[&str]) -> Env {
    // Job metrics call no address.
    env_with("http://127.0.0.1:9", templates).await
}

async fn jobs(env: &Env) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(env.client.clone(), env.ns());
    api.list(&Default::default()).await.unwrap().items
}

async fn wait_no_jobs(env: &Env, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = jobs(env).await;
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs left: {:?}",
            left.iter().map(|j| j.name_any()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last measurement of a run's first metric.
fn last_measurement(run: &AnalysisRun) -> sluice::api::analysis::Measurement {
    let st = run.status.as_ref().expect("status");
    st.metric_results[0]
        .measurements
        .last()
        .cloned()
        .expect("a measurement")
}

/// Argo's `sleep-job`: sleeps `duration`, then exits with `exit-code`.
const SLEEP_JOB: &str = r#"
kind: AnalysisTemplate
metadata: {name: sleep-job}
spec:
  args:
  - name: duration
    value: "0"
  - name: exit-code
    value: "0"
  - name: count
    value: "1"
  - name: rev
    value: "notset"
  metrics:
  - name: sleep-job
    count: "{{args.count}}"
    provider:
      job:
        spec:
          template:
            metadata:
              labels:
                rev: "{{ args.rev }}"
            spec:
              containers:
              - name: sleep-job
                image: nginx:1.19-alpine
                command: [sh, -c, -x]
                args: ["sleep {{args.duration}} && exit {{args.exit-code}}"]
              restartPolicy: Never
          backoffLimit: 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_inline_analysis() {
    let env = env(&[SLEEP_JOB]).await;
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
    let run = wait_run_phase(&env, is_step, AnalysisPhase::Successful, 30).await;
    // The Job exited 0: its measurement is Successful and names it.
    let m = last_measurement(&run);
    assert_eq!(m.phase, AnalysisPhase::Successful);
    let job_name = m.metadata.get("job-name").cloned().expect("job-name");
    assert_eq!(
        job_name,
        format!("{}.sleep-job.1", run.uid().unwrap()),
        "named as Argo names it"
    );
    let job = jobs(&env)
        .await
        .into_iter()
        .find(|j| j.name_any() == job_name)
        .expect("the Job stays while its run does");
    assert_eq!(
        job.owner_references()[0].name,
        run.name_any(),
        "owned by its run"
    );
    let pod_labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(
        pod_labels["rev"], "notset",
        "{{args}} substituted in the spec"
    );
    env.promote(name).await;
    env.wait_for(name, "healthy", 90, phase_is("Healthy")).await;
    let all = runs(&env).await;
    assert_eq!(all.len(), 3, "one run per analysis step");
    assert!(
        all.iter()
            .all(|r| run_phase(r) == AnalysisPhase::Successful)
    );
}

/// Argo's `multiple-job-fail`: a metric that waits for hours, and one whose Job exits 1 twice.
const MULTIPLE_JOB_FAIL: &str = r#"
kind: AnalysisTemplate
metadata: {name: multiple-job-fail}
spec:
  args:
  - name: duration
    value: 0s
  - name: exit-code
    value: "0"
  - name: count
    value: "1"
  metrics:
  - name: sleep-job
    initialDelay: 10000s
    count: 1
    provider:
      job:
        spec:
          template:
            spec:
              containers:
              - name: sleep-job
                image: nginx:1.19-alpine
                command: [sh, -c, -x]
                args: ["sleep {{args.duration}} && exit {{args.exit-code}}"]
              restartPolicy: Never
          backoffLimit: 0
  - name: sleep-job-rep
    count: 2
    interval: 1s
    failureLimit: 1
    provider:
      job:
        spec:
          template:
            spec:
              containers:
              - name: sleep-job
                image: nginx:1.19-alpine
                command: [sh, -c, -x]
                args: ["sleep {{args.duration}} && exit 1"]
              restartPolicy: Never
          backoffLimit: 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_fail_inline_multiple_analysis() {
    let env = env(&[MULTIPLE_JOB_FAIL]).await;
    let name = "rollout-inline-analysis";
    let ro = basic(
        name,
        1,
        "steps:\n- setWeight: 10\n- pause: {}\n- analysis:\n    templates: [{templateName: multiple-job-fail}]\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "paused", 60, phase_is("Paused")).await;
    env.promote(name).await;
    // Argo checks the phase one second after the promotion, while its Job pods are still
    // starting. The test cluster starts a Job's process at once and this template's failing
    // Job sleeps 0 s, so a fixed second races the two failed measurements (1 s apart) under
    // load; what is checked is the same: the promoted rollout goes on to its analysis step
    // (Progressing) before the failed run degrades it.
    env.wait_for(name, "past the pause, at the analysis step", 30, |r| {
        let st = r.status.as_ref();
        let at_analysis = st.and_then(|s| s.current_step_index) == Some(2)
            || st.and_then(|s| s.aborted_at_step_index) == Some(2);
        at_analysis && sluice_test_support::rollout::phase(r) != "Paused"
    })
    .await;
    let run = wait_run_phase(&env, is_step, AnalysisPhase::Failed, 60).await;
    env.wait_for(name, "degraded", 30, phase_is("Degraded"))
        .await;
    let result = run
        .status
        .unwrap()
        .metric_results
        .into_iter()
        .find(|m| m.name == "sleep-job-rep")
        .unwrap();
    assert_eq!(result.failed, 2, "failureLimit 1 allows one: {result:?}");
    assert!(
        result.measurements.iter().all(|m| m
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("BackoffLimitExceeded")),
        "{result:?}"
    );
}

/// Argo's `long-running-job-deadline`, with a 2 s deadline (Argo: 10 s).
const LONG_RUNNING_JOB_DEADLINE: &str = r#"
kind: AnalysisTemplate
metadata: {name: long-running-job-deadline}
spec:
  metrics:
  - name: long-running-job-deadline-metric
    count: 1
    provider:
      job:
        spec:
          activeDeadlineSeconds: 2
          template:
            spec:
              containers:
              - name: long-running-job
                image: nginx:1.19-alpine
                command: [sh, -c]
                args: ["sleep 6000"]
              restartPolicy: Never
          backoffLimit: 0
"#;

fn assert_failed_by_deadline(run: &AnalysisRun) {
    let st = run.status.as_ref().unwrap();
    assert_eq!(st.phase, AnalysisPhase::Failed);
    assert_eq!(st.metric_results[0].phase, AnalysisPhase::Failed);
    let m = last_measurement(run);
    assert_eq!(m.phase, AnalysisPhase::Failed, "{m:?}");
    assert!(
        m.message
            .as_deref()
            .unwrap_or_default()
            .contains("DeadlineExceeded"),
        "{m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_inline_analysis_long_running_job_with_deadline() {
    let env = env(&[LONG_RUNNING_JOB_DEADLINE]).await;
    let name = "rollout-inline-long-running-job-deadline";
    let ro = basic(
        name,
        1,
        "steps:\n- setWeight: 10\n- analysis:\n    templates: [{templateName: long-running-job-deadline}]\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "degraded", 60, phase_is("Degraded"))
        .await;
    assert_eq!(runs(&env).await.len(), 1);
    let run = wait_run_phase(&env, is_step, AnalysisPhase::Failed, 10).await;
    assert_failed_by_deadline(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_background_analysis_long_running_job_with_deadline() {
    let env = env(&[LONG_RUNNING_JOB_DEADLINE]).await;
    let name = "rollout-background-long-running-job-deadline";
    let ro = basic(
        name,
        1,
        "analysis:\n  templates: [{templateName: long-running-job-deadline}]\nsteps:\n- setWeight: 10\n- pause: {duration: 60s}\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "degraded", 60, phase_is("Degraded"))
        .await;
    assert_eq!(runs(&env).await.len(), 1);
    let run = wait_run_phase(&env, is_background, AnalysisPhase::Failed, 10).await;
    assert_failed_by_deadline(&run);
}

/// Argo's `long-running-job`: a Job that runs far longer than the rollout.
const LONG_RUNNING_JOB: &str = r#"
kind: AnalysisTemplate
metadata: {name: long-running-job}
spec:
  metrics:
  - name: long-running-job-metric
    count: 1
    provider:
      job:
        spec:
          template:
            spec:
              containers:
              - name: long-running-job
                image: nginx:1.19-alpine
                command: [sh, -c]
                args: ["sleep 6000"]
              restartPolicy: Never
          backoffLimit: 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_background_analysis_long_running_job() {
    let env = env(&[LONG_RUNNING_JOB]).await;
    let name = "rollout-background-long-running-job";
    let ro = basic(
        name,
        1,
        "analysis:\n  templates: [{templateName: long-running-job}]\nsteps:\n- setWeight: 10\n- pause: {duration: 10s}\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "paused", 60, phase_is("Paused")).await;
    assert_eq!(runs(&env).await.len(), 1);
    wait_run_phase(&env, is_background, AnalysisPhase::Running, 10).await;
    assert_eq!(jobs(&env).await.len(), 1, "the Job runs");
    env.promote(name).await;
    env.wait_for(name, "healthy", 60, phase_is("Healthy")).await;
    // The run is terminated with the rollout: the Job that never finished is deleted and its
    // measurement is Inconclusive, not Successful.
    let run = wait_run_phase(&env, is_background, AnalysisPhase::Inconclusive, 20).await;
    let st = run.status.as_ref().unwrap();
    assert_eq!(st.metric_results[0].phase, AnalysisPhase::Inconclusive);
    let m = last_measurement(&run);
    assert_eq!(m.phase, AnalysisPhase::Inconclusive);
    assert_eq!(m.message.as_deref(), Some("Metric Terminated"));
    wait_no_jobs(&env, 20).await;
}

/// Not one of Argo's scenarios: aborting a rollout stops its step analysis, and the Job that was
/// still running goes with its pod (and so its process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_rollout_deletes_its_running_analysis_job() {
    let env = env(&[LONG_RUNNING_JOB]).await;
    let name = "rollout-abort-running-job";
    let ro = basic(
        name,
        1,
        "steps:\n- setWeight: 10\n- analysis:\n    templates: [{templateName: long-running-job}]\n",
    );
    healthy_then_update(&env, ro).await;
    wait_run_phase(&env, is_step, AnalysisPhase::Running, 60).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while jobs(&env).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no Job started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(env.client.clone(), env.ns());
    let job_pod = |p: &k8s_openapi::api::core::v1::Pod| {
        p.labels().contains_key(sluice::metrics::job::RUN_UID_LABEL)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let running = pods
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(job_pod)
            .any(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Running"));
        if running {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Job's pod never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.patch_status(name, serde_json::json!({"abort": true}))
        .await;
    env.wait_for(name, "degraded", 30, phase_is("Degraded"))
        .await;
    let run = wait_run_phase(&env, is_step, AnalysisPhase::Inconclusive, 20).await;
    assert!(run.spec.terminate, "the aborted rollout terminated its run");
    wait_no_jobs(&env, 20).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(job_pod)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Job's pod is left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback server standing in for Argo's web endpoints: `/version` answers like the
/// Kubernetes API server's, `/resolve` like the public DNS-over-HTTPS API.
async fn web_server() -> String {
    let app = axum::Router::new()
        .route(
            "/version",
            axum::routing::get(|| async {
                axum::Json(
                    serde_json::json!({"major": "1", "minor": "33", "platform": "linux/amd64"}),
                )
            }),
        )
        .route(
            "/resolve",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({"Status": 0, "TC": false, "Answer": []}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// Argo's `web-background`, its URL argument pointing at the loopback server.
fn web_background(base: &str) -> String {
    format!(
        r#"
kind: AnalysisTemplate
metadata: {{name: web-background}}
spec:
  args:
    - name: url-val
      value: "{base}/version"
  metrics:
  - name: web
    interval: 1s
    successCondition: result.major == '1'
    provider:
      web:
        url: "{{{{args.url-val}}}}"
        insecure: true
"#
    )
}

/// Argo's `web-background-inconclusive`: neither condition ever holds.
fn web_background_inconclusive(base: &str) -> String {
    format!(
        r#"
kind: AnalysisTemplate
metadata: {{name: web-background-inconclusive}}
spec:
  args:
    - name: url-val
      value: "{base}/resolve?name=google.com"
  metrics:
    - name: web
      interval: 1s
      inconclusiveLimit: 3
      successCondition: result.Status == 999
      failureCondition: result.Status == -1
      provider:
        web:
          url: "{{{{args.url-val}}}}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_background_analysis() {
    let base = web_server().await;
    let env = env_with(&base, &[&web_background(&base)]).await;
    let name = "rollout-background-analysis";
    let ro = basic(
        name,
        1,
        "analysis:\n  templates: [{templateName: web-background}]\nsteps:\n- setWeight: 10\n- pause: {}\n",
    );
    healthy_then_update(&env, ro).await;
    env.wait_for(name, "paused", 60, phase_is("Paused")).await;
    let all = runs(&env).await;
    assert_eq!(all.len(), 1, "one background run");
    assert!(is_background(&all[0]));
    let run = wait_run_phase(&env, is_background, AnalysisPhase::Running, 10).await;
    let _ = run;
    // Measured and passing while it runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = runs(&env).await.pop().unwrap();
        let ok = r
            .status
            .as_ref()
            .and_then(|s| s.metric_results.first())
            .is_some_and(|m| m.successful >= 2);
        if ok {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", r.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.promote(name).await;
    env.wait_for(name, "healthy", 60, phase_is("Healthy")).await;
    wait_run_phase(&env, is_background, AnalysisPhase::Successful, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_inconclusive_background_analysis() {
    let base = web_server().await;
    let env = env_with(&base, &[&web_background_inconclusive(&base)]).await;
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
    let run = wait_run_phase(&env, is_background, AnalysisPhase::Inconclusive, 30).await;
    assert_eq!(
        last_measurement(&run).value.as_deref(),
        Some(r#"{"Answer":[],"Status":0,"TC":false}"#),
        "the whole document is the result"
    );
    let r = env
        .wait_for(name, "paused by the inconclusive run", 30, |r| {
            r.status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains("InconclusiveAnalysisRun"))
        })
        .await;
    assert_eq!(sluice_test_support::rollout::phase(&r), "Paused");
}
