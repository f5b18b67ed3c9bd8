//! Argo Rollouts' functional e2e scenarios (`test/e2e/functional_test.go`) for the canary
//! strategy, replayed on the test cluster with the same actions and expectations. Argo's `job`
//! metrics are Prometheus queries here; a pod Argo makes crash with `command: [/bad-command]`
//! crash-loops here through the test cluster's `e2e.sluice.dev/crash-loop` pod annotation.

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use sluice::api::analysis::{AnalysisRun, AnalysisTemplate};
use sluice::api::rollout::Rollout;
use sluice_e2e::prometheus::PrometheusServer;
use sluice_e2e::sim::CRASH_LOOP;
use sluice_test_support::controller::*;
use sluice_test_support::rollout::phase_is;

async fn create_template(env: &Env, yaml: &str) {
    let api: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), env.ns());
    let template: AnalysisTemplate = serde_yaml::from_str(yaml).expect("template yaml");
    api.create(&PostParams::default(), &template)
        .await
        .expect("create template");
}

async fn run_count(env: &Env) -> usize {
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    api.list(&Default::default()).await.unwrap().items.len()
}

/// Pods per revision (the ReplicaSets' `spec.replicas`, as Argo's `ExpectRevisionPodCount`).
async fn revision_pods(env: &Env, revision: i64) -> i32 {
    env.replica_sets()
        .await
        .iter()
        .filter(|rs| {
            rs.annotations()
                .get("rollout.sluice.dev/revision")
                .and_then(|r| r.parse::<i64>().ok())
                == Some(revision)
        })
        .map(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
        .sum()
}

/// Status counts as Argo's `ExpectReplicaCounts(desired, current, updated, ready, available)`.
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

fn message(r: &Rollout) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

fn step_index(r: &Rollout) -> Option<i32> {
    r.status.as_ref().and_then(|s| s.current_step_index)
}

/// Argo's `sleep-job` with `duration` 24h: a measurement that does not come back for a day.
const SLEEP_JOB_24H: &str = r#"
kind: AnalysisTemplate
metadata: {name: sleep-job}
spec:
  metrics:
  - name: sleep-job
    initialDelay: 24h
    count: 1
    successCondition: result[0] == 1
    provider:
      prometheus: {query: vector(1)}
"#;

/// Promotion at a timed pause, in the middle of an analysis, and a full promotion after an
/// abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_promote_full() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = Env::with_config(prometheus_config(&prom.url(), Some(&prom.url()))).await;
    create_template(&env, SLEEP_JOB_24H).await;
    let name = "canary-promote-full";
    let analysis = "templates: [{templateName: sleep-job}]";
    let canary = format!(
        "analysis:\n  {analysis}\n  startingStep: 4\nsteps:\n- pause: {{duration: 24h}}\n- analysis:\n    {analysis}\n- pause: {{}}\n- analysis:\n    {analysis}\n"
    );
    env.create(&rollout(name, 1, "canary-promote-full:1", &canary))
        .await;
    let v1 = stable(&env.wait_for(name, "healthy", 60, phase_is("Healthy")).await);
    env.set_image(name, "canary-promote-full:2").await;
    env.wait_for(name, "paused at the 24h pause", 60, |r| {
        phase(r) == "Paused" && step_index(r) == Some(0)
    })
    .await;
    env.promote(name).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = env.get(name).await;
    assert_eq!(step_index(&r), Some(1));
    assert_eq!(phase(&r), "Progressing", "at the analysis step");
    assert_eq!(run_count(&env).await, 1);
    env.promote(name).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.wait_for(name, "paused at pause: {}", 30, |r| {
        phase(r) == "Paused" && step_index(r) == Some(2)
    })
    .await;
    env.rollouts()
        .patch_status(
            name,
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"abort": true}})),
        )
        .await
        .expect("abort");
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.rollouts()
        .patch_status(
            name,
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"promoteFull": true}})),
        )
        .await
        .expect("promote full");
    env.wait_for(name, "healthy on revision 2", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r) && stable(r) != v1
    })
    .await;
    assert_eq!(run_count(&env).await, 1, "no new analysis was created");
}

/// A Rollout referencing a template that does not exist yet is Degraded; creating the template
/// makes it Healthy, without a new revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_fix_invalid_spec() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = Env::with_config(prometheus_config(&prom.url(), Some(&prom.url()))).await;
    let name = "fix-invalid-spec";
    env.create(&rollout(
        name,
        0,
        "fix-invalid-spec:1",
        "analysis:\n  templates: [{templateName: doesnt-exist-yet}]\n",
    ))
    .await;
    let r = env
        .wait_for(name, "degraded", 30, phase_is("Degraded"))
        .await;
    assert!(message(&r).contains("doesnt-exist-yet"), "{}", message(&r));
    create_template(
        &env,
        r#"
kind: AnalysisTemplate
metadata: {name: doesnt-exist-yet}
spec:
  metrics:
  - name: web
    interval: 5s
    successCondition: result[0] == 1
    provider:
      prometheus: {query: vector(1)}
"#,
    )
    .await;
    env.wait_for(name, "healthy", 30, phase_is("Healthy")).await;
}

/// A pause longer than the progress deadline is not a lack of progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollout_pause_duration_greater_than_progress_deadline_seconds() {
    let env = Env::new().await;
    let name = "rollout-canary";
    let mut ro = rollout(
        name,
        3,
        "rollout-canary:1",
        "steps:\n- setWeight: 32\n- pause: {duration: 8s}\n- setWeight: 67\n",
    );
    ro.spec.progress_deadline_seconds = Some(3);
    env.create(&ro).await;
    env.wait_for(name, "healthy", 60, phase_is("Healthy")).await;
    env.set_image(name, "rollout-canary:2").await;
    env.wait_for(name, "in the pause", 30, |r| phase(r) == "Paused")
        .await;
    // Watch every state through the pause: never Degraded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = env.get(name).await;
        assert_ne!(phase(&r), "Degraded", "{}", message(&r));
        if phase(&r) == "Healthy" && stable(&r) == current(&r) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never Healthy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A new template and new replicas in one write, twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_spec_and_replica_change_same_time() {
    let env = Env::new().await;
    let name = "canary-change-same-time";
    env.create(&rollout(
        name,
        2,
        "canary-change-same-time:1",
        "steps:\n- setWeight: 10\n- pause: {duration: 10s}\n- setWeight: 20\n- pause: {duration: 5s}\n",
    ))
    .await;
    env.wait_for(name, "healthy", 60, phase_is("Healthy")).await;
    env.patch_spec(
        name,
        json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
            {"name": "web", "image": "canary-change-same-time:1", "env": [{"name": "TEST", "value": "test"}]}
        ]}}}}),
    )
    .await;
    env.wait_for(name, "paused", 60, phase_is("Paused")).await;
    env.patch_spec(
        name,
        json!({"spec": {"replicas": 4, "template": {"spec": {"containers": [
            {"name": "web", "image": "canary-change-same-time:1", "env": [{"name": "TEST", "value": "test-new"}]}
        ]}}}}),
    )
    .await;
    let r = env
        .wait_for(name, "healthy on the last template", 90, |r| {
            phase(r) == "Healthy" && stable(r) == current(r) && replica_counts(r) == (4, 4, 4, 4, 4)
        })
        .await;
    assert_eq!(replica_counts(&r), (4, 4, 4, 4, 4));
}

/// Makes the template's pods crash-loop (Argo's `command: [/bad-command]`), or not.
fn crash(on: bool, marker: &str) -> serde_json::Value {
    if on {
        json!({"spec": {"template": {"metadata": {"annotations": {CRASH_LOOP: "true", "bad": marker}}}}})
    } else {
        json!({"spec": {"template": {"metadata": {"annotations": {CRASH_LOOP: null, "bad": null}}}}})
    }
}

/// A healthy Rollout updated to a crashing version honours maxSurge 1 / maxUnavailable 0; a
/// second crashing version balances between revision 1 and revision 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollout_good_to_bad_update() {
    let env = Env::new().await;
    let name = "good2bad";
    env.create(&rollout(
        name,
        4,
        "good2bad:1",
        "maxSurge: 1\nmaxUnavailable: 0\n",
    ))
    .await;
    env.wait_for(name, "healthy", 60, phase_is("Healthy")).await;
    env.patch_spec(name, json!({"spec": {"progressDeadlineSeconds": 5}}))
        .await;
    env.patch_spec(name, crash(true, "1")).await;
    let rev2 = current(
        &env.wait_for(name, "degraded", 60, phase_is("Degraded"))
            .await,
    );
    assert_eq!(revision_pods(&env, 1).await, 4, "stable kept whole");
    assert_eq!(revision_pods(&env, 2).await, 1, "one surge pod");
    env.patch_spec(name, crash(true, "2")).await;
    env.wait_for(name, "progressing on revision 3", 30, |r| {
        current(r) != rev2 && phase(r) == "Progressing"
    })
    .await;
    env.wait_for(name, "degraded again", 60, phase_is("Degraded"))
        .await;
    assert_eq!(revision_pods(&env, 1).await, 4);
    assert_eq!(revision_pods(&env, 2).await, 0);
    assert_eq!(revision_pods(&env, 3).await, 1);
}

/// A Rollout that never became healthy, then fixed: it completes on the fixed version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollout_bad_to_good_update() {
    let env = Env::new().await;
    let name = "bad2good";
    let mut ro = rollout(name, 4, "bad2good:1", "maxSurge: 1\nmaxUnavailable: 0\n");
    ro.spec.progress_deadline_seconds = Some(5);
    let tpl = ro.spec.template.as_mut().unwrap();
    tpl.metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(CRASH_LOOP.into(), "true".into());
    env.create(&ro).await;
    let bad = current(
        &env.wait_for(name, "degraded", 60, phase_is("Degraded"))
            .await,
    );
    env.patch_spec(name, json!({"spec": {"progressDeadlineSeconds": 60}}))
        .await;
    env.patch_spec(name, crash(false, "")).await;
    env.wait_for(name, "healthy", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r) && current(r) != bad
    })
    .await;
    assert_eq!(revision_pods(&env, 2).await, 4);
    assert_eq!(revision_pods(&env, 1).await, 0);
}

/// The same with steps: the fixed version goes through its steps to Healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollout_bad_to_good_set_weight_update() {
    let env = Env::new().await;
    let name = "bad2good-setweight";
    let mut ro = rollout(
        name,
        4,
        "bad2good-setweight:1",
        "maxSurge: 1\nmaxUnavailable: 0\nsteps:\n- setWeight: 50\n- pause: {duration: 2s}\n",
    );
    ro.spec.progress_deadline_seconds = Some(5);
    let tpl = ro.spec.template.as_mut().unwrap();
    tpl.metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(CRASH_LOOP.into(), "true".into());
    env.create(&ro).await;
    let bad = current(
        &env.wait_for(name, "degraded", 60, phase_is("Degraded"))
            .await,
    );
    env.patch_spec(name, crash(false, "")).await;
    env.wait_for(name, "healthy", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r) && current(r) != bad
    })
    .await;
    assert_eq!(revision_pods(&env, 2).await, 4);
    assert_eq!(revision_pods(&env, 1).await, 0);
}

/// Event reasons in Argo's order through update, abort, retry and completion. Argo's own e2e
/// test also expects `RolloutAddedToInformer` (its informer cache, not a rollout fact); Sluice's
/// own reasons may come in between and are left out of the comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollout_abort_retry_promote() {
    let env = Env::new().await;
    let name = "abort-retry-promote";
    // As Argo's `StartEventWatch`: every Event as it is created or counted again, in order.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let watch = {
        let seen = seen.clone();
        let events: Api<Event> = Api::namespaced(env.client.clone(), env.ns());
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut stream = kube::runtime::watcher(events, Default::default()).boxed();
            while let Some(Ok(ev)) = stream.next().await {
                if let kube::runtime::watcher::Event::Apply(e)
                | kube::runtime::watcher::Event::InitApply(e) = ev
                    && e.involved_object.name.as_deref() == Some("abort-retry-promote")
                {
                    let note = e.message.clone().unwrap_or_default();
                    seen.lock()
                        .unwrap()
                        .push((e.reason.clone().unwrap_or_default(), note));
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.create(&rollout(
        name,
        1,
        "abort-retry-promote:1",
        "steps:\n- setWeight: 50\n- pause: {duration: 3s}\n",
    ))
    .await;
    let v1 = stable(&env.wait_for(name, "healthy", 60, phase_is("Healthy")).await);
    env.set_image(name, "abort-retry-promote:2").await;
    env.wait_for(name, "paused", 60, phase_is("Paused")).await;
    assert_eq!(revision_pods(&env, 1).await, 1);
    assert_eq!(revision_pods(&env, 2).await, 1);
    env.rollouts()
        .patch_status(
            name,
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"abort": true}})),
        )
        .await
        .expect("abort");
    env.wait_for(name, "degraded", 30, phase_is("Degraded"))
        .await;
    env.rollouts()
        .patch_status(
            name,
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"abort": false}})),
        )
        .await
        .expect("retry");
    env.wait_for(name, "paused again", 30, phase_is("Paused"))
        .await;
    assert_eq!(revision_pods(&env, 1).await, 1);
    assert_eq!(revision_pods(&env, 2).await, 1);
    env.wait_for(name, "healthy on revision 2", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r) && stable(r) != v1
    })
    .await;
    assert_eq!(revision_pods(&env, 1).await, 0);
    assert_eq!(revision_pods(&env, 2).await, 1);

    // Argo's reasons in Argo's order. Within one reconcile Argo interleaves its scaling with
    // its status Events as its code runs; here ScalingReplicaSet comes after a new revision's
    // Events and before the status's, so the two are compared separately: the other reasons in
    // Argo's exact order, and the scalings in Argo's order with Argo's counts.
    let argo_reasons = [
        "RolloutNotCompleted",
        "RolloutUpdated",
        "NewReplicaSetCreated",
        "RolloutCompleted",
        "RolloutStepCompleted",
        "RolloutPaused",
        "RolloutAborted",
        "RolloutResumed",
    ];
    let expected = [
        "RolloutNotCompleted",
        "RolloutUpdated",
        "NewReplicaSetCreated",
        "RolloutCompleted",
        "RolloutNotCompleted",
        "RolloutUpdated",
        "NewReplicaSetCreated",
        "RolloutStepCompleted",
        "RolloutPaused",
        "RolloutAborted",
        "RolloutStepCompleted",
        "RolloutPaused",
        "RolloutStepCompleted",
        "RolloutResumed",
        "RolloutCompleted",
    ];
    let expected_scaling = [
        "Scaled up ReplicaSet REV1 (revision 1) from 0 to 1",
        "Scaled up ReplicaSet REV2 (revision 2) from 0 to 1",
        "Scaled down ReplicaSet REV2 (revision 2) from 1 to 0",
        "Scaled up ReplicaSet REV2 (revision 2) from 0 to 1",
        "Scaled down ReplicaSet REV1 (revision 1) from 1 to 0",
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    let got: Vec<&str> = seen
        .iter()
        .map(|(r, _)| r.as_str())
        .filter(|r| argo_reasons.contains(r))
        .collect();
    let notes: Vec<String> = seen.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    let rev1 = format!("{name}-{}", v1.clone().unwrap());
    let rev2 = format!("{name}-{}", stable(&env.get(name).await).unwrap());
    let scaling: Vec<String> = seen
        .iter()
        .filter(|(r, _)| r == "ScalingReplicaSet")
        .map(|(_, n)| n.replace(&rev1, "REV1").replace(&rev2, "REV2"))
        .collect();
    assert_eq!(scaling, expected_scaling, "events: {notes:#?}");
    assert_eq!(got, expected, "events: {notes:#?}");
}
