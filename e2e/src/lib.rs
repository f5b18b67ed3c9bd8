//! An in-process Kubernetes API server with simulated workloads: Sluice's test cluster.

pub mod prometheus;
