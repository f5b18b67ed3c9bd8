//! The blue-green planner (`spec.strategy.blueGreen`) in the simulated world: the lifecycle
//! of an update with Argo Rollouts' semantics, table tests of its safety rules, and property
//! tests over random event orders.

use std::time::Duration;

use proptest::prelude::*;
use sluice::api::common::AnalysisPhase;
use sluice::api::constants::{condition, reason};
use sluice::api::rollout::{PauseReason, RolloutStatus};
use sluice::plan::sim::World;
use sluice::plan::{AnalysisRunKind, Plan, plan};
use sluice_test_support::world::*;

const BASIC: &str = "activeService: web-active\npreviewService: web-preview\n";

fn status(w: &World) -> RolloutStatus {
    w.rollout.status.clone().unwrap_or_default()
}

fn active(w: &World) -> Option<String> {
    w.traffic.stable_service_hash.clone()
}

fn preview(w: &World) -> Option<String> {
    w.traffic.canary_service_hash.clone()
}

fn rs(w: &World, hash: &str) -> (i32, Option<jiff::Timestamp>) {
    w.replica_sets
        .iter()
        .find(|r| r.hash == hash)
        .map_or((0, None), |r| (r.replicas, r.scale_down_deadline))
}

/// A settled world and the hash of its first version, then the update to web:2 started.
fn updated(replicas: i32, yaml: &str) -> (World, String, String) {
    let mut w = settled_blue_green_world(replicas, yaml);
    let old = hash_of(&w);
    w.set_image("web:2");
    let new = hash_of(&w);
    (w, old, new)
}

fn reasons(events: &[sluice::plan::PlannedEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.reason).collect()
}

#[test]
fn the_first_version_becomes_active_and_stable_without_a_pause() {
    let w = settled_blue_green_world(
        3,
        "activeService: web-active\nautoPromotionEnabled: false\n",
    );
    let h = hash_of(&w);
    let st = status(&w);
    assert_eq!(st.stable_rs.as_deref(), Some(h.as_str()));
    assert_eq!(active(&w).as_deref(), Some(h.as_str()));
    assert_eq!(st.blue_green.active_selector.as_deref(), Some(h.as_str()));
    assert_eq!(st.blue_green.preview_selector, None, "no preview Service");
    assert!(st.pause_conditions.is_empty());
    assert_eq!(phase(&w), "Healthy");
    assert_eq!(rs(&w, &h).0, 3);
}

#[test]
fn an_update_switches_the_active_service_only_once_the_new_version_is_fully_available() {
    let (mut w, old, new) = updated(3, BASIC);
    w.pods_ready_per_tick = Some(1);
    let p = w.reconcile();
    assert_eq!(rs(&w, &new).0, 3, "the new version is created at full size");
    assert_eq!(rs(&w, &old).0, 3, "the active version keeps its pods");
    assert_eq!(active(&w).as_deref(), Some(old.as_str()));
    assert_eq!(
        preview(&w).as_deref(),
        Some(old.as_str()),
        "no pod serves yet"
    );
    assert!(reasons(&p.events).contains(&reason::NEW_REPLICA_SET_CREATED));
    assert_eq!(phase(&w), "Progressing");

    // One pod available: the preview Service moves, the active one does not.
    tick(&mut w, 1);
    assert_eq!(preview(&w).as_deref(), Some(new.as_str()));
    assert_eq!(active(&w).as_deref(), Some(old.as_str()));
    tick(&mut w, 1);
    assert_eq!(
        active(&w).as_deref(),
        Some(old.as_str()),
        "2 of 3 available"
    );
    // All three: the active Service switches, the version is promoted, the old one waits.
    let p = tick(&mut w, 1);
    assert_eq!(active(&w).as_deref(), Some(new.as_str()));
    let st = status(&w);
    assert_eq!(st.stable_rs.as_deref(), Some(new.as_str()));
    assert_eq!(st.blue_green.active_selector.as_deref(), Some(new.as_str()));
    assert_eq!(
        st.blue_green.preview_selector.as_deref(),
        Some(new.as_str())
    );
    let r = reasons(&p.events);
    assert!(r.contains(&reason::SWITCH_SERVICE), "{r:?}");
    assert!(r.contains(&reason::ROLLOUT_COMPLETED), "{r:?}");
    let (replicas, deadline) = rs(&w, &old);
    assert_eq!(replicas, 3, "kept for scaleDownDelaySeconds");
    assert_eq!(deadline, Some(add(w.now, 30)), "the default delay is 30s");
    assert_eq!(
        phase(&w),
        "Healthy",
        "as Argo: healthy while the old version waits"
    );

    // The delay passes: the old version goes.
    let before = w.now;
    until(&mut w, 40, "old version scaled down", |w| {
        rs(w, &old).0 == 0
    });
    assert!(w.now >= add(before, 30));
    assert_eq!(rs(&w, &old).1, None, "the deadline goes with the pods");
}

fn add(t: jiff::Timestamp, secs: i64) -> jiff::Timestamp {
    t.checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap()
}

#[test]
fn without_auto_promotion_the_rollout_pauses_until_promoted() {
    let (mut w, old, new) = updated(
        2,
        "activeService: web-active\npreviewService: web-preview\nautoPromotionEnabled: false\n",
    );
    w.settle(Duration::from_secs(1), 20);
    let st = status(&w);
    assert_eq!(phase(&w), "Paused");
    assert_eq!(st.pause_conditions.len(), 1);
    assert_eq!(st.pause_conditions[0].reason, PauseReason::BlueGreenPause);
    assert!(st.controller_pause);
    assert_eq!(active(&w).as_deref(), Some(old.as_str()));
    assert_eq!(preview(&w).as_deref(), Some(new.as_str()));
    assert_eq!(st.stable_rs.as_deref(), Some(old.as_str()));
    // Time alone does nothing.
    tick(&mut w, 600);
    assert_eq!(active(&w).as_deref(), Some(old.as_str()));
    assert_eq!(phase(&w), "Paused");

    w.promote();
    let p = w.reconcile();
    assert_eq!(active(&w).as_deref(), Some(new.as_str()));
    assert_eq!(status(&w).stable_rs.as_deref(), Some(new.as_str()));
    assert!(reasons(&p.events).contains(&reason::ROLLOUT_COMPLETED));
    assert_eq!(phase(&w), "Healthy");
}

#[test]
fn auto_promotion_seconds_promote_after_the_pause() {
    let (mut w, old, new) = updated(2, "activeService: web-active\nautoPromotionSeconds: 20\n");
    w.reconcile();
    let p = tick(&mut w, 1);
    assert_eq!(phase(&w), "Paused", "{:?}", status(&w));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));
    tick(&mut w, 19);
    assert_eq!(
        active(&w).as_deref(),
        Some(old.as_str()),
        "19 of 20 seconds"
    );
    tick(&mut w, 1);
    assert_eq!(active(&w).as_deref(), Some(new.as_str()));
    assert_eq!(phase(&w), "Healthy");
}

#[test]
fn preview_replica_count_sizes_the_preview_and_full_size_comes_before_the_switch() {
    let (mut w, old, new) = updated(
        4,
        "activeService: web-active\npreviewService: web-preview\npreviewReplicaCount: 1\nautoPromotionEnabled: false\n",
    );
    w.settle(Duration::from_secs(1), 20);
    assert_eq!(rs(&w, &new).0, 1);
    assert_eq!(phase(&w), "Paused");
    assert!(!status(&w).blue_green.scale_up_preview_check_point);
    w.pods_ready_per_tick = Some(1);
    w.promote();
    w.reconcile();
    assert!(status(&w).blue_green.scale_up_preview_check_point);
    assert_eq!(rs(&w, &new).0, 4, "scaled to full size first");
    assert_eq!(
        active(&w).as_deref(),
        Some(old.as_str()),
        "not yet available"
    );
    tick(&mut w, 1);
    tick(&mut w, 1);
    assert_eq!(
        active(&w).as_deref(),
        Some(old.as_str()),
        "3 of 4 available"
    );
    tick(&mut w, 1);
    assert_eq!(active(&w).as_deref(), Some(new.as_str()));
    assert!(
        !status(&w).blue_green.scale_up_preview_check_point,
        "reset at promotion"
    );
}

const PRE: &str = "activeService: web-active\npreviewService: web-preview\nprePromotionAnalysis:\n  templates: [{templateName: smoke}]\n";
const POST: &str =
    "activeService: web-active\npostPromotionAnalysis:\n  templates: [{templateName: smoke}]\n";

#[test]
fn pre_promotion_analysis_runs_on_the_ready_preview_and_gates_the_switch() {
    let (mut w, old, new) = updated(2, PRE);
    let p = w.reconcile();
    assert!(p.create_analysis_runs.is_empty(), "no pod is ready yet");
    let p = tick(&mut w, 1);
    assert_eq!(p.create_analysis_runs.len(), 1);
    let run = &p.create_analysis_runs[0];
    assert_eq!(run.kind, AnalysisRunKind::PrePromotion);
    assert_eq!(run.name, format!("web-{new}-2-pre"), "Argo's name");
    assert_eq!(run.pod_hash, new);
    let labels = sluice::plan::analysis_run_labels(run);
    assert_eq!(
        labels.get("rollout-type").map(String::as_str),
        Some("PrePromotion")
    );
    tick(&mut w, 5);
    assert_eq!(
        active(&w).as_deref(),
        Some(old.as_str()),
        "analysis running"
    );
    let st = status(&w);
    let s = st
        .blue_green
        .pre_promotion_analysis_run_status
        .as_ref()
        .unwrap();
    assert_eq!(s.status, AnalysisPhase::Running);
    assert_eq!(phase(&w), "Progressing");

    w.set_run_phase(AnalysisRunKind::PrePromotion, AnalysisPhase::Successful, "");
    let p = w.reconcile();
    assert_eq!(active(&w).as_deref(), Some(new.as_str()));
    assert!(reasons(&p.events).contains(&reason::ANALYSIS_RUN_SUCCESSFUL));
    assert_eq!(phase(&w), "Healthy");
    // Argo keeps the run in the status once stable.
    let st = status(&w);
    assert_eq!(
        st.blue_green
            .pre_promotion_analysis_run_status
            .map(|s| s.status),
        Some(AnalysisPhase::Successful)
    );
}

#[test]
fn a_failed_pre_promotion_analysis_aborts_before_any_production_traffic() {
    let (mut w, old, new) = updated(2, PRE);
    w.reconcile();
    tick(&mut w, 1);
    w.set_run_phase(
        AnalysisRunKind::PrePromotion,
        AnalysisPhase::Failed,
        "error rate 0.4",
    );
    let p = w.reconcile();
    let st = status(&w);
    assert!(st.abort);
    assert_eq!(phase(&w), "Degraded");
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .contains("pre-promotion analysis"),
        "{:?}",
        st.message
    );
    assert!(st.message.as_deref().unwrap().contains("error rate 0.4"));
    assert!(reasons(&p.events).contains(&reason::ROLLOUT_ABORTED));
    assert_eq!(active(&w).as_deref(), Some(old.as_str()), "never switched");
    assert_eq!(rs(&w, &new).0, 2, "kept for abortScaleDownDelaySeconds");
    assert!(
        rs(&w, &new).1.is_some(),
        "the deadline is on the ReplicaSet"
    );
    until(&mut w, 40, "aborted version scaled down", |w| {
        rs(w, &new).0 == 0
    });
    assert_eq!(active(&w).as_deref(), Some(old.as_str()));
    assert_eq!(rs(&w, &old).0, 2);
    assert_eq!(status(&w).stable_rs.as_deref(), Some(old.as_str()));
}

#[test]
fn post_promotion_analysis_holds_the_stable_version_until_it_passes() {
    let (mut w, old, new) = updated(2, POST);
    w.reconcile();
    let p = tick(&mut w, 1);
    assert_eq!(active(&w).as_deref(), Some(new.as_str()), "switched");
    assert_eq!(
        status(&w).stable_rs.as_deref(),
        Some(old.as_str()),
        "not yet stable"
    );
    let p2 = w.reconcile();
    let created: Vec<_> = p
        .create_analysis_runs
        .iter()
        .chain(&p2.create_analysis_runs)
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].kind, AnalysisRunKind::PostPromotion);
    assert_eq!(created[0].name, format!("web-{new}-2-post"));
    tick(&mut w, 60);
    assert_eq!(
        rs(&w, &old).0,
        2,
        "without scaleDownDelaySeconds the old version waits for the analysis"
    );
    assert_eq!(phase(&w), "Progressing");
    w.set_run_phase(
        AnalysisRunKind::PostPromotion,
        AnalysisPhase::Successful,
        "",
    );
    w.reconcile();
    assert_eq!(status(&w).stable_rs.as_deref(), Some(new.as_str()));
    assert_eq!(phase(&w), "Healthy");
    assert!(
        rs(&w, &old).1.is_some(),
        "the old version's delay starts now"
    );
}

#[test]
fn a_failed_post_promotion_analysis_switches_the_active_service_back_before_scaling_down() {
    let (mut w, old, new) = updated(2, POST);
    w.settle(Duration::from_secs(1), 5);
    assert_eq!(active(&w).as_deref(), Some(new.as_str()));
    w.set_run_phase(
        AnalysisRunKind::PostPromotion,
        AnalysisPhase::Failed,
        "latency",
    );
    let obs = w.observe();
    let p = plan(&obs, w.now);
    assert!(p.status.abort);
    assert_eq!(
        p.stable_service_hash.as_deref(),
        Some(old.as_str()),
        "back at once"
    );
    let new_desired = p.replica_sets.iter().find(|d| d.hash == new).unwrap();
    assert_eq!(
        new_desired.replicas, 2,
        "the new pods are kept while the Service moves"
    );
    w.apply(&p);
    assert_eq!(active(&w).as_deref(), Some(old.as_str()));
    assert_eq!(status(&w).stable_rs.as_deref(), Some(old.as_str()));
    until(&mut w, 40, "aborted version scaled down", |w| {
        rs(w, &new).0 == 0
    });
}

#[test]
fn abort_switches_back_at_once_and_keeps_the_new_pods_for_the_abort_delay() {
    let (mut w, old, new) = updated(
        2,
        "activeService: web-active\nabortScaleDownDelaySeconds: 10\npostPromotionAnalysis:\n  templates: [{templateName: smoke}]\n",
    );
    w.settle(Duration::from_secs(1), 5);
    assert_eq!(active(&w).as_deref(), Some(new.as_str()));
    w.abort();
    let p = w.reconcile();
    assert_eq!(p.stable_service_hash.as_deref(), Some(old.as_str()));
    assert!(
        p.terminate_analysis_runs
            .iter()
            .any(|n| n.ends_with("-post"))
    );
    let start = w.now;
    assert_eq!(rs(&w, &new), (2, Some(add(start, 10))));
    tick(&mut w, 9);
    assert_eq!(rs(&w, &new).0, 2);
    tick(&mut w, 1);
    assert_eq!(rs(&w, &new).0, 0);
    assert_eq!(phase(&w), "Degraded");
}

#[test]
fn abort_scale_down_delay_zero_keeps_the_new_version_up() {
    let (mut w, old, new) = updated(
        2,
        "activeService: web-active\nautoPromotionEnabled: false\nabortScaleDownDelaySeconds: 0\n",
    );
    w.settle(Duration::from_secs(1), 5);
    w.abort();
    w.settle(Duration::from_secs(10), 20);
    assert_eq!(rs(&w, &new).0, 2);
    assert_eq!(active(&w).as_deref(), Some(old.as_str()));
}

#[test]
fn retry_starts_the_update_again_with_a_new_analysis_run() {
    let (mut w, _old, new) = updated(2, PRE);
    w.reconcile();
    tick(&mut w, 1);
    w.set_run_phase(AnalysisRunKind::PrePromotion, AnalysisPhase::Failed, "bad");
    w.reconcile();
    assert!(status(&w).abort);
    w.retry();
    let p = w.reconcile();
    assert!(reasons(&p.events).contains(&reason::ROLLOUT_RETRY));
    assert!(!status(&w).abort);
    w.settle(Duration::from_secs(1), 5);
    let live: Vec<_> = w
        .analysis_runs
        .iter()
        .filter(|r| r.kind == AnalysisRunKind::PrePromotion && !r.terminated)
        .collect();
    assert_eq!(live.len(), 1, "{:?}", w.analysis_runs);
    assert_eq!(live[0].name, format!("web-{new}-2-pre.1"));
    w.set_run_phase(AnalysisRunKind::PrePromotion, AnalysisPhase::Successful, "");
    w.reconcile();
    assert_eq!(active(&w).as_deref(), Some(new.as_str()));
}

#[test]
fn promote_full_skips_the_pause_and_the_pre_promotion_analysis() {
    let (mut w, _old, new) = updated(
        2,
        "activeService: web-active\nautoPromotionEnabled: false\nprePromotionAnalysis:\n  templates: [{templateName: smoke}]\n",
    );
    w.reconcile();
    tick(&mut w, 1);
    assert!(!w.analysis_runs.is_empty());
    w.promote_full();
    let p = w.reconcile();
    assert_eq!(active(&w).as_deref(), Some(new.as_str()));
    assert_eq!(status(&w).stable_rs.as_deref(), Some(new.as_str()));
    assert!(
        !p.terminate_analysis_runs.is_empty(),
        "the running analysis is stopped"
    );
    assert!(!status(&w).promote_full);
}

#[test]
fn promote_past_an_inconclusive_analysis_runs_it_again() {
    let (mut w, old, new) = updated(2, PRE);
    w.reconcile();
    tick(&mut w, 1);
    w.set_run_phase(
        AnalysisRunKind::PrePromotion,
        AnalysisPhase::Inconclusive,
        "",
    );
    w.reconcile();
    assert_eq!(phase(&w), "Paused");
    assert_eq!(
        status(&w).pause_conditions[0].reason,
        PauseReason::InconclusiveAnalysisRun
    );
    w.promote();
    let p = w.reconcile();
    assert_eq!(p.create_analysis_runs.len(), 1);
    assert_eq!(p.create_analysis_runs[0].name, format!("web-{new}-2-pre.1"));
    assert_eq!(active(&w).as_deref(), Some(old.as_str()));
}

#[test]
fn a_new_template_mid_preview_supersedes_it() {
    let (mut w, old, v2) = updated(
        2,
        "activeService: web-active\npreviewService: web-preview\nautoPromotionEnabled: false\nscaleDownDelaySeconds: 5\n",
    );
    w.settle(Duration::from_secs(1), 5);
    assert_eq!(preview(&w).as_deref(), Some(v2.as_str()));
    w.set_image("web:3");
    let v3 = hash_of(&w);
    let p = w.reconcile();
    assert!(reasons(&p.events).contains(&reason::SUPERSEDED));
    assert!(status(&w).pause_conditions.is_empty(), "the pause was v2's");
    assert_eq!(rs(&w, &v2).0, 2, "v2 is still behind the preview Service");
    w.settle(Duration::from_secs(1), 5);
    assert_eq!(preview(&w).as_deref(), Some(v3.as_str()));
    assert_eq!(active(&w).as_deref(), Some(old.as_str()));
    until(&mut w, 20, "v2 scaled down", |w| rs(w, &v2).0 == 0);
    assert_eq!(phase(&w), "Paused");
}

#[test]
fn scale_down_delay_revision_limit_keeps_at_most_that_many_old_versions() {
    let mut w = settled_blue_green_world(
        1,
        "activeService: web-active\nscaleDownDelaySeconds: 600\nscaleDownDelayRevisionLimit: 1\n",
    );
    let v1 = hash_of(&w);
    w.set_image("web:2");
    w.settle(Duration::from_secs(1), 5);
    let v2 = hash_of(&w);
    assert_eq!(rs(&w, &v1).0, 1);
    w.set_image("web:3");
    w.settle(Duration::from_secs(1), 5);
    assert_eq!(rs(&w, &v2).0, 1, "the newest old version waits");
    assert_eq!(rs(&w, &v1).0, 0, "beyond the limit");
}

#[test]
fn the_progress_deadline_degrades_and_with_abort_aborts() {
    let (mut w, old, new) = updated(2, "activeService: web-active\n");
    w.rollout.spec.progress_deadline_seconds = Some(30);
    w.rollout.spec.progress_deadline_abort = Some(true);
    w.never_ready.insert(new.clone());
    w.reconcile();
    for _ in 0..8 {
        tick(&mut w, 5);
    }
    let st = status(&w);
    assert!(st.abort, "{st:#?}");
    assert_eq!(phase(&w), "Degraded");
    assert_eq!(active(&w).as_deref(), Some(old.as_str()));
    let progressing = st
        .conditions
        .iter()
        .find(|c| c.type_ == condition::PROGRESSING)
        .unwrap();
    assert_eq!(progressing.reason, reason::ROLLOUT_ABORTED);
}

#[test]
fn an_invalid_blue_green_spec_is_invalid_spec_naming_the_field_and_nothing_moves() {
    let table: &[(&str, &str)] = &[
        (
            "previewService: web-preview\n",
            "spec.strategy.blueGreen.activeService",
        ),
        (
            "activeService: web\npreviewService: web\n",
            "spec.strategy.blueGreen.previewService",
        ),
        (
            "activeService: web\npreviewReplicaCount: 5\n",
            "spec.strategy.blueGreen.previewReplicaCount",
        ),
        (
            "activeService: web\nsteps: [{setWeight: 10}]\n",
            "spec.strategy.blueGreen.steps",
        ),
        (
            "activeService: web\ncanaryService: web-canary\n",
            "spec.strategy.blueGreen.canaryService",
        ),
        (
            "activeService: web\ntrafficRouting: {nginx: {stableIngress: web}}\n",
            "spec.strategy.blueGreen.trafficRouting",
        ),
        (
            "activeService: web\nprePromotionAnalysis: {templates: []}\n",
            "spec.strategy.blueGreen.prePromotionAnalysis.templates",
        ),
        (
            "activeService: web\nantiAffinity: {}\n",
            "spec.strategy.blueGreen.antiAffinity",
        ),
    ];
    for (yaml, field) in table {
        let mut w = settled_blue_green_world(3, "activeService: web\n");
        let before = (w.replica_sets.clone(), w.traffic.clone());
        w.rollout.spec = blue_green_rollout(3, yaml).spec;
        let p: Plan = w.reconcile();
        let errors = p
            .invalid
            .clone()
            .unwrap_or_else(|| panic!("{yaml}: valid?"));
        assert!(
            errors.iter().any(|e| e.field == *field),
            "{yaml}: {errors:?}"
        );
        assert_eq!(
            (w.replica_sets.clone(), w.traffic.clone()),
            before,
            "{yaml}"
        );
        let invalid = p
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::INVALID_SPEC)
            .unwrap();
        assert!(invalid.message.contains(field), "{}", invalid.message);
        assert_eq!(phase(&w), "Degraded");
    }
}

#[test]
fn ephemeral_metadata_follows_the_roles() {
    let (mut w, old, new) = updated(
        2,
        "activeService: web-active\nautoPromotionEnabled: false\nactiveMetadata: {labels: {role: active}}\npreviewMetadata: {labels: {role: preview}}\n",
    );
    w.settle(Duration::from_secs(1), 5);
    let st = status(&w);
    let label = |h: &str| {
        sluice::plan::ephemeral::desired(&w.rollout, &st, h)
            .and_then(|m| m.labels.get("role").cloned())
    };
    assert_eq!(label(&new).as_deref(), Some("preview"));
    assert_eq!(label(&old).as_deref(), Some("active"));
    w.promote();
    w.reconcile();
    let st = status(&w);
    let label = |h: &str| {
        sluice::plan::ephemeral::desired(&w.rollout, &st, h)
            .and_then(|m| m.labels.get("role").cloned())
    };
    assert_eq!(label(&new).as_deref(), Some("active"));
    assert_eq!(label(&old), None);
}

// ---------------------------------------------------------------------------------------------
// Properties over random event orders.

#[derive(Debug, Clone)]
enum Event {
    Tick(u8),
    Promote,
    PromoteFull,
    Abort,
    Retry,
    NewImage,
    RunPhase(bool, u8),
    Pause(bool),
}

fn event_strategy() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (1..20u8).prop_map(Event::Tick),
        1 => Just(Event::Promote),
        1 => Just(Event::PromoteFull),
        1 => Just(Event::Abort),
        1 => Just(Event::Retry),
        1 => Just(Event::NewImage),
        2 => (any::<bool>(), 0..5u8).prop_map(|(pre, p)| Event::RunPhase(pre, p)),
        1 => any::<bool>().prop_map(Event::Pause),
    ]
}

fn spec_yaml(
    auto: bool,
    seconds: u8,
    preview: Option<u8>,
    pre: bool,
    post: bool,
    delay: u8,
) -> String {
    let mut y = String::from("activeService: web-active\npreviewService: web-preview\n");
    y.push_str(&format!("autoPromotionEnabled: {auto}\n"));
    if seconds > 0 {
        y.push_str(&format!("autoPromotionSeconds: {seconds}\n"));
    }
    if let Some(n) = preview {
        y.push_str(&format!("previewReplicaCount: {n}\n"));
    }
    if pre {
        y.push_str("prePromotionAnalysis: {templates: [{templateName: t}]}\n");
    }
    if post {
        y.push_str("postPromotionAnalysis: {templates: [{templateName: t}]}\n");
    }
    y.push_str(&format!(
        "abortScaleDownDelaySeconds: {delay}\nscaleDownDelaySeconds: {delay}\n"
    ));
    y
}

/// Plans and applies once, checking the safety rules on the plan against what it observed.
fn checked_reconcile(w: &mut World, replicas: i32) -> Plan {
    let obs = w.observe();
    let p = plan(&obs, w.now);
    assert_eq!(p, plan(&obs, w.now), "the planner is deterministic");
    if p.invalid.is_none() {
        // The active Service moves only to a version whose every pod is available, or back to
        // the stable version on an abort.
        if let Some(to) = &p.stable_service_hash
            && obs.traffic.stable_service_hash.as_ref() != Some(to)
        {
            let rs = obs.replica_sets.iter().find(|r| &r.hash == to);
            let full = rs.is_some_and(|r| r.replicas == replicas && r.available >= replicas);
            let back = p.status.abort && p.status.stable_rs.as_ref() == Some(to);
            assert!(
                full || back,
                "active switched to {to} not fully available: {rs:?}"
            );
        }
        // Nothing the active Service selects is scaled down.
        for d in &p.replica_sets {
            if let Some(o) = obs.replica_sets.iter().find(|r| r.hash == d.hash)
                && d.replicas < o.replicas
            {
                assert_ne!(
                    obs.traffic.stable_service_hash.as_deref(),
                    Some(d.hash.as_str()),
                    "scaled down {} while the active Service selects it",
                    d.hash
                );
            }
        }
        // The stable version is never scaled down during an update.
        if let Some(stable) = &obs
            .rollout
            .status
            .as_ref()
            .and_then(|s| s.stable_rs.clone())
            && let Some(d) = p.replica_sets.iter().find(|d| &d.hash == stable)
            && p.status.stable_rs.as_ref() == Some(stable)
        {
            assert_eq!(d.replicas, replicas, "stable {stable} resized");
        }
    }
    w.apply(&p);
    p
}

/// Reconciles at one instant until nothing changes; each Service moves at most once.
fn converge(w: &mut World, replicas: i32) {
    let mut actives = vec![w.traffic.stable_service_hash.clone()];
    let mut previews = vec![w.traffic.canary_service_hash.clone()];
    for _ in 0..25 {
        let writes = w.writes;
        checked_reconcile(w, replicas);
        if actives.last() != Some(&w.traffic.stable_service_hash) {
            actives.push(w.traffic.stable_service_hash.clone());
        }
        if previews.last() != Some(&w.traffic.canary_service_hash) {
            previews.push(w.traffic.canary_service_hash.clone());
        }
        if w.writes == writes {
            assert!(
                actives.len() <= 2,
                "active Service written twice at one instant: {actives:?}"
            );
            assert!(
                previews.len() <= 2,
                "preview Service written twice at one instant: {previews:?}"
            );
            return;
        }
    }
    panic!("no fixed point: {:#?}", w.rollout.status);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn blue_green_safety_holds_under_any_event_order(
        replicas in 1..5i32,
        auto in any::<bool>(),
        seconds in prop_oneof![Just(0u8), 1..30u8],
        preview_count in proptest::option::of(0..5u8),
        pre in any::<bool>(),
        post in any::<bool>(),
        delay in prop_oneof![Just(0u8), 1..40u8],
        ready in proptest::option::of(1..3i32),
        events in proptest::collection::vec(event_strategy(), 0..40),
    ) {
        let preview_count = preview_count.map(|n| n.min(replicas as u8));
        let yaml = spec_yaml(auto, seconds, preview_count, pre, post, delay);
        let mut w = World::new(blue_green_rollout(replicas, &yaml), t0());
        w.settle(Duration::from_secs(1), 50);
        w.pods_ready_per_tick = ready;
        let mut image = 1;
        for e in &events {
            match e {
                Event::Tick(s) => w.advance(Duration::from_secs(u64::from(*s))),
                Event::Promote => w.promote(),
                Event::PromoteFull => w.promote_full(),
                Event::Abort => w.abort(),
                Event::Retry => w.retry(),
                Event::NewImage => {
                    image += 1;
                    w.set_image(&format!("web:{image}"));
                }
                Event::RunPhase(is_pre, p) => {
                    let phase = [
                        AnalysisPhase::Successful,
                        AnalysisPhase::Failed,
                        AnalysisPhase::Error,
                        AnalysisPhase::Inconclusive,
                        AnalysisPhase::Running,
                    ][usize::from(*p)];
                    let kind = if *is_pre { AnalysisRunKind::PrePromotion } else { AnalysisRunKind::PostPromotion };
                    w.set_run_phase(kind, phase, "set by the test");
                }
                Event::Pause(on) => w.rollout.spec.paused = Some(*on),
            }
            converge(&mut w, replicas);
        }
        // Left alone with every analysis passing and promoted, the update ends healthy with both
        // Services on the newest version.
        w.rollout.spec.paused = None;
        if status(&w).abort {
            w.retry();
        }
        for _ in 0..200 {
            for kind in [AnalysisRunKind::PrePromotion, AnalysisRunKind::PostPromotion] {
                w.set_run_phase(kind, AnalysisPhase::Successful, "");
            }
            w.promote();
            w.advance(Duration::from_secs(5));
            converge(&mut w, replicas);
            if phase(&w) == "Healthy" && w.replica_sets.iter().all(|r| r.hash == hash_of(&w) || r.replicas == 0) {
                break;
            }
        }
        let h = hash_of(&w);
        prop_assert_eq!(phase(&w), "Healthy", "{:#?}", w.rollout.status);
        prop_assert_eq!(active(&w), Some(h.clone()));
        prop_assert_eq!(preview(&w), Some(h.clone()));
        prop_assert_eq!(status(&w).stable_rs, Some(h));
    }
}

#[test]
fn a_rollback_to_a_version_within_its_scale_down_delay_is_fast() {
    let mut w = settled_blue_green_world(
        2,
        "activeService: web-active\nautoPromotionEnabled: false\nprePromotionAnalysis: {templates: [{templateName: t}]}\n",
    );
    let v1 = hash_of(&w);
    w.set_image("web:2");
    w.settle(Duration::from_secs(1), 5);
    w.set_run_phase(AnalysisRunKind::PrePromotion, AnalysisPhase::Successful, "");
    w.settle(Duration::from_secs(1), 5);
    w.promote();
    w.reconcile();
    let v2 = hash_of(&w);
    assert_eq!(status(&w).stable_rs.as_deref(), Some(v2.as_str()));
    assert!(rs(&w, &v1).1.is_some(), "v1 waits for its scale-down");
    let runs = w.analysis_runs.len();

    // Back to v1 within its delay: no analysis, no pause, production back at once.
    w.set_image("web:1");
    let p = w.reconcile();
    assert_eq!(active(&w).as_deref(), Some(v1.as_str()));
    assert_eq!(status(&w).stable_rs.as_deref(), Some(v1.as_str()));
    assert!(reasons(&p.events).contains(&reason::ROLLED_BACK));
    assert_eq!(w.analysis_runs.len(), runs, "no new analysis run");
    assert_eq!(rs(&w, &v1).1, None, "its deadline is gone");
    assert_eq!(phase(&w), "Healthy");
}
