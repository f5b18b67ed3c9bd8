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
