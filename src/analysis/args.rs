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
    #[error("{field}: failed to resolve {{{{{tag}}}}}")]
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
    if let Some(missing) = merged
        .iter()
        .find(|a| a.value.is_none() && a.value_from.is_none())
    {
        return Err(ArgsError::NotSupplied {
            name: missing.name.clone(),
        });
    }
    Ok(merged)
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
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let Some(close) = rest[open + 2..].find("}}") else {
                break;
            };
            out.push_str(&rest[..open]);
            let tag = rest[open + 2..open + 2 + close].trim();
            match tag.strip_prefix("args.") {
                Some(name) => match self.values.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        return Err(ArgsError::Undefined {
                            name: name.to_string(),
                            field: field.to_string(),
                        });
                    }
                },
                None => {
                    return Err(ArgsError::UnknownPlaceholder {
                        tag: tag.to_string(),
                        field: field.to_string(),
                    });
                }
            }
            rest = &rest[open + 2 + close + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `text` with every Secret value replaced by `*****`, for status, Events and logs.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "*****");
        }
        out
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
        self.substitute_json(&mut json, &path)?;
        // The message may quote the substituted text, so it is redacted.
        serde_json::from_value(json).map_err(|e| invalid(self.redact(&e.to_string())))
    }

    fn substitute_json(&self, v: &mut serde_json::Value, path: &str) -> Result<(), ArgsError> {
        match v {
            serde_json::Value::String(s) if s.contains("{{") => {
                *s = self.substitute(s, path)?;
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.substitute_json(item, &format!("{path}[{i}]"))?;
                }
            }
            serde_json::Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    self.substitute_json(item, &format!("{path}.{k}"))?;
                }
            }
            _ => {}
        }
        Ok(())
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
