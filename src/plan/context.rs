//! What every phase of the planner shares: the values derived once from the observation
//! ([`Ctx`], read-only) and the side outputs any phase may add to ([`Journal`]: Events and the
//! instants to look again). The status being built is passed to each phase explicitly.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::types::{EventType, Observation, ObservedReplicaSet, PlannedEvent};
use crate::api::constants;
use crate::api::rollout::{CanaryStep, CanaryStrategy, PauseCondition, PauseReason, RolloutStatus};

/// Values derived once per plan. `stable_hash` is the stable version as the plan started (a
/// promotion in this plan moves `status.stableRS`, not this).
pub(super) struct Ctx<'a> {
    pub obs: &'a Observation,
    pub now: Timestamp,
    pub canary: &'a CanaryStrategy,
    pub steps: &'a [CanaryStep],
    /// `spec.replicas`, defaulted and never negative.
    pub replicas: i32,
    /// The canary has `trafficRouting` (weights on routers rather than a replica split).
    pub routing: bool,
    pub max_weight: i32,
    pub current_hash: String,
    pub stable_hash: String,
    /// Revision of the current version.
    pub revision: i64,
    /// The template went back to an earlier ReplicaSet within `rollbackWindow`: no steps, no
    /// analysis (see [`super::lifecycle::within_rollback_window`]).
    pub fast_rollback: bool,
}

impl<'a> Ctx<'a> {
    /// Derives the values for `current_hash`, with `status` after the first version (if this is
    /// it) was adopted as stable.
    pub fn new(
        obs: &'a Observation,
        now: Timestamp,
        canary: &'a CanaryStrategy,
        current_hash: String,
        status: &RolloutStatus,
    ) -> Self {
        let max_revision = obs
            .replica_sets
            .iter()
            .map(|r| r.revision)
            .max()
            .unwrap_or(0);
        let revision = match obs.replica_sets.iter().find(|r| r.hash == current_hash) {
            // A returning template (rollback via Git) gets the next revision, as in Argo.
            Some(rs) if rs.revision == max_revision => rs.revision,
            _ => max_revision + 1,
        };
        let stable_hash = status.stable_rs.clone().unwrap_or_default();
        let fast_rollback =
            super::lifecycle::within_rollback_window(obs, &current_hash, &stable_hash);
        Ctx {
            obs,
            now,
            canary,
            steps: &canary.steps,
            replicas: obs
                .rollout
                .spec
                .replicas
                .unwrap_or(constants::DEFAULT_REPLICAS)
                .max(0),
            routing: canary.traffic_routing.is_some(),
            max_weight: canary
                .traffic_routing
                .as_ref()
                .and_then(|t| t.max_traffic_weight)
                .unwrap_or(constants::DEFAULT_MAX_TRAFFIC_WEIGHT),
            stable_hash,
            current_hash,
            revision,
            fast_rollback,
        }
    }

    pub fn n_steps(&self) -> i32 {
        self.steps.len() as i32
    }

    /// An update is under way: the template in force is not the stable version.
    pub fn in_update(&self) -> bool {
        self.current_hash != self.stable_hash
    }

    /// True once `status` names the current version as stable (settled, or promoted by this
    /// plan).
    pub fn current_is_stable(&self, status: &RolloutStatus) -> bool {
        status.stable_rs.as_deref() == Some(self.current_hash.as_str())
    }

    /// The observed ReplicaSet of a pod-template hash.
    pub fn replica_set(&self, hash: &str) -> Option<&'a ObservedReplicaSet> {
        self.obs.replica_sets.iter().find(|r| r.hash == hash)
    }

    /// Available pods of a pod-template hash (0 when it has no ReplicaSet).
    pub fn available(&self, hash: &str) -> i32 {
        self.replica_set(hash).map_or(0, |r| r.available)
    }
}

/// Side outputs of a plan: the Events to publish and the instants at which time alone changes
/// a decision.
#[derive(Default)]
pub(super) struct Journal {
    pub events: Vec<PlannedEvent>,
    wake: Vec<Timestamp>,
}

impl Journal {
    pub fn event(&mut self, type_: EventType, reason: &'static str, message: impl Into<String>) {
        self.events.push(PlannedEvent {
            type_,
            reason,
            message: message.into(),
        });
    }

    /// Asks to be planned again at `at` even if nothing else changes.
    pub fn wake_at(&mut self, at: Timestamp) {
        self.wake.push(at);
    }

    /// The earliest wake-up, as a delay from `now` (at least a second, so a deadline that just
    /// passed does not spin).
    pub fn requeue_after(&self, now: Timestamp) -> Option<Duration> {
        self.wake
            .iter()
            .min()
            .map(|t| duration_between(now, *t).max(Duration::from_secs(1)))
    }
}

/// Adds a controller pause for `reason` (once) and says why.
pub(super) fn hold(
    st: &mut RolloutStatus,
    journal: &mut Journal,
    now: Timestamp,
    reason: PauseReason,
    message: String,
) {
    if !st.pause_conditions.iter().any(|p| p.reason == reason) {
        st.pause_conditions.push(PauseCondition {
            reason,
            start_time: Time(now),
        });
        st.controller_pause = true;
        journal.event(
            EventType::Normal,
            constants::reason::ROLLOUT_PAUSED,
            message,
        );
    }
}

/// Removes every pause condition, and the record that the controller set them.
pub(super) fn clear_pauses(st: &mut RolloutStatus) {
    st.pause_conditions.clear();
    st.controller_pause = false;
}

fn duration_between(from: Timestamp, to: Timestamp) -> Duration {
    let nanos = to.as_nanosecond() - from.as_nanosecond();
    if nanos <= 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(nanos as u64)
    }
}

/// `t + d`, saturating instead of failing (durations come from the spec).
pub(super) fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(t)
}

/// `t + secs` for a count of seconds from the spec (negative counts as 0).
pub(super) fn add_secs(t: Timestamp, secs: i64) -> Timestamp {
    add(t, Duration::from_secs(secs.max(0) as u64))
}
