//! The sample application of the closed-loop tests and the demo: one HTTP server per ready pod,
//! on its own loopback port, whose behaviour is written in the pod template.
//!
//! - version: the [`VERSION`] annotation, else the first container's image tag;
//! - error ratio: the [`ERROR_RATIO`] annotation (`"0.3"`: exactly 3 answers in 10 are 500s,
//!   spread evenly, so short windows measure the ratio without sampling noise);
//! - added latency: the [`LATENCY`] annotation (a Go-style duration, `"250ms"`).
//!
//! Every answer carries `x-version` and `x-workload` (the pod's owner, e.g. its ReplicaSet), which
//! the data plane logs and the load generator records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::sim::{BoxFuture, PodInfo, PodProcess, PodRunner, parse_duration};

/// Pod annotation: the version string the app reports.
pub const VERSION: &str = "demo.sluice.dev/version";
/// Pod annotation: the share of requests answered with a 500 (`0` to `1`).
pub const ERROR_RATIO: &str = "demo.sluice.dev/error-ratio";
/// Pod annotation: latency added to every answer (Go-style duration).
pub const LATENCY: &str = "demo.sluice.dev/latency";

/// What one pod's app does.
#[derive(Debug, Clone, PartialEq)]
pub struct AppBehaviour {
    pub version: String,
    pub workload: String,
    pub error_ratio: f64,
    pub latency: Duration,
}

impl AppBehaviour {
    /// Reads the behaviour from a pod about to start.
    pub fn of(pod: &PodInfo) -> AppBehaviour {
        let image = pod
            .pod
            .pointer("/spec/containers/0/image")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let tag = image.rsplit_once(':').map_or(image, |(_, t)| t);
        let version = pod
            .annotations
            .get(VERSION)
            .cloned()
            .unwrap_or_else(|| tag.to_string());
        let workload = pod
            .pod
            .pointer("/metadata/ownerReferences/0/name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(&pod.name)
            .to_string();
        let error_ratio = pod
            .annotations
            .get(ERROR_RATIO)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|r| r.is_finite())
            .map_or(0.0, |r| r.clamp(0.0, 1.0));
        let latency = pod
            .annotations
            .get(LATENCY)
            .and_then(|s| parse_duration(s))
            .unwrap_or_default();
        AppBehaviour {
            version,
            workload,
            error_ratio,
            latency,
        }
    }

    /// Whether the `n`-th request (from 0) fails: exactly `floor(n * ratio)` of the first `n`.
    pub fn fails(&self, n: u64) -> bool {
        let r = self.error_ratio;
        ((n + 1) as f64 * r).floor() > (n as f64 * r).floor()
    }
}

struct Served {
    behaviour: AppBehaviour,
    count: AtomicU64,
}

async fn handle(state: Arc<Served>) -> Response {
    let n = state.count.fetch_add(1, Ordering::Relaxed);
    let b = &state.behaviour;
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    let (status, body) = if b.fails(n) {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{} error\n", b.version),
        )
    } else {
        (StatusCode::OK, format!("{}\n", b.version))
    };
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&b.version) {
        headers.insert("x-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&b.workload) {
        headers.insert("x-workload", v);
    }
    resp
}

/// How long an app keeps serving after its pod went away, as a real app with a `preStop` sleep
/// does so that load balancers that have not yet seen the endpoint go fail no request.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Stops the server [`DRAIN`] after it is dropped (the pod went away).
struct ServerGuard(Option<tokio::task::JoinHandle<()>>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let Some(task) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(DRAIN).await;
                    task.abort();
                });
            }
            Err(_) => task.abort(),
        }
    }
}

/// Starts the app of one pod on a free loopback port.
pub async fn start(behaviour: AppBehaviour) -> std::io::Result<PodProcess> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let state = Arc::new(Served {
        behaviour,
        count: AtomicU64::new(0),
    });
    let app = axum::Router::new().fallback(move || handle(state.clone()));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(PodProcess::new(Some(port), ServerGuard(Some(task))))
}

/// A [`PodRunner`] giving every ready pod its own app server.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppRunner;

impl PodRunner for AppRunner {
    fn start(&self, pod: PodInfo) -> BoxFuture<Result<PodProcess, String>> {
        Box::pin(async move {
            start(AppBehaviour::of(&pod))
                .await
                .map_err(|e| format!("app of pod {} did not start: {e}", pod.name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_ratio_is_exact_over_any_ten_requests() {
        let b = AppBehaviour {
            version: "v2".into(),
            workload: "web".into(),
            error_ratio: 0.3,
            latency: Duration::ZERO,
        };
        let failed = (0..100).filter(|n| b.fails(*n)).count();
        assert_eq!(failed, 30);
        let first_ten = (0..10).filter(|n| b.fails(*n)).count();
        assert_eq!(first_ten, 3);
        let none = AppBehaviour {
            error_ratio: 0.0,
            ..b
        };
        assert!((0..100).all(|n| !none.fails(n)));
    }
}
