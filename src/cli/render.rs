//! Text rendering: colour (terminals only, `NO_COLOR` honoured), the rollout tree, and in-place
//! redraw for `--watch`.

use std::fmt::Write as _;
use std::io::IsTerminal;

use super::info::{
    AbortView, ConditionView, FailureView, MetricView, RevisionView, RolloutView, RunView,
    round_value, short_duration, step_text,
};

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

/// Conditions that say something the status line does not: the rest (Healthy, Ready,
/// Completed, ...) restate the phase and are left to `-o yaml`, so an incident fits a screen.
fn telling(c: &ConditionView) -> bool {
    match c.type_.as_str() {
        "Progressing" => true,
        "InvalidSpec" | "Paused" => c.status == "True",
        "Available" => c.status == "False",
        _ => false,
    }
}

/// "14:02:11 UTC" from an RFC 3339 instant (the day is rarely in doubt during an incident).
pub fn clock(rfc3339: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// "by a user (sluice-cli) at 14:02:11 UTC, at step 4 of 6": who or what aborted, when, where.
pub fn abort_words(a: &AbortView, step_count: usize) -> String {
    let who = match a.cause.as_str() {
        "analysis" => "by a failed analysis".to_string(),
        "controller" => "by the controller".to_string(),
        _ => match &a.manager {
            Some(m) => format!("by a user ({m})"),
            None => "by a user".to_string(),
        },
    };
    let at =
        a.at.as_deref()
            .map(|t| format!(" at {}", clock(t)))
            .unwrap_or_default();
    let step = match a.step_index {
        Some(i) if step_count > 0 => format!(", at step {} of {step_count}", i + 1),
        _ => String::new(),
    };
    let why = match (a.cause.as_str(), controller_reason(a)) {
        ("controller", Some(r)) => format!(": {r}"),
        _ => String::new(),
    };
    format!("{who}{at}{step}{why}")
}

/// The controller's reason for an abort, without the "aborted at step K of N: " it starts with.
pub fn controller_reason(a: &AbortView) -> Option<String> {
    let r = a.reason.as_deref()?;
    Some(
        match r.split_once(": ") {
            Some((head, rest)) if head.starts_with("aborted") => rest,
            _ => r,
        }
        .trim_end_matches('.')
        .to_string(),
    )
}

/// The failure line: the metric, its rounded value, the resolved condition and the limit.
pub fn failure_line(f: &FailureView) -> String {
    let value = f
        .value
        .as_deref()
        .map(round_value)
        .unwrap_or_else(|| "(no value)".to_string());
    let mut line = format!(
        "metric {} measured {} in AnalysisRun {}",
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
    line
}

/// Errors of the current revision's runs still measuring: `(run, metric, message)`.
pub fn live_errors(v: &RolloutView) -> Vec<(String, String, String)> {
    v.analysis_errors
        .iter()
        .map(|e| (e.analysis_run.clone(), e.metric.clone(), e.message.clone()))
        .collect()
}

/// The rollout as a tree, as `sluice get rollout` prints it. What matters in an incident comes
/// first (status, abort, failure, live errors, conditions), so that in a small terminal the cut
/// falls on history, not on the cause.
pub fn rollout_tree(v: &RolloutView, style: Style) -> String {
    let mut o = String::new();
    let field = |o: &mut String, k: &str, val: &str| {
        let _ = writeln!(o, "{:<16}{val}", format!("{k}:"));
    };
    field(
        &mut o,
        "Name",
        &format!("{} (namespace {})", style.bold(&v.name), v.namespace),
    );
    field(&mut o, "Status", &style.phase(&v.phase));
    // The controller's own abort message is restated, better, by the Aborted and Failure lines.
    let restated = v.abort.is_some() && v.message.starts_with("aborted");
    if !v.message.is_empty() && !restated {
        field(&mut o, "Message", &v.message);
    }
    if let Some(a) = &v.abort {
        field(&mut o, "Aborted", &style.red(&abort_words(a, v.step_count)));
    } else if v.aborted {
        let at = v.aborted_at.as_deref().map(clock).unwrap_or("-".into());
        field(&mut o, "Aborted", &style.red(&format!("at {at}")));
    }
    if let Some(f) = &v.failure {
        field(&mut o, "Failure", &style.red(&failure_line(f)));
    }
    for (run, metric, error) in live_errors(v) {
        field(
            &mut o,
            "Erroring",
            &style.yellow(&format!("{metric} in AnalysisRun {run}: {error}")),
        );
    }
    let shown: Vec<&ConditionView> = v.conditions.iter().filter(|c| telling(c)).collect();
    for (i, c) in shown.iter().enumerate() {
        // A message that repeats the status message is said once.
        let message = if c.message == v.message {
            ""
        } else {
            c.message.as_str()
        };
        let row = format!("{:<13}{:<7}{:<26}{message}", c.type_, c.status, c.reason);
        if i == 0 {
            field(&mut o, "Conditions", row.trim_end());
        } else {
            let _ = writeln!(o, "{:<16}{}", "", row.trim_end());
        }
    }
    field(&mut o, "Strategy", &v.strategy);
    if !v.traffic_routes.is_empty() {
        field(&mut o, "  Routes", &v.traffic_routes.join(", "));
    }
    if let Some(step) = step_text(v) {
        field(&mut o, "  Step", &step);
    }
    if let Some(bg) = &v.blue_green {
        blue_green_lines(&mut o, v, bg);
    } else if v.update_in_progress || v.aborted {
        let actual = v
            .actual_weight
            .map_or_else(|| "-".to_string(), |w| w.to_string());
        let actual = if v.actual_weight.is_some_and(|w| w != v.desired_weight) {
            style.yellow(&actual)
        } else {
            actual
        };
        // One line: the steps' weight and the router's, side by side where they are compared.
        field(
            &mut o,
            "  SetWeight",
            &format!("{}  ActualWeight: {actual}", v.desired_weight),
        );
    } else {
        // Fully promoted: the status may still say canary 0 (pointing at the new stable), which
        // reads as "no traffic" to a person.
        let stable = v
            .revisions
            .iter()
            .find(|r| r.role.contains("stable"))
            .and_then(|r| r.revision)
            .map(|r| format!(" (revision {r})"))
            .unwrap_or_default();
        field(&mut o, "  Weight", &format!("100% on stable{stable}"));
    }
    if let Some(left) = v.pause_seconds_left {
        let ends = v.pause_ends_at.as_deref().map(clock).unwrap_or_default();
        let text = match (left > 0, v.blue_green.is_some()) {
            (true, false) => format!("{} left (ends {ends})", short_duration(left)),
            (true, true) => format!("promotes by itself in {} (at {ends})", short_duration(left)),
            (false, false) => format!("ended at {ends}; the next step starts now"),
            (false, true) => format!("ended at {ends}; promoting now"),
        };
        field(&mut o, "  Pause", &text);
    }
    if v.paused_by_user {
        field(&mut o, "Paused", "by the user (spec.paused)");
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

    step_lines(&mut o, v, style);

    if v.revisions.is_empty() {
        let _ = writeln!(o, "Revisions:      (no ReplicaSets yet)");
    }
    for (i, rev) in v.revisions.iter().enumerate() {
        let last = i + 1 == v.revisions.len() && v.other_analysis_runs.is_empty();
        revision_lines(&mut o, rev, last, style);
    }
    if !v.other_analysis_runs.is_empty() {
        let _ = writeln!(
            o,
            "└── {} of no listed revision",
            runs_count(v.other_analysis_runs.len())
        );
    }
    o
}

fn runs_count(n: usize) -> String {
    if n == 1 {
        "1 AnalysisRun".to_string()
    } else {
        format!("{n} AnalysisRuns")
    }
}

/// Most step lines; a longer list folds the steps done long ago and those far ahead.
const STEPS_SHOWN: usize = 6;

fn step_lines(o: &mut String, v: &RolloutView, style: Style) {
    let n = v.steps.len();
    let focus = v
        .steps
        .iter()
        .position(|s| s.state == "current" || s.state == "aborted")
        .unwrap_or(n);
    // Window: the step before the focus, the focus and the ones after, within STEPS_SHOWN
    // lines counting one line for each folded run of steps.
    let (mut first, mut last) = (0, n);
    if n > STEPS_SHOWN {
        first = focus
            .saturating_sub(1)
            .min(n.saturating_sub(STEPS_SHOWN - 1));
        let room = STEPS_SHOWN - usize::from(first > 0);
        if n - first > room {
            last = first + room - 1;
        }
    }
    if first > 0 {
        let label = if first == 1 {
            "  1. done".to_string()
        } else {
            format!("1-{first}. done")
        };
        let _ = writeln!(
            o,
            "  {} {}",
            style.green("✔"),
            style.dim(&format!("{label:>5}"))
        );
    }
    for s in &v.steps[first..last] {
        let line = format!("{:>3}. {}", s.index + 1, s.description);
        let line = match s.state.as_str() {
            "done" => format!("  {} {}", style.green("✔"), line),
            "current" => {
                let left = v
                    .pause_seconds_left
                    .filter(|l| *l > 0)
                    .map(|l| format!(", {} left", short_duration(l)))
                    .unwrap_or_default();
                format!(
                    "  {} {}  {}",
                    style.bold("▶"),
                    style.bold(&line),
                    style.dim(&format!("<- current{left}"))
                )
            }
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
    if last < n {
        let label = if last + 1 == n {
            format!("{n}. {}", v.steps[last].description)
        } else {
            format!("{}-{n}. {} more steps", last + 1, n - last)
        };
        let _ = writeln!(
            o,
            "  {} {}",
            style.dim("·"),
            style.dim(&format!("{label:>5}"))
        );
    }
}

/// AnalysisRuns listed in full under the current revision; the others are counted.
const RUNS_SHOWN: usize = 2;

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
    let mut extra = String::new();
    if let Some(r) = rev.restarts.filter(|r| *r > 0) {
        let text = if r == 1 {
            "1 restart".to_string()
        } else {
            format!("{r} restarts")
        };
        let _ = write!(extra, "  {}", style.yellow(&text));
    }
    if let Some(age) = &rev.age {
        let _ = write!(extra, "  {age}");
    }
    // Older revisions are history: one line each, their runs counted.
    if !rev.current && !rev.analysis_runs.is_empty() {
        let _ = write!(
            extra,
            "  {}",
            style.dim(&runs_count(rev.analysis_runs.len()))
        );
    }
    let _ = writeln!(
        o,
        "{branch}{}  {}{}  {}  {}{extra}",
        style.bold(&label),
        rev.replica_set,
        role,
        rev.images.join(","),
        pods
    );
    if !rev.current {
        return;
    }
    // The runs that explain the present in full (running, failed, ...); passed ones counted.
    let full: Vec<&RunView> = rev
        .analysis_runs
        .iter()
        .filter(|r| r.phase != "Successful")
        .take(RUNS_SHOWN)
        .collect();
    let rest = rev.analysis_runs.len() - full.len();
    for (i, run) in full.iter().enumerate() {
        run_lines(o, run, indent, i + 1 == full.len() && rest == 0, style);
    }
    if rest > 0 {
        let passed = rev
            .analysis_runs
            .iter()
            .filter(|r| r.phase == "Successful")
            .count();
        let words = if passed == rest {
            format!("{} passed", runs_count(rest))
        } else {
            format!("{} more", runs_count(rest))
        };
        let _ = writeln!(o, "{indent}└── {}", style.dim(&words));
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
        let (b, under) = if i + 1 == run.metrics.len() {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        let _ = writeln!(o, "{indent}{child}{b}{}", metric_text(m, style));
        if let Some(e) = &m.latest_error {
            let _ = writeln!(
                o,
                "{indent}{child}{under}{}",
                style.yellow(&format!("error: {e}"))
            );
        }
    }
}

/// `>= 0.95` for `result[0] >= 0.95` (what a screen has room for), else the condition.
fn short_condition(c: &str) -> String {
    let c = c.trim();
    for prefix in ["result[0]", "result"] {
        if let Some(rest) = c.strip_prefix(prefix) {
            let rest = rest.trim_start();
            let op_len = rest
                .chars()
                .take_while(|ch| matches!(ch, '<' | '>' | '=' | '!'))
                .count();
            let value = rest[op_len..].trim();
            if op_len > 0 && !value.is_empty() && value.parse::<f64>().is_ok() {
                return format!("{} {value}", &rest[..op_len]);
            }
        }
    }
    c.to_string()
}

/// `success-rate  ◌ Running  last [0.99], [0.97]  (2 ok)  2/5, success: result[0] >= 0.95`.
fn metric_text(m: &MetricView, style: Style) -> String {
    let skip = m.last_values.len().saturating_sub(2);
    let values = if m.last_values.is_empty() {
        "no measurement yet".to_string()
    } else {
        let rounded: Vec<String> = m.last_values[skip..]
            .iter()
            .map(|x| round_value(x))
            .collect();
        format!("last {}", rounded.join(", "))
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
    let mut text = format!(
        "{}  {}  {}  ({})",
        m.name,
        style.phase(&m.phase),
        values,
        counts
    );
    if let Some(n) = m.expected_count {
        let _ = write!(text, "  {}/{n}", m.count);
    }
    if let (Some(c), Some(k)) = (&m.condition, &m.condition_kind) {
        let kind = if k == "failureCondition" {
            "fails if"
        } else {
            "needs"
        };
        let _ = write!(
            text,
            "  {}",
            style.dim(&format!("{kind} {}", short_condition(c)))
        );
    }
    text
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

/// A blue-green Rollout: which revision each Service selects, and its analyses.
fn blue_green_lines(o: &mut String, v: &RolloutView, bg: &super::info::BlueGreenView) {
    let field = |o: &mut String, k: &str, val: &str| {
        let _ = writeln!(o, "{:<16}{val}", format!("{k}:"));
    };
    let revision = |r: Option<i64>| r.map_or_else(|| "-".to_string(), |r| format!("revision {r}"));
    field(
        o,
        "  Active",
        &format!("{} → {}", bg.active_service, revision(bg.active_revision)),
    );
    if let Some(preview) = &bg.preview_service {
        field(
            o,
            "  Preview",
            &format!("{preview} → {}", revision(bg.preview_revision)),
        );
    }
    if let Some(run) = &bg.pre_promotion_analysis {
        field(o, "  PrePromotion", run);
    }
    if let Some(run) = &bg.post_promotion_analysis {
        field(o, "  PostPromotion", run);
    }
    if v.update_in_progress && !bg.auto_promotion && !v.aborted {
        field(o, "  Promotion", "manual (autoPromotionEnabled: false)");
    }
}
