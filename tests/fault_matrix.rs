//! A reduced fault matrix in the test command: for each scenario (NGINX or Istio routing; update
//! to promotion, or an abort at 50%), every 5th controller write gets one fault, the kinds taken
//! in turn (409, 500, committed then 504, committed then reset, held 2 s, the controller killed
//! after it). `cargo run --example fault_matrix` runs every kind at every write and prints the
//! figures (docs/reliability.md).
//!
//! A 409 the test cluster injects leaves the store untouched: no newer version comes behind it,
//! as one would on a real API server. The controller then asks the API server after a few
//! seconds instead of waiting for ever (`SUPERSEDED_PATIENCE`).

#[path = "fault_matrix/runs.rs"]
mod runs;

use runs::{Kind, Outcome, Router, Scenario, run_scenario};
use sluice_test_support::controller::skip_on_real_cluster;

async fn reduced(scenario: Scenario) {
    if skip_on_real_cluster("injects faults and reads the write log") {
        return;
    }
    let figures = run_scenario(scenario, &Kind::ALL, 5, true).await;
    eprintln!(
        "fault matrix, {scenario}: {:?} writes in the fault-free run, {} runs",
        figures.baseline_writes,
        figures.runs.len()
    );
    assert!(
        figures.baseline_writes.iter().all(|(_, n)| *n >= 3),
        "{figures:?}"
    );
    assert!(figures.runs.len() >= 2, "{figures:?}");
    let failures = figures.failures();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_canary_promotes_through_a_fault_at_any_write_without_moving_traffic_backwards() {
    reduced(Scenario::new(Router::Nginx, Outcome::Promoted)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_canary_aborts_through_a_fault_at_any_write_straight_back_to_stable() {
    reduced(Scenario::new(Router::Nginx, Outcome::Aborted)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_canary_promotes_through_a_fault_at_any_write_without_moving_traffic_backwards() {
    reduced(Scenario::new(Router::Istio, Outcome::Promoted)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_canary_aborts_through_a_fault_at_any_write_straight_back_to_stable() {
    reduced(Scenario::new(Router::Istio, Outcome::Aborted)).await;
}
