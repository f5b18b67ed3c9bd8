//! The Rollout's AnalysisRuns: which to create, how the background analysis steers the update,
//! which runs to stop, and how they are reported in the status.

use std::collections::BTreeMap;

use super::context::{Ctx, Journal, hold};
use super::types::{AnalysisRunKind, AnalysisRunRequest, EventType, ObservedAnalysisRun};
use crate::api::common::AnalysisPhase;
use crate::api::constants::{self, reason};
use crate::api::rollout::{PauseReason, RolloutAnalysis, RolloutAnalysisRunStatus, RolloutStatus};

/// The live run of `kind` for the current version and revision (terminated runs are never
/// reused). A template that returns (a rollback outside the rollback window) is a new revision
/// and is analysed again, as in Argo Rollouts: the run of its earlier revision does not count.
pub(super) fn run_for<'a>(ctx: &Ctx<'a>, kind: AnalysisRunKind) -> Option<&'a ObservedAnalysisRun> {
    let base = run_name(ctx, kind);
    let of_revision =
        |name: &str| name == base || name.strip_prefix(&base).is_some_and(|s| s.starts_with('.'));
    ctx.obs.analysis_runs.iter().find(|r| {
        r.kind == kind && r.pod_hash == ctx.current_hash && !r.terminated && of_revision(&r.name)
    })
}

/// The name of the run of `kind` for the current revision (Argo Rollouts' naming).
fn run_name(ctx: &Ctx, kind: AnalysisRunKind) -> String {
    let rollout = ctx.obs.rollout.metadata.name.clone().unwrap_or_default();
    match kind {
        AnalysisRunKind::Step(i) => {
            format!("{rollout}-{}-{}-{i}", ctx.current_hash, ctx.revision)
        }
        AnalysisRunKind::Background => {
            format!("{rollout}-{}-{}", ctx.current_hash, ctx.revision)
        }
        AnalysisRunKind::PrePromotion => {
            format!("{rollout}-{}-{}-pre", ctx.current_hash, ctx.revision)
        }
        AnalysisRunKind::PostPromotion => {
            format!("{rollout}-{}-{}-post", ctx.current_hash, ctx.revision)
        }
    }
}

/// Asks for a run of `kind` (once per plan), named `<rollout>-<hash>-<revision>[-<step>]` with
/// a `.N` suffix when that name is taken by an earlier run (after a retry).
pub(super) fn request_run(
    ctx: &Ctx,
    requests: &mut Vec<AnalysisRunRequest>,
    kind: AnalysisRunKind,
    analysis: &RolloutAnalysis,
) {
    if requests.iter().any(|r| r.kind == kind) {
        return;
    }
    let base = run_name(ctx, kind);
    let taken = |name: &str| ctx.obs.analysis_runs.iter().any(|r| r.name == name);
    let mut name = base.clone();
    let mut n = 1;
    while taken(&name) {
        name = format!("{base}.{n}");
        n += 1;
    }
    requests.push(AnalysisRunRequest {
        name,
        kind,
        pod_hash: ctx.current_hash.clone(),
        revision: ctx.revision,
        analysis: analysis.clone(),
    });
}

/// The background analysis, once the update reached its `startingStep`: started if missing;
/// an Inconclusive result pauses the update. Returns why the update must abort, if its result
/// says so.
pub(super) fn background(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    requests: &mut Vec<AnalysisRunRequest>,
    idx: i32,
) -> Option<String> {
    let bg = ctx.canary.analysis.as_ref()?;
    if idx < bg.starting_step.unwrap_or(0) {
        return None;
    }
    let Some(run) = run_for(ctx, AnalysisRunKind::Background) else {
        request_run(ctx, requests, AnalysisRunKind::Background, &bg.analysis);
        return None;
    };
    match run.phase {
        AnalysisPhase::Failed | AnalysisPhase::Error => Some(format!(
            "background analysis {} {}: {}",
            run.name,
            run.phase.as_str().to_lowercase(),
            run.message.clone().unwrap_or_default()
        )),
        AnalysisPhase::Inconclusive => {
            let paused = st
                .pause_conditions
                .iter()
                .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun);
            // A cleared pause the controller had set means the user promoted past it.
            if !paused && !st.controller_pause {
                hold(
                    st,
                    journal,
                    ctx.now,
                    PauseReason::InconclusiveAnalysisRun,
                    format!(
                        "background analysis {} inconclusive: promote to continue or abort",
                        run.name
                    ),
                );
            }
            None
        }
        _ => None,
    }
}

/// Runs that no longer apply (another version, another step, an abort, a finished update),
/// unless they already finished well.
pub(super) fn stale_runs(ctx: &Ctx, st: &RolloutStatus, idx: i32) -> Vec<String> {
    let settled = ctx.current_is_stable(st);
    let mut stale_runs = Vec::new();
    for run in &ctx.obs.analysis_runs {
        if run.terminated || run.phase.is_completed() && run.pod_hash != ctx.current_hash {
            continue;
        }
        let stale = run.pod_hash != ctx.current_hash
            || st.abort
            || !ctx.in_update()
            || settled
            || st.promote_full
            || ctx.fast_rollback
            || matches!(run.kind, AnalysisRunKind::Step(i) if i != idx);
        let finished_ok = run.phase.is_completed() && !st.abort && run.pod_hash == ctx.current_hash;
        if stale && !finished_ok {
            stale_runs.push(run.name.clone());
        }
    }
    stale_runs
}

/// Reports the current step's run and the background run in the status, with an Event when
/// one finishes.
pub(super) fn record_status(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    requests: &[AnalysisRunRequest],
    idx: i32,
) {
    let step_kind = AnalysisRunKind::Step(idx);
    let step = run_for(ctx, step_kind).map(summary).or_else(|| {
        requests
            .iter()
            .find(|r| r.kind == step_kind)
            .map(|r| RolloutAnalysisRunStatus {
                name: r.name.clone(),
                status: AnalysisPhase::Pending,
                message: None,
            })
    });
    if let Some(s) = step {
        let before = st.canary.current_step_analysis_run_status.as_ref();
        announce_completion(journal, "analysis", before, &s);
        st.canary.current_step_analysis_run_status = Some(s);
    }
    if let Some(s) = run_for(ctx, AnalysisRunKind::Background).map(summary) {
        let before = st.canary.current_background_analysis_run_status.as_ref();
        announce_completion(journal, "background analysis", before, &s);
        st.canary.current_background_analysis_run_status = Some(s);
    }
}

pub(super) fn summary(r: &ObservedAnalysisRun) -> RolloutAnalysisRunStatus {
    RolloutAnalysisRunStatus {
        name: r.name.clone(),
        status: r.phase,
        message: r.message.clone(),
    }
}

/// An Event when a run reached a final phase since the status last said otherwise.
pub(super) fn announce_completion(
    journal: &mut Journal,
    what: &str,
    before: Option<&RolloutAnalysisRunStatus>,
    now: &RolloutAnalysisRunStatus,
) {
    if before.map(|s| s.status) == Some(now.status) || !now.status.is_completed() {
        return;
    }
    let (type_, reason) = match now.status {
        AnalysisPhase::Successful => (EventType::Normal, reason::ANALYSIS_RUN_SUCCESSFUL),
        AnalysisPhase::Failed => (EventType::Warning, reason::ANALYSIS_RUN_FAILED),
        AnalysisPhase::Error => (EventType::Warning, reason::ANALYSIS_RUN_ERROR),
        _ => (EventType::Warning, reason::ANALYSIS_RUN_INCONCLUSIVE),
    };
    journal.event(
        type_,
        reason,
        format!(
            "{what} {} {}: {}",
            now.name,
            now.status,
            now.message.clone().unwrap_or_default()
        ),
    );
}

/// Labels of an AnalysisRun created for a request.
pub fn analysis_run_labels(req: &AnalysisRunRequest) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(
        constants::POD_TEMPLATE_HASH_LABEL.to_string(),
        req.pod_hash.clone(),
    );
    match req.kind {
        AnalysisRunKind::Step(i) => {
            labels.insert(
                constants::ROLLOUT_TYPE_LABEL.to_string(),
                constants::ROLLOUT_TYPE_STEP.to_string(),
            );
            labels.insert(constants::STEP_INDEX_LABEL.to_string(), i.to_string());
        }
        AnalysisRunKind::Background => {
            labels.insert(
                constants::ROLLOUT_TYPE_LABEL.to_string(),
                constants::ROLLOUT_TYPE_BACKGROUND.to_string(),
            );
        }
        AnalysisRunKind::PrePromotion => {
            labels.insert(
                constants::ROLLOUT_TYPE_LABEL.to_string(),
                constants::ROLLOUT_TYPE_PRE_PROMOTION.to_string(),
            );
        }
        AnalysisRunKind::PostPromotion => {
            labels.insert(
                constants::ROLLOUT_TYPE_LABEL.to_string(),
                constants::ROLLOUT_TYPE_POST_PROMOTION.to_string(),
            );
        }
    }
    labels
}
