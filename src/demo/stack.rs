//! The local closed loop: the test cluster with Sluice's CRDs, one app server per ready pod, a
//! real nginx following the Ingresses and VirtualServices, a real Prometheus scraping nginx's
//! metrics every second, the controller, and a load generator. Used by `sluice demo`, the
//! closed-loop tests and the closed-loop benchmark. Everything stops when the stack is dropped.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use serde::Deserialize as _;
use serde_json::Value;
use sluice_e2e::TestCluster;
use sluice_e2e::dataplane::DataPlane;
use sluice_e2e::demo_app::AppRunner;
use sluice_e2e::loadgen::LoadGenerator;
use sluice_e2e::prometheus::PrometheusServer;

use crate::api::rollout::Rollout;
use crate::controller::{self, ControllerConfig, Running};
use crate::metrics::prometheus::{AddressAllowlist, PrometheusConfig};

/// The ready-made AnalysisTemplates of `analysis-templates/`, by file name.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "nginx-success-rate.yaml",
        include_str!("../../analysis-templates/nginx-success-rate.yaml"),
    ),
    (
        "nginx-latency.yaml",
        include_str!("../../analysis-templates/nginx-latency.yaml"),
    ),
    (
        "istio-success-rate.yaml",
        include_str!("../../analysis-templates/istio-success-rate.yaml"),
    ),
    (
        "istio-latency.yaml",
        include_str!("../../analysis-templates/istio-latency.yaml"),
    ),
    (
        "gateway-api-success-rate.yaml",
        include_str!("../../analysis-templates/gateway-api-success-rate.yaml"),
    ),
    (
        "gateway-api-latency.yaml",
        include_str!("../../analysis-templates/gateway-api-latency.yaml"),
    ),
];

/// A template of [`TEMPLATES`] by name, with every metric's `interval` (and `initialDelay`, when
/// given) replaced: the shipped templates measure every 30 s, the local loop every second or so.
pub fn template(name: &str, interval: &str, initial_delay: Option<&str>) -> anyhow::Result<Value> {
    let (_, text) = TEMPLATES
        .iter()
        .find(|(file, _)| file.trim_end_matches(".yaml") == name)
        .with_context(|| format!("no template {name}"))?;
    let mut v: Value = serde_yaml::from_str(text)?;
    if let Some(metrics) = v.pointer_mut("/spec/metrics").and_then(Value::as_array_mut) {
        for m in metrics {
            m["interval"] = Value::from(interval);
            if let Some(d) = initial_delay {
                m["initialDelay"] = Value::from(d);
            }
        }
    }
    Ok(v)
}

/// How far [`LocalStack::start_reporting`] is.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// `part` ("API server", "nginx", "Prometheus", "controller") is starting.
    Starting(&'a str),
    /// The part that was starting is up.
    Ready {
        /// Where it listens (empty for the controller).
        address: String,
        /// How long it took to start.
        took: Duration,
    },
}

/// The running local closed loop.
pub struct LocalStack {
    /// The API server and simulated workloads.
    pub cluster: TestCluster,
    /// nginx and its metrics.
    pub dataplane: DataPlane,
    /// Prometheus, scraping the data plane every second.
    pub prometheus: PrometheusServer,
    controller: Option<Running>,
    controller_config: ControllerConfig,
}

impl LocalStack {
    /// Starts everything (installing nginx and Prometheus with apt-get when missing); the
    /// controller too.
    pub async fn start() -> anyhow::Result<LocalStack> {
        Self::start_reporting(&mut |_| ()).await
    }

    /// [`Self::start`], calling `progress` as each part starts and is up (the demo prints it: starting takes
    /// long enough that silence would look like a hang).
    pub async fn start_reporting(
        progress: &mut (dyn FnMut(Progress<'_>) + Send),
    ) -> anyhow::Result<LocalStack> {
        let mut started = Instant::now();
        progress(Progress::Starting("API server"));
        let cluster = TestCluster::builder()
            .pod_ready_delay(Duration::from_millis(300))
            .start()
            .await
            .context("start the test cluster")?;
        for (_, crd) in crate::crdgen::all() {
            cluster
                .install_crd(serde_json::to_value(&crd)?)
                .context("install a CRD")?;
        }
        cluster.install_istio_crds().context("install Istio CRDs")?;
        cluster.set_pod_runner(AppRunner);
        progress(Progress::Ready {
            address: cluster.url().to_string(),
            took: started.elapsed(),
        });
        started = Instant::now();
        progress(Progress::Starting("nginx"));
        let dataplane = DataPlane::start(cluster.client())
            .await
            .context("start nginx")?;
        progress(Progress::Ready {
            address: format!("http://{}", dataplane.ingress_addr()),
            took: started.elapsed(),
        });
        started = Instant::now();
        progress(Progress::Starting("Prometheus"));
        let prometheus = PrometheusServer::start(&[dataplane.metrics_addr()])
            .await
            .context("start prometheus")?;
        progress(Progress::Ready {
            address: prometheus.url(),
            took: started.elapsed(),
        });
        let controller_config = ControllerConfig {
            prometheus: PrometheusConfig {
                allowlist: AddressAllowlist::new([prometheus.url()])?,
                default_address: Some(prometheus.url()),
            },
            ..ControllerConfig::default()
        };
        let mut stack = LocalStack {
            cluster,
            dataplane,
            prometheus,
            controller: None,
            controller_config,
        };
        started = Instant::now();
        progress(Progress::Starting("controller"));
        stack.start_controller().await?;
        progress(Progress::Ready {
            address: String::new(),
            took: started.elapsed(),
        });
        Ok(stack)
    }

    /// A client of the cluster.
    pub fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    /// Starts the controller (after [`Self::kill_controller`]).
    pub async fn start_controller(&mut self) -> anyhow::Result<()> {
        let client = crate::kube_client::client(
            self.cluster.config(),
            &crate::kube_client::controller_user_agent(),
            None,
        )
        .context("controller client")?;
        let running = controller::start(client, self.controller_config.clone())
            .await
            .context("start the controller")?;
        self.controller = Some(running);
        Ok(())
    }

    /// Kills the controller wherever it is, as a killed process would stop.
    pub fn kill_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            c.abort();
        }
    }

    /// Server-side applies every document of `yaml` (manager `sluice-demo`, forced), as
    /// `kubectl apply --server-side` would.
    pub async fn apply_yaml(&self, yaml: &str) -> anyhow::Result<()> {
        apply_yaml(&self.client(), yaml).await
    }

    /// Server-side applies one object.
    pub async fn apply(&self, v: Value) -> anyhow::Result<()> {
        apply(&self.client(), v).await
    }
    /// A Rollout.
    pub async fn rollout(&self, ns: &str, name: &str) -> anyhow::Result<Rollout> {
        Ok(Api::<Rollout>::namespaced(self.client(), ns)
            .get(name)
            .await?)
    }

    /// Waits until `cond` holds for the Rollout, returning it; fails after `timeout` with its
    /// status.
    pub async fn wait_rollout(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
        cond: impl Fn(&Rollout) -> bool,
    ) -> anyhow::Result<Rollout> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.rollout(ns, name).await
                && cond(&r)
            {
                return Ok(r);
            }
            if Instant::now() > deadline {
                let r = self.rollout(ns, name).await.ok();
                anyhow::bail!(
                    "timed out after {}s; status: {:?}",
                    timeout.as_secs(),
                    r.and_then(|r| r.status)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts sending `rate` requests/s through the ingress port with `Host: host`.
    pub fn load(&self, host: &str, rate: u32) -> LoadGenerator {
        LoadGenerator::start(self.dataplane.ingress_addr(), host, rate)
    }

    /// Starts sending `rate` requests/s through the gateway port (HTTPRoutes) with `Host: host`.
    pub fn gateway_load(&self, host: &str, rate: u32) -> LoadGenerator {
        LoadGenerator::start(self.dataplane.gateway_addr(), host, rate)
    }

    /// Starts sending `rate` requests/s through the mesh port with `Host: host`.
    pub fn mesh_load(&self, host: &str, rate: u32) -> LoadGenerator {
        LoadGenerator::start(self.dataplane.mesh_addr(), host, rate)
    }
}

/// Server-side applies every document of `yaml` (manager `sluice-demo`, forced), as
/// `kubectl apply --server-side --force-conflicts` would.
pub async fn apply_yaml(client: &kube::Client, yaml: &str) -> anyhow::Result<()> {
    // Parse everything first: the YAML parser cannot be held across an await on another thread.
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    for v in docs {
        apply(client, v).await?;
    }
    Ok(())
}

/// Server-side applies one object.
pub async fn apply(client: &kube::Client, v: Value) -> anyhow::Result<()> {
    let client = client.clone();
    let api_version = v["apiVersion"].as_str().unwrap_or_default();
    let kind = v["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let (ar, caps) = pinned_kind(&client, &GroupVersionKind::gvk(group, version, kind))
        .await
        .with_context(|| format!("discover {api_version} {kind}"))?;
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
        let ns = v
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        Api::namespaced_with(client, ns, &ar)
    } else {
        Api::all_with(client, &ar)
    };
    api.patch(
        &name,
        &PatchParams::apply("sluice-demo").force(),
        &Patch::Apply(&v),
    )
    .await
    .with_context(|| format!("apply {kind} {name}"))?;
    Ok(())
}

/// The sample application behind an NGINX Ingress: Services `web-stable` and `web-canary`, the
/// Ingress `web` (host `web.example`), in namespace `ns`.
pub fn nginx_app(ns: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-stable, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-canary, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: {ns}
  annotations: {{kubernetes.io/ingress.class: nginx}}
spec:
  rules:
  - host: web.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: web-stable, port: {{number: 80}}}}}}
"#
    )
}

/// The sample application behind a Gateway API HTTPRoute: Services `web-stable` and
/// `web-canary`, the HTTPRoute `web` (host `web.example`, one rule: 100% to `web-stable`), in
/// namespace `ns`.
pub fn gateway_app(ns: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-stable, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-canary, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
{}"#,
        gateway_route(ns)
    )
}

/// The HTTPRoute of [`gateway_app`] alone, as it is kept in Git.
pub fn gateway_route(ns: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: {ns}}}
spec:
  parentRefs: [{{name: gateway}}]
  hostnames: [web.example]
  rules:
  - name: main
    matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs:
    - {{name: web-stable, port: 80, weight: 100}}
    - {{name: web-canary, port: 80, weight: 0}}
"#
    )
}

/// A Rollout of the sample app (`replicas` pods of image `web:<version>`), canary strategy
/// `canary_yaml` (indented by 6 spaces: under `strategy.canary`), pod annotations given.
pub fn rollout_yaml(
    ns: &str,
    replicas: i32,
    version: &str,
    annotations: &[(&str, &str)],
    canary_yaml: &str,
) -> String {
    let ann = annotations
        .iter()
        .map(|(k, v)| format!("\"{k}\": \"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
      annotations: {{{ann}}}
    spec:
      containers: [{{name: web, image: "web:{version}"}}]
  strategy:
    canary:
{canary_yaml}"#
    )
}

/// One observed state of a Rollout.
#[derive(Debug, Clone)]
pub struct Observed {
    /// When it was first seen.
    pub at: Instant,
    /// `status.currentStepIndex`.
    pub step: Option<i32>,
    /// The canary weight in status.
    pub weight: i32,
    /// `status.phase`.
    pub phase: String,
    /// `status.message`.
    pub message: String,
}

/// Records every change of a Rollout's step, weight and phase, polling every 100 ms.
pub struct Timeline {
    states: std::sync::Arc<std::sync::Mutex<Vec<Observed>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Timeline {
    /// Starts recording.
    pub fn start(client: kube::Client, ns: &str, name: &str) -> Timeline {
        let states = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Observed>::new()));
        let out = states.clone();
        let api: Api<Rollout> = Api::namespaced(client, ns);
        let name = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(r) = api.get(&name).await {
                    let st = r.status.unwrap_or_default();
                    let o = Observed {
                        at: Instant::now(),
                        step: st.current_step_index,
                        weight: st.canary.weights.as_ref().map_or(0, |w| w.canary.weight),
                        phase: st.phase.map(|p| p.as_str().to_string()).unwrap_or_default(),
                        message: st.message.unwrap_or_default(),
                    };
                    if let Ok(mut v) = out.lock() {
                        let same = v.last().is_some_and(|l: &Observed| {
                            l.step == o.step && l.weight == o.weight && l.phase == o.phase
                        });
                        if !same {
                            v.push(o);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Timeline { states, task }
    }

    /// Every change so far.
    pub fn states(&self) -> Vec<Observed> {
        self.states.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The intervals `[from, to)` during which the canary weight was `weight` (`to` is now for
    /// the current one).
    pub fn intervals_at(&self, weight: i32) -> Vec<(Instant, Instant)> {
        let states = self.states();
        let mut out = Vec::new();
        for (i, s) in states.iter().enumerate() {
            if s.weight != weight {
                continue;
            }
            let end = states.get(i + 1).map_or_else(Instant::now, |n| n.at);
            match out.last_mut() {
                Some((_, e)) if *e == s.at => *e = end,
                _ => out.push((s.at, end)),
            }
        }
        out
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}
