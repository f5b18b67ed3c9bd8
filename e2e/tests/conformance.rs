//! Black-box conformance of the test cluster with kube-apiserver. Every assertion here holds on a
//! real cluster too: run with `SLUICE_E2E_KUBECONFIG=/path/to/kubeconfig` to check that.

mod common;

use std::collections::BTreeMap;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::DynamicObject;
use serde_json::{Value, json};

fn cm(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        },
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn create_assigns_server_fields_and_rejects_bad_creates() {
    let t = target().await;
    let ns = namespace(&t.client, "create").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let created = api
        .create(&PostParams::default(), &cm("a", &[], &[("k", "v")]))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| !u.is_empty()));
    assert!(
        meta.resource_version
            .as_deref()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.namespace.as_deref(), Some(ns.as_str()));

    let again = status_of(api.create(&PostParams::default(), &cm("a", &[], &[])).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let mut with_rv = cm("b", &[], &[]);
    with_rv.metadata.resource_version = Some("5".into());
    assert_eq!(
        code(api.create(&PostParams::default(), &with_rv).await),
        400
    );

    let mut generated = cm("", &[], &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let g = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = g.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() > 4, "{name}");

    let mut unnamed = cm("", &[], &[]);
    unnamed.metadata.name = None;
    assert_eq!(
        code(api.create(&PostParams::default(), &unnamed).await),
        422
    );

    let missing = status_of(api.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn update_with_stale_resource_version_is_a_conflict() {
    let t = target().await;
    let ns = namespace(&t.client, "update").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let first = api
        .create(&PostParams::default(), &cm("a", &[], &[("k", "1")]))
        .await
        .unwrap();
    let mut second = first.clone();
    second.data = Some([("k".to_string(), "2".to_string())].into());
    let updated = api
        .replace("a", &PostParams::default(), &second)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(updated.data.unwrap()["k"], "2");

    let mut stale = first.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let conflict = status_of(api.replace("a", &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "2");
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn generation_changes_only_with_the_spec() {
    let t = target().await;
    install_widget_crd(&t.client).await;
    let ns = namespace(&t.client, "generation").await;
    let api = widgets(&t.client, &ns);
    let w = api
        .create(
            &PostParams::default(),
            &widget("w", json!({"size": "small"})),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    let pp = PatchParams::default();
    let labelled = api
        .patch(
            "w",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let status = api
        .patch_status(
            "w",
            &pp,
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(status.metadata.generation, Some(1));
    let spec = api
        .patch("w", &pp, &Patch::Merge(json!({"spec": {"size": "large"}})))
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2));
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn status_subresource_separates_status_from_the_object() {
    let t = target().await;
    install_widget_crd(&t.client).await;
    let ns = namespace(&t.client, "status").await;
    let api = widgets(&t.client, &ns);
    let mut w = widget("w", json!({"size": "small"}));
    w.data["status"] = json!({"phase": "ignored-on-create"});
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create: {:?}",
        created.data
    );

    let mut body = created.clone();
    body.data["spec"]["size"] = json!("large");
    body.data["status"] = json!({"phase": "Ready"});
    let after_status = api
        .replace_status("w", &PostParams::default(), &body)
        .await
        .unwrap();
    assert_eq!(
        after_status.data["spec"]["size"], "small",
        "a status write must not change spec"
    );
    assert_eq!(after_status.data["status"]["phase"], "Ready");

    let mut main = after_status.clone();
    main.data["spec"]["size"] = json!("large");
    main.data["status"] = json!({"phase": "Overwritten"});
    let after_main = api
        .replace("w", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(after_main.data["spec"]["size"], "large");
    assert_eq!(
        after_main.data["status"]["phase"], "Ready",
        "a write to the object keeps the stored status"
    );
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn json_patch_applies_and_a_failed_test_is_rejected() {
    let t = target().await;
    let ns = namespace(&t.client, "jsonpatch").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    api.create(&PostParams::default(), &cm("a", &[], &[("k", "1")]))
        .await
        .unwrap();
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "1"},
        {"op": "replace", "path": "/data/k", "value": "2"},
        {"op": "add", "path": "/data/n", "value": "x"},
    ]))
    .unwrap();
    let patched = api
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    let data = patched.data.unwrap();
    assert_eq!((data["k"].as_str(), data["n"].as_str()), ("2", "x"));

    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "1"},
        {"op": "replace", "path": "/data/k", "value": "3"},
    ]))
    .unwrap();
    assert_eq!(
        code(
            api.patch("a", &PatchParams::default(), &Patch::<()>::Json(failing))
                .await
        ),
        422
    );
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "2");
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn merge_patch_merges_maps_and_null_removes() {
    let t = target().await;
    let ns = namespace(&t.client, "merge").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &cm("a", &[], &[("keep", "1"), ("drop", "2")]),
    )
    .await
    .unwrap();
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"drop": null, "new": "3"}})),
        )
        .await
        .unwrap();
    let data = patched.data.unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!((data["keep"].as_str(), data["new"].as_str()), ("1", "3"));
    let missing = api
        .patch(
            "nope",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "b"}})),
        )
        .await;
    assert_eq!(code(missing), 404);
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn strategic_merge_patch_merges_containers_by_name() {
    let t = target().await;
    let ns = namespace(&t.client, "strategic").await;
    let api: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [
                {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}
            ]}}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}});
    let patched = api
        .patch("d", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let containers = patched.spec.unwrap().template.spec.unwrap().containers;
    let images: Vec<(String, Option<String>)> =
        containers.into_iter().map(|c| (c.name, c.image)).collect();
    assert_eq!(
        images,
        vec![
            ("a".into(), Some("a:1".into())),
            ("b".into(), Some("b:2".into()))
        ]
    );

    install_widget_crd(&t.client).await;
    let widgets = widgets(&t.client, &ns);
    widgets
        .create(
            &PostParams::default(),
            &widget("w", json!({"size": "small"})),
        )
        .await
        .unwrap();
    let strategic = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": "large"}})),
        )
        .await;
    assert_eq!(
        code(strategic),
        415,
        "strategic merge is not supported for custom resources"
    );
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_records_the_manager() {
    let t = target().await;
    let ns = namespace(&t.client, "apply").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}});
    let created = api
        .patch("a", &PatchParams::apply("e2e-apply"), &Patch::Apply(&body))
        .await
        .unwrap();
    assert_eq!(created.data.clone().unwrap()["k"], "1");
    let managers: Vec<(String, String)> = created
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("e2e-apply".into(), "Apply".into())),
        "{managers:?}"
    );

    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "2"}});
    let updated = api
        .patch("a", &PatchParams::apply("e2e-apply"), &Patch::Apply(&body))
        .await
        .unwrap();
    assert_eq!(updated.data.unwrap()["k"], "2");

    // Re-applying the same configuration changes nothing, not even the resourceVersion.
    let again = api
        .patch("a", &PatchParams::apply("e2e-apply"), &Patch::Apply(&body))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        updated.metadata.resource_version
    );
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version() {
    let t = target().await;
    let ns = namespace(&t.client, "watch").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let created = api
        .create(&PostParams::default(), &cm("a", &[], &[("k", "0")]))
        .await
        .unwrap();
    let from = created.metadata.resource_version.clone().unwrap();
    for i in 1..=3 {
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    api.create(&PostParams::default(), &cm("b", &[], &[]))
        .await
        .unwrap();
    let stream = api
        .watch(&WatchParams::default().timeout(30), &from)
        .await
        .unwrap();
    let events: Vec<(String, String)> = stream
        .try_filter(|e| std::future::ready(!matches!(e, WatchEvent::Bookmark(_))))
        .take(4)
        .map_ok(|e| match e {
            WatchEvent::Added(o) => (
                "ADDED".into(),
                o.metadata.name.unwrap()
                    + &o.data.and_then(|d| d.get("k").cloned()).unwrap_or_default(),
            ),
            WatchEvent::Modified(o) => (
                "MODIFIED".into(),
                o.metadata.name.unwrap()
                    + &o.data.and_then(|d| d.get("k").cloned()).unwrap_or_default(),
            ),
            other => (format!("{other:?}"), String::new()),
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        events,
        vec![
            ("MODIFIED".into(), "a1".into()),
            ("MODIFIED".into(), "a2".into()),
            ("MODIFIED".into(), "a3".into()),
            ("ADDED".into(), "b".into()),
        ]
    );
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn watch_from_an_expired_version_reports_410_gone() {
    let t = target().await;
    let ns = namespace(&t.client, "expired").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    // More writes than the test cluster keeps (a real cluster compacted version 1 long ago).
    api.create(&PostParams::default(), &cm("a", &[], &[]))
        .await
        .unwrap();
    for i in 0..250 {
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), "1")
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        // Some servers answer the request itself with 410 instead of an ERROR event.
        Some(Err(kube::Error::Api(status))) => assert_eq!(status.code, 410),
        other => panic!("expected a 410 Expired, got {other:?}"),
    }
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let t = target().await;
    let ns = namespace(&t.client, "gc").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let owner = api
        .create(&PostParams::default(), &cm("owner", &[], &[]))
        .await
        .unwrap();
    let mut dependent = cm("dependent", &[], &[]);
    dependent.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap(),
    }))
    .unwrap()]);
    api.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("bystander", &[], &[]))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually("dependent collected", || async {
        matches!(api.get("dependent").await, Err(kube::Error::Api(s)) if s.code == 404)
    })
    .await;
    assert!(api.get("bystander").await.is_ok());
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_the_last_is_removed() {
    let t = target().await;
    let ns = namespace(&t.client, "finalizers").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let mut held = cm("held", &[], &[]);
    held.metadata.finalizers = Some(vec!["e2e.sluice.dev/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let pending = api.get("held").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());

    let add = api
        .patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": ["e2e.sluice.dev/hold", "e2e.sluice.dev/other"]}})))
        .await;
    assert_eq!(
        code(add),
        422,
        "no new finalizers on an object being deleted"
    );

    let remove: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": ["e2e.sluice.dev/hold"]},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]))
    .unwrap();
    api.patch("held", &PatchParams::default(), &Patch::<()>::Json(remove))
        .await
        .unwrap();
    eventually("object removed", || async {
        matches!(api.get("held").await, Err(kube::Error::Api(s)) if s.code == 404)
    })
    .await;
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let t = target().await;
    let ns = namespace(&t.client, "selectors").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    for (name, labels) in [
        ("a", vec![("app", "web"), ("tier", "front")]),
        ("b", vec![("app", "web"), ("tier", "back")]),
        ("c", vec![("app", "db")]),
        ("d", vec![]),
    ] {
        api.create(&PostParams::default(), &cm(name, &labels, &[]))
            .await
            .unwrap();
    }
    let names = |sel: &'static str| {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default().labels(sel)).await.unwrap();
            list.items
                .into_iter()
                .map(|c| c.metadata.name.unwrap())
                .filter(|n| n.len() == 1)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("app=web").await, vec!["a", "b"]);
    assert_eq!(names("app==web").await, vec!["a", "b"]);
    assert_eq!(names("app!=web").await, vec!["c", "d"]);
    assert_eq!(names("app in (web,db)").await, vec!["a", "b", "c"]);
    assert_eq!(names("app notin (web)").await, vec!["c", "d"]);
    assert_eq!(names("tier").await, vec!["a", "b"]);
    assert_eq!(names("!tier").await, vec!["c", "d"]);
    assert_eq!(names("app=web,tier!=front").await, vec!["b"]);

    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let not_name = api
        .list(&ListParams::default().fields("metadata.name!=c"))
        .await
        .unwrap();
    assert!(
        not_name
            .items
            .iter()
            .all(|c| c.metadata.name.as_deref() != Some("c"))
    );
    let by_ns = api
        .list(&ListParams::default().fields(&format!("metadata.namespace={ns}")))
        .await
        .unwrap();
    assert!(by_ns.items.len() >= 4);
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn lists_are_sorted_and_paginate_with_continue() {
    let t = target().await;
    let ns = namespace(&t.client, "paging").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    for name in ["e", "b", "g", "a", "f", "c", "d"] {
        api.create(&PostParams::default(), &cm(name, &[("page", "yes")], &[]))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut params = ListParams::default().labels("page=yes").limit(3);
    let mut pages = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(seen, vec!["a", "b", "c", "d", "e", "f", "g"]);
    assert_eq!(pages, 3);
    delete_namespace(&t.client, &ns).await;
}

/// Every page of a paged list shows the objects as they were at its first page and carries
/// that page's resourceVersion (etcd serves the continue token at that revision), so a watch
/// from it gets every change made while the client was paging: kube-runtime's watcher lists in
/// pages of 500 and watches from the list's version.
#[tokio::test]
async fn paged_lists_are_one_snapshot_and_a_watch_from_their_version_misses_nothing() {
    let t = target().await;
    let ns = namespace(&t.client, "snapshot").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    for name in ["a", "b", "c", "d", "e", "f", "g"] {
        api.create(&PostParams::default(), &cm(name, &[("snap", "yes")], &[]))
            .await
            .unwrap();
    }
    let params = ListParams::default().labels("snap=yes").limit(3);
    let first = api.list(&params).await.unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    // Between the pages: an object already listed changes, one not yet listed goes, one is added.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"changed": "yes"}})),
    )
    .await
    .unwrap();
    api.delete("e", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &cm("h", &[("snap", "yes")], &[]))
        .await
        .unwrap();
    let mut names: Vec<String> = first
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api.list(&params.clone().continue_token(&t)).await.unwrap();
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(rv.as_str()),
            "every page carries the first page's resourceVersion"
        );
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        token = page.metadata.continue_;
    }
    assert_eq!(
        names,
        ["a", "b", "c", "d", "e", "f", "g"],
        "the list as of its first page"
    );
    let mut changes: Vec<String> = api
        .watch(&WatchParams::default().labels("snap=yes").timeout(10), &rv)
        .await
        .unwrap()
        .try_filter_map(|e| {
            std::future::ready(Ok(match e {
                WatchEvent::Added(c) => Some(format!("added {}", c.metadata.name.unwrap())),
                WatchEvent::Modified(c) => Some(format!("modified {}", c.metadata.name.unwrap())),
                WatchEvent::Deleted(c) => Some(format!("deleted {}", c.metadata.name.unwrap())),
                _ => None,
            }))
        })
        .take(3)
        .try_collect()
        .await
        .unwrap();
    changes.sort();
    assert_eq!(changes, ["added h", "deleted e", "modified a"]);
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn custom_resources_are_validated_pruned_and_defaulted() {
    let t = target().await;
    install_widget_crd(&t.client).await;
    let ns = namespace(&t.client, "schema").await;
    let api = widgets(&t.client, &ns);
    let pp = PostParams::default();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"size": "small", "replicas": "three"}),
            "spec.replicas",
        ),
        (json!({"size": "medium"}), "spec.size"),
        (json!({"replicas": 2}), "spec.size"),
        (json!({"size": "small", "replicas": 101}), "spec.replicas"),
        (json!({"size": "small", "name": "Bad_Name"}), "spec.name"),
        (
            json!({"size": "small", "items": ["a", "b", "c", "d"]}),
            "spec.items",
        ),
        (
            json!({"size": "small", "labels": {"a": 1}}),
            "spec.labels.a",
        ),
    ];
    for (i, (spec, field)) in cases.into_iter().enumerate() {
        let status = status_of(
            api.create(&pp, &widget(&format!("bad{i}"), spec.clone()))
                .await,
        );
        assert_eq!(
            (status.code, status.reason.as_str()),
            (422, "Invalid"),
            "{spec}"
        );
        let causes: Vec<String> = status
            .details
            .as_ref()
            .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
            .unwrap_or_default();
        assert!(
            causes.iter().any(|c| c == field),
            "{spec}: expected a cause on {field}, got {causes:?}"
        );
    }
    let ok: DynamicObject = api
        .create(
            &pp,
            &widget(
                "good",
                json!({"size": "small", "unknown": 1, "extra": {"kept": {"deep": true}}}),
            ),
        )
        .await
        .unwrap();
    assert!(
        ok.data["spec"].get("unknown").is_none(),
        "unknown fields are pruned"
    );
    assert_eq!(
        ok.data["spec"]["extra"]["kept"]["deep"], true,
        "preserved fields are kept"
    );
    assert_eq!(ok.data["spec"]["replicas"], 1, "defaults are applied");
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn custom_resource_status_apply_and_scale_subresources() {
    let t = target().await;
    install_widget_crd(&t.client).await;
    let ns = namespace(&t.client, "subresources").await;
    let api = widgets(&t.client, &ns);
    api.create(
        &PostParams::default(),
        &widget("w", json!({"size": "small", "replicas": 2})),
    )
    .await
    .unwrap();
    let status = json!({
        "apiVersion": "e2e.sluice.dev/v1", "kind": "Widget",
        "status": {"replicas": 2, "selector": "app=w", "phase": "Ready"}
    });
    let applied = api
        .patch_status(
            "w",
            &PatchParams::apply("e2e-status").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["status"]["phase"], "Ready");
    assert_eq!(applied.data["spec"]["replicas"], 2);
    assert_eq!(applied.metadata.generation, Some(1));

    let scale = api.get_scale("w").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    let scale_status = scale.status.unwrap();
    assert_eq!(
        (scale_status.replicas, scale_status.selector.as_deref()),
        (2, Some("app=w"))
    );

    api.patch_scale(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    let scaled = api.get("w").await.unwrap();
    assert_eq!(scaled.data["spec"]["replicas"], 5);
    assert_eq!(scaled.metadata.generation, Some(2));
    delete_namespace(&t.client, &ns).await;
}

fn applied_cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": data})
}

fn owned_by(cm: &ConfigMap, manager: &str) -> Vec<String> {
    // Field paths of one manager's entries, as `data.k` strings.
    fn walk(v: &Value, prefix: &str, out: &mut Vec<String>) {
        let Some(map) = v.as_object() else { return };
        let children: Vec<_> = map.iter().filter(|(k, _)| k.starts_with("f:")).collect();
        if children.is_empty() && !prefix.is_empty() {
            out.push(prefix.to_string());
        }
        for (k, child) in children {
            let key = &k[2..];
            let path = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            walk(child, &path, out);
        }
    }
    let mut out = Vec::new();
    for entry in cm.metadata.managed_fields.iter().flatten() {
        if entry.manager.as_deref() == Some(manager) {
            let fields = serde_json::to_value(&entry.fields_v1).unwrap();
            walk(&fields, "", &mut out);
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn server_side_apply_conflicts_between_managers_unless_forced() {
    let t = target().await;
    let ns = namespace(&t.client, "ssa-conflict").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let git = PatchParams::apply("e2e-git");
    let ctl = PatchParams::apply("e2e-controller");
    api.patch(
        "shared",
        &git,
        &Patch::Apply(applied_cm(json!({"weight": "0", "owner": "git"}))),
    )
    .await
    .unwrap();
    // Same value: shared ownership, no conflict.
    api.patch(
        "shared",
        &ctl,
        &Patch::Apply(applied_cm(json!({"owner": "git"}))),
    )
    .await
    .unwrap();
    let conflict = status_of(
        api.patch(
            "shared",
            &ctl,
            &Patch::Apply(applied_cm(json!({"weight": "20"}))),
        )
        .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    let fields: Vec<String> = conflict
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(fields, vec![".data.weight"]);

    let forced = api
        .patch(
            "shared",
            &ctl.clone().force(),
            &Patch::Apply(applied_cm(json!({"weight": "20"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["weight"], "20");
    assert_eq!(owned_by(&forced, "e2e-controller"), vec!["data.weight"]);
    assert_eq!(owned_by(&forced, "e2e-git"), vec!["data.owner"]);

    // Git re-applying its old value now conflicts with the controller.
    let back = status_of(
        api.patch(
            "shared",
            &git,
            &Patch::Apply(applied_cm(json!({"weight": "0", "owner": "git"}))),
        )
        .await,
    );
    assert_eq!(back.code, 409);
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn server_side_apply_removes_only_fields_the_manager_dropped() {
    let t = target().await;
    let ns = namespace(&t.client, "ssa-removal").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let git = PatchParams::apply("e2e-git");
    let ctl = PatchParams::apply("e2e-controller");
    api.patch(
        "shared",
        &git,
        &Patch::Apply(applied_cm(json!({"a": "1", "b": "1"}))),
    )
    .await
    .unwrap();
    api.patch("shared", &ctl, &Patch::Apply(applied_cm(json!({"c": "1"}))))
        .await
        .unwrap();
    let after = api
        .patch("shared", &git, &Patch::Apply(applied_cm(json!({"a": "1"}))))
        .await
        .unwrap();
    let keys: Vec<String> = after.data.unwrap().into_keys().collect();
    assert_eq!(
        keys,
        vec!["a", "c"],
        "b was dropped by its only manager; c belongs to another"
    );

    // A non-apply write takes ownership of what it changed.
    api.patch(
        "shared",
        &PatchParams {
            field_manager: Some("e2e-editor".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    let conflict = status_of(
        api.patch("shared", &git, &Patch::Apply(applied_cm(json!({"a": "1"}))))
            .await,
    );
    assert_eq!(conflict.code, 409);
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn built_in_kinds_are_defaulted() {
    use k8s_openapi::api::core::v1::Service;
    let t = target().await;
    let ns = namespace(&t.client, "defaults").await;
    let deployments: Api<Deployment> = Api::namespaced(t.client.clone(), &ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [
                {"name": "a", "image": "registry.example/a:1.2", "ports": [{"containerPort": 8080}]},
                {"name": "b", "image": "registry.example/b"}
            ]}}}
    }))
    .unwrap();
    let created = deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let spec = created.spec.unwrap();
    assert_eq!(
        spec.strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    assert_eq!(spec.revision_history_limit, Some(10));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(
        pod.containers[0].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    assert_eq!(
        pod.containers[1].image_pull_policy.as_deref(),
        Some("Always")
    );
    assert_eq!(
        pod.containers[0].ports.as_ref().unwrap()[0]
            .protocol
            .as_deref(),
        Some("TCP")
    );

    let services: Api<Service> = Api::namespaced(t.client.clone(), &ns);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "s"}, "spec": {"selector": {"app": "d"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let created = services.create(&PostParams::default(), &svc).await.unwrap();
    let spec = created.spec.clone().unwrap();
    let ip = spec.cluster_ip.clone().unwrap();
    assert!(!ip.is_empty() && ip != "None");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.unwrap()[0];
    assert_eq!(
        (port.protocol.as_deref(), port.target_port.clone()),
        (Some("TCP"), Some(IntOrString::Int(80)))
    );
    // An update that leaves the allocated address out keeps it.
    let mut replace = created.clone();
    replace.spec.as_mut().unwrap().cluster_ip = None;
    replace.spec.as_mut().unwrap().cluster_ips = None;
    let replaced = services
        .replace("s", &PostParams::default(), &replace)
        .await
        .unwrap();
    assert_eq!(replaced.spec.unwrap().cluster_ip, Some(ip));
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let t = target().await;
    let ns = namespace(&t.client, "foreground").await;
    let api: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let owner = api
        .create(&PostParams::default(), &cm("owner", &[], &[]))
        .await
        .unwrap();
    let mut dependent = cm("dependent", &[], &[]);
    dependent.metadata.finalizers = Some(vec!["e2e.sluice.dev/hold".into()]);
    dependent.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap(),
        "blockOwnerDeletion": true,
    }))
    .unwrap()]);
    api.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("dependent marked for deletion", || async {
        api.get("dependent")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    let waiting = api.get("owner").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );

    api.patch(
        "dependent",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("owner removed after its dependent", || async {
        matches!(api.get("owner").await, Err(kube::Error::Api(s)) if s.code == 404)
    })
    .await;
    delete_namespace(&t.client, &ns).await;
}

#[tokio::test]
async fn custom_resources_are_checked_against_cel_rules() {
    let t = target().await;
    install_widget_crd(&t.client).await;
    let ns = namespace(&t.client, "cel").await;
    let api = widgets(&t.client, &ns);
    let pp = PostParams::default();
    let rejected = status_of(
        api.create(&pp, &widget("w", json!({"size": "small", "items": ["a"]})))
            .await,
    );
    assert_eq!((rejected.code, rejected.reason.as_str()), (422, "Invalid"));
    assert!(
        rejected.message.contains("items need a large widget"),
        "{}",
        rejected.message
    );
    let causes: Vec<String> = rejected
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(causes, vec!["spec"]);

    api.create(
        &pp,
        &widget(
            "w",
            json!({"size": "large", "items": ["a"], "name": "first"}),
        ),
    )
    .await
    .unwrap();
    // A transition rule: the name may not change once set.
    let renamed = status_of(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"name": "second"}})),
        )
        .await,
    );
    assert_eq!(renamed.code, 422);
    assert!(
        renamed.message.contains("name is immutable"),
        "{}",
        renamed.message
    );
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    // The test cluster alone can be told to let such objects in.
    if let Some(cluster) = &t.cluster {
        cluster.set_cel_rules(false);
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"name": "second"}})),
        )
        .await
        .unwrap();
    }
    delete_namespace(&t.client, &ns).await;
}
