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
