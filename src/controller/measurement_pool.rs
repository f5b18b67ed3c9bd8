//! Bounded measurement workers shared by every AnalysisRun reconcile: identical queries due at
//! the same instant are sent once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;

use crate::analysis::run::{ProviderRequest, ProviderResult};
use crate::metrics::prometheus::PrometheusProvider;
use crate::metrics::web::WebProvider;

type SharedResult = Shared<BoxFuture<'static, ProviderResult>>;

/// Bounded measurement workers, with identical queries due at the same instant sent once.
pub struct MeasurementPool {
    permits: Arc<Semaphore>,
    in_flight: Mutex<HashMap<String, SharedResult>>,
}

impl MeasurementPool {
    /// A pool of `workers` concurrent measurements.
    pub fn new(workers: usize) -> Self {
        MeasurementPool {
            permits: Arc::new(Semaphore::new(workers.max(1))),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one measurement, joining an identical one already in flight. A Job request has
    /// nothing to share and is the controller's to carry out: it is answered with an error here.
    pub async fn measure(
        &self,
        prometheus: &PrometheusProvider,
        web: &WebProvider,
        req: &ProviderRequest,
    ) -> ProviderResult {
        // The key holds the real request (with Secret values), so it never leaves this process.
        let key = match req {
            ProviderRequest::Prometheus(p) => format!(
                "prometheus\u{0}{:?}\u{0}{}\u{0}{:?}\u{0}{:?}\u{0}{:?}",
                p.address, p.query, p.range, p.headers, p.basic_auth
            ),
            ProviderRequest::Web(w) => format!(
                "web\u{0}{}\u{0}{}\u{0}{:?}\u{0}{:?}\u{0}{}\u{0}{}",
                w.method, w.url, w.headers, w.body, w.json_path, w.insecure
            ),
            ProviderRequest::Job(_) => return job_not_pooled(),
            // A look carries its run's counting state: nothing to share with another run.
            ProviderRequest::Judge(j) => {
                let _permit = self.permits.acquire().await;
                return crate::metrics::judge::measure(prometheus, j).await;
            }
        };
        let fut = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = map.get(&key) {
                f.clone()
            } else {
                let prometheus = prometheus.clone();
                let web = web.clone();
                let permits = self.permits.clone();
                let request = req.clone();
                let f: BoxFuture<'static, ProviderResult> = async move {
                    let _permit = permits.acquire_owned().await;
                    match &request {
                        ProviderRequest::Prometheus(p) => prometheus.measure(p).await,
                        ProviderRequest::Web(w) => web.measure(w).await,
                        ProviderRequest::Job(_) | ProviderRequest::Judge(_) => job_not_pooled(),
                    }
                }
                .boxed();
                let shared = f.shared();
                map.insert(key.clone(), shared.clone());
                shared
            }
        };
        let result = fut.await;
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        result
    }
}

fn job_not_pooled() -> ProviderResult {
    ProviderResult::measured(
        Err("a job measurement cannot be taken by the measurement pool".to_string()),
        Default::default(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::analysis::run::PrometheusRequest;
    use crate::metrics::prometheus::{AddressAllowlist, PrometheusConfig};

    /// A stand-in for Prometheus's query API that counts requests and answers slowly, so that
    /// concurrent measurements overlap.
    async fn counting_server() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    axum::Json(serde_json::json!({
                        "status": "success",
                        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "0.99"]}]}
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), hits)
    }

    fn request(address: &str, query: &str) -> ProviderRequest {
        ProviderRequest::Prometheus(PrometheusRequest {
            address: Some(address.to_string()),
            query: query.to_string(),
            display_query: query.to_string(),
            timeout: Duration::from_secs(5),
            insecure: false,
            ca_cert: None,
            headers: Vec::new(),
            basic_auth: None,
            range: None,
        })
    }

    #[tokio::test]
    async fn identical_queries_due_together_are_sent_once() {
        let (address, hits) = counting_server().await;
        let provider = PrometheusProvider::new(PrometheusConfig {
            allowlist: AddressAllowlist::allow_any(),
            default_address: None,
        })
        .unwrap();
        let web = WebProvider::new(AddressAllowlist::allow_any()).unwrap();
        let pool = MeasurementPool::new(8);
        let same = request(&address, "sum(rate(x[1m]))");
        let other = request(&address, "sum(rate(y[1m]))");
        let results = futures::future::join_all([
            pool.measure(&provider, &web, &same),
            pool.measure(&provider, &web, &same),
            pool.measure(&provider, &web, &same),
            pool.measure(&provider, &web, &other),
        ])
        .await;
        assert!(results.iter().all(|r| r.value.is_ok()), "{results:?}");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "three identical queries, one request"
        );
        // Once answered, the next identical query is a new measurement.
        pool.measure(&provider, &web, &same).await;
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }
}
