//! The thin I/O part shared by the routers: error mapping and guarded JSON-patch writes.

use std::fmt::Debug;

use json_patch::Patch;
use kube::Resource;
use kube::api::{Api, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::cache::api_object_url;
use super::{RouterContext, TrafficError};
use crate::api::constants::FIELD_MANAGER;

/// How many times a write that lost a race is recomputed from a fresh read before the conflict is
/// handed back to the controller (which retries with backoff).
pub(crate) const CONFLICT_ATTEMPTS: usize = 5;

pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    status_code(e) == Some(404)
}

/// Maps an API error: 409 is a [`TrafficError::Conflict`], anything else [`TrafficError::Api`].
pub(crate) fn api_error(action: &'static str, object: String, e: kube::Error) -> TrafficError {
    match &e {
        kube::Error::Api(s) if s.code == 409 => TrafficError::Conflict {
            object,
            message: s.message.clone(),
        },
        _ => TrafficError::Api {
            action,
            object,
            source: e,
        },
    }
}

pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// Reads the object `name`: from the routers' cache when it holds it, else from the API server
/// (and the answer fills the cache). See [`super::cache`] for why a cached object is fresh
/// enough.
pub(crate) async fn read<K>(
    ctx: &RouterContext,
    api: &Api<K>,
    name: &str,
) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    super::cache::read(ctx.cache.as_deref(), api, name).await
}

/// Records an object as a write of ours returned it, in the routers' cache.
pub(crate) fn remember<K: Resource + Serialize>(
    ctx: &RouterContext,
    api: &Api<K>,
    name: &str,
    obj: &K,
) {
    if let Some(cache) = &ctx.cache {
        cache.remember(&api_object_url(api, name), obj);
    }
}

/// Writes the patch `compute` derives from the live object, starting from `live` (already read),
/// and on a lost race (409, or 422 because the `test` of the resourceVersion failed) reads again
/// and recomputes, up to [`CONFLICT_ATTEMPTS`] times. Returns whether anything was written.
/// `field` is the Rollout field referencing the object, for the error if it disappears.
pub(crate) async fn patch_guarded<K, F>(
    ctx: &RouterContext,
    api: &Api<K>,
    kind: &str,
    name: &str,
    field: &str,
    mut live: K,
    compute: F,
) -> Result<bool, TrafficError>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    F: Fn(&K) -> Result<Option<Patch>, TrafficError>,
{
    let object = format!("{kind}/{name}");
    let mut last_message = String::new();
    for _ in 0..CONFLICT_ATTEMPTS {
        let Some(patch) = compute(&live)? else {
            return Ok(false);
        };
        let tested_version = live.meta().resource_version.clone();
        match api
            .patch(name, &patch_params(), &kube::api::Patch::Json::<()>(patch))
            .await
        {
            Ok(written) => {
                remember(ctx, api, name, &written);
                return Ok(true);
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
                let fresh = api
                    .get_opt(name)
                    .await
                    .map_err(|e| api_error("get", object.clone(), e))?
                    .ok_or_else(|| TrafficError::InvalidReference {
                        field: field.to_string(),
                        message: format!("{kind} '{name}' was deleted while being updated"),
                    })?;
                // A 422 with an unchanged resourceVersion is not a race: the patch itself is
                // wrong, and retrying would only repeat it.
                if s.code == 422 && fresh.meta().resource_version == tested_version {
                    return Err(TrafficError::Api {
                        action: "patch",
                        object,
                        source: kube::Error::Api(s),
                    });
                }
                remember(ctx, api, name, &fresh);
                tracing::debug!(object = %object, code = s.code, "write lost a race; recomputing");
                last_message = s.message.clone();
                live = fresh;
            }
            Err(e) => return Err(api_error("patch", object, e)),
        }
    }
    Err(TrafficError::Conflict {
        object,
        message: last_message,
    })
}

/// The JSON form of an object, for the pure builders that work on untyped Istio objects.
pub(crate) fn to_json<K: serde::Serialize>(obj: &K, object: &str) -> Result<Value, TrafficError> {
    serde_json::to_value(obj).map_err(|e| TrafficError::Api {
        action: "decode",
        object: object.to_string(),
        source: kube::Error::SerdeError(e),
    })
}
