//! Types shared by the Rollout and the analysis kinds.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Phase of an AnalysisRun, or of one metric inside it.
///
/// Ordered from best to worst for aggregation: a run's phase is the worst of its metrics'
/// phases in the order Successful < Running < Pending < Inconclusive < Error < Failed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum AnalysisPhase {
    /// Not started yet.
    #[default]
    Pending,
    /// Measurements are being taken.
    Running,
    /// Every metric met its success condition as often as required.
    Successful,
    /// A metric failed more often than its `failureLimit` allows.
    Failed,
    /// A metric errored more often in a row than its `consecutiveErrorLimit` allows, or the run
    /// could not be evaluated at all (missing argument, unknown template, broken condition).
    Error,
    /// A metric was neither successful nor failed more often than `inconclusiveLimit` allows.
    Inconclusive,
}

impl AnalysisPhase {
    /// True once the phase can no longer change.
    pub fn is_completed(self) -> bool {
        matches!(
            self,
            AnalysisPhase::Successful
                | AnalysisPhase::Failed
                | AnalysisPhase::Error
                | AnalysisPhase::Inconclusive
        )
    }

    /// Rank used to aggregate metric phases into a run phase (higher is worse).
    pub fn severity(self) -> u8 {
        match self {
            AnalysisPhase::Successful => 0,
            AnalysisPhase::Running => 1,
            AnalysisPhase::Pending => 2,
            AnalysisPhase::Inconclusive => 3,
            AnalysisPhase::Error => 4,
            AnalysisPhase::Failed => 5,
        }
    }

    /// The phase name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisPhase::Pending => "Pending",
            AnalysisPhase::Running => "Running",
            AnalysisPhase::Successful => "Successful",
            AnalysisPhase::Failed => "Failed",
            AnalysisPhase::Error => "Error",
            AnalysisPhase::Inconclusive => "Inconclusive",
        }
    }
}

impl std::fmt::Display for AnalysisPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Marks a metric as dry-run: it is measured and reported, but its outcome never decides the run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// Name of the metric, or a regular expression matching metric names (`.*` for all).
    pub metric_name: String,
}

/// How many measurements of a metric to keep in status (10 by default).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementRetention {
    /// Name of the metric, or a regular expression matching metric names (`.*` for all).
    pub metric_name: String,
    /// Number of most recent measurements to keep.
    pub limit: i32,
}

/// Labels and annotations to stamp on an object Sluice creates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMetadata {
    /// Labels to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Selects a field of the object an argument is resolved against, e.g. `metadata.name` or
/// `metadata.labels['app']`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    /// Path of the field, in the downward-API syntax.
    pub field_path: String,
}
