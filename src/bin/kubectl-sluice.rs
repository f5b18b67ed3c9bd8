//! `kubectl-sluice`: the Sluice CLI as a kubectl plugin (`kubectl sluice get rollout web`).
//! The same command tree as `sluice`, without the controller and demo commands.

use clap::Parser;

/// Sluice: progressive delivery for Kubernetes (kubectl plugin).
#[derive(Parser, Debug)]
#[command(name = "kubectl-sluice", bin_name = "kubectl sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: sluice::cli::Command,
}

fn main() -> anyhow::Result<()> {
    // One rustls crypto provider for the whole process, as in the `sluice` binary.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let code = sluice::cli::run(cli.command)?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
