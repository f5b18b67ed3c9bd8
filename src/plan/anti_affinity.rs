//! `strategy.{blueGreen,canary}.antiAffinity`: the pods of a new version are kept off the nodes
//! of the stable version's pods, so a node holding both does not take both down at once and the
//! new version is measured on its own nodes. The term is written into the new ReplicaSet's pod
//! template when it is created, naming the stable ReplicaSet by its pod-template hash, alongside
//! whatever affinity the Rollout's own template has (Argo Rollouts' semantics).

use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::api::constants::POD_TEMPLATE_HASH_LABEL;
use crate::api::rollout::{AntiAffinity, Rollout};

/// The node label the term spreads over: one node each.
pub const TOPOLOGY_KEY: &str = "kubernetes.io/hostname";

/// The strategy's `antiAffinity`, when it asks for something.
fn strategy_anti_affinity(ro: &Rollout) -> Option<&AntiAffinity> {
    let strategy = &ro.spec.strategy;
    let aa = strategy
        .canary
        .as_ref()
        .and_then(|c| c.anti_affinity.as_ref())
        .or_else(|| {
            strategy
                .blue_green
                .as_ref()
                .and_then(|b| b.anti_affinity.as_ref())
        })?;
    (aa.preferred_during_scheduling_ignored_during_execution
        .is_some()
        || aa
            .required_during_scheduling_ignored_during_execution
            .is_some())
    .then_some(aa)
}

/// The affinity of the pod template of a new ReplicaSet with hash `new_hash`: `template`'s own,
/// plus a pod anti-affinity term against the stable ReplicaSet's pods when the strategy asks for
/// one and there is a stable ReplicaSet other than the new one (the first version, and a
/// rollback to the stable version, have nothing to stay away from).
pub fn replica_set_affinity(
    ro: &Rollout,
    template: Option<&Affinity>,
    new_hash: &str,
) -> Option<Affinity> {
    let stable = ro
        .status
        .as_ref()
        .and_then(|s| s.stable_rs.as_deref())
        .filter(|s| !s.is_empty() && *s != new_hash);
    let (Some(aa), Some(stable)) = (strategy_anti_affinity(ro), stable) else {
        return template.cloned();
    };
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: POD_TEMPLATE_HASH_LABEL.to_string(),
                operator: "In".to_string(),
                values: Some(vec![stable.to_string()]),
            }]),
            match_labels: None,
        }),
        namespaces: ro.metadata.namespace.clone().map(|ns| vec![ns]),
        topology_key: TOPOLOGY_KEY.to_string(),
        ..Default::default()
    };
    let mut affinity = template.cloned().unwrap_or_default();
    let anti = affinity
        .pod_anti_affinity
        .get_or_insert_with(PodAntiAffinity::default);
    if let Some(p) = &aa.preferred_during_scheduling_ignored_during_execution {
        anti.preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                weight: p.weight,
                pod_affinity_term: term,
            });
    } else {
        anti.required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term);
    }
    Some(affinity)
}
