//! Blast radius and abort latency of a bad canary through the local closed loop.
//!
//! `cargo run --release --example closed_loop_bench [-- RUNS [INITIAL_DELAY]]` (default 5 runs,
//! no `initialDelay`; e.g. `-- 5 5s`): a version that
//! fails 30% of requests is rolled out behind a real nginx at 50 requests/s, first step 10%,
//! the shipped `nginx-success-rate` template measuring every 5 s. Per run and as medians:
//! - blast radius: requests the bad version served, and how many of them failed;
//! - abort latency: from the first Prometheus scrape in which a canary 5xx is visible to the
//!   last request nginx sent to the canary;
//! - the theoretical minimum blast radius: weight x rate x time from the canary's first request
//!   to the first failing measurement, and the ratio of the observed one to it.

use std::time::{Duration, Instant, SystemTime};

use kube::api::Api;
use sluice::api::analysis::AnalysisRun;
use sluice::demo::stack::{LocalStack, nginx_app, rollout_yaml, template};
use sluice_e2e::demo_app::ERROR_RATIO;
use sluice_e2e::loadgen::split_of;

const NS: &str = "default";
const RATE: u32 = 50;
const WEIGHT: f64 = 0.10;

const CANARY: &str = "      canaryService: web-canary
      stableService: web-stable
      scaleDownDelaySeconds: 2
      abortScaleDownDelaySeconds: 2
      trafficRouting:
        nginx: {stableIngress: web}
      steps:
      - setWeight: 10
      - analysis:
          templates: [{templateName: nginx-success-rate}]
          args:
          - {name: namespace, value: default}
          - {name: ingress, value: web}
          - {name: service, value: web-canary}
          - {name: window, value: 10s}
          - {name: count, value: \"3\"}
      - setWeight: 50
      - pause: {duration: 10s}
";

struct Run {
    /// Each measurement: phase, value, time after the canary's first request.
    measurements: Vec<String>,
    served: usize,
    failed: usize,
    abort_latency: Duration,
    to_first_failure: Duration,
    theoretical: f64,
}

fn instant_of(base: (Instant, SystemTime), ts: jiff::Timestamp) -> Instant {
    let base_ts = jiff::Timestamp::try_from(base.1).unwrap_or(ts);
    let d = ts.duration_since(base_ts);
    let ms = d.as_millis();
    if ms >= 0 {
        base.0 + Duration::from_millis(ms as u64)
    } else {
        base.0 - Duration::from_millis((-ms) as u64)
    }
}

fn first_of(load: &sluice_e2e::loadgen::LoadGenerator, started: Instant) -> Instant {
    load.between(started, Instant::now())
        .iter()
        .filter(|s| s.version == "v2")
        .map(|s| s.sent)
        .min()
        .unwrap_or(started)
}

async fn one_run(initial_delay: Option<&str>) -> anyhow::Result<Run> {
    let stack = LocalStack::start().await?;
    stack.apply_yaml(&nginx_app(NS)).await?;
    stack
        .apply(template("nginx-success-rate", "5s", initial_delay)?)
        .await?;
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v1", &[], CANARY))
        .await?;
    let healthy = |r: &sluice::api::rollout::Rollout| {
        r.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.as_str() == "Healthy")
    };
    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), healthy)
        .await?;
    let load = stack.load("web.example", RATE);
    // Until nginx serves v1 everywhere.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        let w = load.between(now - Duration::from_secs(2), now - Duration::from_secs(1));
        if !w.is_empty() && w.iter().all(|s| s.version == "v1" && !s.failed()) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "nginx never served v1");
    }
    let base = (Instant::now(), SystemTime::now());
    let started = Instant::now();
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v2", &[(ERROR_RATIO, "0.3")], CANARY))
        .await?;
    // First scrape in which a canary failure is visible.
    let mut visible = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if visible.is_none()
            && stack
                .prometheus
                .query("sum(nginx_ingress_controller_requests{canary!=\"\",status=~\"5..\"})")
                .await
                .is_ok_and(|v| v.first().is_some_and(|x| *x > 0.0))
        {
            visible = Some(Instant::now());
        }
        let r = stack.rollout(NS, "web").await?;
        let st = r.status.clone().unwrap_or_default();
        let aborted = st.phase.is_some_and(|p| p.as_str() == "Degraded")
            && st
                .canary
                .weights
                .as_ref()
                .is_none_or(|w| w.canary.weight == 0);
        if aborted && visible.is_some() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no abort: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let samples = load.between(started, Instant::now());
    let blast = split_of(&samples, "v2");
    let canary: Vec<_> = samples.iter().filter(|s| s.version == "v2").collect();
    let first = canary.first().map(|s| s.sent).unwrap_or(started);
    let last = canary.iter().map(|s| s.sent).max().unwrap_or(started);
    let visible = visible.unwrap_or(last);
    let runs: Api<AnalysisRun> = Api::namespaced(stack.client(), NS);
    let all_runs = runs.list(&Default::default()).await?.items;
    let measurements: Vec<String> = all_runs
        .iter()
        .filter_map(|r| r.status.as_ref())
        .flat_map(|s| s.metric_results.iter())
        .flat_map(|m| m.measurements.iter())
        .map(|m| {
            let at = m
                .finished_at
                .as_ref()
                .map(|t| instant_of(base, t.0))
                .map_or(String::from("?"), |i| {
                    format!(
                        "{:.1}s",
                        i.saturating_duration_since(first_of(&load, started))
                            .as_secs_f64()
                    )
                });
            format!(
                "{} {} at {at}",
                m.phase.as_str(),
                m.value.as_deref().unwrap_or("-")
            )
        })
        .collect();
    let first_failure = all_runs
        .iter()
        .filter_map(|r| r.status.as_ref())
        .flat_map(|s| s.metric_results.iter())
        .flat_map(|m| m.measurements.iter())
        .filter(|m| m.phase.as_str() == "Failed")
        .filter_map(|m| m.finished_at.as_ref().map(|t| instant_of(base, t.0)))
        .min()
        .unwrap_or(last);
    let to_first_failure = first_failure.saturating_duration_since(first);
    Ok(Run {
        measurements,
        served: blast.version,
        failed: blast.version_failed,
        abort_latency: last.saturating_duration_since(visible),
        to_first_failure,
        theoretical: WEIGHT * f64::from(RATE) * to_first_failure.as_secs_f64(),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let initial_delay = std::env::args().nth(2);
    let rt = tokio::runtime::Runtime::new()?;
    let mut results = Vec::new();
    println!(
        "bad canary (30% errors), {RATE} req/s, first step {:.0}%, analysis every 5s, initialDelay {}",
        WEIGHT * 100.0,
        initial_delay.as_deref().unwrap_or("none")
    );
    for i in 0..runs {
        let r = rt.block_on(one_run(initial_delay.as_deref()))?;
        println!(
            "run {}: served by the bad version {:>3}, failed {:>3}, abort latency {:>5.2}s, \
             canary start to first failing measurement {:>5.2}s, theoretical minimum {:>5.1} ({:.2}x)",
            i + 1,
            r.served,
            r.failed,
            r.abort_latency.as_secs_f64(),
            r.to_first_failure.as_secs_f64(),
            r.theoretical,
            r.served as f64 / r.theoretical.max(1e-9)
        );
        println!("       measurements: {}", r.measurements.join("; "));
        results.push(r);
    }
    println!(
        "median of {runs}: served {}, failed {}, abort latency {:.2}s, theoretical minimum {:.1}, ratio {:.2}",
        median(results.iter().map(|r| r.served as f64).collect()),
        median(results.iter().map(|r| r.failed as f64).collect()),
        median(
            results
                .iter()
                .map(|r| r.abort_latency.as_secs_f64())
                .collect()
        ),
        median(results.iter().map(|r| r.theoretical).collect()),
        median(
            results
                .iter()
                .map(|r| r.served as f64 / r.theoretical.max(1e-9))
                .collect()
        ),
    );
    Ok(())
}
