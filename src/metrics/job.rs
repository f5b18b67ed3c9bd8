//! The job metric provider: one Kubernetes Job per measurement, as in Argo Rollouts. The
//! measurement is Running while the Job runs, Successful when it completes, Failed when it fails,
//! and Error when it cannot be created. When the run stops first, the Job is deleted with its
//! pods and the measurement ends Inconclusive ("Metric Terminated").
//!
//! [`build_job`] is pure (the Job a measurement creates); the functions below it do the I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::{Resource, ResourceExt};

use crate::analysis::run::{JOB_NAME_KEY, JOB_NAMESPACE_KEY, METRIC_TERMINATED, ProviderResult};
use crate::analysis::value::MetricValue;
use crate::api::analysis::{AnalysisRun, JobMetricMetadata};
use crate::api::common::AnalysisPhase;
use crate::api::constants::FIELD_MANAGER;

/// Label on a metric's Job and its pods: the uid of the AnalysisRun (Argo Rollouts:
/// `analysisrun.argoproj.io/uid`). The controller watches Jobs by it.
pub const RUN_UID_LABEL: &str = "analysisrun.sluice.dev/uid";
/// Annotation on a metric's Job: the AnalysisRun's name.
pub const RUN_NAME_ANNOTATION: &str = "analysisrun.sluice.dev/name";
/// Annotation on a metric's Job: the AnalysisRun's namespace.
pub const RUN_NAMESPACE_ANNOTATION: &str = "analysisrun.sluice.dev/namespace";
/// Annotation on a metric's Job: the metric's name.
pub const METRIC_NAME_ANNOTATION: &str = "analysisrun.sluice.dev/metric-name";
/// Longest Job name: the Job controller copies it into a pod label, whose values stop at 63.
const MAX_JOB_NAME: usize = 63;

/// Why a Job could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// The run has no uid yet (it was never stored).
    #[error("analysisrun {0} has no uid")]
    NoUid(String),
    /// The spec does not decode as a JobSpec.
    #[error("provider.job.spec is not a batch/v1 JobSpec: {0}")]
    Spec(String),
}

/// The Job name of a measurement, as Argo Rollouts names it: `<run uid>.<metric>.<n>`, the
/// metric's name shortened when the whole would pass 63 characters.
pub fn job_name(run_uid: &str, metric: &str, sequence: i32) -> String {
    let full = format!("{run_uid}.{metric}.{sequence}");
    if full.len() <= MAX_JOB_NAME {
        return full;
    }
    let over = full.len() - MAX_JOB_NAME;
    let mut keep = metric.len().saturating_sub(over);
    while !metric.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{run_uid}.{}.{sequence}", &metric[..keep])
}

/// The Job of measurement `sequence` of `metric`: owned by the run (so it goes when the run
/// goes), labelled with the run's uid (the Job and its pods), annotated with the run and metric,
/// plus the metric's own labels and annotations.
pub fn build_job(
    run: &AnalysisRun,
    metric: &str,
    spec: &serde_json::Value,
    metadata: &JobMetricMetadata,
    sequence: i32,
) -> Result<Job, BuildError> {
    let run_name = run.name_any();
    let uid = run
        .metadata
        .uid
        .clone()
        .ok_or_else(|| BuildError::NoUid(run_name.clone()))?;
    let mut spec: JobSpec =
        serde_json::from_value(spec.clone()).map_err(|e| BuildError::Spec(e.to_string()))?;
    spec.template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(RUN_UID_LABEL.to_string(), uid.clone());
    let mut labels = metadata.labels.clone();
    labels.insert(RUN_UID_LABEL.to_string(), uid.clone());
    let mut annotations = metadata.annotations.clone();
    annotations.insert(RUN_NAME_ANNOTATION.to_string(), run_name.clone());
    annotations.insert(
        RUN_NAMESPACE_ANNOTATION.to_string(),
        run.namespace().unwrap_or_default(),
    );
    annotations.insert(METRIC_NAME_ANNOTATION.to_string(), metric.to_string());
    let owner = OwnerReference {
        api_version: AnalysisRun::api_version(&()).to_string(),
        kind: AnalysisRun::kind(&()).to_string(),
        name: run_name,
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(&uid, metric, sequence)),
            namespace: run.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// What a Job's status conditions say: Successful when `Complete` is true, Failed (with the
/// condition's reason and message) when `Failed` is true, Running otherwise.
pub fn job_phase(job: &Job) -> (AnalysisPhase, Option<String>) {
    let name = job.name_any();
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for c in conditions.iter().filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" => return (AnalysisPhase::Successful, None),
            "Failed" => {
                let why = [c.reason.as_deref(), c.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                let why = if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({why})")
                };
                return (
                    AnalysisPhase::Failed,
                    Some(format!("job {name} failed{why}")),
                );
            }
            _ => {}
        }
    }
    (AnalysisPhase::Running, None)
}

fn decided(phase: AnalysisPhase, message: Option<String>, job: &str, ns: &str) -> ProviderResult {
    ProviderResult {
        value: Ok(MetricValue::Nil),
        metadata: BTreeMap::from([
            (JOB_NAME_KEY.to_string(), job.to_string()),
            (JOB_NAMESPACE_KEY.to_string(), ns.to_string()),
        ]),
        phase: Some((phase, message)),
    }
}

fn failed(message: String) -> ProviderResult {
    ProviderResult::measured(Err(message), BTreeMap::new())
}

/// Creates the Job of a new measurement. A Job of the same name already owned by this run (a
/// create whose answer was lost, or a restart) is taken as this measurement's.
pub async fn start(
    api: &Api<Job>,
    run: &AnalysisRun,
    metric: &str,
    spec: &serde_json::Value,
    metadata: &JobMetricMetadata,
    sequence: i32,
) -> ProviderResult {
    let job = match build_job(run, metric, spec, metadata, sequence) {
        Ok(j) => j,
        Err(e) => return failed(e.to_string()),
    };
    let name = job.name_any();
    let ns = run.namespace().unwrap_or_default();
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    match api.create(&pp, &job).await {
        Ok(created) => {
            tracing::info!(job = %name, namespace = %ns, metric, "analysis job created");
            let (phase, message) = job_phase(&created);
            decided(phase, message, &name, &ns)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => match api.get_opt(&name).await {
            Ok(Some(existing)) if owned_by(&existing, run) => {
                let (phase, message) = job_phase(&existing);
                decided(phase, message, &name, &ns)
            }
            Ok(_) => failed(format!(
                "cannot create job {name}: a job of that name exists and belongs to another run"
            )),
            Err(e) => failed(format!("cannot create job {name}: {e}")),
        },
        Err(e) => failed(format!("cannot create job {name}: {}", api_message(&e))),
    }
}

fn owned_by(job: &Job, run: &AnalysisRun) -> bool {
    let uid = run.metadata.uid.as_deref();
    job.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Looks at the Job of a running measurement.
pub async fn poll(api: &Api<Job>, ns: &str, name: &str) -> ProviderResult {
    match api.get_opt(name).await {
        Ok(Some(job)) => {
            let (phase, message) = job_phase(&job);
            decided(phase, message, name, ns)
        }
        Ok(None) => failed(format!(
            "job {name} of the running measurement no longer exists"
        )),
        Err(e) => failed(format!("cannot read job {name}: {}", api_message(&e))),
    }
}

/// Deletes the Job of a running measurement, with its pods (foreground propagation, as Argo
/// Rollouts does): the run is stopping. A Job already gone is fine.
pub async fn terminate(api: &Api<Job>, ns: &str, name: &str) -> ProviderResult {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return failed(format!("cannot delete job {name}: {}", api_message(&e))),
    }
    tracing::info!(job = %name, namespace = %ns, "analysis job terminated");
    decided(
        AnalysisPhase::Inconclusive,
        Some(METRIC_TERMINATED.to_string()),
        name,
        ns,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> AnalysisRun {
        let mut r = AnalysisRun::default();
        r.metadata.name = Some("ro-abc-1".into());
        r.metadata.namespace = Some("ns".into());
        r.metadata.uid = Some("11111111-2222-3333-4444-555555555555".into());
        r
    }

    #[test]
    fn jobs_are_named_and_labelled_as_argo_rollouts_does() {
        let spec = serde_json::json!({"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "t", "image": "busybox"}]}}});
        let meta = JobMetricMetadata {
            labels: BTreeMap::from([("team".into(), "a".into())]),
            annotations: BTreeMap::from([("note".into(), "x".into())]),
        };
        let job = build_job(&run(), "smoke", &spec, &meta, 2).unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("11111111-2222-3333-4444-555555555555.smoke.2")
        );
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels["team"], "a");
        assert_eq!(
            labels[RUN_UID_LABEL],
            "11111111-2222-3333-4444-555555555555"
        );
        let ann = job.metadata.annotations.clone().unwrap();
        assert_eq!(ann[RUN_NAME_ANNOTATION], "ro-abc-1");
        assert_eq!(ann[METRIC_NAME_ANNOTATION], "smoke");
        assert_eq!(ann["note"], "x");
        let owner = &job.metadata.owner_references.clone().unwrap()[0];
        assert_eq!(owner.kind, "AnalysisRun");
        assert_eq!(owner.controller, Some(true));
        let pod_labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert_eq!(
            pod_labels[RUN_UID_LABEL],
            "11111111-2222-3333-4444-555555555555"
        );
    }

    #[test]
    fn long_metric_names_are_shortened_to_fit_a_label() {
        let uid = "11111111-2222-3333-4444-555555555555";
        let name = job_name(uid, &"m".repeat(60), 12);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with(uid) && name.ends_with(".12"));
    }
}
