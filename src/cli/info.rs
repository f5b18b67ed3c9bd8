//! What the CLI knows about one rollout: the objects read from the cluster ([`Snapshot`]) and the
//! view computed from them ([`RolloutView`]), which is what `get`, `explain`, `status` and the
//! JSON/YAML outputs print. The view is a pure function of the snapshot and `now`.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::analysis::args::{ResolvedArgs, SecretValues};
use crate::api::analysis::{AnalysisRun, Argument, Metric};
use crate::api::common::AnalysisPhase;
use crate::api::constants::{
    FIELD_MANAGER, REVISION_ANNOTATION, ROLLOUT_TYPE_LABEL, STEP_INDEX_LABEL, pod_template_hash,
};
use crate::api::rollout::{CanaryStep, PauseReason, Rollout, RolloutPhase, RolloutStatus};

use super::kube::{CliError, Op, Target};

/// The objects behind one rollout, as read from the cluster.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The Rollout.
    pub rollout: Rollout,
    /// ReplicaSets owned by the Rollout.
    pub replica_sets: Vec<ReplicaSet>,
    /// AnalysisRuns owned by (or named in the status of) the Rollout.
    pub analysis_runs: Vec<AnalysisRun>,
    /// Pods of the Rollout (empty when they could not be read: restarts are then unknown).
    pub pods: Vec<Pod>,
    /// Whether the Pods were read.
    pub pods_read: bool,
}

/// Reads a Rollout and its ReplicaSets and AnalysisRuns.
pub async fn fetch(target: &Target, name: &str) -> Result<Snapshot, CliError> {
    let rollout = get_rollout(target, name).await?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(target.client.clone(), &target.namespace);
    // The ReplicaSets of a Rollout carry its selector's labels: ask only for those, so a watch
    // on a busy namespace does not list every ReplicaSet each second.
    let selector = rollout
        .spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let replica_sets = rs_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| (Op::apps("list", "replicasets", ""), e));
    let replica_sets = match replica_sets {
        Ok(list) => list.items,
        Err((op, e)) => return Err(target.error(op, e).await),
    };
    let ar_api: Api<AnalysisRun> = Api::namespaced(target.client.clone(), &target.namespace);
    let runs = match ar_api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            return Err(target
                .error(Op::sluice("list", "analysisruns", ""), e)
                .await);
        }
    };
    // Pods only add restarts: a user allowed to read Rollouts but not Pods still gets the view.
    let pod_api: Api<Pod> = Api::namespaced(target.client.clone(), &target.namespace);
    let pods = pod_api
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()
        .map(|l| l.items);
    let mut snapshot = Snapshot::from_objects(rollout, replica_sets, runs);
    if let Some(pods) = pods {
        snapshot.pods = pods;
        snapshot.pods_read = true;
    }
    Ok(snapshot)
}

/// Reads one Rollout.
pub async fn get_rollout(target: &Target, name: &str) -> Result<Rollout, CliError> {
    let api: Api<Rollout> = Api::namespaced(target.client.clone(), &target.namespace);
    match api.get(name).await {
        Ok(r) => Ok(r),
        Err(e) => Err(target.error(Op::sluice("get", "rollouts", name), e).await),
    }
}

/// True when `owner` is among `obj`'s ownerReferences (by uid when both have one, else by name).
fn owned_by<K: Resource>(obj: &K, rollout: &Rollout) -> bool {
    let uid = rollout.metadata.uid.as_deref();
    obj.meta().owner_references.iter().flatten().any(|o| {
        o.kind == "Rollout" && o.name == rollout.name_any() && uid.is_none_or(|u| u == o.uid)
    })
}

impl Snapshot {
    /// Keeps the ReplicaSets and AnalysisRuns that belong to `rollout`.
    pub fn from_objects(
        rollout: Rollout,
        replica_sets: Vec<ReplicaSet>,
        runs: Vec<AnalysisRun>,
    ) -> Self {
        let replica_sets = replica_sets
            .into_iter()
            .filter(|rs| owned_by(rs, &rollout))
            .collect();
        let named: Vec<String> = rollout
            .status
            .as_ref()
            .map(|s| {
                [
                    &s.canary.current_step_analysis_run_status,
                    &s.canary.current_background_analysis_run_status,
                    &s.blue_green.pre_promotion_analysis_run_status,
                    &s.blue_green.post_promotion_analysis_run_status,
                ]
                .into_iter()
                .flatten()
                .map(|r| r.name.clone())
                .collect()
            })
            .unwrap_or_default();
        let analysis_runs = runs
            .into_iter()
            .filter(|r| owned_by(r, &rollout) || named.contains(&r.name_any()))
            .collect();
        Snapshot {
            rollout,
            replica_sets,
            analysis_runs,
            pods: Vec::new(),
            pods_read: false,
        }
    }
}

/// Everything shown about a rollout. Field names are stable: `-o json|yaml` prints this.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// Rollout name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Healthy, Progressing, Paused or Degraded, as a client should read it (an unobserved spec
    /// change is Progressing whatever the status says).
    pub phase: String,
    /// Why it is in that phase.
    pub message: String,
    /// `Canary` (with its traffic router) or what the spec asks for.
    pub strategy: String,
    /// Traffic router: `nginx`, `istio`, `gatewayAPI`, or none (replica ratio).
    pub traffic_router: Option<String>,
    /// The Gateway API routes whose weights Sluice sets (`HTTPRoute web`, `HTTPRoute edge/web`
    /// for a route in another namespace); empty for other routers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic_routes: Vec<String>,
    /// Index of the current step (0-based, as in status); `None` when steps do not apply.
    pub current_step_index: Option<i32>,
    /// Number of steps.
    pub step_count: usize,
    /// Each step, with whether it is done, current or pending.
    pub steps: Vec<StepView>,
    /// Canary weight the current step asks for.
    pub desired_weight: i32,
    /// Canary weight last set on the router (from status).
    pub actual_weight: Option<i32>,
    /// Stable weight last set on the router (from status).
    pub stable_weight: Option<i32>,
    /// An update is in progress: the current pod template is not the stable one. When false,
    /// all traffic is on the stable revision whatever the canary weight in status says.
    pub update_in_progress: bool,
    /// `spec.paused`.
    pub paused_by_user: bool,
    /// Pause reasons written by the controller.
    pub pause_reasons: Vec<String>,
    /// The update was aborted.
    pub aborted: bool,
    /// When it was aborted.
    pub aborted_at: Option<String>,
    /// What aborted the current revision's update, and where.
    pub abort: Option<AbortView>,
    /// When the current timed pause step ends (RFC 3339), if in one.
    pub pause_ends_at: Option<String>,
    /// Seconds left in the current timed pause step.
    pub pause_seconds_left: Option<i64>,
    /// Desired pods.
    pub desired_replicas: i32,
    /// Pods of all versions.
    pub current_replicas: i32,
    /// Pods of the newest version.
    pub updated_replicas: i32,
    /// Ready pods.
    pub ready_replicas: i32,
    /// Available pods.
    pub available_replicas: i32,
    /// Revisions, newest first.
    pub revisions: Vec<RevisionView>,
    /// AnalysisRuns that belong to no listed revision, newest first.
    pub other_analysis_runs: Vec<RunView>,
    /// Status conditions.
    pub conditions: Vec<ConditionView>,
    /// When an analysis failed: the metric and the value that broke it.
    pub failure: Option<FailureView>,
    /// Metrics of the current revision's running AnalysisRuns whose latest measurement errored,
    /// with why: shown while the run goes on, not only once it fails.
    pub analysis_errors: Vec<AnalysisErrorView>,
    /// Blue-green Rollouts: the Services and what they select, and the analyses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenView>,
}

/// A blue-green Rollout's Services and analyses.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenView {
    /// The active Service (production traffic).
    pub active_service: String,
    /// Revision the active Service selects.
    pub active_revision: Option<i64>,
    /// The preview Service, if any.
    pub preview_service: Option<String>,
    /// Revision the preview Service selects.
    pub preview_revision: Option<i64>,
    /// The pre-promotion AnalysisRun and its phase.
    pub pre_promotion_analysis: Option<String>,
    /// The post-promotion AnalysisRun and its phase.
    pub post_promotion_analysis: Option<String>,
    /// Promotes by itself (`autoPromotionEnabled`, default true).
    pub auto_promotion: bool,
}

/// A metric that could not be measured, in a run still running.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisErrorView {
    /// AnalysisRun name.
    pub analysis_run: String,
    /// Metric name.
    pub metric: String,
    /// The latest measurement's message.
    pub message: String,
}

/// One canary step.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    /// 0-based index.
    pub index: usize,
    /// `setWeight: 20`, `pause: 30s`, `analysis: success-rate`...
    pub description: String,
    /// `done`, `current`, `pending`, or `aborted` (the step whose analysis aborted the update).
    pub state: String,
}

/// One revision (ReplicaSet) of the rollout.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    /// Revision number (annotation on the ReplicaSet).
    pub revision: Option<i64>,
    /// ReplicaSet name.
    pub replica_set: String,
    /// Pod-template hash.
    pub pod_template_hash: Option<String>,
    /// `stable`, `canary`, `stable,canary` or empty for older revisions.
    pub role: String,
    /// Container images.
    pub images: Vec<String>,
    /// Desired pods.
    pub desired: i32,
    /// Pods.
    pub total: i32,
    /// Ready pods.
    pub ready: i32,
    /// Available pods.
    pub available: i32,
    /// Container restarts summed over its pods; `None` when the pods could not be read.
    pub restarts: Option<i32>,
    /// When the ReplicaSet was created (RFC 3339).
    pub created: Option<String>,
    /// How long ago that was, as a person reads it (`5m`, `2h10m`).
    pub age: Option<String>,
    /// The revision being rolled out, or the stable one when no update is in progress.
    pub current: bool,
    /// AnalysisRuns of this revision, newest first.
    pub analysis_runs: Vec<RunView>,
}

/// Why and where the current revision's update was aborted.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AbortView {
    /// `analysis` (a failed AnalysisRun of the current revision), `user` (`status.abort` set by
    /// someone: `sluice abort`, kubectl, a GitOps tool) or `controller` (e.g. a progress deadline).
    pub cause: String,
    /// The field manager that set `status.abort`, from `metadata.managedFields`, when known.
    pub manager: Option<String>,
    /// When (RFC 3339), from `status.abortedAt`.
    pub at: Option<String>,
    /// The step (0-based) the update was at when it was aborted, when known.
    pub step_index: Option<i32>,
    /// The controller's words for it (`status.message`), when it gave any.
    pub reason: Option<String>,
}

/// One AnalysisRun.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// Name.
    pub name: String,
    /// `Step` or `Background`.
    pub kind: Option<String>,
    /// Index of the step that created it.
    pub step_index: Option<i32>,
    /// Run phase.
    pub phase: String,
    /// Run message.
    pub message: Option<String>,
    /// Per metric.
    pub metrics: Vec<MetricView>,
}

/// One metric of an AnalysisRun.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricView {
    /// Metric name.
    pub name: String,
    /// Metric phase.
    pub phase: String,
    /// Last measured values, oldest first (at most five).
    pub last_values: Vec<String>,
    /// Measurements counted.
    pub count: i32,
    /// Successful measurements.
    pub successful: i32,
    /// Failed measurements.
    pub failed: i32,
    /// Inconclusive measurements.
    pub inconclusive: i32,
    /// Errored measurements.
    pub error: i32,
    /// Metric message.
    pub message: Option<String>,
    /// Measurements the metric takes in all (`count`), when bounded.
    pub expected_count: Option<i32>,
    /// The condition its values are judged by, with `{{args.*}}` resolved.
    pub condition: Option<String>,
    /// `successCondition` or `failureCondition`.
    pub condition_kind: Option<String>,
    /// The message of the latest measurement when it errored (why it could not be measured).
    pub latest_error: Option<String>,
}

/// A status condition.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// Type.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// The measurement that failed an analysis.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailureView {
    /// AnalysisRun name.
    pub analysis_run: String,
    /// Step that ran it, when a step did.
    pub step_index: Option<i32>,
    /// Metric name.
    pub metric: String,
    /// Metric phase (Failed, Error or Inconclusive).
    pub phase: String,
    /// Value of the last failing measurement.
    pub value: Option<String>,
    /// The condition it was judged by (`successCondition` or `failureCondition`), with
    /// `{{args.*}}` resolved.
    pub condition: Option<String>,
    /// `successCondition` or `failureCondition`.
    pub condition_kind: Option<String>,
    /// Failed (or errored, or inconclusive) measurements.
    pub count: i32,
    /// The limit they exceeded.
    pub limit: i32,
    /// The run's message.
    pub message: Option<String>,
}

/// Describes one step the way it is written in YAML.
pub fn describe_step(step: &CanaryStep) -> String {
    if let Some(w) = step.set_weight {
        return format!("setWeight: {w}");
    }
    if let Some(p) = &step.pause {
        return match &p.duration {
            Some(d) => format!("pause: {}", duration_text(d)),
            None => "pause: until promoted".to_string(),
        };
    }
    if let Some(a) = &step.analysis {
        let names: Vec<&str> = a
            .templates
            .iter()
            .map(|t| t.template_name.as_str())
            .collect();
        return format!("analysis: {}", names.join(", "));
    }
    if let Some(s) = &step.set_canary_scale {
        if let Some(r) = s.replicas {
            return format!("setCanaryScale: {r} replicas");
        }
        if let Some(w) = s.weight {
            return format!("setCanaryScale: {w}%");
        }
        return "setCanaryScale: match traffic weight".to_string();
    }
    if let Some(h) = &step.set_header_route {
        return format!("setHeaderRoute: {}", h.name);
    }
    if let Some(m) = &step.set_mirror_route {
        return format!("setMirrorRoute: {}", m.name);
    }
    if step.experiment.is_some() {
        return "experiment (not supported)".to_string();
    }
    if step.plugin.is_some() {
        return "plugin (not supported)".to_string();
    }
    "(empty step)".to_string()
}

fn duration_text(d: &crate::api::duration::IntOrDuration) -> String {
    serde_json::to_value(d)
        .ok()
        .map(|v| match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => format!("{n}s"),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// The canary weight the steps ask for at `index` (the last `setWeight` at or before it; 100
/// once every step is done), as Argo Rollouts computes it.
pub fn desired_weight(steps: &[CanaryStep], index: Option<i32>, aborted: bool) -> i32 {
    if aborted {
        return 0;
    }
    let Some(index) = index else { return 0 };
    let index = usize::try_from(index).unwrap_or(0);
    if index >= steps.len() {
        return 100;
    }
    steps[..=index]
        .iter()
        .rev()
        .find_map(|s| s.set_weight)
        .unwrap_or(0)
}

/// The phase a client should show (Argo's `rolloututil.GetRolloutPhase` client side).
pub fn client_phase(rollout: &Rollout) -> (String, String) {
    let status = rollout.status.as_ref();
    let generation = rollout.metadata.generation;
    let observed = status.and_then(|s| s.observed_generation);
    if let (Some(g), Some(o)) = (generation, observed)
        && o < g
    {
        return (
            "Progressing".into(),
            "waiting for the controller to observe the new spec".into(),
        );
    }
    let Some(status) = status else {
        return (
            "Progressing".into(),
            "waiting for the controller (no status yet)".into(),
        );
    };
    if observed.is_none() && generation.is_some() {
        return (
            "Progressing".into(),
            "waiting for the controller (no status yet)".into(),
        );
    }
    if status.controller_pause && status.pause_conditions.is_empty() {
        return (
            "Progressing".into(),
            "waiting for the rollout to unpause".into(),
        );
    }
    let phase = status
        .phase
        .unwrap_or(RolloutPhase::Progressing)
        .as_str()
        .to_string();
    (phase, status.message.clone().unwrap_or_default())
}

fn time_text(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.to_string()
}

fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|v| v.trim().parse().ok())
}

/// The run's arguments that have a literal value, ready for substitution. Secret-backed ones are
/// left out on purpose: the CLI never reads Secrets, and a threshold is not kept in one.
fn literal_args(run: &AnalysisRun) -> ResolvedArgs {
    let literal: Vec<Argument> = run
        .spec
        .args
        .iter()
        .filter(|a| a.value.is_some())
        .cloned()
        .collect();
    ResolvedArgs::resolve(&literal, &SecretValues::new()).unwrap_or_default()
}

/// `text` with its `{{args.*}}` resolved, or as written when an argument is not known here.
fn resolved(args: &ResolvedArgs, text: &str) -> String {
    args.substitute(text, "")
        .unwrap_or_else(|_| text.to_string())
}

/// The condition a metric's values are judged by, resolved: the success condition, else the
/// failure condition.
fn metric_condition(args: &ResolvedArgs, m: &Metric) -> (Option<String>, Option<String>) {
    match (&m.success_condition, &m.failure_condition) {
        (Some(c), _) => (
            Some(resolved(args, c)),
            Some("successCondition".to_string()),
        ),
        (None, Some(c)) => (
            Some(resolved(args, c)),
            Some("failureCondition".to_string()),
        ),
        (None, None) => (None, None),
    }
}

fn run_view(run: &AnalysisRun) -> RunView {
    let status = run.status.clone().unwrap_or_default();
    let args = literal_args(run);
    let spec_of = |name: &str| run.spec.metrics.iter().find(|m| m.name == name);
    let extras = |name: &str| {
        let spec = spec_of(name);
        let (condition, condition_kind) = spec
            .map(|m| metric_condition(&args, m))
            .unwrap_or((None, None));
        let expected_count = spec.and_then(|m| match &m.count {
            Some(IntOrString::String(s)) => resolved(&args, s).trim().parse().ok(),
            other => int_or_str(other),
        });
        (condition, condition_kind, expected_count)
    };
    let running = matches!(
        status.phase,
        AnalysisPhase::Pending | AnalysisPhase::Running
    );
    RunView {
        name: run.name_any(),
        kind: run.labels().get(ROLLOUT_TYPE_LABEL).cloned(),
        step_index: run
            .labels()
            .get(STEP_INDEX_LABEL)
            .and_then(|v| v.parse().ok()),
        phase: status.phase.as_str().to_string(),
        message: status.message.clone(),
        metrics: {
            let mut metrics: Vec<MetricView> = status
                .metric_results
                .iter()
                .map(|m| {
                    let skip = m.measurements.len().saturating_sub(5);
                    let (condition, condition_kind, expected_count) = extras(&m.name);
                    // Why the newest measurement could not be taken, while it still matters:
                    // once the run is over, its own message says why it ended.
                    let latest_error = m
                        .measurements
                        .last()
                        .filter(|x| x.phase == AnalysisPhase::Error)
                        .and_then(|x| x.message.clone())
                        .or_else(|| {
                            (m.phase == AnalysisPhase::Error)
                                .then(|| m.message.clone())
                                .flatten()
                        })
                        .filter(|_| running || m.phase == AnalysisPhase::Error);
                    MetricView {
                        name: m.name.clone(),
                        phase: m.phase.as_str().to_string(),
                        last_values: m.measurements[skip..]
                            .iter()
                            .map(|x| x.value.clone().unwrap_or_else(|| x.phase.as_str().into()))
                            .collect(),
                        count: m.count,
                        successful: m.successful,
                        failed: m.failed,
                        inconclusive: m.inconclusive,
                        error: m.error,
                        message: m.message.clone(),
                        expected_count,
                        condition,
                        condition_kind,
                        latest_error,
                    }
                })
                .collect();
            // Metrics not measured yet have no result: show them anyway, so a person sees what
            // the run will measure.
            for m in &run.spec.metrics {
                if !metrics.iter().any(|v| v.name == m.name) {
                    let (condition, condition_kind, expected_count) = extras(&m.name);
                    metrics.push(MetricView {
                        name: m.name.clone(),
                        phase: AnalysisPhase::Pending.as_str().to_string(),
                        last_values: Vec::new(),
                        count: 0,
                        successful: 0,
                        failed: 0,
                        inconclusive: 0,
                        error: 0,
                        message: None,
                        expected_count,
                        condition,
                        condition_kind,
                        latest_error: None,
                    });
                }
            }
            metrics
        },
    }
}

fn int_or_str(v: &Option<IntOrString>) -> Option<i32> {
    match v {
        Some(IntOrString::Int(i)) => Some(*i),
        Some(IntOrString::String(s)) => s.trim().parse().ok(),
        None => None,
    }
}

/// A limit as the run judged it: `{{args.*}}` resolved first.
fn limit_of(args: &ResolvedArgs, v: &Option<IntOrString>) -> Option<i32> {
    match v {
        Some(IntOrString::String(s)) => resolved(args, s).trim().parse().ok(),
        other => int_or_str(other),
    }
}

fn failed_phase(run: &AnalysisRun) -> bool {
    run.status.as_ref().is_some_and(|s| {
        matches!(
            s.phase,
            AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive
        )
    })
}

/// The metric and measurement that failed `run`.
fn failure_view(run: &AnalysisRun) -> Option<FailureView> {
    let status = run.status.as_ref()?;
    let result = status
        .metric_results
        .iter()
        .filter(|m| !m.dry_run)
        .max_by_key(|m| m.phase.severity())?;
    let args = literal_args(run);
    let spec: Option<&Metric> = run.spec.metrics.iter().find(|m| m.name == result.name);
    let (bad_phase, count, limit) = match result.phase {
        AnalysisPhase::Error => (
            AnalysisPhase::Error,
            result.consecutive_error,
            spec.and_then(|m| limit_of(&args, &m.consecutive_error_limit))
                .unwrap_or(4),
        ),
        AnalysisPhase::Inconclusive => (
            AnalysisPhase::Inconclusive,
            result.inconclusive,
            spec.and_then(|m| limit_of(&args, &m.inconclusive_limit))
                .unwrap_or(0),
        ),
        _ => (
            AnalysisPhase::Failed,
            result.failed,
            spec.and_then(|m| limit_of(&args, &m.failure_limit))
                .unwrap_or(0),
        ),
    };
    let value = result
        .measurements
        .iter()
        .rev()
        .find(|m| m.phase == bad_phase)
        .and_then(|m| m.value.clone().or_else(|| m.message.clone()));
    // A judge metric has no condition: its verdict is the sentence of its deciding measurement.
    let judge_sentence = spec.filter(|m| m.provider.judge.is_some()).and_then(|_| {
        result
            .measurements
            .iter()
            .rev()
            .find(|m| m.phase == bad_phase)
            .and_then(|m| m.message.clone())
    });
    let (condition, condition_kind) = match spec {
        _ if judge_sentence.is_some() => (judge_sentence, Some("judge".to_string())),
        Some(m) if bad_phase == AnalysisPhase::Failed && m.failure_condition.is_some() => (
            m.failure_condition.as_deref().map(|c| resolved(&args, c)),
            Some("failureCondition".to_string()),
        ),
        Some(m) if m.success_condition.is_some() => (
            m.success_condition.as_deref().map(|c| resolved(&args, c)),
            Some("successCondition".to_string()),
        ),
        _ => (None, None),
    };
    Some(FailureView {
        analysis_run: run.name_any(),
        step_index: run
            .labels()
            .get(STEP_INDEX_LABEL)
            .and_then(|v| v.parse().ok()),
        metric: result.name.clone(),
        phase: result.phase.as_str().to_string(),
        value,
        condition,
        condition_kind,
        count,
        limit,
        message: status.message.clone(),
    })
}

/// When a run ended: `completedAt`, else its newest measurement, else its creation.
fn finished(run: &AnalysisRun) -> Option<Timestamp> {
    let status = run.status.as_ref();
    status
        .and_then(|s| s.completed_at.as_ref().map(|t| t.0))
        .or_else(|| {
            status
                .into_iter()
                .flat_map(|s| &s.metric_results)
                .flat_map(|m| &m.measurements)
                .filter_map(|m| {
                    m.finished_at
                        .as_ref()
                        .or(m.started_at.as_ref())
                        .map(|t| t.0)
                })
                .max()
        })
        .or_else(|| created(run))
}

/// The failed run that explains the current state, among the current revision's runs only (an
/// earlier revision's failure is history). The runs the status names decide when it names any:
/// after a retry or a manual abort they are the runs of this attempt, which did not fail. When
/// the status names none, the newest failed run that ended by the abort (if any) is taken.
fn current_failure(
    status: &RolloutStatus,
    runs: &[&AnalysisRun],
    current: &dyn Fn(&AnalysisRun) -> bool,
) -> Option<FailureView> {
    let named: Vec<&str> = [
        &status.canary.current_step_analysis_run_status,
        &status.canary.current_background_analysis_run_status,
    ]
    .into_iter()
    .flatten()
    .map(|r| r.name.as_str())
    .collect();
    let mine = runs.iter().filter(|r| current(r));
    if !named.is_empty() {
        return mine
            .filter(|r| named.contains(&r.name_any().as_str()) && failed_phase(r))
            .find_map(|r| failure_view(r));
    }
    // Slack for a controller that writes abortedAt a moment before the run's final status lands.
    let by = status
        .aborted_at
        .as_ref()
        .map(|t| t.0 + jiff::SignedDuration::from_secs(60));
    mine.filter(|r| failed_phase(r))
        .filter(|r| match (by, finished(r)) {
            (Some(by), Some(done)) => done <= by,
            _ => true,
        })
        .find_map(|r| failure_view(r))
}

fn created(run: &AnalysisRun) -> Option<Timestamp> {
    run.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// The step (1-based in the text, returned 0-based) named by the controller's abort message,
/// "aborted at step 4 of 6: ...".
fn step_in_message(text: &str) -> Option<i32> {
    let rest = &text[text.find("at step ")? + "at step ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let n: i32 = digits.parse().ok()?;
    (n >= 1).then_some(n - 1)
}

/// The field managers that last set `status.abort`, from `metadata.managedFields`.
fn abort_managers(ro: &Rollout) -> Vec<String> {
    ro.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|e| {
            e.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:status"))
                .and_then(|s| s.get("f:abort"))
                .is_some()
        })
        .filter_map(|e| e.manager.clone())
        .collect()
}

/// What aborted the update: a failed run of the current revision, a user, or the controller.
fn abort_view(ro: &Rollout, status: &RolloutStatus, failure: Option<&FailureView>) -> AbortView {
    let message = status.message.clone().filter(|m| !m.is_empty());
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .map(|c| c.message.clone());
    // The controller records the step; status written before it did says it only in words.
    let step_index = status
        .aborted_at_step_index
        .or_else(|| failure.and_then(|f| f.step_index))
        .or_else(|| message.as_deref().and_then(step_in_message))
        .or_else(|| progressing.as_deref().and_then(step_in_message));
    let managers = abort_managers(ro);
    let user = managers
        .iter()
        .find(|m| m.as_str() != FIELD_MANAGER)
        .cloned();
    let by_controller = user.is_none() && managers.iter().any(|m| m == FIELD_MANAGER);
    let says_user = message
        .as_deref()
        .is_some_and(|m| m.contains("aborted by the user"));
    let cause = if failure.is_some() {
        "analysis"
    } else if by_controller && !says_user {
        "controller"
    } else {
        "user"
    };
    AbortView {
        cause: cause.to_string(),
        manager: if cause == "user" { user } else { None },
        at: status.aborted_at.as_ref().map(time_text),
        step_index,
        reason: message,
    }
}

/// The end of the current timed pause step and the seconds left, if in one.
fn timed_pause(
    steps: &[CanaryStep],
    status: &RolloutStatus,
    now: Timestamp,
) -> (Option<String>, Option<i64>) {
    let step = status
        .current_step_index
        .and_then(|i| steps.get(usize::try_from(i).ok()?));
    let duration = step
        .and_then(|s| s.pause.as_ref())
        .and_then(|p| p.duration.as_ref())
        .and_then(|d| d.to_std().ok());
    let start = status
        .pause_conditions
        .iter()
        .find(|p| p.reason == PauseReason::CanaryPauseStep)
        .map(|p| p.start_time.0);
    match (duration, start) {
        (Some(d), Some(start)) if !status.abort => {
            let Ok(d) = jiff::SignedDuration::try_from(d) else {
                return (None, None);
            };
            let Ok(end) = start.checked_add(d) else {
                return (None, None);
            };
            let left = end.duration_since(now).as_secs().max(0);
            (Some(end.to_string()), Some(left))
        }
        _ => (None, None),
    }
}

/// The Gateway API routes a Rollout weights, as `Kind name` (`Kind namespace/name` when the
/// route is in another namespace than the Rollout).
fn gateway_routes(ro: &Rollout) -> Vec<String> {
    let Some(Ok(Some((_, g)))) = ro
        .spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.traffic_routing.as_ref())
        .map(|t| t.gateway_api_config())
    else {
        return Vec::new();
    };
    let own = ro.metadata.namespace.clone().unwrap_or_default();
    let prefix = match g.namespace.as_deref() {
        Some(ns) if !ns.is_empty() && ns != own => format!("{ns}/"),
        _ => String::new(),
    };
    let kinds = [
        ("HTTPRoute", &g.http_route, &g.http_routes),
        ("GRPCRoute", &g.grpc_route, &g.grpc_routes),
        ("TCPRoute", &g.tcp_route, &g.tcp_routes),
        ("TLSRoute", &g.tls_route, &g.tls_routes),
    ];
    kinds
        .into_iter()
        .flat_map(|(kind, single, list)| {
            single
                .iter()
                .chain(list.iter().map(|r| &r.name))
                .map(|name| format!("{kind} {prefix}{name}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// When a blue-green pause with `autoPromotionSeconds` promotes by itself, and the seconds
/// left.
fn auto_promotion(
    bg: &crate::api::rollout::BlueGreenStrategy,
    status: &RolloutStatus,
    now: Timestamp,
) -> (Option<String>, Option<i64>) {
    let seconds = bg
        .auto_promotion_seconds
        .filter(|s| *s > 0 && bg.auto_promotion_enabled != Some(false));
    let start = status
        .pause_conditions
        .iter()
        .find(|p| p.reason == PauseReason::BlueGreenPause)
        .map(|p| p.start_time.0);
    match (seconds, start) {
        (Some(s), Some(start)) if !status.abort => {
            let Ok(end) = start.checked_add(jiff::SignedDuration::from_secs(i64::from(s))) else {
                return (None, None);
            };
            let left = end.duration_since(now).as_secs().max(0);
            (Some(end.to_string()), Some(left))
        }
        _ => (None, None),
    }
}

/// Computes the view of a snapshot, now.
pub fn view(snapshot: &Snapshot) -> RolloutView {
    view_at(snapshot, Timestamp::now())
}

/// Computes the view of a snapshot at `now` (for the time left in a pause).
pub fn view_at(snapshot: &Snapshot, now: Timestamp) -> RolloutView {
    let ro = &snapshot.rollout;
    let status = ro.status.clone().unwrap_or_default();
    let canary = ro.spec.strategy.canary.as_ref();
    let steps: &[CanaryStep] = canary.map(|c| c.steps.as_slice()).unwrap_or(&[]);
    let traffic_router = canary
        .and_then(|c| c.traffic_routing.as_ref())
        .and_then(|t| {
            if t.nginx.is_some() {
                Some("nginx".to_string())
            } else if t.istio.is_some() {
                Some("istio".to_string())
            } else if t.has_gateway_api() {
                Some("gatewayAPI".to_string())
            } else {
                None
            }
        });
    let strategy = if ro.spec.strategy.blue_green.is_some() && canary.is_none() {
        "BlueGreen".to_string()
    } else {
        match &traffic_router {
            Some(r) => format!("Canary ({r})"),
            None => "Canary".to_string(),
        }
    };
    let index = status.current_step_index;
    let current = index.and_then(|i| usize::try_from(i).ok());
    let steps_view = steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepView {
            index: i,
            description: describe_step(s),
            state: match current {
                Some(c) if i < c => "done",
                Some(c) if i == c => "current",
                _ => "pending",
            }
            .to_string(),
        })
        .collect();
    let (phase, message) = client_phase(ro);

    let stable = status.stable_rs.clone();
    let current_hash = status.current_pod_hash.clone();
    let update_in_progress = current_hash.is_some() && current_hash != stable;
    let current_revision = snapshot
        .replica_sets
        .iter()
        .find(|rs| {
            current_hash.is_some() && pod_template_hash(rs.labels()) == current_hash.as_ref()
        })
        .and_then(revision_of);
    // A run belongs to the current revision when it carries the current pod hash and, if it
    // records a revision, the current one (an undo back to an old template reuses its hash).
    let is_current = |r: &AnalysisRun| {
        current_hash.is_some()
            && pod_template_hash(r.labels()) == current_hash.as_ref()
            && match (
                r.annotations()
                    .get(REVISION_ANNOTATION)
                    .and_then(|v| v.trim().parse::<i64>().ok()),
                current_revision,
            ) {
                (Some(run), Some(cur)) => run == cur,
                _ => true,
            }
    };
    let mut runs: Vec<&AnalysisRun> = snapshot.analysis_runs.iter().collect();
    runs.sort_by(|a, b| {
        created(b)
            .cmp(&created(a))
            .then(b.name_any().cmp(&a.name_any()))
    });
    let mut used = vec![false; runs.len()];
    let mut revisions: Vec<RevisionView> = snapshot
        .replica_sets
        .iter()
        .map(|rs| {
            let hash = pod_template_hash(rs.labels()).cloned();
            let mut roles = Vec::new();
            if hash.is_some() && hash == stable {
                roles.push("stable");
            }
            if hash.is_some() && hash == current_hash && hash != stable && canary.is_some() {
                roles.push("canary");
            }
            if canary.is_none() && hash.is_some() {
                if hash == status.blue_green.active_selector {
                    roles.push("active");
                }
                if hash == status.blue_green.preview_selector {
                    roles.push("preview");
                }
            }
            let rs_status = rs.status.clone().unwrap_or_default();
            let analysis_runs = runs
                .iter()
                .enumerate()
                .filter(|(_, r)| hash.is_some() && pod_template_hash(r.labels()) == hash.as_ref())
                .map(|(i, r)| {
                    used[i] = true;
                    run_view(r)
                })
                .collect();
            let restarts = snapshot.pods_read.then(|| {
                snapshot
                    .pods
                    .iter()
                    .filter(|p| hash.is_some() && pod_template_hash(p.labels()) == hash.as_ref())
                    .flat_map(|p| {
                        p.status
                            .iter()
                            .flat_map(|s| s.container_statuses.iter().flatten())
                    })
                    .map(|c| c.restart_count)
                    .sum()
            });
            RevisionView {
                revision: revision_of(rs),
                replica_set: rs.name_any(),
                current: hash.is_some() && hash == current_hash,
                pod_template_hash: hash,
                role: roles.join(","),
                images: rs
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.spec.as_ref())
                    .map(|p| {
                        p.containers
                            .iter()
                            .filter_map(|c| c.image.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                desired: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
                total: rs_status.replicas,
                ready: rs_status.ready_replicas.unwrap_or(0),
                available: rs_status.available_replicas.unwrap_or(0),
                restarts,
                created: rs.metadata.creation_timestamp.as_ref().map(time_text),
                age: rs
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| short_duration(now.duration_since(t.0).as_secs().max(0))),
                analysis_runs,
            }
        })
        .collect();
    revisions.sort_by(|a, b| {
        b.revision
            .cmp(&a.revision)
            .then(a.replica_set.cmp(&b.replica_set))
    });
    let other_analysis_runs = runs
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(r, _)| run_view(r))
        .collect();

    // Only a rollout that stopped on analysis has "a value that broke it", and only a run of the
    // current revision can have broken it: an older revision's failure is history.
    let stopped = status.abort
        || status.phase == Some(RolloutPhase::Degraded)
        || status
            .pause_conditions
            .iter()
            .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun);
    let failure = if stopped {
        current_failure(&status, &runs, &is_current)
    } else {
        None
    };
    let abort = status
        .abort
        .then(|| abort_view(ro, &status, failure.as_ref()));
    let analysis_errors = runs
        .iter()
        .filter(|r| is_current(r))
        .map(|r| run_view(r))
        .filter(|r| r.phase == "Running" || r.phase == "Pending")
        .flat_map(|r| {
            r.metrics
                .into_iter()
                .filter_map(|m| {
                    Some(AnalysisErrorView {
                        analysis_run: r.name.clone(),
                        metric: m.name,
                        message: m.latest_error?,
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let (pause_ends_at, pause_seconds_left) = match ro.spec.strategy.blue_green.as_ref() {
        Some(bg) if canary.is_none() => auto_promotion(bg, &status, now),
        _ => timed_pause(steps, &status, now),
    };
    let blue_green = ro
        .spec
        .strategy
        .blue_green
        .as_ref()
        .filter(|_| canary.is_none())
        .map(|bg| {
            let revision = |hash: &Option<String>| {
                snapshot
                    .replica_sets
                    .iter()
                    .find(|rs| hash.is_some() && pod_template_hash(rs.labels()) == hash.as_ref())
                    .and_then(revision_of)
            };
            let run = |r: &Option<crate::api::rollout::RolloutAnalysisRunStatus>| {
                r.as_ref().map(|r| format!("{} ({})", r.name, r.status))
            };
            BlueGreenView {
                active_service: bg.active_service.clone(),
                active_revision: revision(&status.blue_green.active_selector),
                preview_service: bg.preview_service.clone().filter(|s| !s.is_empty()),
                preview_revision: revision(&status.blue_green.preview_selector),
                pre_promotion_analysis: run(&status.blue_green.pre_promotion_analysis_run_status),
                post_promotion_analysis: run(&status.blue_green.post_promotion_analysis_run_status),
                auto_promotion: bg.auto_promotion_enabled != Some(false),
            }
        });

    let mut view = RolloutView {
        name: ro.name_any(),
        namespace: ro.namespace().unwrap_or_default(),
        phase,
        message,
        strategy,
        traffic_router,
        traffic_routes: gateway_routes(ro),
        current_step_index: index,
        step_count: steps.len(),
        steps: steps_view,
        desired_weight: desired_weight(steps, index, status.abort),
        actual_weight: status.canary.weights.as_ref().map(|w| w.canary.weight),
        stable_weight: status.canary.weights.as_ref().map(|w| w.stable.weight),
        update_in_progress,
        paused_by_user: ro.spec.paused.unwrap_or(false),
        pause_reasons: status
            .pause_conditions
            .iter()
            .map(|p| pause_reason_text(p.reason).to_string())
            .collect(),
        aborted: status.abort,
        aborted_at: status.aborted_at.as_ref().map(time_text),
        abort,
        pause_ends_at,
        pause_seconds_left,
        desired_replicas: ro.spec.replicas.unwrap_or(1),
        current_replicas: status.replicas.unwrap_or(0),
        updated_replicas: status.updated_replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        available_replicas: status.available_replicas.unwrap_or(0),
        revisions,
        other_analysis_runs,
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect(),
        failure,
        analysis_errors,
        blue_green,
    };
    if view.aborted {
        // The controller resets currentStepIndex to 0 on abort: marking step 1 "current" would
        // mislead. Mark the step the update was aborted at, when known, instead.
        let at = view
            .abort
            .as_ref()
            .and_then(|a| a.step_index)
            .and_then(|i| usize::try_from(i).ok());
        for s in &mut view.steps {
            s.state = match at {
                Some(f) if s.index < f => "done",
                Some(f) if s.index == f => "aborted",
                _ => "pending",
            }
            .to_string();
        }
    }
    view
}

/// The step a person should read for this view, 1-based with the count: the step the update
/// was aborted at, else the current one (`all done` past the last).
pub fn step_text(v: &RolloutView) -> Option<String> {
    if v.step_count == 0 {
        return None;
    }
    let n = v.step_count;
    if v.aborted {
        return Some(match v.abort.as_ref().and_then(|a| a.step_index) {
            Some(i) => format!("{}/{n} (aborted)", i + 1),
            None => format!("-/{n} (aborted)"),
        });
    }
    Some(match v.current_step_index {
        Some(i) if usize::try_from(i).is_ok_and(|i| i >= n) => {
            format!("{n}/{n} (all steps done)")
        }
        Some(i) => format!("{}/{n}", i + 1),
        None => format!("-/{n}"),
    })
}

/// The step column of a Rollout read alone (no runs): 1-based `current/total`; for an aborted
/// update, the step it was aborted at (`status.abortedAtStepIndex`, or the controller's message
/// in status written before that field), as `explain` says it.
pub fn rollout_step_text(ro: &Rollout) -> String {
    let status = ro.status.clone().unwrap_or_default();
    let n = ro
        .spec
        .strategy
        .canary
        .as_ref()
        .map_or(0, |c| c.steps.len());
    if n == 0 {
        return "-".to_string();
    }
    if status.abort {
        let from_conditions = || {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "Progressing")
                .and_then(|c| step_in_message(&c.message))
        };
        return match status.aborted_at_step_index.or_else(|| {
            status
                .message
                .as_deref()
                .and_then(step_in_message)
                .or_else(from_conditions)
        }) {
            Some(i) => format!("{}/{n}", i + 1),
            None => format!("-/{n}"),
        };
    }
    match status.current_step_index {
        Some(i) => format!("{}/{n}", usize::try_from(i + 1).unwrap_or(0).min(n)),
        None => format!("-/{n}"),
    }
}

/// A measured value as a person reads it: numbers to four significant digits (0.6892, not
/// 0.6892477353288697), in the shape the provider returned (`[0.6892]`). Anything else as is.
pub fn round_value(raw: &str) -> String {
    fn number(v: &serde_json::Value) -> Option<String> {
        v.as_f64().map(|x| {
            if v.is_i64() || v.is_u64() {
                v.to_string()
            } else {
                significant(x, 4)
            }
        })
    }
    match serde_json::from_str::<serde_json::Value>(raw.trim()) {
        Ok(serde_json::Value::Array(items)) if items.iter().all(|i| i.is_number()) => format!(
            "[{}]",
            items
                .iter()
                .filter_map(number)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Ok(v @ serde_json::Value::Number(_)) => number(&v).unwrap_or_else(|| raw.to_string()),
        _ => raw.to_string(),
    }
}

pub use crate::analysis::value::significant;

/// Seconds as "45s", "5m", "5m30s", "2h10m", "3d".
pub fn short_duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 600 && s % 60 != 0 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => {
            let m = (s % 3600) / 60;
            if m == 0 {
                format!("{}h", s / 3600)
            } else {
                format!("{}h{m}m", s / 3600)
            }
        }
        s => format!("{}d", s / 86_400),
    }
}

/// The name of a pause reason as written in status (one spelling, shared with the actions).
pub use crate::plan::actions::pause_reason_text;
