//! Watch details of the test cluster that a real cluster only shows slowly (bookmarks come about
//! once a minute there): bookmarks, streaming lists, and selector transitions.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use sluice_e2e::TestCluster;

fn cm(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}})).unwrap()
}

fn describe(event: WatchEvent<ConfigMap>) -> String {
    match event {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.unwrap()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.unwrap()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.unwrap()),
        WatchEvent::Bookmark(b) => format!(
            "BOOKMARK {}",
            b.metadata
                .annotations
                .contains_key("k8s.io/initial-events-end")
        ),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

#[tokio::test]
async fn bookmarks_carry_the_latest_version() {
    let cluster = TestCluster::builder()
        .bookmark_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let created = api
        .create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    // Bookmarks before the change carry the older version; skip them.
    let obj = loop {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Modified(obj) => break obj,
            WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
            other => panic!("expected MODIFIED, got {other:?}"),
        }
    };
    let latest = obj.metadata.resource_version.unwrap();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, latest),
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }
}

#[tokio::test]
async fn changes_into_and_out_of_a_selector_are_added_and_deleted() {
    let cluster = TestCluster::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let created = api
        .create(&PostParams::default(), &cm("a", "other"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let stream = api
        .watch(
            &WatchParams::default()
                .labels("app=web")
                .disable_bookmarks()
                .timeout(30),
            &rv,
        )
        .await
        .unwrap();
    let relabel = |app: &'static str| {
        let api = api.clone();
        async move {
            api.patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"app": app}}})),
            )
            .await
            .unwrap();
        }
    };
    relabel("web").await;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    relabel("other").await;
    api.create(&PostParams::default(), &cm("b", "web"))
        .await
        .unwrap();
    let events: Vec<String> = stream.take(4).map_ok(describe).try_collect().await.unwrap();
    assert_eq!(
        events,
        vec!["ADDED a", "MODIFIED a", "DELETED a", "ADDED b"]
    );
}

#[tokio::test]
async fn streaming_list_sends_initial_events_then_the_end_bookmark() {
    let cluster = TestCluster::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    for name in ["a", "b"] {
        api.create(&PostParams::default(), &cm(name, "web"))
            .await
            .unwrap();
    }
    let stream = api
        .watch(&WatchParams::streaming_lists().timeout(30), "")
        .await
        .unwrap();
    let events: Vec<String> = stream.take(3).map_ok(describe).try_collect().await.unwrap();
    assert_eq!(events, vec!["ADDED a", "ADDED b", "BOOKMARK true"]);
}

#[tokio::test]
async fn timeout_seconds_ends_the_stream() {
    let cluster = TestCluster::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let stream = api
        .watch(&WatchParams::default().disable_bookmarks().timeout(1), "0")
        .await
        .unwrap();
    let events: Vec<_> = stream.try_collect().await.unwrap();
    assert!(events.is_empty(), "{events:?}");
}
