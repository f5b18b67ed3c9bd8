//! AnalysisRun reconcile logic: scheduling, accounting, phases, messages, Secrets. Pure, with
//! synthetic provider answers; the real-Prometheus tests live in `prometheus_provider.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use sluice::analysis::args::{SecretValues, secret_refs};
use sluice::analysis::run::{
    MeasurementRequest, ProviderRequest, ProviderResult, RESOLVED_QUERY_KEY, Update, begin,
};
use sluice::analysis::value::MetricValue;
use sluice::api::analysis::{
    AnalysisRunSpec, AnalysisRunStatus, Argument, Metric, MetricProvider, NoDataPolicy,
    PrometheusMetric, SecretKeyRef, TtlStrategy, ValueFrom, WebMetricHeader,
};
use sluice::api::common::AnalysisPhase::{self, *};
use sluice::api::common::{DryRun, MeasurementRetention};

fn t0() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0() + jiff::SignedDuration::from_secs(secs)
}

fn prom(query: &str) -> MetricProvider {
    MetricProvider {
        prometheus: Some(PrometheusMetric {
            address: Some("http://prometheus:9090".into()),
            query: query.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A metric whose verdict the test picks through the value: 1 ⇒ Successful, 2 ⇒ Failed,
/// 3 ⇒ Inconclusive.
fn metric(name: &str) -> Metric {
    Metric {
        name: name.into(),
        success_condition: Some("result == 1".into()),
        failure_condition: Some("result == 2".into()),
        provider: prom("vector(1)"),
        ..Default::default()
    }
}

fn every_minute(mut m: Metric, count: i32) -> Metric {
    m.interval = Some("1m".parse().unwrap());
    m.count = Some(IntOrString::Int(count));
    m
}

fn spec(metrics: Vec<Metric>) -> AnalysisRunSpec {
    AnalysisRunSpec {
        metrics,
        ..Default::default()
    }
}

fn value_for(phase: AnalysisPhase) -> Result<MetricValue, String> {
    match phase {
        Successful => Ok(MetricValue::Number(1.0)),
        Failed => Ok(MetricValue::Number(2.0)),
        Inconclusive => Ok(MetricValue::Number(3.0)),
        _ => Err("dial tcp 127.0.0.1:9: connection refused".into()),
    }
}

/// One reconcile pass in which every due measurement gets the verdict `pick` chooses.
fn pass(
    spec: &AnalysisRunSpec,
    status: Option<&AnalysisRunStatus>,
    secrets: &SecretValues,
    now: Timestamp,
    mut pick: impl FnMut(&MeasurementRequest) -> Result<MetricValue, String>,
) -> (Vec<MeasurementRequest>, Update) {
    let p = begin(spec, status, secrets, now);
    let requests = p.requests.clone();
    let results = requests
        .iter()
        .cloned()
        .map(|r| {
            let value = pick(&r);
            r.into_result(
                now,
                now,
                ProviderResult {
                    value,
                    metadata: BTreeMap::new(),
                    phase: None,
                },
            )
        })
        .collect();
    (requests, p.finish(results, now))
}

fn metric_result<'a>(
    st: &'a AnalysisRunStatus,
    name: &str,
) -> &'a sluice::api::analysis::MetricResult {
    st.metric_results.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn first_pass_measures_every_metric_and_starts_the_run() {
    let s = spec(vec![metric("a"), metric("b")]);
    let (reqs, u) = pass(&s, None, &SecretValues::new(), t0(), |_| {
        value_for(Successful)
    });
    assert_eq!(reqs.len(), 2);
    assert_eq!(u.status.phase, Successful);
    assert_eq!(u.status.started_at.as_ref().unwrap().0, t0());
    assert_eq!(u.status.completed_at.as_ref().unwrap().0, t0());
    assert_eq!(u.requeue_at, None);
    let reasons: Vec<_> = u.transitions.iter().map(|t| t.reason()).collect();
    assert_eq!(
        reasons,
        [
            "MetricSuccessful",
            "MetricSuccessful",
            "AnalysisRunSuccessful"
        ]
    );
    let summary = u.status.run_summary.unwrap();
    assert_eq!((summary.count, summary.successful), (2, 2));
}

#[test]
fn initial_delay_postpones_the_first_measurement() {
    let mut m = metric("a");
    m.initial_delay = Some("30s".parse().unwrap());
    let s = spec(vec![m]);
    let (reqs, u) = pass(&s, None, &SecretValues::new(), t0(), |_| unreachable!());
    assert!(reqs.is_empty());
    assert_eq!(u.status.phase, Running);
    assert_eq!(u.requeue_at, Some(at(30)));
    let (reqs, _) = pass(
        &s,
        Some(&u.status),
        &SecretValues::new(),
        at(29),
        |_| unreachable!(),
    );
    assert!(reqs.is_empty());
    let (reqs, u) = pass(&s, Some(&u.status), &SecretValues::new(), at(30), |_| {
        value_for(Successful)
    });
    assert_eq!(reqs.len(), 1);
    assert_eq!(u.status.phase, Successful);
}

#[test]
fn interval_and_count_schedule_measurements() {
    let s = spec(vec![every_minute(metric("a"), 3)]);
    let secrets = SecretValues::new();
    let (_, u) = pass(&s, None, &secrets, t0(), |_| value_for(Successful));
    assert_eq!((u.status.phase, u.requeue_at), (Running, Some(at(60))));
    let (reqs, u2) = pass(&s, Some(&u.status), &secrets, at(59), |_| unreachable!());
    assert!(reqs.is_empty());
    assert_eq!(u2.status, u.status, "nothing due: status unchanged");
    assert!(u2.transitions.is_empty());
    let (_, u) = pass(&s, Some(&u.status), &secrets, at(60), |_| {
        value_for(Successful)
    });
    let (_, u) = pass(&s, Some(&u.status), &secrets, at(120), |_| {
        value_for(Successful)
    });
    assert_eq!(u.status.phase, Successful);
    assert_eq!(metric_result(&u.status, "a").count, 3);
}

#[test]
fn failure_over_limit_fails_the_run_and_stops_other_metrics() {
    let mut a = every_minute(metric("success-rate"), 10);
    a.failure_limit = Some(IntOrString::Int(2));
    a.success_condition = Some("result[0] >= 0.95".into());
    a.failure_condition = None;
    let b = every_minute(metric("latency"), 10);
    let s = spec(vec![a, b]);
    let secrets = SecretValues::new();
    let pick = |r: &MeasurementRequest| {
        if r.metric == "success-rate" {
            Ok(MetricValue::Numbers(vec![0.82]))
        } else {
            value_for(Successful)
        }
    };
    let (_, u) = pass(&s, None, &secrets, t0(), pick);
    let (_, u) = pass(&s, Some(&u.status), &secrets, at(60), pick);
    assert_eq!(u.status.phase, Running);
    let (_, u) = pass(&s, Some(&u.status), &secrets, at(120), pick);
    assert_eq!(u.status.phase, Failed);
    assert_eq!(
        u.status.message.as_deref(),
        Some("metric \"success-rate\" failed: 0.82 is not >= 0.95 (failures 3 > limit 2)")
    );
    // The other metric is terminated, not left running.
    assert_eq!(metric_result(&u.status, "latency").phase, Successful);
    assert_eq!(u.requeue_at, None);
    let warning: Vec<_> = u
        .transitions
        .iter()
        .filter(|t| t.is_warning())
        .map(|t| t.reason())
        .collect();
    assert_eq!(warning, ["MetricFailed", "AnalysisRunFailed"]);
    // Completed: nothing more is measured, and nothing changes.
    let (reqs, u2) = pass(&s, Some(&u.status), &secrets, at(600), |_| unreachable!());
    assert!(reqs.is_empty());
    assert_eq!(u2.status, u.status);
    assert!(u2.transitions.is_empty());
}

#[test]
fn errors_are_retried_after_ten_seconds_and_the_fifth_in_a_row_errors_the_metric() {
    let mut m = metric("a");
    m.interval = Some("5m".parse().unwrap());
    let s = spec(vec![m]);
    let secrets = SecretValues::new();
    let mut status = None;
    let mut now = t0();
    for i in 1..=5 {
        let (reqs, u) = pass(&s, status.as_ref(), &secrets, now, |_| value_for(Error));
        assert_eq!(reqs.len(), 1, "attempt {i}");
        let r = metric_result(&u.status, "a");
        assert_eq!((r.error, r.consecutive_error, r.count), (i, i, 0));
        if i < 5 {
            assert_eq!(u.status.phase, Running);
            assert_eq!(
                u.requeue_at,
                Some(now + jiff::SignedDuration::from_secs(10))
            );
            assert_eq!(
                r.message.as_deref(),
                Some("dial tcp 127.0.0.1:9: connection refused")
            );
        } else {
            assert_eq!(u.status.phase, Error);
            let msg = u.status.message.clone().unwrap();
            assert!(msg.contains("connection refused"), "{msg}");
            assert!(msg.contains("(consecutive errors 5 > limit 4)"), "{msg}");
        }
        now = u.requeue_at.unwrap_or(now);
        status = Some(u.status);
    }
}

#[test]
fn empty_result_is_an_error_measurement_saying_no_data_with_argo_semantics() {
    let mut m = metric("a");
    m.success_condition = Some("result[0] >= 0.95".into());
    m.failure_condition = None;
    // `noData.timeout: 0s`: no waiting for data, Argo Rollouts' behaviour.
    m.no_data = Some(NoDataPolicy {
        retry_interval: None,
        timeout: Some("0s".parse().unwrap()),
    });
    let s = spec(vec![m]);
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| {
        Ok(MetricValue::Numbers(vec![]))
    });
    let r = metric_result(&u.status, "a");
    assert_eq!(r.measurements[0].phase, Error);
    assert!(
        r.measurements[0]
            .message
            .as_deref()
            .unwrap()
            .contains("the query returned no data")
    );
    assert_eq!(
        u.status.phase, Running,
        "errors are retried before giving up"
    );
}

#[test]
fn missing_argument_errors_the_run_naming_it() {
    let mut s = spec(vec![metric("a")]);
    s.metrics[0].provider = prom("rate(http_requests_total{service=\"{{args.service}}\"}[1m])");
    s.args = vec![Argument {
        name: "service".into(),
        value: None,
        value_from: None,
    }];
    let (reqs, u) = pass(&s, None, &SecretValues::new(), t0(), |_| unreachable!());
    assert!(reqs.is_empty());
    assert_eq!(u.status.phase, Error);
    assert_eq!(
        u.status.message.as_deref(),
        Some("argument \"service\" was not supplied")
    );
    // An undefined argument is named too.
    s.args.clear();
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| unreachable!());
    assert_eq!(
        u.status.message.as_deref(),
        Some(
            "metric \"a\".provider.prometheus.query refers to argument \"service\", which is not defined"
        )
    );
}

#[test]
fn unsupported_or_missing_provider_is_a_clear_error() {
    let mut s = spec(vec![metric("a")]);
    s.metrics[0].provider =
        serde_json::from_value(serde_json::json!({"newRelic": {"query": "x"}})).unwrap();
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| unreachable!());
    assert_eq!(u.status.phase, Error);
    assert_eq!(
        u.status.message.as_deref(),
        Some(
            "metric \"a\": provider.newRelic: the newRelic provider is not supported by Sluice; use one of: prometheus, web, job, judge"
        )
    );
    s.metrics[0].provider = MetricProvider::default();
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| unreachable!());
    assert!(u.status.message.unwrap().contains("no provider is set"));
}

#[test]
fn invalid_metric_errors_the_run() {
    let mut s = spec(vec![metric("a")]);
    s.metrics[0].success_condition = Some("result >=".into());
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| unreachable!());
    assert_eq!(u.status.phase, Error);
    assert!(
        u.status
            .message
            .unwrap()
            .starts_with("metric \"a\": condition `result >=` is not a valid expression")
    );
    let s = spec(vec![metric("a"), metric("a")]);
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| unreachable!());
    assert_eq!(
        u.status.message.as_deref(),
        Some("two metrics have the same name \"a\"")
    );
}

#[test]
fn count_and_conditions_take_arguments() {
    let mut m = every_minute(metric("a"), 0);
    m.count = Some(IntOrString::String("{{args.count}}".into()));
    m.success_condition = Some("result[0] >= {{ args.threshold }}".into());
    m.failure_condition = None;
    let mut s = spec(vec![m]);
    s.args = vec![
        Argument {
            name: "count".into(),
            value: Some("2".into()),
            value_from: None,
        },
        Argument {
            name: "threshold".into(),
            value: Some("0.9".into()),
            value_from: None,
        },
    ];
    let secrets = SecretValues::new();
    let (_, u) = pass(&s, None, &secrets, t0(), |_| {
        Ok(MetricValue::Numbers(vec![0.95]))
    });
    assert_eq!(u.status.phase, Running);
    let (_, u) = pass(&s, Some(&u.status), &secrets, at(60), |_| {
        Ok(MetricValue::Numbers(vec![0.95]))
    });
    assert_eq!(u.status.phase, Successful);
}

#[test]
fn dry_run_metrics_never_decide_the_run() {
    let mut s = spec(vec![metric("gate"), metric("experimental-latency")]);
    s.dry_run = vec![DryRun {
        metric_name: "experimental-.*".into(),
    }];
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |r| {
        value_for(if r.metric == "gate" {
            Successful
        } else {
            Failed
        })
    });
    assert_eq!(u.status.phase, Successful);
    let dry = u.status.dry_run_summary.clone().unwrap();
    assert_eq!((dry.count, dry.failed), (1, 1));
    assert!(metric_result(&u.status, "experimental-latency").dry_run);
    assert_eq!(u.status.run_summary.unwrap().count, 1);
    // A dry-run pattern that matches nothing is a typo, reported.
    s.dry_run = vec![DryRun {
        metric_name: "nope".into(),
    }];
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| unreachable!());
    assert_eq!(u.status.phase, Error);
}

#[test]
fn terminate_completes_with_worst_phase_so_far_or_successful() {
    let mut s = spec(vec![every_minute(metric("a"), 0)]);
    s.terminate = true;
    let (reqs, u) = pass(&s, None, &SecretValues::new(), t0(), |_| unreachable!());
    assert!(reqs.is_empty());
    assert_eq!(u.status.phase, Successful);
    assert_eq!(u.status.message.as_deref(), Some("run terminated"));

    let mut m = every_minute(metric("a"), 0);
    m.inconclusive_limit = Some(IntOrString::Int(5));
    let mut s = spec(vec![m]);
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| {
        value_for(Inconclusive)
    });
    assert_eq!(u.status.phase, Running);
    s.terminate = true;
    let (reqs, u) = pass(
        &s,
        Some(&u.status),
        &SecretValues::new(),
        at(60),
        |_| unreachable!(),
    );
    assert!(reqs.is_empty());
    assert_eq!(
        u.status.phase, Successful,
        "inconclusive 1 is within the limit of 5"
    );
}

#[test]
fn retention_keeps_the_last_measurements() {
    let mut s = spec(vec![every_minute(metric("a"), 5)]);
    s.measurement_retention = vec![MeasurementRetention {
        metric_name: "a".into(),
        limit: 2,
    }];
    let secrets = SecretValues::new();
    let mut st: Option<AnalysisRunStatus> = None;
    for i in 0..5 {
        let (_, u) = pass(&s, st.as_ref(), &secrets, at(60 * i), |_| {
            value_for(Successful)
        });
        st = Some(u.status);
    }
    let st = st.unwrap();
    let r = metric_result(&st, "a");
    assert_eq!(r.measurements.len(), 2);
    assert_eq!(r.count, 5);
    assert_eq!(r.measurements[1].finished_at.as_ref().unwrap().0, at(240));
}

#[test]
fn ttl_sets_the_deletion_time() {
    let mut s = spec(vec![metric("a")]);
    s.ttl_strategy = Some(TtlStrategy {
        seconds_after_completion: Some(600),
        seconds_after_failure: Some(3600),
        seconds_after_success: None,
    });
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| {
        value_for(Successful)
    });
    assert_eq!(u.delete_at, Some(at(600)));
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| value_for(Failed));
    assert_eq!(u.delete_at, Some(at(3600)));
}

fn secret_spec() -> (AnalysisRunSpec, SecretValues) {
    let mut m = metric("a");
    m.provider = MetricProvider {
        prometheus: Some(PrometheusMetric {
            address: Some("http://prometheus:9090".into()),
            query: "sum(up{tenant=\"{{args.tenant}}\"})".into(),
            headers: vec![WebMetricHeader {
                key: "Authorization".into(),
                value: "Bearer {{args.token}}".into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let secret_arg = |name: &str| Argument {
        name: name.into(),
        value: None,
        value_from: Some(ValueFrom {
            secret_key_ref: Some(SecretKeyRef {
                name: "prom-creds".into(),
                key: name.into(),
            }),
            field_ref: None,
        }),
    };
    let s = AnalysisRunSpec {
        metrics: vec![m],
        args: vec![secret_arg("tenant"), secret_arg("token")],
        ..Default::default()
    };
    let mut secrets = SecretValues::new();
    for r in secret_refs(&s.args) {
        let v = if r.key == "token" {
            "tok-9f8e7d6c"
        } else {
            "tenant-secret-42"
        };
        secrets.insert(r, v.to_string());
    }
    (s, secrets)
}

#[test]
fn secret_values_reach_the_provider_but_never_status() {
    let (s, secrets) = secret_spec();
    let p = begin(&s, None, &secrets, t0());
    let req = p.requests[0].clone();
    let ProviderRequest::Prometheus(prom) = &req.provider else {
        panic!("not a prometheus request")
    };
    assert_eq!(prom.query, "sum(up{tenant=\"tenant-secret-42\"})");
    assert_eq!(
        prom.headers,
        vec![(
            "Authorization".to_string(),
            "Bearer tok-9f8e7d6c".to_string()
        )]
    );
    assert_eq!(
        req.metadata[RESOLVED_QUERY_KEY],
        "sum(up{tenant=\"*****\"})"
    );
    let debug = format!("{req:?}");
    assert!(
        !debug.contains("tenant-secret-42") && !debug.contains("tok-9f8e7d6c"),
        "{debug}"
    );

    // A provider error that echoes the query, and a failing condition: still redacted.
    let result = req.into_result(
        t0(),
        t0(),
        ProviderResult {
            value: Err("bad_data: parse error in sum(up{tenant=\"tenant-secret-42\"})".into()),
            metadata: BTreeMap::from([("warnings".to_string(), "tok-9f8e7d6c".to_string())]),
            phase: None,
        },
    );
    let u = p.finish(vec![result], t0());
    let text = serde_json::to_string(&u.status).unwrap() + &format!("{:?}", u.transitions);
    assert!(!text.contains("tenant-secret-42"), "{text}");
    assert!(!text.contains("tok-9f8e7d6c"), "{text}");
    assert!(text.contains("*****"));
}

#[test]
fn missing_secret_errors_the_run() {
    let (s, _) = secret_spec();
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| unreachable!());
    assert_eq!(u.status.phase, Error);
    assert_eq!(
        u.status.message.as_deref(),
        Some("argument \"tenant\": key \"tenant\" of secret \"prom-creds\" was not found")
    );
}

#[test]
fn range_query_bounds_are_resolved_against_now() {
    let mut m = metric("a");
    m.provider = serde_json::from_value(serde_json::json!({"prometheus": {
        "address": "http://p:9090", "query": "up",
        "rangeQuery": {"start": "now() - duration(\"{{args.window}}\")", "end": "now()", "step": "30s"}
    }}))
    .unwrap();
    let mut s = spec(vec![m]);
    s.args = vec![Argument {
        name: "window".into(),
        value: Some("5m".into()),
        value_from: None,
    }];
    let p = begin(&s, None, &SecretValues::new(), t0());
    let ProviderRequest::Prometheus(prom) = &p.requests[0].provider else {
        panic!("not a prometheus request")
    };
    let range = prom.range.unwrap();
    assert_eq!(
        (range.start, range.end, range.step),
        (at(-300), t0(), Duration::from_secs(30))
    );
    assert_eq!(prom.timeout, Duration::from_secs(30));
}

// Property: whatever the sequence of outcomes, the run is never Successful while a deciding
// metric has more failures than its limit (or more failures in a row than its
// consecutiveFailureLimit).
#[derive(Debug, Clone)]
struct MetricCase {
    failure_limit: Option<i32>,
    consecutive_failure_limit: Option<i32>,
    inconclusive_limit: i32,
    consecutive_success_limit: i32,
    count: i32,
    dry_run: bool,
    outcomes: Vec<AnalysisPhase>,
}

fn outcome() -> impl Strategy<Value = AnalysisPhase> {
    prop_oneof![
        Just(Successful),
        Just(Failed),
        Just(Inconclusive),
        Just(Error)
    ]
}

fn metric_case() -> impl Strategy<Value = MetricCase> {
    (
        prop_oneof![Just(None), (0..4i32).prop_map(Some)],
        prop_oneof![Just(None), (0..3i32).prop_map(Some)],
        0..3i32,
        0..3i32,
        1..8i32,
        any::<bool>(),
        proptest::collection::vec(outcome(), 0..30),
    )
        .prop_map(|(f, cf, i, cs, count, dry_run, outcomes)| MetricCase {
            // failureLimit -1 needs one of the streak limits.
            failure_limit: if f.is_none() && cf.is_none() && cs == 0 {
                Some(0)
            } else {
                f
            },
            consecutive_failure_limit: cf,
            inconclusive_limit: i,
            consecutive_success_limit: cs,
            count: count.max(i).max(f.unwrap_or(0) + cs),
            dry_run,
            outcomes,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn never_successful_with_failures_over_the_limit(cases in proptest::collection::vec(metric_case(), 1..4)) {
        let metrics: Vec<Metric> = cases.iter().enumerate().map(|(i, c)| {
            let mut m = every_minute(metric(&format!("m{i}")), c.count);
            m.failure_limit = Some(IntOrString::Int(c.failure_limit.unwrap_or(-1)));
            m.consecutive_failure_limit = c.consecutive_failure_limit.map(IntOrString::Int);
            m.inconclusive_limit = Some(IntOrString::Int(c.inconclusive_limit));
            m.consecutive_success_limit = Some(IntOrString::Int(c.consecutive_success_limit));
            m
        }).collect();
        let mut s = spec(metrics);
        s.dry_run = cases.iter().enumerate().filter(|(_, c)| c.dry_run)
            .map(|(i, _)| DryRun { metric_name: format!("^m{i}$") }).collect();
        let secrets = SecretValues::new();
        let mut cursors = vec![0usize; cases.len()];
        let mut status: Option<AnalysisRunStatus> = None;
        let mut now = t0();
        for _ in 0..40 {
            let (_, u) = pass(&s, status.as_ref(), &secrets, now, |r| {
                let i: usize = r.metric[1..].parse().unwrap();
                let o = cases[i].outcomes.get(cursors[i]).copied().unwrap_or(Successful);
                cursors[i] += 1;
                value_for(o)
            });
            let st = &u.status;
            if st.phase == Successful {
                for (i, c) in cases.iter().enumerate() {
                    if c.dry_run { continue; }
                    if let Some(r) = st.metric_results.iter().find(|r| r.name == format!("m{i}")) {
                        if let Some(l) = c.failure_limit {
                            prop_assert!(r.failed <= l, "m{i}: failed {} > limit {l} in a Successful run", r.failed);
                        }
                        if let Some(l) = c.consecutive_failure_limit {
                            prop_assert!(r.consecutive_failure <= l);
                        }
                    }
                }
            }
            // Counters are consistent with each other.
            for r in &st.metric_results {
                prop_assert_eq!(r.count, r.successful + r.failed + r.inconclusive);
            }
            let done = st.phase.is_completed();
            status = Some(u.status);
            if done { break; }
            now = u.requeue_at.unwrap_or(now + jiff::SignedDuration::from_secs(60));
        }
    }
}

/// The status computed in memory is exactly the one read back from the API server (which keeps
/// whole seconds), so a restarted controller continues from the same state.
#[test]
fn status_survives_a_round_trip_through_the_api_server() {
    let s = spec(vec![every_minute(metric("a"), 3)]);
    let now = t0() + jiff::SignedDuration::from_millis(123_456);
    let (_, u) = pass(&s, None, &SecretValues::new(), now, |_| {
        value_for(Successful)
    });
    let json = serde_json::to_string(&u.status).unwrap();
    let read_back: AnalysisRunStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(read_back, u.status);
    // And reconciling the read-back status changes nothing.
    let (reqs, again) = pass(
        &s,
        Some(&read_back),
        &SecretValues::new(),
        now,
        |_| unreachable!(),
    );
    assert!(reqs.is_empty());
    assert_eq!(again.status, u.status);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    // Whatever the Secret values and wherever a provider echoes them, status and Events never
    // contain them.
    #[test]
    fn secret_values_never_reach_status(
        tenant in "zq[a-zA-Z0-9]{4,16}",
        token in "qz[a-zA-Z0-9._-]{4,24}",
        echo in prop_oneof![Just(0u8), Just(1), Just(2)],
        prefix in "[a-z ]{0,5}",
    ) {
        let (s, _) = secret_spec();
        let mut secrets = SecretValues::new();
        for r in secret_refs(&s.args) {
            let v = if r.key == "token" { token.clone() } else { tenant.clone() };
            secrets.insert(r, v);
        }
        let (_, u) = pass(&s, None, &secrets, t0(), |r| {
            let ProviderRequest::Prometheus(p) = &r.provider else {
        panic!("not a prometheus request")
    };
            match echo {
                0 => Err(format!("{prefix}bad_data: {} {:?}", p.query, p.headers)),
                1 => Ok(MetricValue::String(format!("{prefix}{}", p.query))),
                _ => Ok(MetricValue::Number(1.0)),
            }
        });
        let text = serde_json::to_string(&u.status).unwrap() + &format!("{:?}", u.transitions);
        prop_assert!(!text.contains(&tenant), "tenant leaked: {}", text);
        prop_assert!(!text.contains(&token), "token leaked: {}", text);
    }
}

/// The reason of an errored measurement is in status in the pass that took it, on the
/// measurement and on the metric, while the run keeps retrying; later errors replace it, a good
/// measurement clears it, and only the run's first error of each metric is reported as an Event.
#[test]
fn an_errored_measurement_says_why_at_once_and_is_reported_once() {
    let refused = "prometheus address \"http://metrics.example:9090\" is not in the controller's \
                   allowlist of metric provider addresses (allowed: http://prometheus:9090)";
    let timeout = "query timed out after 30s";
    let mut b = every_minute(metric("b"), 5);
    b.name = "b".into();
    let s = spec(vec![every_minute(metric("a"), 5), b]);
    let secrets = SecretValues::new();

    // First pass: both metrics error, the run goes on, and each metric's reason is there.
    let (_, u) = pass(&s, None, &secrets, t0(), |_| Err(refused.to_string()));
    assert_eq!(u.status.phase, Running);
    assert_eq!(u.status.message, None, "the run itself has not ended");
    for name in ["a", "b"] {
        let r = metric_result(&u.status, name);
        assert_eq!(r.phase, Running);
        assert_eq!(r.message.as_deref(), Some(refused));
        let last = r.measurements.last().unwrap();
        assert_eq!(last.phase, Error);
        assert_eq!(last.message.as_deref(), Some(refused));
    }
    let reported: Vec<(&str, &str)> = u
        .first_errors
        .iter()
        .map(|e| (e.metric.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(reported, [("a", refused), ("b", refused)]);
    let note = u.first_errors[0].note();
    assert_eq!(
        note,
        format!(
            "metric \"a\" could not be measured: {refused} (retried every 10s; more than 4 \
             errors in a row error the metric)"
        )
    );
    assert!(
        u.transitions.iter().all(|t| t.metric.is_none()),
        "a metric still running reports no phase change: {:?}",
        u.transitions
    );

    // Ten seconds later: another error, with another reason. The metric shows the latest one
    // and nothing is reported again.
    let now = u.requeue_at.unwrap();
    assert_eq!(now, at(10));
    let (_, u) = pass(&s, Some(&u.status), &secrets, now, |_| {
        Err(timeout.to_string())
    });
    assert_eq!(u.status.phase, Running);
    let r = metric_result(&u.status, "a");
    assert_eq!((r.error, r.consecutive_error), (2, 2));
    assert_eq!(r.message.as_deref(), Some(timeout));
    assert_eq!(
        r.measurements.last().unwrap().message.as_deref(),
        Some(timeout)
    );
    assert_eq!(u.first_errors, []);

    // A good measurement of "a" clears its message; "b" still errors and keeps its reason.
    let now = u.requeue_at.unwrap();
    let (_, u) = pass(&s, Some(&u.status), &secrets, now, |r| {
        if r.metric == "a" {
            value_for(Successful)
        } else {
            Err(timeout.to_string())
        }
    });
    let a = metric_result(&u.status, "a");
    assert_eq!((a.successful, a.consecutive_error), (1, 0));
    assert_eq!(a.message, None);
    assert_eq!(a.measurements.last().unwrap().message, None);
    assert_eq!(
        metric_result(&u.status, "b").message.as_deref(),
        Some(timeout)
    );
    assert_eq!(u.first_errors, []);

    // "a" errors again after it recovered: its reason is back in status, but the run has
    // already reported that "a" errors, so no new report.
    let now = now + jiff::SignedDuration::from_secs(60);
    let (reqs, u) = pass(&s, Some(&u.status), &secrets, now, |_| {
        Err(refused.to_string())
    });
    assert!(reqs.iter().any(|r| r.metric == "a"), "{reqs:?}");
    assert_eq!(
        metric_result(&u.status, "a").message.as_deref(),
        Some(refused)
    );
    assert_eq!(u.first_errors, []);
}

/// A metric that errors once and then completes: the first error is reported, and once the
/// metric has completed its message is its verdict, not the old error.
#[test]
fn a_metric_that_errors_then_succeeds_ends_with_its_verdict() {
    let s = spec(vec![every_minute(metric("a"), 1)]);
    let secrets = SecretValues::new();
    let (_, u) = pass(&s, None, &secrets, t0(), |_| value_for(Error));
    assert_eq!(u.first_errors.len(), 1);
    assert_eq!(
        metric_result(&u.status, "a").message.as_deref(),
        Some("dial tcp 127.0.0.1:9: connection refused")
    );
    let (_, u) = pass(&s, Some(&u.status), &secrets, at(10), |_| {
        value_for(Successful)
    });
    assert_eq!(u.status.phase, Successful);
    let r = metric_result(&u.status, "a");
    assert_eq!(r.phase, Successful);
    let msg = r.message.clone().unwrap_or_default();
    assert!(msg.contains("successful"), "{msg}");
    assert!(!msg.contains("connection refused"), "{msg}");
    assert_eq!(u.first_errors, []);
}

/// The reported reason hides Secret values as status does.
#[test]
fn a_first_error_report_hides_secret_values() {
    let (s, secrets) = secret_spec();
    let (_, u) = pass(&s, None, &secrets, t0(), |r| {
        let ProviderRequest::Prometheus(p) = &r.provider else {
            panic!("not a prometheus request")
        };
        Err(format!(
            "bad_data: parse error in {} with {:?}",
            p.query, p.headers
        ))
    });
    assert_eq!(u.first_errors.len(), 1);
    let note = u.first_errors[0].note();
    assert!(note.contains("bad_data: parse error in"), "{note}");
    for secret in ["tok-9f8e7d6c", "tenant-secret-42"] {
        assert!(!note.contains(secret), "{secret} leaked: {note}");
    }
}

/// A run whose error limit is 0 errors its metric on the first error: both the first error and
/// the metric's completion in Error are reported, each once.
#[test]
fn an_error_that_ends_the_metric_is_reported_with_the_completion() {
    let mut m = every_minute(metric("a"), 3);
    m.consecutive_error_limit = Some(IntOrString::Int(0));
    let s = spec(vec![m]);
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| value_for(Error));
    assert_eq!(u.status.phase, Error);
    assert_eq!(u.first_errors.len(), 1);
    assert_eq!(u.first_errors[0].consecutive_error_limit, 0);
    let reasons: Vec<String> = u.transitions.iter().map(|t| t.reason()).collect();
    assert_eq!(reasons, ["MetricError", "AnalysisRunError"]);
}

/// A success-rate metric measured every 10 s, three times.
fn success_rate() -> Metric {
    let mut m = metric("sr");
    m.success_condition = Some("result[0] >= 0.95".into());
    m.failure_condition = None;
    m.interval = Some("10s".parse().unwrap());
    m.count = Some(IntOrString::Int(3));
    m
}

#[test]
fn no_data_yet_is_not_an_error_and_is_asked_again_a_second_later() {
    let s = spec(vec![success_rate()]);
    let empty = |_: &MeasurementRequest| Ok(MetricValue::Numbers(vec![]));
    let (reqs, u) = pass(&s, None, &SecretValues::new(), t0(), empty);
    assert_eq!(reqs.len(), 1);
    let r = metric_result(&u.status, "sr");
    assert_eq!(r.measurements.len(), 1);
    let m = &r.measurements[0];
    assert_eq!(m.phase, Running, "{m:?}");
    assert!(
        m.message.as_deref().unwrap().contains("no data yet"),
        "{m:?}"
    );
    assert_eq!(r.error, 0, "not an error");
    assert_eq!(r.count, 0, "not a measurement");
    assert_eq!(u.status.phase, Running);
    assert!(u.first_errors.is_empty(), "no error Event");
    assert_eq!(u.requeue_at, Some(at(1)), "asked again a second later");
    // Half a second later, nothing is due yet.
    let (reqs, _) = pass(
        &s,
        Some(&u.status),
        &SecretValues::new(),
        at(0) + jiff::SignedDuration::from_millis(500),
        empty,
    );
    assert!(reqs.is_empty());
    // Still nothing after 1 s: the same measurement, waiting.
    let (reqs, u) = pass(&s, Some(&u.status), &SecretValues::new(), at(1), empty);
    assert_eq!(reqs.len(), 1);
    let r = metric_result(&u.status, "sr");
    assert_eq!(r.measurements.len(), 1, "replaced, not added");
    assert_eq!(r.measurements[0].phase, Running);
    // Data at 2 s: the measurement is decided at once, and the next one is an interval later.
    let (_, u) = pass(&s, Some(&u.status), &SecretValues::new(), at(2), |_| {
        Ok(MetricValue::Numbers(vec![0.5]))
    });
    let r = metric_result(&u.status, "sr");
    assert_eq!(r.measurements.len(), 1);
    let m = &r.measurements[0];
    assert_eq!(m.phase, Failed);
    assert!(!m.metadata.contains_key("sluice.dev/no-data"), "{m:?}");
    assert!(!m.metadata.contains_key("sluice.dev/looked-at"), "{m:?}");
    assert_eq!(
        u.status.phase, Failed,
        "failureLimit 0: the first failure decides"
    );
}

#[test]
fn no_data_for_the_whole_timeout_is_an_error_as_without_waiting() {
    let mut m = success_rate();
    m.no_data = Some(NoDataPolicy {
        retry_interval: Some("2s".parse().unwrap()),
        timeout: Some("5s".parse().unwrap()),
    });
    let s = spec(vec![m]);
    let empty = |_: &MeasurementRequest| Ok(MetricValue::Numbers(vec![]));
    let mut status = None;
    let mut now = t0();
    let mut looks = 0;
    let errored = loop {
        let (reqs, u) = pass(&s, status.as_ref(), &SecretValues::new(), now, empty);
        looks += reqs.len();
        let r = metric_result(&u.status, "sr").clone();
        if r.error > 0 {
            let m = r.measurements.last().unwrap();
            assert_eq!(m.phase, Error);
            let msg = m.message.as_deref().unwrap();
            assert!(msg.contains("the query returned no data"), "{msg}");
            assert!(msg.contains("no data for 5s"), "{msg}");
            assert_eq!(u.first_errors.len(), 1, "the error is reported");
            // From then on, Argo's retry of errors.
            assert_eq!(
                u.requeue_at,
                Some(now + jiff::SignedDuration::from_secs(10))
            );
            break u.status;
        }
        assert!(now < at(60), "never errored: {:?}", u.status);
        now = u.requeue_at.expect("requeued");
        status = Some(u.status);
    };
    assert_eq!(now, at(6), "queries at 0, 2, 4 and 6 s");
    assert_eq!(looks, 4);
    // The next empty answer is an Error at once: only the first measurement waits for data.
    let (_, u) = pass(&s, Some(&errored), &SecretValues::new(), at(16), empty);
    let r = metric_result(&u.status, "sr");
    assert_eq!(r.error, 2, "{r:?}");
}

#[test]
fn a_terminated_run_does_not_wait_for_data() {
    let mut s = spec(vec![success_rate()]);
    let empty = |_: &MeasurementRequest| Ok(MetricValue::Numbers(vec![]));
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), empty);
    assert_eq!(u.status.phase, Running);
    s.terminate = true;
    let (reqs, u) = pass(&s, Some(&u.status), &SecretValues::new(), at(1), empty);
    assert!(reqs.is_empty());
    assert_eq!(u.status.phase, Successful, "{:?}", u.status);
    assert!(u.requeue_at.is_none());
}

#[test]
fn a_guarded_condition_still_decides_an_empty_result() {
    let mut m = success_rate();
    m.success_condition = Some("len(result) == 0 || result[0] >= 0.95".into());
    let s = spec(vec![m]);
    let (_, u) = pass(&s, None, &SecretValues::new(), t0(), |_| {
        Ok(MetricValue::Numbers(vec![]))
    });
    let r = metric_result(&u.status, "sr");
    assert_eq!(r.measurements[0].phase, Successful);
}
