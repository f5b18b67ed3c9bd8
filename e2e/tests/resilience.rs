//! A kube-rs `watcher` and `Controller` against the test cluster, surviving injected 409s, 500s,
//! dropped watches and expired watch history (410 Gone).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use sluice_e2e::{Fault, TestCluster};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

/// Makes watchers resume from a version that is gone: their next watch request is held, the
/// store moves on (`write`), the history is forgotten, and the held request then gets 410.
async fn expire_while_reconnecting<F, Fut>(cluster: &TestCluster, identity: Option<&str>, write: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut hold = Fault::hang(Duration::from_secs(5)).verb("watch").times(1);
    if let Some(id) = identity {
        hold = hold.identity(id);
    }
    cluster.inject(hold);
    cluster.drop_watches();
    write().await;
    cluster.expire_watch_history();
}

#[derive(Default)]
struct Seen {
    names: BTreeSet<String>,
    inits: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_survives_dropped_watches_errors_and_expired_history() {
    let cluster = TestCluster::builder()
        .watch_history(50)
        .start()
        .await
        .unwrap();
    let client = cluster.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    let stream = watcher::watcher(api.clone(), watcher::Config::default()).default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let mut seen = sink.lock().unwrap();
            match event {
                Ok(Event::Init) => seen.inits += 1,
                Ok(Event::Apply(o) | Event::InitApply(o)) => {
                    seen.names.insert(o.metadata.name.unwrap());
                }
                _ => {}
            }
        }
    });
    let saw = |name: &'static str| {
        let seen = seen.clone();
        async move { seen.lock().unwrap().names.contains(name) }
    };
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    eventually("a seen", || saw("a")).await;

    cluster.drop_watches();
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    eventually("b seen after dropped watches", || saw("b")).await;

    cluster.inject(
        Fault::fail(500)
            .verb("watch")
            .resource("configmaps")
            .times(2),
    );
    cluster.drop_watches();
    api.create(&PostParams::default(), &cm("c")).await.unwrap();
    eventually("c seen after failing watches", || saw("c")).await;
    eventually("watch faults consumed", || async {
        cluster.pending_faults().is_empty()
    })
    .await;

    let inits_before = seen.lock().unwrap().inits;
    expire_while_reconnecting(&cluster, None, || async {
        api.create(&PostParams::default(), &cm("d")).await.unwrap();
    })
    .await;
    cluster.inject(
        Fault::fail(500)
            .verb("list")
            .resource("configmaps")
            .times(1),
    );
    eventually("d seen after 410 and a failed relist", || saw("d")).await;
    eventually("relisted after 410", || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().inits > inits_before }
    })
    .await;
    assert!(cluster.request_counts()["expired configmaps"] >= 1);
    assert!(
        cluster.pending_faults().is_empty(),
        "the failing list was exercised"
    );
    task.abort();
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed: {0}")]
struct ReconcileError(#[from] kube::Error);

/// Copies `spec.size` to `status.observedSize` with an optimistic-concurrency status update.
async fn reconcile(
    obj: Arc<DynamicObject>,
    api: Arc<Api<DynamicObject>>,
) -> Result<Action, ReconcileError> {
    let mut next = (*obj).clone();
    next.data["status"] = json!({"phase": obj.data["spec"]["size"].clone()});
    if obj.data.get("status") != next.data.get("status") {
        api.replace_status(
            &obj.metadata.name.clone().unwrap(),
            &PostParams::default(),
            &next,
        )
        .await?;
    }
    Ok(Action::await_change())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_converges_despite_conflicts_server_errors_and_410s() {
    let cluster = TestCluster::builder()
        .watch_history(50)
        .start()
        .await
        .unwrap();
    let client = cluster.client();
    install_widget_crd(&client).await;
    let api = widgets(&client, "default");
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &widget(&format!("w{i}"), json!({"size": "small"})),
        )
        .await
        .unwrap();
    }
    // Faults hit only the controller's requests, not the test's own.
    let controller_api = widgets(&cluster.client_as("controller").unwrap(), "default");
    let only = |f: Fault| f.resource("widgets").identity("controller");
    cluster.inject(only(
        Fault::fail(409)
            .verb("update")
            .subresource("status")
            .times(3),
    ));
    cluster.inject(only(
        Fault::fail(500)
            .verb("update")
            .subresource("status")
            .times(2),
    ));
    cluster.inject(only(Fault::fail(500).verb("list").times(1)));
    let shared = Arc::new(controller_api.clone());
    let controller = Controller::new_with(
        controller_api,
        watcher::Config::default(),
        widget_resource(),
    )
    .run(
        reconcile,
        |_obj, _err: &ReconcileError, _ctx| Action::requeue(Duration::from_millis(100)),
        shared,
    )
    .for_each(|_| async {});
    let task = tokio::spawn(controller);

    let all_phases = |size: &'static str| {
        let api = api.clone();
        async move {
            let list = api.list(&Default::default()).await.unwrap();
            list.items.len() == 5 && list.items.iter().all(|w| w.data["status"]["phase"] == size)
        }
    };
    eventually("all widgets reconciled", || all_phases("small")).await;
    assert!(
        cluster.pending_faults().is_empty(),
        "every injected fault was hit: {:?}",
        cluster.pending_faults()
    );
    let failed: Vec<u16> = cluster
        .writes()
        .iter()
        .filter(|w| w.subresource.as_deref() == Some("status") && w.code >= 400)
        .map(|w| w.code)
        .collect();
    assert_eq!(failed.iter().filter(|c| **c == 409).count(), 3);
    assert_eq!(failed.iter().filter(|c| **c == 500).count(), 2);

    // Now the controller's watch resumes from a version that is gone; it must relist and carry on.
    expire_while_reconnecting(&cluster, Some("controller"), || async {
        for i in 0..5 {
            api.patch(
                &format!("w{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"size": "large"}})),
            )
            .await
            .unwrap();
        }
    })
    .await;
    eventually("all widgets reconciled after 410", || all_phases("large")).await;
    assert!(
        cluster.request_counts()["expired widgets"] >= 1,
        "{:?}",
        cluster.request_counts()
    );
    task.abort();
}

#[tokio::test]
async fn write_log_records_identity_manager_and_outcome() {
    let cluster = TestCluster::start().await.unwrap();
    let leader = cluster.client_as("replica-a").unwrap();
    let follower = cluster.client_as("replica-b").unwrap();
    let api_a: Api<ConfigMap> = Api::namespaced(leader, "default");
    let api_b: Api<ConfigMap> = Api::namespaced(follower, "default");
    api_a
        .create(
            &PostParams {
                field_manager: Some("sluice".into()),
                ..Default::default()
            },
            &cm("x"),
        )
        .await
        .unwrap();
    let _ = api_b.get("x").await.unwrap();
    cluster.inject(Fault::fail(503).verb("patch").name("x"));
    let refused = api_b
        .patch("x", &PatchParams::apply("sluice"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "v"}})))
        .await;
    // kube retries 503 by default, so the retry succeeds: two log entries, one refused.
    assert!(refused.is_ok(), "{refused:?}");
    let writes = cluster.writes();
    let summary: Vec<(Option<&str>, &str, u16, Option<&str>)> = writes
        .iter()
        .map(|w| {
            (
                w.identity.as_deref(),
                w.verb.as_str(),
                w.code,
                w.field_manager.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some("replica-a"), "create", 201, Some("sluice")),
            (Some("replica-b"), "patch", 503, Some("sluice")),
            (Some("replica-b"), "patch", 200, Some("sluice")),
        ]
    );
    assert_eq!(writes[2].body.as_ref().unwrap()["data"]["k"], "v");
}

#[tokio::test]
async fn hang_fault_delays_but_serves_the_request() {
    let cluster = TestCluster::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    api.create(&PostParams::default(), &cm("slow"))
        .await
        .unwrap();
    cluster.inject(
        Fault::hang(Duration::from_millis(300))
            .verb("get")
            .name("slow"),
    );
    let started = tokio::time::Instant::now();
    assert!(api.get("slow").await.is_ok());
    // Not a timing assertion on the server: the request can only finish after the injected wait.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(cluster.pending_faults().is_empty());
}
