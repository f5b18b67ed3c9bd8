//! Sluice beside Argo Rollouts, the migration path `docs/migrating.md` describes: neither
//! controller may read or write the other's objects.
//!
//! Argo Rollouts' controller treats every ReplicaSet labelled `rollouts-pod-template-hash` as its
//! own and removes that key from the selector of every Service no Argo Rollout references, so
//! Sluice's objects must carry Sluice's own key and nothing Argo's controller selects; and
//! Sluice must never write an Argo Rollout's ReplicaSets, Services or Ingresses. An upgrade over
//! ReplicaSets an earlier Sluice labelled with Argo's key must not replace a single pod.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use sluice::api::constants::{LEGACY_POD_TEMPLATE_HASH_LABEL, POD_TEMPLATE_HASH_LABEL};
use sluice_test_support::controller::*;
use sluice_test_support::rollout::phase_is;
use sluice_test_support::target::skip_on_real_cluster;

const ARGO_HASH: &str = "7d9f8b6c5";

/// A minimal definition of Argo Rollouts' `Rollout` kind (what matters here is that the owner of
/// Argo's objects exists, so the garbage collector keeps them).
async fn install_argo_rollout_kind(env: &Env) {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "rollouts.argoproj.io"},
        "spec": {
            "group": "argoproj.io",
            "names": {"kind": "Rollout", "plural": "rollouts", "singular": "rollout", "listKind": "RolloutList"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    }))
    .unwrap();
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create the Argo Rollout CRD: {e}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// What Argo Rollouts leaves in a namespace for its Rollout `web`: the Rollout, a ReplicaSet
/// labelled with its hash key, its Services (selectors on its hash key, its managed-by
/// annotation) and its canary Ingress.
async fn argo_objects(env: &Env) -> Vec<(&'static str, &'static str, String)> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout");
    let argo: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), env.ns(), &ApiResource::from_gvk(&gvk));
    let mut ro: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2}
    }))
    .unwrap();
    ro = argo
        .create(&PostParams::default(), &ro)
        .await
        .expect("argo rollout");
    let labels = json!({"app": "argo-web", LEGACY_POD_TEMPLATE_HASH_LABEL: ARGO_HASH});
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {
            "name": format!("web-{ARGO_HASH}"),
            "labels": labels,
            "annotations": {"rollout.argoproj.io/revision": "1"},
            "ownerReferences": [{
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web",
                "uid": ro.uid().unwrap(), "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "argo-web:1"}]}
            }
        }
    }))
    .unwrap();
    let rs_api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), env.ns());
    rs_api
        .create(&PostParams::default(), &rs)
        .await
        .expect("argo rs");
    let svc_api: Api<Service> = Api::namespaced(env.client.clone(), env.ns());
    for name in ["argo-web-stable", "argo-web-canary"] {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "annotations": {"argo-rollouts.argoproj.io/managed-by-rollouts": "web"}
            },
            "spec": {
                "selector": {"app": "argo-web", LEGACY_POD_TEMPLATE_HASH_LABEL: ARGO_HASH},
                "ports": [{"port": 80, "targetPort": 8080}]
            }
        }))
        .unwrap();
        svc_api
            .create(&PostParams::default(), &svc)
            .await
            .expect("argo service");
    }
    let ing_api: Api<Ingress> = Api::namespaced(env.client.clone(), env.ns());
    let ing: Ingress = serde_json::from_value(json!({
        "metadata": {
            "name": "web-argo-web-canary",
            "annotations": {
                "kubernetes.io/ingress.class": "nginx",
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "0"
            }
        },
        "spec": {"rules": [{"host": "argo.example", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "argo-web-canary", "port": {"number": 80}}}
        }]}}]}
    }))
    .unwrap();
    ing_api
        .create(&PostParams::default(), &ing)
        .await
        .expect("argo ingress");
    vec![
        ("apps", "replicasets", format!("web-{ARGO_HASH}")),
        ("", "services", "argo-web-stable".into()),
        ("", "services", "argo-web-canary".into()),
        (
            "networking.k8s.io",
            "ingresses",
            "web-argo-web-canary".into(),
        ),
        ("argoproj.io", "rollouts", "web".into()),
    ]
}

/// Every place a label key can be in the JSON of an object Sluice writes.
fn label_keys(obj: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    for pointer in [
        "/metadata/labels",
        "/spec/selector",
        "/spec/selector/matchLabels",
        "/spec/template/metadata/labels",
    ] {
        if let Some(map) = obj.pointer(pointer).and_then(Value::as_object) {
            keys.extend(map.keys().cloned());
        }
    }
    keys
}

#[tokio::test]
async fn argo_rollouts_objects_are_never_written_and_sluice_objects_carry_nothing_argo_selects() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::new().await;
    install_argo_rollout_kind(&env).await;
    let argo = argo_objects(&env).await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;

    // A Sluice Rollout of the same name, through a whole canary and an abort.
    let steps = format!("{NGINX}steps:\n- setWeight: 30\n- pause: {{}}\n");
    env.create(&rollout("web", 2, "web:1", &steps)).await;
    env.wait_for("web", "web:1 healthy", 60, phase_is("Healthy"))
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "web:2 paused", 60, |r| phase(r) == "Paused")
        .await;
    env.promote("web").await;
    let done = env
        .wait_for("web", "web:2 healthy", 60, |r| {
            phase(r) == "Healthy" && stable(r) == current(r)
        })
        .await;
    let v2 = stable(&done).unwrap();

    // Sluice wrote nothing of Argo's (and the log does hold Sluice's writes).
    let mut sluice_writes = 0;
    for w in env.cluster.controls().writes() {
        let by_sluice = w
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("sluice"));
        if !by_sluice {
            continue;
        }
        sluice_writes += 1;
        let name = w.name.clone().unwrap_or_default();
        assert!(
            !argo.iter().any(|(group, res, n)| *group == w.group.as_str()
                && *res == w.resource.as_str()
                && *n == name),
            "Sluice wrote Argo's {} {name}: {} {}",
            w.resource,
            w.verb,
            w.uri
        );
    }
    assert!(
        sluice_writes > 10,
        "only {sluice_writes} writes by Sluice in the log"
    );
    // Argo's objects are as Argo left them.
    let svc_api: Api<Service> = Api::namespaced(env.client.clone(), env.ns());
    let argo_svc = svc_api.get("argo-web-stable").await.unwrap();
    assert_eq!(
        argo_svc.spec.unwrap().selector.unwrap(),
        BTreeMap::from([
            ("app".to_string(), "argo-web".to_string()),
            (
                LEGACY_POD_TEMPLATE_HASH_LABEL.to_string(),
                ARGO_HASH.to_string()
            )
        ])
    );
    assert!(
        !argo_svc
            .metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .any(|k| k.contains("sluice")),
        "Argo's Service carries a Sluice annotation"
    );

    // Sluice's own objects carry Sluice's key and never Argo's.
    let mut sluice_objects: Vec<Value> = Vec::new();
    for rs in env.replica_sets().await {
        let owned_by_sluice = rs
            .owner_references()
            .iter()
            .any(|o| o.api_version.starts_with("sluice.dev/"));
        if owned_by_sluice {
            sluice_objects.push(serde_json::to_value(&rs).unwrap());
        }
    }
    assert!(sluice_objects.len() >= 2, "{sluice_objects:?}");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    for pod in pods.list(&Default::default()).await.unwrap().items {
        if pod.labels().get("app").map(String::as_str) == Some("web") {
            sluice_objects.push(serde_json::to_value(&pod).unwrap());
        }
    }
    for name in ["web-stable", "web-canary"] {
        sluice_objects.push(serde_json::to_value(svc_api.get(name).await.unwrap()).unwrap());
    }
    for obj in &sluice_objects {
        let keys = label_keys(obj);
        assert!(
            !keys.iter().any(|k| k == LEGACY_POD_TEMPLATE_HASH_LABEL),
            "{} {} carries Argo's key: {keys:?}",
            obj["kind"],
            obj["metadata"]["name"]
        );
    }
    assert_eq!(
        env.service_hash("web-stable").await.as_deref(),
        Some(v2.as_str())
    );
}

/// The legacy-labelled ReplicaSet of `template` as an earlier Sluice created it for `rollout`.
fn legacy_replica_set(ro: &sluice::api::rollout::Rollout, hash: &str, replicas: i32) -> ReplicaSet {
    let mut template = serde_json::to_value(ro.spec.template.clone().unwrap()).unwrap();
    template["metadata"]["labels"][LEGACY_POD_TEMPLATE_HASH_LABEL] = json!(hash);
    let labels = template["metadata"]["labels"].clone();
    let mut selector = serde_json::to_value(&ro.spec.selector).unwrap();
    selector["matchLabels"][LEGACY_POD_TEMPLATE_HASH_LABEL] = json!(hash);
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{}-{hash}", ro.name_any()),
            "labels": labels,
            "annotations": {"rollout.sluice.dev/revision": "1"},
            "ownerReferences": [{
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": ro.name_any(),
                "uid": ro.uid().unwrap(), "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template}
    }))
    .unwrap()
}

#[tokio::test]
async fn upgrading_over_legacy_labelled_replica_sets_replaces_no_pod() {
    // The state an earlier Sluice left: a settled Rollout whose ReplicaSet, pods and Services use
    // Argo's key. The new controller starts only once it is in place.
    let env = Env::without_controller().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let steps = format!("{NGINX}steps:\n- setWeight: 30\n- pause: {{}}\n");
    let ro = rollout("web", 3, "web:1", &steps);
    env.create(&ro).await;
    let ro = env.get("web").await;
    let hash = sluice::plan::hash::pod_template_hash(ro.spec.template.as_ref().unwrap(), None);
    let rs_api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), env.ns());
    rs_api
        .create(&PostParams::default(), &legacy_replica_set(&ro, &hash, 3))
        .await
        .expect("legacy rs");
    let svc_api: Api<Service> = Api::namespaced(env.client.clone(), env.ns());
    for name in ["web-stable", "web-canary"] {
        let patch = json!({"spec": {"selector": {LEGACY_POD_TEMPLATE_HASH_LABEL: hash}}});
        svc_api
            .patch(name, &Default::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    let ready_pods = || async {
        let mut uids: Vec<String> = pods
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| p.uid())
            .collect();
        uids.sort();
        uids
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let before = loop {
        let uids = ready_pods().await;
        if uids.len() == 3 {
            break uids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "legacy pods not ready: {uids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The upgraded controller takes over.
    let mut env = env;
    env.controller = Some(start_controller(&env.cluster, config()).await);
    let r = env
        .wait_for("web", "healthy on the legacy ReplicaSet", 60, |r| {
            phase(r) == "Healthy" && stable(r).as_deref() == Some(hash.as_str())
        })
        .await;
    assert_eq!(current(&r).as_deref(), Some(hash.as_str()));
    // Relabelled (labels only: Argo's controller no longer lists it), selector and pods as they were.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let rs = loop {
        let rs = rs_api.get(&format!("web-{hash}")).await.unwrap();
        let labels = rs.labels();
        if labels.get(POD_TEMPLATE_HASH_LABEL) == Some(&hash)
            && !labels.contains_key(LEGACY_POD_TEMPLATE_HASH_LABEL)
        {
            break rs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not relabelled: {labels:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let selector = rs.spec.unwrap().selector.match_labels.unwrap();
    assert_eq!(selector.get(LEGACY_POD_TEMPLATE_HASH_LABEL), Some(&hash));
    assert_eq!(
        env.replica_sets().await.len(),
        1,
        "a new ReplicaSet was created"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ready_pods().await,
        before,
        "pods were replaced by the upgrade"
    );
    // The Services still select the legacy pods, by the key those pods carry.
    for name in ["web-stable", "web-canary"] {
        let sel = svc_api
            .get(name)
            .await
            .unwrap()
            .spec
            .unwrap()
            .selector
            .unwrap();
        assert_eq!(
            sel.get(LEGACY_POD_TEMPLATE_HASH_LABEL),
            Some(&hash),
            "{name}: {sel:?}"
        );
        assert!(
            !sel.contains_key(POD_TEMPLATE_HASH_LABEL),
            "{name}: {sel:?}"
        );
    }

    // The next revision moves to Sluice's key: the new pods, then the Services.
    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "web:2 paused at 30%", 60, |r| phase(r) == "Paused")
        .await;
    let v2 = current(&r).unwrap();
    let canary_sel = svc_api
        .get("web-canary")
        .await
        .unwrap()
        .spec
        .unwrap()
        .selector
        .unwrap();
    assert_eq!(canary_sel.get(POD_TEMPLATE_HASH_LABEL), Some(&v2));
    assert!(
        !canary_sel.contains_key(LEGACY_POD_TEMPLATE_HASH_LABEL),
        "{canary_sel:?}"
    );
    env.promote("web").await;
    env.wait_for("web", "web:2 healthy", 60, |r| {
        phase(r) == "Healthy" && stable(r).as_deref() == Some(v2.as_str())
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sel = svc_api
            .get("web-stable")
            .await
            .unwrap()
            .spec
            .unwrap()
            .selector
            .unwrap();
        if sel.get(POD_TEMPLATE_HASH_LABEL) == Some(&v2) {
            assert!(!sel.contains_key(LEGACY_POD_TEMPLATE_HASH_LABEL), "{sel:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stable Service: {sel:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
