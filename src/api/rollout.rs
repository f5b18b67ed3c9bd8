//! The `Rollout` kind: what to run, and how to move traffic to a new version step by step.
//!
//! Field names and semantics follow Argo Rollouts v1.9 wherever the two overlap, so that an Argo
//! Rollouts manifest works after changing only its `apiVersion`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AnalysisPhase, DryRun, FieldRef, MeasurementRetention, ObjectMetadata};
use super::duration::IntOrDuration;

/// Desired state of a Rollout.
// clippy reads the repeated `type_ = "integer"` of separate printer columns as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "sro",
    category = "sluice",
    derive = "PartialEq",
    derive = "Default",
    cel,
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.HPAReplicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Number of desired pods"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Total number of non-terminated pods"
    ),
    printcolumn(
        name = "Up-to-date",
        type_ = "integer",
        json_path = ".status.updatedReplicas",
        description = "Pods running the current template"
    ),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.availableReplicas",
        description = "Available pods"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Healthy, Progressing, Paused or Degraded"
    ),
    printcolumn(
        name = "Step",
        type_ = "string",
        json_path = ".status.currentStep",
        description = "Current canary step, numbered from 1, of the step count (the step of the abort while aborted)"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.canary.weights.canary.weight",
        description = "Share of traffic sent to the canary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.workloadRef) && has(self.template) && has(self.template.spec))").message("template and workloadRef are mutually exclusive"))]
#[x_kube(validation = Rule::new("has(self.workloadRef) || has(self.template)").message("one of template or workloadRef is required"))]
pub struct RolloutSpec {
    /// Number of desired pods. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Label selector for pods. Must match the template's labels. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("selector is immutable"))]
    pub selector: Option<LabelSelector>,
    /// Pod template of the version to run. Changing it starts a new rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_template_schema")]
    pub template: Option<PodTemplateSpec>,
    /// Take the pod template from an existing Deployment instead of `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,
    /// Seconds a new pod must be ready, without any container crashing, to count as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: Option<i32>,
    /// Number of old ReplicaSets to keep for rollback. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub revision_history_limit: Option<i32>,
    /// Pause the rollout at its current step. Owned by the user; the controller never sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Seconds the rollout may go without progress before it is reported as Degraded
    /// (ProgressDeadlineExceeded). Time spent paused or analysing does not count. Defaults to 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<i32>,
    /// Abort the update when the progress deadline is exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_abort: Option<bool>,
    /// Restart every pod created before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<Time>,
    /// How to move from the stable version to a new one. Exactly one strategy must be set.
    // No schema default: the API server validates a default against the node's own rule, and an
    // empty strategy breaks "exactly one of canary or blueGreen". A Rollout without a strategy is
    // accepted by the API server and reported as InvalidSpec by the controller, as in Argo.
    #[serde(default, skip_serializing_if = "RolloutStrategy::is_unset")]
    pub strategy: RolloutStrategy,
    /// Retention of finished AnalysisRuns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisRunStrategy>,
    /// Fast rollback to recent revisions: a template equal to one of the last `revisions`
    /// revisions whose ReplicaSet still exists goes straight back to that ReplicaSet, without
    /// steps or analysis (going back to the stable version always does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_window: Option<RollbackWindow>,
}

/// How far back a rollback skips steps and analysis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RollbackWindow {
    /// Number of revisions: a rollback to a ReplicaSet with fewer than this many ReplicaSets
    /// created between it and the stable one is fast. 0 (the default): only a rollback to the
    /// stable version is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub revisions: Option<i32>,
}

fn pod_template_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // The full PodTemplateSpec schema with its descriptions would make the CRD too large for
    // client-side `kubectl apply` (the last-applied annotation is limited to 256 KiB). Keep the
    // structure (so the API server validates types), drop the nested descriptions.
    let mut schema = generator.subschema_for::<PodTemplateSpec>();
    quantities_accept_numbers(&mut schema);
    strip_descriptions(&mut schema);
    schema.ensure_object().insert(
        "description".into(),
        "Pod template of the version to run. Changing it starts a new rollout.".into(),
    );
    schema
}

/// Resource quantities (`cpu: 0.5`) may be written as YAML numbers, as a Deployment accepts
/// them; a structural schema cannot say "number or string", so, as Argo Rollouts' CRD does, a
/// quantity keeps whatever is written. Lint and validation check it against the quantity
/// grammar (`api::quantity`), and the API server checks the ReplicaSet built from it.
fn quantities_accept_numbers(schema: &mut schemars::Schema) {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let is_quantity = map
                    .get("description")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|d| d.starts_with("Quantity is a fixed-point"));
                if is_quantity {
                    map.clear();
                    map.insert(
                        "x-kubernetes-preserve-unknown-fields".into(),
                        serde_json::Value::Bool(true),
                    );
                    return;
                }
                for (_, v) in map.iter_mut() {
                    walk(v);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = schema.clone().to_value();
    walk(&mut value);
    if let Ok(changed) = schemars::Schema::try_from(value) {
        *schema = changed;
    }
}

fn strip_descriptions(schema: &mut schemars::Schema) {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("description");
                for (_, v) in map.iter_mut() {
                    walk(v);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = schema.clone().to_value();
    walk(&mut value);
    if let Ok(stripped) = schemars::Schema::try_from(value) {
        *schema = stripped;
    }
}

/// Reference to a workload whose pod template the Rollout uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// API version of the referenced workload: `apps/v1`.
    pub api_version: String,
    /// Kind of the referenced workload: `Deployment`.
    pub kind: String,
    /// Name of the referenced workload, in the Rollout's namespace.
    pub name: String,
    /// What to do with the Deployment's own pods: `never` (leave them), `onsuccess` (scale the
    /// Deployment to zero once the Rollout is healthy) or `progressively` (scale it down as the
    /// Rollout scales up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleDownMode>,
}

/// How a Deployment referenced by `workloadRef` is scaled down.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScaleDownMode {
    /// Never scale the Deployment down.
    Never,
    /// Scale the Deployment to zero once the Rollout is healthy.
    Onsuccess,
    /// Scale the Deployment down as the Rollout's pods become available.
    Progressively,
}

/// Retention of finished AnalysisRuns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStrategy {
    /// Number of Successful AnalysisRuns to keep. Defaults to 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_run_history_limit: Option<i32>,
    /// Number of Failed, Error or Inconclusive AnalysisRuns to keep. Defaults to 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsuccessful_run_history_limit: Option<i32>,
}

/// Deployment strategy. Exactly one of `canary` or `blueGreen`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.canary) != has(self.blueGreen)").message("exactly one of canary or blueGreen must be set"))]
pub struct RolloutStrategy {
    /// Canary: shift traffic to the new version step by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Box<CanaryStrategy>>,
    /// Blue-green: run the new version next to the old one and switch the active Service to it
    /// at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<Box<BlueGreenStrategy>>,
}

impl RolloutStrategy {
    /// Neither strategy is set (a Rollout that omits `strategy`).
    pub fn is_unset(&self) -> bool {
        self.canary.is_none() && self.blue_green.is_none()
    }

    /// The Services whose selectors Sluice manages, by role, with the field naming each:
    /// the canary's `stableService` and `canaryService`, or blue-green's `activeService` (the
    /// stable role: it serves production) and `previewService` (the new version's role).
    /// Unset or empty names are left out.
    pub fn managed_services(&self) -> Vec<(ServiceRole, &'static str, &str)> {
        let roles = match (&self.canary, &self.blue_green) {
            (Some(c), _) => [
                (
                    ServiceRole::Stable,
                    "spec.strategy.canary.stableService",
                    c.stable_service.as_deref(),
                ),
                (
                    ServiceRole::New,
                    "spec.strategy.canary.canaryService",
                    c.canary_service.as_deref(),
                ),
            ],
            (None, Some(bg)) => [
                (
                    ServiceRole::Stable,
                    "spec.strategy.blueGreen.activeService",
                    Some(bg.active_service.as_str()),
                ),
                (
                    ServiceRole::New,
                    "spec.strategy.blueGreen.previewService",
                    bg.preview_service.as_deref(),
                ),
            ],
            (None, None) => return Vec::new(),
        };
        roles
            .into_iter()
            .filter_map(|(role, field, name)| Some((role, field, name.filter(|n| !n.is_empty())?)))
            .collect()
    }
}

/// The role of a Service Sluice manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceRole {
    /// Selects the stable version: the canary's `stableService`, blue-green's `activeService`.
    Stable,
    /// Selects the new version: the canary's `canaryService`, blue-green's `previewService`.
    New,
}

/// Blue-green strategy, as in Argo Rollouts: the new version runs next to the old one behind
/// the preview Service, and the active Service switches to it at once when it is fully
/// available (and, unless auto-promotion, promoted).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.activeService) && self.activeService != ''").message("activeService is required"))]
#[x_kube(validation = Rule::new("!has(self.previewService) || !has(self.activeService) || self.previewService == '' || self.previewService != self.activeService").message("activeService and previewService must be different Services"))]
pub struct BlueGreenStrategy {
    /// Service whose selector Sluice points at the version that serves production traffic;
    /// switched to the new version at promotion. Required.
    // Service names are DNS labels; the bound keeps the rule above cheap in CEL cost.
    #[serde(default)]
    #[schemars(length(max = 63))]
    pub active_service: String,
    /// Service whose selector Sluice points at the new version before promotion (to test it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub preview_service: Option<String>,
    /// Promote automatically once the new version is ready (and its pre-promotion analysis
    /// passed). Defaults to true; false pauses the rollout (`BlueGreenPause`) until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_enabled: Option<bool>,
    /// With auto-promotion: pause this many seconds before promoting, then promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub auto_promotion_seconds: Option<i32>,
    /// Pods of the new version before promotion (defaults to `spec.replicas`); it is scaled to
    /// full size before the active Service switches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub preview_replica_count: Option<i32>,
    /// Seconds the previous version stays up after the active Service switched away from it.
    /// Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// Maximum number of old ReplicaSets kept up while they wait for their scale-down delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_revision_limit: Option<i32>,
    /// Seconds after an abort before the new version is scaled down; 0 keeps it up. Defaults
    /// to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: Option<i32>,
    /// Analysis run before the switch, on the new version behind the preview Service: Failed
    /// or Error aborts, Inconclusive pauses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<RolloutAnalysis>,
    /// Analysis run after the switch: the new version becomes stable only once it passed;
    /// Failed or Error aborts and switches the active Service back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<RolloutAnalysis>,
    /// Labels and annotations put on the pods the active Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_metadata: Option<ObjectMetadata>,
    /// Labels and annotations put on the new version's pods while they are the preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_metadata: Option<ObjectMetadata>,
    /// Keep new pods off the nodes running the active pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<AntiAffinity>,
    /// Pods that may be unavailable while pods are restarted (`spec.restartAt`); a number or
    /// percentage, rounded down. Defaults to 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Canary only: kept by the schema so that a blue-green Rollout setting it is refused by
    /// name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_any")]
    pub steps: Option<serde_json::Value>,
    /// Canary only: kept by the schema so that a blue-green Rollout setting it is refused by
    /// name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_any")]
    pub canary_service: Option<serde_json::Value>,
    /// Canary only: kept by the schema so that a blue-green Rollout setting it is refused by
    /// name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_any")]
    pub stable_service: Option<serde_json::Value>,
    /// Canary only: kept by the schema so that a blue-green Rollout setting it is refused by
    /// name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_any")]
    pub traffic_routing: Option<serde_json::Value>,
    /// Canary only: kept by the schema so that a blue-green Rollout setting it is refused by
    /// name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_any")]
    pub max_surge: Option<serde_json::Value>,
    /// Canary only: kept by the schema so that a blue-green Rollout setting it is refused by
    /// name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_any")]
    pub analysis: Option<serde_json::Value>,
    /// Canary only: kept by the schema so that a blue-green Rollout setting it is refused by
    /// name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_any")]
    pub canary_metadata: Option<serde_json::Value>,
    /// Canary only: kept by the schema so that a blue-green Rollout setting it is refused by
    /// name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_any")]
    pub stable_metadata: Option<serde_json::Value>,
    /// Canary only: kept by the schema so that a blue-green Rollout setting it is refused by
    /// name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_any")]
    pub dynamic_stable_scale: Option<serde_json::Value>,
    /// Canary only: kept by the schema so that a blue-green Rollout setting it is refused by
    /// name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_any")]
    pub min_pods_per_replica_set: Option<serde_json::Value>,
}

impl BlueGreenStrategy {
    /// The canary-only fields this blue-green strategy sets, by field name.
    pub fn canary_only_fields(&self) -> Vec<&'static str> {
        [
            ("steps", self.steps.is_some()),
            ("canaryService", self.canary_service.is_some()),
            ("stableService", self.stable_service.is_some()),
            ("trafficRouting", self.traffic_routing.is_some()),
            ("maxSurge", self.max_surge.is_some()),
            ("analysis", self.analysis.is_some()),
            ("canaryMetadata", self.canary_metadata.is_some()),
            ("stableMetadata", self.stable_metadata.is_some()),
            ("dynamicStableScale", self.dynamic_stable_scale.is_some()),
            (
                "minPodsPerReplicaSet",
                self.min_pods_per_replica_set.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

fn preserve_any(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Canary strategy: move traffic (or replicas) to the new version through `steps`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema, Default)]
#[serde(rename_all = "camelCase")]
// NGINX, the Gateway API and host-level Istio need both Services; Istio subset-level routing (a
// destinationRule) selects pods through the subsets and needs none, as in Argo Rollouts. (The
// Gateway API plugin shape is checked by `api::validation` only: its key is not a CEL name.)
// `api::validation::requires_services` is the same rule.
#[x_kube(validation = Rule::new("!has(self.trafficRouting) || !(has(self.trafficRouting.nginx) || has(self.trafficRouting.gatewayAPI) || (has(self.trafficRouting.istio) && !has(self.trafficRouting.istio.destinationRule))) || (has(self.canaryService) && has(self.stableService) && self.canaryService != '' && self.stableService != '')").message("trafficRouting with nginx, gatewayAPI or host-level istio requires both canaryService and stableService"))]
#[x_kube(validation = Rule::new("!has(self.canaryService) || !has(self.stableService) || self.canaryService == '' || self.canaryService != self.stableService").message("canaryService and stableService must be different Services"))]
#[x_kube(validation = Rule::new("!has(self.steps) || self.steps.all(s, !has(s.setWeight) || s.setWeight <= (has(self.trafficRouting) && has(self.trafficRouting.maxTrafficWeight) ? self.trafficRouting.maxTrafficWeight : 100))").message("setWeight must not exceed trafficRouting.maxTrafficWeight (100 by default)"))]
pub struct CanaryStrategy {
    /// Service whose selector Sluice points at the canary (new) pods.
    // Service names are DNS labels (at most 63 characters); the bound also keeps the string
    // comparisons of the rules above cheap in the API server's CEL cost estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub canary_service: Option<String>,
    /// Service whose selector Sluice points at the stable pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub stable_service: Option<String>,
    /// Ordered steps from the stable version to the new one, at most 100. Without steps a new
    /// version is rolled out like a Deployment's rolling update.
    // The bound keeps the `setWeight` rule within the API server's CEL cost budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))] // MAX_CANARY_STEPS
    pub steps: Vec<CanaryStep>,
    /// Basic canary only: pods that may exist above `replicas` during an update (number or
    /// percentage, rounded up). Defaults to 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Basic canary only: pods that may be unavailable during an update (number or percentage,
    /// rounded down). Defaults to 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Traffic routing only: seconds to keep the previous stable ReplicaSet up after the stable
    /// Service moved to the new version. Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// Traffic routing only: maximum number of old ReplicaSets kept up while they wait for their
    /// scale-down delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_revision_limit: Option<i32>,
    /// Traffic routing only: seconds after an abort before the canary is scaled down; 0 keeps it
    /// up. Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: Option<i32>,
    /// Traffic routing only: scale the stable ReplicaSet down as traffic moves to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_stable_scale: Option<bool>,
    /// Traffic routing only: minimum pods of any ReplicaSet that has pods at all (high
    /// availability for small canaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_pods_per_replica_set: Option<i32>,
    /// Labels and annotations put on canary pods while they are the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_metadata: Option<ObjectMetadata>,
    /// Labels and annotations put on stable pods while they are stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_metadata: Option<ObjectMetadata>,
    /// Keep new pods off the nodes running the stable pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<AntiAffinity>,
    /// Shift traffic with a router instead of by replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,
    /// Background analysis: runs from `startingStep` until the rollout completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysisBackground>,
    /// Argo Rollouts' ping-pong Services. Not supported by Sluice (use `canaryService` and
    /// `stableService`); kept by the schema so that the Rollout is refused by name instead of the
    /// API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub ping_pong: Option<serde_json::Value>,
    /// Argo Rollouts' replica progress threshold. Not supported by Sluice: a step waits for every
    /// canary pod it asks for to be available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub replica_progress_threshold: Option<serde_json::Value>,
}

/// One canary step. Exactly one action per step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Share of traffic (with traffic routing) or of replicas (without) for the canary,
    /// from 0 to `maxTrafficWeight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub set_weight: Option<i32>,
    /// Wait: for `duration`, or until promoted when no duration is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<RolloutPause>,
    /// Scale the canary independently of its traffic weight (traffic routing only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_canary_scale: Option<SetCanaryScale>,
    /// Run an analysis and wait for its outcome: Successful advances, Failed or Error aborts,
    /// Inconclusive pauses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysis>,
    /// Send requests matching headers to the canary through a managed route (Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<SetHeaderRoute>,
    /// Mirror a share of matching requests to the canary through a managed route (Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_mirror_route: Option<SetMirrorRoute>,
    /// Argo Rollouts experiment step. Accepted by the schema so the Rollout gets a clear
    /// InvalidSpec instead of a silently dropped step; not supported by Sluice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub experiment: Option<serde_json::Value>,
    /// Argo Rollouts step plugin. Accepted by the schema so the Rollout gets a clear InvalidSpec;
    /// not supported by Sluice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub plugin: Option<serde_json::Value>,
}

fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A pause step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPause {
    /// How long to pause: whole seconds or a Go duration (`30s`, `5m`). Empty waits for promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<IntOrDuration>,
}

/// Canary scale override for `setCanaryScale`. Exactly one field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SetCanaryScale {
    /// Canary pods as a percentage of `spec.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<i32>,
    /// Canary pods as an absolute number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Go back to scaling the canary with its traffic weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_traffic_weight: Option<bool>,
}

/// Header-based routing to the canary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SetHeaderRoute {
    /// Name of the route; must be listed in `trafficRouting.managedRoutes`.
    pub name: String,
    /// Header matches: a request matching any of them goes to the canary (as in Argo Rollouts).
    /// Omitted removes the route.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<HeaderRoutingMatch>,
}

/// One header match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRoutingMatch {
    /// Header name.
    pub header_name: String,
    /// How the header value must match.
    pub header_value: StringMatch,
}

/// A string match. Exactly one field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// Exact value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Value prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Traffic mirroring to the canary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SetMirrorRoute {
    /// Name of the route; must be listed in `trafficRouting.managedRoutes`.
    pub name: String,
    /// Request matches: blocks are OR'ed, fields within a block AND'ed. Omitted removes the route.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<RouteMatch>,
    /// Percentage of matching requests to mirror (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percentage: Option<i32>,
}

/// A request match for mirror routes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<StringMatch>,
    /// Request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
}

/// Pod anti-affinity against the stable pods. Exactly one field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AntiAffinity {
    /// Prefer other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_during_scheduling_ignored_during_execution: Option<PreferredAntiAffinity>,
    /// Require other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<RequiredAntiAffinity>,
}

/// Preferred anti-affinity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PreferredAntiAffinity {
    /// Scheduling weight, 1 to 100.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
}

/// Required anti-affinity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
pub struct RequiredAntiAffinity {}

/// Traffic routers and their shared settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouting {
    /// NGINX ingress: a canary Ingress with canary annotations next to each stable Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<NginxTrafficRouting>,
    /// Istio: route weights in VirtualServices (and subsets in a DestinationRule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioTrafficRouting>,
    /// Gateway API: the weights of the stable and canary Services' `backendRefs` in HTTPRoutes,
    /// GRPCRoutes, TCPRoutes or TLSRoutes. The same settings are accepted in Argo Rollouts'
    /// plugin shape, `plugins["argoproj-labs/gatewayAPI"]`.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiTrafficRouting>,
    /// Routes Sluice owns for `setHeaderRoute` and `setMirrorRoute`, highest precedence first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_routes: Vec<ManagedRoute>,
    /// Total of the traffic weights (default 100). `setWeight` ranges from 0 to this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_traffic_weight: Option<i32>,
    /// Argo Rollouts' AWS ALB router. Not supported by Sluice (use `nginx`, `istio` or `gatewayAPI`); kept by
    /// the schema so that the Rollout is refused by name instead of the API server dropping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub alb: Option<serde_json::Value>,
    /// Argo Rollouts' SMI router. Not supported by Sluice (use `nginx`, `istio` or `gatewayAPI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub smi: Option<serde_json::Value>,
    /// Argo Rollouts' AWS App Mesh router. Not supported by Sluice (use `nginx`, `istio` or `gatewayAPI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub app_mesh: Option<serde_json::Value>,
    /// Argo Rollouts' Apache APISIX router. Not supported by Sluice (use `nginx`, `istio` or `gatewayAPI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub apisix: Option<serde_json::Value>,
    /// Argo Rollouts' Ambassador router. Not supported by Sluice (use `nginx`, `istio` or `gatewayAPI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub ambassador: Option<serde_json::Value>,
    /// Argo Rollouts' Traefik router. Not supported by Sluice (use `nginx`, `istio` or `gatewayAPI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub traefik: Option<serde_json::Value>,
    /// Argo Rollouts' traffic router plugins, by plugin name. Sluice carries out
    /// `argoproj-labs/gatewayAPI` itself (the same settings as `gatewayAPI`); any other plugin is
    /// not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub plugins: Option<serde_json::Value>,
}

/// Name of Argo Rollouts' Gateway API traffic-router plugin, whose configuration
/// (`trafficRouting.plugins["argoproj-labs/gatewayAPI"]`) Sluice reads as `gatewayAPI`.
pub const GATEWAY_API_PLUGIN: &str = "argoproj-labs/gatewayAPI";

impl TrafficRouting {
    /// The routers of Argo Rollouts this Rollout configures that Sluice does not implement, by
    /// field name.
    pub fn unsupported_routers(&self) -> Vec<&'static str> {
        [
            ("alb", self.alb.is_some()),
            ("smi", self.smi.is_some()),
            ("appMesh", self.app_mesh.is_some()),
            ("apisix", self.apisix.is_some()),
            ("ambassador", self.ambassador.is_some()),
            ("traefik", self.traefik.is_some()),
            ("plugins", !self.unsupported_plugins().is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// The names of the configured plugins Sluice does not carry out (every plugin but
    /// [`GATEWAY_API_PLUGIN`]); `plugins` set to something that is not a map counts as one
    /// unnamed plugin.
    pub fn unsupported_plugins(&self) -> Vec<String> {
        match &self.plugins {
            None => Vec::new(),
            Some(serde_json::Value::Object(map)) => map
                .keys()
                .filter(|k| k.as_str() != GATEWAY_API_PLUGIN)
                .cloned()
                .collect(),
            Some(_) => vec![String::new()],
        }
    }

    /// Whether Gateway API routing is configured, in either shape (readable or not).
    pub fn has_gateway_api(&self) -> bool {
        self.gateway_api.is_some()
            || self
                .plugins
                .as_ref()
                .is_some_and(|p| p.get(GATEWAY_API_PLUGIN).is_some())
    }

    /// The Gateway API routing, from `gatewayAPI` or from the `argoproj-labs/gatewayAPI` plugin,
    /// with the field it came from. `Err` names the field and says what is wrong when both are
    /// set or the plugin's configuration cannot be read.
    pub fn gateway_api_config(
        &self,
    ) -> Result<Option<(String, GatewayApiTrafficRouting)>, (String, String)> {
        const T: &str = "spec.strategy.canary.trafficRouting";
        let plugin = self
            .plugins
            .as_ref()
            .and_then(|p| p.get(GATEWAY_API_PLUGIN))
            .map(|config| {
                let field = format!("{T}.plugins[\"{GATEWAY_API_PLUGIN}\"]");
                serde_json::from_value::<GatewayApiTrafficRouting>(config.clone())
                    .map(|c| (field.clone(), c))
                    .map_err(|e| (field, format!("cannot be read: {e}")))
            })
            .transpose()?;
        match (&self.gateway_api, plugin) {
            (Some(_), Some((field, _))) => Err((
                field,
                "gatewayAPI and the argoproj-labs/gatewayAPI plugin are mutually exclusive; keep one"
                    .into(),
            )),
            (Some(g), None) => Ok(Some((format!("{T}.gatewayAPI"), g.clone()))),
            (None, plugin) => Ok(plugin),
        }
    }
}

/// Gateway API routing: which routes carry the stable and canary Services' weights. Field names
/// are those of Argo Rollouts' `argoproj-labs/gatewayAPI` plugin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiTrafficRouting {
    /// The HTTPRoute (`gateway.networking.k8s.io/v1`) whose rules are weighted; header and
    /// mirror routes are added to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub http_route: Option<String>,
    /// Several HTTPRoutes; header and mirror routes go to those with `useHeaderRoutes: true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub http_routes: Vec<GatewayApiRoute>,
    /// The GRPCRoute (`gateway.networking.k8s.io/v1`) whose rules are weighted; header routes are
    /// added to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub grpc_route: Option<String>,
    /// Several GRPCRoutes; header routes go to those with `useHeaderRoutes: true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub grpc_routes: Vec<GatewayApiRoute>,
    /// The TCPRoute (`gateway.networking.k8s.io/v1alpha2`) whose rules are weighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tcp_route: Option<String>,
    /// Several TCPRoutes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tcp_routes: Vec<GatewayApiRoute>,
    /// The TLSRoute (`gateway.networking.k8s.io/v1alpha2`) whose rules are weighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tls_route: Option<String>,
    /// Several TLSRoutes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tls_routes: Vec<GatewayApiRoute>,
    /// Namespace of the routes (default: the Rollout's). Routes in another namespace reference
    /// the Services with a `namespace` on their backendRefs, which the Gateway accepts only when
    /// a ReferenceGrant in the Rollout's namespace allows it; that ReferenceGrant is yours to
    /// create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    /// Argo plugin only: the ConfigMap where the plugin records its managed routes. Sluice keeps
    /// that record on the routes themselves and ignores this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// Argo plugin only: how mirror routes are written. Sluice always writes a managed rule with
    /// a `RequestMirror` filter (the plugin's `rule` mode) and ignores this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_mode: Option<String>,
    /// Argo plugin only: the in-progress label the plugin puts on routes. Ignored by Sluice,
    /// which marks the routes it manages with an annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_in_progress_label: Option<bool>,
    /// Argo plugin only; ignored (see `disableInProgressLabel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress_label_key: Option<String>,
    /// Argo plugin only; ignored (see `disableInProgressLabel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress_label_value: Option<String>,
    /// Argo plugin's route discovery by label. Not supported by Sluice (name the routes); kept
    /// by the schema so that the Rollout is refused by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub http_route_selector: Option<serde_json::Value>,
    /// Not supported by Sluice (see `httpRouteSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub grpc_route_selector: Option<serde_json::Value>,
    /// Not supported by Sluice (see `httpRouteSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub tcp_route_selector: Option<serde_json::Value>,
    /// Not supported by Sluice (see `httpRouteSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub tls_route_selector: Option<serde_json::Value>,
}

/// A route named in a `httpRoutes`, `grpcRoutes`, `tcpRoutes` or `tlsRoutes` list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRoute {
    /// Route name.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Header (and mirror) routes of `setHeaderRoute` / `setMirrorRoute` steps are added to this
    /// route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_header_routes: Option<bool>,
}

/// NGINX ingress routing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NginxTrafficRouting {
    /// The Ingress routing to the stable Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_ingress: Option<String>,
    /// Several Ingresses routing to the stable Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stable_ingresses: Vec<String>,
    /// Annotation prefix of the ingress controller. Defaults to `nginx.ingress.kubernetes.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_prefix: Option<String>,
    /// Extra canary annotations, written with the prefix (e.g. `canary-by-header: X-Canary`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_ingress_annotations: BTreeMap<String, String>,
    /// Annotations written verbatim on the canary Ingress.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub canary_ingress_annotations: BTreeMap<String, String>,
}

/// Istio routing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct IstioTrafficRouting {
    /// The VirtualService whose routes are weighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<IstioVirtualService>,
    /// Several VirtualServices whose routes are weighted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_services: Vec<IstioVirtualService>,
    /// DestinationRule whose subsets select the canary and stable pods (subset-level split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<IstioDestinationRule>,
}

/// A VirtualService and the routes in it that Sluice weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct IstioVirtualService {
    /// Name of the VirtualService, in the Rollout's namespace.
    pub name: String,
    /// Names of HTTP routes to weight. Empty means the only HTTP route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// TLS routes to weight, by port and SNI hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<IstioTlsRoute>,
    /// TCP routes to weight, by port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<IstioTcpRoute>,
}

/// Selects a TLS route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct IstioTlsRoute {
    /// Port of the route's match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// SNI hosts of the route's match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
}

/// Selects a TCP route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct IstioTcpRoute {
    /// Port of the route's match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// The DestinationRule subsets Sluice points at the canary and stable pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct IstioDestinationRule {
    /// Name of the DestinationRule.
    pub name: String,
    /// Subset selecting the canary pods.
    pub canary_subset_name: String,
    /// Subset selecting the stable pods.
    pub stable_subset_name: String,
    /// Other subsets that keep their weight and are never removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_subset_names: Vec<String>,
}

/// A route Sluice owns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRoute {
    /// Route name.
    pub name: String,
}

/// An analysis referenced by a step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysis {
    /// Templates whose metrics make up the AnalysisRun.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<AnalysisTemplateRef>,
    /// Arguments passed to the templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<AnalysisRunArgument>,
    /// Metrics measured but never deciding the outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// How many measurements of each metric to keep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// Labels and annotations for the AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<ObjectMetadata>,
}

/// Background analysis: an AnalysisRun that runs through the rollout from `startingStep`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysisBackground {
    /// The analysis.
    #[serde(flatten)]
    pub analysis: RolloutAnalysis,
    /// Index of the step at which the analysis starts (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_step: Option<i32>,
}

/// Reference to an AnalysisTemplate or ClusterAnalysisTemplate (shared with the analysis kinds).
pub use super::analysis::AnalysisTemplateRef;

/// An argument passed from the Rollout to its analysis templates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunArgument {
    /// Argument name, as the template declares it.
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Value taken from the Rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ArgumentValueFrom>,
}

/// Where a Rollout-side argument takes its value from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArgumentValueFrom {
    /// The pod-template hash of the stable or the latest (canary) version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash_value: Option<PodTemplateHashValue>,
    /// A field of the Rollout, e.g. `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldRef>,
}

/// Which pod-template hash an argument takes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PodTemplateHashValue {
    /// The stable version's hash.
    Stable,
    /// The newest version's hash.
    Latest,
}

/// Observed state of a Rollout. Written by the controller; `abort`, `promoteFull`,
/// `pauseConditions` and `currentStepIndex` are also patched by users (promote, abort, retry).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Healthy, Progressing, Paused or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,
    /// Why the rollout is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status reflects. An integer (Argo Rollouts writes a string)
    /// so that kstatus (Flux) can compare it; Argo CD's health check reads both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Set by the user (`sluice abort`) to abort the update; cleared by retry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort: bool,
    /// When the update was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_at: Option<Time>,
    /// Set by the user (`sluice promote --full`) to skip the remaining steps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote_full: bool,
    /// Why the rollout is paused by the controller (pause step, inconclusive analysis).
    /// Cleared by the user to resume (`sluice promote`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pause_conditions: Vec<PauseCondition>,
    /// True while the controller holds the rollout in a pause.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller_pause: bool,
    /// Hash of the current pod template (the newest version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_pod_hash: Option<String>,
    /// Hash of the steps; a change restarts the steps of an update in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_hash: Option<String>,
    /// Index of the current step, from 0 as in Argo Rollouts; equal to the number of steps when
    /// all are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_index: Option<i32>,
    /// The step as people read it, numbered from 1 with the count (`3/7`): the current step, the
    /// last one once all are done, and while aborted the step the update was aborted at. Written
    /// by the controller for the `Step` printer column, which cannot add 1 to
    /// `currentStepIndex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// Index (from 0, as `currentStepIndex`) of the step the update was at when it was aborted.
    /// Set by the controller with `abortedAt`, cleared with it by retry or a new template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_at_step_index: Option<i32>,
    /// Hash of the stable ReplicaSet.
    #[serde(default, rename = "stableRS", skip_serializing_if = "Option::is_none")]
    pub stable_rs: Option<String>,
    /// Total pods of all ReplicaSets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods of the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// Ready pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Available pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Pods counted by the scale subresource (for the HorizontalPodAutoscaler).
    #[serde(
        default,
        rename = "HPAReplicas",
        skip_serializing_if = "Option::is_none"
    )]
    pub hpa_replicas: Option<i32>,
    /// Label selector of the pods, as a string (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Bumped when two templates hash alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// When all pods were last restarted for `spec.restartAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<Time>,
    /// Canary details.
    #[serde(default)]
    pub canary: CanaryStatus,
    /// Blue-green details (blue-green Rollouts only).
    #[serde(default, skip_serializing_if = "BlueGreenStatus::is_empty")]
    pub blue_green: BlueGreenStatus,
    /// Conditions (Argo Rollouts' types plus kstatus' Ready, Reconciling and Stalled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RolloutCondition>,
    /// Observed generation of the `workloadRef` Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_observed_generation: Option<String>,
}

/// Rollout phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutPhase {
    /// The current version is fully rolled out and available.
    Healthy,
    /// An update is under way.
    Progressing,
    /// Paused by a step, an inconclusive analysis or the user.
    Paused,
    /// Aborted, invalid, or past its progress deadline.
    Degraded,
}

impl RolloutPhase {
    /// The phase name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Healthy => "Healthy",
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Paused => "Paused",
            RolloutPhase::Degraded => "Degraded",
        }
    }
}

/// Why the controller paused the rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseCondition {
    /// `CanaryPauseStep` or `InconclusiveAnalysisRun`.
    pub reason: PauseReason,
    /// When the pause began.
    pub start_time: Time,
}

/// Pause reasons.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PauseReason {
    /// A `pause` step.
    CanaryPauseStep,
    /// An analysis ended Inconclusive.
    InconclusiveAnalysisRun,
    /// A blue-green rollout waits for promotion before switching the active Service.
    BlueGreenPause,
}

/// Canary status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The AnalysisRun of the current analysis step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    /// The background AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_background_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    /// Traffic weights last set on the routers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<TrafficWeights>,
}

/// Blue-green status, as in Argo Rollouts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStatus {
    /// Pod-template hash the active Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_selector: Option<String>,
    /// Pod-template hash the preview Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_selector: Option<String>,
    /// With `previewReplicaCount`: the preview reached its count, passed its pre-promotion
    /// analysis and its pause, so it is now scaled to full size. Reset by a new template and by
    /// the promotion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scale_up_preview_check_point: bool,
    /// The pre-promotion AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    /// The post-promotion AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis_run_status: Option<RolloutAnalysisRunStatus>,
}

impl BlueGreenStatus {
    /// Nothing recorded (a canary Rollout).
    pub fn is_empty(&self) -> bool {
        self == &BlueGreenStatus::default()
    }
}

/// Summary of an AnalysisRun on the Rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysisRunStatus {
    /// AnalysisRun name.
    pub name: String,
    /// AnalysisRun phase.
    pub status: AnalysisPhase,
    /// AnalysisRun message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Traffic weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficWeights {
    /// Weight of the canary.
    pub canary: WeightDestination,
    /// Weight of the stable version.
    pub stable: WeightDestination,
    /// Other destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<WeightDestination>,
    /// True when the weights were read back from the routers after being written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

/// A weighted destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct WeightDestination {
    /// Weight, from 0 to maxTrafficWeight.
    pub weight: i32,
    /// Service receiving the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Pod-template hash selected by that Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash: Option<String>,
}

/// A condition, in Argo Rollouts' shape.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCondition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default)]
    pub reason: String,
    /// Human-readable explanation.
    #[serde(default)]
    pub message: String,
    /// Last time the condition was updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// Last time the condition's status changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}
