//! An index of the Rollouts by what they reference: their Services, their `workloadRef`
//! Deployment, the routing objects their routers read or write. A watch event on one of those
//! objects is mapped to the Rollouts to reconcile by one lookup, instead of by asking every
//! cached Rollout whether it references the object (which, with N Rollouts each referencing a
//! few objects, makes the initial list of those objects cost N² checks, and builds every
//! Rollout's routers again for each event).
//!
//! The index is filled by the Rollout watch's events, before the Rollout cache sees them, and is
//! keyed by strings built with the functions below, so that the side that fills it and the side
//! that reads it cannot disagree on a key. An index a moment ahead of or behind the cache is
//! harmless: a mapped Rollout that is gone is not reconciled, and a Rollout that starts
//! referencing an object is reconciled by its own watch event, reading the object from its cache.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use crate::api::rollout::Rollout;
use crate::traffic::RoutingConfig;

/// The key of an object `kind` `namespace/name`.
pub fn object_key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// The key under which the routers' cache asks whether an object (by its URL) is referenced.
pub fn url_key(url: &str) -> String {
    format!("url:{url}")
}

/// The key of the Rollouts of `namespace` whose Gateway API routes live in another namespace
/// (a ReferenceGrant in `namespace` concerns them).
pub fn granted_key(namespace: &str) -> String {
    format!("grant:{namespace}")
}

/// The key of the Rollouts of `namespace` (of every namespace: `None`) whose analyses reference
/// an AnalysisTemplate or ClusterAnalysisTemplate.
pub fn templates_key(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("templates:{ns}"),
        None => "templates".to_string(),
    }
}

/// Whether an analysis of the Rollout references a template. Namespaced templates may include
/// cluster ones and the other way round, so any reference counts for either kind.
fn references_templates(r: &Rollout) -> bool {
    let Some(canary) = &r.spec.strategy.canary else {
        return r.spec.strategy.blue_green.as_ref().is_some_and(|bg| {
            [&bg.pre_promotion_analysis, &bg.post_promotion_analysis]
                .into_iter()
                .flatten()
                .any(|a| !a.templates.is_empty())
        });
    };
    canary
        .analysis
        .iter()
        .map(|bg| &bg.analysis)
        .chain(canary.steps.iter().filter_map(|s| s.analysis.as_ref()))
        .any(|a| !a.templates.is_empty())
}

/// Every key a Rollout is found under.
pub fn keys(r: &Rollout, routing: &RoutingConfig) -> Vec<String> {
    let ns = r.metadata.namespace.as_deref().unwrap_or_default();
    let mut keys: Vec<String> = r
        .spec
        .strategy
        .managed_services()
        .iter()
        .map(|(_, _, svc)| object_key("Service", ns, svc))
        .collect();
    if let Some(w) = &r.spec.workload_ref {
        keys.push(object_key("Deployment", ns, &w.name));
    }
    let mut granted = false;
    for w in crate::traffic::watched_objects(r, routing) {
        keys.push(object_key(&w.kind, &w.namespace, &w.name));
        keys.push(url_key(&w.url()));
        granted |= w.group == "gateway.networking.k8s.io" && w.namespace != ns;
    }
    if granted {
        keys.push(granted_key(ns));
    }
    if references_templates(r) {
        keys.push(templates_key(Some(ns)));
        keys.push(templates_key(None));
    }
    keys.sort();
    keys.dedup();
    keys
}

type KeysOf = Arc<dyn Fn(&Rollout) -> Vec<String> + Send + Sync>;

#[derive(Default)]
struct Index {
    by_key: HashMap<String, HashSet<ObjectRef<Rollout>>>,
    keys_of: HashMap<ObjectRef<Rollout>, Vec<String>>,
}

impl Index {
    fn set(&mut self, r: ObjectRef<Rollout>, keys: Vec<String>) {
        self.remove(&r);
        for key in &keys {
            self.by_key
                .entry(key.clone())
                .or_default()
                .insert(r.clone());
        }
        if !keys.is_empty() {
            self.keys_of.insert(r, keys);
        }
    }

    fn remove(&mut self, r: &ObjectRef<Rollout>) {
        for key in self.keys_of.remove(r).unwrap_or_default() {
            if let Some(set) = self.by_key.get_mut(&key) {
                set.remove(r);
                if set.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }
}

#[derive(Default)]
struct State {
    current: Index,
    /// Built during a re-list; replaces `current` when the list completes (as the cache does).
    relisting: Option<Index>,
}

/// The index (see the module documentation). Cheap to clone: clones share it.
#[derive(Clone)]
pub struct ReferenceIndex {
    inner: Arc<Mutex<State>>,
    keys_of: KeysOf,
}

impl ReferenceIndex {
    /// An empty index whose Rollouts are found under `keys(rollout, routing)`.
    pub fn new(routing: RoutingConfig) -> Self {
        Self::with_keys(Arc::new(move |r: &Rollout| keys(r, &routing)))
    }

    /// An empty index whose Rollouts are found under the keys `keys_of` gives.
    pub fn with_keys(keys_of: KeysOf) -> Self {
        ReferenceIndex {
            inner: Arc::new(Mutex::new(State::default())),
            keys_of,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one event of the Rollout watch.
    pub fn apply(&self, event: &Event<Rollout>) {
        let entry = |r: &Rollout| {
            let name = r.metadata.name.clone().unwrap_or_default();
            let reference = match &r.metadata.namespace {
                Some(ns) => ObjectRef::new(&name).within(ns),
                None => ObjectRef::new(&name),
            };
            (reference, (self.keys_of)(r))
        };
        match event {
            Event::Apply(r) => {
                let (reference, keys) = entry(r);
                self.lock().current.set(reference, keys);
            }
            Event::Delete(r) => {
                let (reference, _) = entry(r);
                self.lock().current.remove(&reference);
            }
            Event::Init => self.lock().relisting = Some(Index::default()),
            Event::InitApply(r) => {
                let (reference, keys) = entry(r);
                let mut state = self.lock();
                // Also in the current index: the cache serves its old contents until the list
                // completes.
                if let Some(next) = state.relisting.as_mut() {
                    next.set(reference.clone(), keys.clone());
                }
                state.current.set(reference, keys);
            }
            Event::InitDone => {
                let mut state = self.lock();
                if let Some(next) = state.relisting.take() {
                    state.current = next;
                }
            }
        }
    }

    /// The Rollouts found under `key`.
    pub fn get(&self, key: &str) -> Vec<ObjectRef<Rollout>> {
        self.lock()
            .current
            .by_key
            .get(key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any Rollout is found under `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.lock().current.by_key.contains_key(key)
    }

    /// How many Rollouts the index holds (for tests and figures).
    pub fn len(&self) -> usize {
        self.lock().current.keys_of.len()
    }

    /// True when the index holds no Rollout.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(name: &str, stable: &str) -> Rollout {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": name}},
                "strategy": {"canary": {"stableService": stable, "canaryService": "canary",
                    "trafficRouting": {"nginx": {"stableIngress": "ing"}}}}}
        }))
        .unwrap()
    }

    fn names(index: &ReferenceIndex, key: &str) -> Vec<String> {
        let mut names: Vec<String> = index.get(key).into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn follows_references_through_changes_deletes_and_relists() {
        let index = ReferenceIndex::new(RoutingConfig::default());
        index.apply(&Event::Apply(rollout("a", "stable")));
        index.apply(&Event::Apply(rollout("b", "stable")));
        let stable = object_key("Service", "ns", "stable");
        assert_eq!(names(&index, &stable), ["a", "b"]);
        assert_eq!(
            names(&index, &object_key("Service", "ns", "canary")),
            ["a", "b"]
        );
        assert_eq!(
            names(&index, &object_key("Ingress", "ns", "ing")),
            ["a", "b"]
        );
        assert!(!index.contains(&object_key("Service", "other", "stable")));
        // A Rollout that changes its stable Service leaves the old one's key.
        index.apply(&Event::Apply(rollout("b", "stable-2")));
        assert_eq!(names(&index, &stable), ["a"]);
        assert_eq!(
            names(&index, &object_key("Service", "ns", "stable-2")),
            ["b"]
        );
        index.apply(&Event::Delete(rollout("a", "stable")));
        assert!(!index.contains(&stable));
        // A re-list that no longer returns "b": gone once the list completes, not before.
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(rollout("c", "stable")));
        assert_eq!(
            names(&index, &object_key("Service", "ns", "stable-2")),
            ["b"]
        );
        index.apply(&Event::InitDone);
        assert!(!index.contains(&object_key("Service", "ns", "stable-2")));
        assert_eq!(names(&index, &stable), ["c"]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn the_routers_cache_scope_is_the_urls_of_the_watched_objects() {
        let r = rollout("a", "stable");
        let index = ReferenceIndex::new(RoutingConfig::default());
        index.apply(&Event::Apply(r.clone()));
        for w in crate::traffic::watched_objects(&r, &RoutingConfig::default()) {
            assert!(index.contains(&url_key(&w.url())), "{}", w.url());
        }
        assert!(!index.contains(&url_key(
            "/apis/networking.k8s.io/v1/namespaces/ns/ingresses/other"
        )));
    }
}
