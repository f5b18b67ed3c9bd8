//! Reliability of the controller: killed at random points, competing replicas, injected API
//! faults. The outcome must not change, and no write may undo an earlier one.

use std::time::Duration;

use sluice::controller::ControllerConfig;
use sluice::controller::leader::LeaseSettings;
use sluice_e2e::Fault;
use sluice_test_support::controller::*;

const FAST_STEPS: &str = r#"
canaryService: web-canary
stableService: web-stable
scaleDownDelaySeconds: 1
abortScaleDownDelaySeconds: 1
trafficRouting:
  nginx: {stableIngress: web}
steps:
- setWeight: 25
- pause: {duration: 1}
- setWeight: 50
- pause: {duration: 1}
- setWeight: 75
"#;

/// Canary weights written to the canary Ingress, in order, since the write log was cleared.
fn written_weights(cluster: &sluice_e2e::TestCluster) -> Vec<i32> {
    cluster
        .writes()
        .into_iter()
        .filter(|w| w.resource == "ingresses" && w.code < 300)
        .filter_map(|w| {
            // Whatever the patch format (merge, JSON patch, apply), the value follows the key.
            let body = w.body?.to_string();
            let at = body.find("canary-weight\"")? + "canary-weight\"".len();
            let digits: String = body[at..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// A small deterministic generator, so each seed is a reproducible kill schedule.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound.max(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_controller_reaches_the_same_outcome_50_times() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let mut env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 4, "web:0", FAST_STEPS)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let mut previous = current(&env.get("web").await);
    for seed in 0..50u64 {
        let mut rng = Lcg(seed + 1);
        env.cluster.controls().clear_writes();
        let image = format!("web:{}", seed + 1);
        env.set_image("web", &image).await;
        // Kill the controller at a random instant of the update (0–3 s), keep it dead for a
        // random while (0–500 ms), then start a fresh one with empty caches.
        tokio::time::sleep(Duration::from_millis(rng.next(3000))).await;
        if let Some(c) = env.controller.take() {
            c.abort();
        }
        tokio::time::sleep(Duration::from_millis(rng.next(500))).await;
        env.controller = Some(start_controller(&env.cluster, config()).await);
        let r = env
            .wait_for("web", &format!("seed {seed}: promoted"), 90, |r| {
                current(r) != previous
                    && phase(r) == "Healthy"
                    && stable(r) == current(r)
                    && weight(r) == Some(0)
            })
            .await;
        let hash = current(&r).unwrap();
        previous = Some(hash.clone());
        assert_eq!(env.pods_of(&hash).await, 4, "seed {seed}");
        assert_eq!(
            env.service_hash("web-stable").await.as_deref(),
            Some(hash.as_str())
        );
        let weights = written_weights(env.cluster.controls());
        // Weights only go up during the update, then back to 0 once promoted: no write undoes
        // an earlier one.
        assert!(!weights.is_empty(), "seed {seed}: no weight written");
        let last_nonzero = weights.iter().rposition(|w| *w != 0).unwrap_or(0);
        let rising = &weights[..=last_nonzero];
        assert!(
            rising.windows(2).all(|p| p[0] <= p[1]),
            "seed {seed}: weights moved backwards: {weights:?}"
        );
        assert!(
            weights.iter().all(|w| [0, 25, 50, 75, 100].contains(w)),
            "seed {seed}: {weights:?}"
        );
        assert_eq!(weights.last(), Some(&0), "seed {seed}: {weights:?}");
    }
}

/// The Service watch lags a second and a half behind the others: a reconcile woken by the
/// status write that follows a canary Service switch finds the Service cache still at the old
/// selector. The controller must plan from what it wrote, not set the weight back to 0 until
/// the cache catches up (traffic moving backwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_service_watch_never_moves_traffic_backwards() {
    lagging_watch_never_moves_traffic_backwards("services").await;
}

/// The same with the ReplicaSet watch behind: the planner sees fewer available canary pods
/// than it already routed traffic to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_set_watch_never_moves_traffic_backwards() {
    lagging_watch_never_moves_traffic_backwards("replicasets").await;
}

async fn lagging_watch_never_moves_traffic_backwards(plural: &str) {
    if skip_on_real_cluster("needs a lagging watch and the write log") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 4, "web:0", FAST_STEPS)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let mut previous = current(&env.get("web").await);
    for image in ["web:1", "web:2"] {
        env.cluster.controls().clear_writes();
        env.cluster
            .controls()
            .lag_watch(plural, Duration::from_millis(1500));
        env.set_image("web", image).await;
        let r = env
            .wait_for("web", &format!("{image} promoted"), 90, |r| {
                current(r) != previous
                    && phase(r) == "Healthy"
                    && stable(r) == current(r)
                    && weight(r) == Some(0)
            })
            .await;
        previous = current(&r);
        env.cluster.controls().lag_watch(plural, Duration::ZERO);
        assert_eq!(
            env.service_hash("web-stable").await,
            current(&r),
            "{image}: stable Service on the new version"
        );
        let weights = written_weights(env.cluster.controls());
        let last_nonzero = weights.iter().rposition(|w| *w != 0).unwrap_or(0);
        assert!(
            weights[..=last_nonzero].windows(2).all(|p| p[0] <= p[1]),
            "{image}: weights moved backwards: {weights:?}"
        );
        assert_eq!(weights.first(), Some(&25), "{image}: {weights:?}");
        assert_eq!(weights.last(), Some(&0), "{image}: {weights:?}");
        // Each selector switch written once: the write is remembered, not repeated.
        let service_writes = env
            .cluster
            .controls()
            .writes()
            .into_iter()
            .filter(|w| w.resource == "services" && w.code < 300)
            .count();
        assert_eq!(
            service_writes, 2,
            "{image}: canary switch and stable switch"
        );
        // The new version's ReplicaSet created once: the reconciles that run before the
        // lagging cache shows it use the object the create returned, not create it again.
        let creates: Vec<u16> = env
            .cluster
            .controls()
            .writes()
            .into_iter()
            .filter(|w| w.resource == "replicasets" && w.verb == "create")
            .map(|w| w.code)
            .collect();
        assert_eq!(creates, vec![201], "{image}: ReplicaSet creates");
    }
}

fn leader_config(identity: &str, namespace: &str) -> ControllerConfig {
    ControllerConfig {
        lease: Some(LeaseSettings {
            name: "sluice-controller-lock".into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(3),
            retry: Duration::from_millis(500),
        }),
        identity: identity.into(),
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_the_standby_takes_over() {
    if skip_on_real_cluster("needs the write log and clients with their own identity") {
        return;
    }
    let env = Env::without_controller().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let a = sluice::controller::start(
        env.cluster.controls().client_as("replica-a").unwrap(),
        leader_config("replica-a", env.ns()),
    )
    .await
    .unwrap();
    // Let replica-a take the Lease first, so the roles are known.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !a.leader.is_leader() {
        assert!(std::time::Instant::now() < deadline, "replica-a never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = sluice::controller::start(
        env.cluster.controls().client_as("replica-b").unwrap(),
        leader_config("replica-b", env.ns()),
    )
    .await
    .unwrap();
    env.create(&rollout("web", 2, "web:1", FAST_STEPS)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let before = current(&env.get("web").await);
    env.set_image("web", "web:2").await;
    env.wait_for("web", "promoted by the leader", 60, |r| {
        current(r) != before
            && phase(r) == "Healthy"
            && stable(r) == current(r)
            && weight(r) == Some(0)
    })
    .await;
    assert!(!b.leader.is_leader());
    let non_lease = |id: &str| {
        env.cluster
            .controls()
            .writes()
            .into_iter()
            .filter(|w| w.identity.as_deref() == Some(id) && w.resource != "leases")
            .count()
    };
    assert!(non_lease("replica-a") > 0, "the leader wrote");
    assert_eq!(non_lease("replica-b"), 0, "the standby wrote nothing");

    // The leader stops; the standby takes over within one lease duration (plus its retry).
    a.abort();
    let stopped = std::time::Instant::now();
    while !b.leader.is_leader() {
        // A guard against waiting for ever, not a timing check: on an idle machine the
        // takeover comes within one lease duration (3 s) and a retry.
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "standby did not take over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = current(&env.get("web").await);
    env.set_image("web", "web:3").await;
    env.wait_for("web", "promoted by the new leader", 60, |r| {
        current(r) != before
            && phase(r) == "Healthy"
            && stable(r) == current(r)
            && weight(r) == Some(0)
    })
    .await;
    assert!(non_lease("replica-b") > 0, "the new leader wrote");
}

/// A partitioned leader: every Lease request of replica-a hangs (its renewals never answer)
/// while its other requests go through. It must stop writing at its renew deadline, before
/// its Lease expires; replica-b then takes over and finishes the rollout, and the write log has
/// no write of replica-a after the takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_stops_writing_before_its_lease_expires() {
    if skip_on_real_cluster("needs fault injection per identity and the write log") {
        return;
    }
    let env = Env::without_controller().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let a = sluice::controller::start(
        env.cluster.controls().client_as("replica-a").unwrap(),
        leader_config("replica-a", env.ns()),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !a.leader.is_leader() {
        assert!(std::time::Instant::now() < deadline, "replica-a never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = sluice::controller::start(
        env.cluster.controls().client_as("replica-b").unwrap(),
        leader_config("replica-b", env.ns()),
    )
    .await
    .unwrap();
    // A long pause at the first step: the partition starts while an update is in progress, so
    // replica-a still has writes to make, even when a busy machine makes this test slow to look.
    let steps = FAST_STEPS.replace(
        "- pause: {duration: 1}\n- setWeight: 50",
        "- pause: {duration: 10}\n- setWeight: 50",
    );
    assert_ne!(steps, FAST_STEPS);
    env.create(&rollout("web", 2, "web:1", &steps)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let before = current(&env.get("web").await);
    env.set_image("web", "web:2").await;
    env.wait_for("web", "the long pause at 25%", 30, |r| {
        current(r) != before && weight(r) == Some(25) && step(r) == Some(1)
    })
    .await;
    env.cluster.controls().inject(
        Fault::hang(Duration::from_secs(120))
            .resource("leases")
            .identity("replica-a")
            .times(10_000),
    );
    let partitioned = std::time::Instant::now();
    while a.leader.is_leader() {
        // Lease duration 3 s: the gate closes at the renew deadline, 2 s after the last renewal
        // started, so within the duration. What matters is checked below from the order of
        // events (replica-a stopped before replica-b led, and the write log); this only keeps
        // the test from waiting for ever.
        assert!(
            partitioned.elapsed() < Duration::from_secs(30),
            "replica-a still leads {:?} after its renewals stopped",
            partitioned.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a_stopped = partitioned.elapsed();
    while !b.leader.is_leader() {
        assert!(
            partitioned.elapsed() < Duration::from_secs(30),
            "replica-b never took over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b_leads = partitioned.elapsed();
    assert!(
        a_stopped < b_leads,
        "a stopped {a_stopped:?}, b led {b_leads:?}"
    );
    env.wait_for("web", "promoted by the new leader", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r) && weight(r) == Some(0)
    })
    .await;
    let writes = env.cluster.controls().writes();
    let takeover = writes
        .iter()
        .find(|w| {
            w.identity.as_deref() == Some("replica-b") && w.resource == "leases" && w.code < 300
        })
        .map(|w| w.seq)
        .expect("replica-b wrote the Lease to take it");
    let late: Vec<_> = writes
        .iter()
        .filter(|w| w.identity.as_deref() == Some("replica-a") && w.seq > takeover && w.code < 300)
        .map(|w| format!("{} {} {:?}", w.verb, w.resource, w.name))
        .collect();
    assert!(
        late.is_empty(),
        "replica-a wrote after the takeover: {late:?}"
    );
    assert!(
        writes
            .iter()
            .any(|w| w.identity.as_deref() == Some("replica-b") && w.resource == "ingresses"),
        "the new leader moved the traffic"
    );
    a.abort();
    b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_converges_through_conflicts_errors_and_dropped_watches() {
    if skip_on_real_cluster("needs fault injection and dropped watches") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 3, "web:1", FAST_STEPS)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.cluster.controls().inject(
        Fault::fail(409)
            .verb("patch")
            .resource("replicasets")
            .times(2),
    );
    env.cluster.controls().inject(
        Fault::fail(500)
            .verb("update")
            .resource("rollouts")
            .times(2),
    );
    env.cluster.controls().inject(
        Fault::fail(500)
            .verb("patch")
            .resource("ingresses")
            .times(1),
    );
    env.cluster
        .controls()
        .inject(Fault::fail(409).verb("patch").resource("services").times(1));
    env.set_image("web", "web:2").await;
    env.wait_for("web", "weight 25", 60, |r| weight(r) >= Some(25))
        .await;
    env.cluster.controls().drop_watches();
    env.cluster.controls().expire_watch_history();
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.cluster.controls().drop_watches();
    env.wait_for("web", "promoted despite faults", 90, |r| {
        phase(r) == "Healthy" && stable(r) == current(r) && weight(r) == Some(0)
    })
    .await;
    assert!(
        env.cluster.controls().pending_faults().is_empty(),
        "every injected fault was hit: {:?}",
        env.cluster.controls().pending_faults()
    );
}
