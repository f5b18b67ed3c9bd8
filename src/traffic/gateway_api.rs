//! Gateway API router (`trafficRouting.gatewayAPI`, or Argo Rollouts' plugin shape
//! `trafficRouting.plugins["argoproj-labs/gatewayAPI"]`): the weights of the stable and canary
//! Services' `backendRefs` in HTTPRoutes, GRPCRoutes, TCPRoutes and TLSRoutes, and Sluice's own
//! rules for `setHeaderRoute` and `setMirrorRoute` (see [`gateway_route`](super::gateway_route)
//! for what exactly changes in a route).
//!
//! Write discipline: routes are the user's (usually applied from Git), so Sluice writes them only
//! as JSON patches of what differs, guarded by a `test` of the resourceVersion, under the field
//! manager `sluice`, as it writes VirtualServices. Server-side apply was the alternative; it was
//! not chosen because Sluice's fields sit inside lists the Gateway API declares atomic
//! (`rules`, `backendRefs`): an apply of a weight would take ownership of the whole list, and the
//! next apply from Git would then conflict or take the list back. A guarded patch changes the
//! two weights and nothing else, and a concurrent writer makes it fail and be recomputed instead
//! of being overwritten.
//!
//! `observe` and `apply` read and check every route (and, for a route in another namespace, the
//! ReferenceGrant letting it reference the Services) before any write, so a bad reference moves
//! no traffic. A route Sluice may not read is an invalid reference naming the field, not an
//! error retried for ever. Removal and deletion restore every route to 100% stable and take
//! Sluice's rules and annotations off.

use futures::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject};

use super::gateway_route::{
    GATEWAY_GROUP, RouteInputs, RouteKind, check_route, desired_route, grant_allows,
    observed_weight, released_route,
};
use super::json_diff::guarded_patch;
use super::kube_io::{api_error, patch_guarded, read, status_code, to_json};
use super::{
    DesiredTraffic, RouterContext, RouterObservation, TrafficError, TrafficRouter, WatchedObject,
};
use crate::api::rollout::{GatewayApiTrafficRouting, Rollout};

/// Routes traffic with Gateway API routes.
pub struct GatewayApiRouter {
    watched: Vec<WatchedObject>,
}

/// The API resource of a route kind.
pub fn route_resource(kind: RouteKind) -> ApiResource {
    ApiResource {
        group: GATEWAY_GROUP.into(),
        version: kind.version().into(),
        api_version: format!("{GATEWAY_GROUP}/{}", kind.version()),
        kind: kind.kind().into(),
        plural: kind.plural().into(),
    }
}

/// The API resource of ReferenceGrants (`v1beta1`).
pub fn reference_grant_resource() -> ApiResource {
    ApiResource {
        group: GATEWAY_GROUP.into(),
        version: "v1beta1".into(),
        api_version: format!("{GATEWAY_GROUP}/v1beta1"),
        kind: "ReferenceGrant".into(),
        plural: "referencegrants".into(),
    }
}

/// The routes a Rollout's Gateway API routing names, in the order they are handled.
pub(crate) fn route_inputs(
    rollout: &Rollout,
    namespace: &str,
) -> Result<Vec<RouteInputs>, TrafficError> {
    let canary = rollout.spec.strategy.canary.as_ref();
    let routing = canary.and_then(|c| c.traffic_routing.as_ref());
    let (field, config) = routing
        .map(|r| r.gateway_api_config())
        .transpose()
        .map_err(|(field, message)| TrafficError::InvalidReference { field, message })?
        .flatten()
        .ok_or_else(|| TrafficError::InvalidReference {
            field: "spec.strategy.canary.trafficRouting.gatewayAPI".into(),
            message: "gateway API traffic routing is not set".into(),
        })?;
    let service = |s: Option<&String>, name: &str| {
        s.filter(|s| !s.is_empty())
            .cloned()
            .ok_or_else(|| TrafficError::InvalidReference {
                field: format!("spec.strategy.canary.{name}"),
                message: "required with gateway API routing".into(),
            })
    };
    let stable = service(
        canary.and_then(|c| c.stable_service.as_ref()),
        "stableService",
    )?;
    let canary_svc = service(
        canary.and_then(|c| c.canary_service.as_ref()),
        "canaryService",
    )?;
    let managed_route_names: Vec<String> = routing
        .map(|r| r.managed_routes.iter().map(|m| m.name.clone()).collect())
        .unwrap_or_default();
    let route_ns = config
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| namespace.to_string());
    let rollout_name = rollout.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    for kind in RouteKind::ALL {
        for (name, at, takes) in configured(&config, kind) {
            out.push(RouteInputs {
                kind,
                name,
                namespace: route_ns.clone(),
                field: format!("{field}.{at}"),
                takes_managed_routes: takes,
                stable: stable.clone(),
                canary: canary_svc.clone(),
                service_namespace: namespace.to_string(),
                managed_route_names: managed_route_names.clone(),
                rollout: rollout_name.clone(),
            });
        }
    }
    if out.is_empty() {
        return Err(TrafficError::InvalidReference {
            field,
            message: "names no route: set httpRoute(s), grpcRoute(s), tcpRoute(s) or tlsRoute(s)"
                .into(),
        });
    }
    Ok(out)
}

/// The routes of one kind: (name, field below the config, takes header and mirror rules). The
/// single form takes them, as in Argo's plugin; in the list form only `useHeaderRoutes: true`.
fn configured(config: &GatewayApiTrafficRouting, kind: RouteKind) -> Vec<(String, String, bool)> {
    let (single, list) = match kind {
        RouteKind::Http => (&config.http_route, &config.http_routes),
        RouteKind::Grpc => (&config.grpc_route, &config.grpc_routes),
        RouteKind::Tcp => (&config.tcp_route, &config.tcp_routes),
        RouteKind::Tls => (&config.tls_route, &config.tls_routes),
    };
    let prefix = kind.config_prefix();
    let mut out: Vec<(String, String, bool)> = single
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| (n.clone(), format!("{prefix}Route"), true))
        .collect();
    out.extend(list.iter().enumerate().map(|(i, r)| {
        (
            r.name.clone(),
            format!("{prefix}Routes[{i}]"),
            r.use_header_routes == Some(true),
        )
    }));
    out
}

impl GatewayApiRouter {
    /// The router of `rollout`.
    pub fn new(rollout: &Rollout) -> Self {
        let namespace = rollout.metadata.namespace.clone().unwrap_or_default();
        let watched = route_inputs(rollout, &namespace)
            .map(|routes| {
                routes
                    .iter()
                    .map(|r| WatchedObject {
                        group: GATEWAY_GROUP.into(),
                        version: r.kind.version().into(),
                        kind: r.kind.kind().into(),
                        plural: r.kind.plural().into(),
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { watched }
    }
}

fn api_for(ctx: &RouterContext, route: &RouteInputs) -> Api<DynamicObject> {
    Api::namespaced_with(
        ctx.client.clone(),
        &route.namespace,
        &route_resource(route.kind),
    )
}

/// Reads a route; missing or not readable is an invalid reference naming the field.
async fn get_route(
    ctx: &RouterContext,
    api: &Api<DynamicObject>,
    route: &RouteInputs,
) -> Result<DynamicObject, TrafficError> {
    let object = format!("{}/{}", route.kind.kind(), route.name);
    match read(ctx, api, &route.name).await {
        Ok(Some(live)) => Ok(live),
        Ok(None) => Err(TrafficError::InvalidReference {
            field: route.field.clone(),
            message: format!(
                "{} not found in namespace '{}'",
                route.describe(),
                route.namespace
            ),
        }),
        Err(e) if status_code(&e) == Some(403) => Err(TrafficError::InvalidReference {
            field: route.field.clone(),
            message: format!(
                "Sluice may not read {} in namespace '{}' (forbidden): grant its service account \
                 get, list, watch and patch on {} there",
                route.describe(),
                route.namespace,
                route.kind.plural()
            ),
        }),
        Err(e) if status_code(&e) == Some(404) => Err(TrafficError::InvalidReference {
            field: route.field.clone(),
            message: format!(
                "the API server does not serve {}/{} {}: install the Gateway API CRDs (or use \
                 another route kind)",
                GATEWAY_GROUP,
                route.kind.version(),
                route.kind.plural()
            ),
        }),
        Err(e) => Err(api_error("get", object, e)),
    }
}

/// A route in another namespace than the Services needs a ReferenceGrant there; it is the
/// user's to create (Sluice never widens what routes may reach).
async fn check_grant(ctx: &RouterContext, route: &RouteInputs) -> Result<(), TrafficError> {
    if route.namespace == route.service_namespace {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &route.service_namespace,
        &reference_grant_resource(),
    );
    let grants = match api.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(e) if matches!(status_code(&e), Some(403) | Some(404)) => Vec::new(),
        Err(e) => return Err(api_error("list", "ReferenceGrant".into(), e)),
    };
    for service in [&route.stable, &route.canary] {
        let allowed = grants.iter().any(|g| {
            to_json(g, "ReferenceGrant")
                .is_ok_and(|g| grant_allows(&g, route.kind, &route.namespace, service))
        });
        if !allowed {
            return Err(TrafficError::InvalidReference {
                field: route.field.clone(),
                message: format!(
                    "{} in namespace '{}' references Service '{service}' in namespace '{}', but \
                     no ReferenceGrant there allows {}s from '{}' to reference it; the \
                     ReferenceGrant is yours to create (Sluice does not create one)",
                    route.describe(),
                    route.namespace,
                    route.service_namespace,
                    route.kind.kind(),
                    route.namespace
                ),
            });
        }
    }
    Ok(())
}

/// Reads and checks every route (and grant); returns them with their APIs, or the first invalid
/// reference.
async fn read_all(
    ctx: &RouterContext,
) -> Result<Vec<(RouteInputs, Api<DynamicObject>, DynamicObject)>, TrafficError> {
    let routes = route_inputs(&ctx.rollout, &ctx.namespace)?;
    let mut out = Vec::new();
    for route in routes {
        let api = api_for(ctx, &route);
        let live = get_route(ctx, &api, &route).await?;
        check_grant(ctx, &route).await?;
        check_route(&to_json(&live, &route.name)?, &route)?;
        out.push((route, api, live));
    }
    Ok(out)
}

fn max_weight_of(rollout: &Rollout) -> i32 {
    rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.traffic_routing.as_ref())
        .and_then(|t| t.max_traffic_weight)
        .unwrap_or(crate::api::constants::DEFAULT_MAX_TRAFFIC_WEIGHT)
}

/// The JSON patch `apply` sends to the live route `live` (pure); `None` when it already matches.
pub fn route_patch(
    rollout: &Rollout,
    live: &serde_json::Value,
    desired: &DesiredTraffic,
) -> Result<Option<json_patch::Patch>, TrafficError> {
    let route = inputs_for(rollout, live)?;
    let new = desired_route(
        live,
        &route,
        desired.weight,
        desired.max_weight,
        &desired.managed_routes,
    )?;
    Ok(guarded_patch(live, &new))
}

/// The JSON patch `cleanup` sends to the live route (pure).
pub fn route_release_patch(
    rollout: &Rollout,
    live: &serde_json::Value,
) -> Result<Option<json_patch::Patch>, TrafficError> {
    let route = inputs_for(rollout, live)?;
    Ok(guarded_patch(
        live,
        &released_route(live, &route, max_weight_of(rollout))?,
    ))
}

/// The configured route `live` is (by kind, namespace and name).
fn inputs_for(rollout: &Rollout, live: &serde_json::Value) -> Result<RouteInputs, TrafficError> {
    let s = |p: &str| {
        live.pointer(p)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (kind, ns, name) = (s("/kind"), s("/metadata/namespace"), s("/metadata/name"));
    let rollout_ns = rollout.metadata.namespace.clone().unwrap_or(ns.clone());
    route_inputs(rollout, &rollout_ns)?
        .into_iter()
        .find(|r| r.kind.kind() == kind && r.namespace == ns && r.name == name)
        .ok_or_else(|| TrafficError::InvalidReference {
            field: "spec.strategy.canary.trafficRouting.gatewayAPI".into(),
            message: format!("{kind} '{ns}/{name}' is not referenced by this rollout"),
        })
}

impl TrafficRouter for GatewayApiRouter {
    fn name(&self) -> &'static str {
        "gateway-api"
    }

    fn observe<'a>(
        &'a self,
        ctx: &'a RouterContext,
    ) -> BoxFuture<'a, Result<RouterObservation, TrafficError>> {
        Box::pin(async move {
            let mut weight: Option<i32> = None;
            for (route, _, live) in read_all(ctx).await? {
                let w = observed_weight(&to_json(&live, &route.name)?, &route)?;
                weight = Some(weight.map_or(w, |m| m.max(w)));
            }
            Ok(RouterObservation {
                weight,
                ..Default::default()
            })
        })
    }

    fn apply<'a>(
        &'a self,
        ctx: &'a RouterContext,
        desired: &'a DesiredTraffic,
    ) -> BoxFuture<'a, Result<(), TrafficError>> {
        Box::pin(async move {
            let routes = read_all(ctx).await?;
            let wants_header = !desired.managed_routes.header_routes.is_empty();
            let wants_mirror = !desired.managed_routes.mirror_routes.is_empty();
            let takes = |kinds: &[RouteKind]| {
                routes
                    .iter()
                    .any(|(r, _, _)| r.takes_managed_routes && kinds.contains(&r.kind))
            };
            let field = routes
                .first()
                .map(|(r, _, _)| r.field.clone())
                .unwrap_or_default();
            if wants_header && !takes(&[RouteKind::Http, RouteKind::Grpc]) {
                return Err(TrafficError::InvalidReference {
                    field,
                    message: "setHeaderRoute needs an httpRoute or grpcRoute, or an entry of \
                              httpRoutes or grpcRoutes with useHeaderRoutes: true"
                        .into(),
                });
            }
            if wants_mirror && !takes(&[RouteKind::Http]) {
                return Err(TrafficError::InvalidReference {
                    field,
                    message: "setMirrorRoute needs an httpRoute, or an entry of httpRoutes with \
                              useHeaderRoutes: true"
                        .into(),
                });
            }
            // Every route's patch is computed (and so checked) before the first write.
            for (route, _, live) in &routes {
                let live = to_json(live, &route.name)?;
                desired_route(
                    &live,
                    route,
                    desired.weight,
                    desired.max_weight,
                    &desired.managed_routes,
                )?;
            }
            for (route, api, live) in routes {
                let object = format!("{}/{}", route.kind.kind(), route.name);
                let wrote = patch_guarded(
                    ctx,
                    &api,
                    route.kind.kind(),
                    &route.name,
                    &route.field,
                    live,
                    |live| {
                        let live = to_json(live, &object)?;
                        let new = desired_route(
                            &live,
                            &route,
                            desired.weight,
                            desired.max_weight,
                            &desired.managed_routes,
                        )?;
                        Ok(guarded_patch(&live, &new))
                    },
                )
                .await?;
                if wrote {
                    tracing::info!(
                        route = %object,
                        namespace = %route.namespace,
                        weight = desired.weight,
                        "updated gateway api route weights"
                    );
                }
            }
            Ok(())
        })
    }

    fn cleanup<'a>(&'a self, ctx: &'a RouterContext) -> BoxFuture<'a, Result<(), TrafficError>> {
        Box::pin(async move {
            let max_weight = max_weight_of(&ctx.rollout);
            for route in route_inputs(&ctx.rollout, &ctx.namespace)? {
                let api = api_for(ctx, &route);
                let object = format!("{}/{}", route.kind.kind(), route.name);
                let live = match api.get_opt(&route.name).await {
                    Ok(Some(live)) => live,
                    Ok(None) => continue,
                    // Not served, or not readable: nothing Sluice could have written there.
                    Err(e) if matches!(status_code(&e), Some(403) | Some(404)) => continue,
                    Err(e) => return Err(api_error("get", object, e)),
                };
                let result = patch_guarded(
                    ctx,
                    &api,
                    route.kind.kind(),
                    &route.name,
                    &route.field,
                    live,
                    |live| {
                        let live = to_json(live, &object)?;
                        Ok(guarded_patch(
                            &live,
                            &released_route(&live, &route, max_weight)?,
                        ))
                    },
                )
                .await;
                match result {
                    Ok(_) => {}
                    // A route that no longer has a rule with both Services has nothing of
                    // Sluice's weights left to restore.
                    Err(TrafficError::InvalidReference { message, .. }) => {
                        tracing::warn!(route = %object, reason = %message, "nothing to restore");
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    fn watched_objects(&self) -> Vec<WatchedObject> {
        self.watched.clone()
    }
}
