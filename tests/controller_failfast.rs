//! A broken analysis stops an update before its first pod, through the controller: a missing
//! AnalysisTemplate or one the controller cannot read is `InvalidSpec` naming the template and
//! the field, no ReplicaSet of the new revision is created and no traffic moves; creating or
//! fixing the template resumes the same revision. A retry after a failed analysis leaves
//! exactly one new run.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use sluice::api::analysis::{AnalysisRun, AnalysisTemplate};
use sluice::api::rollout::Rollout;
use sluice_e2e::prometheus::PrometheusServer;
use sluice_test_support::controller::*;

/// A step analysis using the template `success-rate`, which measures its `value` argument.
fn steps(value: &str) -> String {
    format!(
        "{NGINX}steps:\n- setWeight: 20\n- analysis:\n    templates: [{{templateName: success-rate}}]\n    args: [{{name: value, value: \"{value}\"}}]\n- setWeight: 60\n- pause: {{}}\n"
    )
}

/// The template `success-rate`, as JSON so that a test can write what the typed API cannot
/// represent (an interval that is not a duration).
fn template(interval: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "success-rate"},
        "spec": {
            "args": [{"name": "value"}],
            "metrics": [{
                "name": "success-rate",
                "interval": interval,
                "count": 2,
                "failureLimit": 0,
                "successCondition": "result[0] >= 0.95",
                "provider": {"prometheus": {"query": "vector({{args.value}})"}}
            }]
        }
    })
}

fn templates(env: &Env) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        env.ns(),
        &ApiResource::erase::<AnalysisTemplate>(&()),
    )
}

async fn create_template(env: &Env, interval: &str) {
    let obj: DynamicObject = serde_json::from_value(template(interval)).unwrap();
    templates(env)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create template");
}

async fn runs(env: &Env) -> Vec<AnalysisRun> {
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    api.list(&Default::default()).await.unwrap().items
}

async fn env(prom: Option<&PrometheusServer>) -> Env {
    let config = match prom {
        Some(prom) => prometheus_config(&prom.url(), Some(&prom.url())),
        None => config(),
    };
    let env = Env::with_config(config).await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env
}

fn invalid_spec(r: &Rollout) -> Option<String> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec" && c.status == "True")
        .map(|c| c.message.clone())
}

/// The hashes of the ReplicaSets that exist.
async fn hashes(env: &Env) -> Vec<String> {
    env.replica_sets()
        .await
        .iter()
        .filter_map(|rs| {
            rs.labels()
                .get(sluice::api::constants::POD_TEMPLATE_HASH_LABEL)
                .cloned()
        })
        .collect()
}

/// How the template is broken while the Rollout is at rest.
enum Breakage {
    Deleted,
    BadInterval,
}

/// A Healthy Rollout `web` at `web:1` with a valid template, the template then broken (the
/// Rollout at rest becomes Degraded with InvalidSpec, as in Argo Rollouts: its e2e
/// `TestFixInvalidSpec`), then updated to `web:2`: returns the stable hash and the weight
/// before the update.
async fn healthy_then_broken_then_updated(env: &Env, breakage: Breakage) -> (String, Option<i32>) {
    create_template(env, "1s").await;
    env.create(&rollout("web", 2, "web:1", &steps("0.99")))
        .await;
    let r = env
        .wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let stable_hash = stable(&r).expect("stable");
    let before = env.nginx_weight("web").await;
    match breakage {
        Breakage::Deleted => {
            templates(env)
                .delete("success-rate", &Default::default())
                .await
                .expect("delete template");
        }
        Breakage::BadInterval => {
            templates(env)
                .patch(
                    "success-rate",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {"metrics": [{
                        "name": "success-rate", "interval": "five minutes", "count": 2,
                        "successCondition": "result[0] >= 0.95",
                        "provider": {"prometheus": {"query": "vector({{args.value}})"}}
                    }]}})),
                )
                .await
                .expect("break template");
        }
    }
    let r = env
        .wait_for("web", "InvalidSpec at rest", 30, |r| {
            invalid_spec(r).is_some()
        })
        .await;
    assert_eq!(phase(&r), "Degraded");
    assert_eq!(stable(&r).as_deref(), Some(stable_hash.as_str()));
    env.set_image("web", "web:2").await;
    (stable_hash, before)
}

/// Nothing of the new revision exists and the weight is what it was, for a while.
async fn assert_frozen(env: &Env, stable_hash: &str, weight_before: Option<i32>) {
    for _ in 0..10 {
        assert_eq!(
            hashes(env).await,
            vec![stable_hash.to_string()],
            "no ReplicaSet of the new revision"
        );
        assert_eq!(env.nginx_weight("web").await, weight_before);
        assert!(runs(env).await.is_empty(), "no AnalysisRun is started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_template_stops_the_update_before_any_pod_and_creating_it_resumes() {
    let env = env(None).await;
    let (stable_hash, weight_before) =
        healthy_then_broken_then_updated(&env, Breakage::Deleted).await;
    let r = env
        .wait_for("web", "InvalidSpec on web:2", 30, |r| {
            invalid_spec(r).is_some()
                && r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation
        })
        .await;
    let message = invalid_spec(&r).unwrap();
    assert_eq!(
        message,
        "spec.strategy.canary.steps[1].analysis.templates[0]: AnalysisTemplate \"success-rate\" not found"
    );
    assert_eq!(phase(&r), "Degraded");
    assert_eq!(weight(&r), Some(0));
    assert_frozen(&env, &stable_hash, weight_before).await;
    let generation = env.get("web").await.metadata.generation;

    // Creating the template resumes the same revision: no new generation, the update proceeds.
    create_template(&env, "1s").await;
    let r = env
        .wait_for("web", "the update under way", 30, |r| {
            invalid_spec(r).is_none() && weight(r) == Some(20)
        })
        .await;
    assert_eq!(r.metadata.generation, generation);
    let current_hash = current(&r).expect("current");
    assert_ne!(current_hash, stable_hash);
    let hs = hashes(&env).await;
    assert_eq!(hs.len(), 2, "{hs:?}");
    assert!(hs.contains(&current_hash));
    let new_rs = env
        .replica_sets()
        .await
        .into_iter()
        .find(|rs| {
            rs.labels()
                .get(sluice::api::constants::POD_TEMPLATE_HASH_LABEL)
                == Some(&current_hash)
        })
        .unwrap();
    assert_eq!(
        new_rs
            .annotations()
            .get("rollout.sluice.dev/revision")
            .map(String::as_str),
        Some("2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_with_a_bad_interval_stops_the_update_and_fixing_it_resumes() {
    let env = env(None).await;
    let (stable_hash, weight_before) =
        healthy_then_broken_then_updated(&env, Breakage::BadInterval).await;
    let r = env
        .wait_for("web", "InvalidSpec on web:2", 30, |r| {
            invalid_spec(r).is_some()
                && r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation
        })
        .await;
    let message = invalid_spec(&r).unwrap();
    assert!(
        message.starts_with(
            "spec.strategy.canary.steps[1].analysis: AnalysisTemplate \"success-rate\": \
             spec.metrics[0].interval: cannot read \"five minutes\": not a Go duration"
        ),
        "{message}"
    );
    assert_eq!(phase(&r), "Degraded");
    assert_frozen(&env, &stable_hash, weight_before).await;

    // Fixing the template resumes the update.
    templates(&env)
        .patch(
            "success-rate",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"metrics": [{
                    "name": "success-rate", "interval": "1s", "count": 2, "failureLimit": 0,
                    "successCondition": "result[0] >= 0.95",
                    "provider": {"prometheus": {"query": "vector({{args.value}})"}}
                }]}
            })),
        )
        .await
        .expect("fix template");
    env.wait_for("web", "the update under way", 30, |r| {
        invalid_spec(r).is_none() && weight(r) == Some(20)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_failed_analysis_leaves_exactly_one_new_run() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let env = env(Some(&prom)).await;
    create_template(&env, "1s").await;
    env.create(&rollout("web", 2, "web:1", &steps("0.3"))).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "aborted", 90, |r| {
        phase(r) == "Degraded" && weight(r) == Some(0)
    })
    .await;
    let first = runs(&env).await;
    assert_eq!(first.len(), 1, "one run before the retry");
    let first_name = first[0].name_any();

    env.patch_status("web", serde_json::json!({"abort": false}))
        .await;
    let deadline = std::time::Instant::now() + patience(60);
    let second = loop {
        let all = runs(&env).await;
        if let Some(r) = all.iter().find(|r| r.name_any() != first_name) {
            break r.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no new run: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(second.name_any(), format!("{first_name}.1"));
    // However many reconciles follow, the step has its one new run and the old one is over.
    for _ in 0..20 {
        let all = runs(&env).await;
        assert_eq!(
            all.len(),
            2,
            "{:?}",
            all.iter().map(|r| r.name_any()).collect::<Vec<_>>()
        );
        let old = all.iter().find(|r| r.name_any() == first_name).unwrap();
        let finished = old
            .status
            .as_ref()
            .is_some_and(|s| s.phase.as_str() == "Failed");
        assert!(old.spec.terminate || finished, "the old run is over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
