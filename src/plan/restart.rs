//! `spec.restartAt`: replacing every pod created before an instant, as Argo Rollouts does
//! (`rollout/restart.go`, `docs/features/restart.md`).
//!
//! A restart is pending while `spec.restartAt` is set and differs from `status.restartedAt`.
//! Once `restartAt` has passed, pods of the Rollout's ReplicaSets created before it are
//! *evicted* (so PodDisruptionBudgets apply) and their ReplicaSets create replacements; no
//! update step is walked. How many may go at once follows Argo: with `maxUnavailable` resolved
//! against `spec.replicas` (at least 1), available pods never drop below
//! `max(spec.replicas, pods the ReplicaSets should run) - maxUnavailable`, so a restart during
//! an update waits while the update's own pods are not available. Pods are taken from the stable
//! ReplicaSet first, then the current one, then older ones from the oldest revision; within a
//! ReplicaSet the oldest pod first. When no pod older than `restartAt` is left,
//! `status.restartedAt` records it. A new pod template (or new steps) cancels the restart: the
//! update replaces the pods anyway.
//!
//! A plan that evicts does nothing else (Argo returns early too): the ReplicaSets' availability
//! it would scale from does not count the pods it is evicting; the next reconcile does.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::context::{Ctx, Journal, add};
use super::types::{DesiredReplicaSet, EventType, Observation, Plan};
use crate::api::constants::reason;
use crate::api::rollout::{Rollout, RolloutStatus};
use crate::api::validation;

/// How long to wait before looking again while pods still need a restart. Availability changes
/// of the ReplicaSets trigger a reconcile sooner; this covers what is not watched (a
/// PodDisruptionBudget that stops refusing). Argo waits 30 s.
pub const RECHECK: Duration = Duration::from_secs(10);

/// A pod of one of the Rollout's ReplicaSets, as the restart sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedPod {
    /// Pod name.
    pub name: String,
    /// Pod-template hash of the ReplicaSet that owns it.
    pub hash: String,
    /// `metadata.creationTimestamp`.
    pub created: Timestamp,
    /// When its `Ready` condition last turned true (None: not ready).
    pub ready_since: Option<Timestamp>,
    /// It has a `deletionTimestamp` (terminating).
    pub deleting: bool,
}

/// The pods a plan evicts for a restart: candidates in order, of which at most `limit` may go.
/// Eviction can be refused (a PodDisruptionBudget): the next candidate is then tried, as Argo
/// does, until `limit` pods went or none is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evictions {
    /// `spec.restartAt` being served.
    pub restart_at: Timestamp,
    /// Pods to evict, in order.
    pub candidates: Vec<String>,
    /// How many may be evicted now.
    pub limit: usize,
    /// Pods created before `restartAt` (including those already terminating).
    pub remaining: usize,
    /// Pods of the Rollout's ReplicaSets.
    pub total: usize,
}

/// Where a restart stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// No restart pending.
    Idle,
    /// `restartAt` is still ahead.
    Scheduled(Timestamp),
    /// Due, but the pods were not observed in this reconcile.
    Unobserved(Timestamp),
    /// Pods to evict now.
    Evict(Evictions),
    /// Pods are left, but none may go now: too few are available.
    Waiting {
        restart_at: Timestamp,
        remaining: usize,
        total: usize,
        unavailable: usize,
        max_unavailable: i32,
    },
    /// No pod is older than `restartAt`: done.
    Done(Timestamp),
}

impl Restart {
    /// What the status message says while the restart is pending (None: nothing pending).
    pub fn message(&self) -> Option<String> {
        match self {
            Restart::Idle | Restart::Done(_) => None,
            Restart::Scheduled(at) => Some(format!(
                "restart scheduled at {at}: pods created before then will be replaced"
            )),
            Restart::Unobserved(at) => Some(format!("restarting pods created before {at}")),
            Restart::Evict(e) => Some(format!(
                "restarting pods created before {}: {} of {} left",
                e.restart_at, e.remaining, e.total
            )),
            Restart::Waiting {
                restart_at,
                remaining,
                total,
                unavailable,
                max_unavailable,
            } => Some(format!(
                "restart of pods created before {restart_at} waiting: {remaining} of {total} \
                 left, {unavailable} unavailable and at most {} may be (maxUnavailable)",
                (*max_unavailable).max(1)
            )),
        }
    }
}

/// `spec.restartAt` when a restart is pending: set, and not yet recorded as done.
pub fn pending(ro: &Rollout) -> Option<Timestamp> {
    let at = ro.spec.restart_at.as_ref()?.0;
    let done = ro.status.as_ref().and_then(|s| s.restarted_at.as_ref());
    (done.map(|t| t.0) != Some(at)).then_some(at)
}

/// True when a restart is pending and its time has come (strictly after `restartAt`, as Argo):
/// only then are the Rollout's pods read.
pub fn due(ro: &Rollout, now: Timestamp) -> bool {
    pending(ro).is_some_and(|at| now > at)
}

/// Where the restart stands for this observation, at `now`, with `status` as planned so far.
pub(super) fn decide(ctx: &Ctx, status: &RolloutStatus) -> Restart {
    let obs = ctx.obs;
    let Some(at) = pending_in(&obs.rollout, status) else {
        return Restart::Idle;
    };
    if ctx.now <= at {
        return Restart::Scheduled(at);
    }
    let Some(pods) = &obs.pods else {
        return Restart::Unobserved(at);
    };
    let order = replica_set_order(obs, status, &ctx.current_hash);
    let rank = |hash: &str| order.iter().position(|h| h == hash);
    // Only pods of the Rollout's ReplicaSets count.
    let mut pods: Vec<&ObservedPod> = pods.iter().filter(|p| rank(&p.hash).is_some()).collect();
    pods.sort_by(|a, b| {
        (rank(&a.hash), a.created, &a.name).cmp(&(rank(&b.hash), b.created, &b.name))
    });
    let old: Vec<&&ObservedPod> = pods.iter().filter(|p| p.created < at).collect();
    if old.is_empty() {
        return Restart::Done(at);
    }
    let min_ready = obs.rollout.spec.min_ready_seconds.unwrap_or(0).max(0);
    let available = pods
        .iter()
        .filter(|p| !p.deleting && is_available(p, min_ready, ctx.now))
        .count();
    let max_unavailable = max_unavailable(ctx);
    let budget = restart_budget(
        ctx.replicas,
        obs.replica_sets.iter().map(|r| r.replicas.max(0)).sum(),
        available as i32,
        max_unavailable,
    );
    let candidates: Vec<String> = old
        .iter()
        .filter(|p| !p.deleting)
        .map(|p| p.name.clone())
        .collect();
    if budget <= 0 || candidates.is_empty() {
        return Restart::Waiting {
            restart_at: at,
            remaining: old.len(),
            total: pods.len(),
            unavailable: pods.len().saturating_sub(available),
            max_unavailable,
        };
    }
    Restart::Evict(Evictions {
        restart_at: at,
        candidates,
        limit: budget as usize,
        remaining: old.len(),
        total: pods.len(),
    })
}

/// How many pods may be evicted now (Argo's `canRestart`): available pods above
/// `max(replicas, total) - max(maxUnavailable, 1)`, where `total` is what the ReplicaSets should
/// run (more than `replicas` at a canary weight that does not divide evenly). At least one pod
/// at a time even with `maxUnavailable: 0`, or a restart could never start.
pub fn restart_budget(replicas: i32, total: i32, available: i32, max_unavailable: i32) -> i32 {
    let concurrent = max_unavailable.max(1);
    let min_available = replicas.max(total) - concurrent;
    available - min_available
}

/// `maxUnavailable` of the canary resolved against `spec.replicas` as Argo's `MaxUnavailable`:
/// rounded down; 1 when it and `maxSurge` (rounded up) both resolve to 0; never above
/// `replicas`; 0 without replicas.
fn max_unavailable(ctx: &Ctx) -> i32 {
    let replicas = ctx.replicas;
    if replicas == 0 {
        return 0;
    }
    // An unreadable value never gets here: the spec would be invalid and the plan stop first.
    let surge = validation::resolve_int_or_percent(ctx.canary.max_surge.as_ref(), replicas, true)
        .unwrap_or(0);
    let unavailable =
        validation::resolve_int_or_percent(ctx.canary.max_unavailable.as_ref(), replicas, false)
            .unwrap_or(0);
    let unavailable = if surge == 0 && unavailable == 0 {
        1
    } else {
        unavailable
    };
    unavailable.min(replicas)
}

/// Kubernetes' pod availability: Ready, and for longer than `minReadySeconds`.
fn is_available(p: &ObservedPod, min_ready_secs: i32, now: Timestamp) -> bool {
    match p.ready_since {
        None => false,
        Some(_) if min_ready_secs == 0 => true,
        Some(since) => add(since, Duration::from_secs(min_ready_secs as u64)) < now,
    }
}

/// The Rollout's ReplicaSets in restart order: stable, current, then the others from the
/// oldest revision (Argo orders those by creation time; revisions grow with it).
fn replica_set_order(obs: &Observation, status: &RolloutStatus, current: &str) -> Vec<String> {
    let stable = status.stable_rs.as_deref();
    let mut others: Vec<(i64, &str)> = obs
        .replica_sets
        .iter()
        .filter(|r| Some(r.hash.as_str()) != stable && r.hash != current)
        .map(|r| (r.revision, r.hash.as_str()))
        .collect();
    others.sort();
    let exists = |h: &str| obs.replica_sets.iter().any(|r| r.hash == h);
    let mut order: Vec<String> = Vec::new();
    for h in stable.into_iter().chain([current]) {
        if exists(h) && !order.iter().any(|o| o == h) {
            order.push(h.to_string());
        }
    }
    order.extend(others.into_iter().map(|(_, h)| h.to_string()));
    order
}

fn pending_in(ro: &Rollout, status: &RolloutStatus) -> Option<Timestamp> {
    let at = ro.spec.restart_at.as_ref()?.0;
    (status.restarted_at.as_ref().map(|t| t.0) != Some(at)).then_some(at)
}

/// A new pod template or new steps cancel a pending restart (Argo records it as done): the
/// update replaces the pods anyway. `changed` says whether this plan saw such a change.
pub(super) fn cancel_on_change(
    obs: &Observation,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    changed: bool,
) {
    if !changed {
        return;
    }
    let Some(at) = pending_in(&obs.rollout, st) else {
        return;
    };
    st.restarted_at = Some(Time(at));
    journal.event(
        EventType::Normal,
        reason::RESTART_CANCELED,
        format!(
            "restart of pods created before {at} canceled: the new pod template or steps \
             replace the pods"
        ),
    );
}

/// Records what the restart means for this plan: `status.restartedAt` once done, and when to
/// look again.
pub(super) fn record(
    restart: &Restart,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    now: Timestamp,
) {
    match restart {
        Restart::Idle | Restart::Evict(_) => {}
        Restart::Scheduled(at) => journal.wake_at(*at),
        Restart::Unobserved(_) => journal.wake_at(add(now, Duration::from_secs(1))),
        Restart::Waiting { .. } => journal.wake_at(add(now, RECHECK)),
        Restart::Done(at) => {
            st.restarted_at = Some(Time(*at));
            journal.event(
                EventType::Normal,
                reason::RESTARTED_PODS,
                format!("every pod was created after {at}: restart complete"),
            );
        }
    }
}

/// The plan of a reconcile that evicts: the evictions and nothing else. ReplicaSets are kept
/// as observed, traffic, Services and runs are left alone, and the status is not rewritten;
/// the next reconcile plans from the availability the evictions leave.
pub(super) fn evict_only(obs: &Observation, evictions: Evictions, status: RolloutStatus) -> Plan {
    let replica_sets = obs
        .replica_sets
        .iter()
        .map(|r| DesiredReplicaSet {
            hash: r.hash.clone(),
            create: false,
            replicas: r.replicas,
            revision: r.revision,
            scale_down_deadline: r.scale_down_deadline,
        })
        .collect();
    Plan {
        invalid: None,
        replica_sets,
        delete_replica_sets: Vec::new(),
        canary_weight: None,
        managed_routes: None,
        stable_service_hash: None,
        canary_service_hash: None,
        create_analysis_runs: Vec::new(),
        terminate_analysis_runs: Vec::new(),
        workload_replicas: None,
        status,
        events: Vec::new(),
        requeue_after: Some(RECHECK),
        evictions: Some(evictions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::types::{ObservedReplicaSet, ObservedTraffic};
    use crate::plan::{self, Observation};

    const T: &str = "2026-01-01T00:10:00Z";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn at(offset_secs: i64) -> Timestamp {
        ts(T) + jiff::SignedDuration::from_secs(offset_secs)
    }

    fn rollout(replicas: i32, canary: serde_json::Value) -> Rollout {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default", "generation": 2},
            "spec": {
                "replicas": replicas,
                "restartAt": T,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
                "strategy": {"canary": canary}
            }
        }))
        .unwrap()
    }

    fn rs(hash: &str, replicas: i32, revision: i64) -> ObservedReplicaSet {
        ObservedReplicaSet {
            name: format!("web-{hash}"),
            hash: hash.into(),
            replicas,
            actual: replicas,
            ready: replicas,
            available: replicas,
            revision,
            scale_down_deadline: None,
            created: None,
        }
    }

    /// `n` ready pods of `hash` named `<hash>-<i>`, created `age` seconds before `T`.
    fn pods(hash: &str, n: usize, age: i64) -> Vec<ObservedPod> {
        (0..n)
            .map(|i| ObservedPod {
                name: format!("{hash}-{i}"),
                hash: hash.into(),
                created: at(-age),
                ready_since: Some(at(-age + 1)),
                deleting: false,
            })
            .collect()
    }

    /// A settled Rollout on `stable` with its ReplicaSets, status and pods.
    fn observation(
        ro: Rollout,
        stable: &str,
        rss: Vec<ObservedReplicaSet>,
        pods: Option<Vec<ObservedPod>>,
    ) -> Observation {
        let mut ro = ro;
        let hash = plan::hash::pod_template_hash(ro.spec.template.as_ref().unwrap(), None);
        ro.status = Some(RolloutStatus {
            stable_rs: Some(stable.into()),
            current_pod_hash: Some(hash),
            ..Default::default()
        });
        Observation {
            template: ro.spec.template.clone(),
            rollout: ro,
            replica_sets: rss,
            analysis_runs: Vec::new(),
            traffic: ObservedTraffic::default(),
            workload: None,
            reference_errors: Vec::new(),
            analysis_templates: None,
            pods,
            refused_replica_set: None,
        }
    }

    fn current(obs: &Observation) -> String {
        plan::hash::pod_template_hash(obs.rollout.spec.template.as_ref().unwrap(), None)
    }

    fn decide_at(obs: &Observation, now: Timestamp) -> Restart {
        let canary = obs.rollout.spec.strategy.canary.as_ref().unwrap();
        let st = obs.rollout.status.clone().unwrap();
        let ctx = Ctx::new(obs, now, canary, current(obs), &st);
        decide(&ctx, &st)
    }

    /// A settled Rollout of `replicas` pods, all created a minute before `T`.
    fn settled(replicas: i32, canary: serde_json::Value) -> Observation {
        let ro = rollout(replicas, canary);
        let mut obs = observation(ro, "x", Vec::new(), None);
        let h = current(&obs);
        obs.rollout.status.as_mut().unwrap().stable_rs = Some(h.clone());
        obs.replica_sets = vec![rs(&h, replicas, 1)];
        obs.pods = Some(pods(&h, replicas as usize, 60));
        obs
    }

    #[test]
    fn budget_is_available_pods_above_the_minimum_argo_keeps() {
        // (replicas, total RS replicas, available, maxUnavailable) -> pods that may go now.
        let table = [
            (4, 4, 4, 3, 3), // Argo's TestRolloutRestart: 75% of 4
            (4, 4, 1, 3, 0), // three already away
            (4, 4, 4, 0, 1), // maxUnavailable 0 still restarts one at a time
            (4, 4, 3, 0, 0), // ... but never a second while one is away
            (10, 10, 10, 2, 2),
            (10, 11, 11, 2, 2), // a surplus canary pod: the minimum follows the total
            (10, 11, 10, 2, 1),
            (4, 4, 4, 4, 4), // 100%: all at once
            (1, 1, 1, 0, 1), // one replica: downtime, as Argo documents
            (3, 3, 0, 1, -2),
        ];
        for (replicas, total, available, max_unavailable, want) in table {
            assert_eq!(
                restart_budget(replicas, total, available, max_unavailable),
                want,
                "replicas {replicas}, total {total}, available {available}, \
                 maxUnavailable {max_unavailable}"
            );
        }
    }

    #[test]
    fn max_unavailable_resolves_as_argo_does() {
        // (replicas, maxSurge, maxUnavailable) -> resolved maxUnavailable.
        use serde_json::json;
        let table = [
            (4, None, None, 1),                         // 25% of 4
            (10, None, None, 2),                        // 25% of 10 rounded down
            (4, None, Some(json!("75%")), 3),           // TestRolloutRestart
            (4, None, Some(json!("100%")), 4),          // TestRolloutPDBRestart
            (3, Some(json!(0)), Some(json!("10%")), 1), // both resolve to 0: 1
            (3, Some(json!(1)), Some(json!(0)), 0),     // surge only: 0 (one at a time anyway)
            (2, None, Some(json!(5)), 2),               // capped at replicas
            (0, None, Some(json!(1)), 0),
        ];
        for (replicas, surge, unavailable, want) in table {
            let mut canary = serde_json::json!({});
            if let Some(s) = surge {
                canary["maxSurge"] = s;
            }
            if let Some(u) = unavailable {
                canary["maxUnavailable"] = u;
            }
            let obs = settled(replicas, canary.clone());
            let c = obs.rollout.spec.strategy.canary.as_ref().unwrap();
            let st = obs.rollout.status.clone().unwrap();
            let ctx = Ctx::new(&obs, at(1), c, current(&obs), &st);
            assert_eq!(max_unavailable(&ctx), want, "replicas {replicas}, {canary}");
        }
    }

    #[test]
    fn a_settled_rollout_evicts_up_to_max_unavailable_oldest_first() {
        let mut obs = settled(4, serde_json::json!({"maxUnavailable": "50%"}));
        let h = current(&obs);
        // Pod 3 is the oldest.
        obs.pods.as_mut().unwrap()[3].created = at(-120);
        let Restart::Evict(e) = decide_at(&obs, at(1)) else {
            panic!("expected evictions");
        };
        assert_eq!(e.limit, 2);
        assert_eq!(
            e.candidates,
            [3, 0, 1, 2].map(|i| format!("{h}-{i}")).to_vec()
        );
        assert_eq!((e.remaining, e.total), (4, 4));
    }

    #[test]
    fn nothing_happens_before_restart_at_and_the_plan_wakes_at_it() {
        let obs = settled(2, serde_json::json!({}));
        assert_eq!(decide_at(&obs, at(-30)), Restart::Scheduled(ts(T)));
        // Exactly at restartAt is not after it (Argo: now.After(restartAt)).
        assert_eq!(decide_at(&obs, ts(T)), Restart::Scheduled(ts(T)));
        let p = plan::plan(&obs, at(-30));
        assert!(p.evictions.is_none());
        assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));
        assert_eq!(p.status.restarted_at, None);
        assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Progressing"));
        assert!(
            p.status
                .message
                .as_deref()
                .unwrap()
                .starts_with("restart scheduled at 2026-01-01T00:10:00Z"),
            "{:?}",
            p.status.message
        );
    }

    #[test]
    fn pods_created_at_or_after_restart_at_are_kept_and_the_restart_completes() {
        let mut obs = settled(3, serde_json::json!({}));
        for (i, p) in obs.pods.as_mut().unwrap().iter_mut().enumerate() {
            p.created = at(i as i64); // T, T+1s, T+2s
        }
        assert_eq!(decide_at(&obs, at(5)), Restart::Done(ts(T)));
        let p = plan::plan(&obs, at(5));
        assert!(p.evictions.is_none());
        assert_eq!(p.status.restarted_at, Some(Time(ts(T))));
        assert_eq!(p.status.phase.map(|p| p.as_str()), Some("Healthy"));
        let done: Vec<_> = p
            .events
            .iter()
            .filter(|e| e.reason == reason::RESTARTED_PODS)
            .collect();
        assert_eq!(done.len(), 1, "{:?}", p.events);
        // Recorded: nothing is pending any more, and the pods are not read again.
        let mut after = obs.clone();
        after.rollout.status = Some(p.status.clone());
        assert!(!due(&after.rollout, at(6)));
        after.pods = None;
        let again = plan::plan(&after, at(6));
        assert_eq!(again.status.restarted_at, Some(Time(ts(T))));
        assert!(
            again
                .events
                .iter()
                .all(|e| e.reason != reason::RESTARTED_PODS)
        );
    }

    #[test]
    fn a_plan_that_evicts_writes_nothing_else() {
        let obs = settled(4, serde_json::json!({"maxUnavailable": 1}));
        let p = plan::plan(&obs, at(1));
        let e = p.evictions.as_ref().expect("evictions");
        assert_eq!(e.limit, 1);
        assert!(!p.status_changed(&obs.rollout));
        assert_eq!(p.canary_weight, None);
        assert_eq!(p.stable_service_hash, None);
        assert!(p.create_analysis_runs.is_empty() && p.delete_replica_sets.is_empty());
        for d in &p.replica_sets {
            let o = obs.replica_sets.iter().find(|r| r.hash == d.hash).unwrap();
            assert_eq!((d.replicas, d.create), (o.replicas, false));
        }
        assert_eq!(p.requeue_after, Some(RECHECK));
    }

    #[test]
    fn terminating_and_unavailable_pods_use_up_the_budget() {
        let mut obs = settled(4, serde_json::json!({"maxUnavailable": 2}));
        let h = current(&obs);
        {
            let pods = obs.pods.as_mut().unwrap();
            pods[0].deleting = true; // evicted, still terminating
            // Its replacement, created after restartAt, not ready yet.
            pods.push(ObservedPod {
                name: format!("{h}-new"),
                hash: h.clone(),
                created: at(2),
                ready_since: None,
                deleting: false,
            });
        }
        // 3 available of 4 wanted, 2 may be away: one more may go.
        let Restart::Evict(e) = decide_at(&obs, at(3)) else {
            panic!("expected evictions")
        };
        assert_eq!(e.limit, 1);
        assert_eq!(e.candidates, [1, 2, 3].map(|i| format!("{h}-{i}")).to_vec());
        // The terminating pod still counts as not restarted yet.
        assert_eq!(e.remaining, 4);
        // A second pod away: none may go, and the status says why.
        obs.pods.as_mut().unwrap()[1].ready_since = None;
        let waiting = decide_at(&obs, at(3));
        assert_eq!(
            waiting,
            Restart::Waiting {
                restart_at: ts(T),
                remaining: 4,
                total: 5,
                unavailable: 3,
                max_unavailable: 2
            }
        );
        let p = plan::plan(&obs, at(3));
        assert!(p.evictions.is_none());
        assert!(
            p.status.message.as_deref().unwrap().contains("waiting"),
            "{:?}",
            p.status.message
        );
        assert_eq!(p.requeue_after, Some(RECHECK));
    }

    #[test]
    fn min_ready_seconds_delays_availability() {
        let mut obs = settled(2, serde_json::json!({"maxUnavailable": 1}));
        obs.rollout.spec.min_ready_seconds = Some(30);
        for p in obs.pods.as_mut().unwrap() {
            p.ready_since = Some(at(-10)); // ready for 11 s at T+1
        }
        assert!(matches!(
            decide_at(&obs, at(1)),
            Restart::Waiting { unavailable: 2, .. }
        ));
        assert!(matches!(decide_at(&obs, at(25)), Restart::Evict(_)));
    }

    #[test]
    fn replica_sets_go_stable_then_current_then_oldest_revision_first() {
        let ro = rollout(
            5,
            serde_json::json!({"maxUnavailable": "100%", "steps": [{"setWeight": 40}, {"pause": {}}]}),
        );
        let mut obs = observation(ro, "stab", Vec::new(), None);
        let cur = current(&obs);
        obs.replica_sets = vec![
            rs("old2", 1, 2),
            rs(&cur, 2, 4),
            rs("old1", 1, 1),
            rs("stab", 3, 3),
        ];
        let mut all = Vec::new();
        for (h, n) in [("old2", 1), (cur.as_str(), 2), ("old1", 1), ("stab", 3)] {
            all.extend(pods(h, n, 60));
        }
        // A pod of a ReplicaSet the Rollout does not own is never touched.
        all.extend(pods("stranger", 1, 60));
        obs.pods = Some(all);
        let Restart::Evict(e) = decide_at(&obs, at(1)) else {
            panic!("expected evictions")
        };
        let want: Vec<String> = ["stab-0", "stab-1", "stab-2"]
            .into_iter()
            .map(String::from)
            .chain((0..2).map(|i| format!("{cur}-{i}")))
            .chain(["old1-0".to_string(), "old2-0".to_string()])
            .collect();
        assert_eq!(e.candidates, want);
        // 100% of 5 replicas may be away, of the 7 pods the ReplicaSets run: 2 must stay.
        assert_eq!((e.limit, e.total), (5, 7));
    }

    #[test]
    fn a_restart_pending_but_not_observed_waits_a_second() {
        let mut obs = settled(2, serde_json::json!({}));
        obs.pods = None;
        let p = plan::plan(&obs, at(1));
        assert!(p.evictions.is_none());
        assert_eq!(p.status.restarted_at, None);
        assert_eq!(p.requeue_after, Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_new_template_cancels_the_restart() {
        let mut obs = settled(2, serde_json::json!({}));
        obs.rollout
            .spec
            .template
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("web:2".into());
        obs.template = obs.rollout.spec.template.clone();
        let p = plan::plan(&obs, at(1));
        assert!(p.evictions.is_none());
        assert_eq!(p.status.restarted_at, Some(Time(ts(T))));
        assert!(
            p.events
                .iter()
                .any(|e| e.reason == reason::RESTART_CANCELED),
            "{:?}",
            p.events
        );
    }

    #[test]
    fn pending_and_due_follow_restart_at_and_restarted_at() {
        let mut ro = rollout(1, serde_json::json!({}));
        assert_eq!(pending(&ro), Some(ts(T)));
        assert!(!due(&ro, ts(T)));
        assert!(due(&ro, at(1)));
        ro.status = Some(RolloutStatus {
            restarted_at: Some(Time(ts(T))),
            ..Default::default()
        });
        assert_eq!(pending(&ro), None);
        assert!(!due(&ro, at(1)));
        ro.spec.restart_at = None;
        assert_eq!(pending(&ro), None);
    }
}
