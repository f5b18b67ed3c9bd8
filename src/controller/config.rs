//! What a controller process is started with.

use std::net::SocketAddr;
use std::time::Duration;

use super::clock::{Clock, system_clock};
use super::leader::LeaseSettings;
use crate::metrics::prometheus::PrometheusConfig;

/// Everything needed to start a controller.
#[derive(Clone)]
pub struct ControllerConfig {
    /// Reconcile settings.
    pub settings: Settings,
    /// Leader election (None: this replica always writes).
    pub lease: Option<LeaseSettings>,
    /// Prometheus provider settings (address allowlist, default address).
    pub prometheus: PrometheusConfig,
    /// Address of the admin server (`/healthz`, `/readyz`, `/metrics`); None: not served.
    pub admin_addr: Option<SocketAddr>,
    /// The clock.
    pub clock: Clock,
    /// This replica's identity (Lease holder, Event reporter instance).
    pub identity: String,
    /// Notifications (None: none are sent).
    pub notifications: Option<crate::notifications::NotificationSettings>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            settings: Settings::default(),
            lease: None,
            prometheus: PrometheusConfig::default(),
            admin_addr: None,
            clock: system_clock(),
            identity: "sluice".to_string(),
            notifications: None,
        }
    }
}

/// Settings of a controller process.
#[derive(Clone)]
pub struct Settings {
    /// Only this namespace (None: all).
    pub namespace: Option<String>,
    /// Only Rollouts labelled with this instance id (None: only Rollouts without the label).
    pub instance_id: Option<String>,
    /// Router settings (Istio API version).
    pub routing: crate::traffic::RoutingConfig,
    /// Concurrent measurements across all AnalysisRuns.
    pub analysis_workers: usize,
    /// Concurrent Rollout reconciles.
    pub rollout_workers: u16,
    /// Longest backoff after repeated errors on one object.
    pub max_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: None,
            instance_id: None,
            routing: crate::traffic::RoutingConfig::default(),
            analysis_workers: 16,
            rollout_workers: 8,
            max_backoff: Duration::from_secs(300),
        }
    }
}
