//! Two people running `sluice promote` and `sluice abort` at the same instant: the rollout ends
//! as if the two commands had run one after the other (in one order or the other), never with a
//! mix of two decisions made from the same state, and each command prints what it did in that
//! order.

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice::api::rollout::Rollout;
use sluice::cli::actions::{self, Action};
use sluice::cli::kube::Target;
use sluice::plan::actions::decide;
use sluice_test_support::controller::{self as support, Setup, skip_on_real_cluster};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn manifest() -> Value {
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
            "strategy": {"canary": {"steps": [
                {"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}
            ]}}
        }
    })
}

/// Paused at step 2 of 4 (a pause without duration), or in the middle of step 3.
fn status(paused: bool) -> Value {
    json!({
        "phase": if paused { "Paused" } else { "Progressing" },
        "observedGeneration": 1,
        "currentPodHash": "7f9c6b5d8",
        "stableRS": "6d5b8c7f4",
        "currentStepIndex": if paused { 1 } else { 2 },
        "controllerPause": paused,
        "abort": null,
        "abortedAt": null,
        "promoteFull": null,
        "pauseConditions": if paused {
            json!([{"reason": "CanaryPauseStep", "startTime": "2026-03-02T14:00:00Z"}])
        } else {
            Value::Null
        },
    })
}

/// What the actions decide about: the part of status they write.
fn outcome(ro: &Rollout) -> Value {
    let s = serde_json::to_value(&ro.status).unwrap_or_default();
    json!({
        "abort": s["abort"].as_bool().unwrap_or(false),
        "pauseConditions": s.get("pauseConditions").cloned().unwrap_or(Value::Null),
        "currentStepIndex": s["currentStepIndex"],
        "promoteFull": s["promoteFull"].as_bool().unwrap_or(false),
        "paused": ro.spec.paused.unwrap_or(false),
    })
}

/// The outputs and outcome of `actions` run one after the other from `start`, as the planner
/// decides them.
fn serial(start: &Rollout, actions: [&Action; 2]) -> (Vec<String>, Value) {
    let mut ro = start.clone();
    let mut said = Vec::new();
    for a in actions {
        match decide(&ro, &[], a) {
            Ok(patch) => {
                patch.apply_to(&mut ro).expect("patch applies");
                said.push(patch.summary);
            }
            Err(refusal) => said.push(refusal.0),
        }
    }
    (said, outcome(&ro))
}

async fn start() -> Result<(support::Target, Api<Rollout>, Target)> {
    let cluster = support::Target::start(Setup {
        simulation: false,
        pod_ready_delay: None,
        crds: true,
        istio: false,
    })
    .await;
    let api: Api<Rollout> = Api::namespaced(cluster.client(), &cluster.ns);
    api.create(&PostParams::default(), &serde_json::from_value(manifest())?)
        .await?;
    let target = Target {
        client: cluster.client(),
        namespace: cluster.ns.clone(),
        server: cluster.url(),
    };
    Ok((cluster, api, target))
}

/// Runs `first` and `second` at the same instant `rounds` times, each from a fresh status, and
/// checks every round against the two serial orders. Returns how often each order happened.
async fn race(first: &Action, second: &Action, rounds: usize) -> Result<[usize; 2]> {
    let (_cluster, api, target) = start().await?;
    let mut orders = [0usize; 2];
    for round in 0..rounds {
        api.patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status(round % 2 == 0) })),
        )
        .await?;
        let start = api.get("web").await?;
        let (x, y) = tokio::join!(
            actions::execute(&target, "web", first),
            actions::execute(&target, "web", second)
        );
        let said = vec![
            x.unwrap_or_else(|e| e.to_string()),
            y.unwrap_or_else(|e| e.to_string()),
        ];
        let end = outcome(&api.get("web").await?);
        let (in_order, in_order_end) = serial(&start, [first, second]);
        let (reversed, reversed_end) = serial(&start, [second, first]);
        let reversed = vec![reversed[1].clone(), reversed[0].clone()];
        if said == in_order && end == in_order_end {
            orders[0] += 1;
        } else if said == reversed && end == reversed_end {
            orders[1] += 1;
        } else {
            panic!(
                "round {round}: outputs {said:?} and outcome {end} are neither {first:?} then \
                 {second:?} ({in_order:?}, {in_order_end}) nor the other way round \
                 ({reversed:?}, {reversed_end})"
            );
        }
    }
    eprintln!("{first:?} vs {second:?}: {orders:?} rounds in each order");
    Ok(orders)
}

#[tokio::test]
async fn promote_and_abort_at_the_same_instant_end_as_one_then_the_other() -> Result {
    if skip_on_real_cluster("resets the rollout's status between rounds") {
        return Ok(());
    }
    race(&Action::Promote { full: false }, &Action::Abort, 30).await?;
    Ok(())
}

#[tokio::test]
async fn full_promote_and_abort_at_the_same_instant_never_leave_an_aborted_full_promotion() -> Result
{
    if skip_on_real_cluster("resets the rollout's status between rounds") {
        return Ok(());
    }
    race(&Action::Promote { full: true }, &Action::Abort, 30).await?;
    Ok(())
}

#[tokio::test]
async fn two_promotes_at_the_same_instant_skip_two_steps_or_say_why_not() -> Result {
    if skip_on_real_cluster("resets the rollout's status between rounds") {
        return Ok(());
    }
    let promote = Action::Promote { full: false };
    race(&promote, &promote, 30).await?;
    Ok(())
}
