//! An invalid spec, or a spec referencing objects that are missing: reported on the status, and
//! nothing else changes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::conditions::{self, Kstatus};
use super::context::Journal;
use super::hash;
use super::types::{
    DesiredReplicaSet, EventType, Observation, ObservedTemplate, ObservedTemplates, Plan,
};
use crate::analysis::args::{ArgsError, substitute_declared};
use crate::analysis::rollout_args::{TemplateHashes, resolve_rollout_args};
use crate::analysis::template::{TemplateError, compose, run_spec};
use crate::analysis::validation::{
    MetricError, check_conditions, check_limits, check_prometheus, check_provider, check_spec,
};
use crate::api::analysis::{AnalysisTemplateRef, AnalysisTemplateSpec};
use crate::api::constants::{condition, reason};
use crate::api::rollout::{
    BlueGreenStrategy, CanaryStrategy, RolloutAnalysis, RolloutPhase, RolloutStatus,
};
use crate::api::validation::{self, FieldError};

/// The strategy to plan with.
pub(super) enum Strategy<'a> {
    Canary(&'a CanaryStrategy),
    BlueGreen(&'a BlueGreenStrategy),
}

/// The strategy and the pod template to plan with, or every reason the spec cannot be planned.
pub(super) fn check(
    obs: &Observation,
) -> Result<(Strategy<'_>, &PodTemplateSpec), Vec<FieldError>> {
    let spec = &obs.rollout.spec;
    let mut errors = validation::validate_rollout_spec(spec);
    if let Some(workload) = &spec.workload_ref
        && obs.template.is_none()
    {
        errors.push(FieldError {
            field: "spec.workloadRef.name".into(),
            message: format!("Deployment {:?} not found in namespace", workload.name),
        });
    }
    errors.extend(obs.reference_errors.iter().cloned());
    errors.extend(refusal_errors(obs));
    if !errors.is_empty() {
        return Err(errors);
    }
    let strategy = match (&spec.strategy.canary, &spec.strategy.blue_green) {
        (Some(canary), _) => Some(Strategy::Canary(canary)),
        (None, Some(bg)) => Some(Strategy::BlueGreen(bg)),
        (None, None) => None,
    };
    match (strategy, obs.template.as_ref()) {
        (Some(strategy), Some(template)) => {
            let errors = analysis_reference_errors(obs, &strategy, template);
            if errors.is_empty() {
                Ok((strategy, template))
            } else {
                Err(errors)
            }
        }
        // Validation guarantees both; keep the planner total anyway.
        _ => Err(vec![FieldError {
            field: "spec.strategy.canary".into(),
            message: "is required".into(),
        }]),
    }
}

/// The API server's refusal of the current template's ReplicaSet, as field errors: while the
/// template is the one refused and its ReplicaSet does not exist, the spec is invalid, so the
/// create is not planned again (the same template is refused every time). A changed template
/// has another hash, and its ReplicaSet is tried.
fn refusal_errors(obs: &Observation) -> Vec<FieldError> {
    let (Some(refused), Some(template)) = (&obs.refused_replica_set, &obs.template) else {
        return Vec::new();
    };
    let st = obs.rollout.status.clone().unwrap_or_default();
    let current = super::lifecycle::template_hash(obs, template, &st);
    if refused.hash != current || obs.replica_sets.iter().any(|r| r.hash == current) {
        return Vec::new();
    }
    let said = |message: &str| {
        format!(
            "ReplicaSet {:?} refused by the API server: {message}",
            refused.name
        )
    };
    refused
        .causes
        .iter()
        .map(|c| FieldError {
            field: c.field.clone(),
            message: said(&c.message),
        })
        .collect()
}

/// The plan for an invalid spec: the `InvalidSpec` condition and a Degraded phase; every
/// ReplicaSet kept as it is and nothing else touched.
pub(super) fn invalid(
    obs: &Observation,
    mut st: RolloutStatus,
    errors: Vec<FieldError>,
    now: Timestamp,
) -> Plan {
    let mut journal = Journal::default();
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let previous =
        conditions::find(&st.conditions, condition::INVALID_SPEC).map(|c| c.message.clone());
    if previous.as_deref() != Some(message.as_str()) {
        journal.event(EventType::Warning, reason::INVALID_SPEC, message.clone());
    }
    conditions::set(
        &mut st.conditions,
        condition::INVALID_SPEC,
        true,
        reason::INVALID_SPEC,
        &message,
        now,
    );
    st.phase = Some(RolloutPhase::Degraded);
    st.message = Some(format!("InvalidSpec: {message}"));
    st.observed_generation = obs.rollout.metadata.generation;
    conditions::set_kstatus(&mut st.conditions, Kstatus::Stalled, &message, now);
    let replica_sets = obs
        .replica_sets
        .iter()
        .map(|r| DesiredReplicaSet {
            hash: r.hash.clone(),
            create: false,
            replicas: r.replicas,
            revision: r.revision,
            scale_down_deadline: r.scale_down_deadline,
        })
        .collect();
    Plan {
        invalid: Some(errors),
        replica_sets,
        delete_replica_sets: Vec::new(),
        canary_weight: None,
        managed_routes: None,
        stable_service_hash: None,
        canary_service_hash: None,
        create_analysis_runs: Vec::new(),
        terminate_analysis_runs: Vec::new(),
        workload_replicas: None,
        status: st,
        events: journal.events,
        requeue_after: None,
        evictions: None,
    }
}

/// A spec that was invalid is valid again: drop the condition and say so.
pub(super) fn clear_invalid_spec(st: &mut RolloutStatus, journal: &mut Journal) {
    if conditions::find(&st.conditions, condition::INVALID_SPEC).is_some() {
        st.conditions.retain(|c| c.type_ != condition::INVALID_SPEC);
        journal.event(
            EventType::Normal,
            reason::INVALID_SPEC,
            "spec is valid again",
        );
    }
}

/// The problems of the analyses the Rollout references, found before an update's first pod
/// exists, so that a broken template stops the update before any traffic moves rather than at
/// its analysis step. Checked at rest too, as Argo Rollouts does (its e2e `TestFixInvalidSpec`: a
/// Rollout naming a template that does not exist yet is Degraded until it is created), so that
/// the next update does not find the problem; at rest the stable version stands for both.
fn analysis_reference_errors(
    obs: &Observation,
    strategy: &Strategy<'_>,
    template: &PodTemplateSpec,
) -> Vec<FieldError> {
    let Some(templates) = &obs.analysis_templates else {
        return Vec::new();
    };
    let status = obs.rollout.status.as_ref();
    let current = hash::pod_template_hash(template, status.and_then(|s| s.collision_count));
    // The first version has no stable one yet: it stands for both.
    let stable = status
        .and_then(|s| s.stable_rs.as_deref())
        .unwrap_or(current.as_str());
    let analyses: Vec<(String, &RolloutAnalysis)> = match strategy {
        Strategy::Canary(canary) => canary
            .analysis
            .iter()
            .map(|bg| ("spec.strategy.canary.analysis".to_string(), &bg.analysis))
            .chain(canary.steps.iter().enumerate().filter_map(|(i, s)| {
                let a = s.analysis.as_ref()?;
                Some((format!("spec.strategy.canary.steps[{i}].analysis"), a))
            }))
            .collect(),
        Strategy::BlueGreen(bg) => [
            (
                "spec.strategy.blueGreen.prePromotionAnalysis",
                &bg.pre_promotion_analysis,
            ),
            (
                "spec.strategy.blueGreen.postPromotionAnalysis",
                &bg.post_promotion_analysis,
            ),
        ]
        .into_iter()
        .filter_map(|(field, a)| Some((field.to_string(), a.as_ref()?)))
        .collect(),
    };
    let hashes = TemplateHashes {
        stable: Some(stable),
        latest: Some(&current),
    };
    // At rest the templates are checked (they exist, each is valid, they merge, their literal
    // values are sound), but not the arguments: those are resolved from the Rollout as the update
    // that runs them will be (a `fieldRef` may name a label the next template adds), as Argo
    // does when it creates the run.
    let at_rest = current == stable;
    let mut errors: Vec<FieldError> = Vec::new();
    for (field, analysis) in analyses {
        for e in analysis_errors(obs, templates, &field, analysis, hashes, at_rest) {
            // A template several analyses use is reported once.
            if !errors.iter().any(|x| x.message == e.message) {
                errors.push(e);
            }
        }
    }
    errors
}

fn kind(r: &AnalysisTemplateRef) -> &'static str {
    if r.cluster_scope {
        "ClusterAnalysisTemplate"
    } else {
        "AnalysisTemplate"
    }
}

/// One analysis (at `field`) resolved as its run would be: every template it reaches exists
/// and is valid on its own, then the merged run gets every argument it needs and each metric,
/// with the arguments substituted, passes the checks the run makes when it starts.
fn analysis_errors(
    obs: &Observation,
    templates: &ObservedTemplates,
    field: &str,
    analysis: &RolloutAnalysis,
    hashes: TemplateHashes<'_>,
    templates_only: bool,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    // The templates reached, with the reference (field) that first reached each.
    let mut found: BTreeMap<(bool, String), (&AnalysisTemplateRef, &AnalysisTemplateSpec)> =
        BTreeMap::new();
    let mut queue: Vec<(String, &AnalysisTemplateRef)> = analysis
        .templates
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("{field}.templates[{i}]"), r))
        .collect();
    queue.reverse();
    let mut seen = Vec::new();
    while let Some((at, r)) = queue.pop() {
        let key = (r.cluster_scope, r.template_name.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key.clone());
        let name = &r.template_name;
        let problem = |message: String| FieldError {
            field: at.clone(),
            message: format!("{} {name:?}: {message}", kind(r)),
        };
        match templates.get(&key) {
            // Not read (the observation is partial): nothing known to report.
            None => {}
            Some(ObservedTemplate::Missing) => errors.push(FieldError {
                field: at.clone(),
                message: format!("{} {name:?} not found", kind(r)),
            }),
            Some(ObservedTemplate::Invalid(e)) => errors.push(problem(e.to_string())),
            Some(ObservedTemplate::Found(spec)) => {
                let includes = !spec.templates.is_empty();
                for e in check_spec(
                    &spec.metrics,
                    &spec.dry_run,
                    &spec.measurement_retention,
                    includes,
                ) {
                    errors.push(problem(e.status_message()));
                }
                for (i, m) in spec.metrics.iter().enumerate() {
                    if let Err(e) = check_provider(m) {
                        errors.push(problem(metric_message(i, &e)));
                    }
                }
                found.insert(key, (r, spec));
                for inner in spec.templates.iter().rev() {
                    queue.push((at.clone(), inner));
                }
            }
        }
    }
    if !errors.is_empty() {
        return errors;
    }
    let lookup = |r: &AnalysisTemplateRef| {
        found
            .get(&(r.cluster_scope, r.template_name.clone()))
            .map(|(_, spec)| *spec)
    };
    let merged = match compose(&analysis.templates, lookup) {
        Ok(t) => t,
        Err(e) => return vec![at(field, e.to_string())],
    };
    let rollout = match serde_json::to_value(&obs.rollout) {
        Ok(v) => v,
        Err(e) => return vec![at(field, e.to_string())],
    };
    let args = match resolve_rollout_args(&analysis.args, &rollout, hashes) {
        Ok(a) => a,
        // At rest the arguments are the next update's: a `fieldRef` may name a label its
        // template adds.
        Err(_) if templates_only => return Vec::new(),
        Err(e) => return vec![at(&format!("{field}.args"), e.to_string())],
    };
    let run = match run_spec(
        &merged,
        &args,
        &analysis.dry_run,
        &analysis.measurement_retention,
    ) {
        Ok(r) => r,
        Err(TemplateError::Args(_)) if templates_only => return Vec::new(),
        Err(e) => {
            // An argument nobody supplies is reported against the template that declares it.
            let declared_by = match &e {
                TemplateError::Args(ArgsError::NotSupplied { name }) => found
                    .values()
                    .find(|(_, spec)| spec.args.iter().any(|a| &a.name == name))
                    .map(|(r, _)| *r),
                _ => None,
            };
            let message = match declared_by {
                Some(r) => format!("{} {:?}: spec.args: {e}", kind(r), r.template_name),
                None => e.to_string(),
            };
            return vec![at(field, message)];
        }
    };
    for m in &run.metrics {
        // Reported against the template that declares the metric.
        let Some((r, index)) = found.values().find_map(|(r, spec)| {
            let i = spec.metrics.iter().position(|x| x.name == m.name)?;
            Some((*r, i))
        }) else {
            continue;
        };
        let problem = |message: String| FieldError {
            field: field.to_string(),
            message: format!("{} {:?}: {message}", kind(r), r.template_name),
        };
        // Secret-backed arguments are not read here: substitution fills them with stand-ins.
        let substituted = substitute_declared(m, &run.args);
        for p in &substituted.problems {
            errors.push(problem(format!("spec.metrics[{index}]: {p}")));
        }
        match substituted.metric {
            Ok(m) => {
                let mut metric_errors = Vec::new();
                // A Secret-backed value is not read here; limits it fills are checked by the run.
                if !substituted.limits_stand_in {
                    metric_errors.extend(check_limits(&m).err());
                }
                metric_errors.extend(check_conditions(&m));
                metric_errors.extend(m.provider.prometheus.iter().flat_map(check_prometheus));
                errors.extend(
                    metric_errors
                        .iter()
                        .map(|e| problem(metric_message(index, e))),
                );
            }
            Err(e) => errors.push(problem(format!(
                "spec.metrics[{index}]: after argument substitution: {e}"
            ))),
        }
    }
    errors
}

fn at(field: &str, message: String) -> FieldError {
    FieldError {
        field: field.to_string(),
        message,
    }
}

/// `spec.metrics[INDEX].FIELD: MESSAGE`, the field named once.
fn metric_message(index: usize, e: &MetricError) -> String {
    let inner = e.field();
    let message = e.to_string();
    if inner.is_empty() {
        return format!("spec.metrics[{index}]: {message}");
    }
    // Limit messages start with the field's own name.
    let message = message
        .strip_prefix(inner.as_str())
        .map(str::trim_start)
        .filter(|m| !m.is_empty())
        .unwrap_or(message.as_str());
    format!("spec.metrics[{index}].{inner}: {message}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::rollout::Rollout;
    use crate::plan::sim::World;
    use crate::plan::{RefusedReplicaSet, plan};

    const T: &str = "2026-01-01T00:00:00Z";

    fn now() -> Timestamp {
        T.parse().unwrap()
    }

    fn world() -> World {
        let ro: Rollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default", "generation": 1},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
                "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
            }
        }))
        .unwrap();
        World::new(ro, now())
    }

    fn current_hash(w: &World) -> String {
        let st = w.rollout.status.clone().unwrap_or_default();
        hash::pod_template_hash(
            w.rollout.spec.template.as_ref().unwrap(),
            st.collision_count,
        )
    }

    fn refusal(hash: &str) -> RefusedReplicaSet {
        RefusedReplicaSet {
            hash: hash.to_string(),
            name: format!("web-{hash}"),
            causes: vec![FieldError {
                field: "spec.template.spec.containers[0].env[0].name".into(),
                message: "Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='".into(),
            }],
            message: String::new(),
        }
    }

    fn invalid_spec_message(p: &Plan) -> Option<String> {
        conditions::find(&p.status.conditions, condition::INVALID_SPEC).map(|c| c.message.clone())
    }

    #[test]
    fn a_refused_first_version_is_invalid_spec_naming_field_and_replica_set() {
        let w = world();
        let hash = current_hash(&w);
        let mut obs = w.observe();
        // Without the refusal the first version's ReplicaSet is created.
        assert!(plan(&obs, now()).replica_sets.iter().any(|r| r.create));
        obs.refused_replica_set = Some(refusal(&hash));
        let p = plan(&obs, now());
        assert!(p.invalid.is_some());
        assert!(p.replica_sets.is_empty(), "{:?}", p.replica_sets);
        assert_eq!(p.canary_weight, None);
        assert_eq!(p.status.phase, Some(RolloutPhase::Degraded));
        let message = invalid_spec_message(&p).expect("InvalidSpec condition");
        assert!(
            message.starts_with(&format!(
                "spec.template.spec.containers[0].env[0].name: ReplicaSet \"web-{hash}\" refused by the API server: Invalid value: \"A=B\""
            )),
            "{message}"
        );
        assert!(p.events.iter().any(|e| e.reason == reason::INVALID_SPEC));
    }

    #[test]
    fn a_refused_update_leaves_stable_and_traffic_alone() {
        let mut w = world();
        w.settle(Duration::from_secs(1), 50);
        let stable = current_hash(&w);
        let before = w.rollout.status.clone().unwrap();
        assert_eq!(before.stable_rs.as_deref(), Some(stable.as_str()));
        w.set_image("web:2");
        let canary = current_hash(&w);
        let mut obs = w.observe();
        obs.refused_replica_set = Some(refusal(&canary));
        let p = plan(&obs, now());
        assert!(p.invalid.is_some());
        assert!(p.replica_sets.iter().all(|r| !r.create && r.hash == stable));
        assert_eq!(p.replica_sets[0].replicas, 2);
        assert_eq!(p.canary_weight, None);
        assert_eq!(p.stable_service_hash, None);
        assert!(p.create_analysis_runs.is_empty());
        assert_eq!(p.status.stable_rs.as_deref(), Some(stable.as_str()));
        assert_eq!(p.status.current_pod_hash, before.current_pod_hash);
    }

    #[test]
    fn a_changed_template_is_tried_again_and_the_condition_cleared() {
        let mut w = world();
        let refused = current_hash(&w);
        let mut obs = w.observe();
        obs.refused_replica_set = Some(refusal(&refused));
        let p = plan(&obs, now());
        w.rollout.status = Some(p.status.clone());
        // The user fixes the template: another hash, which was never refused.
        w.set_image("web:fixed");
        let fixed = current_hash(&w);
        assert_ne!(fixed, refused);
        let mut obs = w.observe();
        obs.refused_replica_set = Some(refusal(&refused));
        let p = plan(&obs, now());
        assert!(p.invalid.is_none());
        assert!(p.replica_sets.iter().any(|r| r.create && r.hash == fixed));
        assert_eq!(invalid_spec_message(&p), None);
        assert!(
            p.events
                .iter()
                .any(|e| e.reason == reason::INVALID_SPEC && e.message == "spec is valid again")
        );
    }

    #[test]
    fn a_refusal_of_a_replica_set_that_exists_is_stale() {
        let mut w = world();
        w.settle(Duration::from_secs(1), 50);
        let hash = current_hash(&w);
        let mut obs = w.observe();
        obs.refused_replica_set = Some(refusal(&hash));
        let p = plan(&obs, now());
        assert!(p.invalid.is_none());
        assert_eq!(invalid_spec_message(&p), None);
    }
}
