//! What the planner reads and what it returns: the observation of one Rollout and its children,
//! and the desired world for it.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;

use std::collections::BTreeMap;

use crate::api::analysis::AnalysisTemplateSpec;
use crate::api::common::AnalysisPhase;
use crate::api::rollout::{
    Rollout, RolloutAnalysis, RolloutStatus, SetHeaderRoute, SetMirrorRoute,
};
use crate::api::validation::FieldError;

pub use super::restart::{Evictions, ObservedPod};

/// A ReplicaSet owned by the Rollout, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedReplicaSet {
    /// Object name.
    pub name: String,
    /// Its pod-template hash label.
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
    /// `metadata.creationTimestamp` (None: not known yet). Orders the ReplicaSets for
    /// `rollbackWindow`, as in Argo Rollouts: a reused ReplicaSet gets a new revision, but keeps
    /// its place.
    pub created: Option<Timestamp>,
}

/// Why an AnalysisRun exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnalysisRunKind {
    /// Created by the `analysis` step at this index.
    Step(i32),
    /// The background analysis.
    Background,
    /// Blue-green: the analysis before the active Service switches.
    PrePromotion,
    /// Blue-green: the analysis after the active Service switched.
    PostPromotion,
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
    /// Hashes whose ReplicaSet selects its pods by the legacy (Argo Rollouts) hash key, created
    /// by an earlier Sluice version: Services and subsets select these by that key.
    pub legacy_label_hashes: Vec<String>,
}

/// The Deployment referenced by `workloadRef`, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedWorkload {
    /// `spec.replicas` of the Deployment.
    pub replicas: i32,
    /// `metadata.generation` of the Deployment.
    pub generation: i64,
}

/// An AnalysisTemplate or ClusterAnalysisTemplate referenced by the Rollout's analyses, as read.
#[derive(Debug, Clone, PartialEq)]
pub enum ObservedTemplate {
    /// It exists; its spec.
    Found(AnalysisTemplateSpec),
    /// It does not exist.
    Missing,
    /// It exists, but its spec cannot be read as a template (e.g. `interval: five minutes`):
    /// the field inside the template and why.
    Invalid(FieldError),
}

/// The templates the Rollout's analyses reference, with the ones they include, by
/// `(clusterScope, name)`.
pub type ObservedTemplates = BTreeMap<(bool, String), ObservedTemplate>;

/// The API server refused to create the ReplicaSet of a pod template (422 Invalid, or 400: the
/// template can never become pods), as the controller saw when it tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedReplicaSet {
    /// Pod-template hash of the refused ReplicaSet.
    pub hash: String,
    /// Name of the refused ReplicaSet.
    pub name: String,
    /// The API server's causes (`status.details.causes`: field and message), or its message
    /// under `spec.template` when it gave none.
    pub causes: Vec<FieldError>,
    /// The API server's message, whole.
    pub message: String,
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
    /// Every template the analyses reference (None: not observed, e.g. in a simulation; the
    /// analyses are then not checked before they start).
    pub analysis_templates: Option<ObservedTemplates>,
    /// Pods of the Rollout's ReplicaSets, read only while a restart (`spec.restartAt`) is due
    /// (None: not read).
    pub pods: Option<Vec<ObservedPod>>,
    /// The last ReplicaSet the API server refused to create (None: none). While it is the
    /// current template's, the spec is reported invalid and the create is not planned again.
    pub refused_replica_set: Option<RefusedReplicaSet>,
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
    /// Reason (one of [`crate::api::constants::reason`]).
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
    /// Pods to evict for a restart (`spec.restartAt`); a plan that evicts writes nothing else.
    pub evictions: Option<Evictions>,
}

impl Plan {
    /// True when the status differs from the one observed.
    pub fn status_changed(&self, observed: &Rollout) -> bool {
        observed.status.as_ref() != Some(&self.status)
    }
}
