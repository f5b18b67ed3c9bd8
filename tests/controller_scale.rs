//! What a reconcile costs the API server: no reads of the routing objects (the routers read
//! their watch cache), the fewest writes per canary step, and none once a Rollout is settled.
//! Counted from the test cluster's request counters and write log.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_test_support::controller::*;

const ROUTED_5_STEPS: &str = r#"
canaryService: web-canary
stableService: web-stable
scaleDownDelaySeconds: 1
trafficRouting:
  nginx: {stableIngress: web}
steps:
- setWeight: 20
- setWeight: 40
- setWeight: 60
- setWeight: 80
- setWeight: 100
"#;

/// Requests counted since `before`, by `"<verb> <plural>"`, for the keys that grew.
fn grown(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// Successful writes since the log was cleared, Events left out, by `"<verb> <resource>[/sub]"`.
fn writes_by_kind(cluster: &sluice_e2e::TestCluster) -> BTreeMap<String, usize> {
    let mut by_kind = BTreeMap::new();
    for w in cluster.writes() {
        if w.code >= 300 || w.resource == "events" {
            continue;
        }
        let sub = w.subresource.map(|s| format!("/{s}")).unwrap_or_default();
        *by_kind
            .entry(format!("{} {}{sub}", w.verb, w.resource))
            .or_insert(0) += 1;
    }
    by_kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_canary_reads_no_routing_object_and_writes_the_minimum_per_step() {
    if skip_on_real_cluster("needs the request counters and the write log") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 4, "web:1", ROUTED_5_STEPS))
        .await;
    let first = env
        .wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let v1 = current(&first);
    // Let trailing reconciles finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cluster = env.cluster.controls();
    cluster.clear_writes();
    let before = cluster.request_counts();

    env.set_image("web", "web:2").await;
    let started = std::time::Instant::now();
    let done = env
        .wait_for("web", "the update promoted", 120, |r| {
            current(r) != v1
                && stable(r) == current(r)
                && phase(r) == "Healthy"
                && weight(r) == Some(0)
        })
        .await;
    // Until the old ReplicaSet is scaled down (scaleDownDelaySeconds: 1) and every reconcile
    // that follows has run.
    let v1 = v1.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let old = env
            .replica_sets()
            .await
            .into_iter()
            .find(|rs| rs.metadata.name.as_deref() == Some(&format!("web-{v1}")))
            .and_then(|rs| rs.spec.and_then(|s| s.replicas));
        if old == Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "old ReplicaSet never scaled down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Replica counts held back are written at most once per 10 s on their own: on a busy
    // machine, where a step's pods take longer to start, some are.
    let counter_writes = (started.elapsed().as_secs() / 10) as usize;
    let requests = grown(&before, &cluster.request_counts());
    let writes = writes_by_kind(cluster);
    eprintln!("requests during the update: {requests:#?}\nwrites: {writes:#?}");
    assert_eq!(stable(&done), current(&done));

    // Zero reads: the routers' Ingresses and the Services come from the watch caches.
    for read in [
        "get ingresses",
        "get services",
        "list ingresses",
        "list services",
    ] {
        assert_eq!(
            requests.get(read),
            None,
            "{read} during a routed update: {requests:#?}"
        );
    }

    // Writes per step (the test's own image patch left out).
    let count = |k: &str| writes.get(k).copied().unwrap_or(0);
    // One weight per step: the previous step's weight is held until the step's pods are up
    // (the available share is not followed pod by pod). 20, 40, 60, 80, 100, and 0 after
    // promotion: six patches of the canary Ingress.
    assert!(count("patch ingresses") <= 6, "{writes:#?}");
    // One ReplicaSet created, scaled up at each of the next three steps (2, 3, 4 of 4
    // replicas); the old one annotated with its scale-down deadline at promotion and scaled to
    // zero after it, in one patch each.
    assert_eq!(count("create replicasets"), 1, "{writes:#?}");
    assert!(count("patch replicasets") <= 5, "{writes:#?}");
    // Status: the new revision, each step's decision, the promotion and the final weight (7),
    // and the Progressing condition's progress time when a step waits for its pods (at most
    // 2 here); replica counts wait for the next of these (or 10 s), so pods starting cost no
    // write of their own.
    assert!(
        count("update rollouts/status") <= 9 + counter_writes,
        "{writes:#?}"
    );
    // Canary Service to the new hash, then stable to it at promotion.
    assert!(count("patch services") <= 2, "{writes:#?}");
    let total: usize = writes.values().sum::<usize>() - count("patch rollouts");
    assert!(
        total <= 23 + counter_writes,
        "{total} writes for 5 steps: {writes:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_routed_rollouts_write_and_read_nothing() {
    if skip_on_real_cluster("needs the request counters and the write log") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 2, "web:1", ROUTED_5_STEPS))
        .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cluster = env.cluster.controls();
    cluster.clear_writes();
    let before = cluster.request_counts();
    // Every watch re-established: each cached object arrives again and reconciles the Rollout,
    // which must neither write nor read.
    cluster.drop_watches();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = grown(&before, &cluster.request_counts());
    let writes = writes_by_kind(cluster);
    assert!(writes.is_empty(), "settled Rollout wrote: {writes:#?}");
    for k in requests.keys() {
        assert!(
            !k.starts_with("get ") && !k.starts_with("list "),
            "settled Rollout read {k}: {requests:#?}"
        );
    }
}

/// A Rollout named `name` whose pods, selector and Services use the label `app: <name>`, so
/// that several Rollouts share a namespace without sharing pods.
fn own_app(mut ro: sluice::api::rollout::Rollout, name: &str) -> sluice::api::rollout::Rollout {
    let mut v = serde_json::to_value(&ro).unwrap();
    v["spec"]["selector"]["matchLabels"]["app"] = serde_json::json!(name);
    v["spec"]["template"]["metadata"]["labels"]["app"] = serde_json::json!(name);
    ro = serde_json::from_value(v).unwrap();
    ro
}

/// An idle hour of simulated time: the test cluster and the controller share a paused tokio
/// clock (the controller's own clock follows it), so an hour passes in seconds with every timer
/// firing as it would: requeues, watch timeouts and their resumption, Lease renewals, the
/// simulated kubelet. Three settled Rollouts (routed canary, basic canary, blue-green), each
/// updated once first, then an hour in which two of them are reconciled again half-way: the
/// controller writes nothing but the Lease, no Event, reads nothing (the watches resume from
/// their resourceVersion: no LIST), and every Rollout's resourceVersion is as it was.
#[tokio::test(start_paused = true)]
async fn an_idle_hour_of_simulated_time_writes_nothing_but_the_lease() {
    use k8s_openapi::api::core::v1::Service;
    use kube::ResourceExt;
    use kube::api::{Api, PostParams};

    if skip_on_real_cluster("needs the test cluster's clock and write log") {
        return;
    }
    let cluster = sluice_test_support::controller::cluster().await;
    let clock = cluster.controls().clock();
    let ns = cluster.ns.clone();
    let config = sluice::controller::ControllerConfig {
        clock: std::sync::Arc::new(move || clock.now()),
        lease: Some(sluice::controller::leader::LeaseSettings {
            name: "sluice-controller".into(),
            namespace: ns.clone(),
            identity: "sluice".into(),
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }),
        ..config()
    };
    let controller = Some(start_controller(&cluster, config).await);
    let env = Env {
        controller,
        client: cluster.client(),
        cluster,
    };
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let services: Api<Service> = Api::namespaced(env.client.clone(), env.ns());
    for (name, app) in [("bg-active", "bg"), ("bg-preview", "bg")] {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        services
            .create(&PostParams::default(), &svc)
            .await
            .expect("service");
    }
    env.create(&rollout("web", 2, "web:1", ROUTED_5_STEPS))
        .await;
    env.create(&own_app(
        rollout(
            "plain",
            2,
            "web:1",
            "steps:\n- setWeight: 50\n- pause: {duration: 30s}\n",
        ),
        "plain",
    ))
    .await;
    env.create(&own_app(
        sluice_test_support::rollout::blue_green(
            "activeService: bg-active\npreviewService: bg-preview\nscaleDownDelaySeconds: 30\n",
        )
        .name("bg")
        .replicas(2)
        .image("web:1")
        .build(),
        "bg",
    ))
    .await;
    let names = ["web", "plain", "bg"];
    for name in names {
        env.wait_for(name, "healthy", 600, |r| phase(r) == "Healthy")
            .await;
    }
    // One update each, so that the hour starts after a promotion: old ReplicaSets with their
    // scale-down deadlines, a blue-green preview switched back.
    let mut first = Vec::new();
    for name in names {
        first.push(current(&env.get(name).await));
        env.set_image(name, "web:2").await;
    }
    for (name, v1) in names.iter().zip(&first) {
        env.wait_for(name, "the update promoted", 600, |r| {
            current(r) != *v1 && stable(r) == current(r) && phase(r) == "Healthy"
        })
        .await;
    }
    // Past every scale-down delay, with time for what follows them.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let versions: Vec<String> = {
        let mut v = Vec::new();
        for name in names {
            v.push(env.get(name).await.resource_version().unwrap_or_default());
        }
        v
    };
    let controls = env.cluster.controls();
    controls.clear_writes();
    let before = controls.request_counts();

    let reconciles = || {
        env.controller
            .as_ref()
            .unwrap()
            .metrics
            .reconciles
            .get_or_create(&sluice::controller::metrics::ControllerLabels {
                controller: "rollout".into(),
            })
            .get()
    };
    let reconciles_before = reconciles();

    let hour_started = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(1800)).await;
    // Half-way, a label added to the routed Rollout's Ingress and to the blue-green active
    // Service, as a GitOps sync of unrelated metadata would: both Rollouts are reconciled
    // 30 minutes after they settled, and still have nothing to write.
    let labelled = serde_json::json!({"metadata": {"labels": {"team": "web"}}});
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(env.client.clone(), env.ns());
    ingresses
        .patch(
            "web",
            &Default::default(),
            &kube::api::Patch::Merge(&labelled),
        )
        .await
        .unwrap();
    services
        .patch(
            "bg-active",
            &Default::default(),
            &kube::api::Patch::Merge(&labelled),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1800)).await;
    assert!(hour_started.elapsed() >= Duration::from_secs(3600));

    let requests = grown(&before, &controls.request_counts());
    let reconciled = reconciles() - reconciles_before;
    let controller_agent = sluice::kube_client::controller_user_agent();
    let by_controller: Vec<_> = controls
        .writes()
        .into_iter()
        .filter(|w| w.user_agent.as_deref() == Some(controller_agent.as_str()))
        .collect();
    let lease_writes = by_controller
        .iter()
        .filter(|w| w.resource == "leases")
        .count();
    let written: Vec<_> = by_controller
        .into_iter()
        .filter(|w| w.resource != "leases")
        .map(|w| (w.verb, w.resource, w.subresource, w.name, w.body))
        .collect();
    eprintln!(
        "an idle hour: {reconciled} reconciles, lease writes {lease_writes}, other writes {}, requests by kind: {requests:#?}",
        written.len()
    );
    assert!(reconciled >= 2, "{reconciled} reconciles during the hour");
    assert!(
        written.is_empty(),
        "settled Rollouts wrote during an idle hour: {written:#?}"
    );
    // The Lease was renewed all along (every 2 s): the hour really passed for the controller.
    assert!(lease_writes >= 1000, "{lease_writes} Lease renewals");
    for k in requests.keys() {
        assert!(
            !k.starts_with("get ") || k == "get leases",
            "read {k} while idle: {requests:#?}"
        );
        assert!(
            !k.starts_with("list "),
            "listed again while idle ({k}): {requests:#?}"
        );
    }
    for (name, rv) in names.iter().zip(&versions) {
        assert_eq!(
            &env.get(name).await.resource_version().unwrap_or_default(),
            rv,
            "{name} changed during an idle hour"
        );
    }
}
