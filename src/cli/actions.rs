//! The actions: promote, abort, retry, pause, resume, restart, undo, set image.
//!
//! Each is a plain patch, exactly as Argo Rollouts' kubectl plugin writes it: there is no Sluice
//! API server. `plan` decides the patch from the Rollout as read (pure, and refuses actions that
//! mean nothing in the rollout's state); `execute` reads, plans and writes.

use clap::{Args, Subcommand};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::api::common::AnalysisPhase;
use crate::api::constants::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION};
use crate::api::rollout::{PauseReason, Rollout};

use super::KubeArgs;
use super::info::{get_rollout, pause_reason_text};
use super::kube::{CliError, Op, Target, connect};

/// Field manager of the CLI's writes (distinct from the controller's `sluice`).
pub const CLI_FIELD_MANAGER: &str = "sluice-cli";

/// `NAME` plus connection options.
#[derive(Args, Debug)]
pub struct NameArgs {
    /// Rollout name.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Options of `promote`.
#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// Rollout name.
    pub name: String,
    /// Skip every remaining step and analysis, and promote the new version at once.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Options of `retry`: `retry NAME`, or Argo's spelling `retry rollout NAME`.
#[derive(Args, Debug)]
pub struct RetryArgs {
    /// `[rollout] NAME`.
    #[arg(num_args = 1..=2, required = true, value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Options of `restart`.
#[derive(Args, Debug)]
pub struct RestartArgs {
    /// Rollout name.
    pub name: String,
    /// Restart this long from now (Go duration, e.g. `10m`).
    #[arg(long = "in")]
    pub in_: Option<kube::core::Duration>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Options of `undo`.
#[derive(Args, Debug)]
pub struct UndoArgs {
    /// Rollout name.
    pub name: String,
    /// Revision to go back to (default: the one before the current).
    #[arg(long)]
    pub to_revision: Option<i64>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// What `set` changes.
#[derive(Subcommand, Debug)]
pub enum SetWhat {
    /// Set a container's image: `sluice set image NAME CONTAINER=IMAGE` (`*` for every container).
    Image {
        /// Rollout name.
        name: String,
        /// `CONTAINER=IMAGE`.
        assignment: String,
        #[command(flatten)]
        kube: KubeArgs,
    },
}

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
pub struct Plan {
    /// JSON merge patch on the main resource (`spec`).
    pub spec_patch: Option<Value>,
    /// JSON merge patch on the `status` subresource.
    pub status_patch: Option<Value>,
    /// JSON patch (RFC 6902) on the main resource, for template replacement.
    pub json_patch: Option<Value>,
    /// One line saying what was done.
    pub summary: String,
}

impl Plan {
    fn new(summary: String) -> Self {
        Plan {
            spec_patch: None,
            status_patch: None,
            json_patch: None,
            summary,
        }
    }
}

fn steps_len(ro: &Rollout) -> usize {
    ro.spec
        .strategy
        .canary
        .as_ref()
        .map_or(0, |c| c.steps.len())
}

/// True when the newest version is also the stable one: no update in progress.
fn fully_promoted(ro: &Rollout) -> bool {
    ro.status
        .as_ref()
        .is_some_and(|s| s.stable_rs.is_some() && s.stable_rs == s.current_pod_hash)
}

/// Decides the patch for `action` on `ro`, or says why the action means nothing now.
/// `replica_sets` are the Rollout's own (needed by `undo` only).
pub fn plan(ro: &Rollout, replica_sets: &[ReplicaSet], action: &Action) -> Result<Plan, String> {
    let name = ro.name_any();
    let status = ro.status.clone().unwrap_or_default();
    let paused = ro.spec.paused.unwrap_or(false);
    let n = steps_len(ro);
    match action {
        Action::Promote { full } => {
            if status.abort {
                return Err(format!(
                    "rollout \"{name}\" was aborted; promote does nothing for an aborted update: \
                     run `sluice retry {name}` to start it again, or change the spec"
                ));
            }
            let mut plan = Plan::new(String::new());
            if paused {
                plan.spec_patch = Some(json!({"spec": {"paused": false}}));
            }
            if *full {
                if fully_promoted(ro) && !paused {
                    return Err(format!(
                        "rollout \"{name}\" is fully promoted; there is nothing to promote"
                    ));
                }
                if status.promote_full {
                    return Err(format!(
                        "rollout \"{name}\" is already being fully promoted"
                    ));
                }
                if !fully_promoted(ro) {
                    plan.status_patch = Some(json!({"status": {"promoteFull": true}}));
                }
                plan.summary = format!(
                    "rollout \"{name}\" fully promoted: the remaining steps, pauses and analysis are skipped"
                );
                return Ok(plan);
            }
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
                plan.status_patch = Some(json!({"status": {
                    "pauseConditions": null,
                    "controllerPause": false,
                    "currentStepIndex": index + 1,
                }}));
                plan.summary = format!(
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
                plan.status_patch = Some(json!({"status": {"pauseConditions": null}}));
                plan.summary = format!(
                    "rollout \"{name}\" promoted: pause at step {} of {n} ({}) cleared",
                    index + 1,
                    reasons.join(", ")
                );
            } else if fully_promoted(ro) || usize::try_from(index).is_ok_and(|i| i >= n) {
                if paused {
                    plan.summary = format!("rollout \"{name}\" unpaused");
                    return Ok(plan);
                }
                return Err(if n == 0 && !fully_promoted(ro) {
                    format!(
                        "rollout \"{name}\" has no steps to skip; use `sluice promote {name} --full` to promote at once"
                    )
                } else if fully_promoted(ro) {
                    format!("rollout \"{name}\" is fully promoted; there is nothing to promote")
                } else {
                    format!(
                        "rollout \"{name}\" has completed all {n} steps and is waiting for the new pods; \
                         there is no step to skip"
                    )
                });
            } else {
                plan.status_patch = Some(json!({"status": {"currentStepIndex": index + 1}}));
                plan.summary = format!(
                    "rollout \"{name}\" promoted: step {} of {n} skipped",
                    index + 1
                );
            }
            if paused {
                plan.summary.push_str(", and unpaused");
            }
            Ok(plan)
        }
        Action::Abort => {
            if status.abort {
                let at = status
                    .aborted_at
                    .as_ref()
                    .map(|t| format!(" at {}", t.0))
                    .unwrap_or_default();
                return Err(format!("rollout \"{name}\" is already aborted{at}"));
            }
            if fully_promoted(ro) {
                return Err(format!(
                    "rollout \"{name}\" has no update in progress; there is nothing to abort"
                ));
            }
            let mut plan = Plan::new(format!(
                "rollout \"{name}\" aborted: traffic goes back to the stable version"
            ));
            plan.status_patch = Some(json!({"status": {"abort": true}}));
            Ok(plan)
        }
        Action::Retry => {
            if !status.abort {
                return Err(format!(
                    "rollout \"{name}\" is not aborted; there is nothing to retry"
                ));
            }
            let mut plan = Plan::new(format!(
                "rollout \"{name}\" retried: the update starts again from step 1"
            ));
            plan.status_patch = Some(json!({"status": {"abort": false}}));
            Ok(plan)
        }
        Action::Pause => {
            if paused {
                return Err(format!("rollout \"{name}\" is already paused"));
            }
            let mut plan = Plan::new(format!("rollout \"{name}\" paused"));
            plan.spec_patch = Some(json!({"spec": {"paused": true}}));
            Ok(plan)
        }
        Action::Resume => {
            if paused {
                let mut plan = Plan::new(format!("rollout \"{name}\" resumed"));
                plan.spec_patch = Some(json!({"spec": {"paused": false}}));
                return Ok(plan);
            }
            if let Some(p) = status.pause_conditions.first() {
                return Err(format!(
                    "rollout \"{name}\" is paused by the controller ({}) at step {} of {n}, not by \
                     `sluice pause`; run `sluice promote {name}` to go on",
                    pause_reason_text(p.reason),
                    status.current_step_index.unwrap_or(0) + 1
                ));
            }
            Err(format!("rollout \"{name}\" is not paused"))
        }
        Action::Restart { at } => {
            if ro.spec.replicas == Some(0) {
                return Err(format!(
                    "rollout \"{name}\" has 0 replicas; there are no pods to restart"
                ));
            }
            let mut plan = Plan::new(format!(
                "rollout \"{name}\" restart requested: pods started before {at} are replaced"
            ));
            plan.spec_patch = Some(json!({"spec": {"restartAt": at.to_string()}}));
            Ok(plan)
        }
        Action::Undo { to_revision } => plan_undo(ro, replica_sets, *to_revision),
        Action::SetImage { container, image } => plan_set_image(ro, container, image),
    }
}

fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|v| v.trim().parse().ok())
}

fn plan_undo(ro: &Rollout, rss: &[ReplicaSet], to: Option<i64>) -> Result<Plan, String> {
    let name = ro.name_any();
    if ro.spec.template.is_none() {
        return Err(format!(
            "rollout \"{name}\" takes its template from a workloadRef; undo the change there"
        ));
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
            current_hash.is_some()
                && rs.labels().get(POD_TEMPLATE_HASH_LABEL) == current_hash.as_ref()
        })
        .or(revisions.last())
        .map(|(r, _)| *r);
    let Some(current) = current else {
        return Err(format!(
            "rollout \"{name}\" has no revisions yet; there is nothing to undo"
        ));
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
            return Err(format!(
                "revision {t} is the current revision of rollout \"{name}\"; nothing to undo"
            ));
        }
        Some(t) => revisions
            .iter()
            .find(|(r, _)| *r == t)
            .copied()
            .ok_or_else(|| {
                format!(
                    "rollout \"{name}\" has no revision {t} (revisions kept: {})",
                    known()
                )
            })?,
        None => revisions
            .iter()
            .rev()
            .find(|(r, _)| *r < current)
            .copied()
            .ok_or_else(|| {
                format!(
                    "rollout \"{name}\" has no revision before {current}; there is nothing to undo"
                )
            })?,
    };
    let mut template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or_else(|| format!("ReplicaSet {} has no pod template", rs.name_any()))?;
    // The hash label is the controller's; the Rollout's template never carries it.
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    let template = serde_json::to_value(&template).map_err(|e| e.to_string())?;
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
    let mut plan = Plan::new(format!(
        "rollout \"{name}\" rolled back to the template of revision {revision} ({})",
        images.join(", ")
    ));
    plan.json_patch = Some(json!([{"op": "replace", "path": "/spec/template", "value": template}]));
    Ok(plan)
}

fn plan_set_image(ro: &Rollout, container: &str, image: &str) -> Result<Plan, String> {
    let name = ro.name_any();
    let Some(pod) = ro.spec.template.as_ref().and_then(|t| t.spec.as_ref()) else {
        return Err(format!(
            "rollout \"{name}\" takes its template from a workloadRef; set the image there"
        ));
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
        return Err(if exists {
            format!("rollout \"{name}\" already runs image {image}; nothing changed")
        } else {
            format!(
                "rollout \"{name}\" has no container \"{container}\" (containers: {})",
                all.join(", ")
            )
        });
    }
    let mut plan = Plan::new(format!(
        "rollout \"{name}\": image of {} set to {image}; a new revision starts rolling out",
        changed.join(", ")
    ));
    plan.json_patch = Some(Value::Array(ops));
    Ok(plan)
}

/// Reads the rollout (and its ReplicaSets for undo), plans the action and writes it. Returns the
/// line to print.
pub async fn execute(target: &Target, name: &str, action: &Action) -> Result<String, CliError> {
    let ro = get_rollout(target, name).await?;
    let rss = if matches!(action, Action::Undo { .. }) {
        let api: Api<ReplicaSet> = Api::namespaced(target.client.clone(), &target.namespace);
        match api.list(&ListParams::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|rs| {
                    rs.owner_references()
                        .iter()
                        .any(|o| o.kind == "Rollout" && o.name == name)
                })
                .collect(),
            Err(e) => return Err(target.error(Op::apps("list", "replicasets", ""), e).await),
        }
    } else {
        Vec::new()
    };
    let plan = plan(&ro, &rss, action).map_err(CliError::Refused)?;
    apply(target, name, &plan).await?;
    Ok(plan.summary)
}

/// Writes a plan: spec first (an unpause must not wait on a status write that could fail), then
/// status.
pub async fn apply(target: &Target, name: &str, plan: &Plan) -> Result<(), CliError> {
    let api: Api<Rollout> = Api::namespaced(target.client.clone(), &target.namespace);
    let params = PatchParams {
        field_manager: Some(CLI_FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    if let Some(p) = &plan.spec_patch
        && let Err(e) = api.patch(name, &params, &Patch::Merge(p)).await
    {
        return Err(target.error(Op::sluice("patch", "rollouts", name), e).await);
    }
    if let Some(p) = &plan.json_patch {
        let patch: json_patch::Patch = serde_json::from_value(p.clone())
            .map_err(|e| CliError::Refused(format!("internal: bad patch: {e}")))?;
        if let Err(e) = api.patch(name, &params, &Patch::Json::<()>(patch)).await {
            return Err(target.error(Op::sluice("patch", "rollouts", name), e).await);
        }
    }
    if let Some(p) = &plan.status_patch
        && let Err(e) = api.patch_status(name, &params, &Patch::Merge(p)).await
    {
        return Err(target
            .error(Op::sluice("patch", "rollouts/status", name), e)
            .await);
    }
    Ok(())
}

async fn run_action(kube: &KubeArgs, name: &str, action: Action) -> anyhow::Result<i32> {
    let target = connect(kube).await?;
    let summary = execute(&target, name, &action).await?;
    println!("{summary}");
    Ok(0)
}

/// `promote`.
pub async fn run_promote(args: PromoteArgs) -> anyhow::Result<i32> {
    run_action(&args.kube, &args.name, Action::Promote { full: args.full }).await
}

/// `abort`, `pause`, `resume`.
pub async fn run_simple(action: Action, args: NameArgs) -> anyhow::Result<i32> {
    run_action(&args.kube, &args.name, action).await
}

/// `retry [rollout] NAME`.
pub async fn run_retry(args: RetryArgs) -> anyhow::Result<i32> {
    let name = match args.names.as_slice() {
        [name] => name,
        [kind, name] if matches!(kind.as_str(), "rollout" | "rollouts" | "ro") => name,
        [kind, _] => anyhow::bail!("retry: unknown kind \"{kind}\" (use `sluice retry NAME`)"),
        _ => anyhow::bail!("retry: expected a rollout name"),
    };
    run_action(&args.kube, name, Action::Retry).await
}

/// `restart`.
pub async fn run_restart(args: RestartArgs) -> anyhow::Result<i32> {
    let delay = args.in_.map(std::time::Duration::from).unwrap_or_default();
    let at = Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(delay)?)?
        // restartAt is compared with pod start times, which have second precision.
        .round(jiff::Unit::Second)?;
    run_action(&args.kube, &args.name, Action::Restart { at }).await
}

/// `undo`.
pub async fn run_undo(args: UndoArgs) -> anyhow::Result<i32> {
    run_action(
        &args.kube,
        &args.name,
        Action::Undo {
            to_revision: args.to_revision,
        },
    )
    .await
}

/// `set image`.
pub async fn run_set(what: SetWhat) -> anyhow::Result<i32> {
    let SetWhat::Image {
        name,
        assignment,
        kube,
    } = what;
    let Some((container, image)) = assignment.split_once('=') else {
        anyhow::bail!("set image: expected CONTAINER=IMAGE, got \"{assignment}\"");
    };
    if container.is_empty() || image.is_empty() {
        anyhow::bail!("set image: expected CONTAINER=IMAGE, got \"{assignment}\"");
    }
    run_action(
        &kube,
        &name,
        Action::SetImage {
            container: container.to_string(),
            image: image.to_string(),
        },
    )
    .await
}
