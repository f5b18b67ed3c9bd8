//! The judge provider and the "no data yet" measurements through the analysis pipeline, against
//! a real Prometheus server scraping exporters whose counters each test sets: one exporter is
//! the canary, another the baseline.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use sluice::analysis::args::SecretValues;
use sluice::analysis::run::{MeasurementRequest, ProviderRequest, Update, begin};
use sluice::api::analysis::{
    AnalysisRunSpec, AnalysisRunStatus, JudgeMetric, JudgeQueries, Metric, MetricProvider,
    PrometheusMetric,
};
use sluice::api::common::AnalysisPhase;
use sluice::metrics::prometheus::{AddressAllowlist, PrometheusConfig, PrometheusProvider};
use sluice_e2e::prometheus::{Exporter, PrometheusServer};

fn provider(url: &str) -> PrometheusProvider {
    PrometheusProvider::new(PrometheusConfig {
        allowlist: AddressAllowlist::new([url]).unwrap_or_else(|e| panic!("{e}")),
        default_address: None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// One reconcile pass with the real providers.
async fn reconcile(
    p: &PrometheusProvider,
    spec: &AnalysisRunSpec,
    status: Option<&AnalysisRunStatus>,
    now: Timestamp,
) -> Update {
    let pass = begin(spec, status, &SecretValues::new(), now);
    let mut results = Vec::new();
    for req in pass.requests.clone() {
        let answer = match &req.provider {
            ProviderRequest::Prometheus(q) => p.measure(q).await,
            ProviderRequest::Judge(j) => sluice::metrics::judge::measure(p, j).await,
            other => panic!("unexpected request {other:?}"),
        };
        let MeasurementRequest { .. } = &req;
        results.push(req.into_result(now, now, answer));
    }
    pass.finish(results, now)
}

fn queries(instance: &str, latency: bool) -> JudgeQueries {
    JudgeQueries {
        requests: format!("sum(http_requests_total{{instance=\"{instance}\"}})"),
        errors: format!("sum(http_requests_total{{instance=\"{instance}\",code=~\"5..\"}})"),
        latency_buckets: latency.then(|| {
            format!("sum by (le) (http_request_duration_seconds_bucket{{instance=\"{instance}\"}})")
        }),
    }
}

fn judge_metric(address: &str, canary: &str, baseline: &str, latency: bool) -> Metric {
    Metric {
        name: "judge".into(),
        provider: MetricProvider {
            judge: Some(JudgeMetric {
                address: Some(address.into()),
                canary: queries(canary, latency),
                baseline: Some(queries(baseline, latency)),
                acceptable_error_rate: "0.05".into(),
                unacceptable_error_rate: "0.3".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn run_of(m: Metric) -> AnalysisRunSpec {
    AnalysisRunSpec {
        metrics: vec![m],
        ..Default::default()
    }
}

async fn until_scraped(prom: &PrometheusServer, query: &str, at_least: f64) {
    prom.wait_until(
        query,
        |v| v.first().is_some_and(|x| *x >= at_least),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{query} never reached {at_least}: {e}"));
}

struct Setup {
    canary: Exporter,
    baseline: Exporter,
    prom: PrometheusServer,
    provider: PrometheusProvider,
}

impl Setup {
    async fn start() -> Setup {
        let canary = Exporter::start().await.unwrap();
        let baseline = Exporter::start().await.unwrap();
        canary.declare_code(200);
        baseline.declare_code(200);
        let prom = PrometheusServer::start(&[canary.addr(), baseline.addr()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let provider = provider(&prom.url());
        Setup {
            canary,
            baseline,
            prom,
            provider,
        }
    }

    fn metric(&self, latency: bool) -> Metric {
        judge_metric(
            &self.prom.url(),
            &self.canary.addr().to_string(),
            &self.baseline.addr().to_string(),
            latency,
        )
    }

    async fn scraped(&self, canary_requests: f64, baseline_requests: f64) {
        let c = format!(
            "sum(http_requests_total{{instance=\"{}\"}})",
            self.canary.addr()
        );
        let b = format!(
            "sum(http_requests_total{{instance=\"{}\"}})",
            self.baseline.addr()
        );
        until_scraped(&self.prom, &c, canary_requests).await;
        until_scraped(&self.prom, &b, baseline_requests).await;
    }
}

#[tokio::test]
async fn a_bad_canary_is_failed_as_soon_as_the_evidence_is_there() {
    let s = Setup::start().await;
    let spec = run_of(s.metric(false));
    let t = Timestamp::now();
    // First look: nothing counted yet, nothing decided, looked at again a second later.
    let u = reconcile(&s.provider, &spec, None, t).await;
    assert_eq!(u.status.phase, AnalysisPhase::Running, "{:?}", u.status);
    let m = &u.status.metric_results[0].measurements[0];
    assert_eq!(m.phase, AnalysisPhase::Running);
    assert_eq!(u.requeue_at, Some(t + jiff::SignedDuration::from_secs(1)));
    // 16 canary requests, 5 failed; 150 good ones on the baseline.
    s.canary.add_requests(200, 11);
    s.canary.add_requests(500, 5);
    s.baseline.add_requests(200, 150);
    s.scraped(16.0, 150.0).await;
    let u = reconcile(
        &s.provider,
        &spec,
        Some(&u.status),
        t + jiff::SignedDuration::from_secs(2),
    )
    .await;
    assert_eq!(u.status.phase, AnalysisPhase::Failed, "{:?}", u.status);
    let r = &u.status.metric_results[0];
    assert_eq!(r.measurements.len(), 1, "one measurement, decided");
    let m = &r.measurements[0];
    assert_eq!(m.phase, AnalysisPhase::Failed);
    assert_eq!(
        m.message.as_deref(),
        Some("canary errors 31% of 16 requests vs 0% of 150 on stable: worse with 99% confidence")
    );
    assert_eq!(m.metadata["judge.canaryRequests"], "16");
    assert_eq!(m.metadata["judge.canaryErrors"], "5");
    assert_eq!(m.metadata["judge.baselineRequests"], "150");
    assert_eq!(m.metadata["judge.confidence"], "0.99");
    assert_eq!(m.metadata["judge.failBoundary"], "4.5951");
    assert!(m.finished_at.is_some());
    assert!(
        u.status
            .message
            .as_deref()
            .unwrap()
            .contains("worse with 99% confidence"),
        "{:?}",
        u.status.message
    );
}

#[tokio::test]
async fn a_good_canary_passes_once_enough_requests_say_so() {
    let s = Setup::start().await;
    // Requests from before the run do not count.
    s.canary.add_requests(500, 50);
    s.scraped(50.0, 0.0).await;
    let spec = run_of(s.metric(false));
    let t = Timestamp::now();
    let u = reconcile(&s.provider, &spec, None, t).await;
    assert_eq!(u.status.phase, AnalysisPhase::Running);
    // 10 good requests: not enough evidence yet (16 are needed at these settings).
    s.canary.add_requests(200, 10);
    s.scraped(60.0, 0.0).await;
    let t1 = t + jiff::SignedDuration::from_secs(1);
    let u = reconcile(&s.provider, &spec, Some(&u.status), t1).await;
    assert_eq!(u.status.phase, AnalysisPhase::Running, "{:?}", u.status);
    let m = &u.status.metric_results[0].measurements[0];
    assert_eq!(m.metadata["judge.canaryRequests"], "10", "{m:?}");
    assert!(m.message.as_deref().unwrap().contains("undecided"), "{m:?}");
    s.canary.add_requests(200, 40);
    s.baseline.add_requests(200, 100);
    s.scraped(100.0, 100.0).await;
    let u = reconcile(
        &s.provider,
        &spec,
        Some(&u.status),
        t + jiff::SignedDuration::from_secs(2),
    )
    .await;
    assert_eq!(u.status.phase, AnalysisPhase::Successful, "{:?}", u.status);
    let m = &u.status.metric_results[0].measurements[0];
    assert_eq!(
        m.message.as_deref(),
        Some(
            "canary errors 0% of 50 requests vs 0% of 100 on stable: not worse than 5.0% with 99% confidence"
        )
    );
}

#[tokio::test]
async fn slower_canary_latency_fails_it() {
    let s = Setup::start().await;
    let spec = run_of(s.metric(true));
    let t = Timestamp::now();
    let u = reconcile(&s.provider, &spec, None, t).await;
    assert_eq!(u.status.phase, AnalysisPhase::Running);
    s.canary.add_requests(200, 15);
    s.canary.observe_latency(0.35, 15);
    s.baseline.add_requests(200, 150);
    s.baseline.observe_latency(0.004, 150);
    s.scraped(15.0, 150.0).await;
    until_scraped(
        &s.prom,
        &format!(
            "sum(http_request_duration_seconds_count{{instance=\"{}\"}})",
            s.canary.addr()
        ),
        15.0,
    )
    .await;
    let u = reconcile(
        &s.provider,
        &spec,
        Some(&u.status),
        t + jiff::SignedDuration::from_secs(1),
    )
    .await;
    assert_eq!(u.status.phase, AnalysisPhase::Failed, "{:?}", u.status);
    let m = &u.status.metric_results[0].measurements[0];
    assert!(m.message.as_deref().unwrap().contains("slower"), "{m:?}");
    assert_eq!(m.metadata["judge.latencyCanaryRequests"], "15");
}

#[tokio::test]
async fn several_series_and_counter_resets_are_errors_naming_them_never_verdicts() {
    let s = Setup::start().await;
    s.canary.add_requests(500, 3);
    s.scraped(3.0, 0.0).await;
    // Not aggregated: one series per code.
    let mut m = s.metric(false);
    m.provider.judge.as_mut().unwrap().canary.requests =
        format!("http_requests_total{{instance=\"{}\"}}", s.canary.addr());
    let u = reconcile(&s.provider, &run_of(m), None, Timestamp::now()).await;
    let x = &u.status.metric_results[0].measurements[0];
    assert_eq!(x.phase, AnalysisPhase::Error, "{x:?}");
    let msg = x.message.as_deref().unwrap();
    assert!(
        msg.contains("provider.judge.canary.requests returned 2 series where one is expected"),
        "{msg}"
    );
    assert!(msg.contains("code=\"500\""), "{msg}");

    // A counter that goes down: the canary is the sum of two exporters, one of them stops.
    let extra = Exporter::start().await.unwrap();
    extra.add_requests(200, 100);
    let prom = PrometheusServer::start(&[s.canary.addr(), extra.addr()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let p = provider(&prom.url());
    let both = format!(
        "{}|{}",
        s.canary.addr().to_string().replace('.', "\\\\."),
        extra.addr().to_string().replace('.', "\\\\.")
    );
    let mut m = judge_metric(&prom.url(), "unused", "unused", false);
    {
        let j = m.provider.judge.as_mut().unwrap();
        j.canary.requests = format!("sum(http_requests_total{{instance=~\"{both}\"}})");
        j.canary.errors = format!("sum(http_requests_total{{instance=~\"{both}\",code=~\"5..\"}})");
        j.baseline = None;
    }
    let spec = run_of(m);
    until_scraped(
        &prom,
        &format!("sum(http_requests_total{{instance=~\"{both}\"}})"),
        103.0,
    )
    .await;
    let t = Timestamp::now();
    let u = reconcile(&p, &spec, None, t).await;
    assert_eq!(u.status.phase, AnalysisPhase::Running, "{:?}", u.status);
    drop(extra);
    prom.wait_until(
        &format!("sum(http_requests_total{{instance=~\"{both}\"}})"),
        |v| v.first().is_some_and(|x| *x < 100.0),
        Duration::from_secs(60),
    )
    .await
    .expect("the stopped exporter's series go stale");
    let u = reconcile(
        &p,
        &spec,
        Some(&u.status),
        t + jiff::SignedDuration::from_secs(1),
    )
    .await;
    let x = u.status.metric_results[0].measurements.last().unwrap();
    assert_eq!(x.phase, AnalysisPhase::Error, "{x:?}");
    let msg = x.message.as_deref().unwrap();
    assert!(
        msg.contains("provider.judge.canary.requests went down from 103 to 3"),
        "{msg}"
    );
    assert_eq!(
        u.status.phase,
        AnalysisPhase::Running,
        "an error, not a verdict"
    );
}

#[tokio::test]
async fn a_classic_metric_waits_for_the_canary_first_request_then_decides() {
    let s = Setup::start().await;
    let query = format!(
        "sum(http_requests_total{{instance=\"{}\",code=\"201\"}})",
        s.canary.addr()
    );
    let spec = run_of(Metric {
        name: "created".into(),
        success_condition: Some("result[0] >= 1".into()),
        provider: MetricProvider {
            prometheus: Some(PrometheusMetric {
                address: Some(s.prom.url()),
                query: query.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    });
    let t = Timestamp::now();
    let u = reconcile(&s.provider, &spec, None, t).await;
    let m = &u.status.metric_results[0].measurements[0];
    assert_eq!(m.phase, AnalysisPhase::Running, "{m:?}");
    assert!(u.first_errors.is_empty());
    s.canary.add_requests(201, 2);
    until_scraped(&s.prom, &query, 2.0).await;
    let at = u.requeue_at.unwrap();
    assert_eq!(at, t + jiff::SignedDuration::from_secs(1));
    let u = reconcile(&s.provider, &spec, Some(&u.status), at).await;
    assert_eq!(u.status.phase, AnalysisPhase::Successful, "{:?}", u.status);
    let r = &u.status.metric_results[0];
    assert_eq!((r.count, r.error), (1, 0));
}

fn run_error(m: Metric) -> String {
    let spec = run_of(m);
    let pass = begin(&spec, None, &SecretValues::new(), Timestamp::now());
    assert!(pass.requests.is_empty());
    let u = pass.finish(Vec::new(), Timestamp::now());
    assert_eq!(u.status.phase, AnalysisPhase::Error, "{:?}", u.status);
    u.status.message.unwrap()
}

#[test]
fn bad_judge_settings_error_the_run_naming_the_field() {
    let base = judge_metric("http://127.0.0.1:9090", "c", "b", false);
    let mut m = base.clone();
    m.provider.judge.as_mut().unwrap().confidence = Some("1.5".into());
    let e = run_error(m);
    assert!(
        e.contains("provider.judge.confidence \"1.5\" must be strictly between 0 and 1"),
        "{e}"
    );
    let mut m = base.clone();
    m.provider.judge.as_mut().unwrap().confidence = Some("0".into());
    assert!(run_error(m).contains("provider.judge.confidence"));
    let mut m = base.clone();
    m.provider.judge.as_mut().unwrap().canary.errors = String::new();
    let e = run_error(m);
    assert!(
        e.contains("provider.judge.canary.errors is required"),
        "{e}"
    );
    let mut m = base.clone();
    m.provider.judge.as_mut().unwrap().acceptable_error_rate = "0.4".into();
    let e = run_error(m);
    assert!(
        e.contains(
            "provider.judge.unacceptableErrorRate 0.3 must be above acceptableErrorRate 0.4"
        ),
        "{e}"
    );
    let mut m = base;
    m.provider
        .judge
        .as_mut()
        .unwrap()
        .baseline
        .as_mut()
        .unwrap()
        .latency_buckets = Some("sum by (le) (x_bucket)".into());
    let e = run_error(m);
    assert!(
        e.contains("provider.judge.canary.latencyBuckets is required"),
        "{e}"
    );
    let _ = BTreeMap::<String, String>::new();
}
