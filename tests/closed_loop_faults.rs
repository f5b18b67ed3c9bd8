//! Closed loop under faults, through a real nginx and a real Prometheus:
//! 4. Prometheus stopped in the middle of a step analysis: no step advances while blind, the
//!    rollout aborts after `consecutiveErrorLimit`, nothing is promoted on missing data.
//! 5. The controller killed in the middle of a step and restarted: the same outcome (promoted),
//!    and the weight only ever takes the steps' values, in order.

use std::time::{Duration, Instant};

use sluice::demo::stack::{Timeline, rollout_yaml};
use sluice_test_support::closed_loop::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stopped_mid_analysis_blocks_progress_then_aborts() {
    let steps = format!(
        "      - setWeight: 10\n{}      - setWeight: 50\n      - pause: {{duration: 2s}}\n      - setWeight: 100\n",
        analysis(30)
    );
    let mut stack = stack_with_stable(&steps).await;
    let load = stack.load("web.example", RATE);
    wait_all_served_by(&load, "v1").await;
    let timeline = Timeline::start(stack.client(), NS, "web");
    let v1 = stable_hash(&stack).await;
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v2", &[], &canary(&steps)))
        .await
        .expect("rollout v2");

    // Blind once the analysis has measured successfully at least once.
    let runs: kube::Api<sluice::api::analysis::AnalysisRun> =
        kube::Api::namespaced(stack.client(), NS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = runs
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|r| {
                r.status.as_ref().is_some_and(|s| {
                    s.metric_results.iter().any(|m| {
                        m.measurements
                            .iter()
                            .any(|x| x.phase.as_str() == "Successful")
                    })
                })
            });
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "no successful measurement");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.prometheus.stop();

    let r = stack
        .wait_rollout(NS, "web", Duration::from_secs(90), phase_is("Degraded"))
        .await
        .expect("aborted on errors");
    let st = r.status.unwrap();
    assert!(st.abort);
    assert_eq!(st.stable_rs, v1, "nothing promoted on missing data");
    let msg = st.message.unwrap_or_default();
    assert!(msg.to_lowercase().contains("error"), "{msg}");
    assert!(
        timeline
            .states()
            .iter()
            .skip_while(|s| s.phase == "Healthy")
            .all(|s| s.weight <= 10 && s.step.is_none_or(|i| i <= 1)),
        "no step advanced while blind: {:?}",
        timeline.states()
    );
    let run = runs.list(&Default::default()).await.unwrap().items;
    let errors = run
        .iter()
        .filter_map(|r| r.status.as_ref())
        .flat_map(|s| s.metric_results.iter())
        .flat_map(|m| m.measurements.iter())
        .filter(|m| m.phase.as_str() == "Error")
        .count();
    assert!(
        errors >= 5,
        "aborted after consecutiveErrorLimit (4) errors: {errors}"
    );
    wait_all_served_by(&load, "v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_mid_step_finishes_the_same_and_never_jumps() {
    let steps = format!(
        "      - setWeight: 10\n{}      - setWeight: 25\n{}      - setWeight: 50\n{}      - setWeight: 100\n",
        analysis(2),
        analysis(2),
        analysis(2)
    );
    let mut stack = stack_with_stable(&steps).await;
    let load = stack.load("web.example", RATE);
    wait_all_served_by(&load, "v1").await;
    let begin = Instant::now();
    let timeline = Timeline::start(stack.client(), NS, "web");
    let v1 = stable_hash(&stack).await;
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v2", &[], &canary(&steps)))
        .await
        .expect("rollout v2");
    // Kill it during the analysis at 25%.
    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), |r| {
            r.status.as_ref().and_then(|s| s.current_step_index) == Some(3)
        })
        .await
        .expect("at the second analysis");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stack.kill_controller();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let frozen = stack.rollout(NS, "web").await.unwrap();
    assert_eq!(
        frozen.status.as_ref().and_then(|s| s.current_step_index),
        Some(3),
        "nothing moves without a controller"
    );
    stack.start_controller().await.expect("restart");

    stack
        .wait_rollout(NS, "web", Duration::from_secs(120), |r| {
            phase_is("Healthy")(r)
                && r.status.as_ref().is_some_and(|s| {
                    s.stable_rs.is_some() && s.stable_rs != v1 && s.stable_rs == s.current_pod_hash
                })
        })
        .await
        .expect("v2 promoted after the restart");
    // The weight only grows, step by step (10, 25 and 50 each held), up to the promotion (after
    // which it is 0 or 100: stable and canary are then the same pods); between 50 and 100 it may
    // stop at what the available canary pods can serve.
    let mut dedup: Vec<i32> = timeline.states().iter().map(|s| s.weight).collect();
    dedup.dedup();
    let rising: Vec<i32> = dedup
        .iter()
        .copied()
        .skip(1)
        .take_while(|w| *w != 0)
        .collect();
    assert!(
        rising.windows(2).all(|w| w[0] < w[1]),
        "weight went back or jumped: {dedup:?}"
    );
    assert_eq!(
        rising.get(..3),
        Some(&[10, 25, 50][..]),
        "each step held: {dedup:?}"
    );
    assert!(rising.iter().all(|w| *w <= 100), "{dedup:?}");
    // The traffic split held during the restart: v2 at 25% while the controller was away.
    let (from, to) = timeline.intervals_at(25)[0];
    let split = load.split(
        "v2",
        from + Duration::from_secs(1),
        to - Duration::from_millis(700),
    );
    assert!(
        (split.percent() - 25.0).abs() <= 3.0,
        "25% while the controller restarted: {split:?}"
    );
    wait_all_served_by(&load, "v2").await;
    let failed = load
        .between(begin, Instant::now())
        .iter()
        .filter(|s| s.failed())
        .count();
    assert_eq!(failed, 0, "no request failed across the restart");
}
