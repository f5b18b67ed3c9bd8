//! Metric providers.
