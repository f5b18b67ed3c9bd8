//! An invalid spec, or a spec referencing objects that are missing: reported on the status, and
//! nothing else changes.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::conditions::{self, Kstatus};
use super::context::Journal;
use super::types::{DesiredReplicaSet, EventType, Observation, Plan};
use crate::api::constants::{condition, reason};
use crate::api::rollout::{CanaryStrategy, RolloutPhase, RolloutStatus};
use crate::api::validation::{self, FieldError};

/// The canary strategy and the pod template to plan with, or every reason the spec cannot be
/// planned.
pub(super) fn check(
    obs: &Observation,
) -> Result<(&CanaryStrategy, &PodTemplateSpec), Vec<FieldError>> {
    let spec = &obs.rollout.spec;
    let mut errors = validation::validate_rollout_spec(spec);
    if let Some(workload) = &spec.workload_ref
        && obs.template.is_none()
    {
        errors.push(FieldError {
            field: "spec.workloadRef.name".into(),
            message: format!("Deployment {:?} not found in namespace", workload.name),
        });
    }
    errors.extend(obs.reference_errors.iter().cloned());
    if !errors.is_empty() {
        return Err(errors);
    }
    match (spec.strategy.canary.as_ref(), obs.template.as_ref()) {
        (Some(canary), Some(template)) => Ok((canary, template)),
        // Validation guarantees both; keep the planner total anyway.
        _ => Err(vec![FieldError {
            field: "spec.strategy.canary".into(),
            message: "is required".into(),
        }]),
    }
}

/// The plan for an invalid spec: the `InvalidSpec` condition and a Degraded phase; every
/// ReplicaSet kept as it is and nothing else touched.
pub(super) fn invalid(
    obs: &Observation,
    mut st: RolloutStatus,
    errors: Vec<FieldError>,
    now: Timestamp,
) -> Plan {
    let mut journal = Journal::default();
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let previous =
        conditions::find(&st.conditions, condition::INVALID_SPEC).map(|c| c.message.clone());
    if previous.as_deref() != Some(message.as_str()) {
        journal.event(EventType::Warning, reason::INVALID_SPEC, message.clone());
    }
    conditions::set(
        &mut st.conditions,
        condition::INVALID_SPEC,
        true,
        reason::INVALID_SPEC,
        &message,
        now,
    );
    st.phase = Some(RolloutPhase::Degraded);
    st.message = Some(format!("InvalidSpec: {message}"));
    st.observed_generation = obs.rollout.metadata.generation;
    conditions::set_kstatus(&mut st.conditions, Kstatus::Stalled, &message, now);
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
        invalid: Some(errors),
        replica_sets,
        delete_replica_sets: Vec::new(),
        canary_weight: None,
        managed_routes: None,
        stable_service_hash: None,
        canary_service_hash: None,
        create_analysis_runs: Vec::new(),
        terminate_analysis_runs: Vec::new(),
        workload_replicas: None,
        status: st,
        events: journal.events,
        requeue_after: None,
    }
}

/// A spec that was invalid is valid again: drop the condition and say so.
pub(super) fn clear_invalid_spec(st: &mut RolloutStatus, journal: &mut Journal) {
    if conditions::find(&st.conditions, condition::INVALID_SPEC).is_some() {
        st.conditions.retain(|c| c.type_ != condition::INVALID_SPEC);
        journal.event(
            EventType::Normal,
            reason::INVALID_SPEC,
            "spec is valid again",
        );
    }
}
