//! The desired ReplicaSets: how many pods each version runs, when old ones scale down, which
//! are deleted, and the `workloadRef` Deployment's own scale.

use jiff::Timestamp;

use super::context::{Ctx, Journal, add_secs};
use super::replicas::{
    BasicCanary, Counts, apply_min_pods, basic_canary_counts, canary_replicas_for_weight,
    surge_and_unavailable,
};
use super::steps::{desired_canary_replicas, last_weight};
use super::types::{DesiredReplicaSet, ObservedReplicaSet};
use crate::api::constants;
use crate::api::rollout::{RolloutStatus, ScaleDownMode};

/// Desired state of every ReplicaSet to keep, given the step `idx` and the canary `weight`
/// planned.
pub(super) fn desired(
    ctx: &Ctx,
    st: &RolloutStatus,
    journal: &mut Journal,
    idx: i32,
    weight: Option<i32>,
) -> Vec<DesiredReplicaSet> {
    let current = ctx.replica_set(&ctx.current_hash);
    let others: Vec<&ObservedReplicaSet> = ctx
        .obs
        .replica_sets
        .iter()
        .filter(|r| r.hash != ctx.current_hash && r.hash != ctx.stable_hash)
        .collect();
    if !ctx.in_update() {
        // Settled: the current version is stable and runs at full size.
        let replicas = apply_min_pods(
            ctx.replicas,
            ctx.canary.min_pods_per_replica_set,
            ctx.replicas,
        );
        let mut out = vec![desired_rs(
            &ctx.current_hash,
            current,
            replicas,
            ctx.revision,
        )];
        out.extend(old_replica_sets(ctx, journal, &others));
        return out;
    }
    if ctx.routing {
        let mut out = routed(ctx, st, journal, idx, weight);
        out.extend(old_replica_sets(ctx, journal, &others));
        return out;
    }
    basic(ctx, st, idx, &others)
}

fn desired_rs(
    hash: &str,
    existing: Option<&ObservedReplicaSet>,
    replicas: i32,
    revision: i64,
) -> DesiredReplicaSet {
    DesiredReplicaSet {
        hash: hash.to_string(),
        create: existing.is_none(),
        replicas,
        revision,
        scale_down_deadline: None,
    }
}

/// With traffic routing: the canary sized for its step (held during an abort until the traffic
/// left it and `abortScaleDownDelaySeconds` passed), the stable at full size (or shrinking with
/// the canary's share under `dynamicStableScale`).
fn routed(
    ctx: &Ctx,
    st: &RolloutStatus,
    journal: &mut Journal,
    idx: i32,
    weight: Option<i32>,
) -> Vec<DesiredReplicaSet> {
    let current = ctx.replica_set(&ctx.current_hash);
    let stable = ctx.replica_set(&ctx.stable_hash);
    let max = ctx.max_weight;
    let (canary_replicas, canary_deadline) = if st.abort {
        aborted_canary_replicas(ctx, st, journal)
    } else {
        (
            desired_canary_replicas(ctx, idx, last_weight(ctx.steps, idx, max)),
            None,
        )
    };
    let stable_replicas = if ctx.canary.dynamic_stable_scale == Some(true) && !st.abort {
        let observed = ctx.obs.traffic.canary_weight.unwrap_or(0);
        let canary_share = weight.unwrap_or(0).max(observed);
        apply_min_pods(
            canary_replicas_for_weight(ctx.replicas, max - canary_share, max),
            ctx.canary.min_pods_per_replica_set,
            ctx.replicas,
        )
    } else {
        ctx.replicas
    };
    let mut out = Vec::new();
    if let Some(stable) = stable {
        out.push(desired_rs(
            &ctx.stable_hash,
            Some(stable),
            stable_replicas,
            stable.revision,
        ));
    }
    let mut canary = desired_rs(&ctx.current_hash, current, canary_replicas, ctx.revision);
    canary.scale_down_deadline = canary_deadline;
    out.push(canary);
    out
}

/// During an abort the canary keeps its pods until no traffic reaches it and
/// `abortScaleDownDelaySeconds` passed (0: it is never scaled down). As in Argo, the delay
/// counts from the moment the stable can take all the traffic (its available pods reach
/// `spec.replicas`; at once unless the stable is short of pods or scales up under
/// `dynamicStableScale`): from then on the canary's ReplicaSet carries the scale-down deadline,
/// so users and tools see it, and the deadline it carries is kept. With `dynamicStableScale`
/// and no explicit delay there is none: the canary shrinks with the traffic still reaching it.
fn aborted_canary_replicas(
    ctx: &Ctx,
    st: &RolloutStatus,
    journal: &mut Journal,
) -> (i32, Option<Timestamp>) {
    let current = ctx.replica_set(&ctx.current_hash);
    let held = current.map_or(0, |r| r.replicas);
    let traffic = &ctx.obs.traffic;
    if ctx.canary.dynamic_stable_scale == Some(true)
        && ctx.canary.abort_scale_down_delay_seconds.is_none()
    {
        let serving = canary_replicas_for_weight(
            ctx.replicas,
            traffic.canary_weight.unwrap_or(0),
            ctx.max_weight,
        );
        let serving = apply_min_pods(serving, ctx.canary.min_pods_per_replica_set, ctx.replicas);
        return (serving.min(held), None);
    }
    let delay = ctx
        .canary
        .abort_scale_down_delay_seconds
        .unwrap_or(constants::DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS);
    if delay == 0 {
        return (held, None);
    }
    let aborted_at = st.aborted_at.as_ref().map_or(ctx.now, |t| t.0);
    // A deadline written before this abort (the ReplicaSet's earlier life as a delayed old
    // stable) is not this abort's.
    let written = current
        .and_then(|r| r.scale_down_deadline)
        .filter(|d| *d > aborted_at);
    let stable_serves_all = ctx.available(&ctx.stable_hash) >= ctx.replicas;
    let due = match written {
        Some(due) => due,
        None if stable_serves_all => add_secs(ctx.now, i64::from(delay)),
        None => return (held, None),
    };
    let traffic_gone = traffic.canary_weight.unwrap_or(0) == 0
        && traffic.canary_service_hash.as_deref() != Some(ctx.current_hash.as_str());
    if ctx.now >= due && traffic_gone {
        return (0, None);
    }
    if ctx.now < due {
        journal.wake_at(due);
    }
    (held, (held > 0).then_some(due))
}

/// The basic canary's arithmetic for the weight `weight`, from the spec.
pub(super) fn basic_params(ctx: &Ctx, weight: i32) -> BasicCanary {
    let (max_surge, max_unavailable) = surge_and_unavailable(
        ctx.canary.max_surge.as_ref(),
        ctx.canary.max_unavailable.as_ref(),
        ctx.replicas,
    );
    BasicCanary {
        replicas: ctx.replicas,
        weight,
        max_weight: 100,
        max_surge,
        max_unavailable,
    }
}

fn counts(r: &ObservedReplicaSet) -> Counts {
    Counts {
        replicas: r.replicas,
        available: r.available,
    }
}

/// Basic canary (no traffic routing): one move of Argo's rolling arithmetic per plan, in
/// Argo's order: the stable first; the canary once the stable is where it should be; older
/// ReplicaSets once both are. Each move is computed from what was observed, so the next plan
/// sees its effect (pods created, pods available) before the next one.
fn basic(
    ctx: &Ctx,
    st: &RolloutStatus,
    idx: i32,
    others: &[&ObservedReplicaSet],
) -> Vec<DesiredReplicaSet> {
    let current = ctx.replica_set(&ctx.current_hash);
    let stable = ctx.replica_set(&ctx.stable_hash);
    let weight = if st.abort {
        0
    } else {
        last_weight(ctx.steps, idx, 100)
    };
    let params = basic_params(ctx, weight);
    let others_replicas: i32 = others.iter().map(|r| r.replicas).sum();
    let (canary_want, stable_want) = basic_canary_counts(
        &params,
        Some(current.map_or_else(Counts::default, counts)),
        stable.map(counts),
        others_replicas,
    );
    let stable_now = stable.map(|r| r.replicas);
    let canary_now = current.map_or(0, |r| r.replicas);
    let stable_moves = stable_now.is_some_and(|n| n != stable_want);
    let canary_count = if stable_moves {
        canary_now
    } else {
        canary_want
    };
    let mut out = Vec::new();
    if let Some(stable) = stable {
        out.push(desired_rs(
            &ctx.stable_hash,
            Some(stable),
            stable_want,
            stable.revision,
        ));
    }
    // A canary not created yet is created even while the stable moves (with 0 pods then).
    out.push(desired_rs(
        &ctx.current_hash,
        current,
        canary_count,
        ctx.revision,
    ));
    let settle_others = !stable_moves && canary_count == canary_now;
    out.extend(basic_others(ctx, others, settle_others));
    out
}

/// Older ReplicaSets of a basic canary, once the stable and the canary are where they should
/// be: unavailable pods go at once; available ones only while `replicas - maxUnavailable` pods
/// stay available overall, the newest ReplicaSet first.
fn basic_others(ctx: &Ctx, others: &[&ObservedReplicaSet], settle: bool) -> Vec<DesiredReplicaSet> {
    let mut sorted = others.to_vec();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.revision));
    let params = basic_params(ctx, 0);
    let available: i32 = ctx.obs.replica_sets.iter().map(|r| r.available).sum();
    let mut may_remove = available - (ctx.replicas - params.max_unavailable);
    sorted
        .into_iter()
        .map(|r| {
            let mut replicas = r.replicas;
            if settle && replicas > 0 {
                // Pods that do not serve can always go.
                replicas = replicas.min(r.available.max(0));
                let removed = replicas.min(may_remove.max(0));
                replicas -= removed;
                may_remove -= removed;
            }
            DesiredReplicaSet {
                hash: r.hash.clone(),
                create: false,
                replicas,
                revision: r.revision,
                scale_down_deadline: None,
            }
        })
        .collect()
}

/// Old ReplicaSets (neither stable nor current) with traffic routing or when settled: scaled
/// to zero, unless a Service still selects them or their scale-down delay is running (for at
/// most `scaleDownDelayRevisionLimit` of them).
fn old_replica_sets(
    ctx: &Ctx,
    journal: &mut Journal,
    others: &[&ObservedReplicaSet],
) -> Vec<DesiredReplicaSet> {
    let traffic = &ctx.obs.traffic;
    let mut out = Vec::new();
    let mut waiting: Vec<(&ObservedReplicaSet, Timestamp)> = Vec::new();
    let delayed = ctx.routing && ctx.canary.dynamic_stable_scale != Some(true);
    for r in others {
        let by_stable = traffic.stable_service_hash.as_deref() == Some(r.hash.as_str());
        let selected = by_stable || traffic.canary_service_hash.as_deref() == Some(r.hash.as_str());
        // The previous stable, still behind the stable Service after a promotion: it gets its
        // scale-down delay now if the promotion's own plan did not write it (a promotion
        // decided in a later round of a reconcile is recorded before it is acted on).
        let deadline = match r.scale_down_deadline {
            None if delayed && by_stable && r.replicas > 0 => {
                let delay = ctx
                    .canary
                    .scale_down_delay_seconds
                    .unwrap_or(constants::DEFAULT_SCALE_DOWN_DELAY_SECONDS);
                Some(add_secs(ctx.now, i64::from(delay)))
            }
            observed => observed,
        };
        let keep = match deadline {
            Some(deadline) if ctx.now < deadline => {
                waiting.push((r, deadline));
                true
            }
            _ => selected,
        };
        let replicas = if keep { r.replicas } else { 0 };
        out.push(DesiredReplicaSet {
            hash: r.hash.clone(),
            create: false,
            replicas,
            revision: r.revision,
            scale_down_deadline: if replicas == 0 { None } else { deadline },
        });
    }
    if let Some(limit) = ctx.canary.scale_down_delay_revision_limit {
        let limit = limit.max(0) as usize;
        waiting.sort_by_key(|(r, _)| std::cmp::Reverse(r.revision));
        for (r, _) in waiting.iter().skip(limit) {
            if let Some(d) = out.iter_mut().find(|d| d.hash == r.hash) {
                d.replicas = 0;
                d.scale_down_deadline = None;
            }
        }
        waiting.truncate(limit);
    }
    for (_, deadline) in waiting {
        journal.wake_at(deadline);
    }
    out
}

/// Old ReplicaSets beyond `revisionHistoryLimit` that are idle (no pods, none wanted): deleted,
/// and dropped from `replica_sets`. Returns their names.
pub(super) fn prune(
    ctx: &Ctx,
    st: &RolloutStatus,
    replica_sets: &mut Vec<DesiredReplicaSet>,
) -> Vec<String> {
    let limit = ctx
        .obs
        .rollout
        .spec
        .revision_history_limit
        .unwrap_or(constants::DEFAULT_REVISION_HISTORY_LIMIT)
        .max(0) as usize;
    let stable = st.stable_rs.clone().unwrap_or_default();
    let mut idle: Vec<&ObservedReplicaSet> = ctx
        .obs
        .replica_sets
        .iter()
        .filter(|r| r.hash != ctx.current_hash && r.hash != stable && r.hash != ctx.stable_hash)
        .filter(|r| r.replicas == 0 && r.actual == 0)
        .filter(|r| {
            replica_sets
                .iter()
                .any(|d| d.hash == r.hash && d.replicas == 0)
        })
        .collect();
    idle.sort_by_key(|r| std::cmp::Reverse(r.revision));
    let deleted: Vec<&ObservedReplicaSet> = idle.into_iter().skip(limit).collect();
    replica_sets.retain(|d| !deleted.iter().any(|o| o.hash == d.hash));
    deleted.iter().map(|r| r.name.clone()).collect()
}

/// Desired `spec.replicas` of the `workloadRef` Deployment under its `scaleDown` mode (None:
/// leave it).
pub(super) fn workload_replicas(ctx: &Ctx, st: &RolloutStatus) -> Option<i32> {
    let workload = ctx.obs.workload.as_ref()?;
    let mode = ctx.obs.rollout.spec.workload_ref.as_ref()?.scale_down?;
    let available = ctx.available(&ctx.current_hash);
    let desired = match mode {
        ScaleDownMode::Never => return None,
        ScaleDownMode::Onsuccess => {
            let healthy = ctx.current_is_stable(st) && available >= ctx.replicas;
            if healthy { 0 } else { workload.replicas }
        }
        ScaleDownMode::Progressively => (ctx.replicas - available).clamp(0, workload.replicas),
    };
    (desired != workload.replicas).then_some(desired)
}
