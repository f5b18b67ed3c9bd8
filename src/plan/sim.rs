//! A deterministic in-memory world for the planner: applies a plan the way the controller and the
//! cluster would, without any I/O. Used by the planner's tests and by `sluice simulate`.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;

use super::{
    AnalysisRunKind, Observation, ObservedAnalysisRun, ObservedReplicaSet, ObservedTraffic,
    ObservedWorkload, Plan, PlannedEvent, plan,
};
use crate::api::common::AnalysisPhase;
use crate::api::rollout::{PauseReason, Rollout};

/// The simulated cluster around one Rollout.
#[derive(Debug, Clone)]
pub struct World {
    /// The Rollout (spec as the user wrote it, status as last written).
    pub rollout: Rollout,
    /// Its ReplicaSets.
    pub replica_sets: Vec<ObservedReplicaSet>,
    /// Its AnalysisRuns.
    pub analysis_runs: Vec<ObservedAnalysisRun>,
    /// Routers and Services.
    pub traffic: ObservedTraffic,
    /// The `workloadRef` Deployment, if any.
    pub workload: Option<ObservedWorkload>,
    /// The clock.
    pub now: Timestamp,
    /// Pods that become available per ReplicaSet per tick (None: all at once).
    pub pods_ready_per_tick: Option<i32>,
    /// Hashes whose pods never become available.
    pub never_ready: BTreeSet<String>,
    /// Every Event published so far.
    pub events: Vec<PlannedEvent>,
    /// Every observed canary weight change, in order.
    pub weight_log: Vec<i32>,
    /// Number of reconciles that changed something.
    pub writes: usize,
}

impl World {
    /// A world holding `rollout` and nothing else yet.
    pub fn new(rollout: Rollout, now: Timestamp) -> Self {
        World {
            rollout,
            replica_sets: Vec::new(),
            analysis_runs: Vec::new(),
            traffic: ObservedTraffic::default(),
            workload: None,
            now,
            pods_ready_per_tick: None,
            never_ready: BTreeSet::new(),
            events: Vec::new(),
            weight_log: Vec::new(),
            writes: 0,
        }
    }

    /// What the controller would observe.
    pub fn observe(&self) -> Observation {
        Observation {
            rollout: self.rollout.clone(),
            template: self.rollout.spec.template.clone(),
            replica_sets: self.replica_sets.clone(),
            analysis_runs: self.analysis_runs.clone(),
            traffic: self.traffic.clone(),
            workload: self.workload.clone(),
            reference_errors: Vec::new(),
        }
    }

    /// Plans and applies once; returns the plan.
    pub fn reconcile(&mut self) -> Plan {
        let p = plan(&self.observe(), self.now);
        self.apply(&p);
        p
    }

    /// Applies a plan: what the controller writes, and what the cluster does at once.
    pub fn apply(&mut self, p: &Plan) {
        let before = (
            self.replica_sets.clone(),
            self.analysis_runs.clone(),
            self.traffic.clone(),
            self.rollout.status.clone(),
        );
        if p.invalid.is_none() {
            let name = self.rollout.metadata.name.clone().unwrap_or_default();
            for d in &p.replica_sets {
                match self.replica_sets.iter_mut().find(|r| r.hash == d.hash) {
                    Some(r) => {
                        r.replicas = d.replicas;
                        r.revision = d.revision;
                        r.scale_down_deadline = d.scale_down_deadline;
                        // Scale-down removes pods at once, unavailable ones first.
                        r.actual = r.actual.min(d.replicas);
                        r.available = r.available.min(d.replicas);
                        r.ready = r.ready.min(d.replicas);
                    }
                    None => self.replica_sets.push(ObservedReplicaSet {
                        name: format!("{name}-{}", d.hash),
                        hash: d.hash.clone(),
                        replicas: d.replicas,
                        actual: 0,
                        ready: 0,
                        available: 0,
                        revision: d.revision,
                        scale_down_deadline: d.scale_down_deadline,
                    }),
                }
            }
            self.replica_sets
                .retain(|r| !p.delete_replica_sets.contains(&r.name));
            if let Some(w) = p.canary_weight
                && self.traffic.canary_weight != Some(w)
            {
                self.traffic.canary_weight = Some(w);
                self.weight_log.push(w);
            }
            if let Some(h) = &p.stable_service_hash {
                self.traffic.stable_service_hash = Some(h.clone());
            }
            if let Some(h) = &p.canary_service_hash {
                self.traffic.canary_service_hash = Some(h.clone());
            }
            for name in &p.terminate_analysis_runs {
                if let Some(r) = self.analysis_runs.iter_mut().find(|r| &r.name == name) {
                    r.terminated = true;
                }
            }
            for req in &p.create_analysis_runs {
                self.analysis_runs.push(ObservedAnalysisRun {
                    name: req.name.clone(),
                    kind: req.kind,
                    pod_hash: req.pod_hash.clone(),
                    phase: AnalysisPhase::Running,
                    message: None,
                    terminated: false,
                });
            }
            if let (Some(w), Some(n)) = (self.workload.as_mut(), p.workload_replicas) {
                w.replicas = n;
            }
        }
        self.rollout.status = Some(p.status.clone());
        self.events.extend(p.events.iter().cloned());
        let after = (
            self.replica_sets.clone(),
            self.analysis_runs.clone(),
            self.traffic.clone(),
            self.rollout.status.clone(),
        );
        if before != after {
            self.writes += 1;
        }
    }

    /// Moves the clock and lets the kubelet start pods.
    pub fn advance(&mut self, by: Duration) {
        self.now = self
            .now
            .checked_add(jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::ZERO))
            .unwrap_or(self.now);
        for r in &mut self.replica_sets {
            r.actual = r.replicas;
            if self.never_ready.contains(&r.hash) {
                r.ready = 0;
                r.available = 0;
                continue;
            }
            let step = self.pods_ready_per_tick.unwrap_or(i32::MAX);
            r.available = r.available.saturating_add(step).min(r.replicas);
            r.ready = r.available;
        }
    }

    /// Reconciles and ticks until nothing changes any more (or `max` rounds). Returns the last
    /// plan.
    pub fn settle(&mut self, tick: Duration, max: usize) -> Plan {
        let mut last = self.reconcile();
        for _ in 0..max {
            let writes = self.writes;
            self.advance(tick);
            last = self.reconcile();
            if self.writes == writes && pods_settled(self) {
                break;
            }
        }
        last
    }

    /// Changes the container image: a new pod template.
    pub fn set_image(&mut self, image: &str) {
        if let Some(c) = self
            .rollout
            .spec
            .template
            .as_mut()
            .and_then(|t| t.spec.as_mut())
            .and_then(|s| s.containers.first_mut())
        {
            c.image = Some(image.to_string());
        }
    }

    fn status_mut(&mut self) -> &mut crate::api::rollout::RolloutStatus {
        self.rollout.status.get_or_insert_with(Default::default)
    }

    /// `sluice promote`: as Argo's CLI does it, a status patch.
    pub fn promote(&mut self) {
        self.rollout.spec.paused = None;
        let st = self.status_mut();
        let inconclusive = st
            .pause_conditions
            .iter()
            .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun);
        if inconclusive {
            st.pause_conditions.clear();
            st.controller_pause = false;
            st.current_step_index = st.current_step_index.map(|i| i + 1);
        } else if !st.pause_conditions.is_empty() {
            st.pause_conditions.clear();
        } else {
            st.current_step_index = st.current_step_index.map(|i| i + 1);
        }
    }

    /// `sluice promote --full`.
    pub fn promote_full(&mut self) {
        self.rollout.spec.paused = None;
        self.status_mut().promote_full = true;
    }

    /// `sluice abort`.
    pub fn abort(&mut self) {
        self.status_mut().abort = true;
    }

    /// `sluice retry`.
    pub fn retry(&mut self) {
        self.status_mut().abort = false;
    }

    /// Sets the phase of the newest non-terminated run of a kind.
    pub fn set_run_phase(&mut self, kind: AnalysisRunKind, phase: AnalysisPhase, message: &str) {
        if let Some(r) = self
            .analysis_runs
            .iter_mut()
            .rev()
            .find(|r| r.kind == kind && !r.terminated)
        {
            r.phase = phase;
            r.message = Some(message.to_string());
        }
    }

    /// Pods of a hash.
    pub fn pods(&self, hash: &str) -> i32 {
        self.replica_sets
            .iter()
            .find(|r| r.hash == hash)
            .map_or(0, |r| r.replicas)
    }
}

fn pods_settled(w: &World) -> bool {
    w.replica_sets.iter().all(|r| {
        r.actual == r.replicas && (w.never_ready.contains(&r.hash) || r.available == r.replicas)
    })
}
