//! An in-process Kubernetes API server with simulated workloads: Sluice's test cluster.
//!
//! The real kube-rs client (and `kubectl`) talk to it over HTTP on loopback. Its semantics follow
//! kube-apiserver; every known difference is listed in `docs/test-cluster.md`.
//!
//! ```text
//! let cluster = sluice_e2e::TestCluster::start().await?;
//! let client = cluster.client();
//! ```

pub mod cel_cost;
pub mod clock;
pub mod cluster;
pub mod controls;
pub mod crd_validation;
pub mod defaults;
pub mod discovery;
pub mod error;
pub mod events;
pub mod eviction;
pub mod managed;
pub mod openapi;
pub mod patch;
pub mod pod_validation;
pub mod process;
pub mod prometheus;
pub mod protobuf;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod server;
pub mod sim;
pub mod store;

pub use clock::Clock;
pub use cluster::{TestCluster, TestClusterBuilder, example_crd};
pub use controls::{Fault, FaultAction, WriteRecord};
pub use error::{ApiError, ClusterError};
pub use process::ProcessRunner;
pub use sim::{
    CRASH_LOOP, EndpointAddress, NEVER_READY, PodInfo, PodProcess, PodRunner, READY_AFTER,
    SimSettings,
};
pub mod dataplane;
pub mod demo_app;
pub mod loadgen;
pub mod nginx_render;
