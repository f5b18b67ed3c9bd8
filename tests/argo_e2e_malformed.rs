//! Argo Rollouts' malformed-spec e2e scenarios (`test/e2e/functional_test.go`:
//! `TestMalformedRollout`, `TestMalformedRolloutEphemeralCtr`, with the manifests of
//! `test/e2e/expectedfailures/`), and the refusal they stand for: a pod template the API server
//! will never turn into a ReplicaSet.
//!
//! Argo's controller decodes a Rollout leniently (a quantity that does not parse becomes zero, a
//! malformed ephemeral container list is dropped), so both of Argo's tests expect `Healthy`: the
//! pods run with something other than what was written. Sluice deliberately differs
//! (`docs/compat.md`): the Rollout is Degraded with `InvalidSpec` naming the field, nothing is
//! created, and fixing the template recovers. Argo's two manifests are caught by Sluice's own
//! validation before any ReplicaSet is tried; a malformation only the API server knows (an
//! environment variable name with `=`, a mount of a volume that is not declared, an ephemeral
//! container in a template) is refused by the API server once, reported with the server's
//! causes, and not tried again until the template changes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use serde_json::json;
use sluice::api::rollout::Rollout;
use sluice_e2e::WriteRecord;
use sluice_test_support::controller::*;

/// Argo's `expectedfailures/malformed-rollout.yaml`, `apiVersion` swapped.
const MALFORMED_ROLLOUT: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: malformed-rollout
spec:
  selector:
    matchLabels:
      app: malformed-rollout
  template:
    metadata:
      labels:
        app: malformed-rollout
    spec:
      containers:
      - name: malformed-rollout
        image: argoproj/rollouts-demo:blue
        resources:
          requests:
            memory: invalid # invalid
  strategy:
    canary: {}
"#;

/// Argo's `expectedfailures/malformed-rollout-ephemeral.yaml`, `apiVersion` swapped: a
/// duplicated container name in `ephemeralContainers`, and invalid quantities.
const MALFORMED_ROLLOUT_EPHEMERAL: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: malformed-rollout-ephemeral
spec:
  selector:
    matchLabels:
      app: malformed-rollout-ephemeral
  template:
    metadata:
      labels:
        app: malformed-rollout-ephemeral
    spec:
      containers:
      - name: malformed-rollout-ephemeral
        image: argoproj/rollouts-demo:blue
        resources:
          requests:
            memory: invalid # invalid
      ephemeralContainers:
      - name: malformed-rollout-ephemeral   # duplicated name
        image: argoproj/rollouts-demo:blue
        resources:
          requests:
            memory: invalid # invalid
  strategy:
    canary: {}
"#;

/// How long a refused Rollout is watched for create attempts: a retry loop would make dozens.
const WATCH: Duration = Duration::from_secs(5);

async fn apply(env: &Env, yaml: &str) -> Rollout {
    let mut ro: Rollout = serde_yaml::from_str(yaml).expect("rollout yaml");
    ro.metadata.namespace = Some(env.ns().to_string());
    env.rollouts()
        .create(&PostParams::default(), &ro)
        .await
        .expect("the API server accepts the Rollout")
}

fn invalid_spec(r: &Rollout) -> Option<String> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec" && c.status == "True")
        .map(|c| c.message.clone())
}

async fn degraded(env: &Env, name: &str) -> String {
    let r = env
        .wait_for(name, "Degraded with InvalidSpec", 30, |r| {
            phase(r) == "Degraded" && invalid_spec(r).is_some()
        })
        .await;
    invalid_spec(&r).unwrap_or_default()
}

/// ReplicaSet creates sent to the test cluster in the test's namespace (None on a real cluster,
/// which keeps no write log).
fn rs_creates(env: &Env) -> Option<Vec<WriteRecord>> {
    if env.cluster.is_real() {
        return None;
    }
    Some(
        env.cluster
            .controls()
            .writes()
            .into_iter()
            .filter(|w| {
                w.resource == "replicasets"
                    && w.verb == "create"
                    && w.namespace.as_deref() == Some(env.ns())
            })
            .collect(),
    )
}

/// Waits out [`WATCH`] and checks that at most `max` ReplicaSet creates were tried, each
/// refused, and that no ReplicaSet exists.
async fn no_retry_storm(env: &Env, max: usize) {
    tokio::time::sleep(WATCH).await;
    if let Some(creates) = rs_creates(env) {
        assert!(
            creates.len() <= max,
            "at most {max} create attempts in {WATCH:?}, got {}",
            creates.len()
        );
        assert!(
            creates.iter().all(|w| w.code >= 400),
            "every create was refused: {:?}",
            creates.iter().map(|w| w.code).collect::<Vec<_>>()
        );
    }
    assert!(env.replica_sets().await.is_empty(), "no ReplicaSet exists");
}

async fn event_reasons(env: &Env, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), env.ns());
    api.list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

fn container(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"name": name, "image": "argoproj/rollouts-demo:blue"});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

#[tokio::test]
async fn test_malformed_rollout() {
    let env = Env::new().await;
    apply(&env, MALFORMED_ROLLOUT).await;
    let message = degraded(&env, "malformed-rollout").await;
    // Caught by Sluice's validation of the template: no ReplicaSet is even tried.
    assert!(
        message.contains("spec.template.spec.containers[0].resources.requests.memory")
            && message.contains("\"invalid\" is not a quantity"),
        "{message}"
    );
    no_retry_storm(&env, 0).await;

    // Fixing the template recovers.
    env.patch_spec(
        "malformed-rollout",
        json!({"spec": {"template": {"spec": {"containers": [container(
            "malformed-rollout",
            json!({"resources": {"requests": {"memory": "16Mi"}}})
        )]}}}}),
    )
    .await;
    let r = env
        .wait_for("malformed-rollout", "Healthy", 60, |r| {
            phase(r) == "Healthy"
        })
        .await;
    assert_eq!(invalid_spec(&r), None);
    assert_eq!(env.replica_sets().await.len(), 1);
}

#[tokio::test]
async fn test_malformed_rollout_ephemeral_ctr() {
    let env = Env::new().await;
    apply(&env, MALFORMED_ROLLOUT_EPHEMERAL).await;
    let message = degraded(&env, "malformed-rollout-ephemeral").await;
    // Caught by Sluice's validation: both quantities and the duplicated name, each by field.
    for field in [
        "spec.template.spec.containers[0].resources.requests.memory",
        "spec.template.spec.ephemeralContainers[0].resources.requests.memory",
        "spec.template.spec.ephemeralContainers[0].name: duplicate container name",
    ] {
        assert!(message.contains(field), "{field} in {message}");
    }
    no_retry_storm(&env, 0).await;

    // Quantities fixed and the name made unique, the ephemeral container is still one the API
    // server refuses in a pod template: that refusal is reported, once, with its causes.
    let fixed = container(
        "malformed-rollout-ephemeral",
        json!({"resources": {"requests": {"memory": "16Mi"}}}),
    );
    env.patch_spec(
        "malformed-rollout-ephemeral",
        json!({"spec": {"template": {"spec": {
            "containers": [fixed.clone()],
            "ephemeralContainers": [container("debug", json!({}))]
        }}}}),
    )
    .await;
    let r = env
        .wait_for(
            "malformed-rollout-ephemeral",
            "the API server's refusal",
            30,
            |r| invalid_spec(r).is_some_and(|m| m.contains("refused by the API server")),
        )
        .await;
    let message = invalid_spec(&r).unwrap_or_default();
    assert!(
        message.contains(
            "spec.template.spec.ephemeralContainers: ReplicaSet \"malformed-rollout-ephemeral-"
        ) && message.contains("Forbidden: ephemeral containers not allowed in pod template"),
        "{message}"
    );
    assert_eq!(phase(&r), "Degraded");
    no_retry_storm(&env, 1).await;

    // Without ephemeral containers the Rollout becomes Healthy.
    env.patch_spec(
        "malformed-rollout-ephemeral",
        json!({"spec": {"template": {"spec": {"ephemeralContainers": null}}}}),
    )
    .await;
    let r = env
        .wait_for("malformed-rollout-ephemeral", "Healthy", 60, |r| {
            phase(r) == "Healthy"
        })
        .await;
    assert_eq!(invalid_spec(&r), None);
}

/// A template only the API server knows to be malformed: refused once, reported with the
/// server's causes (field and message) and the ReplicaSet's name, not retried, then recovered.
#[tokio::test]
async fn a_replica_set_the_api_server_refuses_is_invalid_spec_not_a_retry_storm() {
    let env = Env::new().await;
    let yaml = MALFORMED_ROLLOUT.replace("memory: invalid # invalid", "memory: 16Mi");
    let mut ro: Rollout = serde_yaml::from_str(&yaml).unwrap();
    let template = ro.spec.template.as_mut().unwrap();
    let spec = template.spec.as_mut().unwrap();
    spec.containers[0].env = Some(vec![
        serde_json::from_value(json!({"name": "MY=VAR", "value": "1"})).unwrap(),
    ]);
    spec.containers[0].volume_mounts = Some(vec![
        serde_json::from_value(json!({"name": "data", "mountPath": "/data"})).unwrap(),
    ]);
    ro.metadata.namespace = Some(env.ns().to_string());
    env.rollouts()
        .create(&PostParams::default(), &ro)
        .await
        .expect("the API server accepts the Rollout");

    let message = degraded(&env, "malformed-rollout").await;
    assert!(
        message.starts_with(
            "spec.template.spec.containers[0].env[0].name: ReplicaSet \"malformed-rollout-"
        ),
        "{message}"
    );
    for part in [
        "refused by the API server: Invalid value: \"MY=VAR\": a valid environment variable name must consist only of printable ASCII characters other than '='",
        "; spec.template.spec.containers[0].volumeMounts[0].name: ReplicaSet \"malformed-rollout-",
        "refused by the API server: Not found: \"data\"",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    no_retry_storm(&env, 1).await;
    if let Some(creates) = rs_creates(&env) {
        assert_eq!(
            creates.iter().map(|w| w.code).collect::<Vec<_>>(),
            vec![422],
            "one create, refused as Invalid"
        );
    }
    let events = event_reasons(&env, "malformed-rollout").await;
    assert!(
        events
            .iter()
            .any(|(reason, message)| reason == "ReplicaSetCreateError"
                && message.starts_with("Failed to create new replica set \"malformed-rollout-")
                && message.contains("is invalid")),
        "Argo's ReplicaSetCreateError event: {events:?}"
    );
    assert!(
        events.iter().any(|(reason, _)| reason == "InvalidSpec"),
        "{events:?}"
    );

    // Fixing the template (a new hash) tries again, and succeeds.
    env.patch_spec(
        "malformed-rollout",
        json!({"spec": {"template": {"spec": {
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [container("malformed-rollout", json!({
                "env": [{"name": "MY_VAR", "value": "1"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }))]
        }}}}),
    )
    .await;
    let r = env
        .wait_for("malformed-rollout", "Healthy", 60, |r| {
            phase(r) == "Healthy"
        })
        .await;
    assert_eq!(invalid_spec(&r), None);
    assert_eq!(env.replica_sets().await.len(), 1);
}

/// A bad update of a healthy Rollout: the API server refuses the new ReplicaSet; the stable
/// version keeps its pods and its traffic, and the next good template rolls out.
#[tokio::test]
async fn a_refused_update_leaves_the_stable_version_serving() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 2, "web:1", NGINX)).await;
    let healthy = env
        .wait_for("web", "Healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let stable_hash = stable(&healthy).expect("a stable version");
    let before_rs = env.replica_sets().await.len();

    env.patch_spec(
        "web",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:2", "env": [{"name": "BAD=NAME", "value": "x"}]}
        ]}}}}),
    )
    .await;
    let message = degraded(&env, "web").await;
    assert!(
        message.contains("spec.template.spec.containers[0].env[0].name: ReplicaSet \"web-"),
        "{message}"
    );
    tokio::time::sleep(WATCH).await;
    let r = env.get("web").await;
    assert_eq!(stable(&r).as_deref(), Some(stable_hash.as_str()));
    assert_eq!(
        env.replica_sets().await.len(),
        before_rs,
        "no new ReplicaSet"
    );
    assert_eq!(env.pods_of(&stable_hash).await, 2, "stable keeps its pods");
    assert_eq!(
        env.service_hash("web-stable").await,
        Some(stable_hash.clone())
    );
    assert_eq!(
        env.nginx_weight("web").await.unwrap_or(0),
        0,
        "no traffic moved"
    );
    if let Some(creates) = rs_creates(&env) {
        let refused = creates.iter().filter(|w| w.code == 422).count();
        assert_eq!(refused, 1, "the refused ReplicaSet was tried once");
    }

    env.set_image("web", "web:3").await;
    let r = env
        .wait_for("web", "web:3 Healthy", 60, |r| {
            phase(r) == "Healthy" && stable(r).as_deref() != Some(stable_hash.as_str())
        })
        .await;
    assert_eq!(invalid_spec(&r), None);
}
