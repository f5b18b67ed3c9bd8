//! The notification configuration: the ConfigMap `sluice-notifications` (services, templates,
//! triggers, default subscriptions) with `$name` references into the Secret
//! `sluice-notifications-secret`, in the shape of Argo Rollouts' notification ConfigMap.
//!
//! Every error names the ConfigMap key it comes from. Secret values are substituted into the
//! service settings only; they are remembered in [`Config::secrets`] so that anything shown to
//! people can be checked against them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::template;

/// A service that delivers notifications.
#[derive(Debug, Clone, PartialEq)]
pub enum Service {
    /// `service.webhook.<name>`: an HTTP request to a URL.
    Webhook(WebhookService),
    /// `service.slack`: incoming webhooks or a bot token (`chat.postMessage`).
    Slack(SlackService),
    /// `service.teams`: Microsoft Teams workflow webhooks (Adaptive Cards).
    Teams(TeamsService),
}

impl Service {
    /// The kind of service: `webhook`, `slack` or `teams`.
    pub fn kind(&self) -> &'static str {
        match self {
            Service::Webhook(_) => "webhook",
            Service::Slack(_) => "slack",
            Service::Teams(_) => "teams",
        }
    }
}

/// An HTTP header of a webhook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Basic authentication of a webhook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

/// `service.webhook.<name>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookService {
    /// Where requests go; a template's `path` is appended.
    pub url: String,
    #[serde(default)]
    pub headers: Vec<Header>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
}

/// `service.slack`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackService {
    /// Bot token: messages go through `chat.postMessage` to the recipient channel.
    #[serde(default)]
    pub token: Option<String>,
    /// Slack's Web API base (default `https://slack.com/api`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Incoming webhook used for every recipient that has none of its own.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Incoming webhooks by recipient (a channel's webhook posts only to that channel).
    #[serde(default)]
    pub recipient_urls: BTreeMap<String, String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub icon: Option<String>,
}

/// `service.teams`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamsService {
    /// Workflow webhooks by recipient.
    #[serde(default)]
    pub recipient_urls: BTreeMap<String, String>,
    /// Workflow webhook used for every recipient that has none of its own.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// Slack parts of a template: JSON templates, as in Argo Rollouts.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackTemplate {
    #[serde(default)]
    pub attachments: Option<String>,
    #[serde(default)]
    pub blocks: Option<String>,
}

/// Teams parts of a template.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamsTemplate {
    #[serde(default)]
    pub title: Option<String>,
    /// JSON template of a list of `{title, value}` facts.
    #[serde(default)]
    pub facts: Option<String>,
    /// JSON template of a whole Adaptive Card (replaces the built-in card).
    #[serde(default)]
    pub adaptive_card: Option<String>,
}

/// The request a template makes to one webhook.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookTemplate {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
}

/// `template.<name>`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Template {
    /// The text every service shows.
    #[serde(default)]
    pub message: String,
    /// A headline (Teams card title, Slack attachment title); default from the trigger.
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub slack: Option<SlackTemplate>,
    #[serde(default)]
    pub teams: Option<TeamsTemplate>,
    #[serde(default)]
    pub webhook: BTreeMap<String, WebhookTemplate>,
}

/// One condition of `trigger.<name>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerCondition {
    /// A Jinja expression over `rollout` and `event`; absent: always.
    #[serde(default)]
    pub when: Option<String>,
    /// Templates to send.
    pub send: Vec<String>,
    /// Accepted for Argo compatibility: ignored, each transition is sent once anyway.
    #[serde(default)]
    pub once_per: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A default subscription (the `subscriptions` key), for every Rollout.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultSubscription {
    /// `service:recipient` (recipient may be empty: `service`).
    pub recipients: Vec<String>,
    /// Triggers; empty: `defaultTriggers`.
    #[serde(default)]
    pub triggers: Vec<String>,
    /// Only Rollouts with these labels.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

/// The parsed configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub services: BTreeMap<String, Service>,
    pub templates: BTreeMap<String, Template>,
    pub triggers: BTreeMap<String, Vec<TriggerCondition>>,
    pub default_triggers: Vec<String>,
    pub subscriptions: Vec<DefaultSubscription>,
    /// `context`: values every template can read as `context.<key>`.
    pub context: BTreeMap<String, String>,
    /// The Secret values substituted into services, longest first (see [`Config::redact`]).
    pub secrets: Vec<String>,
}

/// A key of the ConfigMap that could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("key {key:?}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.into(),
    }
}

impl Config {
    /// Parses the ConfigMap's `data` with the Secret's values for `$name` references.
    pub fn parse(
        data: &BTreeMap<String, String>,
        secret: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (key, value) in data {
            if let Some(name) = key.strip_prefix("service.webhook.") {
                let mut svc: WebhookService = yaml(key, value)?;
                svc.url = substitute(key, &svc.url, secret, &mut config.secrets)?;
                for h in &mut svc.headers {
                    h.value = substitute(key, &h.value, secret, &mut config.secrets)?;
                }
                if let Some(b) = &mut svc.basic_auth {
                    b.username = substitute(key, &b.username, secret, &mut config.secrets)?;
                    b.password = substitute(key, &b.password, secret, &mut config.secrets)?;
                }
                check_url(key, &svc.url)?;
                config
                    .services
                    .insert(name.to_string(), Service::Webhook(svc));
            } else if key == "service.slack" || key.starts_with("service.slack.") {
                let name = key.strip_prefix("service.").unwrap_or(key);
                let mut svc: SlackService = yaml(key, value)?;
                for v in [&mut svc.token, &mut svc.api_url, &mut svc.webhook_url]
                    .into_iter()
                    .flatten()
                {
                    *v = substitute(key, v, secret, &mut config.secrets)?;
                }
                for url in svc.recipient_urls.values_mut() {
                    *url = substitute(key, url, secret, &mut config.secrets)?;
                    check_url(key, url)?;
                }
                if let Some(u) = &svc.webhook_url {
                    check_url(key, u)?;
                }
                if let Some(u) = &svc.api_url {
                    check_url(key, u)?;
                }
                if svc.token.is_none() && svc.webhook_url.is_none() && svc.recipient_urls.is_empty()
                {
                    return Err(err(
                        key,
                        "needs a token (chat.postMessage), a webhookUrl or recipientUrls",
                    ));
                }
                config
                    .services
                    .insert(name.to_string(), Service::Slack(svc));
            } else if key == "service.teams"
                || key == "service.teams-workflows"
                || key.starts_with("service.teams.")
            {
                let name = key.strip_prefix("service.").unwrap_or(key);
                let mut svc: TeamsService = yaml(key, value)?;
                for url in svc.recipient_urls.values_mut() {
                    *url = substitute(key, url, secret, &mut config.secrets)?;
                    check_url(key, url)?;
                }
                if let Some(u) = &mut svc.webhook_url {
                    *u = substitute(key, u, secret, &mut config.secrets)?;
                    check_url(key, u)?;
                }
                if svc.webhook_url.is_none() && svc.recipient_urls.is_empty() {
                    return Err(err(key, "needs recipientUrls or a webhookUrl"));
                }
                config
                    .services
                    .insert(name.to_string(), Service::Teams(svc));
            } else if key.starts_with("service.") {
                return Err(err(
                    key,
                    "unknown service: supported are service.webhook.<name>, service.slack, \
                     service.teams",
                ));
            } else if let Some(name) = key.strip_prefix("template.") {
                let t: Template = yaml(key, value)?;
                template::check(&t).map_err(|m| err(key, m))?;
                config.templates.insert(name.to_string(), t);
            } else if let Some(name) = key.strip_prefix("trigger.") {
                let conditions: Vec<TriggerCondition> = yaml(key, value)?;
                for c in &conditions {
                    if let Some(when) = &c.when {
                        template::check_expression(when).map_err(|m| err(key, m))?;
                    }
                    if c.send.is_empty() {
                        return Err(err(key, "a condition sends no template (`send` is empty)"));
                    }
                }
                config.triggers.insert(name.to_string(), conditions);
            } else if key == "defaultTriggers" {
                config.default_triggers = yaml(key, value)?;
            } else if key == "subscriptions" {
                config.subscriptions = yaml(key, value)?;
            } else if key == "context" {
                config.context = yaml(key, value)?;
            } else {
                return Err(err(
                    key,
                    "unknown key: expected service.*, template.*, trigger.*, defaultTriggers, \
                     subscriptions or context",
                ));
            }
        }
        // Triggers must send templates that exist (built-in or configured).
        for (name, conditions) in &config.triggers {
            for c in conditions {
                for t in &c.send {
                    if config.template(t).is_none() {
                        return Err(err(
                            &format!("trigger.{name}"),
                            format!("sends the unknown template {t:?}"),
                        ));
                    }
                }
            }
        }
        for (i, s) in config.subscriptions.iter().enumerate() {
            for r in &s.recipients {
                let service = r.split_once(':').map_or(r.as_str(), |(s, _)| s);
                if !config.services.contains_key(service) {
                    return Err(err(
                        "subscriptions",
                        format!("entry {i}: recipient {r:?} names the unknown service {service:?}"),
                    ));
                }
            }
        }
        config.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        config.secrets.dedup();
        Ok(config)
    }

    /// The template `name`: configured, or built in.
    pub fn template(&self, name: &str) -> Option<std::borrow::Cow<'_, Template>> {
        match self.templates.get(name) {
            Some(t) => Some(std::borrow::Cow::Borrowed(t)),
            None => template::builtin(name).map(std::borrow::Cow::Owned),
        }
    }

    /// The conditions of trigger `name`: configured, or built in (`on-<x>` sends the built-in
    /// template `rollout-<x>` / `analysis-run-<x>`).
    pub fn trigger(&self, name: &str) -> Option<Vec<TriggerCondition>> {
        if let Some(t) = self.triggers.get(name) {
            return Some(t.clone());
        }
        let template = name.strip_prefix("on-")?;
        template::builtin(template).map(|_| {
            vec![TriggerCondition {
                when: None,
                send: vec![template.to_string()],
                once_per: None,
                description: None,
            }]
        })
    }

    /// Replaces every Secret value in `text` with `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if !s.is_empty() {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

fn yaml<T: serde::de::DeserializeOwned>(key: &str, value: &str) -> Result<T, ConfigError> {
    serde_yaml::from_str(value).map_err(|e| err(key, format!("invalid YAML: {e}")))
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        // Never echo the value: it may come from the Secret.
        Ok(_) => Err(err(key, "a URL must be http or https")),
        Err(e) => Err(err(key, format!("invalid URL: {e}"))),
    }
}

/// Replaces `$name` references with the Secret's values (names: letters, digits, `-`, `_`,
/// `.`), as Argo Rollouts does; `$$` is a literal `$`. An unknown name is an error.
fn substitute(
    key: &str,
    value: &str,
    secret: &BTreeMap<String, String>,
    used: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(after.len());
        // A trailing `.` ends a sentence rather than the name.
        let name = after[..len].trim_end_matches('.');
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        match secret.get(name) {
            Some(v) => {
                out.push_str(v);
                used.push(v.clone());
            }
            None => {
                return Err(err(
                    key,
                    format!(
                        "${name}: no key {name:?} in the Secret {}",
                        super::SECRET_NAME
                    ),
                ));
            }
        }
        rest = &after[name.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A subscription: where a trigger's notifications go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subscription {
    pub trigger: String,
    pub service: String,
    pub recipient: String,
}

/// A subscription annotation that could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("annotation {annotation:?}: {message}")]
pub struct SubscriptionError {
    pub annotation: String,
    pub message: String,
}

/// The subscriptions a Rollout's annotations make
/// (`notifications.sluice.dev/subscribe.<trigger>.<service>: <recipient>[;<recipient>...]`,
/// Argo's `notifications.argoproj.io/...` too; `subscribe.<service>` subscribes
/// `defaultTriggers`). Services with dots in their name are matched against `services`.
pub fn annotation_subscriptions(
    annotations: &BTreeMap<String, String>,
    services: &[&str],
    default_triggers: &[String],
) -> (Vec<Subscription>, Vec<SubscriptionError>) {
    let mut subs = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in annotations {
        let Some(rest) = super::SUBSCRIBE_PREFIXES
            .iter()
            .find_map(|p| key.strip_prefix(p))
        else {
            continue;
        };
        // The service is the longest configured name the key ends with; otherwise the last
        // dot-separated part.
        let split = services
            .iter()
            .filter(|s| rest == **s || rest.ends_with(&format!(".{s}")))
            .max_by_key(|s| s.len())
            .map(|s| {
                let trigger = rest[..rest.len() - s.len()].trim_end_matches('.');
                (trigger.to_string(), s.to_string())
            })
            .unwrap_or_else(|| match rest.rsplit_once('.') {
                Some((t, s)) => (t.to_string(), s.to_string()),
                None => (String::new(), rest.to_string()),
            });
        let (trigger, service) = split;
        if service.is_empty() {
            errors.push(SubscriptionError {
                annotation: key.clone(),
                message: "names no service".into(),
            });
            continue;
        }
        let triggers = if trigger.is_empty() {
            if default_triggers.is_empty() {
                errors.push(SubscriptionError {
                    annotation: key.clone(),
                    message: "names no trigger and the configuration has no defaultTriggers".into(),
                });
                continue;
            }
            default_triggers.to_vec()
        } else {
            vec![trigger]
        };
        let recipients: Vec<&str> = value
            .split([';', ','])
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect();
        let recipients = if recipients.is_empty() {
            vec![""]
        } else {
            recipients
        };
        for t in &triggers {
            for r in &recipients {
                subs.push(Subscription {
                    trigger: t.clone(),
                    service: service.clone(),
                    recipient: r.to_string(),
                });
            }
        }
    }
    subs.sort();
    subs.dedup();
    (subs, errors)
}

impl Config {
    /// Parses a ConfigMap's `data` without its Secret (for offline checks): every `$name`
    /// stands for a placeholder URL.
    pub fn parse_without_secret(data: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let mut placeholders = BTreeMap::new();
        for value in data.values() {
            let mut rest = value.as_str();
            while let Some(at) = rest.find('$') {
                let after = &rest[at + 1..];
                let len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                    .unwrap_or(after.len());
                let name = after[..len].trim_end_matches('.');
                if !name.is_empty() {
                    placeholders.insert(name.to_string(), "https://secret.invalid/".to_string());
                }
                rest = &after[len..];
            }
        }
        Config::parse(data, &placeholders)
    }

    /// What is wrong with a Rollout's subscription annotations under this configuration:
    /// `(annotation, problem)` pairs.
    pub fn check_subscriptions(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let services: Vec<&str> = self.services.keys().map(String::as_str).collect();
        let (subs, errors) =
            annotation_subscriptions(annotations, &services, &self.default_triggers);
        let mut out: Vec<(String, String)> = errors
            .into_iter()
            .map(|e| (e.annotation, e.message))
            .collect();
        for key in annotations.keys() {
            let Some(rest) = super::SUBSCRIBE_PREFIXES
                .iter()
                .find_map(|p| key.strip_prefix(p))
            else {
                continue;
            };
            for s in subs.iter().filter(|s| rest.ends_with(s.service.as_str())) {
                if !self.services.contains_key(&s.service) {
                    out.push((
                        key.clone(),
                        format!(
                            "service {:?} is not configured in ConfigMap {} (configured: {})",
                            s.service,
                            super::CONFIG_MAP_NAME,
                            if services.is_empty() {
                                "none".to_string()
                            } else {
                                services.join(", ")
                            }
                        ),
                    ));
                } else if rest.starts_with(s.trigger.as_str()) && self.trigger(&s.trigger).is_none()
                {
                    out.push((
                        key.clone(),
                        format!(
                            "trigger {:?} is neither configured in ConfigMap {} nor built in",
                            s.trigger,
                            super::CONFIG_MAP_NAME
                        ),
                    ));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn services_take_secret_values_and_remember_them() {
        let data = map(&[
            ("service.slack", "token: $slack-token\n"),
            (
                "service.webhook.ci",
                "url: https://ci.example/hook\nheaders:\n- name: Authorization\n  value: Bearer $ci-token\n",
            ),
            ("service.teams", "recipientUrls:\n  ops: $teams-url\n"),
        ]);
        let secret = map(&[
            ("slack-token", "xoxb-123"),
            ("ci-token", "s3cr3t"),
            ("teams-url", "https://teams.example/wf/abc"),
        ]);
        let c = Config::parse(&data, &secret).unwrap();
        let Service::Slack(s) = &c.services["slack"] else {
            panic!("slack")
        };
        assert_eq!(s.token.as_deref(), Some("xoxb-123"));
        let Service::Webhook(w) = &c.services["ci"] else {
            panic!("webhook")
        };
        assert_eq!(w.headers[0].value, "Bearer s3cr3t");
        assert_eq!(
            c.redact("token xoxb-123 and s3cr3t at https://teams.example/wf/abc"),
            "token *** and *** at ***"
        );
    }

    #[test]
    fn a_missing_secret_key_names_the_configmap_key_and_not_the_value() {
        let data = map(&[("service.slack", "token: $nope\n")]);
        let e = Config::parse(&data, &BTreeMap::new()).unwrap_err();
        assert_eq!(e.key, "service.slack");
        assert!(e.message.contains("\"nope\""), "{e}");
    }

    #[test]
    fn bad_keys_and_templates_are_refused_with_their_key() {
        let e = Config::parse(&map(&[("service.pager", "x: 1")]), &BTreeMap::new()).unwrap_err();
        assert_eq!(e.key, "service.pager");
        let e = Config::parse(
            &map(&[("template.t", "message: \"{{ rollout.metadata.name \"")]),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(e.key, "template.t");
        let e = Config::parse(
            &map(&[("trigger.on-x", "- send: [nope]\n")]),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.message.contains("nope"), "{e}");
        let e = Config::parse(
            &map(&[(
                "trigger.on-x",
                "- send: [rollout-aborted]\n  when: rollout.status.phase ==\n",
            )]),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(e.key, "trigger.on-x");
        let e = Config::parse(
            &map(&[("service.webhook.w", "url: ftp://x\n")]),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.message.contains("http"), "{e}");
    }

    #[test]
    fn builtin_triggers_send_builtin_templates() {
        let c = Config::parse(&BTreeMap::new(), &BTreeMap::new()).unwrap();
        let t = c.trigger("on-rollout-aborted").unwrap();
        assert_eq!(t[0].send, vec!["rollout-aborted".to_string()]);
        assert!(c.template("rollout-aborted").is_some());
        assert!(c.trigger("on-nothing-like-this").is_none());
    }

    #[test]
    fn annotations_subscribe_with_either_prefix_and_many_recipients() {
        let ann = map(&[
            (
                "notifications.sluice.dev/subscribe.on-rollout-aborted.slack",
                "ops;dev",
            ),
            (
                "notifications.argoproj.io/subscribe.on-rollout-completed.teams",
                "ops",
            ),
            ("notifications.sluice.dev/subscribe.my.hook", ""),
            ("other/annotation", "x"),
        ]);
        let (subs, errors) = annotation_subscriptions(
            &ann,
            &["slack", "teams", "my.hook"],
            &["on-rollout-aborted".to_string()],
        );
        assert!(errors.is_empty(), "{errors:?}");
        let got: Vec<(String, String, String)> = subs
            .into_iter()
            .map(|s| (s.trigger, s.service, s.recipient))
            .collect();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            got,
            vec![
                s("on-rollout-aborted", "my.hook", ""),
                s("on-rollout-aborted", "slack", "dev"),
                s("on-rollout-aborted", "slack", "ops"),
                s("on-rollout-completed", "teams", "ops"),
            ]
        );
    }

    #[test]
    fn subscriptions_are_checked_offline_against_the_configmap() {
        let data = map(&[
            ("service.slack", "token: $slack-token\n"),
            ("service.teams", "recipientUrls:\n  ops: $teams-url\n"),
        ]);
        let c = Config::parse_without_secret(&data).unwrap();
        let ann = map(&[
            (
                "notifications.sluice.dev/subscribe.on-rollout-aborted.slack",
                "ops",
            ),
            (
                "notifications.sluice.dev/subscribe.on-rollout-aborted.pager",
                "ops",
            ),
            (
                "notifications.argoproj.io/subscribe.on-rollout-exploded.teams",
                "ops",
            ),
        ]);
        let problems = c.check_subscriptions(&ann);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].0.ends_with("on-rollout-exploded.teams"));
        assert!(problems[0].1.contains("on-rollout-exploded"));
        assert!(problems[1].0.ends_with(".pager"));
        assert!(problems[1].1.contains("configured: slack, teams"));
    }

    #[test]
    fn default_subscriptions_must_name_known_services() {
        let data = map(&[(
            "subscriptions",
            "- recipients: [slack:ops]\n  triggers: [on-rollout-aborted]\n",
        )]);
        let e = Config::parse(&data, &BTreeMap::new()).unwrap_err();
        assert_eq!(e.key, "subscriptions");
    }
}
