//! What each service is sent: the HTTP request of a rendered notification.
//!
//! - webhook: the template's `webhook.<name>` (method, path, body), or by default a JSON body
//!   with the trigger, the Event and the Rollout's name, namespace and revision;
//! - Slack: `text` (what phones show) and one attachment with the status colour whose blocks
//!   hold the title, the message, the fields and the link (Slack's "secondary content");
//!   posted to an incoming webhook, or with a bot token to `chat.postMessage`;
//! - Teams: a workflow webhook message carrying an Adaptive Card (version 1.4).

use serde_json::{Value, json};

use super::config::{Service, Template};
use super::template::{self, Severity};

/// A notification rendered for one destination, before it becomes a request.
#[derive(Debug, Clone)]
pub struct Message {
    pub title: String,
    pub text: String,
    pub severity: Severity,
    /// Label and value pairs (Rollout, revision, step, phase, image).
    pub fields: Vec<(String, String)>,
    /// Where to read more, from the ConfigMap's `context.rolloutUrl` template.
    pub link: Option<String>,
}

/// An HTTP request to make.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub basic_auth: Option<(String, String)>,
    pub body: Option<String>,
    /// Slack's Web API answers 200 with `{"ok": false}` on errors: the body must be read.
    pub slack_api: bool,
}

/// Renders the common parts of `t`.
pub fn render_message(t: &Template, vars: &Value, trigger: &str) -> Result<Message, String> {
    let text = template::render(&t.message, vars).map_err(|e| format!("message: {e}"))?;
    let title = match &t.title {
        Some(src) => template::render(src, vars).map_err(|e| format!("title: {e}"))?,
        None => trigger.to_string(),
    };
    let ro = &vars["rollout"];
    let mut fields = vec![(
        "Rollout".to_string(),
        format!(
            "{}/{}",
            vars["namespace"].as_str().unwrap_or_default(),
            vars["name"].as_str().unwrap_or_default()
        ),
    )];
    let mut add = |label: &str, v: &Value| {
        if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
            fields.push((label.to_string(), s.to_string()));
        }
    };
    add("Revision", &vars["revision"]);
    add("Step", &ro["status"]["currentStep"]);
    add("Phase", &ro["status"]["phase"]);
    add(
        "Image",
        &ro["spec"]["template"]["spec"]["containers"][0]["image"],
    );
    let link = match vars["context"]["rolloutUrl"].as_str() {
        Some(src) => {
            Some(template::render(src, vars).map_err(|e| format!("context.rolloutUrl: {e}"))?)
                .filter(|s| !s.is_empty())
        }
        None => None,
    };
    Ok(Message {
        title,
        text,
        severity: Severity::of_trigger(trigger),
        fields,
        link,
    })
}

/// The request that delivers `msg` (rendered from `t` with `vars`) through `service` (named
/// `name`) to `recipient`.
pub fn request(
    name: &str,
    service: &Service,
    recipient: &str,
    t: &Template,
    vars: &Value,
    msg: &Message,
    trigger: &str,
) -> Result<Request, String> {
    match service {
        Service::Webhook(w) => {
            let spec = t.webhook.get(name);
            let method = spec
                .and_then(|s| s.method.as_deref())
                .unwrap_or("POST")
                .to_ascii_uppercase();
            let method = match method.as_str() {
                "GET" | "POST" | "PUT" | "PATCH" => reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|e| format!("webhook.{name}.method: {e}"))?,
                other => {
                    return Err(format!(
                        "webhook.{name}.method: {other:?} is not one of GET, POST, PUT, PATCH"
                    ));
                }
            };
            let path = match spec.and_then(|s| s.path.as_deref()) {
                Some(p) => {
                    template::render(p, vars).map_err(|e| format!("webhook.{name}.path: {e}"))?
                }
                None => String::new(),
            };
            let body = match spec.and_then(|s| s.body.as_deref()) {
                Some(b) => {
                    template::render(b, vars).map_err(|e| format!("webhook.{name}.body: {e}"))?
                }
                None => json!({
                    "trigger": trigger,
                    "title": msg.title,
                    "message": msg.text,
                    "reason": vars["event"]["reason"],
                    "type": vars["event"]["type"],
                    "rollout": {
                        "namespace": vars["namespace"],
                        "name": vars["name"],
                        "revision": vars["revision"],
                    },
                    "recipient": recipient,
                })
                .to_string(),
            };
            let mut headers: Vec<(String, String)> = w
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            Ok(Request {
                method,
                url: format!("{}{}", w.url, path),
                headers,
                basic_auth: w
                    .basic_auth
                    .as_ref()
                    .map(|b| (b.username.clone(), b.password.clone())),
                body: Some(body),
                slack_api: false,
            })
        }
        Service::Slack(s) => {
            let mut payload = slack_payload(t, vars, msg)?;
            let webhook = s.recipient_urls.get(recipient).or(s.webhook_url.as_ref());
            let json_headers = vec![(
                "Content-Type".to_string(),
                "application/json; charset=utf-8".to_string(),
            )];
            if let Some(username) = &s.username {
                payload["username"] = json!(username);
            }
            if let Some(icon) = &s.icon {
                let key = if icon.starts_with(':') {
                    "icon_emoji"
                } else {
                    "icon_url"
                };
                payload[key] = json!(icon);
            }
            match (webhook, &s.token) {
                (Some(url), _) => Ok(Request {
                    method: reqwest::Method::POST,
                    url: url.clone(),
                    headers: json_headers,
                    basic_auth: None,
                    body: Some(payload.to_string()),
                    slack_api: false,
                }),
                (None, Some(token)) => {
                    if recipient.is_empty() {
                        return Err("slack: chat.postMessage needs a channel as recipient".into());
                    }
                    payload["channel"] = json!(recipient);
                    let base = s
                        .api_url
                        .as_deref()
                        .unwrap_or("https://slack.com/api")
                        .trim_end_matches('/');
                    let mut headers = json_headers;
                    headers.push(("Authorization".into(), format!("Bearer {token}")));
                    Ok(Request {
                        method: reqwest::Method::POST,
                        url: format!("{base}/chat.postMessage"),
                        headers,
                        basic_auth: None,
                        body: Some(payload.to_string()),
                        slack_api: true,
                    })
                }
                (None, None) => Err(format!(
                    "slack: no webhook for recipient {recipient:?} and no token"
                )),
            }
        }
        Service::Teams(tm) => {
            let url = tm
                .recipient_urls
                .get(recipient)
                .or(tm.webhook_url.as_ref())
                .ok_or_else(|| format!("teams: no webhook for recipient {recipient:?}"))?;
            Ok(Request {
                method: reqwest::Method::POST,
                url: url.clone(),
                headers: vec![("Content-Type".into(), "application/json".into())],
                basic_auth: None,
                body: Some(teams_payload(t, vars, msg)?.to_string()),
                slack_api: false,
            })
        }
    }
}

fn json_template(src: &str, vars: &Value, field: &str) -> Result<Value, String> {
    let text = template::render(src, vars).map_err(|e| format!("{field}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{field}: not JSON after rendering: {e}"))
}

/// Escapes text for Slack's mrkdwn (`&`, `<`, `>`), so that a message never forms a link or a
/// mention by accident.
fn mrkdwn_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cuts `s` to at most `max` characters (Slack and Teams refuse longer text fields).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's message payload.
pub fn slack_payload(t: &Template, vars: &Value, msg: &Message) -> Result<Value, String> {
    let mut payload = json!({ "text": clip(&format!("{}: {}", msg.title, msg.text), 3000) });
    let custom = t.slack.as_ref();
    if let Some(src) = custom.and_then(|s| s.blocks.as_deref()) {
        payload["blocks"] = json_template(src, vars, "slack.blocks")?;
    }
    if let Some(src) = custom.and_then(|s| s.attachments.as_deref()) {
        payload["attachments"] = json_template(src, vars, "slack.attachments")?;
        return Ok(payload);
    }
    if payload.get("blocks").is_some() {
        return Ok(payload);
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&msg.title, 150), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&mrkdwn_escape(&msg.text), 3000)}}),
    ];
    if !msg.fields.is_empty() {
        let fields: Vec<Value> = msg
            .fields
            .iter()
            .take(10)
            .map(|(k, v)| {
                json!({"type": "mrkdwn", "text": clip(&format!("*{k}*\n{}", mrkdwn_escape(v)), 2000)})
            })
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if let Some(link) = &msg.link {
        blocks.push(json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open rollout"}, "url": clip(link, 3000)}
        ]}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("sluice · {}", mrkdwn_escape(vars["event"]["reason"].as_str().unwrap_or_default()))}
    ]}));
    payload["attachments"] = json!([{
        "color": msg.severity.slack_color(),
        "fallback": clip(&format!("{}: {}", msg.title, msg.text), 3000),
        "blocks": blocks,
    }]);
    Ok(payload)
}

/// The Teams workflow message: one Adaptive Card attachment.
pub fn teams_payload(t: &Template, vars: &Value, msg: &Message) -> Result<Value, String> {
    let custom = t.teams.as_ref();
    let card = match custom.and_then(|c| c.adaptive_card.as_deref()) {
        Some(src) => json_template(src, vars, "teams.adaptiveCard")?,
        None => {
            let title = match custom.and_then(|c| c.title.as_deref()) {
                Some(src) => {
                    template::render(src, vars).map_err(|e| format!("teams.title: {e}"))?
                }
                None => msg.title.clone(),
            };
            let facts = match custom.and_then(|c| c.facts.as_deref()) {
                Some(src) => json_template(src, vars, "teams.facts")?,
                None => Value::Array(
                    msg.fields
                        .iter()
                        .map(|(k, v)| json!({"title": k, "value": v}))
                        .collect(),
                ),
            };
            let mut card = json!({
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": [
                    {"type": "TextBlock", "text": title, "size": "Medium", "weight": "Bolder",
                     "color": msg.severity.card_color(), "wrap": true},
                    {"type": "TextBlock", "text": msg.text, "wrap": true},
                    {"type": "FactSet", "facts": facts},
                ],
            });
            if let Some(link) = &msg.link {
                card["actions"] =
                    json!([{"type": "Action.OpenUrl", "title": "Open rollout", "url": link}]);
            }
            card
        }
    };
    Ok(json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::notifications::config::{SlackService, SlackTemplate, TeamsService};

    fn vars() -> Value {
        let rollout = json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": [{"image": "web:2"}]}}},
            "status": {"phase": "Degraded", "currentStep": "2/4"}
        });
        let event = json!({"reason": "RolloutAborted", "message": "aborted at step 2 of 4: <x> & y",
            "trigger": "on-rollout-aborted", "type": "Warning"});
        let mut ctx = BTreeMap::new();
        ctx.insert(
            "rolloutUrl".to_string(),
            "https://dash.example/rollouts/{{ namespace }}/{{ name }}".to_string(),
        );
        template::variables(&rollout, Some("3"), &event, "slack", "#ops", &ctx)
    }

    #[test]
    fn slack_bot_posts_to_the_channel_with_a_coloured_attachment() {
        let v = vars();
        let t = template::builtin("rollout-aborted").unwrap();
        let msg = render_message(&t, &v, "on-rollout-aborted").unwrap();
        let svc = Service::Slack(SlackService {
            token: Some("xoxb-1".into()),
            api_url: Some("http://127.0.0.1:1/api/".into()),
            ..Default::default()
        });
        let req = request("slack", &svc, "#ops", &t, &v, &msg, "on-rollout-aborted").unwrap();
        assert_eq!(req.url, "http://127.0.0.1:1/api/chat.postMessage");
        assert!(req.slack_api);
        assert!(
            req.headers
                .iter()
                .any(|(k, v)| k == "Authorization" && v == "Bearer xoxb-1")
        );
        let body: Value = serde_json::from_str(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["channel"], "#ops");
        let att = &body["attachments"][0];
        assert_eq!(att["color"], "#e01e5a");
        let blocks = att["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"], "Rollout shop/web aborted");
        assert_eq!(
            blocks[1]["text"]["text"],
            "aborted at step 2 of 4: &lt;x&gt; &amp; y"
        );
        assert_eq!(blocks[2]["fields"][0]["text"], "*Rollout*\nshop/web");
        assert_eq!(
            blocks[3]["elements"][0]["url"],
            "https://dash.example/rollouts/shop/web"
        );
    }

    #[test]
    fn slack_templates_replace_the_builtin_attachment() {
        let v = vars();
        let t = Template {
            message: "{{ name }} is purple".into(),
            slack: Some(SlackTemplate {
                attachments: Some(r##"[{"title": "{{ name }}", "color": "#800080"}]"##.into()),
                blocks: None,
            }),
            ..Default::default()
        };
        let msg = render_message(&t, &v, "on-purple").unwrap();
        let p = slack_payload(&t, &v, &msg).unwrap();
        assert_eq!(
            p["attachments"],
            json!([{"title": "web", "color": "#800080"}])
        );
        let bad = Template {
            slack: Some(SlackTemplate {
                attachments: Some("[{".into()),
                blocks: None,
            }),
            ..Default::default()
        };
        assert!(
            slack_payload(&bad, &v, &msg)
                .unwrap_err()
                .contains("not JSON")
        );
    }

    #[test]
    fn teams_gets_an_adaptive_card() {
        let v = vars();
        let t = template::builtin("rollout-completed").unwrap();
        let msg = render_message(&t, &v, "on-rollout-completed").unwrap();
        let svc = Service::Teams(TeamsService {
            recipient_urls: [("ops".to_string(), "https://wf.example/x".to_string())].into(),
            webhook_url: None,
        });
        let req = request("teams", &svc, "ops", &t, &v, &msg, "on-rollout-completed").unwrap();
        let body: Value = serde_json::from_str(req.body.as_deref().unwrap()).unwrap();
        let card = &body["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][0]["color"], "Good");
        assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
        assert!(request("teams", &svc, "dev", &t, &v, &msg, "x").is_err());
    }
}
