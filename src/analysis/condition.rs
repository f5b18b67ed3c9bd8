//! `successCondition` / `failureCondition` evaluation, with Argo Rollouts' rules and helpers.
//!
//! Expressions are written in the expr language (the one Argo Rollouts uses, through the
//! `expr-lang` crate). `result` is bound to the measurement's value, and Argo's helpers are
//! registered: `isNaN`, `isInf`, `isNil`, `default`, `asInt`, `asFloat`. As in Argo, `isNil(x)`
//! and `default(x, d)` look at the whole `result`, whatever `x` is.

use std::sync::LazyLock;

use expr::{Context, Environment, Program, Value};

use crate::analysis::value::{MetricValue, format_float, readable_against};
use crate::api::common::AnalysisPhase;

/// Why a condition could not decide a measurement.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConditionError {
    /// The expression does not parse.
    #[error("condition `{expression}` is not a valid expression: {message}")]
    Syntax {
        /// The expression as written.
        expression: String,
        /// What the parser said.
        message: String,
    },
    /// The query returned nothing, and the expression needed a value.
    #[error(
        "condition `{expression}` could not be evaluated: the query returned no data (result is {value}); \
         guard with `len(result) > 0 && ...` if empty results are expected ({message})"
    )]
    NoData {
        /// The expression as written.
        expression: String,
        /// The measured value (`[]` or `nil`).
        value: String,
        /// What the evaluator said.
        message: String,
    },
    /// Evaluation failed on this value.
    #[error("condition `{expression}` could not be evaluated on result {value}: {message}")]
    Evaluation {
        /// The expression as written.
        expression: String,
        /// The measured value.
        value: String,
        /// What the evaluator said.
        message: String,
    },
    /// The expression did not produce a boolean.
    #[error(
        "condition `{expression}` returned {returned} instead of true or false (result is {value})"
    )]
    NotBoolean {
        /// The expression as written.
        expression: String,
        /// The measured value.
        value: String,
        /// What the expression returned.
        returned: String,
    },
}

/// The verdict on one measured value.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Successful, Failed, Inconclusive or Error.
    pub phase: AnalysisPhase,
    /// Why, for every verdict but a plain success.
    pub message: Option<String>,
}

/// A parsed condition, ready to be evaluated many times.
#[derive(Debug)]
pub struct Condition {
    source: String,
    program: Program,
}

impl Condition {
    /// Parses an expression.
    pub fn compile(source: &str) -> Result<Self, ConditionError> {
        let program = compile_bounded(source, |e| tidy_parser_message(&e.to_string()))?;
        Ok(Condition {
            source: source.to_string(),
            program,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression with `result` bound to `value`; it must return a boolean.
    pub fn evaluate(&self, value: &MetricValue) -> Result<bool, ConditionError> {
        let mut ctx = Context::default();
        ctx.insert("result", value.to_expr());
        match ENVIRONMENT.run(&self.program, &ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(ConditionError::NotBoolean {
                expression: self.source.clone(),
                value: value.to_string(),
                returned: describe(&other),
            }),
            Err(e) if value.is_empty() => Err(ConditionError::NoData {
                expression: self.source.clone(),
                value: value.to_string(),
                message: one_line(&e.to_string()),
            }),
            Err(e) => Err(ConditionError::Evaluation {
                expression: self.source.clone(),
                value: value.to_string(),
                message: one_line(&e.to_string()),
            }),
        }
    }
}

/// The longest condition compiled. Conditions are one line (`result[0] >= 0.95`); a longer one is
/// a mistake or an attack.
pub const MAX_CONDITION_CHARS: usize = 4096;

/// The deepest nesting of `[` compiled. The expression parser backtracks on each unclosed `[`,
/// so its time doubles with every level: 14 levels took over a second, 20 would take minutes
/// (found by fuzzing). Real conditions index one or two levels deep.
pub const MAX_BRACKET_DEPTH: usize = 8;

/// Why `source` is refused before it reaches the parser, if it is.
fn too_complex(source: &str) -> Option<String> {
    let chars = source.chars().count();
    if chars > MAX_CONDITION_CHARS {
        return Some(format!(
            "{chars} characters, over the limit of {MAX_CONDITION_CHARS}"
        ));
    }
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                _ if c == q => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (deepest > MAX_BRACKET_DEPTH)
        .then(|| format!("brackets nested deeper than {MAX_BRACKET_DEPTH} levels"))
}

/// Every expression Sluice compiles goes through here: refused before the parser when it is too
/// long or nested too deep ([`too_complex`]), else parsed, a parser error worded by `message`.
fn compile_bounded(
    source: &str,
    message: impl FnOnce(&dyn std::fmt::Display) -> String,
) -> Result<Program, ConditionError> {
    if let Some(why) = too_complex(source) {
        return Err(ConditionError::Syntax {
            expression: clip_expression(source),
            message: why,
        });
    }
    expr::compile(source).map_err(|e| ConditionError::Syntax {
        expression: source.to_string(),
        message: message(&e),
    })
}

/// An expression as quoted in a message: at most 200 characters.
fn clip_expression(source: &str) -> String {
    let mut out: String = source.chars().take(200).collect();
    if source.chars().count() > 200 {
        out.push_str("...");
    }
    out
}

/// A metric's success and failure conditions, parsed. An empty string counts as unset, as in
/// Argo Rollouts.
#[derive(Debug)]
pub struct Conditions {
    success: Option<Condition>,
    failure: Option<Condition>,
}

impl Conditions {
    /// Parses both conditions.
    pub fn compile(success: Option<&str>, failure: Option<&str>) -> Result<Self, ConditionError> {
        let parse = |s: Option<&str>| match s {
            Some(s) if !s.trim().is_empty() => Condition::compile(s).map(Some),
            _ => Ok(None),
        };
        Ok(Conditions {
            success: parse(success)?,
            failure: parse(failure)?,
        })
    }

    /// Decides one measurement, with Argo Rollouts' rules:
    /// neither condition set ⇒ Successful; only success set ⇒ Failed when false; only failure set
    /// ⇒ Successful when false; failure true ⇒ Failed (it wins); both false ⇒ Inconclusive; an
    /// evaluation error or a non-boolean ⇒ Error.
    pub fn evaluate(&self, value: &MetricValue) -> Verdict {
        let success = match self.success.as_ref().map(|c| c.evaluate(value)).transpose() {
            Ok(s) => s,
            Err(e) => return error_verdict(e),
        };
        let failure = match self.failure.as_ref().map(|c| c.evaluate(value)).transpose() {
            Ok(f) => f,
            Err(e) => return error_verdict(e),
        };
        let v = value.to_string();
        let src = |c: &Option<Condition>| c.as_ref().map(|c| c.source.clone()).unwrap_or_default();
        match (success, failure) {
            (None, None) => Verdict {
                phase: AnalysisPhase::Successful,
                message: None,
            },
            (Some(true), None) | (None, Some(false)) | (Some(true), Some(false)) => Verdict {
                phase: AnalysisPhase::Successful,
                message: None,
            },
            (Some(false), None) => Verdict {
                phase: AnalysisPhase::Failed,
                message: Some(
                    self.success
                        .as_ref()
                        .and_then(|c| explain_comparison(&c.source, value, true))
                        .unwrap_or_else(|| format!("{v} did not meet `{}`", src(&self.success))),
                ),
            },
            (_, Some(true)) => Verdict {
                phase: AnalysisPhase::Failed,
                message: Some(
                    self.failure
                        .as_ref()
                        .and_then(|c| explain_comparison(&c.source, value, false))
                        .unwrap_or_else(|| {
                            format!("{v} met failure condition `{}`", src(&self.failure))
                        }),
                ),
            },
            (Some(false), Some(false)) => Verdict {
                phase: AnalysisPhase::Inconclusive,
                message: Some(format!(
                    "{v} met neither `{}` nor failure condition `{}`",
                    src(&self.success),
                    src(&self.failure)
                )),
            },
        }
    }
}

/// For the most common condition form, `result OP number` or `result[0] OP number`, says what
/// happened in the reader's terms: `0.82 is not >= 0.95` (a success condition that was false) or
/// `0.12 > 0.05 (failure condition)`. `None` for any other form.
fn explain_comparison(source: &str, value: &MetricValue, success: bool) -> Option<String> {
    static SIMPLE: LazyLock<Option<regex::Regex>> = LazyLock::new(|| {
        regex::Regex::new(
            r"^\s*result\s*(\[\s*0\s*\])?\s*(>=|<=|==|!=|>|<)\s*([-+]?[0-9][0-9_.eE+-]*)\s*$",
        )
        .ok()
    });
    let caps = SIMPLE.as_ref()?.captures(source)?;
    let measured = match (caps.get(1).is_some(), value) {
        (true, MetricValue::Numbers(v)) if v.len() == 1 => v[0],
        (false, MetricValue::Number(n)) => *n,
        _ => return None,
    };
    let (op, rhs) = (caps.get(2)?.as_str(), caps.get(3)?.as_str());
    let x = match rhs.replace('_', "").parse::<f64>() {
        Ok(threshold) => readable_against(measured, threshold),
        Err(_) => format_float(measured),
    };
    Some(if success {
        format!("{x} is not {op} {rhs}")
    } else {
        format!("{x} {op} {rhs} (failure condition)")
    })
}

/// Evaluates a point in time written as an expression (a range query's `start` / `end`), e.g.
/// `now() - duration("5m")`. `now()` is the given instant and `duration("5m")` a span, both in
/// seconds, so the arithmetic stays plain numbers.
pub fn evaluate_time(
    source: &str,
    now: jiff::Timestamp,
) -> Result<jiff::Timestamp, ConditionError> {
    let program = compile_bounded(source, |e| one_line(&e.to_string()))?;
    let mut ctx = Context::default();
    ctx.insert(NOW_KEY, Value::Float(now.as_millisecond() as f64 / 1000.0));
    let eval_err = |message: String| ConditionError::Evaluation {
        expression: source.to_string(),
        value: "now()".to_string(),
        message,
    };
    let seconds = match ENVIRONMENT.run(&program, &ctx) {
        Ok(Value::Float(f)) => f,
        Ok(Value::Integer(i)) => i as f64,
        Ok(other) => {
            return Err(eval_err(format!(
                "expected a time, got {}",
                describe(&other)
            )));
        }
        Err(e) => return Err(eval_err(one_line(&e.to_string()))),
    };
    if !seconds.is_finite() {
        return Err(eval_err(format!("{} is not a time", format_float(seconds))));
    }
    jiff::Timestamp::from_millisecond((seconds * 1000.0).round() as i64).map_err(|e| {
        eval_err(format!(
            "{} is not a valid time: {e}",
            format_float(seconds)
        ))
    })
}

/// Context key for `now()`; `$` keeps it out of reach of identifiers in expressions.
const NOW_KEY: &str = "$now";

fn error_verdict(e: ConditionError) -> Verdict {
    Verdict {
        phase: AnalysisPhase::Error,
        message: Some(e.to_string()),
    }
}

/// Expressions errors from the parser span several lines; status messages should not.
/// The expression parser reports a multi-line picture (`--> 1:13`, the source, a caret, `= expected
/// ...`); one line is wanted: "at column 13: expected ...".
fn tidy_parser_message(message: &str) -> String {
    let column = message
        .split("-->")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pos| pos.split(':').nth(1))
        .map(str::to_string);
    let expected = message.rsplit_once("= ").map(|(_, e)| one_line(e));
    match (column, expected) {
        (Some(c), Some(e)) => format!("at column {c}: {e}"),
        _ => one_line(message),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn describe(v: &Value) -> String {
    match v {
        Value::Float(f) => format!("{} (a number)", format_float(*f)),
        Value::Integer(i) => format!("{i} (a number)"),
        Value::String(s) => format!("{s:?} (a string)"),
        Value::Nil => "nil".to_string(),
        Value::Array(_) => format!("{v} (a list)"),
        Value::Map(_) | Value::KeyedMap(_) => format!("{v} (a map)"),
        other => format!("{other}"),
    }
}

fn whole_result(ctx: &dyn expr::ContextProvider) -> Value {
    ctx.get("result").cloned().unwrap_or(Value::Nil)
}

fn number_arg(name: &str, args: &[Value]) -> expr::Result<Option<f64>> {
    match args {
        [Value::Float(f)] => Ok(Some(*f)),
        [Value::Integer(_)] => Ok(None),
        [other] => Err(expr::Error::ExprError(format!(
            "{name}() expects a number, got {}",
            describe(other)
        ))),
        _ => Err(expr::Error::ExprError(format!(
            "{name}() takes exactly one argument"
        ))),
    }
}

/// The evaluator: expr's built-ins plus Argo Rollouts' helpers, built once.
static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_function("isNaN", |call| {
        Ok(Value::Bool(
            number_arg("isNaN", &call.args)?.is_some_and(f64::is_nan),
        ))
    });
    env.add_function("isInf", |call| {
        Ok(Value::Bool(
            number_arg("isInf", &call.args)?.is_some_and(f64::is_infinite),
        ))
    });
    // Argo binds isNil and default to the whole result: the argument is ignored.
    env.add_function("isNil", |call| {
        Ok(Value::Bool(whole_result(call.ctx).is_nil()))
    });
    env.add_function("default", |call| {
        if call.args.len() != 2 {
            return Err(expr::Error::ExprError(
                "default() takes exactly two arguments".to_string(),
            ));
        }
        let result = whole_result(call.ctx);
        if result.is_nil() {
            Ok(call.args[1].clone())
        } else {
            Ok(result)
        }
    });
    env.add_function("asInt", |call| match call.args.as_slice() {
        [Value::Integer(i)] => Ok(Value::Integer(*i)),
        // Go converts float64 to int64 by truncation.
        [Value::Float(f)] if f.is_finite() => Ok(Value::Integer(f.trunc() as i64)),
        [Value::String(s)] => s.trim().parse::<i64>().map(Value::Integer).map_err(|_| {
            expr::Error::ExprError(format!("asInt() cannot convert {s:?} to an integer"))
        }),
        [other] => Err(expr::Error::ExprError(format!(
            "asInt() cannot convert {} to an integer",
            describe(other)
        ))),
        _ => Err(expr::Error::ExprError(
            "asInt() takes exactly one argument".to_string(),
        )),
    });
    env.add_function("asFloat", |call| match call.args.as_slice() {
        [Value::Integer(i)] => Ok(Value::Float(*i as f64)),
        [Value::Float(f)] => Ok(Value::Float(*f)),
        [Value::String(s)] => parse_go_float(s).map(Value::Float).ok_or_else(|| {
            expr::Error::ExprError(format!("asFloat() cannot convert {s:?} to a number"))
        }),
        [other] => Err(expr::Error::ExprError(format!(
            "asFloat() cannot convert {} to a number",
            describe(other)
        ))),
        _ => Err(expr::Error::ExprError(
            "asFloat() takes exactly one argument".to_string(),
        )),
    });
    // Range-query bounds: plain seconds, so that `now() - duration("5m")` is arithmetic.
    env.add_function("now", |call| {
        if !call.args.is_empty() {
            return Err(expr::Error::ExprError(
                "now() takes no arguments".to_string(),
            ));
        }
        call.ctx.get(NOW_KEY).cloned().ok_or_else(|| {
            expr::Error::ExprError("now() is only available in range query bounds".to_string())
        })
    });
    env.add_function("duration", |call| match call.args.as_slice() {
        [Value::String(s)] => s
            .parse::<kube::core::Duration>()
            .map(|d| {
                let std: std::time::Duration = d.into();
                let secs = std.as_secs_f64();
                Value::Float(if d.is_negative() { -secs } else { secs })
            })
            .map_err(|e| expr::Error::ExprError(format!("duration({s:?}): {e}"))),
        _ => Err(expr::Error::ExprError(
            "duration() takes one string such as \"5m\"".to_string(),
        )),
    });
    env
});

/// Parses a number the way Go's `strconv.ParseFloat` does for the cases metrics produce,
/// including `NaN`, `+Inf` and `-Inf`.
pub fn parse_go_float(s: &str) -> Option<f64> {
    let s = s.trim();
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok().filter(|f| f.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: 59 bytes of unclosed `[` made the parser run for more than 10 s (its
    /// time doubles with each level).
    #[test]
    fn brackets_nested_deeper_than_eight_are_refused_before_the_parser_backtracks_for_minutes() {
        let found = "[er[r[r4[en4le[4[e[44[r4[en4le[4[e[44[e[44len[ee[44len[e[44";
        let err = Condition::compile(found).expect_err("refused");
        assert!(
            err.to_string()
                .contains("brackets nested deeper than 8 levels"),
            "{err}"
        );
        let twenty = "[e".repeat(20);
        assert!(Condition::compile(&twenty).is_err());
        // Eight levels still compile (and quickly); nine do not.
        let eight = format!("{}1{} == [1]", "[".repeat(8), "]".repeat(8));
        assert!(Condition::compile(&eight).is_ok(), "{eight}");
        let nine = format!("{}1{} == [1]", "[".repeat(9), "]".repeat(9));
        assert!(Condition::compile(&nine).is_err(), "{nine}");
        // Brackets in strings do not count.
        let quoted = format!("result == \"{}\"", "[".repeat(30));
        assert!(Condition::compile(&quoted).is_ok(), "{quoted}");
        // Ordinary conditions are untouched.
        for ok in [
            "result[0] >= 0.95",
            "result[0][1] < 5",
            "all(result, {# > 0})",
        ] {
            assert!(Condition::compile(ok).is_ok(), "{ok}");
        }
    }

    /// Found by fuzzing after the first fix: the same nesting in a range query's time
    /// expression (`rangeQuery.start`), which was compiled without the bound.
    #[test]
    fn a_time_expression_with_brackets_nested_deeper_than_eight_is_refused_too() {
        let found = "[ez[r[r4[en4le[4[e[44[r4[en4le[4[e[44[e[e[een44l[44len[e[44";
        let err = evaluate_time(found, jiff::Timestamp::UNIX_EPOCH).expect_err("refused");
        assert!(
            err.to_string()
                .contains("brackets nested deeper than 8 levels"),
            "{err}"
        );
        assert!(evaluate_time("now() - duration(\"5m\")", jiff::Timestamp::UNIX_EPOCH).is_ok());
    }

    #[test]
    fn a_condition_over_4096_characters_is_refused_with_its_length() {
        let long = format!("result == {}", "1 + ".repeat(1100) + "1");
        let err = Condition::compile(&long).expect_err("refused");
        assert!(err.to_string().contains("over the limit of 4096"), "{err}");
        assert!(
            err.to_string().len() < 600,
            "the message quotes a clipped expression"
        );
    }

    #[test]
    fn go_floats_parse_including_special_values() {
        assert!(parse_go_float("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_go_float("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_float("-Inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_go_float("0.25"), Some(0.25));
        assert_eq!(parse_go_float("1e3"), Some(1000.0));
        assert_eq!(parse_go_float("abc"), None);
    }

    #[test]
    fn range_bounds_are_seconds_around_now() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let start = evaluate_time("now() - duration(\"5m\")", now).unwrap();
        assert_eq!(
            start,
            "2026-01-01T00:05:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        assert_eq!(evaluate_time("now()", now).unwrap(), now);
        assert!(evaluate_time("\"tomorrow\"", now).is_err());
        assert!(evaluate_time("now() - duration(\"5 minutes\")", now).is_err());
    }

    #[test]
    fn now_is_not_available_to_conditions() {
        let c = Condition::compile("now() > 0").unwrap();
        let err = c.evaluate(&MetricValue::Number(1.0)).unwrap_err();
        assert!(
            err.to_string().contains("only available in range query"),
            "{err}"
        );
    }
}
