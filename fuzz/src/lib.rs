//! Fuzz targets of Sluice's parsers of outside input; see `targets.rs` and `run.sh`.
pub mod targets;
