//! The blue-green strategy (`spec.strategy.blueGreen`), with Argo Rollouts' semantics.
//!
//! The new version runs next to the active one: its ReplicaSet is created and scaled (to
//! `previewReplicaCount` when set), the preview Service selects it once it has pods that
//! serve, the pre-promotion analysis runs on it, and unless auto-promotion is on the rollout
//! pauses (`BlueGreenPause`) until promoted (or `autoPromotionSeconds` passed). Then the new
//! version is scaled to full size and, only once every pod is available, the active Service
//! switches to it. The post-promotion analysis runs on it; only once it passed is the new
//! version stable, and the previous one is scaled down after `scaleDownDelaySeconds` (the
//! ReplicaSet carries the scale-down deadline).
//!
//! Safety rules, each locked by tests:
//! - the active Service moves to the new version only when that version is fully available
//!   (`spec.replicas` pods, all available); it moves back to the stable version at once on an
//!   abort, which is always fully sized because the stable ReplicaSet is never scaled down
//!   during an update;
//! - an aborted version is scaled down only once the active Service is observed away from it,
//!   and after `abortScaleDownDelaySeconds`;
//! - a plan writes each Service at most once (one desired selector per Service).
//!
//! The planner reuses the canary's lifecycle, analysis and status code through a [`Ctx`] whose
//! canary strategy is empty (no steps, no traffic routing) but for the fields both strategies
//! share (`maxUnavailable`, `scaleDownDelayRevisionLimit`).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::analysis::{announce_completion, request_run, run_for, stale_runs, summary};
use super::context::{Ctx, Journal, add_secs, clear_pauses};
use super::types::{
    AnalysisRunKind, AnalysisRunRequest, DesiredReplicaSet, EventType, Observation,
    ObservedAnalysisRun, ObservedReplicaSet, Plan,
};
use super::{lifecycle, phase, replica_sets, restart, validity};
use crate::api::common::AnalysisPhase;
use crate::api::constants::{self, reason};
use crate::api::rollout::{
    BlueGreenStrategy, CanaryStrategy, PauseCondition, PauseReason, RolloutAnalysis,
    RolloutAnalysisRunStatus, RolloutPhase as P, RolloutStatus,
};

/// Plans one blue-green Rollout whose spec is valid.
pub(super) fn plan(
    obs: &Observation,
    bg: &BlueGreenStrategy,
    template: &PodTemplateSpec,
    now: Timestamp,
) -> Plan {
    let mut st = obs.rollout.status.clone().unwrap_or_default();
    let current_hash = lifecycle::template_hash(obs, template, &st);
    let initial = lifecycle::adopt_first_version(&mut st, &current_hash, 0);
    // The fields both strategies share, for the code written for the canary.
    let shared = CanaryStrategy {
        max_unavailable: bg.max_unavailable.clone(),
        scale_down_delay_revision_limit: bg.scale_down_delay_revision_limit,
        ..CanaryStrategy::default()
    };
    let mut ctx = Ctx::new(obs, now, &shared, current_hash, &st);
    // As Argo: going back to an older ReplicaSet still up within its scale-down delay is a
    // fast rollback (no analysis, no pause): its pods ran and served moments ago.
    ctx.fast_rollback |= ctx.in_update() && within_scale_down_delay(&ctx);
    let mut journal = Journal::default();

    validity::clear_invalid_spec(&mut st, &mut journal);
    let seen = st.current_pod_hash.clone();
    lifecycle::detect_template_change(&ctx, &mut st, &mut journal, initial);
    let new_version = seen.is_some() && seen != st.current_pod_hash;
    if seen != st.current_pod_hash {
        // A new template (or one superseding an update in progress) starts from nothing.
        st.blue_green.scale_up_preview_check_point = false;
        st.blue_green.pre_promotion_analysis_run_status = None;
        st.blue_green.post_promotion_analysis_run_status = None;
    }
    restart::cancel_on_change(obs, &mut st, &mut journal, new_version);
    let restart = restart::decide(&ctx, &st);
    if let (restart::Restart::Evict(evictions), Some(observed)) = (&restart, &obs.rollout.status) {
        return restart::evict_only(obs, evictions.clone(), observed.clone());
    }
    let retried = !st.abort && st.aborted_at.is_some();
    let mut abort = lifecycle::retry_or_user_abort(&ctx, &mut st, &mut journal);
    if retried {
        st.blue_green.scale_up_preview_check_point = false;
        st.blue_green.pre_promotion_analysis_run_status = None;
        st.blue_green.post_promotion_analysis_run_status = None;
    }
    lifecycle::promote_full(&ctx, &mut st, &mut journal);
    lifecycle::fast_rollback(&ctx, &mut st);

    let user_paused = obs.rollout.spec.paused == Some(true);
    let bgx = BlueGreen::new(&ctx, bg);

    // Analyses, and the pause before the switch.
    let mut runs = Vec::new();
    let mut terminate = Vec::new();
    let analysing = ctx.in_update()
        && !st.abort
        && !st.promote_full
        && !ctx.fast_rollback
        && !ctx.current_is_stable(&st);
    if analysing {
        let pre = bgx.pre_promotion(&mut st, &mut runs, &mut terminate);
        abort = abort.or(analysis_outcome(&ctx, &mut st, &mut journal, pre, "pre"));
        let post = bgx.post_promotion(&mut st, &mut runs, &mut terminate);
        abort = abort.or(analysis_outcome(&ctx, &mut st, &mut journal, post, "post"));
    }
    if let Some(why) = &abort {
        lifecycle::start_abort(&ctx, &mut st, &mut journal, why);
    }
    // Whether the pause is over is judged on the status as it was, as Argo does, before this
    // plan adds or removes the pause.
    let pause_was_completed = bgx.pause_completed(&st);
    let added_pause = bgx.pause(&st, user_paused);
    let pause_added = match added_pause {
        PauseDecision::Add => {
            st.pause_conditions.push(PauseCondition {
                reason: PauseReason::BlueGreenPause,
                start_time: Time(now),
            });
            st.controller_pause = true;
            if bg.auto_promotion_enabled != Some(false)
                && let Some(s) = bg.auto_promotion_seconds.filter(|s| *s > 0)
            {
                journal.wake_at(add_secs(now, i64::from(s)));
            }
            journal.event(
                EventType::Normal,
                reason::ROLLOUT_PAUSED,
                match bg.auto_promotion_seconds.filter(|s| *s > 0) {
                    Some(s) if bg.auto_promotion_enabled != Some(false) => format!(
                        "revision {} ({}) is ready in preview: promoting in {s}s",
                        ctx.revision, ctx.current_hash
                    ),
                    _ => format!(
                        "revision {} ({}) is ready in preview: promote to switch the active Service",
                        ctx.revision, ctx.current_hash
                    ),
                },
            );
            true
        }
        PauseDecision::Remove => {
            st.pause_conditions
                .retain(|p| p.reason != PauseReason::BlueGreenPause);
            if st.pause_conditions.is_empty() {
                st.controller_pause = false;
            }
            false
        }
        PauseDecision::Wait(at) => {
            journal.wake_at(at);
            false
        }
        PauseDecision::Leave => false,
    };
    let pause_done = pause_was_completed && !pause_added;
    st.blue_green.scale_up_preview_check_point = bgx.check_point(&st, user_paused, pause_done);

    // Services: the active one switches to the new version only when it is fully available.
    let active = bgx.active_target(&st, user_paused, pause_done);
    let preview = bgx.preview_target(&st, user_paused);
    // Past the switch the user's promote has been used: a controller pause without its
    // condition would read as "waiting for rollout to unpause" to Argo's clients.
    if active.as_deref() == Some(ctx.current_hash.as_str()) && st.pause_conditions.is_empty() {
        st.controller_pause = false;
    }
    // Argo's order: the switch, then the promotion it allows.
    bgx.announce_switches(&st, &mut journal, active.as_deref(), preview.as_deref());

    // Promotion: the active Service is on the new version (switched by this plan or before)
    // and its post-promotion analysis passed.
    if bgx.promotion_due(&st, active.as_deref()) {
        st.stable_rs = Some(ctx.current_hash.clone());
        st.promote_full = false;
        st.blue_green.scale_up_preview_check_point = false;
        clear_pauses(&mut st);
        journal.event(
            EventType::Normal,
            reason::ROLLOUT_COMPLETED,
            format!(
                "promoted revision {} ({}): it is now stable",
                ctx.revision, ctx.current_hash
            ),
        );
    }
    terminate.extend(stale_runs(&ctx, &st, 0));
    terminate.sort();
    terminate.dedup();

    // Pods.
    let mut desired = bgx.replica_sets(
        &st,
        &mut journal,
        user_paused,
        [active.as_deref(), preview.as_deref()],
    );
    let workload_replicas = replica_sets::workload_replicas(&ctx, &st);
    let delete = replica_sets::prune(&ctx, &st, &mut desired);

    // Status.
    restart::record(&restart, &mut st, &mut journal, now);
    let restarting = restart.message();
    phase::record_counts(&ctx, &mut st);
    bgx.record_active_counts(&mut st, active.as_deref());
    bgx.record_services(&mut st, active.as_deref(), preview.as_deref());
    record_analysis(&ctx, &mut st, &mut journal, &runs);
    st.observed_generation = obs.rollout.metadata.generation;
    st.workload_observed_generation = obs.workload.as_ref().map(|w| w.generation.to_string());
    let (decided, waiting_for_pods) =
        bgx.phase_and_message(&st, user_paused, active.as_deref(), restarting.as_deref());
    let paused = user_paused || !st.pause_conditions.is_empty();
    let exceeded = phase::record(
        &ctx,
        &mut st,
        &mut journal,
        decided,
        paused,
        waiting_for_pods,
    );
    let mut active = active;
    if exceeded
        && obs.rollout.spec.progress_deadline_abort == Some(true)
        && !st.abort
        && ctx.in_update()
    {
        let why = format!(
            "progress deadline of {}s exceeded",
            obs.rollout
                .spec
                .progress_deadline_seconds
                .unwrap_or(constants::DEFAULT_PROGRESS_DEADLINE_SECONDS)
        );
        lifecycle::start_abort(&ctx, &mut st, &mut journal, &why);
        active = bgx.active_target(&st, user_paused, false);
        bgx.announce_switches(&st, &mut journal, active.as_deref(), preview.as_deref());
        bgx.record_services(&mut st, active.as_deref(), preview.as_deref());
        let decided = (P::Degraded, st.message.clone().unwrap_or_default());
        phase::record(&ctx, &mut st, &mut journal, decided, paused, false);
    }
    lifecycle::record_current_step(&mut st, 0);
    super::state_change_events(&ctx, &st, &mut journal);

    Plan {
        invalid: None,
        replica_sets: desired,
        delete_replica_sets: delete,
        canary_weight: None,
        managed_routes: None,
        stable_service_hash: active,
        canary_service_hash: preview,
        create_analysis_runs: runs,
        terminate_analysis_runs: terminate,
        workload_replicas,
        status: st,
        requeue_after: journal.requeue_after(now),
        events: journal.events,
        evictions: None,
    }
}

/// The template in force is that of an older ReplicaSet whose scale-down deadline has not
/// passed.
fn within_scale_down_delay(ctx: &Ctx) -> bool {
    let newest = ctx.obs.replica_sets.iter().map(|r| r.revision).max();
    ctx.replica_set(&ctx.current_hash).is_some_and(|r| {
        Some(r.revision) < newest && r.scale_down_deadline.is_some_and(|d| d > ctx.now)
    })
}

/// What the pause before the switch does in this plan.
enum PauseDecision {
    /// Pause now.
    Add,
    /// The pause is over (or not needed): drop it.
    Remove,
    /// Paused until this instant (`autoPromotionSeconds`).
    Wait(Timestamp),
    /// Nothing to do (not ready, or the user promoted).
    Leave,
}

/// The values of one blue-green plan.
struct BlueGreen<'c, 'a> {
    ctx: &'c Ctx<'a>,
    bg: &'a BlueGreenStrategy,
    /// The new version's ReplicaSet, as observed.
    new_rs: Option<&'a ObservedReplicaSet>,
    /// The hash the active Service selects, as observed.
    active_observed: Option<String>,
    /// The hash the preview Service selects, as observed.
    preview_observed: Option<String>,
}

impl<'c, 'a> BlueGreen<'c, 'a> {
    fn new(ctx: &'c Ctx<'a>, bg: &'a BlueGreenStrategy) -> Self {
        BlueGreen {
            ctx,
            bg,
            new_rs: ctx.replica_set(&ctx.current_hash),
            active_observed: ctx.obs.traffic.stable_service_hash.clone(),
            preview_observed: ctx.obs.traffic.canary_service_hash.clone(),
        }
    }

    fn new_hash(&self) -> &str {
        &self.ctx.current_hash
    }

    fn active_is_new(&self) -> bool {
        self.active_observed.as_deref() == Some(self.new_hash())
    }

    /// The active Service selects a ReplicaSet that exists and is not the new version's.
    fn active_elsewhere(&self) -> bool {
        self.active_observed
            .as_deref()
            .is_some_and(|h| h != self.new_hash() && self.ctx.replica_set(h).is_some())
    }

    /// Progress is held: the user paused, or an analysis was inconclusive.
    fn halted(&self, st: &RolloutStatus, user_paused: bool) -> bool {
        user_paused
            || st
                .pause_conditions
                .iter()
                .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun)
    }

    /// Pods the new version should run (outside an abort), as Argo's `NewRSNewReplicas`:
    /// `previewReplicaCount` until the active Service switches, unless the rollout is fully
    /// promoting or was resumed past its preview check point.
    fn new_target(&self, st: &RolloutStatus, user_paused: bool) -> i32 {
        let full = self.ctx.replicas;
        let Some(preview) = self.bg.preview_replica_count else {
            return full;
        };
        if !self.active_elsewhere() || st.promote_full || !self.ctx.in_update() {
            return full;
        }
        let resumed = !user_paused && st.pause_conditions.is_empty();
        if resumed && st.blue_green.scale_up_preview_check_point {
            return full;
        }
        preview.clamp(0, full)
    }

    /// The new version runs exactly the pods it should, all available (Argo's
    /// `ReadyForPause`).
    fn ready(&self, st: &RolloutStatus, user_paused: bool) -> bool {
        let want = self.new_target(st, user_paused);
        self.new_rs
            .is_some_and(|r| r.replicas == want && r.available >= want)
    }

    /// The new version runs `spec.replicas` pods, all available.
    fn fully_available(&self) -> bool {
        let full = self.ctx.replicas;
        self.new_rs
            .is_some_and(|r| r.replicas == full && r.available >= full)
    }

    fn pause_needed(&self) -> bool {
        self.bg.auto_promotion_enabled == Some(false)
            || self.bg.auto_promotion_seconds.unwrap_or(0) > 0
    }

    /// The update goes straight to the switch: a rollback within the window, a full promotion,
    /// an active Service that selects no version yet, or one already on the new version.
    fn fast_tracked(&self, st: &RolloutStatus) -> bool {
        self.ctx.fast_rollback
            || st.promote_full
            || !self.ctx.in_update()
            || !self.active_elsewhere()
    }

    fn pre_promotion_completed(&self) -> bool {
        let configured = self
            .bg
            .pre_promotion_analysis
            .as_ref()
            .is_some_and(|a| !a.templates.is_empty());
        !configured
            || run_for(self.ctx, AnalysisRunKind::PrePromotion)
                .is_some_and(|r| r.phase == AnalysisPhase::Successful)
    }

    /// Argo's `CompletedBlueGreenPause`: the pause before the switch is over (or there is
    /// none), by the preview check point, the user's promote (the controller's pause cleared),
    /// auto-promotion, or its seconds.
    fn pause_completed(&self, st: &RolloutStatus) -> bool {
        if st.blue_green.scale_up_preview_check_point {
            return true;
        }
        let paused = st
            .pause_conditions
            .iter()
            .find(|p| p.reason == PauseReason::BlueGreenPause);
        if st.controller_pause && paused.is_none() {
            // The user promoted. (Unlike Argo, also with `autoPromotionSeconds`, where Argo
            // would wait for a pause that is gone.)
            return true;
        }
        if self.bg.auto_promotion_enabled == Some(false) {
            return false;
        }
        match self.bg.auto_promotion_seconds.filter(|s| *s > 0) {
            None => true,
            Some(seconds) => {
                paused.is_some_and(|p| self.ctx.now >= add_secs(p.start_time.0, i64::from(seconds)))
            }
        }
    }

    /// Argo's `reconcileBlueGreenPause`.
    fn pause(&self, st: &RolloutStatus, user_paused: bool) -> PauseDecision {
        if st.abort || !self.ready(st, user_paused) || self.halted(st, user_paused) {
            return PauseDecision::Leave;
        }
        let has = st
            .pause_conditions
            .iter()
            .find(|p| p.reason == PauseReason::BlueGreenPause);
        if self.fast_tracked(st)
            || st.blue_green.scale_up_preview_check_point
            || !self.pause_needed()
        {
            return if has.is_some() {
                PauseDecision::Remove
            } else {
                PauseDecision::Leave
            };
        }
        if !self.pre_promotion_completed() {
            return PauseDecision::Leave;
        }
        match has {
            Some(p) => {
                if self.pause_completed(st) {
                    PauseDecision::Remove
                } else if self.bg.auto_promotion_enabled != Some(false)
                    && let Some(s) = self.bg.auto_promotion_seconds.filter(|s| *s > 0)
                {
                    PauseDecision::Wait(add_secs(p.start_time.0, i64::from(s)))
                } else {
                    PauseDecision::Leave
                }
            }
            // A controller pause without its condition: the user promoted.
            None if st.controller_pause => PauseDecision::Leave,
            None => PauseDecision::Add,
        }
    }

    /// Argo's `scaleUpPreviewCheckPoint`: set once the preview reached `previewReplicaCount`
    /// with its analysis passed and its pause over; kept until promotion or a new template.
    fn check_point(&self, st: &RolloutStatus, user_paused: bool, pause_done: bool) -> bool {
        let Some(count) = self.bg.preview_replica_count else {
            return false;
        };
        if st.blue_green.scale_up_preview_check_point {
            return true;
        }
        if !self.ctx.in_update() || user_paused || !self.pre_promotion_completed() || !pause_done {
            return false;
        }
        self.new_rs.is_some_and(|r| r.available == count)
    }

    /// The hash the active Service must select.
    fn active_target(
        &self,
        st: &RolloutStatus,
        user_paused: bool,
        pause_done: bool,
    ) -> Option<String> {
        if st.abort {
            // Back to the stable version at once; it was never scaled down.
            let stable = st.stable_rs.clone()?;
            return if self.ctx.replica_set(&stable).is_some() {
                Some(stable)
            } else {
                self.active_observed.clone()
            };
        }
        let observed = self.active_observed.clone();
        if self.halted(st, user_paused) || !self.ready(st, user_paused) || !self.fully_available() {
            return observed;
        }
        let switch = self.fast_tracked(st) || (pause_done && self.pre_promotion_completed());
        if switch {
            Some(self.new_hash().to_string())
        } else {
            observed
        }
    }

    /// The hash the preview Service must select (None: no preview Service, or leave it): the
    /// new version once it has pods that serve.
    fn preview_target(&self, st: &RolloutStatus, user_paused: bool) -> Option<String> {
        self.bg
            .preview_service
            .as_deref()
            .filter(|s| !s.is_empty())?;
        let observed = self.preview_observed.clone();
        if self.halted(st, user_paused) || st.abort {
            return observed;
        }
        let serves = self.new_rs.is_some_and(|r| r.available > 0) || self.ctx.replicas == 0;
        if serves {
            Some(self.new_hash().to_string())
        } else {
            observed
        }
    }

    /// The pre-promotion run: started once the preview is ready (and the active Service not
    /// yet switched). Returns the run, when there is one.
    fn pre_promotion(
        &self,
        st: &mut RolloutStatus,
        runs: &mut Vec<AnalysisRunRequest>,
        terminate: &mut Vec<String>,
    ) -> Option<&'a ObservedAnalysisRun> {
        let analysis = self.bg.pre_promotion_analysis.as_ref()?;
        if analysis.templates.is_empty() || !self.active_elsewhere() {
            return None;
        }
        let run = run_for(self.ctx, AnalysisRunKind::PrePromotion);
        let ready = match self.bg.preview_replica_count {
            Some(n) => self
                .new_rs
                .is_some_and(|r| r.replicas == n && r.available >= n),
            None => self.fully_available(),
        };
        self.start_or_rerun(
            st,
            run,
            ready,
            AnalysisRunKind::PrePromotion,
            analysis,
            runs,
            terminate,
        )
    }

    /// The post-promotion run: started once the active Service is observed on the new version.
    fn post_promotion(
        &self,
        st: &mut RolloutStatus,
        runs: &mut Vec<AnalysisRunRequest>,
        terminate: &mut Vec<String>,
    ) -> Option<&'a ObservedAnalysisRun> {
        let analysis = self.bg.post_promotion_analysis.as_ref()?;
        if analysis.templates.is_empty() || !self.active_is_new() {
            return None;
        }
        let run = run_for(self.ctx, AnalysisRunKind::PostPromotion);
        let ready = self.fully_available();
        self.start_or_rerun(
            st,
            run,
            ready,
            AnalysisRunKind::PostPromotion,
            analysis,
            runs,
            terminate,
        )
    }

    /// Starts a run when there is none and the version is `ready`. A run the user promoted
    /// past while it was Inconclusive is run again, as Argo does.
    #[allow(clippy::too_many_arguments)]
    fn start_or_rerun(
        &self,
        st: &mut RolloutStatus,
        run: Option<&'a ObservedAnalysisRun>,
        ready: bool,
        kind: AnalysisRunKind,
        analysis: &RolloutAnalysis,
        runs: &mut Vec<AnalysisRunRequest>,
        terminate: &mut Vec<String>,
    ) -> Option<&'a ObservedAnalysisRun> {
        let inconclusive_pause = st
            .pause_conditions
            .iter()
            .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun);
        match run {
            None if ready && !inconclusive_pause => {
                request_run(self.ctx, runs, kind, analysis);
                None
            }
            None => None,
            Some(r)
                if r.phase == AnalysisPhase::Inconclusive
                    && st.controller_pause
                    && !inconclusive_pause
                    && !st
                        .pause_conditions
                        .iter()
                        .any(|p| p.reason == PauseReason::BlueGreenPause) =>
            {
                terminate.push(r.name.clone());
                request_run(self.ctx, runs, kind, analysis);
                // The promote is consumed: the pause before the switch is still to come.
                if st.pause_conditions.is_empty() {
                    st.controller_pause = false;
                }
                None
            }
            Some(r) => Some(r),
        }
    }

    /// Argo's `shouldFullPromote` for blue-green: the active Service is on the new version (the
    /// Services are written before the status), and a full promotion, a fast rollback, or (outside an abort) a passed (or no)
    /// post-promotion analysis.
    fn promotion_due(&self, st: &RolloutStatus, active: Option<&str>) -> bool {
        let switched = active == Some(self.new_hash());
        if !self.ctx.in_update() || self.ctx.current_is_stable(st) || !switched {
            return false;
        }
        if st.promote_full || self.ctx.fast_rollback {
            return true;
        }
        if st.abort {
            return false;
        }
        let post = self
            .bg
            .post_promotion_analysis
            .as_ref()
            .is_some_and(|a| !a.templates.is_empty());
        !post
            || run_for(self.ctx, AnalysisRunKind::PostPromotion)
                .is_some_and(|r| r.phase == AnalysisPhase::Successful)
    }

    /// Desired ReplicaSets: the new version at its target (held during an abort until the
    /// active Service left it and `abortScaleDownDelaySeconds` passed), the stable at full
    /// size, older ones scaled down after their delay.
    fn replica_sets(
        &self,
        st: &RolloutStatus,
        journal: &mut Journal,
        user_paused: bool,
        services: [Option<&str>; 2],
    ) -> Vec<DesiredReplicaSet> {
        let ctx = self.ctx;
        let stable = st.stable_rs.clone().unwrap_or_default();
        let mut out = Vec::new();
        let (new_replicas, new_deadline) = if st.abort && ctx.in_update() {
            self.aborted_new_replicas(st, journal)
        } else {
            (self.new_target(st, user_paused), None)
        };
        out.push(DesiredReplicaSet {
            hash: ctx.current_hash.clone(),
            create: self.new_rs.is_none(),
            replicas: new_replicas,
            revision: ctx.revision,
            scale_down_deadline: new_deadline,
        });
        if stable != ctx.current_hash
            && let Some(s) = ctx.replica_set(&stable)
        {
            // The stable version serves until the switch, and is the abort's way back.
            out.push(DesiredReplicaSet {
                hash: stable.clone(),
                create: false,
                replicas: ctx.replicas,
                revision: s.revision,
                scale_down_deadline: None,
            });
        }
        out.extend(self.older(st, journal, services));
        out
    }

    fn aborted_new_replicas(
        &self,
        st: &RolloutStatus,
        journal: &mut Journal,
    ) -> (i32, Option<Timestamp>) {
        let ctx = self.ctx;
        let held = self.new_rs.map_or(0, |r| r.replicas);
        let delay = self
            .bg
            .abort_scale_down_delay_seconds
            .unwrap_or(constants::DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS);
        if delay == 0 {
            return (held, None);
        }
        let aborted_at = st.aborted_at.as_ref().map_or(ctx.now, |t| t.0);
        // A deadline written before this abort is not this abort's.
        let written = self
            .new_rs
            .and_then(|r| r.scale_down_deadline)
            .filter(|d| *d > aborted_at);
        let stable = st.stable_rs.as_deref().unwrap_or_default();
        let stable_serves_all = ctx.available(stable) >= ctx.replicas;
        let due = match written {
            Some(due) => due,
            None if stable_serves_all => add_secs(ctx.now, i64::from(delay)),
            None => return (held, None),
        };
        // Never scaled down while the active Service may still send it traffic.
        if ctx.now >= due && !self.active_is_new() {
            return (0, None);
        }
        if ctx.now < due {
            journal.wake_at(due);
        }
        (held, (held > 0).then_some(due))
    }

    /// ReplicaSets neither new nor stable (Argo's `scaleDownOldReplicaSetsForBlueGreen`): kept
    /// while a Service or the status refers to them; otherwise each gets a scale-down deadline
    /// `scaleDownDelaySeconds` ahead (at most `scaleDownDelayRevisionLimit` of them, newest
    /// first) and is scaled to zero when it passes. None moves while an analysis is
    /// inconclusive, nor, without an explicit delay, before the post-promotion analysis passed.
    fn older(
        &self,
        st: &RolloutStatus,
        journal: &mut Journal,
        services: [Option<&str>; 2],
    ) -> Vec<DesiredReplicaSet> {
        let ctx = self.ctx;
        let stable = st.stable_rs.as_deref().unwrap_or_default();
        let mut others: Vec<&ObservedReplicaSet> = ctx
            .obs
            .replica_sets
            .iter()
            .filter(|r| r.hash != ctx.current_hash && r.hash != stable)
            .collect();
        others.sort_by_key(|r| std::cmp::Reverse(r.revision));
        let keep = |r: &ObservedReplicaSet| DesiredReplicaSet {
            hash: r.hash.clone(),
            create: false,
            replicas: r.replicas,
            revision: r.revision,
            scale_down_deadline: r.scale_down_deadline,
        };
        let inconclusive = st
            .pause_conditions
            .iter()
            .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun);
        let post_pending = self
            .bg
            .post_promotion_analysis
            .as_ref()
            .is_some_and(|a| !a.templates.is_empty())
            && self.bg.scale_down_delay_seconds.is_none()
            && !ctx.current_is_stable(st)
            && self.active_is_new()
            && run_for(ctx, AnalysisRunKind::PostPromotion)
                .is_none_or(|r| r.phase != AnalysisPhase::Successful);
        if inconclusive || post_pending {
            return others.into_iter().map(keep).collect();
        }
        // A Service this plan points at a ReplicaSet keeps it as it is; one it points elsewhere
        // but that still selects it (until the write lands) only keeps its pods.
        let wanted = |h: &str| services.contains(&Some(h));
        let selected = |h: &str| {
            [
                self.active_observed.as_deref(),
                self.preview_observed.as_deref(),
            ]
            .contains(&Some(h))
        };
        let delay = self
            .bg
            .scale_down_delay_seconds
            .unwrap_or(constants::DEFAULT_SCALE_DOWN_DELAY_SECONDS);
        let limit = self
            .bg
            .scale_down_delay_revision_limit
            .map_or(usize::MAX, |l| l.max(0) as usize);
        let mut delayed = 0usize;
        let mut out = Vec::new();
        for r in others {
            if wanted(&r.hash) {
                out.push(keep(r));
                continue;
            }
            let down = |r: &ObservedReplicaSet| DesiredReplicaSet {
                replicas: 0,
                scale_down_deadline: None,
                ..keep(r)
            };
            if r.replicas == 0 {
                out.push(down(r));
                continue;
            }
            let deadline = match r.scale_down_deadline {
                Some(d) => d,
                None if delay > 0 => add_secs(ctx.now, i64::from(delay)),
                None => ctx.now,
            };
            delayed += 1;
            let due = delayed > limit || ctx.now >= deadline;
            if due && !selected(&r.hash) {
                out.push(down(r));
            } else {
                if !due {
                    journal.wake_at(deadline);
                }
                out.push(DesiredReplicaSet {
                    scale_down_deadline: Some(deadline),
                    ..keep(r)
                });
            }
        }
        out
    }

    /// As Argo: the counts the HorizontalPodAutoscaler and the Available condition read are the
    /// active ReplicaSet's, and the selector names its hash.
    fn record_active_counts(&self, st: &mut RolloutStatus, active: Option<&str>) {
        let Some(rs) = active.and_then(|h| self.ctx.replica_set(h)) else {
            return;
        };
        st.available_replicas = Some(rs.available);
        st.ready_replicas = Some(rs.ready);
        st.hpa_replicas = Some(rs.actual);
        if let Some(selector) = st.selector.as_mut() {
            let pair = format!("{}={}", constants::POD_TEMPLATE_HASH_LABEL, rs.hash);
            if !selector.is_empty() {
                selector.push(',');
            }
            selector.push_str(&pair);
        }
    }

    /// Argo's `SwitchService` Event for each Service this plan moves, once per move: not again
    /// when the status an earlier plan wrote already records the move.
    fn announce_switches(
        &self,
        st: &RolloutStatus,
        journal: &mut Journal,
        active: Option<&str>,
        preview: Option<&str>,
    ) {
        let services = [
            (
                Some(self.bg.active_service.as_str()),
                &self.active_observed,
                active,
                st.blue_green.active_selector.as_deref(),
            ),
            (
                self.bg.preview_service.as_deref(),
                &self.preview_observed,
                preview,
                st.blue_green.preview_selector.as_deref(),
            ),
        ];
        for (name, observed, want, recorded) in services {
            let (Some(name), Some(want)) = (name, want) else {
                continue;
            };
            if observed.as_deref() != Some(want) && recorded != Some(want) {
                journal.event(
                    EventType::Normal,
                    reason::SWITCH_SERVICE,
                    format!(
                        "switched selector for service {name:?} from {:?} to {want:?}",
                        observed.as_deref().unwrap_or("")
                    ),
                );
            }
        }
    }

    /// `status.blueGreen.activeSelector` / `previewSelector`: what the Services select once
    /// this plan is applied.
    fn record_services(&self, st: &mut RolloutStatus, active: Option<&str>, preview: Option<&str>) {
        st.blue_green.active_selector = active.map(str::to_string);
        if self
            .bg
            .preview_service
            .as_deref()
            .is_some_and(|s| !s.is_empty())
        {
            st.blue_green.preview_selector = preview.map(str::to_string);
        } else {
            st.blue_green.preview_selector = None;
        }
    }

    /// The phase and its message (Argo's order), and whether the progress deadline's clock
    /// runs (the rollout waits for pods, not for an analysis or a person).
    fn phase_and_message(
        &self,
        st: &RolloutStatus,
        user_paused: bool,
        active: Option<&str>,
        restarting: Option<&str>,
    ) -> ((P, String), bool) {
        let full = self.ctx.replicas;
        let updated = self.new_rs.map_or(0, |r| r.actual);
        let available = self.new_rs.map_or(0, |r| r.available);
        let running = |s: &Option<RolloutAnalysisRunStatus>| {
            s.as_ref().is_some_and(|r| !r.status.is_completed())
        };
        let analysing = running(&st.blue_green.pre_promotion_analysis_run_status)
            || running(&st.blue_green.post_promotion_analysis_run_status);
        let decided = if st.abort {
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
        } else if let Some(r) = restarting {
            (P::Progressing, r.to_string())
        } else if updated < full && !self.ready(st, user_paused) {
            (P::Progressing, "more replicas need to be updated".into())
        } else if available < updated {
            (
                P::Progressing,
                "updated replicas are still becoming available".into(),
            )
        } else if active != Some(self.new_hash()) {
            let why = if analysing {
                "waiting for the pre-promotion analysis to complete"
            } else {
                "active service cutover pending"
            };
            (P::Progressing, why.into())
        } else if !self.ctx.current_is_stable(st) {
            (
                P::Progressing,
                "waiting for the post-promotion analysis to complete".into(),
            )
        } else {
            (P::Healthy, String::new())
        };
        let waiting_for_pods = decided.0 == P::Progressing && !analysing;
        (decided, waiting_for_pods)
    }
}

/// A finished run steers the update: Failed or Error aborts (returns why), Inconclusive
/// pauses.
fn analysis_outcome(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    run: Option<&ObservedAnalysisRun>,
    which: &str,
) -> Option<String> {
    let run = run?;
    match run.phase {
        AnalysisPhase::Failed | AnalysisPhase::Error => Some(format!(
            "{which}-promotion analysis {} {}: {}",
            run.name,
            run.phase.as_str().to_lowercase(),
            run.message.clone().unwrap_or_default()
        )),
        AnalysisPhase::Inconclusive => {
            let paused = st
                .pause_conditions
                .iter()
                .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun);
            if !paused && !st.controller_pause {
                super::context::hold(
                    st,
                    journal,
                    ctx.now,
                    PauseReason::InconclusiveAnalysisRun,
                    format!(
                        "{which}-promotion analysis {} inconclusive: promote to run it again or abort",
                        run.name
                    ),
                );
            }
            None
        }
        _ => None,
    }
}

/// `status.blueGreen.pre/postPromotionAnalysisRunStatus`, with an Event when a run finishes.
/// A run is kept in the status once the version is stable, as Argo does.
fn record_analysis(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    requests: &[AnalysisRunRequest],
) {
    for kind in [
        AnalysisRunKind::PrePromotion,
        AnalysisRunKind::PostPromotion,
    ] {
        let found = run_for(ctx, kind).map(summary).or_else(|| {
            requests
                .iter()
                .find(|r| r.kind == kind)
                .map(|r| RolloutAnalysisRunStatus {
                    name: r.name.clone(),
                    status: AnalysisPhase::Pending,
                    message: None,
                })
        });
        let Some(now) = found else { continue };
        let (slot, what) = match kind {
            AnalysisRunKind::PrePromotion => (
                &mut st.blue_green.pre_promotion_analysis_run_status,
                "pre-promotion analysis",
            ),
            _ => (
                &mut st.blue_green.post_promotion_analysis_run_status,
                "post-promotion analysis",
            ),
        };
        announce_completion(journal, what, slot.as_ref(), &now);
        *slot = Some(now);
    }
}
