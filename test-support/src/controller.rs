//! The controller under test, running against a [`Target`], and helpers to drive Rollouts the
//! way users and the CLI do (status and spec patches). Everything of [`crate::target`] and the
//! status readers of [`crate::rollout`] are re-exported, so `use ...::controller::*` is all a
//! controller test imports.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use sluice::api::rollout::Rollout;
use sluice::controller::{self, ControllerConfig, Running};

pub use crate::rollout::{current, phase, stable, step, weight};
pub use crate::target::*;

/// Where the controller tests run, and the controller running there. The controller comes
/// first so that it stops before the target's namespace is cleaned up.
pub struct Env {
    pub controller: Option<Running>,
    pub client: Client,
    pub cluster: Target,
}

/// The controller tests' cluster.
pub async fn cluster() -> Target {
    Target::start(Setup::controller()).await
}

pub fn config() -> ControllerConfig {
    ControllerConfig::default()
}

/// Starts a controller; on a real cluster it only watches the test's namespace, as other tests
/// and other controllers share the cluster.
pub async fn start_controller(cluster: &Target, mut config: ControllerConfig) -> Running {
    if cluster.is_real() {
        config.settings.namespace = Some(cluster.ns.clone());
    }
    controller::start(cluster.controller_client().await, config)
        .await
        .expect("controller starts")
}

/// A controller configuration whose Prometheus provider may query only `allowed`, and uses
/// `default_address` for templates that name none.
pub fn prometheus_config(allowed: &str, default_address: Option<&str>) -> ControllerConfig {
    ControllerConfig {
        prometheus: sluice::metrics::prometheus::PrometheusConfig {
            allowlist: sluice::metrics::prometheus::AddressAllowlist::new([allowed])
                .expect("a valid allowlist entry"),
            default_address: default_address.map(str::to_string),
        },
        ..config()
    }
}

impl Env {
    /// The controller tests' cluster with a controller started from `config`.
    pub async fn with_config(config: ControllerConfig) -> Env {
        let cluster = cluster().await;
        let client = cluster.client();
        let controller = Some(start_controller(&cluster, config).await);
        Env {
            controller,
            client,
            cluster,
        }
    }

    pub async fn new() -> Env {
        let cluster = cluster().await;
        let client = cluster.client();
        let controller = Some(start_controller(&cluster, config()).await);
        Env {
            controller,
            client,
            cluster,
        }
    }

    pub async fn without_controller() -> Env {
        let cluster = cluster().await;
        let client = cluster.client();
        Env {
            controller: None,
            client,
            cluster,
        }
    }

    /// The namespace of the test's objects.
    pub fn ns(&self) -> &str {
        &self.cluster.ns
    }

    pub fn rollouts(&self) -> Api<Rollout> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    pub async fn services(&self, names: &[&str]) {
        let api: Api<Service> = Api::namespaced(self.client.clone(), self.ns());
        for name in names {
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
            }))
            .unwrap();
            api.create(&PostParams::default(), &svc)
                .await
                .expect("service");
        }
    }

    pub async fn stable_ingress(&self) {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), self.ns());
        let ing: Ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "annotations": {"kubernetes.io/ingress.class": "nginx"}},
            "spec": {"rules": [{"host": "web.example", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}
            }]}}]}
        }))
        .unwrap();
        api.create(&PostParams::default(), &ing)
            .await
            .expect("ingress");
    }

    pub async fn create(&self, rollout: &Rollout) {
        self.rollouts()
            .create(&PostParams::default(), rollout)
            .await
            .expect("create rollout");
    }

    pub async fn get(&self, name: &str) -> Rollout {
        self.rollouts().get(name).await.expect("get rollout")
    }

    pub async fn replica_sets(&self) -> Vec<ReplicaSet> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), self.ns());
        api.list(&ListParams::default()).await.unwrap().items
    }

    /// spec.replicas of the ReplicaSet of `hash`.
    pub async fn pods_of(&self, hash: &str) -> i32 {
        self.replica_sets()
            .await
            .iter()
            .find(|rs| {
                rs.labels()
                    .get(sluice::api::constants::POD_TEMPLATE_HASH_LABEL)
                    .map(String::as_str)
                    == Some(hash)
            })
            .and_then(|rs| rs.spec.as_ref().and_then(|s| s.replicas))
            .unwrap_or(0)
    }

    pub async fn service_hash(&self, name: &str) -> Option<String> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), self.ns());
        api.get(name)
            .await
            .ok()?
            .spec?
            .selector?
            .get(sluice::api::constants::POD_TEMPLATE_HASH_LABEL)
            .cloned()
    }

    /// The canary weight annotation on the canary Ingress (NGINX).
    pub async fn nginx_weight(&self, rollout: &str) -> Option<i32> {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), self.ns());
        let ing = api.get_opt(&format!("{rollout}-web-canary")).await.ok()??;
        ing.annotations()
            .get("nginx.ingress.kubernetes.io/canary-weight")?
            .parse()
            .ok()
    }

    pub async fn set_image(&self, name: &str, image: &str) {
        let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}});
        self.rollouts()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("set image");
    }

    pub async fn patch_spec(&self, name: &str, patch: serde_json::Value) {
        self.rollouts()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch spec");
    }

    pub async fn patch_status(&self, name: &str, patch: serde_json::Value) {
        self.rollouts()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({"status": patch})),
            )
            .await
            .expect("patch status");
    }

    /// `promote`, as Argo's CLI does it.
    pub async fn promote(&self, name: &str) {
        let r = self.get(name).await;
        let st = r.status.unwrap_or_default();
        let inconclusive = st
            .pause_conditions
            .iter()
            .any(|p| format!("{:?}", p.reason) == "InconclusiveAnalysisRun");
        if inconclusive {
            self.patch_status(
                name,
                serde_json::json!({"pauseConditions": null, "controllerPause": false,
                    "currentStepIndex": st.current_step_index.unwrap_or(0) + 1}),
            )
            .await;
        } else if !st.pause_conditions.is_empty() {
            self.patch_status(name, serde_json::json!({"pauseConditions": null}))
                .await;
        } else {
            self.patch_status(
                name,
                serde_json::json!({"currentStepIndex": st.current_step_index.unwrap_or(0) + 1}),
            )
            .await;
        }
    }

    /// Waits until `cond` holds for the Rollout, or fails with its state.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        secs: u64,
        cond: impl Fn(&Rollout) -> bool,
    ) -> Rollout {
        let deadline = std::time::Instant::now() + patience(secs);
        loop {
            let r = self.get(name).await;
            if cond(&r) {
                return r;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}: status {:#?}\nreplica sets: {:?}",
                    r.status,
                    self.replica_sets()
                        .await
                        .iter()
                        .map(|rs| (
                            rs.name_any(),
                            rs.spec.as_ref().and_then(|s| s.replicas),
                            rs.status.as_ref().map(|s| s.available_replicas)
                        ))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A Rollout named `name` with `canary_yaml` as its canary strategy.
pub fn rollout(name: &str, replicas: i32, image: &str, canary_yaml: &str) -> Rollout {
    crate::rollout::canary(canary_yaml)
        .name(name)
        .replicas(replicas)
        .image(image)
        .build()
}

pub const NGINX: &str = r#"
canaryService: web-canary
stableService: web-stable
abortScaleDownDelaySeconds: 2
scaleDownDelaySeconds: 2
trafficRouting:
  nginx: {stableIngress: web}
"#;
