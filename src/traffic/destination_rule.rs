//! Istio DestinationRule subsets (pure): point the canary and stable subsets at their ReplicaSets.
//!
//! Only the pod-template hash label of the two named subsets changes; every other
//! subset (including `additionalSubsetNames`), label and traffic policy is carried over.

use serde_json::{Value, json};

use super::virtual_service::set_annotation;
use super::{SubsetHashes, TrafficError};
use crate::api::constants::{
    LEGACY_POD_TEMPLATE_HASH_LABEL, MANAGED_BY_ANNOTATION, POD_TEMPLATE_HASH_LABEL,
};
use crate::api::rollout::IstioDestinationRule;

/// Rollout field of the DestinationRule reference.
pub(crate) const FIELD: &str = "spec.strategy.canary.trafficRouting.istio.destinationRule";

fn invalid(message: String) -> TrafficError {
    TrafficError::InvalidReference {
        field: FIELD.into(),
        message,
    }
}

fn subset_index(dr: &Value, name: &str) -> Option<usize> {
    dr.pointer("/spec/subsets")?
        .as_array()?
        .iter()
        .position(|s| s.get("name").and_then(Value::as_str) == Some(name))
}

fn checked_indices(dr: &Value, cfg: &IstioDestinationRule) -> Result<[usize; 2], TrafficError> {
    let find = |subset: &str| {
        subset_index(dr, subset).ok_or_else(|| {
            invalid(format!(
                "subset '{subset}' not found in destinationrule '{}'",
                cfg.name
            ))
        })
    };
    Ok([
        find(&cfg.canary_subset_name)?,
        find(&cfg.stable_subset_name)?,
    ])
}

/// Points subset `i` at `hash` (None: removes the hash label). The hash goes under the key its
/// pods carry (the legacy key for hashes in `legacy`) and the other key is removed, so that a
/// subset never requires both (which selects no pod), e.g. after a migration from Argo Rollouts.
fn set_hash(dr: &mut Value, i: usize, hash: Option<&str>, legacy: &[String]) {
    let Some(subset) = dr.pointer_mut(&format!("/spec/subsets/{i}")) else {
        return;
    };
    match hash {
        Some(h) => {
            if !subset.get("labels").is_some_and(Value::is_object) {
                subset["labels"] = json!({});
            }
            let (key, other) = if legacy.iter().any(|l| l == h) {
                (LEGACY_POD_TEMPLATE_HASH_LABEL, POD_TEMPLATE_HASH_LABEL)
            } else {
                (POD_TEMPLATE_HASH_LABEL, LEGACY_POD_TEMPLATE_HASH_LABEL)
            };
            subset["labels"][key] = json!(h);
            if let Some(labels) = subset["labels"].as_object_mut() {
                labels.remove(other);
            }
        }
        None => {
            if let Some(labels) = subset.get_mut("labels").and_then(Value::as_object_mut) {
                labels.remove(POD_TEMPLATE_HASH_LABEL);
                labels.remove(LEGACY_POD_TEMPLATE_HASH_LABEL);
            }
        }
    }
}

/// The DestinationRule with the canary subset on `canary_hash` and the stable subset on
/// `stable_hash`; a `None` hash leaves that subset as it is (see `DesiredTraffic` for when the
/// controller passes a hash).
pub(crate) fn desired_destination_rule(
    live: &Value,
    cfg: &IstioDestinationRule,
    rollout: &str,
    canary_hash: Option<&str>,
    stable_hash: Option<&str>,
    legacy: &[String],
) -> Result<Value, TrafficError> {
    let [canary, stable] = checked_indices(live, cfg)?;
    let mut dr = live.clone();
    if let Some(h) = canary_hash {
        set_hash(&mut dr, canary, Some(h), legacy);
    }
    if let Some(h) = stable_hash {
        set_hash(&mut dr, stable, Some(h), legacy);
    }
    set_annotation(&mut dr, MANAGED_BY_ANNOTATION, Some(rollout));
    Ok(dr)
}

/// The hashes the canary and stable subsets of the live DestinationRule select.
pub(crate) fn subset_hashes(
    live: &Value,
    cfg: &IstioDestinationRule,
) -> Result<SubsetHashes, TrafficError> {
    let [canary, stable] = checked_indices(live, cfg)?;
    let hash = |i: usize| {
        live.pointer(&format!("/spec/subsets/{i}/labels"))
            .and_then(|labels| {
                labels
                    .get(POD_TEMPLATE_HASH_LABEL)
                    .or_else(|| labels.get(LEGACY_POD_TEMPLATE_HASH_LABEL))
            })
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(SubsetHashes {
        canary: hash(canary),
        stable: hash(stable),
    })
}

/// The DestinationRule once the Rollout is gone: the hash labels Sluice put on the canary and
/// stable subsets and its managed-by annotation removed.
pub(crate) fn released_destination_rule(
    live: &Value,
    cfg: &IstioDestinationRule,
) -> Result<Value, TrafficError> {
    let [canary, stable] = checked_indices(live, cfg)?;
    let mut dr = live.clone();
    set_hash(&mut dr, canary, None, &[]);
    set_hash(&mut dr, stable, None, &[]);
    set_annotation(&mut dr, MANAGED_BY_ANNOTATION, None);
    Ok(dr)
}
