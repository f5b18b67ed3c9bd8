//! Closed loop through a real nginx: app servers as pods, nginx following the canary Ingress the
//! controller writes, a real Prometheus scraping ingress-nginx-style metrics, the shipped
//! `nginx-success-rate` template deciding.
//!
//! 1. A good version, steps 10/25/50/100 with a step analysis each: promoted, and at each step
//!    the share of requests the new version served is within 3 points of the weight.
//! 2. A bad version (30% errors): aborted by the analysis, weight back to 0, every later request
//!    served by the stable version; blast radius and failed requests printed.

use std::time::{Duration, Instant};

use sluice::demo::stack::{Timeline, rollout_yaml};
use sluice_e2e::demo_app::ERROR_RATIO;
use sluice_e2e::loadgen::split_of;
use sluice_test_support::closed_loop::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_version_is_promoted_and_traffic_follows_every_weight() {
    let steps = format!(
        "      - setWeight: 10\n{}      - setWeight: 25\n{}      - setWeight: 50\n{}      - setWeight: 100\n",
        analysis(2),
        analysis(2),
        analysis(2)
    );
    let stack = stack_with_stable(&steps).await;
    let load = stack.load("web.example", RATE);
    wait_all_served_by(&load, "v1").await;
    let begin = Instant::now();
    let timeline = Timeline::start(stack.client(), NS, "web");
    let v1 = stable_hash(&stack).await;

    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v2", &[], &canary(&steps)))
        .await
        .expect("rollout v2");
    stack
        .wait_rollout(NS, "web", Duration::from_secs(120), |r| {
            phase_is("Healthy")(r)
                && r.status.as_ref().is_some_and(|s| {
                    s.stable_rs.is_some() && s.stable_rs != v1 && s.stable_rs == s.current_pod_hash
                })
                && r.status.as_ref().and_then(|s| s.current_step_index) == Some(7)
        })
        .await
        .expect("v2 promoted");

    assert_shares(&load, &timeline, &[10, 25, 50], 50, false);
    wait_all_served_by(&load, "v2").await;
    let all = load.between(begin, Instant::now());
    assert!(
        all.iter().all(|s| !s.failed()),
        "a good rollout fails no request: {:?}",
        all.iter().filter(|s| s.failed()).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_version_is_aborted_by_analysis_and_traffic_returns_to_stable() {
    let steps = format!(
        "      - setWeight: 10\n{}      - setWeight: 50\n      - pause: {{duration: 5s}}\n      - setWeight: 100\n",
        analysis(3)
    );
    let stack = stack_with_stable(&steps).await;
    let load = stack.load("web.example", RATE);
    wait_all_served_by(&load, "v1").await;
    let timeline = Timeline::start(stack.client(), NS, "web");

    let started = Instant::now();
    stack
        .apply_yaml(&rollout_yaml(
            NS,
            4,
            "v2",
            &[(ERROR_RATIO, "0.3")],
            &canary(&steps),
        ))
        .await
        .expect("rollout v2");
    let r = stack
        .wait_rollout(NS, "web", Duration::from_secs(90), |r| {
            phase_is("Degraded")(r)
                && r.status
                    .as_ref()
                    .and_then(|s| s.canary.weights.as_ref())
                    .is_none_or(|w| w.canary.weight == 0)
        })
        .await
        .expect("v2 aborted");
    let aborted = Instant::now();
    let st = r.status.unwrap();
    assert!(st.abort, "aborted: {st:?}");
    assert_ne!(st.stable_rs, st.current_pod_hash, "v2 was not promoted");
    let msg = st.message.clone().unwrap_or_default();
    assert!(
        msg.contains("success-rate"),
        "the reason names the metric: {msg}"
    );
    assert!(
        timeline.states().iter().all(|s| s.weight <= 10),
        "never past the first step: {:?}",
        timeline.states()
    );

    // Every request after the abort (once nginx reloaded) is served by v1, without failure.
    wait_all_served_by(&load, "v1").await;
    let switched = Instant::now() - Duration::from_secs(4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // nginx reloads within a sync period of the abort; on a loaded machine it may take longer,
    // which `wait_all_served_by` above allowed for.
    let settled = aborted.max(switched) + Duration::from_secs(2);
    let after = load.between(settled, Instant::now() - Duration::from_millis(500));
    assert!(
        after.len() >= 60,
        "requests after the abort: {}",
        after.len()
    );
    assert!(
        after.iter().all(|s| s.version == "v1" && !s.failed()),
        "after the abort: {:?}",
        after
            .iter()
            .filter(|s| s.version != "v1" || s.failed())
            .map(|s| (&s.version, s.status))
            .collect::<Vec<_>>()
    );

    let during = load.between(started, settled);
    let blast = split_of(&during, "v2");
    assert!(blast.version > 0, "the canary was tried: {blast:?}");
    assert!(
        blast.version_failed > 0,
        "its errors were served and measured: {blast:?}"
    );
    assert!(
        blast.version * 100 <= blast.total * 13,
        "the bad version got about its 10% share, no more: {blast:?}"
    );
    eprintln!(
        "blast radius: {} of {} requests served by v2, {} of them failed",
        blast.version, blast.total, blast.version_failed
    );
}
