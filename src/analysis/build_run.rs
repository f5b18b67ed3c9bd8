//! The AnalysisRun a Rollout starts, built from its analysis and the templates it references
//! (pure: the caller fetches the templates and creates the object).
//!
//! A run whose templates cannot be resolved (a template missing, a cycle of inclusions, an
//! argument without a value) is still created, with an empty spec and a message: it ends in
//! `Error` at once, which aborts the step, and the message on its status says why.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::analysis::rollout_args::{TemplateHashes, resolve_rollout_args};
use crate::analysis::template::{compose, run_spec};
use crate::api::analysis::{
    AnalysisRun, AnalysisRunSpec, AnalysisTemplateRef, AnalysisTemplateSpec, Argument,
};
use crate::api::constants;
use crate::api::rollout::{Rollout, RolloutAnalysis};

/// The run a Rollout asks for.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    /// Name of the run.
    pub name: &'a str,
    /// Pod-template hash of the version analysed (the `Latest` hash of the arguments).
    pub pod_hash: &'a str,
    /// The analysis: templates, arguments, dry-run and retention entries, run metadata.
    pub analysis: &'a RolloutAnalysis,
    /// Labels by which the Rollout's controller recognises the run (kind, step, hash).
    pub labels: BTreeMap<String, String>,
    /// The Rollout's controller reference, so the run goes with the Rollout.
    pub owner: OwnerReference,
}

/// An AnalysisRun to create.
#[derive(Debug, Clone)]
pub struct BuiltRun {
    /// The object.
    pub run: AnalysisRun,
    /// Why the run cannot be evaluated (its spec is then empty): its status must say so, with
    /// phase `Error`.
    pub error: Option<String>,
}

/// Builds the run `req` of `rollout`. `lookup` gives each template a reference names, following
/// `templates[]` inclusions: `Ok(None)` when it does not exist; its error (a failed read) is
/// returned as is, since then nothing is known about the run yet.
pub fn build_run<'t, E, F>(
    rollout: &Rollout,
    req: &RunRequest<'_>,
    lookup: F,
) -> Result<BuiltRun, E>
where
    F: Fn(&AnalysisTemplateRef) -> Result<Option<&'t AnalysisTemplateSpec>, E>,
{
    let spec = resolve_templates(&req.analysis.templates, lookup)?.and_then(|specs| {
        let template = compose(&req.analysis.templates, |r| {
            specs
                .get(&(r.cluster_scope, r.template_name.clone()))
                .copied()
        })
        .map_err(|e| e.to_string())?;
        let args = rollout_args(rollout, req)?;
        run_spec(
            &template,
            &args,
            &req.analysis.dry_run,
            &req.analysis.measurement_retention,
        )
        .map_err(|e| e.to_string())
    });
    let mut labels = req.labels.clone();
    let mut annotations = BTreeMap::new();
    if let Some(meta) = &req.analysis.analysis_run_metadata {
        labels.extend(meta.labels.clone());
        annotations.extend(meta.annotations.clone());
    }
    if let Some(id) = rollout
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(constants::INSTANCE_ID_LABEL))
    {
        labels.insert(constants::INSTANCE_ID_LABEL.to_string(), id.clone());
    }
    let (spec, error) = match spec {
        Ok(s) => (s, None),
        Err(e) => (AnalysisRunSpec::default(), Some(e)),
    };
    let run = AnalysisRun {
        metadata: ObjectMeta {
            name: Some(req.name.to_string()),
            namespace: rollout.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![req.owner.clone()]),
            ..Default::default()
        },
        spec,
        status: None,
    };
    Ok(BuiltRun { run, error })
}

type TemplateKey = (bool, String);

/// Every template reachable from `refs`, or the first one found missing (as a message).
fn resolve_templates<'t, E, F>(
    refs: &[AnalysisTemplateRef],
    lookup: F,
) -> Result<Result<BTreeMap<TemplateKey, &'t AnalysisTemplateSpec>, String>, E>
where
    F: Fn(&AnalysisTemplateRef) -> Result<Option<&'t AnalysisTemplateSpec>, E>,
{
    let mut specs = BTreeMap::new();
    let mut problem: Option<String> = None;
    let mut queue = refs.to_vec();
    while let Some(r) = queue.pop() {
        let key = (r.cluster_scope, r.template_name.clone());
        if specs.contains_key(&key) {
            continue;
        }
        match lookup(&r)? {
            Some(spec) => {
                queue.extend(spec.templates.iter().cloned());
                specs.insert(key, spec);
            }
            None => {
                problem.get_or_insert(format!(
                    "{} {:?} not found",
                    if r.cluster_scope {
                        "ClusterAnalysisTemplate"
                    } else {
                        "AnalysisTemplate"
                    },
                    r.template_name
                ));
            }
        }
    }
    Ok(match problem {
        Some(p) => Err(p),
        None => Ok(specs),
    })
}

/// Resolves the Rollout-side arguments of an analysis (values, pod-template hashes, fields).
fn rollout_args(rollout: &Rollout, req: &RunRequest<'_>) -> Result<Vec<Argument>, String> {
    let stable = rollout.status.as_ref().and_then(|s| s.stable_rs.clone());
    let value = serde_json::to_value(rollout).map_err(|e| e.to_string())?;
    resolve_rollout_args(
        &req.analysis.args,
        &value,
        TemplateHashes {
            stable: stable.as_deref(),
            latest: Some(req.pod_hash),
        },
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::api::analysis::Metric;

    fn rollout() -> Rollout {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1",
                         "labels": {constants::INSTANCE_ID_LABEL: "east"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "strategy": {"canary": {}}}
        }))
        .unwrap()
    }

    fn template(metrics: &[&str], includes: &[&str]) -> AnalysisTemplateSpec {
        AnalysisTemplateSpec {
            metrics: metrics
                .iter()
                .map(|m| Metric {
                    name: m.to_string(),
                    ..Default::default()
                })
                .collect(),
            templates: includes
                .iter()
                .map(|i| AnalysisTemplateRef {
                    template_name: i.to_string(),
                    cluster_scope: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn analysis(templates: &[&str]) -> RolloutAnalysis {
        RolloutAnalysis {
            templates: templates
                .iter()
                .map(|t| AnalysisTemplateRef {
                    template_name: t.to_string(),
                    cluster_scope: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn request<'a>(analysis: &'a RolloutAnalysis) -> RunRequest<'a> {
        RunRequest {
            name: "web-abc-1-0",
            pod_hash: "abc",
            analysis,
            labels: BTreeMap::from([("kind".to_string(), "step".to_string())]),
            owner: OwnerReference {
                uid: "u1".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn included_templates_are_merged_into_one_run() {
        let outer = template(&["errors"], &["inner"]);
        let inner = template(&["latency"], &[]);
        let a = analysis(&["outer"]);
        let built = build_run(&rollout(), &request(&a), |r| {
            Ok::<_, Infallible>(match r.template_name.as_str() {
                "outer" => Some(&outer),
                "inner" => Some(&inner),
                _ => None,
            })
        })
        .unwrap();
        assert_eq!(built.error, None);
        let mut names: Vec<_> = built.run.spec.metrics.iter().map(|m| &m.name).collect();
        names.sort();
        assert_eq!(names, ["errors", "latency"]);
        let labels = built.run.metadata.labels.unwrap();
        assert_eq!(labels["kind"], "step");
        assert_eq!(labels[constants::INSTANCE_ID_LABEL], "east");
        assert_eq!(built.run.metadata.namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn a_missing_template_gives_an_empty_run_and_names_the_template() {
        let a = analysis(&["gone"]);
        let built = build_run(&rollout(), &request(&a), |_| Ok::<_, Infallible>(None)).unwrap();
        assert!(built.run.spec.metrics.is_empty());
        assert_eq!(
            built.error.as_deref(),
            Some("AnalysisTemplate \"gone\" not found")
        );
    }

    #[test]
    fn a_failed_read_is_returned_and_no_run_is_built() {
        let a = analysis(&["t"]);
        let result = build_run(&rollout(), &request(&a), |_| Err("forbidden"));
        assert_eq!(result.unwrap_err(), "forbidden");
    }
}
