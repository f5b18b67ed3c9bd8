//! Resource quantities of a pod template (`cpu: 500m`, `memory: 1Gi`, `cpu: 0.5`), checked with
//! Kubernetes' quantity grammar, so that a template the API server would refuse as a ReplicaSet
//! is reported on the Rollout (and by lint) naming the field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::validation::FieldError;

/// Why a quantity is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Text outside the grammar.
    #[error(
        "{0:?} is not a quantity: use a number with an optional suffix (500m, 0.5, 128Mi, 1G, 1e3)"
    )]
    Syntax(String),
    /// A negative resource amount.
    #[error("{0:?} must not be negative")]
    Negative(String),
}

fn digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// `<digits> | <digits>.<digits> | <digits>. | .<digits>` at the start of `s`: its length.
fn number(s: &str) -> Option<usize> {
    let whole = digits(s);
    let rest = &s[whole..];
    let len = match rest.strip_prefix('.') {
        Some(frac) => whole + 1 + digits(frac),
        None => whole,
    };
    // At least one digit, before or after the point.
    (len > usize::from(rest.starts_with('.')) && s[..len].bytes().any(|b| b.is_ascii_digit()))
        .then_some(len)
}

fn signed_number(s: &str) -> Option<usize> {
    let sign = usize::from(s.starts_with('+') || s.starts_with('-'));
    number(&s[sign..]).map(|n| sign + n)
}

/// Parses `text` with Kubernetes' quantity grammar: a signed number and one suffix (binary SI
/// `Ki`..`Ei`, decimal SI `m`, `k`, `M`..`E`, or a decimal exponent `e3`/`E-3`). Returns whether
/// the quantity is negative.
pub fn parse(text: &str) -> Result<bool, QuantityError> {
    let bad = || QuantityError::Syntax(text.to_string());
    let n = signed_number(text).ok_or_else(bad)?;
    let suffix = &text[n..];
    let valid_suffix = matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .is_some_and(|exp| signed_number(exp) == Some(exp.len()));
    if !valid_suffix {
        return Err(bad());
    }
    let negative = text.starts_with('-') && text[1..n].bytes().any(|b| matches!(b, b'1'..=b'9'));
    Ok(negative)
}

/// A resource amount: a quantity that is not negative.
pub fn check_resource(q: &Quantity) -> Result<(), QuantityError> {
    if parse(&q.0)? {
        return Err(QuantityError::Negative(q.0.clone()));
    }
    Ok(())
}

fn check_map(map: Option<&BTreeMap<String, Quantity>>, field: &str, out: &mut Vec<FieldError>) {
    for (name, q) in map.into_iter().flatten() {
        if let Err(e) = check_resource(q) {
            out.push(FieldError {
                field: format!("{field}.{name}"),
                message: e.to_string(),
            });
        }
    }
}

fn check_requirements(r: Option<&ResourceRequirements>, field: &str, out: &mut Vec<FieldError>) {
    if let Some(r) = r {
        check_map(r.limits.as_ref(), &format!("{field}.limits"), out);
        check_map(r.requests.as_ref(), &format!("{field}.requests"), out);
    }
}

/// Every resource quantity of a pod template that the API server would refuse: containers,
/// init and ephemeral containers, pod-level resources, overhead and `emptyDir.sizeLimit`.
/// `field` is the template's path (`spec.template`).
pub fn check_pod_template(template: &PodTemplateSpec, field: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Some(spec) = &template.spec {
        check_pod_spec(spec, &format!("{field}.spec"), &mut out);
    }
    out
}

fn check_pod_spec(spec: &PodSpec, field: &str, out: &mut Vec<FieldError>) {
    for (i, c) in spec.containers.iter().enumerate() {
        check_requirements(
            c.resources.as_ref(),
            &format!("{field}.containers[{i}].resources"),
            out,
        );
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        check_requirements(
            c.resources.as_ref(),
            &format!("{field}.initContainers[{i}].resources"),
            out,
        );
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        check_requirements(
            c.resources.as_ref(),
            &format!("{field}.ephemeralContainers[{i}].resources"),
            out,
        );
    }
    check_requirements(spec.resources.as_ref(), &format!("{field}.resources"), out);
    check_map(spec.overhead.as_ref(), &format!("{field}.overhead"), out);
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if let Some(q) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref())
            && let Err(e) = check_resource(q)
        {
            out.push(FieldError {
                field: format!("{field}.volumes[{i}].emptyDir.sizeLimit"),
                message: e.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_quantities_parse() {
        for ok in [
            "1", "0.5", ".5", "5.", "500m", "1m", "0.001", "128Mi", "1Gi", "1G", "1k", "1e3",
            "1E-3", "+1", "-0", "1.5Ei", "100M",
        ] {
            assert_eq!(parse(ok).map(|_| ()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn non_quantities_are_refused() {
        for bad in [
            "invalid", "", "m", ".", "1 Gi", "1gi", "1KB", "1.2.3", "1e", "Mi1", "0x10", "1mi",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_negative_resource_is_refused_naming_the_field() {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [{"name": "a", "resources": {
                "requests": {"cpu": 0.001, "memory": "-1Mi"},
                "limits": {"memory": "invalid"}
            }}]}
        }))
        .unwrap();
        let errors = check_pod_template(&template, "spec.template");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.template.spec.containers[0].resources.limits.memory",
                "spec.template.spec.containers[0].resources.requests.memory"
            ]
        );
        assert!(errors[0].message.contains("\"invalid\" is not a quantity"));
        assert!(errors[1].message.contains("must not be negative"));
    }
}
