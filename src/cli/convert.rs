//! `sluice convert -f FILE`: Argo Rollouts manifests (`argoproj.io/v1alpha1`) to Sluice.
//!
//! Sluice keeps Argo's field names, so converting is changing `apiVersion`. What Sluice does not
//! do (experiments, step plugins, other traffic routers, other metric providers...)
//! is kept in the output as written, so nothing is silently lost. The output then goes through
//! every check of `sluice lint`, and each finding is reported at its input line: exactly what
//! the controller would refuse with an `InvalidSpec` condition naming the field.

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

/// Converts every document of `text`. Documents that are not Argo Rollouts objects pass through
/// unchanged; an `Experiment` has no Sluice counterpart and is left out (with a note).
pub fn convert(text: &str) -> Result<Conversion, String> {
    let mut out: Vec<String> = Vec::new();
    // Per output document: its first line in the input and its object (`Kind/name`).
    let mut origins: Vec<(usize, String)> = Vec::new();
    let mut notes = Vec::new();
    let mut converted = 0;
    if let Some(why) = crate::cli::lint::refuse_file(text) {
        return Err(why);
    }
    for d in split_documents(text) {
        // The same bounds as `lint`: a huge or deeply nested document is refused in linear time
        // instead of costing the parser minutes.
        if let Some((line, why)) = crate::cli::lint::refuse_document(&d.text, d.first_line) {
            return Err(format!("line {line}: {why}"));
        }
        let value: Value = serde_yaml::from_str(&d.text).map_err(|e| {
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
            origins.push((d.first_line, object));
            continue;
        }
        if !KINDS.contains(&kind.as_str()) {
            note(
                "kind",
                format!("{kind} is not supported by Sluice; left out of the output"),
            );
            continue;
        }
        if api != "argoproj.io/v1alpha1" {
            note(
                "apiVersion",
                format!("{api} is not argoproj.io/v1alpha1; converted as if it were"),
            );
        }
        converted += 1;
        if kind == "Rollout" {
            annotation_notes(&value, &mut note);
        }
        // Rewrite only the apiVersion line so comments, key order and formatting survive.
        out.push(rewrite_api_version(&d.text));
        origins.push((d.first_line, object));
    }
    let docs: Vec<String> = out
        .iter()
        .map(|d| d.trim_end_matches('\n').to_string())
        .collect();
    let yaml = docs.join("\n---\n") + "\n";
    notes.extend(lint_notes(&yaml, &docs, &origins));
    notes.sort_by_key(|n| n.line);
    Ok(Conversion {
        yaml,
        converted,
        notes,
    })
}

/// What `sluice lint` finds in the converted output, at the input's lines: exactly what the
/// controller would refuse. A template referenced but not in the file is no conversion problem:
/// it may well be converted from another file.
fn lint_notes(yaml: &str, docs: &[String], origins: &[(usize, String)]) -> Vec<Note> {
    let report = super::lint::lint_sources(&[("converted".to_string(), yaml.to_string())], &[]);
    // Output line (1-based) where each document starts: one `---` line between documents.
    let mut starts = Vec::new();
    let mut line = 1;
    for d in docs {
        starts.push(line);
        line += d.lines().count() + 1;
    }
    report
        .findings
        .into_iter()
        .filter(|f| !f.message.contains("is not among the linted files"))
        .map(|f| {
            let i = starts.iter().rposition(|s| *s <= f.line).unwrap_or(0);
            let (first, object) = origins.get(i).cloned().unwrap_or((1, String::new()));
            Note {
                line: first + f.line - starts.get(i).copied().unwrap_or(1),
                object,
                field: f.field,
                message: f.message,
            }
        })
        .collect()
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

/// Argo Rollouts' own annotations, which lint cannot tell from anyone else's.
fn annotation_notes(value: &Value, note: &mut impl FnMut(&str, String)) {
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
}

/// Runs `convert`: the converted YAML on standard output, notes on standard error; exit 1 when
/// anything did not carry over.
pub fn run(args: &ConvertArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    // Never more than one byte past lint's file limit: `convert` then refuses it by size.
    let text = if args.file.as_os_str() == "-" {
        crate::cli::lint::read_bounded(std::io::stdin())?
    } else {
        std::fs::File::open(&args.file)
            .and_then(crate::cli::lint::read_bounded)
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
