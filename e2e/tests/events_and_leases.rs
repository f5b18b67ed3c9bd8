//! Clients other controllers rely on: kube's event `Recorder` (create, then patch into a series),
//! optimistic Lease updates as a leader-election loop does them, cluster-wide watches and
//! collection deletes.

mod common;

use std::collections::BTreeSet;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use sluice_e2e::TestCluster;

#[tokio::test]
async fn recorder_creates_then_aggregates_events() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "subject"}})).unwrap(),
        )
        .await
        .unwrap();
    let recorder = Recorder::new(client.clone(), Reporter::from("sluice-test"));
    let event = Event {
        type_: EventType::Normal,
        reason: "StepCompleted".into(),
        note: Some("step 1 of 3".into()),
        action: "Promote".into(),
        secondary: None,
    };
    recorder.publish(&event, &cm.object_ref(&())).await.unwrap();
    recorder.publish(&event, &cm.object_ref(&())).await.unwrap();
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list.items.len(),
        1,
        "the repeat is patched into the same event"
    );
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("StepCompleted"));
    assert_eq!(
        e.regarding.as_ref().unwrap().name.as_deref(),
        Some("subject")
    );
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    let verbs: Vec<String> = cluster
        .writes()
        .into_iter()
        .filter(|w| w.resource == "events")
        .map(|w| w.verb)
        .collect();
    assert_eq!(verbs, vec!["create", "patch"]);
}

#[tokio::test]
async fn lease_takeover_uses_optimistic_concurrency() {
    let cluster = TestCluster::start().await.unwrap();
    let leases_a: Api<Lease> = Api::namespaced(cluster.client_as("replica-a").unwrap(), "default");
    let leases_b: Api<Lease> = Api::namespaced(cluster.client_as("replica-b").unwrap(), "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "sluice-leader"},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15, "acquireTime": "2026-01-01T00:00:00.000000Z"}
    }))
    .unwrap();
    let held = leases_a
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    // Both replicas read the same version; only the first renewal wins.
    let mut renew = held.clone();
    renew.spec.as_mut().unwrap().lease_transitions = Some(0);
    let mut steal = held.clone();
    steal.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    leases_a
        .replace("sluice-leader", &PostParams::default(), &renew)
        .await
        .unwrap();
    assert_eq!(
        code(
            leases_b
                .replace("sluice-leader", &PostParams::default(), &steal)
                .await
        ),
        409
    );
    let current = leases_b.get("sluice-leader").await.unwrap();
    assert_eq!(
        current.spec.unwrap().holder_identity.as_deref(),
        Some("replica-a")
    );
    let lease_writers: BTreeSet<(Option<String>, u16)> = cluster
        .writes()
        .into_iter()
        .filter(|w| w.resource == "leases")
        .map(|w| (w.identity, w.code))
        .collect();
    assert_eq!(
        lease_writers,
        [
            (Some("replica-a".to_string()), 200),
            (Some("replica-a".to_string()), 201),
            (Some("replica-b".to_string()), 409)
        ]
        .into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_watch_and_delete_collection() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let ns1 = namespace(&client, "wide").await;
    let ns2 = namespace(&client, "wide").await;
    let all: Api<ConfigMap> = Api::all(client.clone());
    let mut stream = watcher(all.clone(), watcher::Config::default().labels("app=wide"))
        .applied_objects()
        .boxed();
    for ns in [&ns1, &ns2] {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        for name in ["a", "b"] {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    labels: Some([("app".to_string(), "wide".to_string())].into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await.unwrap();
        }
    }
    let mut seen = BTreeSet::new();
    while seen.len() < 4 {
        let cm = stream.next().await.unwrap().unwrap();
        seen.insert((cm.metadata.namespace.unwrap(), cm.metadata.name.unwrap()));
    }
    let api1: Api<ConfigMap> = Api::namespaced(client.clone(), &ns1);
    api1.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=wide"),
    )
    .await
    .unwrap();
    let left = all
        .list(&ListParams::default().labels("app=wide"))
        .await
        .unwrap();
    let namespaces: BTreeSet<String> = left
        .items
        .into_iter()
        .map(|c| c.metadata.namespace.unwrap())
        .collect();
    assert_eq!(namespaces, [ns2.clone()].into());
}
