//! The rollout planner: a pure function of (observation, now) returning the desired world.
//!
//! No I/O, no clock, no client. The controller observes the cluster, calls [`plan`], applies the
//! result in a safe order and writes the returned status. Everything the planner needs to
//! continue lives in the cluster (the Rollout's status, its ReplicaSets, its AnalysisRuns), so a
//! controller killed at any instant resumes exactly where it was.
//!
//! Safety rules are encoded here, not left to the order of writes:
//! - the canary weight never exceeds what the canary's available pods can serve, and is 0 unless
//!   the canary Service already selects the current version;
//! - on abort the weight goes to 0 first; the canary Service returns to stable only once the
//!   observed weight is 0; the canary is scaled down only after that and after
//!   `abortScaleDownDelaySeconds`;
//! - the stable Service moves to a new version only when that version is fully available, and the
//!   weight returns to 0 only once the stable Service is observed on the new version.
//!
//! Where things are: `types` (what goes in and out), `lifecycle` (new version, retry, abort,
//! promotion), `steps` (walking the canary steps), `analysis` (AnalysisRuns), `traffic`
//! (weights, Services, routes), `replica_sets` (pods per version), `phase` (the status
//! summary and conditions), `validity` (an invalid spec), `blue_green` (the blue-green
//! strategy, planned apart from the canary), [`restart`] (`spec.restartAt`),
//! [`ephemeral`] (`canaryMetadata` / `stableMetadata` per ReplicaSet).
//! [`assume`] applies a plan to an observation as if it had been written; [`actions`] are the user's actions (promote, abort,
//! ...); [`sim`] is an in-memory cluster that runs them all.

pub mod actions;
mod analysis;
pub mod anti_affinity;
pub mod assume;
mod blue_green;
mod conditions;
mod context;
pub mod ephemeral;
pub mod hash;
mod lifecycle;
mod phase;
mod replica_sets;
pub mod replicas;
pub mod restart;
pub mod sim;
mod steps;
mod traffic;
mod types;
mod validity;

use jiff::Timestamp;

use crate::api::rollout::RolloutStatus;

pub use analysis::analysis_run_labels;
pub use assume::AssumeFacts;
pub use steps::{describe_step, last_weight};
pub use types::{
    AnalysisRunKind, AnalysisRunRequest, DesiredReplicaSet, EventType, Evictions, ManagedRoutes,
    Observation, ObservedAnalysisRun, ObservedPod, ObservedReplicaSet, ObservedTemplate,
    ObservedTemplates, ObservedTraffic, ObservedWorkload, Plan, PlannedEvent, RefusedReplicaSet,
};

use context::{Ctx, Journal};

/// Plans one Rollout.
pub fn plan(obs: &Observation, now: Timestamp) -> Plan {
    let mut st = obs.rollout.status.clone().unwrap_or_default();
    let (canary, template) = match validity::check(obs) {
        Ok((validity::Strategy::Canary(canary), template)) => (canary, template),
        Ok((validity::Strategy::BlueGreen(bg), template)) => {
            return blue_green::plan(obs, bg, template, now);
        }
        Err(errors) => return validity::invalid(obs, st, errors, now),
    };
    let current_hash = lifecycle::template_hash(obs, template, &st);
    let initial = lifecycle::adopt_first_version(&mut st, &current_hash, canary.steps.len());
    let ctx = Ctx::new(obs, now, canary, current_hash, &st);
    let mut journal = Journal::default();

    // Decisions recorded in the status: what changed since the last plan, the user's actions.
    validity::clear_invalid_spec(&mut st, &mut journal);
    let seen = (st.current_pod_hash.clone(), st.current_step_hash.clone());
    lifecycle::detect_template_change(&ctx, &mut st, &mut journal, initial);

    // A restart (`spec.restartAt`) evicts before anything else, and then only evicts.
    let changed =
        |before: &Option<String>, after: &Option<String>| before.is_some() && before != after;
    let new_version =
        changed(&seen.0, &st.current_pod_hash) || changed(&seen.1, &st.current_step_hash);
    restart::cancel_on_change(obs, &mut st, &mut journal, new_version);
    let restart = restart::decide(&ctx, &st);
    if let (restart::Restart::Evict(evictions), Some(observed)) = (&restart, &obs.rollout.status) {
        return restart::evict_only(obs, evictions.clone(), observed.clone());
    }
    let mut abort = lifecycle::retry_or_user_abort(&ctx, &mut st, &mut journal);
    lifecycle::promote_full(&ctx, &mut st, &mut journal);
    lifecycle::fast_rollback(&ctx, &mut st);

    // Steps and analysis.
    let user_paused = obs.rollout.spec.paused == Some(true);
    let mut runs = Vec::new();
    let mut idx = st.current_step_index.unwrap_or(0).clamp(0, ctx.n_steps());
    if ctx.in_update() && !st.abort && !user_paused {
        let walked = steps::walk(&ctx, &mut st, &mut journal, &mut runs, idx);
        idx = walked.index;
        abort = abort.or(walked.abort);
    }
    if ctx.n_steps() > 0 {
        st.current_step_index = Some(idx);
    }
    if ctx.in_update() && !st.abort && !st.promote_full && !ctx.fast_rollback {
        let background = analysis::background(&ctx, &mut st, &mut journal, &mut runs, idx);
        abort = abort.or(background);
    }
    if let Some(why) = &abort {
        lifecycle::start_abort(&ctx, &mut st, &mut journal, why);
    }
    let terminate = analysis::stale_runs(&ctx, &st, idx);

    // Traffic and pods.
    let mut weight = traffic::canary_weight(&ctx, &st, idx);
    let mut replica_sets = replica_sets::desired(&ctx, &st, &mut journal, idx, weight);
    if lifecycle::promotion_due(&ctx, &st, user_paused, idx) {
        lifecycle::promote(&ctx, &mut st, &mut journal, &mut replica_sets);
    }
    let services = traffic::service_hashes(&ctx, &st);
    let managed_routes = traffic::managed_routes(&ctx, &st);
    let workload_replicas = replica_sets::workload_replicas(&ctx, &st);
    let delete = replica_sets::prune(&ctx, &st, &mut replica_sets);

    // Status.
    restart::record(&restart, &mut st, &mut journal, now);
    let restarting = restart.message();
    phase::record_counts(&ctx, &mut st);
    traffic::record_weights(&ctx, &mut st, &mut journal, weight, &services);
    analysis::record_status(&ctx, &mut st, &mut journal, &runs, idx);
    st.observed_generation = obs.rollout.metadata.generation;
    // Argo's `workloadObservedGeneration`: the generation of the `workloadRef` Deployment whose
    // template this plan used (none with an inline template).
    st.workload_observed_generation = obs.workload.as_ref().map(|w| w.generation.to_string());
    let deadline_exceeded = phase::record_phase(
        &ctx,
        &mut st,
        &mut journal,
        user_paused,
        idx,
        restarting.as_deref(),
    );
    if deadline_exceeded
        && obs.rollout.spec.progress_deadline_abort == Some(true)
        && !st.abort
        && ctx.in_update()
    {
        let why = format!(
            "progress deadline of {}s exceeded",
            obs.rollout
                .spec
                .progress_deadline_seconds
                .unwrap_or(crate::api::constants::DEFAULT_PROGRESS_DEADLINE_SECONDS)
        );
        lifecycle::start_abort(&ctx, &mut st, &mut journal, &why);
        // Re-plan the weight with the abort in force; the next reconcile continues the abort
        // sequence (Services, canary scale) from the written status.
        weight = traffic::canary_weight(&ctx, &st, idx);
        traffic::record_weights(&ctx, &mut st, &mut journal, weight, &services);
        phase::record_phase(
            &ctx,
            &mut st,
            &mut journal,
            user_paused,
            idx,
            restarting.as_deref(),
        );
    }
    lifecycle::record_current_step(&mut st, ctx.steps.len());
    state_change_events(&ctx, &st, &mut journal);

    Plan {
        invalid: None,
        replica_sets,
        delete_replica_sets: delete,
        canary_weight: weight,
        managed_routes,
        stable_service_hash: services.stable,
        canary_service_hash: services.canary,
        create_analysis_runs: runs,
        terminate_analysis_runs: terminate,
        workload_replicas,
        status: st,
        requeue_after: journal.requeue_after(now),
        events: journal.events,
        evictions: None,
    }
}

/// Events on changes of state seen only by comparing the status before and after, as Argo
/// Rollouts emits them: `RolloutResumed` when the pause conditions go (not by an abort, which
/// clears them too), and `RolloutCompleted` when the first revision is first Healthy (its
/// "initial deploy"; later revisions complete at their promotion).
fn state_change_events(ctx: &Ctx, st: &RolloutStatus, journal: &mut Journal) {
    let before = ctx.obs.rollout.status.as_ref();
    let was_paused = before.is_some_and(|b| !b.pause_conditions.is_empty());
    if was_paused && st.pause_conditions.is_empty() && !st.abort {
        // Resumed before a promotion decided in the same plan: the pause ended first.
        let at = journal
            .events
            .iter()
            .position(|e| e.reason == crate::api::constants::reason::ROLLOUT_COMPLETED)
            .unwrap_or(journal.events.len());
        journal.events.insert(
            at,
            PlannedEvent {
                type_: EventType::Normal,
                reason: crate::api::constants::reason::ROLLOUT_RESUMED,
                message: "rollout is resumed".into(),
            },
        );
    }
    let healthy = |s: Option<&RolloutStatus>| {
        s.and_then(|s| s.phase.as_ref()) == Some(&crate::api::rollout::RolloutPhase::Healthy)
    };
    if ctx.revision == 1 && !healthy(before) && healthy(Some(st)) {
        journal.event(
            EventType::Normal,
            crate::api::constants::reason::ROLLOUT_COMPLETED,
            format!(
                "rollout completed update to revision 1 ({}): initial deploy",
                ctx.current_hash
            ),
        );
    }
}
