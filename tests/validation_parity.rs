//! One validation path: the same bad manifests go through `sluice lint` and through the functions
//! the controller validates with (`validate_rollout_spec` for a Rollout; building the run with
//! `template::run_spec` and reconciling it with `run::begin` for an analysis template). Each must
//! be reported by both, at the same field, with the same text: what is caught before merge reads
//! the same as what the controller writes on status.

use jiff::Timestamp;
use serde_json::{Value, json};
use sluice::analysis::args::SecretValues;
use sluice::analysis::run::begin;
use sluice::analysis::template::run_spec;
use sluice::api::analysis::AnalysisTemplate;
use sluice::api::common::AnalysisPhase;
use sluice::api::rollout::Rollout;
use sluice::api::validation::validate_rollout_spec;
use sluice::cli::lint::{Finding, lint_sources};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Lints documents together, as `sluice lint -f` does with several files.
fn lint(docs: &[&Value]) -> Vec<Finding> {
    let sources: Vec<(String, String)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("doc{i}.yaml"), d.to_string()))
        .collect();
    lint_sources(&sources, &[]).findings
}

/// `base` with `patch` merged in, objects key by key.
fn merged(mut base: Value, patch: Value) -> Value {
    match (&mut base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                let old = b.remove(&k).unwrap_or(Value::Null);
                b.insert(k, merged(old, v));
            }
            base
        }
        (_, p) => p,
    }
}

/// A valid metric named `m`, with `patch` merged in.
fn metric(patch: Value) -> Value {
    merged(
        json!({
            "name": "m",
            "provider": {"prometheus": {"address": "http://prometheus:9090", "query": "up"}}
        }),
        patch,
    )
}

/// An AnalysisTemplate `t` with these metrics and `spec_patch` merged into its spec.
fn template(metrics: Vec<Value>, spec_patch: Value) -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": merged(json!({"metrics": metrics}), spec_patch),
    })
}

/// A valid Rollout `web` whose canary strategy has `canary_patch` merged in.
fn rollout(canary_patch: Value) -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
            },
            "strategy": {"canary": merged(json!({
                "canaryService": "web-canary",
                "stableService": "web-stable",
                "trafficRouting": {"nginx": {"stableIngress": "web"}},
                "steps": [{"setWeight": 20}],
            }), canary_patch)},
        },
    })
}

/// What the controller writes in the status of a run built from this template alone (no
/// Rollout arguments): the error of building the run, or the reason the reconciler puts the run
/// in the Error phase.
fn controller_message(doc: &Value) -> Result<String> {
    let t: AnalysisTemplate = serde_json::from_value(doc.clone())?;
    let now: Timestamp = "2026-03-01T12:00:00Z".parse()?;
    Ok(match run_spec(&t.spec, &[], &[], &[]) {
        Err(e) => e.to_string(),
        Ok(spec) => {
            let update = begin(&spec, None, &SecretValues::new(), now).finish(Vec::new(), now);
            assert_eq!(update.status.phase, AnalysisPhase::Error, "{doc}");
            update.status.message.unwrap_or_default()
        }
    })
}

/// How the run's one-line status names the field lint reports separately.
#[derive(Debug, Clone, Copy)]
enum Status {
    /// `FIELD: MESSAGE`, for a rule about the spec.
    Spec,
    /// `metric "m": FIELD-IN-METRIC: MESSAGE`, for a rule about one metric.
    Metric,
    /// `metric "m": MESSAGE`: the message starts with the limit it is about.
    Limits,
    /// `metric "m": condition MESSAGE`.
    Condition,
    /// The message alone: it names the metric.
    Bare,
    /// `metric "m".PATH: MESSAGE`, where PATH is the string holding the placeholder.
    Placeholder,
}

/// The run's status message for lint's finding, by the rule of `shape`.
fn expected_status(shape: Status, f: &Finding) -> String {
    let in_metric = f
        .field
        .strip_prefix("spec.metrics[")
        .and_then(|rest| rest.split_once(']'))
        .map(|(_, rest)| rest.trim_start_matches('.'));
    match (shape, in_metric) {
        (Status::Metric, Some(inner)) => format!("metric \"m\": {inner}: {}", f.message),
        (Status::Metric, None) => unreachable!("{} is not in a metric", f.field),
        (Status::Spec, _) => format!("{}: {}", f.field, f.message),
        (Status::Limits, _) => format!("metric \"m\": {}", f.message),
        (Status::Condition, _) => format!("metric \"m\": condition {}", f.message),
        (Status::Bare, _) => f.message.clone(),
        (Status::Placeholder, _) => unreachable!("checked by suffix"),
    }
}

fn template_cases() -> Vec<(&'static str, Value, &'static str, Status)> {
    let one = |patch: Value| template(vec![metric(patch)], json!({}));
    vec![
        (
            "unknown provider",
            one(json!({"provider": {"prometheus": null, "statsd": {"query": "x"}}})),
            "spec.metrics[0].provider.statsd",
            Status::Metric,
        ),
        (
            "provider Sluice does not implement",
            one(json!({"provider": {"prometheus": null, "datadog": {"query": "x"}}})),
            "spec.metrics[0].provider.datadog",
            Status::Metric,
        ),
        (
            "no provider",
            one(json!({"provider": {"prometheus": null}})),
            "spec.metrics[0].provider",
            Status::Metric,
        ),
        (
            "two providers",
            one(json!({"provider": {"datadog": {"query": "x"}}})),
            "spec.metrics[0].provider",
            Status::Metric,
        ),
        (
            "bad condition expression",
            one(json!({"successCondition": "result >="})),
            "spec.metrics[0].successCondition",
            Status::Condition,
        ),
        (
            "duplicate metric names",
            template(vec![metric(json!({})), metric(json!({}))], json!({})),
            "spec.metrics[1].name",
            Status::Bare,
        ),
        (
            "empty metric name",
            one(json!({"name": ""})),
            "spec.metrics[0].name",
            Status::Spec,
        ),
        (
            "count without interval",
            one(json!({"count": 3})),
            "spec.metrics[0].count",
            Status::Limits,
        ),
        (
            "negative query timeout",
            one(json!({"provider": {"prometheus": {"timeout": -1}}})),
            "spec.metrics[0].provider.prometheus.timeout",
            Status::Metric,
        ),
        (
            "bad duration in a range query",
            one(json!({"provider": {"prometheus": {"rangeQuery": {
                "start": "now() - duration(\"5m\")", "end": "now()", "step": "5x"
            }}}})),
            "spec.metrics[0].provider.prometheus.rangeQuery.step",
            Status::Metric,
        ),
        (
            "unsupported authentication",
            one(
                json!({"provider": {"prometheus": {"authentication": {"sigv4": {"region": "x"}}}}}),
            ),
            "spec.metrics[0].provider.prometheus.authentication.sigv4",
            Status::Metric,
        ),
        (
            "basic authentication without password",
            one(json!({"provider": {"prometheus": {"authentication": {
                "basicAuth": {"username": "u", "password": ""}
            }}}})),
            "spec.metrics[0].provider.prometheus.authentication.basicAuth",
            Status::Metric,
        ),
        (
            "dry-run pattern matching no metric",
            template(
                vec![metric(json!({}))],
                json!({"dryRun": [{"metricName": "nope"}]}),
            ),
            "spec.dryRun[0].metricName",
            Status::Spec,
        ),
        (
            "retention of zero measurements",
            template(
                vec![metric(json!({}))],
                json!({"measurementRetention": [{"metricName": "m", "limit": 0}]}),
            ),
            "spec.measurementRetention[0].limit",
            Status::Spec,
        ),
        (
            "placeholder that is not an argument",
            one(json!({"provider": {"prometheus": {"query": "up{job=\"{{experiment.name}}\"}"}}})),
            "spec.metrics[0]",
            Status::Placeholder,
        ),
    ]
}

#[test]
fn lint_and_the_analysis_run_report_each_bad_template_alike() -> Result {
    let cases = template_cases();
    assert!(cases.len() >= 10);
    for (name, doc, field, shape) in cases {
        let findings = lint(&[&doc]);
        assert_eq!(findings.len(), 1, "{name}: {findings:#?}");
        let f = &findings[0];
        assert_eq!(f.field, field, "{name}");
        let status = controller_message(&doc)?;
        match shape {
            Status::Placeholder => assert!(
                status.starts_with("metric \"m\".")
                    && status.ends_with(&format!(": {}", f.message)),
                "{name}: lint says {:?}, the run says {status:?}",
                f.message
            ),
            _ => assert_eq!(status, expected_status(shape, f), "{name}"),
        }
    }
    Ok(())
}

#[test]
fn lint_and_the_planner_report_each_bad_rollout_alike() -> Result {
    let cases = [
        (
            "setWeight above maxTrafficWeight",
            json!({"steps": [{"setWeight": 150}]}),
            "spec.strategy.canary.steps[0].setWeight",
        ),
        (
            "unsupported step",
            json!({"steps": [{"experiment": {"templates": []}}]}),
            "spec.strategy.canary.steps[0].experiment",
        ),
        (
            "bad pause duration",
            json!({"steps": [{"pause": {"duration": "2d"}}]}),
            "spec.strategy.canary.steps[0].pause.duration",
        ),
        (
            "setCanaryScale with two sizes",
            json!({"steps": [{"setCanaryScale": {"weight": 10, "replicas": 1}}]}),
            "spec.strategy.canary.steps[0].setCanaryScale",
        ),
    ];
    for (name, patch, field) in cases {
        let doc = rollout(patch);
        let mut linted: Vec<(String, String)> = lint(&[&doc])
            .into_iter()
            .map(|f| (f.field, f.message))
            .collect();
        let ro: Rollout = serde_json::from_value(doc)?;
        let mut planned: Vec<(String, String)> = validate_rollout_spec(&ro.spec)
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect();
        linted.sort();
        planned.sort();
        assert_eq!(linted, planned, "{name}");
        assert!(
            linted.iter().any(|(f, _)| f == field),
            "{name}: {linted:#?}"
        );
    }
    Ok(())
}

/// A template argument nobody passes is caught by both. The wording still differs: lint names
/// the template and the analysis (it sees the Rollout), the run only the argument; both texts
/// are pinned by older tests (`tests/fixtures/lint/bad/references.expected`,
/// `analysis_run::missing_argument_errors_the_run_naming_it`).
#[test]
fn a_missing_template_argument_is_caught_by_both_naming_the_argument() -> Result {
    let t = template(
        vec![metric(json!({"provider": {"prometheus": {
            "query": "up{service=\"{{args.service}}\"}"
        }}}))],
        json!({"args": [{"name": "service"}]}),
    );
    let ro = rollout(json!({"steps": [{"analysis": {"templates": [{"templateName": "t"}]}}]}));
    let findings = lint(&[&ro, &t]);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(
        findings[0].field,
        "spec.strategy.canary.steps[0].analysis.templates[0].templateName"
    );
    assert!(findings[0].message.contains("argument \"service\""));
    let status = controller_message(&t)?;
    assert_eq!(status, "argument \"service\" was not supplied");
    Ok(())
}
