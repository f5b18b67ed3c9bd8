//! An AnalysisRun whose measurements error says why while it still runs: the reason is in the
//! status write that records the measurement (on the measurement and on the metric), and one
//! Warning Event reports the metric's first error; later errors of the run add none.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Resource, ResourceExt};
use sluice::api::analysis::AnalysisRun;
use sluice::api::common::AnalysisPhase;
use sluice_test_support::controller::*;

/// The only address the controller may query; the run asks another one.
const ALLOWED: &str = "http://prometheus.monitoring:9090";

const RUN: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisRun
metadata: {name: web-live-1}
spec:
  metrics:
  - name: success-rate
    interval: 1m
    count: 3
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: http://metrics.example:9090
        query: vector(1)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erroring_metric_says_why_while_the_run_is_running() {
    let env = Env::with_config(prometheus_config(ALLOWED, None)).await;
    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    let run: AnalysisRun = serde_yaml::from_str(RUN).unwrap();
    let created = runs.create(&PostParams::default(), &run).await.unwrap();
    let name = created.name_any();
    let from = created.resource_version().unwrap();

    // Every version the controller writes, from the creation on: the first one holding a
    // measurement must already say why it failed.
    let mut stream = runs
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    let mut seen_measurements = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while seen_measurements < 2 {
        let event = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("two errored measurements within 40s")
            .unwrap()
            .expect("the watch stays open");
        let obj = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => o,
            WatchEvent::Bookmark(_) => continue,
            other => panic!("unexpected watch event {other:?}"),
        };
        if obj.name_any() != name {
            continue;
        }
        let Some(st) = obj.status else { continue };
        let Some(result) = st.metric_results.first() else {
            continue;
        };
        if result.measurements.len() == seen_measurements {
            continue;
        }
        seen_measurements = result.measurements.len();
        assert_eq!(
            st.phase,
            AnalysisPhase::Running,
            "the run still retries: {st:?}"
        );
        assert_eq!(result.phase, AnalysisPhase::Running);
        assert_eq!(result.error, seen_measurements as i32);
        let last = result.measurements.last().unwrap();
        assert_eq!(last.phase, AnalysisPhase::Error);
        let why = last.message.clone().unwrap_or_default();
        assert!(
            why.contains("\"http://metrics.example:9090\" is not in the controller's allowlist")
                && why.contains(ALLOWED),
            "measurement {seen_measurements} does not say why: {why:?}"
        );
        assert_eq!(
            result.message.as_deref(),
            Some(why.as_str()),
            "the metric carries its latest error"
        );
    }

    // One Warning Event for the first error, none for the second.
    let events: Api<EventV1> = Api::namespaced(env.client.clone(), env.ns());
    let reported: Vec<EventV1> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()))
        .filter(|e| e.reason.as_deref() == Some("MeasurementError"))
        .collect();
    assert_eq!(reported.len(), 1, "{reported:?}");
    let e = &reported[0];
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert!(e.series.is_none(), "reported again: {:?}", e.series);
    assert_eq!(
        e.regarding.as_ref().and_then(|r| r.kind.as_deref()),
        Some(AnalysisRun::kind(&()).as_ref())
    );
    let note = e.note.clone().unwrap_or_default();
    assert!(
        note.starts_with("metric \"success-rate\" could not be measured: prometheus address"),
        "{note}"
    );
    assert!(note.contains("not in the controller's allowlist"), "{note}");
}
