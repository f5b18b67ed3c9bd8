//! Rollout reconcile: observe (from the watch caches) → plan (pure) → apply → status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType as KubeEventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::metrics::RolloutInfoLabels;
use crate::api::analysis::{AnalysisRun, AnalysisRunSpec, AnalysisRunStatus};
use crate::api::common::AnalysisPhase;
use crate::api::constants::{self, FIELD_MANAGER};
use crate::api::rollout::Rollout;
use crate::api::validation::FieldError;
use crate::plan::{
    self, AnalysisRunKind, AnalysisRunRequest, EventType, Observation, ObservedAnalysisRun,
    ObservedReplicaSet, ObservedTraffic, ObservedWorkload, Plan,
};
use crate::traffic::{DesiredTraffic, RouterContext, TrafficError, TrafficRouter};

/// Why a Rollout reconcile failed; the category labels the error metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rollout {0} has no namespace or name")]
    Unnamed(String),
    #[error("{action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("traffic router {router}: {source}")]
    Traffic {
        router: &'static str,
        #[source]
        source: TrafficError,
    },
    #[error("not the leader: writes are disabled")]
    NotLeader,
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
            Error::Kube { .. } => "kube",
            Error::Traffic { .. } => "traffic",
            Error::NotLeader => "not_leader",
        }
    }
}

fn kube_err(action: &'static str, object: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let object = object.into();
    move |source| Error::Kube {
        action,
        object,
        source,
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// Reconciles one Rollout.
pub async fn reconcile(ro: Arc<Rollout>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ro.name_any();
    let ns = ro.namespace().ok_or_else(|| Error::Unnamed(name.clone()))?;
    if !ctx.ready.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    if !ctx.leader.is_leader() {
        // Warm caches, no writes: look again when leadership may have changed.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let uid = ro.uid().unwrap_or_default();
    let rv = ro.resource_version().unwrap_or_default();
    if ctx.is_superseded(&uid, &rv) {
        // Our own last write has not reached the cache yet; its watch event reconciles again.
        tracing::debug!(rollout = %name, rv = %rv, "cache behind our last write; waiting");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let routers = routers_for(&ro, &ctx);
    let rctx = RouterContext {
        client: ctx.client.clone(),
        rollout: ro.clone(),
        namespace: ns.clone(),
    };
    let has_routing = ro
        .spec
        .strategy
        .canary
        .as_ref()
        .is_some_and(|c| c.traffic_routing.is_some());
    let has_finalizer = ro
        .finalizers()
        .iter()
        .any(|f| f == constants::TRAFFIC_FINALIZER);
    if ro.meta().deletion_timestamp.is_some() {
        if has_finalizer {
            // Give the user's routing objects back before the Rollout goes: all traffic to
            // stable, managed routes and subset labels removed.
            for router in &routers {
                gate(&ctx)?;
                router
                    .cleanup(&rctx)
                    .await
                    .map_err(|source| Error::Traffic {
                        router: router.name(),
                        source,
                    })?;
            }
            remove_finalizer(&ro, &ctx).await?;
            tracing::info!(rollout = %name, namespace = %ns, "traffic restored; finalizer removed");
        }
        ctx.metrics.forget_rollout(&ns, &name);
        ctx.forget_superseded(&uid);
        return Ok(Action::await_change());
    }
    if has_routing && !has_finalizer {
        add_finalizer(&ro, &ctx).await?;
        // The patch changed the resourceVersion: plan from the object it produced.
        return Ok(Action::await_change());
    }
    let mut obs = observe(&ro, &ctx, &routers, &rctx).await?;
    let now = ctx.now();
    let mut plan = plan::plan(&obs, now);
    let mut events = Vec::new();
    let recorded = ro.status.clone().unwrap_or_default();
    // Apply, then plan again from what was just written (up to three rounds), so that a step
    // whose effect landed completes in this reconcile: one status write instead of two. A round
    // acts only on decisions already recorded in status; when a later round decides something new
    // (next step, promotion, abort), that decision is written first and acted on next time, so a
    // controller killed at any instant resumes from a state its status explains.
    for round in 0..3 {
        tracing::debug!(
            rollout = %name,
            round,
            replica_sets = ?obs.replica_sets.iter().map(|r| (&r.hash, r.replicas, r.available)).collect::<Vec<_>>(),
            desired = ?plan.replica_sets.iter().map(|r| (&r.hash, r.replicas)).collect::<Vec<_>>(),
            weight = ?plan.canary_weight,
            step = ?plan.status.current_step_index,
            requeue = ?plan.requeue_after,
            rv = ?ro.metadata.resource_version,
            "planned"
        );
        if round > 0 && !same_decisions(&plan.status, &recorded) {
            events.append(&mut plan.events);
            break;
        }
        let applied = apply_world(&ro, &ns, &obs, &mut plan, &ctx, &routers, &rctx).await?;
        events.append(&mut plan.events);
        if !applied.changed
            || plan.invalid.is_some()
            || round == 2
            || !same_decisions(&plan.status, &recorded)
        {
            break;
        }
        assume_applied(&mut obs, &plan, applied.weight);
        obs.rollout.status = Some(plan.status.clone());
        plan = plan::plan(&obs, now);
    }
    plan.events = events;
    write_status(&ro, &ns, &plan, &ctx).await?;

    let router_name = routers.first().map_or("none", |r| r.name());
    ctx.metrics.set_rollout(
        RolloutInfoLabels {
            namespace: ns,
            name,
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
    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// JSON patch of the finalizer list, guarded by the resourceVersion we read (a concurrent change
/// gives a 409 and a retry, never a lost finalizer of someone else).
async fn add_finalizer(ro: &Rollout, ctx: &Context) -> Result<(), Error> {
    gate(ctx)?;
    let name = ro.name_any();
    let rv = ro.resource_version().unwrap_or_default();
    let ops = if ro.meta().finalizers.is_some() {
        serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers/-", "value": constants::TRAFFIC_FINALIZER}
        ])
    } else {
        serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": [constants::TRAFFIC_FINALIZER]}
        ])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| Error::Unnamed(e.to_string()))?;
    let api: Api<Rollout> =
        Api::namespaced(ctx.client.clone(), &ro.namespace().unwrap_or_default());
    api.patch(&name, &patch_params(), &Patch::Json::<()>(patch))
        .await
        .map_err(kube_err("add finalizer", name.clone()))?;
    Ok(())
}

async fn remove_finalizer(ro: &Rollout, ctx: &Context) -> Result<(), Error> {
    gate(ctx)?;
    let name = ro.name_any();
    let Some(index) = ro
        .finalizers()
        .iter()
        .position(|f| f == constants::TRAFFIC_FINALIZER)
    else {
        return Ok(());
    };
    let rv = ro.resource_version().unwrap_or_default();
    let ops = serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")}
    ]);
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| Error::Unnamed(e.to_string()))?;
    let api: Api<Rollout> =
        Api::namespaced(ctx.client.clone(), &ro.namespace().unwrap_or_default());
    match api
        .patch(&name, &patch_params(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(kube_err("remove finalizer", name.clone())(e)),
    }
}

/// The traffic routers a Rollout uses (none for a basic canary).
pub fn routers_for(ro: &Rollout, ctx: &Context) -> Vec<Box<dyn TrafficRouter>> {
    crate::traffic::routers_for(ro, &ctx.settings.routing)
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.uid == uid))
}

fn parse_ts(s: Option<&String>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

/// Builds the planner's observation from the caches and the routers.
async fn observe(
    ro: &Rollout,
    ctx: &Context,
    routers: &[Box<dyn TrafficRouter>],
    rctx: &RouterContext,
) -> Result<Observation, Error> {
    let ns = ro.namespace().unwrap_or_default();
    let uid = ro.uid().unwrap_or_default();
    let replica_sets = ctx
        .stores
        .replica_sets
        .state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()) && owned_by(rs.meta(), &uid))
        .filter(|rs| rs.meta().deletion_timestamp.is_none())
        .filter_map(|rs| {
            let hash = rs.labels().get(constants::POD_TEMPLATE_HASH_LABEL)?.clone();
            let status = rs.status.clone().unwrap_or_default();
            let annotations = rs.annotations();
            Some(ObservedReplicaSet {
                name: rs.name_any(),
                hash,
                replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                actual: status.replicas,
                ready: status.ready_replicas.unwrap_or(0),
                available: status.available_replicas.unwrap_or(0),
                revision: annotations
                    .get(constants::REVISION_ANNOTATION)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0),
                scale_down_deadline: parse_ts(
                    annotations.get(constants::SCALE_DOWN_DEADLINE_ANNOTATION),
                ),
            })
        })
        .collect();
    let analysis_runs = ctx
        .stores
        .analysis_runs
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()) && owned_by(r.meta(), &uid))
        .filter_map(|r| {
            let labels = r.labels();
            let kind = match labels
                .get(constants::ROLLOUT_TYPE_LABEL)
                .map(String::as_str)
            {
                Some(constants::ROLLOUT_TYPE_STEP) => {
                    AnalysisRunKind::Step(labels.get(constants::STEP_INDEX_LABEL)?.parse().ok()?)
                }
                Some(constants::ROLLOUT_TYPE_BACKGROUND) => AnalysisRunKind::Background,
                _ => return None,
            };
            let status = r.status.clone().unwrap_or_default();
            Some(ObservedAnalysisRun {
                name: r.name_any(),
                kind,
                pod_hash: labels.get(constants::POD_TEMPLATE_HASH_LABEL)?.clone(),
                phase: status.phase,
                message: status.message.clone(),
                terminated: r.spec.terminate,
            })
        })
        .collect();

    let mut reference_errors = Vec::new();
    let mut traffic = ObservedTraffic::default();
    if let Some(canary) = &ro.spec.strategy.canary {
        for (field, svc) in [
            ("spec.strategy.canary.stableService", &canary.stable_service),
            ("spec.strategy.canary.canaryService", &canary.canary_service),
        ] {
            let Some(svc) = svc.as_ref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let mut found = ctx
                .stores
                .services
                .get(&ObjectRef::<Service>::new(svc).within(&ns));
            if found.is_none() {
                // Watches of different kinds are not ordered: confirm with a live read before
                // calling a Service missing.
                let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
                found = api
                    .get_opt(svc)
                    .await
                    .map_err(kube_err("get service", svc.clone()))?
                    .map(Arc::new);
            }
            match found {
                None => reference_errors.push(FieldError {
                    field: field.to_string(),
                    message: format!("Service {svc:?} not found in namespace {ns:?}"),
                }),
                Some(s) => {
                    let hash = s
                        .spec
                        .as_ref()
                        .and_then(|sp| sp.selector.as_ref())
                        .and_then(|sel| sel.get(constants::POD_TEMPLATE_HASH_LABEL).cloned());
                    if field.ends_with("stableService") {
                        traffic.stable_service_hash = hash;
                    } else {
                        traffic.canary_service_hash = hash;
                    }
                }
            }
        }
    }
    let mut weights = Vec::new();
    for router in routers {
        match router.observe(rctx).await {
            Ok(o) => weights.push(o.weight),
            Err(TrafficError::InvalidReference { field, message }) => {
                reference_errors.push(FieldError { field, message })
            }
            Err(source) => {
                return Err(Error::Traffic {
                    router: router.name(),
                    source,
                });
            }
        }
    }
    // Several routers: the highest weight any of them sends is what the canary may receive.
    traffic.canary_weight = weights.iter().flatten().max().copied();

    let (template, workload) = match &ro.spec.workload_ref {
        Some(w) => {
            let dep = ctx
                .stores
                .deployments
                .get(&ObjectRef::new(&w.name).within(&ns));
            let template = dep
                .as_ref()
                .and_then(|d| d.spec.as_ref())
                .map(|s| s.template.clone());
            let workload = dep.as_ref().map(|d| ObservedWorkload {
                replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                generation: d.metadata.generation.unwrap_or(0),
            });
            (template, workload)
        }
        None => (ro.spec.template.clone(), None),
    };
    Ok(Observation {
        rollout: ro.clone(),
        template,
        replica_sets,
        analysis_runs,
        traffic,
        workload,
        reference_errors,
    })
}

/// The selector the Rollout's pods are selected by (from the spec or the workloadRef Deployment).
fn pod_selector(ro: &Rollout, ctx: &Context) -> LabelSelector {
    if let Some(w) = &ro.spec.workload_ref {
        let ns = ro.namespace().unwrap_or_default();
        if let Some(d) = ctx
            .stores
            .deployments
            .get(&ObjectRef::new(&w.name).within(&ns))
            && let Some(spec) = &d.spec
        {
            return spec.selector.clone();
        }
    }
    ro.spec.selector.clone().unwrap_or_default()
}

fn owner_ref(ro: &Rollout) -> OwnerReference {
    OwnerReference {
        api_version: crate::api::API_VERSION.to_string(),
        kind: "Rollout".to_string(),
        name: ro.name_any(),
        uid: ro.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn gate(ctx: &Context) -> Result<(), Error> {
    if ctx.leader.is_leader() {
        Ok(())
    } else {
        Err(Error::NotLeader)
    }
}

/// Applies a plan in the safe order: scale-ups and new ReplicaSets, traffic, Services,
/// scale-downs, AnalysisRuns, deletions, the workload, then status and Events.
#[allow(clippy::too_many_arguments)]
/// True when two statuses record the same decisions (version, stable version, step, pauses,
/// abort, promote-full): what the next writes may rest on.
fn same_decisions(
    a: &crate::api::rollout::RolloutStatus,
    b: &crate::api::rollout::RolloutStatus,
) -> bool {
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

/// What applying a plan did.
struct Applied {
    /// Something was written.
    changed: bool,
    /// The canary weight read back from every router after the write, when they agree.
    weight: Option<i32>,
}

async fn apply_world(
    ro: &Rollout,
    ns: &str,
    obs: &Observation,
    plan: &mut Plan,
    ctx: &Context,
    routers: &[Box<dyn TrafficRouter>],
    rctx: &RouterContext,
) -> Result<Applied, Error> {
    let name = ro.name_any();
    let mut applied = Applied {
        changed: false,
        weight: None,
    };
    if plan.invalid.is_none() {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
        let template = obs.template.clone().unwrap_or_default();
        let selector = pod_selector(ro, ctx);

        // 1. New ReplicaSets and scale-ups.
        for d in &plan.replica_sets {
            let observed = obs.replica_sets.iter().find(|r| r.hash == d.hash);
            match observed {
                None if d.create => {
                    gate(ctx)?;
                    applied.changed = true;
                    let rs = new_replica_set(ro, &template, &selector, d);
                    match rs_api.create(&post_params(), &rs).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                        Err(e) => return Err(kube_err("create replicaset", rs.name_any())(e)),
                    }
                }
                Some(o) if d.replicas > o.replicas || annotations_differ(o, d) => {
                    applied.changed = true;
                    if d.replicas >= o.replicas {
                        patch_rs(&rs_api, ctx, o, d).await?;
                    } else {
                        // Annotation-only change on a ReplicaSet that scales down later.
                        patch_rs(
                            &rs_api,
                            ctx,
                            o,
                            &plan::DesiredReplicaSet {
                                replicas: o.replicas,
                                ..d.clone()
                            },
                        )
                        .await?;
                    }
                }
                _ => {}
            }
        }

        // 2. Traffic.
        if let Some(weight) = plan.canary_weight {
            let canary = ro.spec.strategy.canary.as_ref();
            let max = canary
                .and_then(|c| c.traffic_routing.as_ref())
                .and_then(|t| t.max_traffic_weight)
                .unwrap_or(constants::DEFAULT_MAX_TRAFFIC_WEIGHT);
            let desired = DesiredTraffic {
                weight,
                max_weight: max,
                canary_hash: plan.canary_service_hash.clone(),
                stable_hash: plan.stable_service_hash.clone(),
                managed_routes: plan.managed_routes.clone().unwrap_or_default(),
            };
            let mut verified = true;
            if obs.traffic.canary_weight != Some(weight) {
                applied.changed = true;
            }
            for router in routers {
                gate(ctx)?;
                router
                    .apply(rctx, &desired)
                    .await
                    .map_err(|source| Error::Traffic {
                        router: router.name(),
                        source,
                    })?;
                let back = router
                    .observe(rctx)
                    .await
                    .map_err(|source| Error::Traffic {
                        router: router.name(),
                        source,
                    })?;
                verified &= back.weight == Some(weight);
            }
            if let Some(w) = plan.status.canary.weights.as_mut()
                && !routers.is_empty()
            {
                w.verified = Some(verified);
            }
            if verified {
                applied.weight = Some(weight);
            }
        }

        // 3. Services.
        let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
        if let Some(canary) = &ro.spec.strategy.canary {
            for (svc, want, seen) in [
                (
                    &canary.stable_service,
                    &plan.stable_service_hash,
                    &obs.traffic.stable_service_hash,
                ),
                (
                    &canary.canary_service,
                    &plan.canary_service_hash,
                    &obs.traffic.canary_service_hash,
                ),
            ] {
                let (Some(svc), Some(want)) = (svc.as_ref().filter(|s| !s.is_empty()), want) else {
                    continue;
                };
                if seen.as_ref() == Some(want) {
                    continue;
                }
                gate(ctx)?;
                applied.changed = true;
                let patch = json!({
                    "metadata": {"annotations": {constants::MANAGED_BY_ANNOTATION: name}},
                    "spec": {"selector": {constants::POD_TEMPLATE_HASH_LABEL: want}}
                });
                svc_api
                    .patch(svc, &patch_params(), &Patch::Merge(&patch))
                    .await
                    .map_err(kube_err("patch service selector", svc.clone()))?;
            }
        }

        // 4. Scale-downs.
        for d in &plan.replica_sets {
            if let Some(o) = obs.replica_sets.iter().find(|r| r.hash == d.hash)
                && d.replicas < o.replicas
            {
                applied.changed = true;
                patch_rs(&rs_api, ctx, o, d).await?;
            }
        }

        // 5. AnalysisRuns.
        let ar_api: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), ns);
        for run in &plan.terminate_analysis_runs {
            gate(ctx)?;
            applied.changed = true;
            let patch = json!({"spec": {"terminate": true}});
            match ar_api
                .patch(run, &patch_params(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(kube_err("terminate analysisrun", run.clone())(e)),
            }
        }
        for req in &plan.create_analysis_runs {
            gate(ctx)?;
            applied.changed = true;
            create_analysis_run(ro, ns, req, ctx, &ar_api).await?;
        }

        // 6. Pruned ReplicaSets.
        for rs in &plan.delete_replica_sets {
            gate(ctx)?;
            applied.changed = true;
            match rs_api.delete(rs, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(kube_err("delete replicaset", rs.clone())(e)),
            }
        }

        // 7. The workloadRef Deployment.
        if let (Some(replicas), Some(w)) = (plan.workload_replicas, &ro.spec.workload_ref) {
            gate(ctx)?;
            applied.changed = true;
            let api: Api<k8s_openapi::api::apps::v1::Deployment> =
                Api::namespaced(ctx.client.clone(), ns);
            let patch = json!({"spec": {"replicas": replicas}});
            api.patch(&w.name, &patch_params(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err("scale deployment", w.name.clone()))?;
        }
    }

    Ok(applied)
}

/// The observation after a plan was applied: what the caches will show once our writes arrive.
fn assume_applied(obs: &mut Observation, plan: &Plan, weight: Option<i32>) {
    for d in &plan.replica_sets {
        match obs.replica_sets.iter_mut().find(|r| r.hash == d.hash) {
            Some(r) => {
                r.replicas = d.replicas;
                r.revision = d.revision;
                r.scale_down_deadline = d.scale_down_deadline;
                r.available = r.available.min(d.replicas);
                r.ready = r.ready.min(d.replicas);
                r.actual = r.actual.min(d.replicas);
            }
            None if d.create => obs.replica_sets.push(ObservedReplicaSet {
                name: format!("{}-{}", obs.rollout.name_any(), d.hash),
                hash: d.hash.clone(),
                replicas: d.replicas,
                actual: 0,
                ready: 0,
                available: 0,
                revision: d.revision,
                scale_down_deadline: d.scale_down_deadline,
            }),
            None => {}
        }
    }
    obs.replica_sets
        .retain(|r| !plan.delete_replica_sets.contains(&r.name));
    if plan.canary_weight.is_some() {
        obs.traffic.canary_weight = weight;
    }
    if let Some(h) = &plan.stable_service_hash {
        obs.traffic.stable_service_hash = Some(h.clone());
    }
    if let Some(h) = &plan.canary_service_hash {
        obs.traffic.canary_service_hash = Some(h.clone());
    }
    for name in &plan.terminate_analysis_runs {
        if let Some(r) = obs.analysis_runs.iter_mut().find(|r| &r.name == name) {
            r.terminated = true;
        }
    }
    for req in &plan.create_analysis_runs {
        if !obs.analysis_runs.iter().any(|r| r.name == req.name) {
            obs.analysis_runs.push(ObservedAnalysisRun {
                name: req.name.clone(),
                kind: req.kind,
                pod_hash: req.pod_hash.clone(),
                phase: AnalysisPhase::Pending,
                message: None,
                terminated: false,
            });
        }
    }
    if let (Some(w), Some(n)) = (obs.workload.as_mut(), plan.workload_replicas) {
        w.replicas = n;
    }
}

/// Writes the status (when it changed) and publishes the Events.
async fn write_status(ro: &Rollout, ns: &str, plan: &Plan, ctx: &Context) -> Result<(), Error> {
    let name = ro.name_any();
    // 8. Status, only when it changed. `replace_status` carries the resourceVersion we planned
    // from, so a user action (promote, abort) written meanwhile is never overwritten: we get a
    // 409 and plan again.
    if plan.status_changed(ro) {
        gate(ctx)?;
        let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), ns);
        let mut updated = ro.clone();
        updated.status = Some(plan.status.clone());
        updated.metadata.managed_fields = None;
        let result = api.replace_status(&name, &post_params(), &updated).await;
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
        result.map_err(kube_err("update rollout status", name.clone()))?;
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

fn annotations_differ(o: &ObservedReplicaSet, d: &plan::DesiredReplicaSet) -> bool {
    o.revision != d.revision || o.scale_down_deadline != d.scale_down_deadline
}

async fn patch_rs(
    api: &Api<ReplicaSet>,
    ctx: &Context,
    o: &ObservedReplicaSet,
    d: &plan::DesiredReplicaSet,
) -> Result<(), Error> {
    if o.replicas == d.replicas && !annotations_differ(o, d) {
        return Ok(());
    }
    gate(ctx)?;
    let deadline = d.scale_down_deadline.map(|t| t.to_string());
    let patch = json!({
        "metadata": {"annotations": {
            constants::REVISION_ANNOTATION: d.revision.to_string(),
            constants::SCALE_DOWN_DEADLINE_ANNOTATION: deadline,
        }},
        "spec": {"replicas": d.replicas}
    });
    api.patch(&o.name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err("scale replicaset", o.name.clone()))?;
    Ok(())
}

/// A ReplicaSet for one version: the template plus the hash label in labels and selector.
fn new_replica_set(
    ro: &Rollout,
    template: &PodTemplateSpec,
    selector: &LabelSelector,
    d: &plan::DesiredReplicaSet,
) -> ReplicaSet {
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(Default::default).insert(
        constants::POD_TEMPLATE_HASH_LABEL.to_string(),
        d.hash.clone(),
    );
    let mut selector = selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(
            constants::POD_TEMPLATE_HASH_LABEL.to_string(),
            d.hash.clone(),
        );
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(
        constants::POD_TEMPLATE_HASH_LABEL.to_string(),
        d.hash.clone(),
    );
    let mut annotations = BTreeMap::new();
    annotations.insert(
        constants::REVISION_ANNOTATION.to_string(),
        d.revision.to_string(),
    );
    annotations.insert(
        constants::DESIRED_REPLICAS_ANNOTATION.to_string(),
        ro.spec.replicas.unwrap_or(1).to_string(),
    );
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", ro.name_any(), d.hash)),
            namespace: ro.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_ref(ro)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(d.replicas),
            min_ready_seconds: ro.spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Resolves the Rollout-side arguments of an analysis (values, pod-template hashes, fields).
fn rollout_args(
    ro: &Rollout,
    req: &AnalysisRunRequest,
) -> Result<Vec<crate::api::analysis::Argument>, String> {
    let stable = ro.status.as_ref().and_then(|s| s.stable_rs.clone());
    let value = serde_json::to_value(ro).map_err(|e| e.to_string())?;
    crate::analysis::rollout_args::resolve_rollout_args(
        &req.analysis.args,
        &value,
        crate::analysis::rollout_args::TemplateHashes {
            stable: stable.as_deref(),
            latest: Some(req.pod_hash.as_str()),
        },
    )
    .map_err(|e| e.to_string())
}

async fn create_analysis_run(
    ro: &Rollout,
    ns: &str,
    req: &AnalysisRunRequest,
    ctx: &Context,
    api: &Api<AnalysisRun>,
) -> Result<(), Error> {
    use crate::api::analysis::{AnalysisTemplate, ClusterAnalysisTemplate};
    let mut specs = BTreeMap::new();
    let mut problem: Option<String> = None;
    // Fetch every template, following `templates[]` inclusions.
    let refs = req.analysis.templates.clone();
    let mut queue = refs.clone();
    while let Some(r) = queue.pop() {
        let key = (r.cluster_scope, r.template_name.clone());
        if specs.contains_key(&key) {
            continue;
        }
        let spec = if r.cluster_scope {
            let api: Api<ClusterAnalysisTemplate> = Api::all(ctx.client.clone());
            api.get_opt(&r.template_name)
                .await
                .map(|t| t.map(|t| t.spec.template))
        } else {
            let api: Api<AnalysisTemplate> = Api::namespaced(ctx.client.clone(), ns);
            api.get_opt(&r.template_name)
                .await
                .map(|t| t.map(|t| t.spec))
        }
        .map_err(kube_err("get analysis template", r.template_name.clone()))?;
        match spec {
            Some(spec) => {
                queue.extend(spec.templates.iter().cloned());
                specs.insert(key, spec);
            }
            None => {
                problem.get_or_insert(format!(
                    "{} {:?} not found",
                    if r.cluster_scope {
                        "ClusterAnalysisTemplate"
                    } else {
                        "AnalysisTemplate"
                    },
                    r.template_name
                ));
            }
        }
    }
    let spec = match problem {
        Some(p) => Err(p),
        None => crate::analysis::template::compose(&refs, |r| {
            specs.get(&(r.cluster_scope, r.template_name.clone()))
        })
        .map_err(|e| e.to_string())
        .and_then(|template| {
            let args = rollout_args(ro, req)?;
            crate::analysis::template::run_spec(
                &template,
                &args,
                &req.analysis.dry_run,
                &req.analysis.measurement_retention,
            )
            .map_err(|e| e.to_string())
        }),
    };
    let mut labels = plan::analysis_run_labels(req);
    let mut annotations = BTreeMap::new();
    if let Some(meta) = &req.analysis.analysis_run_metadata {
        labels.extend(meta.labels.clone());
        annotations.extend(meta.annotations.clone());
    }
    if let Some(id) = ro.labels().get(constants::INSTANCE_ID_LABEL) {
        labels.insert(constants::INSTANCE_ID_LABEL.to_string(), id.clone());
    }
    let (run_spec, error) = match spec {
        Ok(s) => (s, None),
        Err(e) => (AnalysisRunSpec::default(), Some(e)),
    };
    let run = AnalysisRun {
        metadata: ObjectMeta {
            name: Some(req.name.clone()),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner_ref(ro)]),
            ..Default::default()
        },
        spec: run_spec,
        status: None,
    };
    let created = match api.create(&post_params(), &run).await {
        Ok(c) => c,
        Err(kube::Error::Api(s)) if s.is_already_exists() => return Ok(()),
        Err(e) => return Err(kube_err("create analysisrun", req.name.clone())(e)),
    };
    if let Some(message) = error {
        // The run cannot be evaluated: it ends in Error at once, which aborts the step, and the
        // message says why.
        let mut errored = created;
        errored.status = Some(AnalysisRunStatus {
            phase: AnalysisPhase::Error,
            message: Some(message),
            ..Default::default()
        });
        api.replace_status(&req.name, &post_params(), &errored)
            .await
            .map_err(kube_err("update analysisrun status", req.name.clone()))?;
    }
    Ok(())
}
