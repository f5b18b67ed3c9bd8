//! Every label, annotation, condition type, reason and default Sluice uses, in one place.

/// Label on ReplicaSets, Pods, Services' selectors, DestinationRule subsets and AnalysisRuns
/// naming the pod-template hash.
///
/// Deliberately not Argo Rollouts' key: Argo's controller treats every ReplicaSet carrying its key
/// as its own, and removes its key from the selector of any Service no Argo Rollout references,
/// so sharing the key would let Argo rewrite the Services of a Sluice Rollout while both run
/// during a migration.
pub const POD_TEMPLATE_HASH_LABEL: &str = "rollout.sluice.dev/pod-template-hash";
/// Argo Rollouts' pod-template hash key, which earlier Sluice versions also used. ReplicaSets
/// created with it keep it in their (immutable) selector and pods, so Sluice still reads it:
/// their Services and subsets keep selecting by it until a new revision replaces them.
pub const LEGACY_POD_TEMPLATE_HASH_LABEL: &str = "rollouts-pod-template-hash";

/// The pod-template hash a set of labels (or a selector) names: Sluice's key, else the legacy
/// key.
pub fn pod_template_hash(labels: &std::collections::BTreeMap<String, String>) -> Option<&String> {
    labels
        .get(POD_TEMPLATE_HASH_LABEL)
        .or_else(|| labels.get(LEGACY_POD_TEMPLATE_HASH_LABEL))
}

/// Annotation on ReplicaSets: the Rollout revision that created (or last re-used) them.
pub const REVISION_ANNOTATION: &str = "rollout.sluice.dev/revision";
/// Annotation on ReplicaSets: the Rollout's `spec.replicas` when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "rollout.sluice.dev/desired-replicas";
/// Annotation on ReplicaSets: RFC 3339 instant after which a previous stable ReplicaSet is scaled
/// down (kept up for `scaleDownDelaySeconds` so routers and kube-proxy can drain).
pub const SCALE_DOWN_DEADLINE_ANNOTATION: &str = "rollout.sluice.dev/scale-down-deadline";
/// Annotation on ReplicaSets: the ephemeral metadata (`canaryMetadata` or `stableMetadata`, as
/// JSON) last put on its pod template and pods, so that keys no longer wanted are taken off again
/// and nothing else is touched (Argo Rollouts' `rollout.argoproj.io/ephemeral-metadata`).
pub const EPHEMERAL_METADATA_ANNOTATION: &str = "rollout.sluice.dev/ephemeral-metadata";
/// Annotation on objects Sluice modifies but does not own (Services, VirtualServices,
/// DestinationRules): the Rollout managing them.
pub const MANAGED_BY_ANNOTATION: &str = "rollout.sluice.dev/managed-by-rollouts";
/// Annotation on a Rollout that routes traffic: the routing Sluice manages for it (the
/// `trafficRouting`, `canaryService` and `stableService` it last applied, as JSON), recorded with
/// the traffic finalizer so that the routers' objects can be given back when `trafficRouting` is
/// removed from the spec of a live Rollout, not only when the Rollout is deleted.
pub const MANAGED_ROUTING_ANNOTATION: &str = "rollout.sluice.dev/managed-routing";
/// Annotation on Gateway API routes: the names (comma-separated) of the rules Sluice inserted for
/// `setHeaderRoute` / `setMirrorRoute` steps. Written in the same patch as the rules, so a rule is
/// Sluice's exactly when its name is listed here; a user rule that happens to carry a managed
/// route's name is never taken for one of Sluice's.
pub const MANAGED_RULES_ANNOTATION: &str = "rollout.sluice.dev/managed-rules";
/// Label on a Rollout selecting the controller instance that reconciles it (sharding).
pub const INSTANCE_ID_LABEL: &str = "rollout.sluice.dev/controller-instance-id";

/// Label on AnalysisRuns: `Step` or `Background`.
pub const ROLLOUT_TYPE_LABEL: &str = "rollout-type";
/// Label on step AnalysisRuns: the index of the step that created them.
pub const STEP_INDEX_LABEL: &str = "step-index";
/// `rollout-type` value of an AnalysisRun created by an `analysis` step.
pub const ROLLOUT_TYPE_STEP: &str = "Step";
/// `rollout-type` value of a background AnalysisRun.
pub const ROLLOUT_TYPE_BACKGROUND: &str = "Background";
/// `rollout-type` of a blue-green pre-promotion AnalysisRun (Argo's value).
pub const ROLLOUT_TYPE_PRE_PROMOTION: &str = "PrePromotion";
/// `rollout-type` of a blue-green post-promotion AnalysisRun (Argo's value).
pub const ROLLOUT_TYPE_POST_PROMOTION: &str = "PostPromotion";

/// Finalizer on Rollouts with traffic routing: the routers' objects are restored (all traffic to
/// stable, managed routes and subset labels removed) before the Rollout is deleted.
pub const TRAFFIC_FINALIZER: &str = "rollout.sluice.dev/traffic-cleanup";

/// Field manager of every write Sluice makes.
pub const FIELD_MANAGER: &str = "sluice";

/// Default `spec.replicas`.
pub const DEFAULT_REPLICAS: i32 = 1;
/// Default `spec.revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// Default `spec.progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Default `trafficRouting.maxTrafficWeight`.
pub const DEFAULT_MAX_TRAFFIC_WEIGHT: i32 = 100;
/// Most canary steps a Rollout may declare (the CRD's `maxItems`, which keeps the API server's
/// CEL cost estimate of the step rules within budget).
pub const MAX_CANARY_STEPS: usize = 100;
/// Default `scaleDownDelaySeconds` with traffic routing.
pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;
/// Default `abortScaleDownDelaySeconds` with traffic routing.
pub const DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;
/// Default `maxSurge` and `maxUnavailable` of a basic canary.
pub const DEFAULT_MAX_SURGE: &str = "25%";
/// Default `maxUnavailable` of a basic canary.
pub const DEFAULT_MAX_UNAVAILABLE: &str = "25%";

/// Condition types written on `Rollout.status.conditions`.
pub mod condition {
    /// The spec is invalid; the message names the field. Nothing else changes until it is fixed.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Enough pods are available.
    pub const AVAILABLE: &str = "Available";
    /// The rollout is moving (or, with status False, stopped making progress).
    pub const PROGRESSING: &str = "Progressing";
    /// The rollout is paused (by a step, an inconclusive analysis or the user).
    pub const PAUSED: &str = "Paused";
    /// The current revision has been fully promoted.
    pub const COMPLETED: &str = "Completed";
    /// The rollout is healthy.
    pub const HEALTHY: &str = "Healthy";
    /// kstatus: the object has reached its desired state.
    pub const READY: &str = "Ready";
    /// kstatus: the controller is still working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: the controller cannot make progress without outside help.
    pub const STALLED: &str = "Stalled";
}

/// Reasons used on conditions and Events.
pub mod reason {
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const NEW_REPLICA_SET_CREATED: &str = "NewReplicaSetCreated";
    pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
    /// The API server refused a new ReplicaSet (Argo Rollouts' reason, kept for its alerts).
    pub const REPLICA_SET_CREATE_ERROR: &str = "ReplicaSetCreateError";
    pub const NEW_REPLICA_SET_AVAILABLE: &str = "NewReplicaSetAvailable";
    pub const ROLLOUT_PAUSED: &str = "RolloutPaused";
    pub const ROLLOUT_RESUMED: &str = "RolloutResumed";
    pub const ROLLOUT_ABORTED: &str = "RolloutAborted";
    pub const ROLLOUT_RETRY: &str = "RolloutRetry";
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    pub const ROLLOUT_COMPLETED: &str = "RolloutCompleted";
    pub const ROLLOUT_HEALTHY: &str = "RolloutHealthy";
    pub const ROLLOUT_NOT_HEALTHY: &str = "RolloutNotHealthy";
    pub const ANALYSIS_RUN_FAILED: &str = "AnalysisRunFailed";
    pub const ANALYSIS_RUN_ERROR: &str = "AnalysisRunError";
    pub const ANALYSIS_RUN_INCONCLUSIVE: &str = "AnalysisRunInconclusive";
    pub const ANALYSIS_RUN_SUCCESSFUL: &str = "AnalysisRunSuccessful";
    pub const ANALYSIS_RUN_CREATED: &str = "AnalysisRunCreated";
    pub const TRAFFIC_WEIGHT_UPDATED: &str = "TrafficWeightUpdated";
    pub const ROLLOUT_STEP_COMPLETED: &str = "RolloutStepCompleted";
    pub const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";
    /// A blue-green Service's selector moved to another version (Argo's reason).
    pub const SWITCH_SERVICE: &str = "SwitchService";
    /// A new template is being rolled out (Argo's reason and order: before
    /// `RolloutUpdated` and `NewReplicaSetCreated`).
    pub const ROLLOUT_NOT_COMPLETED: &str = "RolloutNotCompleted";
    /// The template changed: a new revision.
    pub const ROLLOUT_UPDATED: &str = "RolloutUpdated";
    pub const SUPERSEDED: &str = "RolloutSuperseded";
    pub const ROLLED_BACK: &str = "RolledBackToStable";
    pub const AVAILABLE: &str = "AvailableReason";
    pub const PROMOTE_FULL: &str = "RolloutPromotedFull";
    /// Pods evicted for `spec.restartAt` (or refused by a PodDisruptionBudget).
    pub const RESTARTING_PODS: &str = "RestartingPods";
    /// Every pod is newer than `spec.restartAt`: `status.restartedAt` recorded.
    pub const RESTARTED_PODS: &str = "RestartedPods";
    /// A new pod template or new steps canceled a pending restart.
    pub const RESTART_CANCELED: &str = "RestartCanceled";
}
