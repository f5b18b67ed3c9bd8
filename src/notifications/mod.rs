//! Notifications: messages to Slack, Microsoft Teams and webhooks when a Rollout's state changes
//! (aborted, paused, completed, ...), configured as Argo Rollouts' notifications are.
//!
//! Triggers fire on the Events the controller publishes about a Rollout: the Event reason
//! `RolloutAborted` fires `on-rollout-aborted`, and so on (`on-` and the reason in kebab case).
//! Events are published once per transition, after the status that records it is written, so
//! a reconcile that changes nothing notifies nobody.
//!
//! Delivery goes through an outbox kept in the Rollout's annotations:
//! - the Event's transition is appended to `notifications.sluice.dev/pending` (with the
//!   destinations still to serve) before anything is sent;
//! - a sender task sends, with retries on 5xx, 429 and network errors, within a rate limit per
//!   destination, and removes what was delivered; the ids of the last delivered transitions go
//!   to `notifications.sluice.dev/delivered`, so the same transition is not queued twice.
//!
//! A controller restarted finds the outbox in the annotation and delivers what is left. A
//! controller killed after a send and before its annotation write sends that one notification
//! again: at most one duplicate per crash. Only the leader sends (and writes the annotations).

pub mod config;
pub mod services;
pub mod template;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most of a receiver's answer that is read (only Slack's API answer is read at all: it
/// says whether the message was posted). Slack's answers are a few hundred bytes.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
use tokio::sync::{Mutex, Notify};

use crate::api::rollout::Rollout;
use crate::controller::events::{Event, EventRecorder, EventType, Reporter};
use crate::controller::leader::LeaderGate;
use crate::controller::metrics::{Metrics, NotificationFailureLabels, NotificationLabels};
use crate::controller::writer::Writer;
use crate::metrics::prometheus::AddressAllowlist;
use config::{Config, Subscription};

/// The ConfigMap of the configuration, in the controller's namespace.
pub const CONFIG_MAP_NAME: &str = "sluice-notifications";
/// The Secret its `$name` references read.
pub const SECRET_NAME: &str = "sluice-notifications-secret";
/// Subscription annotation prefixes (ours, and Argo Rollouts').
pub const SUBSCRIBE_PREFIXES: [&str; 2] = [
    "notifications.sluice.dev/subscribe.",
    "notifications.argoproj.io/subscribe.",
];
/// The outbox: transitions not yet delivered to every destination.
pub const PENDING_ANNOTATION: &str = "notifications.sluice.dev/pending";
/// Ids of the last delivered transitions.
pub const DELIVERED_ANNOTATION: &str = "notifications.sluice.dev/delivered";

/// How many delivered ids are kept, and how many transitions may wait.
const DELIVERED_KEPT: usize = 20;
const PENDING_MAX: usize = 50;
/// How long a transition waits for its destinations before it is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);
/// How long a loaded configuration is reused.
const CONFIG_TTL: Duration = Duration::from_secs(5);

/// How notifications are sent.
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// Namespace of the ConfigMap and the Secret (the controller's).
    pub namespace: String,
    /// URLs notifications may be sent to.
    pub allowlist: AddressAllowlist,
    /// Retries after the first try of a send (on 5xx, 429, timeouts, connection errors).
    pub retry_max: u32,
    /// First wait between tries; doubled each time, up to `retry_wait_max`.
    pub retry_wait_min: Duration,
    pub retry_wait_max: Duration,
    /// Timeout of one try.
    pub timeout: Duration,
    /// Sends per minute per destination (service and recipient); more wait.
    pub rate_per_minute: u32,
}

impl NotificationSettings {
    /// Defaults (Argo's webhook retry settings: 3 retries, 1s to 5s apart).
    pub fn new(namespace: impl Into<String>, allowlist: AddressAllowlist) -> Self {
        NotificationSettings {
            namespace: namespace.into(),
            allowlist,
            retry_max: 3,
            retry_wait_min: Duration::from_secs(1),
            retry_wait_max: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            rate_per_minute: 20,
        }
    }
}

/// The trigger an Event reason fires: `RolloutAborted` → `on-rollout-aborted`.
pub fn trigger_for_reason(reason: &str) -> String {
    let mut out = String::from("on");
    for c in reason.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A destination of a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Destination {
    /// Service name.
    s: String,
    /// Recipient.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    r: String,
    /// Templates.
    t: Vec<String>,
}

impl Destination {
    fn key(&self) -> String {
        format!("{}:{}", self.s, self.r)
    }
}

/// A transition waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    id: String,
    trigger: String,
    reason: String,
    #[serde(rename = "type")]
    type_: String,
    message: String,
    /// When it was queued (RFC 3339).
    at: String,
    to: Vec<Destination>,
}

#[derive(Debug, Default)]
struct Outbox {
    namespace: String,
    name: String,
    pending: Vec<Pending>,
    delivered: VecDeque<String>,
    /// Destinations that failed: when to try them again, and how often they failed.
    retry: HashMap<(String, String), (Instant, u32)>,
}

/// Why a send failed.
#[derive(Debug)]
struct SendError {
    /// Try again later.
    transient: bool,
    /// Metric label.
    reason: &'static str,
    message: String,
}

/// Queues and sends notifications.
pub struct Notifier {
    settings: NotificationSettings,
    client: kube::Client,
    writer: Writer,
    leader: LeaderGate,
    metrics: Arc<Metrics>,
    rollouts: Store<crate::controller::context::CachedRollout>,
    replica_sets: Store<crate::controller::compact::Compact<ReplicaSet>>,
    replica_set_owners: crate::controller::owner_index::OwnerIndex,
    recorder: EventRecorder,
    http: reqwest::Client,
    config: Mutex<Option<(Instant, Option<Arc<Config>>)>>,
    outboxes: Mutex<HashMap<String, Outbox>>,
    sent_at: std::sync::Mutex<HashMap<String, VecDeque<Instant>>>,
    wake: Notify,
}

impl Notifier {
    /// A notifier reading the configuration with `client` and writing through `writer`; the
    /// Rollouts and their ReplicaSets come from the controller's caches.
    pub fn new(
        settings: NotificationSettings,
        client: kube::Client,
        writer: Writer,
        leader: LeaderGate,
        metrics: Arc<Metrics>,
        stores: &crate::controller::context::Stores,
        identity: &str,
    ) -> anyhow::Result<Notifier> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            // A redirect could lead past the allowlist.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let recorder = EventRecorder::new(
            writer.client(),
            Reporter {
                controller: "sluice".into(),
                instance: Some(identity.to_string()),
            },
        );
        Ok(Notifier {
            settings,
            client,
            writer,
            leader,
            metrics,
            rollouts: stores.rollouts.clone(),
            replica_sets: stores.replica_sets.clone(),
            replica_set_owners: stores.replica_set_owners.clone(),
            recorder,
            http,
            config: Mutex::new(None),
            outboxes: Mutex::new(HashMap::new()),
            sent_at: std::sync::Mutex::new(HashMap::new()),
            wake: Notify::new(),
        })
    }

    /// The configuration (None: no ConfigMap), reloaded every few seconds.
    async fn config(&self) -> Result<Option<Arc<Config>>, String> {
        let mut cached = self.config.lock().await;
        if let Some((at, c)) = cached.as_ref()
            && at.elapsed() < CONFIG_TTL
        {
            return Ok(c.clone());
        }
        let ns = &self.settings.namespace;
        let where_ = format!("ConfigMap {ns}/{CONFIG_MAP_NAME}");
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let Some(cm) = cms
            .get_opt(CONFIG_MAP_NAME)
            .await
            .map_err(|e| format!("{where_}: {e}"))?
        else {
            *cached = Some((Instant::now(), None));
            return Ok(None);
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = secrets
            .get_opt(SECRET_NAME)
            .await
            .map_err(|e| format!("Secret {ns}/{SECRET_NAME}: {e}"))?;
        let mut values = BTreeMap::new();
        if let Some(s) = secret {
            for (k, v) in s.data.unwrap_or_default() {
                values.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            for (k, v) in s.string_data.unwrap_or_default() {
                values.insert(k, v);
            }
        }
        let parsed = Config::parse(&cm.data.unwrap_or_default(), &values)
            .map_err(|e| format!("{where_}: {e}"))?;
        let parsed = Some(Arc::new(parsed));
        *cached = Some((Instant::now(), parsed.clone()));
        Ok(parsed)
    }

    /// Queues the notifications an Event about a Rollout fires. Called once per published
    /// Event, after the status it explains is written.
    pub async fn on_event(&self, ev: &Event, regarding: &ObjectReference) {
        if regarding.kind.as_deref() != Some("Rollout") || ev.reason.starts_with("Notification") {
            return;
        }
        let (Some(ns), Some(name)) = (&regarding.namespace, &regarding.name) else {
            return;
        };
        let config = match self.config().await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(rollout = %name, namespace = %ns, error = %e, "notification configuration unusable");
                self.count_failure("", "", "config");
                return;
            }
        };
        let Some(ro) = self.rollout(ns, name).await else {
            return;
        };
        let trigger = trigger_for_reason(&ev.reason);
        let event = event_value(ev, &trigger);
        let revision = self.revision(&ro);
        let (destinations, problems) =
            destinations(&config, &ro, revision.as_deref(), &trigger, &event);
        for p in problems {
            self.count_failure("", &trigger, "config");
            self.report(&ro, &format!("notification {trigger} not queued: {p}"))
                .await;
        }
        if destinations.is_empty() {
            return;
        }
        let id = transition_id(&ro, ev);
        let uid = ro.uid().unwrap_or_default();
        let mut outboxes = self.outboxes.lock().await;
        let outbox = outboxes
            .entry(uid)
            .or_insert_with(|| outbox_from(ro.as_ref()));
        if outbox.pending.iter().any(|p| p.id == id) || outbox.delivered.contains(&id) {
            return;
        }
        if outbox.pending.len() >= PENDING_MAX {
            let dropped = outbox.pending.remove(0);
            self.count_failure("", &dropped.trigger, "overflow");
        }
        outbox.pending.push(Pending {
            id,
            trigger: trigger.clone(),
            reason: ev.reason.clone(),
            type_: event["type"].as_str().unwrap_or("Normal").to_string(),
            message: ev.note.clone().unwrap_or_default(),
            at: jiff::Timestamp::now().to_string(),
            to: destinations,
        });
        if let Err(e) = self.persist(outbox).await {
            tracing::warn!(rollout = %name, namespace = %ns, error = %e, "failed to record a notification in the outbox");
        }
        drop(outboxes);
        self.wake.notify_one();
    }

    /// The revision of the Rollout's current version: its ReplicaSet's revision annotation.
    fn revision(&self, ro: &Rollout) -> Option<String> {
        let hash = ro.status.as_ref()?.current_pod_hash.clone()?;
        let uid = ro.uid()?;
        let ns = ro.namespace()?;
        self.replica_set_owners
            .owned(&self.replica_sets, &ns, &uid)
            .into_iter()
            .find(|rs| {
                rs.labels()
                    .get(crate::api::constants::POD_TEMPLATE_HASH_LABEL)
                    == Some(&hash)
            })
            .and_then(|rs| {
                rs.annotations()
                    .get(crate::api::constants::REVISION_ANNOTATION)
                    .cloned()
            })
    }

    async fn rollout(&self, ns: &str, name: &str) -> Option<Arc<Rollout>> {
        if let Some(r) = self.rollouts.get(&ObjectRef::new(name).within(ns))
            && let Ok(r) = r.expand()
        {
            return Some(Arc::new(r));
        }
        let api: Api<Rollout> = Api::namespaced(self.client.clone(), ns);
        api.get_opt(name).await.ok().flatten().map(Arc::new)
    }

    /// Writes the outbox to the Rollout's annotations.
    async fn persist(&self, outbox: &Outbox) -> Result<(), kube::Error> {
        let pending = if outbox.pending.is_empty() {
            Value::Null
        } else {
            Value::String(serde_json::to_string(&outbox.pending).unwrap_or_default())
        };
        let delivered = if outbox.delivered.is_empty() {
            Value::Null
        } else {
            Value::String(
                outbox
                    .delivered
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            )
        };
        let patch = serde_json::json!({"metadata": {"annotations": {
            PENDING_ANNOTATION: pending,
            DELIVERED_ANNOTATION: delivered,
        }}});
        let api: Api<Rollout> = self.writer.namespaced(&outbox.namespace);
        api.patch(&outbox.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Sends what the outboxes hold, for as long as the process runs.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = if self.leader.is_leader() {
                self.adopt_outboxes().await;
                self.send_pending().await
            } else {
                // Another replica leads and delivers: what this one remembers goes stale, and
                // is read again from the annotations if it leads again.
                self.outboxes.lock().await.clear();
                None
            };
            let wait = next
                .unwrap_or(Duration::from_secs(5))
                .min(Duration::from_secs(5));
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    /// Takes up the outboxes written by an earlier process (or an earlier leader).
    async fn adopt_outboxes(&self) {
        let mut outboxes = self.outboxes.lock().await;
        for ro in self.rollouts.state() {
            let Some(uid) = ro.uid() else { continue };
            if outboxes.contains_key(&uid) || !ro.annotations().contains_key(PENDING_ANNOTATION) {
                continue;
            }
            outboxes.insert(uid, outbox_from(ro.as_ref()));
        }
    }

    /// One pass over every outbox; returns when to look again.
    async fn send_pending(&self) -> Option<Duration> {
        let uids: Vec<String> = {
            let outboxes = self.outboxes.lock().await;
            outboxes
                .iter()
                .filter(|(_, o)| !o.pending.is_empty())
                .map(|(k, _)| k.clone())
                .collect()
        };
        let mut next: Option<Duration> = None;
        for uid in uids {
            let (ns, name, pending, retry) = {
                let outboxes = self.outboxes.lock().await;
                let Some(o) = outboxes.get(&uid) else {
                    continue;
                };
                (
                    o.namespace.clone(),
                    o.name.clone(),
                    o.pending.clone(),
                    o.retry.clone(),
                )
            };
            let Some(ro) = self.rollout(&ns, &name).await else {
                // Deleted: nobody to tell about it.
                self.outboxes.lock().await.remove(&uid);
                continue;
            };
            let config = match self.config().await {
                Ok(Some(c)) => c,
                Ok(None) => Arc::new(Config::default()),
                Err(e) => {
                    tracing::warn!(error = %e, "notification configuration unusable");
                    return Some(Duration::from_secs(30));
                }
            };
            for p in pending {
                let expired = jiff::Timestamp::now()
                    .duration_since(p.at.parse().unwrap_or(jiff::Timestamp::now()))
                    .unsigned_abs()
                    > GIVE_UP_AFTER;
                for dest in &p.to {
                    if !self.leader.is_leader() {
                        return None;
                    }
                    let rkey = (p.id.clone(), dest.key());
                    if let Some((at, _)) = retry.get(&rkey)
                        && *at > Instant::now()
                    {
                        let wait = at.saturating_duration_since(Instant::now());
                        next = Some(next.map_or(wait, |n| n.min(wait)));
                        continue;
                    }
                    if let Some(wait) = self.rate_limited(&dest.key()) {
                        next = Some(next.map_or(wait, |n| n.min(wait)));
                        continue;
                    }
                    let outcome = self.deliver(&config, &ro, &p, dest).await;
                    let done = match &outcome {
                        Ok(()) => {
                            self.metrics
                                .notifications_sent
                                .get_or_create(&NotificationLabels {
                                    service: dest.s.clone(),
                                    trigger: p.trigger.clone(),
                                })
                                .inc();
                            true
                        }
                        Err(e) => {
                            self.count_failure(&dest.s, &p.trigger, e.reason);
                            let message = config.redact(&e.message);
                            let give_up = !e.transient || expired;
                            tracing::warn!(rollout = %name, namespace = %ns, trigger = %p.trigger,
                                service = %dest.s, recipient = %dest.r, error = %message,
                                retrying = !give_up, "notification failed");
                            self.report(
                                &ro,
                                &format!(
                                    "notification {} to {} failed: {message}{}",
                                    p.trigger,
                                    dest.key(),
                                    if give_up { "" } else { " (will retry)" }
                                ),
                            )
                            .await;
                            give_up
                        }
                    };
                    let mut outboxes = self.outboxes.lock().await;
                    let Some(o) = outboxes.get_mut(&uid) else {
                        break;
                    };
                    if done {
                        o.retry.remove(&rkey);
                        if let Some(entry) = o.pending.iter_mut().find(|e| e.id == p.id) {
                            entry.to.retain(|d| d != dest);
                        }
                        if let Some(i) = o
                            .pending
                            .iter()
                            .position(|e| e.id == p.id && e.to.is_empty())
                        {
                            let finished = o.pending.remove(i);
                            o.delivered.push_back(finished.id);
                            while o.delivered.len() > DELIVERED_KEPT {
                                o.delivered.pop_front();
                            }
                        }
                        if let Err(e) = self.persist(o).await {
                            tracing::warn!(rollout = %name, namespace = %ns, error = %e, "failed to record a delivered notification");
                        }
                    } else {
                        let failures = o.retry.get(&rkey).map_or(0, |(_, n)| *n) + 1;
                        let wait = Duration::from_secs(30)
                            .saturating_mul(2u32.saturating_pow(failures.min(5)))
                            .min(Duration::from_secs(600));
                        o.retry.insert(rkey, (Instant::now() + wait, failures));
                        next = Some(next.map_or(wait, |n| n.min(wait)));
                    }
                }
            }
        }
        next
    }

    /// True (with how long to wait) when `dest` already had its share this minute.
    fn rate_limited(&self, dest: &str) -> Option<Duration> {
        let mut sent = self.sent_at.lock().unwrap_or_else(|e| e.into_inner());
        let window = sent.entry(dest.to_string()).or_default();
        take_slot(window, self.settings.rate_per_minute, Instant::now())
    }

    /// Renders and sends one transition to one destination, with retries.
    async fn deliver(
        &self,
        config: &Config,
        ro: &Rollout,
        p: &Pending,
        dest: &Destination,
    ) -> Result<(), SendError> {
        let permanent = |reason, message: String| SendError {
            transient: false,
            reason,
            message,
        };
        let service = config.services.get(&dest.s).ok_or_else(|| {
            permanent(
                "config",
                format!("no service {:?} in ConfigMap {CONFIG_MAP_NAME}", dest.s),
            )
        })?;
        let event = serde_json::json!({
            "reason": p.reason, "message": p.message, "trigger": p.trigger, "type": p.type_,
        });
        let revision = self.revision(ro);
        let vars = template::variables(
            &rollout_value(ro),
            revision.as_deref(),
            &event,
            &dest.s,
            &dest.r,
            &config.context,
        );
        for tname in &dest.t {
            let t = config
                .template(tname)
                .ok_or_else(|| permanent("config", format!("no template {tname:?}")))?;
            let msg = services::render_message(&t, &vars, &p.trigger)
                .map_err(|e| permanent("template", format!("template {tname}: {e}")))?;
            let req = services::request(&dest.s, service, &dest.r, &t, &vars, &msg, &p.trigger)
                .map_err(|e| permanent("template", format!("template {tname}: {e}")))?;
            self.send(&req).await?;
        }
        Ok(())
    }

    /// One request, tried again on 5xx, 429 and network errors. Error messages never carry the
    /// URL, headers or body (they may hold secrets).
    async fn send(&self, req: &services::Request) -> Result<(), SendError> {
        let url = url::Url::parse(&req.url).map_err(|e| SendError {
            transient: false,
            reason: "config",
            message: format!("invalid URL: {e}"),
        })?;
        if !self.settings.allowlist.allows(&url) {
            return Err(SendError {
                transient: false,
                reason: "refused_url",
                message: format!(
                    "{}://{} is not allowed by --notification-url-allow",
                    url.scheme(),
                    url.host_str().unwrap_or_default()
                ),
            });
        }
        let mut wait = self.settings.retry_wait_min;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut b = self.http.request(req.method.clone(), url.clone());
            for (k, v) in &req.headers {
                b = b.header(k, v);
            }
            if let Some((u, p)) = &req.basic_auth {
                b = b.basic_auth(u, Some(p));
            }
            if let Some(body) = &req.body {
                b = b.body(body.clone());
            }
            let err = match b.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        if !req.slack_api {
                            return Ok(());
                        }
                        // The receiver is not ours: its answer is read up to a bound only.
                        let body: Value =
                            match crate::http_body::read_limited(resp, MAX_REPLY_BYTES).await {
                                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                                Err(e) => {
                                    return Err(SendError {
                                        transient: false,
                                        reason: "http_status",
                                        message: format!("Slack's answer was not read: {e}"),
                                    });
                                }
                            };
                        if body["ok"].as_bool() == Some(true) {
                            return Ok(());
                        }
                        // Slack's error codes (`channel_not_found`, `invalid_auth`) are safe to show.
                        return Err(SendError {
                            transient: body["error"] == "ratelimited",
                            reason: "http_status",
                            message: format!(
                                "Slack answered {}",
                                body["error"].as_str().unwrap_or("without ok")
                            ),
                        });
                    }
                    SendError {
                        transient: status.is_server_error()
                            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                            || status == reqwest::StatusCode::REQUEST_TIMEOUT,
                        reason: "http_status",
                        message: format!("HTTP {status}"),
                    }
                }
                Err(e) => SendError {
                    transient: true,
                    reason: if e.is_timeout() { "timeout" } else { "connect" },
                    message: e.without_url().to_string(),
                },
            };
            if !err.transient || tries > self.settings.retry_max {
                return Err(SendError {
                    message: format!("{} after {tries} tries", err.message),
                    ..err
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.settings.retry_wait_max);
        }
    }

    fn count_failure(&self, service: &str, trigger: &str, reason: &str) {
        self.metrics
            .notifications_failed
            .get_or_create(&NotificationFailureLabels {
                service: service.to_string(),
                trigger: trigger.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A Warning Event on the Rollout (its text is already free of secrets).
    async fn report(&self, ro: &Rollout, message: &str) {
        let ev = Event {
            type_: EventType::Warning,
            reason: "NotificationFailed".into(),
            note: Some(message.chars().take(1000).collect()),
            action: "Notify".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.record(&ev, &ro.object_ref(&())).await {
            tracing::debug!(error = %e, "failed to publish a notification Event");
        }
    }
}

/// Takes a send slot in a one-minute sliding window of `per_minute` slots (the instants of the
/// sends in the last minute); None when taken, else how long until one frees.
fn take_slot(window: &mut VecDeque<Instant>, per_minute: u32, now: Instant) -> Option<Duration> {
    let minute = Duration::from_secs(60);
    while window
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= minute)
    {
        window.pop_front();
    }
    if window.len() >= per_minute.max(1) as usize {
        return window.front().map(|t| {
            minute.saturating_sub(now.saturating_duration_since(*t)) + Duration::from_millis(10)
        });
    }
    window.push_back(now);
    None
}

fn event_value(ev: &Event, trigger: &str) -> Value {
    serde_json::json!({
        "reason": ev.reason,
        "message": ev.note.clone().unwrap_or_default(),
        "trigger": trigger,
        "type": match ev.type_ { EventType::Normal => "Normal", EventType::Warning => "Warning" },
    })
}

/// The Rollout as templates read it (without managed fields and our own annotations).
fn rollout_value(ro: &Rollout) -> Value {
    let mut ro = ro.clone();
    ro.metadata.managed_fields = None;
    if let Some(a) = ro.metadata.annotations.as_mut() {
        a.remove(PENDING_ANNOTATION);
        a.remove(DELIVERED_ANNOTATION);
    }
    serde_json::to_value(&ro).unwrap_or(Value::Null)
}

/// Where the notifications of `trigger` go for `ro`, and what could not be used.
fn destinations(
    config: &Config,
    ro: &Rollout,
    revision: Option<&str>,
    trigger: &str,
    event: &Value,
) -> (Vec<Destination>, Vec<String>) {
    let services: Vec<&str> = config.services.keys().map(String::as_str).collect();
    let annotations = ro.annotations();
    let (mut subs, errors) =
        config::annotation_subscriptions(annotations, &services, &config.default_triggers);
    let mut problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let labels = ro.labels();
    for s in &config.subscriptions {
        if !s.selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let triggers = if s.triggers.is_empty() {
            &config.default_triggers
        } else {
            &s.triggers
        };
        for t in triggers {
            for r in &s.recipients {
                let (service, recipient) = r.split_once(':').unwrap_or((r.as_str(), ""));
                subs.push(Subscription {
                    trigger: t.clone(),
                    service: service.to_string(),
                    recipient: recipient.to_string(),
                });
            }
        }
    }
    subs.retain(|s| s.trigger == trigger);
    subs.sort();
    subs.dedup();
    if subs.is_empty() {
        return (Vec::new(), problems);
    }
    let Some(conditions) = config.trigger(trigger) else {
        problems.push(format!(
            "no trigger {trigger:?} in ConfigMap {CONFIG_MAP_NAME}"
        ));
        return (Vec::new(), problems);
    };
    let rollout = rollout_value(ro);
    let mut out = Vec::new();
    for s in subs {
        if !config.services.contains_key(&s.service) {
            problems.push(format!(
                "no service {:?} in ConfigMap {CONFIG_MAP_NAME}",
                s.service
            ));
            continue;
        }
        let vars = template::variables(
            &rollout,
            revision,
            event,
            &s.service,
            &s.recipient,
            &config.context,
        );
        let mut templates = Vec::new();
        for c in &conditions {
            let fire = match &c.when {
                None => true,
                Some(expr) => match template::eval_condition(expr, &vars) {
                    Ok(b) => b,
                    Err(e) => {
                        problems.push(format!("trigger.{trigger} when {expr:?}: {e}"));
                        false
                    }
                },
            };
            if fire {
                templates.extend(c.send.iter().cloned());
            }
        }
        if !templates.is_empty() {
            out.push(Destination {
                s: s.service,
                r: s.recipient,
                t: templates,
            });
        }
    }
    (out, problems)
}

/// A short id of a transition: the Rollout, its current version and the Event.
fn transition_id(ro: &Rollout, ev: &Event) -> String {
    use std::hash::{Hash, Hasher};
    // FNV-1a: stable across processes and Rust versions, unlike `DefaultHasher`'s promise.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    ro.uid().unwrap_or_default().hash(&mut h);
    ro.status
        .as_ref()
        .and_then(|s| s.current_pod_hash.clone())
        .unwrap_or_default()
        .hash(&mut h);
    ev.reason.hash(&mut h);
    ev.note.hash(&mut h);
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

fn outbox_from<K: kube::Resource>(ro: &K) -> Outbox {
    let annotations = ro.annotations();
    let pending = annotations
        .get(PENDING_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let delivered = annotations
        .get(DELIVERED_ANNOTATION)
        .map(|s| {
            s.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Outbox {
        namespace: ro.namespace().unwrap_or_default(),
        name: ro.name_any(),
        pending,
        delivered,
        retry: HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_become_argo_trigger_names() {
        assert_eq!(trigger_for_reason("RolloutAborted"), "on-rollout-aborted");
        assert_eq!(
            trigger_for_reason("RolloutStepCompleted"),
            "on-rollout-step-completed"
        );
        assert_eq!(
            trigger_for_reason("AnalysisRunFailed"),
            "on-analysis-run-failed"
        );
        assert_eq!(
            trigger_for_reason("ScalingReplicaSet"),
            "on-scaling-replica-set"
        );
    }

    #[test]
    fn a_destination_gets_its_share_per_minute_then_waits() {
        let t0 = Instant::now();
        let mut w = VecDeque::new();
        assert_eq!(take_slot(&mut w, 2, t0), None);
        assert_eq!(take_slot(&mut w, 2, t0 + Duration::from_secs(10)), None);
        let wait = take_slot(&mut w, 2, t0 + Duration::from_secs(20)).unwrap();
        assert!(
            wait > Duration::from_secs(39) && wait < Duration::from_secs(41),
            "{wait:?}"
        );
        // The first send left the window: a slot frees.
        assert_eq!(take_slot(&mut w, 2, t0 + Duration::from_secs(61)), None);
        assert!(take_slot(&mut w, 2, t0 + Duration::from_secs(62)).is_some());
    }

    #[test]
    fn the_outbox_reads_back_what_it_wrote() {
        let p = Pending {
            id: "abc".into(),
            trigger: "on-rollout-aborted".into(),
            reason: "RolloutAborted".into(),
            type_: "Warning".into(),
            message: "aborted".into(),
            at: "2026-01-01T00:00:00Z".into(),
            to: vec![Destination {
                s: "slack".into(),
                r: "#ops".into(),
                t: vec!["rollout-aborted".into()],
            }],
        };
        let mut ro = Rollout::default();
        ro.metadata.annotations = Some(
            [
                (
                    PENDING_ANNOTATION.to_string(),
                    serde_json::to_string(&vec![p.clone()]).unwrap(),
                ),
                (DELIVERED_ANNOTATION.to_string(), "x,y".to_string()),
            ]
            .into(),
        );
        let o = outbox_from(&ro);
        assert_eq!(o.pending, vec![p]);
        assert_eq!(
            o.delivered,
            VecDeque::from(vec!["x".to_string(), "y".to_string()])
        );
    }
}
