//! What Sluice's integration tests (`tests/*.rs`) share, so that each helper exists once:
//!
//! - [`rollout`]: Rollouts built from the YAML of their canary strategy, and readers of their
//!   status.
//! - [`world`]: the planner's simulated world, settled and ready for an update.
//! - [`target`]: where a test runs: the in-process test cluster, or a real cluster named by
//!   `SLUICE_E2E_KUBECONFIG`.
//! - [`controller`]: the controller under test and helpers that drive Rollouts the way users
//!   and the CLI do.
//! - [`closed_loop`] (feature `demo`): the local stack of `sluice demo` with the sample app live.
//! - [`tools`]: programs the tests run, installed when missing (a test never skips for want of
//!   a tool), and tmux sessions that show the CLI as a person sees it.
//! - [`cli`]: runners for the `sluice` binary and kubectl.
//! - [`metrics`]: scraping and reading a Prometheus text endpoint.
//! - [`manifests`]: Deployments, Services and Ingresses as JSON, for the data-plane tests.
//! - [`logs`]: the process's log, captured to be searched for Secret values.
//! - [`traffic`]: the routers' pure tests' desired traffic and patch application.
//! - [`argo`]: the checks and actions of Argo Rollouts' e2e fixtures, for ported scenarios.
//!
//! Everything here panics or returns an error with the state that explains a failure: it is
//! test code, and a failing test should say why.
#![forbid(unsafe_code)]

pub mod argo;
pub mod cli;
#[cfg(feature = "demo")]
pub mod closed_loop;
pub mod controller;
pub mod logs;
pub mod manifests;
pub mod metrics;
pub mod rollout;
pub mod target;
pub mod tools;
pub mod traffic;
pub mod world;

use std::path::Path;

/// The root of the repository (the `sluice` package), where `crds/`, `charts/` and the
/// fixtures live.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test support crate lives inside the repository")
}
