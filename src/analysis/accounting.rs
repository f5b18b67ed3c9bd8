//! Measurement accounting: per-metric counters, the metric phase they imply, and the run phase.
//!
//! Pure functions with Argo Rollouts' rules (`analysis/analysis.go`). Errors do not count towards
//! `count`; `consecutiveErrorLimit` defaults to 4; a run's phase is the worst phase of its
//! non-dry-run metrics.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::analysis::{Measurement, Metric, MetricResult, RunSummary};
use crate::api::common::AnalysisPhase;
use crate::api::duration::DurationString;

/// Consecutive errors tolerated when `consecutiveErrorLimit` is omitted.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i32 = 4;
/// Measurements kept per metric when `measurementRetention` does not say otherwise.
pub const DEFAULT_MEASUREMENT_RETENTION: usize = 10;
/// Delay before an errored measurement is retried, whatever the metric's interval.
pub const ERROR_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// Why a metric's counts, limits or timings are invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metric \"{metric}\": {message}")]
pub struct LimitsError {
    /// Name of the metric.
    pub metric: String,
    /// What is wrong, naming the field.
    pub message: String,
}

/// A metric's count, limits and timings, parsed and validated (after argument substitution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricLimits {
    /// Number of measurements to take; `None` means until the run is terminated.
    pub count: Option<i32>,
    /// Time between measurements.
    pub interval: Option<Duration>,
    /// Time between the run's start and the first measurement.
    pub initial_delay: Option<Duration>,
    /// Failed measurements tolerated; `None` when disabled.
    pub failure_limit: Option<i32>,
    /// Inconclusive measurements tolerated.
    pub inconclusive_limit: i32,
    /// Errored measurements in a row tolerated.
    pub consecutive_error_limit: i32,
    /// Successful measurements in a row that complete the metric early; 0 is off.
    pub consecutive_success_limit: i32,
    /// Sluice extension: failed measurements in a row tolerated; `None` when unset.
    pub consecutive_failure_limit: Option<i32>,
}

impl Default for MetricLimits {
    fn default() -> Self {
        MetricLimits {
            count: Some(1),
            interval: None,
            initial_delay: None,
            failure_limit: Some(0),
            inconclusive_limit: 0,
            consecutive_error_limit: DEFAULT_CONSECUTIVE_ERROR_LIMIT,
            consecutive_success_limit: 0,
            consecutive_failure_limit: None,
        }
    }
}

fn int_field(
    metric: &str,
    field: &str,
    value: &Option<IntOrString>,
) -> Result<Option<i32>, LimitsError> {
    match value {
        None => Ok(None),
        Some(IntOrString::Int(i)) => Ok(Some(*i)),
        Some(IntOrString::String(s)) => {
            s.trim().parse::<i32>().map(Some).map_err(|_| LimitsError {
                metric: metric.to_string(),
                message: format!("{field} {s:?} is not an integer"),
            })
        }
    }
}

impl MetricLimits {
    /// Parses and validates a metric whose arguments are already substituted, with Argo
    /// Rollouts' checks (`utils/analysis/factory.go`).
    pub fn from_metric(m: &Metric) -> Result<Self, LimitsError> {
        let err = |message: String| LimitsError {
            metric: m.name.clone(),
            message,
        };
        let duration = |field: &str, d: &Option<DurationString>| {
            let parsed = match d {
                Some(d) => d
                    .parse()
                    .map_err(|e| err(format!("{field} cannot read {:?}: {e}", d.as_str())))?,
                None => None,
            };
            match parsed {
                Some(d) if d.is_negative() => Err(err(format!("{field} must not be negative"))),
                Some(d) => Ok(Some(Duration::from(d))),
                None => Ok(None),
            }
        };
        let interval = duration("interval", &m.interval)?.filter(|d| !d.is_zero());
        let initial_delay = duration("initialDelay", &m.initial_delay)?;
        let count = int_field(&m.name, "count", &m.count)?;
        let failure_limit = int_field(&m.name, "failureLimit", &m.failure_limit)?;
        let inconclusive_limit =
            int_field(&m.name, "inconclusiveLimit", &m.inconclusive_limit)?.unwrap_or(0);
        let consecutive_error_limit =
            int_field(&m.name, "consecutiveErrorLimit", &m.consecutive_error_limit)?
                .unwrap_or(DEFAULT_CONSECUTIVE_ERROR_LIMIT);
        let consecutive_success_limit = int_field(
            &m.name,
            "consecutiveSuccessLimit",
            &m.consecutive_success_limit,
        )?
        .unwrap_or(0);
        let consecutive_failure_limit = int_field(
            &m.name,
            "consecutiveFailureLimit",
            &m.consecutive_failure_limit,
        )?;

        if let Some(c) = count
            && c < 0
        {
            return Err(err(format!("count {c} must not be negative")));
        }
        if consecutive_success_limit < 0 {
            return Err(err(format!(
                "consecutiveSuccessLimit {consecutive_success_limit} must not be negative"
            )));
        }
        if let Some(f) = failure_limit
            && f < -1
        {
            return Err(err(format!("failureLimit {f} must be -1 or more")));
        }
        if inconclusive_limit < 0 {
            return Err(err(format!(
                "inconclusiveLimit {inconclusive_limit} must not be negative"
            )));
        }
        if consecutive_error_limit < 0 {
            return Err(err(format!(
                "consecutiveErrorLimit {consecutive_error_limit} must not be negative"
            )));
        }
        if let Some(c) = consecutive_failure_limit
            && c < 0
        {
            return Err(err(format!(
                "consecutiveFailureLimit {c} must not be negative"
            )));
        }
        // With consecutiveFailureLimit set and failureLimit omitted, only failures in a row
        // count: that is the point of the extension.
        let failure_limit = match (failure_limit, consecutive_failure_limit) {
            (Some(-1), _) => None,
            (Some(f), _) => Some(f),
            (None, Some(_)) => None,
            (None, None) => Some(0),
        };
        if failure_limit.is_none()
            && consecutive_success_limit == 0
            && consecutive_failure_limit.is_none()
        {
            return Err(err(
                "failureLimit -1 needs consecutiveSuccessLimit or consecutiveFailureLimit, otherwise \
                 the metric can never fail"
                    .to_string(),
            ));
        }
        // Argo: a count of 0 means "not set".
        let count = match count {
            Some(c) if c > 0 => Some(c),
            _ if interval.is_none() => Some(1),
            _ => None,
        };
        if let Some(c) = count {
            if c > 1 && interval.is_none() {
                return Err(err(format!("count {c} needs an interval")));
            }
            if let Some(f) = failure_limit
                && consecutive_success_limit > 0
                && c < f + consecutive_success_limit
            {
                return Err(err(format!(
                    "count {c} must be at least failureLimit {f} + consecutiveSuccessLimit \
                     {consecutive_success_limit}"
                )));
            }
            if c < inconclusive_limit {
                return Err(err(format!(
                    "count {c} must be at least inconclusiveLimit {inconclusive_limit}"
                )));
            }
        }
        Ok(MetricLimits {
            count,
            interval,
            initial_delay,
            failure_limit,
            inconclusive_limit,
            consecutive_error_limit,
            consecutive_success_limit,
            consecutive_failure_limit,
        })
    }
}

/// Adds a finished measurement to a metric's result: counters, streaks and history (trimmed to
/// `retention`, oldest dropped first). Errors do not count towards `count` and leave the success
/// and failure streaks as they were.
pub fn record(result: &mut MetricResult, measurement: Measurement, retention: usize) {
    match measurement.phase {
        AnalysisPhase::Successful => {
            result.successful += 1;
            result.count += 1;
            result.consecutive_error = 0;
            result.consecutive_success += 1;
            result.consecutive_failure = 0;
        }
        AnalysisPhase::Failed => {
            result.failed += 1;
            result.count += 1;
            result.consecutive_error = 0;
            result.consecutive_success = 0;
            result.consecutive_failure += 1;
        }
        AnalysisPhase::Inconclusive => {
            result.inconclusive += 1;
            result.count += 1;
            result.consecutive_error = 0;
            result.consecutive_success = 0;
            result.consecutive_failure = 0;
        }
        AnalysisPhase::Error => {
            result.error += 1;
            result.consecutive_error += 1;
        }
        // Not a verdict: nothing to count.
        AnalysisPhase::Pending | AnalysisPhase::Running => {}
    }
    result.measurements.push(measurement);
    let keep = retention.max(1);
    if result.measurements.len() > keep {
        let drop = result.measurements.len() - keep;
        result.measurements.drain(..drop);
    }
}

/// A phase and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The phase.
    pub phase: AnalysisPhase,
    /// Why, naming the metric, the value, the condition and the limit.
    pub message: Option<String>,
}

fn last_message(result: &MetricResult, phase: AnalysisPhase) -> String {
    result
        .measurements
        .iter()
        .rev()
        .find(|m| m.phase == phase)
        .and_then(|m| m.message.clone())
        .map(|m| format!("{m} "))
        .unwrap_or_default()
}

/// The phase a metric's counters imply (Argo's `assessMetricStatus`). `terminating` is true when
/// the run is being stopped: a metric that has not failed then counts as Successful.
pub fn assess_metric(
    limits: &MetricLimits,
    result: &MetricResult,
    terminating: bool,
) -> Assessment {
    let name = &result.name;
    if result.measurements.is_empty() && result.count == 0 && result.error == 0 {
        return Assessment {
            phase: if terminating {
                AnalysisPhase::Successful
            } else {
                AnalysisPhase::Pending
            },
            message: None,
        };
    }
    // A measurement in flight (a Job) keeps the metric running, even while the run stops: it
    // is stopped first, and counted once it has ended.
    // A measurement that waits for data or a judge still looking is simply dropped when the run
    // stops: there is nothing to stop.
    if result.measurements.last().is_some_and(|m| {
        !m.phase.is_completed()
            && (!terminating || m.metadata.contains_key(crate::analysis::run::JOB_NAME_KEY))
    }) {
        return Assessment {
            phase: AnalysisPhase::Running,
            message: None,
        };
    }
    let mut verdict: Option<Assessment> = None;
    // Argo checks these in this order and a later one overrides an earlier one. A measurement
    // changes one counter only and a completed metric is not measured again, so in practice only
    // one of them is ever exceeded.
    if let Some(limit) = limits.failure_limit
        && result.failed > limit
    {
        verdict = Some(Assessment {
            phase: AnalysisPhase::Failed,
            message: Some(format!(
                "metric \"{name}\" failed: {}(failures {} > limit {limit})",
                last_message(result, AnalysisPhase::Failed),
                result.failed
            )),
        });
    }
    if let Some(limit) = limits.consecutive_failure_limit
        && result.consecutive_failure > limit
    {
        verdict = Some(Assessment {
            phase: AnalysisPhase::Failed,
            message: Some(format!(
                "metric \"{name}\" failed: {}(consecutive failures {} > limit {limit})",
                last_message(result, AnalysisPhase::Failed),
                result.consecutive_failure
            )),
        });
    }
    if result.inconclusive > limits.inconclusive_limit {
        verdict = Some(Assessment {
            phase: AnalysisPhase::Inconclusive,
            message: Some(format!(
                "metric \"{name}\" inconclusive: {}(inconclusive {} > limit {})",
                last_message(result, AnalysisPhase::Inconclusive),
                result.inconclusive,
                limits.inconclusive_limit
            )),
        });
    }
    if result.consecutive_error > limits.consecutive_error_limit {
        verdict = Some(Assessment {
            phase: AnalysisPhase::Error,
            message: Some(format!(
                "metric \"{name}\" errored: {}(consecutive errors {} > limit {})",
                last_message(result, AnalysisPhase::Error),
                result.consecutive_error,
                limits.consecutive_error_limit
            )),
        });
    }
    if let Some(v) = verdict {
        return v;
    }
    let successful = |why: String| Assessment {
        phase: AnalysisPhase::Successful,
        message: Some(format!("metric \"{name}\" successful: {why}")),
    };
    if limits.consecutive_success_limit > 0
        && result.consecutive_success >= limits.consecutive_success_limit
    {
        return successful(format!(
            "{} successful measurements in a row",
            result.consecutive_success
        ));
    }
    if let Some(count) = limits.count
        && result.count >= count
    {
        if limits.consecutive_success_limit > 0 {
            let msg = format!(
                "consecutive successes {} < consecutiveSuccessLimit {} after {} measurements",
                result.consecutive_success, limits.consecutive_success_limit, result.count
            );
            return if limits.failure_limit.is_some() {
                Assessment {
                    phase: AnalysisPhase::Inconclusive,
                    message: Some(format!("metric \"{name}\" inconclusive: {msg}")),
                }
            } else {
                Assessment {
                    phase: AnalysisPhase::Failed,
                    message: Some(format!("metric \"{name}\" failed: {msg}")),
                }
            };
        }
        return successful(format!(
            "{} of {} measurements successful",
            result.successful, result.count
        ));
    }
    if terminating {
        return successful("run terminated".to_string());
    }
    Assessment {
        phase: AnalysisPhase::Running,
        message: None,
    }
}

/// One metric as the run sees it: its phase and whether it decides the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricPhase<'a> {
    /// Name of the metric.
    pub name: &'a str,
    /// Its phase (Pending when it has no result yet).
    pub phase: AnalysisPhase,
    /// Dry-run metrics never decide the run.
    pub dry_run: bool,
}

/// The run's phase: Running while a deciding metric is not completed (unless terminating), then
/// the worst phase of the deciding metrics (Successful < Running < Pending < Inconclusive < Error
/// < Failed); Successful when terminating before anything completed. Also returns the summaries
/// of deciding and dry-run metrics.
pub fn assess_run(
    metrics: &[MetricPhase<'_>],
    terminating: bool,
) -> (AnalysisPhase, RunSummary, RunSummary) {
    let mut summary = RunSummary::default();
    let mut dry = RunSummary::default();
    let mut worst: Option<AnalysisPhase> = None;
    let mut everything_completed = true;
    for m in metrics {
        let s = if m.dry_run { &mut dry } else { &mut summary };
        s.count += 1;
        match m.phase {
            AnalysisPhase::Successful => s.successful += 1,
            AnalysisPhase::Failed => s.failed += 1,
            AnalysisPhase::Inconclusive => s.inconclusive += 1,
            AnalysisPhase::Error => s.error += 1,
            AnalysisPhase::Pending | AnalysisPhase::Running => {}
        }
        // As in Argo, a dry-run metric still measuring keeps the run going.
        if !m.phase.is_completed() {
            everything_completed = false;
        }
        if m.dry_run {
            continue;
        }
        if m.phase.is_completed() && worst.is_none_or(|w| m.phase.severity() > w.severity()) {
            worst = Some(m.phase);
        }
    }
    let in_flight = metrics.iter().any(|m| m.phase == AnalysisPhase::Running);
    let phase = if terminating && in_flight {
        // Only a measurement in flight (a Job) keeps a metric going while the run stops: the run
        // completes once it is stopped, on the next pass.
        AnalysisPhase::Running
    } else if terminating {
        worst.unwrap_or(AnalysisPhase::Successful)
    } else if !everything_completed || worst.is_none() {
        // Only dry-run metrics and all completed: nothing can fail the run.
        if everything_completed && metrics.iter().all(|m| m.dry_run) {
            AnalysisPhase::Successful
        } else {
            AnalysisPhase::Running
        }
    } else {
        worst.unwrap_or(AnalysisPhase::Successful)
    };
    (phase, summary, dry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(phase: AnalysisPhase) -> Measurement {
        Measurement {
            phase,
            ..Default::default()
        }
    }

    fn result_after(phases: &[AnalysisPhase]) -> MetricResult {
        let mut r = MetricResult {
            name: "success-rate".into(),
            ..Default::default()
        };
        for p in phases {
            record(&mut r, measurement(*p), DEFAULT_MEASUREMENT_RETENTION);
        }
        r
    }

    use AnalysisPhase::*;

    #[test]
    fn errors_do_not_count_towards_count() {
        let r = result_after(&[Error, Successful, Error, Error]);
        assert_eq!((r.count, r.error, r.successful), (1, 3, 1));
        assert_eq!(r.consecutive_error, 2);
        // An error leaves the success streak alone.
        assert_eq!(r.consecutive_success, 1);
    }

    #[test]
    fn fifth_consecutive_error_errors_the_metric_by_default() {
        let limits = MetricLimits {
            count: None,
            interval: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let r = result_after(&[Error; 4]);
        assert_eq!(assess_metric(&limits, &r, false).phase, Running);
        let r = result_after(&[Error; 5]);
        let a = assess_metric(&limits, &r, false);
        assert_eq!(a.phase, Error);
        assert!(
            a.message
                .unwrap()
                .contains("(consecutive errors 5 > limit 4)")
        );
    }

    #[test]
    fn failure_over_limit_fails_with_value_condition_and_limit() {
        let limits = MetricLimits {
            count: Some(5),
            interval: Some(Duration::from_secs(60)),
            failure_limit: Some(2),
            ..Default::default()
        };
        let mut r = result_after(&[Failed, Failed]);
        assert_eq!(assess_metric(&limits, &r, false).phase, Running);
        record(
            &mut r,
            Measurement {
                phase: Failed,
                value: Some("[0.82]".into()),
                message: Some("[0.82] did not meet `result[0] >= 0.95`".into()),
                ..Default::default()
            },
            10,
        );
        let a = assess_metric(&limits, &r, false);
        assert_eq!(a.phase, Failed);
        assert_eq!(
            a.message.unwrap(),
            "metric \"success-rate\" failed: [0.82] did not meet `result[0] >= 0.95` (failures 3 > limit 2)"
        );
    }

    #[test]
    fn count_reached_is_successful_and_terminating_completes_running_metrics() {
        let limits = MetricLimits {
            count: Some(2),
            interval: Some(Duration::from_secs(60)),
            failure_limit: Some(1),
            ..Default::default()
        };
        assert_eq!(
            assess_metric(&limits, &result_after(&[Failed]), false).phase,
            Running
        );
        assert_eq!(
            assess_metric(&limits, &result_after(&[Failed, Successful]), false).phase,
            Successful
        );
        assert_eq!(
            assess_metric(&limits, &result_after(&[Failed]), true).phase,
            Successful
        );
        assert_eq!(
            assess_metric(&limits, &result_after(&[]), true).phase,
            Successful
        );
        assert_eq!(
            assess_metric(&limits, &result_after(&[]), false).phase,
            Pending
        );
    }

    #[test]
    fn consecutive_success_limit_rules() {
        let both = MetricLimits {
            count: Some(4),
            interval: Some(Duration::from_secs(1)),
            failure_limit: Some(2),
            consecutive_success_limit: 2,
            ..Default::default()
        };
        assert_eq!(
            assess_metric(
                &both,
                &result_after(&[Failed, Successful, Successful]),
                false
            )
            .phase,
            Successful
        );
        assert_eq!(
            assess_metric(
                &both,
                &result_after(&[Successful, Failed, Successful, Failed]),
                false
            )
            .phase,
            Inconclusive
        );
        let only_success = MetricLimits {
            failure_limit: None,
            ..both
        };
        assert_eq!(
            assess_metric(
                &only_success,
                &result_after(&[Successful, Failed, Successful, Failed]),
                false
            )
            .phase,
            Failed
        );
    }

    #[test]
    fn consecutive_failure_limit_tolerates_scattered_failures() {
        let limits = MetricLimits {
            count: Some(6),
            interval: Some(Duration::from_secs(1)),
            failure_limit: None,
            consecutive_failure_limit: Some(2),
            ..Default::default()
        };
        let r = result_after(&[Failed, Failed, Successful, Failed, Failed, Successful]);
        assert_eq!(assess_metric(&limits, &r, false).phase, Successful);
        // An error neither counts nor breaks the streak.
        let r = result_after(&[Failed, Failed, Error, Failed]);
        let a = assess_metric(&limits, &r, false);
        assert_eq!(a.phase, Failed);
        assert!(
            a.message
                .unwrap()
                .contains("consecutive failures 3 > limit 2")
        );
    }

    #[test]
    fn history_is_trimmed_to_retention() {
        let mut r = MetricResult::default();
        for i in 0..15 {
            record(
                &mut r,
                Measurement {
                    phase: Successful,
                    value: Some(i.to_string()),
                    ..Default::default()
                },
                10,
            );
        }
        assert_eq!(r.measurements.len(), 10);
        assert_eq!(r.measurements[0].value.as_deref(), Some("5"));
        assert_eq!(r.count, 15);
    }

    #[test]
    fn run_phase_is_worst_deciding_metric() {
        let m = |name, phase, dry_run| MetricPhase {
            name,
            phase,
            dry_run,
        };
        let (p, s, d) = assess_run(
            &[
                m("a", Successful, false),
                m("b", Inconclusive, false),
                m("c", Failed, true),
            ],
            false,
        );
        assert_eq!(p, Inconclusive);
        assert_eq!((s.count, s.successful, s.inconclusive), (2, 1, 1));
        assert_eq!((d.count, d.failed), (1, 1));
        let (p, ..) = assess_run(&[m("a", Error, false), m("b", Failed, false)], false);
        assert_eq!(p, Failed);
        let (p, ..) = assess_run(&[m("a", Failed, false), m("b", Running, false)], false);
        assert_eq!(p, Running);
        let (p, ..) = assess_run(&[m("a", Pending, false)], true);
        assert_eq!(p, Successful);
        // A measurement in flight (a Job being stopped) holds a stopping run.
        let (p, ..) = assess_run(&[m("a", Failed, false), m("b", Running, false)], true);
        assert_eq!(p, Running);
    }

    #[test]
    fn limits_validation_follows_argo() {
        let base = Metric {
            name: "m".into(),
            ..Default::default()
        };
        let l = MetricLimits::from_metric(&base).unwrap();
        assert_eq!(l.count, Some(1));
        assert_eq!(l.consecutive_error_limit, 4);
        let forever = Metric {
            interval: Some("1m".parse().unwrap()),
            ..base.clone()
        };
        assert_eq!(MetricLimits::from_metric(&forever).unwrap().count, None);
        let bad = Metric {
            count: Some(IntOrString::Int(3)),
            ..base.clone()
        };
        assert_eq!(
            MetricLimits::from_metric(&bad).unwrap_err().to_string(),
            "metric \"m\": count 3 needs an interval"
        );
        let disabled = Metric {
            failure_limit: Some(IntOrString::Int(-1)),
            ..base.clone()
        };
        assert!(MetricLimits::from_metric(&disabled).is_err());
        let text = Metric {
            count: Some(IntOrString::String("five".into())),
            interval: Some("1m".parse().unwrap()),
            ..base.clone()
        };
        assert_eq!(
            MetricLimits::from_metric(&text).unwrap_err().to_string(),
            "metric \"m\": count \"five\" is not an integer"
        );
        let templated = Metric {
            count: Some(IntOrString::String("5".into())),
            interval: Some("1m".parse().unwrap()),
            ..base
        };
        assert_eq!(
            MetricLimits::from_metric(&templated).unwrap().count,
            Some(5)
        );
    }
}
