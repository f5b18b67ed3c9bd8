//! The canary Ingress Sluice owns next to each stable Ingress (pure: build and diff).
//!
//! ingress-nginx splits traffic between an Ingress and a second Ingress for the same host and
//! path annotated `canary: "true"` with a `canary-weight`. Sluice builds that second Ingress from
//! the user's stable Ingress: the same class and TLS, and only the paths that lead to the stable
//! Service, rewritten to the canary Service.
//!
//! Annotations Sluice stops configuring are removed: the keys it wrote are listed in the
//! [`MANAGED_ANNOTATIONS_ANNOTATION`] annotation of the canary Ingress itself, so the next write
//! knows which keys are its own to delete and leaves every other annotation (another controller's)
//! alone. That record lives in the cluster, so it survives a controller restart, and it works the
//! same with every API server, unlike server-side apply's removal of fields a manager stopped
//! applying.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{Ingress, IngressSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use super::TrafficError;
use super::json_diff::guarded_patch;
use crate::api::rollout::{NginxTrafficRouting, Rollout};

/// Annotation on a canary Ingress: comma-separated annotation keys Sluice wrote on it, so that
/// keys it no longer configures are removed (and nobody else's).
pub const MANAGED_ANNOTATIONS_ANNOTATION: &str = "rollout.sluice.dev/managed-annotations";
/// Default `annotationPrefix`.
pub const DEFAULT_ANNOTATION_PREFIX: &str = "nginx.ingress.kubernetes.io";
/// Legacy class annotation, copied from the stable Ingress.
pub const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const CANARY_SUFFIX: &str = "-canary";
/// Longest object name the API server accepts.
const MAX_NAME_LEN: usize = 253;

/// Name of the canary Ingress of `stable_ingress`: `<rollout>-<ingress>-canary`, with the
/// `<rollout>-<ingress>` part cut so that the whole stays within 253 characters (as Argo Rollouts
/// names it, so a migrated Rollout adopts nothing by surprise).
pub fn canary_ingress_name(rollout: &str, stable_ingress: &str) -> String {
    let mut prefix = format!("{rollout}-{stable_ingress}");
    let max = MAX_NAME_LEN - CANARY_SUFFIX.len();
    if prefix.len() > max {
        let mut cut = max;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
    }
    format!("{prefix}{CANARY_SUFFIX}")
}

/// What the canary Ingress is built from, taken from the Rollout.
#[derive(Debug, Clone)]
pub(crate) struct CanaryIngressInputs {
    /// Rollout name.
    pub rollout: String,
    /// Controller ownerReference to the Rollout.
    pub owner: OwnerReference,
    /// `trafficRouting.nginx`.
    pub nginx: NginxTrafficRouting,
    /// `trafficRouting.maxTrafficWeight`, when set.
    pub max_traffic_weight: Option<i32>,
    /// `canaryService`.
    pub canary_service: String,
    /// `stableService`.
    pub stable_service: String,
}

const STRATEGY: &str = "spec.strategy.canary";

impl CanaryIngressInputs {
    /// Reads the inputs from the Rollout.
    pub fn from_rollout(rollout: &Rollout) -> Result<Self, TrafficError> {
        let canary = rollout.spec.strategy.canary.as_ref();
        let routing = canary.and_then(|c| c.traffic_routing.as_ref());
        let nginx = routing
            .and_then(|r| r.nginx.clone())
            .ok_or_else(|| invalid("trafficRouting.nginx", "nginx traffic routing is not set"))?;
        let name = rollout.metadata.name.clone().unwrap_or_default();
        let owner = rollout.controller_owner_ref(&()).ok_or_else(|| {
            invalid_at(
                "metadata.uid",
                format!("rollout '{name}' has no uid yet; cannot own a canary ingress"),
            )
        })?;
        let service = |s: Option<&String>, field: &str| {
            s.filter(|s| !s.is_empty())
                .cloned()
                .ok_or_else(|| invalid(field, "required with nginx traffic routing"))
        };
        Ok(Self {
            canary_service: service(
                canary.and_then(|c| c.canary_service.as_ref()),
                "canaryService",
            )?,
            stable_service: service(
                canary.and_then(|c| c.stable_service.as_ref()),
                "stableService",
            )?,
            rollout: name,
            owner,
            max_traffic_weight: routing.and_then(|r| r.max_traffic_weight),
            nginx,
        })
    }

    /// The stable Ingresses with the Rollout field naming each (`stableIngresses` wins when set,
    /// as in Argo Rollouts).
    pub fn stable_ingresses(&self) -> Vec<(String, String)> {
        stable_ingresses(&self.nginx)
    }

    fn prefix(&self) -> &str {
        self.nginx
            .annotation_prefix
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(DEFAULT_ANNOTATION_PREFIX)
    }

    /// Key of the `canary-weight` annotation.
    pub fn weight_annotation(&self) -> String {
        format!("{}/canary-weight", self.prefix())
    }
}

/// `(field, ingress name)` of every stable Ingress configured.
pub(crate) fn stable_ingresses(nginx: &NginxTrafficRouting) -> Vec<(String, String)> {
    if !nginx.stable_ingresses.is_empty() {
        nginx
            .stable_ingresses
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    format!("{STRATEGY}.trafficRouting.nginx.stableIngresses[{i}]"),
                    n.clone(),
                )
            })
            .collect()
    } else {
        nginx
            .stable_ingress
            .iter()
            .map(|n| {
                (
                    format!("{STRATEGY}.trafficRouting.nginx.stableIngress"),
                    n.clone(),
                )
            })
            .collect()
    }
}

fn invalid(field: &str, message: &str) -> TrafficError {
    invalid_at(&format!("{STRATEGY}.{field}"), message.to_string())
}

fn invalid_at(field: &str, message: String) -> TrafficError {
    TrafficError::InvalidReference {
        field: field.to_string(),
        message,
    }
}

/// The canary Ingress for `stable` at `weight`. Fails, naming the stable Ingress, when no path of
/// it leads to the stable Service.
pub(crate) fn desired_canary_ingress(
    inputs: &CanaryIngressInputs,
    field: &str,
    stable: &Ingress,
    weight: i32,
) -> Result<Ingress, TrafficError> {
    let stable_name = stable.metadata.name.clone().unwrap_or_default();
    let stable_spec = stable.spec.clone().unwrap_or_default();

    // Keep only the paths that lead to the stable Service, pointed at the canary Service. Other
    // paths of the same host stay out: ingress-nginx would otherwise send a share of their traffic
    // to backends the Rollout does not own.
    let mut rules = Vec::new();
    for rule in stable_spec.rules.iter().flatten() {
        let Some(http) = &rule.http else { continue };
        let paths: Vec<_> = http
            .paths
            .iter()
            .filter(|p| backend_service(p) == Some(inputs.stable_service.as_str()))
            .map(|p| {
                let mut p = p.clone();
                if let Some(svc) = p.backend.service.as_mut() {
                    svc.name = inputs.canary_service.clone();
                }
                p
            })
            .collect();
        if paths.is_empty() {
            continue;
        }
        let mut rule = rule.clone();
        if let Some(http) = rule.http.as_mut() {
            http.paths = paths;
        }
        rules.push(rule);
    }
    if rules.is_empty() {
        return Err(invalid_at(
            field,
            format!(
                "ingress '{stable_name}' has no path with backend service '{}'",
                inputs.stable_service
            ),
        ));
    }

    let prefix = inputs.prefix();
    let with_prefix = |key: &str| {
        if key.starts_with(&format!("{prefix}/")) {
            key.to_string()
        } else {
            format!("{prefix}/{key}")
        }
    };
    // Precedence as in Argo Rollouts: additional (prefixed), then verbatim, then the canary
    // settings themselves, which nothing may override.
    let mut annotations = BTreeMap::new();
    if let Some(class) = stable
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INGRESS_CLASS_ANNOTATION))
    {
        annotations.insert(INGRESS_CLASS_ANNOTATION.to_string(), class.clone());
    }
    for (k, v) in &inputs.nginx.additional_ingress_annotations {
        annotations.insert(with_prefix(k), v.clone());
    }
    for (k, v) in &inputs.nginx.canary_ingress_annotations {
        annotations.insert(k.clone(), v.clone());
    }
    annotations.insert(format!("{prefix}/canary"), "true".to_string());
    annotations.insert(format!("{prefix}/canary-weight"), weight.to_string());
    if let Some(total) = inputs.max_traffic_weight {
        annotations.insert(format!("{prefix}/canary-weight-total"), total.to_string());
    }
    // The record itself is not listed: it is always present while Sluice owns the Ingress.
    let managed: Vec<&str> = annotations.keys().map(String::as_str).collect();
    let managed = managed.join(",");
    annotations.insert(MANAGED_ANNOTATIONS_ANNOTATION.to_string(), managed);

    Ok(Ingress {
        metadata: ObjectMeta {
            name: Some(canary_ingress_name(&inputs.rollout, &stable_name)),
            namespace: stable.metadata.namespace.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![inputs.owner.clone()]),
            ..Default::default()
        },
        spec: Some(IngressSpec {
            ingress_class_name: stable_spec.ingress_class_name.clone(),
            tls: stable_spec.tls.clone(),
            rules: Some(rules),
            default_backend: None,
        }),
        status: None,
    })
}

fn backend_service(path: &k8s_openapi::api::networking::v1::HTTPIngressPath) -> Option<&str> {
    path.backend.service.as_ref().map(|s| s.name.as_str())
}

/// True when `ingress` is controlled by the Rollout of `owner` (same uid).
pub(crate) fn owned_by(ingress: &Ingress, owner: &OwnerReference) -> bool {
    ingress
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == owner.uid)
}

/// The JSON patch bringing the live canary Ingress to `desired`: the whole spec, the annotations
/// Sluice manages now, and removal of those it managed before and no longer configures. Other
/// annotations and labels are left as they are. `None` when nothing differs.
pub(crate) fn canary_ingress_patch(live: &Ingress, desired: &Ingress) -> Option<json_patch::Patch> {
    let live_annotations = live.metadata.annotations.clone().unwrap_or_default();
    let desired_annotations = desired.metadata.annotations.clone().unwrap_or_default();
    let previously: BTreeSet<&str> = live_annotations
        .get(MANAGED_ANNOTATIONS_ANNOTATION)
        .map(|v| v.split(',').filter(|k| !k.is_empty()).collect())
        .unwrap_or_default();
    let mut annotations = live_annotations.clone();
    for key in previously {
        if !desired_annotations.contains_key(key) {
            annotations.remove(key);
        }
    }
    annotations.extend(desired_annotations);

    let mut target = live.clone();
    target.metadata.annotations = Some(annotations);
    target.spec = desired.spec.clone();
    // Serializing a typed Ingress cannot fail (string keys, no non-finite floats).
    let live = serde_json::to_value(live).ok()?;
    let target = serde_json::to_value(&target).ok()?;
    guarded_patch(&live, &target)
}

/// The canary weight written on a canary Ingress, if it parses.
pub(crate) fn weight_of(ingress: &Ingress, weight_annotation: &str) -> Option<i32> {
    ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(weight_annotation))
        .and_then(|w| w.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_cut_to_253_characters() {
        let long = "a".repeat(300);
        let name = canary_ingress_name(&long, "web");
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-canary"));
        assert_eq!(canary_ingress_name("web", "ing"), "web-ing-canary");
    }
}
