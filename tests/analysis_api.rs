//! Argo Rollouts analysis manifests, with only `apiVersion` changed, parse into Sluice's types
//! and run through argument resolution as they do in Argo.

use sluice::analysis::args::{SecretValues, secret_refs};
use sluice::analysis::run::{ProviderRequest, begin};
use sluice::analysis::template::{compose, run_spec};
use sluice::api::analysis::{
    AnalysisRun, AnalysisTemplate, Argument, ClusterAnalysisTemplate, SecretKeyRef,
};
use sluice::api::common::AnalysisPhase;

const SUCCESS_RATE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  args:
  - name: service-name
  - name: api-token
    valueFrom:
      secretKeyRef:
        name: token-secret
        key: apiToken
  metrics:
  - name: success-rate
    interval: 5m
    # NOTE: prometheus queries return results in the form of a vector.
    successCondition: result[0] >= 0.95
    failureLimit: 3
    provider:
      prometheus:
        address: http://prometheus.example.com:9090
        # timeout is expressed in seconds
        timeout: 40
        headers:
        - key: X-Scope-OrgID
          value: tenant_a
        - key: Authorization
          value: "Bearer {{ args.api-token }}"
        query: |
          sum(irate(
            istio_requests_total{reporter="source",destination_service=~"{{args.service-name}}",response_code!~"5.*"}[5m]
          )) /
          sum(irate(
            istio_requests_total{reporter="source",destination_service=~"{{args.service-name}}"}[5m]
          ))
"#;

const CLUSTER_TEMPLATE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: ClusterAnalysisTemplate
metadata:
  name: latency
spec:
  args:
  - name: count
    value: "3"
  metrics:
  - name: p99
    interval: 1m
    initialDelay: 30s
    count: "{{args.count}}"
    failureCondition: result[0] > 0.5 || isNaN(result[0])
    failureLimit: 1
    inconclusiveLimit: 2
    consecutiveErrorLimit: "2"
    provider:
      prometheus:
        address: http://prometheus.example.com:9090
        query: histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))
        rangeQuery:
          start: 'now() - duration("5m")'
          end: 'now()'
          step: 1m
"#;

const WEB: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: web
spec:
  metrics:
  - name: webmetric
    successCondition: result.ok == true
    provider:
      web:
        url: "http://my-server.com/api/v1/measurement?service={{ args.service-name }}"
        timeoutSeconds: 20
        jsonPath: "{$.data}"
"#;

const RUN: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisRun
metadata:
  name: guestbook-abc-2
  namespace: default
spec:
  terminate: false
  dryRun:
  - metricName: .*
  measurementRetention:
  - metricName: .*
    limit: 20
  ttlStrategy:
    secondsAfterSuccess: 300
  metrics:
  - name: success-rate
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: http://prometheus.example.com:9090
        query: up
status:
  phase: Failed
  message: Metric "success-rate" assessed Failed due to failed (1) > failureLimit (0)
  startedAt: "2026-03-01T12:00:00Z"
  runSummary:
    count: 1
    failed: 1
  metricResults:
  - name: success-rate
    phase: Failed
    count: 1
    failed: 1
    metadata:
      ResolvedPrometheusQuery: up
    measurements:
    - phase: Failed
      value: "[0.5]"
      startedAt: "2026-03-01T12:00:00Z"
      finishedAt: "2026-03-01T12:00:01Z"
"#;

fn now() -> jiff::Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

#[test]
fn argo_success_rate_template_resolves_rollout_args_and_secrets() {
    let t: AnalysisTemplate = serde_yaml::from_str(SUCCESS_RATE).unwrap();
    assert_eq!(
        t.spec.metrics[0].failure_limit,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(3))
    );
    // The Rollout supplies service-name; api-token comes from the Secret.
    let spec = run_spec(
        &t.spec,
        &[Argument {
            name: "service-name".into(),
            value: Some("checkout.prod.svc.cluster.local".into()),
            value_from: None,
        }],
        &[],
        &[],
    )
    .unwrap();
    let refs = secret_refs(&spec.args);
    assert_eq!(
        refs,
        vec![SecretKeyRef {
            name: "token-secret".into(),
            key: "apiToken".into()
        }]
    );
    let secrets: SecretValues = refs.into_iter().map(|r| (r, "tok".to_string())).collect();
    let pass = begin(&spec, None, &secrets, now());
    assert_eq!(pass.requests.len(), 1);
    let ProviderRequest::Prometheus(p) = &pass.requests[0].provider else {
        panic!("not a prometheus request")
    };
    assert!(
        p.query
            .contains("destination_service=~\"checkout.prod.svc.cluster.local\"")
    );
    assert!(!p.query.contains("{{"));
    assert_eq!(p.timeout, std::time::Duration::from_secs(40));
    assert_eq!(
        p.headers[1],
        ("Authorization".to_string(), "Bearer tok".to_string())
    );
}

#[test]
fn argo_cluster_template_with_templated_count_and_range_query() {
    let t: ClusterAnalysisTemplate = serde_yaml::from_str(CLUSTER_TEMPLATE).unwrap();
    let spec = run_spec(&t.spec.template, &[], &[], &[]).unwrap();
    let pass = begin(&spec, None, &SecretValues::new(), now());
    // initialDelay: nothing yet, come back in 30 s.
    assert!(pass.requests.is_empty());
    let u = pass.finish(vec![], now());
    assert_eq!(u.status.phase, AnalysisPhase::Running);
    assert_eq!(
        u.requeue_at,
        Some(now() + jiff::SignedDuration::from_secs(30))
    );
    let later = now() + jiff::SignedDuration::from_secs(30);
    let pass = begin(&spec, Some(&u.status), &SecretValues::new(), later);
    let ProviderRequest::Prometheus(p) = &pass.requests[0].provider else {
        panic!("not a prometheus request")
    };
    let range = p.range.unwrap();
    assert_eq!(range.end, later);
    assert_eq!(range.start, later - jiff::SignedDuration::from_secs(300));
}

#[test]
fn templates_compose_from_namespaced_and_cluster_templates() {
    let a: AnalysisTemplate = serde_yaml::from_str(SUCCESS_RATE).unwrap();
    let c: ClusterAnalysisTemplate = serde_yaml::from_str(CLUSTER_TEMPLATE).unwrap();
    let refs = serde_yaml::from_str::<Vec<sluice::api::analysis::AnalysisTemplateRef>>(
        "- templateName: success-rate\n- templateName: latency\n  clusterScope: true\n",
    )
    .unwrap();
    let merged = compose(&refs, |r| {
        if r.cluster_scope {
            Some(&c.spec.template)
        } else {
            Some(&a.spec)
        }
    })
    .unwrap();
    let names: Vec<_> = merged.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["success-rate", "p99"]);
    assert_eq!(merged.args.len(), 3);
}

#[test]
fn web_provider_round_trips_and_becomes_a_request() {
    let mut t: AnalysisTemplate = serde_yaml::from_str(WEB).unwrap();
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        back["spec"]["metrics"][0]["provider"]["web"]["timeoutSeconds"],
        20
    );
    let args = [Argument {
        name: "service-name".into(),
        value: Some("checkout".into()),
        value_from: None,
    }];
    t.spec.args.push(Argument {
        name: "service-name".into(),
        value: None,
        value_from: None,
    });
    let spec = run_spec(&t.spec, &args, &[], &[]).unwrap();
    let pass = begin(&spec, None, &SecretValues::new(), now());
    let Some(ProviderRequest::Web(w)) = pass.requests.first().map(|r| &r.provider) else {
        panic!(
            "not a web request: {:?}",
            begin(&spec, None, &SecretValues::new(), now()).finish(vec![], now())
        );
    };
    assert_eq!(
        w.url,
        "http://my-server.com/api/v1/measurement?service=checkout"
    );
    assert_eq!(w.timeout, std::time::Duration::from_secs(20));
    assert_eq!(w.json_path.to_string(), "{$.data}");
}

#[test]
fn unsupported_provider_is_kept_and_reported() {
    let t: AnalysisTemplate = serde_yaml::from_str(&WEB.replace(
        "web:\n        url",
        "datadog:\n        query: x\n        url",
    ))
    .unwrap();
    // Kept through a round trip (the API server preserves it too).
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        back["spec"]["metrics"][0]["provider"]["datadog"]["timeoutSeconds"],
        20
    );
    let spec = run_spec(&t.spec, &[], &[], &[]).unwrap();
    let u = begin(&spec, None, &SecretValues::new(), now()).finish(vec![], now());
    assert_eq!(u.status.phase, AnalysisPhase::Error);
    assert_eq!(
        u.status.message.unwrap(),
        "metric \"webmetric\": provider.datadog: the datadog provider is not supported by \
         Sluice; use one of: prometheus, web, job, judge"
    );
}

#[test]
fn argo_analysis_run_with_status_parses_and_is_left_alone_when_completed() {
    let run: AnalysisRun = serde_yaml::from_str(RUN).unwrap();
    let status = run.status.clone().unwrap();
    assert_eq!(status.phase, AnalysisPhase::Failed);
    assert_eq!(
        status.metric_results[0].measurements[0].value.as_deref(),
        Some("[0.5]")
    );
    assert_eq!(run.spec.measurement_retention[0].limit, 20);
    let pass = begin(&run.spec, Some(&status), &SecretValues::new(), now());
    assert!(pass.requests.is_empty());
    let u = pass.finish(vec![], now());
    assert_eq!(u.status, status);
    assert!(u.transitions.is_empty());
}

#[test]
fn crd_schema_keeps_unknown_providers_and_has_printer_columns() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(AnalysisRun::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    let cols: Vec<_> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cols, ["Status", "Age", "Message"]);
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let provider = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["metrics"]
        ["items"]["properties"]["provider"];
    assert_eq!(provider["x-kubernetes-preserve-unknown-fields"], true);
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["sar"])
    );
    let ct = serde_json::to_value(ClusterAnalysisTemplate::crd()).unwrap();
    assert_eq!(ct["spec"]["scope"], "Cluster");
    assert!(
        ct["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["metrics"]
            .is_object()
    );
}
