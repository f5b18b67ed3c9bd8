//! Argo Rollouts' own e2e scenarios (`test/e2e/` in `argoproj/argo-rollouts`), ported with their
//! actions and their expectations: each test is named after Argo's, which its comment names.
//! Only `apiVersion` and what the test cluster needs differ: a container that never starts
//! (`command: [/bad-command]` in Argo's manifests) is a pod the simulated kubelet keeps
//! crash-looping (`e2e.sluice.dev/crash-loop`). `docs/compat.md` ("Argo e2e scenarios") maps
//! each Argo test to its port here.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use sluice::api::constants;
use sluice_test_support::controller::*;
use sluice_test_support::rollout::phase_is;

/// Pods of `hash` that are not being deleted (Argo's `expectPodCountByHash` ignores those too).
async fn pod_count(env: &Env, hash: &str) -> usize {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    let selector = format!("{}={hash}", constants::POD_TEMPLATE_HASH_LABEL);
    api.list(&ListParams::default().labels(&selector))
        .await
        .expect("list pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count()
}

/// The pod-template hash of the ReplicaSet of `revision`.
async fn revision_hash(env: &Env, revision: &str) -> String {
    env.replica_sets()
        .await
        .iter()
        .find(|rs| {
            rs.annotations()
                .get(constants::REVISION_ANNOTATION)
                .map(String::as_str)
                == Some(revision)
        })
        .and_then(|rs| rs.labels().get(constants::POD_TEMPLATE_HASH_LABEL).cloned())
        .unwrap_or_else(|| panic!("no ReplicaSet of revision {revision}"))
}

/// Waits until the pods of `revision` number `n` (Argo's `ExpectRevisionPodCount`), and checks
/// that they still do a moment later (a count passing through `n` does not count).
async fn expect_revision_pod_count(env: &Env, revision: &str, n: usize) {
    let hash = revision_hash(env, revision).await;
    expect_pod_count(env, &format!("revision {revision}"), &hash, n).await;
}

async fn expect_pod_count(env: &Env, what: &str, hash: &str, n: usize) {
    let deadline = std::time::Instant::now() + patience(30);
    loop {
        if pod_count(env, hash).await == n {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if pod_count(env, hash).await == n {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: expected {n} pods, saw {}; replica sets: {:?}",
            pod_count(env, hash).await,
            replica_set_counts(env).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Argo's `ExpectCanaryStablePodCount`: pods of `status.currentPodHash` and `status.stableRS`.
async fn expect_canary_stable_pod_count(env: &Env, name: &str, canary: usize, stable_pods: usize) {
    let r = env.get(name).await;
    let canary_hash = current(&r).expect("current pod hash");
    let stable_hash = stable(&r).expect("stable hash");
    expect_pod_count(env, "canary", &canary_hash, canary).await;
    expect_pod_count(env, "stable", &stable_hash, stable_pods).await;
}

async fn replica_set_counts(env: &Env) -> Vec<(String, Option<i32>, Option<i32>)> {
    env.replica_sets()
        .await
        .iter()
        .map(|rs| {
            (
                rs.name_any(),
                rs.spec.as_ref().and_then(|s| s.replicas),
                rs.status.as_ref().and_then(|s| s.available_replicas),
            )
        })
        .collect()
}

/// Argo's `WaitForRolloutReplicas`: `status.replicas`.
async fn wait_for_replicas(env: &Env, name: &str, n: i32) {
    env.wait_for(name, &format!("{n} replicas"), 60, |r| {
        r.status.as_ref().and_then(|s| s.replicas) == Some(n)
    })
    .await;
}

/// Argo's `ScaleRollout` (a merge patch of `spec.replicas`).
async fn scale_rollout(env: &Env, name: &str, replicas: i32) {
    env.patch_spec(name, json!({"spec": {"replicas": replicas}}))
        .await;
}

/// What an HPA does: writes `spec.replicas` through the scale subresource.
async fn scale_through_subresource(env: &Env, name: &str, replicas: i32) {
    env.rollouts()
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("patch the scale subresource");
}

/// A pod template change whose pods never become available (Argo: `command: [/bad-command]`).
fn bad_template(image: &str) -> serde_json::Value {
    json!({"spec": {"template": {
        "metadata": {"annotations": {"e2e.sluice.dev/crash-loop": "true"}},
        "spec": {"containers": [{"name": "web", "image": image}]}
    }}})
}

/// A pod template change that starts fine (and drops the crash-loop annotation).
fn good_template(image: &str) -> serde_json::Value {
    json!({"spec": {"template": {
        "metadata": {"annotations": {"e2e.sluice.dev/crash-loop": null}},
        "spec": {"containers": [{"name": "web", "image": image}]}
    }}})
}

async fn healthy(env: &Env, name: &str) -> sluice::api::rollout::Rollout {
    env.wait_for(name, "Healthy", 60, phase_is("Healthy")).await
}

/// Argo: `CanarySuite.TestCanaryWithPausedRollout` (fixture `functional/rollout-canary-with-pause.yaml`).
/// A basic canary (Services, no traffic routing) of 3 replicas at `setWeight: 20` keeps its 3
/// stable pods and surges one canary pod; a second update while paused moves that pod to the
/// newest revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_with_paused_rollout() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    let spec = r#"
canaryService: web-canary
stableService: web-stable
steps:
- setWeight: 20
- pause: {}
"#;
    let mut ro = rollout("web", 3, "web:1", spec);
    ro.spec.revision_history_limit = Some(3);
    ro.spec.progress_deadline_seconds = Some(5);
    env.create(&ro).await;
    healthy(&env, "web").await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "Paused", 60, phase_is("Paused")).await;
    env.set_image("web", "web:3").await;
    env.wait_for("web", "Paused on revision 3", 60, |r| {
        phase(r) == "Paused" && step(r) == Some(1) && current(r) != stable(r)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    expect_revision_pod_count(&env, "1", 3).await;
    expect_revision_pod_count(&env, "2", 0).await;
    expect_revision_pod_count(&env, "3", 1).await;
}

/// The one-replica basic canary (issue: an all-at-once replacement at any weight): at a partial
/// weight the only stable pod stays and one canary pod surges beside it, as Argo does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_basic_canary_keeps_its_stable_pod() {
    let env = Env::new().await;
    env.create(&rollout(
        "web",
        1,
        "web:1",
        "steps:\n- setWeight: 50\n- pause: {}\n",
    ))
    .await;
    healthy(&env, "web").await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "Paused", 60, phase_is("Paused")).await;
    expect_canary_stable_pod_count(&env, "web", 1, 1).await;
    env.promote("web").await;
    healthy(&env, "web").await;
    expect_revision_pod_count(&env, "2", 1).await;
    expect_revision_pod_count(&env, "1", 0).await;
}

/// Argo: `CanarySuite.TestRolloutScalingWhenPaused` (fixture `functional/rollout-basic.yaml`
/// with `setWeight: 25`, `pause: {}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollout_scaling_when_paused() {
    let env = Env::new().await;
    env.create(&rollout(
        "web",
        1,
        "web:1",
        "steps:\n- setWeight: 25\n- pause: {}\n",
    ))
    .await;
    healthy(&env, "web").await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "Paused", 60, phase_is("Paused")).await;
    expect_canary_stable_pod_count(&env, "web", 1, 1).await;
    scale_rollout(&env, "web", 8).await;
    env.wait_for("web", "8 available", 60, |r| {
        r.status.as_ref().and_then(|s| s.available_replicas) == Some(8)
    })
    .await;
    expect_canary_stable_pod_count(&env, "web", 2, 6).await;
    // The same through the scale subresource, as an HPA does.
    scale_through_subresource(&env, "web", 4).await;
    env.wait_for("web", "4 available", 60, |r| {
        r.status.as_ref().and_then(|s| s.available_replicas) == Some(4)
    })
    .await;
    expect_canary_stable_pod_count(&env, "web", 1, 3).await;
    assert_eq!(phase(&env.get("web").await), "Paused");
}

/// Argo: `CanarySuite.TestRolloutScalingDuringUpdate`. 4 replicas, `maxSurge: 2`,
/// `maxUnavailable: 0`, no steps; the update's pods never become available; scaled to 8 and
/// back to 4 in the middle of the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollout_scaling_during_update() {
    let env = Env::new().await;
    env.create(&rollout(
        "web",
        4,
        "web:1",
        "maxSurge: 2\nmaxUnavailable: 0\n",
    ))
    .await;
    healthy(&env, "web").await;
    env.patch_spec("web", bad_template("web:2")).await;
    wait_for_replicas(&env, "web", 6).await;
    expect_canary_stable_pod_count(&env, "web", 2, 4).await;
    scale_rollout(&env, "web", 8).await;
    wait_for_replicas(&env, "web", 10).await;
    expect_canary_stable_pod_count(&env, "web", 6, 4).await;
    scale_rollout(&env, "web", 4).await;
    wait_for_replicas(&env, "web", 6).await;
    expect_canary_stable_pod_count(&env, "web", 2, 4).await;
}

/// Argo: `FunctionalSuite.TestRolloutBadToBadUpdate`. A first revision that never becomes
/// available, then a second that never does either: the first keeps its 4 pods and the second
/// gets the one pod of surge. Then (beyond Argo's test) a fixed revision replaces both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollout_bad_to_bad_update() {
    let env = Env::new().await;
    let mut ro = rollout("web", 4, "web:1", "maxSurge: 1\nmaxUnavailable: 0\n");
    ro.spec.progress_deadline_seconds = Some(3);
    let template = ro.spec.template.as_mut().expect("template");
    template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations = Some([("e2e.sluice.dev/crash-loop".to_string(), "true".to_string())].into());
    env.create(&ro).await;
    env.wait_for("web", "Degraded", 60, phase_is("Degraded"))
        .await;
    env.patch_spec("web", bad_template("web:2")).await;
    env.wait_for("web", "Progressing", 60, phase_is("Progressing"))
        .await;
    env.wait_for("web", "Degraded", 60, phase_is("Degraded"))
        .await;
    expect_revision_pod_count(&env, "2", 1).await;
    expect_revision_pod_count(&env, "1", 4).await;

    env.patch_spec("web", good_template("web:3")).await;
    healthy(&env, "web").await;
    expect_revision_pod_count(&env, "3", 4).await;
    expect_revision_pod_count(&env, "2", 0).await;
    expect_revision_pod_count(&env, "1", 0).await;
}
