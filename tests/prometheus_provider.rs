//! The Prometheus provider and the analysis pipeline against a real Prometheus server (Debian
//! package `prometheus`, installed by the harness when missing) scraping an exporter whose
//! counters each test controls.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice::analysis::args::SecretValues;
use sluice::analysis::run::{
    MeasurementRequest, PrometheusRequest, ProviderRequest, RESOLVED_QUERY_KEY, RangeWindow,
    Update, begin,
};
use sluice::analysis::value::MetricValue;
use sluice::api::analysis::{
    AnalysisRunSpec, AnalysisRunStatus, Metric, MetricProvider, PrometheusMetric,
    PrometheusRangeQuery,
};
use sluice::api::common::AnalysisPhase;
use sluice::metrics::prometheus::{AddressAllowlist, PrometheusConfig, PrometheusProvider};
use sluice_e2e::prometheus::{Exporter, PrometheusServer, SlowProxy};

const SUCCESS_RATE: &str = "sum(http_requests_total{code=~\"2..\"}) / sum(http_requests_total)";

fn provider() -> PrometheusProvider {
    PrometheusProvider::new(PrometheusConfig {
        allowlist: AddressAllowlist::new(["http://127.0.0.1"]).unwrap_or_else(|e| panic!("{e}")),
        default_address: None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// An allowlist entry without a port matches only the default port; tests use random ports.
fn provider_for(url: &str) -> PrometheusProvider {
    PrometheusProvider::new(PrometheusConfig {
        allowlist: AddressAllowlist::new([url]).unwrap_or_else(|e| panic!("{e}")),
        default_address: None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn instant(address: &str, query: &str) -> PrometheusRequest {
    PrometheusRequest {
        address: Some(address.to_string()),
        query: query.to_string(),
        display_query: query.to_string(),
        timeout: Duration::from_secs(30),
        insecure: false,
        ca_cert: None,
        headers: Vec::new(),
        basic_auth: None,
        range: None,
    }
}

async fn start(exporter: &Exporter) -> PrometheusServer {
    PrometheusServer::start(&[exporter.addr()])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn metric(name: &str, address: &str, query: &str, success: &str) -> Metric {
    Metric {
        name: name.into(),
        success_condition: Some(success.into()),
        provider: MetricProvider {
            prometheus: Some(PrometheusMetric {
                address: Some(address.into()),
                query: query.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// One reconcile pass as the controller will run it: begin, measure with the real provider,
/// finish.
async fn reconcile(
    provider: &PrometheusProvider,
    spec: &AnalysisRunSpec,
    status: Option<&AnalysisRunStatus>,
    now: Timestamp,
) -> Update {
    let pass = begin(spec, status, &SecretValues::new(), now);
    let mut results = Vec::new();
    for req in pass.requests.clone() {
        let MeasurementRequest {
            provider: ProviderRequest::Prometheus(p),
            ..
        } = &req
        else {
            panic!("not a prometheus request");
        };
        let answer = provider.measure(p).await;
        results.push(req.into_result(now, now, answer));
    }
    pass.finish(results, now)
}

fn single_run(m: Metric) -> AnalysisRunSpec {
    AnalysisRunSpec {
        metrics: vec![m],
        ..Default::default()
    }
}

#[tokio::test]
async fn success_rate_above_and_below_threshold() {
    let exporter = Exporter::start().await.unwrap();
    exporter.add_requests(200, 990);
    exporter.add_requests(500, 10);
    let mut prom = start(&exporter).await;
    let p = provider_for(&prom.url());

    let spec = single_run(metric(
        "success-rate",
        &prom.url(),
        SUCCESS_RATE,
        "result[0] >= 0.95",
    ));
    let u = reconcile(&p, &spec, None, Timestamp::now()).await;
    assert_eq!(u.status.phase, AnalysisPhase::Successful, "{:?}", u.status);
    let m = &u.status.metric_results[0].measurements[0];
    assert_eq!(m.value.as_deref(), Some("[0.99]"));
    assert_eq!(m.metadata[RESOLVED_QUERY_KEY], SUCCESS_RATE);

    // Errors pile up: 82% success.
    exporter.add_requests(500, 170);
    prom.wait_until(
        SUCCESS_RATE,
        |v| v.first().is_some_and(|x| *x < 0.9),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let u = reconcile(&p, &spec, None, Timestamp::now()).await;
    assert_eq!(u.status.phase, AnalysisPhase::Failed);
    let msg = u.status.message.unwrap();
    assert!(
        msg.starts_with("metric \"success-rate\" failed: 0.8")
            && msg.ends_with(" is not >= 0.95 (failures 1 > limit 0)"),
        "{msg}"
    );
    prom.stop();
}

#[tokio::test]
async fn zero_traffic_nan_and_empty_vector() {
    let exporter = Exporter::start().await.unwrap();
    exporter.declare_code(200);
    exporter.declare_code(500);
    let prom = start(&exporter).await;
    let p = provider_for(&prom.url());

    // 0/0 = NaN: a plain threshold fails, an isNaN guard passes, both conditions: Inconclusive.
    let nan = p.measure(&instant(&prom.url(), SUCCESS_RATE)).await;
    match &nan.value {
        Ok(MetricValue::Numbers(v)) => assert!(v.len() == 1 && v[0].is_nan(), "{v:?}"),
        other => panic!("expected [NaN], got {other:?}"),
    }
    let plain = single_run(metric("sr", &prom.url(), SUCCESS_RATE, "result[0] >= 0.95"));
    let u = reconcile(&p, &plain, None, Timestamp::now()).await;
    assert_eq!(u.status.phase, AnalysisPhase::Failed);
    assert_eq!(
        u.status.metric_results[0].measurements[0].value.as_deref(),
        Some("[NaN]")
    );
    let guarded = single_run(metric(
        "sr",
        &prom.url(),
        SUCCESS_RATE,
        "isNaN(result[0]) || result[0] >= 0.95",
    ));
    let u = reconcile(&p, &guarded, None, Timestamp::now()).await;
    assert_eq!(u.status.phase, AnalysisPhase::Successful);
    let mut both = metric("sr", &prom.url(), SUCCESS_RATE, "result[0] >= 0.95");
    both.failure_condition = Some("result[0] < 0.9".into());
    let u = reconcile(&p, &single_run(both), None, Timestamp::now()).await;
    assert_eq!(u.status.phase, AnalysisPhase::Inconclusive);

    // No series at all: an empty vector, an Error measurement saying the query returned no data.
    let empty_query = "sum(http_requests_total{code=\"404\"})";
    let empty = p.measure(&instant(&prom.url(), empty_query)).await;
    assert_eq!(empty.value, Ok(MetricValue::Numbers(vec![])));
    // By default the first measurement waits for data: "not yet", asked again a second later.
    let spec = single_run(metric("sr", &prom.url(), empty_query, "result[0] >= 0.95"));
    let now = Timestamp::now();
    let u = reconcile(&p, &spec, None, now).await;
    let m = &u.status.metric_results[0].measurements[0];
    assert_eq!(m.phase, AnalysisPhase::Running, "{m:?}");
    assert!(
        m.message.as_deref().unwrap().contains("no data yet"),
        "{m:?}"
    );
    assert_eq!(u.requeue_at, Some(now + jiff::SignedDuration::from_secs(1)));
    // With `noData.timeout: 0s` (Argo's behaviour) it is an Error at once.
    let mut argo = metric("sr", &prom.url(), empty_query, "result[0] >= 0.95");
    argo.no_data = Some(sluice::api::analysis::NoDataPolicy {
        retry_interval: None,
        timeout: Some("0s".parse().unwrap()),
    });
    let spec = single_run(argo);
    let u = reconcile(&p, &spec, None, Timestamp::now()).await;
    let m = &u.status.metric_results[0].measurements[0];
    assert_eq!(m.phase, AnalysisPhase::Error);
    assert!(
        m.message
            .as_deref()
            .unwrap()
            .contains("the query returned no data"),
        "{m:?}"
    );
    // The documented guard turns it into a success.
    let spec = single_run(metric(
        "sr",
        &prom.url(),
        empty_query,
        "len(result) == 0 || result[0] >= 0.95",
    ));
    assert_eq!(
        reconcile(&p, &spec, None, Timestamp::now())
            .await
            .status
            .phase,
        AnalysisPhase::Successful
    );
}

#[tokio::test]
async fn bad_promql_is_reported_as_such() {
    let exporter = Exporter::start().await.unwrap();
    exporter.add_requests(200, 1);
    let prom = start(&exporter).await;
    let p = provider_for(&prom.url());
    let r = p
        .measure(&instant(&prom.url(), "sum(rate(http_requests_total[1m]"))
        .await;
    let err = r.value.unwrap_err();
    assert!(
        err.contains("rejected the query as invalid (HTTP 400, bad_data)")
            && err.contains("parse error"),
        "{err}"
    );
}

#[tokio::test]
async fn stopped_prometheus_counts_towards_consecutive_error_limit() {
    let exporter = Exporter::start().await.unwrap();
    exporter.add_requests(200, 100);
    let mut prom = start(&exporter).await;
    let p = provider_for(&prom.url());
    let mut m = metric("sr", &prom.url(), SUCCESS_RATE, "result[0] >= 0.95");
    m.interval = Some("1m".parse().unwrap());
    m.count = Some(IntOrString::Int(10));
    let spec = single_run(m);

    let t0 = Timestamp::now();
    let u = reconcile(&p, &spec, None, t0).await;
    assert_eq!(u.status.phase, AnalysisPhase::Running);
    assert_eq!(u.status.metric_results[0].successful, 1);

    prom.stop();
    let mut status = u.status;
    let mut now = u.requeue_at.unwrap();
    for attempt in 1..=5 {
        let u = reconcile(&p, &spec, Some(&status), now).await;
        let r = &u.status.metric_results[0];
        assert_eq!(r.consecutive_error, attempt);
        let last = r.measurements.last().unwrap();
        let msg = last.message.as_deref().unwrap();
        assert!(
            msg.contains("cannot connect to prometheus")
                && msg.to_lowercase().contains("connection refused"),
            "{msg}"
        );
        if attempt < 5 {
            assert_eq!(u.status.phase, AnalysisPhase::Running);
            // Retried after 10 s, not after the 1 min interval.
            assert_eq!(
                u.requeue_at,
                Some(now + jiff::SignedDuration::from_secs(10))
            );
            now = u.requeue_at.unwrap();
        } else {
            assert_eq!(u.status.phase, AnalysisPhase::Error);
            assert!(
                u.status
                    .message
                    .as_deref()
                    .unwrap()
                    .contains("(consecutive errors 5 > limit 4)")
            );
        }
        status = u.status;
    }
}

#[tokio::test]
async fn slow_prometheus_times_out() {
    let exporter = Exporter::start().await.unwrap();
    exporter.add_requests(200, 1);
    let prom = start(&exporter).await;
    let proxy = SlowProxy::start(prom.addr(), Duration::from_secs(5))
        .await
        .unwrap();
    let p = provider_for(&proxy.url());
    let mut req = instant(&proxy.url(), SUCCESS_RATE);
    req.timeout = Duration::from_secs(1);
    let err = p.measure(&req).await.value.unwrap_err();
    assert_eq!(
        err,
        format!(
            "prometheus at {} did not answer within 1s (timeout)",
            proxy.url()
        )
    );

    // Through the run: `timeout` in seconds from the metric.
    let mut m = metric("sr", &proxy.url(), SUCCESS_RATE, "result[0] >= 0.95");
    if let Some(pm) = m.provider.prometheus.as_mut() {
        pm.timeout = Some(1);
    }
    let u = reconcile(&p, &single_run(m), None, Timestamp::now()).await;
    let r = &u.status.metric_results[0];
    assert_eq!((r.error, r.count), (1, 0));
    assert!(r.message.as_deref().unwrap().contains("(timeout)"));
}

#[tokio::test]
async fn range_query_with_all() {
    let exporter = Exporter::start().await.unwrap();
    exporter.observe_latency(0.02, 100);
    exporter.observe_latency(0.2, 5);
    let prom = start(&exporter).await;
    let p = provider_for(&prom.url());
    let p99 = "histogram_quantile(0.99, sum by (le) (http_request_duration_seconds_bucket))";
    // Wait for a few scrapes so the window holds several samples.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let range = |slow_limit: &str| {
        let mut m = metric(
            "p99",
            &prom.url(),
            p99,
            &format!("len(result) > 0 && all(result, {{# < {slow_limit}}})"),
        );
        if let Some(pm) = m.provider.prometheus.as_mut() {
            pm.range_query = Some(PrometheusRangeQuery {
                start: "now() - duration(\"10s\")".into(),
                end: "now()".into(),
                step: "1s".into(),
            });
        }
        single_run(m)
    };
    let now = Timestamp::now();
    let u = reconcile(&p, &range("0.5"), None, now).await;
    assert_eq!(u.status.phase, AnalysisPhase::Successful, "{:?}", u.status);
    let value = u.status.metric_results[0].measurements[0]
        .value
        .clone()
        .unwrap();
    assert!(
        value.matches(',').count() >= 2,
        "several samples expected: {value}"
    );
    let u = reconcile(&p, &range("0.1"), None, now).await;
    assert_eq!(u.status.phase, AnalysisPhase::Failed);

    // The provider straight: a matrix is flattened.
    let mut req = instant(&prom.url(), "http_requests_total");
    exporter.add_requests(200, 1);
    exporter.add_requests(500, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = Timestamp::now();
    req.range = Some(RangeWindow {
        start: now - jiff::SignedDuration::from_secs(2),
        end: now,
        step: Duration::from_secs(1),
    });
    match p.measure(&req).await.value {
        Ok(MetricValue::Numbers(v)) => assert!(v.len() >= 4, "two series x several steps: {v:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn scalar_results_are_numbers() {
    let exporter = Exporter::start().await.unwrap();
    exporter.add_requests(200, 3);
    let prom = start(&exporter).await;
    let p = provider_for(&prom.url());
    let r = p
        .measure(&instant(&prom.url(), "scalar(sum(http_requests_total))"))
        .await;
    assert_eq!(r.value, Ok(MetricValue::Number(3.0)));
    // A string result is not supported.
    let r = p.measure(&instant(&prom.url(), "\"text\"")).await;
    assert!(
        r.value
            .unwrap_err()
            .contains("result type \"string\" is not supported")
    );
}

#[tokio::test]
async fn addresses_outside_the_allowlist_are_refused() {
    let exporter = Exporter::start().await.unwrap();
    let prom = start(&exporter).await;
    // The default-port entry does not cover Prometheus's random port.
    let err = provider()
        .measure(&instant(&prom.url(), "up"))
        .await
        .value
        .unwrap_err();
    assert_eq!(
        err,
        format!(
            "prometheus address \"{}\" is not in the controller's allowlist of metric provider addresses (allowed: http://127.0.0.1)",
            prom.url()
        )
    );
    let err = PrometheusProvider::new(PrometheusConfig::default())
        .unwrap()
        .measure(&instant("http://169.254.169.254", "up"))
        .await
        .value
        .unwrap_err();
    assert!(err.contains("(allowed: none configured)"), "{err}");
}

#[tokio::test]
async fn warnings_and_non_prometheus_answers() {
    // A server that is not Prometheus: the body is quoted, not parsed into nonsense.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/html/api/v1/query",
            axum::routing::get(|| async { "<html>login</html>" }),
        )
        .route(
            "/warn/api/v1/query",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                // Echo the authorization header back as a warning, to check it is sent.
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string();
                axum::Json(serde_json::json!({
                    "status": "success",
                    "warnings": [format!("auth={auth}")],
                    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]}
                }))
            }),
        )
        .route(
            "/huge/api/v1/query",
            axum::routing::get(|| async { " ".repeat(17 * 1024 * 1024) }),
        )
        .route(
            "/down/api/v1/query",
            axum::routing::get(|| async { (axum::http::StatusCode::BAD_GATEWAY, "upstream down") }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let base = format!("http://{addr}");
    let p = provider_for(&base);
    let err = p
        .measure(&instant(&format!("{base}/html"), "up"))
        .await
        .value
        .unwrap_err();
    assert!(
        err.contains("not a Prometheus API response") && err.contains("<html>login</html>"),
        "{err}"
    );
    let err = p
        .measure(&instant(&format!("{base}/huge"), "up"))
        .await
        .value
        .unwrap_err();
    assert_eq!(
        err,
        format!("prometheus at {base}/huge returned more than 16 MiB; narrow the query")
    );
    let err = p
        .measure(&instant(&format!("{base}/down"), "up"))
        .await
        .value
        .unwrap_err();
    assert_eq!(
        err,
        format!("prometheus at {base}/down returned HTTP 502: upstream down")
    );
    let mut req = instant(&format!("{base}/warn"), "up");
    req.basic_auth = Some(("user".into(), "pw".into()));
    let r = p.measure(&req).await;
    assert_eq!(r.value, Ok(MetricValue::Numbers(vec![1.0])));
    assert_eq!(r.metadata["warnings"], "auth=Basic dXNlcjpwdw==");
    let mut req = instant(&format!("{base}/warn"), "up");
    req.headers = vec![("Authorization".into(), "Bearer t0k".into())];
    assert_eq!(
        p.measure(&req).await.metadata["warnings"],
        "auth=Bearer t0k"
    );
    let _ = BTreeMap::<String, String>::new();
}

/// A TLS-terminating proxy, with a certificate from a private CA (made with `openssl`, installed
/// when missing), in front of a real Prometheus.
struct TlsProxy {
    url: String,
    /// The private CA's certificate.
    cert_pem: String,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_proxy(upstream: std::net::SocketAddr) -> TlsProxy {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f);
    let openssl_bin =
        sluice_e2e::prometheus::ensure_tool("openssl", "openssl").unwrap_or_else(|e| panic!("{e}"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new(&openssl_bin)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A private CA, and a server certificate it signs for 127.0.0.1.
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=sluice-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        path("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let (cert, key) = (path("cert.pem"), path("key.pem"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await
                    && let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    TlsProxy {
        url,
        cert_pem: std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
        task,
        _dir: dir,
    }
}

#[tokio::test]
async fn insecure_or_ca_cert_reach_a_private_ca_server_that_default_tls_rejects() {
    let exporter = Exporter::start().await.unwrap();
    exporter.add_requests(200, 4);
    let prom = start(&exporter).await;
    let proxy = tls_proxy(prom.addr()).await;
    let p = provider_for(&proxy.url);
    let query = "sum(http_requests_total)";

    let err = p
        .measure(&instant(&proxy.url, query))
        .await
        .value
        .unwrap_err();
    assert!(
        err.starts_with(&format!("cannot connect to prometheus at {}", proxy.url))
            && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    let mut req = instant(&proxy.url, query);
    req.insecure = true;
    assert_eq!(
        p.measure(&req).await.value,
        Ok(MetricValue::Numbers(vec![4.0]))
    );

    // caCert: verification stays on, with the given CA trusted.
    let mut req = instant(&proxy.url, query);
    req.ca_cert = Some(proxy.cert_pem.clone());
    assert_eq!(
        p.measure(&req).await.value,
        Ok(MetricValue::Numbers(vec![4.0]))
    );
    req.ca_cert = Some("not a certificate".into());
    let err = p.measure(&req).await.value.unwrap_err();
    assert!(err.starts_with("provider.prometheus.caCert"), "{err}");
}
