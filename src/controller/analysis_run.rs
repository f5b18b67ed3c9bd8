//! AnalysisRun reconcile: take due measurements (bounded concurrency, identical queries due at
//! the same instant sent once), write status, and requeue at the next due time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::writer::is_not_leader;
use crate::analysis::args::{SecretValues, secret_refs};
use crate::analysis::history;
use crate::analysis::run::{self, FirstError, JobRequest, MeasurementResult, ProviderRequest};
use crate::api::analysis::AnalysisRun;
use crate::api::constants::{
    FIELD_MANAGER, LEGACY_POD_TEMPLATE_HASH_LABEL, POD_TEMPLATE_HASH_LABEL,
};
use crate::metrics::job;

/// Why an AnalysisRun reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("analysisrun {0} has no namespace")]
    Unnamed(String),
    #[error("{action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Unnamed(_) => "invalid",
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.is_conflict() => "conflict",
            Error::Kube { source, .. } if is_not_leader(source) => "not_leader",
            Error::Kube { .. } => "kube",
        }
    }
}

/// Reconciles one AnalysisRun.
pub async fn reconcile(run_obj: Arc<AnalysisRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = run_obj.name_any();
    let ns = run_obj
        .namespace()
        .ok_or_else(|| Error::Unnamed(name.clone()))?;
    if !ctx.ready.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    if !ctx.leader.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if run_obj.meta().deletion_timestamp.is_some() {
        ctx.metrics.forget_analysis(&ns, &name);
        return Ok(Action::await_change());
    }
    let secrets = fetch_secrets(&ctx, &ns, &run_obj).await?;
    let now = ctx.now();
    let pass = run::begin(&run_obj.spec, run_obj.status.as_ref(), &secrets, now);

    let started = ctx.now();
    let jobs: Api<Job> = ctx.writer.namespaced(&ns);
    let futures = pass.requests.iter().map(|req| {
        let ctx = ctx.clone();
        let jobs = jobs.clone();
        let run_obj = run_obj.clone();
        let ns = ns.clone();
        async move {
            let result = match &req.provider {
                ProviderRequest::Job(JobRequest::Start {
                    spec,
                    metadata,
                    sequence,
                }) => job::start(&jobs, &run_obj, &req.metric, spec, metadata, *sequence).await,
                ProviderRequest::Job(JobRequest::Poll { name }) => {
                    job::poll(&jobs, &ns, name).await
                }
                ProviderRequest::Job(JobRequest::Terminate { name }) => {
                    job::terminate(&jobs, &ns, name).await
                }
                other => {
                    ctx.measurements
                        .measure(&ctx.prometheus, &ctx.web, other)
                        .await
                }
            };
            let label = if result.value.is_ok() {
                "value"
            } else {
                "error"
            };
            ctx.metrics
                .measurements
                .get_or_create(&super::metrics::ResultLabels {
                    result: label.to_string(),
                })
                .inc();
            (req.clone(), result)
        }
    });
    let taken = futures::future::join_all(futures).await;
    let finished = ctx.now();
    let results: Vec<MeasurementResult> = taken
        .into_iter()
        .map(|(req, result)| req.into_result(started, finished, result))
        .collect();
    let update = pass.finish(results, finished);

    let api: Api<AnalysisRun> = ctx.writer.namespaced(&ns);
    if run_obj.status.as_ref() != Some(&update.status) {
        if !ctx.leader.is_leader() {
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        let mut updated = (*run_obj).clone();
        updated.status = Some(update.status.clone());
        updated.metadata.managed_fields = None;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        api.replace_status(&name, &pp, &updated)
            .await
            .map_err(|source| Error::Kube {
                action: "update analysisrun status",
                object: name.clone(),
                source,
            })?;
    }
    ctx.metrics.set_analysis(
        &ns,
        &name,
        update
            .status
            .metric_results
            .iter()
            .map(|m| (m.name.clone(), m.phase.as_str().to_string()))
            .collect(),
    );
    let reference = run_obj.object_ref(&());
    for t in &update.transitions {
        let ev = Event {
            type_: if t.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: t.reason(),
            note: t.message.clone(),
            action: "Analysis".to_string(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(analysisrun = %name, error = %e, "failed to publish event");
        }
        tracing::info!(analysisrun = %name, namespace = %ns, metric = ?t.metric, from = %t.from, to = %t.to, message = ?t.message, "analysis transition");
    }
    for e in &update.first_errors {
        let ev = Event {
            type_: EventType::Warning,
            reason: FirstError::REASON.to_string(),
            note: Some(e.note()),
            action: "Analysis".to_string(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(analysisrun = %name, error = %err, "failed to publish event");
        }
        tracing::warn!(analysisrun = %name, namespace = %ns, metric = %e.metric, message = %e.message, "first measurement error");
    }
    if update.status.phase.is_completed() {
        prune_history(&ctx, &run_obj, &ns).await;
    }
    let now = ctx.now();
    if let Some(at) = update.delete_at {
        if at <= now {
            // Not the leader: refused, and the leader deletes it.
            let _ = api.delete(&name, &DeleteParams::background()).await;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(until(now, at)));
    }
    Ok(match update.requeue_at {
        Some(at) => Action::requeue(until(now, at)),
        None => Action::await_change(),
    })
}

/// Deletes the finished runs of this run's Rollout beyond its `spec.analysis` history limits
/// (see [`history::runs_to_delete`]). Done here, when a run completes, from the caches: the
/// Rollout's own reconcile stays free of it. A failure is logged; the next completion retries.
async fn prune_history(ctx: &Context, run_obj: &AnalysisRun, ns: &str) {
    let Some(owner) = run_obj
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Rollout")
    else {
        return;
    };
    let Some(cached) = ctx
        .stores
        .rollouts
        .get(&ObjectRef::new(&owner.name).within(ns))
        .filter(|r| r.meta().uid.as_deref() == Some(owner.uid.as_str()))
    else {
        return;
    };
    let rollout = match cached.expand() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot prune the analysis runs of a Rollout");
            return;
        }
    };
    // The runs the Rollout's status names (step, background, and any strategy's current runs)
    // are never pruned: every such entry is an object with the run's `name` and its `status`.
    let mut current = BTreeSet::new();
    if let Some(st) = &rollout.status
        && let Ok(v) = serde_json::to_value(st)
    {
        current_run_names(&v, &mut current);
    }
    let owned_by_rollout =
        |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
            refs.iter().any(|o| o.uid == owner.uid)
        };
    let runs: Vec<history::RunView> = ctx
        .stores
        .analysis_run_owners
        .owned(&ctx.stores.analysis_runs, ns, &owner.uid)
        .iter()
        .filter(|r| owned_by_rollout(r.owner_references()))
        .map(|r| history::RunView {
            name: r.name_any(),
            created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            pod_hash: r
                .labels()
                .get(POD_TEMPLATE_HASH_LABEL)
                .or_else(|| r.labels().get(LEGACY_POD_TEMPLATE_HASH_LABEL))
                .cloned(),
            phase: r.status.as_ref().map(|s| s.phase).unwrap_or_default(),
            current: current.contains(&r.name_any()),
        })
        .collect();
    let mut replica_sets = BTreeMap::new();
    for rs in ctx
        .stores
        .replica_sets
        .state()
        .iter()
        .chain(ctx.stores.legacy_replica_sets.state().iter())
        .filter(|rs| {
            rs.namespace().as_deref() == Some(ns) && owned_by_rollout(rs.owner_references())
        })
    {
        let hash = rs
            .labels()
            .get(POD_TEMPLATE_HASH_LABEL)
            .or_else(|| rs.labels().get(LEGACY_POD_TEMPLATE_HASH_LABEL));
        if let Some(h) = hash {
            replica_sets.insert(h.clone(), rs.meta().deletion_timestamp.is_some());
        }
    }
    let (successful, unsuccessful) = history::limits(rollout.spec.analysis.as_ref());
    let api: Api<AnalysisRun> = ctx.writer.namespaced(ns);
    for name in history::runs_to_delete(&runs, &replica_sets, successful, unsuccessful) {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {
                tracing::info!(analysisrun = %name, namespace = %ns, rollout = %rollout.name_any(), "deleted a finished analysis run beyond the history limit")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(analysisrun = %name, namespace = %ns, error = %e, "cannot delete an old analysis run");
                return;
            }
        }
    }
}

/// For the Rollout watch of the AnalysisRun controller: the newest finished run of a Rollout,
/// whose reconcile prunes its siblings beyond the history limits.
pub fn newest_finished_run(
    runs: kube::runtime::reflector::Store<AnalysisRun>,
    owners: super::owner_index::OwnerIndex,
) -> impl Fn(crate::api::rollout::Rollout) -> Option<ObjectRef<AnalysisRun>> + Send + Sync + 'static
{
    move |rollout| {
        let uid = rollout.metadata.uid.clone()?;
        let ns = rollout.metadata.namespace.clone().unwrap_or_default();
        owners
            .owned(&runs, &ns, &uid)
            .into_iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.phase.is_completed()))
            .max_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
                    .then_with(|| a.name_any().cmp(&b.name_any()))
            })
            .map(|r| ObjectRef::from_obj(&*r))
    }
}

fn current_run_names(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(o) => {
            if let (Some(serde_json::Value::String(n)), true) =
                (o.get("name"), o.contains_key("status"))
            {
                out.insert(n.clone());
            }
            o.values().for_each(|x| current_run_names(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| current_run_names(x, out)),
        _ => {}
    }
}

fn until(now: jiff::Timestamp, at: jiff::Timestamp) -> Duration {
    let nanos = at.as_nanosecond() - now.as_nanosecond();
    if nanos <= 0 {
        Duration::from_millis(10)
    } else {
        Duration::from_nanos(nanos as u64)
    }
}

async fn fetch_secrets(
    ctx: &Context,
    ns: &str,
    run_obj: &AnalysisRun,
) -> Result<SecretValues, Error> {
    let mut values = SecretValues::new();
    let refs = secret_refs(&run_obj.spec.args);
    if refs.is_empty() {
        return Ok(values);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for r in refs {
        let secret = api.get_opt(&r.name).await.map_err(|source| Error::Kube {
            action: "read secret",
            object: r.name.clone(),
            source,
        })?;
        // A missing Secret or key is left out: argument resolution reports it by name.
        if let Some(v) = secret
            .and_then(|s| s.data)
            .and_then(|d| d.get(&r.key).cloned())
            .and_then(|b| String::from_utf8(b.0).ok())
        {
            values.insert(r, v);
        }
    }
    Ok(values)
}
