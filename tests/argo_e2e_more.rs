//! More of Argo Rollouts' own e2e scenarios (`test/e2e/canary_test.go` and
//! `functional_test.go` in `argoproj/argo-rollouts`), ported with their actions and their
//! expectations; each test is named after Argo's, which its comment names. ALB is replaced by
//! NGINX; pods Argo holds unready with its `argoproj.io/e2e-readiness` gate wait here for the
//! gate [`READINESS_GATE`], released by [`mark_pods_ready`] as Argo's `MarkPodsReady` does; a
//! readiness probe with a 10 s initial delay is the test cluster's `ready-after` annotation.
//! `docs/compat.md` ("Argo e2e scenarios") maps each Argo test to its port.

use std::time::Duration;

use serde_json::{Value, json};
use sluice::api::rollout::Rollout;
use sluice_e2e::sim::READY_AFTER;
use sluice_test_support::argo::*;
use sluice_test_support::controller::*;
use sluice_test_support::rollout::phase_is;

/// `ro` with its pod template changed by `edit` (on the template's JSON).
fn with_template(ro: Rollout, edit: impl FnOnce(&mut Value)) -> Rollout {
    let mut value = serde_json::to_value(&ro).expect("a Rollout serializes");
    edit(&mut value["spec"]["template"]);
    serde_json::from_value(value).expect("still a Rollout")
}

/// Pods wait for [`mark_pods_ready`] (Argo's fixtures with `readinessGates`).
fn gated(ro: Rollout) -> Rollout {
    with_template(ro, |t| t["spec"]["readinessGates"] = readiness_gate())
}

/// Pods become ready 10 s after they start (Argo: a readiness probe with
/// `initialDelaySeconds: 10`).
fn slow(ro: Rollout) -> Rollout {
    with_template(ro, |t| {
        t["metadata"]["annotations"] = json!({READY_AFTER: "10s"});
    })
}

async fn healthy(env: &Env, name: &str) -> Rollout {
    env.wait_for(name, "Healthy", 60, phase_is("Healthy")).await
}

async fn paused(env: &Env, name: &str) -> Rollout {
    env.wait_for(name, "Paused", 60, phase_is("Paused")).await
}

async fn degraded(env: &Env, name: &str) -> Rollout {
    env.wait_for(name, "Degraded", 60, phase_is("Degraded"))
        .await
}

/// The Services and stable Ingress of Argo's `nginx-template.yaml` (and of its ALB fixtures,
/// routed by NGINX here).
async fn nginx_objects(env: &Env) {
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
}

/// Argo: `CanarySuite.TestCanarySetCanaryScale` (fixture `functional/nginx-template.yaml`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_set_canary_scale() {
    let env = Env::new().await;
    nginx_objects(&env).await;
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx: {stableIngress: web}
steps:
- pause: {}
- setCanaryScale:
    weight: 25
- pause: {duration: 100s}
- setWeight: 50
- pause: {duration: 10s}
- setCanaryScale:
    replicas: 3
- pause: {}
- setCanaryScale:
    matchTrafficWeight: true
- pause: {duration: 5s}
"#;
    env.create(&rollout("web", 4, "web:1", spec)).await;
    healthy(&env, "web").await;
    update_spec(&env, "web").await;
    paused(&env, "web").await;
    expect_canary_stable_pod_count(&env, "web", 0, 4).await;
    env.promote("web").await;
    wait_for_step_index(&env, "web", 2).await;
    expect_canary_stable_pod_count(&env, "web", 1, 4).await;
    env.promote("web").await;
    wait_for_step_index(&env, "web", 4).await;
    expect_canary_stable_pod_count(&env, "web", 1, 4).await;
    env.promote("web").await;
    wait_for_step_index(&env, "web", 6).await;
    expect_canary_stable_pod_count(&env, "web", 3, 4).await;
    env.promote("web").await;
    wait_for_step_index(&env, "web", 8).await;
    expect_canary_stable_pod_count(&env, "web", 2, 4).await;
    env.promote("web").await;
    healthy(&env, "web").await;
    expect_canary_stable_pod_count(&env, "web", 4, 4).await;
}

/// Argo: `CanarySuite.TestCanaryScaleDownOnAbort` (fixture
/// `functional/canary-scaledownonabort.yaml`, ALB replaced by NGINX). With
/// `abortScaleDownDelaySeconds: 1` the aborted canary is gone 3 s later, and the canary
/// Service selects the stable pods again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_scale_down_on_abort() {
    let env = Env::new().await;
    nginx_objects(&env).await;
    let spec = r#"
abortScaleDownDelaySeconds: 1
scaleDownDelayRevisionLimit: 1
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx: {stableIngress: web}
steps:
- setCanaryScale:
    replicas: 1
- pause: {}
"#;
    env.create(&rollout("web", 1, "web:1", spec)).await;
    healthy(&env, "web").await;
    update_spec(&env, "web").await;
    paused(&env, "web").await;
    abort(&env, "web").await;
    degraded(&env, "web").await;
    let rev1 = revision_hash(&env, "1").await;
    assert_eq!(service_selects(&env, "web-canary").await, Some(rev1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect_revision_pod_count(&env, "2", 0).await;
}

/// Argo: `CanarySuite.TestCanaryScaleDownOnAbortNoTrafficRouting` (fixture
/// `functional/canary-scaledownonabortnotrafficrouting.yaml`): without traffic routing the
/// aborted canary goes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_scale_down_on_abort_no_traffic_routing() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    let spec = r#"
canaryService: web-canary
stableService: web-stable
steps:
- setWeight: 50
- pause: {}
"#;
    env.create(&rollout("web", 1, "web:1", spec)).await;
    healthy(&env, "web").await;
    update_spec(&env, "web").await;
    paused(&env, "web").await;
    abort(&env, "web").await;
    degraded(&env, "web").await;
    let rev1 = revision_hash(&env, "1").await;
    assert_eq!(service_selects(&env, "web-canary").await, Some(rev1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect_revision_pod_count(&env, "2", 0).await;
}

/// The Rollout of Argo's `TestCanaryWithSpecPause` and `TestCanaryProgressDeadlineExceededWithPause`:
/// 3 replicas whose pods take 10 s to become ready, `progressDeadlineSeconds: 5`.
fn slow_rollout_with(steps: &str) -> Rollout {
    let mut ro = slow(rollout("web", 3, "web:1", steps));
    ro.spec.revision_history_limit = Some(2);
    ro.spec.progress_deadline_seconds = Some(5);
    ro
}

/// Argo: `CanarySuite.TestCanaryWithSpecPause`. Pausing a Healthy Rollout through `spec.paused`
/// reports Paused, without the Progressing condition flapping to `Unknown`/`RolloutPaused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_with_spec_pause() {
    let env = Env::new().await;
    env.create(&slow_rollout_with("steps:\n- setWeight: 20\n"))
        .await;
    degraded(&env, "web").await;
    healthy(&env, "web").await;
    wait_for_replicas(&env, "web", 3).await;
    env.patch_spec("web", json!({"spec": {"paused": true}}))
        .await;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        let r = env.get("web").await;
        let flapped = r.status.iter().flat_map(|s| &s.conditions).any(|c| {
            c.type_ == "Progressing" && c.reason == "RolloutPaused" && c.status == "Unknown"
        });
        assert!(!flapped, "{:#?}", r.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    paused(&env, "web").await;
}

/// Argo: `CanarySuite.TestCanaryProgressDeadlineExceededWithPause`. A canary pod slower than
/// the progress deadline makes the Rollout Degraded; once it is ready the Rollout pauses at
/// its step, and after the promotion goes Degraded again and then Healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_progress_deadline_exceeded_with_pause() {
    let env = Env::new().await;
    env.create(&slow_rollout_with("steps:\n- setWeight: 20\n- pause: {}\n"))
        .await;
    degraded(&env, "web").await;
    healthy(&env, "web").await;
    wait_for_replicas(&env, "web", 3).await;
    update_spec(&env, "web").await;
    degraded(&env, "web").await;
    paused(&env, "web").await;
    expect_canary_stable_pod_count(&env, "web", 1, 3).await;
    env.promote("web").await;
    degraded(&env, "web").await;
    healthy(&env, "web").await;
}

/// The Rollout of Argo's `canary-dynamic-stable-scale*.yaml` fixtures (ALB replaced by NGINX):
/// 4 replicas held unready by a readiness gate, `dynamicStableScale`, 25% and 75% steps.
fn dynamic_stable_scale(extra: &str) -> Rollout {
    let spec = format!(
        r#"
dynamicStableScale: true
{extra}
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx: {{stableIngress: web}}
steps:
- setWeight: 25
- pause: {{}}
- setWeight: 75
- pause: {{}}
"#
    );
    gated(rollout("web", 4, "web:1", &spec))
}

/// Updates the gated dynamic-stable-scale Rollout to revision 2 and promotes it to 75%, as
/// Argo's two dynamic-stable-scale abort tests start.
async fn dynamic_stable_scale_at_75(env: &Env) {
    mark_pods_ready(env, "1", 4).await;
    healthy(env, "web").await;
    update_spec(env, "web").await;
    mark_pods_ready(env, "2", 1).await;
    paused(env, "web").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    expect_revision_pod_count(env, "1", 3).await;
    expect_revision_pod_count(env, "2", 1).await;
    env.promote("web").await;
    mark_pods_ready(env, "2", 2).await;
    wait_for_step_index(env, "web", 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    expect_revision_pod_count(env, "1", 1).await;
    expect_revision_pod_count(env, "2", 3).await;
}

/// Argo: `CanarySuite.TestCanaryDynamicStableScale` (fixture
/// `functional/canary-dynamic-stable-scale.yaml`). After an abort at 75%, the canary shrinks
/// only as stable pods become ready, and the canary Service keeps selecting the canary until
/// the stable has all its pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_dynamic_stable_scale() {
    let env = Env::new().await;
    nginx_objects(&env).await;
    env.create(&dynamic_stable_scale("")).await;
    dynamic_stable_scale_at_75(&env).await;

    abort(&env, "web").await;
    mark_pods_ready(&env, "1", 2).await;
    wait_for_revision_pod_count(&env, "2", 1).await;
    wait_for_revision_pod_count(&env, "1", 4).await;
    let (canary_svc, stable_svc) = (
        service_selects(&env, "web-canary").await,
        service_selects(&env, "web-stable").await,
    );
    assert_ne!(
        canary_svc, stable_svc,
        "the canary Service still selects the canary while the stable scales up"
    );

    mark_pods_ready(&env, "1", 1).await;
    wait_for_revision_pod_count(&env, "2", 0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rev1 = revision_hash(&env, "1").await;
    assert_eq!(service_selects(&env, "web-canary").await, Some(rev1));
    expect_revision_pod_count(&env, "1", 4).await;
}

/// The canary and stable weights of the status (`status.canary.weights`).
fn weights(r: &Rollout) -> (Option<i32>, Option<i32>) {
    let w = r.status.as_ref().and_then(|s| s.canary.weights.as_ref());
    (w.map(|w| w.canary.weight), w.map(|w| w.stable.weight))
}

/// Argo: `CanarySuite.TestCanaryDynamicStableScaleAbortScaleDownDelay` (fixture
/// `functional/canary-dynamic-stable-scale-abort-delay.yaml`, `abortScaleDownDelaySeconds:
/// 10`). The weight is held at 75% while the stable cannot serve it, the canary keeps its pods
/// without a scale-down deadline until all traffic is back on stable, then keeps them for the
/// delay and drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_dynamic_stable_scale_abort_scale_down_delay() {
    let env = Env::new().await;
    nginx_objects(&env).await;
    env.create(&dynamic_stable_scale("abortScaleDownDelaySeconds: 10"))
        .await;
    dynamic_stable_scale_at_75(&env).await;

    abort(&env, "web").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    expect_revision_pod_count(&env, "2", 3).await;
    assert_eq!(revision_scale_down_deadline(&env, "2").await, None);
    assert_eq!(weights(&env.get("web").await).0, Some(75));

    mark_pods_ready(&env, "1", 2).await;
    wait_for_revision_pod_count(&env, "1", 4).await;
    mark_pods_ready(&env, "1", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    expect_revision_pod_count(&env, "2", 3).await;
    assert_eq!(weights(&env.get("web").await), (Some(0), Some(100)));
    assert!(
        revision_scale_down_deadline(&env, "2").await.is_some(),
        "once all traffic is on stable, the canary waits out its delay"
    );

    wait_for_revision_pod_count(&env, "2", 0).await;
    expect_revision_pod_count(&env, "1", 4).await;
    assert_eq!(
        service_selects(&env, "web-canary").await,
        service_selects(&env, "web-stable").await
    );
}

/// Argo: `CanarySuite.TestCanaryDynamicStableScaleRollbackToStable` (fixture
/// `functional/canary-dynamic-stable-scale.yaml`). Undo to the stable revision at 25%: the
/// stable (now revision 3) scales up to 4 but traffic stays 25% on the previous canary until the
/// stable's last pod is ready; then everything is on revision 3 and revision 2 goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_canary_dynamic_stable_scale_rollback_to_stable() {
    let env = Env::new().await;
    nginx_objects(&env).await;
    env.create(&dynamic_stable_scale("")).await;
    mark_pods_ready(&env, "1", 4).await;
    healthy(&env, "web").await;
    update_spec(&env, "web").await;
    mark_pods_ready(&env, "2", 1).await;
    paused(&env, "web").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    expect_revision_pod_count(&env, "1", 3).await;
    expect_revision_pod_count(&env, "2", 1).await;

    undo(&env, "web", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    expect_revision_pod_count(&env, "3", 4).await;
    expect_revision_pod_count(&env, "2", 1).await;
    let rev2 = revision_hash(&env, "2").await;
    let rev3 = revision_hash(&env, "3").await;
    assert_eq!(
        service_selects(&env, "web-canary").await,
        Some(rev2.clone())
    );
    assert_eq!(
        service_selects(&env, "web-stable").await,
        Some(rev3.clone())
    );
    let r = env.get("web").await;
    let w = r
        .status
        .as_ref()
        .and_then(|s| s.canary.weights.clone())
        .expect("status.canary.weights");
    assert_eq!(w.canary.pod_template_hash.as_deref(), Some(rev2.as_str()));
    assert_eq!(w.canary.weight, 25);
    assert_eq!(w.stable.pod_template_hash.as_deref(), Some(rev3.as_str()));
    assert_eq!(w.stable.weight, 75);

    mark_pods_ready(&env, "3", 1).await;
    wait_for_revision_pod_count(&env, "2", 0).await;
    assert_eq!(
        service_selects(&env, "web-canary").await,
        Some(rev3.clone())
    );
    assert_eq!(
        service_selects(&env, "web-stable").await,
        Some(rev3.clone())
    );
    let r = env.get("web").await;
    let w = r
        .status
        .as_ref()
        .and_then(|s| s.canary.weights.clone())
        .expect("status.canary.weights");
    assert_eq!(w.canary.pod_template_hash.as_deref(), Some(rev3.as_str()));
    assert_eq!(w.canary.weight, 0);
    assert_eq!(w.stable.pod_template_hash.as_deref(), Some(rev3.as_str()));
    assert_eq!(w.stable.weight, 100);
}

// ---- FunctionalSuite ----

fn deployments(env: &Env) -> kube::Api<k8s_openapi::api::apps::v1::Deployment> {
    kube::Api::namespaced(env.client.clone(), env.ns())
}

/// The Deployment `web` of Argo's workloadRef scenarios (`replicas: 0`, one container).
async fn create_deployment(env: &Env, image: &str) {
    let d = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app.kubernetes.io/instance": "rollout-canary"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}}}
    }))
    .expect("a Deployment");
    deployments(env)
        .create(&kube::api::PostParams::default(), &d)
        .await
        .expect("create the Deployment");
}

/// Argo's `UpdateResource` of the Deployment's pod template (its one container, and whether
/// its pods crash-loop, as Argo's `rollouts-demo:error` image does).
async fn set_deployment_container(env: &Env, image: &str, crash: bool) {
    let annotations = if crash {
        json!({sluice_e2e::sim::CRASH_LOOP: "true"})
    } else {
        json!({sluice_e2e::sim::CRASH_LOOP: null})
    };
    deployments(env)
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": [{"name": "web", "image": image}]}
            }}})),
        )
        .await
        .expect("update the Deployment");
}

fn workload_observed_generation(r: &Rollout) -> Option<String> {
    r.status
        .as_ref()
        .and_then(|s| s.workload_observed_generation.clone())
}

/// The selector of the Service `name`.
async fn service_selector(env: &Env, name: &str) -> std::collections::BTreeMap<String, String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(env.client.clone(), env.ns());
    api.get(name)
        .await
        .expect("Service")
        .spec
        .and_then(|s| s.selector)
        .unwrap_or_default()
}

fn selector_of(hash: Option<String>) -> std::collections::BTreeMap<String, String> {
    let mut s = std::collections::BTreeMap::from([("app".to_string(), "web".to_string())]);
    if let Some(hash) = hash {
        s.insert(
            sluice::api::constants::POD_TEMPLATE_HASH_LABEL.to_string(),
            hash,
        );
    }
    s
}

/// A canary Rollout `web` taking its template from the Deployment `deployment` (Argo's
/// blue-green `activeService` is the canary's `stableService` here).
fn workload_ref_rollout(deployment: &str) -> Rollout {
    let mut ro = rollout("web", 1, "web:1", "stableService: web-stable\n");
    ro.spec.template = None;
    ro.spec.selector = None;
    ro.spec.progress_deadline_seconds = Some(5);
    ro.spec.revision_history_limit = Some(2);
    ro.spec.workload_ref = Some(
        serde_json::from_value(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}),
        )
        .expect("a workloadRef"),
    );
    ro
}

/// Argo: `FunctionalSuite.TestWorkloadRef` (blue-green there, a canary here). Degraded while the
/// Deployment is missing, without touching the Service; Healthy once it exists, with
/// `workloadObservedGeneration`; a bad template in the Deployment is Degraded, a good one
/// Healthy; a workloadRef to a missing Deployment and back; the resolved template is never
/// written into the Rollout; an inline template afterwards drops `workloadObservedGeneration`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_workload_ref() {
    let env = Env::new().await;
    env.services(&["web-stable"]).await;
    env.create(&workload_ref_rollout("web")).await;
    degraded(&env, "web").await;
    assert_eq!(
        service_selector(&env, "web-stable").await,
        selector_of(None)
    );

    create_deployment(&env, "rollouts-demo:green").await;
    let r = healthy(&env, "web").await;
    assert_eq!(workload_observed_generation(&r).as_deref(), Some("1"));
    assert_eq!(
        service_selector(&env, "web-stable").await,
        selector_of(current(&r))
    );

    set_deployment_container(&env, "rollouts-demo:error", true).await;
    let r = degraded(&env, "web").await;
    assert_eq!(workload_observed_generation(&r).as_deref(), Some("2"));

    set_deployment_container(&env, "rollouts-demo:blue", false).await;
    env.wait_for("web", "Healthy on the third template", 60, |r| {
        phase(r) == "Healthy" && workload_observed_generation(r).as_deref() == Some("3")
    })
    .await;
    env.patch_spec(
        "web",
        json!({"spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "non-existent-deploy"}}}),
    )
    .await;
    degraded(&env, "web").await;
    env.patch_spec(
        "web",
        json!({"spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}}),
    )
    .await;
    let r = healthy(&env, "web").await;
    assert_eq!(
        service_selector(&env, "web-stable").await,
        selector_of(current(&r))
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

    // The same Rollout with its template inline instead (Argo re-applies the manifest).
    let mut inline = rollout(
        "web",
        1,
        "rollouts-demo:blue",
        "stableService: web-stable\n",
    );
    inline.metadata.resource_version = r.metadata.resource_version.clone();
    inline.spec.progress_deadline_seconds = Some(5);
    inline.spec.revision_history_limit = Some(2);
    env.rollouts()
        .replace("web", &kube::api::PostParams::default(), &inline)
        .await
        .expect("replace with an inline template");
    env.wait_for(
        "web",
        "Healthy without workloadObservedGeneration",
        60,
        |r| phase(r) == "Healthy" && workload_observed_generation(r).is_none(),
    )
    .await;
}

/// Argo: `FunctionalSuite.TestWorkloadRefTemplate`. A Rollout with both a workloadRef and a
/// template (labels only) is Degraded with one condition, InvalidSpec, naming the conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_workload_ref_template() {
    let env = Env::new().await;
    env.services(&["web-stable"]).await;
    create_deployment(&env, "rollouts-demo:green").await;
    let mut ro = workload_ref_rollout("web");
    ro.spec.selector = Some(
        serde_json::from_value(json!({"matchLabels": {"app": "rollout-demo-deploy"}})).unwrap(),
    );
    ro.spec.template = Some(
        serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}}))
            .expect("a labels-only template"),
    );
    // The API server stores it, as Argo's CRD does; the controller reports it.
    env.create(&ro).await;
    let r = degraded(&env, "web").await;
    let conditions = r.status.map(|s| s.conditions).unwrap_or_default();
    let invalid: Vec<_> = conditions
        .iter()
        .filter(|c| c.type_ == "InvalidSpec")
        .collect();
    assert_eq!(invalid.len(), 1, "{conditions:#?}");
    let message = &invalid[0].message;
    assert!(
        message.contains("template") && message.contains("workloadRef"),
        "{message}"
    );
    // The Deployment's own ReplicaSet aside, nothing was created.
    let created =
        env.replica_sets()
            .await
            .iter()
            .filter(|rs| {
                rs.metadata.labels.as_ref().is_some_and(|l| {
                    l.contains_key(sluice::api::constants::POD_TEMPLATE_HASH_LABEL)
                })
            })
            .count();
    assert_eq!(created, 0, "nothing created");
}

/// Millicores of a CPU quantity as the API server stores it (`1m`, `0.001`, a number).
fn millicores(q: &str) -> Option<f64> {
    match q.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => q.parse::<f64>().ok().map(|cores| cores * 1000.0),
    }
}

/// Argo: `FunctionalSuite.TestContainerResourceFormats`. `cpu: 0.001` as a YAML number, as a
/// string, and `1m`: accepted, Healthy, and every container of the pods requests 1m.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_container_resource_formats() {
    use kube::api::{Api, DynamicObject};
    use kube::core::{ApiResource, GroupVersionKind};
    let env = Env::new().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("sluice.dev", "v1alpha1", "Rollout"),
        "rollouts",
    );
    let container = |name: &str, cpu: Value| {
        json!({"name": name, "image": "nginx:1.19-alpine", "command": ["sleep", "infinity"],
            "resources": {"requests": {"cpu": cpu}}})
    };
    let manifest: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                    container("a", json!(0.001)),
                    container("b", json!("0.001")),
                    container("c", json!("1m")),
                ]}
            },
            "strategy": {"canary": {}}
        }
    }))
    .expect("a manifest");
    Api::<DynamicObject>::namespaced_with(env.client.clone(), env.ns(), &ar)
        .create(&kube::api::PostParams::default(), &manifest)
        .await
        .expect("every format is accepted");
    let r = healthy(&env, "web").await;
    let pods = pods_of_hash(&env, &current(&r).expect("current hash")).await;
    assert_eq!(pods.len(), 1);
    let spec = pods[0].spec.as_ref().expect("pod spec");
    for c in &spec.containers {
        let cpu = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("cpu"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        assert_eq!(
            millicores(&cpu),
            Some(1.0),
            "container {}: cpu {cpu}",
            c.name
        );
    }
}

/// Argo: `FunctionalSuite.TestRolloutPodVolumesItemsSpec`. A pod template with a ConfigMap
/// volume projecting `items`, a read-only mount and lifecycle hooks becomes Healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rollout_pod_volumes_items_spec() {
    let env = Env::new().await;
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "rollout-items"},
        "data": {
            "game.properties": "enemy.types=aliens,monsters\nplayer.maximum-lives=5\n",
            "user-interface.properties": "color.good=purple\ncolor.bad=yellow\nallow.textmode=true\n"
        }
    }))
    .expect("a ConfigMap");
    kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(env.client.clone(), env.ns())
        .create(&kube::api::PostParams::default(), &cm)
        .await
        .expect("create the ConfigMap");
    let ro = with_template(
        rollout(
            "web",
            2,
            "nginx:1.19-alpine",
            "maxUnavailable: 100%\nsteps:\n- setWeight: 25\n- pause: {}\n",
        ),
        |t| {
            t["spec"]["containers"][0]["lifecycle"] = json!({
                "postStart": {"exec": {"command": ["sleep", "5"]}},
                "preStop": {"exec": {"command": ["sleep", "5"]}}
            });
            t["spec"]["containers"][0]["resources"] =
                json!({"requests": {"memory": "16Mi", "cpu": "1m"}});
            t["spec"]["containers"][0]["volumeMounts"] =
                json!([{"name": "rollout-items", "mountPath": "/config", "readOnly": true}]);
            t["spec"]["volumes"] = json!([{"name": "rollout-items", "configMap": {
                "name": "rollout-items",
                "items": [
                    {"key": "game.properties", "path": "game.properties"},
                    {"key": "user-interface.properties", "path": "user-interface.properties"}
                ]
            }}]);
        },
    );
    env.create(&ro).await;
    let r = healthy(&env, "web").await;
    let pods = pods_of_hash(&env, &current(&r).expect("current hash")).await;
    assert_eq!(pods.len(), 2);
    let items = serde_json::to_value(&pods[0].spec.as_ref().expect("pod spec").volumes)
        .expect("volumes")[0]["configMap"]["items"]
        .clone();
    assert_eq!(items.as_array().map(Vec::len), Some(2), "{items}");
}

/// `kubectl wait --for=<condition> rollout/web` against the test cluster (or the real one);
/// returns whether it succeeded and what it printed.
async fn kubectl_wait(env: &Env, condition: &str) -> (bool, String) {
    // One kubeconfig per call: tests of this file run in parallel, each on its own cluster.
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-kubectl-wait-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    env.cluster
        .write_kubeconfig(&kubeconfig)
        .expect("write a kubeconfig");
    let out = tokio::process::Command::new(sluice_test_support::tools::kubectl())
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "wait",
            &format!("--for=condition={condition}"),
            "rollout/web",
            "--timeout=60s",
        ])
        .output()
        .await
        .expect("kubectl runs");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn expect_kubectl_wait(env: &Env, condition: &str) {
    let (ok, text) = kubectl_wait(env, condition).await;
    assert!(
        ok && text.contains("rollout.sluice.dev/web condition met"),
        "kubectl wait --for=condition={condition}: {text}"
    );
}

/// The revision of the stable ReplicaSet (Argo's `ExpectActiveRevision`, for a canary).
async fn stable_revision(env: &Env) -> String {
    let r = env.get("web").await;
    let hash = stable(&r).expect("status.stableRS");
    env.replica_sets()
        .await
        .iter()
        .find(|rs| {
            rs.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(sluice::api::constants::POD_TEMPLATE_HASH_LABEL))
                == Some(&hash)
        })
        .and_then(|rs| rs.metadata.annotations.as_ref())
        .and_then(|a| a.get(sluice::api::constants::REVISION_ANNOTATION).cloned())
        .expect("the stable ReplicaSet's revision")
}

/// Argo: `FunctionalSuite.TestKubectlWaitForPaused` (blue-green without auto-promotion there; a
/// canary pausing at its first step here), with the real `kubectl wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kubectl_wait_for_paused() {
    let env = Env::new().await;
    env.services(&["web-stable"]).await;
    env.create(&rollout(
        "web",
        1,
        "web:1",
        "stableService: web-stable\nsteps:\n- pause: {}\n",
    ))
    .await;
    healthy(&env, "web").await;
    update_spec(&env, "web").await;
    expect_kubectl_wait(&env, "Paused").await;
    assert_eq!(phase(&env.get("web").await), "Paused");
    assert_eq!(stable_revision(&env).await, "1");
    env.promote("web").await;
    expect_kubectl_wait(&env, "Paused=False").await;
    healthy(&env, "web").await;
    assert_eq!(stable_revision(&env).await, "2");
}

/// Argo: `FunctionalSuite.TestKubectlWaitForCompleted` (blue-green with auto-promotion there; a
/// canary without steps here), with the real `kubectl wait`: pods ready 5 s after they start,
/// so the update is Healthy=False (and Completed=False) first, then Healthy=True and
/// Completed=True on revision 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kubectl_wait_for_completed() {
    let env = Env::new().await;
    env.services(&["web-stable"]).await;
    let ro = with_template(
        rollout("web", 1, "web:1", "stableService: web-stable\n"),
        |t| {
            t["metadata"]["annotations"] = json!({READY_AFTER: "5s"});
        },
    );
    env.create(&ro).await;
    healthy(&env, "web").await;
    update_spec(&env, "web").await;
    expect_kubectl_wait(&env, "Healthy=False").await;
    expect_kubectl_wait(&env, "Completed=False").await;
    assert_eq!(phase(&env.get("web").await), "Progressing");
    assert_eq!(stable_revision(&env).await, "1");
    expect_kubectl_wait(&env, "Healthy=True").await;
    expect_kubectl_wait(&env, "Completed=True").await;
    assert_eq!(stable_revision(&env).await, "2");
}

/// Argo: `FunctionalSuite.TestControllerMetrics`: the controller's `/metrics` answers 200, here
/// with Sluice's metric names (`docs/metrics.md`) for a Rollout it reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_controller_metrics() {
    use sluice_test_support::metrics::{get as scrape, samples, value_of};
    let cluster = cluster().await;
    let client = cluster.client();
    let controller = start_controller(
        &cluster,
        sluice::controller::ControllerConfig {
            admin_addr: Some("127.0.0.1:0".parse().expect("an address")),
            ..config()
        },
    )
    .await;
    let addr = controller.admin_addr.expect("the admin address");
    let env = Env {
        cluster,
        client,
        controller: Some(controller),
    };
    env.create(&rollout("web", 1, "web:1", "{}")).await;
    healthy(&env, "web").await;
    let (code, text) = scrape(addr, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    let s = samples(&text);
    let ns = env.ns().to_string();
    assert_eq!(
        value_of(
            &s,
            "sluice_rollout_info",
            &[
                ("namespace", ns.as_str()),
                ("name", "web"),
                ("phase", "Healthy")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        value_of(&s, "sluice_reconcile_total", &[("controller", "rollout")])
            .is_some_and(|v| v >= 1.0),
        "{text}"
    );
}

/// Argo: `FunctionalSuite.TestScaleDownProgressivelyCompletedCanary`: a canary migrated from a
/// Deployment with `scaleDown: progressively` leaves the Deployment at 0 after the migration,
/// through a scale-up of the Rollout and through a whole canary update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_scale_down_progressively_completed_canary() {
    let env = Env::new().await;
    env.services(&["web-stable"]).await;
    let d = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "rollouts-demo:green",
                    "resources": {"requests": {"memory": "16Mi", "cpu": "1m"}}}]}}}
    }))
    .expect("a Deployment");
    deployments(&env)
        .create(&kube::api::PostParams::default(), &d)
        .await
        .expect("create the Deployment");
    let steps = "maxSurge: 1\nmaxUnavailable: 0\nsteps:\n- setWeight: 25\n- pause: {duration: 2s}\n- setWeight: 50\n- pause: {duration: 2s}\n- setWeight: 75\n- pause: {duration: 2s}\n";
    let mut ro = rollout("web", 4, "web:1", steps);
    ro.spec.template = None;
    ro.spec.workload_ref = Some(
        serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "scaleDown": "progressively"}))
            .expect("a workloadRef"),
    );
    env.create(&ro).await;
    healthy(&env, "web").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deployment_replicas = || async {
        deployments(&env)
            .get("web")
            .await
            .expect("the Deployment")
            .spec
            .and_then(|s| s.replicas)
    };
    assert_eq!(deployment_replicas().await, Some(0));
    assert_eq!(phase(&env.get("web").await), "Healthy");

    scale_rollout(&env, "web", 8).await;
    env.wait_for("web", "8 available", 60, |r| {
        r.status.as_ref().and_then(|s| s.available_replicas) == Some(8)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(deployment_replicas().await, Some(0));
    let st = env.get("web").await.status.unwrap_or_default();
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas
        ),
        (Some(8), Some(8), Some(8), Some(8))
    );

    // Argo's `UpdateWorkloadRef`: a new pod template in the Deployment.
    deployments(&env)
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"update": "1"}}}}}),
            ),
        )
        .await
        .expect("update the Deployment");
    paused(&env, "web").await;
    env.promote("web").await;
    env.wait_for("web", "Paused at 50%", 60, |r| {
        phase(r) == "Paused" && step(r) == Some(3)
    })
    .await;
    env.promote("web").await;
    env.wait_for("web", "Paused at 75%", 60, |r| {
        phase(r) == "Paused" && step(r) == Some(5)
    })
    .await;
    env.promote("web").await;
    env.wait_for("web", "Healthy on revision 2", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r) && step(r) == Some(6)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(deployment_replicas().await, Some(0));
}
