//! Table tests of the rollout planner, each named after the behaviour it locks.

mod common;

use std::time::Duration;

use common::*;
use sluice::api::common::AnalysisPhase;
use sluice::api::rollout::{PauseReason, RolloutPhase};
use sluice::plan::sim::World;
use sluice::plan::{AnalysisRunKind, plan};

const STEPS_20_P_50_P_100: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx: {stableIngress: web}
steps:
- setWeight: 20
- pause: {duration: 10s}
- setWeight: 50
- pause: {}
- setWeight: 100
"#;

#[test]
fn first_version_becomes_stable_at_once_without_steps() {
    let w = settled_world(4, STEPS_20_P_50_P_100);
    let h = hash_of(&w);
    let st = w.rollout.status.as_ref().unwrap();
    assert_eq!(st.stable_rs.as_deref(), Some(h.as_str()));
    assert_eq!(st.current_step_index, Some(5));
    assert_eq!(phase(&w), "Healthy");
    assert_eq!(w.pods(&h), 4);
    assert_eq!(w.traffic.canary_weight, Some(0));
    assert_eq!(w.traffic.stable_service_hash.as_deref(), Some(h.as_str()));
    assert_eq!(w.traffic.canary_service_hash.as_deref(), Some(h.as_str()));
}

#[test]
fn settled_rollout_plans_no_change_and_no_events() {
    let mut w = settled_world(4, STEPS_20_P_50_P_100);
    let writes = w.writes;
    let p = tick(&mut w, 60);
    assert_eq!(w.writes, writes, "a settled rollout must not write");
    assert!(p.events.is_empty(), "{:?}", p.events);
    assert!(p.create_analysis_runs.is_empty() && p.terminate_analysis_runs.is_empty());
    assert_eq!(p.requeue_after, None);
}

#[test]
fn canary_walks_steps_pauses_and_promotes_on_promote() {
    let mut w = settled_world(10, STEPS_20_P_50_P_100);
    let stable = hash_of(&w);
    w.set_image("web:2");
    let canary = hash_of(&w);
    w.reconcile();
    assert_eq!(step(&w), Some(0));
    assert_eq!(phase(&w), "Progressing");
    // Step 0: 2 canary pods, then 20% of traffic once they are available.
    until(&mut w, 10, "weight 20", |w| {
        w.traffic.canary_weight == Some(20)
    });
    assert_eq!(w.pods(&canary), 2);
    assert_eq!(
        w.pods(&stable),
        10,
        "stable stays at full size with traffic routing"
    );
    // Step 1: timed pause of 10 s.
    until(&mut w, 5, "timed pause", |w| step(w) == Some(1));
    assert_eq!(phase(&w), "Paused");
    let p = w.reconcile();
    let wait = p.requeue_after.expect("a timed pause requeues");
    assert!(
        wait <= Duration::from_secs(10) && wait >= Duration::from_secs(8),
        "{wait:?}"
    );
    tick(&mut w, 11);
    until(&mut w, 10, "weight 50", |w| {
        w.traffic.canary_weight == Some(50)
    });
    assert_eq!(w.pods(&canary), 5);
    // Step 3: indefinite pause until promoted.
    until(&mut w, 5, "indefinite pause", |w| step(w) == Some(3));
    for _ in 0..5 {
        tick(&mut w, 3600);
    }
    assert_eq!(step(&w), Some(3), "an indefinite pause waits for promote");
    assert_eq!(phase(&w), "Paused");
    w.promote();
    until(&mut w, 20, "promoted", |w| {
        w.rollout.status.as_ref().unwrap().stable_rs.as_deref() == Some(canary.as_str())
    });
    until(&mut w, 10, "weight back to 0", |w| {
        w.traffic.canary_weight == Some(0)
    });
    assert_eq!(
        w.traffic.stable_service_hash.as_deref(),
        Some(canary.as_str())
    );
    assert_eq!(w.weight_log, vec![0, 20, 50, 100, 0]);
    // The previous stable ReplicaSet is scaled down after scaleDownDelaySeconds (30 s).
    assert_eq!(w.pods(&stable), 10);
    for _ in 0..31 {
        tick(&mut w, 1);
    }
    assert_eq!(w.pods(&stable), 0);
    until(&mut w, 5, "healthy", |w| phase(w) == "Healthy");
}

#[test]
fn weight_never_exceeds_what_available_canary_pods_can_serve() {
    let mut w = settled_world(10, STEPS_20_P_50_P_100);
    w.pods_ready_per_tick = Some(1);
    w.set_image("web:2");
    let canary = hash_of(&w);
    for _ in 0..40 {
        tick(&mut w, 1);
        let available = w
            .replica_sets
            .iter()
            .find(|r| r.hash == canary)
            .map_or(0, |r| r.available);
        let weight = w.traffic.canary_weight.unwrap_or(0);
        // Each available pod of 10 can carry 10 points of weight.
        assert!(
            weight <= available * 10,
            "weight {weight} with {available} available pods"
        );
    }
}

#[test]
fn promote_full_skips_remaining_steps() {
    let mut w = settled_world(4, STEPS_20_P_50_P_100);
    w.set_image("web:2");
    let canary = hash_of(&w);
    until(&mut w, 10, "weight 20", |w| {
        w.traffic.canary_weight == Some(20)
    });
    w.promote_full();
    until(&mut w, 20, "promoted", |w| {
        w.rollout.status.as_ref().unwrap().stable_rs.as_deref() == Some(canary.as_str())
    });
    assert!(
        !w.rollout.status.as_ref().unwrap().promote_full,
        "promoteFull is cleared"
    );
    assert!(w.events.iter().any(|e| e.reason == "RolloutPromotedFull"));
}

#[test]
fn abort_sets_weight_to_zero_before_moving_the_service_and_scaling_down() {
    let mut w = settled_world(10, STEPS_20_P_50_P_100);
    let stable = hash_of(&w);
    w.set_image("web:2");
    let canary = hash_of(&w);
    until(&mut w, 20, "weight 50", |w| {
        w.traffic.canary_weight == Some(50)
    });
    w.abort();
    let p = w.reconcile();
    // First reconcile: weight 0; the canary Service still selects the canary; no pod removed.
    assert_eq!(p.canary_weight, Some(0));
    assert_eq!(p.canary_service_hash.as_deref(), Some(canary.as_str()));
    assert_eq!(w.pods(&canary), 5);
    assert_eq!(phase(&w), "Degraded");
    assert!(w.rollout.status.as_ref().unwrap().aborted_at.is_some());
    // Next: the canary Service returns to stable; the canary waits for the abort delay (30 s).
    tick(&mut w, 1);
    assert_eq!(
        w.traffic.canary_service_hash.as_deref(),
        Some(stable.as_str())
    );
    assert_eq!(
        w.pods(&canary),
        5,
        "canary kept during abortScaleDownDelaySeconds"
    );
    for _ in 0..30 {
        tick(&mut w, 1);
    }
    assert_eq!(w.pods(&canary), 0);
    assert_eq!(w.pods(&stable), 10);
    assert_eq!(
        phase(&w),
        "Degraded",
        "an aborted rollout stays Degraded until retry"
    );
    let msg = w.rollout.status.as_ref().unwrap().message.clone().unwrap();
    assert!(msg.contains("aborted at step"), "{msg}");
}

#[test]
fn abort_scale_down_delay_zero_keeps_the_canary_up() {
    let spec = format!("{STEPS_20_P_50_P_100}abortScaleDownDelaySeconds: 0\n");
    let mut w = settled_world(10, &spec);
    w.set_image("web:2");
    let canary = hash_of(&w);
    until(&mut w, 20, "weight 20", |w| {
        w.traffic.canary_weight == Some(20)
    });
    w.abort();
    for _ in 0..100 {
        tick(&mut w, 1);
    }
    assert_eq!(w.traffic.canary_weight, Some(0));
    assert_eq!(w.pods(&canary), 2);
}

#[test]
fn retry_after_abort_restarts_from_step_zero_with_fresh_analysis() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
steps:
- setWeight: 20
- analysis: {templates: [{templateName: success-rate}]}
- setWeight: 100
"#;
    let mut w = settled_world(4, spec);
    w.set_image("web:2");
    until(&mut w, 20, "analysis step", |w| {
        step(w) == Some(1) && !w.analysis_runs.is_empty()
    });
    let first = w.analysis_runs[0].name.clone();
    w.set_run_phase(
        AnalysisRunKind::Step(1),
        AnalysisPhase::Failed,
        "metric failed",
    );
    until(&mut w, 5, "aborted", |w| phase(w) == "Degraded");
    assert!(
        w.analysis_runs.iter().all(|r| r.terminated),
        "runs stop on abort"
    );
    w.retry();
    tick(&mut w, 1);
    assert!(w.events.iter().any(|e| e.reason == "RolloutRetry"));
    until(&mut w, 20, "new analysis run", |w| {
        w.analysis_runs.len() == 2
    });
    let second = &w.analysis_runs[1];
    assert_ne!(second.name, first);
    assert!(
        second.name.starts_with(&first),
        "{} vs {first}",
        second.name
    );
    assert!(!second.terminated);
    assert_eq!(step(&w), Some(1));
}

#[test]
fn spec_paused_holds_the_current_step() {
    let mut w = settled_world(4, STEPS_20_P_50_P_100);
    w.rollout.spec.paused = Some(true);
    w.set_image("web:2");
    for _ in 0..10 {
        tick(&mut w, 5);
    }
    assert_eq!(step(&w), Some(0));
    assert_eq!(phase(&w), "Paused");
    assert!(w.traffic.canary_weight.unwrap_or(0) <= 20);
    w.rollout.spec.paused = None;
    until(&mut w, 20, "resumes", |w| step(w) == Some(1));
}

#[test]
fn new_template_mid_rollout_supersedes_and_restarts_steps() {
    let mut w = settled_world(10, STEPS_20_P_50_P_100);
    let stable = hash_of(&w);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    until(&mut w, 30, "weight 50", |w| {
        w.traffic.canary_weight == Some(50)
    });
    w.set_image("web:3");
    let v3 = hash_of(&w);
    let p = w.reconcile();
    assert_eq!(step(&w), Some(0));
    // The v3 canary has no available pod yet, so traffic leaves v2 first.
    assert_eq!(p.canary_weight, Some(0));
    assert!(p.events.iter().any(|e| e.reason == "RolloutSuperseded"));
    until(&mut w, 20, "weight 20 on v3", |w| {
        w.traffic.canary_weight == Some(20)
            && w.traffic.canary_service_hash.as_deref() == Some(v3.as_str())
    });
    until(&mut w, 5, "v2 scaled down", |w| w.pods(&v2) == 0);
    assert_eq!(w.pods(&stable), 10);
}

#[test]
fn reverting_to_the_stable_template_returns_to_stable_at_once() {
    let mut w = settled_world(10, STEPS_20_P_50_P_100);
    let stable = hash_of(&w);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    until(&mut w, 30, "weight 50", |w| {
        w.traffic.canary_weight == Some(50)
    });
    w.set_image("web:1");
    let p = w.reconcile();
    assert_eq!(p.canary_weight, Some(0));
    assert_eq!(step(&w), Some(5), "no steps when going back to stable");
    assert!(p.events.iter().any(|e| e.reason == "RolledBackToStable"));
    until(&mut w, 5, "v2 gone", |w| w.pods(&v2) == 0);
    assert_eq!(
        w.traffic.canary_service_hash.as_deref(),
        Some(stable.as_str())
    );
    until(&mut w, 5, "healthy", |w| phase(w) == "Healthy");
}

#[test]
fn failing_step_analysis_aborts_with_the_reason() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
steps:
- setWeight: 20
- analysis: {templates: [{templateName: success-rate}]}
- setWeight: 100
"#;
    let mut w = settled_world(4, spec);
    w.set_image("web:2");
    until(&mut w, 20, "analysis created", |w| {
        !w.analysis_runs.is_empty()
    });
    let run = &w.analysis_runs[0];
    assert_eq!(run.kind, AnalysisRunKind::Step(1));
    assert!(run.name.starts_with("web-"), "{}", run.name);
    for _ in 0..5 {
        tick(&mut w, 10);
    }
    assert_eq!(step(&w), Some(1), "the step waits for its analysis");
    w.set_run_phase(
        AnalysisRunKind::Step(1),
        AnalysisPhase::Failed,
        "metric \"success-rate\" failed: 0.82 is not >= 0.95",
    );
    tick(&mut w, 1);
    assert_eq!(phase(&w), "Degraded");
    let st = w.rollout.status.as_ref().unwrap();
    assert!(st.abort);
    assert!(
        st.message.as_deref().unwrap().contains("0.82"),
        "{:?}",
        st.message
    );
    assert_eq!(w.traffic.canary_weight, Some(0));
    let ev = w
        .events
        .iter()
        .find(|e| e.reason == "RolloutAborted")
        .unwrap();
    assert!(ev.message.contains("success-rate"), "{}", ev.message);
}

#[test]
fn error_step_analysis_aborts_too() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
steps:
- analysis: {templates: [{templateName: t}]}
"#;
    let mut w = settled_world(2, spec);
    w.set_image("web:2");
    until(&mut w, 10, "run", |w| !w.analysis_runs.is_empty());
    w.set_run_phase(
        AnalysisRunKind::Step(0),
        AnalysisPhase::Error,
        "prometheus unreachable",
    );
    tick(&mut w, 1);
    assert_eq!(phase(&w), "Degraded");
}

#[test]
fn inconclusive_step_analysis_pauses_and_promote_continues() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
steps:
- setWeight: 20
- analysis: {templates: [{templateName: t}]}
- setWeight: 60
"#;
    let mut w = settled_world(5, spec);
    w.set_image("web:2");
    until(&mut w, 20, "run", |w| !w.analysis_runs.is_empty());
    w.set_run_phase(
        AnalysisRunKind::Step(1),
        AnalysisPhase::Inconclusive,
        "neither",
    );
    tick(&mut w, 1);
    assert_eq!(phase(&w), "Paused");
    let st = w.rollout.status.as_ref().unwrap();
    assert_eq!(
        st.pause_conditions[0].reason,
        PauseReason::InconclusiveAnalysisRun
    );
    assert!(st.controller_pause);
    for _ in 0..5 {
        tick(&mut w, 60);
    }
    assert_eq!(step(&w), Some(1));
    w.promote();
    until(&mut w, 20, "weight 60", |w| {
        w.traffic.canary_weight == Some(60)
    });
}

#[test]
fn background_analysis_starts_at_starting_step_and_its_failure_aborts() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
analysis:
  templates: [{templateName: bg}]
  startingStep: 2
steps:
- setWeight: 10
- pause: {duration: 5}
- setWeight: 30
- pause: {}
"#;
    let mut w = settled_world(10, spec);
    w.set_image("web:2");
    until(&mut w, 10, "pause step", |w| step(w) == Some(1));
    assert!(
        w.analysis_runs.is_empty(),
        "no background run before startingStep"
    );
    until(&mut w, 20, "background run", |w| {
        !w.analysis_runs.is_empty()
    });
    assert_eq!(w.analysis_runs[0].kind, AnalysisRunKind::Background);
    assert!(step(&w) >= Some(2));
    w.set_run_phase(
        AnalysisRunKind::Background,
        AnalysisPhase::Failed,
        "error rate 0.3",
    );
    tick(&mut w, 1);
    assert_eq!(phase(&w), "Degraded");
    assert_eq!(w.traffic.canary_weight, Some(0));
}

#[test]
fn background_analysis_is_terminated_when_the_rollout_completes() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
analysis: {templates: [{templateName: bg}]}
steps:
- setWeight: 50
"#;
    let mut w = settled_world(2, spec);
    w.set_image("web:2");
    tick(&mut w, 1);
    until(&mut w, 30, "healthy", |w| {
        phase(w) == "Healthy" && w.analysis_runs.iter().all(|r| r.terminated)
    });
    assert_eq!(w.analysis_runs.len(), 1);
}

#[test]
fn progress_deadline_exceeded_degrades_without_abort() {
    let spec = STEPS_20_P_50_P_100.to_string();
    let mut w = settled_world(4, &spec);
    w.rollout.spec.progress_deadline_seconds = Some(60);
    w.set_image("web:2");
    let canary = hash_of(&w);
    w.never_ready.insert(canary.clone());
    for _ in 0..70 {
        tick(&mut w, 1);
    }
    assert_eq!(phase(&w), "Degraded");
    let msg = w.rollout.status.as_ref().unwrap().message.clone().unwrap();
    assert!(msg.contains("ProgressDeadlineExceeded"), "{msg}");
    assert!(
        !w.rollout.status.as_ref().unwrap().abort,
        "no abort without progressDeadlineAbort"
    );
    assert_eq!(w.pods(&canary), 1, "the canary keeps trying");
}

#[test]
fn progress_deadline_with_abort_aborts() {
    let mut w = settled_world(4, STEPS_20_P_50_P_100);
    w.rollout.spec.progress_deadline_seconds = Some(60);
    w.rollout.spec.progress_deadline_abort = Some(true);
    w.set_image("web:2");
    let canary = hash_of(&w);
    w.never_ready.insert(canary.clone());
    for _ in 0..70 {
        tick(&mut w, 1);
    }
    let st = w.rollout.status.as_ref().unwrap();
    assert!(st.abort, "{st:#?}");
    assert!(st.message.as_deref().unwrap().contains("progress deadline"));
}

#[test]
fn pause_time_does_not_count_towards_the_progress_deadline() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
steps:
- setWeight: 20
- pause: {}
"#;
    let mut w = settled_world(4, spec);
    w.rollout.spec.progress_deadline_seconds = Some(30);
    w.set_image("web:2");
    until(&mut w, 10, "paused", |w| phase(w) == "Paused");
    for _ in 0..10 {
        tick(&mut w, 60);
    }
    assert_eq!(phase(&w), "Paused");
}

#[test]
fn basic_canary_moves_replicas_within_surge_and_unavailability() {
    let spec = r#"
maxSurge: 1
maxUnavailable: 0
steps:
- setWeight: 50
- pause: {}
"#;
    let mut w = settled_world(4, spec);
    let stable = hash_of(&w);
    w.set_image("web:2");
    let canary = hash_of(&w);
    for _ in 0..20 {
        tick(&mut w, 1);
        let total: i32 = w.replica_sets.iter().map(|r| r.replicas).sum();
        let available: i32 = w.replica_sets.iter().map(|r| r.available).sum();
        assert!(total <= 5, "maxSurge 1 allows at most 5 pods, got {total}");
        assert!(
            available >= 4,
            "maxUnavailable 0 keeps 4 available, got {available}"
        );
    }
    assert_eq!(w.pods(&canary), 2);
    assert_eq!(w.pods(&stable), 2);
    assert_eq!(step(&w), Some(1));
    assert!(w.rollout.status.as_ref().unwrap().canary.weights.is_none());
}

#[test]
fn no_steps_is_a_rolling_update() {
    let mut w = settled_world(4, "maxSurge: 25%\nmaxUnavailable: 25%\n");
    let stable = hash_of(&w);
    w.set_image("web:2");
    let canary = hash_of(&w);
    tick(&mut w, 1);
    until(&mut w, 30, "healthy", |w| phase(w) == "Healthy");
    assert_eq!(w.pods(&canary), 4);
    assert_eq!(w.pods(&stable), 0);
    assert_eq!(
        w.rollout.status.as_ref().unwrap().stable_rs.as_deref(),
        Some(canary.as_str())
    );
}

#[test]
fn basic_canary_abort_rolls_back_to_full_stable() {
    let spec = "steps:\n- setWeight: 50\n- pause: {}\n";
    let mut w = settled_world(4, spec);
    let stable = hash_of(&w);
    w.set_image("web:2");
    let canary = hash_of(&w);
    until(&mut w, 20, "paused", |w| step(w) == Some(1));
    w.abort();
    until(&mut w, 20, "rolled back", |w| {
        w.pods(&canary) == 0 && w.pods(&stable) == 4
    });
    assert_eq!(phase(&w), "Degraded");
}

#[test]
fn set_canary_scale_scales_independently_of_weight() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
steps:
- setCanaryScale: {replicas: 3}
- setWeight: 10
- pause: {}
- setCanaryScale: {matchTrafficWeight: true}
- pause: {}
"#;
    let mut w = settled_world(10, spec);
    w.set_image("web:2");
    let canary = hash_of(&w);
    until(&mut w, 20, "at pause", |w| step(w) == Some(2));
    assert_eq!(w.pods(&canary), 3);
    assert_eq!(w.traffic.canary_weight, Some(10));
    w.promote();
    until(&mut w, 20, "second pause", |w| step(w) == Some(4));
    assert_eq!(w.pods(&canary), 1, "matchTrafficWeight: ceil(10 × 10%)");
}

#[test]
fn min_pods_per_replica_set_raises_small_canaries() {
    let spec = format!("{STEPS_20_P_50_P_100}minPodsPerReplicaSet: 2\n");
    let mut w = settled_world(4, &spec);
    w.set_image("web:2");
    let canary = hash_of(&w);
    until(&mut w, 10, "weight 20", |w| {
        w.traffic.canary_weight == Some(20)
    });
    assert_eq!(w.pods(&canary), 2, "ceil(4 × 20%) = 1 raised to 2");
}

#[test]
fn dynamic_stable_scale_shrinks_stable_as_weight_grows() {
    let spec = format!("{STEPS_20_P_50_P_100}dynamicStableScale: true\n");
    let mut w = settled_world(10, &spec);
    let stable = hash_of(&w);
    w.set_image("web:2");
    until(&mut w, 30, "weight 50", |w| {
        w.traffic.canary_weight == Some(50)
    });
    tick(&mut w, 1);
    assert_eq!(w.pods(&stable), 5);
    w.abort();
    until(&mut w, 30, "weight 0", |w| {
        w.traffic.canary_weight == Some(0)
    });
    assert_eq!(w.pods(&stable), 10);
}

#[test]
fn steps_edited_mid_update_restart_from_step_zero() {
    let mut w = settled_world(4, STEPS_20_P_50_P_100);
    w.set_image("web:2");
    until(&mut w, 20, "step 3", |w| step(w) == Some(3));
    w.rollout
        .spec
        .strategy
        .canary
        .as_mut()
        .unwrap()
        .steps
        .remove(1);
    w.reconcile();
    assert_eq!(step(&w), Some(0));
}

#[test]
fn old_replica_sets_beyond_revision_history_limit_are_deleted() {
    let mut w = settled_world(2, "maxSurge: 1\nmaxUnavailable: 0\n");
    w.rollout.spec.revision_history_limit = Some(1);
    for v in 2..=5 {
        w.set_image(&format!("web:{v}"));
        tick(&mut w, 1);
        until(&mut w, 40, "healthy", |w| phase(w) == "Healthy");
        w.settle(Duration::from_secs(1), 10);
    }
    // Current + one old ReplicaSet.
    assert_eq!(w.replica_sets.len(), 2, "{:#?}", w.replica_sets);
}

#[test]
fn revisions_increase_and_reused_templates_get_a_new_revision() {
    let mut w = settled_world(2, "maxSurge: 1\nmaxUnavailable: 0\n");
    let v1 = hash_of(&w);
    w.set_image("web:2");
    tick(&mut w, 1);
    until(&mut w, 40, "healthy v2", |w| phase(w) == "Healthy");
    w.set_image("web:1");
    tick(&mut w, 1);
    until(&mut w, 40, "healthy v1", |w| phase(w) == "Healthy");
    let rs = w.replica_sets.iter().find(|r| r.hash == v1).unwrap();
    assert_eq!(rs.revision, 3);
}

#[test]
fn abort_of_a_settled_rollout_is_ignored() {
    let mut w = settled_world(2, STEPS_20_P_50_P_100);
    w.abort();
    tick(&mut w, 1);
    assert!(!w.rollout.status.as_ref().unwrap().abort);
    assert_eq!(phase(&w), "Healthy");
}

#[test]
fn status_carries_kstatus_conditions() {
    let mut w = settled_world(2, STEPS_20_P_50_P_100);
    let cond = |w: &sluice::plan::sim::World, t: &str| {
        w.rollout
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
    };
    assert_eq!(cond(&w, "Ready").as_deref(), Some("True"));
    assert_eq!(cond(&w, "Reconciling").as_deref(), Some("False"));
    assert_eq!(cond(&w, "Stalled").as_deref(), Some("False"));
    w.set_image("web:2");
    tick(&mut w, 1);
    assert_eq!(cond(&w, "Reconciling").as_deref(), Some("True"));
    assert_eq!(cond(&w, "Ready").as_deref(), Some("False"));
    w.abort();
    tick(&mut w, 1);
    assert_eq!(cond(&w, "Stalled").as_deref(), Some("True"));
    assert_eq!(
        w.rollout.status.as_ref().unwrap().observed_generation,
        Some(1)
    );
}

#[test]
fn canary_weights_are_reported_in_status() {
    let mut w = settled_world(10, STEPS_20_P_50_P_100);
    w.set_image("web:2");
    until(&mut w, 10, "weight 20", |w| {
        w.traffic.canary_weight == Some(20)
    });
    let weights = w
        .rollout
        .status
        .as_ref()
        .unwrap()
        .canary
        .weights
        .clone()
        .unwrap();
    assert_eq!(weights.canary.weight, 20);
    assert_eq!(weights.stable.weight, 80);
    assert_eq!(weights.canary.service_name.as_deref(), Some("web-canary"));
    assert!(w.events.iter().any(|e| e.reason == "TrafficWeightUpdated"));
}

#[test]
fn max_traffic_weight_scales_weights_and_replicas() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}, maxTrafficWeight: 1000}
steps:
- setWeight: 250
- pause: {}
"#;
    let mut w = settled_world(10, spec);
    w.set_image("web:2");
    let canary = hash_of(&w);
    until(&mut w, 10, "weight 250", |w| {
        w.traffic.canary_weight == Some(250)
    });
    assert_eq!(w.pods(&canary), 3);
}

#[test]
fn workload_ref_scale_down_modes() {
    use sluice::plan::ObservedWorkload;
    for (mode, expect_final) in [("never", 3), ("onsuccess", 0), ("progressively", 0)] {
        let mut r = rollout(3, "maxSurge: 1\nmaxUnavailable: 0\n");
        r.spec.workload_ref = Some(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "scaleDown": mode
            }))
            .unwrap(),
        );
        let template = r.spec.template.take();
        let mut obs = sluice::plan::Observation {
            rollout: r,
            template,
            replica_sets: vec![],
            analysis_runs: vec![],
            traffic: Default::default(),
            workload: Some(ObservedWorkload {
                replicas: 3,
                generation: 1,
            }),
            reference_errors: vec![],
            analysis_templates: None,
            pods: None,
            refused_replica_set: None,
        };
        let p = plan(&obs, t0());
        assert!(p.invalid.is_none(), "{:?}", p.invalid);
        // Pods become available.
        obs.replica_sets = vec![sluice::plan::ObservedReplicaSet {
            name: "web-x".into(),
            hash: p.replica_sets[0].hash.clone(),
            replicas: 3,
            actual: 3,
            ready: 3,
            available: 3,
            revision: 1,
            scale_down_deadline: None,
            created: None,
        }];
        obs.rollout.status = Some(p.status.clone());
        let p2 = plan(&obs, t0());
        let final_ = p2.workload_replicas.unwrap_or(3);
        assert_eq!(final_, expect_final, "scaleDown {mode}");
    }
}

#[test]
fn missing_workload_ref_deployment_is_an_invalid_spec() {
    let mut r = rollout(3, "maxSurge: 1\n");
    r.spec.workload_ref = Some(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "gone"
        }))
        .unwrap(),
    );
    r.spec.template = None;
    let obs = sluice::plan::Observation {
        rollout: r,
        template: None,
        replica_sets: vec![],
        analysis_runs: vec![],
        traffic: Default::default(),
        workload: None,
        reference_errors: vec![],
        analysis_templates: None,
        pods: None,
        refused_replica_set: None,
    };
    let p = plan(&obs, t0());
    let errs = p.invalid.expect("invalid");
    assert!(
        errs.iter()
            .any(|e| e.field == "spec.workloadRef.name" && e.message.contains("gone"))
    );
}

#[test]
fn phase_is_degraded_with_invalid_spec_and_names_the_field() {
    let mut w = settled_world(4, STEPS_20_P_50_P_100);
    w.rollout.spec.strategy.canary.as_mut().unwrap().steps[0].set_weight = Some(150);
    w.reconcile();
    let st = w.rollout.status.as_ref().unwrap();
    assert_eq!(st.phase, Some(RolloutPhase::Degraded));
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec")
        .unwrap();
    assert!(
        c.message
            .contains("spec.strategy.canary.steps[0].setWeight"),
        "{}",
        c.message
    );
}

/// The Rollout's template as the API server returns it inside a ReplicaSet: with the test
/// cluster's defaults filled in (the same as kube-apiserver's for these fields).
fn defaulted(
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> k8s_openapi::api::core::v1::PodTemplateSpec {
    let mut rs = serde_json::json!({"spec": {"selector": {}, "template": template}});
    sluice_e2e::defaults::apply("replicasets", &mut rs, &mut || unreachable!());
    serde_json::from_value(rs["spec"]["template"].clone()).unwrap()
}

#[test]
fn a_template_hashes_the_same_after_the_api_servers_defaulting() {
    use sluice::plan::hash::pod_template_hash;
    let mut r = rollout(2, STEPS_20_P_50_P_100);
    let template = r.spec.template.take().unwrap();
    let mut with_port = template.clone();
    with_port.spec.as_mut().unwrap().containers[0].ports = Some(vec![
        serde_json::from_value(serde_json::json!({"containerPort": 8080})).unwrap(),
    ]);
    for t in [template, with_port] {
        let read_back = defaulted(&t);
        assert_ne!(
            serde_json::to_value(&read_back).unwrap(),
            serde_json::to_value(&t).unwrap(),
            "the defaulting must have filled something in"
        );
        assert_eq!(
            pod_template_hash(&read_back, None),
            pod_template_hash(&t, None)
        );
    }
}

#[test]
fn the_stable_template_read_back_from_its_replica_set_returns_to_stable_at_once() {
    let mut w = settled_world(10, STEPS_20_P_50_P_100);
    let stable = hash_of(&w);
    let v1_template = w.rollout.spec.template.clone().unwrap();
    w.set_image("web:2");
    until(&mut w, 30, "weight 50", |w| {
        w.traffic.canary_weight == Some(50)
    });
    let before = w.replica_sets.len();
    // What `kubectl get rs -o yaml` shows of the stable version, pasted back into the Rollout.
    w.rollout.spec.template = Some(defaulted(&v1_template));
    let p = w.reconcile();
    assert!(
        p.replica_sets.iter().all(|d| !d.create),
        "{:?}",
        p.replica_sets
    );
    assert_eq!(
        w.rollout
            .status
            .as_ref()
            .unwrap()
            .current_pod_hash
            .as_deref(),
        Some(stable.as_str())
    );
    assert_eq!(step(&w), Some(5), "no steps when going back to stable");
    assert!(p.events.iter().any(|e| e.reason == "RolledBackToStable"));
    assert!(p.create_analysis_runs.is_empty());
    until(&mut w, 10, "healthy", |w| phase(w) == "Healthy");
    assert_eq!(w.replica_sets.len(), before, "no new ReplicaSet");
}

#[test]
fn a_replica_set_named_by_the_earlier_hash_is_kept_on_upgrade() {
    use sluice::plan::hash::{legacy_pod_template_hash, pod_template_hash};
    // A manifest that spells out defaults: the earlier hash (of the template as written) and
    // the canonical one differ.
    let mut r = rollout(4, STEPS_20_P_50_P_100);
    let c = &mut r
        .spec
        .template
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .containers[0];
    c.image_pull_policy = Some("IfNotPresent".into());
    let template = r.spec.template.clone().unwrap();
    let old = legacy_pod_template_hash(&template, None);
    assert_ne!(old, pod_template_hash(&template, None));
    let mut w = sluice::plan::sim::World::new(r, t0());
    w.settle(Duration::from_secs(1), 50);
    // What an earlier release left in the cluster: everything named by the earlier hash.
    let new = w
        .rollout
        .status
        .as_ref()
        .unwrap()
        .stable_rs
        .clone()
        .unwrap();
    let st = w.rollout.status.as_mut().unwrap();
    st.stable_rs = Some(old.clone());
    st.current_pod_hash = Some(old.clone());
    for rs in &mut w.replica_sets {
        if rs.hash == new {
            rs.hash = old.clone();
            rs.name = format!("web-{old}");
        }
    }
    w.traffic.stable_service_hash = Some(old.clone());
    w.traffic.canary_service_hash = Some(old.clone());
    let p = w.reconcile();
    assert!(p.events.is_empty(), "{:?}", p.events);
    assert!(
        p.replica_sets.iter().all(|d| !d.create && d.hash == old),
        "{:?}",
        p.replica_sets
    );
    assert_eq!(p.status.current_pod_hash.as_deref(), Some(old.as_str()));
    assert_eq!(phase(&w), "Healthy");
    assert_eq!(w.pods(&old), 4);
    // An update from there still rolls out, and a revert returns to the old ReplicaSet.
    w.set_image("web:2");
    until(&mut w, 30, "weight 20", |w| {
        w.traffic.canary_weight == Some(20)
    });
    w.set_image("web:1");
    let p = w.reconcile();
    assert!(
        p.events.iter().any(|e| e.reason == "RolledBackToStable"),
        "{:?}",
        p.events
    );
    assert_eq!(p.status.current_pod_hash.as_deref(), Some(old.as_str()));
}

#[test]
fn messages_number_steps_from_one() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
steps:
- setWeight: 20
- analysis: {templates: [{templateName: success-rate}]}
- setWeight: 100
"#;
    let mut w = settled_world(4, spec);
    w.set_image("web:2");
    until(&mut w, 20, "analysis step", |w| {
        step(w) == Some(1) && !w.analysis_runs.is_empty()
    });
    w.set_run_phase(
        AnalysisRunKind::Step(1),
        AnalysisPhase::Failed,
        "metric failed",
    );
    until(&mut w, 5, "aborted", |w| phase(w) == "Degraded");
    let aborted = w
        .events
        .iter()
        .find(|e| e.reason == "RolloutAborted")
        .unwrap();
    // The analysis is the second step; currentStepIndex was 1.
    assert!(
        aborted.message.starts_with("aborted at step 2 of 3:"),
        "{}",
        aborted.message
    );
    w.retry();
    tick(&mut w, 1);
    let retry = w
        .events
        .iter()
        .find(|e| e.reason == "RolloutRetry")
        .unwrap();
    assert_eq!(retry.message, "retrying the update from step 1");
    assert_eq!(
        step(&w),
        Some(0).max(step(&w)),
        "currentStepIndex stays 0-based"
    );
    let changed = {
        w.rollout
            .spec
            .strategy
            .canary
            .as_mut()
            .unwrap()
            .steps
            .remove(2);
        w.reconcile()
    };
    let restarted = changed
        .events
        .iter()
        .find(|e| e.message.starts_with("steps changed"))
        .unwrap();
    assert_eq!(
        restarted.message,
        "steps changed during the update: restarting from step 1"
    );
}

const STEPS_WITH_ANALYSIS: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
steps:
- setWeight: 20
- analysis:
    templates: [{templateName: success-rate}]
    args: [{name: service, value: web}]
- setWeight: 100
"#;

fn success_rate(interval: &str) -> sluice::api::analysis::AnalysisTemplateSpec {
    serde_json::from_value(serde_json::json!({
        "args": [{"name": "service"}, {"name": "threshold", "value": "0.95"}],
        "metrics": [{
            "name": "success-rate",
            "interval": interval,
            "count": 3,
            "successCondition": "result[0] >= {{args.threshold}}",
            "provider": {"prometheus": {"query": "rate(ok{service=\"{{args.service}}\"}[1m])"}}
        }]
    }))
    .unwrap()
}

fn with_templates(
    w: &sluice::plan::sim::World,
    templates: &[(&str, sluice::plan::ObservedTemplate)],
) -> sluice::plan::Observation {
    let mut obs = w.observe();
    obs.analysis_templates = Some(
        templates
            .iter()
            .map(|(name, t)| ((false, name.to_string()), t.clone()))
            .collect(),
    );
    obs
}

/// Nothing of the new version may be created and no traffic may move while a plan is invalid.
fn assert_frozen(w: &sluice::plan::sim::World, p: &sluice::plan::Plan, new_hash: &str) {
    assert!(
        p.replica_sets
            .iter()
            .all(|r| r.hash != new_hash && !r.create),
        "no ReplicaSet of the new version: {:?}",
        p.replica_sets
    );
    assert_eq!(p.canary_weight, None, "the weight is left as it is");
    assert!(p.create_analysis_runs.is_empty());
    assert_eq!(p.status.phase, Some(RolloutPhase::Degraded));
    let invalid = p
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec")
        .expect("InvalidSpec condition");
    assert_eq!(invalid.status, "True");
    assert_eq!(w.traffic.canary_weight, Some(0));
}

#[test]
fn a_missing_template_stops_the_update_before_its_first_pod_and_its_creation_resumes_it() {
    use sluice::plan::ObservedTemplate;
    let mut w = settled_world(4, STEPS_WITH_ANALYSIS);
    w.set_image("web:2");
    let new_hash = hash_of(&w);
    let p = plan(
        &with_templates(&w, &[("success-rate", ObservedTemplate::Missing)]),
        t0(),
    );
    let errors = p.invalid.clone().expect("invalid");
    assert_eq!(
        errors[0].to_string(),
        "spec.strategy.canary.steps[1].analysis.templates[0]: AnalysisTemplate \"success-rate\" not found"
    );
    assert_frozen(&w, &p, &new_hash);

    // The template appears: the same revision proceeds.
    let p = plan(
        &with_templates(
            &w,
            &[("success-rate", ObservedTemplate::Found(success_rate("1m")))],
        ),
        t0(),
    );
    assert!(p.invalid.is_none(), "{:?}", p.invalid);
    assert!(
        p.replica_sets
            .iter()
            .any(|r| r.hash == new_hash && r.create),
        "{:?}",
        p.replica_sets
    );
}

#[test]
fn template_problems_name_the_template_and_the_field() {
    use sluice::api::validation::FieldError;
    use sluice::plan::ObservedTemplate;
    let mut w = settled_world(4, STEPS_WITH_ANALYSIS);
    w.set_image("web:2");
    let new_hash = hash_of(&w);
    // A spec that does not decode, as observed.
    let undecodable = ObservedTemplate::Invalid(FieldError {
        field: "spec.metrics[0].interval".into(),
        message: "cannot read \"five minutes\": invalid unit".into(),
    });
    let p = plan(&with_templates(&w, &[("success-rate", undecodable)]), t0());
    let message = p.invalid.clone().expect("invalid")[0].to_string();
    assert!(
        message.contains("AnalysisTemplate \"success-rate\": spec.metrics[0].interval: "),
        "{message}"
    );
    assert_frozen(&w, &p, &new_hash);

    // A negative interval decodes but fails the run's own checks.
    let p = plan(
        &with_templates(
            &w,
            &[("success-rate", ObservedTemplate::Found(success_rate("-1m")))],
        ),
        t0(),
    );
    let message = p.invalid.clone().expect("invalid")[0].to_string();
    assert_eq!(
        message,
        "spec.strategy.canary.steps[1].analysis: AnalysisTemplate \"success-rate\": \
         spec.metrics[0].interval: must not be negative"
    );
    assert_frozen(&w, &p, &new_hash);

    // An argument nobody supplies.
    let mut needs_more = success_rate("1m");
    needs_more
        .args
        .push(serde_json::from_value(serde_json::json!({"name": "region"})).unwrap());
    let p = plan(
        &with_templates(&w, &[("success-rate", ObservedTemplate::Found(needs_more))]),
        t0(),
    );
    let message = p.invalid.clone().expect("invalid")[0].to_string();
    assert_eq!(
        message,
        "spec.strategy.canary.steps[1].analysis: AnalysisTemplate \"success-rate\": \
         spec.args: argument \"region\" was not supplied"
    );
    assert_frozen(&w, &p, &new_hash);

    // At rest a missing template is reported as Argo does (its e2e TestFixInvalidSpec), but
    // the arguments are the next update's business: one nobody supplies yet stops nothing.
    let settled = settled_world(4, STEPS_WITH_ANALYSIS);
    let p = plan(
        &with_templates(&settled, &[("success-rate", ObservedTemplate::Missing)]),
        t0(),
    );
    let message = p.invalid.clone().expect("invalid")[0].to_string();
    assert!(
        message.contains("AnalysisTemplate \"success-rate\" not found"),
        "{message}"
    );
    let mut needs_more = success_rate("1m");
    needs_more
        .args
        .push(serde_json::from_value(serde_json::json!({"name": "region"})).unwrap());
    let p = plan(
        &with_templates(
            &settled,
            &[("success-rate", ObservedTemplate::Found(needs_more))],
        ),
        t0(),
    );
    assert!(p.invalid.is_none(), "{:?}", p.invalid);
}

/// Argo Rollouts types `interval`, `initialDelay`, `count` and the limits so that they may be
/// `{{args.NAME}}`: the Rollout's values are substituted before the update's first pod, and a
/// value that does not fit the field stops the update naming the template, metric and field.
#[test]
fn templated_interval_count_and_limits_are_checked_with_the_rollouts_values() {
    use sluice::plan::ObservedTemplate;
    const STEPS: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
steps:
- setWeight: 20
- analysis:
    templates: [{templateName: success-rate}]
    args:
    - {name: interval, value: INTERVAL}
    - {name: count, value: "4"}
    - {name: failure-limit, value: "1"}
- setWeight: 100
"#;
    let template: sluice::api::analysis::AnalysisTemplateSpec =
        serde_json::from_value(serde_json::json!({
            "args": [{"name": "interval"}, {"name": "count"}, {"name": "failure-limit"},
                     {"name": "delay", "value": "10s"}],
            "metrics": [{
                "name": "success-rate",
                "interval": "{{args.interval}}",
                "initialDelay": "{{ args.delay }}",
                "count": "{{args.count}}",
                "failureLimit": "{{args.failure-limit}}",
                "inconclusiveLimit": "{{args.failure-limit}}",
                "successCondition": "result[0] >= 0.95",
                "provider": {"prometheus": {"query": "rate(ok[{{args.interval}}])"}}
            }]
        }))
        .expect("a templated interval decodes");
    let observe = |interval: &str| {
        let mut w = settled_world(4, &STEPS.replace("INTERVAL", interval));
        w.set_image("web:2");
        let hash = hash_of(&w);
        let obs = with_templates(
            &w,
            &[("success-rate", ObservedTemplate::Found(template.clone()))],
        );
        (w, obs, hash)
    };
    let (_, obs, _) = observe("30s");
    let p = plan(&obs, t0());
    assert!(p.invalid.is_none(), "{:?}", p.invalid);

    let (w, obs, hash) = observe("\"5\"");
    let p = plan(&obs, t0());
    let message = p.invalid.clone().expect("invalid")[0].to_string();
    assert!(
        message.starts_with(
            "spec.strategy.canary.steps[1].analysis: AnalysisTemplate \"success-rate\": \
             spec.metrics[0].interval: cannot read \"5\": "
        ),
        "{message}"
    );
    assert_frozen(&w, &p, &hash);
}

/// Sum of pods (`spec.replicas`) over every ReplicaSet of the world.
fn total_pods(w: &sluice::plan::sim::World) -> i32 {
    w.replica_sets.iter().map(|r| r.replicas).sum()
}

#[test]
fn basic_canary_surges_a_canary_pod_beside_a_full_stable() {
    // Argo's TestCanaryWithPausedRollout: 3 replicas, setWeight 20, default maxSurge and
    // maxUnavailable (25%: one pod of surge, none unavailable).
    let mut w = settled_world(3, "steps:\n- setWeight: 20\n- pause: {}\n");
    let v1 = hash_of(&w);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    until(&mut w, 20, "paused", |w| phase(w) == "Paused");
    assert_eq!((w.pods(&v2), w.pods(&v1)), (1, 3));
    // A third version while paused: the second goes, the third gets the canary pod.
    w.set_image("web:3");
    let v3 = hash_of(&w);
    until(&mut w, 20, "paused on v3", |w| {
        phase(w) == "Paused" && w.pods(&v3) == 1
    });
    assert_eq!((w.pods(&v1), w.pods(&v2), w.pods(&v3)), (3, 0, 1));
}

#[test]
fn basic_canary_with_one_replica_keeps_its_stable_pod_at_every_partial_weight() {
    for weight in [1, 20, 50, 99] {
        let mut w = settled_world(
            1,
            &format!("steps:\n- setWeight: {weight}\n- pause: {{}}\n"),
        );
        let v1 = hash_of(&w);
        w.set_image("web:2");
        let v2 = hash_of(&w);
        until(&mut w, 20, "paused", |w| phase(w) == "Paused");
        assert_eq!(
            (w.pods(&v2), w.pods(&v1)),
            (1, 1),
            "setWeight {weight}: one canary pod beside the stable one"
        );
        w.promote();
        until(&mut w, 20, "healthy", |w| phase(w) == "Healthy");
        assert_eq!((w.pods(&v2), w.pods(&v1)), (1, 0));
    }
}

#[test]
fn basic_canary_scaled_during_an_update_returns_to_its_split() {
    // Argo's TestRolloutScalingDuringUpdate: canary pods never become available; 4 → 8 → 4.
    let spec = "maxSurge: 2\nmaxUnavailable: 0\n";
    let mut w = settled_world(4, spec);
    let v1 = hash_of(&w);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    w.never_ready.insert(v2.clone());
    until(&mut w, 20, "6 pods", |w| total_pods(w) == 6);
    for _ in 0..5 {
        tick(&mut w, 1);
    }
    assert_eq!((w.pods(&v2), w.pods(&v1)), (2, 4));
    w.rollout.spec.replicas = Some(8);
    until(&mut w, 20, "10 pods", |w| total_pods(w) == 10);
    for _ in 0..5 {
        tick(&mut w, 1);
    }
    assert_eq!((w.pods(&v2), w.pods(&v1)), (6, 4));
    w.rollout.spec.replicas = Some(4);
    until(&mut w, 20, "6 pods", |w| total_pods(w) == 6);
    for _ in 0..5 {
        tick(&mut w, 1);
    }
    assert_eq!((w.pods(&v2), w.pods(&v1)), (2, 4));
}

#[test]
fn replicas_changed_while_paused_keep_the_split_and_never_empty_the_stable() {
    // Argo's TestRolloutScalingWhenPaused (basic canary) and the same with traffic routing,
    // as an HPA writing the scale subresource would.
    let mut w = settled_world(1, "steps:\n- setWeight: 25\n- pause: {}\n");
    let v1 = hash_of(&w);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    until(&mut w, 20, "paused", |w| phase(w) == "Paused");
    assert_eq!((w.pods(&v2), w.pods(&v1)), (1, 1));
    w.rollout.spec.replicas = Some(8);
    until(&mut w, 30, "8 available", |w| {
        w.replica_sets.iter().map(|r| r.available).sum::<i32>() >= 8 && w.pods(&v2) == 2
    });
    assert_eq!((w.pods(&v2), w.pods(&v1)), (2, 6));
    w.rollout.spec.replicas = Some(4);
    until(&mut w, 30, "1 / 3", |w| {
        w.pods(&v2) == 1 && w.pods(&v1) == 3
    });
    assert_eq!(phase(&w), "Paused");

    let routed = format!("{ROUTED}steps:\n- setWeight: 25\n- pause: {{}}\n");
    let mut w = settled_world(4, &routed);
    let v1 = hash_of(&w);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    until(&mut w, 20, "paused", |w| phase(w) == "Paused");
    assert_eq!((w.pods(&v2), w.pods(&v1)), (1, 4));
    for (replicas, canary) in [(8, 2), (2, 1), (0, 0), (5, 2)] {
        w.rollout.spec.replicas = Some(replicas);
        for _ in 0..10 {
            tick(&mut w, 1);
            if replicas > 0 {
                assert!(w.pods(&v1) > 0, "the stable is never emptied mid-canary");
            }
        }
        assert_eq!(
            (w.pods(&v2), w.pods(&v1)),
            (canary, replicas),
            "{replicas} replicas at 25%"
        );
        assert_eq!(phase(&w), "Paused");
    }
}

#[test]
fn a_bad_first_version_then_a_bad_update_keeps_the_first_and_surges_one_pod() {
    // Argo's TestRolloutBadToBadUpdate: 4 replicas, maxSurge 1, maxUnavailable 0, no steps;
    // neither version ever becomes available.
    let mut w = sluice::plan::sim::World::new(rollout(4, "maxSurge: 1\nmaxUnavailable: 0\n"), t0());
    let v1 = hash_of(&w);
    w.never_ready.insert(v1.clone());
    for _ in 0..10 {
        tick(&mut w, 1);
    }
    assert_eq!(w.pods(&v1), 4);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    w.never_ready.insert(v2.clone());
    for _ in 0..20 {
        tick(&mut w, 1);
        assert!(total_pods(&w) <= 5, "maxSurge 1");
    }
    assert_eq!((w.pods(&v2), w.pods(&v1)), (1, 4));
    // A fixed version then replaces the first.
    w.set_image("web:3");
    let v3 = hash_of(&w);
    until(&mut w, 40, "healthy on v3", |w| phase(w) == "Healthy");
    assert_eq!((w.pods(&v3), w.pods(&v2), w.pods(&v1)), (4, 0, 0));
}

#[test]
fn previous_stable_waits_out_its_scale_down_delay_within_the_revision_limit() {
    let spec = format!("{ROUTED}scaleDownDelayRevisionLimit: 1\n");
    let mut w = settled_world(1, &spec);
    let v1 = hash_of(&w);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    until(&mut w, 20, "promoted", |w| {
        w.rollout.status.as_ref().unwrap().stable_rs.as_deref() == Some(v2.as_str())
    });
    for _ in 0..5 {
        tick(&mut w, 1);
    }
    assert_eq!(phase(&w), "Healthy");
    assert_eq!(
        w.pods(&v1),
        1,
        "the previous stable waits out scaleDownDelaySeconds"
    );
    w.set_image("web:3");
    let v3 = hash_of(&w);
    until(&mut w, 20, "promoted", |w| {
        w.rollout.status.as_ref().unwrap().stable_rs.as_deref() == Some(v3.as_str())
    });
    for _ in 0..3 {
        tick(&mut w, 1);
    }
    assert_eq!(w.pods(&v1), 0, "beyond scaleDownDelayRevisionLimit");
    assert_eq!(w.pods(&v2), 1);
    until(&mut w, 40, "delay over", |w| w.pods(&v2) == 0);
}

#[test]
fn an_aborted_canary_carries_its_scale_down_deadline_while_it_keeps_its_pods() {
    let spec = format!("{ROUTED}steps:\n- setWeight: 50\n- pause: {{}}\n");
    let mut w = settled_world(4, &spec);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    until(&mut w, 20, "paused", |w| phase(w) == "Paused");
    w.abort();
    tick(&mut w, 1);
    tick(&mut w, 1);
    let aborted_at = w
        .rollout
        .status
        .as_ref()
        .unwrap()
        .aborted_at
        .clone()
        .unwrap()
        .0;
    let rs = w
        .replica_sets
        .iter()
        .find(|r| r.hash == v2)
        .unwrap()
        .clone();
    assert_eq!(
        rs.replicas, 2,
        "the canary keeps its pods during abortScaleDownDelaySeconds"
    );
    assert_eq!(
        rs.scale_down_deadline,
        Some(
            aborted_at
                .checked_add(jiff::SignedDuration::from_secs(30))
                .unwrap()
        )
    );
    until(&mut w, 40, "scaled down", |w| w.pods(&v2) == 0);
    let rs = w.replica_sets.iter().find(|r| r.hash == v2).unwrap();
    assert_eq!(
        rs.scale_down_deadline, None,
        "the deadline goes with the pods"
    );
}

#[test]
fn set_weight_zero_then_set_canary_scale_reaches_the_pause() {
    // Argo's TestIstioUpdateInMiddleZeroCanaryReplicas.
    let spec = format!(
        "{ROUTED}steps:\n- setWeight: 0\n- setCanaryScale: {{replicas: 1}}\n- pause: {{}}\n"
    );
    let mut w = settled_world(2, &spec);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    until(&mut w, 20, "paused", |w| phase(w) == "Paused");
    assert_eq!(step(&w), Some(2));
    assert_eq!(w.pods(&v2), 1);
    w.set_image("web:3");
    let v3 = hash_of(&w);
    until(&mut w, 20, "paused on v3", |w| {
        phase(w) == "Paused" && w.pods(&v3) == 1
    });
    until(&mut w, 5, "superseded canary down", |w| w.pods(&v2) == 0);
    assert_eq!(phase(&w), "Paused");
}

#[test]
fn match_traffic_weight_before_a_set_weight_step_does_not_wait_for_the_next_size() {
    let spec = format!(
        "{ROUTED}steps:\n- setCanaryScale: {{replicas: 3}}\n- setCanaryScale: {{matchTrafficWeight: true}}\n- setWeight: 50\n- pause: {{}}\n"
    );
    let mut w = settled_world(4, &spec);
    w.set_image("web:2");
    let v2 = hash_of(&w);
    until(&mut w, 30, "paused", |w| phase(w) == "Paused");
    assert_eq!(step(&w), Some(3));
    assert_eq!(w.pods(&v2), 2);
}

#[test]
fn a_header_route_step_is_passed_only_after_a_plan_carrying_its_route() {
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  managedRoutes: [{name: hdr}]
  istio: {virtualService: {name: web, routes: [primary]}}
steps:
- setWeight: 20
- setHeaderRoute: {name: hdr, match: [{headerName: agent, headerValue: {exact: x}}]}
- pause: {}
"#;
    let mut w = settled_world(4, spec);
    w.set_image("web:2");
    let mut carried_at: Option<i32> = None;
    for _ in 0..20 {
        w.advance(Duration::from_secs(1));
        let recorded = step(&w);
        let p = w.reconcile();
        let routes = p.managed_routes.clone().unwrap_or_default();
        if !routes.header_routes.is_empty() && carried_at.is_none() {
            carried_at = recorded.or(Some(-1));
            assert_eq!(
                p.status.current_step_index,
                Some(1),
                "the first plan carrying the route stops at the header step"
            );
        }
        if p.status.current_step_index >= Some(2) {
            assert!(
                carried_at.is_some(),
                "status passed the header step before any plan carried its route"
            );
            assert!(!routes.header_routes.is_empty());
        }
        if phase(&w) == "Paused" {
            break;
        }
    }
    assert_eq!(phase(&w), "Paused");
    assert_eq!(step(&w), Some(2));
}

/// Argo's `canary-dynamic-stable-scale.yaml` steps, with `extra` in the canary strategy.
fn dynamic_stable_scale_world(extra: &str) -> (World, String, String) {
    let spec = format!(
        "{ROUTED}dynamicStableScale: true\n{extra}steps:\n- setWeight: 25\n- pause: {{}}\n- setWeight: 75\n- pause: {{}}\n"
    );
    let mut w = settled_world(4, &spec);
    let stable = hash_of(&w);
    w.set_image("web:2");
    let canary = hash_of(&w);
    until(&mut w, 20, "paused at 25%", |w| phase(w) == "Paused");
    (w, stable, canary)
}

fn canary_deadline(w: &World, hash: &str) -> Option<jiff::Timestamp> {
    w.replica_sets
        .iter()
        .find(|r| r.hash == hash)
        .and_then(|r| r.scale_down_deadline)
}

fn available(w: &World, hash: &str) -> i32 {
    w.replica_sets
        .iter()
        .find(|r| r.hash == hash)
        .map_or(0, |r| r.available)
}

#[test]
fn dynamic_stable_scale_abort_without_a_delay_shrinks_the_canary_with_its_traffic() {
    // Argo's TestCanaryDynamicStableScale: no abortScaleDownDelaySeconds, so no delay at all.
    let (mut w, stable, canary) = dynamic_stable_scale_world("");
    w.promote();
    until(&mut w, 20, "paused at 75%", |w| {
        phase(w) == "Paused" && step(w) == Some(3)
    });
    assert_eq!((w.pods(&stable), w.pods(&canary)), (1, 3));
    w.pods_ready_per_tick = Some(1);
    w.abort();
    let mut canary_sizes = vec![w.pods(&canary)];
    for _ in 0..20 {
        tick(&mut w, 1);
        let weight = w.traffic.canary_weight.unwrap_or(0);
        assert!(
            w.pods(&canary) >= (weight * 4 + 99) / 100,
            "the canary keeps the pods its traffic needs: {} pods at {weight}%",
            w.pods(&canary)
        );
        assert_eq!(canary_deadline(&w, &canary), None, "no delay, no deadline");
        if canary_sizes.last() != Some(&w.pods(&canary)) {
            canary_sizes.push(w.pods(&canary));
        }
    }
    assert_eq!(
        canary_sizes,
        vec![3, 2, 1, 0],
        "one pod per stable pod ready"
    );
    assert_eq!(w.pods(&stable), 4);
    assert_eq!(w.traffic.canary_weight, Some(0));
}

#[test]
fn an_aborted_canary_gets_its_deadline_once_the_stable_can_take_all_traffic() {
    // Argo's TestCanaryDynamicStableScaleAbortScaleDownDelay.
    let (mut w, stable, canary) = dynamic_stable_scale_world("abortScaleDownDelaySeconds: 10\n");
    w.promote();
    until(&mut w, 20, "paused at 75%", |w| {
        phase(w) == "Paused" && step(w) == Some(3)
    });
    w.pods_ready_per_tick = Some(1);
    w.abort();
    let mut full_at = None;
    for _ in 0..30 {
        tick(&mut w, 1);
        if full_at.is_none() && available(&w, &stable) >= 4 {
            full_at = Some(w.now);
        }
        match full_at {
            None => {
                assert_eq!(w.pods(&canary), 3, "the canary keeps its pods");
                assert_eq!(
                    canary_deadline(&w, &canary),
                    None,
                    "not before the stable is full"
                );
            }
            Some(at) if w.pods(&canary) > 0 => {
                let due = at.checked_add(jiff::SignedDuration::from_secs(10)).unwrap();
                assert_eq!(canary_deadline(&w, &canary), Some(due));
                assert_eq!(w.pods(&canary), 3);
                assert!(w.now < due);
            }
            Some(_) => break,
        }
    }
    assert!(full_at.is_some());
    assert_eq!(w.pods(&canary), 0, "gone at its deadline");
    assert_eq!(w.traffic.canary_weight, Some(0));
}

#[test]
fn dynamic_stable_scale_rollback_holds_the_weight_until_the_stable_can_serve_it() {
    // Argo's TestCanaryDynamicStableScaleRollbackToStable.
    let (mut w, stable, canary) = dynamic_stable_scale_world("");
    assert_eq!((w.pods(&stable), w.pods(&canary)), (3, 1));
    assert_eq!(w.traffic.canary_weight, Some(25));
    w.pods_ready_per_tick = Some(1);
    w.set_image("web:1");
    assert_eq!(hash_of(&w), stable);
    w.reconcile();
    assert_eq!(w.pods(&stable), 4, "the stable scales up at once");
    assert_eq!(
        w.traffic.canary_weight,
        Some(25),
        "held: 3 of 4 stable pods"
    );
    assert_eq!(w.pods(&canary), 1, "the previous canary keeps serving");
    assert_eq!(
        w.traffic.canary_service_hash.as_deref(),
        Some(canary.as_str())
    );
    until(&mut w, 10, "back on stable", |w| {
        w.traffic.canary_weight == Some(0) && w.pods(&canary) == 0
    });
    assert_eq!(w.pods(&stable), 4);
    assert_eq!(
        w.traffic.canary_service_hash.as_deref(),
        Some(stable.as_str())
    );
}
