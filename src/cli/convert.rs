//! `sluice convert -f FILE`: Argo Rollouts manifests (`argoproj.io/v1alpha1`) to Sluice.
//!
//! Sluice keeps Argo's field names, so converting is changing `apiVersion`. What Sluice does not
//! do (experiments, step plugins, blue-green, other traffic routers, other metric providers...)
//! is kept in the output as written, so nothing is silently lost, and reported: the controller
//! would refuse it with an `InvalidSpec` condition naming the field.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::yaml_lines::{line_of, split_documents};

/// Options of `convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Manifest file to convert (`-` for standard input).
    #[arg(short = 'f', long = "filename", required = true)]
    pub file: PathBuf,
}

/// Something that does not carry over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// 1-based line in the input.
    pub line: usize,
    /// Kind and name of the object.
    pub object: String,
    /// Field path.
    pub field: String,
    /// Why it does not carry over.
    pub message: String,
}

/// The converted manifests and what did not carry over.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// Converted YAML, documents separated by `---`.
    pub yaml: String,
    /// Objects converted.
    pub converted: usize,
    /// Notes, in input order.
    pub notes: Vec<Note>,
}

const KINDS: [&str; 4] = [
    "Rollout",
    "AnalysisTemplate",
    "ClusterAnalysisTemplate",
    "AnalysisRun",
];
const SUPPORTED_ROUTERS: [&str; 4] = ["nginx", "istio", "managedRoutes", "maxTrafficWeight"];
const SUPPORTED_AUTH: [&str; 1] = ["basicAuth"];

/// Converts every document of `text`. Documents that are not Argo Rollouts objects pass through
/// unchanged; an `Experiment` has no Sluice counterpart and is left out (with a note).
pub fn convert(text: &str) -> Result<Conversion, String> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let mut converted = 0;
    for d in split_documents(text) {
        let mut value: Value = serde_yaml::from_str(&d.text).map_err(|e| {
            format!(
                "line {}: not valid YAML: {e}",
                d.first_line + e.location().map_or(1, |l| l.line()) - 1
            )
        })?;
        let api = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let object = format!("{kind}/{name}");
        let mut note = |field: &str, message: String| {
            let line = line_of(&d.text, field).unwrap_or(1);
            notes.push(Note {
                line: d.first_line + line - 1,
                object: object.clone(),
                field: field.to_string(),
                message,
            });
        };
        if !api.starts_with("argoproj.io/") {
            out.push(d.text.clone());
            continue;
        }
        if !KINDS.contains(&kind.as_str()) {
            note(
                "kind",
                format!("{kind} has no Sluice counterpart; left out of the output"),
            );
            continue;
        }
        if api != "argoproj.io/v1alpha1" {
            note(
                "apiVersion",
                format!("{api} is not argoproj.io/v1alpha1; converted as if it were"),
            );
        }
        value["apiVersion"] = Value::String("sluice.dev/v1alpha1".into());
        converted += 1;
        match kind.as_str() {
            "Rollout" => rollout_notes(&value, &mut note),
            "AnalysisRun" => {
                metrics_notes(value.pointer("/spec/metrics"), "spec.metrics", &mut note)
            }
            _ => metrics_notes(value.pointer("/spec/metrics"), "spec.metrics", &mut note),
        }
        // Rewrite only the apiVersion line so comments, key order and formatting survive.
        out.push(rewrite_api_version(&d.text));
    }
    let yaml = out
        .iter()
        .map(|d| d.trim_end_matches('\n').to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n";
    notes.sort_by_key(|n| n.line);
    Ok(Conversion {
        yaml,
        converted,
        notes,
    })
}

fn rewrite_api_version(text: &str) -> String {
    let mut done = false;
    text.lines()
        .map(|l| {
            if !done && l.starts_with("apiVersion:") && l.contains("argoproj.io/") {
                done = true;
                "apiVersion: sluice.dev/v1alpha1".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn rollout_notes(value: &Value, note: &mut impl FnMut(&str, String)) {
    if value.pointer("/spec/strategy/blueGreen").is_some() {
        note(
            "spec.strategy.blueGreen",
            "the blueGreen strategy is not supported by Sluice (canary only)".into(),
        );
    }
    let canary = value.pointer("/spec/strategy/canary");
    for (i, step) in canary
        .and_then(|c| c.get("steps"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if step.get("experiment").is_some() {
            note(
                &format!("spec.strategy.canary.steps[{i}].experiment"),
                "experiment steps are not supported by Sluice".into(),
            );
        }
        if step.get("plugin").is_some() {
            note(
                &format!("spec.strategy.canary.steps[{i}].plugin"),
                "step plugins are not supported by Sluice".into(),
            );
        }
    }
    if let Some(routing) = canary
        .and_then(|c| c.get("trafficRouting"))
        .and_then(Value::as_object)
    {
        for k in routing.keys() {
            if !SUPPORTED_ROUTERS.contains(&k.as_str()) {
                note(
                    &format!("spec.strategy.canary.trafficRouting.{k}"),
                    format!(
                        "the {k} traffic router is not supported by Sluice (supported: nginx, istio)"
                    ),
                );
            }
        }
    }
    if canary.and_then(|c| c.get("pingPong")).is_some() {
        note(
            "spec.strategy.canary.pingPong",
            "ping-pong services are not supported by Sluice".into(),
        );
    }
    if let Some(ann) = value
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for k in ann.keys().filter(|k| k.starts_with("rollout.argoproj.io/")) {
            note(
                "metadata.annotations",
                format!("annotation {k} is Argo Rollouts' and means nothing to Sluice"),
            );
        }
    }
    // The rest is what the schema does not know: report each unknown field.
    if let Ok(text) = serde_yaml::to_string(value) {
        let report = super::lint::lint_sources(&[("converted".to_string(), text)], &[]);
        for f in report.findings {
            if f.message.starts_with("unknown field")
                && !f.field.contains(".experiment")
                && !f.field.contains(".plugin")
                && !f.field.starts_with("spec.strategy.canary.trafficRouting.")
                && !f.field.ends_with("pingPong")
            {
                note(
                    &f.field,
                    format!("{} in Sluice's Rollout; not carried over", f.message),
                );
            }
        }
    }
}

fn metrics_notes(metrics: Option<&Value>, base: &str, note: &mut impl FnMut(&str, String)) {
    for (i, m) in metrics
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(provider) = m.get("provider").and_then(Value::as_object) else {
            continue;
        };
        for k in provider.keys().filter(|k| *k != "prometheus") {
            note(
                &format!("{base}[{i}].provider.{k}"),
                format!(
                    "the {k} metric provider is not supported by Sluice (supported: prometheus)"
                ),
            );
        }
        if let Some(auth) = m
            .pointer("/provider/prometheus/authentication")
            .and_then(Value::as_object)
        {
            for k in auth
                .keys()
                .filter(|k| !SUPPORTED_AUTH.contains(&k.as_str()))
            {
                note(
                    &format!("{base}[{i}].provider.prometheus.authentication.{k}"),
                    format!("{k} authentication is not supported by Sluice (supported: basicAuth)"),
                );
            }
        }
    }
}

/// Runs `convert`: the converted YAML on standard output, notes on standard error; exit 1 when
/// anything did not carry over.
pub fn run(args: &ConvertArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?
    };
    let c = convert(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    out.write_all(c.yaml.as_bytes())?;
    let file = args.file.display();
    for n in &c.notes {
        eprintln!("{file}:{}: {} {}: {}", n.line, n.object, n.field, n.message);
    }
    if c.notes.is_empty() {
        eprintln!("converted {} objects; everything carried over", c.converted);
        Ok(0)
    } else {
        eprintln!(
            "converted {} objects; {} things do not carry over (see above)",
            c.converted,
            c.notes.len()
        );
        Ok(1)
    }
}
