//! Analysis arguments: merging the Rollout's args into a template's, reading Secret-backed values
//! (already fetched by the caller: no I/O here), `{{args.NAME}}` substitution in every string of
//! a metric, and redaction of Secret values.

use std::collections::BTreeMap;

use crate::api::analysis::{Argument, Metric, SecretKeyRef};

/// Why arguments could not be resolved. Messages never contain a Secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A template argument has no value and nobody supplied one.
    #[error("argument \"{name}\" was not supplied")]
    NotSupplied {
        /// Name of the argument.
        name: String,
    },
    /// `{{args.NAME}}` names an argument that does not exist.
    #[error("{field} refers to argument \"{name}\", which is not defined")]
    Undefined {
        /// Name of the argument.
        name: String,
        /// Where the reference was found.
        field: String,
    },
    /// A `{{...}}` placeholder that is not an argument.
    #[error("{field}: {}", PlaceholderError::Unknown { tag: tag.clone() })]
    UnknownPlaceholder {
        /// The text between the braces.
        tag: String,
        /// Where it was found.
        field: String,
    },
    /// The Secret or its key does not exist.
    #[error("argument \"{name}\": key \"{key}\" of secret \"{secret}\" was not found")]
    SecretNotFound {
        /// Name of the argument.
        name: String,
        /// Name of the Secret.
        secret: String,
        /// Key inside the Secret.
        key: String,
    },
    /// A `fieldRef` reached the run unresolved.
    #[error(
        "argument \"{name}\": valueFrom.fieldRef ({path}) must be resolved by whoever creates the run"
    )]
    UnresolvedFieldRef {
        /// Name of the argument.
        name: String,
        /// The field path.
        path: String,
    },
    /// A Rollout-side argument whose value cannot be found (no such field, no hash yet).
    #[error("argument \"{name}\": {reason}")]
    Unresolvable {
        /// Name of the argument.
        name: String,
        /// Why.
        reason: String,
    },
    /// The same argument twice with different values when merging templates.
    #[error("argument \"{name}\" is specified multiple times with different values")]
    Conflict {
        /// Name of the argument.
        name: String,
    },
    /// Substitution produced something that no longer fits the field's type.
    #[error("metric \"{metric}\" is invalid after argument substitution: {message}")]
    Invalid {
        /// Name of the metric.
        metric: String,
        /// What does not fit.
        message: String,
    },
}

/// A placeholder that cannot be filled, found while checking a template on its own (before any
/// Rollout supplies values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    /// A `{{...}}` placeholder that is not an argument.
    #[error("unknown placeholder {{{{{tag}}}}} (only {{{{args.NAME}}}} is supported)")]
    Unknown {
        /// The text between the braces.
        tag: String,
    },
    /// `{{args.NAME}}` names an argument the template does not declare.
    #[error(
        "{{{{{tag}}}}} uses argument \"{name}\", which the template does not declare in spec.args"
    )]
    Undeclared {
        /// The text between the braces.
        tag: String,
        /// Name of the argument.
        name: String,
    },
}

/// Secret values fetched by the caller, by Secret name and key.
pub type SecretValues = BTreeMap<SecretKeyRef, String>;

/// The Secret keys a list of arguments needs, so the caller knows what to fetch.
pub fn secret_refs(args: &[Argument]) -> Vec<SecretKeyRef> {
    let mut refs: Vec<SecretKeyRef> = args
        .iter()
        .filter(|a| a.value.is_none())
        .filter_map(|a| a.value_from.as_ref()?.secret_key_ref.clone())
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// Merges the arguments a Rollout supplies into a template's, with Argo Rollouts' rules: a
/// supplied `value` (or else `valueFrom`) overrides the template's; supplied arguments the
/// template does not declare are ignored; afterwards every argument needs a value or a
/// `valueFrom`.
pub fn merge_args(
    template: &[Argument],
    supplied: &[Argument],
) -> Result<Vec<Argument>, ArgsError> {
    let merged = override_values(template, supplied);
    if let Some(missing) = unsupplied(&merged).next() {
        return Err(ArgsError::NotSupplied {
            name: missing.name.clone(),
        });
    }
    Ok(merged)
}

/// The template's arguments that still have no value once `supplied` is merged in (see
/// [`merge_args`]): every one, where `merge_args` stops at the first.
pub fn missing_args(template: &[Argument], supplied: &[Argument]) -> Vec<String> {
    unsupplied(&override_values(template, supplied))
        .map(|a| a.name.clone())
        .collect()
}

fn override_values(template: &[Argument], supplied: &[Argument]) -> Vec<Argument> {
    let mut merged = template.to_vec();
    for arg in supplied {
        if let Some(target) = merged.iter_mut().find(|a| a.name == arg.name) {
            if arg.value.is_some() {
                target.value = arg.value.clone();
                target.value_from = None;
            } else if arg.value_from.is_some() {
                target.value_from = arg.value_from.clone();
                target.value = None;
            }
        }
    }
    merged
}

fn unsupplied(args: &[Argument]) -> impl Iterator<Item = &Argument> {
    args.iter()
        .filter(|a| a.value.is_none() && a.value_from.is_none())
}

/// Replaces every `{{...}}` in `text` (spaces inside the braces tolerated) by what `fill` says
/// for its trimmed content; `fill` also sees the text produced so far. Unbalanced braces are
/// left alone, as fasttemplate does.
fn replace_placeholders<E>(
    text: &str,
    mut fill: impl FnMut(&str, &str) -> Result<String, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..open]);
        let tag = rest[open + 2..open + 2 + close].trim();
        let value = fill(tag, &out)?;
        out.push_str(&value);
        rest = &rest[open + 2 + close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Applies `f` to every string of a JSON value, with the path of the string (`base.key[i]`).
fn for_each_string<E>(
    v: &mut serde_json::Value,
    path: &str,
    f: &mut impl FnMut(&mut String, &str) -> Result<(), E>,
) -> Result<(), E> {
    match v {
        serde_json::Value::String(s) => f(s, path)?,
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                for_each_string(item, &format!("{path}[{i}]"), f)?;
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                for_each_string(item, &format!("{path}.{k}"), f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A metric of a template checked on its own, before any Rollout supplies values: the
/// placeholders that cannot be filled, and the metric with every placeholder replaced, so that
/// the other checks can run on it.
#[derive(Debug)]
pub struct DeclaredSubstitution {
    /// Placeholders that name no declared argument, or are not arguments at all; each once.
    pub problems: Vec<PlaceholderError>,
    /// The metric after substitution, or why it no longer decodes.
    pub metric: Result<Metric, serde_json::Error>,
    /// True when a stand-in (not a declared value) went into `count`, a limit, `interval` or
    /// `initialDelay`: how those fit together is then known only once the values are supplied,
    /// so the limit checks wait for them.
    pub limits_stand_in: bool,
}

/// Metric fields that hold a Go duration: a placeholder there stands in for one.
const DURATION_FIELDS: [&str; 2] = [".interval", ".initialDelay"];

/// Metric fields whose values are checked together (`MetricLimits`).
const LIMIT_FIELDS: [&str; 8] = [
    ".count",
    ".failureLimit",
    ".inconclusiveLimit",
    ".consecutiveErrorLimit",
    ".consecutiveSuccessLimit",
    ".consecutiveFailureLimit",
    ".interval",
    ".initialDelay",
];

/// Replaces `{{args.NAME}}` in every string of a template's metric with the argument's declared
/// default when it has one, else with a stand-in that keeps the surrounding syntax valid: a
/// duration in `interval` and `initialDelay` and inside `[...]` (PromQL ranges), a word inside
/// quotes, a number elsewhere.
pub fn substitute_declared(metric: &Metric, declared: &[Argument]) -> DeclaredSubstitution {
    let mut problems = Vec::new();
    let mut json = match serde_json::to_value(metric) {
        Ok(v) => v,
        Err(e) => {
            return DeclaredSubstitution {
                problems,
                metric: Err(e),
                limits_stand_in: false,
            };
        }
    };
    let mut limits_stand_in = false;
    let fill = |tag: &str,
                before: &str,
                path: &str,
                problems: &mut Vec<PlaceholderError>,
                limits_stand_in: &mut bool| {
        let Some(name) = tag.strip_prefix("args.") else {
            problems.push(PlaceholderError::Unknown {
                tag: tag.to_string(),
            });
            return "1".to_string();
        };
        let arg = declared.iter().find(|a| a.name == name);
        if let Some(v) = arg.and_then(|a| a.value.clone()) {
            return v;
        }
        if arg.is_none() {
            problems.push(PlaceholderError::Undeclared {
                tag: tag.to_string(),
                name: name.to_string(),
            });
        }
        if LIMIT_FIELDS.contains(&path) {
            *limits_stand_in = true;
        }
        let quotes = before.matches('"').count() + before.matches('\'').count();
        if DURATION_FIELDS.iter().any(|f| path.ends_with(f)) {
            "1m".to_string()
        } else if before.trim_end().ends_with('[') {
            "5m".to_string()
        } else if quotes % 2 == 1 {
            "x".to_string()
        } else {
            "1".to_string()
        }
    };
    let filled = for_each_string(&mut json, "", &mut |s: &mut String, path: &str| {
        *s = replace_placeholders(s, |tag, before| {
            Ok::<_, std::convert::Infallible>(fill(
                tag,
                before,
                path,
                &mut problems,
                &mut limits_stand_in,
            ))
        })?;
        Ok::<_, std::convert::Infallible>(())
    });
    let Ok(()) = filled;
    problems.dedup();
    DeclaredSubstitution {
        problems,
        metric: serde_json::from_value(json),
        limits_stand_in,
    }
}

/// Argument values ready for substitution, remembering which came from Secrets.
#[derive(Debug, Clone, Default)]
pub struct ResolvedArgs {
    values: BTreeMap<String, String>,
    /// Secret values, longest first so that redaction never leaves a tail of a longer secret.
    secrets: Vec<String>,
}

impl ResolvedArgs {
    /// Resolves every argument from its literal value or from the already-fetched Secrets.
    pub fn resolve(args: &[Argument], secrets: &SecretValues) -> Result<Self, ArgsError> {
        let mut resolved = ResolvedArgs::default();
        for arg in args {
            let value = if let Some(v) = &arg.value {
                v.clone()
            } else if let Some(from) = &arg.value_from {
                if let Some(r) = &from.secret_key_ref {
                    let v = secrets.get(r).ok_or_else(|| ArgsError::SecretNotFound {
                        name: arg.name.clone(),
                        secret: r.name.clone(),
                        key: r.key.clone(),
                    })?;
                    if !v.is_empty() {
                        resolved.secrets.push(v.clone());
                    }
                    v.clone()
                } else if let Some(f) = &from.field_ref {
                    return Err(ArgsError::UnresolvedFieldRef {
                        name: arg.name.clone(),
                        path: f.field_path.clone(),
                    });
                } else {
                    return Err(ArgsError::NotSupplied {
                        name: arg.name.clone(),
                    });
                }
            } else {
                return Err(ArgsError::NotSupplied {
                    name: arg.name.clone(),
                });
            };
            resolved.values.insert(arg.name.clone(), value);
        }
        resolved.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        resolved.secrets.dedup();
        Ok(resolved)
    }

    /// Replaces every `{{args.NAME}}` (spaces inside the braces tolerated) in `text`. `field`
    /// names the place for error messages.
    pub fn substitute(&self, text: &str, field: &str) -> Result<String, ArgsError> {
        replace_placeholders(text, |tag, _| match tag.strip_prefix("args.") {
            Some(name) => self
                .values
                .get(name)
                .cloned()
                .ok_or_else(|| ArgsError::Undefined {
                    name: name.to_string(),
                    field: field.to_string(),
                }),
            None => Err(ArgsError::UnknownPlaceholder {
                tag: tag.to_string(),
                field: field.to_string(),
            }),
        })
    }

    /// `text` with every Secret value replaced by `*****`, for status, Events and logs.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "*****");
        }
        out
    }

    /// The Secret values, longest first, for a provider that must redact what a server echoes.
    pub fn secret_values(&self) -> Vec<String> {
        self.secrets.clone()
    }

    /// True when at least one argument came from a Secret.
    pub fn has_secrets(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// Substitutes arguments in every string of a metric: query, address, headers, conditions,
    /// `count`, limits, range bounds and so on.
    pub fn resolve_metric(&self, metric: &Metric) -> Result<Metric, ArgsError> {
        let invalid = |message: String| ArgsError::Invalid {
            metric: metric.name.clone(),
            message,
        };
        let mut json = serde_json::to_value(metric).map_err(|e| invalid(e.to_string()))?;
        let path = format!("metric \"{}\"", metric.name);
        for_each_string(&mut json, &path, &mut |s: &mut String, field: &str| {
            if s.contains("{{") {
                *s = self.substitute(s, field)?;
            }
            Ok(())
        })?;
        // The message may quote the substituted text, so it is redacted.
        serde_json::from_value(json).map_err(|e| invalid(self.redact(&e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::analysis::ValueFrom;
    use crate::api::common::FieldRef;

    fn arg(name: &str, value: Option<&str>) -> Argument {
        Argument {
            name: name.into(),
            value: value.map(Into::into),
            value_from: None,
        }
    }

    fn secret_arg(name: &str, secret: &str, key: &str) -> Argument {
        Argument {
            name: name.into(),
            value: None,
            value_from: Some(ValueFrom {
                secret_key_ref: Some(SecretKeyRef {
                    name: secret.into(),
                    key: key.into(),
                }),
                field_ref: None,
            }),
        }
    }

    #[test]
    fn supplied_value_overrides_template_value() {
        let merged = merge_args(
            &[arg("service", None), arg("threshold", Some("0.95"))],
            &[
                arg("service", Some("checkout")),
                arg("threshold", Some("0.99")),
                arg("unused", Some("x")),
            ],
        )
        .unwrap();
        assert_eq!(
            merged,
            vec![
                arg("service", Some("checkout")),
                arg("threshold", Some("0.99"))
            ]
        );
    }

    #[test]
    fn template_arg_without_value_must_be_supplied() {
        let err = merge_args(&[arg("service", None)], &[]).unwrap_err();
        assert_eq!(err.to_string(), "argument \"service\" was not supplied");
    }

    #[test]
    fn supplied_value_from_replaces_template_value() {
        let merged = merge_args(
            &[arg("token", Some("default"))],
            &[secret_arg("token", "prom", "token")],
        )
        .unwrap();
        assert_eq!(merged[0].value, None);
        assert!(merged[0].value_from.is_some());
    }

    #[test]
    fn substitution_tolerates_spaces_and_names_missing_arguments() {
        let args = ResolvedArgs::resolve(&[arg("service", Some("checkout"))], &SecretValues::new())
            .unwrap();
        assert_eq!(
            args.substitute("rate{svc=\"{{ args.service }}\"} / {{args.service}}", "q")
                .unwrap(),
            "rate{svc=\"checkout\"} / checkout"
        );
        assert_eq!(
            args.substitute("{{args.nope}}", "metric \"m\".provider.prometheus.query")
                .unwrap_err()
                .to_string(),
            "metric \"m\".provider.prometheus.query refers to argument \"nope\", which is not defined"
        );
        assert!(matches!(
            args.substitute("{{experiment.availableAt}}", "q"),
            Err(ArgsError::UnknownPlaceholder { .. })
        ));
        // Unbalanced braces are left alone, as fasttemplate does.
        assert_eq!(args.substitute("a {{ b", "q").unwrap(), "a {{ b");
    }

    #[test]
    fn secret_values_are_resolved_and_redacted() {
        let mut secrets = SecretValues::new();
        secrets.insert(
            SecretKeyRef {
                name: "prom".into(),
                key: "token".into(),
            },
            "s3cr3t-token".into(),
        );
        let args =
            ResolvedArgs::resolve(&[secret_arg("token", "prom", "token")], &secrets).unwrap();
        let q = args
            .substitute("up{token=\"{{args.token}}\"}", "q")
            .unwrap();
        assert_eq!(q, "up{token=\"s3cr3t-token\"}");
        assert_eq!(args.redact(&q), "up{token=\"*****\"}");
        assert!(args.has_secrets());
    }

    #[test]
    fn missing_secret_names_argument_secret_and_key() {
        let err = ResolvedArgs::resolve(
            &[secret_arg("token", "prom", "token")],
            &SecretValues::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "argument \"token\": key \"token\" of secret \"prom\" was not found"
        );
    }

    #[test]
    fn field_ref_must_have_been_resolved_before() {
        let a = Argument {
            name: "image".into(),
            value: None,
            value_from: Some(ValueFrom {
                secret_key_ref: None,
                field_ref: Some(FieldRef {
                    field_path: "metadata.name".into(),
                }),
            }),
        };
        assert!(matches!(
            ResolvedArgs::resolve(&[a], &SecretValues::new()),
            Err(ArgsError::UnresolvedFieldRef { .. })
        ));
    }

    #[test]
    fn secret_refs_lists_each_key_once() {
        let refs = secret_refs(&[
            secret_arg("a", "s", "k"),
            secret_arg("b", "s", "k"),
            arg("c", Some("x")),
        ]);
        assert_eq!(refs.len(), 1);
    }
}
