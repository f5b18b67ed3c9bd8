//! Building Kubernetes clients that say who they are.
//!
//! kube-rs sends no `User-Agent` of its own, so without one an API server's audit log cannot tell
//! Sluice's requests from an administrator's. Every client Sluice builds goes through here.

use http::header::{HeaderValue, USER_AGENT};
use std::time::Duration;

use kube::client::{Body, ClientBuilder};
use tower::limit::RateLimitLayer;

/// User agent of the controller: `sluice-controller/<version>`.
pub fn controller_user_agent() -> String {
    format!("sluice-controller/{}", env!("CARGO_PKG_VERSION"))
}

/// User agent of the CLI (and the dashboard and demo it serves): `sluice/<version>`.
pub fn cli_user_agent() -> String {
    format!("sluice/{}", env!("CARGO_PKG_VERSION"))
}

/// A client whose every request carries `user_agent` (a request that already names one keeps
/// it), optionally rate limited to `burst` requests per `window`.
pub fn client(
    config: kube::Config,
    user_agent: &str,
    rate_limit: Option<(u64, Duration)>,
) -> Result<kube::Client, kube::Error> {
    let value = HeaderValue::from_str(user_agent).map_err(|e| {
        kube::Error::Service(format!("invalid user agent {user_agent:?}: {e}").into())
    })?;
    let set_agent = tower::util::MapRequestLayer::new(move |mut request: http::Request<Body>| {
        request
            .headers_mut()
            .entry(USER_AGENT)
            .or_insert_with(|| value.clone());
        request
    });
    let limit = rate_limit.map(|(burst, window)| RateLimitLayer::new(burst, window));
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&set_agent)
        .with_layer(&tower::util::option_layer(limit))
        .build())
}
