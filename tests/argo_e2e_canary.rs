//! Argo Rollouts' own e2e scenarios (`test/e2e/` in `argoproj/argo-rollouts`), ported with their
//! actions and their expectations: each test is named after Argo's, which its comment names.
//! Only `apiVersion` and what the test cluster needs differ: a container that never starts
//! (`command: [/bad-command]` in Argo's manifests) is a pod the simulated kubelet keeps
//! crash-looping (`e2e.sluice.dev/crash-loop`). `docs/compat.md` ("Argo e2e scenarios") maps
//! each Argo test to its port here.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
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

/// The pod-template hash of the ReplicaSet of `revision`, once it exists.
async fn revision_hash(env: &Env, revision: &str) -> String {
    let deadline = std::time::Instant::now() + patience(30);
    loop {
        let found = env.replica_sets().await.iter().find_map(|rs| {
            (rs.annotations()
                .get(constants::REVISION_ANNOTATION)
                .map(String::as_str)
                == Some(revision))
            .then(|| rs.labels().get(constants::POD_TEMPLATE_HASH_LABEL).cloned())
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
    let rev3 = revision_hash(&env, "3").await;
    env.wait_for("web", "Paused on revision 3", 60, |r| {
        phase(r) == "Paused" && step(r) == Some(1) && current(r).as_deref() == Some(rev3.as_str())
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

fn virtual_services(env: &Env) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        env.ns(),
        &ApiResource {
            group: "networking.istio.io".into(),
            version: "v1".into(),
            api_version: "networking.istio.io/v1".into(),
            kind: "VirtualService".into(),
            plural: "virtualservices".into(),
        },
    )
}

/// The VirtualService `web` of Argo's Istio host-split fixtures: one HTTP route `primary`
/// between the stable and the canary Service.
async fn host_split_virtual_service(env: &Env) {
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {"hosts": ["web.example.com"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web-stable"}, "weight": 100},
            {"destination": {"host": "web-canary"}, "weight": 0}
        ]}]}
    }))
    .expect("a VirtualService");
    virtual_services(env)
        .create(&PostParams::default(), &vs)
        .await
        .expect("create the VirtualService");
}

/// The scale-down deadline annotation of the ReplicaSet of `revision` (Argo's
/// `argo-rollouts.argoproj.io/scale-down-deadline` is Sluice's
/// `rollout.sluice.dev/scale-down-deadline`).
async fn revision_scale_down_deadline(env: &Env, revision: &str) -> Option<String> {
    env.replica_sets()
        .await
        .iter()
        .find(|rs| {
            rs.annotations()
                .get(constants::REVISION_ANNOTATION)
                .map(String::as_str)
                == Some(revision)
        })
        .and_then(|rs| {
            rs.annotations()
                .get(constants::SCALE_DOWN_DEADLINE_ANNOTATION)
                .cloned()
        })
}

/// Waits until the ReplicaSet of `revision` exists and is the stable one of a Healthy Rollout.
async fn healthy_on_revision(env: &Env, name: &str, revision: &str) {
    let deadline = std::time::Instant::now() + patience(60);
    loop {
        let hash = env.replica_sets().await.iter().find_map(|rs| {
            (rs.annotations()
                .get(constants::REVISION_ANNOTATION)
                .map(String::as_str)
                == Some(revision))
            .then(|| rs.labels().get(constants::POD_TEMPLATE_HASH_LABEL).cloned())
            .flatten()
        });
        let r = env.get(name).await;
        if hash.is_some() && stable(&r) == hash && phase(&r) == "Healthy" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never Healthy on revision {revision}: {:#?}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `spec.replicas` of the ReplicaSet of `revision`.
async fn revision_replicas(env: &Env, revision: &str) -> i32 {
    let hash = revision_hash(env, revision).await;
    env.pods_of(&hash).await
}

/// Argo: `IstioSuite.TestIstioUpdateInMiddleZeroCanaryReplicas` (fixture
/// `istio/istio-host-split-update-in-middle.yaml`). `setWeight: 0` then `setCanaryScale: 1`
/// then a pause: the update pauses with one canary pod; a new revision in the middle pauses
/// again with one pod of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_update_in_middle_zero_canary_replicas() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    host_split_virtual_service(&env).await;
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  istio:
    virtualService: {name: web, routes: [primary]}
steps:
- setWeight: 0
- setCanaryScale: {replicas: 1}
- pause: {}
"#;
    env.create(&rollout("web", 2, "web:1", spec)).await;
    healthy(&env, "web").await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "Paused", 60, phase_is("Paused")).await;
    expect_revision_pod_count(&env, "2", 1).await;
    env.set_image("web", "web:3").await;
    expect_revision_pod_count(&env, "3", 1).await;
    let rev3 = revision_hash(&env, "3").await;
    env.wait_for("web", "Paused on revision 3", 60, |r| {
        phase(r) == "Paused" && step(r) == Some(2) && current(r).as_deref() == Some(rev3.as_str())
    })
    .await;
    expect_revision_pod_count(&env, "3", 1).await;
}

/// Argo: `IstioSuite.TestIstioAbortUpdateDeleteAllCanaryPods` (fixture
/// `istio/istio-rollout-abort-delete-all-canary-pods.yaml`). On abort, with the default
/// `abortScaleDownDelaySeconds` (30 s), the canary keeps its 4 pods and its ReplicaSet carries
/// the scale-down deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_abort_update_delete_all_canary_pods() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    host_split_virtual_service(&env).await;
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  istio:
    virtualService: {name: web, routes: [primary]}
steps:
- setCanaryScale: {replicas: 2}
- setWeight: 20
- pause: {}
- setCanaryScale: {replicas: 4}
- setWeight: 40
- pause: {}
"#;
    env.create(&rollout("web", 5, "web:1", spec)).await;
    healthy(&env, "web").await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "Paused", 60, phase_is("Paused")).await;
    expect_revision_pod_count(&env, "2", 2).await;
    env.promote("web").await;
    env.wait_for("web", "Paused at the second pause", 60, |r| {
        phase(r) == "Paused" && step(r) == Some(5)
    })
    .await;
    expect_revision_pod_count(&env, "2", 4).await;
    env.patch_status("web", json!({"abort": true})).await;
    env.wait_for("web", "Degraded", 60, phase_is("Degraded"))
        .await;
    expect_revision_pod_count(&env, "1", 5).await;
    expect_revision_pod_count(&env, "2", 4).await;
    let deadline = revision_scale_down_deadline(&env, "2").await;
    let deadline: jiff::Timestamp = deadline
        .expect("the aborted canary carries a scale-down deadline")
        .parse()
        .expect("an RFC 3339 instant");
    let aborted_at = env
        .get("web")
        .await
        .status
        .and_then(|s| s.aborted_at)
        .expect("abortedAt")
        .0;
    assert_eq!(
        deadline.as_second() - aborted_at.as_second(),
        30,
        "the deadline is abortScaleDownDelaySeconds after the abort"
    );
}

/// Argo: `CanarySuite.TestCanaryUnScaleDownOnAbort` (fixture
/// `functional/canary-unscaledownonabort.yaml`, ALB replaced by NGINX).
/// `abortScaleDownDelaySeconds: 0` keeps the aborted canary up, without a deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_un_scale_down_on_abort() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let spec = r#"
canaryService: web-canary
stableService: web-stable
abortScaleDownDelaySeconds: 0
trafficRouting:
  nginx: {stableIngress: web}
steps:
- setWeight: 50
- pause: {}
"#;
    env.create(&rollout("web", 1, "web:1", spec)).await;
    healthy(&env, "web").await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "Paused", 60, phase_is("Paused")).await;
    env.patch_status("web", json!({"abort": true})).await;
    env.wait_for("web", "Degraded", 60, phase_is("Degraded"))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect_revision_pod_count(&env, "2", 1).await;
    assert_eq!(revision_scale_down_deadline(&env, "2").await, None);
}

/// Argo: `CanarySuite.TestCanaryScaleDownDelay` (fixture `functional/canary-scaledowndelay.yaml`,
/// ALB replaced by NGINX): `scaleDownDelayRevisionLimit: 1` keeps only the newest previous
/// stable up during its delay; a template that returns becomes a new revision and loses its
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_scale_down_delay() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let spec = r#"
scaleDownDelayRevisionLimit: 1
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx: {stableIngress: web}
"#;
    env.create(&rollout("web", 1, "web:1", spec)).await;
    healthy(&env, "web").await;
    let rev =
        |tag: &str| json!({"spec": {"template": {"metadata": {"annotations": {"rev": tag}}}}});
    env.patch_spec("web", rev("two")).await;
    healthy_on_revision(&env, "web", "2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(revision_replicas(&env, "1").await, 1);
    assert!(revision_scale_down_deadline(&env, "1").await.is_some());

    env.patch_spec("web", rev("three")).await;
    healthy_on_revision(&env, "web", "3").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        revision_replicas(&env, "1").await,
        0,
        "beyond the revision limit"
    );
    assert_eq!(revision_scale_down_deadline(&env, "1").await, None);
    assert_eq!(revision_replicas(&env, "2").await, 1);
    assert!(revision_scale_down_deadline(&env, "2").await.is_some());

    // Back to the template of revision 2: its ReplicaSet becomes revision 4.
    env.patch_spec("web", rev("two")).await;
    healthy_on_revision(&env, "web", "4").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(revision_replicas(&env, "1").await, 0);
    assert_eq!(revision_scale_down_deadline(&env, "1").await, None);
    assert_eq!(revision_replicas(&env, "4").await, 1);
    assert_eq!(revision_scale_down_deadline(&env, "4").await, None);
    assert_eq!(revision_replicas(&env, "3").await, 1);
    assert!(revision_scale_down_deadline(&env, "3").await.is_some());
}

/// Argo: `CanarySuite.TestCanaryScaleDownDelayWithProgressDeadline`: a previous stable waiting
/// out its scale-down delay is no lack of progress; the Rollout stays Healthy past
/// `progressDeadlineSeconds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_scale_down_delay_with_progress_deadline() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let spec = r#"
scaleDownDelayRevisionLimit: 1
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx: {stableIngress: web}
"#;
    env.create(&rollout("web", 1, "web:1", spec)).await;
    healthy(&env, "web").await;
    env.patch_spec("web", json!({"spec": {"progressDeadlineSeconds": 5}}))
        .await;
    env.patch_spec(
        "web",
        json!({"spec": {"template": {"metadata": {"annotations": {"rev": "two"}}}}}),
    )
    .await;
    healthy_on_revision(&env, "web", "2").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(phase(&env.get("web").await), "Healthy");
    assert_eq!(
        revision_replicas(&env, "1").await,
        1,
        "still waiting out its delay"
    );
}

/// (stable, canary) weights of the first TLS route of the VirtualService `web`.
async fn tls_weights(env: &Env) -> (i64, i64) {
    let vs = virtual_services(env)
        .get("web")
        .await
        .expect("VirtualService");
    let route = &vs.data["spec"]["tls"][0]["route"];
    (
        route[0]["weight"].as_i64().unwrap_or(-1),
        route[1]["weight"].as_i64().unwrap_or(-1),
    )
}

/// Argo: `IstioSuite.TestIstioHostSplitOnlyTls` (fixture `istio/istio-host-only-tls-split.yaml`).
/// The VirtualService has TLS routes only, and the Rollout still names an HTTP route `primary`
/// in `routes`: the missing HTTP route is ignored and the TLS route is weighted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_host_split_only_tls() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {"hosts": ["web-tls"], "tls": [{
            "match": [{"port": 3000, "sniHosts": ["web-tls"]}],
            "route": [
                {"destination": {"host": "web-stable"}, "weight": 100},
                {"destination": {"host": "web-canary"}, "weight": 0}
            ]
        }]}
    }))
    .expect("a VirtualService");
    virtual_services(&env)
        .create(&PostParams::default(), &vs)
        .await
        .expect("create the VirtualService");
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  istio:
    virtualService:
      name: web
      routes: [primary]
      tlsRoutes:
      - port: 3000
        sniHosts: [web-tls]
steps:
- setWeight: 10
- pause: {}
"#;
    env.create(&rollout("web", 1, "web:1", spec)).await;
    healthy(&env, "web").await;
    assert_eq!(tls_weights(&env).await, (100, 0));
    let rev1 = revision_hash(&env, "1").await;
    assert_eq!(env.service_hash("web-canary").await, Some(rev1.clone()));
    assert_eq!(env.service_hash("web-stable").await, Some(rev1.clone()));

    env.set_image("web", "web:2").await;
    env.wait_for("web", "Paused", 60, phase_is("Paused")).await;
    assert_eq!(tls_weights(&env).await, (90, 10));
    let rev2 = revision_hash(&env, "2").await;
    assert_eq!(env.service_hash("web-canary").await, Some(rev2.clone()));
    assert_eq!(env.service_hash("web-stable").await, Some(rev1.clone()));

    env.promote("web").await;
    healthy_on_revision(&env, "web", "2").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(tls_weights(&env).await, (100, 0));
    assert_eq!(env.service_hash("web-canary").await, Some(rev2.clone()));
    assert_eq!(env.service_hash("web-stable").await, Some(rev2));
    // Within its scaleDownDelaySeconds, the previous stable keeps its pod.
    expect_revision_pod_count(&env, "1", 1).await;
}

/// The HTTP routes of the VirtualService `web`: (name, [(destination host, weight)]).
async fn http_routes(env: &Env) -> Vec<(String, Vec<(String, i64)>)> {
    let vs = virtual_services(env)
        .get("web")
        .await
        .expect("VirtualService");
    vs.data["spec"]["http"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default().to_string();
            let dests = r["route"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|d| {
                    (
                        d["destination"]["host"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        d["weight"].as_i64().unwrap_or(0),
                    )
                })
                .collect();
            (name, dests)
        })
        .collect()
}

fn weight_to(route: &(String, Vec<(String, i64)>), host: &str) -> i64 {
    route
        .1
        .iter()
        .find(|(h, _)| h == host)
        .map(|(_, w)| *w)
        .unwrap_or_else(|| panic!("no destination {host} in route {route:?}"))
}

/// Argo: `HeaderRouteSuite.TestIstioHostHeaderRoute` (fixture `header-routing/istio-hr-host.yaml`).
/// Each pause is reported only once the VirtualService has the header route of the steps
/// before it: checked at once when the status says Paused (Argo's test waits a second more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_host_header_route() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {"hosts": ["web.example.com"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web-stable"}, "weight": 80},
            {"destination": {"host": "web-canary"}, "weight": 20}
        ]}]}
    }))
    .expect("a VirtualService");
    virtual_services(&env)
        .create(&PostParams::default(), &vs)
        .await
        .expect("create the VirtualService");
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  managedRoutes:
  - name: set-header-1
  istio:
    virtualService: {name: web, routes: [primary]}
steps:
- setWeight: 20
- setHeaderRoute:
    name: set-header-1
    match:
    - headerName: agent
      headerValue: {regex: firefox(.*)}
- pause: {}
- setHeaderRoute:
    name: set-header-1
    match:
    - headerName: agent
      headerValue: {regex: chrome(.*)}
- pause: {}
- setWeight: 40
- setHeaderRoute:
    name: set-header-1
- pause: {}
"#;
    env.create(&rollout("web", 5, "web:1", spec)).await;
    healthy(&env, "web").await;
    assert_eq!(http_routes(&env).await[0].0, "primary");

    env.set_image("web", "web:2").await;
    env.wait_for("web", "Paused at step 3", 60, |r| {
        phase(r) == "Paused" && step(r) == Some(2)
    })
    .await;
    let routes = http_routes(&env).await;
    assert_eq!(routes[0].0, "set-header-1", "{routes:?}");
    assert_eq!(weight_to(&routes[0], "web-canary"), 100);
    assert_eq!(weight_to(&routes[1], "web-stable"), 80);
    assert_eq!(weight_to(&routes[1], "web-canary"), 20);

    env.promote("web").await;
    env.wait_for("web", "Paused at step 5", 60, |r| {
        phase(r) == "Paused" && step(r) == Some(4)
    })
    .await;
    let routes = http_routes(&env).await;
    assert_eq!(routes[0].0, "set-header-1", "{routes:?}");

    env.promote("web").await;
    env.wait_for("web", "Paused at step 8", 60, |r| {
        phase(r) == "Paused" && step(r) == Some(7)
    })
    .await;
    let routes = http_routes(&env).await;
    assert_eq!(routes.len(), 1, "the header route is gone: {routes:?}");
    assert_eq!(weight_to(&routes[0], "web-stable"), 60);
    assert_eq!(weight_to(&routes[0], "web-canary"), 40);

    env.patch_status("web", json!({"promoteFull": true})).await;
    healthy_on_revision(&env, "web", "2").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let routes = http_routes(&env).await;
    assert_eq!(weight_to(&routes[0], "web-stable"), 100);
    assert_eq!(weight_to(&routes[0], "web-canary"), 0);
}

/// Argo: `CanarySuite.TestRolloutWithMaxSurgeScalingDuringUpdate`. 4 replicas, `maxSurge: 100%`
/// (`maxUnavailable` 25%), no steps; the update's pods are slow to start (here: two minutes),
/// and the Rollout is scaled to 8 and back to 4 meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollout_with_max_surge_scaling_during_update() {
    let env = Env::new().await;
    env.create(&rollout("web", 4, "web:1", "maxSurge: 100%\n"))
        .await;
    healthy(&env, "web").await;
    env.patch_spec(
        "web",
        json!({"spec": {"template": {
            "metadata": {"annotations": {"e2e.sluice.dev/ready-after": "120s"}},
            "spec": {"containers": [{"name": "web", "image": "web:2"}]}
        }}}),
    )
    .await;
    wait_for_replicas(&env, "web", 7).await;
    expect_canary_stable_pod_count(&env, "web", 4, 3).await;
    scale_rollout(&env, "web", 8).await;
    wait_for_replicas(&env, "web", 11).await;
    expect_canary_stable_pod_count(&env, "web", 8, 3).await;
    scale_rollout(&env, "web", 4).await;
    wait_for_replicas(&env, "web", 7).await;
    expect_canary_stable_pod_count(&env, "web", 4, 3).await;
}

/// `spec.replicas` written through the scale subresource (as an HPA does) while a canary with
/// traffic routing is paused: the canary follows the weight, the stable runs the full count, and
/// the stable is never scaled to 0 on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_scaling_a_paused_routed_canary_keeps_the_split_per_revision() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let spec = format!("{NGINX}steps:\n- setWeight: 25\n- pause: {{}}\n");
    env.create(&rollout("web", 4, "web:1", &spec)).await;
    healthy(&env, "web").await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "Paused", 60, phase_is("Paused")).await;
    expect_canary_stable_pod_count(&env, "web", 1, 4).await;
    let stable_hash = stable(&env.get("web").await).expect("stable");
    for (replicas, canary) in [(8, 2), (2, 1), (5, 2)] {
        scale_through_subresource(&env, "web", replicas).await;
        let deadline = std::time::Instant::now() + patience(30);
        loop {
            assert!(
                env.pods_of(&stable_hash).await > 0,
                "the stable is never scaled to 0 mid-canary"
            );
            let r = env.get("web").await;
            let canary_hash = current(&r).expect("current");
            if env.pods_of(&canary_hash).await == canary
                && env.pods_of(&stable_hash).await == replicas
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{replicas} replicas at 25%: {:?}",
                replica_set_counts(&env).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        expect_canary_stable_pod_count(&env, "web", canary as usize, replicas as usize).await;
        assert_eq!(phase(&env.get("web").await), "Paused");
        assert_eq!(env.nginx_weight("web").await, Some(25));
    }
}
