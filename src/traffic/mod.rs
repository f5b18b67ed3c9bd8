//! Traffic routers: how a canary weight reaches the data plane.
//!
//! The controller calls a [`TrafficRouter`] at the points the planner decides: it reads the
//! weight back ([`TrafficRouter::observe`]), applies the desired weight, hashes and managed routes
//! ([`TrafficRouter::apply`]), and restores the user's objects when the Rollout is deleted
//! ([`TrafficRouter::cleanup`]). Each router splits into a pure part (build the desired object or
//! patch) and a thin part that writes it.
//!
//! - [`routers_for`] builds the routers of a Rollout (NGINX, Istio, Gateway API, or
//!   [`NoRouter`]).
//! - [`watched_objects`] lists the objects they read or write, so the controller can watch them
//!   and map their events back to the Rollout.
//! - `observe` checks every reference as `apply` does, so an invalid reference
//!   ([`TrafficError::InvalidReference`]) is known before planning; `apply` reads and checks all
//!   objects before writing any, so a bad reference never half-applies.
//! - Writes go under the field manager `sluice`: the canary Ingress is created and then patched;
//!   user objects (VirtualServices, DestinationRules, Gateway API routes) only ever get JSON
//!   patches of what differs, guarded by a `test` of their resourceVersion. Nothing is written
//!   when nothing differs.

use futures::future::BoxFuture;

use crate::api::rollout::Rollout;
use crate::plan::ManagedRoutes;

pub mod cache;
mod canary_ingress;
mod destination_rule;
pub mod gateway_api;
pub mod gateway_route;
pub mod istio;
mod json_diff;
mod kube_io;
pub mod nginx;
mod virtual_service;

pub use canary_ingress::{MANAGED_ANNOTATIONS_ANNOTATION, canary_ingress_name};
pub use gateway_api::GatewayApiRouter;
pub use gateway_route::RouteKind;
pub use istio::IstioRouter;
pub use nginx::NginxRouter;

/// Everything a router needs to know about the Rollout it serves.
#[derive(Clone)]
pub struct RouterContext {
    /// Client for reads and writes (writes use field manager `sluice`). The controller passes
    /// its leader-gated writer's client, which refuses every write while this replica is not
    /// the leader, so routers need no leadership check of their own.
    pub client: kube::Client,
    /// The Rollout.
    pub rollout: std::sync::Arc<Rollout>,
    /// Namespace of the Rollout and of every object it references.
    pub namespace: String,
    /// The watch cache the routers read their objects from (None: every read goes to the API
    /// server). See [`cache`].
    pub cache: Option<std::sync::Arc<cache::ObjectCache>>,
}

/// The traffic state the planner wants.
///
/// Contract with the caller for subset-level Istio routing (a DestinationRule whose subsets select
/// pods by the pod-template hash label): the router writes the hashes it is given, as given, so
/// the caller passes a hash only when pointing a subset at it is safe.
/// - `canary_hash` is `Some` only once the canary ReplicaSet of that hash is available; until
///   then pass `None` and the subset keeps selecting what it selected before.
/// - On abort pass the **stable** hash as `canary_hash` (with `weight: 0`): the canary subset then
///   selects live pods again instead of the canary pods being scaled down.
/// - `stable_hash` moves to a new version only after that version is fully available (promotion).
///
/// The same hashes are what the caller writes into the canary and stable Services' selectors, so
/// host-level routing follows the same rules without the router's help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTraffic {
    /// Canary weight, 0..=max_weight.
    pub weight: i32,
    /// Total weight (`maxTrafficWeight`, default 100).
    pub max_weight: i32,
    /// Pod-template hash the canary subset must select (None: leave the subset as it is).
    pub canary_hash: Option<String>,
    /// Pod-template hash the stable subset must select (None: leave the subset as it is).
    pub stable_hash: Option<String>,
    /// Hashes whose pods carry only the legacy (Argo Rollouts) hash key, from ReplicaSets an
    /// earlier Sluice version created: a subset selects these by that key.
    pub legacy_label_hashes: Vec<String>,
    /// Header and mirror routes to have in place. Empty removes every managed route (end of the
    /// rollout, abort).
    pub managed_routes: ManagedRoutes,
}

/// What a router reads back from the data plane's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterObservation {
    /// Canary weight as configured (None when the router has not been set up yet). When a router
    /// manages several objects (several stable Ingresses, VirtualServices or routes) this is the
    /// highest canary weight among them: the most traffic the canary may be receiving. A missing
    /// object counts as 0; `None` only when no object carries a weight at all.
    ///
    /// After a successful [`TrafficRouter::apply`], `observe` returning `Some(desired.weight)` is
    /// what `status.canary.weights.verified` reports.
    pub weight: Option<i32>,
    /// Pod-template hashes the router's own pod selectors select: the canary and stable subsets of
    /// an Istio DestinationRule (None when the router has no such selector, or the subset selects
    /// no hash yet). With subset-level routing and no Services, these are what tells the planner
    /// which version receives the traffic.
    pub subset_hashes: SubsetHashes,
}

/// The pod-template hashes selected by the canary and stable subsets of a DestinationRule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubsetHashes {
    /// Hash the canary subset selects.
    pub canary: Option<String>,
    /// Hash the stable subset selects.
    pub stable: Option<String>,
}

/// An object a router reads or writes: the controller watches these and maps their events back
/// to the Rollout, so that drift made by anyone else is corrected on the next reconcile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchedObject {
    /// API group (`networking.k8s.io`, `networking.istio.io`).
    pub group: String,
    /// API version within the group (`v1`, `v1beta1`, ...).
    pub version: String,
    /// Kind (`Ingress`, `VirtualService`, `DestinationRule`).
    pub kind: String,
    /// Plural resource name (`ingresses`, `virtualservices`, `destinationrules`).
    pub plural: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl WatchedObject {
    /// True when this is the object `kind` `namespace/name` (any version of the group).
    pub fn is(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.kind == kind && self.namespace == namespace && self.name == name
    }

    /// The object's URL on the API server: its key in the routers' [`cache`].
    pub fn url(&self) -> String {
        let prefix = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        format!(
            "{prefix}/namespaces/{}/{}/{}",
            self.namespace, self.plural, self.name
        )
    }

    /// The API resource, for a `DynamicObject` watch of kinds without Rust types (Istio).
    pub fn api_resource(&self) -> kube::api::ApiResource {
        kube::api::ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: if self.group.is_empty() {
                self.version.clone()
            } else {
                format!("{}/{}", self.group, self.version)
            },
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }
}

/// Istio API version used for VirtualServices and DestinationRules (one per controller; older
/// meshes serve only the older versions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IstioApiVersion {
    /// `networking.istio.io/v1` (Istio 1.22 and later).
    #[default]
    V1,
    /// `networking.istio.io/v1beta1`.
    V1beta1,
    /// `networking.istio.io/v1alpha3`.
    V1alpha3,
}

impl IstioApiVersion {
    /// The version part (`v1`, `v1beta1`, `v1alpha3`).
    pub fn as_str(self) -> &'static str {
        match self {
            IstioApiVersion::V1 => "v1",
            IstioApiVersion::V1beta1 => "v1beta1",
            IstioApiVersion::V1alpha3 => "v1alpha3",
        }
    }
}

impl std::str::FromStr for IstioApiVersion {
    type Err = String;

    /// Accepts `v1`, `v1beta1`, `v1alpha3`, with or without the `networking.istio.io/` group.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("networking.istio.io/").unwrap_or(s) {
            "v1" => Ok(IstioApiVersion::V1),
            "v1beta1" => Ok(IstioApiVersion::V1beta1),
            "v1alpha3" => Ok(IstioApiVersion::V1alpha3),
            other => Err(format!(
                "unsupported istio api version '{other}': expected v1, v1beta1 or v1alpha3"
            )),
        }
    }
}

impl std::fmt::Display for IstioApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "networking.istio.io/{}", self.as_str())
    }
}

/// Controller-wide settings of the routers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Version of the Istio API to read and write.
    pub istio_api_version: IstioApiVersion,
}

/// The routers serving `rollout`: one per configured provider (NGINX, Istio, Gateway API, in that
/// order), or a
/// single [`NoRouter`] when the Rollout has no traffic routing. Call [`TrafficRouter::apply`] on
/// each with the same [`DesiredTraffic`].
pub fn routers_for(rollout: &Rollout, config: &RoutingConfig) -> Vec<Box<dyn TrafficRouter>> {
    let routing = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.traffic_routing.as_ref());
    let mut routers: Vec<Box<dyn TrafficRouter>> = Vec::new();
    if let Some(routing) = routing {
        if routing.nginx.is_some() {
            routers.push(Box::new(NginxRouter::new(rollout)));
        }
        if routing.istio.is_some() {
            routers.push(Box::new(IstioRouter::new(rollout, config)));
        }
        if routing.has_gateway_api() {
            routers.push(Box::new(GatewayApiRouter::new(rollout)));
        }
    }
    if routers.is_empty() {
        routers.push(Box::new(NoRouter));
    }
    routers
}

/// Every object the routers of `rollout` read or write, for the controller's watches: an event on
/// any of them should reconcile this Rollout.
pub fn watched_objects(rollout: &Rollout, config: &RoutingConfig) -> Vec<WatchedObject> {
    let mut objects: Vec<WatchedObject> = routers_for(rollout, config)
        .iter()
        .flat_map(|r| r.watched_objects())
        .collect();
    objects.sort();
    objects.dedup();
    objects
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
    /// The objects this router reads or writes (see [`WatchedObject`]).
    fn watched_objects(&self) -> Vec<WatchedObject> {
        Vec::new()
    }
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
