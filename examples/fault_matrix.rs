//! The whole fault matrix: for each scenario (a canary routed by NGINX or Istio, updated and
//! promoted or aborted at 50%), every controller write of the fault-free run failed with 409,
//! with 500, committed and answered 504, committed and its connection reset, held (a hanging
//! API server), and the controller killed after it. Prints the matrix size and each kind's
//! results; exits 1 on any failed run.
//!
//!     cargo run --example fault_matrix [STRIDE] [nginx|istio] [promote|abort]
//!
//! STRIDE 1 (the default) is every write; the router and outcome filters default to all.

#[path = "../tests/fault_matrix/runs.rs"]
mod runs;

use runs::{Kind, Outcome, Router, Scenario, run_scenario};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stride = args.first().and_then(|s| s.parse().ok()).unwrap_or(1);
    let wants = |word: &str| !args.iter().skip(1).any(|a| a == word);
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| {
            let router_ok = match s.router {
                Router::Nginx => wants("istio"),
                Router::Istio => wants("nginx"),
            };
            let outcome_ok = match s.outcome {
                Outcome::Promoted => wants("abort"),
                Outcome::Aborted => wants("promote"),
            };
            router_ok && outcome_ok
        })
        .collect();
    let started = std::time::Instant::now();
    let mut all_failures = Vec::new();
    let mut total = 0;
    for scenario in scenarios {
        let began = std::time::Instant::now();
        let figures = run_scenario(scenario, &Kind::ALL, stride, false).await;
        total += figures.runs.len();
        let baseline = figures.baseline_writes.first().map_or(0, |b| b.1);
        println!(
            "{scenario}: {baseline} controller writes without faults; {} kinds x {} writes = {} runs ({:.0} s)",
            Kind::ALL.len(),
            baseline.div_ceil(stride.max(1)),
            figures.runs.len(),
            began.elapsed().as_secs_f64()
        );
        for kind in Kind::ALL {
            let runs: Vec<_> = figures.runs.iter().filter(|r| r.kind == kind).collect();
            let ok: Vec<_> = runs.iter().filter(|r| r.problem.is_none()).collect();
            println!(
                "  {kind:<20} {}/{} runs reached the fault-free outcome (writes per run {}..{})",
                ok.len(),
                runs.len(),
                ok.iter().map(|r| r.writes).min().unwrap_or(0),
                ok.iter().map(|r| r.writes).max().unwrap_or(0)
            );
        }
        all_failures.extend(figures.failures());
    }
    println!(
        "{total} runs, {} failed ({:.0} s)",
        all_failures.len(),
        started.elapsed().as_secs_f64()
    );
    for f in &all_failures {
        println!("FAILED {f}");
    }
    if !all_failures.is_empty() {
        std::process::exit(1);
    }
}
