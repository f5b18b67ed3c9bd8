//! An index of a watch cache by owner: which objects each owner uid owns, so that a reconcile
//! finds its Rollout's ReplicaSets and AnalysisRuns without scanning every object of the kind
//! (a scan per reconcile makes settling N Rollouts cost N² object visits).
//!
//! The index is filled by the same watch events as the cache, before the cache sees them, and
//! names objects only: a lookup reads each from the cache and keeps those that the cache holds
//! and that are still owned by the uid, so an index a moment ahead of (or behind) its cache never
//! answers with an object the cache would not.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;

/// Object keys (`namespace/name`) by owner uid, and the owners of each key.
#[derive(Default)]
struct Index {
    by_owner: HashMap<String, BTreeSet<(String, String)>>,
    owners: HashMap<(String, String), Vec<String>>,
}

impl Index {
    fn set<K: Resource>(&mut self, obj: &K) {
        let meta = obj.meta();
        let key = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let owners: Vec<String> = meta
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.uid.clone())
            .collect();
        self.remove(&key);
        for uid in &owners {
            self.by_owner
                .entry(uid.clone())
                .or_default()
                .insert(key.clone());
        }
        if !owners.is_empty() {
            self.owners.insert(key, owners);
        }
    }

    fn remove(&mut self, key: &(String, String)) {
        for uid in self.owners.remove(key).unwrap_or_default() {
            if let Some(set) = self.by_owner.get_mut(&uid) {
                set.remove(key);
                if set.is_empty() {
                    self.by_owner.remove(&uid);
                }
            }
        }
    }
}

/// The owner index of one watch (see the module documentation).
#[derive(Clone, Default)]
pub struct OwnerIndex {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    current: Index,
    /// Built during a re-list; replaces `current` when the list is complete (the cache swaps
    /// its contents at the same event).
    relisting: Option<Index>,
}

impl OwnerIndex {
    /// Applies one watch event (before the cache applies it).
    pub fn apply<K: Resource>(&self, event: &Event<K>) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Apply(obj) => state.current.set(obj),
            Event::Delete(obj) => {
                let meta = obj.meta();
                state.current.remove(&(
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                ));
            }
            Event::Init => state.relisting = Some(Index::default()),
            Event::InitApply(obj) => {
                // Also in the current index: the cache keeps serving its old contents until the
                // list completes, and a lookup meanwhile must still find this object.
                state.current.set(obj);
                if let Some(next) = state.relisting.as_mut() {
                    next.set(obj);
                }
            }
            Event::InitDone => {
                if let Some(next) = state.relisting.take() {
                    state.current = next;
                }
            }
        }
    }

    /// The objects of `store` in `namespace` owned by `uid`.
    pub fn owned<K>(&self, store: &Store<K>, namespace: &str, uid: &str) -> Vec<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let keys: Vec<(String, String)> = {
            let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            state
                .current
                .by_owner
                .get(uid)
                .map(|set| {
                    set.iter()
                        .filter(|(ns, _)| ns == namespace)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        keys.into_iter()
            .filter_map(|(ns, name)| store.get(&ObjectRef::new(&name).within(&ns)))
            .filter(|o| {
                o.meta()
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid)
            })
            .collect()
    }

    /// How many objects the index names (for tests and figures).
    pub fn len(&self) -> usize {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.current.owners.len()
    }

    /// True when the index names nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;

    fn rs(name: &str, owner: &str) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns",
                "ownerReferences": [{"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                    "name": "r", "uid": owner}]}
        }))
        .unwrap()
    }

    fn names(index: &OwnerIndex, uid: &str) -> Vec<(String, String)> {
        let state = index.inner.lock().unwrap();
        state
            .current
            .by_owner
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn follows_owners_through_changes_deletes_and_relists() {
        let index = OwnerIndex::default();
        index.apply(&Event::Apply(rs("a", "u1")));
        index.apply(&Event::Apply(rs("b", "u1")));
        assert_eq!(names(&index, "u1").len(), 2);
        // Adopted by another owner.
        index.apply(&Event::Apply(rs("b", "u2")));
        assert_eq!(names(&index, "u1"), vec![("ns".into(), "a".into())]);
        assert_eq!(names(&index, "u2"), vec![("ns".into(), "b".into())]);
        index.apply(&Event::Delete(rs("a", "u1")));
        assert!(names(&index, "u1").is_empty());
        // A re-list that no longer returns "b": gone once the list completes, not before.
        index.apply(&Event::<ReplicaSet>::Init);
        index.apply(&Event::InitApply(rs("c", "u1")));
        assert_eq!(names(&index, "u2").len(), 1);
        index.apply(&Event::<ReplicaSet>::InitDone);
        assert!(names(&index, "u2").is_empty());
        assert_eq!(names(&index, "u1"), vec![("ns".into(), "c".into())]);
        assert_eq!(index.len(), 1);
    }
}
