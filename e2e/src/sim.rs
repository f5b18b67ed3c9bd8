//! Simulated workloads: the Deployment and ReplicaSet controllers, a kubelet that makes Pods
//! Running and Ready, the endpoints controller, the garbage collector and the namespace
//! controller. They act on the store directly (not through HTTP, so they never appear in the write
//! log) and read time only from the cluster's [`Clock`](crate::clock::Clock).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::clock::{format_time, parse_time};
use crate::resources::{ResKey, ResourceDef};
use crate::selector::LabelSelector;
use crate::store::{DeleteOpts, EventType, Store, StoreEvent, WriteCtx};

// The Job controller and the Job pods' kubelet: a child module, so it shares the simulation's
// state.
#[path = "jobs.rs"]
mod jobs;

/// Pod annotation: the pod runs but never becomes Ready.
pub const NEVER_READY: &str = "e2e.sluice.dev/never-ready";
/// Pod annotation: the container keeps crashing (CrashLoopBackOff), never Ready.
pub const CRASH_LOOP: &str = "e2e.sluice.dev/crash-loop";
/// Pod annotation: a Go-style duration (`500ms`, `3s`, `1m`) overriding the ready delay.
pub const READY_AFTER: &str = "e2e.sluice.dev/ready-after";

/// Settings of the simulated workloads.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// Time from a Pod's creation until it is Running and Ready.
    pub pod_ready_delay: Duration,
    /// Time between restarts of a crash-looping container (also the retry delay of a pod process
    /// that failed to start).
    pub crash_restart_interval: Duration,
    /// How long a deleted pod stays Terminating before the kubelet removes it (capped by its
    /// grace period): the time its app takes to exit after SIGTERM.
    pub pod_termination_delay: Duration,
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            pod_ready_delay: Duration::from_millis(200),
            crash_restart_interval: Duration::from_secs(10),
            pod_termination_delay: Duration::from_millis(100),
        }
    }
}

/// A Pod that is about to become ready, as given to a [`PodRunner`].
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The whole Pod object.
    pub pod: Value,
}

/// A real process backing a Pod. Dropping it must stop the process (e.g. a
/// `tokio::process::Child` spawned with `kill_on_drop(true)`); it is dropped when the Pod goes.
pub struct PodProcess {
    /// The loopback port the process serves on; the Pod's IP becomes 127.0.0.1 and endpoints use
    /// this port (like a host-network pod).
    pub port: Option<u16>,
    pub guard: Box<dyn Send + Sync>,
    exited: Option<tokio::sync::oneshot::Receiver<String>>,
}

impl PodProcess {
    pub fn new(port: Option<u16>, guard: impl Send + Sync + 'static) -> Self {
        Self {
            port,
            guard: Box::new(guard),
            exited: None,
        }
    }

    /// Reports the process's own exit (with a reason): the pod then turns unready and
    /// crash-loops, and the process is started again after `crash_restart_interval`.
    pub fn with_exit(mut self, exited: tokio::sync::oneshot::Receiver<String>) -> Self {
        self.exited = Some(exited);
        self
    }
}

impl std::fmt::Debug for PodProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodProcess")
            .field("port", &self.port)
            .finish()
    }
}

/// Ready addresses, not-ready addresses and ports of one Endpoints subset.
type Subset = (Vec<Value>, Vec<Value>, Vec<Value>);

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Starts the process of a Pod; the Pod becomes Ready only once this succeeded. An error makes
/// the Pod crash-loop and the start is retried after `crash_restart_interval`.
pub trait PodRunner: Send + Sync + 'static {
    fn start(&self, pod: PodInfo) -> BoxFuture<Result<PodProcess, String>>;
}

impl<F, Fut> PodRunner for F
where
    F: Fn(PodInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<PodProcess, String>> + Send + 'static,
{
    fn start(&self, pod: PodInfo) -> BoxFuture<Result<PodProcess, String>> {
        Box::pin(self(pod))
    }
}

enum Process {
    None,
    Starting,
    Running(PodProcess),
    Failed { retry_at: Instant },
}

struct PodState {
    seen: Instant,
    ip: String,
    ready_since: Option<(Instant, String)>,
    not_ready_since: String,
    started_at: String,
    restarts: i64,
    next_restart: Instant,
    process: Process,
    terminating_since: Option<Instant>,
    /// Counts process starts, so a late exit report of an old process is ignored.
    start_seq: u64,
}

/// One endpoint of a Service, as seen by the endpoints controller.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointAddress {
    pub pod: String,
    pub ip: String,
    pub ready: bool,
    /// The port of the pod's attached process, if a [`PodRunner`] started one.
    pub process_port: Option<u16>,
}

/// The simulated controllers, sharing the store with the API server.
pub struct Sim {
    store: Arc<Store>,
    settings: Mutex<SimSettings>,
    pods: Mutex<HashMap<String, PodState>>,
    runner: Mutex<Option<Arc<dyn PodRunner>>>,
    ip_seq: Mutex<u32>,
    /// The processes of Job pods, by pod uid.
    job_pods: Mutex<jobs::JobPods>,
    /// What the ReplicaSet controller looks at on its next pass.
    rs_pass: Mutex<RsPass>,
}

/// The ReplicaSet controller's view, kept up to date from the store's events so that a pass
/// looks only at the ReplicaSets that changed or whose pods did (a pass over every ReplicaSet
/// on every change made the simulation quadratic in the number of ReplicaSets).
struct RsPass {
    events: tokio::sync::broadcast::Receiver<Arc<StoreEvent>>,
    /// False until the first pass, and after the event stream lagged: the next pass lists
    /// every pod and looks at every ReplicaSet.
    primed: bool,
    /// Events at or below this resourceVersion are already in what was listed.
    listed_rv: u64,
    /// The live pods by their controller's uid, then by `namespace/name`.
    pods_of: HashMap<String, HashMap<String, Arc<Value>>>,
    /// Each indexed pod's controller uid.
    owner_of: HashMap<String, String>,
    /// ReplicaSets (namespace, name) to look at on the next pass.
    dirty: HashSet<(String, String)>,
}

impl RsPass {
    fn new(store: &Store) -> Self {
        RsPass {
            events: store.subscribe_all(),
            primed: false,
            listed_rv: 0,
            pods_of: HashMap::new(),
            owner_of: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    /// Files a pod as it now is (`None`: gone) under its controller's uid.
    fn index_pod(&mut self, key: String, pod: Option<Arc<Value>>) {
        if let Some(old_owner) = self.owner_of.remove(&key)
            && let Some(pods) = self.pods_of.get_mut(&old_owner)
        {
            pods.remove(&key);
            if pods.is_empty() {
                self.pods_of.remove(&old_owner);
            }
        }
        if let Some(pod) = pod
            && let Some(uid) = controller_of(&pod)
        {
            let uid = uid.to_string();
            self.owner_of.insert(key.clone(), uid.clone());
            self.pods_of.entry(uid).or_default().insert(key, pod);
        }
    }

    /// Applies the store's events since the last pass; false when they lagged (nothing is
    /// known then: the caller lists again).
    fn catch_up(&mut self) -> bool {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            let ev = match self.events.try_recv() {
                Ok(ev) => ev,
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => return true,
                Err(TryRecvError::Lagged(_)) => return false,
            };
            if ev.rv <= self.listed_rv {
                continue;
            }
            match ev.key.plural.as_str() {
                "replicasets" if ev.key.group == "apps" => {
                    self.dirty
                        .insert((ev.namespace.clone(), s(&ev.object, "/metadata/name").into()));
                }
                "pods" if ev.key.group.is_empty() => {
                    // Its ReplicaSet before and after the change (released, adopted or gone).
                    for pod in ev.old.iter().chain([&ev.object]) {
                        if let Some(rs) = replicaset_of(pod) {
                            self.dirty.insert((ev.namespace.clone(), rs.to_string()));
                        }
                    }
                    let key = format!("{}/{}", ev.namespace, s(&ev.object, "/metadata/name"));
                    let live = (ev.kind != EventType::Deleted && !is_deleting(&ev.object))
                        .then(|| ev.object.clone());
                    self.index_pod(key, live);
                }
                _ => {}
            }
        }
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses `500ms`, `3s`, `2m`, `1h` (and plain seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

fn controller_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|o| o.get("uid"))
        .and_then(Value::as_str)
}

/// The name of the ReplicaSet that controls a pod.
fn replicaset_of(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| {
            o.get("controller").and_then(Value::as_bool) == Some(true)
                && o.get("kind").and_then(Value::as_str) == Some("ReplicaSet")
        })
        .and_then(|o| o.get("name"))
        .and_then(Value::as_str)
}

fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

fn owner_ref(obj: &Value, api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind, "name": s(obj, "/metadata/name"),
        "uid": s(obj, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true,
    })
}

/// FNV-1a, rendered in the pod-template-hash alphabet (stable across runs and Rust versions).
fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf29ce484222325;
    for b in template.to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (0..10)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The pod conditions the simulated kubelet writes; any other condition type belongs to whoever
/// wrote it (readiness gates).
const KUBELET_CONDITIONS: [&str; 5] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
];

/// The `spec.readinessGates` condition types of a pod whose condition is not True.
fn unmet_readiness_gates(pod: &Value) -> Vec<String> {
    let conditions = pod.pointer("/status/conditions").and_then(Value::as_array);
    pod.pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|g| s(g, "/conditionType"))
        .filter(|kind| {
            !conditions
                .into_iter()
                .flatten()
                .any(|c| s(c, "/type") == *kind && s(c, "/status") == "True")
        })
        .map(str::to_string)
        .collect()
}

/// Whether two statuses differ, ignoring nothing: statuses are built deterministically.
fn differs(current: Option<&Value>, desired: &Value) -> bool {
    current != Some(desired)
}

impl Sim {
    pub fn new(store: Arc<Store>, settings: SimSettings) -> Arc<Self> {
        Arc::new(Self {
            settings: Mutex::new(settings),
            pods: Mutex::new(HashMap::new()),
            runner: Mutex::new(None),
            ip_seq: Mutex::new(0),
            job_pods: Mutex::new(HashMap::new()),
            rs_pass: Mutex::new(RsPass::new(&store)),
            store,
        })
    }

    pub fn settings(&self) -> SimSettings {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_settings(&self, settings: SimSettings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
        self.store.changed.notify_one();
    }

    pub fn set_runner(&self, runner: Option<Arc<dyn PodRunner>>) {
        *self.runner.lock().unwrap_or_else(|e| e.into_inner()) = runner;
        self.store.changed.notify_one();
    }

    /// The port of the process attached to a pod, if any.
    pub fn process_port(&self, uid: &str) -> Option<u16> {
        match &self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)?
            .process
        {
            Process::Running(p) => p.port,
            _ => None,
        }
    }

    /// Runs the controllers until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = self.reconcile();
            let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = self.store.changed.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn res(&self, group: &str, plural: &str) -> Arc<ResourceDef> {
        self.store
            .resource(group, plural)
            .expect("built-in resource")
    }

    /// One pass of every controller; returns when it next needs to run for time-based reasons.
    pub fn reconcile(self: &Arc<Self>) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        self.collect_garbage();
        // Waiting owners are looked at again when a dependent goes (deletions wake the loop).
        self.foreground_deletions();
        self.finish_namespaces();
        if let Some(t) = self.deployments() {
            at(t)
        }
        if let Some(t) = self.replicasets() {
            at(t)
        }
        if let Some(t) = self.jobs() {
            at(t)
        }
        if let Some(t) = self.kubelet() {
            at(t)
        }
        self.endpoints();
        next
    }

    /// Background cascading deletion: an object all of whose owners are gone is deleted.
    fn collect_garbage(&self) {
        let gone: std::collections::HashSet<String> =
            self.store.take_gc_queue().into_iter().collect();
        if gone.is_empty() {
            return;
        }
        {
            let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
            pods.retain(|uid, _| !gone.contains(uid));
        }
        for (res, obj) in self.store.dependents_of_any(&gone) {
            let owners = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let orphaned = owners.iter().all(|o| {
                !self
                    .store
                    .uid_exists(o.get("uid").and_then(Value::as_str).unwrap_or_default())
            });
            if orphaned && !is_deleting(&obj) {
                let _ = self.store.delete(
                    &res,
                    s(&obj, "/metadata/namespace"),
                    s(&obj, "/metadata/name"),
                    &DeleteOpts::default(),
                );
            }
        }
    }

    /// Foreground deletion: delete the dependents, and once none is left, drop the owner's
    /// `foregroundDeletion` finalizer (which removes it if it has no other finalizers).
    fn foreground_deletions(&self) {
        for (key, ns, name) in self.store.foreground_deletions() {
            let Some(obj) = self.store.get(&key, &ns, &name) else {
                continue;
            };
            let Some(res) = self.store.resource(&key.group, &key.plural) else {
                continue;
            };
            let uid = s(&obj, "/metadata/uid").to_string();
            let dependents = self.store.dependents_of(&uid);
            for (dres, dep) in &dependents {
                if !is_deleting(dep) {
                    let opts = DeleteOpts {
                        propagation: Some("Foreground".into()),
                        ..DeleteOpts::default()
                    };
                    let _ = self.store.delete(
                        dres,
                        s(dep, "/metadata/namespace"),
                        s(dep, "/metadata/name"),
                        &opts,
                    );
                }
            }
            if !dependents.is_empty() {
                continue;
            }
            let mut new = (*obj).clone();
            if let Some(list) = new
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                list.retain(|f| f != crate::store::FOREGROUND);
            }
            let version = res.storage_version().to_string();
            new["apiVersion"] = json!(res.api_version(&version));
            let _ = self.store.update(
                &WriteCtx::manager("garbage-collector"),
                &res,
                &version,
                &ns,
                &name,
                new,
                None,
            );
        }
    }

    fn finish_namespaces(&self) {
        let ns_res = self.res("", "namespaces");
        let (namespaces, _) = self.store.list(&ns_res.key(), None);
        for ns in namespaces.iter().filter(|n| is_deleting(n)) {
            let name = s(ns, "/metadata/name");
            let contents = self.store.namespace_contents(name);
            for (res, obj) in &contents {
                if !is_deleting(obj) {
                    let _ = self.store.delete(
                        res,
                        name,
                        s(obj, "/metadata/name"),
                        &DeleteOpts::default(),
                    );
                }
            }
            if self.store.namespace_contents(name).is_empty()
                && ns
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(|f| f.is_empty())
            {
                self.store.remove(&ns_res, "", name);
            }
        }
    }

    fn deployments(&self) -> Option<Instant> {
        let deploy_res = self.res("apps", "deployments");
        let rs_res = self.res("apps", "replicasets");
        let (deployments, _) = self.store.list(&deploy_res.key(), None);
        let (all_rs, _) = self.store.list(&rs_res.key(), None);
        let ctx = WriteCtx::manager("deployment-controller");
        for d in deployments.iter().filter(|d| !is_deleting(d)) {
            let ns = s(d, "/metadata/namespace");
            let name = s(d, "/metadata/name");
            let uid = s(d, "/metadata/uid");
            let desired = d
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let owned: Vec<&Arc<Value>> = all_rs
                .iter()
                .filter(|rs| controller_of(rs) == Some(uid))
                .collect();
            if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
            let hash = template_hash(&template);
            let new_rs = owned
                .iter()
                .find(|rs| s(rs, "/metadata/labels/pod-template-hash") == hash);
            match new_rs {
                None => {
                    let mut template = template.clone();
                    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                    selector["matchLabels"]["pod-template-hash"] = json!(hash);
                    let revision = owned
                        .iter()
                        .filter_map(|rs| {
                            s(
                                rs,
                                "/metadata/annotations/deployment.kubernetes.io~1revision",
                            )
                            .parse::<i64>()
                            .ok()
                        })
                        .max()
                        .unwrap_or(0)
                        + 1;
                    let rs = json!({
                        "apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {
                            "name": format!("{name}-{hash}"), "namespace": ns,
                            "labels": template["metadata"]["labels"],
                            "annotations": {"deployment.kubernetes.io/revision": revision.to_string(), "deployment.kubernetes.io/desired-replicas": desired.to_string()},
                            "ownerReferences": [owner_ref(d, "apps/v1", "Deployment")],
                        },
                        "spec": {
                            "replicas": desired, "selector": selector, "template": template,
                            "minReadySeconds": d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)),
                        },
                    });
                    let _ = self.store.create(&ctx, &rs_res, "v1", ns, rs);
                }
                Some(rs)
                    if rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(desired) =>
                {
                    let mut rs = (***rs).clone();
                    rs["spec"]["replicas"] = json!(desired);
                    let _ = self.store.update(
                        &ctx,
                        &rs_res,
                        "v1",
                        ns,
                        s(&rs, "/metadata/name"),
                        rs.clone(),
                        None,
                    );
                }
                Some(_) => {}
            }
            // Old ReplicaSets go to zero at once: rolling-update surge and unavailability budgets
            // are not simulated.
            for rs in owned
                .iter()
                .filter(|rs| s(rs, "/metadata/labels/pod-template-hash") != hash)
            {
                if rs
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    != 0
                {
                    let mut rs = (***rs).clone();
                    rs["spec"]["replicas"] = json!(0);
                    let _ = self.store.update(
                        &ctx,
                        &rs_res,
                        "v1",
                        ns,
                        s(&rs, "/metadata/name"),
                        rs.clone(),
                        None,
                    );
                }
            }
            let sum = |field: &str| -> i64 {
                owned
                    .iter()
                    .map(|rs| {
                        rs.pointer(&format!("/status/{field}"))
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    })
                    .sum()
            };
            let new_status = new_rs
                .map(|rs| rs.get("status").cloned().unwrap_or(json!({})))
                .unwrap_or(json!({}));
            let updated = new_status
                .get("replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let available = sum("availableReplicas");
            let new_available = new_status
                .get("availableReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let now = self.store.clock.now_rfc3339();
            let condition = |kind: &str, ok: bool, reason: &str, message: &str| {
                let status = if ok { "True" } else { "False" };
                let existing = d
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|cs| {
                        cs.iter()
                            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
                            .cloned()
                    });
                match existing {
                    Some(c) if s(&c, "/status") == status && s(&c, "/reason") == reason => c,
                    _ => {
                        json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": now, "lastUpdateTime": now})
                    }
                }
            };
            let mut status = json!({
                "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
                "replicas": sum("replicas"),
                "updatedReplicas": updated,
                "readyReplicas": sum("readyReplicas"),
                "availableReplicas": available,
                "conditions": [
                    condition("Available", available >= desired, if available >= desired { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }, "Deployment availability"),
                    condition("Progressing", true, if new_rs.is_some() && new_available >= desired { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }, "Deployment progress"),
                ],
            });
            for f in [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
            ] {
                if status[f] == json!(0) {
                    status.as_object_mut().expect("object").remove(f);
                }
            }
            if desired - available > 0 {
                status["unavailableReplicas"] = json!(desired - available);
            }
            if differs(d.get("status"), &status) {
                let mut obj = (**d).clone();
                obj["status"] = status;
                let _ = self
                    .store
                    .update(&ctx, &deploy_res, "v1", ns, name, obj, Some("status"));
            }
        }
        None
    }

    fn ready_since(&self, pod: &Value) -> Option<Instant> {
        if let Some(state) = self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(s(pod, "/metadata/uid"))
            && let Some((at, _)) = &state.ready_since
        {
            return Some(*at);
        }
        let conditions = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)?;
        let ready = conditions
            .iter()
            .find(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")?;
        Some(
            self.store
                .clock
                .instant_of(parse_time(s(ready, "/lastTransitionTime"))?),
        )
    }

    fn replicasets(&self) -> Option<Instant> {
        let rs_res = self.res("apps", "replicasets");
        let pod_res = self.res("", "pods");
        let ctx = WriteCtx::manager("replicaset-controller");
        let mut next: Option<Instant> = None;
        let mut pass = self.rs_pass.lock().unwrap_or_else(|e| e.into_inner());
        if !pass.catch_up() || !pass.primed {
            // Everything from a fresh list: the events up to now are in it.
            while pass.events.try_recv().is_ok() {}
            let (pods, rv) = self.store.list(&pod_res.key(), None);
            pass.pods_of.clear();
            pass.owner_of.clear();
            pass.listed_rv = rv;
            for p in pods.into_iter().filter(|p| !is_deleting(p)) {
                let key = format!(
                    "{}/{}",
                    s(&p, "/metadata/namespace"),
                    s(&p, "/metadata/name")
                );
                pass.index_pod(key, Some(p));
            }
            let (all_rs, _) = self.store.list(&rs_res.key(), None);
            pass.dirty = all_rs
                .iter()
                .map(|rs| {
                    (
                        s(rs, "/metadata/namespace").to_string(),
                        s(rs, "/metadata/name").to_string(),
                    )
                })
                .collect();
            pass.primed = true;
        }
        let dirty = std::mem::take(&mut pass.dirty);
        for (ns, name) in &dirty {
            let Some(rs) = self.store.get(&rs_res.key(), ns, name) else {
                continue;
            };
            if is_deleting(&rs) {
                continue;
            }
            let (ns, name) = (ns.as_str(), name.as_str());
            let uid = s(&rs, "/metadata/uid");
            let desired = rs
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .max(0) as usize;
            let owned: Vec<Arc<Value>> = pass
                .pods_of
                .get(uid)
                .map(|pods| pods.values().cloned().collect())
                .unwrap_or_default();
            let owned: Vec<&Arc<Value>> = owned.iter().collect();
            if owned.len() < desired {
                let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
                for _ in owned.len()..desired {
                    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
                    meta["generateName"] = json!(format!("{name}-"));
                    meta["namespace"] = json!(ns);
                    meta["ownerReferences"] = json!([owner_ref(&rs, "apps/v1", "ReplicaSet")]);
                    if let Some(m) = meta.as_object_mut() {
                        m.remove("name");
                    }
                    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec").cloned().unwrap_or(json!({}))});
                    if let Err(e) = self.store.create(&ctx, &pod_res, "v1", ns, pod) {
                        tracing::warn!(replicaset = name, error = %e.message, "simulated replicaset controller could not create a pod");
                        break;
                    }
                }
            } else if owned.len() > desired {
                // Delete not-ready pods first, then the newest, as the real controller prefers.
                let mut victims = owned.clone();
                victims.sort_by_key(|p| {
                    let ready = self.is_ready(p);
                    (
                        ready,
                        std::cmp::Reverse(s(p, "/metadata/creationTimestamp").to_string()),
                        std::cmp::Reverse(s(p, "/metadata/name").to_string()),
                    )
                });
                for p in victims.iter().take(owned.len() - desired) {
                    let _ = self.store.delete(
                        &pod_res,
                        ns,
                        s(p, "/metadata/name"),
                        &DeleteOpts::default(),
                    );
                }
            }
            let min_ready = Duration::from_secs(
                rs.pointer("/spec/minReadySeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            );
            let template_labels = LabelSelector::from_map(
                rs.pointer("/spec/template/metadata/labels")
                    .and_then(Value::as_object)
                    .unwrap_or(&serde_json::Map::new()),
            );
            let now = Instant::now();
            let mut waiting = false;
            let ready: Vec<&&Arc<Value>> = owned.iter().filter(|p| self.is_ready(p)).collect();
            let available = ready
                .iter()
                .filter(|p| match self.ready_since(p) {
                    Some(since) if since + min_ready <= now => true,
                    Some(since) => {
                        let t = since + min_ready;
                        next = Some(next.map_or(t, |n: Instant| n.min(t)));
                        waiting = true;
                        false
                    }
                    None => min_ready.is_zero(),
                })
                .count();
            let mut status = json!({
                "replicas": owned.len(),
                "fullyLabeledReplicas": owned.iter().filter(|p| template_labels.matches(p)).count(),
                "readyReplicas": ready.len(),
                "availableReplicas": available,
                "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            });
            for f in ["fullyLabeledReplicas", "readyReplicas", "availableReplicas"] {
                if status[f] == json!(0) {
                    status.as_object_mut().expect("object").remove(f);
                }
            }
            if differs(rs.get("status"), &status) {
                let mut obj = (*rs).clone();
                obj["status"] = status;
                let _ = self
                    .store
                    .update(&ctx, &rs_res, "v1", ns, name, obj, Some("status"));
            }
            if waiting {
                // Looked at again when its pods' minReadySeconds are over.
                pass.dirty.insert((ns.to_string(), name.to_string()));
            }
        }
        next
    }

    fn is_ready(&self, pod: &Value) -> bool {
        pod.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")
            })
    }

    fn next_ip(&self) -> String {
        let mut seq = self.ip_seq.lock().unwrap_or_else(|e| e.into_inner());
        *seq += 1;
        format!("10.244.{}.{}", (*seq >> 8) & 0xff, *seq & 0xff)
    }

    fn kubelet(self: &Arc<Self>) -> Option<Instant> {
        let pod_res = self.res("", "pods");
        let (pods, _) = self.store.list(&pod_res.key(), None);
        let settings = self.settings();
        let runner = self
            .runner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ctx = WriteCtx::manager("kubelet");
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        let live: std::collections::HashSet<&str> =
            pods.iter().map(|p| s(p, "/metadata/uid")).collect();
        let mut states = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        // Processes of pods that are gone are dropped (and so stopped) here.
        states.retain(|uid, _| live.contains(uid.as_str()));
        for pod in pods.iter() {
            // Job pods run to completion: see `jobs`.
            if jobs::is_job_pod(pod) && !is_deleting(pod) {
                continue;
            }
            if is_deleting(pod) {
                if let Some(t) = self.terminate(pod, &mut states, &settings, now) {
                    at(t);
                }
                continue;
            }
            let uid = s(pod, "/metadata/uid").to_string();
            let annotations = string_map(pod.pointer("/metadata/annotations"));
            let wall_now = self.store.clock.now_rfc3339();
            let state = states.entry(uid.clone()).or_insert_with(|| PodState {
                seen: now,
                ip: self.next_ip(),
                ready_since: None,
                not_ready_since: wall_now.clone(),
                started_at: String::new(),
                restarts: 0,
                next_restart: now,
                process: Process::None,
                terminating_since: None,
                start_seq: 0,
            });
            let delay = annotations
                .get(READY_AFTER)
                .and_then(|d| parse_duration(d))
                .unwrap_or(settings.pod_ready_delay);
            let started = now >= state.seen + delay;
            if !started {
                at(state.seen + delay);
            } else if state.started_at.is_empty() {
                state.started_at = format_time(self.store.clock.now());
            }
            let crash = annotations.get(CRASH_LOOP).is_some_and(|v| v != "false");
            let never_ready = annotations.get(NEVER_READY).is_some_and(|v| v != "false");
            if started && crash {
                if now >= state.next_restart {
                    if state.next_restart != state.seen {
                        state.restarts += 1;
                    }
                    state.next_restart = now + settings.crash_restart_interval;
                }
                at(state.next_restart);
            }
            // Attach a process to a pod that is otherwise ready to serve.
            let mut process_failed = false;
            if started
                && !crash
                && let Some(runner) = &runner
            {
                match &state.process {
                    Process::None => {
                        state.process = Process::Starting;
                        state.start_seq += 1;
                        let seq = state.start_seq;
                        let info = PodInfo {
                            namespace: s(pod, "/metadata/namespace").into(),
                            name: s(pod, "/metadata/name").into(),
                            uid: uid.clone(),
                            labels: string_map(pod.pointer("/metadata/labels")),
                            annotations: annotations.clone(),
                            pod: (**pod).clone(),
                        };
                        let sim = self.clone();
                        let runner = runner.clone();
                        let retry = settings.crash_restart_interval;
                        tokio::spawn(async move {
                            let result = runner.start(info).await;
                            let mut states = sim.pods.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some(state) = states.get_mut(&uid) {
                                state.process = match result {
                                    Ok(mut p) => {
                                        if let Some(exited) = p.exited.take() {
                                            tokio::spawn(sim.clone().watch_exit(
                                                uid.clone(),
                                                seq,
                                                exited,
                                                retry,
                                            ));
                                        }
                                        Process::Running(p)
                                    }
                                    Err(e) => {
                                        tracing::warn!(pod = %uid, error = %e, "pod process failed to start");
                                        state.restarts += 1;
                                        Process::Failed {
                                            retry_at: Instant::now() + retry,
                                        }
                                    }
                                };
                            }
                            drop(states);
                            sim.store.changed.notify_one();
                        });
                    }
                    Process::Failed { retry_at } => {
                        process_failed = true;
                        if now >= *retry_at {
                            state.process = Process::None;
                            at(now);
                        } else {
                            at(*retry_at);
                        }
                    }
                    _ => {}
                }
            }
            let process_port = match &state.process {
                Process::Running(p) => p.port,
                _ => None,
            };
            let process_ok = runner.is_none() || matches!(state.process, Process::Running(_));
            let containers_ready = started && !crash && !never_ready && process_ok;
            // As the kubelet: a pod with readiness gates is Ready only once every gate's
            // condition, written by someone else through the status subresource, is True.
            let gates_open = unmet_readiness_gates(pod).is_empty();
            let ready = containers_ready && gates_open;
            match (&state.ready_since, ready) {
                (None, true) => state.ready_since = Some((now, wall_now.clone())),
                (Some(_), false) => {
                    state.ready_since = None;
                    state.not_ready_since = wall_now.clone();
                }
                _ => {}
            }
            let ip = if process_port.is_some() {
                "127.0.0.1".to_string()
            } else {
                state.ip.clone()
            };
            let desired = self.pod_status(
                pod,
                state,
                started,
                containers_ready,
                crash || process_failed,
                &ip,
            );
            if differs(pod.get("status"), &desired) {
                let mut obj = (**pod).clone();
                obj["status"] = desired;
                let _ = self.store.update(
                    &ctx,
                    &pod_res,
                    "v1",
                    s(pod, "/metadata/namespace"),
                    s(pod, "/metadata/name"),
                    obj,
                    Some("status"),
                );
            }
        }
        next
    }

    /// Marks a pod's process as crashed when it exits on its own.
    async fn watch_exit(
        self: Arc<Self>,
        uid: String,
        seq: u64,
        exited: tokio::sync::oneshot::Receiver<String>,
        retry: Duration,
    ) {
        // A dropped sender means the process was stopped by us, not that it crashed.
        let Ok(reason) = exited.await else { return };
        let mut states = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = states.get_mut(&uid)
            && state.start_seq == seq
            && matches!(state.process, Process::Running(_))
            && state.terminating_since.is_none()
        {
            tracing::warn!(pod = %uid, reason = %reason, "pod process exited");
            state.restarts += 1;
            state.process = Process::Failed {
                retry_at: Instant::now() + retry,
            };
        }
        drop(states);
        self.store.changed.notify_one();
    }

    /// A Terminating pod: its process is stopped and it is not ready; once the termination delay
    /// (at most its grace period) has passed, it is removed, unless finalizers hold it.
    fn terminate(
        &self,
        pod: &Value,
        states: &mut HashMap<String, PodState>,
        settings: &SimSettings,
        now: Instant,
    ) -> Option<Instant> {
        let uid = s(pod, "/metadata/uid").to_string();
        let pod_res = self.res("", "pods");
        let ns = s(pod, "/metadata/namespace");
        let name = s(pod, "/metadata/name");
        let grace = Duration::from_secs(
            pod.pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        );
        let state = states.entry(uid).or_insert_with(|| PodState {
            seen: now,
            ip: String::new(),
            ready_since: None,
            not_ready_since: String::new(),
            started_at: String::new(),
            restarts: 0,
            next_restart: now,
            process: Process::None,
            terminating_since: None,
            start_seq: 0,
        });
        // Dropping the process stops it: the app got its SIGTERM.
        state.process = Process::None;
        let since = *state.terminating_since.get_or_insert(now);
        if self.is_ready(pod) {
            let mut obj = pod.clone();
            let wall = self.store.clock.now_rfc3339();
            for c in obj
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if matches!(s(c, "/type"), "Ready" | "ContainersReady") {
                    c["status"] = json!("False");
                    c["lastTransitionTime"] = json!(wall);
                }
            }
            for c in obj
                .pointer_mut("/status/containerStatuses")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                c["ready"] = json!(false);
            }
            let _ = self.store.update(
                &WriteCtx::manager("kubelet"),
                &pod_res,
                "v1",
                ns,
                name,
                obj,
                Some("status"),
            );
        }
        let done = since + settings.pod_termination_delay.min(grace);
        if now < done {
            return Some(done);
        }
        if pod
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty())
        {
            self.store.remove(&pod_res, ns, name);
        }
        None
    }

    fn pod_status(
        &self,
        pod: &Value,
        state: &PodState,
        started: bool,
        containers_ready: bool,
        crashing: bool,
        ip: &str,
    ) -> Value {
        let created = s(pod, "/metadata/creationTimestamp");
        let cond = |kind: &str, ok: bool, since: &str| json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": since});
        // Conditions the kubelet does not own (readiness gates') are kept as they were written.
        let foreign: Vec<Value> = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| !KUBELET_CONDITIONS.contains(&s(c, "/type")))
            .cloned()
            .collect();
        if !started {
            let mut conditions = vec![cond("PodScheduled", true, created)];
            conditions.extend(foreign);
            return json!({"phase": "Pending", "conditions": conditions, "qosClass": "BestEffort"});
        }
        let unmet = unmet_readiness_gates(pod);
        let ready = containers_ready && unmet.is_empty();
        let ready_time = state
            .ready_since
            .as_ref()
            .map(|(_, t)| t.as_str())
            .unwrap_or(state.not_ready_since.as_str());
        let mut ready_condition = cond("Ready", ready, ready_time);
        if containers_ready && !unmet.is_empty() {
            ready_condition["reason"] = json!("ReadinessGatesNotReady");
            ready_condition["message"] = json!(format!(
                "corev1.PodReadinessGate(s) not ready: {}",
                unmet.join(", ")
            ));
        }
        let containers: Vec<Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                let state_json = if crashing {
                    json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}})
                } else {
                    json!({"running": {"startedAt": state.started_at}})
                };
                json!({
                    "name": c.get("name"), "image": c.get("image"), "imageID": "", "containerID": format!("sim://{}", s(pod, "/metadata/uid")),
                    "ready": containers_ready, "started": !crashing, "restartCount": state.restarts, "state": state_json,
                })
            })
            .collect();
        let mut conditions = vec![
            cond("PodReadyToStartContainers", true, &state.started_at),
            cond("Initialized", true, created),
            ready_condition,
            cond("ContainersReady", containers_ready, ready_time),
            cond("PodScheduled", true, created),
        ];
        conditions.extend(foreign);
        let mut status = json!({
            "phase": "Running",
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": state.started_at,
            "containerStatuses": containers,
            "qosClass": "BestEffort",
        });
        if containers_empty(&status) {
            status
                .as_object_mut()
                .expect("object")
                .remove("containerStatuses");
        }
        status
    }

    /// The endpoints of a Service: pods matching its selector in its namespace that have an IP.
    pub fn service_endpoints(&self, ns: &str, service: &Value) -> Vec<EndpointAddress> {
        let Some(selector) = service
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty())
        else {
            return Vec::new();
        };
        let selector = LabelSelector::from_map(selector);
        let (pods, _) = self.store.list(&ResKey::new("", "pods"), Some(ns));
        pods.iter()
            .filter(|p| selector.matches(p) && !is_deleting(p) && !s(p, "/status/podIP").is_empty())
            .map(|p| EndpointAddress {
                pod: s(p, "/metadata/name").into(),
                ip: s(p, "/status/podIP").into(),
                ready: self.is_ready(p),
                process_port: self.process_port(s(p, "/metadata/uid")),
            })
            .collect()
    }

    /// discovery.k8s.io/v1 EndpointSlices for a Service: one per distinct port set, owned by the
    /// Service, labelled as the real endpointslice controller labels them.
    fn sync_endpoint_slices(&self, svc: &Value, groups: &BTreeMap<String, Subset>) {
        const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
        let slice_res = self.res("discovery.k8s.io", "endpointslices");
        let ctx = WriteCtx::manager("endpointslice-controller");
        let ns = s(svc, "/metadata/namespace");
        let svc_name = s(svc, "/metadata/name");
        let mut desired: BTreeMap<String, Value> = BTreeMap::new();
        for (key, (ready, not_ready, ports)) in groups {
            let name = format!("{svc_name}-{}", &template_hash(&json!(key))[..5]);
            let endpoints: Vec<Value> = ready
                .iter()
                .map(|a| (a, true))
                .chain(not_ready.iter().map(|a| (a, false)))
                .map(|(a, ok)| {
                    json!({"addresses": [a["ip"]], "conditions": {"ready": ok, "serving": ok, "terminating": false}, "targetRef": a["targetRef"]})
                })
                .collect();
            desired.insert(
                name,
                json!({"addressType": "IPv4", "endpoints": endpoints, "ports": ports}),
            );
        }
        let (slices, _) = self.store.list(&slice_res.key(), Some(ns));
        for slice in slices.iter() {
            let ours = s(slice, "/metadata/labels/kubernetes.io~1service-name") == svc_name
                && s(
                    slice,
                    "/metadata/labels/endpointslice.kubernetes.io~1managed-by",
                ) == MANAGED_BY;
            if ours && !desired.contains_key(s(slice, "/metadata/name")) && !is_deleting(slice) {
                let _ = self.store.delete(
                    &slice_res,
                    ns,
                    s(slice, "/metadata/name"),
                    &DeleteOpts::default(),
                );
            }
        }
        for (name, body) in desired {
            match self.store.get(&slice_res.key(), ns, &name) {
                Some(live)
                    if ["addressType", "endpoints", "ports"]
                        .iter()
                        .all(|k| live.get(*k) == body.get(*k)) => {}
                Some(live) => {
                    let mut obj = (*live).clone();
                    for k in ["addressType", "endpoints", "ports"] {
                        obj[k] = body[k].clone();
                    }
                    let _ = self
                        .store
                        .update(&ctx, &slice_res, "v1", ns, &name, obj, None);
                }
                None => {
                    let mut obj = body;
                    obj["apiVersion"] = json!("discovery.k8s.io/v1");
                    obj["kind"] = json!("EndpointSlice");
                    obj["metadata"] = json!({
                        "name": name, "namespace": ns,
                        "labels": {"kubernetes.io/service-name": svc_name, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
                        "ownerReferences": [owner_ref(svc, "v1", "Service")],
                    });
                    let _ = self.store.create(&ctx, &slice_res, "v1", ns, obj);
                }
            }
        }
    }

    fn endpoints(&self) {
        let svc_res = self.res("", "services");
        let ep_res = self.res("", "endpoints");
        let (services, _) = self.store.list(&svc_res.key(), None);
        let ctx = WriteCtx::manager("endpoint-controller");
        for svc in services.iter() {
            if svc
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
            {
                continue;
            }
            let ns = s(svc, "/metadata/namespace");
            let name = s(svc, "/metadata/name");
            let (pod_list, _) = self.store.list(&ResKey::new("", "pods"), Some(ns));
            let pods: HashMap<&str, &Value> = pod_list
                .iter()
                .map(|p| (s(p, "/metadata/name"), p.as_ref()))
                .collect();
            // Group addresses by their resolved ports, as the endpoints controller does.
            let mut subsets: BTreeMap<String, Subset> = BTreeMap::new();
            for ep in self.service_endpoints(ns, svc) {
                // The pod may have appeared between the two reads; the next pass will see it.
                let Some(&pod) = pods.get(ep.pod.as_str()) else {
                    continue;
                };
                let ports: Vec<Value> = svc
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let port = ep.process_port.map(i64::from).unwrap_or_else(|| resolve_target_port(p, pod));
                        let mut out = json!({"port": port, "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP"))});
                        if let Some(n) = p.get("name") {
                            out["name"] = n.clone();
                        }
                        out
                    })
                    .collect();
                let key = serde_json::to_string(&ports).unwrap_or_default();
                let entry = subsets
                    .entry(key)
                    .or_insert_with(|| (Vec::new(), Vec::new(), ports));
                let address = json!({"ip": ep.ip, "targetRef": {"kind": "Pod", "namespace": ns, "name": ep.pod, "uid": s(pod, "/metadata/uid")}});
                if ep.ready {
                    entry.0.push(address);
                } else {
                    entry.1.push(address);
                }
            }
            self.sync_endpoint_slices(svc, &subsets);
            let subsets: Vec<Value> = subsets
                .into_values()
                .map(|(ready, not_ready, ports)| {
                    let mut subset = json!({"ports": ports});
                    if !ready.is_empty() {
                        subset["addresses"] = json!(ready);
                    }
                    if !not_ready.is_empty() {
                        subset["notReadyAddresses"] = json!(not_ready);
                    }
                    subset
                })
                .collect();
            let existing = self.store.get(&ep_res.key(), ns, name);
            let desired_subsets = if subsets.is_empty() {
                None
            } else {
                Some(json!(subsets))
            };
            match existing {
                Some(ep) if ep.get("subsets") == desired_subsets.as_ref() => {}
                Some(ep) => {
                    let mut obj = (*ep).clone();
                    match &desired_subsets {
                        Some(sub) => obj["subsets"] = sub.clone(),
                        None => {
                            obj.as_object_mut().expect("object").remove("subsets");
                        }
                    }
                    obj["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] =
                        json!(self.store.clock.now_rfc3339());
                    let _ = self.store.update(&ctx, &ep_res, "v1", ns, name, obj, None);
                }
                None => {
                    let mut obj = json!({
                        "apiVersion": "v1", "kind": "Endpoints",
                        "metadata": {"name": name, "namespace": ns, "labels": svc.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": self.store.clock.now_rfc3339()}},
                    });
                    if let Some(sub) = desired_subsets {
                        obj["subsets"] = sub;
                    }
                    let _ = self.store.create(&ctx, &ep_res, "v1", ns, obj);
                }
            }
        }
        // Endpoints this controller made whose Service is gone.
        let (all_eps, _) = self.store.list(&ep_res.key(), None);
        for ep in all_eps.iter() {
            let ns = s(ep, "/metadata/namespace");
            let name = s(ep, "/metadata/name");
            let managed = ep
                .pointer("/metadata/annotations/endpoints.kubernetes.io~1last-change-trigger-time")
                .is_some();
            if managed && !is_deleting(ep) && self.store.get(&svc_res.key(), ns, name).is_none() {
                let _ = self.store.delete(&ep_res, ns, name, &DeleteOpts::default());
            }
        }
    }
}

fn containers_empty(status: &Value) -> bool {
    status
        .get("containerStatuses")
        .and_then(Value::as_array)
        .is_some_and(|c| c.is_empty())
}

/// The container port a Service port sends to on one pod.
fn resolve_target_port(port: &Value, pod: &Value) -> i64 {
    let service_port = port.get("port").and_then(Value::as_i64).unwrap_or(0);
    match port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(service_port),
        Some(Value::String(name)) => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
            .unwrap_or(service_port),
        _ => service_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_annotations_are_written() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn template_hash_is_stable_and_sensitive() {
        let a = json!({"spec": {"containers": [{"name": "app", "image": "v1"}]}});
        let b = json!({"spec": {"containers": [{"name": "app", "image": "v2"}]}});
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
    }
}
