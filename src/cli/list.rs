//! `sluice list rollouts [-A]`.

use clap::{Args, Subcommand};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::api::rollout::Rollout;

use super::info::{client_phase, desired_weight, rollout_step_text};
use super::kube::{Op, connect};
use super::render::{structured, table};
use super::{KubeArgs, Output};

/// What to list.
#[derive(Subcommand, Debug)]
pub enum ListWhat {
    /// Rollouts of a namespace (or of all with `-A`).
    #[command(visible_alias = "rollout", visible_alias = "ro")]
    Rollouts(ListArgs),
}

/// Options of `list rollouts`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// One row of the list. Field names are stable (`-o json|yaml`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Strategy.
    pub strategy: String,
    /// Phase, as a client reads it.
    pub phase: String,
    /// `current/total` steps, or `-`.
    pub step: String,
    /// Desired canary weight.
    pub set_weight: i32,
    /// Canary weight last set on the router.
    pub actual_weight: Option<i32>,
    /// An update is in progress (the current pod template is not the stable one). When false,
    /// every request goes to the stable version, whatever the canary weight says.
    pub update_in_progress: bool,
    /// Desired pods.
    pub desired: i32,
    /// Pods.
    pub current: i32,
    /// Pods of the newest version.
    pub up_to_date: i32,
    /// Available pods.
    pub available: i32,
}

/// One row per rollout, sorted by namespace then name.
pub fn rows(rollouts: &[Rollout]) -> Vec<RolloutRow> {
    let mut rows: Vec<RolloutRow> = rollouts
        .iter()
        .map(|r| {
            let status = r.status.clone().unwrap_or_default();
            let steps = r
                .spec
                .strategy
                .canary
                .as_ref()
                .map(|c| c.steps.as_slice())
                .unwrap_or(&[]);
            let step = rollout_step_text(r);
            RolloutRow {
                namespace: r.namespace().unwrap_or_default(),
                name: r.name_any(),
                strategy: if r.spec.strategy.blue_green.is_some() {
                    "BlueGreen".into()
                } else {
                    "Canary".into()
                },
                phase: client_phase(r).0,
                step,
                set_weight: desired_weight(steps, status.current_step_index, status.abort),
                actual_weight: status.canary.weights.as_ref().map(|w| w.canary.weight),
                update_in_progress: status.current_pod_hash.is_some()
                    && status.current_pod_hash != status.stable_rs,
                desired: r.spec.replicas.unwrap_or(1),
                current: status.replicas.unwrap_or(0),
                up_to_date: status.updated_replicas.unwrap_or(0),
                available: status.available_replicas.unwrap_or(0),
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// The table `list rollouts` prints.
pub fn render_table(rows: &[RolloutRow], all_namespaces: bool) -> String {
    if rows.is_empty() {
        return "No rollouts found.\n".to_string();
    }
    let mut header = vec![
        "NAME",
        "STRATEGY",
        "STATUS",
        "STEP",
        "SET-WEIGHT",
        "READ-WEIGHT",
        "DESIRED",
        "CURRENT",
        "UP-TO-DATE",
        "AVAILABLE",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.name.clone(),
                r.strategy.clone(),
                r.phase.clone(),
                r.step.clone(),
                // Blue-green moves no weight: its Services switch at once.
                if r.strategy == "BlueGreen" {
                    "-".to_string()
                } else {
                    r.set_weight.to_string()
                },
                // Fully promoted, the canary weight points at the new stable: all of it.
                match r.actual_weight {
                    Some(_) if !r.update_in_progress => "100".to_string(),
                    Some(w) => w.to_string(),
                    None => "-".to_string(),
                },
                r.desired.to_string(),
                r.current.to_string(),
                r.up_to_date.to_string(),
                r.available.to_string(),
            ];
            if all_namespaces {
                row.insert(0, r.namespace.clone());
            }
            row
        })
        .collect();
    table(&header, &body)
}

/// Runs `list`.
pub async fn run(what: ListWhat) -> anyhow::Result<i32> {
    let ListWhat::Rollouts(args) = what;
    let target = connect(&args.kube).await?;
    let api: Api<Rollout> = if args.all_namespaces {
        Api::all(target.client.clone())
    } else {
        Api::namespaced(target.client.clone(), &target.namespace)
    };
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            return Err(target
                .error(Op::sluice("list", "rollouts", ""), e)
                .await
                .into());
        }
    };
    let rows = rows(&list);
    let text = match args.output {
        Output::Text => render_table(&rows, args.all_namespaces),
        other => structured(&rows, other)?,
    };
    print!("{text}");
    Ok(0)
}
