//! The watches that feed the caches and trigger Rollout reconciles: one helper per concern
//! (watch a kind, keep it in a cache, map its objects to the Rollouts that reference them).

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

use super::compact::{self, Compact};
use super::context::CachedRollout;
use super::owner_index::OwnerIndex;
use super::reference_index::{ReferenceIndex, granted_key, object_key, templates_key, url_key};
use crate::api::constants;
use crate::api::rollout::Rollout;
use crate::traffic::RoutingConfig;
use crate::traffic::cache::{ObjectCache, Scope, collection_of, object_url};

/// The label selector of the Rollouts (and AnalysisRuns) this controller instance owns.
pub(super) fn label_selector(instance_id: &Option<String>) -> String {
    match instance_id {
        Some(id) => format!("{}={id}", constants::INSTANCE_ID_LABEL),
        None => format!("!{}", constants::INSTANCE_ID_LABEL),
    }
}

/// The API of a namespaced kind, in one namespace or all.
pub(super) fn api<K>(client: &kube::Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A trigger stream: the watch of `api` (backed off), reflected into `cache` when given, as the
/// objects it touched. Each cache is filled by the same stream that triggers reconciles, so a
/// reconcile always sees at least the change that triggered it (separate watches would race).
pub(super) fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    cache: Option<reflector::store::Writer<K>>,
    index: Option<OwnerIndex>,
    trim: fn(&mut K),
) -> BoxStream<'static, Result<K, watcher::Error>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    watch_as(api, config, cache, index, trim, std::convert::identity)
}

/// [`watch`], with each event's object turned into a `C` (a compact form) before the index and
/// the cache see it.
fn watch_as<K, C>(
    api: Api<K>,
    config: watcher::Config,
    cache: Option<reflector::store::Writer<C>>,
    index: Option<OwnerIndex>,
    trim: fn(&mut K),
    into: fn(watcher::Event<K>) -> watcher::Event<C>,
) -> BoxStream<'static, Result<C, watcher::Error>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: Resource + Clone + Debug + Send + Sync + 'static,
    C::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let events = watcher(api, config)
        .default_backoff()
        .modify(move |obj| {
            strip::<K>(obj);
            trim(obj);
        })
        .map(move |event| event.map(into))
        .map(move |event| {
            if let (Some(index), Ok(event)) = (&index, &event) {
                index.apply(event);
            }
            event
        });
    let events = match cache {
        Some(writer) => events.reflect(writer).boxed(),
        None => events.boxed(),
    };
    events.touched_objects().filter_map(log_watch_error).boxed()
}

/// A trigger stream of a routing kind (backed off), whose events fill the routers' `cache`.
pub(super) fn watch_routing<K>(
    api: Api<K>,
    dt: K::DynamicType,
    cache: Arc<ObjectCache>,
) -> BoxStream<'static, Result<K, watcher::Error>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let collection = collection_of(api.resource_url());
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |event| {
            if let Ok(event) = &event {
                cache.apply_event(event, &collection, |obj: &K| {
                    let meta = obj.meta();
                    object_url::<K>(
                        &dt,
                        meta.namespace.as_deref().filter(|ns| !ns.is_empty()),
                        meta.name.as_deref().unwrap_or_default(),
                    )
                });
            }
            event
        })
        .touched_objects()
        .filter_map(log_watch_error)
        .boxed()
}

/// Which routing objects the routers' cache keeps: those some Rollout's routers read or write.
pub(super) fn routing_scope(index: ReferenceIndex) -> Scope {
    Arc::new(move |url: &str, _ns: &str, _name: &str| index.contains(&url_key(url)))
}

/// The annotation `kubectl apply` keeps the whole applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Takes off an object what no reconcile reads, before it enters a cache: `managedFields`
/// (often larger than the spec) and `kubectl`'s copy of the applied object. Nothing writes a
/// cached object back whole: status is written through the status subresource, which ignores
/// metadata, and every other write is a patch.
pub(super) fn strip<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Takes off a cached ReplicaSet its pods' spec (containers, volumes, probes: usually most of
/// the object). A reconcile reads a ReplicaSet's size, status, labels, annotations, owners and
/// its pod template's metadata (ephemeral metadata), never the pod spec: the Rollout's own
/// template is what is hashed and what a new ReplicaSet is created from.
pub(super) fn trim_replica_set(rs: &mut k8s_openapi::api::apps::v1::ReplicaSet) {
    if let Some(template) = rs.spec.as_mut().and_then(|s| s.template.as_mut()) {
        template.spec = None;
    }
}

/// The Rollout watch: stripped (see [`strip`]), applied to the reference index, then compacted
/// (see [`compact`]) and reflected into a cache, as the applied objects (the trigger stream
/// [`kube::runtime::Controller::for_stream`] takes).
pub(super) fn main_watch(
    api: Api<Rollout>,
    config: watcher::Config,
    index: ReferenceIndex,
) -> (
    Store<CachedRollout>,
    BoxStream<'static, Result<CachedRollout, watcher::Error>>,
) {
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .modify(strip::<Rollout>)
        .map(move |event| {
            let event = event?;
            index.apply(&event);
            Ok(compact::event(event))
        })
        .reflect(writer)
        .applied_objects()
        .boxed();
    (store, stream)
}

/// A trigger stream of a kind read untyped (backed off), with its resource: for kinds whose
/// changes matter but whose content is read when needed. An untyped object always decodes, so
/// one object with a spec this controller cannot read never interrupts the watch of the others.
pub(super) fn watch_untyped<K>(
    client: &kube::Client,
    ns: Option<&str>,
    cache: &Arc<ObjectCache>,
) -> (
    ApiResource,
    BoxStream<'static, Result<DynamicObject, watcher::Error>>,
)
where
    K: Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let stream = watch_routing(api, resource.clone(), cache.clone());
    (resource, stream)
}

/// Maps an AnalysisTemplate (namespaced) or ClusterAnalysisTemplate (`cluster`) to the Rollouts
/// whose analyses may use it: those with an analysis referencing any template, in its namespace
/// (every namespace for a cluster template), by one index lookup. Templates include other
/// templates, so the name alone cannot tell whether a Rollout reaches it; template changes are
/// rare, and a reconcile without change writes nothing.
pub(super) fn using_templates<K>(
    index: ReferenceIndex,
    cluster: bool,
) -> impl Fn(K) -> Vec<ObjectRef<CachedRollout>> + Send + Sync + 'static
where
    K: Resource,
{
    move |obj: K| {
        let ns = obj.meta().namespace.as_deref().unwrap_or_default();
        retype(index.get(&templates_key((!cluster).then_some(ns))))
    }
}

/// The references of the index, as references of the cached (compact) Rollouts the
/// controller reconciles.
fn retype(refs: Vec<ObjectRef<Rollout>>) -> Vec<ObjectRef<CachedRollout>> {
    refs.into_iter()
        .map(|r| {
            let named = ObjectRef::new(&r.name);
            match &r.namespace {
                Some(ns) => named.within(ns),
                None => named,
            }
        })
        .collect()
}

/// A kind whose cached objects can be kept compact (see [`compact`]).
pub(super) trait Compactable:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Compactable for K where
    K: Resource<DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// A watched kind kept in a cache: the cache, and the trigger stream that fills it.
/// Its objects are kept compact (see [`compact`]): these caches hold every object of their kind
/// in the watched namespaces, not only those Rollouts reference.
pub(super) fn cached<K>(api: Api<K>, config: watcher::Config) -> Cache<Compact<K>>
where
    K: Compactable,
{
    let (store, writer) = reflector::store();
    let stream = watch_as(api, config, Some(writer), None, |_| (), compact::event);
    (store, stream)
}

/// A cache and the trigger stream that fills it.
pub(super) type Cache<K> = (Store<K>, BoxStream<'static, Result<K, watcher::Error>>);

/// A cache, its index by owner, and the trigger stream that fills both.
pub(super) type OwnedCache<K> = (
    Store<K>,
    OwnerIndex,
    BoxStream<'static, Result<K, watcher::Error>>,
);

/// A watched kind kept in a cache indexed by owner: the cache, its index, and the trigger
/// stream that fills both.
pub(super) fn cached_by_owner<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> OwnedCache<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let index = OwnerIndex::default();
    let stream = watch(api, config, Some(writer), Some(index.clone()), trim);
    (store, index, stream)
}

/// [`cached_by_owner`], the cache holding each object compacted (see [`compact`]).
pub(super) fn cached_compact_by_owner<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> OwnedCache<Compact<K>>
where
    K: Compactable,
{
    let (store, writer) = reflector::store();
    let index = OwnerIndex::default();
    let stream = watch_as(
        api,
        config,
        Some(writer),
        Some(index.clone()),
        trim,
        compact::event,
    );
    (store, index, stream)
}

/// Maps an object of `kind` to the Rollouts that reference it (their Services, `workloadRef`
/// Deployment, or an object their routers read or write, in any namespace: a Gateway API route
/// may live in another namespace than the Rollouts weighting it), by one index lookup.
pub(super) fn referencing<K>(
    index: ReferenceIndex,
    kind: &'static str,
) -> impl Fn(K) -> Vec<ObjectRef<CachedRollout>> + Send + Sync + 'static
where
    K: Resource,
{
    move |obj: K| {
        let meta = obj.meta();
        retype(index.get(&object_key(
            kind,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )))
    }
}

/// The Istio kinds the routers write, each with its trigger stream, when the API server serves
/// them (a cluster without the mesh's CRDs is not watched), so that drift made by anyone else is
/// corrected at once.
pub(super) async fn istio(
    client: &kube::Client,
    ns: &Option<String>,
    routing: &RoutingConfig,
    cache: &Arc<ObjectCache>,
) -> Vec<(
    &'static str,
    ApiResource,
    BoxStream<'static, Result<DynamicObject, watcher::Error>>,
)> {
    let mut watches = Vec::new();
    for (kind, plural) in [
        ("VirtualService", "virtualservices"),
        ("DestinationRule", "destinationrules"),
    ] {
        let resource = ApiResource {
            group: "networking.istio.io".into(),
            version: routing.istio_api_version.as_str().into(),
            api_version: routing.istio_api_version.to_string(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let served = api.list(&ListParams::default().limit(1)).await.is_ok();
        if !served {
            tracing::info!(kind, "not served by the API server; not watching it");
            continue;
        }
        let stream = watch_routing(api, resource.clone(), cache.clone());
        watches.push((kind, resource, stream));
    }
    watches
}

/// The Gateway API route kinds the Gateway API router writes, each with its trigger stream,
/// when the API server serves them (TCPRoute and TLSRoute are experimental and often absent).
pub(super) async fn gateway_api(
    client: &kube::Client,
    ns: &Option<String>,
    cache: &Arc<ObjectCache>,
) -> Vec<(
    &'static str,
    ApiResource,
    BoxStream<'static, Result<DynamicObject, watcher::Error>>,
)> {
    let mut watches = Vec::new();
    for kind in crate::traffic::RouteKind::ALL {
        let resource = crate::traffic::gateway_api::route_resource(kind);
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let served = api.list(&ListParams::default().limit(1)).await.is_ok();
        if !served {
            tracing::info!(
                kind = kind.kind(),
                "not served by the API server; not watching it"
            );
            continue;
        }
        let stream = watch_routing(api, resource.clone(), cache.clone());
        watches.push((kind.kind(), resource, stream));
    }
    watches
}

/// ReferenceGrants, when served: a grant created (or removed) in a Rollout's namespace changes
/// whether its routes in other namespaces may reference its Services.
pub(super) async fn reference_grants(
    client: &kube::Client,
    ns: &Option<String>,
) -> Option<(
    ApiResource,
    BoxStream<'static, Result<DynamicObject, watcher::Error>>,
)> {
    let resource = crate::traffic::gateway_api::reference_grant_resource();
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    if api.list(&ListParams::default().limit(1)).await.is_err() {
        tracing::info!(
            kind = "ReferenceGrant",
            "not served by the API server; not watching it"
        );
        return None;
    }
    Some((
        resource,
        watch(api, watcher::Config::default(), None, None, |_| ()),
    ))
}

/// Maps a ReferenceGrant to the Rollouts of its namespace whose Gateway API routes live in
/// another namespace.
pub(super) fn granted_to<K>(
    index: ReferenceIndex,
) -> impl Fn(K) -> Vec<ObjectRef<CachedRollout>> + Send + Sync + 'static
where
    K: Resource,
{
    move |obj: K| {
        retype(index.get(&granted_key(
            obj.meta().namespace.as_deref().unwrap_or_default(),
        )))
    }
}

/// Watch errors of the auxiliary streams are logged and dropped here: each stream backs off and
/// re-lists on its own, while an error reaching the controller would pause every trigger stream
/// at once (kube-runtime backs off the merged trigger stream), delaying reconciles for all kinds.
async fn log_watch_error<K>(item: Result<K, watcher::Error>) -> Option<Result<K, watcher::Error>> {
    match item {
        Ok(o) => Some(Ok(o)),
        Err(e) => {
            tracing::debug!(error = %e, "watch interrupted; re-listing");
            None
        }
    }
}

/// Backoff of the Rollout watch: doubling from 100 ms, capped at 5 s, reset by success.
pub(super) struct CappedBackoff {
    next: Duration,
}

impl Default for CappedBackoff {
    fn default() -> Self {
        CappedBackoff {
            next: Duration::from_millis(100),
        }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        Some(current)
    }
}

impl kube::runtime::utils::Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }
}

/// Waits until a cache has synced. Polls with a timeout because a store's readiness future keeps
/// only the latest waiter's waker: with the controller's runner also waiting, a single long wait
/// could miss the wake-up.
pub(super) async fn wait_ready<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(r) => return r.is_ok(),
            Err(_) => continue,
        }
    }
}
