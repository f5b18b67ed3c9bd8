//! The `sluice` command line for SREs and service owners (also installed as `kubectl-sluice`).

use clap::Subcommand;

/// Commands of the CLI. Flattened into the `sluice` binary's top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the version.
    Version,
}

/// Runs a CLI command; returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Version => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
    }
}
