//! The user's actions on a Rollout: promote, abort, retry, pause, resume, restart, undo, set
//! image.
//!
//! Each is a plain patch, exactly as Argo Rollouts' kubectl plugin writes it: there is no Sluice
//! API server. [`decide`] computes the patch from the Rollout as read, and refuses actions that
//! mean nothing in the rollout's state; it is pure, shared by the CLI (which fetches the Rollout
//! and sends the patch) and the simulator (which applies it as the API server would, with
//! [`ActionPatch::apply_to`]).

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::hash;
use crate::api::common::AnalysisPhase;
use crate::api::constants::{REVISION_ANNOTATION, pod_template_hash};
use crate::api::rollout::{PauseReason, Rollout, RolloutStatus};

/// An action on a rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `promote [--full]`.
    Promote {
        /// `--full`.
        full: bool,
    },
    /// `abort`.
    Abort,
    /// `retry`.
    Retry,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `restart`, at this instant.
    Restart {
        /// When the pods should be restarted.
        at: Timestamp,
    },
    /// `undo [--to-revision N]`.
    Undo {
        /// Target revision.
        to_revision: Option<i64>,
    },
    /// `set image CONTAINER=IMAGE`.
    SetImage {
        /// Container name, or `*`.
        container: String,
        /// New image.
        image: String,
    },
}

/// The writes an action makes, and what to tell the user.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionPatch {
    /// JSON merge patch on the main resource (`spec`).
    pub spec_patch: Option<Value>,
    /// JSON merge patch on the `status` subresource.
    pub status_patch: Option<Value>,
    /// JSON patch (RFC 6902) on the main resource, for template replacement.
    pub json_patch: Option<Value>,
    /// One line saying what was done.
    pub summary: String,
}

/// Why an action means nothing in the rollout's state (or cannot be expressed as a patch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

type Decision = Result<ActionPatch, Refusal>;

impl ActionPatch {
    fn new(summary: String) -> Self {
        ActionPatch {
            spec_patch: None,
            status_patch: None,
            json_patch: None,
            summary,
        }
    }

    /// Applies the patches to `ro` as the API server would: spec first, then the JSON patch,
    /// then status.
    pub fn apply_to(&self, ro: &mut Rollout) -> Result<(), Refusal> {
        let internal = |e: &dyn std::fmt::Display| Refusal(format!("internal: bad patch: {e}"));
        let mut value = serde_json::to_value(&*ro).map_err(|e| internal(&e))?;
        if let Some(p) = &self.spec_patch {
            json_patch::merge(&mut value, p);
        }
        if let Some(p) = &self.json_patch {
            let ops: json_patch::Patch =
                serde_json::from_value(p.clone()).map_err(|e| internal(&e))?;
            json_patch::patch(&mut value, &ops).map_err(|e| internal(&e))?;
        }
        if let Some(p) = &self.status_patch {
            json_patch::merge(&mut value, p);
        }
        *ro = serde_json::from_value(value).map_err(|e| internal(&e))?;
        Ok(())
    }
}

/// Decides the patch for `action` on `ro`, or says why the action means nothing now.
/// `replica_sets` are the Rollout's own (needed by `undo` only).
pub fn decide(ro: &Rollout, replica_sets: &[ReplicaSet], action: &Action) -> Decision {
    let facts = Facts::of(ro);
    match action {
        Action::Promote { full: false } => promote(&facts),
        Action::Promote { full: true } => promote_full(&facts),
        Action::Abort => abort(&facts),
        Action::Retry => retry(&facts),
        Action::Pause => pause(&facts),
        Action::Resume => resume(&facts),
        Action::Restart { at } => restart(ro, &facts, *at),
        Action::Undo { to_revision } => undo(ro, replica_sets, *to_revision),
        Action::SetImage { container, image } => set_image(ro, container, image),
    }
}

/// What the decisions look at.
struct Facts {
    name: String,
    status: RolloutStatus,
    /// `spec.paused`.
    paused: bool,
    /// Number of canary steps.
    n: usize,
    /// The newest version is also the stable one: no update in progress.
    fully_promoted: bool,
    /// A blue-green Rollout: no steps; promote ends the pause before the switch.
    blue_green: bool,
}

impl Facts {
    fn of(ro: &Rollout) -> Self {
        let status = ro.status.clone().unwrap_or_default();
        Facts {
            name: ro.name_any(),
            fully_promoted: status.stable_rs.is_some()
                && status.stable_rs == status.current_pod_hash,
            status,
            paused: ro.spec.paused.unwrap_or(false),
            blue_green: ro.spec.strategy.blue_green.is_some() && ro.spec.strategy.canary.is_none(),
            n: ro
                .spec
                .strategy
                .canary
                .as_ref()
                .map_or(0, |c| c.steps.len()),
        }
    }

    fn refuse_if_aborted(&self) -> Result<(), Refusal> {
        if self.status.abort {
            let name = &self.name;
            return Err(Refusal(format!(
                "rollout \"{name}\" was aborted; promote does nothing for an aborted update: \
                 run `sluice retry {name}` to start it again, `sluice promote {name} --full` to \
                 go straight to the new version, or change the spec"
            )));
        }
        Ok(())
    }

    /// A promote unpauses a rollout paused by `spec.paused`.
    fn unpause(&self, summary: String) -> ActionPatch {
        let mut patch = ActionPatch::new(summary);
        if self.paused {
            patch.spec_patch = Some(json!({"spec": {"paused": false}}));
        }
        patch
    }
}

/// `promote`: skips the current step, or clears the pause (or accepts the inconclusive
/// analysis) that holds it.
fn promote(f: &Facts) -> Decision {
    f.refuse_if_aborted()?;
    if f.blue_green {
        return promote_blue_green(f);
    }
    let (name, n, status) = (&f.name, f.n, &f.status);
    let mut patch = f.unpause(String::new());
    let index = status.current_step_index.unwrap_or(0);
    let inconclusive_step = status
        .pause_conditions
        .iter()
        .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun)
        && status
            .canary
            .current_step_analysis_run_status
            .as_ref()
            .is_some_and(|r| r.status == AnalysisPhase::Inconclusive);
    if inconclusive_step {
        patch.status_patch = Some(json!({"status": {
            "pauseConditions": null,
            "controllerPause": false,
            "currentStepIndex": index + 1,
        }}));
        patch.summary = format!(
            "rollout \"{name}\" promoted: inconclusive analysis at step {} of {n} accepted, going on to step {}",
            index + 1,
            index + 2
        );
    } else if !status.pause_conditions.is_empty() {
        let reasons: Vec<&str> = status
            .pause_conditions
            .iter()
            .map(|p| pause_reason_text(p.reason))
            .collect();
        patch.status_patch = Some(json!({"status": {"pauseConditions": null}}));
        patch.summary = format!(
            "rollout \"{name}\" promoted: pause at step {} of {n} ({}) cleared",
            index + 1,
            reasons.join(", ")
        );
    } else if f.fully_promoted || usize::try_from(index).is_ok_and(|i| i >= n) {
        if f.paused {
            patch.summary = format!("rollout \"{name}\" unpaused");
            return Ok(patch);
        }
        return Err(Refusal(if n == 0 && !f.fully_promoted {
            format!(
                "rollout \"{name}\" has no steps to skip; use `sluice promote {name} --full` to promote at once"
            )
        } else if f.fully_promoted {
            format!("rollout \"{name}\" is fully promoted; there is nothing to promote")
        } else {
            format!(
                "rollout \"{name}\" has completed all {n} steps and is waiting for the new pods; \
                 there is no step to skip"
            )
        }));
    } else {
        patch.status_patch = Some(json!({"status": {"currentStepIndex": index + 1}}));
        patch.summary = format!(
            "rollout \"{name}\" promoted: step {} of {n} skipped",
            index + 1
        );
    }
    if f.paused {
        patch.summary.push_str(", and unpaused");
    }
    Ok(patch)
}

/// Blue-green `promote`, as Argo's: the pause before the switch (or an inconclusive analysis,
/// which then runs again) is cleared; the pre-promotion analysis is not skipped (`--full`
/// does that).
fn promote_blue_green(f: &Facts) -> Decision {
    let (name, status) = (&f.name, &f.status);
    let mut patch = f.unpause(String::new());
    if !status.pause_conditions.is_empty() {
        let reasons: Vec<&str> = status
            .pause_conditions
            .iter()
            .map(|p| pause_reason_text(p.reason))
            .collect();
        patch.status_patch = Some(json!({"status": {"pauseConditions": null}}));
        patch.summary = format!(
            "rollout \"{name}\" promoted: pause ({}) cleared",
            reasons.join(", ")
        );
        if f.paused {
            patch.summary.push_str(", and unpaused");
        }
        return Ok(patch);
    }
    if f.paused {
        patch.summary = format!("rollout \"{name}\" unpaused");
        return Ok(patch);
    }
    Err(Refusal(if f.fully_promoted {
        format!("rollout \"{name}\" is fully promoted; there is nothing to promote")
    } else {
        format!(
            "rollout \"{name}\" is not paused: it switches as soon as the new version is ready; \
             use `sluice promote {name} --full` to skip its analysis"
        )
    }))
}

/// `promote --full`: every remaining step, pause and analysis is skipped.
fn promote_full(f: &Facts) -> Decision {
    let name = &f.name;
    if f.fully_promoted && !f.paused {
        return Err(Refusal(format!(
            "rollout \"{name}\" is fully promoted; there is nothing to promote"
        )));
    }
    if f.status.promote_full {
        return Err(Refusal(format!(
            "rollout \"{name}\" is already being fully promoted"
        )));
    }
    // After an abort too (as Argo's `promote --full`): it ends the abort and goes forward.
    let ending_abort = if f.status.abort {
        " (the abort is over: the new version is promoted)"
    } else {
        ""
    };
    let mut patch = f.unpause(format!(
        "rollout \"{name}\" fully promoted: the remaining steps, pauses and analysis are skipped{ending_abort}"
    ));
    if !f.fully_promoted {
        patch.status_patch = Some(json!({"status": {"promoteFull": true}}));
    }
    Ok(patch)
}

fn abort(f: &Facts) -> Decision {
    let name = &f.name;
    if f.status.abort {
        let at = f
            .status
            .aborted_at
            .as_ref()
            .map(|t| format!(" at {}", t.0))
            .unwrap_or_default();
        return Err(Refusal(format!(
            "rollout \"{name}\" is already aborted{at}"
        )));
    }
    if f.fully_promoted {
        return Err(Refusal(format!(
            "rollout \"{name}\" has no update in progress; there is nothing to abort"
        )));
    }
    let mut patch = ActionPatch::new(format!(
        "rollout \"{name}\" aborted: traffic goes back to the stable version"
    ));
    patch.status_patch = Some(json!({"status": {"abort": true}}));
    Ok(patch)
}

fn retry(f: &Facts) -> Decision {
    let name = &f.name;
    if !f.status.abort {
        return Err(Refusal(format!(
            "rollout \"{name}\" is not aborted; there is nothing to retry"
        )));
    }
    let mut patch = ActionPatch::new(if f.blue_green {
        format!("rollout \"{name}\" retried: the update starts again")
    } else {
        format!("rollout \"{name}\" retried: the update starts again from step 1")
    });
    patch.status_patch = Some(json!({"status": {"abort": false}}));
    Ok(patch)
}

fn pause(f: &Facts) -> Decision {
    let name = &f.name;
    if f.paused {
        return Err(Refusal(format!("rollout \"{name}\" is already paused")));
    }
    let mut patch = ActionPatch::new(format!("rollout \"{name}\" paused"));
    patch.spec_patch = Some(json!({"spec": {"paused": true}}));
    Ok(patch)
}

/// `resume` undoes `pause` only; a pause the controller holds is lifted by `promote`.
fn resume(f: &Facts) -> Decision {
    let name = &f.name;
    if f.paused {
        let mut patch = ActionPatch::new(format!("rollout \"{name}\" resumed"));
        patch.spec_patch = Some(json!({"spec": {"paused": false}}));
        return Ok(patch);
    }
    if let Some(p) = f.status.pause_conditions.first() {
        return Err(Refusal(format!(
            "rollout \"{name}\" is paused by the controller ({}) at step {} of {}, not by \
             `sluice pause`; run `sluice promote {name}` to go on",
            pause_reason_text(p.reason),
            f.status.current_step_index.unwrap_or(0) + 1,
            f.n
        )));
    }
    Err(Refusal(format!("rollout \"{name}\" is not paused")))
}

fn restart(ro: &Rollout, f: &Facts, at: Timestamp) -> Decision {
    let name = &f.name;
    if ro.spec.replicas == Some(0) {
        return Err(Refusal(format!(
            "rollout \"{name}\" has 0 replicas; there are no pods to restart"
        )));
    }
    let mut patch = ActionPatch::new(format!(
        "rollout \"{name}\" restart requested: pods started before {at} are replaced"
    ));
    patch.spec_patch = Some(json!({"spec": {"restartAt": at.to_string()}}));
    Ok(patch)
}

fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|v| v.trim().parse().ok())
}

/// `undo`: the template of an earlier revision (the one before the current by default).
fn undo(ro: &Rollout, rss: &[ReplicaSet], to: Option<i64>) -> Decision {
    let name = ro.name_any();
    if ro.spec.template.is_none() {
        return Err(Refusal(format!(
            "rollout \"{name}\" takes its template from a workloadRef; undo the change there"
        )));
    }
    let mut revisions: Vec<(i64, &ReplicaSet)> = rss
        .iter()
        .filter_map(|rs| revision_of(rs).map(|r| (r, rs)))
        .collect();
    revisions.sort_by_key(|(r, _)| *r);
    let current_hash = ro.status.as_ref().and_then(|s| s.current_pod_hash.clone());
    let current = revisions
        .iter()
        .find(|(_, rs)| {
            current_hash.is_some() && pod_template_hash(rs.labels()) == current_hash.as_ref()
        })
        .or(revisions.last())
        .map(|(r, _)| *r);
    let Some(current) = current else {
        return Err(Refusal(format!(
            "rollout \"{name}\" has no revisions yet; there is nothing to undo"
        )));
    };
    let known = || {
        revisions
            .iter()
            .map(|(r, _)| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (revision, rs) = match to {
        Some(t) if t == current => {
            return Err(Refusal(format!(
                "revision {t} is the current revision of rollout \"{name}\"; nothing to undo"
            )));
        }
        Some(t) => revisions
            .iter()
            .find(|(r, _)| *r == t)
            .copied()
            .ok_or_else(|| {
                Refusal(format!(
                    "rollout \"{name}\" has no revision {t} (revisions kept: {})",
                    known()
                ))
            })?,
        None => revisions
            .iter()
            .rev()
            .find(|(r, _)| *r < current)
            .copied()
            .ok_or_else(|| {
                Refusal(format!(
                    "rollout \"{name}\" has no revision before {current}; there is nothing to undo"
                ))
            })?,
    };
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .ok_or_else(|| Refusal(format!("ReplicaSet {} has no pod template", rs.name_any())))?;
    // The ReplicaSet's template as the API server stored it, less what the API server filled in
    // and the controller's hash label: the template as it was written, which the controller
    // hashes to this ReplicaSet's hash and so takes up again instead of starting a new one. A
    // ReplicaSet named by an earlier release's hash is found again by the spelling that hash
    // was computed from.
    // Less, too, the ephemeral metadata (`canaryMetadata` / `stableMetadata`) put on it while
    // it held a role: it was never part of the Rollout's template.
    let template = &super::ephemeral::strip(template, rs.annotations());
    let collision_count = ro.status.as_ref().and_then(|s| s.collision_count);
    let template = pod_template_hash(rs.labels())
        .and_then(|label| hash::spelling_with_hash(template, label, collision_count))
        .unwrap_or_else(|| hash::canonical_template(template));
    let images: Vec<String> = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .map(|p| {
            p.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut patch = ActionPatch::new(format!(
        "rollout \"{name}\" rolled back to the template of revision {revision} ({})",
        images.join(", ")
    ));
    patch.json_patch =
        Some(json!([{"op": "replace", "path": "/spec/template", "value": template}]));
    Ok(patch)
}

/// `set image CONTAINER=IMAGE` (`*`: every container), on containers and init containers.
fn set_image(ro: &Rollout, container: &str, image: &str) -> Decision {
    let name = ro.name_any();
    let Some(pod) = ro.spec.template.as_ref().and_then(|t| t.spec.as_ref()) else {
        return Err(Refusal(format!(
            "rollout \"{name}\" takes its template from a workloadRef; set the image there"
        )));
    };
    let mut ops = Vec::new();
    let mut changed = Vec::new();
    for (list, path) in [
        (Some(&pod.containers), "containers"),
        (pod.init_containers.as_ref(), "initContainers"),
    ] {
        for (i, c) in list.into_iter().flatten().enumerate() {
            if (container == "*" || c.name == container) && c.image.as_deref() != Some(image) {
                ops.push(json!({"op": "replace", "path": format!("/spec/template/spec/{path}/{i}/image"), "value": image}));
                changed.push(c.name.clone());
            }
        }
    }
    if ops.is_empty() {
        let all: Vec<&str> = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .map(|c| c.name.as_str())
            .collect();
        let exists = container == "*" || all.contains(&container);
        return Err(Refusal(if exists {
            format!("rollout \"{name}\" already runs image {image}; nothing changed")
        } else {
            format!(
                "rollout \"{name}\" has no container \"{container}\" (containers: {})",
                all.join(", ")
            )
        }));
    }
    let mut patch = ActionPatch::new(format!(
        "rollout \"{name}\": image of {} set to {image}; a new revision starts rolling out",
        changed.join(", ")
    ));
    patch.json_patch = Some(Value::Array(ops));
    Ok(patch)
}

/// The name of a pause reason, as the API spells it.
pub fn pause_reason_text(r: PauseReason) -> &'static str {
    match r {
        PauseReason::CanaryPauseStep => "CanaryPauseStep",
        PauseReason::InconclusiveAnalysisRun => "InconclusiveAnalysisRun",
        PauseReason::BlueGreenPause => "BlueGreenPause",
    }
}
