//! Notifications end to end: a real HTTP receiver on loopback records what the controller
//! sends when Rollouts abort (by a failed analysis measured through a real Prometheus), pause
//! and complete; it answers as the test says (500s, Slack's `{"ok": true}`).
//!
//! Checked: one message per transition, the abort's metric, value and condition in the
//! message, delivery after a controller restart, retries after 500s, secrets absent from logs,
//! Events, status and annotations, URLs off the allowlist refused, and the Slack and Teams
//! payloads against the structure their documentation gives.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::Value;
use sluice::api::analysis::AnalysisTemplate;
use sluice::api::rollout::Rollout;
use sluice::controller::ControllerConfig;
use sluice::metrics::prometheus::AddressAllowlist;
use sluice::notifications::{DELIVERED_ANNOTATION, NotificationSettings, PENDING_ANNOTATION};
use sluice_e2e::prometheus::PrometheusServer;
use sluice_test_support::controller::*;

// ---------------------------------------------------------------------------------------------
// The receiver.

#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
    status: u16,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Statuses for the next requests, then `default`.
    script: VecDeque<u16>,
    /// Fixed statuses by path prefix, before the script.
    fixed: Vec<(String, u16)>,
    default: u16,
}

struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn handle(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let mut s = state.lock().unwrap();
    let fixed = s
        .fixed
        .iter()
        .find(|(p, _)| uri.path().starts_with(p.as_str()))
        .map(|(_, st)| *st);
    let status = match fixed {
        Some(st) => st,
        None => s.script.pop_front().unwrap_or(s.default),
    };
    s.received.push(Received {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body,
        status,
    });
    let reply = if uri.path().ends_with("chat.postMessage") && status == 200 {
        r#"{"ok": true}"#.to_string()
    } else {
        String::new()
    };
    (StatusCode::from_u16(status).unwrap(), reply)
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState {
            default: 200,
            ..Default::default()
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            state,
            _task: task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn answer(&self, script: &[u16], default: u16) {
        let mut s = self.state.lock().unwrap();
        s.script = script.iter().copied().collect();
        s.default = default;
    }

    fn always(&self, prefix: &str, status: u16) {
        self.state
            .lock()
            .unwrap()
            .fixed
            .push((prefix.to_string(), status));
    }

    /// Requests answered with a success.
    fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }

    /// Waits until `n` requests were answered 200, then a little longer to see no more come.
    async fn expect_delivered(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = std::time::Instant::now() + patience(secs);
        while self.delivered().len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {n} delivered notifications; received {:#?}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Another reconcile, a watch event or a retry must not send it again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let got = self.delivered();
        assert_eq!(got.len(), n, "exactly {n} notifications: {got:#?}");
        got
    }
}

// ---------------------------------------------------------------------------------------------
// Setup.

fn notify_config(base: ControllerConfig, ns: &str, allow: &str) -> ControllerConfig {
    let mut n = NotificationSettings::new(ns, AddressAllowlist::new([allow]).unwrap());
    n.retry_wait_min = Duration::from_millis(200);
    n.retry_wait_max = Duration::from_secs(1);
    ControllerConfig {
        notifications: Some(n),
        ..base
    }
}

/// A cluster with the nginx canary's objects and the notification ConfigMap and Secret; the
/// controller is started by the caller (it needs the namespace).
async fn env_with(data: &[(&str, &str)], secret: &[(&str, &str)]) -> Env {
    sluice_test_support::logs::capture();
    let env = Env::without_controller().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("sluice-notifications".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let s = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("sluice-notifications-secret".into()),
            ..Default::default()
        },
        string_data: Some(
            secret
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    env
}

fn subscribed(mut r: Rollout, annotations: &[(&str, &str)]) -> Rollout {
    let a = r.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in annotations {
        a.insert(k.to_string(), v.to_string());
    }
    r
}

const PAUSING: &str = "steps:\n- setWeight: 20\n- pause: {}\n";

async fn events_text(env: &Env) -> String {
    let api: Api<K8sEvent> = Api::namespaced(env.client.clone(), env.ns());
    serde_json::to_string(&api.list(&Default::default()).await.unwrap().items).unwrap()
}

fn body(r: &Received) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("JSON body: {e}: {}", r.body))
}

// ---------------------------------------------------------------------------------------------
// Slack's and Teams' documented payload structure.

/// Slack message with secondary attachments holding blocks: `text` as the notification
/// fallback, attachments with a hex `color`, blocks of known types within Slack's limits
/// (header: plain_text ≤ 150; section: text ≤ 3000 and ≤ 10 fields of ≤ 2000; actions: buttons
/// with plain_text ≤ 75 and url ≤ 3000; context: ≤ 10 elements; ≤ 50 blocks).
fn check_slack_payload(p: &Value) {
    let text = p["text"].as_str().expect("text");
    assert!(!text.is_empty() && text.chars().count() <= 40_000);
    let attachments = p["attachments"].as_array().expect("attachments");
    assert!(!attachments.is_empty());
    for a in attachments {
        let color = a["color"].as_str().expect("color");
        assert!(
            color.len() == 7
                && color.starts_with('#')
                && color[1..].chars().all(|c| c.is_ascii_hexdigit()),
            "{color}"
        );
        let blocks = a["blocks"].as_array().expect("blocks");
        assert!(!blocks.is_empty() && blocks.len() <= 50);
        for b in blocks {
            let text_object = |t: &Value, max: usize| {
                let kind = t["type"].as_str().expect("text object type");
                assert!(kind == "mrkdwn" || kind == "plain_text", "{t}");
                let s = t["text"].as_str().expect("text object text");
                assert!(!s.is_empty() && s.chars().count() <= max, "{t}");
            };
            match b["type"].as_str().expect("block type") {
                "header" => {
                    assert_eq!(b["text"]["type"], "plain_text");
                    text_object(&b["text"], 150);
                }
                "section" => {
                    assert!(b.get("text").is_some() || b.get("fields").is_some());
                    if let Some(t) = b.get("text") {
                        text_object(t, 3000);
                    }
                    if let Some(f) = b.get("fields") {
                        let f = f.as_array().unwrap();
                        assert!(f.len() <= 10);
                        f.iter().for_each(|t| text_object(t, 2000));
                    }
                }
                "actions" => {
                    for e in b["elements"].as_array().unwrap() {
                        assert_eq!(e["type"], "button");
                        assert_eq!(e["text"]["type"], "plain_text");
                        text_object(&e["text"], 75);
                        assert!(e["url"].as_str().unwrap().len() <= 3000);
                    }
                }
                "context" => {
                    let e = b["elements"].as_array().unwrap();
                    assert!(!e.is_empty() && e.len() <= 10);
                    e.iter().for_each(|t| text_object(t, 3000));
                }
                other => panic!("unexpected block type {other}"),
            }
        }
    }
}

/// A Teams workflow message: one attachment of content type
/// `application/vnd.microsoft.card.adaptive` whose content is an Adaptive Card (`type`,
/// `version`, `body` of elements with their required properties; TextBlock colours from the
/// schema's enumeration; facts with `title` and `value`; OpenUrl actions with `url`).
fn check_adaptive_card(p: &Value) {
    assert_eq!(p["type"], "message");
    let a = &p["attachments"][0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &a["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(card["version"].as_str().unwrap().starts_with("1."));
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    for e in card["body"].as_array().expect("body") {
        match e["type"].as_str().unwrap() {
            "TextBlock" => {
                assert!(e["text"].is_string());
                if let Some(c) = e.get("color") {
                    let c = c.as_str().unwrap();
                    assert!(
                        [
                            "Default",
                            "Dark",
                            "Light",
                            "Accent",
                            "Good",
                            "Warning",
                            "Attention"
                        ]
                        .contains(&c),
                        "{c}"
                    );
                }
            }
            "FactSet" => {
                for f in e["facts"].as_array().unwrap() {
                    assert!(f["title"].is_string() && f["value"].is_string(), "{f}");
                }
            }
            other => panic!("unexpected element {other}"),
        }
    }
    if let Some(actions) = card.get("actions") {
        for a in actions.as_array().unwrap() {
            assert_eq!(a["type"], "Action.OpenUrl");
            assert!(a["url"].is_string() && a["title"].is_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

const TEMPLATE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: rate}
spec:
  args:
  - name: value
  metrics:
  - name: success-rate
    interval: 1s
    count: 3
    failureLimit: 0
    successCondition: result[0] >= 0.95
    failureCondition: result[0] < 0.5
    provider:
      prometheus:
        query: vector({{args.value}})
"#;

const SLACK_TOKEN: &str = "xoxb-0000-SECRET-slack-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_abort_sends_one_slack_message_with_metric_value_and_condition() {
    let prom = PrometheusServer::start(&[]).await.expect("prometheus");
    let rx = Receiver::start().await;
    let slack = format!("token: $slack-token\napiUrl: {}/api\n", rx.url());
    let mut env = env_with(
        &[
            ("service.slack", &slack),
            (
                "context",
                "rolloutUrl: https://dash.example/{{ namespace }}/{{ name }}\n",
            ),
        ],
        &[("slack-token", SLACK_TOKEN)],
    )
    .await;
    let base = prometheus_config(&prom.url(), Some(&prom.url()));
    env.controller =
        Some(start_controller(&env.cluster, notify_config(base, env.ns(), &rx.url())).await);
    let templates: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), env.ns());
    let template: AnalysisTemplate = serde_yaml::from_str(TEMPLATE).unwrap();
    templates
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    let spec = format!(
        "{NGINX}steps:\n- setWeight: 20\n- analysis:\n    templates: [{{templateName: rate}}]\n    args: [{{name: value, value: \"0.3\"}}]\n- pause: {{}}\n"
    );
    let ro = subscribed(
        rollout("web", 2, "web:1", &spec),
        &[(
            "notifications.sluice.dev/subscribe.on-rollout-aborted.slack",
            "#deploys",
        )],
    );
    env.create(&ro).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "aborted", 90, |r| phase(r) == "Degraded")
        .await;

    let got = rx.expect_delivered(1, 30).await;
    let m = &got[0];
    assert_eq!(m.method, "POST");
    assert_eq!(m.path, "/api/chat.postMessage");
    assert_eq!(
        m.headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {SLACK_TOKEN}").as_str())
    );
    let p = body(m);
    check_slack_payload(&p);
    assert_eq!(p["channel"], "#deploys");
    assert_eq!(p["attachments"][0]["color"], "#e01e5a");
    let text = p["text"].as_str().unwrap();
    for needle in [
        "web",
        "aborted at step 2 of 3",
        "success-rate",
        "0.3",
        "0.3 < 0.5 (failure condition)",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
    let blocks = p["attachments"][0]["blocks"].to_string();
    assert!(blocks.contains("Revision"), "{blocks}");
    assert!(blocks.contains("https://dash.example/"), "{blocks}");

    // Delivered, recorded, and the outbox empty.
    let r = env.get("web").await;
    assert!(!r.annotations().contains_key(PENDING_ANNOTATION));
    assert!(r.annotations().contains_key(DELIVERED_ANNOTATION));
    // The token never appears outside the request that needs it.
    assert!(
        !sluice_test_support::logs::text().contains(SLACK_TOKEN),
        "token in the logs"
    );
    assert!(!events_text(&env).await.contains(SLACK_TOKEN));
    assert!(!serde_json::to_string(&r).unwrap().contains(SLACK_TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_sends_one_completed_message_to_teams() {
    let rx = Receiver::start().await;
    let teams = format!("recipientUrls:\n  ops: {}/teams/ops\n", rx.url());
    let mut env = env_with(&[("service.teams", &teams)], &[]).await;
    env.controller =
        Some(start_controller(&env.cluster, notify_config(config(), env.ns(), &rx.url())).await);
    env.create(&rollout("web", 2, "web:1", &format!("{NGINX}{PAUSING}")))
        .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    // Subscribed after the first revision completed: only the promotion is news.
    env.rollouts()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"metadata": {"annotations": {
                "notifications.argoproj.io/subscribe.on-rollout-completed.teams": "ops"}}})),
        )
        .await
        .unwrap();
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused", 60, |r| phase(r) == "Paused")
        .await;
    assert!(rx.received().is_empty(), "nothing subscribed fired yet");
    env.promote("web").await;
    env.wait_for("web", "promoted", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r)
    })
    .await;
    let got = rx.expect_delivered(1, 30).await;
    assert_eq!(got[0].path, "/teams/ops");
    let p = body(&got[0]);
    check_adaptive_card(&p);
    let card = &p["attachments"][0]["content"];
    assert_eq!(card["body"][0]["color"], "Good");
    assert!(
        card["body"][0]["text"]
            .as_str()
            .unwrap()
            .contains("completed revision 2"),
        "{card}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_before_sending_delivers_once_after_restart() {
    let rx = Receiver::start().await;
    // The receiver is down (503) while the transition happens.
    rx.answer(&[], 503);
    let hook = format!("url: {}/hook\n", rx.url());
    let mut env = env_with(&[("service.webhook.hook", &hook)], &[]).await;
    let ns = env.ns().to_string();
    let cfg = || notify_config(config(), &ns, &rx.url());
    env.controller = Some(start_controller(&env.cluster, cfg()).await);
    let ro = subscribed(
        rollout("web", 2, "web:1", &format!("{NGINX}{PAUSING}")),
        &[(
            "notifications.sluice.dev/subscribe.on-rollout-paused.hook",
            "",
        )],
    );
    env.create(&ro).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused with the notification queued", 60, |r| {
        phase(r) == "Paused" && r.annotations().contains_key(PENDING_ANNOTATION)
    })
    .await;
    let deadline = std::time::Instant::now() + patience(30);
    while rx.received().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no try reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Killed with the notification undelivered.
    drop(env.controller.take());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.delivered().is_empty());
    rx.answer(&[], 200);

    env.controller = Some(start_controller(&env.cluster, cfg()).await);
    let got = rx.expect_delivered(1, 30).await;
    let p = body(&got[0]);
    assert_eq!(p["trigger"], "on-rollout-paused");
    assert_eq!(p["rollout"]["name"], "web");
    assert_eq!(p["rollout"]["revision"], "2");
    let r = env
        .wait_for("web", "outbox emptied", 30, |r| {
            !r.annotations().contains_key(PENDING_ANNOTATION)
        })
        .await;
    assert!(r.annotations().contains_key(DELIVERED_ANNOTATION));
}

const HOOK_SECRET: &str = "hook-SECRET-4f1c9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_500s_and_failures_are_reported_without_secrets() {
    let rx = Receiver::start().await;
    // `good` answers 500 twice then 200; `gone` answers 404 (permanent) and its URL and header
    // carry a secret; `outside` is not on the allowlist.
    let good = format!(
        "url: {}/good\nheaders:\n- name: X-Token\n  value: $hook-secret\n",
        rx.url()
    );
    let gone = format!("url: {}/gone/$hook-secret\n", rx.url());
    let mut env = env_with(
        &[
            ("service.webhook.good", &good),
            ("service.webhook.gone", &gone),
            ("service.webhook.outside", "url: http://127.0.0.2:9/x\n"),
            (
                "template.paused-hook",
                "message: paused {{ name }}\nwebhook:\n  good:\n    method: PUT\n    path: /{{ namespace }}/{{ name }}\n    body: '{\"text\": \"{{ event.message }}\", \"rev\": \"{{ revision }}\"}'\n  gone:\n    method: POST\n",
            ),
            (
                "trigger.on-rollout-paused",
                "- when: rollout.status.phase == 'Paused' or event.reason == 'RolloutPaused'\n  send: [paused-hook]\n- when: rollout.metadata.name == 'not-this-one'\n  send: [rollout-paused]\n",
            ),
        ],
        &[("hook-secret", HOOK_SECRET)],
    )
    .await;
    env.controller =
        Some(start_controller(&env.cluster, notify_config(config(), env.ns(), &rx.url())).await);
    let ro = subscribed(
        rollout("web", 2, "web:1", &format!("{NGINX}{PAUSING}")),
        &[
            (
                "notifications.sluice.dev/subscribe.on-rollout-paused.good",
                "",
            ),
            (
                "notifications.sluice.dev/subscribe.on-rollout-paused.gone",
                "",
            ),
            (
                "notifications.sluice.dev/subscribe.on-rollout-paused.outside",
                "",
            ),
        ],
    );
    env.create(&ro).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    rx.always("/gone/", 404);
    rx.answer(&[500, 500], 200);
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused", 60, |r| phase(r) == "Paused")
        .await;

    let got = rx.expect_delivered(1, 30).await;
    let good: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|r| r.path.starts_with(&format!("/good/{}/web", env.ns())))
        .collect();
    let statuses: Vec<u16> = good.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 500, 200], "{good:#?}");
    assert!(
        good.iter()
            .all(|r| r.method == "PUT" && r.body == good[0].body)
    );
    assert_eq!(
        got[0].headers.get("x-token").map(String::as_str),
        Some(HOOK_SECRET)
    );
    let p = body(&got[0]);
    assert!(p["text"].as_str().unwrap().contains("paused"), "{p}");
    assert_eq!(p["rev"], "2");
    // `gone` was tried once: a 404 is not retried.
    let gone: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|r| r.path.starts_with("/gone/"))
        .collect();
    assert_eq!(gone.len(), 1, "{gone:#?}");

    // Both failures are Events that say what failed, without the secret.
    let deadline = std::time::Instant::now() + patience(20);
    let events = loop {
        let text = events_text(&env).await;
        if text.matches("NotificationFailed").count() >= 2 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failure Events: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        events.contains("to gone: failed: HTTP 404") || events.contains("to gone:"),
        "{events}"
    );
    assert!(events.contains("HTTP 404"), "{events}");
    assert!(
        events.contains("http://127.0.0.2 is not allowed by --notification-url-allow"),
        "{events}"
    );
    assert!(!events.contains(HOOK_SECRET), "secret in Events");
    let r = env.get("web").await;
    assert!(!serde_json::to_string(&r).unwrap().contains(HOOK_SECRET));
    assert!(
        !sluice_test_support::logs::text().contains(HOOK_SECRET),
        "secret in the logs"
    );

    // Counted in the metrics.
    let metrics = env.controller.as_ref().unwrap().metrics.encode();
    let line = |needle: &str| {
        metrics
            .lines()
            .find(|l| l.contains(needle) && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("{needle} missing:\n{metrics}"))
            .to_string()
    };
    assert!(line("sluice_notifications_sent_total{service=\"good\"").ends_with(" 1"));
    assert!(line("reason=\"refused_url\"").ends_with(" 1"));
    assert!(
        line("service=\"gone\",trigger=\"on-rollout-paused\",reason=\"http_status\"")
            .ends_with(" 1")
    );
}
