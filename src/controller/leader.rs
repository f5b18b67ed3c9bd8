//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica watches and caches; only the holder of the Lease writes. The gate is checked
//! right before every write, so losing the Lease stops writes at once.
//!
//! A leader that cannot renew (its API server unreachable, its renewals hanging) must stop
//! writing before another replica may take the Lease. Each successful renewal opens the gate
//! until a *renew deadline*, two thirds of the lease duration after the renewal was started
//! (client-go's defaults, 10 s of 15, have the same ratio); the gate closes by itself at that
//! instant even if the renewal that would extend it is still hanging. Other candidates consider
//! the Lease expired only a full duration after its recorded renew time, which is taken after
//! our instant: the margin between our last write and a takeover is at least a third of the
//! duration (5 s with the default 15 s), minus clock skew between the replicas' clocks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::clock::Clock;

/// Whether this replica may write.
#[derive(Clone)]
pub struct LeaderGate {
    leading: Arc<AtomicBool>,
    /// The renew deadline: the gate is closed from this instant on, renewal or not (None: no
    /// deadline, leader election disabled).
    valid_until: Arc<Mutex<Option<Instant>>>,
    changes: watch::Receiver<bool>,
}

impl LeaderGate {
    /// A gate that is always open (leader election disabled).
    pub fn always() -> Self {
        let (_tx, rx) = watch::channel(true);
        LeaderGate {
            leading: Arc::new(AtomicBool::new(true)),
            valid_until: Arc::new(Mutex::new(None)),
            changes: rx,
        }
    }

    /// A gate that stays closed (a replica that never leads).
    #[cfg(test)]
    pub(crate) fn never() -> Self {
        let (_tx, rx) = watch::channel(false);
        LeaderGate {
            leading: Arc::new(AtomicBool::new(false)),
            valid_until: Arc::new(Mutex::new(None)),
            changes: rx,
        }
    }

    /// True while this replica holds the Lease and its renew deadline has not passed.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst) && self.within_deadline(Instant::now())
    }

    fn within_deadline(&self, now: Instant) -> bool {
        let until = self.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_none_or(|t| now < t)
    }

    /// Changes of leadership.
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.changes.clone()
    }
}

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews and candidates retry.
    pub retry: Duration,
}

/// Starts the election loop; returns the gate and the task.
pub fn start(
    client: kube::Client,
    settings: LeaseSettings,
    clock: Clock,
) -> (LeaderGate, tokio::task::JoinHandle<()>) {
    let leading = Arc::new(AtomicBool::new(false));
    let valid_until = Arc::new(Mutex::new(Some(Instant::now())));
    let (tx, rx) = watch::channel(false);
    let gate = LeaderGate {
        leading: leading.clone(),
        valid_until: valid_until.clone(),
        changes: rx,
    };
    let renew_deadline = renew_deadline(settings.duration);
    let loop_gate = gate.clone();
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        loop {
            let started = Instant::now();
            // A renewal may not outlive the gate it would extend: once the deadline has
            // passed, the answer no longer matters (another replica may hold the Lease).
            let patience = if loop_gate.is_leader() {
                let until = *valid_until.lock().unwrap_or_else(|e| e.into_inner());
                until.map_or(settings.duration, |t| t.saturating_duration_since(started))
            } else {
                settings.duration
            };
            let attempt =
                tokio::time::timeout(patience, try_acquire_or_renew(&api, &settings, &clock)).await;
            let holds = match attempt {
                Ok(Ok(true)) => {
                    *valid_until.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(started + renew_deadline);
                    true
                }
                Ok(Ok(false)) => false,
                // Keep leading through transient errors until the renew deadline.
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "lease renewal failed");
                    loop_gate.is_leader()
                }
                Err(_) => {
                    tracing::warn!(
                        waited = ?patience,
                        "lease renewal did not answer before the renew deadline"
                    );
                    loop_gate.is_leader()
                }
            };
            if leading.swap(holds, Ordering::SeqCst) != holds {
                tracing::info!(identity = %settings.identity, leading = holds, "leadership changed");
                let _ = tx.send(holds);
            }
            tokio::time::sleep(settings.retry).await;
        }
    });
    (gate, task)
}

/// How long after starting a successful renewal the holder may go on writing: two thirds of the
/// lease duration (see the module doc).
pub fn renew_deadline(duration: Duration) -> Duration {
    duration * 2 / 3
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(t)
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    s: &LeaseSettings,
    clock: &Clock,
) -> Result<bool, kube::Error> {
    let now = clock();
    let secs = s.duration.as_secs().max(1) as i32;
    match api.get_opt(&s.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(micro(now)),
                    renew_time: Some(micro(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&post_params(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let renew = spec.renew_time.as_ref().map(|t| t.0);
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
            let expired = renew.is_none_or(|r| now.as_second() - r.as_second() > duration);
            if holder != s.identity && !holder.is_empty() && !expired {
                return Ok(false);
            }
            if holder != s.identity {
                spec.acquire_time = Some(micro(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(s.identity.clone());
            spec.renew_time = Some(micro(now));
            spec.lease_duration_seconds = Some(secs);
            // `replace` carries the resourceVersion we read: a competing candidate gets a 409.
            match api.replace(&s.name, &post_params(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(st)) if st.is_conflict() => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(crate::api::constants::FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}
