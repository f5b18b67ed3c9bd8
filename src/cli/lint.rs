//! `sluice lint -f FILE|DIR ...`: offline checks of Rollout and analysis manifests, for CI before
//! merge.
//!
//! Every document of the `sluice.dev` group is checked against the CRD schema generated from the
//! API types (`api::schema_check`), then by the very functions the controller applies:
//! `api::validation` for Rollouts, `analysis::validation` and `analysis::args` for analysis
//! specs. What is lint's own is resolving references across files: every template a Rollout
//! references present among the files (or named with `--external-template`), its required
//! arguments passed, and no metric name twice among the templates of one analysis.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::analysis::args::{PlaceholderError, missing_args, substitute_declared};
use crate::analysis::validation::{MetricError, check_metric, check_provider, check_spec};
use crate::api::analysis::{
    AnalysisRun, AnalysisTemplate, AnalysisTemplateRef, AnalysisTemplateSpec, Argument,
    ClusterAnalysisTemplate, Metric,
};
use crate::api::rollout::{AnalysisRunArgument, Rollout, RolloutAnalysis};
use crate::api::schema_check::check_object;
use crate::api::validation::{FieldError, validate_rollout_spec};
use crate::traffic::gateway_api::route_inputs;
use crate::traffic::gateway_route::{RouteInputs, check_route};
use crate::traffic::{RouteKind, TrafficError};

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

    fn field_error(&self, e: &FieldError) -> Finding {
        self.finding(&e.field, e.message.clone())
    }

    /// A finding about a metric at `metric` (`spec.metrics[1]`), at the field the error names.
    fn metric_error(&self, metric: &str, e: &MetricError) -> Finding {
        let inner = e.field();
        let field = if inner.is_empty() {
            metric.to_string()
        } else {
            format!("{metric}.{inner}")
        };
        self.finding(&field, e.to_string())
    }
}

/// A reference from a Rollout to a template, to resolve after every file is read.
struct Reference {
    finding_at: Finding,
    name: String,
    cluster: bool,
    /// What the referrer passes.
    args: Vec<Argument>,
    /// The literal values among them (a Rollout's `value`s), by argument name.
    literal: BTreeMap<String, String>,
    /// Namespace of the referring object, when its manifest says.
    namespace: Option<String>,
    /// References of one analysis share a group: their templates are merged into one run.
    group: String,
}

/// What a reference needs to know about a template.
struct TemplateInfo {
    /// Declared arguments: those without a value must be passed.
    args: Vec<Argument>,
    /// Metric names.
    metrics: Vec<String>,
    /// The metrics, to check with the values a Rollout passes.
    metric_specs: Vec<Metric>,
    /// Namespace, when the manifest says.
    namespace: Option<String>,
}

/// Gateway API routes found in the files, and the Rollouts' references to them (checked once
/// every file is read, with the same rules the router applies).
#[derive(Default)]
struct GatewayRoutes {
    /// Route manifests: kind, namespace when the manifest says, name, the object.
    defined: Vec<(RouteKind, Option<String>, String, Value)>,
    /// Where each reference is, and what the router would look for.
    references: Vec<(Finding, RouteInputs)>,
}

impl GatewayRoutes {
    /// Each referenced route must be among the files when they define any route; one that is
    /// must have a rule weighting both Services.
    fn check(self, findings: &mut Vec<Finding>) {
        if self.defined.is_empty() {
            return;
        }
        for (at, route) in self.references {
            let found = self.defined.iter().find(|(kind, ns, name, _)| {
                *kind == route.kind
                    && *name == route.name
                    && (ns.is_none()
                        || route.namespace.is_empty()
                        || ns.as_deref() == Some(route.namespace.as_str()))
            });
            let message = match found {
                Some((_, _, _, value)) => match check_route(value, &route) {
                    Ok(()) => continue,
                    Err(TrafficError::InvalidReference { message, .. }) => message,
                    Err(e) => e.to_string(),
                },
                None => format!(
                    "{} \"{}\" is not among the linted files, which define other Gateway API \
                     routes; add its file",
                    route.kind.kind(),
                    route.name
                ),
            };
            findings.push(Finding { message, ..at });
        }
    }
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
        args: spec.args.clone(),
        metrics: spec.metrics.iter().map(|m| m.name.clone()).collect(),
        metric_specs: spec.metrics.clone(),
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

/// The largest file `lint` reads. Manifests in a repository are kilobytes; a file this large is
/// a mistake or an attack, and parsing it would cost seconds and hundreds of megabytes.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// The largest document `lint` parses: the Kubernetes API server refuses a request body over
/// 3 MiB, so no object larger than this can ever be applied.
pub const MAX_DOCUMENT_BYTES: usize = 3 * 1024 * 1024;

/// Deeper flow nesting (`[[[...`, `{a: {a: ...`) than this is refused before parsing. The YAML
/// deserializer refuses more than 128 levels anyway, but only after the parser has read the whole
/// document, which takes time quadratic in the depth: 100,000 `[` took minutes.
pub const MAX_FLOW_DEPTH: usize = 128;

/// The 1-based line (within `text`) where flow nesting first goes deeper than
/// [`MAX_FLOW_DEPTH`]. Brackets inside quotes count too: a manifest with more than a hundred
/// unmatched brackets in its strings is not one anybody writes.
fn too_deep_at(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    for b in text.bytes() {
        match b {
            b'\n' => line += 1,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn too_large_message(what: &str, size: usize, limit: usize) -> String {
    let mib = |n: usize| n as f64 / (1024.0 * 1024.0);
    format!(
        "{what} is {:.1} MiB, over the limit of {:.0} MiB; not read",
        mib(size),
        mib(limit)
    )
}

/// Reads `input` to text, but never more than one byte past [`MAX_FILE_BYTES`]: a huge file is
/// then refused by [`refuse_file`] without having been read whole.
pub fn read_bounded(input: impl std::io::Read) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    input
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Why a whole file is not parsed at all: it is over [`MAX_FILE_BYTES`].
pub fn refuse_file(text: &str) -> Option<String> {
    (text.len() > MAX_FILE_BYTES).then(|| too_large_message("the file", text.len(), MAX_FILE_BYTES))
}

/// Why one YAML document (starting at line `first_line` of its file) is not parsed: over
/// [`MAX_DOCUMENT_BYTES`], or nested deeper than [`MAX_FLOW_DEPTH`]. The line to report and
/// the message. Both are checked in linear time, before the parser sees the text.
pub fn refuse_document(text: &str, first_line: usize) -> Option<(usize, String)> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Some((
            first_line,
            too_large_message("this document", text.len(), MAX_DOCUMENT_BYTES),
        ));
    }
    too_deep_at(text).map(|line| {
        (
            first_line + line - 1,
            format!("not valid YAML: nested deeper than {MAX_FLOW_DEPTH} levels; not read"),
        )
    })
}

/// Lints files read from disk.
pub fn lint_paths(paths: &[PathBuf], external: &[String]) -> anyhow::Result<Report> {
    let files = expand(paths)?;
    let mut sources = Vec::new();
    for f in &files {
        // Never the whole of a huge file: `lint_sources` then reports it as too large.
        let text = std::fs::File::open(f)
            .and_then(read_bounded)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        sources.push((f.display().to_string(), text));
    }
    Ok(lint_sources(&sources, external))
}

/// Lints `(file name, text)` pairs together (references resolve across them).
pub fn lint_sources(sources: &[(String, String)], external: &[String]) -> Report {
    let mut findings = Vec::new();
    let mut references = Vec::new();
    let mut templates = Templates::default();
    let mut gateway = GatewayRoutes::default();
    let mut objects = 0;
    let mut notifications = Notifications::default();
    for (file, text) in sources {
        if let Some(message) = refuse_file(text) {
            findings.push(Finding {
                file: file.clone(),
                line: 1,
                field: String::new(),
                message,
            });
            continue;
        }
        for d in split_documents(text) {
            if let Some((line, message)) = refuse_document(&d.text, d.first_line) {
                findings.push(Finding {
                    file: file.clone(),
                    line,
                    field: String::new(),
                    message,
                });
                continue;
            }
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
            notifications.collect(&doc, &value);
            if lint_document(
                &doc,
                &value,
                &mut findings,
                &mut references,
                &mut templates,
                &mut gateway,
            ) {
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
                for problem in checks_with_passed_values(&r, info) {
                    findings.push(Finding {
                        message: format!(
                            "{kind} \"{}\" with the arguments passed here: {problem}",
                            r.name
                        ),
                        ..r.finding_at.clone()
                    });
                }
                for arg in missing_args(&info.args, &r.args) {
                    findings.push(Finding {
                        message: format!(
                            "{kind} \"{}\" needs argument \"{arg}\", which this analysis does not pass",
                            r.name
                        ),
                        ..r.finding_at.clone()
                    });
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
    notifications.check(&mut findings);
    gateway.check(&mut findings);
    findings.sort();
    findings.dedup();
    Report {
        files: sources.len(),
        objects,
        findings,
    }
}

/// The generated CRD schema of a kind, as JSON. Generated once: generating every CRD again for
/// each document made a file of many small documents take seconds.
fn schema_of(kind: &str) -> Option<&'static Value> {
    static SCHEMAS: std::sync::OnceLock<BTreeMap<String, Value>> = std::sync::OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            crate::crdgen::all()
                .into_iter()
                .filter_map(|(_, crd)| {
                    let v = serde_json::to_value(
                        &crd.spec
                            .versions
                            .first()?
                            .schema
                            .as_ref()?
                            .open_api_v3_schema,
                    )
                    .ok()?;
                    Some((crd.spec.names.kind, v))
                })
                .collect()
        })
        .get(kind)
}

/// Checks one document; returns true when it was a Sluice object.
fn lint_document(
    doc: &Doc<'_>,
    value: &Value,
    findings: &mut Vec<Finding>,
    references: &mut Vec<Reference>,
    templates: &mut Templates,
    gateway: &mut GatewayRoutes,
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
    if api_version.starts_with("gateway.networking.k8s.io/")
        && let Some(route_kind) = RouteKind::from_kind(kind)
    {
        gateway.defined.push((
            route_kind,
            value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string),
            value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            value.clone(),
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
    if kind == "Experiment" {
        findings.push(doc.finding(
            "kind",
            "the Experiment kind is not supported by Sluice; run the candidate as a canary with \
             analysis steps (Prometheus metrics) instead",
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
    findings.extend(
        check_object(value, schema)
            .iter()
            .map(|e| doc.field_error(e)),
    );
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    // A template with problems of its own is still among the files: the Rollouts referencing it
    // are not told it is missing.
    let unreadable = || TemplateInfo {
        args: Vec::new(),
        metrics: Vec::new(),
        metric_specs: Vec::new(),
        namespace: namespace.clone(),
    };
    if findings.len() > before {
        match kind {
            "AnalysisTemplate" => templates
                .namespaced
                .entry(name)
                .or_default()
                .push(unreadable()),
            "ClusterAnalysisTemplate" => {
                templates.cluster.insert(name, unreadable());
            }
            _ => {}
        }
        // The typed checks below would only repeat schema errors in vaguer words.
        return true;
    }
    match kind {
        "Rollout" => match serde_json::from_value::<Rollout>(value.clone()) {
            Ok(ro) => {
                lint_rollout(doc, &ro, findings, references);
                let gateway_api = ro
                    .spec
                    .strategy
                    .canary
                    .as_ref()
                    .and_then(|c| c.traffic_routing.as_ref())
                    .and_then(|t| t.gateway_api_config().ok().flatten());
                // A manifest without a namespace is applied to the current one, which may well
                // be the routes' (Argo's plugin examples name it): only namespaces both known
                // and different make the routes cross-namespace. "" stands for an unknown one
                // and matches any route manifest's namespace.
                let ns = ro
                    .metadata
                    .namespace
                    .clone()
                    .or_else(|| gateway_api.as_ref().and_then(|(_, g)| g.namespace.clone()))
                    .unwrap_or_default();
                if gateway_api.is_some()
                    && let Ok(routes) = route_inputs(&ro, &ns)
                {
                    for route in routes {
                        gateway
                            .references
                            .push((doc.finding(&route.field, ""), route));
                    }
                }
            }
            Err(e) => findings.push(doc.finding("spec", format!("does not decode: {e}"))),
        },
        "AnalysisTemplate" => match serde_json::from_value::<AnalysisTemplate>(value.clone()) {
            Ok(t) => {
                lint_template(doc, &t.spec, &namespace, findings, references);
                templates
                    .namespaced
                    .entry(name)
                    .or_default()
                    .push(template_info(&t.spec, namespace.clone()));
            }
            Err(e) => {
                findings.push(doc.finding("spec", format!("does not decode: {e}")));
                templates
                    .namespaced
                    .entry(name)
                    .or_default()
                    .push(unreadable());
            }
        },
        "ClusterAnalysisTemplate" => {
            match serde_json::from_value::<ClusterAnalysisTemplate>(value.clone()) {
                Ok(t) => {
                    lint_template(doc, &t.spec.template, &None, findings, references);
                    templates
                        .cluster
                        .insert(name, template_info(&t.spec.template, None));
                }
                Err(e) => {
                    findings.push(doc.finding("spec", format!("does not decode: {e}")));
                    templates.cluster.insert(name, unreadable());
                }
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
                lint_template(doc, &spec, &namespace, findings, references);
            }
            Err(e) => findings.push(doc.finding("spec", format!("does not decode: {e}"))),
        },
        _ => {}
    }
    true
}

/// References from `field` (an analysis of a Rollout, or a template including others) to the
/// templates it lists, which become one run, passing `args`.
fn push_references(
    doc: &Doc<'_>,
    field: &str,
    templates: &[AnalysisTemplateRef],
    args: Vec<Argument>,
    literal: BTreeMap<String, String>,
    namespace: &Option<String>,
    references: &mut Vec<Reference>,
) {
    for (j, t) in templates.iter().enumerate() {
        references.push(Reference {
            finding_at: doc.finding(&format!("{field}.templates[{j}].templateName"), ""),
            name: t.template_name.clone(),
            cluster: t.cluster_scope,
            args: args.clone(),
            literal: literal.clone(),
            namespace: namespace.clone(),
            group: format!("{}:{}:{field}", doc.file, doc.first_line),
        });
    }
}

fn analysis_refs(
    doc: &Doc<'_>,
    analysis: &RolloutAnalysis,
    field: &str,
    namespace: &Option<String>,
    references: &mut Vec<Reference>,
) {
    let args = passed_by_rollout(&analysis.args);
    let literal = analysis
        .args
        .iter()
        .filter_map(|a| Some((a.name.clone(), a.value.clone()?)))
        .collect();
    push_references(
        doc,
        field,
        &analysis.templates,
        args,
        literal,
        namespace,
        references,
    );
}

fn lint_rollout(
    doc: &Doc<'_>,
    ro: &Rollout,
    findings: &mut Vec<Finding>,
    references: &mut Vec<Reference>,
) {
    findings.extend(
        validate_rollout_spec(&ro.spec)
            .iter()
            .map(|e| doc.field_error(e)),
    );
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

/// What a Rollout passes, as its templates see it: every argument with a value or a `valueFrom`
/// (the controller resolves those when it creates the run).
fn passed_by_rollout(args: &[AnalysisRunArgument]) -> Vec<Argument> {
    args.iter()
        .map(|a| Argument {
            name: a.name.clone(),
            value: (a.value.is_some() || a.value_from.is_some())
                .then(|| a.value.clone().unwrap_or_default()),
            value_from: None,
        })
        .collect()
}

/// What an including template passes to the templates it includes: its own declared arguments,
/// whatever their value, since the Rollout supplies those of the merged run.
fn passed_on(args: &[Argument]) -> Vec<Argument> {
    args.iter()
        .map(|a| Argument {
            value: Some(a.value.clone().unwrap_or_default()),
            ..a.clone()
        })
        .collect()
}

fn lint_template(
    doc: &Doc<'_>,
    spec: &AnalysisTemplateSpec,
    namespace: &Option<String>,
    findings: &mut Vec<Finding>,
    references: &mut Vec<Reference>,
) {
    let checks = check_spec(
        &spec.metrics,
        &spec.dry_run,
        &spec.measurement_retention,
        !spec.templates.is_empty(),
    );
    findings.extend(
        checks
            .iter()
            .map(|e| doc.finding(&e.field(), e.to_string())),
    );
    for (i, m) in spec.metrics.iter().enumerate() {
        lint_metric(doc, m, &format!("spec.metrics[{i}]"), &spec.args, findings);
    }
    let args = passed_on(&spec.args);
    push_references(
        doc,
        "spec",
        &spec.templates,
        args,
        BTreeMap::new(),
        namespace,
        references,
    );
}

/// The controller's checks of one metric, on the metric with the template's declared defaults
/// (or stand-ins) substituted for its arguments.
fn lint_metric(
    doc: &Doc<'_>,
    raw: &Metric,
    field: &str,
    declared: &[Argument],
    findings: &mut Vec<Finding>,
) {
    if let Err(e) = check_provider(raw) {
        findings.push(doc.metric_error(field, &e));
        return;
    }
    let (problems, checked) = metric_checks(raw, declared);
    for p in &problems {
        findings.push(doc.finding(field, p.to_string()));
    }
    match checked {
        Ok(errors) => findings.extend(errors.iter().map(|e| doc.metric_error(field, e))),
        Err(e) => findings.push(doc.finding(field, format!("after argument substitution: {e}"))),
    }
}

/// The checks of one metric with `declared` substituted for its arguments. Counts, limits and
/// durations that got a stand-in are left to the check with the values a Rollout passes.
fn metric_checks(
    raw: &Metric,
    declared: &[Argument],
) -> (Vec<PlaceholderError>, Result<Vec<MetricError>, String>) {
    let substituted = substitute_declared(raw, declared);
    let checked = substituted
        .metric
        .map(|m| {
            let mut errors = check_metric(&m);
            if substituted.limits_stand_in {
                errors.retain(|e| !matches!(e, MetricError::Limits(_)));
            }
            errors
        })
        .map_err(|e| e.to_string());
    (substituted.problems, checked)
}

/// A template's metrics checked with the literal values a Rollout passes: what the run will
/// measure with. Only what the template alone does not already report.
fn checks_with_passed_values(r: &Reference, info: &TemplateInfo) -> Vec<String> {
    if r.literal.is_empty() {
        return Vec::new();
    }
    let with_values: Vec<Argument> = info
        .args
        .iter()
        .map(|a| match r.literal.get(&a.name) {
            Some(v) => Argument {
                name: a.name.clone(),
                value: Some(v.clone()),
                value_from: None,
            },
            None => a.clone(),
        })
        .collect();
    let mut out = Vec::new();
    for m in &info.metric_specs {
        if check_provider(m).is_err() {
            continue;
        }
        let (_, alone) = metric_checks(m, &info.args);
        let (_, passed) = metric_checks(m, &with_values);
        let alone = alone.unwrap_or_default();
        match passed {
            Ok(errors) => out.extend(
                errors
                    .iter()
                    .filter(|e| !alone.contains(e))
                    .map(|e| format!("metric \"{}\": {}", m.name, e.located())),
            ),
            Err(e) => out.push(format!(
                "metric \"{}\": after argument substitution: {e}",
                m.name
            )),
        }
    }
    out
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

/// Notification subscriptions (Rollout annotations) and the notification ConfigMap, when the
/// linted files hold both: every subscription must name a configured service and a known
/// trigger.
#[derive(Default)]
struct Notifications {
    config: Option<(
        Finding,
        Result<crate::notifications::config::Config, String>,
    )>,
    subscriptions: Vec<(Finding, BTreeMap<String, String>)>,
}

impl Notifications {
    fn collect(&mut self, doc: &Doc<'_>, value: &Value) {
        let kind = value["kind"].as_str().unwrap_or_default();
        if kind == "ConfigMap" && value["metadata"]["name"] == crate::notifications::CONFIG_MAP_NAME
        {
            let data: BTreeMap<String, String> =
                serde_json::from_value(value["data"].clone()).unwrap_or_default();
            let parsed = crate::notifications::config::Config::parse_without_secret(&data)
                .map_err(|e| e.to_string());
            self.config = Some((doc.finding("data", ""), parsed));
        } else if kind == "Rollout" {
            let annotations: BTreeMap<String, String> =
                serde_json::from_value(value["metadata"]["annotations"].clone())
                    .unwrap_or_default();
            let subscribes = annotations.keys().any(|k| {
                crate::notifications::SUBSCRIBE_PREFIXES
                    .iter()
                    .any(|p| k.starts_with(p))
            });
            if subscribes {
                self.subscriptions
                    .push((doc.finding("metadata.annotations", ""), annotations));
            }
        }
    }

    fn check(&self, findings: &mut Vec<Finding>) {
        let Some((at, config)) = &self.config else {
            return;
        };
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                findings.push(Finding {
                    message: format!("ConfigMap {}: {e}", crate::notifications::CONFIG_MAP_NAME),
                    ..at.clone()
                });
                return;
            }
        };
        for (at, annotations) in &self.subscriptions {
            for (annotation, problem) in config.check_subscriptions(annotations) {
                findings.push(Finding {
                    field: format!("metadata.annotations[{annotation}]"),
                    message: problem,
                    ..at.clone()
                });
            }
        }
    }
}
