//! The controller against the e2e test cluster with the real kube-rs client: Rollouts progress,
//! pause, promote, abort and retry through real API objects.

use std::time::Duration;

use sluice_test_support::controller::*;

fn steps(extra: &str) -> String {
    format!("{NGINX}{extra}")
}

const STEPS: &str = r#"steps:
- setWeight: 20
- pause: {duration: 2s}
- setWeight: 50
- pause: {}
- setWeight: 100
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_progresses_pauses_and_promotes_on_promote() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 5, "web:1", &steps(STEPS))).await;
    let r = env
        .wait_for("web", "first version healthy", 60, |r| {
            phase(r) == "Healthy"
        })
        .await;
    let v1 = stable(&r).unwrap();
    assert_eq!(env.pods_of(&v1).await, 5);
    assert_eq!(
        env.service_hash("web-stable").await.as_deref(),
        Some(v1.as_str())
    );

    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "weight 20", 60, |r| {
            weight(r) == Some(20) && step(r) >= Some(1)
        })
        .await;
    let v2 = current(&r).unwrap();
    assert_ne!(v1, v2);
    assert_eq!(env.nginx_weight("web").await, Some(20));
    assert_eq!(
        env.service_hash("web-canary").await.as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(env.pods_of(&v2).await, 1, "ceil(5 × 20%)");
    assert_eq!(
        env.pods_of(&v1).await,
        5,
        "stable stays full with traffic routing"
    );

    // Timed pause, then 50%, then the indefinite pause.
    let r = env
        .wait_for("web", "indefinite pause", 60, |r| {
            step(r) == Some(3) && phase(r) == "Paused"
        })
        .await;
    assert_eq!(weight(&r), Some(50));
    assert_eq!(env.nginx_weight("web").await, Some(50));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(step(&env.get("web").await), Some(3), "waits for promote");

    env.promote("web").await;
    let r = env
        .wait_for("web", "promoted and healthy", 60, |r| {
            stable(r).as_deref() == Some(v2.as_str())
                && phase(r) == "Healthy"
                && weight(r) == Some(0)
        })
        .await;
    assert_eq!(
        env.service_hash("web-stable").await.as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(env.nginx_weight("web").await, Some(0));
    assert!(r.status.unwrap().canary.weights.unwrap().verified == Some(true));
    // The previous stable is scaled down after scaleDownDelaySeconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.pods_of(&v1).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "old stable never scaled down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_rollout_makes_zero_writes() {
    if skip_on_real_cluster("needs the write log and dropped watches") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 3, "web:1", &steps(STEPS))).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    // Let any trailing reconcile finish, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.cluster.controls().clear_writes();
    // Changes to watched objects trigger reconciles that must write nothing.
    env.cluster.controls().drop_watches();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let writes: Vec<_> = env
        .cluster
        .controls()
        .writes()
        .into_iter()
        .filter(|w| w.field_manager.as_deref() == Some("sluice") || w.resource != "events")
        .collect();
    assert!(writes.is_empty(), "settled rollout wrote: {writes:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_full_skips_the_remaining_steps() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 3, "web:1", &steps(STEPS))).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "weight 20", 60, |r| weight(r) == Some(20))
        .await;
    let v2 = current(&r).unwrap();
    env.patch_status("web", serde_json::json!({"promoteFull": true}))
        .await;
    env.wait_for("web", "promoted", 60, |r| {
        stable(r).as_deref() == Some(v2.as_str()) && phase(r) == "Healthy"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_returns_traffic_then_service_then_scales_the_canary_down_and_retry_restarts() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 4, "web:1", &steps(STEPS))).await;
    let r = env
        .wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).unwrap();
    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "indefinite pause", 60, |r| step(r) == Some(3))
        .await;
    let v2 = current(&r).unwrap();
    env.cluster.controls().clear_writes();
    env.patch_status("web", serde_json::json!({"abort": true}))
        .await;
    let r = env
        .wait_for("web", "aborted and scaled down", 60, |r| {
            phase(r) == "Degraded" && weight(r) == Some(0)
        })
        .await;
    assert!(r.status.as_ref().unwrap().aborted_at.is_some());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.pods_of(&v2).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "canary never scaled down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.service_hash("web-canary").await.as_deref() != Some(v1.as_str()) {
        assert!(
            std::time::Instant::now() < deadline,
            "canary Service never returned to stable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.nginx_weight("web").await, Some(0));
    // Safe order in the write log: weight 0, then the canary Service, then the scale-down.
    let writes = env.cluster.controls().writes();
    let pos = |pred: &dyn Fn(&sluice_e2e::WriteRecord) -> bool| writes.iter().position(pred);
    // After the abort the only Ingress write is the canary weight going to 0.
    let summary: Vec<_> = writes
        .iter()
        .map(|w| (w.resource.clone(), w.name.clone(), w.verb.clone()))
        .collect();
    let weight0 = pos(&|w| w.resource == "ingresses")
        .unwrap_or_else(|| panic!("no weight write in {summary:?}"));
    let svc = pos(&|w| w.resource == "services" && w.name.as_deref() == Some("web-canary"))
        .expect("service write");
    let scale = pos(&|w| {
        w.resource == "replicasets"
            && w.body
                .as_ref()
                .is_some_and(|b| b.to_string().contains("\"replicas\":0"))
    })
    .expect("scale down");
    assert!(
        weight0 < svc && svc < scale,
        "order: weight {weight0}, service {svc}, scale {scale}"
    );

    // Retry starts again from step 0.
    env.patch_status("web", serde_json::json!({"abort": false}))
        .await;
    env.wait_for("web", "retried to weight 20", 60, |r| {
        weight(r) == Some(20)
            && phase(r) != "Degraded"
            && current(r).as_deref() == Some(v2.as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_paused_holds_and_resume_continues() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 2, "web:1", &steps(STEPS))).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.patch_spec("web", serde_json::json!({"spec": {"paused": true}}))
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused", 60, |r| phase(r) == "Paused")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = env.get("web").await;
    assert_eq!(step(&r), Some(0));
    env.patch_spec("web", serde_json::json!({"spec": {"paused": null}}))
        .await;
    env.wait_for("web", "past step 0", 60, |r| step(r) >= Some(1))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_template_supersedes_and_reverting_returns_to_stable_at_once() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 2, "web:1", &steps(STEPS))).await;
    let r = env
        .wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).unwrap();
    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "v2 at 50", 60, |r| weight(r) == Some(50))
        .await;
    let v2 = current(&r).unwrap();
    env.set_image("web", "web:3").await;
    let r = env
        .wait_for("web", "v3 at 20", 60, |r| {
            current(r) != Some(v2.clone()) && weight(r) == Some(20)
        })
        .await;
    let v3 = current(&r).unwrap();
    assert_eq!(
        env.service_hash("web-canary").await.as_deref(),
        Some(v3.as_str())
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.pods_of(&v2).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "superseded canary never scaled down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Git revert to v1: back to stable at once, no steps.
    env.set_image("web", "web:1").await;
    env.wait_for("web", "back to stable", 60, |r| {
        current(r).as_deref() == Some(v1.as_str()) && weight(r) == Some(0) && phase(r) == "Healthy"
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.service_hash("web-canary").await.as_deref() != Some(v1.as_str()) {
        assert!(
            std::time::Instant::now() < deadline,
            "canary Service never returned to stable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_canary_without_traffic_routing_moves_replicas() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    let spec = "canaryService: web-canary\nstableService: web-stable\nmaxSurge: 1\nmaxUnavailable: 0\nsteps:\n- setWeight: 50\n- pause: {}\n";
    env.create(&rollout("web", 4, "web:1", spec)).await;
    let r = env
        .wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).unwrap();
    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "paused at 50%", 60, |r| phase(r) == "Paused")
        .await;
    let v2 = current(&r).unwrap();
    assert_eq!(env.pods_of(&v2).await, 2);
    assert_eq!(env.pods_of(&v1).await, 2);
    env.promote("web").await;
    env.wait_for("web", "healthy v2", 60, |r| {
        phase(r) == "Healthy" && stable(r) == Some(v2.clone())
    })
    .await;
    assert_eq!(env.pods_of(&v1).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_with_abort_aborts_a_version_that_never_becomes_ready() {
    if skip_on_real_cluster("needs pods the simulated kubelet keeps unready") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let mut ro = rollout("web", 2, "web:1", &steps(STEPS));
    ro.spec.progress_deadline_seconds = Some(3);
    ro.spec.progress_deadline_abort = Some(true);
    env.create(&ro).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.patch_spec(
        "web",
        serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"e2e.sluice.dev/never-ready": "true"}}}}}),
    )
    .await;
    let r = env
        .wait_for("web", "aborted by the deadline", 60, |r| {
            r.status.as_ref().is_some_and(|s| s.abort)
        })
        .await;
    assert!(
        r.status
            .unwrap()
            .message
            .unwrap_or_default()
            .contains("progress deadline")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_without_abort_degrades_but_keeps_trying() {
    if skip_on_real_cluster("needs pods the simulated kubelet keeps unready") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let mut ro = rollout("web", 2, "web:1", &steps(STEPS));
    ro.spec.progress_deadline_seconds = Some(3);
    env.create(&ro).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.patch_spec(
        "web",
        serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"e2e.sluice.dev/never-ready": "true"}}}}}),
    )
    .await;
    let r = env
        .wait_for("web", "degraded", 60, |r| phase(r) == "Degraded")
        .await;
    let st = r.status.unwrap();
    assert!(!st.abort);
    assert!(
        st.message
            .unwrap_or_default()
            .contains("ProgressDeadlineExceeded")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_sets_invalid_spec_and_touches_nothing() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 2, "web:1", &steps(STEPS))).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    // Wait for a state that holds by itself (the indefinite pause at weight 50): from a timed
    // pause the controller could move on between these reads and the spec change below.
    env.wait_for("web", "paused at weight 50", 60, |r| {
        weight(r) == Some(50) && phase(r) == "Paused"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.cluster.controls().clear_writes();
    // A rule only the controller checks (the API server's CEL rules cannot see it): a step
    // with two actions.
    env.patch_spec(
        "web",
        serde_json::json!({"spec": {"strategy": {"canary": {"steps": [
            {"setWeight": 20, "pause": {}}, {"pause": {}}
        ]}}}}),
    )
    .await;
    let r = env
        .wait_for("web", "invalid spec", 60, |r| phase(r) == "Degraded")
        .await;
    let cond = r
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "InvalidSpec")
        .unwrap();
    assert!(
        cond.message.contains("spec.strategy.canary.steps[0]")
            && cond.message.contains("only one action"),
        "{}",
        cond.message
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let touched: Vec<_> = env
        .cluster
        .controls()
        .writes()
        .into_iter()
        .filter(|w| w.field_manager.as_deref() == Some("sluice"))
        .filter(|w| !(w.resource == "rollouts" && w.subresource.as_deref() == Some("status")))
        .filter(|w| w.resource != "events")
        .collect();
    assert!(touched.is_empty(), "an invalid spec changed: {touched:#?}");
    assert_eq!(env.nginx_weight("web").await, Some(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_service_is_reported_by_name() {
    let env = Env::new().await;
    env.services(&["web-stable"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 2, "web:1", &steps(STEPS))).await;
    let r = env
        .wait_for("web", "invalid reference", 60, |r| phase(r) == "Degraded")
        .await;
    let msg = r.status.unwrap().message.unwrap_or_default();
    assert!(
        msg.contains("web-canary") && msg.contains("not found"),
        "{msg}"
    );
    assert!(
        env.replica_sets().await.is_empty(),
        "nothing created while invalid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_missing_preview_service_is_invalid_spec_and_production_stays() {
    let env = Env::new().await;
    env.services(&["web-active", "web-preview"]).await;
    let ro = sluice_test_support::rollout::blue_green(
        "activeService: web-active\npreviewService: web-preview\n",
    )
    .name("web")
    .replicas(2)
    .build();
    env.create(&ro).await;
    let r = env
        .wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).expect("stable");
    assert_eq!(env.service_hash("web-active").await.as_ref(), Some(&v1));

    // The preview Service is renamed in the spec to one that does not exist, with a new image.
    env.patch_spec(
        "web",
        serde_json::json!({"spec": {
            "strategy": {"blueGreen": {"previewService": "web-missing"}},
            "template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}
        }}),
    )
    .await;
    let r = env
        .wait_for("web", "invalid reference", 60, |r| phase(r) == "Degraded")
        .await;
    let msg = r.status.unwrap().message.unwrap_or_default();
    assert!(
        msg.contains("spec.strategy.blueGreen.previewService")
            && msg.contains("web-missing")
            && msg.contains("not found"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.replica_sets().await.len(), 1, "no new ReplicaSet");
    assert_eq!(env.service_hash("web-active").await.as_ref(), Some(&v1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_ref_scale_down_modes() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, PostParams};
    for mode in ["never", "onsuccess", "progressively"] {
        let env = Env::new().await;
        env.services(&["web-stable", "web-canary"]).await;
        let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
        let mut ro = rollout(
            "web",
            2,
            "web:1",
            "canaryService: web-canary\nstableService: web-stable\n",
        );
        ro.spec.template = None;
        ro.spec.selector = None;
        ro.spec.workload_ref = Some(
            serde_json::from_value(serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "scaleDown": mode}))
                .unwrap(),
        );
        env.create(&ro).await;
        env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
            .await;
        let expected = if mode == "never" { 2 } else { 0 };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let replicas = deployments
                .get("web")
                .await
                .unwrap()
                .spec
                .unwrap()
                .replicas
                .unwrap_or(1);
            if replicas == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "scaleDown {mode}: deployment at {replicas}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Argo's `TestContainerResourceFormats` and `TestMalformedRollout`: `cpu: 0.001` written as a
/// number is accepted and reaches the ReplicaSet as the same quantity; `memory: invalid` is
/// reported as InvalidSpec naming the field, and no ReplicaSet is ever attempted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_quantities_run_and_a_malformed_quantity_is_invalid_spec() {
    use kube::api::{Api, DynamicObject, PostParams};
    use kube::core::{ApiResource, GroupVersionKind};
    let env = Env::new().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("sluice.dev", "v1alpha1", "Rollout"),
        "rollouts",
    );
    let raw: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), env.ns(), &ar);
    let manifest = |name: &str, requests: serde_json::Value| {
        serde_json::from_value::<DynamicObject>(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{
                        "name": "a", "image": "nginx:1.19-alpine",
                        "resources": {"requests": requests}
                    }]}
                },
                "strategy": {"canary": {}}
            }
        }))
        .unwrap()
    };
    raw.create(
        &PostParams::default(),
        &manifest("formats", serde_json::json!({"cpu": 0.001})),
    )
    .await
    .expect("a numeric quantity is accepted");
    env.wait_for("formats", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let rs = env.replica_sets().await;
    let cpu = rs[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["cpu"]
        .0
        .clone();
    assert!(cpu == "0.001" || cpu == "1m", "{cpu}");

    raw.create(
        &PostParams::default(),
        &manifest("malformed", serde_json::json!({"memory": "invalid"})),
    )
    .await
    .expect("stored: the API server keeps what it cannot read, as Argo's CRD does");
    let r = env
        .wait_for("malformed", "InvalidSpec", 60, |r| phase(r) == "Degraded")
        .await;
    let condition = r
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec")
        .expect("an InvalidSpec condition");
    assert!(
        condition.message.starts_with(
            "spec.template.spec.containers[0].resources.requests.memory: \"invalid\" is not a quantity"
        ),
        "{}",
        condition.message
    );
    assert_eq!(
        env.replica_sets().await.len(),
        1,
        "only the first Rollout's"
    );
}
