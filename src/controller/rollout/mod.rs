//! Rollout reconcile: observe (caches, routers, templates) → plan (pure) → apply → status.
//!
//! - [`observe`] reads everything the decision needs, before anything is decided;
//! - [`crate::plan::plan`] decides, from that observation and `now` alone;
//! - [`apply`] writes what the plan asks for, in the safe order;
//! - [`status`] writes the status and the Events that explain it.
//!
//! Every write goes through the leader-gated [`crate::controller::writer::Writer`].

mod apply;
mod error;
mod observe;
mod status;
mod target;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use observe::Observed;
use target::Target;

use crate::api::rollout::{Rollout, RolloutStatus};
use crate::controller::context::Context;
use crate::plan::{self, Plan};

/// Why a Rollout reconcile failed, by the step that failed; the category labels the error
/// metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading what the plan is made from.
    #[error("observe: {0}")]
    Observe(#[from] observe::Error),
    /// Writing what the plan asks for (and the finalizer, and the cleanup on deletion).
    #[error("apply: {0}")]
    Apply(#[from] apply::Error),
    /// Writing the status.
    #[error("status: {0}")]
    Status(#[from] status::Error),
    /// The cached Rollout does not decode.
    #[error(transparent)]
    Cache(#[from] crate::controller::compact::CacheError),
}

impl Error {
    /// Category for metrics and logs: `invalid`, `kube`, `conflict`, `traffic`, `not_leader`.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Observe(e) => e.category(),
            Error::Apply(e) => e.category(),
            Error::Status(e) => e.category(),
            Error::Cache(_) => "cache",
        }
    }
}

/// Reconciles one Rollout.
pub async fn reconcile(ro: Arc<Rollout>, ctx: Arc<Context>) -> Result<Action, Error> {
    let target = Target::new(&ro, &ctx).map_err(observe::Error::from)?;
    if let Some(wait) = wait_before_writing(&target).await {
        return Ok(wait);
    }
    if ro.meta().deletion_timestamp.is_some() {
        apply::release(&target).await?;
        status::forget(&target);
        return Ok(Action::await_change());
    }
    if target.has_routing()
        && (!target.has_finalizer()
            || target.recorded_routing() != target.routing_record().as_ref())
    {
        apply::add_finalizer(&target).await?;
        // The patch changed the resourceVersion: plan from the object it produced.
        return Ok(Action::await_change());
    }
    if !target.has_routing() && target.has_finalizer() {
        // `trafficRouting` was removed from a live Rollout: the user's routing objects go back
        // to them as on deletion (all traffic to stable, managed routes and subset labels
        // removed, canary Ingresses deleted), then the Rollout goes on as a basic canary.
        apply::release(&target).await?;
        return Ok(Action::await_change());
    }
    let observed = observe::observe(&target).await?;
    let plan = plan_and_apply(&target, observed, ctx.now()).await?;
    let held = status::write(&target, &plan).await?;
    status::record_metrics(&target, &plan);
    let requeue = match (plan.requeue_after, held) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// How long to wait for the watch to bring a version newer than one marked superseded before
/// asking the API server whether one exists.
const SUPERSEDED_PATIENCE: Duration = Duration::from_secs(3);

/// When this reconcile must not act yet: caches not synced, not the leader, or the cache still
/// behind our own last write.
async fn wait_before_writing(t: &Target<'_>) -> Option<Action> {
    if !t.ctx.ready.load(std::sync::atomic::Ordering::SeqCst) {
        return Some(Action::requeue(Duration::from_millis(200)));
    }
    if !t.ctx.leader.is_leader() {
        // Warm caches, no writes: look again when leadership may have changed.
        return Some(Action::requeue(Duration::from_secs(5)));
    }
    let rv = t.rollout.resource_version().unwrap_or_default();
    let waited = t.ctx.superseded_for(&t.uid(), &rv)?;
    if waited >= SUPERSEDED_PATIENCE {
        // A conflict normally means a newer version exists and its watch event is on the way.
        // When none has come for this long, ask the API server: if the cached version is still
        // the current one, nothing newer was written (a conflict with nothing behind it, or a
        // write that changed nothing) and planning from it repeats nothing.
        let api: kube::Api<Rollout> = kube::Api::namespaced(t.ctx.client.clone(), &t.namespace);
        if let Ok(live) = api.get(&t.name).await
            && live.resource_version().as_deref() == Some(rv.as_str())
        {
            tracing::info!(rollout = %t.name, rv = %rv, "no newer version behind the conflict; planning from the cached one");
            t.ctx.forget_superseded(&t.uid());
            return None;
        }
    }
    // Our own last write has not reached the cache yet; its watch event reconciles again.
    tracing::debug!(rollout = %t.name, rv = %rv, "cache behind our last write; waiting");
    Some(Action::requeue(Duration::from_millis(500)))
}

/// Plans, applies, then plans again from what was just written (up to three rounds), so that a
/// step whose effect landed completes in this reconcile: one status write instead of two. A
/// round acts only on decisions already recorded in status; when a later round decides
/// something new (next step, promotion, abort), that decision is written first and acted on
/// next time, so a controller killed at any instant resumes from a state its status explains.
async fn plan_and_apply(
    t: &Target<'_>,
    mut observed: Observed,
    now: Timestamp,
) -> Result<Plan, Error> {
    let mut plan = plan::plan(&observed.state, now);
    let mut events = Vec::new();
    let recorded = t.rollout.status.clone().unwrap_or_default();
    for round in 0..3 {
        let obs = &observed.state;
        tracing::debug!(
            rollout = %t.name,
            round,
            replica_sets = ?obs.replica_sets.iter().map(|r| (&r.hash, r.replicas, r.available)).collect::<Vec<_>>(),
            desired = ?plan.replica_sets.iter().map(|r| (&r.hash, r.replicas)).collect::<Vec<_>>(),
            weight = ?plan.canary_weight,
            step = ?plan.status.current_step_index,
            requeue = ?plan.requeue_after,
            rv = ?t.rollout.metadata.resource_version,
            "planned"
        );
        if round > 0 && !same_decisions(&plan.status, &recorded) {
            events.append(&mut plan.events);
            break;
        }
        let applied = apply::apply(t, &observed, &mut plan).await?;
        if let Some(refused) = applied.refused {
            // The API server refused the new version's ReplicaSet: what this round decided
            // did not happen. Plan again knowing it: the spec is invalid, nothing else moves.
            let message = format!(
                "Failed to create new replica set {:?}: {}",
                refused.name, refused.message
            );
            observed.state.refused_replica_set = Some(refused);
            plan = plan::plan(&observed.state, now);
            events.push(plan::PlannedEvent {
                type_: plan::EventType::Warning,
                reason: crate::api::constants::reason::REPLICA_SET_CREATE_ERROR,
                message,
            });
            events.append(&mut plan.events);
            break;
        }
        events.append(&mut plan.events);
        // While a restart is due, one round: the pods read for it are not projected by
        // `assume`, and evicting from a stale picture could take more pods than allowed.
        if !applied.changed
            || plan.invalid.is_some()
            || round == 2
            || !same_decisions(&plan.status, &recorded)
            || observed.state.pods.is_some()
        {
            break;
        }
        // What the caches will show once our writes arrive: the same projection the planner's
        // simulator and property tests use.
        observed.state.assume(
            &plan,
            plan::AssumeFacts {
                canary_weight: applied.weight,
            },
        );
        plan = plan::plan(&observed.state, now);
    }
    plan.events = events;
    Ok(plan)
}

/// True when two statuses record the same decisions (version, stable version, step, pauses,
/// abort, promote-full): what the next writes may rest on.
fn same_decisions(a: &RolloutStatus, b: &RolloutStatus) -> bool {
    a.current_pod_hash == b.current_pod_hash
        && a.current_step_hash == b.current_step_hash
        && a.stable_rs == b.stable_rs
        && a.current_step_index == b.current_step_index
        && a.abort == b.abort
        && a.aborted_at == b.aborted_at
        && a.promote_full == b.promote_full
        && a.pause_conditions == b.pause_conditions
        && a.controller_pause == b.controller_pause
}
