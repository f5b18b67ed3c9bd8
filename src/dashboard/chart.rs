//! Server-side SVG charts: a metric's measurements over time against its threshold, and the
//! weight bars. Drawn here rather than in the browser so that the page needs no charting
//! library (nothing to fetch, nothing to build) and every label goes through maud's escaping.

use jiff::Timestamp;
use maud::{Markup, html};

use crate::api::analysis::MetricResult;
use crate::api::common::AnalysisPhase;

/// One measurement to plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// When it was taken (finishedAt, else startedAt).
    pub at: Timestamp,
    /// The value, when it is a number (the first of a vector result).
    pub value: Option<f64>,
    /// The measurement's phase.
    pub phase: AnalysisPhase,
    /// The value as the provider returned it, for the tooltip.
    pub raw: String,
}

/// A threshold from a condition of the simple form `result[0] >= 0.95`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// The comparison (`>=`, `<`, ...).
    pub op: &'static str,
    /// The number compared with.
    pub value: f64,
}

/// The threshold of a resolved condition, when it has the simple form the explanation also
/// words (`result >= 0.95`, `result[0] < 5`, `default(result, 0) > 1`).
pub fn threshold(condition: &str) -> Option<Threshold> {
    let (op, value) = crate::cli::explain::threshold_parts(condition)?;
    let op = match op.as_str() {
        ">=" => ">=",
        "<=" => "<=",
        ">" => ">",
        "<" => "<",
        "==" => "==",
        _ => "!=",
    };
    Some(Threshold {
        op,
        value: value.parse().ok()?,
    })
}

/// The number in a measured value: a scalar, or the first element of a vector (`[0.97]`).
fn number(raw: &str) -> Option<f64> {
    match serde_json::from_str::<serde_json::Value>(raw.trim()).ok()? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Array(items) => items.first()?.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The measurements of a metric result, oldest first.
pub fn points(result: &MetricResult) -> Vec<Point> {
    let mut points: Vec<Point> = result
        .measurements
        .iter()
        .filter_map(|m| {
            let at = m.finished_at.as_ref().or(m.started_at.as_ref())?;
            let raw = m.value.clone().unwrap_or_default();
            Some(Point {
                at: at.0,
                value: number(&raw),
                phase: m.phase,
                raw: if raw.is_empty() {
                    m.message.clone().unwrap_or_default()
                } else {
                    raw
                },
            })
        })
        .collect();
    points.sort_by_key(|p| p.at);
    points
}

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

fn fmt(x: f64) -> String {
    crate::analysis::value::significant(x, 4)
}

/// A metric's measurements plotted over time, with the threshold as a dashed line. Failed
/// measurements are drawn as crosses, errors as hollow squares at the bottom (they have no
/// value), successes as dots: the shape, not only the colour, tells them apart.
pub fn metric_chart(metric: &str, points: &[Point], threshold: Option<Threshold>) -> Markup {
    let values: Vec<f64> = points.iter().filter_map(|p| p.value).collect();
    let mut lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let mut hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if let Some(t) = threshold {
        lo = lo.min(t.value);
        hi = hi.max(t.value);
    }
    if !lo.is_finite() || !hi.is_finite() {
        lo = 0.0;
        hi = 1.0;
    }
    if (hi - lo).abs() < f64::EPSILON {
        let pad = if hi == 0.0 { 1.0 } else { hi.abs() * 0.1 };
        lo -= pad;
        hi += pad;
    } else {
        let pad = (hi - lo) * 0.1;
        lo -= pad;
        hi += pad;
    }
    let (t0, t1) = match (points.first(), points.last()) {
        (Some(a), Some(b)) => (a.at.as_millisecond(), b.at.as_millisecond()),
        _ => (0, 0),
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |i: usize, at: Timestamp| -> f64 {
        if t1 > t0 {
            // i64 milliseconds to f64: exact for any date this century.
            #[allow(clippy::cast_precision_loss)]
            let frac = (at.as_millisecond() - t0) as f64 / (t1 - t0) as f64;
            LEFT + frac * plot_w
        } else if points.len() > 1 {
            #[allow(clippy::cast_precision_loss)]
            let frac = i as f64 / (points.len() - 1) as f64;
            LEFT + frac * plot_w
        } else {
            LEFT + plot_w / 2.0
        }
    };
    let y_of = |v: f64| TOP + (hi - v) / (hi - lo) * plot_h;
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.value
                .map(|v| format!("{:.1},{:.1}", x_of(i, p.at), y_of(v)))
        })
        .collect();
    let title = match threshold {
        Some(t) => format!(
            "{metric}: {} measurements; threshold {} {}",
            points.len(),
            t.op,
            fmt(t.value)
        ),
        None => format!("{metric}: {} measurements", points.len()),
    };
    let elapsed = |at: Timestamp| {
        let secs = (at.as_millisecond() - t0) / 1000;
        format!("+{}", crate::cli::info::short_duration(secs))
    };
    html! {
        svg class="chart" viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img"
            aria-label=(title) data-metric=(metric) data-points=(points.len()) {
            title { (title) }
            rect class="plot" x=(LEFT) y=(TOP) width=(plot_w) height=(plot_h) {}
            text class="axis" x=(LEFT - 4.0) y=(TOP + 4.0) text-anchor="end" { (fmt(hi)) }
            text class="axis" x=(LEFT - 4.0) y=(TOP + plot_h) text-anchor="end" { (fmt(lo)) }
            @if let (Some(first), Some(last)) = (points.first(), points.last()) {
                text class="axis" x=(LEFT) y=(HEIGHT - 8.0) { (first.at.strftime("%H:%M:%S").to_string()) }
                @if points.len() > 1 {
                    text class="axis" x=(WIDTH - RIGHT) y=(HEIGHT - 8.0) text-anchor="end" { (elapsed(last.at)) }
                }
            }
            @if let Some(t) = threshold {
                line class="threshold" data-threshold=(t.value) x1=(LEFT) x2=(WIDTH - RIGHT)
                    y1=(format!("{:.1}", y_of(t.value))) y2=(format!("{:.1}", y_of(t.value))) {}
                text class="threshold-label" x=(LEFT + 4.0) y=(format!("{:.1}", y_of(t.value) - 4.0)) { "threshold " (t.op) " " (fmt(t.value)) }
            }
            @if line.len() > 1 {
                polyline class="series" points=(line.join(" ")) {}
            }
            @for (i, p) in points.iter().enumerate() {
                @let x = x_of(i, p.at);
                @let label = format!("{} at {}: {} ({})", metric, p.at.strftime("%H:%M:%S"), p.raw, p.phase.as_str());
                @match (p.value, p.phase) {
                    (Some(v), AnalysisPhase::Failed) => {
                        g class="point failed" data-phase="Failed" {
                            title { (label) }
                            path d=(format!("M{:.1},{:.1} l8,8 m0,-8 l-8,8", x - 4.0, y_of(v) - 4.0)) {}
                        }
                    }
                    (Some(v), phase) => {
                        circle class={"point " (phase.as_str().to_lowercase())} data-phase=(phase.as_str())
                            cx=(format!("{x:.1}")) cy=(format!("{:.1}", y_of(v))) r="4" {
                            title { (label) }
                        }
                    }
                    (None, phase) => {
                        rect class={"point " (phase.as_str().to_lowercase())} data-phase=(phase.as_str())
                            x=(format!("{:.1}", x - 4.0)) y=(format!("{:.1}", TOP + plot_h - 8.0)) width="8" height="8" {
                            title { (label) }
                        }
                    }
                }
            }
        }
    }
}

/// Canary weight as a bar: what the steps ask for against what the router was last set to.
pub fn weight_bars(desired: i32, actual: Option<i32>) -> Markup {
    let bar = |w: i32| f64::from(w.clamp(0, 100)) * 3.0;
    html! {
        svg class="weights" viewBox="0 0 420 52" role="img"
            aria-label={"canary weight: desired " (desired) "%, actual " (actual.map_or("unset".to_string(), |a| format!("{a}%")))} {
            text x="0" y="16" { "desired" }
            rect class="track" x="70" y="4" width="300" height="16" {}
            rect class="desired" x="70" y="4" width=(bar(desired)) height="16" {}
            text x="378" y="16" { (desired) "%" }
            text x="0" y="44" { "actual" }
            rect class="track" x="70" y="32" width="300" height="16" {}
            @if let Some(a) = actual {
                rect class="actual" x="70" y="32" width=(bar(a)) height="16" {}
                text x="378" y="44" { (a) "%" }
            } @else {
                text x="378" y="44" { "-" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_of_simple_conditions() {
        assert_eq!(
            threshold("result[0] >= 0.95"),
            Some(Threshold {
                op: ">=",
                value: 0.95
            })
        );
        assert_eq!(threshold("default(result, 0) < 5").map(|t| t.op), Some("<"));
        assert_eq!(threshold("len(result) > 0 && result[0] > 1"), None);
    }

    #[test]
    fn values_are_numbers_or_first_of_vectors() {
        assert_eq!(number("0.5"), Some(0.5));
        assert_eq!(number("[0.97, 2]"), Some(0.97));
        assert_eq!(number("oops"), None);
    }

    #[test]
    fn chart_has_one_mark_per_measurement_and_the_threshold() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let pts = vec![
            Point {
                at: at("2026-01-01T00:00:00Z"),
                value: Some(0.99),
                phase: AnalysisPhase::Successful,
                raw: "[0.99]".into(),
            },
            Point {
                at: at("2026-01-01T00:00:30Z"),
                value: Some(0.5),
                phase: AnalysisPhase::Failed,
                raw: "[0.5]".into(),
            },
            Point {
                at: at("2026-01-01T00:01:00Z"),
                value: None,
                phase: AnalysisPhase::Error,
                raw: "<script>alert(1)</script>".into(),
            },
        ];
        let svg = metric_chart("rate", &pts, threshold("result[0] >= 0.95")).into_string();
        assert_eq!(svg.matches("class=\"point ").count(), 3, "{svg}");
        assert!(svg.contains("data-threshold=\"0.95\""), "{svg}");
        assert!(svg.contains("data-phase=\"Failed\""));
        assert!(!svg.contains("<script>"), "{svg}");
    }
}
