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

    // Writes per step. Weights 20, 40, 60, 80, 100 and back to 0 after promotion: one canary
    // Ingress patch each.
    let count = |k: &str| writes.get(k).copied().unwrap_or(0);
    assert_eq!(count("patch ingresses"), 6, "{writes:#?}");
    // One ReplicaSet created; the canary scaled 1 → 2 → 3 → 4 (weights 20..80 of 4 replicas
    // round up: 1, 2, 3, 4; 100 needs no more), the old one scaled down once after the delay,
    // with its scale-down deadline annotated first.
    assert_eq!(count("create replicasets"), 1, "{writes:#?}");
    assert!(count("patch replicasets") <= 6, "{writes:#?}");
    // Status: at most one per step (5), plus promotion and completion.
    assert!(count("update rollouts/status") <= 7, "{writes:#?}");
    // Stable and canary Service selectors: canary to the new hash, then stable to it.
    assert!(count("patch services") <= 2, "{writes:#?}");
    let total: usize = writes.values().sum();
    assert!(total <= 22, "{total} writes for 5 steps: {writes:#?}");
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
    for (k, _) in &requests {
        assert!(
            !k.starts_with("get ") && !k.starts_with("list "),
            "settled Rollout read {k}: {requests:#?}"
        );
    }
}
