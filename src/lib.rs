//! Sluice: a progressive-delivery controller for Kubernetes.
//!
//! Layers (lower layers never import upper ones):
//! 1. [`api`]: CRD types, defaults and validation that needs no cluster.
//! 2. [`plan`] (the rollout state machine) and [`analysis`] (measurement accounting): pure.
//! 3. Providers: [`metrics`] (Prometheus).
//! 4. The controller and binaries (later layers).
#![forbid(unsafe_code)]

pub mod analysis;
pub mod api;
pub mod cli;
pub mod controller;
pub mod crdgen;
pub mod dashboard;
pub mod demo;
pub mod http_body;
pub mod kube_client;
pub mod metrics;
pub mod notifications;
pub mod plan;
pub mod traffic;
