//! What the CLI knows about one rollout: the objects read from the cluster ([`Snapshot`]) and the
//! view computed from them ([`RolloutView`]), which is what `get`, `explain`, `status` and the
//! JSON/YAML outputs print. The view is a pure function of the snapshot and `now`.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::api::analysis::{AnalysisRun, Metric};
use crate::api::common::AnalysisPhase;
use crate::api::constants::{
    POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, ROLLOUT_TYPE_LABEL, STEP_INDEX_LABEL,
};
use crate::api::rollout::{CanaryStep, PauseReason, Rollout, RolloutPhase};

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
    Ok(Snapshot::from_objects(rollout, replica_sets, runs))
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
    /// Traffic router: `nginx`, `istio`, or none (replica ratio).
    pub traffic_router: Option<String>,
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
    /// `spec.paused`.
    pub paused_by_user: bool,
    /// Pause reasons written by the controller.
    pub pause_reasons: Vec<String>,
    /// The update was aborted.
    pub aborted: bool,
    /// When it was aborted.
    pub aborted_at: Option<String>,
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
    /// AnalysisRuns of this revision, newest first.
    pub analysis_runs: Vec<RunView>,
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
    /// The condition it was judged by (`successCondition` or `failureCondition`).
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

fn run_view(run: &AnalysisRun) -> RunView {
    let status = run.status.clone().unwrap_or_default();
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
                    }
                })
                .collect();
            // Metrics not measured yet have no result: show them anyway, so a person sees what
            // the run will measure.
            for m in &run.spec.metrics {
                if !metrics.iter().any(|v| v.name == m.name) {
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
                    });
                }
            }
            metrics
        },
    }
}

fn int_or_str(
    v: &Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        Some(IntOrString::Int(i)) => Some(*i),
        Some(IntOrString::String(s)) => s.trim().parse().ok(),
        None => None,
    }
}

/// The metric and measurement that failed the newest failed run.
fn failure_of(runs: &[&AnalysisRun]) -> Option<FailureView> {
    let run = runs.iter().find(|r| {
        r.status.as_ref().is_some_and(|s| {
            matches!(
                s.phase,
                AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive
            )
        })
    })?;
    let status = run.status.as_ref()?;
    let result = status
        .metric_results
        .iter()
        .filter(|m| !m.dry_run)
        .max_by_key(|m| m.phase.severity())?;
    let spec: Option<&Metric> = run.spec.metrics.iter().find(|m| m.name == result.name);
    let (bad_phase, count, limit) = match result.phase {
        AnalysisPhase::Error => (
            AnalysisPhase::Error,
            result.consecutive_error,
            spec.and_then(|m| int_or_str(&m.consecutive_error_limit))
                .unwrap_or(4),
        ),
        AnalysisPhase::Inconclusive => (
            AnalysisPhase::Inconclusive,
            result.inconclusive,
            spec.and_then(|m| int_or_str(&m.inconclusive_limit))
                .unwrap_or(0),
        ),
        _ => (
            AnalysisPhase::Failed,
            result.failed,
            spec.and_then(|m| int_or_str(&m.failure_limit)).unwrap_or(0),
        ),
    };
    let value = result
        .measurements
        .iter()
        .rev()
        .find(|m| m.phase == bad_phase)
        .and_then(|m| m.value.clone().or_else(|| m.message.clone()));
    let (condition, condition_kind) = match spec {
        Some(m) if bad_phase == AnalysisPhase::Failed && m.failure_condition.is_some() => (
            m.failure_condition.clone(),
            Some("failureCondition".to_string()),
        ),
        Some(m) if m.success_condition.is_some() => (
            m.success_condition.clone(),
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

fn created(run: &AnalysisRun) -> Option<Timestamp> {
    run.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Computes the view of a snapshot.
pub fn view(snapshot: &Snapshot) -> RolloutView {
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
            } else {
                None
            }
        });
    let strategy = if ro.spec.strategy.blue_green.is_some() {
        "BlueGreen (not supported)".to_string()
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
            let hash = rs.labels().get(POD_TEMPLATE_HASH_LABEL).cloned();
            let mut roles = Vec::new();
            if hash.is_some() && hash == stable {
                roles.push("stable");
            }
            if hash.is_some() && hash == current_hash && hash != stable {
                roles.push("canary");
            }
            let rs_status = rs.status.clone().unwrap_or_default();
            let analysis_runs = runs
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    hash.is_some() && r.labels().get(POD_TEMPLATE_HASH_LABEL) == hash.as_ref()
                })
                .map(|(i, r)| {
                    used[i] = true;
                    run_view(r)
                })
                .collect();
            RevisionView {
                revision: revision_of(rs),
                replica_set: rs.name_any(),
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

    let mut view = RolloutView {
        name: ro.name_any(),
        namespace: ro.namespace().unwrap_or_default(),
        phase,
        message,
        strategy,
        traffic_router,
        current_step_index: index,
        step_count: steps.len(),
        steps: steps_view,
        desired_weight: desired_weight(steps, index, status.abort),
        actual_weight: status.canary.weights.as_ref().map(|w| w.canary.weight),
        paused_by_user: ro.spec.paused.unwrap_or(false),
        pause_reasons: status
            .pause_conditions
            .iter()
            .map(|p| pause_reason_text(p.reason).to_string())
            .collect(),
        aborted: status.abort,
        aborted_at: status.aborted_at.as_ref().map(time_text),
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
        // Only a rollout that stopped on analysis has "a value that broke it"; an older failed
        // run of a retried update is history, not the reason for the current state.
        failure: if status.abort
            || status.phase == Some(RolloutPhase::Degraded)
            || status
                .pause_conditions
                .iter()
                .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun)
        {
            failure_of(&runs)
        } else {
            None
        },
    };
    if view.aborted {
        // The controller resets currentStepIndex to 0 on abort: marking step 1 "current" would
        // mislead. Mark the step whose analysis failed, when known, instead.
        let failed = view
            .failure
            .as_ref()
            .and_then(|f| f.step_index)
            .and_then(|i| usize::try_from(i).ok());
        for s in &mut view.steps {
            s.state = match failed {
                Some(f) if s.index < f => "done",
                Some(f) if s.index == f => "aborted",
                _ => "pending",
            }
            .to_string();
        }
    }
    view
}

/// The name of a pause reason as written in status.
pub fn pause_reason_text(r: PauseReason) -> &'static str {
    match r {
        PauseReason::CanaryPauseStep => "CanaryPauseStep",
        PauseReason::InconclusiveAnalysisRun => "InconclusiveAnalysisRun",
        PauseReason::BlueGreenPause => "BlueGreenPause",
    }
}
