//! The eviction subresource of Pods, `POST /api/v1/namespaces/{ns}/pods/{name}/eviction`, as
//! kube-apiserver serves it (`pkg/registry/core/pod/storage/eviction.go`): a policy/v1 (or
//! v1beta1) Eviction whose name must match the path; the pod is deleted unless the one
//! PodDisruptionBudget selecting it allows no disruption, which answers 429 TooManyRequests.
//! A pod that is already terminating, or Pending, Succeeded or Failed, is deleted without
//! looking at budgets; two budgets selecting one pod are a 500, as there.
//!
//! The budget's allowance is computed when the eviction arrives, from the pods it selects,
//! rather than read from a `status.disruptionsAllowed` that a disruption controller keeps: a
//! pod just evicted is terminating, hence no longer healthy, which is what the real
//! controller's `disruptedPods` accounting achieves. `docs/test-cluster.md` lists the rest.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::selector::LabelSelector;
use crate::store::{DeleteOpts, Store};

/// Evicts the pod `ns/name` with the Eviction `body`; returns the Status to answer with (201).
pub fn evict(store: &Store, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
    check_body(name, body)?;
    let pods = store
        .resource("", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let pod = store
        .get(&pods.key(), ns, name)
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
    let ignore_budgets = terminating || matches!(phase, "Pending" | "Succeeded" | "Failed");
    if !ignore_budgets {
        check_budgets(store, ns, &pod)?;
    }
    if !terminating {
        let opts = DeleteOpts {
            grace_period: body
                .pointer("/deleteOptions/gracePeriodSeconds")
                .and_then(Value::as_i64),
            precondition_uid: body
                .pointer("/deleteOptions/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from),
            ..Default::default()
        };
        store.delete(&pods, ns, name, &opts)?;
    }
    Ok(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success", "code": 201
    }))
}

/// The body must be an Eviction (apiVersion and kind may be left out, as the server defaults
/// them from the path) naming the pod of the path.
fn check_body(name: &str, body: &Value) -> Result<(), ApiError> {
    if body.is_null() {
        return Ok(());
    }
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of an eviction must be an object",
        ));
    }
    let kind = body.get("kind").and_then(Value::as_str);
    let api_version = body.get("apiVersion").and_then(Value::as_str);
    if kind.is_some_and(|k| k != "Eviction")
        || api_version.is_some_and(|v| v != "policy/v1" && v != "policy/v1beta1")
    {
        return Err(ApiError::bad_request(format!(
            "the body of an eviction must be a policy/v1 Eviction, not {} {}",
            api_version.unwrap_or_default(),
            kind.unwrap_or_default()
        )));
    }
    match body.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n != name => Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        )),
        _ => Ok(()),
    }
}

/// Refuses the eviction when the PodDisruptionBudget selecting the pod allows no disruption.
fn check_budgets(store: &Store, ns: &str, pod: &Value) -> Result<(), ApiError> {
    let Some(pdbs) = store.resource("policy", "poddisruptionbudgets") else {
        return Ok(());
    };
    let (budgets, _) = store.list(&pdbs.key(), Some(ns));
    let selecting: Vec<&Value> = budgets
        .iter()
        .map(|b| b.as_ref())
        .filter(|b| selector_of(b).is_some_and(|s| s.matches(pod)))
        .collect();
    let budget = match selecting.as_slice() {
        [] => return Ok(()),
        [one] => *one,
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource \
                 does not support.",
            ));
        }
    };
    let selector = selector_of(budget).unwrap_or_default();
    let pods = store
        .resource("", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let (all, _) = store.list(&pods.key(), Some(ns));
    let selected: Vec<&Value> = all
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| selector.matches(p))
        .filter(|p| {
            !matches!(
                p.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            )
        })
        .collect();
    let expected = selected.len() as i64;
    let healthy = selected
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none() && is_ready(p))
        .count() as i64;
    let spec = budget.get("spec").cloned().unwrap_or(json!({}));
    let desired = if let Some(max) = spec.get("maxUnavailable") {
        expected - scaled(max, expected)
    } else if let Some(min) = spec.get("minAvailable") {
        scaled(min, expected)
    } else {
        // Neither set: kube-apiserver defaults minAvailable to 1 only in policy/v1beta1; here
        // a budget without either protects one pod.
        1
    };
    if healthy - desired > 0 {
        return Ok(());
    }
    let pdb_name = budget
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Err(ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    )
    .with_details(json!({
        "causes": [{
            "reason": "DisruptionBudget",
            "message": format!(
                "The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"
            )
        }]
    })))
}

/// The budget's selector; policy/v1: an empty selector selects every pod of the namespace, a
/// missing one none.
fn selector_of(budget: &Value) -> Option<LabelSelector> {
    let s = budget.pointer("/spec/selector")?;
    if s.is_null() {
        return None;
    }
    Some(LabelSelector::from_object(s))
}

/// An int, or a percentage of `total` rounded up (as the disruption controller resolves both
/// `minAvailable` and `maxUnavailable`).
fn scaled(v: &Value, total: i64) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(0, |p| (p * total + 99) / 100),
        _ => 0,
    }
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&json!("50%"), 3), 2);
        assert_eq!(scaled(&json!("100%"), 4), 4);
        assert_eq!(scaled(&json!(2), 10), 2);
    }

    #[test]
    fn the_body_must_name_the_pod_of_the_path() {
        assert!(check_body("a", &json!({"metadata": {"name": "a"}})).is_ok());
        assert!(check_body("a", &Value::Null).is_ok());
        let e = check_body("a", &json!({"metadata": {"name": "b"}})).unwrap_err();
        assert_eq!(e.code, 400);
        let e = check_body("a", &json!({"apiVersion": "v1", "kind": "Pod"})).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            check_body(
                "a",
                &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "a"}})
            )
            .is_ok()
        );
    }
}
