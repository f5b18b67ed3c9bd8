//! The pod specs of ReplicaSets, Deployments and Pods are validated as kube-apiserver validates
//! them: a 422 `Invalid` Status with kube-apiserver's message and one cause per field, or a 400
//! when a quantity cannot even be decoded. Nothing is stored when a write is refused.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sluice_e2e::TestCluster;

fn replica_set(name: &str, pod_spec: Value) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}
        }
    }))
    .expect("a ReplicaSet")
}

/// The Status of a refused write: (code, reason, message, causes as (reason, field, message)).
fn refusal(e: kube::Error) -> (u16, String, String, Vec<(String, String, String)>) {
    let kube::Error::Api(s) = e else {
        panic!("expected an API error, got {e:?}");
    };
    let causes = s
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .map(|c| (c.reason.clone(), c.field.clone(), c.message.clone()))
        .collect();
    (s.code, s.reason.clone(), s.message.clone(), causes)
}

async fn create_rs(cluster: &TestCluster, rs: &ReplicaSet) -> Result<ReplicaSet, kube::Error> {
    let api: Api<ReplicaSet> = Api::namespaced(cluster.client(), "default");
    api.create(&PostParams::default(), rs).await
}

#[tokio::test]
async fn invalid_env_name_and_missing_volume_are_refused_with_kube_apiservers_causes() {
    let cluster = TestCluster::start().await.unwrap();
    let rs = replica_set(
        "web",
        json!({"containers": [{
            "name": "web", "image": "web:1",
            "env": [{"name": "MY=VAR", "value": "1"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]
        }]}),
    );
    let (code, reason, message, causes) = refusal(create_rs(&cluster, &rs).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    let env = "Invalid value: \"MY=VAR\": a valid environment variable name must consist only of printable ASCII characters other than '='";
    assert_eq!(
        message,
        format!(
            "ReplicaSet.apps \"web\" is invalid: [spec.template.spec.containers[0].env[0].name: {env}, spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"data\"]"
        )
    );
    assert_eq!(
        causes,
        vec![
            (
                "FieldValueInvalid".to_string(),
                "spec.template.spec.containers[0].env[0].name".to_string(),
                env.to_string()
            ),
            (
                "FieldValueNotFound".to_string(),
                "spec.template.spec.containers[0].volumeMounts[0].name".to_string(),
                "Not found: \"data\"".to_string()
            ),
        ]
    );
    let api: Api<ReplicaSet> = Api::namespaced(cluster.client(), "default");
    assert!(
        api.get_opt("web").await.unwrap().is_none(),
        "nothing stored"
    );

    // Declared, the volume can be mounted; a valid name passes.
    let rs = replica_set(
        "web",
        json!({
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{
                "name": "web", "image": "web:1",
                "env": [{"name": "MY_VAR", "value": "1"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }]
        }),
    );
    create_rs(&cluster, &rs).await.expect("a valid ReplicaSet");
}

#[tokio::test]
async fn container_names_ports_and_resources_are_checked() {
    let cluster = TestCluster::start().await.unwrap();
    let rs = replica_set(
        "names",
        json!({
            "initContainers": [{"name": "web", "image": "init:1"}],
            "containers": [
                {"name": "web", "image": "web:1",
                 "ports": [{"containerPort": 70000}, {"containerPort": 80, "protocol": "HTTP"}],
                 "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
                {"name": "Side_Car", "image": ""}
            ]
        }),
    );
    let (code, _, _, causes) = refusal(create_rs(&cluster, &rs).await.unwrap_err());
    assert_eq!(code, 422);
    let fields: Vec<(&str, &str)> = causes
        .iter()
        .map(|(_, f, m)| (f.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            (
                "spec.template.spec.containers[0].ports[0].containerPort",
                "Invalid value: 70000: must be between 1 and 65535, inclusive"
            ),
            (
                "spec.template.spec.containers[0].ports[1].protocol",
                "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
            ),
            (
                "spec.template.spec.containers[0].resources.requests",
                "Invalid value: \"2\": must be less than or equal to cpu limit of 1"
            ),
            (
                "spec.template.spec.containers[1].name",
                "Invalid value: \"Side_Car\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ),
            ("spec.template.spec.containers[1].image", "Required value"),
            (
                "spec.template.spec.initContainers[0].name",
                "Duplicate value: \"web\""
            ),
        ]
    );
}

#[tokio::test]
async fn ephemeral_containers_are_refused_in_templates_and_on_pod_create() {
    let cluster = TestCluster::start().await.unwrap();
    // Argo Rollouts' `malformed-rollout-ephemeral` pod spec, with a valid quantity.
    let spec = json!({
        "containers": [{"name": "app", "image": "app:1"}],
        "ephemeralContainers": [{"name": "app", "image": "app:1",
            "resources": {"requests": {"memory": "16Mi"}}}]
    });
    let (code, _, message, _) = refusal(
        create_rs(&cluster, &replica_set("eph", spec.clone()))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "ReplicaSet.apps \"eph\" is invalid: [spec.template.spec.ephemeralContainers[0].name: Duplicate value: \"app\", spec.template.spec.ephemeralContainers[0].resources: Forbidden: cannot be set for an Ephemeral Container, spec.template.spec.ephemeralContainers: Forbidden: ephemeral containers not allowed in pod template]"
    );

    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "eph"},
        "spec": {
            "containers": [{"name": "app", "image": "app:1"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}]
        }
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let (code, _, message, _) =
        refusal(pods.create(&PostParams::default(), &pod).await.unwrap_err());
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "Pod \"eph\" is invalid: spec.ephemeralContainers: Forbidden: cannot be set on create"
    );
}

#[tokio::test]
async fn a_quantity_outside_the_grammar_cannot_be_decoded() {
    let cluster = TestCluster::start().await.unwrap();
    // Argo Rollouts' `malformed-rollout` pod spec, as a Deployment.
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "malformed"},
        "spec": {
            "selector": {"matchLabels": {"app": "malformed"}},
            "template": {"metadata": {"labels": {"app": "malformed"}}, "spec": {
                "containers": [{"name": "malformed", "image": "argoproj/rollouts-demo:blue",
                    "resources": {"requests": {"memory": "invalid"}}}]
            }}
        }
    }))
    .unwrap();
    let api: Api<Deployment> = Api::namespaced(cluster.client(), "default");
    let (code, reason, message, causes) = refusal(
        api.create(&PostParams::default(), &deployment)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
    assert!(causes.is_empty());

    // A negative amount decodes, and is then invalid.
    let rs = replica_set(
        "negative",
        json!({"containers": [{"name": "app", "image": "app:1",
            "resources": {"limits": {"memory": "-1Gi"}}}]}),
    );
    let (code, _, message, _) = refusal(create_rs(&cluster, &rs).await.unwrap_err());
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "ReplicaSet.apps \"negative\" is invalid: spec.template.spec.containers[0].resources.limits[memory]: Invalid value: \"-1Gi\": must be greater than or equal to 0"
    );
}
