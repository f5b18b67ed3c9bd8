//! Argo Rollouts' blue-green e2e scenarios (`test/e2e/bluegreen_test.go` and the blue-green
//! cases of `test/e2e/functional_test.go` in `argoproj/argo-rollouts`), ported with their
//! actions and expectations: replica counts per revision, Service selectors, analysis runs and
//! scale-downs. Each test is named after Argo's, which its comment names. A readiness probe
//! with an initial delay is the test cluster's `e2e.sluice.dev/ready-after` annotation; a
//! container that never starts is one the simulated kubelet keeps crash-looping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use serde_json::json;
use sluice::api::analysis::{AnalysisRun, AnalysisTemplate};
use sluice::api::rollout::Rollout;
use sluice_e2e::prometheus::PrometheusServer;
use sluice_e2e::sim::{CRASH_LOOP, READY_AFTER};
use sluice_test_support::argo::*;
use sluice_test_support::controller::*;
use sluice_test_support::rollout::{blue_green, phase_is};

fn rollout(name: &str, replicas: i32, yaml: &str) -> Rollout {
    blue_green(yaml).name(name).replicas(replicas).build()
}

/// Argo's `ExpectReplicaCounts(desired, current, updated, ready, available)`.
fn replica_counts(r: &Rollout) -> (i32, i32, i32, i32, i32) {
    let st = r.status.clone().unwrap_or_default();
    (
        r.spec.replicas.unwrap_or(1),
        st.replicas.unwrap_or(0),
        st.updated_replicas.unwrap_or(0),
        st.ready_replicas.unwrap_or(0),
        st.available_replicas.unwrap_or(0),
    )
}

async fn expect_replica_counts(env: &Env, name: &str, want: (i32, i32, i32, i32, i32)) {
    env.wait_for(name, &format!("replica counts {want:?}"), 30, |r| {
        replica_counts(r) == want
    })
    .await;
}

/// Argo's `WaitForActiveRevision`: the active Service selects the ReplicaSet of `revision`.
async fn wait_for_active_revision(env: &Env, service: &str, revision: &str) {
    let hash = revision_hash(env, revision).await;
    let deadline = std::time::Instant::now() + patience(60);
    while service_selects(env, service).await.as_deref() != Some(hash.as_str()) {
        assert!(
            std::time::Instant::now() < deadline,
            "{service} never selected revision {revision}: {:?}",
            service_selects(env, service).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Argo's `WaitForRolloutStatus` for a phase the rollout may pass through quickly.
async fn wait_phase(env: &Env, name: &str, phase: &'static str) -> Rollout {
    env.wait_for(name, phase, 60, phase_is(phase)).await
}

/// Every Event of the Rollout `name`, in order (Argo's `StartEventWatch`).
fn watch_events(env: &Env, name: &'static str) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let events: Api<Event> = Api::namespaced(env.client.clone(), env.ns());
    let sink = seen.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        let mut stream = kube::runtime::watcher(events, Default::default()).boxed();
        while let Some(Ok(ev)) = stream.next().await {
            if let kube::runtime::watcher::Event::Apply(e)
            | kube::runtime::watcher::Event::InitApply(e) = ev
                && e.involved_object.name.as_deref() == Some(name)
            {
                sink.lock()
                    .unwrap()
                    .push(e.reason.clone().unwrap_or_default());
            }
        }
    });
    seen
}

/// `functional_test.go` `TestBlueGreenUpdate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_update() {
    let env = Env::new().await;
    let name = "bluegreen";
    let events = watch_events(&env, "bluegreen");
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.services(&["bluegreen"]).await;
    env.create(&rollout(
        name,
        3,
        "activeService: bluegreen\nscaleDownDelaySeconds: 10\n",
    ))
    .await;
    wait_phase(&env, name, "Healthy").await;
    expect_replica_counts(&env, name, (3, 3, 3, 3, 3)).await;
    assert_eq!(
        service_selects(&env, "bluegreen").await,
        Some(revision_hash(&env, "1").await)
    );

    update_spec(&env, name).await;
    wait_phase(&env, name, "Progressing").await;
    wait_for_active_revision(&env, "bluegreen", "2").await;
    expect_replica_counts(&env, name, (3, 6, 3, 3, 3)).await;
    let r = wait_phase(&env, name, "Healthy").await;
    expect_replica_counts(&env, name, (3, 6, 3, 3, 3)).await;
    let st = r.status.unwrap_or_default();
    let v2 = revision_hash(&env, "2").await;
    assert_eq!(st.stable_rs.as_deref(), Some(v2.as_str()));
    assert_eq!(st.blue_green.active_selector.as_deref(), Some(v2.as_str()));
    assert!(
        revision_scale_down_deadline(&env, "1").await.is_some(),
        "the old revision waits for its scale-down delay"
    );

    // Argo's Events, less `RolloutAddedToInformer` (its informer cache) and the reasons it
    // does not have; the scalings are counted apart. For the initial deploy Argo marks the
    // version stable before the switch, Sluice once it switched: the first `RolloutCompleted`
    // follows the first `SwitchService` here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let argo = [
        "RolloutUpdated",
        "NewReplicaSetCreated",
        "RolloutCompleted",
        "SwitchService",
        "RolloutNotCompleted",
    ];
    let seen: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|r| argo.contains(&r.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        seen,
        [
            "RolloutNotCompleted",
            "RolloutUpdated",
            "NewReplicaSetCreated",
            "SwitchService",
            "RolloutCompleted",
            "RolloutNotCompleted",
            "RolloutUpdated",
            "NewReplicaSetCreated",
            "SwitchService",
            "RolloutCompleted",
        ]
    );
    let scalings = events
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.as_str() == "ScalingReplicaSet")
        .count();
    assert!(scalings >= 2, "each revision scaled up");
}

/// `functional_test.go` `TestBlueGreenScaleDownDelay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_scale_down_delay() {
    let env = Env::new().await;
    let name = "bluegreen-scaledowndelay";
    env.services(&["bluegreen-scaledowndelay-active"]).await;
    env.create(&rollout(
        name,
        1,
        "activeService: bluegreen-scaledowndelay-active\nscaleDownDelaySeconds: 86400\nscaleDownDelayRevisionLimit: 2\n",
    ))
    .await;
    wait_phase(&env, name, "Healthy").await;
    update_spec(&env, name).await;
    wait_for_active_revision(&env, "bluegreen-scaledowndelay-active", "2").await;
    wait_phase(&env, name, "Healthy").await;
    expect_revision_pod_count(&env, "2", 1).await;
    expect_revision_pod_count(&env, "1", 1).await;
    expect_replica_counts(&env, name, (1, 2, 1, 1, 1)).await;

    update_spec(&env, name).await;
    wait_for_active_revision(&env, "bluegreen-scaledowndelay-active", "3").await;
    wait_phase(&env, name, "Healthy").await;
    update_spec(&env, name).await;
    wait_for_active_revision(&env, "bluegreen-scaledowndelay-active", "4").await;
    wait_phase(&env, name, "Healthy").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    expect_revision_pod_count(&env, "4", 1).await;
    expect_revision_pod_count(&env, "3", 1).await;
    expect_revision_pod_count(&env, "2", 1).await;
    expect_revision_pod_count(&env, "1", 0).await;
    expect_replica_counts(&env, name, (1, 3, 1, 1, 1)).await;

    // Lower the limit to one old ReplicaSet: revision 2 goes.
    env.patch_spec(
        name,
        json!({"spec": {"strategy": {"blueGreen": {"scaleDownDelayRevisionLimit": 1}}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    expect_revision_pod_count(&env, "4", 1).await;
    expect_revision_pod_count(&env, "3", 1).await;
    expect_revision_pod_count(&env, "2", 0).await;
    expect_revision_pod_count(&env, "1", 0).await;
    expect_replica_counts(&env, name, (1, 2, 1, 1, 1)).await;
}

/// `functional_test.go` `TestBlueGreenExceedProgressDeadlineAbort`. (Argo also expects four
/// conditions; Sluice adds kstatus' Ready, Reconciling and Stalled, so the count differs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_exceed_progress_deadline_abort() {
    let env = Env::new().await;
    let name = "bluegreen-scaledowndelay";
    env.services(&["bluegreen-scaledowndelay-active"]).await;
    env.create(&rollout(
        name,
        1,
        "activeService: bluegreen-scaledowndelay-active\nabortScaleDownDelaySeconds: 2\n",
    ))
    .await;
    wait_phase(&env, name, "Healthy").await;
    let bad = |abort: bool, marker: &str| {
        json!({"spec": {
            "progressDeadlineAbort": abort,
            "progressDeadlineSeconds": 1,
            "template": {"metadata": {"annotations": {CRASH_LOOP: "true", "bad": marker}}}
        }})
    };
    env.patch_spec(name, bad(false, "1")).await;
    wait_phase(&env, name, "Degraded").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect_revision_pod_count(&env, "2", 1).await;
    assert!(!env.get(name).await.status.unwrap_or_default().abort);

    env.patch_spec(name, bad(true, "2")).await;
    env.wait_for(name, "aborted", 60, |r| {
        r.status.as_ref().is_some_and(|s| s.abort) && phase_is("Degraded")(r)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect_revision_pod_count(&env, "3", 0).await;
    assert_eq!(
        service_selects(&env, "bluegreen-scaledowndelay-active").await,
        Some(revision_hash(&env, "1").await),
        "production never left revision 1"
    );
}

/// `functional_test.go` `TestBlueGreenScaleDownOnAbort`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_scale_down_on_abort() {
    let env = Env::new().await;
    let name = "bluegreen-scaledown-on-abort";
    let (active, preview) = (
        "bluegreen-preview-replicas-active",
        "bluegreen-preview-replicas-preview",
    );
    env.services(&[active, preview]).await;
    env.create(&rollout(
        name,
        2,
        &format!(
            "abortScaleDownDelaySeconds: 1\nactiveService: {active}\npreviewService: {preview}\npreviewReplicaCount: 1\nscaleDownDelaySeconds: 5\nautoPromotionEnabled: false\n"
        ),
    ))
    .await;
    wait_phase(&env, name, "Healthy").await;
    update_spec(&env, name).await;
    wait_phase(&env, name, "Paused").await;
    expect_revision_pod_count(&env, "2", 1).await;
    expect_revision_pod_count(&env, "1", 2).await;
    assert_eq!(
        service_selects(&env, preview).await,
        Some(revision_hash(&env, "2").await)
    );
    abort(&env, name).await;
    wait_phase(&env, name, "Degraded").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect_revision_pod_count(&env, "2", 0).await;
    assert_eq!(
        service_selects(&env, active).await,
        Some(revision_hash(&env, "1").await)
    );
}

/// `bluegreen_test.go` `TestBlueGreenPreviewReplicaCount`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_preview_replica_count() {
    let env = Env::new().await;
    let name = "bluegreen-preview-replicas";
    let (active, preview) = (
        "bluegreen-preview-replicas-active",
        "bluegreen-preview-replicas-preview",
    );
    env.services(&[active, preview]).await;
    env.create(&rollout(
        name,
        2,
        &format!(
            "activeService: {active}\npreviewService: {preview}\npreviewReplicaCount: 1\nscaleDownDelaySeconds: 5\nautoPromotionEnabled: false\n"
        ),
    ))
    .await;
    wait_phase(&env, name, "Healthy").await;
    update_spec(&env, name).await;
    wait_phase(&env, name, "Paused").await;
    expect_revision_pod_count(&env, "2", 1).await;
    expect_revision_pod_count(&env, "1", 2).await;
    expect_replica_counts(&env, name, (2, 3, 1, 2, 2)).await;
    env.promote(name).await;
    wait_phase(&env, name, "Healthy").await;
    expect_replica_counts(&env, name, (2, 4, 2, 2, 2)).await;
    assert_eq!(
        service_selects(&env, active).await,
        Some(revision_hash(&env, "2").await)
    );
}

/// `bluegreen_test.go` `TestBlueGreenPreviewReplicaCountPromoteFull`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_preview_replica_count_promote_full() {
    let env = Env::new().await;
    let name = "bluegreen-preview-replicas-promote-full";
    env.services(&["bluegreen-preview-replicas-active"]).await;
    let mut ro = rollout(
        name,
        2,
        "activeService: bluegreen-preview-replicas-active\npreviewReplicaCount: 1\nautoPromotionEnabled: false\n",
    );
    // A very short deadline, to be exceeded often: a pause must not count against it.
    ro.spec.progress_deadline_seconds = Some(1);
    env.create(&ro).await;
    wait_phase(&env, name, "Healthy").await;
    update_spec(&env, name).await;
    wait_phase(&env, name, "Paused").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sluice_test_support::rollout::phase(&env.get(name).await),
        "Paused",
        "a pause longer than progressDeadlineSeconds is not Degraded"
    );
    expect_replica_counts(&env, name, (2, 3, 1, 2, 2)).await;
    promote_full(&env, name).await;
    wait_phase(&env, name, "Healthy").await;
    expect_replica_counts(&env, name, (2, 4, 2, 2, 2)).await;
}

/// The readiness probe of Argo's manifest (`initialDelaySeconds: 10`): pods become ready ten
/// seconds after they start.
fn slow_ready(ro: &mut Rollout) {
    let template = ro.spec.template.as_mut().expect("template");
    template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(READY_AFTER.to_string(), "10s".to_string());
    ro.spec.progress_deadline_seconds = Some(5);
    ro.spec.revision_history_limit = Some(2);
}

/// `bluegreen_test.go` `TestBlueGreenProgressDeadlineExceededWithPause`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_progress_deadline_exceeded_with_pause() {
    let env = Env::new().await;
    let name = "rollout-bluegreen-with-pause";
    env.services(&[name]).await;
    let mut ro = rollout(
        name,
        1,
        &format!("autoPromotionEnabled: false\nactiveService: {name}\n"),
    );
    slow_ready(&mut ro);
    env.create(&ro).await;
    wait_for_replicas(&env, name, 1).await;
    wait_phase(&env, name, "Degraded").await;
    wait_phase(&env, name, "Healthy").await;
    update_spec(&env, name).await;
    wait_phase(&env, name, "Degraded").await;
    wait_phase(&env, name, "Paused").await;
    env.promote(name).await;
    wait_phase(&env, name, "Healthy").await;
    wait_for_active_revision(&env, name, "2").await;
}

/// `bluegreen_test.go` `TestBlueGreenProgressDeadlineExceededWithoutPause`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_progress_deadline_exceeded_without_pause() {
    let env = Env::new().await;
    let name = "rollout-bluegreen-without-pause";
    env.services(&[name]).await;
    let mut ro = rollout(
        name,
        1,
        &format!("autoPromotionEnabled: true\nactiveService: {name}\n"),
    );
    slow_ready(&mut ro);
    env.create(&ro).await;
    wait_for_replicas(&env, name, 1).await;
    wait_phase(&env, name, "Degraded").await;
    wait_phase(&env, name, "Healthy").await;
    update_spec(&env, name).await;
    wait_phase(&env, name, "Degraded").await;
    wait_phase(&env, name, "Healthy").await;
    wait_for_active_revision(&env, name, "2").await;
}

/// Argo's `sleep-job`: one measurement after `duration` seconds, which fails when
/// `exit-code` is not 0 (Argo's job sleeps, then exits with it).
const SLEEP_JOB: &str = r#"
kind: AnalysisTemplate
metadata: {name: sleep-job}
spec:
  args:
  - name: duration
    value: "0"
  - name: exit-code
    value: "0"
  metrics:
  - name: sleep-job
    initialDelay: "{{args.duration}}s"
    count: 1
    successCondition: result[0] == 0
    provider:
      prometheus: {query: "vector({{args.exit-code}})"}
"#;

/// The test cluster with Prometheus and Argo's `sleep-job` template.
async fn analysis_env(prom: &PrometheusServer) -> Env {
    let env = Env::with_config(prometheus_config(&prom.url(), Some(&prom.url()))).await;
    let template: AnalysisTemplate = serde_yaml::from_str(SLEEP_JOB).expect("template yaml");
    Api::<AnalysisTemplate>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &template)
        .await
        .expect("create template");
    env
}

async fn analysis_runs(env: &Env) -> Vec<AnalysisRun> {
    Api::<AnalysisRun>::namespaced(env.client.clone(), env.ns())
        .list(&Default::default())
        .await
        .expect("list runs")
        .items
}

/// Argo's `ExpectActiveRevision` / `ExpectPreviewRevision`.
async fn expect_selects(env: &Env, service: &str, revision: &str) {
    assert_eq!(
        service_selects(env, service).await,
        Some(revision_hash(env, revision).await),
        "{service} selects revision {revision}"
    );
}

/// Argo's `ExpectStableRevision`.
async fn expect_stable_revision(env: &Env, name: &str, revision: &str) {
    let hash = revision_hash(env, revision).await;
    env.wait_for(name, &format!("stable revision {revision}"), 30, |r| {
        stable(r).as_deref() == Some(hash.as_str())
    })
    .await;
}

fn analysis(which: &str, exit_code: &str, duration: &str) -> String {
    format!(
        "{which}:\n  templates: [{{templateName: sleep-job}}]\n  args: [{{name: exit-code, value: \"{exit_code}\"}}, {{name: duration, value: \"{duration}\"}}]\n"
    )
}

/// `analysis_test.go` `TestBlueGreenAnalysis`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_analysis() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = analysis_env(&prom).await;
    let name = "bluegreen-analysis";
    let (active, preview) = ("bluegreen-analysis-active", "bluegreen-analysis-preview");
    env.services(&[active, preview]).await;
    let yaml = format!(
        "activeService: {active}\npreviewService: {preview}\nautoPromotionEnabled: false\n{}{}",
        analysis("prePromotionAnalysis", "0", "1"),
        analysis("postPromotionAnalysis", "0", "1"),
    );
    let original = rollout(name, 1, &yaml);
    env.create(&original).await;
    wait_phase(&env, name, "Healthy").await;
    assert_eq!(analysis_runs(&env).await.len(), 0);
    env.set_image(name, "web:2").await;
    wait_phase(&env, name, "Paused").await;
    assert_eq!(analysis_runs(&env).await.len(), 1);
    expect_selects(&env, active, "1").await;
    expect_selects(&env, preview, "2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.promote(name).await;
    wait_for_active_revision(&env, active, "2").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(analysis_runs(&env).await.len(), 2);
    expect_replica_counts(&env, name, (1, 2, 1, 1, 1)).await;
    wait_phase(&env, name, "Healthy").await;
    assert_eq!(analysis_runs(&env).await.len(), 2);
    expect_selects(&env, active, "2").await;
    expect_selects(&env, preview, "2").await;

    // Back to the original template while revision 1 waits for its scale-down: a fast
    // rollback, without pause or analysis.
    env.set_image(name, "web:1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sluice_test_support::rollout::phase(&env.get(name).await),
        "Healthy"
    );
    assert_eq!(analysis_runs(&env).await.len(), 2, "no new analysis run");
    expect_stable_revision(&env, name, "3").await;
    expect_selects(&env, active, "3").await;
    expect_selects(&env, preview, "3").await;
}

/// `analysis_test.go` `TestBlueGreenPrePromotionFail`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_pre_promotion_fail() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = analysis_env(&prom).await;
    let name = "pre-promotion-fail";
    let (active, preview) = ("pre-promotion-fail-active", "pre-promotion-fail-preview");
    env.services(&[active, preview]).await;
    let yaml = format!(
        "abortScaleDownDelaySeconds: 0\nactiveService: {active}\npreviewService: {preview}\npreviewReplicaCount: 1\n{}",
        analysis("prePromotionAnalysis", "1", "1"),
    );
    env.create(&rollout(name, 2, &yaml)).await;
    wait_phase(&env, name, "Healthy").await;
    assert_eq!(analysis_runs(&env).await.len(), 0);
    update_spec(&env, name).await;
    wait_phase(&env, name, "Degraded").await;
    assert_eq!(analysis_runs(&env).await.len(), 1);
    expect_stable_revision(&env, name, "1").await;
    expect_selects(&env, active, "1").await;
    expect_selects(&env, preview, "2").await;
    expect_revision_pod_count(&env, "2", 1).await;

    env.patch_spec(
        name,
        json!({"spec": {"strategy": {"blueGreen": {"prePromotionAnalysis": {
            "templates": [{"templateName": "sleep-job"}],
            "args": [{"name": "exit-code", "value": "0"}, {"name": "duration", "value": "1"}]
        }}}}}),
    )
    .await;
    env.patch_status(name, json!({"abort": false})).await;
    wait_phase(&env, name, "Healthy").await;
    assert_eq!(analysis_runs(&env).await.len(), 2);
    expect_stable_revision(&env, name, "2").await;
    expect_selects(&env, active, "2").await;
    expect_selects(&env, preview, "2").await;
}

/// `analysis_test.go` `TestBlueGreenPostPromotionFail`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_post_promotion_fail() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = analysis_env(&prom).await;
    let name = "post-promotion-fail";
    let (active, preview) = ("post-promotion-fail-active", "post-promotion-fail-preview");
    env.services(&[active, preview]).await;
    let yaml = format!(
        "activeService: {active}\npreviewService: {preview}\nautoPromotionEnabled: false\n{}",
        analysis("postPromotionAnalysis", "1", "3"),
    );
    env.create(&rollout(name, 1, &yaml)).await;
    wait_phase(&env, name, "Healthy").await;
    assert_eq!(analysis_runs(&env).await.len(), 0);
    update_spec(&env, name).await;
    wait_phase(&env, name, "Paused").await;
    expect_stable_revision(&env, name, "1").await;
    expect_selects(&env, active, "1").await;
    expect_selects(&env, preview, "2").await;
    env.promote(name).await;
    wait_for_active_revision(&env, active, "2").await;
    expect_stable_revision(&env, name, "1").await;
    expect_selects(&env, preview, "2").await;
    wait_phase(&env, name, "Degraded").await;
    assert_eq!(analysis_runs(&env).await.len(), 1);
    expect_stable_revision(&env, name, "1").await;
    expect_selects(&env, active, "1").await;
    expect_selects(&env, preview, "2").await;
}

/// `analysis_test.go` `TestBlueGreenAbortAndUpdate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_abort_and_update() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = analysis_env(&prom).await;
    let name = "bluegreen-abort-and-update";
    let (active, preview) = (
        "bluegreen-abort-and-update-active",
        "bluegreen-abort-and-update-preview",
    );
    env.services(&[active, preview]).await;
    let yaml = format!(
        "activeService: {active}\npreviewService: {preview}\npostPromotionAnalysis:\n  templates: [{{templateName: sleep-job}}]\n  args: [{{name: exit-code, value: \"1\"}}]\n"
    );
    env.create(&rollout(name, 1, &yaml)).await;
    wait_phase(&env, name, "Healthy").await;
    assert_eq!(analysis_runs(&env).await.len(), 0);
    update_spec(&env, name).await;
    wait_phase(&env, name, "Degraded").await;
    assert_eq!(analysis_runs(&env).await.len(), 1);
    expect_selects(&env, active, "1").await;
    expect_selects(&env, preview, "2").await;

    // A new version whose analysis passes, promoted by hand.
    env.patch_spec(
        name,
        json!({"spec": {
            "template": {"metadata": {"annotations": {"foo": "bar"}}},
            "strategy": {"blueGreen": {"autoPromotionEnabled": false, "postPromotionAnalysis": {
                "templates": [{"templateName": "sleep-job"}], "args": null}}}
        }}),
    )
    .await;
    wait_phase(&env, name, "Paused").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    expect_revision_pod_count(&env, "1", 1).await;
    assert!(revision_scale_down_deadline(&env, "2").await.is_some());
    expect_revision_pod_count(&env, "3", 1).await;
    expect_selects(&env, active, "1").await;
    expect_selects(&env, preview, "3").await;
    env.promote(name).await;
    wait_phase(&env, name, "Healthy").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    expect_revision_pod_count(&env, "1", 1).await;
    assert!(revision_scale_down_deadline(&env, "1").await.is_some());
    assert!(revision_scale_down_deadline(&env, "2").await.is_some());
    expect_revision_pod_count(&env, "3", 1).await;
    expect_selects(&env, active, "3").await;
    expect_selects(&env, preview, "3").await;
    assert_eq!(analysis_runs(&env).await.len(), 2);
}

/// `functional_test.go` `TestBlueGreenPromoteFull`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_promote_full() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = analysis_env(&prom).await;
    let name = "bluegreen-promote-full";
    env.services(&["bluegreen-promote-full-active"]).await;
    env.create(&rollout(
        name,
        3,
        "activeService: bluegreen-promote-full-active\nautoPromotionEnabled: false\nprePromotionAnalysis:\n  templates: [{templateName: sleep-job}]\n  args: [{name: duration, value: \"10\"}]\npostPromotionAnalysis:\n  templates: [{templateName: sleep-job}]\n",
    ))
    .await;
    wait_phase(&env, name, "Healthy").await;
    update_spec(&env, name).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let runs = Api::<AnalysisRun>::namespaced(env.client.clone(), env.ns());
    let deadline = std::time::Instant::now() + patience(30);
    loop {
        let list = runs.list(&Default::default()).await.expect("runs").items;
        let running = list.iter().any(|r| {
            r.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.ends_with("-pre"))
                && r.status.as_ref().map(|s| s.phase.as_str()) == Some("Running")
        });
        if running {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no running pre-promotion run: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    promote_full(&env, name).await;
    wait_phase(&env, name, "Healthy").await;
    let list = runs.list(&Default::default()).await.expect("runs").items;
    assert_eq!(list.len(), 1, "only the pre-promotion run: {list:?}");
    assert_eq!(
        list[0]
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("rollout-type"))
            .map(String::as_str),
        Some("PrePromotion")
    );
}

/// Argo's `ExpectRevisionPods`: every pod of `revision` (once there are some) passes `check`.
async fn expect_revision_pods(
    env: &Env,
    what: &str,
    revision: &str,
    check: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) {
    let hash = revision_hash(env, revision).await;
    let deadline = std::time::Instant::now() + patience(30);
    loop {
        let pods = pods_of_hash(env, &hash).await;
        if !pods.is_empty()
            && pods
                .iter()
                .all(|p| check(&p.metadata.labels.clone().unwrap_or_default()))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {:?}",
            pods.iter()
                .map(|p| p.metadata.labels.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `bluegreen_test.go` `TestEphemeralMetadata`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_ephemeral_metadata() {
    let env = Env::new().await;
    let name = "ephemeral-metadata-bg";
    env.services(&[name]).await;
    env.create(&rollout(
        name,
        2,
        &format!(
            "previewMetadata: {{labels: {{role: preview}}}}\nactiveMetadata: {{labels: {{role: active}}}}\nactiveService: {name}\nautoPromotionEnabled: false\n"
        ),
    ))
    .await;
    let role = |want: &'static str| {
        move |l: &std::collections::BTreeMap<String, String>| {
            l.get("role").map(String::as_str) == Some(want)
        }
    };
    let role2 = |want: &'static str| {
        move |l: &std::collections::BTreeMap<String, String>| {
            !l.contains_key("role") && l.get("role2").map(String::as_str) == Some(want)
        }
    };
    wait_for_replicas(&env, name, 2).await;
    expect_revision_pods(&env, "all pods have active metadata", "1", role("active")).await;
    wait_phase(&env, name, "Healthy").await;
    update_spec(&env, name).await;
    wait_phase(&env, name, "Paused").await;
    expect_revision_pods(
        &env,
        "revision 2 has preview metadata",
        "2",
        role("preview"),
    )
    .await;
    expect_revision_pods(&env, "revision 1 has active metadata", "1", role("active")).await;

    // New preview metadata: the old key goes, the new one comes.
    env.patch_spec(
        name,
        json!({"spec": {"strategy": {"blueGreen": {"previewMetadata": {"labels": {"role": null, "role2": "preview2"}}}}}}),
    )
    .await;
    expect_revision_pods(
        &env,
        "revision 2 has preview metadata2",
        "2",
        role2("preview2"),
    )
    .await;
    env.promote(name).await;
    wait_phase(&env, name, "Healthy").await;
    expect_revision_pods(&env, "revision 2 has active metadata", "2", role("active")).await;

    env.patch_spec(
        name,
        json!({"spec": {"strategy": {"blueGreen": {"activeMetadata": {"labels": {"role": null, "role2": "active2"}}}}}}),
    )
    .await;
    expect_revision_pods(
        &env,
        "revision 2 has active metadata2",
        "2",
        role2("active2"),
    )
    .await;
}

/// The Deployment `web` a workloadRef Rollout takes its template from (`replicas: 0`: the
/// Rollout runs the pods), with `image`; crash-looping pods when `crash`.
fn deployment(image: &str, crash: bool) -> serde_json::Value {
    let annotations = if crash {
        json!({CRASH_LOOP: "true"})
    } else {
        json!({})
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app.kubernetes.io/instance": "rollout-canary"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}, "annotations": annotations},
                "spec": {"containers": [{"name": "web", "image": image}]}}}
    })
}

async fn apply_deployment(env: &Env, image: &str, crash: bool) {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client.clone(), env.ns());
    api.patch(
        "web",
        &kube::api::PatchParams::apply("argo-e2e").force(),
        &kube::api::Patch::Apply(deployment(image, crash)),
    )
    .await
    .expect("apply the Deployment");
}

fn workload_generation(r: &Rollout) -> Option<String> {
    r.status
        .as_ref()
        .and_then(|s| s.workload_observed_generation.clone())
}

/// `functional_test.go` `TestWorkloadRef` (blue-green, as Argo's): Degraded while the
/// Deployment is missing, the active Service untouched; Healthy once it exists, the active
/// Service switched; a crash-looping template in the Deployment is Degraded and never becomes
/// active; a good one is switched to; a workloadRef to a missing Deployment and back; the
/// resolved template is never written into the Rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_workload_ref() {
    let env = Env::new().await;
    let name = "rollout-ref-deployment";
    let active = "rollout-bluegreen-active";
    env.services(&[active]).await;
    let mut ro = rollout(name, 1, &format!("activeService: {active}\n"));
    ro.spec.template = None;
    ro.spec.selector = None;
    ro.spec.progress_deadline_seconds = Some(5);
    ro.spec.revision_history_limit = Some(2);
    ro.spec.workload_ref = Some(
        serde_json::from_value(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}),
        )
        .expect("a workloadRef"),
    );
    env.create(&ro).await;
    wait_phase(&env, name, "Degraded").await;
    assert_eq!(
        service_selects(&env, active).await,
        None,
        "the active Service is not switched to a rollout without pods"
    );

    apply_deployment(&env, "rollouts-demo:green", false).await;
    let r = wait_phase(&env, name, "Healthy").await;
    assert_eq!(workload_generation(&r).as_deref(), Some("1"));
    let v1 = revision_hash(&env, "1").await;
    assert_eq!(
        service_selects(&env, active).await.as_deref(),
        Some(v1.as_str())
    );

    apply_deployment(&env, "rollouts-demo:error", true).await;
    let r = env
        .wait_for(name, "Degraded on the second template", 60, |r| {
            phase_is("Degraded")(r) && workload_generation(r).as_deref() == Some("2")
        })
        .await;
    assert_eq!(
        r.status.as_ref().and_then(|s| s.stable_rs.as_deref()),
        Some(v1.as_str())
    );
    assert_eq!(
        service_selects(&env, active).await.as_deref(),
        Some(v1.as_str()),
        "a crash-looping preview never becomes active"
    );

    apply_deployment(&env, "rollouts-demo:blue", false).await;
    env.wait_for(name, "Healthy on the third template", 60, |r| {
        phase_is("Healthy")(r) && workload_generation(r).as_deref() == Some("3")
    })
    .await;
    let v3 = revision_hash(&env, "3").await;
    wait_for_active_revision(&env, active, "3").await;
    env.patch_spec(
        name,
        json!({"spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "non-existent-deploy"}}}),
    )
    .await;
    wait_phase(&env, name, "Degraded").await;
    assert_eq!(
        service_selects(&env, active).await.as_deref(),
        Some(v3.as_str()),
        "a missing Deployment leaves the active Service where it was"
    );
    env.patch_spec(
        name,
        json!({"spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}}),
    )
    .await;
    let r = wait_phase(&env, name, "Healthy").await;
    assert_eq!(
        service_selects(&env, active).await.as_deref(),
        Some(v3.as_str())
    );
    assert!(r.spec.selector.is_none(), "resolved selector not persisted");
    assert!(
        r.spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .is_none_or(|s| s.containers.is_empty()),
        "resolved template not persisted"
    );
}

/// `analysis_test.go` `TestBlueGreenKitchenSink`: a preview of one pod checked by a
/// pre-promotion analysis, promoted by `autoPromotionSeconds` (not before), scaled to full size,
/// then a failing post-promotion analysis switches the active Service back to the stable
/// revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_kitchen_sink() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = analysis_env(&prom).await;
    let name = "bluegreen-kitchensink";
    let (active, preview) = (
        "bluegreen-kitchensink-active",
        "bluegreen-kitchensink-preview",
    );
    env.services(&[active, preview]).await;
    let yaml = format!(
        "activeService: {active}\npreviewService: {preview}\npreviewReplicaCount: 1\nautoPromotionSeconds: 10\nscaleDownDelaySeconds: 5\nprePromotionAnalysis:\n  templates: [{{templateName: sleep-job}}]\n  args: [{{name: duration, value: \"10\"}}]\n{}",
        analysis("postPromotionAnalysis", "1", "10"),
    );
    env.create(&rollout(name, 2, &yaml)).await;
    wait_phase(&env, name, "Healthy").await;
    update_spec(&env, name).await;
    wait_phase(&env, name, "Paused").await;
    expect_selects(&env, active, "1").await;
    expect_selects(&env, preview, "2").await;
    expect_stable_revision(&env, name, "1").await;
    expect_revision_pod_count(&env, "1", 2).await;
    expect_revision_pod_count(&env, "2", 1).await;
    expect_replica_counts(&env, name, (2, 3, 1, 2, 2)).await;
    assert_eq!(analysis_runs(&env).await.len(), 1);

    // Not promoted too early.
    tokio::time::sleep(Duration::from_secs(5)).await;
    expect_selects(&env, active, "1").await;
    expect_stable_revision(&env, name, "1").await;
    expect_revision_pod_count(&env, "1", 2).await;
    expect_revision_pod_count(&env, "2", 1).await;
    expect_replica_counts(&env, name, (2, 3, 1, 2, 2)).await;

    // autoPromotionSeconds promotes, no manual promotion.
    wait_for_active_revision(&env, active, "2").await;
    expect_revision_pod_count(&env, "2", 2).await;
    expect_revision_pod_count(&env, "1", 2).await;
    expect_replica_counts(&env, name, (2, 4, 2, 2, 2)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(analysis_runs(&env).await.len(), 2);

    wait_phase(&env, name, "Degraded").await;
    expect_selects(&env, active, "1").await;
    expect_selects(&env, preview, "2").await;
    expect_stable_revision(&env, name, "1").await;
    expect_revision_pod_count(&env, "2", 2).await;
    expect_revision_pod_count(&env, "1", 2).await;
    expect_replica_counts(&env, name, (2, 4, 2, 2, 2)).await;
}

fn deployments(env: &Env) -> Api<k8s_openapi::api::apps::v1::Deployment> {
    Api::namespaced(env.client.clone(), env.ns())
}

/// Argo's `rollout-ref-deployment` scenarios: the Deployment with `replicas` pods and a
/// blue-green Rollout of as many replicas taking its template, scaling it down in `mode`.
async fn workload_ref_scenario(env: &Env, name: &str, replicas: i32, mode: &str) {
    env.services(&["rollout-bluegreen-active"]).await;
    let d = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "rollouts-demo", "image": "rollouts-demo:green",
                    "resources": {"requests": {"memory": "16Mi", "cpu": "1m"}}}]}}}
    }))
    .expect("a Deployment");
    deployments(env)
        .create(&PostParams::default(), &d)
        .await
        .expect("create the Deployment");
    let mut ro = rollout(name, replicas, "activeService: rollout-bluegreen-active\n");
    ro.spec.template = None;
    ro.spec.workload_ref = Some(
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "name": name, "scaleDown": mode
        }))
        .expect("a workloadRef"),
    );
    env.create(&ro).await;
}

/// Argo's `ExpectDeploymentReplicasCount`: the Deployment's `spec.replicas`, waited for and
/// checked to hold a moment later.
async fn expect_deployment_replicas(env: &Env, name: &str, n: i32) {
    let replicas = || async {
        deployments(env)
            .get(name)
            .await
            .expect("the Deployment")
            .spec
            .and_then(|s| s.replicas)
    };
    let deadline = std::time::Instant::now() + patience(30);
    loop {
        if replicas().await == Some(n) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if replicas().await == Some(n) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Deployment {name}: expected {n} replicas, saw {:?}",
            replicas().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `functional_test.go` `TestScaleDownOnSuccess`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_scale_down_on_success() {
    let env = Env::new().await;
    let name = "rollout-ref-deployment";
    workload_ref_scenario(&env, name, 2, "onsuccess").await;
    wait_phase(&env, name, "Healthy").await;
    expect_deployment_replicas(&env, name, 0).await;
}

/// `functional_test.go` `TestScaleDownProgressively`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_scale_down_progressively() {
    let env = Env::new().await;
    let name = "rollout-ref-deployment";
    workload_ref_scenario(&env, name, 2, "progressively").await;
    wait_phase(&env, name, "Healthy").await;
    expect_deployment_replicas(&env, name, 0).await;
}

/// `functional_test.go` `TestScaleDownProgressivelyCompleted`: once migrated, the Deployment
/// stays at 0 through scalings of the Rollout and a new revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_scale_down_progressively_completed() {
    let env = Env::new().await;
    let name = "rollout-ref-deployment";
    workload_ref_scenario(&env, name, 3, "progressively").await;
    wait_phase(&env, name, "Healthy").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect_deployment_replicas(&env, name, 0).await;
    assert!(phase_is("Healthy")(&env.get(name).await));

    for n in [6, 2] {
        scale_rollout(&env, name, n).await;
        env.wait_for(name, &format!("{n} available"), 60, |r| {
            r.status.as_ref().and_then(|s| s.available_replicas) == Some(n)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        expect_deployment_replicas(&env, name, 0).await;
        expect_replica_counts(&env, name, (n, n, n, n, n)).await;
    }

    // Argo's `UpdateWorkloadRef`: a new pod template in the Deployment.
    let now = jiff::Timestamp::now().to_string();
    deployments(&env)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"update": now}}}}}),
            ),
        )
        .await
        .expect("update the Deployment");
    wait_phase(&env, name, "Progressing").await;
    wait_phase(&env, name, "Healthy").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    expect_deployment_replicas(&env, name, 0).await;
}

/// `functional_test.go` `TestNeverScaleDown`. (Argo's Service also carries a
/// `rollout.argoproj.io/scale-down: never` annotation that nothing reads.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_never_scale_down() {
    let env = Env::new().await;
    let name = "rollout-ref-deployment";
    workload_ref_scenario(&env, name, 2, "never").await;
    wait_phase(&env, name, "Healthy").await;
    expect_deployment_replicas(&env, name, 2).await;
}

/// `functional_test.go` `TestBlueGreenToCanary`: switching strategies takes the Service's
/// pod-template-hash selector off, and the canary starts from the blue-green stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_blue_green_to_canary() {
    let env = Env::new().await;
    let name = "bluegreen-to-canary";
    env.services(&["bluegreen-to-canary"]).await;
    env.create(&rollout(
        name,
        2,
        "activeService: bluegreen-to-canary\nscaleDownDelaySeconds: 5\n",
    ))
    .await;
    wait_phase(&env, name, "Healthy").await;

    env.patch_spec(
        name,
        json!({"spec": {
            "template": {"metadata": {"annotations": {"foo": "bar"}}},
            "strategy": {"blueGreen": null, "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
        }}),
    )
    .await;
    wait_phase(&env, name, "Paused").await;
    env.wait_for(name, "2 available", 60, |r| {
        r.status.as_ref().and_then(|s| s.available_replicas) == Some(2)
    })
    .await;
    expect_replica_counts(&env, name, (2, 2, 1, 2, 2)).await;
    let api: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(env.client.clone(), env.ns());
    let selector = api
        .get("bluegreen-to-canary")
        .await
        .expect("the Service")
        .spec
        .and_then(|s| s.selector)
        .unwrap_or_default();
    assert_eq!(
        selector,
        std::collections::BTreeMap::from([("app".to_string(), "web".to_string())])
    );
}
