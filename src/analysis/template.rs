//! Template composition: merging several templates (and the templates they include) into the
//! spec of one AnalysisRun, with Argo Rollouts' rules. Templates are looked up through a function
//! the caller provides, so this stays free of I/O.

use crate::analysis::args::{ArgsError, merge_args};
use crate::api::analysis::{AnalysisRunSpec, AnalysisTemplateRef, AnalysisTemplateSpec, Argument};
use crate::api::common::{DryRun, MeasurementRetention};

/// Why templates could not be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Two templates define a metric with the same name.
    #[error("two metrics have the same name \"{name}\"")]
    DuplicateMetric {
        /// The metric name.
        name: String,
    },
    /// A referenced template does not exist.
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// `AnalysisTemplate` or `ClusterAnalysisTemplate`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Templates include each other.
    #[error("templates include each other: {chain}")]
    Cycle {
        /// The inclusion chain, e.g. `a -> b -> a`.
        chain: String,
    },
    /// Two templates keep a different number of measurements for the same metric.
    #[error(
        "measurementRetention for \"{metric}\" is specified multiple times with different limits"
    )]
    ConflictingRetention {
        /// The metric name pattern.
        metric: String,
    },
    /// Arguments conflict or are missing.
    #[error(transparent)]
    Args(#[from] ArgsError),
}

fn kind(r: &AnalysisTemplateRef) -> &'static str {
    if r.cluster_scope {
        "ClusterAnalysisTemplate"
    } else {
        "AnalysisTemplate"
    }
}

/// Merges templates into one: metrics concatenated (duplicate names are an error), arguments
/// merged (the same name twice must not have two different values; a value wins over no value),
/// dry-run and retention entries concatenated without duplicates.
pub fn flatten(templates: &[AnalysisTemplateSpec]) -> Result<AnalysisTemplateSpec, TemplateError> {
    let mut out = AnalysisTemplateSpec::default();
    for t in templates {
        for m in &t.metrics {
            if out.metrics.iter().any(|x| x.name == m.name) {
                return Err(TemplateError::DuplicateMetric {
                    name: m.name.clone(),
                });
            }
            out.metrics.push(m.clone());
        }
        for a in &t.args {
            merge_one_arg(&mut out.args, a)?;
        }
        for d in &t.dry_run {
            if !out.dry_run.contains(d) {
                out.dry_run.push(d.clone());
            }
        }
        for r in &t.measurement_retention {
            match out
                .measurement_retention
                .iter()
                .find(|x| x.metric_name == r.metric_name)
            {
                Some(x) if x.limit != r.limit => {
                    return Err(TemplateError::ConflictingRetention {
                        metric: r.metric_name.clone(),
                    });
                }
                Some(_) => {}
                None => out.measurement_retention.push(r.clone()),
            }
        }
    }
    Ok(out)
}

fn merge_one_arg(args: &mut Vec<Argument>, new: &Argument) -> Result<(), TemplateError> {
    match args.iter_mut().find(|a| a.name == new.name) {
        Some(prev) => {
            if let (Some(p), Some(n)) = (&prev.value, &new.value)
                && p != n
            {
                return Err(ArgsError::Conflict {
                    name: new.name.clone(),
                }
                .into());
            }
            if prev.value.is_none() && prev.value_from.is_none() {
                *prev = new.clone();
            }
        }
        None => args.push(new.clone()),
    }
    Ok(())
}

/// Resolves a list of template references, including the templates each one includes through
/// `templates[]`, and flattens them all into one spec.
pub fn compose<'a, F>(
    refs: &[AnalysisTemplateRef],
    lookup: F,
) -> Result<AnalysisTemplateSpec, TemplateError>
where
    F: Fn(&AnalysisTemplateRef) -> Option<&'a AnalysisTemplateSpec>,
{
    let mut collected = Vec::new();
    let mut stack = Vec::new();
    for r in refs {
        collect(r, &lookup, &mut stack, &mut collected)?;
    }
    flatten(&collected)
}

fn collect<'a, F>(
    r: &AnalysisTemplateRef,
    lookup: &F,
    stack: &mut Vec<String>,
    out: &mut Vec<AnalysisTemplateSpec>,
) -> Result<(), TemplateError>
where
    F: Fn(&AnalysisTemplateRef) -> Option<&'a AnalysisTemplateSpec>,
{
    let id = format!("{}/{}", kind(r), r.template_name);
    if stack.contains(&id) {
        stack.push(id);
        return Err(TemplateError::Cycle {
            chain: stack.join(" -> "),
        });
    }
    let spec = lookup(r).ok_or_else(|| TemplateError::NotFound {
        kind: kind(r),
        name: r.template_name.clone(),
    })?;
    stack.push(id);
    for inner in &spec.templates {
        collect(inner, lookup, stack, out)?;
    }
    stack.pop();
    out.push(AnalysisTemplateSpec {
        templates: Vec::new(),
        ..spec.clone()
    });
    Ok(())
}

/// Builds an AnalysisRun spec from a merged template and what the Rollout supplies: its
/// arguments (merged with [`merge_args`]), dry-run and retention entries (added to the
/// template's).
pub fn run_spec(
    template: &AnalysisTemplateSpec,
    args: &[Argument],
    dry_run: &[DryRun],
    measurement_retention: &[MeasurementRetention],
) -> Result<AnalysisRunSpec, TemplateError> {
    let extra = AnalysisTemplateSpec {
        dry_run: dry_run.to_vec(),
        measurement_retention: measurement_retention.to_vec(),
        ..Default::default()
    };
    let merged = flatten(&[template.clone(), extra])?;
    Ok(AnalysisRunSpec {
        metrics: merged.metrics,
        args: merge_args(&merged.args, args)?,
        terminate: false,
        dry_run: merged.dry_run,
        measurement_retention: merged.measurement_retention,
        ttl_strategy: None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::analysis::Metric;

    fn metric(name: &str) -> Metric {
        Metric {
            name: name.into(),
            ..Default::default()
        }
    }

    fn arg(name: &str, value: Option<&str>) -> Argument {
        Argument {
            name: name.into(),
            value: value.map(Into::into),
            value_from: None,
        }
    }

    fn tref(name: &str) -> AnalysisTemplateRef {
        AnalysisTemplateRef {
            template_name: name.into(),
            cluster_scope: false,
        }
    }

    #[test]
    fn duplicate_metric_names_are_an_error() {
        let a = AnalysisTemplateSpec {
            metrics: vec![metric("success-rate")],
            ..Default::default()
        };
        assert_eq!(
            flatten(&[a.clone(), a]).unwrap_err().to_string(),
            "two metrics have the same name \"success-rate\""
        );
    }

    #[test]
    fn args_merge_and_conflict() {
        let a = AnalysisTemplateSpec {
            args: vec![arg("service", None), arg("ns", Some("prod"))],
            ..Default::default()
        };
        let b = AnalysisTemplateSpec {
            args: vec![arg("service", Some("checkout")), arg("ns", Some("prod"))],
            ..Default::default()
        };
        let merged = flatten(&[a.clone(), b]).unwrap();
        assert_eq!(
            merged.args,
            vec![arg("service", Some("checkout")), arg("ns", Some("prod"))]
        );
        let c = AnalysisTemplateSpec {
            args: vec![arg("ns", Some("staging"))],
            ..Default::default()
        };
        assert!(matches!(
            flatten(&[a, c]),
            Err(TemplateError::Args(ArgsError::Conflict { .. }))
        ));
    }

    #[test]
    fn nested_templates_are_included_and_cycles_detected() {
        let mut store: BTreeMap<String, AnalysisTemplateSpec> = BTreeMap::new();
        store.insert(
            "base".into(),
            AnalysisTemplateSpec {
                metrics: vec![metric("latency")],
                ..Default::default()
            },
        );
        store.insert(
            "top".into(),
            AnalysisTemplateSpec {
                metrics: vec![metric("success-rate")],
                templates: vec![tref("base")],
                ..Default::default()
            },
        );
        let spec = compose(&[tref("top")], |r| store.get(&r.template_name)).unwrap();
        let names: Vec<_> = spec.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["latency", "success-rate"]);
        assert!(spec.templates.is_empty());

        store.get_mut("base").unwrap().templates = vec![tref("top")];
        let err = compose(&[tref("top")], |r| store.get(&r.template_name)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "templates include each other: AnalysisTemplate/top -> AnalysisTemplate/base -> AnalysisTemplate/top"
        );
        let err = compose(&[tref("nope")], |r| store.get(&r.template_name)).unwrap_err();
        assert_eq!(err.to_string(), "AnalysisTemplate \"nope\" not found");
    }

    #[test]
    fn run_spec_takes_rollout_args() {
        let t = AnalysisTemplateSpec {
            metrics: vec![metric("m")],
            args: vec![arg("service", None)],
            ..Default::default()
        };
        let spec = run_spec(&t, &[arg("service", Some("checkout"))], &[], &[]).unwrap();
        assert_eq!(spec.args, vec![arg("service", Some("checkout"))]);
        assert_eq!(
            run_spec(&t, &[], &[], &[]).unwrap_err().to_string(),
            "argument \"service\" was not supplied"
        );
    }
}
