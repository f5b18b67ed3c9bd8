//! core/v1 Events and events.k8s.io/v1 Events are one resource seen in two shapes, as on a real
//! cluster: what a controller records through events.k8s.io (kube's `Recorder`) is listed,
//! selected and watched through core/v1, and shown by `kubectl describe`.

mod common;

use std::path::Path;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent};
use k8s_openapi::api::events::v1::Event as NewEvent;
use kube::Resource;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;
use sluice_e2e::TestCluster;

async fn subject(client: &kube::Client, ns: &str, name: &str) -> ConfigMap {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
    )
    .await
    .unwrap()
}

fn step(reason: &str, note: &str) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Promote".into(),
        secondary: None,
    }
}

#[tokio::test]
async fn a_recorded_event_is_a_core_event_about_the_same_object() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let cm = subject(&client, "default", "subject").await;
    let recorder = Recorder::new(client.clone(), Reporter::from("sluice-test"));
    let reference = cm.object_ref(&());
    recorder
        .publish(&step("StepCompleted", "step 1 of 3"), &reference)
        .await
        .unwrap();
    recorder
        .publish(&step("StepCompleted", "step 1 of 3"), &reference)
        .await
        .unwrap();

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let list = core.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1, "{list:?}");
    let e = &list.items[0];
    assert_eq!(e.involved_object.name.as_deref(), Some("subject"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(e.involved_object.uid, cm.metadata.uid);
    assert_eq!(e.message.as_deref(), Some("step 1 of 3"));
    assert_eq!(e.reason.as_deref(), Some("StepCompleted"));
    assert_eq!(e.reporting_component.as_deref(), Some("sluice-test"));
    assert!(e.reporting_instance.as_ref().is_some_and(|i| !i.is_empty()));
    assert_eq!(e.action.as_deref(), Some("Promote"));
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert!(e.event_time.is_some());
    assert_eq!(
        e.series.as_ref().and_then(|s| s.count),
        Some(2),
        "the Recorder's PATCH of the series is seen through core/v1"
    );

    // The same object, the same resourceVersion, in the other shape.
    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let same = new.get(e.metadata.name.as_deref().unwrap()).await.unwrap();
    assert_eq!(same.metadata.resource_version, e.metadata.resource_version);
    assert_eq!(same.metadata.uid, e.metadata.uid);
    assert_eq!(same.note.as_deref(), Some("step 1 of 3"));
    assert_eq!(same.regarding.as_ref().unwrap().uid, cm.metadata.uid);
    assert_eq!(same.reporting_controller.as_deref(), Some("sluice-test"));
    let list_rv = |rv: Option<String>| rv.unwrap().parse::<u64>().unwrap();
    let new_list = new.list(&ListParams::default()).await.unwrap();
    assert_eq!(new_list.items.len(), 1);
    assert!(
        list_rv(new_list.metadata.resource_version) >= list_rv(e.metadata.resource_version.clone())
    );
}

#[tokio::test]
async fn a_core_event_is_served_through_events_k8s_io_with_its_deprecated_fields() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let cm = subject(&client, "default", "legacy").await;
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let written: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "legacy.1"},
        "involvedObject": {"kind": "ConfigMap", "namespace": "default", "name": "legacy", "uid": cm.metadata.uid},
        "reason": "Scaled", "message": "scaled to 3", "type": "Warning",
        "source": {"component": "old-controller", "host": "node-1"},
        "firstTimestamp": "2026-11-27T10:00:00Z", "lastTimestamp": "2026-11-27T10:05:00Z", "count": 4,
    }))
    .unwrap();
    core.create(&PostParams::default(), &written).await.unwrap();

    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let e = new.get("legacy.1").await.unwrap();
    let regarding = e.regarding.unwrap();
    assert_eq!(regarding.name.as_deref(), Some("legacy"));
    assert_eq!(regarding.uid, cm.metadata.uid);
    assert_eq!(e.note.as_deref(), Some("scaled to 3"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    let source = e.deprecated_source.unwrap();
    assert_eq!(source.component.as_deref(), Some("old-controller"));
    assert_eq!(source.host.as_deref(), Some("node-1"));
    assert_eq!(e.deprecated_count, Some(4));
    assert!(e.deprecated_first_timestamp.is_some() && e.deprecated_last_timestamp.is_some());
    assert!(e.event_time.is_none());

    // A merge patch in the events.k8s.io shape lands on the core fields it maps to; a delete
    // through one API removes the object from both.
    let patched = new
        .patch(
            "legacy.1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}})),
        )
        .await
        .unwrap();
    let through_core = core.get("legacy.1").await.unwrap();
    assert_eq!(
        through_core.metadata.resource_version,
        patched.metadata.resource_version
    );
    assert_eq!(
        through_core
            .metadata
            .labels
            .unwrap()
            .get("seen")
            .map(String::as_str),
        Some("yes")
    );
    new.delete("legacy.1", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(code(core.get("legacy.1").await), 404);
    assert!(
        new.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn events_k8s_io_requires_what_the_real_server_requires() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let missing: NewEvent = serde_json::from_value(json!({
        "metadata": {"name": "bare"},
        "regarding": {"kind": "ConfigMap", "namespace": "default", "name": "x"},
        "reason": "Odd", "type": "Normal",
    }))
    .unwrap();
    let err = new
        .create(&PostParams::default(), &missing)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("eventTime: Required value"),
        "{}",
        status.message
    );

    let no_controller: NewEvent = serde_json::from_value(json!({
        "metadata": {"name": "no-controller"},
        "eventTime": "2026-11-27T10:00:00.000000Z",
        "regarding": {"kind": "ConfigMap", "namespace": "default", "name": "x"},
        "reason": "Odd", "action": "Look", "reportingInstance": "i", "type": "Normal",
    }))
    .unwrap();
    let err = new
        .create(&PostParams::default(), &no_controller)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("reportingController: Required value"),
        "{}",
        status.message
    );

    // Old clients that set no eventTime must still name an object of the event's namespace.
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let elsewhere: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "elsewhere"},
        "involvedObject": {"kind": "ConfigMap", "namespace": "other", "name": "x"},
        "reason": "Odd", "message": "m",
    }))
    .unwrap();
    assert_eq!(
        code(core.create(&PostParams::default(), &elsewhere).await),
        422
    );
}

#[tokio::test]
async fn server_side_apply_through_events_k8s_io_is_checked_and_shared() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let applied = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "applied.1"},
        "eventTime": "2026-11-27T10:00:00.000000Z",
        "regarding": {"kind": "ConfigMap", "namespace": "default", "name": "cfg"},
        "reportingController": "sluice", "reportingInstance": "sluice-0",
        "action": "Apply", "reason": "Applied", "note": "first", "type": "Normal",
    });
    let params = PatchParams::apply("events-test");
    let created = new
        .patch("applied.1", &params, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(created.note.as_deref(), Some("first"));
    let stored = core.get("applied.1").await.unwrap();
    assert_eq!(stored.message.as_deref(), Some("first"));
    assert_eq!(stored.involved_object.name.as_deref(), Some("cfg"));

    // Through events.k8s.io an Event's content is immutable, whichever way it is written.
    let mut changed = applied.clone();
    changed["note"] = json!("second");
    assert_eq!(
        code(
            new.patch("applied.1", &params, &Patch::Apply(&changed))
                .await
        ),
        422
    );
    assert_eq!(
        core.get("applied.1").await.unwrap().message.as_deref(),
        Some("first"),
        "a refused apply leaves the stored event alone"
    );
    let mut repeated = applied.clone();
    repeated["series"] = json!({"count": 2, "lastObservedTime": "2026-11-27T10:01:00.000000Z"});
    new.patch("applied.1", &params, &Patch::Apply(&repeated))
        .await
        .unwrap();
    let stored = core.get("applied.1").await.unwrap();
    assert_eq!(stored.series.and_then(|s| s.count), Some(2));
}

#[tokio::test]
async fn field_selectors_of_both_apis_select_the_same_events() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let a = subject(&client, "default", "a").await;
    let b = subject(&client, "default", "b").await;
    let recorder = Recorder::new(client.clone(), Reporter::from("sluice-test"));
    for cm in [&a, &b] {
        recorder
            .publish(&step("Checked", "fine"), &cm.object_ref(&()))
            .await
            .unwrap();
    }
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let uid_a = a.metadata.uid.clone().unwrap();
    let core_names = |l: Vec<CoreEvent>| -> Vec<String> {
        l.into_iter().map(|e| e.metadata.name.unwrap()).collect()
    };
    let new_names = |l: Vec<NewEvent>| -> Vec<String> {
        l.into_iter().map(|e| e.metadata.name.unwrap()).collect()
    };
    // What `kubectl describe` asks for.
    let by_core = core_names(
        core.list(&ListParams::default().fields(&format!(
            "involvedObject.name=a,involvedObject.namespace=default,involvedObject.kind=ConfigMap,involvedObject.uid={uid_a}"
        )))
        .await
        .unwrap()
        .items,
    );
    let by_new = new_names(
        new.list(&ListParams::default().fields(&format!(
            "regarding.name=a,regarding.namespace=default,regarding.kind=ConfigMap,regarding.uid={uid_a}"
        )))
        .await
        .unwrap()
        .items,
    );
    assert_eq!(by_core.len(), 1, "{by_core:?}");
    assert_eq!(by_core, by_new);
    assert!(by_core[0].starts_with("a."), "{by_core:?}");

    let reporter_core = core
        .list(&ListParams::default().fields("reportingComponent=sluice-test,reason=Checked"))
        .await
        .unwrap();
    let reporter_new = new
        .list(&ListParams::default().fields("reportingController=sluice-test,type=Normal"))
        .await
        .unwrap();
    assert_eq!(reporter_core.items.len(), 2);
    assert_eq!(
        core_names(reporter_core.items),
        new_names(reporter_new.items)
    );
    let not_a = new
        .list(&ListParams::default().fields("regarding.name!=a"))
        .await
        .unwrap();
    assert_eq!(new_names(not_a.items).len(), 1);

    // Each API accepts only its own field labels.
    assert_eq!(
        code(
            core.list(&ListParams::default().fields("regarding.name=a"))
                .await
        ),
        400
    );
    assert_eq!(
        code(
            new.list(&ListParams::default().fields("involvedObject.name=a"))
                .await
        ),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_watch_sees_events_k8s_io_writes_in_its_shape() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let cm = subject(&client, "default", "watched").await;
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let new: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let rv = core
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let params = WatchParams::default().fields("involvedObject.name=watched");
    let mut core_stream = core.watch(&params, &rv).await.unwrap().boxed();
    let mut new_stream = new
        .watch(
            &WatchParams::default().fields("regarding.name=watched"),
            &rv,
        )
        .await
        .unwrap()
        .boxed();

    let recorder = Recorder::new(client.clone(), Reporter::from("sluice-test"));
    let reference = cm.object_ref(&());
    recorder
        .publish(&step("Paused", "waiting for approval"), &reference)
        .await
        .unwrap();
    recorder
        .publish(&step("Paused", "waiting for approval"), &reference)
        .await
        .unwrap();

    let Some(WatchEvent::Added(added)) = core_stream.try_next().await.unwrap() else {
        panic!("expected ADDED");
    };
    assert_eq!(added.involved_object.name.as_deref(), Some("watched"));
    assert_eq!(added.message.as_deref(), Some("waiting for approval"));
    let Some(WatchEvent::Modified(modified)) = core_stream.try_next().await.unwrap() else {
        panic!("expected MODIFIED for the series patch");
    };
    assert_eq!(modified.series.and_then(|s| s.count), Some(2));

    let Some(WatchEvent::Added(added_new)) = new_stream.try_next().await.unwrap() else {
        panic!("expected ADDED");
    };
    assert_eq!(added_new.note.as_deref(), Some("waiting for approval"));
    assert_eq!(added_new.metadata.name, added.metadata.name);
    let Some(WatchEvent::Modified(_)) = new_stream.try_next().await.unwrap() else {
        panic!("expected MODIFIED");
    };

    // And the other way: a core/v1 delete is a DELETED in the events.k8s.io shape.
    let name = added.metadata.name.unwrap();
    core.delete(&name, &DeleteParams::default()).await.unwrap();
    let Some(WatchEvent::Deleted(gone)) = new_stream.try_next().await.unwrap() else {
        panic!("expected DELETED");
    };
    assert_eq!(gone.metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(
        gone.regarding.and_then(|r| r.name).as_deref(),
        Some("watched")
    );
}

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("kubectl must be installed (apt-get install kubectl)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_shows_events_recorded_through_events_k8s_io() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.install_crd(sluice_e2e::example_crd()).unwrap();
    let client = cluster.client();
    let widgets = widgets(&client, "default");
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "e2e.sluice.dev/v1", "kind": "Widget",
        "metadata": {"name": "gizmo"}, "spec": {"size": "large"},
    }))
    .unwrap();
    let widget = widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    let recorder = Recorder::new(client.clone(), Reporter::from("sluice"));
    recorder
        .publish(
            &Event {
                type_: EventType::Warning,
                reason: "AnalysisFailed".into(),
                note: Some("error rate 7% above 5%".into()),
                action: "Abort".into(),
                secondary: None,
            },
            &widget.object_ref(&widget_resource()),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).unwrap();
    let described = kubectl(
        &kubeconfig,
        &["describe", "widget", "gizmo", "-n", "default"],
    )
    .await;
    let events = described
        .split("Events:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section:\n{described}"));
    let row = events
        .lines()
        .find(|l| l.contains("AnalysisFailed"))
        .unwrap_or_else(|| panic!("the event is not listed:\n{described}"));
    assert!(row.contains("Warning"), "{row}");
    assert!(
        row.contains("sluice"),
        "the reporting controller is the source: {row}"
    );
    assert!(row.contains("error rate 7% above 5%"), "{row}");

    for resource in ["events", "events.v1.events.k8s.io"] {
        let table = kubectl(&kubeconfig, &["get", resource, "-n", "default"]).await;
        assert!(table.contains("gizmo."), "{resource}: {table}");
    }
    let listed = kubectl(
        &kubeconfig,
        &["get", "events", "-n", "default", "-o", "json"],
    )
    .await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["involvedObject"]["name"], "gizmo");
    assert_eq!(items[0]["message"], "error rate 7% above 5%");

    let listed = kubectl(
        &kubeconfig,
        &[
            "get",
            "events.v1.events.k8s.io",
            "-n",
            "default",
            "-o",
            "json",
        ],
    )
    .await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["regarding"]["name"], "gizmo");
    assert_eq!(items[0]["note"], "error rate 7% above 5%");
}
