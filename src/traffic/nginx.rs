//! NGINX ingress router (`trafficRouting.nginx`): one canary Ingress per stable Ingress.
//!
//! `apply` reads every stable Ingress and every existing canary Ingress first and builds all the
//! desired canary Ingresses; only when every reference is valid does it write anything, so a bad
//! reference changes no traffic. The user's stable Ingresses are only ever read.

use futures::future::BoxFuture;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use super::canary_ingress::{
    CanaryIngressInputs, canary_ingress_name, canary_ingress_patch, desired_canary_ingress,
    owned_by, stable_ingresses, weight_of,
};
use super::kube_io::{CONFLICT_ATTEMPTS, api_error, is_not_found, patch_guarded, read, remember};
use super::{
    DesiredTraffic, RouterContext, RouterObservation, TrafficError, TrafficRouter, WatchedObject,
};
use crate::api::constants::FIELD_MANAGER;
use crate::api::rollout::Rollout;

/// Routes traffic with ingress-nginx canary Ingresses.
pub struct NginxRouter {
    watched: Vec<WatchedObject>,
}

impl NginxRouter {
    /// The router of `rollout` (which must have `trafficRouting.nginx`; without it every call
    /// reports an invalid reference).
    pub fn new(rollout: &Rollout) -> Self {
        let namespace = rollout.metadata.namespace.clone().unwrap_or_default();
        let rollout_name = rollout.metadata.name.clone().unwrap_or_default();
        let nginx = rollout
            .spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.traffic_routing.as_ref())
            .and_then(|r| r.nginx.as_ref());
        let mut watched = Vec::new();
        for (_, stable) in nginx.map(stable_ingresses).unwrap_or_default() {
            for name in [stable.clone(), canary_ingress_name(&rollout_name, &stable)] {
                watched.push(WatchedObject {
                    group: "networking.k8s.io".into(),
                    version: "v1".into(),
                    kind: "Ingress".into(),
                    plural: "ingresses".into(),
                    namespace: namespace.clone(),
                    name,
                });
            }
        }
        Self { watched }
    }
}

/// The canary Ingress of `rollout` for the stable Ingress `stable` at `weight` (pure; what
/// `apply` creates, or patches an existing one towards).
pub fn canary_ingress_for(
    rollout: &Rollout,
    stable: &Ingress,
    weight: i32,
) -> Result<Ingress, TrafficError> {
    let inputs = CanaryIngressInputs::from_rollout(rollout)?;
    let stable_name = stable.metadata.name.clone().unwrap_or_default();
    let field = inputs
        .stable_ingresses()
        .into_iter()
        .find(|(_, name)| *name == stable_name)
        .map(|(field, _)| field)
        .ok_or_else(|| TrafficError::InvalidReference {
            field: "spec.strategy.canary.trafficRouting.nginx.stableIngress".into(),
            message: format!("ingress '{stable_name}' is not a stable ingress of this rollout"),
        })?;
    desired_canary_ingress(&inputs, &field, stable, weight)
}

/// The JSON patch `apply` sends to bring the live canary Ingress to `desired` (pure): guarded by
/// the live resourceVersion; `None` when they already match.
pub fn canary_ingress_update(live: &Ingress, desired: &Ingress) -> Option<json_patch::Patch> {
    canary_ingress_patch(live, desired)
}

/// One stable Ingress, checked and with its canary Ingress built.
struct Planned {
    field: String,
    desired: Ingress,
    live: Option<Ingress>,
}

fn ingress_object(name: &str) -> String {
    format!("Ingress/{name}")
}

/// Reads and checks everything, writes nothing.
async fn plan(
    ctx: &RouterContext,
    api: &Api<Ingress>,
    inputs: &CanaryIngressInputs,
    weight: i32,
    namespace: &str,
) -> Result<Vec<Planned>, TrafficError> {
    let stables = inputs.stable_ingresses();
    if stables.is_empty() {
        return Err(TrafficError::InvalidReference {
            field: "spec.strategy.canary.trafficRouting.nginx.stableIngress".into(),
            message: "one of stableIngress or stableIngresses is required".into(),
        });
    }
    let mut planned = Vec::new();
    for (field, stable_name) in stables {
        let stable = read(ctx, api, &stable_name)
            .await
            .map_err(|e| api_error("get", ingress_object(&stable_name), e))?
            .ok_or_else(|| TrafficError::InvalidReference {
                field: field.clone(),
                message: format!("ingress '{stable_name}' not found in namespace '{namespace}'"),
            })?;
        let desired = desired_canary_ingress(inputs, &field, &stable, weight)?;
        let canary_name = desired.metadata.name.clone().unwrap_or_default();
        let live = read(ctx, api, &canary_name)
            .await
            .map_err(|e| api_error("get", ingress_object(&canary_name), e))?;
        if let Some(live) = &live
            && !owned_by(live, &inputs.owner)
        {
            return Err(TrafficError::InvalidReference {
                field,
                message: format!(
                    "ingress '{canary_name}' exists and is not controlled by rollout '{}'; \
                     rename or delete it so Sluice can create its canary ingress",
                    inputs.rollout
                ),
            });
        }
        planned.push(Planned {
            field,
            desired,
            live,
        });
    }
    Ok(planned)
}

async fn write(ctx: &RouterContext, api: &Api<Ingress>, p: Planned) -> Result<(), TrafficError> {
    let name = p.desired.metadata.name.clone().unwrap_or_default();
    let object = ingress_object(&name);
    let live = match p.live {
        Some(live) => live,
        None => {
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            };
            match api.create(&pp, &p.desired).await {
                Ok(created) => {
                    remember(ctx, api, &name, &created);
                    tracing::info!(ingress = %name, "created canary ingress");
                    return Ok(());
                }
                // Created by a concurrent reconcile: patch what is there, if it is ours.
                Err(e) if e_is_already_exists(&e) => api
                    .get(&name)
                    .await
                    .map_err(|e| api_error("get", object.clone(), e))?,
                Err(e) => return Err(api_error("create", object, e)),
            }
        }
    };
    let owner = p
        .desired
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    let desired = &p.desired;
    let field = p.field.clone();
    let wrote = patch_guarded(
        ctx,
        api,
        "Ingress",
        &name,
        &p.field,
        live,
        |live: &Ingress| {
            if !owner.iter().any(|o| owned_by(live, o)) {
                return Err(TrafficError::InvalidReference {
                    field: field.clone(),
                    message: format!("ingress '{}' is not controlled by this rollout", name),
                });
            }
            Ok(canary_ingress_patch(live, desired))
        },
    )
    .await?;
    if wrote {
        tracing::info!(ingress = %name, "updated canary ingress");
    }
    Ok(())
}

fn e_is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

impl TrafficRouter for NginxRouter {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn observe<'a>(
        &'a self,
        ctx: &'a RouterContext,
    ) -> BoxFuture<'a, Result<RouterObservation, TrafficError>> {
        Box::pin(async move {
            let inputs = CanaryIngressInputs::from_rollout(&ctx.rollout)?;
            let api: Api<Ingress> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            let key = inputs.weight_annotation();
            // The same reads and checks as `apply`, so that an invalid reference is reported
            // before anything is planned, and the canary Ingresses come with them.
            let planned = plan(ctx, &api, &inputs, 0, &ctx.namespace).await?;
            let mut weight: Option<i32> = None;
            for p in planned {
                // A missing canary Ingress sends nothing to the canary.
                if let Some(w) = p.live.as_ref().and_then(|i| weight_of(i, &key)) {
                    weight = Some(weight.map_or(w, |m| m.max(w)));
                }
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
            let inputs = CanaryIngressInputs::from_rollout(&ctx.rollout)?;
            let api: Api<Ingress> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            // A lost race on one Ingress re-plans everything from fresh reads.
            let mut attempt = 0;
            loop {
                attempt += 1;
                let planned = plan(ctx, &api, &inputs, desired.weight, &ctx.namespace).await?;
                let mut result = Ok(());
                for p in planned {
                    result = write(ctx, &api, p).await;
                    if result.is_err() {
                        break;
                    }
                }
                match result {
                    Err(TrafficError::Conflict { .. }) if attempt < CONFLICT_ATTEMPTS => continue,
                    other => return other,
                }
            }
        })
    }

    fn cleanup<'a>(&'a self, ctx: &'a RouterContext) -> BoxFuture<'a, Result<(), TrafficError>> {
        Box::pin(async move {
            // The ownerReference would let the garbage collector delete the canary Ingresses
            // eventually; deleting them here sends all traffic to stable before the Rollout goes.
            let inputs = CanaryIngressInputs::from_rollout(&ctx.rollout)?;
            let api: Api<Ingress> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            for (_, stable) in inputs.stable_ingresses() {
                let name = canary_ingress_name(&inputs.rollout, &stable);
                let Some(live) = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| api_error("get", ingress_object(&name), e))?
                else {
                    continue;
                };
                if !owned_by(&live, &inputs.owner) {
                    continue;
                }
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: live.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                let deleted = api.delete(&name, &dp).await;
                if let Some(cache) = &ctx.cache {
                    cache.forget(&super::cache::api_object_url(&api, &name));
                }
                match deleted {
                    Ok(_) => tracing::info!(ingress = %name, "deleted canary ingress"),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(api_error("delete", ingress_object(&name), e)),
                }
            }
            Ok(())
        })
    }

    fn watched_objects(&self) -> Vec<WatchedObject> {
        self.watched.clone()
    }
}
