//! Runs the test cluster as a standalone process (for the demo and for `kubectl`): prints a
//! kubeconfig, optionally writes it to a file, loads CRDs, and serves until interrupted.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sluice_e2e::{ProcessRunner, SimSettings, TestCluster};

#[derive(Parser, Debug)]
#[command(about = "An in-process Kubernetes API server with simulated workloads")]
struct Args {
    /// Loopback port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write the kubeconfig here as well as printing it.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Directories of CRD YAML files to install (repeatable), e.g. `crds` and `e2e/crds`.
    #[arg(long = "crds")]
    crd_dirs: Vec<PathBuf>,
    /// Milliseconds from pod creation until the simulated kubelet reports it Ready.
    #[arg(long, default_value_t = 1000)]
    pod_ready_delay_ms: u64,
    /// Back every ready pod with this command (split on whitespace; `{port}`, `{pod}` and
    /// `{image}` are substituted, and `PORT`, `POD_NAME`, `POD_IMAGE`... are set).
    #[arg(long)]
    pod_command: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cluster = TestCluster::builder()
        .port(args.port)
        .sim_settings(SimSettings {
            pod_ready_delay: Duration::from_millis(args.pod_ready_delay_ms),
            ..SimSettings::default()
        })
        .start()
        .await?;
    if let Some(command) = &args.pod_command {
        let mut words = command.split_whitespace();
        let program = words
            .next()
            .ok_or_else(|| anyhow::anyhow!("--pod-command is empty"))?;
        cluster.set_pod_runner(ProcessRunner::new(
            program,
            words.map(String::from).collect::<Vec<_>>(),
        ));
    }
    for dir in &args.crd_dirs {
        let n = cluster.load_crds_from_dir(dir)?;
        eprintln!("installed {n} crds from {}", dir.display());
    }
    if let Some(path) = &args.kubeconfig {
        cluster.write_kubeconfig(path)?;
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("{}", cluster.kubeconfig_yaml());
    eprintln!("serving on {} (ctrl-c to stop)", cluster.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
