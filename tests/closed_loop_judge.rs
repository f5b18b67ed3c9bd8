//! Closed loop with the judge: the controller runs `nginx-judge` against a real nginx and a real
//! Prometheus. A version failing 30% of requests is aborted with the judge's verdict in the
//! Rollout's message and in `sluice explain`, after a few dozen canary requests at most; the
//! canary weight is back to 0 and the stable version serves everything.

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::cli::kube::Target;
use sluice::cli::{explain, info};
use sluice::demo::stack::rollout_yaml;
use sluice_e2e::demo_app::ERROR_RATIO;
use sluice_e2e::loadgen::split_of;
use sluice_test_support::closed_loop::*;

const JUDGE_STEP: &str = "      - analysis:
          templates: [{templateName: nginx-judge}]
          args:
          - {name: namespace, value: default}
          - {name: ingress, value: web}
          - {name: service, value: web-canary}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_is_aborted_by_the_judge_with_its_verdict() {
    let steps = format!(
        "      - setWeight: 10\n{JUDGE_STEP}      - setWeight: 50\n      - pause: {{duration: 5s}}\n"
    );
    // The stable version is rolled out before the judge template exists: without steps.
    let stack = stack_with_stable("      - setWeight: 10\n").await;
    let judge: Value = serde_yaml::from_str(include_str!("../analysis-templates/nginx-judge.yaml"))
        .expect("template parses");
    stack.apply(judge).await.expect("judge template");
    let load = stack.load("web.example", RATE);
    wait_all_served_by(&load, "v1").await;
    let started = Instant::now();
    stack
        .apply_yaml(&rollout_yaml(
            NS,
            4,
            "v2",
            &[(ERROR_RATIO, "0.3")],
            &canary(&steps),
        ))
        .await
        .expect("rollout v2");
    let r = stack
        .wait_rollout(NS, "web", Duration::from_secs(120), |r| {
            phase_is("Degraded")(r)
                && r.status
                    .as_ref()
                    .and_then(|s| s.canary.weights.as_ref())
                    .is_none_or(|w| w.canary.weight == 0)
        })
        .await
        .expect("v2 aborted");
    let st = r.status.unwrap();
    assert!(st.abort, "{st:?}");
    let msg = st.message.clone().unwrap_or_default();
    assert!(msg.contains("worse with 99% confidence"), "{msg}");

    let target = Target {
        client: stack.client(),
        namespace: NS.to_string(),
        server: String::new(),
    };
    let v = info::view(&info::fetch(&target, "web").await.expect("fetch"));
    let sentences = explain::explain(&v);
    let first = &sentences[0];
    assert!(
        first.contains("the judge of metric judge in AnalysisRun")
            && first.contains("found canary errors")
            && first.contains("worse with 99% confidence"),
        "{sentences:?}"
    );

    wait_all_served_by(&load, "v1").await;
    let blast = split_of(&load.between(started, Instant::now()), "v2");
    println!(
        "judge: bad version served {} requests, {} failed; {}",
        blast.version, blast.version_failed, first
    );
    // At 40 requests/s and 10%, the SPRT needs about 10 canary requests on average; the scrape,
    // the look and the reaction add a few seconds at 4 requests/s on a busy machine.
    assert!(blast.version <= 80, "blast radius {}", blast.version);
}
