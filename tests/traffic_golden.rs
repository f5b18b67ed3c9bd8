//! Golden tests of the objects and patches the traffic routers produce (pure: no cluster).
//!
//! Each snapshot is the exact thing a router writes: the canary Ingress it creates, or the JSON
//! patch it sends, together with the object that patch produces.

use k8s_openapi::api::networking::v1::Ingress;
use serde_json::json;
use sluice::api::rollout::{
    HeaderRoutingMatch, Rollout, RouteMatch, SetHeaderRoute, SetMirrorRoute, StringMatch,
};
use sluice::plan::ManagedRoutes;
use sluice::traffic::{TrafficError, istio, nginx};
use sluice_test_support::traffic::{desired, patched, yaml};

fn rollout(canary_yaml: &str) -> Rollout {
    sluice_test_support::rollout::canary(canary_yaml)
        .namespace("shop")
        .uid("4d2a6a1e-0000-4000-8000-000000000001")
        .replicas(4)
        .build()
}

const STABLE_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: shop
  resourceVersion: "12"
  annotations:
    kubernetes.io/ingress.class: nginx
    nginx.ingress.kubernetes.io/rewrite-target: /
    team: payments
spec:
  ingressClassName: nginx
  tls:
  - hosts: [shop.example.com]
    secretName: shop-tls
  rules:
  - host: shop.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web-stable, port: {number: 80}}}
      - path: /admin
        pathType: Prefix
        backend: {service: {name: admin, port: {number: 8080}}}
  - host: static.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: cdn, port: {name: http}}}
"#;

const NGINX_ROLLOUT: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  maxTrafficWeight: 1000
  nginx:
    stableIngress: shop
    additionalIngressAnnotations:
      canary-by-header: X-Canary
      canary-by-header-value: always
    canaryIngressAnnotations:
      example.com/owner: payments
steps:
- setWeight: 200
"#;

fn stable_ingress() -> Ingress {
    serde_json::from_value(yaml(STABLE_INGRESS)).unwrap()
}

#[test]
fn nginx_canary_ingress_copies_class_tls_and_only_the_stable_paths() {
    let ingress =
        nginx::canary_ingress_for(&rollout(NGINX_ROLLOUT), &stable_ingress(), 200).unwrap();
    insta::assert_yaml_snapshot!("nginx_canary_ingress", ingress);
}

#[test]
fn nginx_patch_removes_annotations_sluice_no_longer_sets_and_keeps_others() {
    let before = rollout(NGINX_ROLLOUT);
    let mut live = nginx::canary_ingress_for(&before, &stable_ingress(), 200).unwrap();
    live.metadata.resource_version = Some("40".into());
    // Another controller's annotation: not Sluice's to remove.
    live.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("other-controller/seen".into(), "yes".into());

    // The service owner drops the header routing and maxTrafficWeight from Git.
    let after = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx:
    stableIngress: shop
    canaryIngressAnnotations:
      example.com/owner: payments
"#,
    );
    let want = nginx::canary_ingress_for(&after, &stable_ingress(), 30).unwrap();
    let patch = nginx::canary_ingress_update(&live, &want).unwrap();
    let result = patched(&serde_json::to_value(&live).unwrap(), &patch);
    insta::assert_json_snapshot!("nginx_update_patch", patch);
    insta::assert_yaml_snapshot!(
        "nginx_updated_annotations",
        result["metadata"]["annotations"]
    );

    // Applying the result again is a no-op: no write.
    let result: Ingress = serde_json::from_value(result).unwrap();
    assert!(nginx::canary_ingress_update(&result, &want).is_none());
}

#[test]
fn nginx_stable_ingress_without_the_stable_service_is_an_invalid_reference() {
    let mut stable = stable_ingress();
    let rules = stable.spec.as_mut().unwrap().rules.as_mut().unwrap();
    rules.remove(0);
    let err = nginx::canary_ingress_for(&rollout(NGINX_ROLLOUT), &stable, 10).unwrap_err();
    match err {
        TrafficError::InvalidReference { field, message } => {
            assert_eq!(
                field,
                "spec.strategy.canary.trafficRouting.nginx.stableIngress"
            );
            assert_eq!(
                message,
                "ingress 'shop' has no path with backend service 'web-stable'"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

const HOST_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: shop
  resourceVersion: "7"
spec:
  hosts: [web.example.com]
  gateways: [shop-gateway]
  http:
  - name: primary
    match:
    - uri: {prefix: /}
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}
    timeout: 10s
    route:
    - destination: {host: web-stable.shop.svc.cluster.local, port: {number: 80}}
      weight: 90
    - destination: {host: web-canary, port: {number: 80}}
      weight: 0
    - destination: {host: web-legacy, port: {number: 80}}
      weight: 10
    headers:
      request:
        set: {x-route: primary}
  - name: other
    route:
    - destination: {host: docs}
"#;

const HOST_ROLLOUT: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  istio:
    virtualService:
      name: web
      routes: [primary]
"#;

#[test]
fn istio_host_level_changes_only_the_two_managed_weights() {
    let r = rollout(HOST_ROLLOUT);
    let live = yaml(HOST_VS);
    let patch = istio::virtual_service_patch(&r, &live, &desired(30))
        .unwrap()
        .unwrap();
    insta::assert_json_snapshot!("istio_host_patch", patch);
    let result = patched(&live, &patch);
    insta::assert_yaml_snapshot!("istio_host_vs", result);
    assert_eq!(
        istio::virtual_service_weight(&r, &result).unwrap(),
        Some(30)
    );
    // Idempotent: the result needs no further write.
    assert!(
        istio::virtual_service_patch(&r, &result, &desired(30))
            .unwrap()
            .is_none()
    );
}

const SUBSET_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: shop
  resourceVersion: "8"
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: stable}
      weight: 85
    - destination: {host: web, subset: canary}
      weight: 0
    - destination: {host: web, subset: preview}
      weight: 15
"#;

const SUBSET_DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: web
  namespace: shop
  resourceVersion: "9"
spec:
  host: web
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - name: canary
    labels: {app: web}
  - name: stable
    labels: {app: web, rollouts-pod-template-hash: 6d4f8c7b9}
  - name: preview
    labels: {app: web, track: preview}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 10}}
"#;

const SUBSET_ROLLOUT: &str = r#"
trafficRouting:
  istio:
    virtualService: {name: web}
    destinationRule:
      name: web
      canarySubsetName: canary
      stableSubsetName: stable
      additionalSubsetNames: [preview]
"#;

#[test]
fn istio_subset_level_keeps_additional_subsets_and_their_weight() {
    let r = rollout(SUBSET_ROLLOUT);
    let live = yaml(SUBSET_VS);
    let patch = istio::virtual_service_patch(&r, &live, &desired(40))
        .unwrap()
        .unwrap();
    insta::assert_json_snapshot!("istio_subset_vs_patch", patch);
    let result = patched(&live, &patch);
    let route = &result["spec"]["http"][0]["route"];
    assert_eq!(
        route[0]["weight"], 45,
        "stable gets what canary and preview leave"
    );
    assert_eq!(route[1]["weight"], 40);
    assert_eq!(
        route[2]["weight"], 15,
        "an additional subset keeps its weight"
    );
}

#[test]
fn istio_destination_rule_subsets_get_hashes_and_lose_them_on_release() {
    let r = rollout(SUBSET_ROLLOUT);
    let live = yaml(SUBSET_DR);
    let mut want = desired(0);
    want.canary_hash = Some("7f9c5d6b8".into());
    want.stable_hash = Some("6d4f8c7b9".into());
    let patch = istio::destination_rule_patch(&r, &live, &want)
        .unwrap()
        .unwrap();
    insta::assert_json_snapshot!("istio_dr_patch", patch);
    let result = patched(&live, &patch);
    insta::assert_yaml_snapshot!("istio_dr", result);

    let release = istio::destination_rule_release_patch(&r, &result)
        .unwrap()
        .unwrap();
    insta::assert_json_snapshot!("istio_dr_release_patch", release);
    let released = patched(&result, &release);
    assert_eq!(
        released["spec"]["subsets"][0]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(
        released["spec"]["subsets"][1]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(released["spec"]["subsets"][2], live["spec"]["subsets"][2]);
}

#[test]
fn istio_unknown_subset_is_an_invalid_reference() {
    let r = rollout(
        r#"
trafficRouting:
  istio:
    virtualService: {name: web}
    destinationRule: {name: web, canarySubsetName: next, stableSubsetName: stable}
"#,
    );
    let err = istio::destination_rule_patch(&r, &yaml(SUBSET_DR), &desired(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.strategy.canary.trafficRouting.istio.destinationRule: subset 'next' not found in destinationrule 'web'"
    );
    let err = istio::virtual_service_patch(&r, &yaml(SUBSET_VS), &desired(10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.strategy.canary.trafficRouting.istio.virtualService: canary destinationrule subset 'next' not found in http route 0 of virtualservice 'web'"
    );
}

const TLS_TCP_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: edge
  namespace: shop
  resourceVersion: "3"
spec:
  hosts: [shop.example.com, api.example.com]
  tls:
  - match:
    - port: 443
      sniHosts: [shop.example.com]
    route:
    - destination: {host: web-stable, port: {number: 8443}}
      weight: 100
    - destination: {host: web-canary, port: {number: 8443}}
      weight: 0
  - match:
    - port: 443
      sniHosts: [api.example.com]
    route:
    - destination: {host: api}
  tcp:
  - match:
    - port: 5432
    route:
    - destination: {host: web-stable, port: {number: 5432}}
      weight: 100
    - destination: {host: web-canary, port: {number: 5432}}
  - match:
    - port: 6379
    route:
    - destination: {host: cache}
"#;

#[test]
fn istio_tls_routes_by_port_and_sni_and_tcp_routes_by_port() {
    let r = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  istio:
    virtualService:
      name: edge
      tlsRoutes:
      - port: 443
        sniHosts: [shop.example.com]
      tcpRoutes:
      - port: 5432
"#,
    );
    let live = yaml(TLS_TCP_VS);
    let patch = istio::virtual_service_patch(&r, &live, &desired(25))
        .unwrap()
        .unwrap();
    insta::assert_json_snapshot!("istio_tls_tcp_patch", patch);
    let result = patched(&live, &patch);
    assert_eq!(result["spec"]["tls"][1], live["spec"]["tls"][1]);
    assert_eq!(result["spec"]["tcp"][1], live["spec"]["tcp"][1]);
}

#[test]
fn istio_tls_route_selection_needs_the_same_sni_host_set() {
    let r = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  istio:
    virtualService:
      name: edge
      tlsRoutes:
      - port: 443
        sniHosts: [shop.example.com, api.example.com]
"#,
    );
    let err = istio::virtual_service_patch(&r, &yaml(TLS_TCP_VS), &desired(25)).unwrap_err();
    assert!(
        err.to_string().contains("tlsRoutes[0] (port 443, sniHosts [shop.example.com, api.example.com]) matches no tls route in virtualservice 'edge'"),
        "{err}"
    );
}

const MANAGED_ROLLOUT: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  managedRoutes:
  - name: mirror-checkout
  - name: beta-users
  istio:
    virtualService:
      name: web
      routes: [primary]
"#;

fn managed_routes() -> ManagedRoutes {
    ManagedRoutes {
        header_routes: vec![SetHeaderRoute {
            name: "beta-users".into(),
            match_: vec![HeaderRoutingMatch {
                header_name: "x-beta".into(),
                header_value: StringMatch {
                    exact: Some("true".into()),
                    ..Default::default()
                },
            }],
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
fn istio_managed_routes_go_first_in_declared_order_and_are_removed_when_not_wanted() {
    let r = rollout(MANAGED_ROLLOUT);
    let live = yaml(HOST_VS);
    let mut want = desired(20);
    want.managed_routes = managed_routes();
    let patch = istio::virtual_service_patch(&r, &live, &want)
        .unwrap()
        .unwrap();
    let with_routes = patched(&live, &patch);
    insta::assert_yaml_snapshot!("istio_managed_routes_vs", with_routes["spec"]["http"]);
    let names: Vec<&str> = with_routes["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mirror-checkout", "beta-users", "primary", "other"]);

    // End of the rollout (or abort): no managed routes wanted.
    let removal = istio::virtual_service_patch(&r, &with_routes, &desired(0))
        .unwrap()
        .unwrap();
    let without = patched(&with_routes, &removal);
    let mut expected = live.clone();
    expected["spec"]["http"][0]["route"][0]["weight"] = json!(90);
    expected["spec"]["http"][0]["route"][1]["weight"] = json!(0);
    expected["metadata"]["annotations"] = json!({"rollout.sluice.dev/managed-by-rollouts": "web"});
    assert_eq!(without, expected);
}

#[test]
fn istio_release_returns_all_traffic_to_stable_and_removes_what_sluice_added() {
    let r = rollout(MANAGED_ROLLOUT);
    let live = yaml(HOST_VS);
    let mut want = desired(60);
    want.managed_routes = managed_routes();
    let during = patched(
        &live,
        &istio::virtual_service_patch(&r, &live, &want)
            .unwrap()
            .unwrap(),
    );
    let release = istio::virtual_service_release_patch(&r, &during)
        .unwrap()
        .unwrap();
    insta::assert_json_snapshot!("istio_release_patch", release);
    assert_eq!(patched(&during, &release), live);
}

#[test]
fn one_router_per_provider_and_the_objects_they_depend_on() {
    use sluice::traffic::{IstioApiVersion, RoutingConfig, routers_for, watched_objects};
    let config = RoutingConfig {
        istio_api_version: IstioApiVersion::V1beta1,
    };
    let both = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx: {stableIngress: shop}
  istio:
    virtualServices: [{name: web}, {name: edge.gateways.svc.cluster.local}]
    destinationRule: {name: web, canarySubsetName: canary, stableSubsetName: stable}
"#,
    );
    let names: Vec<&str> = routers_for(&both, &config)
        .iter()
        .map(|r| r.name())
        .collect();
    assert_eq!(names, ["nginx", "istio"]);
    let watched: Vec<String> = watched_objects(&both, &config)
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
            "networking.istio.io/v1beta1 shop/web DestinationRule",
            "networking.istio.io/v1beta1 gateways/edge VirtualService",
            "networking.istio.io/v1beta1 shop/web VirtualService",
            "networking.k8s.io/v1 shop/shop Ingress",
            "networking.k8s.io/v1 shop/web-shop-canary Ingress",
        ]
    );

    let basic = rollout("canaryService: web-canary\nstableService: web-stable\n");
    let names: Vec<&str> = routers_for(&basic, &config)
        .iter()
        .map(|r| r.name())
        .collect();
    assert_eq!(names, ["none"]);
    assert!(watched_objects(&basic, &config).is_empty());
}
