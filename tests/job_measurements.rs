//! The asynchronous measurement of job metrics, pure: a measurement starts Running, is polled,
//! and ends with the Job; when another metric fails the run, the running Job is stopped before
//! the run completes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use sluice::analysis::args::SecretValues;
use sluice::analysis::run::{JobRequest, ProviderRequest, ProviderResult, Update, begin};
use sluice::analysis::value::MetricValue;
use sluice::api::analysis::{AnalysisRunSpec, AnalysisRunStatus};
use sluice::api::common::AnalysisPhase::{self, *};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn spec(names: &[&str]) -> AnalysisRunSpec {
    let metrics: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                r#"- name: {n}
  provider:
    job:
      spec:
        backoffLimit: 0
        template: {{spec: {{restartPolicy: Never, containers: [{{name: c, image: busybox}}]}}}}"#
            )
        })
        .collect();
    serde_yaml::from_str(&format!("metrics:\n{}", metrics.join("\n"))).unwrap()
}

fn job(phase: AnalysisPhase, name: &str) -> ProviderResult {
    ProviderResult {
        value: Ok(MetricValue::Nil),
        metadata: BTreeMap::from([("job-name".to_string(), name.to_string())]),
        phase: Some((phase, (phase == Failed).then(|| "job failed".to_string()))),
    }
}

/// One pass; `answer` gives each request's result.
fn pass(
    spec: &AnalysisRunSpec,
    status: Option<&AnalysisRunStatus>,
    now: Timestamp,
    answer: impl Fn(&str, &JobRequest) -> ProviderResult,
) -> (Vec<(String, JobRequest)>, Update) {
    let p = begin(spec, status, &SecretValues::new(), now);
    let mut asked = Vec::new();
    let mut results = Vec::new();
    for req in p.requests.clone() {
        let ProviderRequest::Job(j) = &req.provider else {
            panic!("not a job request")
        };
        asked.push((req.metric.clone(), j.clone()));
        let r = answer(&req.metric, j);
        results.push(req.into_result(now, now, r));
    }
    (asked, p.finish(results, now))
}

#[test]
fn a_job_measurement_runs_then_ends_with_the_job() {
    let s = spec(&["check"]);
    let (asked, u) = pass(&s, None, at(0), |_, _| job(Running, "uid.check.1"));
    assert!(matches!(asked[0].1, JobRequest::Start { sequence: 1, .. }));
    let st = u.status;
    assert_eq!(st.phase, Running);
    let m = &st.metric_results[0];
    assert_eq!((m.phase, m.count), (Running, 0));
    assert_eq!(m.measurements[0].phase, Running);
    assert!(m.measurements[0].finished_at.is_none());
    assert_eq!(m.measurements[0].metadata["job-name"], "uid.check.1");
    let wake = u.requeue_at.expect("polled again");
    assert!(wake > at(0) && wake <= at(30), "{wake}");

    let (asked, u) = pass(&s, Some(&st), at(5), |_, _| job(Running, "uid.check.1"));
    assert_eq!(
        asked,
        [(
            "check".to_string(),
            JobRequest::Poll {
                name: "uid.check.1".into()
            }
        )]
    );
    let st = u.status;
    assert_eq!(
        st.metric_results[0].measurements.len(),
        1,
        "replaced, not added"
    );

    let (_, u) = pass(&s, Some(&st), at(9), |_, _| job(Successful, "uid.check.1"));
    let st = u.status;
    assert_eq!(st.phase, Successful);
    let m = &st.metric_results[0];
    assert_eq!((m.phase, m.count, m.successful), (Successful, 1, 1));
    assert_eq!(m.measurements.len(), 1);
    assert_eq!(m.measurements[0].started_at.as_ref().unwrap().0, at(0));
    assert_eq!(m.measurements[0].finished_at.as_ref().unwrap().0, at(9));
    assert!(u.requeue_at.is_none());
}

#[test]
fn a_failing_metric_stops_the_running_job_before_the_run_completes() {
    let s = spec(&["slow", "fast"]);
    let (_, u) = pass(&s, None, at(0), |m, _| job(Running, &format!("uid.{m}.1")));
    // `fast` fails; `slow` still runs: the run waits for it to be stopped.
    let (_, u) = pass(&s, Some(&u.status), at(2), |m, _| {
        let phase = if m == "fast" { Failed } else { Running };
        job(phase, &format!("uid.{m}.1"))
    });
    assert_eq!(u.status.phase, Running, "{:?}", u.status);
    let (asked, u) = pass(&s, Some(&u.status), at(3), |m, _| {
        job(Inconclusive, &format!("uid.{m}.1"))
    });
    assert_eq!(
        asked,
        [(
            "slow".to_string(),
            JobRequest::Terminate {
                name: "uid.slow.1".into()
            }
        )]
    );
    assert_eq!(u.status.phase, Failed, "{:?}", u.status);
    assert_eq!(u.status.metric_results[0].phase, Inconclusive);
}

#[test]
fn a_job_that_cannot_be_created_is_an_error_and_the_next_gets_a_new_number() {
    let s = spec(&["check"]);
    let (_, u) = pass(&s, None, at(0), |_, _| {
        ProviderResult::measured(
            Err("cannot create job x: forbidden".into()),
            BTreeMap::new(),
        )
    });
    let m = &u.status.metric_results[0];
    assert_eq!((m.phase, m.error), (Running, 1));
    assert_eq!(m.measurements[0].phase, Error);
    // Retried after the error interval, as the second measurement.
    let (asked, _) = pass(&s, Some(&u.status), at(10), |_, _| {
        job(Running, "uid.check.2")
    });
    assert!(
        matches!(asked[0].1, JobRequest::Start { sequence: 2, .. }),
        "{asked:?}"
    );
}
