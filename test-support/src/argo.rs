//! The checks and actions of Argo Rollouts' e2e fixtures (`test/fixtures/` in
//! `argoproj/argo-rollouts`), for the tests that replay Argo's scenarios: each function names the
//! fixture method it stands for. They work on the test cluster and on a real one alike (pods are
//! released through readiness gates, written through the API as Argo's fixture writes them).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use sluice::api::constants;

use crate::controller::{Env, current, stable};
use crate::target::patience;

/// The readiness gate of pods a test releases one by one (Argo's `argoproj.io/e2e-readiness`).
pub const READINESS_GATE: &str = "e2e.sluice.dev/ready";

/// The pod template patch that makes every pod wait for [`mark_pods_ready`].
pub fn readiness_gate() -> serde_json::Value {
    json!([{"conditionType": READINESS_GATE}])
}

fn revision_of(rs: &ReplicaSet) -> Option<&str> {
    rs.annotations()
        .get(constants::REVISION_ANNOTATION)
        .map(String::as_str)
}

fn hash_of(rs: &ReplicaSet) -> Option<String> {
    rs.labels().get(constants::POD_TEMPLATE_HASH_LABEL).cloned()
}

/// Argo's `GetReplicaSetByRevision`: the ReplicaSet of `revision`, once it exists.
pub async fn replica_set_of_revision(env: &Env, revision: &str) -> ReplicaSet {
    let deadline = Instant::now() + patience(30);
    loop {
        let rss = env.replica_sets().await;
        if let Some(rs) = rss.iter().find(|rs| revision_of(rs) == Some(revision)) {
            return rs.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no ReplicaSet of revision {revision}: {:?}",
            replica_set_counts(env).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pod-template hash of the ReplicaSet of `revision`, once it exists.
pub async fn revision_hash(env: &Env, revision: &str) -> String {
    hash_of(&replica_set_of_revision(env, revision).await).expect("a pod-template hash label")
}

/// Pods of `hash` that are not being deleted (Argo's pod counts ignore those too).
pub async fn pods_of_hash(env: &Env, hash: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    let selector = format!("{}={hash}", constants::POD_TEMPLATE_HASH_LABEL);
    api.list(&ListParams::default().labels(&selector))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// (name, revision, spec.replicas, available) of every ReplicaSet, for failure messages.
pub async fn replica_set_counts(env: &Env) -> Vec<(String, String, Option<i32>, Option<i32>)> {
    env.replica_sets()
        .await
        .iter()
        .map(|rs| {
            (
                rs.name_any(),
                revision_of(rs).unwrap_or_default().to_string(),
                rs.spec.as_ref().and_then(|s| s.replicas),
                rs.status.as_ref().and_then(|s| s.available_replicas),
            )
        })
        .collect()
}

/// Argo's `WaitForRevisionPodCount`: waits until the pods of `revision` number `n`.
pub async fn wait_for_revision_pod_count(env: &Env, revision: &str, n: usize) {
    let hash = revision_hash(env, revision).await;
    let deadline = Instant::now() + patience(60);
    while pods_of_hash(env, &hash).await.len() != n {
        assert!(
            Instant::now() < deadline,
            "revision {revision}: expected {n} pods, saw {}; replica sets: {:?}",
            pods_of_hash(env, &hash).await.len(),
            replica_set_counts(env).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Argo's `ExpectRevisionPodCount`: the pods of `revision` number `n`. Waits for them (Argo's
/// check is instantaneous after a sleep), then checks they still do a moment later, so that a
/// count passing through `n` does not count.
pub async fn expect_revision_pod_count(env: &Env, revision: &str, n: usize) {
    let hash = revision_hash(env, revision).await;
    expect_pod_count(env, &format!("revision {revision}"), &hash, n).await;
}

async fn expect_pod_count(env: &Env, what: &str, hash: &str, n: usize) {
    let deadline = Instant::now() + patience(30);
    loop {
        if pods_of_hash(env, hash).await.len() == n {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if pods_of_hash(env, hash).await.len() == n {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: expected {n} pods, saw {}; replica sets: {:?}",
            pods_of_hash(env, hash).await.len(),
            replica_set_counts(env).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Argo's `ExpectCanaryStablePodCount`: pods of `status.currentPodHash` and `status.stableRS`.
pub async fn expect_canary_stable_pod_count(env: &Env, name: &str, canary: usize, stable_n: usize) {
    let r = env.get(name).await;
    let canary_hash = current(&r).expect("status.currentPodHash");
    let stable_hash = stable(&r).expect("status.stableRS");
    expect_pod_count(env, "canary", &canary_hash, canary).await;
    expect_pod_count(env, "stable", &stable_hash, stable_n).await;
}

fn gate_is_set(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == READINESS_GATE))
}

/// Argo's `MarkPodsReady`: sets the readiness gate's condition True on `count` pods of
/// `revision` that do not have it yet, waiting (up to a minute) for pods to exist to mark.
pub async fn mark_pods_ready(env: &Env, revision: &str, count: usize) {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    let deadline = Instant::now() + patience(60);
    let mut left = count;
    while left > 0 {
        let hash = revision_hash(env, revision).await;
        for pod in pods_of_hash(env, &hash).await {
            if left == 0 {
                break;
            }
            if gate_is_set(&pod) {
                continue;
            }
            if set_gate(&api, &pod.name_any()).await {
                left -= 1;
            }
        }
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "revision {revision}: {left} of {count} pods left to mark ready; replica sets: {:?}",
            replica_set_counts(env).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Appends the gate's condition through the status subresource; false when the pod is gone or
/// already marked. Retries conflicts with the kubelet's own status writes.
async fn set_gate(api: &Api<Pod>, name: &str) -> bool {
    for _ in 0..20 {
        let Ok(mut pod) = api.get_status(name).await else {
            return false;
        };
        if gate_is_set(&pod) || pod.metadata.deletion_timestamp.is_some() {
            return false;
        }
        let condition = serde_json::from_value(json!({"type": READINESS_GATE, "status": "True"}))
            .expect("a pod condition");
        pod.status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new)
            .push(condition);
        match api.replace_status(name, &PostParams::default(), &pod).await {
            Ok(_) => return true,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return false,
            Err(e) => panic!("mark pod {name} ready: {e}"),
        }
    }
    panic!("mark pod {name} ready: conflicts every time")
}

/// Argo's `ExpectRevisionScaleDown`: whether the ReplicaSet of `revision` carries the
/// scale-down deadline annotation (Sluice's `rollout.sluice.dev/scale-down-deadline`).
pub async fn revision_scale_down_deadline(env: &Env, revision: &str) -> Option<String> {
    replica_set_of_revision(env, revision)
        .await
        .annotations()
        .get(constants::SCALE_DOWN_DEADLINE_ANNOTATION)
        .cloned()
}

/// Argo's `WaitForRolloutCanaryStepIndex`.
pub async fn wait_for_step_index(env: &Env, name: &str, index: i32) {
    env.wait_for(name, &format!("step index {index}"), 60, |r| {
        r.status.as_ref().and_then(|s| s.current_step_index) == Some(index)
    })
    .await;
}

/// Argo's `AbortRollout`.
pub async fn abort(env: &Env, name: &str) {
    env.patch_status(name, json!({"abort": true})).await;
}

/// Argo's `ScaleRollout` (a merge patch of `spec.replicas`).
pub async fn scale_rollout(env: &Env, name: &str, replicas: i32) {
    env.patch_spec(name, json!({"spec": {"replicas": replicas}}))
        .await;
}

/// Argo's `WaitForRolloutReplicas`: `status.replicas`.
pub async fn wait_for_replicas(env: &Env, name: &str, n: i32) {
    env.wait_for(name, &format!("{n} replicas"), 60, |r| {
        r.status.as_ref().and_then(|s| s.replicas) == Some(n)
    })
    .await;
}

/// Argo's `UpdateSpec()` without arguments: a new pod template (an annotation set to now).
pub async fn update_spec(env: &Env, name: &str) {
    let now = jiff::Timestamp::now().to_string();
    env.patch_spec(
        name,
        json!({"spec": {"template": {"metadata": {"annotations": {"update": now}}}}}),
    )
    .await;
}

/// Argo's `GetServices`-based checks: the pod-template hash a Service selects.
pub async fn service_selects(env: &Env, service: &str) -> Option<String> {
    env.service_hash(service).await
}

/// A `sluice` CLI action, decided from the Rollout and its ReplicaSets as they are and sent as
/// the CLI sends it (Argo's fixtures drive its CLI's functions the same way). A refused action
/// changes nothing and returns the refusal.
pub async fn act(
    env: &Env,
    name: &str,
    action: &sluice::plan::actions::Action,
) -> Result<String, sluice::plan::actions::Refusal> {
    use kube::api::{Patch, PatchParams};
    let ro = env.get(name).await;
    let rss = env.replica_sets().await;
    let patch = sluice::plan::actions::decide(&ro, &rss, action)?;
    let api = env.rollouts();
    if let Some(ops) = patch.json_patch {
        let ops: json_patch::Patch = serde_json::from_value(ops).expect("a JSON patch");
        api.patch(name, &PatchParams::default(), &Patch::Json::<()>(ops))
            .await
            .expect("JSON patch");
    }
    if let Some(spec) = patch.spec_patch {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&spec))
            .await
            .expect("spec patch");
    }
    if let Some(status) = patch.status_patch {
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status patch");
    }
    Ok(patch.summary)
}

/// Argo's `PromoteRolloutFull` (`promote --full`); refused, as by the CLI, when there is
/// nothing to promote.
pub async fn promote_full(env: &Env, name: &str) {
    let _refused = act(
        env,
        name,
        &sluice::plan::actions::Action::Promote { full: true },
    )
    .await;
}

/// Argo's `UndoRollout(revision)` (`undo --to-revision`).
pub async fn undo(env: &Env, name: &str, revision: i64) {
    act(
        env,
        name,
        &sluice::plan::actions::Action::Undo {
            to_revision: Some(revision),
        },
    )
    .await
    .expect("undo is possible");
}

// ---------------------------------------------------------------------------------------------
// Analysis scenarios (`test/e2e/analysis_test.go`).

/// A controller whose metric providers may call `allowed` (Prometheus default address
/// `default_address`), with `templates` (AnalysisTemplate YAML) created in the test's namespace.
pub async fn env_with_templates(
    allowed: &str,
    default_address: Option<&str>,
    templates: &[&str],
) -> Env {
    let env = Env::with_config(crate::controller::prometheus_config(
        allowed,
        default_address,
    ))
    .await;
    let api: Api<sluice::api::analysis::AnalysisTemplate> =
        Api::namespaced(env.client.clone(), env.ns());
    for yaml in templates {
        let template: sluice::api::analysis::AnalysisTemplate =
            serde_yaml::from_str(yaml).expect("template yaml");
        api.create(&PostParams::default(), &template)
            .await
            .expect("create template");
    }
    env
}

/// The AnalysisRuns of the test's namespace, oldest first.
pub async fn analysis_runs(env: &Env) -> Vec<sluice::api::analysis::AnalysisRun> {
    let api: Api<sluice::api::analysis::AnalysisRun> =
        Api::namespaced(env.client.clone(), env.ns());
    let mut runs = api.list(&Default::default()).await.unwrap().items;
    runs.sort_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0));
    runs
}

/// The run's phase (the default, Pending, before it has a status).
pub fn run_phase(run: &sluice::api::analysis::AnalysisRun) -> sluice::api::common::AnalysisPhase {
    run.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// A background analysis' run (Argo's `rollout-type: Background` label).
pub fn is_background(run: &sluice::api::analysis::AnalysisRun) -> bool {
    run.labels().get("rollout-type").map(String::as_str) == Some("Background")
}

/// An analysis step's run (Argo's `rollout-type: Step` label).
pub fn is_step(run: &sluice::api::analysis::AnalysisRun) -> bool {
    run.labels().get("rollout-type").map(String::as_str) == Some("Step")
}

/// Waits until the newest run matching `which` is in `phase`, and returns it.
pub async fn wait_run_phase(
    env: &Env,
    which: fn(&sluice::api::analysis::AnalysisRun) -> bool,
    phase: sluice::api::common::AnalysisPhase,
    secs: u64,
) -> sluice::api::analysis::AnalysisRun {
    let deadline = Instant::now() + patience(secs);
    loop {
        let all = analysis_runs(env).await;
        if let Some(r) = all.iter().rev().find(|r| which(r))
            && run_phase(r) == phase
        {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no run reached {phase:?}: {:#?}",
            all.iter()
                .map(|r| (r.name_any(), r.status.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Rollout `name` at image `name:1`.
pub fn basic(name: &str, replicas: i32, canary_yaml: &str) -> sluice::api::rollout::Rollout {
    crate::controller::rollout(name, replicas, &format!("{name}:1"), canary_yaml)
}

/// Creates `ro`, waits until it is healthy (its first revision is not analysed), and updates its
/// image to `name:2`.
pub async fn healthy_then_update(env: &Env, ro: sluice::api::rollout::Rollout) {
    let name = ro.name_any();
    env.create(&ro).await;
    env.wait_for(&name, "healthy", 60, crate::rollout::phase_is("Healthy"))
        .await;
    assert_eq!(
        analysis_runs(env).await.len(),
        0,
        "the first revision is not analysed"
    );
    env.set_image(&name, &format!("{name}:2")).await;
}
