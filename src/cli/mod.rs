//! The `sluice` command line for SREs and service owners (also installed as `kubectl-sluice`).
//!
//! Each command group lives in its own module. Commands that talk to a cluster gather what they
//! need into plain data first ([`info::RolloutInfo`]), and everything printed is computed from
//! that data by pure functions, so most behaviour is testable without a cluster.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

pub mod actions;
pub mod completion;
pub mod convert;
pub mod explain;
pub mod get;
pub mod info;
pub mod kube;
pub mod lint;
pub mod list;
pub mod render;
pub mod status;
pub mod yaml_lines;

/// Connection options shared by every command that talks to a cluster, as kubectl spells them.
#[derive(Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// Namespace (default: the kubeconfig context's namespace, else `default`).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Option<String>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long = "context")]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: `$KUBECONFIG`, else `~/.kube/config`).
    #[arg(long = "kubeconfig")]
    pub kubeconfig: Option<PathBuf>,
}

/// Output format of the read commands.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON, stable field names.
    Json,
    /// YAML, same fields as JSON.
    Yaml,
}

/// Commands of the CLI. Flattened into the `sluice` binary's top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a rollout as a tree: steps, weights, revisions, analysis.
    Get {
        #[command(subcommand)]
        what: get::GetWhat,
    },
    /// List rollouts as a table.
    List {
        #[command(subcommand)]
        what: list::ListWhat,
    },
    /// Wait until a rollout is Healthy (exit 0), Degraded or aborted (exit 1), or paused with
    /// `--fail-on-pause` (exit 2).
    Status(status::StatusArgs),
    /// Go on to the next step (resume a pause, skip the current step), or with `--full` skip
    /// every remaining step.
    Promote(actions::PromoteArgs),
    /// Abort the update in progress: traffic back to the stable version.
    Abort(actions::NameArgs),
    /// Start an aborted update again from its first step.
    Retry(actions::RetryArgs),
    /// Pause the rollout (`spec.paused`).
    Pause(actions::NameArgs),
    /// Resume a rollout paused with `sluice pause`.
    Resume(actions::NameArgs),
    /// Restart every pod of the rollout (`spec.restartAt`).
    Restart(actions::RestartArgs),
    /// Roll back to the pod template of an earlier revision (default: the previous one).
    Undo(actions::UndoArgs),
    /// Change a field of the rollout's spec.
    Set {
        #[command(subcommand)]
        what: actions::SetWhat,
    },
    /// Explain in plain sentences why a rollout is where it is.
    Explain(explain::ExplainArgs),
    /// Check Rollout and AnalysisTemplate manifests offline, as the controller would.
    Lint(lint::LintArgs),
    /// Convert Argo Rollouts manifests (argoproj.io/v1alpha1) to Sluice.
    Convert(convert::ConvertArgs),
    /// Serve a web dashboard of the rollouts on this machine (with your kubeconfig's rights).
    Dashboard(crate::dashboard::DashboardArgs),
    /// Print the version.
    Version,
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
}

/// Runs a CLI command; returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    let cluster_command = match command {
        Command::Version => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            return Ok(0);
        }
        Command::Lint(args) => return lint::run(&args, &mut out),
        Command::Convert(args) => return convert::run(&args, &mut out),
        Command::Completion(args) => return completion::run(&args, &mut out),
        Command::Get { what } => ClusterCommand::Get(what),
        Command::List { what } => ClusterCommand::List(what),
        Command::Status(args) => ClusterCommand::Status(args),
        Command::Promote(args) => ClusterCommand::Promote(args),
        Command::Abort(args) => ClusterCommand::Simple(actions::Action::Abort, args),
        Command::Retry(args) => ClusterCommand::Retry(args),
        Command::Pause(args) => ClusterCommand::Simple(actions::Action::Pause, args),
        Command::Resume(args) => ClusterCommand::Simple(actions::Action::Resume, args),
        Command::Restart(args) => ClusterCommand::Restart(args),
        Command::Undo(args) => ClusterCommand::Undo(args),
        Command::Set { what } => ClusterCommand::Set(what),
        Command::Explain(args) => ClusterCommand::Explain(args),
        Command::Dashboard(args) => ClusterCommand::Dashboard(args),
    };
    drop(out);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_cluster(cluster_command))
}

/// The commands that talk to a cluster.
enum ClusterCommand {
    Get(get::GetWhat),
    List(list::ListWhat),
    Status(status::StatusArgs),
    Promote(actions::PromoteArgs),
    Simple(actions::Action, actions::NameArgs),
    Retry(actions::RetryArgs),
    Restart(actions::RestartArgs),
    Undo(actions::UndoArgs),
    Set(actions::SetWhat),
    Explain(explain::ExplainArgs),
    Dashboard(crate::dashboard::DashboardArgs),
}

/// Runs a cluster command. Its errors already read as one line (`kube::CliError`): print them
/// as `error: ...` and exit 1, without anyhow's `Error:` prefix and chain.
async fn run_cluster(command: ClusterCommand) -> anyhow::Result<i32> {
    let result = match command {
        ClusterCommand::Get(what) => get::run(what).await,
        ClusterCommand::List(what) => list::run(what).await,
        ClusterCommand::Status(args) => status::run(args).await,
        ClusterCommand::Promote(args) => actions::run_promote(args).await,
        ClusterCommand::Simple(action, args) => actions::run_simple(action, args).await,
        ClusterCommand::Retry(args) => actions::run_retry(args).await,
        ClusterCommand::Restart(args) => actions::run_restart(args).await,
        ClusterCommand::Undo(args) => actions::run_undo(args).await,
        ClusterCommand::Set(what) => actions::run_set(what).await,
        ClusterCommand::Explain(args) => explain::run(args).await,
        ClusterCommand::Dashboard(args) => crate::dashboard::run(args).await,
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}
