//! CustomResourceDefinitions are validated on create and update as kube-apiserver does: defaults
//! against their own schema and CEL rules, and the static CEL cost budget. Every assertion holds on
//! a real v1.32 cluster too (`SLUICE_E2E_KUBECONFIG=/path/to/kubeconfig`).

mod common;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

const BUDGET_HINT: &str = " (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)";

/// A namespaced CRD `<plural>.e2e.sluice.dev` whose only version has `spec` as its schema.
fn crd(plural: &str, spec: Value) -> Value {
    let kind = format!(
        "{}{}",
        plural[..1].to_uppercase(),
        &plural[1..plural.len() - 1]
    );
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.e2e.sluice.dev")},
        "spec": {
            "group": "e2e.sluice.dev",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": &plural[..plural.len() - 1], "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}}
            }]
        }
    })
}

fn typed(crd: &Value) -> CustomResourceDefinition {
    serde_json::from_value(crd.clone()).expect("a CustomResourceDefinition")
}

fn causes(status: &kube::core::Status) -> Vec<(String, String, String)> {
    status
        .details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| (c.field.clone(), c.reason.clone(), c.message.clone()))
                .collect()
        })
        .unwrap_or_default()
}

async fn assert_not_stored(api: &Api<CustomResourceDefinition>, name: &str) {
    assert_eq!(code(api.get(name).await), 404, "{name} must not be stored");
}

/// A list of steps without `maxItems` checked by an `all()` rule:
/// per step 2 (condition) + 1 + 8 (`!has(s.weight) || (s.weight >= 0 && s.weight <= 100)`),
/// times (3 MiB - 2) / 3 = 1,048,575 steps, plus 3: 11,534,328, 1.1534328 x the budget.
fn steps_spec(max_items: Option<u64>) -> Value {
    let mut steps = json!({
        "type": "array",
        "items": {"type": "object", "properties": {"weight": {"type": "integer"}}}
    });
    if let Some(n) = max_items {
        steps["maxItems"] = json!(n);
    }
    json!({
        "type": "object",
        "properties": {"steps": steps},
        "x-kubernetes-validations": [{
            "rule": "self.steps.all(s, !has(s.weight) || (s.weight >= 0 && s.weight <= 100))",
            "message": "weights range from 0 to 100"
        }]
    })
}

#[tokio::test]
async fn a_default_that_breaks_its_own_rule_is_refused() {
    let t = target().await;
    let api: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    let bad = crd(
        "gadgets",
        json!({"type": "object", "properties": {"mode": {
            "type": "object",
            "default": {},
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "x-kubernetes-validations": [{"rule": "has(self.a) != has(self.b)", "message": "exactly one of a or b must be set"}]
        }}}),
    );
    let status = status_of(api.create(&PostParams::default(), &typed(&bad)).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    let field = "spec.validation.openAPIV3Schema.properties[spec].properties[mode].default";
    let message = "Invalid value: \"object\": exactly one of a or b must be set";
    assert_eq!(
        causes(&status),
        vec![(
            field.to_string(),
            "FieldValueInvalid".to_string(),
            message.to_string()
        )]
    );
    assert_eq!(
        status.message,
        format!(
            "CustomResourceDefinition.apiextensions.k8s.io \"gadgets.e2e.sluice.dev\" is invalid: {field}: {message}"
        )
    );
    assert_not_stored(&api, "gadgets.e2e.sluice.dev").await;
}

#[tokio::test]
async fn an_unbounded_list_under_an_all_rule_exceeds_the_cost_budget() {
    let t = target().await;
    let api: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    let status = status_of(
        api.create(
            &PostParams::default(),
            &typed(&crd("sprockets", steps_spec(None))),
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        causes(&status),
        vec![(
            "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
                .to_string(),
            "FieldValueForbidden".to_string(),
            format!(
                "Forbidden: estimated rule cost exceeds budget by factor of 1.153433x{BUDGET_HINT}"
            )
        )]
    );
    assert_not_stored(&api, "sprockets.e2e.sluice.dev").await;
}

#[tokio::test]
async fn the_same_list_with_max_items_is_accepted_and_cannot_lose_it_on_update() {
    let t = target().await;
    let api: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    let name = "cogs.e2e.sluice.dev";
    let created = api
        .create(
            &PostParams::default(),
            &typed(&crd("cogs", steps_spec(Some(50)))),
        )
        .await
        .expect("a bounded list is within budget");
    // Dropping maxItems on update is refused the same way, and the stored CRD is kept.
    let mut unbounded = typed(&crd("cogs", steps_spec(None)));
    unbounded.metadata.resource_version = created.metadata.resource_version.clone();
    let status = status_of(api.replace(name, &PostParams::default(), &unbounded).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .contains("estimated rule cost exceeds budget by factor of 1.153433x"),
        "{}",
        status.message
    );
    let stored = api.get(name).await.expect("still stored");
    assert_eq!(
        stored.metadata.resource_version,
        created.metadata.resource_version
    );
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete the crd");
}

#[tokio::test]
async fn defaults_that_fail_their_schema_type_or_enum_are_refused() {
    let t = target().await;
    let api: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    let bad = crd(
        "widgetries",
        json!({"type": "object", "properties": {
            "mode": {"type": "string", "enum": ["a", "b"], "default": "c"},
            "replicas": {"type": "integer", "default": "three"}
        }}),
    );
    let status = status_of(api.create(&PostParams::default(), &typed(&bad)).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    let found = causes(&status);
    let prefix = "spec.validation.openAPIV3Schema.properties[spec].properties";
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        (
            found[0].0.as_str(),
            found[0].1.as_str(),
            found[0].2.as_str()
        ),
        (
            format!("{prefix}[mode].default").as_str(),
            "FieldValueNotSupported",
            "Unsupported value: \"c\": supported values: \"a\", \"b\""
        )
    );
    assert_eq!(found[1].0, format!("{prefix}[replicas].default"));
    assert!(
        found[1].2.starts_with("Invalid value: \"string\": ")
            && found[1].2.ends_with("must be of type integer: \"string\""),
        "{found:?}"
    );
    assert_not_stored(&api, "widgetries.e2e.sluice.dev").await;
}

#[tokio::test]
async fn a_field_without_a_type_is_not_structural() {
    let t = target().await;
    let api: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    let bad = crd(
        "gizmos",
        json!({"type": "object", "properties": {"free": {"description": "no type"}}}),
    );
    let status = status_of(api.create(&PostParams::default(), &typed(&bad)).await);
    assert_eq!(
        causes(&status),
        vec![(
            "spec.validation.openAPIV3Schema.properties[spec].properties[free].type".to_string(),
            "FieldValueRequired".to_string(),
            "Required value: must not be empty for specified object fields".to_string()
        )]
    );
    assert_not_stored(&api, "gizmos.e2e.sluice.dev").await;
}

fn fixture_rollout() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rollout-strategy-default.yaml"
    ))
    .expect("fixture");
    serde_yaml::from_str(&text).expect("fixture yaml")
}

/// `crds/rollout.yaml` as it was when a real v1.32 server refused it: first for the strategy
/// default, then, with the default removed, for the cost of the canary setWeight rule.
#[tokio::test]
async fn the_rollout_crd_with_the_strategy_default_is_refused_as_a_real_server_did() {
    let t = target().await;
    let api: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    let rollout = fixture_rollout();
    let status = status_of(api.create(&PostParams::default(), &typed(&rollout)).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        causes(&status),
        vec![(
            "spec.validation.openAPIV3Schema.properties[spec].properties[strategy].default"
                .to_string(),
            "FieldValueInvalid".to_string(),
            "Invalid value: \"object\": exactly one of canary or blueGreen must be set".to_string()
        )]
    );

    let mut without_default = rollout.clone();
    without_default
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/strategy")
        .and_then(Value::as_object_mut)
        .expect("strategy")
        .remove("default");
    let status = status_of(
        api.create(&PostParams::default(), &typed(&without_default))
            .await,
    );
    assert_eq!(
        causes(&status),
        vec![(
            "spec.validation.openAPIV3Schema.properties[spec].properties[strategy].properties[canary].x-kubernetes-validations[2].rule".to_string(),
            "FieldValueForbidden".to_string(),
            format!("Forbidden: estimated rule cost exceeds budget by factor of 1.468006x{BUDGET_HINT}")
        )]
    );
    assert_not_stored(&api, "rollouts.sluice.dev").await;
}

/// The Istio CRDs the test cluster ships with are valid.
#[test]
fn the_e2e_crds_pass_validation() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("e2e/crds") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let crd: Value = serde::Deserialize::deserialize(doc).expect("yaml");
            if crd.is_null() {
                continue;
            }
            assert_eq!(
                sluice_e2e::crd_validation::validate_crd(&crd),
                Vec::<(String, String)>::new(),
                "{}",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "no CRD found in {dir}");
}

/// CRDs loaded through the Rust API (`load_crds_from_dir`, `install_crd`) are validated too.
#[tokio::test]
async fn install_crd_refuses_what_the_api_refuses() {
    let cluster = sluice_e2e::TestCluster::start()
        .await
        .expect("test cluster starts");
    let err = cluster
        .install_crd(fixture_rollout())
        .expect_err("the fixture is refused");
    assert!(
        err.to_string()
            .contains("exactly one of canary or blueGreen must be set"),
        "{err}"
    );
    assert!(
        cluster
            .object(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "",
                "rollouts.sluice.dev"
            )
            .is_none()
    );
}

/// The Gateway API CRDs default what the real ones default (backendRef group, kind and weight), keep
/// the fields they do not type, and refuse what they type wrongly.
#[tokio::test]
async fn the_gateway_api_crds_default_and_validate_routes() {
    use kube::api::DynamicObject;
    use kube::discovery::ApiResource;
    let cluster = sluice_e2e::TestCluster::start()
        .await
        .expect("test cluster starts");
    cluster.install_istio_crds().expect("e2e crds");
    let ar = ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client(), "default", &ar);
    let route = |weight: Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "rules": [{
                    "timeouts": {"request": "10s"},
                    "backendRefs": [{"name": "stable", "port": 80, "weight": weight}, {"name": "canary", "port": 80}]
                }]
            }
        }))
        .expect("route")
    };
    let created = api
        .create(&PostParams::default(), &route(json!(100)))
        .await
        .expect("a valid route is stored");
    let rule = &created.data["spec"]["rules"][0];
    assert_eq!(rule["timeouts"], json!({"request": "10s"}));
    assert_eq!(
        rule["backendRefs"][1],
        json!({"group": "", "kind": "Service", "name": "canary", "port": 80, "weight": 1})
    );
    assert_eq!(
        created.data["spec"]["parentRefs"][0]["kind"],
        json!("Gateway")
    );
    let mut bad = route(json!(-1));
    bad.metadata.name = Some("bad".into());
    assert_eq!(code(api.create(&PostParams::default(), &bad).await), 422);
}
