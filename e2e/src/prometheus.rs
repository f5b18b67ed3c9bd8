//! A real Prometheus server for tests: installed when missing, started on a free loopback port.
//!
//! - [`ensure_installed`] finds the `prometheus` binary or installs the Debian package with
//!   apt-get (concurrent installs are serialised with a file lock); [`ensure_tool`] does the same
//!   for other tools. They fail loudly: a test that needs a tool never skips.
//! - [`Exporter`] is a small HTTP server whose counters the test controls: request totals by
//!   status code and a request-latency histogram.
//! - [`PrometheusServer`] runs Prometheus with a temporary config and data directory, scraping
//!   the given targets every second; it can be stopped mid-test and is killed on drop.
//! - [`SlowProxy`] sits in front of a server and delays every connection, for timeout tests.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What went wrong while preparing or running Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Installing the package failed.
    #[error("cannot install prometheus with apt-get: {0}")]
    Install(String),
    /// The server did not start or did not become ready.
    #[error("prometheus did not start: {0}")]
    Start(String),
    /// A query to the server failed.
    #[error("prometheus query failed: {0}")]
    Query(String),
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run_apt(args: &[&str]) -> Result<(), HarnessError> {
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            HarnessError::Install(format!("cannot run apt-get {}: {e}", args.join(" ")))
        })?;
    if !out.status.success() {
        return Err(HarnessError::Install(format!(
            "apt-get {} exited with {}: {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Returns the path of the `prometheus` binary, installing the Debian package first if it is
/// missing. Several test processes may call this at once: a file lock lets one install while
/// the others wait and then find the binary.
pub fn ensure_installed() -> Result<PathBuf, HarnessError> {
    ensure_tool("prometheus", "prometheus")
}

/// Returns the path of the `binary` a test needs, installing the Debian `package` that ships it
/// if it is missing (e.g. `openssl` for TLS tests). Fails loudly; never skips.
pub fn ensure_tool(binary: &str, package: &str) -> Result<PathBuf, HarnessError> {
    if let Some(p) = find_binary(binary) {
        return Ok(p);
    }
    let lock_path = std::env::temp_dir().join("sluice-e2e-apt-install.lock");
    let lock =
        File::create(&lock_path).map_err(io_err(format!("create {}", lock_path.display())))?;
    lock.lock()
        .map_err(io_err(format!("lock {}", lock_path.display())))?;
    if let Some(p) = find_binary(binary) {
        return Ok(p);
    }
    // Wait for a dpkg lock held by another installer instead of failing at once.
    let wait = "DPkg::Lock::Timeout=600";
    run_apt(&["-o", wait, "update"])?;
    run_apt(&[
        "-o",
        wait,
        "install",
        "-y",
        "--no-install-recommends",
        package,
    ])?;
    find_binary(binary).ok_or_else(|| {
        HarnessError::Install(format!(
            "the {package} package is installed but no {binary} binary is on PATH"
        ))
    })
}

/// Latency histogram bucket bounds, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug, Default)]
struct ExporterState {
    /// (status code, total)
    requests: Vec<(u16, u64)>,
    bucket_counts: Vec<u64>,
    latency_sum: f64,
    latency_count: u64,
}

impl ExporterState {
    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP http_requests_total Requests served, by status code.\n");
        out.push_str("# TYPE http_requests_total counter\n");
        for (code, n) in &self.requests {
            let _ = writeln!(out, "http_requests_total{{code=\"{code}\"}} {n}");
        }
        out.push_str("# HELP http_request_duration_seconds Request latency.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.bucket_counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.latency_count
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_sum {}",
            self.latency_sum
        );
        let _ = writeln!(
            out,
            "http_request_duration_seconds_count {}",
            self.latency_count
        );
        out
    }
}

/// A metrics endpoint (`/metrics`) whose counters the test sets.
pub struct Exporter {
    addr: SocketAddr,
    state: Arc<Mutex<ExporterState>>,
    task: JoinHandle<()>,
}

impl Exporter {
    /// Starts serving on a free loopback port.
    pub async fn start() -> Result<Self, HarnessError> {
        let state = Arc::new(Mutex::new(ExporterState::default()));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_err("bind the exporter"))?;
        let addr = listener.local_addr().map_err(io_err("exporter address"))?;
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let shared = shared.clone();
                async move {
                    let body = shared.lock().map(|s| s.render()).unwrap_or_default();
                    ([("content-type", "text/plain; version=0.0.4")], body)
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Exporter { addr, state, task })
    }

    /// Address to scrape.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Declares the series for a status code (at 0) without adding requests.
    pub fn declare_code(&self, code: u16) {
        self.add_requests(code, 0);
    }

    /// Adds `n` requests answered with `code`.
    pub fn add_requests(&self, code: u16, n: u64) {
        if let Ok(mut s) = self.state.lock() {
            match s.requests.iter_mut().find(|(c, _)| *c == code) {
                Some((_, total)) => *total += n,
                None => {
                    s.requests.push((code, n));
                    s.requests.sort_unstable();
                }
            }
        }
    }

    /// Records `n` requests that took `seconds`.
    pub fn observe_latency(&self, seconds: f64, n: u64) {
        if let Ok(mut s) = self.state.lock() {
            if s.bucket_counts.len() < LATENCY_BUCKETS.len() {
                s.bucket_counts.resize(LATENCY_BUCKETS.len(), 0);
            }
            if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
                s.bucket_counts[i] += n;
            }
            s.latency_sum += seconds * n as f64;
            s.latency_count += n;
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn free_port() -> Result<u16, HarnessError> {
    let l = StdTcpListener::bind("127.0.0.1:0").map_err(io_err("find a free port"))?;
    Ok(l.local_addr().map_err(io_err("find a free port"))?.port())
}

/// A Prometheus server scraping the given targets every second.
pub struct PrometheusServer {
    child: Option<Child>,
    addr: SocketAddr,
    /// Config, data and log; removed on drop.
    dir: Option<tempfile::TempDir>,
}

impl PrometheusServer {
    /// Installs Prometheus if needed, starts it on a free loopback port with a temporary config
    /// and data directory, and waits until it has scraped every target once.
    pub async fn start(targets: &[SocketAddr]) -> Result<Self, HarnessError> {
        // apt-get may take minutes: keep it off the async worker.
        let binary = tokio::task::spawn_blocking(ensure_installed)
            .await
            .map_err(|e| HarnessError::Install(format!("installer task failed: {e}")))??;
        let dir = tempfile::tempdir().map_err(io_err("create the prometheus directory"))?;
        let target_list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    \
             scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: [{target_list}]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).map_err(io_err("write prometheus.yml"))?;
        let mut last_error = String::new();
        let mut dir = Some(dir);
        // The free port may be taken between finding and binding it: try a few.
        for _ in 0..3 {
            let Some(work) = dir.as_ref() else { break };
            let port = free_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let child = spawn(&binary, work.path(), &config_path, addr)?;
            let mut server = PrometheusServer {
                child: Some(child),
                addr,
                dir: None,
            };
            match server.wait_ready(Duration::from_secs(60)).await {
                Ok(()) => {
                    server.dir = dir.take();
                    server
                        .wait_for_scrape(targets.len(), Duration::from_secs(30))
                        .await?;
                    return Ok(server);
                }
                Err(e) => {
                    last_error = format!(
                        "{e}; log: {}",
                        log_tail(&work.path().join("prometheus.log"))
                    );
                    server.stop();
                }
            }
        }
        Err(HarnessError::Start(last_error))
    }

    /// Base URL, e.g. `http://127.0.0.1:43121`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the server (it can no longer be reached: connections are refused).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(HarnessError::Start(format!(
                    "prometheus exited with {status}"
                )));
            }
            if let Ok((200, _)) = http_get(self.addr, "/-/ready").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Start(format!(
                    "not ready after {}s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_scrape(&self, targets: usize, timeout: Duration) -> Result<(), HarnessError> {
        if targets == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(v) = self.query("count(up{job=\"app\"} == 1)").await
                && v.first().is_some_and(|x| *x as usize == targets)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Start(format!(
                    "targets not scraped after {}s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs an instant query and returns the sample values of the vector (or the scalar).
    pub async fn query(&self, promql: &str) -> Result<Vec<f64>, HarnessError> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = http_get(self.addr, &path)
            .await
            .map_err(|e| HarnessError::Query(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| HarnessError::Query(format!("HTTP {status}: {e}: {body}")))?;
        let result = &v["data"]["result"];
        let number = |s: &serde_json::Value| s.as_str().and_then(|s| s.parse::<f64>().ok());
        match v["data"]["resultType"].as_str() {
            Some("vector") => Ok(result
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| number(&s["value"][1]))
                .collect()),
            Some("scalar") => Ok(number(&result[1]).into_iter().collect()),
            _ => Err(HarnessError::Query(format!("HTTP {status}: {body}"))),
        }
    }

    /// Waits until `promql` returns at least one sample for which `accept` is true, e.g. until
    /// a new counter value has been scraped.
    pub async fn wait_until(
        &self,
        promql: &str,
        accept: impl Fn(&[f64]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<f64>, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.query(promql).await?;
            if accept(&v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Query(format!(
                    "{promql} still returns {v:?} after {}s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(
    binary: &Path,
    dir: &Path,
    config: &Path,
    addr: SocketAddr,
) -> Result<Child, HarnessError> {
    let log = File::create(dir.join("prometheus.log")).map_err(io_err("create prometheus.log"))?;
    let log2 = log.try_clone().map_err(io_err("open prometheus.log"))?;
    let data = dir.join("data");
    Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(io_err(format!("start {}", binary.display())))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A minimal HTTP/1.0 GET, enough to poll Prometheus without an HTTP client dependency.
async fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer within 10s"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line"))?;
    Ok((status, body.to_string()))
}

/// A TCP proxy that waits `delay` before forwarding each new connection: a slow server.
pub struct SlowProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SlowProxy {
    /// Starts the proxy on a free loopback port in front of `upstream`.
    pub async fn start(upstream: SocketAddr, delay: Duration) -> Result<Self, HarnessError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_err("bind the slow proxy"))?;
        let addr = listener
            .local_addr()
            .map_err(io_err("slow proxy address"))?;
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(SlowProxy { addr, task })
    }

    /// Base URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
