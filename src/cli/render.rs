//! Text rendering: colour (terminals only, `NO_COLOR` honoured), the rollout tree, and in-place
//! redraw for `--watch`.

use std::fmt::Write as _;
use std::io::IsTerminal;

use super::info::{RevisionView, RolloutView, RunView};

/// Whether to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// ANSI colours on.
    pub color: bool,
}

impl Style {
    /// Colour when standard output is a terminal and `NO_COLOR` is unset or empty
    /// (<https://no-color.org>), unless `no_color` is asked for.
    pub fn detect(no_color: bool) -> Self {
        let env_off = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && !env_off && std::io::stdout().is_terminal(),
        }
    }

    /// No colour.
    pub fn plain() -> Self {
        Style { color: false }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    /// Green.
    pub fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    /// Red.
    pub fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    /// Yellow.
    pub fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    /// Blue.
    pub fn blue(&self, t: &str) -> String {
        self.paint("34", t)
    }
    /// Bold.
    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    /// Dim.
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }

    /// A phase (rollout or analysis) with its icon and colour.
    pub fn phase(&self, phase: &str) -> String {
        let (icon, painted): (&str, fn(&Style, &str) -> String) = match phase {
            "Healthy" | "Successful" => ("✔", Style::green),
            "Progressing" | "Running" => ("◌", Style::blue),
            "Paused" | "Inconclusive" | "Pending" => ("॥", Style::yellow),
            "Degraded" | "Failed" | "Error" => ("✖", Style::red),
            _ => ("?", Style::dim),
        };
        painted(self, &format!("{icon} {phase}"))
    }
}

/// The rollout as a tree, as `sluice get rollout` prints it.
pub fn rollout_tree(v: &RolloutView, style: Style) -> String {
    let mut o = String::new();
    let field = |o: &mut String, k: &str, val: &str| {
        let _ = writeln!(o, "{:<16}{val}", format!("{k}:"));
    };
    field(&mut o, "Name", &style.bold(&v.name));
    field(&mut o, "Namespace", &v.namespace);
    field(&mut o, "Status", &style.phase(&v.phase));
    if !v.message.is_empty() {
        field(&mut o, "Message", &v.message);
    }
    field(&mut o, "Strategy", &v.strategy);
    if v.step_count > 0 {
        let step = match v.current_step_index {
            Some(i) if usize::try_from(i).is_ok_and(|i| i >= v.step_count) => {
                format!("{}/{} (all steps done)", v.step_count, v.step_count)
            }
            Some(i) => format!("{}/{}", i + 1, v.step_count),
            None => format!("-/{}", v.step_count),
        };
        field(&mut o, "  Step", &step);
    }
    field(&mut o, "  SetWeight", &v.desired_weight.to_string());
    let actual = v
        .actual_weight
        .map_or_else(|| "-".to_string(), |w| w.to_string());
    let actual = if v.actual_weight.is_some_and(|w| w != v.desired_weight) {
        style.yellow(&actual)
    } else {
        actual
    };
    field(&mut o, "  ActualWeight", &actual);
    if v.paused_by_user {
        field(&mut o, "Paused", "by the user (spec.paused)");
    }
    if v.aborted {
        let at = v.aborted_at.as_deref().unwrap_or("-");
        field(&mut o, "Aborted", &style.red(&format!("at {at}")));
    }
    field(
        &mut o,
        "Replicas",
        &format!(
            "desired {}, current {}, updated {}, ready {}, available {}",
            v.desired_replicas,
            v.current_replicas,
            v.updated_replicas,
            v.ready_replicas,
            v.available_replicas
        ),
    );

    if !v.steps.is_empty() {
        let _ = writeln!(o, "\nSteps:");
        for s in &v.steps {
            let line = format!("{:>3}. {}", s.index + 1, s.description);
            let line = match s.state.as_str() {
                "done" => format!("  {} {}", style.green("✔"), line),
                "current" => format!(
                    "  {} {}  {}",
                    style.bold("▶"),
                    style.bold(&line),
                    style.dim("<- current")
                ),
                "aborted" => format!(
                    "  {} {}  {}",
                    style.red("✖"),
                    style.red(&line),
                    style.dim("<- aborted here")
                ),
                _ => format!("  {} {}", style.dim("·"), line),
            };
            let _ = writeln!(o, "{line}");
        }
    }

    let _ = writeln!(o, "\nRevisions:");
    if v.revisions.is_empty() {
        let _ = writeln!(o, "  (no ReplicaSets yet)");
    }
    for (i, rev) in v.revisions.iter().enumerate() {
        let last = i + 1 == v.revisions.len() && v.other_analysis_runs.is_empty();
        revision_lines(&mut o, rev, last, style);
    }
    if !v.other_analysis_runs.is_empty() {
        let _ = writeln!(o, "└── AnalysisRuns of no listed revision");
        for (i, run) in v.other_analysis_runs.iter().enumerate() {
            run_lines(
                &mut o,
                run,
                "    ",
                i + 1 == v.other_analysis_runs.len(),
                style,
            );
        }
    }

    if !v.conditions.is_empty() {
        let _ = writeln!(o, "\nConditions:");
        for c in &v.conditions {
            let line = format!(
                "  {:<13}{:<7}{:<26}{}",
                c.type_, c.status, c.reason, c.message
            );
            let _ = writeln!(o, "{}", line.trim_end());
        }
    }
    if let Some(f) = &v.failure {
        let _ = writeln!(o);
        let value = f.value.as_deref().unwrap_or("(no value)");
        let mut line = format!(
            "Failure:        metric {} measured {} in AnalysisRun {}",
            f.metric, value, f.analysis_run
        );
        if let (Some(cond), Some(kind)) = (&f.condition, &f.condition_kind) {
            let _ = write!(line, " ({kind}: {cond})");
        }
        let _ = write!(
            line,
            "; {} {} > limit {}",
            f.phase.to_lowercase(),
            f.count,
            f.limit
        );
        let _ = writeln!(o, "{}", style.red(&line));
    }
    o
}

fn revision_lines(o: &mut String, rev: &RevisionView, last: bool, style: Style) {
    let (branch, indent) = if last {
        ("└── ", "    ")
    } else {
        ("├── ", "│   ")
    };
    let label = rev
        .revision
        .map_or_else(|| "revision ?".to_string(), |r| format!("revision {r}"));
    let role = if rev.role.is_empty() {
        String::new()
    } else {
        format!(" ({})", rev.role)
    };
    let pods = format!("{}/{} ready", rev.ready, rev.total);
    let pods = if rev.ready < rev.desired {
        style.yellow(&pods)
    } else {
        pods
    };
    let _ = writeln!(
        o,
        "{branch}{}  {}{}  {}  {}",
        style.bold(&label),
        rev.replica_set,
        role,
        rev.images.join(","),
        pods
    );
    for (i, run) in rev.analysis_runs.iter().enumerate() {
        run_lines(o, run, indent, i + 1 == rev.analysis_runs.len(), style);
    }
}

fn run_lines(o: &mut String, run: &RunView, indent: &str, last: bool, style: Style) {
    let (branch, child) = if last {
        ("└── ", "    ")
    } else {
        ("├── ", "│   ")
    };
    let origin = match (&run.kind, run.step_index) {
        (_, Some(i)) => format!(" (step {})", i + 1),
        (Some(k), None) => format!(" ({})", k.to_lowercase()),
        _ => String::new(),
    };
    let _ = writeln!(
        o,
        "{indent}{branch}AnalysisRun {}{}  {}",
        run.name,
        origin,
        style.phase(&run.phase)
    );
    for (i, m) in run.metrics.iter().enumerate() {
        let b = if i + 1 == run.metrics.len() {
            "└── "
        } else {
            "├── "
        };
        let values = if m.last_values.is_empty() {
            "no measurement yet".to_string()
        } else {
            format!("last {}", m.last_values.join(", "))
        };
        let mut counts = format!("{} ok", m.successful);
        if m.failed > 0 {
            let _ = write!(counts, ", {} failed", m.failed);
        }
        if m.inconclusive > 0 {
            let _ = write!(counts, ", {} inconclusive", m.inconclusive);
        }
        if m.error > 0 {
            let _ = write!(counts, ", {} errors", m.error);
        }
        let _ = writeln!(
            o,
            "{indent}{child}{b}{}  {}  {}  ({})",
            m.name,
            style.phase(&m.phase),
            values,
            counts
        );
    }
}

/// Redraws `frame` over the previous one without clearing the screen first (which flickers):
/// cursor home, each line followed by erase-to-end-of-line, then erase below.
pub fn redraw(frame: &str) -> String {
    let mut o = String::from("\x1b[H");
    for line in frame.lines() {
        o.push_str(line);
        o.push_str("\x1b[K\n");
    }
    o.push_str("\x1b[J");
    o
}

/// A fixed-width table with a header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut o = String::new();
    let line = |o: &mut String, cells: Vec<&str>| {
        let mut text = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(c);
            } else {
                let pad = widths[i] + 3 - c.chars().count();
                text.push_str(c);
                text.push_str(&" ".repeat(pad));
            }
        }
        let _ = writeln!(o, "{}", text.trim_end());
    };
    line(&mut o, header.to_vec());
    for row in rows {
        line(&mut o, row.iter().map(String::as_str).collect());
    }
    o
}

/// Prints a serialisable value as JSON or YAML.
pub fn structured<T: serde::Serialize>(value: &T, output: super::Output) -> anyhow::Result<String> {
    Ok(match output {
        super::Output::Json => format!("{}\n", serde_json::to_string_pretty(value)?),
        super::Output::Yaml => serde_yaml::to_string(value)?,
        super::Output::Text => String::new(),
    })
}
