#![forbid(unsafe_code)]

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
    /// Run a canary rollout of a sample application on a local cluster (API server, controller,
    /// a real nginx and Prometheus, installed when missing): a good version is promoted, a bad
    /// one is aborted by its analysis.
    Demo {
        /// Requests per second sent through nginx.
        #[arg(long, default_value_t = 30)]
        rate: u32,
        /// Keep the local cluster running at the end, until Ctrl-C.
        #[arg(long)]
        keep: bool,
        /// Where to write the local cluster's kubeconfig (default: a file in the temp dir).
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
        /// The traffic router: an NGINX Ingress with ingress-nginx's canary annotations, or a
        /// Gateway API HTTPRoute.
        #[cfg(feature = "demo")]
        #[arg(long, value_enum, default_value_t = sluice::demo::live::DemoRouter::IngressNginx)]
        router: sluice::demo::live::DemoRouter,
        /// Instead, run the planner against an in-memory simulation (no processes started).
        #[arg(long)]
        simulate: bool,
        /// With --simulate: milliseconds of real time per simulated second (0: at once).
        #[arg(long, default_value_t = 150)]
        pace_ms: u64,
    },
    /// Write the CustomResourceDefinitions generated from the API types.
    Crds {
        /// Directory to write into; prints to standard output when omitted.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Run the controller: reconcile Rollouts and AnalysisRuns in the cluster.
    Controller(sluice::controller::ControllerArgs),
    #[command(flatten)]
    Cli(sluice::cli::Command),
}

/// What `sluice demo` says in a binary built without the live demo (the container image: its
/// controller does not link the in-process API server the demo runs).
#[cfg(not(feature = "demo"))]
const WITHOUT_DEMO: &str = "this sluice binary was built without the live demo (cargo feature \
    `demo`, left out of the container image); `sluice demo --simulate` still runs the in-memory \
    version, and `cargo run --release -- demo` from a clone of the repository runs the live one";

fn main() -> anyhow::Result<()> {
    // One rustls crypto provider for the whole process (kube and reqwest both use rustls).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Controller(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(sluice::controller::run(args))?;
        }
        Command::Cli(command) => {
            let code = sluice::cli::run(command)?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Demo {
            simulate: true,
            pace_ms,
            ..
        } => {
            sluice::demo::run(
                &mut std::io::stdout(),
                std::time::Duration::from_millis(pace_ms),
            )?;
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            rate,
            keep,
            kubeconfig,
            router,
            ..
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            let options = sluice::demo::live::LiveOptions {
                router,
                rate,
                keep,
                kubeconfig,
            };
            runtime.block_on(sluice::demo::live::run(&mut std::io::stdout(), options))?;
        }
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } => {
            // A plain message and a failing exit code, as for the CLI's own errors.
            eprintln!("error: {WITHOUT_DEMO}");
            std::process::exit(1);
        }
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
