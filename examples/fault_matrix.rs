//! The whole fault matrix: every write of a fault-free NGINX canary update and promotion failed
//! with 409, with 500, held (a hanging API server), and the controller killed after it. Prints
//! the matrix size and each kind's results; exits 1 on any failed run.
//!
//!     cargo run --example fault_matrix [STRIDE]     (STRIDE 1: every write; the test uses 4)

#[path = "../tests/fault_matrix/runs.rs"]
mod runs;

use runs::{Kind, run_matrix};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stride = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let kinds = [Kind::Fail(409), Kind::Fail(500), Kind::Hang, Kind::Kill];
    let started = std::time::Instant::now();
    let figures = run_matrix(&kinds, stride).await;
    println!(
        "fault-free update and promotion: {} writes; matrix: {} kinds x {} = {} runs ({:.0} s)",
        figures.baseline_writes,
        kinds.len(),
        if stride == 1 {
            "one".to_string()
        } else {
            format!("{stride}th")
        },
        figures.runs.len(),
        started.elapsed().as_secs_f64()
    );
    for kind in kinds {
        let runs: Vec<_> = figures.runs.iter().filter(|r| r.0 == kind).collect();
        let ok = runs.iter().filter(|r| r.3.is_none()).count();
        let writes: Vec<usize> = runs.iter().filter(|r| r.3.is_none()).map(|r| r.2).collect();
        println!(
            "{kind:<12} {ok}/{} runs reached the fault-free outcome (writes per run {}..{})",
            runs.len(),
            writes.iter().min().unwrap_or(&0),
            writes.iter().max().unwrap_or(&0)
        );
    }
    let failures = figures.failures();
    for f in &failures {
        println!("FAILED {f}");
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
