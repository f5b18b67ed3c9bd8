//! What operators see: the admin endpoints, metrics (parsed as Prometheus text), and Events on
//! every transition.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{Api, ListParams};
use sluice::controller::ControllerConfig;
use sluice_test_support::controller::*;
use sluice_test_support::metrics::{get as scrape, samples, value_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_metrics_follow_the_rollout() {
    let cluster = cluster().await;
    let client = cluster.client();
    let controller = start_controller(
        &cluster,
        ControllerConfig {
            admin_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..config()
        },
    )
    .await;
    let addr = controller.admin_addr.unwrap();
    let env = Env {
        cluster,
        client,
        controller: Some(controller),
    };
    assert_eq!(scrape(addr, "/healthz").await.0, 200);
    // Ready once the caches are synced.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while scrape(addr, "/readyz").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout(
        "web",
        2,
        "web:1",
        &format!("{NGINX}steps:\n- setWeight: 30\n- pause: {{}}\n"),
    ))
    .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused at 30", 60, |r| {
        phase(r) == "Paused" && weight(r) == Some(30)
    })
    .await;

    let (code, text) = scrape(addr, "/metrics").await;
    assert_eq!(code, 200);
    let s = samples(&text);
    let info = value_of(
        &s,
        "sluice_rollout_info",
        &[
            ("namespace", env.ns()),
            ("name", "web"),
            ("phase", "Paused"),
            ("strategy", "canary"),
            ("traffic_router", "nginx"),
        ],
    );
    assert_eq!(info, Some(1.0), "{text}");
    assert_eq!(
        value_of(&s, "sluice_rollout_canary_weight", &[("name", "web")]),
        Some(30.0)
    );
    assert!(
        value_of(&s, "sluice_reconcile_total", &[("controller", "rollout")]).unwrap_or(0.0) > 0.0
    );
    assert!(text.contains("sluice_reconcile_duration_seconds_bucket"));
    // Exactly one phase series per Rollout: the Healthy one is gone.
    assert_eq!(
        value_of(
            &s,
            "sluice_rollout_info",
            &[("name", "web"), ("phase", "Healthy")]
        ),
        None
    );

    // Events on the transitions.
    let events: Api<EventV1> = Api::namespaced(env.client.clone(), env.ns());
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
        .filter_map(|e| e.reason)
        .collect();
    for expected in [
        "NewReplicaSetCreated",
        "TrafficWeightUpdated",
        "RolloutStepCompleted",
        "RolloutPaused",
    ] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no {expected} event in {reasons:?}"
        );
    }

    // A deleted Rollout's series disappear.
    env.rollouts()
        .delete("web", &Default::default())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = scrape(addr, "/metrics").await;
        if value_of(&samples(&text), "sluice_rollout_info", &[("name", "web")]).is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "series of a deleted Rollout remain"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_rejects_what_the_cel_rules_forbid() {
    let env = Env::without_controller().await;
    let mut same = rollout("web", 2, "web:1", NGINX);
    same.spec.strategy.canary.as_mut().unwrap().canary_service = Some("web-stable".into());
    let err = env
        .rollouts()
        .create(&Default::default(), &same)
        .await
        .expect_err("canaryService == stableService must be rejected");
    assert!(err.to_string().contains("must be different"), "{err}");
    env.create(&rollout("web", 2, "web:1", NGINX)).await;
    let patch = serde_json::json!({"spec": {"selector": {"matchLabels": {"app": "other"}}}});
    let err = env
        .rollouts()
        .patch("web", &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect_err("the selector is immutable");
    assert!(err.to_string().contains("immutable"), "{err}");
}
