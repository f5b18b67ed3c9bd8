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
}

impl MetricValue {
    /// True when the value carries no data: nil, or an empty list.
    pub fn is_empty(&self) -> bool {
        match self {
            MetricValue::Nil => true,
            MetricValue::Numbers(v) => v.is_empty(),
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
        }
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
        }
    }
}

#[cfg(test)]
mod tests {
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
