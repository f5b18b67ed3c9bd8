//! The value a metric provider returned, as conditions see it (`result`).

use std::fmt;

/// A measurement's value: what `result` is bound to in `successCondition` / `failureCondition`.
///
/// Prometheus gives a [`MetricValue::Number`] for a scalar and a [`MetricValue::Numbers`] for a
/// vector or a (flattened) matrix, as Argo Rollouts does.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricValue {
    /// No value at all (`isNil(result)` is true, `default(result, x)` gives `x`).
    Nil,
    /// A single number; may be NaN or infinite.
    Number(f64),
    /// A list of numbers, possibly empty.
    Numbers(Vec<f64>),
    /// A string.
    String(String),
    /// A JSON document (a web metric's answer): `result.ok`, `result[0]`, `result == true`.
    Json(serde_json::Value),
}

impl MetricValue {
    /// True when the value carries no data: nil, or an empty list.
    pub fn is_empty(&self) -> bool {
        match self {
            MetricValue::Nil => true,
            MetricValue::Numbers(v) => v.is_empty(),
            MetricValue::Json(v) => v.is_null(),
            MetricValue::Number(_) | MetricValue::String(_) => false,
        }
    }

    /// Converts the value for the expression evaluator.
    pub fn to_expr(&self) -> expr::Value {
        match self {
            MetricValue::Nil => expr::Value::Nil,
            MetricValue::Number(n) => expr::Value::Float(*n),
            MetricValue::Numbers(v) => {
                expr::Value::Array(v.iter().map(|n| expr::Value::Float(*n)).collect())
            }
            MetricValue::String(s) => expr::Value::String(s.clone()),
            MetricValue::Json(v) => json_to_expr(v),
        }
    }

    /// A JSON value as a metric value: numbers stay numbers (as Prometheus results are), null is
    /// nil, anything else is kept as JSON.
    pub fn from_json(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => MetricValue::Nil,
            serde_json::Value::Number(n) => MetricValue::Number(n.as_f64().unwrap_or(f64::NAN)),
            other => MetricValue::Json(other),
        }
    }
}

/// JSON numbers become floats, as Go's `encoding/json` decodes them for Argo Rollouts.
fn json_to_expr(v: &serde_json::Value) -> expr::Value {
    use serde_json::Value as J;
    match v {
        J::Null => expr::Value::Nil,
        J::Bool(b) => expr::Value::Bool(*b),
        J::Number(n) => expr::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => expr::Value::String(s.clone()),
        J::Array(a) => expr::Value::Array(a.iter().map(json_to_expr).collect()),
        J::Object(o) => expr::Value::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_expr(v)))
                .collect::<indexmap::IndexMap<_, _>>(),
        ),
    }
}

/// Formats a float the way Argo Rollouts writes measurement values (Go's
/// `strconv.FormatFloat(f, 'f', -1, 64)`): shortest exact decimal, `NaN`, `+Inf`, `-Inf`.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f == f64::INFINITY {
        "+Inf".to_string()
    } else if f == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{f}")
    }
}

/// `x` with `digits` significant digits, trailing zeros dropped; whole digits are never cut
/// (123456.7 reads 123457).
pub fn significant(x: f64, digits: i32) -> String {
    if !x.is_finite() || x == 0.0 {
        return format_float(x);
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = usize::try_from((digits - 1 - magnitude).max(0)).unwrap_or(0);
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `x` as a person compares it with `threshold`: four significant digits (0.6892, not
/// 0.6892477353288697), more when fewer would read as the threshold itself (0.94996 against 0.95
/// reads 0.94996, never "0.95 is not >= 0.95").
pub fn readable_against(x: f64, threshold: f64) -> String {
    for digits in 4..=17 {
        let text = significant(x, digits);
        let reads_as_threshold = text.parse::<f64>().is_ok_and(|r| r == threshold);
        if !reads_as_threshold || x == threshold {
            return text;
        }
    }
    format_float(x)
}

/// The longest value or message text a measurement keeps in status. A query may return up to
/// the provider's body limit (16 MiB of Prometheus series); written whole, ten retained
/// measurements would make the AnalysisRun larger than the API server stores (1.5 MiB), and then
/// no measurement could be recorded at all.
pub const MAX_STATUS_TEXT: usize = 4096;

/// `text` cut to [`MAX_STATUS_TEXT`] bytes (at a character boundary), saying how long it was.
/// Redact Secret values before cutting, so that no prefix of one is left at the cut.
pub fn bounded_status_text(text: String) -> String {
    if text.len() <= MAX_STATUS_TEXT {
        return text;
    }
    let mut cut = MAX_STATUS_TEXT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..cut], text.len())
}

impl fmt::Display for MetricValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricValue::Nil => f.write_str("nil"),
            MetricValue::Number(n) => f.write_str(&format_float(*n)),
            MetricValue::Numbers(v) => {
                f.write_str("[")?;
                for (i, n) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(&format_float(*n))?;
                }
                f.write_str("]")
            }
            MetricValue::String(s) => f.write_str(s),
            MetricValue::Json(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_million_series_value_no_longer_fills_the_analysis_run_status() {
        let v = super::MetricValue::Numbers((0..1_000_000).map(f64::from).collect());
        let text = super::bounded_status_text(v.to_string());
        assert!(
            text.len() < super::MAX_STATUS_TEXT + 40,
            "{} bytes",
            text.len()
        );
        assert!(text.starts_with("[0,1,2,3,"));
        assert!(
            text.ends_with(" bytes in all)"),
            "{}",
            &text[text.len() - 40..]
        );
        // Short text is kept as it is; a cut never splits a character.
        assert_eq!(super::bounded_status_text("0.97".into()), "0.97");
        let wide = "é".repeat(super::MAX_STATUS_TEXT);
        assert!(super::bounded_status_text(wide).starts_with('é'));
    }

    #[test]
    fn readable_against_rounds_but_never_reads_as_the_threshold() {
        assert_eq!(readable_against(0.6892477353288697, 0.95), "0.6892");
        assert_eq!(readable_against(0.949996, 0.95), "0.949996");
        assert_eq!(readable_against(0.95, 0.95), "0.95");
        assert_eq!(readable_against(1234.5678, 1000.0), "1235");
        assert_eq!(readable_against(f64::NAN, 0.95), "NaN");
    }

    use super::*;

    #[test]
    fn values_are_written_like_argo_rollouts() {
        assert_eq!(MetricValue::Number(0.5).to_string(), "0.5");
        assert_eq!(MetricValue::Number(f64::NAN).to_string(), "NaN");
        assert_eq!(MetricValue::Number(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(
            MetricValue::Number(1e21).to_string(),
            "1000000000000000000000"
        );
        assert_eq!(
            MetricValue::Numbers(vec![0.98, 0.97]).to_string(),
            "[0.98,0.97]"
        );
        assert_eq!(MetricValue::Numbers(vec![]).to_string(), "[]");
    }

    #[test]
    fn empty_means_nil_or_empty_list() {
        assert!(MetricValue::Nil.is_empty());
        assert!(MetricValue::Numbers(vec![]).is_empty());
        assert!(!MetricValue::Number(f64::NAN).is_empty());
    }
}
