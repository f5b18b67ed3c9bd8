//! The Rollout under reconcile, with what every step needs to reach its objects.

use std::sync::Arc;

use kube::ResourceExt;

use super::error::Unnamed;
use crate::api::constants;
use crate::api::rollout::Rollout;
use crate::controller::context::Context;
use crate::traffic::{RouterContext, TrafficRouter};

/// One Rollout under reconcile.
pub(super) struct Target<'a> {
    /// The Rollout, as the watch cache holds it.
    pub rollout: &'a Arc<Rollout>,
    /// Its name.
    pub name: String,
    /// Its namespace (every object it references lives there).
    pub namespace: String,
    /// Shared state: caches, client, writer, recorder, metrics.
    pub ctx: &'a Context,
    /// Its traffic routers (none for a basic canary).
    pub routers: Vec<Box<dyn TrafficRouter>>,
    /// What the routers work with; their writes go through the writer.
    pub router_ctx: RouterContext,
}

impl<'a> Target<'a> {
    /// The target for `rollout`; fails for an object without a namespace.
    pub fn new(rollout: &'a Arc<Rollout>, ctx: &'a Context) -> Result<Self, Unnamed> {
        let name = rollout.name_any();
        let namespace = rollout.namespace().ok_or_else(|| Unnamed(name.clone()))?;
        Ok(Target {
            routers: crate::traffic::routers_for(rollout, &ctx.settings.routing),
            router_ctx: RouterContext {
                client: ctx.writer.client(),
                rollout: rollout.clone(),
                namespace: namespace.clone(),
                cache: Some(ctx.stores.routing.clone()),
            },
            rollout,
            name,
            namespace,
            ctx,
        })
    }

    /// The Rollout's uid (empty for an object the API server never stored).
    pub fn uid(&self) -> String {
        self.rollout.uid().unwrap_or_default()
    }

    /// True when the Rollout carries the finalizer that restores traffic on deletion.
    pub fn has_finalizer(&self) -> bool {
        self.rollout
            .finalizers()
            .iter()
            .any(|f| f == constants::TRAFFIC_FINALIZER)
    }

    /// The routing the spec asks for, as recorded in [`constants::MANAGED_ROUTING_ANNOTATION`]
    /// (None without routing).
    pub fn routing_record(&self) -> Option<String> {
        let canary = self.rollout.spec.strategy.canary.as_ref()?;
        let routing = canary.traffic_routing.as_ref()?;
        let record = serde_json::json!({
            "canaryService": canary.canary_service,
            "stableService": canary.stable_service,
            "trafficRouting": routing,
        });
        Some(record.to_string())
    }

    /// The routing recorded on the Rollout when Sluice last took it over.
    pub fn recorded_routing(&self) -> Option<&String> {
        self.rollout
            .annotations()
            .get(constants::MANAGED_ROUTING_ANNOTATION)
    }

    /// The routers whose objects Sluice must give back, with their context: the spec's, or,
    /// once `trafficRouting` is gone from the spec, those of the routing recorded when it was
    /// taken over (None: nothing recorded, e.g. set up by a version that did not record it).
    pub fn routers_to_release(&self) -> Option<(Vec<Box<dyn TrafficRouter>>, RouterContext)> {
        if self.has_routing() {
            let routers = crate::traffic::routers_for(self.rollout, &self.ctx.settings.routing);
            return Some((routers, self.router_ctx.clone()));
        }
        let record: serde_json::Value = serde_json::from_str(self.recorded_routing()?).ok()?;
        let mut shadow = self.rollout.as_ref().clone();
        let canary = shadow
            .spec
            .strategy
            .canary
            .get_or_insert_with(Default::default);
        canary.traffic_routing = serde_json::from_value(record["trafficRouting"].clone()).ok()?;
        canary.canary_service = serde_json::from_value(record["canaryService"].clone()).ok()?;
        canary.stable_service = serde_json::from_value(record["stableService"].clone()).ok()?;
        let routers = crate::traffic::routers_for(&shadow, &self.ctx.settings.routing);
        let ctx = RouterContext {
            rollout: Arc::new(shadow),
            ..self.router_ctx.clone()
        };
        Some((routers, ctx))
    }

    /// True when the Rollout routes traffic (and so needs the finalizer).
    pub fn has_routing(&self) -> bool {
        self.rollout
            .spec
            .strategy
            .canary
            .as_ref()
            .is_some_and(|c| c.traffic_routing.is_some())
    }
}
