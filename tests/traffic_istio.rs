//! The Istio router against the test cluster, with the real kube-rs client.

use std::sync::Arc;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice::api::rollout::{
    HeaderRoutingMatch, Rollout, RouteMatch, SetHeaderRoute, SetMirrorRoute, StringMatch,
};
use sluice::plan::ManagedRoutes;
use sluice::traffic::{
    DesiredTraffic, IstioApiVersion, RouterContext, RoutingConfig, TrafficError, TrafficRouter,
    routers_for, watched_objects,
};
use sluice_e2e::{Fault, WriteRecord};
use sluice_test_support::controller::{Setup, Target, skip_on_real_cluster};

const NS: &str = "default";

fn rollout(canary_yaml: &str) -> Rollout {
    sluice_test_support::rollout::canary(canary_yaml)
        .namespace(NS)
        .uid("9f0e0d0c-1111-4222-8333-444455556666")
        .replicas(2)
        .build()
}

fn ar(version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "networking.istio.io".into(),
        version: version.into(),
        api_version: format!("networking.istio.io/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

struct Env {
    cluster: Target,
    vs: Api<DynamicObject>,
    dr: Api<DynamicObject>,
}

impl Env {
    async fn start() -> Self {
        let cluster = Target::start(Setup {
            simulation: false,
            pod_ready_delay: None,
            crds: false,
            istio: true,
        })
        .await;
        let client = cluster.client();
        let ns = cluster.ns.clone();
        Env {
            vs: Api::namespaced_with(
                client.clone(),
                &ns,
                &ar("v1", "VirtualService", "virtualservices"),
            ),
            dr: Api::namespaced_with(
                client,
                &ns,
                &ar("v1", "DestinationRule", "destinationrules"),
            ),
            cluster,
        }
    }

    async fn create(&self, api: &Api<DynamicObject>, yaml: &str) {
        let mut obj: DynamicObject = serde_yaml::from_str(yaml).unwrap();
        // The namespace comes from the API: the test's own.
        obj.metadata.namespace = None;
        api.create(&PostParams::default(), &obj).await.unwrap();
    }

    async fn get(&self, api: &Api<DynamicObject>, name: &str) -> Value {
        serde_json::to_value(api.get(name).await.unwrap()).unwrap()
    }

    fn ctx(&self, r: &Rollout) -> RouterContext {
        let mut r = r.clone();
        r.metadata.namespace = Some(self.cluster.ns.clone());
        RouterContext {
            client: self.cluster.client(),
            rollout: Arc::new(r),
            namespace: self.cluster.ns.clone(),
            cache: None,
        }
    }

    /// Writes of Istio objects since the last `clear_writes`.
    fn istio_writes(&self) -> Vec<WriteRecord> {
        self.cluster
            .controls()
            .writes()
            .into_iter()
            .filter(|w| w.group == "networking.istio.io")
            .collect()
    }
}

fn router(r: &Rollout, config: &RoutingConfig) -> Box<dyn TrafficRouter> {
    let mut routers = routers_for(r, config);
    assert_eq!(routers.len(), 1);
    let router = routers.remove(0);
    assert_eq!(router.name(), "istio");
    router
}

fn weight(w: i32) -> DesiredTraffic {
    DesiredTraffic {
        weight: w,
        max_weight: 100,
        canary_hash: None,
        stable_hash: None,
        legacy_label_hashes: Vec::new(),
        managed_routes: ManagedRoutes::default(),
    }
}

/// The spec with only the weights of the canary and stable destinations blanked out, to compare
/// "everything else" before and after.
fn without_managed_weights(mut vs: Value, route_ptrs: &[&str]) -> Value {
    for ptr in route_ptrs {
        if let Some(w) = vs.pointer_mut(ptr) {
            *w = Value::Null;
        }
    }
    vs["spec"].take()
}

const HOST_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  gateways: [mesh]
  http:
  - name: primary
    retries: {attempts: 3, perTryTimeout: 2s}
    timeout: 5s
    route:
    - destination: {host: web-stable, port: {number: 80}}
      weight: 95
    - destination: {host: web-canary, port: {number: 80}}
      weight: 0
    - destination: {host: web-shadow, port: {number: 80}}
      weight: 5
  - name: docs
    route:
    - destination: {host: docs}
"#;

const HOST_ROLLOUT: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  istio:
    virtualService: {name: web, routes: [primary]}
"#;

#[tokio::test]
async fn host_level_split_patches_only_the_two_weights_and_is_idempotent() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::start().await;
    env.create(&env.vs, HOST_VS).await;
    let before = env.get(&env.vs, "web").await;
    env.cluster.controls().clear_writes();
    let r = rollout(HOST_ROLLOUT);
    let ctx = env.ctx(&r);
    let router = router(&r, &RoutingConfig::default());

    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(0));
    router.apply(&ctx, &weight(30)).await.unwrap();
    let after = env.get(&env.vs, "web").await;
    assert_eq!(after["spec"]["http"][0]["route"][0]["weight"], 65);
    assert_eq!(after["spec"]["http"][0]["route"][1]["weight"], 30);
    assert_eq!(
        after["spec"]["http"][0]["route"][2]["weight"], 5,
        "other destination kept"
    );
    let ptrs = ["/spec/http/0/route/0/weight", "/spec/http/0/route/1/weight"];
    assert_eq!(
        without_managed_weights(after.clone(), &ptrs),
        without_managed_weights(before, &ptrs),
        "retries, timeout, other routes and destinations preserved"
    );
    assert_eq!(
        after["metadata"]["annotations"]["rollout.sluice.dev/managed-by-rollouts"],
        "web"
    );
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(30));

    let writes = env.istio_writes();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    let w = &writes[0];
    assert_eq!((w.verb.as_str(), w.code), ("patch", 200));
    assert_eq!(
        w.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(w.field_manager.as_deref(), Some("sluice"));
    let body = w.body.as_ref().unwrap();
    assert_eq!(body[0]["op"], "test");
    assert_eq!(body[0]["path"], "/metadata/resourceVersion");

    env.cluster.controls().clear_writes();
    router.apply(&ctx, &weight(30)).await.unwrap();
    assert!(env.istio_writes().is_empty(), "second apply makes no write");

    // Drift: a GitOps sync puts the Git weights back. The next apply corrects it.
    env.vs
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"http": [
                {"name": "primary", "retries": {"attempts": 3, "perTryTimeout": "2s"}, "timeout": "5s",
                 "route": [
                    {"destination": {"host": "web-stable", "port": {"number": 80}}, "weight": 95},
                    {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 0},
                    {"destination": {"host": "web-shadow", "port": {"number": 80}}, "weight": 5}]},
                {"name": "docs", "route": [{"destination": {"host": "docs"}}]}
            ]}})),
        )
        .await
        .unwrap();
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(0));
    router.apply(&ctx, &weight(30)).await.unwrap();
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(30));
}

const SUBSET_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: stable}
      weight: 90
    - destination: {host: web, subset: canary}
      weight: 0
    - destination: {host: web, subset: preview}
      weight: 10
"#;

const SUBSET_DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - name: stable
    labels: {app: web}
  - name: canary
    labels: {app: web}
  - name: preview
    labels: {app: web, track: preview}
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

fn subset_hash(dr: &Value, subset: usize) -> Option<&str> {
    dr["spec"]["subsets"][subset]["labels"][sluice::api::constants::POD_TEMPLATE_HASH_LABEL]
        .as_str()
}

#[tokio::test]
async fn subset_level_split_moves_hashes_keeps_additional_subsets_and_restores_on_abort() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::start().await;
    env.create(&env.vs, SUBSET_VS).await;
    env.create(&env.dr, SUBSET_DR).await;
    let r = rollout(SUBSET_ROLLOUT);
    let ctx = env.ctx(&r);
    let router = router(&r, &RoutingConfig::default());

    // Steady state: both subsets on the stable hash.
    let mut desired = weight(0);
    desired.stable_hash = Some("stable1".into());
    desired.canary_hash = Some("stable1".into());
    router.apply(&ctx, &desired).await.unwrap();
    // The canary's ReplicaSet is not available yet: no canary hash, the subset stays.
    desired.canary_hash = None;
    router.apply(&ctx, &desired).await.unwrap();
    let dr = env.get(&env.dr, "web").await;
    assert_eq!(subset_hash(&dr, 0), Some("stable1"));
    assert_eq!(subset_hash(&dr, 1), Some("stable1"));

    // Canary available: subset moves, then the weight.
    env.cluster.controls().clear_writes();
    desired.canary_hash = Some("canary2".into());
    desired.weight = 40;
    router.apply(&ctx, &desired).await.unwrap();
    let order: Vec<String> = env
        .istio_writes()
        .iter()
        .map(|w| w.resource.clone())
        .collect();
    assert_eq!(order, ["destinationrules", "virtualservices"]);
    let dr = env.get(&env.dr, "web").await;
    assert_eq!(subset_hash(&dr, 1), Some("canary2"));
    assert_eq!(
        dr["spec"]["subsets"][2],
        json!({"name": "preview", "labels": {"app": "web", "track": "preview"}})
    );
    assert_eq!(
        dr["spec"]["trafficPolicy"],
        json!({"loadBalancer": {"simple": "ROUND_ROBIN"}})
    );
    let vs = env.get(&env.vs, "web").await;
    let route = &vs["spec"]["http"][0]["route"];
    assert_eq!(
        (
            route[0]["weight"].as_i64(),
            route[1]["weight"].as_i64(),
            route[2]["weight"].as_i64()
        ),
        (Some(50), Some(40), Some(10))
    );
    assert_eq!(
        route[2]["destination"]["subset"], "preview",
        "additional subset never dropped"
    );

    // Abort: weight 0, and the canary subset back on live stable pods.
    desired.weight = 0;
    desired.canary_hash = Some("stable1".into());
    router.apply(&ctx, &desired).await.unwrap();
    let dr = env.get(&env.dr, "web").await;
    assert_eq!(subset_hash(&dr, 1), Some("stable1"));
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(0));

    // Deletion: subset labels removed, all traffic to stable.
    router.cleanup(&ctx).await.unwrap();
    let dr = env.get(&env.dr, "web").await;
    assert_eq!(subset_hash(&dr, 0), None);
    assert_eq!(subset_hash(&dr, 1), None);
    assert_eq!(dr["spec"]["subsets"][0]["labels"], json!({"app": "web"}));
    assert!(
        dr["metadata"]["annotations"]
            .get("rollout.sluice.dev/managed-by-rollouts")
            .is_none()
    );
    let vs = env.get(&env.vs, "web").await;
    assert_eq!(vs["spec"]["http"][0]["route"][0]["weight"], 90);
    assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 0);
}

#[tokio::test]
async fn tls_and_tcp_routes_are_weighted_by_port_and_sni() {
    let env = Env::start().await;
    env.create(
        &env.vs,
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: [shop.example.com]
  tls:
  - match: [{port: 443, sniHosts: [shop.example.com]}]
    route:
    - destination: {host: web-stable}
      weight: 100
    - destination: {host: web-canary}
      weight: 0
  - match: [{port: 443, sniHosts: [other.example.com]}]
    route:
    - destination: {host: other}
  tcp:
  - match: [{port: 5432}]
    route:
    - destination: {host: web-stable}
      weight: 100
    - destination: {host: web-canary}
      weight: 0
"#,
    )
    .await;
    let r = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  istio:
    virtualService:
      name: edge
      tlsRoutes: [{port: 443, sniHosts: [shop.example.com]}]
      tcpRoutes: [{port: 5432}]
"#,
    );
    let ctx = env.ctx(&r);
    let router = router(&r, &RoutingConfig::default());
    router.apply(&ctx, &weight(15)).await.unwrap();
    let vs = env.get(&env.vs, "edge").await;
    for kind in ["tls", "tcp"] {
        assert_eq!(vs["spec"][kind][0]["route"][0]["weight"], 85, "{kind}");
        assert_eq!(vs["spec"][kind][0]["route"][1]["weight"], 15, "{kind}");
    }
    assert_eq!(
        vs["spec"]["tls"][1]["route"],
        json!([{"destination": {"host": "other"}}])
    );
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(15));
}

#[tokio::test]
async fn two_virtual_services_move_together_and_a_missing_one_blocks_both() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::start().await;
    env.create(&env.vs, HOST_VS).await;
    env.create(
        &env.vs,
        &HOST_VS.replace("name: web,", "name: web-internal,"),
    )
    .await;
    let r = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  istio:
    virtualServices:
    - {name: web, routes: [primary]}
    - {name: web-internal, routes: [primary]}
"#,
    );
    let ctx = env.ctx(&r);
    let both = router(&r, &RoutingConfig::default());
    both.apply(&ctx, &weight(20)).await.unwrap();
    for name in ["web", "web-internal"] {
        let vs = env.get(&env.vs, name).await;
        assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 20, "{name}");
    }
    let names: Vec<String> = watched_objects(&r, &RoutingConfig::default())
        .into_iter()
        .map(|w| format!("{}/{}", w.kind, w.name))
        .collect();
    assert_eq!(names, ["VirtualService/web", "VirtualService/web-internal"]);

    // A third, missing VirtualService: an invalid reference, and nothing written anywhere.
    let broken = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  istio:
    virtualServices:
    - {name: web, routes: [primary]}
    - {name: web-gone, routes: [primary]}
"#,
    );
    env.cluster.controls().clear_writes();
    let err = router(&broken, &RoutingConfig::default())
        .apply(&env.ctx(&broken), &weight(50))
        .await
        .unwrap_err();
    match err {
        TrafficError::InvalidReference { field, message } => {
            assert_eq!(
                field,
                "spec.strategy.canary.trafficRouting.istio.virtualServices[1]"
            );
            assert_eq!(
                message,
                "virtualservice 'web-gone' not found in namespace 'default'"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(env.istio_writes().is_empty());
    let observed = router(&broken, &RoutingConfig::default())
        .observe(&env.ctx(&broken))
        .await
        .unwrap_err();
    assert!(
        observed
            .to_string()
            .contains("virtualservice 'web-gone' not found"),
        "{observed}"
    );
}

#[tokio::test]
async fn observe_checks_routes_and_subsets() {
    let env = Env::start().await;
    env.create(&env.vs, SUBSET_VS).await;
    env.create(&env.dr, SUBSET_DR).await;
    let wrong_subset =
        rollout(&SUBSET_ROLLOUT.replace("canarySubsetName: canary", "canarySubsetName: next"));
    let err = router(&wrong_subset, &RoutingConfig::default())
        .observe(&env.ctx(&wrong_subset))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.strategy.canary.trafficRouting.istio.destinationRule: subset 'next' not found in destinationrule 'web'"
    );
    let wrong_route = rollout(&SUBSET_ROLLOUT.replace(
        "virtualService: {name: web}",
        "virtualService: {name: web, routes: [api]}",
    ));
    let err = router(&wrong_route, &RoutingConfig::default())
        .observe(&env.ctx(&wrong_route))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.strategy.canary.trafficRouting.istio.virtualService: http route 'api' not found in virtualservice 'web'"
    );
}

#[tokio::test]
async fn conflicts_are_recomputed_from_a_fresh_read() {
    if skip_on_real_cluster("needs fault injection") {
        return;
    }
    let env = Env::start().await;
    env.create(&env.vs, HOST_VS).await;
    let r = rollout(HOST_ROLLOUT);
    let ctx = env.ctx(&r);
    let router = router(&r, &RoutingConfig::default());
    env.cluster.controls().clear_writes();
    env.cluster.controls().inject(
        Fault::fail(409)
            .verb("patch")
            .resource("virtualservices")
            .times(1),
    );
    router.apply(&ctx, &weight(10)).await.unwrap();
    let codes: Vec<u16> = env.istio_writes().iter().map(|w| w.code).collect();
    assert_eq!(codes, [409, 200]);
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(10));

    // Persistent conflicts end up with the controller as a Conflict error (it retries later).
    env.cluster.controls().inject(
        Fault::fail(409)
            .verb("patch")
            .resource("virtualservices")
            .times(100),
    );
    let err = router.apply(&ctx, &weight(20)).await.unwrap_err();
    assert!(matches!(err, TrafficError::Conflict { .. }), "{err:?}");
    env.cluster.controls().clear_faults();
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(10));
}

#[tokio::test]
async fn a_stale_resource_version_fails_the_test_and_the_patch_is_recomputed() {
    if skip_on_real_cluster("needs fault injection") {
        return;
    }
    let env = Env::start().await;
    env.create(&env.vs, HOST_VS).await;
    let r = rollout(HOST_ROLLOUT);
    let ctx = env.ctx(&r);
    let router = router(&r, &RoutingConfig::default());
    // Between the router's read and its patch another writer changes the object: the router's
    // patch is held at the server, and the other write goes in while it waits.
    env.cluster.controls().inject(
        Fault::hang(std::time::Duration::from_secs(5))
            .verb("patch")
            .resource("virtualservices")
            .identity("sluice-under-test")
            .times(1),
    );
    let ctx = RouterContext {
        client: env
            .cluster
            .controls()
            .client_as("sluice-under-test")
            .unwrap(),
        ..ctx
    };
    let racer = async {
        // The fault is consumed when the router's patch arrives (after its read).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while !env.cluster.controls().pending_faults().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the router never patched"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        env.vs
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
            )
            .await
            .unwrap();
    };
    let desired = weight(35);
    let (result, ()) = tokio::join!(router.apply(&ctx, &desired), racer);
    result.unwrap();
    let codes: Vec<(Option<String>, u16)> = env
        .istio_writes()
        .iter()
        .map(|w| (w.identity.clone(), w.code))
        .collect();
    assert!(
        codes.contains(&(Some("sluice-under-test".into()), 422)),
        "{codes:?}"
    );
    let vs = env.get(&env.vs, "web").await;
    assert_eq!(
        vs["metadata"]["labels"]["touched"], "yes",
        "the other write is kept"
    );
    assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 35);
}

const MANAGED_ROLLOUT: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  managedRoutes: [{name: header-beta}, {name: mirror-post}]
  istio:
    virtualService: {name: web, routes: [primary]}
"#;

fn managed() -> ManagedRoutes {
    ManagedRoutes {
        header_routes: vec![SetHeaderRoute {
            name: "header-beta".into(),
            match_: vec![HeaderRoutingMatch {
                header_name: "x-beta".into(),
                header_value: StringMatch {
                    regex: Some("^(1|true)$".into()),
                    ..Default::default()
                },
            }],
        }],
        mirror_routes: vec![SetMirrorRoute {
            name: "mirror-post".into(),
            match_: vec![RouteMatch {
                method: Some(StringMatch {
                    exact: Some("POST".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            percentage: None,
        }],
    }
}

fn route_names(vs: &Value) -> Vec<String> {
    vs["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn header_and_mirror_routes_are_placed_first_and_removed_at_the_end() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::start().await;
    env.create(&env.vs, HOST_VS).await;
    let r = rollout(MANAGED_ROLLOUT);
    let ctx = env.ctx(&r);
    let router = router(&r, &RoutingConfig::default());
    let mut desired = weight(10);
    desired.managed_routes = managed();
    router.apply(&ctx, &desired).await.unwrap();
    let vs = env.get(&env.vs, "web").await;
    assert_eq!(
        route_names(&vs),
        ["header-beta", "mirror-post", "primary", "docs"]
    );
    assert_eq!(
        vs["spec"]["http"][0]["route"],
        json!([{"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 100}])
    );
    assert_eq!(
        vs["spec"]["http"][0]["match"],
        json!([{"headers": {"x-beta": {"regex": "^(1|true)$"}}}])
    );
    assert_eq!(
        vs["spec"]["http"][1]["mirror"],
        json!({"host": "web-canary", "port": {"number": 80}})
    );
    assert_eq!(
        vs["spec"]["http"][1]["mirrorPercentage"],
        json!({"value": 100.0})
    );
    assert_eq!(
        vs["spec"]["http"][1]["route"],
        vs["spec"]["http"][2]["route"]
    );

    env.cluster.controls().clear_writes();
    router.apply(&ctx, &desired).await.unwrap();
    assert!(
        env.istio_writes().is_empty(),
        "managed routes in place: no write"
    );

    // Only the mirror left (a later step removed the header route).
    desired.managed_routes.header_routes.clear();
    desired.weight = 30;
    router.apply(&ctx, &desired).await.unwrap();
    let vs = env.get(&env.vs, "web").await;
    assert_eq!(route_names(&vs), ["mirror-post", "primary", "docs"]);
    assert_eq!(
        vs["spec"]["http"][0]["route"][1]["weight"], 30,
        "mirror route follows the weight"
    );

    // End of the rollout or abort: none wanted.
    router.apply(&ctx, &weight(0)).await.unwrap();
    let vs = env.get(&env.vs, "web").await;
    assert_eq!(route_names(&vs), ["primary", "docs"]);
    assert_eq!(
        vs["spec"]["http"][0]["retries"],
        json!({"attempts": 3, "perTryTimeout": "2s"})
    );
}

#[tokio::test]
async fn cleanup_restores_the_virtual_service() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::start().await;
    env.create(&env.vs, HOST_VS).await;
    let before = env.get(&env.vs, "web").await;
    let r = rollout(MANAGED_ROLLOUT);
    let ctx = env.ctx(&r);
    let router = router(&r, &RoutingConfig::default());
    let mut desired = weight(70);
    desired.managed_routes = managed();
    router.apply(&ctx, &desired).await.unwrap();
    router.cleanup(&ctx).await.unwrap();
    let after = env.get(&env.vs, "web").await;
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(
        after["metadata"].get("annotations"),
        before["metadata"].get("annotations")
    );
    env.cluster.controls().clear_writes();
    router.cleanup(&ctx).await.unwrap();
    assert!(
        env.istio_writes().is_empty(),
        "cleaning up twice writes nothing"
    );
}

#[tokio::test]
async fn older_istio_api_versions_are_used_when_configured() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::start().await;
    env.create(&env.vs, HOST_VS).await;
    let r = rollout(HOST_ROLLOUT);
    let config = RoutingConfig {
        istio_api_version: "v1alpha3".parse::<IstioApiVersion>().unwrap(),
    };
    let router = router(&r, &config);
    env.cluster.controls().clear_writes();
    router.apply(&env.ctx(&r), &weight(5)).await.unwrap();
    let writes = env.istio_writes();
    assert_eq!(writes.len(), 1);
    assert!(
        writes[0].uri.starts_with(
            "/apis/networking.istio.io/v1alpha3/namespaces/default/virtualservices/web"
        ),
        "{}",
        writes[0].uri
    );
    assert_eq!(watched_objects(&r, &config)[0].version, "v1alpha3");
    assert!("v2".parse::<IstioApiVersion>().is_err());
}

#[tokio::test]
async fn max_traffic_weight_is_refused_with_istio() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::start().await;
    env.create(&env.vs, HOST_VS).await;
    let r = rollout(HOST_ROLLOUT);
    env.cluster.controls().clear_writes();
    let mut desired = weight(500);
    desired.max_weight = 1000;
    let err = router(&r, &RoutingConfig::default())
        .apply(&env.ctx(&r), &desired)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("spec.strategy.canary.trafficRouting.maxTrafficWeight:"),
        "{err}"
    );
    assert!(env.istio_writes().is_empty());
}
