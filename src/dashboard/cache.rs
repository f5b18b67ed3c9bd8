//! The dashboard's view of the cluster: one watch per kind for the whole server (not one per
//! browser), kept in reflector stores. Every change bumps a counter that the open pages wait on,
//! so a browser hears of a change when the API server tells the dashboard, never by polling.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::analysis::AnalysisRun;
use crate::api::rollout::Rollout;
use crate::cli::info::Snapshot;

/// The watched objects, and what went wrong with a watch (shown on every page: a user who may
/// not list Pods sees why their pods are missing).
pub struct Cache {
    /// Rollouts.
    pub rollouts: Store<Rollout>,
    /// ReplicaSets.
    pub replica_sets: Store<ReplicaSet>,
    /// AnalysisRuns.
    pub analysis_runs: Store<AnalysisRun>,
    /// Pods.
    pub pods: Store<Pod>,
    /// Events (`events.k8s.io/v1`).
    pub events: Store<Event>,
    /// Bumped on every watch event.
    changes: watch::Receiver<u64>,
    /// The latest error of each watch that is failing, by resource.
    errors: Arc<Mutex<BTreeMap<&'static str, String>>>,
    tasks: Vec<JoinHandle<()>>,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn spawn<K>(
    api: Api<K>,
    resource: &'static str,
    changes: Arc<watch::Sender<u64>>,
    errors: Arc<Mutex<BTreeMap<&'static str, String>>>,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    // managedFields are kept on Rollouts only (they tell who aborted); the other kinds drop
    // them to keep the cache small.
    let keep_managed = resource == "rollouts";
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(move |obj: &mut K| {
            if !keep_managed {
                obj.managed_fields_mut().clear();
            }
        })
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if let Ok(mut errs) = errors.lock() {
                        errs.remove(resource);
                    }
                }
                Err(e) => {
                    if let Ok(mut errs) = errors.lock() {
                        errs.insert(resource, e.to_string());
                    }
                }
            }
            changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    });
    (reader, task)
}

impl Cache {
    /// Starts the watches: in `namespace`, or in every namespace when `None`.
    pub fn start(client: &Client, namespace: Option<&str>) -> Cache {
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let errors = Arc::new(Mutex::new(BTreeMap::new()));
        let (rollouts, t1) = spawn(
            api::<Rollout>(client, namespace),
            "rollouts",
            tx.clone(),
            errors.clone(),
        );
        let (replica_sets, t2) = spawn(
            api::<ReplicaSet>(client, namespace),
            "replicasets",
            tx.clone(),
            errors.clone(),
        );
        let (analysis_runs, t3) = spawn(
            api::<AnalysisRun>(client, namespace),
            "analysisruns",
            tx.clone(),
            errors.clone(),
        );
        let (pods, t4) = spawn(
            api::<Pod>(client, namespace),
            "pods",
            tx.clone(),
            errors.clone(),
        );
        let (events, t5) = spawn(
            api::<Event>(client, namespace),
            "events",
            tx,
            errors.clone(),
        );
        Cache {
            rollouts,
            replica_sets,
            analysis_runs,
            pods,
            events,
            changes: rx,
            errors,
            tasks: vec![t1, t2, t3, t4, t5],
        }
    }

    /// Waits (at most `limit`) until the Rollouts have been listed once, so that the first
    /// page is not empty for want of a moment.
    pub async fn ready(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.rollouts.wait_until_ready()).await;
    }

    /// A receiver that sees every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// The failing watches and why, by resource.
    pub fn errors(&self) -> Vec<(String, String)> {
        self.errors
            .lock()
            .map(|e| e.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Every Rollout, sorted by namespace and name.
    pub fn rollouts(&self) -> Vec<Rollout> {
        let mut all: Vec<Rollout> = self
            .rollouts
            .state()
            .iter()
            .map(|r| (**r).clone())
            .collect();
        all.sort_by_key(|r| (r.namespace().unwrap_or_default(), r.name_any()));
        all
    }

    /// The objects behind one Rollout, as `sluice get` reads them from the API server.
    pub fn snapshot(&self, namespace: &str, name: &str) -> Option<Snapshot> {
        let rollout = self
            .rollouts
            .state()
            .iter()
            .find(|r| r.namespace().as_deref() == Some(namespace) && r.name_any() == name)
            .map(|r| (**r).clone())?;
        let in_ns = |ns: Option<String>| ns.as_deref() == Some(namespace);
        let replica_sets = self
            .replica_sets
            .state()
            .iter()
            .filter(|o| in_ns(o.namespace()))
            .map(|o| (**o).clone())
            .collect();
        let runs = self
            .analysis_runs
            .state()
            .iter()
            .filter(|o| in_ns(o.namespace()))
            .map(|o| (**o).clone())
            .collect();
        let mut snapshot = Snapshot::from_objects(rollout, replica_sets, runs);
        let pods_failing = self.errors.lock().map_or(true, |e| e.contains_key("pods"));
        if !pods_failing {
            let hashes: Vec<String> = snapshot
                .replica_sets
                .iter()
                .filter_map(|rs| crate::api::constants::pod_template_hash(rs.labels()).cloned())
                .collect();
            snapshot.pods = self
                .pods
                .state()
                .iter()
                .filter(|p| in_ns(p.namespace()))
                .filter(|p| {
                    crate::api::constants::pod_template_hash(p.labels())
                        .is_some_and(|h| hashes.contains(h))
                })
                .map(|p| (**p).clone())
                .collect();
            snapshot.pods_read = true;
        }
        Some(snapshot)
    }

    /// The AnalysisRun `namespace/name`.
    pub fn analysis_run(&self, namespace: &str, name: &str) -> Option<AnalysisRun> {
        self.analysis_runs
            .state()
            .iter()
            .find(|r| r.namespace().as_deref() == Some(namespace) && r.name_any() == name)
            .map(|r| (**r).clone())
    }

    /// Events about the Rollout `namespace/name` and its ReplicaSets and AnalysisRuns, newest
    /// first.
    pub fn events_about(&self, namespace: &str, names: &[String]) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .events
            .state()
            .iter()
            .filter(|e| e.namespace().as_deref() == Some(namespace))
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .and_then(|r| r.name.as_ref())
                    .is_some_and(|n| names.contains(n))
            })
            .map(|e| (**e).clone())
            .collect();
        events.sort_by_key(|e| std::cmp::Reverse(event_time(e)));
        events
    }
}

/// When an Event last happened: its series' last time, else its event time, else when it was
/// created (events written through the older API have only the deprecated fields).
pub fn event_time(e: &Event) -> Option<jiff::Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

impl Drop for Cache {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
