//! The controller's own Prometheus metrics (served on `/metrics`).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutInfoLabels {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub strategy: String,
    pub traffic_router: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricPhaseLabels {
    pub namespace: String,
    pub name: String,
    pub metric: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub service: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationFailureLabels {
    pub service: String,
    pub trigger: String,
    /// `http_status`, `timeout`, `connect`, `refused_url`, `config`, `template`, `overflow`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// The time a reconcile spends computing: inside its own polls, not waiting on the API
    /// server (decoding the cached object, planning, building and decoding requests).
    pub reconcile_busy: Family<ControllerLabels, Histogram>,
    pub rollout_info: Family<RolloutInfoLabels, Gauge>,
    pub canary_weight: Family<RolloutLabels, Gauge>,
    pub analysis_metric_phase: Family<MetricPhaseLabels, Gauge>,
    pub measurements: Family<ResultLabels, Counter>,
    pub leader: Gauge,
    pub in_flight: Gauge,
    /// Notifications delivered, by service and trigger.
    pub notifications_sent: Family<NotificationLabels, Counter>,
    /// Failed notification sends (each failed round of tries), by service, trigger and reason.
    pub notifications_failed: Family<NotificationFailureLabels, Counter>,
    /// The labels last exported per Rollout, so stale series can be removed.
    info_labels: Mutex<std::collections::HashMap<(String, String), RolloutInfoLabels>>,
    metric_labels: Mutex<std::collections::HashMap<(String, String), Vec<MetricPhaseLabels>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `sluice_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
            });
        let reconcile_busy = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
            ])
        });
        let rollout_info = Family::<RolloutInfoLabels, Gauge>::default();
        let canary_weight = Family::<RolloutLabels, Gauge>::default();
        let analysis_metric_phase = Family::<MetricPhaseLabels, Gauge>::default();
        let measurements = Family::<ResultLabels, Counter>::default();
        let leader = Gauge::default();
        let in_flight = Gauge::default();
        registry.register("reconcile", "Reconciles by controller", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by controller and error category",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile latency by controller",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_busy_seconds",
            "Time a reconcile spends computing, its waits on the API server excluded",
            reconcile_busy.clone(),
        );
        registry.register(
            "rollout_info",
            "One series per Rollout with its phase, strategy and traffic router",
            rollout_info.clone(),
        );
        registry.register(
            "rollout_canary_weight",
            "Canary traffic weight last set per Rollout",
            canary_weight.clone(),
        );
        registry.register(
            "analysis_run_metric_phase",
            "1 for the current phase of each metric of each AnalysisRun",
            analysis_metric_phase.clone(),
        );
        registry.register(
            "analysis_measurements",
            "Measurements taken, by result",
            measurements.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now (queue pressure)",
            in_flight.clone(),
        );
        let notifications_sent = Family::<NotificationLabels, Counter>::default();
        let notifications_failed = Family::<NotificationFailureLabels, Counter>::default();
        registry.register(
            "notifications_sent",
            "Notifications delivered, by service and trigger",
            notifications_sent.clone(),
        );
        registry.register(
            "notifications_failed",
            "Notification sends that failed, by service, trigger and reason",
            notifications_failed.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            reconcile_busy,
            rollout_info,
            canary_weight,
            analysis_metric_phase,
            measurements,
            leader,
            in_flight,
            notifications_sent,
            notifications_failed,
            info_labels: Mutex::new(Default::default()),
            metric_labels: Mutex::new(Default::default()),
        }
    }

    /// Sets the `rollout_info` series of a Rollout, replacing its previous labels.
    pub fn set_rollout(&self, labels: RolloutInfoLabels, weight: Option<i32>) {
        let key = (labels.namespace.clone(), labels.name.clone());
        let mut known = self.info_labels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = known.get(&key)
            && *old != labels
        {
            self.rollout_info.remove(old);
        }
        self.rollout_info.get_or_create(&labels).set(1);
        known.insert(key.clone(), labels);
        let rl = RolloutLabels {
            namespace: key.0,
            name: key.1,
        };
        match weight {
            Some(w) => {
                self.canary_weight.get_or_create(&rl).set(i64::from(w));
            }
            None => {
                self.canary_weight.remove(&rl);
            }
        }
    }

    /// Removes every series of a deleted Rollout.
    pub fn forget_rollout(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(old) = self
            .info_labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
        {
            self.rollout_info.remove(&old);
        }
        self.canary_weight.remove(&RolloutLabels {
            namespace: key.0,
            name: key.1,
        });
    }

    /// Sets the metric phases of an AnalysisRun.
    pub fn set_analysis(&self, namespace: &str, name: &str, phases: Vec<(String, String)>) {
        let key = (namespace.to_string(), name.to_string());
        let mut known = self.metric_labels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = known.remove(&key) {
            for l in old {
                self.analysis_metric_phase.remove(&l);
            }
        }
        let labels: Vec<_> = phases
            .into_iter()
            .map(|(metric, phase)| MetricPhaseLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                metric,
                phase,
            })
            .collect();
        for l in &labels {
            self.analysis_metric_phase.get_or_create(l).set(1);
        }
        known.insert(key, labels);
    }

    /// Removes the series of a deleted AnalysisRun.
    pub fn forget_analysis(&self, namespace: &str, name: &str) {
        self.set_analysis(namespace, name, Vec::new());
        self.metric_labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A future that adds up the time spent inside its own `poll` calls: the work a reconcile
/// does itself, apart from the time it waits for the API server or a timer.
pub struct Busy<F> {
    inner: std::pin::Pin<Box<F>>,
    busy: std::time::Duration,
}

impl<F: std::future::Future> Busy<F> {
    pub fn new(inner: F) -> Self {
        Busy {
            inner: Box::pin(inner),
            busy: std::time::Duration::ZERO,
        }
    }
}

impl<F: std::future::Future> std::future::Future for Busy<F> {
    /// The inner future's output and the time spent polling it.
    type Output = (F::Output, std::time::Duration);

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        let started = std::time::Instant::now();
        let poll = this.inner.as_mut().poll(cx);
        this.busy += started.elapsed();
        poll.map(|out| (out, this.busy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn busy_counts_polls_not_waits() {
        let (out, busy) = Busy::new(async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let spin = std::time::Instant::now();
            while spin.elapsed() < std::time::Duration::from_millis(10) {
                std::hint::spin_loop();
            }
            7
        })
        .await;
        assert_eq!(out, 7);
        // The spin is counted, the sleep is not.
        assert!(busy >= std::time::Duration::from_millis(10), "{busy:?}");
        assert!(busy < std::time::Duration::from_millis(400), "{busy:?}");
    }
}
