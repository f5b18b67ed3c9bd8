//! Failures shared by the steps of a Rollout reconcile, with the category that labels the error
//! metric (`kube`, `conflict`, `traffic`, `not_leader`; `invalid` is the steps' own).

use crate::controller::writer::is_not_leader;
use crate::traffic::TrafficError;

/// The Rollout has no namespace (or name): nothing can be reconciled.
#[derive(Debug, thiserror::Error)]
#[error("rollout {0} has no namespace or name")]
pub struct Unnamed(pub String);

/// A Kubernetes API call that failed: what was being done, and to which object.
#[derive(Debug, thiserror::Error)]
#[error("{action} {object}: {source}")]
pub struct ApiError {
    /// What was being done (`scale replicaset`, `update rollout status`, ...).
    pub action: &'static str,
    /// The object's name.
    pub object: String,
    /// The error.
    #[source]
    pub source: kube::Error,
}

impl ApiError {
    /// Category for metrics and logs.
    pub fn category(&self) -> &'static str {
        kube_category(&self.source)
    }
}

/// Maps a client error to an [`ApiError`] naming the call and the object.
pub(super) fn api_error(
    action: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(kube::Error) -> ApiError {
    let object = object.into();
    move |source| ApiError {
        action,
        object,
        source,
    }
}

/// A traffic router that failed.
#[derive(Debug, thiserror::Error)]
#[error("traffic router {router}: {source}")]
pub struct RouterError {
    /// The router (`nginx`, `istio`).
    pub router: &'static str,
    /// What went wrong.
    #[source]
    pub source: TrafficError,
}

impl RouterError {
    /// Category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match &self.source {
            TrafficError::Api { source, .. } if is_not_leader(source) => "not_leader",
            _ => "traffic",
        }
    }
}

/// Maps a router's error to a [`RouterError`] naming the router.
pub(super) fn router_error(router: &'static str) -> impl FnOnce(TrafficError) -> RouterError {
    move |source| RouterError { router, source }
}

/// Category of a client error: a lost optimistic-concurrency race and a write refused to a
/// replica that is not the leader are routine retries, anything else is an API failure.
pub(super) fn kube_category(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.is_conflict() => "conflict",
        e if is_not_leader(e) => "not_leader",
        _ => "kube",
    }
}
