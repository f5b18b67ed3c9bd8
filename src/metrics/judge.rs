//! The `judge` provider's I/O: one look reads the canary's (and baseline's) cumulative counters
//! from Prometheus, counts from the run's first look, and hands the counts to the sequential test
//! of [`crate::analysis::judge`].
//!
//! The counting state (the counters at the first look and at the previous one) travels in the
//! measurement's metadata, so a restarted controller carries on where it was. A counter that goes
//! down, a query with several series where one is expected, a histogram series without `le`:
//! each is an Error naming the query and the series, never a verdict.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::analysis::judge::{self, Counts, Look, Phase};
use crate::analysis::run::{JUDGE_STATE_KEY, JudgeQueries, JudgeRequest, ProviderResult};
use crate::analysis::value::MetricValue;
use crate::api::common::AnalysisPhase;
use crate::metrics::prometheus::{PrometheusProvider, Series};

/// The counters of one version at one look.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Totals {
    requests: f64,
    errors: f64,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "bounds_as_text"
    )]
    latency: Vec<(f64, f64)>,
}

/// JSON has no infinity: bucket bounds are kept as text (`"inf"` for `+Inf`).
mod bounds_as_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[(f64, f64)], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|(le, c)| (le.to_string(), *c))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
        let raw: Vec<(String, f64)> = Vec::deserialize(d)?;
        raw.into_iter()
            .map(|(le, c)| {
                le.parse::<f64>()
                    .map(|le| (le, c))
                    .map_err(|_| serde::de::Error::custom(format!("bucket bound {le:?}")))
            })
            .collect()
    }
}

/// What the judge remembers from look to look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    /// The first look.
    since: Timestamp,
    /// Looks that saw new canary requests (the latency test's look number).
    looks: u64,
    canary_start: Totals,
    canary_last: Totals,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    baseline_start: Option<Totals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    baseline_last: Option<Totals>,
}

/// One look. Never fails: problems become an Error value with a message.
pub async fn measure(prometheus: &PrometheusProvider, req: &JudgeRequest) -> ProviderResult {
    let mut metadata = BTreeMap::new();
    match look(prometheus, req, &mut metadata).await {
        Ok(r) => {
            let mut r = r;
            r.metadata.extend(metadata);
            r
        }
        Err(e) => ProviderResult::measured(Err(e), metadata),
    }
}

async fn read_totals(
    prometheus: &PrometheusProvider,
    req: &JudgeRequest,
    side: &str,
    q: &JudgeQueries,
    metadata: &mut BTreeMap<String, String>,
) -> Result<Totals, String> {
    let requests = one_value(
        prometheus,
        req,
        &format!("{side}.requests"),
        &q.requests,
        metadata,
    )
    .await?;
    let errors = one_value(
        prometheus,
        req,
        &format!("{side}.errors"),
        &q.errors,
        metadata,
    )
    .await?;
    let latency = match &q.latency {
        None => Vec::new(),
        Some(query) => {
            let series = run(prometheus, req, query, metadata).await?;
            buckets(&format!("{side}.latencyBuckets"), &series)?
        }
    };
    Ok(Totals {
        requests: requests.unwrap_or(0.0),
        errors: errors.unwrap_or(0.0),
        latency,
    })
}

async fn run(
    prometheus: &PrometheusProvider,
    req: &JudgeRequest,
    query: &str,
    metadata: &mut BTreeMap<String, String>,
) -> Result<Vec<Series>, String> {
    let mut r = req.prometheus.clone();
    r.query = query.to_string();
    prometheus.query_series(&r, metadata).await
}

/// A counter query's value: `None` when it has no series (nothing counted yet).
async fn one_value(
    prometheus: &PrometheusProvider,
    req: &JudgeRequest,
    field: &str,
    query: &str,
    metadata: &mut BTreeMap<String, String>,
) -> Result<Option<f64>, String> {
    let series = run(prometheus, req, query, metadata).await?;
    single(field, &series)
}

/// The one series of a counter query (pure).
fn single(field: &str, series: &[Series]) -> Result<Option<f64>, String> {
    match series {
        [] => Ok(None),
        [one] if one.value.is_finite() && one.value >= 0.0 => Ok(Some(one.value)),
        [one] => Err(format!(
            "provider.judge.{field} returned {} for series {}, not a count",
            one.value,
            one.describe()
        )),
        many => Err(format!(
            "provider.judge.{field} returned {} series where one is expected (aggregate them, \
             e.g. with sum(...)): {}",
            many.len(),
            many.iter()
                .take(3)
                .map(Series::describe)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Cumulative histogram buckets from one series per `le` (pure).
fn buckets(field: &str, series: &[Series]) -> Result<Vec<(f64, f64)>, String> {
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        let le = s.labels.get("le").ok_or_else(|| {
            format!(
                "provider.judge.{field} returned series {} without an `le` label (expected \
                 one series per bucket, e.g. sum by (le) (...))",
                s.describe()
            )
        })?;
        let bound = crate::analysis::condition::parse_go_float(le).ok_or_else(|| {
            format!(
                "provider.judge.{field}: series {} has le {le:?}, not a number",
                s.describe()
            )
        })?;
        if out.iter().any(|(b, _)| *b == bound) {
            return Err(format!(
                "provider.judge.{field} returned several series with le {le:?} (aggregate by le): {}",
                s.describe()
            ));
        }
        out.push((bound, s.value));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(out)
}

/// Checks that no counter went down since the previous look (pure).
fn check_no_reset(field: &str, last: &Totals, now: &Totals) -> Result<(), String> {
    let down = |what: &str, before: f64, after: f64| {
        format!(
            "provider.judge.{field}.{what} went down from {before} to {after} (a counter reset: a \
             pod restarted or a series disappeared); the judge cannot count across it"
        )
    };
    if now.requests < last.requests {
        return Err(down("requests", last.requests, now.requests));
    }
    if now.errors < last.errors {
        return Err(down("errors", last.errors, now.errors));
    }
    for (le, before) in &last.latency {
        let after = now
            .latency
            .iter()
            .find(|(b, _)| b == le)
            .map_or(0.0, |(_, c)| *c);
        if after < *before {
            return Err(down(
                &format!("latencyBuckets{{le=\"{le}\"}}"),
                *before,
                after,
            ));
        }
    }
    Ok(())
}

fn delta(start: &Totals, now: &Totals) -> (Counts, Vec<(f64, f64)>) {
    let requests = (now.requests - start.requests).max(0.0).round() as u64;
    let errors = ((now.errors - start.errors).max(0.0).round() as u64).min(requests);
    let latency = now
        .latency
        .iter()
        .map(|(le, c)| {
            let s = start
                .latency
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, (c - s).max(0.0))
        })
        .collect();
    (Counts { requests, errors }, latency)
}

async fn look(
    prometheus: &PrometheusProvider,
    req: &JudgeRequest,
    metadata: &mut BTreeMap<String, String>,
) -> Result<ProviderResult, String> {
    let previous: Option<State> = match &req.state {
        None => None,
        Some(s) => Some(
            serde_json::from_str(s)
                .map_err(|e| format!("the judge's counting state is unreadable: {e}"))?,
        ),
    };
    let canary = read_totals(prometheus, req, "canary", &req.canary, metadata).await?;
    let baseline = match &req.baseline {
        Some(q) => Some(read_totals(prometheus, req, "baseline", q, metadata).await?),
        None => None,
    };
    let state = match previous {
        None => State {
            since: req.now,
            looks: 0,
            canary_start: canary.clone(),
            canary_last: canary.clone(),
            baseline_start: baseline.clone(),
            baseline_last: baseline.clone(),
        },
        Some(mut s) => {
            check_no_reset("canary", &s.canary_last, &canary)?;
            if let (Some(last), Some(now)) = (&s.baseline_last, &baseline) {
                check_no_reset("baseline", last, now)?;
            }
            if canary.requests > s.canary_last.requests {
                s.looks += 1;
            }
            s.canary_last = canary.clone();
            if s.baseline_start.is_none() {
                s.baseline_start = baseline.clone();
            }
            s.baseline_last = baseline.clone();
            s
        }
    };
    let (c, c_lat) = delta(&state.canary_start, &canary);
    let (b, b_lat) = match (&state.baseline_start, &baseline) {
        (Some(start), Some(now)) => {
            let (b, l) = delta(start, now);
            (Some(b), l)
        }
        _ => (None, Vec::new()),
    };
    let elapsed = req.now.duration_since(state.since);
    let past_deadline = elapsed.as_secs_f64() >= req.deadline.as_secs_f64();
    let judged = judge::judge(
        &req.settings,
        &Look {
            canary: c,
            baseline: b,
            latency: (!c_lat.is_empty() && !b_lat.is_empty()).then_some((c_lat, b_lat)),
            latency_look: state.looks.max(1),
            past_deadline,
        },
    );
    let mut out = BTreeMap::new();
    for (k, v) in &judged.details {
        out.insert(format!("judge.{k}"), v.clone());
    }
    out.insert(
        JUDGE_STATE_KEY.to_string(),
        serde_json::to_string(&state).map_err(|e| e.to_string())?,
    );
    let phase = match judged.phase {
        Phase::Failed => AnalysisPhase::Failed,
        Phase::Successful => AnalysisPhase::Successful,
        Phase::Inconclusive => AnalysisPhase::Inconclusive,
        Phase::Continue => AnalysisPhase::Running,
    };
    let value = if c.requests == 0 {
        MetricValue::Nil
    } else {
        MetricValue::Number(c.rate())
    };
    Ok(ProviderResult {
        value: Ok(value),
        metadata: out,
        phase: Some((phase, Some(judged.sentence))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], value: f64) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn a_counter_query_has_one_series_or_none() {
        assert_eq!(single("canary.requests", &[]), Ok(None));
        assert_eq!(
            single("canary.requests", &[series(&[], 4.0)]),
            Ok(Some(4.0))
        );
        let e = single(
            "canary.requests",
            &[series(&[("pod", "a")], 1.0), series(&[("pod", "b")], 2.0)],
        )
        .unwrap_err();
        assert!(
            e.contains("provider.judge.canary.requests returned 2 series"),
            "{e}"
        );
        assert!(e.contains("pod=\"b\""), "{e}");
        assert!(single("canary.errors", &[series(&[], f64::NAN)]).is_err());
    }

    #[test]
    fn buckets_need_le_and_a_reset_is_an_error() {
        let b = buckets(
            "canary.latencyBuckets",
            &[
                series(&[("le", "+Inf")], 9.0),
                series(&[("le", "0.1")], 5.0),
            ],
        )
        .unwrap();
        assert_eq!(b, vec![(0.1, 5.0), (f64::INFINITY, 9.0)]);
        let e = buckets("canary.latencyBuckets", &[series(&[("pod", "a")], 1.0)]).unwrap_err();
        assert!(e.contains("without an `le` label"), "{e}");
        let last = Totals {
            requests: 100.0,
            errors: 3.0,
            latency: vec![],
        };
        let now = Totals {
            requests: 20.0,
            ..last.clone()
        };
        let e = check_no_reset("canary", &last, &now).unwrap_err();
        assert!(
            e.contains("provider.judge.canary.requests went down from 100 to 20"),
            "{e}"
        );
        assert!(check_no_reset("canary", &last, &last).is_ok());
    }
}
