//! Shared setup of the closed-loop scenarios: the local stack of `sluice demo` with the sample
//! app, its stable version live, and helpers to read traffic and Rollout state.

use std::time::{Duration, Instant};

use sluice::demo::stack::{LocalStack, gateway_app, nginx_app, rollout_yaml, template};

pub use crate::rollout::phase_is;

pub const NS: &str = "default";
pub const RATE: u32 = 40;

pub fn analysis(count: u32) -> String {
    format!(
        "      - analysis:\n          templates: [{{templateName: nginx-success-rate}}]\n          args:\n          - {{name: namespace, value: {NS}}}\n          - {{name: ingress, value: web}}\n          - {{name: service, value: web-canary}}\n          - {{name: window, value: 5s}}\n          - {{name: count, value: \"{count}\"}}\n"
    )
}

pub fn canary(steps: &str) -> String {
    format!(
        "      canaryService: web-canary\n      stableService: web-stable\n      scaleDownDelaySeconds: 2\n      abortScaleDownDelaySeconds: 2\n      trafficRouting:\n        nginx: {{stableIngress: web}}\n      steps:\n{steps}"
    )
}

pub async fn stack_with_stable(steps: &str) -> LocalStack {
    let stack = LocalStack::start().await.expect("local stack starts");
    stack.apply_yaml(&nginx_app(NS)).await.expect("app");
    stack
        .apply(template("nginx-success-rate", "1s", Some("3s")).expect("template"))
        .await
        .expect("template");
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v1", &[], &canary(steps)))
        .await
        .expect("rollout v1");
    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), phase_is("Healthy"))
        .await
        .expect("v1 healthy");
    stack
}

/// Waits until nginx serves `version` to every request of a one-second window.
pub async fn wait_all_served_by(load: &sluice_e2e::loadgen::LoadGenerator, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        let window = load.between(now - Duration::from_secs(2), now - Duration::from_secs(1));
        if !window.is_empty() && window.iter().all(|s| s.version == version && !s.failed()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every request is served by {version}: {:?}",
            window
                .iter()
                .map(|s| (&s.version, s.status))
                .collect::<Vec<_>>()
        );
    }
}

pub async fn stable_hash(stack: &LocalStack) -> Option<String> {
    stack
        .rollout(NS, "web")
        .await
        .expect("rollout")
        .status
        .and_then(|s| s.stable_rs)
}

/// A step analysis of the canary's success rate behind the HTTPRoute `web`
/// (`gateway-api-success-rate`).
pub fn gateway_analysis(count: u32) -> String {
    format!(
        "      - analysis:\n          templates: [{{templateName: gateway-api-success-rate}}]\n          args:\n          - {{name: namespace, value: {NS}}}\n          - {{name: route, value: web}}\n          - {{name: service, value: web-canary}}\n          - {{name: window, value: 5s}}\n          - {{name: count, value: \"{count}\"}}\n"
    )
}

/// A canary strategy routed through the HTTPRoute `web`; `routing` is the YAML under
/// `trafficRouting` (indented by 8 spaces), e.g. [`GATEWAY_API`] or [`GATEWAY_API_PLUGIN`].
pub fn gateway_canary(routing: &str, steps: &str) -> String {
    format!(
        "      canaryService: web-canary\n      stableService: web-stable\n      scaleDownDelaySeconds: 2\n      abortScaleDownDelaySeconds: 2\n      trafficRouting:\n{routing}      steps:\n{steps}"
    )
}

/// Sluice's own field for the HTTPRoute `web`.
pub const GATEWAY_API: &str = "        gatewayAPI: {httpRoute: web}\n";

/// Argo Rollouts' Gateway API plugin configuration for the HTTPRoute `web`.
pub const GATEWAY_API_PLUGIN: &str =
    "        plugins:\n          argoproj-labs/gatewayAPI: {httpRoute: web, namespace: default}\n";

/// The local stack with the sample app behind the HTTPRoute `web`, the Gateway API templates,
/// and `v1` of the Rollout (canary strategy `canary_yaml`) healthy.
pub async fn gateway_stack_with_stable(canary_yaml: &str) -> LocalStack {
    let stack = LocalStack::start().await.expect("local stack starts");
    stack.apply_yaml(&gateway_app(NS)).await.expect("app");
    stack
        .apply(template("gateway-api-success-rate", "1s", Some("3s")).expect("template"))
        .await
        .expect("template");
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v1", &[], canary_yaml))
        .await
        .expect("rollout v1");
    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), phase_is("Healthy"))
        .await
        .expect("v1 healthy");
    stack
}

/// The Ingress `web-preview` (host `preview.example`) in front of the preview Service
/// `web-canary`: a blue-green preview only gets requests someone sends it, and its analysis
/// measures those.
pub const PREVIEW_INGRESS: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web-preview
  namespace: default
  annotations: {kubernetes.io/ingress.class: nginx}
spec:
  rules:
  - host: preview.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web-canary, port: {number: 80}}}
"#;

/// Success rate of every request through the Ingress `{{args.ingress}}` (the shipped
/// `nginx-success-rate` measures the canary share of a split Ingress, which a blue-green preview
/// Ingress does not have). No request in the window is never a success.
pub const PREVIEW_SUCCESS_RATE: &str = r#"apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: preview-success-rate, namespace: default}
spec:
  args:
  - name: ingress
  - name: count
  metrics:
  - name: success-rate
    interval: 1s
    initialDelay: 3s
    count: "{{args.count}}"
    failureLimit: "0"
    consecutiveErrorLimit: 4
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        query: |
          sum(rate(nginx_ingress_controller_requests{namespace="default",ingress="{{args.ingress}}",status!~"5.."}[5s]))
          /
          sum(rate(nginx_ingress_controller_requests{namespace="default",ingress="{{args.ingress}}"}[5s]))
"#;

/// A blue-green Rollout of the sample app: [`rollout_yaml`] with `blue_green_yaml` (indented by
/// 6 spaces) under `strategy.blueGreen` instead of `strategy.canary`.
pub fn blue_green_rollout_yaml(
    replicas: i32,
    version: &str,
    annotations: &[(&str, &str)],
    blue_green_yaml: &str,
) -> String {
    rollout_yaml(NS, replicas, version, annotations, blue_green_yaml)
        .replace("\n    canary:\n", "\n    blueGreen:\n")
}

/// The local stack with the sample app, the preview Ingress, the `preview-success-rate`
/// template and `v1` of a blue-green Rollout (strategy `blue_green_yaml`) healthy.
pub async fn blue_green_stack_with_stable(blue_green_yaml: &str) -> LocalStack {
    let stack = LocalStack::start().await.expect("local stack starts");
    stack.apply_yaml(&nginx_app(NS)).await.expect("app");
    stack.apply_yaml(PREVIEW_INGRESS).await.expect("preview");
    stack
        .apply_yaml(PREVIEW_SUCCESS_RATE)
        .await
        .expect("template");
    stack
        .apply_yaml(&blue_green_rollout_yaml(4, "v1", &[], blue_green_yaml))
        .await
        .expect("rollout v1");
    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), phase_is("Healthy"))
        .await
        .expect("v1 healthy");
    stack
}

/// Checks that the share of `load` served by `v2` while the Rollout held each of `weights` is
/// within 3 points of it, on at least `min_requests` requests per weight (nginx follows its
/// configuration within a sync period: the first second at a weight is skipped), and that none
/// of those requests failed unless `canary_may_fail`.
pub fn assert_shares(
    load: &sluice_e2e::loadgen::LoadGenerator,
    timeline: &sluice::demo::stack::Timeline,
    weights: &[i32],
    min_requests: usize,
    canary_may_fail: bool,
) {
    for &weight in weights {
        let intervals = timeline.intervals_at(weight);
        assert_eq!(
            intervals.len(),
            1,
            "weight {weight} held once: {:?}",
            timeline.states()
        );
        let (from, to) = intervals[0];
        let split = load.split(
            "v2",
            from + Duration::from_secs(1),
            to - Duration::from_millis(700),
        );
        assert!(
            split.total >= min_requests,
            "too few requests at weight {weight}: {split:?}"
        );
        assert!(
            (split.percent() - f64::from(weight)).abs() <= 3.0,
            "weight {weight}: v2 served {:.1}% of {} requests",
            split.percent(),
            split.total
        );
        if !canary_may_fail {
            assert_eq!(split.version_failed, 0, "weight {weight}: {split:?}");
        }
    }
}
