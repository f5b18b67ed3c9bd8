//! [`TestCluster`]: the handle a test (or the standalone binary) uses to run the API server and
//! the simulated workloads, get clients, load CRDs and drive the test controls.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::controls::{Controls, Fault, WriteRecord};
use crate::error::ClusterError;
use crate::patch::PatchType;
use crate::server::{AppState, ServerSettings, router};
use crate::sim::{EndpointAddress, PodRunner, Sim, SimSettings};
use crate::store::{Store, WriteCtx};

/// How to start a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct TestClusterBuilder {
    sim: SimSettings,
    server: ServerSettings,
    history_limit: usize,
    simulate: bool,
    port: u16,
    crds: Vec<Value>,
    clock: Option<Clock>,
}

impl Default for TestClusterBuilder {
    fn default() -> Self {
        Self {
            sim: SimSettings::default(),
            server: ServerSettings::default(),
            history_limit: 10_000,
            simulate: true,
            port: 0,
            crds: Vec::new(),
            clock: None,
        }
    }
}

impl TestClusterBuilder {
    /// Settings of the simulated kubelet and controllers (ready delay, crash interval).
    pub fn sim_settings(mut self, settings: SimSettings) -> Self {
        self.sim = settings;
        self
    }

    pub fn pod_ready_delay(mut self, delay: std::time::Duration) -> Self {
        self.sim.pod_ready_delay = delay;
        self
    }

    pub fn bookmark_interval(mut self, interval: std::time::Duration) -> Self {
        self.server.bookmark_interval = interval;
        self
    }

    /// How many watch events are kept for resuming watches; older versions get 410 Expired.
    pub fn watch_history(mut self, events: usize) -> Self {
        self.history_limit = events.max(1);
        self
    }

    /// Serve the API only, with no simulated controllers or kubelet.
    pub fn without_simulation(mut self) -> Self {
        self.simulate = false;
        self
    }

    /// Listen on this loopback port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// A CRD (as JSON) installed before the cluster starts serving.
    pub fn crd(mut self, crd: Value) -> Self {
        self.crds.push(crd);
        self
    }

    /// Start wall time of the cluster clock (it then advances with tokio's clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    pub async fn start(self) -> Result<TestCluster, ClusterError> {
        let clock = self.clock.unwrap_or_default();
        let store = Store::new(clock, self.history_limit);
        for crd in self.crds {
            install_crd(&store, crd).map_err(|message| ClusterError::RejectedCrd {
                path: "<builder>".into(),
                message,
            })?;
        }
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], self.port)))
            .await
            .map_err(ClusterError::Bind)?;
        let addr = listener.local_addr().map_err(ClusterError::Bind)?;
        let controls = Arc::new(Controls::default());
        let (epoch, _) = tokio::sync::watch::channel(0u64);
        let state = AppState {
            store: store.clone(),
            controls: controls.clone(),
            watch_epoch: Arc::new(epoch),
            settings: self.server,
            address: addr.to_string(),
        };
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "test cluster api server stopped");
            }
        });
        let sim = Sim::new(store.clone(), self.sim);
        let sim_task = self.simulate.then(|| tokio::spawn(sim.clone().run()));
        let url = format!("http://{addr}");
        let config = kube::Config::new(
            url.parse()
                .map_err(|_| ClusterError::Api(format!("bad url {url}")))?,
        );
        let client = kube::Client::try_from(config).map_err(ClusterError::Client)?;
        Ok(TestCluster {
            addr,
            url,
            state,
            sim,
            client,
            tasks: [Some(server), sim_task].into_iter().flatten().collect(),
        })
    }
}

/// Installs (or updates) a CRD directly in the store, as `kubectl apply` would.
fn install_crd(store: &Store, crd: Value) -> Result<(), String> {
    let res = store
        .resource("apiextensions.k8s.io", "customresourcedefinitions")
        .expect("crds are built in");
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    store
        .patch(
            &WriteCtx::manager("sluice-test-cluster"),
            &res,
            "v1",
            "",
            &name,
            PatchType::Apply,
            &crd,
            None,
        )
        .map(|_| ())
        .map_err(|e| e.message)
}

/// A running test cluster: an API server on 127.0.0.1 and the simulated workloads.
///
/// ```text
/// let cluster = TestCluster::start().await?;
/// cluster.load_crds_from_dir("../crds")?;
/// let client = cluster.client();
/// cluster.inject(Fault::fail(409).verb("update").resource("replicasets"));
/// let writes = cluster.writes();
/// ```
pub struct TestCluster {
    addr: SocketAddr,
    url: String,
    state: AppState,
    sim: Arc<Sim>,
    client: kube::Client,
    tasks: Vec<JoinHandle<()>>,
}

impl TestCluster {
    /// Starts a cluster with default settings on a free port.
    pub async fn start() -> Result<Self, ClusterError> {
        TestClusterBuilder::default().start().await
    }

    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client built from [`Self::config`] (the same layers as production: kube's default retry
    /// of 429/503/504 is on).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kube config pointing at this cluster.
    pub fn config(&self) -> kube::Config {
        kube::Config::new(self.url.parse().expect("the url was parsed at start"))
    }

    /// A client whose requests carry `identity` (as `Impersonate-User`), so the write log can
    /// tell which client wrote (e.g. which of two controller replicas).
    pub fn client_as(&self, identity: &str) -> Result<kube::Client, ClusterError> {
        let mut config = self.config();
        config.auth_info.impersonate = Some(identity.to_string());
        kube::Client::try_from(config).map_err(ClusterError::Client)
    }

    /// A kubeconfig for `kubectl` and other tools.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sluice-test\n  cluster:\n    server: {url}\ncontexts:\n- name: sluice-test\n  context:\n    cluster: sluice-test\n    user: sluice-test\n    namespace: default\ncurrent-context: sluice-test\nusers:\n- name: sluice-test\n  user: {{}}\n",
            url = self.url
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), ClusterError> {
        std::fs::write(path, self.kubeconfig_yaml()).map_err(|source| {
            ClusterError::WriteKubeconfig {
                path: path.display().to_string(),
                source,
            }
        })
    }

    /// Installs a CRD given as JSON (or created from a kube `CustomResourceExt::crd()`).
    pub fn install_crd(&self, crd: Value) -> Result<(), ClusterError> {
        install_crd(&self.state.store, crd).map_err(|message| ClusterError::RejectedCrd {
            path: "<value>".into(),
            message,
        })
    }

    /// Installs every CRD in a YAML file (multi-document files are fine).
    pub fn load_crd_file(&self, path: &Path) -> Result<usize, ClusterError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::ReadCrd {
            path: display.clone(),
            source,
        })?;
        let mut count = 0;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::from_value::<Value>(
                serde::Deserialize::deserialize(doc).map_err(|source| ClusterError::ParseCrd {
                    path: display.clone(),
                    source,
                })?,
            )
            .map_err(|source| ClusterError::ParseCrd {
                path: display.clone(),
                source,
            })?;
            if value.is_null() {
                continue;
            }
            if value.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                continue;
            }
            install_crd(&self.state.store, value).map_err(|message| ClusterError::RejectedCrd {
                path: display.clone(),
                message,
            })?;
            count += 1;
        }
        Ok(count)
    }

    /// Installs every `*.yaml` / `*.yml` CRD in a directory (e.g. the repository's `crds/`).
    pub fn load_crds_from_dir(&self, dir: &Path) -> Result<usize, ClusterError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ClusterError::ReadCrd {
            path: dir.display().to_string(),
            source,
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        paths.sort();
        let mut count = 0;
        for path in paths {
            count += self.load_crd_file(&path)?;
        }
        Ok(count)
    }

    /// Installs the CRDs shipped with this crate in `e2e/crds`: Istio's `VirtualService` and
    /// `DestinationRule`, and the Gateway API's `HTTPRoute`, `GRPCRoute`, `TCPRoute`, `TLSRoute` and
    /// `ReferenceGrant`.
    pub fn install_istio_crds(&self) -> Result<usize, ClusterError> {
        self.load_crds_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
    }

    /// Arms a fault for the next matching requests.
    pub fn inject(&self, fault: Fault) {
        self.state.controls.inject(fault)
    }

    pub fn clear_faults(&self) {
        self.state.controls.clear_faults()
    }

    /// Faults not yet consumed.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.state.controls.pending_faults()
    }

    /// Every write request so far, in order.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.state.controls.writes()
    }

    /// How many requests the server got, by `"<verb> <plural>"` (e.g. `"list widgets"`), plus
    /// `"expired <plural>"` for watches answered with 410 Expired.
    pub fn request_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.state.controls.counts()
    }

    pub fn clear_writes(&self) {
        self.state.controls.clear_writes()
    }

    /// Delivers every later watch event of `plural` `lag` late (`Duration::ZERO` ends it): one
    /// watch behind the others, as can happen on a loaded API server.
    pub fn lag_watch(&self, plural: &str, lag: std::time::Duration) {
        self.state.controls.lag_watch(plural, lag)
    }

    /// Ends every open watch stream (clients resume from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.state.watch_epoch.send_modify(|e| *e += 1);
    }

    /// Forgets the watch history, so a watch resumed from any earlier version gets a 410 Expired
    /// ERROR event and the client must relist.
    pub fn expire_watch_history(&self) {
        self.state.store.compact();
    }

    /// Attaches a process to every pod as it becomes ready (see [`PodRunner`]).
    pub fn set_pod_runner(&self, runner: impl PodRunner) {
        self.sim.set_runner(Some(Arc::new(runner)));
    }

    pub fn clear_pod_runner(&self) {
        self.sim.set_runner(None);
    }

    pub fn sim_settings(&self) -> SimSettings {
        self.sim.settings()
    }

    pub fn set_sim_settings(&self, settings: SimSettings) {
        self.sim.set_settings(settings)
    }

    /// The endpoints of a Service, with readiness and attached process ports.
    pub fn endpoints(&self, namespace: &str, service: &str) -> Vec<EndpointAddress> {
        match self.state.store.get(
            &crate::resources::ResKey::new("", "services"),
            namespace,
            service,
        ) {
            Some(svc) => self.sim.service_endpoints(namespace, &svc),
            None => Vec::new(),
        }
    }

    /// Turns enforcement of CRDs' CEL rules (`x-kubernetes-validations`) on or off (on by
    /// default). Off lets a test store an object a real API server would refuse, e.g. to model
    /// one written before a CRD upgrade added the rule.
    pub fn set_cel_rules(&self, enforce: bool) {
        self.state
            .store
            .cel_rules
            .store(enforce, std::sync::atomic::Ordering::Relaxed);
    }

    /// The cluster clock (follows tokio's clock, so a paused runtime controls it).
    pub fn clock(&self) -> Clock {
        self.state.store.clock
    }

    /// Direct access to the object store, for assertions that need no HTTP round trip.
    pub fn store(&self) -> &Arc<Store> {
        &self.state.store
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.store.current_rv()
    }

    /// A raw JSON object from the store, as served at its stored version.
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .store
            .get(
                &crate::resources::ResKey::new(group, plural),
                namespace,
                name,
            )
            .map(|v| (*v).clone())
    }

    /// Server-side applies an object straight into the store (manager `sluice-test-cluster`),
    /// bypassing HTTP, faults and the write log: for seeding fixtures, also under a paused clock.
    pub fn apply_object(&self, obj: Value) -> Result<Value, ClusterError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let res = self
            .state
            .store
            .resources()
            .into_iter()
            .find(|r| r.group == group && r.kind == kind && r.version(version).is_some())
            .ok_or_else(|| ClusterError::Api(format!("no resource serves {api_version} {kind}")))?;
        let ns = if res.namespaced {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.state
            .store
            .patch(
                &WriteCtx::manager("sluice-test-cluster"),
                &res,
                version,
                &ns,
                &name,
                PatchType::Apply,
                &obj,
                None,
            )
            .map(|ok| ok.object)
            .map_err(|e| ClusterError::Api(e.message))
    }

    /// Stops the server and the simulated controllers.
    pub fn shutdown(&mut self) {
        self.drop_watches();
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A minimal namespaced CRD for tests: group `e2e.sluice.dev`, kind `Widget`.
pub fn example_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.e2e.sluice.dev"},
        "spec": {
            "group": "e2e.sluice.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": ["wdg"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "x-kubernetes-validations": [
                                {"rule": "!has(self.items) || size(self.items) == 0 || self.size == 'large'", "message": "items need a large widget"}
                            ],
                            "properties": {
                                "size": {"type": "string", "enum": ["small", "large"]},
                                "replicas": {"type": "integer", "minimum": 0, "maximum": 100, "default": 1},
                                "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$", "maxLength": 20,
                                    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "name is immutable"}]},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "items": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "replicas": {"type": "integer"},
                                "selector": {"type": "string"},
                                "phase": {"type": "string"}
                            }
                        }
                    }
                }}
            }]
        }
    })
}
