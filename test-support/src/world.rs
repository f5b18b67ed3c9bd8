//! The planner's simulated world for tests that need no cluster (planner, its properties, the
//! API rules and the GitOps health views): a Rollout `web` in `default`, settled and ready for
//! an update, and helpers to move time on.

use std::time::Duration;

use jiff::Timestamp;
use sluice::api::rollout::Rollout;
use sluice::plan::sim::World;

pub const T0: &str = "2026-01-01T00:00:00Z";

pub fn t0() -> Timestamp {
    T0.parse().expect("T0 is a timestamp")
}

/// A Rollout from YAML of its `spec.strategy.canary` plus sensible defaults around it.
pub fn rollout(replicas: i32, canary_yaml: &str) -> Rollout {
    crate::rollout::canary(canary_yaml)
        .namespace("default")
        .generation(1)
        .replicas(replicas)
        .build()
}

pub const ROUTED: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx: {stableIngress: web}
"#;

/// A blue-green Rollout from YAML of its `spec.strategy.blueGreen`.
pub fn blue_green_rollout(replicas: i32, blue_green_yaml: &str) -> Rollout {
    crate::rollout::blue_green(blue_green_yaml)
        .namespace("default")
        .generation(1)
        .replicas(replicas)
        .build()
}

/// A blue-green world where version web:1 is deployed, stable and active, ready for an update.
pub fn settled_blue_green_world(replicas: i32, blue_green_yaml: &str) -> World {
    let mut w = World::new(blue_green_rollout(replicas, blue_green_yaml), t0());
    w.settle(Duration::from_secs(1), 50);
    w
}

/// A world where version web:1 is deployed and stable, ready for an update.
pub fn settled_world(replicas: i32, canary_yaml: &str) -> World {
    let mut w = World::new(rollout(replicas, canary_yaml), t0());
    w.settle(Duration::from_secs(1), 50);
    w
}

pub fn hash_of(w: &World) -> String {
    sluice::plan::hash::pod_template_hash(
        w.rollout
            .spec
            .template
            .as_ref()
            .expect("the world's Rollout has a template"),
        None,
    )
}

pub fn phase(w: &World) -> &'static str {
    w.rollout
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("none", |p| p.as_str())
}

pub fn step(w: &World) -> Option<i32> {
    w.rollout.status.as_ref().and_then(|s| s.current_step_index)
}

pub fn tick(w: &mut World, secs: u64) -> sluice::plan::Plan {
    w.advance(Duration::from_secs(secs));
    w.reconcile()
}

/// Ticks until `cond` holds, at most `max` times; panics with the world's state otherwise.
pub fn until(w: &mut World, max: usize, what: &str, cond: impl Fn(&World) -> bool) {
    for _ in 0..max {
        if cond(w) {
            return;
        }
        tick(w, 1);
    }
    assert!(
        cond(w),
        "never reached: {what}\nstatus: {:#?}\nreplica sets: {:#?}\ntraffic: {:?}",
        w.rollout.status,
        w.replica_sets,
        w.traffic
    );
}
