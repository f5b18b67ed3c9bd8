//! `sluice restart` (`spec.restartAt`) through the controller on the test cluster: every pod
//! created before `restartAt` is evicted and replaced by its ReplicaSet, never more than
//! `maxUnavailable` at a time, PodDisruptionBudgets are honoured, `status.restartedAt` records
//! the end, and Events say what happened. Argo Rollouts' e2e scenarios are ported under their
//! names (`test/e2e/functional_test.go`: TestRolloutRestart, TestRolloutPDBRestart,
//! TestCompleteRolloutRestart).

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use sluice::api::rollout::Rollout;
use sluice::plan::actions::{Action, decide};
use sluice_test_support::controller::*;

/// A Rollout `web` whose pods take `ready_after` to become ready.
fn slow_rollout(replicas: i32, canary: &str, ready_after: &str) -> Rollout {
    let mut ro = rollout("web", replicas, "web:1", canary);
    let meta = ro
        .spec
        .template
        .as_mut()
        .unwrap()
        .metadata
        .get_or_insert_with(Default::default);
    meta.annotations =
        Some([(sluice_e2e::READY_AFTER.to_string(), ready_after.to_string())].into());
    ro
}

/// `sluice restart web [--in secs]`: the patch the CLI decides, sent as the CLI sends it.
/// Returns `restartAt`.
async fn restart(env: &Env, in_secs: i64) -> Timestamp {
    let at = (Timestamp::now() + jiff::SignedDuration::from_secs(in_secs))
        .round(jiff::Unit::Second)
        .unwrap();
    let ro = env.get("web").await;
    let patch = decide(&ro, &env.replica_sets().await, &Action::Restart { at })
        .expect("restart is possible");
    env.rollouts()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(patch.spec_patch.as_ref().expect("a spec patch")),
        )
        .await
        .expect("restart patch");
    at
}

async fn pods(env: &Env) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    api.list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
}

fn is_available(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn created(p: &Pod) -> Timestamp {
    p.metadata.creation_timestamp.as_ref().unwrap().0
}

/// Names of the live (not terminating) pods.
fn live_names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect()
}

fn restarted_at(r: &Rollout) -> Option<Timestamp> {
    r.status
        .as_ref()
        .and_then(|s| s.restarted_at.as_ref())
        .map(|t| t.0)
}

fn message(r: &Rollout) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

/// Events on the Rollout `web` with `reason`: their notes.
async fn events(env: &Env, reason: &str) -> Vec<String> {
    let api: Api<EventV1> = Api::namespaced(env.client.clone(), env.ns());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

/// Polls the pods until the restart of `at` is recorded, and returns the fewest available
/// pods seen on the way.
async fn fewest_available_until_restarted(env: &Env, at: Timestamp, secs: u64) -> usize {
    let deadline = std::time::Instant::now() + patience(secs);
    let mut fewest = usize::MAX;
    loop {
        let available = pods(env).await.iter().filter(|p| is_available(p)).count();
        fewest = fewest.min(available);
        let r = env.get("web").await;
        if restarted_at(&r) == Some(at) {
            return fewest;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "restart never completed: {:#?}\npods: {:?}",
            r.status,
            pods(env)
                .await
                .iter()
                .map(|p| (p.name_any(), created(p), is_available(p)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every pod of the Rollout is younger than `at` (none was created before it).
async fn all_pods_created_since(env: &Env, at: Timestamp) {
    let pods = pods(env).await;
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert!(!live.is_empty());
    for p in live {
        assert!(
            created(p) >= at,
            "pod {} created {} before restartAt {at}",
            p.name_any(),
            created(p)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_rollout_restart_replaces_every_pod_within_max_unavailable() {
    let env = Env::new().await;
    env.create(&slow_rollout(
        4,
        "maxUnavailable: 1\nsteps:\n- setWeight: 50\n- pause: {}\n",
        "1s",
    ))
    .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let before = live_names(&pods(&env).await);
    assert_eq!(before.len(), 4);
    // Pod creation times have second precision: restartAt must be after them.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at = restart(&env, 0).await;

    // One pod away at a time: never fewer than 3 of 4 available.
    let fewest = fewest_available_until_restarted(&env, at, 60).await;
    assert!(fewest >= 3, "{fewest} pods available at one point");
    let after = live_names(&pods(&env).await);
    assert_eq!(after.len(), 4);
    assert!(after.is_disjoint(&before), "{before:?} -> {after:?}");
    all_pods_created_since(&env, at).await;
    let r = env
        .wait_for("web", "healthy again", 30, |r| phase(r) == "Healthy")
        .await;
    assert_eq!(restarted_at(&r), Some(at));
    // The restart is not an update: same version, no new ReplicaSet.
    assert_eq!(env.replica_sets().await.len(), 1);

    // Each batch of evictions is an Event naming its pods (and each eviction is logged).
    let evictions = events(&env, "RestartingPods").await;
    assert!(
        evictions.iter().any(|n| n.starts_with("evicted ")
            && before.iter().any(|name| n.contains(name.as_str()))
            && n.contains(&at.to_string())),
        "{evictions:?}"
    );
    assert_eq!(
        events(&env, "RestartedPods").await.len(),
        1,
        "one Event when the restart completes"
    );
}

/// Argo's TestRolloutRestart: a canary paused at 25% of 4 pods with `maxUnavailable: 75%` is
/// restarted while paused; three pods go at once (the stable ReplicaSet's first), leaving one
/// available, and the canary stays paused at its step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart() {
    let env = Env::new().await;
    let canary = "maxUnavailable: 75%\nsteps:\n- setWeight: 25\n- pause: {}\n";
    env.create(&slow_rollout(4, canary, "3s")).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "paused at 25%", 60, |r| phase(r) == "Paused")
        .await;
    let (stable_hash, canary_hash) = (stable(&r).unwrap(), current(&r).unwrap());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at = restart(&env, 0).await;

    // ExpectReplicaCounts(4, 4, 1, 1, 1) within two seconds: the three stable pods evicted,
    // their replacements not ready yet, the canary pod still serving.
    let deadline = std::time::Instant::now() + patience(5);
    loop {
        let pods = pods(&env).await;
        let available: Vec<&Pod> = pods.iter().filter(|p| is_available(p)).collect();
        if available.len() == 1 {
            assert_eq!(
                available[0].labels()[sluice::api::constants::POD_TEMPLATE_HASH_LABEL],
                canary_hash,
                "the stable ReplicaSet restarts first"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "three pods never went at once: {:?}",
            pods.iter()
                .map(|p| (p.name_any(), is_available(p)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fewest = fewest_available_until_restarted(&env, at, 60).await;
    assert!(fewest >= 1, "at most 3 of 4 pods away");
    all_pods_created_since(&env, at).await;
    let r = env.get("web").await;
    assert_eq!(phase(&r), "Paused");
    assert_eq!(step(&r), Some(1));
    assert_eq!(stable(&r).as_deref(), Some(stable_hash.as_str()));
    assert_eq!(env.pods_of(&stable_hash).await, 3);
    assert_eq!(env.pods_of(&canary_hash).await, 1);
}

/// Argo's TestRolloutPDBRestart: a PodDisruptionBudget requiring all 4 pods refuses every
/// eviction (`maxUnavailable: 100%` notwithstanding): no pod is replaced, and the refusal is
/// reported. Once the budget is deleted, the restart goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_pdb_restart() {
    let env = Env::new().await;
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 4, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), env.ns());
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let canary = "maxUnavailable: 100%\nsteps:\n- setWeight: 25\n- pause: {}\n";
    env.create(&slow_rollout(4, canary, "1s")).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused at 25%", 60, |r| phase(r) == "Paused")
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = live_names(&pods(&env).await);
    let at = restart(&env, 0).await;

    // The refusal is reported (a Warning Event naming the pod), and the reconcile is not held.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let notes = events(&env, "RestartingPods").await;
        if notes.iter().any(|n| n.contains("refused")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refusal reported: {notes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ExpectReplicaCounts(4, 4, 1, 4, 4): the budget prevented every eviction.
    let pods_now = pods(&env).await;
    assert_eq!(live_names(&pods_now), before);
    assert_eq!(pods_now.iter().filter(|p| is_available(p)).count(), 4);
    let r = env.get("web").await;
    assert_eq!(restarted_at(&r), None);
    assert_eq!(phase(&r), "Paused");
    pdbs.delete("web", &DeleteParams::default()).await.unwrap();
    // WaitForRolloutAvailableReplicas(0): with 100% unavailable allowed, all go at once.
    let fewest = fewest_available_until_restarted(&env, at, 60).await;
    assert_eq!(fewest, 0, "all four pods restarted at once");
    all_pods_created_since(&env, at).await;
}

/// A restart asked for while the update's new pod is not available yet waits (pods away for
/// the update use up `maxUnavailable`), says so, and happens once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_during_an_update_waits_for_available_pods_then_happens() {
    let env = Env::new().await;
    let canary = "maxUnavailable: 1\nmaxSurge: 1\nsteps:\n- setWeight: 25\n- pause: {}\n";
    env.create(&slow_rollout(4, canary, "4s")).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stable_hash = current(&env.get("web").await).unwrap();
    env.set_image("web", "web:2").await;
    // The canary pod is seen on the cluster, not in the status: replica counts in the status
    // are written with the next decision or after `COUNTER_DELAY`, by which time the pod may
    // be ready and the restart would not have to wait.
    let canary_hash = canary_pod_created(&env, &stable_hash).await;
    let before = live_names(&pods(&env).await);
    let at = restart(&env, 0).await;

    // While the canary pod is not ready, no pod is evicted and the status says why.
    let r = env
        .wait_for("web", "the restart waiting", 10, |r| {
            message(r).contains("waiting")
        })
        .await;
    assert!(message(&r).contains("maxUnavailable"), "{}", message(&r));
    let canary_ready = pods(&env).await.iter().any(|p| {
        p.labels()[sluice::api::constants::POD_TEMPLATE_HASH_LABEL] == canary_hash
            && is_available(p)
    });
    assert!(!canary_ready, "the canary pod was already ready");
    assert!(live_names(&pods(&env).await).is_superset(&before));

    let fewest = fewest_available_until_restarted(&env, at, 90).await;
    assert!(fewest >= 3, "{fewest} of 4 pods available at one point");
    all_pods_created_since(&env, at).await;
    let r = env
        .wait_for("web", "paused at 25%", 30, |r| phase(r) == "Paused")
        .await;
    assert_eq!(step(&r), Some(1));
}

/// Waits (30 s at most) until a pod of a ReplicaSet other than `stable_hash`'s exists, and
/// returns that ReplicaSet's pod-template hash.
async fn canary_pod_created(env: &Env, stable_hash: &str) -> String {
    for _ in 0..300 {
        let canary = pods(env).await.into_iter().find_map(|p| {
            let hash = &p.labels()[sluice::api::constants::POD_TEMPLATE_HASH_LABEL];
            (hash != stable_hash).then(|| hash.clone())
        });
        if let Some(hash) = canary {
            return hash;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no canary pod within 30 s");
}

/// A restart scheduled ahead (`sluice restart --in`) changes nothing until then, and then
/// replaces the pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_at_in_the_future_waits_until_then() {
    let env = Env::new().await;
    env.create(&slow_rollout(2, "maxUnavailable: 1\n", "500ms"))
        .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let before = live_names(&pods(&env).await);
    let at = restart(&env, 4).await;
    let r = env
        .wait_for("web", "the restart scheduled", 10, |r| {
            message(r).starts_with("restart scheduled at")
        })
        .await;
    assert_eq!(phase(&r), "Progressing");
    while Timestamp::now() < at - jiff::SignedDuration::from_millis(500) {
        assert_eq!(
            live_names(&pods(&env).await),
            before,
            "a pod went before {at}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fewest_available_until_restarted(&env, at, 30).await;
    assert!(live_names(&pods(&env).await).is_disjoint(&before));
    all_pods_created_since(&env, at).await;
    env.wait_for("web", "healthy", 30, |r| phase(r) == "Healthy")
        .await;
}

/// Argo's TestCompleteRolloutRestart: a Rollout with `progressDeadlineAbort` restarted long
/// after its progress deadline passed ends Healthy (the deadline does not abort a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_rollout_restart() {
    let env = Env::new().await;
    let mut ro = rollout("web", 2, "web:1", "steps:\n- setWeight: 20\n");
    ro.spec.progress_deadline_abort = Some(true);
    ro.spec.progress_deadline_seconds = Some(2);
    env.create(&ro).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at = restart(&env, 0).await;
    fewest_available_until_restarted(&env, at, 30).await;
    let r = env
        .wait_for("web", "healthy", 30, |r| phase(r) == "Healthy")
        .await;
    let st = r.status.unwrap();
    assert!(!st.abort);
    assert_eq!(st.restarted_at.map(|t| t.0), Some(at));
}
