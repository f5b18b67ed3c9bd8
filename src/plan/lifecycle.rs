//! The decisions that move a Rollout between versions: the first version, a new template, a
//! user's retry or abort, full promotion, an abort, and the promotion itself.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::context::{Ctx, Journal, add_secs, clear_pauses};
use super::hash;
use super::types::{DesiredReplicaSet, EventType, Observation};
use crate::api::constants::{self, reason};
use crate::api::rollout::RolloutStatus;

/// The pod-template hash naming the template in force: its canonical hash, unless the same
/// template is known under its version-1 hash (see [`hash`]) — as the version in force, the
/// stable one, or an existing ReplicaSet. Such a ReplicaSet is kept rather than replaced by an
/// identical one, so an upgrade of Sluice replaces no pod, and a template that returns to such
/// a version (undo, a Git revert) finds it again.
pub(super) fn template_hash(
    obs: &Observation,
    template: &PodTemplateSpec,
    st: &RolloutStatus,
) -> String {
    let canonical = hash::pod_template_hash(template, st.collision_count);
    let legacy = hash::legacy_pod_template_hash(template, st.collision_count);
    if legacy == canonical {
        return canonical;
    }
    let named = |h: &str| h == canonical || h == legacy;
    let in_status = [st.current_pod_hash.as_deref(), st.stable_rs.as_deref()]
        .into_iter()
        .flatten()
        .find(|h| named(h));
    if let Some(h) = in_status {
        return h.to_string();
    }
    let exists = |h: &str| obs.replica_sets.iter().any(|r| r.hash == h);
    if !exists(&canonical) && exists(&legacy) {
        return legacy;
    }
    canonical
}

/// First version of this Rollout: it becomes stable at once, without steps. Returns true when
/// this is it.
pub(super) fn adopt_first_version(
    st: &mut RolloutStatus,
    current_hash: &str,
    n_steps: usize,
) -> bool {
    if st.stable_rs.is_some() {
        return false;
    }
    st.stable_rs = Some(current_hash.to_string());
    st.current_step_index = (n_steps > 0).then_some(n_steps as i32);
    true
}

/// A new pod template (an update, a rollback via Git, a superseded update) or new steps: resets
/// what belonged to the previous one and says what happens now.
pub(super) fn detect_template_change(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    initial: bool,
) {
    let n_steps = ctx.n_steps();
    let previous = st.current_pod_hash.clone();
    if previous.as_deref() != Some(ctx.current_hash.as_str()) {
        st.current_pod_hash = Some(ctx.current_hash.clone());
        st.abort = false;
        st.aborted_at = None;
        st.aborted_at_step_index = None;
        st.promote_full = false;
        clear_pauses(st);
        st.canary.current_step_analysis_run_status = None;
        st.canary.current_background_analysis_run_status = None;
        // Argo's two Events for every new template, before the ReplicaSet's: alert rules and
        // notification triggers written for Argo key on them.
        journal.event(
            EventType::Normal,
            reason::ROLLOUT_NOT_COMPLETED,
            format!(
                "rollout not completed, started update to revision {} ({})",
                ctx.revision, ctx.current_hash
            ),
        );
        journal.event(
            EventType::Normal,
            reason::ROLLOUT_UPDATED,
            format!("rollout updated to revision {}", ctx.revision),
        );
        if initial {
            journal.event(
                EventType::Normal,
                reason::NEW_REPLICA_SET_CREATED,
                format!(
                    "first revision {}: deployed without steps",
                    ctx.current_hash
                ),
            );
        } else if !ctx.in_update() {
            st.current_step_index = (n_steps > 0).then_some(n_steps);
            journal.event(
                EventType::Normal,
                reason::ROLLED_BACK,
                format!(
                    "template is back to the stable version {}: returning to stable without steps",
                    ctx.stable_hash
                ),
            );
        } else if ctx.fast_rollback {
            st.current_step_index = (n_steps > 0).then_some(n_steps);
            journal.event(
                EventType::Normal,
                reason::ROLLED_BACK,
                format!(
                    "template is back to the ReplicaSet of {} within the rollback window: going straight to it without steps or analysis",
                    ctx.current_hash
                ),
            );
        } else {
            st.current_step_index = (n_steps > 0).then_some(0);
            if let Some(p) = previous.as_deref().filter(|p| *p != ctx.stable_hash) {
                journal.event(
                    EventType::Normal,
                    reason::SUPERSEDED,
                    format!(
                        "update to {p} superseded by a new template {}",
                        ctx.current_hash
                    ),
                );
            }
            journal.event(
                EventType::Normal,
                reason::NEW_REPLICA_SET_CREATED,
                format!(
                    "rolling out revision {} (pod template hash {})",
                    ctx.revision, ctx.current_hash
                ),
            );
        }
    }
    let steps_hash = hash::steps_hash(ctx.steps);
    if st.current_step_hash.as_deref() != Some(steps_hash.as_str()) {
        let had = st.current_step_hash.is_some();
        st.current_step_hash = Some(steps_hash);
        if had && ctx.in_update() && previous.as_deref() == Some(ctx.current_hash.as_str()) {
            // Steps edited in the middle of an update: start them again.
            st.current_step_index = (n_steps > 0).then_some(0);
            clear_pauses(st);
            journal.event(
                EventType::Normal,
                reason::REPLICA_SET_UPDATED,
                "steps changed during the update: restarting from step 1",
            );
        }
    }
}

/// Argo Rollouts' rollback window (`spec.rollbackWindow.revisions`): the template in force is
/// that of an existing ReplicaSet created before the stable one, with fewer than `revisions`
/// ReplicaSets created between the two. The order is that of creation (a reused ReplicaSet
/// keeps its place), strict: ReplicaSets created in the same second are not ordered, so such a
/// rollback is not fast (as in Argo Rollouts, whose timestamps have the same grain).
pub(super) fn within_rollback_window(obs: &Observation, current: &str, stable: &str) -> bool {
    let Some(window) = obs
        .rollout
        .spec
        .rollback_window
        .as_ref()
        .and_then(|w| w.revisions)
        .filter(|n| *n > 0)
    else {
        return false;
    };
    let created = |hash: &str| {
        obs.replica_sets
            .iter()
            .find(|r| r.hash == hash)
            .and_then(|r| r.created)
    };
    if current == stable {
        return false;
    }
    let (Some(new), Some(stable)) = (created(current), created(stable)) else {
        return false;
    };
    if new >= stable {
        return false;
    }
    let between = obs
        .replica_sets
        .iter()
        .filter_map(|r| r.created)
        .filter(|c| new < *c && *c < stable)
        .count();
    between < usize::try_from(window).unwrap_or(0)
}

/// Within the rollback window (see [`within_rollback_window`]), every plan goes to the end of
/// the steps, with no pause and no abort, as Argo Rollouts does: the ReplicaSet ran before.
pub(super) fn fast_rollback(ctx: &Ctx, st: &mut RolloutStatus) {
    if !ctx.in_update() || !ctx.fast_rollback {
        return;
    }
    st.abort = false;
    st.aborted_at = None;
    st.aborted_at_step_index = None;
    clear_pauses(st);
    let n_steps = ctx.n_steps();
    st.current_step_index = (n_steps > 0).then_some(n_steps);
}

/// The user's `retry` (abort cleared after an abort) restarts the update; the user's `abort`
/// (abort set, not yet started) returns why the update must be aborted.
pub(super) fn retry_or_user_abort(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
) -> Option<String> {
    if !st.abort && st.aborted_at.is_some() {
        st.aborted_at = None;
        st.aborted_at_step_index = None;
        st.current_step_index = (!ctx.steps.is_empty()).then_some(0);
        clear_pauses(st);
        st.canary.current_step_analysis_run_status = None;
        st.canary.current_background_analysis_run_status = None;
        journal.event(
            EventType::Normal,
            reason::ROLLOUT_RETRY,
            "retrying the update from step 1",
        );
    }
    if st.abort && st.aborted_at.is_none() {
        if !ctx.in_update() {
            // Nothing to abort: the Rollout is at its stable version.
            st.abort = false;
        } else {
            return Some("aborted by the user".to_string());
        }
    }
    None
}

/// `promoteFull` during an update: every remaining step is skipped. It also ends an abort, as
/// in Argo Rollouts (its e2e `TestCanaryPromoteFull` promotes fully after an abort): the user
/// chose the new version.
pub(super) fn promote_full(ctx: &Ctx, st: &mut RolloutStatus, journal: &mut Journal) {
    if !ctx.in_update() || !st.promote_full {
        return;
    }
    if st.abort {
        st.abort = false;
        st.aborted_at = None;
        st.aborted_at_step_index = None;
    }
    let n_steps = ctx.n_steps();
    if st.current_step_index != Some(n_steps) && n_steps > 0 {
        journal.event(
            EventType::Normal,
            reason::PROMOTE_FULL,
            "promoted fully: skipping the remaining steps",
        );
    }
    st.current_step_index = (n_steps > 0).then_some(n_steps);
    clear_pauses(st);
}

/// Starts an abort (once): the status records when and why, and the steps start over.
pub(super) fn start_abort(ctx: &Ctx, st: &mut RolloutStatus, journal: &mut Journal, why: &str) {
    if st.aborted_at.is_some() {
        return;
    }
    let step = st.current_step_index.unwrap_or(0);
    st.abort = true;
    st.aborted_at = Some(Time(ctx.now));
    clear_pauses(st);
    let n = ctx.steps.len();
    // Numbered from 1, as everything shown to people; after the last step (waiting for the
    // pods or for promotion) the abort is reported at the last step.
    let message = if n > 0 {
        let shown = (step + 1).clamp(1, n as i32);
        st.aborted_at_step_index = Some(shown - 1);
        format!("aborted at step {shown} of {n}: {why}")
    } else {
        format!("aborted: {why}")
    };
    journal.event(EventType::Warning, reason::ROLLOUT_ABORTED, message.clone());
    st.message = Some(message);
    st.current_step_index = (n > 0).then_some(0);
}

/// `status.currentStep`, the step as people read it (see its description): from 1, with the
/// count; the step of the abort while aborted.
pub(super) fn record_current_step(st: &mut RolloutStatus, n_steps: usize) {
    st.current_step = (n_steps > 0).then(|| {
        let n = i32::try_from(n_steps).unwrap_or(i32::MAX);
        let index = match st.aborted_at_step_index.filter(|_| st.abort) {
            Some(i) => i,
            None => st.current_step_index.unwrap_or(0),
        };
        format!("{}/{n}", (index + 1).clamp(1, n))
    });
}

/// Promotion is due: all steps done, nothing holds the rollout, and the new version is fully
/// available and carrying all traffic.
pub(super) fn promotion_due(ctx: &Ctx, st: &RolloutStatus, user_paused: bool, idx: i32) -> bool {
    let canary_rs = ctx.replica_set(&ctx.current_hash);
    let fully_available =
        canary_rs.is_some_and(|r| r.available >= ctx.replicas && r.replicas >= ctx.replicas);
    let traffic_at_full =
        !ctx.routing || ctx.replicas == 0 || ctx.obs.traffic.canary_weight == Some(ctx.max_weight);
    ctx.in_update()
        && !st.abort
        && !user_paused
        && idx >= ctx.n_steps()
        && fully_available
        && traffic_at_full
        && st.pause_conditions.is_empty()
}

/// Promotes the current version to stable. With traffic routing the previous stable version
/// stays up for `scaleDownDelaySeconds` (at once down with `dynamicStableScale`).
pub(super) fn promote(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    replica_sets: &mut [DesiredReplicaSet],
) {
    st.stable_rs = Some(ctx.current_hash.clone());
    st.promote_full = false;
    clear_pauses(st);
    journal.event(
        EventType::Normal,
        reason::ROLLOUT_COMPLETED,
        format!(
            "promoted revision {} ({}): it is now stable",
            ctx.revision, ctx.current_hash
        ),
    );
    if ctx.routing
        && let Some(d) = replica_sets.iter_mut().find(|d| d.hash == ctx.stable_hash)
    {
        if ctx.canary.dynamic_stable_scale == Some(true) {
            d.replicas = 0;
            d.scale_down_deadline = None;
        } else {
            let delay = ctx
                .canary
                .scale_down_delay_seconds
                .unwrap_or(constants::DEFAULT_SCALE_DOWN_DELAY_SECONDS);
            let deadline = add_secs(ctx.now, i64::from(delay));
            d.scale_down_deadline = Some(deadline);
            journal.wake_at(deadline);
        }
    }
    if let Some(d) = replica_sets.iter_mut().find(|d| d.hash == ctx.current_hash) {
        d.replicas = d.replicas.max(ctx.replicas);
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::api::rollout::Rollout;
    use crate::plan::types::{ObservedReplicaSet, ObservedTraffic};
    use crate::plan::{self, Observation};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn template(rev: &str) -> serde_json::Value {
        json!({"metadata": {"labels": {"app": "web", "rev": rev}},
            "spec": {"containers": [{"name": "web", "image": "web:1"}]}})
    }

    fn hash_of(rev: &str) -> String {
        plan::hash::pod_template_hash(&serde_json::from_value(template(rev)).unwrap(), None)
    }

    /// A Rollout whose ReplicaSets are those of `revs` (created in that order, 10 s apart, all
    /// running), the last one stable, and whose template is now that of `to`.
    fn observation(window: Option<i32>, revs: &[&str], to: &str) -> Observation {
        let stable = hash_of(revs.last().unwrap());
        let mut spec = json!({
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(to),
            "strategy": {"canary": {"steps": [
                {"setWeight": 50},
                {"analysis": {"templates": [{"templateName": "t"}]}}
            ]}}
        });
        if let Some(n) = window {
            spec["rollbackWindow"] = json!({"revisions": n});
        }
        let ro: Rollout = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default", "generation": 5},
            "spec": spec,
            "status": {"stableRS": stable, "currentPodHash": stable, "currentStepIndex": 2}
        }))
        .unwrap();
        let replica_sets = revs
            .iter()
            .enumerate()
            .map(|(i, rev)| {
                let last = i + 1 == revs.len();
                ObservedReplicaSet {
                    name: format!("web-{}", hash_of(rev)),
                    hash: hash_of(rev),
                    replicas: if last { 2 } else { 0 },
                    actual: if last { 2 } else { 0 },
                    ready: if last { 2 } else { 0 },
                    available: if last { 2 } else { 0 },
                    revision: i as i64 + 1,
                    scale_down_deadline: None,
                    created: Some(at(10 * i as i64)),
                }
            })
            .collect();
        Observation {
            template: ro.spec.template.clone(),
            rollout: ro,
            replica_sets,
            analysis_runs: Vec::new(),
            traffic: ObservedTraffic::default(),
            workload: None,
            reference_errors: Vec::new(),
            analysis_templates: None,
            pods: None,
            refused_replica_set: None,
        }
    }

    #[test]
    fn the_window_counts_replica_sets_created_between_the_target_and_the_stable_one() {
        let revs = ["one", "two", "three", "four"];
        // (window, target, within)
        let table: &[(Option<i32>, &str, bool)] = &[
            (None, "three", false),
            (Some(0), "three", false),
            // Nothing between three and four.
            (Some(1), "three", true),
            // two: three lies between.
            (Some(1), "two", false),
            (Some(2), "two", true),
            // one: two and three lie between (Argo's comparison is strict: 2 < 2 is false).
            (Some(2), "one", false),
            (Some(3), "one", true),
            // The stable one itself is not a rollback within the window (it is one anyway).
            (Some(3), "four", false),
            // A template no ReplicaSet has.
            (Some(3), "five", false),
        ];
        for (window, to, within) in table {
            let obs = observation(*window, &revs, to);
            assert_eq!(
                within_rollback_window(&obs, &hash_of(to), &hash_of("four")),
                *within,
                "window {window:?}, back to {to}"
            );
        }
    }

    #[test]
    fn a_replica_set_created_after_the_stable_one_is_not_a_rollback() {
        // `two` was reused (undone to) after `three`: `three` is now stable but older.
        let mut obs = observation(Some(5), &["one", "two", "three"], "two");
        obs.replica_sets[1].created = Some(at(100));
        assert!(!within_rollback_window(
            &obs,
            &hash_of("two"),
            &hash_of("three")
        ));
        // Created in the same second as the stable one: not ordered, not a rollback.
        obs.replica_sets[1].created = obs.replica_sets[2].created;
        assert!(!within_rollback_window(
            &obs,
            &hash_of("two"),
            &hash_of("three")
        ));
    }

    #[test]
    fn a_rollback_within_the_window_skips_steps_and_analysis() {
        let obs = observation(Some(2), &["one", "two", "three", "four"], "two");
        let p = plan::plan(&obs, at(100));
        assert!(p.invalid.is_none(), "{:?}", p.invalid);
        assert_eq!(p.status.current_pod_hash, Some(hash_of("two")));
        assert_eq!(p.status.current_step_index, Some(2), "past every step");
        assert!(p.create_analysis_runs.is_empty());
        assert!(p.events.iter().any(|e| e.reason == reason::ROLLED_BACK));
        let d = p.replica_sets.iter().find(|d| d.hash == hash_of("two"));
        // Scaled up (within maxSurge) at once, not created again.
        assert_eq!(d.map(|d| (d.replicas > 0, d.create)), Some((true, false)));
        assert_eq!(
            d.map(|d| d.revision),
            Some(5),
            "the next revision, as in Argo"
        );

        // Outside the window: an update like any other, from the first step.
        let obs = observation(Some(1), &["one", "two", "three", "four"], "two");
        let p = plan::plan(&obs, at(100));
        assert_eq!(p.status.current_step_index, Some(0));
        assert!(!p.events.iter().any(|e| e.reason == reason::ROLLED_BACK));
    }
}
