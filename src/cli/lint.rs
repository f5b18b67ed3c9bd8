//! `sluice lint -f FILE|DIR ...`: offline checks of Rollout and analysis manifests, for CI before
//! merge.
//!
//! Every document of the `sluice.dev` group is checked against the CRD schema generated from the
//! API types (unknown fields, types, required fields, enums), then by the rules the controller
//! applies: `validate_rollout_spec`, metric limits, conditions compiled, PromQL parsed, and every
//! template a Rollout references present among the files (or named with `--external-template`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::analysis::accounting::MetricLimits;
use crate::analysis::condition::{Condition, ConditionError};
use crate::api::analysis::{
    AnalysisRun, AnalysisTemplate, AnalysisTemplateSpec, ClusterAnalysisTemplate, Metric,
};
use crate::api::rollout::{Rollout, RolloutAnalysis};
use crate::api::validation::validate_rollout_spec;

use super::Output;
use super::yaml_lines::{line_of, split_documents};

/// Options of `lint`.
#[derive(Args, Debug)]
pub struct LintArgs {
    /// Files or directories (`*.yaml`, `*.yml`, recursively) to check.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// A template that lives outside the given files (`NAME` for an AnalysisTemplate,
    /// `cluster/NAME` for a ClusterAnalysisTemplate); may be repeated.
    #[arg(long = "external-template", value_name = "NAME")]
    pub external_templates: Vec<String>,
    /// Output format (`json` for tools).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct Finding {
    /// File, as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// Field path (`spec.strategy.canary.steps[2].setWeight`); empty for the whole document.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.field, self.message
            )
        }
    }
}

/// What `lint -o json` prints. Field names are stable.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Sluice objects checked.
    pub objects: usize,
    /// Problems, by file and line.
    pub findings: Vec<Finding>,
}

/// A document being checked: where it is, for line numbers.
struct Doc<'a> {
    file: &'a str,
    text: &'a str,
    first_line: usize,
}

impl Doc<'_> {
    fn finding(&self, field: &str, message: impl Into<String>) -> Finding {
        // Fields inside a metric are reported with the metric's path; the line search falls
        // back to the deepest ancestor present.
        let line = line_of(self.text, field)
            .or_else(|| line_of(self.text, "kind"))
            .unwrap_or(1);
        Finding {
            file: self.file.to_string(),
            line: self.first_line + line - 1,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// A reference from a Rollout to a template, to resolve after every file is read.
struct Reference {
    finding_at: Finding,
    name: String,
    cluster: bool,
    args: Vec<String>,
    /// Namespace of the referring object, when its manifest says.
    namespace: Option<String>,
    /// References of one analysis share a group: their templates are merged into one run.
    group: String,
}

/// What a reference needs to know about a template.
struct TemplateInfo {
    /// Declared arguments without a value: the analysis must pass them.
    required: Vec<String>,
    /// Metric names.
    metrics: Vec<String>,
    /// Namespace, when the manifest says.
    namespace: Option<String>,
}

/// Templates found in the files, by name.
#[derive(Default)]
struct Templates {
    namespaced: BTreeMap<String, Vec<TemplateInfo>>,
    cluster: BTreeMap<String, TemplateInfo>,
}

impl Templates {
    fn find(&self, r: &Reference) -> Option<&TemplateInfo> {
        if r.cluster {
            return self.cluster.get(&r.name);
        }
        // A manifest without a namespace is applied to whatever namespace is current: it may
        // be the same one.
        self.namespaced
            .get(&r.name)?
            .iter()
            .find(|t| t.namespace.is_none() || r.namespace.is_none() || t.namespace == r.namespace)
    }
}

fn template_info(spec: &AnalysisTemplateSpec, namespace: Option<String>) -> TemplateInfo {
    TemplateInfo {
        required: required_args(spec),
        metrics: spec.metrics.iter().map(|m| m.name.clone()).collect(),
        namespace,
    }
}

/// Expands directories into their YAML files, sorted, so output order is stable.
pub fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            while let Some(dir) = stack.pop() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .collect();
                entries.sort();
                for e in entries {
                    if e.is_dir() {
                        stack.push(e);
                    } else if matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
                    {
                        out.push(e);
                    }
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Lints files read from disk.
pub fn lint_paths(paths: &[PathBuf], external: &[String]) -> anyhow::Result<Report> {
    let files = expand(paths)?;
    let mut sources = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        sources.push((f.display().to_string(), text));
    }
    Ok(lint_sources(&sources, external))
}

/// Lints `(file name, text)` pairs together (references resolve across them).
pub fn lint_sources(sources: &[(String, String)], external: &[String]) -> Report {
    let mut findings = Vec::new();
    let mut references = Vec::new();
    let mut templates = Templates::default();
    let mut objects = 0;
    for (file, text) in sources {
        for d in split_documents(text) {
            let doc = Doc {
                file,
                text: &d.text,
                first_line: d.first_line,
            };
            let value: Value = match serde_yaml::from_str(&d.text) {
                Ok(v) => v,
                Err(e) => {
                    let line = e.location().map_or(1, |l| l.line());
                    findings.push(Finding {
                        file: file.clone(),
                        line: d.first_line + line - 1,
                        field: String::new(),
                        message: format!("not valid YAML: {e}"),
                    });
                    continue;
                }
            };
            if lint_document(&doc, &value, &mut findings, &mut references, &mut templates) {
                objects += 1;
            }
        }
    }
    // Metric name -> template, per analysis: the templates of one analysis become one run.
    let mut merged: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in references {
        let kind = if r.cluster {
            "ClusterAnalysisTemplate"
        } else {
            "AnalysisTemplate"
        };
        let external_name = if r.cluster {
            format!("cluster/{}", r.name)
        } else {
            r.name.clone()
        };
        match templates.find(&r) {
            Some(info) => {
                for arg in &info.required {
                    if !r.args.contains(arg) {
                        findings.push(Finding {
                            message: format!(
                                "{kind} \"{}\" needs argument \"{arg}\", which this analysis does not pass",
                                r.name
                            ),
                            ..r.finding_at.clone()
                        });
                    }
                }
                let seen = merged.entry(r.group.clone()).or_default();
                for m in &info.metrics {
                    if let Some(other) = seen.get(m).filter(|o| **o != r.name) {
                        findings.push(Finding {
                            message: format!(
                                "metric \"{m}\" is also in template \"{other}\"; the templates of one \
                                 analysis are merged into one run, where metric names must differ"
                            ),
                            ..r.finding_at.clone()
                        });
                    } else {
                        seen.insert(m.clone(), r.name.clone());
                    }
                }
            }
            None if external.contains(&external_name) => {}
            None => findings.push(Finding {
                message: format!(
                    "{kind} \"{}\" is not among the linted files{}; add its file, or pass \
                     --external-template {external_name} if it lives elsewhere",
                    r.name,
                    match (&r.namespace, r.cluster) {
                        (Some(ns), false) => format!(" (in namespace {ns})"),
                        _ => String::new(),
                    }
                ),
                ..r.finding_at
            }),
        }
    }
    findings.sort();
    findings.dedup();
    Report {
        files: sources.len(),
        objects,
        findings,
    }
}

/// The generated CRD schema of a kind, as JSON.
fn schema_of(kind: &str) -> Option<Value> {
    crate::crdgen::all().into_iter().find_map(|(_, crd)| {
        if crd.spec.names.kind != kind {
            return None;
        }
        let v = serde_json::to_value(
            &crd.spec
                .versions
                .first()?
                .schema
                .as_ref()?
                .open_api_v3_schema,
        )
        .ok()?;
        Some(v)
    })
}

/// Checks one document; returns true when it was a Sluice object.
fn lint_document(
    doc: &Doc<'_>,
    value: &Value,
    findings: &mut Vec<Finding>,
    references: &mut Vec<Reference>,
    templates: &mut Templates,
) -> bool {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    const KINDS: [&str; 4] = [
        "Rollout",
        "AnalysisTemplate",
        "ClusterAnalysisTemplate",
        "AnalysisRun",
    ];
    if api_version.starts_with("argoproj.io/") && (KINDS.contains(&kind) || kind == "Experiment") {
        findings.push(doc.finding(
            "apiVersion",
            format!(
                "{api_version} is Argo Rollouts' API; Sluice reads sluice.dev/v1alpha1 \
                 (`sluice convert -f FILE` converts and reports what cannot carry over)"
            ),
        ));
        return false;
    }
    let Some(group_version) = api_version.strip_prefix("sluice.dev/") else {
        // Services, Ingresses and the like are not ours to check.
        return false;
    };
    if group_version != "v1alpha1" {
        findings.push(doc.finding(
            "apiVersion",
            format!("unknown version {api_version}; Sluice serves sluice.dev/v1alpha1"),
        ));
        return true;
    }
    let Some(schema) = schema_of(kind) else {
        findings.push(doc.finding(
            "kind",
            format!(
                "unknown kind \"{kind}\" (sluice.dev kinds: {})",
                KINDS.join(", ")
            ),
        ));
        return true;
    };
    let before = findings.len();
    if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                continue;
            }
            match schema.pointer(&format!("/properties/{k}")) {
                Some(s) => check_schema(doc, v, s, k, findings),
                None => findings.push(doc.finding(k, format!("unknown field \"{k}\""))),
            }
        }
    }
    if value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && value.pointer("/metadata/generateName").is_none()
    {
        findings.push(doc.finding("metadata.name", "required field is missing"));
    }
    if findings.len() > before {
        // The typed checks below would only repeat schema errors in vaguer words.
        return true;
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    match kind {
        "Rollout" => match serde_json::from_value::<Rollout>(value.clone()) {
            Ok(ro) => lint_rollout(doc, &ro, findings, references),
            Err(e) => findings.push(doc.finding("spec", format!("does not decode: {e}"))),
        },
        "AnalysisTemplate" => match serde_json::from_value::<AnalysisTemplate>(value.clone()) {
            Ok(t) => {
                lint_template(doc, &t.spec, "spec", &namespace, findings, references);
                templates
                    .namespaced
                    .entry(name)
                    .or_default()
                    .push(template_info(&t.spec, namespace.clone()));
            }
            Err(e) => findings.push(doc.finding("spec", format!("does not decode: {e}"))),
        },
        "ClusterAnalysisTemplate" => {
            match serde_json::from_value::<ClusterAnalysisTemplate>(value.clone()) {
                Ok(t) => {
                    lint_template(doc, &t.spec.template, "spec", &None, findings, references);
                    templates
                        .cluster
                        .insert(name, template_info(&t.spec.template, None));
                }
                Err(e) => findings.push(doc.finding("spec", format!("does not decode: {e}"))),
            }
        }
        "AnalysisRun" => match serde_json::from_value::<AnalysisRun>(value.clone()) {
            Ok(run) => {
                let spec = AnalysisTemplateSpec {
                    metrics: run.spec.metrics.clone(),
                    args: run.spec.args.clone(),
                    dry_run: run.spec.dry_run.clone(),
                    measurement_retention: run.spec.measurement_retention.clone(),
                    templates: Vec::new(),
                };
                lint_template(doc, &spec, "spec", &namespace, findings, references);
            }
            Err(e) => findings.push(doc.finding("spec", format!("does not decode: {e}"))),
        },
        _ => {}
    }
    true
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Structural schema check: unknown fields, types, required fields, enums.
fn check_schema(doc: &Doc<'_>, v: &Value, schema: &Value, path: &str, out: &mut Vec<Finding>) {
    if v.is_null() {
        // `key:` with no value: the API server drops it like an absent field.
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            out.push(doc.finding(
                path,
                format!("must be an integer or a string, got {}", type_name(v)),
            ));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !ok {
        out.push(doc.finding(
            path,
            format!(
                "must be {} {}, got {}",
                if ty == Some("integer") || ty == Some("array") || ty == Some("object") {
                    "an"
                } else {
                    "a"
                },
                ty.unwrap_or("?"),
                type_name(v)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        out.push(doc.finding(path, format!("must be one of {}, got {v}", list.join(", "))));
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve =
                schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            for (k, child) in map {
                let child_path = format!("{path}.{k}");
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) => check_schema(doc, child, s, &child_path, out),
                    (None, Some(s)) => check_schema(doc, child, s, &child_path, out),
                    (None, None) if preserve || props.is_none() => {}
                    (None, None) => {
                        out.push(doc.finding(&child_path, format!("unknown field \"{k}\"")))
                    }
                }
            }
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = req.as_str()
                    && !map.contains_key(r)
                {
                    out.push(doc.finding(&format!("{path}.{r}"), "required field is missing"));
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_schema(doc, item, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn analysis_refs(
    doc: &Doc<'_>,
    analysis: &RolloutAnalysis,
    field: &str,
    namespace: &Option<String>,
    references: &mut Vec<Reference>,
) {
    let args: Vec<String> = analysis.args.iter().map(|a| a.name.clone()).collect();
    for (j, t) in analysis.templates.iter().enumerate() {
        references.push(Reference {
            finding_at: doc.finding(&format!("{field}.templates[{j}].templateName"), ""),
            name: t.template_name.clone(),
            cluster: t.cluster_scope,
            args: args.clone(),
            namespace: namespace.clone(),
            group: format!("{}:{}:{field}", doc.file, doc.first_line),
        });
    }
}

fn lint_rollout(
    doc: &Doc<'_>,
    ro: &Rollout,
    findings: &mut Vec<Finding>,
    references: &mut Vec<Reference>,
) {
    for e in validate_rollout_spec(&ro.spec) {
        findings.push(doc.finding(&e.field, e.message));
    }
    if let Some(canary) = &ro.spec.strategy.canary {
        for (i, step) in canary.steps.iter().enumerate() {
            if let Some(a) = &step.analysis {
                analysis_refs(
                    doc,
                    a,
                    &format!("spec.strategy.canary.steps[{i}].analysis"),
                    &ro.metadata.namespace,
                    references,
                );
            }
        }
        if let Some(bg) = &canary.analysis {
            analysis_refs(
                doc,
                &bg.analysis,
                "spec.strategy.canary.analysis",
                &ro.metadata.namespace,
                references,
            );
        }
    }
}

/// Arguments a template declares without a value: the Rollout must pass them.
fn required_args(spec: &AnalysisTemplateSpec) -> Vec<String> {
    spec.args
        .iter()
        .filter(|a| a.value.is_none() && a.value_from.is_none())
        .map(|a| a.name.clone())
        .collect()
}

/// Supported and known metric providers (Argo Rollouts' list), for a precise message.
const KNOWN_PROVIDERS: [&str; 12] = [
    "prometheus",
    "kayenta",
    "web",
    "datadog",
    "wavefront",
    "newRelic",
    "job",
    "cloudWatch",
    "graphite",
    "influxdb",
    "skywalking",
    "plugin",
];

/// Replaces `{{args.NAME}}` with the template's default when it has one, else with a stand-in
/// that keeps the surrounding syntax valid: a duration inside `[...]` (PromQL ranges), a word
/// inside quotes, a number elsewhere. Unknown placeholders are reported.
fn substitute(
    text: &str,
    defaults: &BTreeMap<String, Option<String>>,
    problems: &mut Vec<String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..open]);
        let tag = rest[open + 2..open + 2 + close].trim();
        let Some(name) = tag.strip_prefix("args.") else {
            problems.push(format!(
                "unknown placeholder {{{{{tag}}}}} (only {{{{args.NAME}}}} is supported)"
            ));
            out.push('1');
            rest = &rest[open + 2 + close + 2..];
            continue;
        };
        let value = match defaults.get(name) {
            Some(Some(v)) => v.clone(),
            // Undeclared: reported, then stood in for so the other checks still run.
            None | Some(None) => {
                if !defaults.contains_key(name) {
                    problems.push(format!(
                        "{{{{{tag}}}}} uses argument \"{name}\", which the template does not declare in spec.args"
                    ));
                }
                let quotes = out.matches('"').count() + out.matches('\'').count();
                if out.trim_end().ends_with('[') {
                    "5m".to_string()
                } else if quotes % 2 == 1 {
                    "x".to_string()
                } else {
                    "1".to_string()
                }
            }
        };
        out.push_str(&value);
        rest = &rest[open + 2 + close + 2..];
    }
    out.push_str(rest);
    out
}

fn substitute_all(
    v: &mut Value,
    defaults: &BTreeMap<String, Option<String>>,
    problems: &mut Vec<String>,
) {
    match v {
        Value::String(s) => *s = substitute(s, defaults, problems),
        Value::Array(a) => {
            for x in a {
                substitute_all(x, defaults, problems);
            }
        }
        Value::Object(o) => {
            for x in o.values_mut() {
                substitute_all(x, defaults, problems);
            }
        }
        _ => {}
    }
}

fn lint_template(
    doc: &Doc<'_>,
    spec: &AnalysisTemplateSpec,
    base: &str,
    namespace: &Option<String>,
    findings: &mut Vec<Finding>,
    references: &mut Vec<Reference>,
) {
    if spec.metrics.is_empty() && spec.templates.is_empty() {
        findings.push(doc.finding(
            &format!("{base}.metrics"),
            "at least one metric is required",
        ));
    }
    // Declared arguments, with their default when the template gives one.
    let defaults: BTreeMap<String, Option<String>> = spec
        .args
        .iter()
        .map(|a| (a.name.clone(), a.value.clone()))
        .collect();
    let names: Vec<&str> = spec.metrics.iter().map(|m| m.name.as_str()).collect();
    for (i, m) in spec.metrics.iter().enumerate() {
        let field = format!("{base}.metrics[{i}]");
        if m.name.is_empty() {
            findings.push(doc.finding(&format!("{field}.name"), "must not be empty"));
        } else if names[..i].contains(&m.name.as_str()) {
            findings.push(doc.finding(
                &format!("{field}.name"),
                format!("two metrics have the same name \"{}\"", m.name),
            ));
        }
        lint_metric(doc, m, &field, &defaults, findings);
    }
    for (list, label) in [
        (
            spec.dry_run
                .iter()
                .map(|d| d.metric_name.as_str())
                .collect::<Vec<_>>(),
            "dryRun",
        ),
        (
            spec.measurement_retention
                .iter()
                .map(|d| d.metric_name.as_str())
                .collect(),
            "measurementRetention",
        ),
    ] {
        for (i, pattern) in list.iter().enumerate() {
            let field = format!("{base}.{label}[{i}].metricName");
            match regex::Regex::new(pattern) {
                Err(e) => findings
                    .push(doc.finding(&field, format!("not a valid regular expression: {e}"))),
                // Templates that include others get metrics from them: only check alone-standing ones.
                Ok(re) if spec.templates.is_empty() && !names.iter().any(|n| re.is_match(n)) => {
                    findings.push(doc.finding(&field, format!("\"{pattern}\" matches no metric")))
                }
                Ok(_) => {}
            }
        }
    }
    for (i, r) in spec.measurement_retention.iter().enumerate() {
        if r.limit < 1 {
            findings.push(doc.finding(
                &format!("{base}.measurementRetention[{i}].limit"),
                format!("must be at least 1, got {}", r.limit),
            ));
        }
    }
    for (j, t) in spec.templates.iter().enumerate() {
        references.push(Reference {
            finding_at: doc.finding(&format!("{base}.templates[{j}].templateName"), ""),
            name: t.template_name.clone(),
            cluster: t.cluster_scope,
            args: spec.args.iter().map(|a| a.name.clone()).collect(),
            namespace: namespace.clone(),
            group: format!("{}:{}:{base}", doc.file, doc.first_line),
        });
    }
}

fn lint_metric(
    doc: &Doc<'_>,
    raw: &Metric,
    field: &str,
    defaults: &BTreeMap<String, Option<String>>,
    findings: &mut Vec<Finding>,
) {
    let mut others: Vec<&str> = raw
        .provider
        .unsupported
        .keys()
        .map(String::as_str)
        .collect();
    others.sort_unstable();
    match (&raw.provider.prometheus, others.as_slice()) {
        (Some(_), []) => {}
        (None, []) => {
            findings.push(doc.finding(
                &format!("{field}.provider"),
                "no provider is set (Sluice supports: prometheus)",
            ));
            return;
        }
        (None, [one]) if KNOWN_PROVIDERS.contains(one) => {
            findings.push(doc.finding(
                &format!("{field}.provider.{one}"),
                format!("the {one} provider is not supported by Sluice (supported: prometheus)"),
            ));
            return;
        }
        (None, [one]) => {
            findings.push(doc.finding(
                &format!("{field}.provider.{one}"),
                "unknown provider (Sluice supports: prometheus)",
            ));
            return;
        }
        (_, many) => {
            findings.push(doc.finding(
                &format!("{field}.provider"),
                format!(
                    "exactly one provider must be set, found {}{}",
                    if raw.provider.prometheus.is_some() {
                        "prometheus, "
                    } else {
                        ""
                    },
                    many.join(", ")
                ),
            ));
            return;
        }
    }
    let mut value = match serde_json::to_value(raw) {
        Ok(v) => v,
        Err(e) => {
            findings.push(doc.finding(field, format!("does not encode: {e}")));
            return;
        }
    };
    let mut problems = Vec::new();
    substitute_all(&mut value, defaults, &mut problems);
    problems.dedup();
    for p in problems {
        findings.push(doc.finding(field, p));
    }
    let m: Metric = match serde_json::from_value(value) {
        Ok(m) => m,
        Err(e) => {
            findings.push(doc.finding(field, format!("after argument substitution: {e}")));
            return;
        }
    };
    if let Err(e) = MetricLimits::from_metric(&m) {
        let limit_field = [
            "count",
            "failureLimit",
            "inconclusiveLimit",
            "consecutiveErrorLimit",
            "consecutiveSuccessLimit",
            "consecutiveFailureLimit",
            "interval",
            "initialDelay",
        ]
        .into_iter()
        .find(|f| e.message.starts_with(f))
        .map_or_else(|| field.to_string(), |f| format!("{field}.{f}"));
        findings.push(doc.finding(&limit_field, e.message));
    }
    for (cond, name) in [
        (&m.success_condition, "successCondition"),
        (&m.failure_condition, "failureCondition"),
    ] {
        if let Some(c) = cond.as_deref().filter(|c| !c.trim().is_empty())
            && let Err(e) = Condition::compile(c)
        {
            let message = match e {
                ConditionError::Syntax {
                    expression,
                    message,
                } => format!(
                    "`{expression}` is not a valid expression: {}",
                    tidy_parser_message(&message)
                ),
                other => other.to_string(),
            };
            findings.push(doc.finding(&format!("{field}.{name}"), message));
        }
    }
    if let Some(p) = &m.provider.prometheus {
        if let Err(e) = promql_parser::parser::parse(&p.query) {
            findings.push(doc.finding(
                &format!("{field}.provider.prometheus.query"),
                format!(
                    "not valid PromQL: {}",
                    e.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
            ));
        }
        if let Some(address) = &p.address
            && !address.trim().is_empty()
        {
            match url::Url::parse(address) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => findings.push(doc.finding(
                    &format!("{field}.provider.prometheus.address"),
                    format!("\"{address}\" is not an http(s) URL with a host"),
                )),
            }
        }
        if let Some(t) = p.timeout
            && t < 0
        {
            findings.push(doc.finding(
                &format!("{field}.provider.prometheus.timeout"),
                format!("must not be negative, got {t}"),
            ));
        }
        if let Some(auth) = &p.authentication {
            for k in auth.unsupported.keys() {
                findings.push(doc.finding(
                    &format!("{field}.provider.prometheus.authentication.{k}"),
                    format!("{k} authentication is not supported by Sluice (supported: basicAuth)"),
                ));
            }
        }
    }
}

/// The expression parser reports a multi-line picture (`--> 1:13`, the source, a caret, `= expected
/// ...`); one line is wanted: "at column 13: expected ...".
fn tidy_parser_message(message: &str) -> String {
    let column = message
        .split("-->")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pos| pos.split(':').nth(1))
        .map(str::to_string);
    let expected = message.rsplit_once("= ").map(|(_, e)| e.trim().to_string());
    match (column, expected) {
        (Some(c), Some(e)) => format!("at column {c}: {e}"),
        _ => message.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Runs `lint`: prints findings, exits 1 when there is any.
pub fn run(args: &LintArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    let report = lint_paths(&args.files, &args.external_templates)?;
    match args.output {
        Output::Text => {
            for f in &report.findings {
                writeln!(out, "{f}")?;
            }
            if report.findings.is_empty() {
                writeln!(
                    out,
                    "ok: {} objects in {} files, no problems",
                    report.objects, report.files
                )?;
            } else {
                let n = report.findings.len();
                writeln!(
                    out,
                    "{n} {} in {} objects of {} files",
                    if n == 1 { "problem" } else { "problems" },
                    report.objects,
                    report.files
                )?;
            }
        }
        other => write!(out, "{}", super::render::structured(&report, other)?)?,
    }
    Ok(if report.findings.is_empty() { 0 } else { 1 })
}

/// True when `path` looks like a YAML file.
pub fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|x| x.to_str()),
        Some("yaml" | "yml")
    )
}
