//! Shared state of the controllers: client and writer, caches, recorder, metrics, leadership,
//! settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::Store;

use super::clock::Clock;
use super::compact::Compact;
use super::config::Settings;
use super::events::{EventRecorder, Reporter};
use super::leader::LeaderGate;
use super::measurement_pool::MeasurementPool;
use super::metrics::Metrics;
use super::owner_index::OwnerIndex;
use super::writer::Writer;
use crate::api::analysis::AnalysisRun;
use crate::api::rollout::Rollout;
use crate::metrics::prometheus::PrometheusProvider;
use crate::metrics::web::WebProvider;

/// A cached Rollout: see [`Compact`].
pub type CachedRollout = Compact<Rollout>;

/// A ReplicaSet as our create returned it, and when.
type Created = (Arc<ReplicaSet>, tokio::time::Instant);

/// How long a ReplicaSet we created stands in for the watch cache's copy
/// ([`Context::created_replica_sets`]): far longer than a watch takes to deliver it.
pub const CREATED_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Watch caches.
#[derive(Clone)]
pub struct Stores {
    pub rollouts: Store<CachedRollout>,
    pub replica_sets: Store<Compact<ReplicaSet>>,
    /// ReplicaSets labelled only with the legacy (Argo Rollouts) pod-template hash key, by an
    /// earlier Sluice version, until they are relabelled. Also holds Argo Rollouts' own
    /// ReplicaSets when both controllers run in one cluster: read, never written (nothing owned
    /// by another Rollout is observed).
    pub legacy_replica_sets: Store<Compact<ReplicaSet>>,
    pub services: Store<Compact<Service>>,
    pub analysis_runs: Store<AnalysisRun>,
    pub deployments: Store<Compact<Deployment>>,
    /// The routing objects (Ingresses, VirtualServices, DestinationRules, Gateway API routes)
    /// the Rollouts reference, read by their routers.
    pub routing: Arc<crate::traffic::cache::ObjectCache>,
    /// [`Stores::replica_sets`] by owner uid.
    pub replica_set_owners: OwnerIndex,
    /// [`Stores::legacy_replica_sets`] by owner uid.
    pub legacy_replica_set_owners: OwnerIndex,
    /// [`Stores::analysis_runs`] by owner uid.
    pub analysis_run_owners: OwnerIndex,
}

/// Shared by every reconcile.
pub struct Context {
    /// Client for reads; writes go through [`Context::writer`].
    pub client: kube::Client,
    /// Every write: refused while this replica is not the leader.
    pub writer: Writer,
    pub settings: Settings,
    pub stores: Stores,
    pub recorder: EventRecorder,
    pub metrics: Arc<Metrics>,
    pub leader: LeaderGate,
    pub clock: Clock,
    pub prometheus: PrometheusProvider,
    /// The web metric provider; it shares the Prometheus provider's address allowlist.
    pub web: WebProvider,
    pub measurements: MeasurementPool,
    /// Consecutive failures per object, for exponential backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// True once every cache has synced.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Per Rollout (by uid), the resourceVersion a reconcile planned from whose successor it then
    /// wrote (or found written by someone else, a 409). See [`Context::is_superseded`].
    superseded: Mutex<HashMap<String, (String, tokio::time::Instant)>>,
    /// Per Rollout (by uid), the last ReplicaSet the API server refused to create. Kept in
    /// memory: after a restart the create is tried once more, and refused again.
    refusals: Mutex<HashMap<String, crate::plan::RefusedReplicaSet>>,
    /// Services as our own last write left them, by namespace and name, until the watch cache
    /// shows that version or a later one. See [`Context::service`].
    written_services: Mutex<HashMap<(String, String), Arc<Service>>>,
    /// ReplicaSets as our own last write left them, until the watch cache shows that version
    /// or a later one. See [`Context::replica_set`].
    written_replica_sets: Mutex<HashMap<(String, String), Arc<ReplicaSet>>>,
    /// ReplicaSets our creates returned, by namespace and name, with when, until the watch cache
    /// has them (at most [`CREATED_GRACE`]). See [`Context::created_replica_sets`].
    created_replica_sets: Mutex<HashMap<(String, String), Created>>,
    /// Per Rollout (by uid), since when a status change of counters only has been held back.
    /// An entry lives only while one is held (removed by the next status write, or when the
    /// status needs none).
    counters_pending: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl Context {
    /// Builds the shared context.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        settings: Settings,
        stores: Stores,
        metrics: Arc<Metrics>,
        leader: LeaderGate,
        clock: Clock,
        prometheus: PrometheusProvider,
        web: WebProvider,
        identity: &str,
        ready: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        let reporter = Reporter {
            controller: "sluice".into(),
            instance: Some(identity.to_string()),
        };
        let workers = settings.analysis_workers.max(1);
        let writer = Writer::new(client.clone(), leader.clone());
        Context {
            // Events are writes too.
            recorder: EventRecorder::new(writer.client(), reporter),
            client,
            writer,
            settings,
            stores,
            metrics,
            leader,
            clock,
            prometheus,
            web,
            measurements: MeasurementPool::new(workers),
            failures: Mutex::new(HashMap::new()),
            ready,
            superseded: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
            written_services: Mutex::new(HashMap::new()),
            written_replica_sets: Mutex::new(HashMap::new()),
            created_replica_sets: Mutex::new(HashMap::new()),
            counters_pending: Mutex::new(HashMap::new()),
        }
    }

    /// Now, from the controller's one clock.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Records a failure for `key` and returns how long to wait before retrying.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 2u64
            .saturating_pow((*n).min(16))
            .min(self.settings.max_backoff.as_secs().max(1));
        // Start at half a second so a lost race (409) is retried quickly.
        Duration::from_millis(250)
            .saturating_mul(secs as u32)
            .min(self.settings.max_backoff)
    }

    /// Records that the Rollout `uid` at `resource_version` is no longer current: its status was
    /// just written from it, or a write from it met a conflict.
    pub fn supersede(&self, uid: &str, resource_version: &str) {
        let mut map = self.superseded.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(
            uid.to_string(),
            (resource_version.to_string(), tokio::time::Instant::now()),
        );
    }

    /// True when the watch cache still holds a version of the Rollout that a reconcile already
    /// acted on and wrote past. Planning from it again would repeat decisions that are not
    /// idempotent (an AnalysisRun created twice under two names), so the reconcile waits for
    /// the cache to catch up. Versions are compared for equality only (they are opaque).
    pub fn is_superseded(&self, uid: &str, resource_version: &str) -> bool {
        self.superseded_for(uid, resource_version).is_some()
    }

    /// How long ago the Rollout `uid` at `resource_version` was marked superseded (None: it is
    /// not).
    pub fn superseded_for(&self, uid: &str, resource_version: &str) -> Option<Duration> {
        let map = self.superseded.lock().unwrap_or_else(|e| e.into_inner());
        map.get(uid)
            .filter(|(rv, _)| rv == resource_version)
            .map(|(_, at)| at.elapsed())
    }

    /// The Service `name` in `namespace` as the controller last knew it: the watch cache, or
    /// the object our own last write returned while the cache is still behind it.
    ///
    /// Watches of different kinds are not ordered, so a reconcile woken by the status write that
    /// followed a selector switch can find the Service cache still at the old selector. Planning
    /// from that, the canary would look unswitched and its weight would be set back to 0 for a
    /// moment: traffic moving backwards. Versions are compared as numbers, as client-go's
    /// mutation cache does; an unparsable version counts as the cache having caught up.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        use kube::ResourceExt;
        use kube::runtime::reflector::ObjectRef;
        // A cached Service that does not decode (a bug) counts as missing: the caller reads
        // the API server before calling it missing.
        let cached = self
            .stores
            .services
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|c| match c.expand() {
                Ok(svc) => Some(Arc::new(svc)),
                Err(e) => {
                    tracing::error!(error = %e, "reading a Service from the cache");
                    None
                }
            });
        let key = (namespace.to_string(), name.to_string());
        let mut written = self
            .written_services
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(ours) = written.get(&key).cloned() else {
            return cached;
        };
        let version = |s: &Service| s.resource_version().and_then(|v| v.parse::<u64>().ok());
        let cache_behind = match (&cached, version(&ours)) {
            (Some(c), Some(ours)) => version(c).is_some_and(|c| c < ours),
            // Gone from the cache: deleted since (only existing Services are patched). The
            // caller reads the API server before calling it missing.
            (None, _) | (_, None) => false,
        };
        if cache_behind {
            return Some(ours);
        }
        written.remove(&key);
        cached
    }

    /// Records a Service as one of our writes returned it (see [`Context::service`]).
    pub fn remember_service(&self, written: Service) {
        use kube::ResourceExt;
        let (Some(namespace), name) = (written.namespace(), written.name_any()) else {
            return;
        };
        let mut map = self
            .written_services
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.insert((namespace, name), Arc::new(written));
    }

    /// How long a counter-only status change of the Rollout `uid` has been held back (zero
    /// when this is the first time: the wait starts now).
    pub fn counters_pending(&self, uid: &str) -> Duration {
        let mut map = self
            .counters_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(uid.to_string())
            .or_insert_with(tokio::time::Instant::now)
            .elapsed()
    }

    /// Ends the wait of the Rollout `uid`'s counters: they were written, or need no write.
    pub fn counters_written(&self, uid: &str) {
        let mut map = self
            .counters_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.remove(uid);
    }

    /// The ReplicaSet `cached` as the controller last knew it: the cached object, or the one
    /// our own last write returned while the cache is still behind it (as [`Context::service`]).
    /// Without this, the reconcile woken by our next status write could count replicas from
    /// the ReplicaSet as it was before our scale, and write those counts back.
    pub fn replica_set(
        &self,
        cached: &Compact<ReplicaSet>,
    ) -> Result<Arc<ReplicaSet>, super::compact::CacheError> {
        use kube::ResourceExt;
        let key = (cached.namespace().unwrap_or_default(), cached.name_any());
        {
            let mut written = self
                .written_replica_sets
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(ours) = written.get(&key) {
                let version = |v: Option<String>| v.and_then(|v| v.parse::<u64>().ok());
                let same_object = ours.uid() == cached.uid();
                if same_object
                    && let (Some(c), Some(o)) = (
                        version(cached.resource_version()),
                        version(ours.resource_version()),
                    )
                    && c < o
                {
                    return Ok(ours.clone());
                }
                written.remove(&key);
            }
        }
        cached.expand().map(Arc::new)
    }

    /// Records a ReplicaSet as one of our writes returned it (see [`Context::replica_set`]).
    pub fn remember_replica_set(&self, written: ReplicaSet) {
        use kube::ResourceExt;
        let key = (written.namespace().unwrap_or_default(), written.name_any());
        let mut map = self
            .written_replica_sets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.insert(key, Arc::new(written));
    }

    /// Records a ReplicaSet as our create returned it (see [`Context::created_replica_sets`]).
    pub fn remember_created_replica_set(&self, created: ReplicaSet) {
        use kube::ResourceExt;
        let key = (created.namespace().unwrap_or_default(), created.name_any());
        let mut map = self
            .created_replica_sets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.insert(key, (Arc::new(created), tokio::time::Instant::now()));
    }

    /// The ReplicaSets of the Rollout `owner` in `namespace` that we created and the watch
    /// cache does not show yet (`cached` tells whether it does). Watches of different kinds are
    /// not ordered: the reconcile woken by the status write that followed a create can find the
    /// ReplicaSet cache without it, and would create it again (a refused write, and a plan made
    /// without the new version). An entry is dropped once the cache has the object, or after
    /// [`CREATED_GRACE`] (a ReplicaSet deleted before the cache saw it is then missing again).
    pub fn created_replica_sets(
        &self,
        namespace: &str,
        owner: &str,
        cached: impl Fn(&str) -> bool,
    ) -> Vec<Arc<ReplicaSet>> {
        use kube::ResourceExt;
        let mut map = self
            .created_replica_sets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.retain(|(ns, name), (_, at)| {
            at.elapsed() < CREATED_GRACE && !(ns == namespace && cached(name))
        });
        map.iter()
            .filter(|((ns, _), (rs, _))| {
                ns == namespace && rs.owner_references().iter().any(|o| o.uid == owner)
            })
            .map(|(_, (rs, _))| rs.clone())
            .collect()
    }

    /// Forgets a deleted Rollout.
    pub fn forget_superseded(&self, uid: &str) {
        let mut map = self.superseded.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(uid);
    }

    /// Remembers that the API server refused the ReplicaSet `refused` of the Rollout `uid`.
    pub fn refuse(&self, uid: &str, refused: crate::plan::RefusedReplicaSet) {
        let mut map = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(uid.to_string(), refused);
    }

    /// The last ReplicaSet of the Rollout `uid` the API server refused, if any.
    pub fn refusal(&self, uid: &str) -> Option<crate::plan::RefusedReplicaSet> {
        let map = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        map.get(uid).cloned()
    }

    /// Forgets the refusals of a deleted Rollout.
    pub fn forget_refusal(&self, uid: &str) {
        let mut map = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(uid);
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}
