//! Closed loop of a blue-green rollout through a real nginx: the Ingress `web` sends production
//! traffic to the active Service `web-stable`, the Ingress `web-preview` sends a second load to
//! the preview Service `web-canary`, and a pre-promotion analysis reads the preview's success
//! rate from a real Prometheus.
//!
//! 1. A bad version (30% errors) is refused by the pre-promotion analysis and aborted: the
//!    preview load met it, production never did (0 requests on `web.example` served by it).
//! 2. A good version passes the analysis and is switched to: production moves to it with zero
//!    failed requests during the switch.

use std::time::{Duration, Instant};

use sluice_e2e::demo_app::ERROR_RATIO;
use sluice_e2e::loadgen::split_of;
use sluice_test_support::closed_loop::*;

/// Active `web-stable`, preview `web-canary`, promoted automatically once the pre-promotion
/// analysis (3 measurements of the preview Ingress) passes; the old version kept up for 10 s
/// after the switch so nginx has moved before its pods go.
const BLUE_GREEN: &str = "      activeService: web-stable\n      previewService: web-canary\n      scaleDownDelaySeconds: 10\n      abortScaleDownDelaySeconds: 2\n      prePromotionAnalysis:\n        templates: [{templateName: preview-success-rate}]\n        args:\n        - {name: ingress, value: web-preview}\n        - {name: count, value: \"3\"}\n";

fn active_selector(r: &sluice::api::rollout::Rollout) -> Option<String> {
    r.status
        .as_ref()
        .and_then(|s| s.blue_green.active_selector.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_version_is_refused_before_it_serves_production() {
    let stack = blue_green_stack_with_stable(BLUE_GREEN).await;
    let production = stack.load("web.example", RATE);
    let preview = stack.load("preview.example", RATE);
    wait_all_served_by(&production, "v1").await;
    wait_all_served_by(&preview, "v1").await;
    let v1 = stable_hash(&stack).await;
    assert!(v1.is_some(), "v1 is stable");

    let started = Instant::now();
    stack
        .apply_yaml(&blue_green_rollout_yaml(
            4,
            "v2",
            &[(ERROR_RATIO, "0.3")],
            BLUE_GREEN,
        ))
        .await
        .expect("rollout v2");
    let r = stack
        .wait_rollout(NS, "web", Duration::from_secs(90), |r| {
            phase_is("Degraded")(r) && r.status.as_ref().is_some_and(|s| s.abort)
        })
        .await
        .expect("v2 aborted");
    let st = r.status.clone().unwrap_or_default();
    assert_eq!(st.stable_rs, v1, "v1 stays stable");
    assert_eq!(active_selector(&r), v1, "the active Service never left v1");
    let msg = st.message.clone().unwrap_or_default();
    assert!(
        msg.contains("success-rate"),
        "the reason names the metric: {msg}"
    );

    // Production keeps being served for a few more seconds after the abort.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = Instant::now();
    let prod = production.between(started, now);
    assert!(prod.len() >= 100, "production requests: {}", prod.len());
    let served = split_of(&prod, "v2");
    assert_eq!(
        served.version, 0,
        "production never met the bad version: {served:?}"
    );
    assert!(
        prod.iter().all(|s| s.version == "v1" && !s.failed()),
        "production: {:?}",
        prod.iter()
            .filter(|s| s.version != "v1" || s.failed())
            .map(|s| (&s.version, s.status))
            .collect::<Vec<_>>()
    );
    let tried = split_of(&preview.between(started, now), "v2");
    assert!(tried.version > 0, "the preview was tried: {tried:?}");
    assert!(
        tried.version_failed > 0,
        "its errors were served and measured: {tried:?}"
    );
    eprintln!(
        "preview: {} requests served by v2, {} failed; production: {} requests, 0 by v2",
        tried.version,
        tried.version_failed,
        prod.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_version_is_switched_to_without_a_failed_request() {
    let stack = blue_green_stack_with_stable(BLUE_GREEN).await;
    let production = stack.load("web.example", RATE);
    let preview = stack.load("preview.example", RATE);
    wait_all_served_by(&production, "v1").await;
    wait_all_served_by(&preview, "v1").await;
    let v1 = stable_hash(&stack).await;

    let begin = Instant::now();
    stack
        .apply_yaml(&blue_green_rollout_yaml(4, "v2", &[], BLUE_GREEN))
        .await
        .expect("rollout v2");
    let r = stack
        .wait_rollout(NS, "web", Duration::from_secs(120), |r| {
            phase_is("Healthy")(r)
                && r.status.as_ref().is_some_and(|s| {
                    s.stable_rs.is_some() && s.stable_rs != v1 && s.stable_rs == s.current_pod_hash
                })
        })
        .await
        .expect("v2 promoted");
    let st = r.status.clone().unwrap_or_default();
    assert_eq!(active_selector(&r), st.stable_rs, "v2 active");
    assert!(
        st.blue_green.pre_promotion_analysis_run_status.is_some(),
        "the switch waited for the pre-promotion analysis: {st:?}"
    );
    wait_all_served_by(&production, "v2").await;
    // The preview met v2 before production did: the analysis measured a version no user had.
    let first_v2 = |load: &sluice_e2e::loadgen::LoadGenerator| {
        load.between(begin, Instant::now())
            .iter()
            .find(|s| s.version == "v2")
            .map(|s| s.sent)
    };
    let (previewed, switched) = (first_v2(&preview), first_v2(&production));
    assert!(
        previewed.is_some() && previewed < switched,
        "v2 previewed at {previewed:?}, in production at {switched:?}"
    );
    // Past the old version's scale-down delay: its pods are gone, nothing still reaches them.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let all = production.between(begin, Instant::now() - Duration::from_millis(500));
    let failed: Vec<_> = all.iter().filter(|s| s.failed()).collect();
    assert!(
        failed.is_empty(),
        "the switch fails no request: {} of {} failed",
        failed.len(),
        all.len()
    );
    let served = split_of(&all, "v2");
    assert!(
        served.version > 0 && served.version < served.total,
        "production moved from v1 to v2: {served:?}"
    );
    let tail = production.between(Instant::now() - Duration::from_secs(5), Instant::now());
    assert!(
        !tail.is_empty() && tail.iter().all(|s| s.version == "v2"),
        "every later request is served by v2"
    );
    eprintln!(
        "switch: {} production requests, {} by v2, 0 failed",
        all.len(),
        served.version
    );
}
