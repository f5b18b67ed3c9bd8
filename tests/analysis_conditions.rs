//! Golden tests: every condition form from Argo Rollouts' docs and examples, with the verdict
//! Sluice must reach, plus the places where expr-lang and Go's expr are known to differ.

use sluice::analysis::condition::{Condition, Conditions};
use sluice::analysis::value::MetricValue;
use sluice::api::common::AnalysisPhase::{self, *};

fn nums(v: &[f64]) -> MetricValue {
    MetricValue::Numbers(v.to_vec())
}

fn verdict(success: Option<&str>, failure: Option<&str>, value: &MetricValue) -> AnalysisPhase {
    Conditions::compile(success, failure)
        .unwrap_or_else(|e| panic!("{e}"))
        .evaluate(value)
        .phase
}

fn eval(src: &str, value: &MetricValue) -> Result<bool, String> {
    Condition::compile(src)
        .map_err(|e| e.to_string())?
        .evaluate(value)
        .map_err(|e| e.to_string())
}

#[test]
fn success_condition_forms_from_argo_docs() {
    let nan = f64::NAN;
    let cases: &[(&str, MetricValue, bool)] = &[
        ("result[0] >= 0.95", nums(&[0.97]), true),
        ("result[0] >= 0.95", nums(&[0.82]), false),
        ("result[0] >= 0.95", nums(&[nan]), false),
        ("result[0] >= 0.95", nums(&[f64::INFINITY]), true),
        ("result[0] <= 0.95", nums(&[0.5]), true),
        ("result >= 0.95", MetricValue::Number(0.97), true),
        ("result < 0.05", MetricValue::Number(0.01), true),
        ("len(result) > 0 && result[0] < 0.05", nums(&[0.01]), true),
        ("len(result) > 0 && result[0] < 0.05", nums(&[]), false),
        ("len(result) == 0 || result[0] >= 0.95", nums(&[]), true),
        ("len(result) > 0 and result[0] < 0.05", nums(&[0.2]), false),
        ("all(result, {# < 1000})", nums(&[10.0, 999.0]), true),
        ("all(result, {# < 1000})", nums(&[10.0, 1000.0]), false),
        ("all(result, # < 1000)", nums(&[10.0]), true),
        ("any(result, # >= 0.9)", nums(&[0.1, 0.95]), true),
        ("isNaN(result[0]) || result[0] >= 0.95", nums(&[nan]), true),
        ("isNaN(result[0]) || result[0] >= 0.95", nums(&[0.5]), false),
        (
            "isNaN(result) || result >= 0.95",
            MetricValue::Number(nan),
            true,
        ),
        (
            "isInf(result)",
            MetricValue::Number(f64::NEG_INFINITY),
            true,
        ),
        ("isInf(result[0])", nums(&[1.0]), false),
        ("default(result, 0) > 5", MetricValue::Nil, false),
        ("default(result, 10) > 5", MetricValue::Nil, true),
        ("default(result, 0) > 5", MetricValue::Number(7.0), true),
        ("isNil(result)", MetricValue::Nil, true),
        ("isNil(result)", nums(&[]), false),
        (
            "result == 'single'",
            MetricValue::String("single".into()),
            true,
        ),
        (
            "result == \"double\"",
            MetricValue::String("single".into()),
            false,
        ),
        ("asInt(result) == 3", MetricValue::String("3".into()), true),
        (
            "asFloat(result) >= 9900",
            MetricValue::String("9950.5".into()),
            true,
        ),
        ("asInt(result[0]) == 3", nums(&[3.9]), true),
        ("max(result) < 0.5", nums(&[0.1, 0.4]), true),
        ("mean(result) >= 2", nums(&[1.0, 3.0]), true),
        ("sum(result) == 4", nums(&[1.0, 3.0]), true),
        ("len(result) > 0 ? result[0] < 1 : true", nums(&[]), true),
        (
            "len(result) > 0 ? result[0] < 1 : true",
            nums(&[2.0]),
            false,
        ),
        (
            "(result | filter(# > 0.98) | len()) == 1",
            nums(&[0.97, 0.99]),
            true,
        ),
        ("result[-1] == 0.99", nums(&[0.97, 0.99]), true),
        ("(result[0] ?? 0) >= 0", nums(&[0.5]), true),
        ("(result[0] ?? 0) >= 0", nums(&[]), true),
        ("not (result[0] < 0.5)", nums(&[0.7]), true),
        ("result[0] >= 1", nums(&[1.0]), true),
    ];
    for (src, value, expected) in cases {
        assert_eq!(eval(src, value), Ok(*expected), "{src} on {value}");
    }
}

#[test]
fn outcome_rules_are_argo_rollouts_rules() {
    let v = nums(&[0.5]);
    // Neither condition: success unless an error occurs.
    assert_eq!(verdict(None, None, &v), Successful);
    assert_eq!(verdict(Some(""), Some(""), &v), Successful);
    // Only success set: false means Failed.
    assert_eq!(verdict(Some("result[0] > 0.9"), None, &v), Failed);
    assert_eq!(verdict(Some("result[0] > 0.1"), None, &v), Successful);
    // Only failure set: false means Successful.
    assert_eq!(verdict(None, Some("result[0] > 0.9"), &v), Successful);
    assert_eq!(verdict(None, Some("result[0] > 0.1"), &v), Failed);
    // Failure wins when both are true.
    assert_eq!(verdict(Some("true"), Some("true"), &v), Failed);
    // Both false: Inconclusive.
    assert_eq!(verdict(Some("false"), Some("false"), &v), Inconclusive);
    // NaN with both conditions set is Inconclusive; with only success set, Failed.
    let nan = nums(&[f64::NAN]);
    assert_eq!(
        verdict(Some("result[0] >= 0.95"), Some("result[0] < 0.9"), &nan),
        Inconclusive
    );
    assert_eq!(verdict(Some("result[0] >= 0.95"), None, &nan), Failed);
    // An error in either condition is an Error, even when the other decides.
    assert_eq!(verdict(Some("true"), Some("result.x.y > 1"), &v), Error);
}

#[test]
fn empty_result_is_an_error_that_says_the_query_returned_no_data() {
    let c = Conditions::compile(Some("result[0] >= 0.95"), None).unwrap();
    let v = c.evaluate(&nums(&[]));
    assert_eq!(v.phase, Error);
    let msg = v.message.unwrap();
    assert!(msg.contains("the query returned no data"), "{msg}");
    assert!(msg.contains("`result[0] >= 0.95`"), "{msg}");
    assert!(msg.contains("result is []"), "{msg}");
}

#[test]
fn non_boolean_result_is_an_error_naming_expression_and_value() {
    let c = Conditions::compile(Some("result[0] * 2"), None).unwrap();
    let v = c.evaluate(&nums(&[0.25]));
    assert_eq!(v.phase, Error);
    let msg = v.message.unwrap();
    assert!(msg.contains("`result[0] * 2`"), "{msg}");
    assert!(msg.contains("returned 0.5"), "{msg}");
    assert!(msg.contains("result is [0.25]"), "{msg}");
}

#[test]
fn evaluation_error_names_expression_and_value() {
    let c = Conditions::compile(None, Some("result > 'x'")).unwrap();
    let v = c.evaluate(&nums(&[0.25]));
    assert_eq!(v.phase, Error);
    let msg = v.message.unwrap();
    assert!(
        msg.contains("`result > 'x'`") && msg.contains("[0.25]"),
        "{msg}"
    );
}

#[test]
fn syntax_errors_are_reported_at_compile_time() {
    let err = Conditions::compile(Some("result[0] >= "), None).unwrap_err();
    assert!(
        err.to_string().contains("is not a valid expression"),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn helpers_reject_what_go_would_reject() {
    assert!(eval("isNaN('x')", &nums(&[])).is_err());
    assert!(eval("asInt('3.5') == 3", &nums(&[])).is_err());
    assert!(eval("asFloat('abc') > 1", &nums(&[])).is_err());
    assert!(eval("unknownFn(result)", &nums(&[1.0])).is_err());
}

/// expr-lang returns nil for an out-of-range index where Go's expr raises an error. Comparing
/// nil with a number is an error in both, so `result[0] >= x` on an empty result is an Error
/// either way; only an explicit nil test differs. Pinned so an upgrade that changes it is seen.
#[test]
fn out_of_range_index_is_nil_in_expr_lang() {
    assert_eq!(eval("result[5] == nil", &nums(&[1.0])), Ok(true));
    assert!(eval("result[5] >= 0.95", &nums(&[1.0])).is_err());
    assert!(eval("result[0] >= 0.95", &nums(&[])).is_err());
    // Indexing a scalar is an error, as in Go.
    assert!(eval("result[0] > 10", &MetricValue::Number(42.0)).is_err());
}

#[test]
fn nan_and_infinity_compare_like_go() {
    assert_eq!(
        eval("result[0] == result[0]", &nums(&[f64::NAN])),
        Ok(false)
    );
    assert_eq!(eval("result[0] < 0.05", &nums(&[f64::NAN])), Ok(false));
    assert_eq!(
        eval("result > 1e300", &MetricValue::Number(f64::INFINITY)),
        Ok(true)
    );
}

#[test]
fn messages_explain_simple_comparisons_in_plain_terms() {
    let msg = |s: Option<&str>, f: Option<&str>, v: MetricValue| {
        Conditions::compile(s, f)
            .unwrap()
            .evaluate(&v)
            .message
            .unwrap()
    };
    assert_eq!(
        msg(Some("result[0] >= 0.95"), None, nums(&[0.82])),
        "0.82 is not >= 0.95"
    );
    assert_eq!(
        msg(Some("result >= 0.95"), None, MetricValue::Number(f64::NAN)),
        "NaN is not >= 0.95"
    );
    assert_eq!(
        msg(None, Some("result[0] > 0.05"), nums(&[0.12])),
        "0.12 > 0.05 (failure condition)"
    );
    // Anything else names the expression and the whole value.
    assert_eq!(
        msg(Some("all(result, {# < 1000})"), None, nums(&[10.0, 1200.0])),
        "[10,1200] did not meet `all(result, {# < 1000})`"
    );
    assert_eq!(
        msg(Some("result[0] >= 0.95"), None, nums(&[0.5, 0.6])),
        "[0.5,0.6] did not meet `result[0] >= 0.95`"
    );
}
