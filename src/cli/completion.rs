//! `sluice completion SHELL`: shell completion scripts.

use std::io::Write;

use clap::{Args, Command as ClapCommand, Subcommand};
use clap_complete::Shell;

/// Options of `completion`.
#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// Shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The command tree under `bin_name` (`sluice` or `kubectl-sluice`).
pub fn command_tree(bin_name: &str) -> ClapCommand {
    super::Command::augment_subcommands(
        ClapCommand::new("sluice")
            .bin_name(bin_name.to_string())
            .about("Sluice: progressive delivery for Kubernetes")
            .subcommand_required(true),
    )
}

/// The name this binary was started as, for the completion script to register.
fn bin_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "sluice".to_string())
}

/// Writes the completion script.
pub fn run(args: &CompletionArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    let name = bin_name();
    let mut cmd = command_tree(&name);
    clap_complete::generate(args.shell, &mut cmd, name, out);
    Ok(0)
}
