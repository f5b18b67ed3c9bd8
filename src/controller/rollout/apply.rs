//! Apply: the writes a plan asks for, in the safe order, all through the leader-gated writer.
//! Also the finalizer the Rollout carries while it routes traffic, and the traffic restored
//! when it is deleted.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::{ApiError, RouterError, api_error, kube_category, router_error};
use super::observe::{Observed, TemplateError, Templates};
use super::target::Target;
use crate::analysis::build_run::{RunRequest, build_run};
use crate::api::analysis::{AnalysisRun, AnalysisRunStatus};
use crate::api::common::AnalysisPhase;
use crate::api::constants::{self, FIELD_MANAGER};
use crate::api::rollout::{Rollout, ServiceRole};
use crate::api::validation::FieldError;
use crate::controller::context::Context;
use crate::plan::{self, AnalysisRunRequest, Observation, ObservedReplicaSet, Plan};
use crate::traffic::DesiredTraffic;

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A write failed (or was refused: not the leader).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A router could not write its objects.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A template an AnalysisRun is built from could not be read.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A patch could not be built.
    #[error("build {what} patch: {message}")]
    Patch {
        /// Which patch.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// A cached object does not decode.
    #[error(transparent)]
    Cache(#[from] crate::controller::compact::CacheError),
}

impl Error {
    /// Category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Api(e) => e.category(),
            Error::Router(e) => e.category(),
            Error::Template(e) => kube_category(&e.source),
            Error::Patch { .. } => "invalid",
            Error::Cache(_) => "cache",
        }
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

/// What applying a plan did.
pub(super) struct Applied {
    /// Something was written.
    pub changed: bool,
    /// The canary weight read back from every router after the write, when they agree.
    pub weight: Option<i32>,
    /// The API server refused the new ReplicaSet: nothing after it was applied. Recorded in the
    /// context, so that every later observation carries it.
    pub refused: Option<plan::RefusedReplicaSet>,
}

/// Applies a plan in the safe order: restart evictions (a plan that evicts asks for nothing
/// else), scale-ups and new ReplicaSets, traffic, Services, scale-downs, AnalysisRuns,
/// deletions, the workload. Status and Events come after. An invalid
/// spec changes nothing.
pub(super) async fn apply(
    t: &Target<'_>,
    observed: &Observed,
    plan: &mut Plan,
) -> Result<Applied, Error> {
    let mut applied = Applied {
        changed: false,
        weight: None,
        refused: None,
    };
    if plan.invalid.is_some() {
        return Ok(applied);
    }
    let obs = &observed.state;
    applied.changed |= evict(t, plan).await?;
    match scale_up(t, obs, plan).await? {
        ScaledUp::Changed(changed) => applied.changed |= changed,
        // Nothing may move towards a version that cannot exist: stop before traffic.
        ScaledUp::Refused(refused) => {
            t.ctx.refuse(&t.uid(), refused.clone());
            applied.refused = Some(refused);
            return Ok(applied);
        }
    }
    applied.changed |= ephemeral_metadata(t, plan).await?;
    if let Some(weight) = plan.canary_weight {
        let (changed, verified) = traffic(t, obs, plan, weight).await?;
        applied.changed |= changed;
        if verified {
            applied.weight = Some(weight);
        }
    }
    applied.changed |= services(t, obs, plan).await?;
    applied.changed |= release_dropped_services(t).await?;
    applied.changed |= scale_down(t, obs, plan).await?;
    record_scaling(obs, plan);
    applied.changed |= analysis_runs(t, &observed.templates, plan).await?;
    applied.changed |= prune(t, plan).await?;
    applied.changed |= workload(t, plan).await?;
    applied.changed |= relabel_legacy(t).await?;
    Ok(applied)
}

/// One `ScalingReplicaSet` Event per ReplicaSet whose size the plan changed (Argo's reason and
/// wording), placed after the Events of a new revision (a ReplicaSet is created, then scaled)
/// and before those of the status (step completed, paused, completed), as Argo emits them.
fn record_scaling(obs: &Observation, plan: &mut Plan) {
    let mut scaled = Vec::new();
    for d in &plan.replica_sets {
        let observed = obs.replica_sets.iter().find(|r| r.hash == d.hash);
        let (from, name) = match observed {
            Some(o) => (o.replicas, o.name.clone()),
            None if d.create => (0, replica_set_name(&obs.rollout, &d.hash)),
            None => continue,
        };
        if from == d.replicas {
            continue;
        }
        let verb = if d.replicas > from { "up" } else { "down" };
        scaled.push(plan::PlannedEvent {
            type_: plan::EventType::Normal,
            reason: constants::reason::SCALING_REPLICA_SET,
            message: format!(
                "Scaled {verb} ReplicaSet {name} (revision {}) from {from} to {}",
                d.revision, d.replicas
            ),
        });
    }
    let revision_events = [
        constants::reason::ROLLOUT_NOT_COMPLETED,
        constants::reason::ROLLOUT_UPDATED,
        constants::reason::NEW_REPLICA_SET_CREATED,
        constants::reason::SUPERSEDED,
        constants::reason::ROLLED_BACK,
    ];
    let at = plan
        .events
        .iter()
        .rposition(|e| revision_events.contains(&e.reason))
        .map_or(0, |i| i + 1);
    plan.events.splice(at..at, scaled);
}

/// The name of the ReplicaSet of `hash`: `<rollout>-<hash>`.
fn replica_set_name(ro: &Rollout, hash: &str) -> String {
    format!("{}-{hash}", ro.name_any())
}

/// How long one eviction may be retried (429s, by the client) before it counts as refused.
const EVICTION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Restart evictions, through the Eviction API so that PodDisruptionBudgets apply: candidates
/// in the plan's order until `limit` pods went. A refusal (429: a PodDisruptionBudget) is not
/// an error: the restart tries again later. The outcome is
/// logged per pod and told in one Event. Returns whether a pod was evicted.
async fn evict(t: &Target<'_>, plan: &mut Plan) -> Result<bool, Error> {
    let Some(e) = plan.evictions.clone() else {
        return Ok(false);
    };
    let api: Api<Pod> = t.ctx.writer.namespaced(&t.namespace);
    let (mut evicted, mut refused) = (Vec::new(), Vec::new());
    for pod in &e.candidates {
        if evicted.len() >= e.limit {
            break;
        }
        // kube-rs's client retries a 429 with backoff for minutes; a PodDisruptionBudget that
        // refuses keeps refusing, so waiting here would hold this reconcile (and the Rollout)
        // for as long. A refusal is final for this reconcile: the restart tries again later.
        let Ok(r) =
            tokio::time::timeout(EVICTION_PATIENCE, api.evict(pod, &EvictParams::default())).await
        else {
            tracing::warn!(rollout = %t.name, namespace = %t.namespace, pod = %pod, "eviction not granted within {EVICTION_PATIENCE:?}; retrying later");
            refused.push(format!(
                "{pod} (not granted within {}s: a PodDisruptionBudget allows no disruption now)",
                EVICTION_PATIENCE.as_secs()
            ));
            break;
        };
        match r {
            Ok(_) => {
                tracing::info!(rollout = %t.name, namespace = %t.namespace, pod = %pod, restart_at = %e.restart_at, "evicted pod for restart");
                evicted.push(pod.clone());
            }
            Err(kube::Error::Api(s)) if s.code == 429 => {
                tracing::warn!(rollout = %t.name, namespace = %t.namespace, pod = %pod, reason = %s.message, "eviction refused; retrying later");
                refused.push(format!("{pod} ({})", s.message));
                // The client already retried this 429 with backoff before reporting it; the
                // next reconcile tries again rather than holding this one on other pods.
                break;
            }
            // Gone already: its ReplicaSet replaces it anyway.
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(err) => return Err(api_error("evict pod", pod.clone())(err).into()),
        }
    }
    let left = e.remaining.saturating_sub(evicted.len());
    let mut message = String::new();
    if !evicted.is_empty() {
        message = format!(
            "evicted {} created before {}; {left} of {} pods left to restart",
            evicted.join(", "),
            e.restart_at,
            e.total
        );
    }
    if !refused.is_empty() {
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&format!("eviction refused for {}", refused.join(", ")));
    }
    if !message.is_empty() {
        let type_ = if evicted.is_empty() {
            plan::EventType::Warning
        } else {
            plan::EventType::Normal
        };
        plan.events.push(plan::PlannedEvent {
            type_,
            reason: constants::reason::RESTARTING_PODS,
            message,
        });
    }
    Ok(!evicted.is_empty())
}

/// What [`scale_up`] did.
enum ScaledUp {
    /// Whether it wrote.
    Changed(bool),
    /// The API server refused to create the new ReplicaSet.
    Refused(plan::RefusedReplicaSet),
}

/// A create the API server refused for what the object is (422 Invalid, or 400 when the body
/// cannot even be decoded, e.g. a malformed quantity): the same template is refused every
/// time, so it is reported rather than retried. Anything else (a 500, a timeout, a 409, a
/// webhook that is down) may pass next time and is retried with backoff.
fn refusal(rs: &ReplicaSet, hash: &str, error: &kube::Error) -> Option<plan::RefusedReplicaSet> {
    let kube::Error::Api(s) = error else {
        return None;
    };
    if !(s.code == 422 || (s.code == 400 && s.reason == "BadRequest")) {
        return None;
    }
    let mut causes: Vec<FieldError> = s
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .map(|c| FieldError {
            field: if c.field.is_empty() {
                "spec.template".to_string()
            } else {
                c.field.clone()
            },
            message: c.message.clone(),
        })
        .collect();
    if causes.is_empty() {
        causes.push(FieldError {
            field: "spec.template".into(),
            message: s.message.clone(),
        });
    }
    Some(plan::RefusedReplicaSet {
        hash: hash.to_string(),
        name: rs.name_any(),
        causes,
        message: s.message.clone(),
    })
}

/// New ReplicaSets and scale-ups (and annotation changes).
async fn scale_up(t: &Target<'_>, obs: &Observation, plan: &Plan) -> Result<ScaledUp, Error> {
    let ro = t.rollout.as_ref();
    let rs_api: Api<ReplicaSet> = t.ctx.writer.namespaced(&t.namespace);
    let template = obs.template.clone().unwrap_or_default();
    let selector = pod_selector(ro, t.ctx)?;
    let mut changed = false;
    for d in &plan.replica_sets {
        let observed = obs.replica_sets.iter().find(|r| r.hash == d.hash);
        match observed {
            None if d.create => {
                changed = true;
                let rs = new_replica_set(ro, &template, &selector, d);
                match rs_api.create(&post_params(), &rs).await {
                    Ok(created) => t.ctx.remember_created_replica_set(created),
                    Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                    Err(e) => {
                        if let Some(refused) = refusal(&rs, &d.hash, &e) {
                            tracing::warn!(rollout = %t.name, namespace = %t.namespace, replicaset = %refused.name, error = %e, "replicaset refused by the API server; not retrying this template");
                            return Ok(ScaledUp::Refused(refused));
                        }
                        return Err(api_error("create replicaset", rs.name_any())(e).into());
                    }
                }
            }
            // A ReplicaSet this plan scales down gets its annotations with the scale-down,
            // later in this apply: one write, not two.
            Some(o)
                if d.replicas >= o.replicas
                    && (d.replicas > o.replicas || annotations_differ(o, d)) =>
            {
                changed = true;
                patch_rs(t.ctx, &rs_api, o, d).await?;
            }
            _ => {}
        }
    }
    Ok(ScaledUp::Changed(changed))
}

/// Ephemeral metadata (`canaryMetadata` / `stableMetadata`, see [`plan::ephemeral`]): each
/// ReplicaSet whose recorded metadata is not what its role wants gets its pod template changed
/// first (so that pods it creates meanwhile carry the new metadata), then its existing pods
/// patched in place, then the record; a controller stopped in between finds the record still
/// old and finishes. Pods are read only for such a ReplicaSet, never otherwise. A ReplicaSet
/// created by this plan already carries its metadata (see `new_replica_set`). Returns whether
/// it wrote.
async fn ephemeral_metadata(t: &Target<'_>, plan: &Plan) -> Result<bool, Error> {
    let ro = t.rollout.as_ref();
    if !plan::ephemeral::configured(ro) {
        return Ok(false);
    }
    let rs_api: Api<ReplicaSet> = t.ctx.writer.namespaced(&t.namespace);
    let mut changed = false;
    for rs in super::observe::owned_replica_sets(t)? {
        if rs.meta().deletion_timestamp.is_some() {
            continue;
        }
        let Some(hash) = constants::pod_template_hash(rs.labels()) else {
            continue;
        };
        let want = plan::ephemeral::desired(ro, &plan.status, hash);
        let was = plan::ephemeral::recorded(rs.annotations());
        let spec = rs.spec.as_ref();
        let meta = spec
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref());
        let template_change = plan::ephemeral::change(
            meta.and_then(|m| m.labels.as_ref()),
            meta.and_then(|m| m.annotations.as_ref()),
            was.as_ref(),
            want.as_ref(),
        );
        if template_change.is_empty() && was == want {
            continue;
        }
        changed = true;
        let name = rs.name_any();
        if !template_change.is_empty() {
            let patch = json!({"spec": {"template": {"metadata": template_change.merge_patch()}}});
            rs_api
                .patch(&name, &patch_params(), &Patch::Merge(&patch))
                .await
                .map_err(api_error(
                    "patch replicaset ephemeral metadata",
                    name.clone(),
                ))?;
        }
        // A ReplicaSet scaled to zero has no pods to keep (those still terminating go anyway).
        if spec.and_then(|s| s.replicas) != Some(0) {
            ephemeral_pods(t, &rs, was.as_ref(), want.as_ref()).await?;
        }
        let record = plan::ephemeral::record(want.as_ref());
        let patch = json!({"metadata": {"annotations": {
            constants::EPHEMERAL_METADATA_ANNOTATION: record,
        }}});
        rs_api
            .patch(&name, &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(api_error(
                "record replicaset ephemeral metadata",
                name.clone(),
            ))?;
        tracing::info!(rollout = %t.name, namespace = %t.namespace, replica_set = %name, metadata = ?want, "synced ephemeral metadata");
    }
    Ok(changed)
}

/// The pods of `rs` (those it controls), each patched from `was` to `want` where it differs.
async fn ephemeral_pods(
    t: &Target<'_>,
    rs: &ReplicaSet,
    was: Option<&crate::api::common::ObjectMetadata>,
    want: Option<&crate::api::common::ObjectMetadata>,
) -> Result<(), Error> {
    let name = rs.name_any();
    let selects = |key: &str| {
        rs.spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .and_then(|m| m.get(key))
            .cloned()
    };
    // Pods carry the key their ReplicaSet's selector uses (the legacy one for a ReplicaSet an
    // earlier version created).
    let Some((key, hash)) = [
        constants::POD_TEMPLATE_HASH_LABEL,
        constants::LEGACY_POD_TEMPLATE_HASH_LABEL,
    ]
    .into_iter()
    .find_map(|k| selects(k).map(|h| (k, h))) else {
        return Ok(());
    };
    let read: Api<Pod> = Api::namespaced(t.ctx.client.clone(), &t.namespace);
    let pods = read
        .list(&ListParams::default().labels(&format!("{key}={hash}")))
        .await
        .map_err(api_error("list pods", name.clone()))?;
    let write: Api<Pod> = t.ctx.writer.namespaced(&t.namespace);
    let uid = rs.uid();
    for pod in &pods.items {
        let controlled = pod
            .owner_references()
            .iter()
            .any(|r| r.controller == Some(true) && Some(&r.uid) == uid.as_ref());
        if !controlled || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let c = plan::ephemeral::change(
            pod.metadata.labels.as_ref(),
            pod.metadata.annotations.as_ref(),
            was,
            want,
        );
        if c.is_empty() {
            continue;
        }
        let patch = json!({"metadata": c.merge_patch()});
        match write
            .patch(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // Gone already: its ReplicaSet's template carries the metadata for its successor.
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => {
                return Err(api_error("patch pod ephemeral metadata", pod.name_any())(e).into());
            }
        }
    }
    Ok(())
}

/// Traffic: every router to `weight`, each read back. Returns whether the weight changes,
/// and whether every router reads back `weight` (recorded in status as `verified`).
async fn traffic(
    t: &Target<'_>,
    obs: &Observation,
    plan: &mut Plan,
    weight: i32,
) -> Result<(bool, bool), Error> {
    let canary = t.rollout.spec.strategy.canary.as_ref();
    let max = canary
        .and_then(|c| c.traffic_routing.as_ref())
        .and_then(|t| t.max_traffic_weight)
        .unwrap_or(constants::DEFAULT_MAX_TRAFFIC_WEIGHT);
    let desired = DesiredTraffic {
        weight,
        max_weight: max,
        canary_hash: plan.canary_service_hash.clone(),
        stable_hash: plan.stable_service_hash.clone(),
        legacy_label_hashes: obs.traffic.legacy_label_hashes.clone(),
        managed_routes: plan.managed_routes.clone().unwrap_or_default(),
    };
    let mut verified = true;
    let changed = obs.traffic.canary_weight != Some(weight);
    for router in &t.routers {
        router
            .apply(&t.router_ctx, &desired)
            .await
            .map_err(router_error(router.name()))?;
        let back = router
            .observe(&t.router_ctx)
            .await
            .map_err(router_error(router.name()))?;
        verified &= back.weight == Some(weight);
    }
    if let Some(w) = plan.status.canary.weights.as_mut()
        && !t.routers.is_empty()
    {
        w.verified = Some(verified);
    }
    Ok((changed, verified))
}

/// The stable and canary Services' selectors. Returns whether it wrote.
///
/// The hash goes under the key its pods carry (Sluice's, or the legacy one for a ReplicaSet an
/// earlier version created) and the other key is removed in the same patch: a selector that
/// requires both (left by Argo Rollouts on a Service it managed before) selects no pod.
async fn services(t: &Target<'_>, obs: &Observation, plan: &Plan) -> Result<bool, Error> {
    let svc_api: Api<Service> = t.ctx.writer.namespaced(&t.namespace);
    let mut changed = false;
    for (role, _, svc) in t.rollout.spec.strategy.managed_services() {
        let want = match role {
            ServiceRole::Stable => &plan.stable_service_hash,
            ServiceRole::New => &plan.canary_service_hash,
        };
        let (svc, Some(want)) = (svc.to_string(), want) else {
            continue;
        };
        let (key, other) = if obs.traffic.legacy_label_hashes.contains(want) {
            (
                constants::LEGACY_POD_TEMPLATE_HASH_LABEL,
                constants::POD_TEMPLATE_HASH_LABEL,
            )
        } else {
            (
                constants::POD_TEMPLATE_HASH_LABEL,
                constants::LEGACY_POD_TEMPLATE_HASH_LABEL,
            )
        };
        let known = t.ctx.service(&t.namespace, &svc);
        let selector = known
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.selector.as_ref());
        if selector.is_some_and(|sel| sel.get(key) == Some(want) && !sel.contains_key(other)) {
            continue;
        }
        changed = true;
        let patch = json!({
            "metadata": {"annotations": {constants::MANAGED_BY_ANNOTATION: &t.name}},
            "spec": {"selector": {key: want, other: null}}
        });
        let written = svc_api
            .patch(&svc, &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(api_error("patch service selector", svc.clone()))?;
        t.ctx.remember_service(written);
    }
    Ok(changed)
}

/// Services this Rollout switched before and no longer names (its strategy changed, or a Service
/// field now names another Service): the pod-template hash selector and the managed-by annotation
/// are taken off, as Argo Rollouts' Service controller does, so the Service selects the app's
/// pods again instead of a version about to be scaled down to nothing. Only a change of spec can
/// drop a Service, so this looks only while the spec's generation is not yet observed (a failed
/// write leaves it unobserved, and the next reconcile tries again). Returns whether it wrote.
async fn release_dropped_services(t: &Target<'_>) -> Result<bool, Error> {
    let generation = t.rollout.metadata.generation;
    let observed = t
        .rollout
        .status
        .as_ref()
        .and_then(|s| s.observed_generation);
    if generation.is_some() && generation == observed {
        return Ok(false);
    }
    let named: Vec<String> = t
        .rollout
        .spec
        .strategy
        .managed_services()
        .into_iter()
        .map(|(_, _, svc)| svc.to_string())
        .collect();
    let dropped: Vec<String> = t
        .ctx
        .stores
        .services
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(t.namespace.as_str()))
        .filter(|s| {
            s.annotations().get(constants::MANAGED_BY_ANNOTATION) == Some(&t.name)
                && !named.contains(&s.name_any())
        })
        .map(|s| s.name_any())
        .collect();
    let svc_api: Api<Service> = t.ctx.writer.namespaced(&t.namespace);
    for svc in &dropped {
        let patch = json!({
            "metadata": {"annotations": {constants::MANAGED_BY_ANNOTATION: null}},
            "spec": {"selector": {
                constants::POD_TEMPLATE_HASH_LABEL: null,
                constants::LEGACY_POD_TEMPLATE_HASH_LABEL: null,
            }}
        });
        let written = svc_api
            .patch(svc, &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(api_error("release service selector", svc.clone()))?;
        t.ctx.remember_service(written);
        tracing::info!(rollout = %t.name, service = %svc, "service no longer referenced: selector released");
    }
    Ok(!dropped.is_empty())
}

/// ReplicaSets an earlier version labelled with the legacy (Argo Rollouts) hash key only: Sluice's
/// key is added to their labels, then the legacy key removed from their labels (their selector
/// and pods keep it; a ReplicaSet's selector cannot change), each step only once the previous
/// one is in the cache, so the ReplicaSet is never missing from both watches. Afterwards Argo
/// Rollouts' controller no longer sees them as its own. Returns whether it wrote.
async fn relabel_legacy(t: &Target<'_>) -> Result<bool, Error> {
    let rs_api: Api<ReplicaSet> = t.ctx.writer.namespaced(&t.namespace);
    // Looked up one by one: collecting every cached ReplicaSet here cost each reconcile a visit
    // of every ReplicaSet in the cluster.
    let in_main_cache = |rs: &ReplicaSet| {
        t.ctx
            .stores
            .replica_sets
            .get(&ObjectRef::new(&rs.name_any()).within(&t.namespace))
            .is_some_and(|cached| cached.uid() == rs.uid())
    };
    let mut changed = false;
    for rs in super::observe::owned_replica_sets(t)? {
        let labels = rs.labels();
        let Some(hash) = labels.get(constants::LEGACY_POD_TEMPLATE_HASH_LABEL) else {
            continue;
        };
        let patch = if !labels.contains_key(constants::POD_TEMPLATE_HASH_LABEL) {
            json!({"metadata": {"labels": {constants::POD_TEMPLATE_HASH_LABEL: hash}}})
        } else if rs.uid().is_some() && in_main_cache(&rs) {
            json!({"metadata": {"labels": {constants::LEGACY_POD_TEMPLATE_HASH_LABEL: null}}})
        } else {
            continue;
        };
        changed = true;
        rs_api
            .patch(&rs.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(api_error("relabel replicaset", rs.name_any()))?;
    }
    Ok(changed)
}

/// Scale-downs. Returns whether it wrote.
async fn scale_down(t: &Target<'_>, obs: &Observation, plan: &Plan) -> Result<bool, Error> {
    let rs_api: Api<ReplicaSet> = t.ctx.writer.namespaced(&t.namespace);
    let mut changed = false;
    for d in &plan.replica_sets {
        if let Some(o) = obs.replica_sets.iter().find(|r| r.hash == d.hash)
            && d.replicas < o.replicas
        {
            changed = true;
            patch_rs(t.ctx, &rs_api, o, d).await?;
        }
    }
    Ok(changed)
}

/// AnalysisRuns: terminations, then new runs. Returns whether it wrote.
async fn analysis_runs(t: &Target<'_>, templates: &Templates, plan: &Plan) -> Result<bool, Error> {
    let ar_api: Api<AnalysisRun> = t.ctx.writer.namespaced(&t.namespace);
    let mut changed = false;
    for run in &plan.terminate_analysis_runs {
        changed = true;
        let patch = json!({"spec": {"terminate": true}});
        match ar_api
            .patch(run, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(api_error("terminate analysisrun", run.clone())(e).into()),
        }
    }
    for req in &plan.create_analysis_runs {
        changed = true;
        create_analysis_run(t.rollout, req, templates, &ar_api).await?;
    }
    Ok(changed)
}

/// Pruned ReplicaSets. Returns whether it wrote.
async fn prune(t: &Target<'_>, plan: &Plan) -> Result<bool, Error> {
    let rs_api: Api<ReplicaSet> = t.ctx.writer.namespaced(&t.namespace);
    for rs in &plan.delete_replica_sets {
        match rs_api.delete(rs, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(api_error("delete replicaset", rs.clone())(e).into()),
        }
    }
    Ok(!plan.delete_replica_sets.is_empty())
}

/// The workloadRef Deployment's replicas. Returns whether it wrote.
async fn workload(t: &Target<'_>, plan: &Plan) -> Result<bool, Error> {
    let (Some(replicas), Some(w)) = (plan.workload_replicas, &t.rollout.spec.workload_ref) else {
        return Ok(false);
    };
    let api: Api<Deployment> = t.ctx.writer.namespaced(&t.namespace);
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(&w.name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(api_error("scale deployment", w.name.clone()))?;
    Ok(true)
}

/// Adds the finalizer and records the routing it guards (see
/// [`constants::MANAGED_ROUTING_ANNOTATION`]): one JSON patch guarded by the resourceVersion we
/// read (a concurrent change gives a 409 and a retry, never a lost finalizer of someone else).
pub(super) async fn add_finalizer(t: &Target<'_>) -> Result<(), Error> {
    let rv = t.rollout.resource_version().unwrap_or_default();
    let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
    if !t.has_finalizer() {
        ops.push(if t.rollout.meta().finalizers.is_some() {
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": constants::TRAFFIC_FINALIZER})
        } else {
            json!({"op": "add", "path": "/metadata/finalizers", "value": [constants::TRAFFIC_FINALIZER]})
        });
    }
    if let Some(record) = t.routing_record() {
        ops.push(if t.rollout.meta().annotations.is_some() {
            json!({"op": "add", "path": annotation_path(), "value": record})
        } else {
            json!({"op": "add", "path": "/metadata/annotations", "value": {constants::MANAGED_ROUTING_ANNOTATION: record}})
        });
    }
    let patch = json_patch(json!(ops), "finalizer")?;
    let api: Api<Rollout> = t.ctx.writer.namespaced(&t.namespace);
    api.patch(&t.name, &patch_params(), &Patch::Json::<()>(patch))
        .await
        .map_err(api_error("add finalizer", t.name.clone()))?;
    Ok(())
}

/// JSON pointer of the managed-routing annotation.
fn annotation_path() -> String {
    format!(
        "/metadata/annotations/{}",
        constants::MANAGED_ROUTING_ANNOTATION
            .replace('~', "~0")
            .replace('/', "~1")
    )
}

/// The Rollout is being deleted, or `trafficRouting` was removed from its spec: gives the user's
/// routing objects back (all traffic to stable, managed routes and subset labels removed, canary
/// Ingresses deleted), then drops the finalizer and the routing record.
pub(super) async fn release(t: &Target<'_>) -> Result<(), Error> {
    if !t.has_finalizer() {
        return Ok(());
    }
    match t.routers_to_release() {
        Some((routers, ctx)) => {
            for router in &routers {
                router
                    .cleanup(&ctx)
                    .await
                    .map_err(router_error(router.name()))?;
            }
        }
        None => tracing::warn!(
            rollout = %t.name,
            namespace = %t.namespace,
            "traffic routing removed but no record of it: its objects are left as they are"
        ),
    }
    remove_finalizer(t).await?;
    tracing::info!(rollout = %t.name, namespace = %t.namespace, "traffic restored; finalizer removed");
    Ok(())
}

async fn remove_finalizer(t: &Target<'_>) -> Result<(), Error> {
    let Some(index) = t
        .rollout
        .finalizers()
        .iter()
        .position(|f| f == constants::TRAFFIC_FINALIZER)
    else {
        return Ok(());
    };
    let rv = t.rollout.resource_version().unwrap_or_default();
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}),
        json!({"op": "remove", "path": format!("/metadata/finalizers/{index}")}),
    ];
    if t.recorded_routing().is_some() {
        ops.push(json!({"op": "remove", "path": annotation_path()}));
    }
    let patch = json_patch(json!(ops), "finalizer")?;
    let api: Api<Rollout> = t.ctx.writer.namespaced(&t.namespace);
    match api
        .patch(&t.name, &patch_params(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(api_error("remove finalizer", t.name.clone())(e).into()),
    }
}

fn json_patch(ops: serde_json::Value, what: &'static str) -> Result<json_patch::Patch, Error> {
    serde_json::from_value(ops).map_err(|e| Error::Patch {
        what,
        message: e.to_string(),
    })
}

fn annotations_differ(o: &ObservedReplicaSet, d: &plan::DesiredReplicaSet) -> bool {
    o.revision != d.revision || o.scale_down_deadline != d.scale_down_deadline
}

async fn patch_rs(
    ctx: &Context,
    api: &Api<ReplicaSet>,
    o: &ObservedReplicaSet,
    d: &plan::DesiredReplicaSet,
) -> Result<(), Error> {
    if o.replicas == d.replicas && !annotations_differ(o, d) {
        return Ok(());
    }
    let deadline = d.scale_down_deadline.map(|t| t.to_string());
    let patch = json!({
        "metadata": {"annotations": {
            constants::REVISION_ANNOTATION: d.revision.to_string(),
            constants::SCALE_DOWN_DEADLINE_ANNOTATION: deadline,
        }},
        "spec": {"replicas": d.replicas}
    });
    let written = api
        .patch(&o.name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(api_error("scale replicaset", o.name.clone()))?;
    ctx.remember_replica_set(written);
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
    let ephemeral = plan::ephemeral::for_new_replica_set(ro, &d.hash);
    plan::ephemeral::inject(&mut template, ephemeral.as_ref());
    if let Some(spec) = template.spec.as_mut() {
        spec.affinity =
            plan::anti_affinity::replica_set_affinity(ro, spec.affinity.as_ref(), &d.hash);
    }
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
    if let Some(record) = plan::ephemeral::record(ephemeral.as_ref()) {
        annotations.insert(constants::EPHEMERAL_METADATA_ANNOTATION.to_string(), record);
    }
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(replica_set_name(ro, &d.hash)),
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

/// The selector the Rollout's pods are selected by (from the spec or the workloadRef Deployment).
fn pod_selector(ro: &Rollout, ctx: &Context) -> Result<LabelSelector, Error> {
    if let Some(w) = &ro.spec.workload_ref {
        let ns = ro.namespace().unwrap_or_default();
        if let Some(d) = ctx
            .stores
            .deployments
            .get(&ObjectRef::new(&w.name).within(&ns))
            && let Some(spec) = d.expand()?.spec
        {
            return Ok(spec.selector);
        }
    }
    Ok(ro.spec.selector.clone().unwrap_or_default())
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

/// Creates the AnalysisRun `req` from the templates observed; a run that cannot be evaluated
/// is created and ended in Error at once, which aborts the step, with the message saying why.
async fn create_analysis_run(
    ro: &Rollout,
    req: &AnalysisRunRequest,
    templates: &Templates,
    api: &Api<AnalysisRun>,
) -> Result<(), Error> {
    let request = RunRequest {
        name: &req.name,
        pod_hash: &req.pod_hash,
        analysis: &req.analysis,
        labels: plan::analysis_run_labels(req),
        owner: owner_ref(ro),
    };
    let built = build_run(ro, &request, |r| templates.get(r))?;
    let created = match api.create(&post_params(), &built.run).await {
        Ok(c) => c,
        Err(kube::Error::Api(s)) if s.is_already_exists() => return Ok(()),
        Err(e) => return Err(api_error("create analysisrun", req.name.clone())(e).into()),
    };
    if let Some(message) = built.error {
        let mut errored = created;
        errored.status = Some(AnalysisRunStatus {
            phase: AnalysisPhase::Error,
            message: Some(message),
            ..Default::default()
        });
        api.replace_status(&req.name, &post_params(), &errored)
            .await
            .map_err(api_error("update analysisrun status", req.name.clone()))?;
    }
    Ok(())
}
