//! Flags of `sluice controller`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::clock::system_clock;
use super::config::{ControllerConfig, Settings};
use super::leader::LeaseSettings;
use crate::metrics::prometheus::{AddressAllowlist, PrometheusConfig};

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of the controller.
#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Path to a kubeconfig (default: in-cluster config, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Reconcile Rollouts in this namespace only (default: all namespaces).
    #[arg(long, env = "SLUICE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Reconcile only Rollouts labelled rollout.sluice.dev/controller-instance-id=<ID>; without
    /// it, only Rollouts without that label.
    #[arg(long, env = "SLUICE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Kubernetes client requests per second (averaged).
    #[arg(long, default_value_t = 40.0)]
    pub qps: f64,
    /// Kubernetes client burst.
    #[arg(long, default_value_t = 80)]
    pub burst: u32,
    /// Metric provider addresses analyses may query (URL prefixes, repeatable or
    /// comma-separated). Empty allows any address.
    #[arg(long = "metric-address-allow", value_delimiter = ',')]
    pub metric_address_allow: Vec<String>,
    /// Prometheus address used by metrics that set none.
    #[arg(long)]
    pub default_prometheus_address: Option<String>,
    /// Elect a leader through a Lease; only the leader writes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader Lease (the instance id is appended when set).
    #[arg(long, default_value = "sluice-controller-lock")]
    pub lease_name: String,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// This replica's identity (default: $POD_NAME or $HOSTNAME).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Istio API version: networking.istio.io/v1, v1beta1 or v1alpha3.
    #[arg(long, default_value = "networking.istio.io/v1")]
    pub istio_api_version: String,
    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "0.0.0.0:8090")]
    pub admin_address: SocketAddr,
    /// Concurrent Rollout reconciles.
    #[arg(long, default_value_t = 8)]
    pub rollout_workers: u16,
    /// Concurrent analysis measurements.
    #[arg(long, default_value_t = 16)]
    pub analysis_workers: usize,
    /// URLs notifications may be sent to (URL prefixes, repeatable or comma-separated). Empty
    /// allows any URL.
    #[arg(long = "notification-url-allow", value_delimiter = ',')]
    pub notification_url_allow: Vec<String>,
    /// Send notifications (configured by the ConfigMap sluice-notifications in the lease
    /// namespace).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub notifications: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "SLUICE_LOG", default_value = "info")]
    pub log_level: String,
}

impl ControllerArgs {
    /// The controller configuration these flags describe.
    pub fn to_config(&self) -> anyhow::Result<ControllerConfig> {
        let identity = self
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("sluice-{}", std::process::id()));
        let lease_name = match &self.instance_id {
            Some(id) => format!("{}-{id}", self.lease_name),
            None => self.lease_name.clone(),
        };
        let allowlist = if self.metric_address_allow.is_empty() {
            tracing::warn!(
                "no --metric-address-allow given: analyses may query any address; set it so that \
                 whoever can write an AnalysisTemplate cannot make the controller call arbitrary URLs"
            );
            AddressAllowlist::allow_any()
        } else {
            AddressAllowlist::new(self.metric_address_allow.iter())
                .map_err(|e| anyhow::anyhow!("--metric-address-allow: {e}"))?
        };
        let routing = crate::traffic::RoutingConfig {
            istio_api_version: self
                .istio_api_version
                .parse()
                .map_err(|e| anyhow::anyhow!("--istio-api-version: {e}"))?,
        };
        let notifications = if self.notifications {
            let allow = if self.notification_url_allow.is_empty() {
                AddressAllowlist::allow_any()
            } else {
                AddressAllowlist::new(self.notification_url_allow.iter())
                    .map_err(|e| anyhow::anyhow!("--notification-url-allow: {e}"))?
            };
            Some(crate::notifications::NotificationSettings::new(
                self.lease_namespace.clone(),
                allow,
            ))
        } else {
            None
        };
        Ok(ControllerConfig {
            notifications,
            settings: Settings {
                namespace: self.namespace.clone(),
                instance_id: self.instance_id.clone(),
                routing,
                analysis_workers: self.analysis_workers,
                rollout_workers: self.rollout_workers,
                ..Settings::default()
            },
            lease: self.leader_elect.then(|| LeaseSettings {
                name: lease_name,
                namespace: self.lease_namespace.clone(),
                identity: identity.clone(),
                duration: Duration::from_secs(self.lease_duration_seconds.max(2)),
                retry: Duration::from_secs((self.lease_duration_seconds / 5).max(1)),
            }),
            prometheus: PrometheusConfig {
                allowlist,
                default_address: self.default_prometheus_address.clone(),
            },
            admin_addr: Some(self.admin_address),
            clock: system_clock(),
            identity,
        })
    }

    /// A Kubernetes client from the kubeconfig or in-cluster config, rate limited by QPS/burst.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
            }
            None => kube::Config::infer().await?,
        };
        let burst = u64::from(self.burst.max(1));
        let window = Duration::from_secs_f64(burst as f64 / self.qps.max(0.1));
        Ok(crate::kube_client::client(
            config,
            &crate::kube_client::controller_user_agent(),
            Some((burst, window)),
        )?)
    }
}

/// Installs the tracing subscriber.
pub fn init_logging(args: &ControllerArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match args.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
