//! Publishing Events (`events.k8s.io/v1`). Like kube-runtime's `Recorder`, a repeat of an Event
//! within a few minutes becomes a series on the first one (`series.count`) instead of a new
//! object; unlike it, the note is part of what makes two Events the same. kube-runtime keys its
//! series on type, reason and action only, so "step 1 of 7 completed" followed by "step 2 of 7
//! completed" was shown by `kubectl describe` as the first note eight times over. Here each
//! distinct fact is its own Event, and only a true repeat (same reason and same note) counts up.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};
use tokio::sync::Mutex;

/// How long a published Event can still be counted up by a repeat (kube-runtime's and
/// client-go's window).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// How often the published Events older than [`SERIES_WINDOW`] are forgotten. Pruning at
/// every publish visited every remembered Event each time: with thousands of Rollouts settling
/// at once, a quadratic cost.
const PRUNE_EVERY: SignedDuration = SignedDuration::from_secs(10);

/// What the recorder keeps of a published Event to count up its repeats: its name and series.
#[derive(Debug, Clone)]
struct Published {
    name: String,
    count: i32,
    last_seen: Timestamp,
}

/// The Events published within [`SERIES_WINDOW`] (and some older, until the next prune).
struct PublishedEvents {
    /// By the 128-bit digest of the Event's [`Key`]: the key itself (the note, the object's
    /// names and uid) is most of an entry, and one entry per Event lives for six minutes.
    by_key: HashMap<u128, Published>,
    pruned: Timestamp,
}

/// What makes two Events the same fact.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    reason: String,
    action: String,
    note: Option<String>,
    /// API version, kind, namespace, name and uid of the object the Event is about.
    regarding: [Option<String>; 5],
}

impl Key {
    /// Two independently keyed 64-bit hashes of the key: a 128-bit digest, so that two
    /// different Events are taken for the same with a chance of 2^-128.
    fn digest(&self, hasher: &[std::collections::hash_map::RandomState; 2]) -> u128 {
        use std::hash::BuildHasher;
        let [a, b] = hasher;
        (u128::from(a.hash_one(self)) << 64) | u128::from(b.hash_one(self))
    }

    fn new(ev: &Event, regarding: &ObjectReference) -> Key {
        Key {
            warning: matches!(ev.type_, EventType::Warning),
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            note: ev.note.clone(),
            regarding: [
                regarding.api_version.clone(),
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ],
        }
    }
}

/// Publishes Events; one is shared by every reconcile so that repeats are recognised.
pub struct EventRecorder {
    client: kube::Client,
    reporter: Reporter,
    published: Mutex<PublishedEvents>,
    /// The keys of the Events' digests, random per recorder.
    hasher: [std::collections::hash_map::RandomState; 2],
    /// Told of every Event before it is published: Events are the transitions notifications
    /// fire on.
    notifier: std::sync::OnceLock<std::sync::Arc<crate::notifications::Notifier>>,
}

impl EventRecorder {
    /// A recorder writing through `client` as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> EventRecorder {
        EventRecorder {
            client,
            reporter,
            hasher: Default::default(),
            published: Mutex::new(PublishedEvents {
                by_key: HashMap::new(),
                pruned: Timestamp::UNIX_EPOCH,
            }),
            notifier: std::sync::OnceLock::new(),
        }
    }

    /// Sends notifications for the Events published from now on.
    pub fn notify_with(&self, notifier: std::sync::Arc<crate::notifications::Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    /// Publishes `ev` about `regarding`: a new Event, or one more in the series of the same
    /// Event published less than [`SERIES_WINDOW`] ago.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        if let Some(n) = self.notifier.get() {
            // Queued (in the Rollout's outbox) before the Event is written: a failed Event
            // write must not lose the notification.
            n.on_event(ev, regarding).await;
        }
        self.record(ev, regarding).await
    }

    /// Publishes `ev` like [`EventRecorder::publish`], without notifying (for the notifier's
    /// own Events).
    pub async fn record(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let now = Timestamp::now();
        let key = Key::new(ev, regarding).digest(&self.hasher);
        let previous = {
            let mut published = self.published.lock().await;
            if published.pruned + PRUNE_EVERY <= now {
                published
                    .by_key
                    .retain(|_, e| e.last_seen + SERIES_WINDOW > now);
                published.pruned = now;
            }
            published
                .by_key
                .get(&key)
                .filter(|e| e.last_seen + SERIES_WINDOW > now)
                .cloned()
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let published = match previous {
            Some(e) => {
                let count = e.count + 1;
                let series = EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                };
                let patch = serde_json::json!({ "series": series });
                api.patch(&e.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Published {
                    count,
                    last_seen: now,
                    ..e
                }
            }
            None => {
                let e = self.new_event(ev, regarding, now);
                api.create(&PostParams::default(), &e).await?;
                Published {
                    name: e.metadata.name.unwrap_or_default(),
                    count: 1,
                    last_seen: now,
                }
            }
        };
        self.published.lock().await.by_key.insert(key, published);
        Ok(())
    }

    fn new_event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let base = regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                // Unique per publish, as kube-runtime and client-go name them.
                name: Some(format!("{base}.{:x}", now.as_nanosecond())),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            ..Default::default()
        }
    }
}
