//! The lifecycle fields of analysis, acted on by the controller on the test cluster: a Rollout's
//! `spec.analysis` run history limits prune finished runs; a run's `ttlStrategy` deletes it (and
//! its Jobs with it); a dry-run job metric is measured and shown but never decides the run.
//! Job metrics keep these tests free of any server: `sh -c "exit N"` decides each measurement.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use sluice::api::analysis::{AnalysisRun, AnalysisTemplate};
use sluice::api::common::AnalysisPhase;
use sluice_test_support::controller::*;
use sluice_test_support::rollout::phase_is;

/// A one-metric job template whose Job exits with `code`.
fn exit_template(name: &str, code: i32) -> String {
    format!(
        r#"
kind: AnalysisTemplate
metadata: {{name: {name}}}
spec:
  metrics:
  - name: check
    provider:
      job:
        spec:
          backoffLimit: 0
          template:
            spec:
              restartPolicy: Never
              containers:
              - name: check
                image: busybox
                command: [sh, -c, "exit {code}"]
"#
    )
}

async fn env(templates: &[String]) -> Env {
    let env = Env::new().await;
    let api: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), env.ns());
    for yaml in templates {
        let t: AnalysisTemplate = serde_yaml::from_str(yaml).unwrap();
        api.create(&PostParams::default(), &t).await.unwrap();
    }
    env
}

async fn runs(env: &Env) -> Vec<AnalysisRun> {
    Api::<AnalysisRun>::namespaced(env.client.clone(), env.ns())
        .list(&Default::default())
        .await
        .unwrap()
        .items
}

async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_beyond_the_history_limit_are_pruned() {
    let env = env(&[exit_template("pass", 0)]).await;
    let name = "history";
    let step = "- analysis:\n    templates: [{templateName: pass}]\n";
    let mut ro = rollout(
        name,
        1,
        "history:1",
        &format!("steps:\n- setWeight: 50\n{step}{step}{step}"),
    );
    ro.spec.analysis = Some(sluice::api::rollout::AnalysisRunStrategy {
        successful_run_history_limit: Some(1),
        unsuccessful_run_history_limit: Some(1),
    });
    env.create(&ro).await;
    env.wait_for(name, "healthy", 60, phase_is("Healthy")).await;
    let before = current(&env.get(name).await);
    env.set_image(name, "history:2").await;
    // The first version's status is Healthy at step 4 too: wait for the new version's.
    env.wait_for(name, "healthy with the new image", 90, |r| {
        phase_is("Healthy")(r)
            && current(r) != before
            && stable(r) == current(r)
            && r.status.as_ref().and_then(|s| s.current_step_index) == Some(4)
    })
    .await;
    // Three Successful step runs were created. The newest stays as the one the Rollout's status
    // names (Sluice keeps it there after the update completes), and of the others only the
    // newest one (the limit is 1): the first run is pruned.
    eventually("the oldest run is pruned", 30, || async {
        let mut all: Vec<(String, Option<String>)> = runs(&env)
            .await
            .iter()
            .map(|r| (r.name_any(), r.labels().get("step-index").cloned()))
            .collect();
        all.sort();
        let steps: Vec<Option<&str>> = all.iter().map(|(_, s)| s.as_deref()).collect();
        if steps == [Some("2"), Some("3")] {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;
    let left = runs(&env).await;
    assert!(
        left.iter()
            .all(|r| r.status.as_ref().map(|s| s.phase) == Some(AnalysisPhase::Successful)),
        "{:#?}",
        left.iter()
            .map(|r| (
                r.name_any(),
                r.metadata.creation_timestamp.clone(),
                r.labels().clone(),
                r.spec.terminate,
                r.status.clone()
            ))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_deletes_the_finished_run_and_its_jobs() {
    let env = env(&[]).await;
    let run: AnalysisRun = serde_yaml::from_str(
        r#"
kind: AnalysisRun
metadata: {name: short-lived}
spec:
  ttlStrategy: {secondsAfterSuccess: 2, secondsAfterFailure: 600}
  metrics:
  - name: check
    provider:
      job:
        spec:
          backoffLimit: 0
          template:
            spec:
              restartPolicy: Never
              containers: [{name: check, image: busybox, command: [sh, -c, "exit 0"]}]
"#,
    )
    .unwrap();
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    api.create(&PostParams::default(), &run).await.unwrap();
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), env.ns());
    eventually("the run succeeds", 30, || async {
        let r = api.get("short-lived").await.map_err(|e| e.to_string())?;
        match r.status.map(|s| s.phase) {
            Some(AnalysisPhase::Successful) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(jobs.list(&Default::default()).await.unwrap().items.len(), 1);
    eventually("the run is deleted after its TTL", 30, || async {
        match api
            .get_opt("short-lived")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
    eventually("its Job goes with it", 30, || async {
        let left = jobs.list(&Default::default()).await.unwrap().items;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{} jobs", left.len()))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_job_metric_is_measured_and_shown_but_never_decides() {
    let env = env(&[]).await;
    let run: AnalysisRun = serde_yaml::from_str(
        r#"
kind: AnalysisRun
metadata: {name: dry}
spec:
  dryRun: [{metricName: failing}]
  measurementRetention: [{metricName: failing, limit: 1}]
  metrics:
  - name: failing
    count: 2
    interval: 1s
    failureLimit: 5
    provider:
      job:
        spec:
          backoffLimit: 0
          template:
            spec:
              restartPolicy: Never
              containers: [{name: check, image: busybox, command: [sh, -c, "exit 1"]}]
  - name: passing
    provider:
      job:
        spec:
          backoffLimit: 0
          template:
            spec:
              restartPolicy: Never
              containers: [{name: check, image: busybox, command: [sh, -c, "exit 0"]}]
"#,
    )
    .unwrap();
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    api.create(&PostParams::default(), &run).await.unwrap();
    eventually("the run completes", 40, || async {
        let r = api.get("dry").await.map_err(|e| e.to_string())?;
        let st = r.status.ok_or("no status")?;
        if st.phase.is_completed() && st.metric_results.iter().all(|m| m.phase.is_completed()) {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    let st = api.get("dry").await.unwrap().status.unwrap();
    assert_eq!(st.phase, AnalysisPhase::Successful, "{st:?}");
    let failing = st
        .metric_results
        .iter()
        .find(|m| m.name == "failing")
        .unwrap();
    assert!(failing.dry_run);
    assert_eq!(failing.failed, 2, "measured twice: {failing:?}");
    assert_eq!(
        failing.measurements.len(),
        1,
        "measurementRetention keeps one"
    );
    assert_eq!(failing.measurements[0].phase, AnalysisPhase::Failed);
    assert_eq!(st.dry_run_summary.as_ref().map(|s| s.count), Some(1));
}
