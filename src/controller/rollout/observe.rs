//! Observe: everything a reconcile reads, before anything is decided. The watch caches give the
//! Rollout's ReplicaSets, AnalysisRuns, Services and workload; the routers read the traffic
//! objects; the AnalysisTemplates the Rollout's analyses reference are read live, and so are
//! the Rollout's pods while a restart is due.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Service};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::error::{ApiError, RouterError, Unnamed, api_error, router_error};
use super::target::Target;
use crate::api::analysis::{
    AnalysisTemplate, AnalysisTemplateRef, AnalysisTemplateSpec, ClusterAnalysisTemplate, Metric,
};
use crate::api::constants;
use crate::api::rollout::{Rollout, ServiceRole};
use crate::api::validation::FieldError;
use crate::controller::compact::CacheError;
use crate::plan::{
    AnalysisRunKind, Observation, ObservedAnalysisRun, ObservedPod, ObservedReplicaSet,
    ObservedTemplate, ObservedTemplates, ObservedTraffic, ObservedWorkload,
};
use crate::traffic::{SubsetHashes, TrafficError};

/// Why observing failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object has no namespace (or name).
    #[error(transparent)]
    Unnamed(#[from] Unnamed),
    /// A read failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A router could not read its objects.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A template an update uses could not be read.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A cached object does not decode.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl Error {
    /// Category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Unnamed(_) => "invalid",
            Error::Api(e) => e.category(),
            Error::Router(e) => e.category(),
            Error::Template(e) => super::error::kube_category(&e.source),
            Error::Cache(_) => "cache",
        }
    }
}

/// What a reconcile knows before it decides.
pub(super) struct Observed {
    /// What the planner decides from.
    pub state: Observation,
    /// The templates the Rollout's analyses reference, for the runs the plan may start.
    pub templates: Templates,
}

/// Reads everything the reconcile of `t` decides from.
pub(super) async fn observe(t: &Target<'_>) -> Result<Observed, Error> {
    let mut state = state(t).await?;
    let (templates, observed) = templates(t).await;
    unreadable_during_update(&state, &templates)?;
    state.analysis_templates = Some(observed);
    Ok(Observed { state, templates })
}

/// How reading one template went: `Ok(None)` when it does not exist.
type TemplateRead = Result<Option<AnalysisTemplateSpec>, Arc<kube::Error>>;

/// The AnalysisTemplates and ClusterAnalysisTemplates the Rollout's analyses reference, with
/// the ones they include, by scope and name.
#[derive(Default)]
pub(super) struct Templates(BTreeMap<(bool, String), TemplateRead>);

impl Templates {
    /// The template `r` names. A failed read is reported only here, when a run needs the
    /// template: a template nobody starts a run from never fails a reconcile.
    pub fn get(
        &self,
        r: &AnalysisTemplateRef,
    ) -> Result<Option<&AnalysisTemplateSpec>, TemplateError> {
        match self.0.get(&(r.cluster_scope, r.template_name.clone())) {
            Some(Ok(spec)) => Ok(spec.as_ref()),
            Some(Err(source)) => Err(TemplateError {
                name: r.template_name.clone(),
                source: source.clone(),
            }),
            // Every template reachable from the spec is read; the plan starts no other.
            None => Ok(None),
        }
    }
}

/// A template that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("get analysis template {name}: {source}")]
pub struct TemplateError {
    /// The template's name.
    pub name: String,
    /// The error (shared: each run that needs the template reports it).
    #[source]
    pub source: Arc<kube::Error>,
}

/// The analyses whose runs the planner may start: background analysis and analysis steps, or
/// blue-green's pre- and post-promotion analyses.
fn analyses(ro: &Rollout) -> Vec<&crate::api::rollout::RolloutAnalysis> {
    let Some(canary) = &ro.spec.strategy.canary else {
        return ro
            .spec
            .strategy
            .blue_green
            .iter()
            .flat_map(|bg| [&bg.pre_promotion_analysis, &bg.post_promotion_analysis])
            .flatten()
            .collect();
    };
    canary
        .analysis
        .iter()
        .map(|bg| &bg.analysis)
        .chain(canary.steps.iter().filter_map(|s| s.analysis.as_ref()))
        .collect()
}

/// Reads every template the analyses reference, following `templates[]` inclusions: for the
/// runs the plan may start, and for the planner, which checks them all before an update moves.
/// Read as JSON, so that a template whose spec does not decode is reported with its field rather
/// than failing the read; from the watch cache once read (the first read is live).
async fn templates(t: &Target<'_>) -> (Templates, ObservedTemplates) {
    let mut read = BTreeMap::new();
    let mut observed = ObservedTemplates::new();
    let mut queue: Vec<AnalysisTemplateRef> = analyses(t.rollout)
        .into_iter()
        .flat_map(|a| a.templates.iter().cloned())
        .collect();
    while let Some(r) = queue.pop() {
        let key = (r.cluster_scope, r.template_name.clone());
        if read.contains_key(&key) {
            continue;
        }
        let api: Api<DynamicObject> = if r.cluster_scope {
            Api::all_with(
                t.ctx.client.clone(),
                &ApiResource::erase::<ClusterAnalysisTemplate>(&()),
            )
        } else {
            Api::namespaced_with(
                t.ctx.client.clone(),
                &t.namespace,
                &ApiResource::erase::<AnalysisTemplate>(&()),
            )
        };
        // From the cache the template watches fill (a template read once is kept and followed).
        let got =
            crate::traffic::cache::read(Some(&t.ctx.stores.routing), &api, &r.template_name).await;
        let spec = match got {
            Ok(None) => {
                observed.insert(key.clone(), ObservedTemplate::Missing);
                Ok(None)
            }
            Ok(Some(obj)) => {
                let json = obj.data.get("spec").cloned().unwrap_or_default();
                match serde_json::from_value::<AnalysisTemplateSpec>(json.clone()) {
                    Ok(spec) => {
                        queue.extend(spec.templates.iter().cloned());
                        observed.insert(key.clone(), ObservedTemplate::Found(spec.clone()));
                        Ok(Some(spec))
                    }
                    Err(e) => {
                        observed.insert(key.clone(), ObservedTemplate::Invalid(locate(&json, &e)));
                        // No run is built from it: the planner refuses the update first.
                        Ok(None)
                    }
                }
            }
            // Left out of the observation: the planner cannot judge what it could not read.
            Err(e) => Err(Arc::new(e)),
        };
        read.insert(key, spec);
    }
    (Templates(read), observed)
}

/// Where in a template's spec `error` (from decoding `spec`) is: the first metric that does not
/// decode, and in it the first field that does not decode on its own.
fn locate(spec: &serde_json::Value, error: &serde_json::Error) -> FieldError {
    let metrics = spec.get("metrics").and_then(|m| m.as_array());
    for (i, metric) in metrics.into_iter().flatten().enumerate() {
        let Err(whole) = serde_json::from_value::<Metric>(metric.clone()) else {
            continue;
        };
        for (k, v) in metric.as_object().into_iter().flatten() {
            // The field alone, next to the fields every metric needs.
            let mut probe = serde_json::Map::new();
            probe.insert("name".into(), "probe".into());
            probe.insert(
                "provider".into(),
                serde_json::json!({"prometheus": {"query": "up"}}),
            );
            probe.insert(k.clone(), v.clone());
            if let Err(e) = serde_json::from_value::<Metric>(probe.into()) {
                return FieldError {
                    field: format!("spec.metrics[{i}].{k}"),
                    message: format!("cannot read {v}: {e}"),
                };
            }
        }
        return FieldError {
            field: format!("spec.metrics[{i}]"),
            message: whole.to_string(),
        };
    }
    FieldError {
        field: "spec".into(),
        message: error.to_string(),
    }
}

/// Fails the reconcile when a template could not be read and the Rollout is updating: nothing
/// may move before every template the update uses is known to be valid. A Rollout at rest
/// starts no analysis, so there a failed read waits until a run needs the template.
fn unreadable_during_update(
    state: &Observation,
    templates: &Templates,
) -> Result<(), TemplateError> {
    let status = state.rollout.status.as_ref();
    let updating = match (
        state.template.as_ref(),
        status.and_then(|s| s.stable_rs.as_ref()),
    ) {
        (Some(template), Some(stable)) => {
            crate::plan::hash::pod_template_hash(template, status.and_then(|s| s.collision_count))
                != *stable
        }
        _ => false,
    };
    if !updating {
        return Ok(());
    }
    for ((_, name), read) in &templates.0 {
        if let Err(source) = read {
            return Err(TemplateError {
                name: name.clone(),
                source: source.clone(),
            });
        }
    }
    Ok(())
}

fn parse_ts(s: Option<&String>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

/// Builds the planner's observation from the caches and the routers.
async fn state(t: &Target<'_>) -> Result<Observation, Error> {
    let owned = owned_replica_sets(t)?;
    let replica_sets = replica_sets(&owned);
    let pods = restart_pods(t, &owned).await?;
    let analysis_runs = analysis_runs(t);
    let mut reference_errors = Vec::new();
    let mut traffic = services(t, &mut reference_errors).await?;
    traffic.legacy_label_hashes = legacy_label_hashes(&owned);
    let (weight, subsets) = routers(t, &mut reference_errors).await?;
    traffic.canary_weight = weight;
    // Subset-level routing without Services: the DestinationRule subsets are the selectors that
    // decide which version receives the traffic, so the planner reads them in the Services' place.
    if let Some(canary) = &t.rollout.spec.strategy.canary {
        let configured = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        if !configured(&canary.canary_service) && subsets.canary.is_some() {
            traffic.canary_service_hash = subsets.canary;
        }
        if !configured(&canary.stable_service) && subsets.stable.is_some() {
            traffic.stable_service_hash = subsets.stable;
        }
    }
    let (template, workload) = workload(t)?;
    Ok(Observation {
        rollout: t.rollout.as_ref().clone(),
        template,
        replica_sets,
        analysis_runs,
        traffic,
        workload,
        reference_errors,
        analysis_templates: None,
        pods,
        refused_replica_set: t.ctx.refusal(&t.uid()),
    })
}

/// The Rollout's ReplicaSets (not being deleted).
fn replica_sets(owned: &[Arc<ReplicaSet>]) -> Vec<ObservedReplicaSet> {
    owned
        .iter()
        .filter(|rs| rs.meta().deletion_timestamp.is_none())
        .filter_map(|rs| {
            let hash = constants::pod_template_hash(rs.labels())?.clone();
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
                created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            })
        })
        .collect()
}

/// Every ReplicaSet the Rollout owns, from both caches: those labelled with Sluice's hash key
/// and those an earlier version labelled with the legacy key only (the same object can be in
/// both while it is being relabelled; the first cache's copy wins), and those our creates
/// returned that the caches do not show yet ([`crate::controller::context::Context::created_replica_sets`]).
pub(super) fn owned_replica_sets(t: &Target<'_>) -> Result<Vec<Arc<ReplicaSet>>, CacheError> {
    let (stores, ns, uid) = (&t.ctx.stores, &t.namespace, t.uid());
    let mut seen = std::collections::BTreeSet::new();
    stores
        .replica_set_owners
        .owned(&stores.replica_sets, ns, &uid)
        .into_iter()
        .chain(
            stores
                .legacy_replica_set_owners
                .owned(&stores.legacy_replica_sets, ns, &uid),
        )
        .filter(|rs| seen.insert(rs.uid()))
        .map(|rs| t.ctx.replica_set(&rs))
        .collect::<Result<Vec<_>, _>>()
        .map(|mut owned| {
            let cached = |name: &str| {
                let key = ObjectRef::new(name).within(ns);
                stores.replica_sets.get(&key).is_some()
                    || stores.legacy_replica_sets.get(&key).is_some()
            };
            owned.extend(t.ctx.created_replica_sets(ns, &uid, cached));
            owned
        })
}

/// Hashes whose ReplicaSet selects its pods by the legacy key: their Services and
/// DestinationRule subsets must select by that key too.
fn legacy_label_hashes(replica_sets: &[Arc<ReplicaSet>]) -> Vec<String> {
    replica_sets
        .iter()
        .filter_map(|rs| {
            let labels = rs.spec.as_ref()?.selector.match_labels.as_ref()?;
            if labels.contains_key(constants::POD_TEMPLATE_HASH_LABEL) {
                return None;
            }
            labels
                .get(constants::LEGACY_POD_TEMPLATE_HASH_LABEL)
                .cloned()
        })
        .collect()
}

/// The pods of the Rollout's ReplicaSets, read only while a restart is due (never otherwise:
/// a Rollout without a pending `spec.restartAt` costs no read of its pods). One list scoped to
/// the namespace and the ReplicaSets' pod-template hashes; a pod counts when its controller is
/// one of the Rollout's ReplicaSets (two Rollouts with the same template share a hash).
async fn restart_pods(
    t: &Target<'_>,
    owned: &[Arc<ReplicaSet>],
) -> Result<Option<Vec<ObservedPod>>, Error> {
    if !crate::plan::restart::due(t.rollout, t.ctx.now()) {
        return Ok(None);
    }
    let (ctx, ns) = (t.ctx, &t.namespace);
    let owners: BTreeMap<String, String> = owned
        .iter()
        .filter(|rs| rs.meta().deletion_timestamp.is_none())
        .filter_map(|rs| {
            let hash = constants::pod_template_hash(rs.labels())?.clone();
            Some((rs.uid()?, hash))
        })
        .collect();
    if owners.is_empty() {
        return Ok(Some(Vec::new()));
    }
    // Pods carry the key their ReplicaSet's selector uses: Sluice's, or the legacy one for a
    // ReplicaSet an earlier version created. One list per key in use.
    let legacy = legacy_label_hashes(owned);
    let mut by_key: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for hash in owners.values() {
        let key = if legacy.contains(hash) {
            constants::LEGACY_POD_TEMPLATE_HASH_LABEL
        } else {
            constants::POD_TEMPLATE_HASH_LABEL
        };
        by_key.entry(key).or_default().insert(hash.as_str());
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut pods = Vec::new();
    for (key, hashes) in by_key {
        let selector = format!(
            "{key} in ({})",
            hashes.into_iter().collect::<Vec<_>>().join(",")
        );
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_error("list pods", t.name.clone()))?;
        pods.extend(
            list.items
                .iter()
                .filter_map(|pod| observed_pod(pod, &owners)),
        );
    }
    Ok(Some(pods))
}

/// A pod as the restart sees it, when its controller is one of `owners` (uid to hash).
fn observed_pod(pod: &Pod, owners: &BTreeMap<String, String>) -> Option<ObservedPod> {
    let owner = pod
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))?;
    let hash = owners.get(&owner.uid)?;
    let ready_since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
        });
    Some(ObservedPod {
        name: pod.name_any(),
        hash: hash.clone(),
        // The API server always sets it; a pod without one is treated as the oldest.
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
        ready_since,
        deleting: pod.metadata.deletion_timestamp.is_some(),
    })
}

/// The Rollout's AnalysisRuns, from the cache.
fn analysis_runs(t: &Target<'_>) -> Vec<ObservedAnalysisRun> {
    let (ctx, ns, uid) = (t.ctx, &t.namespace, t.uid());
    ctx.stores
        .analysis_run_owners
        .owned(&ctx.stores.analysis_runs, ns, &uid)
        .iter()
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
                Some(constants::ROLLOUT_TYPE_PRE_PROMOTION) => AnalysisRunKind::PrePromotion,
                Some(constants::ROLLOUT_TYPE_POST_PROMOTION) => AnalysisRunKind::PostPromotion,
                _ => return None,
            };
            let status = r.status.clone().unwrap_or_default();
            Some(ObservedAnalysisRun {
                name: r.name_any(),
                kind,
                pod_hash: constants::pod_template_hash(labels)?.clone(),
                phase: status.phase,
                message: status.message.clone(),
                terminated: r.spec.terminate,
            })
        })
        .collect()
}

/// The pod-template hashes the stable and canary Services select; a missing Service is a
/// reference error.
async fn services(
    t: &Target<'_>,
    reference_errors: &mut Vec<FieldError>,
) -> Result<ObservedTraffic, Error> {
    let (ro, ctx, ns) = (t.rollout.as_ref(), t.ctx, &t.namespace);
    let mut traffic = ObservedTraffic::default();
    for (role, field, svc) in ro.spec.strategy.managed_services() {
        let svc = svc.to_string();
        let mut found = ctx.service(ns, &svc);
        if found.is_none() {
            // Watches of different kinds are not ordered: confirm with a live read before
            // calling a Service missing.
            let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
            found = api
                .get_opt(&svc)
                .await
                .map_err(api_error("get service", svc.clone()))?
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
                    .and_then(|sel| constants::pod_template_hash(sel).cloned());
                match role {
                    ServiceRole::Stable => traffic.stable_service_hash = hash,
                    ServiceRole::New => traffic.canary_service_hash = hash,
                }
            }
        }
    }
    Ok(traffic)
}

/// The canary weight the routers read back, and the hashes their subsets select; an invalid
/// reference is a reference error.
async fn routers(
    t: &Target<'_>,
    reference_errors: &mut Vec<FieldError>,
) -> Result<(Option<i32>, SubsetHashes), Error> {
    let mut weights = Vec::new();
    let mut subsets = SubsetHashes::default();
    for router in &t.routers {
        match router.observe(&t.router_ctx).await {
            Ok(o) => {
                weights.push(o.weight);
                if o.subset_hashes != SubsetHashes::default() {
                    subsets = o.subset_hashes;
                }
            }
            Err(TrafficError::InvalidReference { field, message }) => {
                reference_errors.push(FieldError { field, message })
            }
            Err(source) => return Err(router_error(router.name())(source).into()),
        }
    }
    // Several routers: the highest weight any of them sends is what the canary may receive.
    Ok((weights.iter().flatten().max().copied(), subsets))
}

/// The pod template (from the spec, or the `workloadRef` Deployment in the cache) and the
/// Deployment's replicas.
fn workload(
    t: &Target<'_>,
) -> Result<(Option<PodTemplateSpec>, Option<ObservedWorkload>), CacheError> {
    let (ro, ns) = (t.rollout.as_ref(), &t.namespace);
    match &ro.spec.workload_ref {
        Some(w) => {
            let dep = t
                .ctx
                .stores
                .deployments
                .get(&ObjectRef::new(&w.name).within(ns))
                .map(|d| d.expand())
                .transpose()?;
            let template = dep
                .as_ref()
                .and_then(|d| d.spec.as_ref())
                .map(|s| s.template.clone());
            let workload = dep.as_ref().map(|d| ObservedWorkload {
                replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                generation: d.metadata.generation.unwrap_or(0),
            });
            Ok((template, workload))
        }
        None => Ok((ro.spec.template.clone(), None)),
    }
}
