use clap::{Parser, Subcommand};

/// Sluice: progressive delivery for Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the CustomResourceDefinitions generated from the API types.
    Crds {
        /// Directory to write into; prints to standard output when omitted.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { dir: Some(dir) } => {
            for path in sluice::crdgen::write_all(&dir)? {
                println!("wrote {}", path.display());
            }
        }
        Command::Crds { dir: None } => {
            for (_, crd) in sluice::crdgen::all() {
                print!("---\n{}", sluice::crdgen::render(&crd)?);
            }
        }
    }
    Ok(())
}
