//! A real nginx as the data plane of the test cluster, driven by Ingresses, VirtualServices and
//! HTTPRoutes, and its access log turned into ingress-nginx's, Istio's and Gateway API metrics.
//!
//! ```text
//! let dp = DataPlane::start(cluster.client()).await?;   // nginx on free loopback ports
//! let prom = PrometheusServer::start(&[dp.metrics_addr()]).await?;
//! // requests: http://{dp.ingress_addr()} (Host: the Ingress host), http://{dp.mesh_addr()}
//! // (Host: a VirtualService host), http://{dp.gateway_addr()} (Host: an HTTPRoute hostname)
//! ```
//!
//! The cluster is polled every 200 ms (Ingresses, VirtualServices, DestinationRules, HTTPRoutes,
//! ReferenceGrants, Services, Endpoints, Pods); when the rendered configuration changes it is written and nginx is reloaded
//! (`nginx -s reload`). nginx runs with its own prefix, pid file and configuration in a temporary
//! directory and is killed when the [`DataPlane`] is dropped.
//!
//! Metrics served on `/metrics` (same names and labels as in a real cluster, so the same PromQL
//! works in both):
//! - `nginx_ingress_controller_requests{ingress,namespace,service,status,canary}` and the
//!   `nginx_ingress_controller_request_duration_seconds` histogram. As in ingress-nginx, `ingress`
//!   and `service` name the main Ingress and its Service also for requests routed to the canary;
//!   `canary` is then the canary upstream (`<namespace>-<canary service>-80`), else empty.
//! - `istio_requests_total{reporter="destination",destination_service_name,
//!   destination_service_namespace,destination_workload,destination_version,response_code}` and
//!   the `istio_request_duration_milliseconds` histogram, for requests through VirtualServices.
//! - `gateway_api_http_requests_total{route_kind,route_namespace,route_name,route_rule,
//!   backend_namespace,backend_name,response_code}` and the
//!   `gateway_api_http_request_duration_seconds` histogram, for requests through HTTPRoutes:
//!   one series per route rule and backend Service, mirrored copies counted on the mirror's
//!   backend (see docs/demo.md for how this maps onto real Gateway API implementations).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::task::JoinHandle;

use crate::nginx_render::{self, BackendIds, Endpoint, Model, Ports};

/// What went wrong starting or driving nginx.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("cannot install nginx: {0}")]
    Install(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("nginx did not start: {0}")]
    Start(String),
}

fn io_err(context: &str) -> impl FnOnce(std::io::Error) -> DataPlaneError + '_ {
    move |source| DataPlaneError::Io {
        context: context.to_string(),
        source,
    }
}

/// ingress-nginx's request duration buckets (seconds).
pub const NGINX_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Istio's request duration buckets (milliseconds).
pub const ISTIO_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.len() < bounds.len() {
            self.buckets.resize(bounds.len(), 0);
        }
        for (i, le) in bounds.iter().enumerate() {
            if v <= *le {
                self.buckets[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// Label set rendered in order.
type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct Metrics {
    nginx_requests: BTreeMap<Labels, u64>,
    nginx_duration: BTreeMap<Labels, Histogram>,
    istio_requests: BTreeMap<Labels, u64>,
    istio_duration: BTreeMap<Labels, Histogram>,
    gateway_requests: BTreeMap<Labels, u64>,
    gateway_duration: BTreeMap<Labels, Histogram>,
    lines: u64,
}

fn labels_text(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn render_histograms(
    out: &mut String,
    name: &str,
    bounds: &[f64],
    series: &BTreeMap<Labels, Histogram>,
) {
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, h) in series {
        for (i, le) in bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                labels_text(labels, Some(("le", le.to_string()))),
                h.buckets.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{} {}",
            labels_text(labels, Some(("le", "+Inf".into()))),
            h.count
        );
        let _ = writeln!(out, "{name}_sum{} {}", labels_text(labels, None), h.sum);
        let _ = writeln!(out, "{name}_count{} {}", labels_text(labels, None), h.count);
    }
}

impl Metrics {
    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE nginx_ingress_controller_requests counter\n");
        for (l, v) in &self.nginx_requests {
            let _ = writeln!(
                out,
                "nginx_ingress_controller_requests{} {v}",
                labels_text(l, None)
            );
        }
        render_histograms(
            &mut out,
            "nginx_ingress_controller_request_duration_seconds",
            NGINX_BUCKETS,
            &self.nginx_duration,
        );
        out.push_str("# TYPE istio_requests_total counter\n");
        for (l, v) in &self.istio_requests {
            let _ = writeln!(out, "istio_requests_total{} {v}", labels_text(l, None));
        }
        render_histograms(
            &mut out,
            "istio_request_duration_milliseconds",
            ISTIO_BUCKETS,
            &self.istio_duration,
        );
        out.push_str("# TYPE gateway_api_http_requests_total counter\n");
        for (l, v) in &self.gateway_requests {
            let _ = writeln!(
                out,
                "gateway_api_http_requests_total{} {v}",
                labels_text(l, None)
            );
        }
        render_histograms(
            &mut out,
            "gateway_api_http_request_duration_seconds",
            NGINX_BUCKETS,
            &self.gateway_duration,
        );
        out
    }

    /// A request an HTTPRoute rule sent to a backend (main or mirrored):
    /// gw|kind/namespace/route/rule|backend namespace/service|status|seconds|version|workload|msec.
    fn record_gateway(&mut self, f: &[&str]) {
        if f.len() < 5 {
            return;
        }
        let mut route = f[1].splitn(4, '/');
        let (kind, ns, name, rule) = (
            route.next().unwrap_or(""),
            route.next().unwrap_or(""),
            route.next().unwrap_or(""),
            route.next().unwrap_or(""),
        );
        let (b_ns, b_service) = f[2].split_once('/').unwrap_or(("", f[2]));
        self.lines += 1;
        let labels: Labels = vec![
            ("backend_name", b_service.to_string()),
            ("backend_namespace", b_ns.to_string()),
            ("response_code", f[3].to_string()),
            ("route_kind", kind.to_string()),
            ("route_name", name.to_string()),
            ("route_namespace", ns.to_string()),
            ("route_rule", rule.to_string()),
        ];
        let seconds: f64 = f[4].parse().unwrap_or(0.0);
        *self.gateway_requests.entry(labels.clone()).or_default() += 1;
        self.gateway_duration
            .entry(labels)
            .or_default()
            .observe(NGINX_BUCKETS, seconds);
    }

    /// One access log line: kind|ns|ingress|service|canary service|backend|status|seconds|
    /// version|workload|msec.
    fn record(&mut self, line: &str) {
        let f: Vec<&str> = line.split('|').collect();
        if f.first() == Some(&"gw") {
            self.record_gateway(&f);
            return;
        }
        if f.len() < 10 {
            return;
        }
        self.lines += 1;
        let (kind, ns, ingress, service, canary_service, backend, status) =
            (f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
        let seconds: f64 = f[7].parse().unwrap_or(0.0);
        let version = f[8];
        let workload = f[9];
        // "ns/service" or "ns/service/subset"
        let mut b = backend.split('/');
        let (b_ns, b_service) = (b.next().unwrap_or(""), b.next().unwrap_or(""));
        match kind {
            "ing" => {
                let canary = if !canary_service.is_empty() && b_service == canary_service {
                    format!("{ns}-{canary_service}-80")
                } else {
                    String::new()
                };
                let labels: Labels = vec![
                    ("canary", canary),
                    ("ingress", ingress.to_string()),
                    ("namespace", ns.to_string()),
                    ("service", service.to_string()),
                    ("status", status.to_string()),
                ];
                *self.nginx_requests.entry(labels.clone()).or_default() += 1;
                self.nginx_duration
                    .entry(labels)
                    .or_default()
                    .observe(NGINX_BUCKETS, seconds);
            }
            "vs" => {
                let labels: Labels = vec![
                    ("destination_service_name", b_service.to_string()),
                    ("destination_service_namespace", b_ns.to_string()),
                    ("destination_version", version.to_string()),
                    ("destination_workload", workload.to_string()),
                    ("reporter", "destination".to_string()),
                    ("response_code", status.to_string()),
                ];
                *self.istio_requests.entry(labels.clone()).or_default() += 1;
                self.istio_duration
                    .entry(labels)
                    .or_default()
                    .observe(ISTIO_BUCKETS, seconds * 1000.0);
            }
            _ => {}
        }
    }
}

/// Finds nginx (it lives in /usr/sbin), installing the Debian package when missing.
pub fn ensure_nginx() -> Result<PathBuf, DataPlaneError> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    crate::prometheus::ensure_tool("nginx", "nginx")
        .or_else(|e| {
            if Path::new("/usr/sbin/nginx").is_file() {
                Ok(PathBuf::from("/usr/sbin/nginx"))
            } else {
                Err(e)
            }
        })
        .map_err(|e| DataPlaneError::Install(e.to_string()))
}

fn free_port() -> Result<u16, DataPlaneError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("find a free port"))?;
    Ok(l.local_addr().map_err(io_err("find a free port"))?.port())
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[derive(Default)]
struct Shared {
    config: String,
    reloads: u64,
    /// Completed sync passes.
    syncs: u64,
    last_error: Option<String>,
}

/// nginx, its configuration sync loop, its access-log reader and its metrics endpoint.
pub struct DataPlane {
    ports: Ports,
    metrics_addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    metrics: Arc<Mutex<Metrics>>,
    tasks: Vec<JoinHandle<()>>,
    child: Option<std::process::Child>,
    binary: PathBuf,
    _dir: tempfile::TempDir,
}

fn gvk_api(client: &kube::Client, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::all_with(client.clone(), &ar)
}

async fn list(api: &Api<DynamicObject>) -> Vec<Value> {
    match api.list(&ListParams::default()).await {
        Ok(l) => l
            .items
            .into_iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

async fn observe(client: &kube::Client) -> Model {
    let ingresses = list(&gvk_api(client, "networking.k8s.io", "v1", "Ingress")).await;
    let virtual_services = list(&gvk_api(
        client,
        "networking.istio.io",
        "v1",
        "VirtualService",
    ))
    .await;
    let destination_rules = list(&gvk_api(
        client,
        "networking.istio.io",
        "v1",
        "DestinationRule",
    ))
    .await;
    let http_routes = list(&gvk_api(client, GATEWAY_GROUP, "v1", "HTTPRoute")).await;
    let mut reference_grants = Vec::new();
    if !http_routes.is_empty() {
        // v1beta1 is the version every Gateway API release serves; v1 where it exists.
        for version in ["v1beta1", "v1"] {
            reference_grants =
                list(&gvk_api(client, GATEWAY_GROUP, version, "ReferenceGrant")).await;
            if !reference_grants.is_empty() {
                break;
            }
        }
    }
    let services = list(&gvk_api(client, "", "v1", "Service"))
        .await
        .iter()
        .map(|s| {
            (
                s.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                s.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let mut model = Model {
        ingresses,
        virtual_services,
        destination_rules,
        http_routes,
        reference_grants,
        services,
        ..Model::default()
    };
    for ep in list(&gvk_api(client, "", "v1", "Endpoints")).await {
        let ns = ep
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = ep
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut ready = Vec::new();
        for subset in ep
            .get("subsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(port) = subset
                .pointer("/ports/0/port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for a in subset
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                // Only pods with a real process (loopback) can be proxied to.
                if a.get("ip").and_then(Value::as_str) != Some("127.0.0.1") {
                    continue;
                }
                let pod = a
                    .pointer("/targetRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                ready.push(Endpoint { pod, port });
            }
        }
        ready.sort();
        model.endpoints.insert((ns, name), ready);
    }
    if !model.destination_rules.is_empty() {
        for pod in list(&gvk_api(client, "", "v1", "Pod")).await {
            let ns = pod
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let name = pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let labels = pod
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            model.pod_labels.insert((ns, name), labels);
        }
    }
    model
}

fn nginx_command(binary: &Path, dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null());
    cmd
}

impl DataPlane {
    /// Installs nginx if needed and starts it on free loopback ports, following the cluster that
    /// `client` talks to.
    pub async fn start(client: kube::Client) -> Result<DataPlane, DataPlaneError> {
        let binary = tokio::task::spawn_blocking(ensure_nginx)
            .await
            .map_err(|e| DataPlaneError::Install(e.to_string()))??;
        let dir = tempfile::Builder::new()
            .prefix("sluice-nginx")
            .tempdir()
            .map_err(io_err("create the nginx directory"))?;
        let path = dir.path().to_path_buf();
        std::fs::create_dir_all(path.join("logs")).map_err(io_err("create nginx logs"))?;
        std::fs::write(path.join("access.log"), "").map_err(io_err("create access.log"))?;
        let ports = Ports {
            ingress: free_port()?,
            mesh: free_port()?,
            gateway: free_port()?,
        };
        let root = running_as_root();
        let mut ids = BackendIds::default();
        let model = observe(&client).await;
        let config = nginx_render::render(&model, &mut ids, &path, ports, root);
        let conf_path = path.join("nginx.conf");
        std::fs::write(&conf_path, &config).map_err(io_err("write nginx.conf"))?;
        let check = nginx_command(&binary, &path)
            .arg("-t")
            .output()
            .map_err(io_err("run nginx -t"))?;
        if !check.status.success() {
            return Err(DataPlaneError::Start(format!(
                "nginx -t: {}",
                String::from_utf8_lossy(&check.stderr)
            )));
        }
        let log = std::fs::File::create(path.join("nginx.out")).map_err(io_err("nginx.out"))?;
        let log2 = log.try_clone().map_err(io_err("nginx.out"))?;
        let child = nginx_command(&binary, &path)
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io_err("start nginx"))?;
        let mut dp = DataPlane {
            ports,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shared: Arc::new(Mutex::new(Shared {
                config,
                ..Shared::default()
            })),
            metrics: Arc::new(Mutex::new(Metrics::default())),
            tasks: Vec::new(),
            child: Some(child),
            binary: binary.clone(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", ports.ingress))
            .await
            .is_err()
        {
            if let Some(c) = dp.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(DataPlaneError::Start(format!(
                    "nginx exited with {status}: {}",
                    std::fs::read_to_string(path.join("nginx.out")).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(DataPlaneError::Start(
                    "nginx is not listening after 20s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Metrics endpoint.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_err("bind the metrics endpoint"))?;
        dp.metrics_addr = listener.local_addr().map_err(io_err("metrics address"))?;
        let metrics = dp.metrics.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    let body = metrics.lock().map(|m| m.render()).unwrap_or_default();
                    ([("content-type", "text/plain; version=0.0.4")], body)
                }
            }),
        );
        dp.tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        // Access log reader.
        let metrics = dp.metrics.clone();
        let log_path = path.join("access.log");
        dp.tasks.push(tokio::spawn(tail_log(log_path, metrics)));
        // Config sync loop.
        let shared = dp.shared.clone();
        let master = dp.child.as_ref().map(std::process::Child::id);
        dp.tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let model = observe(&client).await;
                let config = nginx_render::render(&model, &mut ids, &path, ports, root);
                let changed = shared.lock().map(|s| s.config != config).unwrap_or(false);
                if changed {
                    let result = reload(&binary, &path, &config, master).await;
                    if let Ok(mut s) = shared.lock() {
                        match result {
                            Ok(()) => {
                                s.config = config;
                                s.reloads += 1;
                                s.last_error = None;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "nginx reload failed");
                                s.last_error = Some(e);
                            }
                        }
                    }
                }
                if let Ok(mut s) = shared.lock() {
                    s.syncs += 1;
                }
            }
        }));
        Ok(dp)
    }

    /// Address of the ingress port (send `Host:` an Ingress host).
    pub fn ingress_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.ingress))
    }

    /// Address of the mesh port (send `Host:` a VirtualService host).
    pub fn mesh_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.mesh))
    }

    /// Address of the gateway port (send `Host:` an HTTPRoute hostname; routes without
    /// hostnames answer any `Host`).
    pub fn gateway_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.gateway))
    }

    /// Address of `/metrics`, for Prometheus.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The configuration nginx currently runs.
    pub fn config(&self) -> String {
        self.shared
            .lock()
            .map(|s| s.config.clone())
            .unwrap_or_default()
    }

    /// nginx's error log so far (why a request got a 502, for instance).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default()
    }

    /// How many times nginx was reloaded.
    pub fn reloads(&self) -> u64 {
        self.shared.lock().map(|s| s.reloads).unwrap_or(0)
    }

    /// The last reload error, if the last reload failed.
    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().ok().and_then(|s| s.last_error.clone())
    }

    /// Access log lines turned into metrics so far.
    pub fn logged_requests(&self) -> u64 {
        self.metrics.lock().map(|m| m.lines).unwrap_or(0)
    }

    /// The metrics text, as Prometheus scrapes it.
    pub fn metrics_text(&self) -> String {
        self.metrics.lock().map(|m| m.render()).unwrap_or_default()
    }

    /// Waits until a sync pass that started after this call has finished (so nginx runs the
    /// configuration of the cluster as it is now), or `timeout` passed.
    pub async fn wait_synced(&self, timeout: Duration) {
        let start = self.shared.lock().map(|s| s.syncs).unwrap_or(0);
        let deadline = Instant::now() + timeout;
        while self.shared.lock().map(|s| s.syncs).unwrap_or(0) < start + 2
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops nginx and every task.
    pub fn stop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(mut c) = self.child.take() {
            // A fast shutdown through the master (`nginx -s stop`, SIGTERM) stops its workers
            // too; SIGKILL to the master alone would leave them running.
            let stopped = nginx_command(&self.binary, self._dir.path())
                .arg("-s")
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let deadline = Instant::now() + Duration::from_secs(5);
            while stopped && Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The worker processes of the nginx master `master` (children in /proc).
fn workers(master: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid ...`; comm may hold spaces, so split after its `)`.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(master)
        })
        .collect()
}

/// Writes `config` and reloads nginx. Returns once only workers started after the reload are
/// left: until the old ones exit they still accept requests with the old configuration, and a
/// test that measures a split right after a change would count some of those.
async fn reload(
    binary: &Path,
    dir: &Path,
    config: &str,
    master: Option<u32>,
) -> Result<(), String> {
    let old = master.map(workers).unwrap_or_default();
    reload_signal(binary, dir, config).await?;
    let Some(master) = master else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = workers(master);
        if !now.is_empty() && now.iter().all(|w| !old.contains(w)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nginx reload: old workers {old:?} still running after 10s (now {now:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn reload_signal(binary: &Path, dir: &Path, config: &str) -> Result<(), String> {
    let conf = dir.join("nginx.conf");
    let tmp = dir.join("nginx.conf.new");
    tokio::fs::write(&tmp, config)
        .await
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, &conf)
        .await
        .map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    let out = tokio::process::Command::from(nginx_command(binary, dir))
        .arg("-s")
        .arg("reload")
        .output()
        .await
        .map_err(|e| format!("run nginx -s reload: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nginx -s reload: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

async fn tail_log(path: PathBuf, metrics: Arc<Mutex<Metrics>>) {
    let mut pos = 0u64;
    let mut partial = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(mut f) = tokio::fs::File::open(&path).await else {
            continue;
        };
        if f.seek(std::io::SeekFrom::Start(pos)).await.is_err() {
            continue;
        }
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf).await {
            pos += n as u64;
            partial.push_str(&String::from_utf8_lossy(&buf));
            if let Some(end) = partial.rfind('\n') {
                let complete: String = partial.drain(..=end).collect();
                if let Ok(mut m) = metrics.lock() {
                    for line in complete.lines() {
                        m.record(line);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_become_ingress_nginx_and_istio_series() {
        let mut m = Metrics::default();
        m.record(
            "ing|default|web|web-stable|web-canary|default/web-canary|500|0.003|v2|web-abc|1.0",
        );
        m.record(
            "ing|default|web|web-stable|web-canary|default/web-stable|200|0.020|v1|web-def|1.0",
        );
        m.record("vs|default|web|||default/web/canary|200|0.300|v2|web-abc|1.0");
        let text = m.render();
        assert!(text.contains("nginx_ingress_controller_requests{canary=\"default-web-canary-80\",ingress=\"web\",namespace=\"default\",service=\"web-stable\",status=\"500\"} 1"), "{text}");
        assert!(text.contains("nginx_ingress_controller_requests{canary=\"\",ingress=\"web\",namespace=\"default\",service=\"web-stable\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("nginx_ingress_controller_request_duration_seconds_bucket{canary=\"\",ingress=\"web\",namespace=\"default\",service=\"web-stable\",status=\"200\",le=\"0.025\"} 1"), "{text}");
        assert!(text.contains("nginx_ingress_controller_request_duration_seconds_bucket{canary=\"\",ingress=\"web\",namespace=\"default\",service=\"web-stable\",status=\"200\",le=\"0.01\"} 0"), "{text}");
        assert!(text.contains("istio_request_duration_milliseconds_bucket{destination_service_name=\"web\",destination_service_namespace=\"default\",destination_version=\"v2\",destination_workload=\"web-abc\",reporter=\"destination\",response_code=\"200\",le=\"250\"} 0"), "{text}");
        assert!(
            text.contains("istio_requests_total{destination_service_name=\"web\""),
            "{text}"
        );
    }

    #[test]
    fn httproute_lines_become_gateway_api_series_per_route_rule_backend_and_code() {
        let mut m = Metrics::default();
        m.record("gw|HTTPRoute/default/web/0|default/web-canary|500|0.030|v2|web-abc|1.0");
        m.record("gw|HTTPRoute/default/web/0|default/web-canary|500|0.002|v2|web-abc|1.0");
        m.record(
            "gw|HTTPRoute/default/web/canary-header|default/web-stable|200|0.002|v1|web-def|1.0",
        );
        assert_eq!(m.lines, 3);
        let text = m.render();
        assert!(text.contains("gateway_api_http_requests_total{backend_name=\"web-canary\",backend_namespace=\"default\",response_code=\"500\",route_kind=\"HTTPRoute\",route_name=\"web\",route_namespace=\"default\",route_rule=\"0\"} 2"), "{text}");
        assert!(text.contains("gateway_api_http_requests_total{backend_name=\"web-stable\",backend_namespace=\"default\",response_code=\"200\",route_kind=\"HTTPRoute\",route_name=\"web\",route_namespace=\"default\",route_rule=\"canary-header\"} 1"), "{text}");
        assert!(text.contains("gateway_api_http_request_duration_seconds_bucket{backend_name=\"web-canary\",backend_namespace=\"default\",response_code=\"500\",route_kind=\"HTTPRoute\",route_name=\"web\",route_namespace=\"default\",route_rule=\"0\",le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("gateway_api_http_request_duration_seconds_count{backend_name=\"web-canary\",backend_namespace=\"default\",response_code=\"500\",route_kind=\"HTTPRoute\",route_name=\"web\",route_namespace=\"default\",route_rule=\"0\"} 2"), "{text}");
    }
}
