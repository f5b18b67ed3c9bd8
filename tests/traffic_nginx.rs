//! The NGINX router against the test cluster, with the real kube-rs client.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use sluice::api::rollout::Rollout;
use sluice::plan::ManagedRoutes;
use sluice::traffic::{
    DesiredTraffic, RouterContext, RoutingConfig, TrafficError, TrafficRouter, WatchedObject,
    routers_for, watched_objects,
};
use sluice_e2e::{Fault, TestCluster, WriteRecord};
use sluice_test_support::controller::skip_on_real_cluster;

const NS: &str = "default";
const UID: &str = "0c7d8f7e-1111-4222-8333-444455556666";
/// The canary Ingresses are owned by a Rollout these tests never store: a real cluster's garbage
/// collector would delete them while the test looks at them.
const NEEDS_NO_GC: &str =
    "needs a cluster without a garbage collector (the owning Rollout is not stored)";

fn rollout(canary_yaml: &str) -> Rollout {
    sluice_test_support::rollout::canary(canary_yaml)
        .namespace(NS)
        .uid(UID)
        .replicas(2)
        .build()
}

const BASIC: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx:
    stableIngress: shop
"#;

fn ctx(cluster: &TestCluster, r: Rollout) -> RouterContext {
    RouterContext {
        client: cluster.client(),
        rollout: Arc::new(r),
        namespace: NS.into(),
        cache: None,
    }
}

fn router(r: &Rollout) -> Box<dyn TrafficRouter> {
    let mut routers = routers_for(r, &RoutingConfig::default());
    assert_eq!(routers.len(), 1);
    let router = routers.remove(0);
    assert_eq!(router.name(), "nginx");
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

fn stable_ingress(name: &str, service: &str) -> Ingress {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NS,
                     "annotations": {"kubernetes.io/ingress.class": "nginx", "team": "shop"}},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": [format!("{name}.example.com")], "secretName": "tls"}],
            "rules": [{"host": format!("{name}.example.com"), "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"number": 80}}}},
                {"path": "/other", "pathType": "Prefix",
                 "backend": {"service": {"name": "other", "port": {"number": 80}}}}
            ]}}]
        }
    }))
    .unwrap()
}

async fn start() -> (TestCluster, Api<Ingress>) {
    let cluster = TestCluster::builder()
        .without_simulation()
        .start()
        .await
        .unwrap();
    let api: Api<Ingress> = Api::namespaced(cluster.client(), NS);
    (cluster, api)
}

async fn create_stable(api: &Api<Ingress>, name: &str, service: &str) {
    api.create(&PostParams::default(), &stable_ingress(name, service))
        .await
        .unwrap();
}

fn annotations(i: &Ingress) -> BTreeMap<String, String> {
    i.metadata.annotations.clone().unwrap_or_default()
}

fn ingress_writes(cluster: &TestCluster) -> Vec<WriteRecord> {
    cluster
        .writes()
        .into_iter()
        .filter(|w| w.resource == "ingresses")
        .collect()
}

fn invalid(err: TrafficError) -> (String, String) {
    match err {
        TrafficError::InvalidReference { field, message } => (field, message),
        other => panic!("expected an invalid reference, got {other:?}"),
    }
}

#[tokio::test]
async fn creates_the_canary_ingress_updates_its_weight_and_writes_nothing_when_unchanged() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let (cluster, api) = start().await;
    create_stable(&api, "shop", "web-stable").await;
    let stable_before = api.get("shop").await.unwrap();
    cluster.clear_writes();
    let r = rollout(BASIC);
    let ctx = ctx(&cluster, r.clone());
    let router = router(&r);

    assert_eq!(router.observe(&ctx).await.unwrap().weight, None);
    router.apply(&ctx, &weight(0)).await.unwrap();
    let canary = api.get("web-shop-canary").await.unwrap();
    let a = annotations(&canary);
    assert_eq!(a["nginx.ingress.kubernetes.io/canary"], "true");
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "0");
    assert_eq!(a["kubernetes.io/ingress.class"], "nginx");
    assert!(
        !a.contains_key("team"),
        "only the class annotation is copied"
    );
    assert!(!a.contains_key("nginx.ingress.kubernetes.io/canary-weight-total"));
    let owner = &canary.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Rollout", "web", UID)
    );
    assert_eq!(owner.controller, Some(true));
    let spec = canary.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(spec.tls.unwrap()[0].secret_name.as_deref(), Some("tls"));
    let rules = spec.rules.unwrap();
    let paths = &rules[0].http.as_ref().unwrap().paths;
    assert_eq!(paths.len(), 1, "only the path to the stable service");
    assert_eq!(
        paths[0].backend.service.as_ref().unwrap().name,
        "web-canary"
    );
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(0));

    router.apply(&ctx, &weight(25)).await.unwrap();
    let canary = api.get("web-shop-canary").await.unwrap();
    assert_eq!(
        annotations(&canary)["nginx.ingress.kubernetes.io/canary-weight"],
        "25"
    );
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(25));

    let writes = ingress_writes(&cluster);
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_eq!((writes[0].verb.as_str(), writes[0].code), ("create", 201));
    assert_eq!((writes[1].verb.as_str(), writes[1].code), ("patch", 200));
    assert_eq!(
        writes[1].content_type.as_deref(),
        Some("application/json-patch+json")
    );
    for w in &writes {
        assert_eq!(w.field_manager.as_deref(), Some("sluice"));
        let name = w.name.clone().or_else(|| {
            w.body
                .as_ref()
                .and_then(|b| b["metadata"]["name"].as_str().map(str::to_string))
        });
        assert_eq!(name.as_deref(), Some("web-shop-canary"));
    }
    let body = writes[1].body.as_ref().unwrap();
    assert_eq!(body[0]["op"], "test");
    assert_eq!(body[0]["path"], "/metadata/resourceVersion");

    // Same desired state again: not a single write.
    cluster.clear_writes();
    router.apply(&ctx, &weight(25)).await.unwrap();
    router.apply(&ctx, &weight(25)).await.unwrap();
    assert!(
        ingress_writes(&cluster).is_empty(),
        "{:#?}",
        cluster.writes()
    );

    // The user's Ingress was only read.
    assert_eq!(api.get("shop").await.unwrap(), stable_before);
}

#[tokio::test]
async fn annotations_sluice_no_longer_sets_are_removed_and_others_kept() {
    if skip_on_real_cluster(NEEDS_NO_GC) {
        return;
    }
    let (cluster, api) = start().await;
    create_stable(&api, "shop", "web-stable").await;
    let with_header = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  maxTrafficWeight: 1000
  nginx:
    stableIngress: shop
    additionalIngressAnnotations:
      canary-by-header: X-Canary
      canary-by-header-value: "yes"
      canary-by-header-pattern: "^y"
      canary-by-cookie: canary
    canaryIngressAnnotations:
      example.com/team: shop
"#,
    );
    let ctx1 = ctx(&cluster, with_header.clone());
    let mut w = weight(250);
    w.max_weight = 1000;
    router(&with_header).apply(&ctx1, &w).await.unwrap();
    let a = annotations(&api.get("web-shop-canary").await.unwrap());
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header"],
        "X-Canary"
    );
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header-value"],
        "yes"
    );
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header-pattern"],
        "^y"
    );
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-by-cookie"], "canary");
    assert_eq!(a["example.com/team"], "shop");
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "250");
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight-total"], "1000");

    // Someone else annotates the canary Ingress.
    api.patch(
        "web-shop-canary",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"monitoring/scrape": "true"}}})),
    )
    .await
    .unwrap();

    // Git drops the header routing and maxTrafficWeight.
    let plain = rollout(BASIC);
    let ctx2 = ctx(&cluster, plain.clone());
    router(&plain).apply(&ctx2, &weight(25)).await.unwrap();
    let a = annotations(&api.get("web-shop-canary").await.unwrap());
    for gone in [
        "nginx.ingress.kubernetes.io/canary-by-header",
        "nginx.ingress.kubernetes.io/canary-by-header-value",
        "nginx.ingress.kubernetes.io/canary-by-header-pattern",
        "nginx.ingress.kubernetes.io/canary-by-cookie",
        "nginx.ingress.kubernetes.io/canary-weight-total",
        "example.com/team",
    ] {
        assert!(!a.contains_key(gone), "{gone} should be removed: {a:?}");
    }
    assert_eq!(a["monitoring/scrape"], "true", "not Sluice's annotation");
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "25");
}

#[tokio::test]
async fn custom_annotation_prefix_is_used_for_every_canary_annotation() {
    if skip_on_real_cluster(NEEDS_NO_GC) {
        return;
    }
    let (cluster, api) = start().await;
    create_stable(&api, "shop", "web-stable").await;
    let r = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx:
    stableIngress: shop
    annotationPrefix: custom.nginx.org
    additionalIngressAnnotations:
      canary-by-header: X-Canary
      custom.nginx.org/canary-by-cookie: beta
"#,
    );
    let ctx = ctx(&cluster, r.clone());
    let router = router(&r);
    router.apply(&ctx, &weight(5)).await.unwrap();
    let a = annotations(&api.get("web-shop-canary").await.unwrap());
    assert_eq!(a["custom.nginx.org/canary"], "true");
    assert_eq!(a["custom.nginx.org/canary-weight"], "5");
    assert_eq!(a["custom.nginx.org/canary-by-header"], "X-Canary");
    assert_eq!(a["custom.nginx.org/canary-by-cookie"], "beta");
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(5));
}

#[tokio::test]
async fn missing_stable_ingress_is_an_invalid_reference_and_writes_nothing() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let (cluster, api) = start().await;
    create_stable(&api, "shop", "web-stable").await;
    cluster.clear_writes();
    let r = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx:
    stableIngresses: [shop, missing]
"#,
    );
    let err = router(&r)
        .apply(&ctx(&cluster, r.clone()), &weight(10))
        .await
        .unwrap_err();
    let (field, message) = invalid(err);
    assert_eq!(
        field,
        "spec.strategy.canary.trafficRouting.nginx.stableIngresses[1]"
    );
    assert_eq!(
        message,
        "ingress 'missing' not found in namespace 'default'"
    );
    let observed = router(&r)
        .observe(&ctx(&cluster, r.clone()))
        .await
        .unwrap_err();
    assert_eq!(invalid(observed), (field.clone(), message.clone()));
    assert!(
        cluster.writes().is_empty(),
        "the valid ingress is not touched either"
    );
    assert!(api.get_opt("web-shop-canary").await.unwrap().is_none());
}

#[tokio::test]
async fn stable_ingress_without_the_stable_service_is_an_invalid_reference() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let (cluster, api) = start().await;
    create_stable(&api, "shop", "somebody-else").await;
    cluster.clear_writes();
    let r = rollout(BASIC);
    let err = router(&r)
        .apply(&ctx(&cluster, r.clone()), &weight(10))
        .await
        .unwrap_err();
    let (field, message) = invalid(err);
    assert_eq!(
        field,
        "spec.strategy.canary.trafficRouting.nginx.stableIngress"
    );
    assert_eq!(
        message,
        "ingress 'shop' has no path with backend service 'web-stable'"
    );
    let observed = router(&r)
        .observe(&ctx(&cluster, r.clone()))
        .await
        .unwrap_err();
    assert_eq!(invalid(observed), (field.clone(), message.clone()));
    assert!(cluster.writes().is_empty());
}

#[tokio::test]
async fn same_named_ingress_not_owned_by_the_rollout_is_an_invalid_reference() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let (cluster, api) = start().await;
    create_stable(&api, "shop", "web-stable").await;
    let mut squatter = stable_ingress("web-shop-canary", "web-canary");
    squatter.metadata.annotations = Some([("mine".to_string(), "yes".to_string())].into());
    api.create(&PostParams::default(), &squatter).await.unwrap();
    let before = api.get("web-shop-canary").await.unwrap();
    cluster.clear_writes();
    let r = rollout(BASIC);
    let ctx = ctx(&cluster, r.clone());
    let router = router(&r);
    let (field, message) = invalid(router.apply(&ctx, &weight(10)).await.unwrap_err());
    assert_eq!(
        field,
        "spec.strategy.canary.trafficRouting.nginx.stableIngress"
    );
    assert!(
        message
            .starts_with("ingress 'web-shop-canary' exists and is not controlled by rollout 'web'"),
        "{message}"
    );
    router.cleanup(&ctx).await.unwrap();
    assert!(cluster.writes().is_empty(), "{:#?}", cluster.writes());
    assert_eq!(api.get("web-shop-canary").await.unwrap(), before);
    let (observed_field, _) = invalid(router.observe(&ctx).await.unwrap_err());
    assert_eq!(
        observed_field, field,
        "observe reports it too, before anything is planned"
    );
}

#[tokio::test]
async fn every_stable_ingress_gets_its_canary_and_drift_is_corrected() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let (cluster, api) = start().await;
    create_stable(&api, "shop", "web-stable").await;
    create_stable(&api, "api", "web-stable").await;
    let r = rollout(
        r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx:
    stableIngresses: [shop, api]
"#,
    );
    let ctx = ctx(&cluster, r.clone());
    let router = router(&r);
    router.apply(&ctx, &weight(40)).await.unwrap();
    for name in ["web-shop-canary", "web-api-canary"] {
        let a = annotations(&api.get(name).await.unwrap());
        assert_eq!(
            a["nginx.ingress.kubernetes.io/canary-weight"], "40",
            "{name}"
        );
    }

    // A kubectl edit on one of them: observe reports the most the canary may get, apply
    // restores it.
    api.patch(
        "web-api-canary",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"nginx.ingress.kubernetes.io/canary-weight": "90"}},
                             "spec": {"ingressClassName": "other"}}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(90));
    cluster.clear_writes();
    router.apply(&ctx, &weight(40)).await.unwrap();
    let writes = ingress_writes(&cluster);
    assert_eq!(
        writes.len(),
        1,
        "only the drifted ingress is written: {writes:#?}"
    );
    assert_eq!(writes[0].name.as_deref(), Some("web-api-canary"));
    let fixed = api.get("web-api-canary").await.unwrap();
    assert_eq!(
        annotations(&fixed)["nginx.ingress.kubernetes.io/canary-weight"],
        "40"
    );
    assert_eq!(
        fixed.spec.unwrap().ingress_class_name.as_deref(),
        Some("nginx")
    );
    assert_eq!(router.observe(&ctx).await.unwrap().weight, Some(40));

    let watched = watched_objects(&r, &RoutingConfig::default());
    let names: Vec<&str> = watched.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["api", "shop", "web-api-canary", "web-shop-canary"]);
    assert!(
        watched
            .iter()
            .all(|w: &WatchedObject| w.kind == "Ingress" && w.namespace == NS)
    );
}

#[tokio::test]
async fn a_lost_race_is_recomputed_and_retried() {
    if skip_on_real_cluster("needs fault injection") {
        return;
    }
    let (cluster, api) = start().await;
    create_stable(&api, "shop", "web-stable").await;
    let r = rollout(BASIC);
    let ctx = ctx(&cluster, r.clone());
    let router = router(&r);
    router.apply(&ctx, &weight(10)).await.unwrap();
    cluster.clear_writes();
    cluster.inject(
        Fault::fail(409)
            .verb("patch")
            .resource("ingresses")
            .times(2),
    );
    router.apply(&ctx, &weight(20)).await.unwrap();
    let codes: Vec<u16> = ingress_writes(&cluster).iter().map(|w| w.code).collect();
    assert_eq!(codes, [409, 409, 200]);
    let a = annotations(&api.get("web-shop-canary").await.unwrap());
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "20");
}

#[tokio::test]
async fn cleanup_deletes_the_canary_ingress_and_leaves_the_stable_one() {
    if skip_on_real_cluster(NEEDS_NO_GC) {
        return;
    }
    let (cluster, api) = start().await;
    create_stable(&api, "shop", "web-stable").await;
    let stable = api.get("shop").await.unwrap();
    let r = rollout(BASIC);
    let ctx = ctx(&cluster, r.clone());
    let router = router(&r);
    router.apply(&ctx, &weight(50)).await.unwrap();
    router.cleanup(&ctx).await.unwrap();
    assert!(api.get_opt("web-shop-canary").await.unwrap().is_none());
    assert_eq!(api.get("shop").await.unwrap(), stable);
    // Cleaning up twice is harmless.
    router.cleanup(&ctx).await.unwrap();
    assert_eq!(router.observe(&ctx).await.unwrap().weight, None);
}
