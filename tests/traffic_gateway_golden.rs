//! Golden tests of the JSON patches the Gateway API router sends to routes (pure: no cluster).
//!
//! Each snapshot is the exact patch written, or the route it produces; the assertions around
//! them lock what must never change: foreign backendRefs and rules are left alone, a second
//! apply writes nothing, release gives the route back as it was before Sluice.

use serde_json::json;
use sluice::api::rollout::{
    HeaderRoutingMatch, Rollout, RouteMatch, SetHeaderRoute, SetMirrorRoute, StringMatch,
};
use sluice::plan::ManagedRoutes;
use sluice::traffic::gateway_api;
use sluice_test_support::traffic::{desired, patched, yaml};

fn rollout(canary_yaml: &str) -> Rollout {
    sluice_test_support::rollout::canary(canary_yaml)
        .namespace("shop")
        .uid("4d2a6a1e-0000-4000-8000-000000000002")
        .replicas(4)
        .build()
}

/// An HTTPRoute as a real API server stores it (defaults applied): a weighted rule with a
/// third, foreign backend, and a rule for another service.
const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: shop
  resourceVersion: "21"
  annotations:
    team: payments
spec:
  parentRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: edge}
  hostnames: [shop.example.com]
  rules:
  - name: main
    matches:
    - path: {type: PathPrefix, value: /}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: x-via, value: gateway}]
    backendRefs:
    - {group: "", kind: Service, name: web-stable, port: 80, weight: 90}
    - {group: "", kind: Service, name: web-canary, port: 80, weight: 0}
    - {group: "", kind: Service, name: web-legacy, port: 80, weight: 10}
  - matches:
    - path: {type: PathPrefix, value: /admin}
    backendRefs:
    - {group: "", kind: Service, name: admin, port: 8080, weight: 1}
"#;

const ROLLOUT: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  managedRoutes:
  - name: mirror-checkout
  - name: beta-users
  gatewayAPI:
    httpRoute: web
"#;

const PLUGIN_ROLLOUT: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  plugins:
    argoproj-labs/gatewayAPI:
      httpRoute: web
      namespace: shop
"#;

fn managed_routes() -> ManagedRoutes {
    ManagedRoutes {
        header_routes: vec![SetHeaderRoute {
            name: "beta-users".into(),
            match_: vec![
                HeaderRoutingMatch {
                    header_name: "x-beta".into(),
                    header_value: StringMatch {
                        exact: Some("true".into()),
                        ..Default::default()
                    },
                },
                HeaderRoutingMatch {
                    header_name: "x-tier".into(),
                    header_value: StringMatch {
                        prefix: Some("gold.".into()),
                        ..Default::default()
                    },
                },
            ],
        }],
        mirror_routes: vec![SetMirrorRoute {
            name: "mirror-checkout".into(),
            match_: vec![RouteMatch {
                method: Some(StringMatch {
                    exact: Some("POST".into()),
                    ..Default::default()
                }),
                path: Some(StringMatch {
                    prefix: Some("/checkout".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            percentage: Some(35),
        }],
    }
}

#[test]
fn gateway_weights_change_only_the_stable_and_canary_backend_refs() {
    let r = rollout(ROLLOUT);
    let live = yaml(ROUTE);
    let patch = gateway_api::route_patch(&r, &live, &desired(30))
        .unwrap()
        .unwrap();
    insta::assert_json_snapshot!("gateway_weight_patch", patch);
    let result = patched(&live, &patch);
    let mut expected = live.clone();
    expected["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(70);
    expected["spec"]["rules"][0]["backendRefs"][1]["weight"] = json!(30);
    expected["metadata"]["annotations"]["rollout.sluice.dev/managed-by-rollouts"] = json!("web");
    assert_eq!(result, expected, "nothing else changes");
    assert!(
        gateway_api::route_patch(&r, &result, &desired(30))
            .unwrap()
            .is_none(),
        "a second apply writes nothing"
    );
}

#[test]
fn the_argo_plugin_shape_produces_the_same_patch() {
    let live = yaml(ROUTE);
    let native = gateway_api::route_patch(&rollout(ROLLOUT), &live, &desired(45)).unwrap();
    let plugin = gateway_api::route_patch(&rollout(PLUGIN_ROLLOUT), &live, &desired(45)).unwrap();
    assert_eq!(native, plugin);
}

#[test]
fn gateway_max_traffic_weight_sets_proportions_of_that_total() {
    let r = rollout(&format!("{ROLLOUT}  maxTrafficWeight: 1000\n"));
    let live = yaml(ROUTE);
    let mut want = desired(250);
    want.max_weight = 1000;
    let result = patched(
        &live,
        &gateway_api::route_patch(&r, &live, &want).unwrap().unwrap(),
    );
    let refs = &result["spec"]["rules"][0]["backendRefs"];
    assert_eq!(
        (refs[0]["weight"].clone(), refs[1]["weight"].clone()),
        (json!(750), json!(250))
    );
}

#[test]
fn gateway_managed_rules_go_first_in_declared_order_and_are_removed_when_not_wanted() {
    let r = rollout(ROLLOUT);
    let live = yaml(ROUTE);
    let mut want = desired(20);
    want.managed_routes = managed_routes();
    let patch = gateway_api::route_patch(&r, &live, &want).unwrap().unwrap();
    let with_rules = patched(&live, &patch);
    insta::assert_yaml_snapshot!("gateway_managed_rules", with_rules["spec"]["rules"]);
    assert_eq!(
        with_rules["metadata"]["annotations"]["rollout.sluice.dev/managed-rules"],
        "mirror-checkout,beta-users"
    );
    assert!(
        gateway_api::route_patch(&r, &with_rules, &want)
            .unwrap()
            .is_none()
    );

    // Promotion or abort: no managed routes wanted; the user's rules are as before.
    let without = patched(
        &with_rules,
        &gateway_api::route_patch(&r, &with_rules, &desired(0))
            .unwrap()
            .unwrap(),
    );
    let mut expected = live.clone();
    expected["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(100);
    expected["metadata"]["annotations"]["rollout.sluice.dev/managed-by-rollouts"] = json!("web");
    assert_eq!(without, expected);
}

#[test]
fn gateway_release_returns_all_traffic_to_stable_and_removes_what_sluice_added() {
    let r = rollout(ROLLOUT);
    let mut live = yaml(ROUTE);
    // Before Sluice: all traffic on stable.
    live["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(100);
    let mut want = desired(60);
    want.managed_routes = managed_routes();
    let during = patched(
        &live,
        &gateway_api::route_patch(&r, &live, &want).unwrap().unwrap(),
    );
    let release = gateway_api::route_release_patch(&r, &during)
        .unwrap()
        .unwrap();
    insta::assert_json_snapshot!("gateway_release_patch", release);
    assert_eq!(patched(&during, &release), live);
}

#[test]
fn gateway_routes_in_another_namespace_weight_backend_refs_with_the_rollout_namespace() {
    let r = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  gatewayAPI:
    namespace: edge
    httpRoutes: [{name: web}]
    grpcRoutes: [{name: web-grpc}]
"#,
    );
    let mut live = yaml(ROUTE);
    live["metadata"]["namespace"] = json!("edge");
    let err = gateway_api::route_patch(&r, &live, &desired(10)).unwrap_err();
    assert!(
        err.to_string().contains(
            "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoutes[0]: httproute 'edge/web' \
             has no rule whose backendRefs reference both the stable Service 'web-stable' and \
             the canary Service 'web-canary' (from another namespace, a backendRef needs \
             `namespace: shop`)"
        ),
        "{err}"
    );
    for b in live["spec"]["rules"][0]["backendRefs"]
        .as_array_mut()
        .unwrap()
    {
        b["namespace"] = json!("shop");
    }
    let result = patched(
        &live,
        &gateway_api::route_patch(&r, &live, &desired(10))
            .unwrap()
            .unwrap(),
    );
    assert_eq!(result["spec"]["rules"][0]["backendRefs"][1]["weight"], 10);
    assert_eq!(
        result["spec"]["rules"][0]["backendRefs"][2]["weight"], 10,
        "the foreign backend keeps its weight"
    );
}

#[test]
fn gateway_grpc_header_rules_match_the_method_and_headers() {
    let r = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  managedRoutes: [{name: beta-users}]
  gatewayAPI:
    grpcRoute: web-grpc
"#,
    );
    let live = yaml(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: web-grpc, namespace: shop, resourceVersion: "3"}
spec:
  rules:
  - matches:
    - method: {type: Exact, service: shop.Cart}
    backendRefs:
    - {group: "", kind: Service, name: web-stable, port: 9000, weight: 100}
    - {group: "", kind: Service, name: web-canary, port: 9000, weight: 0}
"#,
    );
    let mut want = desired(0);
    want.managed_routes = ManagedRoutes {
        header_routes: managed_routes().header_routes,
        mirror_routes: Vec::new(),
    };
    let result = patched(
        &live,
        &gateway_api::route_patch(&r, &live, &want).unwrap().unwrap(),
    );
    insta::assert_yaml_snapshot!("gateway_grpc_header_rule", result["spec"]["rules"][0]);
}

#[test]
fn gateway_router_and_the_routes_it_watches() {
    use sluice::traffic::{RoutingConfig, routers_for, watched_objects};
    let config = RoutingConfig::default();
    let r = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  gatewayAPI:
    namespace: edge
    httpRoutes: [{name: web, useHeaderRoutes: true}, {name: web-internal}]
    tcpRoute: web-tcp
    tlsRoutes: [{name: web-tls}]
"#,
    );
    let names: Vec<&str> = routers_for(&r, &config).iter().map(|r| r.name()).collect();
    assert_eq!(names, ["gateway-api"]);
    let watched: Vec<String> = watched_objects(&r, &config)
        .iter()
        .map(|w| {
            format!(
                "{}/{} {}/{} {}",
                w.group, w.version, w.namespace, w.name, w.kind
            )
        })
        .collect();
    assert_eq!(
        watched,
        [
            "gateway.networking.k8s.io/v1 edge/web HTTPRoute",
            "gateway.networking.k8s.io/v1 edge/web-internal HTTPRoute",
            "gateway.networking.k8s.io/v1alpha2 edge/web-tcp TCPRoute",
            "gateway.networking.k8s.io/v1alpha2 edge/web-tls TLSRoute",
        ]
    );
}

/// The Gateway API routing's own rules, for both shapes: each mistake names its field.
#[test]
fn gateway_api_configuration_mistakes_name_their_field() {
    use sluice::api::validation::validate_rollout_spec;
    let cases: &[(&str, &str, &str)] = &[
        (
            "trafficRouting:\n  gatewayAPI: {httpRoute: web}\n  plugins:\n    argoproj-labs/gatewayAPI: {httpRoute: web}\n",
            "spec.strategy.canary.trafficRouting.plugins[\"argoproj-labs/gatewayAPI\"]",
            "mutually exclusive",
        ),
        (
            "trafficRouting:\n  plugins:\n    argoproj-labs/gatewayAPI: {httpRoutes: web}\n",
            "spec.strategy.canary.trafficRouting.plugins[\"argoproj-labs/gatewayAPI\"]",
            "cannot be read",
        ),
        (
            "trafficRouting:\n  gatewayAPI: {httpRoute: web, httpRoutes: [{name: web2}]}\n",
            "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoutes",
            "httpRoute and httpRoutes are mutually exclusive",
        ),
        (
            "trafficRouting:\n  gatewayAPI: {namespace: edge}\n",
            "spec.strategy.canary.trafficRouting.gatewayAPI",
            "names no route",
        ),
        (
            "trafficRouting:\n  plugins:\n    argoproj-labs/gatewayAPI:\n      httpRouteSelector: {matchLabels: {app: web}}\n",
            "spec.strategy.canary.trafficRouting.plugins[\"argoproj-labs/gatewayAPI\"].httpRouteSelector",
            "route discovery by label is not supported by Sluice",
        ),
        (
            "trafficRouting:\n  managedRoutes: [{name: Beta_Users}]\n  gatewayAPI: {httpRoute: web}\n",
            "spec.strategy.canary.trafficRouting.managedRoutes[0].name",
            "cannot name a Gateway API route rule",
        ),
        (
            "trafficRouting:\n  managedRoutes: [{name: m}]\n  gatewayAPI: {httpRoute: web}\nsteps:\n- setMirrorRoute: {name: m, match: [{method: {prefix: PO}}]}\n",
            "spec.strategy.canary.steps[0].setMirrorRoute.match[0].method",
            "must be an exact method name",
        ),
    ];
    for (routing, field, message) in cases {
        let r = rollout(&format!(
            "canaryService: web-canary\nstableService: web-stable\n{routing}"
        ));
        let errors = validate_rollout_spec(&r.spec);
        assert!(
            errors
                .iter()
                .any(|e| e.field == *field && e.message.contains(message)),
            "{routing}: expected {field}: {message} in {errors:#?}"
        );
    }
    // Services are required, as with NGINX.
    let r = rollout("trafficRouting:\n  gatewayAPI: {httpRoute: web}\n");
    let errors = validate_rollout_spec(&r.spec);
    assert!(
        errors
            .iter()
            .any(|e| e.field == "spec.strategy.canary.stableService"),
        "{errors:#?}"
    );
    // A valid configuration in either shape has no finding.
    for routing in [
        "trafficRouting:\n  gatewayAPI: {httpRoutes: [{name: web, useHeaderRoutes: true}], grpcRoute: g, namespace: edge}\n",
        "trafficRouting:\n  plugins:\n    argoproj-labs/gatewayAPI: {httpRoute: web, configMap: argo-gatewayapi, mirrorMode: rule}\n",
    ] {
        let r = rollout(&format!(
            "canaryService: web-canary\nstableService: web-stable\n{routing}"
        ));
        assert_eq!(validate_rollout_spec(&r.spec), vec![], "{routing}");
    }
}
