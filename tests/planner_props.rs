//! Property tests of the planner over random step lists, replica counts and event orders.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use sluice::api::common::AnalysisPhase;
use sluice::api::rollout::CanaryStep;
use sluice::plan::sim::World;
use sluice::plan::{AnalysisRunKind, plan};

#[derive(Debug, Clone)]
enum StepKind {
    Weight(i32),
    Pause(Option<u8>),
    Analysis,
    Scale(i32),
}

#[derive(Debug, Clone)]
enum Event {
    Tick(u8),
    Promote,
    PromoteFull,
    Abort,
    Retry,
    NewImage,
    RunPhase(u8),
    Pause(bool),
}

fn step_strategy() -> impl Strategy<Value = StepKind> {
    prop_oneof![
        (0..=100i32).prop_map(StepKind::Weight),
        proptest::option::of(0..30u8).prop_map(StepKind::Pause),
        Just(StepKind::Analysis),
        (0..=5i32).prop_map(StepKind::Scale),
    ]
}

fn event_strategy() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (1..20u8).prop_map(Event::Tick),
        1 => Just(Event::Promote),
        1 => Just(Event::PromoteFull),
        1 => Just(Event::Abort),
        1 => Just(Event::Retry),
        1 => Just(Event::NewImage),
        2 => (0..5u8).prop_map(Event::RunPhase),
        1 => any::<bool>().prop_map(Event::Pause),
    ]
}

fn to_steps(kinds: &[StepKind]) -> Vec<CanaryStep> {
    kinds
        .iter()
        .map(|k| {
            let v = match k {
                StepKind::Weight(w) => serde_json::json!({"setWeight": w}),
                StepKind::Pause(Some(d)) => serde_json::json!({"pause": {"duration": d}}),
                StepKind::Pause(None) => serde_json::json!({"pause": {}}),
                StepKind::Analysis => {
                    serde_json::json!({"analysis": {"templates": [{"templateName": "t"}]}})
                }
                StepKind::Scale(r) => serde_json::json!({"setCanaryScale": {"replicas": r}}),
            };
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

fn world(replicas: i32, kinds: &[StepKind], routed: bool, ready_per_tick: Option<i32>) -> World {
    let base = if routed {
        ROUTED
    } else {
        "maxSurge: 1\nmaxUnavailable: 1\n"
    };
    let mut r = rollout(replicas, base);
    let steps = to_steps(kinds);
    let steps = if routed {
        steps
    } else {
        steps
            .into_iter()
            .filter(|s| s.set_canary_scale.is_none())
            .collect()
    };
    r.spec.strategy.canary.as_mut().unwrap().steps = steps;
    let mut w = World::new(r, t0());
    w.settle(Duration::from_secs(1), 50);
    w.pods_ready_per_tick = ready_per_tick;
    w
}

fn max_weight() -> i32 {
    100
}

/// Reconciles at the same instant until nothing changes; the planner must not oscillate.
fn converge(w: &mut World) {
    for _ in 0..25 {
        let writes = w.writes;
        let obs = w.observe();
        let a = plan(&obs, w.now);
        let b = plan(&obs, w.now);
        assert_eq!(a, b, "the planner is deterministic");
        w.apply(&a);
        if w.writes == writes {
            return;
        }
    }
    panic!(
        "no fixed point at one instant: status {:#?}\nreplica sets {:#?}\ntraffic {:?}",
        w.rollout.status, w.replica_sets, w.traffic
    );
}

fn apply_event(w: &mut World, e: &Event, image: &mut u32) {
    match e {
        Event::Tick(s) => w.advance(Duration::from_secs(u64::from(*s))),
        Event::Promote => w.promote(),
        Event::PromoteFull => w.promote_full(),
        Event::Abort => w.abort(),
        Event::Retry => w.retry(),
        Event::NewImage => {
            *image += 1;
            w.set_image(&format!("web:{image}"));
        }
        Event::RunPhase(p) => {
            let phase = [
                AnalysisPhase::Successful,
                AnalysisPhase::Failed,
                AnalysisPhase::Error,
                AnalysisPhase::Inconclusive,
                AnalysisPhase::Running,
            ][usize::from(*p)];
            let kind = w
                .analysis_runs
                .iter()
                .rev()
                .find(|r| !r.terminated)
                .map(|r| r.kind);
            if let Some(kind) = kind {
                w.set_run_phase(kind, phase, "scripted");
            }
        }
        Event::Pause(p) => w.rollout.spec.paused = p.then_some(true),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn weight_stays_within_bounds_and_never_outruns_canary_capacity(
        replicas in 1..10i32,
        kinds in proptest::collection::vec(step_strategy(), 0..8),
        events in proptest::collection::vec(event_strategy(), 0..40),
        ready in proptest::option::of(1..3i32),
    ) {
        let mut w = world(replicas, &kinds, true, ready);
        let mut image = 1;
        for e in &events {
            apply_event(&mut w, e, &mut image);
            let obs = w.observe();
            let p = plan(&obs, w.now);
            if let Some(weight) = p.canary_weight {
                prop_assert!((0..=max_weight()).contains(&weight), "weight {weight}");
                // A positive weight goes only to a canary Service selecting pods that are up.
                let canary_hash = obs.traffic.canary_service_hash.clone().unwrap_or_default();
                let available = obs.replica_sets.iter().find(|r| r.hash == canary_hash).map_or(0, |r| r.available);
                let stable = p.status.stable_rs.clone().unwrap_or_default();
                if weight > 0 && canary_hash != stable {
                    prop_assert!(available > 0, "weight {weight} on a canary with no available pod");
                }
            }
            w.apply(&p);
            converge(&mut w);
        }
    }

    #[test]
    fn an_aborted_rollout_converges_to_weight_zero_and_full_stable(
        replicas in 1..10i32,
        kinds in proptest::collection::vec(step_strategy(), 1..8),
        events in proptest::collection::vec(event_strategy(), 0..30),
        routed in any::<bool>(),
    ) {
        let mut w = world(replicas, &kinds, routed, None);
        let mut image = 1;
        w.set_image("web:2");
        image += 1;
        w.reconcile();
        for e in &events {
            if matches!(e, Event::Retry | Event::NewImage) {
                continue;
            }
            apply_event(&mut w, e, &mut image);
            w.reconcile();
        }
        w.rollout.spec.paused = None;
        w.abort();
        for _ in 0..80 {
            w.advance(Duration::from_secs(1));
            w.reconcile();
        }
        let st = w.rollout.status.clone().unwrap();
        let stable = st.stable_rs.clone().unwrap();
        let current = st.current_pod_hash.clone().unwrap();
        if stable != current {
            prop_assert!(st.abort);
            prop_assert_eq!(st.phase.map(|p| p.as_str()), Some("Degraded"));
            if routed {
                prop_assert_eq!(w.traffic.canary_weight, Some(0));
                prop_assert_eq!(w.traffic.canary_service_hash.clone(), Some(stable.clone()));
            }
            prop_assert_eq!(w.pods(&stable), replicas);
            prop_assert_eq!(w.pods(&current), 0);
        }
    }

    #[test]
    fn the_step_index_never_passes_an_unfinished_step_analysis(
        replicas in 1..6i32,
        kinds in proptest::collection::vec(step_strategy(), 1..8),
        events in proptest::collection::vec(event_strategy(), 0..40),
    ) {
        let mut w = world(replicas, &kinds, true, None);
        let mut image = 1;
        w.set_image("web:2");
        image += 1;
        w.reconcile();
        let analysis_steps: Vec<i32> = kinds.iter().enumerate()
            .filter(|(_, k)| matches!(k, StepKind::Analysis)).map(|(i, _)| i as i32).collect();
        for e in &events {
            // User actions may legitimately skip steps; only check controller-made moves.
            let user_skip = matches!(e, Event::Promote | Event::PromoteFull | Event::NewImage | Event::Retry | Event::Abort);
            apply_event(&mut w, e, &mut image);
            let before = w.rollout.status.as_ref().and_then(|s| s.current_step_index).unwrap_or(0);
            let hash_before = w.rollout.status.as_ref().and_then(|s| s.current_pod_hash.clone());
            let obs = w.observe();
            let p = plan(&obs, w.now);
            let after = p.status.current_step_index.unwrap_or(0);
            let same_version = hash_before == p.status.current_pod_hash;
            if !user_skip && same_version && !p.status.abort && !p.status.promote_full {
                for &i in &analysis_steps {
                    if before <= i && after > i {
                        let current = p.status.current_pod_hash.clone().unwrap();
                        let ok = obs.analysis_runs.iter().any(|r| r.kind == AnalysisRunKind::Step(i)
                            && r.pod_hash == current && !r.terminated
                            && matches!(r.phase, AnalysisPhase::Successful | AnalysisPhase::Inconclusive));
                        prop_assert!(ok, "step {i} passed without a finished analysis: {:?}", obs.analysis_runs);
                    }
                }
            }
            w.apply(&p);
        }
    }

    #[test]
    fn replica_counts_are_never_negative_and_a_settled_world_is_a_fixed_point(
        replicas in 0..10i32,
        kinds in proptest::collection::vec(step_strategy(), 0..6),
        routed in any::<bool>(),
    ) {
        let mut w = world(replicas, &kinds, routed, None);
        w.set_image("web:2");
        for _ in 0..200 {
            w.advance(Duration::from_secs(30));
            w.promote();
            w.reconcile();
            for r in &w.replica_sets {
                prop_assert!(r.replicas >= 0);
            }
        }
        let writes = w.writes;
        w.advance(Duration::from_secs(3600));
        let p = w.reconcile();
        prop_assert_eq!(w.writes, writes, "a settled rollout writes nothing: {:?}", p.events);
        prop_assert_eq!(w.rollout.status.as_ref().unwrap().phase.map(|p| p.as_str()), Some("Healthy"));
    }
}

fn basic_step_strategy() -> impl Strategy<Value = StepKind> {
    prop_oneof![
        (0..=100i32).prop_map(StepKind::Weight),
        proptest::option::of(0..30u8).prop_map(StepKind::Pause),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// The basic canary moves like Argo's rolling update: a plan never takes the pod count
    /// above `replicas + maxSurge` nor the available pods below `replicas - maxUnavailable`
    /// (unless it already was there), and a partial weight never empties either side when
    /// `maxSurge` leaves room for one more pod.
    #[test]
    fn basic_canary_stays_within_surge_and_unavailability(
        replicas in 1..8i32,
        surge in 0..3i32,
        unavailable in 0..3i32,
        kinds in proptest::collection::vec(basic_step_strategy(), 0..6),
        events in proptest::collection::vec(event_strategy(), 0..40),
        ready in proptest::option::of(1..3i32),
    ) {
        let mut r = rollout(replicas, &format!("maxSurge: {surge}\nmaxUnavailable: {unavailable}\n"));
        r.spec.strategy.canary.as_mut().unwrap().steps = to_steps(&kinds);
        let mut w = World::new(r, t0());
        w.settle(Duration::from_secs(1), 50);
        w.pods_ready_per_tick = ready;
        let (max_surge, max_unavailable) = sluice::plan::replicas::surge_and_unavailable(
            Some(&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(surge)),
            Some(&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(unavailable)),
            replicas,
        );
        let mut image = 1;
        for e in &events {
            apply_event(&mut w, e, &mut image);
            let total_before: i32 = w.replica_sets.iter().map(|r| r.replicas).sum();
            let available_before: i32 = w.replica_sets.iter().map(|r| r.available).sum();
            w.reconcile();
            let total: i32 = w.replica_sets.iter().map(|r| r.replicas).sum();
            let available: i32 = w.replica_sets.iter().map(|r| r.available).sum();
            if total_before <= replicas + max_surge {
                prop_assert!(total <= replicas + max_surge,
                    "{total} pods with maxSurge {max_surge}: {:?}", w.replica_sets);
            }
            if available_before >= replicas - max_unavailable {
                prop_assert!(available >= replicas - max_unavailable,
                    "{available} available with maxUnavailable {max_unavailable}: {:?}", w.replica_sets);
            }
            let st = w.rollout.status.clone().unwrap_or_default();
            let paused_mid_way = !st.pause_conditions.is_empty() && !st.abort
                && st.stable_rs != st.current_pod_hash;
            let weight = sluice::plan::last_weight(
                &w.rollout.spec.strategy.canary.as_ref().unwrap().steps,
                st.current_step_index.unwrap_or(0),
                100,
            );
            // Without surge (maxSurge 0) Argo's closest split may be all on one side (1
            // replica at 1%: 0 canary, 1 stable); with surge neither side is emptied.
            if paused_mid_way && max_surge > 0 && weight > 0 && weight < 100
                && w.replica_sets.len() == 2
            {
                let stable = st.stable_rs.clone().unwrap_or_default();
                let current = st.current_pod_hash.clone().unwrap_or_default();
                prop_assert!(w.pods(&stable) > 0 && w.pods(&current) > 0,
                    "weight {weight}: {:?}", w.replica_sets);
            }
        }
    }
}
