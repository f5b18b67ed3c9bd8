//! Rollout-side analysis arguments (`spec.strategy.canary.analysis.args`, step analysis args):
//! turning `value`, `valueFrom.podTemplateHashValue` and `valueFrom.fieldRef` into the plain
//! values an AnalysisRun carries. Pure: the caller passes the Rollout (as JSON) and the hashes.

use crate::analysis::args::ArgsError;
use crate::api::analysis::Argument;
use crate::api::rollout::{AnalysisRunArgument, PodTemplateHashValue};

/// Pod-template hashes of the versions a Rollout runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateHashes<'a> {
    /// Hash of the stable version, when there is one.
    pub stable: Option<&'a str>,
    /// Hash of the newest version.
    pub latest: Option<&'a str>,
}

/// Resolves the Rollout's arguments against the Rollout object (`rollout` is it, serialized as
/// JSON) and its pod-template hashes. A `fieldRef` path is read like the downward API for
/// `metadata.*` (`metadata.labels['app']`) and as a plain path otherwise
/// (`spec.template.spec.containers[0].image`).
pub fn resolve_rollout_args(
    args: &[AnalysisRunArgument],
    rollout: &serde_json::Value,
    hashes: TemplateHashes<'_>,
) -> Result<Vec<Argument>, ArgsError> {
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        let value = if let Some(v) = &a.value {
            v.clone()
        } else if let Some(from) = &a.value_from {
            if let Some(which) = from.pod_template_hash_value {
                let (hash, label) = match which {
                    PodTemplateHashValue::Stable => (hashes.stable, "Stable"),
                    PodTemplateHashValue::Latest => (hashes.latest, "Latest"),
                };
                hash.map(str::to_string)
                    .ok_or_else(|| ArgsError::Unresolvable {
                        name: a.name.clone(),
                        reason: format!("there is no {label} pod template hash yet"),
                    })?
            } else if let Some(f) = &from.field_ref {
                field_value(rollout, &f.field_path).ok_or_else(|| ArgsError::Unresolvable {
                    name: a.name.clone(),
                    reason: format!("field {:?} was not found on the Rollout", f.field_path),
                })?
            } else {
                return Err(ArgsError::NotSupplied {
                    name: a.name.clone(),
                });
            }
        } else {
            return Err(ArgsError::NotSupplied {
                name: a.name.clone(),
            });
        };
        out.push(Argument {
            name: a.name.clone(),
            value: Some(value),
            value_from: None,
        });
    }
    Ok(out)
}

/// Reads a field path such as `metadata.labels['app.kubernetes.io/name']` or
/// `spec.template.spec.containers[0].image`. Strings come out as they are; other values as JSON.
pub fn field_value(root: &serde_json::Value, path: &str) -> Option<String> {
    let mut cur = root;
    let mut rest = path.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let key = after[..end].trim();
            cur = if let Some(quoted) = key
                .strip_prefix('\'')
                .and_then(|k| k.strip_suffix('\''))
                .or_else(|| key.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
            {
                cur.get(quoted)?
            } else {
                cur.get(key.parse::<usize>().ok()?)?
            };
            rest = after[end + 1..].trim_start_matches('.');
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            cur = cur.get(&rest[..end])?;
            rest = rest[end..].trim_start_matches('.');
        }
    }
    match cur {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::FieldRef;
    use crate::api::rollout::ArgumentValueFrom;

    fn rollout() -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "checkout", "namespace": "shop",
                         "labels": {"app.kubernetes.io/name": "checkout"}},
            "spec": {"template": {"spec": {"containers": [{"image": "checkout:1.2"}]}}, "replicas": 5}
        })
    }

    fn from(value_from: ArgumentValueFrom) -> AnalysisRunArgument {
        AnalysisRunArgument {
            name: "x".into(),
            value: None,
            value_from: Some(value_from),
        }
    }

    #[test]
    fn field_paths_follow_downward_api_and_plain_paths() {
        let r = rollout();
        assert_eq!(
            field_value(&r, "metadata.name").as_deref(),
            Some("checkout")
        );
        assert_eq!(
            field_value(&r, "metadata.labels['app.kubernetes.io/name']").as_deref(),
            Some("checkout")
        );
        assert_eq!(
            field_value(&r, "spec.template.spec.containers[0].image").as_deref(),
            Some("checkout:1.2")
        );
        assert_eq!(field_value(&r, "spec.replicas").as_deref(), Some("5"));
        assert_eq!(
            field_value(&r, "spec.template.spec.containers[3].image"),
            None
        );
        assert_eq!(field_value(&r, "metadata.labels['missing']"), None);
    }

    #[test]
    fn rollout_args_take_values_hashes_and_fields() {
        let args = vec![
            AnalysisRunArgument {
                name: "service".into(),
                value: Some("checkout".into()),
                value_from: None,
            },
            AnalysisRunArgument {
                name: "canary-hash".into(),
                ..from(ArgumentValueFrom {
                    pod_template_hash_value: Some(PodTemplateHashValue::Latest),
                    field_ref: None,
                })
            },
            AnalysisRunArgument {
                name: "ns".into(),
                ..from(ArgumentValueFrom {
                    pod_template_hash_value: None,
                    field_ref: Some(FieldRef {
                        field_path: "metadata.namespace".into(),
                    }),
                })
            },
        ];
        let hashes = TemplateHashes {
            stable: Some("6d4f"),
            latest: Some("7b9c"),
        };
        let resolved = resolve_rollout_args(&args, &rollout(), hashes).unwrap();
        let values: Vec<_> = resolved
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_deref().unwrap()))
            .collect();
        assert_eq!(
            values,
            [
                ("service", "checkout"),
                ("canary-hash", "7b9c"),
                ("ns", "shop")
            ]
        );
    }

    #[test]
    fn missing_hash_or_field_names_the_argument() {
        let stable = from(ArgumentValueFrom {
            pod_template_hash_value: Some(PodTemplateHashValue::Stable),
            field_ref: None,
        });
        let err = resolve_rollout_args(&[stable], &rollout(), TemplateHashes::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("argument \"x\": there is no Stable pod template hash yet"),
            "{err}"
        );
        let field = from(ArgumentValueFrom {
            pod_template_hash_value: None,
            field_ref: Some(FieldRef {
                field_path: "spec.nope".into(),
            }),
        });
        let err = resolve_rollout_args(&[field], &rollout(), TemplateHashes::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("field \"spec.nope\" was not found on the Rollout"),
            "{err}"
        );
    }
}
