//! Status: the Rollout's status written from the plan (only when it changed, never over a
//! user's action), the Events that explain it, and the Rollout's metrics.

use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType as KubeEventType};
use kube::{Resource, ResourceExt};

use super::error::{ApiError, api_error};
use super::target::Target;
use crate::api::constants::FIELD_MANAGER;
use crate::api::rollout::Rollout;
use crate::controller::metrics::RolloutInfoLabels;
use crate::plan::{EventType, Plan};

/// Why writing the status failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The status write failed (a 409 when someone wrote the Rollout meanwhile).
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl Error {
    /// Category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Api(e) => e.category(),
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// Writes the status (when it changed) and publishes the Events.
pub(super) async fn write(t: &Target<'_>, plan: &Plan) -> Result<(), Error> {
    let (ro, ns, name, ctx) = (t.rollout.as_ref(), t.namespace.as_str(), &t.name, t.ctx);
    // 8. Status, only when it changed. `replace_status` carries the resourceVersion we planned
    // from, so a user action (promote, abort) written meanwhile is never overwritten: we get a
    // 409 and plan again.
    if plan.status_changed(ro) {
        let api: Api<Rollout> = ctx.writer.namespaced(ns);
        let mut updated = ro.clone();
        updated.status = Some(plan.status.clone());
        updated.metadata.managed_fields = None;
        let result = api.replace_status(name, &post_params(), &updated).await;
        let planned_from = ro.resource_version().unwrap_or_default();
        // The version we planned from is behind the server once our write made a new one (a
        // write that changes nothing keeps it) or once a conflict says someone else did.
        let moved_on = match &result {
            Ok(written) => written.resource_version().unwrap_or_default() != planned_from,
            Err(kube::Error::Api(s)) => s.is_conflict(),
            Err(_) => false,
        };
        if moved_on {
            ctx.supersede(&ro.uid().unwrap_or_default(), &planned_from);
        }
        result.map_err(api_error("update rollout status", name.clone()))?;
    }

    // 9. Events, after the state they describe is written.
    let reference = ro.object_ref(&());
    for e in &plan.events {
        let ev = Event {
            type_: match e.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: e.reason.to_string(),
            note: Some(truncate(&e.message, 1000)),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(rollout = %name, error = %err, "failed to publish event");
        }
        tracing::info!(rollout = %name, namespace = %ns, reason = e.reason, message = %e.message, "event");
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Exports the Rollout's phase, strategy, router and canary weight.
pub(super) fn record_metrics(t: &Target<'_>, plan: &Plan) {
    let ro = t.rollout;
    let router_name = t.routers.first().map_or("none", |r| r.name());
    t.ctx.metrics.set_rollout(
        RolloutInfoLabels {
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            phase: plan.status.phase.map_or("", |p| p.as_str()).to_string(),
            strategy: if ro.spec.strategy.blue_green.is_some() {
                "blueGreen"
            } else {
                "canary"
            }
            .to_string(),
            traffic_router: router_name.to_string(),
        },
        plan.status.canary.weights.as_ref().map(|w| w.canary.weight),
    );
}

/// Forgets a deleted Rollout: its metrics, the versions it superseded, the ReplicaSet refused.
pub(super) fn forget(t: &Target<'_>) {
    t.ctx.metrics.forget_rollout(&t.namespace, &t.name);
    t.ctx.forget_superseded(&t.uid());
    t.ctx.forget_refusal(&t.uid());
}
