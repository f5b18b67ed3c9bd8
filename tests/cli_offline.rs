//! CLI behaviour that needs no cluster: explain's wording from a snapshot, version, completion.

use serde_json::json;
use sluice::api::rollout::Rollout;
use sluice::cli::explain::{explain, threshold_words};
use sluice::cli::info::{Snapshot, view};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn rollout(status: serde_json::Value) -> Result<Rollout> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "default", "generation": 3},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "30s"}}]}}
        },
        "status": status
    }))?)
}

/// A blue-green Rollout paused before its switch, with its two ReplicaSets.
fn blue_green_paused() -> Result<Snapshot> {
    let ro: Rollout = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "default", "generation": 3, "uid": "u1"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
            "strategy": {"blueGreen": {"activeService": "web-active", "previewService": "web-preview",
                                       "autoPromotionSeconds": 60,
                                       "prePromotionAnalysis": {"templates": [{"templateName": "smoke"}]}}}
        },
        "status": {
            "phase": "Paused", "message": "BlueGreenPause", "observedGeneration": 3,
            "controllerPause": true, "stableRS": "aaa", "currentPodHash": "bbb",
            "pauseConditions": [{"reason": "BlueGreenPause", "startTime": "2026-03-02T14:00:00Z"}],
            "blueGreen": {"activeSelector": "aaa", "previewSelector": "bbb",
                          "prePromotionAnalysisRunStatus": {"name": "web-bbb-2-pre", "status": "Successful"}}
        }
    }))?;
    let rs = |hash: &str,
              revision: &str,
              image: &str|
     -> Result<k8s_openapi::api::apps::v1::ReplicaSet> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": format!("web-{hash}"), "namespace": "default",
                         "labels": {"rollout.sluice.dev/pod-template-hash": hash},
                         "annotations": {"rollout.sluice.dev/revision": revision},
                         "ownerReferences": [{"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                                              "name": "web", "uid": "u1", "controller": true}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
            "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2}
        }))?)
    };
    Ok(Snapshot::from_objects(
        ro,
        vec![rs("aaa", "1", "web:1")?, rs("bbb", "2", "web:2")?],
        vec![],
    ))
}

#[test]
fn blue_green_state_is_shown_and_explained() -> Result {
    let snapshot = blue_green_paused()?;
    let now: jiff::Timestamp = "2026-03-02T14:00:20Z".parse()?;
    let v = sluice::cli::info::view_at(&snapshot, now);
    assert_eq!(v.strategy, "BlueGreen");
    let bg = v.blue_green.clone().expect("blue-green view");
    assert_eq!(bg.active_revision, Some(1));
    assert_eq!(bg.preview_revision, Some(2));
    assert_eq!(
        bg.pre_promotion_analysis.as_deref(),
        Some("web-bbb-2-pre (Successful)")
    );
    assert_eq!(v.pause_seconds_left, Some(40), "auto-promotion in 40s");
    let roles: Vec<&str> = v.revisions.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(roles, ["preview", "stable,active"]);
    assert_eq!(
        explain(&v),
        [
            "Paused before switching production to revision 2.",
            "Production traffic (Service web-active) goes to revision 1. The preview Service web-preview selects revision 2.",
            "It promotes by itself in 40s; `sluice promote web -n default` switches now.",
        ]
    );
    let text = sluice::cli::render::rollout_tree(&v, sluice::cli::render::Style::plain());
    assert!(
        text.contains("  Active:       web-active → revision 1"),
        "{text}"
    );
    assert!(
        text.contains("  Preview:      web-preview → revision 2"),
        "{text}"
    );
    assert!(text.contains("promotes by itself in 40s"), "{text}");
    Ok(())
}

#[test]
fn threshold_words_follow_the_condition_kind() {
    let cases = [
        ("result[0] >= 0.95", "successCondition", Some("below 0.95")),
        ("result >= 0.95", "successCondition", Some("below 0.95")),
        ("result[0] <= 100", "successCondition", Some("above 100")),
        ("result[0] > 10", "failureCondition", Some("above 10")),
        (
            "result[0] >= 10",
            "failureCondition",
            Some("at or above 10"),
        ),
        (
            "default(result, 0) < 1",
            "failureCondition",
            Some("below 1"),
        ),
        ("all(result, # < 1000)", "successCondition", None),
        (
            "len(result) > 0 && result[0] >= 0.95",
            "successCondition",
            None,
        ),
    ];
    for (cond, kind, want) in cases {
        assert_eq!(
            threshold_words(cond, kind).as_deref(),
            want,
            "{cond} ({kind})"
        );
    }
}

#[test]
fn explain_invalid_spec_names_the_field() -> Result {
    let ro = rollout(json!({
        "phase": "Degraded", "observedGeneration": 3,
        "message": "InvalidSpec: spec.strategy.canary.steps[0].setWeight: must be between 0 and 100",
        "conditions": [{"type": "InvalidSpec", "status": "True", "reason": "InvalidSpec",
                        "message": "spec.strategy.canary.steps[0].setWeight: must be between 0 and 100, got 150"}]
    }))?;
    let v = view(&Snapshot::from_objects(ro, vec![], vec![]));
    assert_eq!(
        explain(&v),
        [
            "The spec is invalid: spec.strategy.canary.steps[0].setWeight: must be between 0 and 100, got 150. Nothing else changes until the spec is fixed."
        ]
    );
    Ok(())
}

#[test]
fn explain_a_timed_pause_and_a_user_pause() -> Result {
    let ro = rollout(json!({
        "phase": "Paused", "message": "CanaryPauseStep", "observedGeneration": 3,
        "currentStepIndex": 1, "controllerPause": true,
        "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-03-02T14:00:00Z"}],
        "canary": {"weights": {"canary": {"weight": 20}, "stable": {"weight": 80}}}
    }))?;
    let v = view(&Snapshot::from_objects(ro, vec![], vec![]));
    assert_eq!(
        explain(&v),
        [
            "Paused at step 2 of 2 (pause: 30s).",
            "Traffic to the canary is 20%.",
            "It goes on by itself when the pause ends; `sluice promote web -n default` goes on now.",
        ]
    );

    let mut ro = rollout(
        json!({"phase": "Paused", "message": "manually paused", "observedGeneration": 3, "currentStepIndex": 0}),
    )?;
    ro.spec.paused = Some(true);
    let v = view(&Snapshot::from_objects(ro, vec![], vec![]));
    assert_eq!(
        explain(&v),
        [
            "Paused by the user (spec.paused) at step 1 of 2.",
            "There is no traffic router: traffic follows the ratio of canary to stable pods.",
            "Run `sluice resume web -n default` to go on.",
        ]
    );
    Ok(())
}

#[test]
fn a_spec_the_controller_has_not_seen_is_progressing_whatever_the_status_says() -> Result {
    let ro = rollout(json!({"phase": "Healthy", "observedGeneration": 2}))?;
    let v = view(&Snapshot::from_objects(ro, vec![], vec![]));
    assert_eq!(v.phase, "Progressing");
    assert_eq!(
        v.message,
        "waiting for the controller to observe the new spec"
    );
    Ok(())
}

#[test]
fn version_and_completion() -> Result {
    let bin = env!("CARGO_BIN_EXE_sluice");
    let out = std::process::Command::new(bin).arg("version").output()?;
    assert_eq!(
        String::from_utf8(out.stdout)?,
        format!("sluice {}\n", env!("CARGO_PKG_VERSION"))
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(bin)
            .args(["completion", shell])
            .output()?;
        assert_eq!(out.status.code(), Some(0));
        let script = String::from_utf8(out.stdout)?;
        for word in ["promote", "abort", "lint", "fail-on-pause", "to-revision"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
        .args(["completion", "bash"])
        .output()?;
    assert!(String::from_utf8(out.stdout)?.contains("kubectl-sluice"));
    Ok(())
}

#[test]
fn watch_frames_are_cut_to_the_terminal() {
    use sluice::cli::get::fit;
    let frame = "a\nb\nc\nd\ne\n";
    assert_eq!(fit(frame, 10, 80), frame, "fits: unchanged");
    assert_eq!(
        fit(frame, 4, 80),
        "a\nb\n... 3 more lines: enlarge the terminal or use `-o yaml`\n"
    );
    // A line wider than the terminal takes the rows it wraps onto.
    let wide = format!("{}\nb\nc\n", "x".repeat(30));
    assert!(
        fit(&wide, 4, 10).starts_with("... 3 more lines"),
        "{}",
        fit(&wide, 4, 10)
    );
    // Colour codes take no room.
    let coloured = "\x1b[32m✔ Healthy\x1b[0m\nb\n";
    assert_eq!(fit(coloured, 3, 9), coloured);
}
