//! A deterministic in-memory world for the planner, without any I/O. Used by the planner's tests
//! and by `sluice demo --simulate`.
//!
//! Applying a plan and the user's actions are not simulated here: a plan is applied with
//! [`Observation::assume`], as the controller assumes its own writes, and an action is the CLI's
//! patch from [`actions::decide`] applied as the API server would. What the world adds is the
//! clock and the rest of the cluster: a kubelet starting pods, an analysis controller picking up
//! new runs, and the runs' results as the test scripts decide.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;

use super::actions::{self, Action, Refusal};
use super::assume::AssumeFacts;
use super::{
    AnalysisRunKind, Observation, ObservedAnalysisRun, ObservedReplicaSet, ObservedTraffic,
    ObservedWorkload, Plan, PlannedEvent, plan,
};
use crate::api::common::AnalysisPhase;
use crate::api::rollout::Rollout;

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
            analysis_templates: None,
            pods: None,
            refused_replica_set: None,
        }
    }

    /// Plans and applies once; returns the plan.
    pub fn reconcile(&mut self) -> Plan {
        let p = plan(&self.observe(), self.now);
        self.apply(&p);
        p
    }

    /// Applies a plan as the controller does (its writes, and nothing the cluster does in
    /// response), with routers that always take the planned weight.
    pub fn apply(&mut self, p: &Plan) {
        let mut cluster = self.observe();
        cluster.assume(
            p,
            AssumeFacts {
                canary_weight: p.canary_weight,
            },
        );
        if cluster.replica_sets != self.replica_sets
            || cluster.analysis_runs != self.analysis_runs
            || cluster.traffic != self.traffic
            || cluster.rollout.status != self.rollout.status
        {
            self.writes += 1;
        }
        if let Some(w) = cluster.traffic.canary_weight
            && self.traffic.canary_weight != Some(w)
        {
            self.weight_log.push(w);
        }
        self.rollout.status = cluster.rollout.status;
        self.replica_sets = cluster.replica_sets;
        self.analysis_runs = cluster.analysis_runs;
        self.traffic = cluster.traffic;
        self.workload = cluster.workload;
        self.events.extend(p.events.iter().cloned());
    }

    /// Moves the clock; the kubelet starts pods and the analysis controller picks up new runs.
    pub fn advance(&mut self, by: Duration) {
        self.now = self
            .now
            .checked_add(jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::ZERO))
            .unwrap_or(self.now);
        for r in &mut self.analysis_runs {
            if r.phase == AnalysisPhase::Pending && !r.terminated {
                r.phase = AnalysisPhase::Running;
            }
        }
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

    /// A user action, as `sluice` sends it: the patch is decided from the Rollout as it is and
    /// applied to it. A refused action changes nothing. The world keeps no ReplicaSet objects,
    /// so `undo` is always refused here.
    pub fn act(&mut self, action: &Action) -> Result<String, Refusal> {
        let patch = actions::decide(&self.rollout, &[], action)?;
        patch.apply_to(&mut self.rollout)?;
        Ok(patch.summary)
    }

    /// `sluice promote` (ignored when refused, as by the CLI).
    pub fn promote(&mut self) {
        let _refused = self.act(&Action::Promote { full: false });
    }

    /// `sluice promote --full` (ignored when refused).
    pub fn promote_full(&mut self) {
        let _refused = self.act(&Action::Promote { full: true });
    }

    /// `sluice abort` (ignored when refused).
    pub fn abort(&mut self) {
        let _refused = self.act(&Action::Abort);
    }

    /// `sluice retry` (ignored when refused).
    pub fn retry(&mut self) {
        let _refused = self.act(&Action::Retry);
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
