//! The `sluice.dev/v1alpha1` API: CRD types, defaults and cluster-free validation.

pub mod analysis;
pub mod common;
pub mod constants;
pub mod duration;
pub mod quantity;
pub mod rollout;
pub mod schema_check;
pub mod validation;

/// API group of every Sluice kind.
pub const GROUP: &str = "sluice.dev";
/// API version of every Sluice kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` string of every Sluice kind.
pub const API_VERSION: &str = "sluice.dev/v1alpha1";
