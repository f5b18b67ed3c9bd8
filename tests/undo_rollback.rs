//! Going back, through the controller on the test cluster, whose API server fills in the pod
//! template's defaults in every ReplicaSet as kube-apiserver does: `undo` and a Git revert to
//! the stable version take up its ReplicaSet again at once, without steps or analysis; `undo`
//! to an older revision reuses that revision's ReplicaSet.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sluice::api::analysis::{AnalysisRun, AnalysisTemplate};
use sluice::api::rollout::Rollout;
use sluice::plan::actions::{Action, decide};
use sluice_e2e::prometheus::PrometheusServer;
use sluice_test_support::controller::*;

/// A template that measures a constant through a real Prometheus: Successful after 2 s.
const TEMPLATE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: ok}
spec:
  metrics:
  - name: up
    interval: 1s
    count: 2
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        query: vector(1)
"#;

/// Two pauses around an analysis: any run of these steps pauses and analyses.
fn steps() -> String {
    format!(
        "{NGINX}steps:\n- setWeight: 20\n- pause: {{}}\n- analysis:\n    templates: [{{templateName: ok}}]\n- setWeight: 50\n- pause: {{}}\n"
    )
}
const N_STEPS: i32 = 5;

async fn env(prom: &PrometheusServer) -> Env {
    let env = Env::with_config(prometheus_config(&prom.url(), Some(&prom.url()))).await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let templates: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), env.ns());
    let template: AnalysisTemplate = serde_yaml::from_str(TEMPLATE).unwrap();
    templates
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    env
}

async fn runs(env: &Env) -> Vec<AnalysisRun> {
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    api.list(&Default::default()).await.unwrap().items
}

fn names(rss: &[ReplicaSet]) -> Vec<String> {
    let mut names: Vec<String> = rss.iter().map(|rs| rs.name_any()).collect();
    names.sort();
    names
}

fn replica_set_of<'a>(rss: &'a [ReplicaSet], hash: &str) -> &'a ReplicaSet {
    rss.iter()
        .find(|rs| {
            rs.labels()
                .get(sluice::api::constants::POD_TEMPLATE_HASH_LABEL)
                .map(String::as_str)
                == Some(hash)
        })
        .unwrap_or_else(|| panic!("no ReplicaSet of {hash}: {:?}", names(rss)))
}

/// `sluice undo`: the patch the CLI decides, sent as the CLI sends it.
async fn undo(env: &Env, to_revision: Option<i64>) {
    let ro = env.get("web").await;
    let rss = env.replica_sets().await;
    let patch = decide(&ro, &rss, &Action::Undo { to_revision }).expect("undo is possible");
    let ops: json_patch::Patch = serde_json::from_value(patch.json_patch.unwrap()).unwrap();
    env.rollouts()
        .patch("web", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .expect("undo patch");
}

/// web:1 stable, web:2 past its analysis and paused at its last step (50%).
async fn update_to_v2_paused_at_50(env: &Env) -> (String, String) {
    update_to_v2_paused_at_50_with(env, &steps()).await
}

async fn update_to_v2_paused_at_50_with(env: &Env, canary: &str) -> (String, String) {
    env.create(&rollout("web", 3, "web:1", canary)).await;
    let r = env
        .wait_for("web", "web:1 healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).unwrap();
    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "web:2 paused at step 2", 60, |r| {
            step(r) == Some(1) && phase(r) == "Paused"
        })
        .await;
    let v2 = current(&r).unwrap();
    env.promote("web").await;
    env.wait_for("web", "web:2 analysed, paused at 50%", 60, |r| {
        step(r) == Some(4) && phase(r) == "Paused" && weight(r) == Some(50)
    })
    .await;
    (v1, v2)
}

/// After the template went back to `v1`: the Rollout is on `v1` at once, with no pause, no
/// new AnalysisRun and no new ReplicaSet, and ends Healthy with all traffic on `v1`.
async fn straight_back(env: &Env, v1: &str, rss_before: &[ReplicaSet], runs_before: usize) {
    let r = env
        .wait_for("web", "back on web:1", 30, |r| {
            current(r).as_deref() == Some(v1)
        })
        .await;
    let st = r.status.clone().unwrap();
    assert_eq!(st.stable_rs.as_deref(), Some(v1));
    assert!(st.pause_conditions.is_empty(), "{:?}", st.pause_conditions);
    assert_eq!(st.current_step_index, Some(N_STEPS), "no steps");
    let r = env
        .wait_for("web", "healthy on web:1", 30, |r| {
            phase(r) == "Healthy" && weight(r) == Some(0)
        })
        .await;
    assert_eq!(current(&r).as_deref(), Some(v1));
    // Nothing starts later either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = env.get("web").await;
    assert_eq!(phase(&r), "Healthy");
    assert!(r.status.unwrap().pause_conditions.is_empty());
    assert_eq!(runs(env).await.len(), runs_before, "no AnalysisRun");
    let rss = env.replica_sets().await;
    assert_eq!(names(&rss), names(rss_before), "no new ReplicaSet");
    assert_eq!(env.pods_of(v1).await, 3);
    assert_eq!(env.service_hash("web-stable").await.as_deref(), Some(v1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_during_an_update_goes_straight_back_to_the_stable_replica_set() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom).await;
    let (v1, v2) = update_to_v2_paused_at_50(&env).await;
    let rss = env.replica_sets().await;
    // The stable ReplicaSet's template carries the API server's defaults: the reason undo used
    // to start a new revision.
    let stored = replica_set_of(&rss, &v1)
        .spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap();
    let container = &stored.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        container.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    let runs_before = runs(&env).await.len();
    assert_eq!(runs_before, 1, "web:2 was analysed once");

    undo(&env, None).await;
    straight_back(&env, &v1, &rss, runs_before).await;
    assert_eq!(env.pods_of(&v2).await, 0, "the canary is scaled down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_revert_to_the_replica_sets_own_template_goes_straight_back() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom).await;
    let (v1, _) = update_to_v2_paused_at_50(&env).await;
    let rss = env.replica_sets().await;
    let runs_before = runs(&env).await.len();
    // The manifest taken back from the cluster (`kubectl get rs -o yaml`), defaults and all,
    // less the controller's hash label.
    let mut template = replica_set_of(&rss, &v1)
        .spec
        .clone()
        .unwrap()
        .template
        .unwrap();
    template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .remove(sluice::api::constants::POD_TEMPLATE_HASH_LABEL);
    let mut ro: Rollout = env.get("web").await;
    ro.spec.template = Some(template);
    env.rollouts()
        .replace("web", &PostParams::default(), &ro)
        .await
        .expect("revert");
    straight_back(&env, &v1, &rss, runs_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_after_a_full_promotion_reuses_the_earlier_replica_set() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom).await;
    let (v1, v2) = update_to_v2_paused_at_50(&env).await;
    env.promote("web").await;
    env.wait_for("web", "web:2 stable", 60, |r| {
        stable(r).as_deref() == Some(v2.as_str()) && phase(r) == "Healthy"
    })
    .await;
    let rss = env.replica_sets().await;
    let v1_name = replica_set_of(&rss, &v1).name_any();

    undo(&env, Some(1)).await;
    // web:1 is no longer the stable version, so it is an update like any other (as in Argo
    // Rollouts without a rollback window) — but of revision 1's ReplicaSet, not a copy of it.
    let r = env
        .wait_for("web", "web:1 canary", 30, |r| {
            current(r).as_deref() == Some(v1.as_str())
        })
        .await;
    assert_eq!(stable(&r).as_deref(), Some(v2.as_str()));
    let r = env
        .wait_for("web", "web:1 at its first pause", 60, |r| {
            step(r) == Some(1) && phase(r) == "Paused"
        })
        .await;
    assert_eq!(current(&r).as_deref(), Some(v1.as_str()));
    let after = env.replica_sets().await;
    assert_eq!(names(&after), names(&rss), "no new ReplicaSet");
    let reused = replica_set_of(&after, &v1);
    assert_eq!(reused.name_any(), v1_name);
    assert_eq!(
        reused
            .annotations()
            .get(sluice::api::constants::REVISION_ANNOTATION)
            .map(String::as_str),
        Some("3"),
        "it becomes the newest revision, as in Argo Rollouts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_reuses_a_replica_set_carrying_ephemeral_metadata() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(&prom).await;
    let canary = format!(
        "canaryMetadata:\n  labels: {{role: canary}}\nstableMetadata:\n  labels: {{role: stable}}\n  annotations: {{team: web}}\n{}",
        steps()
    );
    let (v1, v2) = update_to_v2_paused_at_50_with(&env, &canary).await;
    let rss = env.replica_sets().await;
    // The stable ReplicaSet's template carries the stable metadata (its pods do too).
    let stored = replica_set_of(&rss, &v1)
        .spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap();
    let meta = stored.metadata.as_ref().unwrap();
    assert_eq!(
        meta.labels
            .as_ref()
            .unwrap()
            .get("role")
            .map(String::as_str),
        Some("stable")
    );
    assert_eq!(
        meta.annotations
            .as_ref()
            .and_then(|a| a.get("team"))
            .map(String::as_str),
        Some("web")
    );
    // What undo writes back is the Rollout's template, without the metadata of a role.
    let ro = env.get("web").await;
    let patch = decide(&ro, &rss, &Action::Undo { to_revision: None }).expect("undo");
    let written = &patch.json_patch.as_ref().unwrap()[0]["value"];
    assert_eq!(
        written["metadata"]["labels"],
        serde_json::json!({"app": "web"})
    );
    assert!(
        written["metadata"].get("annotations").is_none(),
        "{written}"
    );
    let runs_before = runs(&env).await.len();

    undo(&env, None).await;
    straight_back(&env, &v1, &rss, runs_before).await;
    assert_eq!(env.pods_of(&v2).await, 0, "the canary is scaled down");
    // The same ReplicaSet (straight_back checked no other was created), still stable, with its
    // pods' metadata kept.
    let after = env.replica_sets().await;
    let kept = replica_set_of(&after, &v1);
    assert_eq!(kept.name_any(), replica_set_of(&rss, &v1).name_any());
    let labels = kept
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(labels.get("role").map(String::as_str), Some("stable"));
}
