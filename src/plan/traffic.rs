//! Traffic: the canary weight on the routers, which version each Service selects, the managed
//! header and mirror routes, and how the weights are reported in the status.

use super::context::{Ctx, Journal};
use super::replicas::capacity_weight;
use super::steps::{desired_canary_replicas, last_weight};
use super::types::{EventType, ManagedRoutes};
use crate::api::constants::reason;
use crate::api::rollout::{RolloutStatus, TrafficWeights, WeightDestination};

/// The canary weight to set (None without traffic routing).
///
/// During an update: the weight of the current step once its canary pods are available (the
/// previous step's until then), never more than the available canary pods can serve, and 0
/// until the canary Service selects the current version. Otherwise (abort,
/// rollback, settled): back to 0, but after a promotion only once the stable Service selects
/// the new version, and with `dynamicStableScale` only as fast as the stable pods can take it.
pub(super) fn canary_weight(ctx: &Ctx, st: &RolloutStatus, idx: i32) -> Option<i32> {
    if !ctx.routing {
        return None;
    }
    let traffic = &ctx.obs.traffic;
    let observed = traffic.canary_weight;
    let stable_capacity = || {
        capacity_weight(
            ctx.available(&ctx.stable_hash),
            ctx.replicas,
            ctx.max_weight,
        )
    };
    let settled = ctx.current_is_stable(st);
    if st.abort || !ctx.in_update() || settled {
        // After a promotion in this plan (status names the current version stable, the plan
        // started from another) the stable Service must select the new version before the
        // canary gives its traffic back.
        let just_promoted = settled && ctx.in_update();
        let stable_ok = traffic.stable_service_hash.as_deref() == st.stable_rs.as_deref();
        if just_promoted && !stable_ok {
            return Some(observed.unwrap_or(ctx.max_weight));
        }
        if ctx.canary.dynamic_stable_scale == Some(true) {
            // Give traffic back only as fast as the stable pods can take it: on abort, and on
            // a rollback to the stable revision (whose ReplicaSet scales up again).
            let floor = (ctx.max_weight - stable_capacity())
                .max(0)
                .min(observed.unwrap_or(0));
            return Some(floor);
        }
        return Some(0);
    }
    let target = last_weight(ctx.steps, idx, ctx.max_weight);
    let want = desired_canary_replicas(ctx, idx, target);
    let available = ctx.available(&ctx.current_hash);
    // Until the step's pods are all available, the previous step's weight is held (as Argo
    // does), never more than the available pods can serve: one weight change per step, where
    // following the available share would change it as each pod comes up.
    let mut w = if available >= want && (want > 0 || ctx.replicas == 0) {
        target
    } else {
        capacity_weight(available, ctx.replicas, ctx.max_weight)
            .min(last_weight(ctx.steps, idx - 1, ctx.max_weight))
            .min(target)
    };
    if traffic.canary_service_hash.as_deref() != Some(ctx.current_hash.as_str()) {
        // The canary Service still selects another version: no traffic until it is switched.
        w = 0;
    }
    if ctx.canary.dynamic_stable_scale == Some(true) {
        w = w
            .max(ctx.max_weight - stable_capacity())
            .min(ctx.max_weight);
        if available == 0 {
            w = w.min(observed.unwrap_or(0));
        }
    }
    Some(w.clamp(0, ctx.max_weight))
}

/// The pod-template hashes the Services must select (None: leave as is).
pub(super) struct ServiceHashes {
    pub stable: Option<String>,
    pub canary: Option<String>,
}

/// Which version each Service must select.
///
/// The stable Service only moves to pods that can serve. The canary Service follows the
/// current version during an update; on abort or rollback the traffic leaves the canary before
/// its Service does.
pub(super) fn service_hashes(ctx: &Ctx, st: &RolloutStatus) -> ServiceHashes {
    let traffic = &ctx.obs.traffic;
    let stable = st.stable_rs.clone().unwrap_or_default();
    let stable_svc = if ctx.available(&stable) > 0 || ctx.replicas == 0 {
        Some(stable.clone())
    } else {
        traffic.stable_service_hash.clone()
    };
    let live_canary = ctx.in_update() && !st.abort && stable != ctx.current_hash;
    let canary_svc = if live_canary {
        if ctx.available(&ctx.current_hash) > 0 || ctx.replicas == 0 {
            Some(ctx.current_hash.clone())
        } else {
            traffic.canary_service_hash.clone()
        }
    } else if ctx.routing && traffic.canary_weight.unwrap_or(0) > 0 {
        traffic.canary_service_hash.clone()
    } else {
        Some(stable)
    };
    ServiceHashes {
        stable: stable_svc,
        canary: canary_svc,
    }
}

/// Managed routes: those of the header and mirror steps reached, while an update is live
/// (None when the routing declares no managed routes).
pub(super) fn managed_routes(ctx: &Ctx, st: &RolloutStatus) -> Option<ManagedRoutes> {
    let routing = ctx.canary.traffic_routing.as_ref()?;
    if routing.managed_routes.is_empty() {
        return None;
    }
    let mut routes = ManagedRoutes::default();
    if ctx.current_is_stable(st) || st.abort {
        return Some(routes);
    }
    let mut reached = (st.current_step_index.unwrap_or(0).max(0) as usize).min(ctx.steps.len());
    // A header or mirror step the rollout stands at is applied now; it is done only once a
    // status recording it is observed (see `steps`).
    if ctx
        .steps
        .get(reached)
        .is_some_and(|s| s.set_header_route.is_some() || s.set_mirror_route.is_some())
    {
        reached += 1;
    }
    for step in &ctx.steps[..reached] {
        if let Some(h) = &step.set_header_route {
            routes.header_routes.retain(|r| r.name != h.name);
            if !h.match_.is_empty() {
                routes.header_routes.push(h.clone());
            }
        }
        if let Some(m) = &step.set_mirror_route {
            routes.mirror_routes.retain(|r| r.name != m.name);
            if !m.match_.is_empty() {
                routes.mirror_routes.push(m.clone());
            }
        }
    }
    Some(routes)
}

/// Reports the weights in the status, with an Event when the canary weight changes.
pub(super) fn record_weights(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    weight: Option<i32>,
    services: &ServiceHashes,
) {
    let Some(w) = weight else {
        st.canary.weights = None;
        return;
    };
    let previous = st.canary.weights.as_ref().map(|x| x.canary.weight);
    if let Some(previous) = previous.filter(|p| *p != w) {
        journal.event(
            EventType::Normal,
            reason::TRAFFIC_WEIGHT_UPDATED,
            format!("canary weight {previous} → {w} (of {})", ctx.max_weight),
        );
    }
    let verified = st.canary.weights.as_ref().and_then(|x| x.verified);
    st.canary.weights = Some(TrafficWeights {
        canary: WeightDestination {
            weight: w,
            service_name: ctx.canary.canary_service.clone(),
            pod_template_hash: services.canary.clone(),
        },
        stable: WeightDestination {
            weight: ctx.max_weight - w,
            service_name: ctx.canary.stable_service.clone(),
            pod_template_hash: services.stable.clone(),
        },
        additional: Vec::new(),
        // Set by the controller after reading the weight back from the routers.
        verified: if previous == Some(w) { verified } else { None },
    });
}
