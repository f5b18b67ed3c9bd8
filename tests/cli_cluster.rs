//! The cluster commands of the CLI (get, list, status, actions, explain) against the e2e test
//! cluster with the real kube-rs client, and the `sluice` binary end to end.
//!
//! The controller is not running here: each test leaves the Rollout, its ReplicaSets and its
//! AnalysisRun as a controller would (status subresource patches), then runs the command.

use std::path::Path;
use std::process::Output as ProcessOutput;

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice::api::analysis::AnalysisRun;
use sluice::api::rollout::Rollout;
use sluice::cli::actions::{self, Action};
use sluice::cli::kube::{CliError, Target};
use sluice::cli::{explain, get, info, list, status};
use sluice_e2e::{Fault, TestCluster};

use sluice_test_support::cli::{self, text};
use sluice_test_support::controller::{self as support, Setup, skip_on_real_cluster};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const STABLE: &str = "6d5b8c7f4";
const CANARY: &str = "7f9c6b5d8";

/// What a real cluster's ReplicaSet controller would overwrite.
const NEEDS_NO_WORKLOAD_CONTROLLERS: &str =
    "needs a cluster without workload controllers (the test writes ReplicaSet status)";
/// Other tests' Rollouts share a real cluster.
const NEEDS_OWN_CLUSTER: &str = "lists Rollouts of every namespace, so needs a cluster of its own";
const NEEDS_STORE: &str = "reads the test cluster's store";

async fn cluster() -> Result<support::Target> {
    // No simulated ReplicaSet controller or kubelet: the tests write every status themselves,
    // so what the CLI shows is exactly what the test set up.
    Ok(support::Target::start(Setup {
        simulation: false,
        pod_ready_delay: None,
        crds: true,
        istio: false,
    })
    .await)
}

fn target(cluster: &support::Target) -> Target {
    Target {
        client: cluster.client(),
        namespace: cluster.ns.clone(),
        server: cluster.url(),
    }
}

fn rollout_manifest() -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:2"}]}
            },
            "strategy": {"canary": {
                "canaryService": "web-canary",
                "stableService": "web-stable",
                "trafficRouting": {"nginx": {"stableIngress": "web"}},
                "steps": [
                    {"setWeight": 20},
                    {"pause": {"duration": "1m"}},
                    {"analysis": {"templates": [{"templateName": "success-rate"}]}},
                    {"setWeight": 50},
                    {"pause": {}},
                    {"setWeight": 80}
                ]
            }}
        }
    })
}

/// Creates the Rollout and its two ReplicaSets (stable web:1 revision 1, canary web:2 revision 2).
async fn seed(cluster: &support::Target) -> Result<Rollout> {
    let client = cluster.client();
    let ros: Api<Rollout> = Api::namespaced(client.clone(), &cluster.ns);
    let ro: Rollout = serde_json::from_value(rollout_manifest())?;
    let ro = ros.create(&PostParams::default(), &ro).await?;
    let uid = ro.metadata.uid.clone().ok_or("no uid")?;
    let owner = json!([{
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "web", "uid": uid,
        "controller": true, "blockOwnerDeletion": true
    }]);
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), &cluster.ns);
    for (hash, revision, image, replicas, ready) in
        [(STABLE, "1", "web:1", 4, 4), (CANARY, "2", "web:2", 1, 1)]
    {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("web-{hash}"), "namespace": cluster.ns,
                "labels": {"app": "web", "rollouts-pod-template-hash": hash},
                "annotations": {"rollout.sluice.dev/revision": revision},
                "ownerReferences": owner
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web", "rollouts-pod-template-hash": hash}},
                "template": {
                    "metadata": {"labels": {"app": "web", "rollouts-pod-template-hash": hash}},
                    "spec": {"containers": [{"name": "web", "image": image}]}
                }
            }
        }))?;
        rss.create(&PostParams::default(), &rs).await?;
        rss.patch_status(
            &format!("web-{hash}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "replicas": replicas, "readyReplicas": ready, "availableReplicas": ready
            }})),
        )
        .await?;
    }
    Ok(ro)
}

async fn set_status(cluster: &support::Target, status: Value) -> Result {
    let ros: Api<Rollout> = Api::namespaced(cluster.client(), &cluster.ns);
    ros.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// Step 3 of 6 (analysis) in progress: 20% to the canary, the run measuring.
fn progressing_status() -> Value {
    json!({
        "phase": "Progressing",
        "message": "more replicas need to be updated",
        "observedGeneration": 1,
        "currentPodHash": CANARY,
        "stableRS": STABLE,
        "currentStepIndex": 2,
        "replicas": 5, "updatedReplicas": 1, "readyReplicas": 5, "availableReplicas": 5,
        "canary": {
            "weights": {
                "canary": {"weight": 20, "serviceName": "web-canary", "podTemplateHash": CANARY},
                "stable": {"weight": 80, "serviceName": "web-stable", "podTemplateHash": STABLE}
            },
            "currentStepAnalysisRunStatus": {"name": "web-7f9c6b5d8-2", "status": "Running"}
        },
        "conditions": [{
            "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
            "message": "ReplicaSet \"web-7f9c6b5d8\" is progressing."
        }]
    })
}

/// Aborted by the analysis of step 3: success-rate measured 0.82 three times, limit 2.
fn aborted_status() -> Value {
    json!({
        "phase": "Degraded",
        "message": "RolloutAborted: Rollout aborted update to revision 2",
        "observedGeneration": 1,
        "currentPodHash": CANARY,
        "stableRS": STABLE,
        "currentStepIndex": 0,
        "abort": true,
        "abortedAt": "2026-03-02T14:02:11Z",
        "controllerPause": false,
        "replicas": 4, "updatedReplicas": 0, "readyReplicas": 4, "availableReplicas": 4,
        "canary": {
            "weights": {
                "canary": {"weight": 0, "serviceName": "web-canary", "podTemplateHash": CANARY},
                "stable": {"weight": 100, "serviceName": "web-stable", "podTemplateHash": STABLE}
            },
            "currentStepAnalysisRunStatus": {
                "name": "web-7f9c6b5d8-2", "status": "Failed",
                "message": "Metric \"success-rate\" assessed Failed due to failed (3) > failureLimit (2)"
            }
        },
        "conditions": [{
            "type": "Progressing", "status": "False", "reason": "RolloutAborted",
            "message": "Rollout aborted update to revision 2: Step-based analysis phase failed"
        }]
    })
}

fn healthy_status() -> Value {
    json!({
        "phase": "Healthy",
        "observedGeneration": 1,
        "currentPodHash": STABLE,
        "stableRS": STABLE,
        "currentStepIndex": 6,
        "replicas": 5, "updatedReplicas": 5, "readyReplicas": 5, "availableReplicas": 5,
        "canary": {"weights": {
            "canary": {"weight": 0, "podTemplateHash": STABLE},
            "stable": {"weight": 100, "podTemplateHash": STABLE}
        }}
    })
}

fn paused_status() -> Value {
    json!({
        "phase": "Paused",
        "message": "CanaryPauseStep",
        "observedGeneration": 1,
        "currentPodHash": CANARY,
        "stableRS": STABLE,
        "currentStepIndex": 4,
        "controllerPause": true,
        "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-03-02T14:00:00Z"}],
        "replicas": 5, "updatedReplicas": 3, "readyReplicas": 5, "availableReplicas": 5,
        "canary": {"weights": {
            "canary": {"weight": 50, "podTemplateHash": CANARY},
            "stable": {"weight": 50, "podTemplateHash": STABLE}
        }}
    })
}

/// The step AnalysisRun of revision 2, with `values` measured (each Failed when below 0.95).
async fn seed_run(cluster: &support::Target, ro: &Rollout, phase: &str, values: &[f64]) -> Result {
    let runs: Api<AnalysisRun> = Api::namespaced(cluster.client(), &cluster.ns);
    let run: AnalysisRun = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {
            "name": "web-7f9c6b5d8-2", "namespace": cluster.ns,
            "labels": {"rollouts-pod-template-hash": CANARY, "rollout-type": "Step", "step-index": "2"},
            "ownerReferences": [{
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "web",
                "uid": ro.metadata.uid.clone().ok_or("no uid")?, "controller": true
            }]
        },
        "spec": {"metrics": [{
            "name": "success-rate",
            "interval": "1m",
            "failureLimit": 2,
            "successCondition": "result[0] >= 0.95",
            "provider": {"prometheus": {"address": "http://prometheus:9090", "query": "sum(rate(ok[1m]))"}}
        }]}
    }))?;
    runs.create(&PostParams::default(), &run).await?;
    let measurements: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "phase": if *v >= 0.95 { "Successful" } else { "Failed" },
                "value": format!("[{v}]"),
                "startedAt": format!("2026-03-02T14:0{i}:00Z"),
                "finishedAt": format!("2026-03-02T14:0{i}:01Z")
            })
        })
        .collect();
    let failed = values.iter().filter(|v| **v < 0.95).count();
    let metric_phase = if phase == "Failed" {
        "Failed"
    } else {
        "Running"
    };
    runs.patch_status(
        "web-7f9c6b5d8-2",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": phase,
            "message": if phase == "Failed" { "Metric \"success-rate\" assessed Failed due to failed (3) > failureLimit (2)" } else { "" },
            "metricResults": [{
                "name": "success-rate", "phase": metric_phase, "measurements": measurements,
                "count": values.len(), "successful": values.len() - failed, "failed": failed
            }]
        }})),
    )
    .await?;
    Ok(())
}

async fn rollout(cluster: &support::Target) -> Result<Rollout> {
    let ros: Api<Rollout> = Api::namespaced(cluster.client(), &cluster.ns);
    Ok(ros.get("web").await?)
}

// ---------------------------------------------------------------------------------------------
// get

#[tokio::test]
async fn get_shows_step_weights_revisions_and_analysis_values() -> Result {
    if skip_on_real_cluster(NEEDS_NO_WORKLOAD_CONTROLLERS) {
        return Ok(());
    }
    let cluster = cluster().await?;
    let ro = seed(&cluster).await?;
    set_status(&cluster, progressing_status()).await?;
    seed_run(&cluster, &ro, "Running", &[0.99, 0.97]).await?;

    let view = get::rollout_view(&target(&cluster), "web").await?;
    assert_eq!(view.phase, "Progressing");
    assert_eq!(view.current_step_index, Some(2));
    assert_eq!(view.step_count, 6);
    assert_eq!(view.desired_weight, 20);
    assert_eq!(view.actual_weight, Some(20));
    let states: Vec<&str> = view.steps.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(
        states,
        ["done", "done", "current", "pending", "pending", "pending"]
    );
    assert_eq!(view.revisions.len(), 2);
    assert_eq!(view.revisions[0].revision, Some(2));
    assert_eq!(view.revisions[0].role, "canary");
    assert_eq!(
        view.revisions[0].analysis_runs[0].metrics[0].last_values,
        ["[0.99]", "[0.97]"]
    );
    assert_eq!(view.revisions[1].role, "stable");
    assert_eq!((view.revisions[1].ready, view.revisions[1].total), (4, 4));
    assert!(view.failure.is_none());

    let text = get::render_view(
        &view,
        sluice::cli::Output::Text,
        sluice::cli::render::Style::plain(),
    )?;
    for expected in [
        "Status:         ◌ Progressing",
        "Strategy:       Canary (nginx)",
        "  Step:         3/6",
        "  SetWeight:    20",
        "  ActualWeight: 20",
        "  ▶   3. analysis: success-rate  <- current",
        "  ✔   1. setWeight: 20",
        "├── revision 2  web-7f9c6b5d8 (canary)  web:2  1/1 ready",
        "│   └── AnalysisRun web-7f9c6b5d8-2 (step 3)  ◌ Running",
        "success-rate  ◌ Running  last [0.99], [0.97]  (2 ok)",
        "└── revision 1  web-6d5b8c7f4 (stable)  web:1  4/4 ready",
        "Progressing  True   ReplicaSetUpdated",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains('\x1b'), "plain style must not colour");
    Ok(())
}

#[tokio::test]
async fn get_of_an_aborted_rollout_names_the_value_that_broke_it() -> Result {
    let cluster = cluster().await?;
    let ro = seed(&cluster).await?;
    set_status(&cluster, aborted_status()).await?;
    seed_run(&cluster, &ro, "Failed", &[0.97, 0.82, 0.81, 0.82]).await?;

    let view = get::rollout_view(&target(&cluster), "web").await?;
    assert_eq!(view.phase, "Degraded");
    assert_eq!(view.desired_weight, 0);
    let states: Vec<&str> = view.steps.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(
        states,
        ["done", "done", "aborted", "pending", "pending", "pending"],
        "the failed step is marked, not the reset index"
    );
    let f = view.failure.clone().ok_or("no failure")?;
    assert_eq!(f.metric, "success-rate");
    assert_eq!(f.value.as_deref(), Some("[0.82]"));
    assert_eq!(f.count, 3);
    assert_eq!(f.limit, 2);
    assert_eq!(f.step_index, Some(2));
    let text = get::render_view(
        &view,
        sluice::cli::Output::Text,
        sluice::cli::render::Style::plain(),
    )?;
    assert!(
        text.contains("Failure:        metric success-rate measured [0.82] in AnalysisRun web-7f9c6b5d8-2 (successCondition: result[0] >= 0.95); failed 3 > limit 2"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn get_json_is_the_stable_view() -> Result {
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, progressing_status()).await?;
    let view = get::rollout_view(&target(&cluster), "web").await?;
    let json: Value = serde_json::from_str(&get::render_view(
        &view,
        sluice::cli::Output::Json,
        sluice::cli::render::Style::plain(),
    )?)?;
    assert_eq!(json["phase"], "Progressing");
    assert_eq!(json["currentStepIndex"], 2);
    assert_eq!(json["desiredWeight"], 20);
    assert_eq!(json["actualWeight"], 20);
    assert_eq!(json["steps"][2]["state"], "current");
    assert_eq!(json["revisions"][0]["replicaSet"], "web-7f9c6b5d8");
    let yaml: Value = serde_yaml::from_str(&get::render_view(
        &view,
        sluice::cli::Output::Yaml,
        sluice::cli::render::Style::plain(),
    )?)?;
    assert_eq!(yaml, json, "yaml and json carry the same fields");
    Ok(())
}

#[tokio::test]
async fn an_unobserved_spec_change_reads_as_progressing() -> Result {
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, healthy_status()).await?;
    // A spec change bumps metadata.generation; the controller has not seen it yet.
    actions::execute(&target(&cluster), "web", &Action::Pause).await?;
    let ro = rollout(&cluster).await?;
    let (v, phase, message) = status::verdict(&ro);
    assert_eq!(
        (v, phase.as_str()),
        (status::Verdict::Progressing, "Progressing")
    );
    assert!(message.contains("observe"), "{message}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// list

#[tokio::test]
async fn list_shows_one_row_per_rollout() -> Result {
    if skip_on_real_cluster(NEEDS_OWN_CLUSTER) {
        return Ok(());
    }
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, progressing_status()).await?;
    let ros: Api<Rollout> = Api::all(cluster.client());
    let rows = list::rows(&ros.list(&Default::default()).await?.items);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].step, "3/6");
    assert_eq!(rows[0].phase, "Progressing");
    let table = list::render_table(&rows, true);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE   NAME   STRATEGY   STATUS"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("default     web    Canary     Progressing   3/6    20"),
        "{table}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// actions

async fn stored_rollout(cluster: &support::Target) -> Result<Value> {
    cluster
        .controls()
        .object("sluice.dev", "rollouts", &cluster.ns, "web")
        .ok_or_else(|| "rollout missing".into())
}

#[tokio::test]
async fn promote_clears_a_pause_step_without_moving_the_index() -> Result {
    if skip_on_real_cluster(NEEDS_STORE) {
        return Ok(());
    }
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, paused_status()).await?;
    let said = actions::execute(&target(&cluster), "web", &Action::Promote { full: false }).await?;
    assert_eq!(
        said,
        "rollout \"web\" promoted: pause at step 5 of 6 (CanaryPauseStep) cleared"
    );
    let obj = stored_rollout(&cluster).await?;
    assert!(obj["status"].get("pauseConditions").is_none(), "{obj}");
    assert_eq!(
        obj["status"]["currentStepIndex"], 4,
        "the controller moves the index"
    );
    Ok(())
}

#[tokio::test]
async fn promote_mid_step_skips_it_and_full_sets_promote_full() -> Result {
    if skip_on_real_cluster(NEEDS_STORE) {
        return Ok(());
    }
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, progressing_status()).await?;
    let t = target(&cluster);
    let said = actions::execute(&t, "web", &Action::Promote { full: false }).await?;
    assert_eq!(said, "rollout \"web\" promoted: step 3 of 6 skipped");
    assert_eq!(
        stored_rollout(&cluster).await?["status"]["currentStepIndex"],
        3
    );

    let said = actions::execute(&t, "web", &Action::Promote { full: true }).await?;
    assert!(said.starts_with("rollout \"web\" fully promoted"), "{said}");
    assert_eq!(
        stored_rollout(&cluster).await?["status"]["promoteFull"],
        true
    );
    let err = actions::execute(&t, "web", &Action::Promote { full: true })
        .await
        .err()
        .ok_or("second --full must be refused")?;
    assert_eq!(
        err.to_string(),
        "rollout \"web\" is already being fully promoted"
    );
    Ok(())
}

#[tokio::test]
async fn promote_of_an_inconclusive_step_advances_past_it() -> Result {
    if skip_on_real_cluster(NEEDS_STORE) {
        return Ok(());
    }
    let cluster = cluster().await?;
    seed(&cluster).await?;
    let mut s = progressing_status();
    s["phase"] = json!("Paused");
    s["controllerPause"] = json!(true);
    s["pauseConditions"] =
        json!([{"reason": "InconclusiveAnalysisRun", "startTime": "2026-03-02T14:00:00Z"}]);
    s["canary"]["currentStepAnalysisRunStatus"]["status"] = json!("Inconclusive");
    set_status(&cluster, s).await?;
    actions::execute(&target(&cluster), "web", &Action::Promote { full: false }).await?;
    let obj = stored_rollout(&cluster).await?;
    assert_eq!(obj["status"]["currentStepIndex"], 3);
    assert!(obj["status"].get("pauseConditions").is_none());
    assert!(
        obj["status"]
            .get("controllerPause")
            .is_none_or(|v| v == false),
        "{obj}"
    );
    Ok(())
}

#[tokio::test]
async fn abort_then_retry_flip_status_abort() -> Result {
    if skip_on_real_cluster(NEEDS_STORE) {
        return Ok(());
    }
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, progressing_status()).await?;
    let t = target(&cluster);
    let err = actions::execute(&t, "web", &Action::Retry)
        .await
        .err()
        .ok_or("retry must be refused")?;
    assert_eq!(
        err.to_string(),
        "rollout \"web\" is not aborted; there is nothing to retry"
    );

    let said = actions::execute(&t, "web", &Action::Abort).await?;
    assert_eq!(
        said,
        "rollout \"web\" aborted: traffic goes back to the stable version"
    );
    assert_eq!(stored_rollout(&cluster).await?["status"]["abort"], true);
    let err = actions::execute(&t, "web", &Action::Abort)
        .await
        .err()
        .ok_or("abort twice")?;
    assert!(
        err.to_string()
            .starts_with("rollout \"web\" is already aborted"),
        "{err}"
    );
    let err = actions::execute(&t, "web", &Action::Promote { full: false })
        .await
        .err()
        .ok_or("promote aborted")?;
    assert!(err.to_string().contains("run `sluice retry web`"), "{err}");

    actions::execute(&t, "web", &Action::Retry).await?;
    let obj = stored_rollout(&cluster).await?;
    assert!(
        obj["status"].get("abort").is_none_or(|v| v == false),
        "{obj}"
    );
    Ok(())
}

#[tokio::test]
async fn actions_on_a_healthy_rollout_are_refused_with_the_reason() -> Result {
    if skip_on_real_cluster("needs the write log") {
        return Ok(());
    }
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, healthy_status()).await?;
    let t = target(&cluster);
    let before = cluster.controls().writes().len();
    for (action, expected) in [
        (
            Action::Promote { full: false },
            "rollout \"web\" is fully promoted; there is nothing to promote",
        ),
        (
            Action::Promote { full: true },
            "rollout \"web\" is fully promoted; there is nothing to promote",
        ),
        (
            Action::Abort,
            "rollout \"web\" has no update in progress; there is nothing to abort",
        ),
        (Action::Resume, "rollout \"web\" is not paused"),
        (
            Action::Undo {
                to_revision: Some(7),
            },
            "rollout \"web\" has no revision 7 (revisions kept: 1, 2)",
        ),
        (
            Action::SetImage {
                container: "api".into(),
                image: "web:3".into(),
            },
            "rollout \"web\" has no container \"api\" (containers: web)",
        ),
    ] {
        let err = actions::execute(&t, "web", &action)
            .await
            .err()
            .ok_or(format!("{action:?} accepted"))?;
        assert!(matches!(err, CliError::Refused(_)), "{err:?}");
        assert_eq!(err.to_string(), expected);
    }
    assert_eq!(
        cluster.controls().writes().len(),
        before,
        "a refused action writes nothing"
    );
    Ok(())
}

#[tokio::test]
async fn pause_resume_restart_and_set_image_patch_the_spec() -> Result {
    if skip_on_real_cluster("needs the write log and reads the test cluster's store") {
        return Ok(());
    }
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, progressing_status()).await?;
    let t = target(&cluster);
    actions::execute(&t, "web", &Action::Pause).await?;
    assert_eq!(stored_rollout(&cluster).await?["spec"]["paused"], true);
    let err = actions::execute(&t, "web", &Action::Pause)
        .await
        .err()
        .ok_or("pause twice")?;
    assert_eq!(err.to_string(), "rollout \"web\" is already paused");
    assert_eq!(
        actions::execute(&t, "web", &Action::Resume).await?,
        "rollout \"web\" resumed"
    );
    assert_eq!(stored_rollout(&cluster).await?["spec"]["paused"], false);

    let at: jiff::Timestamp = "2026-03-02T15:00:00Z".parse()?;
    actions::execute(&t, "web", &Action::Restart { at }).await?;
    assert_eq!(
        stored_rollout(&cluster).await?["spec"]["restartAt"],
        "2026-03-02T15:00:00Z"
    );

    let said = actions::execute(
        &t,
        "web",
        &Action::SetImage {
            container: "web".into(),
            image: "web:3".into(),
        },
    )
    .await?;
    assert!(said.contains("image of web set to web:3"), "{said}");
    let obj = stored_rollout(&cluster).await?;
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:3"
    );
    // The CLI writes under its own field manager, never the controller's.
    assert!(
        cluster
            .controls()
            .writes()
            .iter()
            .all(|w| w.field_manager.as_deref() != Some("sluice"))
    );
    Ok(())
}

#[tokio::test]
async fn resume_of_a_controller_pause_points_to_promote() -> Result {
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, paused_status()).await?;
    let err = actions::execute(&target(&cluster), "web", &Action::Resume)
        .await
        .err()
        .ok_or("resume")?;
    assert_eq!(
        err.to_string(),
        "rollout \"web\" is paused by the controller (CanaryPauseStep) at step 5 of 6, not by `sluice pause`; run `sluice promote web` to go on"
    );
    Ok(())
}

#[tokio::test]
async fn undo_replaces_the_template_with_the_previous_revision() -> Result {
    if skip_on_real_cluster(NEEDS_STORE) {
        return Ok(());
    }
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, progressing_status()).await?;
    let said = actions::execute(
        &target(&cluster),
        "web",
        &Action::Undo { to_revision: None },
    )
    .await?;
    assert_eq!(
        said,
        "rollout \"web\" rolled back to the template of revision 1 (web:1)"
    );
    let obj = stored_rollout(&cluster).await?;
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1"
    );
    assert_eq!(
        obj["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"}),
        "the controller's hash label is not copied into the Rollout"
    );
    let err = actions::execute(
        &target(&cluster),
        "web",
        &Action::Undo {
            to_revision: Some(2),
        },
    )
    .await
    .err()
    .ok_or("undo to current")?;
    assert_eq!(
        err.to_string(),
        "revision 2 is the current revision of rollout \"web\"; nothing to undo"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// explain and status

#[tokio::test]
async fn explain_an_abort_by_analysis() -> Result {
    if skip_on_real_cluster(NEEDS_NO_WORKLOAD_CONTROLLERS) {
        return Ok(());
    }
    let cluster = cluster().await?;
    let ro = seed(&cluster).await?;
    set_status(&cluster, aborted_status()).await?;
    seed_run(&cluster, &ro, "Failed", &[0.97, 0.82, 0.81, 0.82]).await?;
    let v = info::view(&info::fetch(&target(&cluster), "web").await?);
    let sentences = explain::explain(&v);
    assert_eq!(
        sentences,
        [
            "Aborted at step 3 of 6 at 14:02:11 UTC because metric success-rate measured [0.82], below 0.95, three times (limit 2) in AnalysisRun web-7f9c6b5d8-2.",
            "Traffic to the canary is 0%.",
            "The stable revision 1 (web:1) serves the users; 4/4 of its pods are ready.",
            format!(
                "Run `sluice retry web -n {}` after a fix, or change the spec to roll forward.",
                cluster.ns
            )
            .as_str(),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn explain_progress_pause_and_health() -> Result {
    if skip_on_real_cluster(NEEDS_NO_WORKLOAD_CONTROLLERS) {
        return Ok(());
    }
    let cluster = cluster().await?;
    let ro = seed(&cluster).await?;
    set_status(&cluster, progressing_status()).await?;
    seed_run(&cluster, &ro, "Running", &[0.99]).await?;
    let t = target(&cluster);
    let v = info::view(&info::fetch(&t, "web").await?);
    assert_eq!(
        explain::explain(&v),
        [
            "Updating to revision 2 (web:2): at step 3 of 6 (analysis: success-rate).",
            "Traffic to the canary is 20%. The steps ask for 20%. 1/1 canary pods are ready.",
            "AnalysisRun web-7f9c6b5d8-2 is Running: success-rate last measured [0.99].",
        ]
    );
    set_status(&cluster, paused_status()).await?;
    let v = info::view(&info::fetch(&t, "web").await?);
    assert_eq!(
        explain::explain(&v),
        [
            "Paused at step 5 of 6 (pause: until promoted).",
            "Traffic to the canary is 50%.",
            format!("Run `sluice promote web -n {}` to go on.", cluster.ns).as_str(),
        ]
    );
    set_status(&cluster, healthy_status()).await?;
    let v = info::view(&info::fetch(&t, "web").await?);
    assert_eq!(
        explain::explain(&v),
        ["Healthy: revision 1 (web:1) is stable and takes all traffic, with 4/5 pods available."]
    );
    Ok(())
}

#[tokio::test]
async fn status_verdicts() -> Result {
    let cluster = cluster().await?;
    seed(&cluster).await?;
    for (s, verdict, code_plain, code_fail_on_pause) in [
        (healthy_status(), status::Verdict::Healthy, Some(0), Some(0)),
        (
            aborted_status(),
            status::Verdict::Degraded,
            Some(1),
            Some(1),
        ),
        (paused_status(), status::Verdict::Paused, None, Some(2)),
        (
            progressing_status(),
            status::Verdict::Progressing,
            None,
            None,
        ),
    ] {
        // Replace, not merge, so fields of the previous case do not linger.
        let ros: Api<Rollout> = Api::namespaced(cluster.client(), &cluster.ns);
        let mut ro = ros.get("web").await?;
        ro.status = Some(serde_json::from_value(s)?);
        ros.replace_status("web", &PostParams::default(), &ro)
            .await?;
        let ro = rollout(&cluster).await?;
        let (v, _, _) = status::verdict(&ro);
        assert_eq!(v, verdict);
        assert_eq!(status::exit_code(v, false), code_plain);
        assert_eq!(status::exit_code(v, true), code_fail_on_pause);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// errors

#[tokio::test]
async fn not_found_and_forbidden_are_one_line() -> Result {
    if skip_on_real_cluster("needs fault injection") {
        return Ok(());
    }
    let cluster = cluster().await?;
    seed(&cluster).await?;
    let t = target(&cluster);
    let err = get::rollout_view(&t, "nope").await.err().ok_or("found")?;
    assert_eq!(
        err.to_string(),
        "rollout \"nope\" not found in namespace \"default\""
    );

    set_status(&cluster, progressing_status()).await?;
    cluster
        .controls()
        .inject(Fault::fail(403).verb("patch").resource("rollouts"));
    let err = actions::execute(&t, "web", &Action::Abort)
        .await
        .err()
        .ok_or("forbidden")?;
    let line = err.to_string();
    assert!(
        line.starts_with("forbidden: not allowed to patch rollouts/status in namespace \"default\" (ask for RBAC verb \"patch\" on resource \"rollouts/status\" in API group \"sluice.dev\")"),
        "{line}"
    );
    assert!(!line.contains('\n'));
    Ok(())
}

#[tokio::test]
async fn missing_crds_and_unreachable_cluster_are_named() -> Result {
    if skip_on_real_cluster("needs a cluster without Sluice's CRDs") {
        return Ok(());
    }
    let bare = TestCluster::builder().without_simulation().start().await?;
    let t = Target {
        client: bare.client(),
        namespace: "default".into(),
        server: bare.url().to_string(),
    };
    let err = get::rollout_view(&t, "web").await.err().ok_or("no crds")?;
    assert!(matches!(err, CliError::CrdsMissing { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("Sluice's CRDs are not installed"),
        "{err}"
    );

    // A loopback port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let client = kube::Client::try_from(kube::Config::new(url.parse()?))?;
    let t = Target {
        client,
        namespace: "default".into(),
        server: url.clone(),
    };
    let err = get::rollout_view(&t, "web")
        .await
        .err()
        .ok_or("reached a port nothing listens on")?;
    assert!(matches!(err, CliError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach the cluster at {url}")),
        "{err}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the binary, end to end

async fn sluice(kubeconfig: &Path, args: &[&str]) -> Result<ProcessOutput> {
    Ok(cli::sluice(env!("CARGO_BIN_EXE_sluice"), kubeconfig, args).await?)
}

#[tokio::test]
async fn binary_status_exit_codes_and_action_output() -> Result {
    let cluster = cluster().await?;
    seed(&cluster).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;

    set_status(&cluster, healthy_status()).await?;
    let out = sluice(&kubeconfig, &["status", "web", "--timeout", "30s"]).await?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "Healthy\n");

    set_status(&cluster, paused_status()).await?;
    let out = sluice(
        &kubeconfig,
        &["status", "web", "--fail-on-pause", "-o", "json"],
    )
    .await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["phase"], "Paused");
    assert_eq!(report["exitCode"], 2);

    let out = sluice(&kubeconfig, &["status", "web", "--timeout", "2s"]).await?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a pause without --fail-on-pause waits, then times out"
    );
    assert!(
        text(&out.stdout).contains("timed out waiting for rollout \"web\""),
        "{}",
        text(&out.stdout)
    );

    let out = sluice(&kubeconfig, &["promote", "web"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "rollout \"web\" promoted: pause at step 5 of 6 (CanaryPauseStep) cleared\n"
    );

    let out = sluice(&kubeconfig, &["retry", "rollout", "web"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: rollout \"web\" is not aborted; there is nothing to retry\n"
    );

    set_status(&cluster, aborted_status()).await?;
    let out = sluice(&kubeconfig, &["status", "web"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with("Degraded - RolloutAborted"),
        "{}",
        text(&out.stdout)
    );

    let out = sluice(&kubeconfig, &["get", "rollout", "nope", "-n", "default"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: rollout \"nope\" not found in namespace \"default\"\n"
    );
    Ok(())
}

#[tokio::test]
async fn binary_get_list_explain_and_context_flags() -> Result {
    if skip_on_real_cluster(NEEDS_OWN_CLUSTER) {
        return Ok(());
    }
    let cluster = cluster().await?;
    let ro = seed(&cluster).await?;
    set_status(&cluster, aborted_status()).await?;
    seed_run(&cluster, &ro, "Failed", &[0.82, 0.81, 0.82]).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let kc = kubeconfig.to_string_lossy().into_owned();

    // Not a terminal: no colour codes even without NO_COLOR.
    let out = sluice(&kubeconfig, &["get", "rollout", "web"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Status:         ✖ Degraded"), "{stdout}");
    assert!(!stdout.contains('\x1b'));

    let out = sluice(&kubeconfig, &["get", "rollout", "web", "-o", "json"]).await?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["failure"]["value"], "[0.82]");

    let out = sluice(&kubeconfig, &["list", "rollouts", "-A", "-o", "yaml"]).await?;
    let rows: Value = serde_yaml::from_slice(&out.stdout)?;
    assert_eq!(rows[0]["name"], "web");
    assert_eq!(rows[0]["phase"], "Degraded");

    let out = sluice(&kubeconfig, &["explain", "web"]).await?;
    assert!(text(&out.stdout).starts_with("Aborted at step 3 of 6 at 14:02:11 UTC because metric success-rate measured [0.82], below 0.95, three times (limit 2)"), "{}", text(&out.stdout));

    // --kubeconfig and --context select the cluster; a namespace without the rollout is not found.
    let empty = dir.path().join("empty");
    std::fs::write(
        &empty,
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
    )?;
    let out = sluice(
        &empty,
        &[
            "get",
            "rollout",
            "web",
            "--kubeconfig",
            &kc,
            "--context",
            "sluice-test",
            "-n",
            "other",
        ],
    )
    .await?;
    assert_eq!(
        text(&out.stderr),
        "error: rollout \"web\" not found in namespace \"other\"\n"
    );
    let out = sluice(
        &empty,
        &[
            "get",
            "rollout",
            "web",
            "--kubeconfig",
            &kc,
            "--context",
            "nope",
        ],
    )
    .await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: kubeconfig:"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_plugin_binary_runs_the_same_commands() -> Result {
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, healthy_status()).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(["status", "web"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Healthy\n");
    Ok(())
}

/// `kubectl sluice ...`: kubectl finds `kubectl-sluice` on PATH and runs it.
#[tokio::test]
async fn kubectl_runs_the_plugin() -> Result {
    let kubectl = sluice_test_support::tools::kubectl();
    let cluster = cluster().await?;
    seed(&cluster).await?;
    set_status(&cluster, paused_status()).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .parent()
        .ok_or("no bin dir")?;
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new(kubectl)
        .args(["sluice", "get", "rollout", "web"])
        .env("KUBECONFIG", &kubeconfig)
        .env("PATH", path)
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Status:         ॥ Paused"), "{stdout}");
    assert!(stdout.contains("  Step:         5/6"), "{stdout}");
    Ok(())
}
