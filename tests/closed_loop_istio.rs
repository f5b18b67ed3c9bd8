//! Closed loop through Istio-style routing: nginx follows the VirtualService weights the
//! controller writes, Istio's standard metrics come from its access log, and the shipped
//! `istio-latency` template aborts a version whose p99 is over the threshold.

use std::time::{Duration, Instant};

use sluice::demo::stack::{LocalStack, Timeline, rollout_yaml, template};
use sluice_e2e::demo_app::LATENCY;
use sluice_e2e::loadgen::split_of;

const NS: &str = "default";

const APP: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web-stable, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-canary, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.mesh]
  http:
  - name: primary
    route:
    - destination: {host: web-stable}
      weight: 100
    - destination: {host: web-canary}
      weight: 0
"#;

const CANARY: &str = "      canaryService: web-canary
      stableService: web-stable
      scaleDownDelaySeconds: 2
      abortScaleDownDelaySeconds: 2
      trafficRouting:
        istio:
          virtualService: {name: web, routes: [primary]}
      steps:
      - setWeight: 20
      - analysis:
          templates: [{templateName: istio-latency}]
          args:
          - {name: namespace, value: default}
          - {name: service, value: web-canary}
          - {name: window, value: 5s}
          - {name: count, value: \"3\"}
          - {name: p95-threshold, value: \"1000\"}
          - {name: p99-threshold, value: \"150\"}
      - setWeight: 60
      - pause: {duration: 5s}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_regression_through_istio_routing_is_aborted() {
    let stack = LocalStack::start().await.expect("local stack starts");
    stack.apply_yaml(APP).await.expect("app");
    stack
        .apply(template("istio-latency", "1s", Some("6s")).unwrap())
        .await
        .expect("template");
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v1", &[(LATENCY, "5ms")], CANARY))
        .await
        .expect("v1");
    let healthy = |r: &sluice::api::rollout::Rollout| {
        r.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.as_str() == "Healthy")
    };
    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), healthy)
        .await
        .expect("v1 healthy");
    let load = stack.mesh_load("web.mesh", 40);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        let w = load.between(now - Duration::from_secs(2), now - Duration::from_secs(1));
        if !w.is_empty() && w.iter().all(|s| s.version == "v1" && !s.failed()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nginx never served v1 via the VirtualService"
        );
    }
    let timeline = Timeline::start(stack.client(), NS, "web");
    let v1 = stack
        .rollout(NS, "web")
        .await
        .unwrap()
        .status
        .and_then(|s| s.stable_rs);
    // v2 answers correctly, but 300 ms late.
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v2", &[(LATENCY, "300ms")], CANARY))
        .await
        .expect("v2");
    let r = stack
        .wait_rollout(NS, "web", Duration::from_secs(90), |r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase.is_some_and(|p| p.as_str() == "Degraded")
                    && s.canary
                        .weights
                        .as_ref()
                        .is_none_or(|w| w.canary.weight == 0)
            })
        })
        .await
        .expect("aborted on latency");
    let st = r.status.unwrap();
    assert!(st.abort);
    assert_eq!(st.stable_rs, v1);
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.contains("latency-p99"),
        "the reason names the p99 metric: {msg}"
    );
    assert!(
        timeline.states().iter().all(|s| s.weight <= 20),
        "{:?}",
        timeline.states()
    );
    // The canary got its 20% while it was measured, through the VirtualService weights.
    let (from, to) = timeline.intervals_at(20)[0];
    // The controller sets the weight to 0 before it writes the abort into status: leave out the
    // end of the interval.
    let split = load.split(
        "v2",
        from + Duration::from_secs(1),
        to - Duration::from_millis(700),
    );
    assert!(
        split.total >= 30 && (split.percent() - 20.0).abs() <= 3.0,
        "VirtualService weight 20: {split:?}"
    );
    // Then everything back on v1.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = Instant::now();
    let after = load.between(
        now - Duration::from_secs(2),
        now - Duration::from_millis(500),
    );
    let back = split_of(&after, "v2");
    assert!(
        back.total > 0 && back.version == 0,
        "after the abort: {back:?}"
    );
}
