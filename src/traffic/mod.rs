//! Traffic routers: how a canary weight reaches the data plane.
//!
//! The controller calls a [`TrafficRouter`] at the points the planner decides: it reads the
//! weight back ([`TrafficRouter::observe`]), applies the desired weight, hashes and managed routes
//! ([`TrafficRouter::apply`]), and restores the user's objects when the Rollout is deleted
//! ([`TrafficRouter::cleanup`]). Each router splits into a pure part (build the desired object or
//! patch) and a thin part that writes it.

use futures::future::BoxFuture;

use crate::api::rollout::Rollout;
use crate::plan::ManagedRoutes;

/// Everything a router needs to know about the Rollout it serves.
#[derive(Clone)]
pub struct RouterContext {
    /// Client for reads and writes (writes use field manager `sluice`).
    pub client: kube::Client,
    /// The Rollout.
    pub rollout: std::sync::Arc<Rollout>,
    /// Namespace of the Rollout and of every object it references.
    pub namespace: String,
}

/// The traffic state the planner wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTraffic {
    /// Canary weight, 0..=max_weight.
    pub weight: i32,
    /// Total weight (`maxTrafficWeight`, default 100).
    pub max_weight: i32,
    /// Pod-template hash of the canary version (for subset-level routing).
    pub canary_hash: Option<String>,
    /// Pod-template hash of the stable version.
    pub stable_hash: Option<String>,
    /// Header and mirror routes to have in place.
    pub managed_routes: ManagedRoutes,
}

/// What a router reads back from the data plane's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterObservation {
    /// Canary weight as configured (None when the router has not been set up yet).
    pub weight: Option<i32>,
}

/// Why a router could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// A referenced object is missing or unusable (missing stable Ingress, no route to the stable
    /// Service, a same-named object the Rollout does not own, ...). Reported as an
    /// `InvalidSpec`-style condition naming the object; no traffic changes until it is fixed.
    #[error("{field}: {message}")]
    InvalidReference {
        /// Field of the Rollout that references the object.
        field: String,
        /// What is wrong, naming the object.
        message: String,
    },
    /// A write lost a race (resourceVersion conflict); retried with backoff.
    #[error("conflict writing {object}: {message}")]
    Conflict {
        /// `kind/name` of the object.
        object: String,
        /// API server message.
        message: String,
    },
    /// Any other API error; retried with backoff.
    #[error("{action} {object}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// `kind/name` of the object.
        object: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

/// A traffic router.
pub trait TrafficRouter: Send + Sync {
    /// Short name for logs and metrics (`nginx`, `istio`, `none`).
    fn name(&self) -> &'static str;
    /// Reads the canary weight currently configured.
    fn observe<'a>(
        &'a self,
        ctx: &'a RouterContext,
    ) -> BoxFuture<'a, Result<RouterObservation, TrafficError>>;
    /// Configures the desired weight, hashes and managed routes. Idempotent: no write when the
    /// data plane's objects already match.
    fn apply<'a>(
        &'a self,
        ctx: &'a RouterContext,
        desired: &'a DesiredTraffic,
    ) -> BoxFuture<'a, Result<(), TrafficError>>;
    /// Restores the user's objects when the Rollout is deleted: all traffic to stable, managed
    /// routes and subset labels removed.
    fn cleanup<'a>(&'a self, ctx: &'a RouterContext) -> BoxFuture<'a, Result<(), TrafficError>>;
}

/// The router of a basic canary (no traffic routing): nothing to configure; the weight is the
/// replica ratio.
pub struct NoRouter;

impl TrafficRouter for NoRouter {
    fn name(&self) -> &'static str {
        "none"
    }

    fn observe<'a>(
        &'a self,
        _ctx: &'a RouterContext,
    ) -> BoxFuture<'a, Result<RouterObservation, TrafficError>> {
        Box::pin(async { Ok(RouterObservation::default()) })
    }

    fn apply<'a>(
        &'a self,
        _ctx: &'a RouterContext,
        _desired: &'a DesiredTraffic,
    ) -> BoxFuture<'a, Result<(), TrafficError>> {
        Box::pin(async { Ok(()) })
    }

    fn cleanup<'a>(&'a self, _ctx: &'a RouterContext) -> BoxFuture<'a, Result<(), TrafficError>> {
        Box::pin(async { Ok(()) })
    }
}
