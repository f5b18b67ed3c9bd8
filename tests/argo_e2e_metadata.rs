//! Argo Rollouts' e2e scenarios for ephemeral metadata (`canaryMetadata` / `stableMetadata`)
//! and the rollback window (`rollbackWindow`), ported with their actions and expectations
//! (`test/e2e/canary_test.go` `TestEphemeralMetadata`, `test/e2e/rollback_window_test.go`).
//! Each test is named after Argo's, which its comment names; `docs/compat.md` ("Argo e2e
//! scenarios") maps them here. Only `apiVersion` and what the test cluster needs differ: the
//! rollback-window analysis measures through a real Prometheus (Sluice has no `job` provider
//! yet) instead of Argo's `sleep-job` template, and succeeds as that one does.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use sluice::api::analysis::{AnalysisRun, AnalysisTemplate};
use sluice::api::constants;
use sluice::api::rollout::Rollout;
use sluice_e2e::prometheus::PrometheusServer;
use sluice_test_support::controller::*;
use sluice_test_support::rollout::phase_is;

/// The pod-template hash of the ReplicaSet of `revision` (its revision annotation), once it
/// exists.
async fn revision_hash(env: &Env, revision: &str) -> String {
    let deadline = std::time::Instant::now() + patience(30);
    loop {
        let found = env.replica_sets().await.iter().find_map(|rs| {
            (rs.annotations()
                .get(constants::REVISION_ANNOTATION)
                .map(String::as_str)
                == Some(revision))
            .then(|| constants::pod_template_hash(rs.labels()).cloned())
            .flatten()
        });
        if let Some(hash) = found {
            return hash;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ReplicaSet of revision {revision}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pods of `hash` (not being deleted).
async fn pods_of(env: &Env, hash: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    let selector = format!("{}={hash}", constants::POD_TEMPLATE_HASH_LABEL);
    let mut pods: Vec<Pod> = api
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by_key(|p| p.name_any());
    pods
}

/// A pod's labels other than the template's own (`app`) and the hash: the ephemeral ones.
fn ephemeral_labels(pod: &Pod) -> BTreeMap<String, String> {
    let mut labels = pod.labels().clone();
    labels.remove("app");
    labels.remove(constants::POD_TEMPLATE_HASH_LABEL);
    labels
}

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Argo's `ExpectRevisionPods`: every pod of `revision` carries exactly `want` as its
/// ephemeral labels (a key Argo's check requires absent is absent), within a few seconds of
/// the change (Argo sleeps a second, then looks). Returns the pods' names.
async fn expect_revision_pods(
    env: &Env,
    what: &str,
    revision: &str,
    want: &[(&str, &str)],
) -> Vec<String> {
    let hash = revision_hash(env, revision).await;
    let want = labels(want);
    let deadline = std::time::Instant::now() + patience(10);
    loop {
        let pods = pods_of(env, &hash).await;
        let seen: Vec<_> = pods.iter().map(ephemeral_labels).collect();
        if !pods.is_empty() && seen.iter().all(|l| *l == want) {
            return pods.iter().map(|p| p.name_any()).collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: pods of revision {revision} carry {seen:?}, want {want:?} on each"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ReplicaSet of `revision` creates its next pods with exactly `want` as ephemeral labels.
async fn expect_revision_template(env: &Env, revision: &str, want: &[(&str, &str)]) {
    let hash = revision_hash(env, revision).await;
    let rss = env.replica_sets().await;
    let rs = rss
        .iter()
        .find(|rs| constants::pod_template_hash(rs.labels()) == Some(&hash))
        .expect("the ReplicaSet");
    let mut template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    template_labels.remove("app");
    template_labels.remove(constants::POD_TEMPLATE_HASH_LABEL);
    assert_eq!(
        template_labels,
        labels(want),
        "template of revision {revision}"
    );
}

/// Argo: `CanarySuite.TestEphemeralMetadata`. Revision 1 starts with the stable metadata;
/// during the update revision 2 carries the canary metadata and revision 1 the stable one; a
/// change of `canaryMetadata` replaces the old key by the new one on revision 2's pods; after
/// promotion revision 2 switches to the stable metadata; a change of `stableMetadata` replaces
/// its key too. Pods are patched in place, never replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_ephemeral_metadata() {
    let env = Env::new().await;
    let name = "ephemeral-metadata-canary";
    env.create(&rollout(
        name,
        2,
        "web:1",
        "
canaryMetadata:
  labels:
    role: canary
stableMetadata:
  labels:
    role: stable
steps:
- setWeight: 50
- pause: {}
",
    ))
    .await;
    // WaitForRolloutReplicas(2), then every pod has the stable metadata.
    env.wait_for(name, "2 replicas", 60, |r| {
        r.status.as_ref().and_then(|s| s.replicas) == Some(2)
    })
    .await;
    let rev1 = expect_revision_pods(
        &env,
        "all pods have stable metadata",
        "1",
        &[("role", "stable")],
    )
    .await;
    assert_eq!(rev1.len(), 2);
    env.wait_for(name, "Healthy", 60, phase_is("Healthy")).await;

    // UpdateSpec, Paused: revision 2 is the canary.
    env.patch_spec(
        name,
        json!({"spec": {"template": {"metadata": {"annotations": {"update": "2"}}}}}),
    )
    .await;
    env.wait_for(name, "Paused", 60, phase_is("Paused")).await;
    let rev2 = expect_revision_pods(
        &env,
        "revision 2 has canary metadata",
        "2",
        &[("role", "canary")],
    )
    .await;
    let still_rev1 = expect_revision_pods(
        &env,
        "revision 1 has stable metadata",
        "1",
        &[("role", "stable")],
    )
    .await;
    assert!(
        still_rev1.iter().all(|p| rev1.contains(p)),
        "revision 1's pods are kept: {rev1:?} then {still_rev1:?}"
    );

    // Canary metadata changed: the old key is gone and the new one is there.
    env.patch_spec(
        name,
        json!({"spec": {"strategy": {"canary": {"canaryMetadata": {"labels": {"role": null, "role2": "canary2"}}}}}}),
    )
    .await;
    let after = expect_revision_pods(
        &env,
        "revision 2 has canary metadata2",
        "2",
        &[("role2", "canary2")],
    )
    .await;
    assert_eq!(after, rev2, "the pods are patched in place, not replaced");
    expect_revision_template(&env, "2", &[("role2", "canary2")]).await;
    let r = env.get(name).await;
    assert_eq!(phase(&r), "Paused", "a metadata change starts nothing");

    // Promoted: revision 2 switches to the stable metadata.
    env.promote(name).await;
    env.wait_for(name, "Healthy", 60, phase_is("Healthy")).await;
    let promoted = expect_revision_pods(
        &env,
        "revision 2 has stable metadata",
        "2",
        &[("role", "stable")],
    )
    .await;
    assert!(
        rev2.iter().all(|p| promoted.contains(p)),
        "the canary's pods are patched in place, not replaced: {rev2:?} then {promoted:?}"
    );

    // Stable metadata changed: pods and ReplicaSet follow.
    env.patch_spec(
        name,
        json!({"spec": {"strategy": {"canary": {"stableMetadata": {"labels": {"role": null, "role2": "stable2"}}}}}}),
    )
    .await;
    let last = expect_revision_pods(
        &env,
        "revision 2 has stable metadata2",
        "2",
        &[("role2", "stable2")],
    )
    .await;
    assert_eq!(last, promoted, "patched in place");
    expect_revision_template(&env, "2", &[("role2", "stable2")]).await;
    // The pod-template hash is the Rollout's: still revision 2's, no new revision.
    let r = env.get(name).await;
    assert_eq!(current(&r), Some(revision_hash(&env, "2").await));
    assert_eq!(env.replica_sets().await.len(), 2);
}

/// Argo's `analysistemplate-sleep-job.yaml` in Prometheus terms: one measurement that succeeds,
/// with the same arguments (`rev` among them).
const SLEEP_JOB: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: sleep-job}
spec:
  args:
  - {name: duration, value: "0"}
  - {name: exit-code, value: "0"}
  - {name: count, value: "1"}
  - {name: rev, value: notset}
  metrics:
  - name: sleep-job
    count: 1
    successCondition: result[0] == 1
    provider:
      prometheus:
        query: vector(1)
"#;

/// Argo's `functional/rollout-rollback-window.yaml`, with the Rollout's `rev` label set from
/// the start: Sluice resolves an analysis's arguments when it checks the spec at rest, and a
/// `fieldRef` to a label that is not there yet is InvalidSpec (Argo ignores it until a run is
/// created; every update of these tests sets the label first).
const WINDOW: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: window
  labels:
    rev: initial
spec:
  replicas: 2
  rollbackWindow:
    revisions: 2
  strategy:
    canary:
      steps:
      - setWeight: 50
      - analysis:
          templates:
          - templateName: sleep-job
          args:
          - name: rev
            valueFrom:
              fieldRef:
                fieldPath: metadata.labels['rev']
  selector:
    matchLabels:
      app: window
  template:
    metadata:
      labels:
        app: window
        rev: initial
    spec:
      containers:
      - name: basic
        image: nginx:1.19-alpine
        resources:
          requests:
            memory: 16Mi
            cpu: 1m
"#;

async fn window_env(prom: &PrometheusServer) -> Env {
    let env = Env::with_config(prometheus_config(&prom.url(), Some(&prom.url()))).await;
    let templates: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), env.ns());
    let template: AnalysisTemplate = serde_yaml::from_str(SLEEP_JOB).unwrap();
    templates
        .create(&PostParams::default(), &template)
        .await
        .expect("analysis template");
    // HealthyRollout.
    env.create(&serde_yaml::from_str::<Rollout>(WINDOW).unwrap())
        .await;
    env.wait_for("window", "Healthy", 60, phase_is("Healthy"))
        .await;
    env
}

async fn analysis_run_count(env: &Env) -> usize {
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    api.list(&ListParams::default()).await.unwrap().items.len()
}

/// Argo's `UpdateSpec` of these tests: the label `rev` on the Rollout and on its pods.
/// The window orders ReplicaSets by `creationTimestamp`, whose grain is a second (as in
/// Kubernetes); Argo's updates take longer than that, the test cluster's pods start at once,
/// so each update waits out the second its predecessor was created in.
async fn update_to(env: &Env, rev: &str) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.patch_spec(
        "window",
        json!({"metadata": {"labels": {"rev": rev}},
               "spec": {"template": {"metadata": {"labels": {"rev": rev}}}}}),
    )
    .await;
    // WaitForRolloutStatus("Healthy") once the controller has seen the new template.
    let want = sluice::plan::hash::pod_template_hash(
        env.get("window").await.spec.template.as_ref().unwrap(),
        None,
    );
    env.wait_for("window", &format!("Healthy on rev {rev}"), 90, |r| {
        phase(r) == "Healthy" && stable(r).as_deref() == Some(want.as_str())
    })
    .await;
}

async fn expect_analysis_run_count(env: &Env, n: usize) {
    // A run created late would come with the reconcile after Healthy: give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(analysis_run_count(env).await, n, "AnalysisRuns");
}

/// Argo: `RollbackSuite.TestRollbackAnalysisWithinWindow`. Revisions two, three and four are
/// each analysed; going back to two (one ReplicaSet, three's, created between it and the stable
/// four: within a window of 2) skips the steps and the analysis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollback_analysis_within_window() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = window_env(&prom).await;
    update_to(&env, "two").await;
    expect_analysis_run_count(&env, 1).await;
    update_to(&env, "three").await;
    expect_analysis_run_count(&env, 2).await;
    update_to(&env, "four").await;
    expect_analysis_run_count(&env, 3).await;
    let two = revision_hash(&env, "2").await;
    let replica_sets = env.replica_sets().await.len();
    update_to(&env, "two").await; // rollback to revision 2 (update to revision 5)
    expect_analysis_run_count(&env, 3).await; // fast rollback, no analysis run
    let r = env.get("window").await;
    assert_eq!(
        stable(&r),
        Some(two.clone()),
        "revision 2's ReplicaSet again"
    );
    assert_eq!(revision_hash(&env, "5").await, two);
    assert_eq!(
        env.replica_sets().await.len(),
        replica_sets,
        "no new ReplicaSet"
    );
}

/// Argo: `RollbackSuite.TestRollbackAnalysisOutsideWindow`. Going back to two from five (three
/// and four created between: not within a window of 2) is an update like any other, analysed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollback_analysis_outside_window() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = window_env(&prom).await;
    update_to(&env, "two").await;
    expect_analysis_run_count(&env, 1).await;
    update_to(&env, "three").await;
    expect_analysis_run_count(&env, 2).await;
    update_to(&env, "four").await;
    expect_analysis_run_count(&env, 3).await;
    update_to(&env, "five").await;
    expect_analysis_run_count(&env, 4).await;
    let two = revision_hash(&env, "2").await;
    update_to(&env, "two").await; // rollback to revision 2 (update to revision 6)
    expect_analysis_run_count(&env, 5).await; // regular rollback, no fast track (outside window)
    let r = env.get("window").await;
    assert_eq!(stable(&r), Some(two));
}
