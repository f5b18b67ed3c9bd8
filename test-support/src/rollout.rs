//! Rollouts for tests, built from the YAML of their canary strategy around one skeleton: a
//! Rollout `web` whose selector and pod labels are `app: web`, with one container `web`.
//! Tests differ only in what they set on top (namespace, uid, generation, replicas, image).

use serde_json::{Value, json};
use sluice::api::rollout::Rollout;

/// A Rollout under construction; [`canary`] starts one.
#[derive(Clone, Debug)]
pub struct RolloutBuilder {
    canary: Value,
    /// `canary` or `blueGreen`: the strategy `canary` (the YAML) is written under.
    strategy: &'static str,
    name: String,
    namespace: Option<String>,
    uid: Option<String>,
    generation: Option<i64>,
    replicas: i32,
    image: String,
}

/// A Rollout `web` with `canary_yaml` as `spec.strategy.canary`: one replica of `web:1`, and no
/// namespace, uid or generation until they are set.
pub fn canary(canary_yaml: &str) -> RolloutBuilder {
    let canary = serde_yaml::from_str(canary_yaml)
        .unwrap_or_else(|e| panic!("canary strategy YAML: {e}\n{canary_yaml}"));
    RolloutBuilder {
        canary,
        strategy: "canary",
        name: "web".into(),
        namespace: None,
        uid: None,
        generation: None,
        replicas: 1,
        image: "web:1".into(),
    }
}

/// A Rollout `web` with `blue_green_yaml` as `spec.strategy.blueGreen`, otherwise as
/// [`canary`].
pub fn blue_green(blue_green_yaml: &str) -> RolloutBuilder {
    RolloutBuilder {
        strategy: "blueGreen",
        ..canary(blue_green_yaml)
    }
}

impl RolloutBuilder {
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    pub fn uid(mut self, uid: &str) -> Self {
        self.uid = Some(uid.into());
        self
    }

    pub fn generation(mut self, generation: i64) -> Self {
        self.generation = Some(generation);
        self
    }

    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = replicas;
        self
    }

    /// The image of the container `web`.
    pub fn image(mut self, image: &str) -> Self {
        self.image = image.into();
        self
    }

    pub fn build(&self) -> Rollout {
        let mut metadata = json!({"name": self.name});
        if let Some(namespace) = &self.namespace {
            metadata["namespace"] = json!(namespace);
        }
        if let Some(uid) = &self.uid {
            metadata["uid"] = json!(uid);
        }
        if let Some(generation) = self.generation {
            metadata["generation"] = json!(generation);
        }
        serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": metadata,
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": self.image}]}
                },
                "strategy": {self.strategy: self.canary}
            }
        }))
        .unwrap_or_else(|e| {
            panic!(
                "not a Rollout: {e}\n{} strategy: {:#}",
                self.strategy, self.canary
            )
        })
    }
}

/// The phase the status reports, or "" before the controller wrote one.
pub fn phase(r: &Rollout) -> &'static str {
    r.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("", |p| p.as_str())
}

pub fn step(r: &Rollout) -> Option<i32> {
    r.status.as_ref().and_then(|s| s.current_step_index)
}

/// The pod-template hash of the stable ReplicaSet.
pub fn stable(r: &Rollout) -> Option<String> {
    r.status.as_ref().and_then(|s| s.stable_rs.clone())
}

/// The pod-template hash of the current (newest) template.
pub fn current(r: &Rollout) -> Option<String> {
    r.status.as_ref().and_then(|s| s.current_pod_hash.clone())
}

/// The canary weight the status reports.
pub fn weight(r: &Rollout) -> Option<i32> {
    r.status
        .as_ref()
        .and_then(|s| s.canary.weights.as_ref())
        .map(|w| w.canary.weight)
}

/// A predicate for waits: the status reports phase `p`.
pub fn phase_is(p: &'static str) -> impl Fn(&Rollout) -> bool {
    move |r| {
        r.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|x| x.as_str() == p)
    }
}
