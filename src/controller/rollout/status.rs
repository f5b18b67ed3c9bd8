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

/// How long a status change that only moves counters waits before it is written on its own.
///
/// Replica counts change as each pod starts; written at once they would cost a status write
/// per pod. Held back, they go out with the next change that records a decision (a step, a
/// pause, the phase, a condition), or on their own after this delay. Nothing decides from them:
/// the planner reads the ReplicaSets, kstatus and Argo CD's health check read the phase,
/// `observedGeneration` and the conditions (never held back), and the HPA's scale subresource
/// (`status.HPAReplicas`) is at most this late, shorter than the HPA's 15 s sync period.
pub const COUNTER_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

/// The status without what [`COUNTER_DELAY`] holds back: replica counts, the `Available`
/// condition's message and update time (its status and transition are kept), and whether the
/// traffic weight was read back (`canary.weights.verified`, written after the weight).
fn without_counters(s: &crate::api::rollout::RolloutStatus) -> crate::api::rollout::RolloutStatus {
    let mut s = s.clone();
    s.replicas = None;
    s.updated_replicas = None;
    s.ready_replicas = None;
    s.available_replicas = None;
    s.hpa_replicas = None;
    if let Some(w) = s.canary.weights.as_mut() {
        w.verified = None;
    }
    for c in &mut s.conditions {
        if c.type_ == crate::api::constants::condition::AVAILABLE {
            c.message.clear();
            c.last_update_time = None;
        }
    }
    s
}

/// True when `next` differs from `recorded` in counters only (see [`without_counters`]).
fn counters_only(
    recorded: Option<&crate::api::rollout::RolloutStatus>,
    next: &crate::api::rollout::RolloutStatus,
) -> bool {
    recorded.is_some_and(|r| same_json(&without_counters(r), &without_counters(next)))
}

/// True when two statuses would be stored alike: compared as the JSON written, so that a field
/// absent on one side and empty on the other (`None` and `Some("")` where empty is not
/// serialized) is no difference, and no write is made for it.
fn same_json(
    a: &crate::api::rollout::RolloutStatus,
    b: &crate::api::rollout::RolloutStatus,
) -> bool {
    a == b || serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Writes the status (when it changed) and publishes the Events. Returns how long until a
/// held-back counter change is due (None: nothing held back).
pub(super) async fn write(
    t: &Target<'_>,
    plan: &Plan,
) -> Result<Option<std::time::Duration>, Error> {
    let (ro, ns, name, ctx) = (t.rollout.as_ref(), t.namespace.as_str(), &t.name, t.ctx);
    let mut held = None;
    let uid = ro.uid().unwrap_or_default();
    let changed = plan.status_changed(ro)
        && !ro
            .status
            .as_ref()
            .is_some_and(|recorded| same_json(recorded, &plan.status));
    if changed && counters_only(ro.status.as_ref(), &plan.status) {
        let waited = ctx.counters_pending(&uid);
        if waited < COUNTER_DELAY {
            held = Some(COUNTER_DELAY - waited);
        }
    }
    // 8. Status, only when it changed. `replace_status` carries the resourceVersion we planned
    // from, so a user action (promote, abort) written meanwhile is never overwritten: we get a
    // 409 and plan again.
    if !changed || held.is_none() {
        ctx.counters_written(&uid);
    }
    if changed && held.is_none() {
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
    Ok(held)
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
    t.ctx.counters_written(&t.uid());
}
