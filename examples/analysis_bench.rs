//! Prints how many condition evaluations and measurement-accounting steps one core does per
//! second: `cargo run --release --example analysis_bench`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice::analysis::accounting::{self, MetricLimits};
use sluice::analysis::args::SecretValues;
use sluice::analysis::condition::Conditions;
use sluice::analysis::run::{ProviderResult, begin};
use sluice::analysis::value::MetricValue;
use sluice::api::analysis::{
    AnalysisRunSpec, AnalysisRunStatus, Measurement, Metric, MetricProvider, MetricResult,
    PrometheusMetric,
};
use sluice::api::common::AnalysisPhase;

/// Runs `f` repeatedly for about `budget` and returns operations per second.
fn rate(budget: Duration, mut f: impl FnMut() -> u64) -> f64 {
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < budget {
        ops += f();
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let budget = Duration::from_secs(2);
    println!(
        "analysis benchmark (one thread, {}s per figure)",
        budget.as_secs()
    );

    let forms: &[(&str, MetricValue)] = &[
        ("result[0] >= 0.95", MetricValue::Numbers(vec![0.97])),
        (
            "len(result) > 0 && result[0] < 0.05",
            MetricValue::Numbers(vec![0.01]),
        ),
        (
            "isNaN(result[0]) || result[0] >= 0.95",
            MetricValue::Numbers(vec![f64::NAN]),
        ),
        (
            "all(result, {# < 1000})",
            MetricValue::Numbers((0..60).map(f64::from).collect()),
        ),
        ("default(result, 0) > 5", MetricValue::Number(7.0)),
    ];
    for (src, value) in forms {
        let c = Conditions::compile(Some(src), None).unwrap_or_else(|e| panic!("{e}"));
        let per_sec = rate(budget, || {
            for _ in 0..1000 {
                black_box(c.evaluate(black_box(value)));
            }
            1000
        });
        let shown = match value {
            MetricValue::Numbers(v) if v.len() > 3 => format!("{} samples", v.len()),
            other => other.to_string(),
        };
        println!("condition evaluations/s  {per_sec:>12.0}  {src}  (result = {shown})");
    }

    let limits = MetricLimits {
        count: None,
        interval: Some(Duration::from_secs(60)),
        failure_limit: Some(3),
        ..Default::default()
    };
    let phases = [
        AnalysisPhase::Successful,
        AnalysisPhase::Failed,
        AnalysisPhase::Successful,
        AnalysisPhase::Error,
        AnalysisPhase::Inconclusive,
    ];
    let per_sec = rate(budget, || {
        let mut r = MetricResult {
            name: "success-rate".into(),
            ..Default::default()
        };
        for i in 0..1000 {
            let m = Measurement {
                phase: phases[i % phases.len()],
                value: Some("[0.97]".into()),
                ..Default::default()
            };
            accounting::record(&mut r, m, 10);
            // Reset the counters that would complete the metric, so every step does the full work.
            r.failed = 0;
            r.inconclusive = 0;
            r.consecutive_error = 0;
            black_box(accounting::assess_metric(&limits, &r, false));
        }
        1000
    });
    println!(
        "accounting steps/s       {per_sec:>12.0}  (record + assess one measurement, 10 kept)"
    );

    // A whole reconcile pass: resolve args, schedule, evaluate the condition, record, assess.
    let spec = AnalysisRunSpec {
        metrics: vec![Metric {
            name: "success-rate".into(),
            interval: Some("1m".parse().unwrap_or_else(|e| panic!("{e}"))),
            count: Some(IntOrString::Int(1_000_000)),
            success_condition: Some("result[0] >= 0.95".into()),
            failure_limit: Some(IntOrString::Int(3)),
            provider: MetricProvider {
                prometheus: Some(PrometheusMetric {
                    address: Some("http://prometheus:9090".into()),
                    query: "sum(rate(http_requests_total{code!~\"5..\"}[1m])) / sum(rate(http_requests_total[1m]))".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let secrets = SecretValues::new();
    let t0: Timestamp = "2026-01-01T00:00:00Z"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let per_sec = rate(budget, || {
        let mut status: Option<AnalysisRunStatus> = None;
        let mut now = t0;
        for _ in 0..200 {
            let pass = begin(&spec, status.as_ref(), &secrets, now);
            let results = pass
                .requests
                .clone()
                .into_iter()
                .map(|r| {
                    r.into_result(
                        now,
                        now,
                        ProviderResult {
                            value: Ok(MetricValue::Numbers(vec![0.97])),
                            metadata: BTreeMap::new(),
                            phase: None,
                        },
                    )
                })
                .collect();
            let u = pass.finish(results, now);
            now = u.requeue_at.unwrap_or(now);
            status = Some(u.status);
        }
        200
    });
    println!(
        "reconcile passes/s       {per_sec:>12.0}  (begin + evaluate + record + finish, one metric)"
    );
}
