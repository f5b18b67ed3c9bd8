//! Conditions: setting them without churning timestamps, so an unchanged rollout writes nothing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::constants::condition;
use crate::api::rollout::RolloutCondition;

pub(crate) fn find<'a>(conds: &'a [RolloutCondition], type_: &str) -> Option<&'a RolloutCondition> {
    conds.iter().find(|c| c.type_ == type_)
}

fn status_str(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// Sets a condition. Timestamps move only when something about the condition changes:
/// `lastTransitionTime` when its status flips, `lastUpdateTime` when status, reason or message
/// change.
pub(crate) fn set(
    conds: &mut Vec<RolloutCondition>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let status = status_str(value);
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(Time(now));
                c.last_update_time = Some(Time(now));
            } else if c.reason != reason || c.message != message {
                c.last_update_time = Some(Time(now));
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
        }
        None => conds.push(RolloutCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_update_time: Some(Time(now)),
            last_transition_time: Some(Time(now)),
        }),
    }
}

/// Like [`set`], but always moves `lastUpdateTime` (used to record progress).
pub(crate) fn force_update(
    conds: &mut Vec<RolloutCondition>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    set(conds, type_, value, reason, message, now);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        c.last_update_time = Some(Time(now));
    }
}

/// kstatus' view of a rollout.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kstatus {
    Ready,
    Reconciling,
    Stalled,
}

/// Sets `Ready`, `Reconciling` and `Stalled` consistently (exactly one is True).
pub(crate) fn set_kstatus(
    conds: &mut Vec<RolloutCondition>,
    k: Kstatus,
    message: &str,
    now: Timestamp,
) {
    let (ready, reconciling, stalled) = (
        k == Kstatus::Ready,
        k == Kstatus::Reconciling,
        k == Kstatus::Stalled,
    );
    set(
        conds,
        condition::READY,
        ready,
        if ready {
            "RolloutHealthy"
        } else {
            "RolloutNotReady"
        },
        if ready { "" } else { message },
        now,
    );
    set(
        conds,
        condition::RECONCILING,
        reconciling,
        if reconciling {
            "RolloutProgressing"
        } else {
            "RolloutSettled"
        },
        if reconciling { message } else { "" },
        now,
    );
    set(
        conds,
        condition::STALLED,
        stalled,
        if stalled {
            "RolloutDegraded"
        } else {
            "RolloutNotStalled"
        },
        if stalled { message } else { "" },
        now,
    );
}
