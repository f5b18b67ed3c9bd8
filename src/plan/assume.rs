//! Applying a [`Plan`] to an [`Observation`]: the observation as it will be once the plan's
//! writes landed, before the cluster reacts (no pod starts, no analysis measures).
//!
//! The controller uses it to plan again within one reconcile from what it just wrote; the
//! simulator (`sim::World`) uses it as its only way of applying a plan, so the
//! planner's property tests exercise the same application step the controller relies on.

use super::types::{Observation, ObservedAnalysisRun, ObservedReplicaSet, Plan};
use crate::api::common::AnalysisPhase;

/// What only the writer knows after applying a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssumeFacts {
    /// The canary weight read back from the routers after the write, when they agree (None:
    /// not known, e.g. a router did not take it yet). Used only when the plan sets a weight.
    pub canary_weight: Option<i32>,
}

impl Observation {
    /// Assumes `plan` was applied: ReplicaSets scaled (pods beyond the new size gone at once,
    /// unavailable ones first), created (with no pods yet) and deleted; the weight the routers
    /// took; the Services' selectors; runs terminated, and requested runs created as `Pending`
    /// (once per name); the `workloadRef` Deployment scaled; and the plan's status written.
    /// An invalid plan changes nothing but the status.
    pub fn assume(&mut self, plan: &Plan, facts: AssumeFacts) {
        if plan.invalid.is_none() {
            self.assume_replica_sets(plan);
            self.assume_traffic(plan, facts);
            self.assume_analysis_runs(plan);
            if let (Some(w), Some(n)) = (self.workload.as_mut(), plan.workload_replicas) {
                w.replicas = n;
            }
        }
        self.rollout.status = Some(plan.status.clone());
    }

    fn assume_replica_sets(&mut self, plan: &Plan) {
        let rollout = self.rollout.metadata.name.clone().unwrap_or_default();
        for d in &plan.replica_sets {
            match self.replica_sets.iter_mut().find(|r| r.hash == d.hash) {
                Some(r) => {
                    r.replicas = d.replicas;
                    r.revision = d.revision;
                    r.scale_down_deadline = d.scale_down_deadline;
                    r.available = r.available.min(d.replicas);
                    r.ready = r.ready.min(d.replicas);
                    r.actual = r.actual.min(d.replicas);
                }
                None if d.create => self.replica_sets.push(ObservedReplicaSet {
                    name: format!("{rollout}-{}", d.hash),
                    hash: d.hash.clone(),
                    replicas: d.replicas,
                    actual: 0,
                    ready: 0,
                    available: 0,
                    revision: d.revision,
                    scale_down_deadline: d.scale_down_deadline,
                    // Not known until the API server has it; the newest anyway.
                    created: None,
                }),
                None => {}
            }
        }
        self.replica_sets
            .retain(|r| !plan.delete_replica_sets.contains(&r.name));
    }

    fn assume_traffic(&mut self, plan: &Plan, facts: AssumeFacts) {
        if plan.canary_weight.is_some() {
            self.traffic.canary_weight = facts.canary_weight;
        }
        if let Some(h) = &plan.stable_service_hash {
            self.traffic.stable_service_hash = Some(h.clone());
        }
        if let Some(h) = &plan.canary_service_hash {
            self.traffic.canary_service_hash = Some(h.clone());
        }
    }

    fn assume_analysis_runs(&mut self, plan: &Plan) {
        for name in &plan.terminate_analysis_runs {
            if let Some(r) = self.analysis_runs.iter_mut().find(|r| &r.name == name) {
                r.terminated = true;
            }
        }
        for req in &plan.create_analysis_runs {
            if !self.analysis_runs.iter().any(|r| r.name == req.name) {
                self.analysis_runs.push(ObservedAnalysisRun {
                    name: req.name.clone(),
                    kind: req.kind,
                    pod_hash: req.pod_hash.clone(),
                    phase: AnalysisPhase::Pending,
                    message: None,
                    terminated: false,
                });
            }
        }
    }
}
