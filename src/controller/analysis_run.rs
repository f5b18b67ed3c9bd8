//! AnalysisRun reconcile: take due measurements (bounded concurrency, identical queries due at
//! the same instant sent once), write status, and requeue at the next due time.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::writer::is_not_leader;
use crate::analysis::args::{SecretValues, secret_refs};
use crate::analysis::run::{self, FirstError, JobRequest, MeasurementResult, ProviderRequest};
use crate::api::analysis::AnalysisRun;
use crate::api::constants::FIELD_MANAGER;
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
