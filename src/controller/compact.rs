//! Compact cache entries. A typed object costs far more memory than its JSON: k8s-openapi's
//! `PodTemplateSpec` is 1,776 bytes inline and each `Container` 2,120, before any string, so a
//! cached Rollout with a one-container template was about 11 KB for under 2 KB of JSON. The
//! Rollout and ReplicaSet caches hold [`Compact`] objects instead: the metadata typed (what the
//! indexes, owner lookups and event mappers read), the rest as JSON, decoded by the reconcile
//! that needs it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// An object of kind `K` kept as its metadata and the JSON of everything else.
pub struct Compact<K> {
    metadata: ObjectMeta,
    /// `K` with empty metadata, as JSON.
    body: Box<str>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Compact {
            metadata: self.metadata.clone(),
            body: self.body.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Compact<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compact")
            .field("metadata", &self.metadata)
            .field("body", &self.body)
            .finish()
    }
}

impl<K: Resource + Serialize + DeserializeOwned> Compact<K> {
    pub fn new(mut obj: K) -> Self {
        let metadata = std::mem::take(obj.meta_mut());
        // Encoding a decoded Kubernetes object cannot fail (every map is keyed by strings); if it
        // ever did, `expand` reports it rather than this losing the object silently.
        let body = serde_json::to_string(&obj).unwrap_or_default();
        Compact {
            metadata,
            body: body.into_boxed_str(),
            kind: PhantomData,
        }
    }

    /// The whole object again.
    pub fn expand(&self) -> Result<K, CacheError>
    where
        K::DynamicType: Default,
    {
        let mut obj: K = serde_json::from_str(&self.body).map_err(|e| CacheError {
            kind: K::kind(&Default::default()).into_owned(),
            namespace: self.metadata.namespace.clone().unwrap_or_default(),
            name: self.metadata.name.clone().unwrap_or_default(),
            message: e.to_string(),
        })?;
        *obj.meta_mut() = self.metadata.clone();
        Ok(obj)
    }
}

/// A cached object that does not decode again: a bug (the cache holds what its watch decoded),
/// reported as a reconcile error naming the object, never planned around.
#[derive(thiserror::Error, Debug)]
#[error("the cached {kind} {namespace}/{name} does not decode: {message}")]
pub struct CacheError {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub message: String,
}

impl<K: Resource> Resource for Compact<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Decodes as `K`, then compacts (what a watch of `Compact<K>` would receive).
impl<'de, K: Resource + Serialize + DeserializeOwned> Deserialize<'de> for Compact<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::deserialize(d).map(Compact::new)
    }
}

/// A watch event with its object compacted.
pub fn event<K: Resource + Serialize + DeserializeOwned>(event: Event<K>) -> Event<Compact<K>> {
    match event {
        Event::Apply(o) => Event::Apply(Compact::new(o)),
        Event::Delete(o) => Event::Delete(Compact::new(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(Compact::new(o)),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::Rollout;
    use k8s_openapi::api::apps::v1::ReplicaSet;

    #[test]
    fn a_compacted_object_expands_to_the_same_object() {
        let ro: Rollout = serde_yaml::from_str(
            r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: web
  namespace: shop
  uid: u-1
  resourceVersion: "42"
  labels: {app: web}
  annotations: {note: kept}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: web:2
        ports: [{containerPort: 8080}]
        resources: {requests: {cpu: 100m, memory: 64Mi}}
        readinessProbe: {httpGet: {path: /ready, port: 8080}}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting: {nginx: {stableIngress: web}}
      steps: [{setWeight: 20}, {pause: {duration: 30s}}, {setWeight: 50}, {pause: {}}]
status:
  phase: Paused
  currentPodHash: abc
  stableRS: def
  currentStepIndex: 1
  canary: {weights: {canary: {weight: 20, podTemplateHash: abc}, stable: {weight: 80, podTemplateHash: def}}}
  conditions:
  - {type: Progressing, status: "True", reason: ReplicaSetUpdated, message: m, lastTransitionTime: "2026-11-28T10:00:00Z", lastUpdateTime: "2026-11-28T10:00:01Z"}
"#,
        )
        .unwrap();
        let compact = Compact::new(ro.clone());
        assert_eq!(compact.meta().name.as_deref(), Some("web"));
        assert_eq!(compact.meta().labels, ro.metadata.labels);
        assert!(!compact.body.contains("\"shop\""), "metadata is kept once");
        assert_eq!(compact.expand().unwrap(), ro);
        // What a watch decodes is the same as compacting the typed object.
        let decoded: Compact<Rollout> =
            serde_json::from_value(serde_json::to_value(&ro).unwrap()).unwrap();
        assert_eq!(decoded.expand().unwrap(), ro);

        let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "ownerReferences": [
                {"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "web",
                 "uid": "u-1", "controller": true}]},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": {"replicas": 3, "availableReplicas": 2, "observedGeneration": 4}
        }))
        .unwrap();
        assert_eq!(Compact::new(rs.clone()).expand().unwrap(), rs);
    }

    #[test]
    fn a_body_that_no_longer_decodes_is_an_error_not_a_default() {
        let mut compact = Compact::new(ReplicaSet::default());
        compact.metadata.name = Some("web-abc".into());
        compact.body = "{\"spec\": 7}".into();
        let err = compact.expand().unwrap_err().to_string();
        assert!(err.contains("ReplicaSet /web-abc"), "{err}");
    }
}
