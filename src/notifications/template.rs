//! Templates and trigger conditions, in Jinja syntax (minijinja).
//!
//! Argo Rollouts writes `{{.rollout.metadata.name}}` (Go templates); here it is
//! `{{ rollout.metadata.name }}`. A template reads `rollout` (the Rollout), `event`
//! (`reason`, `message`, `trigger`, `type`), `recipient`, `service`, `context` (the ConfigMap's
//! `context` key) and the shorthands `name`, `namespace`, `revision`. Missing fields render
//! empty, as Go templates' missing keys do, instead of failing. Nothing is HTML-escaped.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

use super::config::Template;

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Keep the text as written: a message ending in a newline keeps it.
    env.set_keep_trailing_newline(true);
    env
}

/// Checks the syntax of every template string of `t`.
pub fn check(t: &Template) -> Result<(), String> {
    let env = env();
    let mut parts: Vec<(&str, &str)> = vec![("message", &t.message)];
    if let Some(title) = &t.title {
        parts.push(("title", title));
    }
    if let Some(s) = &t.slack {
        parts.extend(s.attachments.as_deref().map(|v| ("slack.attachments", v)));
        parts.extend(s.blocks.as_deref().map(|v| ("slack.blocks", v)));
    }
    if let Some(tm) = &t.teams {
        parts.extend(tm.title.as_deref().map(|v| ("teams.title", v)));
        parts.extend(tm.facts.as_deref().map(|v| ("teams.facts", v)));
        parts.extend(
            tm.adaptive_card
                .as_deref()
                .map(|v| ("teams.adaptiveCard", v)),
        );
    }
    for w in t.webhook.values() {
        parts.extend(w.path.as_deref().map(|v| ("webhook.path", v)));
        parts.extend(w.body.as_deref().map(|v| ("webhook.body", v)));
    }
    for (field, src) in parts {
        env.template_from_str(src)
            .map_err(|e| format!("{field}: {}", describe(&e)))?;
    }
    Ok(())
}

/// Checks the syntax of a `when` condition.
pub fn check_expression(expr: &str) -> Result<(), String> {
    env()
        .compile_expression(expr)
        .map(|_| ())
        .map_err(|e| format!("when {expr:?}: {}", describe(&e)))
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{} ({d})", e.kind()),
        None => e.to_string(),
    }
}

/// Renders `src` with `vars`.
pub fn render(src: &str, vars: &Value) -> Result<String, String> {
    env().render_str(src, vars).map_err(|e| describe(&e))
}

/// Evaluates a `when` condition with `vars` (Jinja truthiness).
pub fn eval_condition(expr: &str, vars: &Value) -> Result<bool, String> {
    let env = env();
    let compiled = env.compile_expression(expr).map_err(|e| describe(&e))?;
    compiled
        .eval(vars)
        .map(|v| v.is_true())
        .map_err(|e| describe(&e))
}

/// The variables a template and a condition read.
pub fn variables(
    rollout: &Value,
    revision: Option<&str>,
    event: &Value,
    service: &str,
    recipient: &str,
    context: &BTreeMap<String, String>,
) -> Value {
    let meta = &rollout["metadata"];
    serde_json::json!({
        "rollout": rollout,
        "event": event,
        "service": service,
        "recipient": recipient,
        "context": context,
        "name": meta["name"],
        "namespace": meta["namespace"],
        "revision": revision.unwrap_or_default(),
    })
}

/// How a notification is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Done well (green).
    Good,
    /// Needs a look (amber).
    Warning,
    /// Went wrong (red).
    Danger,
    /// News (blue).
    Info,
}

impl Severity {
    /// The severity of a trigger's notifications.
    pub fn of_trigger(trigger: &str) -> Severity {
        match trigger {
            "on-rollout-completed" => Severity::Good,
            "on-rollout-aborted"
            | "on-analysis-run-failed"
            | "on-analysis-run-error"
            | "on-progress-deadline-exceeded"
            | "on-invalid-spec" => Severity::Danger,
            "on-rollout-paused" | "on-analysis-run-inconclusive" => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// Slack's attachment colour.
    pub fn slack_color(self) -> &'static str {
        match self {
            Severity::Good => "#18be52",
            Severity::Warning => "#f4c030",
            Severity::Danger => "#e01e5a",
            Severity::Info => "#439fe0",
        }
    }

    /// An Adaptive Card `TextBlock` colour.
    pub fn card_color(self) -> &'static str {
        match self {
            Severity::Good => "Good",
            Severity::Warning => "Warning",
            Severity::Danger => "Attention",
            Severity::Info => "Accent",
        }
    }
}

/// The built-in templates, one per trigger (`on-<name>` sends `<name>`): a title and the Event's
/// message, which already says what happened and why (an abort names the step, the metric,
/// the measured value and the condition).
const BUILTIN: &[(&str, &str)] = &[
    (
        "rollout-updated",
        "Rollout {{ namespace }}/{{ name }} is updating to revision {{ revision }}",
    ),
    (
        "rollout-step-completed",
        "Rollout {{ namespace }}/{{ name }}: step {{ rollout.status.currentStep }} completed",
    ),
    (
        "rollout-paused",
        "Rollout {{ namespace }}/{{ name }} paused",
    ),
    (
        "rollout-resumed",
        "Rollout {{ namespace }}/{{ name }} resumed",
    ),
    (
        "rollout-aborted",
        "Rollout {{ namespace }}/{{ name }} aborted",
    ),
    (
        "rollout-completed",
        "Rollout {{ namespace }}/{{ name }} completed revision {{ revision }}",
    ),
    (
        "analysis-run-failed",
        "Analysis of {{ namespace }}/{{ name }} failed",
    ),
    (
        "analysis-run-error",
        "Analysis of {{ namespace }}/{{ name }} errored",
    ),
    (
        "analysis-run-inconclusive",
        "Analysis of {{ namespace }}/{{ name }} is inconclusive",
    ),
    (
        "scaling-replica-set",
        "Rollout {{ namespace }}/{{ name }} scaled a ReplicaSet",
    ),
    (
        "progress-deadline-exceeded",
        "Rollout {{ namespace }}/{{ name }} exceeded its progress deadline",
    ),
    (
        "invalid-spec",
        "Rollout {{ namespace }}/{{ name }} has an invalid spec",
    ),
];

/// Names of the built-in templates.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

/// The built-in template `name`.
pub fn builtin(name: &str) -> Option<Template> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, title)| Template {
            message: "{{ event.message }}".to_string(),
            title: Some((*title).to_string()),
            ..Template::default()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Value {
        let rollout = serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"image": "web:2"}]}}},
            "status": {"phase": "Degraded", "currentStep": "2/4"}
        });
        let event = serde_json::json!({"reason": "RolloutAborted", "message": "aborted at step 2 of 4: x",
            "trigger": "on-rollout-aborted", "type": "Warning"});
        variables(
            &rollout,
            Some("3"),
            &event,
            "slack",
            "#ops",
            &BTreeMap::new(),
        )
    }

    #[test]
    fn templates_read_the_rollout_the_event_and_shorthands() {
        let v = vars();
        assert_eq!(
            render(
                "{{ name }}@{{ revision }} {{ rollout.spec.template.spec.containers[0].image }}: {{ event.message }} -> {{ recipient }}",
                &v
            )
            .unwrap(),
            "web@3 web:2: aborted at step 2 of 4: x -> #ops"
        );
        // Missing fields render empty rather than failing, as Go templates' missing keys.
        assert_eq!(
            render("[{{ rollout.status.nothing.deeper }}]", &v).unwrap(),
            "[]"
        );
        // No HTML escaping: messages go into JSON, not HTML.
        assert_eq!(render("{{ '<a & b>' }}", &v).unwrap(), "<a & b>");
        assert_eq!(
            render(
                "{{ event | tojson }}",
                &serde_json::json!({"event": {"a": "\"q\""}})
            )
            .unwrap(),
            r#"{"a":"\"q\""}"#
        );
    }

    #[test]
    fn conditions_use_jinja_expressions() {
        let v = vars();
        assert!(eval_condition("rollout.status.phase == 'Degraded'", &v).unwrap());
        assert!(eval_condition("rollout.status.phase in ['Healthy', 'Degraded']", &v).unwrap());
        assert!(
            !eval_condition(
                "rollout.spec.template.spec.containers[0].image == 'web:1'",
                &v
            )
            .unwrap()
        );
        assert!(check_expression("rollout.status.phase ==").is_err());
    }

    #[test]
    fn every_builtin_renders_its_title() {
        let v = vars();
        for name in builtin_names() {
            let t = builtin(name).unwrap();
            check(&t).unwrap();
            let title = render(t.title.as_deref().unwrap(), &v).unwrap();
            assert!(
                title.contains("shop/web") || title.contains("web"),
                "{name}: {title}"
            );
            assert_eq!(render(&t.message, &v).unwrap(), "aborted at step 2 of 4: x");
        }
    }
}
