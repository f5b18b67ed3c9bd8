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
    env.create(&slow_rollout_with(
        "steps:\n- setWeight: 20\n- pause: {}\n",
    ))
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
    (
        w.map(|w| w.canary.weight),
        w.map(|w| w.stable.weight),
    )
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
    assert_eq!(service_selects(&env, "web-canary").await, Some(rev2.clone()));
    assert_eq!(service_selects(&env, "web-stable").await, Some(rev3.clone()));
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
    assert_eq!(service_selects(&env, "web-canary").await, Some(rev3.clone()));
    assert_eq!(service_selects(&env, "web-stable").await, Some(rev3.clone()));
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
