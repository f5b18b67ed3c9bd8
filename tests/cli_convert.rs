//! `sluice convert`: Argo Rollouts manifests to Sluice, with what does not carry over.

use sluice::cli::convert::convert;
use sluice::cli::lint::lint_sources;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const ARGO_CLEAN: &str = r#"# canary from the Argo Rollouts docs
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: rollouts-demo
spec:
  replicas: 5
  selector:
    matchLabels:
      app: rollouts-demo
  template:
    metadata:
      labels:
        app: rollouts-demo
    spec:
      containers:
      - name: rollouts-demo
        image: argoproj/rollouts-demo:blue
  strategy:
    canary:
      canaryService: rollouts-demo-canary
      stableService: rollouts-demo-stable
      trafficRouting:
        nginx:
          stableIngress: rollouts-demo-stable
      steps:
      - setWeight: 20
      - pause: {}
      - analysis:
          templates:
          - templateName: success-rate
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  metrics:
  - name: success-rate
    interval: 5m
    successCondition: result[0] >= 0.95
    failureLimit: 3
    provider:
      prometheus:
        address: http://prometheus.example.com:9090
        query: sum(rate(istio_requests_total{response_code!~"5.*"}[5m])) / sum(rate(istio_requests_total[5m]))
---
apiVersion: v1
kind: Service
metadata:
  name: rollouts-demo-canary
spec:
  selector:
    app: rollouts-demo
"#;

#[test]
fn a_supported_manifest_converts_by_changing_only_the_api_version() -> Result {
    let c = convert(ARGO_CLEAN)?;
    assert_eq!(c.converted, 2);
    assert!(c.notes.is_empty(), "{:#?}", c.notes);
    let expected = ARGO_CLEAN.replace(
        "apiVersion: argoproj.io/v1alpha1",
        "apiVersion: sluice.dev/v1alpha1",
    );
    assert_eq!(
        c.yaml, expected,
        "comments, order and other objects are kept"
    );
    let report = lint_sources(&[("converted.yaml".into(), c.yaml)], &[]);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.objects, 2);
    Ok(())
}

const ARGO_UNSUPPORTED: &str = r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: web:1
  strategy:
    canary:
      trafficRouting:
        alb:
          ingress: web
      steps:
      - setWeight: 20
      - experiment:
          templates:
          - name: baseline
            specRef: stable
      - plugin:
          name: argoproj-labs/sample
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: bg
spec:
  selector:
    matchLabels: {app: bg}
  template:
    metadata:
      labels: {app: bg}
    spec:
      containers:
      - name: bg
        image: bg:1
  strategy:
    blueGreen:
      activeService: bg-active
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: dd
spec:
  metrics:
  - name: errors
    provider:
      datadog:
        query: sum:errors{*}
  - name: amp
    provider:
      prometheus:
        address: https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1
        query: up
        authentication:
          sigv4:
            region: us-east-1
---
apiVersion: argoproj.io/v1alpha1
kind: Experiment
metadata:
  name: exp
spec:
  templates: []
"#;

#[test]
fn what_cannot_carry_over_is_reported_with_its_line() -> Result {
    let c = convert(ARGO_UNSUPPORTED)?;
    let notes: Vec<String> = c
        .notes
        .iter()
        .map(|n| format!("{}: {} {}: {}", n.line, n.object, n.field, n.message))
        .collect();
    assert_eq!(
        notes,
        [
            "19: Rollout/web spec.strategy.canary.trafficRouting.alb: AWS ALB traffic routing (trafficRouting.alb) is not supported by Sluice; use trafficRouting.nginx, trafficRouting.istio or trafficRouting.gatewayAPI",
            "23: Rollout/web spec.strategy.canary.steps[1].experiment: experiment steps are not supported by Sluice; use an analysis step (Prometheus metrics) against the canary, with setCanaryScale for a fixed number of canary pods",
            "27: Rollout/web spec.strategy.canary.steps[2].plugin: step plugins are not supported by Sluice; use analysis steps (Prometheus metrics)",
            "56: AnalysisTemplate/dd spec.metrics[0].provider.datadog: the datadog provider is not supported by Sluice; use one of: prometheus, web, job, judge",
            "64: AnalysisTemplate/dd spec.metrics[1].provider.prometheus.authentication.sigv4: sigv4 authentication is not supported by Sluice (supported: basicAuth, or an Authorization header)",
            "68: Experiment/exp kind: Experiment is not supported by Sluice; left out of the output",
        ]
    );
    assert_eq!(c.converted, 3);
    assert!(!c.yaml.contains("argoproj.io"), "{}", c.yaml);
    assert!(!c.yaml.contains("kind: Experiment"));
    // Kept as written, so the controller names them too instead of silently running without.
    assert!(c.yaml.contains("experiment:"));
    // A blue-green Rollout carries over as it is.
    assert!(c.yaml.contains("activeService: bg-active"), "{}", c.yaml);
    Ok(())
}

#[test]
fn binary_prints_yaml_and_exits_one_when_something_does_not_carry_over() -> Result {
    let dir = tempfile::tempdir()?;
    let bin = env!("CARGO_BIN_EXE_sluice");
    let clean = dir.path().join("clean.yaml");
    std::fs::write(&clean, ARGO_CLEAN)?;
    let out = std::process::Command::new(bin)
        .args(["convert", "-f"])
        .arg(&clean)
        .output()?;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)?.contains("apiVersion: sluice.dev/v1alpha1"));
    assert_eq!(
        String::from_utf8(out.stderr)?,
        "converted 2 objects; everything carried over\n"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, ARGO_UNSUPPORTED)?;
    let out = std::process::Command::new(bin)
        .args(["convert", "-f"])
        .arg(&bad)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains(&format!(
            "{}:23: Rollout/web spec.strategy.canary.steps[1].experiment: experiment steps are not supported by Sluice",
            bad.display()
        )),
        "{stderr}"
    );
    Ok(())
}

/// Convert runs every check of lint on its output: a manifest that only changes `apiVersion` but
/// would be refused (Services missing for NGINX, a quantity that is none, a templated interval
/// whose value is no duration) is reported at its input line, never "everything carried over".
#[test]
fn convert_reports_what_lint_would_refuse_in_its_output() -> Result {
    let argo = ARGO_CLEAN
        .replace("      canaryService: rollouts-demo-canary\n", "")
        .replace(
            "        image: argoproj/rollouts-demo:blue\n",
            "        image: argoproj/rollouts-demo:blue\n        resources:\n          limits: {memory: invalid}\n",
        )
        .replace("    interval: 5m\n", "    interval: \"5\"\n");
    let c = convert(&argo)?;
    let notes: Vec<String> = c
        .notes
        .iter()
        .map(|n| format!("{}: {} {}: {}", n.line, n.object, n.field, n.message))
        .collect();
    assert_eq!(notes.len(), 3, "{notes:#?}");
    assert!(
        notes[0].starts_with(
            "20: Rollout/rollouts-demo spec.template.spec.containers[0].resources.limits.memory: \
             \"invalid\" is not a quantity"
        ),
        "{notes:#?}"
    );
    assert!(
        notes[1].starts_with(
            "22: Rollout/rollouts-demo spec.strategy.canary.canaryService: is required"
        ),
        "{notes:#?}"
    );
    assert!(
        notes[2].starts_with(
            "41: AnalysisTemplate/success-rate spec.metrics[0].interval: interval cannot read \"5\""
        ),
        "{notes:#?}"
    );
    // The same as lint says about the output.
    let report = lint_sources(&[("converted.yaml".into(), c.yaml)], &[]);
    assert_eq!(report.findings.len(), 3, "{:#?}", report.findings);
    Ok(())
}
