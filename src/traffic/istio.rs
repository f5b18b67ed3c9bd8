//! Istio router (`trafficRouting.istio`): route weights in VirtualServices, and for a subset-level
//! split the pod-template hashes of a DestinationRule's subsets.
//!
//! Istio objects have no Rust types; they are read as [`DynamicObject`]s of the configured API
//! version and written only as JSON patches of what differs, guarded by a `test` of the
//! resourceVersion. `apply` reads and checks every object before writing any, so a bad reference
//! changes no traffic. The DestinationRule is written before the VirtualServices: a subset only
//! ever moves to pods the caller vouched are available (see [`DesiredTraffic`]), and the weights
//! then shift onto subsets that already select the right pods.

use futures::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject};

use super::destination_rule::{self, desired_destination_rule, released_destination_rule};
use super::json_diff::guarded_patch;
use super::kube_io::{api_error, patch_guarded, read, to_json};
use super::virtual_service::{
    ISTIO_TOTAL_WEIGHT, Split, VsInputs, desired_virtual_service, observed_weight,
    released_virtual_service,
};
use super::{
    DesiredTraffic, IstioApiVersion, RouterContext, RouterObservation, RoutingConfig, SubsetHashes,
    TrafficError, TrafficRouter, WatchedObject,
};
use crate::api::rollout::{IstioDestinationRule, Rollout};

const ISTIO_GROUP: &str = "networking.istio.io";
const FIELD: &str = "spec.strategy.canary.trafficRouting.istio";

/// Routes traffic with Istio VirtualServices (and a DestinationRule).
pub struct IstioRouter {
    version: IstioApiVersion,
    watched: Vec<WatchedObject>,
}

fn resource(version: IstioApiVersion, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: ISTIO_GROUP.into(),
        version: version.as_str().into(),
        api_version: format!("{ISTIO_GROUP}/{}", version.as_str()),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// `name`, or `name.namespace` (with an optional `.svc.cluster.local`), as Argo Rollouts accepts
/// for VirtualServices in another namespace.
fn split_name(reference: &str, default_ns: &str) -> (String, String) {
    let trimmed = reference
        .strip_suffix(".svc.cluster.local")
        .unwrap_or(reference);
    let mut parts = trimmed.split('.');
    match (parts.next(), parts.next()) {
        (Some(name), Some(ns)) if !ns.is_empty() => (name.to_string(), ns.to_string()),
        _ => (trimmed.to_string(), default_ns.to_string()),
    }
}

/// What the router works from, read from the Rollout.
struct Inputs {
    /// Each VirtualService with its namespace.
    virtual_services: Vec<(VsInputs, String)>,
    destination_rule: Option<IstioDestinationRule>,
    rollout: String,
}

fn inputs(rollout: &Rollout, namespace: &str) -> Result<Inputs, TrafficError> {
    let canary = rollout.spec.strategy.canary.as_ref();
    let routing = canary.and_then(|c| c.traffic_routing.as_ref());
    let istio =
        routing
            .and_then(|r| r.istio.as_ref())
            .ok_or_else(|| TrafficError::InvalidReference {
                field: FIELD.into(),
                message: "istio traffic routing is not set".into(),
            })?;
    let rollout_name = rollout.metadata.name.clone().unwrap_or_default();
    let split = match &istio.destination_rule {
        Some(dr) => Split::Subset {
            canary: dr.canary_subset_name.clone(),
            stable: dr.stable_subset_name.clone(),
        },
        None => {
            let service = |s: Option<&String>, field: &str| {
                s.filter(|s| !s.is_empty())
                    .cloned()
                    .ok_or_else(|| TrafficError::InvalidReference {
                        field: format!("spec.strategy.canary.{field}"),
                        message: "required with host-level istio routing".into(),
                    })
            };
            Split::Host {
                canary: service(
                    canary.and_then(|c| c.canary_service.as_ref()),
                    "canaryService",
                )?,
                stable: service(
                    canary.and_then(|c| c.stable_service.as_ref()),
                    "stableService",
                )?,
            }
        }
    };
    let managed_route_names: Vec<String> = routing
        .map(|r| r.managed_routes.iter().map(|m| m.name.clone()).collect())
        .unwrap_or_default();
    // The list form wins when set, as in Argo Rollouts.
    let configured: Vec<(String, _)> = if !istio.virtual_services.is_empty() {
        istio
            .virtual_services
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{FIELD}.virtualServices[{i}]"), v.clone()))
            .collect()
    } else {
        istio
            .virtual_service
            .iter()
            .map(|v| (format!("{FIELD}.virtualService"), v.clone()))
            .collect()
    };
    if configured.is_empty() {
        return Err(TrafficError::InvalidReference {
            field: format!("{FIELD}.virtualService"),
            message: "one of virtualService or virtualServices is required".into(),
        });
    }
    let virtual_services = configured
        .into_iter()
        .map(|(field, config)| {
            let (name, ns) = split_name(&config.name, namespace);
            (
                VsInputs {
                    config,
                    field,
                    name,
                    split: split.clone(),
                    managed_route_names: managed_route_names.clone(),
                    rollout: rollout_name.clone(),
                },
                ns,
            )
        })
        .collect();
    Ok(Inputs {
        virtual_services,
        destination_rule: istio.destination_rule.clone(),
        rollout: rollout_name,
    })
}

impl IstioRouter {
    /// The router of `rollout`, reading and writing Istio objects at `config.istio_api_version`.
    pub fn new(rollout: &Rollout, config: &RoutingConfig) -> Self {
        let namespace = rollout.metadata.namespace.clone().unwrap_or_default();
        let version = config.istio_api_version;
        let mut watched = Vec::new();
        if let Ok(inputs) = inputs(rollout, &namespace) {
            for (vs, ns) in &inputs.virtual_services {
                watched.push(WatchedObject {
                    group: ISTIO_GROUP.into(),
                    version: version.as_str().into(),
                    kind: "VirtualService".into(),
                    plural: "virtualservices".into(),
                    namespace: ns.clone(),
                    name: vs.name.clone(),
                });
            }
            if let Some(dr) = &inputs.destination_rule {
                watched.push(WatchedObject {
                    group: ISTIO_GROUP.into(),
                    version: version.as_str().into(),
                    kind: "DestinationRule".into(),
                    plural: "destinationrules".into(),
                    namespace: namespace.clone(),
                    name: dr.name.clone(),
                });
            }
        }
        Self { version, watched }
    }

    fn vs_api(&self, ctx: &RouterContext, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            ctx.client.clone(),
            ns,
            &resource(self.version, "VirtualService", "virtualservices"),
        )
    }

    fn dr_api(&self, ctx: &RouterContext) -> Api<DynamicObject> {
        Api::namespaced_with(
            ctx.client.clone(),
            &ctx.namespace,
            &resource(self.version, "DestinationRule", "destinationrules"),
        )
    }
}

async fn get_required(
    ctx: &RouterContext,
    api: &Api<DynamicObject>,
    kind: &str,
    name: &str,
    ns: &str,
    field: &str,
) -> Result<DynamicObject, TrafficError> {
    read(ctx, api, name)
        .await
        .map_err(|e| api_error("get", format!("{kind}/{name}"), e))?
        .ok_or_else(|| TrafficError::InvalidReference {
            field: field.to_string(),
            message: format!(
                "{} '{name}' not found in namespace '{ns}'",
                kind.to_lowercase()
            ),
        })
}

fn vs_inputs_for(rollout: &Rollout, live: &serde_json::Value) -> Result<VsInputs, TrafficError> {
    let ns = live
        .pointer("/metadata/namespace")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let name = live
        .pointer("/metadata/name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    inputs(rollout, ns)?
        .virtual_services
        .into_iter()
        .find(|(vs, vs_ns)| vs.name == name && vs_ns == ns)
        .map(|(vs, _)| vs)
        .ok_or_else(|| TrafficError::InvalidReference {
            field: format!("{FIELD}.virtualService"),
            message: format!("virtualservice '{name}' is not referenced by this rollout"),
        })
}

fn dr_config(rollout: &Rollout) -> Result<IstioDestinationRule, TrafficError> {
    inputs(rollout, "")?
        .destination_rule
        .ok_or_else(|| TrafficError::InvalidReference {
            field: destination_rule::FIELD.into(),
            message: "no destinationRule configured".into(),
        })
}

/// The JSON patch `apply` sends to the live VirtualService `live` (pure); `None` when it already
/// matches.
pub fn virtual_service_patch(
    rollout: &Rollout,
    live: &serde_json::Value,
    desired: &DesiredTraffic,
) -> Result<Option<json_patch::Patch>, TrafficError> {
    let vs = vs_inputs_for(rollout, live)?;
    let new = desired_virtual_service(live, &vs, desired.weight, &desired.managed_routes)?;
    Ok(guarded_patch(live, &new))
}

/// The JSON patch `cleanup` sends to the live VirtualService (pure).
pub fn virtual_service_release_patch(
    rollout: &Rollout,
    live: &serde_json::Value,
) -> Result<Option<json_patch::Patch>, TrafficError> {
    let vs = vs_inputs_for(rollout, live)?;
    Ok(guarded_patch(live, &released_virtual_service(live, &vs)?))
}

/// The JSON patch `apply` sends to the live DestinationRule (pure).
pub fn destination_rule_patch(
    rollout: &Rollout,
    live: &serde_json::Value,
    desired: &DesiredTraffic,
) -> Result<Option<json_patch::Patch>, TrafficError> {
    let cfg = dr_config(rollout)?;
    let rollout_name = rollout.metadata.name.clone().unwrap_or_default();
    let new = desired_destination_rule(
        live,
        &cfg,
        &rollout_name,
        desired.canary_hash.as_deref(),
        desired.stable_hash.as_deref(),
        &desired.legacy_label_hashes,
    )?;
    Ok(guarded_patch(live, &new))
}

/// The JSON patch `cleanup` sends to the live DestinationRule (pure).
pub fn destination_rule_release_patch(
    rollout: &Rollout,
    live: &serde_json::Value,
) -> Result<Option<json_patch::Patch>, TrafficError> {
    let cfg = dr_config(rollout)?;
    Ok(guarded_patch(live, &released_destination_rule(live, &cfg)?))
}

/// The canary weight `observe` reads from the live VirtualService (pure).
pub fn virtual_service_weight(
    rollout: &Rollout,
    live: &serde_json::Value,
) -> Result<Option<i32>, TrafficError> {
    observed_weight(live, &vs_inputs_for(rollout, live)?)
}

/// Computes the guarded patch from a live object with `build`.
fn patch_from<F>(
    live: &DynamicObject,
    object: &str,
    build: F,
) -> Result<Option<json_patch::Patch>, TrafficError>
where
    F: Fn(&serde_json::Value) -> Result<serde_json::Value, TrafficError>,
{
    let live = to_json(live, object)?;
    let desired = build(&live)?;
    Ok(guarded_patch(&live, &desired))
}

impl TrafficRouter for IstioRouter {
    fn name(&self) -> &'static str {
        "istio"
    }

    fn observe<'a>(
        &'a self,
        ctx: &'a RouterContext,
    ) -> BoxFuture<'a, Result<RouterObservation, TrafficError>> {
        Box::pin(async move {
            let inputs = inputs(&ctx.rollout, &ctx.namespace)?;
            // Every reference is checked as `apply` checks it (the objects exist, the routes,
            // destinations and subsets are there), so that an invalid reference is reported
            // before anything is planned.
            let mut subsets = SubsetHashes::default();
            if let Some(cfg) = &inputs.destination_rule {
                let live = get_required(
                    ctx,
                    &self.dr_api(ctx),
                    "DestinationRule",
                    &cfg.name,
                    &ctx.namespace,
                    destination_rule::FIELD,
                )
                .await?;
                let live = to_json(&live, &format!("DestinationRule/{}", cfg.name))?;
                desired_destination_rule(&live, cfg, &inputs.rollout, None, None, &[])?;
                subsets = destination_rule::subset_hashes(&live, cfg)?;
            }
            let mut weight: Option<i32> = None;
            for (vs, ns) in &inputs.virtual_services {
                let api = self.vs_api(ctx, ns);
                let live =
                    get_required(ctx, &api, "VirtualService", &vs.name, ns, &vs.field).await?;
                let live = to_json(&live, &format!("VirtualService/{}", vs.name))?;
                desired_virtual_service(&live, vs, 0, &Default::default())?;
                if let Some(w) = observed_weight(&live, vs)? {
                    weight = Some(weight.map_or(w, |m| m.max(w)));
                }
            }
            Ok(RouterObservation {
                weight,
                subset_hashes: subsets,
            })
        })
    }

    fn apply<'a>(
        &'a self,
        ctx: &'a RouterContext,
        desired: &'a DesiredTraffic,
    ) -> BoxFuture<'a, Result<(), TrafficError>> {
        Box::pin(async move {
            if desired.max_weight != ISTIO_TOTAL_WEIGHT {
                return Err(TrafficError::InvalidReference {
                    field: "spec.strategy.canary.trafficRouting.maxTrafficWeight".into(),
                    message: format!(
                        "istio route weights total {ISTIO_TOTAL_WEIGHT}; maxTrafficWeight {} is not supported with istio",
                        desired.max_weight
                    ),
                });
            }
            let inputs = inputs(&ctx.rollout, &ctx.namespace)?;
            let dr_api = self.dr_api(ctx);
            let build_dr = |cfg: &IstioDestinationRule| {
                let rollout = inputs.rollout.clone();
                let cfg = cfg.clone();
                move |live: &serde_json::Value| {
                    desired_destination_rule(
                        live,
                        &cfg,
                        &rollout,
                        desired.canary_hash.as_deref(),
                        desired.stable_hash.as_deref(),
                        &desired.legacy_label_hashes,
                    )
                }
            };
            let build_vs = |vs: &VsInputs| {
                let vs = vs.clone();
                move |live: &serde_json::Value| {
                    desired_virtual_service(live, &vs, desired.weight, &desired.managed_routes)
                }
            };

            // Read and check everything first: a bad reference changes nothing.
            let mut dr_live = None;
            if let Some(cfg) = &inputs.destination_rule {
                let live = get_required(
                    ctx,
                    &dr_api,
                    "DestinationRule",
                    &cfg.name,
                    &ctx.namespace,
                    destination_rule::FIELD,
                )
                .await?;
                patch_from(&live, &cfg.name, build_dr(cfg))?;
                dr_live = Some((cfg, live));
            }
            let mut vs_live = Vec::new();
            for (vs, ns) in &inputs.virtual_services {
                let api = self.vs_api(ctx, ns);
                let live =
                    get_required(ctx, &api, "VirtualService", &vs.name, ns, &vs.field).await?;
                patch_from(&live, &vs.name, build_vs(vs))?;
                vs_live.push((vs, api, live));
            }

            if let Some((cfg, live)) = dr_live {
                let build = build_dr(cfg);
                let object = format!("DestinationRule/{}", cfg.name);
                let wrote = patch_guarded(
                    ctx,
                    &dr_api,
                    "DestinationRule",
                    &cfg.name,
                    destination_rule::FIELD,
                    live,
                    |live| patch_from(live, &object, &build),
                )
                .await?;
                if wrote {
                    tracing::info!(
                        destination_rule = %cfg.name,
                        canary_hash = ?desired.canary_hash,
                        stable_hash = ?desired.stable_hash,
                        "updated destinationrule subsets"
                    );
                }
            }
            for (vs, api, live) in vs_live {
                let build = build_vs(vs);
                let object = format!("VirtualService/{}", vs.name);
                let wrote = patch_guarded(
                    ctx,
                    &api,
                    "VirtualService",
                    &vs.name,
                    &vs.field,
                    live,
                    |live| patch_from(live, &object, &build),
                )
                .await?;
                if wrote {
                    tracing::info!(virtual_service = %vs.name, weight = desired.weight, "updated virtualservice weights");
                }
            }
            Ok(())
        })
    }

    fn cleanup<'a>(&'a self, ctx: &'a RouterContext) -> BoxFuture<'a, Result<(), TrafficError>> {
        Box::pin(async move {
            let inputs = inputs(&ctx.rollout, &ctx.namespace)?;
            // Traffic back to stable first, then the subsets released.
            for (vs, ns) in &inputs.virtual_services {
                let api = self.vs_api(ctx, ns);
                let Some(live) = api
                    .get_opt(&vs.name)
                    .await
                    .map_err(|e| api_error("get", format!("VirtualService/{}", vs.name), e))?
                else {
                    continue;
                };
                let object = format!("VirtualService/{}", vs.name);
                let result = patch_guarded(
                    ctx,
                    &api,
                    "VirtualService",
                    &vs.name,
                    &vs.field,
                    live,
                    |live| patch_from(live, &object, |l| released_virtual_service(l, vs)),
                )
                .await;
                release_result(result, &object)?;
            }
            if let Some(cfg) = &inputs.destination_rule {
                let api = self.dr_api(ctx);
                if let Some(live) = api
                    .get_opt(&cfg.name)
                    .await
                    .map_err(|e| api_error("get", format!("DestinationRule/{}", cfg.name), e))?
                {
                    let object = format!("DestinationRule/{}", cfg.name);
                    let result = patch_guarded(
                        ctx,
                        &api,
                        "DestinationRule",
                        &cfg.name,
                        destination_rule::FIELD,
                        live,
                        |live| patch_from(live, &object, |l| released_destination_rule(l, cfg)),
                    )
                    .await;
                    release_result(result, &object)?;
                }
            }
            Ok(())
        })
    }

    fn watched_objects(&self) -> Vec<WatchedObject> {
        self.watched.clone()
    }
}

/// During cleanup an object that no longer has the routes or subsets the Rollout referenced has
/// nothing of Sluice's left to restore; only API errors are worth retrying.
fn release_result(result: Result<bool, TrafficError>, object: &str) -> Result<(), TrafficError> {
    match result {
        Ok(_) => Ok(()),
        Err(TrafficError::InvalidReference { message, .. }) => {
            tracing::warn!(object = %object, reason = %message, "nothing to restore");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
