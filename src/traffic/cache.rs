//! The routers' read cache: the Ingresses, VirtualServices, DestinationRules and Gateway API
//! routes the controller watches, as their watch events and Sluice's own writes left them, so
//! that a reconcile reads its routing objects without a request to the API server.
//!
//! Freshness. An entry is replaced only by a newer version (resourceVersions compared as
//! numbers, as client-go's mutation cache does; an unparsable version always replaces), so the
//! object a write of ours returned is served until the watch brings it or a later one. A cache
//! behind someone else's write is harmless: every router write is a JSON patch guarded by a
//! `test` of the resourceVersion it was computed from, so a stale entry makes the write fail
//! (409/422), and the router then reads the object live and recomputes. Their watch event
//! reconciles the Rollout again in any case.
//!
//! A miss is not taken as "absent": the router reads the object live (and the answer fills the
//! entry), so the cache never has to be complete or synced before it is used.
//!
//! Memory. Entries are kept as JSON with `managedFields` and `kubectl`'s last-applied annotation
//! removed (neither is read by any router); objects of a watched kind that no Rollout references
//! are left out (see [`ObjectCache::scope`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The annotation `kubectl apply` stores the whole object in; never read by the routers.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Which objects of a watched kind are worth keeping: `keep(url, namespace, name)`.
pub type Scope = Arc<dyn Fn(&str, &str, &str) -> bool + Send + Sync>;

/// The routers' cache of routing objects (see the module documentation).
#[derive(Default)]
pub struct ObjectCache {
    /// By object URL (`/apis/networking.k8s.io/v1/namespaces/ns/ingresses/name`).
    entries: Mutex<HashMap<String, Entry>>,
    /// Per collection URL (namespace left out), the keys seen since the watch started a re-list.
    relisting: Mutex<HashMap<String, HashSet<String>>>,
    scope: RwLock<Option<Scope>>,
}

struct Entry {
    /// The collection the watch of this kind fills (for re-lists).
    collection: String,
    version: Option<u64>,
    object: Arc<Value>,
}

/// The URL of the object `name` of the kind `K` in `namespace` (None for a cluster-scoped
/// object): the cache key.
pub fn object_url<K: Resource>(dt: &K::DynamicType, namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", K::url_path(dt, namespace))
}

/// The URL of the object `name` in the collection an [`kube::Api`] addresses.
pub fn api_object_url<K: Resource>(api: &kube::Api<K>, name: &str) -> String {
    format!("{}/{name}", api.resource_url())
}

/// Reads the object `name` of `api`: from `cache` when it holds it, else from the API server
/// (and the answer fills the cache).
pub async fn read<K>(
    cache: Option<&ObjectCache>,
    api: &kube::Api<K>,
    name: &str,
) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let Some(cache) = cache else {
        return api.get_opt(name).await;
    };
    let key = api_object_url(api, name);
    if let Some(obj) = cache.get::<K>(&key) {
        return Ok(Some(obj));
    }
    let live = api.get_opt(name).await?;
    if let Some(obj) = &live {
        cache.remember(&key, obj);
    }
    Ok(live)
}

fn version_of(obj: &Value) -> Option<u64> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
}

/// The object without what no router reads.
fn stripped(mut obj: Value) -> Value {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove(LAST_APPLIED);
        }
    }
    obj
}

impl ObjectCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps from the watches only the objects `scope` says are referenced. Objects the routers
    /// read or write are always kept.
    pub fn scope(&self, scope: Scope) {
        *self.scope.write().unwrap_or_else(|e| e.into_inner()) = Some(scope);
    }

    fn in_scope(&self, key: &str, namespace: &str, name: &str) -> bool {
        let scope = self.scope.read().unwrap_or_else(|e| e.into_inner());
        scope.as_ref().is_none_or(|keep| keep(key, namespace, name))
    }

    /// The object at `key` as last known, decoded; None when the cache does not hold it.
    pub fn get<K: DeserializeOwned>(&self, key: &str) -> Option<K> {
        let object = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.get(key)?.object.clone()
        };
        K::deserialize(object.as_ref()).ok()
    }

    /// Records `obj` (as read or as a write returned it) unless a newer version is held.
    pub fn remember<K: Serialize>(&self, key: &str, obj: &K) {
        let Ok(value) = serde_json::to_value(obj) else {
            return;
        };
        let collection = key.rsplit_once('/').map_or("", |(c, _)| c);
        let collection = collection_of(collection);
        self.insert(key.to_string(), collection, value);
    }

    fn insert(&self, key: String, collection: String, value: Value) {
        let value = stripped(value);
        let version = version_of(&value);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = entries.get(&key)
            && let (Some(held), Some(new)) = (held.version, version)
            && held > new
        {
            return;
        }
        entries.insert(
            key,
            Entry {
                collection,
                version,
                object: Arc::new(value),
            },
        );
    }

    /// Forgets the object at `key` (deleted by us).
    pub fn forget(&self, key: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(key);
    }

    /// Applies one event of the watch filling `collection` (see [`collection_of`]), whose
    /// objects' keys `url` gives.
    pub fn apply_event<K, U>(
        &self,
        event: &kube::runtime::watcher::Event<K>,
        collection: &str,
        url: U,
    ) where
        K: Resource + Serialize,
        U: Fn(&K) -> String,
    {
        use kube::runtime::watcher::Event;
        match event {
            Event::Apply(obj) | Event::InitApply(obj) => {
                let key = url(obj);
                let collection = collection.to_string();
                let (ns, name) = ns_name(obj);
                if let Event::InitApply(_) = event {
                    let mut relisting = self.relisting.lock().unwrap_or_else(|e| e.into_inner());
                    relisting
                        .entry(collection.clone())
                        .or_default()
                        .insert(key.clone());
                }
                let held = {
                    let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                    entries.contains_key(&key)
                };
                if !held && !self.in_scope(&key, &ns, &name) {
                    return;
                }
                if let Ok(value) = serde_json::to_value(obj) {
                    self.insert(key, collection, value);
                }
            }
            Event::Delete(obj) => {
                let key = url(obj);
                let deleted = obj
                    .meta()
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse::<u64>().ok());
                let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                // A version created after the deletion (ours, not yet watched) stays.
                let newer = entries
                    .get(&key)
                    .is_some_and(|e| matches!((e.version, deleted), (Some(h), Some(d)) if h > d));
                if !newer {
                    entries.remove(&key);
                }
            }
            Event::Init => self.relist_started(collection),
            Event::InitDone => self.relist_done(collection),
        }
    }

    /// Starts a re-list of the collections `collection` names (the watch's own).
    pub fn relist_started(&self, collection: &str) {
        let mut relisting = self.relisting.lock().unwrap_or_else(|e| e.into_inner());
        relisting.insert(collection.to_string(), HashSet::new());
    }

    /// Ends a re-list: entries of the collection the list did not return are gone.
    pub fn relist_done(&self, collection: &str) {
        let seen = {
            let mut relisting = self.relisting.lock().unwrap_or_else(|e| e.into_inner());
            relisting.remove(collection).unwrap_or_default()
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|key, e| e.collection != collection || seen.contains(key));
    }

    /// How many objects the cache holds.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn ns_name<K: Resource>(obj: &K) -> (String, String) {
    (
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

/// The collection of an object's URL with the namespace left out: one per kind and version,
/// whichever namespace (`/apis/g/v/namespaces/ns/plural` → `/apis/g/v/plural`).
pub fn collection_of(collection_url: &str) -> String {
    match collection_url.split_once("/namespaces/") {
        Some((prefix, rest)) => match rest.split_once('/') {
            Some((_, plural)) => format!("{prefix}/{plural}"),
            None => collection_url.to_string(),
        },
        None => collection_url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::Ingress;
    use kube::runtime::watcher::Event;

    fn ingress(name: &str, rv: &str, weight: &str) -> Ingress {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv,
                "annotations": {"w": weight, LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "kubectl"}]}
        }))
        .unwrap()
    }

    const COLLECTION: &str = "/apis/networking.k8s.io/v1/ingresses";

    fn url(i: &Ingress) -> String {
        object_url::<Ingress>(&(), Some("ns"), i.metadata.name.as_deref().unwrap())
    }

    fn weight(c: &ObjectCache, key: &str) -> Option<String> {
        let i: Ingress = c.get(key)?;
        i.metadata.annotations?.get("w").cloned()
    }

    #[test]
    fn keys_match_the_api_url() {
        let key = object_url::<Ingress>(&(), Some("ns"), "web");
        assert_eq!(
            key,
            "/apis/networking.k8s.io/v1/namespaces/ns/ingresses/web"
        );
        assert_eq!(
            collection_of(key.rsplit_once('/').unwrap().0),
            "/apis/networking.k8s.io/v1/ingresses"
        );
    }

    #[test]
    fn our_newer_write_wins_over_an_older_watch_event() {
        let c = ObjectCache::new();
        let key = url(&ingress("web", "1", "0"));
        c.remember(&key, &ingress("web", "5", "20"));
        c.apply_event(&Event::Apply(ingress("web", "3", "0")), COLLECTION, url);
        assert_eq!(weight(&c, &key).as_deref(), Some("20"));
        c.apply_event(&Event::Apply(ingress("web", "7", "40")), COLLECTION, url);
        assert_eq!(weight(&c, &key).as_deref(), Some("40"));
        // Stripped before it is kept.
        let i: Ingress = c.get(&key).unwrap();
        assert!(i.metadata.managed_fields.is_none());
        assert!(!i.metadata.annotations.unwrap().contains_key(LAST_APPLIED));
    }

    #[test]
    fn delete_keeps_a_later_version_and_relist_drops_what_is_gone() {
        let c = ObjectCache::new();
        let key = url(&ingress("web", "1", "0"));
        c.remember(&key, &ingress("web", "9", "20"));
        c.apply_event(&Event::Delete(ingress("web", "8", "0")), COLLECTION, url);
        assert!(c.get::<Ingress>(&key).is_some());
        c.apply_event(&Event::Delete(ingress("web", "10", "0")), COLLECTION, url);
        assert!(c.get::<Ingress>(&key).is_none());

        c.apply_event(&Event::Apply(ingress("a", "11", "0")), COLLECTION, url);
        c.apply_event(&Event::Apply(ingress("b", "12", "0")), COLLECTION, url);
        c.apply_event(&Event::Init, COLLECTION, url);
        c.apply_event(&Event::InitApply(ingress("b", "12", "0")), COLLECTION, url);
        c.apply_event(&Event::InitDone, COLLECTION, url);
        assert_eq!(c.len(), 1);
        assert!(c.get::<Ingress>(&url(&ingress("b", "", ""))).is_some());
    }

    #[test]
    fn out_of_scope_objects_are_not_kept_unless_held() {
        let c = ObjectCache::new();
        c.scope(Arc::new(|_, _, name| name == "web"));
        c.apply_event(&Event::Apply(ingress("other", "1", "0")), COLLECTION, url);
        c.apply_event(&Event::Apply(ingress("web", "2", "0")), COLLECTION, url);
        assert_eq!(c.len(), 1);
        // Read live by a router: kept, and its watch events then update it.
        let key = url(&ingress("other", "", ""));
        c.remember(&key, &ingress("other", "3", "5"));
        c.apply_event(&Event::Apply(ingress("other", "4", "6")), COLLECTION, url);
        assert_eq!(weight(&c, &key).as_deref(), Some("6"));
    }
}
