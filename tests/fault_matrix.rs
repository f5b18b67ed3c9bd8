//! A reduced fault matrix (every 6th write: a 409, a 500, a hanging write, the controller killed
//! after the write) on an NGINX-routed canary from update to promotion. `cargo run --example
//! fault_matrix` runs every write and prints the figures (docs/reliability.md).
//!
//! A 409 the test cluster injects leaves the store untouched: no newer version comes behind it,
//! as one would on a real API server. The controller then asks the API server after a few
//! seconds instead of waiting for ever (`SUPERSEDED_PATIENCE`).

#[path = "fault_matrix/runs.rs"]
mod runs;

use runs::{Kind, run_matrix};
use sluice_test_support::controller::skip_on_real_cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sixth_write_conflicted_failed_held_or_killed_still_promotes_without_moving_traffic_backwards()
 {
    if skip_on_real_cluster("injects faults and reads the write log") {
        return;
    }
    let figures = run_matrix(
        &[Kind::Fail(409), Kind::Fail(500), Kind::Hang, Kind::Kill],
        6,
    )
    .await;
    eprintln!(
        "fault matrix: {} writes in the fault-free run, {} runs",
        figures.baseline_writes,
        figures.runs.len()
    );
    assert!(figures.baseline_writes >= 5, "{figures:?}");
    let failures = figures.failures();
    assert!(failures.is_empty(), "{failures:#?}");
}
