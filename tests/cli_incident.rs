//! What the CLI tells an SRE during an incident, against the test cluster with the real `sluice`
//! binary: whose abort it was (the current revision's, not an older one's), one step number
//! everywhere, thresholds resolved and values rounded, why a metric errors while its run still
//! runs, and a `get --watch` that shows the failure at the top of an 80×24 terminal.
//!
//! No controller runs: each test leaves the Rollout, its ReplicaSets, Pods and AnalysisRuns as
//! the controller would (status patches with its field manager), so what the CLI shows is
//! exactly what the test set up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice::api::analysis::AnalysisRun;
use sluice::api::rollout::Rollout;
use sluice_e2e::TestCluster;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The stable revision 1, revision 2 (aborted earlier by its analysis), revision 3 (current).
const H1: &str = "5c8d7f9b4";
const H2: &str = "6f4b9c8d7";
const H3: &str = "7d9f8b6c5";
const ABORTED_AT: &str = "2026-03-02T14:02:11Z";

/// The controller's field manager: its writes must not read as a user's.
const CONTROLLER: &str = "sluice";

struct Incident {
    cluster: TestCluster,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Incident {
    async fn start() -> Result<Incident> {
        let cluster = TestCluster::builder().without_simulation().start().await?;
        cluster.load_crds_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig)?;
        Ok(Incident {
            cluster,
            kubeconfig,
            _dir: dir,
        })
    }

    fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    /// Runs `sluice ARGS` against the test cluster.
    async fn sluice(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("NO_COLOR")
            .output()
            .await?)
    }

    /// stdout of a command that must succeed.
    async fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.sluice(args).await?;
        if !out.status.success() {
            return Err(format!(
                "sluice {args:?} exited {:?}: {}{}",
                out.status.code(),
                text(&out.stdout),
                text(&out.stderr)
            )
            .into());
        }
        Ok(text(&out.stdout))
    }

    /// The Rollout (6 steps, nginx), its three ReplicaSets and a Pod per ready replica.
    async fn seed(&self, steps: Value) -> Result<Rollout> {
        let client = self.client();
        let ros: Api<Rollout> = Api::default_namespaced(client.clone());
        let ro: Rollout = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "web", "image": "web:3"}]}},
                "strategy": {"canary": {
                    "canaryService": "web-canary", "stableService": "web-stable",
                    "trafficRouting": {"nginx": {"stableIngress": "web"}},
                    "steps": steps
                }}
            }
        }))?;
        let ro = ros.create(&PostParams::default(), &ro).await?;
        let owner = json!([{
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "web",
            "uid": ro.metadata.uid.clone().ok_or("no uid")?, "controller": true
        }]);
        let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
        let pods: Api<Pod> = Api::default_namespaced(client.clone());
        for (hash, revision, image, replicas, restarts) in [
            (H1, "1", "web:1", 3, 0),
            (H2, "2", "web:2", 0, 0),
            (H3, "3", "web:3", 1, 3),
        ] {
            let labels = json!({"app": "web", "rollouts-pod-template-hash": hash});
            let rs: ReplicaSet = serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": format!("web-{hash}"), "labels": labels,
                    "annotations": {"rollout.sluice.dev/revision": revision},
                    "ownerReferences": owner
                },
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"containers": [{"name": "web", "image": image}]}}
                }
            }))?;
            rss.create(&PostParams::default(), &rs).await?;
            rss.patch_status(
                &format!("web-{hash}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas
                }})),
            )
            .await?;
            for i in 0..replicas {
                let name = format!("web-{hash}-{i}");
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"containers": [{"name": "web", "image": image}]}
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
                pods.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"status": {"phase": "Running", "containerStatuses": [{
                            "name": "web", "image": image, "imageID": "", "ready": true,
                            "restartCount": if i == 0 { restarts } else { 0 },
                            "state": {"running": {}}, "lastState": {}
                        }]}}),
                    ),
                )
                .await?;
            }
        }
        Ok(ro)
    }

    /// Writes the Rollout's status as the controller does (its field manager).
    async fn controller_status(&self, status: Value) -> Result {
        let ros: Api<Rollout> = Api::default_namespaced(self.client());
        ros.patch_status(
            "web",
            &PatchParams {
                field_manager: Some(CONTROLLER.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
        Ok(())
    }

    /// An AnalysisRun of `hash` for the step at `step` (0-based), with its status.
    async fn run(
        &self,
        ro: &Rollout,
        name: &str,
        hash: &str,
        step: i32,
        spec: Value,
        status: Value,
    ) -> Result {
        let runs: Api<AnalysisRun> = Api::default_namespaced(self.client());
        let run: AnalysisRun = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisRun",
            "metadata": {
                "name": name,
                "labels": {"rollouts-pod-template-hash": hash, "rollout-type": "Step",
                           "step-index": step.to_string()},
                "ownerReferences": [{
                    "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "web",
                    "uid": ro.metadata.uid.clone().ok_or("no uid")?, "controller": true
                }]
            },
            "spec": spec
        }))?;
        runs.create(&PostParams::default(), &run).await?;
        runs.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
        Ok(())
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn six_steps() -> Value {
    json!([
        {"setWeight": 20},
        {"pause": {"duration": "1m"}},
        {"analysis": {"templates": [{"templateName": "success-rate"}]}},
        {"setWeight": 50},
        {"pause": {}},
        {"setWeight": 80}
    ])
}

/// The metric as the controller copies it from a template: the threshold is an argument.
fn success_rate_spec() -> Value {
    json!({
        "args": [{"name": "service", "value": "web"}, {"name": "min-success", "value": "0.95"}],
        "metrics": [{
            "name": "success-rate",
            "interval": "30s",
            "count": 5,
            "failureLimit": 2,
            "successCondition": "result[0] >= {{args.min-success}}",
            "provider": {"prometheus": {
                "address": "http://prometheus:9090",
                "query": "sum(rate(ok{service=\"{{args.service}}\"}[1m]))"
            }}
        }]
    })
}

/// A finished run whose every measurement is `value`, judged `phase`.
fn measured(run_phase: &str, phase: &str, value: &str, n: usize) -> Value {
    let measurements: Vec<Value> = (0..n)
        .map(|i| {
            json!({"phase": phase, "value": value,
                   "startedAt": format!("2026-03-02T13:5{i}:00Z"),
                   "finishedAt": format!("2026-03-02T13:5{i}:01Z")})
        })
        .collect();
    let failed = if phase == "Failed" { n } else { 0 };
    json!({
        "phase": run_phase,
        "message": if run_phase == "Failed" {
            "Metric \"success-rate\" assessed Failed due to failed (3) > failureLimit (2)"
        } else { "" },
        "completedAt": if run_phase == "Running" { Value::Null } else { json!("2026-03-02T13:59:00Z") },
        "metricResults": [{
            "name": "success-rate", "phase": run_phase, "measurements": measurements,
            "count": n, "successful": n - failed, "failed": failed
        }]
    })
}

/// An update of revision 3 in progress at `index` (0-based), 50% to the canary.
fn progressing(index: i32, step_run: Option<(&str, &str)>) -> Value {
    let mut s = json!({
        "phase": "Progressing",
        "message": format!("step {} of 6: setWeight: 50", index + 1),
        "observedGeneration": 1,
        "currentPodHash": H3, "stableRS": H1, "currentStepIndex": index,
        "replicas": 4, "updatedReplicas": 1, "readyReplicas": 4, "availableReplicas": 4,
        "canary": {"weights": {
            "canary": {"weight": 50, "serviceName": "web-canary", "podTemplateHash": H3},
            "stable": {"weight": 50, "serviceName": "web-stable", "podTemplateHash": H1}
        }},
        "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                        "message": "ReplicaSet \"web-7d9f8b6c5\" is progressing."}]
    });
    if let Some((name, phase)) = step_run {
        s["canary"]["currentStepAnalysisRunStatus"] = json!({"name": name, "status": phase});
    }
    s
}

/// What the controller writes once it has carried out an abort at step `step` (1-based) of `n`.
fn aborted_of(step: i32, n: i32, why: &str, step_run: (&str, &str)) -> Value {
    let message = format!("aborted at step {step} of {n}: {why}");
    json!({
        "phase": "Degraded", "message": message, "observedGeneration": 1,
        "currentPodHash": H3, "stableRS": H1, "currentStepIndex": 0,
        "abort": true, "abortedAt": ABORTED_AT,
        "replicas": 3, "updatedReplicas": 0, "readyReplicas": 3, "availableReplicas": 3,
        "canary": {
            "weights": {
                "canary": {"weight": 0, "serviceName": "web-canary", "podTemplateHash": H3},
                "stable": {"weight": 100, "serviceName": "web-stable", "podTemplateHash": H1}
            },
            "currentStepAnalysisRunStatus": {"name": step_run.0, "status": step_run.1}
        },
        "conditions": [
            {"type": "Progressing", "status": "False", "reason": "RolloutAborted", "message": message},
            {"type": "Available", "status": "True", "reason": "AvailableReason", "message": "enough pods"},
            {"type": "Healthy", "status": "False", "reason": "RolloutAborted", "message": message},
            {"type": "Completed", "status": "False", "reason": "RolloutAborted", "message": message},
            {"type": "Ready", "status": "False", "reason": "RolloutAborted", "message": message},
            {"type": "Reconciling", "status": "False", "reason": "RolloutAborted", "message": message},
            {"type": "Stalled", "status": "True", "reason": "RolloutAborted", "message": message}
        ]
    })
}

fn aborted(step: i32, why: &str, step_run: (&str, &str)) -> Value {
    aborted_of(step, 6, why, step_run)
}

/// Revision 2's analysis failed earlier (an automatic abort of that revision); revision 3's
/// analysis at step 3 passed.
async fn history(incident: &Incident, ro: &Rollout) -> Result {
    incident
        .run(
            ro,
            "web-6f4b9c8d7-2-2",
            H2,
            2,
            success_rate_spec(),
            measured("Failed", "Failed", "[0.6892477353288697]", 3),
        )
        .await?;
    incident
        .run(
            ro,
            "web-7d9f8b6c5-3-2",
            H3,
            2,
            success_rate_spec(),
            measured("Successful", "Successful", "[0.9912345]", 5),
        )
        .await
}

#[tokio::test]
async fn a_manual_abort_after_an_older_revisions_failure_is_explained_as_manual() -> Result {
    let incident = Incident::start().await?;
    let ro = incident.seed(six_steps()).await?;
    history(&incident, &ro).await?;
    incident
        .controller_status(progressing(3, Some(("web-7d9f8b6c5-3-2", "Successful"))))
        .await?;

    // The user aborts at step 4 with the CLI; the controller then carries it out.
    let said = incident.ok(&["abort", "web"]).await?;
    assert!(said.starts_with("rollout \"web\" aborted"), "{said}");
    incident
        .controller_status(aborted(
            4,
            "aborted by the user",
            ("web-7d9f8b6c5-3-2", "Successful"),
        ))
        .await?;

    let explained = incident.ok(&["explain", "web"]).await?;
    assert!(
        explained.starts_with(
            "Aborted by a user (sluice-cli) at 14:02:11 UTC, at step 4 of 6 of revision 3; \
             no analysis of this revision failed."
        ),
        "{explained}"
    );
    assert!(
        !explained.contains("web-6f4b9c8d7") && !explained.contains("0.689"),
        "an older revision's failure is blamed: {explained}"
    );

    let tree = incident.ok(&["get", "rollout", "web"]).await?;
    for expected in [
        "Aborted:        by a user (sluice-cli) at 14:02:11 UTC, at step 4 of 6",
        "  Step:         4/6 (aborted)",
        "  ✔   3. analysis: success-rate",
        "  ✖   4. setWeight: 50  <- aborted here",
        "  ·   5. pause: until promoted",
    ] {
        assert!(tree.contains(expected), "missing {expected:?} in:\n{tree}");
    }
    assert!(
        !tree.contains("Failure:"),
        "no run of revision 3 failed:\n{tree}"
    );
    assert!(!tree.contains("<- current"), "{tree}");

    let json: Value = serde_json::from_str(
        &incident
            .ok(&["get", "rollout", "web", "-o", "json"])
            .await?,
    )?;
    assert_eq!(json["abort"]["cause"], "user");
    assert_eq!(json["abort"]["manager"], "sluice-cli");
    assert_eq!(json["abort"]["stepIndex"], 3, "0-based in the data");
    assert_eq!(
        json["currentStepIndex"], 0,
        "status.currentStepIndex as written"
    );
    assert!(json["failure"].is_null(), "{json:#}");

    // Set by another tool: its field manager is named.
    let ros: Api<Rollout> = Api::default_namespaced(incident.client());
    ros.patch_status(
        "web",
        &PatchParams {
            field_manager: Some("argocd-controller".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"status": {"abort": false}})),
    )
    .await?;
    ros.patch_status(
        "web",
        &PatchParams {
            field_manager: Some("argocd-controller".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"status": {"abort": true}})),
    )
    .await?;
    let explained = incident.ok(&["explain", "web"]).await?;
    assert!(
        explained.starts_with("Aborted by a user (argocd-controller) at 14:02:11 UTC"),
        "{explained}"
    );
    Ok(())
}

#[tokio::test]
async fn an_abort_by_the_controller_gives_its_reason_and_blames_no_run() -> Result {
    let incident = Incident::start().await?;
    let ro = incident.seed(six_steps()).await?;
    history(&incident, &ro).await?;
    incident.controller_status(progressing(1, None)).await?;
    // The controller itself sets status.abort (progressDeadlineAbort): its field manager owns it.
    incident
        .controller_status(aborted(
            2,
            "progress deadline exceeded: ReplicaSet \"web-7d9f8b6c5\" has timed out progressing",
            ("web-7d9f8b6c5-3-2", "Successful"),
        ))
        .await?;
    let explained = incident.ok(&["explain", "web"]).await?;
    assert!(
        explained.starts_with(
            "Aborted by the controller at 14:02:11 UTC, at step 2 of 6: progress deadline \
             exceeded: ReplicaSet \"web-7d9f8b6c5\" has timed out progressing."
        ),
        "{explained}"
    );
    let tree = incident.ok(&["get", "rollout", "web"]).await?;
    assert!(
        tree.contains("Aborted:        by the controller at 14:02:11 UTC, at step 2 of 6: progress deadline exceeded"),
        "{tree}"
    );
    assert!(
        tree.contains("  ✖   2. pause: 1m  <- aborted here"),
        "{tree}"
    );
    assert!(!tree.contains("Failure:"), "{tree}");
    Ok(())
}

#[tokio::test]
async fn an_abort_by_analysis_names_the_resolved_threshold_and_rounded_values() -> Result {
    let incident = Incident::start().await?;
    let ro = incident.seed(six_steps()).await?;
    // Revision 2's failure stays history; revision 3's own analysis fails at step 3.
    incident
        .run(
            &ro,
            "web-6f4b9c8d7-2-2",
            H2,
            2,
            success_rate_spec(),
            measured("Failed", "Failed", "[0.1234567]", 3),
        )
        .await?;
    incident
        .run(
            &ro,
            "web-7d9f8b6c5-3-2",
            H3,
            2,
            success_rate_spec(),
            measured("Failed", "Failed", "[0.6892477353288697]", 3),
        )
        .await?;
    incident
        .controller_status(aborted(
            3,
            "step analysis web-7d9f8b6c5-3-2 failed: Metric \"success-rate\" assessed Failed",
            ("web-7d9f8b6c5-3-2", "Failed"),
        ))
        .await?;

    let explained = incident.ok(&["explain", "web"]).await?;
    assert!(
        explained.starts_with(
            "Aborted at step 3 of 6 at 14:02:11 UTC because metric success-rate measured \
             [0.6892], below 0.95, three times (limit 2) in AnalysisRun web-7d9f8b6c5-3-2."
        ),
        "{explained}"
    );
    let tree = incident.ok(&["get", "rollout", "web"]).await?;
    assert!(
        tree.contains(
            "Failure:        metric success-rate measured [0.6892] in AnalysisRun \
             web-7d9f8b6c5-3-2 (successCondition: result[0] >= 0.95); failed 3 > limit 2"
        ),
        "{tree}"
    );
    assert!(
        tree.contains("  ✖   3. analysis: success-rate  <- aborted here"),
        "{tree}"
    );
    assert!(
        tree.contains(
            "success-rate  ✖ Failed  last [0.6892], [0.6892]  (0 ok, 3 failed)  3/5  needs >= 0.95"
        ),
        "{tree}"
    );
    for stale in ["0.6892477", "{{args", "0.1234"] {
        assert!(!tree.contains(stale), "{stale:?} in:\n{tree}");
        assert!(!explained.contains(stale), "{stale:?} in: {explained}");
    }
    let json: Value = serde_json::from_str(
        &incident
            .ok(&["get", "rollout", "web", "-o", "json"])
            .await?,
    )?;
    assert_eq!(json["abort"]["cause"], "analysis");
    assert_eq!(json["failure"]["condition"], "result[0] >= 0.95");
    assert_eq!(
        json["failure"]["value"], "[0.6892477353288697]",
        "the data keeps the measured value as measured"
    );
    Ok(())
}

#[tokio::test]
async fn step_numbers_agree_across_get_list_status_and_explain() -> Result {
    let incident = Incident::start().await?;
    let ro = incident.seed(six_steps()).await?;
    history(&incident, &ro).await?;

    // In progress at index 3: step 4 everywhere.
    incident.controller_status(progressing(3, None)).await?;
    let tree = incident.ok(&["get", "rollout", "web"]).await?;
    assert!(tree.contains("  Step:         4/6\n"), "{tree}");
    assert!(
        tree.contains("  ▶   4. setWeight: 50  <- current"),
        "{tree}"
    );
    let list = incident.ok(&["list", "rollouts"]).await?;
    assert!(
        list.lines().nth(1).is_some_and(|l| l.contains(" 4/6 ")),
        "{list}"
    );
    let explained = incident.ok(&["explain", "web"]).await?;
    assert!(
        explained.contains("at step 4 of 6 (setWeight: 50)"),
        "{explained}"
    );
    let out = incident.sluice(&["status", "web", "--no-wait"]).await?;
    assert_eq!(
        text(&out.stdout),
        "Progressing - step 4 of 6: setWeight: 50\n"
    );

    // Aborted there: the controller resets currentStepIndex to 0, every output still says 4.
    incident
        .controller_status(aborted(
            4,
            "aborted by the user",
            ("web-7d9f8b6c5-3-2", "Successful"),
        ))
        .await?;
    let tree = incident.ok(&["get", "rollout", "web"]).await?;
    assert!(tree.contains("  Step:         4/6 (aborted)"), "{tree}");
    let list = incident.ok(&["list", "rollouts"]).await?;
    assert!(
        list.lines().nth(1).is_some_and(|l| l.contains(" 4/6 ")),
        "{list}"
    );
    let explained = incident.ok(&["explain", "web"]).await?;
    assert!(
        explained.contains(", at step 4 of 6 of revision 3"),
        "{explained}"
    );
    let out = incident.sluice(&["status", "web"]).await?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "Degraded - aborted at step 4 of 6: aborted by the user\n"
    );

    // Fully promoted: all traffic on the new stable, not "ActualWeight: 0".
    incident
        .controller_status(json!({
            "phase": "Healthy", "message": null, "abort": false, "abortedAt": null,
            "currentPodHash": H3, "stableRS": H3, "currentStepIndex": 6,
            "canary": {"weights": {
                "canary": {"weight": 0, "serviceName": "web-canary", "podTemplateHash": H3},
                "stable": {"weight": 100, "serviceName": "web-stable", "podTemplateHash": H3}
            }, "currentStepAnalysisRunStatus": null},
            "conditions": []
        }))
        .await?;
    let tree = incident.ok(&["get", "rollout", "web"]).await?;
    assert!(
        tree.contains("  Step:         6/6 (all steps done)"),
        "{tree}"
    );
    assert!(
        tree.contains("  Weight:       100% on stable (revision 3)"),
        "{tree}"
    );
    assert!(!tree.contains("ActualWeight"), "{tree}");
    let list = incident.ok(&["list", "rollouts"]).await?;
    let row: Vec<&str> = list
        .lines()
        .nth(1)
        .ok_or("no row")?
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..6],
        ["web", "Canary", "Healthy", "6/6", "100", "100"],
        "{list}"
    );
    Ok(())
}

#[tokio::test]
async fn an_erroring_metric_says_why_while_its_run_is_running() -> Result {
    let incident = Incident::start().await?;
    let ro = incident.seed(six_steps()).await?;
    let why = "address 10.0.0.7:9090 is not allowed by the analysis address allowlist";
    let error = |minute: u32| {
        json!({"phase": "Error", "message": why,
               "startedAt": format!("2026-03-02T14:0{minute}:00Z"),
               "finishedAt": format!("2026-03-02T14:0{minute}:01Z")})
    };
    incident
        .run(
            &ro,
            "web-7d9f8b6c5-3-2",
            H3,
            2,
            success_rate_spec(),
            json!({"phase": "Running", "metricResults": [{
                "name": "success-rate", "phase": "Running", "measurements": [error(0), error(1)],
                "count": 2, "error": 2, "consecutiveError": 2
            }]}),
        )
        .await?;
    let mut status = progressing(2, Some(("web-7d9f8b6c5-3-2", "Running")));
    status["message"] = json!("step 3 of 6: analysis: success-rate");
    incident.controller_status(status).await?;

    let tree = incident.ok(&["get", "rollout", "web"]).await?;
    assert!(
        tree.contains(&format!(
            "Erroring:       success-rate in AnalysisRun web-7d9f8b6c5-3-2: {why}"
        )),
        "{tree}"
    );
    assert!(
        tree.contains(&format!("error: {why}")),
        "under the metric:\n{tree}"
    );
    let explained = incident.ok(&["explain", "web"]).await?;
    assert!(
        explained.contains(&format!(
            "AnalysisRun web-7d9f8b6c5-3-2 is Running: success-rate could not be measured \
             (2 of 5): {why}."
        )),
        "{explained}"
    );
    // status waits (the update goes on), prints the reason once, then times out.
    let out = incident
        .sluice(&["status", "web", "--timeout", "3s"])
        .await?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        format!(
            "Progressing - step 3 of 6: analysis: success-rate; erroring: success-rate in \
             AnalysisRun web-7d9f8b6c5-3-2: {why}\ntimed out waiting for rollout \"web\"\n"
        ),
        "one line per change, none repeated"
    );
    Ok(())
}

#[tokio::test]
async fn a_timed_pause_shows_the_time_left() -> Result {
    let incident = Incident::start().await?;
    let ro = incident.seed(six_steps()).await?;
    history(&incident, &ro).await?;
    let started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(20);
    let mut status = progressing(1, None);
    status["phase"] = json!("Paused");
    status["message"] = json!("CanaryPauseStep");
    status["controllerPause"] = json!(true);
    status["pauseConditions"] =
        json!([{"reason": "CanaryPauseStep", "startTime": started.to_string()}]);
    incident.controller_status(status).await?;
    let tree = incident.ok(&["get", "rollout", "web"]).await?;
    let pause = tree
        .lines()
        .find(|l| l.starts_with("  Pause:"))
        .ok_or_else(|| format!("no pause line:\n{tree}"))?;
    let left: u64 = pause
        .trim_start_matches("  Pause:")
        .trim()
        .split('s')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no seconds in {pause:?}"))?;
    assert!(
        (30..=40).contains(&left),
        "1m pause started 20s ago: {pause}"
    );
    assert!(tree.contains("  ▶   2. pause: 1m  <- current, "), "{tree}");
    let explained = incident.ok(&["explain", "web"]).await?;
    assert!(
        explained.contains("It goes on by itself in "),
        "{explained}"
    );
    Ok(())
}

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .map_err(|e| format!("tmux is needed for this test ({e}): apt-get install -y tmux"))?;
        if !out.status.success() {
            return Err(format!("tmux {args:?}: {}", text(&out.stderr)).into());
        }
        Ok(text(&out.stdout))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_at_80x24_during_an_abort_shows_the_failure_at_the_top() -> Result {
    let incident = Incident::start().await?;
    let seven = json!([
        {"setWeight": 10},
        {"analysis": {"templates": [{"templateName": "success-rate"}]}},
        {"setWeight": 25},
        {"analysis": {"templates": [{"templateName": "success-rate"}]}},
        {"setWeight": 50},
        {"analysis": {"templates": [{"templateName": "success-rate"}]}},
        {"setWeight": 100}
    ]);
    let ro = incident.seed(seven).await?;
    // Much history: every step run of revision 2 failed or passed, and revision 3's passed
    // twice before failing at step 4.
    for (i, phase) in [(1, "Successful"), (3, "Failed")] {
        let value = if phase == "Failed" {
            "[0.61]"
        } else {
            "[0.99]"
        };
        let m = if phase == "Failed" {
            "Failed"
        } else {
            "Successful"
        };
        incident
            .run(
                &ro,
                &format!("web-{H2}-2-{i}"),
                H2,
                i,
                success_rate_spec(),
                measured(phase, m, value, 3),
            )
            .await?;
    }
    incident
        .run(
            &ro,
            &format!("web-{H3}-3-1"),
            H3,
            1,
            success_rate_spec(),
            measured("Successful", "Successful", "[0.993]", 5),
        )
        .await?;
    let failing = format!("web-{H3}-3-3");
    incident
        .run(
            &ro,
            &failing,
            H3,
            3,
            success_rate_spec(),
            measured("Failed", "Failed", "[0.6892477353288697]", 3),
        )
        .await?;
    let status = aborted_of(
        4,
        7,
        &format!("step analysis {failing} failed: Metric \"success-rate\" assessed Failed"),
        (&failing, "Failed"),
    );
    incident.controller_status(status).await?;

    let tmux = Tmux {
        socket: format!("sluice-incident-{}", std::process::id()),
    };
    let command = format!(
        "env -u NO_COLOR TERM=xterm-256color KUBECONFIG={} {} get rollout web --watch --timeout 5m",
        incident.kubeconfig.display(),
        env!("CARGO_BIN_EXE_sluice")
    );
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "80",
        "-y",
        "24",
        &command,
    ])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let screen = loop {
        let screen = tmux.cmd(&["capture-pane", "-p", "-t", "watch"])?;
        if screen.contains("Failure:") && screen.contains("revision 3") {
            break screen;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the failure never showed:\n{screen}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("--- 80x24 ---\n{screen}");
    let lines: Vec<&str> = screen.lines().collect();
    let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix));
    let failure = at("Failure:").ok_or("no failure line")?;
    assert!(
        failure < 8,
        "failure line {failure} is not near the top:\n{screen}"
    );
    assert!(
        at("Aborted:        by a failed analysis at 14:02:11 UTC, at step 4 of 7").is_some(),
        "{screen}"
    );
    assert!(
        screen.contains("metric success-rate measured [0.6892] in AnalysisRun"),
        "{screen}"
    );
    let conditions = at("Conditions:").ok_or("no conditions")?;
    assert!(conditions < 12, "{screen}");
    assert!(
        screen.contains("  ✖   4. analysis: success-rate  <- aborted here"),
        "{screen}"
    );
    // Per revision: image, pods, restarts, age; the old revision on one line.
    let current = lines
        .iter()
        .find(|l| l.contains("revision 3  web-7d9f8b6c5 (canary)  web:3  1/1 ready  3 restarts"))
        .ok_or_else(|| format!("no current revision line:\n{screen}"))?;
    assert!(
        current.trim_end().ends_with('s') || current.contains('m'),
        "age: {current}"
    );
    let old = lines
        .iter()
        .find(|l| l.contains("revision 2  web-6f4b9c8d7"))
        .ok_or_else(|| format!("no revision 2 line:\n{screen}"))?;
    assert!(old.contains("2 AnalysisRuns"), "{old}");
    assert!(
        !screen.contains(&format!("AnalysisRun web-{H2}")),
        "an old revision's runs are listed:\n{screen}"
    );
    // Nothing scrolled off: one frame in the whole history.
    let history = tmux.cmd(&["capture-pane", "-p", "-S", "-", "-t", "watch"])?;
    assert_eq!(history.matches("Name:").count(), 1, "{history}");
    assert!(lines.len() <= 24);
    Ok(())
}

#[test]
fn measured_values_are_rounded_to_four_significant_digits_in_their_shape() {
    use sluice::cli::info::round_value;
    for (raw, shown) in [
        ("0.6892477353288697", "0.6892"),
        ("[0.6892477353288697]", "[0.6892]"),
        ("[0.95]", "[0.95]"),
        ("[0.99,0.123456]", "[0.99,0.1235]"),
        ("123456.7", "123457"),
        ("1234.5678", "1235"),
        ("0.000123456", "0.0001235"),
        ("42", "42"),
        ("[]", "[]"),
        ("connection refused", "connection refused"),
        ("{\"a\": 1.23456}", "{\"a\": 1.23456}"),
    ] {
        assert_eq!(round_value(raw), shown, "{raw}");
    }
}
