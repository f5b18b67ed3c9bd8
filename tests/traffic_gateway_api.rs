//! The Gateway API router driven by the controller on the test cluster: HTTPRoute weights per
//! step, header and mirror rules, drift, deletion and router removal, bad references, and an
//! Argo Rollouts manifest using the `argoproj-labs/gatewayAPI` plugin.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice_test_support::controller::*;

fn gateway(kind: &str, plural: &str, version: &str) -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: version.into(),
        api_version: format!("gateway.networking.k8s.io/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn routes(env: &Env, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        ns,
        &gateway("HTTPRoute", "httproutes", "v1"),
    )
}

async fn create(api: &Api<DynamicObject>, yaml: &str) {
    let mut obj: DynamicObject = serde_yaml::from_str(yaml).unwrap();
    // The namespace comes from the API.
    obj.metadata.namespace = None;
    api.create(&PostParams::default(), &obj).await.unwrap();
}

async fn get(api: &Api<DynamicObject>, name: &str) -> Value {
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

async fn wait_until<F, Fut>(what: &str, secs: u64, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + patience(secs);
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The user's route: a weighted rule `main` that also sends 10 to a legacy Service, and a rule
/// for another Service that Sluice must never touch.
const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: edge}]
  hostnames: [web.example.com]
  rules:
  - name: main
    matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs:
    - {name: web-stable, port: 80, weight: 100}
    - {name: web-canary, port: 80, weight: 0}
    - {name: web-legacy, port: 80, weight: 10}
  - matches: [{path: {type: PathPrefix, value: /admin}}]
    backendRefs:
    - {name: admin, port: 8080}
"#;

const GATEWAY: &str = r#"
canaryService: web-canary
stableService: web-stable
abortScaleDownDelaySeconds: 1
scaleDownDelaySeconds: 1
trafficRouting:
  gatewayAPI:
    httpRoute: web
steps:
- setWeight: 20
- pause: {}
- setWeight: 60
- pause: {duration: 1s}
"#;

fn rule<'a>(route: &'a Value, name: &str) -> &'a Value {
    route["spec"]["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no rule {name} in {route}"))
}

/// (stable, canary, legacy) weights of the rule `main`.
async fn weights(env: &Env) -> (i64, i64, i64) {
    let route = get(&routes(env, env.ns()), "web").await;
    let refs = &rule(&route, "main")["backendRefs"];
    let w = |i: usize| refs[i]["weight"].as_i64().unwrap_or(-1);
    (w(0), w(1), w(2))
}

fn rule_names(route: &Value) -> Vec<String> {
    route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn invalid_spec_message(r: &sluice::api::rollout::Rollout) -> Option<String> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec" && c.status == "True")
        .map(|c| c.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_canary_weights_each_step_and_leaves_foreign_backends_and_rules_alone() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&routes(&env, env.ns()), ROUTE).await;
    let before = get(&routes(&env, env.ns()), "web").await;
    env.create(&rollout("web", 4, "web:1", GATEWAY)).await;
    let r = env
        .wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).unwrap();
    assert_eq!(weights(&env).await, (100, 0, 10));

    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "paused at 20", 60, |r| {
            step(r) == Some(1) && weight(r) == Some(20)
        })
        .await;
    assert_eq!(weights(&env).await, (80, 20, 10));
    assert_eq!(
        r.status.unwrap().canary.weights.unwrap().verified,
        Some(true)
    );
    let during = get(&routes(&env, env.ns()), "web").await;
    assert_eq!(
        during["spec"]["rules"][1], before["spec"]["rules"][1],
        "a rule without both Services is never touched"
    );
    assert_eq!(during["spec"]["parentRefs"], before["spec"]["parentRefs"]);
    // `sluice get` and `explain` name the route and the weight applied to it.
    let view = sluice::cli::info::view(&sluice::cli::info::Snapshot::from_objects(
        env.get("web").await,
        vec![],
        vec![],
    ));
    assert_eq!(view.strategy, "Canary (gatewayAPI)");
    assert_eq!(view.traffic_routes, ["HTTPRoute web"]);
    assert_eq!(
        (view.actual_weight, view.stable_weight),
        (Some(20), Some(80))
    );
    let text = sluice::cli::get::render_view(
        &view,
        sluice::cli::Output::Text,
        sluice::cli::render::Style::plain(),
    )
    .unwrap();
    assert!(
        text.contains("Routes:") && text.contains("HTTPRoute web"),
        "{text}"
    );
    let explained = sluice::cli::explain::explain(&view).join("\n");
    assert!(
        explained.contains("Traffic to the canary is 20% (weights applied to HTTPRoute web)."),
        "{explained}"
    );

    env.promote("web").await;
    env.wait_for("web", "at 60", 60, |r| {
        weight(r) == Some(60) || phase(r) == "Healthy"
    })
    .await;
    let r = env
        .wait_for("web", "promoted", 60, |r| {
            phase(r) == "Healthy" && weight(r) == Some(0) && stable(r) != Some(v1.clone())
        })
        .await;
    assert_eq!(weights(&env).await, (100, 0, 10));
    assert_eq!(env.service_hash("web-stable").await, stable(&r));
}

const MANAGED: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  managedRoutes: [{name: beta-header}, {name: mirror-posts}]
  gatewayAPI:
    httpRoute: web
steps:
- setWeight: 10
- setHeaderRoute:
    name: beta-header
    match: [{headerName: x-beta, headerValue: {exact: "1"}}]
- setMirrorRoute:
    name: mirror-posts
    match: [{method: {exact: POST}}]
    percentage: 50
- pause: {}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_mirror_steps_add_managed_rules_first_and_promotion_removes_them() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&routes(&env, env.ns()), ROUTE).await;
    env.create(&rollout("web", 2, "web:1", MANAGED)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused after the route steps", 60, |r| {
        step(r) == Some(3)
    })
    .await;
    wait_until("managed rules in place", 30, || async {
        rule_names(&get(&routes(&env, env.ns()), "web").await)
            == ["beta-header", "mirror-posts", "main", ""]
    })
    .await;
    let route = get(&routes(&env, env.ns()), "web").await;
    let header = rule(&route, "beta-header");
    assert_eq!(
        header["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/"},
                "headers": [{"type": "Exact", "name": "x-beta", "value": "1"}]}])
    );
    assert_eq!(
        header["backendRefs"],
        json!([{"group": "", "kind": "Service", "name": "web-canary", "port": 80, "weight": 100}]),
        "the header rule sends to the canary only"
    );
    let mirror = rule(&route, "mirror-posts");
    assert_eq!(
        mirror["filters"],
        json!([{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": "web-canary", "port": 80},
            "percent": 50
        }}])
    );
    assert_eq!(mirror["matches"][0]["method"], "POST");
    assert_eq!(
        route["metadata"]["annotations"]["rollout.sluice.dev/managed-rules"],
        "beta-header,mirror-posts"
    );
    assert_eq!(weights(&env).await, (90, 10, 10));

    env.promote("web").await;
    env.wait_for("web", "promoted", 60, |r| {
        phase(r) == "Healthy" && weight(r) == Some(0)
    })
    .await;
    wait_until("managed rules removed", 30, || async {
        rule_names(&get(&routes(&env, env.ns()), "web").await) == ["main", ""]
    })
    .await;
    let route = get(&routes(&env, env.ns()), "web").await;
    assert!(
        route["metadata"]["annotations"]
            .get("rollout.sluice.dev/managed-rules")
            .is_none()
    );
    assert_eq!(weights(&env).await, (100, 0, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edit_of_the_route_weights_is_reverted_at_once() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&routes(&env, env.ns()), ROUTE).await;
    env.create(&rollout("web", 2, "web:1", GATEWAY)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused at 20", 60, |r| {
        weight(r) == Some(20) && phase(r) == "Paused"
    })
    .await;
    let mut edited = get(&routes(&env, env.ns()), "web").await;
    edited["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(50);
    edited["spec"]["rules"][0]["backendRefs"][1]["weight"] = json!(50);
    routes(&env, env.ns())
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": edited["spec"].clone()})),
        )
        .await
        .unwrap();
    // The watch on HTTPRoutes brings the Rollout back to its weight without anything else
    // changing.
    wait_until("weights back to 80/20", 30, || async {
        weights(&env).await == (80, 20, 10)
    })
    .await;
    let r = env.get("web").await;
    assert_eq!((step(&r), weight(&r)), (Some(1), Some(20)));
}

const WITH_HEADER: &str = r#"
canaryService: web-canary
stableService: web-stable
abortScaleDownDelaySeconds: 1
scaleDownDelaySeconds: 1
trafficRouting:
  managedRoutes: [{name: beta-header}]
  gatewayAPI:
    httpRoute: web
steps:
- setWeight: 20
- setHeaderRoute:
    name: beta-header
    match: [{headerName: x-beta, headerValue: {exact: "1"}}]
- pause: {}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_rollout_or_removing_the_router_restores_all_traffic_to_stable() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&routes(&env, env.ns()), ROUTE).await;
    env.create(&rollout("web", 2, "web:1", WITH_HEADER)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let r = env.get("web").await;
    assert!(
        r.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"rollout.sluice.dev/traffic-cleanup".to_string())
    );

    // Router removal from a live Rollout mid-update.
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused at 20", 60, |r| {
        weight(r) == Some(20) && phase(r) == "Paused"
    })
    .await;
    wait_until("header rule in place", 30, || async {
        rule_names(&get(&routes(&env, env.ns()), "web").await)[0] == "beta-header"
    })
    .await;
    env.patch_spec(
        "web",
        json!({"spec": {"strategy": {"canary": {
            "trafficRouting": null, "scaleDownDelaySeconds": null, "abortScaleDownDelaySeconds": null
        }}}}),
    )
    .await;
    wait_until("route given back", 60, || async {
        let route = get(&routes(&env, env.ns()), "web").await;
        rule_names(&route) == ["main", ""]
            && route["metadata"]
                .get("annotations")
                .is_none_or(|a| a.get("rollout.sluice.dev/managed-by-rollouts").is_none())
    })
    .await;
    assert_eq!(weights(&env).await, (100, 0, 10));

    // Put the router back, go to 20%, then delete the Rollout.
    env.patch_spec(
        "web",
        json!({"spec": {"strategy": {"canary": {"trafficRouting": {
            "managedRoutes": [{"name": "beta-header"}],
            "gatewayAPI": {"httpRoute": "web"}
        }}}}}),
    )
    .await;
    env.set_image("web", "web:3").await;
    wait_until("weight 20 again", 60, || async {
        weights(&env).await == (80, 20, 10)
    })
    .await;
    env.rollouts()
        .delete("web", &Default::default())
        .await
        .unwrap();
    wait_until("rollout gone", 60, || async {
        env.rollouts().get_opt("web").await.unwrap().is_none()
    })
    .await;
    let route = get(&routes(&env, env.ns()), "web").await;
    assert_eq!(
        weights(&env).await,
        (100, 0, 10),
        "all traffic back to stable"
    );
    assert_eq!(rule_names(&route), ["main", ""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_route_is_reported_by_field_and_the_rollout_resumes_once_it_exists() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.create(&rollout("web", 2, "web:1", GATEWAY)).await;
    let r = env
        .wait_for("web", "invalid reference", 60, |r| {
            invalid_spec_message(r).is_some()
        })
        .await;
    let message = invalid_spec_message(&r).unwrap();
    assert!(
        message.contains("spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute")
            && message.contains("httproute 'web' not found"),
        "{message}"
    );
    create(&routes(&env, env.ns()), ROUTE).await;
    env.wait_for("web", "healthy", 60, |r| {
        phase(r) == "Healthy" && invalid_spec_message(r).is_none()
    })
    .await;
    assert_eq!(weights(&env).await, (100, 0, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_a_rule_for_both_services_changes_no_traffic() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&routes(&env, env.ns()), ROUTE).await;
    env.create(&rollout("web", 2, "web:1", GATEWAY)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "weight 20", 60, |r| weight(r) == Some(20))
        .await;
    // Someone points the canary backend elsewhere.
    let mut edited = get(&routes(&env, env.ns()), "web").await;
    edited["spec"]["rules"][0]["backendRefs"][1]["name"] = json!("web-preview");
    routes(&env, env.ns())
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": edited["spec"].clone()})),
        )
        .await
        .unwrap();
    let r = env
        .wait_for("web", "invalid reference", 60, |r| {
            invalid_spec_message(r).is_some()
        })
        .await;
    let message = invalid_spec_message(&r).unwrap();
    assert!(
        message.contains(
            "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute: httproute 'web' has no \
             rule whose backendRefs reference both the stable Service 'web-stable' and the \
             canary Service 'web-canary'"
        ),
        "{message}"
    );
    let route = get(&routes(&env, env.ns()), "web").await;
    assert_eq!(route["spec"], edited["spec"], "the route is left as it is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_service_that_does_not_exist_is_reported_and_the_route_untouched() {
    let env = Env::new().await;
    env.services(&["web-stable"]).await;
    create(&routes(&env, env.ns()), ROUTE).await;
    let before = get(&routes(&env, env.ns()), "web").await;
    env.create(&rollout("web", 2, "web:1", GATEWAY)).await;
    let r = env
        .wait_for("web", "invalid reference", 60, |r| {
            invalid_spec_message(r).is_some()
        })
        .await;
    let message = invalid_spec_message(&r).unwrap();
    assert!(
        message.contains("spec.strategy.canary.canaryService")
            && message.contains("\"web-canary\" not found"),
        "{message}"
    );
    let after = get(&routes(&env, env.ns()), "web").await;
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "no write at all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_in_another_namespace_needs_the_users_reference_grant() {
    if skip_on_real_cluster("creates a namespace of its own") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "edge"}})).unwrap(),
        )
        .await
        .unwrap();
    let ns = env.ns().to_string();
    let edge_route = ROUTE
        .replace(
            "name: web-stable, port: 80",
            &format!("name: web-stable, namespace: {ns}, port: 80"),
        )
        .replace(
            "name: web-canary, port: 80",
            &format!("name: web-canary, namespace: {ns}, port: 80"),
        );
    create(&routes(&env, "edge"), &edge_route).await;
    let spec = GATEWAY.replace(
        "    httpRoute: web\n",
        "    httpRoute: web\n    namespace: edge\n",
    );
    env.create(&rollout("web", 2, "web:1", &spec)).await;
    let r = env
        .wait_for("web", "invalid reference", 60, |r| {
            invalid_spec_message(r).is_some()
        })
        .await;
    let message = invalid_spec_message(&r).unwrap();
    assert!(
        message.contains("no ReferenceGrant there allows HTTPRoutes from 'edge' to reference it")
            && message.contains("the ReferenceGrant is yours to create"),
        "{message}"
    );
    let grants: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &ns,
        &gateway("ReferenceGrant", "referencegrants", "v1beta1"),
    );
    create(
        &grants,
        r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: edge-routes}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: edge}]
  to: [{group: "", kind: Service}]
"#,
    )
    .await;
    // The watch on ReferenceGrants brings the Rollout back as soon as the grant exists.
    env.wait_for("web", "healthy", 60, |r| {
        phase(r) == "Healthy" && invalid_spec_message(r).is_none()
    })
    .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "weight 20", 60, |r| {
        weight(r) == Some(20) && invalid_spec_message(r).is_none()
    })
    .await;
    let route = get(&routes(&env, "edge"), "web").await;
    let refs = &route["spec"]["rules"][0]["backendRefs"];
    assert_eq!(
        (refs[0]["weight"].clone(), refs[1]["weight"].clone()),
        (json!(80), json!(20))
    );
}

/// An Argo Rollouts manifest using the `argoproj-labs/gatewayAPI` plugin, with only its
/// apiVersion changed, lints clean (tests/cli_lint.rs) and completes a canary here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argo_gateway_api_plugin_manifest_completes_a_canary() {
    let env = Env::new().await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/argo/supported/gateway-api-plugin.yaml"
    ))
    .unwrap()
    .replace("namespace: default", &format!("namespace: {}", env.ns()));
    let mut rollout_doc = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc).unwrap();
        match value["kind"].as_str() {
            Some("Rollout") => rollout_doc = Some(value),
            Some("Service") => {
                let api: Api<k8s_openapi::api::core::v1::Service> =
                    Api::namespaced(env.client.clone(), env.ns());
                api.create(
                    &PostParams::default(),
                    &serde_json::from_value(value).unwrap(),
                )
                .await
                .unwrap();
            }
            Some("HTTPRoute") => {
                create(
                    &routes(&env, env.ns()),
                    &serde_yaml::to_string(&value).unwrap(),
                )
                .await
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let rollout: sluice::api::rollout::Rollout =
        serde_json::from_value(rollout_doc.expect("a Rollout")).unwrap();
    env.create(&rollout).await;
    let r = env
        .wait_for("gateway-canary", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).unwrap();
    // Every canary weight the route takes, read from a watch (the 1 s pauses are too short to
    // be caught by polling).
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let recorder = {
        use futures::StreamExt;
        let seen = seen.clone();
        let api = routes(&env, env.ns());
        let config =
            kube::runtime::watcher::Config::default().fields("metadata.name=gateway-canary");
        tokio::spawn(async move {
            let mut events = std::pin::pin!(kube::runtime::watcher(api, config));
            while let Some(event) = events.next().await {
                if let Ok(
                    kube::runtime::watcher::Event::Apply(obj)
                    | kube::runtime::watcher::Event::InitApply(obj),
                ) = event
                    && let Some(w) =
                        obj.data["spec"]["rules"][0]["backendRefs"][1]["weight"].as_i64()
                {
                    let mut seen = seen.lock().unwrap();
                    if seen.last() != Some(&w) {
                        seen.push(w);
                    }
                }
            }
        })
    };
    env.set_image("gateway-canary", "nginx:1.20-alpine").await;
    env.wait_for("gateway-canary", "completed", 90, |r| {
        phase(r) == "Healthy" && stable(r).is_some_and(|s| s != v1)
    })
    .await;
    let canary_weight = || async {
        let route = get(&routes(&env, env.ns()), "gateway-canary").await;
        route["spec"]["rules"][0]["backendRefs"][1]["weight"]
            .as_i64()
            .unwrap_or(-1)
    };
    wait_until("all traffic on the new stable", 30, || async {
        canary_weight().await == 0
    })
    .await;
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    // The steps' weights in order (the planner may also move the weight between steps, e.g.
    // to full canary before the switch), and all traffic on stable at the end.
    let at = |w: i64| seen.iter().position(|s| *s == w);
    assert!(
        seen.first() == Some(&0) && at(30).is_some() && at(60) > at(30) && seen.last() == Some(&0),
        "the route followed the steps: {seen:?}"
    );
}
