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

/// How often an action reads, decides and writes again when the rollout changed between its
/// read and its write (another person's action, or the controller's status update).
const ATTEMPTS: u32 = 8;

/// Reads the rollout (and its ReplicaSets for undo), decides the action's patch and writes it.
/// Returns the line to print.
///
/// Every write is guarded by the resourceVersion of the read the decision was made from: when
/// two people run `promote` and `abort` at the same instant, one write wins and the other is
/// refused by the API server with a conflict; that action then reads again and decides on what
/// the first one left (a promote after an abort is refused, saying the rollout was aborted). The
/// outcome is therefore always the two actions one after the other, never a mix of two decisions
/// made from the same state, and each command prints what it did.
pub async fn execute(target: &Target, name: &str, action: &Action) -> Result<String, CliError> {
    for attempt in 1..=ATTEMPTS {
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
        match write(target, name, &patch, ro.metadata.resource_version.clone()).await {
            Ok(()) => return Ok(patch.summary),
            Err(Write::Conflict) => {
                // Someone else wrote first: back off a little, then decide again from their
                // result.
                tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(Write::Failed(e)) => return Err(e),
        }
    }
    Err(CliError::Refused(format!(
        "rollout \"{name}\" changed under every one of {ATTEMPTS} attempts to write this action; \
         run the command again"
    )))
}

/// Why a guarded write did not happen.
enum Write {
    /// The rollout changed since it was read (HTTP 409).
    Conflict,
    /// Anything else.
    Failed(CliError),
}

fn guarded(patch: &serde_json::Value, resource_version: Option<&str>) -> serde_json::Value {
    let mut patch = patch.clone();
    if let (Some(rv), Some(obj)) = (resource_version, patch.as_object_mut()) {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("resourceVersion".into(), rv.into());
        }
    }
    patch
}

/// Writes an action's patches guarded by `resource_version` (each write by the version the
/// previous one returned): spec first (an unpause must not wait on a status write that could
/// fail), then status.
async fn write(
    target: &Target,
    name: &str,
    patch: &ActionPatch,
    mut resource_version: Option<String>,
) -> Result<(), Write> {
    let api: Api<Rollout> = Api::namespaced(target.client.clone(), &target.namespace);
    let params = PatchParams {
        field_manager: Some(CLI_FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let failed = async |op: Op<'_>, e: kube::Error| match e {
        kube::Error::Api(ref s) if s.code == 409 => Write::Conflict,
        e => Write::Failed(target.error(op, e).await),
    };
    if let Some(p) = &patch.spec_patch {
        match api
            .patch(
                name,
                &params,
                &Patch::Merge(guarded(p, resource_version.as_deref())),
            )
            .await
        {
            Ok(ro) => resource_version = ro.metadata.resource_version,
            Err(e) => return Err(failed(Op::sluice("patch", "rollouts", name), e).await),
        }
    }
    if let Some(p) = &patch.json_patch {
        let mut ops: Vec<serde_json::Value> = Vec::new();
        if let Some(rv) = &resource_version {
            ops.push(
                serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}),
            );
        }
        ops.extend(p.as_array().cloned().unwrap_or_default());
        let ops: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(|e| Write::Failed(CliError::Refused(format!("internal: bad patch: {e}"))))?;
        match api.patch(name, &params, &Patch::Json::<()>(ops)).await {
            Ok(ro) => resource_version = ro.metadata.resource_version,
            // A failed `test` is the JSON-patch way of saying the rollout changed.
            Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("test") => {
                return Err(Write::Conflict);
            }
            Err(e) => return Err(failed(Op::sluice("patch", "rollouts", name), e).await),
        }
    }
    if let Some(p) = &patch.status_patch
        && let Err(e) = api
            .patch_status(
                name,
                &params,
                &Patch::Merge(guarded(p, resource_version.as_deref())),
            )
            .await
    {
        return Err(failed(Op::sluice("patch", "rollouts/status", name), e).await);
    }
    Ok(())
}

/// Writes an action's patches unguarded: spec first (an unpause must not wait on a status write
/// that could fail), then status.
pub async fn apply(target: &Target, name: &str, patch: &ActionPatch) -> Result<(), CliError> {
    match write(target, name, patch, None).await {
        Ok(()) => Ok(()),
        Err(Write::Failed(e)) => Err(e),
        Err(Write::Conflict) => Err(CliError::Refused(format!(
            "rollout \"{name}\" changed while the action was written; run it again"
        ))),
    }
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
