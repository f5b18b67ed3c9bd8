//! Argo Rollouts' Istio e2e scenarios (`test/e2e/istio_test.go` and `mirror_route_test.go` in
//! `argoproj/argo-rollouts`), ported with their manifests (only `apiVersion` and names differ),
//! their actions and their expectations: VirtualService weights, DestinationRule subsets,
//! Service selectors and pods per revision. Each test is named after Argo's.
//! `docs/compat.md` ("Argo e2e scenarios") maps each Argo test to its port.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use sluice::api::constants;
use sluice_test_support::argo::*;
use sluice_test_support::controller::*;
use sluice_test_support::rollout::phase_is;

fn istio_api(env: &Env, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        env.ns(),
        &ApiResource {
            group: "networking.istio.io".into(),
            version: "v1".into(),
            api_version: "networking.istio.io/v1".into(),
            kind: kind.into(),
            plural: plural.into(),
        },
    )
}

async fn create_istio(env: &Env, kind: &str, plural: &str, object: Value) {
    let object: DynamicObject = serde_json::from_value(object).expect("an Istio object");
    istio_api(env, kind, plural)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
}

/// The `spec` of the VirtualService `web`.
async fn vs_spec(env: &Env) -> Value {
    istio_api(env, "VirtualService", "virtualservices")
        .get("web")
        .await
        .expect("VirtualService web")
        .data["spec"]
        .clone()
}

/// The DestinationRule `web`.
async fn destination_rule(env: &Env) -> DynamicObject {
    istio_api(env, "DestinationRule", "destinationrules")
        .get("web")
        .await
        .expect("DestinationRule web")
}

/// The weights of the first route of the `section` (`http` or `tls`) routes at `index`, in
/// the order of its destinations (Argo: `vsvc.Spec.HTTP[i].Route[0].Weight, Route[1]...`).
fn weights(spec: &Value, section: &str, index: usize) -> Vec<i64> {
    spec[section][index]["route"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| d["weight"].as_i64().unwrap_or(0))
        .collect()
}

/// Argo's `assertMirrorDestination`: the weight of the destination `host` in `route`.
fn weight_to(route: &Value, host: &str) -> i64 {
    route["route"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["destination"]["host"] == host)
        .and_then(|d| d["weight"].as_i64())
        .unwrap_or_else(|| panic!("no destination {host} in {route}"))
}

/// The pod-template hash the DestinationRule subset `i` selects.
fn subset_hash(dr: &DynamicObject, i: usize) -> Option<String> {
    dr.data["spec"]["subsets"][i]["labels"][constants::POD_TEMPLATE_HASH_LABEL]
        .as_str()
        .map(str::to_string)
}

async fn healthy(env: &Env) {
    env.wait_for("web", "Healthy", 60, phase_is("Healthy"))
        .await;
}

/// Healthy with revision `revision` as the stable (Argo's `WaitForRolloutStatus("Healthy")`
/// after a promotion: the Rollout is Healthy only once it is on the new revision).
async fn healthy_on(env: &Env, revision: &str) {
    let hash = revision_hash(env, revision).await;
    env.wait_for("web", &format!("Healthy on revision {revision}"), 60, |r| {
        phase(r) == "Healthy" && stable(r).as_deref() == Some(hash.as_str())
    })
    .await;
}

async fn paused(env: &Env) {
    env.wait_for("web", "Paused", 60, phase_is("Paused")).await;
}

const HOST_SPLIT_STEPS: &str = "steps:\n- setWeight: 10\n- pause: {}\n";

/// The host-split VirtualService of Argo's `istio-host-split.yaml` (with `tls`: of
/// `istio-host-http-tls-split.yaml`).
fn host_split_vs(tls: bool) -> Value {
    let route = json!([
        {"destination": {"host": "web-stable"}, "weight": 100},
        {"destination": {"host": "web-canary"}, "weight": 0}
    ]);
    let mut spec = json!({"hosts": ["web"], "http": [{"name": "primary", "route": route}]});
    if tls {
        spec["tls"] = json!([{"match": [{"port": 3000, "sniHosts": ["web"]}], "route": route}]);
    }
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": spec
    })
}

fn host_split_rollout(tls: bool) -> sluice::api::rollout::Rollout {
    let tls_routes = if tls {
        "\n      tlsRoutes:\n      - port: 3000\n        sniHosts: [web]"
    } else {
        ""
    };
    let spec = format!(
        "canaryService: web-canary\nstableService: web-stable\ntrafficRouting:\n  istio:\n    virtualService:\n      name: web\n      routes: [primary]{tls_routes}\n{HOST_SPLIT_STEPS}"
    );
    rollout("web", 1, "web:1", &spec)
}

async fn host_split(tls: bool) {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create_istio(
        &env,
        "VirtualService",
        "virtualservices",
        host_split_vs(tls),
    )
    .await;
    env.create(&host_split_rollout(tls)).await;
    healthy(&env).await;
    let spec = vs_spec(&env).await;
    assert_eq!(weights(&spec, "http", 0), vec![100, 0]);
    if tls {
        assert_eq!(weights(&spec, "tls", 0), vec![100, 0]);
    }
    let rev1 = revision_hash(&env, "1").await;
    assert_eq!(
        service_selects(&env, "web-canary").await,
        Some(rev1.clone())
    );
    assert_eq!(
        service_selects(&env, "web-stable").await,
        Some(rev1.clone())
    );

    update_spec(&env, "web").await;
    paused(&env).await;
    let spec = vs_spec(&env).await;
    assert_eq!(weights(&spec, "http", 0), vec![90, 10]);
    if tls {
        assert_eq!(weights(&spec, "tls", 0), vec![90, 10]);
    }
    let rev2 = revision_hash(&env, "2").await;
    assert_eq!(
        service_selects(&env, "web-canary").await,
        Some(rev2.clone())
    );
    assert_eq!(
        service_selects(&env, "web-stable").await,
        Some(rev1.clone())
    );

    env.promote("web").await;
    healthy_on(&env, "2").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spec = vs_spec(&env).await;
    assert_eq!(weights(&spec, "http", 0), vec![100, 0]);
    if tls {
        assert_eq!(weights(&spec, "tls", 0), vec![100, 0]);
    }
    assert_eq!(
        service_selects(&env, "web-canary").await,
        Some(rev2.clone())
    );
    assert_eq!(service_selects(&env, "web-stable").await, Some(rev2));
    // Within scaleDownDelaySeconds, the previous stable keeps its pod.
    expect_revision_pod_count(&env, "1", 1).await;
}

/// Argo: `IstioSuite.TestIstioHostSplit`, first case (fixture `istio/istio-host-split.yaml`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_host_split() {
    host_split(false).await;
}

/// Argo: `IstioSuite.TestIstioHostSplit`, second case (fixture
/// `istio/istio-host-http-tls-split.yaml`): HTTP and TLS routes weighted together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_host_split_http_tls() {
    host_split(true).await;
}

/// The objects of Argo's subset-split fixtures: one Service `web`, a VirtualService `web`
/// routing to its subsets `stable` and `canary` (with a route name `primary` when `named`), and
/// the DestinationRule `web` defining them.
async fn subset_split_objects(env: &Env, named: bool) {
    env.services(&["web"]).await;
    let mut route = json!({"route": [
        {"destination": {"host": "web", "subset": "stable"}, "weight": 100},
        {"destination": {"host": "web", "subset": "canary"}, "weight": 0}
    ]});
    if named {
        route["name"] = json!("primary");
    }
    create_istio(
        env,
        "VirtualService",
        "virtualservices",
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web"},
            "spec": {"hosts": ["web"], "http": [route]}
        }),
    )
    .await;
    create_istio(
        env,
        "DestinationRule",
        "destinationrules",
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "web"},
            "spec": {"host": "web", "subsets": [
                {"name": "stable", "labels": {"app": "web"}},
                {"name": "canary", "labels": {"app": "web"}}
            ]}
        }),
    )
    .await;
}

/// Subset-level routing without canary and stable Services, as Argo's fixtures have it.
fn subset_split_rollout(routes: &str, extra: &str, steps: &str) -> String {
    format!(
        r#"{extra}trafficRouting:
  istio:
    virtualService:
      name: web{routes}
    destinationRule:
      name: web
      canarySubsetName: canary
      stableSubsetName: stable
{steps}"#
    )
}

/// Argo's checks of the subset-split tests at the three points of the update.
async fn subset_split_walk(env: &Env) {
    healthy(env).await;
    let spec = vs_spec(env).await;
    assert_eq!(weights(&spec, "http", 0), vec![100, 0]);
    let rev1 = revision_hash(env, "1").await;
    let dr = destination_rule(env).await;
    assert_eq!(subset_hash(&dr, 0), Some(rev1.clone()), "stable subset");
    assert_eq!(subset_hash(&dr, 1), Some(rev1.clone()), "canary subset");

    update_spec(env, "web").await;
    paused(env).await;
    let spec = vs_spec(env).await;
    assert_eq!(weights(&spec, "http", 0), vec![90, 10]);
    let rev2 = revision_hash(env, "2").await;
    let dr = destination_rule(env).await;
    assert_eq!(subset_hash(&dr, 0), Some(rev1), "stable subset");
    assert_eq!(subset_hash(&dr, 1), Some(rev2.clone()), "canary subset");

    env.promote("web").await;
    healthy_on(env, "2").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spec = vs_spec(env).await;
    assert_eq!(weights(&spec, "http", 0), vec![100, 0]);
    let dr = destination_rule(env).await;
    assert_eq!(subset_hash(&dr, 0), Some(rev2.clone()), "stable subset");
    assert_eq!(subset_hash(&dr, 1), Some(rev2), "canary subset");
    // Within scaleDownDelaySeconds, the previous stable keeps its pod.
    expect_revision_pod_count(env, "1", 1).await;
}

/// Argo: `IstioSuite.TestIstioSubsetSplit` (fixture `istio/istio-subset-split.yaml`). Then
/// removing `trafficRouting` gives the DestinationRule back (no managed-by annotation, no
/// pod-template-hash in its subsets) and, as a basic canary, the previous stable goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_subset_split() {
    let env = Env::new().await;
    subset_split_objects(&env, true).await;
    let spec = subset_split_rollout("\n      routes: [primary]", "", HOST_SPLIT_STEPS);
    env.create(&rollout("web", 1, "web:1", &spec)).await;
    subset_split_walk(&env).await;

    env.patch_spec(
        "web",
        json!({"spec": {"strategy": {"canary": {"trafficRouting": null}}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dr = destination_rule(&env).await;
    assert!(
        !dr.annotations()
            .contains_key(constants::MANAGED_BY_ANNOTATION),
        "{:?}",
        dr.annotations()
    );
    assert_eq!(subset_hash(&dr, 0), None);
    assert_eq!(subset_hash(&dr, 1), None);
    expect_revision_pod_count(&env, "1", 0).await;
}

/// Argo: `IstioSuite.TestIstioSubsetSplitSingleRoute` (fixture
/// `istio/istio-subset-split-single-route.yaml`): the VirtualService's only HTTP route is
/// unnamed and the Rollout names no route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_subset_split_single_route() {
    let env = Env::new().await;
    subset_split_objects(&env, false).await;
    let spec = subset_split_rollout("", "", HOST_SPLIT_STEPS);
    env.create(&rollout("web", 1, "web:1", &spec)).await;
    subset_split_walk(&env).await;
}

/// Argo: `IstioSuite.TestIstioAbortUpdate` (fixture `istio/istio-host-split.yaml`). An abort
/// of a Healthy Rollout changes nothing; an abort after the update was promoted neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_abort_update() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create_istio(
        &env,
        "VirtualService",
        "virtualservices",
        host_split_vs(false),
    )
    .await;
    env.create(&host_split_rollout(false)).await;
    healthy(&env).await;
    abort(&env, "web").await;
    healthy(&env).await;
    expect_revision_pod_count(&env, "1", 1).await;
    update_spec(&env, "web").await;
    paused(&env).await;
    env.promote("web").await;
    healthy_on(&env, "2").await;
    abort(&env, "web").await;
    healthy_on(&env, "2").await;
    expect_revision_pod_count(&env, "2", 1).await;
}

/// Argo: `IstioSuite.TestIstioSubsetSplitInStableDownscaleAfterCanaryAbort` (fixture
/// `istio/istio-subset-split-in-stable-downscale-after-canary-abort.yaml`): with
/// `dynamicStableScale`, an aborted update scaled down to 1 replica ends with all traffic on
/// the stable subset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_subset_split_in_stable_downscale_after_canary_abort() {
    let env = Env::new().await;
    subset_split_objects(&env, false).await;
    let steps = "steps:\n- setWeight: 10\n- pause: {}\n- setWeight: 20\n- pause: {}\n- setWeight: 30\n- pause: {}\n- setWeight: 50\n- pause: {}\n";
    let extra = "dynamicStableScale: true\ncanaryMetadata:\n  labels: {role: canary}\nstableMetadata:\n  labels: {role: stable}\nmaxSurge: \"25%\"\nmaxUnavailable: \"20%\"\n";
    let spec = subset_split_rollout("", extra, steps);
    env.create(&rollout("web", 4, "web:1", &spec)).await;
    healthy(&env).await;
    promote_full(&env, "web").await;
    update_spec(&env, "web").await;
    paused(&env).await;
    abort(&env, "web").await;
    env.wait_for("web", "Degraded", 60, phase_is("Degraded"))
        .await;
    scale_rollout(&env, "web", 1).await;
    wait_for_replicas(&env, "web", 1).await;
    let spec = vs_spec(&env).await;
    assert_eq!(weights(&spec, "http", 0), vec![100, 0]);
}

/// Argo: `MirrorRouteSuite.TestIstioHostMirrorRoute` (fixture
/// `mirror-route/istio-mirror-host.yaml`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_istio_host_mirror_route() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create_istio(
        &env,
        "VirtualService",
        "virtualservices",
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web"},
            "spec": {"gateways": ["web-gateway"], "hosts": ["web.example.com"], "http": [
                {"name": "primary", "route": [
                    {"destination": {"host": "web-stable"}, "weight": 80},
                    {"destination": {"host": "web-canary"}, "weight": 20}
                ]}
            ]}
        }),
    )
    .await;
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  managedRoutes:
  - name: mirror-route-1
  - name: mirror-route-2
  istio:
    virtualService: {name: web, routes: [primary]}
steps:
- setWeight: 20
- setMirrorRoute:
    name: mirror-route-1
    percentage: 100
    match:
    - path: {prefix: /}
- setMirrorRoute:
    name: mirror-route-2
    percentage: 80
    match:
    - path: {prefix: /}
      method: {exact: GET}
- pause: {}
- setMirrorRoute:
    name: mirror-route-1
    percentage: 100
    match:
    - path: {prefix: /rewrite}
- pause: {}
- setWeight: 40
- setMirrorRoute:
    name: mirror-route-1
- pause: {}
"#;
    env.create(&rollout("web", 5, "web:1", spec)).await;
    healthy(&env).await;
    assert_eq!(vs_spec(&env).await["http"][0]["name"], "primary");

    update_spec(&env, "web").await;
    paused(&env).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let http = vs_spec(&env).await["http"].clone();
    assert_eq!(http[0]["name"], "mirror-route-1", "{http:#}");
    assert_eq!(http[0]["mirrorPercentage"]["value"].as_f64(), Some(100.0));
    assert_eq!(http[1]["name"], "mirror-route-2");
    assert_eq!(http[1]["mirrorPercentage"]["value"].as_f64(), Some(80.0));
    for route in [&http[0], &http[1], &http[2]] {
        assert_eq!(weight_to(route, "web-stable"), 80, "{route}");
        assert_eq!(weight_to(route, "web-canary"), 20, "{route}");
    }

    env.promote("web").await;
    paused(&env).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.promote("web").await;
    env.wait_for("web", "Paused at the last pause", 60, |r| {
        phase(r) == "Paused" && step(r) == Some(8)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let http = vs_spec(&env).await["http"].clone();
    assert_eq!(http[0]["name"], "mirror-route-2", "{http:#}");
    assert_eq!(weight_to(&http[0], "web-stable"), 60);
    assert_eq!(weight_to(&http[0], "web-canary"), 40);
    assert_eq!(http[1]["name"], "primary");
    assert_eq!(weight_to(&http[1], "web-stable"), 60);
    assert_eq!(weight_to(&http[1], "web-canary"), 40);

    env.patch_status("web", json!({"promoteFull": true})).await;
    healthy_on(&env, "2").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let http = vs_spec(&env).await["http"].clone();
    assert_eq!(http.as_array().map(Vec::len), Some(1), "{http:#}");
    assert_eq!(weight_to(&http[0], "web-stable"), 100);
    assert_eq!(weight_to(&http[0], "web-canary"), 0);
}
