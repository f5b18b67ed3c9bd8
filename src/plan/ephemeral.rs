//! Ephemeral metadata (`canaryMetadata` / `stableMetadata`): labels and annotations a
//! ReplicaSet's pods carry only while the ReplicaSet holds a role, as Argo Rollouts does it.
//!
//! - During an update the current ReplicaSet (not the stable one) carries `canaryMetadata` and
//!   the stable ReplicaSet `stableMetadata`; once the update is promoted (or for the first
//!   version) the current ReplicaSet carries `stableMetadata`; every other ReplicaSet carries
//!   none.
//! - The metadata goes into the ReplicaSet's pod template (so that new pods have it) and onto
//!   its existing pods, patched in place: no pod is replaced, and the pod-template hash, which is
//!   computed from the Rollout's template, does not change.
//! - What was put on a ReplicaSet is recorded in its
//!   [`EPHEMERAL_METADATA_ANNOTATION`]; a key recorded there and no longer wanted is taken off
//!   the template and the pods, and no other key is ever touched (a label another controller
//!   set stays).
//! - A Rollout that configures neither field is left alone: metadata put on earlier is not
//!   removed (Argo Rollouts does not either).
//!
//! Everything here is pure; the controller reads and patches the objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Map, Value};

use crate::api::common::ObjectMetadata;
use crate::api::constants::EPHEMERAL_METADATA_ANNOTATION;
use crate::api::rollout::{Rollout, RolloutStatus};

/// The metadata of the two roles: the new version's while it is not yet stable (canary or
/// preview), and the stable (active) version's. Blue-green's `previewMetadata` and
/// `activeMetadata` play the canary's `canaryMetadata` and `stableMetadata`, as in Argo.
fn roles(rollout: &Rollout) -> Option<(&Option<ObjectMetadata>, &Option<ObjectMetadata>)> {
    let strategy = &rollout.spec.strategy;
    match (&strategy.canary, &strategy.blue_green) {
        (Some(c), _) => Some((&c.canary_metadata, &c.stable_metadata)),
        (None, Some(bg)) => Some((&bg.preview_metadata, &bg.active_metadata)),
        (None, None) => None,
    }
}

/// True when the Rollout configures ephemeral metadata at all (either field, even empty).
pub fn configured(rollout: &Rollout) -> bool {
    roles(rollout).is_some_and(|(new, stable)| new.is_some() || stable.is_some())
}

/// The metadata the ReplicaSet of `hash` and its pods should carry under `status` (the status
/// the plan writes: its `stableRS` and `currentPodHash`). None: none at all.
pub fn desired(rollout: &Rollout, status: &RolloutStatus, hash: &str) -> Option<ObjectMetadata> {
    let (canary_metadata, stable_metadata) = roles(rollout)?;
    let stable = status.stable_rs.as_deref();
    let current = status.current_pod_hash.as_deref();
    // No stable version yet, or the current one is it: there is no canary.
    let settled = stable.is_none() || stable == current;
    let chosen = if current == Some(hash) {
        if settled {
            stable_metadata
        } else {
            canary_metadata
        }
    } else if stable == Some(hash) && !settled {
        stable_metadata
    } else {
        &None
    };
    chosen.clone().filter(|m| !is_empty(m))
}

/// The metadata a ReplicaSet created now for `hash` starts with: `canaryMetadata` when another
/// version is stable, `stableMetadata` for the first version (or the stable one itself).
pub fn for_new_replica_set(rollout: &Rollout, hash: &str) -> Option<ObjectMetadata> {
    let (canary_metadata, stable_metadata) = roles(rollout)?;
    let stable = rollout.status.as_ref().and_then(|s| s.stable_rs.as_deref());
    let chosen = match stable {
        Some(s) if s != hash => canary_metadata,
        _ => stable_metadata,
    };
    chosen.clone().filter(|m| !is_empty(m))
}

fn is_empty(m: &ObjectMetadata) -> bool {
    m.labels.is_empty() && m.annotations.is_empty()
}

/// The metadata recorded on a ReplicaSet (from its annotations). An annotation that cannot be
/// read counts as none recorded, as in Argo Rollouts: nothing is removed on its word.
pub fn recorded(annotations: &BTreeMap<String, String>) -> Option<ObjectMetadata> {
    annotations
        .get(EPHEMERAL_METADATA_ANNOTATION)
        .and_then(|v| serde_json::from_str::<ObjectMetadata>(v).ok())
        .filter(|m| !is_empty(m))
}

/// The annotation value recording `metadata` (None: the annotation goes).
pub fn record(metadata: Option<&ObjectMetadata>) -> Option<String> {
    metadata.and_then(|m| serde_json::to_string(m).ok())
}

/// A change of one object's labels and annotations: a value to set, or None to remove the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataChange {
    /// Labels to set or remove.
    pub labels: BTreeMap<String, Option<String>>,
    /// Annotations to set or remove.
    pub annotations: BTreeMap<String, Option<String>>,
}

impl MetadataChange {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }

    /// The change as the `metadata` of a JSON merge patch (`null` removes a key).
    pub fn merge_patch(&self) -> Value {
        let side = |m: &BTreeMap<String, Option<String>>| -> Value {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
                    .collect::<Map<String, Value>>(),
            )
        };
        let mut out = Map::new();
        if !self.labels.is_empty() {
            out.insert("labels".into(), side(&self.labels));
        }
        if !self.annotations.is_empty() {
            out.insert("annotations".into(), side(&self.annotations));
        }
        Value::Object(out)
    }
}

/// What takes an object's `labels` and `annotations` from `recorded` (what was put on before)
/// to `desired`: every desired key whose value differs is set, every recorded key no longer
/// desired and still present is removed. Keys neither recorded nor desired are not touched.
pub fn change(
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
    recorded: Option<&ObjectMetadata>,
    desired: Option<&ObjectMetadata>,
) -> MetadataChange {
    let side = |have: Option<&BTreeMap<String, String>>,
                was: Option<&BTreeMap<String, String>>,
                want: Option<&BTreeMap<String, String>>| {
        let mut out = BTreeMap::new();
        for (k, v) in want.into_iter().flatten() {
            if have.and_then(|h| h.get(k)) != Some(v) {
                out.insert(k.clone(), Some(v.clone()));
            }
        }
        for k in was.into_iter().flatten().map(|(k, _)| k) {
            let still_wanted = want.is_some_and(|w| w.contains_key(k));
            if !still_wanted && have.is_some_and(|h| h.contains_key(k)) {
                out.insert(k.clone(), None);
            }
        }
        out
    };
    MetadataChange {
        labels: side(
            labels,
            recorded.map(|r| &r.labels),
            desired.map(|d| &d.labels),
        ),
        annotations: side(
            annotations,
            recorded.map(|r| &r.annotations),
            desired.map(|d| &d.annotations),
        ),
    }
}

/// Applies `change` to a label or annotation map.
fn apply_side(map: &mut Option<BTreeMap<String, String>>, side: &BTreeMap<String, Option<String>>) {
    if side.is_empty() {
        return;
    }
    let m = map.get_or_insert_with(BTreeMap::new);
    for (k, v) in side {
        match v {
            Some(v) => {
                m.insert(k.clone(), v.clone());
            }
            None => {
                m.remove(k);
            }
        }
    }
}

/// `template` with `metadata` put on (as a ReplicaSet created now carries it).
pub fn inject(template: &mut PodTemplateSpec, metadata: Option<&ObjectMetadata>) {
    let meta = template.metadata.get_or_insert_with(Default::default);
    let c = change(
        meta.labels.as_ref(),
        meta.annotations.as_ref(),
        None,
        metadata,
    );
    apply_side(&mut meta.labels, &c.labels);
    apply_side(&mut meta.annotations, &c.annotations);
}

/// A ReplicaSet's pod template without the ephemeral metadata its annotations record: the
/// template as the Rollout had it (what `undo` writes back).
pub fn strip(
    template: &PodTemplateSpec,
    rs_annotations: &BTreeMap<String, String>,
) -> PodTemplateSpec {
    let mut template = template.clone();
    let Some(was) = recorded(rs_annotations) else {
        return template;
    };
    if let Some(meta) = template.metadata.as_mut() {
        let c = change(
            meta.labels.as_ref(),
            meta.annotations.as_ref(),
            Some(&was),
            None,
        );
        apply_side(&mut meta.labels, &c.labels);
        apply_side(&mut meta.annotations, &c.annotations);
        // An emptied map reads back as absent from the API server: the template hashes alike.
        if meta.labels.as_ref().is_some_and(BTreeMap::is_empty) {
            meta.labels = None;
        }
        if meta.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
            meta.annotations = None;
        }
    }
    template
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn md(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMetadata {
        let m = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        ObjectMetadata {
            labels: m(labels),
            annotations: m(annotations),
        }
    }

    fn rollout(canary: Option<ObjectMetadata>, stable: Option<ObjectMetadata>) -> Rollout {
        let mut ro: Rollout = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web"},
            "spec": {"strategy": {"canary": {}}}
        }))
        .unwrap();
        let c = ro.spec.strategy.canary.as_mut().unwrap();
        c.canary_metadata = canary;
        c.stable_metadata = stable;
        ro
    }

    fn status(stable: Option<&str>, current: Option<&str>) -> RolloutStatus {
        RolloutStatus {
            stable_rs: stable.map(str::to_string),
            current_pod_hash: current.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn each_replica_set_carries_the_metadata_of_its_role() {
        let canary = md(&[("role", "canary")], &[]);
        let stable = md(&[("role", "stable")], &[("note", "s")]);
        let ro = rollout(Some(canary.clone()), Some(stable.clone()));
        // (stableRS, currentPodHash, ReplicaSet, expected)
        type Row<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            Option<&'a ObjectMetadata>,
        );
        let table: &[Row] = &[
            // First version: no stable yet, the current one becomes it.
            (None, Some("a"), "a", Some(&stable)),
            // Settled.
            (Some("a"), Some("a"), "a", Some(&stable)),
            (Some("a"), Some("a"), "old", None),
            // During an update.
            (Some("a"), Some("b"), "b", Some(&canary)),
            (Some("a"), Some("b"), "a", Some(&stable)),
            (Some("a"), Some("b"), "old", None),
            // Promoted: the former stable one carries nothing.
            (Some("b"), Some("b"), "b", Some(&stable)),
            (Some("b"), Some("b"), "a", None),
        ];
        for (stable_rs, current, hash, want) in table {
            assert_eq!(
                desired(&ro, &status(*stable_rs, *current), hash).as_ref(),
                *want,
                "stable {stable_rs:?}, current {current:?}, replica set {hash}"
            );
        }
    }

    #[test]
    fn an_unset_or_empty_role_metadata_is_none() {
        let ro = rollout(Some(md(&[("role", "canary")], &[])), Some(md(&[], &[])));
        assert!(configured(&ro));
        assert_eq!(desired(&ro, &status(Some("a"), Some("b")), "a"), None);
        let ro = rollout(None, Some(md(&[("role", "stable")], &[])));
        assert_eq!(desired(&ro, &status(Some("a"), Some("b")), "b"), None);
        assert!(!configured(&rollout(None, None)));
    }

    #[test]
    fn a_new_replica_set_starts_as_canary_only_when_another_version_is_stable() {
        let canary = md(&[("role", "canary")], &[]);
        let stable = md(&[("role", "stable")], &[]);
        let mut ro = rollout(Some(canary.clone()), Some(stable.clone()));
        assert_eq!(for_new_replica_set(&ro, "a"), Some(stable.clone()));
        ro.status = Some(status(Some("a"), Some("a")));
        assert_eq!(for_new_replica_set(&ro, "b"), Some(canary));
        assert_eq!(for_new_replica_set(&ro, "a"), Some(stable));
    }

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_change_sets_what_differs_and_removes_only_recorded_keys() {
        let labels = map(&[("app", "web"), ("role", "canary"), ("team", "x")]);
        let was = md(&[("role", "canary"), ("gone", "1")], &[]);
        let want = md(&[("role2", "canary2")], &[("a", "1")]);
        let c = change(Some(&labels), None, Some(&was), Some(&want));
        assert_eq!(
            c.labels,
            BTreeMap::from([
                ("role".to_string(), None),
                ("role2".to_string(), Some("canary2".to_string())),
            ]),
            "`gone` is recorded but absent, `team` and `app` were never put on"
        );
        assert_eq!(
            c.annotations,
            BTreeMap::from([("a".to_string(), Some("1".to_string()))])
        );
        assert_eq!(
            c.merge_patch(),
            json!({"labels": {"role": null, "role2": "canary2"}, "annotations": {"a": "1"}})
        );
        // Already there: nothing to do.
        let done = map(&[("app", "web"), ("role2", "canary2")]);
        let c = change(
            Some(&done),
            Some(&map(&[("a", "1")])),
            Some(&want),
            Some(&want),
        );
        assert!(c.is_empty());
        // Nothing wanted any more: the recorded keys go.
        let c = change(Some(&done), None, Some(&want), None);
        assert_eq!(c.labels, BTreeMap::from([("role2".to_string(), None)]));
        assert!(c.annotations.is_empty());
    }

    #[test]
    fn the_record_reads_back_and_an_unreadable_one_counts_as_none() {
        let m = md(&[("role", "stable")], &[("x", "y")]);
        let value = record(Some(&m)).unwrap();
        let annotations = BTreeMap::from([(EPHEMERAL_METADATA_ANNOTATION.to_string(), value)]);
        assert_eq!(recorded(&annotations), Some(m));
        let bad = BTreeMap::from([(
            EPHEMERAL_METADATA_ANNOTATION.to_string(),
            "not json".to_string(),
        )]);
        assert_eq!(recorded(&bad), None);
        assert_eq!(record(None), None);
    }

    #[test]
    fn strip_gives_back_the_template_without_what_was_put_on() {
        let mut template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "web:1"}]}
        }))
        .unwrap();
        let original = template.clone();
        let m = md(&[("role", "stable")], &[("note", "s")]);
        inject(&mut template, Some(&m));
        let meta = template.metadata.as_ref().unwrap();
        assert_eq!(
            meta.labels
                .as_ref()
                .unwrap()
                .get("role")
                .map(String::as_str),
            Some("stable")
        );
        let annotations = BTreeMap::from([(
            EPHEMERAL_METADATA_ANNOTATION.to_string(),
            record(Some(&m)).unwrap(),
        )]);
        assert_eq!(strip(&template, &annotations), original);
        // Without a record nothing is removed.
        assert_eq!(strip(&template, &BTreeMap::new()), template);
    }
}
