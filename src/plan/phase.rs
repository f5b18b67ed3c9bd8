//! The status summary: pod counts, the phase and its message, the progress deadline, and the
//! conditions (Progressing, Paused, Available, Completed, Healthy and kstatus').

use super::conditions::{self, Kstatus};
use super::context::{Ctx, Journal, add_secs};
use super::steps::describe_step;
use super::types::EventType;
use crate::api::constants::{self, condition, reason};
use crate::api::rollout::{RolloutPhase as P, RolloutStatus};

/// Pod counts summed over the Rollout's ReplicaSets, and the selector in text form.
pub(super) fn record_counts(ctx: &Ctx, st: &mut RolloutStatus) {
    let rs = &ctx.obs.replica_sets;
    let actual: i32 = rs.iter().map(|r| r.actual).sum();
    st.replicas = Some(actual);
    st.hpa_replicas = Some(actual);
    st.updated_replicas = Some(
        rs.iter()
            .filter(|r| r.hash == ctx.current_hash)
            .map(|r| r.actual)
            .sum(),
    );
    st.ready_replicas = Some(rs.iter().map(|r| r.ready).sum());
    st.available_replicas = Some(rs.iter().map(|r| r.available).sum());
    let selector = ctx.obs.rollout.spec.selector.as_ref();
    if let Some(labels) = selector.and_then(|s| s.match_labels.as_ref()) {
        let text = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        st.selector = Some(text);
    }
}

/// Sets the phase, its message and the conditions. Returns true when the progress deadline is
/// exceeded. `restarting` says what a pending restart is doing, if one is.
pub(super) fn record_phase(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    user_paused: bool,
    idx: i32,
    restarting: Option<&str>,
) -> bool {
    let (phase, message) = phase_and_message(ctx, st, user_paused, idx, restarting);
    let paused = user_paused || !st.pause_conditions.is_empty();
    let in_analysis_step = idx < ctx.n_steps() && ctx.steps[idx as usize].analysis.is_some();
    let waiting_for_pods = phase == P::Progressing && !in_analysis_step;
    record(ctx, st, journal, (phase, message), paused, waiting_for_pods)
}

/// Records a phase and its message decided by the strategy, with the progress deadline (whose
/// clock runs only while `waiting_for_pods`) and the conditions. Returns true when the progress
/// deadline is exceeded.
pub(super) fn record(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    (phase, message): (P, String),
    paused: bool,
    waiting_for_pods: bool,
) -> bool {
    let exceeded = if st.abort {
        set_progressing(st, false, reason::ROLLOUT_ABORTED, &message, ctx);
        None
    } else if phase == P::Healthy {
        set_progressing(
            st,
            true,
            reason::NEW_REPLICA_SET_AVAILABLE,
            "rollout is healthy",
            ctx,
        );
        None
    } else if paused {
        set_progressing(st, true, reason::ROLLOUT_PAUSED, &message, ctx);
        None
    } else {
        progress_deadline(ctx, st, journal, &message, waiting_for_pods)
    };
    let (final_phase, final_message) = match &exceeded {
        Some(m) => (P::Degraded, format!("ProgressDeadlineExceeded: {m}")),
        None => (phase, message.clone()),
    };
    record_conditions(ctx, st, paused, &message, final_phase, &final_message);
    st.phase = Some(final_phase);
    st.message = (!final_message.is_empty()).then_some(final_message);
    exceeded.is_some()
}

/// The phase before the progress deadline is considered, and what it is waiting for.
fn phase_and_message(
    ctx: &Ctx,
    st: &RolloutStatus,
    user_paused: bool,
    idx: i32,
    restarting: Option<&str>,
) -> (P, String) {
    let n_steps = ctx.n_steps();
    let available = st.available_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    if st.abort {
        let message = st
            .message
            .clone()
            .filter(|m| m.starts_with("aborted"))
            .unwrap_or_else(|| "aborted".into());
        (P::Degraded, message)
    } else if user_paused {
        (P::Paused, "manually paused (spec.paused)".into())
    } else if let Some(p) = st.pause_conditions.first() {
        (P::Paused, format!("{:?}", p.reason))
    } else if let Some(restarting) = restarting {
        // As Argo: a pending restart is Progressing ("rollout is restarting"), after pauses.
        (P::Progressing, restarting.to_string())
    } else if !ctx.current_is_stable(st) {
        let message = if n_steps > 0 && idx < n_steps {
            format!(
                "step {} of {n_steps}: {}",
                idx + 1,
                describe_step(&ctx.steps[idx as usize])
            )
        } else {
            "waiting for the new version to become fully available".to_string()
        };
        (P::Progressing, message)
    } else if updated < ctx.replicas {
        (P::Progressing, "more replicas need to be updated".into())
    } else if available < ctx.replicas {
        (
            P::Progressing,
            "updated replicas are still becoming available".into(),
        )
    } else if total > updated && !ctx.routing {
        (
            P::Progressing,
            "old replicas are pending termination".into(),
        )
    } else {
        (P::Healthy, String::new())
    }
}

fn set_progressing(st: &mut RolloutStatus, value: bool, reason: &str, message: &str, ctx: &Ctx) {
    conditions::set(
        &mut st.conditions,
        condition::PROGRESSING,
        value,
        reason,
        message,
        ctx.now,
    );
}

/// `progressDeadlineSeconds`: while the rollout waits for pods and nothing moves, the
/// Progressing condition's last update is the clock; past the deadline the rollout is
/// Degraded. Returns the reason when exceeded.
fn progress_deadline(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    message: &str,
    waiting_for_pods: bool,
) -> Option<String> {
    let now = ctx.now;
    let deadline_secs = ctx
        .obs
        .rollout
        .spec
        .progress_deadline_seconds
        .unwrap_or(constants::DEFAULT_PROGRESS_DEADLINE_SECONDS);
    let progressing = conditions::find(&st.conditions, condition::PROGRESSING).cloned();
    let exceeded_before = progressing
        .as_ref()
        .is_some_and(|c| c.reason == reason::PROGRESS_DEADLINE_EXCEEDED);
    let last_update = progressing
        .as_ref()
        .filter(|c| c.reason == reason::REPLICA_SET_UPDATED)
        .and_then(|c| c.last_update_time.as_ref().map(|t| t.0));
    let moved = moved_since_last_status(ctx, st);
    match last_update {
        Some(last) if !moved && waiting_for_pods => {
            let deadline = add_secs(last, i64::from(deadline_secs));
            if now < deadline {
                journal.wake_at(deadline);
                return None;
            }
            let m = format!("no progress for {deadline_secs}s (progressDeadlineSeconds)");
            if !exceeded_before {
                journal.event(
                    EventType::Warning,
                    reason::PROGRESS_DEADLINE_EXCEEDED,
                    m.clone(),
                );
            }
            set_progressing(st, false, reason::PROGRESS_DEADLINE_EXCEEDED, &m, ctx);
            Some(m)
        }
        _ if exceeded_before && !moved => Some(progressing.map(|c| c.message).unwrap_or_default()),
        _ => {
            // Progress (or the first look): restart the deadline clock.
            conditions::force_update(
                &mut st.conditions,
                condition::PROGRESSING,
                true,
                reason::REPLICA_SET_UPDATED,
                message,
                now,
            );
            if waiting_for_pods {
                journal.wake_at(add_secs(now, i64::from(deadline_secs)));
            }
            None
        }
    }
}

/// Anything that moved since the status the plan started from.
fn moved_since_last_status(ctx: &Ctx, st: &RolloutStatus) -> bool {
    let previous = ctx.obs.rollout.status.clone().unwrap_or_default();
    let weight = |s: &RolloutStatus| s.canary.weights.as_ref().map(|w| w.canary.weight);
    previous.replicas != st.replicas
        || previous.updated_replicas != st.updated_replicas
        || previous.available_replicas != st.available_replicas
        || previous.ready_replicas != st.ready_replicas
        || previous.current_step_index != st.current_step_index
        || previous.current_pod_hash != st.current_pod_hash
        || previous.stable_rs != st.stable_rs
        || weight(&previous) != weight(st)
        || previous.blue_green.active_selector != st.blue_green.active_selector
        || previous.blue_green.preview_selector != st.blue_green.preview_selector
}

/// Paused, Available, Completed, Healthy and kstatus' Ready/Reconciling/Stalled.
fn record_conditions(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    paused: bool,
    message: &str,
    final_phase: P,
    final_message: &str,
) {
    let now = ctx.now;
    let settled = ctx.current_is_stable(st);
    let available = st.available_replicas.unwrap_or(0);
    let conds = &mut st.conditions;
    let (paused_reason, paused_message) = if paused {
        (reason::ROLLOUT_PAUSED, message)
    } else {
        (reason::ROLLOUT_RESUMED, "")
    };
    conditions::set(
        conds,
        condition::PAUSED,
        paused,
        paused_reason,
        paused_message,
        now,
    );
    conditions::set(
        conds,
        condition::AVAILABLE,
        available >= ctx.replicas,
        reason::AVAILABLE,
        &format!("{available} of {} pods available", ctx.replicas),
        now,
    );
    conditions::set(
        conds,
        condition::COMPLETED,
        settled && !st.abort,
        reason::ROLLOUT_COMPLETED,
        if settled {
            "the current version is stable"
        } else {
            ""
        },
        now,
    );
    let healthy = final_phase == P::Healthy;
    conditions::set(
        conds,
        condition::HEALTHY,
        healthy,
        if healthy {
            reason::ROLLOUT_HEALTHY
        } else {
            reason::ROLLOUT_NOT_HEALTHY
        },
        "",
        now,
    );
    let k = match final_phase {
        P::Healthy => Kstatus::Ready,
        P::Degraded => Kstatus::Stalled,
        P::Progressing | P::Paused => Kstatus::Reconciling,
    };
    conditions::set_kstatus(conds, k, final_message, now);
}
