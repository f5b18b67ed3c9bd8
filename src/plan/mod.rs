//! The rollout planner: a pure function of (observation, now) returning the desired world.
//!
//! No I/O, no clock, no client. The controller observes the cluster, calls [`plan`], applies the
//! result in a safe order and writes the returned status. Everything the planner needs to
//! continue lives in the cluster (the Rollout's status, its ReplicaSets, its AnalysisRuns), so a
//! controller killed at any instant resumes exactly where it was.
//!
//! Safety rules are encoded here, not left to the order of writes:
//! - the canary weight never exceeds what the canary's available pods can serve, and is 0 unless
//!   the canary Service already selects the current version;
//! - on abort the weight goes to 0 first; the canary Service returns to stable only once the
//!   observed weight is 0; the canary is scaled down only after that and after
//!   `abortScaleDownDelaySeconds`;
//! - the stable Service moves to a new version only when that version is fully available, and the
//!   weight returns to 0 only once the stable Service is observed on the new version.

pub mod hash;
pub mod replicas;
pub mod sim;
mod status;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::common::AnalysisPhase;
use crate::api::constants::{self, reason};
use crate::api::rollout::{
    CanaryStep, PauseCondition, PauseReason, Rollout, RolloutAnalysis, RolloutAnalysisRunStatus,
    RolloutStatus, ScaleDownMode, SetHeaderRoute, SetMirrorRoute, TrafficWeights,
    WeightDestination,
};
use crate::api::validation::{self, FieldError};
use replicas::{Pool, apply_min_pods, canary_replicas_for_weight, capacity_weight, rolling_step};

/// A ReplicaSet owned by the Rollout, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedReplicaSet {
    /// Object name.
    pub name: String,
    /// Its `rollouts-pod-template-hash`.
    pub hash: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.replicas`: pods that exist.
    pub actual: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// Revision annotation.
    pub revision: i64,
    /// Scale-down deadline annotation, if any.
    pub scale_down_deadline: Option<Timestamp>,
}

/// Why an AnalysisRun exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnalysisRunKind {
    /// Created by the `analysis` step at this index.
    Step(i32),
    /// The background analysis.
    Background,
}

/// An AnalysisRun owned by the Rollout, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedAnalysisRun {
    /// Object name.
    pub name: String,
    /// Step or background.
    pub kind: AnalysisRunKind,
    /// Pod-template hash it analyses.
    pub pod_hash: String,
    /// Phase (Pending when it has no status yet).
    pub phase: AnalysisPhase,
    /// Status message.
    pub message: Option<String>,
    /// `spec.terminate` is set: the run was stopped and must not be reused.
    pub terminated: bool,
}

/// What the traffic layer looks like right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTraffic {
    /// Canary weight as read back from the routers (None: not known, e.g. not created yet).
    pub canary_weight: Option<i32>,
    /// Pod hash the stable Service selects (None: no hash selector yet).
    pub stable_service_hash: Option<String>,
    /// Pod hash the canary Service selects.
    pub canary_service_hash: Option<String>,
}

/// The Deployment referenced by `workloadRef`, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedWorkload {
    /// `spec.replicas` of the Deployment.
    pub replicas: i32,
    /// `metadata.generation` of the Deployment.
    pub generation: i64,
}

/// Everything the planner looks at.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The Rollout, with its status (which holds the rollout's memory and the user's actions).
    pub rollout: Rollout,
    /// The pod template in force: `spec.template`, or the `workloadRef` Deployment's template
    /// (None when the Deployment could not be found).
    pub template: Option<PodTemplateSpec>,
    /// ReplicaSets owned by the Rollout.
    pub replica_sets: Vec<ObservedReplicaSet>,
    /// AnalysisRuns owned by the Rollout.
    pub analysis_runs: Vec<ObservedAnalysisRun>,
    /// The traffic layer.
    pub traffic: ObservedTraffic,
    /// The `workloadRef` Deployment.
    pub workload: Option<ObservedWorkload>,
    /// Objects the spec references that are missing or unusable (a Service, an Ingress, a
    /// VirtualService), found while observing. Handled like an invalid spec: reported, and
    /// nothing else changes.
    pub reference_errors: Vec<FieldError>,
}

/// Desired state of one ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredReplicaSet {
    /// Pod-template hash.
    pub hash: String,
    /// True when it does not exist yet and must be created from the current template.
    pub create: bool,
    /// Desired `spec.replicas`.
    pub replicas: i32,
    /// Desired revision annotation.
    pub revision: i64,
    /// Desired scale-down deadline annotation (None: no annotation).
    pub scale_down_deadline: Option<Timestamp>,
}

/// An AnalysisRun to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisRunRequest {
    /// Name for the run: `<rollout>-<hash>-<revision>[-<step>]`, with a `.N` suffix after a retry.
    pub name: String,
    /// Step or background.
    pub kind: AnalysisRunKind,
    /// Hash of the version analysed.
    pub pod_hash: String,
    /// Revision of the version analysed.
    pub revision: i64,
    /// The analysis to run (templates and Rollout-side arguments).
    pub analysis: RolloutAnalysis,
}

/// Managed routes wanted on the routers (header and mirror routes of the steps reached so far).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedRoutes {
    /// Header routes, by route name.
    pub header_routes: Vec<SetHeaderRoute>,
    /// Mirror routes, by route name.
    pub mirror_routes: Vec<SetMirrorRoute>,
}

/// Event severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Normal.
    Normal,
    /// Warning.
    Warning,
}

/// An Event to publish on the Rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Severity.
    pub type_: EventType,
    /// Reason (one of [`constants::reason`]).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// The desired world for one Rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The spec is invalid: nothing but the status may change.
    pub invalid: Option<Vec<FieldError>>,
    /// Desired state of every ReplicaSet to keep (including the one to create).
    pub replica_sets: Vec<DesiredReplicaSet>,
    /// Names of old ReplicaSets to delete (beyond `revisionHistoryLimit`).
    pub delete_replica_sets: Vec<String>,
    /// Desired canary weight on the routers (None: no traffic routing, or leave as is).
    pub canary_weight: Option<i32>,
    /// Managed header and mirror routes (None: leave as they are).
    pub managed_routes: Option<ManagedRoutes>,
    /// Hash the stable Service must select (None: leave).
    pub stable_service_hash: Option<String>,
    /// Hash the canary Service must select (None: leave).
    pub canary_service_hash: Option<String>,
    /// AnalysisRuns to create.
    pub create_analysis_runs: Vec<AnalysisRunRequest>,
    /// AnalysisRuns to terminate (`spec.terminate: true`).
    pub terminate_analysis_runs: Vec<String>,
    /// Desired `spec.replicas` of the `workloadRef` Deployment (None: leave).
    pub workload_replicas: Option<i32>,
    /// The new status.
    pub status: RolloutStatus,
    /// Events to publish.
    pub events: Vec<PlannedEvent>,
    /// When to look again even if nothing changes (None: wait for a change).
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// True when the status differs from the one observed.
    pub fn status_changed(&self, observed: &Rollout) -> bool {
        observed.status.as_ref() != Some(&self.status)
    }
}

/// Clock-free helpers to convert between k8s and jiff times.
fn ts(t: &Time) -> Timestamp {
    t.0
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn duration_between(from: Timestamp, to: Timestamp) -> Duration {
    let nanos = to.as_nanosecond() - from.as_nanosecond();
    if nanos <= 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(nanos as u64)
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(t)
}

/// Plans one Rollout.
pub fn plan(obs: &Observation, now: Timestamp) -> Plan {
    Planner::new(obs, now).run()
}

struct Planner<'a> {
    obs: &'a Observation,
    now: Timestamp,
    st: RolloutStatus,
    events: Vec<PlannedEvent>,
    wake: Vec<Timestamp>,
    create_runs: Vec<AnalysisRunRequest>,
    terminate_runs: Vec<String>,
    abort_reason: Option<String>,
    progress_deadline_exceeded: bool,
}

/// Values derived once per plan.
struct Ctx<'a> {
    replicas: i32,
    steps: &'a [CanaryStep],
    routing: bool,
    max_weight: i32,
    current_hash: String,
    stable_hash: String,
    revision: i64,
}

impl<'a> Planner<'a> {
    fn new(obs: &'a Observation, now: Timestamp) -> Self {
        Planner {
            obs,
            now,
            st: obs.rollout.status.clone().unwrap_or_default(),
            events: Vec::new(),
            wake: Vec::new(),
            create_runs: Vec::new(),
            terminate_runs: Vec::new(),
            abort_reason: None,
            progress_deadline_exceeded: false,
        }
    }

    fn event(&mut self, type_: EventType, reason: &'static str, message: impl Into<String>) {
        self.events.push(PlannedEvent {
            type_,
            reason,
            message: message.into(),
        });
    }

    fn requeue_after(&self) -> Option<Duration> {
        self.wake
            .iter()
            .min()
            .map(|t| duration_between(self.now, *t).max(Duration::from_secs(1)))
    }

    fn run(mut self) -> Plan {
        let obs = self.obs;
        let spec = &obs.rollout.spec;
        let mut errors = validation::validate_rollout_spec(spec);
        if spec.workload_ref.is_some() && obs.template.is_none() {
            let name = spec
                .workload_ref
                .as_ref()
                .map(|w| w.name.clone())
                .unwrap_or_default();
            errors.push(FieldError {
                field: "spec.workloadRef.name".into(),
                message: format!("Deployment {name:?} not found in namespace"),
            });
        }
        errors.extend(obs.reference_errors.iter().cloned());
        if !errors.is_empty() {
            return self.invalid(errors);
        }
        let (Some(canary), Some(template)) = (spec.strategy.canary.as_ref(), obs.template.as_ref())
        else {
            // Validation guarantees both; keep the planner total anyway.
            return self.invalid(vec![FieldError {
                field: "spec.strategy.canary".into(),
                message: "is required".into(),
            }]);
        };

        let replicas = spec.replicas.unwrap_or(constants::DEFAULT_REPLICAS).max(0);
        let current_hash = hash::pod_template_hash(template, self.st.collision_count);
        let steps_hash = hash::steps_hash(&canary.steps);
        let max_revision = obs
            .replica_sets
            .iter()
            .map(|r| r.revision)
            .max()
            .unwrap_or(0);
        let existing_current = obs.replica_sets.iter().find(|r| r.hash == current_hash);
        let revision = match existing_current {
            // A returning template (rollback via Git) gets the next revision, as in Argo.
            Some(rs) if rs.revision == max_revision => rs.revision,
            _ => max_revision + 1,
        };

        // First version of this Rollout: it becomes stable at once, without steps.
        let initial = self.st.stable_rs.is_none();
        if initial {
            self.st.stable_rs = Some(current_hash.clone());
            self.st.current_step_index =
                (!canary.steps.is_empty()).then_some(canary.steps.len() as i32);
        }
        let stable_hash = self.st.stable_rs.clone().unwrap_or_default();
        let ctx = Ctx {
            replicas,
            steps: &canary.steps,
            routing: canary.traffic_routing.is_some(),
            max_weight: canary
                .traffic_routing
                .as_ref()
                .and_then(|t| t.max_traffic_weight)
                .unwrap_or(constants::DEFAULT_MAX_TRAFFIC_WEIGHT),
            current_hash: current_hash.clone(),
            stable_hash: stable_hash.clone(),
            revision,
        };
        let n_steps = canary.steps.len() as i32;

        self.clear_invalid_spec();
        self.detect_template_change(&ctx, &steps_hash, n_steps, initial);
        self.handle_retry_and_abort(&ctx);

        let in_update = ctx.current_hash != ctx.stable_hash;
        if in_update && self.st.promote_full && !self.st.abort {
            if self.st.current_step_index != Some(n_steps) && n_steps > 0 {
                self.event(
                    EventType::Normal,
                    reason::PROMOTE_FULL,
                    "promoted fully: skipping the remaining steps",
                );
            }
            self.st.current_step_index = (n_steps > 0).then_some(n_steps);
            self.st.pause_conditions.clear();
            self.st.controller_pause = false;
        }

        let user_paused = spec.paused == Some(true);
        let mut step_idx = self.st.current_step_index.unwrap_or(0).clamp(0, n_steps);

        // Walk the steps.
        if in_update && !self.st.abort && !user_paused {
            step_idx = self.walk_steps(&ctx, canary, step_idx);
        }
        if n_steps > 0 {
            self.st.current_step_index = Some(step_idx);
        }

        // Background analysis.
        if in_update && !self.st.abort && !self.st.promote_full {
            self.background_analysis(&ctx, canary, step_idx);
        }
        if self.abort_reason.is_some() {
            self.start_abort(&ctx);
        }

        // Terminate runs that no longer apply.
        self.terminate_stale_runs(&ctx, step_idx, in_update);

        // Traffic and replicas.
        let weights = self.weights(&ctx, canary, step_idx, in_update);
        let mut rs_plan = self.replica_sets(&ctx, canary, step_idx, in_update, weights.desired);

        // Promotion: all steps done, the new version fully available and carrying all traffic.
        let canary_rs = obs.replica_sets.iter().find(|r| r.hash == ctx.current_hash);
        let canary_available = canary_rs.map_or(0, |r| r.available);
        let steps_done = step_idx >= n_steps;
        let fully_available =
            canary_available >= replicas && canary_rs.is_some_and(|r| r.replicas >= replicas);
        let traffic_at_full =
            !ctx.routing || ctx.replicas == 0 || obs.traffic.canary_weight == Some(ctx.max_weight);
        if in_update
            && !self.st.abort
            && !user_paused
            && steps_done
            && fully_available
            && traffic_at_full
            && self.st.pause_conditions.is_empty()
        {
            self.promote(&ctx, canary, &mut rs_plan);
        }

        // Services.
        let (stable_svc, canary_svc) = self.service_hashes(&ctx, in_update);

        // Managed routes: those of the header/mirror steps reached, while an update is live.
        let managed_routes = canary
            .traffic_routing
            .as_ref()
            .filter(|t| !t.managed_routes.is_empty())
            .map(|_| {
                let live = self.st.stable_rs.as_deref() != Some(ctx.current_hash.as_str())
                    && !self.st.abort;
                let mut routes = ManagedRoutes::default();
                if live {
                    let reached = (self.st.current_step_index.unwrap_or(0).max(0) as usize)
                        .min(canary.steps.len());
                    for step in &canary.steps[..reached] {
                        if let Some(h) = &step.set_header_route {
                            routes.header_routes.retain(|r| r.name != h.name);
                            if !h.match_.is_empty() {
                                routes.header_routes.push(h.clone());
                            }
                        }
                        if let Some(m) = &step.set_mirror_route {
                            routes.mirror_routes.retain(|r| r.name != m.name);
                            if !m.match_.is_empty() {
                                routes.mirror_routes.push(m.clone());
                            }
                        }
                    }
                }
                routes
            });

        let workload_replicas =
            self.workload_replicas(&ctx, spec.workload_ref.as_ref().and_then(|w| w.scale_down));
        let delete = self.prune(&ctx, spec.revision_history_limit, &rs_plan);
        rs_plan.retain(|r| {
            !delete.iter().any(|d| {
                obs.replica_sets
                    .iter()
                    .any(|o| &o.name == d && o.hash == r.hash)
            })
        });

        // Status.
        self.fill_counts(&ctx, &spec.selector);
        self.fill_weights(&ctx, canary, weights.desired, &stable_svc, &canary_svc);
        self.fill_analysis_status(&ctx, step_idx);
        self.st.observed_generation = obs.rollout.metadata.generation;
        let user_paused_now = user_paused;
        self.progress_and_phase(&ctx, user_paused_now, step_idx, n_steps);
        if self.progress_deadline_exceeded
            && spec.progress_deadline_abort == Some(true)
            && !self.st.abort
            && in_update
        {
            self.abort_reason = Some(format!(
                "progress deadline of {}s exceeded",
                spec.progress_deadline_seconds
                    .unwrap_or(constants::DEFAULT_PROGRESS_DEADLINE_SECONDS)
            ));
            self.start_abort(&ctx);
            // Re-plan the weight and the canary scale with the abort in force; the next reconcile
            // continues the abort sequence from the written status.
            let weights = self.weights(&ctx, canary, step_idx, in_update);
            self.fill_weights(&ctx, canary, weights.desired, &stable_svc, &canary_svc);
            self.progress_and_phase(&ctx, user_paused_now, step_idx, n_steps);
            return self.finish(
                rs_plan,
                delete,
                weights.desired,
                managed_routes,
                stable_svc,
                canary_svc,
                workload_replicas,
            );
        }

        self.finish(
            rs_plan,
            delete,
            weights.desired,
            managed_routes,
            stable_svc,
            canary_svc,
            workload_replicas,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        replica_sets: Vec<DesiredReplicaSet>,
        delete: Vec<String>,
        weight: Option<i32>,
        managed_routes: Option<ManagedRoutes>,
        stable_svc: Option<String>,
        canary_svc: Option<String>,
        workload_replicas: Option<i32>,
    ) -> Plan {
        let requeue_after = self.requeue_after();
        Plan {
            invalid: None,
            replica_sets,
            delete_replica_sets: delete,
            canary_weight: weight,
            managed_routes,
            stable_service_hash: stable_svc,
            canary_service_hash: canary_svc,
            create_analysis_runs: self.create_runs,
            terminate_analysis_runs: self.terminate_runs,
            workload_replicas,
            status: self.st,
            events: self.events,
            requeue_after,
        }
    }

    /// An invalid spec: report it and change nothing else.
    fn invalid(mut self, errors: Vec<FieldError>) -> Plan {
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let previous = status::find(&self.st.conditions, constants::condition::INVALID_SPEC)
            .map(|c| c.message.clone());
        if previous.as_deref() != Some(message.as_str()) {
            self.event(EventType::Warning, reason::INVALID_SPEC, message.clone());
        }
        let now = self.now;
        status::set(
            &mut self.st.conditions,
            constants::condition::INVALID_SPEC,
            true,
            reason::INVALID_SPEC,
            &message,
            now,
        );
        self.st.phase = Some(crate::api::rollout::RolloutPhase::Degraded);
        self.st.message = Some(format!("InvalidSpec: {message}"));
        self.st.observed_generation = self.obs.rollout.metadata.generation;
        status::set_kstatus(
            &mut self.st.conditions,
            status::Kstatus::Stalled,
            &message,
            now,
        );
        let replica_sets = self
            .obs
            .replica_sets
            .iter()
            .map(|r| DesiredReplicaSet {
                hash: r.hash.clone(),
                create: false,
                replicas: r.replicas,
                revision: r.revision,
                scale_down_deadline: r.scale_down_deadline,
            })
            .collect();
        Plan {
            invalid: Some(errors),
            replica_sets,
            delete_replica_sets: Vec::new(),
            canary_weight: None,
            managed_routes: None,
            stable_service_hash: None,
            canary_service_hash: None,
            create_analysis_runs: Vec::new(),
            terminate_analysis_runs: Vec::new(),
            workload_replicas: None,
            status: self.st,
            events: self.events,
            requeue_after: None,
        }
    }

    fn clear_invalid_spec(&mut self) {
        if status::find(&self.st.conditions, constants::condition::INVALID_SPEC).is_some() {
            self.st
                .conditions
                .retain(|c| c.type_ != constants::condition::INVALID_SPEC);
            self.event(
                EventType::Normal,
                reason::INVALID_SPEC,
                "spec is valid again",
            );
        }
    }

    fn detect_template_change(&mut self, ctx: &Ctx, steps_hash: &str, n_steps: i32, initial: bool) {
        let previous = self.st.current_pod_hash.clone();
        if previous.as_deref() != Some(ctx.current_hash.as_str()) {
            self.st.current_pod_hash = Some(ctx.current_hash.clone());
            self.st.abort = false;
            self.st.aborted_at = None;
            self.st.promote_full = false;
            self.st.pause_conditions.clear();
            self.st.controller_pause = false;
            self.st.canary.current_step_analysis_run_status = None;
            self.st.canary.current_background_analysis_run_status = None;
            if initial {
                self.event(
                    EventType::Normal,
                    reason::NEW_REPLICA_SET_CREATED,
                    format!(
                        "first revision {}: deployed without steps",
                        ctx.current_hash
                    ),
                );
            } else if ctx.current_hash == ctx.stable_hash {
                self.st.current_step_index = (n_steps > 0).then_some(n_steps);
                self.event(
                    EventType::Normal,
                    reason::ROLLED_BACK,
                    format!(
                        "template is back to the stable version {}: returning to stable without steps",
                        ctx.stable_hash
                    ),
                );
            } else {
                self.st.current_step_index = (n_steps > 0).then_some(0);
                if previous.as_deref().is_some_and(|p| p != ctx.stable_hash) {
                    self.event(
                        EventType::Normal,
                        reason::SUPERSEDED,
                        format!(
                            "update to {} superseded by a new template {}",
                            previous.clone().unwrap_or_default(),
                            ctx.current_hash
                        ),
                    );
                }
                self.event(
                    EventType::Normal,
                    reason::NEW_REPLICA_SET_CREATED,
                    format!(
                        "rolling out revision {} (pod template hash {})",
                        ctx.revision, ctx.current_hash
                    ),
                );
            }
        }
        if self.st.current_step_hash.as_deref() != Some(steps_hash) {
            let had = self.st.current_step_hash.is_some();
            self.st.current_step_hash = Some(steps_hash.to_string());
            if had
                && ctx.current_hash != ctx.stable_hash
                && previous.as_deref() == Some(ctx.current_hash.as_str())
            {
                // Steps edited in the middle of an update: start them again.
                self.st.current_step_index = (n_steps > 0).then_some(0);
                self.st.pause_conditions.clear();
                self.st.controller_pause = false;
                self.event(
                    EventType::Normal,
                    reason::REPLICA_SET_UPDATED,
                    "steps changed during the update: restarting from step 0",
                );
            }
        }
    }

    fn handle_retry_and_abort(&mut self, ctx: &Ctx) {
        if !self.st.abort && self.st.aborted_at.is_some() {
            self.st.aborted_at = None;
            self.st.current_step_index = (!ctx.steps.is_empty()).then_some(0);
            self.st.pause_conditions.clear();
            self.st.controller_pause = false;
            self.st.canary.current_step_analysis_run_status = None;
            self.st.canary.current_background_analysis_run_status = None;
            self.event(
                EventType::Normal,
                reason::ROLLOUT_RETRY,
                "retrying the update from step 0",
            );
        }
        if self.st.abort && self.st.aborted_at.is_none() {
            if ctx.current_hash == ctx.stable_hash {
                // Nothing to abort: the Rollout is at its stable version.
                self.st.abort = false;
            } else {
                self.abort_reason = Some("aborted by the user".to_string());
            }
        }
    }

    fn start_abort(&mut self, ctx: &Ctx) {
        if self.st.aborted_at.is_some() {
            return;
        }
        let why = self.abort_reason.clone().unwrap_or_default();
        let step = self.st.current_step_index.unwrap_or(0);
        self.st.abort = true;
        self.st.aborted_at = Some(time(self.now));
        self.st.pause_conditions.clear();
        self.st.controller_pause = false;
        let n = ctx.steps.len();
        let message = if n > 0 {
            format!("aborted at step {} of {n}: {why}", step + 1)
        } else {
            format!("aborted: {why}")
        };
        self.event(EventType::Warning, reason::ROLLOUT_ABORTED, message.clone());
        self.st.message = Some(message);
        self.st.current_step_index = (n > 0).then_some(0);
    }

    fn run_for(&self, ctx: &Ctx, kind: AnalysisRunKind) -> Option<&'a ObservedAnalysisRun> {
        self.obs
            .analysis_runs
            .iter()
            .find(|r| r.kind == kind && r.pod_hash == ctx.current_hash && !r.terminated)
    }

    fn request_run(&mut self, ctx: &Ctx, kind: AnalysisRunKind, analysis: &RolloutAnalysis) {
        if self.create_runs.iter().any(|r| r.kind == kind) {
            return;
        }
        let rollout = self.obs.rollout.metadata.name.clone().unwrap_or_default();
        let base = match kind {
            AnalysisRunKind::Step(i) => {
                format!("{rollout}-{}-{}-{i}", ctx.current_hash, ctx.revision)
            }
            AnalysisRunKind::Background => {
                format!("{rollout}-{}-{}", ctx.current_hash, ctx.revision)
            }
        };
        let taken = |name: &str| self.obs.analysis_runs.iter().any(|r| r.name == name);
        let mut name = base.clone();
        let mut n = 1;
        while taken(&name) {
            name = format!("{base}.{n}");
            n += 1;
        }
        self.create_runs.push(AnalysisRunRequest {
            name,
            kind,
            pod_hash: ctx.current_hash.clone(),
            revision: ctx.revision,
            analysis: analysis.clone(),
        });
    }

    fn pause(&mut self, reason_: PauseReason, message: String) {
        if !self.st.pause_conditions.iter().any(|p| p.reason == reason_) {
            self.st.pause_conditions.push(PauseCondition {
                reason: reason_,
                start_time: time(self.now),
            });
            self.st.controller_pause = true;
            self.event(EventType::Normal, reason::ROLLOUT_PAUSED, message);
        }
    }

    /// Advances through completed steps; returns the index of the first unfinished one.
    fn walk_steps(
        &mut self,
        ctx: &Ctx,
        canary: &crate::api::rollout::CanaryStrategy,
        mut idx: i32,
    ) -> i32 {
        let n = ctx.steps.len() as i32;
        while idx < n {
            let step = &ctx.steps[idx as usize];
            let done = self.step_done(ctx, canary, idx, step);
            if !done || self.abort_reason.is_some() {
                break;
            }
            self.st.pause_conditions.clear();
            self.st.controller_pause = false;
            self.event(
                EventType::Normal,
                reason::ROLLOUT_STEP_COMPLETED,
                format!(
                    "step {} of {n} completed ({})",
                    idx + 1,
                    describe_step(step)
                ),
            );
            idx += 1;
        }
        idx
    }

    fn step_done(
        &mut self,
        ctx: &Ctx,
        canary: &crate::api::rollout::CanaryStrategy,
        idx: i32,
        step: &CanaryStep,
    ) -> bool {
        let obs = self.obs;
        if let Some(w) = step.set_weight {
            let canary_rs = obs.replica_sets.iter().find(|r| r.hash == ctx.current_hash);
            if ctx.routing {
                let want = desired_canary_replicas(ctx, canary, idx + 1, w);
                let ready = canary_rs.is_some_and(|r| r.available >= want && r.replicas >= want);
                let svc = obs.traffic.canary_service_hash.as_deref()
                    == Some(ctx.current_hash.as_str())
                    || w == 0;
                return ready && svc && obs.traffic.canary_weight == Some(w);
            }
            // Basic canary: the replica split has reached its target.
            let (new_target, stable_target) = basic_targets(ctx.replicas, w);
            let stable_rs = obs.replica_sets.iter().find(|r| r.hash == ctx.stable_hash);
            let others: i32 = obs
                .replica_sets
                .iter()
                .filter(|r| r.hash != ctx.stable_hash && r.hash != ctx.current_hash)
                .map(|r| r.replicas)
                .sum();
            return canary_rs
                .is_some_and(|r| r.replicas == new_target && r.available >= new_target)
                && stable_rs.map_or(stable_target == 0, |r| r.replicas == stable_target)
                && others == 0;
        }
        if let Some(pause) = &step.pause {
            let existing = self
                .st
                .pause_conditions
                .iter()
                .find(|p| p.reason == PauseReason::CanaryPauseStep)
                .cloned();
            match existing {
                Some(cond) => {
                    let Some(d) = pause.duration.as_ref().and_then(|d| d.to_std().ok()) else {
                        return false;
                    };
                    let end = add(ts(&cond.start_time), d);
                    if self.now >= end {
                        return true;
                    }
                    self.wake.push(end);
                    false
                }
                // The user cleared the pause condition (promote) while the controller held it.
                None if self.st.controller_pause => true,
                None => {
                    let d = pause.duration.as_ref().and_then(|d| d.to_std().ok());
                    if d == Some(Duration::ZERO) {
                        return true;
                    }
                    let msg = match (&pause.duration, d) {
                        (Some(text), Some(d)) => {
                            self.wake.push(add(self.now, d));
                            format!("paused at step {} for {text}", idx + 1)
                        }
                        _ => format!("paused at step {} until promoted", idx + 1),
                    };
                    self.pause(PauseReason::CanaryPauseStep, msg);
                    false
                }
            }
        } else if let Some(scale) = &step.set_canary_scale {
            let _ = scale;
            let weight = last_weight(ctx.steps, idx + 1, ctx.max_weight);
            let want = desired_canary_replicas(ctx, canary, idx + 1, weight);
            obs.replica_sets
                .iter()
                .find(|r| r.hash == ctx.current_hash)
                .is_some_and(|r| r.replicas == want && r.available >= want)
        } else if let Some(analysis) = &step.analysis {
            let kind = AnalysisRunKind::Step(idx);
            match self.run_for(ctx, kind) {
                None => {
                    self.request_run(ctx, kind, analysis);
                    false
                }
                Some(run) => match run.phase {
                    AnalysisPhase::Successful => true,
                    AnalysisPhase::Failed | AnalysisPhase::Error => {
                        self.abort_reason = Some(format!(
                            "step analysis {} {}: {}",
                            run.name,
                            run.phase.as_str().to_lowercase(),
                            run.message.clone().unwrap_or_default()
                        ));
                        false
                    }
                    AnalysisPhase::Inconclusive => {
                        let paused = self
                            .st
                            .pause_conditions
                            .iter()
                            .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun);
                        if !paused && self.st.controller_pause {
                            // The user promoted past the inconclusive analysis.
                            return true;
                        }
                        self.pause(
                            PauseReason::InconclusiveAnalysisRun,
                            format!(
                                "analysis {} inconclusive at step {}: promote to continue or abort",
                                run.name,
                                idx + 1
                            ),
                        );
                        false
                    }
                    AnalysisPhase::Pending | AnalysisPhase::Running => false,
                },
            }
        } else {
            // setHeaderRoute / setMirrorRoute: applied with the plan's managed routes.
            true
        }
    }

    fn background_analysis(
        &mut self,
        ctx: &Ctx,
        canary: &crate::api::rollout::CanaryStrategy,
        idx: i32,
    ) {
        let Some(bg) = &canary.analysis else { return };
        if idx < bg.starting_step.unwrap_or(0) {
            return;
        }
        match self.run_for(ctx, AnalysisRunKind::Background) {
            None => self.request_run(ctx, AnalysisRunKind::Background, &bg.analysis),
            Some(run) => {
                match run.phase {
                    AnalysisPhase::Failed | AnalysisPhase::Error if self.abort_reason.is_none() => {
                        self.abort_reason = Some(format!(
                            "background analysis {} {}: {}",
                            run.name,
                            run.phase.as_str().to_lowercase(),
                            run.message.clone().unwrap_or_default()
                        ));
                    }
                    AnalysisPhase::Inconclusive => {
                        let paused = self
                            .st
                            .pause_conditions
                            .iter()
                            .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun);
                        if !paused && !self.st.controller_pause {
                            self.pause(
                            PauseReason::InconclusiveAnalysisRun,
                            format!("background analysis {} inconclusive: promote to continue or abort", run.name),
                        );
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn terminate_stale_runs(&mut self, ctx: &Ctx, idx: i32, in_update: bool) {
        let settled = self.st.stable_rs.as_deref() == Some(ctx.current_hash.as_str());
        for run in &self.obs.analysis_runs {
            if run.terminated || run.phase.is_completed() && run.pod_hash != ctx.current_hash {
                continue;
            }
            let stale = run.pod_hash != ctx.current_hash
                || self.st.abort
                || !in_update
                || settled
                || self.st.promote_full
                || matches!(run.kind, AnalysisRunKind::Step(i) if i != idx);
            let finished_ok =
                run.phase.is_completed() && !self.st.abort && run.pod_hash == ctx.current_hash;
            if stale && !finished_ok {
                self.terminate_runs.push(run.name.clone());
            }
        }
    }

    fn weights(
        &mut self,
        ctx: &Ctx,
        canary: &crate::api::rollout::CanaryStrategy,
        idx: i32,
        in_update: bool,
    ) -> Weights {
        if !ctx.routing {
            return Weights { desired: None };
        }
        let obs = self.obs;
        let observed = obs.traffic.canary_weight;
        let settled = self.st.stable_rs.as_deref() == Some(ctx.current_hash.as_str());
        if self.st.abort || !in_update || settled {
            // Back to stable. After a promotion the stable Service must select the new version
            // before the canary gives its traffic back.
            let stable_ok =
                obs.traffic.stable_service_hash.as_deref() == self.st.stable_rs.as_deref();
            if settled && in_update_was_just_promoted(&self.st, ctx) && !stable_ok {
                return Weights {
                    desired: Some(observed.unwrap_or(ctx.max_weight)),
                };
            }
            if canary.dynamic_stable_scale == Some(true) && self.st.abort {
                // Give traffic back only as fast as the stable pods can take it.
                let stable = obs.replica_sets.iter().find(|r| r.hash == ctx.stable_hash);
                let cap = capacity_weight(
                    stable.map_or(0, |r| r.available),
                    ctx.replicas,
                    ctx.max_weight,
                );
                let floor = (ctx.max_weight - cap).max(0).min(observed.unwrap_or(0));
                return Weights {
                    desired: Some(floor),
                };
            }
            return Weights { desired: Some(0) };
        }
        let target = last_weight(ctx.steps, idx, ctx.max_weight);
        let canary_rs = obs.replica_sets.iter().find(|r| r.hash == ctx.current_hash);
        let want = desired_canary_replicas(ctx, canary, idx, target);
        let available = canary_rs.map_or(0, |r| r.available);
        let mut w = if available >= want && (want > 0 || ctx.replicas == 0) {
            target
        } else {
            capacity_weight(available, ctx.replicas, ctx.max_weight).min(target)
        };
        if obs.traffic.canary_service_hash.as_deref() != Some(ctx.current_hash.as_str()) {
            // The canary Service still selects another version: no traffic until it is switched.
            w = 0;
        }
        if canary.dynamic_stable_scale == Some(true) {
            let stable = obs.replica_sets.iter().find(|r| r.hash == ctx.stable_hash);
            let cap = capacity_weight(
                stable.map_or(0, |r| r.available),
                ctx.replicas,
                ctx.max_weight,
            );
            w = w.max(ctx.max_weight - cap).min(ctx.max_weight);
            if available == 0 {
                w = w.min(observed.unwrap_or(0));
            }
        }
        Weights {
            desired: Some(w.clamp(0, ctx.max_weight)),
        }
    }

    #[allow(clippy::too_many_lines)]
    fn replica_sets(
        &mut self,
        ctx: &Ctx,
        canary: &crate::api::rollout::CanaryStrategy,
        idx: i32,
        in_update: bool,
        weight: Option<i32>,
    ) -> Vec<DesiredReplicaSet> {
        let obs = self.obs;
        let mut out: Vec<DesiredReplicaSet> = Vec::new();
        let current = obs.replica_sets.iter().find(|r| r.hash == ctx.current_hash);
        let stable = obs.replica_sets.iter().find(|r| r.hash == ctx.stable_hash);
        let others: Vec<&ObservedReplicaSet> = obs
            .replica_sets
            .iter()
            .filter(|r| r.hash != ctx.current_hash && r.hash != ctx.stable_hash)
            .collect();
        let push = |out: &mut Vec<DesiredReplicaSet>,
                    hash: &str,
                    existing: Option<&ObservedReplicaSet>,
                    replicas: i32,
                    revision: i64,
                    deadline: Option<Timestamp>| {
            out.push(DesiredReplicaSet {
                hash: hash.to_string(),
                create: existing.is_none(),
                replicas,
                revision,
                scale_down_deadline: deadline,
            });
        };

        if !in_update
            || self.st.stable_rs.as_deref() == Some(ctx.current_hash.as_str())
                && current.map(|r| r.hash.as_str()) == Some(ctx.stable_hash.as_str())
        {
            // Settled: the current version is stable and runs at full size.
            let replicas =
                apply_min_pods(ctx.replicas, canary.min_pods_per_replica_set, ctx.replicas);
            push(
                &mut out,
                &ctx.current_hash,
                current,
                replicas,
                ctx.revision,
                None,
            );
            self.old_replica_sets(canary, &others, &mut out);
            return out;
        }

        if ctx.routing {
            let max = ctx.max_weight;
            let canary_replicas = if self.st.abort {
                let delay = canary
                    .abort_scale_down_delay_seconds
                    .unwrap_or(constants::DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS);
                let held = current.map_or(0, |r| r.replicas);
                if delay == 0 {
                    held
                } else {
                    let at = self.st.aborted_at.as_ref().map(ts).unwrap_or(self.now);
                    let due = add(at, Duration::from_secs(delay as u64));
                    let traffic_gone = obs.traffic.canary_weight.unwrap_or(0) == 0
                        && obs.traffic.canary_service_hash.as_deref()
                            != Some(ctx.current_hash.as_str());
                    if self.now >= due && traffic_gone {
                        0
                    } else {
                        if self.now < due {
                            self.wake.push(due);
                        }
                        held
                    }
                }
            } else {
                let target = last_weight(ctx.steps, idx, max);
                desired_canary_replicas(ctx, canary, idx, target)
            };
            let stable_replicas = if canary.dynamic_stable_scale == Some(true) && !self.st.abort {
                let observed = obs.traffic.canary_weight.unwrap_or(0);
                let canary_share = weight.unwrap_or(0).max(observed);
                let stable_w = max - canary_share;
                apply_min_pods(
                    canary_replicas_for_weight(ctx.replicas, stable_w, max),
                    canary.min_pods_per_replica_set,
                    ctx.replicas,
                )
            } else {
                ctx.replicas
            };
            let stable_revision = stable.map_or(0, |r| r.revision);
            if stable.is_some() {
                push(
                    &mut out,
                    &ctx.stable_hash,
                    stable,
                    stable_replicas,
                    stable_revision,
                    None,
                );
            }
            push(
                &mut out,
                &ctx.current_hash,
                current,
                canary_replicas,
                ctx.revision,
                None,
            );
            self.old_replica_sets(canary, &others, &mut out);
            return out;
        }

        // Basic canary: a replica split moved like a rolling update.
        let weight = if self.st.abort {
            0
        } else {
            last_weight(ctx.steps, idx, 100)
        };
        let (new_target, stable_target) = basic_targets(ctx.replicas, weight);
        let surge =
            validation::resolve_int_or_percent(canary.max_surge.as_ref(), ctx.replicas, true)
                .unwrap_or(1);
        let unavailable = validation::resolve_int_or_percent(
            canary.max_unavailable.as_ref(),
            ctx.replicas,
            false,
        )
        .unwrap_or(0);
        let (surge, unavailable) = if surge == 0 && unavailable == 0 {
            (1, 0)
        } else {
            (surge, unavailable)
        };
        let mut pools: Vec<(String, Option<&ObservedReplicaSet>, Pool, i64)> = Vec::new();
        let mut olds = others.clone();
        olds.sort_by_key(|r| r.revision);
        for r in olds {
            pools.push((
                r.hash.clone(),
                Some(r),
                Pool {
                    current: r.replicas,
                    available: r.available,
                    target: 0,
                },
                r.revision,
            ));
        }
        // When aborting, the canary goes first; otherwise the stable does.
        let stable_pool = stable.map(|r| {
            (
                r.hash.clone(),
                Some(r),
                Pool {
                    current: r.replicas,
                    available: r.available,
                    target: stable_target,
                },
                r.revision,
            )
        });
        let new_pool = (
            ctx.current_hash.clone(),
            current,
            Pool {
                current: current.map_or(0, |r| r.replicas),
                available: current.map_or(0, |r| r.available),
                target: new_target,
            },
            ctx.revision,
        );
        if self.st.abort {
            pools.push(new_pool);
            pools.extend(stable_pool);
        } else {
            pools.extend(stable_pool);
            pools.push(new_pool);
        }
        let counts = rolling_step(
            &pools.iter().map(|p| p.2).collect::<Vec<_>>(),
            ctx.replicas,
            surge,
            unavailable,
        );
        for ((hash, existing, _, revision), count) in pools.into_iter().zip(counts) {
            push(&mut out, &hash, existing, count, revision, None);
        }
        out
    }

    /// Old ReplicaSets (neither stable nor current) with traffic routing or when settled:
    /// scaled to zero, unless a Service still selects them or their scale-down delay is running.
    fn old_replica_sets(
        &mut self,
        canary: &crate::api::rollout::CanaryStrategy,
        others: &[&ObservedReplicaSet],
        out: &mut Vec<DesiredReplicaSet>,
    ) {
        let obs = self.obs;
        let mut waiting: Vec<(&ObservedReplicaSet, Timestamp)> = Vec::new();
        for r in others {
            let selected = obs.traffic.stable_service_hash.as_deref() == Some(r.hash.as_str())
                || obs.traffic.canary_service_hash.as_deref() == Some(r.hash.as_str());
            let weight_on_it = selected
                && obs.traffic.canary_service_hash.as_deref() == Some(r.hash.as_str())
                && obs.traffic.canary_weight.unwrap_or(0) > 0;
            let keep = match r.scale_down_deadline {
                Some(deadline) if self.now < deadline => {
                    waiting.push((r, deadline));
                    true
                }
                _ => selected || weight_on_it,
            };
            let replicas = if keep { r.replicas } else { 0 };
            out.push(DesiredReplicaSet {
                hash: r.hash.clone(),
                create: false,
                replicas,
                revision: r.revision,
                scale_down_deadline: if replicas == 0 {
                    None
                } else {
                    r.scale_down_deadline
                },
            });
        }
        // Keep at most scaleDownDelayRevisionLimit old ReplicaSets up while they wait.
        if let Some(limit) = canary.scale_down_delay_revision_limit {
            waiting.sort_by_key(|(r, _)| std::cmp::Reverse(r.revision));
            for (r, _) in waiting.iter().skip(limit.max(0) as usize) {
                if let Some(d) = out.iter_mut().find(|d| d.hash == r.hash) {
                    d.replicas = 0;
                    d.scale_down_deadline = None;
                }
            }
            waiting.truncate(limit.max(0) as usize);
        }
        for (_, deadline) in waiting {
            self.wake.push(deadline);
        }
    }

    fn promote(
        &mut self,
        ctx: &Ctx,
        canary: &crate::api::rollout::CanaryStrategy,
        rs_plan: &mut [DesiredReplicaSet],
    ) {
        let previous = ctx.stable_hash.clone();
        self.st.stable_rs = Some(ctx.current_hash.clone());
        self.st.promote_full = false;
        self.st.pause_conditions.clear();
        self.st.controller_pause = false;
        self.event(
            EventType::Normal,
            reason::ROLLOUT_COMPLETED,
            format!(
                "promoted revision {} ({}): it is now stable",
                ctx.revision, ctx.current_hash
            ),
        );
        if ctx.routing {
            let delay = canary
                .scale_down_delay_seconds
                .unwrap_or(constants::DEFAULT_SCALE_DOWN_DELAY_SECONDS);
            let deadline = add(self.now, Duration::from_secs(delay.max(0) as u64));
            if let Some(d) = rs_plan.iter_mut().find(|d| d.hash == previous) {
                d.scale_down_deadline = Some(deadline);
                if canary.dynamic_stable_scale == Some(true) {
                    d.replicas = 0;
                    d.scale_down_deadline = None;
                } else {
                    self.wake.push(deadline);
                }
            }
        }
        if let Some(d) = rs_plan.iter_mut().find(|d| d.hash == ctx.current_hash) {
            d.replicas = d.replicas.max(ctx.replicas);
        }
    }

    fn service_hashes(&self, ctx: &Ctx, in_update: bool) -> (Option<String>, Option<String>) {
        let obs = self.obs;
        let stable = self.st.stable_rs.clone().unwrap_or_default();
        let avail = |hash: &str| {
            obs.replica_sets
                .iter()
                .find(|r| r.hash == hash)
                .map_or(0, |r| r.available)
        };
        // The stable Service only moves to pods that can serve.
        let stable_svc = if avail(&stable) > 0 || ctx.replicas == 0 {
            Some(stable.clone())
        } else {
            obs.traffic.stable_service_hash.clone()
        };
        let live_canary = in_update && !self.st.abort && stable != ctx.current_hash;
        let canary_svc = if live_canary {
            if avail(&ctx.current_hash) > 0 || ctx.replicas == 0 {
                Some(ctx.current_hash.clone())
            } else {
                obs.traffic.canary_service_hash.clone()
            }
        } else if ctx.routing && obs.traffic.canary_weight.unwrap_or(0) > 0 {
            // Abort or rollback: traffic leaves the canary before its Service does.
            obs.traffic.canary_service_hash.clone()
        } else {
            Some(stable)
        };
        (stable_svc, canary_svc)
    }

    fn workload_replicas(&self, ctx: &Ctx, mode: Option<ScaleDownMode>) -> Option<i32> {
        let workload = self.obs.workload.as_ref()?;
        let rs = self
            .obs
            .replica_sets
            .iter()
            .find(|r| r.hash == ctx.current_hash);
        let available: i32 = rs.map_or(0, |r| r.available);
        let desired = match mode? {
            ScaleDownMode::Never => return None,
            ScaleDownMode::Onsuccess => {
                let healthy = self.st.stable_rs.as_deref() == Some(ctx.current_hash.as_str())
                    && available >= ctx.replicas;
                if healthy { 0 } else { workload.replicas }
            }
            ScaleDownMode::Progressively => (ctx.replicas - available).clamp(0, workload.replicas),
        };
        (desired != workload.replicas).then_some(desired)
    }

    fn prune(&self, ctx: &Ctx, limit: Option<i32>, plan: &[DesiredReplicaSet]) -> Vec<String> {
        let limit = limit
            .unwrap_or(constants::DEFAULT_REVISION_HISTORY_LIMIT)
            .max(0) as usize;
        let stable = self.st.stable_rs.clone().unwrap_or_default();
        let mut idle: Vec<&ObservedReplicaSet> = self
            .obs
            .replica_sets
            .iter()
            .filter(|r| r.hash != ctx.current_hash && r.hash != stable && r.hash != ctx.stable_hash)
            .filter(|r| r.replicas == 0 && r.actual == 0)
            .filter(|r| plan.iter().any(|d| d.hash == r.hash && d.replicas == 0))
            .collect();
        idle.sort_by_key(|r| std::cmp::Reverse(r.revision));
        idle.iter().skip(limit).map(|r| r.name.clone()).collect()
    }

    fn fill_counts(
        &mut self,
        ctx: &Ctx,
        selector: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    ) {
        let rs = &self.obs.replica_sets;
        let actual: i32 = rs.iter().map(|r| r.actual).sum();
        self.st.replicas = Some(actual);
        self.st.hpa_replicas = Some(actual);
        self.st.updated_replicas = Some(
            rs.iter()
                .filter(|r| r.hash == ctx.current_hash)
                .map(|r| r.actual)
                .sum(),
        );
        self.st.ready_replicas = Some(rs.iter().map(|r| r.ready).sum());
        self.st.available_replicas = Some(rs.iter().map(|r| r.available).sum());
        if let Some(sel) = selector.as_ref().and_then(|s| s.match_labels.as_ref()) {
            let text = sel
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            self.st.selector = Some(text);
        }
    }

    fn fill_weights(
        &mut self,
        ctx: &Ctx,
        canary: &crate::api::rollout::CanaryStrategy,
        weight: Option<i32>,
        stable_svc: &Option<String>,
        canary_svc: &Option<String>,
    ) {
        let Some(w) = weight else {
            self.st.canary.weights = None;
            return;
        };
        let previous = self.st.canary.weights.as_ref().map(|x| x.canary.weight);
        if previous != Some(w) && previous.is_some() {
            self.event(
                EventType::Normal,
                reason::TRAFFIC_WEIGHT_UPDATED,
                format!(
                    "canary weight {} → {w} (of {})",
                    previous.unwrap_or(0),
                    ctx.max_weight
                ),
            );
        }
        let verified = self.st.canary.weights.as_ref().and_then(|x| x.verified);
        self.st.canary.weights = Some(TrafficWeights {
            canary: WeightDestination {
                weight: w,
                service_name: canary.canary_service.clone(),
                pod_template_hash: canary_svc.clone(),
            },
            stable: WeightDestination {
                weight: ctx.max_weight - w,
                service_name: canary.stable_service.clone(),
                pod_template_hash: stable_svc.clone(),
            },
            additional: Vec::new(),
            // Set by the controller after reading the weight back from the routers.
            verified: if previous == Some(w) { verified } else { None },
        });
    }

    fn fill_analysis_status(&mut self, ctx: &Ctx, idx: i32) {
        let summary = |r: &ObservedAnalysisRun| RolloutAnalysisRunStatus {
            name: r.name.clone(),
            status: r.phase,
            message: r.message.clone(),
        };
        let step_run = self.obs.analysis_runs.iter().find(|r| {
            r.kind == AnalysisRunKind::Step(idx) && r.pod_hash == ctx.current_hash && !r.terminated
        });
        let new_step = step_run.map(summary).or_else(|| {
            self.create_runs
                .iter()
                .find(|r| r.kind == AnalysisRunKind::Step(idx))
                .map(|r| RolloutAnalysisRunStatus {
                    name: r.name.clone(),
                    status: AnalysisPhase::Pending,
                    message: None,
                })
        });
        if new_step.is_some() {
            let before = self
                .st
                .canary
                .current_step_analysis_run_status
                .as_ref()
                .map(|s| s.status);
            if let Some(s) = &new_step
                && before != Some(s.status)
                && s.status.is_completed()
            {
                let (t, r) = analysis_event(s.status);
                self.event(
                    t,
                    r,
                    format!(
                        "analysis {} {}: {}",
                        s.name,
                        s.status,
                        s.message.clone().unwrap_or_default()
                    ),
                );
            }
            self.st.canary.current_step_analysis_run_status = new_step;
        }
        let bg = self
            .obs
            .analysis_runs
            .iter()
            .find(|r| {
                r.kind == AnalysisRunKind::Background
                    && r.pod_hash == ctx.current_hash
                    && !r.terminated
            })
            .map(summary);
        if let Some(s) = &bg {
            let before = self
                .st
                .canary
                .current_background_analysis_run_status
                .as_ref()
                .map(|s| s.status);
            if before != Some(s.status) && s.status.is_completed() {
                let (t, r) = analysis_event(s.status);
                self.event(
                    t,
                    r,
                    format!(
                        "background analysis {} {}: {}",
                        s.name,
                        s.status,
                        s.message.clone().unwrap_or_default()
                    ),
                );
            }
            self.st.canary.current_background_analysis_run_status = bg;
        }
    }

    fn progress_and_phase(&mut self, ctx: &Ctx, user_paused: bool, idx: i32, n_steps: i32) {
        let spec = &self.obs.rollout.spec;
        let previous = self.obs.rollout.status.clone().unwrap_or_default();
        let now = self.now;
        let settled = self.st.stable_rs.as_deref() == Some(ctx.current_hash.as_str());
        let available = self.st.available_replicas.unwrap_or(0);
        let updated = self.st.updated_replicas.unwrap_or(0);
        let total = self.st.replicas.unwrap_or(0);
        let in_analysis_step = idx < n_steps && ctx.steps[idx as usize].analysis.is_some();
        let paused = user_paused || !self.st.pause_conditions.is_empty();

        use crate::api::rollout::RolloutPhase as P;
        let (phase, message): (P, String) = if self.st.abort {
            (
                P::Degraded,
                self.st
                    .message
                    .clone()
                    .filter(|m| m.starts_with("aborted"))
                    .unwrap_or_else(|| "aborted".into()),
            )
        } else if user_paused {
            (P::Paused, "manually paused (spec.paused)".into())
        } else if let Some(p) = self.st.pause_conditions.first() {
            (P::Paused, format!("{:?}", p.reason))
        } else if !settled {
            let msg = if n_steps > 0 && idx < n_steps {
                format!(
                    "step {} of {n_steps}: {}",
                    idx + 1,
                    describe_step(&ctx.steps[idx as usize])
                )
            } else {
                "waiting for the new version to become fully available".to_string()
            };
            (P::Progressing, msg)
        } else if updated < ctx.replicas {
            (P::Progressing, "more replicas need to be updated".into())
        } else if available < ctx.replicas {
            (
                P::Progressing,
                "updated replicas are still becoming available".into(),
            )
        } else if total > updated && !ctx.routing {
            (
                P::Progressing,
                "old replicas are pending termination".into(),
            )
        } else {
            (P::Healthy, String::new())
        };

        // Progress: anything that moved since the last status.
        let moved = previous.replicas != self.st.replicas
            || previous.updated_replicas != self.st.updated_replicas
            || previous.available_replicas != self.st.available_replicas
            || previous.ready_replicas != self.st.ready_replicas
            || previous.current_step_index != self.st.current_step_index
            || previous.current_pod_hash != self.st.current_pod_hash
            || previous.stable_rs != self.st.stable_rs
            || previous.canary.weights.as_ref().map(|w| w.canary.weight)
                != self.st.canary.weights.as_ref().map(|w| w.canary.weight);
        let progressing =
            status::find(&self.st.conditions, constants::condition::PROGRESSING).cloned();
        let deadline_secs = spec
            .progress_deadline_seconds
            .unwrap_or(constants::DEFAULT_PROGRESS_DEADLINE_SECONDS);
        let waiting_for_pods = phase == P::Progressing && !paused && !in_analysis_step;

        let mut final_phase = phase;
        let mut final_message = message.clone();
        if self.st.abort {
            status::set(
                &mut self.st.conditions,
                constants::condition::PROGRESSING,
                false,
                reason::ROLLOUT_ABORTED,
                &message,
                now,
            );
        } else if phase == P::Healthy {
            status::set(
                &mut self.st.conditions,
                constants::condition::PROGRESSING,
                true,
                reason::NEW_REPLICA_SET_AVAILABLE,
                "rollout is healthy",
                now,
            );
        } else if paused {
            status::set(
                &mut self.st.conditions,
                constants::condition::PROGRESSING,
                true,
                reason::ROLLOUT_PAUSED,
                &message,
                now,
            );
        } else {
            let exceeded_before = progressing
                .as_ref()
                .is_some_and(|c| c.reason == reason::PROGRESS_DEADLINE_EXCEEDED);
            let last = progressing
                .as_ref()
                .filter(|c| c.reason == reason::REPLICA_SET_UPDATED)
                .and_then(|c| c.last_update_time.as_ref().map(ts));
            match last {
                Some(last) if !moved && waiting_for_pods => {
                    let deadline = add(last, Duration::from_secs(deadline_secs.max(0) as u64));
                    if now >= deadline {
                        self.progress_deadline_exceeded = true;
                        let m =
                            format!("no progress for {deadline_secs}s (progressDeadlineSeconds)");
                        if !exceeded_before {
                            self.event(
                                EventType::Warning,
                                reason::PROGRESS_DEADLINE_EXCEEDED,
                                m.clone(),
                            );
                        }
                        status::set(
                            &mut self.st.conditions,
                            constants::condition::PROGRESSING,
                            false,
                            reason::PROGRESS_DEADLINE_EXCEEDED,
                            &m,
                            now,
                        );
                        final_phase = P::Degraded;
                        final_message = format!("ProgressDeadlineExceeded: {m}");
                    } else {
                        self.wake.push(deadline);
                    }
                }
                _ if exceeded_before && !moved => {
                    self.progress_deadline_exceeded = true;
                    final_phase = P::Degraded;
                    final_message = format!(
                        "ProgressDeadlineExceeded: {}",
                        progressing
                            .as_ref()
                            .map(|c| c.message.clone())
                            .unwrap_or_default()
                    );
                }
                _ => {
                    // Progress (or the first look): restart the deadline clock.
                    status::force_update(
                        &mut self.st.conditions,
                        constants::condition::PROGRESSING,
                        true,
                        reason::REPLICA_SET_UPDATED,
                        &message,
                        now,
                    );
                    if waiting_for_pods {
                        self.wake
                            .push(add(now, Duration::from_secs(deadline_secs.max(0) as u64)));
                    }
                }
            }
        }
        status::set(
            &mut self.st.conditions,
            constants::condition::PAUSED,
            paused,
            if paused {
                reason::ROLLOUT_PAUSED
            } else {
                reason::ROLLOUT_RESUMED
            },
            if paused { &message } else { "" },
            now,
        );
        status::set(
            &mut self.st.conditions,
            constants::condition::AVAILABLE,
            available >= ctx.replicas,
            reason::AVAILABLE,
            &format!("{available} of {} pods available", ctx.replicas),
            now,
        );
        let healthy = final_phase == P::Healthy;
        status::set(
            &mut self.st.conditions,
            constants::condition::COMPLETED,
            settled && !self.st.abort,
            reason::ROLLOUT_COMPLETED,
            if settled {
                "the current version is stable"
            } else {
                ""
            },
            now,
        );
        status::set(
            &mut self.st.conditions,
            constants::condition::HEALTHY,
            healthy,
            if healthy {
                reason::ROLLOUT_HEALTHY
            } else {
                reason::ROLLOUT_NOT_HEALTHY
            },
            "",
            now,
        );
        let k = match final_phase {
            P::Healthy => status::Kstatus::Ready,
            P::Degraded => status::Kstatus::Stalled,
            P::Progressing | P::Paused => status::Kstatus::Reconciling,
        };
        status::set_kstatus(&mut self.st.conditions, k, &final_message, now);
        self.st.phase = Some(final_phase);
        self.st.message = (!final_message.is_empty()).then_some(final_message);
    }
}

fn in_update_was_just_promoted(st: &RolloutStatus, ctx: &Ctx) -> bool {
    // After a promotion in this plan the stable hash in status moved to the current hash while
    // the observed stable hash (ctx) is still the previous one.
    st.stable_rs.as_deref() == Some(ctx.current_hash.as_str())
        && ctx.stable_hash != ctx.current_hash
}

struct Weights {
    desired: Option<i32>,
}

fn analysis_event(phase: AnalysisPhase) -> (EventType, &'static str) {
    match phase {
        AnalysisPhase::Successful => (EventType::Normal, reason::ANALYSIS_RUN_SUCCESSFUL),
        AnalysisPhase::Failed => (EventType::Warning, reason::ANALYSIS_RUN_FAILED),
        AnalysisPhase::Error => (EventType::Warning, reason::ANALYSIS_RUN_ERROR),
        _ => (EventType::Warning, reason::ANALYSIS_RUN_INCONCLUSIVE),
    }
}

/// The weight in force at step `idx`: the last `setWeight` before it; `max` once all steps are
/// done; 0 before the first `setWeight`.
pub fn last_weight(steps: &[CanaryStep], idx: i32, max: i32) -> i32 {
    if idx < 0 {
        return 0;
    }
    if idx as usize >= steps.len() {
        return max;
    }
    steps[..=idx as usize]
        .iter()
        .rev()
        .find_map(|s| s.set_weight)
        .unwrap_or(0)
        .min(max)
}

/// Canary replicas wanted at step `idx` for `weight`, honouring `setCanaryScale` and
/// `minPodsPerReplicaSet`.
fn desired_canary_replicas(
    ctx: &Ctx,
    canary: &crate::api::rollout::CanaryStrategy,
    idx: i32,
    weight: i32,
) -> i32 {
    let n = ctx.steps.len() as i32;
    let mut count = canary_replicas_for_weight(ctx.replicas, weight, ctx.max_weight);
    if idx < n || n == 0 {
        let upto = (idx.max(0) as usize + 1).min(ctx.steps.len());
        let override_ = ctx.steps[..upto]
            .iter()
            .rev()
            .find_map(|s| s.set_canary_scale.as_ref());
        if let Some(scale) = override_ {
            if scale.match_traffic_weight == Some(true) {
                // Back to the traffic weight.
            } else if let Some(r) = scale.replicas {
                count = r.clamp(0, ctx.replicas.max(r));
            } else if let Some(w) = scale.weight {
                count = canary_replicas_for_weight(ctx.replicas, w, 100);
            }
        }
    }
    apply_min_pods(count, canary.min_pods_per_replica_set, ctx.replicas)
}

/// Basic canary split for a weight: canary `ceil(replicas × weight / 100)`, stable the rest.
fn basic_targets(replicas: i32, weight: i32) -> (i32, i32) {
    let new = canary_replicas_for_weight(replicas, weight, 100);
    (new, replicas - new)
}

/// A short description of a step for messages.
pub fn describe_step(step: &CanaryStep) -> String {
    if let Some(w) = step.set_weight {
        format!("setWeight {w}")
    } else if let Some(p) = &step.pause {
        match &p.duration {
            Some(d) => format!("pause {d}"),
            None => "pause until promoted".into(),
        }
    } else if let Some(s) = &step.set_canary_scale {
        match (s.replicas, s.weight) {
            (Some(r), _) => format!("setCanaryScale {r} replicas"),
            (_, Some(w)) => format!("setCanaryScale {w}%"),
            _ => "setCanaryScale matchTrafficWeight".into(),
        }
    } else if let Some(a) = &step.analysis {
        let names: Vec<_> = a
            .templates
            .iter()
            .map(|t| t.template_name.as_str())
            .collect();
        format!("analysis {}", names.join(", "))
    } else if let Some(h) = &step.set_header_route {
        format!("setHeaderRoute {}", h.name)
    } else if let Some(m) = &step.set_mirror_route {
        format!("setMirrorRoute {}", m.name)
    } else {
        "unsupported step".into()
    }
}

/// Labels of an AnalysisRun created for a request.
pub fn analysis_run_labels(req: &AnalysisRunRequest) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(
        constants::POD_TEMPLATE_HASH_LABEL.to_string(),
        req.pod_hash.clone(),
    );
    match req.kind {
        AnalysisRunKind::Step(i) => {
            labels.insert(
                constants::ROLLOUT_TYPE_LABEL.to_string(),
                constants::ROLLOUT_TYPE_STEP.to_string(),
            );
            labels.insert(constants::STEP_INDEX_LABEL.to_string(), i.to_string());
        }
        AnalysisRunKind::Background => {
            labels.insert(
                constants::ROLLOUT_TYPE_LABEL.to_string(),
                constants::ROLLOUT_TYPE_BACKGROUND.to_string(),
            );
        }
    }
    labels
}
