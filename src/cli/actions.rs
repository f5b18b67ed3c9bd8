//! The actions: promote, abort, retry, pause, resume, restart, undo, set image.
//!
//! The patch each makes is decided in [`crate::plan::actions`] (pure, shared with the
//! simulator); this file does the I/O: read the Rollout, send the patch under the CLI's field
//! manager, print what was done.

use clap::{Args, Subcommand};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::api::rollout::Rollout;
pub use crate::plan::actions::Action;
/// The former name of [`decide`], still used by tests that compare the CLI's patches with
/// Argo CD's resource actions.
pub use crate::plan::actions::decide as plan;
use crate::plan::actions::{ActionPatch, decide};

use super::KubeArgs;
use super::info::get_rollout;
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

/// Reads the rollout (and its ReplicaSets for undo), decides the action's patch and writes it.
/// Returns the line to print.
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
    let patch = decide(&ro, &rss, action).map_err(|r| CliError::Refused(r.0))?;
    apply(target, name, &patch).await?;
    Ok(patch.summary)
}

/// Writes an action's patches: spec first (an unpause must not wait on a status write that could
/// fail), then status.
pub async fn apply(target: &Target, name: &str, patch: &ActionPatch) -> Result<(), CliError> {
    let api: Api<Rollout> = Api::namespaced(target.client.clone(), &target.namespace);
    let params = PatchParams {
        field_manager: Some(CLI_FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    if let Some(p) = &patch.spec_patch
        && let Err(e) = api.patch(name, &params, &Patch::Merge(p)).await
    {
        return Err(target.error(Op::sluice("patch", "rollouts", name), e).await);
    }
    if let Some(p) = &patch.json_patch {
        let ops: json_patch::Patch = serde_json::from_value(p.clone())
            .map_err(|e| CliError::Refused(format!("internal: bad patch: {e}")))?;
        if let Err(e) = api.patch(name, &params, &Patch::Json::<()>(ops)).await {
            return Err(target.error(Op::sluice("patch", "rollouts", name), e).await);
        }
    }
    if let Some(p) = &patch.status_patch
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
