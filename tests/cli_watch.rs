//! `sluice get rollout --watch` as a person sees it: the real binary in a tmux pane against the
//! test cluster, while the test moves the rollout on as a controller would. `capture-pane`
//! snapshots must show the step, the weight and the analysis values change, redrawn in place.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice::api::analysis::AnalysisRun;
use sluice::api::rollout::Rollout;

use sluice_test_support::controller::{Setup, Target};
use sluice_test_support::tools::Tmux;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn seed(client: &kube::Client, ns: &str) -> Result {
    let ros: Api<Rollout> = Api::namespaced(client.clone(), ns);
    let ro: Rollout = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
            "strategy": {"canary": {
                "canaryService": "web-canary", "stableService": "web-stable",
                "trafficRouting": {"nginx": {"stableIngress": "web"}},
                "steps": [
                    {"setWeight": 20},
                    {"analysis": {"templates": [{"templateName": "success-rate"}]}},
                    {"setWeight": 50},
                    {"pause": {}}
                ]
            }}
        }
    }))?;
    let ro = ros.create(&PostParams::default(), &ro).await?;
    let owner = json!([{"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "web",
                        "uid": ro.metadata.uid.clone().ok_or("no uid")?, "controller": true}]);
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    for (hash, rev, image, n) in [("aaa111", "1", "web:1", 3), ("bbb222", "2", "web:2", 1)] {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("web-{hash}"), "namespace": ns,
                         "labels": {"app": "web", "rollouts-pod-template-hash": hash},
                         "annotations": {"rollout.sluice.dev/revision": rev},
                         "ownerReferences": owner},
            "spec": {"replicas": n,
                     "selector": {"matchLabels": {"app": "web", "rollouts-pod-template-hash": hash}},
                     "template": {"metadata": {"labels": {"app": "web", "rollouts-pod-template-hash": hash}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}
        }))?;
        rss.create(&PostParams::default(), &rs).await?;
        rss.patch_status(
            &format!("web-{hash}"),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"replicas": n, "readyReplicas": n, "availableReplicas": n}}),
            ),
        )
        .await?;
    }
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), ns);
    let run: AnalysisRun = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": "web-bbb222-1", "namespace": ns,
                     "labels": {"rollouts-pod-template-hash": "bbb222", "rollout-type": "Step", "step-index": "1"},
                     "ownerReferences": owner},
        "spec": {"metrics": [{"name": "success-rate", "interval": "10s", "successCondition": "result[0] >= 0.95",
                              "provider": {"prometheus": {"address": "http://prometheus:9090", "query": "up"}}}]}
    }))?;
    runs.create(&PostParams::default(), &run).await?;
    Ok(())
}

async fn set_rollout(client: &kube::Client, ns: &str, index: i32, weight: i32) -> Result {
    let ros: Api<Rollout> = Api::namespaced(client.clone(), ns);
    ros.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": "Progressing", "observedGeneration": 1,
            "currentPodHash": "bbb222", "stableRS": "aaa111", "currentStepIndex": index,
            "canary": {"weights": {"canary": {"weight": weight}, "stable": {"weight": 100 - weight}}}
        }})),
    )
    .await?;
    Ok(())
}

async fn set_measurements(client: &kube::Client, ns: &str, values: &[&str]) -> Result {
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), ns);
    let measurements: Vec<Value> = values
        .iter()
        .map(|v| json!({"phase": "Successful", "value": v}))
        .collect();
    runs.patch_status(
        "web-bbb222-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "metricResults": [{
            "name": "success-rate", "phase": "Running", "measurements": measurements,
            "count": values.len(), "successful": values.len()
        }]}})),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_redraws_step_weight_and_analysis_in_place() -> Result {
    let cluster = Target::start(Setup {
        simulation: false,
        pod_ready_delay: None,
        crds: true,
        istio: false,
    })
    .await;
    let client = cluster.client();
    seed(&client, &cluster.ns).await?;
    set_rollout(&client, &cluster.ns, 0, 20).await?;

    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let tmux = Tmux::new(
        format!("sluice-watch-{}", std::process::id()),
        Duration::from_secs(60),
    )?;
    let command = format!(
        "env -u NO_COLOR TERM=xterm-256color KUBECONFIG={} {} get rollout web --watch --timeout 5m",
        kubeconfig.display(),
        env!("CARGO_BIN_EXE_sluice")
    );
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "140",
        "-y",
        "60",
        &command,
    ])?;

    let first = tmux
        .wait_for(
            "watch",
            &[
                "  Step:         1/4",
                "ActualWeight: 20",
                "no measurement yet",
            ],
        )
        .await?;
    assert!(
        first.contains("▶   1. setWeight: 20  <- current"),
        "{first}"
    );

    // The controller moves to the analysis step and the run measures.
    set_rollout(&client, &cluster.ns, 1, 20).await?;
    set_measurements(&client, &cluster.ns, &["[0.991]"]).await?;
    let second = tmux
        .wait_for("watch", &["  Step:         2/4", "last [0.991]"])
        .await?;
    assert!(
        second.contains("▶   2. analysis: success-rate  <- current"),
        "{second}"
    );

    set_measurements(&client, &cluster.ns, &["[0.991]", "[0.987]"]).await?;
    set_rollout(&client, &cluster.ns, 2, 50).await?;
    let third = tmux
        .wait_for(
            "watch",
            &[
                "  Step:         3/4",
                "ActualWeight: 50",
                "last [0.991], [0.987]",
            ],
        )
        .await?;

    println!("--- first snapshot ---\n{first}\n--- last snapshot ---\n{third}");
    // Redrawn in place: one frame on screen and in the history, none of the old values left.
    assert_eq!(third.matches("Name:").count(), 1, "{third}");
    assert!(!third.contains("ActualWeight: 20"), "{third}");
    assert!(!third.contains("Step:         2/4"), "{third}");
    assert!(!third.contains("no measurement yet"), "{third}");

    // Colour on a terminal, unless NO_COLOR is set.
    let coloured = tmux.capture("watch", true)?;
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal:\n{coloured}"
    );
    let plain_command = command.replace("env -u NO_COLOR", "env NO_COLOR=1");
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "plain",
        "-x",
        "140",
        "-y",
        "60",
        &plain_command,
    ])?;
    tmux.wait_for("plain", &["  Step:         3/4"]).await?;
    let plain = tmux.capture("plain", true)?;
    assert!(
        !plain.contains("\x1b["),
        "colour despite NO_COLOR:\n{plain}"
    );

    // A terminal shorter than the frame: cut to fit, still redrawn in place.
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "short",
        "-x",
        "140",
        "-y",
        "12",
        &command,
    ])?;
    tmux.wait_for("short", &["  Step:         3/4", "more lines"])
        .await?;
    set_rollout(&client, &cluster.ns, 3, 50).await?;
    let short = tmux.wait_for("short", &["  Step:         4/4"]).await?;
    assert_eq!(short.matches("Name:").count(), 1, "{short}");
    assert!(!short.contains("3/4"), "{short}");
    Ok(())
}
