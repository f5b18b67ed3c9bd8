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

    // The gauges are set right after the status is written: give them that moment.
    let paused_info = |s: &_| {
        value_of(
            s,
            "sluice_rollout_info",
            &[
                ("namespace", env.ns()),
                ("name", "web"),
                ("phase", "Paused"),
                ("strategy", "canary"),
                ("traffic_router", "nginx"),
            ],
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (s, text) = loop {
        let (code, text) = scrape(addr, "/metrics").await;
        assert_eq!(code, 200);
        let s = samples(&text);
        if paused_info(&s).is_some() || std::time::Instant::now() > deadline {
            break (s, text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(paused_info(&s), Some(1.0), "{text}");
    assert_eq!(
        value_of(&s, "sluice_rollout_canary_weight", &[("name", "web")]),
        Some(30.0)
    );
    assert!(
        value_of(&s, "sluice_reconcile_total", &[("controller", "rollout")]).unwrap_or(0.0) > 0.0
    );
    assert!(text.contains("sluice_reconcile_duration_seconds_bucket"));
    // Every reconcile's compute time is observed too.
    assert!(
        value_of(
            &s,
            "sluice_reconcile_busy_seconds_count",
            &[("controller", "rollout")]
        )
        .unwrap_or(0.0)
            > 0.0,
        "{text}"
    );
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

/// The events of `web` with `reason`: (note, series count; 1 when there is no series).
async fn events_of(env: &Env, reason: &str) -> Vec<(String, i32)> {
    let events: Api<EventV1> = Api::namespaced(env.client.clone(), env.ns());
    let mut out: Vec<(String, i32)> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| (e.note.unwrap_or_default(), e.series.map_or(1, |s| s.count)))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_is_its_own_event_and_the_status_numbers_steps_from_one() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout(
        "web",
        2,
        "web:1",
        &format!("{NGINX}steps:\n- setWeight: 20\n- setWeight: 40\n- pause: {{}}\n"),
    ))
    .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    let paused = env
        .wait_for("web", "paused at 40", 60, |r| {
            phase(r) == "Paused" && weight(r) == Some(40)
        })
        .await;
    let st = paused.status.unwrap();
    assert_eq!(st.current_step_index, Some(2), "Argo's 0-based index");
    assert_eq!(st.current_step.as_deref(), Some("3/3"));

    // Two steps completed: two Events, each with its own note, neither counted twice.
    assert_eq!(
        events_of(&env, "RolloutStepCompleted").await,
        [
            ("step 1 of 3 completed (setWeight 20)".to_string(), 1),
            ("step 2 of 3 completed (setWeight 40)".to_string(), 1),
        ]
    );
    let weights = events_of(&env, "TrafficWeightUpdated").await;
    assert!(
        weights.iter().all(|(_, count)| *count == 1) && weights.len() >= 2,
        "{weights:?}"
    );

    // Aborted at step 3: the index goes back to 0, the status keeps the step of the abort.
    env.patch_status("web", serde_json::json!({"abort": true}))
        .await;
    let aborted = env
        .wait_for("web", "aborted", 60, |r| phase(r) == "Degraded")
        .await;
    let st = aborted.status.unwrap();
    assert_eq!(st.current_step_index, Some(0));
    assert_eq!(st.aborted_at_step_index, Some(2));
    assert_eq!(st.current_step.as_deref(), Some("3/3"));

    // Retry clears it and starts again from step 1.
    env.patch_status("web", serde_json::json!({"abort": false}))
        .await;
    let retried = env
        .wait_for("web", "retried", 60, |r| {
            r.status.as_ref().is_some_and(|s| s.aborted_at.is_none())
        })
        .await;
    let st = retried.status.unwrap();
    assert_eq!(st.aborted_at_step_index, None);
    assert!(
        matches!(st.current_step.as_deref(), Some("1/3" | "2/3" | "3/3")),
        "{:?}",
        st.current_step
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_true_repeat_counts_up_and_a_new_fact_is_a_new_event() {
    use sluice::controller::events::{Event, EventRecorder, EventType, Reporter};
    let env = Env::without_controller().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.create(&rollout("web", 1, "web:1", "steps: []\n")).await;
    let reference = kube::Resource::object_ref(&env.get("web").await, &());
    let recorder = EventRecorder::new(
        env.client.clone(),
        Reporter {
            controller: "sluice".into(),
            instance: None,
        },
    );
    let event = |note: &str| Event {
        type_: EventType::Normal,
        reason: "Test".into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    for note in ["same fact", "same fact", "another fact", "same fact"] {
        recorder.publish(&event(note), &reference).await.unwrap();
    }
    assert_eq!(
        events_of(&env, "Test").await,
        [
            ("another fact".to_string(), 1),
            ("same fact".to_string(), 3)
        ]
    );
}
